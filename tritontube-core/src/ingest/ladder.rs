//! The adaptive-bitrate ladder and the ffmpeg command that makes it.

use std::path::Path;

use super::container;
use super::probe::Probe;
use crate::metadata::Rendition;

/// Seconds per DASH segment.
pub const SEGMENT_SECS: u32 = 4;

/// The standard rungs: short side (the "p" of 1080p, whichever way the
/// frame stands) and video bit rate.
const RUNGS: [(u32, u64); 4] = [
    (1080, 5_000_000),
    (720, 2_800_000),
    (480, 1_400_000),
    (360, 800_000),
];

/// Aspect ratios (width:height) a source is snapped to (by cropping a few
/// pixels) when it is within 1.5% of one: every rung of a DASH adaptation set
/// must have exactly the same display aspect ratio, with square pixels. Each
/// landscape ratio has its portrait twin, so a portrait source gets the
/// landscape ladder turned on its side.
const NICE: [(u32, u32); 9] = [
    (16, 9),
    (4, 3),
    (1, 1),
    (9, 16),
    (3, 4),
    (21, 9),
    (9, 21),
    (3, 2),
    (2, 3),
];

/// The ladder for one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    /// Crop the source to this size (centred) first, if set.
    pub crop: Option<(u32, u32)>,
    /// The rungs, largest first.
    pub rungs: Vec<Rendition>,
}

/// The ladder for a `width`×`height` source.
///
/// Rungs are chosen by the frame's short side, so a portrait source gets
/// exactly the landscape ladder turned on its side (1080×1920 gets
/// 1080×1920, 720×1280, 468×832, 360×640, as 1920×1080 gets 1920×1080,
/// 1280×720, 832×468, 640×360). Every rung:
///
/// - is at or below the source (never upscaled);
/// - has exactly the aspect ratio of every other rung, with even sizes (a
///   rung whose standard short side gives no exact even long side moves down
///   to the nearest that does, e.g. 16:9 480p becomes 832×468).
///
/// A source of no common aspect ratio, or too small for any exact frame of
/// its ratio, gets one rung at its own size (made even).
///
/// ```
/// use tritontube_core::ingest::ladder::ladder;
/// let sizes = |w, h| ladder(w, h).rungs.iter().map(|r| (r.width, r.height)).collect::<Vec<_>>();
/// assert_eq!(sizes(1080, 1920)[0], (1080, 1920));
/// assert_eq!(sizes(1920, 1080)[0], (1920, 1080));
/// assert_eq!(sizes(360, 640), [(360, 640)]);
/// ```
pub fn ladder(width: u32, height: u32) -> Ladder {
    let (w, h) = (width.max(2), height.max(2));
    let Some((a, b)) = nice_ratio(w, h) else {
        return own_size(w, h);
    };
    // The largest exact a:b frame inside the source.
    let k = (w / a).min(h / b);
    let (cw, ch) = (a * k, b * k);
    // Sizes are worked out on the short side `s`; the long side is
    // `s * long / short`, which must be a whole, even number.
    let (short, long) = (a.min(b), a.max(b));
    let exact = |s: u32| {
        s.is_multiple_of(2)
            && (s * long).is_multiple_of(short)
            && (s * long / short).is_multiple_of(2)
    };
    let snap = |target: u32| {
        (target.saturating_sub(target / 6)..=target)
            .rev()
            .find(|s| exact(*s))
    };
    let source_short = cw.min(ch);
    let mut sides: Vec<(u32, u64)> = RUNGS
        .iter()
        .filter(|(rs, _)| *rs <= source_short)
        .filter_map(|(rs, br)| snap(*rs).map(|s| (s, *br)))
        .collect();
    if sides.is_empty() {
        match (2..=source_short).rev().find(|s| exact(*s)) {
            Some(s) => sides.push((s, bitrate_for(s))),
            None => return own_size(w, h),
        }
    }
    let size = |s: u32| {
        let l = s * long / short;
        if a >= b { (l, s) } else { (s, l) }
    };
    Ladder {
        crop: (cw != w || ch != h).then_some((cw, ch)),
        rungs: sides
            .into_iter()
            .enumerate()
            .map(|(i, (s, bitrate))| {
                let (width, height) = size(s);
                Rendition {
                    id: i.to_string(),
                    width,
                    height,
                    bitrate,
                }
            })
            .collect(),
    }
}

/// The entry of [`NICE`] within 1.5% of `w:h`, measured the same way for
/// a frame and for the frame turned on its side.
fn nice_ratio(w: u32, h: u32) -> Option<(u32, u32)> {
    let aspect = w as f64 / h as f64;
    NICE.iter().copied().find(|(a, b)| {
        let r = *a as f64 / *b as f64;
        (r / aspect).max(aspect / r) < 1.015
    })
}

