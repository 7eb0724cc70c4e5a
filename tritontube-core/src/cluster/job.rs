//! Ring changes as jobs of the server. A change started through any web
//! server runs there as a task of its own: the caller that started it (an
//! admin client with a short deadline) may go away, and the change still
//! ends committed or rolled back. Its id and outcome live in the cluster
//! state ([`ChangeInfo`]), so any web server can show it, cancel it, or,
//! after a crash, resume it.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::ClusterManager;
use super::change::{ChangeKind, cancelled};
use crate::error::{Error, Result};
use crate::layout::transition;
use crate::metadata::{ChangeInfo, MetadataStore};

/// How often a job looks for a cancellation asked through another web
/// server (it hears of one asked through its own server at once).
const CANCEL_POLL: Duration = Duration::from_millis(500);

/// A ring change running as a job of the server, as
/// [`ClusterManager::start_change`] returns it. Dropping it (or a caller
/// that stops waiting) leaves the job running to its end.
#[derive(Debug)]
pub struct ChangeJob {
    id: String,
    what: String,
    done: tokio::task::JoinHandle<Result<u64>>,
}

impl ChangeJob {
    /// The job's id, as [`ClusterManager::cancel_change`] and the admin
    /// service's watch take it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the change is, for people (`add 127.0.0.1:8093`).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Waits for the job to end: the number of file copies it moved, or
    /// why it failed ([`Error::Cancelled`] once a cancellation rolled it
    /// back).
    pub async fn wait(self) -> Result<u64> {
        self.done
            .await
            .map_err(|e| Error::backend("cluster", "a ring change job failed", e))?
    }
}

/// The job of this server that can be cancelled now.
#[derive(Debug)]
pub(super) struct LocalJob {
    id: String,
    token: CancellationToken,
}

/// The jobs registry of one [`ClusterManager`] (one change at a time: the
/// admin lock sees to it).
pub(super) type Jobs = Arc<Mutex<Option<LocalJob>>>;

/// Tells [`ClusterManager::start_change`] that its job has started.
pub(super) struct JobRun {
    started: oneshot::Sender<ChangeInfo>,
}

impl JobRun {
    /// The job's pending ring is written: hands the job to whoever started
    /// it, and makes it cancellable.
    pub(super) fn started(self, manager: &ClusterManager, info: &ChangeInfo) -> RunningJob {
        let _ = self.started.send(info.clone());
        RunningJob::register(manager, info)
    }
}

/// A job running here, cancellable until it is dropped.
pub(super) struct RunningJob {
    info: ChangeInfo,
    token: CancellationToken,
    jobs: Jobs,
    watcher: tokio::task::JoinHandle<()>,
}

impl RunningJob {
    /// Registers the job of `info` as this server's, and follows the
    /// cluster state for a cancellation asked elsewhere.
    pub(super) fn register(manager: &ClusterManager, info: &ChangeInfo) -> Self {
        let token = CancellationToken::new();
        *manager.jobs.lock().unwrap() = Some(LocalJob {
            id: info.id.clone(),
            token: token.clone(),
        });
        let watcher = tokio::spawn(watch_for_cancel(
            manager.meta.clone(),
            info.id.clone(),
            token.clone(),
        ));
        RunningJob {
            info: info.clone(),
            token,
            jobs: manager.jobs.clone(),
            watcher,
        }
    }

    /// Runs `work` unless (until) the job is cancelled:
    /// [`Error::Cancelled`] then, `work` dropped where it was.
    pub(super) async fn until_cancelled<T>(
        &self,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            r = work => r,
            _ = self.token.cancelled() => Err(cancelled(&self.info)),
        }
    }
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.watcher.abort();
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.as_ref().is_some_and(|j| j.id == self.info.id) {
            *jobs = None;
        }
    }
}

/// Cancels `token` once the cluster state says job `id` is to be
/// cancelled.
async fn watch_for_cancel(meta: Arc<dyn MetadataStore>, id: String, token: CancellationToken) {
    let mut known = None;
    loop {
        match meta.wait_cluster_change(known, CANCEL_POLL).await {
            Ok(Some(v)) => {
                known = Some(v.version);
                let change = v.value.change.as_ref();
                if change.is_some_and(|c| c.id == id && c.cancel_requested) {
                    token.cancel();
                    return;
                }
            }
            Ok(None) => {}
            Err(_) => tokio::time::sleep(CANCEL_POLL).await,
        }
    }
}

