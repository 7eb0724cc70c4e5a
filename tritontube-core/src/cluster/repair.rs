//! Verify, repair and re-replication.

use std::collections::BTreeSet;

use super::lock::Take;
use super::{
    ClusterManager, HeldLock, MAX_ORPHAN_GRACE, Phase, Progress, RepairOptions, RepairReport,
    VerifyReport, orphans, ring_of, scan, union,
};
use crate::error::{Error, Result};
use crate::id::NodeAddr;
use crate::metadata::NodeEntry;

impl ClusterManager {
    /// Checks that every stored file belongs to a video, that every other
    /// file is on exactly its owners, and that every copy matches the size
    /// and SHA-256 recorded when it was stored. Orphans (see the module
    /// docs) are reported once each as [`Problem::Orphan`](super::Problem::Orphan), never as
    /// missing, surplus or lost; a file whose video record cannot be read as
    /// [`Problem::Unchecked`](super::Problem::Unchecked). Works range by range, several at once, in
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
        let result = self
            .under_lock(Take::Now, async |lock| {
                let state = self.state().await?;
                if state.value.pending.is_some() {
                    self.recover_locked(lock).await?;
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
            })
            .await;
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
        let result = self
            .under_lock(Take::Now, async |lock| {
                self.repair_locked(options, lock).await
            })
            .await;
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

    pub(super) async fn repair_locked(
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
        let result = self
            .under_lock(Take::Now, async |_| {
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
            })
            .await;
        self.set_progress(|p| {
            p.phase = Phase::Done;
            if let Ok(n) = &result {
                p.migrated = *n;
            }
        });
        result
    }
}
