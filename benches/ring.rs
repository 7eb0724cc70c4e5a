//! Criterion benchmarks of the consistent-hash ring, with the floor (SHA-256
//! of the same keys alone) and the peer (the `hashring` crate's `get` on the
//! same nodes and keys) measured in the same run.
//!
//! `cargo bench --bench ring`

use std::hint::black_box;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tritontube::ring::{DEFAULT_VNODES, HashRing, TokenRing, key_hash};

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("video-{}/chunk-1-{:05}.m4s", i * 7919 % 100_000, i % 1000))
        .collect()
}

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8090", i / 256, i % 256))
        .collect()
}

fn ring(n: usize) -> TokenRing {
    let names = names(n);
    TokenRing::with_nodes(DEFAULT_VNODES, names.iter().map(|s| (s.as_str(), 1.0))).unwrap()
}

fn lookups(c: &mut Criterion) {
    let keys = keys(4096);
    let mut g = c.benchmark_group("lookup");
    let mut i = 0;
    g.bench_function("sha256_only", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(key_hash(black_box(&keys[i])))
        })
    });
    for n in [10, 100, 1000] {
        let r = ring(n);
        g.bench_function(format!("owner_{n}_nodes"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(r.owner(black_box(&keys[i])).unwrap().len())
            })
        });
        // The ring's own part, for callers that already hold the hash.
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        g.bench_function(format!("owner_by_hash_{n}_nodes"), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(r.owner_by_hash(black_box(hashes[i])).unwrap().len())
            })
        });
        if n == 100 {
            g.bench_function("preference3_100_nodes", |b| {
                let mut out = [""; 3];
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(r.preference(black_box(&keys[i]), &mut out).unwrap())
                })
            });
            // The peer: hashring's ring with the same number of points per
            // node, as it is used (its default hasher, SipHash).
            let mut peer: hashring::HashRing<String> = hashring::HashRing::new();
            peer.batch_add(
                names(n)
                    .iter()
                    .flat_map(|name| (0..DEFAULT_VNODES).map(move |v| format!("{name}#{v}")))
                    .collect(),
            );
            g.bench_function("hashring_get_100_nodes", |b| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(peer.get(black_box(&keys[i])).map(|s| s.len()))
                })
            });
        }
    }
    g.finish();
}

fn changes(c: &mut Criterion) {
    let base = ring(100);
    let mut g = c.benchmark_group("change_100_nodes");
    // Only the change is timed: each iteration starts from its own
    // (unshared) copy of a 100-node ring, made before the clock starts.
    g.bench_function("add_node", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut r = base.clone();
                r.add_node("10.9.9.8:8090", 1.0).unwrap();
                r.remove_node("10.9.9.8:8090").unwrap();
                let t = Instant::now();
                r.add_node("10.9.9.9:8090", 1.0).unwrap();
                total += t.elapsed();
                black_box(&r);
            }
            total
        })
    });
    g.bench_function("remove_node", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut r = base.clone();
                r.add_node("10.9.9.8:8090", 1.0).unwrap();
                let t = Instant::now();
                r.remove_node("10.0.0.7:8090").unwrap();
                total += t.elapsed();
                black_box(&r);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, lookups, changes);
criterion_main!(benches);
