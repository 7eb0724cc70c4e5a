//! Every route and every bad input, through warp's test client (no socket),
//! on real stores (a local directory and SQLite) and real ffmpeg.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tritontube_core::ingest::{Ingest, IngestConfig};
use tritontube_core::metadata::{MetadataStore, PageRequest, SqliteMetadataStore};
use tritontube_core::store::{ContentStore, ContentStoreExt, LocalContentStore};
use tritontube_core::web::{App, filters};

/// The text of an error page (HTML entities decoded), to look for what it
/// says.
fn page_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// The admin token of the test site.
const TOKEN: &str = "t0ken";

struct Site {
    app: App,
    _dir: tempfile::TempDir,
}

fn site(max_upload: u64) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let meta: Arc<dyn MetadataStore> =
        Arc::new(SqliteMetadataStore::open(dir.path().join("m.db")).unwrap());
    let content: Arc<dyn ContentStore> =
        Arc::new(LocalContentStore::new(dir.path().join("content")).unwrap());
    let ingest = Ingest::start(
        meta.clone(),
        content.clone(),
        IngestConfig {
            max_upload_bytes: max_upload,
            ..IngestConfig::default()
        },
    )
    .unwrap();
    let app = App {
        meta,
        content,
        ingest,
        metrics: Default::default(),
        assets: Arc::new(tritontube_core::web::Assets::find(Some(Path::new(env!(
            "CARGO_MANIFEST_DIR"
        ))))),
        health: None,
        network: None,
        cache: Default::default(),
        admin_token: Some(TOKEN.into()),
        uploads: Default::default(),
        tus: None,
        // The course project's open uploads: these tests upload anonymously.
        accounts: std::sync::Arc::new(tritontube_core::web::auth::Accounts::new(true)),
    };
    Site { app, _dir: dir }
}

/// A small real clip made by ffmpeg.
fn clip(dir: &Path, name: &str, audio: bool) -> Vec<u8> {
    let out = dir.join(name);
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args([
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25:duration=2",
    ]);
    if audio {
        cmd.args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-c:a",
            "aac",
            "-shortest",
        ]);
    }
    let st = cmd
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg made the test clip");
    std::fs::read(out).unwrap()
}

const BOUNDARY: &str = "----tritontube-test-boundary";

