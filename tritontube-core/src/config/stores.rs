//! The web server's two store choices, parsed once.
//!
//! Written `KIND:OPTION` in a flag or a config file (`--metadata
//! sqlite:./metadata.db`, `content = "nw:0.0.0.0:8081,node-1:8090"`), or as
//! the course project's positional pairs (`sqlite ./metadata.db nw
//! "localhost:8081,localhost:8090"`): the kind is everything before the
//! first `:`, the option everything after it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::id::NodeAddr;

/// Where a web server keeps video records, file records and the cluster
/// state.
///
/// ```
/// use tritontube_core::config::MetadataConfig;
/// let m: MetadataConfig = "etcd:etcd-1:2379, etcd-2:2379".parse()?;
/// assert_eq!(m, MetadataConfig::Etcd { endpoints: vec!["etcd-1:2379".into(), "etcd-2:2379".into()] });
/// assert_eq!(m.to_string(), "etcd:etcd-1:2379,etcd-2:2379");
/// assert!("mysql:db".parse::<MetadataConfig>().is_err());
/// # Ok::<(), tritontube_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataConfig {
    /// A SQLite database file (one machine): `sqlite PATH`.
    Sqlite {
        /// The database file (created if missing).
        path: PathBuf,
    },
    /// An etcd cluster (several web servers): `etcd "HOST:PORT,..."`.
    Etcd {
        /// The members' client endpoints; never empty.
        endpoints: Vec<String>,
    },
}

impl MetadataConfig {
    /// From the course project's positional pair, e.g. `("sqlite",
    /// "./metadata.db")`.
    pub fn from_parts(kind: &str, option: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Err(Error::invalid(
                "metadata",
                format!("{kind} {option}"),
                reason,
            ))
        };
        match kind {
            "sqlite" if option.trim().is_empty() => bad("`sqlite` needs the database file's path"),
            "sqlite" => Ok(MetadataConfig::Sqlite {
                path: PathBuf::from(option),
            }),
            "etcd" => {
                let endpoints = list(option);
                if endpoints.is_empty() {
                    return bad("`etcd` needs at least one endpoint, HOST:PORT");
                }
                Ok(MetadataConfig::Etcd { endpoints })
            }
            _ => bad("unknown kind: expected `sqlite PATH` or `etcd HOST:PORT,...`"),
        }
    }

    /// The embedded default: SQLite in `data_dir/metadata.db`.
    pub fn embedded(data_dir: &Path) -> Self {
        MetadataConfig::Sqlite {
            path: data_dir.join("metadata.db"),
        }
    }

    /// `"sqlite"` or `"etcd"`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetadataConfig::Sqlite { .. } => "sqlite",
            MetadataConfig::Etcd { .. } => "etcd",
        }
    }

    /// The option as the course project's command line writes it.
    pub fn option(&self) -> String {
        match self {
            MetadataConfig::Sqlite { path } => path.display().to_string(),
            MetadataConfig::Etcd { endpoints } => endpoints.join(","),
        }
    }
}

/// Where a web server keeps video files.
///
/// ```
/// use tritontube_core::config::ContentConfig;
/// let c: ContentConfig = "nw:0.0.0.0:8081,node-1:8090,node-2:8090".parse()?;
/// let ContentConfig::Network { admin, nodes } = &c else { unreachable!() };
/// assert_eq!(admin.as_str(), "0.0.0.0:8081");
/// assert_eq!(nodes.len(), 2);
/// assert!("nw:localhost".parse::<ContentConfig>().is_err());
/// # Ok::<(), tritontube_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentConfig {
    /// A local directory: `fs DIR`.
    Local {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Storage nodes on a consistent-hash ring: `nw "ADMIN,NODE,NODE..."`.
    Network {
        /// Where this server's admin service listens.
        admin: NodeAddr,
        /// The initial membership (used only when the cluster is first
        /// set up; after that the membership is the metadata store's).
        nodes: Vec<NodeAddr>,
    },
}

