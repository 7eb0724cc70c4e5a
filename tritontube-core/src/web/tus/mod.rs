//! Resumable uploads with the [tus 1.0.0](https://tus.io/protocols/resumable-upload)
//! protocol at `/files/`: the core protocol and the `creation`,
//! `termination` and `expiration` extensions. A connection that drops
//! mid-upload loses nothing already received: the client asks where the
//! upload stands (`HEAD`) and sends the rest from there (`PATCH`).
//!
//! | request | answer |
//! |---|---|
//! | `OPTIONS /files/` | 204; `Tus-Version`, `Tus-Extension`, `Tus-Max-Size` |
//! | `POST /files/` with `Upload-Length` and `Upload-Metadata` | 201; `Location: /files/<key>`, `Upload-Expires` |
//! | `HEAD /files/<key>` | 200; `Upload-Offset`, `Upload-Length`, `Cache-Control: no-store` |
//! | `PATCH /files/<key>` with `Content-Type: application/offset+octet-stream` and `Upload-Offset` | 204; the new `Upload-Offset` |
//! | `DELETE /files/<key>` | 204; the upload and its bytes are gone |
//!
//! `Upload-Metadata` may carry (base64, as tus says) `filename`, `id`,
//! `title` and `description`; the id follows the rules of `POST /upload`
//! ([`super::upload`]): an `id` is used as it is (400 if invalid, 409 if
//! taken, both refused at creation), and without one the server derives
//! it from the title or the file name, adding a suffix if it is taken.
//!
//! When the last byte arrives the file is handed to ingest exactly as a
//! finished form upload is (probed, refused if it is not a video, queued
//! for transcoding). The answer to that PATCH, and any later HEAD, carry
//! `Tt-Video-Id` (the video it became) and `Tt-Upload-Sha256` (the SHA-256
//! of the bytes handed to ingest). A file ingest refuses (not a video)
//! answers that PATCH with the refusal, and the upload is removed; a
//! server fault (or a server stopped before the hand-over) keeps it, and
//! the next HEAD, or a PATCH at the final offset, tries again.
//!
//! Every request but `OPTIONS` must send `Tus-Resumable: 1.0.0` (412
//! otherwise). Errors: 400 for a malformed header, 404 for an unknown,
//! terminated or expired upload, 409 for an `Upload-Offset` that is not
//! where the upload stands (or while another request writes to it), 413
//! past the server's largest upload or the upload's own length, 415 for
//! another `Content-Type`; bodies are JSON `{"error": ...}` saying what was
//! wrong. A refused request changes nothing stored.
//!
//! A PATCH counts against the upload caps of [`super::limits`] while it
//! runs. Uploads not finished within the expiry (`--tus-expiry-hours`,
//! counted from creation or the last PATCH) are removed by [`sweep`].

mod store;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use warp::http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use warp::reply::Response as Reply;
use warp::{Filter, Rejection};

pub use store::{MAX_UPLOADS_KEPT, TusStore, UploadRecord};

use super::App;
use super::auth::SignedIn;
use super::conn::ClientAddr;
use super::pages::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};
use crate::error::Error;

/// The protocol version served.
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions served, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration";
/// The header naming the video a finished upload became.
pub const VIDEO_ID_HEADER: &str = "tt-video-id";
/// The header carrying the SHA-256 (hex) of a finished upload's bytes.
pub const SHA256_HEADER: &str = "tt-upload-sha256";
/// The only `Content-Type` a PATCH may have.
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// Longest a HEAD, PATCH or DELETE waits for another request on the same
/// upload to finish before it is refused (409).
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// Longest a PATCH body may go without a byte before the server stops
/// reading it (keeping what came): a client whose network vanished without
/// closing its connection must not hold the upload for ever.
const BODY_IDLE: Duration = Duration::from_secs(30);

/// A PATCH body.
type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// A refusal: its status and what was wrong.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && e.retry_after_secs().is_none() {
            tracing::error!(error = %e, "resumable upload failed");
        }
        Refusal::new(status, super::filters::public_message(&e))
    }
}

type Answer = Result<Reply, Refusal>;

/// A new answer carrying `Tus-Resumable`.
fn answer(status: StatusCode) -> warp::http::response::Builder {
    Response::builder()
        .status(status)
        .header("tus-resumable", TUS_VERSION)
}

