//! The four AF_XDP rings as mapped from the kernel: single-producer / single-consumer queues
//! of `u64` addresses (fill, completion) or `xdp_desc` (rx, tx).
//!
//! Owns: the mmap of one ring and its index arithmetic. Indices are free-running `u32`s
//! (wrapping); a slot is `index & mask`. We keep cached copies of both indices and touch the
//! shared ones only once per batch: the other side's index is read with `Acquire` (its slot
//! writes are then visible to us), ours is published with `Release` (our slot writes become
//! visible before the index does). This is the protocol the kernel's `xsk_queue.h` expects.

use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring of `T` entries.
pub struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    descs: *mut T,
    mask: u32,
    size: u32,
    /// Our view of the producer index (exact when we produce).
    cached_prod: u32,
    /// Our view of the consumer index (exact when we consume).
    cached_cons: u32,
    _t: PhantomData<T>,
}

// SAFETY: the ring is exclusively owned by one socket (`Port`) of an `XdpIo` or `XdpPair`; the raw pointers point into a mapping
// it owns, and the kernel side synchronises only through the atomics. Moving the owner to
// another thread is fine; sharing is prevented because `Ring` is not `Sync`.
unsafe impl<T> Send for Ring<T> {}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("size", &self.size)
            .field("cached_prod", &self.cached_prod)
            .field("cached_cons", &self.cached_cons)
            .finish()
    }
}

impl<T> Ring<T> {
    /// Map the ring of `size` entries at page offset `pgoff` of socket `fd`, with the
    /// offsets the kernel gave in `XDP_MMAP_OFFSETS`.
    pub fn map(
        fd: RawFd,
        pgoff: u64,
        size: u32,
        off: &libc::xdp_ring_offset,
    ) -> io::Result<Ring<T>> {
        assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a fresh shared mapping of the socket's ring; the kernel checks the offset
        // names a ring that was set up and the length fits it. Nothing aliases it yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("mmap AF_XDP ring: {e}")));
        }
        let base = p as *mut u8;
        // SAFETY: the kernel's offsets lie inside the mapping (map_len covers desc + entries,
        // and producer/consumer/flags precede desc); they are 4-byte aligned u32 words and
        // the descriptor array is aligned for T (8 bytes).
        let (producer, consumer, flags, descs) = unsafe {
            (
                base.add(off.producer as usize) as *const AtomicU32,
                base.add(off.consumer as usize) as *const AtomicU32,
                base.add(off.flags as usize) as *const AtomicU32,
                base.add(off.desc as usize) as *mut T,
            )
        };
        let mut r = Ring {
            map: NonNull::new(base).expect("mmap returned non-null"),
            map_len,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            size,
            cached_prod: 0,
            cached_cons: 0,
            _t: PhantomData,
        };
        r.cached_prod = r.prod().load(Ordering::Relaxed);
        r.cached_cons = r.cons().load(Ordering::Relaxed);
        Ok(r)
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping (see `map`); AtomicU32 has u32's layout.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as in `prod`.
        unsafe { &*self.consumer }
    }

    /// Whether the kernel asks for a wakeup (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `prod`.
        let f = unsafe { &*self.flags };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, tx) ----

    /// Free slots, up to `want` (reloads the consumer index only when the cache says short).
    pub fn prod_reserve(&mut self, want: u32) -> u32 {
        let mut free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.cons().load(Ordering::Acquire);
            free = self.size - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Write entry `i` of the reserved batch (0-based from the current producer index).
    pub fn prod_write(&mut self, i: u32, v: T) {
        let slot = self.cached_prod.wrapping_add(i) & self.mask;
        // SAFETY: slot < size, inside the descriptor array; the slot is free (reserved via
        // prod_reserve), so the kernel does not read it until we publish.
        unsafe { self.descs.add(slot as usize).write(v) }
    }

    /// Publish `n` written entries.
    pub fn prod_submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.prod().store(self.cached_prod, Ordering::Release);
    }

    /// Entries we produced that the kernel has not consumed yet.
    pub fn prod_outstanding(&mut self) -> u32 {
        self.cached_cons = self.cons().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    // ---- consumer side (rx, completion) ----

    /// Entries ready, up to `want`.
    pub fn cons_peek(&mut self, want: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cached_cons);
        if avail < want {
            self.cached_prod = self.prod().load(Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        avail.min(want)
    }

    /// Read entry `i` of the peeked batch.
    pub fn cons_read(&self, i: u32) -> T {
        let slot = self.cached_cons.wrapping_add(i) & self.mask;
        // SAFETY: slot < size; the entry was published by the kernel (peeked after an Acquire
        // load of the producer index) and is not reused until we release it.
        unsafe { self.descs.add(slot as usize).read() }
    }

    /// Hand `n` consumed entries back.
    pub fn cons_release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.cons().store(self.cached_cons, Ordering::Release);
    }

    pub fn size(&self) -> u32 {
        self.size
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; no references into it outlive
        // the ring (all accessors borrow `self`).
        unsafe {
            libc::munmap(self.map.as_ptr() as *mut libc::c_void, self.map_len);
        }
    }
}
