//! [`SqliteMetadataStore`]: metadata in one SQLite file, for a single machine.
//!
//! One connection in WAL mode behind a mutex, used only from the blocking
//! thread pool (never from an async worker). The schema is versioned with
//! `PRAGMA user_version`; opening an older file upgrades it, including a
//! metadata file written by the course project (its `videos(id, uploaded_at)`
//! rows become ready videos).
//!
//! Version 2 added `file_records`, the size and SHA-256 of every stored file,
//! indexed by `(ring_hash, key)` for listings by ring range and by `video`.
//!
//! Version 5 added `videos_search`, an FTS5 index of every video's title and
//! description kept up to date by triggers on `videos`, for
//! [`MetadataStore::search_videos`].
//!
//! Version 6 added `users` (name, role, argon2 PHC string, creation time)
//! and `sessions` (the SHA-256 of a session token, its user, when it
//! lapses) for accounts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::accounts::validate_token_hash;
use super::{
    AdminLease, ClusterAck, ClusterState, DEFAULT_FILE_RECORDS_LIMIT, FileRecord, MetadataStore,
    PageCursor, PageRequest, SearchPage, SearchRequest, Session, User, Versioned, Video,
    VideoChange, VideoChangeFn, VideoFacts, VideoPage, VideoState, validate_user_name,
};
use crate::error::{Error, Result};
use crate::id::{ContentKey, VideoId};
use crate::ring::{HashRange, key_hash};
use crate::store::Sha256Digest;

/// The schema version this code writes.
const SCHEMA_VERSION: i64 = 6;

/// Metadata in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteMetadataStore {
    conn: Arc<Mutex<Connection>>,
    path: Arc<PathBuf>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl SqliteMetadataStore {
    /// Opens (creating if missing) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), OpenFlags::default(), Duration::from_secs(5))
    }

    /// Opens an existing database read-only: every write fails with a clear
    /// error.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(
            path.as_ref(),
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            Duration::from_secs(5),
        )
    }

    /// Opens with explicit flags and how long to wait for another process's
    /// lock before failing.
    pub fn open_with(path: &Path, flags: OpenFlags, busy_timeout: Duration) -> Result<Self> {
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, "open", e))?;
        conn.busy_timeout(busy_timeout)
            .map_err(|e| sql_error(path, "configure", e))?;
        let read_only = flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY);
        if !read_only {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| sql_error(path, "enable WAL", e))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| sql_error(path, "configure", e))?;
            migrate(&conn).map_err(|e| sql_error(path, "upgrade the schema", e))?;
        } else {
            // Fails now, clearly, if this is not a TritonTube database.
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(|e| sql_error(path, "read", e))?;
            if v != SCHEMA_VERSION {
                return Err(Error::Backend {
                    backend: "sqlite",
                    message: format!(
                        "{}: schema version {v}, expected {SCHEMA_VERSION}; open it read-write once to upgrade",
                        path.display()
                    ),
                    source: None,
                });
            }
        }
        Ok(SqliteMetadataStore {
            conn: Arc::new(Mutex::new(conn)),
            path: Arc::new(path.to_path_buf()),
        })
    }

    async fn call<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| Error::backend("sqlite", format!("{what}: task failed"), e))?
    }
}

/// Creates or upgrades the schema, one version step at a time, in one
/// transaction (a failed upgrade leaves the file as it was).
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    if version < 1 {
        create_v1(&tx)?;
    }
    if version < 2 {
        create_v2(&tx)?;
    }
    if version < 3 {
        create_v3(&tx)?;
    }
    if version < 4 {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS cluster_acks (
                 server TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 until_ms INTEGER NOT NULL
             );",
        )?;
    }
    if version < 5 {
        create_v5(&tx)?;
    }
    if version < 6 {
        create_v6(&tx)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()
}

/// Version 1: videos, cluster state, admin lock, counters; a course-project
/// file's videos are kept.
fn create_v1(tx: &Connection) -> rusqlite::Result<()> {
    let legacy: bool = tx
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('videos') WHERE name = 'uploaded_at'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if legacy {
        // The course project's table: keep its videos, as ready ones.
        tx.execute_batch("ALTER TABLE videos RENAME TO videos_course_project")?;
    }
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS videos (
             id TEXT PRIMARY KEY,
             uploaded_at_ms INTEGER NOT NULL,
             record TEXT NOT NULL
         );
         CREATE INDEX IF NOT EXISTS videos_newest ON videos (uploaded_at_ms DESC, id ASC);
         CREATE TABLE IF NOT EXISTS cluster (
             k INTEGER PRIMARY KEY CHECK (k = 1),
             version INTEGER NOT NULL,
             state TEXT NOT NULL
         );
         CREATE TABLE IF NOT EXISTS admin_lock (
             k INTEGER PRIMARY KEY CHECK (k = 1),
             holder TEXT NOT NULL,
             token INTEGER NOT NULL,
             expires_at_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    )?;
    if legacy {
        import_course_project(tx)?;
    }
    Ok(())
}

