//! Loom model of the doorbell (`dataplane::Doorbell`): a worker that queues a message while the
//! registration thread goes to sleep must never leave it asleep with the message unseen.
//!
//! ```text
//! RUSTFLAGS="--cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --no-default-features --test doorbell_loom
//! ```
//!
//! The queue is modelled by a counter written with release and read with acquire, as
//! crossbeam's `ArrayQueue` publishes a slot; the waker by a flag the ringing producer sets.
//! One producer is the whole handshake: more producers only share the one ring a sleep gets,
//! through the swap. (A two-producer model was tried: loom 0.7 reported an execution in which a
//! swap after the sleeper's fence read a value from before its arming, which the fence rules of
//! the C++ memory model forbid; it is not kept as a test that fails on the tool.)
//! Built only under `--cfg crossbeam_loom` (see `tests/satable_loom.rs`).
#![cfg(crossbeam_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use pcscf::dataplane::Doorbell;

/// The bell, the queue (messages queued) and the waker (rung or not).
struct World {
    bell: Arc<Doorbell>,
    queued: Arc<AtomicUsize>,
    woken: Arc<AtomicBool>,
}

impl World {
    fn new() -> World {
        World {
            bell: Arc::new(Doorbell::new()),
            queued: Arc::new(AtomicUsize::new(0)),
            woken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A producer thread of `batches` batches, each: queue, then ring; a ring that answers
    /// true wakes the consumer.
    fn producer(&self, batches: usize) -> loom::thread::JoinHandle<()> {
        let (bell, queued, woken) = (self.bell.clone(), self.queued.clone(), self.woken.clone());
        loom::thread::spawn(move || {
            for _ in 0..batches {
                queued.fetch_add(1, Ordering::Release);
                if bell.ring() {
                    woken.store(true, Ordering::Release);
                }
            }
        })
    }

    fn assert_woken(&self) {
        assert!(
            self.woken.load(Ordering::Acquire),
            "asleep with a message queued"
        );
    }
}

/// One producer against a consumer about to sleep: it sleeps only if it will be woken.
#[test]
fn a_message_queued_while_the_consumer_falls_asleep_wakes_it() {
    loom::model(|| {
        let w = World::new();
        let p = w.producer(1);
        w.bell.arm();
        let sleeps = w.queued.load(Ordering::Acquire) == 0;
        p.join().unwrap();
        if sleeps {
            w.assert_woken();
        }
    });
}

/// One producer with two batches against a consumer that sleeps, wakes, disarms and sleeps
/// again: each sleep that began with a message unseen is ended by a ring.
#[test]
fn two_batches_and_two_sleeps() {
    loom::model(|| {
        let w = World::new();
        let p = w.producer(2);
        let mut seen = 0;
        let mut slept_unseen = false;
        for _ in 0..2 {
            w.bell.arm();
            if w.queued.load(Ordering::Acquire) == seen {
                // asleep: a ring (or the producer's end) ends the model's wait
                slept_unseen = true;
                break;
            }
            w.bell.disarm();
            seen = w.queued.load(Ordering::Acquire);
        }
        p.join().unwrap();
        if slept_unseen && w.queued.load(Ordering::Acquire) > seen {
            w.assert_woken();
        }
    });
}
