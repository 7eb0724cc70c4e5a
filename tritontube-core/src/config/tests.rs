//! Merging config files into command lines: precedence, and every way a
//! file can be wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A config file holding `text`, in a directory that lives as long as the
/// returned guard.
fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tritontube.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn web(path: &Path, extra: &[&str]) -> Result<Loaded<WebArgs>, LoadError> {
    let mut argv = vec!["tritontube-web".to_string(), "--config".into()];
    argv.push(path.display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    load::<WebArgs, _>(argv)
}

fn problem(result: Result<Loaded<WebArgs>, LoadError>) -> (String, FileProblem) {
    match result {
        Err(LoadError::File(e)) => (e.to_string(), e.problem),
        Err(LoadError::Cli(e)) => panic!("expected a file error, got {e}"),
        Ok(l) => panic!("expected a file error, got {:?}", l.args),
    }
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_the_default() {
    let (_d, path) = file("port = 9000\nmax-upload-mb = 100\nhealth-interval = 0.25\n");
    let loaded = web(&path, &["--port", "9001"]).unwrap();
    assert_eq!(loaded.args.port, 9001, "the flag wins");
    assert_eq!(
        loaded.args.max_upload_mb, 100,
        "the file wins over the default"
    );
    assert_eq!(loaded.args.health_interval, Duration::from_millis(250));
    assert_eq!(loaded.args.cache_mb, 256, "the default where neither says");
    assert_eq!(loaded.file.as_deref(), Some(path.as_path()));
    assert!(loaded.warnings.is_empty());
}

#[test]
fn without_a_file_it_is_plain_clap() {
    let loaded = load::<WebArgs, _>(["tritontube-web", "--port", "1234"]).unwrap();
    assert_eq!(loaded.args.port, 1234);
    assert_eq!(loaded.file, None);
}

#[test]
fn switches_and_numbers_take_their_toml_types() {
    let (_d, path) = file("no-rereplicate = true\nrereplicate-after = 5\nworkers = 3\n");
    let args = web(&path, &[]).unwrap().args;
    assert!(args.no_rereplicate);
    assert_eq!(
        args.rereplicate_after,
        Duration::from_secs(5),
        "an integer is a number too"
    );
    assert_eq!(args.workers, 3);
    let (_d, path) = file("no-rereplicate = false\n");
    assert!(!web(&path, &[]).unwrap().args.no_rereplicate);
}

#[test]
fn an_unknown_key_names_the_file_the_key_and_the_closest_valid_one() {
    let (_d, path) = file("max-uplaod-mb = 100\n");
    let (text, p) = problem(web(&path, &[]));
    let FileProblem::UnknownKey {
        key,
        suggestion,
        valid,
    } = p
    else {
        panic!("{text}")
    };
    assert_eq!(key, "max-uplaod-mb");
    assert_eq!(suggestion.as_deref(), Some("max-upload-mb"));
    assert!(valid.contains(&"health-interval".to_string()));
    assert!(!valid.contains(&"config".to_string()));
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("did you mean `max-upload-mb`"), "{text}");
    // A section is not a key either.
    let (_d, path) = file("[web]\nport = 1\n");
    assert!(
        matches!(problem(web(&path, &[])).1, FileProblem::UnknownKey { key, suggestion: None, .. } if key == "web")
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_type_expected() {
    for (text, key, expected, found) in [
        ("port = \"8080\"", "port", "an integer", "string"),
        (
            "health-interval = \"fast\"",
            "health-interval",
            "a number",
            "string",
        ),
        (
            "no-rereplicate = 1",
            "no-rereplicate",
            "a boolean (true or false)",
            "integer",
        ),
        ("host = 127", "host", "a string", "integer"),
        (
            "metadata = [\"sqlite\", \"x\"]",
            "metadata",
            "a string",
            "array",
        ),
    ] {
        let (_d, path) = file(text);
        let (message, p) = problem(web(&path, &[]));
        let FileProblem::WrongType {
            key: k,
            expected: e,
            found: f,
        } = p
        else {
            panic!("{message}")
        };
        assert_eq!((k.as_str(), e, f), (key, expected, found), "{text}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[test]
fn a_value_the_flag_refuses_is_refused_in_the_file_too() {
    for (text, reason) in [
        ("port = 70000", "65535"),
        ("max-connections = 0", "not in 1.."),
        ("health-timeout = 0", "positive"),
        ("log-format = \"xml\"", "xml"),
        ("metadata = \"mysql:db\"", "unknown kind"),
        ("content = \"nw:localhost\"", "host:port"),
    ] {
        let (_d, path) = file(text);
        let (message, p) = problem(web(&path, &[]));
        assert!(matches!(p, FileProblem::BadValue { .. }), "{message}");
        assert!(message.contains(reason), "{text}: {message}");
    }
}

#[test]
fn a_missing_or_broken_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let (message, p) = problem(web(&missing, &[]));
    assert!(matches!(p, FileProblem::Read(_)), "{message}");
    assert!(message.contains("nope.toml"), "{message}");
    let (_d, path) = file("port = \n");
    let (message, p) = problem(web(&path, &[]));
    assert!(matches!(p, FileProblem::Syntax(_)), "{message}");
    assert!(message.contains("line 1"), "{message}");
}

#[test]
fn keys_that_exclude_each_other_are_refused_but_a_flag_overrides_its_rival() {
    let (_d, path) = file("admin-token = \"a\"\nadmin-token-file = \"t\"\n");
    let (message, p) = problem(web(&path, &[]));
    assert!(matches!(p, FileProblem::Conflict { .. }), "{message}");
    // The command line's --admin-token-file beats the file's admin-token.
    let (_d, path) = file("admin-token = \"from-file\"\n");
    let args = web(&path, &["--admin-token-file", "/run/token"])
        .unwrap()
        .args;
    assert_eq!(args.admin_token, None);
    assert_eq!(args.admin_token_file, Some(PathBuf::from("/run/token")));
}

#[test]
fn command_line_only_keys_are_refused() {
    for text in ["config = \"other.toml\"", "print-config = true"] {
        let (_d, path) = file(text);
        let (message, p) = problem(web(&path, &[]));
        assert!(
            matches!(p, FileProblem::CommandLineOnly { .. }),
            "{message}"
        );
    }
}

#[test]
fn stores_come_from_positionals_then_flags_or_file_then_the_default() {
    let (_d, path) = file("metadata = \"etcd:e1:2379,e2:2379\"\ncontent = \"fs:/srv/c\"\n");
    let args = web(&path, &[]).unwrap().args;
    let (m, c) = args.stores().unwrap();
    assert_eq!(m, "etcd:e1:2379,e2:2379".parse().unwrap());
    assert_eq!(
        c,
        ContentConfig::Local {
            dir: "/srv/c".into()
        }
    );
    // The course project's positional arguments win over the file.
    let args = web(
        &path,
        &["sqlite", "./m.db", "nw", "localhost:8081,localhost:8090"],
    )
    .unwrap()
    .args;
    let (m, c) = args.stores().unwrap();
    assert_eq!(m.to_string(), "sqlite:./m.db");
    assert_eq!(c.to_string(), "nw:localhost:8081,localhost:8090");
    // Neither: the embedded default under the data directory.
    let (_d, path) = file("data-dir = \"/srv/tube\"\n");
    let (m, c) = web(&path, &[]).unwrap().args.stores().unwrap();
    assert_eq!(m, MetadataConfig::embedded(Path::new("/srv/tube")));
    assert_eq!(c, ContentConfig::embedded(Path::new("/srv/tube")));
    // Two of four positionals are refused.
    let e = web(&path, &["sqlite", "./m.db"])
        .unwrap()
        .args
        .stores()
        .unwrap_err();
    assert!(e.to_string().contains("all four"), "{e}");
}

#[test]
fn a_required_positional_can_come_from_the_file() {
    let (_d, path) = file("base-dir = \"/srv/node\"\ncapacity-bytes = \"2G\"\n");
    let argv = |extra: &[&str]| {
        let mut v = vec!["tritontube-node".to_string(), "--config".into()];
        v.push(path.display().to_string());
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let args = load::<NodeArgs, _>(argv(&[])).unwrap().args;
    assert_eq!(args.base_dir, PathBuf::from("/srv/node"));
    assert_eq!(args.capacity_bytes.map(|c| c.0), Some(2_000_000_000));
    let args = load::<NodeArgs, _>(argv(&["/elsewhere"])).unwrap().args;
    assert_eq!(
        args.base_dir,
        PathBuf::from("/elsewhere"),
        "the command line wins"
    );
    // A byte count may be a plain integer too.
    let (_d2, bytes) = file("base-dir = \"n\"\ncapacity-bytes = 1000\n");
    let args = load::<NodeArgs, _>(["tritontube-node", "--config", bytes.to_str().unwrap()])
        .unwrap()
        .args;
    assert_eq!(args.capacity_bytes.map(|c| c.0), Some(1000));
    // Given nowhere: clap's own "required" error.
    let err = load::<NodeArgs, _>(["tritontube-node"]).unwrap_err();
    assert!(
        matches!(err, LoadError::Cli(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument)
    );
}

#[test]
fn the_effective_configuration_reads_back_as_the_same_configuration() {
    let (_d, path) = file("port = 9000\nno-rereplicate = true\nadmin-token = \"secret\"\n");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let loaded = web(
        &path,
        &["--max-uploads", "3", "sqlite", "./m.db", "fs", "./c"],
    )
    .unwrap();
    let effective = loaded.effective_web().unwrap();
    let text = effective.to_string();
    assert!(!text.contains("secret"), "{text}");
    assert!(text.contains("# admin-token is set (not shown)"), "{text}");
    assert_eq!(effective.table["port"].as_integer(), Some(9000));
    assert_eq!(effective.table["max-uploads"].as_integer(), Some(3));
    assert_eq!(effective.table["metadata"].as_str(), Some("sqlite:./m.db"));
    // Fed back as a config file, it gives the same configuration.
    let (_d2, again) = file(&text);
    let reloaded = web(&again, &[]).unwrap();
    assert_eq!(reloaded.effective_web().unwrap().table, effective.table);
}

#[test]
fn a_secret_in_a_file_every_user_can_read_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, path) = file("admin-token = \"secret\"\n");
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o644)).unwrap();
    let loaded = web(&path, &[]).unwrap();
    assert_eq!(loaded.args.admin_token.as_deref(), Some("secret"));
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0].contains("every user can read it"));
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o640)).unwrap();
    assert!(web(&path, &[]).unwrap().warnings.is_empty());
    // No secret, no warning.
    let (_d, path) = file("port = 1\n");
    std::fs::set_permissions(&path, PermissionsExt::from_mode(0o644)).unwrap();
    assert!(web(&path, &[]).unwrap().warnings.is_empty());
}

