//! Orphans: stored files, and file records, that belong to no video.
//!
//! A stored file's key is `<videoId>/<fileName>`, and its file name tells
//! which upload of that id (its generation) wrote it
//! ([`generation_of_file_name`]). A file is **live** when the metadata
//! store holds a video of that id whose generation is the file's, whatever
//! the video's state (a video being deleted purges its own files). Any
//! other stored file is an **orphan**: left by an upload job that crashed or
//! was cancelled, or written late by a job whose video was deleted or
//! uploaded again meanwhile. The file record of an orphan's key is an
//! orphan too, also when no node holds the file any more.
//!
//! `verify` reports orphans as their own kind of problem, never as missing,
//! surplus or lost copies. `repair` removes them, but only after a grace
//! period, and only those that are still orphans when re-checked then
//! against a fresh read of their video's record: a write in flight is never
//! mistaken for one.
//!
//! A video record that cannot be read (any error but "no such video")
//! decides nothing: its files are reported as unchecked, kept in the
//! placement checks like live files, and never deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;

use super::{
    ClusterManager, HeldLock, Holdings, Phase, Problem, Recorded, node_error, owners_of, ring_of,
    scan,
};
use crate::error::{Error, Result};
use crate::id::{ContentKey, NodeAddr, VideoId};
use crate::metadata::{ClusterState, MetadataStore, NodeEntry, generation_of_file_name};
use crate::ring::TokenRing;

/// How long [`ClusterManager::repair_with`] waits, by default, between
/// finding an orphan and re-checking it before removal.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// The longest grace period a repair accepts (it holds the admin lock
/// meanwhile).
pub const MAX_ORPHAN_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// Options of [`ClusterManager::repair_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairOptions {
    /// Time between finding an orphan and re-checking it before it is
    /// removed: longer than any upload job takes between creating its
    /// video record and writing its files, so a write in flight is never
    /// taken for an orphan. Zero re-checks at once (for tests). At most
    /// [`MAX_ORPHAN_GRACE`].
    pub orphan_grace: Duration,
}

impl Default for RepairOptions {
    fn default() -> Self {
        RepairOptions {
            orphan_grace: DEFAULT_ORPHAN_GRACE,
        }
    }
}

/// What [`ClusterManager::repair_with`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// File copies made (missing or bad copies rewritten).
    pub copies_made: u64,
    /// Orphans removed: their copies deleted from every node holding one,
    /// and their file records forgotten.
    pub orphans_removed: u64,
    /// Orphans found but kept, because they had become live by the end of
    /// the grace period.
    pub orphans_kept: u64,
    /// Files left alone because their video record could not be read (when
    /// scanned, or when re-checked), or because a copy could not be
    /// deleted. The web server's log names each.
    pub orphans_skipped: u64,
}

impl std::fmt::Display for RepairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} file copies made, {} orphans removed",
            self.copies_made, self.orphans_removed
        )?;
        if self.orphans_kept > 0 {
            write!(f, ", {} kept (live again)", self.orphans_kept)?;
        }
        if self.orphans_skipped > 0 {
            write!(f, ", {} files skipped (see the log)", self.orphans_skipped)?;
        }
        Ok(())
    }
}

/// Video records kept by one run of verify or repair. Enough for every
/// video of most clusters, so each is read once per run; with more, each
/// is still read at most once per scan batch.
const CACHED_VIDEOS: usize = 100_000;

/// Video records read at once.
const PARALLEL_READS: usize = 16;

/// What the metadata store says about one video id, as far as its files'
/// liveness goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VideoRecord {
    /// A record of this generation.
    Generation(u64),
    /// No record: every file of the id is an orphan.
    Absent,
    /// The record could not be read (the error, for people): nothing is
    /// decided.
    Unreadable(String),
}

/// The judgement of one stored file (or file record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It belongs to its video.
    Live,
    /// It belongs to no video (why, for people).
    Orphan(String),
    /// Unknown: its video record could not be read (why, for people).
    Unchecked(String),
}

impl VideoRecord {
    /// Reads the record of `id` now.
    pub(crate) async fn read(meta: &dyn MetadataStore, id: &VideoId) -> Self {
        match meta.get_video(id).await {
            Ok(v) => VideoRecord::Generation(v.generation),
            Err(e) if e.is_not_found() => VideoRecord::Absent,
            Err(e) => VideoRecord::Unreadable(e.to_string()),
        }
    }

    /// Whether `key` (a key of this record's id) is live.
    pub(crate) fn judge(&self, key: &ContentKey) -> Verdict {
        let generation = generation_of_file_name(key.file().as_str());
        match self {
            VideoRecord::Generation(g) if *g == generation => Verdict::Live,
            VideoRecord::Generation(g) => Verdict::Orphan(format!(
                "written for generation {generation} of video {}, whose record is generation {g}",
                key.video()
            )),
            VideoRecord::Absent => Verdict::Orphan(format!("no video {} is recorded", key.video())),
            VideoRecord::Unreadable(e) => Verdict::Unchecked(format!(
                "the record of video {} could not be read ({e}); not judged, nothing deleted",
                key.video()
            )),
        }
    }
}

