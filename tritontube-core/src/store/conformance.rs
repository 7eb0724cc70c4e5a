//! The [`ContentStore`] contract as executable checks.
//!
//! Every store in this crate runs these functions in its tests; anyone
//! implementing [`ContentStore`] can run them too:
//!
//! ```no_run
//! # async fn f(store: &dyn tritontube_core::store::ContentStore) {
//! tritontube_core::store::conformance::run_all(store).await;
//! # }
//! ```
//!
//! Each function panics with a message saying which rule was broken. They
//! use video ids starting with `conformance-`, and clean up after themselves.

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{ByteStream, ContentStore, ContentStoreExt, GetOptions, PutOptions, Sha256Digest};
use crate::error::Error;
use crate::id::{ContentKey, VideoId};

fn key(video: &str, file: &str) -> ContentKey {
    ContentKey::from_parts(video, file).expect("valid test key")
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<_>>()
        .into()
}

fn chunked(data: Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<crate::Result<Bytes>> = (0..data.len())
        .step_by(chunk.max(1))
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Runs every check.
pub async fn run_all(store: &dyn ContentStore) {
    put_get_head_delete(store).await;
    ranged_get(store).await;
    large_streamed_file(store).await;
    overwrite_replaces(store).await;
    checksum_mismatch_keeps_nothing(store).await;
    expected_checksum_is_honoured(store).await;
    failed_stream_keeps_nothing(store).await;
    missing_keys_are_not_found(store).await;
    list_by_video(store).await;
}

/// A put is readable whole, with its size and SHA-256; delete removes it.
pub async fn put_get_head_delete(store: &dyn ContentStore) {
    let k = key("conformance-basic", "manifest.mpd");
    let data = pattern(10_000, 1);
    let meta = store.put_bytes(&k, data.clone()).await.expect("put");
    assert_eq!(meta.size, 10_000, "put returns the size");
    assert_eq!(
        meta.sha256,
        Sha256Digest(Sha256::digest(&data).into()),
        "put returns the SHA-256"
    );
    assert_eq!(
        store.get_bytes(&k).await.expect("get"),
        data,
        "get returns the bytes put"
    );
    assert_eq!(
        store.head(&k).await.expect("head"),
        meta,
        "head agrees with put"
    );
    store.delete(&k).await.expect("delete");
    assert!(
        store.head(&k).await.unwrap_err().is_not_found(),
        "deleted file is gone"
    );
}

/// A ranged get returns exactly the bytes asked for, clamped to the size.
pub async fn ranged_get(store: &dyn ContentStore) {
    let k = key("conformance-range", "chunk-0-00001.m4s");
    let data = pattern(5000, 2);
    store.put_bytes(&k, data.clone()).await.expect("put");
    for (start, end) in [
        (0u64, 1u64),
        (100, 2000),
        (4999, 5000),
        (4000, 9000),
        (0, 5000),
    ] {
        let got = store
            .get(
                &k,
                GetOptions {
                    range: Some(start..end),
                    ..Default::default()
                },
            )
            .await
            .expect("ranged get");
        assert_eq!(got.meta.size, 5000, "meta describes the whole file");
        let body: Vec<Bytes> = got.stream.map(|c| c.expect("chunk")).collect().await;
        let body = body.concat();
        let end = end.min(5000);
        assert_eq!(
            body,
            data[start as usize..end as usize],
            "range {start}..{end}"
        );
        assert_eq!(got.range, start..end);
    }
    store.delete(&k).await.expect("delete");
}

/// A file larger than any single message is streamed both ways intact.
pub async fn large_streamed_file(store: &dyn ContentStore) {
    let k = key("conformance-large", "chunk-1-00001.m4s");
    let data = pattern(5 * 1024 * 1024 + 123, 3);
    let meta = store
        .put(&k, chunked(data.clone(), 700_000), PutOptions::default())
        .await
        .expect("streamed put");
    assert_eq!(meta.size, data.len() as u64);
    let got = store.get_bytes(&k).await.expect("get");
    assert!(got == data, "large file comes back intact");
    store.delete(&k).await.expect("delete");
}

/// A put over an existing key replaces it.
pub async fn overwrite_replaces(store: &dyn ContentStore) {
    let k = key("conformance-overwrite", "poster.jpg");
    store
        .put_bytes(&k, pattern(100, 4))
        .await
        .expect("first put");
    let second = pattern(50, 5);
    store
        .put_bytes(&k, second.clone())
        .await
        .expect("second put");
    assert_eq!(store.get_bytes(&k).await.expect("get"), second);
    store.delete(&k).await.expect("delete");
}

/// A get naming the checksum the caller expects is served only by a copy
/// that has it; any other is [`crate::Error::BadCopy`], never its bytes.
pub async fn expected_checksum_is_honoured(store: &dyn ContentStore) {
    let k = key("conformance-expected", "chunk-0-00001.m4s");
    let body = pattern(5000, 11);
    let m = store.put_bytes(&k, body.clone()).await.expect("put");
    let good = GetOptions {
        expected_sha256: Some(m.sha256),
        ..Default::default()
    };
    let got = store
        .get(&k, good)
        .await
        .expect("get with the right checksum");
    assert_eq!(got.meta.sha256, m.sha256);
    let other = GetOptions {
        expected_sha256: Some(crate::store::Sha256Digest([7; 32])),
        ..Default::default()
    };
    let e = store
        .get(&k, other)
        .await
        .expect_err("get with another checksum");
    assert!(matches!(e, crate::Error::BadCopy { .. }), "{e}");
    store.delete(&k).await.expect("delete");
}

/// A body that does not match its expected SHA-256 is refused, and neither a
/// new file nor a partial one is left.
pub async fn checksum_mismatch_keeps_nothing(store: &dyn ContentStore) {
    let k = key("conformance-mismatch", "init-0.m4s");
    let err = store
        .put(
            &k,
            chunked(pattern(3000, 6), 1000),
            PutOptions {
                expected_sha256: Some(Sha256Digest([0; 32])),
                expected_size: None,
            },
        )
        .await
        .expect_err("mismatching checksum is refused");
    assert!(
        matches!(
            err,
            Error::ChecksumMismatch { .. } | Error::InsufficientReplicas { .. }
        ),
        "checksum mismatch reported as such, got {err}"
    );
    assert!(
        store.head(&k).await.unwrap_err().is_not_found(),
        "nothing kept"
    );
    let listed = store.list_all(Some(k.video())).await.expect("list");
    assert!(listed.is_empty(), "no partial file listed: {listed:?}");
}

/// A body stream that fails half-way leaves nothing behind.
pub async fn failed_stream_keeps_nothing(store: &dyn ContentStore) {
    let k = key("conformance-cut", "chunk-0-00002.m4s");
    let items: Vec<crate::Result<Bytes>> = vec![
        Ok(pattern(100_000, 7)),
        Err(Error::Unavailable {
            what: "upload".into(),
            reason: "client went away".into(),
        }),
    ];
    let body: ByteStream = Box::pin(futures::stream::iter(items));
    assert!(
        store.put(&k, body, PutOptions::default()).await.is_err(),
        "cut-off put fails"
    );
    assert!(
        store.head(&k).await.unwrap_err().is_not_found(),
        "no partial file"
    );
    let listed = store.list_all(Some(k.video())).await.expect("list");
    assert!(listed.is_empty(), "no partial file listed: {listed:?}");
}

/// get, head and delete of a key never stored are NotFound.
pub async fn missing_keys_are_not_found(store: &dyn ContentStore) {
    let k = key("conformance-missing", "nothing.m4s");
    let e = store
        .get(&k, GetOptions::default())
        .await
        .expect_err("get of missing");
    assert!(e.is_not_found(), "get of missing key is NotFound, got {e}");
    let e = store.head(&k).await.expect_err("head of missing");
    assert!(e.is_not_found(), "head of missing key is NotFound, got {e}");
    let e = store.delete(&k).await.expect_err("delete of missing");
    assert!(
        e.is_not_found(),
        "delete of missing key is NotFound, got {e}"
    );
}

/// list yields each file once, by video or all.
pub async fn list_by_video(store: &dyn ContentStore) {
    let a = VideoId::new("conformance-list-a").unwrap();
    let b = VideoId::new("conformance-list-b").unwrap();
    for i in 0..5 {
        store
            .put_bytes(
                &key(a.as_str(), &format!("chunk-0-{i:05}.m4s")),
                pattern(10 + i, 8),
            )
            .await
            .expect("put a");
    }
    store
        .put_bytes(&key(b.as_str(), "manifest.mpd"), pattern(7, 9))
        .await
        .expect("put b");
    let mut la: Vec<String> = store
        .list_all(Some(&a))
        .await
        .expect("list a")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    la.sort();
    assert_eq!(la.len(), 5, "five files of video a: {la:?}");
    assert!(la.iter().all(|k| k.starts_with("conformance-list-a/")));
    let all = store.list_all(None).await.expect("list all");
    let ours: Vec<_> = all
        .iter()
        .filter(|m| m.key.video() == &a || m.key.video() == &b)
        .collect();
    assert_eq!(ours.len(), 6, "each file listed exactly once");
    let lb = store.list_all(Some(&b)).await.expect("list b");
    assert_eq!(lb.len(), 1);
    assert_eq!(lb[0].size, 7);
    for m in store
        .list_all(Some(&a))
        .await
        .unwrap()
        .into_iter()
        .chain(lb)
    {
        store.delete(&m.key).await.expect("delete");
    }
    assert!(store.list_all(Some(&a)).await.unwrap().is_empty());
}