/// A new job id: the epoch the change starts from and 32 random bits.
pub(super) fn new_job_id(epoch: u64) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("c{epoch}-{:08x}", h.finish() as u32)
}

impl ClusterManager {
    /// Starts a ring change as a job of this server and returns once its
    /// pending ring is written, with the job's id; or the reason it was
    /// refused ([`Error::Locked`] while another change runs,
    /// [`Error::NodeExists`], a new node that does not answer, ...), in
    /// which case nothing changed. The job then runs on its own: it
    /// commits, or rolls back on a failure or a
    /// [`ClusterManager::cancel_change`].
    pub async fn start_change(&self, kind: ChangeKind) -> Result<ChangeJob> {
        kind.validate()?;
        let (started, job) = oneshot::channel();
        let me = self.clone();
        let done = tokio::spawn(async move { me.change_job(kind, JobRun { started }).await });
        match job.await {
            Ok(info) => Ok(ChangeJob {
                id: info.id,
                what: info.what,
                done,
            }),
            // Refused before it started: its error.
            Err(_) => match done.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => Err(Error::Refused {
                    reason: "the ring change ended before it started".into(),
                }),
                Err(e) => Err(Error::backend("cluster", "a ring change job failed", e)),
            },
        }
    }

    /// The latest ring change: the one under way, or the last one with its
    /// outcome.
    pub async fn current_change(&self) -> Result<Option<ChangeInfo>> {
        Ok(self.state().await?.value.change)
    }

    /// Asks ring change `id` to stop. It stops copying at once (through
    /// whichever web server runs it) and rolls back: the copies it made are
    /// deleted and the ring stays as it was. An interrupted change with a
    /// cancellation is rolled back when it is resumed. Refused once the
    /// change has committed (it is then only deleting surplus copies) or
    /// ended; [`Error::NotFound`] for an id that is not the latest change.
    /// Returns the change as recorded, `cancel_requested` set.
    pub async fn cancel_change(&self, id: &str) -> Result<ChangeInfo> {
        loop {
            let state = self.state().await?;
            let next = transition::request_cancel(&state.value, id)?;
            let info = next.change.clone().expect("the change asked to cancel");
            if !state
                .value
                .change
                .as_ref()
                .is_some_and(|c| c.cancel_requested)
            {
                match self
                    .meta
                    .put_cluster_state(Some(state.version), &next)
                    .await
                {
                    Ok(_) => {}
                    Err(Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            self.cancel_here(id, &info);
            return Ok(info);
        }
    }

    /// Cancels job `id` if it runs here; if it runs nowhere (its server
    /// died), rolls it back now, in the background.
    fn cancel_here(&self, id: &str, info: &ChangeInfo) {
        if let Some(job) = self.jobs.lock().unwrap().as_ref().filter(|j| j.id == id) {
            job.token.cancel();
            return;
        }
        if info.holder != self.config.holder {
            // Its server runs it (and hears of the cancellation) or died:
            // then recovery, once the lock lapses, rolls it back.
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.recover().await {
                    tracing::info!(error = %e, "the cancelled change is left to its own server");
                }
            });
        }
    }

    /// Records how job `info` ended in the cluster state (best effort: the
    /// change itself is done either way).
    pub(super) async fn record_outcome(&self, info: &ChangeInfo, result: &Result<u64>) {
        let outcome = match result {
            Ok(n) => format!("committed, {n} file copies migrated"),
            Err(Error::Cancelled { .. }) => "cancelled, rolled back".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        for _ in 0..10 {
            let Ok(state) = self.state().await else {
                return;
            };
            let Some(next) = transition::record_outcome(&state.value, &info.id, &outcome) else {
                return;
            };
            match self
                .meta
                .put_cluster_state(Some(state.version), &next)
                .await
            {
                Err(Error::Conflict { .. }) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, job = %info.id, "could not record the change's outcome");
                    return;
                }
                Ok(_) => return,
            }
        }
    }
}
