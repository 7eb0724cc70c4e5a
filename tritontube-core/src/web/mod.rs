//! The web site and JSON API (warp), split as in warp's own examples:
//! [`filters`] (routes), [`handlers`] (what each route does), [`models`]
//! (JSON shapes), plus the HTML [`pages`] and [`metrics`].
//!
//! Routes (the course project's first four, unchanged):
//!
//! | route | |
//! |---|---|
//! | `GET /` | upload form, search (`?q=`) and watch list, newest first (`?cursor=`: next page) |
//! | `POST /upload` | (signed in, unless uploads are public) multipart field `file` and optional `id`, `title`, `description`, in any order ([`upload`]); 303 to `/`, or 201 and JSON for a client asking for JSON |
//! | `GET /videos/<id>` | the watch page (dash.js) |
//! | `GET, HEAD /content/<id>/<file>` | a stored file, with `Range`, `ETag`, caching |
//! | `GET /api/videos?q=&cursor=&limit=`, `GET /api/videos/<id>`, `DELETE /api/videos/<id>` | JSON API |
//! | `OPTIONS, POST /files/`, `HEAD, PATCH, DELETE /files/<key>` | resumable uploads with the tus 1.0.0 protocol ([`tus`]) |
//! | `GET /api/videos?q=&cursor=&limit=`, `GET /api/videos/<id>` | JSON API |
//! | `PATCH /api/videos/<id>`, `DELETE /api/videos/<id>` | edit (title, description) and delete, for the admin token or the video's uploader and admins ([`auth`]) |
//! | `GET`/`POST /signin`, `POST /signout` | sign-in page and form, sign-out ([`auth`]) |
//! | `POST /videos/<id>/edit`, `POST /videos/<id>/delete` | the watch page's forms for its uploader and admins |
//! | `GET /healthz`, `GET /metrics` | health and Prometheus metrics |
//! | `GET /static/<file>`, `GET /favicon.ico` | the player, the site's style sheet and scripts, the favicon ([`assets`]) |
//!
//! Every answer carries a Content-Security-Policy that allows scripts and
//! styles from this site only ([`pages::CONTENT_SECURITY_POLICY`]). Errors
//! are JSON (`{"error": ...}`) under `/api/` and for a client that asks for
//! JSON, and an HTML page with a way home otherwise.
//!
//! [`serve`] limits what clients can hold: see [`limits::ServeLimits`].

pub mod assets;
pub mod auth;
pub mod cache;
mod conn;
pub mod filters;
pub mod handlers;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod pages;
pub mod tus;
pub mod upload;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cluster::HealthTracker;
use crate::ingest::Ingest;
use crate::metadata::MetadataStore;
use crate::store::ContentStore;

pub use assets::Assets;
pub use limits::ServeLimits;

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    /// Where video records live.
    pub meta: Arc<dyn MetadataStore>,
    /// Where video files live.
    pub content: Arc<dyn ContentStore>,
    /// The upload and transcoding pipeline.
    pub ingest: Ingest,
    /// Request counters.
    pub metrics: Arc<metrics::Metrics>,
    /// dash.js and the favicon.
    pub assets: Arc<Assets>,
    /// Storage-node liveness, for `/metrics` (network content only).
    pub health: Option<Arc<HealthTracker>>,
    /// The cluster's data plane, for the ring facts of `/healthz` and
    /// `/metrics` (network content only).
    pub network: Option<Arc<crate::cluster::NetworkContentStore>>,
    /// Small content files kept in memory.
    pub cache: Arc<cache::ContentCache>,
    /// The secret that authorises destructive actions (DELETE, edits), sent
    /// as `Authorization: Bearer <token>`; `None` refuses them all.
    pub admin_token: Option<Arc<str>>,
    /// Uploads in progress, and their caps ([`serve`] sets these from its
    /// [`ServeLimits`]).
    pub uploads: Arc<limits::UploadLimiter>,
    /// Resumable (tus) uploads in progress at `/files/` ([`tus`]); `None`
    /// answers those routes 404.
    pub tus: Option<Arc<tus::TusStore>>,
    /// Sign-in, sessions, and whether uploads need an account
    /// ([`auth::Accounts`]).
    pub accounts: Arc<auth::Accounts>,
}

impl App {
    /// Checks an `Authorization` header against the admin token.
    pub fn authorize(&self, header: Option<&str>) -> crate::Result<()> {
        let sent = header.and_then(|h| h.strip_prefix("Bearer "));
        match (&self.admin_token, sent) {
            (Some(t), Some(s)) if crate::admin::constant_time_eq(t.as_bytes(), s.as_bytes()) => {
                Ok(())
            }
            (Some(_), Some(_)) => Err(crate::Error::Unauthenticated {
                reason: "wrong admin token".into(),
            }),
            _ => Err(crate::Error::Unauthenticated {
                reason: "this needs the admin token (Authorization: Bearer <token>; the server \
                         prints where it keeps it)"
                    .into(),
            }),
        }
    }
}

/// Finds dash.js in an installed `node_modules` (from `npm ci`): under
/// `start`, the current directory, or the executable's directory, or any of
/// their parents. The directory found is what `--assets` takes.
pub fn find_assets(start: Option<&Path>) -> Option<PathBuf> {
    assets::find_dash_js_dir(start)
}

/// Serves the site on `listener` until `shutdown` resolves, within
/// `limits` (whose upload caps replace those of `app.uploads`). After
/// `shutdown`, no new connection is accepted and this returns once the open
/// ones are done: requests in progress finish, idle connections close at
/// once, half-sent headers at their deadline.
pub async fn serve(
    listener: tokio::net::TcpListener,
    mut app: App,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if !app.assets.has_player() {
        tracing::warn!("no dash.js to serve; the watch page will not play");
    }
    tracing::info!(
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        max_connections = limits.max_connections,
        max_uploads = limits.max_uploads,
        max_uploads_per_client = limits.max_uploads_per_client,
        "connection and upload limits"
    );
    app.uploads = Arc::new(limits::UploadLimiter::new(
        limits.max_uploads,
        limits.max_uploads_per_client,
    ));
    let svc = hyper_util::service::TowerToHyperService::new(warp::service(filters::routes(app)));
    conn::serve(listener, svc, limits, shutdown).await;
}