/// Copies the course project's videos (renamed aside by [`create_v1`]) in as
/// ready videos.
fn import_course_project(tx: &Connection) -> rusqlite::Result<()> {
    let mut rows = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT id, COALESCE(CAST(strftime('%s', substr(uploaded_at, 1, 19)) AS INTEGER) * 1000, 0)
             FROM videos_course_project",
        )?;
        let mut q = stmt.query([])?;
        while let Some(r) = q.next()? {
            rows.push((r.get::<_, String>(0)?, r.get::<_, i64>(1)?));
        }
    }
    for (id, ms) in rows {
        let Ok(vid) = VideoId::new(id.clone()) else {
            tracing::warn!(id, "skipping a course-project video with an invalid id");
            continue;
        };
        let mut v = Video::new(vid, id.clone());
        v.uploaded_at_ms = ms;
        v.state = VideoState::Ready;
        let json = serde_json::to_string(&v).unwrap_or_default();
        tx.execute(
            "INSERT OR IGNORE INTO videos (id, uploaded_at_ms, record) VALUES (?1, ?2, ?3)",
            params![id, ms, json],
        )?;
    }
    Ok(())
}

/// Version 2: the recorded size and SHA-256 of every stored file. The ring
/// hash is stored order-preserved as a signed integer (see
/// [`ordered_hash`]) so that ranges of the ring are ranges of the index.
fn create_v2(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS file_records (
             key TEXT PRIMARY KEY,
             video TEXT NOT NULL,
             ring_hash INTEGER NOT NULL,
             size INTEGER NOT NULL,
             sha256 BLOB NOT NULL
         );
         CREATE INDEX IF NOT EXISTS file_records_by_hash ON file_records (ring_hash, key);
         CREATE INDEX IF NOT EXISTS file_records_by_video ON file_records (video);",
    )
}

/// Version 3: an index of the videos someone has work to finish (active
/// phases: uploaded, processing, deleting), so that finding interrupted work
/// does not read every video.
fn create_v3(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(ACTIVE_INDEX)
}

/// Version 5: a full-text index of titles and descriptions (FTS5, built
/// into the bundled SQLite), one row per video under the video's rowid, kept
/// in step by triggers and filled from the videos already there. Its
/// tokenizer splits words as [`super::search_words`] does (letters and
/// digits; accents kept), so both backends find the same videos. A record
/// that is not JSON is indexed with no words.
fn create_v5(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS videos_search USING fts5(
             title, description, tokenize = 'unicode61 remove_diacritics 0'
         );
         CREATE TRIGGER IF NOT EXISTS videos_search_insert AFTER INSERT ON videos BEGIN
             INSERT INTO videos_search (rowid, title, description)
                 VALUES (new.rowid, {title_new}, {desc_new});
         END;
         CREATE TRIGGER IF NOT EXISTS videos_search_update AFTER UPDATE OF record ON videos BEGIN
             UPDATE videos_search SET title = {title_new}, description = {desc_new}
                 WHERE rowid = new.rowid;
         END;
         CREATE TRIGGER IF NOT EXISTS videos_search_delete AFTER DELETE ON videos BEGIN
             DELETE FROM videos_search WHERE rowid = old.rowid;
         END;
         INSERT INTO videos_search (rowid, title, description)
             SELECT rowid, {title_rec}, {desc_rec} FROM videos;",
        title_new = json_text("new.record", "title"),
        desc_new = json_text("new.record", "description"),
        title_rec = json_text("record", "title"),
        desc_rec = json_text("record", "description"),
    ))
}

/// Version 6: accounts and their sessions.
fn create_v6(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS users (
             name TEXT PRIMARY KEY,
             role TEXT NOT NULL,
             password_hash TEXT NOT NULL,
             created_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS sessions (
             token_hash TEXT PRIMARY KEY,
             user TEXT NOT NULL,
             expires_ms INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_ms);
         CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user);",
    )
}

/// Decodes one `users` row; an unknown role is [`Error::Corrupt`].
fn decode_user(name: String, role: String, password_hash: String, created_ms: i64) -> Result<User> {
    let role = serde_json::from_value(serde_json::Value::String(role.clone())).map_err(|_| {
        Error::Corrupt {
            key: format!("users/{name}"),
            reason: format!("unknown role {role:?}"),
        }
    })?;
    Ok(User {
        name,
        role,
        password_hash,
        created_ms,
    })
}

