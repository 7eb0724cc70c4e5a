#!/usr/bin/env bash
# Installs what TritonTube needs on a fresh Debian machine: the system
# packages (protobuf compiler for etcd-client's build, ffmpeg, etcd, Chromium
# and its driver for the browser test, curl), the Python gRPC tools of the
# compatibility test, and the npm packages (dash.js, hls.js and tus-js-client, which the tritontube-web
# build embeds), pinned by package-lock.json. Then it checks that every
# command the tests start is really there, and stops with a clear message if
# one is not. Run it before any cargo build.
#
# Usage: scripts/setup.sh [--bench]   (--bench: also nginx and wrk, the
# references of scripts/bench.sh)
#
# .ci/run installs the system packages itself (and says so with
# TRITONTUBE_SYSTEM_PACKAGES=installed). Otherwise, with CI=true the packages are always installed (`apt-get update` once, then
# `apt-get install -y`), whatever the machine already seems to have; otherwise
# only the packages dpkg does not list as installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(protobuf-compiler ffmpeg etcd-server chromium chromium-driver curl)
commands=(protoc ffmpeg ffprobe etcd chromium chromedriver curl)
if [ "${1:-}" = "--bench" ]; then
  packages+=(nginx wrk)
  commands+=(nginx wrk)
fi
# Node.js and npm usually come with the machine; Debian's npm otherwise.
command -v npm >/dev/null 2>&1 || packages+=(npm)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ "${TRITONTUBE_SYSTEM_PACKAGES:-}" = installed ]; then
  need=()   # .ci/run has just installed them
elif [ "${CI:-}" = true ]; then
  need=("${packages[@]}")
else
  need=()
  for p in "${packages[@]}"; do installed "$p" || need+=("$p"); done
fi
if ((${#need[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: apt-get install ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
for c in "${commands[@]}" npm node; do
  command -v "$c" >/dev/null 2>&1 || { echo "setup: '$c' is still missing after installing ${packages[*]}" >&2; exit 1; }
done

# The compatibility test drives the admin service from Python, with a client
# generated from the course project's protocol.
if ! python3 -c "import grpc_tools" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check grpcio-tools
fi

# tritontube-web builds dash.js, hls.js and tus-js-client into its binary, so the pinned
# packages must be installed before any cargo build: on CI always, elsewhere
# when one is missing or another version than package-lock.json pins.
stale=""
for pkg in dashjs hls.js tus-js-client; do
  locked=$(node -p "require('./package-lock.json').packages['node_modules/$pkg'].version")
  installed=$(node -p "try { require('./node_modules/$pkg/package.json').version } catch (e) { 'none' }")
  if [ "$installed" != "$locked" ]; then stale+=" $pkg $locked (installed: $installed)"; fi
done
if [ "${CI:-}" = true ] || [ -n "$stale" ]; then
  echo "setup: npm ci${stale:+ for}$stale"
  npm ci --no-audit --no-fund --loglevel=error
fi
