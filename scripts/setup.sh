#!/usr/bin/env bash
# Installs what TritonTube needs on a fresh Debian machine, skipping whatever
# is already there: system packages (protobuf compiler for etcd-client's
# build, ffmpeg, etcd, Chromium and its driver for the browser test) and the
# npm packages (dash.js), pinned by package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have protoc || need+=(protobuf-compiler)
have ffmpeg || need+=(ffmpeg)
have ffprobe || need+=(ffmpeg)
have etcd || need+=(etcd-server)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
have curl || need+=(curl)
if ((${#need[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The compatibility test drives the admin service from Python, with a client
# generated from the course project's protocol.
if ! python3 -c "import grpc_tools" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check grpcio-tools
fi

if [ -f package-lock.json ] && [ ! -d node_modules/dashjs ]; then
  have npm || { echo "setup: npm is required (Debian package npm)" >&2; exit 1; }
  npm ci --no-audit --no-fund --loglevel=error
fi
