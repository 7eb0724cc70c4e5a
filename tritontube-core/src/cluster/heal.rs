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
    // Something was down (or written as a hinted copy) since the last repair.
    let mut dirty = false;
    // The set of down nodes the last re-replication worked around.
    let mut healed_for: BTreeSet<NodeAddr> = BTreeSet::new();
    let mut hints_seen = tracker.hints();
    let mut quarantined_seen = tracker.quarantined_total();
    let mut last_resume = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let state = match manager.state().await {
            Ok(s) => s.value,
            Err(e) => {
                tracing::debug!(error = %e, "healer cannot read the cluster state");
                continue;
            }
        };
        if state.pending.is_some() || state.previous.is_some() {
            // A change under way, or one nobody runs any more (its server
            // died, its clean-up failed): resume the latter.
            if last_resume.elapsed() >= RESUME_EVERY {
                last_resume = tokio::time::Instant::now();
                match manager.resume_abandoned().await {
                    Ok(true) => tracing::info!("an abandoned ring change was resumed"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "resuming an abandoned ring change failed; retrying")
                    }
                }
            }
            continue;
        }
        if state.nodes.iter().any(|n| n.id.is_empty())
            && let Err(e) = manager.record_member_ids().await
        {
            tracing::debug!(error = %e, "could not record member ids yet");
        }
        // Bad copies met by reads: repair exactly those files now.
        let queued = tracker.take_repair_queue();
        if !queued.is_empty() {
            match manager.repair_keys(&queued).await {
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
        // Copies a node's scrubber quarantined: a full repair restores them.
        let quarantined = tracker.quarantined_total();
        if quarantined > quarantined_seen {
            dirty = true;
        }
        let down: BTreeSet<NodeAddr> = state
            .nodes
            .iter()
            .filter(|n| tracker.is_down(&n.addr))
            .map(|n| n.addr.clone())
            .collect();
        if tracker.hints() != hints_seen {
            dirty = true;
        }
        if !down.is_empty() {
            dirty = true;
            let Some(after) = config.rereplicate_after else {
                continue;
            };
            let now = SystemTime::now();
            let overdue = down.iter().any(|n| {
                tracker
                    .down_since(n)
                    .and_then(|since| now.duration_since(since).ok())
                    .is_some_and(|d| d >= after)
            });
            if !overdue || down == healed_for {
                continue;
            }
            let names: Vec<&str> = down.iter().map(|n| n.as_str()).collect();
            tracing::warn!(down = ?names, "storage nodes down too long: re-replicating from the surviving copies");
            match manager.rereplicate(&down).await {
                Ok(copies) => {
                    tracing::info!(
                        copies,
                        "re-replication done: every file has its copies on live nodes"
                    );
                    healed_for = down;
                }
                Err(Error::Locked { holder }) => {
                    tracing::debug!(holder, "admin lock busy; re-replication waits");
                }
                Err(e) => tracing::warn!(error = %e, "re-replication failed; retrying"),
            }
        } else if dirty {
            let hints_before = tracker.hints();
            let quarantined_before = tracker.quarantined_total();
            match manager.repair().await {
                Ok(copies) => {
                    tracing::info!(
                        copies,
                        "every storage node answers: copies handed back to their owners"
                    );
                    dirty = false;
                    healed_for.clear();
                    hints_seen = hints_before;
                    quarantined_seen = quarantined_before;
                }
                Err(Error::Locked { holder }) => {
                    tracing::debug!(holder, "admin lock busy; hand-back waits");
                }
                Err(e) => tracing::warn!(error = %e, "handing copies back failed; retrying"),
            }
        }
    }
}
