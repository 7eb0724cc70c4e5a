//! Validation of an upload with ffprobe: is it a video we can transcode?
//!
//! Two ffprobe runs, neither of which can open anything but the upload (see
//! [`super::container`] for why that matters): [`detect`] learns the
//! container format without running its demuxer, and only an accepted one is
//! then [`probe`]d, with that demuxer forced.

use std::path::Path;

use serde::Deserialize;

use super::container::{self, Container};
use crate::error::{Error, Result};

/// What ffprobe found in an upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Duration in seconds (> 0).
    pub duration_secs: f64,
    /// Width of the first video stream as it is shown: after the quarter
    /// turns its display matrix asks for (a phone filming upright stores
    /// 1920x1080 frames turned by 90 degrees), which ffmpeg applies to every
    /// frame it decodes.
    pub width: u32,
    /// Height of the first video stream as it is shown (see `width`).
    pub height: u32,
    /// Frames per second of the first video stream (25 if unknown).
    pub fps: f64,
    /// Whether there is an audio stream.
    pub has_audio: bool,
    /// The container, from [`container::ACCEPTED_CONTAINERS`]: every later
    /// ffmpeg run forces its demuxer.
    pub container: &'static Container,
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
    #[serde(default)]
    side_data_list: Vec<SideData>,
    tags: Option<Tags>,
}

/// One entry of a stream's side data; only the display matrix's rotation
/// (degrees, counter-clockwise) matters here.
#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

#[derive(Deserialize)]
struct Tags {
    /// Older ffprobe versions give the rotation as a tag (degrees,
    /// clockwise).
    rotate: Option<String>,
}

impl Stream {
    /// Whether frames are shown turned by a quarter (90 or 270 degrees).
    fn turned_on_its_side(&self) -> bool {
        let rotation = self
            .side_data_list
            .iter()
            .find_map(|d| d.rotation)
            .or_else(|| self.tags.as_ref()?.rotate.as_deref()?.trim().parse().ok())
            .unwrap_or(0.0);
        ((rotation / 90.0).round() as i64).rem_euclid(2) == 1
    }
}

#[derive(Deserialize)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
}

#[derive(Deserialize)]
struct Format {
    format_name: Option<String>,
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

/// A format whitelist no demuxer matches. With it, ffprobe detects the format
/// (and logs it at debug level) and then stops, before the demuxer reads a
/// single header: a playlist is never parsed, so nothing it names is opened.
const DETECT_ONLY: &str = "tritontube-detect-only";

/// The ffprobe arguments detecting the format of `path` and nothing more.
fn detect_args(path: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-hide_banner",
        "-v",
        "debug",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        DETECT_ONLY,
    ]
    .map(String::from)
    .into();
    a.extend(["-i".to_string(), container::file_url(path)]);
    a
}

/// The format ffprobe detected, from its debug log
/// (`[hls @ 0x...] Format hls probed with size=2048 and score=100`).
fn detected_format(log: &str) -> Option<&str> {
    log.lines().find_map(|l| {
        let (_, rest) = l.split_once("] Format ")?;
        let (name, _) = rest.split_once(" probed with size=")?;
        Some(name)
    })
}

/// ffprobe's own words for why it failed on `url`: the text after
/// `URL: ` on the last line naming it, else its last line.
fn failure_message<'a>(stderr: &'a str, url: &str) -> &'a str {
    let prefix = format!("{url}: ");
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| stderr.lines().last().unwrap_or(""))
        .trim()
}

/// Runs ffprobe with `args`.
async fn ffprobe(args: &[String]) -> Result<std::process::Output> {
    super::ffmpeg::command("ffprobe")
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::backend("ffprobe", "cannot run ffprobe (is ffmpeg installed?)", e))
}

/// Detects the container format of `path` without letting any demuxer read
/// it, and refuses, naming the format, anything not in
/// [`container::ACCEPTED_CONTAINERS`].
pub async fn detect(path: &Path) -> Result<&'static Container> {
    let (found, stderr) = detect_logged(path).await?;
    let Some(name) = found else {
        let why = failure_message(&stderr, &container::file_url(path)).to_string();
        return Err(refuse(format!(
            "not a video: ffprobe could not tell what it is ({why})"
        )));
    };
    container::accepted(&name).ok_or_else(|| refuse(container::refusal(&name)))
}

