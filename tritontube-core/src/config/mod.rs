//! What an operator can tell the binaries, on the command line or in a TOML
//! config file, and the typed values it becomes.
//!
//! # Config files
//!
//! Every binary takes `--config FILE` (or an environment variable:
//! `TRITONTUBE_WEB_CONFIG`, `TRITONTUBE_NODE_CONFIG`,
//! `TRITONTUBE_ADMIN_CONFIG`). The file's keys are exactly the long flag
//! names, kebab-case, with TOML types:
//!
//! ```toml
//! port = 8080
//! max-upload-mb = 100
//! health-interval = 0.5
//! no-rereplicate = false
//! metadata = "etcd:etcd-1:2379,etcd-2:2379"
//! ```
//!
//! Precedence, per key: a flag on the command line, then the flag's
//! environment variable (where it has one), then the file, then the
//! default. A flag also wins over a file key it conflicts with
//! (`--admin-token` on the command line over `admin-token-file` in the
//! file).
//!
//! A file is checked before anything starts, and every problem names the
//! file and the key: an unknown key (with the closest valid one and the
//! full list), a value of the wrong TOML type (with the type expected), a
//! value the flag itself would refuse (same check as on the command line,
//! e.g. a port over 65535), two keys that exclude each other, a file that
//! is missing, unreadable or not TOML. See [`FileProblem`].
//!
//! The file is merged *through* clap: every value is turned into the text
//! of its flag and parsed by the flag's own value parser, so a value means
//! exactly what it means on the command line and there is one definition
//! of each setting (its `#[arg]`), not a second one for files.
//!
//! # Typed choices
//!
//! [`MetadataConfig`] and [`ContentConfig`] are the web server's store
//! choices, parsed once from `KIND:OPTION` (a flag or a file key) or from
//! the course project's four positional arguments. [`WebArgs`] and
//! [`NodeArgs`] are the web server's and the storage node's command lines.

mod file;
mod node;
mod stores;
mod web;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgMatches, Command, Parser};

pub use file::{Effective, FileError, FileProblem};
pub use node::NodeArgs;
pub use stores::{ContentConfig, MetadataConfig};
pub use web::{UserArgs, UserCommand, WebArgs};

/// The id of the argument naming the config file, in every binary.
const CONFIG_ARG: &str = "config";

/// A parsed command line, merged with its config file.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The merged arguments.
    pub args: T,
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// Things worth a warning that did not stop the start (e.g. a secret in
    /// a file every user can read). Log them once logging is set up.
    pub warnings: Vec<String>,
    command: Command,
    matches: ArgMatches,
}

impl<T> Loaded<T> {
    /// The effective configuration (command line over file over defaults)
    /// as TOML keys, secrets left out; see [`Effective`].
    pub fn effective(&self) -> Effective {
        file::effective(&self.command, &self.matches)
    }

    /// Logs [`Loaded::warnings`] (call after logging is set up).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!("{w}");
        }
    }
}

/// Why a command line with its config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The command line itself (or a request for `--help` / `--version`):
    /// [`clap::Error::exit`] prints it the usual way.
    #[error(transparent)]
    Cli(#[from] clap::Error),
    /// The config file.
    #[error(transparent)]
    File(#[from] FileError),
}

/// Parses `argv` (program name first) as `T`, merged with the config file
/// that `--config` or its environment variable names.
///
/// `T` should have an argument with id `config` holding a path; without
/// one, this is plain clap parsing.
pub fn load<T, I>(argv: I) -> Result<Loaded<T>, LoadError>
where
    T: Parser,
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let mut command = T::command();
    command.build();
    // First pass: what the command line and environment say, without
    // insisting on required arguments the file may still supply.
    let given = file::relaxed(&command).try_get_matches_from(&argv)?;
    let path = given
        .try_get_one::<PathBuf>(CONFIG_ARG)
        .ok()
        .flatten()
        .cloned();
    let (argv, warnings) = match &path {
        None => (argv, Vec::new()),
        Some(path) => {
            let merged = file::merge(&command, &given, path, argv)?;
            (merged.argv, merged.warnings)
        }
    };
    let matches = command.clone().try_get_matches_from(&argv)?;
    let args = T::from_arg_matches(&matches)?;
    Ok(Loaded {
        args,
        file: path,
        warnings,
        command,
        matches,
    })
}

/// [`load`] on the process's own arguments; on an error, prints it and
/// exits with status 2 (clap's own errors, `--help` and `--version` exit
/// the way clap does).
pub fn load_or_exit<T: Parser>() -> Loaded<T> {
    match load::<T, _>(std::env::args_os()) {
        Ok(loaded) => loaded,
        Err(LoadError::Cli(e)) => e.exit(),
        Err(LoadError::File(e)) => {
            eprintln!("{}: {e}", T::command().get_name());
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests;
