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
pub mod tcp;
pub mod wire;

/// The unit tests' counting allocator, for the zero-allocation checks inside src/ (the
/// integration tests have their own, tests/alloc_counter). Counts are per thread, so the
/// other tests running meanwhile do not disturb a count.
#[cfg(test)]
pub(crate) mod test_alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    struct Counting;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    fn bump() {
        // a const-initialised thread-local without a destructor: touching it never allocates
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: every call forwards to `System`; counting has no effect on the allocation.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            bump();
            unsafe { System.alloc(l) }
        }
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            bump();
            unsafe { System.alloc_zeroed(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            bump();
            unsafe { System.realloc(p, l, n) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Run `f` and count the allocations this thread made meanwhile.
    pub(crate) fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
        let before = COUNT.with(Cell::get);
        let r = f();
        (r, COUNT.with(Cell::get) - before)
    }
}
