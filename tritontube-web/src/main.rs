//! `tritontube-web`: the web site and JSON API, and (with `nw` content) the
//! admin gRPC service. Same command line as the course project:
//!
//! ```text
//! tritontube-web [--host H] [--port 8080] sqlite ./metadata.db nw "localhost:8081,localhost:8090,localhost:8091"
//! ```
//!
//! With no positional arguments it runs on an embedded default: SQLite and a
//! local content directory under `--data-dir`.
//!
//! dash.js (the browser's player) is built into this binary (see `build.rs`),
//! so it needs no `node_modules` at run time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tritontube_core::cluster::{HealConfig, HealthConfig};
use tritontube_core::server::{WebOptions, run};
use tritontube_core::shutdown::LogFormat;
use tritontube_core::web::cache::CacheConfig;
use tritontube_core::web::{Assets, ServeLimits};

/// dash.js and its licence notice, from the `dashjs` npm package that
/// `package-lock.json` pins (found by `build.rs`).
const DASH_JS: &[u8] = include_bytes!(env!("TRITONTUBE_DASH_JS"));
const DASH_JS_LICENSE: &[u8] = include_bytes!(env!("TRITONTUBE_DASH_JS_LICENSE"));
/// hls.js and its licence, from the `hls.js` npm package, likewise.
const HLS_JS: &[u8] = include_bytes!(env!("TRITONTUBE_HLS_JS"));
const HLS_JS_LICENSE: &[u8] = include_bytes!(env!("TRITONTUBE_HLS_JS_LICENSE"));

/// The TritonTube web server.
#[derive(Parser)]
#[command(name = "tritontube-web", version, about)]
struct Args {
    /// Host to listen on.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Where this server keeps its files: the embedded default stores,
    /// the admin token, its server id, and uploads until their job ends
    /// (one directory per web server).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Copies kept of every file, with `nw` content (used when the cluster is first set up).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Virtual nodes per storage node (1 places files exactly as the course project does).
    #[arg(long, default_value_t = tritontube_core::ring::DEFAULT_VNODES)]
    vnodes: u32,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    max_upload_mb: u64,
    /// Transcodes running at once.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Shared secret for the admin services and for DELETE. Prefer the
    /// environment variable or --admin-token-file: a value given here is
    /// visible to every user in `ps`. Without any, one is made on first
    /// start and kept in DATA_DIR/admin-token (mode 0600).
    #[arg(long, env = "TRITONTUBE_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// A file holding the admin token (first line).
    #[arg(long, conflicts_with = "admin_token")]
    admin_token_file: Option<PathBuf>,
    /// Serve dash.js from this directory (holding dash.all.min.js, e.g.
    /// node_modules/dashjs/dist/modern/umd) instead of the copy built in.
    #[arg(long)]
    assets: Option<PathBuf>,
    /// Seconds between health checks of each storage node.
    #[arg(long, default_value_t = 0.5)]
    health_interval: f64,
    /// Seconds a health check may take before it counts as failed (catches
    /// a node that accepts connections but never answers).
    #[arg(long, default_value_t = 1.0)]
    health_timeout: f64,
    /// Seconds a storage node may stay down before its files are copied
    /// again from the surviving replicas, so every file is back to the
    /// replica count.
    #[arg(long, default_value_t = 60.0)]
    rereplicate_after: f64,
    /// Never re-replicate automatically (copies written while a node was
    /// down are still handed back when it returns).
    #[arg(long)]
    no_rereplicate: bool,
    /// MiB of small content files (segments, posters, manifests) kept in
    /// memory; 0 turns the cache off.
    #[arg(long, default_value_t = 256)]
    cache_mb: u64,
    /// Seconds a client may take to send a request's headers (from
    /// connecting, or from the first byte of a later request on a kept-alive
    /// connection); slower connections are closed.
    #[arg(long, default_value_t = 10.0)]
    header_timeout_secs: f64,
    /// Seconds a kept-alive connection may sit idle between requests before
    /// it is closed.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout_secs: f64,
    /// Connections open at once. At the cap a new connection closes the one
    /// idle (or sending headers) the longest; if all have a request in
    /// progress, it is answered 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Uploads in progress at once; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    max_uploads: u32,
    /// Uploads in progress at once from one client IP address; beyond it,
    /// 429 with Retry-After.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    max_uploads_per_client: u32,
    /// Seconds an upload job's lease lasts without renewal: after a web
    /// server stops, another one (or the same one restarted, at once) takes
    /// its unfinished uploads and deletions over after this long.
    #[arg(long, default_value_t = 30.0)]
    job_lease_secs: f64,
    /// Log lines as human-readable `text` or `json` (one object per line).
    #[arg(long, value_name = "text|json", env = "TRITONTUBE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// METADATA_KIND METADATA_OPTION CONTENT_KIND CONTENT_OPTION, e.g.
    /// `sqlite ./metadata.db nw "localhost:8081,localhost:8090"`.
    #[arg(num_args = 0..=4, value_names = ["METADATA_KIND", "METADATA_OPTION", "CONTENT_KIND", "CONTENT_OPTION"])]
    stores: Vec<String>,
}

