//! Which container formats an upload may be, and how ffprobe and ffmpeg are
//! made to open it and nothing else.
//!
//! ffmpeg opens whatever it is given by guessing the format from the bytes,
//! and several of the formats it knows are not media at all but
//! *indirections*: an HLS or DASH playlist, an ffconcat script, an SDP
//! session description, a VobSub index... each names other files or URLs
//! that its demuxer then opens. Uploaded as a "video", a three-line HLS
//! playlist naming a `.ts` file on the server passed ffprobe and ffmpeg and
//! was published as a playable copy of that file. Protocols are the same
//! class of hole (`concat:`, `concatf:`, `subfile,,...:`, `data:`, network
//! protocols), as are image2 patterns (`img%03d.png`).
//!
//! So an upload is opened in three guarded steps:
//!
//! 1. its format is *detected* without running any demuxer (see
//!    [`super::probe::detect`]): no playlist is ever parsed;
//! 2. only the formats of [`ACCEPTED_CONTAINERS`] (what cameras, phones and
//!    editors write) go further; anything else is refused by name;
//! 3. every later ffprobe and ffmpeg run opens it with [`input_args`]: that
//!    one demuxer forced, no other demuxer allowed, only the `file`
//!    protocol, the path given as an explicit `file:` URL, and any way the
//!    demuxer has of opening other files turned off.

use std::path::Path;

/// A container format accepted for upload, and how to open it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Container {
    /// The demuxer's full name, as ffprobe reports it in `format.format_name`
    /// and in its detection log (e.g. `mov,mp4,m4a,3gp,3g2,mj2`).
    pub format_name: &'static str,
    /// The demuxer forced with `-f` and allowed with `-format_whitelist`.
    pub demuxer: &'static str,
    /// What people call it, for messages.
    pub label: &'static str,
    /// Demuxer options always set with it: they turn off every way the
    /// demuxer has of opening a file other than the upload.
    pub options: &'static [(&'static str, &'static str)],
}

/// The container formats an upload may be: what cameras, phones, screen
/// recorders, browsers and editors write, and nothing that can name another
/// file.
///
/// | ffprobe `format_name`        | forced demuxer | typical files                     |
/// |------------------------------|----------------|-----------------------------------|
/// | `mov,mp4,m4a,3gp,3g2,mj2`    | `mov`          | .mp4 .mov .m4v .3gp (phones, editors) |
/// | `matroska,webm`              | `matroska`     | .mkv .webm (browsers, OBS)        |
/// | `avi`                        | `avi`          | .avi (older cameras)              |
/// | `mpegts`                     | `mpegts`       | .ts .m2ts .mts (AVCHD camcorders, broadcast) |
/// | `mpeg`                       | `mpeg`         | .mpg .vob (MPEG program stream)   |
/// | `flv`                        | `flv`          | .flv (streaming recorders)        |
/// | `asf`                        | `asf`          | .wmv .asf (Windows)               |
///
/// The mov family can point at media in other files through data references
/// ("drefs"); ffmpeg ignores them by default, and they are turned off
/// explicitly too so that no build or default can turn them back on. None of
/// the other demuxers here can open another file at all.
///
/// Left out on purpose: every playlist, script and session format (`hls`,
/// `dash`, `concat`, `sdp`, `vobsub`, ...), image formats and image
/// sequences (`image2`, `png_pipe`, `jpeg_pipe`, ...: a picture is not a
/// video), raw elementary streams (`h264`, `hevc`, ...: no container, no
/// timing), audio-only formats, and professional formats (MXF, DV) whose
/// demuxers are large for the few uploads that would use them.
pub const ACCEPTED_CONTAINERS: &[Container] = &[
    Container {
        format_name: "mov,mp4,m4a,3gp,3g2,mj2",
        demuxer: "mov",
        label: "mp4/mov/3gp",
        options: &[("enable_drefs", "0"), ("use_absolute_path", "0")],
    },
    Container {
        format_name: "matroska,webm",
        demuxer: "matroska",
        label: "matroska/webm",
        options: &[],
    },
    Container {
        format_name: "avi",
        demuxer: "avi",
        label: "avi",
        options: &[],
    },
    Container {
        format_name: "mpegts",
        demuxer: "mpegts",
        label: "MPEG-TS",
        options: &[],
    },
    Container {
        format_name: "mpeg",
        demuxer: "mpeg",
        label: "MPEG-PS",
        options: &[],
    },
    Container {
        format_name: "flv",
        demuxer: "flv",
        label: "flv",
        options: &[],
    },
    Container {
        format_name: "asf",
        demuxer: "asf",
        label: "asf/wmv",
        options: &[],
    },
];

