//! The routes, as warp filters. Every failure becomes an [`ApiError`]
//! rejection, mapped to a status and a body in one place ([`recover`]):
//! JSON for `/api/` and for clients that ask for it ([`wants_json`]), an
//! HTML page with a way home for the rest.

use std::convert::Infallible;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use super::App;
use super::auth::SignedIn;
use super::conn::ClientAddr;
use super::handlers;
use super::limits::{UploadLimiter, UploadPermit};
use crate::error::Error;

/// A failure with the error that caused it.
#[derive(Debug)]
pub struct ApiError {
    /// The error.
    pub error: Error,
    /// True for `/api/*` routes, which answer JSON.
    pub json: bool,
}

impl warp::reject::Reject for ApiError {}

/// Whether a client's `Accept` header asks for JSON rather than a page:
/// it names `application/json` and not `text/html` (a browser's page
/// request names both kinds of HTML; `fetch` and `curl` send `*/*`).
pub fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

/// The last route, reached by every request no route answered: says
/// whether its errors are to be JSON (its path is under `/api/`, or it
/// asks for JSON), for [`recover`] to find beside the other routes'
/// rejections.
#[derive(Debug)]
struct Unrouted {
    json: bool,
    /// Whether some route has this path (then another route's rejection
    /// says what was wrong; otherwise there is nothing here: 404).
    routed: bool,
}

/// Whether a route answers `path` (for some method).
fn routed(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] | ["upload"] | ["api", "videos"] | ["healthz"] | ["metrics"] => true,
        ["signin" | "signout"] => true,
        ["videos", name, "edit" | "delete"] => !name.is_empty(),
        ["favicon.ico" | "favicon.svg"] => true,
        ["videos" | "static", name] | ["api", "videos", name] => !name.is_empty(),
        ["content", rest @ ..] => !rest.is_empty(),
        _ => false,
    }
}

impl warp::reject::Reject for Unrouted {}

/// Wraps an error for the HTML routes.
pub fn html_err(error: Error) -> Rejection {
    warp::reject::custom(ApiError { error, json: false })
}

/// Wraps an error for the JSON routes.
pub fn json_err(error: Error) -> Rejection {
    warp::reject::custom(ApiError { error, json: true })
}

fn with_app(app: App) -> impl Filter<Extract = (App,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// Admits an upload within the caps (before any of its body is read), or
/// rejects it with [`Error::Busy`]. The permit travels with the request to
/// the handler, so it counts until the upload is done.
fn upload_slot(
    limiter: Arc<UploadLimiter>,
) -> impl Filter<Extract = (UploadPermit,), Error = Rejection> + Clone {
    warp::ext::optional::<ClientAddr>().and_then(move |client: Option<ClientAddr>| {
        let limiter = limiter.clone();
        async move {
            limiter
                .try_start(client.map(|c| c.0.ip()))
                .map_err(html_err)
        }
    })
}

/// The caller a request's session cookie names, if any ([`Accounts::signed_in`](super::auth::Accounts::signed_in)).
pub fn signed_in(
    app: App,
) -> impl Filter<Extract = (Option<SignedIn>,), Error = Rejection> + Clone {
    warp::cookie::optional::<String>(super::auth::SESSION_COOKIE).and_then(
        move |cookie: Option<String>| {
            let app = app.clone();
            async move {
                app.accounts
                    .signed_in(&*app.meta, cookie.as_deref())
                    .await
                    .map_err(html_err)
            }
        },
    )
}

/// A small urlencoded form (sign-in, sign-out, edit, delete), as text.
fn small_form() -> impl Filter<Extract = (handlers::FormFields,), Error = Rejection> + Clone {
    warp::body::content_length_limit(64 * 1024).and(warp::body::form())
}

/// The account routes: `GET`/`POST /signin`, `POST /signout`, and the
/// watch page's forms `POST /videos/<id>/edit` and `POST /videos/<id>/delete`.
fn account_routes(
    app: App,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let signin_page = warp::path!("signin")
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and(with_app(app.clone()))
        .and_then(handlers::signin_page);
    let signin = warp::path!("signin")
        .and(warp::post())
        .and(small_form())
        .and(with_app(app.clone()))
        .and_then(handlers::signin);
    let signout = warp::path!("signout")
        .and(warp::post())
        .and(signed_in(app.clone()))
        .and(small_form())
        .and(with_app(app.clone()))
        .and_then(handlers::signout);
    let edit = warp::path!("videos" / String / "edit")
        .and(warp::post())
        .and(signed_in(app.clone()))
        .and(small_form())
        .and(with_app(app.clone()))
        .and_then(handlers::edit_form);
    let delete = warp::path!("videos" / String / "delete")
        .and(warp::post())
        .and(signed_in(app.clone()))
        .and(small_form())
        .and(with_app(app.clone()))
        .and_then(handlers::delete_form);
    let patch = warp::path!("api" / "videos" / String)
        .and(warp::patch())
        .and(api_caller(app.clone()))
        .and(warp::body::content_length_limit(64 * 1024))
        .and(warp::body::json())
        .and(with_app(app))
        .and_then(handlers::api_patch);
    signin_page
        .or(signin)
        .unify()
        .or(signout)
        .unify()
        .or(edit)
        .unify()
        .or(delete)
        .unify()
        .or(patch)
        .unify()
}

/// What a JSON API call that changes something presents: the admin token
/// (`Authorization`), or a session cookie with its CSRF token (header
/// `X-CSRF-Token`).
fn api_caller(
    app: App,
) -> impl Filter<Extract = (handlers::ApiCaller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(signed_in(app))
        .and(warp::header::optional::<String>(super::auth::CSRF_HEADER))
        .map(|authorization, signed_in, csrf| handlers::ApiCaller {
            authorization,
            signed_in,
            csrf,
        })
}

/// The last route: rejects every request it sees with [`Unrouted`].
fn unrouted() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path::full()
        .and(warp::header::headers_cloned())
        .and_then(
            |path: warp::path::FullPath, headers: warp::http::HeaderMap| async move {
                let accept = headers
                    .get(warp::http::header::ACCEPT)
                    .and_then(|a| a.to_str().ok());
                let json = path.as_str().starts_with("/api/") || wants_json(accept);
                let routed = routed(path.as_str());
                Err::<warp::reply::Response, Rejection>(warp::reject::custom(Unrouted {
                    json,
                    routed,
                }))
            },
        )
}

