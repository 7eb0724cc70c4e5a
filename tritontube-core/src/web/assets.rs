//! The files the site serves besides videos: dash.js (the player, from the
//! npm package `dashjs` pinned by `package-lock.json`) with its licence,
//! hls.js (from the npm package `hls.js`, pinned the same way: an HLS player
//! for pages that want one, at `/static/hls.min.js`) with its licence, the
//! favicon, and the site's own style sheet and scripts ([`SITE_FILES`],
//! from `tritontube-core/static/`, always built in: pages carry no inline
//! script or style, so the Content-Security-Policy can forbid both), among
//! them the watch page's choice of player ([`PLAYBACK_JS`]), and
//! tus-js-client (from the npm package `tus-js-client`, pinned the same way:
//! the home page's resumable uploads, at `/static/tus.min.js`).
//!
//! `tritontube-web` builds dash.js into its binary ([`Assets::embedded`]), so
//! the binary alone serves a working player, wherever it is started;
//! `--assets DIR` reads it from an installed package instead
//! ([`Assets::from_dir`]). The favicon is the site's own and always built in.
//!
//! Caching: pages name dash.js by its content ([`Assets::dash_js_url`],
//! `?v=` and the start of its SHA-256), and that URL is cached for good; the
//! same file asked for by another name, and the favicon, carry an `ETag` and
//! are revalidated (`304 Not Modified`).

use std::fmt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The player's file name, under `/static/`.
pub const DASH_JS: &str = "dash.all.min.js";
/// The licence notice the minified player points to, under `/static/`.
pub const DASH_JS_LICENSE: &str = "dash.all.min.js.LICENSE.txt";
/// The player's source map, under `/static/` (served only from `--assets`).
pub const DASH_JS_MAP: &str = "dash.all.min.js.map";

/// Where the `dashjs` package keeps the files above, from the directory
/// holding `node_modules`.
pub const DASH_JS_PACKAGE_DIR: &str = "node_modules/dashjs/dist/modern/umd";

/// hls.js's file name, under `/static/` (the `hls.js` package's
/// `dist/hls.min.js`).
pub const HLS_JS: &str = "hls.min.js";
/// hls.js's licence (the package's `LICENSE`), under `/static/`.
pub const HLS_JS_LICENSE: &str = "hls.js.LICENSE.txt";

/// tus-js-client's browser bundle, under `/static/` (the `tus-js-client`
/// package's `dist/tus.min.js`): the home page uploads through it.
pub const TUS_JS: &str = "tus.min.js";
/// tus-js-client's licence, under `/static/` (the package's `LICENSE`).
pub const TUS_JS_LICENSE: &str = "tus-js-client.LICENSE.txt";

/// The watch page's choice between dash.js and the browser's own HLS
/// player, one of the [`SITE_FILES`]: `TritonTubePlayback.start(video,
/// {hls, onError})` returns `'dash'`, `'hls'` (and starts it) or `null`.
pub const PLAYBACK_JS: &str = "playback.js";

/// The site's own files under `/static/`: name, type, bytes.
pub const SITE_FILES: [(&str, &str, &[u8]); 4] = [
    (
        "site.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/site.css"),
    ),
    (
        "home.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/home.js"),
    ),
    (
        PLAYBACK_JS,
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/playback.js"),
    ),
    (
        "watch.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/watch.js"),
    ),
];

const FAVICON_ICO: &[u8] = include_bytes!("../../assets/favicon.ico");
const FAVICON_SVG: &[u8] = include_bytes!("../../assets/favicon.svg");

/// The built-in files ([`Assets::without_player`]), for pages made where no
/// [`Assets`] is at hand.
pub static BUILT_IN: std::sync::LazyLock<Assets> = std::sync::LazyLock::new(Assets::without_player);

/// How long an unversioned favicon may be used without asking again.
const FAVICON_CACHE: &str = "public, max-age=86400";
/// A file named by its content never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Anything else: kept, but checked (cheaply, by `ETag`) before each use.
const REVALIDATE: &str = "no-cache";

/// One file served at a fixed path.
#[derive(Clone)]
pub struct Asset {
    body: Bytes,
    content_type: &'static str,
    sha256_hex: String,
    cache_control: &'static str,
}

impl Asset {
    fn new(body: Bytes, content_type: &'static str, cache_control: &'static str) -> Asset {
        let sha256_hex = hex::encode(Sha256::digest(&body));
        Asset {
            body,
            content_type,
            sha256_hex,
            cache_control,
        }
    }

