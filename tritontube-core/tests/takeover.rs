//! Work left by a web server that stopped, taken over by the next one to
//! start: on real stores (SQLite, a local directory) and real ffmpeg.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tritontube_core::ContentKey;
use tritontube_core::ingest::{Ingest, IngestConfig};
use tritontube_core::metadata::{
    FileRecord, JobLease, MetadataStore, SqliteMetadataStore, Video, VideoState,
};
use tritontube_core::store::{ContentStore, ContentStoreExt, LocalContentStore};

fn now_ms() -> i64 {
    tritontube_core::metadata::lifecycle::now_ms()
}

/// Writes a record as a server would have left it.
async fn left(
    meta: &dyn MetadataStore,
    id: &str,
    generation: u64,
    state: VideoState,
    lease: Option<(&str, i64)>,
) {
    let mut v = Video::new(id.parse().unwrap(), id);
    v.generation = generation;
    v.state = state;
    v.lease = lease.map(|(holder, until_ms)| JobLease {
        holder: holder.into(),
        until_ms,
        attempts: 0,
    });
    meta.create_video(&v).await.unwrap();
}

/// Stores (and records) files of a video as a job would have.
async fn stored(meta: &dyn MetadataStore, content: &dyn ContentStore, keys: &[&str]) {
    let mut records = Vec::new();
    for k in keys {
        let key: ContentKey = k.parse().unwrap();
        let m = content
            .put_bytes(&key, Bytes::from(format!("bytes of {k}")))
            .await
            .unwrap();
        records.push(FileRecord {
            key,
            size: m.size,
            sha256: m.sha256,
        });
    }
    meta.record_files(&records).await.unwrap();
}

