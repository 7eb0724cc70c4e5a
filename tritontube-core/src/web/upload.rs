//! `POST /upload`: a multipart form with the field `file` and, in any order
//! around it, the optional text fields `id`, `title` and `description`.
//!
//! The file goes to the spool as it arrives ([`Ingest::stage`](crate::ingest::Ingest::stage)), so the
//! fields may come before or after it; the id is decided once the whole
//! form is read:
//!
//! - an `id` typed into the field is used as it is (400 if it is not a
//!   valid id, 409 if a video has it);
//! - a form with no `id` field at all, as the course project's form and its
//!   `curl -F file=@clip.mp4` users send, gets the file name's stem, as it
//!   always did (409 if a video has it);
//! - an `id` field left empty, as the site's own form sends it, means
//!   "choose one for me": the title's words, else the file's stem, and, if
//!   a video already has that, the same with a short random suffix
//!   (`video-k3x9q2`), so two uploads of `video.mp4` both succeed.
//!
//! Uploading needs a signed-in user unless the server runs with
//! `--public-uploads`: an anonymous upload is refused with 401 before its
//! body is read. A signed-in upload must carry the session's CSRF token
//! (the header `X-CSRF-Token`, or the form field `csrf`), or it is refused
//! with 403 and nothing is kept; its video records the uploader as its
//! [`owner`](crate::metadata::Video::owner).
//!
//! A browser's form gets `303 See Other` to `/`; a client that asks for JSON
//! (`Accept: application/json`, as the page's script does) gets `201
//! Created` with the video's JSON, and errors as JSON too.

use futures::StreamExt;
use warp::http::{StatusCode, header};
use warp::reply::Reply;
use warp::{Buf, Rejection};

use super::App;
use super::auth::SignedIn;
use super::filters::{html_err, json_err, wants_json};
use super::models::VideoJson;
use super::pages::{MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS};
use crate::error::Error;
use crate::id::VideoId;
use crate::ingest::{StagedUpload, UploadInfo};

/// Bytes a text field may hold (a description of
/// [`MAX_DESCRIPTION_CHARS`] characters of up to four bytes each fits).
const MAX_TEXT_FIELD_BYTES: usize = 32 * 1024;
/// Random suffixes tried for a derived id that is taken.
const SUFFIX_TRIES: usize = 4;
/// Longest base of a derived id, leaving room for a suffix.
const MAX_DERIVED_BASE: usize = 100;

/// The fields of an upload form, as read.
#[derive(Default)]
struct UploadForm {
    /// `None`: the form has no `id` field; `Some("")`: it was left empty.
    id: Option<String>,
    title: String,
    description: String,
    /// The `csrf` field, if sent.
    csrf: Option<String>,
    /// The uploaded file's name and its bytes, staged.
    file: Option<(String, StagedUpload)>,
}

/// Logs an upload whose request went away (its client left) before it was
/// answered: until its record exists, nothing else would say so.
struct Abandon {
    /// The upload's id if typed, else its file name, once known.
    label: String,
    answered: bool,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.answered {
            tracing::warn!(
                upload = %self.label,
                "upload abandoned before it was answered (the client went away); nothing of it is kept unless it was already queued"
            );
        }
    }
}

/// Who is uploading: the signed-in caller (`None` for an anonymous upload
/// where uploads are public) and the CSRF header it sent.
pub struct Uploader {
    /// The caller the session cookie names.
    pub signed_in: Option<SignedIn>,
    /// The `X-CSRF-Token` header.
    pub csrf_header: Option<String>,
}

impl Uploader {
    /// Refuses before any of the body is read: an anonymous caller where
    /// uploads need an account (401), a wrong CSRF header (403).
    fn admit(&self, app: &App) -> Result<(), Error> {
        match &self.signed_in {
            Some(s) => match &self.csrf_header {
                Some(c) => s.check_csrf(Some(c)),
                None => Ok(()), // the form field is checked once read
            },
            None if app.accounts.public_uploads => Ok(()),
            None => Err(Error::Unauthenticated {
                reason: "sign in to upload: this server takes uploads from signed-in users only"
                    .into(),
            }),
        }
    }

    /// Once the form is read: a signed-in upload without the CSRF header
    /// must have sent the token as the form field `csrf` (403 otherwise).
    fn check_form(&self, form_csrf: Option<&str>) -> Result<(), Error> {
        match (&self.signed_in, &self.csrf_header) {
            (Some(s), None) => s.check_csrf(form_csrf),
            _ => Ok(()),
        }
    }
}

/// `POST /upload`. `_slot` is this upload's place within the upload caps,
/// held until it is done; `length` is the announced body size.
pub async fn upload(
    _slot: super::limits::UploadPermit,
    app: App,
    length: Option<u64>,
    accept: Option<String>,
    signed_in: Option<SignedIn>,
    csrf_header: Option<String>,
    form: warp::multipart::FormData,
) -> Result<warp::reply::Response, Rejection> {
    let mut abandon = Abandon {
        label: String::new(),
        answered: false,
    };
    let uploader = Uploader {
        signed_in,
        csrf_header,
    };
    let answer = receive(app, length, accept, &uploader, form, &mut abandon.label).await;
    abandon.answered = true;
    answer
}

