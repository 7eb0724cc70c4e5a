//! Scanning the cluster range by range: what the nodes hold in some ring
//! ranges, what the metadata store recorded for the same ranges, and the
//! plan comparing the two.
//!
//! Working a range batch at a time keeps memory bounded whatever the number
//! of files, and lets a ring change list only the ranges whose owners
//! change (the ring [`diff`]) instead of everything stored.
//!
//! Verify and repair also judge every key of a batch by its video's record
//! ([`ClusterManager::scan_judged`]): orphans leave the batch before it is
//! planned. Ring changes and their clean-up do not: they move and keep
//! whatever is stored.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};

use super::lock::Take;
use super::orphans::{Orphan, VideoRecords, split_orphans};
use super::{ClusterManager, Holdings, Plan, Recorded, node_error, plan, ring_of};
use crate::error::{Error, Result};
use crate::id::ContentKey;
use crate::layout::Ring;
use crate::metadata::NodeEntry;
use crate::ring::{HashRange, TokenRing, diff};

/// Ranges listed per request and planned together.
const RANGES_PER_BATCH: usize = 256;

/// Equal parts the whole ring is cut into for verify and repair.
pub(crate) const RING_PARTS: u64 = 256;

/// Range batches scanned at once by verify.
pub(crate) const PARALLEL_BATCHES: usize = 4;

/// The ranges whose owners differ between `before` and `after`, sorted and
/// cut into batches.
pub(crate) fn changed_batches(
    before: &TokenRing,
    after: &TokenRing,
    replicas: usize,
) -> Vec<Vec<HashRange>> {
    let mut ranges: Vec<HashRange> = diff(before, after, replicas)
        .iter()
        .flat_map(|c| c.ranges())
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.start);
    ranges
        .chunks(RANGES_PER_BATCH)
        .map(<[HashRange]>::to_vec)
        .collect()
}

/// The whole ring, in [`RING_PARTS`] batches of one range.
pub(crate) fn whole_ring() -> Vec<Vec<HashRange>> {
    HashRange::split_ring(RING_PARTS)
        .into_iter()
        .map(|r| vec![r])
        .collect()
}

impl ClusterManager {
    /// Rewrites missing or bad copies of `keys` on their owners from a copy
    /// that matches the record (no deletion, no lock: each copy is checked
    /// by its target). Skipped during a ring change, whose own copy phase
    /// covers them. Returns the copies made.
    pub async fn repair_keys(&self, keys: &[ContentKey]) -> Result<u64> {
        let state = self.state().await?.value;
        if state.pending.is_some() {
            return Ok(0);
        }
        let ring = ring_of(&state.nodes, state.vnodes);
        let mut holdings = Holdings::new();
        let mut recorded = Recorded::new();
        for key in keys {
            if let Some(r) = self.meta.file_record(key).await? {
                recorded.insert(key.clone(), (r.size, r.sha256));
            }
            for n in &state.nodes {
                if let Ok(m) = self.nodes.node(&n.addr).head(key).await {
                    holdings
                        .entry(key.clone())
                        .or_default()
                        .push((n.addr.clone(), m));
                }
            }
        }
        let plan = plan(&holdings, &ring, state.replicas as usize, &recorded);
        let n = plan.copies.len() as u64;
        self.run_copies(plan.copies).await?;
        Ok(n)
    }

    /// The one-time pass for files stored before checksums were recorded at
    /// write: each file of a known video with no record gets one, taken from
    /// its copies when they all agree (a file whose copies disagree is left
    /// unrecorded and reported by verify as a conflict). Returns `None` if
    /// the pass was already done, else the number of files recorded. Holds
    /// the admin lock; waits for it like a recovery does.
    pub async fn record_unrecorded(&self) -> Result<Option<u64>> {
        if self.state().await?.value.records_complete {
            return Ok(None);
        }
        self.under_lock(Take::Waiting, async |_| {
            self.record_unrecorded_locked().await
        })
        .await
        .map(Some)
    }

    async fn record_unrecorded_locked(&self) -> Result<u64> {
        let state = self.state().await?;
        if state.value.records_complete {
            return Ok(0);
        }
        let mut known: std::collections::HashMap<crate::id::VideoId, bool> = Default::default();
        let mut recorded = 0;
        for batch in whole_ring() {
            let (holdings, records) = futures::try_join!(
                self.holdings_in(&state.value.nodes, &state.value.nodes, &batch),
                self.recorded_in(&batch)
            )?;
            let mut found = Vec::new();
            for (key, copies) in holdings {
                if records.contains_key(&key) {
                    continue;
                }
                let first = &copies[0].1;
                if copies
                    .iter()
                    .any(|(_, m)| m.size != first.size || m.sha256 != first.sha256)
                {
                    continue;
                }
                let video = key.video().clone();
                let exists = match known.get(&video) {
                    Some(e) => *e,
                    None => {
                        let e = self.meta.get_video(&video).await.is_ok();
                        known.insert(video, e);
                        e
                    }
                };
                if exists {
                    found.push(crate::metadata::FileRecord {
                        key,
                        size: first.size,
                        sha256: first.sha256,
                    });
                }
            }
            recorded += found.len() as u64;
            self.meta.record_files(&found).await?;
        }
        let state = self.state().await?;
        let mut next = state.value.clone();
        next.records_complete = true;
        self.meta
            .put_cluster_state(Some(state.version), &next)
            .await?;
        Ok(recorded)
    }

