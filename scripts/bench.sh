#!/usr/bin/env bash
# Every benchmark of the project, each figure beside its reference from the
# same run, written to BENCHMARKS.md (raw output under target/bench/):
#   ring:      criterion lookup / preference list / add / remove vs SHA-256 alone
#              and the hashring crate; balance and movement (ring_stats)
#   storage:   4 MiB get through a node vs the local store; node RSS in a 1 GiB put
#   metadata:  SQLite and etcd round trips, listing 10,000 videos
#   scrub:     a node re-hashing its files vs sha256sum over the same files
#   serving with the nodes' read verification on and off (what it costs)
#   scale:     planning a 1,001st node over 100M keys (simulated); 3 real nodes
#              of 1M files each: index build, restart, Health p99, listing,
#              planning an added node by changed ranges, node peak RSS
#   ingest:    upload-to-ready vs ffmpeg alone on the same ladder and file
#   memory:    web server peak RSS while receiving a 2 GiB upload; web and node
#              peak RSS after serving and migrating
#   serving:   segment GETs/s and p50/p99 through the web server (3 nodes), with
#              and without its cache, vs nginx serving the same files from disk
#              (64 KiB and 1 MiB files, 64 connections, wrk)
#   migration: adding a node to a cluster holding >= 1 GiB vs `cp -r` of the same
#              bytes; read p99 during the migration vs idle
# Usage: scripts/bench.sh [--quick]   (--quick: shorter runs, under five minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
q() { if [ $QUICK = 1 ]; then echo "$1"; else echo "$2"; fi; }
scripts/setup.sh --bench
cargo build --release --workspace --bins --examples -q
B=target/release; X=target/release/examples
OUT=target/bench; mkdir -p "$OUT"; : > "$OUT/results.txt"; : > "$OUT/summary.txt"
rec() { echo "$1 $2" >> "$OUT/results.txt"; }   # one figure: name value
say() { echo "$*" | tee -a "$OUT/summary.txt"; }
W=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }
now() { date +%s.%N; }
rss_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$1/status; }
calc() { python3 -c "print(f'{$1:.3f}')"; }
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0; else if (v ~ /s$/) printf "%.3f", v*1000; else print v }'; }

say "== ring"
CRIT=$(q "--warm-up-time 1 --measurement-time 2" "--warm-up-time 3 --measurement-time 8")
rm -rf target/criterion   # only this run's estimates are collected below
# shellcheck disable=SC2086
cargo bench -q --bench ring -- $CRIT > "$OUT/ring-criterion.txt" 2>&1
for f in target/criterion/*/*/new/estimates.json; do
  name=$(echo "$f" | awk -F/ '{print $3 "/" $4}')
  rec "ring.$name" "$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['median']['point_estimate'])" "$f")"
done
for n in 10 100; do
  "$X/ring_stats" --nodes $n --keys 1000000 --json > "$OUT/ring-stats-$n.json"
  rec "ring_stats.$n" "$(cat "$OUT/ring-stats-$n.json")"
done
say "$(grep -c '^ring' "$OUT/results.txt") ring figures"

say "== storage"
"$X/store_bench" --json | tee "$OUT/store.json"
rec store "$(cat "$OUT/store.json")"

say "== scrub"
"$X/scrub_bench" --json --mib "$(q 256 1024)" | tee "$OUT/scrub.json"
rec scrub "$(cat "$OUT/scrub.json")"

say "== metadata"
"$X/metadata_bench" --json | tee "$OUT/metadata.json"
rec metadata "$(cat "$OUT/metadata.json")"