/// A refusal as an answer: JSON `{"error": ...}`, logged once.
fn refused(r: Refusal) -> Reply {
    if r.status.is_client_error() && r.status != StatusCode::NOT_FOUND {
        tracing::info!(status = r.status.as_u16(), error = %r.message, "resumable upload request refused");
    }
    let body =
        serde_json::to_vec(&super::models::ErrorJson { error: r.message }).unwrap_or_default();
    let mut b = answer(r.status).header("content-type", "application/json");
    if r.status == StatusCode::PRECONDITION_FAILED {
        b = b.header("tus-version", TUS_VERSION);
    }
    b.body(body.into()).unwrap_or_default()
}

/// The resumable-upload routes: every method on `/files` and below.
pub fn routes(app: App) -> impl Filter<Extract = (Reply,), Error = Rejection> + Clone {
    warp::path("files")
        .and(warp::path::tail())
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddr>())
        .and(super::filters::signed_in(app.clone()))
        .and(warp::body::stream().map(boxed))
        .and(warp::any().map(move || app.clone()))
        .then(
            |tail: warp::path::Tail,
             method,
             headers,
             client: Option<ClientAddr>,
             signed_in: Option<SignedIn>,
             body,
             app| async move {
                let request = Request {
                    key: tail.as_str().trim_end_matches('/').to_string(),
                    method,
                    headers,
                    client,
                    signed_in,
                };
                handle(app, request, body).await.unwrap_or_else(refused)
            },
        )
}

/// A request body as a stream of [`Bytes`].
fn boxed<S, B>(body: S) -> BodyStream
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf,
{
    Box::pin(body.map(|r| r.map(|mut b| b.copy_to_bytes(b.remaining()))))
}

/// What a handler needs of a request besides its body.
struct Request {
    /// The upload's key (empty for the collection `/files/`).
    key: String,
    method: Method,
    headers: HeaderMap,
    client: Option<ClientAddr>,
    /// The caller the session cookie names.
    signed_in: Option<SignedIn>,
}

impl Request {
    /// Who may use resumable uploads: a signed-in caller sending its
    /// session's CSRF token (`X-CSRF-Token`), or anyone on a server with
    /// `--public-uploads`; 401 / 403 otherwise, before anything is read.
    fn admit(&self, app: &App) -> Result<(), Refusal> {
        match &self.signed_in {
            Some(s) => s
                .check_csrf(self.header("x-csrf-token"))
                .map_err(Refusal::from),
            None if app.accounts.public_uploads => Ok(()),
            None => Err(Error::Unauthenticated {
                reason: "sign in to upload: this server takes uploads from signed-in users only"
                    .into(),
            }
            .into()),
        }
    }

    /// The caller's account name, if signed in.
    fn user(&self) -> Option<String> {
        self.signed_in.as_ref().map(|s| s.user.name.clone())
    }

    /// Refuses an upload someone else created (as if it did not exist).
    fn owns(&self, record: &UploadRecord) -> Result<(), Refusal> {
        match &record.owner {
            Some(owner) if Some(owner) != self.user().as_ref() => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "no such upload (it may have expired)",
            )),
            _ => Ok(()),
        }
    }
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header holding a byte count; `None` if absent, 400 if malformed.
    fn count(&self, name: &str) -> Result<Option<u64>, Refusal> {
        match self.header(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be a whole number of bytes, got {v:?}"),
                )
            }),
        }
    }
}

/// Dispatches a request by method, once its `Tus-Resumable` is checked.
async fn handle(app: App, req: Request, body: BodyStream) -> Answer {
    let Some(uploads) = app.tus.clone() else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "resumable uploads are not enabled on this server; use POST /upload",
        ));
    };
    if req.method == Method::OPTIONS {
        return Ok(options(&app));
    }
    match req.header("tus-resumable") {
        Some(TUS_VERSION) => {}
        Some(v) => {
            return Err(Refusal::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "Tus-Resumable {v:?} is not supported; this server speaks tus {TUS_VERSION}"
                ),
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "the Tus-Resumable header is missing; this server speaks tus {TUS_VERSION}"
                ),
            ));
        }
    }
    req.admit(&app)?;
    let collection = req.key.is_empty();
    match (collection, req.method.clone()) {
        (true, Method::POST) => create(&app, &uploads, &req).await,
        (false, Method::HEAD) => head(&app, &uploads, &req, &checked_key(&req.key)?).await,
        (false, Method::PATCH) => {
            let key = checked_key(&req.key)?;
            patch(app.clone(), uploads, &req, key, body).await
        }
        (false, Method::DELETE) => terminate(&uploads, &req, &checked_key(&req.key)?).await,
        _ => Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            if collection {
                "/files/ takes OPTIONS and POST (to create an upload)"
            } else {
                "an upload takes HEAD, PATCH and DELETE"
            },
        )),
    }
}

