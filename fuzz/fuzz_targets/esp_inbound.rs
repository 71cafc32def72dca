//! Fuzz the inbound ESP path: arbitrary bytes as an IP packet, for every suite. Must never panic
//! and must never move the replay window (a random packet cannot carry a valid ICV).
//! Run: `cargo +nightly fuzz run esp_inbound` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcscf::esp::{EspKeys, Sa, SaOptions, Suite};
use std::sync::OnceLock;

fn sas() -> &'static Vec<Sa> {
    static SAS: OnceLock<Vec<Sa>> = OnceLock::new();
    SAS.get_or_init(|| {
        Suite::ALL
            .iter()
            .map(|&s| {
                let keys = EspKeys::derive(s, &[7; 16], &[9; 16]);
                Sa::new(0x4242, s, &keys, SaOptions::default()).unwrap()
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let sa = &sas()[usize::from(sel) % Suite::ALL.len()];
    let mut buf = rest.to_vec();
    let _ = sa.inbound_ip(&mut buf);
    let mut buf = rest.to_vec();
    let _ = sa.decapsulate(&mut buf);
    let mut buf = rest.to_vec();
    let n = buf.len();
    let _ = sa.inbound(&mut buf, (n / 3)..n);
    assert_eq!(sa.highest_seq_received(), 0);
});
