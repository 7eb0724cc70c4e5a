//! [`LocalContentStore`]: files in a directory, as `<base>/<videoId>/<filename>`,
//! with an index that records what each file must contain.
//!
//! This is the course project's on-disk layout, so a storage directory written
//! by it is served as it is. Beside the videos, a hidden `.tritontube/`
//! directory holds the store's own state (hidden names are never valid
//! [`VideoId`]s, so it never shows up as a video):
//!
//! | path | what |
//! |---|---|
//! | `.tritontube/node-id` | the random identity of this directory, made on first open |
//! | `.tritontube/index.db` | the index: size, SHA-256, chunk hashes and ring hash of every file |
//! | `.tritontube/tmp/` | bodies being received; emptied at open |
//! | `.tritontube/quarantine/` | files whose bytes no longer match their index row |
//!
//! Writes are atomic: the body goes to a temporary file, is fsynced,
//! checked, and renamed into place, and its index row changes in the same
//! step (an intent log in the index repairs a crash between the two). A
//! write whose bytes or row cannot all be written (a full disk, for the
//! body or for the index) fails and is undone: the earlier file and row
//! stay as they were.
//! Reads are verified: every chunk of [`CHUNK`] bytes is hashed before it is
//! sent, and a chunk that disagrees with the index moves the file to
//! quarantine and fails the read, so bytes that differ from what was
//! written are never served. A background scrubber re-hashes every file at
//! a bounded rate and quarantines what rotted on disk without being read.
//!
//! A store may be given a capacity ([`LocalOptions::capacity_bytes`]): a put
//! that would take the bytes of its files past it is refused with
//! [`Error::Full`] before its bytes are written, and so is a put that meets
//! a full disk; either way nothing of it is kept. Puts in flight reserve
//! their room as their bodies arrive, so together they never overshoot.
//!
//! A directory without an index (written by the course project, or whose
//! index was deleted) is indexed in the background; meanwhile the store
//! serves reads and writes, and [`LocalContentStore::stats`] reports the
//! progress. Listings wait for the index: a partial listing would make a
//! migration planner believe files are missing.

mod capacity;
pub(crate) mod index;
mod scrub;
#[cfg(test)]
mod tests;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{
    ByteStream, ContentStore, GetOptions, GetResult, MetaStream, ObjectMeta, PutOptions,
    Sha256Digest,
};
use crate::error::{Error, Result};
use crate::id::{ContentKey, VideoId};
use crate::ring::HashRange;
pub use capacity::ByteSize;
use capacity::{Capacity, Reservation};
pub use index::CHUNK;
use index::{Index, Intent, Row};
pub use scrub::ScrubStats;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Rows fetched from the index per listing step.
const LIST_PAGE: usize = 500;

/// Number of key lock stripes.
const STRIPES: usize = 64;

/// Options of [`LocalContentStore::open`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Re-hash stored files in the background at this many bytes per second
    /// (`None`: no scrubbing).
    pub scrub_bytes_per_sec: Option<u64>,
    /// Check every chunk read against its recorded hash (on by default;
    /// turning it off exists only to measure what the check costs).
    pub verify_reads: bool,
    /// The most bytes of files the store may hold (`None`: no limit but
    /// the disk). A put that would take it past this is refused with
    /// [`Error::Full`] and stores nothing; a put replacing a file counts
    /// only what it adds to that file's size.
    pub capacity_bytes: Option<u64>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            scrub_bytes_per_sec: None,
            verify_reads: true,
            capacity_bytes: None,
        }
    }
}

/// What a store holds and how its upkeep is going, from counters (constant
/// time, no disk walk).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Files indexed.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// The most bytes of files the store may hold (`None`: no limit).
    pub capacity: Option<u64>,
    /// Bytes reserved by puts in flight under the capacity (0 without one).
    pub reserved: u64,
    /// Files moved to quarantine because their bytes no longer matched.
    pub quarantined: u64,
    /// `Some(percent)` while the index is being built from the directory.
    pub indexing: Option<f32>,
    /// The scrubber's progress.
    pub scrub: ScrubStats,
}

