//! A store whose disk fills up under it: every put either keeps the whole
//! body with a row that describes it, or fails with [`Error::Full`] and
//! leaves the earlier file and row as they were.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::hash_file;
use super::index::Intent;
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

#[test]
fn concurrent_puts_of_one_key_while_the_index_cannot_grow_keep_body_and_row_agreeing() {
    run_on_small_disk(
        "concurrent_puts_while_the_index_cannot_grow_inside_small_tmpfs",
        16 << 20,
    );
}

/// Run by
/// [`concurrent_puts_of_one_key_while_the_index_cannot_grow_keep_body_and_row_agreeing`]:
/// the same race from the first round on, with a few pages of room, so
/// that the index's log, still small, fails to grow now before and now
/// after a body was renamed into place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run inside a small tmpfs by concurrent_puts_of_one_key_while_the_index_cannot_grow_keep_body_and_row_agreeing"]
async fn concurrent_puts_while_the_index_cannot_grow_inside_small_tmpfs() {
    let Some(disk) = small_disk() else { return };
    let leaves: Vec<u64> = (0..24).map(|p| p * 4096).collect();
    race_on_a_filling_disk(&disk, 0, &leaves, 150).await;
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

/// Makes the index's next writes named `what` fail as on a full disk.
fn index_fails(store: &LocalContentStore, what: &[&'static str]) {
    store
        .inner
        .index
        .fail_next
        .lock()
        .unwrap()
        .extend_from_slice(what);
}

/// The file of `k`, its row and what a read returns agree, and are `b`.
async fn holds(store: &LocalContentStore, k: &ContentKey, b: &[u8]) {
    let on_disk = std::fs::read(store.base().join(k.as_str())).unwrap();
    assert_eq!(on_disk, b, "the file");
    let row = store.head(k).await.unwrap();
    assert_eq!(
        (row.size, row.sha256.0),
        (b.len() as u64, sha(b)),
        "the row"
    );
    assert_eq!(&store.get_bytes(k).await.unwrap()[..], b, "a read");
}

fn is_full(e: &Error) -> bool {
    matches!(e, Error::Full { capacity: None, .. })
}

#[tokio::test]
async fn a_put_whose_row_cannot_be_written_leaves_the_earlier_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalContentStore::new(dir.path()).unwrap();
    let k = key("v/chunk-0-00001.m4s");
    let (a, b) = (body(40_000, 1), body(40_000, 2));
    store.put_bytes(&k, a.clone()).await.unwrap();

    // The index cannot record the intent, or cannot record the row once
    // the new body is in place: either way, the put is refused as full
    // and the key holds what it held.
    for fails in ["write an intent", "commit a change"] {
        index_fails(&store, &[fails]);
        let e = store.put_bytes(&k, b.clone()).await.unwrap_err();
        assert!(is_full(&e), "{fails}: {e:?}");
        holds(&store, &k, &a).await;
        assert_eq!(temp_files(store.base()), 0, "{fails}");
        let stats = store.stats();
        assert_eq!((stats.files, stats.bytes), (1, 40_000));
        assert!(store.inner.index.intents().unwrap().is_empty());
    }

    // A new key whose row cannot be written: no file, no row, no video.
    let n = key("new/chunk-0-00001.m4s");
    index_fails(&store, &["commit a change"]);
    let e = store.put_bytes(&n, b.clone()).await.unwrap_err();
    assert!(is_full(&e), "{e:?}");
    assert!(store.head(&n).await.unwrap_err().is_not_found());
    assert!(!store.base().join("new").exists());

    // Once the index can write again, the put goes through.
    store.put_bytes(&k, b.clone()).await.unwrap();
    holds(&store, &k, &b).await;
}

/// An undone put whose intent the index could not drop either leaves the
/// intent for the next start, with the old body (as large as the new one)
/// in place: the next start must see the body is not the intent's and keep
/// the old row, not record the new one over the old bytes.
#[tokio::test]
async fn an_intent_left_by_an_undone_put_is_settled_by_the_bytes_not_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("v/chunk-0-00001.m4s");
    let (a, b) = (body(40_000, 1), body(40_000, 2));
    {
        let store = LocalContentStore::new(dir.path()).unwrap();
        store.put_bytes(&k, a.clone()).await.unwrap();
        index_fails(&store, &["commit a change", "drop an intent"]);
        let e = store.put_bytes(&k, b.clone()).await.unwrap_err();
        assert!(is_full(&e), "{e:?}");
        holds(&store, &k, &a).await;
        assert_eq!(store.inner.index.intents().unwrap().len(), 1);
    }
    let store = LocalContentStore::new(dir.path()).unwrap();
    assert!(store.inner.index.intents().unwrap().is_empty());
    holds(&store, &k, &a).await;
    assert_eq!(temp_files(store.base()), 0);

    // And a put cut off after its rename (its intent and new body in
    // place, its row not written) is finished by the next start.
    let (row, _) = {
        let inner = &store.inner;
        let tmp = inner.tmp_dir().join("gone");
        std::fs::write(&tmp, &b).unwrap();
        let row = hash_file(&k, &tmp).unwrap();
        inner
            .index
            .begin(
                &k,
                &Intent::Put {
                    tmp: "gone".into(),
                    row: row.clone(),
                },
            )
            .unwrap();
        std::fs::rename(&tmp, store.base().join(k.as_str())).unwrap();
        (row, ())
    };
    drop(store);
    let store = LocalContentStore::new(dir.path()).unwrap();
    assert_eq!(store.head(&k).await.unwrap().sha256, row.sha256);
    holds(&store, &k, &b).await;
}

