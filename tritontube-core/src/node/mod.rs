//! The storage node: a [`LocalContentStore`] served over gRPC
//! (`tritontube.storage.v1.StorageNode`).
//!
//! Every key a client sends is validated here again, whatever the client
//! library did: a node never touches a path outside its base directory.
//! Bodies move in chunks of at most [`MAX_CHUNK`] bytes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Result};
use crate::id::{ContentKey, NodeAddr, VideoId};
use crate::proto::storage as pb;
use crate::proto::storage::storage_node_server::{StorageNode, StorageNodeServer};
use crate::ring::HashRange;
use crate::store::{
    ByteStream, ContentStore, GetOptions, LocalContentStore, ObjectMeta, PutOptions, Sha256Digest,
};

mod client;

pub use client::{NodeClient, NodeClientConfig};

/// How a node answered a health check.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeHealth {
    /// The node's identity (empty for a node too old to have one).
    pub node_id: String,
    /// Files it holds.
    pub file_count: u64,
    /// Bytes it holds.
    pub total_bytes: u64,
    /// `Some(percent)` while the node builds its index.
    pub indexing: Option<f32>,
    /// Files it moved to quarantine (bytes that no longer matched).
    pub quarantined: u64,
    /// Files its scrubber re-hashed.
    pub scrubbed_files: u64,
    /// Full scrub passes done.
    pub scrub_cycles: u64,
    /// The most bytes of files it may hold (`None`: no limit but its disk).
    pub capacity_bytes: Option<u64>,
}

/// Largest body chunk in one message (well under gRPC's 4 MiB default).
pub const MAX_CHUNK: usize = 1024 * 1024;

/// HTTP/2 flow-control windows and frame size of node connections (both
/// ends): large enough that a 1 MiB chunk never waits for a window update,
/// which on the 64 KiB defaults caps a stream far below what the disk does.
pub(crate) const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
pub(crate) const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
pub(crate) const FRAME_SIZE: u32 = 256 * 1024;

/// Files per `List` message.
const LIST_PAGE: usize = 500;

/// Serves the storage-node protocol for `store` on `listener` until
/// `shutdown` resolves; requests in flight are allowed to finish.
pub async fn serve(
    listener: TcpListener,
    store: LocalContentStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .add_service(service(store))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| Error::backend("storage node", "gRPC server failed", e))
}

/// The gRPC service for `store`, to mount on a server of your own.
pub fn service(store: LocalContentStore) -> StorageNodeServer<NodeService> {
    StorageNodeServer::new(NodeService {
        store,
        peers: Default::default(),
        writable: Default::default(),
    })
}

/// The storage-node gRPC service.
#[derive(Debug, Clone)]
pub struct NodeService {
    store: LocalContentStore,
    /// Clients of the other nodes this one copied from (`CopyFrom`).
    peers: Arc<Mutex<HashMap<NodeAddr, NodeClient>>>,
    writable: Arc<WritableProbe>,
}

impl NodeService {
    fn peer(&self, addr: &NodeAddr) -> NodeClient {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.clone())
            .or_insert_with(|| NodeClient::new(addr.clone(), NodeClientConfig::default()))
            .clone()
    }
}

/// The expected checksum of a request: empty = not checked.
fn expected_sha(raw: &[u8]) -> std::result::Result<Option<Sha256Digest>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    Sha256Digest::from_slice(raw).map(Some).ok_or_else(|| {
        refuse(Error::invalid(
            "expected_sha256",
            hex::encode(raw),
            "must be 32 bytes",
        ))
    })
}

/// Validates a key as sent on the wire.
pub(crate) fn key_from_pb(k: Option<&pb::FileKey>) -> Result<ContentKey> {
    let k = k.ok_or_else(|| Error::invalid("content key", "", "missing"))?;
    ContentKey::from_parts(&k.video_id, &k.filename)
}

/// The wire form of a key.
pub(crate) fn key_to_pb(k: &ContentKey) -> pb::FileKey {
    pb::FileKey {
        video_id: k.video().to_string(),
        filename: k.file().to_string(),
    }
}

pub(crate) fn info_to_pb(m: &ObjectMeta) -> pb::FileInfo {
    pb::FileInfo {
        key: Some(key_to_pb(&m.key)),
        size: m.size,
        sha256: m.sha256.0.to_vec(),
    }
}

