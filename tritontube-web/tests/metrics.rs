//! `/metrics` on a live cluster of real processes: the per-node series
//! follow the membership. A node whose add was refused never shows up, a
//! node being added shows up, and a removed node's series disappear (no
//! stale "suspect" or "down" left behind to raise false alerts).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tritontube_core::admin::AdminClient;

async fn metrics(http: &str) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The per-node lines of `/metrics` that name `node`.
fn lines_naming<'a>(text: &'a str, node: &str) -> Vec<&'a str> {
    let label = format!("node=\"{node}\"");
    text.lines().filter(|l| l.contains(&label)).collect()
}

/// Waits until `/metrics` says `node` is up.
async fn until_up(http: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = format!("tritontube_node_up{{node=\"{node}\"}} 1");
    loop {
        let m = metrics(http).await;
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "{node} not up in /metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a ring change, again while the admin lock is held by the server's
/// own start-up work (recovery, checksum recording, healing).
async fn change<F, Fut>(what: F) -> tritontube_core::Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = tritontube_core::Result<tritontube_core::admin::ChangeOutcome>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match what().await {
            Err(e)
                if e.to_string()
                    .contains("another cluster change is in progress")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            r => return r.map(|o| o.migrated),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_name_only_current_members() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs[..3],
        &[
            "--replicas",
            "2",
            "--vnodes",
            "16",
            "--health-interval",
            "0.1",
        ],
    )
    .await;
    let http = web.addr.clone();
    let admin = AdminClient::connect(&format!("127.0.0.1:{admin_port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    for a in &addrs[..3] {
        until_up(&http, a).await;
    }

    // An add of an address nobody listens on is refused; the failed check
    // of it must not leave a "suspect" series behind.
    let ghost = format!("127.0.0.1:{}", free_port());
    let refused = change(|| admin.add(&ghost, 1.0, |_| {})).await.unwrap_err();
    assert!(refused.to_string().contains(&ghost), "{refused}");
    // Several health-check rounds later, still nothing about it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = metrics(&http).await;
    assert!(
        lines_naming(&m, &ghost).is_empty(),
        "refused add still reported:\n{}",
        lines_naming(&m, &ghost).join("\n")
    );

    // A node added is reported...
    let fourth = addrs[3].clone();
    change(|| admin.add(&fourth, 1.0, |_| {})).await.unwrap();
    until_up(&http, &fourth).await;

    // ...and once removed (and stopped, as an operator would), it is not.
    change(|| admin.remove(&fourth, |_| {})).await.unwrap();
    nodes[3].kill9();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let m = metrics(&http).await;
    assert!(
        lines_naming(&m, &fourth).is_empty(),
        "removed node still reported:\n{}",
        lines_naming(&m, &fourth).join("\n")
    );
    // The members are all there, up.
    for a in &addrs[..3] {
        let line = format!("tritontube_node_up{{node=\"{a}\"}} 1");
        assert!(m.lines().any(|l| l == line), "{a} missing:\n{m}");
    }
}