    /// What `nodes` hold in `ranges`. A node outside `required` that cannot
    /// be listed (a dead node being removed) is skipped: its files are
    /// copied from the surviving replicas instead.
    pub(crate) async fn holdings_in(
        &self,
        nodes: &[NodeEntry],
        required: &[NodeEntry],
        ranges: &[HashRange],
    ) -> Result<Holdings> {
        // All nodes are listed at once: a batch waits for the slowest
        // listing, not for their sum.
        let listings = futures::future::join_all(nodes.iter().map(|n| async move {
            self.nodes
                .list_ranges(&n.addr, ranges.to_vec())
                .try_collect::<Vec<_>>()
                .await
        }))
        .await;
        let mut holdings = Holdings::new();
        for (n, listed) in nodes.iter().zip(listings) {
            let found = match listed {
                Ok(found) => found,
                Err(e) => {
                    if required.iter().any(|r| r.addr == n.addr) {
                        return Err(node_error(&n.addr, "list", e));
                    }
                    tracing::warn!(node = %n.addr, error = %e, "cannot list a departing node; using the other replicas");
                    continue;
                }
            };
            for meta in found {
                holdings
                    .entry(meta.key.clone())
                    .or_default()
                    .push((n.addr.clone(), meta));
            }
        }
        Ok(holdings)
    }

    /// The recorded size and SHA-256 of every file in `ranges`.
    pub(crate) async fn recorded_in(&self, ranges: &[HashRange]) -> Result<Recorded> {
        let mut out = Recorded::new();
        for range in ranges {
            let mut after = None;
            loop {
                let page = self.meta.file_records(*range, after.as_ref(), 1000).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for r in page {
                    out.insert(r.key, (r.size, r.sha256));
                }
            }
        }
        Ok(out)
    }

    /// Lists `nodes` and the records over `ranges` and compares them with
    /// the owners `ring` assigns.
    pub(crate) async fn scan(
        &self,
        nodes: &[NodeEntry],
        required: &[NodeEntry],
        ranges: &[HashRange],
        ring: &Ring,
        replicas: usize,
    ) -> Result<Plan> {
        let (holdings, recorded) = futures::try_join!(
            self.holdings_in(nodes, required, ranges),
            self.recorded_in(ranges)
        )?;
        Ok(plan(&holdings, ring, replicas, &recorded))
    }

    /// [`ClusterManager::scan`], after taking out the orphans (judged by
    /// their videos' records, read through `videos`: one read per distinct
    /// video id of the batch at most). The plan covers the other files, and
    /// its problems include an unchecked one for each file whose video
    /// record could not be read; its file count includes the orphans.
    pub(crate) async fn scan_judged(
        &self,
        nodes: &[NodeEntry],
        required: &[NodeEntry],
        ranges: &[HashRange],
        ring: &Ring,
        replicas: usize,
        videos: &VideoRecords,
    ) -> Result<(Plan, Vec<Orphan>)> {
        let (mut holdings, mut recorded) = futures::try_join!(
            self.holdings_in(nodes, required, ranges),
            self.recorded_in(ranges)
        )?;
        let ids: BTreeSet<&crate::id::VideoId> = holdings
            .keys()
            .chain(recorded.keys())
            .map(ContentKey::video)
            .collect();
        let records = videos.records(ids).await;
        let (orphans, unchecked) =
            split_orphans(&mut holdings, &mut recorded, &records, ring, replicas);
        let mut plan = plan(&holdings, ring, replicas, &recorded);
        plan.files += orphans.len() as u64;
        plan.problems.extend(unchecked);
        Ok((plan, orphans))
    }

    /// [`ClusterManager::scan_judged`] over many batches, several at once,
    /// folding each plan and its orphans with `fold` as they arrive.
    pub(crate) async fn scan_all<F>(
        &self,
        nodes: &[NodeEntry],
        ring: &Ring,
        replicas: usize,
        batches: Vec<Vec<HashRange>>,
        videos: &VideoRecords,
        mut fold: F,
    ) -> Result<()>
    where
        F: FnMut(Plan, Vec<Orphan>),
    {
        let mut plans = futures::stream::iter(batches)
            .map(|b| async move {
                self.scan_judged(nodes, &[], &b, ring, replicas, videos)
                    .await
            })
            .buffered(PARALLEL_BATCHES);
        while let Some(p) = plans.next().await {
            let (plan, orphans) = p?;
            fold(plan, orphans);
        }
        Ok::<(), Error>(())
    }
}
