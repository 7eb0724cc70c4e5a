//! [`LocalContentStore`]: files in a directory, as `<base>/<videoId>/<filename>`.
//!
//! This is the course project's on-disk layout, so a storage directory written
//! by it is served as it is. Writes are atomic: the body goes to a hidden
//! temporary file in the same directory, is fsynced, checked, and renamed into
//! place. Each file's SHA-256 is kept in a hidden sidecar (`.<filename>.sha256`)
//! written with it, so `head` never re-reads the body; a file placed by hand
//! gets its sidecar the first time it is asked for. Hidden names can never be
//! valid [`FileName`]s, so temporaries and sidecars never show up in `list`.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{
    ByteStream, ContentStore, GetOptions, GetResult, MetaStream, ObjectMeta, PutOptions,
    Sha256Digest,
};
use crate::error::{Error, Result};
use crate::id::{ContentKey, FileName, VideoId};

/// Size of the chunks `get` streams.
const READ_CHUNK: usize = 1024 * 1024;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A [`ContentStore`] on a local directory.
#[derive(Debug, Clone)]
pub struct LocalContentStore {
    base: Arc<PathBuf>,
}

impl LocalContentStore {
    /// A store rooted at `base`, created if missing. Fails with a clear
    /// error if `base` cannot be created or is not a directory.
    pub fn new(base: impl Into<PathBuf>) -> Result<Self> {
        let base = base.into();
        std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        if !base.is_dir() {
            return Err(Error::io(
                &base,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        Ok(LocalContentStore {
            base: Arc::new(base),
        })
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
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

    fn sidecar_of(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        path.with_file_name(format!(".{name}.sha256"))
    }

    /// Counts files and bytes (walks the directory).
    pub async fn usage(&self) -> Result<(u64, u64)> {
        let mut list = self.list(None);
        let (mut n, mut bytes) = (0, 0);
        while let Some(m) = list.next().await {
            let m = m?;
            n += 1;
            bytes += m.size;
        }
        Ok((n, bytes))
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Reads the file's facts, from the sidecar when it still describes the
/// file, else by hashing the body (and writing a fresh sidecar). Blocking.
fn stat_blocking(key: &ContentKey, path: &Path) -> Result<ObjectMeta> {
    let meta = match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m,
        Ok(_) => return Err(Error::not_found(key.as_str())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(key.as_str()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let size = meta.len();
    let mtime = mtime_ns(&meta);
    let sidecar = LocalContentStore::sidecar_of(path);
    if let Ok(text) = std::fs::read_to_string(&sidecar) {
        let mut parts = text.split_whitespace();
        if let (Some(hex), Some(s), Some(t)) = (parts.next(), parts.next(), parts.next())
            && s.parse::<u64>().ok() == Some(size)
            && t.parse::<u128>().ok() == Some(mtime)
            && let Some(sha) = Sha256Digest::from_hex(hex)
        {
            return Ok(ObjectMeta {
                key: key.clone(),
                size,
                sha256: sha,
            });
        }
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let sha = Sha256Digest(h.finalize().into());
    // A missing sidecar only costs a re-hash next time.
    let _ = std::fs::write(&sidecar, format!("{} {size} {mtime}\n", sha.to_hex()));
    Ok(ObjectMeta {
        key: key.clone(),
        size,
        sha256: sha,
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::backend("local store", "blocking task failed", e))?
}

#[async_trait]
impl ContentStore for LocalContentStore {
    async fn put(
        &self,
        key: &ContentKey,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let path = self.path_of(key)?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.base.to_path_buf());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(&dir, e))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{}",
            key.file(),
            std::process::id(),
            TEMP_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // Removes the temporary file however this function is left (error,
        // checksum mismatch, or the caller dropping the future mid-stream).
        struct TempGuard(Option<PathBuf>);
        impl Drop for TempGuard {
            fn drop(&mut self) {
                if let Some(p) = self.0.take() {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        let mut guard = TempGuard(Some(tmp.clone()));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            if let Some(limit) = opts.expected_size
                && size > limit
            {
                return Err(Error::invalid(
                    "upload",
                    key.as_str(),
                    format!("body is longer than the expected {limit} bytes"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(&tmp, e))?;
        }
        let sha = Sha256Digest(hasher.finalize().into());
        if let Some(expected) = opts.expected_size
            && expected != size
        {
            return Err(Error::invalid(
                "upload",
                key.as_str(),
                format!("body has {size} bytes, expected {expected}"),
            ));
        }
        if let Some(expected) = opts.expected_sha256
            && expected != sha
        {
            return Err(Error::ChecksumMismatch {
                key: key.to_string(),
                expected: expected.to_hex(),
                actual: sha.to_hex(),
            });
        }
        file.sync_all().await.map_err(|e| Error::io(&tmp, e))?;
        drop(file);
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        guard.0 = None;
        let sidecar = Self::sidecar_of(&path);
        let m = tokio::fs::metadata(&path)
            .await
            .map_err(|e| Error::io(&path, e))?;
        let _ = tokio::fs::write(
            &sidecar,
            format!("{} {size} {}\n", sha.to_hex(), mtime_ns(&m)),
        )
        .await;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            sha256: sha,
        })
    }

    async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult> {
        let path = self.path_of(key)?;
        let meta = {
            let (key, path) = (key.clone(), path.clone());
            blocking(move || stat_blocking(&key, &path)).await?
        };
        let range = match opts.range {
            Some(r) => r.start.min(meta.size)..r.end.min(meta.size).max(r.start.min(meta.size)),
            None => 0..meta.size,
        };
        let file = {
            let path = path.clone();
            let start = range.start;
            blocking(move || {
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                f.seek(SeekFrom::Start(start))
                    .map_err(|e| Error::io(&path, e))?;
                Ok(f)
            })
            .await?
        };
        // Chunks are read on the blocking pool, one at a time, on demand: the
        // file moves into the blocking task and back.
        let remaining = range.end - range.start;
        let stream = futures::stream::unfold(Some((file, remaining, path)), |state| async move {
            let (mut file, left, path) = state?;
            if left == 0 {
                return None;
            }
            let want = (left as usize).min(READ_CHUNK);
            let joined = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let mut got = 0;
                while got < want {
                    match file.read(&mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => return (file, Err(e)),
                    }
                }
                buf.truncate(got);
                (file, Ok(buf))
            })
            .await;
            match joined {
                Ok((file, Ok(buf))) if !buf.is_empty() => {
                    let n = buf.len() as u64;
                    Some((Ok(Bytes::from(buf)), Some((file, left - n, path))))
                }
                Ok((_, Ok(_))) => Some((
                    Err(Error::io(
                        &path,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "file shrank while being read",
                        ),
                    )),
                    None,
                )),
                Ok((_, Err(e))) => Some((Err(Error::io(&path, e)), None)),
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
        let path = self.path_of(key)?;
        let key = key.clone();
        blocking(move || stat_blocking(&key, &path)).await
    }

    async fn delete(&self, key: &ContentKey) -> Result<()> {
        let path = self.path_of(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(key.as_str()));
            }
            Err(e) => return Err(Error::io(&path, e)),
        }
        let _ = tokio::fs::remove_file(Self::sidecar_of(&path)).await;
        if let Some(dir) = path.parent() {
            // Succeeds only when the video has no files left.
            let _ = tokio::fs::remove_dir(dir).await;
        }
        Ok(())
    }

    fn list(&self, video: Option<&VideoId>) -> MetaStream<'_> {
        let base = self.base.to_path_buf();
        let video = video.cloned();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ObjectMeta>>(64);
        tokio::task::spawn_blocking(move || {
            let dirs: Vec<VideoId> = match &video {
                Some(v) => vec![v.clone()],
                None => match std::fs::read_dir(&base) {
                    Ok(rd) => rd
                        .filter_map(|e| e.ok())
                        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                        .filter_map(|e| {
                            VideoId::new(e.file_name().to_string_lossy().to_string()).ok()
                        })
                        .collect(),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Error::io(&base, e)));
                        return;
                    }
                },
            };
            for v in dirs {
                let dir = base.join(v.as_str());
                let entries = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Error::io(&dir, e)));
                        return;
                    }
                };
                for e in entries.filter_map(|e| e.ok()) {
                    if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        continue;
                    }
                    let Ok(name) = FileName::new(e.file_name().to_string_lossy().to_string())
                    else {
                        continue;
                    };
                    let key = ContentKey::new(v.clone(), name);
                    let item = match stat_blocking(&key, &e.path()) {
                        // Deleted between listing and stat: not an error.
                        Err(Error::NotFound { .. }) => continue,
                        other => other,
                    };
                    if tx.blocking_send(item).is_err() {
                        return;
                    }
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
