//! Background upkeep of a [`super::LocalContentStore`]: building the index
//! of a directory that has none, and scrubbing (re-hashing every file at a
//! bounded rate, so bytes that rot on disk are found even if nobody reads
//! them).
//!
//! Both run on plain threads holding only a weak reference to the store:
//! when the store is dropped they stop at their next step.

use std::io::Read;
use std::path::Path;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Inner;
use super::index::CHUNK;
use crate::error::Result;
use crate::id::{ContentKey, FileName, VideoId};
use crate::store::Sha256Digest;

/// What the scrubber has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScrubStats {
    /// Files re-hashed.
    pub files: u64,
    /// Bytes re-hashed.
    pub bytes: u64,
    /// Files found not to match their index row (and quarantined).
    pub bad: u64,
    /// Full passes over every file completed.
    pub cycles: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ScrubCounters {
    files: AtomicU64,
    bytes: AtomicU64,
    bad: AtomicU64,
    cycles: AtomicU64,
}

impl ScrubCounters {
    pub(crate) fn snapshot(&self) -> ScrubStats {
        ScrubStats {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            bad: self.bad.load(Ordering::Relaxed),
            cycles: self.cycles.load(Ordering::Relaxed),
        }
    }
}

/// Keeps a loop at `rate` bytes per second on average.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Throttle {
    fn account(&mut self, n: u64) {
        self.bytes += n;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}

/// Re-hashes one file; `Err((reason, inode))` if it does not match (the
/// inode of the file found bad; `None` if there was none).
fn check_file(
    path: &Path,
    size: u64,
    sha: &Sha256Digest,
    throttle: &mut Throttle,
) -> Result<(), (String, Option<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let ino = std::fs::metadata(path).ok().map(|m| m.ino());
            return Err((format!("cannot open: {e}"), ino));
        }
    };
    let ino = f.metadata().ok().map(|m| m.ino());
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK as usize];
    let mut seen = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                seen += n as u64;
                throttle.account(n as u64);
            }
            Err(e) => return Err((format!("read failed at byte {seen}: {e}"), ino)),
        }
    }
    let got = Sha256Digest(h.finalize().into());
    if seen != size {
        Err((format!("{seen} bytes on disk, {size} written"), ino))
    } else if got != *sha {
        Err((format!("hashes to {got}, {sha} written"), ino))
    } else {
        Ok(())
    }
}

/// One pass over every indexed file at `rate` bytes per second (`None`:
/// unthrottled). Stops early if the store is being dropped.
pub(crate) fn scrub_pass(inner: &Inner, rate: Option<u64>) -> Result<ScrubStats> {
    let mut pass = ScrubStats::default();
    let mut throttle = Throttle {
        rate,
        started: Instant::now(),
        bytes: 0,
    };
    let mut after = String::new();
    loop {
        let rows = inner.index.by_key(&after, 200)?;
        let Some(last) = rows.last() else { break };
        after = last.key.as_str().to_string();
        for row in rows {
            if inner.stop.load(Ordering::SeqCst) {
                return Ok(pass);
            }
            let path = inner.path_of(&row.key)?;
            let bad = check_file(&path, row.size, &row.sha256, &mut throttle);
            pass.files += 1;
            pass.bytes += row.size;
            inner.scrub.files.fetch_add(1, Ordering::Relaxed);
            inner.scrub.bytes.fetch_add(row.size, Ordering::Relaxed);
            if let Err((reason, ino)) = bad {
                // A put may have replaced the file since the row was read;
                // quarantine checks the row and the file are still the
                // ones found bad.
                pass.bad += 1;
                inner.scrub.bad.fetch_add(1, Ordering::Relaxed);
                inner.quarantine(&row.key, &row.sha256, ino, &format!("scrub: {reason}"));
            }
        }
    }
    pass.cycles = 1;
    inner.scrub.cycles.fetch_add(1, Ordering::Relaxed);
    Ok(pass)
}

/// Scrubs forever at `rate` bytes per second, a pass after another.
pub(crate) fn spawn_scrubber(store: Weak<Inner>, rate: u64) {
    let spawned = std::thread::Builder::new()
        .name("scrubber".into())
        .spawn(move || {
            loop {
                let Some(inner) = store.upgrade() else { return };
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                if !inner.indexed.load(Ordering::SeqCst) {
                    drop(inner);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                if let Err(e) = scrub_pass(&inner, Some(rate)) {
                    tracing::warn!(error = %e, "scrub pass failed; retrying");
                }
                drop(inner);
                // An empty store would otherwise spin.
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the scrubber");
    }
}

/// The valid files of one video directory; removes leftovers of older
/// layouts on the way (`.tmp-*` bodies and `.*.sha256` sidecars).
fn video_files(dir: &Path, video: &VideoId) -> Vec<ContentKey> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp-") || (name.starts_with('.') && name.ends_with(".sha256")) {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        if let Ok(f) = FileName::new(name) {
            out.push(ContentKey::new(video.clone(), f));
        }
    }
    out
}

fn video_dirs(base: &Path) -> Vec<VideoId> {
    let Ok(rd) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| VideoId::new(e.file_name().to_string_lossy().to_string()).ok())
        .collect()
}

/// Files hashed, then indexed in one transaction, by the rebuild.
const REBUILD_BATCH: usize = 256;

/// Builds the index from the directory. Files a put indexed meanwhile are
/// kept as they are; every other file is hashed.
fn rebuild(store: &Weak<Inner>) -> Result<()> {
    let Some(inner) = store.upgrade() else {
        return Ok(());
    };
    let started = Instant::now();
    inner.index.set_meta("complete", "0")?;
    // Count first, so progress means something.
    let videos = video_dirs(&inner.base);
    let total: u64 = videos
        .iter()
        .map(|v| {
            std::fs::read_dir(inner.base.join(v.as_str()))
                .map(|rd| rd.count() as u64)
                .unwrap_or(0)
        })
        .sum();
    inner.index_total.store(total, Ordering::Relaxed);
    drop(inner);
    for v in videos {
        let Some(inner) = store.upgrade() else {
            return Ok(());
        };
        if inner.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let dir = inner.base.join(v.as_str());
        let mut batch = Vec::with_capacity(REBUILD_BATCH);
        for key in video_files(&dir, &v) {
            inner.index_done.fetch_add(1, Ordering::Relaxed);
            if inner.index.get(&key)?.is_some() {
                continue;
            }
            let path = dir.join(key.file().as_str());
            batch.push((key, path));
            if batch.len() == REBUILD_BATCH {
                inner.index_found_batch(&batch)?;
                batch.clear();
            }
        }
        inner.index_found_batch(&batch)?;
    }
    let Some(inner) = store.upgrade() else {
        return Ok(());
    };
    inner.index.set_meta("complete", "1")?;
    inner.indexed.store(true, Ordering::SeqCst);
    tracing::info!(
        files = inner.files.load(Ordering::Relaxed),
        secs = started.elapsed().as_secs_f64(),
        dir = %inner.base.display(),
        "index built"
    );
    Ok(())
}

/// Builds the index in the background.
pub(crate) fn spawn_rebuild(store: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("indexer".into())
        .spawn(move || {
            if let Err(e) = rebuild(&store) {
                tracing::error!(error = %e, "building the index failed; restart the node to retry");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the indexer");
    }
}
