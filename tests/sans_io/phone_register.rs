//! A phone's REGISTER as phones send it, sans-IO: every fixture of
//! tests/data/ims/phones through the registrar — the first REGISTER, the core's 401, the
//! protected REGISTER (Route to our port-s) and the 200 — checking what reaches the core (no
//! Route naming us, sec-agree gone, our Path, integrity-protected) and what reaches the UE (the
//! 401 with the chosen Security-Server, rport/received when asked). Hostile cases next to them:
//! a foreign Route after ours, a Request-URI that is us, identity tricks without Authorization.
//! Requests addressed to us in the worker (OPTIONS, other methods, ACK), over an SA and in the
//! clear, are checked through the in-memory worker rig.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use pcscf::aka::{self, HssSubscriber, Usim, digest};
use pcscf::control::registrar::{Incoming, Outgoing, Registrar, RegistrarConfig};
use pcscf::dataplane::{DropReason, L4, Protection, classify};
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::esp::{Sa, SaOptions};
use pcscf::io::Side;
use pcscf::satable::SaReader;
use pcscf::sip::headers::{Digest, NameAddr, SecMechanism, Via};
use pcscf::sip::rules::{self, ProxyIdentity};
use pcscf::sip::{Editor, HeaderName, Message, OwnUris};

use crate::support::hex;
use crate::support::ims::{
    HOSTNAME, IMPI, REALM, addr, core_answer, header, test_hss, test_sa_table, test_usim,
};

const PCSCF_V4: &str = "10.211.0.1";
const PCSCF_V6: &str = "fd00:211::1";
const UE_V4: &str = "10.211.0.2";
const UE_V6: &str = "fd00:211::2";
const ICSCF: &str = "10.0.1.20:5060";
const CORE: &str = "10.0.1.10:5060";

/// Every fixture that registers (all but `sec_client_unacceptable_v4`), with the UE's spi-c we
/// expect the registrar to choose (by our preference list: sha1/aes-cbc first).
const SHAPES: &[(&str, u32)] = &[
    ("route_none_v4", 3000),
    ("route_none_v6", 3000),
    ("route_ip_port_v4", 3000),
    ("route_ip_noport_v4", 3000),
    ("route_ip_v6", 3000),
    ("route_fqdn_v4", 3000),
    ("route_fqdn_v6", 3000),
    ("auth_empty_v4", 3000),
    ("auth_empty_v6", 3000),
    ("no_auth_v4", 3000),
    ("no_auth_v6", 3000),
    ("sec_client_multi_one_header_v4", 3004),
    ("sec_client_multi_headers_v6", 3002),
    ("sec_client_unsupported_first_v4", 3002),
    ("contact_features_v4", 3000),
    ("contact_features_v6", 3000),
    ("expires_header_v4", 3000),
    ("supported_require_v4", 3000),
    ("compact_v4", 3000),
    ("rport_v4", 3000),
    ("large_v4", 3000),
];

