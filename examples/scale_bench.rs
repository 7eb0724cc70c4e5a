//! Storage nodes holding a million files each, as real processes: start-up,
//! index build, restart, Health latency, listing rate, planning an added
//! node by changed ranges, and the nodes' peak memory.
//!
//! ```text
//! cargo build --release -p tritontube-node --example scale_bench
//! target/release/examples/scale_bench [--files-per-node 1000000] [--nodes 3]
//!     [--node-bin target/release/tritontube-node] [--work target/scale-bench]
//!     [--rounds 2] [--list-secs 120] [--keep] [--json]
//! ```
//!
//! 1. Each node's directory is written in the course layout directly on
//!    disk (`<base>/<videoId>/<file>`, 600 files of 64–200 bytes per video;
//!    the same keys on every node, as a 3-node ring with 3 replicas places
//!    them). With `--keep` the directories stay for the next run, which
//!    reuses them (same file count) after deleting their indexes. The nodes start with scrubbing off;
//!    measured: time to the first Health answer, and to a complete index.
//! 2. One node is killed (SIGKILL) and started again, its index in place:
//!    time to the first Health answer (target: 2 s at 1,000,000 files).
//! 3. 2,000 sequential Health calls per idle node: p50 / p99 (target p99
//!    <= 5 ms).
//! 4. A full listing of one node: files per second, overall and over its
//!    first and last tenth (stopped after `--list-secs` if still running).
//! 5. Planning the addition of a node: the ranges whose owners change (ring
//!    diff, default vnodes, 3 replicas) are listed from every node in
//!    parallel, 256 ranges per request, batch after batch as the migrator
//!    does; (i) listing only, (ii) listing plus the holdings map and the
//!    plan (copies to make). Target: (ii) / (i) <= 1.5.
//! 6. Peak RSS of every node process (target <= 64 MiB).
//!
//! Prints a table (each figure with its target) and writes the figures as
//! JSON to `<work>/scale.json` (`--json` prints the same line on stdout).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tritontube::NodeAddr;
use tritontube::cluster::{Holdings, Recorded, plan};
use tritontube::layout::{NodeEntry, Ring, ring_of};
use tritontube::node::{NodeClient, NodeClientConfig};
use tritontube::ring::{DEFAULT_VNODES, HashRange, diff};
use tritontube::testing::free_port;

const FILES_PER_VIDEO: u64 = 600;
const REPLICAS: usize = 3;
const RANGES_PER_BATCH: usize = 256;
const HEALTH_CALLS: usize = 2000;
const TARGET_RESTART_S: f64 = 2.0;
const TARGET_HEALTH_P99_MS: f64 = 5.0;
const TARGET_PLAN_RATIO: f64 = 1.5;
const TARGET_NODE_RSS_MIB: f64 = 64.0;
const TARGET_WEB_RSS_MIB: f64 = 150.0;
const BENCH_TOKEN: &str = "scale-bench-token";

struct Args {
    files: u64,
    nodes: usize,
    node_bin: PathBuf,
    work: PathBuf,
    rounds: usize,
    list_secs: u64,
    keep: bool,
    json: bool,
}

fn number(flag: &str, v: Option<String>) -> u64 {
    v.unwrap_or_else(|| panic!("{flag} needs a value"))
        .replace(['_', ','], "")
        .parse()
        .unwrap_or_else(|_| panic!("{flag} takes a whole number"))
}

fn parse() -> Args {
    let mut a = Args {
        files: 1_000_000,
        nodes: 3,
        node_bin: PathBuf::from("target/release/tritontube-node"),
        work: PathBuf::from("target/scale-bench"),
        rounds: 2,
        list_secs: 120,
        keep: false,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--files-per-node" => a.files = number(&flag, it.next()),
            "--nodes" => a.nodes = number(&flag, it.next()) as usize,
            "--rounds" => a.rounds = number(&flag, it.next()).max(1) as usize,
            "--list-secs" => a.list_secs = number(&flag, it.next()),
            "--node-bin" => a.node_bin = it.next().expect("--node-bin PATH").into(),
            "--work" => a.work = it.next().expect("--work DIR").into(),
            "--keep" => a.keep = true,
            "--json" => a.json = true,
            other => panic!(
                "unknown flag {other}; use --files-per-node N --nodes N --node-bin PATH --work DIR --rounds N --list-secs S --keep --json"
            ),
        }
    }
    assert!(a.nodes >= 1 && a.files >= 1);
    if !a.node_bin.is_file() {
        // Beside this example: target/<profile>/examples/.. holds the node.
        let sibling = std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("tritontube-node")));
        match sibling {
            Some(s) if s.is_file() => a.node_bin = s,
            _ => panic!(
                "no node binary at {}: cargo build --release -p tritontube-node",
                a.node_bin.display()
            ),
        }
    }
    a
}

