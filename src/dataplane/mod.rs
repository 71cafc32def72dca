//! The data plane: pinned poll-mode workers and what they do to each packet.
//!
//! - [`l3`]: classify an L3 packet (UDP / ESP / other) and write fresh IP + UDP headers.
//! - [`stats`]: per-worker, per-stage counters and drop reasons.
//! - [`queue`]: the bounded message queues between the workers and the registration thread.
//! - [`worker`]: the per-packet pipeline of one pinned worker.

pub mod l3;
pub mod queue;
pub mod stats;
pub mod worker;
