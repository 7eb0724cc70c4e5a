//! The [`MetadataStore`] contract as executable checks, run against every
//! backend (SQLite, etcd). Each function panics with a message naming the
//! broken rule. Run them on an empty store.

use std::sync::Arc;
use std::time::Duration;

use super::{
    ClusterState, MetadataStore, NodeEntry, PageRequest, Rendition, Video, VideoFacts, VideoState,
};
use crate::error::Error;
use crate::id::VideoId;

fn id(s: &str) -> VideoId {
    VideoId::new(s).expect("valid test id")
}

/// Runs every check, in an order that leaves each one an empty store.
pub async fn run_all(store: Arc<dyn MetadataStore>) {
    videos_round_trip(&*store).await;
    create_is_atomic_under_races(store.clone()).await;
    list_pages_newest_first(&*store).await;
    cluster_state_compare_and_swap(&*store).await;
    admin_lock_is_exclusive_and_expires(&*store).await;
}

/// Create, get, state and facts updates, delete; NotFound and AlreadyExists.
pub async fn videos_round_trip(store: &dyn MetadataStore) {
    let v = Video::new(id("round-trip"), "Round trip");
    store.create_video(&v).await.expect("create");
    assert_eq!(store.get_video(&v.id).await.expect("get"), v);
    let e = store.create_video(&v).await.expect_err("second create");
    assert!(
        matches!(e, Error::AlreadyExists { .. }),
        "second create is AlreadyExists, got {e}"
    );

    store
        .set_video_state(&v.id, VideoState::Processing { progress: 42.5 })
        .await
        .expect("set state");
    let facts = VideoFacts {
        duration_secs: 3.5,
        width: 1280,
        height: 720,
        has_audio: true,
        renditions: vec![Rendition {
            id: "0".into(),
            width: 1280,
            height: 720,
            bitrate: 2_500_000,
        }],
        total_bytes: 12345,
        file_count: 9,
    };
    store
        .set_video_facts(&v.id, &facts)
        .await
        .expect("set facts");
    let got = store.get_video(&v.id).await.expect("get");
    assert_eq!(got.state, VideoState::Processing { progress: 42.5 });
    assert_eq!(got.facts, facts);
    store
        .set_video_state(
            &v.id,
            VideoState::Failed {
                reason: "no video stream".into(),
            },
        )
        .await
        .expect("fail");
    assert_eq!(
        store.get_video(&v.id).await.unwrap().state,
        VideoState::Failed {
            reason: "no video stream".into()
        }
    );

    store.delete_video(&v.id).await.expect("delete");
    for e in [
        store.get_video(&v.id).await.expect_err("get deleted"),
        store.delete_video(&v.id).await.expect_err("delete deleted"),
        store
            .set_video_state(&v.id, VideoState::Ready)
            .await
            .expect_err("update deleted"),
    ] {
        assert!(e.is_not_found(), "unknown id is NotFound, got {e}");
    }
    assert!(
        store
            .list_videos(PageRequest::default())
            .await
            .unwrap()
            .videos
            .is_empty()
    );
}

/// Of many racing creates of one id, exactly one wins.
pub async fn create_is_atomic_under_races(store: Arc<dyn MetadataStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create_video(&Video::new(id("race"), format!("racer {i}")))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => wins += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("a losing create must be AlreadyExists, got {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one racing create wins");
    store.delete_video(&id("race")).await.unwrap();
}

