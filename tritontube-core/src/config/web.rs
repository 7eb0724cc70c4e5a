//! The web server's command line (`tritontube-web`), and its parts that
//! need more than a flag's own parser.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use super::{ContentConfig, Effective, Loaded, MetadataConfig};
use crate::error::{Error, Result};
use crate::shutdown::LogFormat;
use crate::web::Assets;

/// The TritonTube web server.
///
/// Every flag can also be set in a TOML config file (`--config FILE`),
/// under its long name: `port = 8080`, `max-upload-mb = 100`,
/// `metadata = "sqlite:./metadata.db"`. A flag on the command line wins
/// over the file, and the file over the default.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tritontube-web",
    version,
    about,
    after_help = "Accounts: `tritontube-web user add NAME [--admin]`, `user passwd NAME`, \
                  `user list` (see `tritontube-web user --help`)."
)]
pub struct WebArgs {
    /// Host to listen on.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Where this server keeps its files: the embedded default stores,
    /// the admin token, its server id, and uploads until their job ends
    /// (one directory per web server).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Copies kept of every file, with `nw` content (used when the cluster is first set up).
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// Virtual nodes per storage node (1 places files exactly as the course project does).
    #[arg(long, default_value_t = crate::ring::DEFAULT_VNODES)]
    pub vnodes: u32,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_upload_mb: u64,
    /// Transcodes running at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub workers: u32,
    /// Shared secret for the admin services and for DELETE. Prefer the
    /// environment variable or --admin-token-file: a value given here is
    /// visible to every user in `ps`. Without any, one is made on first
    /// start and kept in DATA_DIR/admin-token (mode 0600).
    #[arg(long, env = "TRITONTUBE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (first line).
    #[arg(long, conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// Serve dash.js from this directory (holding dash.all.min.js, e.g.
    /// node_modules/dashjs/dist/modern/umd) instead of the copy built in.
    #[arg(long, value_name = "DIR", value_parser = assets_dir)]
    pub assets: Option<Assets>,
    /// Let anyone upload without signing in, as the course project did.
    /// Without it, uploading needs a signed-in user; editing and deleting
    /// a video always needs its uploader or an admin.
    #[arg(long)]
    pub public_uploads: bool,
    /// Seconds between health checks of each storage node.
    #[arg(long, default_value = "0.5", value_parser = seconds)]
    pub health_interval: Duration,
    /// Seconds a health check may take before it counts as failed (catches
    /// a node that accepts connections but never answers).
    #[arg(long, default_value = "1", value_parser = seconds)]
    pub health_timeout: Duration,
    /// Seconds a storage node may stay down before its files are copied
    /// again from the surviving replicas, so every file is back to the
    /// replica count.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub rereplicate_after: Duration,
    /// Never re-replicate automatically (copies written while a node was
    /// down are still handed back when it returns).
    #[arg(long)]
    pub no_rereplicate: bool,
    /// MiB of small content files (segments, posters, manifests) kept in
    /// memory; 0 turns the cache off.
    #[arg(long, default_value_t = 256)]
    pub cache_mb: u64,
    /// Seconds a client may take to send a request's headers (from
    /// connecting, or from the first byte of a later request on a kept-alive
    /// connection); slower connections are closed.
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub header_timeout_secs: Duration,
    /// Seconds a kept-alive connection may sit idle between requests before
    /// it is closed.
    #[arg(long, default_value = "60", value_parser = seconds)]
    pub idle_timeout_secs: Duration,
    /// Connections open at once. At the cap a new connection closes the one
    /// idle (or sending headers) the longest; if all have a request in
    /// progress, it is answered 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Uploads in progress at once; beyond it, 503 with Retry-After.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads: u32,
    /// Uploads in progress at once from one client IP address; beyond it,
    /// 429 with Retry-After.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uploads_per_client: u32,
    /// Seconds an upload job's lease lasts without renewal: after a web
    /// server stops, another one (or the same one restarted, at once) takes
    /// its unfinished uploads and deletions over after this long.
    #[arg(long, default_value = "30", value_parser = seconds)]
    pub job_lease_secs: Duration,
    /// Hours a resumable (tus) upload is kept unfinished after its creation
    /// or its last PATCH; then it and its bytes are removed (fractions
    /// allowed: 0.5 is half an hour).
    #[arg(long, default_value = "24", value_parser = hours)]
    pub tus_expiry_hours: Duration,
    /// Log lines as human-readable `text` or `json` (one object per line).
    #[arg(long, value_name = "text|json", env = "TRITONTUBE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Metadata store, `sqlite:PATH` or `etcd:HOST:PORT,...` (instead of
    /// the first two positional arguments). Default: SQLite in DATA_DIR.
    #[arg(long, value_name = "KIND:OPTION", conflicts_with = "stores")]
    pub metadata: Option<MetadataConfig>,
    /// Content store, `fs:DIR` or `nw:ADMIN_ADDR,NODE,NODE...` (instead of
    /// the last two positional arguments). Default: a directory in DATA_DIR.
    #[arg(long, value_name = "KIND:OPTION", conflicts_with = "stores")]
    pub content: Option<ContentConfig>,
    /// A TOML file setting any of these flags by long name (flags given
    /// here win over it).
    #[arg(long, value_name = "FILE", env = "TRITONTUBE_WEB_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (secrets left out) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// METADATA_KIND METADATA_OPTION CONTENT_KIND CONTENT_OPTION, e.g.
    /// `sqlite ./metadata.db nw "localhost:8081,localhost:8090"`.
    #[arg(num_args = 0..=4, value_names = ["METADATA_KIND", "METADATA_OPTION", "CONTENT_KIND", "CONTENT_OPTION"])]
    pub stores: Vec<String>,
}

