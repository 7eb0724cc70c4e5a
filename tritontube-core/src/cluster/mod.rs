//! Cluster membership and safe online ring changes.
//!
//! The [`ClusterManager`] adds and removes storage nodes while the service
//! keeps serving, following DESIGN.md's protocol to the letter:
//!
//! 1. take the cluster-wide admin lock (a second change is refused, not queued);
//! 2. check the change can succeed (the new node answers; enough nodes remain);
//! 3. write `pending` = the new member list: from now on the data plane writes
//!    to the union of current and pending owners and reads current owners
//!    first, then pending ones (so no read fails and no new file is missed);
//! 4. list what every node actually holds and plan the copies;
//! 5. copy each file to each new owner that lacks it, checksum verified, with
//!    bounded concurrency, reporting progress;
//! 6. commit: current = pending, epoch + 1;
//! 7. delete the copies no longer owned (only where every owner holds a good
//!    copy, so the last good copy is never deleted);
//! 8. release the lock.
//!
//! All of that state lives in the [`MetadataStore`], not in this process: if
//! the process dies anywhere, [`ClusterManager::recover`] (run at start-up)
//! finishes the change, or rolls it back when a new node is gone.
//!
//! [`ClusterManager::verify`] also reports orphans: stored files (and file
//! records) of no video, that is of a video id with no record, or of
//! another generation than the recorded one (the generation is in the file
//! name, see [`crate::metadata::generation_of_file_name`]); a file of the
//! recorded generation is live whatever its video's state.
//! [`ClusterManager::repair_with`] removes them after a grace period, once
//! a fresh read of their video's record still says so. A video record that
//! cannot be read decides nothing: its files are reported as unchecked and
//! never deleted.

mod heal;
pub mod health;
mod network;
mod orphans;
mod plan;
mod scan;

pub use crate::node::NodeHealth;
pub use heal::{HealConfig, run_healer};
pub use health::{HealthConfig, HealthTracker, Liveness, NodeLiveness};
pub use network::{NetworkContentStore, Placement};
pub use orphans::{DEFAULT_ORPHAN_GRACE, MAX_ORPHAN_GRACE, RepairOptions, RepairReport};
pub use plan::{CopyTask, DeleteTask, Holdings, Plan, Problem, Recorded, owners_of, plan};

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::id::{ContentKey, NodeAddr};
use crate::metadata::lifecycle::now_ms;
use crate::metadata::{AdminLease, ClusterAck, ClusterState, MetadataStore, NodeEntry, Versioned};
use crate::ring::HashRange;
use crate::ring::TokenRing;
use crate::store::{ContentStore, GetOptions, MetaStream, PutOptions};

/// What the cluster manager needs from the data plane (in production, the
/// network content store and its per-node gRPC clients).
#[async_trait]
pub trait Nodes: Debug + Send + Sync + 'static {
    /// A store that talks to exactly the node at `addr`.
    fn node(&self, addr: &NodeAddr) -> Arc<dyn ContentStore>;
    /// What the node at `addr` holds in `ranges` of ring hashes (ascending),
    /// streamed in (hash, key) order.
    fn list_ranges(&self, addr: &NodeAddr, ranges: Vec<HashRange>) -> MetaStream<'static>;
    /// Asks the node at `addr` whether it is serving.
    async fn health(&self, addr: &NodeAddr) -> Result<NodeHealth>;
    /// Routes reads and writes by `state` from now on (its `pending` list
    /// included).
    fn apply(&self, state: &ClusterState);
    /// Refuses writes from `until_ms` (Unix ms) on, unless called again
    /// with a later time: the moment this server's acknowledgement of the
    /// cluster state lapses, after which changes no longer wait for it. By
    /// default nothing is fenced.
    fn fence_writes_after(&self, until_ms: i64) {
        let _ = until_ms;
    }
    /// Copies `key` from the node at `from` to the node at `to`, checked
    /// against `opts`. By default the bytes pass through this process.
    async fn copy(
        &self,
        key: &ContentKey,
        from: &NodeAddr,
        to: &NodeAddr,
        opts: PutOptions,
    ) -> Result<()> {
        let got = self.node(from).get(key, GetOptions::default()).await?;
        self.node(to).put(key, got.stream, opts).await.map(|_| ())
    }
}

/// The phase of a ring change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// No change is running.
    #[default]
    Idle,
    /// Listing nodes and comparing with the new owners.
    Planning,
    /// Copying files to their new owners.
    Copying,
    /// Writing the new membership.
    Committing,
    /// Deleting copies no longer owned.
    Cleaning,
    /// Repair: waiting out the grace period before re-checking the orphans
    /// found.
    OrphanGrace,
    /// Repair: re-checking the orphans found and removing those still
    /// orphans.
    RemovingOrphans,
    /// Finished (successfully or not; see `message`).
    Done,
}

impl Phase {
    /// Lower-case name, as sent in progress messages.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Planning => "planning",
            Phase::Copying => "copying",
            Phase::Committing => "committing",
            Phase::Cleaning => "cleaning",
            Phase::OrphanGrace => "grace",
            Phase::RemovingOrphans => "orphans",
            Phase::Done => "done",
        }
    }
}

