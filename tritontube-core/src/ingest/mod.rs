//! From an uploaded file to a playable video.
//!
//! 1. [`Ingest::receive`] streams the upload to a temporary file (never into
//!    memory), refusing it past the size limit;
//! 2. ffprobe validates it ([`probe::probe`]): only a container format of
//!    [`container::ACCEPTED_CONTAINERS`] is accepted, and it is opened with
//!    its demuxer forced and the file protocol only, by ffprobe and by every
//!    ffmpeg run after it, so that an upload can never make them open
//!    another file (a playlist naming a file on the server, say);
//! 3. the video's record is created-if-absent, in state `processing`;
//! 4. a bounded queue hands it to a background worker (never the HTTP
//!    request) that transcodes an H.264/AAC DASH ladder ([`ladder`]) and a
//!    poster, reporting ffmpeg's progress into the record;
//! 5. every file goes to the [`ContentStore`]; the video becomes `ready` only
//!    when all are stored. On any failure it becomes `failed` with the
//!    reason and every file already stored for it is removed. Temporary
//!    files are always cleaned up (they live in a [`tempfile::TempDir`]).

pub mod container;
pub mod ladder;
pub mod probe;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::id::{ContentKey, FileName, VideoId};
use crate::metadata::{
    FileRecord, MetadataStore, Video, VideoFacts, VideoState, generation_file_name,
};
use crate::store::{ByteStream, ContentStore, PutOptions, Sha256Digest};

/// Tunables of the ingest pipeline.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Uploads waiting for a transcoder before new ones are refused.
    pub queue_capacity: usize,
    /// Transcodes running at once.
    pub workers: usize,
    /// Where temporary files go (the system's temp dir if `None`).
    pub temp_dir: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_upload_bytes: 4 * 1024 * 1024 * 1024,
            queue_capacity: 32,
            workers: 1,
            temp_dir: None,
        }
    }
}

/// An upload received and validated, waiting for a transcoder.
struct Job {
    id: VideoId,
    /// Which upload of the id this is: its files are named after it.
    generation: u64,
    dir: tempfile::TempDir,
    source: PathBuf,
    probe: probe::Probe,
}

/// The ingest pipeline: receives uploads and transcodes them in the
/// background.
#[derive(Debug, Clone)]
pub struct Ingest {
    meta: Arc<dyn MetadataStore>,
    content: Arc<dyn ContentStore>,
    config: Arc<IngestConfig>,
    queue: tokio::sync::mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("id", &self.id).finish()
    }
}

impl Ingest {
    /// Starts `config.workers` transcoders over `meta` and `content`.
    pub fn start(
        meta: Arc<dyn MetadataStore>,
        content: Arc<dyn ContentStore>,
        config: IngestConfig,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Job>(config.queue_capacity.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let me = Ingest {
            meta,
            content,
            config: Arc::new(config),
            queue: tx,
            depth,
        };
        for _ in 0..me.config.workers.max(1) {
            let rx = rx.clone();
            let worker = me.clone();
            tokio::spawn(async move {
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some(job) = job else { return };
                    worker.depth.fetch_sub(1, Ordering::SeqCst);
                    worker.process(job).await;
                }
            });
        }
        me
    }

