//! The [`MetadataStore`] contract as executable checks, run against every
//! backend (SQLite, etcd). Each function panics with a message naming the
//! broken rule. Run them on an empty store.

use std::sync::Arc;
use std::time::Duration;

use super::{
    ClusterState, FileRecord, MetadataStore, NodeEntry, PageCursor, PageRequest, Phase, Rendition,
    Role, SearchRequest, Session, User, Video, VideoChange, VideoFacts, VideoState,
};
use crate::error::Error;
use crate::id::{ContentKey, VideoId};
use crate::ring::{HashRange, key_hash};
use crate::store::Sha256Digest;

fn id(s: &str) -> VideoId {
    VideoId::new(s).expect("valid test id")
}

/// Runs every check, in an order that leaves each one an empty store.
pub async fn run_all(store: Arc<dyn MetadataStore>) {
    videos_round_trip(&*store).await;
    create_is_atomic_under_races(store.clone()).await;
    list_pages_newest_first(&*store).await;
    search_finds_words_of_titles_and_descriptions(&*store).await;
    search_pages_once_each_under_concurrent_inserts(&*store).await;
    file_records(&*store).await;
    generations_are_never_reused(store.clone()).await;
    change_video_is_compare_and_set(store.clone()).await;
    active_videos_follow_their_phase(&*store).await;
    leases_fence_the_lifecycle(store.clone()).await;
    cluster_acks_are_per_server(&*store).await;
    cluster_state_compare_and_swap(&*store).await;
    admin_lock_is_exclusive_and_expires(&*store).await;
    users_are_created_once_and_listed_by_name(store.clone()).await;
    sessions_live_until_they_lapse_or_are_deleted(&*store).await;
    videos_keep_their_owner(&*store).await;
}

fn user(name: &str, role: Role) -> User {
    User {
        name: name.into(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${name}"),
        created_ms: 1_700_000_000_000,
    }
}

/// Accounts: created once (of 8 racing creates of one name exactly one
/// wins), read back as written, listed by name, a password replaced only
/// for a known name, and bad names refused without a write.
pub async fn users_are_created_once_and_listed_by_name(store: Arc<dyn MetadataStore>) {
    assert!(
        store.list_users().await.expect("list").is_empty(),
        "no users in a new store"
    );
    assert_eq!(
        store.user("nobody").await.expect("read"),
        None,
        "unknown user"
    );
    let racers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_user(&user("zoe", Role::Owner)).await })
    });
    let wins = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .filter(|r| match r {
            Ok(()) => true,
            Err(Error::AlreadyExists { .. }) => false,
            Err(e) => panic!("create_user failed: {e}"),
        })
        .count();
    assert_eq!(wins, 1, "exactly one create of a name succeeds");
    store
        .create_user(&user("al.ice-1", Role::User))
        .await
        .expect("create");
    store
        .create_user(&user("bob", Role::Admin))
        .await
        .expect("create");
    assert_eq!(
        store.user("bob").await.expect("read"),
        Some(user("bob", Role::Admin))
    );
    let names: Vec<String> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(
        names,
        ["al.ice-1", "bob", "zoe"],
        "users are listed by name"
    );
    store
        .set_user_password("bob", "$argon2id$new")
        .await
        .expect("set password");
    let bob = store.user("bob").await.expect("read").expect("bob");
    assert_eq!(bob.password_hash, "$argon2id$new");
    assert_eq!(bob.role, Role::Admin, "a new password keeps the role");
    assert!(matches!(
        store.set_user_password("carol", "$argon2id$x").await,
        Err(Error::NotFound { .. })
    ));
    for bad in ["", "a b", ".x", "x/y", &"n".repeat(65)] {
        assert!(
            matches!(
                store.create_user(&user(bad, Role::User)).await,
                Err(Error::InvalidInput { .. })
            ),
            "the user name {bad:?} is refused"
        );
    }
    assert_eq!(
        store.list_users().await.expect("list").len(),
        3,
        "refusals wrote nothing"
    );
}

