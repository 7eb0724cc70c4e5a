//! Work that outlives a request or a server: renewing this server's leases,
//! taking over work whose server stopped, and purging deleted videos.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;

use super::{Ingest, Job, probe};
use crate::error::{Error, Result};
use crate::id::{ContentKey, VideoId};
use crate::metadata::lifecycle::now_ms;
use crate::metadata::{Phase, Video, VideoState, generation_of_file_name};

/// Leases a job must have been lapsed for (in lease lengths, beyond the
/// lapse) before a server without its spooled upload takes it over, which
/// can only fail it.
const FOREIGN_JOB_PATIENCE: i64 = 3;

/// Starts the background task: every third of a lease, renew this server's
/// leases and take over lapsed work; on the first round also work an
/// earlier run of this server left, and sort out the spool.
pub(super) fn spawn(me: &Ingest) {
    let weak = Arc::downgrade(&me.inner);
    let stop = me.inner.config.shutdown.clone();
    let work = async move {
        let mut first = true;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let me = Ingest { inner };
            me.renew_leases().await;
            match me.take_over(first).await {
                Ok(()) if first => {
                    me.sweep_spool().await;
                    first = false;
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "could not look for interrupted work"),
            }
            let period = (me.inner.config.lease / 3).max(Duration::from_millis(100));
            drop(me);
            tokio::time::sleep(period).await;
        }
    };
    me.inner.tasks.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = work => {}
        }
    });
}

impl Ingest {
    /// Renews the lease of every piece of work registered here; work whose
    /// upload is no longer this server's (deleted, replaced, taken over) is
    /// cancelled.
    async fn renew_leases(&self) {
        let running: Vec<_> = {
            let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.iter()
                .filter(|(_, r)| !*r.done.borrow())
                .map(|(id, r)| (id.clone(), r.generation, r.cancel.clone()))
                .collect()
        };
        for (id, generation, cancel) in running {
            match self.inner.life.renew(&id, generation, None).await {
                Ok(_) => {}
                Err(e @ (Error::Conflict { .. } | Error::NotFound { .. })) => {
                    if !cancel.is_cancelled() {
                        tracing::info!(video = %id, generation, reason = %e, "cancelling work that is no longer this server's");
                        cancel.cancel();
                    }
                }
                Err(e) => tracing::warn!(video = %id, error = %e, "could not renew a lease"),
            }
        }
    }

    /// Takes over every active video nobody works on: its lease lapsed, it
    /// has none (written before leases), or (on the `first` round) an
    /// earlier run of this server held it.
    async fn take_over(&self, first: bool) -> Result<()> {
        let now = now_ms();
        for v in self.inner.meta.list_active_videos(0).await? {
            let here = {
                let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
                jobs.get(&v.id).is_some_and(|r| !*r.done.borrow())
            };
            // A job this server cannot run (its upload was spooled by the
            // server that stopped) could only be failed: give that server
            // longer to come back and finish it itself.
            let patience = if v.state.phase() == Phase::Processing
                && !tokio::fs::try_exists(self.spool_path(&v.id, v.generation))
                    .await
                    .unwrap_or(false)
            {
                FOREIGN_JOB_PATIENCE * self.inner.config.lease.as_millis() as i64
            } else {
                0
            };
            let free = match &v.lease {
                None => true,
                Some(l) => l.until_ms + patience <= now || (first && l.holder == self.server_id()),
            };
            if here || !free {
                continue;
            }
            let v = match self.inner.life.take_over(&v).await {
                Ok(v) => v,
                Err(Error::Conflict { .. } | Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let from = v.lease.as_ref().map_or(0, |l| l.attempts);
            tracing::info!(video = %v.id, generation = v.generation, state = v.state.name(), attempt = from, "taking over interrupted work");
            if let Err(e) = self.resume(v.clone()).await {
                tracing::warn!(video = %v.id, error = %e, "could not resume interrupted work; it is retried later");
            }
        }
        Ok(())
    }

    /// Carries on with work taken over, by its phase.
    async fn resume(&self, v: Video) -> Result<()> {
        let (id, generation) = (v.id.clone(), v.generation);
        match v.state.phase() {
            Phase::Uploaded => {
                // Its request died with the server that was receiving it.
                let _ = tokio::fs::remove_file(
                    self.inner
                        .spool
                        .join(format!(".partial-{id}.g{generation}")),
                )
                .await;
                self.inner
                    .life
                    .remove(&id, generation, &[Phase::Uploaded])
                    .await?;
                tracing::warn!(video = %id, generation, "an upload was interrupted while being received (its web server stopped); its record is removed");
                Ok(())
            }
            Phase::Processing => self.resume_job(v).await,
            Phase::Deleting => {
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.purge(&v).await {
                        tracing::warn!(video = %v.id, error = %e, "could not finish a deletion; it is retried later");
                    }
                });
                Ok(())
            }
            Phase::Ready | Phase::Failed => Ok(()),
        }
    }

