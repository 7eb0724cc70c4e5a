//! Ring changes wait for every web server's acknowledgement of the ring,
//! on real stores (SQLite, storage nodes over gRPC on port 0). Another web
//! server is played by writing its acknowledgements as it would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::cluster::{ClusterManager, ManagerConfig, Nodes};
use tritontube_core::metadata::lifecycle::now_ms;
use tritontube_core::metadata::{
    ClusterAck, MetadataStore, NodeEntry, SqliteMetadataStore, Video, VideoState,
};
use tritontube_core::store::{ContentStore, ContentStoreExt, LocalContentStore};
use tritontube_core::{Error, NodeAddr};

async fn start_node(dir: &std::path::Path) -> (NodeAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: NodeAddr = listener.local_addr().unwrap().to_string().parse().unwrap();
    let store = LocalContentStore::new(dir).unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(tritontube_core::node::serve(listener, store, async {
        let _ = rx.await;
    }));
    (addr, tx)
}

struct Cluster {
    meta: Arc<dyn MetadataStore>,
    network: Arc<NetworkContentStore>,
    manager: ClusterManager,
    addrs: Vec<NodeAddr>,
    _dirs: Vec<tempfile::TempDir>,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn cluster() -> Cluster {
    let mut dirs = Vec::new();
    let mut stops = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..4 {
        let d = tempfile::tempdir().unwrap();
        let (a, s) = start_node(d.path()).await;
        dirs.push(d);
        stops.push(s);
        addrs.push(a);
    }
    let db = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(db.path().join("m.db")).unwrap());
    dirs.push(db);
    let network = Arc::new(NetworkContentStore::with_nodes(&addrs[..3], 2, 16).unwrap());
    let manager = ClusterManager::new(
        meta.clone(),
        network.clone(),
        ManagerConfig {
            holder: "web-a".into(),
            ack_ttl: Duration::from_secs(1),
            ..ManagerConfig::default()
        },
    );
    let initial: Vec<NodeEntry> = addrs[..3]
        .iter()
        .map(|a| NodeEntry::new(a.clone(), 1.0))
        .collect();
    manager.bootstrap(&initial, 2, 16).await.unwrap();
    // The files belong to videos (files of no video are orphans to verify).
    for v in 0..5 {
        let mut video = Video::new(format!("v{v}").parse().unwrap(), "v");
        video.state = VideoState::Ready;
        meta.create_video(&video).await.unwrap();
    }
    for i in 0..50 {
        let key = format!("v{}/chunk-0-{i:05}.m4s", i % 5).parse().unwrap();
        network
            .put_bytes(&key, Bytes::from(vec![i as u8; 1000]))
            .await
            .unwrap();
    }
    Cluster {
        meta,
        network,
        manager,
        addrs,
        _dirs: dirs,
        _stops: stops,
    }
}

async fn ack(meta: &dyn MetadataStore, server: &str, version: u64, for_ms: i64) {
    meta.put_cluster_ack(&ClusterAck {
        server: server.into(),
        version,
        until_ms: now_ms() + for_ms,
    })
    .await
    .unwrap();
}

async fn version(meta: &dyn MetadataStore) -> u64 {
    meta.cluster_state().await.unwrap().unwrap().version
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_waits_for_a_web_server_until_its_acknowledgement_lapses() {
    let c = cluster().await;
    let v0 = version(&*c.meta).await;
    // B routes by the current ring and then goes silent.
    ack(&*c.meta, "web-b", v0, 1500).await;
    let t = Instant::now();
    c.manager.add_node(&c.addrs[3], 1.0).await.unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "copied before B's acknowledgement lapsed ({took:?})"
    );
    let s = c.meta.cluster_state().await.unwrap().unwrap().value;
    assert_eq!(s.nodes.len(), 4);
    assert!(c.manager.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_goes_on_as_soon_as_every_web_server_has_caught_up() {
    let c = cluster().await;
    let v0 = version(&*c.meta).await;
    ack(&*c.meta, "web-b", v0, 30_000).await;
    // B catches up with every state written, 300 ms late.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let follower = {
        let (meta, stop) = (c.meta.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let v = version(&*meta).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                ack(&*meta, "web-b", v, 30_000).await;
            }
        })
    };
    let t = Instant::now();
    c.manager.add_node(&c.addrs[3], 1.0).await.unwrap();
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    follower.await.unwrap();
    // Twice (pending, then committed) at least 300 ms, and far from the
    // three-second give-up.
    assert!(took >= Duration::from_millis(600), "{took:?}");
    assert!(took < Duration::from_millis(2900), "{took:?}");
    assert!(c.manager.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_server_that_never_catches_up_rolls_the_change_back() {
    let c = cluster().await;
    let v0 = version(&*c.meta).await;
    // B keeps saying it is alive, but stays on the old ring.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stuck = {
        let (meta, stop) = (c.meta.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                ack(&*meta, "web-b", v0, 1000).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let before = c.meta.cluster_state().await.unwrap().unwrap().value;
    let e = c.manager.add_node(&c.addrs[3], 1.0).await.unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    stuck.await.unwrap();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("web-b"), "names the laggard: {e}");
    let after = c.meta.cluster_state().await.unwrap().unwrap().value;
    assert_eq!(after.nodes, before.nodes, "rolled back");
    assert!(after.pending.is_none());
    // Once B is gone for good, the same change goes through.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.manager.add_node(&c.addrs[3], 1.0).await.unwrap();
    assert!(c.manager.verify().await.unwrap().problems.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_web_server_whose_acknowledgement_lapsed_refuses_writes() {
    let c = cluster().await;
    let key = "fenced/chunk-0-00001.m4s".parse().unwrap();
    c.network.fence_writes_after(now_ms() - 1);
    let e = c
        .network
        .put_bytes(&key, Bytes::from_static(b"late"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(
        c.network
            .delete(&"v0/chunk-0-00000.m4s".parse().unwrap())
            .await
            .is_err()
    );
    // Caught up: writes resume.
    c.network.fence_writes_after(now_ms() + 10_000);
    c.network
        .put_bytes(&key, Bytes::from_static(b"on time"))
        .await
        .unwrap();
}
