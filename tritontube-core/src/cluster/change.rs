//! Ring changes: add, remove and re-weight a node, each run as a job of the
//! server (see [`super::job`]) through DESIGN.md's steps: pending ring,
//! acknowledged by every web server, copy, commit, clean-up.

use super::job::JobRun;
use super::lock::Take;
use super::{ClusterManager, HeldLock, Phase, Progress, ring_of, scan};
use crate::error::{Error, Result};
use crate::id::NodeAddr;
use crate::layout::transition;
use crate::metadata::{ChangeInfo, ClusterState, MetadataStore, NodeEntry, Versioned};

/// A ring change asked of the [`ClusterManager`].
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// Add the node at `addr`, with `weight` (its share of the ring
    /// relative to a node of weight 1.0).
    Add {
        /// Where the new node answers; also its name on the ring.
        addr: NodeAddr,
        /// Its weight.
        weight: f64,
    },
    /// Remove a member, after moving its files to their new owners.
    Remove {
        /// The member's ring name.
        addr: NodeAddr,
    },
    /// Change a member's weight, migrating accordingly.
    Weight {
        /// The member's ring name.
        addr: NodeAddr,
        /// Its new weight.
        weight: f64,
    },
}

impl ChangeKind {
    /// What the change is, for people (`add 127.0.0.1:8093`).
    pub fn describe(&self) -> String {
        match self {
            ChangeKind::Add { addr, .. } => format!("add {addr}"),
            ChangeKind::Remove { addr } => format!("remove {addr}"),
            ChangeKind::Weight { addr, weight } => format!("weight {addr} {weight}"),
        }
    }

