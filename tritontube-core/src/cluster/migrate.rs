//! Moving copies: the copy phase of a change and the clean-up of surplus
//! copies after it.

use futures::StreamExt;

use super::{ClusterManager, CopyTask, Phase, ring_of, scan, union};
use crate::error::{Error, Result};
use crate::layout::transition;
use crate::metadata::{ClusterState, MetadataStore, NodeEntry, Versioned};
use crate::ring::HashRange;
use crate::store::PutOptions;

impl ClusterManager {
    pub(super) async fn copy_phase(
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

    pub(super) async fn run_copies(&self, copies: Vec<CopyTask>) -> Result<()> {
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

    pub(super) async fn copy_one(&self, task: &CopyTask) -> Result<()> {
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
    pub(super) async fn cleanup(&self, state: Versioned<ClusterState>) -> Result<()> {
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
        if let Ok(next) = transition::cleaned(&state.value) {
            self.meta
                .put_cluster_state(Some(state.version), &next)
                .await?;
        }
        Ok(())
    }
}
