//! Failures with real processes: a storage node killed or stalled while
//! readers loop over every file, hinted copies handed back, automatic
//! re-replication, and two web servers sharing a three-member etcd cluster.
//! Each test prints the figures it measures (run with `--nocapture`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tritontube_core::ContentKey;
use tritontube_core::admin::AdminClient;
use tritontube_core::testing::EtcdCluster;

const VNODES: u32 = 64;

/// Readers looping over `urls`, checking every body's SHA-256.
struct Readers {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(urls: Arc<BTreeMap<String, Vec<u8>>>, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..n)
            .map(|_| {
                let (stop, reads, failures, urls) =
                    (stop.clone(), reads.clone(), failures.clone(), urls.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    while !stop.load(Ordering::SeqCst) {
                        for (url, sha) in urls.iter() {
                            let ok = match http.get(url).send().await {
                                Ok(r) if r.status() == 200 => r
                                    .bytes()
                                    .await
                                    .map(|b| Sha256::digest(&b).to_vec() == *sha)
                                    .unwrap_or(false),
                                _ => false,
                            };
                            reads.fetch_add(1, Ordering::SeqCst);
                            if !ok {
                                failures.fetch_add(1, Ordering::SeqCst);
                                eprintln!("failed read: {url}");
                            }
                        }
                    }
                })
            })
            .collect();
        Readers {
            stop,
            reads,
            failures,
            tasks,
        }
    }

    /// Stops the readers: (reads, failed reads).
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.reads.load(Ordering::SeqCst),
            self.failures.load(Ordering::SeqCst),
        )
    }
}

/// Every file of the given videos through `http`: url → SHA-256.
async fn video_urls(http: &str, ids: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut urls = BTreeMap::new();
    for id in ids {
        let v = wait_ready(http, id).await;
        for f in files_of(http, id, &v).await {
            let url = format!("http://{http}/content/{id}/{f}");
            let r = reqwest::get(&url).await.unwrap();
            assert_eq!(r.status(), 200, "{url}");
            urls.insert(url, Sha256::digest(r.bytes().await.unwrap()).to_vec());
        }
    }
    urls
}

