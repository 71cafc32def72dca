//! Fuzz the workers' SIP over TCP inside a UE's SAs (`dataplane::streams`): byte 0 picks the
//! mode — bit 7 set: the rest is one hostile TCP segment over the UE's SA1 or SA4 (bits 0–2 of
//! byte 1: which SA, its ports forced to the SA's, its checksum made right); else the rest is the
//! byte stream of the UE's honest connection (framing, pings, SIP). Must never panic; every
//! frame goes back; what the worker sends toward the UE is ESP over its SA3 or SA2
//! (tests/support/worker.rs checks). The same properties run as proptests in CI
//! (tests/sans_io/worker_proptest.rs).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run worker_tcp` from fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/worker.rs"]
mod worker_support;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 0x80 != 0 {
        worker_support::run_tcp_segment(rest);
    } else {
        worker_support::run_tcp_stream(rest);
    }
});
