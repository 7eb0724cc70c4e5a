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
///
/// Tokens are SHA-256 values, so a node's share of the hash space varies
/// like `1/sqrt(v)`: this many keeps the most loaded of 100 nodes within a
/// few percent of the mean (see `examples/ring_stats.rs`). Lookups stay fast
/// whatever `v` is, thanks to the bucket index.
pub const DEFAULT_VNODES: u32 = 4096;

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
        let mut buf = String::with_capacity(addr.len() + 11);
        buf.push_str(addr);
        buf.push('#');
        buf.push_str(&i.to_string());
        key_hash(&buf)
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

/// Bits of the hash that pick a bucket of the index.
const INDEX_BITS: u32 = 16;

#[derive(Debug, Clone)]
struct Inner {
    vnodes: u32,
    /// Member slots; a removed member leaves `None` so indices stay valid.
    members: Vec<Option<Member>>,
    /// Number of members (`Some` slots), kept so lookups need not count.
    live: usize,
    /// Sorted token values (ties: smaller address first).
    tokens: Vec<u64>,
    /// The member slot of each token.
    owners: Vec<u32>,
    /// `index[b]` = first token whose top bits are `>= b`; one extra entry.
    index: Vec<u32>,
}

/// A ring of SHA-256 tokens with virtual nodes and weights.
///
/// Cloning is cheap (the tokens are shared); changing a clone copies them
/// first, so a snapshot handed to other threads never changes under them.
///
/// ```
/// use tritontube_core::ring::{HashRing, TokenRing};
///
/// let mut ring = TokenRing::new(1);
/// for n in ["localhost:8090", "localhost:8091", "localhost:8092"] {
///     ring.add_node(n, 1.0).unwrap();
/// }
/// assert_eq!(ring.owner("PIKACHU/manifest.mpd").unwrap(), "localhost:8091");
///
/// // Two replicas: two distinct nodes, without allocating.
/// let mut out = [""; 2];
/// let n = ring.preference("PIKACHU/manifest.mpd", &mut out).unwrap();
/// assert_eq!(n, 2);
/// assert_ne!(out[0], out[1]);
/// ```
#[derive(Debug, Clone)]
pub struct TokenRing {
    inner: std::sync::Arc<Inner>,
}

impl TokenRing {
    /// An empty ring giving each node of weight 1.0 `vnodes` tokens.
    pub fn new(vnodes: u32) -> Self {
        TokenRing {
            inner: std::sync::Arc::new(Inner {
                vnodes: vnodes.max(1),
                members: Vec::new(),
                live: 0,
                tokens: Vec::new(),
                owners: Vec::new(),
                index: vec![0; (1usize << INDEX_BITS) + 1],
            }),
        }
    }

