//! A video's life as compare-and-set steps on its record:
//! `uploaded → processing → ready | failed → deleting → gone`.
//!
//! Every step names the upload it acts for, `(id, generation)`, and the
//! phases it may start from; a holder (a web server, by its server id) must
//! also hold the video's [`JobLease`] to move work it owns. A step whose
//! condition no longer holds changes nothing and fails with
//! [`Error::Conflict`] saying why (another upload took the id, the video is
//! being deleted, another server took the work over), so a job that finds
//! its upload gone stops and cleans up instead of writing over a newer one.
//! Every step is one [`MetadataStore::change_video`] call, on SQLite and etcd
//! alike.

use std::sync::Arc;
use std::time::Duration;

use super::{JobLease, MetadataStore, Phase, Video, VideoChange, VideoFacts, VideoState};
use crate::error::{Error, Result};
use crate::id::VideoId;

/// Now, Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The lifecycle steps of one web server: its id (the lease holder) and how
/// long its leases last without renewal.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    meta: Arc<dyn MetadataStore>,
    holder: Arc<str>,
    ttl: Duration,
}

/// Whether `v` is still upload `generation` in one of `from`, with its
/// lease free, lapsed or held by `holder`.
fn check(v: &Video, generation: u64, from: &[Phase], holder: &str, now: i64) -> Result<()> {
    let conflict = |reason: String| Error::Conflict {
        key: format!("video {}", v.id),
        reason,
    };
    if v.generation != generation {
        return Err(conflict(format!(
            "upload {generation} is no longer current (upload {} is)",
            v.generation
        )));
    }
    let phase = v.state.phase();
    if !from.contains(&phase) {
        return Err(conflict(format!("it is {}", phase.name())));
    }
    if let Some(l) = &v.lease
        && l.holder != holder
        && l.until_ms > now
    {
        return Err(conflict(format!(
            "web server {} is working on it",
            l.holder
        )));
    }
    Ok(())
}

impl Lifecycle {
    /// Steps taken as `holder`, with leases lasting `ttl`.
    pub fn new(meta: Arc<dyn MetadataStore>, holder: impl Into<Arc<str>>, ttl: Duration) -> Self {
        Lifecycle {
            meta,
            holder: holder.into(),
            ttl,
        }
    }

    /// This server's id, as it appears in leases.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long a lease lasts without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The metadata store the steps act on.
    pub fn meta(&self) -> &Arc<dyn MetadataStore> {
        &self.meta
    }

    fn lease(&self, now: i64, attempts: u32) -> JobLease {
        JobLease {
            holder: self.holder.to_string(),
            until_ms: now + self.ttl.as_millis() as i64,
            attempts,
        }
    }

    /// The record of a new upload of `id`, not yet written: the id's next
    /// generation, in state `uploaded`, leased to this server (write it with
    /// [`MetadataStore::create_video`], which refuses an id that has a
    /// record).
    pub async fn new_upload(&self, id: &VideoId, title: &str) -> Result<Video> {
        let mut video = Video::new(id.clone(), title);
        // A number of its own, even if an earlier upload of this id was
        // deleted: its files never share a name (or a cached URL) with that
        // one's.
        video.generation = self.meta.next_generation(id).await?;
        video.lease = Some(self.lease(now_ms(), 0));
        Ok(video)
    }

    /// Moves upload `generation` of `id` from one of `from` to `to`,
    /// renewing this server's lease while `to` is active and dropping it
    /// otherwise. `facts`, if given, replace the video's facts in the same
    /// step.
    pub async fn transition(
        &self,
        id: &VideoId,
        generation: u64,
        from: &[Phase],
        to: VideoState,
        facts: Option<&VideoFacts>,
    ) -> Result<Video> {
        let written = self
            .meta
            .change_video(id, &|v: &Video| {
                let now = now_ms();
                check(v, generation, from, &self.holder, now)?;
                let mut v = v.clone();
                let attempts = v.lease.as_ref().map_or(0, |l| l.attempts);
                v.lease = to.phase().is_active().then(|| self.lease(now, attempts));
                v.state = to.clone();
                if let Some(f) = facts {
                    v.facts = f.clone();
                }
                Ok(VideoChange::Put(v))
            })
            .await?;
        written.ok_or_else(|| Error::not_found(format!("video {id}")))
    }

