//! [`NodeClient`]: one storage node over gRPC, as a [`ContentStore`].

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::{MAX_CHUNK, NodeHealth, key_from_pb, key_to_pb};
use crate::error::{Error, Result};
use crate::id::{ContentKey, NodeAddr, VideoId};
use crate::proto::storage as pb;
use crate::proto::storage::storage_node_client::StorageNodeClient;
use crate::ring::HashRange;
use crate::store::{
    ByteStream, ContentStore, GetOptions, GetResult, MetaStream, ObjectMeta, PutOptions,
    Sha256Digest,
};

/// Timeouts of a [`NodeClient`].
#[derive(Debug, Clone)]
pub struct NodeClientConfig {
    /// Establishing a connection.
    pub connect_timeout: Duration,
    /// A unary request (stat, delete, health), or the first answer of a
    /// streamed one.
    pub request_timeout: Duration,
}

impl Default for NodeClientConfig {
    fn default() -> Self {
        NodeClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A storage node reached over gRPC. Connects lazily and reconnects by
/// itself, so a client can be made for a node that is not up yet.
#[derive(Debug, Clone)]
pub struct NodeClient {
    addr: NodeAddr,
    channel: Channel,
    config: NodeClientConfig,
}

impl NodeClient {
    /// A client for the node at `addr`.
    pub fn new(addr: NodeAddr, config: NodeClientConfig) -> Self {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("a validated node address is a valid URI")
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .initial_stream_window_size(super::STREAM_WINDOW)
            .initial_connection_window_size(super::CONNECTION_WINDOW)
            .connect_lazy();
        NodeClient {
            addr,
            channel,
            config,
        }
    }

    /// Has this node copy `key` straight from the node at `source`, checked
    /// against `opts` (the bytes do not pass through this process).
    pub async fn copy_from(
        &self,
        key: &ContentKey,
        source: &NodeAddr,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let req = pb::CopyFromRequest {
            key: Some(key_to_pb(key)),
            source: source.to_string(),
            expected_sha256: opts
                .expected_sha256
                .map(|d| d.0.to_vec())
                .unwrap_or_default(),
            expected_size: opts.expected_size.unwrap_or(0),
        };
        let r = self
            .client()
            .copy_from(req)
            .await
            .map_err(|s| self.error(Some(key), s))?;
        meta_from_pb(&self.addr, r.into_inner().info)
    }

    /// Lists the files whose ring hash lies in `ranges` (ascending, not
    /// overlapping), in (hash, key) order, strictly after `after` (to resume
    /// an interrupted listing).
    pub fn list_ranges(
        &self,
        ranges: &[HashRange],
        after: Option<&ContentKey>,
    ) -> MetaStream<'static> {
        self.list_request(pb::ListRequest {
            video_id: String::new(),
            ranges: ranges
                .iter()
                .map(|r| pb::HashRange {
                    start: r.start,
                    end: r.end.unwrap_or(0),
                    has_end: r.end.is_some(),
                })
                .collect(),
            after: after.map(key_to_pb),
        })
    }

    fn list_request(&self, req: pb::ListRequest) -> MetaStream<'static> {
        let me = self.clone();
        let pages = futures::stream::once(async move {
            let mut client = me.client();
            let s = tokio::time::timeout(me.config.request_timeout, client.list(req))
                .await
                .map_err(|_| me.timeout_error("list"))?
                .map_err(|s| me.error(None, s))?
                .into_inner();
            let me2 = me.clone();
            Ok::<_, Error>(s.map(move |page| {
                match page {
                    Ok(p) => p
                        .files
                        .into_iter()
                        .map(|f| meta_from_pb(&me2.addr, Some(f)))
                        .collect::<Vec<_>>(),
                    Err(s) => vec![Err(me2.error(None, s))],
                }
            }))
        });
        Box::pin(
            pages
                .map(|r| match r {
                    Ok(s) => s.flat_map(futures::stream::iter).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten(),
        )
    }

    /// The node's address.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    fn client(&self) -> StorageNodeClient<Channel> {
        StorageNodeClient::new(self.channel.clone())
    }

    /// Converts a gRPC status from this node into an [`Error`].
    fn error(&self, key: Option<&ContentKey>, s: Status) -> Error {
        let key_s = key.map(|k| k.to_string()).unwrap_or_default();
        let kind = s
            .metadata()
            .get(crate::error::ERROR_KIND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match kind {
            "checksum-mismatch" => {
                return Error::ChecksumMismatch {
                    key: key_s,
                    expected: String::new(),
                    actual: s.message().to_string(),
                };
            }
            "unavailable" => {
                return Error::Unavailable {
                    what: format!("storage node {}", self.addr),
                    reason: s.message().to_string(),
                };
            }
            "bad-copy" => {
                return Error::BadCopy {
                    key: key_s,
                    detail: format!("on {}: {}", self.addr, s.message()),
                };
            }
            "full" => {
                let number = |header: &str| {
                    s.metadata()
                        .get(header)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                return Error::Full {
                    node: self.addr.to_string(),
                    key: key_s,
                    needed: number(crate::error::FULL_NEEDED_HEADER).unwrap_or(0),
                    capacity: number(crate::error::FULL_CAPACITY_HEADER),
                    free: number(crate::error::FULL_FREE_HEADER),
                };
            }
            _ => {}
        }
        match s.code() {
            Code::NotFound => Error::NotFound {
                key: if key_s.is_empty() {
                    s.message().to_string()
                } else {
                    key_s
                },
            },
            Code::InvalidArgument => Error::InvalidInput {
                what: "request to storage node",
                value: key_s,
                reason: s.message().to_string(),
            },
            Code::DataLoss => Error::BadCopy {
                key: key_s,
                detail: format!("on {}: {}", self.addr, s.message()),
            },
            Code::Unimplemented => Error::Unsupported {
                node: self.addr.to_string(),
                what: s.message().to_string(),
            },
            _ => Error::Node {
                node: self.addr.to_string(),
                message: format!("{:?}: {}", s.code(), s.message()),
                source: None,
            },
        }
    }

    fn timeout_error(&self, what: &str) -> Error {
        Error::Node {
            node: self.addr.to_string(),
            message: format!("{what}: no answer within {:?}", self.config.request_timeout),
            source: None,
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.config.request_timeout, f)
            .await
            .unwrap_or_else(|_| Err(self.timeout_error(what)))
    }

    /// Asks the node whether it is serving, and what it holds.
    pub async fn health(&self) -> Result<NodeHealth> {
        self.timed("health", async {
            let r = self
                .client()
                .health(pb::HealthRequest {})
                .await
                .map_err(|s| self.error(None, s))?
                .into_inner();
            if r.serving() != pb::ServingState::Serving {
                return Err(Error::Node {
                    node: self.addr.to_string(),
                    message: format!("not serving: {}", r.problem),
                    source: None,
                });
            }
            Ok(NodeHealth {
                node_id: r.node_id,
                file_count: r.file_count,
                total_bytes: r.total_bytes,
                indexing: r.indexing.then_some(r.indexing_percent),
                quarantined: r.quarantined,
                scrubbed_files: r.scrubbed_files,
                scrub_cycles: r.scrub_cycles,
                capacity_bytes: r.capacity_bytes,
            })
        })
        .await
    }
}

fn meta_from_pb(node: &NodeAddr, info: Option<pb::FileInfo>) -> Result<ObjectMeta> {
    let bad = |why: &str| Error::Node {
        node: node.to_string(),
        message: format!("malformed answer: {why}"),
        source: None,
    };
    let info = info.ok_or_else(|| bad("missing file info"))?;
    Ok(ObjectMeta {
        key: key_from_pb(info.key.as_ref()).map_err(|e| bad(&e.to_string()))?,
        size: info.size,
        sha256: Sha256Digest::from_slice(&info.sha256)
            .ok_or_else(|| bad("sha256 is not 32 bytes"))?,
    })
}

/// Splits a body into messages of at most [`MAX_CHUNK`] bytes.
fn rechunk(body: ByteStream) -> impl futures::Stream<Item = Result<Bytes>> + Send {
    body.flat_map(|c| {
        let parts: Vec<Result<Bytes>> = match c {
            Ok(b) if b.len() <= MAX_CHUNK => vec![Ok(b)],
            Ok(b) => (0..b.len())
                .step_by(MAX_CHUNK)
                .map(|i| Ok(b.slice(i..(i + MAX_CHUNK).min(b.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(parts)
    })
}

#[async_trait]
impl ContentStore for NodeClient {
    async fn put(
        &self,
        key: &ContentKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let header = pb::PutRequest {
            header: Some(pb::PutHeader {
                key: Some(key_to_pb(key)),
                expected_sha256: opts
                    .expected_sha256
                    .map(|d| d.0.to_vec())
                    .unwrap_or_default(),
                expected_size: opts.expected_size.unwrap_or(0),
            }),
            chunk: Bytes::new(),
        };
        // The body is fed through a channel by a future polled alongside the
        // call. If the body fails, the call is dropped, which resets the
        // stream, and the node discards the partial file.
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::PutRequest>(4);
        let feed = async move {
            if tx.send(header).await.is_err() {
                return Ok(());
            }
            let mut chunks = std::pin::pin!(rechunk(body));
            while let Some(c) = chunks.next().await {
                let msg = pb::PutRequest {
                    header: None,
                    chunk: c?,
                };
                if tx.send(msg).await.is_err() {
                    // The call ended early; its result says why.
                    return Ok(());
                }
            }
            Ok::<(), Error>(())
        };
        let mut client = self.client();
        let call = client.put(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::pin!(call, feed);
        let mut fed = false;
        loop {
            tokio::select! {
                res = &mut call => {
                    return match res {
                        Ok(r) => meta_from_pb(&self.addr, r.into_inner().info),
                        Err(s) => Err(self.error(Some(key), s)),
                    };
                }
                done = &mut feed, if !fed => {
                    done?;
                    fed = true;
                }
            }
        }
    }

    async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult> {
        let req = pb::GetRequest {
            key: Some(key_to_pb(key)),
            range: opts.range.clone().map(|r| pb::ByteRange {
                start: r.start,
                end: r.end,
            }),
        };
        let (meta, stream) = self
            .timed("get", async {
                let mut stream = self
                    .client()
                    .get(req)
                    .await
                    .map_err(|s| self.error(Some(key), s))?
                    .into_inner();
                let first = stream
                    .message()
                    .await
                    .map_err(|s| self.error(Some(key), s))?
                    .ok_or_else(|| self.timeout_error("get: empty answer"))?;
                Ok((meta_from_pb(&self.addr, first.info)?, stream))
            })
            .await?;
        // The node does not know the record; the check is made here, so
        // that every store honours `expected_sha256` alike.
        if let Some(expected) = opts.expected_sha256
            && expected != meta.sha256
        {
            return Err(Error::BadCopy {
                key: key.to_string(),
                detail: format!(
                    "{} holds SHA-256 {}, the record says {expected}",
                    self.addr, meta.sha256
                ),
            });
        }
        let range = match opts.range {
            Some(r) => r.start.min(meta.size)..r.end.min(meta.size).max(r.start.min(meta.size)),
            None => 0..meta.size,
        };
        let me = self.clone();
        let k = key.clone();
        let body = stream
            .map_ok(|m| m.chunk)
            .map_err(move |s| me.error(Some(&k), s));
        Ok(GetResult {
            meta,
            range,
            stream: Box::pin(body),
        })
    }

    async fn head(&self, key: &ContentKey) -> Result<ObjectMeta> {
        self.timed("stat", async {
            let r = self
                .client()
                .stat(pb::StatRequest {
                    key: Some(key_to_pb(key)),
                })
                .await
                .map_err(|s| self.error(Some(key), s))?;
            meta_from_pb(&self.addr, Some(r.into_inner()))
        })
        .await
    }

    async fn delete(&self, key: &ContentKey) -> Result<()> {
        self.timed("delete", async {
            self.client()
                .delete(pb::DeleteRequest {
                    key: Some(key_to_pb(key)),
                })
                .await
                .map_err(|s| self.error(Some(key), s))?;
            Ok(())
        })
        .await
    }

    fn list(&self, video: Option<&VideoId>) -> MetaStream<'_> {
        self.list_request(pb::ListRequest {
            video_id: video.map(|v| v.to_string()).unwrap_or_default(),
            ranges: Vec::new(),
            after: None,
        })
    }
}
