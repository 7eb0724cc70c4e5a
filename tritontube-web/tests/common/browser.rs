//! Headless Chromium, driven through chromedriver's WebDriver protocol over
//! HTTP: start it at a window size, open pages, run scripts, take
//! screenshots, and wait for a video to really play.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::{Proc, free_port, wait_port};

/// A WebDriver session on chromedriver. Dropping it kills chromedriver and
/// the browser it started.
pub struct Browser {
    driver: Proc,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// Headless Chromium with a `width`×`height` window and its profile in
    /// `profile`.
    pub async fn start(profile: &Path, width: u32, height: u32) -> Browser {
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
                         "--autoplay-policy=no-user-gesture-required", format!("--window-size={width},{height}"),
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

    /// Opens `url` (and waits for it to load).
    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "url", Some(json!({"url": url})))
            .await;
    }

    /// Runs `script` in every page opened from now on, before the page's
    /// own scripts (Chromium's `Page.addScriptToEvaluateOnNewDocument`):
    /// to take a browser feature away, say.
    pub async fn before_each_page(&self, script: &str) {
        let params = json!({"source": script});
        let body = json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": params});
        let r = self
            .cmd(reqwest::Method::POST, "goog/cdp/execute", Some(body))
            .await;
        assert!(r.get("identifier").is_some(), "script not added: {r}");
    }

    /// Makes the browser's link slow: `bytes_per_sec` each way and
    /// `latency_ms` per request (Chromium's network emulation), as on a
    /// poor connection.
    pub async fn throttle(&self, bytes_per_sec: u64, latency_ms: u64) {
        let enable = json!({"cmd": "Network.enable", "params": {}});
        self.cmd(reqwest::Method::POST, "goog/cdp/execute", Some(enable))
            .await;
        let params = json!({
            "offline": false,
            "latency": latency_ms,
            "downloadThroughput": bytes_per_sec,
            "uploadThroughput": bytes_per_sec,
        });
        let body = json!({"cmd": "Network.emulateNetworkConditions", "params": params});
        let r = self
            .cmd(reqwest::Method::POST, "goog/cdp/execute", Some(body))
            .await;
        assert!(r.get("error").is_none(), "throttling refused: {r}");
    }

    /// The value of `script` (a function body: `return ...;`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Resizes the window so that the page's viewport (`innerWidth` ×
    /// `innerHeight`) is `width`×`height`: the window's own bars come on
    /// top, and headless Chromium has some too.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let inner = |v: &Value| (v["w"].as_i64().unwrap(), v["h"].as_i64().unwrap());
        let size = "return {w: innerWidth, h: innerHeight, ow: outerWidth, oh: outerHeight};";
        let v = self.eval(size).await;
        let (iw, ih) = inner(&v);
        let (ow, oh) = (v["ow"].as_i64().unwrap(), v["oh"].as_i64().unwrap());
        self.cmd(
            reqwest::Method::POST,
            "window/rect",
            Some(json!({"width": width as i64 + ow - iw, "height": height as i64 + oh - ih})),
        )
        .await;
        let v = self.eval(size).await;
        assert_eq!(
            inner(&v),
            (width as i64, height as i64),
            "viewport after resizing: {v}"
        );
    }

    /// The WebDriver id of the first element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Types `text` into the element `css` (for a file input: the path of
    /// the file to choose).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("element/{el}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Saves a screenshot of the window to `to` (PNG).
    pub async fn screenshot(&self, to: &Path) {
        let v = self.cmd(reqwest::Method::GET, "screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(to, png).unwrap();
    }

    /// Waits until the page's `<video>` plays: its `currentTime` moves on by
    /// more than half a second, with no error from the player (`dashjs`
    /// must be defined, or the page never starts). Returns what the page
    /// reported last: `t` (current time), `w` (video width), `q` (entries
    /// of the quality menu), `dashjs`, `err`.
    pub async fn wait_playing(&self, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut first_time = None;
        loop {
            let st = self
                .eval("const v = document.querySelector('video'); return {t: v ? v.currentTime : -1, w: v ? v.videoWidth : 0, err: window.playerError, q: document.querySelectorAll('#quality option').length, dashjs: typeof dashjs};")
                .await;
            let t = st["t"].as_f64().unwrap_or(-1.0);
            assert!(
                st["err"].is_null(),
                "{what}: the player reported an error: {st}"
            );
            if t > 0.0 && first_time.is_none() {
                first_time = Some(t);
            }
            if let Some(t0) = first_time
                && t > t0 + 0.5
            {
                assert_eq!(st["dashjs"], "object", "{what}: {st}");
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: playback did not advance: {st}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Ends the session: chromedriver closes the browser.
    pub async fn quit(&self) {
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

/// Where browser tests leave their screenshots: `target/e2e/`.
pub fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
