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
use crate::layout::Ring;
use crate::metadata::{ClusterState, MetadataStore, NodeEntry, generation_of_file_name};

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
    ring: &Ring,
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

mod remove;

#[cfg(test)]
mod tests;
