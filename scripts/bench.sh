#!/usr/bin/env bash
# Service benchmarks, each figure printed beside its reference from the same
# run (raw output under target/bench/):
#   ingest:    upload-to-ready vs ffmpeg alone on the same ladder and file
#   memory:    web server peak RSS while receiving a 2 GiB upload
#   serving:   segment GETs/s through the web server (3 nodes) vs nginx from disk,
#              64 KiB and 1 MiB files, 64 connections (wrk)
#   migration: adding a node to a cluster holding >= 1 GiB vs `cp -r` of the same bytes;
#              read p99 during the migration vs idle
# Usage: scripts/bench.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
scripts/setup.sh
need=(); command -v nginx >/dev/null || need+=(nginx); command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release --bins --examples -q
B=target/release; X=target/release/examples
OUT=target/bench; mkdir -p "$OUT"
W=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
now() { date +%s.%N; }
rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$1/status; }
ratio() { python3 -c "print(f'{$1/$2:.3f}')"; }

VN=256
nodes=(); for _ in 1 2 3 4; do p=$(port); "$B/tritontube-node" --host 127.0.0.1 --port $p "$W/node-$p" 2>/dev/null & pids+=($!); nodes+=("127.0.0.1:$p"); wait_port $p; done
HTTP=$(port); ADMIN=$(port)
"$B/tritontube-web" --host 127.0.0.1 --port $HTTP --data-dir "$W/web" --vnodes $VN --replicas 2 \
  sqlite "$W/meta.db" nw "127.0.0.1:$ADMIN,${nodes[0]},${nodes[1]},${nodes[2]}" 2>"$OUT/web.log" & WEB=$!; pids+=($WEB)
wait_port $HTTP; wait_port $ADMIN
NW="${nodes[0]},${nodes[1]},${nodes[2]}"

echo "== ingest" | tee "$OUT/summary.txt"
SECS=$([ $QUICK = 1 ] && echo 10 || echo 30)
ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=$SECS" -f lavfi -i "sine=frequency=440:duration=$SECS" \
  -c:v libx264 -preset veryfast -c:a aac -shortest "$W/clip.mp4"
mkdir -p "$W/alone"; mapfile -t ARGS < <("$X/ladder_args" "$W/clip.mp4" "$W/alone")
t0=$(now); ffmpeg "${ARGS[@]}" >/dev/null; t1=$(now); alone=$(python3 -c "print(f'{$t1-$t0:.2f}')")
t0=$(now); curl -s -o /dev/null -F "file=@$W/clip.mp4" "http://127.0.0.1:$HTTP/upload"
until curl -s "http://127.0.0.1:$HTTP/api/videos/clip" | grep -q '"state":"ready"'; do sleep 0.1; done; t1=$(now)
ours=$(python3 -c "print(f'{$t1-$t0:.2f}')")
echo "upload-to-ready ${ours}s vs ffmpeg alone ${alone}s: ratio $(ratio $ours $alone) (target <= 1.10)" | tee -a "$OUT/summary.txt"

echo "== memory" | tee -a "$OUT/summary.txt"
SIZE=$([ $QUICK = 1 ] && echo 512M || echo 2G)
head -c $SIZE /dev/zero > "$W/big.bin"
curl -s -o /dev/null -w "%{http_code}\n" -F "file=@$W/big.bin;filename=big.mp4" "http://127.0.0.1:$HTTP/upload" > "$OUT/big-upload.txt"
echo "web peak RSS after receiving a $SIZE upload: $(rss_mib $WEB) MiB (target <= 150 MiB; answer $(cat "$OUT/big-upload.txt"), refused after receipt as not a video)" | tee -a "$OUT/summary.txt"
rm -f "$W/big.bin"

