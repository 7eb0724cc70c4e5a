//! Running one job: transcode, store every file, become ready; or, if it
//! fails or is cancelled, remove what it stored (once every write in
//! flight has ended) and say why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::AsyncBufReadExt;

use super::{Ingest, Job, ffmpeg, file_stream, hash_path, hls, ladder, probe};
use crate::error::{Error, Result};
use crate::id::{ContentKey, FileName, VideoId};
use crate::metadata::lifecycle::now_ms;
use crate::metadata::{FileRecord, Phase, VideoFacts, VideoState, generation_file_name};
use crate::store::PutOptions;

/// Files stored at once after transcoding.
const STORE_CONCURRENCY: usize = 8;

/// Every key a job tried to store (stored or not): what its clean-up
/// removes.
type Attempted = Arc<Mutex<Vec<ContentKey>>>;

/// The error of a job that was told to stop.
fn cancelled(id: &VideoId) -> Error {
    Error::Conflict {
        key: format!("video {id}"),
        reason: "its job was cancelled (the video is being deleted, or another server took the job over)".into(),
    }
}

/// Whether an error of a lifecycle step means the upload is no longer this
/// job's to finish.
fn lost_the_upload(e: &Error) -> bool {
    matches!(e, Error::Conflict { .. } | Error::NotFound { .. })
}

impl Ingest {
    /// Runs a queued job to its end and cleans up after it: its work
    /// directory and spooled upload always, its stored files unless it
    /// became ready (or another server took it over).
    pub(super) async fn process(&self, job: Job) {
        let (id, generation) = (job.id.clone(), job.generation);
        let started = Instant::now();
        let work = self.inner.work.join(format!("{id}.g{generation}"));
        let _ = tokio::fs::remove_dir_all(&work).await;
        let attempted: Attempted = Default::default();
        tracing::info!(video = %id, generation, "transcoding started");
        let result = if job.cancel.is_cancelled() {
            Err(cancelled(&id))
        } else {
            self.transcode_and_store(&job, &work, &attempted).await
        };
        let result = match result {
            Ok(facts) => self
                .inner
                .life
                .transition(
                    &id,
                    generation,
                    &[Phase::Processing],
                    VideoState::Ready,
                    Some(&facts),
                )
                .await
                .map(|_| facts),
            Err(e) => Err(e),
        };
        let ended = match result {
            Ok(facts) => {
                tracing::info!(video = %id, generation, files = facts.file_count, bytes = facts.total_bytes, secs = started.elapsed().as_secs_f64(), "video ready");
                true
            }
            Err(e) => self.end_unfinished(&job, e, &attempted).await,
        };
        let _ = tokio::fs::remove_dir_all(&work).await;
        if ended {
            let _ = tokio::fs::remove_file(&job.source).await;
        }
        // job.registered goes with the job: the work is done.
    }

    /// After a job did not finish: find out whose the upload is now, and
    /// clean up accordingly. Returns false if the job has not ended: the
    /// metadata store could not say whose it is, so nothing is removed and
    /// the job is taken over again (from its spooled upload) once its lease
    /// lapses.
    async fn end_unfinished(&self, job: &Job, e: Error, attempted: &Attempted) -> bool {
        let (id, generation) = (&job.id, job.generation);
        let now = self.inner.meta.get_video(id).await;
        if let Err(lookup) = &now
            && !matches!(lookup, Error::NotFound { .. })
        {
            tracing::error!(video = %id, generation, error = %e, lookup = %lookup, "a job did not finish and its record cannot be read; it is left as it is, to be taken over again");
            return false;
        }
        let still_processing = matches!(&now, Ok(v) if v.generation == generation
            && v.state.phase() == Phase::Processing);
        let taken_over = matches!(&now, Ok(v) if still_processing
            && v.lease.as_ref().is_some_and(|l| l.holder != self.server_id() && l.until_ms > now_ms()));
        if taken_over {
            // Another server runs it now and writes the same keys: leave them.
            tracing::warn!(video = %id, generation, "another server took this job over; stopping here");
            return true;
        }
        let removed = self.remove_keys(id, attempted).await;
        if !still_processing {
            tracing::info!(video = %id, generation, removed, "job cancelled: the upload was deleted or replaced; its files are removed");
            return true;
        }
        let reason = match &e {
            Error::InvalidInput { reason, .. } => reason.clone(),
            // Said for the uploader: no node's address or directory.
            Error::Full { .. } => {
                "the storage nodes are full; nothing of this video was kept".to_string()
            }
            other => other.to_string(),
        };
        tracing::warn!(video = %id, generation, removed, error = %e, "transcoding failed; its files are removed");
        if let Err(e) = self
            .inner
            .life
            .transition(
                id,
                generation,
                &[Phase::Processing],
                VideoState::Failed { reason },
                None,
            )
            .await
        {
            tracing::error!(video = %id, error = %e, "could not mark the video failed");
        }
        true
    }

