//! The data plane: pinned poll-mode workers and what they do to each packet.
//!
//! - [`classify`]: is a packet UDP (where is its payload) or ESP, from whom to whom.
//! - [`stats`]: per-worker, per-stage counters and drop reasons.
//! - [`queue`]: the bounded message queues between the workers and the registration thread.
//! - [`worker`]: the per-packet pipeline of one pinned worker.

#![forbid(unsafe_code)]

pub mod classify;
pub mod queue;
pub mod stats;
pub mod worker;
