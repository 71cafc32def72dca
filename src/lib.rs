//! pcscf: a P-CSCF (the first SIP hop of an IMS network) that runs as a user-space packet
//! processor and does ESP itself.
//!
//! The protocol core ([`wire`], [`sip`], [`esp`], [`aka`]) is sans-IO: it takes bytes and a `now`
//! and knows nothing of sockets or threads, so every rule is testable without a network.
//!
//! The public surface, lowest layer first (a module uses only those above it in this list;
//! `tests/layering.rs` checks it): [`wire`] (IP/UDP/Ethernet views) · [`aka`], [`esp`], [`io`]
//! (AKA, ESP, packet backends) · [`sip`] (parse, edit, the P-CSCF's rules) · [`satable`],
//! [`config`] · [`dataplane`] (the workers) · [`control`] (the registrar) · [`daemon`] (`pcscf
//! run`), [`sim`] (UE and core simulators) · [`lab`] (`pcscf lab`). Each module's `mod.rs`
//! re-exports what it offers; its files are private, except a few sub-namespaces that are
//! public on purpose (`sip::rules`, `sip::headers`, `aka::digest`, `io::xdp`,
//! `control::registrar`, the three simulators).
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
