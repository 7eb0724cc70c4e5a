//! Embedding the ring: place files on storage nodes, with replicas, and see
//! what moves when a node joins.
//!
//! Run with `cargo run --example embed_ring`.

use tritontube::ring::{HashRing, TokenRing, diff};

fn main() -> Result<(), tritontube::Error> {
    // Three nodes, the default number of virtual nodes each.
    let mut ring = TokenRing::with_nodes(
        tritontube::ring::DEFAULT_VNODES,
        [
            ("localhost:8090", 1.0),
            ("localhost:8091", 1.0),
            ("localhost:8092", 1.0),
        ],
    )?;

    // Where does a file live? Its key is "<videoId>/<filename>".
    let key = "PIKACHU/manifest.mpd";
    println!("{key} is owned by {}", ring.owner(key)?);

    // Two replicas: the first two distinct nodes clockwise. No allocation.
    let mut replicas = [""; 2];
    let n = ring.preference(key, &mut replicas)?;
    println!("its replicas: {:?}", &replicas[..n]);

    // A snapshot is cheap to clone and share; changing the ring copies it.
    let before = ring.clone();
    ring.add_node("localhost:8093", 1.0)?;
    let changes = diff(&before, &ring, 2);
    let moved: f64 = changes.iter().map(|c| c.fraction()).sum();
    println!(
        "adding localhost:8093 changes the owners of {:.1}% of the hash space, in {} stretches",
        moved * 100.0,
        changes.len()
    );
    for (node, share) in ring.shares() {
        println!("  {node}: {:.1}% of the keys", share * 100.0);
    }
    Ok(())
}