/// The same files through another web server: bodies must be identical.
async fn same_through(other: &str, urls: &BTreeMap<String, Vec<u8>>) {
    for (url, sha) in urls {
        let path = url.splitn(4, '/').nth(3).unwrap();
        let r = reqwest::get(format!("http://{other}/{path}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} through {other}");
        assert_eq!(
            Sha256::digest(r.bytes().await.unwrap()).to_vec(),
            *sha,
            "{path}"
        );
    }
}

/// Files filled straight into the cluster, read through `http`.
async fn key_urls(http: &str, keys: &[ContentKey]) -> BTreeMap<String, Vec<u8>> {
    let mut urls = BTreeMap::new();
    for k in keys {
        let url = format!("http://{http}/content/{k}");
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        urls.insert(url, Sha256::digest(r.bytes().await.unwrap()).to_vec());
    }
    urls
}

/// `tritontube_node_up{node="addr"}` from the web server's `/metrics`.
async fn node_up(http: &str, node: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("tritontube_node_up{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn metric(http: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// Waits until the web server's failure detector calls `node` down;
/// returns how long that took.
async fn until_down(http: &str, node: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    while node_up(http, node).await != Some(0.0) {
        assert!(t.elapsed() < limit, "{node} not seen down within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

/// Waits until verify is clean; returns how long that took.
async fn until_clean(admin: &AdminClient, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        match admin.verify().await {
            Ok(v) if v.problems.is_empty() => return t.elapsed(),
            other => assert!(
                t.elapsed() < limit,
                "verify not clean within {limit:?}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Copies of each file (key → count) in the given node directories.
fn copies_on(dirs: &[std::path::PathBuf]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for d in dirs {
        let Ok(videos) = std::fs::read_dir(d) else {
            continue;
        };
        // The node's own state (`.tritontube/`: id, index) holds no video.
        for v in videos
            .flatten()
            .filter(|v| !v.file_name().to_string_lossy().starts_with('.'))
        {
            for f in std::fs::read_dir(v.path()).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    let key = format!("{}/{name}", v.file_name().to_string_lossy());
                    *out.entry(key).or_default() += 1;
                }
            }
        }
    }
    out
}

fn node_dir(root: &Path, addr: &str) -> std::path::PathBuf {
    root.join(format!("node-{}", addr.rsplit(':').next().unwrap()))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_costs_no_read_and_gets_its_copies_back() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let vn = VNODES.to_string();
    let web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs,
        &[
            "--replicas",
            "2",
            "--vnodes",
            &vn,
            "--health-interval",
            "0.2",
            "--no-rereplicate",
        ],
    )
    .await;
    let admin = AdminClient::connect(&format!("127.0.0.1:{admin_port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    for (i, audio) in [true, false].into_iter().enumerate() {
        let c = clip(root.path(), &format!("movie{i}.mp4"), 4, "640x360", audio);
        assert_eq!(upload(&web.addr, &c).await.status(), 303);
    }
    let urls = Arc::new(video_urls(&web.addr, &["movie0", "movie1"]).await);
    let readers = Readers::start(urls.clone(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // kill -9 one node while the readers run.
    let victim = addrs[1].clone();
    nodes[1].kill9();
    let detect = until_down(&web.addr, &victim, Duration::from_secs(10)).await;
    eprintln!("node death to reads skipping it: {detect:?}");
    let status = admin.status().await.unwrap();
    let seen = status
        .nodes
        .iter()
        .find(|n| n.address == victim)
        .expect("the dead node is listed");
    assert_eq!(seen.health().label(), "down");
    assert!(!seen.last_error.is_empty() && seen.health_since_ms > 0);

    // An upload during the outage succeeds, with hinted copies.
    let c = clip(root.path(), "outage.mp4", 4, "640x360", true);
    assert_eq!(upload(&web.addr, &c).await.status(), 303);
    let outage = video_urls(&web.addr, &["outage"]).await;
    assert!(
        metric(&web.addr, "tritontube_hinted_writes_total").await > 0.0,
        "writes whose owner was down went to stand-ins"
    );
    let dead_dir = node_dir(root.path(), &victim);
    assert!(
        !copies_on(std::slice::from_ref(&dead_dir))
            .keys()
            .any(|k| k.starts_with("outage/")),
        "the dead node got nothing"
    );

    // The node comes back: its copies are handed back, stand-ins removed.
    nodes[1] = start_node(root.path(), port_of(&victim)).await;
    let back = until_clean(&admin, Duration::from_secs(60)).await;
    eprintln!("node back to verify clean (hinted copies handed back): {back:?}");
    let on_victim = copies_on(std::slice::from_ref(&dead_dir));
    assert!(
        on_victim.keys().any(|k| k.starts_with("outage/")),
        "the returning node received the files written while it was down"
    );
    let all: Vec<_> = addrs.iter().map(|a| node_dir(root.path(), a)).collect();
    for (key, n) in copies_on(&all) {
        assert_eq!(n, 2, "{key} has exactly two copies");
    }
    same_through(&web.addr, &outage).await;

    let (reads, failures) = readers.stop().await;
    eprintln!("reads during the outage and recovery: {reads}, failed: {failures}");
    assert!(reads as usize > urls.len() * 2, "the readers ran: {reads}");
    assert_eq!(failures, 0, "no failed read");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_down_too_long_is_re_replicated_from_the_survivors() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let vn = VNODES.to_string();
    let web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs,
        &[
            "--replicas",
            "2",
            "--vnodes",
            &vn,
            "--health-interval",
            "0.2",
            "--rereplicate-after",
            "2",
        ],
    )
    .await;
    let admin = AdminClient::connect(&format!("127.0.0.1:{admin_port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    let (count, size) = (400, 128 * 1024);
    let keys = fill(&addrs, count, size, VNODES).await;
    record_videos(&sqlite_meta(root.path()), &keys).await;
    until_clean(&admin, Duration::from_secs(10)).await;
    let urls = Arc::new(key_urls(&web.addr, &keys[..80]).await);
    let readers = Readers::start(urls.clone(), 1);

    let victim = addrs[2].clone();
    let live: Vec<_> = addrs[..2]
        .iter()
        .map(|a| node_dir(root.path(), a))
        .collect();
    let lost = copies_on(&[node_dir(root.path(), &victim)]).len();
    nodes[2].kill9();
    let t = Instant::now();
    until_down(&web.addr, &victim, Duration::from_secs(10)).await;
    // Every file back to two copies on the surviving nodes.
    loop {
        let copies = copies_on(&live);
        if copies.len() == count && copies.values().all(|n| *n >= 2) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "R copies not restored: {} files, {} with two copies",
            copies.len(),
            copies.values().filter(|n| **n >= 2).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "R copies restored {:?} after the node's death (threshold 2 s): {lost} files ({} MiB) had lost a copy",
        t.elapsed(),
        lost * size / (1024 * 1024)
    );

    // The node returns: copies handed back, stand-ins removed.
    nodes[2] = start_node(root.path(), port_of(&victim)).await;
    let back = until_clean(&admin, Duration::from_secs(60)).await;
    eprintln!("node back to verify clean: {back:?}");
    let all: Vec<_> = addrs.iter().map(|a| node_dir(root.path(), a)).collect();
    let copies = copies_on(&all);
    assert_eq!(copies.len(), count);
    assert!(copies.values().all(|n| *n == 2), "exactly two copies each");

    let (reads, failures) = readers.stop().await;
    eprintln!("reads: {reads}, failed: {failures}");
    assert!(reads as usize > urls.len());
    assert_eq!(failures, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_node_is_detected_and_skipped() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let vn = VNODES.to_string();
    let web = start_web(
        root.path(),
        free_port(),
        free_port(),
        &addrs,
        &[
            "--replicas",
            "2",
            "--vnodes",
            &vn,
            "--health-interval",
            "0.2",
            "--health-timeout",
            "0.5",
            "--no-rereplicate",
        ],
    )
    .await;
    let keys = fill(&addrs, 90, 64 * 1024, VNODES).await;
    let urls = Arc::new(key_urls(&web.addr, &keys).await);
    let readers = Readers::start(urls.clone(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SIGSTOP: the kernel still accepts connections; nothing answers.
    let victim = addrs[0].clone();
    let pid = nodes[0].child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let detect = until_down(&web.addr, &victim, Duration::from_secs(10)).await;
    eprintln!("stalled node detected as down after {detect:?}");

    // Once it is known down, reads no longer wait for it.
    let http = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    for url in urls.keys() {
        let t = Instant::now();
        let r = http.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("slowest read once the stalled node is known down: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "reads skip the stalled node instead of waiting for its timeout: {slowest:?}"
    );
    let (reads, failures) = readers.stop().await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    eprintln!("reads: {reads}, failed: {failures}");
    assert!(reads as usize > urls.len());
    assert_eq!(failures, 0);
}

async fn healthz(http: &str) -> serde_json::Value {
    reqwest::get(format!("http://{http}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_web_servers_share_one_etcd_cluster() {
    let mut etcd = EtcdCluster::start_members(3).await;
    let endpoints = etcd.endpoints();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let vn = VNODES.to_string();
    let args = [
        "--replicas",
        "2",
        "--vnodes",
        &vn,
        "--health-interval",
        "0.2",
    ];
    let (admin_a, admin_b) = (free_port(), free_port());
    let admin_a_addr = format!("127.0.0.1:{admin_a}");
    let a = start_web_with(
        root.path(),
        free_port(),
        admin_a,
        &addrs[..3],
        &args,
        ("etcd", &endpoints),
    )
    .await;
    let b = start_web_with(
        root.path(),
        free_port(),
        admin_b,
        &addrs[..3],
        &args,
        ("etcd", &endpoints),
    )
    .await;
    let admin_b = AdminClient::connect(&format!("127.0.0.1:{admin_b}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();

    // Upload through one, play through the other.
    let c = clip(root.path(), "shared.mp4", 4, "640x360", true);
    assert_eq!(upload(&a.addr, &c).await.status(), 303);
    let urls = video_urls(&b.addr, &["shared"]).await;
    same_through(&a.addr, &urls).await;

    // A ring change through A: B's admin lock refusal while it runs, and B
    // routing by the new ring soon after it commits.
    let keys = fill(&addrs[..3], 300, 256 * 1024, VNODES).await;
    let meta = tritontube_core::metadata::EtcdMetadataStore::connect(&endpoints)
        .await
        .unwrap();
    record_videos(&meta, &keys).await;
    let epoch = healthz(&b.addr).await["ring_epoch"].as_u64().unwrap();
    // A web server that lags holds the change before its copy starts.
    lagging_web_server(&meta, true).await;
    let change = {
        let admin = AdminClient::connect(&admin_a_addr, Some(ADMIN_TOKEN.into()))
            .await
            .unwrap();
        let node = addrs[3].clone();
        tokio::spawn(async move { admin.add(&node, 0.0, |_| {}).await })
    };
    let t = Instant::now();
    while !admin_b.status().await.unwrap().change_in_progress {
        if change.is_finished() {
            panic!("the change ended before it was seen: {:?}", change.await);
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "change never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = admin_b
        .remove(&addrs[0], |_| {})
        .await
        .expect_err("a second change through the other server is refused");
    eprintln!("second change refused: {refused}");
    assert!(!change.is_finished(), "the lagging server holds the change");
    // The lagging server goes away: the change goes on without it.
    lagging_web_server(&meta, false).await;
    change.await.unwrap().unwrap();
    let t = Instant::now();
    loop {
        let h = healthz(&b.addr).await;
        if h["ring_epoch"].as_u64().unwrap() > epoch
            && h["nodes"] == 4
            && h["ring_change_pending"] == false
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the other server routes by the new ring within a second: {h}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "ring change seen by the other web server {:?} after the commit",
        t.elapsed()
    );
    assert_eq!(admin_b.list().await.unwrap().len(), 4);
    until_clean(&admin_b, Duration::from_secs(30)).await;
    same_through(&b.addr, &urls).await;

    // One etcd member lost: uploads and reads carry on through both.
    etcd.members[0].kill();
    let c = clip(root.path(), "quorum.mp4", 3, "640x360", false);
    assert_eq!(upload(&b.addr, &c).await.status(), 303);
    let more = video_urls(&a.addr, &["quorum"]).await;
    same_through(&b.addr, &more).await;
    same_through(&a.addr, &urls).await;
}
