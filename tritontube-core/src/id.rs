//! Validated names: [`VideoId`], [`FileName`], [`ContentKey`] and [`NodeAddr`].
//!
//! Everything that becomes part of a path on a storage node, a key in etcd or
//! a URL goes through one of these newtypes first. Once a value exists it is
//! valid, so code further in never re-checks, and a node can never be tricked
//! into touching a path outside its base directory.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Longest video id or file name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

fn check_name(what: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(what, s, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            what,
            s,
            format!(
                "is {} bytes long; at most {MAX_NAME_LEN} are allowed",
                s.len()
            ),
        ));
    }
    if s.starts_with('.') {
        return Err(Error::invalid(what, s, "must not start with '.'"));
    }
    if let Some(c) = s.chars().find(|c| !is_name_char(*c)) {
        return Err(Error::invalid(
            what,
            s,
            format!("contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"),
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The id of a video.
///
/// Invariants:
/// - 1 to 128 characters, each from `[A-Za-z0-9._-]`;
/// - does not start with `.` (so never `.` or `..`, never a hidden file);
/// - therefore never contains `/`, `\`, a NUL byte or white space.
///
/// ```
/// use tritontube_core::VideoId;
///
/// let id: VideoId = "PIKACHU".parse().unwrap();
/// assert_eq!(id.as_str(), "PIKACHU");
/// assert!("..".parse::<VideoId>().is_err());
/// assert!("a/b".parse::<VideoId>().is_err());
///
/// // An upload's id comes from its file name, sanitized:
/// let id = VideoId::from_file_name("My Holiday (2024).mp4").unwrap();
/// assert_eq!(id.as_str(), "My-Holiday-2024");
/// assert!(VideoId::from_file_name("???.mp4").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VideoId(String);

impl VideoId {
    /// Validates `s` as a video id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        check_name("video id", &s)?;
        Ok(VideoId(s))
    }

    /// The default id of an upload: its file name without extension, with
    /// every run of characters outside the alphabet turned into one `-`,
    /// leading `.`/`-` and trailing `-` trimmed, cut to 128 characters.
    /// Refused when nothing valid is left.
    pub fn from_file_name(file_name: &str) -> Result<Self> {
        // Only the last path component: browsers may send "C:\\x\\y.mp4".
        let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
        let stem = match base.rfind('.') {
            Some(i) if i > 0 => &base[..i],
            _ => base,
        };
        let mut out = String::with_capacity(stem.len());
        for c in stem.chars() {
            if is_name_char(c) {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let trimmed = out
            .trim_start_matches(['.', '-'])
            .trim_end_matches('-')
            .to_string();
        let mut id = trimmed;
        id.truncate(MAX_NAME_LEN);
        if id.is_empty() {
            return Err(Error::invalid(
                "video id",
                file_name,
                "no usable characters in the file name; give the video an id of letters, digits, '.', '_' or '-'",
            ));
        }
        VideoId::new(id)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The name of one file of a video (`manifest.mpd`, `chunk-0-00001.m4s`, ...).
///
/// Invariants: the same as [`VideoId`]: 1 to 128 characters of
/// `[A-Za-z0-9._-]`, not starting with `.`, so never a path.
///
/// ```
/// use tritontube_core::FileName;
///
/// assert!("init-0.m4s".parse::<FileName>().is_ok());
/// assert!("../etc".parse::<FileName>().is_err());
/// assert!("".parse::<FileName>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileName(String);

impl FileName {
    /// Validates `s` as a file name.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        check_name("file name", &s)?;
        Ok(FileName(s))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The key of one stored file: `"<videoId>/<filename>"`.
///
/// This string is what the ring hashes to place the file
/// (see [`crate::ring::key_hash`]).
///
/// ```
/// use tritontube_core::ContentKey;
///
/// let key: ContentKey = "PIKACHU/manifest.mpd".parse().unwrap();
/// assert_eq!(key.video().as_str(), "PIKACHU");
/// assert_eq!(key.file().as_str(), "manifest.mpd");
/// assert_eq!(key.to_string(), "PIKACHU/manifest.mpd");
/// assert!("PIKACHU/../x".parse::<ContentKey>().is_err());
/// assert!("PIKACHU/".parse::<ContentKey>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentKey {
    video: VideoId,
    file: FileName,
    joined: String,
}

impl ContentKey {
    /// The key of `file` of `video`.
    pub fn new(video: VideoId, file: FileName) -> Self {
        let joined = format!("{}/{}", video.0, file.0);
        ContentKey {
            video,
            file,
            joined,
        }
    }

    /// Validates both parts.
    pub fn from_parts(video: &str, file: &str) -> Result<Self> {
        Ok(ContentKey::new(VideoId::new(video)?, FileName::new(file)?))
    }

    /// The video the file belongs to.
    pub fn video(&self) -> &VideoId {
        &self.video
    }

    /// The file's name within its video.
    pub fn file(&self) -> &FileName {
        &self.file
    }

    /// `"<videoId>/<filename>"`, the string the ring hashes.
    pub fn as_str(&self) -> &str {
        &self.joined
    }
}

/// The address of a storage node, `host:port`; it is also the node's name on
/// the ring.
///
/// Invariants: a non-empty host of letters, digits, `.`, `-` and `_` (or a
/// bracketed IPv6 literal), a `:` and a port from 1 to 65535.
///
/// ```
/// use tritontube_core::NodeAddr;
///
/// assert_eq!("localhost:8090".parse::<NodeAddr>().unwrap().port(), 8090);
/// assert!("[::1]:8090".parse::<NodeAddr>().is_ok());
/// assert!("localhost".parse::<NodeAddr>().is_err());
/// assert!("localhost:0".parse::<NodeAddr>().is_err());
/// assert!("http://x:1".parse::<NodeAddr>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr(String);

impl NodeAddr {
    /// Validates `s` as `host:port`.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s: String = s.into();
        let bad = |reason: &str| Err(Error::invalid("node address", &s, reason));
        let Some((host, port)) = s.rsplit_once(':') else {
            return bad("expected host:port");
        };
        if host.is_empty() {
            return bad("the host is empty");
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            !inner.is_empty()
                && inner
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        } else {
            host.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        if !host_ok {
            return bad("the host may contain only letters, digits, '.', '-' and '_'");
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(NodeAddr(s)),
            _ => bad("the port must be a number from 1 to 65535"),
        }
    }

    /// The address as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }
}

macro_rules! string_newtype {
    ($t:ty, $inner:ident) => {
        impl FromStr for $t {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                <$t>::new(s)
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                <$t>::new(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.$inner().to_string()
            }
        }
    };
}

string_newtype!(VideoId, as_str);
string_newtype!(FileName, as_str);
string_newtype!(NodeAddr, as_str);

impl ContentKey {
    fn parse_joined(s: &str) -> Result<Self> {
        let Some((v, f)) = s.split_once('/') else {
            return Err(Error::invalid(
                "content key",
                s,
                "expected <videoId>/<filename>",
            ));
        };
        ContentKey::from_parts(v, f)
    }
}

impl FromStr for ContentKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ContentKey::parse_joined(s)
    }
}

impl fmt::Display for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined)
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.joined, f)
    }
}

