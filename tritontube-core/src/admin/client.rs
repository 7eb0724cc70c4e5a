//! A client for the admin services, used by `tritontube-admin`.

use std::time::Duration;

use futures::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::error::{Error, Result};
use crate::proto::admin::ListNodesRequest;
use crate::proto::admin::video_content_admin_service_client::VideoContentAdminServiceClient;
use crate::proto::cluster as pb;
use crate::proto::cluster::cluster_admin_client::ClusterAdminClient;

/// The result of a ring change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    /// File copies moved.
    pub migrated: u64,
}

/// The result of a repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairOutcome {
    /// File copies made.
    pub copies_made: u64,
    /// Orphans (files of no video) removed, copies and file records.
    pub orphans_removed: u64,
    /// Orphans kept because they became live during the grace period.
    pub orphans_kept: u64,
    /// Files left alone because their video record could not be read, or a
    /// copy could not be deleted (the web server's log names each).
    pub orphans_skipped: u64,
}

/// The cluster status as the admin service reports it.
pub type StatusReport = pb::StatusResponse;

/// A connection to a web server's admin address.
#[derive(Debug, Clone)]
pub struct AdminClient {
    channel: Channel,
    server: String,
    token: Option<String>,
}

impl AdminClient {
    /// Connects to `server` (`host:port`). Ring changes can take long, so no
    /// deadline is put on a request; only connecting is bounded.
    pub async fn connect(server: &str, token: Option<String>) -> Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{server}"))
            .map_err(|e| Error::invalid("admin server address", server, e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|e| Error::Unavailable {
            what: format!("admin service at {server}"),
            reason: format!("cannot connect: {e}"),
        })?;
        Ok(AdminClient {
            channel,
            server: server.to_string(),
            token,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = MetadataValue::try_from(format!("Bearer {t}"))
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    fn error(&self, s: Status) -> Error {
        status_to_error(&self.server, s)
    }

    /// The storage nodes in ring order (the course project's `ListNodes`).
    pub async fn list(&self) -> Result<Vec<String>> {
        let mut c = VideoContentAdminServiceClient::new(self.channel.clone());
        let r = c
            .list_nodes(self.request(ListNodesRequest {}))
            .await
            .map_err(|s| self.error(s))?;
        Ok(r.into_inner().nodes)
    }

    /// Adds a node, calling `progress` with each update. `weight` 0 means 1.0.
    pub async fn add(
        &self,
        node: &str,
        weight: f64,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<ChangeOutcome> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::ChangeRequest {
            node_address: node.to_string(),
            weight,
        });
        let stream = c
            .add_node(req)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        self.follow(stream, progress).await
    }

    /// Removes a node, calling `progress` with each update.
    pub async fn remove(
        &self,
        node: &str,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<ChangeOutcome> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::ChangeRequest {
            node_address: node.to_string(),
            weight: 0.0,
        });
        let stream = c
            .remove_node(req)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        self.follow(stream, progress).await
    }

    /// Changes a node's weight, calling `progress` with each update.
    pub async fn set_weight(
        &self,
        node: &str,
        weight: f64,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<ChangeOutcome> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::SetWeightRequest {
            node_address: node.to_string(),
            weight,
        });
        let stream = c
            .set_weight(req)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        self.follow(stream, progress).await
    }

    /// Records that member `node` (its ring name) is now reached at
    /// `new_address`; no data moves.
    pub async fn move_node(&self, node: &str, new_address: &str) -> Result<()> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::MoveNodeRequest {
            node_address: node.to_string(),
            new_address: new_address.to_string(),
        });
        c.move_node(req).await.map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Repairs placement and removes orphans, calling `progress` with each
    /// update. An orphan is removed only if it still is one `orphan_grace`
    /// after it was found (`None`: the server's default, 60 s).
    pub async fn repair(
        &self,
        orphan_grace: Option<Duration>,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<RepairOutcome> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::RepairRequest {
            orphan_grace_secs: orphan_grace.map(|g| g.as_secs()),
        });
        let stream = c.repair(req).await.map_err(|s| self.error(s))?.into_inner();
        let last = self.follow_to_end(stream, progress).await?;
        Ok(RepairOutcome {
            copies_made: last.migrated_file_count,
            orphans_removed: last.orphans_removed,
            orphans_kept: last.orphans_kept,
            orphans_skipped: last.orphans_skipped,
        })
    }

    /// Cluster status with every node's health.
    pub async fn status(&self) -> Result<StatusReport> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let r = c
            .status(self.request(pb::StatusRequest {}))
            .await
            .map_err(|s| self.error(s))?;
        Ok(r.into_inner())
    }

    /// Checks every file belongs to a video, is on exactly its owners and
    /// matches its record (orphans reported as such).
    pub async fn verify(&self) -> Result<pb::VerifyResponse> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let r = c
            .verify(self.request(pb::VerifyRequest {}))
            .await
            .map_err(|s| self.error(s))?;
        Ok(r.into_inner())
    }

    async fn follow(
        &self,
        stream: tonic::Streaming<pb::ChangeProgress>,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<ChangeOutcome> {
        let last = self.follow_to_end(stream, progress).await?;
        Ok(ChangeOutcome {
            migrated: last.migrated_file_count,
        })
    }

    /// Follows a progress stream to its final ("done") message.
    async fn follow_to_end(
        &self,
        mut stream: tonic::Streaming<pb::ChangeProgress>,
        mut progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<pb::ChangeProgress> {
        let mut last = None;
        while let Some(msg) = stream.next().await {
            let msg = msg.map_err(|s| self.error(s))?;
            progress(&msg);
            last = Some(msg);
        }
        match last {
            Some(m) if m.phase == "done" => Ok(m),
            _ => Err(Error::Unavailable {
                what: format!("admin service at {}", self.server),
                reason: "the progress stream ended before the change finished".into(),
            }),
        }
    }
}

/// Turns a gRPC status from the admin service back into an [`Error`].
fn status_to_error(server: &str, s: Status) -> Error {
    use tonic::Code;
    // The server's message often starts with its own "refused: ".
    let msg = s.message().trim_start_matches("refused: ").to_string();
    match s.code() {
        // The server's message already says what was wrong and with what.
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted => Error::Refused { reason: msg },
        Code::Unauthenticated => Error::Unauthenticated { reason: msg },
        Code::Unavailable => Error::Unavailable {
            what: format!("admin service at {server}"),
            reason: msg,
        },
        _ => Error::Backend {
            backend: "admin service",
            message: format!("{:?}: {msg}", s.code()),
            source: None,
        },
    }
}