/// Reads users by a `SELECT name, role, password_hash, created_ms ...`.
fn query_users(
    c: &Connection,
    path: &Path,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<User>> {
    let mut stmt = c
        .prepare_cached(sql)
        .map_err(|e| sql_error(path, "read users", e))?;
    let rows: Vec<(String, String, String, i64)> = stmt
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .and_then(|m| m.collect())
        .map_err(|e| sql_error(path, "read users", e))?;
    rows.into_iter()
        .map(|(n, r, h, ms)| decode_user(n, r, h, ms))
        .collect()
}

/// SQL for the text field `field` of the JSON record `record`, or `''` when
/// the record is not JSON or has no such field.
fn json_text(record: &str, field: &str) -> String {
    format!(
        "COALESCE(CASE WHEN json_valid({record}) THEN json_extract({record}, '$.{field}') END, '')"
    )
}

/// An FTS5 query for `words` (from [`super::search_words`]): each one as a
/// quoted prefix, all required. The words hold only letters and digits, so
/// quoting needs no escapes.
fn fts_query(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("\"{w}\"*"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The partial index over active videos; [`ACTIVE_WHERE`] is its condition.
const ACTIVE_INDEX: &str = "CREATE INDEX IF NOT EXISTS videos_active ON videos (id)
     WHERE (CASE WHEN json_valid(record) THEN json_extract(record, '$.state.state') END)
         IN ('uploaded', 'processing', 'deleting');";

/// The condition of the `videos_active` index, word for word (SQLite uses a
/// partial index only for a query with the same condition).
/// A record that is not JSON is in no phase (it reads as corrupt, naming its
/// key, rather than failing every write).
const ACTIVE_WHERE: &str =
    "(CASE WHEN json_valid(record) THEN json_extract(record, '$.state.state') END)
         IN ('uploaded', 'processing', 'deleting')";

/// A ring hash as SQLite's signed integer, with the top bit flipped so that
/// signed order equals the unsigned order of the hashes.
fn ordered_hash(h: u64) -> i64 {
    (h ^ (1 << 63)) as i64
}

fn sql_error(path: &Path, what: &str, e: rusqlite::Error) -> Error {
    let msg = match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::DatabaseBusy
                || f.code == rusqlite::ErrorCode::DatabaseLocked =>
        {
            format!(
                "{}: cannot {what}: the database is locked by another process",
                path.display()
            )
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ReadOnly => {
            format!(
                "{}: cannot {what}: the database is read-only",
                path.display()
            )
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            format!(
                "{}: cannot {what}: the file is not a SQLite database",
                path.display()
            )
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
            format!(
                "{}: cannot {what}: the file cannot be opened (does its directory exist?)",
                path.display()
            )
        }
        _ => format!("{}: cannot {what}: {e}", path.display()),
    };
    Error::backend("sqlite", msg, e)
}

fn decode_video(id: &str, json: &str) -> Result<Video> {
    let v: Video = serde_json::from_str(json).map_err(|e| Error::Corrupt {
        key: format!("videos/{id}"),
        reason: e.to_string(),
    })?;
    if v.id.as_str() != id {
        return Err(Error::Corrupt {
            key: format!("videos/{id}"),
            reason: format!("the record's id is {:?}", v.id.as_str()),
        });
    }
    Ok(v)
}

/// A video's record as stored (the text, for compare-and-set) and decoded.
fn read_video(c: &Connection, path: &Path, id: &VideoId) -> Result<(String, Video)> {
    let json: Option<String> = c
        .query_row(
            "SELECT record FROM videos WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| sql_error(path, "read", e))?;
    let Some(json) = json else {
        return Err(Error::not_found(format!("video {id}")));
    };
    let v = decode_video(id.as_str(), &json)?;
    Ok((json, v))
}

fn cursor_of(v: &Video) -> String {
    format!("{}:{}", v.uploaded_at_ms, v.id)
}

fn parse_cursor(c: &str) -> Result<(i64, String)> {
    c.split_once(':')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_string())))
        .ok_or_else(|| {
            Error::invalid(
                "page cursor",
                c,
                "expected the `next` value of a previous page",
            )
        })
}

/// Decodes one `file_records` row; a bad row is [`Error::Corrupt`] naming it.
fn decode_file(key: String, size: i64, sha256: Vec<u8>) -> Result<FileRecord> {
    let corrupt = |reason: String| Error::Corrupt {
        key: format!("file_records/{key}"),
        reason,
    };
    let parsed = key
        .parse::<ContentKey>()
        .map_err(|e| corrupt(e.to_string()))?;
    let sha256 = Sha256Digest::from_slice(&sha256)
        .ok_or_else(|| corrupt(format!("sha256 is {} bytes, expected 32", sha256.len())))?;
    Ok(FileRecord {
        key: parsed,
        // Stored as the same 64 bits, so sizes past i64::MAX round-trip.
        size: size as u64,
        sha256,
    })
}

/// Runs a `SELECT key, size, sha256 ...` and decodes its rows.
fn query_files(
    c: &Connection,
    path: &Path,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<FileRecord>> {
    let mut stmt = c
        .prepare_cached(sql)
        .map_err(|e| sql_error(path, "read file records", e))?;
    let rows: Vec<(String, i64, Vec<u8>)> = stmt
        .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|m| m.collect())
        .map_err(|e| sql_error(path, "read file records", e))?;
    rows.into_iter()
        .map(|(k, size, sha)| decode_file(k, size, sha))
        .collect()
}

/// One `file_records` row to write.
struct FileRow {
    key: String,
    video: String,
    ring_hash: i64,
    size: i64,
    sha256: [u8; 32],
}

impl From<&FileRecord> for FileRow {
    fn from(f: &FileRecord) -> Self {
        FileRow {
            key: f.key.as_str().to_string(),
            video: f.key.video().as_str().to_string(),
            ring_hash: ordered_hash(key_hash(f.key.as_str())),
            size: f.size as i64,
            sha256: f.sha256.0,
        }
    }
}

fn write_files(c: &mut Connection, path: &Path, rows: &[FileRow]) -> Result<()> {
    let err = |e| sql_error(path, "record files", e);
    let tx = c.transaction().map_err(err)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO file_records (key, video, ring_hash, size, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(key) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
            )
            .map_err(err)?;
        for r in rows {
            stmt.execute(params![r.key, r.video, r.ring_hash, r.size, &r.sha256[..]])
                .map_err(err)?;
        }
    }
    tx.commit().map_err(|e| sql_error(path, "commit", e))
}

