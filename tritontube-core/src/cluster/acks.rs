//! Acknowledged cluster states: every web server says which cluster state
//! it routes by, and ring changes wait for all of them before they copy
//! (the pending ring) and before they delete (the committed ring).

use std::time::Duration;

use super::ClusterManager;
use crate::error::{Error, Result};
use crate::metadata::lifecycle::now_ms;
use crate::metadata::{ClusterAck, MetadataStore};

impl ClusterManager {
    /// Keeps the data plane routed by the stored cluster state, following
    /// changes made by other processes, until `shutdown` resolves; and
    /// acknowledges the state it routes by (renewed every third of
    /// [`ManagerConfig::ack_ttl`](super::ManagerConfig::ack_ttl)), so ring changes wait for this server.
    /// Writes are refused once the acknowledgement lapses (the metadata
    /// store out of reach), until it is renewed.
    pub async fn follow(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut known = None;
        let every = (self.config.ack_ttl / 3).max(Duration::from_millis(100));
        loop {
            let wait = self.meta.wait_cluster_change(known, every);
            tokio::select! {
                _ = &mut shutdown => {
                    // Gone: changes need not wait for this server.
                    if let Some(v) = known {
                        let _ = self.meta.put_cluster_ack(&ClusterAck {
                            server: self.config.holder.clone(),
                            version: v,
                            until_ms: 0,
                        }).await;
                    }
                    return;
                }
                r = wait => match r {
                    Ok(Some(v)) => {
                        if known != Some(v.version) {
                            self.nodes.apply(&v.value);
                            known = Some(v.version);
                        }
                        self.acknowledge(v.version).await;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the cluster state failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
    }

    /// Says this server routes by cluster state `version` (already applied).
    pub(super) async fn acknowledge(&self, version: u64) {
        let until_ms = now_ms() + self.config.ack_ttl.as_millis() as i64;
        let ack = ClusterAck {
            server: self.config.holder.clone(),
            version,
            until_ms,
        };
        match self.meta.put_cluster_ack(&ack).await {
            Ok(()) => self.nodes.fence_writes_after(until_ms),
            Err(e) => {
                tracing::warn!(error = %e, "could not acknowledge the cluster state; writes stop when the last acknowledgement lapses");
            }
        }
    }

    /// Waits until every web server whose acknowledgement is live routes by
    /// cluster state `version` or later; a server whose acknowledgement
    /// lapses meanwhile is left out (it refuses writes until it catches
    /// up). Fails, naming the laggards, after three acknowledgement
    /// lifetimes.
    pub(super) async fn wait_acknowledged(&self, version: u64, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.config.ack_ttl * 3;
        loop {
            let now = now_ms();
            let behind: Vec<String> = self
                .meta
                .cluster_acks()
                .await?
                .into_iter()
                .filter(|a| a.until_ms > now && a.version < version)
                .map(|a| a.server)
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Unavailable {
                    what: format!("acknowledgement of {what}"),
                    reason: format!(
                        "web servers {} still route by an older ring",
                        behind.join(", ")
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