/// Listing is newest first and pages through every video exactly once.
pub async fn list_pages_newest_first(store: &dyn MetadataStore) {
    let n = 25;
    for i in 0..n {
        let mut v = Video::new(id(&format!("list-{i:02}")), format!("v{i}"));
        // Two videos share each upload time: order must still be total.
        v.uploaded_at_ms = 1_700_000_000_000 + (i / 2) as i64 * 1000;
        store.create_video(&v).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_videos(PageRequest {
                limit: 7,
                cursor: cursor.clone(),
            })
            .await
            .unwrap();
        assert!(page.videos.len() <= 7);
        seen.extend(
            page.videos
                .iter()
                .map(|v| (v.uploaded_at_ms, v.id.to_string())),
        );
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), n, "every video listed once: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    assert_eq!(seen, sorted, "newest first");
    let e = store
        .list_videos(PageRequest {
            limit: 5,
            cursor: Some("garbage".into()),
        })
        .await
        .expect_err("bad cursor");
    assert!(
        matches!(e, Error::InvalidInput { .. }),
        "bad cursor is InvalidInput, got {e}"
    );
    for i in 0..n {
        store
            .delete_video(&id(&format!("list-{i:02}")))
            .await
            .unwrap();
    }
}

/// The cluster state is versioned; stale writes are refused.
pub async fn cluster_state_compare_and_swap(store: &dyn MetadataStore) {
    assert!(
        store.cluster_state().await.unwrap().is_none(),
        "no state at first"
    );
    let mut s = ClusterState {
        nodes: vec![NodeEntry {
            addr: "localhost:8090".parse().unwrap(),
            weight: 1.0,
        }],
        replicas: 2,
        vnodes: 64,
        epoch: 1,
        pending: None,
        previous: None,
    };
    let v1 = store
        .put_cluster_state(None, &s)
        .await
        .expect("first write");
    let e = store
        .put_cluster_state(None, &s)
        .await
        .expect_err("second first-write");
    assert!(matches!(e, Error::Conflict { .. }), "got {e}");
    s.pending = Some(vec![NodeEntry {
        addr: "localhost:8091".parse().unwrap(),
        weight: 2.0,
    }]);
    let v2 = store.put_cluster_state(Some(v1), &s).await.expect("update");
    assert_ne!(v1, v2);
    let e = store
        .put_cluster_state(Some(v1), &s)
        .await
        .expect_err("stale write");
    assert!(
        matches!(e, Error::Conflict { .. }),
        "stale write is Conflict, got {e}"
    );
    let read = store.cluster_state().await.unwrap().unwrap();
    assert_eq!(read.value, s);
    assert_eq!(read.version, v2);

    // A waiter learns of a change made by someone else.
    let unchanged = store
        .wait_cluster_change(Some(v2), Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.version, v2, "times out with the same state");
    s.epoch = 2;
    let (waited, written) = tokio::join!(
        store.wait_cluster_change(Some(v2), Duration::from_secs(5)),
        async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            store.put_cluster_state(Some(v2), &s).await.unwrap()
        }
    );
    let waited = waited.unwrap().unwrap();
    assert_eq!(waited.version, written, "the waiter sees the new version");
    assert_eq!(waited.value.epoch, 2);
}

/// One holder at a time; a second is refused at once; an expired lock can
/// be taken; unlock frees it.
pub async fn admin_lock_is_exclusive_and_expires(store: &dyn MetadataStore) {
    let ttl = Duration::from_secs(2);
    let a = store
        .try_lock_admin("alpha", ttl)
        .await
        .expect("first lock");
    let started = std::time::Instant::now();
    match store.try_lock_admin("beta", ttl).await {
        Err(Error::Locked { holder }) => assert_eq!(holder, "alpha", "says who holds it"),
        other => panic!("second lock must be Locked, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    store.renew_admin_lock(&a).await.expect("renew");
    store.unlock_admin(&a).await.expect("unlock");
    let b = store
        .try_lock_admin("beta", ttl)
        .await
        .expect("lock after unlock");
    assert_ne!(a.token, b.token);
    // beta "crashes": its lock expires and gamma can take it.
    tokio::time::sleep(ttl + Duration::from_millis(2500)).await;
    let c = store
        .try_lock_admin("gamma", ttl)
        .await
        .expect("lock after expiry");
    assert!(
        store.renew_admin_lock(&b).await.is_err(),
        "the expired holder cannot renew"
    );
    store.unlock_admin(&c).await.unwrap();
}