/// Sessions: read back by token hash while live, gone once deleted
/// (deleting again is no error) and once their account's password
/// changes, a lapsed one reads as none, and a token hash that is not a
/// SHA-256 is refused.
pub async fn sessions_live_until_they_lapse_or_are_deleted(store: &dyn MetadataStore) {
    let now = super::lifecycle::now_ms();
    let live = Session {
        token_hash: "a".repeat(64),
        user: "zoe".into(),
        expires_ms: now + 3_600_000,
    };
    let lapsed = Session {
        token_hash: "b".repeat(64),
        user: "zoe".into(),
        expires_ms: now - 1,
    };
    store.create_session(&live).await.expect("create");
    store.create_session(&lapsed).await.expect("create");
    assert_eq!(
        store.session(&live.token_hash).await.expect("read"),
        Some(live.clone())
    );
    assert_eq!(
        store.session(&lapsed.token_hash).await.expect("read"),
        None,
        "lapsed"
    );
    assert_eq!(
        store.session(&"c".repeat(64)).await.expect("read"),
        None,
        "unknown"
    );
    // A new password ends every session of its account, and only those.
    let others = Session {
        token_hash: "d".repeat(64),
        user: "bob".into(),
        expires_ms: now + 3_600_000,
    };
    let again = Session {
        token_hash: "e".repeat(64),
        ..live.clone()
    };
    store.create_session(&others).await.expect("create");
    store.create_session(&again).await.expect("create");
    store
        .set_user_password("zoe", "$argon2id$changed")
        .await
        .expect("set password");
    for s in [&live, &again] {
        assert_eq!(
            store.session(&s.token_hash).await.expect("read"),
            None,
            "a new password ends the account's sessions"
        );
    }
    assert_eq!(
        store.session(&others.token_hash).await.expect("read"),
        Some(others.clone()),
        "another account's session lives on"
    );
    store.create_session(&live).await.expect("create");
    store
        .delete_session(&live.token_hash)
        .await
        .expect("delete");
    assert_eq!(
        store.session(&live.token_hash).await.expect("read"),
        None,
        "deleted"
    );
    store
        .delete_session(&live.token_hash)
        .await
        .expect("deleting twice is no error");
    for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64)] {
        assert!(
            matches!(store.session(bad).await, Err(Error::InvalidInput { .. })),
            "the token hash {bad:?} is refused"
        );
    }
}

/// A video's owner is kept through changes; a record without one reads as
/// `None`.
pub async fn videos_keep_their_owner(store: &dyn MetadataStore) {
    let mut v = Video::new(id("owned"), "Owned");
    v.owner = Some("al.ice-1".into());
    store.create_video(&v).await.expect("create");
    store
        .set_video_state(&v.id, VideoState::Ready)
        .await
        .expect("state");
    assert_eq!(
        store.get_video(&v.id).await.expect("read").owner.as_deref(),
        Some("al.ice-1")
    );
    let anonymous = Video::new(id("anonymous"), "Anonymous");
    store.create_video(&anonymous).await.expect("create");
    assert_eq!(
        store.get_video(&anonymous.id).await.expect("read").owner,
        None
    );
    for vid in [&v.id, &anonymous.id] {
        store.delete_video(vid).await.expect("delete");
    }
}