fn fixture(shape: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ims/phones")
        .join(format!("{shape}.sip"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn v6(shape: &str) -> bool {
    shape.ends_with("_v6")
}

fn ue_ip(shape: &str) -> IpAddr {
    (if v6(shape) { UE_V6 } else { UE_V4 }).parse().unwrap()
}

fn pcscf_ip(shape: &str) -> IpAddr {
    (if v6(shape) { PCSCF_V6 } else { PCSCF_V4 })
        .parse()
        .unwrap()
}

/// The lab's P-CSCF: UE side 10.211.0.1 / fd00:211::1, core side 10.0.1.10, our hostname.
fn config() -> RegistrarConfig {
    let mut c = crate::support::ims::registrar_config(Some(addr(ICSCF)), None);
    c.ue_addrs = vec![PCSCF_V4.parse().unwrap(), PCSCF_V6.parse().unwrap()];
    c.own_hosts = vec![HOSTNAME.into()];
    c
}

/// The same "is this URI us?" the registrar builds, for the checks on what reaches the core.
fn own() -> OwnUris {
    OwnUris::new(
        &[HOSTNAME],
        &[
            PCSCF_V4.parse().unwrap(),
            PCSCF_V6.parse().unwrap(),
            addr(CORE).ip(),
        ],
        &[5060],
        Some(5100..=5199),
    )
}

struct World {
    reg: Registrar,
    sas: SaReader,
    hss: HssSubscriber,
    usim: Usim,
    now: Instant,
}

fn world() -> World {
    world_with(config())
}

fn world_with(cfg: RegistrarConfig) -> World {
    let (writer, sas) = test_sa_table(64);
    World {
        reg: Registrar::new(cfg, writer),
        sas,
        hss: test_hss(),
        usim: test_usim(),
        now: Instant::now(),
    }
}

impl World {
    fn feed(
        &mut self,
        side: Side,
        protection: Protection,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let msg = Incoming {
            side,
            protection,
            src,
            dst,
            payload,
        };
        self.reg.handle_message(msg, self.now);
        out.extend(std::iter::from_fn(|| self.reg.poll_transmit()));
        out
    }

    /// The first REGISTER of `text` from the UE's `src_port` to our 5060.
    fn first(&mut self, shape: &str, text: &str, src_port: u16) -> Vec<Outgoing> {
        let src = SocketAddr::new(ue_ip(shape), src_port);
        let dst = SocketAddr::new(pcscf_ip(shape), 5060);
        self.feed(Side::Ue, Protection::Plain, src, dst, text.as_bytes())
    }
}

/// What reaches the core, checked for every REGISTER: no Route at all (ours popped, the UE's
/// others removed), no sec-agree in Require/Proxy-Require (a header left empty dropped), no
/// Security-*, our one Path with `Require: path`, one Authorization for the IMPI with our
/// integrity-protected, Contact and P-Access-Network-Info as the UE wrote them.
fn check_at_core(fwd: &Outgoing, sent: &str, protected: bool) {
    assert_eq!(
        (fwd.side, fwd.src, fwd.dst),
        (Side::Core, addr(CORE), addr(ICSCF)),
        "to the I-CSCF, from our core side"
    );
    let text = String::from_utf8_lossy(&fwd.payload).into_owned();
    let m = Message::parse_strict(&fwd.payload).unwrap_or_else(|e| panic!("{e}: {text}"));
    let v = m.view();
    let own = own();
    for r in v.values(HeaderName::Route) {
        let na = NameAddr::parse(r).unwrap();
        assert!(
            !own.is_us(na.uri),
            "a Route naming us reached the core: {text}"
        );
    }
    assert_eq!(v.headers(HeaderName::Route).count(), 0, "{text}");
    for h in [HeaderName::Require, HeaderName::ProxyRequire] {
        assert!(
            !v.values(h).any(|t| t.eq_ignore_ascii_case(b"sec-agree")),
            "sec-agree left in {h:?}: {text}"
        );
        for line in v.headers(h) {
            assert!(!v.bytes(line.value).is_empty(), "an empty {h:?}: {text}");
        }
    }
    assert_eq!(v.headers(HeaderName::ProxyRequire).count(), 0, "{text}");
    assert_eq!(
        v.values(HeaderName::Require).collect::<Vec<_>>(),
        vec![&b"path"[..]],
        "{text}"
    );
    assert_eq!(v.headers(HeaderName::SecurityClient).count(), 0);
    assert_eq!(v.headers(HeaderName::SecurityVerify).count(), 0);
    assert_eq!(
        v.values(HeaderName::Path).collect::<Vec<_>>(),
        vec![&b"<sip:term@pcscf.test:5060;lr>"[..]]
    );
    assert_eq!(v.headers(HeaderName::Authorization).count(), 1);
    let d = Digest::parse(v.header(HeaderName::Authorization).unwrap()).unwrap();
    assert_eq!(d.username(), Some(IMPI.as_bytes()), "{text}");
    let ip: &[u8] = if protected { b"yes" } else { b"no" };
    assert_eq!(d.integrity_protected(), Some(ip), "{text}");
    // the UE's Via below ours, with received (RFC 3261 §18.2.1, RFC 3581 §4)
    let vias: Vec<&[u8]> = v.values(HeaderName::Via).collect();
    assert_eq!(vias.len(), 2);
    assert!(vias[0].starts_with(b"SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK"));
    // what the phone says about itself goes on unchanged
    let sent_m = Message::parse_strict(sent.as_bytes()).unwrap();
    let sv = sent_m.view();
    assert_eq!(
        v.header(HeaderName::Contact),
        sv.header(HeaderName::Contact),
        "Contact unchanged"
    );
    assert_eq!(
        v.header(HeaderName::PAccessNetworkInfo),
        sv.header(HeaderName::PAccessNetworkInfo)
    );
    assert_eq!(
        v.header(HeaderName::Expires),
        sv.header(HeaderName::Expires)
    );
    assert_eq!(
        v.values(HeaderName::Supported).collect::<Vec<_>>(),
        sv.values(HeaderName::Supported).collect::<Vec<_>>()
    );
}

/// The protected REGISTER the phone sends after the 401, from the fixture as the README says:
/// CSeq 2, its port-s in Via and Contact, the Route (if any) to our port-s, Authorization with
/// the nonce and the AKA response, Security-Verify = our Security-Server.
fn protected_from(
    shape: &str,
    first: &str,
    nonce: &str,
    res: &aka::Res,
    server: &str,
    port_s: u16,
) -> String {
    let ue = if v6(shape) { "[fd00:211::2]" } else { UE_V4 };
    let uri = format!("sip:{REALM}");
    let input = digest::DigestInput {
        username: IMPI.as_bytes(),
        realm: REALM.as_bytes(),
        nonce: nonce.as_bytes(),
        method: b"REGISTER",
        uri: uri.as_bytes(),
        qop: digest::Qop::None,
    };
    let resp = digest::response_aka(&input, res);
    let auth = format!(
        "Authorization: Digest username=\"{IMPI}\",realm=\"{REALM}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5",
        resp.as_str()
    );
    let mut lines: Vec<String> = Vec::new();
    let mut last_sc = 0;
    for l in first.split("\r\n") {
        let lower = l.to_ascii_lowercase();
        let mut l = l.replace(&format!("{ue}:5060"), &format!("{ue}:7005"));
        if l == "CSeq: 1 REGISTER" {
            l = "CSeq: 2 REGISTER".into();
        }
        if lower.starts_with("authorization:") {
            continue;
        }
        if lower.starts_with("route:") {
            // <sip:HOST[:port];params> → <sip:HOST:port_s;params>
            let start = l.find("<sip:").unwrap() + 5;
            let end = l[start..].find([';', '>']).unwrap() + start;
            let hostport = &l[start..end];
            let host = match hostport.rfind(':') {
                Some(c) if !hostport[c..].contains(']') => &hostport[..c],
                _ => hostport,
            };
            l = format!("{}{host}:{port_s}{}", &l[..start], &l[end..]);
        }
        if lower.starts_with("security-client:") {
            last_sc = lines.len() + 1;
        }
        lines.push(l);
    }
    lines.insert(last_sc, format!("Security-Verify: {server}"));
    lines.insert(last_sc, auth);
    lines.join("\r\n")
}

/// The whole registration of one fixture; returns the protected REGISTER sent (for sizes).
fn register(shape: &str, spi_c: u32) -> String {
    let mut w = world();
    let text = fixture(shape);
    let nat_port = if text.contains(";rport") { 40123 } else { 5060 };
    let out = w.first(shape, &text, nat_port);
    assert_eq!(out.len(), 1, "{shape}: {:?}", w.reg.stats);
    let fwd = &out[0];
    check_at_core(fwd, &text, false);
    if shape.starts_with("no_auth") {
        let d = header(&fwd.payload, HeaderName::Authorization).unwrap();
        assert_eq!(
            d,
            format!(
                "Digest username=\"{IMPI}\",realm=\"{REALM}\",uri=\"sip:{REALM}\",nonce=\"\",response=\"\",integrity-protected=\"no\""
            ),
            "{shape}: the Authorization we write for a phone that sent none"
        );
    }

    // the core's 401
    let av = w.hss.next_vector(&[0x5a; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let www = format!(
        "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
        hex(av.ck.as_bytes()),
        hex(av.ik.as_bytes())
    );
    let resp = core_answer(&fwd.payload, 401, "Unauthorized", &www);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        addr(ICSCF),
        addr(CORE),
        &resp,
    );
    assert_eq!(out.len(), 1, "{shape}: {:?}", w.reg.stats);
    let to_ue = &out[0];
    let ue = SocketAddr::new(ue_ip(shape), nat_port);
    assert_eq!(
        (to_ue.side, to_ue.protection, to_ue.src, to_ue.dst),
        (
            Side::Ue,
            Protection::Plain,
            SocketAddr::new(pcscf_ip(shape), 5060),
            ue
        ),
        "{shape}: the 401 goes back to where the REGISTER came from"
    );
    let m = Message::parse_strict(&to_ue.payload).unwrap();
    let v = m.view();
    assert_eq!(v.status(), Some(401));
    assert_eq!(v.values(HeaderName::Via).count(), 1, "only the UE's Via");
    let via = Via::parse(v.values(HeaderName::Via).next().unwrap()).unwrap();
    if nat_port != 5060 {
        // RFC 3581 §4: rport filled with the source port, received with the source address
        let port = nat_port.to_string();
        assert_eq!(via.rport(), Some(Some(port.as_bytes())), "{shape}");
        assert_eq!(via.received(), Some(UE_V4.as_bytes()), "{shape}");
    } else {
        assert_eq!(via.rport(), None, "{shape}");
    }
    let server = header(&to_ue.payload, HeaderName::SecurityServer).expect("Security-Server");
    assert!(!server.contains(','), "one Security-Server entry: {server}");
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    assert_eq!(
        (mech.alg, mech.ealg),
        (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
        "{shape}"
    );
    assert!((5100..=5199).contains(&mech.port_s));
    {
        // the SA toward the UE's port-c carries the spi-c of the offer we chose
        let g = w.sas.pin();
        let sa3 = g.outbound(ue_ip(shape), 7004, mech.port_s).expect("SA3");
        assert_eq!(
            sa3.spi(),
            spi_c,
            "{shape}: the offer chosen by our preference"
        );
    }

    // the protected REGISTER, Route to our port-s
    let got = w.usim.authenticate_nonce(&nonce).unwrap();
    let reg2 = protected_from(shape, &text, &nonce, &got.res, &server, mech.port_s);
    if text.contains("Route:") {
        assert!(reg2.contains(&format!(":{};lr", mech.port_s)), "{reg2}");
    }
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: mech.spi_s },
        SocketAddr::new(ue_ip(shape), 7004),
        SocketAddr::new(pcscf_ip(shape), mech.port_s),
        reg2.as_bytes(),
    );
    assert_eq!(out.len(), 1, "{shape}: {:?}", w.reg.stats);
    let fwd = &out[0];
    check_at_core(fwd, &reg2, true);
    let m = Message::parse(&fwd.payload).unwrap();
    let d = Digest::parse(m.view().header(HeaderName::Authorization).unwrap()).unwrap();
    let input = digest::DigestInput {
        username: d.username().unwrap(),
        realm: d.realm().unwrap(),
        nonce: d.nonce().unwrap(),
        method: b"REGISTER",
        uri: d.uri().unwrap(),
        qop: digest::Qop::None,
    };
    digest::verify_aka(&input, &av.xres, d.response().unwrap()).expect("RES verifies");
    let contact = format!(
        "Contact: <sip:001010000000001@{}:7005>;expires=600000\r\nService-Route: <sip:orig@scscf.test:6060;lr>\r\nP-Associated-URI: <sip:001010000000001@{REALM}>\r\n",
        if v6(shape) { "[fd00:211::2]" } else { UE_V4 }
    );
    let ok = core_answer(&fwd.payload, 200, "OK", &contact);
    let out = w.feed(Side::Core, Protection::Plain, addr(ICSCF), addr(CORE), &ok);
    assert_eq!(out.len(), 1, "{shape}");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(200)
    );
    assert!(matches!(out[0].protection, Protection::Protected { .. }));
    assert_eq!(w.reg.registrations(), 1, "{shape}");
    w.reg.check_sa_invariants().unwrap();
    reg2
}

#[test]
fn every_phone_shape_registers_and_the_core_never_sees_our_route() {
    for (shape, spi_c) in SHAPES {
        register(shape, *spi_c);
    }
}

/// The protected REGISTER inside ESP (aes-cbc, the largest overhead we negotiate: IV 16,
/// padding, ICV 12) must fit one 1500-byte IP packet: we do not reassemble fragments.
#[test]
fn every_protected_register_fits_one_packet() {
    for (shape, spi_c) in SHAPES {
        let text = fixture(shape);
        assert!(text.len() <= 1200, "{shape}: {} bytes", text.len());
        let reg2 = register(shape, *spi_c);
        let sa = Sa::from_aka(
            4096,
            "hmac-sha-1-96",
            "aes-cbc",
            &[7; 16],
            &[9; 16],
            SaOptions::default(),
        )
        .unwrap();
        let pkt = crate::support::ims::esp_packet(
            &sa,
            SocketAddr::new(ue_ip(shape), 7004),
            SocketAddr::new(pcscf_ip(shape), 5101),
            reg2.as_bytes(),
        );
        assert!(pkt.len() <= 1500, "{shape}: {} bytes in ESP", pkt.len());
    }
    let large = fixture("large_v4");
    assert!(large.len() >= 1150, "large_v4 is {} bytes", large.len());
}

#[test]
fn unacceptable_security_client_gets_494_and_nothing_forwarded() {
    let mut w = world();
    let text = fixture("sec_client_unacceptable_v4");
    let out = w.first("sec_client_unacceptable_v4", &text, 5060);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Ue, "nothing to the core");
    let m = Message::parse_strict(&out[0].payload).unwrap();
    let v = m.view();
    assert_eq!(v.status(), Some(494));
    // RFC 3329 §2.3.1: our list, so the UE can choose again
    assert_eq!(v.values(HeaderName::SecurityServer).count(), 2);
    assert_eq!(w.reg.sa_table_stats().inbound_used, 0, "no SA reserved");
}

/// Route headers a hostile UE writes: ours (by IP, by name, our port-s) then foreign ones,
/// over several Route headers and comma-separated. The REGISTER still goes to the I-CSCF we
/// chose and carries none of them (TS 24.229 §5.2.2.2: the P-CSCF routes the REGISTER).
#[test]
fn a_foreign_route_after_ours_does_not_steer_the_register() {
    let base = fixture("route_ip_port_v4");
    for routes in [
        "Route: <sip:10.211.0.1:5060;lr>, <sip:evil.example.com;lr>",
        "Route: <sip:10.211.0.1:5060;lr>\r\nRoute: <sip:10.9.9.9:5060;lr>",
        "Route: <sip:PCSCF.ims.mnc001.mcc001.3gppnetwork.org;lr>,<sip:10.211.0.1:5101;lr>\r\nRoute: <sip:[fd00:211::1];lr>, <sip:evil.example.com;lr>",
        "Route: <sip:10.211.0.1@evil.example.com;lr>",
        "Route: <sip:evil.example.com;lr>, <sip:10.211.0.1:5060;lr>",
        "Route: <sip:10.211.0.10:5060;lr>",
        "Route: <sip:10.211.0.1:5061;lr>",
        "Route: <sip:10.211.0.1;lr;maddr=10.9.9.9>",
    ] {
        let text = base.replace("Route: <sip:10.211.0.1:5060;lr>", routes);
        let mut w = world();
        let out = w.first("route_ip_port_v4", &text, 5060);
        assert_eq!(out.len(), 1, "{routes}");
        check_at_core(&out[0], &text, false);
        let s = String::from_utf8_lossy(&out[0].payload);
        assert!(
            !s.contains("evil") && !s.contains("10.9.9.9"),
            "{routes}: {s}"
        );
    }
}

/// RFC 3261 §16.4: a REGISTER whose Request-URI is us (our address or our hostname) is addressed
/// to us; we are no registrar and no home domain (TS 24.229 §5.1.1.2.1): 403, nothing forwarded
/// — even with `core.home_domains` empty, where any other domain would be served.
#[test]
fn register_addressed_to_us_gets_403() {
    let base = fixture("route_none_v4");
    for ruri in [
        "sip:10.211.0.1",
        "sip:10.211.0.1:5060",
        "sip:[fd00:211::1]",
        "sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org",
        "sips:PCSCF.ims.mnc001.mcc001.3gppnetwork.org:5101;transport=udp",
    ] {
        let text = base.replacen(
            "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0",
            &format!("REGISTER {ruri} SIP/2.0"),
            1,
        );
        let mut w = world();
        assert!(w.reg.config().home_domains.is_empty());
        let out = w.first("route_none_v4", &text, 5060);
        assert_eq!(out.len(), 1, "{ruri}");
        assert_eq!(out[0].side, Side::Ue, "{ruri}: nothing forwarded");
        let m = Message::parse_strict(&out[0].payload).unwrap();
        assert_eq!(m.view().status(), Some(403), "{ruri}");
        assert_eq!(w.reg.stats.unknown_home_domain, 1);
    }
}

/// Without Authorization the IMPI comes from the To IMPU: only `sip:user@domain` names one.
/// A tel: URI, an IP host or odd characters get 403 and nothing is forwarded; and the SA set
/// made for the derived IMPI serves no other (the protected REGISTER naming another gets 403).
#[test]
fn no_authorization_derives_the_impi_only_from_a_sip_impu() {
    let base = fixture("no_auth_v4");
    let to = "\r\nTo: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>";
    for bad in [
        "\r\nTo: <tel:+15551234567>",
        "\r\nTo: <sip:001010000000001@10.0.0.1>",
        "\r\nTo: <sip:001010000000001@[fd00::1]>",
        "\r\nTo: <sip:ims.mnc001.mcc001.3gppnetwork.org>",
        "\r\nTo: <sip:a\"b@ims.mnc001.mcc001.3gppnetwork.org>",
        "\r\nTo: <sip:+1555;npdi@ims.mnc001.mcc001.3gppnetwork.org>",
    ] {
        let text = base.replacen(to, bad, 1);
        let mut w = world();
        let out = w.first("no_auth_v4", &text, 5060);
        assert_eq!(out.len(), 1, "{bad}");
        assert_eq!(out[0].side, Side::Ue, "{bad}: nothing forwarded");
        let m = Message::parse_strict(&out[0].payload).unwrap();
        assert_eq!(m.view().status(), Some(403), "{bad}");
    }
    // the derived IMPI keeps the port and parameters out
    let text = base.replacen(
        to,
        "\r\nTo: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org:5060;user=x>",
        1,
    );
    let mut w = world();
    let out = w.first("no_auth_v4", &text, 5060);
    assert_eq!(out[0].side, Side::Core);
    let d = header(&out[0].payload, HeaderName::Authorization).unwrap();
    assert!(
        d.starts_with(&format!("Digest username=\"{IMPI}\",")),
        "{d}"
    );
}

#[test]
fn impi_from_impu_forms() {
    let ok = |u: &str, want: &str| {
        assert_eq!(
            rules::impi_from_impu(u.as_bytes()),
            Some(want.as_bytes()),
            "{u}"
        )
    };
    ok("sip:user@ims.example.net", "user@ims.example.net");
    ok("SIPS:user@ims.example.net:5061;x=y", "user@ims.example.net");
    ok(
        "sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org?h=v",
        "001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
    );
    for bad in [
        "tel:+15551234",
        "sip:ims.example.net",
        "sip:@ims.example.net",
        "sip:user@",
        "sip:user@10.0.0.1",
        "sip:user@[::1]",
        "sip:user:pw@ims.example.net",
        "sip:u;p@ims.example.net",
        "sip:u\"@ims.example.net",
        "sip:user@ims example.net",
        "",
        "sip:",
    ] {
        assert_eq!(rules::impi_from_impu(bad.as_bytes()), None, "{bad}");
    }
    let huge = format!("sip:{}@ims.example.net", "u".repeat(10_000));
    assert_eq!(rules::impi_from_impu(huge.as_bytes()), None);
}

/// Over the temporary set made for the derived IMPI, a protected REGISTER naming another IMPI
/// gets 403 (the SA set is bound to its IMPI, TS 33.203 §7.1).
#[test]
fn no_authorization_binds_the_set_to_the_derived_impi() {
    let mut w = world();
    let text = fixture("no_auth_v4");
    let out = w.first("no_auth_v4", &text, 5060);
    let fwd = out[0].payload.clone();
    let av = w.hss.next_vector(&[0x33; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let www = format!(
        "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
        hex(av.ck.as_bytes()),
        hex(av.ik.as_bytes())
    );
    let resp = core_answer(&fwd, 401, "Unauthorized", &www);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        addr(ICSCF),
        addr(CORE),
        &resp,
    );
    let server = header(&out[0].payload, HeaderName::SecurityServer).unwrap();
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    let got = w.usim.authenticate_nonce(&nonce).unwrap();
    let reg2 = protected_from("no_auth_v4", &text, &nonce, &got.res, &server, mech.port_s).replace(
        &format!("username=\"{IMPI}\""),
        "username=\"001010000000002@ims.mnc001.mcc001.3gppnetwork.org\"",
    );
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: mech.spi_s },
        SocketAddr::new(UE_V4.parse().unwrap(), 7004),
        SocketAddr::new(PCSCF_V4.parse().unwrap(), mech.port_s),
        reg2.as_bytes(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Ue, "nothing forwarded");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(403)
    );
    assert_eq!(w.reg.stats.impi_mismatch, 1);
}

