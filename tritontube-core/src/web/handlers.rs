//! What each route does.

use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use warp::Rejection;
use warp::http::{HeaderMap, Method, Response, StatusCode, header};
use warp::reply::Reply;

use super::auth::{self, SignedIn};
use super::filters::{html_err, json_err};
use super::models::{VideoJson, VideoListJson};
use super::pages::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};
use super::{App, pages};
use crate::error::Error;
use crate::id::{ContentKey, FileName, VideoId};
use crate::ingest::{Deletion, hls};
use crate::metadata::{
    PageCursor, PageRequest, SearchRequest, User, Video, VideoChange, VideoState,
};
use crate::store::{GetOptions, ObjectMeta};

type Reply_ = Result<warp::reply::Response, Rejection>;

/// Query of `GET /` and `GET /api/videos`: `q` (search words), `cursor`
/// (a `next_cursor`), `limit` (API only). Read as text, so that a bad value
/// is refused with a message saying which.
pub type ListQuery = std::collections::HashMap<String, String>;

/// A list request read from a [`ListQuery`]: bad values are
/// [`Error::InvalidInput`] naming the parameter.
fn search_request(q: &ListQuery, default_limit: usize) -> Result<SearchRequest, Error> {
    let limit = match q.get("limit").map(|l| l.trim()) {
        None | Some("") => default_limit,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(Error::invalid(
                    "limit",
                    l,
                    "expected a whole number from 1 to 1000",
                ));
            }
        },
    };
    let query = q.get("q").map(|s| s.trim().to_string()).unwrap_or_default();
    if query.chars().count() > 200 {
        return Err(Error::invalid(
            "q",
            "",
            "search words are at most 200 characters",
        ));
    }
    let cursor = match q.get("cursor").map(|c| c.trim()) {
        None | Some("") => None,
        Some(c) => Some(PageCursor::decode(c)?),
    };
    Ok(SearchRequest {
        query,
        limit,
        cursor,
    })
}

/// `GET /`: the upload form and a page of videos (`?q=` finds some,
/// `?cursor=` is the next page).
pub async fn index(q: ListQuery, signed_in: Option<SignedIn>, app: App) -> Reply_ {
    let request = search_request(&q, pages::HOME_PAGE_SIZE).map_err(html_err)?;
    let page = app.meta.search_videos(&request).await.map_err(html_err)?;
    let next = page.next.as_ref().map(PageCursor::encode);
    let account = pages::Account::of(signed_in.as_ref());
    let home = pages::Home {
        videos: &page.videos,
        query: &request.query,
        next_cursor: next.as_deref(),
        max_upload_bytes: app.ingest.max_upload_bytes(),
        account: &account,
        can_upload: signed_in.is_some() || app.accounts.public_uploads,
    };
    Ok(warp::reply::html(pages::index(&pages::SiteUrls::of(&app.assets), home)).into_response())
}

/// `GET /videos/<id>`.
pub async fn watch(id: String, signed_in: Option<SignedIn>, app: App) -> Reply_ {
    let id = VideoId::new(id).map_err(html_err)?;
    let v = app.meta.get_video(&id).await.map_err(html_err)?;
    let hls = hls_manifest(&app, &v).await.map_err(html_err)?;
    let can_edit = signed_in
        .as_ref()
        .is_some_and(|s| auth::may_change(&v, &s.user).is_ok());
    let account = pages::Account::of(signed_in.as_ref());
    let page = pages::watch(
        &pages::SiteUrls::of(&app.assets),
        &v,
        hls.as_deref(),
        &account,
        can_edit,
    );
    Ok(warp::reply::html(page).into_response())
}

/// The URL of `v`'s HLS master playlist, if it has one: a ready video
/// transcoded since HLS was added (its playlist's checksum is recorded);
/// older videos have DASH only.
async fn hls_manifest(app: &App, v: &Video) -> Result<Option<String>, Error> {
    if v.state != VideoState::Ready {
        return Ok(None);
    }
    let file = FileName::new(hls::master_playlist_name(v.generation))?;
    let key = ContentKey::new(v.id.clone(), file);
    let record = app.meta.file_record(&key).await?;
    Ok(record.map(|_| format!("/content/{}/{}", v.id, key.file())))
}

