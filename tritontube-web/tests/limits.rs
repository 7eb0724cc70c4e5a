//! The connection limits through the real `tritontube-web` process (its
//! embedded default stores), set by its flags: a slowloris at twice
//! `--max-connections` leaves `GET /healthz` answered at once, and the slow
//! connections are closed by `--header-timeout-secs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status of `GET /healthz` on a fresh connection, and how long it took.
async fn healthz(addr: &str) -> (String, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    (text.lines().next().unwrap_or("").to_string(), t.elapsed())
}

#[test]
fn the_limit_flags_are_documented() {
    let out = Command::new(env!("CARGO_BIN_EXE_tritontube-web"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--header-timeout-secs",
        "--idle-timeout-secs",
        "--max-connections",
        "--max-uploads",
        "--max-uploads-per-client",
    ] {
        assert!(help.contains(flag), "{flag} in --help:\n{help}");
    }
    let st = Command::new(env!("CARGO_BIN_EXE_tritontube-web"))
        .args(["--max-connections", "0"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2), "a cap of 0 is refused");
}

/// An admin token file that cannot be read, or is empty, stops the server
/// at once with a message naming the file (never a server without a token).
#[test]
fn an_unreadable_or_empty_token_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "  \n").unwrap();
    let missing = dir.path().join("no-such-token");
    for (file, says) in [(&empty, "is empty"), (&missing, "cannot read")] {
        let out = Command::new(env!("CARGO_BIN_EXE_tritontube-web"))
            .arg("--admin-token-file")
            .arg(file)
            .args(["--port", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", file.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains(&*file.to_string_lossy()),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_against_the_process_leaves_requests_answered() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tritontube-web"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--header-timeout-secs", "1", "--max-connections", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let web = Proc {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    wait_port(&web.addr).await;
    // wait_port's probe connection may still count for a moment.
    assert!(healthz(&web.addr).await.0.contains(" 200 "));
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(&web.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    let opened = Instant::now();
    for _ in 0..3 {
        let (status, took) = healthz(&web.addr).await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        eprintln!("GET /healthz during the slowloris: {took:?}");
    }
    // Every slow connection is closed within the header timeout (plus a
    // margin), whether to make room or by the timeout.
    for s in &mut slow {
        let mut b = [0u8; 64];
        let left = (opened + Duration::from_millis(2000)).saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("slow connection not closed: {other:?}"),
        }
    }
    assert!(healthz(&web.addr).await.0.contains(" 200 "));
}
