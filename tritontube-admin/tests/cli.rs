//! The `tritontube-admin` binary against real servers started in this
//! process on free ports: a web server with its admin service and a storage
//! node, a web server's HTTP port, a bare HTTP/1.1 server, and addresses
//! where nothing listens or that do not resolve. Every wrong address gets a
//! message that says what is there and where the admin service is.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tritontube_core::ContentKey;
use tritontube_core::cluster::{HealConfig, HealthConfig};
use tritontube_core::config::{ContentConfig, MetadataConfig};
use tritontube_core::server::WebOptions;
use tritontube_core::store::{ContentStoreExt, LocalContentStore, LocalOptions};
use tritontube_core::testing::free_port;

const TOKEN: &str = "cli-test-token";

/// What a run of the admin binary printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn admin(dir: &Path, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tritontube-admin"))
        .args(["--token", TOKEN])
        .args(args)
        // No ./data/admin-token here, nor a token from the environment.
        .current_dir(dir)
        .env_remove("TRITONTUBE_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn options(dir: &Path, port: u16, content: Option<ContentConfig>) -> WebOptions {
    WebOptions {
        host: "127.0.0.1".into(),
        port,
        metadata: MetadataConfig::embedded(dir),
        content: content.unwrap_or_else(|| ContentConfig::embedded(dir)),
        data_dir: dir.to_path_buf(),
        replicas: 1,
        vnodes: 16,
        max_upload_bytes: 1 << 20,
        workers: 1,
        admin_token: Some(TOKEN.into()),
        assets: Default::default(),
        health: HealthConfig::default(),
        heal: HealConfig {
            rereplicate_after: None,
            ..HealConfig::default()
        },
        cache: Default::default(),
        limits: Default::default(),
        job_lease: Duration::from_secs(30),
        tus_expiry: Duration::from_secs(3600),
        public_uploads: true,
    }
}

async fn wait_port(addr: &str) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} did not open");
}

/// A web server (SQLite, network content) with its admin service, over one
/// storage node holding a 5,000-byte file; all stop when `stop` is cancelled.
struct Cluster {
    http: String,
    admin: String,
    node: String,
}

async fn cluster(dir: &Path, stop: &CancellationToken) -> Cluster {
    let store = LocalContentStore::open(dir.join("node"), LocalOptions::default()).unwrap();
    let key: ContentKey = "clip/chunk-0-00001.m4s".parse().unwrap();
    store
        .put_bytes(&key, bytes::Bytes::from(vec![7u8; 5_000]))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node = listener.local_addr().unwrap().to_string();
    tokio::spawn(tritontube_core::node::serve(
        listener,
        store,
        stop.clone().cancelled_owned(),
    ));
    let (http, admin) = (free_port(), free_port());
    let opts = options(
        &dir.join("web"),
        http,
        Some(ContentConfig::from_parts("nw", &format!("127.0.0.1:{admin},{node}")).unwrap()),
    );
    tokio::spawn(tritontube_core::server::run(opts, stop.clone()));
    let c = Cluster {
        http: format!("127.0.0.1:{http}"),
        admin: format!("127.0.0.1:{admin}"),
        node,
    };
    wait_port(&c.http).await;
    wait_port(&c.admin).await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_answers_with_or_without_an_http_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let c = cluster(dir.path(), &stop).await;
    for server in [
        c.admin.clone(),
        format!("http://{}", c.admin),
        format!("http://{}/", c.admin),
    ] {
        let r = admin(dir.path(), &["list", &server]).await;
        assert!(r.ok, "{server}: {}", r.stderr);
        assert_eq!(
            r.stdout,
            format!("Storage cluster nodes:\n  - {}\n", c.node),
            "{server}"
        );
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_human_sizes_and_json_keeps_raw_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let c = cluster(dir.path(), &stop).await;
    let r = admin(dir.path(), &["status", &c.admin]).await;
    assert!(r.ok, "{}", r.stderr);
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with(&c.node))
        .unwrap_or_else(|| panic!("no row for {}:\n{}", c.node, r.stdout));
    assert!(row.contains("4.88 KiB"), "{row}");
    assert!(!row.contains("5000"), "raw byte count shown: {row}");

    let r = admin(dir.path(), &["--json", "status", &c.admin]).await;
    assert!(r.ok, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["nodes"][0]["total_bytes"], 5_000, "{v}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_servers_http_port_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    // The embedded default: a web server with no admin service at all.
    let http = free_port();
    tokio::spawn(tritontube_core::server::run(
        options(dir.path(), http, None),
        stop.clone(),
    ));
    let http = format!("127.0.0.1:{http}");
    wait_port(&http).await;
    for verb in [&["list"][..], &["status"], &["add", "127.0.0.1:1"]] {
        let mut args = verb.to_vec();
        args.insert(1, &http);
        let r = admin(dir.path(), &args).await;
        assert!(!r.ok);
        assert!(
            r.stderr.contains("is the web server's HTTP port")
                && r.stderr.contains("admin port (default 8081"),
            "{verb:?}: {}",
            r.stderr
        );
        assert!(!r.stderr.contains("compression"), "{}", r.stderr);
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_storage_node_or_another_http_server_is_not_the_admin_service() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let c = cluster(dir.path(), &stop).await;
    let r = admin(dir.path(), &["list", &c.node]).await;
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("answers gRPC but does not offer this admin call")
            && r.stderr.contains("storage node"),
        "{}",
        r.stderr
    );
    // The same cluster's HTTP port is recognised as TritonTube's.
    let r = admin(dir.path(), &["list", &c.http]).await;
    assert!(r.stderr.contains("web server's HTTP port"), "{}", r.stderr);

    // Some other HTTP/1.1 server (no HTTP/2, not TritonTube).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                    )
                    .await;
            });
        }
    });
    let r = admin(dir.path(), &["list", &other]).await;
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("an HTTP server answers there, not the admin service"),
        "{}",
        r.stderr
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_and_malformed_addresses_say_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!("127.0.0.1:{}", free_port());
    let cases: [(&str, &[&str]); 5] = [
        (
            &nobody,
            &["nothing listens there (connection refused)", "admin port"],
        ),
        (
            "nonsense.invalid:8081",
            &["cannot resolve the host name \"nonsense.invalid\""],
        ),
        (
            "nonsense",
            &["no port: give host:port, e.g. localhost:8081"],
        ),
        ("https://localhost:8081", &["not TLS"]),
        ("http://localhost:8081/api", &["has no path"]),
    ];
    for (server, says) in cases {
        let r = admin(dir.path(), &["list", server]).await;
        assert!(!r.ok, "{server}");
        for s in says {
            assert!(
                r.stderr.contains(s),
                "{server}: expected {s:?} in {}",
                r.stderr
            );
        }
    }
}

