//! What is known about videos and about the cluster: the [`MetadataStore`]
//! trait, its records, and its implementations (SQLite for one machine, etcd
//! for many).

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::id::{ContentKey, VideoId};
use crate::ring::HashRange;
use crate::store::Sha256Digest;

/// Where a video is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VideoState {
    /// Received, not yet being transcoded.
    Uploaded,
    /// Being transcoded; `progress` is a percentage from 0 to 100.
    Processing {
        /// Percent done.
        progress: f32,
    },
    /// Every file is stored; it can be played.
    Ready,
    /// Processing failed; nothing of it is stored.
    Failed {
        /// What went wrong, for a person to read.
        reason: String,
    },
    /// Being deleted: its job is cancelled and its files are being removed
    /// from every node; the record (and the id) goes once they are.
    Deleting,
}

impl VideoState {
    /// `"uploaded"`, `"processing"`, `"ready"`, `"failed"` or `"deleting"`.
    pub fn name(&self) -> &'static str {
        self.phase().name()
    }

    /// The state without its details.
    pub fn phase(&self) -> Phase {
        match self {
            VideoState::Uploaded => Phase::Uploaded,
            VideoState::Processing { .. } => Phase::Processing,
            VideoState::Ready => Phase::Ready,
            VideoState::Failed { .. } => Phase::Failed,
            VideoState::Deleting => Phase::Deleting,
        }
    }
}

/// A [`VideoState`] without its details: the steps of a video's life,
/// `uploaded → processing → ready | failed → deleting → gone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Received, not yet being transcoded.
    Uploaded,
    /// Being transcoded and stored.
    Processing,
    /// Playable.
    Ready,
    /// Processing failed.
    Failed,
    /// Its files are being removed.
    Deleting,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 5] = [
        Phase::Uploaded,
        Phase::Processing,
        Phase::Ready,
        Phase::Failed,
        Phase::Deleting,
    ];

    /// The phases in which someone has work to finish (a job or a purge),
    /// under a [`JobLease`].
    pub const ACTIVE: [Phase; 3] = [Phase::Uploaded, Phase::Processing, Phase::Deleting];

    /// Its name, as in the JSON API.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Uploaded => "uploaded",
            Phase::Processing => "processing",
            Phase::Ready => "ready",
            Phase::Failed => "failed",
            Phase::Deleting => "deleting",
        }
    }

    /// Whether work remains to be done in this phase.
    pub fn is_active(self) -> bool {
        Phase::ACTIVE.contains(&self)
    }
}

/// Who works on a video (runs its job, or purges it) and until when. A
/// holder renews it while working; once it lapses, another web server may
/// take the work over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLease {
    /// The web server holding it (its server id).
    pub holder: String,
    /// When it lapses, Unix milliseconds.
    pub until_ms: i64,
    /// How many times the work was taken over after its holder stopped
    /// (a job that keeps killing its servers is failed, not retried forever).
    #[serde(default)]
    pub attempts: u32,
}

/// One rung of the adaptive-bitrate ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    /// DASH representation id (`$RepresentationID$` in file names).
    pub id: String,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Target video bit rate in bits per second.
    pub bitrate: u64,
}

/// Facts learned while ingesting a video.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VideoFacts {
    /// Duration in seconds.
    pub duration_secs: f64,
    /// Source width in pixels.
    pub width: u32,
    /// Source height in pixels.
    pub height: u32,
    /// Whether the source has an audio stream.
    pub has_audio: bool,
    /// The ladder produced.
    pub renditions: Vec<Rendition>,
    /// Bytes of all stored files of the video.
    pub total_bytes: u64,
    /// Number of stored files.
    pub file_count: u64,
}

/// A video's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    /// Its id.
    pub id: VideoId,
    /// A title for people (defaults to the uploaded file's name).
    pub title: String,
    /// A description for people, given at upload (empty if none; records
    /// written before descriptions existed read as empty).
    #[serde(default)]
    pub description: String,
    /// Upload time, Unix milliseconds.
    pub uploaded_at_ms: i64,
    /// Where it is in its life.
    pub state: VideoState,
    /// Facts learned while ingesting.
    pub facts: VideoFacts,
    /// Which upload of this id it is (1 for the first). Its files are named
    /// after it ([`Video::file_name`]).
    #[serde(default = "first_generation")]
    pub generation: u64,
    /// Who works on it while it is in an active [`Phase`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<JobLease>,
    /// The name of the [`User`] who uploaded it; `None` for an anonymous
    /// upload (`--public-uploads`) and for records written before accounts
    /// existed. Such videos only admins may edit or delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn first_generation() -> u64 {
    1
}