/// `change_video` applies each decision to the record it was shown: 16
/// racing increments all count, an error changes nothing, a delete frees the
/// id, and an unknown id is `NotFound`.
pub async fn change_video_is_compare_and_set(store: Arc<dyn MetadataStore>) {
    let vid = id("cas-video");
    let mut v = Video::new(vid.clone(), "cas");
    v.state = VideoState::Processing { progress: 0.0 };
    store.create_video(&v).await.expect("create");
    let racers = (0..16).map(|_| {
        let store = store.clone();
        let vid = vid.clone();
        tokio::spawn(async move {
            store
                .change_video(&vid, &|v: &Video| {
                    let mut v = v.clone();
                    if let VideoState::Processing { progress } = &mut v.state {
                        *progress += 1.0;
                    }
                    Ok(VideoChange::Put(v))
                })
                .await
                .expect("change")
        })
    });
    for r in futures::future::join_all(racers).await {
        r.expect("task");
    }
    let got = store.get_video(&vid).await.expect("get");
    assert_eq!(
        got.state,
        VideoState::Processing { progress: 16.0 },
        "a racing change was lost"
    );
    let refused = store
        .change_video(&vid, &|_: &Video| {
            Err(Error::Conflict {
                key: "cas-video".into(),
                reason: "test".into(),
            })
        })
        .await;
    assert!(
        matches!(refused, Err(Error::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.get_video(&vid).await.expect("get"),
        got,
        "an error changed the record"
    );
    let gone = store
        .change_video(&vid, &|_: &Video| Ok(VideoChange::Delete))
        .await
        .expect("delete");
    assert_eq!(gone, None);
    assert!(matches!(
        store.get_video(&vid).await,
        Err(Error::NotFound { .. })
    ));
    let unknown = store
        .change_video(&vid, &|v: &Video| Ok(VideoChange::Put(v.clone())))
        .await;
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "{unknown:?}"
    );
    let page = store
        .list_videos(PageRequest::default())
        .await
        .expect("list");
    assert!(
        page.videos.iter().all(|v| v.id != vid),
        "a video deleted by change_video is still listed"
    );
    store.create_video(&v).await.expect("the id is free again");
    store.delete_video(&vid).await.expect("clean up");
}

/// The lifecycle's steps on this backend: one upload's steps never act on
/// another's, a live lease keeps other servers out, a lapsed one lets them
/// take over, and the server that lost it is fenced out.
pub async fn leases_fence_the_lifecycle(store: Arc<dyn MetadataStore>) {
    use super::Lifecycle;
    let ttl = Duration::from_millis(400);
    let a = Lifecycle::new(store.clone(), "server-a", ttl);
    let b = Lifecycle::new(store.clone(), "server-b", ttl);
    let vid = id("leased");
    let v = a.new_upload(&vid, "leased").await.expect("new upload");
    store.create_video(&v).await.expect("create");
    let g = v.generation;
    let processing = VideoState::Processing { progress: 0.0 };
    let e = b
        .transition(&vid, g, &[Phase::Uploaded], processing.clone(), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("server-a"), "{e}");
    let e = a
        .transition(&vid, g + 1, &[Phase::Uploaded], processing.clone(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e}");
    let v = a
        .transition(&vid, g, &[Phase::Uploaded], processing, None)
        .await
        .expect("a moves its own upload");
    assert!(matches!(b.take_over(&v).await, Err(Error::Conflict { .. })));
    a.renew(&vid, g, Some(42.0)).await.expect("renew");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let v = store.get_video(&vid).await.expect("get");
    assert_eq!(v.state, VideoState::Processing { progress: 42.0 });
    let taken = b.take_over(&v).await.expect("a lapsed lease is taken over");
    assert_eq!(taken.lease.as_ref().map(|l| l.attempts), Some(1));
    let e = a.renew(&vid, g, Some(50.0)).await.unwrap_err();
    assert!(e.to_string().contains("server-b"), "a is fenced out: {e}");
    // A delete takes the work from whoever has it; the record goes only
    // through the deleting phase, and only for its own upload.
    let d = a.start_delete(&vid).await.expect("start delete");
    assert_eq!(d.state, VideoState::Deleting);
    assert!(b.renew(&vid, g, None).await.is_err(), "b is fenced out");
    assert!(matches!(
        a.start_delete(&vid).await.map(|v| v.state),
        Ok(VideoState::Deleting)
    ));
    assert!(b.start_delete(&vid).await.is_err(), "a is deleting it");
    assert!(a.remove(&vid, g, &[Phase::Ready]).await.is_err());
    assert!(a.remove(&vid, g + 1, &[Phase::Deleting]).await.is_err());
    a.remove(&vid, g, &[Phase::Deleting]).await.expect("remove");
    assert!(matches!(
        store.get_video(&vid).await,
        Err(Error::NotFound { .. })
    ));
    assert!(store.list_active_videos(0).await.unwrap().is_empty());
}

/// Acknowledgements: one per server, replaced by the next, listed by
/// server; an hour-old one is forgotten.
pub async fn cluster_acks_are_per_server(store: &dyn MetadataStore) {
    use super::ClusterAck;
    let now = super::lifecycle::now_ms();
    assert!(store.cluster_acks().await.unwrap().is_empty());
    let ack = |server: &str, version, until_ms| ClusterAck {
        server: server.into(),
        version,
        until_ms,
    };
    store
        .put_cluster_ack(&ack("b", 3, now + 1000))
        .await
        .unwrap();
    store
        .put_cluster_ack(&ack("a", 3, now + 1000))
        .await
        .unwrap();
    store
        .put_cluster_ack(&ack("a", 5, now + 2000))
        .await
        .unwrap();
    store
        .put_cluster_ack(&ack("gone", 1, now - 7_200_000))
        .await
        .unwrap();
    assert_eq!(
        store.cluster_acks().await.unwrap(),
        [ack("a", 5, now + 2000), ack("b", 3, now + 1000)]
    );
}

/// `list_active_videos` lists exactly the videos in an active phase, however
/// they got there (create, change, delete).
pub async fn active_videos_follow_their_phase(store: &dyn MetadataStore) {
    let states = [
        ("active-a", VideoState::Uploaded),
        ("active-b", VideoState::Processing { progress: 5.0 }),
        ("active-c", VideoState::Ready),
        ("active-d", VideoState::Failed { reason: "x".into() }),
        ("active-e", VideoState::Deleting),
    ];
    for (name, state) in &states {
        let mut v = Video::new(id(name), *name);
        v.state = state.clone();
        store.create_video(&v).await.expect("create");
    }
    let names = |vs: Vec<Video>| vs.into_iter().map(|v| v.id.to_string()).collect::<Vec<_>>();
    let active = names(store.list_active_videos(0).await.expect("list"));
    assert_eq!(active, ["active-a", "active-b", "active-e"]);
    assert_eq!(
        names(store.list_active_videos(2).await.expect("list")).len(),
        2
    );
    // Processing → ready leaves; ready → deleting comes back; a delete leaves.
    for (name, to) in [
        ("active-b", VideoState::Ready),
        ("active-c", VideoState::Deleting),
    ] {
        store
            .change_video(&id(name), &|v: &Video| {
                let mut v = v.clone();
                v.state = to.clone();
                Ok(VideoChange::Put(v))
            })
            .await
            .expect("change");
    }
    store.delete_video(&id("active-a")).await.expect("delete");
    store
        .set_video_state(&id("active-d"), VideoState::Uploaded)
        .await
        .expect("set state");
    let active = store.list_active_videos(0).await.expect("list");
    assert!(active.iter().all(|v| v.state.phase().is_active()));
    assert_eq!(names(active), ["active-c", "active-d", "active-e"]);
    for (name, _) in &states[1..] {
        store.delete_video(&id(name)).await.expect("clean up");
    }
    assert!(store.list_active_videos(0).await.expect("list").is_empty());
}

/// Generations count 1, 2, 3 per id, independently per id, survive a
/// delete of the video, and racing callers never get the same number.
pub async fn generations_are_never_reused(store: Arc<dyn MetadataStore>) {
    let a = id("generation-a");
    let b = id("generation-b");
    assert_eq!(store.next_generation(&a).await.expect("first"), 1);
    assert_eq!(store.next_generation(&a).await.expect("second"), 2);
    assert_eq!(store.next_generation(&b).await.expect("other id"), 1);
    let mut v = Video::new(a.clone(), "gen");
    v.generation = 2;
    store.create_video(&v).await.expect("create");
    assert_eq!(store.get_video(&a).await.expect("get").generation, 2);
    store.delete_video(&a).await.expect("delete");
    assert_eq!(
        store.next_generation(&a).await.expect("after delete"),
        3,
        "a delete never resets the count"
    );
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (s, b) = (store.clone(), b.clone());
            tokio::spawn(async move { s.next_generation(&b).await.expect("race") })
        })
        .collect();
    let mut got = Vec::new();
    for r in racers {
        got.push(r.await.expect("task"));
    }
    got.sort_unstable();
    assert_eq!(
        got,
        (2..10).collect::<Vec<u64>>(),
        "each number handed out once"
    );
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

/// A video with a title and a description, uploaded at `ms`.
fn described(name: &str, title: &str, description: &str, ms: i64) -> Video {
    let mut v = Video::new(id(name), title);
    v.description = description.into();
    v.uploaded_at_ms = ms;
    v
}

/// The ids a search finds, in order, following every page.
async fn search_ids(store: &dyn MetadataStore, query: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .search_videos(&SearchRequest {
                query: query.into(),
                limit,
                cursor,
            })
            .await
            .expect("search");
        let size = if limit == 0 { 100 } else { limit };
        assert!(page.videos.len() <= size, "{query:?}: page too long");
        if page.next.is_some() {
            assert_eq!(
                page.videos.len(),
                size,
                "{query:?}: a short page before the last"
            );
        }
        ids.extend(page.videos.iter().map(|v| v.id.to_string()));
        match page.next {
            Some(c) => cursor = Some(c),
            None => return ids,
        }
    }
}