/// A [`ContentStore`] on a local directory (`<base>/<videoId>/<filename>`,
/// the course project's layout) with an index of what each file must
/// contain: writes are atomic with their index row, reads are verified
/// chunk by chunk, rot is quarantined, and a directory without an index is
/// indexed in the background.
#[derive(Debug, Clone)]
pub struct LocalContentStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    base: PathBuf,
    state_dir: PathBuf,
    index: Index,
    node_id: String,
    files: AtomicU64,
    bytes: AtomicU64,
    quarantined: AtomicU64,
    indexed: AtomicBool,
    index_done: AtomicU64,
    index_total: AtomicU64,
    stripes: Vec<Mutex<()>>,
    scrub: scrub::ScrubCounters,
    stop: AtomicBool,
    verify_reads: bool,
    capacity: Capacity,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

/// Makes a fresh random-enough identity: SHA-256 of the time, the process,
/// the path and a counter. Unique per directory, which is all it must be.
fn new_node_id(base: &Path) -> String {
    let mut h = Sha256::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(base.as_os_str().as_encoded_bytes());
    h.update(TEMP_SEQ.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Reads the directory's node id, creating it durably on first open.
fn load_node_id(state_dir: &Path, base: &Path) -> Result<String> {
    let path = state_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&path, e)),
    }
    let id = new_node_id(base);
    let tmp = state_dir.join("node-id.tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        std::io::Write::write_all(&mut f, format!("{id}\n").as_bytes())
            .map_err(|e| io_err(&tmp, e))?;
        f.sync_all().map_err(|e| io_err(&tmp, e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
    Ok(id)
}

/// True if `base` holds anything besides the store's own state directory.
fn has_videos(base: &Path) -> Result<bool> {
    let rd = std::fs::read_dir(base).map_err(|e| io_err(base, e))?;
    Ok(rd
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() != ".tritontube"))
}

impl LocalContentStore {
    /// A store rooted at `base`, created if missing, without scrubbing.
    /// Fails with a clear error if `base` cannot be created or is not a
    /// directory, or its index cannot be opened.
    pub fn new(base: impl Into<PathBuf>) -> Result<Self> {
        Self::open(base, LocalOptions::default())
    }

    /// A store rooted at `base` with `options`. Finishes whatever a crash
    /// interrupted, empties the temp directory, and starts indexing the
    /// directory in the background if it has no complete index.
    pub fn open(base: impl Into<PathBuf>, options: LocalOptions) -> Result<Self> {
        let base = base.into();
        std::fs::create_dir_all(&base).map_err(|e| io_err(&base, e))?;
        if !base.is_dir() {
            return Err(io_err(
                &base,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let state_dir = base.join(".tritontube");
        for d in ["tmp", "quarantine"] {
            let p = state_dir.join(d);
            std::fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        }
        let node_id = load_node_id(&state_dir, &base)?;
        let (index, _existed) = Index::open(&state_dir.join("index.db"))?;
        let inner = Arc::new(Inner {
            base,
            state_dir,
            index,
            node_id,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            indexed: AtomicBool::new(false),
            index_done: AtomicU64::new(0),
            index_total: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            scrub: Default::default(),
            stop: AtomicBool::new(false),
            verify_reads: options.verify_reads,
            capacity: Capacity::new(options.capacity_bytes),
        });
        inner.recover()?;
        let complete = inner.index.meta("complete")?.as_deref() == Some("1");
        let (files, bytes) = inner.index.totals()?;
        inner.files.store(files, Ordering::SeqCst);
        inner.bytes.store(bytes, Ordering::SeqCst);
        inner
            .quarantined
            .store(inner.index.quarantined()?, Ordering::SeqCst);
        if complete {
            inner.indexed.store(true, Ordering::SeqCst);
        } else if !has_videos(&inner.base)? {
            // Nothing to index: a new directory is complete at once.
            inner.index.set_meta("complete", "1")?;
            inner.indexed.store(true, Ordering::SeqCst);
        } else {
            scrub::spawn_rebuild(Arc::downgrade(&inner));
        }
        if let Some(rate) = options.scrub_bytes_per_sec {
            scrub::spawn_scrubber(Arc::downgrade(&inner), rate);
        }
        Ok(LocalContentStore { inner })
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.inner.base
    }

    /// This directory's identity: random, made on first open and kept in the
    /// directory, so a node keeps it across restarts and address changes
    /// (and a copied directory carries it along, which is how a copy is
    /// recognised).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Counters of what is stored; constant time.
    pub fn stats(&self) -> StoreStats {
        let i = &self.inner;
        let indexing = (!i.indexed.load(Ordering::SeqCst)).then(|| {
            let total = i.index_total.load(Ordering::Relaxed).max(1);
            (i.index_done.load(Ordering::Relaxed) as f32 * 100.0 / total as f32).min(99.9)
        });
        StoreStats {
            files: i.files.load(Ordering::Relaxed),
            bytes: i.bytes.load(Ordering::Relaxed),
            capacity: i.capacity.limit(),
            reserved: i.capacity.reserved(),
            quarantined: i.quarantined.load(Ordering::Relaxed),
            indexing,
            scrub: i.scrub.snapshot(),
        }
    }

    /// The most bytes of files this store may hold (`None`: no limit).
    pub fn capacity(&self) -> Option<u64> {
        self.inner.capacity.limit()
    }

    /// True once every file in the directory is indexed.
    pub fn is_indexed(&self) -> bool {
        self.inner.indexed.load(Ordering::SeqCst)
    }

    /// Counts files and bytes (from the index's counters).
    pub async fn usage(&self) -> Result<(u64, u64)> {
        let s = self.stats();
        Ok((s.files, s.bytes))
    }

    /// One page of the files whose ring hash lies in `range`, in (hash, key)
    /// order, strictly after the cursor `after` (the last key of the
    /// previous page). An empty page is the end.
    pub async fn list_range(
        &self,
        range: HashRange,
        after: Option<ContentKey>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        self.require_index()?;
        let inner = self.inner.clone();
        blocking(move || {
            let rows = inner.index.range(range, after.as_ref(), limit.max(1))?;
            Ok(rows.into_iter().map(|r| r.meta()).collect())
        })
        .await
    }

    /// Re-hashes every file once, as fast as the disk allows, quarantining
    /// those that no longer match. Returns what this pass found.
    pub async fn scrub_now(&self) -> Result<ScrubStats> {
        let inner = self.inner.clone();
        blocking(move || scrub::scrub_pass(&inner, None)).await
    }

    fn require_index(&self) -> Result<()> {
        match self.stats().indexing {
            None => Ok(()),
            Some(p) => Err(Error::Unavailable {
                what: format!("listing of {}", self.inner.base.display()),
                reason: format!(
                    "indexing {p:.0}%: the listing is available once the index is complete"
                ),
            }),
        }
    }
}

impl Row {
    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            sha256: self.sha256,
        }
    }
}

/// Hashes of a body: whole file and each chunk.
#[derive(Default)]
pub(crate) struct BodyHasher {
    whole: Sha256,
    chunk: Sha256,
    in_chunk: u64,
    size: u64,
    chunks: Vec<u8>,
}

impl BodyHasher {
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let take = ((CHUNK - self.in_chunk) as usize).min(data.len());
            self.chunk.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            if self.in_chunk == CHUNK {
                let done = std::mem::take(&mut self.chunk).finalize();
                self.chunks.extend_from_slice(&done);
                self.in_chunk = 0;
            }
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The row these bytes make for `key`.
    pub(crate) fn finish(mut self, key: ContentKey) -> Row {
        if self.in_chunk > 0 {
            let done = std::mem::take(&mut self.chunk).finalize();
            self.chunks.extend_from_slice(&done);
        }
        let sha256 = Sha256Digest(self.whole.finalize().into());
        let chunks = if self.size <= CHUNK {
            Vec::new()
        } else {
            self.chunks
        };
        Row {
            key,
            size: self.size,
            sha256,
            chunks,
        }
    }
}

/// Hashes a whole file on disk (blocking).
pub(crate) fn hash_file(key: &ContentKey, path: &Path) -> Result<Row> {
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found(key.as_str()),
        _ => io_err(path, e),
    })?;
    let mut h = BodyHasher::default();
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish(key.clone()))
}

