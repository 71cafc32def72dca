//! The tests that need no root, network namespace or external tool, in one binary: the sans-IO
//! cores (SIP, ESP, AKA), the SA table, the registrar and the worker over the in-memory
//! backend, and `pcscf` commands that touch no network. `cargo test --test sans_io`.
//!
//! The binary's global allocator counts allocations per thread (the zero-allocation tests
//! measure code run on their own thread, so the tests running beside them do not disturb the
//! count) and poisons freed blocks (the SA table's use-after-free stress test): support/alloc.rs.
//! The SA table's lookup allocation count is tests/satable_alloc.rs, alone: it says why.

#[path = "../support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

mod aka_digest;
mod aka_flow;
mod aka_milenage;
mod aka_proptest;
mod ctl;
mod dataplane_worker;
mod esp_alloc;
mod esp_bad_input;
mod esp_roundtrip;
mod esp_threads;
mod key_hygiene;
mod keylog_mode;
mod layering;
mod manpage;
mod metrics_exposition;
mod oversize_report;
mod packaging;
mod phone_register;
mod reg_event;
mod registration_flow;
mod registration_overload;
mod rfc4475;
mod satable_basic;
mod satable_shared_sa;
mod satable_stress;
mod sip_alloc;
mod sip_proptest;
mod sip_rewrite;
mod state_restore;
mod stateless_relay_gate;
mod tcp_endpoint;
mod tcp_host;
mod ue_tcp;
mod worker_calls;
mod worker_core_tcp;
mod worker_hostile;
mod worker_proptest;
mod worker_tcp;
