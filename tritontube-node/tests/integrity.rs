//! What a storage node promises about bytes, tried against the real binary
//! and real files on disk: bit rot is never served and is quarantined (by a
//! read or by the scrubber), concurrent puts of one key leave the body and
//! its recorded checksum agreeing, a crash leaves no temp file and an index
//! that agrees with the directory, and a directory without an index (the
//! course project's layout, or an index deleted) is indexed in the
//! background while the node serves.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tritontube_core::node::{NodeClient, NodeClientConfig};
use tritontube_core::store::{ContentStore, ContentStoreExt, GetOptions};
use tritontube_core::{ContentKey, Error, NodeAddr};

struct Node {
    child: Child,
    addr: NodeAddr,
    client: NodeClient,
}

impl Node {
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    tritontube_core::testing::free_port()
}

async fn start_node_with(dir: &Path, extra: &[&str]) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: NodeAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let node = Node {
        child,
        client: NodeClient::new(addr.clone(), NodeClientConfig::default()),
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if node.client.health().await.is_ok() {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node on {} did not start", node.addr);
}

async fn start_node(dir: &Path) -> Node {
    start_node_with(dir, &["--scrub-mb-per-s", "0"]).await
}

fn key(v: &str, f: &str) -> ContentKey {
    ContentKey::from_parts(v, f).unwrap()
}

fn body(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Overwrites 16 bytes at `at` with other bytes, keeping size and mtime:
/// exactly what bit rot looks like to anything that trusts metadata.
fn rot(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let before = std::fs::metadata(path).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = [0u8; 16];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut buf).unwrap();
    for b in &mut buf {
        *b = !*b;
    }
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&buf).unwrap();
    drop(f);
    let mtime = before.modified().unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
    let after = std::fs::metadata(path).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
}