/// `v` seconds as a duration, or why not (`name` is the flag).
fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            format!("tritontube-web: --{name} must be a positive number of seconds, got {v}")
        })
}

/// The admin token as given: by flag or environment, or in a file.
fn admin_token(args: &Args) -> Result<Option<String>, String> {
    match (&args.admin_token, &args.admin_token_file) {
        (Some(t), _) => Ok(Some(t.clone())),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
            Ok(_) => Err(format!("tritontube-web: {} is empty", path.display())),
            Err(e) => Err(format!(
                "tritontube-web: cannot read {}: {e}",
                path.display()
            )),
        },
        (None, None) => Ok(None),
    }
}

/// The server's options from the command line, or what is wrong with it.
fn options(args: Args) -> Result<WebOptions, String> {
    let (metadata, content) = match args.stores.as_slice() {
        [] => (None, None),
        [mk, mo, ck, co] => (
            Some((mk.clone(), mo.clone())),
            Some((ck.clone(), co.clone())),
        ),
        _ => {
            return Err("tritontube-web: give all four of METADATA_KIND METADATA_OPTION CONTENT_KIND CONTENT_OPTION, or none".to_string());
        }
    };
    let after = secs("rereplicate-after", args.rereplicate_after)?;
    let admin_token = admin_token(&args)?;
    let assets = match &args.assets {
        Some(dir) => Assets::from_dir(dir).map_err(|e| format!("tritontube-web: --assets: {e}"))?,
        None => Assets::embedded(DASH_JS, DASH_JS_LICENSE),
    }
    .with_hls_js(HLS_JS, HLS_JS_LICENSE);
    Ok(WebOptions {
        host: args.host,
        port: args.port,
        metadata,
        content,
        data_dir: args.data_dir,
        replicas: args.replicas,
        vnodes: args.vnodes,
        max_upload_bytes: args.max_upload_mb * 1024 * 1024,
        workers: args.workers,
        admin_token,
        assets,
        health: HealthConfig {
            interval: secs("health-interval", args.health_interval)?,
            timeout: secs("health-timeout", args.health_timeout)?,
            ..HealthConfig::default()
        },
        cache: CacheConfig {
            capacity_bytes: args.cache_mb * 1024 * 1024,
            ..CacheConfig::default()
        },
        heal: HealConfig {
            rereplicate_after: (!args.no_rereplicate).then_some(after),
            ..HealConfig::default()
        },
        limits: ServeLimits {
            header_timeout: secs("header-timeout-secs", args.header_timeout_secs)?,
            idle_timeout: secs("idle-timeout-secs", args.idle_timeout_secs)?,
            max_connections: args.max_connections as usize,
            max_uploads: args.max_uploads as usize,
            max_uploads_per_client: args.max_uploads_per_client as usize,
        },
        job_lease: secs("job-lease-secs", args.job_lease_secs)?,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tritontube_core::shutdown::init_logging(args.log_format);
    let opts = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        tritontube_core::shutdown::signal().await;
        on_signal.cancel();
    });
    match run(opts, token).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tritontube-web: {e}");
            ExitCode::FAILURE
        }
    }
}
