//! An upload's life with real processes (storage nodes, the web server,
//! ffmpeg): deleted while it transcodes, its client gone at every step, its
//! web server killed mid-job, two web servers sharing the jobs.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tritontube_core::testing::EtcdCluster;

/// Three storage nodes and a web server on them (two copies of each file),
/// which can be killed and started again on the same ports and data.
struct Site {
    root: tempfile::TempDir,
    _nodes: Vec<Proc>,
    addrs: Vec<String>,
    http: u16,
    admin: u16,
    web: Option<Proc>,
    metadata: (String, String),
    extra: Vec<String>,
}

impl Site {
    async fn start(extra: &[&str]) -> Site {
        Site::start_with_nodes(extra, &[]).await
    }

    /// With extra flags for every storage node.
    async fn start_with_nodes(extra: &[&str], node_extra: &[&str]) -> Site {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("metadata.db").display().to_string();
        Site::start_in(root, extra, node_extra, ("sqlite".into(), db)).await
    }

    async fn start_in(
        root: tempfile::TempDir,
        extra: &[&str],
        node_extra: &[&str],
        metadata: (String, String),
    ) -> Site {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(start_node_with(root.path(), free_port(), node_extra).await);
        }
        let addrs = nodes.iter().map(|n| n.addr.clone()).collect();
        let mut site = Site {
            root,
            _nodes: nodes,
            addrs,
            http: free_port(),
            admin: free_port(),
            web: None,
            metadata,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        site.start_web().await;
        site
    }

    /// Starts (or starts again) the web server; its earlier log is kept.
    async fn start_web(&mut self) {
        let log = self.log_path();
        if log.exists() {
            let old = std::fs::read(&log).unwrap();
            let mut kept = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join("web-earlier.log"))
                .unwrap();
            kept.write_all(&old).unwrap();
        }
        let mut extra: Vec<&str> = vec!["--replicas", "2", "--job-lease-secs", "3"];
        extra.extend(self.extra.iter().map(String::as_str));
        self.web = Some(
            start_web_with(
                self.root.path(),
                self.http,
                self.admin,
                &self.addrs,
                &extra,
                (&self.metadata.0, &self.metadata.1),
            )
            .await,
        );
    }

    fn kill9(&mut self) {
        if let Some(mut w) = self.web.take() {
            w.kill9();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http)
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join(format!("web-{}.log", self.http))
    }

    /// Everything the web server logged, over all its runs.
    fn log(&self) -> String {
        let earlier =
            std::fs::read_to_string(self.root.path().join("web-earlier.log")).unwrap_or_default();
        earlier + &std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join(format!("web-data-{}", self.http))
    }

    /// Every stored file of `video` on any node, with its copy count.
    fn stored(&self, video: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for a in &self.addrs {
            let dir = self
                .root
                .path()
                .join(format!("node-{}", a.rsplit(':').next().unwrap()))
                .join(video);
            for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                if !name.starts_with('.') {
                    *out.entry(name).or_default() += 1;
                }
            }
        }
        out
    }
}

/// The video's JSON, or `None` once it is gone (404).
async fn video(http: &str, id: &str) -> Option<serde_json::Value> {
    let r = reqwest::get(format!("http://{http}/api/videos/{id}"))
        .await
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    assert_eq!(r.status(), 200, "GET /api/videos/{id}");
    Some(r.json().await.unwrap())
}

