//! End to end, as a person would: three storage node processes, the web
//! server (SQLite, network content, two replicas), a clip made by ffmpeg,
//! uploaded over HTTP, then played by headless Chromium through dash.js.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

/// A WebDriver session on chromedriver, spoken to over its HTTP protocol.
struct Browser {
    driver: Proc,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    async fn start(profile: &std::path::Path) -> Browser {
        let port = free_port();
        // Its own process group, so that dropping it also stops the
        // browser it started.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        let driver = Proc {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        wait_port(&driver.addr).await;
        let base = format!("http://{}", driver.addr);
        let http = reqwest::Client::new();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "url", Some(json!({"url": url})))
            .await;
    }

    async fn eval(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self, to: &std::path::Path) {
        let v = self.cmd(reqwest::Method::GET, "screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Browser {
    /// Ends the session: chromedriver closes the browser.
    async fn quit(&self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.child.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
        self.driver.kill9();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_then_play_in_chromium() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(start_node(root.path(), free_port()).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let web = start_web(
        root.path(),
        free_port(),
        free_port(),
        &addrs,
        &["--replicas", "2"],
    )
    .await;

    // One clip with sound, one without.
    let with_audio = clip(root.path(), "with-audio.mp4", 6, "640x360", true);
    let silent = clip(root.path(), "silent.mp4", 6, "640x360", false);
    for c in [&with_audio, &silent] {
        let r = upload(&web.addr, c).await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    }
    let v = wait_ready(&web.addr, "with-audio").await;
    assert_eq!(v["has_audio"], true);
    let s = wait_ready(&web.addr, "silent").await;
    assert_eq!(s["has_audio"], false);

    // Every file is on exactly two of the three nodes.
    for (id, v) in [("with-audio", &v), ("silent", &s)] {
        for f in files_of(&web.addr, id, v).await {
            let holders = (0..3)
                .filter(|i| {
                    root.path()
                        .join(format!("node-{}", addrs[*i].rsplit(':').next().unwrap()))
                        .join(id)
                        .join(&f)
                        .is_file()
                })
                .count();
            assert_eq!(holders, 2, "{id}/{f} has two replicas");
        }
    }

    let browser = Browser::start(&root.path().join("profile")).await;
    for id in ["with-audio", "silent"] {
        browser
            .goto(&format!("http://{}/videos/{id}", web.addr))
            .await;
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut first_time = None;
        let state = loop {
            let st = browser
                .eval("const v = document.querySelector('video'); return {t: v ? v.currentTime : -1, w: v ? v.videoWidth : 0, err: window.playerError, q: document.querySelectorAll('#quality option').length};")
                .await;
            let t = st["t"].as_f64().unwrap_or(-1.0);
            assert!(
                st["err"].is_null(),
                "{id}: the player reported an error: {st}"
            );
            if t > 0.0 && first_time.is_none() {
                first_time = Some(t);
            }
            if let Some(t0) = first_time
                && t > t0 + 0.5
            {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: playback did not advance: {st}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(
            state["w"].as_u64().unwrap() > 0,
            "{id}: videoWidth > 0: {state}"
        );
        assert!(
            state["q"].as_u64().unwrap() >= 2,
            "{id}: the quality menu lists the ladder: {state}"
        );
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
        std::fs::create_dir_all(&shots).unwrap();
        browser
            .screenshot(&shots.join(format!("watch-{id}.png")))
            .await;
    }
    browser.goto(&format!("http://{}/", web.addr)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
    browser.screenshot(&shots.join("home.png")).await;
    let titles = browser
        .eval("return Array.from(document.querySelectorAll('.grid .t')).map(e => e.textContent);")
        .await;
    assert_eq!(
        titles,
        json!(["silent.mp4", "with-audio.mp4"]),
        "newest first"
    );
    browser.quit().await;
}
