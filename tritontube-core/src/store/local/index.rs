//! The per-directory index of a [`super::LocalContentStore`]: one SQLite
//! file (`<base>/.tritontube/index.db`) holding, for every stored file, its
//! size, SHA-256, the SHA-256 of each [`CHUNK`]-byte chunk and its ring hash.
//!
//! The index is what makes a node's answers cheap and trustworthy at scale:
//! `head`, `list`, counters and range listings come from here and never walk
//! the disk, and a read is verified chunk by chunk against what was measured
//! when the file was written (never against mtime or a sidecar).
//!
//! A file and its row change together. A put or delete first writes an
//! *intent* (what is about to happen to which key, and the temporary file
//! involved), then renames or removes the file, then updates the row and
//! drops the intent in one transaction. The store's recovery, run at open,
//! finishes or undoes whatever a crash (kill -9) interrupted between those
//! steps, so the index and the directory agree afterwards.
//!
//! One writer connection behind a mutex and a small pool of readers (WAL
//! mode lets readers run beside the writer); every call here blocks and is
//! made from the blocking thread pool or a background thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::id::{ContentKey, VideoId};
use crate::ring::{HashRange, key_hash};
use crate::store::Sha256Digest;

/// Bytes covered by one chunk hash. Reads are verified a chunk at a time.
pub const CHUNK: u64 = 1024 * 1024;

/// Readers kept open beside the writer.
const READERS: usize = 4;

/// One indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub key: ContentKey,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// SHA-256 of each chunk, concatenated; empty when the file is one chunk
    /// or less (then the whole-file hash is the chunk hash).
    pub chunks: Vec<u8>,
}

impl Row {
    /// The expected SHA-256 of chunk `i`.
    pub fn chunk_hash(&self, i: u64) -> Option<Sha256Digest> {
        if self.size <= CHUNK {
            return (i == 0).then_some(self.sha256);
        }
        let at = (i as usize) * 32;
        self.chunks
            .get(at..at + 32)
            .and_then(Sha256Digest::from_slice)
    }

    /// The row's ring hash.
    pub fn ring_hash(&self) -> u64 {
        key_hash(self.key.as_str())
    }
}

/// What an interrupted change was doing.
#[derive(Debug, Clone)]
pub(crate) enum Intent {
    /// `tmp` (a name inside the temp directory) is being renamed onto the key.
    Put { tmp: String, row: Row },
    /// The key's file is being removed.
    Delete,
}

/// Signed storage of a `u64` whose order equals the unsigned order.
fn to_sql(h: u64) -> i64 {
    (h ^ (1 << 63)) as i64
}

fn sql_err(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    Error::backend("node index", format!("{}: {what}", path.display()), e)
}

/// True if `e` is the index's disk being full (SQLite's `SQLITE_FULL`).
pub(crate) fn is_disk_full(e: &Error) -> bool {
    match e {
        Error::Backend {
            source: Some(s), ..
        } => {
            s.downcast_ref::<rusqlite::Error>()
                .and_then(|e| e.sqlite_error_code())
                == Some(rusqlite::ErrorCode::DiskFull)
        }
        _ => false,
    }
}

/// The index; see the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Index {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Writes (by what they do, as named to [`Index::write`]) that fail
    /// next as on a full disk, each once.
    #[cfg(test)]
    pub(crate) fail_next: Mutex<Vec<&'static str>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    video TEXT NOT NULL,
    ring_hash INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    chunks BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_hash ON files (ring_hash, key);