fn content_type(file: &str) -> &'static str {
    match Path::new(file).extension().and_then(|e| e.to_str()) {
        Some("mpd") => "application/dash+xml",
        Some("m3u8") => hls::PLAYLIST_CONTENT_TYPE,
        Some("m4s") => "video/iso.segment",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("mp4") => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Whether an `If-None-Match` header names `etag` (or is `*`), by the weak
/// comparison (RFC 9110 13.1.2): `W/"x"` matches `"x"`.
fn none_match_hits(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .any(|t| t.trim().trim_start_matches("W/") == etag)
}

/// A byte position: digits only; a number too large for `u64` is as good
/// as `u64::MAX` (it only ever means "past the end").
fn byte_pos(s: &str) -> Result<u64, ()> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(s.parse().unwrap_or(u64::MAX))
}

/// Parses one `bytes=` range against `size`: `Ok(None)` for no (or an
/// ignorable) header, `Err(())` for an unsatisfiable one.
fn parse_range(h: Option<&str>, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multiple ranges: serve the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let r = match (a.trim(), b.trim()) {
        ("", n) => {
            let n = byte_pos(n)?;
            size.saturating_sub(n)..size
        }
        (a, "") => byte_pos(a)?..size,
        (a, b) => {
            let (a, b) = (byte_pos(a)?, byte_pos(b)?);
            if b < a {
                return Err(());
            }
            // A last byte past the end means "to the end" (RFC 9110 14.1.2),
            // however large the number.
            a..b.saturating_add(1).min(size)
        }
    };
    if r.start >= size || r.is_empty() {
        Err(())
    } else {
        Ok(Some(r))
    }
}

/// `GET`/`HEAD /content/<id>/<file>`: with `ETag` (and 304), one byte
/// range (206, or 416), caching headers, and small files from memory.
pub async fn content(
    tail: warp::path::Tail,
    method: Method,
    headers: HeaderMap,
    app: App,
) -> Reply_ {
    let key = content_key(tail.as_str())?;
    let found = find_content(&app, &key).await?;
    let meta = &found.meta;
    let etag = format!("\"{}\"", meta.sha256.to_hex());
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|inm| none_match_hits(inm, &etag))
    {
        return respond(
            content_builder(&key, &etag).status(StatusCode::NOT_MODIFIED),
            warp::reply().into_response(),
        );
    }
    // If-Range uses the strong comparison: a weak tag or a date (this
    // server sends no Last-Modified) never matches, and then the whole file
    // is sent (RFC 9110 13.1.5).
    let range_header = match headers
        .get(header::IF_RANGE)
        .map(|h| h.to_str().unwrap_or(""))
    {
        Some(tag) if tag.trim() != etag => None,
        _ => headers.get(header::RANGE).and_then(|h| h.to_str().ok()),
    };
    let Ok(range) = parse_range(range_header, meta.size) else {
        return respond(
            Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{}", meta.size)),
            warp::reply().into_response(),
        );
    };
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..meta.size),
    };
    let mut b = content_builder(&key, &etag)
        .status(status)
        .header(header::CONTENT_LENGTH, span.end - span.start);
    if range.is_some() {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", span.start, span.end - 1, meta.size),
        );
    }
    if method == Method::HEAD {
        return respond(b, warp::reply().into_response());
    }
    let body = content_body(&app, &key, found, range, span).await?;
    respond(b, body)
}

/// The key of `/content/<videoId>/<filename>`, from the path after
/// `/content/`.
fn content_key(tail: &str) -> Result<ContentKey, Rejection> {
    let (v, f) = tail.split_once('/').unwrap_or((tail, ""));
    if f.is_empty() {
        return Err(html_err(Error::invalid(
            "content path",
            tail,
            "expected /content/<videoId>/<filename>",
        )));
    }
    ContentKey::from_parts(v, f).map_err(html_err)
}

