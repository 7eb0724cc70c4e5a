#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, then
# checks formatting and lints and runs every test (unit, conformance against
# real etcd and real storage nodes, ffmpeg ingest, headless Chromium playback,
# the supervision of scripts/run.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# First: it installs the pinned dash.js (`npm ci`) that building
# tritontube-web needs.
scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
# The single-machine deployment's supervisor, with the debug binaries the
# tests just built: a node and the web server killed -9 come back.
if command -v shellcheck >/dev/null 2>&1; then shellcheck scripts/run.sh scripts/run_test.sh; fi
scripts/run_test.sh
cargo test --workspace --doc
# Every public item's docs build, links included.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
# The ring builds without the async runtime.
cargo build -p tritontube-core --no-default-features
