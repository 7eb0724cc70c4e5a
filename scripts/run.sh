#!/usr/bin/env bash
# Runs the single-machine deployment from a fresh clone: installs what is
# missing, builds in release mode, starts three storage nodes (:8090-:8092)
# and the web server (:8080, admin gRPC on :8081) with SQLite metadata under
# ./data, and supervises them: a child that exits (crash, kill -9, OOM) is
# started again after a short backoff (1 s, doubling up to 30 s; back to 1 s
# once it has run for 30 s), with a log line; the rest of the site keeps
# running. Ctrl-C or SIGTERM stops everything (web server first, then the
# nodes) and exits.
#
# Usage: scripts/run.sh [options]
#   --host H             host to listen on and to name nodes by   [TRITONTUBE_HOST, localhost]
#   --web-port P         HTTP port of the site                    [TRITONTUBE_WEB_PORT, 8080]
#   --admin-port P       admin gRPC port                          [TRITONTUBE_ADMIN_PORT, 8081]
#   --node-ports P,P,..  storage node ports                       [TRITONTUBE_NODE_PORTS, 8090,8091,8092]
#   --data-dir DIR       metadata, node directories, admin token  [TRITONTUBE_DATA, ./data]
#   --bin-dir DIR        use the binaries in DIR; skip setup and build  [TRITONTUBE_BIN_DIR]
#   --public-uploads     anyone may upload without signing in     [TRITONTUBE_PUBLIC_UPLOADS=1]
# Uploading needs an account unless --public-uploads: on the first start
# the web server creates the account "owner" and prints its one-time
# password here, once (add more with `tritontube-web user add NAME`).
# Flags win over the environment. TRITONTUBE_LOG_FORMAT=json (and RUST_LOG)
# reach every child. While it runs, DATA_DIR/run/<child>.pid holds each
# child's process id.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

host=${TRITONTUBE_HOST:-localhost}
web_port=${TRITONTUBE_WEB_PORT:-8080}
admin_port=${TRITONTUBE_ADMIN_PORT:-8081}
node_ports=${TRITONTUBE_NODE_PORTS:-8090,8091,8092}
data=${TRITONTUBE_DATA:-./data}
bin=${TRITONTUBE_BIN_DIR:-}
public_uploads=${TRITONTUBE_PUBLIC_UPLOADS:-}

die() { echo "run.sh: $*" >&2; exit 2; }
value() { if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi; }
while [ $# -gt 0 ]; do
  case "$1" in
    --host) value "$@"; host=$2; shift 2 ;;
    --web-port) value "$@"; web_port=$2; shift 2 ;;
    --admin-port) value "$@"; admin_port=$2; shift 2 ;;
    --node-ports) value "$@"; node_ports=$2; shift 2 ;;
    --data-dir) value "$@"; data=$2; shift 2 ;;
    --bin-dir) value "$@"; bin=$2; shift 2 ;;
    --public-uploads) public_uploads=1; shift ;;
    --host=* | --web-port=* | --admin-port=* | --node-ports=* | --data-dir=* | --bin-dir=*)
      flag=${1%%=*}
      set -- "$flag" "${1#*=}" "${@:2}"
      ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_port "$web_port" || die "--web-port: '$web_port' is not a port number"
is_port "$admin_port" || die "--admin-port: '$admin_port' is not a port number"
IFS=, read -r -a nodes <<<"$node_ports"
[ ${#nodes[@]} -gt 0 ] || die "--node-ports: give at least one port"
for p in "${nodes[@]}"; do is_port "$p" || die "--node-ports: '$p' is not a port number"; done

if [ -z "$bin" ]; then
  scripts/setup.sh
  cargo build --release --bins
  bin=${CARGO_TARGET_DIR:-target}/release
fi
for b in tritontube-node tritontube-web; do
  [ -x "$bin/$b" ] || die "$bin/$b is missing (build it, or point --bin-dir at it)"
done

mkdir -p "$data/run"

log() { printf '%s run.sh: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# Every child by name (node-PORT, web): its process id (empty while it
# waits to be started again), when it started, its failures in a row, and
# when it may start again.
declare -A pid=() started=() failures=() next=()
children=()
for p in "${nodes[@]}"; do children+=("node-$p"); done
children+=(web)

launch() {
  local name=$1
  case "$name" in
    node-*)
      local port=${name#node-}
      "$bin/tritontube-node" --host "$host" --port "$port" "$data/node-$port" &
      ;;
    web)
      local list=() flags=()
      for p in "${nodes[@]}"; do list+=("$host:$p"); done
      case "$public_uploads" in 1 | true | yes) flags+=(--public-uploads) ;; esac
      "$bin/tritontube-web" --host "$host" --port "$web_port" --data-dir "$data" "${flags[@]}" \
        sqlite "$data/metadata.db" nw "$host:$admin_port,$(IFS=,; echo "${list[*]}")" &
      ;;
  esac
  pid[$name]=$!
  started[$name]=$SECONDS
  echo "${pid[$name]}" >"$data/run/$name.pid"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

stopping=""
stop_all() {
  log "stopping"
  local name p waited
  # The web server first, so that it stops using the nodes, then the nodes.
  for name in web "${children[@]}"; do
    p=${pid[$name]:-}
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    waited=0
    while kill -0 "$p" 2>/dev/null && [ $waited -lt 100 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
    if kill -0 "$p" 2>/dev/null; then
      log "$name did not stop within 10 s; killing it"
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    pid[$name]=""
    rm -f "$data/run/$name.pid"
  done
}
trap 'stopping=1' INT TERM
trap 'stop_all' EXIT

for p in "${nodes[@]}"; do launch "node-$p"; done
# The web server checks the nodes when it starts: give them a moment.
for p in "${nodes[@]}"; do
  for _ in $(seq 50); do port_open "$host" "$p" && break; sleep 0.1; done
done
launch web
log "TritonTube: http://$host:$web_port  (admin: $bin/tritontube-admin --token-file $data/admin-token status $host:$admin_port)"

while [ -z "$stopping" ]; do
  for name in "${children[@]}"; do
    [ -z "$stopping" ] || break
    p=${pid[$name]:-}
    if [ -n "$p" ]; then
      kill -0 "$p" 2>/dev/null && continue
      status=0
      # (bash's own "Killed" notice for the job is left out: the line below says it.)
      wait "$p" 2>/dev/null || status=$?
      how="exited with status $status"
      if [ "$status" -gt 128 ]; then
        how="was killed by SIG$(kill -l "$((status - 128))" 2>/dev/null || echo "$((status - 128))")"
      fi
      ran=$((SECONDS - ${started[$name]}))
      # A child that ran a while was healthy: its next failure starts the
      # backoff afresh.
      if [ "$ran" -ge 30 ]; then failures[$name]=0; fi
      failures[$name]=$((${failures[$name]:-0} + 1))
      delay=$((1 << (${failures[$name]} - 1)))
      if [ "$delay" -gt 30 ]; then delay=30; fi
      log "$name (pid $p) $how after $ran s; restarting it in $delay s"
      pid[$name]=""
      next[$name]=$((SECONDS + delay))
    elif [ "$SECONDS" -ge "${next[$name]}" ]; then
      launch "$name"
      log "$name restarted (pid ${pid[$name]})"
    fi
  done
  # In the background, so that a signal ends the wait at once.
  sleep 0.5 &
  wait $! 2>/dev/null || true
done
