//! `tritontube-node`: a storage node. Serves the files under `<baseDir>`
//! (as `<baseDir>/<videoId>/<filename>`, the course project's layout) over
//! gRPC until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tritontube_core::store::LocalContentStore;

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
    /// Directory holding this node's files (created if missing).
    base_dir: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    tritontube_core::shutdown::init_logging();
    let args = Args::parse();
    let store = match LocalContentStore::new(&args.base_dir) {
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
    tracing::info!(%addr, dir = %args.base_dir.display(), "storage node serving");
    match tritontube_core::node::serve(listener, store, tritontube_core::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tritontube-node: {e}");
            ExitCode::FAILURE
        }
    }
}