/// `search_videos` finds a video by the start of any word of its title or
/// description, whatever the case, needs every word of the query, keeps
/// the description, and finds every video for an empty query.
pub async fn search_finds_words_of_titles_and_descriptions(store: &dyn MetadataStore) {
    let base = 1_700_000_000_000;
    let videos = [
        described(
            "surf",
            "Surfing at <Dawn>",
            "Big waves in Hawaii, filmed from the pier.",
            base + 3,
        ),
        described("ski", "Ski trip", "Powder day in the Alps", base + 2),
        described("cafe", "Café crawl", "", base + 1),
        described("plain", "untitled", "", base),
    ];
    for v in &videos {
        store.create_video(v).await.expect("create");
    }
    assert_eq!(
        store.get_video(&id("surf")).await.expect("get"),
        videos[0],
        "the description is kept"
    );
    for (query, want) in [
        ("hawaii", vec!["surf"]),
        ("HAW", vec!["surf"]),
        ("waves big", vec!["surf"]),
        ("dawn", vec!["surf"]),
        ("hawaii powder", vec![]),
        ("alps", vec!["ski"]),
        ("café", vec!["cafe"]),
        ("in", vec!["surf", "ski"]),
        ("awaii", vec![]),
        ("", vec!["surf", "ski", "cafe", "plain"]),
        ("  -- ", vec!["surf", "ski", "cafe", "plain"]),
    ] {
        assert_eq!(search_ids(store, query, 10).await, want, "query {query:?}");
    }
    assert_eq!(
        search_ids(store, "", 1).await,
        ["surf", "ski", "cafe", "plain"],
        "one a page"
    );
    // A changed description is found by its new words only.
    store
        .change_video(&id("plain"), &|v: &Video| {
            let mut v = v.clone();
            v.description = "now with a description".into();
            Ok(VideoChange::Put(v))
        })
        .await
        .expect("change");
    assert_eq!(search_ids(store, "descr", 10).await, ["plain"]);
    for v in &videos {
        store.delete_video(&v.id).await.expect("clean up");
    }
    assert!(
        search_ids(store, "hawaii", 10).await.is_empty(),
        "a deleted video is not found"
    );
}

