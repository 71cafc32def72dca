//! The data plane: pinned poll-mode workers and what they do to each packet.
//!
//! - `classify.rs`: is a packet UDP (where is its payload) or ESP, from whom to whom
//!   ([`classify`]).
//! - `stats.rs`: per-worker, per-stage counters and drop reasons ([`WorkerStats`],
//!   [`DropReason`]).
//! - `queue.rs`: the bounded message queues between the workers and the registration thread
//!   ([`MsgQueue`], [`Datagram`]).
//! - `doorbell.rs`: when a producer must wake a queue's sleeping consumer ([`Doorbell`]).
//! - `pipeline.rs`: the stages one packet goes through, on its frame alone ([`Pipeline`]).
//! - `streams.rs`: SIP over TCP inside the UEs' SAs, one worker's ([`Streams`]).
//! - `worker.rs`: one pinned worker's batch loop over a packet backend, around a pipeline
//!   ([`Worker`]).

#![forbid(unsafe_code)]

mod classify;
mod doorbell;
mod pipeline;
mod queue;
mod stats;
mod streams;
mod worker;

pub use classify::{L4, classify, udp_checksum_ok};
pub use doorbell::Doorbell;
pub use pipeline::{InFrame, Pipeline, Reply, Verdict, WorkerConfig};
pub use queue::{
    Class, DIALOG_EVENT_PREFIX, Datagram, MSG_MAX, Msg, MsgQueue, NO_CONN, Protection, QueueError,
    Slot, split_dialog_event, worker_of,
};
pub use stats::{
    DIALOG_REFUSALS, DROP_REASONS, DropReason, SharedStats, WorkerStats, dialog_refusal_name,
    new_histogram,
};
pub use streams::{Framed, SWEEP_EVERY, Streams, set_id};
pub use worker::Worker;
