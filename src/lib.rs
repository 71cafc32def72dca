//! pcscf: a P-CSCF (the first SIP hop of an IMS network) that runs as a user-space packet
//! processor and does ESP itself.
//!
//! The protocol core (`sip`, and later `esp` and `aka`) is sans-IO: it takes bytes and a `now`
//! and knows nothing of sockets or threads, so every rule is testable without a network.
#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_debug_implementations)]

pub mod aka;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod esp;
pub mod io;
pub mod lab;
/// Load-test hook only (`--features bench-hooks`): bench UEs whose keys anyone can compute.
#[cfg(feature = "bench-hooks")]
pub mod preload;
pub mod satable;
pub mod sim;
pub mod sip;
pub mod wire;
