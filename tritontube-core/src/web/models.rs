//! The JSON shapes of the HTTP API.

use serde::Serialize;

use crate::metadata::{Rendition, Video, VideoState};

/// A video as the API shows it.
#[derive(Debug, Serialize)]
pub struct VideoJson {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its description (empty if none).
    pub description: String,
    /// Upload time, Unix milliseconds.
    pub uploaded_at_ms: i64,
    /// `uploaded`, `processing`, `ready` or `failed`.
    pub state: &'static str,
    /// Percent done while processing (100 when ready).
    pub progress: f32,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Duration in seconds.
    pub duration_secs: f64,
    /// Source width.
    pub width: u32,
    /// Source height.
    pub height: u32,
    /// Whether it has sound.
    pub has_audio: bool,
    /// The ladder.
    pub renditions: Vec<Rendition>,
    /// Bytes stored (one copy).
    pub total_bytes: u64,
    /// Files stored.
    pub file_count: u64,
    /// The manifest's URL.
    pub manifest: String,
    /// The HLS master playlist's URL, over the same segments; `null` for a
    /// video that has none (not ready, or transcoded before HLS was added).
    pub hls_manifest: Option<String>,
    /// The poster's URL.
    pub poster: String,
}

impl From<&Video> for VideoJson {
    fn from(v: &Video) -> Self {
        let (progress, failure) = match &v.state {
            VideoState::Uploaded => (0.0, None),
            VideoState::Processing { progress } => (*progress, None),
            VideoState::Ready => (100.0, None),
            VideoState::Failed { reason } => (0.0, Some(reason.clone())),
            VideoState::Deleting => (0.0, None),
        };
        VideoJson {
            id: v.id.to_string(),
            title: v.title.clone(),
            description: v.description.clone(),
            uploaded_at_ms: v.uploaded_at_ms,
            state: v.state.name(),
            progress,
            failure,
            duration_secs: v.facts.duration_secs,
            width: v.facts.width,
            height: v.facts.height,
            has_audio: v.facts.has_audio,
            renditions: v.facts.renditions.clone(),
            total_bytes: v.facts.total_bytes,
            file_count: v.facts.file_count,
            manifest: format!("/content/{}/{}", v.id, v.file_name("manifest.mpd")),
            // Only the stored records tell (see `handlers::api_get`).
            hls_manifest: None,
            poster: format!("/content/{}/{}", v.id, v.file_name("poster.jpg")),
        }
    }
}

/// A page of videos.
#[derive(Debug, Serialize)]
pub struct VideoListJson {
    /// Newest first.
    pub items: Vec<VideoJson>,
    /// Pass as `?cursor=` (with the same `q`) for the next page; `null` on
    /// the last. Opaque.
    pub next_cursor: Option<String>,
}

/// An error body.
#[derive(Debug, Serialize)]
pub struct ErrorJson {
    /// What went wrong.
    pub error: String,
}
