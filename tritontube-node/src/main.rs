//! `tritontube-node`: a storage node. Serves the files under `<baseDir>`
//! (as `<baseDir>/<videoId>/<filename>`, the course project's layout) over
//! gRPC until Ctrl-C or SIGTERM. Every flag, and the directory, can also
//! come from a TOML file (`--config FILE`); see [`tritontube_core::config`].

use std::process::ExitCode;

use tritontube_core::config::{self, NodeArgs};
use tritontube_core::store::LocalContentStore;

#[tokio::main]
async fn main() -> ExitCode {
    let loaded = config::load_or_exit::<NodeArgs>();
    if loaded.args.print_config {
        print!("{}", loaded.effective());
        return ExitCode::SUCCESS;
    }
    let args = &loaded.args;
    tritontube_core::shutdown::init_logging(args.log_format);
    loaded.log_warnings();
    let store = match LocalContentStore::open(&args.base_dir, args.local_options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "tritontube-node: cannot use {}: {e}",
                args.base_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = args.listen_addr();
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
