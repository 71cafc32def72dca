//! Fuzz whole packets through a worker over the in-memory backend: byte 0 picks how
//! the rest arrives — plain SIP from the UE or from the core, or SIP inside ESP over one of a
//! registered UE's SAs (encrypted with its fixed keys, so the SIP stages behind ESP are reached);
//! bit 2 picks the stateless relay mode. Must never panic; every packet is counted once and every
//! frame goes back (tests/support/worker.rs checks). One rig per mode is kept across inputs (only
//! the ESP sequence numbers move). The same property runs as a proptest in CI
//! (tests/sans_io/worker_proptest.rs).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run worker` from fuzz/.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/worker.rs"]
mod worker_support;

thread_local! {
    static RIGS: RefCell<[worker_support::Rig; 2]> =
        RefCell::new([worker_support::rig(false), worker_support::rig(true)]);
}

fuzz_target!(|data: &[u8]| {
    let Some(&sel) = data.first() else { return };
    RIGS.with(|r| r.borrow_mut()[usize::from(sel & 4 != 0)].run(data));
});
