//! [`NetworkContentStore`]: files spread over storage nodes by the ring, with
//! replicas.
//!
//! Each key is placed on the first `R` distinct nodes clockwise from its hash
//! (its preference list). During a ring change the placement holds two rings
//! (garage's "read the synced version, write all live versions" rule):
//!
//! - writes and deletes go to the union of current and pending owners;
//! - reads try current owners first, then pending owners.
//!
//! Reads skip nodes the [`HealthTracker`] knows to be down, fail over to the
//! next replica on any error (resuming mid-file with a ranged read when a node
//! dies while streaming), and a write whose owner is down goes to the next
//! live node on the ring instead (a hinted copy that `repair` hands back).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{HealthTracker, NodeHealth, Nodes};
use crate::error::{Error, Result};
use crate::id::{ContentKey, NodeAddr, VideoId};
use crate::layout::Placement;
use crate::metadata::ClusterState;
use crate::metadata::NodeEntry;
use crate::node::{NodeClient, NodeClientConfig};
use crate::ring::{HashRange, key_hash};
use crate::store::{
    ByteStream, ContentStore, GetOptions, GetResult, MetaStream, ObjectMeta, PutOptions,
};

/// A [`ContentStore`] over a cluster of storage nodes.
#[derive(Debug)]
pub struct NetworkContentStore {
    placement: RwLock<Arc<Placement>>,
    clients: RwLock<HashMap<NodeAddr, NodeClient>>,
    config: NodeClientConfig,
    health: Arc<HealthTracker>,
    /// Writes are refused from this time on (Unix ms) unless extended: the
    /// time this server's acknowledgement of the cluster state lapses (see
    /// [`Nodes::fence_writes_after`]); `i64::MAX` while nobody fences.
    writes_until: std::sync::atomic::AtomicI64,
}

impl NetworkContentStore {
    /// Refuses a write while this server's acknowledgement of the cluster
    /// state has lapsed: a ring change may be copying without waiting for
    /// it, so a write routed by a stale ring could miss a new owner.
    fn check_fence(&self, key: &ContentKey) -> Result<()> {
        let until = self.writes_until.load(std::sync::atomic::Ordering::SeqCst);
        if crate::metadata::lifecycle::now_ms() < until {
            return Ok(());
        }
        Err(Error::Unavailable {
            what: format!("writing {key}"),
            reason: "this web server lost touch with the cluster state; writes resume once it has caught up".into(),
        })
    }

    /// A store routing by `placement`, reaching nodes with `config`.
    pub fn new(placement: Placement, config: NodeClientConfig, health: Arc<HealthTracker>) -> Self {
        NetworkContentStore {
            placement: RwLock::new(Arc::new(placement)),
            clients: RwLock::new(HashMap::new()),
            config,
            health,
            writes_until: std::sync::atomic::AtomicI64::new(i64::MAX),
        }
    }

    /// A store over `nodes` (weight 1) with `replicas` copies and `vnodes`
    /// virtual nodes per node.
    pub fn with_nodes(nodes: &[NodeAddr], replicas: usize, vnodes: u32) -> Result<Self> {
        let entries: Vec<_> = nodes
            .iter()
            .map(|n| NodeEntry::new(n.clone(), 1.0))
            .collect();
        Ok(Self::new(
            Placement {
                current: crate::layout::ring_of(&entries, vnodes),
                pending: None,
                replicas,
                epoch: 0,
                reach: HashMap::new(),
            },
            NodeClientConfig::default(),
            Arc::new(HealthTracker::default()),
        ))
    }

    /// The placement in force.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Routes by `placement` from now on.
    pub fn set_placement(&self, placement: Placement) {
        *self.placement.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(placement);
    }

    /// The failure detector this store consults and feeds.
    pub fn health_tracker(&self) -> &Arc<HealthTracker> {
        &self.health
    }

    /// The client of one node, named by its ring name (a moved member is
    /// reached at its new address).
    pub fn client(&self, addr: &NodeAddr) -> NodeClient {
        let p = self.placement();
        let addr = p.reach.get(addr).unwrap_or(addr);
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
        {
            return c.clone();
        }
        let mut clients = self.clients.write().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(addr.clone())
            .or_insert_with(|| NodeClient::new(addr.clone(), self.config.clone()))
            .clone()
    }