/// Manages the accounts in the metadata store the web server is configured
/// with (`tritontube-web user ...`). Passwords are read from standard input
/// (one line), or asked for on the terminal without echo; never from the
/// command line, where every user could see them in `ps`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tritontube-web user",
    bin_name = "tritontube-web user",
    version
)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
    /// The web server's data directory (its default SQLite store is here).
    #[arg(long, default_value = "./data", global = true)]
    pub data_dir: PathBuf,
    /// The metadata store, `sqlite:PATH` or `etcd:HOST:PORT,...`, as given
    /// to the web server. Default: the one `--config` names, else SQLite in
    /// DATA_DIR.
    #[arg(long, value_name = "KIND:OPTION", global = true)]
    pub metadata: Option<MetadataConfig>,
    /// The web server's TOML config file, to find its metadata store.
    #[arg(
        long,
        value_name = "FILE",
        env = "TRITONTUBE_WEB_CONFIG",
        global = true
    )]
    pub config: Option<PathBuf>,
}

/// An account command.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Creates an account (its password is read from stdin or the terminal).
    Add {
        /// Its name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Make it an admin (may edit and delete every video).
        #[arg(long)]
        admin: bool,
    },
    /// Sets an account's password (read from stdin or the terminal).
    Passwd {
        /// The account's name.
        name: String,
    },
    /// Lists the accounts: name, role, creation time.
    List,
}

impl UserArgs {
    /// Parses `argv` (`user` first); on an error (or `--help`), prints it
    /// and exits as clap does.
    pub fn parse_or_exit<I, T>(argv: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Self as Parser>::parse_from(argv)
    }

    /// The metadata store to work on: `--metadata`, else the one the
    /// config file sets, else SQLite in `--data-dir`.
    pub fn metadata(&self) -> Result<MetadataConfig> {
        if let Some(m) = &self.metadata {
            return Ok(m.clone());
        }
        if let Some(path) = &self.config {
            let argv = [
                std::ffi::OsString::from("tritontube-web"),
                "--config".into(),
                path.into(),
            ];
            let loaded = super::load::<WebArgs, _>(argv).map_err(|e| {
                Error::invalid("config file", path.display().to_string(), e.to_string())
            })?;
            return Ok(loaded.args.stores()?.0);
        }
        Ok(MetadataConfig::embedded(&self.data_dir))
    }
}

/// dash.js read from a directory (checked, and read, when the command line
/// is parsed, so a wrong directory is named as `--assets`).
fn assets_dir(s: &str) -> Result<Assets> {
    Assets::from_dir(std::path::Path::new(s))
}

/// A positive number of seconds (`0.5`, `60`).
fn seconds(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {s:?}"))?;
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("must be a positive number of seconds, got {s}"))
}

/// A positive number of hours (`0.5`, `24`).
fn hours(s: &str) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("expected a number of hours, got {s:?}"))?;
    Duration::try_from_secs_f64(v * 3600.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("must be a positive number of hours, got {s}"))
}

impl WebArgs {
    /// The metadata and content stores: from the four positional
    /// arguments, else `--metadata` / `--content`, else the embedded
    /// defaults under `--data-dir`.
    pub fn stores(&self) -> Result<(MetadataConfig, ContentConfig)> {
        match self.stores.as_slice() {
            [mk, mo, ck, co] => Ok((
                MetadataConfig::from_parts(mk, mo)?,
                ContentConfig::from_parts(ck, co)?,
            )),
            [] => Ok((
                self.metadata
                    .clone()
                    .unwrap_or_else(|| MetadataConfig::embedded(&self.data_dir)),
                self.content
                    .clone()
                    .unwrap_or_else(|| ContentConfig::embedded(&self.data_dir)),
            )),
            given => Err(Error::invalid(
                "store arguments",
                given.join(" "),
                "give all four of METADATA_KIND METADATA_OPTION CONTENT_KIND CONTENT_OPTION, or none",
            )),
        }
    }

    /// The admin token as given: by flag, environment or config file, or
    /// in the file `--admin-token-file` names (first line). `None`: the
    /// server keeps its own in the data directory.
    pub fn admin_token(&self) -> Result<Option<String>> {
        if let Some(t) = &self.admin_token {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.admin_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid(
                "admin token file",
                path.display().to_string(),
                format!("cannot read it: {e}"),
            )
        })?;
        match text.lines().next().map(str::trim) {
            Some(t) if !t.is_empty() => Ok(Some(t.to_string())),
            _ => Err(Error::invalid(
                "admin token file",
                path.display().to_string(),
                "its first line is empty",
            )),
        }
    }
}

impl Loaded<WebArgs> {
    /// [`Loaded::effective`], with the stores as resolved (`metadata` and
    /// `content` keys, whether given by flag, positional arguments, file
    /// or default).
    pub fn effective_web(&self) -> Result<Effective> {
        let mut e = self.effective();
        let (metadata, content) = self.args.stores()?;
        e.table
            .insert("metadata".into(), metadata.to_string().into());
        e.table.insert("content".into(), content.to_string().into());
        Ok(e)
    }
}