impl SqliteMetadataStore {
    async fn update_video(
        &self,
        id: &VideoId,
        f: impl FnOnce(&mut Video) + Send + 'static,
    ) -> Result<()> {
        let id = id.clone();
        let path = self.path.clone();
        self.call("update video", move |c| {
            let tx = c.transaction().map_err(|e| sql_error(&path, "update", e))?;
            let json: Option<String> = tx
                .query_row(
                    "SELECT record FROM videos WHERE id = ?1",
                    [id.as_str()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| sql_error(&path, "read", e))?;
            let Some(json) = json else {
                return Err(Error::not_found(format!("video {id}")));
            };
            let mut v = decode_video(id.as_str(), &json)?;
            f(&mut v);
            let json =
                serde_json::to_string(&v).map_err(|e| Error::backend("sqlite", "encode", e))?;
            tx.execute(
                "UPDATE videos SET record = ?1 WHERE id = ?2",
                params![json, id.as_str()],
            )
            .map_err(|e| sql_error(&path, "update", e))?;
            tx.commit().map_err(|e| sql_error(&path, "commit", e))
        })
        .await
    }
}

#[async_trait]
impl MetadataStore for SqliteMetadataStore {
    async fn create_video(&self, video: &Video) -> Result<()> {
        let v = video.clone();
        let path = self.path.clone();
        let json = serde_json::to_string(&v).map_err(|e| Error::backend("sqlite", "encode", e))?;
        self.call("create video", move |c| {
            let n = c
                .execute(
                    "INSERT INTO videos (id, uploaded_at_ms, record) VALUES (?1, ?2, ?3) ON CONFLICT(id) DO NOTHING",
                    params![v.id.as_str(), v.uploaded_at_ms, json],
                )
                .map_err(|e| sql_error(&path, "create a video", e))?;
            if n == 0 {
                return Err(Error::AlreadyExists { key: format!("video {}", v.id) });
            }
            Ok(())
        })
        .await
    }

    async fn next_generation(&self, id: &VideoId) -> Result<u64> {
        let name = format!("generation/{id}");
        let path = self.path.clone();
        self.call("next generation", move |c| {
            c.query_row(
                "INSERT INTO counters (name, value) VALUES (?1, 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1
                 RETURNING value",
                [name.as_str()],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| v as u64)
            .map_err(|e| sql_error(&path, "count a generation", e))
        })
        .await
    }

    async fn get_video(&self, id: &VideoId) -> Result<Video> {
        let id = id.clone();
        let path = self.path.clone();
        self.call("get video", move |c| {
            read_video(c, &path, &id).map(|(_, v)| v)
        })
        .await
    }