/// Progress of the running (or last) ring change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Where the change is.
    pub phase: Phase,
    /// What the change is, for people ("add localhost:8093").
    pub change: String,
    /// File copies to make (in a repair's orphan phases: orphans to
    /// re-check).
    pub files_total: u64,
    /// File copies made (orphans re-checked).
    pub files_done: u64,
    /// Bytes to copy (of the orphans to re-check).
    pub bytes_total: u64,
    /// Bytes copied (of the orphans re-checked).
    pub bytes_done: u64,
    /// Copies made, set when done.
    pub migrated: u64,
    /// Repair: orphans removed so far.
    pub orphans_removed: u64,
    /// Repair: orphans kept because they became live during the grace
    /// period.
    pub orphans_kept: u64,
    /// Repair: files left alone because their video record could not be
    /// read, or a copy could not be deleted.
    pub orphans_skipped: u64,
    /// Outcome or latest news.
    pub message: String,
}

/// Tunables of the [`ClusterManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Who this process is, recorded as the admin lock's holder.
    pub holder: String,
    /// Lifetime of the admin lock without renewal.
    pub lock_ttl: Duration,
    /// File copies (and deletions of surplus copies) in flight at once
    /// during a change.
    pub copy_concurrency: usize,
    /// How long a new node has to answer its health check.
    pub health_timeout: Duration,
    /// How long this server's acknowledgement of the cluster state lasts
    /// without renewal (it is renewed every third of it): a ring change
    /// waits at most about this long for a web server that stopped.
    pub ack_ttl: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            holder: format!("tritontube-web pid {}", std::process::id()),
            lock_ttl: Duration::from_secs(10),
            copy_concurrency: 8,
            health_timeout: Duration::from_secs(3),
            ack_ttl: Duration::from_secs(6),
        }
    }
}

/// The result of [`ClusterManager::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Distinct files found (orphans included).
    pub files_checked: u64,
    /// Everything found wrong (empty: every file belongs to its video, is
    /// on exactly its owners, and all copies agree).
    pub problems: Vec<Problem>,
}

/// Builds the ring of `nodes`.
pub fn ring_of(nodes: &[NodeEntry], vnodes: u32) -> TokenRing {
    TokenRing::with_nodes(vnodes, nodes.iter().map(|n| (n.addr.as_str(), n.weight))).unwrap_or_else(
        |e| {
            // States are validated when written; keep serving with what is valid.
            tracing::error!(error = %e, "invalid node list in the cluster state");
            let mut ring = TokenRing::new(vnodes);
            for n in nodes {
                let _ = ring.add_node(n.addr.as_str(), n.weight);
            }
            ring
        },
    )
}

/// Runs ring changes, verify and repair for one cluster.
#[derive(Debug, Clone)]
pub struct ClusterManager {
    meta: Arc<dyn MetadataStore>,
    nodes: Arc<dyn Nodes>,
    config: ManagerConfig,
    progress: Arc<watch::Sender<Progress>>,
    tracker: Option<Arc<HealthTracker>>,
}

impl ClusterManager {
    /// A manager over `meta` (where the cluster state lives) and `nodes`
    /// (the data plane).
    pub fn new(meta: Arc<dyn MetadataStore>, nodes: Arc<dyn Nodes>, config: ManagerConfig) -> Self {
        let (tx, _) = watch::channel(Progress::default());
        ClusterManager {
            meta,
            nodes,
            config,
            progress: Arc::new(tx),
            tracker: None,
        }
    }

