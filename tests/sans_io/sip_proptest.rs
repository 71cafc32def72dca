//! Property tests of the SIP engine: no input makes it panic, and edits leave every header they
//! do not touch byte-identical. Case counts are ≥ 10,000 (PROPTEST_CASES overrides).

use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::sip::rules::{self, Forward, ProxyIdentity};
use pcscf::sip::{Editor, HeaderName, Message};
use proptest::prelude::*;

const REGISTER: &[u8] = include_bytes!("../data/ims/register1_v4.sip");
const CHALLENGE: &[u8] = include_bytes!("../data/ims/401_from_scscf.sip");
const OK: &[u8] = include_bytes!("../data/ims/200_register.sip");
const COMPACT: &[u8] = include_bytes!("../data/ims/register1_compact.sip");

const PREFS: &[(IntegAlg, EncAlg)] = &[
    (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
    (IntegAlg::HmacMd5_96, EncAlg::Null),
];
static OWN: std::sync::LazyLock<pcscf::sip::OwnUris> = std::sync::LazyLock::new(|| {
    pcscf::sip::OwnUris::new(
        &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
        &[],
        &[5060],
        Some(5100..=5199),
    )
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

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

/// Run everything the P-CSCF does with a message from the network over `data`; it may fail, it
/// must not panic, and a successful rewrite must parse again.
fn exercise(data: &[u8]) {
    let mut frame = vec![0u8; data.len() + 1024];
    frame[512..512 + data.len()].copy_from_slice(data);
    let Ok(mut ed) = Editor::new(&mut frame, 512, 512 + data.len()) else {
        return;
    };
    let _ = ed.view().validate();
    let v = ed.view();
    for h in v.idx.headers() {
        let _ = v.values(h.name).count();
    }
    if v.is_method(b"REGISTER") {
        if rules::check_register(v, PREFS).is_ok() {
            let fw = Forward {
                source: "10.1.2.3:5060".parse().unwrap(),
                protected: true,
                branch: 1,
                icid: 2,
            };
            if rules::rewrite_register(&mut ed, &me(), &fw).is_ok() {
                Message::parse(ed.as_bytes()).expect("rewritten REGISTER parses");
            }
        }
    } else if v.status() == Some(401) {
        if rules::rewrite_401(
            &mut ed,
            b"ipsec-3gpp;alg=null;spi-c=1;spi-s=2;port-c=3;port-s=4",
        )
        .is_ok()
        {
            Message::parse(ed.as_bytes()).expect("rewritten 401 parses");
        }
    } else if v.status().is_some() {
        let _ = rules::rewrite_200(&mut ed, None);
    }
}

/// A seed message with one byte range replaced by fuzz.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![REGISTER, CHALLENGE, OK, COMPACT]),
        any::<prop::sample::Index>(),
        0usize..40,
        prop::collection::vec(
            prop::sample::select(b" \t\r\n,;:=\"<>@/abcSIP0123456789%\\".to_vec()),
            0..24,
        ),
    )
        .prop_map(|(seed, at, cut, ins)| {
            let at = at.index(seed.len());
            let end = (at + cut).min(seed.len());
            let mut v = seed[..at].to_vec();
            v.extend_from_slice(&ins);
            v.extend_from_slice(&seed[end..]);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1500)) {
        exercise(&data);
    }

    #[test]
    fn mutated_messages_never_panic(data in mutated()) {
        exercise(&data);
    }

    /// Remove one random header, insert one at a random place, edit one value: every other
    /// header line is byte-identical after reparse, in the same order.
    #[test]
    fn edits_keep_untouched_headers(
        seed in prop::sample::select(vec![REGISTER, CHALLENGE, OK, COMPACT]),
        remove in any::<prop::sample::Index>(),
        insert in any::<prop::sample::Index>(),
        value in "[a-zA-Z0-9;=.@-]{0,40}",
        head in 0usize..300,
        tail in 0usize..300,
    ) {
        let mut frame = vec![0u8; head + seed.len() + tail];
        frame[head..head + seed.len()].copy_from_slice(seed);
        let mut ed = Editor::new(&mut frame, head, head + seed.len()).unwrap();
        let lines = |ed: &Editor<'_>| -> Vec<Vec<u8>> {
            let v = ed.view();
            v.idx.headers().iter().map(|h| v.bytes(h.line).to_vec()).collect()
        };
        let mut expect = lines(&ed);
        let body = ed.view().body().to_vec();

        let r = remove.index(expect.len());
        if ed.remove_header(r).is_ok() {
            expect.remove(r);
        }
        let n = ed.index().headers().len();
        let at = insert.index(n + 1);
        let mut line = b"X-Fuzz: ".to_vec();
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b"\r\n");
        if ed.insert_lines(at, 1, &[&line]).is_ok() {
            expect.insert(at, line.clone());
        }
        // replace the value of the Call-ID (a header every seed has)
        if let Some(i) = ed.find(HeaderName::CallId, 0) {
            let h = ed.header(i).unwrap();
            if ed.replace_in_header(i, h.value, &[b"new-call-id@x"]).is_ok() {
                let old = &expect[i];
                let (vs, ve) = ((h.value.start - h.line.start) as usize, (h.value.end - h.line.start) as usize);
                let mut l = old[..vs].to_vec();
                l.extend_from_slice(b"new-call-id@x");
                l.extend_from_slice(&old[ve..]);
                expect[i] = l;
            }
        }
        // an edit strictly inside a value (the editor's no-rescan path): Contact or Via
        if let Some(i) = ed.find(HeaderName::Contact, 0).or_else(|| ed.find(HeaderName::Via, 0)) {
            let h = ed.header(i).unwrap();
            if h.value.len() > 2 {
                let mid = h.value.start + 1 + (value.len() as u32 % (h.value.len() as u32 - 2));
                let at = pcscf::sip::Span { start: mid, end: mid };
                let v = ed.view();
                // not inside a folded line break
                let clean = !matches!(v.buf[mid as usize - 1], b'\r' | b'\n') && !matches!(v.buf[mid as usize], b'\r' | b'\n');
                if clean && ed.replace_in_header(i, at, &[value.as_bytes()]).is_ok() {
                    let off = (mid - h.line.start) as usize;
                    let mut l = expect[i][..off].to_vec();
                    l.extend_from_slice(value.as_bytes());
                    l.extend_from_slice(&expect[i][off..]);
                    expect[i] = l;
                }
            }
        }
        prop_assert_eq!(lines(&ed), expect.clone());
        // and an independent reparse of the bytes agrees with the editor's index
        let out = ed.as_bytes().to_vec();
        let m = Message::parse(&out).unwrap();
        let v = m.view();
        let reparsed: Vec<Vec<u8>> = m.idx.headers().iter().map(|h| v.bytes(h.line).to_vec()).collect();
        prop_assert_eq!(reparsed, expect);
        prop_assert_eq!(v.body(), &body[..]);
    }
}