/// Reads video records for one run of verify or repair, each id once while
/// the (bounded) cache holds it. A run takes minutes on a large cluster, so
/// a cached record may be stale by its end: verify may then report a file
/// of a video uploaded again meanwhile as an orphan, or miss one; repair
/// re-reads every record before it removes anything.
#[derive(Debug)]
pub(crate) struct VideoRecords {
    meta: Arc<dyn MetadataStore>,
    cache: Mutex<lru::LruCache<VideoId, VideoRecord>>,
}

impl VideoRecords {
    pub(crate) fn new(meta: Arc<dyn MetadataStore>) -> Self {
        let cap = NonZeroUsize::new(CACHED_VIDEOS).unwrap_or(NonZeroUsize::MIN);
        VideoRecords {
            meta,
            cache: Mutex::new(lru::LruCache::new(cap)),
        }
    }

    /// The records of `ids`: one read per id not cached. An unreadable
    /// record is not cached, so a later batch asks again.
    pub(crate) async fn records(&self, ids: BTreeSet<&VideoId>) -> HashMap<VideoId, VideoRecord> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                match cache.get(id) {
                    Some(r) => {
                        out.insert(id.clone(), r.clone());
                    }
                    None => missing.push(id.clone()),
                }
            }
        }
        let meta = &self.meta;
        let read: Vec<(VideoId, VideoRecord)> = futures::stream::iter(missing)
            .map(|id| async move {
                let r = VideoRecord::read(meta.as_ref(), &id).await;
                (id, r)
            })
            .buffer_unordered(PARALLEL_READS)
            .collect()
            .await;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (id, r) in read {
            if !matches!(r, VideoRecord::Unreadable(_)) {
                cache.put(id.clone(), r.clone());
            }
            out.insert(id, r);
        }
        out
    }
}

/// A stored file, or a file record, of no video, found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Orphan {
    /// The file.
    pub(crate) key: ContentKey,
    /// The nodes that held a copy when it was listed (none: only its file
    /// record is left).
    pub(crate) holders: Vec<NodeAddr>,
    /// Its size (the largest copy's), for progress.
    pub(crate) size: u64,
    /// Whether it had a file record.
    pub(crate) recorded: bool,
    /// The node the problem names: the first holder, or else the first
    /// owner.
    node: NodeAddr,
    /// Why it is one, for people.
    why: String,
}

impl Orphan {
    /// The problem `verify` reports for it.
    pub(crate) fn problem(&self) -> Problem {
        let held = if self.holders.is_empty() {
            "only its file record is left".to_string()
        } else {
            let nodes: Vec<&str> = self.holders.iter().map(NodeAddr::as_str).collect();
            format!("held by {}", nodes.join(", "))
        };
        Problem::Orphan {
            key: self.key.clone(),
            node: self.node.clone(),
            detail: format!("{}; {held}", self.why),
        }
    }
}