    /// The bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        self.content_type
    }

    /// The strong `ETag`: the SHA-256 of the bytes, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256_hex)
    }

    /// The version pages put in its URL (`?v=`): the start of its SHA-256.
    pub fn version(&self) -> &str {
        &self.sha256_hex[..16]
    }

    /// The `Cache-Control` of an answer to a request naming `version`
    /// (`?v=`): cached for good when it names these very bytes.
    pub fn cache_control(&self, version: Option<&str>) -> &'static str {
        if version == Some(self.version()) {
            IMMUTABLE
        } else {
            self.cache_control
        }
    }
}

impl fmt::Debug for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asset")
            .field("bytes", &self.body.len())
            .field("content_type", &self.content_type)
            .field("sha256", &self.sha256_hex)
            .finish()
    }
}

/// Every file served under `/static/` and the favicon (`/favicon.ico`,
/// `/favicon.svg`).
#[derive(Debug, Clone)]
pub struct Assets {
    dash_js: Option<Asset>,
    dash_js_license: Option<Asset>,
    dash_js_map: Option<Asset>,
    hls_js: Option<Asset>,
    hls_js_license: Option<Asset>,
    tus_js: Option<Asset>,
    tus_js_license: Option<Asset>,
    favicon_ico: Asset,
    favicon_svg: Asset,
    /// [`SITE_FILES`], in that order.
    site: Vec<(&'static str, Asset)>,
}

impl Default for Assets {
    fn default() -> Self {
        Assets::without_player()
    }
}

impl Assets {
    /// The favicon and the choice of player only: pages work, but the
    /// watch page cannot play DASH.
    pub fn without_player() -> Assets {
        Assets {
            dash_js: None,
            dash_js_license: None,
            dash_js_map: None,
            hls_js: None,
            hls_js_license: None,
            tus_js: None,
            tus_js_license: None,
            favicon_ico: Asset::new(
                Bytes::from_static(FAVICON_ICO),
                "image/x-icon",
                FAVICON_CACHE,
            ),
            favicon_svg: Asset::new(
                Bytes::from_static(FAVICON_SVG),
                "image/svg+xml",
                FAVICON_CACHE,
            ),
            site: SITE_FILES
                .iter()
                .map(|(name, ty, body)| {
                    (*name, Asset::new(Bytes::from_static(body), ty, REVALIDATE))
                })
                .collect(),
        }
    }

    /// dash.js and its licence notice as built into a binary (the
    /// `dashjs` package's `dash.all.min.js` and
    /// `dash.all.min.js.LICENSE.txt`).
    pub fn embedded(dash_js: &'static [u8], license: &'static [u8]) -> Assets {
        Assets {
            dash_js: Some(Asset::new(
                Bytes::from_static(dash_js),
                "text/javascript; charset=utf-8",
                REVALIDATE,
            )),
            dash_js_license: Some(Asset::new(
                Bytes::from_static(license),
                "text/plain; charset=utf-8",
                REVALIDATE,
            )),
            ..Assets::without_player()
        }
    }

    /// These assets with hls.js and its licence as built into a binary (the
    /// `hls.js` package's `dist/hls.min.js` and `LICENSE`).
    pub fn with_hls_js(self, hls_js: &'static [u8], license: &'static [u8]) -> Assets {
        Assets {
            hls_js: Some(Asset::new(
                Bytes::from_static(hls_js),
                "text/javascript; charset=utf-8",
                REVALIDATE,
            )),
            hls_js_license: Some(Asset::new(
                Bytes::from_static(license),
                "text/plain; charset=utf-8",
                REVALIDATE,
            )),
            ..self
        }
    }

    /// These assets with tus-js-client and its licence as built into a
    /// binary (the `tus-js-client` package's `dist/tus.min.js` and
    /// `LICENSE`). Without it the home page uploads with `POST /upload`.
    pub fn with_tus_js(self, tus_js: &'static [u8], license: &'static [u8]) -> Assets {
        Assets {
            tus_js: Some(Asset::new(
                Bytes::from_static(tus_js),
                "text/javascript; charset=utf-8",
                REVALIDATE,
            )),
            tus_js_license: Some(Asset::new(
                Bytes::from_static(license),
                "text/plain; charset=utf-8",
                REVALIDATE,
            )),
            ..self
        }
    }

