//! HTTP exactness of content serving, through warp's test client on real
//! stores: ranges at the edges of `u64`, weak `If-None-Match`, `If-Range`,
//! a rotten stored file answered 502 with a short body, and error bodies
//! that never show server paths or debug text.

use std::sync::Arc;

use bytes::Bytes;
use tritontube_core::ContentKey;
use tritontube_core::ingest::{Ingest, IngestConfig};
use tritontube_core::metadata::{FileRecord, MetadataStore, SqliteMetadataStore};
use tritontube_core::store::{ContentStore, ContentStoreExt, LocalContentStore};
use tritontube_core::web::{App, filters};

struct Site {
    app: App,
    dir: tempfile::TempDir,
}

/// A site over a local store and SQLite, cache on or off, holding one
/// 3 MiB file `v/chunk-0-00001.m4s` with its recorded checksum.
async fn site(cache_mb: u64) -> (Site, Bytes, String) {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(dir.path().join("m.db")).unwrap());
    let local = LocalContentStore::new(dir.path().join("content")).unwrap();
    let content: Arc<dyn ContentStore> = Arc::new(local);
    let ingest = Ingest::start(meta.clone(), content.clone(), IngestConfig::default()).unwrap();
    let body: Bytes = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let key: ContentKey = "v/chunk-0-00001.m4s".parse().unwrap();
    let m = content.put_bytes(&key, body.clone()).await.unwrap();
    meta.record_files(&[FileRecord {
        key,
        size: m.size,
        sha256: m.sha256,
    }])
    .await
    .unwrap();
    let app = App {
        meta,
        content,
        ingest,
        metrics: Default::default(),
        assets: Default::default(),
        health: None,
        network: None,
        cache: Arc::new(tritontube_core::web::cache::ContentCache::new(
            tritontube_core::web::cache::CacheConfig {
                capacity_bytes: cache_mb * 1024 * 1024,
                ..Default::default()
            },
        )),
        admin_token: None,
        uploads: Default::default(),
        tus: None,
        // The course project's open uploads: these tests upload anonymously.
        accounts: std::sync::Arc::new(tritontube_core::web::auth::Accounts::new(true)),
    };
    (Site { app, dir }, body, format!("\"{}\"", m.sha256))
}

const URL: &str = "/content/v/chunk-0-00001.m4s";

async fn get(site: &Site, headers: &[(&str, &str)]) -> warp::http::Response<Bytes> {
    let mut req = warp::test::request().method("GET").path(URL);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.reply(&filters::routes(site.app.clone())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_at_the_edges_of_u64_serve_the_whole_file() {
    for cache in [0, 64] {
        let (site, body, _) = site(cache).await;
        let n = body.len();
        for spec in [
            "bytes=0-18446744073709551615",
            "bytes=0-99999999999999999999999999",
            &format!("bytes=0-{}", n + 10),
        ] {
            let r = get(&site, &[("range", spec)]).await;
            assert_eq!(r.status(), 206, "{spec} (cache {cache})");
            assert_eq!(
                r.headers()["content-range"],
                format!("bytes 0-{}/{n}", n - 1).as_str()
            );
            assert_eq!(r.body(), &body, "{spec}");
        }
        // Past the end, and malformed: 416 with the size.
        for spec in [&format!("bytes={n}-"), "bytes=5-2", "bytes=x-3"] {
            let r = get(&site, &[("range", spec)]).await;
            assert_eq!(r.status(), 416, "{spec}");
            assert_eq!(
                r.headers()["content-range"],
                format!("bytes */{n}").as_str()
            );
        }
        // The last bytes.
        let r = get(&site, &[("range", "bytes=-10")]).await;
        assert_eq!((r.status().as_u16(), r.body().len()), (206, 10));
        assert_eq!(r.body(), &body[n - 10..]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_requests_follow_the_rfc() {
    let (site, body, etag) = site(64).await;
    // If-None-Match: weak comparison, so W/"x" matches "x".
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", W/{etag}"),
        "*".into(),
    ] {
        let r = get(&site, &[("if-none-match", &inm)]).await;
        assert_eq!(r.status(), 304, "{inm}");
        assert!(r.body().is_empty());
    }
    assert_eq!(
        get(&site, &[("if-none-match", "\"other\"")]).await.status(),
        200
    );
    // If-Range: strong comparison; no match (other tag, weak tag, a date)
    // sends the whole file with 200, a match sends the range.
    for ir in [
        "\"other\"".to_string(),
        format!("W/{etag}"),
        "Sat, 28 Nov 2026 03:00:00 GMT".to_string(),
    ] {
        let r = get(&site, &[("range", "bytes=0-9"), ("if-range", &ir)]).await;
        assert_eq!(r.status(), 200, "{ir}");
        assert_eq!(r.body(), &body);
    }
    let r = get(&site, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.body(), &body[..10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotten_file_is_a_502_with_a_short_body_never_a_corrupt_200() {
    for cache in [0, 64] {
        let (site, _, _) = site(cache).await;
        let path = site.dir.path().join("content/v/chunk-0-00001.m4s");
        let mut bytes = std::fs::read(&path).unwrap();
        // In the first chunk, so even a streamed answer has not sent its
        // status yet (later chunks are covered by the node's tests: the
        // stream stops before a bad chunk).
        bytes[1000] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let r = get(&site, &[]).await;
        assert_eq!(r.status(), 502, "cache {cache}");
        let text = String::from_utf8_lossy(r.body()).to_string();
        assert!(text.contains("no intact copy"), "{text}");
        assert!(
            !text.contains(&*site.dir.path().to_string_lossy()),
            "{text}"
        );
        // Now quarantined: every later request is a clear 502 or 404 at once.
        let r = get(&site, &[]).await;
        assert!(matches!(r.status().as_u16(), 404 | 502), "{}", r.status());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_bodies_are_short_and_show_nothing_of_the_server() {
    let (site, _, _) = site(64).await;
    // A header warp cannot parse: a short sentence, not warp's debug text.
    let r = warp::test::request()
        .method("POST")
        .path("/upload")
        .header("content-type", "multipart/form-data; boundary=x")
        .header("content-length", "many")
        .body("--x--")
        .reply(&filters::routes(site.app.clone()))
        .await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8_lossy(r.body()).to_string();
    assert!(
        !text.contains("Rejection") && text.contains("href=\"/\""),
        "{text}"
    );
    let r = warp::test::request()
        .method("GET")
        .path("/content/v/..%2F..%2Fetc%2Fpasswd")
        .reply(&filters::routes(site.app.clone()))
        .await;
    assert_eq!(r.status(), 400);
    let text = String::from_utf8_lossy(r.body()).to_string();
    assert!(
        !text.contains(&*site.dir.path().to_string_lossy()),
        "{text}"
    );
}
