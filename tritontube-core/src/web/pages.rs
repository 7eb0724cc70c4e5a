//! The HTML pages: the home page (upload form, search and the list of
//! videos), the watch page (dash.js player, and edit and delete for its
//! uploader and admins), the sign-in page and error pages. Every page's
//! header shows who is signed in ([`Account`]).
//!
//! Each page is an askama template under `tritontube-core/templates/`,
//! checked and built into the binary at compile time; askama escapes every
//! value for HTML. Pages hold no inline script or style: their behaviour is
//! in `static/home.js` and `static/watch.js`, their look in
//! `static/site.css` ([`super::assets::SITE_FILES`]), which lets the
//! Content-Security-Policy ([`CONTENT_SECURITY_POLICY`]) forbid inline
//! script altogether.

use askama::Template;

use super::assets::{self, Assets};
use crate::metadata::{Video, VideoState};

/// The policy every answer carries: scripts, styles and everything else
/// only from this site (no inline script or style, no plug-ins, no
/// framing); media also from `blob:`, where the player's media source
/// lives.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; \
     worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// What the upload form's Id field accepts: a [`crate::VideoId`]. Written
/// for the `v`-flag regular expressions browsers compile `pattern` with
/// (a `-` in a class must be escaped there).
pub const ID_PATTERN: &str = r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*";

/// The longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The longest description accepted, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 5000;
/// Videos on one page of the home page's list.
pub const HOME_PAGE_SIZE: usize = 24;

/// The URLs of the files pages load, each naming its content.
#[derive(Debug, Clone)]
pub struct SiteUrls {
    /// The style sheet.
    pub css: String,
    /// The home page's script.
    pub home_js: String,
    /// The watch page's script.
    pub watch_js: String,
    /// The watch page's choice of player (see [`assets::PLAYBACK_JS`]).
    pub playback_js: String,
    /// dash.js.
    pub dash_js: String,
    /// Whether dash.js is there to load.
    pub has_player: bool,
}

impl SiteUrls {
    /// The URLs of `assets`'s files.
    pub fn of(assets: &Assets) -> SiteUrls {
        SiteUrls {
            css: assets.site_url("site.css"),
            home_js: assets.site_url("home.js"),
            watch_js: assets.site_url("watch.js"),
            playback_js: assets.site_url(assets::PLAYBACK_JS),
            dash_js: assets.dash_js_url(),
            has_player: assets.has_player(),
        }
    }

    /// The URLs of the built-in site files, without the player (for pages
    /// made where no [`Assets`] is at hand: error pages).
    pub fn built_in() -> SiteUrls {
        SiteUrls::of(&assets::BUILT_IN)
    }
}

/// Who is looking at a page, for its header and forms.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// The signed-in user's name; `None` for an anonymous visitor.
    pub name: Option<String>,
    /// The session's CSRF token, which every form of the page sends back
    /// (empty when no one is signed in).
    pub csrf: String,
}

impl Account {
    /// The account of a signed-in caller, or an anonymous visitor.
    pub fn of(signed_in: Option<&super::auth::SignedIn>) -> Account {
        match signed_in {
            Some(s) => Account {
                name: Some(s.user.name.clone()),
                csrf: s.csrf.clone(),
            },
            None => Account::default(),
        }
    }
}

/// `m:ss` of a duration in seconds.
fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// A video in the home page's list.
#[derive(Debug, Clone)]
pub struct Tile {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its description.
    pub description: String,
    /// The poster's URL, once it is ready.
    pub poster: Option<String>,
    /// Where it is: its duration when ready, else its state in words.
    pub state: String,
    /// Whether processing failed.
    pub failed: bool,
}

impl From<&Video> for Tile {
    fn from(v: &Video) -> Tile {
        let state = match &v.state {
            VideoState::Ready => duration(v.facts.duration_secs),
            VideoState::Uploaded => "uploaded, waiting".into(),
            VideoState::Processing { progress } => format!("processing {progress:.0}%"),
            VideoState::Failed { reason } => format!("failed: {reason}"),
            VideoState::Deleting => "deleting".into(),
        };
        Tile {
            id: v.id.to_string(),
            title: v.title.clone(),
            description: v.description.clone(),
            poster: (v.state == VideoState::Ready)
                .then(|| format!("/content/{}/{}", v.id, v.file_name("poster.jpg"))),
            state,
            failed: matches!(v.state, VideoState::Failed { .. }),
        }
    }
}

