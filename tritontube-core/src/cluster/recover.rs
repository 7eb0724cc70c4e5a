//! Finishing (or rolling back) a change a crash interrupted.

use std::collections::BTreeSet;

use super::job::RunningJob;
use super::lock::Take;
use super::{ClusterManager, HeldLock, Phase, Progress};
use crate::error::{Error, Result};
use crate::id::NodeAddr;
use crate::metadata::lifecycle::now_ms;
use crate::metadata::{ChangeInfo, ClusterState, MetadataStore};

impl ClusterManager {
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
        self.under_lock(Take::Waiting, async |lock| self.recover_locked(lock).await)
            .await
            .map(|_| true)
    }

    /// Resumes a ring change nobody runs any more: its web server died
    /// (its lock lapsed), or its clean-up failed. Takes the admin lock only
    /// if it is free, so a change that runs is left alone. Returns true if
    /// there was one to resume.
    pub async fn resume_abandoned(&self) -> Result<bool> {
        let state = self.state().await?;
        if state.value.pending.is_none() && state.value.previous.is_none() {
            return Ok(false);
        }
        match self
            .under_lock(Take::Now, async |lock| self.recover_locked(lock).await)
            .await
        {
            Ok(()) => Ok(true),
            Err(Error::Locked { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn recover_locked(&self, lock: &HeldLock) -> Result<()> {
        let state = self.state().await?;
        self.nodes.apply(&state.value);
        if state.value.pending.is_none() {
            // Committed (or rolled back): only the clean-up is left.
            return self.cleanup(state).await;
        }
        let info = match state.value.change.clone() {
            Some(c) => c,
            // Written before changes had ids.
            None => ChangeInfo {
                id: super::job::new_job_id(state.value.epoch),
                what: "interrupted change".into(),
                holder: self.config.holder.clone(),
                started_ms: now_ms(),
                cancel_requested: false,
                outcome: None,
            },
        };
        let down = self.new_nodes_down(&state.value).await;
        if info.cancel_requested || !down.is_empty() {
            let why = match info.cancel_requested {
                true => "it was cancelled".to_string(),
                false => format!("its new node {} is down", down.join(", ")),
            };
            tracing::warn!(job = %info.id, change = %info.what, "rolling back the interrupted ring change: {why}");
            self.roll_back(&state).await;
            let result = Err(match info.cancel_requested {
                true => super::change::cancelled(&info),
                false => Error::Refused {
                    reason: format!("rolled back: {why}"),
                },
            });
            self.record_outcome(&info, &result).await;
            return Ok(());
        }
        tracing::info!(job = %info.id, change = %info.what, "resuming the interrupted ring change");
        self.progress.send_replace(Progress {
            phase: Phase::Planning,
            change: format!("resume {}", info.what),
            job: info.id.clone(),
            ..Progress::default()
        });
        let job = RunningJob::register(self, &info);
        let result = self.finish_pending(state, lock, &job).await;
        self.record_outcome(&info, &result).await;
        let migrated = result?;
        tracing::info!(job = %info.id, migrated, "interrupted ring change committed");
        Ok(())
    }

    /// The nodes a pending ring adds that do not answer.
    async fn new_nodes_down(&self, state: &ClusterState) -> Vec<String> {
        let old: BTreeSet<&NodeAddr> = state.nodes.iter().map(|n| &n.addr).collect();
        let mut down = Vec::new();
        for n in state.pending.iter().flatten() {
            if !old.contains(&n.addr) && self.health(&n.addr).await.is_err() {
                down.push(n.addr.to_string());
            }
        }
        down
    }
}