/// Peak resident set of process `pid` ("self" for this one), in MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn video_of(v: u64) -> String {
    format!("scale-{v:05}")
}

fn file_of(f: u64) -> String {
    format!("chunk-{f:03}.m4s")
}

/// Writes `files` small files as `<base>/<videoId>/<file>` (the course
/// layout), on every core. Bodies are 64–200 bytes, derived from the key,
/// the same on every node.
fn write_layout(base: &Path, files: u64) {
    let videos = files.div_ceil(FILES_PER_VIDEO);
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    std::thread::scope(|s| {
        for w in 0..workers {
            s.spawn(move || {
                let mut body = Vec::with_capacity(256);
                for v in (w..videos).step_by(workers as usize) {
                    let video = video_of(v);
                    let dir = base.join(&video);
                    std::fs::create_dir_all(&dir).unwrap();
                    let n = FILES_PER_VIDEO.min(files - v * FILES_PER_VIDEO);
                    for f in 0..n {
                        let name = file_of(f);
                        let len = 64 + ((v * FILES_PER_VIDEO + f) * 7919 % 137) as usize;
                        body.clear();
                        while body.len() < len {
                            let _ = write!(body, "{video}/{name};");
                        }
                        body.truncate(len);
                        std::fs::write(dir.join(&name), &body).unwrap();
                    }
                }
            });
        }
    });
}

/// The node processes; killed when dropped, whatever happens.
struct Nodes {
    bin: PathBuf,
    work: PathBuf,
    bases: Vec<PathBuf>,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl Nodes {
    fn addr(&self, i: usize) -> NodeAddr {
        NodeAddr::new(format!("127.0.0.1:{}", self.ports[i])).unwrap()
    }

    fn pid(&self, i: usize) -> String {
        self.children[i]
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default()
    }

    fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.work.join(format!("node-{i}.log")))
            .unwrap();
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.ports[i].to_string())
            .args(["--scrub-mb-per-s", "0"])
            .arg(&self.bases[i])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

fn quick_client(addr: &NodeAddr) -> NodeClient {
    NodeClient::new(
        addr.clone(),
        NodeClientConfig {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        },
    )
}