/// The home page.
#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    site: &'a SiteUrls,
    account: &'a Account,
    can_upload: bool,
    tiles: Vec<Tile>,
    query: &'a str,
    more_href: String,
    page_size: usize,
    max_upload_bytes: u64,
    max_upload_mib: u64,
    id_pattern: &'static str,
    max_title: usize,
    max_description: usize,
}

/// What the home page shows.
#[derive(Debug, Clone, Copy)]
pub struct Home<'a> {
    /// This page of videos, newest first.
    pub videos: &'a [Video],
    /// The search words it shows the videos of (empty: all).
    pub query: &'a str,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<&'a str>,
    /// The largest upload accepted, in bytes.
    pub max_upload_bytes: u64,
    /// Who is looking.
    pub account: &'a Account,
    /// Whether they may upload (signed in, or uploads are public): the
    /// upload form is shown only then.
    pub can_upload: bool,
}

/// Percent-encodes `s` for a URL's query.
fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The home page.
pub fn index(site: &SiteUrls, home: Home<'_>) -> String {
    let more_href = match home.next_cursor {
        Some(c) if home.query.is_empty() => format!("/?cursor={}", query_value(c)),
        Some(c) => format!("/?q={}&cursor={}", query_value(home.query), query_value(c)),
        None => String::new(),
    };
    IndexPage {
        site,
        account: home.account,
        can_upload: home.can_upload,
        tiles: home.videos.iter().map(Tile::from).collect(),
        query: home.query,
        more_href,
        page_size: HOME_PAGE_SIZE,
        max_upload_bytes: home.max_upload_bytes,
        max_upload_mib: home.max_upload_bytes / (1024 * 1024),
        id_pattern: ID_PATTERN,
        max_title: MAX_TITLE_CHARS,
        max_description: MAX_DESCRIPTION_CHARS,
    }
    .render()
    .unwrap_or_else(render_failed)
}

/// The watch page.
#[derive(Template)]
#[template(path = "watch.html")]
struct WatchPage<'a> {
    site: &'a SiteUrls,
    account: &'a Account,
    /// Whether the viewer may edit and delete it (shows the buttons).
    can_edit: bool,
    max_title: usize,
    max_description: usize,
    id: &'a str,
    title: &'a str,
    description: &'a str,
    state: &'static str,
    ready: bool,
    processing: bool,
    failed: bool,
    deleting: bool,
    percent: u32,
    reason: &'a str,
    width: u32,
    height: u32,
    poster: String,
    manifest: String,
    /// The HLS master playlist, for browsers without Media Source
    /// Extensions (a video transcoded before HLS has none).
    hls: Option<&'a str>,
    info: String,
}

/// The watch page of `v`: its player once it is ready, its progress while
/// it is processed (the page's script turns one into the other); with
/// `can_edit`, forms to edit its title and description and to delete it.
pub fn watch(
    site: &SiteUrls,
    v: &Video,
    hls: Option<&str>,
    account: &Account,
    can_edit: bool,
) -> String {
    let (width, height) = frame(v);
    let (percent, reason) = match &v.state {
        VideoState::Processing { progress } => (progress.clamp(0.0, 100.0) as u32, ""),
        VideoState::Failed { reason } => (0, reason.as_str()),
        _ => (0, ""),
    };
    let phase = v.state.phase();
    WatchPage {
        site,
        account,
        can_edit,
        max_title: MAX_TITLE_CHARS,
        max_description: MAX_DESCRIPTION_CHARS,
        id: v.id.as_str(),
        title: &v.title,
        description: &v.description,
        state: v.state.name(),
        ready: v.state == VideoState::Ready,
        processing: matches!(
            v.state,
            VideoState::Uploaded | VideoState::Processing { .. }
        ),
        failed: phase == crate::metadata::Phase::Failed,
        deleting: phase == crate::metadata::Phase::Deleting,
        percent,
        reason,
        width,
        height,
        poster: format!("/content/{}/{}", v.id, v.file_name("poster.jpg")),
        manifest: format!("/content/{}/{}", v.id, v.file_name("manifest.mpd")),
        hls,
        info: format!(
            "{} · {}×{}",
            duration(v.facts.duration_secs),
            v.facts.width,
            v.facts.height
        ),
    }
    .render()
    .unwrap_or_else(render_failed)
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

/// An error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    site: &'a SiteUrls,
    account: &'a Account,
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// A page for an error: its status, the message, and a way home.
pub fn error(status: u16, message: &str) -> String {
    let reason = warp::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    ErrorPage {
        site: &SiteUrls::built_in(),
        account: &Account::default(),
        status,
        reason,
        message,
    }
    .render()
    .unwrap_or_else(render_failed)
}

/// The sign-in page.
#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage<'a> {
    site: &'a SiteUrls,
    account: &'a Account,
    name: &'a str,
    message: &'a str,
}