/// `pcscf rewrite-register` reads every fixture and prints a REGISTER with no Route naming us.
#[test]
fn rewrite_register_command_works_on_every_fixture() {
    for (shape, _) in SHAPES {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/ims/phones")
            .join(format!("{shape}.sip"));
        let src = SocketAddr::new(ue_ip(shape), 5060).to_string();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pcscf"))
            .args(["rewrite-register"])
            .arg(&p)
            .args(["--source", &src])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shape}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = Message::parse_strict(text.as_bytes()).unwrap();
        assert_eq!(
            m.view().headers(HeaderName::Route).count(),
            0,
            "{shape}: {text}"
        );
        assert!(
            !m.view()
                .values(HeaderName::Require)
                .any(|t| t == b"sec-agree"),
            "{shape}: {text}"
        );
        assert_eq!(m.view().headers(HeaderName::ProxyRequire).count(), 0);
    }
}

/// RFC 3261 §16.4 in the request toward a UE: every leading Route entry that is us goes (the
/// Path we inserted by hostname, our core address, our UE-side address in another IPv6 form),
/// across headers and comma-separated values; the first that is not us stays, with the rest.
#[test]
fn every_leading_route_that_is_us_is_popped() {
    let own = own();
    let me = ProxyIdentity {
        via_sent_by: b"10.211.0.1:5103",
        via_transport: b"UDP",
        path_uri: b"",
        own: &own,
        visited_network_id: b"",
        orig_ioi: b"",
    };
    let msg = "MESSAGE sip:001010000000001@10.211.0.2:7005 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nRoute: <sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>, <sip:10.0.1.10;lr>\r\nRoute: <sip:[FD00:211:0::1]:5101;lr>\r\nRoute: <sip:other.example.net;lr>, <sip:10.211.0.1;lr>\r\nFrom: <sip:b@ims.example.net>;tag=1\r\nTo: <sip:a@ims.example.net>\r\nCall-ID: y\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let mut f = vec![0u8; 4096];
    f[512..512 + msg.len()].copy_from_slice(msg.as_bytes());
    let mut ed = Editor::new(&mut f, 512, 512 + msg.len()).unwrap();
    let branch = pcscf::sip::branch::BranchKey::random().seal(
        pcscf::sip::branch::Dir::ToUe,
        0,
        0,
        6060,
        1,
        "10.0.1.30".parse().unwrap(),
        "10.211.0.2".parse().unwrap(),
    );
    rules::rewrite_request_to_ue(&mut ed, &me, addr("10.0.1.30:6060"), &branch).unwrap();
    let out = ed.as_bytes().to_vec();
    let m = Message::parse_strict(&out).unwrap();
    assert_eq!(
        m.view().values(HeaderName::Route).collect::<Vec<_>>(),
        vec![
            &b"<sip:other.example.net;lr>"[..],
            &b"<sip:10.211.0.1;lr>"[..]
        ],
        "{}",
        String::from_utf8_lossy(&out)
    );
}

