//! TritonTube: a distributed video-sharing service and an embeddable library.
//!
//! This facade re-exports [`tritontube_core`]; see its documentation.
#![warn(missing_docs)]

pub use tritontube_core::*;