CREATE INDEX IF NOT EXISTS files_by_video ON files (video, key);
CREATE TABLE IF NOT EXISTS intents (
    key TEXT PRIMARY KEY,
    op TEXT NOT NULL,
    tmp TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    chunks BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    moved_to TEXT NOT NULL,
    reason TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
";

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| sql_err(path, "open", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| sql_err(path, "configure", e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| sql_err(path, "enable WAL", e))?;
    // WAL + NORMAL: a committed transaction survives the process being
    // killed; only an OS crash can lose the last ones, and then the intent
    // log and the directory still agree on what is on disk.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| sql_err(path, "configure", e))?;
    // Keep the page cache small: a node's memory should not grow with the
    // number of files it holds.
    conn.pragma_update(None, "cache_size", -2048)
        .map_err(|e| sql_err(path, "configure", e))?;
    Ok(conn)
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, u64, Vec<u8>, Vec<u8>)> {
    Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?, r.get(3)?))
}

fn decode(path: &Path, (key, size, sha, chunks): (String, u64, Vec<u8>, Vec<u8>)) -> Result<Row> {
    let corrupt = |why: &str| Error::Corrupt {
        key: format!("{} row {key:?}", path.display()),
        reason: why.to_string(),
    };
    Ok(Row {
        key: key.parse().map_err(|_| corrupt("invalid key"))?,
        size,
        sha256: Sha256Digest::from_slice(&sha).ok_or_else(|| corrupt("sha256 is not 32 bytes"))?,
        chunks,
    })
}

impl Index {
    /// Opens (creating if missing) the index at `path`. Returns the index
    /// and whether it existed before.
    pub fn open(path: &Path) -> Result<(Self, bool)> {
        let existed = path.exists();
        let writer = open_conn(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| sql_err(path, "create the schema", e))?;
        let mut readers = Vec::new();
        for _ in 0..READERS {
            readers.push(open_conn(path)?);
        }
        Ok((
            Index {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(readers),
                #[cfg(test)]
                fail_next: Mutex::new(Vec::new()),
            },
            existed,
        ))
    }

