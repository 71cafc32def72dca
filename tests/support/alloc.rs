//! The global allocator of the `sans_io` binary, for two kinds of test:
//! - zero-allocation tests count the allocations their own thread makes ([`count`],
//!   [`allocations_in`]). Counts are per thread, so the other tests running on other threads
//!   of the same binary do not disturb them; the code measured must run on the test's thread.
//! - use-after-free checks (the SA table's stress test): every freed block is overwritten with
//!   0xa5 before it goes back to the system allocator, so a reader that still follows a freed
//!   entry or `Sa` sees garbage and fails its consistency checks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // A const-initialised thread-local without a destructor: touching it never allocates.
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call forwards to `System`; counting has no side effect on the allocation, and
// poisoning only overwrites a block the caller is giving back (realloc moves to a new block and
// frees the old one through `dealloc`, so a moved-from block is poisoned too).
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
        unsafe {
            std::ptr::write_bytes(p, 0xa5, l.size());
            System.dealloc(p, l)
        }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        bump();
        // SAFETY: the caller guarantees `n` rounded up to `l.align()` does not overflow.
        let new_l = unsafe { Layout::from_size_align_unchecked(n, l.align()) };
        let q = unsafe { System.alloc(new_l) };
        if !q.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(p, q, l.size().min(n));
                self.dealloc(p, l);
            }
        }
        q
    }
}

/// Allocations made by this thread so far.
pub fn count() -> u64 {
    COUNT.with(Cell::get)
}

/// Run `f` and count the allocations this thread made meanwhile.
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = count();
    let r = f();
    (r, count() - before)
}
