//! The data plane: pinned poll-mode workers and what they do to each packet.
//!
//! - [`classify`]: is a packet UDP (where is its payload) or ESP, from whom to whom.
//! - [`stats`]: per-worker, per-stage counters and drop reasons.
//! - [`queue`]: the bounded message queues between the workers and the registration thread.
//! - [`pipeline`]: the stages one packet goes through, on its frame alone.
//! - [`worker`]: one pinned worker's batch loop over a packet backend, around a pipeline.

#![forbid(unsafe_code)]

pub mod classify;
pub mod pipeline;
pub mod queue;
pub mod stats;
pub mod worker;