    /// dash.js read once from `dir` (the package's
    /// [`DASH_JS_PACKAGE_DIR`], or any directory holding
    /// `dash.all.min.js`), with its licence notice and source map when they
    /// are there too.
    pub fn from_dir(dir: &Path) -> Result<Assets> {
        let read = |name: &str| -> Result<Option<Bytes>> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b.into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io(path, e)),
            }
        };
        let Some(js) = read(DASH_JS)? else {
            return Err(Error::invalid(
                "assets directory",
                dir.display().to_string(),
                format!(
                    "it has no {DASH_JS} (the `dashjs` package keeps it in {DASH_JS_PACKAGE_DIR})"
                ),
            ));
        };
        let text = |b: Bytes| Asset::new(b, "text/plain; charset=utf-8", REVALIDATE);
        Ok(Assets {
            dash_js: Some(Asset::new(js, "text/javascript; charset=utf-8", REVALIDATE)),
            dash_js_license: read(DASH_JS_LICENSE)?.map(text),
            dash_js_map: read(DASH_JS_MAP)?.map(|b| Asset::new(b, "application/json", REVALIDATE)),
            ..Assets::without_player()
        })
    }

    /// dash.js from an installed `node_modules` (from `npm ci`), looked for
    /// as [`find_dash_js_dir`] does; without the player if there is none.
    pub fn find(start: Option<&Path>) -> Assets {
        find_dash_js_dir(start)
            .and_then(|dir| Assets::from_dir(&dir).ok())
            .unwrap_or_else(Assets::without_player)
    }

    /// Whether dash.js is there to serve.
    pub fn has_player(&self) -> bool {
        self.dash_js.is_some()
    }

    /// The URL pages load dash.js from, naming its content so that it can be
    /// cached for good.
    pub fn dash_js_url(&self) -> String {
        match &self.dash_js {
            Some(a) => format!("/static/{DASH_JS}?v={}", a.version()),
            None => format!("/static/{DASH_JS}"),
        }
    }

    /// The URL pages load hls.js from, naming its content so that it can be
    /// cached for good.
    pub fn hls_js_url(&self) -> String {
        match &self.hls_js {
            Some(a) => format!("/static/{HLS_JS}?v={}", a.version()),
            None => format!("/static/{HLS_JS}"),
        }
    }

    /// The URL pages load the choice of player ([`PLAYBACK_JS`]) from,
    /// naming its content so that it can be cached for good.
    pub fn playback_js_url(&self) -> String {
        self.site_url(PLAYBACK_JS)
    }

    /// The URL pages load one of the [`SITE_FILES`] from, naming its
    /// content so that it can be cached for good (`/static/<name>` if there
    /// is no such file).
    pub fn site_url(&self, name: &str) -> String {
        match self.site.iter().find(|(n, _)| *n == name) {
            Some((_, a)) => format!("/static/{name}?v={}", a.version()),
            None => format!("/static/{name}"),
        }
    }

    /// The file served at `path` (`static/dash.all.min.js`, `favicon.ico`,
    /// ...; no leading slash), if any.
    pub fn get(&self, path: &str) -> Option<&Asset> {
        match path.strip_prefix("static/") {
            Some(DASH_JS) => self.dash_js.as_ref(),
            Some(DASH_JS_LICENSE) => self.dash_js_license.as_ref(),
            Some(DASH_JS_MAP) => self.dash_js_map.as_ref(),
            Some(HLS_JS) => self.hls_js.as_ref(),
            Some(HLS_JS_LICENSE) => self.hls_js_license.as_ref(),
            Some(TUS_JS) => self.tus_js.as_ref(),
            Some(TUS_JS_LICENSE) => self.tus_js_license.as_ref(),
            Some(name) => self.site.iter().find(|(n, _)| *n == name).map(|(_, a)| a),
            None => match path {
                "favicon.ico" => Some(&self.favicon_ico),
                "favicon.svg" => Some(&self.favicon_svg),
                _ => None,
            },
        }
    }
}