/// Following `next` visits every match exactly once, newest first, also
/// when videos are created between two pages (they are newer than the
/// cursor, so they are not on later pages), and for a query too.
pub async fn search_pages_once_each_under_concurrent_inserts(store: &dyn MetadataStore) {
    let base = 1_700_000_000_000;
    let n = 23;
    let mut want = Vec::new();
    for i in 0..n {
        // Pairs share an upload time: the order must still be total.
        let word = if i % 3 == 0 { "tagged" } else { "other" };
        let v = described(
            &format!("page-{i:02}"),
            &format!("Video {i}"),
            word,
            base + (i / 2) as i64,
        );
        store.create_video(&v).await.expect("create");
        want.push((v.uploaded_at_ms, v.id.to_string()));
    }
    want.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let want: Vec<String> = want.into_iter().map(|(_, id)| id).collect();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut inserted = 0;
    loop {
        let page = store
            .search_videos(&SearchRequest {
                query: String::new(),
                limit: 4,
                cursor: cursor.clone(),
            })
            .await
            .expect("search");
        seen.extend(page.videos.iter().map(|v| v.id.to_string()));
        // Someone uploads while this client pages.
        let v = described(
            &format!("late-{inserted}"),
            "late",
            "tagged",
            base + 1_000 + inserted,
        );
        store.create_video(&v).await.expect("create");
        inserted += 1;
        match page.next {
            // The cursor survives being handed out and read back.
            Some(c) => cursor = Some(PageCursor::decode(&c.encode()).expect("cursor")),
            None => break,
        }
    }
    assert_eq!(seen, want, "every video once, newest first");
    let tagged: Vec<String> = want
        .iter()
        .filter(|id| id[5..].parse::<usize>().is_ok_and(|i| i % 3 == 0))
        .cloned()
        .collect();
    let late: Vec<String> = (0..inserted).rev().map(|i| format!("late-{i}")).collect();
    let found = search_ids(store, "TAGGED", 3).await;
    assert_eq!(
        found,
        [late.clone(), tagged].concat(),
        "a query pages the same way"
    );
    let all = search_ids(store, "", 0).await;
    assert_eq!(
        all.len(),
        n + inserted as usize,
        "limit 0 is the default page size"
    );
    for i in &all {
        store.delete_video(&id(i)).await.expect("clean up");
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
            id: String::new(),
            reach: None,
        }],
        replicas: 2,
        vnodes: 64,
        epoch: 1,
        pending: None,
        previous: None,
        records_complete: false,
        change: None,
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
        id: String::new(),
        reach: None,
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

