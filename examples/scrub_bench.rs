//! Scrub throughput beside `sha256sum` over the same files, in one run:
//! the scrubber re-hashes every stored file (read + SHA-256, compared with
//! the index), and `sha256sum` does the same work with nothing to compare.
//!
//! `cargo build --release --examples && target/release/examples/scrub_bench [--json] [--mib N] [--file-kib K] [--rounds R]`

use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use tritontube::ContentKey;
use tritontube::store::{ContentStoreExt, LocalContentStore};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Drops the files from the page cache, so both sides read the disk alike
/// when the machine allows it (otherwise both read from memory, also alike).
fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

#[tokio::main]
async fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let mib = arg("--mib", 512);
    let file_kib = arg("--file-kib", 1024).max(1);
    let rounds = arg("--rounds", 5).max(1);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalContentStore::new(dir.path().join("node")).unwrap();
    let files = (mib * 1024 / file_kib).max(1);
    let body: Bytes = (0..file_kib * 1024)
        .map(|i| (i * 7 + 3) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut paths = Vec::new();
    for i in 0..files {
        let k: ContentKey = format!("v{}/chunk-0-{i:05}.m4s", i / 500).parse().unwrap();
        store.put_bytes(&k, body.clone()).await.unwrap();
        paths.push(dir.path().join("node").join(k.as_str()));
    }
    let (mut scrub, mut sum) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        drop_caches();
        let t = Instant::now();
        let pass = store.scrub_now().await.unwrap();
        assert_eq!(pass.files, files);
        assert_eq!(pass.bad, 0);
        scrub.push(mib as f64 / t.elapsed().as_secs_f64());
        drop_caches();
        let t = Instant::now();
        // One sha256sum over every file, in batches to stay under ARG_MAX.
        for batch in paths.chunks(2000) {
            let st = Command::new("sha256sum")
                .args(batch)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        sum.push(mib as f64 / t.elapsed().as_secs_f64());
    }
    let (scrub, sum) = (median(scrub), median(sum));
    if json {
        println!(
            "{{\"scrub_mib_s\": {scrub:.1}, \"sha256sum_mib_s\": {sum:.1}, \"ratio\": {:.3}, \"files\": {files}, \"mib\": {mib}}}",
            scrub / sum
        );
    } else {
        println!("{files} files, {mib} MiB, median of {rounds} rounds");
        println!("scrub      {scrub:8.1} MiB/s");
        println!("sha256sum  {sum:8.1} MiB/s");
        println!("ratio      {:8.3} (target >= 0.8)", scrub / sum);
    }
}