    /// Uploads waiting for or in transcoding.
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }

    /// The largest upload accepted.
    pub fn max_upload_bytes(&self) -> u64 {
        self.config.max_upload_bytes
    }

    /// Receives an upload of `id` (titled `title`) from `body`, validates it
    /// and queues it for transcoding. The video's record is created first
    /// (so a duplicate id is refused before the body is read) and removed
    /// again if the upload is refused: a refused upload leaves nothing. A
    /// refusal is returned, not logged, for the caller to report once.
    pub async fn receive<S, B, E>(&self, id: VideoId, title: &str, body: S) -> Result<Video>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let mut video = Video::new(id.clone(), title);
        // A number of its own, even if an earlier upload of this id was
        // deleted: its files never share a name (or a cached URL) with that
        // one's.
        video.generation = self.meta.next_generation(&id).await?;
        self.meta.create_video(&video).await?;
        // If this future is dropped before the upload is queued or refused
        // (the client went away mid-body or while it was probed), the record
        // must not stay behind in "uploaded", blocking the id forever.
        let mut abandoned = Abandoned {
            meta: self.meta.clone(),
            id: Some(id.clone()),
        };
        let received = self.receive_created(&id, video.generation, body).await;
        abandoned.id = None;
        match received {
            Ok(job) => {
                video.state = VideoState::Processing { progress: 0.0 };
                if let Err(e) = self.meta.set_video_state(&id, video.state.clone()).await {
                    let _ = self.meta.delete_video(&id).await;
                    return Err(e);
                }
                self.depth.fetch_add(1, Ordering::SeqCst);
                if self.queue.try_send(job).is_err() {
                    self.depth.fetch_sub(1, Ordering::SeqCst);
                    let _ = self.meta.delete_video(&id).await;
                    return Err(Error::Unavailable {
                        what: "transcoder".into(),
                        reason: format!(
                            "{} uploads are already waiting; try again later",
                            self.config.queue_capacity
                        ),
                    });
                }
                tracing::info!(video = %id, "upload accepted, queued for transcoding");
                Ok(video)
            }
            Err(e) => {
                // Not logged here: the caller reports the refusal (the web
                // layer logs every refused request once, naming the video).
                let _ = self.meta.delete_video(&id).await;
                Err(e)
            }
        }
    }

    async fn receive_created<S, B, E>(&self, id: &VideoId, generation: u64, body: S) -> Result<Job>
    where
        S: Stream<Item = std::result::Result<B, E>> + Send,
        B: bytes::Buf,
        E: std::fmt::Display,
    {
        let dir = match &self.config.temp_dir {
            Some(d) => tempfile::Builder::new()
                .prefix("tritontube-ingest-")
                .tempdir_in(d),
            None => tempfile::Builder::new()
                .prefix("tritontube-ingest-")
                .tempdir(),
        }
        .map_err(|e| Error::io("temporary directory", e))?;
        let source = dir.path().join("source");
        let mut file = tokio::fs::File::create(&source)
            .await
            .map_err(|e| Error::io(&source, e))?;
        let mut size = 0u64;
        let limit = self.config.max_upload_bytes;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| {
                Error::invalid(
                    "upload",
                    id.as_str(),
                    format!("the upload was cut off: {e}"),
                )
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
                    .map_err(|e| Error::io(&source, e))?;
                chunk.advance(n);
            }
        }
        file.flush().await.map_err(|e| Error::io(&source, e))?;
        drop(file);
        if size == 0 {
            return Err(Error::invalid("upload", id.as_str(), "the file is empty"));
        }
        let probe = probe::probe(&source).await.map_err(|e| match e {
            Error::InvalidInput { reason, .. } => Error::invalid("upload", id.as_str(), reason),
            other => other,
        })?;
        Ok(Job {
            id: id.clone(),
            generation,
            dir,
            source,
            probe,
        })
    }

    async fn process(&self, job: Job) {
        let id = job.id.clone();
        let started = Instant::now();
        match self.transcode_and_store(&job).await {
            Ok(facts) => {
                let _ = self.meta.set_video_facts(&id, &facts).await;
                if let Err(e) = self.meta.set_video_state(&id, VideoState::Ready).await {
                    tracing::error!(video = %id, error = %e, "could not mark video ready");
                }
                tracing::info!(video = %id, files = facts.file_count, bytes = facts.total_bytes, secs = started.elapsed().as_secs_f64(), "video ready");
            }
            Err(e) => {
                tracing::warn!(video = %id, error = %e, "transcoding failed");
                self.remove_files(&id).await;
                let reason = match &e {
                    Error::InvalidInput { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let _ = self
                    .meta
                    .set_video_state(&id, VideoState::Failed { reason })
                    .await;
            }
        }
        // job.dir is dropped here: the temporary files go with it.
    }

    /// Removes every stored file of `id`.
    pub async fn remove_files(&self, id: &VideoId) -> usize {
        let files: Vec<_> = self
            .content
            .list(Some(id))
            .filter_map(|m| async move { m.ok() })
            .collect()
            .await;
        let mut removed = 0;
        for f in files {
            if self.content.delete(&f.key).await.is_ok() {
                removed += 1;
            }
        }
        if let Err(e) = self.meta.delete_file_records(id).await {
            tracing::warn!(video = %id, error = %e, "could not forget the video's file records");
        }
        removed
    }

    async fn transcode_and_store(&self, job: &Job) -> Result<VideoFacts> {
        let out = job.dir.path().join("out");
        tokio::fs::create_dir_all(&out)
            .await
            .map_err(|e| Error::io(&out, e))?;
        let ladder = ladder::ladder(job.probe.width, job.probe.height);
        // The poster is made while the ladder transcodes.
        let started = Instant::now();
        tokio::try_join!(
            self.run_ffmpeg(job, &out, &ladder),
            poster(&job.source, &out, &job.probe, job.generation),
        )?;
        let transcoded = started.elapsed();
        // Store every file; the manifest last, so that a reader who sees a
        // manifest finds every segment it names.
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(&out)
            .await
            .map_err(|e| Error::io(&out, e))?;
        while let Some(e) = rd.next_entry().await.map_err(|e| Error::io(&out, e))? {
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                continue;
            }
            names.push(name);
        }
        let manifest_name = generation_file_name(job.generation, "manifest.mpd");
        names.sort_by_key(|n| (*n == manifest_name, n.clone()));
        let mut facts = VideoFacts {
            duration_secs: job.probe.duration_secs,
            width: job.probe.width,
            height: job.probe.height,
            has_audio: job.probe.has_audio,
            renditions: ladder.rungs,
            total_bytes: 0,
            file_count: 0,
        };
        let mut keys = Vec::new();
        for name in names {
            let file = FileName::new(name.clone()).map_err(|e| {
                Error::backend("ffmpeg", format!("produced an unexpected file {name:?}"), e)
            })?;
            keys.push((ContentKey::new(job.id.clone(), file), out.join(&name)));
        }
        let manifest = keys.pop();
        // Several files in flight at once; the manifest after all of them.
        // Each file's size and SHA-256 are measured here, checked by every
        // node that stores it, and recorded with the video: the truth every
        // later copy, verify and repair is compared with.
        let stored: Vec<FileRecord> = futures::stream::iter(keys)
            .map(|(key, path)| self.store_file(key, path))
            .buffer_unordered(STORE_CONCURRENCY)
            .try_collect()
            .await?;
        for r in &stored {
            facts.total_bytes += r.size;
            facts.file_count += 1;
        }
        self.meta.record_files(&stored).await?;
        if let Some((key, path)) = manifest {
            let r = self.store_file(key, path).await?;
            facts.total_bytes += r.size;
            facts.file_count += 1;
            self.meta.record_files(std::slice::from_ref(&r)).await?;
        }
        tracing::info!(
            video = %job.id,
            transcode_secs = transcoded.as_secs_f64(),
            store_secs = (started.elapsed() - transcoded).as_secs_f64(),
            "transcoded and stored"
        );
        Ok(facts)
    }

    /// Hashes one produced file, stores it with that checksum as the
    /// expected one, and returns its record.
    async fn store_file(&self, key: ContentKey, path: PathBuf) -> Result<FileRecord> {
        let (size, sha256) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || hash_path(&path))
                .await
                .map_err(|e| Error::backend("ingest", "hashing task failed", e))??
        };
        let opts = PutOptions {
            expected_sha256: Some(sha256),
            expected_size: Some(size),
        };
        self.content
            .put(&key, file_stream(&path).await?, opts)
            .await?;
        Ok(FileRecord { key, size, sha256 })
    }

    async fn run_ffmpeg(&self, job: &Job, out: &Path, ladder: &ladder::Ladder) -> Result<()> {
        let args = ladder::ffmpeg_args(&job.source, out, &job.probe, ladder, job.generation);
        let mut child = tokio::process::Command::new("ffmpeg")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::backend("ffmpeg", "cannot run ffmpeg (is it installed?)", e))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let err_text = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut kept = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                kept.push(l);
                if kept.len() > 20 {
                    kept.remove(0);
                }
            }
            kept.join("\n")
        });
        let total_us = (job.probe.duration_secs * 1e6).max(1.0);
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut last_sent = (0.0f32, Instant::now() - Duration::from_secs(10));
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(v) = line
                .strip_prefix("out_time_us=")
                .or_else(|| line.strip_prefix("out_time_ms="))
                && let Ok(us) = v.trim().parse::<f64>()
            {
                // The last percent is kept for storing the files.
                let pct = ((us / total_us) * 99.0).clamp(0.0, 99.0) as f32;
                if pct - last_sent.0 >= 1.0 && last_sent.1.elapsed() >= Duration::from_millis(500) {
                    let _ = self
                        .meta
                        .set_video_state(
                            &job.id,
                            VideoState::Processing {
                                progress: pct.floor(),
                            },
                        )
                        .await;
                    last_sent = (pct, Instant::now());
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Error::backend("ffmpeg", "wait failed", e))?;
        if !status.success() {
            let text = err_text.await.unwrap_or_default();
            return Err(Error::Backend {
                backend: "ffmpeg",
                message: format!(
                    "transcoding failed ({status}): {}",
                    text.lines().last().unwrap_or("")
                ),
                source: None,
            });
        }
        Ok(())
    }
}

