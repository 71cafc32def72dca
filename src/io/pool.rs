//! A fixed pool of packet frames for the backends that copy packets (sockets, AF_PACKET).
//!
//! Owns: one anonymous `mmap` of `n × FRAME_SIZE` bytes made at start (page-aligned, populated,
//! never grown) and a free list of frame indices. `alloc`/`free` are O(1) and allocate nothing;
//! a frame is either on the free list or owned by exactly one holder (the backend's RX path, the
//! worker, or the TX path), which `in_use` checks (a double free is ignored and debug-asserted).

use std::io;
use std::ptr::NonNull;

use crate::io::FRAME_SIZE;

/// `n` frames of `FRAME_SIZE` bytes in one allocation, and the indices of the free ones.
#[derive(Debug)]
pub struct FramePool {
    base: NonNull<u8>,
    n: u32,
    free: Vec<u32>,
    in_use: Vec<bool>,
}

// SAFETY: the pool owns its mapping exclusively (no aliasing pointers escape except through
// `&mut self` borrows), so moving it to another thread is sound.
unsafe impl Send for FramePool {}

impl FramePool {
    /// Map `n` frames (n ≥ 1) and put them all on the free list.
    pub fn new(n: u32) -> io::Result<Self> {
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pool of 0 frames",
            ));
        }
        let len = n as usize * FRAME_SIZE;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        Ok(FramePool {
            base,
            n,
            // Popped from the end: hand out low indices first.
            free: (0..n).rev().collect(),
            in_use: vec![false; n as usize],
        })
    }

    /// Number of frames.
    pub fn capacity(&self) -> u32 {
        self.n
    }

    /// Number of free frames.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Take a free frame.
    #[inline]
    pub fn alloc(&mut self) -> Option<u32> {
        let f = self.free.pop()?;
        self.in_use[f as usize] = true;
        Some(f)
    }

    /// Take a free frame as an empty packet at [`HEADROOM`](crate::io::HEADROOM) for `side`.
    #[inline]
    pub fn alloc_desc(&mut self, side: crate::io::Side) -> Option<crate::io::Desc> {
        self.alloc().map(|frame| crate::io::Desc {
            frame,
            start: crate::io::HEADROOM as u16,
            end: crate::io::HEADROOM as u16,
            side,
        })
    }

    /// Give a frame back. Out-of-range indices and double frees are ignored (debug-asserted).
    #[inline]
    pub fn free(&mut self, f: u32) {
        let ok = (f as usize) < self.in_use.len() && self.in_use[f as usize];
        debug_assert!(ok, "bad or double free of frame {f}");
        if ok {
            self.in_use[f as usize] = false;
            self.free.push(f);
        }
    }

    /// The whole frame `f` (`FRAME_SIZE` bytes). Panics if `f` is out of range.
    #[inline]
    pub fn frame_mut(&mut self, f: u32) -> &mut [u8] {
        assert!(f < self.n, "frame index {f} out of range");
        // SAFETY: `f < n`, so the range lies inside the mapping; `&mut self` makes the borrow
        // exclusive for its lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.base.as_ptr().add(f as usize * FRAME_SIZE),
                FRAME_SIZE,
            )
        }
    }

    /// Read-only view of frame `f`.
    #[inline]
    pub fn frame(&self, f: u32) -> &[u8] {
        assert!(f < self.n, "frame index {f} out of range");
        // SAFETY: as in `frame_mut`; shared borrow of `self` keeps writers out.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(f as usize * FRAME_SIZE), FRAME_SIZE)
        }
    }

    /// Raw pointer to byte `off` of frame `f`, for iovecs handed to the kernel. The caller must
    /// own the frame (allocated, not yet freed) while the kernel writes through the pointer.
    #[inline]
    pub(crate) fn ptr(&mut self, f: u32, off: usize) -> *mut u8 {
        assert!(f < self.n && off <= FRAME_SIZE);
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.base.as_ptr().add(f as usize * FRAME_SIZE + off) }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`; no borrow outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.n as usize * FRAME_SIZE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_roundtrip() {
        let mut p = FramePool::new(4).unwrap();
        let a: Vec<u32> = (0..4).map(|_| p.alloc().unwrap()).collect();
        assert_eq!(a, vec![0, 1, 2, 3]);
        assert!(p.alloc().is_none());
        p.frame_mut(2)[FRAME_SIZE - 1] = 7;
        assert_eq!(p.frame(2)[FRAME_SIZE - 1], 7);
        p.free(2);
        assert_eq!(p.available(), 1);
        assert_eq!(p.alloc(), Some(2));
    }
}