/// Reads the form, decides the id and hands the upload to the pipeline;
/// `label` is kept naming the upload for [`Abandon`].
async fn receive(
    app: App,
    length: Option<u64>,
    accept: Option<String>,
    uploader: &Uploader,
    mut form: warp::multipart::FormData,
    label: &mut String,
) -> Result<warp::reply::Response, Rejection> {
    let json = wants_json(accept.as_deref());
    let err = |e: Error| if json { json_err(e) } else { html_err(e) };
    uploader.admit(&app).map_err(err)?;
    let limit = app.ingest.max_upload_bytes();
    // Refuse a body announced too large before reading any of it (the form
    // framing adds a little, hence the slack).
    if let Some(len) = length
        && len > limit + 64 * 1024
    {
        return Err(err(Error::TooLarge {
            what: format!("upload of {len} bytes"),
            limit,
        }));
    }
    let fields = read_form(&app, &mut form, label).await.map_err(err)?;
    uploader.check_form(fields.csrf.as_deref()).map_err(err)?;
    let Some((file_name, staged)) = fields.file else {
        return Err(err(Error::invalid(
            "upload",
            "",
            "the form has no `file` field: choose a video file",
        )));
    };
    let candidates = candidate_ids(fields.id.as_deref(), &fields.title, &file_name).map_err(err)?;
    let title = if fields.title.is_empty() {
        let base = file_name.rsplit(['/', '\\']).next().unwrap_or("");
        if base.is_empty() {
            candidates[0].to_string()
        } else {
            base.to_string()
        }
    } else {
        fields.title
    };
    let info = UploadInfo {
        title,
        description: fields.description,
    };
    let video = app
        .ingest
        .receive_staged(candidates, &info, staged)
        .await
        .map_err(err)?;
    let video = match &uploader.signed_in {
        Some(s) => record_owner(&app, video, &s.user.name).await,
        None => video,
    };
    if json {
        let location = format!("/videos/{}", video.id);
        return Ok(warp::reply::with_header(
            warp::reply::with_status(
                warp::reply::json(&VideoJson::from(&video)),
                StatusCode::CREATED,
            ),
            header::LOCATION,
            location,
        )
        .into_response());
    }
    Ok(warp::redirect::see_other(warp::http::Uri::from_static("/")).into_response())
}

/// Records `owner` as the uploader of the video just received. Its job may
/// already be changing the record, so this is a compare-and-set of the
/// owner alone. Should it fail, the video stays (admins may still change
/// it), and the failure is logged.
pub(crate) async fn record_owner(
    app: &App,
    video: crate::metadata::Video,
    owner: &str,
) -> crate::metadata::Video {
    let set = app
        .meta
        .change_video(&video.id, &|v| {
            let mut v = v.clone();
            v.owner = Some(owner.to_string());
            Ok(crate::metadata::VideoChange::Put(v))
        })
        .await;
    match set {
        Ok(Some(v)) => v,
        Ok(None) => video,
        Err(e) => {
            tracing::error!(video = %video.id, owner, error = %e, "could not record a video's uploader");
            video
        }
    }
}

/// Reads every field of `form`, staging the file. A typed id is checked
/// before the file is read when it comes first (a bad or taken id is
/// refused without reading the upload).
async fn read_form(
    app: &App,
    form: &mut warp::multipart::FormData,
    label: &mut String,
) -> Result<UploadForm, Error> {
    let mut fields = UploadForm::default();
    while let Some(part) = form.next().await {
        let part =
            part.map_err(|e| Error::invalid("upload", "", format!("malformed form: {e}")))?;
        match part.name() {
            "id" => fields.id = Some(read_text(part, "id", 128).await?),
            "title" => fields.title = read_text(part, "title", MAX_TITLE_CHARS).await?,
            "csrf" => fields.csrf = Some(read_text(part, "csrf", 128).await?),
            "description" => {
                fields.description = read_text(part, "description", MAX_DESCRIPTION_CHARS).await?
            }
            "file" => {
                if fields.file.is_some() {
                    return Err(Error::invalid(
                        "upload",
                        "",
                        "the form has two `file` fields; upload one file at a time",
                    ));
                }
                let name = part.filename().unwrap_or("").to_string();
                // Messages name the upload by its id when it is known.
                *label = name.clone();
                if let Some(id) = fields.id.as_deref().filter(|i| !i.is_empty()) {
                    refuse_taken(app, &VideoId::new(id)?).await?;
                    *label = id.to_string();
                }
                let staged = app.ingest.stage(label, part.stream()).await?;
                fields.file = Some((name, staged));
            }
            // Unknown fields are read and ignored.
            _ => drop(read_small(part).await),
        }
    }
    Ok(fields)
}

