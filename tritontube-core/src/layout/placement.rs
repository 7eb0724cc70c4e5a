//! Placement: which nodes hold a key under a layout. During a change the
//! data plane writes to the owners in both rings and reads the current
//! owners first, then the pending ones (the read-old / write-both rule of
//! Garage's layout helper).

use std::collections::HashMap;

use super::{ClusterState, NodeEntry};
use crate::id::{ContentKey, NodeAddr};
use crate::ring::{HashRing, TokenRing, key_hash};

/// Builds the ring of `nodes`. States are validated when written; a node
/// whose weight the ring refuses is left out rather than the whole ring.
pub fn ring_of(nodes: &[NodeEntry], vnodes: u32) -> Ring {
    let ring = TokenRing::with_nodes(vnodes, nodes.iter().map(|n| (n.addr.as_str(), n.weight)))
        .unwrap_or_else(|_| {
            let mut ring = TokenRing::new(vnodes);
            for n in nodes {
                let _ = ring.add_node(n.addr.as_str(), n.weight);
            }
            ring
        });
    Ring(ring)
}

/// The ring of a layout's members, typed: every name on it is a member's
/// [`NodeAddr`] (its ring name), and what it answers are members, never
/// bare strings. The hashing is [`TokenRing`]'s (DESIGN's exact ring),
/// which it dereferences to for everything else (token counts, shares,
/// ranges).
#[derive(Debug, Clone)]
pub struct Ring(TokenRing);

impl Ring {
    /// A ring with no members yet.
    pub fn empty(vnodes: u32) -> Ring {
        Ring(TokenRing::new(vnodes))
    }

    /// The first `n` distinct members clockwise from `hash`.
    pub fn preference(&self, hash: u64, n: usize) -> Vec<NodeAddr> {
        let mut buf = vec![""; n.min(self.0.node_count())];
        match self.0.preference_by_hash(hash, &mut buf) {
            // Every name on the ring came from a `NodeAddr`.
            Ok(k) => buf[..k]
                .iter()
                .filter_map(|a| NodeAddr::new(*a).ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The owners of `key`: its first `n` distinct members clockwise.
    pub fn owners(&self, key: &ContentKey, n: usize) -> Vec<NodeAddr> {
        self.preference(key_hash(key.as_str()), n)
    }

    /// The members in ring order (by each one's first token).
    pub fn members(&self) -> Vec<NodeAddr> {
        self.0
            .nodes_in_ring_order()
            .into_iter()
            .filter_map(|a| NodeAddr::new(a).ok())
            .collect()
    }
}

impl std::ops::Deref for Ring {
    type Target = TokenRing;

    fn deref(&self) -> &TokenRing {
        &self.0
    }
}

/// Where keys live: the current ring and, during a change, the pending one.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The committed ring.
    pub current: Ring,
    /// The ring being migrated to, if a change is under way.
    pub pending: Option<Ring>,
    /// Copies of every file.
    pub replicas: usize,
    /// The epoch of the cluster state this placement comes from (0 when
    /// built by hand).
    pub epoch: u64,
    /// Members reached at an address other than their ring name (moved
    /// nodes): ring name → address.
    pub reach: HashMap<NodeAddr, NodeAddr>,
}

impl Placement {
    /// The placement a cluster state describes.
    pub fn from_state(state: &ClusterState) -> Self {
        Placement {
            current: ring_of(&state.nodes, state.vnodes),
            pending: state.pending.as_ref().map(|p| ring_of(p, state.vnodes)),
            replicas: state.replicas.max(1) as usize,
            epoch: state.epoch,
            reach: state
                .nodes
                .iter()
                .chain(state.pending.iter().flatten())
                .filter_map(|n| n.reach.clone().map(|r| (n.addr.clone(), r)))
                .collect(),
        }
    }

    /// Every member of either ring.
    pub fn all_nodes(&self) -> Vec<NodeAddr> {
        let mut out: Vec<NodeAddr> = Vec::new();
        for ring in std::iter::once(&self.current).chain(self.pending.as_ref()) {
            for a in ring.members() {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The nodes a write of `key` goes to: its owners in the current ring
    /// and in the pending one, a down owner (by `is_down`) replaced by the
    /// next live node clockwise (a hinted copy). Also returns how many down
    /// owners were passed over.
    pub fn write_set(
        &self,
        key: &ContentKey,
        is_down: impl Fn(&NodeAddr) -> bool,
    ) -> (Vec<NodeAddr>, usize) {
        let h = key_hash(key.as_str());
        let (mut out, mut hinted) = (Vec::<NodeAddr>::new(), 0);
        for ring in std::iter::once(&self.current).chain(self.pending.as_ref()) {
            let mut live = 0;
            for n in ring.preference(h, ring.node_count()) {
                if live == self.replicas {
                    break;
                }
                if is_down(&n) {
                    hinted += 1;
                    continue;
                }
                live += 1;
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        (out, hinted)
    }

    /// The nodes a read of `key` tries, in order: current owners, pending
    /// owners, then the next two nodes clockwise (where hinted copies
    /// land); nodes down (by `is_down`) go last.
    pub fn read_set(&self, key: &ContentKey, is_down: impl Fn(&NodeAddr) -> bool) -> Vec<NodeAddr> {
        let h = key_hash(key.as_str());
        let mut out: Vec<NodeAddr> = Vec::new();
        let ranked = [
            Some(self.current.preference(h, self.replicas)),
            self.pending
                .as_ref()
                .map(|p| p.preference(h, self.replicas)),
            Some(self.current.preference(h, self.replicas + 2)),
        ];
        for n in ranked.into_iter().flatten().flatten() {
            if !out.contains(&n) {
                out.push(n);
            }
        }
        let (up, down): (Vec<_>, Vec<_>) = out.into_iter().partition(|n| !is_down(n));
        up.into_iter().chain(down).collect()
    }
}