impl Video {
    /// The stored name of one of this video's files: the course project's
    /// DASH name for the first generation (`manifest.mpd`,
    /// `chunk-0-00001.m4s`, ...), prefixed with `g<N>-` for a later upload
    /// under the same id, so that no URL ever names two different contents
    /// (segments are cached as immutable).
    ///
    /// ```
    /// use tritontube_core::metadata::Video;
    /// let mut v = Video::new("clip".parse().unwrap(), "Clip");
    /// assert_eq!(v.file_name("manifest.mpd"), "manifest.mpd");
    /// v.generation = 3;
    /// assert_eq!(v.file_name("manifest.mpd"), "g3-manifest.mpd");
    /// ```
    pub fn file_name(&self, base: &str) -> String {
        generation_file_name(self.generation, base)
    }
    /// A new record in state [`VideoState::Uploaded`], uploaded now.
    pub fn new(id: VideoId, title: impl Into<String>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Video {
            id,
            title: title.into(),
            description: String::new(),
            uploaded_at_ms: now,
            state: VideoState::Uploaded,
            facts: VideoFacts::default(),
            generation: 1,
            lease: None,
            owner: None,
        }
    }
}

/// The stored name of `base` for generation `generation` (see
/// [`Video::file_name`]).
pub fn generation_file_name(generation: u64, base: &str) -> String {
    if generation <= 1 {
        base.to_string()
    } else {
        format!("g{generation}-{base}")
    }
}

/// The generation a stored file name belongs to: `N` for a `g<N>-` name,
/// 1 for any other (the inverse of [`generation_file_name`]).
///
/// ```
/// use tritontube_core::metadata::{generation_file_name, generation_of_file_name};
/// assert_eq!(generation_of_file_name("manifest.mpd"), 1);
/// assert_eq!(generation_of_file_name(&generation_file_name(7, "poster.jpg")), 7);
/// assert_eq!(generation_of_file_name("g-x.m4s"), 1);
/// ```
pub fn generation_of_file_name(name: &str) -> u64 {
    name.strip_prefix('g')
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(n, _)| n.parse::<u64>().ok())
        .filter(|n| *n >= 2 && !name[1..].starts_with('0'))
        .unwrap_or(1)
}

/// What a [`MetadataStore::change_video`] step decides to do with the record
/// it was shown.
// Short-lived values, made once per step: boxing the record would cost
// more than the size it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum VideoChange {
    /// Write this record in its place.
    Put(Video),
    /// Remove the record (not its file records).
    Delete,
}

/// The decision of a [`MetadataStore::change_video`]: shown the stored
/// record, returns the change, or an error to change nothing.
pub type VideoChangeFn<'a> = dyn Fn(&Video) -> Result<VideoChange> + Send + Sync + 'a;

/// A page request for [`MetadataStore::list_videos`].
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// At most this many (0 = the store's default, 100).
    pub limit: usize,
    /// The `next` cursor of the previous page, or `None` for the first page.
    pub cursor: Option<String>,
}

/// A page of videos, newest first.
#[derive(Debug, Clone, Default)]
pub struct VideoPage {
    /// The videos of this page.
    pub videos: Vec<Video>,
    /// Cursor for the next page; `None` on the last.
    pub next: Option<String>,
}

/// Where a page of [`MetadataStore::search_videos`] starts: after the video
/// uploaded at `uploaded_at_ms` with id `id` in the listing order (newest
/// first, equal times by ascending id).
///
/// Sent to clients as an opaque string ([`PageCursor::encode`]). A cursor
/// names a position in that order, not an offset, so videos created while a
/// client pages (which are newer, so before the cursor) never make it see a
/// video twice or miss one.
///
/// ```
/// use tritontube_core::metadata::PageCursor;
/// let c = PageCursor { uploaded_at_ms: 1_700_000_000_000, id: "clip".into() };
/// assert_eq!(PageCursor::decode(&c.encode()).unwrap(), c);
/// assert!(PageCursor::decode("garbage").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// Upload time of the last video of the previous page.
    pub uploaded_at_ms: i64,
    /// Its id.
    pub id: String,
}