/// `/static/<file>`, `/favicon.ico` and `/favicon.svg`.
fn assets_route(
    app: App,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let asset_path = warp::path!("static" / String)
        .map(|name: String| format!("static/{name}"))
        .or(warp::path!("favicon.ico").map(|| "favicon.ico".to_string()))
        .unify()
        .or(warp::path!("favicon.svg").map(|| "favicon.svg".to_string()))
        .unify();
    asset_path
        .and(warp::get().or(warp::head()).unify())
        .and(warp::query::<handlers::AssetQuery>())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(with_app(app))
        .and_then(handlers::asset)
}

/// The JSON API's reads and deletion: `GET /api/videos`, `GET` and
/// `DELETE /api/videos/<id>`.
fn api_routes(
    app: App,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let api_list = warp::path!("api" / "videos")
        .and(warp::get())
        .and(warp::query::<handlers::ListQuery>())
        .and(with_app(app.clone()))
        .and_then(handlers::api_list);
    let api_get = warp::path!("api" / "videos" / String)
        .and(warp::get())
        .and(with_app(app.clone()))
        .and_then(handlers::api_get);
    let api_delete = warp::path!("api" / "videos" / String)
        .and(warp::delete())
        .and(api_caller(app.clone()))
        .and(with_app(app))
        .and_then(handlers::api_delete);
    api_list.or(api_get).unify().or(api_delete).unify()
}

/// Every route of the site.
pub fn routes(app: App) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let metrics = app.metrics.clone();
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::query::<handlers::ListQuery>())
        .and(signed_in(app.clone()))
        .and(with_app(app.clone()))
        .and_then(handlers::index);
    let upload = warp::path!("upload")
        .and(warp::post())
        .and(upload_slot(app.uploads.clone()))
        .and(with_app(app.clone()))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<String>("accept"))
        .and(signed_in(app.clone()))
        .and(warp::header::optional::<String>(super::auth::CSRF_HEADER))
        .and(warp::multipart::form().max_length(None))
        .and_then(super::upload::upload);
    let watch = warp::path!("videos" / String)
        .and(warp::get())
        .and(signed_in(app.clone()))
        .and(with_app(app.clone()))
        .and_then(handlers::watch);
    let content = warp::path("content")
        .and(warp::path::tail())
        .and(warp::get().or(warp::head()).unify())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(with_app(app.clone()))
        .and_then(handlers::content);
    let api = api_routes(app.clone());
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and_then(handlers::healthz);
    let metrics_route = warp::path!("metrics")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and_then(handlers::metrics);
    let tus = super::tus::routes(app.clone());
    let accounts = account_routes(app.clone());
    let assets = assets_route(app);
    let unrouted = unrouted();
    index
        .or(upload)
        .or(tus)
        .or(watch)
        .or(content)
        .or(api)
        .or(accounts)
        .or(healthz)
        .or(metrics_route)
        .or(assets)
        .or(unrouted)
        .recover(recover)
        .with(warp::reply::with::default_header(
            "content-security-policy",
            super::pages::CONTENT_SECURITY_POLICY,
        ))
        .with(warp::reply::with::default_header(
            "x-content-type-options",
            "nosniff",
        ))
        .with(warp::log::custom(move |info| {
            metrics.observe(info.path(), info.status().as_u16(), info.elapsed());
        }))
}