async fn keys(content: &dyn ContentStore) -> Vec<String> {
    let mut k: Vec<String> = content
        .list_all(None)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_server_takes_over_what_a_stopped_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(dir.path().join("m.db")).unwrap());
    let content: Arc<dyn ContentStore> =
        Arc::new(LocalContentStore::new(dir.path().join("content")).unwrap());
    let lapsed = now_ms() - 1;
    let live = now_ms() + 600_000;
    let processing = VideoState::Processing { progress: 23.0 };
    // Receiving when its server died.
    left(
        &*meta,
        "half",
        1,
        VideoState::Uploaded,
        Some(("web-dead", lapsed)),
    )
    .await;
    // Transcoding on a server that died long ago; its upload was spooled
    // there.
    let long_ago = now_ms() - 600_000;
    left(
        &*meta,
        "lost",
        1,
        processing.clone(),
        Some(("web-dead", long_ago)),
    )
    .await;
    // The same, but its server stopped only just now: it may come back to
    // finish the job, so it is not failed yet.
    left(
        &*meta,
        "patient",
        1,
        processing.clone(),
        Some(("web-dead", lapsed)),
    )
    .await;
    stored(
        &*meta,
        &*content,
        &["lost/init-0.m4s", "lost/chunk-0-00001.m4s"],
    )
    .await;
    // Written before leases existed.
    left(&*meta, "legacy", 1, processing.clone(), None).await;
    // Being deleted by a server that died: generation 2's files go, an
    // earlier generation's are not this purge's (orphan collection's).
    left(
        &*meta,
        "doomed",
        2,
        VideoState::Deleting,
        Some(("web-dead", lapsed)),
    )
    .await;
    stored(
        &*meta,
        &*content,
        &["doomed/g2-manifest.mpd", "doomed/g2-init-0.m4s"],
    )
    .await;
    content
        .put_bytes(
            &"doomed/g2-chunk-0-00001.m4s".parse().unwrap(),
            Bytes::from_static(b"unrecorded"),
        )
        .await
        .unwrap();
    stored(&*meta, &*content, &["doomed/manifest.mpd"]).await;
    // Another server is alive and working on this one.
    left(
        &*meta,
        "busy",
        1,
        processing.clone(),
        Some(("web-other", live)),
    )
    .await;
    // This server's own job from before its restart, spooled here.
    left(
        &*meta,
        "mine",
        1,
        processing.clone(),
        Some(("web-me", live)),
    )
    .await;
    let data = dir.path().join("ingest");
    std::fs::create_dir_all(data.join("spool")).unwrap();
    let st = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25:duration=2")
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"])
        .arg(data.join("spool").join("mine.g1.upload"))
        .status()
        .unwrap();
    assert!(st.success());
    // Garbage of the stopped run: a half-received upload, a dead job's
    // work directory.
    std::fs::write(data.join("spool").join(".partial-gone.g1"), b"half").unwrap();
    std::fs::create_dir_all(data.join("work").join("gone.g1").join("out")).unwrap();

    let _ingest = Ingest::start(
        meta.clone(),
        content.clone(),
        IngestConfig {
            data_dir: Some(data.clone()),
            server_id: Some("web-me".into()),
            lease: Duration::from_secs(3),
            ..IngestConfig::default()
        },
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = |v: &Result<Video, _>| match v {
        Ok(v) => !v.state.phase().is_active(),
        Err(_) => true,
    };
    for id in ["half", "lost", "legacy", "doomed", "mine"] {
        let id = id.parse().unwrap();
        while !settled(&meta.get_video(&id).await) {
            assert!(Instant::now() < deadline, "{id} never settled");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let state = |id: &str| {
        let meta = meta.clone();
        let id = id.parse().unwrap();
        async move { meta.get_video(&id).await.map(|v| v.state) }
    };
    assert!(
        state("half").await.is_err(),
        "an interrupted receive leaves no record"
    );
    for id in ["lost", "legacy"] {
        match state(id).await {
            Ok(VideoState::Failed { reason }) => {
                assert!(reason.contains("upload it again"), "{id}: {reason}")
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert!(state("doomed").await.is_err(), "the deletion was finished");
    assert_eq!(state("mine").await.unwrap(), VideoState::Ready);
    assert_eq!(
        state("busy").await.unwrap(),
        processing,
        "a live lease is respected"
    );

    let left_keys = keys(&*content).await;
    assert!(
        !left_keys.iter().any(|k| k.starts_with("lost/")),
        "{left_keys:?}"
    );
    assert!(
        !left_keys.iter().any(|k| k.starts_with("doomed/g2-")),
        "{left_keys:?}"
    );
    assert!(left_keys.contains(&"doomed/manifest.mpd".to_string()));
    assert!(
        left_keys.iter().any(|k| k.starts_with("mine/")),
        "{left_keys:?}"
    );
    for id in ["lost", "doomed"] {
        let records = meta.video_file_records(&id.parse().unwrap()).await.unwrap();
        assert!(
            records
                .iter()
                .all(|r| r.key.to_string() == "doomed/manifest.mpd"),
            "{id}: {records:?}"
        );
    }
    // Nothing of the stopped run is left in the data directory.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spool: Vec<_> = std::fs::read_dir(data.join("spool"))
            .unwrap()
            .flatten()
            .collect();
        let work: Vec<_> = std::fs::read_dir(data.join("work"))
            .unwrap()
            .flatten()
            .collect();
        if spool.is_empty() && work.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left: {spool:?} {work:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shutdown_token_ends_every_transcoder_and_the_take_over_task() {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(dir.path().join("meta.db")).unwrap());
    let content: Arc<dyn ContentStore> =
        Arc::new(LocalContentStore::open(dir.path().join("content"), Default::default()).unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ingest = Ingest::start(
        meta,
        content,
        IngestConfig {
            data_dir: Some(dir.path().join("ingest")),
            workers: 3,
            shutdown: shutdown.clone(),
            ..IngestConfig::default()
        },
    )
    .unwrap();
    // Running: its tasks do not end by themselves.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ingest.stopped())
            .await
            .is_err(),
        "the tasks run until the shutdown"
    );
    let t = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), ingest.stopped())
        .await
        .expect("every task exits once the shutdown is cancelled");
    eprintln!("stopped {:?} after the shutdown", t.elapsed());
}
