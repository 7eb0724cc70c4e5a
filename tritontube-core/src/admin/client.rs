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

/// How long connecting to the admin service may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Connects to `server`: `host:port`, or the same as an `http://` URL
    /// (the scheme is dropped). Ring changes can take long, so no deadline
    /// is put on a request; only connecting is bounded.
    ///
    /// When the address is wrong the error says how: a name that does not
    /// resolve, nothing listening there, or (found on the first call) a web
    /// server's HTTP port or a storage node instead of the admin service.
    pub async fn connect(server: &str, token: Option<String>) -> Result<Self> {
        let target = Self::parse_address(server)?;
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| Error::invalid("admin server address", server, e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => return Err(diagnose::unreachable(&target, &e).await),
        };
        Ok(AdminClient {
            channel,
            server: target,
            token,
        })
    }

    /// The `host:port` an admin address names, as a user may type it:
    /// `localhost:8081`, `http://localhost:8081`, `http://localhost:8081/`.
    ///
    /// ```
    /// use tritontube_core::admin::AdminClient;
    /// assert_eq!(AdminClient::parse_address("http://host:8081/").unwrap(), "host:8081");
    /// assert_eq!(AdminClient::parse_address("[::1]:8081").unwrap(), "[::1]:8081");
    /// assert!(AdminClient::parse_address("nonsense").unwrap_err().to_string().contains("port"));
    /// assert!(AdminClient::parse_address("https://host:8081").is_err());
    /// ```
    pub fn parse_address(server: &str) -> Result<String> {
        let invalid = |reason: &str| Error::invalid("admin server address", server, reason);
        let s = server.trim();
        let lower = s.to_ascii_lowercase();
        let s = if lower.starts_with("http://") {
            &s["http://".len()..]
        } else if lower.starts_with("https://") {
            return Err(invalid(
                "the admin service speaks plain gRPC, not TLS: give host:port, e.g. localhost:8081",
            ));
        } else if lower.contains("://") {
            return Err(invalid("give host:port, e.g. localhost:8081"));
        } else {
            s
        };
        let s = s.strip_suffix('/').unwrap_or(s);
        if s.contains('/') {
            return Err(invalid(
                "an admin address has no path: give host:port, e.g. localhost:8081",
            ));
        }
        match s.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && !host.ends_with(':')
                    && port.parse::<u16>().is_ok_and(|p| p > 0) =>
            {
                Ok(s.to_string())
            }
            Some((_, port)) if !port.is_empty() && !port.ends_with(']') => Err(invalid(
                "the port must be a number from 1 to 65535: give host:port, e.g. localhost:8081",
            )),
            _ => Err(invalid(
                "no port: give host:port, e.g. localhost:8081 (the web server's admin port, default 8081)",
            )),
        }
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

    /// The answer of a call, or its error; an answer that is not from the
    /// admin service at all (an HTTP server, a storage node) is explained.
    async fn call<T>(&self, r: std::result::Result<tonic::Response<T>, Status>) -> Result<T> {
        match r {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.explain(s).await),
        }
    }

    /// The error for `s`, saying so when the answer was not from the admin
    /// service at all.
    async fn explain(&self, s: Status) -> Error {
        match diagnose::not_admin(&self.server, &s).await {
            Some(e) => e,
            None => self.error(s),
        }
    }

    /// The storage nodes in ring order (the course project's `ListNodes`).
    pub async fn list(&self) -> Result<Vec<String>> {
        let mut c = VideoContentAdminServiceClient::new(self.channel.clone());
        let r = self
            .call(c.list_nodes(self.request(ListNodesRequest {})).await)
            .await?;
        Ok(r.nodes)
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
        let stream = self.call(c.add_node(req).await).await?;
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
        let stream = self.call(c.remove_node(req).await).await?;
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
        let stream = self.call(c.set_weight(req).await).await?;
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
        self.call(c.move_node(req).await).await?;
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
        let stream = self.call(c.repair(req).await).await?;
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
        self.call(c.status(self.request(pb::StatusRequest {})).await)
            .await
    }

    /// Checks every file belongs to a video, is on exactly its owners and
    /// matches its record (orphans reported as such).
    pub async fn verify(&self) -> Result<pb::VerifyResponse> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        self.call(c.verify(self.request(pb::VerifyRequest {})).await)
            .await
    }

    /// Follows ring change `job_id` (`None`: whatever runs now) to its end,
    /// calling `progress` with each update; returns the final message.
    pub async fn watch(
        &self,
        job_id: Option<&str>,
        progress: impl FnMut(&pb::ChangeProgress),
    ) -> Result<pb::ChangeProgress> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::WatchChangeRequest {
            job_id: job_id.unwrap_or_default().to_string(),
        });
        let stream = self.call(c.watch_change(req).await).await?;
        self.follow_to_end(stream, progress).await
    }

    /// Cancels ring change `job_id`: it stops and rolls back (see
    /// [`crate::cluster::ClusterManager::cancel_change`]). Returns the job
    /// as recorded; [`AdminClient::watch`] follows it to its end.
    pub async fn cancel(&self, job_id: &str) -> Result<pb::ChangeJob> {
        let mut c = ClusterAdminClient::new(self.channel.clone());
        let req = self.request(pb::CancelChangeRequest {
            job_id: job_id.to_string(),
        });
        let r = self.call(c.cancel_change(req).await).await?;
        r.change.ok_or_else(|| Error::Backend {
            backend: "admin service",
            message: "the cancellation's answer names no change".into(),
            source: None,
        })
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
            let msg = match msg {
                Ok(m) => m,
                // A stream whose very first message fails may not be from
                // the admin service at all (a streamed answer's HTTP status
                // is only read with its first message).
                Err(s) if last.is_none() => return Err(self.explain(s).await),
                Err(s) => return Err(self.error(s)),
            };
            progress(&msg);
            last = Some(msg);
        }
        match last {
            Some(m) if m.phase() == pb::ChangePhase::Done => Ok(m),
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
        Code::Cancelled => Error::Cancelled {
            what: msg.trim_start_matches("cancelled: ").to_string(),
        },
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

/// Why an address is not the admin service, in words that say what to fix.
mod diagnose {
    use std::io::ErrorKind;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::{Code, Status};

    use super::CONNECT_TIMEOUT;
    use crate::error::Error;

    /// Where the admin service is, for every message that says it is not here.
    const WHERE: &str = "the admin service listens on the web server's admin port (default \
        8081: the first address of its `nw` option)";

    /// How long the HTTP probe may take in all.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

    /// Why connecting to `target` failed: its name does not resolve,
    /// nothing listens there, no answer, or something that is not gRPC.
    pub(super) async fn unreachable(target: &str, err: &tonic::transport::Error) -> Error {
        let host = target
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(target)
            .trim_start_matches('[')
            .trim_end_matches(']');
        match tokio::net::lookup_host(target).await.map(|a| a.count()) {
            Ok(0) => return unresolved(target, host, "no address"),
            Ok(_) => {}
            Err(e) => return unresolved(target, host, &e.to_string()),
        }
        let unavailable = |reason: String| Error::Unavailable {
            what: format!("admin service at {target}"),
            reason,
        };
        let connected =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(target));
        match connected.await {
            Err(_) => unavailable(format!(
                "no answer within {} s: check that the host is up and that no firewall drops the port",
                CONNECT_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => unavailable(format!(
                "nothing listens there (connection refused): check that the web server runs, \
                 with storage nodes (`nw` content); {WHERE}"
            )),
            Ok(Err(e)) => unavailable(format!(
                "cannot connect ({e}): check the host and the network"
            )),
            Ok(Ok(_)) => match http_probe(target).await {
                Some(answer) => answer.error(target),
                None => unavailable(format!(
                    "connected, but no gRPC answer ({}); {WHERE}",
                    chain(err)
                )),
            },
        }
    }

    /// If `status` (from a call to `target`) came from something other than
    /// the admin service, what it was.
    pub(super) async fn not_admin(target: &str, status: &Status) -> Option<Error> {
        // The admin service's own refusals carry these codes and say what
        // was wrong; anything else (a reply that is not gRPC, a connection
        // torn down by a server that speaks no HTTP/2) is worth a look at
        // what listens there. The look changes the message only if an HTTP
        // server answers, which a gRPC server never does.
        let refusal = matches!(
            status.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Unauthenticated
                | Code::PermissionDenied
        );
        if refusal && !status.message().contains("grpc-status header missing") {
            return None;
        }
        match http_probe(target).await {
            Some(answer) => Some(answer.error(target)),
            None if status.code() == Code::Unimplemented => Some(Error::invalid(
                "admin server address",
                target,
                format!(
                    "it answers gRPC but does not offer this admin call (a storage node? or a \
                     server with only the course project's list, add and remove?); {WHERE}"
                ),
            )),
            None => None,
        }
    }

    fn unresolved(target: &str, host: &str, why: &str) -> Error {
        Error::invalid(
            "admin server address",
            target,
            format!(
                "cannot resolve the host name {host:?} ({why}); check its spelling, or give an IP \
                 address such as 127.0.0.1"
            ),
        )
    }

    /// An HTTP/1.1 server answered the probe.
    struct HttpAnswer {
        /// It is a TritonTube web server (its `/healthz` answered).
        tritontube: bool,
    }

    impl HttpAnswer {
        fn error(&self, target: &str) -> Error {
            let reason = if self.tritontube {
                format!("that is the web server's HTTP port; {WHERE}")
            } else {
                format!("an HTTP server answers there, not the admin service (gRPC); {WHERE}")
            };
            Error::invalid("admin server address", target, reason)
        }
    }

    /// Asks `target` for `/healthz` over plain HTTP/1.1: `Some` if an HTTP
    /// server answers. A gRPC server (HTTP/2 only) does not.
    async fn http_probe(target: &str) -> Option<HttpAnswer> {
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(target).await.ok()?;
            let req = format!(
                "GET /healthz HTTP/1.1\r\nHost: {target}\r\nUser-Agent: tritontube-admin\r\n\
                 Accept: application/json\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::new();
            // Enough for the status line, headers and a /healthz body.
            let _ = (&mut s).take(64 * 1024).read_to_end(&mut buf).await;
            buf.starts_with(b"HTTP/").then(|| {
                let text = String::from_utf8_lossy(&buf);
                HttpAnswer {
                    tritontube: text.contains("\"transcode_queue\""),
                }
            })
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
    }

    /// An error and its sources, one sentence (tonic's own says only
    /// "transport error").
    fn chain(err: &(dyn std::error::Error + 'static)) -> String {
        let mut out = err.to_string();
        let mut next = err.source();
        while let Some(e) = next {
            out.push_str(": ");
            out.push_str(&e.to_string());
            next = e.source();
        }
        out
    }
}