/// One rung at the source's own size, made even by cropping a pixel where
/// needed.
fn own_size(w: u32, h: u32) -> Ladder {
    let (ew, eh) = (w / 2 * 2, h / 2 * 2);
    Ladder {
        crop: (ew != w || eh != h).then_some((ew, eh)),
        rungs: vec![Rendition {
            id: "0".into(),
            width: ew,
            height: eh,
            bitrate: bitrate_for(ew.min(eh)),
        }],
    }
}

/// The bit rate of a rung off the standard ones, by its short side.
fn bitrate_for(short_side: u32) -> u64 {
    (short_side as u64 * 2_200).clamp(150_000, 5_000_000)
}

/// The ffmpeg arguments transcoding `input` into a DASH ladder in `out_dir`
/// (`manifest.mpd`, `init-$RepresentationID$.m4s`,
/// `chunk-$RepresentationID$-$Number%05d$.m4s`), with HLS playlists over
/// the same segments (`master.m3u8` and ffmpeg's `media_<n>.m3u8`, which
/// [`super::hls::finish`] then names for the generation), reporting progress
/// on stdout.
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
    // Keyframes at the same instants in every rung, every 2 s of real frames,
    // so a player can switch rungs at any segment boundary.
    let gop = ((probe.fps * 2.0).round() as u32).max(1);
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-loglevel", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(container::input_args(probe.container, input));
    a.extend(video_args(ladder));
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
    // HLS beside DASH, over the same segments (see `super::hls`).
    a.extend([
        "-hls_playlist".into(),
        "1".into(),
        "-hls_master_name".into(),
        super::hls::master_playlist_name(generation),
    ]);
    a.extend(["-adaptation_sets", sets, "-progress", "pipe:1", "-nostats"].map(String::from));
    a.extend(["-seg_duration".into(), SEGMENT_SECS.to_string()]);
    a.push(out_dir.join(name("manifest.mpd")).display().to_string());
    a
}

