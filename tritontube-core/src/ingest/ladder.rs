//! The adaptive-bitrate ladder and the ffmpeg command that makes it.

use std::path::Path;

use super::probe::Probe;
use crate::metadata::Rendition;

/// Seconds per DASH segment.
pub const SEGMENT_SECS: u32 = 4;

/// The standard rungs: height and video bit rate.
const RUNGS: [(u32, u64); 4] = [
    (1080, 5_000_000),
    (720, 2_800_000),
    (480, 1_400_000),
    (360, 800_000),
];

/// The rungs at or below the source height (the source's own height, even,
/// when it is smaller than every rung). Widths keep the aspect ratio, even.
pub fn ladder(width: u32, height: u32) -> Vec<Rendition> {
    let even = |x: u32| (x / 2 * 2).max(2);
    let mut rungs: Vec<(u32, u64)> = RUNGS
        .iter()
        .copied()
        .filter(|(h, _)| *h <= height)
        .collect();
    if rungs.is_empty() {
        rungs.push((even(height), 500_000));
    }
    rungs
        .into_iter()
        .enumerate()
        .map(|(i, (h, bitrate))| Rendition {
            id: i.to_string(),
            width: even((width as u64 * h as u64 / height.max(1) as u64) as u32),
            height: h,
            bitrate,
        })
        .collect()
}

/// The ffmpeg arguments transcoding `input` into a DASH ladder in `out_dir`
/// (`manifest.mpd`, `init-$RepresentationID$.m4s`,
/// `chunk-$RepresentationID$-$Number%05d$.m4s`), reporting progress on stdout.
pub fn ffmpeg_args(
    input: &Path,
    out_dir: &Path,
    probe: &Probe,
    rungs: &[Rendition],
) -> Vec<String> {
    // Keyframes at the same instants in every rung, every 2 s of real frames,
    // so a player can switch rungs at any segment boundary.
    let gop = ((probe.fps * 2.0).round() as u32).max(1);
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-i"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(input.display().to_string());
    let n = rungs.len();
    let mut filter = format!("[0:v]split={n}");
    for i in 0..n {
        filter.push_str(&format!("[s{i}]"));
    }
    for (i, r) in rungs.iter().enumerate() {
        filter.push_str(&format!(
            ";[s{i}]scale={}:{},setsar=1[v{i}]",
            r.width, r.height
        ));
    }
    a.extend(["-filter_complex".into(), filter]);
    for (i, r) in rungs.iter().enumerate() {
        a.extend([
            "-map".into(),
            format!("[v{i}]"),
            format!("-c:v:{i}"),
            "libx264".into(),
            format!("-b:v:{i}"),
            r.bitrate.to_string(),
            format!("-maxrate:v:{i}"),
            (r.bitrate * 3 / 2).to_string(),
            format!("-bufsize:v:{i}"),
            (r.bitrate * 2).to_string(),
        ]);
    }
    if probe.has_audio {
        a.extend(["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k", "-ac", "2"].map(String::from));
    }
    a.extend(
        [
            "-preset",
            "veryfast",
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
            "-sc_threshold",
            "0",
        ]
        .map(String::from),
    );
    a.extend([
        "-g".into(),
        gop.to_string(),
        "-keyint_min".into(),
        gop.to_string(),
    ]);
    let sets = if probe.has_audio {
        "id=0,streams=v id=1,streams=a"
    } else {
        "id=0,streams=v"
    };
    a.extend(
        [
            "-f",
            "dash",
            "-use_template",
            "1",
            "-use_timeline",
            "1",
            "-init_seg_name",
            "init-$RepresentationID$.m4s",
            "-media_seg_name",
            "chunk-$RepresentationID$-$Number%05d$.m4s",
            "-adaptation_sets",
            sets,
            "-progress",
            "pipe:1",
            "-nostats",
        ]
        .map(String::from),
    );
    a.extend(["-seg_duration".into(), SEGMENT_SECS.to_string()]);
    a.push(out_dir.join("manifest.mpd").display().to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rungs_at_or_below_the_source() {
        let l = ladder(1920, 1080);
        assert_eq!(
            l.iter().map(|r| r.height).collect::<Vec<_>>(),
            [1080, 720, 480, 360]
        );
        assert_eq!(l[1].width, 1280);
        let l = ladder(1280, 720);
        assert_eq!(
            l.iter().map(|r| r.height).collect::<Vec<_>>(),
            [720, 480, 360]
        );
        let l = ladder(320, 241);
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].width, l[0].height), (318, 240));
        // Portrait video keeps its aspect ratio.
        let l = ladder(720, 1280);
        assert_eq!((l[0].width, l[0].height), (606, 1080));
    }
}
