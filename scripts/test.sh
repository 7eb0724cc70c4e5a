#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, then
# checks formatting and lints and runs every test (unit, conformance against
# real etcd and real storage nodes, ffmpeg ingest, headless Chromium playback).
set -euo pipefail
cd "$(dirname "$0")/.."
# First: it installs the pinned dash.js (`npm ci`) that building
# tritontube-web needs.
scripts/setup.sh

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets
cargo test --workspace --doc
# Every public item's docs build, links included.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
# The ring builds without the async runtime.
cargo build -p tritontube-core --no-default-features
