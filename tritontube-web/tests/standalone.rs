//! The binaries alone: `tritontube-web`, `tritontube-node` and
//! `tritontube-admin` copied into an empty directory, with no
//! `node_modules` anywhere above it, started there, serve a video that plays
//! in headless Chromium (dash.js is built into `tritontube-web`), and the
//! favicon.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::browser::{Browser, screenshots};
use common::*;

/// The three binaries copied into `dir`, which must have no `node_modules`
/// in it or above it.
fn binaries_alone(dir: &Path) -> [PathBuf; 3] {
    let built = Path::new(env!("CARGO_BIN_EXE_tritontube-web"));
    let bins = ["tritontube-web", "tritontube-node", "tritontube-admin"].map(|name| {
        let from = built.with_file_name(name);
        assert!(
            from.is_file(),
            "{} missing: run `cargo build --workspace` first",
            from.display()
        );
        let to = dir.join(name);
        std::fs::copy(&from, &to).unwrap();
        to
    });
    for d in dir.ancestors() {
        assert!(
            !d.join("node_modules").exists(),
            "the test needs a directory with no node_modules above it; {} has one",
            d.display()
        );
    }
    bins
}

fn log(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binaries_alone_serve_a_playing_video_and_a_favicon() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bin");
    std::fs::create_dir(&dir).unwrap();
    let [web_bin, node_bin, admin_bin] = binaries_alone(&dir);

    let node_port = free_port();
    let node = Proc {
        child: Command::new(&node_bin)
            .current_dir(&dir)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &node_port.to_string(),
                "node",
            ])
            .stdout(Stdio::null())
            .stderr(log(root.path(), "node"))
            .spawn()
            .unwrap(),
        addr: format!("127.0.0.1:{node_port}"),
    };
    wait_port(&node.addr).await;
    std::fs::create_dir(dir.join("data")).unwrap();
    let (http, admin) = (free_port(), free_port());
    let web = Proc {
        child: Command::new(&web_bin)
            .current_dir(&dir)
            .args(["--host", "127.0.0.1", "--port", &http.to_string()])
            .args(["--replicas", "1", "--data-dir", "data", "--public-uploads"])
            .args(["sqlite", "data/metadata.db", "nw"])
            .arg(format!("127.0.0.1:{admin},{}", node.addr))
            .env("TRITONTUBE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log(root.path(), "web"))
            .spawn()
            .unwrap(),
        addr: format!("127.0.0.1:{http}"),
    };
    wait_port(&web.addr).await;
    wait_port(&format!("127.0.0.1:{admin}")).await;

    let listed = Command::new(&admin_bin)
        .current_dir(&dir)
        .args(["list", &format!("127.0.0.1:{admin}")])
        .env("TRITONTUBE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && out.contains(&format!("  - {}", node.addr)),
        "tritontube-admin list: {out} {}",
        String::from_utf8_lossy(&listed.stderr)
    );

    let favicon = reqwest::get(format!("http://{}/favicon.ico", web.addr))
        .await
        .unwrap();
    assert_eq!(favicon.status(), 200);
    assert_eq!(favicon.headers()["content-type"], "image/x-icon");
    assert_eq!(&favicon.bytes().await.unwrap()[..4], &[0, 0, 1, 0]);

    let c = clip(root.path(), "alone.mp4", 4, "640x360", true);
    let r = upload(&web.addr, &c).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    wait_ready(&web.addr, "alone").await;

    let browser = Browser::start(&root.path().join("profile"), 1280, 800).await;
    browser
        .goto(&format!("http://{}/videos/alone", web.addr))
        .await;
    let st = browser.wait_playing("alone").await;
    assert!(st["w"].as_u64().unwrap() > 0, "{st}");
    browser
        .screenshot(&screenshots().join("watch-standalone.png"))
        .await;
    browser.quit().await;
}

/// `--assets DIR` serves dash.js from DIR instead of the copy built in, and
/// a DIR without it stops the server with a message saying so.
#[tokio::test(flavor = "multi_thread")]
async fn the_assets_flag_overrides_the_built_in_player() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bin");
    std::fs::create_dir(&dir).unwrap();
    let [web_bin, ..] = binaries_alone(&dir);
    let assets = root.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    std::fs::write(assets.join("dash.all.min.js"), "/* from --assets */").unwrap();

    let http = free_port();
    let web = Proc {
        child: Command::new(&web_bin)
            .current_dir(&dir)
            .args(["--host", "127.0.0.1", "--port", &http.to_string()])
            .args(["--data-dir", "data", "--assets"])
            .arg(&assets)
            .stdout(Stdio::null())
            .stderr(log(root.path(), "web"))
            .spawn()
            .unwrap(),
        addr: format!("127.0.0.1:{http}"),
    };
    wait_port(&web.addr).await;
    let page = reqwest::get(format!("http://{}/static/dash.all.min.js", web.addr))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "/* from --assets */");
    drop(web);

    let out = Command::new(&web_bin)
        .current_dir(&dir)
        .args(["--port", &free_port().to_string(), "--data-dir", "data2"])
        .args(["--assets", "no-such-dir"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--assets") && err.contains("dash.all.min.js"),
        "{err}"
    );
}