/// A content file's size and checksum, and its bytes if memory has them.
struct Found {
    meta: ObjectMeta,
    cached: Option<Bytes>,
    /// Whether a file record vouches for it (then no copy is a 502).
    recorded: bool,
}

/// What is known of `key`: from memory if checked recently; otherwise
/// from its record (the truth: a node is only asked for a file stored
/// before records existed), checking what memory holds against it.
async fn find_content(app: &App, key: &ContentKey) -> Result<Found, Rejection> {
    if let Some((meta, body)) = app.cache.fresh(key) {
        return Ok(Found {
            meta,
            cached: Some(body),
            recorded: false,
        });
    }
    let record = app.meta.file_record(key).await.map_err(html_err)?;
    let meta = match &record {
        Some(r) => ObjectMeta {
            key: key.clone(),
            size: r.size,
            sha256: r.sha256,
        },
        None => app.content.head(key).await.map_err(html_err)?,
    };
    let cached = app.cache.revalidate(&meta);
    Ok(Found {
        meta,
        cached,
        recorded: record.is_some(),
    })
}

/// The headers every answer about `key` carries.
fn content_builder(key: &ContentKey, etag: &str) -> warp::http::response::Builder {
    // A manifest may be rewritten (a new generation has its own names, but
    // a manifest is looked up by name); everything else never changes.
    let cache = if [".mpd", ".m3u8"]
        .iter()
        .any(|m| key.file().as_str().ends_with(m))
    {
        "public, max-age=10"
    } else {
        "public, max-age=31536000, immutable"
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type(key.file().as_str()))
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, cache)
        .header(header::ACCEPT_RANGES, "bytes")
}

/// The bytes `span` of a found file: from memory when it is small enough to
/// keep there, else streamed from the store.
async fn content_body(
    app: &App,
    key: &ContentKey,
    found: Found,
    range: Option<std::ops::Range<u64>>,
    span: std::ops::Range<u64>,
) -> Result<warp::reply::Response, Rejection> {
    let whole = match found.cached {
        Some(body) => Some(body),
        None if app.cache.admits(found.meta.size) => {
            Some(fetch_whole(app, &found.meta, found.recorded).await?)
        }
        None => None,
    };
    if let Some(body) = whole {
        let part = body.slice(span.start as usize..span.end as usize);
        app.metrics.add_bytes_served(part.len() as u64);
        return Ok(warp::reply::Response::new(part.into()));
    }
    stream_content(app, key, &found.meta, range, found.recorded).await
}

