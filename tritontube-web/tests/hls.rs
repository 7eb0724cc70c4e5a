//! HLS beside DASH, end to end: a storage node, the web server, clips made
//! by ffmpeg, uploaded over HTTP. Both manifests parse with ffprobe (served
//! over HTTP) with the same video renditions; the HLS playlists name only
//! files the server serves, the segments the MPD names; hls.js (built into
//! the server) plays the master playlist in headless Chromium; the watch
//! page falls back to the browser's own HLS where there is no MediaSource;
//! and a video stored before HLS existed keeps playing with DASH.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::browser::{Browser, screenshots};
use common::*;
use serde_json::Value;
use tritontube_core::ContentKey;
use tritontube_core::metadata::MetadataStore;
use tritontube_core::store::ContentStore;

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// A 200 answer to `GET url`, or a panic saying what came instead.
async fn get_ok(url: &str) -> reqwest::Response {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "GET {url}");
    r
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The sizes of the video streams ffprobe finds at `url`, sorted, and the
/// number of audio streams.
async fn ffprobe(url: &str) -> (Vec<(u64, u64)>, usize) {
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json", url])
        .output()
        .await
        .expect("ffprobe (Debian package ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    let of = |t: &'static str| streams.iter().filter(move |s| s["codec_type"] == t);
    let mut sizes: Vec<(u64, u64)> = of("video")
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    sizes.sort();
    (sizes, of("audio").count())
}

/// Checks a ready video's HLS against its DASH (see the module docs) and
/// returns every file its media playlists name.
async fn check_hls(http: &str, v: &Value) -> BTreeSet<String> {
    let base = format!("http://{http}");
    let hls = v["hls_manifest"]
        .as_str()
        .unwrap_or_else(|| panic!("no HLS: {v}"));
    let mpd = v["manifest"].as_str().unwrap();
    let master = get_ok(&format!("{base}{hls}")).await;
    assert_eq!(header(&master, "content-type"), PLAYLIST_TYPE);
    assert_eq!(header(&master, "cache-control"), "public, max-age=10");
    let master = m3u8_rs::parse_master_playlist_res(&master.bytes().await.unwrap())
        .unwrap()
        .clone();

    let (dash_sizes, dash_audio) = ffprobe(&format!("{base}{mpd}")).await;
    let (hls_sizes, hls_audio) = ffprobe(&format!("{base}{hls}")).await;
    let mut ladder: Vec<(u64, u64)> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    ladder.sort();
    assert_eq!(dash_sizes, ladder, "DASH has the ladder: {v}");
    assert_eq!(hls_sizes, ladder, "HLS has the same video renditions");
    assert_eq!(master.variants.len(), ladder.len());
    let audio = usize::from(v["has_audio"] == true);
    assert_eq!((dash_audio, hls_audio.min(1)), (audio, audio), "{v}");

    let dir = hls.rsplit_once('/').unwrap().0;
    let media: Vec<&str> = master
        .variants
        .iter()
        .map(|s| s.uri.as_str())
        .chain(master.alternatives.iter().filter_map(|a| a.uri.as_deref()))
        .collect();
    assert_eq!(media.len(), ladder.len() + audio, "one playlist a stream");
    let mut named = BTreeSet::new();
    for m in media {
        let r = get_ok(&format!("{base}{dir}/{m}")).await;
        assert_eq!(header(&r, "content-type"), PLAYLIST_TYPE, "{m}");
        let text = r.bytes().await.unwrap();
        let playlist = m3u8_rs::parse_media_playlist_res(&text).unwrap().clone();
        assert!(playlist.end_list, "{m}: a finished (VOD) playlist");
        let total: f32 = playlist.segments.iter().map(|s| s.duration).sum();
        let duration = v["duration_secs"].as_f64().unwrap() as f32;
        assert!(
            (total - duration).abs() < 0.5,
            "{m}: {total} s of {duration}"
        );
        for s in &playlist.segments {
            for file in s.map.iter().map(|m| &m.uri).chain([&s.uri]) {
                if named.insert(file.clone()) {
                    let r = get_ok(&format!("{base}{dir}/{file}")).await;
                    assert!(
                        !r.bytes().await.unwrap().is_empty(),
                        "{m} names an empty {file}"
                    );
                }
            }
        }
    }
    named
}

/// Plays `master` through the built-in hls.js (and nothing else: no
/// dash.js) in a page of the web server's origin, until `currentTime` is
/// past 1.5 s, with no error from hls.js or the `<video>`.
async fn play_with_hls_js(browser: &Browser, http: &str, master: &str) -> Value {
    // hls.js fetches the playlists by XHR, so the test page is written into
    // a document of the server's origin (its 404 page). That page's
    // Content-Security-Policy allows the site's own scripts only, so the
    // page loads hls.js from the server and the test then drives it.
    browser
        .goto(&format!("http://{http}/videos/no-such-video-hls-test-page"))
        .await;
    let page = r#"<!doctype html><title>hls.js</title><video id="v" muted playsinline></video>
<script src="/static/hls.min.js"></script>"#;
    let write = format!(
        "document.open(); document.write({}); document.close(); return true;",
        serde_json::to_string(page).unwrap()
    );
    browser.eval(&write).await;
    let loaded = Instant::now() + Duration::from_secs(10);
    while browser.eval("return typeof Hls;").await != "function" {
        assert!(Instant::now() < loaded, "hls.js did not load");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = format!(
        r#"window.errors = [];
const v = document.getElementById('v');
v.addEventListener('error', () => window.errors.push('video error ' + (v.error && v.error.code)));
if (!Hls.isSupported()) window.errors.push('Hls.isSupported() is false');
const hls = new Hls();
hls.on(Hls.Events.ERROR, (e, d) => window.errors.push(d.type + ': ' + d.details + (d.fatal ? ' (fatal)' : '')));
hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {{ window.levels = d.levels.length; v.play(); }});
hls.loadSource('{master}');
hls.attachMedia(v);
return true;"#
    );
    browser.eval(&start).await;
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let st = browser
            .eval("const v = document.getElementById('v'); return {t: v ? v.currentTime : -1, w: v ? v.videoWidth : 0, errors: window.errors, levels: window.levels, hls: typeof Hls, dashjs: typeof dashjs, src: v ? v.src : ''};")
            .await;
        // (`errors` is null until the page's script has run.)
        if !st["errors"].is_null() {
            assert_eq!(st["errors"], serde_json::json!([]), "{master}: {st}");
        }
        if st["t"].as_f64().unwrap_or(-1.0) > 1.5 {
            assert_eq!(st["hls"], "function", "{st}");
            assert_eq!(st["dashjs"], "undefined", "hls.js alone: {st}");
            assert!(
                st["src"].as_str().unwrap().starts_with("blob:"),
                "through MSE: {st}"
            );
            assert!(st["w"].as_u64().unwrap() > 0, "{st}");
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{master}: playback did not advance: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn api(http: &str, id: &str) -> Value {
    get_ok(&format!("http://{http}/api/videos/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// Uploads `path` as `id` (retrying while an earlier upload of the id is
/// still being deleted) and waits until it is ready.
async fn upload_ready(http: &str, id: &str, path: &std::path::Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let form = reqwest::multipart::Form::new()
            .text("id", id.to_string())
            .part(
                "file",
                reqwest::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("clip.mp4"),
            );
        let r = post_form(http, form).await;
        if r.status() == 303 {
            return wait_ready(http, id).await;
        }
        assert_eq!(r.status(), 409, "upload {id}: {}", r.text().await.unwrap());
        assert!(Instant::now() < deadline, "{id} stays taken");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hls_beside_dash_parses_and_plays_with_hls_js() {
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
    let http = web.addr.as_str();

    // A first upload: the course's names, HLS beside them.
    let with_audio = clip(root.path(), "with-audio.mp4", 6, "640x360", true);
    let v = upload_ready(http, "hls", &with_audio).await;
    assert_eq!(v["manifest"], "/content/hls/manifest.mpd");
    assert_eq!(v["hls_manifest"], "/content/hls/master.m3u8");
    let named = check_hls(http, &v).await;
    let dash: BTreeSet<String> = files_of(http, "hls", &v)
        .await
        .into_iter()
        .filter(|f| f.ends_with(".m4s"))
        .collect();
    assert_eq!(named, dash, "the playlists name exactly the MPD's segments");
    let listed = get_ok(&format!("http://{http}/api/videos")).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(
        listed["items"][0]["hls_manifest"],
        "/content/hls/master.m3u8"
    );
    let r = reqwest::get(format!("http://{http}/content/hls/g7-master.m3u8"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a playlist that is not there");

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    let st = play_with_hls_js(&browser, http, "/content/hls/master.m3u8").await;
    assert_eq!(st["levels"], 1, "one rung: {st}");
    browser.screenshot(&screenshots().join("hls-js.png")).await;

    // The id again (generation 2, no audio, three rungs): every playlist and
    // every name in them carries the generation.
    assert!([202, 204].contains(&delete(http, "hls").await));
    let silent = clip(root.path(), "silent.mp4", 4, "1280x720", false);
    let v = upload_ready(http, "hls", &silent).await;
    assert_eq!(v["hls_manifest"], "/content/hls/g2-master.m3u8");
    let named = check_hls(http, &v).await;
    assert!(named.iter().all(|f| f.starts_with("g2-")), "{named:?}");
    let st = play_with_hls_js(&browser, http, "/content/hls/g2-master.m3u8").await;
    assert_eq!(st["levels"], 3, "720p, 468p, 360p: {st}");
    browser.quit().await;
}

async fn delete(http: &str, id: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("http://{http}/api/videos/{id}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The watch page plays DASH where MediaSource exists, the HLS playlist
/// natively where it does not; a video stored before HLS was added has no
/// HLS playlist and still plays with DASH.
#[tokio::test(flavor = "multi_thread")]
async fn the_watch_page_falls_back_to_native_hls_and_old_videos_keep_dash() {
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
    let http = web.addr.as_str();
    let c = clip(root.path(), "c.mp4", 5, "640x360", true);
    let new = upload_ready(http, "new", &c).await;
    let old = upload_ready(http, "old", &c).await;
    assert_eq!(old["hls_manifest"], "/content/old/master.m3u8");
    assert_eq!(new["hls_manifest"], "/content/new/master.m3u8");

    // "old" as a server without HLS stored it: no playlists, no records.
    let meta = sqlite_meta(root.path());
    let nodes = [node.addr.parse().unwrap()];
    let store = tritontube_core::cluster::NetworkContentStore::with_nodes(&nodes, 1, 1).unwrap();
    let playlists: Vec<ContentKey> = meta
        .video_file_records(&"old".parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.key)
        .filter(|k| k.file().as_str().ends_with(".m3u8"))
        .collect();
    assert_eq!(playlists.len(), 3, "master, video, audio: {playlists:?}");
    for k in &playlists {
        store.delete(k).await.unwrap();
    }
    meta.forget_file_records(&playlists).await.unwrap();
    let old = api(http, "old").await;
    assert_eq!(old["hls_manifest"], Value::Null, "{old}");
    assert_eq!(old["manifest"], "/content/old/manifest.mpd");
    let list: Value = get_ok(&format!("http://{http}/api/videos"))
        .await
        .json()
        .await
        .unwrap();
    let by_id = |id: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("old")["hls_manifest"], Value::Null);
    assert_eq!(by_id("new")["hls_manifest"], "/content/new/master.m3u8");

    let browser = Browser::start(&root.path().join("profile"), 1280, 900).await;
    for id in ["old", "new"] {
        browser.goto(&format!("http://{http}/videos/{id}")).await;
        browser.wait_playing(id).await;
        let how = browser.eval("return window.playbackChoice;").await;
        assert_eq!(how, "dash", "{id}: MediaSource is there");
    }
    browser.quit().await;

    // Without MediaSource (as Safari on iOS): the browser's own HLS player,
    // when it has one; the old video says why it cannot play.
    let browser = Browser::start(&root.path().join("profile-no-mse"), 1280, 900).await;
    browser
        .before_each_page("delete window.MediaSource; window.MediaSource = undefined;")
        .await;
    browser.goto(&format!("http://{http}/videos/new")).await;
    let st = browser
        .eval("return {how: window.playbackChoice, ms: typeof MediaSource, native: document.querySelector('video').canPlayType('application/vnd.apple.mpegurl'), src: document.querySelector('video').src};")
        .await;
    assert_eq!(st["ms"], "undefined", "{st}");
    if st["native"] == "" {
        assert_eq!(st["how"], Value::Null, "no way to play here: {st}");
    } else {
        assert_eq!(st["how"], "hls", "{st}");
        assert_eq!(st["src"], format!("http://{http}/content/new/master.m3u8"));
        native_plays(&browser).await;
        browser
            .screenshot(&screenshots().join("watch-native-hls.png"))
            .await;
    }
    browser.goto(&format!("http://{http}/videos/old")).await;
    let st = browser
        .eval("return {how: window.playbackChoice, err: window.playerError, msg: document.getElementById('msg').textContent};")
        .await;
    assert_eq!(st["how"], Value::Null, "{st}");
    assert!(
        st["msg"]
            .as_str()
            .unwrap()
            .contains("no Media Source Extensions, and this video has no HLS playlist"),
        "{st}"
    );
    browser.quit().await;
}

/// Waits until the page's `<video>` plays past 1.5 s with no error.
async fn native_plays(browser: &Browser) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let st = browser
            .eval("const v = document.querySelector('video'); return {t: v.currentTime, err: window.playerError};")
            .await;
        assert!(st["err"].is_null(), "{st}");
        if st["t"].as_f64().unwrap() > 1.5 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "native HLS did not advance: {st}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