say "== scale"
SIM=(); [ $QUICK = 1 ] && SIM=(--keys 10000000)
"$X/plan_sim" --json "${SIM[@]}" | tee "$OUT/plan-sim.json"
rec plan_sim "$(cat "$OUT/plan-sim.json")"
"$X/scale_bench" --files-per-node "$(q 100000 1000000)" --node-bin "$B/tritontube-node" --work "$W/scale" > "$OUT/scale.txt"
cat "$OUT/scale.txt"; cp "$W/scale/scale.json" "$OUT/scale.json"; rm -rf "$W/scale"
rec scale "$(cat "$OUT/scale.json")"
say "$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"{s['files_per_node']:,} files per node: restart to first Health {s['restart_first_health_s']:.3f} s (target <= 2), Health p99 {s['health_p99_ms']:.2f} ms (<= 5), planning / listing {s['plan_ratio']:.2f} (<= 1.5), node peak RSS {s['node_peak_rss_mib']:.1f} MiB (<= 64)\")" "$OUT/scale.json")"

VN=256
nodes=(); node_pids=()
for _ in 1 2 3 4; do p=$(port); "$B/tritontube-node" --host 127.0.0.1 --port $p "$W/node-$p" 2>/dev/null & pids+=($!); node_pids+=($!); nodes+=("127.0.0.1:$p"); wait_port $p; done
HTTP=$(port); ADMIN=$(port)
"$B/tritontube-web" --host 127.0.0.1 --port $HTTP --data-dir "$W/web" --vnodes $VN --replicas 2 \
  sqlite "$W/meta.db" nw "127.0.0.1:$ADMIN,${nodes[0]},${nodes[1]},${nodes[2]}" 2>"$OUT/web.log" & WEB=$!; pids+=($WEB)
wait_port $HTTP; wait_port $ADMIN
NW="${nodes[0]},${nodes[1]},${nodes[2]}"

say "== ingest"
SECS=$(q 10 30)
ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=$SECS" -f lavfi -i "sine=frequency=440:duration=$SECS" \
  -c:v libx264 -preset veryfast -c:a aac -shortest "$W/clip.mp4"
mkdir -p "$W/alone"; mapfile -t ARGS < <("$X/ladder_args" "$W/clip.mp4" "$W/alone")
t0=$(now); ffmpeg "${ARGS[@]}" >/dev/null; t1=$(now); alone=$(calc "$t1-$t0")
t0=$(now); curl -s -o /dev/null -F "file=@$W/clip.mp4" "http://127.0.0.1:$HTTP/upload"
until curl -s "http://127.0.0.1:$HTTP/api/videos/clip" | grep -q '"state":"ready"'; do sleep 0.05; done; t1=$(now)
ours=$(calc "$t1-$t0")
rec ingest.ours_s "$ours"; rec ingest.ffmpeg_s "$alone"; rec ingest.clip_s "$SECS"
say "upload-to-ready ${ours}s vs ffmpeg alone ${alone}s: ratio $(calc "$ours/$alone") (target <= 1.10)"

say "== memory"
SIZE=$(q 512M 2G)
head -c $SIZE /dev/zero > "$W/big.bin"
code=$(curl -s -o /dev/null -w "%{http_code}" -F "file=@$W/big.bin;filename=big.mp4" "http://127.0.0.1:$HTTP/upload")
rec memory.upload_size "$SIZE"; rec memory.web_upload_rss_mib "$(rss_mib $WEB)"; rec memory.upload_answer "$code"
say "web peak RSS after receiving a $SIZE upload: $(rss_mib $WEB) MiB (target <= 150 MiB; answer $code: refused after receipt, not a video)"
rm -f "$W/big.bin"

say "== serving"
DUR=$(q 5 15)
HTTP2=$(port); ADMIN2=$(port)
"$B/tritontube-web" --host 127.0.0.1 --port $HTTP2 --data-dir "$W/web2" --vnodes $VN --replicas 2 --cache-mb 0 \
  sqlite "$W/meta2.db" nw "127.0.0.1:$ADMIN2,$NW" 2>"$OUT/web-nocache.log" & pids+=($!)
