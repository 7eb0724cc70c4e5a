//! Real processes for end-to-end tests: storage nodes, the web server, a
//! clip made by ffmpeg. Every process is killed when its handle drops.
#![allow(dead_code)]

pub mod browser;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use tritontube_core::cluster::NetworkContentStore;
use tritontube_core::metadata::{MetadataStore, SqliteMetadataStore, Video, VideoState};
use tritontube_core::store::ContentStoreExt;
pub use tritontube_core::testing::free_port;
use tritontube_core::{ContentKey, NodeAddr};

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub async fn wait_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "{addr} did not open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or(Stdio::null())
}

/// `tritontube-node`, built beside `tritontube-web` (`cargo test --workspace`
/// builds both; alone, run `cargo build -p tritontube-node` first).
pub fn node_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_tritontube-web")).with_file_name("tritontube-node");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build -p tritontube-node` first",
        p.display()
    );
    p
}

/// The admin token every test web server is started with (through the
/// environment, as an operator would, not argv).
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub async fn start_node(root: &Path, port: u16) -> Proc {
    start_node_with(root, port, &[]).await
}

/// A storage node with extra flags (`--capacity-bytes 1M`, say).
pub async fn start_node_with(root: &Path, port: u16, extra: &[&str]) -> Proc {
    let dir = root.join(format!("node-{port}"));
    let child = Command::new(node_bin())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(extra)
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(log_file(root, &format!("node-{port}")))
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    wait_port(&p.addr).await;
    p
}

/// The web server with SQLite metadata and network content.
pub async fn start_web(
    root: &Path,
    http: u16,
    admin: u16,
    nodes: &[String],
    extra: &[&str],
) -> Proc {
    let db = root.join("metadata.db").display().to_string();
    start_web_with(root, http, admin, nodes, extra, ("sqlite", &db)).await
}

/// The web server with the given metadata store (`("etcd", endpoints)`,
/// say) and network content; its data directory is its own. It takes
/// anonymous uploads (`--public-uploads`), as the course project did and
/// as most tests upload; [`start_web_accounts`] starts one that does not.
pub async fn start_web_with(
    root: &Path,
    http: u16,
    admin: u16,
    nodes: &[String],
    extra: &[&str],
    metadata: (&str, &str),
) -> Proc {
    let mut extra = extra.to_vec();
    extra.push("--public-uploads");
    spawn_web(root, http, admin, nodes, &extra, metadata).await
}

/// The web server with SQLite metadata and network content, taking uploads
/// from signed-in users only (the default without `--public-uploads`).
pub async fn start_web_accounts(
    root: &Path,
    http: u16,
    admin: u16,
    nodes: &[String],
    extra: &[&str],
) -> Proc {
    let db = root.join("metadata.db").display().to_string();
    spawn_web(root, http, admin, nodes, extra, ("sqlite", &db)).await
}

/// Starts `tritontube-web` with exactly these flags; its log is
/// `<root>/web-<http>.log`.
async fn spawn_web(
    root: &Path,
    http: u16,
    admin: u16,
    nodes: &[String],
    extra: &[&str],
    metadata: (&str, &str),
) -> Proc {
    let nw = std::iter::once(format!("127.0.0.1:{admin}"))
        .chain(nodes.iter().cloned())
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(env!("CARGO_BIN_EXE_tritontube-web"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &http.to_string(),
            "--data-dir",
        ])
        .arg(root.join(format!("web-data-{http}")))
        .args(extra)
        .args([metadata.0, metadata.1])
        .args(["nw", &nw])
        .env("RUST_LOG", "info")
        .env("TRITONTUBE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(log_file(root, &format!("web-{http}")))
        .spawn()
        .unwrap();
    let p = Proc {
        child,
        addr: format!("127.0.0.1:{http}"),
    };
    wait_port(&p.addr).await;
    wait_port(&format!("127.0.0.1:{admin}")).await;
    p
}

/// A clip made by ffmpeg's test sources.
pub fn clip(dir: &Path, name: &str, secs: u32, size: &str, audio: bool) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size={size}:rate=30:duration={secs}"));
    if audio {
        cmd.args(["-f", "lavfi", "-i"])
            .arg(format!("sine=frequency=440:duration={secs}"))
            .args(["-c:a", "aac", "-shortest"]);
    }
    let st = cmd
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    out
}

pub async fn upload(http: &str, path: &Path) -> reqwest::Response {
    let data = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data).file_name(name),
    );
    post_form(http, form).await
}

