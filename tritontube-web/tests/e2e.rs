//! End to end, as a person would: three storage node processes, the web
//! server (SQLite, network content, two replicas), a clip made by ffmpeg,
//! uploaded over HTTP, then played by headless Chromium through dash.js.

mod common;

use common::browser::{Browser, screenshots};
use common::*;
use serde_json::json;

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

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    for id in ["with-audio", "silent"] {
        browser
            .goto(&format!("http://{}/videos/{id}", web.addr))
            .await;
        let state = browser.wait_playing(id).await;
        assert!(
            state["w"].as_u64().unwrap() > 0,
            "{id}: videoWidth > 0: {state}"
        );
        assert!(
            state["q"].as_u64().unwrap() >= 2,
            "{id}: the quality menu lists the ladder: {state}"
        );
        browser
            .screenshot(&screenshots().join(format!("watch-{id}.png")))
            .await;
    }
    browser.goto(&format!("http://{}/", web.addr)).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    browser.screenshot(&screenshots().join("home.png")).await;
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