fn form(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload(
    app: &App,
    fields: &[(&str, Option<&str>, &[u8])],
) -> warp::http::Response<bytes::Bytes> {
    warp::test::request()
        .method("POST")
        .path("/upload")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(form(fields))
        .reply(&filters::routes(app.clone()))
        .await
}

async fn get(app: &App, path: &str) -> warp::http::Response<bytes::Bytes> {
    warp::test::request()
        .path(path)
        .reply(&filters::routes(app.clone()))
        .await
}

async fn nothing_stored(app: &App) {
    let videos = app
        .meta
        .list_videos(PageRequest::default())
        .await
        .unwrap()
        .videos;
    assert!(videos.is_empty(), "no video record: {videos:?}");
    let files = app.content.list_all(None).await.unwrap();
    assert!(files.is_empty(), "no file: {files:?}");
}

async fn wait_ready(app: &App, id: &str) -> serde_json::Value {
    for _ in 0..120 {
        let r = get(app, &format!("/api/videos/{id}")).await;
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        match v["state"].as_str().unwrap() {
            "ready" => return v,
            "failed" => panic!("transcoding failed: {v}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("{id} not ready in time");
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_transcode_and_serve() {
    let s = site(50 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let data = clip(tmp.path(), "my clip.mp4", true);

    let home = get(&s.app, "/").await;
    assert_eq!(home.status(), 200);
    assert!(String::from_utf8_lossy(home.body()).contains("name=\"file\""));

    let r = upload(&s.app, &[("file", Some("my clip.mp4"), &data)]).await;
    assert_eq!(r.status(), 303, "{:?}", r.body());
    assert_eq!(r.headers()["location"], "/");
    let v = wait_ready(&s.app, "my-clip").await;
    assert_eq!(v["has_audio"], true);
    assert_eq!(
        v["renditions"].as_array().unwrap().len(),
        1,
        "only rungs at or below 240p: {v}"
    );
    assert_eq!(v["title"], "my clip.mp4");

    // Duplicate id: 409 at once, and nothing changes.
    let before = s.app.content.list_all(None).await.unwrap().len();
    let r = upload(
        &s.app,
        &[("id", None, b"my-clip"), ("file", Some("x.mp4"), &data)],
    )
    .await;
    assert_eq!(r.status(), 409);
    assert!(String::from_utf8_lossy(r.body()).contains("my-clip"));
    assert_eq!(s.app.content.list_all(None).await.unwrap().len(), before);

    // The files.
    let m = get(&s.app, "/content/my-clip/manifest.mpd").await;
    assert_eq!(m.status(), 200);
    assert_eq!(m.headers()["content-type"], "application/dash+xml");
    assert!(
        m.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=10")
    );
    let mpd = String::from_utf8_lossy(m.body()).to_string();
    assert!(
        mpd.contains("init-$RepresentationID$.m4s")
            && mpd.contains("chunk-$RepresentationID$-$Number%05d$.m4s"),
        "{mpd}"
    );
    assert!(
        mpd.contains("contentType=\"audio\"") || mpd.contains("mimeType=\"audio/mp4\""),
        "audio set present: {mpd}"
    );
    let seg = get(&s.app, "/content/my-clip/chunk-0-00001.m4s").await;
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.headers()["content-type"], "video/iso.segment");
    assert_eq!(
        seg.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = seg.headers()["etag"].to_str().unwrap().to_string();
    let poster = get(&s.app, "/content/my-clip/poster.jpg").await;
    assert_eq!(poster.headers()["content-type"], "image/jpeg");
    assert_eq!(&poster.body()[..2], &[0xff, 0xd8], "a JPEG");

    let routes = filters::routes(s.app.clone());
    let r = warp::test::request()
        .path("/content/my-clip/chunk-0-00001.m4s")
        .header("range", "bytes=10-19")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.body().len(), 10);
    assert_eq!(&r.body()[..], &seg.body()[10..20]);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 10-19/{}", seg.body().len())
    );
    let r = warp::test::request()
        .path("/content/my-clip/chunk-0-00001.m4s")
        .header("range", "bytes=-5")
        .reply(&routes)
        .await;
    assert_eq!(&r.body()[..], &seg.body()[seg.body().len() - 5..]);
    let r = warp::test::request()
        .path("/content/my-clip/chunk-0-00001.m4s")
        .header("range", "bytes=99999999-")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 416);
    let r = warp::test::request()
        .path("/content/my-clip/chunk-0-00001.m4s")
        .header("if-none-match", &etag)
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 304);
    assert!(r.body().is_empty());
    let r = warp::test::request()
        .method("HEAD")
        .path("/content/my-clip/chunk-0-00001.m4s")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        seg.body().len().to_string().as_str()
    );
    assert!(r.body().is_empty());

    // Pages and API.
    let w = get(&s.app, "/videos/my-clip").await;
    assert_eq!(w.status(), 200);
    let html = String::from_utf8_lossy(w.body());
    assert!(html.contains("/content/my-clip/manifest.mpd"));
    let list: serde_json::Value =
        serde_json::from_slice(get(&s.app, "/api/videos").await.body()).unwrap();
    assert_eq!(list["items"][0]["id"], "my-clip");
    assert_eq!(get(&s.app, "/static/../../etc/passwd").await.status(), 404);
    let health = get(&s.app, "/healthz").await;
    assert_eq!(health.status(), 200);
    let metrics = String::from_utf8_lossy(get(&s.app, "/metrics").await.body()).to_string();
    assert!(
        metrics.contains(
            "tritontube_http_requests_total{route=\"/content/:id/:file\",status=\"206\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("tritontube_bytes_served_total"));
    assert!(metrics.contains("tritontube_transcode_queue_depth 0"));
    // Files fetched more than once came from memory the second time.
    let hits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tritontube_content_cache_hits_total "))
        .and_then(|v| v.parse().ok())
        .expect("cache hits in /metrics");
    assert!(hits > 0.0, "{metrics}");

    // Deleting needs the admin token: anonymous or wrong is 401 with a
    // body that says what is missing, and nothing is deleted.
    for auth in [None, Some("Bearer wrong"), Some("t0ken")] {
        let mut req = warp::test::request()
            .method("DELETE")
            .path("/api/videos/my-clip");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.reply(&routes).await;
        assert_eq!(r.status(), 401, "{auth:?}");
        let e: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert!(e["error"].as_str().unwrap().contains("token"), "{e}");
        assert_eq!(
            get(&s.app, "/content/my-clip/manifest.mpd").await.status(),
            200,
            "still served"
        );
    }
    // With it, delete removes files, then the record.
    let r = warp::test::request()
        .method("DELETE")
        .path("/api/videos/my-clip")
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 204);
    nothing_stored(&s.app).await;
    assert_eq!(
        get(&s.app, "/content/my-clip/manifest.mpd").await.status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clip_without_audio_has_no_audio_set() {
    let s = site(50 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let data = clip(tmp.path(), "silent.mp4", false);
    assert_eq!(
        upload(&s.app, &[("file", Some("silent.mp4"), &data)])
            .await
            .status(),
        303
    );
    let v = wait_ready(&s.app, "silent").await;
    assert_eq!(v["has_audio"], false);
    let mpd = String::from_utf8_lossy(get(&s.app, "/content/silent/manifest.mpd").await.body())
        .to_string();
    assert!(
        !mpd.contains("audio"),
        "no empty audio adaptation set: {mpd}"
    );
}

/// A portrait clip gets its ladder by its short side: a 720x1280 source
/// keeps its full width (before, its top rung was 594x1056), and the
/// manifest lists exactly those rungs.
#[tokio::test(flavor = "multi_thread")]
async fn a_portrait_clip_gets_rungs_by_its_short_side() {
    let s = site(50 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let path = small_clip(tmp.path(), "portrait.mp4", "720x1280", H264);
    let data = std::fs::read(path).unwrap();
    let r = upload(&s.app, &[("file", Some("portrait.mp4"), &data)]).await;
    assert_eq!(r.status(), 303, "{:?}", r.body());
    let v = wait_ready(&s.app, "portrait").await;
    let rungs: Vec<(u64, u64)> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    let expected = [(720, 1280), (468, 832), (360, 640)];
    assert_eq!(rungs, expected, "{v}");
    let mpd = String::from_utf8_lossy(get(&s.app, "/content/portrait/manifest.mpd").await.body())
        .to_string();
    let in_manifest: Vec<(u64, u64)> = mpd
        .split("<Representation ")
        .skip(1)
        .filter_map(|rep| {
            let tag = &rep[..rep.find('>')?];
            let num = |name: &str| -> Option<u64> {
                let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
                tag[at..].split('"').next()?.parse().ok()
            };
            Some((num("width")?, num("height")?))
        })
        .collect();
    assert_eq!(in_manifest, expected, "{mpd}");
    // The watch page sizes the player by the top rung.
    let w = get(&s.app, "/videos/portrait").await;
    assert!(
        String::from_utf8_lossy(w.body()).contains("data-w=\"720\" data-h=\"1280\""),
        "{:?}",
        w.body()
    );
}

/// `mp4` with its video track's matrix set to a quarter turn, the way a
/// phone marks a clip filmed upright (its frames stored sideways).
fn turned_upright(mp4: &[u8]) -> Vec<u8> {
    let mut d = mp4.to_vec();
    let at = d
        .windows(4)
        .position(|w| w == b"tkhd")
        .expect("a track header");
    assert_eq!(d[at + 4], 0, "a version 0 track header");
    // Flags, two times, track id, reserved, duration, eight reserved bytes,
    // layer, group, volume, reserved; then the matrix.
    let matrix = at + 4 + 4 + 4 * 5 + 8 + 2 + 2 + 2 + 2;
    let turned: [i32; 9] = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30];
    for (i, v) in turned.iter().enumerate() {
        d[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// A phone's portrait clip (640x360 frames, shown turned upright) gets the
/// portrait ladder, and its DASH frames are upright without any turn left
/// for the player to apply again.
#[tokio::test(flavor = "multi_thread")]
async fn a_clip_filmed_upright_is_transcoded_upright() {
    let s = site(50 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let path = small_clip(tmp.path(), "phone.mp4", "640x360", H264);
    let data = turned_upright(&std::fs::read(path).unwrap());
    let r = upload(&s.app, &[("file", Some("phone.mp4"), &data)]).await;
    assert_eq!(r.status(), 303, "{:?}", r.body());
    let v = wait_ready(&s.app, "phone").await;
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(360), Some(640)),
        "{v}"
    );
    let rungs: Vec<(u64, u64)> = v["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(rungs, [(360, 640)], "{v}");
    // The stream as a player gets it: init segment and first chunk.
    let mut stream = get(&s.app, "/content/phone/init-0.m4s")
        .await
        .body()
        .to_vec();
    stream.extend_from_slice(get(&s.app, "/content/phone/chunk-0-00001.m4s").await.body());
    let file = tmp.path().join("played.mp4");
    std::fs::write(&file, stream).unwrap();
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&file)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let video = &info["streams"][0];
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(360), Some(640)),
        "{info}"
    );
    assert!(
        !info.to_string().contains("rotation"),
        "no turn left for the player: {info}"
    );
}

/// dash.js and the favicon, with their content types and caching: the
/// versioned URL the watch page names is cached for good, any other name is
/// revalidated by ETag.
#[tokio::test(flavor = "multi_thread")]
async fn the_player_and_the_favicon_are_served_with_caching() {
    let s = site(50 * 1024 * 1024);
    assert!(
        s.app.assets.has_player(),
        "dash.js installed at the workspace root (run `npm ci`)"
    );
    let url = s.app.assets.dash_js_url();
    let (path, version) = url.split_once("?v=").expect("a versioned URL");
    assert_eq!(path, "/static/dash.all.min.js");

    let js = get(&s.app, &url).await;
    assert_eq!(js.status(), 200);
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        js.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(js.body().len() > 100_000);
    assert!(String::from_utf8_lossy(&js.body()[..200]).contains("license"));
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.trim_matches('"').starts_with(version),
        "{etag} {version}"
    );

    let plain = get(&s.app, path).await;
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.body(), js.body());
    assert_eq!(plain.headers()["cache-control"], "no-cache");
    let stale = get(&s.app, &format!("{path}?v=0000000000000000")).await;
    assert_eq!(stale.headers()["cache-control"], "no-cache");
    let routes = filters::routes(s.app.clone());
    let r = warp::test::request()
        .path(path)
        .header("if-none-match", &etag)
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 304);
    assert!(r.body().is_empty());
    let r = warp::test::request()
        .method("HEAD")
        .path(path)
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 200);

    let license = get(&s.app, "/static/dash.all.min.js.LICENSE.txt").await;
    assert_eq!(license.status(), 200);
    assert_eq!(
        license.headers()["content-type"],
        "text/plain; charset=utf-8"
    );

    for (path, kind) in [
        ("/favicon.ico", "image/x-icon"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&s.app, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], kind, "{path}");
        assert_eq!(
            r.headers()["cache-control"],
            "public, max-age=86400",
            "{path}"
        );
        assert!(r.headers().contains_key("etag"), "{path}");
    }
    for missing in [
        "/static/dash.all.debug.js",
        "/static/",
        "/static/a/dash.all.min.js",
        "/favicon.png",
    ] {
        assert_eq!(get(&s.app, missing).await.status(), 404, "{missing}");
    }
    let r = warp::test::request()
        .method("POST")
        .path("/favicon.ico")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 405);
}