async fn delete(http: &str, id: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .delete(format!("http://{http}/api/videos/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
}

/// Uploads `path` as `id` (the id field before the file).
async fn upload_as(http: &str, id: &str, path: &Path) -> reqwest::StatusCode {
    let form = reqwest::multipart::Form::new()
        .text("id", id.to_string())
        .part(
            "file",
            reqwest::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("clip.mp4"),
        );
    post_form(http, form).await.status()
}

/// Waits until `id` is processing at `pct`% or more; returns the percent.
/// (Its record may not exist yet while its body is on the way.)
async fn wait_progress(http: &str, id: &str, pct: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let Some(v) = video(http, id).await else {
            assert!(Instant::now() < deadline, "{id} never appeared");
            tokio::time::sleep(Duration::from_millis(40)).await;
            continue;
        };
        let p = v["progress"].as_f64().unwrap_or(0.0);
        match v["state"].as_str() {
            Some("processing") if p >= pct => return p,
            Some("processing" | "uploaded") => {}
            other => panic!("{id} is {other:?} before {pct}%: {v}"),
        }
        assert!(Instant::now() < deadline, "{id} never reached {pct}%: {v}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Waits until `id` is gone (404).
async fn wait_gone(http: &str, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while let Some(v) = video(http, id).await {
        assert!(Instant::now() < deadline, "{id} is still there: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `id` is settled: gone, ready or failed (never stuck).
async fn wait_settled(http: &str, id: &str, limit: Duration) -> Option<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let v = video(http, id).await;
        match v.as_ref().and_then(|v| v["state"].as_str()) {
            None | Some("ready" | "failed") => return v,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{id} is stuck: {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Processes (other than zombies) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = p.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let zombie = std::fs::read_to_string(p.path().join("stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if cmd.contains(needle) && !zombie {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

/// Waits until no process mentions `needle`.
async fn wait_no_process(needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left = processes_mentioning(needle);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entries of a directory (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// A clip whose transcode takes long enough to be caught at 10%, 50% and
/// 90%.
fn long_clip(dir: &Path, name: &str, audio: bool) -> PathBuf {
    clip(dir, name, 24, "1280x720", audio)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_during_transcoding_cancels_it_and_leaves_nothing() {
    let mut site = Site::start(&[]).await;
    let http = site.addr();
    let first = long_clip(site.root.path(), "first.mp4", true);
    let mut generation = 0;
    for pct in [10.0, 50.0, 90.0] {
        assert_eq!(upload_as(&http, "victim", &first).await, 303);
        generation += 1;
        let at = wait_progress(&http, "victim", pct).await;
        let t = Instant::now();
        let status = delete(&http, "victim").await;
        let answered = t.elapsed();
        assert!(status == 204 || status == 202, "{status}");
        // "deleting" until the purge is done, then gone.
        wait_gone(&http, "victim", Duration::from_secs(30)).await;
        println!(
            "deleted at {at:.0}%: {status} after {answered:?}, gone after {:?}",
            t.elapsed()
        );
        // The transcoder is stopped, and nothing of the upload is kept:
        // not on any node (late writes included), not in the spool.
        let spooled = format!("victim.g{generation}.upload");
        wait_no_process(&spooled, Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(site.stored("victim"), BTreeMap::new(), "at {at:.0}%");
        let spool = site.data_dir().join("ingest").join("spool");
        assert!(entries(&spool).is_empty(), "{:?}", entries(&spool));
        let manifest = if generation == 1 {
            "manifest.mpd".to_string()
        } else {
            format!("g{generation}-manifest.mpd")
        };
        let r = reqwest::get(format!("http://{http}/content/victim/{manifest}"))
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{manifest} still served");
    }
    // The id is free; the new upload shows only its own bytes and facts.
    let second = clip(site.root.path(), "second.mp4", 3, "320x240", false);
    assert_eq!(upload_as(&http, "victim", &second).await, 303);
    let v = wait_ready(&http, "victim").await;
    assert_eq!(v["has_audio"], false);
    assert_eq!(v["width"], 320);
    assert!(
        (v["duration_secs"].as_f64().unwrap() - 3.0).abs() < 0.5,
        "{v}"
    );
    assert_eq!(v["manifest"], "/content/victim/g4-manifest.mpd");
    let stored = site.stored("victim");
    assert!(!stored.is_empty());
    assert!(
        stored.keys().all(|k| k.starts_with("g4-")),
        "an earlier upload's file is left: {stored:?}"
    );
    assert!(stored.values().all(|&n| n == 2), "{stored:?}");
    let log = site.log();
    assert!(
        log.matches("stopping the transcode").count() + log.matches("job cancelled").count() >= 3,
        "{log}"
    );
    site.kill9();
}

/// Sends `head` and then `body` over a raw connection, then waits `linger`
/// and closes it without reading the answer.
async fn send_and_vanish(http: &str, head: &[u8], body: &[u8], linger: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(head).await.unwrap();
    s.write_all(body).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(linger).await;
    drop(s);
}

/// A multipart upload of `data` as `id`: the request head and body.
fn multipart(id: &str, data: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let b = "XyZzYboundary";
    let mut body = Vec::new();
    write!(
        body,
        "--{b}\r\ncontent-disposition: form-data; name=\"id\"\r\n\r\n{id}\r\n--{b}\r\ncontent-disposition: form-data; name=\"file\"; filename=\"c.mp4\"\r\ncontent-type: video/mp4\r\n\r\n"
    )
    .unwrap();
    body.extend_from_slice(data);
    write!(body, "\r\n--{b}--\r\n").unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary={b}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    (head.into_bytes(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_at_any_point_leaves_no_stuck_record() {
    // Five uploads from one address close together: none may be turned
    // away by the per-client cap (that would leave no record and no line
    // naming it, for another reason).
    let mut site = Site::start(&["--max-uploads-per-client", "8"]).await;
    let http = site.addr();
    let data = std::fs::read(clip(site.root.path(), "c.mp4", 6, "640x360", true)).unwrap();
    // (id, what is sent, how long the client stays after sending it)
    let (head, body) = multipart("mid-headers", &data);
    send_and_vanish(&http, &head[..head.len() / 2], b"", Duration::ZERO).await;
    let (head, body_mid) = multipart("mid-body", &data);
    send_and_vanish(
        &http,
        &head,
        &body_mid[..body_mid.len() / 2],
        Duration::from_millis(200),
    )
    .await;
    let (head, body_all) = multipart("after-body", &data);
    send_and_vanish(&http, &head, &body_all, Duration::ZERO).await;
    let (head, body_probe) = multipart("during-probe", &data);
    send_and_vanish(&http, &head, &body_probe, Duration::from_millis(30)).await;
    // A longer clip, so that its transcode is surely still running when
    // the client goes.
    let longer = std::fs::read(clip(site.root.path(), "l.mp4", 12, "1280x720", true)).unwrap();
    let (head, body_tx) = multipart("during-transcode", &longer);
    {
        // Stays until the transcode is under way, then goes.
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(&http).await.unwrap();
        s.write_all(&head).await.unwrap();
        s.write_all(&body_tx).await.unwrap();
        wait_progress(&http, "during-transcode", 0.0).await;
        drop(s);
    }
    drop(body);
    let mut outcomes = BTreeMap::new();
    for id in [
        "mid-headers",
        "mid-body",
        "after-body",
        "during-probe",
        "during-transcode",
    ] {
        let v = wait_settled(&http, id, Duration::from_secs(120)).await;
        let state = v
            .as_ref()
            .map_or("none", |v| v["state"].as_str().unwrap())
            .to_string();
        outcomes.insert(id, state);
    }
    println!("outcomes: {outcomes:?}");
    assert_eq!(outcomes["mid-headers"], "none");
    assert_eq!(outcomes["mid-body"], "none");
    assert_eq!(
        outcomes["during-transcode"], "ready",
        "a queued job outlives its request"
    );
    for id in ["after-body", "during-probe"] {
        assert!(
            ["none", "ready"].contains(&outcomes[id].as_str()),
            "{id}: {outcomes:?}"
        );
    }
    // Each id is free again or playable, and each case is in the log.
    let log = site.log();
    assert!(
        log.contains("in the middle of a request's headers"),
        "{log}"
    );
    for id in ["mid-body", "after-body", "during-probe", "during-transcode"] {
        let named = log.lines().any(|l| l.contains(id));
        assert!(named, "nothing logged for {id}:\n{log}");
    }
    for id in ["mid-headers", "mid-body"] {
        assert!(site.stored(id).is_empty());
        let c = clip(site.root.path(), "again.mp4", 2, "320x240", false);
        assert_eq!(upload_as(&http, id, &c).await, 303, "{id} is free again");
        wait_ready(&http, id).await;
    }
    site.kill9();
}

/// kill -9 of the web server while it transcodes, and again while it
/// stores: started again, it re-runs the job from its spooled upload; no
/// ffmpeg outlives the server, and no temporary file is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_server_killed_mid_job_finishes_it_after_a_restart() {
    let mut site = Site::start(&[]).await;
    let http = site.addr();
    let c = long_clip(site.root.path(), "k.mp4", true);
    let data_dir = site.data_dir().display().to_string();

    // During the transcode.
    assert_eq!(upload_as(&http, "killed", &c).await, 303);
    wait_progress(&http, "killed", 30.0).await;
    assert!(
        !processes_mentioning(&data_dir).is_empty(),
        "no transcoder running"
    );
    site.kill9();
    wait_no_process(&data_dir, Duration::from_secs(5)).await;
    site.start_web().await;
    let v = wait_ready(&http, "killed").await;
    assert_eq!(v["has_audio"], true);

    // During the store step: the transcode is done (99%) and files are
    // going to the nodes.
    assert_eq!(upload_as(&http, "stored", &c).await, 303);
    let deadline = Instant::now() + Duration::from_secs(120);
    while site.stored("stored").is_empty() {
        assert!(Instant::now() < deadline, "nothing was ever stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    site.kill9();
    wait_no_process(&data_dir, Duration::from_secs(5)).await;
    site.start_web().await;
    wait_ready(&http, "stored").await;

    let log = site.log();
    assert_eq!(
        log.matches("re-running an interrupted job").count(),
        2,
        "{log}"
    );
    let ingest = site.data_dir().join("ingest");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(entries(&ingest.join("spool")).is_empty() && entries(&ingest.join("work")).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "left behind: spool {:?}, work {:?}",
            entries(&ingest.join("spool")),
            entries(&ingest.join("work"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every stored file of both is exactly what the manifest names, two
    // copies each.
    for id in ["killed", "stored"] {
        let stored = site.stored(id);
        assert!(stored.values().all(|&n| n == 2), "{id}: {stored:?}");
    }
    site.kill9();
}

/// Two web servers on one metadata store: jobs whose server was killed are
/// finished once, by that server when it returns, never run twice at once.
async fn two_servers_run_each_job_once(metadata: (String, String), root: tempfile::TempDir) {
    let mut a = Site::start_in(root, &[], &[], metadata.clone()).await;
    // B: the same nodes and metadata, its own ports and data.
    let mut b = Site {
        root: tempfile::tempdir().unwrap(),
        _nodes: Vec::new(),
        addrs: a.addrs.clone(),
        http: free_port(),
        admin: free_port(),
        web: None,
        metadata,
        extra: Vec::new(),
    };
    // B's nodes are A's: stored files are looked up under A's root.
    b.start_web().await;
    let c = clip(a.root.path(), "two.mp4", 12, "1280x720", true);
    for i in 0..2 {
        assert_eq!(upload_as(&a.addr(), &format!("a{i}"), &c).await, 303);
        assert_eq!(upload_as(&b.addr(), &format!("b{i}"), &c).await, 303);
    }
    wait_progress(&a.addr(), "a0", 20.0).await;
    a.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.start_web().await;
    for id in ["a0", "a1", "b0", "b1"] {
        wait_ready(&b.addr(), id).await;
    }
    let (la, lb) = (a.log(), b.log());
    for id in ["a0", "a1", "b0", "b1"] {
        let ready = |l: &str| {
            l.lines()
                .filter(|x| x.contains("video ready") && x.contains(&format!("video={id} ")))
                .count()
        };
        assert_eq!(
            ready(&la) + ready(&lb),
            1,
            "{id} finished {} times",
            ready(&la) + ready(&lb)
        );
        let stored = a.stored(id);
        assert!(
            !stored.is_empty() && stored.values().all(|&n| n == 2),
            "{id}: {stored:?}"
        );
    }
    // B never ran A's jobs (A came back before its leases lapsed).
    assert!(!lb.contains("video=a0"), "{lb}");
    a.kill9();
    b.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_web_servers_on_sqlite_run_each_job_once() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("metadata.db").display().to_string();
    two_servers_run_each_job_once(("sqlite".into(), db), root).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_web_servers_on_etcd_run_each_job_once() {
    let etcd = EtcdCluster::start_members(1).await;
    let root = tempfile::tempdir().unwrap();
    two_servers_run_each_job_once(("etcd".into(), etcd.endpoints()), root).await;
    drop(etcd);
}

/// Storage nodes that fill up in the middle of an ingest: the video fails
/// saying so, and nothing of it stays on any node (the writes in flight
/// when the first one was refused included); a video that fits still
/// goes through.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_filling_up_mid_ingest_leave_nothing_of_the_video() {
    let mut site = Site::start_with_nodes(&[], &["--capacity-bytes", "300K"]).await;
    let http = site.addr();
    let big = clip(site.root.path(), "big.mp4", 8, "1280x720", true);
    assert_eq!(upload_as(&http, "too-big", &big).await, 303);
    let v = wait_settled(&http, "too-big", Duration::from_secs(120))
        .await
        .expect("a failed record, with its reason");
    assert_eq!(v["state"], "failed", "{v}");
    let reason = v["failure"].as_str().unwrap();
    assert!(reason.contains("full"), "{reason}");
    assert!(
        !reason.contains('/'),
        "no path in what the uploader sees: {reason}"
    );
    // Every write had ended before the clean-up: nothing is left, now or a
    // little later.
    assert_eq!(site.stored("too-big"), BTreeMap::new());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(site.stored("too-big"), BTreeMap::new());
    let small = clip(site.root.path(), "small.mp4", 1, "320x240", false);
    assert_eq!(upload_as(&http, "fits", &small).await, 303);
    wait_ready(&http, "fits").await;
    site.kill9();
}
