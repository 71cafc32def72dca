//! Lock-free anti-replay window (RFC 4303 §3.4.3; the ring-of-words idea of RFC 6479).
//!
//! The window is a ring of `W/32 + 1` 64-bit slots. Each slot packs a block tag (`seq >> 5`) in
//! its upper 32 bits and a 32-bit bitmap of that block's sequence numbers in its lower 32 bits.
//! Marking a sequence number is one CAS on one slot, so `check_and_set` needs only `&self` and is
//! safe from several threads: a slot holding an older block is re-tagged (its old bits belonged
//! to numbers already left of the window), a slot holding a newer block means "too old".
//! `highest` is advanced with `fetch_max`.
//!
//! RFC 4303 §3.4.3 order: [`ReplayWindow::precheck`] (read only, before the ICV is spent) and
//! [`ReplayWindow::check_and_set`] only after the ICV verified, so forged packets never move the
//! window.

use super::error::EspError;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Largest supported window.
pub const MAX_WINDOW: u32 = 1024;
/// Smallest supported window (RFC 4303 §3.4.3: 32 is the minimum, 64 the recommended default).
pub const MIN_WINDOW: u32 = 64;
/// Default window.
pub const DEFAULT_WINDOW: u32 = 64;
/// The receive-side replay state of one SA (32-bit sequence numbers, no ESN). The slots of a
/// window up to [`DEFAULT_WINDOW`] (3 slots) live inline; a larger window's are allocated, sized
/// by the window and not by [`MAX_WINDOW`]: with a million registered UEs the window is a large
/// part of the memory per UE.
pub struct ReplayWindow {
    // (u16s and a u32: with the inline slots the window is 40 bytes, and an Sa 72)
    window: u16,
    nslots: u16,
    /// Sequence numbers are 32-bit (no ESN).
    highest: AtomicU32,
    slots: Slots,
}

enum Slots {
    Inline([AtomicU64; INLINE_SLOTS]),
    Heap(Box<[AtomicU64]>),
}

const INLINE_SLOTS: usize = DEFAULT_WINDOW as usize / 32 + 1;

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("window", &self.window)
            .field("highest", &self.highest())
            .finish()
    }
}

impl ReplayWindow {
    /// A window of `window` packets, 64..=1024, rounded up to a multiple of 32.
    pub fn new(window: u32) -> Result<Self, EspError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Err(EspError::BadWindow);
        }
        let w = window.div_ceil(32) * 32;
        let n = w / 32 + 1;
        Ok(ReplayWindow {
            window: w as u16,
            nslots: n as u16,
            highest: AtomicU32::new(0),
            slots: if n as usize > INLINE_SLOTS {
                Slots::Heap((0..n).map(|_| AtomicU64::new(0)).collect())
            } else {
                Slots::Inline([const { AtomicU64::new(0) }; INLINE_SLOTS])
            },
        })
    }

    /// Window size in packets.
    pub fn size(&self) -> u32 {
        u32::from(self.window)
    }

    /// Restores the window of an SA rebuilt from persisted state: every number up to `top` (the
    /// highest accepted, as last persisted) counts as received, so none of them is accepted
    /// again (RFC 4303 §3.4.3); numbers above it are accepted as usual. Call it before the SA
    /// is published (workers may not use it meanwhile).
    pub fn restore_floor(&self, top: u32) {
        let top = u64::from(top);
        self.highest.store(top as u32, Ordering::Release);
        if top == 0 {
            return;
        }
        let last = top >> 5;
        let first = last.saturating_sub(u64::from(self.nslots) - 1);
        for block in first..=last {
            // bits of the numbers <= top in this block (all of them below the last block)
            let bits = if block == last {
                let n = (top & 31) + 1;
                if n == 32 {
                    0xffff_ffff
                } else {
                    (1u64 << n) - 1
                }
            } else {
                0xffff_ffff
            };
            self.slot(block << 5)
                .store((block << 32) | bits, Ordering::Release);
        }
    }

    /// Highest sequence number accepted so far (0 = none).
    pub fn highest(&self) -> u64 {
        u64::from(self.highest.load(Ordering::Acquire))
    }

    /// How many sequence numbers of the window (the [`ReplayWindow::size`] numbers ending at
    /// [`ReplayWindow::highest`]) were received: a snapshot for an operator's display, read
    /// while receivers may be marking, never used to accept or refuse a packet.
    pub fn received_in_window(&self) -> u32 {
        let h = self.highest();
        if h == 0 {
            return 0;
        }
        let lo = h.saturating_sub(u64::from(self.window) - 1).max(1);
        (lo..=h)
            .filter(|&seq| {
                let v = self.slot(seq).load(Ordering::Acquire);
                v >> 32 == seq >> 5 && v & (1 << (seq & 31)) != 0
            })
            .count() as u32
    }

    #[inline]
    fn slot(&self, seq: u64) -> &AtomicU64 {
        // the index is below nslots, the length of whichever array holds the slots
        let i = ((seq >> 5) % u64::from(self.nslots)) as usize;
        match &self.slots {
            Slots::Heap(s) => &s[i],
            Slots::Inline(s) => &s[i],
        }
    }

    /// Cheap read-only check before any crypto: is `seq` left of the window or already seen?
    #[inline]
    pub fn precheck(&self, seq: u32) -> Result<(), EspError> {
        let seq = u64::from(seq);
        if seq == 0 || seq + u64::from(self.window) <= self.highest() {
            return Err(EspError::TooOld);
        }
        let v = self.slot(seq).load(Ordering::Acquire);
        let (tag, bits) = (v >> 32, v & 0xffff_ffff);
        let want = seq >> 5;
        if tag > want {
            Err(EspError::TooOld)
        } else if tag == want && bits & (1 << (seq & 31)) != 0 {
            Err(EspError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Marks `seq` as received, atomically. Call only after the ICV verified. Fails (without
    /// marking) if it is too old or was marked meanwhile by another thread.
    pub fn check_and_set(&self, seq: u32) -> Result<(), EspError> {
        let seq = u64::from(seq);
        if seq == 0 || seq + u64::from(self.window) <= self.highest() {
            return Err(EspError::TooOld);
        }
        let want = seq >> 5;
        let bit = 1u64 << (seq & 31);
        let slot = self.slot(seq);
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let tag = cur >> 32;
            let new = if tag == want {
                if cur & bit != 0 {
                    return Err(EspError::Replayed);
                }
                cur | bit
            } else if tag < want {
                (want << 32) | bit
            } else {
                return Err(EspError::TooOld);
            };
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(v) => cur = v,
            }
        }
        self.highest.fetch_max(seq as u32, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_in_window_counts_what_the_window_holds() {
        let w = ReplayWindow::new(64).unwrap();
        assert_eq!(w.received_in_window(), 0);
        for seq in [1, 2, 3, 5, 8] {
            w.check_and_set(seq).unwrap();
        }
        assert_eq!((w.highest(), w.received_in_window()), (8, 5));
        // far ahead: only what is within the last 64 numbers counts
        w.check_and_set(100).unwrap();
        w.check_and_set(99).unwrap();
        assert_eq!(w.received_in_window(), 2);
        for seq in 37..=98 {
            w.check_and_set(seq).unwrap();
        }
        assert_eq!(w.received_in_window(), 64);
    }
}
