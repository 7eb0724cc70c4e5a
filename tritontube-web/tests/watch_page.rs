//! The pages in headless Chromium, with a 1280×800 viewport: the upload form
//! works from the browser (course-compatible `POST /upload`), its messages
//! land in a live region, every page has one heading and labelled controls,
//! and a portrait video's player, with its quality menu, fits in the window.

mod common;

use std::time::{Duration, Instant};

use common::browser::{Browser, screenshots};
use common::*;
use serde_json::Value;

/// Headings, labels and live regions of the page open in `browser`.
async fn page_basics(browser: &Browser, what: &str) {
    let st = browser
        .eval(
            "return {h1: document.querySelectorAll('h1').length,
                     unlabelled: Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
                        .filter(e => !e.labels || e.labels.length === 0).map(e => e.outerHTML),
                     home: !!document.querySelector('a[href=\"/\"]')};",
        )
        .await;
    assert_eq!(st["h1"], 1, "{what}: one <h1>: {st}");
    assert_eq!(
        st["unlabelled"].as_array().map(Vec::len),
        Some(0),
        "{what}: every control has a label: {st}"
    );
    assert_eq!(st["home"], true, "{what}: a way home: {st}");
}

/// Where the player and the quality menu are, once the video plays.
async fn layout(browser: &Browser) -> Value {
    browser
        .eval(
            "const box = (e) => { const b = e.getBoundingClientRect();
                 return {top: b.top, bottom: b.bottom, left: b.left, right: b.right, width: b.width, height: b.height}; };
             const v = document.querySelector('video'), q = document.getElementById('quality');
             const qb = q.getBoundingClientRect();
             const hit = document.elementFromPoint(qb.left + qb.width / 2, qb.top + qb.height / 2);
             return {vw: innerWidth, vh: innerHeight, video: box(v), quality: box(q),
                     quality_visible: hit === q || q.contains(hit),
                     column: parseFloat(getComputedStyle(v.parentElement).width)};",
        )
        .await
}

/// `b` is inside the window (half a pixel of rounding allowed).
fn within(b: &Value, l: &Value) -> bool {
    let (vw, vh) = (l["vw"].as_f64().unwrap(), l["vh"].as_f64().unwrap());
    let f = |k: &str| b[k].as_f64().unwrap();
    f("top") >= -0.5 && f("left") >= -0.5 && f("bottom") <= vh + 0.5 && f("right") <= vw + 0.5
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_and_a_portrait_player_in_a_1280x800_viewport() {
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
    let portrait = clip(root.path(), "portrait.mp4", 4, "360x640", false);
    let r = upload(&web.addr, &portrait).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let landscape = clip(root.path(), "landscape.mp4", 4, "640x360", false);
    let notes = root.path().join("notes.txt");
    std::fs::write(&notes, "not a video at all\n").unwrap();

    let browser = Browser::start(&root.path().join("profile"), 1280, 800).await;
    let home = format!("http://{}/", web.addr);
    browser.goto(&home).await;
    browser.set_viewport(1280, 800).await;
    page_basics(&browser, "home").await;
    let live = browser
        .eval("const r = document.querySelector('[aria-live=\"polite\"]'); return !!r && !!r.querySelector('#msg') && !!r.querySelector('#uploads');")
        .await;
    assert_eq!(live, true, "upload progress and messages in a live region");

    // The form, from the browser: a refusal says why, in words.
    browser
        .type_into("#upload-file", &notes.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let msg = loop {
        let m = browser
            .eval("const s = document.querySelector('[aria-live=\"polite\"] #uploads li .status'); return s ? s.textContent : '';")
            .await;
        let m = m.as_str().unwrap_or("").to_string();
        if m.starts_with("Upload refused") {
            break m;
        }
        assert!(Instant::now() < deadline, "no refusal shown: {m:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(msg.contains("(400)"), "{msg}");
    assert!(
        !msg.contains('<'),
        "the reason, not the error page's HTML: {msg}"
    );
    // ... and a video is accepted (the page stays as it is).
    browser
        .type_into("#upload-file", &landscape.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    let v = wait_ready(&web.addr, "landscape").await;
    assert_eq!(v["title"], "landscape.mp4");
    wait_ready(&web.addr, "portrait").await;

    for (id, ratio) in [("portrait", 360.0 / 640.0), ("landscape", 640.0 / 360.0)] {
        browser
            .goto(&format!("http://{}/videos/{id}", web.addr))
            .await;
        browser.wait_playing(id).await;
        page_basics(&browser, id).await;
        let l = layout(&browser).await;
        browser
            .screenshot(&screenshots().join(format!("viewport-1280x800-{id}.png")))
            .await;
        let (video, vh) = (&l["video"], l["vh"].as_f64().unwrap());
        assert!(
            within(video, &l),
            "{id}: the player is inside the window: {l}"
        );
        assert!(
            within(&l["quality"], &l) && l["quality_visible"] == true,
            "{id}: the quality menu is visible: {l}"
        );
        let (w, h) = (
            video["width"].as_f64().unwrap(),
            video["height"].as_f64().unwrap(),
        );
        assert!(
            (w / h / ratio - 1.0).abs() < 0.02,
            "{id}: the player has the video's shape, not black bars: {l}"
        );
        if id == "portrait" {
            assert!(
                h > 0.6 * vh,
                "{id}: the player uses the window's height: {l}"
            );
        } else {
            assert!(
                w >= l["column"].as_f64().unwrap() - 1.0,
                "{id}: a landscape player is as wide as the page's column: {l}"
            );
        }
    }

    browser
        .goto(&format!("http://{}/videos/no-such-video", web.addr))
        .await;
    page_basics(&browser, "not found").await;
    browser.quit().await;
}
