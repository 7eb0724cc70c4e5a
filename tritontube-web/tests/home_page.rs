//! The home page and the list API with a real web server, storage node,
//! ffmpeg and headless Chromium: uploads from the browser never reload the
//! page, take a typed id, title and description, and two files both named
//! `video.mp4` both go in; the Id field's pattern works in Chromium; form
//! fields may follow the file; search and cursor pages; titles are escaped;
//! a missing page is HTML for a browser and JSON for the API.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::{Browser, screenshots};
use common::*;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

/// Waits until `script` (a function body) returns `true` in the page.
async fn wait_for(browser: &Browser, what: &str, script: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if browser.eval(script).await == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `GET /api/videos` with `query` (`q=...&limit=...`).
async fn list(http: &str, query: &str) -> reqwest::Response {
    reqwest::get(format!("http://{http}/api/videos?{query}"))
        .await
        .unwrap()
}

/// Every video the API lists, following `next_cursor` pages of `limit`.
async fn all_pages(http: &str, q: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let url = format!("q={q}&limit={limit}&cursor={cursor}");
        let page: Value = list(http, &url).await.json().await.unwrap();
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit, "{page}");
        ids.extend(items.iter().map(|v| v["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return ids,
        }
    }
}

/// A file part named `name`, read from `path`.
fn file_part(path: &Path, name: &str) -> Part {
    Part::bytes(std::fs::read(path).unwrap()).file_name(name.to_string())
}

async fn start(root: &Path) -> (Proc, Proc) {
    let node = start_node(root, free_port()).await;
    let web = start_web(
        root,
        free_port(),
        free_port(),
        std::slice::from_ref(&node.addr),
        &["--replicas", "1"],
    )
    .await;
    (node, web)
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_uploads_never_reload_the_page() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web) = start(root.path()).await;
    // A longer clip, processing while the page is used.
    let long = clip(root.path(), "long.mp4", 20, "640x360", false);
    let r = upload(&web.addr, &long).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let mine = clip(root.path(), "mine.mp4", 2, "320x240", false);
    for dir in ["a", "b"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
        std::fs::copy(&mine, root.path().join(dir).join("video.mp4")).unwrap();
    }

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    browser.goto(&format!("http://{}/", web.addr)).await;
    browser.eval("window.sameDocument = 42; return true;").await;
    let first_state = browser
        .eval("const t = document.querySelector('#videos li[data-id=\"long\"] .state'); return t ? t.textContent : null;")
        .await;
    assert!(
        first_state.as_str().is_some_and(|s| !s.contains(':')),
        "the long clip is not ready yet: {first_state}"
    );

    // An invalid id is flagged by the browser, and nothing is sent.
    browser.type_into("#upload-id", "bad id!").await;
    let invalid = browser
        .eval("const i = document.getElementById('upload-id'); return {mismatch: i.validity.patternMismatch, matches: i.matches(':invalid')};")
        .await;
    assert_eq!(invalid["mismatch"], true, "{invalid}");
    assert_eq!(invalid["matches"], true, "{invalid}");
    browser
        .type_into("#upload-file", &mine.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#uploads li').length;")
            .await,
        0,
        "no upload starts with an invalid id"
    );
    browser
        .eval("document.getElementById('upload').reset(); return true;")
        .await;

    // A typed id, title (with markup) and description.
    browser.type_into("#upload-id", "my-clip").await;
    browser
        .type_into("#upload-title", "<script>window.pwned = 1</script> Sunset")
        .await;
    browser
        .type_into("#upload-description", "Filmed from the lighthouse pier")
        .await;
    browser
        .type_into("#upload-file", &mine.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    wait_for(
        &browser,
        "the upload to be accepted",
        "const s = document.querySelector('#uploads li .status'); return !!s && s.textContent.startsWith('Uploaded as “my-clip”');",
        60,
    )
    .await;

    // Two files both named video.mp4, chosen at once.
    let both = format!(
        "{}\n{}",
        root.path().join("a/video.mp4").display(),
        root.path().join("b/video.mp4").display()
    );
    browser.type_into("#upload-file", &both).await;
    browser.click("#upload button[type=submit]").await;
    wait_for(
        &browser,
        "both video.mp4 uploads",
        "const s = Array.from(document.querySelectorAll('#uploads li .status'), e => e.textContent);
         return s.length === 3 && s.every(t => t.startsWith('Uploaded as'));",
        60,
    )
    .await;
    let rows = browser
        .eval("return Array.from(document.querySelectorAll('#uploads li'), li => [li.querySelector('.name').textContent, li.dataset.id]);")
        .await;
    let ids: Vec<&str> = rows.as_array().unwrap()[1..]
        .iter()
        .map(|r| r[1].as_str().unwrap())
        .collect();
    assert_eq!(rows[1][0], "video.mp4");
    assert_eq!(rows[2][0], "video.mp4");
    assert_ne!(ids[0], ids[1], "{rows}");
    assert!(ids.iter().all(|i| i.starts_with("video")), "{rows}");

    for id in ["my-clip", ids[0], ids[1], "long"] {
        wait_ready(&web.addr, id).await;
    }
    // The list follows, with no reload: the long clip is now ready, and the
    // browser's upload shows its title and description (as text).
    wait_for(
        &browser,
        "the list to show every video ready",
        "const s = Array.from(document.querySelectorAll('#videos li .state'), e => e.textContent);
         return s.length === 4 && s.every(t => /^\\d+:\\d\\d$/.test(t));",
        30,
    )
    .await;
    let tile = browser
        .eval("const li = document.querySelector('#videos li[data-id=\"my-clip\"]');
               return {t: li.querySelector('.t').textContent, d: li.querySelector('.d').textContent,
                       marker: window.sameDocument, pwned: window.pwned === undefined ? null : window.pwned,
                       scripts: document.querySelectorAll('#videos script').length};")
        .await;
    assert_eq!(
        tile["t"], "<script>window.pwned = 1</script> Sunset",
        "{tile}"
    );
    assert_eq!(tile["d"], "Filmed from the lighthouse pier");
    assert_eq!(tile["marker"], 42, "the page was never reloaded");
    assert!(tile["pwned"].is_null() && tile["scripts"] == 0, "{tile}");
    browser
        .screenshot(&screenshots().join("home-uploads.png"))
        .await;

    // The watch page shows the title and description, as text.
    browser
        .goto(&format!("http://{}/videos/my-clip", web.addr))
        .await;
    browser.wait_playing("my-clip").await;
    let page = browser
        .eval("return {h1: document.querySelector('h1').textContent, d: document.getElementById('description').textContent, pwned: window.pwned === undefined};")
        .await;
    assert_eq!(page["h1"], "<script>window.pwned = 1</script> Sunset");
    assert_eq!(page["d"], "Filmed from the lighthouse pier");
    assert_eq!(page["pwned"], true);

    // Search from the page, by a word of a description.
    browser.goto(&format!("http://{}/", web.addr)).await;
    browser.type_into("#search-q", "lighthouse").await;
    browser.click("#search button[type=submit]").await;
    wait_for(
        &browser,
        "search results",
        "const ids = Array.from(document.querySelectorAll('#videos li'), li => li.dataset.id);
         return ids.length === 1 && ids[0] === 'my-clip' && location.search === '?q=lighthouse';",
        10,
    )
    .await;
    browser.type_into("#search-q", "zzz").await;
    browser.click("#search button[type=submit]").await;
    wait_for(
        &browser,
        "no results",
        "return document.querySelectorAll('#videos li').length === 0 && !document.getElementById('empty').hidden;",
        10,
    )
    .await;
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_in_any_order_search_pages_and_errors() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web) = start(root.path()).await;
    let c = clip(root.path(), "c.mp4", 1, "160x120", false);

    // Fields after the file are honoured.
    let form = Form::new()
        .part("file", file_part(&c, "c.mp4"))
        .text("id", "after")
        .text("title", "Fields after the file")
        .text("description", "The id comes last, in a harbour");
    let r = post_form(&web.addr, form).await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let v = wait_ready(&web.addr, "after").await;
    assert_eq!(v["title"], "Fields after the file");
    assert_eq!(v["description"], "The id comes last, in a harbour");

    // A bad id, before or after the file: 400 saying why, nothing stored.
    for before in [true, false] {
        let mut form = Form::new();
        if before {
            form = form.text("id", "bad id!");
        }
        form = form.part("file", file_part(&c, "c.mp4"));
        if !before {
            form = form.text("id", "bad id!");
        }
        let r = post_form(&web.addr, form).await;
        assert_eq!(r.status(), 400);
        let text = r.text().await.unwrap();
        assert!(text.contains("video id"), "{text}");
    }
    let page: Value = list(&web.addr, "").await.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");

    // The course project's form: id = the file stem, 409 when taken; the
    // site's form (empty id field) gets another id instead. A client that
    // asks for JSON gets 201 and the video.
    let course = || Form::new().part("file", file_part(&c, "after.mp4"));
    assert_eq!(post_form(&web.addr, course()).await.status(), 409);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{}/upload", web.addr))
        .header("accept", "application/json")
        .multipart(course().text("id", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    let derived = made["id"].as_str().unwrap().to_string();
    assert!(
        derived.starts_with("after-") && derived.len() == "after-".len() + 6,
        "{made}"
    );
    assert_eq!(made["title"], "after.mp4");
    let r = client
        .post(format!("http://{}/upload", web.addr))
        .header("accept", "application/json")
        .multipart(
            Form::new()
                .text("id", "after")
                .part("file", file_part(&c, "x.mp4")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("after"), "{e}");

    // More videos, for pages.
    for i in 0..5 {
        let form = Form::new()
            .text("id", format!("p{i}"))
            .text(
                "description",
                if i % 2 == 0 { "even harbour" } else { "odd" },
            )
            .part("file", file_part(&c, "c.mp4"));
        assert_eq!(post_form(&web.addr, form).await.status(), 303);
    }
    let all = all_pages(&web.addr, "", 2).await;
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(sorted.len(), 7, "each video once: {all:?}");
    assert_eq!(&all[..5], ["p4", "p3", "p2", "p1", "p0"], "newest first");
    // Search by a word of the description, also across pages.
    assert_eq!(
        all_pages(&web.addr, "harbour", 1).await,
        ["p4", "p2", "p0", "after"]
    );
    assert_eq!(
        all_pages(&web.addr, "HARB", 10).await,
        ["p4", "p2", "p0", "after"]
    );

    for (query, needle) in [
        ("cursor=garbage", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
    ] {
        let r = list(&web.addr, query).await;
        assert_eq!(r.status(), 400, "{query}");
        let e: Value = r.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().contains(needle),
            "{query}: {e}"
        );
    }
    let r = reqwest::get(format!("http://{}/?cursor=garbage", web.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("<a href=\"/\">"));

    // Not found: a page with a way home for a browser, JSON for the API
    // and for a client that asks for it. Every answer forbids inline script.
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    for (path, accept, json) in [
        ("/no/such/page", browser_accept, false),
        ("/videos/nope", browser_accept, false),
        ("/api/nope", browser_accept, true),
        ("/api/videos/nope", "*/*", true),
        ("/videos/nope", "application/json", true),
        ("/no/such/page", "application/json", true),
    ] {
        let r = client
            .get(format!("http://{}{path}", web.addr))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let ty = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        if json {
            assert!(ty.starts_with("application/json"), "{path}: {ty}");
            let e: Value = serde_json::from_str(&body).unwrap();
            assert!(e["error"].is_string(), "{path}: {body}");
        } else {
            assert!(ty.starts_with("text/html"), "{path}: {ty}");
            assert!(body.contains("<h1>404 Not Found</h1>"), "{path}: {body}");
            assert!(body.contains("<a href=\"/\">"), "{path}: a way home");
        }
    }
}