/// Takes the orphans out of `holdings` and `recorded` (what a scan batch
/// found on the nodes and in the file records), judging each key by its
/// video's record in `videos`. What is left is planned as usual. Returns
/// the orphans, and an [`Problem::Unchecked`] for each key whose video
/// record could not be read (such keys stay, as if live).
pub(crate) fn split_orphans(
    holdings: &mut Holdings,
    recorded: &mut Recorded,
    videos: &HashMap<VideoId, VideoRecord>,
    ring: &TokenRing,
    replicas: usize,
) -> (Vec<Orphan>, Vec<Problem>) {
    let not_read = VideoRecord::Unreadable("it was not read".into());
    let judge = |key: &ContentKey| videos.get(key.video()).unwrap_or(&not_read).judge(key);
    // Only the keys not live are cloned: most of a batch is live.
    let mut judged: Vec<(ContentKey, Verdict)> = holdings
        .keys()
        .chain(recorded.keys().filter(|k| !holdings.contains_key(*k)))
        .filter_map(|key| match judge(key) {
            Verdict::Live => None,
            verdict => Some((key.clone(), verdict)),
        })
        .collect();
    judged.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut orphans, mut unchecked) = (Vec::new(), Vec::new());
    for (key, verdict) in judged {
        let first_holder = holdings
            .get(&key)
            .and_then(|copies| copies.first())
            .map(|(n, _)| n.clone());
        let Some(node) =
            first_holder.or_else(|| owners_of(ring, &key, replicas).into_iter().next())
        else {
            continue;
        };
        match verdict {
            Verdict::Live => {}
            Verdict::Unchecked(detail) => unchecked.push(Problem::Unchecked { key, node, detail }),
            Verdict::Orphan(why) => {
                let copies = holdings.remove(&key).unwrap_or_default();
                let record = recorded.remove(&key);
                let size = copies
                    .iter()
                    .map(|(_, m)| m.size)
                    .max()
                    .or(record.map(|(size, _)| size))
                    .unwrap_or(0);
                orphans.push(Orphan {
                    key,
                    holders: copies.into_iter().map(|(n, _)| n).collect(),
                    size,
                    recorded: record.is_some(),
                    node,
                    why,
                });
            }
        }
    }
    (orphans, unchecked)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObjectMeta, Sha256Digest};

    fn ring() -> TokenRing {
        let mut r = TokenRing::new(16);
        for n in ["a:1", "b:2", "c:3"] {
            r.add_node(n, 1.0).unwrap();
        }
        r
    }

    fn key(s: &str) -> ContentKey {
        s.parse().unwrap()
    }

    fn hold(holdings: &mut Holdings, k: &ContentKey, nodes: &[&str]) {
        for n in nodes {
            holdings.entry(k.clone()).or_default().push((
                n.parse().unwrap(),
                ObjectMeta {
                    key: k.clone(),
                    size: 5,
                    sha256: Sha256Digest([1; 32]),
                },
            ));
        }
    }

    #[test]
    fn only_a_file_of_its_videos_recorded_generation_is_live() {
        let rec = VideoRecord::Generation(2);
        assert_eq!(rec.judge(&key("v/g2-manifest.mpd")), Verdict::Live);
        assert!(matches!(
            rec.judge(&key("v/manifest.mpd")),
            Verdict::Orphan(_)
        ));
        assert!(matches!(
            rec.judge(&key("v/g3-manifest.mpd")),
            Verdict::Orphan(_)
        ));
        let first = VideoRecord::Generation(1);
        assert_eq!(first.judge(&key("v/chunk-0-00001.m4s")), Verdict::Live);
        assert!(matches!(
            VideoRecord::Absent.judge(&key("v/manifest.mpd")),
            Verdict::Orphan(_)
        ));
        assert!(matches!(
            VideoRecord::Unreadable("boom".into()).judge(&key("v/manifest.mpd")),
            Verdict::Unchecked(_)
        ));
    }

    #[test]
    fn orphans_leave_the_plan_unchecked_files_stay_in_it() {
        let r = ring();
        let (live, old, nobody, record_only, unread) = (
            key("live/manifest.mpd"),
            key("again/manifest.mpd"),
            key("nobody/poster.jpg"),
            key("gone/chunk-0-00001.m4s"),
            key("broken/manifest.mpd"),
        );
        let mut holdings = Holdings::new();
        hold(&mut holdings, &live, &["a:1", "b:2"]);
        hold(&mut holdings, &old, &["b:2"]);
        hold(&mut holdings, &nobody, &["c:3", "a:1"]);
        hold(&mut holdings, &unread, &["a:1"]);
        let mut recorded: Recorded = [
            (live.clone(), (5, Sha256Digest([1; 32]))),
            (old.clone(), (5, Sha256Digest([1; 32]))),
            (record_only.clone(), (9, Sha256Digest([2; 32]))),
        ]
        .into();
        let videos: HashMap<VideoId, VideoRecord> = [
            ("live", VideoRecord::Generation(1)),
            ("again", VideoRecord::Generation(2)),
            ("nobody", VideoRecord::Absent),
            ("gone", VideoRecord::Absent),
            ("broken", VideoRecord::Unreadable("bad json".into())),
        ]
        .into_iter()
        .map(|(id, r)| (id.parse().unwrap(), r))
        .collect();
        let (orphans, unchecked) = split_orphans(&mut holdings, &mut recorded, &videos, &r, 2);
        let found: Vec<(&str, usize, bool)> = orphans
            .iter()
            .map(|o| (o.key.as_str(), o.holders.len(), o.recorded))
            .collect();
        assert_eq!(
            found,
            vec![
                ("again/manifest.mpd", 1, true),
                ("gone/chunk-0-00001.m4s", 0, true),
                ("nobody/poster.jpg", 2, false),
            ]
        );
        assert_eq!(
            orphans[1].size, 9,
            "a record-only orphan's size is the record's"
        );
        assert_eq!(
            orphans[1].node,
            owners_of(&r, &record_only, 2)[0],
            "a record-only orphan names its first owner"
        );
        assert!(
            matches!(&orphans[2].problem(), Problem::Orphan { node, .. } if node.as_str() == "c:3")
        );
        assert!(matches!(&unchecked[..], [Problem::Unchecked { key, .. }] if *key == unread));
        // What is left is planned as before: the live file, and the
        // unchecked one, which is never taken for an orphan.
        assert_eq!(holdings.keys().collect::<Vec<_>>(), vec![&unread, &live]);
        assert_eq!(recorded.keys().collect::<Vec<_>>(), vec![&live]);
    }

    #[test]
    fn a_video_not_looked_up_is_unchecked_not_an_orphan() {
        let mut holdings = Holdings::new();
        let k = key("unknown/manifest.mpd");
        hold(&mut holdings, &k, &["a:1"]);
        let (orphans, unchecked) = split_orphans(
            &mut holdings,
            &mut Recorded::new(),
            &HashMap::new(),
            &ring(),
            2,
        );
        assert!(orphans.is_empty());
        assert_eq!(unchecked.len(), 1);
        assert!(holdings.contains_key(&k));
    }
}
