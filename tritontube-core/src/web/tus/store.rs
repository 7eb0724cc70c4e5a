//! Unfinished tus uploads on disk: one data file (`<key>.bin`, the bytes
//! received so far) and one small JSON record (`<key>.json`, what the
//! upload is and when it expires) per upload, in one directory.
//!
//! The data file is the truth about the offset: its length is the number of
//! bytes received. Every append ends with `fsync`, and a record is replaced
//! by writing a temporary file, syncing it and renaming it over the old one,
//! so what a client was told survives a crash of the server.
//!
//! Each upload has a lock: a PATCH holds it while it writes (and while a
//! finished upload is handed to ingest); HEAD and DELETE wait for it, so
//! they see a settled offset; the expiry sweep skips an upload whose lock
//! is held.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use crate::error::{Error, Result};

/// Uploads kept at once (finished ones included, until they expire); a
/// creation beyond it is refused with 503.
pub const MAX_UPLOADS_KEPT: usize = 1024;

/// What is known about one upload besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    /// Its total size (`Upload-Length`).
    pub length: u64,
    /// `Upload-Metadata` as the client sent it (echoed by HEAD).
    pub raw_metadata: String,
    /// The uploaded file's name (`filename` metadata; may be empty).
    pub filename: String,
    /// The video id asked for (`id` metadata); `None` or empty: chosen by
    /// the server.
    pub id: Option<String>,
    /// The video's title (may be empty).
    pub title: String,
    /// Its description (may be empty).
    pub description: String,
    /// When it expires, in milliseconds since the Unix epoch: the expiry
    /// after its creation or its last PATCH.
    pub expires_ms: i64,
    /// The video it became, once its last byte arrived and ingest took it.
    pub video_id: Option<String>,
    /// The SHA-256 (hex) of the bytes handed to ingest, once finished.
    pub sha256: Option<String>,
    /// The signed-in user who created it (`None`: an anonymous upload,
    /// on a server with `--public-uploads`): only they may go on with it,
    /// and the video becomes theirs.
    #[serde(default)]
    pub owner: Option<String>,
}