#[tokio::test]
async fn a_delete_whose_row_cannot_be_removed_leaves_the_file_and_row() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("v/chunk-0-00001.m4s");
    let a = body(40_000, 1);
    {
        let store = LocalContentStore::new(dir.path()).unwrap();
        store.put_bytes(&k, a.clone()).await.unwrap();
        for fails in ["write an intent", "commit a change"] {
            index_fails(&store, &[fails]);
            let e = store.delete(&k).await.unwrap_err();
            assert!(is_full(&e), "{fails}: {e:?}");
            holds(&store, &k, &a).await;
            assert_eq!(temp_files(store.base()), 0, "{fails}");
            assert_eq!(store.stats().files, 1);
        }
        // Undone, but its intent could not be dropped: the next start
        // finishes the delete (file and row go together).
        index_fails(&store, &["commit a change", "drop an intent"]);
        store.delete(&k).await.unwrap_err();
        holds(&store, &k, &a).await;
    }
    let store = LocalContentStore::new(dir.path()).unwrap();
    assert!(store.head(&k).await.unwrap_err().is_not_found());
    assert!(!store.base().join(k.as_str()).exists());
    assert_eq!(store.stats().files, 0);
}

/// A reader or the scrubber that found a file bad quarantines it only if
/// it is still that file: one a put undid meanwhile (the earlier file, put
/// back under its unchanged row) is not the one found bad.
#[tokio::test]
async fn only_the_file_found_bad_is_quarantined() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalContentStore::new(dir.path()).unwrap();
    let k = key("v/chunk-0-00001.m4s");
    let a = body(40_000, 1);
    store.put_bytes(&k, a.clone()).await.unwrap();
    let path = store.base().join(k.as_str());
    let ino = std::fs::metadata(&path).unwrap().ino();
    let row = store.head(&k).await.unwrap();
    store
        .inner
        .quarantine(&k, &row.sha256, Some(ino + 1), "another file");
    store.inner.quarantine(&k, &row.sha256, None, "missing");
    holds(&store, &k, &a).await;
    assert_eq!(store.stats().quarantined, 0);
    store
        .inner
        .quarantine(&k, &row.sha256, Some(ino), "this file");
    assert!(store.head(&k).await.unwrap_err().is_not_found());
    assert_eq!(store.stats().quarantined, 1);
}