    async fn list_videos(&self, page: PageRequest) -> Result<VideoPage> {
        let limit = if page.limit == 0 {
            100
        } else {
            page.limit.min(1000)
        };
        let after = page.cursor.as_deref().map(parse_cursor).transpose()?;
        let path = self.path.clone();
        self.call("list videos", move |c| {
            let (ms, id) = after.unwrap_or((i64::MAX, String::new()));
            let first = page.cursor.is_none();
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, record FROM videos
                     WHERE ?1 OR uploaded_at_ms < ?2 OR (uploaded_at_ms = ?2 AND id > ?3)
                     ORDER BY uploaded_at_ms DESC, id ASC LIMIT ?4",
                )
                .map_err(|e| sql_error(&path, "list", e))?;
            let rows: Vec<(String, String)> = stmt
                .query_map(params![first, ms, id, (limit + 1) as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .and_then(|m| m.collect())
                .map_err(|e| sql_error(&path, "list", e))?;
            let more = rows.len() > limit;
            let mut videos = Vec::new();
            for (id, json) in rows.into_iter().take(limit) {
                match decode_video(&id, &json) {
                    Ok(v) => videos.push(v),
                    // One bad row must not hide every other video.
                    Err(e) => tracing::warn!(error = %e, "skipping a corrupt video record"),
                }
            }
            let next = if more {
                videos.last().map(cursor_of)
            } else {
                None
            };
            Ok(VideoPage { videos, next })
        })
        .await
    }

    async fn search_videos(&self, request: &SearchRequest) -> Result<SearchPage> {
        let limit = request.page_size();
        let words = super::search_words(&request.query);
        let query = (!words.is_empty()).then(|| fts_query(&words));
        let (ms, after_id) = match &request.cursor {
            Some(c) => (c.uploaded_at_ms, c.id.clone()),
            None => (i64::MAX, String::new()),
        };
        let first = request.cursor.is_none();
        let path = self.path.clone();
        self.call("search videos", move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, uploaded_at_ms, record FROM videos
                     WHERE (?1 OR uploaded_at_ms < ?2 OR (uploaded_at_ms = ?2 AND id > ?3))
                       AND (?4 IS NULL OR rowid IN
                            (SELECT rowid FROM videos_search WHERE videos_search MATCH ?4))
                     ORDER BY uploaded_at_ms DESC, id ASC LIMIT ?5",
                )
                .map_err(|e| sql_error(&path, "search", e))?;
            let rows: Vec<(String, i64, String)> = stmt
                .query_map(
                    params![first, ms, after_id, query, (limit + 1) as i64],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .and_then(|m| m.collect())
                .map_err(|e| sql_error(&path, "search", e))?;
            let more = rows.len() > limit;
            let mut videos = Vec::new();
            let mut last = None;
            for (id, uploaded_at_ms, json) in rows.into_iter().take(limit) {
                match decode_video(&id, &json) {
                    Ok(v) => videos.push(v),
                    // One bad row must not hide every other video.
                    Err(e) => tracing::warn!(error = %e, "skipping a corrupt video record"),
                }
                last = Some(PageCursor { uploaded_at_ms, id });
            }
            Ok(SearchPage {
                videos,
                next: if more { last } else { None },
            })
        })
        .await
    }

    async fn set_video_state(&self, id: &VideoId, state: VideoState) -> Result<()> {
        self.update_video(id, move |v| v.state = state).await
    }

    async fn set_video_facts(&self, id: &VideoId, facts: &VideoFacts) -> Result<()> {
        let facts = facts.clone();
        self.update_video(id, move |v| v.facts = facts).await
    }