/// Every page has one `<h1>`, labelled controls and a live region for
/// upload messages; the not-found page leads home.
#[tokio::test(flavor = "multi_thread")]
async fn pages_have_a_heading_labels_and_a_way_home() {
    let s = site(50 * 1024 * 1024);
    let home = get(&s.app, "/").await;
    let home = String::from_utf8_lossy(home.body()).to_string();
    assert_eq!(home.matches("<h1").count(), 1, "{home}");
    assert!(home.contains("<label for=\"upload-file\">"), "{home}");
    assert!(home.contains("aria-live=\"polite\""), "{home}");
    for path in ["/no/such/page", "/videos/nope"] {
        let r = get(&s.app, path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        let html = String::from_utf8_lossy(r.body()).to_string();
        assert_eq!(html.matches("<h1").count(), 1, "{path}: {html}");
        assert!(
            html.contains("<a href=\"/\">"),
            "{path}: a way home: {html}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let s = site(200 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let good = clip(tmp.path(), "g.mp4", false);

    // (what, form fields, expected status, words the message must contain)
    type Field<'a> = (&'a str, Option<&'a str>, Vec<u8>);
    let cases: Vec<(&str, Vec<Field<'_>>, u16, &str)> = vec![
        (
            "text renamed .mp4",
            vec![(
                "file",
                Some("notes.mp4"),
                b"just some text, not a video at all\n".repeat(20),
            )],
            400,
            "not a video",
        ),
        (
            "truncated mp4",
            vec![("file", Some("cut.mp4"), good[..good.len() / 3].to_vec())],
            400,
            "truncated",
        ),
        (
            "empty file",
            vec![("file", Some("empty.mp4"), Vec::new())],
            400,
            "empty",
        ),
        (
            "no file field",
            vec![("title", None, b"hello".to_vec())],
            400,
            "no `file` field",
        ),
        (
            "over the limit",
            vec![("file", Some("big.mp4"), vec![0u8; 300 * 1024])],
            413,
            "limit",
        ),
        (
            "id that cannot be made valid",
            vec![("file", Some("???.mp4"), good.clone())],
            400,
            "video id",
        ),
        (
            "invalid explicit id",
            vec![
                ("id", None, b"../etc".to_vec()),
                ("file", Some("a.mp4"), good.clone()),
            ],
            400,
            "video id",
        ),
    ];
    for (what, fields, status, needle) in cases {
        let fields: Vec<(&str, Option<&str>, &[u8])> = fields
            .iter()
            .map(|(n, f, d)| (*n, *f, d.as_slice()))
            .collect();
        let r = upload(&s.app, &fields).await;
        let body = page_text(r.body());
        assert_eq!(r.status().as_u16(), status, "{what}: {body}");
        assert!(
            body.contains(needle),
            "{what}: message says what was wrong: {body}"
        );
        nothing_stored(&s.app).await;
    }
    // The server still serves, and a good upload still works.
    assert_eq!(get(&s.app, "/").await.status(), 200);
    assert_eq!(
        upload(&s.app, &[("file", Some("g.mp4"), &good)])
            .await
            .status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_paths_and_unknown_videos() {
    let s = site(1024 * 1024);
    let routes = filters::routes(s.app.clone());
    for (path, status) in [
        ("/content/../x", 400),
        ("/content/..%2Fx/y", 400),
        ("/content/abc/", 400),
        ("/content/abc", 400),
        ("/content/abc/.hidden", 400),
        ("/content/nope/manifest.mpd", 404),
        ("/videos/nope", 404),
        ("/videos/..", 400),
        ("/api/videos/nope", 404),
        ("/no/such/route", 404),
    ] {
        let r = warp::test::request().path(path).reply(&routes).await;
        assert_eq!(r.status().as_u16(), status, "{path}: {:?}", r.body());
        assert!(!r.body().is_empty(), "{path}: says why");
    }
    let r = warp::test::request()
        .method("DELETE")
        .path("/api/videos/nope")
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 404);
    let e: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert!(e["error"].as_str().unwrap().contains("nope"));
    let r = warp::test::request()
        .path("/api/videos?limit=5&cursor=garbage")
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 400);
    nothing_stored(&s.app).await;
}

// ---------------------------------------------------------------------------
// Indirections: uploads that would make ffmpeg open another file.
//
// Each "secret" is a real, playable file on the server (160x120, unlike every
// clip uploaded here, which is 320x240): if an upload ever got ffmpeg to open
// one, it would be published as a video and these tests would see it.

/// A 1 s clip of `size` (`WxH`) made by ffmpeg with `codec` arguments, in
/// the container its name says.
fn small_clip(dir: &Path, name: &str, size: &str, codec: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let st = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc=size={size}:rate=25:duration=1"))
        .args(codec)
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success(), "ffmpeg made {name}");
    out
}

const H264: &[&str] = &["-c:v", "libx264", "-pix_fmt", "yuv420p"];

/// An HLS playlist with one segment, `entry`.
fn hls(entry: &str) -> Vec<u8> {
    format!("#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{entry}\n#EXT-X-ENDLIST\n")
        .into_bytes()
}

/// One refused upload: what it is, its file name, its body, and words the
/// refusal must contain.
type Refused = (&'static str, String, Vec<u8>, &'static str);

/// Playlists and scripts naming the secrets `ts` and `mp4`, each of which
/// made ffmpeg open and publish a secret before containers were checked.
fn playlists(ts: &str, mp4: &str) -> Vec<Refused> {
    // Up past the root from the ingest's temporary directory, then down.
    let relative = format!("{}{}", "../".repeat(32), ts.trim_start_matches('/'));
    let mut cases: Vec<Refused> = [
        ("HLS, absolute path", ts.to_string()),
        ("HLS, file: URL", format!("file:{ts}")),
        ("HLS, ../ path", relative),
        (
            "HLS, subfile entry",
            format!("subfile,,start,0,end,0,,:{ts}"),
        ),
        ("HLS, concat: entry", format!("concat:{ts}|{ts}")),
        ("HLS, data: entry", "data:video/mp2t;base64,R0dHRw==".into()),
    ]
    .into_iter()
    .map(|(what, entry)| {
        let needle = "\"hls\" is not an accepted video container";
        (what, "a.mp4".to_string(), hls(&entry), needle)
    })
    .collect();
    let mpd = format!(
        r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet mimeType="video/mp2t"><Representation id="0" bandwidth="100000"><BaseURL>{ts}</BaseURL></Representation></AdaptationSet></Period></MPD>
"#
    );
    cases.extend([
        (
            // ffmpeg 5.1 needs a tag such as TARGETDURATION to see HLS.
            "HLS without the tags ffmpeg needs",
            "a.m3u8".into(),
            format!("#EXTM3U\n#EXTINF:7.0,\n{ts}\n").into_bytes(),
            "not a video",
        ),
        (
            "ffconcat script",
            "a.mp4".into(),
            format!("ffconcat version 1.0\nfile {mp4}\n").into_bytes(),
            "\"concat\"",
        ),
        (
            "DASH manifest",
            "a.mpd".into(),
            mpd.into_bytes(),
            "\"dash\"",
        ),
    ]);
    cases
}

/// Other indirections: a network session, a subtitle index that opens a
/// second file, images (`png`, `jpg`: paths to `image2`), and protocol
/// syntax in the upload's name (with a body that is no video).
fn other_indirections(ts: &str, png: Vec<u8>, jpg: Vec<u8>) -> Vec<Refused> {
    let sdp = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";
    let vobsub = "# VobSub index file, v7 (do not modify this line!)\nsize: 160x120\nid: en, index: 0\ntimestamp: 00:00:00:000, filepos: 000000000\n";
    let text = b"just some text\n".repeat(10);
    vec![
        (
            "SDP session (network input)",
            "a.sdp".into(),
            sdp.into(),
            "\"sdp\"",
        ),
        (
            "VobSub index (opens a .sub)",
            "a.idx".into(),
            vobsub.into(),
            "\"vobsub\"",
        ),
        (
            "PNG named as an image2 pattern",
            "img%03d.png".into(),
            png,
            "\"png_pipe\"",
        ),
        ("a single JPEG", "still.jpg".into(), jpg, "\"jpeg_pipe\""),
        (
            "concat: protocol as the name",
            format!("concat:{ts}|{ts}"),
            text.clone(),
            "not a video",
        ),
        (
            "subfile protocol as the name",
            format!("subfile,,start,0,end,0,,:{ts}"),
            text.clone(),
            "not a video",
        ),
        (
            "data: URL as the name",
            "data:video/mp2t;base64,R0dHRw==".into(),
            text,
            "not a video",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn indirections_are_refused_by_format_and_leave_nothing() {
    let s = site(10 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let ts = small_clip(tmp.path(), "secret.ts", "160x120", H264);
    let mp4 = small_clip(tmp.path(), "secret.mp4", "160x120", H264);
    let png = small_clip(tmp.path(), "img001.png", "160x120", &["-frames:v", "1"]);
    let jpg = small_clip(tmp.path(), "still.jpg", "160x120", &["-frames:v", "1"]);
    let (ts, mp4) = (ts.display().to_string(), mp4.display().to_string());
    let (png, jpg) = (std::fs::read(png).unwrap(), std::fs::read(jpg).unwrap());
    let mut cases = playlists(&ts, &mp4);
    cases.extend(other_indirections(&ts, png, jpg));
    for (what, name, body, needle) in cases {
        let r = upload(&s.app, &[("id", None, b"x"), ("file", Some(&name), &body)]).await;
        let msg = page_text(r.body());
        assert_eq!(r.status().as_u16(), 400, "{what}: {msg}");
        assert!(msg.contains(needle), "{what}: says why: {msg}");
        nothing_stored(&s.app).await;
    }
    let r = upload(
        &s.app,
        &[("id", None, b"x"), ("file", Some("a.mp4"), &hls(&ts))],
    )
    .await;
    let msg = page_text(r.body());
    assert!(
        msg.contains("accepted: mp4/mov/3gp, matroska/webm, avi, MPEG-TS"),
        "says what is accepted: {msg}"
    );
}

/// An upload's file name is never read as a URL, pattern or protocol: with
/// one naming the secret, the video published is the upload itself.
#[tokio::test(flavor = "multi_thread")]
async fn upload_names_are_never_opened() {
    let s = site(10 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let ts = small_clip(tmp.path(), "secret.ts", "160x120", H264);
    let ts = ts.display().to_string();
    let good = std::fs::read(small_clip(tmp.path(), "g.mp4", "320x240", H264)).unwrap();
    for (id, name) in [
        ("concat", format!("concat:{ts}|{ts}")),
        ("subfile", format!("subfile,,start,0,end,0,,:{ts}")),
        ("pattern", "img%03d.png".to_string()),
    ] {
        let r = upload(
            &s.app,
            &[("id", None, id.as_bytes()), ("file", Some(&name), &good)],
        )
        .await;
        assert_eq!(r.status(), 303, "{name}: {:?}", r.body());
        let v = wait_ready(&s.app, id).await;
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(320), Some(240)),
            "{name}: {v}"
        );
    }
}

/// What cameras and editors write is still accepted and plays.
#[tokio::test(flavor = "multi_thread")]
async fn camera_and_editor_containers_are_accepted() {
    let s = site(10 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    for (name, codec) in [
        ("c.mp4", H264),
        ("c.mkv", H264),
        (
            "c.webm",
            &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "200k"][..],
        ),
        ("c.ts", H264),
        ("c.avi", &["-c:v", "mpeg4"][..]),
    ] {
        let data = std::fs::read(small_clip(tmp.path(), name, "320x240", codec)).unwrap();
        let id = &name[2..];
        let r = upload(
            &s.app,
            &[("id", None, id.as_bytes()), ("file", Some(name), &data)],
        )
        .await;
        assert_eq!(r.status(), 303, "{name}: {:?}", r.body());
    }
    // All queued at once; the one transcoder takes them in turn.
    for id in ["mp4", "mkv", "webm", "ts", "avi"] {
        let v = wait_ready(&s.app, id).await;
        assert_eq!(
            (v["width"].as_u64(), v["height"].as_u64()),
            (Some(320), Some(240)),
            "{id}: {v}"
        );
        let m = get(&s.app, &format!("/content/{id}/manifest.mpd")).await;
        assert_eq!(m.status(), 200, "{id}");
        let seg = get(&s.app, &format!("/content/{id}/chunk-0-00001.m4s")).await;
        assert_eq!(seg.status(), 200, "{id}: a segment is served");
        let poster = get(&s.app, &format!("/content/{id}/poster.jpg")).await;
        assert_eq!(&poster.body()[..2], &[0xff, 0xd8], "{id}: a poster");
    }
}

/// Log lines captured by a test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A refused upload is logged once, naming the format. (One thread, so that
/// the subscriber set for this test sees everything the upload logs.)
#[tokio::test(flavor = "current_thread")]
async fn a_refused_upload_is_logged_once() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = site(10 * 1024 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    let ts = small_clip(tmp.path(), "secret.ts", "160x120", H264);
    let body = hls(&ts.display().to_string());
    let r = upload(
        &s.app,
        &[("id", None, b"logged"), ("file", Some("a.mp4"), &body)],
    )
    .await;
    assert_eq!(r.status(), 400);
    nothing_stored(&s.app).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("logged")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("\"hls\" is not an accepted video container"),
        "{text}"
    );
}

/// A video deleted and uploaded again under the same id gets files of its
/// own (the generation is in their names), so a URL cached as immutable
/// never names two different contents, and nothing of the first upload is
/// served or kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_reused_id_never_reuses_a_url() {
    let s = site(50 * 1024 * 1024);
    let routes = filters::routes(s.app.clone());
    let tmp = tempfile::tempdir().unwrap();
    let first = clip(tmp.path(), "first.mp4", true);
    let second = clip(tmp.path(), "second.mp4", false);
    let r = upload(
        &s.app,
        &[("id", None, b"again"), ("file", Some("a.mp4"), &first)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let v1 = wait_ready(&s.app, "again").await;
    assert_eq!(
        v1["manifest"], "/content/again/manifest.mpd",
        "the course's names first"
    );
    let keys1: Vec<String> = s
        .app
        .content
        .list_all(None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    let r = warp::test::request()
        .method("DELETE")
        .path("/api/videos/again")
        .header("authorization", format!("Bearer {TOKEN}"))
        .reply(&routes)
        .await;
    assert_eq!(r.status(), 204);

    let r = upload(
        &s.app,
        &[("id", None, b"again"), ("file", Some("b.mp4"), &second)],
    )
    .await;
    assert_eq!(r.status(), 303);
    let v2 = wait_ready(&s.app, "again").await;
    assert_eq!(v2["manifest"], "/content/again/g2-manifest.mpd");
    assert_eq!(v2["has_audio"], false, "the second upload's facts");
    let keys2: Vec<String> = s
        .app
        .content
        .list_all(None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    assert!(!keys2.is_empty());
    for k in &keys2 {
        assert!(!keys1.contains(k), "{k} named by both uploads");
        assert!(k.starts_with("again/g2-"), "{k}");
    }
    // The first upload's URLs are gone, the second's are served, and its
    // manifest names its own segments.
    assert_eq!(
        get(&s.app, "/content/again/manifest.mpd").await.status(),
        404
    );
    let mpd = get(&s.app, "/content/again/g2-manifest.mpd").await;
    assert_eq!(mpd.status(), 200);
    let mpd = String::from_utf8_lossy(mpd.body()).to_string();
    assert!(mpd.contains("g2-init-$RepresentationID$.m4s"), "{mpd}");
    assert!(
        mpd.contains("g2-chunk-$RepresentationID$-$Number%05d$.m4s"),
        "{mpd}"
    );
    let page = get(&s.app, "/videos/again").await;
    let html = String::from_utf8_lossy(page.body()).to_string();
    assert!(html.contains("/content/again/g2-manifest.mpd"), "{html}");
    assert!(html.contains("/content/again/g2-poster.jpg"), "{html}");
}

/// A client that goes away in the middle of its upload (the request's
/// future dropped) leaves no record behind, and the id can be used again.
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_upload_leaves_no_record() {
    let s = site(50 * 1024 * 1024);
    let ingest = s.app.ingest.clone();
    let id: tritontube_core::VideoId = "gone".parse().unwrap();
    let request = {
        let id = id.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            // Half a body, then nothing: the client stalls, then vanishes.
            let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(b"half a video"),
            )])
            .chain(futures::stream::pending());
            ingest.receive(id, "gone", body).await
        })
    };
    // The record exists while the body is being received...
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.app.meta.get_video(&id).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no record was made");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and is gone soon after the request is dropped.
    request.abort();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.app.meta.get_video(&id).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the record stayed behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = clip(tmp.path(), "again.mp4", false);
    let r = upload(
        &s.app,
        &[
            ("id", None, b"gone".as_slice()),
            ("file", Some("a.mp4"), &data),
        ],
    )
    .await;
    assert_eq!(r.status(), 303, "the id is free again");
    wait_ready(&s.app, "gone").await;
}

/// A delete that arrives while the upload's body is still on its way stops
/// the upload at once: the uploader is told why, and the id is free.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_during_the_upload_stops_it() {
    let s = site(50 * 1024 * 1024);
    let ingest = s.app.ingest.clone();
    let id: tritontube_core::VideoId = "cut-short".parse().unwrap();
    let request = {
        let (ingest, id) = (ingest.clone(), id.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let body = futures::stream::iter(vec![Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(b"the start of a video"),
            )])
            .chain(futures::stream::pending());
            ingest.receive(id, "cut short", body).await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.app.meta.get_video(&id).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no record was made");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = ingest.delete(&id, Duration::from_secs(5)).await.unwrap();
    assert_eq!(done, tritontube_core::ingest::Deletion::Done);
    let refused = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("the upload stopped")
        .unwrap();
    let e = refused.unwrap_err();
    assert!(
        e.to_string()
            .contains("deleted while it was being uploaded"),
        "{e}"
    );
    assert!(s.app.meta.get_video(&id).await.is_err());
    nothing_stored(&s.app).await;
}