/// Videos of the file-record checks.
const RECORD_VIDEOS: [&str; 5] = ["rec-a", "rec-b", "rec-c", "rec-d", "rec-e"];

/// A record whose size and digest derive from `n`, so each differs.
fn test_record(video: &str, file: &str, n: u64) -> FileRecord {
    let mut digest = [0u8; 32];
    for (i, chunk) in digest.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64).to_be_bytes());
    }
    FileRecord {
        key: ContentKey::from_parts(video, file).expect("valid test key"),
        size: n * 1000 + 7,
        sha256: Sha256Digest(digest),
    }
}

/// `(ring hash, key)`, the order of range listings.
fn ring_order(key: &ContentKey) -> (u64, String) {
    (key_hash(key.as_str()), key.as_str().to_string())
}

/// The records of `expected` (in ring order) that `keep` accepts.
fn filtered(expected: &[FileRecord], keep: impl Fn(&FileRecord) -> bool) -> Vec<FileRecord> {
    expected.iter().filter(|r| keep(r)).cloned().collect()
}

/// Every record of `range`, following the cursor `limit` at a time.
async fn page_through(
    store: &dyn MetadataStore,
    range: HashRange,
    limit: usize,
) -> Vec<FileRecord> {
    let mut out: Vec<FileRecord> = Vec::new();
    loop {
        let after = out.last().map(|r| r.key.clone());
        let page = store
            .file_records(range, after.as_ref(), limit)
            .await
            .expect("list file records");
        assert!(page.len() <= limit, "a page holds at most `limit` records");
        let last_page = page.len() < limit;
        out.extend(page);
        if last_page {
            return out;
        }
    }
}