    /// Renews this server's lease on upload `generation` of `id`, which
    /// must still be in an active phase and not taken over by another
    /// server. `progress`, if given, is written in the same step (processing
    /// only).
    pub async fn renew(
        &self,
        id: &VideoId,
        generation: u64,
        progress: Option<f32>,
    ) -> Result<Video> {
        let written = self
            .meta
            .change_video(id, &|v: &Video| {
                let now = now_ms();
                check(v, generation, &Phase::ACTIVE, &self.holder, now)?;
                let mut v = v.clone();
                let attempts = v.lease.as_ref().map_or(0, |l| l.attempts);
                v.lease = Some(self.lease(now, attempts));
                if let (Some(p), VideoState::Processing { progress }) = (progress, &mut v.state) {
                    *progress = p;
                }
                Ok(VideoChange::Put(v))
            })
            .await?;
        written.ok_or_else(|| Error::not_found(format!("video {id}")))
    }

    /// Takes over the work on `v` (an active video whose lease lapsed, or
    /// was held by an earlier run of this server), counting an attempt.
    /// Fails with [`Error::Conflict`] if another server holds it or it
    /// changed since `v` was read.
    pub async fn take_over(&self, v: &Video) -> Result<Video> {
        let seen = v.clone();
        let written = self
            .meta
            .change_video(&v.id, &|now_v: &Video| {
                if *now_v != seen {
                    return Err(Error::Conflict {
                        key: format!("video {}", seen.id),
                        reason: "it changed since it was read".into(),
                    });
                }
                let now = now_ms();
                check(now_v, seen.generation, &Phase::ACTIVE, &self.holder, now)?;
                let mut next = now_v.clone();
                let attempts = now_v.lease.as_ref().map_or(0, |l| l.attempts) + 1;
                next.lease = Some(self.lease(now, attempts));
                Ok(VideoChange::Put(next))
            })
            .await?;
        written.ok_or_else(|| Error::not_found(format!("video {}", v.id)))
    }

    /// Starts deleting `id`, whatever its phase: it becomes `deleting`,
    /// leased to this server, and the upload being deleted is returned.
    /// If it is already being deleted by another live server, fails with
    /// [`Error::Conflict`]; a lapsed or own deletion is taken over.
    pub async fn start_delete(&self, id: &VideoId) -> Result<Video> {
        let written = self
            .meta
            .change_video(id, &|v: &Video| {
                let now = now_ms();
                if v.state.phase() == Phase::Deleting {
                    check(v, v.generation, &[Phase::Deleting], &self.holder, now)?;
                }
                let mut v = v.clone();
                v.state = VideoState::Deleting;
                v.lease = Some(self.lease(now, 0));
                Ok(VideoChange::Put(v))
            })
            .await?;
        written.ok_or_else(|| Error::not_found(format!("video {id}")))
    }

    /// Removes the record of upload `generation` of `id`, which must be in
    /// one of `from` and not held by another live server: the id is free
    /// again.
    pub async fn remove(&self, id: &VideoId, generation: u64, from: &[Phase]) -> Result<()> {
        self.meta
            .change_video(id, &|v: &Video| {
                check(v, generation, from, &self.holder, now_ms())?;
                Ok(VideoChange::Delete)
            })
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(generation: u64, state: VideoState, lease: Option<(&str, i64)>) -> Video {
        let mut v = Video::new("v".parse().unwrap(), "v");
        v.generation = generation;
        v.state = state;
        v.lease = lease.map(|(h, until_ms)| JobLease {
            holder: h.into(),
            until_ms,
            attempts: 0,
        });
        v
    }

    #[test]
    fn a_step_acts_only_for_its_own_upload_in_an_allowed_phase() {
        let p = VideoState::Processing { progress: 1.0 };
        let mine = video(2, p.clone(), Some(("me", 1_000)));
        assert!(check(&mine, 2, &[Phase::Processing], "me", 500).is_ok());
        let e = check(&mine, 1, &[Phase::Processing], "me", 500).unwrap_err();
        assert!(e.to_string().contains("no longer current"), "{e}");
        let e = check(&mine, 2, &[Phase::Uploaded], "me", 500).unwrap_err();
        assert!(e.to_string().contains("it is processing"), "{e}");
    }

    #[test]
    fn a_live_lease_of_another_server_fences_a_step_and_a_lapsed_one_does_not() {
        let v = video(1, VideoState::Deleting, Some(("other", 1_000)));
        let e = check(&v, 1, &Phase::ACTIVE, "me", 999).unwrap_err();
        assert!(e.to_string().contains("other"), "{e}");
        assert!(check(&v, 1, &Phase::ACTIVE, "me", 1_000).is_ok());
        assert!(check(&v, 1, &Phase::ACTIVE, "other", 999).is_ok());
        let free = video(1, VideoState::Ready, None);
        assert!(check(&free, 1, &[Phase::Ready], "me", 0).is_ok());
    }
}
