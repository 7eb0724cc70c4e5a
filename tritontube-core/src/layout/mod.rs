//! The cluster layout, as pure values and functions (no I/O; available with
//! `default-features = false`): the state a cluster is in
//! ([`ClusterState`]: members keyed by their node id and ring name,
//! weights, epoch, the change under way), where a key is read and written
//! under it ([`Placement`]), the steps of a ring change
//! ([`transition`]), and the planner ([`plan`]: what to copy and delete
//! for what the nodes hold). The cluster manager performs those steps against the
//! metadata store and the storage nodes; everything it decides is decided
//! here.

mod file;
mod placement;
pub mod plan;
mod state;
pub mod transition;

pub use file::{ObjectMeta, Sha256Digest};
pub use placement::{Placement, Ring, ring_of};
pub use state::{ChangeInfo, ClusterState, NodeEntry};
