//! Reading a TOML config file into a command line: keys checked against the
//! command's own arguments, values checked by each flag's own parser, and
//! the result written as flags in front of what was typed (so that what
//! was typed still wins).

use std::any::TypeId;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::store::ByteSize;

/// Arguments a file may not set: the file's own name, and what only makes
/// sense typed by hand.
const NOT_IN_FILE: &[&str] = &["config", "print-config"];

/// What went wrong with a config file; see [`FileError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileProblem {
    /// Missing, unreadable, not UTF-8.
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    /// Not TOML (the message shows the line and column).
    #[error("it is not valid TOML: {0}")]
    Syntax(String),
    /// A key that is no flag of this program.
    #[error("unknown key `{key}`{}; valid keys: {}", suggestion_text(.suggestion), .valid.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The valid key closest to it, if one is close.
        suggestion: Option<String>,
        /// Every valid key.
        valid: Vec<String>,
    },
    /// A flag that only makes sense on the command line.
    #[error("`{key}` can only be given on the command line")]
    CommandLineOnly {
        /// The key as written.
        key: String,
    },
    /// A value of the wrong TOML type.
    #[error("`{key}` must be {expected}, not {}", with_article(.found))]
    WrongType {
        /// The key.
        key: String,
        /// The type it takes.
        expected: &'static str,
        /// The TOML type given (`string`, `integer`, `float`, `boolean`,
        /// `array`, `table`, `datetime`).
        found: &'static str,
    },
    /// A value of the right type that the flag refuses (out of range, not
    /// one of the choices, ...).
    #[error("`{key}` = {value} is not valid: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value, as written in TOML.
        value: String,
        /// Why the flag refuses it.
        reason: String,
    },
    /// Two keys that exclude each other.
    #[error("`{first}` and `{second}` cannot both be set")]
    Conflict {
        /// One key.
        first: String,
        /// The other.
        second: String,
    },
}

fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

fn suggestion_text(s: &Option<String>) -> String {
    s.as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// A config file that was refused, and why. Nothing is started.
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {problem}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: FileProblem,
}