/// Refuses an id a video already has (early: creating the record is the
/// check that counts).
pub(crate) async fn refuse_taken(app: &App, id: &VideoId) -> Result<(), Error> {
    match app.meta.get_video(id).await {
        Ok(_) => Err(Error::AlreadyExists {
            key: format!("video {id}"),
        }),
        Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The ids to try for an upload, in order (see the module's docs).
pub(crate) fn candidate_ids(
    typed: Option<&str>,
    title: &str,
    file_name: &str,
) -> Result<Vec<VideoId>, Error> {
    match typed {
        Some(id) if !id.is_empty() => Ok(vec![VideoId::new(id)?]),
        None => Ok(vec![VideoId::from_file_name(file_name)?]),
        Some(_) => {
            let base = slug(title)
                .or_else(|| {
                    VideoId::from_file_name(file_name)
                        .ok()
                        .map(|i| i.to_string())
                })
                .unwrap_or_else(|| "video".to_string());
            let mut base: String = base.chars().take(MAX_DERIVED_BASE).collect();
            while base.ends_with(['-', '.']) {
                base.pop();
            }
            let mut ids = vec![VideoId::new(base.clone())?];
            for _ in 0..SUFFIX_TRIES {
                ids.push(VideoId::new(format!("{base}-{}", suffix()))?);
            }
            Ok(ids)
        }
    }
}

/// `text` as an id: runs of characters an id cannot hold become one `-`;
/// `None` if nothing is left.
fn slug(text: &str) -> Option<String> {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out
        .trim_start_matches(['.', '-'])
        .trim_end_matches(['-', '.']);
    (!out.is_empty()).then(|| out.to_string())
}

/// Six random characters of `[a-z0-9]`, from the standard library's
/// randomly keyed hasher (enough to tell uploads apart; not a secret).
fn suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut n = h.finish();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = alphabet[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// A text field, trimmed, refused past `max_chars` characters.
async fn read_text(
    part: warp::multipart::Part,
    name: &'static str,
    max_chars: usize,
) -> Result<String, Error> {
    let text = read_small(part).await?;
    let text = text.trim();
    let chars = text.chars().count();
    if chars > max_chars {
        return Err(Error::invalid(
            name,
            "",
            format!("it is {chars} characters long; at most {max_chars} are accepted"),
        ));
    }
    Ok(text.to_string())
}

/// All of a small field, as UTF-8.
async fn read_small(part: warp::multipart::Part) -> Result<String, Error> {
    let name = part.name().to_string();
    let mut out = Vec::new();
    let mut s = part.stream();
    while let Some(c) = s.next().await {
        let mut c = c.map_err(|e| Error::invalid("upload", "", format!("malformed form: {e}")))?;
        while c.has_remaining() {
            let n = c.chunk().len();
            out.extend_from_slice(c.chunk());
            c.advance(n);
        }
        if out.len() > MAX_TEXT_FIELD_BYTES {
            return Err(Error::invalid(
                "upload",
                "",
                format!("the field `{name}` is longer than {MAX_TEXT_FIELD_BYTES} bytes"),
            ));
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::invalid("upload", "", format!("the field `{name}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(typed: Option<&str>, title: &str, file: &str) -> Vec<String> {
        candidate_ids(typed, title, file)
            .unwrap()
            .iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn a_typed_id_is_used_as_it_is_and_a_bad_one_refused() {
        assert_eq!(ids(Some("my-id"), "Title", "video.mp4"), ["my-id"]);
        let e = candidate_ids(Some("no spaces"), "", "video.mp4").unwrap_err();
        assert_eq!(e.http_status(), 400, "{e}");
    }

    #[test]
    fn the_course_form_gets_the_file_stem_only() {
        assert_eq!(ids(None, "", "video.mp4"), ["video"]);
        assert_eq!(ids(None, "A title", "video.mp4"), ["video"]);
        assert!(candidate_ids(None, "", "???.mp4").is_err());
    }

    #[test]
    fn an_empty_id_field_derives_one_with_suffixes_to_fall_back_on() {
        let got = ids(Some(""), "", "video.mp4");
        assert_eq!(got[0], "video");
        assert_eq!(got.len(), 1 + SUFFIX_TRIES);
        for s in &got[1..] {
            let (base, suffix) = s.rsplit_once('-').unwrap();
            assert_eq!(base, "video");
            assert!(
                suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
                "{s}"
            );
        }
        assert_eq!(
            ids(Some(""), "Surf's up: Día 2!", "x.mp4")[0],
            "Surf-s-up-D-a-2"
        );
        assert_eq!(ids(Some(""), "日本", "clip.mov")[0], "clip");
        assert_eq!(ids(Some(""), "日本", "日本.mov")[0], "video");
        let long = "x".repeat(300);
        assert_eq!(ids(Some(""), &long, "a.mp4")[0].len(), MAX_DERIVED_BASE);
    }
}
