//! The admin gRPC services, hosted by the web server on the admin address
//! (`:8081` by default), and a client for them.
//!
//! Two services share one listener:
//!
//! - `tritontube.VideoContentAdminService`: the course project's protocol,
//!   wire-identical (`AddNode`, `RemoveNode`, `ListNodes`), so that project's
//!   own admin client works against this server unchanged;
//! - `tritontube.cluster.v1.ClusterAdmin`: what that one lacks (status with
//!   node health, verify, repair, weights, a streamed progress feed).
//!
//! Both run on a [`ClusterManager`]. An optional shared-secret token guards
//! them: callers send `authorization: Bearer <token>`.

mod client;
mod states;
mod watch;

pub use client::{AdminClient, ChangeOutcome, RepairOutcome, StatusReport};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::cluster::{
    ClusterManager, DEFAULT_ORPHAN_GRACE, Liveness, Progress, RepairOptions, RepairReport, ring_of,
};
use crate::error::Error;
use crate::id::NodeAddr;
use crate::proto::admin::video_content_admin_service_server::{
    VideoContentAdminService, VideoContentAdminServiceServer,
};
use crate::proto::admin::{
    AddNodeRequest, AddNodeResponse, ListNodesRequest, ListNodesResponse, RemoveNodeRequest,
    RemoveNodeResponse,
};
use crate::proto::cluster as pb;
use crate::proto::cluster::cluster_admin_server::{ClusterAdmin, ClusterAdminServer};

/// Who may use the admin services.
///
/// The cluster service (weights, verify, repair, moves, ...) always needs
/// the token. The course project's service (`AddNode`, `RemoveNode`,
/// `ListNodes`) needs it too, except when the admin listener is on a
/// loopback address: there it stays open, so the course's own admin tool
/// keeps working on one machine.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    /// The shared secret (`authorization: Bearer <token>`); `None` leaves
    /// both services open (only for embedding in a trusted process).
    pub token: Option<String>,
    /// True to serve the course project's service without the token.
    pub course_open: bool,
}

impl AdminAccess {
    /// The rule for a listener on `addr`: the course service is open on
    /// loopback only.
    pub fn for_listener(token: String, addr: std::net::SocketAddr) -> Self {
        AdminAccess {
            token: Some(token),
            course_open: addr.ip().is_loopback(),
        }
    }
}

/// Reads the admin token kept at `path`, or makes a new random one there
/// (mode 0600) on first start. Returns the token.
pub fn load_or_create_token(path: &std::path::Path) -> crate::Result<String> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut raw = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(|e| Error::io("/dev/urandom", e))?;
    let token = hex::encode(raw);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(format!("{token}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    Ok(token)
}

/// Serves both admin services on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    manager: ClusterManager,
    access: AdminAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    let service = AdminService {
        manager: Arc::new(manager),
    };
    let token: Option<Arc<str>> = access.token.map(Arc::from);
    let course = Auth {
        token: token.clone(),
        required: !access.course_open,
    };
    let check = Auth {
        token,
        required: true,
    };
    tonic::transport::Server::builder()
        .add_service(VideoContentAdminServiceServer::with_interceptor(
            service.clone(),
            course,
        ))
        .add_service(ClusterAdminServer::with_interceptor(service, check))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::backend("admin gRPC server", "serving failed", e))
}