// ---- the worker: requests addressed to us ----

use crate::support::worker::{Kind, OUR_PORT_C, OUR_PORT_S, UE_PORT_C, UE_PORT_S, rig};

fn request(method: &str, ruri: &str, via_port: u16) -> Vec<u8> {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:{via_port};branch=z9hG4bKopt1;rport\r\nMax-Forwards: 70\r\nRoute: <sip:10.46.0.1:{OUR_PORT_S};lr>, <sip:evil.example.com;lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:alice@ims.example.net>\r\nCall-ID: opt-{method}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// What the worker sent the UE over SA2 (our port-c → its port-s), decrypted.
fn over_sa2(r: &mut crate::support::worker::Rig, pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    let mut esp = pkt.to_vec();
    let (inner, _) = r.sa2_rx.decapsulate(&mut esp).unwrap();
    match classify(&esp[inner.clone()]) {
        L4::Udp { src, dst, payload } => (
            src,
            dst,
            esp[inner.start + payload.start..inner.start + payload.end].to_vec(),
        ),
        other => panic!("not UDP inside ESP: {other:?}"),
    }
}

/// OPTIONS over the SA to us (by address with our port-s, by hostname, IPv6 in another form)
/// gets 200 with Allow over SA2; another method gets 405; ACK nothing; none is forwarded — the
/// UE's Routes (ours, then a foreign one) change nothing.
#[test]
fn requests_to_us_over_the_sa_are_answered_not_forwarded() {
    let mut r = rig(false);
    for (method, ruri, code) in [
        ("OPTIONS", "sip:10.46.0.1:5103", 200),
        ("OPTIONS", "sip:pcscf.example.net;transport=udp", 200),
        ("OPTIONS", "sips:[FD00:46:0::1]", 200),
        ("OPTIONS", "sip:10.0.1.10:5060", 200),
        ("MESSAGE", "sip:10.46.0.1", 405),
        ("INVITE", "sip:pcscf.example.net", 405),
    ] {
        let before = *r.w.stats();
        let sent = r.exchange(Kind::EspPortC, &request(method, ruri, UE_PORT_S));
        let (src, dst, sip) = over_sa2(&mut r, &sent);
        assert_eq!(
            (src.port(), dst),
            (OUR_PORT_C, addr(&format!("10.46.0.6:{UE_PORT_S}"))),
            "{method} {ruri}"
        );
        let m = Message::parse_strict(&sip).unwrap();
        assert_eq!(m.view().status(), Some(code), "{method} {ruri}");
        assert!(
            String::from_utf8_lossy(&sip).contains("\r\nAllow: OPTIONS\r\n"),
            "RFC 3261 §8.2.1: what we serve"
        );
        assert_eq!(r.w.stats().forwarded, before.forwarded, "nothing forwarded");
        assert_eq!(r.w.stats().replied, before.replied + 1);
    }
    let (side, pkt) = r
        .packet(Kind::EspPortC, &request("ACK", "sip:10.46.0.1", UE_PORT_S))
        .unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty(), "an ACK is never answered");
    assert_eq!(r.w.stats().drops[DropReason::ToUs as usize], 1);
    // a request to someone else still goes to the Service-Route, with none of the UE's Routes
    let sent = r.exchange(
        Kind::EspPortC,
        &request("MESSAGE", "sip:bob@ims.example.net", UE_PORT_C),
    );
    let (_, dst, sip) = match classify(&sent) {
        L4::Udp { src, dst, payload } => (src, dst, sent[payload.start..payload.end].to_vec()),
        other => panic!("{other:?}"),
    };
    assert_eq!(dst, addr("10.0.1.30:6060"));
    let m = Message::parse_strict(&sip).unwrap();
    assert_eq!(
        m.view().values(HeaderName::Route).collect::<Vec<_>>(),
        vec![&b"<sip:orig@scscf.ims.example.net:6060;lr>"[..]],
        "TS 24.229 §5.2.6.3: the stored Service-Route, not what the UE wrote"
    );
}