    /// Nodes a write of `key` goes to (see [`Placement::write_set`]),
    /// counting the hinted copies it makes.
    fn write_targets(&self, key: &ContentKey) -> Vec<NodeAddr> {
        let (nodes, hinted) = self.placement().write_set(key, |n| self.health.is_down(n));
        for _ in 0..hinted {
            self.health.record_hint();
        }
        nodes
    }

    /// Nodes a read of `key` tries, in order (see [`Placement::read_set`]).
    fn read_candidates(&self, key: &ContentKey) -> Vec<NodeAddr> {
        self.placement().read_set(key, |n| self.health.is_down(n))
    }

    fn note(&self, node: &NodeAddr, r: &Result<impl Sized>) {
        match r {
            Ok(_) => self.health.record_success(node),
            Err(e @ (Error::Node { .. } | Error::Unavailable { .. })) => {
                self.health.record_failure(node, &e.to_string())
            }
            Err(_) => self.health.record_success(node),
        }
    }

    async fn get_from(
        &self,
        key: &ContentKey,
        opts: GetOptions,
        skip: usize,
    ) -> Result<(usize, GetResult)> {
        let candidates = self.read_candidates(key);
        let mut failures = Vec::new();
        let mut bad_copies = 0;
        for (i, node) in candidates.iter().enumerate().skip(skip) {
            // The client refuses a copy whose checksum is not the expected one.
            let r = self.client(node).get(key, opts.clone()).await;
            self.note(node, &r);
            match r {
                Ok(g) => return Ok((i, g)),
                Err(Error::NotFound { .. }) => {}
                Err(e @ Error::BadCopy { .. }) => {
                    self.health.record_bad_copy(node, key);
                    bad_copies += 1;
                    failures.push((node.to_string(), e.to_string()));
                }
                Err(e) => failures.push((node.to_string(), e.to_string())),
            }
        }
        let listed = failures
            .iter()
            .map(|(n, e)| format!("{n} ({e})"))
            .collect::<Vec<_>>()
            .join(", ");
        if failures.is_empty() {
            Err(Error::not_found(key.as_str()))
        } else if bad_copies == failures.len() {
            // Every copy found was bad: a server fault, never a 404 or 400.
            Err(Error::BadCopy {
                key: key.to_string(),
                detail: format!("no good copy left: {listed}"),
            })
        } else {
            Err(Error::Unavailable {
                what: format!("file {key}"),
                reason: format!("no replica could serve it: {listed}"),
            })
        }
    }
}

impl NetworkContentStore {
    /// Sends `body` to every target at once; a slow node slows the write
    /// (bounded channels), it never makes it buffer the file. Returns each
    /// target's put, and the body's own error if it failed.
    async fn fan_out(
        &self,
        targets: &[NodeAddr],
        key: &ContentKey,
        mut body: ByteStream,
        opts: &PutOptions,
    ) -> (
        Vec<tokio::task::JoinHandle<Result<ObjectMeta>>>,
        Option<Error>,
    ) {
        let mut senders = Vec::new();
        let mut calls = Vec::new();
        for node in targets {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
            senders.push(Some(tx));
            let (client, key, opts) = (self.client(node), key.clone(), opts.clone());
            calls.push(tokio::spawn(async move {
                let body: ByteStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
                client.put(&key, body, opts).await
            }));
        }
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    for s in senders.iter_mut() {
                        if let Some(tx) = s
                            && tx.send(Ok(b.clone())).await.is_err()
                        {
                            // That node's put ended early; its result says why.
                            *s = None;
                        }
                    }
                }
                Err(e) => {
                    for tx in senders.iter().flatten() {
                        let _ = tx
                            .send(Err(Error::Unavailable {
                                what: "upload".into(),
                                reason: e.to_string(),
                            }))
                            .await;
                    }
                    return (calls, Some(e));
                }
            }
        }
        (calls, None)
    }
}

