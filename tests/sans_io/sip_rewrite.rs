//! The P-CSCF rewrites of the registration flow on realistic IMS messages (spec digest §1.1–1.5):
//! IPv4 and IPv6, compact and long forms, folded lines, several Via values in one line.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::sip::headers::{self, Digest, NameAddr, Via};
use pcscf::sip::rules::{self, Forward, ProxyIdentity, RejectWhy};
use pcscf::sip::{EditError, Editor, HeaderName, Message};

const PREFS: &[(IntegAlg, EncAlg)] = &[
    (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
    (IntegAlg::HmacSha1_96, EncAlg::Null),
    (IntegAlg::HmacMd5_96, EncAlg::Null),
];

static OWN: std::sync::LazyLock<pcscf::sip::OwnUris> = std::sync::LazyLock::new(|| {
    pcscf::sip::OwnUris::new(
        &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
        &["10.46.0.1".parse().unwrap()],
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

fn load(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ims")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn replace(msg: &[u8], from: &str, to: &str) -> Vec<u8> {
    let s = String::from_utf8(msg.to_vec()).unwrap();
    assert!(s.contains(from), "fixture lacks {from:?}");
    s.replacen(from, to, 1).into_bytes()
}

/// A frame with `head` bytes of headroom and `tail` bytes of tailroom around the message.
fn frame(msg: &[u8], head: usize, tail: usize) -> Vec<u8> {
    let mut f = vec![0xAA; head + msg.len() + tail];
    f[head..head + msg.len()].copy_from_slice(msg);
    f
}

fn fw(source: &str, protected: bool) -> Forward {
    Forward {
        source: source.parse::<SocketAddr>().unwrap(),
        protected,
        branch: 0x1234_5678_9abc_def0,
        icid: 0xfeed,
    }
}

/// Header lines (name, value) of a message, in order.
fn header_lines(m: &Message<'_>) -> Vec<(HeaderName, Vec<u8>)> {
    let v = m.view();
    m.idx
        .headers()
        .iter()
        .map(|h| (h.name, v.bytes(h.line).to_vec()))
        .collect()
}

/// Run check + rewrite, return the rewritten bytes.
fn rewrite_register(
    msg: &[u8],
    source: &str,
    protected: bool,
    head: usize,
    tail: usize,
) -> Vec<u8> {
    let mut f = frame(msg, head, tail);
    let mut ed = Editor::new(&mut f, head, head + msg.len()).unwrap();
    ed.view().validate().unwrap();
    rules::check_register(ed.view(), PREFS).unwrap();
    let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
    rules::rewrite_register(&mut ed, &me(), &fw(source, protected), &mut scratch).unwrap();
    ed.as_bytes().to_vec()
}

fn assert_register_rewritten(orig: &[u8], out: &[u8], ue_ip: &str, integrity: &[u8]) {
    let m = Message::parse_strict(out)
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(out)));
    let v = m.view();
    let text = String::from_utf8_lossy(out);
    // Our Via on top with a unique branch; the UE's Via second with received and rport.
    let vias: Vec<_> = v
        .values(HeaderName::Via)
        .map(|x| Via::parse(x).unwrap())
        .collect();
    assert_eq!(vias.len(), 2, "{text}");
    assert_eq!(vias[0].host, b"10.0.1.10");
    assert_eq!(vias[0].branch(), Some(&b"z9hG4bK123456789abcdef0"[..]));
    assert_eq!(vias[1].received(), Some(ue_ip.as_bytes()), "{text}");
    assert!(
        matches!(vias[1].rport(), Some(Some(_))),
        "rport filled: {text}"
    );
    // Route to us popped; Path with our URI and the path option tag.
    assert_eq!(v.values(HeaderName::Route).count(), 0, "{text}");
    let path: Vec<_> = v.values(HeaderName::Path).collect();
    assert_eq!(
        path,
        [&b"<sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>"[..]]
    );
    assert!(v.values(HeaderName::Require).any(|t| t == b"path"));
    // sec-agree and Security-* are hop-by-hop.
    assert!(
        !v.values(HeaderName::Require)
            .any(|t| t.eq_ignore_ascii_case(b"sec-agree"))
    );
    assert!(
        !v.values(HeaderName::ProxyRequire)
            .any(|t| t.eq_ignore_ascii_case(b"sec-agree"))
    );
    assert_eq!(v.headers(HeaderName::SecurityClient).count(), 0);
    assert_eq!(v.headers(HeaderName::SecurityVerify).count(), 0);
    // integrity-protected set by us, exactly once.
    let auth = Digest::parse(v.header(HeaderName::Authorization).unwrap()).unwrap();
    assert_eq!(auth.integrity_protected(), Some(integrity), "{text}");
    assert_eq!(
        auth.items()
            .filter(|p| p.name == b"integrity-protected")
            .count(),
        1
    );
    assert_eq!(
        v.header(HeaderName::PVisitedNetworkId),
        Some(&b"\"Visited Network\""[..])
    );
    assert_eq!(
        v.header(HeaderName::PChargingVector),
        Some(&b"icid-value=000000000000feed;orig-ioi=ims.mnc001.mcc001.3gppnetwork.org"[..])
    );
    // Headers we do not own are byte-identical to what the UE sent.
    let o = Message::parse(orig).unwrap();
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::Contact,
        HeaderName::Supported,
        HeaderName::Expires,
        HeaderName::Other,
    ] {
        let before: Vec<_> = header_lines(&o)
            .into_iter()
            .filter(|(n, _)| *n == name)
            .collect();
        let after: Vec<_> = header_lines(&m)
            .into_iter()
            .filter(|(n, _)| *n == name)
            .collect();
        assert_eq!(before, after, "{name:?} changed");
    }
    // Max-Forwards decremented.
    let mf_before: u32 = std::str::from_utf8(o.view().header(HeaderName::MaxForwards).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    let mf_after: u32 = std::str::from_utf8(v.header(HeaderName::MaxForwards).unwrap())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(mf_after, mf_before - 1);
    assert_eq!(v.body(), o.view().body());
}

#[test]
fn register_v4_to_icscf() {
    let msg = load("register1_v4.sip");
    let info_offer = {
        let m = Message::parse_strict(&msg).unwrap();
        let info = rules::check_register(m.view(), PREFS).unwrap();
        assert_eq!(
            info.impi,
            b"001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
        );
        assert_eq!(
            info.impu,
            b"sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
        );
        assert_eq!(info.home_domain, b"ims.mnc001.mcc001.3gppnetwork.org");
        assert_eq!(info.expires, Some(600000));
        info.offer
    };
    assert_eq!(
        (info_offer.alg, info_offer.ealg),
        (IntegAlg::HmacSha1_96, EncAlg::AesCbc)
    );
    assert_eq!(
        (
            info_offer.spi_c,
            info_offer.spi_s,
            info_offer.port_c,
            info_offer.port_s
        ),
        (1236, 1237, 7004, 7005)
    );
    for (head, tail) in [(256, 256), (0, 512), (512, 0), (200, 40)] {
        let out = rewrite_register(&msg, "10.46.0.6:5060", false, head, tail);
        assert_register_rewritten(&msg, &out, "10.46.0.6", b"no");
    }
}

#[test]
fn register_from_other_source_gets_received() {
    let msg = load("register1_v4.sip");
    let out = rewrite_register(&msg, "192.0.2.77:40000", false, 256, 256);
    assert_register_rewritten(&msg, &out, "192.0.2.77", b"no");
    let m = Message::parse(&out).unwrap();
    let ue_via = Via::parse(m.view().values(HeaderName::Via).nth(1).unwrap()).unwrap();
    assert_eq!(ue_via.rport(), Some(Some(&b"40000"[..])));
}

#[test]
fn register_v6() {
    let msg = load("register1_v6.sip");
    let m = Message::parse_strict(&msg).unwrap();
    let info = rules::check_register(m.view(), PREFS).unwrap();
    assert!(
        info.offer.spi_c > 1 << 31 || info.offer.spi_s > 1 << 31,
        "large SPIs parse as u32"
    );
    let out = rewrite_register(&msg, "[2001:db8:46::6]:5060", false, 256, 256);
    assert_register_rewritten(&msg, &out, "2001:db8:46::6", b"no");
}

#[test]
fn register_compact_and_folded() {
    let msg = load("register1_compact.sip");
    let out = rewrite_register(&msg, "10.46.0.6:5060", false, 256, 256);
    assert_register_rewritten(&msg, &out, "10.46.0.6", b"no");
}

#[test]
fn integrity_protected_is_never_what_the_ue_sent() {
    let msg = load("register1_v4.sip");
    let forged = replace(
        &msg,
        "response=\"\"",
        "response=\"\", integrity-protected=\"yes\"",
    );
    let out = rewrite_register(&forged, "10.46.0.6:5060", false, 256, 256);
    assert_register_rewritten(&forged, &out, "10.46.0.6", b"no");
    let forged = replace(&msg, "nonce=\"\"", "integrity-protected=no,nonce=\"\"");
    let out = rewrite_register(&forged, "10.46.0.6:5060", true, 256, 256);
    assert_register_rewritten(&forged, &out, "10.46.0.6", b"yes");
}

#[test]
fn protected_register_checks_and_rewrite() {
    let first = load("register1_v4.sip");
    let m1 = Message::parse_strict(&first).unwrap();
    let mut client = [0u8; 1024];
    let n = rules::copy_security_client(m1.view(), &mut client).unwrap();
    let mut server = [0u8; 256];
    let sn = rules::write_security_server(
        &mut server,
        IntegAlg::HmacSha1_96,
        EncAlg::AesCbc,
        4096,
        4097,
        5102,
        5103,
    )
    .unwrap();
    assert_eq!(
        &server[..sn],
        b"ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5102;port-s=5103;alg=hmac-sha-1-96;ealg=aes-cbc"
    );

    let second = load("register2_v4.sip");
    let m2 = Message::parse_strict(&second).unwrap();
    rules::check_register(m2.view(), PREFS).unwrap();
    rules::check_protected_register(m2.view(), &server[..sn], &client[..n]).unwrap();

    // Bidding down: a Security-Verify that differs in any parameter is refused with 494.
    for (from, to) in [
        ("ealg=aes-cbc\r\n", "ealg=null\r\n"),
        ("spi-s=4097", "spi-s=4098"),
        ("q=0.1;", ""),
    ] {
        let bad = replace(&second, from, to);
        let m = Message::parse_strict(&bad).unwrap();
        let r = rules::check_protected_register(m.view(), &server[..sn], &client[..n]).unwrap_err();
        assert_eq!(
            (r.code, r.why),
            (494, RejectWhy::SecurityVerifyMismatch),
            "{from} -> {to}"
        );
    }
    // Same set in another order and case is the same mechanism.
    let reordered = replace(
        &second,
        "ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5102;port-s=5103;alg=hmac-sha-1-96;ealg=aes-cbc",
        "IPSEC-3GPP; ealg=AES-CBC;alg=hmac-sha-1-96;port-s=5103;port-c=5102;spi-s=4097;spi-c=4096;mod=trans;prot=esp;q=0.1",
    );
    let m = Message::parse_strict(&reordered).unwrap();
    rules::check_protected_register(m.view(), &server[..sn], &client[..n]).unwrap();
    // A Security-Client that differs from the first REGISTER's is refused.
    let bad = replace(&second, "spi-c=1236", "spi-c=9999");
    let m = Message::parse_strict(&bad).unwrap();
    let r = rules::check_protected_register(m.view(), &server[..sn], &client[..n]).unwrap_err();
    assert_eq!(r.why, RejectWhy::SecurityClientMismatch);

    // Forwarded with integrity-protected="yes" and without Security-*.
    let out = {
        let mut f = frame(&second, 256, 256);
        let mut ed = Editor::new(&mut f, 256, 256 + second.len()).unwrap();
        let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
        rules::rewrite_register(&mut ed, &me(), &fw("10.46.0.6:7004", true), &mut scratch).unwrap();
        ed.as_bytes().to_vec()
    };
    let m = Message::parse_strict(&out).unwrap();
    let v = m.view();
    let auth = Digest::parse(v.header(HeaderName::Authorization).unwrap()).unwrap();
    assert_eq!(auth.integrity_protected(), Some(&b"yes"[..]));
    assert!(auth.response().is_some_and(|r| r.len() == 32));
    assert_eq!(v.headers(HeaderName::SecurityVerify).count(), 0);
    assert_eq!(v.headers(HeaderName::SecurityClient).count(), 0);
    let ue_via = Via::parse(v.values(HeaderName::Via).nth(1).unwrap()).unwrap();
    assert_eq!(ue_via.rport(), Some(Some(&b"7004"[..])));
}

fn reject(msg: &[u8]) -> rules::Reject {
    let m = Message::parse_strict(msg).unwrap();
    rules::check_register(m.view(), PREFS).unwrap_err()
}

#[test]
fn register_checks_yield_the_right_sip_errors() {
    let msg = load("register1_v4.sip");
    let no_sc = {
        let s = String::from_utf8(msg.clone()).unwrap();
        let start = s.find("Security-Client:").unwrap();
        let end = start + s[start..].find("\r\n").unwrap() + 2;
        format!("{}{}", &s[..start], &s[end..]).into_bytes()
    };
    let cases: Vec<(Vec<u8>, u16, RejectWhy)> = vec![
        (no_sc, 494, RejectWhy::NoSecurityClient),
        (
            replace(&msg, "Require: sec-agree", "Require: foo"),
            421,
            RejectWhy::SecAgreeNotRequired,
        ),
        (
            replace(
                &msg,
                "Proxy-Require: sec-agree",
                "Proxy-Require: sec-agree, x-unknown",
            ),
            420,
            RejectWhy::UnsupportedProxyRequire,
        ),
        // No Authorization: the IMPI comes from the To IMPU, which a tel: URI
        // cannot give.
        (
            replace(
                &replace(&msg, "Authorization:", "X-Authorization:"),
                "\r\nTo: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>",
                "\r\nTo: <tel:+15551234567>",
            ),
            403,
            RejectWhy::NoAuthorization,
        ),
        (
            replace(&msg, "Max-Forwards: 70", "Max-Forwards: 0"),
            483,
            RejectWhy::TooManyHops,
        ),
        (
            replace(
                &replace(
                    &msg,
                    "alg=hmac-sha-1-96;ealg=aes-cbc",
                    "alg=hmac-sha-1-96;ealg=des-ede3-cbc",
                ),
                "alg=hmac-md5-96;ealg=null",
                "alg=hmac-md5-96;ealg=aes-gcm",
            ),
            494,
            RejectWhy::NoAcceptableMechanism,
        ),
    ];
    for (m, code, why) in cases {
        let r = reject(&m);
        assert_eq!((r.code, r.why), (code, why));
        // The error response is a well-formed SIP response that the UE can match.
        let req = Message::parse_strict(&m).unwrap();
        let mut out = [0u8; 2048];
        let n = rules::build_reject(req.view(), &r, b"pcscf1", PREFS, &mut out).unwrap();
        let resp = Message::parse_strict(&out[..n]).unwrap();
        let rv = resp.view();
        assert_eq!(rv.status(), Some(code));
        assert_eq!(
            rv.header(HeaderName::CallId),
            req.view().header(HeaderName::CallId)
        );
        assert_eq!(
            rv.header(HeaderName::CSeq),
            req.view().header(HeaderName::CSeq)
        );
        assert_eq!(rv.values(HeaderName::Via).count(), 1);
        let to = NameAddr::parse(rv.header(HeaderName::To).unwrap()).unwrap();
        assert_eq!(to.tag(), Some(&b"pcscf1"[..]));
        match code {
            420 => assert_eq!(rv.header(HeaderName::Unsupported), Some(&b"x-unknown"[..])),
            421 => assert!(rv.values(HeaderName::Require).any(|t| t == b"sec-agree")),
            494 => assert_eq!(rv.values(HeaderName::SecurityServer).count(), PREFS.len()),
            _ => {}
        }
    }
}

fn rewrite_401(msg: &[u8], head: usize, tail: usize) -> (Vec<u8>, Option<rules::AkaKeys>) {
    let mut f = frame(msg, head, tail);
    let mut ed = Editor::new(&mut f, head, head + msg.len()).unwrap();
    let ss = b"ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5102;port-s=5103;alg=hmac-sha-1-96;ealg=aes-cbc";
    let keys = rules::rewrite_401(&mut ed, ss).unwrap();
    (ed.as_bytes().to_vec(), keys)
}

#[test]
fn challenge_401_to_ue() {
    let ck = headers::hex16(b"b40ba9a3c58b2a05bbf0d987b21bf8cb").unwrap();
    let ik = headers::hex16(b"f769bcd751044604127672711c6d3441").unwrap();
    for name in ["401_from_scscf.sip", "401_ik_first.sip"] {
        let msg = load(name);
        for (head, tail) in [(128, 128), (0, 256), (256, 0)] {
            let (out, keys) = rewrite_401(&msg, head, tail);
            let keys = keys.expect("AKA keys");
            assert_eq!((keys.ck, keys.ik), (ck, ik), "{name}");
            let m = Message::parse_strict(&out).unwrap();
            let v = m.view();
            let text = String::from_utf8_lossy(&out);
            // Our Via (first value of a two-value line) gone, the UE's kept intact.
            let vias: Vec<_> = v.values(HeaderName::Via).collect();
            assert_eq!(vias.len(), 1, "{text}");
            assert!(vias[0].starts_with(b"SIP/2.0/UDP 10.46.0.6:5060"), "{text}");
            // ck / ik never reach the UE; the rest of the challenge is intact.
            let d = Digest::parse(v.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
            assert!(d.ck().is_none() && d.ik().is_none(), "{text}");
            assert!(!text.to_ascii_lowercase().contains("b40ba9a3"), "{text}");
            assert_eq!(
                d.nonce(),
                Some(&b"I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M="[..])
            );
            assert_eq!(d.algorithm(), Some(&b"AKAv1-MD5"[..]));
            assert_eq!(d.realm(), Some(&b"ims.mnc001.mcc001.3gppnetwork.org"[..]));
            assert_eq!(d.items().count(), 4, "{text}");
            assert!(
                v.header(HeaderName::SecurityServer)
                    .unwrap()
                    .starts_with(b"ipsec-3gpp;q=0.1")
            );
            assert!(v.values(HeaderName::Supported).any(|t| t == b"sec-agree"));
        }
    }
}

#[test]
fn non_aka_401_passes_through() {
    let msg = load("401_from_scscf.sip");
    let plain = replace(
        &msg,
        ", ck=\"b40ba9a3c58b2a05bbf0d987b21bf8cb\", ik=\"f769bcd751044604127672711c6d3441\"",
        "",
    );
    let (out, keys) = rewrite_401(&plain, 128, 128);
    assert!(keys.is_none());
    let m = Message::parse_strict(&out).unwrap();
    assert_eq!(m.view().headers(HeaderName::SecurityServer).count(), 0);
    assert_eq!(m.view().values(HeaderName::Via).count(), 1);
}

#[test]
fn ok_200_to_ue() {
    let msg = load("200_register.sip");
    for (head, tail) in [(128, 128), (0, 64), (64, 0)] {
        let mut f = frame(&msg, head, tail);
        let mut ed = Editor::new(&mut f, head, head + msg.len()).unwrap();
        let reg = rules::rewrite_200(&mut ed, Some(b"sip:001010000000001@10.46.0.6:7005")).unwrap();
        let v = ed.view();
        assert_eq!(reg.expires, Some(600000));
        let sr: Vec<_> = reg
            .service_route
            .as_slice()
            .iter()
            .map(|s| v.bytes(*s))
            .collect();
        assert_eq!(
            sr,
            [
                &b"sip:orig@scscf.ims.mnc001.mcc001.3gppnetwork.org:6060;lr"[..],
                b"sip:orig@scscf2.ims.mnc001.mcc001.3gppnetwork.org:6060;lr"
            ]
        );
        let pau: Vec<_> = reg
            .associated_uris
            .as_slice()
            .iter()
            .map(|s| v.bytes(*s))
            .collect();
        assert_eq!(
            pau,
            [
                &b"sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org"[..],
                b"tel:+15551230001"
            ]
        );
        let out = ed.as_bytes().to_vec();
        let m = Message::parse_strict(&out).unwrap();
        let vias: Vec<_> = m.view().values(HeaderName::Via).collect();
        assert_eq!(vias.len(), 1);
        assert!(vias[0].starts_with(b"SIP/2.0/UDP 10.46.0.6:7005"));
    }
    // De-registration: expires=0 in the Contact.
    let dereg = replace(&msg, ";expires=600000", ";expires=0");
    let mut f = frame(&dereg, 64, 64);
    let mut ed = Editor::new(&mut f, 64, 64 + dereg.len()).unwrap();
    assert_eq!(rules::rewrite_200(&mut ed, None).unwrap().expires, Some(0));
}

#[test]
fn no_room_leaves_the_message_intact() {
    let msg = load("register1_v4.sip");
    let mut f = frame(&msg, 0, 0);
    let mut ed = Editor::new(&mut f, 0, msg.len()).unwrap();
    let err = ed.push_header(HeaderName::Other, &[b"X: y"]).unwrap_err();
    assert_eq!(err, EditError::NoRoom);
    assert_eq!(ed.as_bytes(), &msg[..]);
    // Shrinking edits work without any room at all.
    ed.remove_all(HeaderName::SecurityClient).unwrap();
    let m = Message::parse_strict(ed.as_bytes()).unwrap();
    assert_eq!(m.view().headers(HeaderName::SecurityClient).count(), 0);
}

#[test]
fn body_edit_keeps_content_length() {
    let msg = load("message_v4.sip");
    let mut f = frame(&msg, 64, 256);
    let mut ed = Editor::new(&mut f, 64, 64 + msg.len()).unwrap();
    ed.set_body(&[b"hello, ", b"world"]).unwrap();
    let m = Message::parse_strict(ed.as_bytes()).unwrap();
    assert_eq!(m.view().body(), b"hello, world");
    assert_eq!(m.view().header(HeaderName::ContentLength), Some(&b"12"[..]));
}
