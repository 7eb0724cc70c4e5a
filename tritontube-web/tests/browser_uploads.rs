//! Uploads from the browser as people make them: on a slow link (12 Mbit/s,
//! as a user on a poor connection has) while another video is processing
//! and the list updates itself (the page is never reloaded, the progress
//! bar moves through the upload, and the video arrives with its typed id,
//! title and description), and by dropping a file on the page.

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use serde_json::Value;

/// 12 Mbit/s in bytes per second.
const LINK: u64 = 12_000_000 / 8;

#[tokio::test(flavor = "multi_thread")]
async fn a_form_upload_on_a_slow_link_completes_while_another_video_processes() {
    let root = tempfile::tempdir().unwrap();
    let node = start_node(root.path(), free_port()).await;
    let web = start_web(
        root.path(),
        free_port(),
        free_port(),
        std::slice::from_ref(&node.addr),
        &["--replicas", "1", "--workers", "1"],
    )
    .await;
    let busy = clip(root.path(), "busy.mp4", 20, "640x360", false);
    assert_eq!(upload(&web.addr, &busy).await.status(), 303);
    // About 6 MB: some 4 s on the slow link.
    let big = root.path().join("big.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc2=size=1280x720:rate=30:duration=6")
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-b:v", "8M"])
        .args(["-pix_fmt", "yuv420p", "-f", "mp4"])
        .arg(&big)
        .status()
        .unwrap();
    assert!(made.success());
    let size = std::fs::metadata(&big).unwrap().len();
    assert!(size > 3 * LINK, "big enough to take a while: {size} bytes");

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    browser.goto(&format!("http://{}/", web.addr)).await;
    browser.eval("window.sameDocument = 42; return true;").await;
    browser.throttle(LINK, 40).await;
    browser.type_into("#upload-id", "slow-clip").await;
    browser.type_into("#upload-title", "Harbour at dusk").await;
    browser
        .type_into("#upload-description", "Sent over a slow hotel connection")
        .await;
    browser
        .type_into("#upload-file", &big.display().to_string())
        .await;
    let started = Instant::now();
    browser.click("#upload button[type=submit]").await;

    // The bar moves through the upload; the page stays the same document.
    let mut seen = Vec::new();
    let accepted = loop {
        let st = browser
            .eval("const b = document.querySelector('#uploads li progress'); const s = document.querySelector('#uploads li .status'); return {same: window.sameDocument === 42, value: b ? b.value : null, max: b ? b.max : null, status: s ? s.textContent : null};")
            .await;
        assert_eq!(st["same"], true, "the page was reloaded: {st}");
        if let (Some(v), Some(m)) = (st["value"].as_f64(), st["max"].as_f64())
            && m > 0.0
        {
            seen.push(v / m);
        }
        let status = st["status"].as_str().unwrap_or_default().to_string();
        assert!(!status.contains("refused"), "{status}");
        if status.starts_with("Uploaded as") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload never finished: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    eprintln!("{size} bytes at {LINK} B/s took {took:?}: {accepted}");
    assert!(
        took >= Duration::from_secs_f64(size as f64 / LINK as f64 * 0.8),
        "the link really was slow ({took:?})"
    );
    let midway = seen.iter().filter(|f| **f > 0.05 && **f < 0.95).count();
    assert!(midway >= 3, "the bar moved through the upload: {seen:?}");
    assert!(accepted.contains("slow-clip"), "{accepted}");

    // It reaches ready in the list without a reload, with its words.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = browser
            .eval("const t = document.querySelector('#videos li[data-id=\"slow-clip\"]'); return {same: window.sameDocument === 42, text: t ? t.textContent : null};")
            .await;
        assert_eq!(st["same"], true, "the page was reloaded: {st}");
        let text = st["text"].as_str().unwrap_or_default();
        if text.contains("Harbour at dusk")
            && !text.contains("processing")
            && !text.contains("uploaded")
        {
            break;
        }
        assert!(Instant::now() < deadline, "never ready in the list: {st}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let v: Value = reqwest::get(format!("http://{}/api/videos/slow-clip", web.addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["state"], "ready", "{v}");
    assert_eq!(v["title"], "Harbour at dusk");
    assert_eq!(v["description"], "Sent over a slow hotel connection");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_dropped_on_the_page_uploads_like_a_chosen_one() {
    let root = tempfile::tempdir().unwrap();
    let node = start_node(root.path(), free_port()).await;
    let web = start_web(
        root.path(),
        free_port(),
        free_port(),
        std::slice::from_ref(&node.addr),
        &["--replicas", "1"],
    )
    .await;
    let dropped = clip(root.path(), "dropped.mp4", 2, "320x240", false);
    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    browser.goto(&format!("http://{}/", web.addr)).await;
    browser.eval("window.sameDocument = 42; return true;").await;
    // WebDriver cannot drag a file from the desktop: the file comes in
    // through the input, and the page gets a real drop event carrying it
    // (the input emptied first, so only the drop can upload it).
    browser
        .type_into("#upload-file", &dropped.display().to_string())
        .await;
    let dropped_files = browser
        .eval(
            "const input = document.getElementById('upload-file');
             const dt = new DataTransfer(); dt.items.add(input.files[0]);
             document.getElementById('upload').reset();
             const ev = new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true});
             document.getElementById('drop').dispatchEvent(ev);
             return {files: dt.files.length, input: input.files.length, handled: ev.defaultPrevented};",
        )
        .await;
    assert_eq!(dropped_files["files"], 1, "{dropped_files}");
    assert_eq!(dropped_files["input"], 0, "{dropped_files}");
    assert_eq!(
        dropped_files["handled"], true,
        "the page took the drop: {dropped_files}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let st = browser
            .eval("const s = document.querySelector('#uploads li .status'); return {same: window.sameDocument === 42, status: s ? s.textContent : null};")
            .await;
        assert_eq!(st["same"], true, "{st}");
        let status = st["status"].as_str().unwrap_or_default();
        assert!(
            !status.contains("refused") && !status.contains("failed"),
            "{status}"
        );
        if let Some(rest) = status.strip_prefix("Uploaded as “") {
            break rest.split('”').next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the dropped file never uploaded: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(id.starts_with("dropped"), "named after the file: {id}");
    let v = wait_ready(&web.addr, &id).await;
    assert_eq!(v["state"], "ready", "{v}");
    browser.quit().await;
}
