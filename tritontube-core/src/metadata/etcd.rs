//! [`EtcdMetadataStore`]: metadata in etcd, for many web servers.
//!
//! Key layout, under a configurable prefix (default `/tritontube/`):
//!
//! | key | value |
//! |---|---|
//! | `<prefix>videos/<id>` | the video record, JSON |
//! | `<prefix>by-time/<inverted ms, 20 digits>/<id>` | the id; lists newest first in key order |
//! | `<prefix>cluster` | the cluster state, JSON; its `mod_revision` is its version |
//! | `<prefix>admin-lock` | `{"holder": .., "token": lease id}`, attached to a lease |
//! | `<prefix>files/<ring hash, 16 lower-case hex>/<videoId>/<file>` | `{"size": .., "sha256": "<hex>"}`; lists by ring range in key order |
//! | `<prefix>video-files/<videoId>/<file>` | the same record, for reading and deleting one video's |
//! | `<prefix>generation/<videoId>` | the last generation handed out for the id, decimal; kept after a delete |
//! | `<prefix>acks/<server>` | a web server's acknowledgement of the cluster state it routes by, JSON |
//! | `<prefix>active/<videoId>` | the id, while the video is in an active phase (uploaded, processing, deleting); written in the same transaction as the record |
//! | `<prefix>users/<name>` | an account ([`User`]), JSON |
//! | `<prefix>sessions/<token hash>` | a signed-in session ([`Session`]), JSON, attached to a lease that ends a little after it lapses |
//!
//! [`MetadataStore::search_videos`] has no index here: it walks `by-time/`
//! from the cursor, newest first, reading records 100 at a time and keeping
//! those that match, until the page is full or the videos run out. A search
//! that matches little reads every video's record; that is fine for the
//! thousands of videos a site of this kind holds, and the SQLite store
//! answers from a full-text index instead.
//!
//! A file record is written as both keys in one transaction (the hash is
//! fixed-width hex, so key order is `(hash, key)` order). etcd allows 128
//! operations per transaction by default, so `record_files` commits 64 files
//! per transaction.
//!
//! Create-if-absent and every read-modify-write are transactions comparing
//! revisions, so racing writers never overwrite each other. The admin lock is
//! a key created only if absent, bound to a lease: if its holder dies, the
//! lease expires and the key goes with it.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

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

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/tritontube/";

/// Files per `record_files` transaction: two keys each, within etcd's
/// default limit of 128 operations per transaction.
const FILES_PER_TXN: usize = 64;

/// Metadata in an etcd cluster.
#[derive(Clone)]
pub struct EtcdMetadataStore {
    client: Client,
    prefix: String,
    endpoints: String,
}

impl std::fmt::Debug for EtcdMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdMetadataStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl EtcdMetadataStore {
    /// Connects to the etcd cluster at `endpoints` (`host:port`, comma
    /// separated) with the default prefix. Fails within a few seconds with a
    /// clear error if no endpoint answers.
    pub async fn connect(endpoints: &str) -> Result<Self> {
        Self::connect_with_prefix(endpoints, DEFAULT_PREFIX).await
    }

