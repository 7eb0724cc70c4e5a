//! Planning a ring change from what the nodes actually hold.
//!
//! A plan is never computed from an in-memory record of past uploads: the
//! migrator lists what the nodes hold (only the ring ranges that change
//! owners), and this module compares those holdings with the owners the
//! target ring assigns. The same comparison serves three purposes: the copy
//! phase of a migration, the clean-up phase after a commit, and `verify` /
//! `repair`.
//!
//! The truth about a file's bytes is the size and SHA-256 recorded in the
//! metadata store when it was first stored ([`Recorded`]). A copy is good
//! only if it matches that record; copies are never compared with each
//! other to decide. A file with no good copy is reported lost and nothing is
//! copied or deleted for it. Only for a file with no record at all (stored
//! before records existed) do the copies vote, and a tie is reported as a
//! conflict, never settled by chance.
//!
//! Which files belong to a video at all is not decided here: verify and
//! repair take the orphans out of a batch first (see `orphans.rs`), so an
//! orphan is never also reported as missing, surplus or lost.

use std::collections::{BTreeMap, HashMap};

/// Recorded (size, SHA-256) of files, by key: the truth copies are checked
/// against.
pub type Recorded = HashMap<ContentKey, (u64, Sha256Digest)>;

use super::Ring;
use super::{ObjectMeta, Sha256Digest};
use crate::id::{ContentKey, NodeAddr};
use crate::ring::HashRing;

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
    /// True if the target holds no copy at all (else it holds a bad one,
    /// reported as [`Problem::Corrupt`]).
    pub missing: bool,
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
    /// A copy's size or SHA-256 differs from the recorded ones (or, for a
    /// file without a record, from the copies' majority).
    Corrupt {
        /// The file.
        key: ContentKey,
        /// The node holding the bad copy.
        node: NodeAddr,
        /// Details.
        detail: String,
    },
    /// No copy matches the record: nothing good is left to copy from.
    Lost {
        /// The file.
        key: ContentKey,
        /// A node that holds a (bad) copy, or the first owner.
        node: NodeAddr,
        /// Details.
        detail: String,
    },
    /// A file without a record whose copies disagree with no majority.
    Conflict {
        /// The file.
        key: ContentKey,
        /// One of the nodes holding a disputed copy.
        node: NodeAddr,
        /// Details.
        detail: String,
    },
    /// A stored file (or only its file record) that belongs to no video:
    /// no video of its id is recorded, or the recorded one is another
    /// generation (see the `cluster` module's orphan rules). One problem
    /// per file, whatever its copies; never also reported as missing,
    /// surplus or lost.
    Orphan {
        /// The file.
        key: ContentKey,
        /// The first node holding a copy, or (record only) its first owner.
        node: NodeAddr,
        /// Why it is one, and where its copies are.
        detail: String,
    },
    /// A file whose video record could not be read, so whether it is an
    /// orphan is unknown. It is checked like a live file otherwise, and
    /// never deleted as an orphan.
    Unchecked {
        /// The file.
        key: ContentKey,
        /// The first node holding a copy, or (record only) its first owner.
        node: NodeAddr,
        /// The error.
        detail: String,
    },
}

