//! Generated gRPC code for the protocols in `proto/tritontube/v1/`.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The course project's admin protocol (package `tritontube`), wire-identical.
pub mod admin {
    tonic::include_proto!("tritontube");
}

/// The storage-node protocol.
pub mod storage {
    tonic::include_proto!("tritontube.storage.v1");
}

/// Admin features beyond the course project's protocol.
pub mod cluster {
    tonic::include_proto!("tritontube.cluster.v1");
}