    /// Removes the keys a job tried to store, and their records.
    async fn remove_keys(&self, id: &VideoId, attempted: &Attempted) -> usize {
        let keys: Vec<ContentKey> = attempted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut removed = 0;
        for k in &keys {
            match self.inner.content.delete(k).await {
                Ok(()) => removed += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(video = %id, key = %k, error = %e, "could not remove a file of an unfinished job (verify reports it as an orphan)")
                }
            }
        }
        if let Err(e) = self.inner.meta.forget_file_records(&keys).await {
            tracing::warn!(video = %id, error = %e, "could not forget the records of an unfinished job");
        }
        removed
    }

    async fn transcode_and_store(
        &self,
        job: &Job,
        work: &Path,
        attempted: &Attempted,
    ) -> Result<VideoFacts> {
        let out = work.join("out");
        tokio::fs::create_dir_all(&out)
            .await
            .map_err(|e| Error::io(&out, e))?;
        let ladder = ladder::ladder(job.probe.width, job.probe.height);
        // The poster is made while the ladder transcodes.
        let started = Instant::now();
        tokio::try_join!(self.run_ffmpeg(job, &out, &ladder), poster(job, &out),)?;
        let (dir, generation) = (out.clone(), job.generation);
        tokio::task::spawn_blocking(move || hls::finish(&dir, generation))
            .await
            .map_err(|e| Error::backend("ingest", "playlist task failed", e))??;
        let transcoded = started.elapsed();
        let mut names = Vec::new();
        let mut rd = tokio::fs::read_dir(&out)
            .await
            .map_err(|e| Error::io(&out, e))?;
        while let Some(e) = rd.next_entry().await.map_err(|e| Error::io(&out, e))? {
            let name = e.file_name().to_string_lossy().to_string();
            if !name.ends_with(".tmp") {
                names.push(name);
            }
        }
        // The manifests (MPD and HLS playlists) last, so that a reader who
        // sees a manifest finds every segment it names.
        let (mut segments, mut manifests) = (Vec::new(), Vec::new());
        for name in names {
            let file = FileName::new(name.clone()).map_err(|e| {
                Error::backend("ffmpeg", format!("produced an unexpected file {name:?}"), e)
            })?;
            let is_manifest = name.ends_with(".mpd") || name.ends_with(".m3u8");
            let to = if is_manifest {
                &mut manifests
            } else {
                &mut segments
            };
            to.push((ContentKey::new(job.id.clone(), file), out.join(&name)));
        }
        let mut stored = Vec::new();
        for batch in [segments, manifests] {
            let r = self.store_all(job, batch, attempted).await?;
            if job.cancel.is_cancelled() {
                return Err(cancelled(&job.id));
            }
            self.inner.meta.record_files(&r).await?;
            stored.extend(r);
        }
        tracing::info!(
            video = %job.id,
            transcode_secs = transcoded.as_secs_f64(),
            store_secs = (started.elapsed() - transcoded).as_secs_f64(),
            "transcoded and stored"
        );
        Ok(VideoFacts {
            duration_secs: job.probe.duration_secs,
            width: job.probe.width,
            height: job.probe.height,
            has_audio: job.probe.has_audio,
            renditions: ladder.rungs,
            total_bytes: stored.iter().map(|r| r.size).sum(),
            file_count: stored.len() as u64,
        })
    }

    /// Stores files, several at once. Each file's size and SHA-256 are
    /// measured here, checked by every node that stores it, and returned to
    /// be recorded: the truth every later copy, verify and repair is
    /// compared with. After the first failure (or a cancel) no new write
    /// starts, and this returns only once every write in flight has ended,
    /// so that a clean-up after it misses nothing.
    async fn store_all(
        &self,
        job: &Job,
        files: Vec<(ContentKey, PathBuf)>,
        attempted: &Attempted,
    ) -> Result<Vec<FileRecord>> {
        let mut files = files.into_iter();
        let mut in_flight = FuturesUnordered::new();
        let mut stored = Vec::new();
        let mut first_error = None;
        loop {
            while first_error.is_none() && in_flight.len() < STORE_CONCURRENCY {
                if job.cancel.is_cancelled() {
                    first_error = Some(cancelled(&job.id));
                    break;
                }
                let Some((key, path)) = files.next() else {
                    break;
                };
                attempted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(key.clone());
                in_flight.push(self.store_file(key, path));
            }
            match in_flight.next().await {
                Some(Ok(r)) => stored.push(r),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => break,
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(stored),
        }
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
        self.inner
            .content
            .put(&key, file_stream(&path).await?, opts)
            .await?;
        Ok(FileRecord { key, size, sha256 })
    }

    async fn run_ffmpeg(&self, job: &Job, out: &Path, ladder: &ladder::Ladder) -> Result<()> {
        let args = ladder::ffmpeg_args(&job.source, out, &job.probe, ladder, job.generation);
        let mut child = ffmpeg::command("ffmpeg")
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
        let progress = self.follow_progress(job, stdout);
        tokio::select! {
            () = progress => {}
            () = job.cancel.cancelled() => {
                ffmpeg::kill_group(&child);
                let _ = child.wait().await;
                return Err(cancelled(&job.id));
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Error::backend("ffmpeg", "wait failed", e))?;
        if job.cancel.is_cancelled() {
            return Err(cancelled(&job.id));
        }
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

    /// Reads ffmpeg's `-progress` output and writes the percentage into the
    /// record (renewing the lease), at most every half second. If the upload
    /// is no longer this job's (deleted, replaced, taken over), cancels the
    /// job.
    async fn follow_progress(&self, job: &Job, stdout: tokio::process::ChildStdout) {
        let total_us = (job.probe.duration_secs * 1e6).max(1.0);
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut last_sent = (0.0f32, Instant::now() - Duration::from_secs(10));
        while let Ok(Some(line)) = lines.next_line().await {
            let Some(us) = line
                .strip_prefix("out_time_us=")
                .or_else(|| line.strip_prefix("out_time_ms="))
                .and_then(|v| v.trim().parse::<f64>().ok())
            else {
                continue;
            };
            // The last percent is kept for storing the files.
            let pct = ((us / total_us) * 99.0).clamp(0.0, 99.0) as f32;
            if pct - last_sent.0 < 1.0 || last_sent.1.elapsed() < Duration::from_millis(500) {
                continue;
            }
            match self
                .inner
                .life
                .renew(&job.id, job.generation, Some(pct.floor()))
                .await
            {
                Ok(_) => last_sent = (pct, Instant::now()),
                Err(e) if lost_the_upload(&e) => {
                    tracing::info!(video = %job.id, generation = job.generation, reason = %e, "stopping the transcode");
                    job.cancel.cancel();
                    return;
                }
                Err(e) => {
                    tracing::warn!(video = %job.id, error = %e, "could not write progress");
                }
            }
        }
    }
}

/// Grabs a poster frame (`poster.jpg`, 360 px high) from the first second,
/// opening `source` as strictly as the transcode does.
///
/// The seek is on the output side (`-ss` after `-i`): ffmpeg decodes up to
/// that second rather than jumping there. Jumping in a file without an index
/// (MPEG-TS) with a long GOP lands after the last keyframe and ffmpeg
/// exits successfully having written no frame at all; decoding one second
/// costs next to nothing. Should even that find no frame (a video stream
/// shorter than the file), the first frame is taken.
async fn poster(job: &Job, out: &Path) -> Result<()> {
    tokio::select! {
        r = poster_of(&job.source, out, &job.probe, job.generation) => r,
        () = job.cancel.cancelled() => Err(cancelled(&job.id)),
    }
}

async fn poster_of(source: &Path, out: &Path, probe: &probe::Probe, generation: u64) -> Result<()> {
    let at = (probe.duration_secs / 2.0).min(1.0);
    let dest = out.join(generation_file_name(generation, "poster.jpg"));
    for at in [at, 0.0] {
        let status = ffmpeg::command("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-y", "-loglevel", "error"])
            .args(super::container::input_args(probe.container, source))
            .args(["-ss", &format!("{at:.3}"), "-frames:v", "1"])
            .args(["-vf", "scale=-2:360,setsar=1", "-q:v", "4"])
            .arg(&dest)
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