/// Streams `range` of a file from the store, checked against `meta`.
async fn stream_content(
    app: &App,
    key: &ContentKey,
    meta: &ObjectMeta,
    range: Option<std::ops::Range<u64>>,
    recorded: bool,
) -> Result<warp::reply::Response, Rejection> {
    let got = app
        .content
        .get(
            key,
            GetOptions {
                range,
                expected_sha256: Some(meta.sha256),
            },
        )
        .await
        .map_err(|e| html_err(lost_if_recorded(e, recorded)))?;
    // The first chunk is read (and verified by the store) before the status
    // is sent, so a bad copy found there is a clean 502. A bad chunk found
    // later can only cut the body short: the status is gone by then, and
    // the client sees fewer bytes than Content-Length promised.
    let mut body = got.stream;
    let first = match body.next().await {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Err(html_err(e)),
        None => None,
    };
    // Bridge to a Sync stream for the HTTP body, counting bytes served.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let metrics = app.metrics.clone();
    let mut body = futures::stream::iter(first.map(Ok)).chain(body);
    tokio::spawn(async move {
        while let Some(c) = body.next().await {
            let item = c.map_err(|e| std::io::Error::other(e.to_string()));
            if let Ok(b) = &item {
                metrics.add_bytes_served(b.len() as u64);
            }
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response())
}

/// A file served by its record that no store holds is lost bytes, a server
/// fault (502), never a 404: the record says it was stored.
fn lost_if_recorded(e: Error, recorded: bool) -> Error {
    match e {
        Error::NotFound { key } if recorded => Error::BadCopy {
            key,
            detail: "recorded, but no copy is held anywhere".into(),
        },
        e => e,
    }
}

/// Reads all of a small file, checks it against `meta` and keeps it in the
/// cache.
async fn fetch_whole(
    app: &App,
    meta: &ObjectMeta,
    recorded: bool,
) -> std::result::Result<Bytes, Rejection> {
    let got = app
        .content
        .get(
            &meta.key,
            GetOptions {
                range: None,
                expected_sha256: Some(meta.sha256),
            },
        )
        .await
        .map_err(|e| html_err(lost_if_recorded(e, recorded)))?;
    let mut buf = bytes::BytesMut::with_capacity(meta.size as usize);
    let mut stream = got.stream;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    while let Some(c) = stream.next().await {
        let c = c.map_err(html_err)?;
        sha2::Digest::update(&mut hasher, &c);
        buf.extend_from_slice(&c);
    }
    let sha = crate::store::Sha256Digest(sha2::Digest::finalize(hasher).into());
    if buf.len() as u64 != meta.size || sha != meta.sha256 {
        return Err(html_err(Error::BadCopy {
            key: meta.key.to_string(),
            detail: format!("read {} bytes hashing to {sha}", buf.len()),
        }));
    }
    let body = buf.freeze();
    app.cache.insert(got.meta, body.clone());
    Ok(body)
}

/// `body` with the status and headers of `b`.
fn respond(b: warp::http::response::Builder, mut body: warp::reply::Response) -> Reply_ {
    let built = b
        .body(())
        .map_err(|e| html_err(Error::backend("http", "building a response failed", e)))?;
    let (parts, ()) = built.into_parts();
    *body.status_mut() = parts.status;
    let headers = body.headers_mut();
    for (k, v) in parts.headers.iter() {
        headers.insert(k, v.clone());
    }
    Ok(body)
}

/// `GET /api/videos`: a page of videos, newest first; `?q=` finds those
/// whose title or description has the words, `?cursor=` continues after a
/// page, `?limit=` (1 to 1000, default 100) sizes it.
pub async fn api_list(q: ListQuery, app: App) -> Reply_ {
    let request = search_request(&q, 100).map_err(json_err)?;
    let page = app.meta.search_videos(&request).await.map_err(json_err)?;
    let mut items: Vec<VideoJson> = page.videos.iter().map(VideoJson::from).collect();
    // Which have HLS, 16 lookups at a time.
    let mut hls = Vec::with_capacity(items.len());
    for some in page.videos.chunks(16) {
        let found = futures::future::try_join_all(some.iter().map(|v| hls_manifest(&app, v)));
        hls.extend(found.await.map_err(json_err)?);
    }
    for (json, hls) in items.iter_mut().zip(hls) {
        json.hls_manifest = hls;
    }
    Ok(warp::reply::json(&VideoListJson {
        items,
        next_cursor: page.next.as_ref().map(PageCursor::encode),
    })
    .into_response())
}

/// `GET /api/videos/<id>`.
pub async fn api_get(id: String, app: App) -> Reply_ {
    let id = VideoId::new(id).map_err(json_err)?;
    let v = app.meta.get_video(&id).await.map_err(json_err)?;
    let mut json = VideoJson::from(&v);
    json.hls_manifest = hls_manifest(&app, &v).await.map_err(json_err)?;
    Ok(warp::reply::json(&json).into_response())
}

/// `DELETE /api/videos/<id>`: cancels its job, removes its files from every
/// node, then its record. 204 once all is gone; 202 with the video (state
/// `deleting`) if the purge takes longer than a few seconds (it goes on in
/// the background; the id is free once it is done). For the admin token,
/// or a session (with its CSRF token) of the video's uploader or an admin.
pub async fn api_delete(id: String, caller: ApiCaller, app: App) -> Reply_ {
    // Who may delete comes first: an anonymous caller learns nothing, not
    // even whether the id exists.
    let user = caller.changer(&app).map_err(json_err)?;
    let id = VideoId::new(id).map_err(json_err)?;
    Ok(
        match delete_video(&app, &id, user).await.map_err(json_err)? {
            Deletion::Done => {
                warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
            }
            Deletion::Pending(v) => warp::reply::with_status(
                warp::reply::json(&VideoJson::from(&v)),
                StatusCode::ACCEPTED,
            )
            .into_response(),
        },
    )
}

/// Deletes a video for `user` (`None`: the admin token), once it is
/// allowed to.
async fn delete_video(app: &App, id: &VideoId, user: Option<&User>) -> Result<Deletion, Error> {
    if let Some(user) = user {
        auth::may_change(&app.meta.get_video(id).await?, user)?;
    }
    app.cache.remove_video(id);
    let outcome = app.ingest.delete(id, DELETE_WAIT).await?;
    app.cache.remove_video(id);
    if let Some(user) = user {
        tracing::info!(video = %id, user = %user.name, "video deleted");
    }
    Ok(outcome)
}

/// The text fields of a small urlencoded form.
pub type FormFields = std::collections::HashMap<String, String>;

/// Who asks the JSON API for a change: the admin token, or a session
/// cookie and its CSRF token.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    /// The `Authorization` header, if sent.
    pub authorization: Option<String>,
    /// The caller the session cookie names, if any.
    pub signed_in: Option<SignedIn>,
    /// The `X-CSRF-Token` header, if sent.
    pub csrf: Option<String>,
}

impl ApiCaller {
    /// The user asking (`None`: the admin token, which may do anything).
    /// A wrong admin token, or no credentials, is 401; a session without
    /// its CSRF token is 403.
    pub fn changer(&self, app: &App) -> Result<Option<&User>, Error> {
        if self.authorization.is_some() || self.signed_in.is_none() {
            app.authorize(self.authorization.as_deref()).map_err(|e| {
                match (&e, &self.authorization) {
                    (Error::Unauthenticated { .. }, None) => Error::Unauthenticated {
                        reason: "sign in first (or send the admin token as \
                                 Authorization: Bearer <token>)"
                            .into(),
                    },
                    _ => e,
                }
            })?;
            return Ok(None);
        }
        let signed = self.signed_in.as_ref().expect("checked above");
        signed.check_csrf(self.csrf.as_deref())?;
        Ok(Some(&signed.user))
    }
}

/// A change of a video's title or description (`PATCH /api/videos/<id>`,
/// or the watch page's form); a field left out stays as it is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoEdit {
    /// The new title: 1 to 200 characters (trimmed).
    pub title: Option<String>,
    /// The new description: at most 5000 characters (trimmed).
    pub description: Option<String>,
}

