//! Storage throughput and memory, each figure beside its reference from the
//! same run:
//!
//! - streamed get of a 4 MiB file through a storage node (gRPC, real
//!   process) vs reading the same file from the local store directly;
//! - put of a 1 GiB file through the node client: the node's peak RSS.
//!
//! `cargo build --release --bins --examples && target/release/examples/store_bench [--json] [--rounds N]`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tritontube::node::NodeClient;
use tritontube::store::{
    ByteStream, ContentStore, ContentStoreExt, GetOptions, LocalContentStore, PutOptions,
};
use tritontube::{ContentKey, NodeAddr};

async fn drain(store: &dyn ContentStore, key: &ContentKey) -> usize {
    let mut s = store.get(key, GetOptions::default()).await.unwrap().stream;
    let mut n = 0;
    while let Some(c) = s.next().await {
        n += c.unwrap().len();
    }
    n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// MiB/s of moving `bytes` over a plain loopback TCP connection in 1 MiB
/// writes: the ceiling for any protocol between two processes here.
async fn raw_tcp_mib_s(bytes: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < bytes {
            got += s.read(&mut buf).await.unwrap();
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = vec![1u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..bytes >> 20 {
        s.write_all(&chunk).await.unwrap();
    }
    reader.await.unwrap();
    (bytes >> 20) as f64 / t.elapsed().as_secs_f64()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = args.iter().any(|a| a == "--json");
    // `--rounds N`: more get rounds (for profiling the node).
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let node_bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("tritontube-node");
    assert!(
        node_bin.is_file(),
        "build the node first: cargo build --release --bins"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut node = Command::new(&node_bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(dir.path().join("node"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: NodeAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while tokio::net::TcpStream::connect(addr.as_str()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = NodeClient::new(addr, Default::default());
    let local = LocalContentStore::new(dir.path().join("node")).unwrap();

    // 4 MiB get, node client vs local store, alternating, 30 rounds.
    let key: ContentKey = "bench/chunk-0-00001.m4s".parse().unwrap();
    let data: Bytes = (0..4 * 1024 * 1024)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    client.put_bytes(&key, data).await.unwrap();
    let (mut via_node, mut via_local) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        assert_eq!(drain(&client, &key).await, 4 << 20);
        via_node.push(4.0 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        assert_eq!(drain(&local, &key).await, 4 << 20);
        via_local.push(4.0 / t.elapsed().as_secs_f64());
    }
    let (n, l) = (median(via_node), median(via_local));
    let mut tcp = Vec::new();
    for _ in 0..5 {
        tcp.push(raw_tcp_mib_s(256 << 20).await);
    }
    let tcp = median(tcp);

    // 1 GiB put, streamed in 1 MiB chunks; the node's peak RSS.
    let rss_before = peak_rss_kib(node.id());
    let chunk: Bytes = vec![7u8; 1 << 20].into();
    let body: ByteStream = Box::pin(futures::stream::iter(
        (0..1024).map(move |_| Ok(chunk.clone())),
    ));
    let t = Instant::now();
    let meta = client
        .put(
            &"bench/big.m4s".parse().unwrap(),
            body,
            PutOptions::default(),
        )
        .await
        .unwrap();
    let put_secs = t.elapsed().as_secs_f64();
    assert_eq!(meta.size, 1 << 30);
    let rss = peak_rss_kib(node.id());
    let _ = node.kill();
    let _ = node.wait();
    if json {
        println!(
            "{{\"get_4mib_node_mib_s\":{n:.1},\"get_4mib_local_mib_s\":{l:.1},\"ratio\":{:.3},\"raw_tcp_loopback_mib_s\":{tcp:.1},\"put_1gib_secs\":{put_secs:.2},\"node_peak_rss_mib\":{:.1},\"node_rss_before_mib\":{:.1}}}",
            n / l,
            rss as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
    } else {
        println!("streamed get of 4 MiB (median of {rounds}):");
        println!("  through the node client: {n:8.1} MiB/s");
        println!("  local store directly:    {l:8.1} MiB/s");
        println!("  ratio: {:.3} (target >= 0.5)", n / l);
        println!(
            "  ceiling: plain loopback TCP {tcp:.1} MiB/s (ratio to local {:.3}); node client / TCP {:.3}",
            tcp / l,
            n / tcp
        );
        println!(
            "put of 1 GiB through the node client: {put_secs:.2} s ({:.0} MiB/s)",
            1024.0 / put_secs
        );
        println!(
            "  node peak RSS: {:.1} MiB (target <= 64 MiB; {:.1} MiB before the put)",
            rss as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
    }
}
