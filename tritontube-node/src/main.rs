//! `tritontube-node`: a storage node. Serves the files under `<baseDir>`
//! (as `<baseDir>/<videoId>/<filename>`, the course project's layout) over
//! gRPC until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tritontube_core::shutdown::LogFormat;
use tritontube_core::store::{ByteSize, LocalContentStore, LocalOptions};

/// A TritonTube storage node.
#[derive(Parser)]
#[command(name = "tritontube-node", version, about)]
struct Args {
    /// Host or address to listen on.
    #[arg(long, default_value = "localhost")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Re-hash stored files in the background at this many MB per second, so
    /// bytes that rot on disk are found and quarantined before anyone reads
    /// them (0 turns scrubbing off).
    #[arg(long, default_value_t = 8.0)]
    scrub_mb_per_s: f64,
    /// Check every chunk read against the hash recorded when it was written
    /// (`--verify-reads false` exists only to measure what that costs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    verify_reads: bool,
    /// The most bytes of files this node may hold: a plain count or with a
    /// unit (`500M`, `2G`: powers of 1000; `512Mi`, `2GiB`: powers of 1024).
    /// A put that would take it past this is refused as "node full"
    /// (gRPC RESOURCE_EXHAUSTED) and stores nothing. Default: no limit but
    /// the disk.
    #[arg(long, value_name = "BYTES")]
    capacity_bytes: Option<ByteSize>,
    /// Log lines as human-readable `text` or `json` (one object per line).
    #[arg(long, value_name = "text|json", env = "TRITONTUBE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Directory holding this node's files (created if missing).
    base_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tritontube_core::shutdown::init_logging(args.log_format);
    let options = LocalOptions {
        scrub_bytes_per_sec: (args.scrub_mb_per_s > 0.0)
            .then_some((args.scrub_mb_per_s * 1_000_000.0) as u64),
        verify_reads: args.verify_reads,
        capacity_bytes: args.capacity_bytes.map(|c| c.0),
    };
    let store = match LocalContentStore::open(&args.base_dir, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "tritontube-node: cannot use {}: {e}",
                args.base_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = format!("{}:{}", args.host, args.port);
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("tritontube-node: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = store.stats();
    tracing::info!(
        %addr,
        dir = %args.base_dir.display(),
        node_id = store.node_id(),
        files = stats.files,
        bytes = stats.bytes,
        capacity = ?stats.capacity,
        indexing = stats.indexing.is_some(),
        "storage node serving"
    );
    match tritontube_core::node::serve(listener, store, tritontube_core::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tritontube-node: {e}");
            ExitCode::FAILURE
        }
    }
}
