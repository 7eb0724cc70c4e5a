//! Metadata round trips on SQLite and on a local single-member etcd, side by
//! side: create + get operations per second, and listing 10,000 videos in
//! pages of 100.
//!
//! `cargo run --release --example metadata_bench [-- --json]` (needs `etcd`).

use std::sync::Arc;
use std::time::Instant;

use tritontube::VideoId;
use tritontube::metadata::{
    EtcdMetadataStore, MetadataStore, PageRequest, SqliteMetadataStore, Video,
};
use tritontube::testing::EtcdCluster;

async fn measure(store: Arc<dyn MetadataStore>, n: usize) -> (f64, f64) {
    let t = Instant::now();
    for i in 0..n {
        let v = Video::new(VideoId::new(format!("bench-{i:06}")).unwrap(), "bench");
        store.create_video(&v).await.unwrap();
        store.get_video(&v.id).await.unwrap();
    }
    let ops = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (mut seen, mut cursor) = (0, None);
    loop {
        let p = store
            .list_videos(PageRequest { limit: 100, cursor })
            .await
            .unwrap();
        seen += p.videos.len();
        match p.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, n);
    (ops, t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let n = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Arc::new(SqliteMetadataStore::open(dir.path().join("m.db")).unwrap());
    let (s_ops, s_list) = measure(sqlite, n).await;
    let etcd = EtcdCluster::start().await;
    let store = Arc::new(EtcdMetadataStore::connect(&etcd.endpoints()).await.unwrap());
    let (e_ops, e_list) = measure(store, n).await;
    if json {
        println!(
            "{{\"sqlite_create_get_per_s\":{s_ops:.0},\"sqlite_list_10k_s\":{s_list:.3},\"etcd_create_get_per_s\":{e_ops:.0},\"etcd_list_10k_s\":{e_list:.3}}}"
        );
    } else {
        println!("{n} videos, create + get round trips, then list in pages of 100:");
        println!(
            "  SQLite: {s_ops:8.0} create+get/s, list all in {:.3} s",
            s_list
        );
        println!(
            "  etcd:   {e_ops:8.0} create+get/s, list all in {:.3} s",
            e_list
        );
    }
}