    /// Connects with a key prefix of your own (several deployments can share
    /// one etcd cluster).
    pub async fn connect_with_prefix(endpoints: &str, prefix: &str) -> Result<Self> {
        let list: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                if e.contains("://") {
                    e.to_string()
                } else {
                    format!("http://{e}")
                }
            })
            .collect();
        if list.is_empty() {
            return Err(Error::invalid(
                "etcd endpoints",
                endpoints,
                "expected host:port[,host:port...]",
            ));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let unavailable = |reason: String| Error::Unavailable {
            what: format!("etcd at {endpoints}"),
            reason,
        };
        let mut client =
            tokio::time::timeout(Duration::from_secs(5), Client::connect(&list, Some(opts)))
                .await
                .map_err(|_| unavailable("no answer within 5s".into()))?
                .map_err(|e| unavailable(e.to_string()))?;
        // connect() may succeed lazily; ask something to be sure.
        tokio::time::timeout(Duration::from_secs(5), client.status())
            .await
            .map_err(|_| unavailable("no answer within 5s".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let mut prefix = prefix.to_string();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(EtcdMetadataStore {
            client,
            prefix,
            endpoints: endpoints.to_string(),
        })
    }

    fn video_key(&self, id: &str) -> String {
        format!("{}videos/{id}", self.prefix)
    }

    fn time_key(&self, ms: i64, id: &str) -> String {
        format!("{}by-time/{:020}/{id}", self.prefix, i64::MAX - ms.max(0))
    }

    fn cluster_key(&self) -> String {
        format!("{}cluster", self.prefix)
    }

    fn lock_key(&self) -> String {
        format!("{}admin-lock", self.prefix)
    }

    /// Where a file record lives in ring order.
    fn file_hash_key(&self, key: &ContentKey) -> String {
        self.hash_bound(key_hash(key.as_str())) + key.as_str()
    }

    /// `<prefix>files/<hash>/`: below every record of that hash and above
    /// every record of lower hashes.
    fn hash_bound(&self, hash: u64) -> String {
        format!("{}files/{hash:016x}/", self.prefix)
    }

    /// Where a file record lives among its video's.
    fn video_file_key(&self, key: &ContentKey) -> String {
        format!("{}video-files/{}", self.prefix, key.as_str())
    }

    /// Decodes the record stored at `etcd_key` (either layout).
    fn decode_file(&self, etcd_key: &[u8], value: &[u8]) -> Result<FileRecord> {
        let name = String::from_utf8_lossy(etcd_key).into_owned();
        let corrupt = |reason: String| Error::Corrupt {
            key: name.clone(),
            reason,
        };
        let key = self.file_key_of(&name).map_err(corrupt)?;
        let v: FileValue = serde_json::from_slice(value).map_err(|e| corrupt(e.to_string()))?;
        let sha256 = Sha256Digest::from_hex(&v.sha256)
            .ok_or_else(|| corrupt(format!("sha256 {:?} is not 64 hex digits", v.sha256)))?;
        Ok(FileRecord {
            key,
            size: v.size,
            sha256,
        })
    }

    /// The content key named by a `files/` or `video-files/` key; for the
    /// former, its hash must be the key's.
    fn file_key_of(&self, name: &str) -> std::result::Result<ContentKey, String> {
        let rest = name.strip_prefix(&self.prefix).unwrap_or(name);
        if let Some(k) = rest.strip_prefix("video-files/") {
            return k.parse().map_err(|e: Error| e.to_string());
        }
        let (hash, k) = rest
            .strip_prefix("files/")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(|| "not a file record key".to_string())?;
        let key: ContentKey = k.parse().map_err(|e: Error| e.to_string())?;
        let want = format!("{:016x}", key_hash(key.as_str()));
        if hash != want {
            return Err(format!("filed under hash {hash}, but its hash is {want}"));
        }
        Ok(key)
    }

    fn err(&self, what: &str, e: etcd_client::Error) -> Error {
        Error::Unavailable {
            what: format!("etcd at {}", self.endpoints),
            reason: format!("{what}: {e}"),
        }
    }

    /// Runs one request, retrying a few times on transport errors: the
    /// client spreads requests over the endpoints, so a retry reaches another
    /// member when one is down.
    async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.retry_told(what, f).await.map(|(v, _)| v)
    }

    /// As [`Self::retry`], and says whether an earlier attempt failed: then
    /// that attempt may have been applied although its answer was lost.
    async fn retry_told<T, F, Fut>(&self, what: &str, f: F) -> Result<(T, bool)>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for attempt in 0..6 {
            match f(self.client.clone()).await {
                Ok(v) => return Ok((v, last.is_some())),
                Err(
                    e @ (etcd_client::Error::TransportError(_) | etcd_client::Error::GRpcStatus(_)),
                ) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                }
                Err(e) => return Err(self.err(what, e)),
            }
        }
        Err(self.err(what, last.expect("at least one attempt")))
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<etcd_client::TxnResponse> {
        self.txn_told(what, txn).await.map(|(r, _)| r)
    }

    /// A transaction, and whether an earlier attempt of it may have been
    /// applied (see [`Self::retry_told`]).
    async fn txn_told(&self, what: &str, txn: Txn) -> Result<(etcd_client::TxnResponse, bool)> {
        self.retry_told(what, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// Whether `decision` on `key` is already what is stored: a retried
    /// request whose first attempt committed (its answer lost with a
    /// member) must not be taken for a lost race.
    async fn landed(&self, key: &str, decision: &VideoChange) -> Result<bool> {
        let now = self.get_raw(key).await?.map(|(b, _)| b);
        Ok(match decision {
            VideoChange::Put(v) => {
                let json =
                    serde_json::to_vec(v).map_err(|e| Error::backend("etcd", "encode", e))?;
                now == Some(json)
            }
            VideoChange::Delete => now.is_none(),
        })
    }

    async fn get_raw(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let r = self
            .retry("get", |mut c| async move { c.get(key, None).await })
            .await?;
        Ok(r.kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    fn decode_video(&self, id: &str, bytes: &[u8]) -> Result<Video> {
        let key = self.video_key(id);
        let v: Video = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            key: key.clone(),
            reason: e.to_string(),
        })?;
        if v.id.as_str() != id {
            return Err(Error::Corrupt {
                key,
                reason: format!("the record's id is {:?}", v.id.as_str()),
            });
        }
        Ok(v)
    }

    async fn update_video(&self, id: &VideoId, f: impl Fn(&mut Video) + Send + Sync) -> Result<()> {
        self.change_video(id, &|v: &Video| {
            let mut v = v.clone();
            f(&mut v);
            Ok(VideoChange::Put(v))
        })
        .await
        .map(|_| ())
    }

    fn active_key(&self, id: &str) -> String {
        format!("{}active/{id}", self.prefix)
    }

    /// Keeps `active/<id>` in step with the record written beside it.
    fn active_op(&self, v: &Video) -> TxnOp {
        let key = self.active_key(v.id.as_str());
        if v.state.phase().is_active() {
            TxnOp::put(key, v.id.as_str(), None)
        } else {
            TxnOp::delete(key, None)
        }
    }

    /// The keys and values of `[start, end)`, in key order, at most `limit`
    /// (0 = all).
    async fn range(
        &self,
        start: String,
        end: String,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(0))
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let r = self
            .retry("list", |mut c| {
                let (start, opts) = (start.clone(), opts.clone());
                async move { c.get(start, Some(opts)).await }
            })
            .await?;
        Ok(r.kvs()
            .iter()
            .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
            .collect())
    }

    /// Up to `n` videos in listing order from the `by-time/` key `start`
    /// on (inclusive), and the key to continue from (`None` at the end).
    /// Corrupt records are skipped, with a warning.
    async fn videos_from(&self, start: String, n: usize) -> Result<(Vec<Video>, Option<String>)> {
        let end = format!("{}by-time0", self.prefix);
        let index: Vec<(String, String)> = self
            .range(start, end, n)
            .await?
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).to_string(),
                    String::from_utf8_lossy(&v).to_string(),
                )
            })
            .collect();
        let resume = (index.len() == n).then(|| index.last().map(|(k, _)| format!("{k}\0")));
        let ops: Vec<TxnOp> = index
            .iter()
            .map(|(_, id)| TxnOp::get(self.video_key(id), None))
            .collect();
        let resp = self.txn("search", Txn::new().and_then(ops)).await?;
        let mut videos = Vec::new();
        for ((_, id), op) in index.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                match self.decode_video(id, kv.value()) {
                    Ok(v) => videos.push(v),
                    Err(e) => tracing::warn!(error = %e, "skipping a corrupt video record"),
                }
            }
        }
        Ok((videos, resume.flatten()))
    }

    /// `[start, end)` of the ring-ordered keys of `range` strictly after
    /// `after`, or `None` if that is empty.
    fn file_range_keys(
        &self,
        range: HashRange,
        after: Option<&ContentKey>,
    ) -> Option<(String, String)> {
        let mut start = self.hash_bound(range.start);
        if let Some(k) = after {
            // The least key above the cursor's own.
            let past = self.file_hash_key(k) + "\0";
            start = start.max(past);
        }
        let end = match range.end {
            Some(e) => self.hash_bound(e),
            // '0' follows '/': past every `files/` key.
            None => format!("{}files0", self.prefix),
        };
        (start < end).then_some((start, end))
    }

    /// Deletes the records of `keys` (`video-files/` keys) and their
    /// ring-ordered twins; returns how many `video-files/` keys went.
    async fn delete_file_keys(&self, keys: &[Vec<u8>]) -> Result<u64> {
        let mut deleted = 0;
        for chunk in keys.chunks(FILES_PER_TXN) {
            // The `video-files/` deletes first, so the first `chunk.len()`
            // responses count the records.
            let mut ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::delete(k.clone(), None))
                .collect();
            for k in chunk {
                // A key whose name is not a content key has no twin to find.
                if let Ok(key) = self.file_key_of(&String::from_utf8_lossy(k)) {
                    ops.push(TxnOp::delete(self.file_hash_key(&key), None));
                }
            }
            let r = self
                .txn("delete file records", Txn::new().and_then(ops))
                .await?;
            deleted += r
                .op_responses()
                .iter()
                .take(chunk.len())
                .map(|op| match op {
                    TxnOpResponse::Delete(d) => d.deleted() as u64,
                    _ => 0,
                })
                .sum::<u64>();
        }
        Ok(deleted)
    }
}

