//! Tessera's wire protocol. The `.capnp` files beside this crate are the contract; the Rust in
//! `tessera_capnp.rs` is generated from them and committed, so building needs no `capnp`
//! compiler. `build.rs` fails the build when the generated file is older than the schema.

/// The protocol version this schema describes (`Gateway.version`).
pub const PROTOCOL_VERSION: u32 = 1;

#[allow(clippy::all, clippy::pedantic, unused, missing_docs)]
#[rustfmt::skip]
pub mod tessera_capnp;

pub use tessera_capnp::*;