    fn write<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        #[cfg(test)]
        {
            let mut fail = self.fail_next.lock().unwrap();
            if let Some(i) = fail.iter().position(|w| *w == what) {
                fail.remove(i);
                let full = rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    Some("database or disk is full".into()),
                );
                return Err(sql_err(&self.path, what, full));
            }
        }
        f(&mut conn).map_err(|e| sql_err(&self.path, what, e))
    }

    fn read<T>(&self, what: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => open_conn(&self.path)?,
        };
        let out = f(&conn).map_err(|e| sql_err(&self.path, what, e));
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < READERS {
            pool.push(conn);
        }
        out
    }

    /// A value of the `meta` table.
    pub fn meta(&self, k: &str) -> Result<Option<String>> {
        self.read("read meta", |c| {
            c.query_row("SELECT v FROM meta WHERE k = ?1", [k], |r| r.get(0))
                .optional()
        })
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&self, k: &str, v: &str) -> Result<()> {
        self.write("write meta", |c| {
            c.execute(
                "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = ?2",
                params![k, v],
            )
            .map(|_| ())
        })
    }

    /// Files and bytes indexed (one scan; done once at open).
    pub fn totals(&self) -> Result<(u64, u64)> {
        self.read("count files", |c| {
            c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM files",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
        })
    }

    /// Quarantined files recorded.
    pub fn quarantined(&self) -> Result<u64> {
        self.read("count quarantine", |c| {
            c.query_row("SELECT count(*) FROM quarantine", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
        })
    }

    /// The row of `key`.
    pub fn get(&self, key: &ContentKey) -> Result<Option<Row>> {
        let raw = self.read("read a row", |c| {
            c.query_row(
                "SELECT key, size, sha256, chunks FROM files WHERE key = ?1",
                [key.as_str()],
                row_from,
            )
            .optional()
        })?;
        raw.map(|r| decode(&self.path, r)).transpose()
    }

    /// Rows with ring hash in `range`, in (hash, key) order, strictly after
    /// the cursor `after`.
    pub fn range(
        &self,
        range: HashRange,
        after: Option<&ContentKey>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        // Keys are never empty, so (start, "") is before every key at start.
        // One row-value lower bound (the later of the range start and the
        // cursor) lets SQLite seek straight to it in the index; a separate
        // `ring_hash >= start` would make it walk from the start every page.
        let (cursor_hash, cursor_key) = match after {
            Some(k) if key_hash(k.as_str()) >= range.start => (key_hash(k.as_str()), k.as_str()),
            _ => (range.start, ""),
        };
        let sql = match range.end {
            Some(_) => {
                "SELECT key, size, sha256, chunks FROM files
                 WHERE (ring_hash, key) > (?1, ?2) AND ring_hash < ?3
                 ORDER BY ring_hash, key LIMIT ?4"
            }
            None => {
                "SELECT key, size, sha256, chunks FROM files
                 WHERE (ring_hash, key) > (?1, ?2) AND ?3 IS NULL
                 ORDER BY ring_hash, key LIMIT ?4"
            }
        };
        let raw = self.read("list a range", |c| {
            let mut st = c.prepare_cached(sql)?;
            st.query_map(
                params![
                    to_sql(cursor_hash),
                    cursor_key,
                    range.end.map(to_sql),
                    limit as i64
                ],
                row_from,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raw.into_iter().map(|r| decode(&self.path, r)).collect()
    }

    /// Rows of one video, by key, after `after`. A video's keys are exactly
    /// those in `["<video>/", "<video>0")` (`0` follows `/`, and an id holds
    /// no `/`), so this reads a range of the primary key, not every row.
    pub fn video(
        &self,
        video: &VideoId,
        after: Option<&ContentKey>,
        limit: usize,
    ) -> Result<Vec<Row>> {
        let start = format!("{video}/");
        let after = after
            .map(|k| k.as_str().to_string())
            .filter(|a| *a >= start)
            .unwrap_or(start);
        let end = format!("{video}0");
        let raw = self.read("list a video", |c| {
            let mut st = c.prepare_cached(
                "SELECT key, size, sha256, chunks FROM files
                 WHERE key > ?2 AND key < ?3 AND video = ?1 ORDER BY key LIMIT ?4",
            )?;
            st.query_map(params![video.as_str(), after, end, limit as i64], row_from)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raw.into_iter().map(|r| decode(&self.path, r)).collect()
    }

    /// Rows by key order after `after` (the scrubber's walk).
    pub fn by_key(&self, after: &str, limit: usize) -> Result<Vec<Row>> {
        let raw = self.read("walk the index", |c| {
            let mut st = c.prepare_cached(
                "SELECT key, size, sha256, chunks FROM files WHERE key > ?1 ORDER BY key LIMIT ?2",
            )?;
            st.query_map(params![after, limit as i64], row_from)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        raw.into_iter().map(|r| decode(&self.path, r)).collect()
    }

    /// Writes the intent of a change to `key`.
    pub fn begin(&self, key: &ContentKey, intent: &Intent) -> Result<()> {
        let (op, tmp, size, sha, chunks) = match intent {
            Intent::Put { tmp, row } => (
                "put",
                tmp.as_str(),
                row.size,
                row.sha256.0.to_vec(),
                row.chunks.clone(),
            ),
            Intent::Delete => ("delete", "", 0, Vec::new(), Vec::new()),
        };
        self.write("write an intent", |c| {
            c.execute(
                "INSERT OR REPLACE INTO intents (key, op, tmp, size, sha256, chunks)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.as_str(), op, tmp, size as i64, sha, chunks],
            )
            .map(|_| ())
        })
    }

    /// Drops the intent of `key` without changing its row (the change did
    /// not happen).
    pub fn abandon(&self, key: &ContentKey) -> Result<()> {
        self.write("drop an intent", |c| {
            c.execute("DELETE FROM intents WHERE key = ?1", [key.as_str()])
                .map(|_| ())
        })
    }

    /// Sets (or, with `None`, removes) the row of `key` and drops its
    /// intent, in one transaction. Returns the replaced row's size, if any.
    pub fn commit(&self, key: &ContentKey, row: Option<&Row>) -> Result<Option<u64>> {
        self.write("commit a change", |c| {
            let tx = c.transaction()?;
            let old: Option<i64> = tx
                .query_row(
                    "SELECT size FROM files WHERE key = ?1",
                    [key.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            match row {
                Some(r) => {
                    tx.execute(
                        "INSERT OR REPLACE INTO files (key, video, ring_hash, size, sha256, chunks)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![
                            key.as_str(),
                            key.video().as_str(),
                            to_sql(r.ring_hash()),
                            r.size as i64,
                            r.sha256.0.to_vec(),
                            r.chunks
                        ],
                    )?;
                }
                None => {
                    tx.execute("DELETE FROM files WHERE key = ?1", [key.as_str()])?;
                }
            }
            tx.execute("DELETE FROM intents WHERE key = ?1", [key.as_str()])?;
            tx.commit()?;
            Ok(old.map(|s| s as u64))
        })
    }

    /// Inserts a row found by the rebuild, unless the key already has one
    /// (a put during the rebuild wins). Returns true if inserted.
    pub fn insert_found(&self, row: &Row) -> Result<bool> {
        self.insert_found_batch(std::slice::from_ref(row))
            .map(|(n, _)| n > 0)
    }

    /// [`Index::insert_found`] for many rows in one transaction. Returns the
    /// number of rows inserted and their bytes.
    pub fn insert_found_batch(&self, rows: &[Row]) -> Result<(u64, u64)> {
        self.write("index found files", |c| {
            let tx = c.transaction()?;
            let (mut n, mut bytes) = (0, 0);
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR IGNORE INTO files (key, video, ring_hash, size, sha256, chunks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for row in rows {
                    let inserted = st.execute(params![
                        row.key.as_str(),
                        row.key.video().as_str(),
                        to_sql(row.ring_hash()),
                        row.size as i64,
                        row.sha256.0.to_vec(),
                        row.chunks
                    ])?;
                    if inserted > 0 {
                        n += 1;
                        bytes += row.size;
                    }
                }
            }
            tx.commit()?;
            Ok((n, bytes))
        })
    }

    /// Removes the row of `key` (if it still has `sha256`) and records the
    /// file as quarantined at `moved_to`. Returns the removed row's size.
    pub fn quarantine(
        &self,
        key: &ContentKey,
        sha256: &Sha256Digest,
        moved_to: &str,
        reason: &str,
    ) -> Result<Option<u64>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.write("quarantine a file", |c| {
            let tx = c.transaction()?;
            let old: Option<i64> = tx
                .query_row(
                    "SELECT size FROM files WHERE key = ?1 AND sha256 = ?2",
                    params![key.as_str(), sha256.0.to_vec()],
                    |r| r.get(0),
                )
                .optional()?;
            if old.is_some() {
                tx.execute("DELETE FROM files WHERE key = ?1", [key.as_str()])?;
            }
            tx.execute(
                "INSERT INTO quarantine (key, moved_to, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![key.as_str(), moved_to, reason, now],
            )?;
            tx.commit()?;
            Ok(old.map(|s| s as u64))
        })
    }

    /// Every pending intent (after a crash).
    pub fn intents(&self) -> Result<Vec<(String, Intent)>> {
        let raw = self.read("read intents", |c| {
            let mut st = c.prepare("SELECT key, op, tmp, size, sha256, chunks FROM intents")?;
            st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)? as u64,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        let mut out = Vec::new();
        for (key, op, tmp, size, sha, chunks) in raw {
            let intent = if op == "put" {
                let row = decode(&self.path, (key.clone(), size, sha, chunks))?;
                Intent::Put { tmp, row }
            } else {
                Intent::Delete
            };
            out.push((key, intent));
        }
        Ok(out)
    }
}
