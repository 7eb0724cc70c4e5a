//! A full storage node, driven as a real process: one whose
//! `--capacity-bytes` is used up, and one whose disk (a small tmpfs) fills
//! up. Either refuses a put as "node full" (gRPC RESOURCE_EXHAUSTED, which
//! the node client turns back into `Error::Full`), keeps nothing of it, and
//! stays up.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::node::{NodeClient, NodeClientConfig};
use tritontube_core::proto::storage as pb;
use tritontube_core::proto::storage::storage_node_client::StorageNodeClient;
use tritontube_core::store::{ContentStore, ContentStoreExt};
use tritontube_core::testing::free_port;
use tritontube_core::{ContentKey, Error, NodeAddr};

struct Node {
    child: Child,
    addr: NodeAddr,
    client: NodeClient,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` (the node binary, or a command ending in it) with the node's
/// flags for `dir`, and waits until it answers.
async fn start(mut cmd: Command, dir: &Path, extra: &[&str]) -> Node {
    let port = free_port();
    let child = cmd
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--scrub-mb-per-s", "0"])
        .args(extra)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: NodeAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let node = Node {
        child,
        client: NodeClient::new(addr.clone(), NodeClientConfig::default()),
        addr,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if node.client.health().await.is_ok() {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("node on {} did not start", node.addr);
}

fn node_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
}

fn key(s: &str) -> ContentKey {
    s.parse().unwrap()
}

fn body(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A put sent raw over gRPC, announcing its size, so the test sees the
/// status exactly as the node sent it.
async fn raw_put(addr: &NodeAddr, k: &ContentKey, b: Bytes) -> tonic::Status {
    let mut raw = StorageNodeClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let size = b.len() as u64;
    let header = pb::PutRequest {
        header: Some(pb::PutHeader {
            key: Some(pb::FileKey {
                video_id: k.video().to_string(),
                filename: k.file().to_string(),
            }),
            expected_sha256: Vec::new(),
            expected_size: size,
        }),
        chunk: Bytes::new(),
    };
    let chunks = (0..b.len()).step_by(MIB).map(|i| pb::PutRequest {
        header: None,
        chunk: b.slice(i..(i + MIB).min(b.len())),
    });
    let msgs: Vec<_> = std::iter::once(header).chain(chunks).collect();
    raw.put(futures::stream::iter(msgs))
        .await
        .expect_err("a full node refuses the put")
}

const MIB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_at_its_capacity_refuses_puts_with_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(node_binary(), dir.path(), &["--capacity-bytes", "2Mi"]).await;
    let capacity = 2 * MIB as u64;

    let h = node.client.health().await.unwrap();
    assert_eq!(h.capacity_bytes, Some(capacity), "health reports it");

    node.client
        .put_bytes(&key("v/a.m4s"), body(3 * MIB / 2, 1))
        .await
        .unwrap();

    // Through the node client: the same error the node raised.
    let e = node
        .client
        .put_bytes(&key("v/b.m4s"), body(MIB, 2))
        .await
        .unwrap_err();
    match &e {
        Error::Full {
            node: n,
            key: k,
            capacity: c,
            free,
            needed,
        } => {
            assert_eq!(n, node.addr.as_str());
            assert_eq!(k, "v/b.m4s");
            assert_eq!(*c, Some(capacity));
            assert_eq!(*free, Some(capacity - 3 * MIB as u64 / 2));
            assert!(*needed > free.unwrap(), "{e}");
        }
        other => panic!("expected node full, got {other:?}"),
    }
    assert_eq!(e.http_status(), 507);

    // Raw: RESOURCE_EXHAUSTED, the kind beside it, and a message that names
    // the capacity and the bytes needed.
    let s = raw_put(&node.addr, &key("v/b.m4s"), body(MIB, 2)).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert_eq!(
        s.metadata()
            .get("tt-error-kind")
            .and_then(|v| v.to_str().ok()),
        Some("full")
    );
    assert!(s.message().contains("node full"), "{}", s.message());
    assert!(
        s.message()
            .contains(&format!("capacity of {capacity} bytes")),
        "{}",
        s.message()
    );
    assert!(
        s.message().contains(&format!("{MIB} bytes")),
        "{}",
        s.message()
    );

    // Nothing of the refused puts is kept; the node still serves.
    assert!(
        node.client
            .head(&key("v/b.m4s"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(node.client.list_all(None).await.unwrap().len(), 1);
    let h = node.client.health().await.unwrap();
    assert_eq!((h.file_count, h.total_bytes), (1, 3 * MIB as u64 / 2));

    // A ring of only full nodes says so, not "too few replicas".
    let network = NetworkContentStore::with_nodes(std::slice::from_ref(&node.addr), 1, 4).unwrap();
    let e = network
        .put_bytes(&key("v/c.m4s"), body(MIB, 3))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Full { .. }), "{e:?}");

    // What still fits goes in.
    node.client
        .put_bytes(&key("v/b.m4s"), body(MIB / 2, 4))
        .await
        .unwrap();
    assert_eq!(node.client.health().await.unwrap().total_bytes, capacity);
}

#[tokio::test(flavor = "multi_thread")]
async fn capacity_flag_is_optional_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(node_binary(), dir.path(), &[]).await;
    let h = node.client.health().await.unwrap();
    assert_eq!(h.capacity_bytes, None, "no limit unless asked");
    drop(node);

    let out = node_binary()
        .args(["--capacity-bytes", "12 parsecs"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--capacity-bytes"), "{err}");
    assert!(err.contains("unknown unit"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_disk_fills_up_refuses_with_node_full() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cmd) = tritontube_core::testing::on_small_disk(
        dir.path(),
        2 * MIB as u64,
        env!("CARGO_BIN_EXE_tritontube-node"),
    ) else {
        eprintln!("skipped: this machine cannot mount a private tmpfs (unshare -rm)");
        return;
    };
    // No capacity set: only the disk can be full.
    let node = start(cmd, dir.path(), &[]).await;

    let k = key("v/chunk-0-00001.m4s");
    let e = node
        .client
        .put_bytes(&k, body(4 * MIB, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Full {
                capacity: None,
                free: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("no space left"), "{e}");
    let s = raw_put(&node.addr, &k, body(4 * MIB, 1)).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");

    // No row, and no temp file: the space the partial bodies took is free
    // again, so a file that fits is stored.
    assert!(node.client.head(&k).await.unwrap_err().is_not_found());
    let h = node.client.health().await.unwrap();
    assert_eq!((h.file_count, h.total_bytes), (0, 0));
    node.client
        .put_bytes(&k, body(3 * MIB / 2, 2))
        .await
        .unwrap();
    assert_eq!(
        node.client.get_bytes(&k).await.unwrap(),
        body(3 * MIB / 2, 2)
    );
}
