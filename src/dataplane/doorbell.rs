//! The doorbell between the workers and a sleeping consumer (the registration thread, the core
//! TCP thread): a producer rings the consumer's waker only when the consumer is, or is about to
//! be, asleep. A busy consumer takes what was queued on its next pass anyway, so the eventfd
//! write on the worker's side and the spurious pass it causes on the consumer's are saved
//! (issue 15: wake the registration thread only when there is something to wake it for).
//!
//! Owns: one flag, `asleep`, and the two fences that make the handshake sound. The consumer
//! sets the flag, then looks at its queues once more before it sleeps; a producer queues, then
//! reads the flag. With a sequentially consistent fence between each side's write and its
//! read, at least one of them sees the other's write: either the consumer finds the message and
//! does not sleep, or the producer finds the flag and rings (the store-buffering pattern; the
//! model is `tests/doorbell_loom.rs`).

#[cfg(crossbeam_loom)]
use loom::sync::atomic::{AtomicBool, Ordering, fence};
#[cfg(not(crossbeam_loom))]
use std::sync::atomic::{AtomicBool, Ordering, fence};

/// Whether the consumer sleeps, shared with its producers.
#[derive(Debug)]
pub struct Doorbell {
    asleep: AtomicBool,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell::new()
    }
}

impl Doorbell {
    pub fn new() -> Doorbell {
        Doorbell {
            asleep: AtomicBool::new(false),
        }
    }

    /// Consumer side, before it sleeps: from here a producer's [`ring`](Self::ring) answers
    /// true. The consumer must then look at every queue whose producers ring this bell, and
    /// not sleep if one is not empty: a message queued before this call may not ring.
    pub fn arm(&self) {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Consumer side, once awake (or when it decided not to sleep).
    pub fn disarm(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// Producer side, after its messages are queued: whether to wake the consumer. True for
    /// one producer per sleep; the others find the flag already cleared.
    pub fn ring(&self) -> bool {
        fence(Ordering::SeqCst);
        self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::AcqRel)
    }
}
