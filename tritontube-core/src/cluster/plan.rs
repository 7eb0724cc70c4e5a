//! Planning a ring change from what the nodes actually hold.
//!
//! A plan is never computed from an in-memory record of past uploads: the
//! migrator lists every node first, and this module compares those holdings
//! with the owners the target ring assigns. The same comparison serves three
//! purposes: the copy phase of a migration, the clean-up phase after a commit,
//! and `verify` / `repair`.

use std::collections::{BTreeMap, HashMap};

use crate::id::{ContentKey, NodeAddr};
use crate::ring::{HashRing, TokenRing};
use crate::store::{ObjectMeta, Sha256Digest};

/// Every copy of every file, as listed from the nodes: key → (node, facts).
pub type Holdings = BTreeMap<ContentKey, Vec<(NodeAddr, ObjectMeta)>>;

/// One file copy to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTask {
    /// The file.
    pub key: ContentKey,
    /// Nodes holding a good copy, best first.
    pub sources: Vec<NodeAddr>,
    /// The owner that lacks it (or holds a bad copy).
    pub target: NodeAddr,
    /// Size of the good copy.
    pub size: u64,
    /// SHA-256 of the good copy.
    pub sha256: Sha256Digest,
}

/// One surplus copy to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTask {
    /// The file.
    pub key: ContentKey,
    /// The node holding a copy it should not hold.
    pub node: NodeAddr,
}

/// What is wrong with one file's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// An owner has no copy.
    Missing {
        /// The file.
        key: ContentKey,
        /// The owner lacking it.
        node: NodeAddr,
    },
    /// A node that is not an owner has a copy.
    Surplus {
        /// The file.
        key: ContentKey,
        /// The node holding it.
        node: NodeAddr,
    },
    /// A copy's checksum or size differs from the others'.
    Mismatch {
        /// The file.
        key: ContentKey,
        /// The node holding the odd copy.
        node: NodeAddr,
        /// Details.
        detail: String,
    },
}

impl Problem {
    /// `"missing"`, `"surplus"` or `"mismatch"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::Surplus { .. } => "surplus",
            Problem::Mismatch { .. } => "mismatch",
        }
    }

    /// The file concerned.
    pub fn key(&self) -> &ContentKey {
        match self {
            Problem::Missing { key, .. }
            | Problem::Surplus { key, .. }
            | Problem::Mismatch { key, .. } => key,
        }
    }

    /// The node concerned.
    pub fn node(&self) -> &NodeAddr {
        match self {
            Problem::Missing { node, .. }
            | Problem::Surplus { node, .. }
            | Problem::Mismatch { node, .. } => node,
        }
    }
}

/// The comparison of holdings with a ring's owners.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Files checked.
    pub files: u64,
    /// Copies to make so that every owner holds a good copy.
    pub copies: Vec<CopyTask>,
    /// Copies held by non-owners. Only safe to delete once every owner holds
    /// a good copy (see [`Plan::safe_deletions`]).
    pub surplus: Vec<DeleteTask>,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
}

impl Plan {
    /// Bytes the copies move.
    pub fn copy_bytes(&self) -> u64 {
        self.copies.iter().map(|c| c.size).sum()
    }

    /// Surplus copies of files that need no copy, so deleting them can never
    /// lose the last good copy.
    pub fn safe_deletions(&self) -> Vec<DeleteTask> {
        let needs_copy: std::collections::HashSet<&ContentKey> =
            self.copies.iter().map(|c| &c.key).collect();
        self.surplus
            .iter()
            .filter(|d| !needs_copy.contains(&d.key))
            .cloned()
            .collect()
    }
}

