//! The tests that need root (network namespaces, veth pairs, raw, AF_PACKET and AF_XDP sockets,
//! bpf(2)) or an external tool (SIPp, tshark, scapy, dnsmasq), in one binary:
//! `cargo test --test system`. A missing privilege or tool fails a test, never skips it.
//!
//! The tests run in parallel threads of one process, so whatever they create on the host is
//! named per test (namespace and interface names carry the process id and a tag unique in this
//! binary, temporary files the namespace name), and the ones whose exact counts or timings
//! suffer from a loaded machine take [`support::exclusive`] first.

#[path = "../support/mod.rs"]
mod support;

mod ctl_netns;
mod dns_netns;
mod esp_interop;
mod harmless_netns;
mod hostile_tcp;
mod hostile_ue_netns;
mod io_afpacket;
mod io_neigh;
mod io_socket;
mod lab;
mod registration_netns;
mod registration_v6;
mod run_netns;
mod sipp_calls;
mod sipp_phones;
mod sipp_reg_event;
mod sipp_registration;
mod sipp_ue;
mod state_netns;
mod ue_tcp_netns;
mod xdp_prog;
mod xdp_veth;