wait_port $HTTP2
"$X/put_files" "$NW" 2 $VN seg64k 1 65536
"$X/put_files" "$NW" 2 $VN seg1m 1 1048576
mkdir -p "$W/www/content/seg64k" "$W/www/content/seg1m"
curl -s -o "$W/www/content/seg64k/chunk-0-00000.m4s" "http://127.0.0.1:$HTTP/content/seg64k/chunk-0-00000.m4s"
curl -s -o "$W/www/content/seg1m/chunk-0-00000.m4s" "http://127.0.0.1:$HTTP/content/seg1m/chunk-0-00000.m4s"
chmod -R a+rX "$W/www"; chmod a+x "$W"   # nginx's workers run as an unprivileged user
NG=$(port)
cat > "$W/nginx.conf" <<NGINX
daemon off; worker_processes 2; pid $W/nginx.pid; error_log $W/nginx.err;
events { worker_connections 1024; }
http { access_log off; sendfile on; server { listen 127.0.0.1:$NG; root $W/www; } }
NGINX
nginx -c "$W/nginx.conf" & pids+=($!); wait_port $NG
for f in seg64k seg1m; do
  for side in web:$HTTP nocache:$HTTP2 nginx:$NG; do
    name=${side%%:*}; p=${side##*:}; url="http://127.0.0.1:$p/content/$f/chunk-0-00000.m4s"
    code=$(curl -s -o /dev/null -w "%{http_code}" "$url")
    [ "$code" = 200 ] || { echo "$url answers $code, not 200" >&2; exit 1; }
    wrk -t2 -c64 -d${DUR}s --latency "$url" > "$OUT/wrk-$name-$f.txt"
    if grep -q "Non-2xx" "$OUT/wrk-$name-$f.txt"; then echo "non-2xx answers from $name ($f)" >&2; exit 1; fi
    rec "serving.$f.$name.rps" "$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name-$f.txt")"
    rec "serving.$f.$name.p50_ms" "$(ms "$(awk '/ 50%/ {print $2}' "$OUT/wrk-$name-$f.txt")")"
    rec "serving.$f.$name.p99_ms" "$(ms "$(awk '/ 99%/ {print $2}' "$OUT/wrk-$name-$f.txt")")"
  done
  say "$f: web $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-web-$f.txt") req/s (no cache $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-nocache-$f.txt")) vs nginx $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-nginx-$f.txt") req/s"
done
rec memory.web_serving_rss_mib "$(rss_mib $WEB)"
# The same rows with the nodes' read verification off, to see what hashing
# every served chunk costs (nodes restarted on the same directories).
restart_nodes() {
  for i in 0 1 2; do kill "${node_pids[$i]}" 2>/dev/null || true; wait "${node_pids[$i]}" 2>/dev/null || true; done
  for i in 0 1 2; do
    p=${nodes[$i]##*:}
    "$B/tritontube-node" --host 127.0.0.1 --port "$p" "$@" "$W/node-$p" 2>/dev/null & node_pids[$i]=$!; pids+=($!)
  done
  for i in 0 1 2; do wait_port "${nodes[$i]##*:}"; done
  sleep 3   # the web servers' failure detectors see them answer again
}
restart_nodes --verify-reads false
for f in seg64k seg1m; do
  for side in web:$HTTP nocache:$HTTP2; do
    name=${side%%:*}; p=${side##*:}; url="http://127.0.0.1:$p/content/$f/chunk-0-00000.m4s"
    wrk -t2 -c64 -d${DUR}s --latency "$url" > "$OUT/wrk-$name-noverify-$f.txt"
    if grep -q "Non-2xx" "$OUT/wrk-$name-noverify-$f.txt"; then echo "non-2xx answers from $name without verification ($f)" >&2; exit 1; fi
    rec "serving.$f.${name}_noverify.rps" "$(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-$name-noverify-$f.txt")"
  done
  say "$f without read verification: web $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-web-noverify-$f.txt") req/s (no cache $(awk '/Requests\/sec/ {print $2}' "$OUT/wrk-nocache-noverify-$f.txt"))"