impl ContentConfig {
    /// From the course project's positional pair, e.g. `("nw",
    /// "localhost:8081,localhost:8090")`.
    pub fn from_parts(kind: &str, option: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Err(Error::invalid(
                "content",
                format!("{kind} {option}"),
                reason,
            ))
        };
        match kind {
            "fs" if option.trim().is_empty() => bad("`fs` needs a directory"),
            "fs" => Ok(ContentConfig::Local {
                dir: PathBuf::from(option),
            }),
            "nw" => {
                let mut addrs = list(option).into_iter();
                let Some(admin) = addrs.next() else {
                    return bad("`nw` needs \"ADMIN_ADDR,NODE,NODE...\"");
                };
                Ok(ContentConfig::Network {
                    admin: NodeAddr::new(admin)?,
                    nodes: addrs.map(NodeAddr::new).collect::<Result<_>>()?,
                })
            }
            _ => bad("unknown kind: expected `fs DIR` or `nw \"ADMIN_ADDR,NODE,NODE...\"`"),
        }
    }

    /// The embedded default: a directory `data_dir/content`.
    pub fn embedded(data_dir: &Path) -> Self {
        ContentConfig::Local {
            dir: data_dir.join("content"),
        }
    }

    /// `"fs"` or `"nw"`.
    pub fn kind(&self) -> &'static str {
        match self {
            ContentConfig::Local { .. } => "fs",
            ContentConfig::Network { .. } => "nw",
        }
    }

    /// The option as the course project's command line writes it.
    pub fn option(&self) -> String {
        match self {
            ContentConfig::Local { dir } => dir.display().to_string(),
            ContentConfig::Network { admin, nodes } => std::iter::once(admin)
                .chain(nodes)
                .map(NodeAddr::as_str)
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// A comma-separated list, blanks trimmed, empty items dropped.
fn list(option: &str) -> Vec<String> {
    option
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits `KIND:OPTION`.
fn split<'a>(what: &'static str, s: &'a str) -> Result<(&'a str, &'a str)> {
    s.split_once(':')
        .ok_or_else(|| Error::invalid(what, s, "expected KIND:OPTION"))
}

impl FromStr for MetadataConfig {
    type Err = Error;

    /// `sqlite:PATH` or `etcd:HOST:PORT,...`.
    fn from_str(s: &str) -> Result<Self> {
        let (kind, option) = split("metadata", s)?;
        Self::from_parts(kind, option)
    }
}

impl FromStr for ContentConfig {
    type Err = Error;

    /// `fs:DIR` or `nw:ADMIN_ADDR,NODE,NODE...`.
    fn from_str(s: &str) -> Result<Self> {
        let (kind, option) = split("content", s)?;
        Self::from_parts(kind, option)
    }
}

impl fmt::Display for MetadataConfig {
    /// `KIND:OPTION`, which [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.option())
    }
}

impl fmt::Display for ContentConfig {
    /// `KIND:OPTION`, which [`FromStr`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.option())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_options_round_trip() {
        for s in [
            "sqlite:./metadata.db",
            "etcd:h1:2379,h2:2379",
            "fs:/srv/content",
            "nw:localhost:8081,localhost:8090,localhost:8091",
            "nw:0.0.0.0:8081",
        ] {
            let text = if s.starts_with("sqlite") || s.starts_with("etcd") {
                s.parse::<MetadataConfig>().unwrap().to_string()
            } else {
                s.parse::<ContentConfig>().unwrap().to_string()
            };
            assert_eq!(text, s);
        }
    }

    #[test]
    fn positional_pairs_parse_like_the_course_project() {
        assert_eq!(
            MetadataConfig::from_parts("sqlite", "./metadata.db").unwrap(),
            MetadataConfig::Sqlite {
                path: "./metadata.db".into()
            }
        );
        let c = ContentConfig::from_parts("nw", "localhost:8081, localhost:8090,").unwrap();
        assert_eq!(
            c,
            ContentConfig::Network {
                admin: NodeAddr::new("localhost:8081").unwrap(),
                nodes: vec![NodeAddr::new("localhost:8090").unwrap()],
            }
        );
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let cases: [(Result<()>, &str); 8] = [
            (
                "mysql:x".parse::<MetadataConfig>().map(drop),
                "unknown kind",
            ),
            ("sqlite:".parse::<MetadataConfig>().map(drop), "path"),
            ("etcd: , ".parse::<MetadataConfig>().map(drop), "endpoint"),
            ("sqlite".parse::<MetadataConfig>().map(drop), "KIND:OPTION"),
            (
                "s3:bucket".parse::<ContentConfig>().map(drop),
                "unknown kind",
            ),
            ("fs:".parse::<ContentConfig>().map(drop), "directory"),
            ("nw:".parse::<ContentConfig>().map(drop), "ADMIN_ADDR"),
            (
                "nw:localhost:8081,node".parse::<ContentConfig>().map(drop),
                "host:port",
            ),
        ];
        for (result, needle) in cases {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }
}
