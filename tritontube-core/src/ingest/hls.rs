//! HLS playlists beside the DASH manifest, over the very same fMP4 (CMAF)
//! segments: one transcode, one set of segments, two ways to play them.
//!
//! ffmpeg's DASH muxer writes the playlists (`-hls_playlist 1`, see
//! [`super::ladder::ffmpeg_args`]): a master playlist, whose name we choose
//! ([`MASTER_PLAYLIST`], carrying the upload's generation like every file),
//! and one media playlist per stream, which ffmpeg always names
//! `media_<n>.m3u8` and references from the master by that name. The media
//! playlists name the segments exactly as the MPD does (ffmpeg is given the
//! stored names), so only the media playlists' own names need fixing:
//! [`finish`] gives them their stored names, rewrites the master to match,
//! and checks that every name any playlist references is a file of the
//! transcode that carries its generation. Stored as they are then, the
//! playlists reference only stored files of the same upload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use m3u8_rs::{MasterPlaylist, MediaPlaylist};

use crate::error::{Error, Result};
use crate::id::FileName;
use crate::metadata::{generation_file_name, generation_of_file_name};

/// The master playlist's name for a first upload (a later upload under the
/// same id prefixes it, as every file: [`master_playlist_name`]).
pub const MASTER_PLAYLIST: &str = "master.m3u8";

/// The MIME type of HLS playlists (RFC 8216, section 4).
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// The stored name of the master playlist of upload `generation`.
///
/// ```
/// use tritontube_core::ingest::hls::master_playlist_name;
/// assert_eq!(master_playlist_name(1), "master.m3u8");
/// assert_eq!(master_playlist_name(4), "g4-master.m3u8");
/// ```
pub fn master_playlist_name(generation: u64) -> String {
    generation_file_name(generation, MASTER_PLAYLIST)
}

/// The error of a transcode whose playlists cannot be stored as they are.
fn bad_playlists(message: String) -> Error {
    Error::Backend {
        backend: "ffmpeg",
        message: format!("the HLS playlists it wrote are not usable: {message}"),
        source: None,
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| Error::io(path, e))
}

/// Makes the HLS playlists ffmpeg wrote into `dir` for upload `generation`
/// ready to store (see the module docs): renames the media playlists to
/// their stored names, rewrites the master playlist to name them so, and
/// checks that every playlist in `dir` is named by the master and that
/// every file a playlist names is in `dir` and belongs to `generation`.
/// Blocking (small files); an error says what is wrong and leaves the job to
/// fail.
pub fn finish(dir: &Path, generation: u64) -> Result<()> {
    let master_name = master_playlist_name(generation);
    let text = read(dir, &master_name)?;
    let mut master = m3u8_rs::parse_master_playlist_res(&text)
        .map_err(|e| bad_playlists(format!("{master_name} does not parse: {e:?}")))?;
    let renames = rename_media_playlists(&mut master, generation)?;
    for (from, to) in &renames {
        if from != to {
            std::fs::rename(dir.join(from), dir.join(to))
                .map_err(|e| Error::io(dir.join(from), e))?;
        }
    }
    if renames.iter().any(|(from, to)| from != to) {
        let mut out = Vec::new();
        master
            .write_to(&mut out)
            .map_err(|e| Error::io(dir.join(&master_name), e))?;
        std::fs::write(dir.join(&master_name), out)
            .map_err(|e| Error::io(dir.join(&master_name), e))?;
    }
    let named: BTreeSet<&String> = renames.values().collect();
    check_no_stray_playlists(dir, &master_name, &named)?;
    for media in named {
        let text = read(dir, media)?;
        let playlist = m3u8_rs::parse_media_playlist_res(&text)
            .map_err(|e| bad_playlists(format!("{media} does not parse: {e:?}")))?;
        for file in referenced_files(&playlist) {
            check_reference(dir, media, file, generation)?;
        }
    }
    Ok(())
}

