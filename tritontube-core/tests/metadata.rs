//! The MetadataStore conformance suite on SQLite and on real etcd, plus the
//! bad-input cases of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tritontube_core::metadata::{
    EtcdMetadataStore, FileRecord, MetadataStore, PageRequest, SearchRequest, SqliteMetadataStore,
    Video, conformance,
};
use tritontube_core::ring::HashRange;
use tritontube_core::store::Sha256Digest;
use tritontube_core::testing::EtcdCluster;
use tritontube_core::{Error, VideoId};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetadataStore::open(dir.path().join("metadata.db")).unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_conforms() {
    let etcd = EtcdCluster::start().await;
    let store = EtcdMetadataStore::connect(&etcd.endpoints()).await.unwrap();
    conformance::run_all(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_three_members_survive_losing_one() {
    let mut etcd = EtcdCluster::start_members(3).await;
    let store = EtcdMetadataStore::connect(&etcd.endpoints()).await.unwrap();
    let a = Video::new(VideoId::new("before").unwrap(), "before");
    store.create_video(&a).await.unwrap();
    // Stop the member the client most likely talks to first.
    etcd.members[0].kill();
    let b = Video::new(VideoId::new("after").unwrap(), "after");
    let mut ok = false;
    // The client may need a moment to notice the dead endpoint.
    for _ in 0..20 {
        if store.create_video(&b).await.is_ok() || store.get_video(&b.id).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "writes continue with two of three members");
    assert_eq!(store.get_video(&a.id).await.unwrap().title, "before");
    assert_eq!(
        store
            .list_videos(PageRequest::default())
            .await
            .unwrap()
            .videos
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_etcd_is_a_clear_error_within_bounded_time() {
    let port = tritontube_core::testing::free_port();
    let started = Instant::now();
    let e = EtcdMetadataStore::connect(&format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(
        e.to_string().contains(&port.to_string()),
        "names the endpoint: {e}"
    );
    assert!(EtcdMetadataStore::connect("").await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_records_name_their_key() {
    // SQLite: garbage written straight into the table.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let store = SqliteMetadataStore::open(&path).unwrap();
    store
        .create_video(&Video::new(VideoId::new("good").unwrap(), "good"))
        .await
        .unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "INSERT INTO videos (id, uploaded_at_ms, record) VALUES ('bad', 1, 'not json')",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO videos (id, uploaded_at_ms, record) VALUES ('schema', 2, '{\"id\":\"schema\",\"title\":5}')",
        [],
    )
    .unwrap();
    raw.execute(
        "INSERT INTO videos (id, uploaded_at_ms, record) VALUES ('../x', 3, '{}')",
        [],
    )
    .unwrap();
    for id in ["bad", "schema"] {
        match store.get_video(&VideoId::new(id).unwrap()).await {
            Err(Error::Corrupt { key, .. }) => assert_eq!(key, format!("videos/{id}")),
            other => panic!("corrupt {id} must be Corrupt, got {other:?}"),
        }
    }
    // Listing skips corrupt rows rather than hiding every good video.
    let page = store.list_videos(PageRequest::default()).await.unwrap();
    assert_eq!(page.videos.len(), 1);
    assert_eq!(page.videos[0].id.as_str(), "good");
    raw.execute("UPDATE cluster SET state = 'x' WHERE k = 1", [])
        .unwrap();
    raw.execute(
        "INSERT INTO cluster (k, version, state) VALUES (1, 1, '{\"nodes\": 3}')",
        [],
    )
    .unwrap();
    assert!(matches!(
        store.cluster_state().await,
        Err(Error::Corrupt { .. })
    ));
    raw.execute(
        "INSERT INTO file_records (key, video, ring_hash, size, sha256) VALUES ('bad/f', 'bad', 0, 1, x'0102')",
        [],
    )
    .unwrap();
    let bad_file: tritontube_core::ContentKey = "bad/f".parse().unwrap();
    match store.file_record(&bad_file).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, "file_records/bad/f"),
        other => panic!("a short digest must be Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.file_records(HashRange::ALL, None, 0).await,
        Err(Error::Corrupt { .. })
    ));

    // etcd: garbage written straight into the key.
    let etcd = EtcdCluster::start().await;
    let store = EtcdMetadataStore::connect(&etcd.endpoints()).await.unwrap();
    let mut raw =
        etcd_client::Client::connect([format!("http://{}", etcd.members[0].client_addr)], None)
            .await
            .unwrap();
    raw.put("/tritontube/videos/bad", "{not json", None)
        .await
        .unwrap();
    match store.get_video(&VideoId::new("bad").unwrap()).await {
        Err(Error::Corrupt { key, reason }) => {
            assert_eq!(key, "/tritontube/videos/bad");
            assert!(!reason.is_empty());
        }
        other => panic!("must be Corrupt, got {other:?}"),
    }
    raw.put("/tritontube/cluster", "[]", None).await.unwrap();
    assert!(matches!(
        store.cluster_state().await,
        Err(Error::Corrupt { .. })
    ));
    raw.put("/tritontube/video-files/bad/f", "{\"size\":1}", None)
        .await
        .unwrap();
    match store.file_record(&bad_file).await {
        Err(Error::Corrupt { key, .. }) => assert_eq!(key, "/tritontube/video-files/bad/f"),
        other => panic!("must be Corrupt, got {other:?}"),
    }
    // Filed under a hash that is not its key's.
    let misfiled = "/tritontube/files/0000000000000000/bad/f";
    let value = format!("{{\"size\":1,\"sha256\":\"{}\"}}", "ab".repeat(32));
    raw.put(misfiled, value, None).await.unwrap();
    match store.file_records(HashRange::ALL, None, 0).await {
        Err(Error::Corrupt { key, reason }) => {
            assert_eq!(key, misfiled);
            assert!(reason.contains("hash"), "{reason}");
        }
        other => panic!("must be Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_locked_and_foreign_sqlite_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    SqliteMetadataStore::open(&path).unwrap();

    let ro = SqliteMetadataStore::open_read_only(&path).unwrap();
    let e = ro
        .create_video(&Video::new(VideoId::new("x").unwrap(), "x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert!(
        ro.get_video(&VideoId::new("x").unwrap())
            .await
            .unwrap_err()
            .is_not_found()
    );

    // Another process holds the write lock.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let store =
        SqliteMetadataStore::open_with(&path, Default::default(), Duration::from_millis(200));
    let e = match store {
        Err(e) => e,
        Ok(s) => s
            .create_video(&Video::new(VideoId::new("y").unwrap(), "y"))
            .await
            .unwrap_err(),
    };
    assert!(e.to_string().contains("locked"), "{e}");
    holder.execute_batch("ROLLBACK").unwrap();

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'z'; 4096]).unwrap();
    let e = SqliteMetadataStore::open(&junk).unwrap_err();
    assert!(e.to_string().contains("not a SQLite database"), "{e}");
    let e = SqliteMetadataStore::open(dir.path().join("no/such/dir/m.db")).unwrap_err();
    assert!(e.to_string().contains("cannot be opened"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_course_project_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TABLE videos (id TEXT PRIMARY KEY, uploaded_at DATETIME NOT NULL);
         INSERT INTO videos VALUES ('PIKACHU', '2024-05-01 10:00:00.123456789+00:00');
         INSERT INTO videos VALUES ('later', '2024-06-01 10:00:00+00:00');",
    )
    .unwrap();
    drop(raw);
    let store = SqliteMetadataStore::open(&path).unwrap();
    let page = store.list_videos(PageRequest::default()).await.unwrap();
    let ids: Vec<_> = page.videos.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["later", "PIKACHU"]);
    assert_eq!(page.videos[1].uploaded_at_ms, 1_714_557_600_000);
    assert_eq!(
        page.videos[1].state,
        tritontube_core::metadata::VideoState::Ready
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_1_database_is_upgraded_to_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.db");
    // The schema as version 1 wrote it, with one video in it.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute_batch(
        "CREATE TABLE videos (id TEXT PRIMARY KEY, uploaded_at_ms INTEGER NOT NULL, record TEXT NOT NULL);
         CREATE INDEX videos_newest ON videos (uploaded_at_ms DESC, id ASC);
         CREATE TABLE cluster (k INTEGER PRIMARY KEY CHECK (k = 1), version INTEGER NOT NULL, state TEXT NOT NULL);
         CREATE TABLE admin_lock (k INTEGER PRIMARY KEY CHECK (k = 1), holder TEXT NOT NULL,
             token INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL);
         CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
         PRAGMA user_version = 1;",
    )
    .unwrap();
    let mut old = Video::new(VideoId::new("kept").unwrap(), "Kept");
    old.uploaded_at_ms = 1_700_000_000_000;
    old.state = tritontube_core::metadata::VideoState::Processing { progress: 40.0 };
    // A record as written before descriptions existed.
    let mut json = serde_json::to_value(&old).unwrap();
    json.as_object_mut().unwrap().remove("description").unwrap();
    raw.execute(
        "INSERT INTO videos (id, uploaded_at_ms, record) VALUES ('kept', ?1, ?2)",
        rusqlite::params![old.uploaded_at_ms, json.to_string()],
    )
    .unwrap();
    drop(raw);

    let e = SqliteMetadataStore::open_read_only(&path).unwrap_err();
    assert!(e.to_string().contains("schema version 1"), "{e}");

    let store = SqliteMetadataStore::open(&path).unwrap();
    assert_eq!(store.get_video(&old.id).await.unwrap(), old);
    let record = FileRecord {
        key: "kept/manifest.mpd".parse().unwrap(),
        size: 1234,
        sha256: Sha256Digest([7; 32]),
    };
    store
        .record_files(std::slice::from_ref(&record))
        .await
        .unwrap();
    assert_eq!(
        store.file_records(HashRange::ALL, None, 0).await.unwrap(),
        [record]
    );
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    // Version 3 indexes the active videos, those already there included
    // (version 4 adds the web servers' acknowledgements of the ring).
    assert_eq!(store.list_active_videos(0).await.unwrap(), [old.clone()]);
    // Version 5 indexes the titles of the videos already there for search.
    let found = store
        .search_videos(&SearchRequest {
            query: "KEP".into(),
            ..SearchRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(found.videos, [old.clone()]);
    // Version 6 adds accounts: none yet, and the video written before
    // owners existed has none (only admins may change it).
    assert!(store.list_users().await.unwrap().is_empty());
    assert_eq!(store.get_video(&old.id).await.unwrap().owner, None);
    // Reopening an upgraded file changes nothing.
    drop(store);
    let store = SqliteMetadataStore::open_read_only(&path).unwrap();
    assert_eq!(store.get_video(&old.id).await.unwrap(), old);
}
