//! `--log-format json`: the storage node's log is one JSON object per line
//! (what log collectors read), and the default stays human-readable text.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts a node with `extra` flags, waits until it serves, stops it with
/// SIGTERM (so it logs its shutdown too) and returns its standard error.
fn run_node(dir: &Path, extra: &[&str]) -> String {
    let port = tritontube_core::testing::free_port();
    let log = dir.join(format!("node-{port}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .arg(dir.join(format!("node-{port}")))
        .env("RUST_LOG", "info")
        .env_remove("TRITONTUBE_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "node did not open its port");
        std::thread::sleep(Duration::from_millis(25));
    }
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "node exited with {status}");
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_node(dir.path(), &["--log-format", "json"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "too few lines:\n{text}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for e in &events {
        assert!(e["timestamp"].is_string(), "{e}");
        assert!(e["level"].is_string(), "{e}");
        assert!(e["message"].is_string(), "{e}");
    }
    // Fields sit beside the message, as a collector indexes them.
    let serving = events
        .iter()
        .find(|e| e["message"] == "storage node serving")
        .unwrap_or_else(|| panic!("no start-up event:\n{text}"));
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{serving}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "SIGTERM received, shutting down"),
        "{text}"
    );
}

#[test]
fn text_logs_are_the_default_and_are_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_node(dir.path(), &[]);
    assert!(text.contains("storage node serving"), "{text}");
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{text}"
    );
    // Written to a file, not a terminal: no colour codes.
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn an_unknown_log_format_is_refused_before_starting() {
    let out = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .args(["--log-format", "xml", "unused-dir"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected text or json"), "{err}");
    assert!(!Path::new("unused-dir").exists());
}
