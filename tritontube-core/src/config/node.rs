//! The storage node's command line (`tritontube-node`).

use std::path::PathBuf;

use clap::Parser;

use crate::shutdown::LogFormat;
use crate::store::{ByteSize, LocalOptions};

/// A TritonTube storage node.
///
/// Every flag, and the directory (`base-dir`), can also be set in a TOML
/// config file (`--config FILE`) under its long name: `port = 8090`,
/// `capacity-bytes = "500G"`, `base-dir = "/var/lib/tritontube/node"`. A
/// flag on the command line wins over the file, and the file over the
/// default.
#[derive(Debug, Clone, Parser)]
#[command(name = "tritontube-node", version, about)]
pub struct NodeArgs {
    /// Host or address to listen on.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8090)]
    pub port: u16,
    /// Re-hash stored files in the background at this many MB per second, so
    /// bytes that rot on disk are found and quarantined before anyone reads
    /// them (0 turns scrubbing off).
    #[arg(long, default_value_t = 8.0, value_parser = non_negative)]
    pub scrub_mb_per_s: f64,
    /// Check every chunk read against the hash recorded when it was written
    /// (`--verify-reads false` exists only to measure what that costs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub verify_reads: bool,
    /// The most bytes of files this node may hold: a plain count or with a
    /// unit (`500M`, `2G`: powers of 1000; `512Mi`, `2GiB`: powers of 1024).
    /// A put that would take it past this is refused as "node full"
    /// (gRPC RESOURCE_EXHAUSTED) and stores nothing. Default: no limit but
    /// the disk.
    #[arg(long, value_name = "BYTES")]
    pub capacity_bytes: Option<ByteSize>,
    /// Log lines as human-readable `text` or `json` (one object per line).
    #[arg(long, value_name = "text|json", env = "TRITONTUBE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A TOML file setting any of these flags by long name, and the
    /// directory as `base-dir` (what is given here wins over it).
    #[arg(long, value_name = "FILE", env = "TRITONTUBE_NODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Directory holding this node's files (created if missing).
    pub base_dir: PathBuf,
}

/// A number that is not negative (`0`, `8`, `2.5`).
fn non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a number 0 or above, got {s:?}")),
    }
}

impl NodeArgs {
    /// The store's options.
    pub fn local_options(&self) -> LocalOptions {
        LocalOptions {
            scrub_bytes_per_sec: (self.scrub_mb_per_s > 0.0)
                .then_some((self.scrub_mb_per_s * 1_000_000.0) as u64),
            verify_reads: self.verify_reads,
            capacity_bytes: self.capacity_bytes.map(|c| c.0),
        }
    }

    /// `host:port` to listen on.
    pub fn listen_addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