/// The TOML type a key takes, from its argument's action and value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A flag without a value (`--no-rereplicate`): a boolean.
    Switch,
    /// A flag taking `true` or `false`.
    Bool,
    /// An integer.
    Integer,
    /// A number (an integer is fine too).
    Number,
    /// A byte count: an integer, or a string with a unit (`"500G"`).
    Size,
    /// Anything else: a string.
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            return Kind::Switch;
        }
        let t = arg.get_value_parser().type_id();
        let any = |ids: &[TypeId]| ids.iter().any(|id| t == *id);
        if t == TypeId::of::<bool>() {
            Kind::Bool
        } else if any(&[
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
        ]) {
            Kind::Integer
        } else if any(&[
            TypeId::of::<f64>(),
            TypeId::of::<f32>(),
            TypeId::of::<Duration>(),
        ]) {
            Kind::Number
        } else if t == TypeId::of::<ByteSize>() {
            Kind::Size
        } else {
            Kind::Text
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Switch | Kind::Bool => "a boolean (true or false)",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Size => "a byte count (an integer, or a string such as \"500G\")",
            Kind::Text => "a string",
        }
    }

    /// A TOML value as flag text, or `None` if it has the wrong type.
    fn text(self, v: &toml::Value) -> Option<String> {
        use toml::Value as V;
        match (self, v) {
            (Kind::Switch | Kind::Bool, V::Boolean(b)) => Some(b.to_string()),
            (Kind::Integer | Kind::Number | Kind::Size, V::Integer(i)) => Some(i.to_string()),
            (Kind::Number, V::Float(f)) => Some(f.to_string()),
            (Kind::Size | Kind::Text, V::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Flag text as a TOML value (for printing the effective configuration).
    fn toml(self, raw: &str) -> toml::Value {
        use toml::Value as V;
        let typed = match self {
            Kind::Switch | Kind::Bool => raw.parse().ok().map(V::Boolean),
            Kind::Integer | Kind::Size => raw.parse().ok().map(V::Integer),
            Kind::Number => raw.parse().ok().map(V::Float),
            Kind::Text => None,
        };
        typed.unwrap_or_else(|| V::String(raw.to_string()))
    }
}

/// The file key of an argument: its long flag, or a single positional's
/// name in kebab-case. `None` for what no file may set (help, version,
/// positionals taking several values).
fn key_of(arg: &Arg) -> Option<String> {
    if matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    ) {
        return None;
    }
    if arg.is_positional() {
        let single = arg.get_num_args().is_none_or(|r| r.max_values() <= 1);
        return single.then(|| arg.get_id().as_str().replace('_', "-"));
    }
    arg.get_long().map(str::to_string)
}

/// The command with every argument optional: what the command line says
/// before the file has had its say.
pub(super) fn relaxed(command: &Command) -> Command {
    command
        .clone()
        .mut_args(|a| a.required(false))
        .subcommand_required(false)
}

/// Whether `arg` was set on the command line or by its environment
/// variable (both beat the file).
fn explicit(given: &ArgMatches, arg: &Arg) -> bool {
    matches!(
        given.value_source(arg.get_id().as_str()),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// Whether `a` and `b` may not be given together (declared either way).
fn excludes(command: &Command, a: &Arg, b: &Arg) -> bool {
    let declared = |x: &Arg, y: &Arg| {
        command
            .get_arg_conflicts_with(x)
            .iter()
            .any(|c| c.get_id() == y.get_id())
    };
    declared(a, b) || declared(b, a)
}

/// The settable arguments of a command, by key.
struct Keys<'c>(Vec<(String, &'c Arg)>);

impl<'c> Keys<'c> {
    fn of(command: &'c Command) -> Self {
        Keys(
            command
                .get_arguments()
                .filter_map(|a| key_of(a).map(|k| (k, a)))
                .filter(|(k, _)| !NOT_IN_FILE.contains(&k.as_str()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Result<&'c Arg, FileProblem> {
        if let Some((_, arg)) = self.0.iter().find(|(k, _)| k == key) {
            return Ok(arg);
        }
        if NOT_IN_FILE.contains(&key) {
            return Err(FileProblem::CommandLineOnly { key: key.into() });
        }
        // The same measure and threshold clap uses for misspelt flags.
        let suggestion = self
            .0
            .iter()
            .map(|(k, _)| (strsim::jaro(key, k), k))
            .filter(|(score, _)| *score > 0.7)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.clone());
        Err(FileProblem::UnknownKey {
            key: key.into(),
            suggestion,
            valid: self.0.iter().map(|(k, _)| k.clone()).collect(),
        })
    }
}

/// A file value as flag text, checked by the flag's own parser.
fn checked_text(
    command: &Command,
    arg: &Arg,
    key: &str,
    value: &toml::Value,
) -> Result<String, FileProblem> {
    let kind = Kind::of(arg);
    let text = kind.text(value).ok_or_else(|| FileProblem::WrongType {
        key: key.into(),
        expected: kind.expected(),
        found: value.type_str(),
    })?;
    if kind == Kind::Switch {
        return Ok(text);
    }
    let mut argv = vec![OsString::from(command.get_name())];
    if arg.is_positional() {
        argv.extend(["--".into(), text.clone().into()]);
    } else {
        argv.push(format!("--{key}={text}").into());
    }
    match relaxed(command).try_get_matches_from(argv) {
        Ok(_) => Ok(text),
        Err(e) => Err(FileProblem::BadValue {
            key: key.into(),
            value: value.to_string(),
            reason: reason(&e),
        }),
    }
}

/// Why clap refused a value: the parser's own error where there is one.
fn reason(e: &clap::Error) -> String {
    use std::error::Error as _;
    match e.source() {
        Some(s) => s.to_string(),
        None => e
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string(),
    }
}

/// A command line with a config file's settings added.
pub(super) struct Merged {
    /// Program name, the file's settings as flags, then what was typed.
    pub(super) argv: Vec<OsString>,
    /// See [`super::Loaded::warnings`].
    pub(super) warnings: Vec<String>,
}

/// Reads the file at `path` and adds its settings to `argv`, except those
/// the command line or environment (`given`) already set.
pub(super) fn merge(
    command: &Command,
    given: &ArgMatches,
    path: &Path,
    argv: Vec<OsString>,
) -> Result<Merged, FileError> {
    let fail = |problem| FileError {
        path: path.to_path_buf(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(FileProblem::Read(e)))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| fail(FileProblem::Syntax(e.to_string())))?;
    let keys = Keys::of(command);
    let mut taken: Vec<(&str, &Arg)> = Vec::new();
    let (mut flags, mut positionals, mut secrets) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in &table {
        let arg = keys.get(key).map_err(fail)?;
        let text = checked_text(command, arg, key, value).map_err(fail)?;
        if arg.is_hide_env_values_set() {
            secrets.push(key.as_str());
        }
        let wins = |other: &Arg| {
            explicit(given, other)
                && (other.get_id() == arg.get_id() || excludes(command, arg, other))
        };
        if command.get_arguments().any(wins) {
            continue;
        }
        if let Some((other, _)) = taken.iter().find(|(_, t)| excludes(command, arg, t)) {
            return Err(fail(FileProblem::Conflict {
                first: (*other).to_string(),
                second: key.clone(),
            }));
        }
        taken.push((key, arg));
        match (Kind::of(arg), arg.get_action()) {
            (Kind::Switch, ArgAction::SetTrue) if text == "true" => flags.push(format!("--{key}")),
            (Kind::Switch, ArgAction::SetFalse) if text == "false" => {
                flags.push(format!("--{key}"))
            }
            (Kind::Switch, _) => {}
            _ if arg.is_positional() => positionals.push(text),
            _ => flags.push(format!("--{key}={text}")),
        }
    }
    let mut out: Vec<OsString> = argv.iter().take(1).cloned().collect();
    out.extend(flags.into_iter().map(OsString::from));
    let typed_separator = argv.iter().skip(1).any(|a| a == "--");
    out.extend(argv.into_iter().skip(1));
    if !positionals.is_empty() && !typed_separator {
        out.push("--".into());
    }
    out.extend(positionals.into_iter().map(OsString::from));
    Ok(Merged {
        argv: out,
        warnings: secret_warnings(path, &secrets),
    })
}

/// A warning if the file holds secrets and every user may read it.
fn secret_warnings(path: &Path, secrets: &[&str]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o777,
        Err(_) => return Vec::new(),
    };
    if secrets.is_empty() || mode & 0o004 == 0 {
        return Vec::new();
    }
    vec![format!(
        "config file {} holds `{}` and every user can read it (mode {mode:o}): \
         `chmod o-r` it, or keep the secret in a file of its own (see `{}-file`)",
        path.display(),
        secrets.join("`, `"),
        secrets[0],
    )]
}

/// The effective configuration: every setting with a value, as the TOML a
/// config file would hold (`toml` table order follows the flags), secrets
/// left out and only named.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// Settings by key.
    pub table: toml::Table,
    /// Keys of secrets that are set (their values are not shown).
    pub secrets: Vec<String>,
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.secrets {
            writeln!(f, "# {s} is set (not shown)")?;
        }
        write!(f, "{}", self.table)
    }
}

/// The effective configuration of a parsed command line.
pub(super) fn effective(command: &Command, matches: &ArgMatches) -> Effective {
    let mut out = Effective {
        table: toml::Table::new(),
        secrets: Vec::new(),
    };
    for (key, arg) in Keys::of(command).0 {
        let Some(raw) = matches
            .get_raw(arg.get_id().as_str())
            .and_then(|mut v| v.next())
        else {
            continue;
        };
        if arg.is_hide_env_values_set() {
            out.secrets.push(key);
        } else {
            let value = Kind::of(arg).toml(&raw.to_string_lossy());
            out.table.insert(key, value);
        }
    }
    out
}