    /// A ring of `nodes` (address, weight), built in one pass.
    pub fn with_nodes<'a>(
        vnodes: u32,
        nodes: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Self> {
        let mut ring = TokenRing::new(vnodes);
        let inner = std::sync::Arc::make_mut(&mut ring.inner);
        let mut pairs: Vec<(u64, u32)> = Vec::new();
        for (addr, weight) in nodes {
            check_weight(weight)?;
            if inner.members.iter().flatten().any(|m| m.addr == addr) {
                return Err(Error::NodeExists { node: addr.into() });
            }
            let slot = inner.members.len() as u32;
            inner.members.push(Some(Member {
                addr: addr.to_string(),
                weight,
            }));
            inner.live += 1;
            pairs.extend(
                node_tokens(addr, token_count(inner.vnodes, weight))
                    .into_iter()
                    .map(|t| (t, slot)),
            );
        }
        let members = &inner.members;
        let addr = |s: u32| {
            members[s as usize]
                .as_ref()
                .map(|m| m.addr.as_str())
                .unwrap_or("")
        };
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| addr(a.1).cmp(addr(b.1))));
        // Room for a couple more nodes, so that adding one later merges in
        // place instead of copying the whole ring to a larger allocation.
        let room = pairs.len() + headroom(inner.vnodes);
        inner.tokens = Vec::with_capacity(room);
        inner.owners = Vec::with_capacity(room);
        inner.tokens.extend(pairs.iter().map(|p| p.0));
        inner.owners.extend(pairs.iter().map(|p| p.1));
        inner.rebuild_index();
        Ok(ring)
    }

    /// Virtual nodes per node of weight 1.0.
    pub fn vnodes(&self) -> u32 {
        self.inner.vnodes
    }

    /// Number of tokens on the ring.
    pub fn token_count(&self) -> usize {
        self.inner.tokens.len()
    }

    /// True if `addr` is a member.
    pub fn contains(&self, addr: &str) -> bool {
        self.inner.slot_of(addr).is_some()
    }

    /// The weight of `addr`, if it is a member.
    pub fn weight(&self, addr: &str) -> Option<f64> {
        self.inner
            .slot_of(addr)
            .and_then(|s| self.inner.members[s as usize].as_ref())
            .map(|m| m.weight)
    }

    /// The members, in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.inner.members.iter().flatten().map(|m| m.addr.as_str())
    }

    /// Adds a node with the given weight. Only its own tokens are computed;
    /// they are merged into the existing sorted tokens in place.
    pub fn add_node(&mut self, addr: &str, weight: f64) -> Result<()> {
        if self.contains(addr) {
            return Err(Error::NodeExists { node: addr.into() });
        }
        check_weight(weight)?;
        let inner = std::sync::Arc::make_mut(&mut self.inner);
        let slot = match inner.members.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                inner.members.push(None);
                inner.members.len() - 1
            }
        } as u32;
        inner.members[slot as usize] = Some(Member {
            addr: addr.to_string(),
            weight,
        });
        inner.live += 1;
        let mut new = node_tokens(addr, token_count(inner.vnodes, weight));
        new.sort_unstable();
        let (old_len, m) = (inner.tokens.len(), new.len());
        let headroom = m + headroom(inner.vnodes);
        inner.tokens.reserve(headroom);
        inner.owners.reserve(headroom);
        inner.tokens.resize(old_len + m, 0);
        inner.owners.resize(old_len + m, 0);
        // Merge from the back: each new token finds its place through the
        // (old) index, and the old tokens after it move up in one block.
        let mut i = old_len;
        for j in (0..m).rev() {
            let t = new[j];
            let b = (t >> (64 - INDEX_BITS)) as usize;
            let lo = (inner.index[b] as usize).min(i);
            let hi = (inner.index[b + 1] as usize).min(i);
            let mut p = lo + inner.tokens[lo..hi].partition_point(|x| *x < t);
            // Equal tokens: the smaller address first.
            while p < i && inner.tokens[p] == t && inner.addr(inner.owners[p]) < addr {
                p += 1;
            }
            inner.tokens.copy_within(p..i, p + j + 1);
            inner.owners.copy_within(p..i, p + j + 1);
            inner.tokens[p + j] = t;
            inner.owners[p + j] = slot;
            i = p;
        }
        // Shift the index by the number of new tokens below each bucket.
        let buckets = 1usize << INDEX_BITS;
        let mut below = 0u32;
        let mut j = 0usize;
        for (b, entry) in inner.index.iter_mut().enumerate().take(buckets) {
            let floor = (b as u64) << (64 - INDEX_BITS);
            while j < m && new[j] < floor {
                j += 1;
                below += 1;
            }
            *entry += below;
        }
        inner.index[buckets] = inner.tokens.len() as u32;
        Ok(())
    }

    /// Removes a node: its tokens are filtered out in place, nothing is
    /// re-hashed.
    pub fn remove_node(&mut self, addr: &str) -> Result<()> {
        let Some(slot) = self.inner.slot_of(addr) else {
            return Err(Error::UnknownNode { node: addr.into() });
        };
        let inner = std::sync::Arc::make_mut(&mut self.inner);
        inner.members[slot as usize] = None;
        inner.live -= 1;
        let mut removed: Vec<u64> = Vec::new();
        let mut w = 0;
        for r in 0..inner.tokens.len() {
            let (t, o) = (inner.tokens[r], inner.owners[r]);
            if o == slot {
                removed.push(t);
            } else {
                inner.tokens[w] = t;
                inner.owners[w] = o;
                w += 1;
            }
        }
        inner.tokens.truncate(w);
        inner.owners.truncate(w);
        // Shift the index down by the removed tokens below each bucket.
        let buckets = 1usize << INDEX_BITS;
        let mut below = 0u32;
        let mut j = 0usize;
        for (b, entry) in inner.index.iter_mut().enumerate().take(buckets) {
            let floor = (b as u64) << (64 - INDEX_BITS);
            while j < removed.len() && removed[j] < floor {
                j += 1;
                below += 1;
            }
            *entry -= below;
        }
        inner.index[buckets] = w as u32;
        Ok(())
    }

    /// The member nodes in ring order: by each node's first token `h(addr)`
    /// (the order the course project's `ListNodes` returns).
    pub fn nodes_in_ring_order(&self) -> Vec<&str> {
        let mut v: Vec<(u64, &str)> = self.nodes().map(|a| (key_hash(a), a)).collect();
        v.sort();
        v.into_iter().map(|(_, a)| a).collect()
    }

    /// The preference list of `key`: see [`HashRing::preference_by_hash`].
    pub fn preference<'a>(&'a self, key: &str, out: &mut [&'a str]) -> Result<usize> {
        self.preference_by_hash(key_hash(key), out)
    }

    /// The distinct nodes clockwise from `hash`, as an iterator (each node
    /// once, then it ends). Allocates nothing.
    pub fn walk(&self, hash: u64) -> Walk<'_> {
        Walk {
            ring: self,
            start: self.inner.position(hash),
            step: 0,
            seen: [u32::MAX; 8],
            seen_len: 0,
            found: 0,
        }
    }

    /// Each node's share of the hash space (0..1, summing to 1), as owner of
    /// the keys (one replica).
    pub fn shares(&self) -> Vec<(&str, f64)> {
        let inner = &self.inner;
        let mut by_slot = vec![0u128; inner.members.len()];
        let n = inner.tokens.len();
        for i in 0..n {
            // Token i owns (previous token, token i].
            let prev = if i == 0 {
                inner.tokens[n - 1]
            } else {
                inner.tokens[i - 1]
            };
            let span = inner.tokens[i].wrapping_sub(prev) as u128;
            let span = if n == 1 { 1u128 << 64 } else { span };
            by_slot[inner.owners[i] as usize] += span;
        }
        inner
            .members
            .iter()
            .enumerate()
            .filter_map(|(s, m)| {
                m.as_ref()
                    .map(|m| (m.addr.as_str(), by_slot[s] as f64 / 2f64.powi(64)))
            })
            .collect()
    }

    /// Largest share divided by the mean share, for nodes of equal weight (1.0
    /// is perfect balance).
    pub fn max_over_mean(&self) -> f64 {
        let shares = self.shares();
        if shares.is_empty() {
            return 0.0;
        }
        let mean = 1.0 / shares.len() as f64;
        shares.iter().map(|(_, s)| *s).fold(0.0, f64::max) / mean
    }
}