/// Gives every media playlist the master names its stored name, in the
/// master; returns each old name with its new one.
fn rename_media_playlists(
    master: &mut MasterPlaylist,
    generation: u64,
) -> Result<BTreeMap<String, String>> {
    let mut renames = BTreeMap::new();
    let uris = master.variants.iter_mut().map(|v| &mut v.uri).chain(
        master
            .alternatives
            .iter_mut()
            .filter_map(|a| a.uri.as_mut()),
    );
    for uri in uris {
        FileName::new(uri.clone()).map_err(|e| {
            bad_playlists(format!(
                "the master names {uri:?}, not a file beside it: {e}"
            ))
        })?;
        if generation_of_file_name(uri) == generation {
            // Already its stored name (always so for a first upload).
            renames.insert(uri.clone(), uri.clone());
            continue;
        }
        let stored = generation_file_name(generation, uri);
        renames.insert(uri.clone(), stored.clone());
        *uri = stored;
    }
    if renames.is_empty() {
        return Err(bad_playlists("the master playlist names no stream".into()));
    }
    Ok(renames)
}

/// Fails if `dir` holds a playlist that neither is the master nor is named
/// by it: it would be stored under a name of no generation's playlists.
fn check_no_stray_playlists(dir: &Path, master: &str, named: &BTreeSet<&String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".m3u8") && name != master && !named.contains(&name.to_string()) {
            return Err(bad_playlists(format!(
                "{name} is not named by the master playlist {master}"
            )));
        }
    }
    Ok(())
}

/// Every file a media playlist names: its segments and their
/// initialization sections (`#EXT-X-MAP`), in order, each once.
pub fn referenced_files(playlist: &MediaPlaylist) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    playlist
        .segments
        .iter()
        .flat_map(|s| s.map.iter().map(|m| m.uri.as_str()).chain([s.uri.as_str()]))
        .filter(|f| seen.insert(*f))
        .collect()
}