fn refuse(e: Error) -> Status {
    if !e.is_not_found() {
        tracing::info!(error = %e, "request refused");
    }
    Status::from(e)
}

type Chunks<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl StorageNode for NodeService {
    async fn put(
        &self,
        req: Request<Streaming<pb::PutRequest>>,
    ) -> std::result::Result<Response<pb::PutResponse>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| refuse(Error::invalid("put", "", "empty request stream")))?;
        let header = first.header.ok_or_else(|| {
            refuse(Error::invalid(
                "put",
                "",
                "the first message must carry the header",
            ))
        })?;
        let key = key_from_pb(header.key.as_ref()).map_err(refuse)?;
        let expected_sha256 = expected_sha(&header.expected_sha256)?;
        let opts = PutOptions {
            expected_sha256,
            expected_size: (header.expected_size > 0).then_some(header.expected_size),
        };
        let first_chunk = first.chunk;
        let rest = incoming.map(|m| match m {
            Ok(m) => Ok(m.chunk),
            Err(s) => Err(Error::Unavailable {
                what: "upload stream".into(),
                reason: s.message().to_string(),
            }),
        });
        let body: ByteStream =
            Box::pin(futures::stream::once(async move { Ok(first_chunk) }).chain(rest));
        let meta = self.store.put(&key, body, opts).await.map_err(refuse)?;
        Ok(Response::new(pb::PutResponse {
            info: Some(info_to_pb(&meta)),
        }))
    }

    type GetStream = Chunks<pb::GetResponse>;

    async fn get(
        &self,
        req: Request<pb::GetRequest>,
    ) -> std::result::Result<Response<Self::GetStream>, Status> {
        let req = req.into_inner();
        let key = key_from_pb(req.key.as_ref()).map_err(refuse)?;
        let opts = GetOptions {
            range: req.range.map(|r| r.start..r.end),
            ..Default::default()
        };
        let got = self.store.get(&key, opts).await.map_err(refuse)?;
        let head = pb::GetResponse {
            info: Some(info_to_pb(&got.meta)),
            chunk: Bytes::new(),
        };
        let body = got.stream.flat_map(|c| {
            let msgs: Vec<std::result::Result<pb::GetResponse, Status>> = match c {
                Ok(b) => (0..b.len())
                    .step_by(MAX_CHUNK)
                    .map(|i| {
                        Ok(pb::GetResponse {
                            info: None,
                            chunk: b.slice(i..(i + MAX_CHUNK).min(b.len())),
                        })
                    })
                    .collect(),
                Err(e) => vec![Err(refuse(e))],
            };
            futures::stream::iter(msgs)
        });
        Ok(Response::new(Box::pin(
            futures::stream::once(async { Ok(head) }).chain(body),
        )))
    }

    async fn stat(
        &self,
        req: Request<pb::StatRequest>,
    ) -> std::result::Result<Response<pb::FileInfo>, Status> {
        let key = key_from_pb(req.get_ref().key.as_ref()).map_err(refuse)?;
        let meta = self.store.head(&key).await.map_err(refuse)?;
        Ok(Response::new(info_to_pb(&meta)))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> std::result::Result<Response<pb::DeleteResponse>, Status> {
        let key = key_from_pb(req.get_ref().key.as_ref()).map_err(refuse)?;
        self.store.delete(&key).await.map_err(refuse)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    type ListStream = Chunks<pb::ListResponse>;

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> std::result::Result<Response<Self::ListStream>, Status> {
        let req = req.into_inner();
        let video = match req.video_id.as_str() {
            "" => None,
            v => Some(VideoId::new(v).map_err(refuse)?),
        };
        let ranges: Vec<HashRange> = req
            .ranges
            .iter()
            .map(|r| HashRange::new(r.start, r.has_end.then_some(r.end)))
            .collect();
        let after = match &req.after {
            Some(k) => Some(key_from_pb(Some(k)).map_err(refuse)?),
            None => None,
        };
        if !self.store.is_indexed() {
            // Refused up front, with a status the caller can act on.
            let p = self.store.stats().indexing.unwrap_or(0.0);
            return Err(refuse(Error::Unavailable {
                what: "listing".into(),
                reason: format!("indexing {p:.0}%; listings are served once the index is complete"),
            }));
        }
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let send = |files: Vec<ObjectMeta>| pb::ListResponse {
                files: files.iter().map(info_to_pb).collect(),
            };
            match video {
                None if !ranges.is_empty() => {
                    // Page by page from the index, each page a fresh query
                    // after the last key sent: nothing is held open.
                    for range in ranges {
                        let mut cursor = after.clone();
                        loop {
                            let page = store.list_range(range, cursor.clone(), LIST_PAGE).await;
                            let page = match page {
                                Ok(p) if p.is_empty() => break,
                                Ok(p) => p,
                                Err(e) => {
                                    let _ = tx.send(Err(refuse(e))).await;
                                    return;
                                }
                            };
                            cursor = page.last().map(|m| m.key.clone());
                            if tx.send(Ok(send(page))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                video => {
                    let list = store.list(video.as_ref());
                    let mut pages = list.chunks(LIST_PAGE);
                    while let Some(page) = pages.next().await {
                        let msg = page
                            .into_iter()
                            .collect::<Result<Vec<_>>>()
                            .map(send)
                            .map_err(refuse);
                        let failed = msg.is_err();
                        if tx.send(msg).await.is_err() || failed {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn copy_from(
        &self,
        req: Request<pb::CopyFromRequest>,
    ) -> std::result::Result<Response<pb::PutResponse>, Status> {
        let req = req.into_inner();
        let key = key_from_pb(req.key.as_ref()).map_err(refuse)?;
        let source = NodeAddr::new(&req.source).map_err(refuse)?;
        let opts = PutOptions {
            expected_sha256: expected_sha(&req.expected_sha256)?,
            expected_size: (req.expected_size > 0).then_some(req.expected_size),
        };
        let got = self
            .peer(&source)
            .get(&key, GetOptions::default())
            .await
            .map_err(refuse)?;
        let meta = self
            .store
            .put(&key, got.stream, opts)
            .await
            .map_err(refuse)?;
        Ok(Response::new(pb::PutResponse {
            info: Some(info_to_pb(&meta)),
        }))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> std::result::Result<Response<pb::HealthResponse>, Status> {
        // Counters only: the answer costs the same for ten files or ten
        // million, so a failure detector's timeout never mistakes a full
        // node for a dead one.
        let stats = self.store.stats();
        let (serving, problem) = self.writable.state(self.store.base()).await;
        Ok(Response::new(pb::HealthResponse {
            serving: serving.into(),
            problem,
            file_count: stats.files,
            total_bytes: stats.bytes,
            version: env!("CARGO_PKG_VERSION").into(),
            node_id: self.store.node_id().to_string(),
            indexing: stats.indexing.is_some(),
            indexing_percent: stats.indexing.unwrap_or(100.0),
            quarantined: stats.quarantined,
            scrubbed_files: stats.scrub.files,
            scrub_cycles: stats.scrub.cycles,
            capacity_bytes: stats.capacity,
        }))
    }
}

/// Whether the base directory takes writes, probed at most every few
/// seconds (a probe is a small write: cheap, but not free under load).
#[derive(Debug, Default)]
pub struct WritableProbe {
    last: tokio::sync::Mutex<Option<(std::time::Instant, (pb::ServingState, String))>>,
}

impl WritableProbe {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    async fn state(&self, base: &std::path::Path) -> (pb::ServingState, String) {
        let mut last = self.last.lock().await;
        if let Some((at, s)) = &*last
            && at.elapsed() < Self::EVERY
        {
            return s.clone();
        }
        let probe = base.join(".tritontube").join("health-probe");
        let s = match tokio::fs::write(&probe, b"ok").await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&probe).await;
                (pb::ServingState::Serving, String::new())
            }
            Err(e) => (pb::ServingState::ReadOnly, format!("read-only: {e}")),
        };
        *last = Some((std::time::Instant::now(), s.clone()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_that_takes_no_writes_is_not_serving_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".tritontube")).unwrap();
        let (state, problem) = WritableProbe::default().state(dir.path()).await;
        assert_eq!((state, problem.as_str()), (pb::ServingState::Serving, ""));
        // No `.tritontube` directory to write the probe into.
        let gone = dir.path().join("gone");
        let (state, problem) = WritableProbe::default().state(&gone).await;
        assert_eq!(state, pb::ServingState::ReadOnly);
        assert!(problem.starts_with("read-only: "), "{problem}");
    }
}
