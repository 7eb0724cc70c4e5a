//! The HTML pages: the home page (upload form and watch list) and the watch
//! page (dash.js player, or the browser's own HLS player where there are no
//! Media Source Extensions). Plain HTML and a little JavaScript, no framework.

use crate::metadata::{Video, VideoState};

/// Escapes text for HTML element and attribute content.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The site's style sheet, in every page (small enough that a separate file
/// would cost more than it saves).
///
/// The watch page's player is sized from the video's aspect ratio (`--w`,
/// `--h`, set on the element) so that it, and the quality menu under it,
/// always fit in the window: as wide as the card, unless that would make it
/// taller than the window less `--chrome` (what is above and below it), in
/// which case it is as tall as that and as wide as its aspect ratio makes it.
const STYLE: &str = r#"
:root{--vh:100vh;--chrome:11.5rem}
@supports (height:100dvh){:root{--vh:100dvh}}
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#182b49;color:#fff;padding:14px 24px}header a{color:#ffcd00;text-decoration:none;font-weight:700;font-size:1.3em}
main{max-width:1100px;margin:0 auto;padding:20px}
h1{font-size:1.5em;margin:0 0 16px}h2{font-size:1.2em;margin:0 0 12px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px;margin-bottom:20px}
.card h1{margin-bottom:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:16px;list-style:none;padding:0}
.grid li{background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 3px rgba(0,0,0,.12)}
.grid a{color:inherit;text-decoration:none}.grid img,.grid .ph{width:100%;aspect-ratio:16/9;object-fit:cover;background:#223;display:block}
.grid .meta{padding:8px 10px}.grid .t{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.state{font-size:.85em;color:#667}.state.failed{color:#b00020}progress{width:100%}
.fields{display:flex;flex-wrap:wrap;gap:8px 20px;align-items:center}.fields label{margin-right:6px}
#msg{margin-top:8px}#msg.err{color:#b00020}
.watch h1{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.player{display:block;margin:0 auto;background:#000;border-radius:6px;object-fit:contain;
 aspect-ratio:var(--w)/var(--h);height:auto;
 width:min(100%,max(10rem,calc((var(--vh) - var(--chrome)) * var(--w) / var(--h))));
 max-height:calc(var(--vh) - var(--chrome))}
.player-controls{margin:12px 0 0}
"#;

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><link rel=\"icon\" href=\"/favicon.ico\" sizes=\"32x32\"><link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <style>{STYLE}</style></head><body><header><a href=\"/\">TritonTube</a></header><main>{body}</main></body></html>",
        esc(title)
    )
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

fn state_line(v: &Video) -> String {
    match &v.state {
        VideoState::Ready => format!(
            "<span class=\"state\">{}</span>",
            duration(v.facts.duration_secs)
        ),
        VideoState::Uploaded => "<span class=\"state\">uploaded, waiting</span>".into(),
        VideoState::Processing { progress } => {
            format!("<span class=\"state\">processing {progress:.0}%</span>")
        }
        VideoState::Failed { reason } => format!(
            "<span class=\"state failed\">failed: {}</span>",
            esc(reason)
        ),
        VideoState::Deleting => "<span class=\"state\">deleting</span>".into(),
    }
}

/// The home page.
pub fn index(videos: &[Video], max_upload: u64) -> String {
    let mut list = String::new();
    for v in videos {
        let thumb = if v.state == VideoState::Ready {
            format!(
                "<img src=\"/content/{}/{}\" alt=\"\" loading=\"lazy\">",
                esc(v.id.as_str()),
                esc(&v.file_name("poster.jpg"))
            )
        } else {
            "<div class=\"ph\"></div>".into()
        };
        list.push_str(&format!(
            "<li><a href=\"/videos/{id}\">{thumb}<div class=\"meta\"><div class=\"t\" title=\"{t}\">{t}</div>{s}</div></a></li>",
            id = esc(v.id.as_str()),
            t = esc(&v.title),
            s = state_line(v),
        ));
    }
    let list = if videos.is_empty() {
        "<p>No videos yet. Upload one!</p>".to_string()
    } else {
        format!("<ul class=\"grid\" id=\"videos\">{list}</ul>")
    };
    let body = format!(
        r#"<h1>Videos</h1>
<section class="card"><h2>Upload a video</h2>
<form id="upload" action="/upload" method="post" enctype="multipart/form-data">
<p class="fields"><span><label for="upload-file">Video file</label><input id="upload-file" type="file" name="file" accept="video/*" required></span></p>
<p class="fields"><span><label for="upload-id">Id (optional)</label><input id="upload-id" type="text" name="id" pattern="[A-Za-z0-9_][A-Za-z0-9._-]*" maxlength="128" placeholder="from the file name"></span>
<span><label for="upload-title">Title (optional)</label><input id="upload-title" type="text" name="title" maxlength="200"></span></p>
<p><button type="submit">Upload</button> <span class="state">up to {max} MiB</span></p>
<div id="upload-status" aria-live="polite"><progress id="bar" max="100" value="0" aria-label="Upload progress" hidden></progress><div id="msg"></div></div>
</form></section>
<section><h2>Watch</h2>{list}</section>
<script>
const form = document.getElementById('upload'), bar = document.getElementById('bar'), msg = document.getElementById('msg');
form.addEventListener('submit', (ev) => {{
  ev.preventDefault();
  const data = new FormData(form);
  const xhr = new XMLHttpRequest();
  xhr.open('POST', '/upload');
  bar.hidden = false; bar.value = 0; msg.textContent = 'Uploading…'; msg.className = '';
  xhr.upload.onprogress = (e) => {{ if (e.lengthComputable) {{ bar.value = 100 * e.loaded / e.total; msg.textContent = 'Uploading… ' + Math.floor(bar.value) + '%'; }} }};
  xhr.onload = () => {{
    if (xhr.status >= 200 && xhr.status < 400) {{ msg.textContent = 'Uploaded; processing.'; location.href = '/'; }}
    else {{
      // The answer is an error page: say what its message says.
      const p = new DOMParser().parseFromString(xhr.responseText, 'text/html').querySelector('main p');
      msg.className = 'err'; msg.textContent = 'Upload refused (' + xhr.status + '): ' + (p ? p.textContent : xhr.statusText); bar.hidden = true;
    }}
  }};
  xhr.onerror = () => {{ msg.className = 'err'; msg.textContent = 'Upload failed: the connection was lost.'; bar.hidden = true; }};
  xhr.send(data);
}});
const videos = document.getElementById('videos');
if (videos && /processing|waiting/.test(videos.textContent)) {{
  setTimeout(() => location.reload(), 3000);
}}
</script>"#,
        max = max_upload / (1024 * 1024),
    );
    layout("TritonTube", &body)
}

/// The watch page; `dash_js` is the URL of the player's script
/// ([`super::Assets::dash_js_url`]), `playback_js` the URL of the choice
/// between it and native HLS ([`super::Assets::playback_js_url`]), and
/// `hls_manifest` the URL of the video's HLS master playlist, if it has one.
pub fn watch(v: &Video, dash_js: &str, playback_js: &str, hls_manifest: Option<&str>) -> String {
    let id = esc(v.id.as_str());
    let (poster, manifest) = (
        esc(&v.file_name("poster.jpg")),
        esc(&v.file_name("manifest.mpd")),
    );
    let title = esc(&v.title);
    let heading = format!("<h1 title=\"{title}\">{title}</h1>");
    let body = match &v.state {
        VideoState::Ready => {
            let (w, h) = frame(v);
            format!(
                r#"<section class="card watch">{heading}
<video id="player" class="player" style="--w:{w};--h:{h}" width="{w}" height="{h}" controls muted playsinline poster="/content/{id}/{poster}"></video>
<p class="player-controls fields"><span><label for="quality">Quality</label><select id="quality"><option value="auto">Auto</option></select></span>
<span class="state" id="info">{dur} · {sw}×{sh}</span></p>
<div id="msg" aria-live="polite"></div></section>
<script src="{playback_js}"></script>
<script src="{js}"></script>
<script>
window.playerError = null;
const fail = (what) => {{
  window.playerError = what;
  const m = document.getElementById('msg'); m.className = 'err'; m.textContent = 'Playback error: ' + what;
}};
if (TritonTubePlayback.start(document.getElementById('player'), {{hls: {hls}, onError: fail}}) === 'dash') {{
const player = dashjs.MediaPlayer().create();
player.initialize(document.getElementById('player'), '/content/{id}/{manifest}', true);
player.on(dashjs.MediaPlayer.events.ERROR, (e) => fail(JSON.stringify(e.error || e)));
player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {{
  const sel = document.getElementById('quality');
  const reps = player.getRepresentationsByType ? player.getRepresentationsByType('video') : [];
  reps.forEach((r, i) => {{ const o = document.createElement('option'); o.value = i; o.textContent = (r.width && r.height ? Math.min(r.width, r.height) : '?') + 'p'; sel.appendChild(o); }});
  sel.onchange = () => {{
    const auto = sel.value === 'auto';
    player.updateSettings({{ streaming: {{ abr: {{ autoSwitchBitrate: {{ video: auto }} }} }} }});
    if (!auto) player.setRepresentationForTypeByIndex('video', parseInt(sel.value), true);
  }};
}});
}}
</script>"#,
                js = esc(dash_js),
                playback_js = esc(playback_js),
                hls = hls_manifest.map_or("null".into(), |u| format!("'{}'", esc(u))),
                dur = duration(v.facts.duration_secs),
                sw = v.facts.width,
                sh = v.facts.height,
            )
        }
        VideoState::Uploaded | VideoState::Processing { .. } => {
            let p = match v.state {
                VideoState::Processing { progress } => progress,
                _ => 0.0,
            };
            format!(
                r#"<section class="card watch">{heading}<div aria-live="polite"><p>Processing: <span id="pct">{p:.0}</span>%</p>
<progress id="bar" max="100" value="{p:.0}" aria-label="Processing progress"></progress></div>
<script>
setInterval(async () => {{
  const r = await fetch('/api/videos/{id}'); if (!r.ok) return;
  const v = await r.json();
  if (v.state !== 'processing' && v.state !== 'uploaded') location.reload();
  document.getElementById('pct').textContent = Math.floor(v.progress); document.getElementById('bar').value = v.progress;
}}, 1000);
</script></section>"#
            )
        }
        VideoState::Failed { reason } => format!(
            "<section class=\"card watch\">{heading}<p class=\"state failed\">This video could not be processed: {}</p><p><a href=\"/\">Home</a></p></section>",
            esc(reason)
        ),
        VideoState::Deleting => format!(
            "<section class=\"card watch\">{heading}<p class=\"state\">This video is being deleted.</p><p><a href=\"/\">Home</a></p></section>"
        ),
    };
    layout(&v.title, &body)
}

/// The frame the player shows: the top rung's (the source's, cropped to an
/// exact aspect ratio), else the source's, else 16:9.
fn frame(v: &Video) -> (u32, u32) {
    let top = v.facts.renditions.first().map(|r| (r.width, r.height));
    match top.unwrap_or((v.facts.width, v.facts.height)) {
        (w, h) if w > 0 && h > 0 => (w, h),
        _ => (16, 9),
    }
}

/// A page for an error: its status, the message, and a way home.
pub fn error(status: u16, message: &str) -> String {
    let reason = warp::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    layout(
        &format!("{reason} · TritonTube"),
        &format!(
            "<section class=\"card\"><h1>{status} {reason}</h1><p>{}</p><p><a href=\"/\">Back to the videos</a></p></section>",
            esc(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::VideoId;
    use crate::metadata::Rendition;

    fn video(state: VideoState) -> Video {
        let mut v = Video::new(VideoId::new("clip").unwrap(), "A <clip>");
        v.state = state;
        v.facts.width = 1080;
        v.facts.height = 1920;
        v.facts.renditions = vec![Rendition {
            id: "0".into(),
            width: 1080,
            height: 1920,
            bitrate: 5_000_000,
        }];
        v
    }

    fn every_page() -> Vec<(String, String)> {
        let mut pages = vec![
            ("index, empty".to_string(), index(&[], 1 << 30)),
            (
                "index".to_string(),
                index(&[video(VideoState::Ready)], 1 << 30),
            ),
            ("error".to_string(), error(404, "no such video")),
        ];
        for state in [
            VideoState::Ready,
            VideoState::Uploaded,
            VideoState::Processing { progress: 40.0 },
            VideoState::Failed {
                reason: "bad".into(),
            },
            VideoState::Deleting,
        ] {
            pages.push((
                format!("watch {state:?}"),
                watch(&video(state), "/static/dash.all.min.js?v=1", "/p.js", None),
            ));
        }
        pages
    }

    /// The value of attribute `name` in the tag starting at `tag`.
    fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let tag = &tag[..tag.find('>')?];
        let rest = &tag[tag.find(&format!(" {name}=\""))? + name.len() + 3..];
        Some(&rest[..rest.find('"')?])
    }

    #[test]
    fn every_page_has_one_h1_and_a_favicon() {
        for (name, html) in every_page() {
            assert_eq!(html.matches("<h1").count(), 1, "{name}: {html}");
            assert!(html.contains("href=\"/favicon.ico\""), "{name}");
        }
    }

    #[test]
    fn every_form_control_has_a_label() {
        for (name, html) in every_page() {
            for tag in ["<input", "<select", "<textarea"] {
                for (at, _) in html.match_indices(tag) {
                    let id = attr(&html[at..], "id")
                        .unwrap_or_else(|| panic!("{name}: a control without an id"));
                    assert!(
                        html.contains(&format!("<label for=\"{id}\">")),
                        "{name}: no label for #{id}"
                    );
                }
            }
        }
    }

    #[test]
    fn progress_and_messages_are_announced() {
        let home = index(&[], 1 << 30);
        let live = &home[home.find("aria-live=\"polite\"").expect("a live region")..];
        let end = live.find("</form>").unwrap();
        assert!(live[..end].contains("id=\"bar\"") && live[..end].contains("id=\"msg\""));
        let ready = watch(&video(VideoState::Ready), "/x.js", "/p.js", None);
        assert!(ready.contains("<div id=\"msg\" aria-live=\"polite\">"));
        let processing = watch(
            &video(VideoState::Processing { progress: 1.0 }),
            "/x.js",
            "/p.js",
            None,
        );
        assert!(processing.contains("aria-live=\"polite\"><p>Processing"));
    }

    #[test]
    fn the_error_page_has_a_way_home() {
        let html = error(404, "no <such> video");
        assert!(html.contains("<h1>404 Not Found</h1>"), "{html}");
        assert!(html.contains("no &lt;such&gt; video"));
        assert!(html.contains("<a href=\"/\">"));
    }

    #[test]
    fn the_player_is_sized_from_the_top_rung_and_loads_the_versioned_script() {
        let html = watch(
            &video(VideoState::Ready),
            "/static/dash.all.min.js?v=abc",
            "/p.js",
            None,
        );
        assert!(html.contains("style=\"--w:1080;--h:1920\""), "{html}");
        assert!(html.contains("<script src=\"/static/dash.all.min.js?v=abc\"></script>"));
        let mut v = video(VideoState::Ready);
        v.facts.renditions.clear();
        v.facts.width = 0;
        assert!(watch(&v, "/x.js", "/p.js", None).contains("style=\"--w:16;--h:9\""));
    }

    #[test]
    fn the_player_is_chosen_before_dash_js_starts_with_the_hls_playlist_if_any() {
        let ready = video(VideoState::Ready);
        let html = watch(
            &ready,
            "/d.js",
            "/static/playback.js?v=1",
            Some("/content/v/master.m3u8"),
        );
        let choice = html
            .find("<script src=\"/static/playback.js?v=1\"></script>")
            .unwrap();
        assert!(
            choice < html.find("<script src=\"/d.js\"></script>").unwrap(),
            "{html}"
        );
        let start = html.find("TritonTubePlayback.start(").unwrap();
        assert!(
            html[start..].contains("{hls: '/content/v/master.m3u8', onError: fail}) === 'dash'")
        );
        assert!(
            start < html.find("dashjs.MediaPlayer()").unwrap(),
            "dash.js only if chosen"
        );
        let html = watch(&ready, "/d.js", "/p.js", None);
        assert!(
            html.contains("{hls: null, onError: fail}"),
            "a video without HLS: {html}"
        );
    }
}
