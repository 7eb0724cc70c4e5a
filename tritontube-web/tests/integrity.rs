//! The recorded checksum as the truth about bytes, end to end with real
//! processes and real ffmpeg: one copy of many files rotted on disk (same
//! size, same mtime) is never served, through the cache or streamed, and is
//! restored by repair from the good copy; a file whose every copy rotted is
//! answered 502, reported lost, and never "fixed" from a bad copy; a node
//! reached under another spelling of a member's address, or started on a
//! copy of a member's directory, is refused as a new member.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use tritontube_core::admin::AdminClient;

/// Where a video's file sits on each node's disk.
fn copies_on_disk(root: &Path, ports: &[u16], id: &str, file: &str) -> Vec<PathBuf> {
    ports
        .iter()
        .map(|p| root.join(format!("node-{p}")).join(id).join(file))
        .filter(|p| p.exists())
        .collect()
}

/// Flips 16 bytes in the middle, keeping size and mtime.
fn rot(path: &Path) {
    let before = std::fs::metadata(path).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let (mid, len) = (bytes.len() / 2, bytes.len());
    for b in &mut bytes[mid..(mid + 16).min(len)] {
        *b = !*b;
    }
    std::fs::write(path, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
}

async fn get(http: &str, id: &str, file: &str, range: Option<(u64, u64)>) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new().get(format!("http://{http}/content/{id}/{file}"));
    if let Some((a, b)) = range {
        req = req.header("Range", format!("bytes={a}-{b}"));
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (
        status,
        r.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
    )
}

async fn problems(admin: &AdminClient) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = admin
        .verify()
        .await
        .unwrap()
        .problems
        .into_iter()
        .map(|p| (p.kind().label().to_string(), p.key, p.node))
        .collect();
    v.sort();
    v
}

/// `n` storage-node processes under `root`: the processes (stopped when
/// dropped), their ports and their addresses.
async fn start_nodes(root: &Path, n: usize) -> (Vec<Proc>, Vec<u16>, Vec<String>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for p in &ports {
        nodes.push(start_node(root, *p).await);
    }
    let addrs = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    (nodes, ports, addrs)
}