#[cfg(feature = "runtime")]
mod serde_impls {
    use super::*;
    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    macro_rules! serde_str {
        ($t:ty) => {
            impl Serialize for $t {
                fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                    s.serialize_str(self.as_str())
                }
            }
            impl<'de> Deserialize<'de> for $t {
                fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(D::Error::custom)
                }
            }
        };
    }
    serde_str!(VideoId);
    serde_str!(FileName);
    serde_str!(NodeAddr);
    serde_str!(ContentKey);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_id_rules() {
        for ok in ["a", "PIKACHU", "a.b", "a-b_c.9", &"x".repeat(128)] {
            assert!(VideoId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "/abs",
            "a b",
            "a\\b",
            "é",
            "a\0b",
            &"x".repeat(129),
        ] {
            let e = VideoId::new(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn sanitizes_upload_names() {
        assert_eq!(
            VideoId::from_file_name("clip.mp4").unwrap().as_str(),
            "clip"
        );
        assert_eq!(
            VideoId::from_file_name("C:\\Users\\me\\my clip.final.mov")
                .unwrap()
                .as_str(),
            "my-clip.final"
        );
        assert_eq!(
            VideoId::from_file_name("..secret.mp4").unwrap().as_str(),
            "secret"
        );
        assert_eq!(
            VideoId::from_file_name(&format!("{}.mp4", "y".repeat(300)))
                .unwrap()
                .as_str()
                .len(),
            128
        );
        assert!(VideoId::from_file_name("").is_err());
        assert!(VideoId::from_file_name("💥💥.mp4").is_err());
    }

    #[test]
    fn content_key_round_trip() {
        let k = ContentKey::from_parts("v1", "chunk-0-00001.m4s").unwrap();
        assert_eq!(k.as_str(), "v1/chunk-0-00001.m4s");
        assert_eq!(k.to_string().parse::<ContentKey>().unwrap(), k);
        for bad in ["v1", "v1/", "/x", "v1/a/b", "../x", "v1/..", "v1/.x"] {
            assert!(bad.parse::<ContentKey>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_addresses() {
        for ok in ["localhost:8090", "10.0.0.1:1", "node-a:9001", "[::1]:8090"] {
            assert!(NodeAddr::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "localhost",
            ":8090",
            "host:",
            "host:0",
            "host:70000",
            "a b:1",
            "http://h:1",
            "h:1/x",
        ] {
            assert!(NodeAddr::new(bad).is_err(), "{bad}");
        }
    }
}