impl VideoEdit {
    /// The edit with its text trimmed, or [`Error::InvalidInput`] saying
    /// which field is wrong.
    fn checked(self) -> Result<VideoEdit, Error> {
        let title = self.title.map(|t| t.trim().to_string());
        if let Some(t) = &title {
            if t.is_empty() {
                return Err(Error::invalid("title", t, "a title cannot be empty"));
            }
            if t.chars().count() > MAX_TITLE_CHARS {
                return Err(Error::invalid(
                    "title",
                    "",
                    format!("a title is at most {MAX_TITLE_CHARS} characters"),
                ));
            }
        }
        let description = self.description.map(|d| d.trim().to_string());
        if description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
        {
            return Err(Error::invalid(
                "description",
                "",
                format!("a description is at most {MAX_DESCRIPTION_CHARS} characters"),
            ));
        }
        Ok(VideoEdit { title, description })
    }
}

/// Applies `edit` to a video for `user` (`None`: the admin token), once it
/// is allowed to; returns the video as written.
async fn edit_video(
    app: &App,
    id: &VideoId,
    user: Option<&User>,
    edit: VideoEdit,
) -> Result<Video, Error> {
    let edit = edit.checked()?;
    let written = app
        .meta
        .change_video(id, &|v: &Video| {
            if let Some(user) = user {
                auth::may_change(v, user)?;
            }
            if v.state.phase() == crate::metadata::Phase::Deleting {
                return Err(Error::Conflict {
                    key: format!("video {id}"),
                    reason: "it is being deleted".into(),
                });
            }
            let mut v = v.clone();
            if let Some(t) = &edit.title {
                v.title = t.clone();
            }
            if let Some(d) = &edit.description {
                v.description = d.clone();
            }
            Ok(VideoChange::Put(v))
        })
        .await?;
    written.ok_or_else(|| Error::not_found(format!("video {id}")))
}

