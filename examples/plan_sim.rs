//! Planning a node addition at scale, simulated (no I/O): a ring of 1,000
//! nodes holding 100,000,000 keys gains a 1,001st node with 3 replicas.
//!
//! ```text
//! cargo run --release --example plan_sim -- [--nodes 1000] [--keys 100000000] [--vnodes 4096] [--json]
//! ```
//!
//! The ring diff gives the stretches of the hash space whose owners change;
//! every key is then classified by a binary search over those stretches
//! (sorted), which is what a planner listing "only the changed ranges" relies
//! on. Key hashes are the real ones, SHA-256 of
//! `video-<i / 600>/chunk-<i % 600>.m4s` (600 files per video), generated on
//! the fly on every core and never stored. A sample of keys is checked
//! against the preference lists of both rings, so the classification is
//! known to be exact. Prints ring build, diff and classification times, the
//! keys moved against the expected 3/1001, and the peak RSS.
//!
//! The default vnode count is the ring's default ([`DEFAULT_VNODES`], 4096):
//! the simulation plans with the ring the cluster actually uses. At 1,000
//! nodes that is 4,096,000 tokens (12 bytes each) per ring, which builds in
//! about a second per core and fits in tens of MiB.

use std::fmt::Write as _;
use std::time::Instant;

use tritontube::ring::{DEFAULT_VNODES, HashRange, HashRing, TokenRing, diff, key_hash};

const REPLICAS: usize = 3;
/// Keys hashed, then classified, per step of a worker.
const BLOCK: u64 = 1 << 16;
/// Keys checked against the preference lists of both rings.
const SAMPLE: u64 = 200_000;

struct Args {
    nodes: usize,
    keys: u64,
    vnodes: u32,
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
        nodes: 1000,
        keys: 100_000_000,
        vnodes: DEFAULT_VNODES,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--nodes" => a.nodes = number(&flag, it.next()) as usize,
            "--keys" => a.keys = number(&flag, it.next()),
            "--vnodes" => a.vnodes = number(&flag, it.next()) as u32,
            "--json" => a.json = true,
            other => panic!("unknown flag {other}; use --nodes N --keys K --vnodes V --json"),
        }
    }
    assert!(a.nodes >= 1, "--nodes must be at least 1");
    a
}

/// Peak resident set of this process, in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The hash of key number `i`, formatted into `buf`.
fn hash_of(i: u64, buf: &mut String) -> u64 {
    buf.clear();
    let _ = write!(buf, "video-{}/chunk-{}.m4s", i / 600, i % 600);
    key_hash(buf)
}

/// True if `h` lies in one of `ranges` (sorted by start, not overlapping).
#[inline]
fn moved(ranges: &[HashRange], h: u64) -> bool {
    let i = ranges.partition_point(|r| r.start <= h);
    i > 0 && ranges[i - 1].contains(h)
}

/// Totals of one worker: keys moved, and seconds spent hashing and
/// classifying.
#[derive(Default, Clone, Copy)]
struct Tally {
    moved: u64,
    hash_s: f64,
    classify_s: f64,
}

