//! Ring changes on a live cluster of real processes: no failed read while
//! nodes come and go, migrated counts equal to the ring diff, every refusal
//! leaving the cluster as it was, recovery after the web server is killed in
//! the middle of a migration, and a non-Rust client of the course protocol.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tritontube_core::admin::AdminClient;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::cluster::{owners_of, ring_of};
use tritontube_core::metadata::NodeEntry;
use tritontube_core::store::ContentStoreExt;
use tritontube_core::{ContentKey, NodeAddr};

const VNODES: u32 = 64;

fn entries(addrs: &[String]) -> Vec<NodeEntry> {
    addrs
        .iter()
        .map(|a| NodeEntry {
            addr: a.parse().unwrap(),
            weight: 1.0,
            id: String::new(),
            reach: None,
        })
        .collect()
}

/// File copies that must move when the ring goes from `old` to `new`.
fn diff_count(keys: &[ContentKey], old: &[String], new: &[String]) -> u64 {
    let (o, n) = (
        ring_of(&entries(old), VNODES),
        ring_of(&entries(new), VNODES),
    );
    keys.iter()
        .map(|k| {
            let before: BTreeSet<NodeAddr> = owners_of(&o, k, 2).into_iter().collect();
            owners_of(&n, k, 2)
                .into_iter()
                .filter(|x| !before.contains(x))
                .count() as u64
        })
        .sum()
}

