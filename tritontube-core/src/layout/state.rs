//! The cluster's layout as a value: its members (with weights and node
//! ids), the epoch, and the change under way. Written and read whole by
//! the metadata store; pure data here.

use crate::id::NodeAddr;

/// A member of the storage cluster.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeEntry {
    /// Its address, also its name on the ring.
    pub addr: NodeAddr,
    /// Its weight (share of the ring relative to a node of weight 1.0).
    pub weight: f64,
    /// Its node id, as its Health answer gave it when it joined (empty for
    /// a member recorded before ids existed). Identity is the id: no id is
    /// ever a member twice.
    #[cfg_attr(
        feature = "runtime",
        serde(default, skip_serializing_if = "String::is_empty")
    )]
    pub id: String,
    /// Where the node is reached, if it moved away from `addr` (which stays
    /// its ring name, so its tokens and its files stay the same).
    #[cfg_attr(
        feature = "runtime",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub reach: Option<NodeAddr>,
}

impl NodeEntry {
    /// A member reached at its ring name, with no id recorded yet.
    pub fn new(addr: NodeAddr, weight: f64) -> Self {
        NodeEntry {
            addr,
            weight,
            id: String::new(),
            reach: None,
        }
    }

    /// The address to connect to.
    pub fn reach_addr(&self) -> &NodeAddr {
        self.reach.as_ref().unwrap_or(&self.addr)
    }
}

/// The cluster's state, read and written as one versioned value.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize, serde::Deserialize))]
pub struct ClusterState {
    /// The current members.
    pub nodes: Vec<NodeEntry>,
    /// Copies kept of every file (capped at the member count).
    pub replicas: u32,
    /// Virtual nodes per node of weight 1.0.
    pub vnodes: u32,
    /// Bumped by every committed ring change.
    pub epoch: u64,
    /// The members-to-be while a ring change is under way.
    pub pending: Option<Vec<NodeEntry>>,
    /// The members before the last committed (or rolled-back) change, while
    /// the copies they no longer own are still being deleted.
    #[cfg_attr(feature = "runtime", serde(default))]
    pub previous: Option<Vec<NodeEntry>>,
    /// True once every file stored before checksums were recorded at write
    /// has had its checksum recorded (the one-time pass is done).
    #[cfg_attr(feature = "runtime", serde(default))]
    pub records_complete: bool,
    /// The latest ring change: the one under way, or the last one with its
    /// outcome (kept until the next one starts).
    #[cfg_attr(
        feature = "runtime",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub change: Option<ChangeInfo>,
}

/// A ring change as a job: who runs it, since when, whether someone asked
/// to cancel it, and how it ended. It lives in the [`ClusterState`], so
/// every web server sees it, and a server that takes over an interrupted
/// change resumes the same job.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "runtime", derive(serde::Serialize, serde::Deserialize))]
pub struct ChangeInfo {
    /// The job's id, unique in the cluster's history (`c<epoch>-<hex>`).
    pub id: String,
    /// What it changes, for people (`add 127.0.0.1:8093`).
    pub what: String,
    /// The server running it (its server id).
    pub holder: String,
    /// When it started, Unix milliseconds.
    pub started_ms: i64,
    /// Someone asked to cancel it: it rolls back at its next step (or, if
    /// interrupted, when it is resumed).
    #[cfg_attr(feature = "runtime", serde(default))]
    pub cancel_requested: bool,
    /// How it ended (`committed, 312 file copies migrated`, `cancelled:
    /// rolled back`, `failed: …`); `None` while it runs.
    #[cfg_attr(
        feature = "runtime",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub outcome: Option<String>,
}
