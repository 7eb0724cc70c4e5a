//! From an uploaded file to a playable video, and back to nothing.
//!
//! A video's life is `uploaded → processing → ready | failed → deleting →
//! gone`, each step a compare-and-set on `(id, generation)` in the metadata
//! store ([`Lifecycle`]):
//!
//! 1. [`Ingest::receive`] creates the record of the id's next generation,
//!    leased to this server, and streams the upload into the spool
//!    (`<data-dir>/spool`, never into memory), refusing it past the size
//!    limit. A request that dies leaves no record (and a log line). When
//!    the id is known only once the file is in (a form whose fields follow
//!    the file), [`Ingest::stage`] receives the file first, into
//!    `<data-dir>/staged`, and [`Ingest::receive_staged`] then creates the
//!    record, trying the candidate ids in turn.
//! 2. ffprobe validates it ([`probe::probe`]): only a container format of
//!    [`container::ACCEPTED_CONTAINERS`] is accepted, and it is opened with
//!    its demuxer forced and the file protocol only, by ffprobe and by every
//!    ffmpeg run after it, so that an upload can never make them open
//!    another file (a playlist naming a file on the server, say).
//! 3. The video becomes `processing` and a bounded queue hands it to a
//!    background worker that transcodes an H.264/AAC DASH ladder
//!    ([`ladder`]), with HLS playlists over the same segments ([`hls`]), and a poster, reporting progress into the record (which
//!    also renews the lease). ffmpeg runs in its own process group and dies
//!    with its job and with the server ([`ffmpeg`]).
//! 4. Every file goes to the [`ContentStore`] with its checksum, recorded;
//!    the video becomes `ready` only when all are stored. On a failure every
//!    file of the upload is removed (after the writes in flight end) and it
//!    becomes `failed` with the reason.
//! 5. [`Ingest::delete`] makes it `deleting`, cancels its job (killing
//!    ffmpeg), removes every file of that generation from every node and
//!    then the record, freeing the id.
//!
//! The uploaded file stays in the spool until its job ends. A background
//! task renews this server's leases and takes over work whose server
//! stopped (its lease lapsed, or an earlier run of this server): a job is
//! re-run from the spooled file, or failed with the reason if the file is
//! not here; a deletion is finished. A job that keeps being interrupted
//! fails after [`IngestConfig::max_attempts`].

pub mod container;
pub mod ffmpeg;
pub mod hls;
mod job;
pub mod ladder;
pub mod probe;
mod recover;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::id::VideoId;
use crate::metadata::{Lifecycle, MetadataStore, Phase, Video, VideoState};
use crate::store::{ByteStream, ContentStore, Sha256Digest};

/// Tunables of the ingest pipeline.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Uploads waiting for a transcoder before new ones are refused.
    pub queue_capacity: usize,
    /// Transcodes running at once.
    pub workers: usize,
    /// Where uploads are spooled (`spool/`) and jobs work (`work/`); one
    /// directory per web server. `None` = a temporary directory removed
    /// with the pipeline (nothing survives a restart).
    pub data_dir: Option<PathBuf>,
    /// This server's id in leases; `None` = a random one per start.
    pub server_id: Option<String>,
    /// How long a lease lasts without renewal: how long after a server
    /// stops another one takes its work over.
    pub lease: Duration,
    /// Times a job is started before it is failed as one that keeps
    /// interrupting its servers.
    pub max_attempts: u32,
    /// The server's shutdown: once cancelled, the transcoders and the
    /// take-over task exit ([`Ingest::stopped`] says when). A job running
    /// then stops where it is (its ffmpeg is killed) and keeps its lease and
    /// its spooled upload, so the next start runs it again at once.
    pub shutdown: CancellationToken,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            queue_capacity: 32,
            workers: 1,
            data_dir: None,
            server_id: None,
            lease: Duration::from_secs(30),
            max_attempts: 3,
            shutdown: CancellationToken::new(),
        }
    }
}

/// An upload received and validated, waiting for a transcoder.
struct Job {
    id: VideoId,
    /// Which upload of the id this is: its files are named after it.
    generation: u64,
    /// The spooled upload.
    source: PathBuf,
    probe: probe::Probe,
    cancel: CancellationToken,
    /// This server's registration of the work, ended with the job.
    _registered: Registered,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .finish()
    }
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Work this server is doing on one video: receiving, transcoding or
/// purging one generation. Its lease is renewed while it is registered.
#[derive(Debug, Clone)]
struct Running {
    generation: u64,
    cancel: CancellationToken,
    /// Becomes true when the work has ended (and cleaned up after itself).
    done: tokio::sync::watch::Receiver<bool>,
}