/// What a caller is told about `error`: for its own mistakes (4xx) the
/// error itself, which names what was wrong with the request; for server
/// faults (5xx) a short sentence, never a path or a node's internals (those
/// go to the log).
pub fn public_message(error: &Error) -> String {
    match error {
        // Says only what is at its limit and when to come back.
        Error::Busy { .. } => error.to_string(),
        e if e.http_status() < 500 => e.to_string(),
        Error::BadCopy { key, .. } => {
            format!("no intact copy of {key} could be read; it has been reported for repair")
        }
        Error::Full { .. } => {
            "the storage cluster is full; nothing was stored, and an administrator has to make room"
                .to_string()
        }
        Error::EmptyRing
        | Error::Node { .. }
        | Error::Unavailable { .. }
        | Error::InsufficientReplicas { .. } => {
            "the storage cluster cannot serve this right now; try again shortly".to_string()
        }
        _ => "internal error; the server log has the details".to_string(),
    }
}

/// Maps every rejection to a status code and a message, and logs refusals;
/// an error that says when to come back ([`Error::retry_after_secs`]) is
/// answered with `Retry-After`.
pub async fn recover(r: Rejection) -> Result<warp::reply::Response, Infallible> {
    let retry_after = r
        .find::<ApiError>()
        .and_then(|e| e.error.retry_after_secs());
    let mut reply = classify(&r);
    if let Some(secs) = retry_after {
        reply
            .headers_mut()
            .insert(warp::http::header::RETRY_AFTER, secs.into());
    }
    Ok(reply)
}

/// The status and body of a rejection.
fn classify(r: &Rejection) -> warp::reply::Response {
    let prefers_json = r.find::<Unrouted>().is_some_and(|u| u.json);
    let (status, message, json) = if let Some(e) = r.find::<ApiError>() {
        let status = StatusCode::from_u16(e.error.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if e.error.retry_after_secs().is_some() {
            // Refused for load: expected under pressure, not a fault.
            tracing::info!(error = %e.error, "request refused");
        } else if status.is_server_error() {
            tracing::error!(error = %e.error, "request failed");
        } else if status != StatusCode::NOT_FOUND {
            tracing::info!(error = %e.error, "request refused");
        }
        (status, public_message(&e.error), e.json || prefers_json)
    } else if r.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string(), prefers_json)
    } else if let Some(e) = r.find::<warp::reject::PayloadTooLarge>() {
        (StatusCode::PAYLOAD_TOO_LARGE, e.to_string(), prefers_json)
    } else if let Some(e) = r.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, e.to_string(), true)
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
            prefers_json,
        )
    } else if let Some(e) = r.find::<warp::reject::InvalidHeader>() {
        tracing::info!(rejection = ?r, "request refused");
        (
            StatusCode::BAD_REQUEST,
            format!("malformed request: bad {} header", e.name()),
            prefers_json,
        )
    } else if r.find::<Unrouted>().is_some_and(|u| !u.routed) {
        (
            StatusCode::NOT_FOUND,
            "there is nothing at this address".to_string(),
            prefers_json,
        )
    } else {
        // The details (warp's debug text) go to the log only.
        tracing::info!(rejection = ?r, "request refused");
        (
            StatusCode::BAD_REQUEST,
            "malformed request".to_string(),
            prefers_json,
        )
    };
    if json {
        warp::reply::with_status(
            warp::reply::json(&super::models::ErrorJson { error: message }),
            status,
        )
        .into_response()
    } else {
        // Pages answer a page: the message, and a way home.
        warp::reply::with_status(
            warp::reply::html(super::pages::error(status.as_u16(), &message)),
            status,
        )
        .into_response()
    }
}