/// In the clear: OPTIONS to us gets 200 from 5060 (relay mode or not), other requests to us 405,
/// and none is forwarded, even in stateless relay mode.
#[test]
fn requests_to_us_in_the_clear_are_answered_not_forwarded() {
    for relay in [false, true] {
        let mut r = rig(relay);
        for (method, ruri, code) in [
            ("OPTIONS", "sip:10.46.0.1", 200),
            ("OPTIONS", "sip:user@pcscf.example.net:5060;lr", 200),
            ("SUBSCRIBE", "sip:10.46.0.1:5060", 405),
        ] {
            let before = *r.w.stats();
            let sent = r.exchange(Kind::PlainUe, &request(method, ruri, 5060));
            let (src, dst, sip) = match classify(&sent) {
                L4::Udp { src, dst, payload } => {
                    (src, dst, sent[payload.start..payload.end].to_vec())
                }
                other => panic!("{other:?}"),
            };
            assert_eq!(
                (src, dst),
                (addr("10.46.0.1:5060"), addr("10.46.0.6:5060")),
                "{method} {ruri}"
            );
            let m = Message::parse_strict(&sip).unwrap();
            assert_eq!(
                m.view().status(),
                Some(code),
                "relay={relay} {method} {ruri}"
            );
            assert_eq!(r.w.stats().forwarded, before.forwarded);
        }
        // not us: another address, another port, a user part naming us
        for ruri in [
            "sip:10.46.0.10",
            "sip:10.46.0.1:5061",
            "sip:10.46.0.1@evil.example.com",
        ] {
            let before = *r.w.stats();
            let sent = r.exchange(Kind::PlainUe, &request("OPTIONS", ruri, 5060));
            if relay {
                assert_eq!(r.w.stats().forwarded, before.forwarded + 1, "{ruri}");
            } else {
                let sip = match classify(&sent) {
                    L4::Udp { payload, .. } => sent[payload.start..payload.end].to_vec(),
                    other => panic!("{other:?}"),
                };
                let m = Message::parse_strict(&sip).unwrap();
                assert_eq!(m.view().status(), Some(403), "{ruri}");
            }
        }
    }
}

