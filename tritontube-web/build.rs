//! Builds dash.js (the browser's DASH player) into `tritontube-web`, so the
//! binary alone serves a working watch page wherever it is started.
//!
//! dash.js comes from the npm package `dashjs`, pinned by the workspace's
//! `package-lock.json` and installed by `npm ci` (never committed, never from
//! a CDN). The build looks for `node_modules/dashjs/dist/modern/umd/` in the
//! workspace root (or in `TRITONTUBE_DASHJS_DIR`, if set), checks that the
//! installed version is the locked one, and stops with what to do if not.

use std::path::{Path, PathBuf};

/// Where the `dashjs` package keeps its browser bundle.
const PACKAGE_DIR: &str = "node_modules/dashjs/dist/modern/umd";
const FILES: [(&str, &str); 2] = [
    ("TRITONTUBE_DASH_JS", "dash.all.min.js"),
    ("TRITONTUBE_DASH_JS_LICENSE", "dash.all.min.js.LICENSE.txt"),
];

fn main() {
    println!("cargo::rerun-if-env-changed=TRITONTUBE_DASHJS_DIR");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let dir = match std::env::var_os("TRITONTUBE_DASHJS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            check_locked_version(&workspace);
            workspace.join(PACKAGE_DIR)
        }
    };
    for (var, name) in FILES {
        let path = dir.join(name);
        println!("cargo::rerun-if-changed={}", path.display());
        if !path.is_file() {
            fail(&format!(
                "dash.js is not installed: run `npm ci` in {} first (it installs the pinned \
                 `dashjs` package, which tritontube-web builds in), or set TRITONTUBE_DASHJS_DIR \
                 to a directory holding {}. Missing: {}",
                workspace.display(),
                FILES.map(|(_, n)| n).join(" and "),
                path.display(),
            ));
        }
        println!("cargo::rustc-env={var}={}", path.display());
    }
}

/// Stops the build if `node_modules` holds another `dashjs` than the one
/// `package-lock.json` pins (a stale install would be built in silently).
fn check_locked_version(workspace: &Path) {
    let lock = workspace.join("package-lock.json");
    let installed = workspace.join("node_modules/dashjs/package.json");
    println!("cargo::rerun-if-changed={}", lock.display());
    println!("cargo::rerun-if-changed={}", installed.display());
    let (Ok(lock_text), Ok(installed_text)) = (
        std::fs::read_to_string(&lock),
        std::fs::read_to_string(&installed),
    ) else {
        return; // a missing file is reported by the caller, with what to do
    };
    let locked = lock_text
        .find("\"node_modules/dashjs\"")
        .and_then(|at| version(&lock_text[at..]));
    let have = version(&installed_text);
    if let (Some(locked), Some(have)) = (locked, have)
        && locked != have
    {
        fail(&format!(
            "node_modules holds dashjs {have}, but package-lock.json pins {locked}: \
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