impl UploadRecord {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_ms <= now_ms
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The uploads in progress in one directory.
#[derive(Debug)]
pub struct TusStore {
    dir: PathBuf,
    expiry: Duration,
    /// Every upload kept, by key, with its lock.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An upload's key as it appears in its URL: 32 lowercase hex digits.
pub fn valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TusStore {
    /// Opens (creating it if need be) the directory `dir`, whose uploads
    /// expire `expiry` after their last activity. What an earlier run left
    /// is kept; half-written records and data files without a record are
    /// removed.
    pub fn open(dir: &Path, expiry: Duration) -> Result<TusStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match name.split_once('.') {
                Some((key, "json")) if valid_key(key) => {
                    keys.insert(key.to_string(), Arc::default());
                }
                Some((key, "bin")) if valid_key(key) => {}
                _ => {
                    tracing::warn!(file = %path.display(), "removing a stray file from the resumable-upload directory");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let store = TusStore {
            dir: dir.to_path_buf(),
            expiry,
            locks: Mutex::new(keys),
        };
        // A data file whose record never made it to disk is not an upload.
        for entry in std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".bin")
                && !store.locked_map().contains_key(key)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(store)
    }

    /// How long an upload is kept after its last activity.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// When an upload touched now expires.
    pub fn expires_from_now(&self) -> i64 {
        now_ms().saturating_add(self.expiry.as_millis() as i64)
    }

    fn locked_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where upload `key`'s bytes are.
    pub fn data_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Uploads kept.
    pub fn len(&self) -> usize {
        self.locked_map().len()
    }

    /// Whether no upload is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates an upload described by `record` with no bytes yet, and
    /// returns its key; refused with [`Error::Busy`] when
    /// [`MAX_UPLOADS_KEPT`] are kept.
    pub async fn create(&self, record: &UploadRecord) -> Result<String> {
        if self.len() >= MAX_UPLOADS_KEPT {
            return Err(Error::Busy {
                what: format!(
                    "{MAX_UPLOADS_KEPT} resumable uploads are open, the most this server keeps"
                ),
                limit: MAX_UPLOADS_KEPT,
                retry_after_secs: 60,
                per_client: false,
            });
        }
        let key = format!("{:032x}", rand::random::<u128>());
        let data = self.data_path(&key);
        let file = tokio::fs::File::create(&data)
            .await
            .map_err(|e| Error::io(&data, e))?;
        file.sync_all().await.map_err(|e| Error::io(&data, e))?;
        self.write_record(&key, record).await?;
        self.locked_map().insert(key.clone(), Arc::default());
        Ok(key)
    }

    /// Upload `key`'s lock, if it is kept.
    fn lock_of(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.locked_map().get(key).cloned()
    }

    /// Takes upload `key`'s lock, waiting at most `wait`: `NotFound` if
    /// there is no such upload (or it expired), `Locked` if another request
    /// holds it longer. The record is read under the lock.
    pub async fn lock(
        &self,
        key: &str,
        wait: Duration,
    ) -> Result<(OwnedMutexGuard<()>, UploadRecord)> {
        let not_found = || Error::NotFound {
            key: format!("upload {key} (it never existed, was terminated, or expired)"),
        };
        let lock = self.lock_of(key).ok_or_else(not_found)?;
        let guard = tokio::time::timeout(wait, lock.lock_owned())
            .await
            .map_err(|_| Error::Conflict {
                key: format!("upload {key}"),
                reason: "another request is writing to it; try again shortly".into(),
            })?;
        let record = self.read_record(key).await.map_err(|_| not_found())?;
        if record.expired(now_ms()) && record.video_id.is_none() {
            self.remove_locked(key).await;
            return Err(not_found());
        }
        Ok((guard, record))
    }

    /// The bytes upload `key` holds (its offset).
    pub async fn offset(&self, key: &str) -> Result<u64> {
        let data = self.data_path(key);
        match tokio::fs::metadata(&data).await {
            Ok(m) => Ok(m.len()),
            Err(e) => Err(Error::io(&data, e)),
        }
    }

    /// Reads upload `key`'s record.
    async fn read_record(&self, key: &str) -> Result<UploadRecord> {
        let path = self.record_path(key);
        let text = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
            key: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Replaces upload `key`'s record, durably (the caller holds its lock,
    /// or it is being created).
    pub async fn write_record(&self, key: &str, record: &UploadRecord) -> Result<()> {
        let path = self.record_path(key);
        let tmp = self.dir.join(format!("{key}.json.tmp"));
        let body =
            serde_json::to_vec(record).map_err(|e| Error::io(&path, std::io::Error::other(e)))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename itself is made durable by syncing the directory.
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(|e| Error::io(&self.dir, std::io::Error::other(e)))?
        .map_err(|e| Error::io(&self.dir, e))
    }

    /// Removes upload `key` (the caller holds its lock, or it is unused):
    /// its bytes, its record, its lock.
    pub async fn remove_locked(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.data_path(key)).await;
        let _ = tokio::fs::remove_file(self.record_path(key)).await;
        self.locked_map().remove(key);
    }

    /// Drops the bytes of a finished upload (its record stays, to tell a
    /// later HEAD which video it became, until it expires).
    pub async fn drop_data(&self, key: &str) {
        let _ = tokio::fs::remove_file(self.data_path(key)).await;
    }

    /// Removes every expired upload not in use; returns how many.
    pub async fn sweep(&self) -> usize {
        let keys: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = self
            .locked_map()
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect();
        let now = now_ms();
        let mut removed = 0;
        for (key, lock) in keys {
            // In use: a request is writing or reading it right now.
            let Ok(_guard) = lock.try_lock() else {
                continue;
            };
            let expired = match self.read_record(&key).await {
                Ok(r) => r.expired(now),
                Err(e) => {
                    tracing::warn!(upload = %key, error = %e, "an unreadable resumable-upload record is removed");
                    true
                }
            };
            if expired {
                self.remove_locked(&key).await;
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expires_ms: i64) -> UploadRecord {
        UploadRecord {
            length: 10,
            raw_metadata: String::new(),
            filename: "a.mp4".into(),
            id: None,
            title: String::new(),
            description: String::new(),
            expires_ms,
            video_id: None,
            sha256: None,
            owner: None,
        }
    }

    #[tokio::test]
    async fn uploads_survive_a_reopen_and_expired_ones_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = TusStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        let live = store.create(&record(now_ms() + 60_000)).await.unwrap();
        let old = store.create(&record(now_ms() - 1)).await.unwrap();
        assert!(valid_key(&live) && valid_key(&old));
        std::fs::write(store.data_path(&live), b"abc").unwrap();
        std::fs::write(dir.path().join("junk.txt"), b"x").unwrap();
        std::fs::write(dir.path().join(format!("{:032x}.bin", 7)), b"x").unwrap();
        drop(store);

        let store = TusStore::open(dir.path(), Duration::from_secs(60)).unwrap();
        assert_eq!(store.len(), 2);
        assert!(!dir.path().join("junk.txt").exists());
        assert!(!dir.path().join(format!("{:032x}.bin", 7)).exists());
        assert_eq!(store.offset(&live).await.unwrap(), 3);
        let e = store.lock(&old, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.http_status(), 404, "{e}");
        assert_eq!(store.len(), 1, "an expired upload is removed when found");

        let (guard, r) = store.lock(&live, Duration::from_secs(1)).await.unwrap();
        assert_eq!(r.length, 10);
        let e = store
            .lock(&live, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(e.http_status(), 409, "{e}");
        let mut r = r;
        r.expires_ms = now_ms() - 1;
        store.write_record(&live, &r).await.unwrap();
        assert_eq!(store.sweep().await, 0, "an upload in use is not swept");
        drop(guard);
        assert_eq!(store.sweep().await, 1);
        assert!(store.is_empty());
        assert!(!store.data_path(&live).exists());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn keys_are_32_lowercase_hex_digits() {
        assert!(valid_key(&"a".repeat(32)));
        assert!(!valid_key(&"A".repeat(32)));
        assert!(!valid_key("../../etc/passwd"));
        assert!(!valid_key(&"a".repeat(31)));
    }
}
