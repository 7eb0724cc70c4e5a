#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the figures scripts/bench.sh recorded.

Usage: bench_report.py target/bench/results.txt > BENCHMARKS.md
Each line of the input is `name value`, the value a number, a quoted string
or a JSON object.
"""
import datetime
import json
import sys


def load(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            name, _, value = line.partition(" ")
            try:
                out[name] = json.loads(value)
            except json.JSONDecodeError:
                out[name] = value
    return out


def num(r, name, field=None):
    v = r.get(name)
    if field is not None:
        v = v.get(field) if isinstance(v, dict) else None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{s} {unit}".strip()


def main():
    r = load(sys.argv[1])
    rows = []

    def row(area, what, ours, ref, value, op, limit, note=""):
        if value is None:
            met = "not measured"
        else:
            ok = value <= limit if op == "<=" else value >= limit
            met = "met" if ok else "**not met**"
        shown = "n/a" if value is None else (f"{value:.3f}" if abs(value) < 10 else f"{value:.3g}")
        rows.append(f"| {area} | {what} | {ours} | {ref} | {shown} {op} {limit} | {met} | {note} |")

    sha = num(r, "ring.lookup/sha256_only")
    o100 = num(r, "ring.lookup/owner_100_nodes")
    peer = num(r, "ring.lookup/hashring_get_100_nodes")
    pref = num(r, "ring.lookup/preference3_100_nodes")
    add = num(r, "ring.change_100_nodes/add_node")
    rem = num(r, "ring.change_100_nodes/remove_node")
    div = lambda a, b: a / b if a is not None and b else None
    row("ring", "lookup, 100 nodes vs SHA-256 of the key alone", fmt(o100, "ns"), fmt(sha, "ns"), div(o100, sha), "<=", 1.25)
    row("ring", "lookup, 100 nodes vs `hashring` get", fmt(o100, "ns"), fmt(peer, "ns"), div(o100, peer), "<=", 0.85)
    row("ring", "preference list of 3 vs one lookup (no allocation)", fmt(pref, "ns"), fmt(o100, "ns"), div(pref, o100), "<=", 1.5)
    row("ring", "add one node to a 100-node ring (ms)", fmt(add and add / 1e6, "ms"), "1 ms", add and add / 1e6, "<=", 1.0)
    rows.append(f"| ring | remove one node from a 100-node ring | {fmt(rem and rem / 1e6, 'ms')} | | | | |")
    for n in (10, 100, 1000):
        by_hash, whole = num(r, f"ring.lookup/owner_by_hash_{n}_nodes"), num(r, f"ring.lookup/owner_{n}_nodes")
        rows.append(f"| ring | lookup by an already-computed hash, {n} nodes (the ring's own part) | {fmt(by_hash, 'ns')} | whole lookup {fmt(whole, 'ns')} | | | |")
    for n in (10, 100):
        s = r.get(f"ring_stats.{n}", {})
        row("ring", f"max/mean keys per node, {n} nodes", fmt(s.get("max_over_mean_keys")), "1.0", s.get("max_over_mean_keys"), "<=", 1.05,
            f"hash-space share max/mean {s.get('max_over_mean_share')}; {s.get('keys')} keys")
        row("ring", f"keys moved on adding a node, {n} nodes, vs the optimum 1/(N+1)", fmt(s.get("moved_fraction")), fmt(s.get("optimum")),
            s.get("moved_over_optimum"), "<=", 1.10)
        row("ring", f"keys moved between old nodes, {n} nodes", fmt(s.get("moved_between_old_nodes")), "0", s.get("moved_between_old_nodes"), "<=", 0)

    st = r.get("store", {})
    row("storage", "streamed get of 4 MiB: node client vs local store (MiB/s)", fmt(st.get("get_4mib_node_mib_s"), "MiB/s"),
        fmt(st.get("get_4mib_local_mib_s"), "MiB/s"), st.get("ratio"), ">=", 0.5,
        f"plain loopback TCP moves {fmt(st.get('raw_tcp_loopback_mib_s'), 'MiB/s')} here: the ceiling of any protocol between two processes")
    row("storage", "node peak RSS during a 1 GiB put", fmt(st.get("node_peak_rss_mib"), "MiB"), "64 MiB", st.get("node_peak_rss_mib"), "<=", 64,
        f"put took {st.get('put_1gib_secs')} s")
    sb = r.get("scrub", {})
    row("storage", f"scrub (re-hash every stored file, compare with the index) vs `sha256sum`, {sb.get('files')} files, {sb.get('mib')} MiB",
        fmt(sb.get("scrub_mib_s"), "MiB/s"), fmt(sb.get("sha256sum_mib_s"), "MiB/s"), sb.get("ratio"), ">=", 0.8)
    md = r.get("metadata", {})
    rows.append(f"| metadata | create + get round trips per second | SQLite {fmt(md.get('sqlite_create_get_per_s'), '/s')} | etcd {fmt(md.get('etcd_create_get_per_s'), '/s')} | | | listing 10,000 videos in pages of 100: SQLite {md.get('sqlite_list_10k_s')} s, etcd {md.get('etcd_list_10k_s')} s |")

    ps = r.get("plan_sim", {})
    if ps:
        row("scale", f"keys moved on adding a node to {ps.get('nodes'):,} nodes, {ps.get('keys'):,} keys, {ps.get('replicas')} replicas, vs the expected {ps.get('replicas')}/{ps.get('nodes', 0) + 1} (simulated)",
            fmt(ps.get("moved_fraction")), fmt(ps.get("expected_fraction")), ps.get("moved_over_expected"), "<=", 1.10,
            f"{ps.get('vnodes')} vnodes: ring built in {fmt(ps.get('ring_build_s'), 's')}, diff {fmt(ps.get('diff_s'), 's')} "
            f"({ps.get('changed_ranges'):,} changed ranges), every key hashed {fmt(ps.get('hash_ns_per_key'), 'ns')} and classified "
            f"{fmt(ps.get('classify_ns_per_key'), 'ns')} (binary search), {fmt(ps.get('key_pass_s'), 's')} on {ps.get('threads')} threads; peak RSS {fmt(ps.get('peak_rss_mib'), 'MiB')}")
    sc = r.get("scale", {})
    if sc:
        n, files = sc.get("nodes"), sc.get("files_per_node")
        at = f"{files:,} files per node"
        row("scale", f"node restart (kill -9) with its index in place: first Health, {at}", fmt(sc.get("restart_first_health_s"), "s"), "2 s",
            sc.get("restart_first_health_s"), "<=", 2.0,
            f"fresh directory without index: first Health after {fmt(sc.get('fresh_first_health_s'), 's')}, index complete after {fmt(sc.get('index_build_s'), 's')} "
            f"({fmt(sc.get('index_files_per_s_per_node'), 'files/s')} per node, {n} nodes at once)")
        row("scale", f"Health p99, 2,000 sequential calls per idle node, {at}", fmt(sc.get("health_p99_ms"), "ms"), "5 ms", sc.get("health_p99_ms"), "<=", 5.0,
            f"p50 {fmt(sc.get('health_p50_ms'), 'ms')}")
        row("scale", f"planning an added node: listing the changed ranges + holdings + plan vs listing alone, {n} nodes, {at}",
            fmt(sc.get("plan_list_and_plan_s"), "s"), fmt(sc.get("plan_list_s"), "s"), sc.get("plan_ratio"), "<=", 1.5,
            f"{sc.get('plan_changed_ranges'):,} changed ranges in batches of 256 holding {sc.get('plan_files_in_moved_ranges'):,} files "
            f"({sc.get('plan_copies_listed'):,} copies listed, {sc.get('plan_copies_to_make'):,} copies planned); holdings and plan cost "
            f"{fmt(sc.get('plan_cpu_us_per_file'), 'µs')} per file; full listing of one node "
            f"{fmt(sc.get('list_files_per_s'), 'files/s')} (first tenth {fmt(sc.get('list_first_tenth_files_per_s'), 'files/s')}, "
            f"last tenth {fmt(sc.get('list_last_tenth_files_per_s'), 'files/s')}"
            + ("" if sc.get("list_complete", True) else f"; stopped after {fmt(sc.get('list_s'), 's')} at {sc.get('list_files'):,} files") + ")")
        row("scale", f"node peak RSS after indexing, listing, planning and a verify, {at}", fmt(sc.get("node_peak_rss_mib"), "MiB"), "64 MiB",
            sc.get("node_peak_rss_mib"), "<=", 64, f"benchmark process {fmt(sc.get('bench_peak_rss_mib'), 'MiB')}")
        copies = (files or 0) * (n or 0)
        row("scale", f"web server peak RSS during a verify of {copies:,} copies ({at}, {n} nodes, range by range)",
            fmt(sc.get("web_verify_rss_mib"), "MiB"), "150 MiB", sc.get("web_verify_rss_mib"), "<=", 150,
            f"verify took {fmt(sc.get('verify_s'), 's')}")

    ours, alone = num(r, "ingest.ours_s"), num(r, "ingest.ffmpeg_s")
    row("ingest", f"upload-to-ready vs ffmpeg alone, {fmt(num(r, 'ingest.clip_s'))} s 720p clip", fmt(ours, "s"), fmt(alone, "s"), div(ours, alone), "<=", 1.10)
    up = num(r, "memory.web_upload_rss_mib")
    row("memory", f"web peak RSS while receiving a {r.get('memory.upload_size')} upload", fmt(up, "MiB"), "150 MiB", up, "<=", 150)
    rows.append(f"| memory | peak RSS after serving and migration | web {fmt(num(r, 'memory.web_peak_rss_mib'), 'MiB')} | node {fmt(num(r, 'memory.node_peak_rss_mib'), 'MiB')} | | | |")
    for f, label in (("seg64k", "64 KiB"), ("seg1m", "1 MiB")):
        web, nc, ng = (num(r, f"serving.{f}.{s}.rps") for s in ("web", "nocache", "nginx"))
        lat = lambda s: f"p50 {fmt(num(r, f'serving.{f}.{s}.p50_ms'), 'ms')}, p99 {fmt(num(r, f'serving.{f}.{s}.p99_ms'), 'ms')}"
        row("serving", f"{label} segment GETs/s, 64 connections: web (3 nodes) vs nginx from disk", fmt(web, "/s"), fmt(ng, "/s"), div(web, ng), ">=", 0.5,
            f"web {lat('web')}; nginx {lat('nginx')}")
        rows.append(f"| serving | {label}, web server with its cache off (every GET reaches a node) | {fmt(nc, '/s')} | {fmt(ng, '/s')} | {fmt(div(nc, ng))} | | {lat('nocache')} |")
        # What verifying every served chunk costs: the ratio to nginx with
        # it on vs off, in the same run (target: drops by at most 10%).
        for side, what in (("web", "cache on"), ("nocache", "cache off")):
            on, off = num(r, f"serving.{f}.{side}.rps"), num(r, f"serving.{f}.{side}_noverify.rps")
            keep = div(div(on, ng), div(off, ng))
            row("serving", f"{label}, {what}: ratio to nginx with read verification on vs off", fmt(div(on, ng)), fmt(div(off, ng)), keep, ">=", 0.9,
                f"{fmt(on, '/s')} with, {fmt(off, '/s')} without")
    mig, cp = num(r, "migration.mib_s"), num(r, "migration.cp_mib_s")
    row("migration", f"adding a node to a cluster holding {fmt(num(r, 'migration.held_mib'), 'MiB')}: throughput vs `cp -r`", fmt(mig, "MiB/s"), fmt(cp, "MiB/s"),
        div(mig, cp), ">=", 0.5, f"{fmt(num(r, 'migration.moved_mib'), 'MiB')} in {int(num(r, 'migration.files') or 0)} files moved in {fmt(num(r, 'migration.secs'), 's')}, each checksummed and fsynced")
    idle, during = num(r, "migration.p99_idle_ms"), num(r, "migration.p99_during_ms")
    row("migration", "read p99 during the migration vs idle", fmt(during, "ms"), fmt(idle, "ms"), div(during, idle), "<=", 3)

    mode = r.get("mode", "full")
    print("# Benchmarks\n")
    print(f"Written by `scripts/bench.sh{' --quick' if mode == 'quick' else ''}` on {datetime.date.today().isoformat()} "
          f"({mode} mode). Every figure is set beside its reference measured in the same run; ratios, not "
          "absolute times, are what carries over to another machine. Raw output: `target/bench/`.\n")
    print("Machine: " + ", ".join(f"{k.split('.', 1)[1]} {r[k]}" for k in sorted(r) if k.startswith("machine.")) + ".\n")
    print("| area | what | ours | reference | ratio or figure vs target | | notes |")
    print("|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)
    print("""
## How to reproduce

```sh
scripts/bench.sh            # everything, about 35 minutes (the scale section writes and deletes 3M files); writes this file
scripts/bench.sh --quick    # shorter runs, under five minutes
cargo bench --bench ring    # the ring alone (criterion, HTML report in target/criterion/)
```

The ring figures are criterion medians. Serving figures come from `wrk -t2 -c64`
against one file per size; the web server's cache keeps such a file in memory after
the first GET, so the "cache off" rows show what a GET costs when it has to reach a
storage node. The machine is small (2 cores shared by the load generator, the web
server, the nodes and nginx): compare ratios within one run.
""")


def notes():
    """The hand-written explanation of unmet targets, if present."""
    import os
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "benchmark-limits.md")
    if os.path.exists(path):
        with open(path) as f:
            print(f.read())


if __name__ == "__main__":
    main()
    notes()
