//! Removing orphans: the copy phase of a repair that judges every file
//! against its video's record, and the removal, after the grace period, of
//! the orphans it found.

use super::*;

impl ClusterManager {
    /// A repair's copy phase over the whole ring, orphans taken out of each
    /// batch first: makes the missing and bad copies of the other files.
    /// Returns the copies made, the orphans found and how many files could
    /// not be judged (their video record could not be read).
    pub(crate) async fn judged_copy_phase(
        &self,
        state: &ClusterState,
        videos: &VideoRecords,
    ) -> Result<(u64, Vec<Orphan>, u64)> {
        let nodes = &state.nodes;
        let ring = &ring_of(nodes, state.vnodes);
        let replicas = state.replicas as usize;
        // The next batch is listed and judged while this one's copies run.
        let mut plans = futures::stream::iter(scan::whole_ring())
            .map(|batch| async move {
                self.scan_judged(nodes, nodes, &batch, ring, replicas, videos)
                    .await
            })
            .buffered(2);
        let (mut copies, mut found, mut unchecked) = (0, Vec::new(), 0);
        while let Some(batch) = plans.next().await {
            let (plan, orphans) = batch?;
            unchecked += plan
                .problems
                .iter()
                .filter(|p| matches!(p, Problem::Unchecked { .. }))
                .count() as u64;
            let (n, bytes) = (plan.copies.len() as u64, plan.copy_bytes());
            copies += n;
            self.set_progress(|p| {
                p.phase = Phase::Copying;
                p.files_total += n;
                p.bytes_total += bytes;
            });
            self.run_copies(plan.copies).await?;
            found.extend(orphans);
        }
        if unchecked > 0 {
            tracing::warn!(
                files = unchecked,
                "files whose video record could not be read were not judged; none is deleted"
            );
        }
        Ok((copies, found, unchecked))
    }

    /// Waits `grace`, then re-checks each orphan `found` against a fresh
    /// read of its video's record (one per video, just before deleting its
    /// files) and removes those still orphans from every member and every
    /// node that held them, then forgets their file records.
    pub(crate) async fn remove_orphans(
        &self,
        members: &[NodeEntry],
        found: Vec<Orphan>,
        grace: Duration,
        lock: &HeldLock,
    ) -> Result<RepairReport> {
        if found.is_empty() {
            return Ok(RepairReport::default());
        }
        let (n, bytes) = (found.len() as u64, found.iter().map(|o| o.size).sum());
        tracing::info!(
            orphans = n,
            grace_secs = grace.as_secs_f64(),
            "orphans found; re-checked after the grace period"
        );
        self.set_progress(|p| {
            p.phase = Phase::OrphanGrace;
            p.files_total = n;
            p.files_done = 0;
            p.bytes_total = bytes;
            p.bytes_done = 0;
            p.message = format!(
                "{n} orphans found; each is removed after {} s if still an orphan then",
                grace.as_secs()
            );
        });
        tokio::time::sleep(grace).await;
        if lock.lost() {
            return Err(Error::Locked {
                holder: "another process (this one's lock expired during the grace period)".into(),
            });
        }
        self.set_progress(|p| p.phase = Phase::RemovingOrphans);
        let mut by_video: BTreeMap<VideoId, Vec<Orphan>> = BTreeMap::new();
        for o in found {
            by_video.entry(o.key.video().clone()).or_default().push(o);
        }
        let counts: Vec<RepairReport> = futures::stream::iter(by_video)
            .map(|(video, orphans)| self.remove_video_orphans(members, video, orphans))
            .buffer_unordered(self.config.copy_concurrency.max(1))
            .collect()
            .await;
        let mut total = RepairReport::default();
        for c in counts {
            total.orphans_removed += c.orphans_removed;
            total.orphans_kept += c.orphans_kept;
            total.orphans_skipped += c.orphans_skipped;
        }
        tracing::info!(
            removed = total.orphans_removed,
            kept = total.orphans_kept,
            skipped = total.orphans_skipped,
            "orphans re-checked"
        );
        Ok(total)
    }

    /// Re-checks and removes the orphans of one video.
    async fn remove_video_orphans(
        &self,
        members: &[NodeEntry],
        video: VideoId,
        orphans: Vec<Orphan>,
    ) -> RepairReport {
        let mut counts = RepairReport::default();
        // Read now, not from the scan's cache: the grace period is over, and
        // what counts is the record just before the files go.
        let record = VideoRecord::read(self.meta.as_ref(), &video).await;
        // (key, whether a copy was deleted, whether it had a record)
        let mut removed = Vec::new();
        for o in orphans {
            match record.judge(&o.key) {
                Verdict::Live => {
                    tracing::info!(key = %o.key, "not an orphan any more (its video is recorded now); kept");
                    counts.orphans_kept += 1;
                }
                Verdict::Unchecked(why) => {
                    tracing::warn!(key = %o.key, "orphan kept: {why}");
                    counts.orphans_skipped += 1;
                }
                Verdict::Orphan(why) => match self.delete_everywhere(members, &o).await {
                    Ok(deleted) => {
                        tracing::info!(key = %o.key, copies = deleted, "orphan removed: {why}");
                        removed.push((o.key.clone(), deleted > 0, o.recorded));
                    }
                    Err(e) => {
                        tracing::warn!(key = %o.key, error = %e, "could not delete an orphan; a later repair retries");
                        counts.orphans_skipped += 1;
                    }
                },
            }
            self.set_progress(|p| {
                p.files_done += 1;
                p.bytes_done += o.size;
            });
        }
        let keys: Vec<ContentKey> = removed.iter().map(|(k, _, _)| k.clone()).collect();
        let forgot = if keys.is_empty() {
            true
        } else {
            match self.meta.forget_file_records(&keys).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(video = %video, error = %e, "could not forget orphans' file records; a later repair retries");
                    false
                }
            }
        };
        for (_, deleted, recorded) in removed {
            if deleted || (recorded && forgot) {
                counts.orphans_removed += 1;
            } else if recorded {
                counts.orphans_skipped += 1;
            }
            // Else nothing was left of it: gone meanwhile (say, purged).
        }
        self.set_progress(|p| {
            p.orphans_removed += counts.orphans_removed;
            p.orphans_kept += counts.orphans_kept;
            p.orphans_skipped += counts.orphans_skipped;
        });
        counts
    }

    /// Deletes `orphan` from every member and every node that held it (a
    /// late write may have reached a node the listing did not show).
    /// Returns how many copies were deleted.
    async fn delete_everywhere(&self, members: &[NodeEntry], orphan: &Orphan) -> Result<u64> {
        let mut nodes: Vec<&NodeAddr> = members.iter().map(|m| &m.addr).collect();
        for h in &orphan.holders {
            if !nodes.contains(&h) {
                nodes.push(h);
            }
        }
        let results = futures::future::join_all(
            nodes
                .into_iter()
                .map(|n| async move { (n, self.nodes.node(n).delete(&orphan.key).await) }),
        )
        .await;
        let mut deleted = 0;
        let mut failed = None;
        for (n, r) in results {
            match r {
                Ok(()) => deleted += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => failed = Some(node_error(n, "delete", e)),
            }
        }
        failed.map_or(Ok(deleted), Err)
    }
}
