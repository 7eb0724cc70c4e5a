//! The library's modules form layers, each importing only from the layers
//! below it: no cycles, no upward imports. A new `use crate::...` that
//! breaks the order fails here, naming the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use any module of a lower layer; within a
/// layer, only what [`SIDEWAYS`] allows.
const LAYERS: &[&[&str]] = &[
    &["error", "proto", "testing", "shutdown"],
    &["id"],
    &["ring"],
    &["layout"],
    &["store"],
    &["metadata"],
    &["node"],
    &["cluster"],
    &["ingest"],
    &["admin", "web"],
    &["config"],
    &["server"],
];

/// Imports allowed within one layer (user, used).
const SIDEWAYS: &[(&str, &str)] = &[("web", "admin")];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (name != "lib").then_some(name)
}

/// `crate::<module>` references in code (comments and doc comments aside).
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn references_are_read_from_code_only() {
    let text = "use crate::cluster::Nodes;\n/// See [`crate::web`].\nlet x = crate::store::CHUNK; // crate::ingest\n";
    assert_eq!(
        references(text),
        [(1, "cluster".to_string()), (3, "store".to_string())]
    );
}

#[test]
fn modules_import_only_from_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut graph: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(&src, f) else {
            continue;
        };
        let Some(from) = layer_of(&module) else {
            wrong.push(format!(
                "{}: module `{module}` has no layer in this test",
                f.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, used) in references(&text) {
            // `crate::Error`, `crate::Result` and other re-exports at the
            // root are the error layer's.
            if used.starts_with(|c: char| c.is_ascii_uppercase()) || used == module {
                continue;
            }
            graph
                .entry(module.clone())
                .or_default()
                .insert(used.clone());
            let Some(to) = layer_of(&used) else {
                wrong.push(format!(
                    "{}:{line}: `crate::{used}` is not a module",
                    f.display()
                ));
                continue;
            };
            let sideways = to == from && SIDEWAYS.contains(&(module.as_str(), used.as_str()));
            if to > from || (to == from && !sideways) {
                wrong.push(format!(
                    "{}:{line}: `{module}` (layer {from}) uses `{used}` (layer {to})",
                    f.display()
                ));
            }
        }
    }
    for (m, uses) in &graph {
        eprintln!(
            "{m} -> {}",
            uses.iter().cloned().collect::<Vec<_>>().join(" ")
        );
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
    // The layers themselves name every module once.
    let mut all: Vec<&str> = LAYERS.iter().flat_map(|l| l.iter().copied()).collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n, "a module is in two layers");
}
