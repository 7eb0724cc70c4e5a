//! Resumable uploads (tus 1.0.0 at `/files/`) against the real web server
//! binary, a real storage node and real ffmpeg: a PATCH whose connection is
//! killed halfway keeps what arrived, survives a restart of the server, and
//! resumes to a ready video made of identical bytes; every bad request is
//! refused with its status and changes nothing; unfinished uploads expire
//! and are swept; and the home page in headless Chromium uploads through
//! tus-js-client.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use common::browser::Browser;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

const TUS: &str = "1.0.0";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn start(root: &Path, extra: &[&str]) -> (Proc, Proc) {
    let node = start_node(root, free_port()).await;
    let mut args = vec!["--replicas", "1"];
    args.extend_from_slice(extra);
    let web = start_web(
        root,
        free_port(),
        free_port(),
        std::slice::from_ref(&node.addr),
        &args,
    )
    .await;
    (node, web)
}

/// Where the web server at `http` keeps its unfinished tus uploads.
fn tus_dir(root: &Path, http: &str) -> PathBuf {
    let port = http.rsplit(':').next().unwrap();
    root.join(format!("web-data-{port}")).join("tus")
}

/// A request to `url` (`/files/...`) on `http`, with `Tus-Resumable` set.
fn tus(http: &str, method: &str, url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("http://{http}{url}"),
        )
        .header("tus-resumable", TUS)
}

