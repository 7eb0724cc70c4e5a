#!/usr/bin/env bash
# Tests scripts/run.sh, the single-machine deployment, as an operator meets
# it: started on free ports (host and data directory from the environment,
# ports from flags) with the debug binaries, it must keep the site answering
# /healthz while a storage node and then the web server are killed with
# kill -9, start each again, and on SIGTERM or Ctrl-C stop every child and
# exit 0. Takes about 10 s.
#
# Usage: scripts/run_test.sh   (after `cargo build --bins`; scripts/test.sh
# runs it after the Rust tests, which build the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${TRITONTUBE_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}
for b in tritontube-node tritontube-web tritontube-admin; do
  [ -x "$bin/$b" ] || { echo "run_test: $bin/$b missing: run 'cargo build --bins' first" >&2; exit 1; }
done

tmp=$(mktemp -d)
run_pid=""
cleanup() {
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then
    kill -TERM "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "run_test: FAILED: $*" >&2
  echo "--- run.sh output ---" >&2
  cat "$tmp/run.log" >&2 || true
  exit 1
}

# Five ports nobody listens on (the kernel's choice, released at once).
read -r web admin n1 n2 n3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
')

healthy() { curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$web/healthz"; }
# Waits up to $1 seconds for the command after it to succeed.
within() {
  local limit=$1 t=0
  shift
  until "$@"; do
    t=$((t + 1))
    [ "$t" -le $((limit * 10)) ] || return 1
    sleep 0.1
  done
}
pid_of() { cat "$tmp/data/run/$1.pid" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
changed() { local now; now=$(pid_of "$1") && [ -n "$now" ] && [ "$now" != "$2" ]; }
exited() { ! kill -0 "$run_pid" 2>/dev/null; }
node_up() {
  "$bin/tritontube-admin" --token-file "$tmp/data/admin-token" status "127.0.0.1:$admin" 2>/dev/null |
    grep -Eq "^127\.0\.0\.1:$1 +[0-9.]+ +up "
}

# Starts run.sh as a terminal would: in a process group of its own, with
# SIGINT not ignored (a script's background jobs otherwise ignore it), so
# that `kill -INT -- -PID` is a Ctrl-C.
start() {
  TRITONTUBE_HOST=127.0.0.1 TRITONTUBE_DATA="$tmp/data" python3 -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])
' scripts/run.sh --bin-dir "$bin" \
    --web-port "$web" --admin-port "$admin" --node-ports "$n1,$n2,$n3" >>"$tmp/run.log" 2>&1 &
  run_pid=$!
}
children() { for c in "node-$n1" "node-$n2" "node-$n3" web; do pid_of "$c"; done; }
# Sends signal $1 to $2 (run.sh, or its process group), then checks that
# run.sh exits 0 within 20 s leaving no child behind.
stops_on() {
  local pids status=0
  mapfile -t pids < <(children)
  kill "-$1" -- "$2"
  within 20 exited || fail "run.sh did not exit on SIG$1"
  wait "$run_pid" || status=$?
  run_pid=""
  [ "$status" = 0 ] || fail "run.sh exited with status $status on SIG$1"
  for p in "${pids[@]}"; do
    ! kill -0 "$p" 2>/dev/null || fail "child $p still running after run.sh stopped on SIG$1"
  done
  if sed -n '/stopping/,$p' "$tmp/run.log" | grep -q "restarting it"; then
    fail "a child was restarted while stopping"
  fi
}

start

within 30 healthy || fail "the site did not answer /healthz on :$web"
within 10 node_up "$n2" || fail "node :$n2 not up in status"
echo "run_test: site up on :$web, nodes :$n1 :$n2 :$n3"

# A storage node dies: the site stays up, the node comes back.
old=$(pid_of "node-$n2")
kill -9 "$old"
healthy || fail "the site went down with node :$n2"
within 15 changed "node-$n2" "$old" || fail "node :$n2 was not started again"
within 10 port_open "$n2" || fail "node :$n2 restarted but does not listen"
within 10 node_up "$n2" || fail "node :$n2 restarted but not up in status"
grep -q "node-$n2 (pid $old) was killed by SIGKILL" "$tmp/run.log" || fail "no log line for node :$n2's exit"
if ! { kill -0 "$(pid_of "node-$n1")" && kill -0 "$(pid_of "node-$n3")"; }; then
  fail "the other nodes did not survive"
fi
healthy || fail "the site is down after node :$n2 came back"
echo "run_test: node :$n2 killed -9, restarted, site still answering"

# The web server dies: it comes back.
old=$(pid_of web)
kill -9 "$old"
within 15 changed web "$old" || fail "the web server was not started again"
within 20 healthy || fail "the site did not answer again after the web server restarted"
echo "run_test: web server killed -9, restarted, site answering"

# SIGTERM stops everything, and run.sh exits 0.
stops_on TERM "$run_pid"
echo "run_test: SIGTERM stopped every child"

# So does Ctrl-C (SIGINT to the whole process group), on the same data.
start
within 30 healthy || fail "the site did not come back on the same data directory"
stops_on INT "-$run_pid"
echo "run_test: Ctrl-C stopped every child"
echo "run_test: 1 passed, 0 failed"