/// An upload key from a URL: anything that is not one is not an upload.
fn checked_key(key: &str) -> Result<String, Refusal> {
    if store::valid_key(key) {
        Ok(key.to_string())
    } else {
        Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("there is no upload {key:?}"),
        ))
    }
}

/// `OPTIONS`: what this server speaks.
fn options(app: &App) -> Reply {
    answer(StatusCode::NO_CONTENT)
        .header("tus-version", TUS_VERSION)
        .header("tus-extension", TUS_EXTENSIONS)
        .header("tus-max-size", app.ingest.max_upload_bytes())
        .body(Default::default())
        .unwrap_or_default()
}

/// `Upload-Expires` for a time in milliseconds since the epoch (an HTTP
/// date, as tus says).
fn http_date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

/// `POST /files/`: creates an upload from `Upload-Length` and
/// `Upload-Metadata`, refusing at once what could never become a video.
async fn create(app: &App, uploads: &TusStore, req: &Request) -> Answer {
    if req.header("upload-defer-length").is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let Some(length) = req.count("upload-length")? else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Upload-Length is missing: say how many bytes the file has",
        ));
    };
    let limit = app.ingest.max_upload_bytes();
    if length > limit {
        return Err(Error::TooLarge {
            what: format!("an upload of {length} bytes"),
            limit,
        }
        .into());
    }
    if length == 0 {
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "the file is empty"));
    }
    let raw = req.header("upload-metadata").unwrap_or("").to_string();
    let meta = parse_metadata(&raw)?;
    let mut record = record_of(app, uploads, length, raw, &meta).await?;
    record.owner = req.user();
    let key = uploads.create(&record).await?;
    tracing::info!(upload = %key, length, file = %record.filename, "resumable upload created");
    Ok(answer(StatusCode::CREATED)
        .header("location", format!("/files/{key}"))
        .header("upload-expires", http_date(record.expires_ms))
        .body(Default::default())
        .unwrap_or_default())
}

/// The record of a new upload, checking its metadata as `POST /upload`
/// checks its fields.
async fn record_of(
    app: &App,
    uploads: &TusStore,
    length: u64,
    raw_metadata: String,
    meta: &std::collections::HashMap<String, String>,
) -> Result<UploadRecord, Refusal> {
    let field = |k: &str| {
        meta.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (filename, id, title, description) = (
        field("filename"),
        field("id"),
        field("title"),
        field("description"),
    );
    for (name, value, max) in [
        ("title", &title, MAX_TITLE_CHARS),
        ("description", &description, MAX_DESCRIPTION_CHARS),
    ] {
        let chars = value.chars().count();
        if chars > max {
            return Err(Error::invalid(
                name,
                "",
                format!("it is {chars} characters long; at most {max} are accepted"),
            )
            .into());
        }
    }
    // Refuses a bad typed id, and an id that cannot be derived at all.
    let candidates = super::upload::candidate_ids(Some(&id), &title, &filename)?;
    if !id.is_empty() {
        super::upload::refuse_taken(app, &candidates[0]).await?;
    }
    Ok(UploadRecord {
        length,
        raw_metadata,
        filename,
        id: (!id.is_empty()).then_some(id),
        title,
        description,
        expires_ms: uploads.expires_from_now(),
        video_id: None,
        sha256: None,
        owner: None,
    })
}

/// `Upload-Metadata`: comma-separated `key value` pairs, each value
/// base64; a key may come without a value.
fn parse_metadata(raw: &str) -> Result<std::collections::HashMap<String, String>, Refusal> {
    let bad =
        |why: String| Refusal::new(StatusCode::BAD_REQUEST, format!("Upload-Metadata: {why}"));
    let mut out = std::collections::HashMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || !key.is_ascii() {
            return Err(bad(format!("{key:?} is not a valid key")));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| bad(format!("the value of {key} is not base64")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| bad(format!("the value of {key} is not UTF-8 text")))?;
        if out.insert(key.to_string(), text).is_some() {
            return Err(bad(format!("{key} is given twice")));
        }
    }
    Ok(out)
}

/// The headers every HEAD and PATCH answer shares: where the upload
/// stands and, once finished, what it became.
fn state_headers(
    b: warp::http::response::Builder,
    offset: u64,
    record: &UploadRecord,
) -> warp::http::response::Builder {
    let mut b = b
        .header("upload-offset", offset)
        .header("cache-control", "no-store");
    if record.video_id.is_none() {
        b = b.header("upload-expires", http_date(record.expires_ms));
    }
    if let Some(id) = record
        .video_id
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        b = b.header(VIDEO_ID_HEADER, id);
    }
    if let Some(sha) = &record.sha256 {
        b = b.header(SHA256_HEADER, sha.as_str());
    }
    b
}