/// The owners of `key` under `ring` with `replicas` copies.
pub fn owners_of(ring: &TokenRing, key: &ContentKey, replicas: usize) -> Vec<NodeAddr> {
    let mut buf = vec![""; replicas.max(1)];
    match ring.preference_by_hash(crate::ring::key_hash(key.as_str()), &mut buf) {
        Ok(n) => buf[..n]
            .iter()
            .filter_map(|a| NodeAddr::new(*a).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Compares `holdings` with the owners `ring` assigns.
///
/// The good copy of a file is the (size, SHA-256) held by most nodes, owners
/// counting before non-owners on a tie, so one corrupt copy never outvotes
/// the rest.
pub fn plan(holdings: &Holdings, ring: &TokenRing, replicas: usize) -> Plan {
    let mut out = Plan::default();
    for (key, copies) in holdings {
        out.files += 1;
        let owners = owners_of(ring, key, replicas);
        let Some((size, sha)) = good_copy(copies, &owners) else {
            continue;
        };
        let good_sources: Vec<NodeAddr> = {
            // Owners first: they are the ones meant to serve it.
            let mut s: Vec<&(NodeAddr, ObjectMeta)> = copies
                .iter()
                .filter(|(_, m)| m.size == size && m.sha256 == sha)
                .collect();
            s.sort_by_key(|(n, _)| !owners.contains(n));
            s.into_iter().map(|(n, _)| n.clone()).collect()
        };
        for (node, meta) in copies {
            if meta.size != size || meta.sha256 != sha {
                out.problems.push(Problem::Mismatch {
                    key: key.clone(),
                    node: node.clone(),
                    detail: format!(
                        "holds {} bytes with SHA-256 {}; the good copy has {} bytes with {}",
                        meta.size, meta.sha256, size, sha
                    ),
                });
            }
        }
        for owner in &owners {
            let held_good = copies
                .iter()
                .any(|(n, m)| n == owner && m.size == size && m.sha256 == sha);
            if !held_good {
                if !copies.iter().any(|(n, _)| n == owner) {
                    out.problems.push(Problem::Missing {
                        key: key.clone(),
                        node: owner.clone(),
                    });
                }
                out.copies.push(CopyTask {
                    key: key.clone(),
                    sources: good_sources.clone(),
                    target: owner.clone(),
                    size,
                    sha256: sha,
                });
            }
        }
        for (node, _) in copies {
            if !owners.contains(node) {
                out.problems.push(Problem::Surplus {
                    key: key.clone(),
                    node: node.clone(),
                });
                out.surplus.push(DeleteTask {
                    key: key.clone(),
                    node: node.clone(),
                });
            }
        }
    }
    out
}

fn good_copy(
    copies: &[(NodeAddr, ObjectMeta)],
    owners: &[NodeAddr],
) -> Option<(u64, Sha256Digest)> {
    let mut votes: HashMap<(u64, Sha256Digest), (usize, usize)> = HashMap::new();
    for (node, m) in copies {
        let v = votes.entry((m.size, m.sha256)).or_default();
        v.0 += 1;
        if owners.contains(node) {
            v.1 += 1;
        }
    }
    votes
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.1.0.cmp(&a.0.1.0)))
        .map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &ContentKey, byte: u8) -> ObjectMeta {
        ObjectMeta {
            key: key.clone(),
            size: 10,
            sha256: Sha256Digest([byte; 32]),
        }
    }

    fn ring(nodes: &[&str]) -> TokenRing {
        let mut r = TokenRing::new(16);
        for n in nodes {
            r.add_node(n, 1.0).unwrap();
        }
        r
    }

    #[test]
    fn copies_to_new_owners_and_marks_surplus() {
        let old = ring(&["a:1", "b:2", "c:3"]);
        let new = ring(&["a:1", "b:2", "c:3", "d:4"]);
        let mut holdings = Holdings::new();
        let mut expected_moves = 0;
        for i in 0..200 {
            let key = ContentKey::from_parts(&format!("v{i}"), "f.m4s").unwrap();
            let owners = owners_of(&old, &key, 2);
            let new_owners = owners_of(&new, &key, 2);
            expected_moves += new_owners.iter().filter(|n| !owners.contains(n)).count();
            holdings.insert(
                key.clone(),
                owners.into_iter().map(|n| (n, meta(&key, 7))).collect(),
            );
        }
        let p = plan(&holdings, &new, 2);
        assert_eq!(p.files, 200);
        assert_eq!(p.copies.len(), expected_moves);
        assert!(expected_moves > 0);
        assert!(p.copies.iter().all(|c| c.target.as_str() == "d:4"));
        // Every copy gains d, so each such file has exactly one surplus copy.
        assert_eq!(p.surplus.len(), expected_moves);
        // Nothing is safe to delete before the copies are made.
        assert!(p.safe_deletions().is_empty());
        // Once d holds its copies, the same comparison says: delete surplus.
        for c in &p.copies {
            holdings
                .get_mut(&c.key)
                .unwrap()
                .push((c.target.clone(), meta(&c.key, 7)));
        }
        let after = plan(&holdings, &new, 2);
        assert!(after.copies.is_empty());
        assert_eq!(after.safe_deletions().len(), expected_moves);
    }

    #[test]
    fn a_corrupt_copy_is_outvoted_and_replaced() {
        let r = ring(&["a:1", "b:2", "c:3"]);
        let key = ContentKey::from_parts("v", "f").unwrap();
        let owners = owners_of(&r, &key, 3);
        let mut holdings = Holdings::new();
        holdings.insert(
            key.clone(),
            vec![
                (owners[0].clone(), meta(&key, 1)),
                (owners[1].clone(), meta(&key, 1)),
                (owners[2].clone(), meta(&key, 9)),
            ],
        );
        let p = plan(&holdings, &r, 3);
        assert_eq!(p.copies.len(), 1);
        assert_eq!(p.copies[0].target, owners[2]);
        assert_eq!(p.copies[0].sha256, Sha256Digest([1; 32]));
        assert!(matches!(p.problems[..], [Problem::Mismatch { .. }]));
    }
}
