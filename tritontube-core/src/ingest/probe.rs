//! Validation of an upload with ffprobe: is it a video we can transcode?

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What ffprobe found in an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Duration in seconds (> 0).
    pub duration_secs: f64,
    /// Width of the first video stream.
    pub width: u32,
    /// Height of the first video stream.
    pub height: u32,
    /// Frames per second of the first video stream (25 if unknown).
    pub fps: f64,
    /// Whether there is an audio stream.
    pub has_audio: bool,
}

#[derive(Deserialize)]
struct Out {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    duration: Option<String>,
    disposition: Option<Disposition>,
}

#[derive(Deserialize)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
}

fn rate(s: &Option<String>) -> Option<f64> {
    let s = s.as_deref()?;
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let (n, d): (f64, f64) = (n.parse().ok()?, d.parse().ok()?);
    (d > 0.0 && n > 0.0).then_some(n / d)
}

fn refuse(reason: impl Into<String>) -> Error {
    Error::invalid("upload", "", reason)
}

/// Runs ffprobe on `path`. Refuses, with a message a person can act on,
/// anything that is not a video with a positive duration.
pub async fn probe(path: &Path) -> Result<Probe> {
    let out = tokio::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(path)
        .output()
        .await
        .map_err(|e| Error::backend("ffprobe", "cannot run ffprobe (is ffmpeg installed?)", e))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let first = stderr.lines().last().unwrap_or("").trim();
        let first = first.split_once(": ").map(|(_, m)| m).unwrap_or(first);
        return Err(
            if ["moov atom not found", "End of file", "truncated"]
                .iter()
                .any(|t| stderr.contains(t))
            {
                refuse(format!("the file is unreadable or truncated ({first})"))
            } else {
                refuse(format!("not a video: ffprobe could not read it ({first})"))
            },
        );
    }
    let parsed: Out = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::backend("ffprobe", "unexpected ffprobe output", e))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| {
            s.codec_type.as_deref() == Some("video")
                && s.disposition
                    .as_ref()
                    .map(|d| d.attached_pic == 0)
                    .unwrap_or(true)
        })
        .ok_or_else(|| refuse("the file has no video stream"))?;
    let has_audio = parsed
        .streams
        .iter()
        .any(|s| s.codec_type.as_deref() == Some("audio"));
    let duration = parsed
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .or(video.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(0.0);
    if !(duration > 0.0 && duration.is_finite()) {
        return Err(refuse(
            "the file is unreadable or truncated: it has no positive duration (a still image is not a video)",
        ));
    }
    let (width, height) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if width == 0 || height == 0 {
        return Err(refuse(
            "the video stream has no frame size; the file may be truncated",
        ));
    }
    let fps = rate(&video.avg_frame_rate)
        .or(rate(&video.r_frame_rate))
        .unwrap_or(25.0)
        .clamp(1.0, 240.0);
    Ok(Probe {
        duration_secs: duration,
        width,
        height,
        fps,
        has_audio,
    })
}