/// `PATCH /api/videos/<id>` with JSON `{"title": .., "description": ..}`:
/// the video as changed.
pub async fn api_patch(id: String, caller: ApiCaller, edit: VideoEdit, app: App) -> Reply_ {
    let user = caller.changer(&app).map_err(json_err)?;
    let id = VideoId::new(id).map_err(json_err)?;
    let v = edit_video(&app, &id, user, edit).await.map_err(json_err)?;
    let mut json = VideoJson::from(&v);
    json.hls_manifest = hls_manifest(&app, &v).await.map_err(json_err)?;
    Ok(warp::reply::json(&json).into_response())
}

/// The signed-in caller of a page's form, its CSRF token checked: 401 if
/// no one is signed in, 403 if the token is missing or wrong.
fn form_user<'a>(signed_in: &'a Option<SignedIn>, form: &FormFields) -> Result<&'a User, Error> {
    let Some(s) = signed_in else {
        return Err(Error::Unauthenticated {
            reason: "sign in first".into(),
        });
    };
    s.check_csrf(form.get(auth::CSRF_FIELD).map(String::as_str))?;
    Ok(&s.user)
}

/// A `303 See Other` to `to`.
fn see_other(to: &str) -> warp::reply::Response {
    warp::reply::with_header(
        warp::reply::with_status(warp::reply(), StatusCode::SEE_OTHER),
        header::LOCATION,
        to,
    )
    .into_response()
}

/// `POST /videos/<id>/edit` (the watch page's form): 303 back to it.
pub async fn edit_form(
    id: String,
    signed_in: Option<SignedIn>,
    form: FormFields,
    app: App,
) -> Reply_ {
    let user = form_user(&signed_in, &form).map_err(html_err)?;
    let id = VideoId::new(id).map_err(html_err)?;
    let edit = VideoEdit {
        title: form.get("title").cloned(),
        description: form.get("description").cloned(),
    };
    edit_video(&app, &id, Some(user), edit)
        .await
        .map_err(html_err)?;
    Ok(see_other(&format!("/videos/{id}")))
}

/// `POST /videos/<id>/delete` (the watch page's form): 303 to `/`.
pub async fn delete_form(
    id: String,
    signed_in: Option<SignedIn>,
    form: FormFields,
    app: App,
) -> Reply_ {
    let user = form_user(&signed_in, &form).map_err(html_err)?;
    let id = VideoId::new(id).map_err(html_err)?;
    delete_video(&app, &id, Some(user))
        .await
        .map_err(html_err)?;
    Ok(see_other("/"))
}

/// `GET /signin`: the sign-in form.
pub async fn signin_page(signed_in: Option<SignedIn>, app: App) -> Reply_ {
    let account = pages::Account::of(signed_in.as_ref());
    let site = pages::SiteUrls::of(&app.assets);
    Ok(warp::reply::html(pages::signin(&site, &account, "", "")).into_response())
}

/// `POST /signin` (form `name`, `password`): the session cookie and 303 to
/// `/`; a wrong name or password is 401 with the form again, saying so
/// (the same words for an unknown name as for a wrong password).
pub async fn signin(form: FormFields, app: App) -> Reply_ {
    let name = form.get("name").map(|n| n.trim()).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    if name.is_empty() || password.is_empty() {
        return Err(html_err(Error::invalid(
            "sign-in form",
            "",
            "give both a user name and a password",
        )));
    }
    match app.accounts.sign_in(&*app.meta, name, password).await {
        Ok((token, _)) => {
            let mut reply = see_other("/");
            let cookie = auth::session_cookie(&token);
            reply.headers_mut().insert(
                header::SET_COOKIE,
                cookie
                    .parse()
                    .map_err(|e| html_err(Error::backend("http", "cookie", e)))?,
            );
            Ok(reply)
        }
        Err(Error::Unauthenticated { reason }) => {
            let site = pages::SiteUrls::of(&app.assets);
            let message = format!("Not signed in: {reason}.");
            let page = pages::signin(&site, &pages::Account::default(), name, &message);
            Ok(
                warp::reply::with_status(warp::reply::html(page), StatusCode::UNAUTHORIZED)
                    .into_response(),
            )
        }
        Err(e) => Err(html_err(e)),
    }
}

