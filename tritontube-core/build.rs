//! Compiles the protocol files in `proto/` with protox (a protobuf compiler
//! written in Rust), so building needs no `protoc` on the machine. Without the
//! `runtime` feature (the pure ring) there is nothing to compile.

#[cfg(feature = "runtime")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::path::PathBuf;
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .join("..")
        .join("proto");
    let files = [
        "tritontube/v1/admin.proto",
        "tritontube/v1/storage.proto",
        "tritontube/v1/cluster.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    // File bodies as `Bytes`: a chunk moves from the socket to the disk
    // (and back) without a copy.
    tonic_prost_build::configure()
        .bytes(".tritontube.storage.v1.PutRequest.chunk")
        .bytes(".tritontube.storage.v1.GetResponse.chunk")
        .compile_fds(fds)?;
    Ok(())
}

#[cfg(not(feature = "runtime"))]
fn main() {}
