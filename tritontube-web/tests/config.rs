//! The real `tritontube-web` and `tritontube-node` binaries started from
//! TOML config files: settings taken from the file, a flag overriding one,
//! the environment variable naming the file, the effective configuration
//! printed, and bad files stopping the start with a clear error.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Proc, free_port, node_bin, wait_port};
use tritontube_core::admin::AdminClient;

const WEB: &str = env!("CARGO_BIN_EXE_tritontube-web");

fn write(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `bin` with `args` to its end (10 s at most: a binary that starts
/// serving instead of refusing is a failure), returning its exit code,
/// standard output and standard error.
async fn finish(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let child = tokio::process::Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("TRITONTUBE_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} kept running", bin.display()))
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn web_and_node_run_from_config_files_and_a_flag_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (node_port, file_port, http, admin) = (free_port(), free_port(), free_port(), free_port());

    // The node: everything, its directory included, from the file.
    let node_toml = root.join("node.toml");
    let node_dir = root.join("node-files");
    write(
        &node_toml,
        &format!(
            "host = \"127.0.0.1\"\nport = {node_port}\ncapacity-bytes = \"10M\"\nbase-dir = {:?}\n",
            node_dir.display().to_string()
        ),
        0o644,
    );
    let node = std::process::Command::new(node_bin())
        .args(["--config", node_toml.to_str().unwrap()])
        .stderr(std::fs::File::create(root.join("node.log")).unwrap())
        .spawn()
        .unwrap();
    let node = Proc {
        child: node,
        addr: format!("127.0.0.1:{node_port}"),
    };
    wait_port(&node.addr).await;
    assert!(
        node_dir.join(".tritontube").is_dir(),
        "the node uses base-dir from the file"
    );

    // The web server: stores, limits and the admin token from the file
    // (readable by every user, which is allowed but warned about); the
    // port from the command line instead of the file's.
    let web_toml = root.join("web.toml");
    write(
        &web_toml,
        &format!(
            "host = \"127.0.0.1\"\nport = {file_port}\nmax-upload-mb = 1\nreplicas = 1\n\
             public-uploads = true\n\
             data-dir = {:?}\nadmin-token = \"from-the-file\"\n\
             metadata = \"sqlite:{}\"\ncontent = \"nw:127.0.0.1:{admin},{}\"\n",
            root.join("web-data").display().to_string(),
            root.join("metadata.db").display(),
            node.addr,
        ),
        0o644,
    );
    let web = std::process::Command::new(WEB)
        .args(["--port", &http.to_string()])
        .env("TRITONTUBE_WEB_CONFIG", &web_toml)
        .env_remove("TRITONTUBE_ADMIN_TOKEN")
        .stderr(std::fs::File::create(root.join("web.log")).unwrap())
        .spawn()
        .unwrap();
    let web = Proc {
        child: web,
        addr: format!("127.0.0.1:{http}"),
    };
    wait_port(&web.addr).await;
    wait_port(&format!("127.0.0.1:{admin}")).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", file_port))
            .await
            .is_err(),
        "the file's port must not be used when --port is given"
    );

    // The cluster is the file's, and the token is the file's.
    let client = AdminClient::connect(&format!("127.0.0.1:{admin}"), Some("from-the-file".into()))
        .await
        .unwrap();
    assert_eq!(client.list().await.unwrap(), vec![node.addr.clone()]);
    let status = client.status().await.unwrap();
    assert_eq!(status.replicas, 1);

    // max-upload-mb = 1 and public-uploads from the file: an anonymous
    // 2 MiB upload is refused for its size (413), not for want of an
    // account (401).
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![0u8; 2 << 20]).file_name("big.mp4"),
    );
    let r = common::post_form(&web.addr, form).await;
    assert_eq!(r.status(), 413, "{:?}", r.text().await);
    // The front page states the limit.
    let page = reqwest::get(format!("http://{}/", web.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("1 MiB") || page.contains("1 MB"),
        "limit not shown"
    );

    let log = std::fs::read_to_string(root.join("web.log")).unwrap();
    assert!(
        log.contains("every user can read it"),
        "no warning for a world-readable secret:\n{log}"
    );
    drop(web);
    drop(node);
}

#[tokio::test(flavor = "multi_thread")]
async fn print_config_shows_the_merged_settings_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("web.toml");
    write(
        &toml_path,
        "port = 9000\nmax-upload-mb = 100\nadmin-token = \"hush\"\nmetadata = \"etcd:e1:2379,e2:2379\"\n",
        0o600,
    );
    let (code, out, err) = finish(
        Path::new(WEB),
        &[
            "--config",
            toml_path.to_str().unwrap(),
            "--print-config",
            "--port",
            "9100",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!out.contains("hush"), "{out}");
    let effective: toml::Table = out.parse().unwrap();
    assert_eq!(effective["port"].as_integer(), Some(9100));
    assert_eq!(effective["max-upload-mb"].as_integer(), Some(100));
    assert_eq!(effective["cache-mb"].as_integer(), Some(256));
    assert_eq!(effective["metadata"].as_str(), Some("etcd:e1:2379,e2:2379"));
    assert_eq!(effective["content"].as_str(), Some("fs:./data/content"));
    assert!(out.contains("# admin-token is set (not shown)"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_config_file_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("bad.toml");
    let p = path.to_str().unwrap();
    let web_cases: [(&str, &[&str]); 5] = [
        (
            "max-uplaod-mb = 1",
            &[
                "unknown key `max-uplaod-mb`",
                "did you mean `max-upload-mb`",
            ],
        ),
        (
            "max-upload-mb = \"100\"",
            &["`max-upload-mb` must be an integer, not a string"],
        ),
        (
            "health-interval = 0",
            &["`health-interval` = 0 is not valid", "positive"],
        ),
        ("metadata = \"mysql:db\"", &["`metadata`", "unknown kind"]),
        ("port = 80\nport = 81", &["not valid TOML", "line 2"]),
    ];
    for (text, says) in web_cases {
        write(&path, &format!("port = {port}\n{text}\n"), 0o600);
        let (code, _, err) = finish(Path::new(WEB), &["--config", p], &[]).await;
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains("bad.toml"), "{text}: {err}");
        for s in says {
            assert!(err.contains(s), "{text}: expected {s:?} in {err}");
        }
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "a refused configuration must not listen"
    );
    // The node: a wrong type, and a missing file.
    write(&path, "port = 8090.5\nbase-dir = \"n\"\n", 0o600);
    let (code, _, err) = finish(&node_bin(), &["--config", p], &[]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`port` must be an integer, not a float"),
        "{err}"
    );
    let missing = dir.path().join("missing.toml");
    let (code, _, err) = finish(
        &node_bin(),
        &[],
        &[("TRITONTUBE_NODE_CONFIG", missing.to_str().unwrap())],
    )
    .await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("missing.toml: cannot read it"), "{err}");
}