/// A command with global flags and subcommands, like `tritontube-admin`.
#[derive(Debug, clap::Parser)]
#[command(name = "tool")]
struct Tool {
    #[arg(long, global = true)]
    json: bool,
    #[arg(long, global = true, default_value = "text")]
    format: String,
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    List { server: String },
}

#[test]
fn global_flags_of_a_command_with_subcommands_come_from_the_file() {
    let (_d, path) = file("json = true\nformat = \"wide\"\n");
    let p = path.to_str().unwrap();
    for argv in [
        &["tool", "--config", p, "list", "s"][..],
        &["tool", "list", "--config", p, "s"],
    ] {
        let tool = load::<Tool, _>(argv).unwrap().args;
        assert!(tool.json, "{argv:?}");
        assert_eq!(tool.format, "wide", "{argv:?}");
        let Sub::List { server } = tool.command;
        assert_eq!(server, "s");
    }
    let tool = load::<Tool, _>(["tool", "list", "--format", "narrow", "--config", p, "s"])
        .unwrap()
        .args;
    assert_eq!(
        tool.format, "narrow",
        "a flag after the subcommand still wins"
    );
}

#[test]
fn the_example_files_shipped_in_deploy_are_valid() {
    let (_d, web_file) = file(include_str!("../../../deploy/tritontube-web.toml"));
    let args = web(&web_file, &[]).unwrap().args;
    let (m, c) = args.stores().unwrap();
    assert_eq!(m.kind(), "etcd");
    assert!(matches!(c, ContentConfig::Network { ref nodes, .. } if nodes.len() == 3));
    let (_d, node_file) = file(include_str!("../../../deploy/tritontube-node.toml"));
    let node = load::<NodeArgs, _>(["tritontube-node", "--config", node_file.to_str().unwrap()])
        .unwrap()
        .args;
    assert_eq!(node.base_dir, PathBuf::from("/var/lib/tritontube/node"));
    // The admin tool's file is checked against its own flags in
    // tritontube-admin's tests; here, only that it is TOML.
    let admin: toml::Table = include_str!("../../../deploy/tritontube-admin.toml")
        .parse()
        .unwrap();
    assert!(admin.contains_key("token-file"));
}
