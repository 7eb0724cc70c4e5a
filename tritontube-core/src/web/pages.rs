//! The HTML pages: the home page (upload form and watch list) and the watch
//! page (dash.js player). Plain HTML and a little JavaScript, no framework.

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

const STYLE: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#182b49;color:#fff;padding:14px 24px}header a{color:#ffcd00;text-decoration:none;font-weight:700;font-size:1.3em}
main{max-width:1100px;margin:0 auto;padding:20px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.12);padding:16px;margin-bottom:20px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:16px;list-style:none;padding:0}
.grid li{background:#fff;border-radius:8px;overflow:hidden;box-shadow:0 1px 3px rgba(0,0,0,.12)}
.grid a{color:inherit;text-decoration:none}.grid img,.grid .ph{width:100%;aspect-ratio:16/9;object-fit:cover;background:#223;display:block}
.grid .meta{padding:8px 10px}.grid .t{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.state{font-size:.85em;color:#667}.state.failed{color:#b00020}progress{width:100%}
#msg{margin-top:8px}#msg.err{color:#b00020}video{width:100%;background:#000;border-radius:6px}
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
    if videos.is_empty() {
        list.push_str("<p>No videos yet. Upload one!</p>");
    }
    let body = format!(
        r#"<section class="card"><h2>Upload a video</h2>
<form id="upload" action="/upload" method="post" enctype="multipart/form-data">
<p><input type="file" name="file" accept="video/*" required></p>
<p><label>Id (optional) <input type="text" name="id" pattern="[A-Za-z0-9_][A-Za-z0-9._-]*" maxlength="128" placeholder="from the file name"></label>
<label>Title (optional) <input type="text" name="title" maxlength="200"></label></p>
<p><button type="submit">Upload</button> <span class="state">up to {max} MiB</span></p>
<progress id="bar" max="100" value="0" hidden></progress><div id="msg"></div>
</form></section>
<section><h2>Watch</h2><ul class="grid" id="videos">{list}</ul></section>
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
    else {{ msg.className = 'err'; msg.textContent = 'Upload refused (' + xhr.status + '): ' + xhr.responseText; bar.hidden = true; }}
  }};
  xhr.onerror = () => {{ msg.className = 'err'; msg.textContent = 'Upload failed: the connection was lost.'; bar.hidden = true; }};
  xhr.send(data);
}});
if (document.querySelector('.state:not(.failed)') && /processing|waiting/.test(document.getElementById('videos').textContent)) {{
  setTimeout(() => location.reload(), 3000);
}}
</script>"#,
        max = max_upload / (1024 * 1024),
    );
    layout("TritonTube", &body)
}

/// The watch page; `dash_js` is the URL of the player's script
/// ([`super::Assets::dash_js_url`]).
pub fn watch(v: &Video, dash_js: &str) -> String {
    let id = esc(v.id.as_str());
    let (poster, manifest) = (
        esc(&v.file_name("poster.jpg")),
        esc(&v.file_name("manifest.mpd")),
    );
    let title = esc(&v.title);
    let body = match &v.state {
        VideoState::Ready => format!(
            r#"<section class="card"><h2>{title}</h2>
<video id="player" controls muted playsinline poster="/content/{id}/{poster}"></video>
<p><label>Quality <select id="quality"><option value="auto">Auto</option></select></label>
<span class="state" id="info">{dur} · {w}×{h}</span></p>
<div id="msg"></div></section>
<script src="{js}"></script>
<script>
window.playerError = null;
const player = dashjs.MediaPlayer().create();
player.initialize(document.getElementById('player'), '/content/{id}/{manifest}', true);
player.on(dashjs.MediaPlayer.events.ERROR, (e) => {{
  window.playerError = JSON.stringify(e.error || e);
  const m = document.getElementById('msg'); m.className = 'err'; m.textContent = 'Playback error: ' + window.playerError;
}});
player.on(dashjs.MediaPlayer.events.STREAM_INITIALIZED, () => {{
  const sel = document.getElementById('quality');
  const reps = player.getRepresentationsByType ? player.getRepresentationsByType('video') : [];
  reps.forEach((r, i) => {{ const o = document.createElement('option'); o.value = i; o.textContent = (r.height || '?') + 'p'; sel.appendChild(o); }});
  sel.onchange = () => {{
    const auto = sel.value === 'auto';
    player.updateSettings({{ streaming: {{ abr: {{ autoSwitchBitrate: {{ video: auto }} }} }} }});
    if (!auto) player.setRepresentationForTypeByIndex('video', parseInt(sel.value), true);
  }};
}});
</script>"#,
            js = esc(dash_js),
            dur = duration(v.facts.duration_secs),
            w = v.facts.width,
            h = v.facts.height,
        ),
        VideoState::Uploaded | VideoState::Processing { .. } => {
            let p = match v.state {
                VideoState::Processing { progress } => progress,
                _ => 0.0,
            };
            format!(
                r#"<section class="card"><h2>{title}</h2><p>Processing: <span id="pct">{p:.0}</span>%</p>
<progress id="bar" max="100" value="{p:.0}"></progress>
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
            "<section class=\"card\"><h2>{title}</h2><p class=\"state failed\">This video could not be processed: {}</p></section>",
            esc(reason)
        ),
        VideoState::Deleting => format!(
            "<section class=\"card\"><h2>{title}</h2><p class=\"state\">This video is being deleted.</p><p><a href=\"/\">Home</a></p></section>"
        ),
    };
    layout(&v.title, &body)
}

/// A page for an error.
pub fn error(status: u16, message: &str) -> String {
    layout(
        "TritonTube",
        &format!(
            "<section class=\"card\"><h2>{status}</h2><p>{}</p><p><a href=\"/\">Home</a></p></section>",
            esc(message)
        ),
    )
}