/// In the clear the source is not verified: an OPTIONS to us whose answer would be larger than
/// it (a bare request, no Route, no Max-Forwards) is not answered — no amplification.
#[test]
fn a_bare_options_to_us_in_the_clear_is_not_amplified() {
    let mut r = rig(false);
    let bare = b"OPTIONS sip:10.46.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 10.46.0.6;branch=z9hG4bKa\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    let (side, pkt) = r.packet(Kind::PlainUe, bare).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty());
    assert_eq!(r.w.stats().drops[DropReason::ToUs as usize], 1);
}

/// From the core: an OPTIONS to us is answered from our core-side address, never sent on to a
/// UE; in relay mode a UE's request loses the Route entries naming us before it is forwarded.
#[test]
fn core_options_to_us_and_relay_pops_our_routes() {
    let mut r = rig(false);
    let opt = b"OPTIONS sip:pcscf.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nFrom: <sip:scscf@ims.example.net>;tag=1\r\nTo: <sip:pcscf.example.net>\r\nCall-ID: k\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let sent = r.exchange(Kind::Core, opt);
    let (src, dst, sip) = match classify(&sent) {
        L4::Udp { src, dst, payload } => (src, dst, sent[payload.start..payload.end].to_vec()),
        other => panic!("{other:?}"),
    };
    assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:5060")));
    assert_eq!(
        Message::parse_strict(&sip).unwrap().view().status(),
        Some(200)
    );

    let mut r = rig(true);
    let msg: &str = "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bKr1;rport\r\nMax-Forwards: 70\r\nRoute: <sip:10.46.0.1:5060;lr>, <sip:[fd00:46::1];lr>\r\nRoute: <sip:icscf.example.net;lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: r1\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let sent = r.exchange(Kind::PlainUe, msg.as_bytes());
    let sip = match classify(&sent) {
        L4::Udp { payload, .. } => sent[payload.start..payload.end].to_vec(),
        other => panic!("{other:?}"),
    };
    let m = Message::parse_strict(&sip).unwrap();
    assert_eq!(
        m.view().values(HeaderName::Route).collect::<Vec<_>>(),
        vec![&b"<sip:icscf.example.net;lr>"[..]]
    );
}

