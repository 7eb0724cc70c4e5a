//! `tritontube-web`: the web site and JSON API, and (with `nw` content) the
//! admin gRPC service. Same command line as the course project:
//!
//! ```text
//! tritontube-web [--host H] [--port 8080] sqlite ./metadata.db nw "localhost:8081,localhost:8090,localhost:8091"
//! ```
//!
//! With no positional arguments it runs on an embedded default: SQLite and a
//! local content directory under `--data-dir`. `tritontube-web user add|passwd|list`
//! manages the accounts of its metadata store (see
//! [`tritontube_core::config::UserArgs`]). Every flag can also come from
//! a TOML file (`--config FILE`); see [`tritontube_core::config`].
//!
//! dash.js and hls.js (the browser's players) and tus-js-client (the home
//! page's resumable uploads) are built into this binary
//! (see `build.rs`), so it needs no `node_modules` at run time.

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;
use tritontube_core::config::{self, WebArgs};
use tritontube_core::server::{WebOptions, run};
use tritontube_core::web::Assets;

/// dash.js and its licence notice, from the `dashjs` npm package that
/// `package-lock.json` pins (found by `build.rs`).
const DASH_JS: &[u8] = include_bytes!(env!("TRITONTUBE_DASH_JS"));
const DASH_JS_LICENSE: &[u8] = include_bytes!(env!("TRITONTUBE_DASH_JS_LICENSE"));
/// hls.js and its licence, from the `hls.js` npm package, likewise.
const HLS_JS: &[u8] = include_bytes!(env!("TRITONTUBE_HLS_JS"));
const HLS_JS_LICENSE: &[u8] = include_bytes!(env!("TRITONTUBE_HLS_JS_LICENSE"));
/// tus-js-client (the home page's resumable uploads) and its licence, from
/// the `tus-js-client` npm package, likewise.
const TUS_JS: &[u8] = include_bytes!(env!("TRITONTUBE_TUS_JS"));
const TUS_JS_LICENSE: &[u8] = include_bytes!(env!("TRITONTUBE_TUS_JS_LICENSE"));

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "user") {
        return user(std::env::args_os().skip(1)).await;
    }
    let loaded = config::load_or_exit::<WebArgs>();
    if loaded.args.print_config {
        return match loaded.effective_web() {
            Ok(effective) => {
                print!("{effective}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tritontube-web: {e}");
                ExitCode::from(2)
            }
        };
    }
    tritontube_core::shutdown::init_logging(loaded.args.log_format);
    loaded.log_warnings();
    let embedded = Assets::embedded(DASH_JS, DASH_JS_LICENSE);
    let mut opts = match WebOptions::from_args(loaded.args, embedded) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tritontube-web: {e}");
            return ExitCode::from(2);
        }
    };
    // hls.js is always the built-in copy, even with `--assets`.
    opts.assets = opts
        .assets
        .with_hls_js(HLS_JS, HLS_JS_LICENSE)
        .with_tus_js(TUS_JS, TUS_JS_LICENSE);
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

/// `tritontube-web user ...`.
async fn user(argv: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = config::UserArgs::parse_or_exit(argv);
    match tritontube_core::server::user_command(args, read_password).await {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tritontube-web user: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A password: typed twice on the terminal without echo, or the first line
/// of standard input when it is not a terminal.
fn read_password(prompt: &str) -> tritontube_core::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let io = |e| tritontube_core::Error::io("standard input", e);
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(prompt).map_err(io)?;
        let again = rpassword::prompt_password("Again: ").map_err(io)?;
        if first != again {
            return Err(tritontube_core::Error::invalid(
                "password",
                "",
                "the two passwords typed differ",
            ));
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