    async fn delete_video(&self, id: &VideoId) -> Result<()> {
        let id = id.clone();
        let path = self.path.clone();
        self.call("delete video", move |c| {
            let n = c
                .execute("DELETE FROM videos WHERE id = ?1", [id.as_str()])
                .map_err(|e| sql_error(&path, "delete a video", e))?;
            if n == 0 {
                return Err(Error::not_found(format!("video {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn change_video(
        &self,
        id: &VideoId,
        change: &VideoChangeFn<'_>,
    ) -> Result<Option<Video>> {
        // Read, decide, then write only if the record is still the text that
        // was read: a compare-and-set that holds no lock while deciding.
        for _ in 0..64 {
            let (old_json, old) = {
                let id = id.clone();
                let path = self.path.clone();
                self.call("read video", move |c| read_video(c, &path, &id))
                    .await?
            };
            let decision = change(&old)?;
            let new = match &decision {
                VideoChange::Put(v) => {
                    if v.id != *id {
                        return Err(Error::invalid(
                            "video change",
                            id.as_str(),
                            "a change cannot rename a video",
                        ));
                    }
                    Some(
                        serde_json::to_string(v)
                            .map_err(|e| Error::backend("sqlite", "encode", e))?,
                    )
                }
                VideoChange::Delete => None,
            };
            let written = {
                let id = id.clone();
                let path = self.path.clone();
                self.call("change video", move |c| {
                    let n = match new {
                        Some(json) => c.execute(
                            "UPDATE videos SET record = ?1 WHERE id = ?2 AND record = ?3",
                            params![json, id.as_str(), old_json],
                        ),
                        None => c.execute(
                            "DELETE FROM videos WHERE id = ?1 AND record = ?2",
                            params![id.as_str(), old_json],
                        ),
                    }
                    .map_err(|e| sql_error(&path, "change a video", e))?;
                    Ok(n == 1)
                })
                .await?
            };
            if written {
                return Ok(match decision {
                    VideoChange::Put(v) => Some(v),
                    VideoChange::Delete => None,
                });
            }
        }
        Err(Error::Conflict {
            key: format!("video {id}"),
            reason: "too many concurrent changes".into(),
        })
    }

    async fn list_active_videos(&self, limit: usize) -> Result<Vec<Video>> {
        let path = self.path.clone();
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.call("list active videos", move |c| {
            let sql =
                format!("SELECT id, record FROM videos WHERE {ACTIVE_WHERE} ORDER BY id LIMIT ?1");
            let mut stmt = c
                .prepare_cached(&sql)
                .map_err(|e| sql_error(&path, "list active videos", e))?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| sql_error(&path, "list active videos", e))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, json) = row.map_err(|e| sql_error(&path, "list active videos", e))?;
                out.push(decode_video(&id, &json)?);
            }
            Ok(out)
        })
        .await
    }

    async fn forget_file_records(&self, keys: &[ContentKey]) -> Result<u64> {
        let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_string()).collect();
        let path = self.path.clone();
        self.call("forget file records", move |c| {
            let tx = c
                .transaction()
                .map_err(|e| sql_error(&path, "forget file records", e))?;
            let mut n = 0u64;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM file_records WHERE key = ?1")
                    .map_err(|e| sql_error(&path, "forget file records", e))?;
                for k in &keys {
                    n += stmt
                        .execute([k])
                        .map_err(|e| sql_error(&path, "forget file records", e))?
                        as u64;
                }
            }
            tx.commit().map_err(|e| sql_error(&path, "commit", e))?;
            Ok(n)
        })
        .await
    }

    async fn record_files(&self, files: &[FileRecord]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let rows: Vec<FileRow> = files.iter().map(FileRow::from).collect();
        let path = self.path.clone();
        self.call("record files", move |c| write_files(c, &path, &rows))
            .await
    }

    async fn file_record(&self, key: &ContentKey) -> Result<Option<FileRecord>> {
        let key = key.as_str().to_string();
        let path = self.path.clone();
        self.call("read file record", move |c| {
            let sql = "SELECT key, size, sha256 FROM file_records WHERE key = ?1";
            Ok(query_files(c, &path, sql, [key])?.pop())
        })
        .await
    }

    async fn file_records(
        &self,
        range: HashRange,
        after: Option<&ContentKey>,
        limit: usize,
    ) -> Result<Vec<FileRecord>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let limit = match limit {
            0 => DEFAULT_FILE_RECORDS_LIMIT,
            n => n,
        };
        // A non-empty range's `end` is above `start`, so `end - 1` (the
        // inclusive top) cannot underflow.
        let hi = ordered_hash(range.end.map_or(u64::MAX, |e| e - 1));
        // One row-value lower bound, so SQLite seeks straight to it in the
        // index: every key is above "" at the range's first hash, and the
        // cursor, when later, is the bound instead.
        let mut lower = (ordered_hash(range.start), String::new());
        if let Some(k) = after {
            lower = lower.max((ordered_hash(key_hash(k.as_str())), k.as_str().to_string()));
        }
        let path = self.path.clone();
        self.call("list file records", move |c| {
            let sql = "SELECT key, size, sha256 FROM file_records
                       WHERE (ring_hash, key) > (?1, ?2) AND ring_hash <= ?3
                       ORDER BY ring_hash, key LIMIT ?4";
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            query_files(c, &path, sql, params![lower.0, lower.1, hi, limit])
        })
        .await
    }

    async fn video_file_records(&self, video: &VideoId) -> Result<Vec<FileRecord>> {
        let video = video.as_str().to_string();
        let path = self.path.clone();
        self.call("list a video's file records", move |c| {
            let sql = "SELECT key, size, sha256 FROM file_records WHERE video = ?1 ORDER BY key";
            query_files(c, &path, sql, [video])
        })
        .await
    }

    async fn delete_file_records(&self, video: &VideoId) -> Result<u64> {
        let video = video.as_str().to_string();
        let path = self.path.clone();
        self.call("delete file records", move |c| {
            c.execute("DELETE FROM file_records WHERE video = ?1", [video])
                .map(|n| n as u64)
                .map_err(|e| sql_error(&path, "delete file records", e))
        })
        .await
    }

