//! `PATCH /files/<key>`: appends a body at the upload's offset and, when
//! the last byte is in, hands the file to ingest.
//!
//! The writing runs in a task of its own that holds the upload's lock and
//! its place within the upload caps: a client that goes away mid-body
//! leaves the bytes it sent (synced to disk, so the next HEAD reports them),
//! and an upload whose last byte arrived is handed to ingest whether or not
//! its client waits for the answer.

use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use warp::http::StatusCode;

use super::store::UploadRecord;
use super::{
    Answer, BodyStream, LOCK_WAIT, OFFSET_OCTET_STREAM, Refusal, Request, TusStore, answer,
    offset_of, state_headers,
};
use crate::error::Error;
use crate::ingest::UploadInfo;
use crate::web::App;

/// `PATCH /files/<key>` (its `Tus-Resumable` already checked).
pub(super) async fn patch(
    app: App,
    uploads: Arc<TusStore>,
    req: &Request,
    key: String,
    body: BodyStream,
) -> Answer {
    let content_type = req.header("content-type").unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(OFFSET_OCTET_STREAM) {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a PATCH must have Content-Type {OFFSET_OCTET_STREAM}, not {content_type:?}"),
        ));
    }
    let Some(offset) = req.count("upload-offset")? else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Upload-Offset is missing: say where this body starts",
        ));
    };
    let announced = req.count("content-length")?;
    let permit = app.uploads.try_start(req.client.map(|c| c.0.ip()))?;
    let (guard, record) = uploads.lock(&key, LOCK_WAIT).await?;
    req.owns(&record)?;
    let have = offset_of(&uploads, &key, &record).await?;
    if offset != have {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!(
                "Upload-Offset is {offset}, but the upload holds {have} bytes: ask with HEAD where it stands"
            ),
        ));
    }
    if record.video_id.is_some() {
        // Finished already: the answer the client missed.
        return Ok(state_headers(answer(StatusCode::NO_CONTENT), have, &record)
            .body(Default::default())
            .unwrap_or_default());
    }
    if let Some(n) = announced
        && offset.saturating_add(n) > record.length
    {
        return Err(past_length(offset, n, record.length));
    }
    let task = tokio::spawn(async move {
        let _held = (permit, guard);
        append_and_finish(&app, &uploads, &key, record, offset, body).await
    });
    task.await
        .map_err(|e| Refusal::from(Error::io("resumable upload", std::io::Error::other(e))))?
}

/// The refusal of a body that would take the upload past its length.
fn past_length(offset: u64, body: u64, length: u64) -> Refusal {
    Refusal::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "a body of {body} bytes at offset {offset} would take the upload past its Upload-Length of {length} bytes"
        ),
    )
}

/// Appends `body`, renews the expiry, and hands the upload to ingest if it
/// is complete.
async fn append_and_finish(
    app: &App,
    uploads: &TusStore,
    key: &str,
    mut record: UploadRecord,
    offset: u64,
    body: BodyStream,
) -> Answer {
    let appended = append(uploads, key, &record, offset, body).await;
    record.expires_ms = uploads.expires_from_now();
    if let Err(e) = uploads.write_record(key, &record).await {
        tracing::warn!(upload = %key, error = %e, "could not renew a resumable upload's expiry");
    }
    let now = appended?;
    if now < record.length {
        return Ok(state_headers(answer(StatusCode::NO_CONTENT), now, &record)
            .body(Default::default())
            .unwrap_or_default());
    }
    let record = finish(app, uploads, key, record).await?;
    Ok(
        state_headers(answer(StatusCode::NO_CONTENT), record.length, &record)
            .body(Default::default())
            .unwrap_or_default(),
    )
}

/// Writes `body` after the upload's `offset` bytes and syncs it; returns
/// the new offset. A body cut off (its client went away, or sent nothing
/// for [`BODY_IDLE`]) keeps what came; a body going past the upload's
/// length, or a failed write, keeps nothing of this body.
async fn append(
    uploads: &TusStore,
    key: &str,
    record: &UploadRecord,
    offset: u64,
    mut body: BodyStream,
) -> Result<u64, Refusal> {
    let path = uploads.data_path(key);
    let io = |e: std::io::Error| Refusal::from(Error::io(&path, e));
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .await
        .map_err(io)?;
    let mut at = offset;
    let mut outcome = Ok(());
    loop {
        let chunk = match tokio::time::timeout(super::BODY_IDLE, body.next()).await {
            Ok(Some(Ok(c))) => c,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(upload = %key, received = at - offset, error = %e, "a PATCH body was cut off; what came is kept");
                break;
            }
            Err(_) => {
                tracing::info!(upload = %key, received = at - offset, "a PATCH body stalled; what came is kept");
                break;
            }
        };
        if at + chunk.len() as u64 > record.length {
            outcome = Err(past_length(
                offset,
                at + chunk.len() as u64 - offset,
                record.length,
            ));
            break;
        }
        if let Err(e) = file.write_all(&chunk).await {
            outcome = Err(io(e));
            break;
        }
        at += chunk.len() as u64;
    }
    // tokio's `File` reports a failed write at the next write or at
    // `flush`, not at `sync`: flush first.
    let synced = async {
        file.flush().await?;
        file.sync_data().await
    }
    .await;
    if let (Ok(()), Err(e)) = (&outcome, synced) {
        outcome = Err(io(e));
    }
    if let Err(refusal) = outcome {
        // Nothing of a refused body is kept.
        file.set_len(offset).await.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        return Err(refusal);
    }
    Ok(at)
}

/// Hands a complete upload to ingest as a finished form upload is, and
/// records what it became (the caller holds its lock). A file ingest
/// refuses removes the upload; a server fault keeps it for a later PATCH
/// or HEAD to try again.
pub(super) async fn finish(
    app: &App,
    uploads: &TusStore,
    key: &str,
    mut record: UploadRecord,
) -> Result<UploadRecord, Refusal> {
    let path = uploads.data_path(key);
    let hashed = path.clone();
    let (size, sha256) = tokio::task::spawn_blocking(move || crate::ingest::hash_path(&hashed))
        .await
        .map_err(|e| Refusal::from(Error::io(&path, std::io::Error::other(e))))??;
    let label = record.id.clone().unwrap_or_else(|| record.filename.clone());
    let handed = async {
        let staged = app
            .ingest
            .stage(&label, crate::ingest::file_stream(&path).await?)
            .await?;
        let typed = record.id.as_deref().unwrap_or("");
        let candidates =
            crate::web::upload::candidate_ids(Some(typed), &record.title, &record.filename)?;
        let info = UploadInfo {
            title: title_of(&record, &candidates[0]),
            description: record.description.clone(),
        };
        app.ingest.receive_staged(candidates, &info, staged).await
    };
    match handed.await {
        Ok(video) => {
            let video = match &record.owner {
                Some(owner) => crate::web::upload::record_owner(app, video, owner).await,
                None => video,
            };
            tracing::info!(upload = %key, video = %video.id, bytes = size, sha256 = %sha256, "resumable upload finished and handed to ingest");
            record.video_id = Some(video.id.to_string());
            record.sha256 = Some(sha256.to_string());
            uploads.write_record(key, &record).await?;
            uploads.drop_data(key).await;
            Ok(record)
        }
        Err(e) if e.http_status() < 500 => {
            uploads.remove_locked(key).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The video's title: as given, else the file's name, else its id.
fn title_of(record: &UploadRecord, id: &crate::id::VideoId) -> String {
    if !record.title.is_empty() {
        return record.title.clone();
    }
    match record.filename.rsplit(['/', '\\']).next() {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => id.to_string(),
    }
}