/// Where upload `key` stands: its offset (its length once finished).
async fn offset_of(uploads: &TusStore, key: &str, record: &UploadRecord) -> Result<u64, Refusal> {
    if record.video_id.is_some() {
        return Ok(record.length);
    }
    Ok(uploads.offset(key).await?)
}

/// `HEAD /files/<key>`: where the upload stands, once no PATCH is writing
/// to it. A complete upload not handed to ingest yet (the server stopped,
/// or failed, between its last byte and the hand-over) is handed over now,
/// so the answer can name its video.
async fn head(app: &App, uploads: &TusStore, req: &Request, key: &str) -> Answer {
    let (_guard, mut record) = uploads.lock(key, LOCK_WAIT).await?;
    req.owns(&record)?;
    let mut offset = offset_of(uploads, key, &record).await?;
    if record.video_id.is_none() && offset == record.length {
        record = patch::finish(app, uploads, key, record).await?;
        offset = record.length;
    }
    let mut b = state_headers(answer(StatusCode::OK), offset, &record)
        .header("upload-length", record.length);
    if !record.raw_metadata.is_empty() {
        b = b.header("upload-metadata", record.raw_metadata.as_str());
    }
    Ok(b.body(Default::default()).unwrap_or_default())
}

/// `DELETE /files/<key>`: the upload and its bytes are removed (a video it
/// already became stays).
async fn terminate(uploads: &TusStore, req: &Request, key: &str) -> Answer {
    let (_guard, record) = uploads.lock(key, LOCK_WAIT).await?;
    req.owns(&record)?;
    uploads.remove_locked(key).await;
    tracing::info!(upload = %key, "resumable upload terminated");
    Ok(answer(StatusCode::NO_CONTENT)
        .body(Default::default())
        .unwrap_or_default())
}

mod patch;
use patch::patch;

/// Removes expired uploads every so often (a quarter of the expiry, between
/// a second and ten minutes) until `stop` resolves.
pub async fn sweep(uploads: Arc<TusStore>, stop: impl std::future::Future<Output = ()>) {
    let every = (uploads.expiry() / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
        let removed = uploads.sweep().await;
        if removed > 0 {
            tracing::info!(removed, "expired resumable uploads removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_base64_pairs() {
        let m = parse_metadata("filename Y2xpcC5tcDQ=, title SGVsbG8gd29ybGQ=,flag").unwrap();
        assert_eq!(m["filename"], "clip.mp4");
        assert_eq!(m["title"], "Hello world");
        assert_eq!(m["flag"], "");
        assert!(parse_metadata("").unwrap().is_empty());
        let e = parse_metadata("filename !!!").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("base64"), "{}", e.message);
        let e = parse_metadata("a YQ==,a YQ==").unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        let e = parse_metadata("t /w==").unwrap_err();
        assert!(e.message.contains("UTF-8"), "{}", e.message);
    }

    #[test]
    fn expiry_dates_are_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(86_400_000), "Fri, 02 Jan 1970 00:00:00 GMT");
    }
}
