//! Accounts with the real binary: the owner's one-time password on the
//! first start, `tritontube-web user add|passwd|list`, sign-in and
//! sign-out with the session cookie, CSRF tokens, uploads that need an
//! account (unless `--public-uploads`), and edits and deletes by the
//! uploader and admins only. Then the same through headless Chromium.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const WEB: &str = env!("CARGO_BIN_EXE_tritontube-web");

/// An HTTP client that does not follow redirects (they are asserted).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The owner's one-time password, from the web server's log.
async fn owner_password(root: &Path, http: u16) -> String {
    let log = root.join(format!("web-{http}.log"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(rest) = text.split("one-time password: ").nth(1) {
            let pw: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            assert_eq!(pw.len(), 20, "{text}");
            assert_eq!(
                text.matches("one-time password").count(),
                1,
                "printed once: {text}"
            );
            return pw;
        }
        assert!(Instant::now() < deadline, "no owner password in {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `tritontube-web user ARGS` on the SQLite store at `db`, with
/// `stdin` as its input: (success, stdout, stderr).
fn user_cmd(db: &Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(WEB)
        .arg("user")
        .args(args)
        .arg("--metadata")
        .arg(format!("sqlite:{}", db.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A signed-in browser session: its cookie and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

/// Signs in by the form; returns the answer (redirects not followed).
async fn post_signin(http: &str, name: &str, password: &str) -> reqwest::Response {
    client()
        .post(format!("http://{http}/signin"))
        .form(&[("name", name), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// Signs in, checks the cookie's flags, and reads the CSRF token from the
/// home page.
async fn sign_in(http: &str, name: &str, password: &str) -> Session {
    let r = post_signin(http, name, password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in of {name}");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(flag), "cookie {set:?} lacks {flag}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let token = cookie.strip_prefix("tt_session=").unwrap();
    assert_eq!(token.len(), 64, "a 256-bit token: {cookie}");
    let home = page(http, "/", Some(&cookie)).await;
    assert!(
        home.contains(&format!("id=\"account-name\">{name}<")),
        "the header names {name}"
    );
    let csrf = home
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(csrf.len(), 64);
    Session { cookie, csrf }
}

/// The text of a page, with a cookie if given.
async fn page(http: &str, path: &str, cookie: Option<&str>) -> String {
    let mut req = client().get(format!("http://{http}{path}"));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET {path}");
    r.text().await.unwrap()
}

/// Uploads `clip` as a form (with `csrf` as a form field when given),
/// with the session cookie when given.
async fn upload_as(
    http: &str,
    clip: &Path,
    session: Option<&Session>,
    csrf: Option<&str>,
    accept_json: bool,
) -> reqwest::Response {
    let mut form = Form::new();
    if let Some(c) = csrf {
        form = form.text("csrf", c.to_string());
    }
    let name = clip.file_name().unwrap().to_string_lossy().to_string();
    form = form.part(
        "file",
        Part::bytes(std::fs::read(clip).unwrap()).file_name(name),
    );
    let mut req = client()
        .post(format!("http://{http}/upload"))
        .multipart(form);
    if let Some(s) = session {
        req = req.header(COOKIE, &s.cookie);
    }
    if accept_json {
        req = req.header("accept", "application/json");
    }
    req.send().await.unwrap()
}

/// `PATCH /api/videos/<id>` as `session` with the CSRF header `csrf`.
async fn patch(
    http: &str,
    id: &str,
    session: &Session,
    csrf: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = client()
        .patch(format!("http://{http}/api/videos/{id}"))
        .header(COOKIE, &session.cookie)
        .json(&body);
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    req.send().await.unwrap()
}

/// A form post of the watch page (`edit` or `delete`) as `session`.
async fn watch_form(
    http: &str,
    id: &str,
    action: &str,
    session: &Session,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("http://{http}/videos/{id}/{action}"))
        .header(COOKIE, &session.cookie)
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// A video's JSON, or `None` once it is gone.
async fn video(http: &str, id: &str) -> Option<Value> {
    let r = reqwest::get(format!("http://{http}/api/videos/{id}"))
        .await
        .unwrap();
    match r.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(r.json().await.unwrap()),
        s => panic!("GET {id}: {s}"),
    }
}

/// How many videos the API lists.
async fn video_count(http: &str) -> usize {
    let v: Value = reqwest::get(format!("http://{http}/api/videos"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"].as_array().unwrap().len()
}

/// How many video files the storage node holds (not its own bookkeeping
/// under `.tritontube/`).
fn node_files(root: &Path, node: &Proc) -> usize {
    let dir = root.join(format!("node-{}", node.addr.rsplit(':').next().unwrap()));
    std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| walk(&e.path()))
        .sum()
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() { walk(&p) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A storage node and a web server without `--public-uploads`; returns
/// them, the web server's HTTP port and the owner's password.
async fn start(root: &Path) -> (Proc, Proc, u16, String) {
    let node = start_node(root, free_port()).await;
    let http = free_port();
    let web = start_web_accounts(
        root,
        http,
        free_port(),
        std::slice::from_ref(&node.addr),
        &["--replicas", "1"],
    )
    .await;
    let pw = owner_password(root, http).await;
    (node, web, http, pw)
}

#[tokio::test(flavor = "multi_thread")]
async fn user_commands_manage_accounts_in_the_store() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web, _, owner_pw) = start(root.path()).await;
    let db = root.path().join("metadata.db");

    let (ok, out, err) = user_cmd(&db, &["add", "alice"], "alice-secret-1\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("Created the account alice (user)"), "{out}");
    let (ok, out, err) = user_cmd(&db, &["add", "carol", "--admin"], "carol-secret-1\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("(admin)"), "{out}");
    // Refusals: a taken name, a short password, a bad name, an unknown
    // user's password. None changes the list.
    let (ok, _, err) = user_cmd(&db, &["add", "alice"], "another-password\n");
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = user_cmd(&db, &["add", "dave"], "short\n");
    assert!(!ok && err.contains("at least 8 characters"), "{err}");
    let (ok, _, err) = user_cmd(&db, &["add", "no spaces"], "long-enough-1\n");
    assert!(!ok && err.contains("invalid user name"), "{err}");
    let (ok, _, err) = user_cmd(&db, &["passwd", "erin"], "long-enough-1\n");
    assert!(!ok && err.contains("not found"), "{err}");
    let (ok, out, _) = user_cmd(&db, &["list"], "");
    assert!(ok);
    let rows: Vec<(String, String)> = out
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().into(), w.next().unwrap().into())
        })
        .collect();
    let want = [("alice", "user"), ("carol", "admin"), ("owner", "owner")]
        .map(|(n, r)| (n.to_string(), r.to_string()));
    assert_eq!(rows, want, "{out}");
    assert!(!out.contains("argon2"), "hashes are never shown: {out}");

    // The new password works, the old one no longer does, and the
    // sessions signed in with the old one are ended.
    let before = sign_in(&web.addr, "alice", "alice-secret-1").await;
    let (ok, out, err) = user_cmd(&db, &["passwd", "alice"], "alice-secret-2\n");
    assert!(
        ok && out.contains("Changed the password of alice"),
        "{out}{err}"
    );
    let old = post_signin(&web.addr, "alice", "alice-secret-1").await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    let home = page(&web.addr, "/", Some(&before.cookie)).await;
    assert!(!home.contains("account-name"), "the old session is over");
    sign_in(&web.addr, "alice", "alice-secret-2").await;
    sign_in(&web.addr, "owner", &owner_pw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_upload_edit_delete_and_sign_out() {
    let root = tempfile::tempdir().unwrap();
    let (node, web, _, owner_pw) = start(root.path()).await;
    let http = web.addr.as_str();
    let db = root.path().join("metadata.db");
    for (name, pw) in [("alice", "alice-password"), ("bob", "bob-password")] {
        let (ok, out, err) = user_cmd(&db, &["add", name], &format!("{pw}\n"));
        assert!(ok, "{out}{err}");
    }

    // A wrong password and an unknown name get the same refusal, and no
    // cookie.
    for (name, pw) in [("alice", "not-her-password"), ("mallory", "whatever-1")] {
        let r = post_signin(http, name, pw).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(r.headers().get(SET_COOKIE).is_none());
        let body = r.text().await.unwrap();
        assert!(body.contains("wrong user name or password"), "{body}");
    }
    let anonymous_home = page(http, "/", None).await;
    assert!(anonymous_home.contains("href=\"/signin\""));
    assert!(anonymous_home.contains("aria-labelledby=\"upload-heading\" hidden"));

    // Anonymous uploads are refused (a page with a way to sign in, or
    // JSON), and nothing is stored.
    let clip = clip(root.path(), "beach.mp4", 2, "320x240", false);
    let r = upload_as(http, &clip, None, None, false).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("sign in to upload") && body.contains("href=\"/signin\""),
        "{body}"
    );
    let r = upload_as(http, &clip, None, None, true).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("sign in to upload"),
        "{err}"
    );

    // Alice's upload needs its CSRF token too.
    let alice = sign_in(http, "alice", "alice-password").await;
    let r = upload_as(http, &clip, Some(&alice), None, false).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r = upload_as(http, &clip, Some(&alice), Some(&"0".repeat(64)), false).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a wrong CSRF token");
    assert_eq!(video_count(http).await, 0, "nothing stored");
    assert_eq!(node_files(root.path(), &node), 0, "nothing stored");
    let r = upload_as(http, &clip, Some(&alice), Some(&alice.csrf), false).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    wait_ready(http, "beach").await;
    let watch = page(http, "/videos/beach", Some(&alice.cookie)).await;
    assert!(watch.contains("id=\"edit\"") && watch.contains("/videos/beach/delete"));

    // Bob may neither edit nor delete it: no buttons, and 403.
    let bob = sign_in(http, "bob", "bob-password").await;
    let watch = page(http, "/videos/beach", Some(&bob.cookie)).await;
    assert!(!watch.contains("id=\"edit\"") && !watch.contains("/videos/beach/delete"));
    let r = patch(
        http,
        "beach",
        &bob,
        Some(&bob.csrf),
        json!({"title": "Bob's"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("uploader and admins"),
        "{err}"
    );
    let r = client()
        .delete(format!("http://{http}/api/videos/beach"))
        .header(COOKIE, &bob.cookie)
        .header("x-csrf-token", &bob.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = watch_form(http, "beach", "delete", &bob, &[("csrf", &bob.csrf)]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // No credentials at all: 401.
    let r = client()
        .delete(format!("http://{http}/api/videos/beach"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v = video(http, "beach").await.expect("still there");
    assert_eq!(v["title"], "beach.mp4");

    // Alice's own edit: without or with a wrong CSRF token, 403; a bad
    // title, 400; none changes anything.
    let r = watch_form(http, "beach", "edit", &alice, &[("title", "Nope")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let fields = [("title", "Nope"), ("csrf", "forged")];
    let r = watch_form(http, "beach", "edit", &alice, &fields).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = patch(http, "beach", &alice, None, json!({"title": "Nope"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = patch(
        http,
        "beach",
        &alice,
        Some(&alice.csrf),
        json!({"title": "  "}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let long = "x".repeat(201);
    let r = patch(
        http,
        "beach",
        &alice,
        Some(&alice.csrf),
        json!({"title": long}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(video(http, "beach").await.unwrap()["title"], "beach.mp4");
    let r = patch(
        http,
        "beach",
        &alice,
        Some(&alice.csrf),
        json!({"title": "Alice's beach"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["title"], "Alice's beach");
    let fields = [
        ("title", "Alice's beach"),
        ("description", "Waves"),
        ("csrf", alice.csrf.as_str()),
    ];
    let r = watch_form(http, "beach", "edit", &alice, &fields).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/videos/beach");
    assert_eq!(video(http, "beach").await.unwrap()["description"], "Waves");

    // The owner (an admin) may edit anyone's video.
    let owner = sign_in(http, "owner", &owner_pw).await;
    let r = patch(
        http,
        "beach",
        &owner,
        Some(&owner.csrf),
        json!({"description": "Waves, checked"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Alice deletes her video with the watch page's form.
    let r = watch_form(http, "beach", "delete", &alice, &[("csrf", &alice.csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let deadline = Instant::now() + Duration::from_secs(30);
    while video(http, "beach").await.is_some() {
        assert!(Instant::now() < deadline, "beach not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Signing out needs the token too; then the old cookie is no one's,
    // server-side.
    let r = client()
        .post(format!("http://{http}/signout"))
        .header(COOKIE, &alice.cookie)
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = client()
        .post(format!("http://{http}/signout"))
        .header(COOKIE, &alice.cookie)
        .form(&[("csrf", alice.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let home = page(http, "/", Some(&alice.cookie)).await;
    assert!(!home.contains("account-name") && home.contains("href=\"/signin\""));
    let r = upload_as(http, &clip, Some(&alice), Some(&alice.csrf), false).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie no longer works"
    );
    assert_eq!(video_count(http).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_uploads_take_anonymous_uploads() {
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
    let home = page(&web.addr, "/", None).await;
    assert!(
        !home.contains("aria-labelledby=\"upload-heading\" hidden"),
        "the form is shown"
    );
    let c = clip(root.path(), "open.mp4", 2, "320x240", false);
    let r = upload_as(&web.addr, &c, None, None, false).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    wait_ready(&web.addr, "open").await;
    // Changing it still needs an admin: an anonymous upload has no owner.
    let r = client()
        .patch(format!("http://{}/api/videos/open", web.addr))
        .json(&json!({"title": "Mine now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = client()
        .patch(format!("http://{}/api/videos/open", web.addr))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"title": "Renamed by the admin token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        video(&web.addr, "open").await.unwrap()["title"],
        "Renamed by the admin token"
    );
}

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

#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_sign_in_upload_edit_and_delete() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web, _, _) = start(root.path()).await;
    let http = web.addr.as_str();
    let db = root.path().join("metadata.db");
    let (ok, out, err) = user_cmd(&db, &["add", "alice"], "alice-password\n");
    assert!(ok, "{out}{err}");
    let c = clip(root.path(), "sunset.mp4", 2, "320x240", false);

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    browser.goto(&format!("http://{http}/")).await;
    browser.click("#signin-link").await;
    wait_for(
        &browser,
        "the sign-in page",
        "return !!document.getElementById('signin-name');",
        10,
    )
    .await;
    browser.type_into("#signin-name", "alice").await;
    browser
        .type_into("#signin-password", "wrong-password")
        .await;
    browser.click("#signin-button").await;
    wait_for(
        &browser,
        "the refusal",
        "const e = document.getElementById('signin-error'); return !!e && e.textContent.includes('wrong user name or password');",
        10,
    )
    .await;
    browser
        .type_into("#signin-password", "alice-password")
        .await;
    browser.click("#signin-button").await;
    wait_for(
        &browser,
        "the home page, signed in",
        "const n = document.getElementById('account-name'); return !!n && n.textContent === 'alice' && !document.getElementById('upload-card').hidden;",
        10,
    )
    .await;
    assert_eq!(
        browser.eval("return document.cookie;").await,
        "",
        "the session cookie is HttpOnly"
    );

    browser.type_into("#upload-id", "sunset").await;
    browser
        .type_into("#upload-file", &c.display().to_string())
        .await;
    browser.click("#upload button[type=submit]").await;
    wait_for(
        &browser,
        "the upload to be accepted",
        "const s = document.querySelector('#uploads li .status'); return !!s && s.textContent.startsWith('Uploaded as “sunset”');",
        60,
    )
    .await;
    wait_ready(http, "sunset").await;

    browser.goto(&format!("http://{http}/videos/sunset")).await;
    wait_for(
        &browser,
        "the edit form",
        "return !!document.getElementById('edit');",
        10,
    )
    .await;
    browser
        .eval("document.getElementById('edit-title').value = ''; return true;")
        .await;
    browser
        .type_into("#edit-title", "Sunset over the pier")
        .await;
    browser.click("#edit-save").await;
    wait_for(
        &browser,
        "the new title",
        "return document.getElementById('title').textContent === 'Sunset over the pier' && document.getElementById('msg').textContent === 'Saved.';",
        10,
    )
    .await;
    assert_eq!(
        video(http, "sunset").await.unwrap()["title"],
        "Sunset over the pier"
    );

    browser
        .eval("window.confirm = () => true; return true;")
        .await;
    browser.click("#delete-button").await;
    wait_for(
        &browser,
        "the home page after the delete",
        "return location.pathname === '/';",
        30,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while video(http, "sunset").await.is_some() {
        assert!(Instant::now() < deadline, "sunset not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    browser.click("#signout button[type=submit]").await;
    wait_for(
        &browser,
        "signed out",
        "return !!document.getElementById('signin-link');",
        10,
    )
    .await;
    browser.quit().await;
}

/// A tus creation request (`POST /files/`) for a file of `len` bytes.
fn tus_create(
    http: &str,
    len: usize,
    session: Option<&Session>,
    csrf: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut r = client()
        .post(format!("http://{http}/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", len.to_string())
        .header("Upload-Metadata", "filename dHVzLm1wNA==");
    if let Some(s) = session {
        r = r.header("Cookie", &s.cookie);
    }
    if let Some(c) = csrf {
        r = r.header("X-CSRF-Token", c);
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn resumable_uploads_follow_the_same_account_rules() {
    let root = tempfile::tempdir().unwrap();
    let (_node, web, http, pw) = start(root.path()).await;
    let http = format!("127.0.0.1:{http}");
    let _ = &web;
    let c = clip(root.path(), "tus.mp4", 2, "320x240", false);
    let bytes = std::fs::read(&c).unwrap();
    // Anonymous: refused before anything is kept.
    let r = tus_create(&http, bytes.len(), None, None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("sign in to upload"));
    // Signed in, without or with a wrong CSRF token: refused.
    let owner = sign_in(&http, "owner", &pw).await;
    for csrf in [None, Some("0".repeat(64))] {
        let r = tus_create(&http, bytes.len(), Some(&owner), csrf.as_deref())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf {csrf:?}");
    }
    let port = http.rsplit(':').next().unwrap();
    let kept = std::fs::read_dir(root.path().join(format!("web-data-{port}")).join("tus"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(kept, 0, "nothing kept of refused uploads");
    // With its token: created, and only its creator may go on with it.
    let r = tus_create(&http, bytes.len(), Some(&owner), Some(&owner.csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let (ok, _, err) = user_cmd(
        &root.path().join("metadata.db"),
        &["add", "mallory"],
        "mallory-secret-pw\n",
    );
    assert!(ok, "{err}");
    let mallory = sign_in(&http, "mallory", "mallory-secret-pw").await;
    let r = client()
        .head(format!("http://{http}{location}"))
        .header("Tus-Resumable", "1.0.0")
        .header("Cookie", &mallory.cookie)
        .header("X-CSRF-Token", &mallory.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another user's upload is not theirs"
    );
    let r = client()
        .patch(format!("http://{http}{location}"))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .header("Cookie", &owner.cookie)
        .header("X-CSRF-Token", &owner.csrf)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.headers());
    let id = r.headers()["tt-video-id"].to_str().unwrap().to_string();
    let v = wait_ready(&http, &id).await;
    assert_eq!(v["state"], "ready");
    // The video is its uploader's: the owner may edit it, mallory may not.
    let r = patch(
        &http,
        &id,
        &mallory,
        Some(&mallory.csrf),
        json!({"title": "mine now"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = patch(
        &http,
        &id,
        &owner,
        Some(&owner.csrf),
        json!({"title": "Through tus"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
}