/// The accepted container whose ffprobe `format_name` is exactly
/// `format_name`, if any. Exact, not by parts: `format_name` is a demuxer's
/// fixed name, and matching one of its comma-separated parts could let a
/// future demuxer sharing a part slip in.
pub fn accepted(format_name: &str) -> Option<&'static Container> {
    ACCEPTED_CONTAINERS
        .iter()
        .find(|c| c.format_name == format_name)
}

/// The accepted containers, for messages: `mp4/mov/3gp, matroska/webm, ...`.
pub fn accepted_labels() -> String {
    ACCEPTED_CONTAINERS
        .iter()
        .map(|c| c.label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an upload of format `format_name` is refused, naming the format.
pub fn refusal(format_name: &str) -> String {
    format!(
        "refused: {format_name:?} is not an accepted video container (accepted: {})",
        accepted_labels()
    )
}

/// `path` as an explicit `file:` URL. A bare path could be read as another
/// protocol if it ever began with `name:` (a relative temporary directory
/// called `concat:...`); after `file:` ffmpeg takes the rest literally.
pub fn file_url(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// The ffprobe/ffmpeg input options opening `path` as `container` and as
/// nothing else, ending with `-i file:PATH`. Placed before `-i`, they apply
/// to that input only.
///
/// - `-protocol_whitelist file`: the input and anything a demuxer tries to
///   open from it may use only the `file` protocol (no `concat:`, `subfile`,
///   `data:`, `http`, `rtp`, `tee`, `crypto`, ...);
/// - `-format_whitelist NAME` and `-f NAME`: no format detection, and no
///   other demuxer (`hls`, `concat`, `image2`, ...) may be opened, even for a
///   nested input;
/// - the container's [`Container::options`].
pub fn input_args(container: &Container, path: &Path) -> Vec<String> {
    let mut a: Vec<String> = [
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        container.demuxer,
        "-f",
        container.demuxer,
    ]
    .map(String::from)
    .into();
    for (k, v) in container.options {
        a.extend([format!("-{k}"), v.to_string()]);
    }
    a.extend(["-i".to_string(), file_url(path)]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_format_names_are_accepted() {
        assert_eq!(accepted("mov,mp4,m4a,3gp,3g2,mj2").unwrap().demuxer, "mov");
        assert_eq!(accepted("matroska,webm").unwrap().demuxer, "matroska");
        for refused in [
            "hls", "dash", "concat", "image2", "png_pipe", "sdp", "vobsub", "mp4", "webm", "",
        ] {
            assert_eq!(accepted(refused), None, "{refused}");
        }
        let m = refusal("hls");
        assert!(m.starts_with("refused: \"hls\" is not an accepted video container (accepted: mp4/mov/3gp, matroska/webm, avi, MPEG-TS"), "{m}");
    }

    #[test]
    fn input_args_force_one_demuxer_and_the_file_protocol() {
        let mp4 = accepted("mov,mp4,m4a,3gp,3g2,mj2").unwrap();
        let a = input_args(mp4, Path::new("/t/concat:x|y"));
        assert_eq!(
            a,
            [
                "-protocol_whitelist",
                "file",
                "-format_whitelist",
                "mov",
                "-f",
                "mov",
                "-enable_drefs",
                "0",
                "-use_absolute_path",
                "0",
                "-i",
                "file:/t/concat:x|y"
            ]
        );
        let ts = accepted("mpegts").unwrap();
        let a = input_args(ts, Path::new("rel/source"));
        assert_eq!(&a[a.len() - 2..], ["-i", "file:rel/source"]);
        assert!(!a.iter().any(|x| x.contains("drefs")), "{a:?}");
        for c in ACCEPTED_CONTAINERS {
            let a = input_args(c, Path::new("/s"));
            assert_eq!(&a[..2], ["-protocol_whitelist", "file"]);
            assert!(a.windows(2).any(|w| w == ["-f", c.demuxer]));
        }
    }
}
