//! The adaptive-bitrate ladder and the ffmpeg command that makes it.

use std::path::Path;

use super::container;
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

/// Aspect ratios a source is snapped to (by cropping a few pixels) when it is
/// within 1.5% of one: every rung of a DASH adaptation set must have exactly
/// the same display aspect ratio, with square pixels.
const NICE: [(u32, u32); 7] = [(16, 9), (4, 3), (1, 1), (9, 16), (3, 4), (21, 9), (3, 2)];

/// The ladder for one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// Crop the source to this size (centred) first, if set.
    pub crop: Option<(u32, u32)>,
    /// The rungs, largest first.
    pub rungs: Vec<Rendition>,
}

/// The rungs at or below the source height, all of exactly one aspect ratio
/// with even sizes (a rung whose standard height gives no exact even width
/// moves down to the nearest height that does, e.g. 16:9 480p becomes
/// 832×468). A source of no common aspect ratio gets one rung at its own size.
pub fn ladder(width: u32, height: u32) -> Ladder {
    let (w, h) = (width.max(2), height.max(2));
    let aspect = w as f64 / h as f64;
    let nice = NICE
        .iter()
        .copied()
        .find(|(a, b)| ((*a as f64 / *b as f64) - aspect).abs() / aspect < 0.015);
    let Some((a, b)) = nice else {
        let (ew, eh) = (w / 2 * 2, h / 2 * 2);
        return Ladder {
            crop: (ew != w || eh != h).then_some((ew, eh)),
            rungs: vec![Rendition {
                id: "0".into(),
                width: ew,
                height: eh,
                bitrate: bitrate_for(eh),
            }],
        };
    };
    // The largest exact a:b frame inside the source.
    let k = (w / a).min(h / b);
    let (cw, ch) = (a * k, b * k);
    let crop = (cw != w || ch != h).then_some((cw, ch));
    let exact = |h: u32| {
        h.is_multiple_of(2) && (h * a).is_multiple_of(b) && ((h * a) / b).is_multiple_of(2)
    };
    let snap = |target: u32| {
        (target.saturating_sub(target / 6)..=target)
            .rev()
            .find(|h| exact(*h))
    };
    let mut heights: Vec<(u32, u64)> = RUNGS
        .iter()
        .filter(|(rh, _)| *rh <= ch)
        .filter_map(|(rh, br)| snap(*rh).map(|h| (h, *br)))
        .collect();
    if heights.is_empty() {
        let h = (2..=ch).rev().find(|h| exact(*h)).unwrap_or(2);
        heights.push((h, bitrate_for(h)));
    }
    Ladder {
        crop,
        rungs: heights
            .into_iter()
            .enumerate()
            .map(|(i, (h, bitrate))| Rendition {
                id: i.to_string(),
                width: h * a / b,
                height: h,
                bitrate,
            })
            .collect(),
    }
}

fn bitrate_for(height: u32) -> u64 {
    (height as u64 * 2_200).clamp(150_000, 5_000_000)
}

/// The ffmpeg arguments transcoding `input` into a DASH ladder in `out_dir`
/// (`manifest.mpd`, `init-$RepresentationID$.m4s`,
/// `chunk-$RepresentationID$-$Number%05d$.m4s`), reporting progress on stdout.
/// `input` is opened only as the container `probe` found, through the file
/// protocol ([`container::input_args`]).
pub fn ffmpeg_args(
    input: &Path,
    out_dir: &Path,
    probe: &Probe,
    ladder: &Ladder,
    generation: u64,
) -> Vec<String> {
    let name = |base: &str| crate::metadata::generation_file_name(generation, base);
    let rungs = &ladder.rungs;
    // Keyframes at the same instants in every rung, every 2 s of real frames,
    // so a player can switch rungs at any segment boundary.
    let gop = ((probe.fps * 2.0).round() as u32).max(1);
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(container::input_args(probe.container, input));
    let n = rungs.len();
    let crop = ladder
        .crop
        .map(|(w, h)| format!("crop={w}:{h},"))
        .unwrap_or_default();
    let mut filter = format!("[0:v]{crop}split={n}");
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
    a.extend(["-f", "dash", "-use_template", "1", "-use_timeline", "1"].map(String::from));
    // The course project's names for a first upload; later uploads under the
    // same id carry their generation (see `Video::file_name`).
    a.extend([
        "-init_seg_name".into(),
        name("init-$RepresentationID$.m4s"),
        "-media_seg_name".into(),
        name("chunk-$RepresentationID$-$Number%05d$.m4s"),
    ]);
    a.extend(["-adaptation_sets", sets, "-progress", "pipe:1", "-nostats"].map(String::from));
    a.extend(["-seg_duration".into(), SEGMENT_SECS.to_string()]);
    a.push(out_dir.join(name("manifest.mpd")).display().to_string());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(l: &Ladder) -> Vec<(u32, u32)> {
        l.rungs.iter().map(|r| (r.width, r.height)).collect()
    }

    #[test]
    fn only_rungs_at_or_below_the_source_all_of_one_aspect() {
        let l = ladder(1920, 1080);
        assert_eq!(l.crop, None);
        assert_eq!(
            sizes(&l),
            [(1920, 1080), (1280, 720), (832, 468), (640, 360)]
        );
        let l = ladder(1280, 720);
        assert_eq!(sizes(&l), [(1280, 720), (832, 468), (640, 360)]);
        // 854x480 is not exactly 16:9: cropped by a few pixels to be.
        let l = ladder(854, 480);
        assert_eq!(l.crop, Some((848, 477)));
        assert_eq!(sizes(&l), [(640, 360)]);
        let l = ladder(640, 480);
        assert_eq!(sizes(&l), [(640, 480), (480, 360)]);
        // Portrait.
        let l = ladder(720, 1280);
        assert_eq!(sizes(&l), [(594, 1056), (396, 704), (270, 480), (198, 352)]);
        // Smaller than every rung.
        let l = ladder(320, 240);
        assert_eq!(sizes(&l), [(320, 240)]);
        // No common aspect ratio: one rung at the source size, even.
        let l = ladder(1001, 333);
        assert_eq!(sizes(&l), [(1000, 332)]);
        for l in [
            ladder(1920, 1080),
            ladder(640, 480),
            ladder(720, 1280),
            ladder(854, 480),
        ] {
            let (w0, h0) = (l.rungs[0].width as u64, l.rungs[0].height as u64);
            for r in &l.rungs {
                assert_eq!(
                    r.width as u64 * h0,
                    w0 * r.height as u64,
                    "same aspect: {l:?}"
                );
                assert_eq!((r.width % 2, r.height % 2), (0, 0), "even: {l:?}");
            }
        }
    }
}