/// `POST /signout` (form `csrf`): forgets the session server-side, clears
/// the cookie, 303 to `/`.
pub async fn signout(signed_in: Option<SignedIn>, form: FormFields, app: App) -> Reply_ {
    if let Some(s) = &signed_in {
        s.check_csrf(form.get(auth::CSRF_FIELD).map(String::as_str))
            .map_err(html_err)?;
        app.meta
            .delete_session(&s.token_hash)
            .await
            .map_err(html_err)?;
        tracing::info!(user = %s.user.name, "signed out");
    }
    let mut reply = see_other("/");
    reply.headers_mut().insert(
        header::SET_COOKIE,
        auth::cleared_cookie()
            .parse()
            .map_err(|e| html_err(Error::backend("http", "cookie", e)))?,
    );
    Ok(reply)
}

/// How long a DELETE waits for the purge before answering 202.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /healthz`.
pub async fn healthz(app: App) -> Reply_ {
    app.meta
        .list_videos(PageRequest {
            limit: 1,
            cursor: None,
        })
        .await
        .map_err(json_err)?;
    let mut body =
        serde_json::json!({ "status": "ok", "transcode_queue": app.ingest.queue_depth() });
    if let Some(n) = &app.network {
        let p = n.placement();
        body["ring_epoch"] = p.epoch.into();
        body["ring_change_pending"] = p.pending.is_some().into();
        body["nodes"] = crate::ring::HashRing::node_count(&*p.current).into();
    }
    Ok(warp::reply::json(&body).into_response())
}

