//! Prometheus metrics of the web server, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets, seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Route {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Counters the server keeps.
#[derive(Default)]
pub struct Metrics {
    routes: Mutex<BTreeMap<&'static str, Route>>,
    bytes_served: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The route label of a request path (ids are not labels: unbounded).
pub fn route_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "" => "/",
        "upload" => "/upload",
        "videos" => "/videos/:id",
        "content" => "/content/:id/:file",
        "api" => "/api/videos",
        "healthz" => "/healthz",
        "metrics" => "/metrics",
        "static" => "/static",
        _ => "other",
    }
}

impl Metrics {
    /// Records one finished request.
    pub fn observe(&self, path: &str, status: u16, elapsed: Duration) {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let r = routes.entry(route_of(path)).or_default();
        *r.by_status.entry(status).or_default() += 1;
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                r.buckets[i] += 1;
            }
        }
        r.sum += secs;
        r.count += 1;
    }

    /// Counts body bytes sent.
    pub fn add_bytes_served(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    /// The exposition text; `extra` is appended (gauges owned elsewhere).
    pub fn render(&self, extra: &str) -> String {
        let mut out = String::new();
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP tritontube_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE tritontube_http_requests_total counter\n");
        for (route, r) in routes.iter() {
            for (status, n) in &r.by_status {
                let _ = writeln!(
                    out,
                    "tritontube_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP tritontube_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE tritontube_http_request_duration_seconds histogram\n");
        for (route, r) in routes.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "tritontube_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    r.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "tritontube_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                r.count
            );
            let _ = writeln!(
                out,
                "tritontube_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                r.sum
            );
            let _ = writeln!(
                out,
                "tritontube_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                r.count
            );
        }
        out.push_str("# HELP tritontube_bytes_served_total Content body bytes sent.\n");
        out.push_str("# TYPE tritontube_bytes_served_total counter\n");
        let _ = writeln!(
            out,
            "tritontube_bytes_served_total {}",
            self.bytes_served.load(Ordering::Relaxed)
        );
        out.push_str(extra);
        out
    }
}