/// The video part of the command: one scaled rendition per rung, split
/// from the (cropped) source, each with its bitrate.
fn video_args(ladder: &Ladder) -> Vec<String> {
    let rungs = &ladder.rungs;
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
    let mut a = vec!["-filter_complex".into(), filter];
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
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(l: &Ladder) -> Vec<(u32, u32)> {
        l.rungs.iter().map(|r| (r.width, r.height)).collect()
    }

    fn turned(sizes: &[(u32, u32)]) -> Vec<(u32, u32)> {
        sizes.iter().map(|&(w, h)| (h, w)).collect()
    }

    #[test]
    fn landscape_rungs_at_or_below_the_source() {
        let l = ladder(1920, 1080);
        assert_eq!(l.crop, None);
        assert_eq!(
            sizes(&l),
            [(1920, 1080), (1280, 720), (832, 468), (640, 360)]
        );
        let bitrates: Vec<u64> = l.rungs.iter().map(|r| r.bitrate).collect();
        assert_eq!(bitrates, [5_000_000, 2_800_000, 1_400_000, 800_000]);
        // Larger than the top rung: scaled down, never more rungs.
        assert_eq!(sizes(&ladder(3840, 2160)), sizes(&l));
        let l = ladder(1280, 720);
        assert_eq!(sizes(&l), [(1280, 720), (832, 468), (640, 360)]);
        let l = ladder(640, 480);
        assert_eq!(sizes(&l), [(640, 480), (480, 360)]);
        assert_eq!(sizes(&ladder(2520, 1080))[0], (2520, 1080));
    }

    #[test]
    fn portrait_rungs_by_the_short_side() {
        // The issue's case: a phone's 1080x1920 keeps its full width.
        let l = ladder(1080, 1920);
        assert_eq!(l.crop, None);
        assert_eq!(
            sizes(&l),
            [(1080, 1920), (720, 1280), (468, 832), (360, 640)]
        );
        let bitrates: Vec<u64> = l.rungs.iter().map(|r| r.bitrate).collect();
        assert_eq!(bitrates, [5_000_000, 2_800_000, 1_400_000, 800_000]);
        assert_eq!(
            sizes(&ladder(720, 1280)),
            [(720, 1280), (468, 832), (360, 640)]
        );
        assert_eq!(sizes(&ladder(360, 640)), [(360, 640)]);
        assert_eq!(sizes(&ladder(480, 640)), [(480, 640), (360, 480)]);
        assert_eq!(sizes(&ladder(2160, 3840))[0], (1080, 1920));
        // 2:3 and 9:21 have their ladders too, not one odd-sized rung.
        assert_eq!(
            sizes(&ladder(720, 1080)),
            [(720, 1080), (480, 720), (360, 540)]
        );
        assert_eq!(sizes(&ladder(1080, 2520))[0], (1080, 2520));
    }

    #[test]
    fn square_rungs() {
        let l = ladder(1080, 1080);
        assert_eq!(
            sizes(&l),
            [(1080, 1080), (720, 720), (480, 480), (360, 360)]
        );
        let l = ladder(500, 500);
        assert_eq!(l.crop, None);
        assert_eq!(sizes(&l), [(480, 480), (360, 360)]);
        assert_eq!(sizes(&ladder(101, 101)), [(100, 100)]);
    }

    #[test]
    fn odd_sizes_are_cropped_to_an_exact_even_frame() {
        // 854x480 is not exactly 16:9: cropped by a few pixels to be.
        let l = ladder(854, 480);
        assert_eq!(l.crop, Some((848, 477)));
        assert_eq!(sizes(&l), [(640, 360)]);
        let l = ladder(480, 854);
        assert_eq!(l.crop, Some((477, 848)));
        assert_eq!(sizes(&l), [(360, 640)]);
        let l = ladder(1081, 1921);
        assert_eq!(l.crop, Some((1080, 1920)));
        assert_eq!(sizes(&l)[0], (1080, 1920));
        // No common aspect ratio: one rung at the source size, even.
        let l = ladder(1001, 333);
        assert_eq!(l.crop, Some((1000, 332)));
        assert_eq!(sizes(&l), [(1000, 332)]);
        assert_eq!(sizes(&ladder(333, 1001)), [(332, 1000)]);
    }

    #[test]
    fn tiny_sources_get_one_rung_at_their_size() {
        assert_eq!(sizes(&ladder(320, 240)), [(320, 240)]);
        assert_eq!(sizes(&ladder(240, 320)), [(240, 320)]);
        assert_eq!(sizes(&ladder(160, 90)), [(160, 90)]);
        assert_eq!(sizes(&ladder(90, 160)), [(90, 160)]);
        // Too small for any exact even 16:9 frame: its own size, made even,
        // rather than a distorted or odd-sized one.
        assert_eq!(sizes(&ladder(16, 9)), [(16, 8)]);
        assert_eq!(sizes(&ladder(9, 16)), [(8, 16)]);
        assert_eq!(sizes(&ladder(2, 2)), [(2, 2)]);
        assert_eq!(sizes(&ladder(1, 1)), [(2, 2)]);
        assert_eq!(sizes(&ladder(0, 0)), [(2, 2)]);
        assert_eq!(sizes(&ladder(3, 1)), [(2, 2)]);
    }

    /// Over a grid of sizes: every rung even, within the (cropped) source,
    /// of one aspect ratio, smaller than the one before, at most 1080 on its
    /// short side; and a source turned on its side gets the same ladder
    /// turned on its side.
    #[test]
    fn every_ladder_is_even_within_the_source_and_turns_with_it() {
        let mut checked = 0;
        for w in (2..2400)
            .step_by(23)
            .chain([1080, 1920, 720, 1280, 2160, 3840])
        {
            for h in (2..2400)
                .step_by(29)
                .chain([1080, 1920, 720, 1280, 2160, 3840])
            {
                let l = ladder(w, h);
                let (sw, sh) = l.crop.unwrap_or((w, h));
                assert!(sw <= w.max(2) && sh <= h.max(2), "{w}x{h}: {l:?}");
                let (w0, h0) = (l.rungs[0].width as u64, l.rungs[0].height as u64);
                let mut last = u32::MAX;
                for r in &l.rungs {
                    assert_eq!((r.width % 2, r.height % 2), (0, 0), "even: {w}x{h} {l:?}");
                    assert!(
                        r.width <= sw && r.height <= sh,
                        "never upscaled: {w}x{h} {l:?}"
                    );
                    assert_eq!(
                        r.width as u64 * h0,
                        w0 * r.height as u64,
                        "one aspect: {w}x{h} {l:?}"
                    );
                    assert!(r.width < last, "largest first: {w}x{h} {l:?}");
                    last = r.width;
                }
                if l.rungs.len() > 1 {
                    assert!(
                        l.rungs[0].width.min(l.rungs[0].height) <= 1080,
                        "{w}x{h} {l:?}"
                    );
                }
                let t = ladder(h, w);
                assert_eq!(sizes(&t), turned(&sizes(&l)), "turned: {w}x{h}");
                assert_eq!(t.crop, l.crop.map(|(a, b)| (b, a)), "turned: {w}x{h}");
                checked += 1;
            }
        }
        assert!(checked > 9_000);
    }
}
