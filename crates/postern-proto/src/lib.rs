//! The gRPC wire contract (generated from `proto/postern/v1`) and the one place where wire types
//! turn into domain types (`postern-policy`, `postern-events`; docs/src/design.md style 3): `From`
//! towards the wire, `TryFrom` back, with a
//! typed error for anything invalid, never a panic. Proto types go no further than this crate's
//! users' edges.

#![forbid(unsafe_code)]

mod convert;
mod tracking;

pub use convert::WireError;

/// Generated code for package `postern.v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("postern.v1");
}