/// Recorded checksums: record, replace, read back, list by ring range with
/// paging, list and delete by video; `delete_video` leaves them alone.
pub async fn file_records(store: &dyn MetadataStore) {
    // 200 records: more than one etcd transaction and many pages per range.
    let mut all: Vec<FileRecord> = (0..200u64)
        .map(|i| {
            test_record(
                RECORD_VIDEOS[i as usize % 5],
                &format!("chunk-{i:03}.m4s"),
                i,
            )
        })
        .collect();
    assert_eq!(
        store.file_record(&all[0].key).await.expect("read unknown"),
        None,
        "an unknown key has no record"
    );
    store.record_files(&all).await.expect("record files");
    for r in all.iter().step_by(17) {
        let got = store.file_record(&r.key).await.expect("read record");
        assert_eq!(got.as_ref(), Some(r), "a record reads back as written");
    }

    // Replacing: the last record of a key wins, also within one call.
    let mut replaced = test_record(RECORD_VIDEOS[2], "chunk-007.m4s", 9999);
    replaced.key = all[7].key.clone();
    // Past i64::MAX: SQLite keeps the same 64 bits in its signed column.
    replaced.size = u64::MAX;
    store
        .record_files(&[all[7].clone(), replaced.clone()])
        .await
        .expect("replace");
    all[7] = replaced.clone();
    let got = store
        .file_record(&replaced.key)
        .await
        .expect("read replaced");
    assert_eq!(got, Some(replaced), "record_files replaces");

    let mut expected = all.clone();
    expected.sort_by_key(|r| ring_order(&r.key));
    let listed = store
        .file_records(HashRange::ALL, None, 0)
        .await
        .expect("list all");
    assert_eq!(
        listed, expected,
        "HashRange::ALL lists every record in (hash, key) order"
    );
    file_record_ranges(store, &expected).await;
    file_records_by_video(store, &all).await;
}

/// Listings of many ranges, whole and paged, match the filtered full list.
async fn file_record_ranges(store: &dyn MetadataStore, expected: &[FileRecord]) {
    let mut ranges = HashRange::split_ring(7);
    for i in 0..6 {
        let a = key_hash(&format!("range-start-{i}"));
        let b = key_hash(&format!("range-end-{i}"));
        ranges.push(HashRange::new(a.min(b), Some(a.max(b))));
        ranges.push(HashRange::new(a, None));
    }
    // Exactly at one record's hash: [h, h+1) holds it, its neighbours do not.
    let h = key_hash(expected[expected.len() / 2].key.as_str());
    ranges.extend([
        HashRange::new(h, h.checked_add(1)),
        HashRange::new(0, Some(h)),
        HashRange::new(h.saturating_add(1), None),
        HashRange::new(h, Some(h)),
    ]);
    for range in ranges {
        let want = filtered(expected, |r| range.contains(key_hash(r.key.as_str())));
        let whole = store
            .file_records(range, None, 0)
            .await
            .expect("list range");
        assert_eq!(whole, want, "range {range:?} lists its records in order");
        let paged = page_through(store, range, 3).await;
        assert_eq!(
            paged, want,
            "range {range:?} paged by 3 lists each record once"
        );
    }
    let mut split = Vec::new();
    for range in HashRange::split_ring(7) {
        split.extend(page_through(store, range, 3).await);
    }
    assert_eq!(
        split, expected,
        "the ring's parts, in order, list every record once"
    );

    // A cursor below the range, or one that names no record, still orders.
    let upper = HashRange::new(h, None);
    let got = store
        .file_records(upper, Some(&expected[0].key), 0)
        .await
        .expect("cursor below the range");
    let want = filtered(expected, |r| upper.contains(key_hash(r.key.as_str())));
    assert_eq!(got, want, "a cursor below the range lists all of it");
    let ghost = ContentKey::from_parts("rec-ghost", "none.m4s").expect("valid key");
    let got = store
        .file_records(HashRange::ALL, Some(&ghost), 0)
        .await
        .expect("unrecorded cursor");
    let want = filtered(expected, |r| ring_order(&r.key) > ring_order(&ghost));
    assert_eq!(got, want, "an unrecorded cursor key orders by its hash");
}

