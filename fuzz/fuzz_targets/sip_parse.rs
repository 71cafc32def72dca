//! Fuzz the SIP parser, validator and the P-CSCF rewrites: nothing may panic, and whatever a
//! rewrite produces must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::sip::rules::{self, Forward, ProxyIdentity};
use pcscf::sip::{Editor, Message};

static OWN: std::sync::LazyLock<pcscf::sip::OwnUris> = std::sync::LazyLock::new(|| {
    pcscf::sip::OwnUris::new(&["pcscf.example.net"], &[], &[5060], Some(5100..=5199))
});

fn me() -> ProxyIdentity<'static> {
    ProxyIdentity {
        via_sent_by: b"10.0.1.10:5060",
        via_transport: b"UDP",
        path_uri: b"sip:term@pcscf.example.net;lr",
        own: &OWN,
        visited_network_id: b"vnet",
        orig_ioi: b"example.net",
    }
}

fuzz_target!(|data: &[u8]| {
    let mut frame = vec![0u8; data.len() + 1024];
    frame[512..512 + data.len()].copy_from_slice(data);
    let Ok(mut ed) = Editor::new(&mut frame, 512, 512 + data.len()) else {
        return;
    };
    let _ = ed.view().validate();
    if ed.view().is_method(b"REGISTER") {
        if rules::check_register(ed.view(), &[(IntegAlg::HmacSha1_96, EncAlg::Null)]).is_ok() {
            let fw = Forward {
                source: "10.1.2.3:5060".parse().unwrap(),
                protected: false,
                branch: 1,
                icid: 1,
            };
            let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
            if rules::rewrite_register(&mut ed, &me(), &fw, &mut scratch).is_ok() {
                Message::parse(ed.as_bytes()).expect("rewritten REGISTER parses");
            }
        }
    } else if ed.view().status() == Some(401) {
        if rules::rewrite_401(&mut ed, b"ipsec-3gpp;alg=null").is_ok() {
            Message::parse(ed.as_bytes()).expect("rewritten 401 parses");
        }
    } else if ed.view().status().is_some() {
        let _ = rules::rewrite_200(&mut ed, None);
    }
});