/// What the targets of one put answered.
#[derive(Default)]
struct PutOutcome {
    ok: Option<ObjectMeta>,
    succeeded: usize,
    failures: Vec<(String, String)>,
    mismatch: Option<String>,
    full: Vec<Error>,
}

impl PutOutcome {
    fn add(&mut self, node: &NodeAddr, r: Result<ObjectMeta>) {
        match r {
            Ok(m) => {
                self.succeeded += 1;
                self.ok = Some(m);
            }
            Err(e) => {
                if matches!(e, Error::ChecksumMismatch { .. }) {
                    self.mismatch = Some(e.to_string());
                }
                self.failures.push((node.to_string(), e.to_string()));
                if matches!(e, Error::Full { .. }) {
                    self.full.push(e);
                }
            }
        }
    }

    /// The put's result: stored on at least `needed` nodes, or why not.
    fn result(mut self, key: &ContentKey, opts: &PutOptions, needed: usize) -> Result<ObjectMeta> {
        if let Some(m) = self.mismatch.take()
            && self.succeeded == 0
        {
            return Err(Error::ChecksumMismatch {
                key: key.to_string(),
                expected: opts.expected_sha256.map(|d| d.to_hex()).unwrap_or_default(),
                actual: m,
            });
        }
        if self.succeeded == 0 && !self.full.is_empty() && self.full.len() == self.failures.len() {
            // Every node that should take the file is full: that, not a
            // missing replica, is what the caller must hear.
            return Err(self.full.swap_remove(0));
        }
        match self.ok {
            Some(m) if self.succeeded >= needed => Ok(m),
            _ => Err(Error::InsufficientReplicas {
                key: key.to_string(),
                needed,
                succeeded: self.succeeded,
                failures: self.failures,
            }),
        }
    }
}

/// A read that resumes from the next replica, at the byte where the
/// serving one stopped, if it fails mid-stream.
struct ResumingRead {
    store: Arc<NetworkResume>,
    key: ContentKey,
    stream: ByteStream,
    next_candidate: usize,
    pos: u64,
    end: u64,
    retries: usize,
}