    /// Reports node liveness from `tracker` (the data plane's failure
    /// detector) in [`ClusterManager::health_all`].
    pub fn with_health_tracker(mut self, tracker: Arc<HealthTracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// The failure detector, if one was given.
    pub fn health_tracker(&self) -> Option<&Arc<HealthTracker>> {
        self.tracker.as_ref()
    }

    /// Follows the progress of ring changes made through this manager.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The cluster state, which must have been initialised.
    pub async fn state(&self) -> Result<Versioned<ClusterState>> {
        self.meta
            .cluster_state()
            .await?
            .ok_or_else(|| Error::Refused {
                reason: "the cluster has not been initialised with any storage node".into(),
            })
    }

    /// Writes the first cluster state if none exists yet (the node list of
    /// the command line is only the initial membership: a stored state wins)
    /// and routes the data plane by the stored state.
    pub async fn bootstrap(
        &self,
        initial: &[NodeEntry],
        replicas: u32,
        vnodes: u32,
    ) -> Result<ClusterState> {
        let state = match self.meta.cluster_state().await? {
            Some(v) => v.value,
            None => {
                let mut seen = BTreeSet::new();
                for n in initial {
                    if !seen.insert(n.addr.clone()) {
                        return Err(Error::NodeExists {
                            node: n.addr.to_string(),
                        });
                    }
                }
                let state = ClusterState {
                    nodes: initial.to_vec(),
                    replicas: replicas.max(1),
                    vnodes: vnodes.max(1),
                    epoch: 1,
                    pending: None,
                    previous: None,
                    // A new cluster: every file it stores is recorded.
                    records_complete: true,
                };
                match self.meta.put_cluster_state(None, &state).await {
                    Ok(_) => state,
                    // Another web server initialised it first: use theirs.
                    Err(Error::Conflict { .. }) => self.state().await?.value,
                    Err(e) => return Err(e),
                }
            }
        };
        self.nodes.apply(&state);
        Ok(state)
    }

    /// The members in ring order (by each node's first token), as the course
    /// project's `ListNodes` returns them.
    pub async fn list_nodes(&self) -> Result<Vec<NodeAddr>> {
        let state = self.state().await?.value;
        let ring = ring_of(&state.nodes, 1);
        Ok(ring
            .nodes_in_ring_order()
            .into_iter()
            .filter_map(|a| NodeAddr::new(a).ok())
            .collect())
    }

    /// Adds a node and migrates the files it now owns. Returns the number of
    /// file copies moved.
    pub async fn add_node(&self, addr: &NodeAddr, weight: f64) -> Result<u64> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::invalid(
                "weight",
                weight.to_string(),
                "must be a positive number",
            ));
        }
        let addr = addr.clone();
        self.change(format!("add {addr}"), move |state| {
            if state.nodes.iter().any(|n| n.addr == addr) {
                return Err(Error::NodeExists {
                    node: addr.to_string(),
                });
            }
            let mut nodes = state.nodes.clone();
            nodes.push(NodeEntry {
                addr: addr.clone(),
                weight,
                id: String::new(),
                reach: None,
            });
            Ok((nodes, Some(addr.clone())))
        })
        .await
    }

    /// Removes a node after moving its files to their new owners. Returns the
    /// number of file copies moved.
    pub async fn remove_node(&self, addr: &NodeAddr) -> Result<u64> {
        let addr = addr.clone();
        self.change(format!("remove {addr}"), move |state| {
            if !state.nodes.iter().any(|n| n.addr == addr) {
                return Err(Error::UnknownNode { node: addr.to_string() });
            }
            if state.nodes.len() == 1 {
                return Err(Error::Refused {
                    reason: format!("{addr} is the last storage node; removing it would lose every file"),
                });
            }
            if state.nodes.len() - 1 < state.replicas as usize {
                return Err(Error::Refused {
                    reason: format!(
                        "removing {addr} would leave {} nodes, fewer than the {} replicas every file needs",
                        state.nodes.len() - 1,
                        state.replicas
                    ),
                });
            }
            let nodes = state.nodes.iter().filter(|n| n.addr != addr).cloned().collect();
            Ok((nodes, None))
        })
        .await
    }

    /// Changes a node's weight and migrates accordingly. Returns the number
    /// of file copies moved.
    pub async fn set_weight(&self, addr: &NodeAddr, weight: f64) -> Result<u64> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::invalid(
                "weight",
                weight.to_string(),
                "must be a positive number",
            ));
        }
        let addr = addr.clone();
        self.change(format!("weight {addr} {weight}"), move |state| {
            if !state.nodes.iter().any(|n| n.addr == addr) {
                return Err(Error::UnknownNode {
                    node: addr.to_string(),
                });
            }
            let nodes = state
                .nodes
                .iter()
                .map(|n| {
                    let mut n = n.clone();
                    if n.addr == addr {
                        n.weight = weight;
                    }
                    n
                })
                .collect();
            Ok((nodes, None))
        })
        .await
    }

    /// Records that the member named `addr` (its ring name) now answers at
    /// `to`: the node there must answer with the member's node id. Its
    /// tokens, and so its files, stay where they are; nothing is copied.
    /// Takes the admin lock, so it never races a ring change.
    pub async fn move_node(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        let (me, addr, to) = (self.clone(), addr.clone(), to.clone());
        detached(async move { me.move_attached(&addr, &to).await }).await
    }

    async fn move_attached(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        let lease = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await?;
        let lock = HeldLock::start(self.meta.clone(), lease);
        let result = self.move_locked(addr, to).await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        result
    }

    async fn move_locked(&self, addr: &NodeAddr, to: &NodeAddr) -> Result<()> {
        let state = self.state().await?;
        if state.value.pending.is_some() || state.value.previous.is_some() {
            return Err(Error::Refused {
                reason: "a ring change is under way or must be recovered first".into(),
            });
        }
        let Some(member) = state.value.nodes.iter().find(|n| n.addr == *addr).cloned() else {
            return Err(Error::UnknownNode {
                node: addr.to_string(),
            });
        };
        if let Some(other) = state
            .value
            .nodes
            .iter()
            .find(|n| n.addr != *addr && n.reach_addr() == to)
        {
            return Err(Error::Refused {
                reason: format!("{to} is where member {} is reached", other.addr),
            });
        }
        let there = self.health(to).await.map_err(|e| Error::Refused {
            reason: format!("nothing answers at {to}, so {addr} was not moved: {e}"),
        })?;
        if member.id.is_empty() {
            return Err(Error::Refused {
                reason: format!(
                    "{addr} joined before node ids were recorded, so the node at {to} cannot be \
                     proven to be it; start it at {addr} once so its id is recorded"
                ),
            });
        }
        if there.node_id != member.id {
            return Err(Error::Refused {
                reason: format!(
                    "the node at {to} has id {:?}, not {addr}'s id {}: it is another node",
                    there.node_id, member.id
                ),
            });
        }
        let mut next = state.value.clone();
        for n in next.nodes.iter_mut().filter(|n| n.addr == *addr) {
            n.reach = (to != addr).then(|| to.clone());
        }
        self.meta
            .put_cluster_state(Some(state.version), &next)
            .await?;
        self.nodes.apply(&next);
        tracing::info!(node = %addr, to = %to, "member reached at a new address; no data moved");
        Ok(())
    }

    /// Learns the ids of members recorded without one (asking each that
    /// answers), so identity checks and moves can rely on them.
    pub async fn record_member_ids(&self) -> Result<()> {
        let state = self.state().await?;
        if state.value.pending.is_some() || state.value.nodes.iter().all(|n| !n.id.is_empty()) {
            return Ok(());
        }
        // Under the lock, so this never races a ring change's own writes.
        let Ok(lease) = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await
        else {
            return Ok(());
        };
        let state = self.state().await?;
        let mut next = state.value.clone();
        let mut learned = false;
        for n in next.nodes.iter_mut().filter(|n| n.id.is_empty()) {
            if let Ok(h) = self.health(n.reach_addr()).await
                && !h.node_id.is_empty()
            {
                n.id = h.node_id;
                learned = true;
            }
        }
        let written = if learned {
            self.meta
                .put_cluster_state(Some(state.version), &next)
                .await
                .map(|_| ())
        } else {
            Ok(())
        };
        let _ = self.meta.unlock_admin(&lease).await;
        written
    }

    /// Finishes (or rolls back) a change interrupted by a crash, and deletes
    /// the surplus copies of a change that committed but did not clean up.
    /// Waits for a dead holder's lock to expire. Returns true if there was
    /// anything to do.
    pub async fn recover(&self) -> Result<bool> {
        let Some(state) = self.meta.cluster_state().await? else {
            return Ok(false);
        };
        if state.value.pending.is_none() && state.value.previous.is_none() {
            self.nodes.apply(&state.value);
            return Ok(false);
        }
        let lock = self.lock_waiting().await?;
        let result = self.recover_locked(&lock).await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        result.map(|_| true)
    }

    async fn recover_locked(&self, lock: &HeldLock) -> Result<()> {
        let mut state = self.state().await?;
        if let Some(pending) = state.value.pending.clone() {
            let old: BTreeSet<&NodeAddr> = state.value.nodes.iter().map(|n| &n.addr).collect();
            let mut all_up = true;
            for n in pending.iter().filter(|n| !old.contains(&n.addr)) {
                if self.health(&n.addr).await.is_err() {
                    all_up = false;
                }
            }
            self.nodes.apply(&state.value);
            if all_up {
                tracing::info!("finishing the interrupted ring change");
                self.wait_acknowledged(state.version, "the pending ring")
                    .await?;
                self.set_progress(|p| p.change = "recovery: finish interrupted change".into());
                let batches = scan::changed_batches(
                    &ring_of(&state.value.nodes, state.value.vnodes),
                    &ring_of(&pending, state.value.vnodes),
                    state.value.replicas as usize,
                );
                let migrated = self.copy_phase(&state.value, &pending, batches).await?;
                state = self.commit(state, lock).await?;
                tracing::info!(migrated, "interrupted ring change committed");
            } else {
                tracing::warn!("a new node of the interrupted change is down: rolling back");
                let mut rolled = state.value.clone();
                rolled.previous = Some(pending);
                rolled.pending = None;
                let version = self
                    .meta
                    .put_cluster_state(Some(state.version), &rolled)
                    .await?;
                state = Versioned {
                    value: rolled,
                    version,
                };
            }
        }
        self.nodes.apply(&state.value);
        self.cleanup(state).await?;
        Ok(())
    }

    /// Runs a ring change as the server's own job: a caller that goes away
    /// (a client's deadline) does not stop it halfway; it commits or rolls
    /// back, and its progress stays visible to `watch`.
    async fn change<F>(&self, what: String, decide: F) -> Result<u64>
    where
        F: FnOnce(&ClusterState) -> Result<(Vec<NodeEntry>, Option<NodeAddr>)> + Send + 'static,
    {
        let me = self.clone();
        detached(async move { me.change_attached(what, decide).await }).await
    }

    async fn change_attached<F>(&self, what: String, decide: F) -> Result<u64>
    where
        F: FnOnce(&ClusterState) -> Result<(Vec<NodeEntry>, Option<NodeAddr>)>,
    {
        let lease = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await?;
        let lock = HeldLock::start(self.meta.clone(), lease);
        let result = self.change_locked(&what, decide, &lock).await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        match &result {
            Ok(n) => self.set_progress(|p| {
                p.phase = Phase::Done;
                p.migrated = *n;
                p.message = format!("{what}: done, {n} file copies migrated");
            }),
            Err(e) => self.set_progress(|p| {
                p.phase = Phase::Done;
                p.message = format!("{what}: failed: {e}");
            }),
        }
        result
    }

    async fn change_locked<F>(&self, what: &str, decide: F, lock: &HeldLock) -> Result<u64>
    where
        F: FnOnce(&ClusterState) -> Result<(Vec<NodeEntry>, Option<NodeAddr>)>,
    {
        let mut state = self.state().await?;
        if state.value.pending.is_some() || state.value.previous.is_some() {
            // An earlier change was interrupted, or its clean-up could not
            // run: finish it first, under this lock.
            tracing::info!("finishing an earlier ring change before this one");
            self.recover_locked(lock).await?;
            state = self.state().await?;
        }
        // 2. Checks before any change.
        let (mut new_nodes, must_answer) = decide(&state.value)?;
        if let Some(addr) = &must_answer {
            let h = self.health(addr).await.map_err(|e| Error::Refused {
                reason: format!("node {addr} does not answer, so it was not added: {e}"),
            })?;
            self.check_identity(&state.value, addr, &h.node_id).await?;
            for n in new_nodes.iter_mut().filter(|n| n.addr == *addr) {
                n.id = h.node_id.clone();
            }
        }
        self.progress.send_replace(Progress {
            phase: Phase::Planning,
            change: what.to_string(),
            ..Progress::default()
        });
        // 3. Pending: from now on, writes go to both rings' owners.
        let mut pending_state = state.value.clone();
        pending_state.pending = Some(new_nodes.clone());
        let version = self
            .meta
            .put_cluster_state(Some(state.version), &pending_state)
            .await?;
        let state = Versioned {
            value: pending_state,
            version,
        };
        self.nodes.apply(&state.value);
        // Every live web server writes to the new owners too before the
        // copy starts, so no file written meanwhile misses them.
        if let Err(e) = self
            .wait_acknowledged(state.version, "the pending ring")
            .await
        {
            self.roll_back(state).await;
            return Err(e);
        }

        // 4–5. Plan from what nodes hold in the ranges that change owners,
        // copy.
        let batches = scan::changed_batches(
            &ring_of(&state.value.nodes, state.value.vnodes),
            &ring_of(&new_nodes, state.value.vnodes),
            state.value.replicas as usize,
        );
        let migrated = match self.copy_phase(&state.value, &new_nodes, batches).await {
            Ok(n) => n,
            Err(e) => {
                self.roll_back(state).await;
                return Err(e);
            }
        };
        if lock.lost() {
            self.roll_back(state).await;
            return Err(Error::Locked {
                holder: "another process (this one's lock expired during the change)".into(),
            });
        }
        // 6. Commit.
        let state = self.commit(state, lock).await?;
        self.nodes.apply(&state.value);
        // 7. Delete what is no longer owned.
        if let Err(e) = self.cleanup(state).await {
            tracing::warn!(error = %e, "clean-up after a committed change failed; restart or repair finishes it");
        }
        Ok(migrated)
    }

    /// Refuses to add `addr` if it is a member under another spelling, or
    /// if the node there answers with a member's id (the same node reached
    /// by another address, or a node started on a copy of a member's
    /// directory): adding it would make the clean-up delete "surplus"
    /// copies that are the very files the member holds.
    async fn check_identity(&self, state: &ClusterState, addr: &NodeAddr, id: &str) -> Result<()> {
        let spelled = |a: &NodeAddr| a.as_str().trim().to_ascii_lowercase();
        let members = state.nodes.iter().chain(state.pending.iter().flatten());
        for m in members {
            if spelled(&m.addr) == spelled(addr) {
                return Err(Error::NodeExists {
                    node: format!("{addr} (member {} under another spelling)", m.addr),
                });
            }
            if id.is_empty() {
                continue;
            }
            let member_id = if m.id.is_empty() {
                // A member recorded before ids existed: ask it.
                self.health(&m.addr)
                    .await
                    .map(|h| h.node_id)
                    .unwrap_or_default()
            } else {
                m.id.clone()
            };
            if member_id == id {
                return Err(Error::Refused {
                    reason: format!(
                        "{addr} answers with node id {id}, the id of member {}: it is the same \
                         node under another address, or a node started on a copy of its \
                         directory. Nothing was changed.",
                        m.addr
                    ),
                });
            }
        }
        Ok(())
    }

    async fn commit(
        &self,
        state: Versioned<ClusterState>,
        _lock: &HeldLock,
    ) -> Result<Versioned<ClusterState>> {
        self.set_progress(|p| p.phase = Phase::Committing);
        let mut next = state.value.clone();
        let pending = next.pending.take().unwrap_or_default();
        // The layout whose surplus copies the clean-up removes.
        next.previous = Some(std::mem::replace(&mut next.nodes, pending));
        next.epoch += 1;
        let version = self
            .meta
            .put_cluster_state(Some(state.version), &next)
            .await?;
        Ok(Versioned {
            value: next,
            version,
        })
    }

    async fn roll_back(&self, state: Versioned<ClusterState>) {
        let mut back = state.value.clone();
        if let Some(p) = back.pending.take() {
            // Copies already made to the pending owners are the surplus.
            back.previous = Some(p);
        }
        match self
            .meta
            .put_cluster_state(Some(state.version), &back)
            .await
        {
            Ok(version) => {
                self.nodes.apply(&back);
                if let Err(e) = self
                    .cleanup(Versioned {
                        value: back,
                        version,
                    })
                    .await
                {
                    tracing::warn!(error = %e, "clean-up after a rolled-back change failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not roll back the ring change; a restart recovers it")
            }
        }
    }

    async fn copy_phase(
        &self,
        state: &ClusterState,
        target: &[NodeEntry],
        batches: Vec<Vec<HashRange>>,
    ) -> Result<u64> {
        self.set_progress(|p| p.phase = Phase::Planning);
        let all = union(&state.nodes, target);
        let ring = ring_of(target, state.vnodes);
        let replicas = state.replicas as usize;
        let started = std::time::Instant::now();
        let (mut total, mut bytes) = (0, 0);
        tracing::info!(
            batches = batches.len(),
            "migration planning by changed ranges"
        );
        // The next batch is listed and planned while this one's copies run.
        let (all, ring) = (&all, &ring);
        let mut plans = futures::stream::iter(batches)
            .map(|batch| async move { self.scan(all, target, &batch, ring, replicas).await })
            .buffered(2);
        while let Some(plan) = plans.next().await {
            let plan = plan?;
            let n = plan.copies.len() as u64;
            let b = plan.copy_bytes();
            total += n;
            bytes += b;
            self.set_progress(|p| {
                p.phase = Phase::Copying;
                p.files_total += n;
                p.bytes_total += b;
            });
            self.run_copies(plan.copies).await?;
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            copies = total,
            bytes,
            secs,
            mib_per_s = bytes as f64 / 1048576.0 / secs.max(1e-9),
            "migration copies done"
        );
        Ok(total)
    }

    async fn run_copies(&self, copies: Vec<CopyTask>) -> Result<()> {
        let results: Vec<Result<()>> = futures::stream::iter(copies)
            .map(|task| async move {
                self.copy_one(&task).await?;
                self.set_progress(|p| {
                    p.files_done += 1;
                    p.bytes_done += task.size;
                });
                Ok(())
            })
            .buffer_unordered(self.config.copy_concurrency.max(1))
            .collect()
            .await;
        let failures: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err())
            .map(|e| e.to_string())
            .collect();
        if let Some(first) = failures.first() {
            return Err(Error::Refused {
                reason: format!("{} file copies failed; first: {first}", failures.len()),
            });
        }
        Ok(())
    }

    async fn copy_one(&self, task: &CopyTask) -> Result<()> {
        let mut last = None;
        for source in &task.sources {
            // The recorded size and checksum: the target refuses anything
            // else, so a bad source can never spread.
            let opts = PutOptions {
                expected_sha256: Some(task.sha256),
                expected_size: Some(task.size),
            };
            match self.nodes.copy(&task.key, source, &task.target, opts).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Refused {
            reason: format!("no good copy of {} to copy from", task.key),
        }))
    }

    /// Deletes copies not owned under `state`'s current ring from every node
    /// in it and in `previous` (over the ranges that changed owners between
    /// the two, or the whole ring when there is no previous layout), then
    /// clears `previous`.
    async fn cleanup(&self, state: Versioned<ClusterState>) -> Result<()> {
        // No copy is deleted while a web server may still route by a ring
        // that reads or writes it there.
        self.wait_acknowledged(state.version, "the committed ring")
            .await?;
        self.set_progress(|p| p.phase = Phase::Cleaning);
        let current = &state.value.nodes;
        let replicas = state.value.replicas as usize;
        let ring = ring_of(current, state.value.vnodes);
        let (all, batches) = match &state.value.previous {
            Some(prev) => (
                union(current, prev),
                scan::changed_batches(&ring_of(prev, state.value.vnodes), &ring, replicas),
            ),
            None => (current.clone(), scan::whole_ring()),
        };
        // A departed node that no longer answers cannot be cleaned; skip it
        // rather than block the cluster.
        let mut reachable = Vec::new();
        for n in all {
            if current.iter().any(|c| c.addr == n.addr) || self.health(&n.addr).await.is_ok() {
                reachable.push(n);
            } else {
                tracing::warn!(node = %n.addr, "departed node unreachable; its copies are left in place");
            }
        }
        let started = std::time::Instant::now();
        let mut count = 0;
        for batch in batches {
            let plan = self
                .scan(&reachable, current, &batch, &ring, replicas)
                .await?;
            let deletions = plan.safe_deletions();
            count += deletions.len();
            futures::stream::iter(deletions)
                .for_each_concurrent(self.config.copy_concurrency.max(1), |d| async move {
                    if let Err(e) = self.nodes.node(&d.node).delete(&d.key).await
                        && !e.is_not_found()
                    {
                        tracing::warn!(node = %d.node, key = %d.key, error = %e, "could not delete surplus copy");
                    }
                })
                .await;
        }
        tracing::info!(
            deleted = count,
            secs = started.elapsed().as_secs_f64(),
            "surplus copies deleted"
        );
        if state.value.previous.is_some() {
            let mut next = state.value.clone();
            next.previous = None;
            self.meta
                .put_cluster_state(Some(state.version), &next)
                .await?;
        }
        Ok(())
    }

    /// Checks that every stored file belongs to a video, that every other
    /// file is on exactly its owners, and that every copy matches the size
    /// and SHA-256 recorded when it was stored. Orphans (see the module
    /// docs) are reported once each as [`Problem::Orphan`], never as
    /// missing, surplus or lost; a file whose video record cannot be read as
    /// [`Problem::Unchecked`]. Works range by range, several at once, in
    /// bounded memory (but for the problems found), reading each video's
    /// record once per run while a bounded cache holds it.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let state = self.state().await?.value;
        let mut all = state.nodes.clone();
        for extra in [&state.pending, &state.previous].into_iter().flatten() {
            all = union(&all, extra);
        }
        let ring = ring_of(&state.nodes, state.vnodes);
        let mut report = VerifyReport::default();
        let videos = orphans::VideoRecords::new(self.meta.clone());
        self.scan_all(
            &all,
            &ring,
            state.replicas as usize,
            scan::whole_ring(),
            &videos,
            |p, orphans| {
                report.files_checked += p.files;
                report.problems.extend(p.all_problems());
                report
                    .problems
                    .extend(orphans.iter().map(orphans::Orphan::problem));
            },
        )
        .await?;
        Ok(report)
    }

    /// Makes the placement [`ClusterManager::verify`] checks right: missing
    /// and bad copies are copied from good ones, then surplus copies are
    /// deleted. Orphans are left alone (their copies are placed like any
    /// file's): this is the repair the healer runs on its own;
    /// [`ClusterManager::repair_with`] also removes orphans. Returns the
    /// number of copies made.
    pub async fn repair(&self) -> Result<u64> {
        let lease = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await?;
        let lock = HeldLock::start(self.meta.clone(), lease);
        let result = async {
            let state = self.state().await?;
            if state.value.pending.is_some() {
                self.recover_locked(&lock).await?;
                return Ok(0);
            }
            self.progress.send_replace(Progress {
                phase: Phase::Planning,
                change: "repair".into(),
                ..Progress::default()
            });
            let n = self
                .copy_phase(&state.value, &state.value.nodes, scan::whole_ring())
                .await?;
            self.cleanup(state).await?;
            Ok(n)
        }
        .await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        self.set_progress(|p| p.phase = Phase::Done);
        result
    }

    /// Makes everything [`ClusterManager::verify`] finds right that can be:
    /// missing and bad copies of files of a video are copied from good
    /// ones, surplus copies deleted, and then the orphans found removed
    /// from every node holding them, their file records forgotten. An orphan
    /// is removed only after `options.orphan_grace`, and only if a fresh
    /// read of its video's record then still makes it one, so that a write
    /// in flight is never taken for an orphan. A file whose video record
    /// cannot be read is never deleted. Lost and disputed files stay as
    /// they are (reported by verify).
    ///
    /// Takes the admin lock for the whole run, grace period included;
    /// [`Error::Locked`] if a change or another repair holds it. If a ring
    /// change was interrupted, only its recovery is done (run it again).
    pub async fn repair_with(&self, options: &RepairOptions) -> Result<RepairReport> {
        if options.orphan_grace > MAX_ORPHAN_GRACE {
            return Err(Error::invalid(
                "orphan grace period",
                format!("{} s", options.orphan_grace.as_secs()),
                format!("at most {} s", MAX_ORPHAN_GRACE.as_secs()),
            ));
        }
        let lease = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await?;
        let lock = HeldLock::start(self.meta.clone(), lease);
        let result = self.repair_locked(options, &lock).await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        self.set_progress(|p| {
            p.phase = Phase::Done;
            match &result {
                Ok(r) => {
                    p.migrated = r.copies_made;
                    p.orphans_removed = r.orphans_removed;
                    p.orphans_kept = r.orphans_kept;
                    p.orphans_skipped = r.orphans_skipped;
                    p.message = format!("repair: done, {r}");
                }
                Err(e) => p.message = format!("repair: failed: {e}"),
            }
        });
        result
    }

    async fn repair_locked(
        &self,
        options: &RepairOptions,
        lock: &HeldLock,
    ) -> Result<RepairReport> {
        let state = self.state().await?;
        if state.value.pending.is_some() {
            self.recover_locked(lock).await?;
            return Ok(RepairReport::default());
        }
        self.progress.send_replace(Progress {
            phase: Phase::Planning,
            change: "repair".into(),
            ..Progress::default()
        });
        let videos = orphans::VideoRecords::new(self.meta.clone());
        let (copies_made, found, unchecked) = self.judged_copy_phase(&state.value, &videos).await?;
        let members = state.value.nodes.clone();
        self.cleanup(state).await?;
        let mut report = self
            .remove_orphans(&members, found, options.orphan_grace, lock)
            .await?;
        report.copies_made = copies_made;
        report.orphans_skipped += unchecked;
        Ok(report)
    }

    /// Restores the replica count of every file while the nodes in `down`
    /// cannot be reached: each file gets its copies on the first live nodes
    /// clockwise from its hash (where hinted writes go too), copied from the
    /// surviving copies. Nothing is deleted; [`ClusterManager::repair`],
    /// run once the nodes are back, hands the copies back to their owners
    /// and removes the stand-ins. Returns the number of copies made.
    ///
    /// Takes the admin lock; [`Error::Locked`] if a change or another
    /// repair holds it.
    pub async fn rereplicate(&self, down: &BTreeSet<NodeAddr>) -> Result<u64> {
        let lease = self
            .meta
            .try_lock_admin(&self.config.holder, self.config.lock_ttl)
            .await?;
        let lock = HeldLock::start(self.meta.clone(), lease);
        let result = async {
            let state = self.state().await?.value;
            if state.pending.is_some() {
                // A ring change is under way; its recovery comes first.
                return Ok(0);
            }
            let live: Vec<NodeEntry> = state
                .nodes
                .iter()
                .filter(|n| !down.contains(&n.addr))
                .cloned()
                .collect();
            if live.is_empty() {
                return Err(Error::Refused {
                    reason: "every storage node is down; there is nothing to copy from".into(),
                });
            }
            self.progress.send_replace(Progress {
                phase: Phase::Planning,
                change: format!(
                    "re-replicate around {}",
                    down.iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                ..Progress::default()
            });
            let ring = ring_of(&live, state.vnodes);
            let replicas = (state.replicas as usize).min(live.len());
            let mut total = 0;
            for batch in scan::whole_ring() {
                let plan = self.scan(&live, &live, &batch, &ring, replicas).await?;
                let (n, bytes) = (plan.copies.len() as u64, plan.copy_bytes());
                total += n;
                self.set_progress(|p| {
                    p.phase = Phase::Copying;
                    p.files_total += n;
                    p.bytes_total += bytes;
                });
                self.run_copies(plan.copies).await?;
            }
            Ok(total)
        }
        .await;
        let _ = self.meta.unlock_admin(&lock.lease).await;
        lock.stop();
        self.set_progress(|p| {
            p.phase = Phase::Done;
            if let Ok(n) = &result {
                p.migrated = *n;
            }
        });
        result
    }

    /// Health of every member (and pending member).
    pub async fn health_all(&self) -> Result<Vec<(NodeEntry, Result<NodeHealth>)>> {
        let state = self.state().await?.value;
        let mut all = state.nodes.clone();
        if let Some(p) = &state.pending {
            all = union(&all, p);
        }
        let checks = all.into_iter().map(|n| async move {
            let h = self.health(&n.addr).await;
            (n, h)
        });
        Ok(futures::future::join_all(checks).await)
    }

    async fn health(&self, addr: &NodeAddr) -> Result<NodeHealth> {
        match tokio::time::timeout(self.config.health_timeout, self.nodes.health(addr)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unavailable {
                what: format!("storage node {addr}"),
                reason: format!("no answer within {:?}", self.config.health_timeout),
            }),
        }
    }

    pub(crate) async fn lock_waiting(&self) -> Result<HeldLock> {
        let deadline = tokio::time::Instant::now() + self.config.lock_ttl * 3;
        loop {
            match self
                .meta
                .try_lock_admin(&self.config.holder, self.config.lock_ttl)
                .await
            {
                Ok(lease) => return Ok(HeldLock::start(self.meta.clone(), lease)),
                Err(Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps the data plane routed by the stored cluster state, following
    /// changes made by other processes, until `shutdown` resolves; and
    /// acknowledges the state it routes by (renewed every third of
    /// [`ManagerConfig::ack_ttl`]), so ring changes wait for this server.
    /// Writes are refused once the acknowledgement lapses (the metadata
    /// store out of reach), until it is renewed.
    pub async fn follow(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut known = None;
        let every = (self.config.ack_ttl / 3).max(Duration::from_millis(100));
        loop {
            let wait = self.meta.wait_cluster_change(known, every);
            tokio::select! {
                _ = &mut shutdown => {
                    // Gone: changes need not wait for this server.
                    if let Some(v) = known {
                        let _ = self.meta.put_cluster_ack(&ClusterAck {
                            server: self.config.holder.clone(),
                            version: v,
                            until_ms: 0,
                        }).await;
                    }
                    return;
                }
                r = wait => match r {
                    Ok(Some(v)) => {
                        if known != Some(v.version) {
                            self.nodes.apply(&v.value);
                            known = Some(v.version);
                        }
                        self.acknowledge(v.version).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the cluster state failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Says this server routes by cluster state `version` (already applied).
    async fn acknowledge(&self, version: u64) {
        let until_ms = now_ms() + self.config.ack_ttl.as_millis() as i64;
        let ack = ClusterAck {
            server: self.config.holder.clone(),
            version,
            until_ms,
        };
        match self.meta.put_cluster_ack(&ack).await {
            Ok(()) => self.nodes.fence_writes_after(until_ms),
            Err(e) => {
                tracing::warn!(error = %e, "could not acknowledge the cluster state; writes stop when the last acknowledgement lapses");
            }
        }
    }

    /// Waits until every web server whose acknowledgement is live routes by
    /// cluster state `version` or later; a server whose acknowledgement
    /// lapses meanwhile is left out (it refuses writes until it catches
    /// up). Fails, naming the laggards, after three acknowledgement
    /// lifetimes.
    async fn wait_acknowledged(&self, version: u64, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.ack_ttl * 3;
        loop {
            let now = now_ms();
            let behind: Vec<String> = self
                .meta
                .cluster_acks()
                .await?
                .into_iter()
                .filter(|a| a.until_ms > now && a.version < version)
                .map(|a| a.server)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    what: format!("acknowledgement of {what}"),
                    reason: format!(
                        "web servers {} still route by an older ring",
                        behind.join(", ")
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn set_progress(&self, f: impl FnOnce(&mut Progress)) {
        self.progress.send_modify(f);
    }
}

/// Runs `work` as a task of its own and waits for it; dropping the wait
/// leaves the work running to its end.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(work)
        .await
        .map_err(|e| Error::backend("cluster", "a cluster job failed", e))?
}

fn union(a: &[NodeEntry], b: &[NodeEntry]) -> Vec<NodeEntry> {
    let mut out = a.to_vec();
    for n in b {
        if !out.iter().any(|m| m.addr == n.addr) {
            out.push(n.clone());
        }
    }
    out
}

fn node_error(addr: &NodeAddr, what: &str, e: Error) -> Error {
    match e {
        e @ Error::Node { .. } => e,
        e => Error::Node {
            node: addr.to_string(),
            message: format!("{what} failed: {e}"),
            source: None,
        },
    }
}

/// The admin lock, renewed in the background while held, and released
/// when dropped on any path (an error, a panic, or a caller that went away
/// mid-change), so a lock is never renewed for a change nobody runs.
pub(crate) struct HeldLock {
    pub(crate) lease: AdminLease,
    meta: Arc<dyn MetadataStore>,
    lost: Arc<AtomicBool>,
    released: AtomicBool,
    renew: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    fn start(meta: Arc<dyn MetadataStore>, lease: AdminLease) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renew = {
            let lease = lease.clone();
            let lost = lost.clone();
            let meta = meta.clone();
            tokio::spawn(async move {
                let every = (lease.ttl / 3).max(Duration::from_millis(100));
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = meta.renew_admin_lock(&lease).await {
                        tracing::error!(error = %e, "lost the admin lock");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        HeldLock {
            lease,
            meta,
            lost,
            released: AtomicBool::new(false),
            renew,
        }
    }

    fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing; the caller has released the lease (or is about to).
    pub(crate) fn stop(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.renew.abort();
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let (meta, lease) = (self.meta.clone(), self.lease.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.unlock_admin(&lease).await {
                    tracing::warn!(error = %e, "could not release the admin lock; it expires by itself");
                }
            });
        }
    }
}