impl EtcdMetadataStore {
    fn user_key(&self, name: &str) -> String {
        format!("{}users/{name}", self.prefix)
    }

    fn session_key(&self, token_hash: &str) -> String {
        format!("{}sessions/{token_hash}", self.prefix)
    }

    /// Deletes every session of `user`. Sessions are keyed by token hash,
    /// so this reads them all: there are as many as signed-in browsers,
    /// and passwords change rarely.
    async fn end_sessions_of(&self, user: &str) -> Result<()> {
        let start = format!("{}sessions/", self.prefix);
        let end = format!("{}sessions0", self.prefix);
        for (k, v) in self.range(start, end, 0).await? {
            let theirs = serde_json::from_slice::<Session>(&v).is_ok_and(|s| s.user == user);
            if theirs {
                self.retry("end a session", |mut c| {
                    let k = k.clone();
                    async move { c.delete(k, None).await }
                })
                .await?;
            }
        }
        Ok(())
    }

    fn decode_user(&self, key: &[u8], value: &[u8]) -> Result<User> {
        serde_json::from_slice(value).map_err(|e| Error::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }
}

/// The value of both keys of a file record.
#[derive(serde::Serialize, serde::Deserialize)]
struct FileValue {
    size: u64,
    sha256: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LockRecord {
    holder: String,
    token: i64,
}

#[async_trait]
impl MetadataStore for EtcdMetadataStore {
    async fn create_video(&self, video: &Video) -> Result<()> {
        let key = self.video_key(video.id.as_str());
        let json = serde_json::to_vec(video).map_err(|e| Error::backend("etcd", "encode", e))?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![
                TxnOp::put(key, json.clone(), None),
                TxnOp::put(
                    self.time_key(video.uploaded_at_ms, video.id.as_str()),
                    video.id.as_str(),
                    None,
                ),
                self.active_op(video),
            ]);
        let (r, retried) = self.txn_told("create", txn).await?;
        if r.succeeded() {
            return Ok(());
        }
        // A retried request whose first attempt committed (its answer lost
        // with a member) finds its own record: that is success, not a
        // clash. Each upload of an id has a generation of its own, so no
        // other upload wrote the same bytes.
        let now = self.get_raw(&self.video_key(video.id.as_str())).await?;
        if retried && now.map(|(b, _)| b) == Some(json) {
            return Ok(());
        }
        Err(Error::AlreadyExists {
            key: format!("video {}", video.id),
        })
    }

