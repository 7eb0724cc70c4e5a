//! Criterion benchmarks of the consistent-hash ring.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tritontube::ring::{HashRing, TokenRing, key_hash};

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("video-{}/chunk-1-{:05}.m4s", i / 100, i % 100))
        .collect()
}

fn lookup(c: &mut Criterion) {
    let keys = keys(1024);
    let mut ring = TokenRing::new(tritontube::ring::DEFAULT_VNODES);
    for i in 0..100 {
        ring.add_node(&format!("node-{i}:9000"), 1.0).unwrap();
    }
    let mut i = 0;
    c.bench_function("sha256_only", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(key_hash(black_box(&keys[i])))
        })
    });
    c.bench_function("lookup_100", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(ring.owner(black_box(&keys[i])).unwrap().len())
        })
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