/// Runs the admin binary with exactly `args` and `env` (no token added).
async fn admin_bare(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, Run) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tritontube-admin"))
        .args(args)
        .current_dir(dir)
        .env_remove("TRITONTUBE_ADMIN_TOKEN")
        .env_remove("TRITONTUBE_ADMIN_CONFIG")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out.status.code(), run)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_file_gives_the_token_file_and_json_and_flags_win_over_it() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let c = cluster(dir.path(), &stop).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let config = dir.path().join("admin.toml");
    std::fs::write(
        &config,
        format!(
            "token-file = {:?}\njson = true\n",
            token_file.display().to_string()
        ),
    )
    .unwrap();
    // By flag, and by environment variable.
    let by_flag = ["--config", config.to_str().unwrap(), "list", &c.admin];
    for (args, env) in [
        (&by_flag[..], &[][..]),
        (
            &["list", &c.admin][..],
            &[("TRITONTUBE_ADMIN_CONFIG", config.as_path())][..],
        ),
    ] {
        let (_, r) = admin_bare(dir.path(), args, env).await;
        assert!(r.ok, "{args:?}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["nodes"][0], c.node.as_str(), "{v}");
    }
    // A wrong token on the command line wins over the file's token file.
    let (_, r) = admin_bare(
        dir.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--token",
            "wrong",
            "add",
            &c.admin,
            "127.0.0.1:1",
        ],
        &[],
    )
    .await;
    assert!(!r.ok);
    assert!(r.stderr.to_lowercase().contains("token"), "{}", r.stderr);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_file_is_refused_before_anything_is_contacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("admin.toml");
    // Nothing listens on the server address: the error must be the file's.
    let nobody = format!("127.0.0.1:{}", free_port());
    for (text, says) in [
        (
            "tokn-file = \"t\"\n",
            "unknown key `tokn-file` (did you mean `token-file`?)",
        ),
        (
            "json = \"yes\"\n",
            "`json` must be a boolean (true or false), not a string",
        ),
        (
            "log-format = \"xml\"\n",
            "`log-format` = \"xml\" is not valid",
        ),
    ] {
        std::fs::write(&config, text).unwrap();
        let (code, r) = admin_bare(
            dir.path(),
            &["--config", config.to_str().unwrap(), "list", &nobody],
            &[],
        )
        .await;
        assert_eq!(code, Some(2), "{text}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{text}: {}", r.stderr);
        assert!(r.stderr.contains("admin.toml"), "{}", r.stderr);
        assert!(!r.stderr.contains("nothing listens"), "{}", r.stderr);
    }
    let (code, r) = admin_bare(
        dir.path(),
        &["--config", "missing.toml", "list", &nobody],
        &[],
    )
    .await;
    assert_eq!(code, Some(2));
    assert!(
        r.stderr.contains("missing.toml: cannot read it"),
        "{}",
        r.stderr
    );
    // The example shipped in deploy/ is a valid file for this tool: what
    // fails is reading the token file it names, not the file itself.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tritontube-admin.toml");
    let (code, r) = admin_bare(
        dir.path(),
        &["--config", example.to_str().unwrap(), "list", &nobody],
        &[],
    )
    .await;
    assert_ne!(code, Some(0));
    assert!(!r.stderr.contains("config file"), "{}", r.stderr);
    assert!(
        r.stderr.contains("/etc/tritontube/admin-token"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_watch_name_a_change_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let c = cluster(dir.path(), &stop).await;
    for args in [
        ["cancel", c.admin.as_str(), "c1-00000000"],
        ["watch", c.admin.as_str(), "c1-00000000"],
    ] {
        let r = admin(dir.path(), &args).await;
        assert!(!r.ok, "{args:?} fails");
        assert!(
            r.stderr.contains("not found: ring change c1-00000000"),
            "{args:?}: {}",
            r.stderr
        );
    }
    stop.cancel();
}