/// Removes a new video's record when its upload is abandoned: dropped
/// (the request's future went away with its client) after the record was
/// made and before the upload was queued or refused.
struct Abandoned {
    meta: Arc<dyn MetadataStore>,
    id: Option<VideoId>,
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        tracing::warn!(video = %id, "upload abandoned before it was queued (the client went away); its record is removed");
        let meta = self.meta.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.delete_video(&id).await {
                    tracing::error!(video = %id, error = %e, "could not remove an abandoned upload's record");
                }
            });
        }
    }
}

/// Files stored at once after transcoding.
const STORE_CONCURRENCY: usize = 8;

/// Grabs a poster frame (`poster.jpg`, 360 px high) from the first second,
/// opening `source` as strictly as the transcode does.
///
/// The seek is on the output side (`-ss` after `-i`): ffmpeg decodes up to
/// that second rather than jumping there. Jumping in a file without an index
/// (MPEG-TS) with a long GOP lands after the last keyframe and ffmpeg
/// exits successfully having written no frame at all; decoding one second
/// costs next to nothing. Should even that find no frame (a video stream
/// shorter than the file), the first frame is taken.
async fn poster(source: &Path, out: &Path, probe: &probe::Probe, generation: u64) -> Result<()> {
    let at = (probe.duration_secs / 2.0).min(1.0);
    let dest = out.join(generation_file_name(generation, "poster.jpg"));
    for at in [at, 0.0] {
        let status = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
            .args(container::input_args(probe.container, source))
            .args(["-ss", &format!("{at:.3}"), "-frames:v", "1"])
            .args(["-vf", "scale=-2:360,setsar=1", "-q:v", "4"])
            .arg(&dest)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| Error::backend("ffmpeg", "cannot run ffmpeg", e))?;
        if !status.success() {
            return Err(Error::Backend {
                backend: "ffmpeg",
                message: format!("could not make a poster image ({status})"),
                source: None,
            });
        }
        if tokio::fs::try_exists(&dest).await.unwrap_or(false) {
            return Ok(());
        }
    }
    Err(Error::Backend {
        backend: "ffmpeg",
        message: "could not make a poster image: no video frame could be decoded".into(),
        source: None,
    })
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
