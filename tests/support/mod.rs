//! Helpers shared by the test binaries (`sans_io`, `system`): each binary includes this folder
//! with `#[path = "../support/mod.rs"] mod support;` and uses what it needs, so the helpers a
//! binary leaves unused are allowed here.
//!
//! - [`alloc`]: the counting (per thread) and poisoning global allocator of `sans_io`.
//! - [`esp`]: IP packets with valid checksums, SAs of every suite.
//! - [`ims`]: a UE and an IMS core: the registration flow's messages, AKA as USIM and HSS,
//!   `pcscf run` inside a lab.
//! - [`inet`]: the Internet checksum.
//! - [`netns`]: two network namespaces joined by a veth pair, for the packet I/O backends.
//! - [`satable`]: SA-table entries and keys.
//! - [`sipp`]: SIPp in a lab namespace, and its regular expressions.
//! - [`worker`]: whole packets through a worker over the in-memory backend (also the worker
//!   fuzz target's rig).
//! - [`xdp`]: a veth pair for AF_XDP, frame building.
#![allow(dead_code)]

pub mod alloc;
pub mod esp;
pub mod ims;
pub mod inet;
pub mod netns;
pub mod satable;
pub mod sipp;
pub mod worker;
pub mod xdp;

use std::sync::{Mutex, MutexGuard};

/// Lower-case hex of `b` (keys and packets in messages, tool arguments).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hold the returned guard to run alone among the tests that also take it: the ones whose
/// exact counts or deadlines need the machine's CPUs to themselves (floods, many UEs, whole
/// `pcscf` processes under load). The tests of one binary run in parallel threads otherwise.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that panicked while holding it poisons it; the next one may still run alone.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