/// The detected format name of `path`, if any, and ffprobe's debug log
/// (which names every file it opened).
async fn detect_logged(path: &Path) -> Result<(Option<String>, String)> {
    let out = ffprobe(&detect_args(path)).await?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((detected_format(&stderr).map(String::from), stderr))
}

/// Runs ffprobe on `path`. Refuses, with a message a person can act on,
/// anything that is not an accepted container ([`detect`]) holding a video
/// with a positive duration.
pub async fn probe(path: &Path) -> Result<Probe> {
    let container = detect(path).await?;
    let mut args: Vec<String> = [
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
    ]
    .map(String::from)
    .into();
    args.extend(container::input_args(container, path));
    let out = ffprobe(&args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let why = failure_message(&stderr, &container::file_url(path));
        return Err(
            if ["moov atom not found", "End of file", "truncated"]
                .iter()
                .any(|t| stderr.contains(t))
            {
                refuse(format!("the file is unreadable or truncated ({why})"))
            } else {
                refuse(format!("not a video: ffprobe could not read it ({why})"))
            },
        );
    }
    let parsed: Out = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::backend("ffprobe", "unexpected ffprobe output", e))?;
    read(&parsed, container)
}

/// What `parsed` says about a video in `container`, or why it is refused.
fn read(parsed: &Out, container: &'static Container) -> Result<Probe> {
    // Forced, the demuxer cannot be another; checked all the same.
    let name = parsed
        .format
        .as_ref()
        .and_then(|f| f.format_name.as_deref());
    if name != Some(container.format_name) {
        return Err(refuse(container::refusal(name.unwrap_or("unknown"))));
    }
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
    let (mut width, mut height) = (video.width.unwrap_or(0), video.height.unwrap_or(0));
    if width == 0 || height == 0 {
        return Err(refuse(
            "the video stream has no frame size; the file may be truncated",
        ));
    }
    if video.turned_on_its_side() {
        (width, height) = (height, width);
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
        container,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes a 1 s clip `name` in `dir` with ffmpeg's test source.
    fn clip(dir: &Path, name: &str) -> std::path::PathBuf {
        let out = dir.join(name);
        let st = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=size=160x120:rate=25:duration=1")
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success(), "ffmpeg made {name}");
        out
    }

    /// An HLS playlist in `dir` naming `target` (a real, playable file).
    fn playlist(dir: &Path, target: &Path) -> std::path::PathBuf {
        let p = dir.join("source");
        let text = format!(
            "#EXTM3U\n#EXT-X-TARGETDURATION:7\n#EXTINF:7.0,\n{}\n#EXT-X-ENDLIST\n",
            target.display()
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_ffprobes_words() {
        let log = "[NULL @ 0x1] Opening 'file:/t/source' for reading\n\
                   [mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] Format mov,mp4,m4a,3gp,3g2,mj2 probed with size=2048 and score=100\n\
                   [mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] Format not on whitelist 'x'\n\
                   file:/t/source: Invalid argument\n";
        assert_eq!(detected_format(log), Some("mov,mp4,m4a,3gp,3g2,mj2"));
        assert_eq!(failure_message(log, "file:/t/source"), "Invalid argument");
        let log = "file:/t/source: Invalid data found when processing input\n";
        assert_eq!(detected_format(log), None);
        assert_eq!(
            failure_message(log, "file:/t/source"),
            "Invalid data found when processing input"
        );
        assert_eq!(
            failure_message("odd\nlast words\n", "file:/x"),
            "last words"
        );
    }

    /// The detection run parses no playlist: the only file ffprobe opens is
    /// the upload (its debug log names every file it opens), and the
    /// playlist is refused by name.
    #[tokio::test]
    async fn detection_opens_only_the_upload() {
        let tmp = tempfile::tempdir().unwrap();
        let target = clip(tmp.path(), "secret.ts");
        let up = playlist(tmp.path(), &target);
        let (found, log) = detect_logged(&up).await.unwrap();
        assert_eq!(found.as_deref(), Some("hls"), "{log}");
        let opened: Vec<&str> = log.lines().filter(|l| l.contains("Opening '")).collect();
        assert_eq!(opened.len(), 1, "{log}");
        assert!(
            opened[0].contains(&format!("'{}'", container::file_url(&up))),
            "{log}"
        );
        let e = detect(&up).await.unwrap_err().to_string();
        assert!(
            e.contains("\"hls\" is not an accepted video container"),
            "{e}"
        );
    }

    /// Even if detection were bypassed, no accepted demuxer, forced, reads a
    /// playlist as the file it names.
    #[tokio::test]
    async fn forced_demuxers_never_follow_a_playlist() {
        let tmp = tempfile::tempdir().unwrap();
        let target = clip(tmp.path(), "secret.ts");
        let up = playlist(tmp.path(), &target);
        for c in container::ACCEPTED_CONTAINERS {
            let mut args: Vec<String> = ["-v", "error", "-show_entries", "stream=codec_type"]
                .map(String::from)
                .into();
            args.extend(container::input_args(c, &up));
            let out = ffprobe(&args).await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.contains("codec_type=video"),
                "{} found a video in a playlist: {stdout}",
                c.demuxer
            );
        }
    }

    #[tokio::test]
    async fn a_real_clip_is_probed_with_its_demuxer() {
        let tmp = tempfile::tempdir().unwrap();
        let p = probe(&clip(tmp.path(), "c.mp4")).await.unwrap();
        assert_eq!(p.container.demuxer, "mov");
        assert_eq!((p.width, p.height, p.has_audio), (160, 120, false));
        let p = probe(&clip(tmp.path(), "c.ts")).await.unwrap();
        assert_eq!(p.container.demuxer, "mpegts");
    }

    /// A clip stored sideways with a display matrix turning it upright (as
    /// phones film) is the size it is shown at, the size ffmpeg's frames
    /// have once it applies the turn.
    #[tokio::test]
    async fn a_turned_clip_is_the_size_it_is_shown_at() {
        let tmp = tempfile::tempdir().unwrap();
        let c = clip(tmp.path(), "c.mp4");
        let turned = tmp.path().join("turned.mp4");
        std::fs::write(&turned, turn_upright(&std::fs::read(&c).unwrap())).unwrap();
        let p = probe(&turned).await.unwrap();
        assert_eq!((p.width, p.height), (120, 160));
        let frame = tmp.path().join("frame.png");
        let st = std::process::Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-i"])
            .arg(&turned)
            .args(["-frames:v", "1"])
            .arg(&frame)
            .status()
            .unwrap();
        assert!(st.success());
        let shown = probe_image_size(&frame);
        assert_eq!(shown, (p.width, p.height), "ffmpeg's frames");
    }

    #[test]
    fn rotation_from_side_data_or_the_old_tag() {
        let stream = |json: &str| serde_json::from_str::<Stream>(json).unwrap();
        assert!(
            stream(r#"{"side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]}"#)
                .turned_on_its_side()
        );
        assert!(stream(r#"{"side_data_list":[{"rotation":270}]}"#).turned_on_its_side());
        assert!(!stream(r#"{"side_data_list":[{"rotation":180}]}"#).turned_on_its_side());
        assert!(
            !stream(r#"{"side_data_list":[{"side_data_type":"CPB properties"}]}"#)
                .turned_on_its_side()
        );
        assert!(stream(r#"{"tags":{"rotate":"90"}}"#).turned_on_its_side());
        assert!(!stream(r#"{"tags":{"rotate":"0"}}"#).turned_on_its_side());
        assert!(!stream("{}").turned_on_its_side());
    }

    /// `mp4` with its video track's matrix set to a quarter turn, the way a
    /// phone marks a clip filmed upright.
    fn turn_upright(mp4: &[u8]) -> Vec<u8> {
        let mut d = mp4.to_vec();
        let at = d
            .windows(4)
            .position(|w| w == b"tkhd")
            .expect("a track header");
        // Version 0: flags, two times, track id, reserved, duration, eight
        // reserved bytes, layer, group, volume, reserved; then the matrix.
        assert_eq!(d[at + 4], 0, "a version 0 track header");
        let matrix = at + 4 + 4 + 4 * 5 + 8 + 2 + 2 + 2 + 2;
        let turned: [i32; 9] = [0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30];
        for (i, v) in turned.iter().enumerate() {
            d[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
        d
    }

    fn probe_image_size(path: &Path) -> (u32, u32) {
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=width,height",
                "-of",
                "csv=p=0",
            ])
            .arg(path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (w, h) = text.trim().split_once(',').unwrap();
        (w.parse().unwrap(), h.parse().unwrap())
    }
}