/// Per-video listing and deletion; `delete_video` leaves records alone.
async fn file_records_by_video(store: &dyn MetadataStore, all: &[FileRecord]) {
    let of_video = |v: &str| {
        let mut want: Vec<FileRecord> = all
            .iter()
            .filter(|r| r.key.video().as_str() == v)
            .cloned()
            .collect();
        want.sort_by(|a, b| a.key.file().cmp(b.key.file()));
        want
    };
    for v in RECORD_VIDEOS {
        let got = store
            .video_file_records(&id(v))
            .await
            .expect("list by video");
        assert_eq!(got, of_video(v), "video {v}'s records, by file name");
    }

    let doomed = Video::new(id(RECORD_VIDEOS[0]), "doomed");
    store.create_video(&doomed).await.expect("create");
    store.delete_video(&doomed.id).await.expect("delete video");
    let left = store.video_file_records(&doomed.id).await.expect("list");
    assert_eq!(
        left,
        of_video(RECORD_VIDEOS[0]),
        "delete_video leaves file records"
    );

    let removed = store
        .delete_file_records(&doomed.id)
        .await
        .expect("delete records");
    assert_eq!(removed, 40, "delete_file_records counts what it removed");
    assert!(
        store
            .video_file_records(&doomed.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .file_record(&of_video(RECORD_VIDEOS[0])[0].key)
            .await
            .unwrap(),
        None
    );
    let mut rest: Vec<FileRecord> = RECORD_VIDEOS[1..]
        .iter()
        .flat_map(|v| of_video(v))
        .collect();
    rest.sort_by_key(|r| ring_order(&r.key));
    let listed = page_through(store, HashRange::ALL, 7).await;
    assert_eq!(
        listed, rest,
        "only that video's records are gone, from every listing"
    );
    assert_eq!(store.delete_file_records(&doomed.id).await.unwrap(), 0);

    // Forgetting chosen files: those and only those go, from every listing;
    // a key without a record counts nothing.
    let second = of_video(RECORD_VIDEOS[1]);
    let chosen: Vec<ContentKey> = second.iter().step_by(3).map(|r| r.key.clone()).collect();
    let mut asked = chosen.clone();
    asked.push(ContentKey::new(
        id("no-such-video"),
        "x.m4s".parse().unwrap(),
    ));
    assert_eq!(
        store.forget_file_records(&asked).await.unwrap(),
        chosen.len() as u64,
        "forget_file_records counts what it removed"
    );
    let kept: Vec<FileRecord> = second
        .iter()
        .filter(|r| !chosen.contains(&r.key))
        .cloned()
        .collect();
    assert_eq!(
        store
            .video_file_records(&id(RECORD_VIDEOS[1]))
            .await
            .unwrap(),
        kept
    );
    assert_eq!(store.file_record(&chosen[0]).await.unwrap(), None);
    rest.retain(|r| !chosen.contains(&r.key));
    assert_eq!(page_through(store, HashRange::ALL, 7).await, rest);
    store.record_files(&second).await.expect("record again");

    for v in &RECORD_VIDEOS[1..] {
        assert_eq!(store.delete_file_records(&id(v)).await.unwrap(), 40);
    }
    assert!(
        store
            .file_records(HashRange::ALL, None, 0)
            .await
            .unwrap()
            .is_empty()
    );
}