done
restart_nodes

say "== migration"
COUNT=$(q 64 256)
"$X/put_files" "$NW" 2 $VN bulk $COUNT 4194304
total=$(du -sb "$W"/node-* | awk '{s+=$1} END {printf "%d", s}')
t0=$(now); cp -r "$W/node-${nodes[0]##*:}" "$W/cp-copy"; sync; t1=$(now)
cpbytes=$(du -sb "$W/cp-copy" | awk '{printf "%d", $1}'); rm -rf "$W/cp-copy"
cp_mbs=$(calc "$cpbytes/1048576/($t1-$t0)")
URL="http://127.0.0.1:$HTTP2/content/seg64k/chunk-0-00000.m4s"   # uncached: every read reaches a node
wrk -t1 -c4 -d5s --latency "$URL" > "$OUT/wrk-idle.txt"
wrk -t1 -c4 -d60s --latency "$URL" > "$OUT/wrk-during.txt" & WRK=$!
before=$(du -sb "$W/node-${nodes[3]##*:}" 2>/dev/null | awk '{printf "%d", $1}'); before=${before:-0}
t0=$(now); "$B/tritontube-admin" --token-file "$W/web/admin-token" add "127.0.0.1:$ADMIN" "${nodes[3]}" > "$OUT/add.txt" 2>/dev/null; t1=$(now)
kill -INT $WRK 2>/dev/null || true; wait $WRK 2>/dev/null || true
moved=$(( $(du -sb "$W/node-${nodes[3]##*:}" | awk '{printf "%d", $1}') - before ))
mig_mbs=$(calc "$moved/1048576/($t1-$t0)")
rec migration.held_mib $((total/1048576)); rec migration.moved_mib $((moved/1048576))
rec migration.secs "$(calc "$t1-$t0")"; rec migration.mib_s "$mig_mbs"; rec migration.cp_mib_s "$cp_mbs"
rec migration.p99_idle_ms "$(ms "$(awk '/ 99%/ {print $2}' "$OUT/wrk-idle.txt")")"
rec migration.p99_during_ms "$(ms "$(awk '/ 99%/ {print $2}' "$OUT/wrk-during.txt")")"
rec migration.files "$(grep -oE '[0-9]+$' "$OUT/add.txt" | tail -1)"
say "cluster held $((total/1048576)) MiB; add moved $((moved/1048576)) MiB: $mig_mbs MiB/s vs cp -r $cp_mbs MiB/s"
say "read p99 idle $(awk '/ 99%/ {print $2}' "$OUT/wrk-idle.txt") vs during migration $(awk '/ 99%/ {print $2}' "$OUT/wrk-during.txt")"
"$B/tritontube-admin" --token-file "$W/web/admin-token" verify "127.0.0.1:$ADMIN" | tail -1 | tee -a "$OUT/summary.txt"
node_rss=0; for p in "${node_pids[@]}"; do r=$(rss_mib "$p"); node_rss=$(python3 -c "print(max($node_rss, $r))"); done
rec memory.node_peak_rss_mib "$node_rss"; rec memory.web_peak_rss_mib "$(rss_mib $WEB)"

rec machine.cpus "$(nproc)"; rec machine.mem_gib "$(free -g | awk '/Mem:/ {print $2}')"
rec machine.cpu "\"$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')\""
rec machine.kernel "\"$(uname -r)\""; rec machine.rustc "\"$(rustc --version)\""
rec machine.nginx "\"$(nginx -v 2>&1 | sed 's/.*: //')\""; rec machine.ffmpeg "\"$(ffmpeg -version | head -1 | awk '{print $3}')\""
rec mode "$([ $QUICK = 1 ] && echo '"quick"' || echo '"full"')"
python3 scripts/bench_report.py "$OUT/results.txt" > BENCHMARKS.md
echo "wrote BENCHMARKS.md"