    /// Re-runs an interrupted job from its spooled upload, or fails it with
    /// the reason when that cannot be done.
    async fn resume_job(&self, v: Video) -> Result<()> {
        let (id, generation) = (v.id.clone(), v.generation);
        let attempts = v.lease.as_ref().map_or(0, |l| l.attempts);
        let source = self.spool_path(&id, generation);
        let (registered, cancel) = self.register(&id, generation)?;
        let reason = if attempts >= self.inner.config.max_attempts {
            Some(format!(
                "its transcode was interrupted {attempts} times (its web server stopped each time); giving up"
            ))
        } else if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            Some(
                "its web server stopped while transcoding it, and the uploaded file was kept only there; upload it again"
                    .to_string(),
            )
        } else {
            None
        };
        let probe = match reason {
            Some(r) => Err(r),
            None => probe::probe(&source).await.map_err(|e| e.to_string()),
        };
        let probe = match probe {
            Ok(p) => p,
            Err(reason) => {
                let removed = self.remove_generation(&id, generation).await?;
                self.inner
                    .life
                    .transition(
                        &id,
                        generation,
                        &[Phase::Processing],
                        VideoState::Failed {
                            reason: reason.clone(),
                        },
                        None,
                    )
                    .await?;
                let _ = tokio::fs::remove_file(&source).await;
                tracing::warn!(video = %id, generation, removed, reason, "an interrupted job failed");
                return Ok(());
            }
        };
        let job = Job {
            id: id.clone(),
            generation,
            source,
            probe,
            cancel,
            _registered: registered,
        };
        self.inner
            .depth
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = self.inner.queue.send(job).await {
            self.inner
                .depth
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return Err(Error::backend("ingest", "the transcoders stopped", e));
        }
        tracing::info!(video = %id, generation, "re-running an interrupted job");
        Ok(())
    }

    /// Removes spooled uploads that no work here needs any more (their job
    /// ended while this server was down, or they were never finished).
    async fn sweep_spool(&self) {
        let Ok(mut rd) = tokio::fs::read_dir(&self.inner.spool).await else {
            return;
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().to_string();
            let upload = name.strip_prefix(".partial-").unwrap_or(&name);
            let upload = upload.strip_suffix(".upload").unwrap_or(upload);
            let needed = upload.rsplit_once(".g").is_some_and(|(id, g)| {
                let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
                VideoId::new(id)
                    .ok()
                    .and_then(|id| jobs.get(&id).cloned())
                    .is_some_and(|r| {
                        g.parse::<u64>().is_ok_and(|g| g == r.generation) && !*r.done.borrow()
                    })
            });
            if !needed {
                tracing::info!(file = name, "removing a spooled upload no job needs");
                let _ = tokio::fs::remove_file(e.path()).await;
            }
        }
    }

    /// Finishes deleting upload `v.generation` of `v.id` (already
    /// `deleting`, leased here): stops its job here (which cleans up after
    /// itself), removes every file of that generation from every node and
    /// their records, then the video's record.
    pub(super) async fn purge(&self, v: &Video) -> Result<()> {
        let (id, generation) = (&v.id, v.generation);
        let running = {
            let jobs = self.inner.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.get(id).cloned()
        };
        if let Some(mut r) = running {
            r.cancel.cancel();
            let _ = r.done.wait_for(|d| *d).await;
        }
        let _registered = self.register(id, generation)?;
        let removed = self.remove_generation(id, generation).await?;
        let _ = tokio::fs::remove_file(self.spool_path(id, generation)).await;
        self.inner
            .life
            .remove(id, generation, &[Phase::Deleting])
            .await?;
        tracing::info!(video = %id, generation, files = removed, "video deleted");
        Ok(())
    }

    /// Removes every file of upload `generation` of `id` from every node
    /// (those recorded and those stored without a record), then their
    /// records; returns how many files were removed.
    pub(super) async fn remove_generation(&self, id: &VideoId, generation: u64) -> Result<usize> {
        let ours = |k: &ContentKey| generation_of_file_name(k.file().as_str()) == generation;
        let mut keys: BTreeSet<ContentKey> = self
            .inner
            .meta
            .video_file_records(id)
            .await?
            .into_iter()
            .map(|r| r.key)
            .filter(|k| ours(k))
            .collect();
        let listed: Vec<_> = self.inner.content.list(Some(id)).try_collect().await?;
        keys.extend(listed.into_iter().map(|m| m.key).filter(|k| ours(k)));
        let mut removed = 0;
        for k in &keys {
            match self.inner.content.delete(k).await {
                Ok(()) => removed += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let keys: Vec<ContentKey> = keys.into_iter().collect();
        self.inner.meta.forget_file_records(&keys).await?;
        Ok(removed)
    }
}