fn check_weight(weight: f64) -> Result<()> {
    if weight.is_finite() && weight > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            "weight",
            weight.to_string(),
            "must be a positive number",
        ))
    }
}

/// Spare token slots kept in the ring's arrays: room for two more nodes.
fn headroom(vnodes: u32) -> usize {
    2 * vnodes as usize
}

/// The `count` tokens of `addr` (`h(addr)`, then `h(addr#i)`), hashed from
/// one reused buffer without formatting.
fn node_tokens(addr: &str, count: u32) -> Vec<u64> {
    let mut out = Vec::with_capacity(count as usize);
    let mut buf = Vec::with_capacity(addr.len() + 11);
    buf.extend_from_slice(addr.as_bytes());
    buf.push(b'#');
    let prefix = buf.len();
    for i in 0..count {
        if i == 0 {
            out.push(key_hash(addr));
            continue;
        }
        buf.truncate(prefix);
        let mut digits = [0u8; 10];
        let mut n = i;
        let mut k = digits.len();
        while n > 0 {
            k -= 1;
            digits[k] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        buf.extend_from_slice(&digits[k..]);
        let digest = Sha256::digest(&buf);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        out.push(u64::from_be_bytes(first));
    }
    out
}

fn token_count(vnodes: u32, weight: f64) -> u32 {
    ((vnodes as f64 * weight).round() as u32).max(1)
}

impl Inner {
    fn addr(&self, slot: u32) -> &str {
        self.members[slot as usize]
            .as_ref()
            .map(|m| m.addr.as_str())
            .unwrap_or("")
    }

    fn slot_of(&self, addr: &str) -> Option<u32> {
        self.members
            .iter()
            .position(|m| m.as_ref().is_some_and(|m| m.addr == addr))
            .map(|p| p as u32)
    }

    fn rebuild_index(&mut self) {
        let buckets = 1usize << INDEX_BITS;
        let mut index = vec![0u32; buckets + 1];
        let mut t = 0usize;
        for (b, slot) in index.iter_mut().enumerate().take(buckets) {
            let floor = (b as u64) << (64 - INDEX_BITS);
            while t < self.tokens.len() && self.tokens[t] < floor {
                t += 1;
            }
            *slot = t as u32;
        }
        index[buckets] = self.tokens.len() as u32;
        self.index = index;
    }

    /// Index of the first token `>= hash`, wrapping to 0.
    #[inline]
    fn position(&self, hash: u64) -> usize {
        let b = (hash >> (64 - INDEX_BITS)) as usize;
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        let bucket = &self.tokens[lo..hi];
        let i = lo
            + bucket
                .iter()
                .position(|t| *t >= hash)
                .unwrap_or(bucket.len());
        if i == self.tokens.len() { 0 } else { i }
    }
}

/// Iterator over the distinct nodes clockwise from a hash; see
/// [`TokenRing::walk`].
#[derive(Debug)]
pub struct Walk<'a> {
    ring: &'a TokenRing,
    start: usize,
    step: usize,
    seen: [u32; 8],
    seen_len: usize,
    found: usize,
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let inner = &self.ring.inner;
        let n = inner.tokens.len();
        if self.found >= inner.live {
            return None;
        }
        while self.step < n {
            let at = self.start + self.step;
            let slot = inner.owners[if at >= n { at - n } else { at }];
            self.step += 1;
            let seen = if self.found < self.seen.len() {
                self.seen[..self.seen_len].contains(&slot)
            } else {
                // Past eight nodes, look back along the walk instead.
                (0..self.step - 1).any(|k| inner.owners[(self.start + k) % n] == slot)
            };
            if !seen {
                if self.seen_len < self.seen.len() {
                    self.seen[self.seen_len] = slot;
                    self.seen_len += 1;
                }
                self.found += 1;
                return Some(inner.addr(slot));
            }
        }
        None
    }
}

