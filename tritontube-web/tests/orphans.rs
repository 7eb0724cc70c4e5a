//! Orphans (stored files, and file records, of no video) end to end, with
//! real storage-node processes, a real web server, its SQLite metadata and
//! the admin tool: verify reports exactly the orphans and nothing else;
//! repair removes them, copies and records, and leaves every live file
//! byte for byte as it was; an orphan whose video is recorded during the
//! grace period is kept; a file whose video record cannot be read is never
//! deleted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tritontube_core::admin::AdminClient;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::metadata::{
    FileRecord, MetadataStore, SqliteMetadataStore, Video, VideoState,
};
use tritontube_core::store::ContentStoreExt;
use tritontube_core::{ContentKey, NodeAddr};

const VNODES: u32 = 64;

/// Three storage nodes and a web server (SQLite metadata, two replicas),
/// with the same metadata store opened beside it.
struct Cluster {
    _nodes: Vec<Proc>,
    _web: Proc,
    ports: Vec<u16>,
    admin_addr: String,
    admin: AdminClient,
    meta: SqliteMetadataStore,
    store: NetworkContentStore,
}

async fn cluster(root: &Path) -> Cluster {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for p in &ports {
        nodes.push(start_node(root, *p).await);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let (http, admin_port) = (free_port(), free_port());
    let vn = VNODES.to_string();
    let web = start_web(root, http, admin_port, &addrs, &["--vnodes", &vn]).await;
    let admin_addr = format!("127.0.0.1:{admin_port}");
    let admin = AdminClient::connect(&admin_addr, Some(ADMIN_TOKEN.into()))
        .await
        .unwrap();
    let members: Vec<NodeAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    Cluster {
        _nodes: nodes,
        _web: web,
        ports,
        admin_addr,
        admin,
        meta: sqlite_meta(root),
        // Placed exactly as the web server places files.
        store: NetworkContentStore::with_nodes(&members, 2, VNODES).unwrap(),
    }
}

impl Cluster {
    /// Stores `files` of `video` on their owners; with `record`, records
    /// their checksums too (as an upload does). Returns their keys.
    async fn put(&self, video: &str, files: &[&str], record: bool) -> Vec<ContentKey> {
        let mut keys = Vec::new();
        let mut records = Vec::new();
        for f in files {
            let key = ContentKey::from_parts(video, f).unwrap();
            let body: Vec<u8> = format!("{key} ").repeat(300).into_bytes();
            let meta = self.store.put_bytes(&key, body.into()).await.unwrap();
            records.push(FileRecord {
                key: key.clone(),
                size: meta.size,
                sha256: meta.sha256,
            });
            keys.push(key);
        }
        if record {
            self.meta.record_files(&records).await.unwrap();
        }
        keys
    }

    /// Records a ready video `id` of `generation`.
    async fn video(&self, id: &str, generation: u64) {
        let mut v = Video::new(id.parse().unwrap(), id);
        v.state = VideoState::Ready;
        v.generation = generation;
        self.meta.create_video(&v).await.unwrap();
    }

    /// Every copy of `key` on the nodes' disks, with its bytes.
    fn copies(&self, root: &Path, key: &ContentKey) -> Vec<(PathBuf, Vec<u8>)> {
        self.ports
            .iter()
            .map(|p| {
                root.join(format!("node-{p}"))
                    .join(key.video().as_str())
                    .join(key.file().as_str())
            })
            .filter(|p| p.exists())
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// What verify reports: (kind, key), sorted.
    async fn problems(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .admin
            .verify()
            .await
            .unwrap()
            .problems
            .into_iter()
            .map(|p| (p.kind().label().to_string(), p.key))
            .collect();
        v.sort();
        v
    }

    /// Runs `tritontube-admin` with `args` against this cluster: (success,
    /// stdout).
    fn admin_tool(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(admin_bin())
            .args(args)
            .arg(&self.admin_addr)
            .env("TRITONTUBE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

/// `tritontube-admin`, built beside `tritontube-web` (`cargo test
/// --workspace` builds both; alone, run `cargo build -p tritontube-admin`).
fn admin_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_tritontube-web")).with_file_name("tritontube-admin");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build -p tritontube-admin` first",
        p.display()
    );
    p
}

fn kinds(kind: &str, keys: &[ContentKey]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| (kind.to_string(), k.to_string()))
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

/// Makes the stored record of video `id` undecodable, as a damaged
/// database would hold it.
fn corrupt_video_record(root: &Path, id: &str) {
    let db = rusqlite::Connection::open(root.join("metadata.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let n = db
        .execute(
            "UPDATE videos SET record = '{\"not\": \"a video' WHERE id = ?1",
            [id],
        )
        .unwrap();
    assert_eq!(n, 1, "video {id} is recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reports_exactly_the_orphans_and_repair_removes_only_them() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let c = cluster(root).await;

    // (a) A live video: its record, its files, their records.
    c.video("live", 1).await;
    let mut live = c
        .put(
            "live",
            &[
                "manifest.mpd",
                "init-0.m4s",
                "chunk-0-00001.m4s",
                "poster.jpg",
            ],
            true,
        )
        .await;
    // (b) Files of an id no video has.
    let nobody = c
        .put("nobody", &["manifest.mpd", "chunk-0-00001.m4s"], false)
        .await;
    // (c) An earlier generation of a video uploaded again: its record is
    // generation 2, whose own files are live.
    c.video("again", 2).await;
    let old = c
        .put("again", &["manifest.mpd", "chunk-0-00001.m4s"], true)
        .await;
    live.extend(
        c.put("again", &["g2-manifest.mpd", "g2-chunk-0-00001.m4s"], true)
            .await,
    );
    // (d) Files with records whose video is gone.
    c.video("gone", 1).await;
    let gone = c.put("gone", &["manifest.mpd", "poster.jpg"], true).await;
    c.meta.delete_video(&"gone".parse().unwrap()).await.unwrap();

    let orphans: Vec<ContentKey> = [&nobody, &old, &gone]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let v = c.admin.verify().await.unwrap();
    assert_eq!(v.files_checked as usize, live.len() + orphans.len());
    assert_eq!(
        c.problems().await,
        sorted(kinds("orphan", &orphans)),
        "exactly the orphans, each once, and nothing else"
    );
    let detail = |key: &ContentKey| {
        v.problems
            .iter()
            .find(|p| p.key == key.as_str())
            .map(|p| p.detail.clone())
            .unwrap()
    };
    assert!(
        detail(&nobody[0]).contains("no video nobody"),
        "{}",
        detail(&nobody[0])
    );
    assert!(
        detail(&old[0]).contains("generation 2"),
        "{}",
        detail(&old[0])
    );

    // The admin tool: counts by kind, in text and JSON, and a failing exit.
    let (ok, text) = c.admin_tool(&["verify"]);
    assert!(!ok, "verify fails while orphans remain: {text}");
    assert!(text.contains("Problems: 6 (6 orphan)"), "{text}");
    let (ok, json) = c.admin_tool(&["--json", "verify"]);
    assert!(!ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["counts"], serde_json::json!({ "orphan": 6 }), "{json}");
    assert_eq!(json["problems"].as_array().unwrap().len(), 6);

    // Repair, with no grace period, through the admin tool.
    let before: BTreeMap<ContentKey, Vec<(PathBuf, Vec<u8>)>> = live
        .iter()
        .map(|k| (k.clone(), c.copies(root, k)))
        .collect();
    assert!(before.values().all(|copies| copies.len() == 2));
    let (ok, out) = c.admin_tool(&["--json", "repair", "--orphan-grace-secs", "0"]);
    assert!(ok, "{out}");
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        out,
        serde_json::json!({ "copies_made": 0, "orphans_removed": 6, "orphans_kept": 0, "orphans_skipped": 0 })
    );

    for k in &orphans {
        assert!(c.copies(root, k).is_empty(), "{k} is gone from every node");
        assert_eq!(
            c.meta.file_record(k).await.unwrap(),
            None,
            "{k}'s record is gone"
        );
    }
    for k in &live {
        assert_eq!(c.copies(root, k), before[k], "{k} is untouched");
        assert!(
            c.meta.file_record(k).await.unwrap().is_some(),
            "{k} keeps its record"
        );
    }
    let v = c.admin.verify().await.unwrap();
    assert!(
        v.problems.is_empty(),
        "clean after repair: {:?}",
        v.problems
    );
    assert_eq!(v.files_checked as usize, live.len());
    let (ok, text) = c.admin_tool(&["verify"]);
    assert!(ok, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_rechecked_after_the_grace_and_unreadable_records_delete_nothing() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let c = cluster(root).await;

    // Orphans when found: "late" (its video is recorded during the grace
    // period), "flaky" (generation 1 of a generation-2 video, whose record
    // becomes unreadable during the grace period), "junk" (no video), and
    // "ghost" (only a file record of no video is left).
    let late = c.put("late", &["manifest.mpd", "poster.jpg"], false).await;
    c.video("flaky", 2).await;
    let flaky = c.put("flaky", &["manifest.mpd"], true).await;
    let junk = c
        .put(
            "junk",
            &["manifest.mpd", "chunk-0-00001.m4s", "poster.jpg"],
            false,
        )
        .await;
    let ghost = ContentKey::from_parts("ghost", "manifest.mpd").unwrap();
    c.meta
        .record_files(&[FileRecord {
            key: ghost.clone(),
            size: 9,
            sha256: tritontube_core::store::Sha256Digest([7; 32]),
        }])
        .await
        .unwrap();
    // And a video whose record cannot be read at all: not judged.
    c.video("broken", 1).await;
    let broken = c.put("broken", &["manifest.mpd", "poster.jpg"], true).await;
    corrupt_video_record(root, "broken");

    let mut want = kinds("orphan", &late);
    want.extend(kinds("orphan", &flaky));
    want.extend(kinds("orphan", &junk));
    want.extend(kinds("orphan", std::slice::from_ref(&ghost)));
    want.extend(kinds("unchecked", &broken));
    assert_eq!(c.problems().await, sorted(want));

    let kept: Vec<ContentKey> = [&late, &flaky, &broken]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let before: BTreeMap<ContentKey, Vec<(PathBuf, Vec<u8>)>> = kept
        .iter()
        .map(|k| (k.clone(), c.copies(root, k)))
        .collect();

    let grace = Duration::from_secs(4);
    let in_grace = Arc::new(tokio::sync::Notify::new());
    let mut phases = BTreeSet::new();
    let started = Instant::now();
    let repair = c.admin.repair(Some(grace), |p| {
        if p.phase().label() == "grace" {
            in_grace.notify_one();
        }
        phases.insert(p.phase().label());
    });
    let meanwhile = async {
        in_grace.notified().await;
        c.video("late", 1).await;
        corrupt_video_record(root, "flaky");
    };
    let (out, ()) = tokio::join!(repair, meanwhile);
    let out = out.unwrap();
    assert!(
        started.elapsed() >= grace,
        "the grace period was waited out"
    );
    assert!(phases.contains("orphans"), "{phases:?}");
    assert_eq!(out.orphans_kept, late.len() as u64, "{out:?}");
    assert_eq!(
        out.orphans_removed,
        junk.len() as u64 + 1,
        "junk's files and ghost's record: {out:?}"
    );
    assert_eq!(
        out.orphans_skipped,
        (flaky.len() + broken.len()) as u64,
        "unreadable records delete nothing: {out:?}"
    );

    for k in &junk {
        assert!(c.copies(root, k).is_empty(), "{k} removed");
    }
    assert_eq!(c.meta.file_record(&ghost).await.unwrap(), None);
    for k in &kept {
        assert_eq!(c.copies(root, k), before[k], "{k} kept as it was");
    }
    for k in flaky.iter().chain(&broken) {
        assert!(
            c.meta.file_record(k).await.unwrap().is_some(),
            "{k} keeps its record"
        );
    }
    // "late" is live now; the unreadable ones stay reported, unjudged.
    let mut want = kinds("unchecked", &flaky);
    want.extend(kinds("unchecked", &broken));
    assert_eq!(c.problems().await, sorted(want));
}