    async fn next_generation(&self, id: &VideoId) -> Result<u64> {
        let key = format!("{}generation/{id}", self.prefix);
        // Compare-and-set on the counter's revision (0: not yet created).
        for _ in 0..32 {
            let (next, rev) = match self.get_raw(&key).await? {
                Some((bytes, rev)) => {
                    let n: u64 = std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| Error::Corrupt {
                            key: key.clone(),
                            reason: "not a number".into(),
                        })?;
                    (n + 1, rev)
                }
                None => (1, 0),
            };
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then(vec![TxnOp::put(key.clone(), next.to_string(), None)]);
            if self.txn("next generation", txn).await?.succeeded() {
                return Ok(next);
            }
        }
        Err(Error::Conflict {
            key: format!("generation counter of {id}"),
            reason: "too many concurrent uploads of this id".into(),
        })
    }

    async fn get_video(&self, id: &VideoId) -> Result<Video> {
        match self.get_raw(&self.video_key(id.as_str())).await? {
            Some((b, _)) => self.decode_video(id.as_str(), &b),
            None => Err(Error::not_found(format!("video {id}"))),
        }
    }

    async fn list_videos(&self, page: PageRequest) -> Result<VideoPage> {
        let limit = if page.limit == 0 {
            100
        } else {
            page.limit.min(1000)
        };
        let base = format!("{}by-time/", self.prefix);
        let start = match &page.cursor {
            Some(c) if c.starts_with(&base) => format!("{c}\0"),
            Some(c) => {
                return Err(Error::invalid(
                    "page cursor",
                    c,
                    "expected the `next` value of a previous page",
                ));
            }
            None => base.clone(),
        };
        let end = format!("{}by-time0", self.prefix);
        let opts = GetOptions::new()
            .with_range(end)
            .with_limit(limit as i64 + 1)
            .with_sort(SortTarget::Key, SortOrder::Ascend);
        let r = self
            .retry("list", |mut c| {
                let (start, opts) = (start.clone(), opts.clone());
                async move { c.get(start, Some(opts)).await }
            })
            .await?;
        let index: Vec<(String, String)> = r
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).to_string(),
                    String::from_utf8_lossy(kv.value()).to_string(),
                )
            })
            .collect();
        let more = index.len() > limit;
        let index: Vec<_> = index.into_iter().take(limit).collect();
        let ops: Vec<TxnOp> = index
            .iter()
            .map(|(_, id)| TxnOp::get(self.video_key(id), None))
            .collect();
        let resp = self.txn("list", Txn::new().and_then(ops)).await?;
        let mut videos = Vec::new();
        for ((_, id), op) in index.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
            {
                match self.decode_video(id, kv.value()) {
                    Ok(v) => videos.push(v),
                    Err(e) => tracing::warn!(error = %e, "skipping a corrupt video record"),
                }
            }
        }
        let next = if more {
            index.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Ok(VideoPage { videos, next })
    }

    async fn search_videos(&self, request: &SearchRequest) -> Result<SearchPage> {
        /// Records read per round trip (within etcd's 128 operations per
        /// transaction).
        const BATCH: usize = 100;
        let limit = request.page_size();
        let words = super::search_words(&request.query);
        let mut start = match &request.cursor {
            Some(c) => format!("{}\0", self.time_key(c.uploaded_at_ms, &c.id)),
            None => format!("{}by-time/", self.prefix),
        };
        let mut videos = Vec::new();
        loop {
            let (batch, resume) = self.videos_from(start, BATCH).await?;
            for v in batch {
                if !super::matches_search(&v, &words) {
                    continue;
                }
                if videos.len() == limit {
                    let next = videos.last().map(PageCursor::after);
                    return Ok(SearchPage { videos, next });
                }
                videos.push(v);
            }
            match resume {
                Some(r) => start = r,
                None => return Ok(SearchPage { videos, next: None }),
            }
        }
    }

    async fn set_video_state(&self, id: &VideoId, state: VideoState) -> Result<()> {
        self.update_video(id, |v| v.state = state.clone()).await
    }

    async fn set_video_facts(&self, id: &VideoId, facts: &VideoFacts) -> Result<()> {
        self.update_video(id, |v| v.facts = facts.clone()).await
    }

    async fn delete_video(&self, id: &VideoId) -> Result<()> {
        let key = self.video_key(id.as_str());
        let Some((bytes, rev)) = self.get_raw(&key).await? else {
            return Err(Error::not_found(format!("video {id}")));
        };
        // Even a corrupt record can be deleted; its index entry is found by
        // its time when readable.
        let mut ops = vec![
            TxnOp::delete(key.clone(), None),
            TxnOp::delete(self.active_key(id.as_str()), None),
        ];
        if let Ok(v) = self.decode_video(id.as_str(), &bytes) {
            ops.push(TxnOp::delete(
                self.time_key(v.uploaded_at_ms, id.as_str()),
                None,
            ));
        }
        let txn = Txn::new()
            .when(vec![Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then(ops);
        if self.txn("delete", txn).await?.succeeded() {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: format!("video {id}"),
                reason: "changed while being deleted".into(),
            })
        }
    }

    async fn change_video(
        &self,
        id: &VideoId,
        change: &VideoChangeFn<'_>,
    ) -> Result<Option<Video>> {
        let key = self.video_key(id.as_str());
        for _ in 0..64 {
            let Some((bytes, rev)) = self.get_raw(&key).await? else {
                return Err(Error::not_found(format!("video {id}")));
            };
            let old = self.decode_video(id.as_str(), &bytes)?;
            let decision = change(&old)?;
            let ops = match &decision {
                VideoChange::Put(v) => {
                    if v.id != *id || v.uploaded_at_ms != old.uploaded_at_ms {
                        return Err(Error::invalid(
                            "video change",
                            id.as_str(),
                            "a change cannot rename a video or move its upload time",
                        ));
                    }
                    let json =
                        serde_json::to_vec(v).map_err(|e| Error::backend("etcd", "encode", e))?;
                    vec![TxnOp::put(key.clone(), json, None), self.active_op(v)]
                }
                VideoChange::Delete => vec![
                    TxnOp::delete(key.clone(), None),
                    TxnOp::delete(self.active_key(id.as_str()), None),
                    TxnOp::delete(self.time_key(old.uploaded_at_ms, id.as_str()), None),
                ],
            };
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then(ops);
            let (r, retried) = self.txn_told("change video", txn).await?;
            if r.succeeded() || (retried && self.landed(&key, &decision).await?) {
                return Ok(match decision {
                    VideoChange::Put(v) => Some(v),
                    VideoChange::Delete => None,
                });
            }
        }
        Err(Error::Conflict {
            key,
            reason: "too many concurrent changes".into(),
        })
    }

    async fn list_active_videos(&self, limit: usize) -> Result<Vec<Video>> {
        let start = self.active_key("");
        let end = format!("{}active0", self.prefix);
        let ids = self.range(start, end, limit).await?;
        let mut out = Vec::with_capacity(ids.len());
        for (_, id) in ids {
            let id = String::from_utf8_lossy(&id).to_string();
            let vid = VideoId::new(id.clone()).map_err(|e| Error::Corrupt {
                key: self.active_key(&id),
                reason: e.to_string(),
            })?;
            match self.get_video(&vid).await {
                // Gone or finished between the two reads: not active now.
                Err(Error::NotFound { .. }) => {}
                Ok(v) if !v.state.phase().is_active() => {}
                other => out.push(other?),
            }
        }
        Ok(out)
    }

    async fn forget_file_records(&self, keys: &[ContentKey]) -> Result<u64> {
        let keys: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| self.video_file_key(k).into_bytes())
            .collect();
        self.delete_file_keys(&keys).await
    }

    async fn record_files(&self, files: &[FileRecord]) -> Result<()> {
        // etcd refuses a transaction that puts one key twice: keep the last
        // record of each key, as a sequence of writes would.
        let mut last = std::collections::HashMap::new();
        for f in files {
            last.insert(&f.key, f);
        }
        let files: Vec<&FileRecord> = last.into_values().collect();
        for chunk in files.chunks(FILES_PER_TXN) {
            let mut ops = Vec::with_capacity(chunk.len() * 2);
            for f in chunk {
                let json = serde_json::to_vec(&FileValue {
                    size: f.size,
                    sha256: f.sha256.to_hex(),
                })
                .map_err(|e| Error::backend("etcd", "encode", e))?;
                ops.push(TxnOp::put(self.file_hash_key(&f.key), json.clone(), None));
                ops.push(TxnOp::put(self.video_file_key(&f.key), json, None));
            }
            self.txn("record files", Txn::new().and_then(ops)).await?;
        }
        Ok(())
    }

    async fn file_record(&self, key: &ContentKey) -> Result<Option<FileRecord>> {
        let name = self.video_file_key(key);
        self.get_raw(&name)
            .await?
            .map(|(value, _)| self.decode_file(name.as_bytes(), &value))
            .transpose()
    }

    async fn file_records(
        &self,
        range: HashRange,
        after: Option<&ContentKey>,
        limit: usize,
    ) -> Result<Vec<FileRecord>> {
        // An empty range has `end <= start`, so no keys either.
        let Some((start, end)) = self.file_range_keys(range, after) else {
            return Ok(Vec::new());
        };
        let limit = match limit {
            0 => DEFAULT_FILE_RECORDS_LIMIT,
            n => n,
        };
        self.range(start, end, limit)
            .await?
            .iter()
            .map(|(k, v)| self.decode_file(k, v))
            .collect()
    }

    async fn video_file_records(&self, video: &VideoId) -> Result<Vec<FileRecord>> {
        let start = format!("{}video-files/{video}/", self.prefix);
        // '0' follows '/': past every file of this video, before any other.
        let end = format!("{}video-files/{video}0", self.prefix);
        self.range(start, end, 0)
            .await?
            .iter()
            .map(|(k, v)| self.decode_file(k, v))
            .collect()
    }

    async fn delete_file_records(&self, video: &VideoId) -> Result<u64> {
        let start = format!("{}video-files/{video}/", self.prefix);
        let end = format!("{}video-files/{video}0", self.prefix);
        let keys: Vec<Vec<u8>> = self
            .range(start, end, 0)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.delete_file_keys(&keys).await
    }

    async fn cluster_state(&self) -> Result<Option<Versioned<ClusterState>>> {
        let key = self.cluster_key();
        match self.get_raw(&key).await? {
            None => Ok(None),
            Some((b, rev)) => {
                let value = serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
                    key,
                    reason: e.to_string(),
                })?;
                Ok(Some(Versioned {
                    value,
                    version: rev as u64,
                }))
            }
        }
    }

    async fn put_cluster_state(&self, expected: Option<u64>, state: &ClusterState) -> Result<u64> {
        let key = self.cluster_key();
        let json = serde_json::to_vec(state).map_err(|e| Error::backend("etcd", "encode", e))?;
        let cmp = match expected {
            None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Some(v) => Compare::mod_revision(key.clone(), CompareOp::Equal, v as i64),
        };
        let txn = Txn::new()
            .when(vec![cmp])
            .and_then(vec![TxnOp::put(key.clone(), json, None)]);
        let r = self.txn("write cluster state", txn).await?;
        if !r.succeeded() {
            return Err(Error::Conflict {
                key,
                reason: format!("expected version {expected:?}; it changed"),
            });
        }
        Ok(r.header().map(|h| h.revision() as u64).unwrap_or(0))
    }

    async fn wait_cluster_change(
        &self,
        known: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<Versioned<ClusterState>>> {
        let now = self.cluster_state().await?;
        if now.as_ref().map(|v| v.version) != known {
            return Ok(now);
        }
        let mut c = self.client.clone();
        let start = known.map(|v| v as i64 + 1).unwrap_or(0);
        let mut stream = c
            .watch(
                self.cluster_key(),
                Some(WatchOptions::new().with_start_revision(start)),
            )
            .await
            .map_err(|e| self.err("watch", e))?;
        let _ = tokio::time::timeout(timeout, async {
            while let Ok(Some(r)) = stream.message().await {
                if !r.events().is_empty() {
                    return;
                }
            }
        })
        .await;
        self.cluster_state().await
    }

    async fn put_cluster_ack(&self, ack: &ClusterAck) -> Result<()> {
        let key = format!("{}acks/{}", self.prefix, ack.server);
        let json = serde_json::to_vec(ack).map_err(|e| Error::backend("etcd", "encode", e))?;
        self.txn(
            "acknowledge the cluster state",
            Txn::new().and_then(vec![TxnOp::put(key, json, None)]),
        )
        .await?;
        Ok(())
    }

    async fn cluster_acks(&self) -> Result<Vec<ClusterAck>> {
        let start = format!("{}acks/", self.prefix);
        let end = format!("{}acks0", self.prefix);
        let cutoff = super::lifecycle::now_ms() - 3_600_000;
        let mut out = Vec::new();
        for (k, v) in self.range(start, end, 0).await? {
            let ack: ClusterAck = serde_json::from_slice(&v).map_err(|e| Error::Corrupt {
                key: String::from_utf8_lossy(&k).to_string(),
                reason: e.to_string(),
            })?;
            if ack.until_ms >= cutoff {
                out.push(ack);
            }
        }
        Ok(out)
    }

    async fn try_lock_admin(&self, holder: &str, ttl: Duration) -> Result<AdminLease> {
        let secs = ttl.as_secs().max(1) as i64;
        let lease = self
            .retry(
                "lease",
                |mut c| async move { c.lease_grant(secs, None).await },
            )
            .await?
            .id();
        let record = serde_json::to_vec(&LockRecord {
            holder: holder.to_string(),
            token: lease,
        })
        .map_err(|e| Error::backend("etcd", "encode", e))?;
        let key = self.lock_key();
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key.clone(),
                record,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )])
            .or_else(vec![TxnOp::get(key.clone(), None)]);
        let r = self.txn("lock", txn).await?;
        if r.succeeded() {
            return Ok(AdminLease {
                holder: holder.to_string(),
                token: lease as u64,
                ttl,
            });
        }
        let _ = self.client.clone().lease_revoke(lease).await;
        let other = r
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .and_then(|b| serde_json::from_slice::<LockRecord>(&b).ok())
            .map(|l| l.holder)
            .unwrap_or_else(|| "unknown".into());
        Err(Error::Locked { holder: other })
    }

    async fn renew_admin_lock(&self, lease: &AdminLease) -> Result<()> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c
            .lease_keep_alive(lease.token as i64)
            .await
            .map_err(|e| self.err("renew", e))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| self.err("renew", e))?;
        let alive = matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0);
        if !alive {
            return Err(Error::Locked {
                holder: "another process (this lock's lease expired)".into(),
            });
        }
        Ok(())
    }

    async fn unlock_admin(&self, lease: &AdminLease) -> Result<()> {
        let mut c = self.client.clone();
        // Revoking the lease deletes the lock key with it.
        let _ = c.lease_revoke(lease.token as i64).await;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        validate_user_name(&user.name)?;
        let key = self.user_key(&user.name);
        let json = serde_json::to_vec(user).map_err(|e| Error::backend("etcd", "encode", e))?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key, json, None)]);
        if self.txn("create user", txn).await?.succeeded() {
            Ok(())
        } else {
            Err(Error::AlreadyExists {
                key: format!("user {}", user.name),
            })
        }
    }

    async fn user(&self, name: &str) -> Result<Option<User>> {
        validate_user_name(name)?;
        let key = self.user_key(name);
        match self.get_raw(&key).await? {
            Some((b, _)) => self.decode_user(key.as_bytes(), &b).map(Some),
            None => Ok(None),
        }
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let start = format!("{}users/", self.prefix);
        let end = format!("{}users0", self.prefix);
        self.range(start, end, 0)
            .await?
            .iter()
            .map(|(k, v)| self.decode_user(k, v))
            .collect()
    }

    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()> {
        validate_user_name(name)?;
        let key = self.user_key(name);
        // Compare-and-set on the record's revision, so a racing change of
        // the same account is not overwritten.
        for _ in 0..32 {
            let Some((bytes, rev)) = self.get_raw(&key).await? else {
                return Err(Error::not_found(format!("user {name}")));
            };
            let mut user = self.decode_user(key.as_bytes(), &bytes)?;
            user.password_hash = password_hash.to_string();
            let json =
                serde_json::to_vec(&user).map_err(|e| Error::backend("etcd", "encode", e))?;
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    rev,
                )])
                .and_then(vec![TxnOp::put(key.clone(), json, None)]);
            if self.txn("set password", txn).await?.succeeded() {
                return self.end_sessions_of(name).await;
            }
        }
        Err(Error::Conflict {
            key: format!("user {name}"),
            reason: "too many concurrent changes".into(),
        })
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        validate_token_hash(&session.token_hash)?;
        validate_user_name(&session.user)?;
        let json = serde_json::to_vec(session).map_err(|e| Error::backend("etcd", "encode", e))?;
        // The lease outlives the session by a minute: reads check
        // `expires_ms` themselves, the lease only clears lapsed keys away.
        let secs = ((session.expires_ms - super::lifecycle::now_ms()) / 1000).max(0) + 60;
        let lease = self
            .retry(
                "lease",
                |mut c| async move { c.lease_grant(secs, None).await },
            )
            .await?
            .id();
        let key = self.session_key(&session.token_hash);
        let opts = etcd_client::PutOptions::new().with_lease(lease);
        self.retry("create session", |mut c| {
            let (key, json, opts) = (key.clone(), json.clone(), opts.clone());
            async move { c.put(key, json, Some(opts)).await }
        })
        .await?;
        Ok(())
    }

    async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
        validate_token_hash(token_hash)?;
        let key = self.session_key(token_hash);
        let Some((bytes, _)) = self.get_raw(&key).await? else {
            return Ok(None);
        };
        let s: Session = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            key,
            reason: e.to_string(),
        })?;
        Ok((s.expires_ms > super::lifecycle::now_ms()).then_some(s))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<()> {
        validate_token_hash(token_hash)?;
        let key = self.session_key(token_hash);
        self.retry("delete session", |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await?;
        Ok(())
    }
}
