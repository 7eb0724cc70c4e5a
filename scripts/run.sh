#!/usr/bin/env bash
# Runs the single-machine deployment from a fresh clone: installs what is
# missing, builds in release mode, starts three storage nodes (:8090-:8092)
# and the web server (:8080, admin gRPC on :8081) with SQLite metadata.
# Data lives under ./data. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bins

BIN=target/release
DATA=${TRITONTUBE_DATA:-./data}
mkdir -p "$DATA"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

nodes=()
for port in 8090 8091 8092; do
  "$BIN/tritontube-node" --host localhost --port "$port" "$DATA/node-$port" &
  pids+=($!)
  nodes+=("localhost:$port")
done
sleep 1
"$BIN/tritontube-web" --host localhost --port 8080 --data-dir "$DATA" \
  sqlite "$DATA/metadata.db" nw "localhost:8081,$(IFS=,; echo "${nodes[*]}")" &
pids+=($!)
echo "TritonTube: http://localhost:8080  (admin: target/release/tritontube-admin --token-file $DATA/admin-token status localhost:8081)"
wait -n "${pids[@]}"