/// TS 24.229 §5.2.3: the core's NOTIFY addressed to us (the Contact of our reg event
/// SUBSCRIBE) and the answers to our SUBSCRIBEs are the registration thread's: punted, never
/// answered or forwarded by the worker. A UE cannot reach that path: its NOTIFY to us over the
/// SA is answered 405 like any other method we do not serve, and nothing is punted.
#[test]
fn the_cores_reg_event_notify_is_punted_and_a_ues_is_refused() {
    let mut r = rig(false);
    let notify = |via: &str| {
        format!(
            "NOTIFY sip:10.0.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKn1\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@ims.example.net>;tag=s1\r\nTo: <sip:pcscf.example.net>;tag=p1\r\n\
             Call-ID: sub-1\r\nCSeq: 1 NOTIFY\r\nEvent: reg\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let before = r.punt.len();
    let (side, pkt) = r
        .packet(Kind::Core, notify("10.0.1.30:6060").as_bytes())
        .unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(
        r.w.io().take_sent().is_empty(),
        "not answered by the worker"
    );
    assert_eq!(r.punt.len(), before + 1, "punted");
    // the S-CSCF's answer to our SUBSCRIBE
    let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK-sub-0123456789abcdef;rport\r\n\
              From: <sip:pcscf.example.net>;tag=p1\r\nTo: <sip:alice@ims.example.net>;tag=s1\r\n\
              Call-ID: sub-1\r\nCSeq: 1 SUBSCRIBE\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    let (side, pkt) = r.packet(Kind::Core, ok.as_bytes()).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty());
    assert_eq!(r.punt.len(), before + 2, "punted");
    // the UE's NOTIFY to us, over its SA
    let sent = r.exchange(
        Kind::EspPortC,
        notify(&format!("10.46.0.6:{UE_PORT_S}")).as_bytes(),
    );
    let (_, _, sip) = over_sa2(&mut r, &sent);
    assert_eq!(
        Message::parse_strict(&sip).unwrap().view().status(),
        Some(405)
    );
    assert_eq!(r.punt.len(), before + 2, "nothing more punted");
}
