//! Fuzz the registration thread's dialog book (`control::dialogs`): arbitrary dialog events
//! (messages a worker relayed, or anything), for a few bindings, from either side, with
//! releases in between. Must never panic, and the book must stay consistent after every step.
//! The events are cut at 0xff bytes; an event's first byte picks the side, the binding and
//! whether that binding is released first. Seeds: SIP messages (an INVITE, its 200, a BYE) framed
//! so, e.g. `\x00INVITE...\xff\x01SIP/2.0 200...\xff\x08` (a call, then its release).
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run dialogs` from the crate root.
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pcscf::control::dialogs::{Dialogs, Legs, UeLeg};
use pcscf::io::Side;
use pcscf::sip::OwnUris;

fuzz_target!(|data: &[u8]| {
    let own = OwnUris::new(
        &["pcscf.test"],
        &["10.46.0.1".parse().unwrap(), "10.0.1.10".parse().unwrap()],
        &[5060],
        Some(5100..=5199),
    );
    let legs = Legs {
        core: "10.0.1.10:5060".parse().unwrap(),
        via_sent_by: "10.0.1.10:5060",
        next_hop: Some("10.0.1.30:6060".parse().unwrap()),
        core_tcp: false,
        ue: Some(UeLeg {
            from: "10.46.0.1:5102".parse().unwrap(),
            to: "10.46.0.6:7005".parse().unwrap(),
            spi: 4096,
        }),
    };
    let mut book = Dialogs::new();
    let mut out = VecDeque::new();
    let start = Instant::now();
    for (i, ev) in data.split(|&b| b == 0xff).enumerate() {
        let Some((&sel, msg)) = ev.split_first() else {
            continue;
        };
        let side = if sel & 1 == 0 { Side::Ue } else { Side::Core };
        let binding = u64::from((sel >> 1) & 3);
        let now = start + Duration::from_secs(u64::from(sel >> 6) * 100 * i as u64);
        if sel & 0x08 != 0 {
            book.release(binding, &legs, &mut out);
            assert!(!book.has_calls(binding));
        }
        book.handle_event(side, binding, msg, None, &own, now);
        book.check().unwrap();
    }
    // whatever a release wrote parses as SIP
    for o in out {
        assert!(pcscf::sip::Message::parse(&o.payload).is_ok());
    }
});
