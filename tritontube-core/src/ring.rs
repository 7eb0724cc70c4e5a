//! The SHA-256 consistent-hash ring that places every file on storage nodes.
//!
//! The rules are exact, so that every implementation and test agrees (and, with
//! one virtual node per node, placement equals the course project's):
//!
//! - `h(s)` is the first 8 bytes of SHA-256 of the UTF-8 string `s`, read as a
//!   big-endian `u64` ([`key_hash`]).
//! - A file's key is `"<videoId>/<filename>"`.
//! - A node named by its address `addr`, with `v` virtual nodes, has the
//!   tokens `h(addr)` and `h(addr + "#" + i)` for `i` in `1..v`.
//! - The owner of a key is the node of the first token `>= h(key)`, wrapping
//!   to the smallest token; on equal tokens the smaller address wins.
//! - The preference list for `R` replicas walks clockwise from the key and
//!   takes the first `R` distinct nodes (`R` capped at the node count).
//! - A node of weight `w` gets `round(v * w)` tokens (at least one).
//!
//! This module does no I/O and needs no async runtime: it is available with
//! `default-features = false`.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Default number of virtual nodes per node of weight 1.0.
pub const DEFAULT_VNODES: u32 = 256;

/// `h(s)`: the first 8 bytes of SHA-256 of `s`, big-endian.
///
/// ```
/// use tritontube_core::ring::key_hash;
/// assert_eq!(key_hash("localhost:8090"), 8831287181302866298);
/// assert_eq!(key_hash("PIKACHU/manifest.mpd"), 11664425278217952499);
/// ```
pub fn key_hash(s: &str) -> u64 {
    let digest = Sha256::digest(s.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The token of virtual node `i` of the node at `addr`.
pub fn vnode_token(addr: &str, i: u32) -> u64 {
    if i == 0 {
        key_hash(addr)
    } else {
        key_hash(&format!("{addr}#{i}"))
    }
}

/// What any consistent-hash ring offers: place a key on a node, or on a list
/// of distinct nodes for replicas.
pub trait HashRing {
    /// Number of member nodes.
    fn node_count(&self) -> usize;

    /// The owner of a key whose hash is already known.
    fn owner_by_hash(&self, hash: u64) -> Result<&str>;

    /// The owner of `key` (`"<videoId>/<filename>"`).
    fn owner(&self, key: &str) -> Result<&str> {
        self.owner_by_hash(key_hash(key))
    }

    /// Writes the first `out.len()` distinct nodes clockwise from `hash` into
    /// `out` (fewer if the ring has fewer nodes) and returns how many were
    /// written. Allocates nothing.
    fn preference_by_hash<'a>(&'a self, hash: u64, out: &mut [&'a str]) -> Result<usize>;
}

#[derive(Debug, Clone, PartialEq)]
struct Member {
    addr: String,
    weight: f64,
}

/// A ring of SHA-256 tokens with virtual nodes and weights.
///
/// ```
/// use tritontube_core::ring::{HashRing, TokenRing};
///
/// let mut ring = TokenRing::new(1);
/// for n in ["localhost:8090", "localhost:8091", "localhost:8092"] {
///     ring.add_node(n, 1.0).unwrap();
/// }
/// assert_eq!(ring.owner("PIKACHU/manifest.mpd").unwrap(), "localhost:8091");
/// ```
#[derive(Debug, Clone)]
pub struct TokenRing {
    vnodes: u32,
    members: Vec<Member>,
    /// `(token, member index)`, sorted by token then address.
    tokens: Vec<(u64, u32)>,
}

impl TokenRing {
    /// An empty ring giving each node of weight 1.0 `vnodes` tokens.
    pub fn new(vnodes: u32) -> Self {
        TokenRing {
            vnodes: vnodes.max(1),
            members: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Virtual nodes per node of weight 1.0.
    pub fn vnodes(&self) -> u32 {
        self.vnodes
    }

    /// True if `addr` is a member.
    pub fn contains(&self, addr: &str) -> bool {
        self.members.iter().any(|m| m.addr == addr)
    }

    /// Adds a node with the given weight.
    pub fn add_node(&mut self, addr: &str, weight: f64) -> Result<()> {
        if self.contains(addr) {
            return Err(Error::NodeExists { node: addr.into() });
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::invalid(
                "weight",
                weight.to_string(),
                "must be a positive number",
            ));
        }
        self.members.push(Member {
            addr: addr.to_string(),
            weight,
        });
        self.rebuild();
        Ok(())
    }

    /// Removes a node.
    pub fn remove_node(&mut self, addr: &str) -> Result<()> {
        let Some(i) = self.members.iter().position(|m| m.addr == addr) else {
            return Err(Error::UnknownNode { node: addr.into() });
        };
        self.members.remove(i);
        self.rebuild();
        Ok(())
    }

    fn token_count(&self, weight: f64) -> u32 {
        ((self.vnodes as f64 * weight).round() as u32).max(1)
    }

    fn rebuild(&mut self) {
        let mut tokens = Vec::new();
        for (idx, m) in self.members.iter().enumerate() {
            for i in 0..self.token_count(m.weight) {
                tokens.push((vnode_token(&m.addr, i), idx as u32));
            }
        }
        let members = &self.members;
        tokens.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| members[a.1 as usize].addr.cmp(&members[b.1 as usize].addr))
        });
        self.tokens = tokens;
    }

    fn position(&self, hash: u64) -> usize {
        let i = self.tokens.partition_point(|(t, _)| *t < hash);
        if i == self.tokens.len() { 0 } else { i }
    }

    /// The member nodes in ring order: by each node's first token `h(addr)`.
    pub fn nodes_in_ring_order(&self) -> Vec<&str> {
        let mut v: Vec<(u64, &str)> = self
            .members
            .iter()
            .map(|m| (key_hash(&m.addr), m.addr.as_str()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }
}

impl HashRing for TokenRing {
    fn node_count(&self) -> usize {
        self.members.len()
    }

    fn owner_by_hash(&self, hash: u64) -> Result<&str> {
        if self.tokens.is_empty() {
            return Err(Error::EmptyRing);
        }
        let (_, m) = self.tokens[self.position(hash)];
        Ok(&self.members[m as usize].addr)
    }

    fn preference_by_hash<'a>(&'a self, hash: u64, out: &mut [&'a str]) -> Result<usize> {
        if self.tokens.is_empty() {
            return Err(Error::EmptyRing);
        }
        let want = out.len().min(self.members.len());
        let start = self.position(hash);
        let mut n = 0;
        for k in 0..self.tokens.len() {
            if n == want {
                break;
            }
            let (_, m) = self.tokens[(start + k) % self.tokens.len()];
            let addr = self.members[m as usize].addr.as_str();
            if !out[..n].contains(&addr) {
                out[n] = addr;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        assert_eq!(key_hash("localhost:8090"), 8831287181302866298);
        assert_eq!(key_hash("localhost:8091"), 15195719212023434717);
        assert_eq!(key_hash("localhost:8092"), 7885380174407825360);
        assert_eq!(key_hash("PIKACHU/manifest.mpd"), 11664425278217952499);
        assert_eq!(key_hash("localhost:8090#1"), 8482252949718722392);
        let mut ring = TokenRing::new(1);
        for n in ["localhost:8090", "localhost:8091", "localhost:8092"] {
            ring.add_node(n, 1.0).unwrap();
        }
        assert_eq!(
            ring.owner("PIKACHU/manifest.mpd").unwrap(),
            "localhost:8091"
        );
        assert_eq!(
            ring.nodes_in_ring_order(),
            ["localhost:8092", "localhost:8090", "localhost:8091"]
        );
        let mut abc = TokenRing::new(1);
        for n in ["node-a:9001", "node-b:9002", "node-c:9003"] {
            abc.add_node(n, 1.0).unwrap();
        }
        assert_eq!(abc.owner("video-0/segment.m4s").unwrap(), "node-a:9001");
        assert_eq!(abc.owner("video-1/segment.m4s").unwrap(), "node-c:9003");
        assert_eq!(abc.owner("video-9/segment.m4s").unwrap(), "node-b:9002");
    }

    #[test]
    fn empty_ring_is_an_error() {
        let ring = TokenRing::new(8);
        assert!(matches!(ring.owner("a/b"), Err(Error::EmptyRing)));
        let mut out = [""; 2];
        assert!(matches!(
            ring.preference_by_hash(1, &mut out),
            Err(Error::EmptyRing)
        ));
    }
}