    async fn cluster_state(&self) -> Result<Option<Versioned<ClusterState>>> {
        let path = self.path.clone();
        self.call("read cluster state", move |c| {
            let row: Option<(i64, String)> = c
                .query_row("SELECT version, state FROM cluster WHERE k = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(|e| sql_error(&path, "read the cluster state", e))?;
            row.map(|(version, json)| {
                let value = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
                    key: "cluster".into(),
                    reason: e.to_string(),
                })?;
                Ok(Versioned {
                    value,
                    version: version as u64,
                })
            })
            .transpose()
        })
        .await
    }

    async fn put_cluster_state(&self, expected: Option<u64>, state: &ClusterState) -> Result<u64> {
        let json =
            serde_json::to_string(state).map_err(|e| Error::backend("sqlite", "encode", e))?;
        let path = self.path.clone();
        self.call("write cluster state", move |c| {
            let tx = c.transaction().map_err(|e| sql_error(&path, "write", e))?;
            let current: Option<i64> = tx
                .query_row("SELECT version FROM cluster WHERE k = 1", [], |r| r.get(0))
                .optional()
                .map_err(|e| sql_error(&path, "read the cluster state", e))?;
            if current.map(|v| v as u64) != expected {
                return Err(Error::Conflict {
                    key: "cluster".into(),
                    reason: format!("expected version {expected:?}, found {current:?}"),
                });
            }
            let next = current.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO cluster (k, version, state) VALUES (1, ?1, ?2)
                 ON CONFLICT(k) DO UPDATE SET version = excluded.version, state = excluded.state",
                params![next, json],
            )
            .map_err(|e| sql_error(&path, "write the cluster state", e))?;
            tx.commit().map_err(|e| sql_error(&path, "commit", e))?;
            Ok(next as u64)
        })
        .await
    }

    async fn wait_cluster_change(
        &self,
        known: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<Versioned<ClusterState>>> {
        // SQLite has no watch: poll the version, cheaply.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.cluster_state().await?;
            if now.as_ref().map(|v| v.version) != known || tokio::time::Instant::now() >= deadline {
                return Ok(now);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn put_cluster_ack(&self, ack: &ClusterAck) -> Result<()> {
        let ack = ack.clone();
        let path = self.path.clone();
        self.call("acknowledge the cluster state", move |c| {
            c.execute(
                "INSERT INTO cluster_acks (server, version, until_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(server) DO UPDATE SET version = ?2, until_ms = ?3",
                params![ack.server, ack.version as i64, ack.until_ms],
            )
            .map_err(|e| sql_error(&path, "acknowledge the cluster state", e))?;
            // Servers gone for an hour are forgotten.
            c.execute(
                "DELETE FROM cluster_acks WHERE until_ms < ?1",
                [now_ms() - 3_600_000],
            )
            .map_err(|e| sql_error(&path, "forget old acknowledgements", e))?;
            Ok(())
        })
        .await
    }

    async fn cluster_acks(&self) -> Result<Vec<ClusterAck>> {
        let path = self.path.clone();
        self.call("read acknowledgements", move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT server, version, until_ms FROM cluster_acks ORDER BY server",
                )
                .map_err(|e| sql_error(&path, "read acknowledgements", e))?;
            let rows = st
                .query_map([], |r| {
                    Ok(ClusterAck {
                        server: r.get(0)?,
                        version: r.get::<_, i64>(1)? as u64,
                        until_ms: r.get(2)?,
                    })
                })
                .map_err(|e| sql_error(&path, "read acknowledgements", e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| sql_error(&path, "read acknowledgements", e))
        })
        .await
    }

    async fn try_lock_admin(&self, holder: &str, ttl: Duration) -> Result<AdminLease> {
        let holder = holder.to_string();
        let path = self.path.clone();
        self.call("take admin lock", move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| sql_error(&path, "take the admin lock", e))?;
            let now = now_ms();
            let held: Option<(String, i64)> = tx
                .query_row("SELECT holder, expires_at_ms FROM admin_lock WHERE k = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(|e| sql_error(&path, "read the admin lock", e))?;
            if let Some((other, expires)) = held
                && expires > now
            {
                return Err(Error::Locked { holder: other });
            }
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('lock_token', 1)
                 ON CONFLICT(name) DO UPDATE SET value = value + 1",
                [],
            )
            .map_err(|e| sql_error(&path, "take the admin lock", e))?;
            let token: i64 = tx
                .query_row("SELECT value FROM counters WHERE name = 'lock_token'", [], |r| r.get(0))
                .map_err(|e| sql_error(&path, "take the admin lock", e))?;
            tx.execute(
                "INSERT INTO admin_lock (k, holder, token, expires_at_ms) VALUES (1, ?1, ?2, ?3)
                 ON CONFLICT(k) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at_ms = excluded.expires_at_ms",
                params![holder, token, now + ttl.as_millis() as i64],
            )
            .map_err(|e| sql_error(&path, "take the admin lock", e))?;
            tx.commit().map_err(|e| sql_error(&path, "commit", e))?;
            Ok(AdminLease { holder, token: token as u64, ttl })
        })
        .await
    }

    async fn renew_admin_lock(&self, lease: &AdminLease) -> Result<()> {
        let lease = lease.clone();
        let path = self.path.clone();
        self.call("renew admin lock", move |c| {
            let n = c
                .execute(
                    "UPDATE admin_lock SET expires_at_ms = ?1 WHERE k = 1 AND token = ?2",
                    params![now_ms() + lease.ttl.as_millis() as i64, lease.token as i64],
                )
                .map_err(|e| sql_error(&path, "renew the admin lock", e))?;
            if n == 0 {
                return Err(Error::Locked {
                    holder: "another process (this lock expired and was taken)".into(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn unlock_admin(&self, lease: &AdminLease) -> Result<()> {
        let token = lease.token as i64;
        let path = self.path.clone();
        self.call("release admin lock", move |c| {
            c.execute("DELETE FROM admin_lock WHERE k = 1 AND token = ?1", [token])
                .map_err(|e| sql_error(&path, "release the admin lock", e))?;
            Ok(())
        })
        .await
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        validate_user_name(&user.name)?;
        let u = user.clone();
        let path = self.path.clone();
        self.call("create user", move |c| {
            let n = c
                .execute(
                    "INSERT INTO users (name, role, password_hash, created_ms)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                    params![u.name, u.role.name(), u.password_hash, u.created_ms],
                )
                .map_err(|e| sql_error(&path, "create a user", e))?;
            if n == 0 {
                return Err(Error::AlreadyExists {
                    key: format!("user {}", u.name),
                });
            }
            Ok(())
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<User>> {
        validate_user_name(name)?;
        let name = name.to_string();
        let path = self.path.clone();
        self.call("read user", move |c| {
            let sql = "SELECT name, role, password_hash, created_ms FROM users WHERE name = ?1";
            Ok(query_users(c, &path, sql, [name])?.pop())
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let path = self.path.clone();
        self.call("list users", move |c| {
            let sql = "SELECT name, role, password_hash, created_ms FROM users ORDER BY name";
            query_users(c, &path, sql, [])
        })
        .await
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()> {
        validate_user_name(name)?;
        let (name, hash) = (name.to_string(), password_hash.to_string());
        let path = self.path.clone();
        self.call("set password", move |c| {
            let err = |e| sql_error(&path, "set a password", e);
            let tx = c.transaction().map_err(err)?;
            let n = tx
                .execute(
                    "UPDATE users SET password_hash = ?1 WHERE name = ?2",
                    params![hash, name],
                )
                .map_err(err)?;
            if n == 0 {
                return Err(Error::not_found(format!("user {name}")));
            }
            tx.execute("DELETE FROM sessions WHERE user = ?1", [&name])
                .map_err(err)?;
            tx.commit().map_err(|e| sql_error(&path, "commit", e))
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        validate_token_hash(&session.token_hash)?;
        validate_user_name(&session.user)?;
        let s = session.clone();
        let path = self.path.clone();
        self.call("create session", move |c| {
            // Lapsed sessions are forgotten as new ones come.
            c.execute("DELETE FROM sessions WHERE expires_ms < ?1", [now_ms()])
                .map_err(|e| sql_error(&path, "forget lapsed sessions", e))?;
            c.execute(
                "INSERT INTO sessions (token_hash, user, expires_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(token_hash) DO UPDATE SET user = ?2, expires_ms = ?3",
                params![s.token_hash, s.user, s.expires_ms],
            )
            .map_err(|e| sql_error(&path, "create a session", e))?;
            Ok(())
        })
        .await
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        validate_token_hash(token_hash)?;
        let hash = token_hash.to_string();
        let path = self.path.clone();
        self.call("read session", move |c| {
            c.query_row(
                "SELECT token_hash, user, expires_ms FROM sessions
                 WHERE token_hash = ?1 AND expires_ms > ?2",
                params![hash, now_ms()],
                |r| {
                    Ok(Session {
                        token_hash: r.get(0)?,
                        user: r.get(1)?,
                        expires_ms: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql_error(&path, "read a session", e))
        })
        .await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        validate_token_hash(token_hash)?;
        let hash = token_hash.to_string();
        let path = self.path.clone();
        self.call("delete session", move |c| {
            c.execute("DELETE FROM sessions WHERE token_hash = ?1", [hash])
                .map_err(|e| sql_error(&path, "delete a session", e))?;
            Ok(())
        })
        .await
    }
}