impl HashRing for TokenRing {
    fn node_count(&self) -> usize {
        self.inner.live
    }

    #[inline]
    fn owner_by_hash(&self, hash: u64) -> Result<&str> {
        if self.inner.tokens.is_empty() {
            return Err(Error::EmptyRing);
        }
        Ok(self
            .inner
            .addr(self.inner.owners[self.inner.position(hash)]))
    }

    fn preference_by_hash<'a>(&'a self, hash: u64, out: &mut [&'a str]) -> Result<usize> {
        if self.inner.tokens.is_empty() {
            return Err(Error::EmptyRing);
        }
        let mut got = 0;
        for (slot, node) in out.iter_mut().zip(self.walk(hash)) {
            *slot = node;
            got += 1;
        }
        Ok(got)
    }
}

/// A half-open stretch of ring hashes, `start <= h < end`, where `end ==
/// None` means "to the top of the hash space" (so `HashRange::ALL` is every
/// hash). Listings by range ([`crate::store`]'s range listing, the metadata
/// store's recorded checksums) use it, in `(hash, key)` order.
///
/// ```
/// use tritontube_core::ring::HashRange;
/// let r = HashRange::new(10, Some(20));
/// assert!(r.contains(10) && r.contains(19) && !r.contains(20));
/// assert!(HashRange::ALL.contains(u64::MAX));
/// // `(start, end]` of a ring diff that wraps becomes two half-open ranges.
/// assert_eq!(
///     HashRange::from_exclusive_inclusive(u64::MAX - 1, 5),
///     vec![HashRange::new(u64::MAX, None), HashRange::new(0, Some(6))]
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRange {
    /// First hash inside.
    pub start: u64,
    /// First hash past the end; `None` = up to and including `u64::MAX`.
    pub end: Option<u64>,
}