/// Unregisters a video's work when dropped, saying it is done.
struct Registered {
    ingest: Ingest,
    id: VideoId,
    generation: u64,
    done: tokio::sync::watch::Sender<bool>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut jobs = self
            .ingest
            .inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if jobs
            .get(&self.id)
            .is_some_and(|r| r.generation == self.generation)
        {
            jobs.remove(&self.id);
        }
        let _ = self.done.send(true);
    }
}

/// How a [`Ingest::delete`] ended within the time it was given.
// Short-lived values, made once per step: boxing the record would cost
// more than the size it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Every file is gone and so is the record: the id is free.
    Done,
    /// Still purging (in the background, whatever the caller does); the
    /// record says `deleting` until it is done.
    Pending(Video),
}

#[derive(Debug)]
struct Inner {
    meta: Arc<dyn MetadataStore>,
    content: Arc<dyn ContentStore>,
    config: IngestConfig,
    life: Lifecycle,
    spool: PathBuf,
    work: PathBuf,
    /// Files of uploads whose id is not known yet ([`Ingest::stage`]).
    staged: PathBuf,
    queue: tokio::sync::mpsc::Sender<Job>,
    depth: AtomicUsize,
    jobs: Mutex<HashMap<VideoId, Running>>,
    /// The transcoders and the take-over task, until they exit.
    tasks: tokio_util::task::TaskTracker,
    /// Keeps the default temporary data directory alive.
    _temp: Option<tempfile::TempDir>,
}

/// The ingest pipeline: receives uploads, transcodes them in the
/// background, deletes videos, and takes over interrupted work.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<Inner>,
}

