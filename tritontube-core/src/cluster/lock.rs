//! The cluster-wide admin lock, held by one change (or repair) at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::ClusterManager;
use crate::error::{Error, Result};
use crate::metadata::{AdminLease, MetadataStore};

/// How [`ClusterManager::under_lock`] takes the admin lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Now, or [`Error::Locked`] naming its holder: a second change is
    /// refused, not queued.
    Now,
    /// Waiting out a crashed holder's lease (up to three lock lifetimes),
    /// as recovery at start-up does.
    Waiting,
}

impl ClusterManager {
    /// Runs `work` holding the cluster-wide admin lock, renewed meanwhile
    /// and released on every path (an error, a panic, or a caller that went
    /// away: see [`HeldLock`]'s `Drop`).
    pub(crate) async fn under_lock<T>(
        &self,
        take: Take,
        work: impl AsyncFnOnce(&HeldLock) -> Result<T>,
    ) -> Result<T> {
        let lock = match take {
            Take::Now => {
                let lease = self
                    .meta
                    .try_lock_admin(&self.config.holder, self.config.lock_ttl)
                    .await?;
                HeldLock::start(self.meta.clone(), lease)
            }
            Take::Waiting => self.lock_waiting().await?,
        };
        let result = work(&lock).await;
        lock.release().await;
        result
    }

    async fn lock_waiting(&self) -> Result<HeldLock> {
        let deadline = tokio::time::Instant::now() + self.config.lock_ttl * 3;
        loop {
            match self
                .meta
                .try_lock_admin(&self.config.holder, self.config.lock_ttl)
                .await
            {
                Ok(lease) => return Ok(HeldLock::start(self.meta.clone(), lease)),
                Err(Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The admin lock, renewed in the background while held, and released
/// when dropped on any path (an error, a panic, or a caller that went away
/// mid-change), so a lock is never renewed for a change nobody runs.
pub(crate) struct HeldLock {
    pub(crate) lease: AdminLease,
    meta: Arc<dyn MetadataStore>,
    lost: Arc<AtomicBool>,
    released: AtomicBool,
    renew: tokio::task::JoinHandle<()>,
}

impl HeldLock {
    pub(super) fn start(meta: Arc<dyn MetadataStore>, lease: AdminLease) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let renew = {
            let lease = lease.clone();
            let lost = lost.clone();
            let meta = meta.clone();
            tokio::spawn(async move {
                let every = (lease.ttl / 3).max(Duration::from_millis(100));
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(e) = meta.renew_admin_lock(&lease).await {
                        tracing::error!(error = %e, "lost the admin lock");
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            })
        };
        HeldLock {
            lease,
            meta,
            lost,
            released: AtomicBool::new(false),
            renew,
        }
    }

    pub(super) fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and releases the lease.
    pub(crate) async fn release(self) {
        self.released.store(true, Ordering::SeqCst);
        self.renew.abort();
        if let Err(e) = self.meta.unlock_admin(&self.lease).await {
            tracing::warn!(error = %e, "could not release the admin lock; it expires by itself");
        }
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.renew.abort();
        if self.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let (meta, lease) = (self.meta.clone(), self.lease.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = meta.unlock_admin(&lease).await {
                    tracing::warn!(error = %e, "could not release the admin lock; it expires by itself");
                }
            });
        }
    }
}