impl ResumingRead {
    /// The next chunk; `None` at the end, an error when no replica could
    /// go on.
    async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        loop {
            // A node that stops sending mid-file (stalled, not closed)
            // counts as failed after the request timeout.
            let next = match tokio::time::timeout(self.store.idle, self.stream.next()).await {
                Ok(next) => next,
                Err(_) => Some(Err(Error::Unavailable {
                    what: format!("file {}", self.key),
                    reason: format!("no data for {:?}", self.store.idle),
                })),
            };
            match next {
                Some(Ok(b)) => {
                    self.pos += b.len() as u64;
                    return Some(Ok(b));
                }
                None if self.pos >= self.end => return None,
                None | Some(Err(_)) => {
                    let bad = matches!(&next, Some(Err(Error::BadCopy { .. })));
                    if let Err(e) = self.resume(bad).await {
                        return Some(Err(e));
                    }
                }
            }
        }
    }

    /// Goes on from another replica holding the same bytes (`bad`: the
    /// copy read so far turned out corrupt).
    async fn resume(&mut self, bad: bool) -> Result<()> {
        if bad
            && let Some(node) = self
                .store
                .candidates
                .get(self.next_candidate.saturating_sub(1))
        {
            self.store.health.record_bad_copy(node, &self.key);
        }
        while self.next_candidate < self.store.clients.len() && self.retries < 4 {
            let c = &self.store.clients[self.next_candidate];
            self.next_candidate += 1;
            self.retries += 1;
            let opts = GetOptions {
                range: Some(self.pos..self.end),
                expected_sha256: Some(self.store.sha),
            };
            if let Ok(g) = c.get(&self.key, opts).await
                && g.meta.sha256 == self.store.sha
            {
                self.stream = g.stream;
                return Ok(());
            }
        }
        if bad {
            // The bytes were there but wrong on every copy tried: a server
            // fault (502), never a retry hint.
            return Err(Error::BadCopy {
                key: self.key.to_string(),
                detail: format!("no intact copy left from byte {}", self.pos),
            });
        }
        Err(Error::Unavailable {
            what: format!("file {}", self.key),
            reason: format!(
                "stream broke at byte {} and no replica ({}) could resume it",
                self.pos,
                self.store
                    .candidates
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}

#[async_trait]
impl ContentStore for NetworkContentStore {
    async fn put(
        &self,
        key: &ContentKey,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.check_fence(key)?;
        let targets = self.write_targets(key);
        let needed = self.placement().replicas.min(targets.len()).max(1);
        if targets.is_empty() {
            return Err(Error::EmptyRing);
        }
        let (calls, body_error) = self.fan_out(&targets, key, body, &opts).await;
        let mut outcome = PutOutcome::default();
        for (node, call) in targets.iter().zip(calls) {
            let r = call
                .await
                .unwrap_or_else(|e| Err(Error::backend("network store", "write task failed", e)));
            self.note(node, &r);
            outcome.add(node, r);
        }
        if let Some(e) = body_error {
            return Err(e);
        }
        outcome.result(key, &opts, needed)
    }

    async fn get(&self, key: &ContentKey, opts: GetOptions) -> Result<GetResult> {
        let (index, first) = self.get_from(key, opts.clone(), 0).await?;
        let (meta, range) = (first.meta.clone(), first.range.clone());
        // If the serving node fails mid-stream, resume from the next replica
        // at the byte where it stopped.
        let candidates = self.read_candidates(key);
        let read = ResumingRead {
            store: Arc::new(NetworkResume {
                health: self.health.clone(),
                clients: candidates.iter().map(|n| self.client(n)).collect(),
                candidates,
                sha: meta.sha256,
                idle: self.config.request_timeout,
            }),
            key: key.clone(),
            stream: first.stream,
            next_candidate: index + 1,
            pos: range.start,
            end: range.end,
            retries: 0,
        };
        let stream = futures::stream::unfold(Some(read), |st| async move {
            let mut st = st?;
            match st.next_chunk().await {
                Some(Ok(b)) => Some((Ok(b), Some(st))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        });
        Ok(GetResult {
            meta,
            range,
            stream: Box::pin(stream),
        })
    }

    async fn head(&self, key: &ContentKey) -> Result<ObjectMeta> {
        let mut failures = Vec::new();
        for node in self.read_candidates(key) {
            let r = self.client(&node).head(key).await;
            self.note(&node, &r);
            match r {
                Ok(m) => return Ok(m),
                Err(Error::NotFound { .. }) => {}
                Err(e) => failures.push(format!("{node} ({e})")),
            }
        }
        if failures.is_empty() {
            Err(Error::not_found(key.as_str()))
        } else {
            Err(Error::Unavailable {
                what: format!("file {key}"),
                reason: format!("no replica answered: {}", failures.join(", ")),
            })
        }
    }

    async fn delete(&self, key: &ContentKey) -> Result<()> {
        self.check_fence(key)?;
        let mut targets = self.read_candidates(key);
        for n in self.write_targets(key) {
            if !targets.contains(&n) {
                targets.push(n);
            }
        }
        let mut deleted = 0;
        let mut failures = Vec::new();
        for node in targets {
            let r = self.client(&node).delete(key).await;
            self.note(&node, &r);
            match r {
                Ok(()) => deleted += 1,
                Err(Error::NotFound { .. }) => {}
                Err(e) => failures.push((node.to_string(), e.to_string())),
            }
        }
        if !failures.is_empty() {
            return Err(Error::InsufficientReplicas {
                key: key.to_string(),
                needed: deleted + failures.len(),
                succeeded: deleted,
                failures,
            });
        }
        if deleted == 0 {
            return Err(Error::not_found(key.as_str()));
        }
        Ok(())
    }

    /// Every node's listing, merged in order and without duplicates: nodes
    /// list in (ring hash, key) order (by key for one video), so a k-way
    /// merge sees each key's copies side by side and keeps one. Memory stays
    /// one entry per node, whatever the number of files.
    fn list(&self, video: Option<&VideoId>) -> MetaStream<'_> {
        let nodes = self.placement().all_nodes();
        let lists: Vec<MetaStream<'static>> = nodes
            .iter()
            .map(|n| {
                let client = self.client(n);
                match video {
                    Some(v) => {
                        let v = v.clone();
                        futures::stream::once(async move {
                            client.list(Some(&v)).collect::<Vec<_>>().await
                        })
                        .map(futures::stream::iter)
                        .flatten()
                        .boxed()
                    }
                    None => client.list_ranges(&[HashRange::ALL], None),
                }
            })
            .collect();
        let order: fn(&ObjectMeta) -> (u64, String) = match video {
            Some(_) => |m| (0, m.key.as_str().to_string()),
            None => |m| (key_hash(m.key.as_str()), m.key.as_str().to_string()),
        };
        Box::pin(merge_sorted(lists, order))
    }
}

/// Merges streams each sorted by `order`, yielding each key once.
fn merge_sorted(
    streams: Vec<MetaStream<'static>>,
    order: fn(&ObjectMeta) -> (u64, String),
) -> impl futures::Stream<Item = Result<ObjectMeta>> + Send + 'static {
    struct Merge {
        heads: Vec<(Option<ObjectMeta>, MetaStream<'static>)>,
        last: Option<ContentKey>,
    }
    let state = Merge {
        heads: streams.into_iter().map(|s| (None, s)).collect(),
        last: None,
    };
    futures::stream::unfold(Some(state), move |st| async move {
        let mut st = st?;
        loop {
            // Fill every empty head (once at the start, then the one taken).
            let mut i = 0;
            while i < st.heads.len() {
                if st.heads[i].0.is_none() {
                    match st.heads[i].1.next().await {
                        Some(Ok(m)) => st.heads[i].0 = Some(m),
                        Some(Err(e)) => return Some((Err(e), None)),
                        None => {
                            drop(st.heads.swap_remove(i));
                            continue;
                        }
                    }
                }
                i += 1;
            }
            let best = st
                .heads
                .iter()
                .enumerate()
                .filter_map(|(i, (h, _))| h.as_ref().map(|m| (order(m), i)))
                .min()?
                .1;
            let m = st.heads[best].0.take()?;
            if st.last.as_ref() == Some(&m.key) {
                continue;
            }
            st.last = Some(m.key.clone());
            return Some((Ok(m), Some(st)));
        }
    })
}

struct NetworkResume {
    health: Arc<HealthTracker>,
    candidates: Vec<NodeAddr>,
    clients: Vec<NodeClient>,
    sha: crate::store::Sha256Digest,
    idle: std::time::Duration,
}

#[async_trait]
impl Nodes for NetworkContentStore {
    fn node(&self, addr: &NodeAddr) -> Arc<dyn ContentStore> {
        Arc::new(self.client(addr))
    }

    fn list_ranges(&self, addr: &NodeAddr, ranges: Vec<HashRange>) -> MetaStream<'static> {
        self.client(addr).list_ranges(&ranges, None)
    }

    async fn health(&self, addr: &NodeAddr) -> Result<NodeHealth> {
        let r = self.client(addr).health().await;
        self.note(addr, &r);
        if let Ok(h) = &r {
            self.health
                .record_node_report(addr, h.quarantined, h.indexing);
        }
        r
    }

    fn apply(&self, state: &ClusterState) {
        let placement = Placement::from_state(state);
        // A node that left (or never joined) is no longer watched or reported.
        self.health.retain_members(&placement.all_nodes());
        self.set_placement(placement);
    }

    fn fence_writes_after(&self, until_ms: i64) {
        self.writes_until
            .store(until_ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Node to node (`CopyFrom`); through this process only if the target
    /// does not offer that call.
    async fn copy(
        &self,
        key: &ContentKey,
        from: &NodeAddr,
        to: &NodeAddr,
        opts: PutOptions,
    ) -> Result<()> {
        let source = self.client(from).addr().clone();
        match self.client(to).copy_from(key, &source, opts.clone()).await {
            Ok(_) => Ok(()),
            Err(Error::Unsupported { .. }) => {
                let got = self.client(from).get(key, GetOptions::default()).await?;
                self.client(to).put(key, got.stream, opts).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }
}