/// Fails unless `file`, named by the media playlist `media`, is a file of
/// `dir` (so, once stored, a file of the same video) of upload `generation`.
fn check_reference(dir: &Path, media: &str, file: &str, generation: u64) -> Result<()> {
    let why = if FileName::new(file).is_err() {
        "not a file beside it"
    } else if generation_of_file_name(file) != generation {
        "a file of another upload"
    } else if !dir.join(file).is_file() {
        "a file the transcode did not write"
    } else {
        return Ok(());
    };
    Err(bad_playlists(format!("{media} names {file:?}, {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"group_A1\",NAME=\"audio_1\",DEFAULT=YES,URI=\"media_1.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=932998,RESOLUTION=640x360,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"group_A1\"\n\
media_0.m3u8\n\n";

    fn media(init: &str, chunks: &[&str]) -> String {
        let mut s = format!(
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-MAP:URI=\"{init}\"\n"
        );
        for c in chunks {
            // As ffmpeg writes it, with the time of the transcode.
            s.push_str(&format!(
                "#EXTINF:4.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-11-28T08:48:27.000+0000\n{c}\n"
            ));
        }
        s + "#EXT-X-ENDLIST\n"
    }

    /// What ffmpeg writes for upload `generation` (one video and one audio
    /// stream, two segments each), in a new directory.
    fn transcoded(generation: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let n = |b: &str| generation_file_name(generation, b);
        std::fs::write(dir.path().join(master_playlist_name(generation)), MASTER).unwrap();
        for s in 0..2 {
            let files = [
                n(&format!("init-{s}.m4s")),
                n(&format!("chunk-{s}-00001.m4s")),
                n(&format!("chunk-{s}-00002.m4s")),
            ];
            for f in &files {
                std::fs::write(dir.path().join(f), b"x").unwrap();
            }
            let text = media(&files[0], &[&files[1], &files[2]]);
            std::fs::write(dir.path().join(format!("media_{s}.m3u8")), text).unwrap();
        }
        dir
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".m3u8"))
            .collect()
    }

    #[test]
    fn a_first_upload_keeps_ffmpegs_names_and_bytes() {
        let dir = transcoded(1);
        finish(dir.path(), 1).unwrap();
        assert_eq!(
            names(dir.path()),
            ["master.m3u8", "media_0.m3u8", "media_1.m3u8"]
                .map(String::from)
                .into()
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("master.m3u8")).unwrap(),
            MASTER
        );
    }

    #[test]
    fn a_later_upload_gets_generation_names_everywhere() {
        let dir = transcoded(3);
        finish(dir.path(), 3).unwrap();
        assert_eq!(
            names(dir.path()),
            ["g3-master.m3u8", "g3-media_0.m3u8", "g3-media_1.m3u8"]
                .map(String::from)
                .into()
        );
        let text = std::fs::read(dir.path().join("g3-master.m3u8")).unwrap();
        let master = m3u8_rs::parse_master_playlist_res(&text).unwrap();
        assert_eq!(master.variants.len(), 1);
        assert_eq!(master.variants[0].uri, "g3-media_0.m3u8");
        assert_eq!(
            master.variants[0].codecs.as_deref(),
            Some("avc1.4d401e,mp4a.40.2")
        );
        assert_eq!(master.variants[0].audio.as_deref(), Some("group_A1"));
        assert_eq!(
            master.alternatives[0].uri.as_deref(),
            Some("g3-media_1.m3u8")
        );
        let media = std::fs::read(dir.path().join("g3-media_0.m3u8")).unwrap();
        let media = m3u8_rs::parse_media_playlist_res(&media).unwrap();
        assert_eq!(
            referenced_files(&media),
            [
                "g3-init-0.m4s",
                "g3-chunk-0-00001.m4s",
                "g3-chunk-0-00002.m4s"
            ]
        );
    }

    #[test]
    fn a_playlist_naming_a_missing_or_foreign_file_is_refused() {
        let dir = transcoded(2);
        std::fs::remove_file(dir.path().join("g2-chunk-1-00002.m4s")).unwrap();
        let e = finish(dir.path(), 2).unwrap_err().to_string();
        assert!(
            e.contains(
                "g2-media_1.m3u8 names \"g2-chunk-1-00002.m4s\", a file the transcode did not write"
            ),
            "{e}"
        );

        let dir = transcoded(2);
        let foreign = media("init-0.m4s", &["g2-chunk-0-00001.m4s"]);
        std::fs::write(dir.path().join("media_0.m3u8"), foreign).unwrap();
        let e = finish(dir.path(), 2).unwrap_err().to_string();
        assert!(
            e.contains("names \"init-0.m4s\", a file of another upload"),
            "{e}"
        );

        let dir = transcoded(1);
        let outside = media("../other/init-0.m4s", &["chunk-0-00001.m4s"]);
        std::fs::write(dir.path().join("media_0.m3u8"), outside).unwrap();
        let e = finish(dir.path(), 1).unwrap_err().to_string();
        assert!(e.contains("not a file beside it"), "{e}");
    }

    #[test]
    fn a_master_that_is_missing_unreadable_or_incomplete_is_refused() {
        let dir = transcoded(1);
        std::fs::write(dir.path().join("media_2.m3u8"), media("init-0.m4s", &[])).unwrap();
        let e = finish(dir.path(), 1).unwrap_err().to_string();
        assert!(
            e.contains("media_2.m3u8 is not named by the master playlist master.m3u8"),
            "{e}"
        );

        let dir = transcoded(1);
        std::fs::write(
            dir.path().join("master.m3u8"),
            "#EXTM3U\n#EXT-X-VERSION:7\n",
        )
        .unwrap();
        let e = finish(dir.path(), 1).unwrap_err().to_string();
        assert!(e.contains("names no stream"), "{e}");

        let dir = transcoded(1);
        std::fs::remove_file(dir.path().join("master.m3u8")).unwrap();
        assert!(finish(dir.path(), 1).is_err());
        assert!(
            finish(dir.path(), 2).is_err(),
            "a generation's master is looked for by its name"
        );
    }
}