    /// Checks what can be checked without the cluster state.
    pub(super) fn validate(&self) -> Result<()> {
        match self {
            ChangeKind::Add { weight, .. } | ChangeKind::Weight { weight, .. }
                if !(weight.is_finite() && *weight > 0.0) =>
            {
                Err(Error::invalid(
                    "weight",
                    weight.to_string(),
                    "must be a positive number",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The members after the change, and the node that must answer before
    /// it starts (a node being added).
    fn decide(&self, state: &ClusterState) -> Result<(Vec<NodeEntry>, Option<NodeAddr>)> {
        let member = |addr: &NodeAddr| state.nodes.iter().any(|n| n.addr == *addr);
        match self {
            ChangeKind::Add { addr, weight } => {
                if member(addr) {
                    return Err(Error::NodeExists {
                        node: addr.to_string(),
                    });
                }
                let mut nodes = state.nodes.clone();
                nodes.push(NodeEntry::new(addr.clone(), *weight));
                Ok((nodes, Some(addr.clone())))
            }
            ChangeKind::Remove { addr } => {
                if !member(addr) {
                    return Err(Error::UnknownNode {
                        node: addr.to_string(),
                    });
                }
                let left = state.nodes.len() - 1;
                if left == 0 {
                    return Err(Error::Refused {
                        reason: format!(
                            "{addr} is the last storage node; removing it would lose every file"
                        ),
                    });
                }
                if left < state.replicas as usize {
                    return Err(Error::Refused {
                        reason: format!(
                            "removing {addr} would leave {left} nodes, fewer than the {} \
                             replicas every file needs",
                            state.replicas
                        ),
                    });
                }
                let nodes = state.nodes.iter().filter(|n| n.addr != *addr).cloned();
                Ok((nodes.collect(), None))
            }
            ChangeKind::Weight { addr, weight } => {
                if !member(addr) {
                    return Err(Error::UnknownNode {
                        node: addr.to_string(),
                    });
                }
                let mut nodes = state.nodes.clone();
                for n in nodes.iter_mut().filter(|n| n.addr == *addr) {
                    n.weight = *weight;
                }
                Ok((nodes, None))
            }
        }
    }
}

impl ClusterManager {
    /// Adds a node and migrates the files it now owns. Returns the number of
    /// file copies moved.
    pub async fn add_node(&self, addr: &NodeAddr, weight: f64) -> Result<u64> {
        let addr = addr.clone();
        self.run_change(ChangeKind::Add { addr, weight }).await
    }

    /// Removes a node after moving its files to their new owners. Returns the
    /// number of file copies moved.
    pub async fn remove_node(&self, addr: &NodeAddr) -> Result<u64> {
        let addr = addr.clone();
        self.run_change(ChangeKind::Remove { addr }).await
    }

    /// Changes a node's weight and migrates accordingly. Returns the number
    /// of file copies moved.
    pub async fn set_weight(&self, addr: &NodeAddr, weight: f64) -> Result<u64> {
        let addr = addr.clone();
        self.run_change(ChangeKind::Weight { addr, weight }).await
    }

    /// Starts `kind` and waits for it to end.
    async fn run_change(&self, kind: ChangeKind) -> Result<u64> {
        self.start_change(kind).await?.wait().await
    }

    /// Runs a change under the admin lock, from its checks to its clean-up.
    /// `run` hears of the job once its pending ring is written.
    pub(super) async fn change_job(&self, kind: ChangeKind, run: JobRun) -> Result<u64> {
        let what = kind.describe();
        let result = self
            .under_lock(Take::Now, async |lock| {
                self.change_locked(&kind, lock, run).await
            })
            .await;
        self.set_progress(|p| {
            p.phase = Phase::Done;
            p.message = match &result {
                Ok(n) => {
                    p.migrated = *n;
                    format!("{what}: done, {n} file copies migrated")
                }
                Err(e) => format!("{what}: failed: {e}"),
            };
        });
        result
    }

    async fn change_locked(&self, kind: &ChangeKind, lock: &HeldLock, run: JobRun) -> Result<u64> {
        let mut state = self.state().await?;
        if state.value.pending.is_some() || state.value.previous.is_some() {
            // An earlier change was interrupted, or its clean-up could not
            // run: finish it first, under this lock.
            tracing::info!("finishing an earlier ring change before this one");
            self.recover_locked(lock).await?;
            state = self.state().await?;
        }
        // 2. Checks before any change.
        let (mut new_nodes, must_answer) = kind.decide(&state.value)?;
        if let Some(addr) = &must_answer {
            let id = self.admit(&state.value, addr).await?;
            for n in new_nodes.iter_mut().filter(|n| n.addr == *addr) {
                n.id = id.clone();
            }
        }
        let info = ChangeInfo {
            id: super::job::new_job_id(state.value.epoch),
            what: kind.describe(),
            holder: self.config.holder.clone(),
            started_ms: crate::metadata::lifecycle::now_ms(),
            cancel_requested: false,
            outcome: None,
        };
        self.progress.send_replace(Progress {
            phase: Phase::Planning,
            change: info.what.clone(),
            job: info.id.clone(),
            ..Progress::default()
        });
        // 3. Pending: from now on, writes go to both rings' owners.
        let pending_state = transition::begin(&state.value, new_nodes, info.clone())?;
        let version = self
            .meta
            .put_cluster_state(Some(state.version), &pending_state)
            .await?;
        let state = Versioned {
            value: pending_state,
            version,
        };
        self.nodes.apply(&state.value);
        let job = run.started(self, &info);
        let result = self.finish_pending(state, lock, &job).await;
        self.record_outcome(&info, &result).await;
        result
    }

    /// The node at `addr`, about to be added, answers and is not a member
    /// under another name: its node id.
    async fn admit(&self, state: &ClusterState, addr: &NodeAddr) -> Result<String> {
        let h = self.health(addr).await.map_err(|e| Error::Refused {
            reason: format!("node {addr} does not answer, so it was not added: {e}"),
        })?;
        self.check_identity(state, addr, &h.node_id).await?;
        Ok(h.node_id)
    }

    /// Steps 4 to 7 of a change whose pending ring is written: every web
    /// server acknowledges it, copy, commit, clean up. A failure, or a
    /// cancellation before the commit, rolls the change back.
    pub(super) async fn finish_pending(
        &self,
        state: Versioned<ClusterState>,
        lock: &HeldLock,
        job: &super::job::RunningJob,
    ) -> Result<u64> {
        let target = state.value.pending.clone().unwrap_or_default();
        let copied = job
            .until_cancelled(async {
                // Every live web server writes to the new owners too
                // before the copy starts, so no file written meanwhile
                // misses them.
                self.wait_acknowledged(state.version, "the pending ring")
                    .await?;
                // 4–5. Plan from what nodes hold in the ranges that change
                // owners, copy.
                let batches = scan::changed_batches(
                    &ring_of(&state.value.nodes, state.value.vnodes),
                    &ring_of(&target, state.value.vnodes),
                    state.value.replicas as usize,
                );
                self.copy_phase(&state.value, &target, batches).await
            })
            .await;
        let migrated = match copied {
            Ok(n) => n,
            Err(e) => {
                self.roll_back(&state).await;
                return Err(e);
            }
        };
        if lock.lost() {
            self.roll_back(&state).await;
            return Err(Error::Locked {
                holder: "another process (this one's lock expired during the change)".into(),
            });
        }
        // 6. Commit (unless a cancellation came first).
        let state = match self.commit(&state).await {
            Ok(s) => s,
            Err(e @ Error::Cancelled { .. }) => {
                self.roll_back(&state).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.nodes.apply(&state.value);
        // 7. Delete what is no longer owned.
        if let Err(e) = self.cleanup(state).await {
            tracing::warn!(error = %e, "clean-up after a committed change failed; restart or repair finishes it");
        }
        Ok(migrated)
    }

    /// Makes the pending ring of `state`'s change current (epoch + 1),
    /// unless someone asked to cancel the change first:
    /// [`Error::Cancelled`] then, and nothing is written.
    pub(super) async fn commit(
        &self,
        state: &Versioned<ClusterState>,
    ) -> Result<Versioned<ClusterState>> {
        self.set_progress(|p| p.phase = Phase::Committing);
        loop {
            let current = self.state().await?;
            if current.value.pending != state.value.pending {
                return Err(Error::Conflict {
                    key: "cluster state".into(),
                    reason: "the pending ring changed under the running change".into(),
                });
            }
            // Refused (nothing written) if a cancellation came first.
            let next = transition::commit(&current.value)?;
            match self
                .meta
                .put_cluster_state(Some(current.version), &next)
                .await
            {
                Ok(version) => {
                    return Ok(Versioned {
                        value: next,
                        version,
                    });
                }
                // Written meanwhile (a cancellation?): look again.
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Undoes `state`'s pending ring: the copies already made to its new
    /// owners become the surplus the clean-up deletes.
    pub(super) async fn roll_back(&self, state: &Versioned<ClusterState>) {
        let rolled = async {
            loop {
                let current = self.state().await?;
                if current.value.pending.is_none() || current.value.pending != state.value.pending {
                    return Ok(None);
                }
                let back = transition::roll_back(&current.value)?;
                match self
                    .meta
                    .put_cluster_state(Some(current.version), &back)
                    .await
                {
                    Ok(version) => {
                        return Ok(Some(Versioned {
                            value: back,
                            version,
                        }));
                    }
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        match rolled.await {
            Ok(Some(back)) => {
                self.nodes.apply(&back.value);
                if let Err(e) = self.cleanup(back).await {
                    tracing::warn!(error = %e, "clean-up after a rolled-back change failed");
                }
            }
            Ok(None) => tracing::warn!("the change to roll back is no longer pending"),
            Err(e) => {
                tracing::error!(error = %e, "could not roll back the ring change; a restart recovers it")
            }
        }
    }
}

/// The error of a change cancelled on request.
pub(super) fn cancelled(c: &ChangeInfo) -> Error {
    Error::Cancelled {
        what: format!(
            "ring change {} ({}) was cancelled and rolled back",
            c.id, c.what
        ),
    }
}