impl PageCursor {
    /// The cursor just after `v`.
    pub fn after(v: &Video) -> PageCursor {
        PageCursor {
            uploaded_at_ms: v.uploaded_at_ms,
            id: v.id.to_string(),
        }
    }

    /// The opaque form handed to clients.
    pub fn encode(&self) -> String {
        hex::encode(format!("c1:{}:{}", self.uploaded_at_ms, self.id))
    }

    /// Reads a cursor made by [`PageCursor::encode`]; anything else is
    /// [`crate::Error::InvalidInput`].
    pub fn decode(s: &str) -> Result<PageCursor> {
        let bad = || {
            crate::Error::invalid(
                "page cursor",
                s,
                "not a cursor this server handed out: pass the `next_cursor` of a previous page",
            )
        };
        let text = hex::decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)?;
        let (ms, id) = text
            .strip_prefix("c1:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(bad)?;
        let uploaded_at_ms = ms.parse().map_err(|_| bad())?;
        VideoId::new(id).map_err(|_| bad())?;
        Ok(PageCursor {
            uploaded_at_ms,
            id: id.to_string(),
        })
    }

    /// Whether `v` comes after this cursor in the listing order.
    pub fn precedes(&self, v: &Video) -> bool {
        v.uploaded_at_ms < self.uploaded_at_ms
            || (v.uploaded_at_ms == self.uploaded_at_ms && v.id.as_str() > self.id.as_str())
    }
}

/// A request for [`MetadataStore::search_videos`].
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// The words to find (see [`search_words`]); none finds every video.
    pub query: String,
    /// At most this many (0 = 100; more than 1000 = 1000).
    pub limit: usize,
    /// Where to start: the previous page's [`SearchPage::next`], or `None`
    /// for the first page.
    pub cursor: Option<PageCursor>,
}

impl SearchRequest {
    /// The page size asked for, within 1..=1000 (0 = 100).
    pub fn page_size(&self) -> usize {
        match self.limit {
            0 => 100,
            n => n.min(1000),
        }
    }
}

/// A page of [`MetadataStore::search_videos`], newest first.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    /// The videos of this page.
    pub videos: Vec<Video>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<PageCursor>,
}

/// The words of `text` as search sees them: runs of letters and digits
/// (anything else separates words), lower-cased. The same rule splits a
/// query and a video's title and description.
///
/// ```
/// use tritontube_core::metadata::search_words;
/// assert_eq!(search_words("Surf's up: Día_2!"), ["surf", "s", "up", "día", "2"]);
/// assert!(search_words(" -- ").is_empty());
/// ```
pub fn search_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `v` matches the query words `words` (from [`search_words`]):
/// every one of them begins some word of its title or description.
pub fn matches_search(v: &Video, words: &[String]) -> bool {
    if words.is_empty() {
        return true;
    }
    let mut have = search_words(&v.title);
    have.extend(search_words(&v.description));
    words
        .iter()
        .all(|w| have.iter().any(|h| h.starts_with(w.as_str())))
}

pub use crate::layout::{ChangeInfo, ClusterState, NodeEntry};

/// A value with the version it was read at, for compare-and-swap updates.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Opaque, increasing version of the stored value.
    pub version: u64,
}

/// A held cluster-wide admin lock. It expires `ttl` after it was taken or
/// last renewed, so a crashed holder does not block changes forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLease {
    /// Who holds it (free text: host, pid, purpose).
    pub holder: String,
    /// A token unique to this acquisition (fencing token).
    pub token: u64,
    /// How long it lasts without renewal.
    pub ttl: Duration,
}

/// A web server's word that it routes by a cluster state: it has applied
/// the state of `version` (writes go to its owners, and to a pending
/// change's owners too), and says so again before `until_ms`. A ring change
/// copies only once every live acknowledgement has reached the pending
/// state, and deletes surplus copies only once every one has reached the
/// committed state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAck {
    /// The web server (its server id).
    pub server: String,
    /// The cluster state version it has applied.
    pub version: u64,
    /// When the acknowledgement lapses, Unix milliseconds; a server whose
    /// acknowledgement lapsed is left out of the count, and refuses writes
    /// itself until it has caught up.
    pub until_ms: i64,
}

/// The recorded truth about one stored file: its size and SHA-256 as
/// measured when it was first stored. Replicas are checked against it, so it
/// lives apart from any one node's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The file's key; its ring hash (`key_hash(key.as_str())`) orders
    /// range listings.
    pub key: ContentKey,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Digest,
}

