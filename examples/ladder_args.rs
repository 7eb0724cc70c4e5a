//! Prints the ffmpeg arguments TritonTube uses to transcode a file (one per
//! line), so a benchmark can time ffmpeg alone on exactly the same ladder.
//!
//! `ladder_args INPUT OUT_DIR`

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [input, out] = a.as_slice() else {
        eprintln!("usage: ladder_args INPUT OUT_DIR");
        std::process::exit(2);
    };
    let probe = tritontube::ingest::probe::probe(input.as_ref())
        .await
        .expect("a video");
    let ladder = tritontube::ingest::ladder::ladder(probe.width, probe.height);
    for arg in
        tritontube::ingest::ladder::ffmpeg_args(input.as_ref(), out.as_ref(), &probe, &ladder, 1)
    {
        println!("{arg}");
    }
}
