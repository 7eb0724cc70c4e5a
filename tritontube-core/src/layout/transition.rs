//! The steps of a ring change, as functions from one cluster state to the
//! next (DESIGN.md's migration protocol). Each checks that it applies to
//! the state it is given and says why not otherwise; the cluster manager
//! writes each result with a compare-and-set, so two servers never take
//! the same step twice.
//!
//! ```text
//! stable ──begin──▶ pending ──commit──▶ cleaning ──cleaned──▶ stable
//!                      │                    ▲
//!                      └────roll_back───────┘
//! ```
//!
//! While pending, writes go to both rings' owners and reads try the
//! current owners first; while cleaning, the copies the new ring does not
//! own (on the members of `previous` too) are deleted.

use super::{ChangeInfo, ClusterState, NodeEntry};
use crate::error::{Error, Result};

/// Where a cluster is in a ring change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No change: reads and writes go to the current ring's owners.
    Stable,
    /// A change is copying files to its pending ring.
    Pending,
    /// A change committed (or rolled back) and its surplus copies are
    /// being deleted.
    Cleaning,
}

/// The stage `state` is in.
pub fn stage(state: &ClusterState) -> Stage {
    match (&state.pending, &state.previous) {
        (Some(_), _) => Stage::Pending,
        (None, Some(_)) => Stage::Cleaning,
        (None, None) => Stage::Stable,
    }
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Refused {
        reason: reason.into(),
    }
}

/// Starts change `info`: `members` become the pending ring.
pub fn begin(
    state: &ClusterState,
    members: Vec<NodeEntry>,
    info: ChangeInfo,
) -> Result<ClusterState> {
    if stage(state) != Stage::Stable {
        return Err(refused(
            "a ring change is under way or must be recovered first",
        ));
    }
    if members.is_empty() {
        return Err(refused("a ring needs at least one member"));
    }
    let mut next = state.clone();
    next.pending = Some(members);
    next.change = Some(info);
    Ok(next)
}

/// Makes the pending ring current (epoch + 1); the old members become
/// `previous`, whose surplus copies the clean-up deletes.
/// [`Error::Cancelled`] if a cancellation was asked first.
pub fn commit(state: &ClusterState) -> Result<ClusterState> {
    if state.pending.is_none() {
        return Err(refused("no ring change is pending"));
    }
    if let Some(c) = state.change.as_ref().filter(|c| c.cancel_requested) {
        return Err(Error::Cancelled {
            what: format!(
                "ring change {} ({}) was cancelled and rolled back",
                c.id, c.what
            ),
        });
    }
    let mut next = state.clone();
    let Some(pending) = next.pending.take() else {
        return Err(refused("no ring change is pending"));
    };
    next.previous = Some(std::mem::replace(&mut next.nodes, pending));
    next.epoch += 1;
    Ok(next)
}

/// Undoes the pending ring: the copies already made to its new owners are
/// the surplus the clean-up deletes.
pub fn roll_back(state: &ClusterState) -> Result<ClusterState> {
    let mut next = state.clone();
    let Some(pending) = next.pending.take() else {
        return Err(refused("no ring change is pending"));
    };
    next.previous = Some(pending);
    Ok(next)
}

/// The clean-up is done: only the current ring is left.
pub fn cleaned(state: &ClusterState) -> Result<ClusterState> {
    if stage(state) != Stage::Cleaning {
        return Err(refused("there is no clean-up to finish"));
    }
    let mut next = state.clone();
    next.previous = None;
    Ok(next)
}

/// Asks change `id` to stop: allowed while it is pending (it then rolls
/// back instead of committing).
pub fn request_cancel(state: &ClusterState, id: &str) -> Result<ClusterState> {
    let Some(info) = state.change.as_ref().filter(|c| c.id == id) else {
        return Err(Error::NotFound {
            key: format!("ring change {id}"),
        });
    };
    if stage(state) != Stage::Pending {
        return Err(refused(match &info.outcome {
            Some(outcome) => format!("ring change {id} ({}) already ended: {outcome}", info.what),
            None => format!(
                "ring change {id} ({}) has committed and is deleting surplus copies; it can no \
                 longer be cancelled",
                info.what
            ),
        }));
    }
    let mut next = state.clone();
    if let Some(c) = next.change.as_mut() {
        c.cancel_requested = true;
    }
    Ok(next)
}

/// Records how change `id` ended (nothing if it is no longer the latest).
pub fn record_outcome(state: &ClusterState, id: &str, outcome: &str) -> Option<ClusterState> {
    let mut next = state.clone();
    let c = next.change.as_mut().filter(|c| c.id == id)?;
    c.outcome = Some(outcome.to_string());
    Some(next)
}

#[cfg(test)]
mod tests;
