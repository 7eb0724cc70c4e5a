//! Balance and movement of the ring for N nodes and K random keys.
//!
//! ```text
//! cargo run --release --example ring_stats -- --nodes 100 --keys 1000000 [--vnodes V] [--json]
//! ```
//!
//! Prints the max/mean load over the keys (and the exact max/mean share of
//! the hash space), and for adding one node: the fraction of keys moved
//! against the optimum 1/(N+1), and the fraction moved between old nodes
//! (which must be 0).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use tritontube::ring::{DEFAULT_VNODES, HashRing, TokenRing, key_hash};

struct Args {
    nodes: usize,
    keys: usize,
    vnodes: u32,
    json: bool,
}

fn parse() -> Args {
    let mut a = Args {
        nodes: 10,
        keys: 1_000_000,
        vnodes: DEFAULT_VNODES,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--nodes" => a.nodes = val().parse().expect("--nodes N"),
            "--keys" => a.keys = val().parse().expect("--keys K"),
            "--vnodes" => a.vnodes = val().parse().expect("--vnodes V"),
            "--json" => a.json = true,
            other => panic!("unknown flag {other}; use --nodes N --keys K --vnodes V --json"),
        }
    }
    a
}

fn main() {
    let a = parse();
    let names: Vec<String> = (0..a.nodes)
        .map(|i| format!("10.0.{}.{}:8090", i / 256, i % 256))
        .collect();
    let ring = TokenRing::with_nodes(a.vnodes, names.iter().map(|n| (n.as_str(), 1.0))).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(224);
    let hashes: Vec<u64> = (0..a.keys)
        .map(|_| {
            key_hash(&format!(
                "video-{}/chunk-1-{:05}.m4s",
                rng.random::<u32>(),
                rng.random_range(0..99999)
            ))
        })
        .collect();
    let mut load: HashMap<&str, usize> = HashMap::new();
    let owners: Vec<&str> = hashes
        .iter()
        .map(|h| ring.owner_by_hash(*h).unwrap())
        .collect();
    for o in &owners {
        *load.entry(o).or_default() += 1;
    }
    let mean = a.keys as f64 / a.nodes as f64;
    let max_over_mean = *load.values().max().unwrap() as f64 / mean;
    let share_max_over_mean = ring.max_over_mean();

    let mut bigger = ring.clone();
    let added = "10.1.0.1:8090";
    let t = std::time::Instant::now();
    bigger.add_node(added, 1.0).unwrap();
    let add_time = t.elapsed();
    let (mut moved, mut between_old) = (0usize, 0usize);
    for (h, o) in hashes.iter().zip(&owners) {
        let n = bigger.owner_by_hash(*h).unwrap();
        if n != *o {
            moved += 1;
            if n != added {
                between_old += 1;
            }
        }
    }
    let moved_fraction = moved as f64 / a.keys as f64;
    let optimum = 1.0 / (a.nodes as f64 + 1.0);
    if a.json {
        println!(
            "{{\"nodes\":{},\"keys\":{},\"vnodes\":{},\"max_over_mean_keys\":{:.4},\"max_over_mean_share\":{:.4},\"moved_fraction\":{:.5},\"optimum\":{:.5},\"moved_over_optimum\":{:.4},\"moved_between_old_nodes\":{},\"add_node_ms\":{:.3}}}",
            a.nodes,
            a.keys,
            a.vnodes,
            max_over_mean,
            share_max_over_mean,
            moved_fraction,
            optimum,
            moved_fraction / optimum,
            between_old,
            add_time.as_secs_f64() * 1e3
        );
    } else {
        println!(
            "{} nodes, {} virtual nodes each, {} keys",
            a.nodes, a.vnodes, a.keys
        );
        println!("  max/mean load (keys):        {max_over_mean:.4}");
        println!("  max/mean share (hash space): {share_max_over_mean:.4}");
        println!(
            "  adding one node moved {:.3}% of keys; optimum 1/(N+1) = {:.3}% (ratio {:.3})",
            moved_fraction * 100.0,
            optimum * 100.0,
            moved_fraction / optimum
        );
        println!("  keys moved between old nodes: {between_old}");
        println!(
            "  add_node took {:.3} ms (one run; see the criterion bench)",
            add_time.as_secs_f64() * 1e3
        );
    }
}
