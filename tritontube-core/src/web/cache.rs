//! An in-memory cache of small content files (segments, init segments,
//! posters, manifests) in front of the content store.
//!
//! A video's files never change while it exists, so a file is fetched from
//! the storage nodes once and then served from memory. An entry is trusted
//! for [`CacheConfig::revalidate_after`]; after that, one `head` request to
//! the store confirms its checksum before it is served again, so a video
//! deleted and uploaded again under the same id through another web server
//! is never served stale for longer than that. Deletes through this server
//! drop the video's entries at once.
//!
//! The cache holds at most [`CacheConfig::capacity_bytes`] of file bodies
//! (least recently used first out) and only files up to
//! [`CacheConfig::max_object_bytes`]; larger files are streamed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::id::{ContentKey, VideoId};
use crate::store::ObjectMeta;

/// Tunables of the [`ContentCache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Bytes of file bodies kept at most (0 turns the cache off).
    pub capacity_bytes: u64,
    /// Largest file kept.
    pub max_object_bytes: u64,
    /// How long an entry is served without asking the store again.
    pub revalidate_after: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity_bytes: 256 * 1024 * 1024,
            max_object_bytes: 4 * 1024 * 1024,
            revalidate_after: Duration::from_secs(2),
        }
    }
}

struct Entry {
    meta: ObjectMeta,
    body: Bytes,
    checked: Instant,
}

struct Inner {
    lru: lru::LruCache<ContentKey, Entry>,
    bytes: u64,
}

/// The cache; see the [module documentation](self).
pub struct ContentCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for ContentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCache")
            .field("config", &self.config)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Default for ContentCache {
    fn default() -> Self {
        Self::new(CacheConfig::default())
    }
}

impl ContentCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        ContentCache {
            config,
            inner: Mutex::new(Inner {
                lru: lru::LruCache::unbounded(),
                bytes: 0,
            }),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The tunables.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True if a file of `size` bytes would be kept.
    pub fn admits(&self, size: u64) -> bool {
        size <= self.config.max_object_bytes && size <= self.config.capacity_bytes
    }

    /// The file, if cached and checked recently enough to serve as is.
    pub fn fresh(&self, key: &ContentKey) -> Option<(ObjectMeta, Bytes)> {
        let mut inner = self.lock();
        let found = inner
            .lru
            .get(key)
            .filter(|e| e.checked.elapsed() < self.config.revalidate_after)
            .map(|e| (e.meta.clone(), e.body.clone()));
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// The cached body of `meta.key` if it matches `meta` (size and
    /// SHA-256, as the store reports them now); a stale entry is dropped.
    pub fn revalidate(&self, meta: &ObjectMeta) -> Option<Bytes> {
        let mut inner = self.lock();
        let matches = match inner.lru.get_mut(&meta.key) {
            Some(e) if e.meta.sha256 == meta.sha256 && e.meta.size == meta.size => {
                e.checked = Instant::now();
                Some(e.body.clone())
            }
            Some(_) => None,
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match matches {
            Some(body) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(body)
            }
            None => {
                if let Some(old) = inner.lru.pop(&meta.key) {
                    inner.bytes -= old.body.len() as u64;
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `body` as the content of `meta.key` (if it is small enough),
    /// evicting the least recently used files beyond the capacity.
    pub fn insert(&self, meta: ObjectMeta, body: Bytes) {
        let size = body.len() as u64;
        if !self.admits(size) {
            return;
        }
        let mut inner = self.lock();
        let key = meta.key.clone();
        if let Some(old) = inner.lru.put(
            key,
            Entry {
                meta,
                body,
                checked: Instant::now(),
            },
        ) {
            inner.bytes -= old.body.len() as u64;
        }
        inner.bytes += size;
        while inner.bytes > self.config.capacity_bytes {
            match inner.lru.pop_lru() {
                Some((_, e)) => inner.bytes -= e.body.len() as u64,
                None => break,
            }
        }
    }

    /// Drops every file of `video`.
    pub fn remove_video(&self, video: &VideoId) {
        let mut inner = self.lock();
        let keys: Vec<ContentKey> = inner
            .lru
            .iter()
            .filter(|(k, _)| k.video() == video)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(e) = inner.lru.pop(&k) {
                inner.bytes -= e.body.len() as u64;
            }
        }
    }

    /// Bytes of file bodies held.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Requests served from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Requests that had to fetch the file.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sha256Digest;

    fn meta(key: &str, size: u64, tag: u8) -> ObjectMeta {
        ObjectMeta {
            key: key.parse().unwrap(),
            size,
            sha256: Sha256Digest([tag; 32]),
        }
    }

    #[test]
    fn keeps_recent_files_within_capacity_and_checks_them_again() {
        let c = ContentCache::new(CacheConfig {
            capacity_bytes: 100,
            max_object_bytes: 60,
            revalidate_after: Duration::from_millis(50),
        });
        c.insert(meta("v/a.m4s", 40, 1), Bytes::from(vec![1; 40]));
        c.insert(meta("v/b.m4s", 40, 2), Bytes::from(vec![2; 40]));
        assert!(c.fresh(&"v/a.m4s".parse().unwrap()).is_some());
        // Over capacity: the least recently used (b) goes.
        c.insert(meta("w/c.m4s", 40, 3), Bytes::from(vec![3; 40]));
        assert_eq!(c.bytes(), 80);
        assert!(c.fresh(&"v/b.m4s".parse().unwrap()).is_none());
        // Too large to keep.
        c.insert(meta("w/d.m4s", 61, 4), Bytes::from(vec![4; 61]));
        assert!(c.fresh(&"w/d.m4s".parse().unwrap()).is_none());
        // After the revalidation delay, only a matching checksum serves it.
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.fresh(&"v/a.m4s".parse().unwrap()).is_none());
        assert!(c.revalidate(&meta("v/a.m4s", 40, 1)).is_some());
        assert!(c.fresh(&"v/a.m4s".parse().unwrap()).is_some());
        assert!(c.revalidate(&meta("w/c.m4s", 40, 9)).is_none());
        assert!(c.revalidate(&meta("w/c.m4s", 40, 3)).is_none(), "dropped");
        c.remove_video(&"v".parse().unwrap());
        assert_eq!(c.bytes(), 0);
        assert!(c.hits() >= 3 && c.misses() >= 2);
    }
}
