//! Writes N files of S bytes into a cluster, placed exactly as a web server
//! with the same nodes, replicas and virtual nodes would place them (for the
//! benchmarks).
//!
//! `put_files NODES(comma separated) REPLICAS VNODES VIDEO_ID COUNT SIZE`

use std::sync::Arc;

use tritontube::cluster::NetworkContentStore;
use tritontube::store::ContentStoreExt;
use tritontube::{ContentKey, NodeAddr};

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [nodes, replicas, vnodes, video, count, size] = a.as_slice() else {
        eprintln!("usage: put_files NODES REPLICAS VNODES VIDEO_ID COUNT SIZE");
        std::process::exit(2);
    };
    let nodes: Vec<NodeAddr> = nodes
        .split(',')
        .map(|n| n.parse().expect("node address"))
        .collect();
    let store = Arc::new(
        NetworkContentStore::with_nodes(&nodes, replicas.parse().unwrap(), vnodes.parse().unwrap())
            .unwrap(),
    );
    let (count, size): (usize, usize) = (count.parse().unwrap(), size.parse().unwrap());
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let (store, video) = (store.clone(), video.clone());
            tokio::spawn(async move {
                for i in (w..count).step_by(4) {
                    let key =
                        ContentKey::from_parts(&video, &format!("chunk-0-{i:05}.m4s")).unwrap();
                    let body: bytes::Bytes = (0..size)
                        .map(|j| (j as u8).wrapping_mul(i as u8 | 1))
                        .collect::<Vec<u8>>()
                        .into();
                    store.put_bytes(&key, body).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