async fn verify_clean(admin: &AdminClient) -> u64 {
    let v = admin.verify().await.unwrap();
    assert!(
        v.problems.is_empty(),
        "verify found problems: {:?}",
        v.problems
    );
    v.files_checked
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_come_and_go_without_a_failed_read() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let vn = VNODES.to_string();
    let web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs[..3],
        &["--replicas", "2", "--vnodes", &vn],
    )
    .await;
    let admin = AdminClient::connect(&format!("127.0.0.1:{admin_port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();

    let mut urls = BTreeMap::new();
    let mut keys = Vec::new();
    for (i, size) in ["640x360", "854x480", "640x360"].iter().enumerate() {
        let c = clip(root.path(), &format!("movie{i}.mp4"), 6, size, i != 1);
        assert_eq!(upload(&web.addr, &c).await.status(), 303);
    }
    for i in 0..3 {
        let id = format!("movie{i}");
        let v = wait_ready(&web.addr, &id).await;
        for f in files_of(&web.addr, &id, &v).await {
            let url = format!("http://{}/content/{id}/{f}", web.addr);
            let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
            urls.insert(url, Sha256::digest(&body).to_vec());
            keys.push(ContentKey::from_parts(&id, &f).unwrap());
        }
    }
    assert_eq!(verify_clean(&admin).await as usize, keys.len());

    // Readers loop over every file of every video, checking bytes.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let urls = Arc::new(urls);
    let readers: Vec<_> = (0..2)
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Add the fourth node.
    let expected = diff_count(&keys, &addrs[..3], &addrs);
    let out = admin.add(&addrs[3], 0.0, |_| {}).await.unwrap();
    assert_eq!(
        out.migrated, expected,
        "migrated count equals the ring diff"
    );
    assert!(expected > 0);
    verify_clean(&admin).await;
    let listed = admin.list().await.unwrap();
    assert_eq!(listed.len(), 4);

    // Remove one of the first three.
    let after: Vec<String> = addrs.iter().filter(|a| **a != addrs[0]).cloned().collect();
    let expected = diff_count(&keys, &addrs, &after);
    let out = admin.remove(&addrs[0], |_| {}).await.unwrap();
    assert_eq!(out.migrated, expected);
    verify_clean(&admin).await;
    // The removed node holds nothing any more.
    let left = std::fs::read_dir(
        root.path()
            .join(format!("node-{}", addrs[0].rsplit(':').next().unwrap())),
    )
    .unwrap()
    .filter_map(|e| e.ok())
    // The node's own state (id, index) is not a stored file.
    .filter(|e| e.file_name() != ".tritontube")
    .filter(|e| {
        std::fs::read_dir(e.path())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    })
    .count();
    assert_eq!(left, 0, "surplus copies deleted from the removed node");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
    let (reads, failures) = (
        reads.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    eprintln!("reads during the changes: {reads}, failed: {failures}");
    assert!(
        reads as usize > urls.len() * 2,
        "the readers really ran: {reads}"
    );
    assert_eq!(failures, 0, "no failed read");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_server_killed_mid_migration_recovers_by_itself() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let (http, admin_port) = (free_port(), free_port());
    let vn = VNODES.to_string();
    let args = ["--replicas", "2", "--vnodes", vn.as_str()];
    let mut web = start_web(root.path(), http, admin_port, &addrs[..3], &args).await;
    let keys = fill(&addrs[..3], 600, 512 * 1024, VNODES).await;
    record_videos(&sqlite_meta(root.path()), &keys).await;
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let admin = AdminClient::connect(&admin_addr, Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    assert_eq!(verify_clean(&admin).await as usize, keys.len());

    // Start adding the fourth node; kill -9 the web server once copying is
    // under way.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let a2 = admin.clone();
    let node = addrs[3].clone();
    let change = tokio::spawn(async move {
        a2.add(&node, 0.0, move |p| {
            let _ = tx.send((
                p.phase().label(),
                p.files_done,
                p.files_total,
                p.job_id.clone(),
            ));
        })
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (phase, done, total, job) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        if phase == "copying" && done > 0 {
            assert!(
                done < total,
                "killed before the copy finished ({done}/{total})"
            );
            break job;
        }
        assert!(Instant::now() < deadline);
    };
    web.kill9();
    assert!(
        change.await.unwrap().is_err(),
        "the caller learns the change did not complete"
    );

    // Restart: the server resumes the same job (every new node answers)
    // and commits it by itself.
    let web = start_web(root.path(), http, admin_port, &addrs[..3], &args).await;
    let admin = AdminClient::connect(&admin_addr, Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = admin.status().await.unwrap();
        if !s.change_in_progress && verify_clean_quiet(&admin).await {
            eprintln!("recovered: epoch {}, {} nodes", s.epoch, s.nodes.len());
            let c = s.change.expect("the change is recorded");
            assert_eq!(c.job_id, job, "the same job, resumed");
            assert!(c.outcome.starts_with("committed"), "{c:?}");
            assert_eq!(s.nodes.len(), 4);
            break;
        }
        assert!(Instant::now() < deadline, "not recovered in time: {s:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        verify_clean(&admin).await as usize,
        keys.len(),
        "no file lost"
    );
    drop(web);
}

async fn verify_clean_quiet(admin: &AdminClient) -> bool {
    admin
        .verify()
        .await
        .map(|v| v.problems.is_empty())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_changes_leave_the_cluster_as_it_was() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let vn = VNODES.to_string();
    let _web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs[..2],
        &[
            "--replicas",
            "2",
            "--vnodes",
            &vn,
            "--admin-token",
            "s3cret",
        ],
    )
    .await;
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let admin = AdminClient::connect(&admin_addr, Some("s3cret".into()))
        .await
        .unwrap();
    let keys = fill(&addrs[..2], 300, 256 * 1024, VNODES).await;
    record_videos(&sqlite_meta(root.path()), &keys).await;
    let before = admin.status().await.unwrap();

    let dead = format!("127.0.0.1:{}", free_port());
    let cases: Vec<(&str, String, bool, &str)> = vec![
        ("a node that does not answer", dead, true, "does not answer"),
        (
            "a node already in the ring",
            addrs[0].clone(),
            true,
            "already in the ring",
        ),
        (
            "a node not in the ring",
            addrs[3].clone(),
            false,
            "not in the ring",
        ),
        (
            "leaving fewer nodes than replicas",
            addrs[0].clone(),
            false,
            "fewer than the 2 replicas",
        ),
        (
            "a malformed address",
            "not an address".into(),
            true,
            "expected host:port",
        ),
    ];
    for (what, node, add, needle) in cases {
        let r = if add {
            admin.add(&node, 0.0, |_| {}).await
        } else {
            admin.remove(&node, |_| {}).await
        };
        let e = r.expect_err(what);
        assert!(e.to_string().contains(needle), "{what}: {e}");
        let now = admin.status().await.unwrap();
        assert_eq!(now.epoch, before.epoch, "{what}: nothing changed");
        assert_eq!(
            now.nodes.len(),
            before.nodes.len(),
            "{what}: nothing changed"
        );
    }

    // A wrong token, or none: the cluster service refuses; the course
    // project's service stays open on loopback (its own tool sends no
    // token) but still checks a token that is sent.
    for token in [Some("wrong".to_string()), None] {
        let bad = AdminClient::connect(&admin_addr, token.clone())
            .await
            .unwrap();
        match token {
            Some(_) => assert!(matches!(
                bad.list().await.unwrap_err(),
                tritontube_core::Error::Unauthenticated { .. }
            )),
            None => assert_eq!(bad.list().await.unwrap().len(), before.nodes.len()),
        }
        let e = bad.status().await.unwrap_err();
        assert!(
            matches!(e, tritontube_core::Error::Unauthenticated { .. }),
            "{e}"
        );
        let e = bad.add(&addrs[2], 0.0, |_| {}).await.unwrap_err();
        assert!(
            matches!(e, tritontube_core::Error::Unauthenticated { .. }),
            "{e}"
        );
    }

    // A second change while one runs is refused at once, not queued. (A
    // lagging web server holds the first one before its copy.)
    let meta = sqlite_meta(root.path());
    lagging_web_server(&meta, true).await;
    let a2 = admin.clone();
    let n2 = addrs[2].clone();
    let first = tokio::spawn(async move { a2.add(&n2, 0.0, |_| {}).await });
    // Once the first change shows as in progress it holds the lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admin.status().await.unwrap().change_in_progress {
        assert!(!first.is_finished(), "the first change ended unseen");
        assert!(Instant::now() < deadline, "the first change never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e = admin
        .add(&addrs[3], 0.0, |_| {})
        .await
        .expect_err("a second change is refused");
    let refused = e
        .to_string()
        .contains("another cluster change is in progress");
    assert!(refused, "says why: {e}");
    assert!(
        !first.is_finished(),
        "the lagging server holds the first change"
    );
    lagging_web_server(&meta, false).await;
    first.await.unwrap().unwrap();
    assert!(
        refused,
        "a concurrent change was refused with a clear error"
    );
    verify_clean(&admin).await;

    // Removing down to the last node (with replicas 2 this is refused earlier;
    // the message still says why).
    let e = admin.remove(&addrs[0], |_| {}).await;
    assert!(e.is_ok() || e.unwrap_err().to_string().contains("replicas"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_course_projects_admin_protocol_from_python() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let admin_port = free_port();
    let _web = start_web(
        root.path(),
        free_port(),
        admin_port,
        &addrs[..2],
        &["--replicas", "1", "--vnodes", "1"],
    )
    .await;
    fill_one(&addrs[..2]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/compat/course_admin_client.py");
    let server = format!("127.0.0.1:{admin_port}");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(&server)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["list"]);
    assert!(ok, "{err}");
    // Ring order with one virtual node: by h(addr).
    let mut expect: Vec<&String> = addrs[..2].iter().collect();
    expect.sort_by_key(|a| tritontube_core::ring::key_hash(a));
    let want = format!(
        "Storage cluster nodes:\n  - {}\n  - {}\n",
        expect[0], expect[1]
    );
    assert_eq!(out, want);
    let (ok, out, err) = run(&["add", &addrs[2]]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!(
            "Successfully added node: {}\nNumber of files migrated: ",
            addrs[2]
        )),
        "{out}"
    );
    let (ok, out, _) = run(&["remove", &addrs[0]]);
    assert!(ok);
    assert!(
        out.contains(&format!("Successfully removed node: {}", addrs[0])),
        "{out}"
    );
    let (ok, _, err) = run(&["remove", "nope:1"]);
    assert!(!ok);
    assert!(
        err.contains("NOT_FOUND") && err.contains("not in the ring"),
        "{err}"
    );
}

async fn fill_one(addrs: &[String]) {
    let nodes: Vec<NodeAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let store = NetworkContentStore::with_nodes(&nodes, 1, 1).unwrap();
    for i in 0..20 {
        let k = ContentKey::from_parts(&format!("v{i}"), "manifest.mpd").unwrap();
        store
            .put_bytes(&k, bytes::Bytes::from(vec![i as u8; 1000]))
            .await
            .unwrap();
    }
}

/// A course-protocol client that gives up after 50 ms (as the course's own
/// admin tool does with its short deadline) does not cancel the change: it
/// settles by itself, nothing is lost, and the next change is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_course_protocol_call_does_not_wedge_the_cluster() {
    use tritontube_core::proto::admin::AddNodeRequest;
    use tritontube_core::proto::admin::video_content_admin_service_client::VideoContentAdminServiceClient;
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let (http, admin_port) = (free_port(), free_port());
    let vn = VNODES.to_string();
    let web = start_web(
        root.path(),
        http,
        admin_port,
        &addrs[..3],
        &["--replicas", "2", "--vnodes", vn.as_str()],
    )
    .await;
    let keys = fill(&addrs[..3], 400, 256 * 1024, VNODES).await;
    record_videos(&sqlite_meta(root.path()), &keys).await;
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let admin = AdminClient::connect(&admin_addr, Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();

    let mut course = VideoContentAdminServiceClient::connect(format!("http://{admin_addr}"))
        .await
        .unwrap();
    let mut req = tonic::Request::new(AddNodeRequest {
        node_address: addrs[3].clone(),
    });
    req.set_timeout(Duration::from_millis(50));
    let r = course.add_node(req).await;
    assert!(r.is_err(), "the change cannot finish in 50 ms: {r:?}");

    let deadline = Instant::now() + Duration::from_secs(60);
    // (Right after the deadline the change may not have written anything
    // yet: wait for it to have gone through and finished.)
    loop {
        let s = admin.status().await.unwrap();
        if !s.change_in_progress && s.nodes.len() == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned add never went through: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(verify_clean(&admin).await as usize, keys.len());
    // The admin lock was released: the next change goes ahead at once.
    let n = admin.remove(&addrs[3], |_| {}).await;
    assert!(n.is_ok(), "{n:?}");
    assert_eq!(verify_clean(&admin).await as usize, keys.len());
    drop(web);
}

/// Two web servers on one metadata store: uploads keep going through B
/// while A adds and removes a node five times, and readers read through
/// both. A change copies only once B writes to the new owners too, and
/// deletes only once B reads from them: no read fails, and at the end no
/// file is short of a copy.
async fn changes_wait_for_every_web_server(metadata: (&str, &str), root: &std::path::Path) {
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root, free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let vn = VNODES.to_string();
    let args = ["--replicas", "2", "--vnodes", vn.as_str()];
    let (admin_a, admin_b) = (free_port(), free_port());
    let a = start_web_with(root, free_port(), admin_a, &addrs[..3], &args, metadata).await;
    let b = start_web_with(root, free_port(), admin_b, &addrs[..3], &args, metadata).await;
    let admin = AdminClient::connect(&format!("127.0.0.1:{admin_a}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    let keys = fill(&addrs[..3], 200, 64 * 1024, VNODES).await;
    let meta = tritontube_core::metadata::open(metadata.0, metadata.1)
        .await
        .unwrap();
    record_videos(&*meta, &keys).await;
    let c = clip(root, "first.mp4", 2, "320x240", false);
    assert_eq!(upload(&b.addr, &c).await.status(), 303);
    let v = wait_ready(&b.addr, "first").await;
    let mut urls = BTreeMap::new();
    for f in files_of(&b.addr, "first", &v).await {
        for web in [&a.addr, &b.addr] {
            let url = format!("http://{web}/content/first/{f}");
            let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
            urls.insert(url, Sha256::digest(&body).to_vec());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (stop, reads, failures) = (stop.clone(), reads.clone(), failures.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(Ordering::SeqCst) {
                for (url, sha) in &urls {
                    let ok = match http.get(url).send().await {
                        Ok(r) if r.status() == 200 => r
                            .bytes()
                            .await
                            .is_ok_and(|b| Sha256::digest(&b).to_vec() == *sha),
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
    };
    let writer = {
        let (stop, web, root) = (stop.clone(), b.addr.clone(), root.to_path_buf());
        tokio::spawn(async move {
            let c = clip(&root, "w.mp4", 1, "160x120", false);
            let mut ids = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let id = format!("w{}", ids.len());
                let data = std::fs::read(&c).unwrap();
                let form = reqwest::multipart::Form::new().text("id", id.clone()).part(
                    "file",
                    reqwest::multipart::Part::bytes(data).file_name("w.mp4"),
                );
                let r = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap()
                    .post(format!("http://{web}/upload"))
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 303, "upload {id}");
                wait_ready(&web, &id).await;
                ids.push(id);
            }
            ids
        })
    };
    for cycle in 0..5 {
        admin.add(&addrs[3], 0.0, |_| {}).await.unwrap();
        admin.remove(&addrs[3], |_| {}).await.unwrap();
        eprintln!("cycle {cycle} done");
    }
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    let written = writer.await.unwrap();
    let (reads, failures) = (
        reads.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
    );
    eprintln!(
        "{} uploads through B, {reads} reads, {failures} failed",
        written.len()
    );
    assert!(written.len() >= 3, "the writer really ran: {written:?}");
    assert!(reads > 0);
    assert_eq!(failures, 0, "no failed read");
    // Every copy where it belongs: nothing missing, nothing left behind.
    verify_clean(&admin).await;
    for id in &written {
        let v = wait_ready(&a.addr, id).await;
        for f in files_of(&a.addr, id, &v).await {
            let r = reqwest::get(format!("http://{}/content/{id}/{f}", a.addr))
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{id}/{f}");
        }
    }
    drop((a, b, nodes));
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_wait_for_every_web_server_on_sqlite() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("metadata.db").display().to_string();
    changes_wait_for_every_web_server(("sqlite", &db), root.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_wait_for_every_web_server_on_etcd() {
    let etcd = tritontube_core::testing::EtcdCluster::start().await;
    let root = tempfile::tempdir().unwrap();
    changes_wait_for_every_web_server(("etcd", &etcd.endpoints()), root.path()).await;
}
