//! Failure detection: which storage nodes are up, suspect or down.
//!
//! A background loop asks every node for its health at a fixed interval, and
//! the data plane reports the outcome of real requests too, so a dead node is
//! noticed by whichever comes first. Readers consult the tracker to skip nodes
//! known to be down instead of paying a timeout on every request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::id::NodeAddr;

/// A node's liveness as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Answering.
    Up,
    /// Failed recently; still tried, but last.
    Suspect,
    /// Failed repeatedly; skipped by reads until it answers a health check.
    Down,
}

impl Liveness {
    /// `"up"`, `"suspect"` or `"down"`.
    pub fn name(&self) -> &'static str {
        match self {
            Liveness::Up => "up",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
        }
    }
}

/// What is known of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeLiveness {
    /// Its state.
    pub state: Liveness,
    /// The last error seen, if any.
    pub last_error: Option<String>,
    /// When `state` last changed.
    pub since: SystemTime,
    /// Failures in a row.
    pub failures: u32,
    /// Failures in all.
    pub errors: u64,
    /// Files the node reported quarantined in its last Health answer.
    pub quarantined: u64,
    /// Reads from it that met bytes disagreeing with the record.
    pub bad_copies: u64,
    /// Indexing progress in its last Health answer, while it indexes.
    pub indexing: Option<f32>,
}

/// Tunables of the [`HealthTracker`].
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// Failures in a row that make a node down.
    pub down_after: u32,
    /// Time between two health checks of a node.
    pub interval: Duration,
    /// How long a health check may take before it counts as a failure
    /// (this is what catches a node that accepts connections but never
    /// answers).
    pub timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            down_after: 2,
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Shared record of every node's liveness.
#[derive(Debug, Default)]
pub struct HealthTracker {
    config: HealthConfig,
    nodes: RwLock<HashMap<NodeAddr, NodeLiveness>>,
    hints: AtomicU64,
    bad_copies: AtomicU64,
    repair_queue: std::sync::Mutex<std::collections::BTreeSet<crate::id::ContentKey>>,
}

/// Keys waiting for a targeted repair, at most (more are dropped: the
/// scrubbers and the next full repair find them anyway).
const REPAIR_QUEUE_MAX: usize = 10_000;

impl HealthTracker {
    /// A tracker with the given tunables.
    pub fn new(config: HealthConfig) -> Self {
        HealthTracker {
            config,
            nodes: RwLock::new(HashMap::new()),
            hints: AtomicU64::new(0),
            bad_copies: AtomicU64::new(0),
            repair_queue: Default::default(),
        }
    }

