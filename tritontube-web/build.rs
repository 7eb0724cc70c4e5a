//! Builds the browser players into `tritontube-web`, so the binary alone
//! serves a working watch page wherever it is started: dash.js (the DASH
//! player of the watch page) and hls.js (an HLS player, served for pages
//! that play the HLS playlists); and tus-js-client, the home page's
//! resumable uploads.
//!
//! They come from the npm packages `dashjs`, `hls.js` and `tus-js-client`, pinned by the
//! workspace's `package-lock.json` and installed by `npm ci` (never
//! committed, never from a CDN). The build looks for each package's files
//! under `node_modules/` in the workspace root (or in the directory an
//! environment variable names, if set), checks that the installed version is
//! the locked one, and stops with what to do if not.

use std::path::{Path, PathBuf};

/// One npm package built in.
struct Package {
    /// Its npm name.
    name: &'static str,
    /// What it is, for error messages.
    what: &'static str,
    /// Where it keeps the files below, from the workspace root.
    dir: &'static str,
    /// The variable naming another directory holding them.
    dir_var: &'static str,
    /// `(variable set for the compiler, file name)`.
    files: [(&'static str, &'static str); 2],
}

const PACKAGES: [Package; 3] = [
    Package {
        name: "dashjs",
        what: "dash.js",
        dir: "node_modules/dashjs/dist/modern/umd",
        dir_var: "TRITONTUBE_DASHJS_DIR",
        files: [
            ("TRITONTUBE_DASH_JS", "dash.all.min.js"),
            ("TRITONTUBE_DASH_JS_LICENSE", "dash.all.min.js.LICENSE.txt"),
        ],
    },
    Package {
        name: "hls.js",
        what: "hls.js",
        dir: "node_modules/hls.js",
        dir_var: "TRITONTUBE_HLSJS_DIR",
        files: [
            ("TRITONTUBE_HLS_JS", "dist/hls.min.js"),
            ("TRITONTUBE_HLS_JS_LICENSE", "LICENSE"),
        ],
    },
    Package {
        name: "tus-js-client",
        what: "tus-js-client",
        dir: "node_modules/tus-js-client",
        dir_var: "TRITONTUBE_TUSJS_DIR",
        files: [
            ("TRITONTUBE_TUS_JS", "dist/tus.min.js"),
            ("TRITONTUBE_TUS_JS_LICENSE", "LICENSE"),
        ],
    },
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().unwrap_or(&manifest).to_path_buf();
    for package in &PACKAGES {
        embed(package, &workspace);
    }
}

/// Finds `package`'s files and names them to the compiler, or stops the
/// build saying what to do.
fn embed(package: &Package, workspace: &Path) {
    println!("cargo::rerun-if-env-changed={}", package.dir_var);
    let dir = match std::env::var_os(package.dir_var) {
        Some(d) => PathBuf::from(d),
        None => {
            check_locked_version(workspace, package.name);
            workspace.join(package.dir)
        }
    };
    for (var, name) in package.files {
        let path = dir.join(name);
        println!("cargo::rerun-if-changed={}", path.display());
        if !path.is_file() {
            fail(&format!(
                "{what} is not installed: run `npm ci` in {} first (it installs the pinned \
                 `{npm}` package, which tritontube-web builds in), or set {var} \
                 to a directory holding {}. Missing: {}",
                workspace.display(),
                package.files.map(|(_, n)| n).join(" and "),
                path.display(),
                what = package.what,
                npm = package.name,
                var = package.dir_var,
            ));
        }
        println!("cargo::rustc-env={var}={}", path.display());
    }
}

/// Stops the build if `node_modules` holds another version of `package`
/// than the one `package-lock.json` pins (a stale install would be built in
/// silently).
fn check_locked_version(workspace: &Path, package: &str) {
    let lock = workspace.join("package-lock.json");
    let installed = workspace.join(format!("node_modules/{package}/package.json"));
    println!("cargo::rerun-if-changed={}", lock.display());
    println!("cargo::rerun-if-changed={}", installed.display());
    let (Ok(lock_text), Ok(installed_text)) = (
        std::fs::read_to_string(&lock),
        std::fs::read_to_string(&installed),
    ) else {
        return; // a missing file is reported by the caller, with what to do
    };
    let locked = lock_text
        .find(&format!("\"node_modules/{package}\""))
        .and_then(|at| version(&lock_text[at..]));
    let have = version(&installed_text);
    if let (Some(locked), Some(have)) = (locked, have)
        && locked != have
    {
        fail(&format!(
            "node_modules holds {package} {have}, but package-lock.json pins {locked}: \
             run `npm ci` in {} first.",
            workspace.display()
        ));
    }
}

/// The first `"version": "..."` value in `json`.
fn version(json: &str) -> Option<&str> {
    let rest = &json[json.find("\"version\"")? + "\"version\"".len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(&rest[..rest.find('"')?])
}

/// Fails the build with `message` (shown by cargo as a plain `error:`).
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(0);
}
