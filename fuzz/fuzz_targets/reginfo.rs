//! Fuzz the `application/reginfo+xml` parser (RFC 3680): nothing may panic, every bound holds
//! on what it returns, and contact matching and version ordering run on whatever it parsed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcscf::sip::reginfo::{self, Versions};

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = reginfo::parse(data) else {
        return;
    };
    assert!(doc.registrations.len() <= reginfo::MAX_REGISTRATIONS);
    for reg in &doc.registrations {
        assert!(reg.contacts.len() <= reginfo::MAX_CONTACTS);
        assert!(reg.aor.len() <= reginfo::MAX_VALUE && reg.id.len() <= reginfo::MAX_VALUE);
        for c in &reg.contacts {
            assert!(!c.uri.is_empty() && c.uri.len() <= reginfo::MAX_VALUE);
            let _ = reg.contacts_at(&c.uri, 5060).count();
            let _ = reg.contacts_at(b"[2001:db8::2]", 7005).count();
        }
    }
    let mut versions = Versions::default();
    let _ = versions.accept(&doc);
    let _ = versions.accept(&doc);
});