fn data_dirs(config: &IngestConfig) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &config.data_dir {
        Some(d) => Ok((d.clone(), None)),
        None => {
            let t = tempfile::Builder::new()
                .prefix("tritontube-ingest-")
                .tempdir()
                .map_err(|e| Error::io("temporary directory", e))?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

impl Ingest {
    /// Starts `config.workers` transcoders over `meta` and `content`, and
    /// the task that renews leases and takes over interrupted work. Fails
    /// if the data directory cannot be made.
    pub fn start(
        meta: Arc<dyn MetadataStore>,
        content: Arc<dyn ContentStore>,
        config: IngestConfig,
    ) -> Result<Self> {
        let (dir, temp) = data_dirs(&config)?;
        let (spool, work, staged) = (dir.join("spool"), dir.join("work"), dir.join("staged"));
        // Nothing of an earlier run is working here now: its transcodes and
        // its uploads died with it. The spool is sorted out by the first
        // take-over pass.
        let _ = std::fs::remove_dir_all(&work);
        let _ = std::fs::remove_dir_all(&staged);
        for d in [&spool, &work, &staged] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let server_id = config
            .server_id
            .clone()
            .unwrap_or_else(|| format!("web-{:016x}", rand_u64()));
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(config.queue_capacity.max(1));
        let me = Ingest {
            inner: Arc::new(Inner {
                life: Lifecycle::new(meta.clone(), server_id, config.lease),
                meta,
                content,
                config,
                spool,
                work,
                staged,
                queue: tx,
                depth: AtomicUsize::new(0),
                jobs: Mutex::new(HashMap::new()),
                tasks: tokio_util::task::TaskTracker::new(),
                _temp: temp,
            }),
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let tasks = &me.inner.tasks;
        for _ in 0..me.inner.config.workers.max(1) {
            let (rx, stop) = (rx.clone(), me.inner.config.shutdown.clone());
            let worker = Arc::downgrade(&me.inner);
            let transcode = async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let (Some(job), Some(inner)) = (job, worker.upgrade()) else {
                        return;
                    };
                    let me = Ingest { inner };
                    me.inner.depth.fetch_sub(1, Ordering::SeqCst);
                    me.process(job).await;
                }
            };
            tasks.spawn(async move {
                // Stopping drops a job where it is: see `IngestConfig::shutdown`.
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = transcode => {}
                }
            });
        }
        recover::spawn(&me);
        tasks.close();
        // Whether ffmpeg can be tied to this process's life is found by
        // running a program once: do it now, off the async threads, rather
        // than inside the first job's `command()`.
        drop(tokio::task::spawn_blocking(ffmpeg::has_setpriv));
        Ok(me)
    }

    /// Waits until the transcoders and the take-over task have exited,
    /// which they do once [`IngestConfig::shutdown`] is cancelled.
    pub async fn stopped(&self) {
        self.inner.tasks.wait().await;
    }

    /// Uploads waiting for or in transcoding.
    pub fn queue_depth(&self) -> usize {
        self.inner.depth.load(Ordering::SeqCst)
    }

    /// The largest upload accepted.
    pub fn max_upload_bytes(&self) -> u64 {
        self.inner.config.max_upload_bytes
    }

    /// This server's id, as it appears in leases.
    pub fn server_id(&self) -> &str {
        self.inner.life.holder()
    }

    /// Where upload `generation` of `id` is spooled until its job ends.
    fn spool_path(&self, id: &VideoId, generation: u64) -> PathBuf {
        self.inner.spool.join(format!("{id}.g{generation}.upload"))
    }

    /// Registers work on upload `generation` of `id`; fails if this server
    /// already works on another generation of it.
    fn register(&self, id: &VideoId, generation: u64) -> Result<(Registered, CancellationToken)> {
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = jobs.get(id)
            && !*r.done.borrow()
        {
            return Err(Error::Conflict {
                key: format!("video {id}"),
                reason: format!("this server is still working on upload {}", r.generation),
            });
        }
        jobs.insert(
            id.clone(),
            Running {
                generation,
                cancel: cancel.clone(),
                done: rx,
            },
        );
        Ok((
            Registered {
                ingest: self.clone(),
                id: id.clone(),
                generation,
                done: tx,
            },
            cancel,
        ))
    }

    /// Receives an upload of `id` (titled `title`) from `body`, validates it
    /// and queues it for transcoding. The video's record is created first
    /// (so a duplicate id is refused before the body is read) and removed
    /// again if the upload is refused or abandoned: a refused upload leaves
    /// nothing. A refusal is returned, not logged, for the caller to report
    /// once.
    pub async fn receive<S, B, E>(&self, id: VideoId, title: &str, body: S) -> Result<Video>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let info = UploadInfo {
            title: title.to_string(),
            description: String::new(),
        };
        self.receive_with(id, &info, body).await
    }

    /// [`Ingest::receive`] with a description too.
    pub async fn receive_with<S, B, E>(
        &self,
        id: VideoId,
        info: &UploadInfo,
        body: S,
    ) -> Result<Video>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let (video, registered, cancel) = self.create_record(&id, info).await?;
        let partial = self
            .inner
            .spool
            .join(format!(".partial-{id}.g{}", video.generation));
        // If this future is dropped before the upload is queued or refused
        // (the client went away mid-body or while it was probed), the record
        // must not stay behind in "uploaded", blocking the id forever.
        let mut abandoned = Abandoned {
            life: self.inner.life.clone(),
            upload: Some((id.clone(), video.generation, partial.clone())),
        };
        let received = async {
            self.receive_body(id.as_str(), &partial, body).await?;
            self.spool(&id, video.generation, &partial).await
        };
        let received = Self::unless_deleted(&id, &cancel, received).await;
        abandoned.upload = None;
        self.accept(&video, registered, cancel, &partial, received)
            .await
    }

    /// Receives an upload's file from `body` before its id is known, into a
    /// file of its own, refusing it past the size limit or empty; `name`
    /// (the uploaded file's name) is for messages. Hand it to
    /// [`Ingest::receive_staged`]; dropped, it is removed.
    pub async fn stage<S, B, E>(&self, name: &str, body: S) -> Result<StagedUpload>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let path = self
            .inner
            .staged
            .join(format!("{:016x}.upload", rand_u64()));
        // Removes the file whatever happens next, until it is handed on.
        let staged = StagedUpload { path: Some(path) };
        self.receive_body(name, staged.path(), body).await?;
        Ok(staged)
    }

    /// Creates the record of a staged upload under the first of
    /// `candidates` that no video has (a taken id is skipped; when all are,
    /// the last refusal is returned), then validates the file and queues it
    /// as [`Ingest::receive`] does. A refused upload leaves nothing.
    pub async fn receive_staged(
        &self,
        candidates: impl IntoIterator<Item = VideoId>,
        info: &UploadInfo,
        mut staged: StagedUpload,
    ) -> Result<Video> {
        let mut taken = None;
        for id in candidates {
            let (video, registered, cancel) = match self.create_record(&id, info).await {
                Ok(r) => r,
                Err(e @ (Error::AlreadyExists { .. } | Error::Conflict { .. })) => {
                    taken = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let partial = self
                .inner
                .spool
                .join(format!(".partial-{id}.g{}", video.generation));
            let mut abandoned = Abandoned {
                life: self.inner.life.clone(),
                upload: Some((id.clone(), video.generation, partial.clone())),
            };
            let received = async {
                let from = staged.take();
                tokio::fs::rename(&from, &partial)
                    .await
                    .map_err(|e| Error::io(&partial, e))?;
                self.spool(&id, video.generation, &partial).await
            };
            let received = Self::unless_deleted(&id, &cancel, received).await;
            abandoned.upload = None;
            return self
                .accept(&video, registered, cancel, &partial, received)
                .await;
        }
        Err(taken.unwrap_or_else(|| Error::invalid("upload", "", "no id to store it under")))
    }

    /// The record of a new upload of `id`, created, with this server's
    /// registration of the work on it.
    async fn create_record(
        &self,
        id: &VideoId,
        info: &UploadInfo,
    ) -> Result<(Video, Registered, CancellationToken)> {
        let mut video = self.inner.life.new_upload(id, &info.title).await?;
        video.description = info.description.clone();
        let (registered, cancel) = self.register(id, video.generation)?;
        self.inner.meta.create_video(&video).await?;
        Ok((video, registered, cancel))
    }

    /// `received`, unless a delete of `id` comes first (it stops the
    /// upload where it is).
    async fn unless_deleted<T>(
        id: &VideoId,
        cancel: &CancellationToken,
        received: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            r = received => r,
            () = cancel.cancelled() => Err(Error::Conflict {
                key: format!("video {id}"),
                reason: "it was deleted while it was being uploaded".into(),
            }),
        }
    }

    /// Queues a received upload, or, if it was refused (`received` is an
    /// error) or cannot be queued, removes its file and its record.
    async fn accept(
        &self,
        video: &Video,
        registered: Registered,
        cancel: CancellationToken,
        partial: &Path,
        received: Result<(PathBuf, probe::Probe)>,
    ) -> Result<Video> {
        let (id, life) = (&video.id, &self.inner.life);
        let (source, probe) = match received {
            Ok(r) => r,
            Err(e) => {
                // Not logged here: the caller reports the refusal (the web
                // layer logs every refused request once, naming the video).
                let _ = tokio::fs::remove_file(partial).await;
                let _ = life.remove(id, video.generation, &[Phase::Uploaded]).await;
                return Err(e);
            }
        };
        let job = Job {
            id: id.clone(),
            generation: video.generation,
            source: source.clone(),
            probe,
            cancel,
            _registered: registered,
        };
        match self.enqueue(job).await {
            Ok(v) => Ok(v),
            Err((e, phase)) => {
                let _ = tokio::fs::remove_file(&source).await;
                let _ = life.remove(id, video.generation, &[phase]).await;
                Err(e)
            }
        }
    }

    /// Makes a received upload `processing` and hands it to a transcoder.
    /// On failure, says in which phase the record was left, for the caller
    /// to remove it.
    async fn enqueue(&self, job: Job) -> std::result::Result<Video, (Error, Phase)> {
        let (id, generation) = (job.id.clone(), job.generation);
        let video = self
            .inner
            .life
            .transition(
                &id,
                generation,
                &[Phase::Uploaded],
                VideoState::Processing { progress: 0.0 },
                None,
            )
            .await
            .map_err(|e| (e, Phase::Uploaded))?;
        self.inner.depth.fetch_add(1, Ordering::SeqCst);
        if self.inner.queue.try_send(job).is_err() {
            self.inner.depth.fetch_sub(1, Ordering::SeqCst);
            let e = Error::Unavailable {
                what: "transcoder".into(),
                reason: format!(
                    "{} uploads are already waiting; try again later",
                    self.inner.config.queue_capacity
                ),
            };
            return Err((e, Phase::Processing));
        }
        tracing::info!(video = %id, generation, "upload accepted, queued for transcoding");
        Ok(video)
    }

    /// Streams `body` into `partial`, refusing it past the size limit or
    /// empty; `id` names the upload in messages.
    async fn receive_body<S, B, E>(&self, id: &str, partial: &Path, body: S) -> Result<()>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let mut file = tokio::fs::File::create(partial)
            .await
            .map_err(|e| Error::io(partial, e))?;
        let mut size = 0u64;
        let limit = self.inner.config.max_upload_bytes;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| {
                Error::invalid("upload", id, format!("the upload was cut off: {e}"))
            })?;
            size += chunk.remaining() as u64;
            if size > limit {
                return Err(Error::TooLarge {
                    what: format!("upload of {id}"),
                    limit,
                });
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                let n = part.len();
                file.write_all(part)
                    .await
                    .map_err(|e| Error::io(partial, e))?;
                chunk.advance(n);
            }
        }
        // tokio's `File` hands each write to a thread: its error (a full
        // disk, say) surfaces only at the next write or at `flush`, never at
        // `sync_all`. Flush first, so a cut-short upload is refused.
        file.flush().await.map_err(|e| Error::io(partial, e))?;
        file.sync_all().await.map_err(|e| Error::io(partial, e))?;
        let written = file
            .metadata()
            .await
            .map_err(|e| Error::io(partial, e))?
            .len();
        if written != size {
            return Err(Error::io(
                partial,
                std::io::Error::other(format!("{written} of {size} bytes reached the disk")),
            ));
        }
        if size == 0 {
            return Err(Error::invalid("upload", id, "the file is empty"));
        }
        Ok(())
    }

    /// Validates a received upload and moves it to its place in the spool.
    async fn spool(
        &self,
        id: &VideoId,
        generation: u64,
        partial: &Path,
    ) -> Result<(PathBuf, probe::Probe)> {
        let probe = probe::probe(partial).await.map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid("upload", id.as_str(), reason),
            other => other,
        })?;
        let source = self.spool_path(id, generation);
        tokio::fs::rename(partial, &source)
            .await
            .map_err(|e| Error::io(&source, e))?;
        Ok((source, probe))
    }

    /// Deletes `id`: it becomes `deleting` at once (a second delete finds it
    /// so), its job is cancelled wherever it runs, and every file of it is
    /// removed from every node before the record goes and the id is free.
    /// The purge goes on in the background whatever the caller does; this
    /// waits for it at most `wait`.
    pub async fn delete(&self, id: &VideoId, wait: Duration) -> Result<Deletion> {
        let video = match self.inner.life.start_delete(id).await {
            Ok(v) => v,
            // Another server is deleting it already: same answer.
            Err(e @ Error::Conflict { .. }) => {
                let v = self.inner.meta.get_video(id).await?;
                if v.state.phase() != Phase::Deleting {
                    return Err(e);
                }
                return Ok(Deletion::Pending(v));
            }
            Err(e) => return Err(e),
        };
        tracing::info!(video = %id, generation = video.generation, "deleting");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let v = video.clone();
        tokio::spawn(async move {
            let r = me.purge(&v).await;
            let _ = tx.send(r);
        });
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(Ok(()))) => Ok(Deletion::Done),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) | Err(_) => Ok(Deletion::Pending(video)),
        }
    }
}