/// Posts `form` to `/upload` as a browser's form would, redirects not
/// followed.
pub async fn post_form(http: &str, form: reqwest::multipart::Form) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("http://{http}/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

pub async fn wait_ready(http: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v: serde_json::Value = reqwest::get(format!("http://{http}/api/videos/{id}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match v["state"].as_str() {
            Some("ready") => return v,
            Some("failed") => panic!("{id} failed: {v}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "{id} not ready: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Every file of a video, as the manifest names them (plus the poster and
/// the HLS playlists).
pub async fn files_of(http: &str, id: &str, v: &serde_json::Value) -> Vec<String> {
    let mpd = reqwest::get(format!("http://{http}/content/{id}/manifest.mpd"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut files = vec!["manifest.mpd".to_string(), "poster.jpg".to_string()];
    let reps: Vec<String> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut all_reps = reps.clone();
    if v["has_audio"] == true {
        all_reps.push(reps.len().to_string());
    }
    // The HLS playlists: the master and the media playlists it names.
    if let Some(master) = v["hls_manifest"].as_str() {
        let text = reqwest::get(format!("http://{http}{master}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        files.push(master.rsplit('/').next().unwrap().to_string());
        for line in text.lines().filter(|l| !l.is_empty()) {
            if !line.starts_with('#') {
                files.push(line.to_string());
            } else if let Some(uri) = line.split("URI=\"").nth(1) {
                files.push(uri.split('"').next().unwrap().to_string());
            }
        }
    }
    assert!(mpd.contains("<MPD"), "a manifest: {mpd}");
    for r in &all_reps {
        files.push(format!("init-{r}.m4s"));
        let mut n = 1;
        loop {
            let f = format!("chunk-{r}-{n:05}.m4s");
            let status = reqwest::Client::new()
                .head(format!("http://{http}/content/{id}/{f}"))
                .send()
                .await
                .unwrap()
                .status();
            if status != 200 {
                break;
            }
            files.push(f);
            n += 1;
        }
    }
    files
}

/// Fills the cluster with `n` files of `size` bytes, placed as the web
/// server places them
/// (two replicas, `vnodes` virtual nodes).
pub async fn fill(addrs: &[String], n: usize, size: usize, vnodes: u32) -> Vec<ContentKey> {
    let nodes: Vec<NodeAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    let store = Arc::new(NetworkContentStore::with_nodes(&nodes, 2, vnodes).unwrap());
    let keys: Vec<ContentKey> = (0..n)
        .map(|i| {
            ContentKey::from_parts(&format!("bulk{}", i / 50), &format!("chunk-0-{i:05}.m4s"))
                .unwrap()
        })
        .collect();
    let tasks: Vec<_> = keys
        .chunks(n.div_ceil(8))
        .map(|ks| {
            let (store, ks) = (store.clone(), ks.to_vec());
            tokio::spawn(async move {
                for k in ks {
                    let body: bytes::Bytes = (0..size)
                        .map(|j| (j as u8) ^ (k.as_str().len() as u8))
                        .collect::<Vec<u8>>()
                        .into();
                    store.put_bytes(&k, body).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    keys
}

/// The SQLite metadata store [`start_web`] gives its web servers under
/// `root` (opened beside them, as another process would).
pub fn sqlite_meta(root: &Path) -> SqliteMetadataStore {
    SqliteMetadataStore::open(root.join("metadata.db")).unwrap()
}

/// Makes a web server that has not applied the latest ring appear
/// (`lagging = true`) or go away (`false`). A ring change waits for every
/// live web server's acknowledgement before it copies anything, so while
/// it lags a change stays in progress however fast this machine copies:
/// tests use it to act during a change without racing it.
pub async fn lagging_web_server(meta: &dyn MetadataStore, lagging: bool) {
    let until_ms = match lagging {
        true => tritontube_core::metadata::lifecycle::now_ms() + 60_000,
        false => 0,
    };
    let ack = tritontube_core::metadata::ClusterAck {
        server: "web-lagging-test-server".into(),
        version: 0,
        until_ms,
    };
    meta.put_cluster_ack(&ack).await.unwrap();
}

/// Records a ready video (first generation) for every video id of `keys`
/// that has none, so that files put straight onto the nodes (as [`fill`]
/// does) belong to a video: verify reports files of no video as orphans.
pub async fn record_videos(meta: &dyn MetadataStore, keys: &[ContentKey]) {
    let ids: std::collections::BTreeSet<_> = keys.iter().map(|k| k.video()).collect();
    for id in ids {
        let mut v = Video::new(id.clone(), id.as_str());
        v.state = VideoState::Ready;
        match meta.create_video(&v).await {
            Ok(()) | Err(tritontube_core::Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("cannot record video {id}: {e}"),
        }
    }
}