echo "== serving" | tee -a "$OUT/summary.txt"
DUR=$([ $QUICK = 1 ] && echo 5 || echo 15)
"$X/put_files" "$NW" 2 $VN seg64k 1 65536
"$X/put_files" "$NW" 2 $VN seg1m 1 1048576
mkdir -p "$W/www/content/seg64k" "$W/www/content/seg1m"
curl -s -o "$W/www/content/seg64k/chunk-0-00000.m4s" "http://127.0.0.1:$HTTP/content/seg64k/chunk-0-00000.m4s"
curl -s -o "$W/www/content/seg1m/chunk-0-00000.m4s" "http://127.0.0.1:$HTTP/content/seg1m/chunk-0-00000.m4s"
NG=$(port)
cat > "$W/nginx.conf" <<NGINX
daemon off; worker_processes 2; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$NG; root $W/www; } }
NGINX
chmod -R a+rX "$W/www"; chmod a+x "$W"   # nginx's workers run as an unprivileged user
nginx -c "$W/nginx.conf" & pids+=($!); wait_port $NG
for f in seg64k seg1m; do
  for u in "http://127.0.0.1:$HTTP" "http://127.0.0.1:$NG"; do
    code=$(curl -s -o /dev/null -w "%{http_code}" "$u/content/$f/chunk-0-00000.m4s")
    [ "$code" = 200 ] || { echo "$u/content/$f/chunk-0-00000.m4s answers $code, not 200" >&2; exit 1; }
  done
  ours=$(wrk -t2 -c64 -d${DUR}s --latency "http://127.0.0.1:$HTTP/content/$f/chunk-0-00000.m4s" | tee "$OUT/wrk-web-$f.txt" | awk '/Requests\/sec/ {print $2}')
  theirs=$(wrk -t2 -c64 -d${DUR}s --latency "http://127.0.0.1:$NG/content/$f/chunk-0-00000.m4s" | tee "$OUT/wrk-nginx-$f.txt" | awk '/Requests\/sec/ {print $2}')
  if grep -q "Non-2xx" "$OUT/wrk-web-$f.txt" "$OUT/wrk-nginx-$f.txt"; then echo "non-2xx answers during the $f run" >&2; exit 1; fi
  echo "$f: web $ours req/s vs nginx $theirs req/s: ratio $(ratio $ours $theirs) (target >= 0.5); p99 web $(awk '/ 99%/ {print $2}' "$OUT/wrk-web-$f.txt"), nginx $(awk '/ 99%/ {print $2}' "$OUT/wrk-nginx-$f.txt")" | tee -a "$OUT/summary.txt"
done

echo "== migration" | tee -a "$OUT/summary.txt"
COUNT=$([ $QUICK = 1 ] && echo 64 || echo 256)
"$X/put_files" "$NW" 2 $VN bulk $COUNT 4194304
total=$(du -sb "$W"/node-* | awk '{s+=$1} END {printf "%d", s}')
t0=$(now); cp -r "$W/node-${nodes[0]##*:}" "$W/cp-copy"; sync; t1=$(now)
cpbytes=$(du -sb "$W/cp-copy" | awk '{print $1}'); rm -rf "$W/cp-copy"
cp_mbs=$(python3 -c "print(f'{$cpbytes/1048576/($t1-$t0):.1f}')")
URL="http://127.0.0.1:$HTTP/content/seg64k/chunk-0-00000.m4s"
wrk -t1 -c4 -d5s --latency "$URL" > "$OUT/wrk-idle.txt"
wrk -t1 -c4 -d60s --latency "$URL" > "$OUT/wrk-during.txt" & WRK=$!
before=$(du -sb "$W/node-${nodes[3]##*:}" 2>/dev/null | awk '{print $1}'); before=${before:-0}
t0=$(now); "$B/tritontube-admin" add "127.0.0.1:$ADMIN" "${nodes[3]}" > "$OUT/add.txt" 2>/dev/null; t1=$(now)
kill -INT $WRK 2>/dev/null || true; wait $WRK 2>/dev/null || true
moved=$(( $(du -sb "$W/node-${nodes[3]##*:}" | awk '{print $1}') - before ))
mig_mbs=$(python3 -c "print(f'{$moved/1048576/($t1-$t0):.1f}')")
echo "cluster held $((total/1048576)) MiB; add moved $((moved/1048576)) MiB in $(python3 -c "print(f'{$t1-$t0:.2f}')")s: $mig_mbs MiB/s vs cp -r $cp_mbs MiB/s: ratio $(ratio $mig_mbs $cp_mbs) (target >= 0.5)" | tee -a "$OUT/summary.txt"
echo "read p99 idle $(awk '/ 99%/ {print $2}' "$OUT/wrk-idle.txt") vs during migration $(awk '/ 99%/ {print $2}' "$OUT/wrk-during.txt") (target <= 3x); $(grep -E 'Number of files migrated' "$OUT/add.txt")" | tee -a "$OUT/summary.txt"
"$B/tritontube-admin" verify "127.0.0.1:$ADMIN" | tail -1 | tee -a "$OUT/summary.txt"
