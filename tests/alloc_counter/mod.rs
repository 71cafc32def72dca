//! A counting global allocator for the zero-allocation tests. Each test binary installs it:
//! `#[global_allocator] static GLOBAL: alloc_counter::Counting = alloc_counter::Counting;`.
//! Counts are per thread, so other tests' threads do not disturb them.
#![allow(dead_code)]

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

// SAFETY: every call forwards to `System`; counting has no side effect on the allocation.
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