/// The sign-in page: a form of name and password, with `message` (why the
/// last try was refused) above it and `name` filled in.
pub fn signin(site: &SiteUrls, account: &Account, name: &str, message: &str) -> String {
    SigninPage {
        site,
        account,
        name,
        message,
    }
    .render()
    .unwrap_or_else(render_failed)
}

/// What a page says if its template fails (askama fails only if writing a
/// value fails, which writing into a `String` does not).
fn render_failed(e: askama::Error) -> String {
    tracing::error!(error = %e, "a page could not be rendered");
    "<!doctype html><title>TritonTube</title><h1>Internal error</h1><p><a href=\"/\">Home</a></p>"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::VideoId;
    use crate::metadata::Rendition;

    fn video(state: VideoState) -> Video {
        let mut v = Video::new(VideoId::new("clip").unwrap(), "A <clip>");
        v.description = "Waves & <b>sand</b>".into();
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

    fn site() -> SiteUrls {
        SiteUrls::of(&Assets::embedded(b"var dashjs;", b"BSD"))
    }

    /// The watch page as an anonymous visitor sees it.
    fn watch(site: &SiteUrls, v: &Video, hls: Option<&str>) -> String {
        super::watch(site, v, hls, &Account::default(), false)
    }

    #[test]
    fn the_header_forms_and_buttons_follow_who_is_signed_in() {
        let alice = Account {
            name: Some("alice".into()),
            csrf: "c5rf".into(),
        };
        let v = [video(VideoState::Ready)];
        let page = |account: &Account, can_upload| {
            index(
                &site(),
                Home {
                    videos: &v,
                    query: "",
                    next_cursor: None,
                    max_upload_bytes: 1 << 20,
                    account,
                    can_upload,
                },
            )
        };
        let signed = page(&alice, true);
        assert!(signed.contains("id=\"account-name\">alice<"), "{signed}");
        assert!(signed.contains("action=\"/signout\""), "a sign-out button");
        assert!(
            signed.contains("name=\"csrf\" value=\"c5rf\""),
            "forms carry the CSRF token"
        );
        assert!(!signed.contains("href=\"/signin\""));
        assert!(
            !signed.contains("aria-labelledby=\"upload-heading\" hidden"),
            "the upload form is shown"
        );
        let anonymous = page(&Account::default(), false);
        assert!(anonymous.contains("href=\"/signin\""), "a sign-in link");
        assert!(!anonymous.contains("action=\"/signout\""));
        assert!(
            anonymous.contains("aria-labelledby=\"upload-heading\" hidden"),
            "no upload form"
        );
        let owner = super::watch(&site(), &v[0], None, &alice, true);
        assert!(owner.contains("id=\"edit\""), "{owner}");
        assert!(owner.contains("action=\"/videos/clip/delete\""), "{owner}");
        assert!(
            owner.contains("<meta name=\"csrf-token\" content=\"c5rf\">"),
            "{owner}"
        );
        let other = super::watch(&site(), &v[0], None, &alice, false);
        assert!(
            !other.contains("id=\"edit\"") && !other.contains("/delete\""),
            "{other}"
        );
    }

    fn home(videos: &[Video]) -> String {
        index(
            &site(),
            Home {
                videos,
                query: "",
                next_cursor: None,
                max_upload_bytes: 1 << 30,
                account: &Account::default(),
                can_upload: true,
            },
        )
    }

    fn every_page() -> Vec<(String, String)> {
        let mut pages = vec![
            ("index, empty".to_string(), home(&[])),
            ("index".to_string(), home(&[video(VideoState::Ready)])),
            ("error".to_string(), error(404, "no such video")),
            (
                "sign-in".to_string(),
                signin(&site(), &Account::default(), "al<ice", "wrong"),
            ),
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
                watch(&site(), &video(state), None),
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
    fn every_page_has_one_h1_a_favicon_a_way_home_and_the_style_sheet() {
        for (name, html) in every_page() {
            assert_eq!(html.matches("<h1").count(), 1, "{name}: {html}");
            assert!(html.contains("href=\"/favicon.ico\""), "{name}");
            assert!(html.contains("<a href=\"/\">"), "{name}");
            assert!(html.contains(&site().css), "{name}");
        }
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for (name, html) in every_page() {
            for (at, _) in html.match_indices("<script") {
                assert!(
                    attr(&html[at..], "src").is_some(),
                    "{name}: an inline script"
                );
            }
            assert!(!html.contains("<style"), "{name}: a style element");
            assert!(!html.contains(" style="), "{name}: a style attribute");
            let handler = html.match_indices(" on").any(|(at, _)| {
                let rest = &html[at + 3..];
                let word = rest.len()
                    - rest
                        .trim_start_matches(|c: char| c.is_ascii_lowercase())
                        .len();
                word > 0 && rest[word..].starts_with('=')
            });
            assert!(!handler, "{name}: an event handler attribute");
        }
    }

    #[test]
    fn every_form_control_has_a_label() {
        for (name, html) in every_page() {
            for tag in ["<input", "<select", "<textarea"] {
                for (at, _) in html.match_indices(tag) {
                    // A hidden field (the CSRF token) is no control.
                    if attr(&html[at..], "type") == Some("hidden") {
                        continue;
                    }
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
        let home = home(&[]);
        let live = &home[home.find("aria-live=\"polite\"").expect("a live region")..];
        let end = live.find("</form>").unwrap();
        assert!(live[..end].contains("id=\"uploads\"") && live[..end].contains("id=\"msg\""));
        let ready = watch(
            &site(),
            &video(VideoState::Ready),
            Some("/content/v/master.m3u8"),
        );
        assert!(
            ready.contains("data-hls=\"/content/v/master.m3u8\""),
            "{ready}"
        );
        assert!(
            ready.contains("playback.js"),
            "the choice of player is loaded"
        );
        assert!(ready.contains("<div id=\"msg\" aria-live=\"polite\">"));
        let processing = watch(
            &site(),
            &video(VideoState::Processing { progress: 1.0 }),
            None,
        );
        assert!(processing.contains("<div id=\"processing\" aria-live=\"polite\"><p>Processing"));
    }

    #[test]
    fn titles_and_descriptions_are_escaped() {
        let v = video(VideoState::Ready);
        for html in [home(std::slice::from_ref(&v)), watch(&site(), &v, None)] {
            assert!(
                html.contains("A &#60;clip&#62;") || html.contains("A &lt;clip&gt;"),
                "{html}"
            );
            assert!(
                !html.contains("<clip>") && !html.contains("<b>sand"),
                "{html}"
            );
            assert!(
                html.contains("Waves &#38; ") || html.contains("Waves &amp; "),
                "{html}"
            );
        }
    }

    #[test]
    fn the_error_page_has_a_way_home() {
        let html = error(404, "no <such> video");
        assert!(html.contains("<h1>404 Not Found</h1>"), "{html}");
        assert!(!html.contains("<such>"));
        assert!(html.contains("<a href=\"/\">"));
    }

    #[test]
    fn the_player_is_sized_from_the_top_rung_and_loads_the_versioned_scripts() {
        let html = watch(
            &site(),
            &video(VideoState::Ready),
            Some("/content/v/master.m3u8"),
        );
        assert!(html.contains("data-w=\"1080\" data-h=\"1920\""), "{html}");
        assert!(html.contains(&format!("<script src=\"{}\" defer>", site().dash_js)));
        assert!(html.contains(&format!("<script src=\"{}\" defer>", site().watch_js)));
        let mut v = video(VideoState::Ready);
        v.facts.renditions.clear();
        v.facts.width = 0;
        assert!(watch(&site(), &v, None).contains("data-w=\"16\" data-h=\"9\""));
        let processing = watch(
            &site(),
            &video(VideoState::Processing { progress: 1.0 }),
            None,
        );
        assert!(
            !processing.contains("poster="),
            "no poster before it exists"
        );
    }

    #[test]
    fn the_more_link_keeps_the_search() {
        let v = [video(VideoState::Ready)];
        let html = index(
            &site(),
            Home {
                videos: &v,
                query: "surf & sun",
                next_cursor: Some("abc"),
                max_upload_bytes: 1 << 20,
                account: &Account::default(),
                can_upload: true,
            },
        );
        assert!(
            html.contains("href=\"/?q=surf+%26+sun&#38;cursor=abc\"")
                || html.contains("href=\"/?q=surf+%26+sun&amp;cursor=abc\""),
            "{html}"
        );
        assert!(
            html.contains("value=\"surf &#38; sun\"") || html.contains("value=\"surf &amp; sun\"")
        );
        assert!(
            !home(&v).contains("id=\"more\" href=\"/?"),
            "no more link on the last page"
        );
    }
}