    /// The tunables.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// Records a successful request to or health check of `addr`.
    pub fn record_success(&self, addr: &NodeAddr) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let entry = nodes.entry(addr.clone()).or_insert_with(new_entry);
        if entry.state != Liveness::Up {
            tracing::info!(node = %addr, "storage node is up");
            entry.state = Liveness::Up;
            entry.since = SystemTime::now();
        }
        entry.failures = 0;
    }

    /// Records what a Health answer of `addr` said about its upkeep.
    pub fn record_node_report(&self, addr: &NodeAddr, quarantined: u64, indexing: Option<f32>) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let entry = nodes.entry(addr.clone()).or_insert_with(new_entry);
        if quarantined > entry.quarantined {
            tracing::error!(node = %addr, quarantined, "storage node quarantined bad copies; a repair restores them");
        }
        entry.quarantined = quarantined;
        entry.indexing = indexing;
    }

    /// Records a failed request to or health check of `addr`.
    pub fn record_failure(&self, addr: &NodeAddr, error: &str) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        let entry = nodes.entry(addr.clone()).or_insert_with(new_entry);
        entry.failures = entry.failures.saturating_add(1);
        entry.errors += 1;
        entry.last_error = Some(error.to_string());
        let next = if entry.failures >= self.config.down_after {
            Liveness::Down
        } else {
            Liveness::Suspect
        };
        if next != entry.state {
            tracing::warn!(node = %addr, state = next.name(), error, "storage node health changed");
            entry.state = next;
            entry.since = SystemTime::now();
        }
    }

    /// The state of `addr` (`Up` if never seen).
    pub fn state(&self, addr: &NodeAddr) -> Liveness {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .map(|n| n.state)
            .unwrap_or(Liveness::Up)
    }

    /// True if reads should skip `addr`.
    pub fn is_down(&self, addr: &NodeAddr) -> bool {
        self.state(addr) == Liveness::Down
    }

    /// Since when `addr` has been down, if it is.
    pub fn down_since(&self, addr: &NodeAddr) -> Option<SystemTime> {
        self.get(addr)
            .filter(|n| n.state == Liveness::Down)
            .map(|n| n.since)
    }

    /// Records that a write went to a stand-in because an owner was down
    /// (a hinted copy, to be handed back when the owner returns).
    pub fn record_hint(&self) {
        self.hints.fetch_add(1, Ordering::SeqCst);
    }

    /// Records that `addr` answered for `key` with bytes that disagree with
    /// the recorded checksum; the key is queued for a targeted repair.
    pub fn record_bad_copy(&self, addr: &NodeAddr, key: &crate::id::ContentKey) {
        self.bad_copies.fetch_add(1, Ordering::SeqCst);
        self.nodes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.clone())
            .or_insert_with(new_entry)
            .bad_copies += 1;
        tracing::error!(node = %addr, key = %key, "bad copy found while reading; served another copy and queued a repair");
        let mut q = self.repair_queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() < REPAIR_QUEUE_MAX {
            q.insert(key.clone());
        }
    }

    /// Files quarantined on every node, as their last Health answers said
    /// (the failure detector's checks bring them; nothing is asked here).
    pub fn quarantined_total(&self) -> u64 {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|n| n.quarantined)
            .sum()
    }

    /// Bad copies found by reads so far.
    pub fn bad_copies(&self) -> u64 {
        self.bad_copies.load(Ordering::SeqCst)
    }

    /// Takes the keys queued for repair.
    pub fn take_repair_queue(&self) -> Vec<crate::id::ContentKey> {
        let mut q = self.repair_queue.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *q).into_iter().collect()
    }

    /// Hinted writes so far.
    pub fn hints(&self) -> u64 {
        self.hints.load(Ordering::SeqCst)
    }

    /// Everything known of `addr`.
    pub fn get(&self, addr: &NodeAddr) -> Option<NodeLiveness> {
        self.nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(addr)
            .cloned()
    }

    /// Forgets every node not in `members`: a node removed from the ring, or
    /// one whose add was refused, leaves no trace (no alert, no metric
    /// series) behind. Called whenever the membership changes.
    pub fn retain_members(&self, members: &[NodeAddr]) {
        let mut nodes = self.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|addr, _| {
            let keep = members.contains(addr);
            if !keep {
                tracing::debug!(node = %addr, "no longer a member; its health is forgotten");
            }
            keep
        });
    }

    /// Everything known of the nodes in `members`, by node (nodes seen but
    /// not members, such as the target of a refused add, are left out).
    pub fn snapshot_of(&self, members: &[NodeAddr]) -> Vec<(NodeAddr, NodeLiveness)> {
        let mut v = self.snapshot();
        v.retain(|(addr, _)| members.contains(addr));
        v
    }

    /// Everything known, by node.
    pub fn snapshot(&self) -> Vec<(NodeAddr, NodeLiveness)> {
        let mut v: Vec<_> = self
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(a, n)| (a.clone(), n.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Checks every node `members()` names, every `interval`, until
    /// `shutdown` resolves.
    pub async fn run<M>(
        self: Arc<Self>,
        nodes: Arc<dyn super::Nodes>,
        members: M,
        shutdown: impl std::future::Future<Output = ()>,
    ) where
        M: Fn() -> Vec<NodeAddr>,
    {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            let checks = members().into_iter().map(|addr| {
                let nodes = nodes.clone();
                let me = self.clone();
                async move {
                    match tokio::time::timeout(me.config.timeout, nodes.health(&addr)).await {
                        Ok(Ok(_)) => me.record_success(&addr),
                        Ok(Err(e)) => me.record_failure(&addr, &e.to_string()),
                        Err(_) => me.record_failure(
                            &addr,
                            &format!("no answer to a health check within {:?}", me.config.timeout),
                        ),
                    }
                }
            });
            futures::future::join_all(checks).await;
        }
    }
}

fn new_entry() -> NodeLiveness {
    NodeLiveness {
        state: Liveness::Up,
        last_error: None,
        since: SystemTime::now(),
        failures: 0,
        errors: 0,
        quarantined: 0,
        bad_copies: 0,
        indexing: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_make_a_node_suspect_then_down_and_success_brings_it_back() {
        let t = HealthTracker::new(HealthConfig {
            down_after: 2,
            ..HealthConfig::default()
        });
        let a: NodeAddr = "a:1".parse().unwrap();
        assert_eq!(t.state(&a), Liveness::Up);
        t.record_failure(&a, "connection refused");
        assert_eq!(t.state(&a), Liveness::Suspect);
        assert!(!t.is_down(&a));
        t.record_failure(&a, "connection refused");
        assert!(t.is_down(&a));
        assert_eq!(
            t.get(&a).unwrap().last_error.as_deref(),
            Some("connection refused")
        );
        t.record_success(&a);
        assert_eq!(t.state(&a), Liveness::Up);
        assert_eq!(t.get(&a).unwrap().failures, 0);
    }

    #[test]
    fn nodes_no_longer_members_are_forgotten_and_left_out_of_snapshots() {
        let t = HealthTracker::default();
        let (a, b): (NodeAddr, NodeAddr) = ("a:1".parse().unwrap(), "b:2".parse().unwrap());
        t.record_success(&a);
        t.record_failure(&b, "connection refused");
        let only_a = t.snapshot_of(std::slice::from_ref(&a));
        assert_eq!(
            only_a.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            vec![a.clone()]
        );
        assert_eq!(t.snapshot().len(), 2, "snapshot_of leaves the record alone");
        t.retain_members(std::slice::from_ref(&a));
        assert!(t.get(&b).is_none());
        assert_eq!(t.state(&b), Liveness::Up, "a forgotten node starts afresh");
        assert!(t.get(&a).is_some());
    }
}