/// Finds the `dashjs` package's files in an installed `node_modules` (from
/// `npm ci`): under `start`, the current directory, or the executable's
/// directory, or any of their parents.
pub fn find_dash_js_dir(start: Option<&Path>) -> Option<PathBuf> {
    let rel = Path::new(DASH_JS_PACKAGE_DIR);
    let mut roots: Vec<PathBuf> = start.map(Path::to_path_buf).into_iter().collect();
    roots.extend(std::env::current_dir().ok());
    roots.extend(
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf)),
    );
    roots
        .iter()
        .flat_map(|root| root.ancestors())
        .map(|dir| dir.join(rel))
        .find(|cand| cand.join(DASH_JS).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_favicon_is_always_there() {
        let a = Assets::without_player();
        let ico = a.get("favicon.ico").unwrap();
        assert_eq!(&ico.body()[..4], &[0, 0, 1, 0], "an ICO header");
        assert_eq!(ico.content_type(), "image/x-icon");
        let svg = a.get("favicon.svg").unwrap();
        assert!(svg.body().starts_with(b"<svg"));
        assert!(!a.has_player());
        assert!(a.get("static/dash.all.min.js").is_none());
        assert!(a.get("static/../favicon.ico").is_none());
        assert!(a.get("favicon.png").is_none());
        assert!(a.get("static/hls.min.js").is_none());
    }

    #[test]
    fn hls_js_and_the_choice_of_player_are_named_by_their_content() {
        let a =
            Assets::embedded(b"var dashjs = 1;", b"BSD").with_hls_js(b"var Hls = 1;", b"Apache");
        let js = a.get("static/hls.min.js").unwrap();
        assert_eq!(js.body().as_ref(), b"var Hls = 1;");
        assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
        assert_eq!(
            a.hls_js_url(),
            format!("/static/hls.min.js?v={}", js.version())
        );
        let license = a.get("static/hls.js.LICENSE.txt").unwrap();
        assert_eq!(license.body().as_ref(), b"Apache");
        // dash.js is kept.
        assert!(a.has_player());
        assert_eq!(
            a.dash_js_url(),
            Assets::embedded(b"var dashjs = 1;", b"BSD").dash_js_url()
        );

        let choice = a.get("static/playback.js").unwrap();
        assert!(
            std::str::from_utf8(choice.body())
                .unwrap()
                .contains("TritonTubePlayback")
        );
        assert_eq!(
            a.playback_js_url(),
            format!("/static/playback.js?v={}", choice.version())
        );
        assert!(Assets::without_player().get("static/playback.js").is_some());
    }

    #[test]
    fn tus_js_is_served_when_built_in() {
        assert!(Assets::without_player().get("static/tus.min.js").is_none());
        let a = Assets::embedded(b"var dashjs = 1;", b"BSD").with_tus_js(b"var tus = 1;", b"MIT");
        let js = a.get("static/tus.min.js").unwrap();
        assert_eq!(js.body().as_ref(), b"var tus = 1;");
        assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
        let license = a.get("static/tus-js-client.LICENSE.txt").unwrap();
        assert_eq!(license.body().as_ref(), b"MIT");
        assert!(a.has_player(), "dash.js is kept");
    }

    #[test]
    fn the_site_files_are_built_in_and_named_by_their_content() {
        let a = Assets::without_player();
        for (name, ty, body) in SITE_FILES {
            let f = a.get(&format!("static/{name}")).unwrap();
            assert_eq!(f.body().as_ref(), body);
            assert_eq!(f.content_type(), ty);
            assert_eq!(
                a.site_url(name),
                format!("/static/{name}?v={}", f.version())
            );
        }
        assert!(a.get("static/nope.js").is_none());
        assert_eq!(a.site_url("nope.js"), "/static/nope.js");
    }

    #[test]
    fn embedded_dash_js_is_named_by_its_content() {
        let a = Assets::embedded(b"var dashjs = 1;", b"BSD");
        let js = a.get("static/dash.all.min.js").unwrap();
        assert_eq!(js.body().as_ref(), b"var dashjs = 1;");
        assert_eq!(js.content_type(), "text/javascript; charset=utf-8");
        assert_eq!(
            a.dash_js_url(),
            format!("/static/dash.all.min.js?v={}", js.version())
        );
        assert_eq!(
            js.cache_control(Some(js.version())),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(js.cache_control(None), "no-cache");
        assert_eq!(js.cache_control(Some("0123456789abcdef")), "no-cache");
        let other = Assets::embedded(b"var dashjs = 2;", b"BSD");
        assert_ne!(other.dash_js_url(), a.dash_js_url());
        assert_eq!(
            a.get("static/dash.all.min.js.LICENSE.txt")
                .unwrap()
                .body()
                .as_ref(),
            b"BSD"
        );
        assert!(a.get("static/dash.all.min.js.map").is_none());
    }

    #[test]
    fn from_dir_reads_the_player_and_refuses_a_dir_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Assets::from_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("dash.all.min.js"), "{e}");
        std::fs::write(dir.path().join(DASH_JS), "js").unwrap();
        std::fs::write(dir.path().join(DASH_JS_MAP), "{}").unwrap();
        let a = Assets::from_dir(dir.path()).unwrap();
        assert!(a.has_player());
        assert_eq!(
            a.get("static/dash.all.min.js").unwrap().body().as_ref(),
            b"js"
        );
        assert_eq!(
            a.get("static/dash.all.min.js.map").unwrap().content_type(),
            "application/json"
        );
        assert!(a.get("static/dash.all.min.js.LICENSE.txt").is_none());
    }
}