/// A random number for ids (not for secrets).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// What a person says about an upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadInfo {
    /// The video's title.
    pub title: String,
    /// Its description (may be empty).
    pub description: String,
}

/// An upload's file received before its id was known ([`Ingest::stage`]);
/// removed when dropped unless [`Ingest::receive_staged`] took it.
#[derive(Debug)]
pub struct StagedUpload {
    path: Option<PathBuf>,
}

impl StagedUpload {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Takes the file over: it is no longer removed on drop.
    fn take(&mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for StagedUpload {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Removes a new video's record when its upload is abandoned: dropped
/// (the request's future went away with its client) after the record was
/// made and before the upload was queued or refused.
struct Abandoned {
    life: Lifecycle,
    upload: Option<(VideoId, u64, PathBuf)>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some((id, generation, partial)) = self.upload.take() else {
            return;
        };
        tracing::warn!(video = %id, generation, "upload abandoned before it was queued (the client went away); its record is removed");
        let life = self.life.clone();
        let _ = std::fs::remove_file(&partial);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = life.remove(&id, generation, &[Phase::Uploaded]).await {
                    tracing::error!(video = %id, error = %e, "could not remove an abandoned upload's record");
                }
            });
        }
    }
}

/// Size and SHA-256 of a file on disk (blocking).
pub fn hash_path(path: &Path) -> Result<(u64, Sha256Digest)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, Sha256Digest(h.finalize().into())))
}

/// Streams a file in chunks of 256 KiB.
pub async fn file_stream(path: &Path) -> Result<ByteStream> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(path, e))?;
    let p = path.to_path_buf();
    let s = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024)
        .map(move |r: std::io::Result<Bytes>| r.map_err(|e| Error::io(&p, e)));
    Ok(Box::pin(s))
}
