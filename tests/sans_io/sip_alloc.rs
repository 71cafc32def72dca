//! Zero heap allocations on the SIP hot path: parse, validate, the §1.1 checks and the full
//! REGISTER rewrite, the 401 and 200 rewrites, and building an error response. A counting global
//! allocator in this test binary counts every allocation made by this thread.

use std::net::SocketAddr;

use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::sip::rules::{self, Forward, ProxyIdentity};
use pcscf::sip::{Editor, Message};

fn allocations_in(f: impl FnOnce()) -> u64 {
    crate::support::alloc::allocations_in(f).1
}

const REGISTER: &[u8] = include_bytes!("../data/ims/register1_v4.sip");
const REGISTER_V6: &[u8] = include_bytes!("../data/ims/register1_v6.sip");
const CHALLENGE: &[u8] = include_bytes!("../data/ims/401_from_scscf.sip");
const OK: &[u8] = include_bytes!("../data/ims/200_register.sip");

const PREFS: &[(IntegAlg, EncAlg)] = &[
    (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
    (IntegAlg::HmacMd5_96, EncAlg::Null),
];
static OWN: std::sync::LazyLock<pcscf::sip::OwnUris> = std::sync::LazyLock::new(|| {
    pcscf::sip::OwnUris::new(
        &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
        &[
            "10.46.0.1".parse().unwrap(),
            "2001:db8:46::1".parse().unwrap(),
        ],
        &[5060],
        Some(5100..=5199),
    )
});

fn me() -> ProxyIdentity<'static> {
    ProxyIdentity {
        via_sent_by: b"10.0.1.10:5060",
        via_transport: b"UDP",
        path_uri: b"sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr",
        own: &OWN,
        visited_network_id: b"\"Visited Network\"",
        orig_ioi: b"ims.mnc001.mcc001.3gppnetwork.org",
    }
}

#[test]
fn sip_hot_path_does_not_allocate() {
    // Buffers are made before counting starts, as a worker's UMEM frames are.
    let mut frame = vec![0u8; 4096];
    let mut out = vec![0u8; 4096];
    let sources: [SocketAddr; 2] = [
        "10.46.0.6:5060".parse().unwrap(),
        "[2001:db8:46::6]:5060".parse().unwrap(),
    ];
    let me = me(); // builds OWN before counting starts

    for (msg, src) in [(REGISTER, sources[0]), (REGISTER_V6, sources[1])] {
        frame[512..512 + msg.len()].copy_from_slice(msg);
        let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
        let n = allocations_in(|| {
            let mut ed = Editor::new(&mut frame, 512, 512 + msg.len()).unwrap();
            ed.view().validate().unwrap();
            rules::check_register(ed.view(), PREFS).unwrap();
            let fw = Forward {
                source: src,
                protected: false,
                branch: 7,
                icid: 9,
            };
            rules::rewrite_register(&mut ed, &me, &fw, &mut scratch).unwrap();
            assert!(ed.as_bytes().len() > msg.len());
        });
        assert_eq!(n, 0, "REGISTER parse + check + rewrite allocated {n} times");
    }

    frame[512..512 + CHALLENGE.len()].copy_from_slice(CHALLENGE);
    let n = allocations_in(|| {
        let mut ed = Editor::new(&mut frame, 512, 512 + CHALLENGE.len()).unwrap();
        let keys = rules::rewrite_401(
            &mut ed,
            b"ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4",
        )
        .unwrap();
        assert!(keys.is_some());
    });
    assert_eq!(n, 0, "401 rewrite allocated {n} times");

    frame[512..512 + OK.len()].copy_from_slice(OK);
    let n = allocations_in(|| {
        let mut ed = Editor::new(&mut frame, 512, 512 + OK.len()).unwrap();
        let reg = rules::rewrite_200(&mut ed, None).unwrap();
        assert_eq!(reg.service_route.as_slice().len(), 2);
    });
    assert_eq!(n, 0, "200 rewrite allocated {n} times");

    let bad = REGISTER.to_vec();
    let n = allocations_in(|| {
        let m = Message::parse(&bad).unwrap();
        let r = rules::check_register(m.view(), &[(IntegAlg::AesGmac, EncAlg::Null)]).unwrap_err();
        let len = rules::build_reject(m.view(), &r, b"t1", PREFS, &mut out).unwrap();
        assert!(len > 0);
    });
    assert_eq!(n, 0, "reject path allocated {n} times");

    // Sanity check that the counter counts.
    assert!(allocations_in(|| drop(vec![1u8; 10])) >= 1);
}

/// The "is this URI us?" rule runs in the workers on every relayed request: no allocation for
/// any form (IPv4, IPv6 in any compression, hostname, userinfo, garbage, a huge URI).
#[test]
fn is_us_does_not_allocate() {
    let own = &*OWN;
    let huge = vec![b'a'; 70_000];
    let uris: [&[u8]; 9] = [
        b"sip:10.46.0.1:5060;lr",
        b"sips:[2001:DB8:46:0::1]:5101;lr;transport=udp",
        b"sip:PCSCF.ims.mnc001.mcc001.3gppnetwork.org;lr",
        b"sip:10.46.0.1@evil.com;lr",
        b"sip:[::1",
        b"sip:10.46.0.10",
        b"sip:10.46.0.1:5061",
        b"tel:+15551234",
        &huge,
    ];
    let mut hits = 0;
    let n = allocations_in(|| {
        for u in uris {
            hits += own.is_us(u) as u32;
        }
    });
    assert_eq!(n, 0, "is_us allocated {n} times");
    assert_eq!(hits, 3);
}