/// `GET /metrics`.
pub async fn metrics(app: App) -> Reply_ {
    use std::fmt::Write;
    let mut extra = String::new();
    extra.push_str(
        "# HELP tritontube_transcode_queue_depth Uploads waiting for or in transcoding.\n",
    );
    extra.push_str("# TYPE tritontube_transcode_queue_depth gauge\n");
    let _ = writeln!(
        extra,
        "tritontube_transcode_queue_depth {}",
        app.ingest.queue_depth()
    );
    for (name, help, kind, value) in [
        (
            "tritontube_content_cache_hits_total",
            "Content requests served from memory.",
            "counter",
            app.cache.hits(),
        ),
        (
            "tritontube_content_cache_misses_total",
            "Content requests that fetched the file from the store.",
            "counter",
            app.cache.misses(),
        ),
        (
            "tritontube_content_cache_bytes",
            "Bytes of content held in memory.",
            "gauge",
            app.cache.bytes(),
        ),
    ] {
        let _ = writeln!(
            extra,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    if let Some(n) = &app.network {
        extra.push_str("# HELP tritontube_ring_epoch Epoch of the ring this server routes by.\n");
        extra.push_str("# TYPE tritontube_ring_epoch gauge\n");
        let _ = writeln!(extra, "tritontube_ring_epoch {}", n.placement().epoch);
    }
    if let Some(h) = &app.health {
        node_metrics(&mut extra, &app, h);
    }
    Ok(warp::reply::with_header(
        app.metrics.render(&extra),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response())
}

/// One per-node metric family: its HELP and TYPE lines, then `value` of
/// every node in `snap`.
fn node_family(
    extra: &mut String,
    snap: &[(crate::NodeAddr, crate::cluster::NodeLiveness)],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&crate::cluster::NodeLiveness) -> String,
) {
    use std::fmt::Write;
    let _ = writeln!(extra, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (addr, n) in snap {
        let _ = writeln!(extra, "{name}{{node=\"{addr}\"}} {}", value(n));
    }
}

/// The storage nodes' series of `/metrics`: liveness, hinted writes, bad
/// copies, quarantine, indexing and errors.
fn node_metrics(extra: &mut String, app: &App, h: &crate::cluster::HealthTracker) {
    use crate::cluster::Liveness;
    use std::fmt::Write;
    // Only members (and a running change's nodes) have series: a removed
    // node's disappear, and a refused add never shows up.
    let snap = match &app.network {
        Some(n) => h.snapshot_of(&n.placement().all_nodes()),
        None => h.snapshot(),
    };
    let up = (
        "tritontube_node_up",
        "gauge",
        "Storage node liveness (1 up, 0.5 suspect, 0 down).",
    );
    node_family(extra, &snap, up, |n| {
        match n.state {
            Liveness::Up => "1",
            Liveness::Suspect => "0.5",
            Liveness::Down => "0",
        }
        .to_string()
    });
    extra.push_str(
        "# HELP tritontube_node_state_since_seconds Unix time of the node's last liveness change.\n\
         # TYPE tritontube_node_state_since_seconds gauge\n",
    );
    for (addr, n) in &snap {
        let since = n
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            extra,
            "tritontube_node_state_since_seconds{{node=\"{addr}\",state=\"{}\"}} {since:.3}",
            n.state.name()
        );
    }
    extra.push_str("# HELP tritontube_hinted_writes_total Writes sent to a stand-in because an owner was down.\n# TYPE tritontube_hinted_writes_total counter\n");
    let _ = writeln!(extra, "tritontube_hinted_writes_total {}", h.hints());
    extra.push_str("# HELP tritontube_bad_copies_total Copies whose bytes disagreed with the recorded checksum, met by reads (another copy was served, and a repair queued).\n# TYPE tritontube_bad_copies_total counter\n");
    let _ = writeln!(extra, "tritontube_bad_copies_total {}", h.bad_copies());
    let families: [(&str, &str, &str); 4] = [
        (
            "tritontube_node_quarantined_files",
            "gauge",
            "Files a storage node moved to quarantine (bytes that no longer matched), as its last Health answer said.",
        ),
        (
            "tritontube_node_bad_copies_total",
            "counter",
            "Reads from a storage node that met bytes disagreeing with the recorded checksum.",
        ),
        (
            "tritontube_node_indexing_percent",
            "gauge",
            "Index build progress of a storage node (100 when complete).",
        ),
        (
            "tritontube_node_errors_total",
            "counter",
            "Failed requests to a storage node.",
        ),
    ];
    let values: [fn(&crate::cluster::NodeLiveness) -> String; 4] = [
        |n| n.quarantined.to_string(),
        |n| n.bad_copies.to_string(),
        |n| n.indexing.unwrap_or(100.0).to_string(),
        |n| n.errors.to_string(),
    ];
    for (family, value) in families.into_iter().zip(values) {
        node_family(extra, &snap, family, value);
    }
}

/// Query of an asset: `v`, the version the page named it by.
#[derive(Debug, Deserialize)]
pub struct AssetQuery {
    /// The start of the file's SHA-256 ([`super::assets::Asset::version`]).
    pub v: Option<String>,
}

/// `GET`/`HEAD /static/<file>`, `/favicon.ico`, `/favicon.svg`: the player
/// and the favicon ([`super::assets`]), with `ETag` (and 304) and caching
/// for good when asked for by the version pages name.
pub async fn asset(path: String, q: AssetQuery, if_none_match: Option<String>, app: App) -> Reply_ {
    let Some(a) = app.assets.get(&path) else {
        return Err(html_err(Error::not_found(path)));
    };
    let etag = a.etag();
    let b = Response::builder()
        .header(header::CONTENT_TYPE, a.content_type())
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, a.cache_control(q.v.as_deref()));
    if if_none_match.is_some_and(|inm| none_match_hits(&inm, &etag)) {
        return respond(
            b.status(StatusCode::NOT_MODIFIED),
            warp::reply().into_response(),
        );
    }
    respond(
        b.status(StatusCode::OK),
        warp::reply::Response::new(a.body().clone().into()),
    )
}