impl Problem {
    /// `"missing"`, `"surplus"`, `"corrupt"`, `"lost"`, `"conflict"`,
    /// `"orphan"` or `"unchecked"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing { .. } => "missing",
            Problem::Surplus { .. } => "surplus",
            Problem::Corrupt { .. } => "corrupt",
            Problem::Lost { .. } => "lost",
            Problem::Conflict { .. } => "conflict",
            Problem::Orphan { .. } => "orphan",
            Problem::Unchecked { .. } => "unchecked",
        }
    }

    /// Details for people (empty for missing and surplus copies).
    pub fn detail(&self) -> &str {
        match self {
            Problem::Corrupt { detail, .. }
            | Problem::Lost { detail, .. }
            | Problem::Conflict { detail, .. }
            | Problem::Orphan { detail, .. }
            | Problem::Unchecked { detail, .. } => detail,
            _ => "",
        }
    }

    /// The file concerned.
    pub fn key(&self) -> &ContentKey {
        match self {
            Problem::Missing { key, .. }
            | Problem::Surplus { key, .. }
            | Problem::Corrupt { key, .. }
            | Problem::Lost { key, .. }
            | Problem::Conflict { key, .. }
            | Problem::Orphan { key, .. }
            | Problem::Unchecked { key, .. } => key,
        }
    }

    /// The node concerned.
    pub fn node(&self) -> &NodeAddr {
        match self {
            Problem::Missing { node, .. }
            | Problem::Surplus { node, .. }
            | Problem::Corrupt { node, .. }
            | Problem::Lost { node, .. }
            | Problem::Conflict { node, .. }
            | Problem::Orphan { node, .. }
            | Problem::Unchecked { node, .. } => node,
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
    /// Corrupt, lost and disputed files. Missing and surplus copies are
    /// told by [`Plan::copies`] and [`Plan::surplus`] (a migration's plan
    /// holds one of each per moved file; [`Plan::all_problems`] lists them
    /// as problems only when asked).
    pub problems: Vec<Problem>,
}

impl Plan {
    /// Everything found wrong: [`Plan::problems`], plus each missing copy
    /// and each surplus copy.
    pub fn all_problems(self) -> Vec<Problem> {
        let mut out = self.problems;
        out.extend(
            self.copies
                .into_iter()
                .filter(|c| c.missing)
                .map(|c| Problem::Missing {
                    key: c.key,
                    node: c.target,
                }),
        );
        out.extend(self.surplus.into_iter().map(|d| Problem::Surplus {
            key: d.key,
            node: d.node,
        }));
        out
    }

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
pub fn owners_of(ring: &Ring, key: &ContentKey, replicas: usize) -> Vec<NodeAddr> {
    ring.owners(key, replicas.max(1))
}

/// Compares `holdings` with the owners `ring` assigns, judging copies by
/// `recorded`: a copy is good only if it matches its file's record; a file
/// with no matching copy is lost (reported, nothing touched); a file with
/// no record falls back to its copies' strict majority, and a tie is a
/// conflict, never settled by chance.
pub fn plan(holdings: &Holdings, ring: &Ring, replicas: usize, recorded: &Recorded) -> Plan {
    let mut out = Plan::default();
    // Members as addresses, made once: validating and allocating an address
    // per owner per file would cost more than the rest of the plan.
    let members: HashMap<&str, NodeAddr> = ring
        .nodes()
        .filter_map(|n| NodeAddr::new(n).ok().map(|a| (n, a)))
        .collect();
    let mut buf = vec![""; replicas.max(1)];
    let mut owners: Vec<NodeAddr> = Vec::with_capacity(replicas.max(1));
    for (key, copies) in holdings {
        out.files += 1;
        owners.clear();
        if let Ok(n) = ring.preference_by_hash(crate::ring::key_hash(key.as_str()), &mut buf) {
            owners.extend(buf[..n].iter().filter_map(|a| members.get(a).cloned()));
        }
        let Some((size, sha)) = truth(key, copies, recorded, &mut out.problems) else {
            // Lost or disputed: keep every copy as evidence, copy nothing.
            continue;
        };
        plan_file(key, copies, &owners, size, sha, &mut out);
    }
    // Recorded files of which no node holds any copy at all.
    for (key, (size, sha)) in recorded {
        if holdings.contains_key(key) {
            continue;
        }
        out.files += 1;
        let node = owners_of(ring, key, replicas).into_iter().next();
        if let Some(node) = node {
            out.problems.push(Problem::Lost {
                key: key.clone(),
                node,
                detail: format!("no node holds a copy ({size} bytes, SHA-256 {sha} recorded)"),
            });
        }
    }
    out
}

fn plan_file(
    key: &ContentKey,
    copies: &[(NodeAddr, ObjectMeta)],
    owners: &[NodeAddr],
    size: u64,
    sha: Sha256Digest,
    out: &mut Plan,
) {
    let good = |m: &ObjectMeta| m.size == size && m.sha256 == sha;
    // Owners first: they are the ones meant to serve it. Made only when a
    // copy is needed (most files of a plan need none).
    let sources = || -> Vec<NodeAddr> {
        let mut s: Vec<&(NodeAddr, ObjectMeta)> = copies.iter().filter(|(_, m)| good(m)).collect();
        s.sort_by_key(|(n, _)| !owners.contains(n));
        s.into_iter().map(|(n, _)| n.clone()).collect()
    };
    for (node, meta) in copies.iter().filter(|(_, m)| !good(m)) {
        out.problems.push(Problem::Corrupt {
            key: key.clone(),
            node: node.clone(),
            detail: format!(
                "holds {} bytes with SHA-256 {}; the record says {} bytes with {}",
                meta.size, meta.sha256, size, sha
            ),
        });
    }
    for owner in owners {
        if copies.iter().any(|(n, m)| n == owner && good(m)) {
            continue;
        }
        out.copies.push(CopyTask {
            key: key.clone(),
            sources: sources(),
            target: owner.clone(),
            size,
            sha256: sha,
            missing: !copies.iter().any(|(n, _)| n == owner),
        });
    }
    for (node, _) in copies.iter().filter(|(n, _)| !owners.contains(n)) {
        out.surplus.push(DeleteTask {
            key: key.clone(),
            node: node.clone(),
        });
    }
}

/// The (size, SHA-256) a copy of `key` must have: the record, if any and if
/// some copy still matches it; for a file without a record, the copies'
/// strict majority. `None` (with the problem reported) when there is no
/// good copy to go by.
fn truth(
    key: &ContentKey,
    copies: &[(NodeAddr, ObjectMeta)],
    recorded: &Recorded,
    problems: &mut Vec<Problem>,
) -> Option<(u64, Sha256Digest)> {
    let (first_node, first) = copies.first()?;
    let first_node = first_node.clone();
    if let Some(&(size, sha)) = recorded.get(key) {
        if copies
            .iter()
            .any(|(_, m)| m.size == size && m.sha256 == sha)
        {
            return Some((size, sha));
        }
        problems.push(Problem::Lost {
            key: key.clone(),
            node: first_node,
            detail: format!(
                "no copy matches the record ({size} bytes, SHA-256 {sha}); {} bad copies kept",
                copies.len()
            ),
        });
        return None;
    }
    // The usual case: every copy agrees.
    if copies
        .iter()
        .all(|(_, m)| m.size == first.size && m.sha256 == first.sha256)
    {
        return Some((first.size, first.sha256));
    }
    let mut votes: HashMap<(u64, Sha256Digest), usize> = HashMap::new();
    for (_, m) in copies {
        *votes.entry((m.size, m.sha256)).or_default() += 1;
    }
    let best = votes.values().copied().max().unwrap_or(0);
    let leaders: Vec<_> = votes.iter().filter(|(_, n)| **n == best).collect();
    if leaders.len() == 1 {
        return Some(*leaders[0].0);
    }
    problems.push(Problem::Conflict {
        key: key.clone(),
        node: first_node,
        detail: format!(
            "no record, and its {} copies disagree with no majority; left as they are",
            copies.len()
        ),
    });
    None
}

#[cfg(test)]
mod tests;