fn file_identity(path: &Path) -> Option<(u64, std::time::SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Gives the file at `path`, if there is one, the second name `kept`, and
/// returns it (`None`: no file to keep).
fn keep_replaced(path: &Path, kept: &Path) -> Result<Option<PathBuf>> {
    use std::io::ErrorKind::{NotADirectory, NotFound};
    match std::fs::hard_link(path, kept) {
        Ok(()) => Ok(Some(kept.to_path_buf())),
        // No file (and maybe no directory for it yet).
        Err(e) if matches!(e.kind(), NotFound | NotADirectory) => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

impl Inner {
    fn stripe(&self, key: &ContentKey) -> std::sync::MutexGuard<'_, ()> {
        let h = crate::ring::key_hash(key.as_str()) as usize % STRIPES;
        self.stripes[h].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `key` lives. Validated keys cannot escape the base directory;
    /// this checks again anyway, because a storage node must never touch
    /// anything outside it whatever a client sends.
    fn path_of(&self, key: &ContentKey) -> Result<PathBuf> {
        let rel = Path::new(key.video().as_str()).join(key.file().as_str());
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::invalid(
                "content key",
                key.as_str(),
                "is not a plain relative path",
            ));
        }
        Ok(self.base.join(rel))
    }

    fn tmp_dir(&self) -> PathBuf {
        self.state_dir.join("tmp")
    }

    /// Finishes or undoes changes a crash interrupted, then empties the
    /// temp directory (bodies of puts that never reached their rename).
    fn recover(&self) -> Result<()> {
        for (key, intent) in self.index.intents()? {
            let Ok(key) = key.parse::<ContentKey>() else {
                continue;
            };
            let path = self.path_of(&key)?;
            match intent {
                Intent::Put { tmp, row } => {
                    let tmp = self.tmp_dir().join(tmp);
                    if tmp.exists() {
                        // The rename never happened: the old file (if any)
                        // and its row are still in place.
                        let _ = std::fs::remove_file(&tmp);
                        self.index.abandon(&key)?;
                    } else if hash_file(&key, &path)
                        .is_ok_and(|found| (found.size, found.sha256) == (row.size, row.sha256))
                    {
                        // The body was renamed into place; its row was not
                        // written. (Judged by the bytes, not the size: an
                        // undone put leaves the old file, maybe as large.)
                        self.index.commit(&key, Some(&row))?;
                    } else {
                        self.index.abandon(&key)?;
                    }
                }
                Intent::Delete => {
                    let _ = std::fs::remove_file(&path);
                    self.index.commit(&key, None)?;
                }
            }
            tracing::info!(key = %key, "finished a change interrupted by a crash");
        }
        let tmp = self.tmp_dir();
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            for e in rd.filter_map(|e| e.ok()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// The row of `key`; while the directory is still being indexed, a file
    /// present on disk but not yet indexed is indexed now.
    fn row(&self, key: &ContentKey) -> Result<Row> {
        if let Some(r) = self.index.get(key)? {
            return Ok(r);
        }
        if self.indexed.load(Ordering::SeqCst) {
            return Err(Error::not_found(key.as_str()));
        }
        let path = self.path_of(key)?;
        self.index_found(key, &path)?
            .ok_or_else(|| Error::not_found(key.as_str()))
    }

    /// Hashes a file found on disk and indexes it if nothing changed it
    /// meanwhile and no put indexed it first. Returns its row.
    fn index_found(&self, key: &ContentKey, path: &Path) -> Result<Option<Row>> {
        let Some(before) = file_identity(path) else {
            return Ok(None);
        };
        let row = match hash_file(key, path) {
            Ok(r) => r,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let _g = self.stripe(key);
        if file_identity(path) != Some(before) {
            // Changed while hashing; whoever changed it indexed it.
            return self.index.get(key);
        }
        if self.index.insert_found(&row)? {
            self.files.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(row.size, Ordering::Relaxed);
            Ok(Some(row))
        } else {
            self.index.get(key)
        }
    }

    /// Indexes a batch of files found on disk by the rebuild, in one
    /// transaction: each is hashed first (no lock held), then, with every
    /// key lock held for the moment of the insert, kept only if nothing
    /// changed it meanwhile and no put indexed it first.
    pub(crate) fn index_found_batch(&self, found: &[(ContentKey, PathBuf)]) -> Result<()> {
        type Identity = (u64, std::time::SystemTime, u64);
        let mut hashed: Vec<(Row, PathBuf, Identity)> = Vec::with_capacity(found.len());
        for (key, path) in found {
            let Some(before) = file_identity(path) else {
                continue;
            };
            match hash_file(key, path) {
                Ok(r) => hashed.push((r, path.clone(), before)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Every stripe, in order (no deadlock with single-key writers).
        let _guards: Vec<_> = self
            .stripes
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let rows: Vec<Row> = hashed
            .into_iter()
            .filter(|(_, path, before)| file_identity(path).as_ref() == Some(before))
            .map(|(r, ..)| r)
            .collect();
        let (n, bytes) = self.index.insert_found_batch(&rows)?;
        self.files.fetch_add(n, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Renames `tmp` onto `key` and records `row`, as one step for every
    /// other writer of the key. The put's `room` is checked again against
    /// the file it really replaces, then turned into stored bytes.
    ///
    /// Either the new body is in place with its row, or, on any failure
    /// (a full disk, for the body's rename or for the index's own write),
    /// the earlier file and row are: the file being replaced keeps a second
    /// name in the temp directory until the new row is committed, so that
    /// an index that cannot record the new body gets the old one back.
    fn install(&self, tmp_name: &str, row: Row, room: &mut Reservation) -> Result<()> {
        let key = row.key.clone();
        let path = self.path_of(&key)?;
        let tmp = self.tmp_dir().join(tmp_name);
        let full = |e: Error| self.disk_full_or(&key, row.size, e);
        let _g = self.stripe(&key);
        if self.capacity.limit().is_some() {
            let replaced = self.index.get(&key)?.map(|r| r.size);
            room.cover_replacing(row.size, replaced)?;
        }
        if let Err(e) = self.index.begin(
            &key,
            &Intent::Put {
                tmp: tmp_name.to_string(),
                row: row.clone(),
            },
        ) {
            let _ = std::fs::remove_file(&tmp);
            return Err(full(e));
        }
        let kept = self.tmp_dir().join(format!("{tmp_name}.replaced"));
        let kept = match keep_replaced(&path, &kept) {
            Ok(kept) => kept,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.forget_intent(&key);
                return Err(full(e));
            }
        };
        let moved = path
            .parent()
            .map(|d| std::fs::create_dir_all(d).map_err(|e| io_err(d, e)))
            .unwrap_or(Ok(()))
            .and_then(|_| std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e)));
        if let Err(e) = moved {
            let _ = std::fs::remove_file(&tmp);
            if let Some(k) = &kept {
                let _ = std::fs::remove_file(k);
            }
            self.forget_intent(&key);
            return Err(full(e));
        }
        match self.index.commit(&key, Some(&row)) {
            Ok(old) => {
                if let Some(k) = &kept {
                    let _ = std::fs::remove_file(k);
                }
                if old.is_none() {
                    self.files.fetch_add(1, Ordering::Relaxed);
                }
                room.settle(old.unwrap_or(0), row.size);
                Ok(())
            }
            Err(e) => {
                // The new body is in place but its row is not: put back
                // the file it replaced (or none), as the row still says.
                let restored = match &kept {
                    Some(k) => std::fs::rename(k, &path),
                    None => std::fs::remove_file(&path).map(|_| {
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::remove_dir(dir);
                        }
                    }),
                };
                match restored {
                    Ok(()) => self.forget_intent(&key),
                    // The intent stays; the next start settles it from
                    // what the file holds, and a read meanwhile finds the
                    // body unlike its row and quarantines it.
                    Err(re) => tracing::error!(
                        key = %key, error = %re,
                        "a put whose row could not be written could not be undone"
                    ),
                }
                Err(full(e))
            }
        }
    }

    /// Drops the intent of a change that did not happen. If the index
    /// cannot write even that, the intent stays, and the next start
    /// settles it by what the file holds.
    fn forget_intent(&self, key: &ContentKey) {
        if let Err(e) = self.index.abandon(key) {
            tracing::warn!(key = %key, error = %e, "intent left for the next start to settle");
        }
    }

    /// `e`, met while storing `needed` bytes under `key`, as the caller
    /// should see it: a full disk (or quota) is [`Error::Full`], like a put
    /// past the capacity; anything else stays what it was.
    fn disk_full_or(&self, key: &ContentKey, needed: u64, e: Error) -> Error {
        let full = match &e {
            Error::Io { path, source } if capacity::is_disk_full(source) => {
                tracing::warn!(key = %key, %path, error = %source, "disk full");
                true
            }
            e if index::is_disk_full(e) => {
                tracing::warn!(key = %key, error = %e, "disk full (index)");
                true
            }
            _ => false,
        };
        if !full {
            return e;
        }
        Error::Full {
            node: self.base.display().to_string(),
            key: key.to_string(),
            needed,
            capacity: None,
            free: None,
        }
    }

    fn remove(&self, key: &ContentKey) -> Result<()> {
        let path = self.path_of(key)?;
        let _g = self.stripe(key);
        let indexed = self.index.get(key)?.is_some();
        if !indexed && (self.indexed.load(Ordering::SeqCst) || !path.exists()) {
            return Err(Error::not_found(key.as_str()));
        }
        let full = |e: Error| self.disk_full_or(key, 0, e);
        self.index.begin(key, &Intent::Delete).map_err(full)?;
        // The file moves aside until its row is gone, so that an index
        // that cannot write (a full disk) gets it back: the file and its
        // row stay or go together.
        let aside = self.tmp_dir().join(format!(
            "{}-{}-{}.deleted",
            key.file(),
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let aside = match std::fs::rename(&path, &aside) {
            Ok(()) => Some(aside),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.forget_intent(key);
                return Err(full(io_err(&path, e)));
            }
        };
        match self.index.commit(key, None) {
            Ok(Some(size)) => {
                self.files.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(size, Ordering::Relaxed);
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(aside) = &aside {
                    match std::fs::rename(aside, &path) {
                        Ok(()) => self.forget_intent(key),
                        // The intent stays: the next start finishes the
                        // delete.
                        Err(re) => tracing::error!(
                            key = %key, error = %re,
                            "a delete whose row could not be removed could not be undone"
                        ),
                    }
                } else {
                    self.forget_intent(key);
                }
                return Err(full(e));
            }
        }
        if let Some(aside) = &aside {
            let _ = std::fs::remove_file(aside);
        }
        if let Some(dir) = path.parent() {
            // Succeeds only when the video has no files left.
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Moves the file of `key` to quarantine and forgets its row, if the row
    /// still has `sha256` and the file is still the one found bad (`seen`:
    /// its inode; `None`: no file was found). A put that replaced the file
    /// meanwhile wins, and so does one undone meanwhile, which put back
    /// the file its row describes.
    pub(crate) fn quarantine(
        &self,
        key: &ContentKey,
        sha256: &Sha256Digest,
        seen: Option<u64>,
        reason: &str,
    ) {
        let Ok(path) = self.path_of(key) else { return };
        let _g = self.stripe(key);
        match self.index.get(key) {
            Ok(Some(r)) if r.sha256 == *sha256 => {}
            _ => return,
        }
        if file_identity(&path).map(|(.., ino)| ino) != seen {
            return;
        }
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let dir = self.state_dir.join("quarantine").join(key.video().as_str());
        let to = dir.join(format!("{}.{stamp}", key.file()));
        let moved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::rename(&path, &to));
        let moved_to = match moved {
            Ok(()) => to.display().to_string(),
            Err(e) => format!("(not moved: {e})"),
        };
        match self.index.quarantine(key, sha256, &moved_to, reason) {
            Ok(Some(size)) => {
                self.files.fetch_sub(1, Ordering::Relaxed);
                self.bytes.fetch_sub(size, Ordering::Relaxed);
                self.quarantined.fetch_add(1, Ordering::Relaxed);
                tracing::error!(key = %key, reason, moved_to, "bad copy quarantined");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(key = %key, error = %e, "could not record a quarantined file")
            }
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend("local store", "blocking task failed", e))?
}

/// The temp file a put writes its body to. Each chunk is written on the
/// blocking pool while the next one arrives, and that write's result is
/// taken before the file is used again, so a failed write (a full disk
/// above all) fails the put and is never lost. (`tokio::fs::File` keeps the
/// result of its last write for the next write or flush, and its
/// `sync_all` drops it: a body whose last write failed looked stored.)
struct BodyFile {
    file: Arc<std::fs::File>,
    in_flight: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn join_err(e: tokio::task::JoinError) -> std::io::Error {
    std::io::Error::other(format!("write task failed: {e}"))
}

impl BodyFile {
    async fn create(path: PathBuf) -> std::io::Result<Self> {
        let file = tokio::task::spawn_blocking(move || std::fs::File::create(path))
            .await
            .map_err(join_err)??;
        Ok(BodyFile {
            file: Arc::new(file),
            in_flight: None,
        })
    }

    /// Waits for the write in flight, failing with its error, then starts
    /// writing `chunk` after it.
    async fn write(&mut self, chunk: Bytes) -> std::io::Result<()> {
        self.settle().await?;
        let file = self.file.clone();
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            std::io::Write::write_all(&mut &*file, &chunk)
        }));
        Ok(())
    }

    async fn settle(&mut self) -> std::io::Result<()> {
        match self.in_flight.take() {
            Some(write) => write.await.map_err(join_err)?,
            None => Ok(()),
        }
    }

    /// Waits for the last write, makes the body durable, and checks that
    /// the file holds the `size` bytes that were written to it.
    async fn finish(mut self, size: u64) -> std::io::Result<()> {
        self.settle().await?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            file.sync_all()?;
            let len = file.metadata()?.len();
            if len != size {
                return Err(std::io::Error::other(format!(
                    "holds {len} bytes after {size} were written to it"
                )));
            }
            Ok(())
        })
        .await
        .map_err(join_err)?
    }
}

/// Removes a body that never reached its rename, however the put is left
/// (error, checksum mismatch, or the caller dropping the future mid-stream).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn check_expected(key: &ContentKey, row: &Row, opts: &PutOptions) -> Result<()> {
    if let Some(expected) = opts.expected_size
        && expected != row.size
    {
        return Err(Error::invalid(
            "upload",
            key.as_str(),
            format!("body has {} bytes, expected {expected}", row.size),
        ));
    }
    if let Some(expected) = opts.expected_sha256
        && expected != row.sha256
    {
        return Err(Error::ChecksumMismatch {
            key: key.to_string(),
            expected: expected.to_hex(),
            actual: row.sha256.to_hex(),
        });
    }
    Ok(())
}

/// State of a verified read: the open file, the next chunk to read, and
/// what part of each chunk the caller asked for.
struct Reader {
    inner: Arc<Inner>,
    row: Row,
    file: std::fs::File,
    next_chunk: u64,
    range: std::ops::Range<u64>,
}

impl Reader {
    /// The inode of the file being read.
    fn inode(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().ok().map(|m| m.ino())
    }

    /// Reads, verifies and trims the next chunk (blocking). `None` at the end.
    fn next(&mut self) -> Option<Result<Bytes>> {
        let start = self.next_chunk * CHUNK;
        if start >= self.range.end {
            return None;
        }
        let end = (start + CHUNK).min(self.row.size);
        let mut buf = vec![0u8; (end - start) as usize];
        if let Err(e) = self
            .file
            .seek(SeekFrom::Start(start))
            .and_then(|_| self.file.read_exact(&mut buf))
        {
            let detail = format!("chunk at byte {start} unreadable: {e}");
            self.inner
                .quarantine(&self.row.key, &self.row.sha256, self.inode(), &detail);
            return Some(Err(Error::BadCopy {
                key: self.row.key.to_string(),
                detail,
            }));
        }
        let got = if self.inner.verify_reads {
            Sha256Digest(Sha256::digest(&buf).into())
        } else {
            self.row
                .chunk_hash(self.next_chunk)
                .unwrap_or(self.row.sha256)
        };
        if Some(got) != self.row.chunk_hash(self.next_chunk) {
            let detail = format!("chunk at byte {start} hashes to {got}, not what was written");
            self.inner
                .quarantine(&self.row.key, &self.row.sha256, self.inode(), &detail);
            return Some(Err(Error::BadCopy {
                key: self.row.key.to_string(),
                detail,
            }));
        }
        self.next_chunk += 1;
        let from = self.range.start.max(start) - start;
        let to = self.range.end.min(end) - start;
        Some(Ok(Bytes::from(buf).slice(from as usize..to as usize)))
    }
}

#[async_trait]
impl ContentStore for LocalContentStore {
    async fn put(
        &self,
        key: &ContentKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let inner = &self.inner;
        inner.path_of(key)?;
        let replaced = match inner.capacity.limit() {
            Some(_) => {
                let (i, k) = (inner.clone(), key.clone());
                blocking(move || Ok(i.index.get(&k)?.map_or(0, |r| r.size))).await?
            }
            None => 0,
        };
        // Room is reserved before bytes are written: all of it now when the
        // size is announced, otherwise chunk by chunk below.
        let mut room = Reservation::new(inner.clone(), key.clone(), replaced);
        if let Some(size) = opts.expected_size {
            room.cover(size)?;
        }
        let tmp_name = format!(
            "{}-{}-{}",
            key.file(),
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let tmp = inner.tmp_dir().join(&tmp_name);
        let mut guard = TempGuard(Some(tmp.clone()));
        let full =
            |needed: u64, e: std::io::Error| inner.disk_full_or(key, needed, io_err(&tmp, e));
        let mut file = BodyFile::create(tmp.clone())
            .await
            .map_err(|e| full(opts.expected_size.unwrap_or(0), e))?;
        let mut hasher = BodyHasher::default();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            if let Some(limit) = opts.expected_size
                && hasher.size() > limit
            {
                return Err(Error::invalid(
                    "upload",
                    key.as_str(),
                    format!("body is longer than the expected {limit} bytes"),
                ));
            }
            room.cover(hasher.size())?;
            file.write(chunk)
                .await
                .map_err(|e| full(hasher.size(), e))?;
        }
        let row = hasher.finish(key.clone());
        check_expected(key, &row, &opts)?;
        // Every write's result, then the fsync's (a disk that allocates
        // late reports it full only here), then the file's length.
        file.finish(row.size).await.map_err(|e| full(row.size, e))?;
        let meta = row.meta();
        let inner2 = inner.clone();
        // The install runs to its end even if this future is dropped; the
        // guard moves along so the temp file is removed only if it fails.
        let guard_path = guard.0.take();
        blocking(move || {
            let mut g = TempGuard(guard_path);
            inner2.install(&tmp_name, row, &mut room)?;
            g.0 = None;
            Ok(())
        })
        .await?;
        Ok(meta)
    }

    async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult> {
        let inner = self.inner.clone();
        let k = key.clone();
        let (row, file) = blocking(move || {
            let path = inner.path_of(&k)?;
            // The row and the file together: a put holds the key's lock
            // from its rename until its row is written (or it is undone).
            let found = {
                let _g = inner.stripe(&k);
                inner
                    .index
                    .get(&k)?
                    .map(|row| (row, std::fs::File::open(&path)))
            };
            let (row, opened) = match found {
                Some(found) => found,
                // Not indexed (yet, while the directory is being indexed).
                None => (inner.row(&k)?, std::fs::File::open(&path)),
            };
            let file = match opened {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    inner.quarantine(&k, &row.sha256, None, "file missing from disk");
                    return Err(Error::BadCopy {
                        key: k.to_string(),
                        detail: "indexed but missing from disk".into(),
                    });
                }
                Err(e) => return Err(io_err(&path, e)),
            };
            Ok((row, file))
        })
        .await?;
        let meta = row.meta();
        if let Some(expected) = opts.expected_sha256
            && expected != meta.sha256
        {
            return Err(Error::BadCopy {
                key: key.to_string(),
                detail: format!("holds SHA-256 {}, the record says {expected}", meta.sha256),
            });
        }
        let range = match opts.range {
            Some(r) => r.start.min(meta.size)..r.end.min(meta.size).max(r.start.min(meta.size)),
            None => 0..meta.size,
        };
        let reader = Reader {
            inner: self.inner.clone(),
            next_chunk: range.start / CHUNK,
            row,
            file,
            range: range.clone(),
        };
        // Chunks are read and verified on the blocking pool, one at a time,
        // on demand: the reader moves into the blocking task and back.
        let stream = futures::stream::unfold(Some(reader), |state| async move {
            let mut reader = state?;
            let joined = tokio::task::spawn_blocking(move || {
                let item = reader.next();
                (reader, item)
            })
            .await;
            match joined {
                Ok((_, None)) => None,
                Ok((reader, Some(Ok(b)))) => Some((Ok(b), Some(reader))),
                Ok((_, Some(Err(e)))) => Some((Err(e), None)),
                Err(e) => Some((
                    Err(Error::backend("local store", "read task failed", e)),
                    None,
                )),
            }
        });
        Ok(GetResult {
            meta,
            range,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &ContentKey) -> Result<ObjectMeta> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.row(&key).map(|r| r.meta())).await
    }

    async fn delete(&self, key: &ContentKey) -> Result<()> {
        let inner = self.inner.clone();
        let key = key.clone();
        blocking(move || inner.remove(&key)).await
    }

    fn list(&self, video: Option<&VideoId>) -> MetaStream<'_> {
        if let Err(e) = self.require_index() {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        let inner = self.inner.clone();
        let video = video.cloned();
        // One index page at a time: memory stays bounded whatever the count.
        let pages = futures::stream::unfold(Some(None::<ContentKey>), move |cursor| {
            let inner = inner.clone();
            let video = video.clone();
            async move {
                let after = cursor?;
                let page = blocking(move || match &video {
                    Some(v) => inner.index.video(v, after.as_ref(), LIST_PAGE),
                    None => inner.index.range(HashRange::ALL, after.as_ref(), LIST_PAGE),
                })
                .await;
                match page {
                    Ok(rows) if rows.is_empty() => None,
                    Ok(rows) => {
                        let next = rows.last().map(|r| r.key.clone());
                        let metas: Vec<Result<ObjectMeta>> =
                            rows.iter().map(|r| Ok(r.meta())).collect();
                        Some((futures::stream::iter(metas), Some(next)))
                    }
                    Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
                }
            }
        });
        Box::pin(pages.flatten())
    }
}
