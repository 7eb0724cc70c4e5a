//! The cluster layout, as pure values and functions (no I/O; available with
//! `default-features = false`): the state a cluster is in
//! ([`ClusterState`]: members keyed by their node id and ring name,
//! weights, epoch, the change under way), where a key is read and written
//! under it ([`Placement`]), and the steps of a ring change
//! ([`transition`]). The cluster manager performs those steps against the
//! metadata store and the storage nodes; everything it decides is decided
//! here.

mod placement;
mod state;
pub mod transition;

pub use placement::{Placement, Ring, ring_of};
pub use state::{ChangeInfo, ClusterState, NodeEntry};