/// Stores what is known about videos and about the cluster.
///
/// # Contract
///
/// - `create_video` is create-if-absent in one atomic step: of two racing
///   creates of one id exactly one succeeds, the other fails with
///   [`crate::Error::AlreadyExists`].
/// - `get_video`, `update_video` and `delete_video` of an unknown id fail
///   with [`crate::Error::NotFound`].
/// - `list_videos` returns newest first (by `uploaded_at_ms`; equal times by
///   ascending id) and
///   pages through every video exactly once.
/// - `search_videos` returns, in the same order, the videos whose title or
///   description holds every word of the query as the start of one of its
///   words ([`matches_search`]; no words = every video), starting after the
///   request's [`PageCursor`]; following `next` pages through every match
///   exactly once, also while videos are created meanwhile (they are newer,
///   so before the cursor). A page may hold fewer than `limit` videos only
///   when it is the last (`next` is `None`).
/// - `cluster_state` is `None` until first written; `put_cluster_state`
///   succeeds only if the stored version still equals `expected` (`None` =
///   not yet written) and otherwise fails with [`crate::Error::Conflict`].
/// - `try_lock_admin` never queues: if another live holder has the lock it
///   fails at once with [`crate::Error::Locked`].
/// - `record_files` inserts or replaces (of one key given twice in a call,
///   the last wins); one call is atomic where the backend allows (SQLite:
///   one transaction; etcd: transactions of at most 64 files each, since
///   etcd allows 128 operations per transaction by default and each file is
///   two keys).
/// - `file_records` lists in `(key_hash(key), key)` order, strictly after the
///   cursor `after` (the last key of the previous page), so following the
///   cursor pages through a range exactly once; a `limit` of 0 means 1000.
/// - `video_file_records` is in file-name order.
/// - `delete_video` leaves a video's file records alone: callers forget them
///   explicitly with `delete_file_records` (once the bytes are gone).
/// - A record that cannot be decoded is reported as
///   [`crate::Error::Corrupt`] naming its key, never a panic.
#[async_trait]
pub trait MetadataStore: Debug + Send + Sync + 'static {
    /// Creates a video record if no record has its id.
    async fn create_video(&self, video: &Video) -> Result<()>;
    /// Reads a video record.
    async fn get_video(&self, id: &VideoId) -> Result<Video>;
    /// Lists videos, newest first.
    async fn list_videos(&self, page: PageRequest) -> Result<VideoPage>;
    /// Finds videos by words of their title or description, newest first,
    /// a page at a time (see the contract above).
    async fn search_videos(&self, request: &SearchRequest) -> Result<SearchPage>;
    /// Replaces a video's state.
    async fn set_video_state(&self, id: &VideoId, state: VideoState) -> Result<()>;
    /// Replaces a video's facts.
    async fn set_video_facts(&self, id: &VideoId, facts: &VideoFacts) -> Result<()>;
    /// Removes a video record (not its file records).
    async fn delete_video(&self, id: &VideoId) -> Result<()>;
    /// Compare-and-set of one video's record: `change` is shown the stored
    /// record and decides; its error changes nothing and is returned.
    /// Returns the record as written (`None` once deleted). An unknown id
    /// fails with [`crate::Error::NotFound`].
    async fn change_video(&self, id: &VideoId, change: &VideoChangeFn<'_>)
    -> Result<Option<Video>>;
    /// Videos in an active phase ([`Phase::ACTIVE`]: uploaded, processing,
    /// deleting), at most `limit` (0 = all), in id order: the work a web
    /// server may have to take over.
    async fn list_active_videos(&self, limit: usize) -> Result<Vec<Video>>;
    /// Hands out the next generation number of `id`: 1 the first time,
    /// then 2, 3, ... Atomic across processes, and never handed out twice,
    /// also after the video was deleted, so files of a later upload under a
    /// reused id never share a name with an earlier one's.
    async fn next_generation(&self, id: &VideoId) -> Result<u64>;

    /// Records files' checksums (insert or replace), all of one call
    /// atomically where the backend allows (etcd: in transactions of at most
    /// 64 files each).
    async fn record_files(&self, files: &[FileRecord]) -> Result<()>;
    /// The record of one file, if any.
    async fn file_record(&self, key: &ContentKey) -> Result<Option<FileRecord>>;
    /// Records whose ring hash `key_hash(key.as_str())` lies in `range`, in
    /// `(hash, key)` order, strictly after `after` (a cursor: the last key of
    /// the previous page, whose hash orders it), at most `limit` (0 = 1000).
    async fn file_records(
        &self,
        range: HashRange,
        after: Option<&ContentKey>,
        limit: usize,
    ) -> Result<Vec<FileRecord>>;
    /// Every record of one video, by file name.
    async fn video_file_records(&self, video: &VideoId) -> Result<Vec<FileRecord>>;
    /// Forgets every record of one video; returns how many were removed.
    async fn delete_file_records(&self, video: &VideoId) -> Result<u64>;
    /// Forgets the records of these files (those that exist); returns how
    /// many were removed.
    async fn forget_file_records(&self, keys: &[ContentKey]) -> Result<u64>;

    /// Reads the cluster state, if any was written.
    async fn cluster_state(&self) -> Result<Option<Versioned<ClusterState>>>;
    /// Writes the cluster state if its version is still `expected`; returns
    /// the new version.
    async fn put_cluster_state(&self, expected: Option<u64>, state: &ClusterState) -> Result<u64>;
    /// Waits until the cluster state's version differs from `known` (or
    /// `timeout` passes) and returns what is stored then.
    async fn wait_cluster_change(
        &self,
        known: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<Versioned<ClusterState>>>;

    /// Writes (replaces) a web server's acknowledgement.
    async fn put_cluster_ack(&self, ack: &ClusterAck) -> Result<()>;
    /// Every acknowledgement written in the last hour, lapsed ones
    /// included (older ones may be forgotten).
    async fn cluster_acks(&self) -> Result<Vec<ClusterAck>>;

    /// Takes the admin lock unless another live holder has it.
    async fn try_lock_admin(&self, holder: &str, ttl: Duration) -> Result<AdminLease>;
    /// Extends a held lock by its ttl; fails with [`crate::Error::Locked`] if
    /// it was lost (expired and taken by someone else).
    async fn renew_admin_lock(&self, lease: &AdminLease) -> Result<()>;
    /// Releases a held lock (no error if it had already expired).
    async fn unlock_admin(&self, lease: &AdminLease) -> Result<()>;

    /// Creates an account if no account has its name.
    async fn create_user(&self, user: &User) -> Result<()>;
    /// Reads an account, if there is one of that name.
    async fn user(&self, name: &str) -> Result<Option<User>>;
    /// Every account, by name.
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Replaces an account's password hash (a PHC string) and ends every
    /// session of the account.
    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()>;
    /// Records a signed-in session.
    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The live session of a token hash, if any.
    async fn session(&self, token_hash: &str) -> Result<Option<Session>>;
    /// Forgets a session (signing out).
    async fn delete_session(&self, token_hash: &str) -> Result<()>;
}

macro_rules! forward_metadata {
    ($t:ty) => {
        #[async_trait]
        impl<S: MetadataStore + ?Sized> MetadataStore for $t {
            async fn create_video(&self, video: &Video) -> Result<()> {
                (**self).create_video(video).await
            }
            async fn get_video(&self, id: &VideoId) -> Result<Video> {
                (**self).get_video(id).await
            }
            async fn list_videos(&self, page: PageRequest) -> Result<VideoPage> {
                (**self).list_videos(page).await
            }
            async fn search_videos(&self, request: &SearchRequest) -> Result<SearchPage> {
                (**self).search_videos(request).await
            }
            async fn set_video_state(&self, id: &VideoId, state: VideoState) -> Result<()> {
                (**self).set_video_state(id, state).await
            }
            async fn set_video_facts(&self, id: &VideoId, facts: &VideoFacts) -> Result<()> {
                (**self).set_video_facts(id, facts).await
            }
            async fn delete_video(&self, id: &VideoId) -> Result<()> {
                (**self).delete_video(id).await
            }
            async fn change_video(
                &self,
                id: &VideoId,
                change: &VideoChangeFn<'_>,
            ) -> Result<Option<Video>> {
                (**self).change_video(id, change).await
            }
            async fn list_active_videos(&self, limit: usize) -> Result<Vec<Video>> {
                (**self).list_active_videos(limit).await
            }
            async fn next_generation(&self, id: &VideoId) -> Result<u64> {
                (**self).next_generation(id).await
            }
            async fn record_files(&self, files: &[FileRecord]) -> Result<()> {
                (**self).record_files(files).await
            }
            async fn file_record(&self, key: &ContentKey) -> Result<Option<FileRecord>> {
                (**self).file_record(key).await
            }
            async fn file_records(
                &self,
                range: HashRange,
                after: Option<&ContentKey>,
                limit: usize,
            ) -> Result<Vec<FileRecord>> {
                (**self).file_records(range, after, limit).await
            }
            async fn video_file_records(&self, video: &VideoId) -> Result<Vec<FileRecord>> {
                (**self).video_file_records(video).await
            }
            async fn delete_file_records(&self, video: &VideoId) -> Result<u64> {
                (**self).delete_file_records(video).await
            }
            async fn forget_file_records(&self, keys: &[ContentKey]) -> Result<u64> {
                (**self).forget_file_records(keys).await
            }
            async fn cluster_state(&self) -> Result<Option<Versioned<ClusterState>>> {
                (**self).cluster_state().await
            }
            async fn put_cluster_state(
                &self,
                expected: Option<u64>,
                state: &ClusterState,
            ) -> Result<u64> {
                (**self).put_cluster_state(expected, state).await
            }
            async fn wait_cluster_change(
                &self,
                known: Option<u64>,
                timeout: Duration,
            ) -> Result<Option<Versioned<ClusterState>>> {
                (**self).wait_cluster_change(known, timeout).await
            }
            async fn put_cluster_ack(&self, ack: &ClusterAck) -> Result<()> {
                (**self).put_cluster_ack(ack).await
            }
            async fn cluster_acks(&self) -> Result<Vec<ClusterAck>> {
                (**self).cluster_acks().await
            }
            async fn try_lock_admin(&self, holder: &str, ttl: Duration) -> Result<AdminLease> {
                (**self).try_lock_admin(holder, ttl).await
            }
            async fn renew_admin_lock(&self, lease: &AdminLease) -> Result<()> {
                (**self).renew_admin_lock(lease).await
            }
            async fn unlock_admin(&self, lease: &AdminLease) -> Result<()> {
                (**self).unlock_admin(lease).await
            }
            async fn create_user(&self, user: &User) -> Result<()> {
                (**self).create_user(user).await
            }
            async fn user(&self, name: &str) -> Result<Option<User>> {
                (**self).user(name).await
            }
            async fn list_users(&self) -> Result<Vec<User>> {
                (**self).list_users().await
            }
            async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<()> {
                (**self).set_user_password(name, password_hash).await
            }
            async fn create_session(&self, session: &Session) -> Result<()> {
                (**self).create_session(session).await
            }
            async fn session(&self, token_hash: &str) -> Result<Option<Session>> {
                (**self).session(token_hash).await
            }
            async fn delete_session(&self, token_hash: &str) -> Result<()> {
                (**self).delete_session(token_hash).await
            }
        }
    };
}

forward_metadata!(std::sync::Arc<S>);
forward_metadata!(Box<S>);

mod accounts;
pub mod conformance;
mod etcd;
pub mod lifecycle;
mod sqlite;

pub use accounts::{MAX_USER_NAME_CHARS, Role, Session, User, validate_user_name};
pub use etcd::{DEFAULT_PREFIX, EtcdMetadataStore};
pub use lifecycle::Lifecycle;
pub use sqlite::SqliteMetadataStore;

/// Page size of [`MetadataStore::file_records`] when asked for 0.
const DEFAULT_FILE_RECORDS_LIMIT: usize = 1000;

/// Opens a metadata store from the course project's command-line words:
/// `("sqlite", "./metadata.db")` or `("etcd", "h1:2379,h2:2379")`.
pub async fn open(kind: &str, option: &str) -> Result<std::sync::Arc<dyn MetadataStore>> {
    match kind {
        "sqlite" => {
            let path = option.to_string();
            let store = tokio::task::spawn_blocking(move || SqliteMetadataStore::open(path))
                .await
                .map_err(|e| crate::Error::backend("sqlite", "open task failed", e))??;
            Ok(std::sync::Arc::new(store))
        }
        "etcd" => Ok(std::sync::Arc::new(
            EtcdMetadataStore::connect(option).await?,
        )),
        other => Err(crate::Error::invalid(
            "metadata kind",
            other,
            "expected `sqlite <path>` or `etcd <host:port,...>`",
        )),
    }
}
