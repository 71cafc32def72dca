//! The data plane: pinned poll-mode workers and what they do to each packet.
//!
//! - [`classify`]: is a packet UDP (where is its payload) or ESP, from whom to whom.
//! - [`stats`]: per-worker, per-stage counters and drop reasons.
//! - [`queue`]: the bounded message queues between the workers and the registration thread.
//! - [`pipeline`]: the stages one packet goes through, on its frame alone.
//! - [`worker`]: one pinned worker's batch loop over a packet backend, around a pipeline.

#![forbid(unsafe_code)]

mod classify;
mod pipeline;
mod queue;
mod stats;
mod worker;

pub use classify::{L4, classify, udp_checksum_ok};
pub use pipeline::{InFrame, Pipeline, Reply, Verdict, WorkerConfig};
pub use queue::{Class, Datagram, MSG_MAX, Msg, MsgQueue, Protection, QueueError, Slot};
pub use stats::{DROP_REASONS, DropReason, SharedStats, WorkerStats, new_histogram};
pub use worker::Worker;
