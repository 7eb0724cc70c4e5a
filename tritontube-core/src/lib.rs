//! # TritonTube core
//!
//! The library behind TritonTube, a distributed video-sharing service:
//! people upload a video, it is transcoded to MPEG-DASH, and its files are
//! spread over storage nodes by a SHA-256 consistent-hash ring, with replicas.
//!
//! Start with these:
//!
//! - [`ring`]: the consistent-hash ring ([`ring::TokenRing`], [`ring::HashRing`]).
//!   Pure computation; available with `default-features = false`.
//! - [`id`]: validated names ([`VideoId`], [`FileName`], [`ContentKey`],
//!   [`NodeAddr`]). Every key is checked here before it reaches a store.
//! - [`layout`]: the cluster's layout as values, where a key is read and
//!   written under it, and the steps of a ring change. Pure, like [`ring`].
//! - [`error`]: the one [`Error`] type, and its mapping to HTTP / gRPC codes.
//!
//! With the default `runtime` feature:
//!
//! - [`store`]: the [`store::ContentStore`] trait (where bytes live) with a
//!   local-directory store, a storage-node client and the ring-routed,
//!   replicated network store.
//! - [`metadata`]: the [`metadata::MetadataStore`] trait (videos, cluster
//!   state, admin lock) on SQLite or etcd.
//! - [`proto`]: the gRPC protocols (storage node, admin).
//! - [`config`]: the binaries' command lines and TOML config files, and the
//!   typed store choices ([`config::MetadataConfig`], [`config::ContentConfig`]).
//!
//! The three binaries (`tritontube-web`, `tritontube-node`,
//! `tritontube-admin`) only parse flags and call into this crate.
#![warn(missing_docs)]

pub mod error;
pub mod id;
pub mod layout;
pub mod ring;

#[cfg(feature = "runtime")]
pub mod admin;
#[cfg(feature = "runtime")]
pub mod cluster;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod ingest;
#[cfg(feature = "runtime")]
pub mod metadata;
#[cfg(feature = "runtime")]
pub mod node;
#[cfg(feature = "runtime")]
pub mod proto;
#[cfg(feature = "runtime")]
pub mod server;
#[cfg(feature = "runtime")]
pub mod shutdown;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "runtime")]
pub mod testing;
#[cfg(feature = "runtime")]
pub mod web;

pub use error::{Error, Result};
pub use id::{ContentKey, FileName, NodeAddr, VideoId};
