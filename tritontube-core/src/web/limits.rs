//! How much the web server takes on at once, and for how long it waits on a
//! client: the settings ([`ServeLimits`]) and the upload gate
//! ([`UploadLimiter`]). The connection side is enforced by the accept loop
//! of [`super::serve`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;

/// Seconds a refused upload is told to wait before trying again: an upload
/// in progress usually takes longer than that, but a client retrying sooner
/// only gets refused again.
pub const UPLOAD_RETRY_AFTER_SECS: u32 = 10;

/// Limits on connections and uploads, so that clients that open connections
/// and send nothing (or a little at a time) cannot take every file
/// descriptor and starve everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeLimits {
    /// Longest a client may take to send a request's headers: from accepting
    /// the connection for its first request, from the first byte of any later
    /// one. A connection over it is closed.
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may wait, between requests, without
    /// sending a byte. A connection over it is closed.
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap, a new connection closes the one
    /// that has gone longest without a request in progress (an attacker's
    /// half-sent headers, or an idle keep-alive); if every connection has a
    /// request in progress, the new one is answered 503 and closed.
    pub max_connections: usize,
    /// `POST /upload` requests in progress at once, from all clients;
    /// beyond it, 503 with `Retry-After`.
    pub max_uploads: usize,
    /// `POST /upload` requests in progress at once from one client IP
    /// address; beyond it, 429 with `Retry-After`.
    pub max_uploads_per_client: usize,
}

impl Default for ServeLimits {
    /// Suited to a small server: 10 s for headers, 60 s idle, 1024
    /// connections, 8 uploads at once, 2 per client.
    fn default() -> Self {
        ServeLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_uploads: 8,
            max_uploads_per_client: 2,
        }
    }
}

#[derive(Debug, Default)]
struct UploadCounts {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Counts uploads in progress, in all and by client address, and refuses
/// those beyond the caps.
#[derive(Debug)]
pub struct UploadLimiter {
    max: usize,
    per_client: usize,
    counts: Mutex<UploadCounts>,
}

impl Default for UploadLimiter {
    /// The caps of [`ServeLimits::default`].
    fn default() -> Self {
        let d = ServeLimits::default();
        UploadLimiter::new(d.max_uploads, d.max_uploads_per_client)
    }
}

impl UploadLimiter {
    /// At most `max` uploads at once, and `per_client` from one address
    /// (both at least 1).
    pub fn new(max: usize, per_client: usize) -> Self {
        UploadLimiter {
            max: max.max(1),
            per_client: per_client.max(1),
            counts: Mutex::default(),
        }
    }

    /// Uploads in progress.
    pub fn in_progress(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, UploadCounts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one upload from `client` (`None` when the address is unknown,
    /// as through warp's test client: only the overall cap applies), or says
    /// why not: [`Error::Busy`], per client or overall. The upload counts
    /// until the permit drops.
    pub fn try_start(self: &Arc<Self>, client: Option<IpAddr>) -> Result<UploadPermit, Error> {
        let mut counts = self.lock();
        // The client's own cap first: a client over it is told it is the
        // cause (429), whatever the server's load.
        if let Some(ip) = client
            && counts.by_client.get(&ip).copied().unwrap_or(0) >= self.per_client
        {
            return Err(Error::Busy {
                what: format!(
                    "{} uploads are in progress from this address, the most one client may run at once",
                    self.per_client
                ),
                limit: self.per_client,
                retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
                per_client: true,
            });
        }
        if counts.total >= self.max {
            return Err(Error::Busy {
                what: format!(
                    "{} uploads are in progress, the most this server runs at once",
                    self.max
                ),
                limit: self.max,
                retry_after_secs: UPLOAD_RETRY_AFTER_SECS,
                per_client: false,
            });
        }
        counts.total += 1;
        if let Some(ip) = client {
            *counts.by_client.entry(ip).or_default() += 1;
        }
        Ok(UploadPermit {
            limiter: self.clone(),
            client,
        })
    }
}

/// One admitted upload; it stops counting when dropped (the handler
/// finished, or the client went away and the request was dropped).
#[derive(Debug)]
pub struct UploadPermit {
    limiter: Arc<UploadLimiter>,
    client: Option<IpAddr>,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.client
            && let Some(n) = counts.by_client.get_mut(&ip)
        {
            *n -= 1;
            // Forget clients with nothing in progress, so the map holds at
            // most `max` addresses however many clients have come and gone.
            if *n == 0 {
                counts.by_client.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_overall_and_per_client_and_release_on_drop() {
        let l = Arc::new(UploadLimiter::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.try_start(Some(a)).unwrap();
        let _a2 = l.try_start(Some(a)).unwrap();
        let e = l.try_start(Some(a)).unwrap_err();
        assert_eq!(e.http_status(), 429, "{e}");
        let _b1 = l.try_start(Some(b)).unwrap();
        let e = l.try_start(None).unwrap_err();
        assert_eq!(e.http_status(), 503, "{e}");
        assert_eq!(e.retry_after_secs(), Some(UPLOAD_RETRY_AFTER_SECS));
        drop(a1);
        assert_eq!(l.in_progress(), 2);
        let _a3 = l.try_start(Some(a)).unwrap();
        assert_eq!(l.in_progress(), 3);
    }
}
