//! The storage-node binary, driven as a real process: bad input sent raw over
//! gRPC, and a node killed while a read is in flight.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use tonic::Code;
use tritontube_core::NodeAddr;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::proto::storage as pb;
use tritontube_core::proto::storage::storage_node_client::StorageNodeClient;
use tritontube_core::ring::HashRing;
use tritontube_core::store::{ContentStore, ContentStoreExt, GetOptions};

struct Node {
    child: Child,
    addr: NodeAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use tritontube_core::testing::free_port;

async fn start_node(dir: &Path) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // From here on, Drop kills and waits for the process.
    let node = Node {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(node.addr.as_str())
            .await
            .is_ok()
        {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node on {} did not start", node.addr);
}

async fn raw(addr: &NodeAddr) -> StorageNodeClient<tonic::transport::Channel> {
    StorageNodeClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn fkey(v: &str, f: &str) -> Option<pb::FileKey> {
    Some(pb::FileKey {
        video_id: v.into(),
        filename: f.into(),
    })
}

/// Files under `dir`, except the node's own state (its id and index); its
/// temp directory counts, since a partial body would sit there.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name() == ".tritontube" {
                out.extend(walk(&e.path().join("tmp")));
            } else if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_are_refused_and_nothing_escapes_the_base_dir() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("node");
    let node = start_node(&base).await;
    let mut c = raw(&node.addr).await;
    let long = "x".repeat(200);
    let cases = [
        ("..", "passwd"),
        ("v", ".."),
        ("/etc", "passwd"),
        ("v", "/etc/passwd"),
        ("v", "a/b"),
        ("a/b", "c"),
        ("", "f"),
        ("v", ""),
        (long.as_str(), "f"),
        ("v", long.as_str()),
        ("v", ".hidden"),
    ];
    for (v, f) in cases {
        let put = c
            .put(futures::stream::iter(vec![pb::PutRequest {
                header: Some(pb::PutHeader {
                    key: fkey(v, f),
                    expected_sha256: vec![],
                    expected_size: 0,
                }),
                chunk: b"evil".to_vec().into(),
            }]))
            .await
            .unwrap_err();
        assert_eq!(
            put.code(),
            Code::InvalidArgument,
            "put {v:?}/{f:?}: {put:?}"
        );
        assert!(!put.message().is_empty());
        let get = c
            .get(pb::GetRequest {
                key: fkey(v, f),
                range: None,
            })
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::InvalidArgument, "get {v:?}/{f:?}");
        let del = c
            .delete(pb::DeleteRequest { key: fkey(v, f) })
            .await
            .unwrap_err();
        assert_eq!(del.code(), Code::InvalidArgument, "delete {v:?}/{f:?}");
    }
    // Nothing was written anywhere: not in the base dir, not beside it.
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "only the base dir exists"
    );
    assert_eq!(walk(&base).len(), 0, "base dir holds no file");

    // A missing key is NOT_FOUND, never an internal error.
    let e = c
        .get(pb::GetRequest {
            key: fkey("v", "missing.m4s"),
            range: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = c
        .stat(pb::StatRequest {
            key: fkey("v", "missing.m4s"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A checksum mismatch keeps nothing.
    let e = c
        .put(futures::stream::iter(vec![pb::PutRequest {
            header: Some(pb::PutHeader {
                key: fkey("v", "f.m4s"),
                expected_sha256: vec![7; 32],
                expected_size: 0,
            }),
            chunk: b"body".to_vec().into(),
        }]))
        .await
        .unwrap_err();
    // The caller's bytes are not what it said: its error, not data loss
    // on the node (DATA_LOSS is kept for a stored copy gone bad).
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("checksum"), "{}", e.message());
    assert!(walk(&base).is_empty(), "no file kept: {:?}", walk(&base));

    // The node still serves.
    let h = c.health(pb::HealthRequest {}).await.unwrap().into_inner();
    assert!(
        !h.node_id.is_empty(),
        "a serving node answers with its id: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_cut_off_half_way_leaves_no_partial_file() {
    let root = tempfile::tempdir().unwrap();
    let node = start_node(root.path()).await;
    let mut c = raw(&node.addr).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::PutRequest {
        header: Some(pb::PutHeader {
            key: fkey("v", "big.m4s"),
            expected_sha256: vec![],
            expected_size: 0,
        }),
        chunk: vec![1; 512 * 1024].into(),
    })
    .await
    .unwrap();
    tx.send(pb::PutRequest {
        header: None,
        chunk: vec![2; 512 * 1024].into(),
    })
    .await
    .unwrap();
    let outbound = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let call = tokio::spawn(async move { c.put(outbound).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The client goes away mid-upload (tx is still open: no clean end).
    call.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(tx);
    assert!(
        walk(root.path()).is_empty(),
        "no partial file: {:?}",
        walk(root.path())
    );
    let mut c = raw(&node.addr).await;
    let e = c
        .stat(pb::StatRequest {
            key: fkey("v", "big.m4s"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_base_dir_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .args(["--port", &free_port().to_string()])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot use") && err.contains("not-a-dir"),
        "{err}"
    );

    // A video directory that cannot be created (a file is in the way) fails
    // the put with an error naming the path, and the node keeps serving.
    let base = root.path().join("base");
    let node = start_node(&base).await;
    std::fs::write(base.join("blocked"), b"x").unwrap();
    let client = tritontube_core::node::NodeClient::new(node.addr.clone(), Default::default());
    let e = client
        .put_bytes(
            &"blocked/manifest.mpd".parse().unwrap(),
            bytes::Bytes::from_static(b"m"),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("blocked"), "{e}");
    assert!(client.health().await.is_ok());

    // Without a base dir: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_tritontube-node"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BASE_DIR"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_read_does_not_fail_the_read() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for d in &dirs {
        nodes.push(start_node(d.path()).await);
    }
    let addrs: Vec<NodeAddr> = nodes.iter().map(|n| n.addr.clone()).collect();
    let store = NetworkContentStore::with_nodes(&addrs, 2, 64).unwrap();
    let key: tritontube_core::ContentKey = "kill/chunk-0-00001.m4s".parse().unwrap();
    let data: bytes::Bytes = (0..8 * 1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    store.put_bytes(&key, data.clone()).await.unwrap();

    // Start reading from the owner (the first replica tried), take the first
    // chunk, then kill -9 that node.
    let got = store.get(&key, GetOptions::default()).await.unwrap();
    let mut stream = got.stream;
    let first = stream.next().await.unwrap().unwrap();
    let owner = store
        .placement()
        .current
        .owner(key.as_str())
        .unwrap()
        .to_string();
    let idx = nodes.iter().position(|n| n.addr.as_str() == owner).unwrap();
    nodes[idx].child.kill().unwrap();
    nodes[idx].child.wait().unwrap();
    let mut body = first.to_vec();
    while let Some(c) = stream.next().await {
        body.extend_from_slice(&c.expect("the read fails over to the replica"));
    }
    assert_eq!(body.len(), data.len());
    assert!(body == data[..], "bytes intact after failover");
    // New reads succeed from the replica too.
    assert_eq!(store.get_bytes(&key).await.unwrap(), data);
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_from_moves_a_file_node_to_node_and_refuses_bad_copies() {
    use tritontube_core::node::NodeClient;
    use tritontube_core::store::{PutOptions, Sha256Digest};
    let dir = tempfile::tempdir().unwrap();
    let a = start_node(&dir.path().join("a")).await;
    let b = start_node(&dir.path().join("b")).await;
    let (ca, cb) = (
        NodeClient::new(a.addr.clone(), Default::default()),
        NodeClient::new(b.addr.clone(), Default::default()),
    );
    let key = "movie/chunk-0-00001.m4s".parse().unwrap();
    let body: bytes::Bytes = (0..3_000_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let meta = ca.put_bytes(&key, body.clone()).await.unwrap();
    let on_b = dir.path().join("b/movie/chunk-0-00001.m4s");

    // A wrong checksum or size: refused, nothing kept.
    let wrong = PutOptions {
        expected_sha256: Some(Sha256Digest([0; 32])),
        expected_size: None,
    };
    let e = cb.copy_from(&key, &a.addr, wrong).await.unwrap_err();
    assert!(
        matches!(e, tritontube_core::Error::ChecksumMismatch { .. }),
        "{e}"
    );
    let short = PutOptions {
        expected_sha256: None,
        expected_size: Some(meta.size - 1),
    };
    assert!(cb.copy_from(&key, &a.addr, short).await.is_err());
    assert!(!on_b.exists(), "no partial file after a refused copy");

    // A missing file, a source that does not answer, a malformed source.
    let missing = "movie/nothing.m4s".parse().unwrap();
    let e = cb
        .copy_from(&missing, &a.addr, PutOptions::default())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let dead: NodeAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    assert!(
        cb.copy_from(&key, &dead, PutOptions::default())
            .await
            .is_err()
    );
    let mut raw_b = raw(&b.addr).await;
    let s = raw_b
        .copy_from(pb::CopyFromRequest {
            key: Some(pb::FileKey {
                video_id: "movie".into(),
                filename: "chunk-0-00001.m4s".into(),
            }),
            source: "not an address/..".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(!on_b.exists());

    // The real copy: same bytes, same checksum.
    let opts = PutOptions {
        expected_sha256: Some(meta.sha256),
        expected_size: Some(meta.size),
    };
    let copied = cb.copy_from(&key, &a.addr, opts).await.unwrap();
    assert_eq!(copied.sha256, meta.sha256);
    assert_eq!(std::fs::read(&on_b).unwrap(), body);
}
