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

/// Found by `mutated_messages_never_panic` in CI: validation recorded this 401's To as tagged
/// (it read the one element after a leading comma) while a whole-field parse did not. A single
/// name-addr field with an empty element is malformed now.
#[test]
fn a_to_with_a_leading_comma_is_read_one_way() {
    exercise(b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bKpcscf1, SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bK1a2b3c4d5e6f7;received=10.46.0.6;rport=5060\r\nFrom: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>;tag=3786157562\r\nTo:,:;sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>;tag=scscf-7b3f0e2a\r\nCall-ID: a84b4c76e66710-1183462089@10.46.0.6\r\nCSeq: 1 REGISTER\r\nPath: <sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>\r\nWWW-Authenticate: Digest realm=\"ims.mnc001.mcc001.3gppnetwork.org\", nonce=\"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=\", algorithm=AKAv1-MD5, ck=\"b40ba9a3c58b2a05bbf0d987b21bf8cb\", ik=\"f769bcd751044604127672711c6d3441\", qop=\"auth,auth-int\"\r\nServer: Example S-CSCF 5.8\r\nContent-Length: 0\r\n\r\n");
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
    // what validation records for the rules is what they would read themselves
    if let Ok(c) = v.validate_checked() {
        assert_eq!(c.top_via, pcscf::sip::TopVia::of(v));
        let to_tag = v
            .header(HeaderName::To)
            .and_then(pcscf::sip::headers::NameAddr::parse)
            .is_some_and(|na| na.tag().is_some());
        assert_eq!(c.to_tag, to_tag);
    }
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
            let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
            if rules::rewrite_register(&mut ed, &me(), &fw, &mut scratch).is_ok() {
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

const MESSAGE: &[u8] = include_bytes!("../data/ims/message_v4.sip");

/// Header lines a UE's request may carry, for [`request_soup`]: the ones the protected
/// rewrite drops, edits or keeps, in several spellings (compact, folded, repeated, lists).
const SOUP: &[&str] = &[
    "Via: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKa;rport\r\n",
    "v: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKb;received=10.9.9.9, SIP/2.0/TCP h:1;branch=z9hG4bKc\r\n",
    "Via: SIP/2.0/UDP [2001:db8::6]:7005;branch=z9hG4bKd\r\n",
    "Via: SIP/2.0/UDP 10.1.2.3;branch=z9hG4bKe;rport=9\r\n",
    "Max-Forwards: 70\r\n",
    "Max-Forwards: 0\r\n",
    "Max-Forwards: x\r\n",
    "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org:5103;lr>\r\n",
    "Route: <sip:a@b;lr>,\r\n <sip:c@d;lr>\r\n",
    "P-Preferred-Identity: <sip:alice@ims.example.net>\r\n",
    "P-Asserted-Identity: <sip:mallory@ims.example.net>\r\n",
    "P-Charging-Vector: icid-value=forged\r\n",
    "P-Charging-Function-Addresses: ccf=evil\r\n",
    "From: <sip:alice@ims.example.net>;tag=1\r\n",
    "To: <sip:bob@ims.example.net>\r\n",
    "Call-ID: soup@10.46.0.6\r\n",
    "CSeq: 1 MESSAGE\r\n",
    "Subject:   folded\r\n   across lines  \r\n",
    "X-Empty:\r\n",
    "Via: \r\n",
    "Content-Type: text/plain\r\n",
];

/// A request made of 0–24 lines of [`SOUP`], any order, any repeats, bare-LF or CRLF ends.
fn request_soup() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::sample::select(SOUP.to_vec()), 0..24),
        any::<bool>(),
        "[a-z ]{0,40}",
    )
        .prop_map(|(lines, bare_lf, body)| {
            let mut m = b"MESSAGE sip:bob@ims.example.net SIP/2.0\r\n".to_vec();
            for l in lines {
                m.extend_from_slice(l.as_bytes());
            }
            m.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
            if bare_lf {
                m = String::from_utf8(m)
                    .unwrap()
                    .replace("\r\n", "\n")
                    .into_bytes();
            }
            m
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// The protected request's rewrite, written in one pass (`Editor::rebuild`), gives the
    /// bytes and the index the splices give (forward_request, the removals, the appended
    /// lines), whatever the headers; where room runs out it fails and leaves the message as
    /// it was.
    #[test]
    fn protected_rewrite_in_one_pass_matches_the_splices(
        msg in prop_oneof![request_soup(), Just(MESSAGE.to_vec()), Just(fixture_message())],
        head in 0usize..400,
        tail in 0usize..400,
        v6 in any::<bool>(),
        port in 1u16..,
    ) {
        let source: std::net::SocketAddr = if v6 {
            std::net::SocketAddr::new("2001:db8::6".parse().unwrap(), port)
        } else {
            std::net::SocketAddr::new("10.46.0.6".parse().unwrap(), port)
        };
        let key = pcscf::sip::branch::BranchKey::new(&[7; 32]);
        let ue = source.ip();
        let branch = key.seal(pcscf::sip::branch::Dir::ToCore, 0, 4097, 7005, 42, ue, ue);
        let (route, pai, icid) = (
            &b"<sip:orig@scscf.ims.example.net:6060;lr>"[..],
            &b"<sip:alice@ims.example.net>"[..],
            &b"0123456789abcdef"[..],
        );
        let frame = |m: &[u8]| {
            let mut f = vec![0u8; head + m.len() + tail];
            f[head..head + m.len()].copy_from_slice(m);
            f
        };
        let mut a = frame(&msg);
        let mut b = frame(&msg);
        let Ok(mut spliced) = Editor::new(&mut a, head, head + msg.len()) else {
            return Ok(());
        };
        let mut rebuilt = Editor::new(&mut b, head, head + msg.len()).unwrap();
        let old = spliced.as_bytes().to_vec();
        let by_splices = (|| {
            rules::forward_request(&mut spliced, &me(), source, &branch)?;
            spliced.remove_all(HeaderName::PPreferredIdentity)?;
            spliced.remove_all(HeaderName::PAssertedIdentity)?;
            spliced.remove_all(HeaderName::Route)?;
            rules::strip_charging(&mut spliced)?;
            let end = spliced.index().headers().len();
            spliced.insert_lines(end, 3, &[
                b"Route: ", route, b"\r\nP-Asserted-Identity: ", pai,
                b"\r\nP-Charging-Vector: icid-value=", icid, b"\r\n",
            ])
        })();
        let mut scratch = [0u8; 4096];
        let top = rules::TopVia::of(rebuilt.view());
        let in_one_pass = rules::rewrite_protected_request(
            &mut rebuilt, &me(), source, &branch, pai, route, icid, top.as_ref(), &mut scratch,
        );
        match in_one_pass {
            Ok(()) => {
                // (the splices may run out of room where one pass does not: they move the
                // head and the tail in turn)
                if by_splices.is_ok() {
                    prop_assert_eq!(
                        String::from_utf8_lossy(rebuilt.as_bytes()),
                        String::from_utf8_lossy(spliced.as_bytes())
                    );
                }
                // the index recorded while writing is the one a fresh parse builds
                let out = rebuilt.as_bytes().to_vec();
                let m = Message::parse(&out).unwrap();
                let base = rebuilt.index().msg_start;
                let shifted: Vec<_> = rebuilt.index().headers().iter().map(|h| {
                    (h.name, h.line.start - base, h.line.end - base, h.name_end - base,
                     h.value.start - base, h.value.end - base)
                }).collect();
                let fresh: Vec<_> = m.idx.headers().iter().map(|h| {
                    (h.name, h.line.start, h.line.end, h.name_end, h.value.start, h.value.end)
                }).collect();
                prop_assert_eq!(shifted, fresh);
                prop_assert_eq!(rebuilt.view().body(), m.view().body());
                prop_assert_eq!(rebuilt.index().headers_end - base, m.idx.headers_end);
                prop_assert_eq!(rebuilt.view().method(), m.view().method());
                prop_assert_eq!(rebuilt.view().request_uri(), m.view().request_uri());
            }
            Err(e) => {
                prop_assert!(
                    matches!(e, pcscf::sip::EditError::NoRoom | pcscf::sip::EditError::TooManyHeaders),
                    "{e:?}"
                );
                prop_assert_eq!(rebuilt.as_bytes(), &old[..]);
            }
        }
    }
}

/// The pipeline benchmarks' MESSAGE (perf/fixtures.rs), rebuilt here by hand.
fn fixture_message() -> Vec<u8> {
    let body = "x".repeat(560);
    format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK00000001\r\nMax-Forwards: 70\r\nRoute: <sip:pcscf.ims.example.net:5103;lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: pipeline-00000001@10.46.0.6\r\nCSeq: 1 MESSAGE\r\nP-Preferred-Identity: <sip:alice@ims.example.net>\r\nUser-Agent: pipeline_loop\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