impl HashRange {
    /// Every hash.
    pub const ALL: HashRange = HashRange {
        start: 0,
        end: None,
    };

    /// `start <= h < end` (`end == None`: to the top).
    pub const fn new(start: u64, end: Option<u64>) -> Self {
        HashRange { start, end }
    }

    /// True if `hash` is inside.
    pub fn contains(&self, hash: u64) -> bool {
        hash >= self.start && self.end.is_none_or(|e| hash < e)
    }

    /// True if nothing is inside.
    pub fn is_empty(&self) -> bool {
        self.end.is_some_and(|e| e <= self.start)
    }

    /// The ranges covering `start < h <= end` (the stretches of [`diff`] and
    /// of a ring's tokens), split where they wrap past the top. `start ==
    /// end` means the whole ring.
    pub fn from_exclusive_inclusive(start: u64, end: u64) -> Vec<HashRange> {
        let after = |x: u64| x.checked_add(1);
        if start == end {
            return vec![HashRange::ALL];
        }
        if start < end {
            let lo = start + 1;
            return vec![HashRange::new(lo, after(end))];
        }
        // Wraps: (start, MAX] then [0, end].
        let mut out = Vec::with_capacity(2);
        if let Some(lo) = after(start) {
            out.push(HashRange::new(lo, None));
        }
        out.push(HashRange::new(0, after(end)));
        out
    }

    /// `parts` equal stretches covering the whole ring, in order.
    pub fn split_ring(parts: u64) -> Vec<HashRange> {
        let parts = parts.max(1);
        let step = u64::MAX / parts;
        (0..parts)
            .map(|i| {
                let start = i * step;
                let end = if i + 1 == parts {
                    None
                } else {
                    Some((i + 1) * step)
                };
                HashRange::new(start, end)
            })
            .collect()
    }
}

impl RangeChange {
    /// The stretch as half-open [`HashRange`]s (two when it wraps).
    pub fn ranges(&self) -> Vec<HashRange> {
        HashRange::from_exclusive_inclusive(self.start, self.end)
    }
}

/// One stretch of the hash space whose owners differ between two rings.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeChange {
    /// Exclusive start of the stretch (keys with hash `> start`).
    pub start: u64,
    /// Inclusive end (keys with hash `<= end`); a stretch may wrap.
    pub end: u64,
    /// Owners (preference list) before.
    pub before: Vec<String>,
    /// Owners after.
    pub after: Vec<String>,
}

impl RangeChange {
    /// Nodes that own the stretch after but not before.
    pub fn gained(&self) -> impl Iterator<Item = &str> {
        self.after
            .iter()
            .filter(|n| !self.before.contains(n))
            .map(String::as_str)
    }

    /// Nodes that owned the stretch before but not after.
    pub fn lost(&self) -> impl Iterator<Item = &str> {
        self.before
            .iter()
            .filter(|n| !self.after.contains(n))
            .map(String::as_str)
    }

