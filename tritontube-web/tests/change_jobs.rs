//! Ring changes as jobs: an id for every change, explicit cancellation that
//! rolls back (through the server running it or through another one), and
//! a change interrupted by a crash resumed under the same id.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tritontube_core::admin::AdminClient;
use tritontube_core::proto::cluster::{ChangeJob, StatusResponse};

const VNODES: u32 = 64;

async fn admin(port: u16) -> AdminClient {
    AdminClient::connect(&format!("127.0.0.1:{port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap()
}

/// Waits until the status shows a ring change under way, and returns it.
async fn running_change(admin: &AdminClient) -> ChangeJob {
    let t = Instant::now();
    loop {
        let s = admin.status().await.unwrap();
        if let Some(c) = s.change.clone().filter(|c| c.outcome.is_empty())
            && s.change_in_progress
        {
            return c;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no change started: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no change is under way, and returns the status then.
async fn settled(admin: &AdminClient) -> StatusResponse {
    let t = Instant::now();
    loop {
        let s = admin.status().await.unwrap();
        if !s.change_in_progress && s.change.as_ref().is_some_and(|c| !c.outcome.is_empty()) {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never settled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn verify_clean(admin: &AdminClient) -> u64 {
    let v = admin.verify().await.unwrap();
    assert!(v.problems.is_empty(), "verify: {:?}", v.problems);
    v.files_checked
}

/// Files the node at `addr` holds, by its own count.
async fn files_on(addr: &str) -> u64 {
    let client = tritontube_core::node::NodeClient::new(addr.parse().unwrap(), Default::default());
    client.health().await.unwrap().file_count
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_cancelled_mid_copy_rolls_back_and_the_next_one_runs() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let (http, admin_port) = (free_port(), free_port());
    let vn = VNODES.to_string();
    let args = ["--replicas", "2", "--vnodes", vn.as_str()];
    let _web = start_web(root.path(), http, admin_port, &addrs[..3], &args).await;
    let keys = fill(&addrs[..3], 600, 256 * 1024, VNODES).await;
    record_videos(&sqlite_meta(root.path()), &keys).await;
    let admin = admin(admin_port).await;
    let before = admin.status().await.unwrap();

    // Add the fourth node; cancel once its copy is under way.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (a2, node) = (admin.clone(), addrs[3].clone());
    let change = tokio::spawn(async move {
        a2.add(&node, 0.0, move |p| {
            let _ = tx.send(p.clone());
        })
        .await
    });
    let id = loop {
        let p = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("progress")
            .expect("the change ended before its copy got under way");
        if p.phase().label() == "copying" && p.files_done > 0 {
            assert!(p.files_done < p.files_total, "cancelled mid-copy: {p:?}");
            assert!(p.job_id.starts_with('c'), "progress names its job: {p:?}");
            break p.job_id;
        }
    };
    let job = admin.cancel(&id).await.unwrap();
    assert!(
        job.cancel_requested && job.what.starts_with("add "),
        "{job:?}"
    );
    let e = change
        .await
        .unwrap()
        .expect_err("the cancelled change fails");
    assert!(
        matches!(e, tritontube_core::Error::Cancelled { .. }),
        "says it was cancelled: {e}"
    );

    // Rolled back: the ring as it was, nothing left on the new node.
    let s = settled(&admin).await;
    let c = s.change.clone().unwrap();
    assert_eq!(c.job_id, id);
    assert_eq!(c.outcome, "cancelled, rolled back");
    assert_eq!(s.epoch, before.epoch, "the ring did not change");
    assert_eq!(s.nodes.len(), 3);
    assert_eq!(files_on(&addrs[3]).await, 0, "the copies made were deleted");
    assert_eq!(verify_clean(&admin).await as usize, keys.len());

    // Cancelling it again, or a change that never was, says why.
    let again = admin.cancel(&id).await.unwrap_err().to_string();
    assert!(again.contains("already ended: cancelled"), "{again}");
    let unknown = admin.cancel("c1-00000000").await.unwrap_err().to_string();
    assert!(unknown.contains("not found"), "{unknown}");
    let watched = admin.watch(Some(&id), |_| {}).await.unwrap();
    assert_eq!(watched.phase().label(), "done");
    assert!(watched.message.contains("cancelled"), "{watched:?}");

    // The next change runs to its end, under a new id.
    let done = admin.add(&addrs[3], 0.0, |_| {}).await.unwrap();
    assert!(done.migrated > 0);
    let s = settled(&admin).await;
    let c = s.change.unwrap();
    assert_ne!(c.job_id, id);
    assert!(c.outcome.starts_with("committed"), "{c:?}");
    assert_eq!(s.nodes.len(), 4);
    assert_eq!(verify_clean(&admin).await as usize, keys.len());
    let late = admin.cancel(&c.job_id).await.unwrap_err().to_string();
    assert!(late.contains("already ended: committed"), "{late}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_is_cancelled_through_another_web_server_and_resumed_after_a_crash() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let vn = VNODES.to_string();
    let args = ["--replicas", "2", "--vnodes", vn.as_str()];
    let (http_a, port_a) = (free_port(), free_port());
    let (http_b, port_b) = (free_port(), free_port());
    let mut a = start_web(root.path(), http_a, port_a, &addrs[..3], &args).await;
    let _b = start_web(root.path(), http_b, port_b, &addrs[..3], &args).await;
    let keys = fill(&addrs[..3], 200, 128 * 1024, VNODES).await;
    let meta = sqlite_meta(root.path());
    record_videos(&meta, &keys).await;
    let (admin_a, admin_b) = (admin(port_a).await, admin(port_b).await);
    let before = admin_b.status().await.unwrap();

    // A lagging web server holds A's change before its copy; B cancels it.
    lagging_web_server(&meta, true).await;
    let (a2, node) = (admin_a.clone(), addrs[3].clone());
    let change = tokio::spawn(async move { a2.add(&node, 0.0, |_| {}).await });
    let job = running_change(&admin_b).await;
    let t = Instant::now();
    admin_b.cancel(&job.job_id).await.unwrap();
    // (Its clean-up waits for the lagging server too: let that one go.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    lagging_web_server(&meta, false).await;
    let e = change.await.unwrap().expect_err("cancelled through B");
    eprintln!(
        "cancelled through the other server in {:?}: {e}",
        t.elapsed()
    );
    assert!(matches!(e, tritontube_core::Error::Cancelled { .. }), "{e}");
    let s = settled(&admin_b).await;
    assert_eq!(s.change.unwrap().outcome, "cancelled, rolled back");
    assert_eq!((s.epoch, s.nodes.len()), (before.epoch, 3));

    // A's next change, held the same way, is interrupted by kill -9 of A.
    lagging_web_server(&meta, true).await;
    let (a2, node) = (admin_a.clone(), addrs[3].clone());
    let change = tokio::spawn(async move { a2.add(&node, 0.0, |_| {}).await });
    let job = running_change(&admin_b).await;
    a.kill9();
    assert!(
        change.await.unwrap().is_err(),
        "the caller learns it did not end"
    );
    // The change stays recorded as under way; once A's lock lapses, B
    // (or A, restarted) resumes the same job and commits it.
    let s = admin_b.status().await.unwrap();
    assert!(s.change_in_progress);
    assert_eq!(s.change.unwrap().job_id, job.job_id);
    lagging_web_server(&meta, false).await;
    let _a = start_web(root.path(), http_a, port_a, &addrs[..3], &args).await;
    let s = settled(&admin_b).await;
    let c = s.change.unwrap();
    assert_eq!(c.job_id, job.job_id, "the same job, resumed");
    assert!(c.outcome.starts_with("committed"), "{c:?}");
    assert_eq!(s.nodes.len(), 4);
    assert_eq!(verify_clean(&admin_b).await as usize, keys.len());
}