/// A client of the admin services on `port`, with the tests' token.
async fn admin_at(port: u16) -> AdminClient {
    AdminClient::connect(&format!("127.0.0.1:{port}"), Some(ADMIN_TOKEN.into()))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotten_copies_are_never_served_repaired_from_the_record_or_reported_lost() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (nodes, ports, addrs) = start_nodes(root, 3).await;
    // Two web servers on one cluster: one with the memory cache, one
    // streaming every read from the nodes.
    let (http_a, admin_a, http_b, admin_b) = (free_port(), free_port(), free_port(), free_port());
    let _web_a = start_web(root, http_a, admin_a, &addrs, &["--vnodes", "64"]).await;
    let _web_b = start_web(
        root,
        http_b,
        admin_b,
        &addrs,
        &["--vnodes", "64", "--cache-mb", "0"],
    )
    .await;
    let (a, b) = (format!("127.0.0.1:{http_a}"), format!("127.0.0.1:{http_b}"));
    let src = clip(root, "rot.mp4", 8, "640x360", true);
    assert_eq!(upload(&a, &src).await.status().as_u16(), 303);
    let v = wait_ready(&a, "rot").await;
    let files = files_of(&a, "rot", &v).await;
    let segments: Vec<&String> = files.iter().filter(|f| f.starts_with("chunk-")).collect();
    assert!(segments.len() >= 4, "{files:?}");
    let mut good = std::collections::BTreeMap::new();
    for f in &files {
        let (s, body) = get(&b, "rot", f, None).await;
        assert_eq!(s, 200, "{f}");
        good.insert(f.clone(), body);
    }

    // One copy of every segment but the last rots; both copies of the last.
    let (lost, one_bad) = segments.split_last().unwrap();
    for f in one_bad {
        let copies = copies_on_disk(root, &ports, "rot", f);
        assert_eq!(copies.len(), 2, "{f} has two copies");
        rot(&copies[0]);
    }
    for c in copies_on_disk(root, &ports, "rot", lost) {
        rot(&c);
    }

    // Every read, whole or ranged, cached or streamed, is the good bytes.
    for http in [&a, &b] {
        for f in one_bad {
            let want = &good[*f];
            let (s, body) = get(http, "rot", f, None).await;
            assert_eq!(
                (s, Sha256::digest(&body)),
                (200, Sha256::digest(want)),
                "{f} via {http}"
            );
            let (lo, hi) = (want.len() as u64 / 3, want.len() as u64 - 2);
            let (s, body) = get(http, "rot", f, Some((lo, hi))).await;
            assert_eq!(s, 206);
            assert_eq!(
                body,
                want[lo as usize..=hi as usize].to_vec(),
                "{f} range via {http}"
            );
        }
        // No good copy: a server error, never a corrupt 200 or a 400.
        let (s, _) = get(http, "rot", lost, None).await;
        assert_eq!(s, 502, "{lost} via {http}");
    }
    // Reported: bad copies met by reads, and the nodes' quarantines.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(format!("http://{a}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let sum = |name: &str| -> f64 {
            m.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        if sum("tritontube_bad_copies_total") > 0.0
            && sum("tritontube_node_bad_copies_total") > 0.0
            && sum("tritontube_node_quarantined_files") > 0.0
        {
            break;
        }
        assert!(Instant::now() < deadline, "not reported in /metrics: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Repair restores every file that has a good copy, from that copy; the
    // lost one stays reported as lost (and nothing else is wrong).
    let admin = admin_at(admin_a).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let want_left = vec![("lost".to_string(), format!("rot/{lost}"))];
    loop {
        let _ = admin.repair(None, |_| {}).await;
        let left: Vec<(String, String)> = problems(&admin)
            .await
            .into_iter()
            .map(|(k, key, _)| (k, key))
            .collect();
        if left == want_left {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still wrong after repair: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for f in one_bad {
        let copies = copies_on_disk(root, &ports, "rot", f);
        assert_eq!(copies.len(), 2, "{f} is back to two copies");
        for c in copies {
            assert_eq!(
                std::fs::read(&c).unwrap(),
                good[*f],
                "{} restored",
                c.display()
            );
        }
    }
    let (s, _) = get(&b, "rot", lost, None).await;
    assert_eq!(s, 502);
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_under_another_name_or_a_copied_directory_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (mut nodes, ports, addrs) = start_nodes(root, 2).await;
    let (http, admin_port) = (free_port(), free_port());
    let _web = start_web(root, http, admin_port, &addrs, &["--vnodes", "64"]).await;
    let h = format!("127.0.0.1:{http}");
    let keys = fill(&addrs, 40, 3000, 64).await;
    record_videos(&sqlite_meta(root), &keys).await;
    let admin = admin_at(admin_port).await;
    let clean = |p: Vec<(String, String, String)>| p.is_empty();
    assert!(clean(problems(&admin).await));

    // The same node, spelled three other ways.
    for alias in [
        format!("localhost:{}", ports[0]),
        format!("LOCALHOST:{}", ports[0]),
        format!("127.0.0.1:{}", ports[0]),
    ] {
        let e = admin.add(&alias, 0.0, |_| {}).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&addrs[0]) || msg.contains("already"),
            "refusal names the member: {msg}"
        );
    }
    // A node started on a copy of a member's directory.
    let copy_port = free_port();
    let copy_dir = root.join(format!("node-{copy_port}"));
    std::fs::create_dir_all(copy_dir.join(".tritontube")).unwrap();
    std::fs::copy(
        root.join(format!("node-{}/.tritontube/node-id", ports[1])),
        copy_dir.join(".tritontube/node-id"),
    )
    .unwrap();
    nodes.push(start_node(root, copy_port).await);
    let e = admin
        .add(&format!("127.0.0.1:{copy_port}"), 0.0, |_| {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&addrs[1]), "{e}");

    // Nothing changed, nothing lost: every file still has both copies.
    let members = admin.list().await.unwrap();
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(clean(problems(&admin).await));
    for k in &keys {
        let holders = ports
            .iter()
            .filter(|p| root.join(format!("node-{p}")).join(k.as_str()).exists())
            .count();
        assert_eq!(holders, 2, "{k}");
        let (s, _) = get(&h, k.video().as_str(), k.file().as_str(), None).await;
        assert_eq!(s, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_moved_to_a_new_address_keeps_its_files_and_nothing_is_copied() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (mut nodes, ports, addrs) = start_nodes(root, 2).await;
    let (http, admin_port) = (free_port(), free_port());
    let _web = start_web(root, http, admin_port, &addrs, &["--vnodes", "64"]).await;
    let h = format!("127.0.0.1:{http}");
    let keys = fill(&addrs, 30, 2000, 64).await;
    record_videos(&sqlite_meta(root), &keys).await;
    let admin = admin_at(admin_port).await;
    // The web server learns the members' ids in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin
        .status()
        .await
        .unwrap()
        .nodes
        .iter()
        .any(|n| n.node_id.is_empty())
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The second node's process moves to another port with its directory.
    nodes[1].kill9();
    let new_port = free_port();
    std::fs::rename(
        root.join(format!("node-{}", ports[1])),
        root.join(format!("node-{new_port}")),
    )
    .unwrap();
    let files_before = std::fs::read_dir(root.join(format!("node-{new_port}")))
        .unwrap()
        .count();
    nodes.push(start_node(root, new_port).await);
    let new_addr = format!("127.0.0.1:{new_port}");

    // Not a member, or not that member: refused, nothing changed.
    assert!(admin.move_node("127.0.0.1:1", &new_addr).await.is_err());
    let e = admin.move_node(&addrs[1], &addrs[0]).await.unwrap_err();
    assert!(
        e.to_string().contains("another node") || e.to_string().contains(&addrs[0]),
        "{e}"
    );

    admin.move_node(&addrs[1], &new_addr).await.unwrap();
    // Its ring name is unchanged, so placement and the course's list are too.
    assert_eq!(
        admin
            .list()
            .await
            .unwrap()
            .iter()
            .collect::<std::collections::BTreeSet<_>>(),
        addrs.iter().collect()
    );
    let status = admin.status().await.unwrap();
    let moved = status.nodes.iter().find(|n| n.address == addrs[1]).unwrap();
    assert_eq!(moved.reached_at, new_addr);
    // Every file is still exactly where it was, readable, and verify is
    // clean: nothing was copied.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if problems(&admin).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", problems(&admin).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for k in &keys {
        let (s, _) = get(&h, k.video().as_str(), k.file().as_str(), None).await;
        assert_eq!(s, 200, "{k}");
    }
    assert_eq!(
        std::fs::read_dir(root.join(format!("node-{new_port}")))
            .unwrap()
            .count(),
        files_before
    );
}

/// Files stored before checksums were recorded (an older version's
/// cluster) get their records once, at start-up, where all their copies
/// agree; a file whose copies disagree is left unrecorded and reported as a
/// conflict; files of no known video are not recorded (and are orphans).
#[tokio::test(flavor = "multi_thread")]
async fn older_files_get_their_checksums_recorded_once_where_copies_agree() {
    use tritontube_core::metadata::{
        ClusterState, MetadataStore, NodeEntry, SqliteMetadataStore, Video, VideoState,
    };
    use tritontube_core::node::{NodeClient, NodeClientConfig};
    use tritontube_core::store::ContentStoreExt;
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let (_nodes, _ports, addrs) = start_nodes(root, 2).await;
    // 60 files as an older version stored them: "bulk0" (50) and "bulk1"
    // (10), two copies each, no records.
    let keys = fill(&addrs, 60, 1500, 64).await;
    let disputed = keys[7].clone();
    let other: tritontube_core::NodeAddr = addrs[1].parse().unwrap();
    NodeClient::new(other, NodeClientConfig::default())
        .put_bytes(&disputed, bytes::Bytes::from_static(b"other bytes"))
        .await
        .unwrap();
    let db = root.join("metadata.db");
    {
        let meta = SqliteMetadataStore::open(&db).unwrap();
        let mut v = Video::new("bulk0".parse().unwrap(), "older video");
        v.state = VideoState::Ready;
        meta.create_video(&v).await.unwrap();
        let state = ClusterState {
            nodes: addrs
                .iter()
                .map(|a| NodeEntry::new(a.parse().unwrap(), 1.0))
                .collect(),
            replicas: 2,
            vnodes: 64,
            epoch: 1,
            pending: None,
            previous: None,
            records_complete: false,
            change: None,
        };
        meta.put_cluster_state(None, &state).await.unwrap();
    }
    let (http, admin_port) = (free_port(), free_port());
    let _web = start_web(root, http, admin_port, &addrs, &["--vnodes", "64"]).await;
    let meta = SqliteMetadataStore::open(&db).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !meta
        .cluster_state()
        .await
        .unwrap()
        .unwrap()
        .value
        .records_complete
    {
        assert!(
            Instant::now() < deadline,
            "the one-time pass never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recorded = meta
        .video_file_records(&"bulk0".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 49, "every bulk0 file but the disputed one");
    assert!(recorded.iter().all(|r| r.key != disputed && r.size == 1500));
    assert!(
        meta.video_file_records(&"bulk1".parse().unwrap())
            .await
            .unwrap()
            .is_empty(),
        "no video, no record"
    );
    let admin = admin_at(admin_port).await;
    let found = problems(&admin).await;
    let (orphans, others): (Vec<_>, Vec<_>) = found.iter().partition(|p| p.0 == "orphan");
    assert_eq!(
        others,
        vec![&(
            "conflict".to_string(),
            disputed.to_string(),
            others[0].2.clone()
        )],
        "of bulk0, only the disputed file is reported"
    );
    let orphans: Vec<&str> = orphans.iter().map(|p| p.1.as_str()).collect();
    let bulk1: Vec<String> = keys[50..].iter().map(|k| k.to_string()).collect();
    assert_eq!(orphans, bulk1, "bulk1's files, of no video, are orphans");
}
