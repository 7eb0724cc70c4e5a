//! Following ring changes: the one running here (its live progress), or
//! any one by job id, wherever it runs (its state, as the cluster state
//! records it).

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::{ProgressStream, to_pb};
use crate::cluster::{ClusterManager, Phase};
use crate::error::{Error, Result};
use crate::metadata::ChangeInfo;
use crate::proto::cluster as pb;

/// How often a change running on another web server is looked at.
const REMOTE_POLL: Duration = Duration::from_millis(500);

/// A job as the admin protocol shows it.
pub(super) fn job_to_pb(c: &ChangeInfo) -> pb::ChangeJob {
    pb::ChangeJob {
        job_id: c.id.clone(),
        what: c.what.clone(),
        holder: c.holder.clone(),
        started_ms: c.started_ms,
        cancel_requested: c.cancel_requested,
        outcome: c.outcome.clone().unwrap_or_default(),
    }
}

fn stream(out: tokio::sync::mpsc::Receiver<Result<pb::ChangeProgress, Status>>) -> ProgressStream {
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}

/// The progress of whatever runs through this server now, until it ends.
pub(super) fn running(manager: &Arc<ClusterManager>) -> ProgressStream {
    let mut rx = manager.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let p = to_pb(&rx.borrow_and_update());
            let done = matches!(p.phase(), pb::ChangePhase::Done | pb::ChangePhase::Idle);
            if tx.send(Ok(p)).await.is_err() || done {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    stream(out)
}

/// The progress of ring change `id` until it ends: live if it runs here,
/// else its phase as the cluster state records it. [`Error::NotFound`]
/// if `id` is not the latest change.
pub(super) async fn job(manager: &Arc<ClusterManager>, id: &str) -> Result<ProgressStream> {
    let Some(info) = manager.current_change().await?.filter(|c| c.id == id) else {
        return Err(Error::NotFound {
            key: format!("ring change {id}"),
        });
    };
    let local = manager.subscribe().borrow().job == id;
    if local && info.outcome.is_none() {
        return Ok(running(manager));
    }
    let (tx, out) = tokio::sync::mpsc::channel(16);
    let (manager, id) = (manager.clone(), id.to_string());
    tokio::spawn(async move {
        loop {
            let msg = match manager.state().await {
                Ok(s) => match s.value.change.filter(|c| c.id == id) {
                    Some(c) => Ok(recorded(
                        &c,
                        s.value.pending.is_some(),
                        s.value.previous.is_some(),
                    )),
                    None => Err(Status::not_found(format!(
                        "ring change {id} is no longer the latest"
                    ))),
                },
                Err(e) => Err(Status::from(e)),
            };
            let last = msg
                .as_ref()
                .map_or(true, |m| m.phase() == pb::ChangePhase::Done);
            if tx.send(msg).await.is_err() || last {
                return;
            }
            tokio::time::sleep(REMOTE_POLL).await;
        }
    });
    Ok(stream(out))
}

/// A change's progress as the cluster state shows it.
fn recorded(c: &ChangeInfo, pending: bool, previous: bool) -> pb::ChangeProgress {
    let (phase, message) = match &c.outcome {
        Some(outcome) if !pending => (Phase::Done, format!("{}: {outcome}", c.what)),
        _ if pending => (
            Phase::Copying,
            format!("{}: copying on {}", c.what, c.holder),
        ),
        _ if previous => (
            Phase::Cleaning,
            format!("{}: deleting surplus copies", c.what),
        ),
        _ => (Phase::Cleaning, format!("{}: finishing", c.what)),
    };
    pb::ChangeProgress {
        phase: pb::ChangePhase::from(phase).into(),
        message,
        job_id: c.id.clone(),
        ..Default::default()
    }
}