#[derive(Clone)]
struct Auth {
    token: Option<Arc<str>>,
    /// False: a caller without a token is let in (the course service on
    /// loopback); a token that is sent must still be the right one.
    required: bool,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.token else {
            return Ok(req);
        };
        let sent = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match sent {
            Some(s) if constant_time_eq(s.as_bytes(), token.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong admin token")),
            None if !self.required => Ok(req),
            None => Err(Status::unauthenticated(
                "this server requires an admin token (authorization: Bearer <token>)",
            )),
        }
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct AdminService {
    manager: Arc<ClusterManager>,
}

fn parse_addr(s: &str) -> Result<NodeAddr, Status> {
    // Surrounding spaces are a typo, not part of an address.
    NodeAddr::new(s.trim()).map_err(|e| {
        tracing::info!(error = %e, "admin request refused");
        Status::from(e)
    })
}

fn refused(e: Error) -> Status {
    tracing::info!(error = %e, "admin request refused");
    Status::from(e)
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl VideoContentAdminService for AdminService {
    async fn add_node(
        &self,
        req: Request<AddNodeRequest>,
    ) -> Result<Response<AddNodeResponse>, Status> {
        let addr = parse_addr(&req.get_ref().node_address)?;
        let n = self.manager.add_node(&addr, 1.0).await.map_err(refused)?;
        Ok(Response::new(AddNodeResponse {
            migrated_file_count: count(n),
        }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let addr = parse_addr(&req.get_ref().node_address)?;
        let n = self.manager.remove_node(&addr).await.map_err(refused)?;
        Ok(Response::new(RemoveNodeResponse {
            migrated_file_count: count(n),
        }))
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let nodes = self.manager.list_nodes().await.map_err(refused)?;
        Ok(Response::new(ListNodesResponse {
            nodes: nodes.into_iter().map(String::from).collect(),
        }))
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<pb::ChangeProgress, Status>> + Send>>;

fn to_pb(p: &Progress) -> pb::ChangeProgress {
    pb::ChangeProgress {
        phase: pb::ChangePhase::from(p.phase).into(),
        files_total: p.files_total,
        files_done: p.files_done,
        bytes_total: p.bytes_total,
        bytes_done: p.bytes_done,
        migrated_file_count: p.migrated,
        message: p.message.clone(),
        orphans_removed: p.orphans_removed,
        orphans_kept: p.orphans_kept,
        orphans_skipped: p.orphans_skipped,
        job_id: p.job.clone(),
    }
}

/// The outcome of a background change, written into its final progress
/// message.
trait Outcome: Send + 'static {
    fn write_to(self, last: &mut pb::ChangeProgress);
}

/// A ring change: the number of file copies moved.
impl Outcome for u64 {
    fn write_to(self, last: &mut pb::ChangeProgress) {
        last.migrated_file_count = self;
    }
}

impl Outcome for RepairReport {
    fn write_to(self, last: &mut pb::ChangeProgress) {
        last.migrated_file_count = self.copies_made;
        last.orphans_removed = self.orphans_removed;
        last.orphans_kept = self.orphans_kept;
        last.orphans_skipped = self.orphans_skipped;
    }
}

/// Runs `change` in the background and streams its progress; the last
/// message carries the outcome (or the stream ends with the error).
fn run_with_progress<F, T>(manager: &Arc<ClusterManager>, change: F) -> ProgressStream
where
    F: Future<Output = crate::Result<T>> + Send + 'static,
    T: Outcome,
{
    let mut rx = manager.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let task = tokio::spawn(change);
        tokio::pin!(task);
        loop {
            tokio::select! {
                done = &mut task => {
                    let msg = match done {
                        Ok(Ok(outcome)) => {
                            let mut last = to_pb(&rx.borrow());
                            last.set_phase(pb::ChangePhase::Done);
                            outcome.write_to(&mut last);
                            Ok(last)
                        }
                        Ok(Err(e)) => Err(refused(e)),
                        Err(e) => Err(Status::internal(format!("ring change task failed: {e}"))),
                    };
                    let _ = tx.send(msg).await;
                    return;
                }
                changed = rx.changed() => {
                    if changed.is_err() { continue; }
                    let p = to_pb(&rx.borrow_and_update());
                    if p.phase() != pb::ChangePhase::Done {
                        // A slow reader only misses intermediate updates.
                        let _ = tx.try_send(Ok(p));
                    }
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}

#[tonic::async_trait]
impl ClusterAdmin for AdminService {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let state = self.manager.state().await.map_err(refused)?.value;
        let health = self.manager.health_all().await.map_err(refused)?;
        let tracker = self.manager.health_tracker();
        let ring = ring_of(&state.nodes, state.vnodes);
        let shares = ring_shares(&ring);
        let nodes = health
            .into_iter()
            .map(|(entry, h)| {
                let in_ring = state.nodes.iter().any(|n| n.addr == entry.addr);
                let share = shares
                    .iter()
                    .find(|(a, _)| a == entry.addr.as_str())
                    .map(|(_, s)| *s)
                    .unwrap_or(0.0);
                // The failure detector's view (state, since when, last
                // error), checked against the answer just obtained.
                let seen = tracker.and_then(|t| t.get(&entry.addr));
                let (files, bytes) = match &h {
                    Ok(h) => (h.file_count, h.total_bytes),
                    Err(_) => (0, 0),
                };
                let (health, since) = match (&seen, &h) {
                    (Some(n), Ok(_)) => (n.state, Some(n.since)),
                    (Some(n), Err(_)) if n.state != Liveness::Up => (n.state, Some(n.since)),
                    (_, Err(_)) => (Liveness::Suspect, None),
                    (None, Ok(_)) => (Liveness::Up, None),
                };
                let last_error = match &h {
                    Err(e) => e.to_string(),
                    Ok(_) => seen.and_then(|n| n.last_error).unwrap_or_default(),
                };
                pb::NodeStatus {
                    address: entry.addr.to_string(),
                    weight: entry.weight,
                    health: pb::NodeLiveness::from(health).into(),
                    last_error,
                    health_since_ms: since
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0),
                    file_count: files,
                    total_bytes: bytes,
                    ring_share: share,
                    pending: !in_ring,
                    node_id: match &h {
                        Ok(h) if !h.node_id.is_empty() => h.node_id.clone(),
                        _ => entry.id.clone(),
                    },
                    reached_at: entry
                        .reach
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    quarantined: h.as_ref().map(|h| h.quarantined).unwrap_or(0),
                    indexed_percent: h.as_ref().ok().and_then(|h| h.indexing).unwrap_or(100.0),
                }
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            nodes,
            replicas: state.replicas,
            vnodes: state.vnodes,
            epoch: state.epoch,
            change_in_progress: state.pending.is_some() || state.previous.is_some(),
            change: state.change.as_ref().map(watch::job_to_pb),
        }))
    }

    type AddNodeStream = ProgressStream;
    async fn add_node(
        &self,
        req: Request<pb::ChangeRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let addr = parse_addr(&req.node_address)?;
        let weight = if req.weight == 0.0 { 1.0 } else { req.weight };
        let m = self.manager.clone();
        Ok(Response::new(run_with_progress(
            &self.manager,
            async move { m.add_node(&addr, weight).await },
        )))
    }

    type RemoveNodeStream = ProgressStream;
    async fn remove_node(
        &self,
        req: Request<pb::ChangeRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let addr = parse_addr(&req.get_ref().node_address)?;
        let m = self.manager.clone();
        Ok(Response::new(run_with_progress(
            &self.manager,
            async move { m.remove_node(&addr).await },
        )))
    }

    type SetWeightStream = ProgressStream;
    async fn set_weight(
        &self,
        req: Request<pb::SetWeightRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let req = req.into_inner();
        let addr = parse_addr(&req.node_address)?;
        let m = self.manager.clone();
        Ok(Response::new(run_with_progress(
            &self.manager,
            async move { m.set_weight(&addr, req.weight).await },
        )))
    }

    async fn move_node(
        &self,
        req: Request<pb::MoveNodeRequest>,
    ) -> Result<Response<pb::MoveNodeResponse>, Status> {
        let addr = parse_addr(&req.get_ref().node_address)?;
        let to = parse_addr(&req.get_ref().new_address)?;
        self.manager.move_node(&addr, &to).await.map_err(refused)?;
        Ok(Response::new(pb::MoveNodeResponse {}))
    }

    type WatchChangeStream = ProgressStream;
    async fn watch_change(
        &self,
        req: Request<pb::WatchChangeRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let id = req.into_inner().job_id;
        if id.is_empty() {
            return Ok(Response::new(watch::running(&self.manager)));
        }
        let stream = watch::job(&self.manager, &id).await.map_err(refused)?;
        Ok(Response::new(stream))
    }

    async fn cancel_change(
        &self,
        req: Request<pb::CancelChangeRequest>,
    ) -> Result<Response<pb::CancelChangeResponse>, Status> {
        let id = req.into_inner().job_id;
        if id.is_empty() {
            return Err(refused(Error::invalid(
                "job id",
                "",
                "give the change's job id",
            )));
        }
        let info = self.manager.cancel_change(&id).await.map_err(refused)?;
        tracing::info!(job = %id, change = %info.what, "ring change cancellation asked");
        Ok(Response::new(pb::CancelChangeResponse {
            change: Some(watch::job_to_pb(&info)),
        }))
    }

    async fn verify(
        &self,
        _: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let report = self.manager.verify().await.map_err(refused)?;
        Ok(Response::new(pb::VerifyResponse {
            files_checked: report.files_checked,
            problems: report
                .problems
                .iter()
                .map(|p| pb::Problem {
                    key: p.key().to_string(),
                    kind: pb::ProblemKind::from(p).into(),
                    node: p.node().to_string(),
                    detail: p.detail().to_string(),
                })
                .collect(),
        }))
    }

    type RepairStream = ProgressStream;
    async fn repair(
        &self,
        req: Request<pb::RepairRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let options = RepairOptions {
            orphan_grace: req
                .get_ref()
                .orphan_grace_secs
                .map_or(DEFAULT_ORPHAN_GRACE, std::time::Duration::from_secs),
        };
        let m = self.manager.clone();
        Ok(Response::new(run_with_progress(
            &self.manager,
            async move { m.repair_with(&options).await },
        )))
    }
}

/// Each node's exact share of the hash space.
fn ring_shares(ring: &crate::ring::TokenRing) -> Vec<(String, f64)> {
    ring.shares()
        .into_iter()
        .map(|(a, s)| (a.to_string(), s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/admin-token");
        let t = load_or_create_token(&path).unwrap();
        assert_eq!(t.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "only its owner may read it");
        assert_eq!(
            load_or_create_token(&path).unwrap(),
            t,
            "kept across starts"
        );
        let other = load_or_create_token(&dir.path().join("elsewhere")).unwrap();
        assert_ne!(other, t);
    }

    #[test]
    fn the_course_service_is_open_on_loopback_only() {
        let t = || "x".to_string();
        for (addr, open) in [
            ("127.0.0.1:8081", true),
            ("[::1]:8081", true),
            ("0.0.0.0:8081", false),
            ("10.1.2.3:8081", false),
        ] {
            let a = AdminAccess::for_listener(t(), addr.parse().unwrap());
            assert_eq!(a.course_open, open, "{addr}");
        }
    }
}
