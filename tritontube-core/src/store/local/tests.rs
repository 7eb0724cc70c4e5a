//! A store whose disk fills up under it: every put either keeps the whole
//! body with a row that describes it, or fails with [`Error::Full`] and
//! leaves the earlier file and row as they were.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::id::ContentKey;
use crate::store::{ByteStream, ContentStore, ContentStoreExt, LocalContentStore, PutOptions};

fn key(s: &str) -> ContentKey {
    s.parse().unwrap()
}

fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// `b` as a stream of `piece`-byte chunks.
fn chunked(b: Bytes, piece: usize) -> ByteStream {
    let parts: Vec<_> = (0..b.len())
        .step_by(piece)
        .map(|i| Ok(b.slice(i..(i + piece).min(b.len()))))
        .collect();
    Box::pin(futures::stream::iter(parts))
}

fn temp_files(base: &Path) -> usize {
    std::fs::read_dir(base.join(".tritontube/tmp"))
        .map(|rd| rd.count())
        .unwrap_or(0)
}

/// Takes every free byte of the disk holding `path` but `leave` (a file of
/// zeros written until the disk refuses, then cut back by `leave`).
fn fill_leaving(path: &Path, leave: u64) {
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

/// Runs the test `inner` (a path inside this crate's test binary) in a
/// private tmpfs of `size` bytes mounted at the directory it gets in
/// `TRITONTUBE_TEST_SMALL_DISK`. False if this machine cannot.
fn run_on_small_disk(inner: &str, size: u64) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cmd) =
        crate::testing::on_small_disk(dir.path(), size, std::env::current_exe().unwrap())
    else {
        eprintln!("skipped: this machine cannot mount a private tmpfs (unshare -rm)");
        return false;
    };
    let inner = module_path!()
        .split_once("::")
        .map(|(_, m)| format!("{m}::{inner}"))
        .unwrap();
    let out = cmd
        .args([&inner, "--exact", "--ignored", "--nocapture"])
        .env(SMALL_DISK_ENV, dir.path())
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("1 passed"), "the inner test ran: {log}");
    true
}

const SMALL_DISK_ENV: &str = "TRITONTUBE_TEST_SMALL_DISK";

fn small_disk() -> Option<PathBuf> {
    let d = std::env::var_os(SMALL_DISK_ENV).map(PathBuf::from);
    if d.is_none() {
        eprintln!("not inside a small tmpfs; nothing to do");
    }
    d
}

#[test]
fn concurrent_puts_of_one_key_on_a_filling_disk_keep_body_and_row_agreeing() {
    run_on_small_disk(
        "concurrent_puts_on_a_filling_disk_inside_small_tmpfs",
        16 << 20,
    );
}

/// Run by
/// [`concurrent_puts_of_one_key_on_a_filling_disk_keep_body_and_row_agreeing`]
/// in a 16 MiB tmpfs. Each round, a filler file leaves the disk a little
/// room (from none to more than the round needs), then eight puts of one
/// key race (same size, different bytes; some in one piece, some in many).
/// The index's log has grown to its working size first, so that, as on a
/// disk that filled up under a running node, the index can still write
/// when bodies cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run inside a small tmpfs by concurrent_puts_of_one_key_on_a_filling_disk_keep_body_and_row_agreeing"]
async fn concurrent_puts_on_a_filling_disk_inside_small_tmpfs() {
    let Some(disk) = small_disk() else { return };
    race_on_a_filling_disk(
        &disk,
        40,
        &[0, 0, 4096, 12_288, 40_000, 65_536, 200_000],
        120,
    )
    .await;
}

/// `rounds` rounds of eight puts of one key; from round `warm` on, a
/// filler leaves the disk `leaves[round % len]` bytes of room.
async fn race_on_a_filling_disk(disk: &Path, warm: u32, leaves: &[u64], rounds: u32) {
    let base = disk.join("store");
    let filler = disk.join("filler");
    let k = key("race/chunk-0-00001.m4s");
    let path = base.join("race/chunk-0-00001.m4s");
    let store = LocalContentStore::new(&base).unwrap();
    let first = body(40_000, 255);
    store.put_bytes(&k, first.clone()).await.unwrap();
    let mut before = first;
    let (mut stored, mut refused) = (0, 0);
    for round in 0..rounds {
        // The first rounds with room to spare (the index's log grows to
        // its working size), then ever less room, then none.
        let leave = (round >= warm).then(|| leaves[round as usize % leaves.len()]);
        if let Some(leave) = leave {
            fill_leaving(&filler, leave);
        }
        let bodies: Vec<Bytes> = (0..8u8)
            .map(|i| body(40_000, i.wrapping_add((round as u8).wrapping_mul(8))))
            .collect();
        let puts = bodies.iter().cloned().enumerate().map(|(i, b)| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move {
                let stream = if i % 2 == 0 {
                    chunked(b, 40_000)
                } else {
                    chunked(b, 10_000)
                };
                store.put(&k, stream, PutOptions::default()).await
            })
        });
        let results: Vec<_> = futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let on_disk = std::fs::read(&path).unwrap();
        let row = store.head(&k).await.unwrap();
        assert_eq!(
            (row.size, row.sha256.0),
            (on_disk.len() as u64, sha(&on_disk)),
            "round {round} (room {leave:?}): index and body disagree ({} bytes on disk; {results:?})",
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
            match r {
                Ok(m) => assert_eq!(m.size, 40_000),
                Err(e) => assert!(matches!(e, Error::Full { .. }), "round {round}: {e:?}"),
            }
        }
        stored += ok.len();
        refused += results.len() - ok.len();
        assert_eq!(temp_files(&base), 0, "round {round}: a temp file is left");
        assert_eq!(&store.get_bytes(&k).await.unwrap()[..], &on_disk[..]);
        let stats = store.stats();
        assert_eq!((stats.files, stats.bytes), (1, 40_000), "round {round}");
        before = on_disk.into();
        let _ = std::fs::remove_file(&filler);
    }
    eprintln!("{stored} puts stored, {refused} refused as full");
    assert!(refused > 0, "the disk never filled up");
    // What a restart finds agrees too.
    drop(store);
    let store = LocalContentStore::new(&base).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(store.head(&k).await.unwrap().sha256.0, sha(&on_disk));
    assert_eq!(on_disk, before);
}