    /// True if `hash` falls in the stretch.
    pub fn contains(&self, hash: u64) -> bool {
        if self.start < self.end {
            hash > self.start && hash <= self.end
        } else {
            hash > self.start || hash <= self.end
        }
    }

    /// Fraction of the hash space the stretch covers.
    pub fn fraction(&self) -> f64 {
        let span = self.end.wrapping_sub(self.start);
        if span == 0 {
            1.0
        } else {
            span as f64 / 2f64.powi(64)
        }
    }
}

/// Which stretches of the hash space change owners between `before` and
/// `after` with `replicas` copies: the plan of a migration. Between two
/// consecutive tokens of either ring, every key has the same preference
/// lists, so comparing the lists at each token decides each stretch.
pub fn diff(before: &TokenRing, after: &TokenRing, replicas: usize) -> Vec<RangeChange> {
    let mut bounds: Vec<u64> = before
        .inner
        .tokens
        .iter()
        .chain(&after.inner.tokens)
        .copied()
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<RangeChange> = Vec::new();
    let r = replicas.max(1);
    let mut b1 = vec![""; r];
    let mut b2 = vec![""; r];
    for (i, end) in bounds.iter().enumerate() {
        let start = if i == 0 {
            *bounds.last().unwrap_or(&0)
        } else {
            bounds[i - 1]
        };
        let n1 = before.preference_by_hash(*end, &mut b1).unwrap_or(0);
        let n2 = after.preference_by_hash(*end, &mut b2).unwrap_or(0);
        let (l1, l2) = (&b1[..n1], &b2[..n2]);
        if l1.iter().collect::<std::collections::BTreeSet<_>>() == l2.iter().collect() {
            continue;
        }
        // Merge with the previous stretch when it continues it unchanged.
        if let Some(last) = out.last_mut()
            && last.end == start
            && last.before == l1
            && last.after == l2
        {
            last.end = *end;
            continue;
        }
        out.push(RangeChange {
            start,
            end: *end,
            before: l1.iter().map(|s| s.to_string()).collect(),
            after: l2.iter().map(|s| s.to_string()).collect(),
        });
    }
    out
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

    /// Tokens (with owner addresses) and index, to compare rings built
    /// different ways.
    fn internals(r: &TokenRing) -> (Vec<(u64, String)>, Vec<u32>) {
        let i = &r.inner;
        (
            i.tokens
                .iter()
                .zip(&i.owners)
                .map(|(t, o)| (*t, i.addr(*o).to_string()))
                .collect(),
            i.index.clone(),
        )
    }

    #[test]
    fn incremental_changes_equal_a_fresh_build() {
        let names: Vec<String> = (0..12).map(|i| format!("10.1.0.{i}:8090")).collect();
        let mut r = TokenRing::new(300);
        for n in &names {
            r.add_node(n, 1.0).unwrap();
        }
        for gone in [3, 7, 0] {
            r.remove_node(&names[gone]).unwrap();
        }
        r.add_node("10.9.9.9:8090", 2.0).unwrap();
        let mut left: Vec<(&str, f64)> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 7, 0].contains(i))
            .map(|(_, n)| (n.as_str(), 1.0))
            .collect();
        left.push(("10.9.9.9:8090", 2.0));
        let fresh = TokenRing::with_nodes(300, left).unwrap();
        assert_eq!(internals(&r), internals(&fresh));
        // The kept member count follows removals and reused slots.
        assert_eq!(r.node_count(), 10);
        assert_eq!(fresh.node_count(), 10);
        let mut all = [""; 16];
        for k in 0..2000 {
            let key = format!("v{k}/chunk-0-{k:05}.m4s");
            assert_eq!(r.owner(&key).unwrap(), fresh.owner(&key).unwrap());
            // Asking for more replicas than nodes gives every node once.
            let got = r.preference(&key, &mut all).unwrap();
            assert_eq!(got, 10);
            let distinct: std::collections::BTreeSet<&str> = all[..got].iter().copied().collect();
            assert_eq!(distinct.len(), 10);
            assert_eq!(all[0], r.owner(&key).unwrap());
        }
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