async fn read_all(
    c: &NodeClient,
    k: &ContentKey,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, Error> {
    use futures::TryStreamExt;
    let got = c
        .get(
            k,
            GetOptions {
                range,
                ..Default::default()
            },
        )
        .await?;
    let chunks: Vec<Bytes> = got.stream.try_collect().await?;
    Ok(chunks.concat())
}

#[tokio::test(flavor = "multi_thread")]
async fn rotten_bytes_are_never_served_and_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let big = body(1, 5 * 1024 * 1024 + 123);
    let small = body(2, 300_000);
    let (kb, ks) = (key("v", "big.m4s"), key("v", "small.m4s"));
    node.client.put_bytes(&kb, big.clone()).await.unwrap();
    node.client.put_bytes(&ks, small.clone()).await.unwrap();
    // Good bytes read back whole and by range.
    assert_eq!(
        read_all(&node.client, &kb, None).await.unwrap(),
        big.to_vec()
    );
    assert_eq!(
        read_all(&node.client, &kb, Some(1_500_000..3_200_000))
            .await
            .unwrap(),
        big[1_500_000..3_200_000].to_vec()
    );

    rot(&dir.path().join("v/big.m4s"), 4 * 1024 * 1024 + 10);
    rot(&dir.path().join("v/small.m4s"), 1000);
    // A range before the rotten chunk is still good bytes...
    assert_eq!(
        read_all(&node.client, &kb, Some(0..1_000_000))
            .await
            .unwrap(),
        big[..1_000_000].to_vec()
    );
    // ...but no read ever yields the rotten chunk: the stream fails there.
    let whole = read_all(&node.client, &kb, None).await;
    assert!(matches!(whole, Err(Error::BadCopy { .. })), "{whole:?}");
    let s = read_all(&node.client, &ks, None).await;
    assert!(matches!(s, Err(Error::BadCopy { .. })), "{s:?}");
    // Both are now in quarantine: not served, not listed, counted.
    for k in [&kb, &ks] {
        assert!(matches!(
            node.client.head(k).await,
            Err(Error::NotFound { .. })
        ));
    }
    assert!(node.client.list_all(None).await.unwrap().is_empty());
    let h = node.client.health().await.unwrap();
    assert_eq!((h.quarantined, h.file_count, h.total_bytes), (2, 0, 0));
    assert!(
        dir.path()
            .join(".tritontube/quarantine/v")
            .read_dir()
            .unwrap()
            .count()
            == 2
    );
    // A good copy put again is served again.
    node.client.put_bytes(&ks, small.clone()).await.unwrap();
    assert_eq!(
        read_all(&node.client, &ks, None).await.unwrap(),
        small.to_vec()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scrubber_finds_rot_nobody_reads() {
    let dir = tempfile::tempdir().unwrap();
    // Fast scrubbing, so a cycle takes well under a second here.
    let node = start_node_with(dir.path(), &["--scrub-mb-per-s", "200"]).await;
    for i in 0..20 {
        node.client
            .put_bytes(&key("s", &format!("f{i}.m4s")), body(i, 50_000))
            .await
            .unwrap();
    }
    rot(&dir.path().join("s/f7.m4s"), 40_000);
    let before = node.client.health().await.unwrap().scrub_cycles;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = node.client.health().await.unwrap();
        // Two full cycles after the rot: the file was surely scrubbed.
        if h.scrub_cycles >= before + 2 {
            assert_eq!(h.quarantined, 1, "{h:?}");
            assert_eq!(h.file_count, 19);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scrubber made no progress: {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(matches!(
        node.client.head(&key("s", "f7.m4s")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(node.client.head(&key("s", "f6.m4s")).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_puts_of_one_key_leave_body_and_checksum_agreeing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path()).await;
    let k = key("race", "chunk-0-00001.m4s");
    let path = dir.path().join("race/chunk-0-00001.m4s");
    for round in 0..100u32 {
        let puts = (0..8u8).map(|i| {
            let c = node.client.clone();
            let k = k.clone();
            // Same size, different bytes.
            let b = body(i.wrapping_add((round as u8).wrapping_mul(8)), 40_000);
            tokio::spawn(async move { c.put_bytes(&k, b).await })
        });
        for p in futures::future::join_all(puts).await {
            p.unwrap().unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap();
        let head = node.client.head(&k).await.unwrap();
        assert_eq!(
            head.sha256.0,
            sha(&on_disk),
            "round {round}: index and body disagree"
        );
        let listed = node.client.list_all(None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].sha256.0, sha(&on_disk), "round {round}");
        assert_eq!(read_all(&node.client, &k, None).await.unwrap(), on_disk);
    }
}

/// Set, for the run of [`concurrent_puts_on_a_full_disk_inside_small_tmpfs`],
/// to a directory on a small tmpfs that this test process and the node it
/// starts both see.
const SMALL_DISK_ENV: &str = "TRITONTUBE_TEST_SMALL_DISK";

/// Takes every free byte of the disk holding `path` but `leave`.
fn fill_leaving(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let zeros = vec![0u8; 64 << 10];
    loop {
        match f.write(&zeros) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
}

/// The same race as above on a disk that fills up: a node must never
/// answer a put with success while the body it keeps differs from its
/// index row, and a put it refuses (as full) leaves the earlier file and
/// row as they were.
#[test]
fn concurrent_puts_of_one_key_on_a_full_disk_leave_body_and_checksum_agreeing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cmd) = tritontube_core::testing::on_small_disk(
        dir.path(),
        16 << 20,
        std::env::current_exe().unwrap(),
    ) else {
        eprintln!("skipped: this machine cannot mount a private tmpfs (unshare -rm)");
        return;
    };
    let out = cmd
        .args([
            "concurrent_puts_on_a_full_disk_inside_small_tmpfs",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(SMALL_DISK_ENV, dir.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "the inner test ran: {log}");
}

/// Run by
/// [`concurrent_puts_of_one_key_on_a_full_disk_leave_body_and_checksum_agreeing`]
/// with a 16 MiB tmpfs at `$TRITONTUBE_TEST_SMALL_DISK`: the node's
/// directory and a filler file that, each round, leaves the disk anything
/// from no room to more than the round needs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run inside a small tmpfs by concurrent_puts_of_one_key_on_a_full_disk_leave_body_and_checksum_agreeing"]
async fn concurrent_puts_on_a_full_disk_inside_small_tmpfs() {
    let Some(disk) = std::env::var_os(SMALL_DISK_ENV).map(PathBuf::from) else {
        eprintln!("not inside a small tmpfs; nothing to do");
        return;
    };
    let base = disk.join("node");
    let filler = disk.join("filler");
    let node = start_node(&base).await;
    let k = key("race", "chunk-0-00001.m4s");
    let path = base.join("race/chunk-0-00001.m4s");
    let mut before = body(255, 40_000);
    node.client.put_bytes(&k, before.clone()).await.unwrap();
    let mut refused = 0;
    for round in 0..100u32 {
        // Room to spare first (the index's log grows to its working
        // size), then ever less room, and none.
        if round >= 30 {
            let leave = [0u64, 0, 4096, 12_288, 40_000, 65_536, 200_000][round as usize % 7];
            fill_leaving(&filler, leave);
        }
        let bodies: Vec<Bytes> = (0..8u8)
            .map(|i| body(i.wrapping_add((round as u8).wrapping_mul(8)), 40_000))
            .collect();
        let puts = bodies.iter().cloned().map(|b| {
            let c = node.client.clone();
            let k = k.clone();
            tokio::spawn(async move { c.put_bytes(&k, b).await })
        });
        let results: Vec<_> = futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let on_disk = std::fs::read(&path).unwrap();
        let head = node.client.head(&k).await.unwrap();
        assert_eq!(
            (head.size, head.sha256.0),
            (on_disk.len() as u64, sha(&on_disk)),
            "round {round}: index and body disagree ({} bytes on disk; {results:?})",
            on_disk.len()
        );
        let ok: Vec<&Bytes> = results
            .iter()
            .zip(&bodies)
            .filter(|(r, _)| r.is_ok())
            .map(|(_, b)| b)
            .collect();
        if ok.is_empty() {
            assert_eq!(
                on_disk, before,
                "round {round}: every put failed, yet the file changed"
            );
        } else {
            assert!(
                ok.iter().any(|b| b[..] == on_disk[..]),
                "round {round}: the file is none of the bodies whose put succeeded"
            );
        }
        for r in &results {
            if let Err(e) = r {
                assert!(matches!(e, Error::Full { .. }), "round {round}: {e:?}");
                refused += 1;
            }
        }
        assert_eq!(read_all(&node.client, &k, None).await.unwrap(), on_disk);
        assert!(
            temp_files(&base).is_empty(),
            "round {round}: {:?}",
            temp_files(&base)
        );
        before = on_disk.into();
        let _ = std::fs::remove_file(&filler);
    }
    assert!(refused > 0, "the disk never filled up");
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with(".tritontube/quarantine") {
                    stack.push(p);
                }
            } else if p.parent().is_some_and(|d| d.ends_with(".tritontube/tmp"))
                || p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_upload_or_a_killed_node_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    // A temp file from an older version's layout, left by a crash.
    std::fs::create_dir_all(dir.path().join("old")).unwrap();
    std::fs::write(dir.path().join("old/.tmp-chunk-1-7"), b"").unwrap();
    std::fs::write(dir.path().join("old/manifest.mpd"), b"<MPD/>").unwrap();
    let mut node = start_node(dir.path()).await;

    // A client that dies mid-body: the node drops the partial body at once.
    let (tx, rx) = tokio::sync::mpsc::channel::<tritontube_core::Result<Bytes>>(1);
    let c = node.client.clone();
    let put = tokio::spawn(async move {
        let s = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        c.put(&key("cut", "big.m4s"), s, Default::default()).await
    });
    tx.send(Ok(body(1, 1024 * 1024))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        temp_files(dir.path()).len(),
        1,
        "the body in flight is in the temp dir"
    );
    put.abort();
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !temp_files(dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );

    // kill -9 of the node itself mid-body: the next start removes it.
    let (tx, rx) = tokio::sync::mpsc::channel::<tritontube_core::Result<Bytes>>(1);
    let c = node.client.clone();
    let put = tokio::spawn(async move {
        let s = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        c.put(&key("cut", "big.m4s"), s, Default::default()).await
    });
    tx.send(Ok(body(2, 1024 * 1024))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.kill9();
    assert!(!temp_files(dir.path()).is_empty());
    let _ = put.await;
    let node = start_node(dir.path()).await;
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
    assert!(matches!(
        node.client.head(&key("cut", "big.m4s")).await,
        Err(Error::NotFound { .. })
    ));
}

/// Every file on disk, with the SHA-256 of its bytes.
fn disk_files(dir: &Path) -> std::collections::BTreeMap<String, [u8; 32]> {
    let mut out = std::collections::BTreeMap::new();
    for v in std::fs::read_dir(dir).unwrap().flatten() {
        let name = v.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !v.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(v.path()).unwrap().flatten() {
            let fname = f.file_name().to_string_lossy().to_string();
            if fname.starts_with('.') {
                continue;
            }
            out.insert(
                format!("{name}/{fname}"),
                sha(&std::fs::read(f.path()).unwrap()),
            );
        }
    }
    out
}

async fn listed(c: &NodeClient) -> std::collections::BTreeMap<String, [u8; 32]> {
    c.list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.key.to_string(), m.sha256.0))
        .collect()
}

async fn wait_indexed(c: &NodeClient) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let h = c.health().await.unwrap();
        if h.indexing.is_none() {
            return;
        }
        assert!(Instant::now() < deadline, "index never completed: {h:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_amid_puts_and_deletes_index_and_directory_agree() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3u8 {
        let mut node = start_node(dir.path()).await;
        let workers: Vec<_> = (0..6u8)
            .map(|w| {
                let c = node.client.clone();
                tokio::spawn(async move {
                    for i in 0u32.. {
                        let k = key(
                            &format!("v{}", i % 5),
                            &format!("f{}.m4s", (i * 7 + w as u32) % 40),
                        );
                        let _ = if i % 3 == 2 {
                            c.delete(&k).await
                        } else {
                            c.put_bytes(
                                &k,
                                body(w ^ round ^ i as u8, 1000 + (i as usize % 5) * 70_000),
                            )
                            .await
                            .map(|_| ())
                        };
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
        node.kill9();
        for w in workers {
            w.abort();
        }
        let node = start_node(dir.path()).await;
        wait_indexed(&node.client).await;
        let on_disk = disk_files(dir.path());
        assert!(!on_disk.is_empty());
        assert_eq!(listed(&node.client).await, on_disk, "round {round}");
        let h = node.client.health().await.unwrap();
        assert_eq!(h.file_count as usize, on_disk.len());
        assert!(temp_files(dir.path()).is_empty());
    }
}

/// The course project's layout: `<base>/<video>/<file>`, nothing else.
fn course_layout(dir: &Path, videos: usize, files_per_video: usize) {
    for v in 0..videos {
        let vd = dir.join(format!("video-{v}"));
        std::fs::create_dir_all(&vd).unwrap();
        for f in 0..files_per_video {
            std::fs::write(vd.join(format!("chunk-0-{f:05}.m4s")), format!("{v}/{f}")).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_course_directory_is_up_at_once_and_indexed_in_the_background() {
    // 200,000 files unless told otherwise (TT_INDEX_TEST_FILES).
    let total: usize = std::env::var("TT_INDEX_TEST_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    course_layout(dir.path(), total / 500, 500);
    let started = Instant::now();
    let node = start_node(dir.path()).await;
    let up = started.elapsed();
    let h = node.client.health().await.unwrap();
    assert!(up < Duration::from_secs(5), "took {up:?} to answer Health");
    assert!(h.indexing.is_some(), "{h:?}");
    assert!(!h.node_id.is_empty());
    // Serving meanwhile: an upload, and a read of a file not yet indexed.
    let k = key("new-upload", "manifest.mpd");
    node.client.put_bytes(&k, body(9, 2000)).await.unwrap();
    let last = key(&format!("video-{}", total / 500 - 1), "chunk-0-00499.m4s");
    assert_eq!(
        node.client.get_bytes(&last).await.unwrap(),
        Bytes::from(format!("{}/499", total / 500 - 1))
    );
    // Listings wait for the index rather than give a partial answer.
    assert!(matches!(
        node.client.list_all(None).await,
        Err(Error::Unavailable { .. })
    ));
    // Health stays fast while indexing.
    for _ in 0..20 {
        let t = Instant::now();
        node.client.health().await.unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    wait_indexed(&node.client).await;
    let h = node.client.health().await.unwrap();
    assert_eq!(h.file_count as usize, total + 1);
    assert_eq!(node.client.list_all(None).await.unwrap().len(), total + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_deleted_while_stopped_is_rebuilt_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_node(dir.path()).await;
    let id = node.client.health().await.unwrap().node_id;
    for i in 0..50u8 {
        node.client
            .put_bytes(
                &key(&format!("v{}", i % 4), &format!("f{i}")),
                body(i, 3000 + i as usize),
            )
            .await
            .unwrap();
    }
    let before = listed(&node.client).await;
    node.kill9();
    for f in ["index.db", "index.db-wal", "index.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(".tritontube").join(f));
    }
    let node = start_node(dir.path()).await;
    wait_indexed(&node.client).await;
    assert_eq!(listed(&node.client).await, before);
    // The identity is kept across restarts, index or not.
    assert_eq!(node.client.health().await.unwrap().node_id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_ids_are_kept_and_a_copied_directory_carries_its_id() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let na = start_node(a.path()).await;
    let nb = start_node(b.path()).await;
    let (ida, idb) = (
        na.client.health().await.unwrap().node_id,
        nb.client.health().await.unwrap().node_id,
    );
    assert_ne!(ida, idb);
    assert_eq!(ida.len(), 32);
    // A copy of a's directory is recognisably a's.
    let c = tempfile::tempdir().unwrap();
    std::fs::copy(a.path().join(".tritontube/node-id"), {
        std::fs::create_dir_all(c.path().join(".tritontube")).unwrap();
        c.path().join(".tritontube/node-id")
    })
    .unwrap();
    let nc = start_node(c.path()).await;
    assert_eq!(nc.client.health().await.unwrap().node_id, ida);
}