/// Seconds from `since` to the first Health answer of `addr` (a fresh
/// connection per attempt, as a client arriving would make).
async fn first_health(addr: &NodeAddr, since: Instant) -> f64 {
    loop {
        if quick_client(addr).health().await.is_ok() {
            return since.elapsed().as_secs_f64();
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "{addr} never answered Health"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Seconds from `since` until `addr` reports a complete index; its file count.
async fn index_done(addr: &NodeAddr, since: Instant) -> (f64, u64) {
    let client = quick_client(addr);
    loop {
        if let Ok(h) = client.health().await
            && h.indexing.is_none()
        {
            return (since.elapsed().as_secs_f64(), h.file_count);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Lists `batch` from every node at once; `Some(holdings)` when `keep`,
/// with the seconds spent building them after the listings arrived.
async fn list_batch(
    clients: &[NodeClient],
    batch: &[HashRange],
    keep: bool,
) -> (u64, Option<(Holdings, f64)>) {
    if !keep {
        let counts = futures::future::join_all(clients.iter().map(|c| async move {
            c.list_ranges(batch, None)
                .try_fold(0u64, |n, _| async move { Ok(n + 1) })
                .await
                .unwrap()
        }))
        .await;
        return (counts.iter().sum(), None);
    }
    // As the migrator does: collect each node's listing, then one map of
    // every copy by key.
    let listings = futures::future::join_all(clients.iter().map(|c| async move {
        c.list_ranges(batch, None)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
    }))
    .await;
    let t = Instant::now();
    let mut holdings = Holdings::new();
    let mut n = 0;
    for (c, found) in clients.iter().zip(listings) {
        for meta in found {
            n += 1;
            holdings
                .entry(meta.key.clone())
                .or_default()
                .push((c.addr().clone(), meta));
        }
    }
    (n, Some((holdings, t.elapsed().as_secs_f64())))
}

/// Seconds of one planning pass: in all, building holdings, planning.
#[derive(Default, Clone, Copy)]
struct PassTimes {
    total: f64,
    holdings: f64,
    plan: f64,
}

/// One pass over every batch: (seconds, copies listed, files in the ranges,
/// copies to make, bytes to copy).
async fn planning_pass(
    clients: &[NodeClient],
    batches: &[Vec<HashRange>],
    ring: &Ring,
    with_plan: bool,
) -> (PassTimes, u64, u64, u64, u64) {
    let t = Instant::now();
    let mut times = PassTimes::default();
    let (mut listed, mut files, mut copies, mut bytes) = (0, 0, 0, 0);
    // Two batches listed at once in both passes, as the cluster manager
    // does: the plan of one batch overlaps the listing of the next.
    let mut lists = futures::stream::iter(batches)
        .map(|batch| list_batch(clients, batch, with_plan))
        .buffered(2);
    while let Some((n, holdings)) = lists.next().await {
        listed += n;
        if let Some((holdings, holdings_s)) = holdings {
            times.holdings += holdings_s;
            let t = Instant::now();
            // The facts the metadata store records for these keys (here taken
            // from the first copy: the store itself is not part of this).
            let recorded: Recorded = holdings
                .iter()
                .map(|(k, c)| (k.clone(), (c[0].1.size, c[0].1.sha256)))
                .collect();
            let p = plan(&holdings, ring, REPLICAS, &recorded);
            files += p.files;
            copies += p.copies.len() as u64;
            bytes += p.copy_bytes();
            drop(p);
            drop(holdings);
            times.plan += t.elapsed().as_secs_f64();
        }
    }
    times.total = t.elapsed().as_secs_f64();
    (times, listed, files, copies, bytes)
}

struct Table {
    rows: Vec<(String, String, String, String)>,
    json: serde_json::Map<String, Value>,
}

impl Table {
    fn fig(&mut self, name: &str, what: String, value: String, v: Value) {
        self.rows.push((what, value, String::new(), String::new()));
        self.json.insert(name.into(), v);
    }

    /// A figure with a target `value op limit`.
    fn target(
        &mut self,
        name: &str,
        what: String,
        value: f64,
        shown: String,
        op: &str,
        limit: f64,
    ) {
        let ok = if op == "<=" {
            value <= limit
        } else {
            value >= limit
        };
        self.rows.push((
            what,
            shown,
            format!("{op} {limit}"),
            if ok { "met" } else { "NOT MET" }.into(),
        ));
        self.json.insert(name.into(), json!(value));
        self.json.insert(format!("{name}_met"), json!(ok));
    }
}

/// Records a ready video for each of the layout's first `videos` ids in the
/// SQLite metadata store at `db`.
async fn record_videos(db: &Path, videos: u64) {
    use tritontube::metadata::{MetadataStore, SqliteMetadataStore, Video, VideoState};
    let meta = SqliteMetadataStore::open(db).unwrap();
    for v in 0..videos {
        let mut video = Video::new(video_of(v).parse().unwrap(), video_of(v));
        video.state = VideoState::Ready;
        meta.create_video(&video).await.unwrap();
    }
}

/// Starts `tritontube-web` over the nodes (every node owns every file:
/// 3 replicas on 3 nodes), runs `verify` through the admin service, and
/// records its time and the web server's peak RSS.
async fn verify_step(a: &Args, nodes: &Nodes, addrs: &[NodeAddr], t: &mut Table) {
    let web_bin = a.node_bin.with_file_name("tritontube-web");
    let web_dir = a.work.join("web");
    let _ = std::fs::remove_dir_all(&web_dir);
    std::fs::create_dir_all(&web_dir).unwrap();
    // The layout's files belong to videos; without their records verify
    // would report every file as an orphan.
    record_videos(&web_dir.join("meta.db"), a.files.div_ceil(FILES_PER_VIDEO)).await;
    let (http, admin) = (free_port(), free_port());
    let nw = std::iter::once(format!("127.0.0.1:{admin}"))
        .chain(addrs.iter().map(|a| a.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    let mut web = Command::new(&web_bin)
        .args(["--host", "127.0.0.1", "--port", &http.to_string()])
        .args(["--replicas", &addrs.len().to_string(), "--data-dir"])
        .arg(&web_dir)
        .arg("sqlite")
        .arg(web_dir.join("meta.db"))
        .args(["nw", &nw])
        .env("TRITONTUBE_ADMIN_TOKEN", BENCH_TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(a.work.join("web.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", web_bin.display()));
    let admin_addr = format!("127.0.0.1:{admin}");
    let client = loop {
        if let Ok(c) =
            tritontube::admin::AdminClient::connect(&admin_addr, Some(BENCH_TOKEN.into())).await
            && c.status().await.is_ok()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let t0 = Instant::now();
    let report = client.verify().await.unwrap();
    let verify_s = t0.elapsed().as_secs_f64();
    let copies = a.files * nodes.bases.len() as u64;
    eprintln!(
        "verify: {} files ({copies} copies) in {verify_s:.1} s, {} problems",
        report.files_checked,
        report.problems.len()
    );
    assert_eq!(report.files_checked, a.files, "verify saw every file");
    t.fig(
        "verify_s",
        format!(
            "verify through the web server: {} files, {copies} copies, {} problems",
            report.files_checked,
            report.problems.len()
        ),
        format!("{verify_s:.1} s ({:.0} copies/s)", copies as f64 / verify_s),
        json!(verify_s),
    );
    let rss = peak_rss_mib(&web.id().to_string());
    t.target(
        "web_verify_rss_mib",
        format!("web server peak RSS during that verify ({copies} copies)"),
        rss,
        format!("{rss:.1} MiB"),
        "<=",
        TARGET_WEB_RSS_MIB,
    );
    let _ = web.kill();
    let _ = web.wait();
}

#[tokio::main]
async fn main() {
    let a = parse();
    std::fs::create_dir_all(&a.work).unwrap();
    let mut t = Table {
        rows: Vec::new(),
        json: serde_json::Map::new(),
    };
    t.json.insert("files_per_node".into(), json!(a.files));
    t.json.insert("nodes".into(), json!(a.nodes));

    // 1a. The directories, written straight to disk (or reused).
    let bases: Vec<PathBuf> = (0..a.nodes)
        .map(|i| a.work.join(format!("node-{i}")))
        .collect();
    let started = Instant::now();
    let mut written = 0u64;
    for (i, base) in bases.iter().enumerate() {
        let marker = a.work.join(format!("node-{i}.layout"));
        let reuse = std::fs::read_to_string(&marker).ok().as_deref() == Some(&a.files.to_string());
        if reuse {
            let state = base.join(".tritontube");
            if state.exists() {
                std::fs::remove_dir_all(&state).unwrap();
            }
            continue;
        }
        let _ = std::fs::remove_file(&marker);
        if base.exists() {
            std::fs::remove_dir_all(base).unwrap();
        }
        write_layout(base, a.files);
        std::fs::write(&marker, a.files.to_string()).unwrap();
        written += a.files;
    }
    let layout_s = started.elapsed().as_secs_f64();
    eprintln!(
        "layout: {} files per node on {} nodes ({written} written in {layout_s:.1} s)",
        a.files, a.nodes
    );
    if written > 0 {
        t.fig(
            "layout_files_per_s",
            "writing the directories (not the node's work)".into(),
            format!("{:.0} files/s", written as f64 / layout_s),
            json!(written as f64 / layout_s),
        );
    }

    // 1b. Start every node at once; first Health, then a complete index.
    let mut nodes = Nodes {
        bin: a.node_bin.clone(),
        work: a.work.clone(),
        bases,
        ports: (0..a.nodes).map(|_| free_port()).collect(),
        children: (0..a.nodes).map(|_| None).collect(),
    };
    let addrs: Vec<NodeAddr> = (0..a.nodes).map(|i| nodes.addr(i)).collect();
    let since = Instant::now();
    for i in 0..a.nodes {
        nodes.start(i);
    }
    let firsts = futures::future::join_all(addrs.iter().map(|ad| first_health(ad, since))).await;
    let indexed = futures::future::join_all(addrs.iter().map(|ad| index_done(ad, since))).await;
    for (i, (_, count)) in indexed.iter().enumerate() {
        assert_eq!(*count, a.files, "node {i} indexed {count} files");
    }
    let first_max = firsts.iter().copied().fold(0.0, f64::max);
    let index_s = indexed.iter().map(|x| x.0).fold(0.0, f64::max);
    eprintln!("fresh start: first Health {first_max:.3} s, indexes complete {index_s:.1} s");
    t.fig(
        "fresh_first_health_s",
        format!(
            "fresh start, no index: first Health answer (slowest of {})",
            a.nodes
        ),
        format!("{first_max:.3} s"),
        json!(first_max),
    );
    t.fig(
        "index_build_s",
        format!(
            "index build, {} nodes at once on {} cores (slowest)",
            a.nodes,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        ),
        format!("{index_s:.1} s"),
        json!(index_s),
    );
    t.fig(
        "index_files_per_s_per_node",
        "index build rate per node".into(),
        format!("{:.0} files/s", a.files as f64 / index_s),
        json!(a.files as f64 / index_s),
    );
    t.fig(
        "index_files_per_s_total",
        "index build rate, all nodes together".into(),
        format!("{:.0} files/s", (a.files * a.nodes as u64) as f64 / index_s),
        json!((a.files * a.nodes as u64) as f64 / index_s),
    );

    // 2. Restart node 0 with its index in place.
    nodes.kill(0);
    let since = Instant::now();
    nodes.start(0);
    let restart_s = first_health(&addrs[0], since).await;
    let (restart_ready_s, count) = index_done(&addrs[0], since).await;
    assert_eq!(count, a.files, "restarted node reports {count} files");
    eprintln!("restart: first Health {restart_s:.3} s");
    t.target(
        "restart_first_health_s",
        format!(
            "restart after kill -9, index in place: first Health ({} files)",
            a.files
        ),
        restart_s,
        format!("{restart_s:.3} s"),
        "<=",
        TARGET_RESTART_S,
    );
    t.json
        .insert("restart_ready_s".into(), json!(restart_ready_s));

    // 3. Health latency, idle.
    let mut p50s = Vec::new();
    let mut p99_worst = 0.0f64;
    for ad in &addrs {
        let c = quick_client(ad);
        for _ in 0..20 {
            c.health().await.unwrap();
        }
        let mut ms = Vec::with_capacity(HEALTH_CALLS);
        for _ in 0..HEALTH_CALLS {
            let t0 = Instant::now();
            c.health().await.unwrap();
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        p50s.push(percentile(&ms, 0.50));
        p99_worst = p99_worst.max(percentile(&ms, 0.99));
    }
    let p50 = p50s.iter().copied().fold(0.0, f64::max);
    eprintln!("health: p50 {p50:.3} ms, p99 {p99_worst:.3} ms");
    t.fig(
        "health_p50_ms",
        format!("Health p50, {HEALTH_CALLS} sequential calls per idle node (worst node)"),
        format!("{p50:.3} ms"),
        json!(p50),
    );
    t.target(
        "health_p99_ms",
        "Health p99 (worst node)".into(),
        p99_worst,
        format!("{p99_worst:.3} ms"),
        "<=",
        TARGET_HEALTH_P99_MS,
    );

    // 4. Full listing of one node, stopped after `--list-secs` (a listing
    // whose pages get slower as it goes would otherwise run for very long);
    // the rates of its first and last tenth show whether it keeps its pace.
    let c0 = NodeClient::new(addrs[0].clone(), NodeClientConfig::default());
    let window = (a.files / 10).max(1);
    let cap = Duration::from_secs(a.list_secs);
    let t0 = Instant::now();
    let mut marks: Vec<f64> = Vec::new();
    let mut listed = 0u64;
    {
        let mut s = c0.list_ranges(&[HashRange::ALL], None);
        while let Some(m) = s.next().await {
            m.unwrap();
            listed += 1;
            if listed.is_multiple_of(window) {
                marks.push(t0.elapsed().as_secs_f64());
                if t0.elapsed() >= cap {
                    break;
                }
            }
        }
    }
    let list_s = t0.elapsed().as_secs_f64();
    let complete = listed == a.files;
    assert!(listed <= a.files);
    let list_rate = listed as f64 / list_s;
    let first_rate = marks
        .first()
        .map(|t| window as f64 / t)
        .unwrap_or(list_rate);
    let last_rate = match marks.len() {
        0 | 1 => first_rate,
        n => window as f64 / (marks[n - 1] - marks[n - 2]),
    };
    eprintln!(
        "full listing: {listed} of {} files in {list_s:.2} s (first tenth {first_rate:.0}/s, last {last_rate:.0}/s)",
        a.files
    );
    t.fig(
        "list_files_per_s",
        if complete {
            format!("full listing of one node ({listed} files in {list_s:.1} s)")
        } else {
            format!(
                "full listing of one node, STOPPED after {list_s:.0} s at {listed} of {} files",
                a.files
            )
        },
        format!("{list_rate:.0} files/s"),
        json!(list_rate),
    );
    t.fig(
        "list_first_tenth_files_per_s",
        format!("  listing rate over its first {window} files"),
        format!("{first_rate:.0} files/s"),
        json!(first_rate),
    );
    t.fig(
        "list_last_tenth_files_per_s",
        format!("  listing rate over its last {window} files"),
        format!("{last_rate:.0} files/s"),
        json!(last_rate),
    );
    t.json.insert("list_files".into(), json!(listed));
    t.json.insert("list_s".into(), json!(list_s));
    t.json.insert("list_complete".into(), json!(complete));

    // 5. Planning the addition of a node, by changed ranges.
    let new_addr = NodeAddr::new(format!("127.0.0.1:{}", free_port())).unwrap();
    let mut members: Vec<NodeEntry> = addrs
        .iter()
        .map(|a| NodeEntry::new(a.clone(), 1.0))
        .collect();
    let before = ring_of(&members, DEFAULT_VNODES);
    members.push(NodeEntry::new(new_addr.clone(), 1.0));
    let after = ring_of(&members, DEFAULT_VNODES);
    let t0 = Instant::now();
    let mut ranges: Vec<HashRange> = diff(&before, &after, REPLICAS)
        .iter()
        .flat_map(|c| c.ranges())
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_by_key(|r| r.start);
    let diff_s = t0.elapsed().as_secs_f64();
    let batches: Vec<Vec<HashRange>> = ranges
        .chunks(RANGES_PER_BATCH)
        .map(<[HashRange]>::to_vec)
        .collect();
    let clients: Vec<NodeClient> = addrs
        .iter()
        .map(|ad| NodeClient::new(ad.clone(), NodeClientConfig::default()))
        .collect();
    let (mut list_best, mut plan_best) = (f64::MAX, f64::MAX);
    let mut best = PassTimes::default();
    let mut facts = (0, 0, 0, 0);
    for _ in 0..a.rounds {
        let (s, listed, ..) = planning_pass(&clients, &batches, &after, false).await;
        list_best = list_best.min(s.total);
        let (s2, listed2, files, copies, bytes) =
            planning_pass(&clients, &batches, &after, true).await;
        if s2.total < plan_best {
            plan_best = s2.total;
            best = s2;
        }
        assert_eq!(listed, listed2);
        facts = (listed, files, copies, bytes);
        eprintln!(
            "planning pass: list {:.2} s, list + plan {:.2} s (holdings {:.2} s, recorded + plan {:.2} s)",
            s.total, s2.total, s2.holdings, s2.plan
        );
    }
    let (listed, files, copies, bytes) = facts;
    let ratio = plan_best / list_best;
    t.fig(
        "plan_changed_ranges",
        format!(
            "adding a node ({} vnodes, {REPLICAS} replicas): changed ranges (diff {:.0} ms)",
            DEFAULT_VNODES,
            diff_s * 1e3
        ),
        format!("{} in {} batches", ranges.len(), batches.len()),
        json!(ranges.len()),
    );
    t.json.insert("plan_diff_s".into(), json!(diff_s));
    t.fig(
        "plan_files_in_moved_ranges",
        format!(
            "files in the changed ranges ({:.1}% of {}), copies listed from {} nodes",
            files as f64 * 100.0 / a.files as f64,
            a.files,
            a.nodes
        ),
        format!("{files} files, {listed} copies"),
        json!(files),
    );
    t.json.insert("plan_copies_listed".into(), json!(listed));
    t.fig(
        "plan_copies_to_make",
        "copies the plan makes".into(),
        format!("{copies} ({:.1} MiB)", bytes as f64 / 1048576.0),
        json!(copies),
    );
    t.fig(
        "plan_list_s",
        format!(
            "(i) listing the changed ranges from {} nodes at once (best of {})",
            a.nodes, a.rounds
        ),
        format!(
            "{list_best:.2} s ({:.0} copies/s)",
            listed as f64 / list_best
        ),
        json!(list_best),
    );
    t.fig(
        "plan_list_and_plan_s",
        "(ii) the same + holdings map + plan".into(),
        format!("{plan_best:.2} s"),
        json!(plan_best),
    );
    let per_file = |s: f64| s * 1e6 / files.max(1) as f64;
    t.fig(
        "plan_cpu_us_per_file",
        format!(
            "  of which holdings map {:.2} s + recorded and plan {:.2} s, per file",
            best.holdings, best.plan
        ),
        format!("{:.1} us", per_file(best.holdings + best.plan)),
        json!(per_file(best.holdings + best.plan)),
    );
    t.json
        .insert("plan_holdings_s".into(), json!(best.holdings));
    t.json.insert("plan_plan_s".into(), json!(best.plan));
    t.target(
        "plan_ratio",
        "planning overhead (ii) / (i)".into(),
        ratio,
        format!("{ratio:.3}"),
        "<=",
        TARGET_PLAN_RATIO,
    );

    // 6. A web server over the nodes runs `verify`: every copy of every
    // file (files x nodes copies), range by range; time and peak memory.
    verify_step(&a, &nodes, &addrs, &mut t).await;

    // 7. Peak memory of the node processes.
    let rss: Vec<f64> = (0..a.nodes).map(|i| peak_rss_mib(&nodes.pid(i))).collect();
    let rss_max = rss.iter().copied().fold(0.0, f64::max);
    t.target(
        "node_peak_rss_mib",
        format!(
            "node peak RSS, worst of {} (each: {})",
            a.nodes,
            rss.iter()
                .map(|r| format!("{r:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        rss_max,
        format!("{rss_max:.1} MiB"),
        "<=",
        TARGET_NODE_RSS_MIB,
    );
    t.json.insert("node_rss_mib".into(), json!(rss));
    drop(nodes);
    let own = peak_rss_mib("self");
    t.fig(
        "bench_peak_rss_mib",
        "this benchmark's own peak RSS".into(),
        format!("{own:.1} MiB"),
        json!(own),
    );

    if !a.keep {
        for i in 0..a.nodes {
            let _ = std::fs::remove_dir_all(a.work.join(format!("node-{i}")));
            let _ = std::fs::remove_file(a.work.join(format!("node-{i}.layout")));
        }
    }
    let line = Value::Object(t.json.clone()).to_string();
    std::fs::write(a.work.join("scale.json"), format!("{line}\n")).unwrap();

    let w = t.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let wv = t.rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    println!("\n{} storage nodes, {} files each:\n", a.nodes, a.files);
    println!("{:w$}  {:>wv$}  {:8}  result", "figure", "value", "target");
    for (what, value, target, met) in &t.rows {
        println!("{what:w$}  {value:>wv$}  {target:8}  {met}");
    }
    println!("\nwritten to {}", a.work.join("scale.json").display());
    if a.json {
        println!("{line}");
    }
}
