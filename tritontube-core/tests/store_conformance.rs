//! The ContentStore conformance suite against every store: the local
//! directory, one storage node over gRPC, and the network store over three
//! nodes. Nodes are real gRPC servers on 127.0.0.1:0.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tritontube_core::NodeAddr;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::node::{NodeClient, NodeClientConfig};
use tritontube_core::store::{ContentStore, ContentStoreExt, LocalContentStore, conformance};

/// A storage node serving `dir` on a free port; dropping the sender stops it.
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

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalContentStore::new(dir.path()).unwrap();
    conformance::run_all(&store).await;
    // And through Arc<dyn ContentStore>, as the service holds it.
    let shared: Arc<dyn ContentStore> = Arc::new(store);
    conformance::put_get_head_delete(&shared).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_over_grpc_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, _stop) = start_node(dir.path()).await;
    let client = NodeClient::new(addr, NodeClientConfig::default());
    conformance::run_all(&client).await;
    let h = client.health().await.unwrap();
    assert!(
        !h.node_id.is_empty(),
        "a serving node answers with its id: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn network_store_over_three_nodes_conforms_and_replicates() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    let mut stops = Vec::new();
    for d in &dirs {
        let (a, s) = start_node(d.path()).await;
        nodes.push(a);
        stops.push(s);
    }
    let store = NetworkContentStore::with_nodes(&nodes, 2, 64).unwrap();
    conformance::run_all(&store).await;

    // Every file is on exactly two nodes.
    let keys: Vec<tritontube_core::ContentKey> = (0..30)
        .map(|i| format!("rep-{i}/chunk-0-00001.m4s").parse().unwrap())
        .collect();
    for k in &keys {
        store
            .put_bytes(k, bytes::Bytes::from_static(b"hello"))
            .await
            .unwrap();
    }
    let locals: Vec<_> = dirs
        .iter()
        .map(|d| LocalContentStore::new(d.path()).unwrap())
        .collect();
    for k in &keys {
        let mut holders = 0;
        for l in &locals {
            if l.head(k).await.is_ok() {
                holders += 1;
            }
        }
        assert_eq!(holders, 2, "{k} is on exactly two nodes");
    }
    let listed = store.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 30, "each key listed once though stored twice");
}
