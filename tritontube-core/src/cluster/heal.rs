//! Self-healing: copies handed back when a node returns, and automatic
//! re-replication when a node stays down.
//!
//! While a storage node is down, writes whose owner it is go to the next
//! live node clockwise (hinted copies, see
//! [`NetworkContentStore`](crate::cluster::NetworkContentStore)), and reads
//! skip it. The healer watches the [`HealthTracker`]:
//!
//! - a node down longer than [`HealConfig::rereplicate_after`]: every file it
//!   owned gets its missing copies made on the next live nodes from the
//!   surviving ones ([`ClusterManager::rereplicate`]), so the cluster is back
//!   to R copies without waiting for anyone;
//! - every member answering again after an outage (or after hinted writes):
//!   [`ClusterManager::repair`] copies to each owner what it missed and
//!   deletes the stand-in copies, only once every owner holds a good copy.
//!
//! Both take the cluster-wide admin lock, so with several web servers on one
//! metadata store only one heals at a time and none interferes with a ring
//! change.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{ClusterManager, HealthTracker};
use crate::error::Error;
use crate::id::NodeAddr;

/// Tunables of the healer.
#[derive(Debug, Clone)]
pub struct HealConfig {
    /// How long a node may be down before its files are re-replicated from
    /// the surviving copies; `None` switches automatic re-replication off
    /// (copies are still handed back when a node returns).
    pub rereplicate_after: Option<Duration>,
    /// How often the healer looks at the nodes' health.
    pub interval: Duration,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            rereplicate_after: Some(Duration::from_secs(60)),
            interval: Duration::from_secs(1),
        }
    }
}

/// How often the healer looks for a ring change nobody runs any more.
const RESUME_EVERY: Duration = Duration::from_secs(5);

/// Heals the cluster `manager` runs as nodes go down and come back, as
/// `tracker` sees them, until `shutdown` resolves.
pub async fn run_healer(
    manager: ClusterManager,
    tracker: Arc<HealthTracker>,
    config: HealConfig,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healer = Healer {
        dirty: false,
        healed_for: BTreeSet::new(),
        hints_seen: tracker.hints(),
        quarantined_seen: tracker.quarantined_total(),
        last_resume: tokio::time::Instant::now(),
        manager,
        tracker,
        config,
    };
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => healer.tick().await,
        }
    }
}

/// What the healer remembers between two looks.
struct Healer {
    manager: ClusterManager,
    tracker: Arc<HealthTracker>,
    config: HealConfig,
    /// Something was down (or written as a hinted copy) since the last
    /// repair.
    dirty: bool,
    /// The set of down nodes the last re-replication worked around.
    healed_for: BTreeSet<NodeAddr>,
    hints_seen: u64,
    quarantined_seen: u64,
    last_resume: tokio::time::Instant,
}

impl Healer {
    async fn tick(&mut self) {
        let state = match self.manager.state().await {
            Ok(s) => s.value,
            Err(e) => {
                tracing::debug!(error = %e, "healer cannot read the cluster state");
                return;
            }
        };
        if state.pending.is_some() || state.previous.is_some() {
            self.resume_abandoned().await;
            return;
        }
        if state.nodes.iter().any(|n| n.id.is_empty())
            && let Err(e) = self.manager.record_member_ids().await
        {
            tracing::debug!(error = %e, "could not record member ids yet");
        }
        self.repair_queued().await;
        // Copies a node's scrubber quarantined, or hinted writes: a full
        // repair restores them.
        if self.tracker.quarantined_total() > self.quarantined_seen
            || self.tracker.hints() != self.hints_seen
        {
            self.dirty = true;
        }
        let down: BTreeSet<NodeAddr> = state
            .nodes
            .iter()
            .filter(|n| self.tracker.is_down(&n.addr))
            .map(|n| n.addr.clone())
            .collect();
        if !down.is_empty() {
            self.dirty = true;
            self.rereplicate(down).await;
        } else if self.dirty {
            self.hand_back().await;
        }
    }

    /// A change under way, or one nobody runs any more (its server died,
    /// its clean-up failed): resumes the latter, every [`RESUME_EVERY`].
    async fn resume_abandoned(&mut self) {
        if self.last_resume.elapsed() < RESUME_EVERY {
            return;
        }
        self.last_resume = tokio::time::Instant::now();
        match self.manager.resume_abandoned().await {
            Ok(true) => tracing::info!("an abandoned ring change was resumed"),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "resuming an abandoned ring change failed; retrying")
            }
        }
    }

    /// Bad copies met by reads: repairs exactly those files now.
    async fn repair_queued(&self) {
        let queued = self.tracker.take_repair_queue();
        if queued.is_empty() {
            return;
        }
        match self.manager.repair_keys(&queued).await {
            Ok(n) => tracing::info!(
                files = queued.len(),
                copies = n,
                "bad copies rewritten from good ones"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "targeted repair failed; the next full repair retries")
            }
        }
    }

    /// Re-replicates around the nodes in `down` once one has been down for
    /// [`HealConfig::rereplicate_after`] (once per set of down nodes).
    async fn rereplicate(&mut self, down: BTreeSet<NodeAddr>) {
        let Some(after) = self.config.rereplicate_after else {
            return;
        };
        let now = SystemTime::now();
        let overdue = down.iter().any(|n| {
            self.tracker
                .down_since(n)
                .and_then(|since| now.duration_since(since).ok())
                .is_some_and(|d| d >= after)
        });
        if !overdue || down == self.healed_for {
            return;
        }
        let names: Vec<&str> = down.iter().map(|n| n.as_str()).collect();
        tracing::warn!(down = ?names, "storage nodes down too long: re-replicating from the surviving copies");
        match self.manager.rereplicate(&down).await {
            Ok(copies) => {
                tracing::info!(
                    copies,
                    "re-replication done: every file has its copies on live nodes"
                );
                self.healed_for = down;
            }
            Err(Error::Locked { holder }) => {
                tracing::debug!(holder, "admin lock busy; re-replication waits");
            }
            Err(e) => tracing::warn!(error = %e, "re-replication failed; retrying"),
        }
    }

    /// Every member answers again: hands the copies written elsewhere back
    /// to their owners.
    async fn hand_back(&mut self) {
        let hints_before = self.tracker.hints();
        let quarantined_before = self.tracker.quarantined_total();
        match self.manager.repair().await {
            Ok(copies) => {
                tracing::info!(
                    copies,
                    "every storage node answers: copies handed back to their owners"
                );
                self.dirty = false;
                self.healed_for.clear();
                self.hints_seen = hints_before;
                self.quarantined_seen = quarantined_before;
            }
            Err(Error::Locked { holder }) => {
                tracing::debug!(holder, "admin lock busy; hand-back waits");
            }
            Err(e) => tracing::warn!(error = %e, "handing copies back failed; retrying"),
        }
    }
}