fn main() {
    let a = parse();
    let names: Vec<String> = (0..=a.nodes)
        .map(|i| format!("10.{}.{}.{}:8090", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    let (old, new) = names.split_at(a.nodes);

    let t = Instant::now();
    let before = TokenRing::with_nodes(a.vnodes, old.iter().map(|n| (n.as_str(), 1.0))).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut after = before.clone();
    after.add_node(&new[0], 1.0).unwrap();
    let add_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let changes = diff(&before, &after, REPLICAS);
    let diff_s = t.elapsed().as_secs_f64();
    let space: f64 = changes.iter().map(|c| c.fraction()).sum();
    let mut ranges: Vec<HashRange> = changes
        .iter()
        .flat_map(|c| c.ranges())
        .filter(|r| !r.is_empty())
        .collect();
    ranges.sort_unstable_by_key(|r| r.start);
    assert!(
        ranges
            .windows(2)
            .all(|w| w[0].end.is_some_and(|e| e <= w[1].start)),
        "changed ranges overlap"
    );
    let change_count = changes.len();
    drop(changes);

    // Every key, hashed and classified on every core; nothing is stored but
    // one block of hashes per worker.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let per = a.keys.div_ceil(workers);
    let t = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let ranges = &ranges;
                let (lo, hi) = (w * per, ((w + 1) * per).min(a.keys));
                s.spawn(move || {
                    let mut tally = Tally::default();
                    let mut buf = String::with_capacity(48);
                    let mut hashes = Vec::with_capacity(BLOCK as usize);
                    let mut i = lo;
                    while i < hi {
                        let end = (i + BLOCK).min(hi);
                        let t = Instant::now();
                        hashes.clear();
                        hashes.extend((i..end).map(|k| hash_of(k, &mut buf)));
                        let t2 = Instant::now();
                        tally.moved += hashes.iter().filter(|h| moved(ranges, **h)).count() as u64;
                        tally.hash_s += (t2 - t).as_secs_f64();
                        tally.classify_s += t2.elapsed().as_secs_f64();
                        i = end;
                    }
                    tally
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let pass_s = t.elapsed().as_secs_f64();
    let keys_moved: u64 = tallies.iter().map(|t| t.moved).sum();
    let hash_s: f64 = tallies.iter().map(|t| t.hash_s).sum();
    let classify_s: f64 = tallies.iter().map(|t| t.classify_s).sum();

    // The classification must agree with the rings themselves: a key moves
    // exactly when its set of owners changes.
    let mut buf = String::new();
    let (mut b1, mut b2) = ([""; REPLICAS], [""; REPLICAS]);
    let mut disagree = 0u64;
    for i in 0..SAMPLE.min(a.keys) {
        let h = hash_of(i, &mut buf);
        let n1 = before.preference_by_hash(h, &mut b1).unwrap();
        let n2 = after.preference_by_hash(h, &mut b2).unwrap();
        let (mut s1, mut s2) = (b1[..n1].to_vec(), b2[..n2].to_vec());
        s1.sort_unstable();
        s2.sort_unstable();
        if (s1 != s2) != moved(&ranges, h) {
            disagree += 1;
        }
    }
    assert_eq!(disagree, 0, "classification disagrees with the rings");

    let fraction = keys_moved as f64 / a.keys.max(1) as f64;
    let expected = REPLICAS.min(a.nodes + 1) as f64 / (a.nodes + 1) as f64;
    let rss_mib = peak_rss_kib() as f64 / 1024.0;
    let classify_ns = classify_s * 1e9 / a.keys.max(1) as f64;
    let hash_ns = hash_s * 1e9 / a.keys.max(1) as f64;
    if a.json {
        println!(
            "{{\"nodes\":{},\"keys\":{},\"vnodes\":{},\"replicas\":{REPLICAS},\"tokens\":{},\"ring_build_s\":{build_s:.3},\"add_node_s\":{add_s:.4},\"diff_s\":{diff_s:.3},\"changed_stretches\":{change_count},\"changed_ranges\":{},\"changed_space\":{space:.6},\"key_pass_s\":{pass_s:.2},\"threads\":{workers},\"hash_ns_per_key\":{hash_ns:.1},\"classify_ns_per_key\":{classify_ns:.1},\"keys_moved\":{keys_moved},\"moved_fraction\":{fraction:.6},\"expected_fraction\":{expected:.6},\"moved_over_expected\":{:.4},\"sample_checked\":{},\"peak_rss_mib\":{rss_mib:.1}}}",
            a.nodes,
            a.keys,
            a.vnodes,
            after.token_count(),
            ranges.len(),
            fraction / expected,
            SAMPLE.min(a.keys),
        );
    } else {
        println!(
            "ring of {} nodes x {} vnodes ({} tokens): built in {build_s:.3} s; adding node {} took {:.1} ms",
            a.nodes,
            a.vnodes,
            before.token_count(),
            a.nodes + 1,
            add_s * 1e3
        );
        println!(
            "diff with {REPLICAS} replicas: {diff_s:.3} s, {change_count} changed stretches = {} ranges, {:.4}% of the hash space",
            ranges.len(),
            space * 100.0
        );
        println!(
            "{} keys (SHA-256 of video-<i/600>/chunk-<i%600>.m4s), {workers} threads: {pass_s:.2} s wall",
            a.keys
        );
        println!(
            "  hashing {hash_ns:.1} ns/key, classification (binary search over {} ranges) {classify_ns:.1} ns/key (CPU time summed over threads: {hash_s:.2} s + {classify_s:.2} s)",
            ranges.len()
        );
        println!(
            "keys moved: {keys_moved} = {:.4}% vs expected {REPLICAS}/{} = {:.4}% (ratio {:.4}); {} sampled keys agree with both rings' preference lists",
            fraction * 100.0,
            a.nodes + 1,
            expected * 100.0,
            fraction / expected,
            SAMPLE.min(a.keys)
        );
        println!("peak RSS: {rss_mib:.1} MiB");
    }
}