/// Creates an upload of `length` bytes; returns its path (`/files/<key>`).
async fn create(http: &str, length: usize, metadata: &str) -> String {
    let r = tus(http, "POST", "/files/")
        .header("upload-length", length.to_string())
        .header("upload-metadata", metadata)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(r.headers()["tus-resumable"], TUS);
    assert!(r.headers().contains_key("upload-expires"));
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn patch(http: &str, url: &str, offset: usize, body: Vec<u8>) -> reqwest::Response {
    tus(http, "PATCH", url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// `Upload-Offset` of a HEAD, or the status if it is not 200.
async fn offset(http: &str, url: &str) -> Result<usize, StatusCode> {
    let r = tus(http, "HEAD", url).send().await.unwrap();
    if r.status() != StatusCode::OK {
        return Err(r.status());
    }
    assert_eq!(r.headers()["cache-control"], "no-store");
    Ok(r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap())
}

/// Sends a PATCH announcing all of `whole` from `offset` but only `sent`
/// bytes of it, then drops the connection, as a client whose network
/// failed mid-upload.
async fn cut_patch(http: &str, url: &str, offset: usize, whole: &[u8], sent: usize) {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "PATCH {url} HTTP/1.1\r\nHost: {http}\r\nTus-Resumable: {TUS}\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
         Content-Length: {}\r\n\r\n",
        whole.len() - offset
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&whole[offset..offset + sent]).await.unwrap();
    s.flush().await.unwrap();
    // Give the server the bytes before the connection goes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
}

fn sha256_hex(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn videos(http: &str) -> Vec<Value> {
    let v: Value = reqwest::get(format!("http://{http}/api/videos"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_upload_resumes_across_a_restart_with_identical_bytes() {
    let root = tempfile::tempdir().unwrap();
    let (node, mut web) = start(root.path(), &[]).await;
    let http = web.addr.clone();
    let source = std::fs::read(clip(root.path(), "clip.mp4", 3, "320x240", true)).unwrap();
    let len = source.len();

    let r = reqwest::Client::new()
        .request(Method::OPTIONS, format!("http://{http}/files/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["tus-version"], TUS);
    assert_eq!(
        r.headers()["tus-extension"],
        "creation,termination,expiration"
    );
    assert!(
        r.headers()["tus-max-size"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );

    let meta = format!("filename {},title {}", b64("clip.mp4"), b64("Resumed clip"));
    let url = create(&http, len, &meta).await;
    let key = url.strip_prefix("/files/").unwrap().to_string();
    assert_eq!(offset(&http, &url).await, Ok(0));

    // Half the file, then the connection dies.
    let half = len / 2;
    cut_patch(&http, &url, 0, &source, half).await;
    assert_eq!(offset(&http, &url).await, Ok(half), "what arrived is kept");
    let stored = std::fs::read(tus_dir(root.path(), &http).join(format!("{key}.bin"))).unwrap();
    assert_eq!(stored, source[..half], "the bytes kept are the bytes sent");

    // The server restarts: the upload is still there, at the same offset.
    web.kill9();
    let port = |a: &str| a.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let admin = free_port();
    let _restarted = start_web(
        root.path(),
        port(&http),
        admin,
        std::slice::from_ref(&node.addr),
        &["--replicas", "1"],
    )
    .await;
    assert_eq!(offset(&http, &url).await, Ok(half), "kept across a restart");

    // A PATCH from the wrong offset is refused and changes nothing.
    let r = patch(&http, &url, half - 1, source[half - 1..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(offset(&http, &url).await, Ok(half));

    // A quarter more, cut again, then the rest.
    cut_patch(&http, &url, half, &source, len / 4).await;
    let at = offset(&http, &url).await.unwrap();
    assert_eq!(at, half + len / 4);
    let r = patch(&http, &url, at, source[at..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["upload-offset"], len.to_string().as_str());
    assert_eq!(
        r.headers()["tt-upload-sha256"],
        sha256_hex(&source).as_str(),
        "ingest received exactly the source's bytes"
    );
    let id = r.headers()["tt-video-id"].to_str().unwrap().to_string();
    assert_eq!(id, "Resumed-clip", "the id is derived from the title");

    let v = wait_ready(&http, &id).await;
    assert_eq!(v["title"], "Resumed clip");
    let secs = v["duration_secs"].as_f64().unwrap();
    assert!((secs - 3.0).abs() < 0.2, "{v}");

    // Finished: a later HEAD (and a repeated last PATCH) say what it became.
    let r = tus(&http, "HEAD", &url).send().await.unwrap();
    assert_eq!(r.headers()["upload-offset"], len.to_string().as_str());
    assert_eq!(r.headers()["tt-video-id"], id.as_str());
    let r = patch(&http, &url, len, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["tt-video-id"], id.as_str());
    assert_eq!(videos(&http).await.len(), 1, "one upload, one video");

    // A server that stopped after syncing an upload's last byte, before
    // handing it to ingest, leaves a complete file: the next HEAD hands it
    // over and names the video.
    let meta = format!("filename {},title {}", b64("clip.mp4"), b64("Second"));
    let url2 = create(&http, len, &meta).await;
    let key2 = url2.strip_prefix("/files/").unwrap();
    std::fs::write(
        tus_dir(root.path(), &http).join(format!("{key2}.bin")),
        &source,
    )
    .unwrap();
    let r = tus(&http, "HEAD", &url2).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["upload-offset"], len.to_string().as_str());
    assert_eq!(r.headers()["tt-video-id"], "Second");
    assert_eq!(
        r.headers()["tt-upload-sha256"],
        sha256_hex(&source).as_str()
    );
    wait_ready(&http, "Second").await;
    assert_eq!(videos(&http).await.len(), 2);
    assert!(
        !tus_dir(root.path(), &http)
            .join(format!("{key}.bin"))
            .exists(),
        "a finished upload's bytes are not kept twice"
    );
}

/// The JSON `error` of a refusal, checked to carry `status`.
async fn refused(r: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["tus-resumable"], TUS);
    let body: Value = r.json().await.unwrap();
    body["error"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web) = start(root.path(), &["--max-upload-mb", "1"]).await;
    let http = web.addr.clone();
    let dir = tus_dir(root.path(), &http);
    let files = || std::fs::read_dir(&dir).unwrap().count();

    // Creation.
    let plain = reqwest::Client::new();
    let r = plain
        .post(format!("http://{http}/files/"))
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["tus-version"], TUS);
    let e = refused(r, StatusCode::PRECONDITION_FAILED).await;
    assert!(e.contains("Tus-Resumable"), "{e}");
    let r = plain
        .post(format!("http://{http}/files/"))
        .header("tus-resumable", "0.2.2")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::PRECONDITION_FAILED).await;
    let r = tus(&http, "POST", "/files/").send().await.unwrap();
    let e = refused(r, StatusCode::BAD_REQUEST).await;
    assert!(e.contains("Upload-Length"), "{e}");
    let r = tus(&http, "POST", "/files/")
        .header("upload-length", (2 * 1024 * 1024).to_string())
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    let r = tus(&http, "POST", "/files/")
        .header("upload-length", "10")
        .header("upload-metadata", "filename ***")
        .send()
        .await
        .unwrap();
    let e = refused(r, StatusCode::BAD_REQUEST).await;
    assert!(e.contains("base64"), "{e}");
    let r = tus(&http, "POST", "/files/")
        .header("upload-length", "10")
        .header("upload-metadata", format!("id {}", b64("no spaces")))
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(files(), 0, "no refused creation leaves a file");

    // PATCH.
    let url = create(&http, 10, &format!("filename {}", b64("x.mp4"))).await;
    let r = patch(&http, &url, 3, b"abc".to_vec()).await;
    let e = refused(r, StatusCode::CONFLICT).await;
    assert!(e.contains("Upload-Offset is 3"), "{e}");
    let r = tus(&http, "PATCH", &url)
        .header("content-type", "application/octet-stream")
        .header("upload-offset", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    let e = refused(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    assert!(e.contains("application/offset+octet-stream"), "{e}");
    let r = plain
        .patch(format!("http://{http}{url}"))
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    refused(r, StatusCode::PRECONDITION_FAILED).await;
    let r = patch(&http, &url, 0, vec![7; 11]).await;
    let e = refused(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(e.contains("Upload-Length"), "{e}");
    assert_eq!(
        offset(&http, &url).await,
        Ok(0),
        "refused PATCHes kept nothing"
    );
    let unknown = format!("/files/{}", "0".repeat(32));
    let r = patch(&http, &unknown, 0, b"abc".to_vec()).await;
    refused(r, StatusCode::NOT_FOUND).await;
    assert_eq!(
        offset(&http, "/files/..%2Fmetadata.db").await,
        Err(StatusCode::NOT_FOUND)
    );
    assert_eq!(offset(&http, &unknown).await, Err(StatusCode::NOT_FOUND));

    // A complete upload that is not a video: refused, and gone.
    let r = patch(&http, &url, 0, b"not video!".to_vec()).await;
    let e = refused(r, StatusCode::BAD_REQUEST).await;
    assert!(!e.is_empty());
    assert_eq!(offset(&http, &url).await, Err(StatusCode::NOT_FOUND));

    // Termination.
    let url = create(&http, 10, "").await;
    assert_eq!(patch(&http, &url, 0, b"abc".to_vec()).await.status(), 204);
    let r = tus(&http, "DELETE", &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&http, &url).await, Err(StatusCode::NOT_FOUND));
    let r = tus(&http, "DELETE", &url).send().await.unwrap();
    refused(r, StatusCode::NOT_FOUND).await;
    assert_eq!(files(), 0, "nothing of a terminated upload is left");
    assert!(videos(&http).await.is_empty(), "no refusal made a video");
}

#[tokio::test(flavor = "multi_thread")]
async fn unfinished_uploads_expire_and_are_swept() {
    let root = tempfile::tempdir().unwrap();
    // 0.0005 hours: 1.8 seconds.
    let (_node, web) = start(root.path(), &["--tus-expiry-hours", "0.0005"]).await;
    let http = web.addr.clone();
    let url = create(&http, 100, &format!("filename {}", b64("slow.mp4"))).await;
    let r = patch(&http, &url, 0, vec![1; 40]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let key = url.strip_prefix("/files/").unwrap();
    let data = tus_dir(root.path(), &http).join(format!("{key}.bin"));
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 40);

    // The background sweep removes it without any request asking.
    let deadline = Instant::now() + Duration::from_secs(15);
    while data.exists() {
        assert!(
            Instant::now() < deadline,
            "the expired upload was not swept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        std::fs::read_dir(tus_dir(root.path(), &http))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(offset(&http, &url).await, Err(StatusCode::NOT_FOUND));
    let r = patch(&http, &url, 40, vec![1; 60]).await;
    refused(r, StatusCode::NOT_FOUND).await;
    assert!(videos(&http).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_home_page_uploads_through_tus() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web) = start(root.path(), &[]).await;
    let clip = clip(root.path(), "page.mp4", 2, "320x240", false);
    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    browser.goto(&format!("http://{}/", web.addr)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser
        .eval("return typeof window.tus === 'object' && window.tus.isSupported;")
        .await
        != Value::Bool(true)
    {
        assert!(Instant::now() < deadline, "tus-js-client did not load");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.type_into("#upload-title", "Through tus").await;
    browser
        .type_into("#upload-file", &clip.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let s = browser
            .eval("const li = document.querySelector('#uploads li'); return li ? [li.dataset.id || '', li.querySelector('.status').textContent] : null;")
            .await;
        if let Some(id) = s[0].as_str().filter(|i| !i.is_empty()) {
            assert!(
                s[1].as_str()
                    .unwrap()
                    .starts_with("Uploaded as “Through-tus”"),
                "{s}"
            );
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the upload did not finish: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(id, "Through-tus");
    let v = wait_ready(&web.addr, &id).await;
    assert_eq!(v["title"], "Through tus");
    let port = web.addr.rsplit(':').next().unwrap();
    let log = std::fs::read_to_string(root.path().join(format!("web-{port}.log"))).unwrap();
    assert!(
        log.contains("resumable upload finished and handed to ingest"),
        "the page's upload went through /files/"
    );
    let expected = sha256_hex(&std::fs::read(&clip).unwrap());
    assert!(
        log.contains(&expected),
        "the page sent the file's very bytes"
    );

    // Cancel terminates: the upload is created, its PATCH held back by the
    // page (as a slow network would), and Cancel removes it on the server.
    browser.eval(HOLD_PATCHES).await;
    browser.type_into("#upload-title", "Cancelled one").await;
    browser
        .type_into("#upload-file", &clip.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    let dir = tus_dir(root.path(), &web.addr);
    let unfinished = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "bin")
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while unfinished() == 0 {
        assert!(Instant::now() < deadline, "the page created no upload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.click("#uploads li:nth-child(2) button").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while unfinished() > 0 {
        assert!(
            Instant::now() < deadline,
            "Cancel did not terminate the upload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = browser
        .eval("return document.querySelector('#uploads li:nth-child(2) .status').textContent;")
        .await;
    assert_eq!(status, "Cancelled.");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ids: Vec<Value> = videos(&web.addr)
        .await
        .iter()
        .map(|v| v["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [Value::from("Through-tus")],
        "a cancelled upload makes no video"
    );
    browser.quit().await;
}

/// Holds every PATCH the page sends for three seconds (dropped if the
/// request is aborted meanwhile).
const HOLD_PATCHES: &str = "
    const open = XMLHttpRequest.prototype.open;
    const send = XMLHttpRequest.prototype.send;
    const abort = XMLHttpRequest.prototype.abort;
    XMLHttpRequest.prototype.open = function (method, ...rest) {
        this.heldMethod = method;
        return open.call(this, method, ...rest);
    };
    XMLHttpRequest.prototype.abort = function () {
        this.heldAborted = true;
        return abort.call(this);
    };
    XMLHttpRequest.prototype.send = function (body) {
        if (this.heldMethod !== 'PATCH') return send.call(this, body);
        setTimeout(() => { if (!this.heldAborted) send.call(this, body); }, 3000);
    };
    return true;";
