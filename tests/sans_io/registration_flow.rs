//! The IMS registration of an unauthenticated user through the registration thread, sans-IO:
//! a UE (our AKA and digest code as the USIM) and a core (an HSS + S-CSCF stub on test set 1)
//! exchange real SIP with the registrar, which installs the SAs the workers use. Negative cases:
//! Security-Verify mismatch, wrong RES, a challenge never answered.

use std::time::{Duration, Instant};

use pcscf::aka::{self, HssSubscriber, Usim, digest};
use pcscf::control::registrar::{
    Incoming, MAX_TEMPORARY, Outgoing, REG_AWAIT_AUTH, Registrar, RegistrarConfig,
};
use pcscf::control::{KeyLog, SaSecret};
use pcscf::dataplane::Protection;
use pcscf::esp::SaOptions;
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::io::Side;
use pcscf::satable::SaReader;
use pcscf::sip::headers::{Digest, SecMechanism};
use pcscf::sip::{HeaderName, Message};

use crate::support::ims::*;

pub(crate) struct World {
    pub(crate) reg: Registrar,
    pub(crate) sas: SaReader,
    pub(crate) hss: HssSubscriber,
    pub(crate) usim: Usim,
    pub(crate) now: Instant,
}

pub(crate) fn world() -> World {
    world_sized(64)
}

/// A world whose SA table has room for `sas` inbound and `sas` (at least 64) outbound SAs.
pub(crate) fn world_sized(sas: u32) -> World {
    let (writer, sas) = pcscf::satable::sa_table(pcscf::satable::SaTableConfig {
        inbound_capacity: sas,
        outbound_capacity: sas.max(64),
        spi_min: 4096,
        spi_max: 1 << 20,
    })
    .unwrap();
    let cfg = registrar_config(Some(addr("10.0.1.20:5060")), None);
    world_from(cfg, writer, sas)
}

/// A world with the registrar configured by `cfg` (an SA table of 64).
pub(crate) fn world_with(cfg: RegistrarConfig) -> World {
    let (writer, sas) = test_sa_table(64);
    world_from(cfg, writer, sas)
}

fn world_from(cfg: RegistrarConfig, writer: pcscf::satable::SaWriter, sas: SaReader) -> World {
    World {
        reg: Registrar::new(cfg, writer),
        sas,
        hss: test_hss(),
        usim: test_usim(),
        now: Instant::now(),
    }
}

impl World {
    pub(crate) fn feed(
        &mut self,
        side: Side,
        protection: Protection,
        src: &str,
        dst: &str,
        payload: &[u8],
    ) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let msg = Incoming {
            side,
            protection,
            src: addr(src),
            dst: addr(dst),
            payload,
        };
        self.reg.handle_message(msg, self.now);
        out.extend(std::iter::from_fn(|| self.reg.poll_transmit()));
        out
    }
}

pub(crate) struct Challenge {
    out_401: Vec<u8>,
    pub(crate) server: String,
    pub(crate) nonce: String,
    xres: aka::Res,
    pub(crate) spi_pc: u32,
    pub(crate) spi_ps: u32,
    pub(crate) port_pc: u16,
    pub(crate) port_ps: u16,
}

/// Steps 1–3: REGISTER, the core's 401, the 401 to the UE with the SAs installed.
pub(crate) fn challenge(w: &mut World) -> Challenge {
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        REGISTER1.as_bytes(),
    );
    assert_eq!(out.len(), 1, "forwarded to the I-CSCF");
    let fwd = &out[0];
    assert_eq!(
        (fwd.side, fwd.src, fwd.dst),
        (Side::Core, addr("10.0.1.10:5060"), addr("10.0.1.20:5060"))
    );
    let auth = header(&fwd.payload, HeaderName::Authorization).unwrap();
    assert!(auth.contains("integrity-protected=\"no\""), "{auth}");
    assert!(header(&fwd.payload, HeaderName::SecurityClient).is_none());
    assert!(
        header(&fwd.payload, HeaderName::Route).is_none(),
        "the pre-loaded Route to us is popped"
    );
    assert_eq!(
        header(&fwd.payload, HeaderName::Path).as_deref(),
        Some("<sip:term@pcscf.test:5060;lr>")
    );

    let av = w.hss.next_vector(&[0x23; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let www = format!(
        "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\", qop=\"auth,auth-int\"\r\n",
        hex(av.ck.as_bytes()),
        hex(av.ik.as_bytes())
    );
    let resp = core_answer(&fwd.payload, 401, "Unauthorized", &www);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let to_ue = &out[0];
    assert_eq!(
        (to_ue.side, to_ue.protection, to_ue.src, to_ue.dst),
        (
            Side::Ue,
            Protection::Plain,
            addr("10.46.0.1:5060"),
            addr("10.46.0.6:5060")
        ),
        "the 401 goes back unprotected, from 5060"
    );
    let text = String::from_utf8_lossy(&to_ue.payload).to_string();
    assert!(
        !text.contains(&hex(av.ck.as_bytes())) && !text.contains("ck="),
        "CK never reaches the UE"
    );
    // nor stays in the frame the registrar edited the 401 in
    for key in [hex(av.ck.as_bytes()), hex(av.ik.as_bytes())] {
        assert!(
            !w.reg.frame_holds(key.as_bytes()),
            "key hex left in the frame"
        );
    }
    let server = header(&to_ue.payload, HeaderName::SecurityServer).expect("Security-Server");
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    assert_eq!(
        (mech.alg, mech.ealg),
        (IntegAlg::HmacSha1_96, EncAlg::AesCbc)
    );
    assert!(mech.spi_c >= 4096 && mech.spi_s >= 4096 && mech.spi_c != mech.spi_s);
    Challenge {
        out_401: to_ue.payload.clone(),
        server,
        nonce,
        xres: av.xres.clone(),
        spi_pc: mech.spi_c,
        spi_ps: mech.spi_s,
        port_pc: mech.port_c,
        port_ps: mech.port_s,
    }
}

#[test]
fn registration_end_to_end() {
    let mut w = world();
    let c = challenge(&mut w);

    // The four SAs are in the table for the workers: SA1/SA4 in, SA2/SA3 out (TS 33.203 §7.1).
    {
        let g = w.sas.pin();
        let sa1 = g.inbound(c.spi_ps).expect("SA1");
        assert_eq!((sa1.ue_port(), sa1.local_port()), (7004, c.port_ps));
        let sa4 = g.inbound(c.spi_pc).expect("SA4");
        assert_eq!((sa4.ue_port(), sa4.local_port()), (7005, c.port_pc));
        let sa2 = g
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .expect("SA2");
        assert_eq!(sa2.spi(), 1237, "outbound SAs carry the UE's SPIs");
        let sa3 = g
            .outbound("10.46.0.6".parse().unwrap(), 7004, c.port_ps)
            .expect("SA3");
        assert_eq!(sa3.spi(), 1236);
    }

    // The UE checks AUTN and computes RES / CK / IK.
    let got = w
        .usim
        .authenticate_nonce(&c.nonce)
        .expect("the network is authentic");
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let fwd = &out[0];
    assert_eq!(fwd.side, Side::Core);
    let auth = header(&fwd.payload, HeaderName::Authorization).unwrap();
    assert!(auth.contains("integrity-protected=\"yes\""), "{auth}");
    assert!(header(&fwd.payload, HeaderName::SecurityVerify).is_none());

    // The S-CSCF verifies the response against XRES (RFC 3310) and answers 200.
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
    digest::verify_aka(&input, &c.xres, d.response().unwrap()).expect("RES verifies at the S-CSCF");
    let ok = core_answer(
        &fwd.payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test:6060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>, <tel:+15551230001>\r\nContact: <sip:001010000000001@10.46.0.6:5060>;expires=600000\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(out.len(), 1);
    let to_ue = &out[0];
    assert_eq!(
        (to_ue.side, to_ue.src, to_ue.dst),
        (
            Side::Ue,
            addr(&format!("10.46.0.1:{}", c.port_pc)),
            addr("10.46.0.6:7005")
        ),
        "the 200 goes over SA2: our port-c to the UE's port-s"
    );
    assert!(matches!(to_ue.protection, Protection::Protected { .. }));
    assert_eq!(
        Message::parse(&to_ue.payload).unwrap().view().status(),
        Some(200)
    );
    assert_eq!(w.reg.registrations(), 1);
    let r = w.reg.registration_of(c.spi_ps).unwrap();
    assert_eq!(r.impi, IMPI.as_bytes());
    assert_eq!(r.impus[0], b"sip:001010000000001@ims.test");
    assert_eq!(r.service_route[0], b"sip:orig@scscf.test:6060;lr");
    assert_eq!(w.reg.stats.registered, 1);
    // the workers learn the registration through the SA entries (SA1 and SA4)
    {
        let g = w.sas.pin();
        for spi in [c.spi_ps, c.spi_pc] {
            let reg = g
                .inbound(spi)
                .unwrap()
                .registration()
                .expect("registration published");
            assert_eq!(reg.pai(), b"<sip:001010000000001@ims.test>");
            assert_eq!(reg.route(), b"<sip:orig@scscf.test:6060;lr>");
            assert_eq!(
                reg.next_hop,
                addr("10.0.1.20:5060"),
                "a host name falls back to the I-CSCF"
            );
        }
    }
    let _ = c.out_401;

    // The set lives for expires + 30 s, then the SAs go.
    w.reg
        .handle_timeout(w.now + Duration::from_secs(600_000 + 29));
    assert!(w.sas.pin().inbound(c.spi_ps).is_some());
    w.reg
        .handle_timeout(w.now + Duration::from_secs(600_000 + 31));
    assert!(w.sas.pin().inbound(c.spi_ps).is_none());
    assert_eq!(w.reg.registrations(), 0);
}

#[test]
fn security_verify_mismatch_is_refused_over_the_sa_and_not_forwarded() {
    let mut w = world();
    let c = challenge(&mut w);
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    // bidding down: the UE (or an attacker) claims null encryption
    let forged = c.server.replace("ealg=aes-cbc", "ealg=null");
    let reg2 = protected_register(&c.nonce, &got.res, &forged);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Ue, "nothing forwarded to the core");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(494)
    );
    assert!(matches!(out[0].protection, Protection::Protected { .. }));
    assert_eq!(w.reg.stats.verify_mismatch, 1);
}

/// The challenge answered with a wrong RES over the temporary SA1, and the core's 403 to it;
/// what the registrar sent on that 403.
pub(crate) fn fail_authentication(w: &mut World, c: &Challenge) -> Vec<Outgoing> {
    let wrong = aka::Res::from_slice(&[0u8; 8]).unwrap();
    let reg2 = protected_register(&c.nonce, &wrong, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    let forbidden = core_answer(&out[0].payload, 403, "Forbidden", "");
    w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &forbidden,
    )
}

#[test]
fn wrong_res_removes_the_temporary_set() {
    let mut w = world();
    let c = challenge(&mut w);
    let out = fail_authentication(&mut w, &c);
    assert_eq!(out.len(), 1);
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(403)
    );
    // the 403 goes back over the temporary SA2, which is still there for it...
    assert!(matches!(out[0].protection, Protection::Protected { .. }));
    assert_eq!(out[0].dst, addr("10.46.0.6:7005"));
    assert!(
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .is_some()
    );
    // ...and right after, the temporary SAs are removed
    w.reg.handle_timeout(w.now + Duration::from_secs(3));
    assert!(
        w.sas.pin().inbound(c.spi_ps).is_none(),
        "temporary SAs removed"
    );
    assert!(
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .is_none()
    );
    assert_eq!(w.reg.stats.auth_failed, 1);
}

#[test]
fn unanswered_challenge_expires_after_reg_await_auth() {
    let mut w = world();
    let c = challenge(&mut w);
    w.reg.handle_timeout(w.now + Duration::from_secs(239));
    assert!(w.sas.pin().inbound(c.spi_ps).is_some());
    w.reg.handle_timeout(w.now + Duration::from_secs(241));
    assert!(w.sas.pin().inbound(c.spi_ps).is_none());
    assert!(
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .is_none()
    );
    assert_eq!(w.reg.stats.expired_sets, 1);
}

/// A REGISTER flood (or a core that stopped answering) cannot grow the transaction table past
/// `max_pending`: the next new REGISTER gets 503 and is not forwarded; a retransmission of one in
/// progress is still absorbed, and room comes back when transactions time out (32 s).
#[test]
fn register_flood_is_capped_with_503() {
    let mut w = world();
    // REGISTER number n (its own Call-ID) from the UE, unprotected; what the registrar sends
    let send = |w: &mut World, n: usize| {
        let m = REGISTER1.replace("a84b4c76e66710-", &format!("flood{n}-"));
        w.feed(
            Side::Ue,
            Protection::Plain,
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            m.as_bytes(),
        )
    };
    for n in 0..8 {
        let out = send(&mut w, n);
        assert_eq!(
            (out.len(), out[0].side),
            (1, Side::Core),
            "REGISTER {n} forwarded"
        );
    }
    let out = send(&mut w, 8);
    assert_eq!((out.len(), out[0].side), (1, Side::Ue));
    assert!(
        out[0].payload.starts_with(b"SIP/2.0 503 "),
        "{}",
        String::from_utf8_lossy(&out[0].payload)
    );
    assert_eq!((w.reg.stats.overloaded, w.reg.stats.forwarded), (1, 8));
    // a retransmission of a transaction in progress is forwarded again, not refused
    let out = send(&mut w, 3);
    assert_eq!((out.len(), out[0].side), (1, Side::Core));
    assert_eq!(w.reg.stats.retransmissions, 1);
    // unanswered transactions go after 32 s: new REGISTERs are forwarded again
    w.reg.handle_timeout(w.now + Duration::from_secs(33));
    let out = send(&mut w, 9);
    assert_eq!((out.len(), out[0].side), (1, Side::Core));
}

#[test]
fn register_without_security_client_gets_494() {
    let mut w = world();
    let start = REGISTER1.find("Security-Client:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap() + 2;
    let bad = format!("{}{}", &REGISTER1[..start], &REGISTER1[end..]);
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        bad.as_bytes(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].side, out[0].dst),
        (Side::Ue, addr("10.46.0.6:5060"))
    );
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(494)
    );
}

/// Register fully (REGISTER, 401, protected REGISTER, 200); returns the challenge's data.
pub(crate) fn register(w: &mut World) -> Challenge {
    let (c, out) = register_answered(
        w,
        "Service-Route: <sip:orig@scscf.test;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.46.0.6:7005>;expires=3600\r\n",
    );
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(200)
    );
    c
}

/// The whole registration, the core's 200 carrying the `extra` header lines; what the
/// registrar sent on that 200.
pub(crate) fn register_answered(w: &mut World, extra: &str) -> (Challenge, Vec<Outgoing>) {
    let c = challenge(w);
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    let ok = core_answer(&out[0].payload, 200, "OK", extra);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    (c, out)
}

#[test]
fn re_registration_with_a_new_sa_set_keeps_the_old_one_until_it_expires() {
    re_register_with_new_keys(7006);
}

/// A UE that keeps its port-c across re-authentication (TS 33.203 §7.4 says new): our port-s
/// cannot stay (SA3 of both sets would have the same key), so the new set gets a fresh pair.
#[test]
fn re_registration_reusing_the_ue_port_c_gets_a_fresh_port_pair() {
    re_register_with_new_keys(7004);
}

/// Register, then re-register over the current set with new SPIs and the UE's port-c
/// `port_uc`; the core re-authenticates (new CK/IK), the new set takes over, the old goes at
/// its expiry. Our port-s stays when the UE's port-c is new (TS 33.203 §7.4).
fn re_register_with_new_keys(port_uc: u16) {
    let mut w = world();
    let first = register(&mut w);
    // The UE re-registers over its current SA1 with a new Security-Client (new SPIs and
    // port-c, same port-s) and Security-Verify = the current Security-Server (TS 33.203 §7.4).
    let new_client = format!(
        "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=2236;spi-s=2237;port-c={port_uc};port-s=7005"
    );
    let start = REGISTER1.find("Security-Client:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap() + 2;
    let rereg = format!(
        "{}Security-Client: {new_client}\r\nSecurity-Verify: {}\r\n{}",
        &REGISTER1[..start],
        first.server,
        &REGISTER1[end..]
    )
    .replacen("CSeq: 1 REGISTER", "CSeq: 3 REGISTER", 1);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: first.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", first.port_ps),
        rereg.as_bytes(),
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    assert_eq!(
        out[0].side,
        Side::Core,
        "a new Security-Client is fine on a re-registration"
    );
    // The core re-authenticates: a new 401 with new CK/IK.
    let (nonce, resp) = core_401(&mut w.hss, &out[0].payload, 0x77);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert_eq!(out.len(), 1);
    // the 401 goes over the current set: our port-c → the UE's port-s
    assert!(matches!(out[0].protection, Protection::Protected { .. }));
    assert_eq!(out[0].src, addr(&format!("10.46.0.1:{}", first.port_pc)));
    assert_eq!(out[0].dst, addr("10.46.0.6:7005"));
    let server = header(&out[0].payload, HeaderName::SecurityServer).unwrap();
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    assert_ne!(
        mech.port_c, first.port_pc,
        "the new set gets another port-c than the current one"
    );
    if port_uc == 7004 {
        assert_ne!(mech.port_s, first.port_ps, "a fresh pair");
    } else {
        // TS 33.203 §7.4 [spec-m]: the UE's dialogs route to our port-s (our Record-Route
        // entry names it), so it stays across the new set
        assert_eq!(mech.port_s, first.port_ps, "our port-s stays");
    }
    {
        let g = w.sas.pin();
        assert!(
            g.inbound(mech.spi_s).is_some(),
            "new temporary set installed"
        );
        assert!(g.inbound(first.spi_ps).is_some(), "current set still there");
        assert_eq!(
            g.outbound("10.46.0.6".parse().unwrap(), port_uc, mech.port_s)
                .unwrap()
                .spi(),
            2236
        );
        // every SA of the new set knows both of our ports
        let e = g.inbound(mech.spi_c).unwrap();
        assert_eq!((e.port_c(), e.port_s()), (mech.port_c, mech.port_s));
    }
    // The UE answers over the new set: Security-Client = its new one, Security-Verify = new.
    let got = w.usim.authenticate_nonce(&nonce).unwrap();
    let reg = String::from_utf8(protected_register(&nonce, &got.res, &server)).unwrap();
    let start = reg.find("Security-Client:").unwrap();
    let end = start + reg[start..].find("\r\n").unwrap() + 2;
    let reg = format!(
        "{}Security-Client: {new_client}\r\n{}",
        &reg[..start],
        &reg[end..]
    )
    .replacen("CSeq: 2 REGISTER", "CSeq: 4 REGISTER", 1);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: mech.spi_s },
        &format!("10.46.0.6:{port_uc}"),
        &format!("10.46.0.1:{}", mech.port_s),
        reg.as_bytes(),
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    assert_eq!(out[0].side, Side::Core);
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.46.0.6:7005>;expires=7200\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(
        out[0].src,
        addr(&format!("10.46.0.1:{}", mech.port_c)),
        "200 over the new set"
    );
    // Both sets carry traffic now; the old one goes at its expiry (3600 + 30 s), the new one
    // (registered for 7200 s) stays.
    {
        let g = w.sas.pin();
        assert!(g.inbound(mech.spi_s).is_some() && g.inbound(first.spi_ps).is_some());
        assert!(g.inbound(mech.spi_s).unwrap().registration().is_some());
        // a request toward the UE (at its port-s, whatever our port) takes the new set while
        // the old one lingers (TS 33.203 §7.4)
        let ue = "10.46.0.6".parse().unwrap();
        assert!(g.outbound(ue, 7005, first.port_pc).is_some());
        assert_eq!(g.outbound_any(ue, 7005).unwrap().spi(), 2237);
    }
    w.reg.handle_timeout(w.now + Duration::from_secs(3600 + 31));
    let g = w.sas.pin();
    assert!(
        g.inbound(first.spi_ps).is_none(),
        "old set gone at its expiry"
    );
    assert!(
        g.outbound("10.46.0.6".parse().unwrap(), 7005, first.port_pc)
            .is_none()
    );
    // the new set stays whole, also where it shares our port-s with the old one
    assert!(g.inbound(mech.spi_s).is_some() && g.inbound(mech.spi_c).is_some());
    let ue = "10.46.0.6".parse().unwrap();
    assert_eq!(g.outbound(ue, port_uc, mech.port_s).unwrap().spi(), 2236);
    assert_eq!(g.outbound(ue, 7005, mech.port_c).unwrap().spi(), 2237);
    // (the new set lives until its own expiry, 7200 + 30 s)
}

/// The core's 401 to the REGISTER `request` (RFC 3261 §8.2.6 headers copied) with a fresh
/// vector of `hss` (RAND `seed` repeated) and its CK/IK in hex, as an S-CSCF sends it to the
/// P-CSCF (TS 24.229 §5.4.1.2.1): the nonce and the response.
pub(crate) fn core_401(hss: &mut HssSubscriber, request: &[u8], seed: u8) -> (String, Vec<u8>) {
    let av = hss.next_vector(&[seed; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let www = format!(
        "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
        hex(av.ck.as_bytes()),
        hex(av.ik.as_bytes())
    );
    let resp = core_answer(request, 401, "Unauthorized", &www);
    (nonce, resp)
}

/// One re-registration with re-authentication over the set `(spi_ps, server, port_ps)`: the
/// UE offers spi-c/spi-s `spis` and port-c `port_uc` (port-s 7005), CSeq `cseq` and
/// `cseq + 1`. Returns the new set as (our spi-s, our port-c, the Security-Server).
pub(crate) fn re_register_over(
    w: &mut World,
    (spi_ps, server, port_ps): (u32, &str, u16),
    spis: (u32, u32),
    port_uc: u16,
    cseq: u32,
    seed: u8,
) -> (u32, u16, String) {
    let client = format!(
        "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={};spi-s={};port-c={port_uc};port-s=7005",
        spis.0, spis.1
    );
    let with_client = |msg: &str, verify: Option<&str>| {
        let start = msg.find("Security-Client:").unwrap();
        let end = start + msg[start..].find("\r\n").unwrap() + 2;
        let verify = verify.map_or(String::new(), |v| format!("Security-Verify: {v}\r\n"));
        format!(
            "{}Security-Client: {client}\r\n{verify}{}",
            &msg[..start],
            &msg[end..]
        )
    };
    let rereg = with_client(REGISTER1, Some(server)).replacen(
        "CSeq: 1 REGISTER",
        &format!("CSeq: {cseq} REGISTER"),
        1,
    );
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{port_ps}"),
        rereg.as_bytes(),
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let (nonce, resp) = core_401(&mut w.hss, &out[0].payload, seed);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let server = header(&out[0].payload, HeaderName::SecurityServer).unwrap();
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    let got = w.usim.authenticate_nonce(&nonce).unwrap();
    let reg = String::from_utf8(protected_register(&nonce, &got.res, &server)).unwrap();
    let reg = with_client(&reg, None).replacen(
        "CSeq: 2 REGISTER",
        &format!("CSeq: {} REGISTER", cseq + 1),
        1,
    );
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: mech.spi_s },
        &format!("10.46.0.6:{port_uc}"),
        &format!("10.46.0.1:{}", mech.port_s),
        reg.as_bytes(),
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.46.0.6:7005>;expires=7200\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    (mech.spi_s, mech.port_c, server)
}

/// Two re-registrations in a row (TS 33.203 §7.4): the first set, displaced from "old" by
/// the second, is not deleted under whatever still uses it (a transaction's answer, the UE's
/// TCP connection over it): it stays for a transaction's life (64*T1), then goes; the sets
/// after it stay.
#[test]
fn a_set_displaced_by_a_second_re_registration_retires_after_a_transaction_life() {
    let mut w = world();
    let first = register(&mut w);
    let (spi_2, _, server_2) = re_register_over(
        &mut w,
        (first.spi_ps, &first.server, first.port_ps),
        (2236, 2237),
        7006,
        3,
        0x77,
    );
    let (spi_3, _, _) = re_register_over(
        &mut w,
        (spi_2, &server_2, first.port_ps),
        (2336, 2337),
        7008,
        5,
        0x78,
    );
    {
        let g = w.sas.pin();
        assert!(g.inbound(spi_3).is_some(), "current");
        assert!(g.inbound(spi_2).is_some(), "old");
        assert!(
            g.inbound(first.spi_ps).is_some() && g.inbound(first.spi_pc).is_some(),
            "the displaced set is still there for what is in flight on it"
        );
    }
    // 64*T1 = 32 s later
    w.reg.handle_timeout(w.now + Duration::from_secs(31));
    assert!(w.sas.pin().inbound(first.spi_ps).is_some(), "not before");
    w.reg.handle_timeout(w.now + Duration::from_secs(33));
    let g = w.sas.pin();
    assert!(
        g.inbound(first.spi_ps).is_none() && g.inbound(first.spi_pc).is_none(),
        "gone after a transaction's life"
    );
    assert!(g.inbound(spi_2).is_some() && g.inbound(spi_3).is_some());
    w.reg.check_sa_invariants().unwrap();
}

/// De-register the UE of `c` (Expires: 0 over its current SA, TS 33.203 §7.4) and have the core
/// accept it: what the registrar sends then.
pub(crate) fn deregister(w: &mut World, c: &Challenge) -> Vec<Outgoing> {
    let start = REGISTER1.find("Security-Client:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap() + 2;
    let dereg = format!(
        "{}Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=3236;spi-s=3237;port-c=7008;port-s=7005\r\nSecurity-Verify: {}\r\n{}",
        &REGISTER1[..start],
        c.server,
        &REGISTER1[end..]
    )
    .replacen("CSeq: 1 REGISTER", "CSeq: 5 REGISTER", 1)
    .replacen("Expires: 600000", "Expires: 0", 1)
    .replacen(";expires=600000", ";expires=0", 1);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        dereg.as_bytes(),
    );
    assert_eq!(out[0].side, Side::Core, "{:?}", w.reg.stats);
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Contact: <sip:001010000000001@10.46.0.6:7005>;expires=0\r\n",
    );
    w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    )
}

#[test]
fn de_registration_answers_over_the_sa_then_removes_it() {
    let mut w = world();
    let c = register(&mut w);
    let out = deregister(&mut w, &c);
    // The 200 goes out over the SA, which is still there when the worker sends it...
    assert!(matches!(out[0].protection, Protection::Protected { .. }));
    assert_eq!(out[0].dst, addr("10.46.0.6:7005"));
    assert!(
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .is_some()
    );
    assert_eq!(w.reg.stats.deregistered, 1);
    // ...and the SAs go right after (not at the old expiry).
    w.reg.handle_timeout(w.now + Duration::from_secs(3));
    assert!(w.sas.pin().inbound(c.spi_ps).is_none());
    assert!(
        w.sas
            .pin()
            .outbound("10.46.0.6".parse().unwrap(), 7005, c.port_pc)
            .is_none()
    );
    assert_eq!(w.reg.registrations(), 0);
}

#[test]
fn ipv6_ue_registers_and_gets_ipv6_sas() {
    let (writer, sas) = test_sa_table(64);
    let cfg = RegistrarConfig {
        ue_addrs: vec![
            "10.46.0.1".parse().unwrap(),
            "2001:db8:46::1".parse().unwrap(),
        ],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: addr("10.0.1.10:5060"),
        icscf: Some(addr("10.0.1.20:5060")),
        dns: None,
        home_domains: vec![],
        icscf_by_domain: vec![],
        icscf_tcp: false,
        core_max_udp_request: usize::MAX,
        source_limit: (
            pcscf::control::registrar::SOURCE_BURST,
            pcscf::control::registrar::SOURCE_PER_SECOND,
        ),
        via_sent_by: "10.0.1.10:5060".into(),
        path_uri: "sip:term@pcscf.test:5060;lr".into(),
        own_hosts: vec!["pcscf.ims.mnc001.mcc001.3gppnetwork.org".into()],
        visited_network_id: "\"Visited\"".into(),
        orig_ioi: "visited.test".into(),
        prefs: vec![(IntegAlg::HmacSha1_96, EncAlg::AesCbc)],
        sa_options: SaOptions::default(),
        max_pending: 8,
        reg_event: false,
    };
    let mut reg = Registrar::new(cfg, writer);
    let now = Instant::now();
    let reg6 = include_bytes!("../data/ims/register1_v6.sip");
    let ue = "[2001:db8:46::6]:5060";
    let mut out = Vec::new();
    let msg = Incoming {
        side: Side::Ue,
        protection: Protection::Plain,
        src: addr(ue),
        dst: addr("[2001:db8:46::1]:5060"),
        payload: reg6,
    };
    reg.handle_message(msg, now);
    out.extend(std::iter::from_fn(|| reg.poll_transmit()));
    assert_eq!(out.len(), 1, "{:?}", reg.stats);
    let via = header(&out[0].payload, HeaderName::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/UDP 10.0.1.10:5060"), "{via}");
    let m = Message::parse(&out[0].payload).unwrap();
    let ue_via = m.view().values(HeaderName::Via).nth(1).unwrap().to_vec();
    assert!(
        String::from_utf8_lossy(&ue_via).contains("rport=5060"),
        "{}",
        String::from_utf8_lossy(&ue_via)
    );
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\", algorithm=AKAv1-MD5, ck=\"00112233445566778899aabbccddeeff\", ik=\"ffeeddccbbaa99887766554433221100\"\r\n";
    let resp = core_answer(&out[0].payload, 401, "Unauthorized", www);
    let mut out2 = Vec::new();
    let msg = Incoming {
        side: Side::Core,
        protection: Protection::Plain,
        src: addr("10.0.1.20:5060"),
        dst: addr("10.0.1.10:5060"),
        payload: &resp,
    };
    reg.handle_message(msg, now);
    out2.extend(std::iter::from_fn(|| reg.poll_transmit()));
    assert_eq!(out2.len(), 1);
    assert_eq!(
        (out2[0].src, out2[0].dst),
        (addr("[2001:db8:46::1]:5060"), addr(ue))
    );
    let server = header(&out2[0].payload, HeaderName::SecurityServer).unwrap();
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    let g = sas.pin();
    let ip6: std::net::IpAddr = "2001:db8:46::6".parse().unwrap();
    let sa1 = g.inbound(mech.spi_s).expect("SA1 for the IPv6 UE");
    assert_eq!(
        (sa1.ue_addr(), sa1.ue_port(), sa1.local_port()),
        (ip6, 6301, mech.port_s)
    );
    let sa2 = g
        .outbound(ip6, 6300, mech.port_c)
        .expect("SA2 toward the IPv6 UE");
    assert_eq!(sa2.spi(), 3523141112, "SPIs above 2^31 kept as u32");
}

// ---- the registrar as a trust boundary: what a hostile UE sends is refused ----

/// A REGISTER (REGISTER1) from `src` naming `impi`, unprotected, with its own Call-ID.
fn register_as(
    w: &mut World,
    src: &str,
    impi: &str,
    callid: &str,
    client: Option<&str>,
) -> Vec<Outgoing> {
    let mut m = REGISTER1
        .replace(IMPI, impi)
        .replace("a84b4c76e66710-", callid);
    if let Some(c) = client {
        let start = m.find("Security-Client:").unwrap();
        let end = start + m[start..].find("\r\n").unwrap() + 2;
        m = format!("{}Security-Client: {c}\r\n{}", &m[..start], &m[end..]);
    }
    w.feed(
        Side::Ue,
        Protection::Plain,
        src,
        "10.46.0.1:5060",
        m.as_bytes(),
    )
}

/// The core's 401 with AKA keys for a forwarded REGISTER; returns what the registrar sent.
fn challenge_401(w: &mut World, fwd: &[u8]) -> Vec<Outgoing> {
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"bm9uY2U=\", algorithm=AKAv1-MD5, ck=\"00112233445566778899aabbccddeeff\", ik=\"ffeeddccbbaa99887766554433221100\"\r\n";
    let resp = core_answer(fwd, 401, "Unauthorized", www);
    w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    )
}

/// A protected REGISTER over UE A's SA naming another IMPI gets 403 over the SA and
/// nothing reaches the core.
#[test]
fn protected_register_with_another_impi_is_refused() {
    let mut w = world();
    let c = register(&mut w);
    let got_server = c.server.clone();
    let other = "001010000000002@ims.mnc001.mcc001.3gppnetwork.org";
    let dereg = String::from_utf8(protected_register(
        &c.nonce,
        &aka::Res::from_slice(&[1; 8]).unwrap(),
        &got_server,
    ))
    .unwrap()
    .replace(IMPI, other)
    .replacen("CSeq: 2 REGISTER", "CSeq: 9 REGISTER", 1)
    .replacen("Expires: 600000", "Expires: 0", 1);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        dereg.as_bytes(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Ue, "nothing forwarded to the core");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(403)
    );
    assert_eq!(w.reg.stats.impi_mismatch, 1);
    w.reg.check_sa_invariants().unwrap();
}

/// A 401 to a protected re-REGISTER, twice, and 401s without keys: no SA slot leaks.
#[test]
fn challenges_never_leak_sa_slots() {
    let mut w = world();
    let c = register(&mut w);
    for n in 0..5 {
        let rereg = String::from_utf8(protected_register(
            &c.nonce,
            &aka::Res::from_slice(&[1; 8]).unwrap(),
            &c.server,
        ))
        .unwrap()
        .replacen("CSeq: 2 REGISTER", &format!("CSeq: {} REGISTER", 10 + n), 1);
        let out = w.feed(
            Side::Ue,
            Protection::Protected { spi: c.spi_ps },
            "10.46.0.6:7004",
            &format!("10.46.0.1:{}", c.port_ps),
            rereg.as_bytes(),
        );
        assert_eq!(out[0].side, Side::Core, "{:?}", w.reg.stats);
        let out = challenge_401(&mut w, &out[0].payload);
        assert_eq!(out.len(), 1);
        w.reg.check_sa_invariants().unwrap();
    }
    // plain Digest 401s (no ck/ik) reserve nothing
    for n in 0..5 {
        let out = register_as(&mut w, "10.46.0.9:5060", IMPI, &format!("plain{n}-"), None);
        let resp = core_answer(
            &out[0].payload,
            401,
            "Unauthorized",
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        );
        let out = w.feed(
            Side::Core,
            Protection::Plain,
            "10.0.1.20:5060",
            "10.0.1.10:5060",
            &resp,
        );
        assert_eq!(out.len(), 1);
        assert!(header(&out[0].payload, HeaderName::SecurityServer).is_none());
        w.reg.check_sa_invariants().unwrap();
    }
    let used = w.reg.sa_table_stats().inbound_used;
    assert_eq!(
        used, 4,
        "the current set and one temporary set: {used} SPIs in use"
    );
    w.reg.handle_timeout(w.now + Duration::from_secs(10_000));
    w.reg.check_sa_invariants().unwrap();
    assert_eq!(w.reg.sa_table_stats().inbound_used, 0);
}

/// An attacker's unprotected REGISTER naming the victim's IMPI during the victim's
/// registration neither replaces nor steals the victim's temporary set: the victim's 200 goes
/// over the victim's own set.
#[test]
fn another_address_cannot_hijack_a_challenge_in_progress() {
    let mut w = world();
    let c = challenge(&mut w);
    // the attacker (another address) naming the same IMPI gets a challenge of its own
    let out = register_as(&mut w, "10.46.0.66:5060", IMPI, "evil-", None);
    let out = challenge_401(&mut w, &out[0].payload);
    assert_eq!(out[0].dst, addr("10.46.0.66:5060"));
    assert!(
        w.sas.pin().inbound(c.spi_ps).is_some(),
        "the victim's temporary set is still there"
    );
    // the victim completes over its set
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    assert_eq!(out[0].side, Side::Core);
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.46.0.6:7005>;expires=3600\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(
        out[0].dst,
        addr("10.46.0.6:7005"),
        "the 200 goes to the victim"
    );
    assert_eq!(out[0].src, addr(&format!("10.46.0.1:{}", c.port_pc)));
    assert!(
        w.sas
            .pin()
            .inbound(c.spi_ps)
            .unwrap()
            .registration()
            .is_some()
    );
    w.reg.check_sa_invariants().unwrap();
}

/// Forged addresses cannot lock a subscriber out: challenges for the victim's IMPI from
/// [`MAX_TEMPORARY`] other addresses, and the victim's own challenge still gets its SAs (the
/// oldest challenge makes room), within the cap.
#[test]
fn squatted_challenges_do_not_lock_the_subscriber_out() {
    let mut w = world();
    for k in 0..MAX_TEMPORARY {
        let src = format!("10.46.0.{}:5060", 50 + k);
        let out = register_as(&mut w, &src, IMPI, &format!("squat{k}-"), None);
        let out = challenge_401(&mut w, &out[0].payload);
        assert!(header(&out[0].payload, HeaderName::SecurityServer).is_some());
        w.now += Duration::from_secs(1);
    }
    let out = register_as(&mut w, "10.46.0.6:5060", IMPI, "victim-", None);
    let out = challenge_401(&mut w, &out[0].payload);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst, addr("10.46.0.6:5060"));
    assert!(
        header(&out[0].payload, HeaderName::SecurityServer).is_some(),
        "the victim is challenged with SAs: {:?}",
        w.reg.stats
    );
    assert_eq!(w.reg.stats.temporary_evicted, 1);
    assert_eq!(
        w.reg.sa_table_stats().inbound_used,
        2 * MAX_TEMPORARY,
        "still at most MAX_TEMPORARY sets"
    );
    w.reg.check_sa_invariants().unwrap();
}

/// A full SA table: the UE whose challenge cannot get SAs is told so with a 503 and
/// Retry-After (not left to time out), and nothing of the 401's keys reaches it.
#[test]
fn no_room_for_an_sa_set_is_a_503_not_silence() {
    let (writer, _sas) = test_sa_table(2);
    let mut w = world();
    w.reg = Registrar::new(registrar_config(Some(addr("10.0.1.20:5060")), None), writer);
    let out = register_as(&mut w, "10.46.0.6:5060", IMPI, "first-", None);
    let out = challenge_401(&mut w, &out[0].payload);
    assert!(header(&out[0].payload, HeaderName::SecurityServer).is_some());
    let other = "001010000000002@ims.mnc001.mcc001.3gppnetwork.org";
    let out = register_as(&mut w, "10.46.0.7:5060", other, "second-", None);
    let out = challenge_401(&mut w, &out[0].payload);
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    assert_eq!(out[0].dst, addr("10.46.0.7:5060"));
    let m = Message::parse_strict(&out[0].payload).unwrap();
    let v = m.view();
    assert_eq!(v.status(), Some(503));
    assert!(v.header(HeaderName::WwwAuthenticate).is_none());
    assert_eq!(v.values(HeaderName::Via).count(), 1, "only the UE's Via");
    let text = String::from_utf8_lossy(&out[0].payload).to_ascii_lowercase();
    assert!(text.contains("retry-after: "), "{text}");
    assert!(!text.contains("ck=") && !text.contains("ik="), "{text}");
    // the 401 it was built from, keys and all, does not stay in the registrar's frame
    for key in [
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    ] {
        assert!(
            !w.reg.frame_holds(key.as_bytes()),
            "{key} left in the frame"
        );
    }
    assert_eq!(w.reg.stats.sa_install_failed, 1);
    w.reg.check_sa_invariants().unwrap();
}

/// An unprotected REGISTER with the victim's (spoofed) address and ports does not
/// replace or later delete the victim's outbound SAs.
#[test]
fn spoofed_victim_ports_do_not_touch_its_outbound_sas() {
    let mut w = world();
    let c = register(&mut w);
    let victim: std::net::IpAddr = "10.46.0.6".parse().unwrap();
    let before = w.sas.pin().outbound(victim, 7005, c.port_pc).unwrap().spi();
    // more challenges than we have port pairs (50), each for another IMPI and a second apart
    // (within the per-source and per-IMPI rate limits)
    for n in 0..60 {
        w.now += Duration::from_secs(1);
        let other = format!("0010100000001{n:02}@ims.mnc001.mcc001.3gppnetwork.org");
        let out = register_as(
            &mut w,
            "10.46.0.6:5060",
            &other,
            &format!("spoof{n}-"),
            None,
        );
        assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
        if out[0].side == Side::Core {
            let _ = challenge_401(&mut w, &out[0].payload);
        }
        let g = w.sas.pin();
        assert_eq!(
            g.outbound(victim, 7005, c.port_pc).map(|e| e.spi()),
            Some(before)
        );
        assert_eq!(
            g.outbound(victim, 7004, c.port_ps).map(|e| e.spi()),
            Some(1236)
        );
    }
    w.reg.check_sa_invariants().unwrap();
    // the attacker's temporary sets expire: the victim's SAs stay
    w.reg.handle_timeout(w.now + Duration::from_secs(300));
    assert_eq!(
        w.sas
            .pin()
            .outbound(victim, 7005, c.port_pc)
            .map(|e| e.spi()),
        Some(before)
    );
    w.reg.check_sa_invariants().unwrap();
}

/// A 200 without P-Associated-URI asserts no identity made from UE text; after a
/// de-registration no set asserts the identity, at once.
#[test]
fn no_identity_without_p_associated_uri_and_none_after_deregistration() {
    let mut w = world();
    let c = challenge(&mut w);
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        &reg2,
    );
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Contact: <sip:001010000000001@10.46.0.6:7005>;expires=3600\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(200)
    );
    assert!(
        w.sas
            .pin()
            .inbound(c.spi_ps)
            .unwrap()
            .registration()
            .is_none()
    );
    assert_eq!(w.reg.stats.no_associated_uri, 1);

    let mut w = world();
    let c = register(&mut w);
    assert!(
        w.sas
            .pin()
            .inbound(c.spi_ps)
            .unwrap()
            .registration()
            .is_some()
    );
    let dereg = String::from_utf8(protected_register(
        &c.nonce,
        &aka::Res::from_slice(&[1; 8]).unwrap(),
        &c.server,
    ))
    .unwrap()
    .replacen("CSeq: 2 REGISTER", "CSeq: 7 REGISTER", 1)
    .replacen("Expires: 600000", "Expires: 0", 1);
    let out = w.feed(
        Side::Ue,
        Protection::Protected { spi: c.spi_ps },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", c.port_ps),
        dereg.as_bytes(),
    );
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Contact: <sip:001010000000001@10.46.0.6:7005>;expires=0\r\n",
    );
    let _ = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    for spi in [c.spi_ps, c.spi_pc] {
        let g = w.sas.pin();
        let e = g.inbound(spi).expect("the SA stays for the 200");
        assert!(
            e.registration().is_none(),
            "no identity asserted after de-registration"
        );
    }
}

/// A final response from another address than the REGISTER went to is ignored.
#[test]
fn a_response_from_elsewhere_is_ignored() {
    let mut w = world();
    let out = register_as(&mut w, "10.46.0.6:5060", IMPI, "x-", None);
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"bm9uY2U=\", algorithm=AKAv1-MD5, ck=\"00112233445566778899aabbccddeeff\", ik=\"ffeeddccbbaa99887766554433221100\"\r\n";
    let resp = core_answer(&out[0].payload, 401, "Unauthorized", www);
    let got = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.99:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert!(got.is_empty());
    assert_eq!(w.reg.stats.foreign_response, 1);
    let got = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert_eq!(got.len(), 1, "the real next hop's answer still counts");
    w.reg.check_sa_invariants().unwrap();
}

/// A core answer that kept only our Via was meant for us (RFC 3261 §16.7 step 3): nothing reaches
/// the UE, no SA set is made, and it is counted; with the UE's Via back it is relayed.
#[test]
fn an_answer_with_only_our_via_is_not_relayed() {
    let mut w = world();
    let out = register_as(&mut w, "10.46.0.6:5060", IMPI, "v-", None);
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"bm9uY2U=\", algorithm=AKAv1-MD5, ck=\"00112233445566778899aabbccddeeff\", ik=\"ffeeddccbbaa99887766554433221100\"\r\n";
    let resp = String::from_utf8(core_answer(&out[0].payload, 401, "Unauthorized", www)).unwrap();
    let mut vias = 0;
    let only_ours: String = resp
        .split_inclusive("\r\n")
        .filter(|l| {
            let via = l.starts_with("Via:");
            vias += usize::from(via);
            !via || vias == 1
        })
        .collect();
    assert!(vias >= 2, "{resp}");
    let from = "10.0.1.20:5060";
    let got = w.feed(
        Side::Core,
        Protection::Plain,
        from,
        "10.0.1.10:5060",
        only_ours.as_bytes(),
    );
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(w.reg.stats.meant_for_us, 1);
    assert_eq!(w.reg.stats.challenges, 0, "no SA set for it");
    w.reg.check_sa_invariants().unwrap();
    // the UE's retransmission is a new transaction, whose genuine answer is relayed
    let again = register_as(&mut w, "10.46.0.6:5060", IMPI, "v-", None);
    let resp = core_answer(&again[0].payload, 401, "Unauthorized", www);
    let got = w.feed(Side::Core, Protection::Plain, from, "10.0.1.10:5060", &resp);
    assert_eq!(got.len(), 1);
    w.reg.check_sa_invariants().unwrap();
}

/// A Security-Client whose spi-c equals its spi-s would give our two outbound SAs the same
/// SPI under the set's one key, so the same GCM/GMAC IV `SPI ‖ seq` (RFC 4106 §3.1): no SA
/// set is installed for it and the challenge does not go out (a 503 does).
#[test]
fn security_client_with_equal_spis_gets_no_sa_set() {
    let mut w = world();
    let reg = REGISTER1.replace("spi-s=1237", "spi-s=1236");
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        reg.as_bytes(),
    );
    assert_eq!(out.len(), 1, "forwarded to the I-CSCF");
    let av = w.hss.next_vector(&[0x23; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let www = format!(
        "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
        hex(av.ck.as_bytes()),
        hex(av.ik.as_bytes())
    );
    let resp = core_answer(&out[0].payload, 401, "Unauthorized", &www);
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    // no challenge: a 503 without keys or Security-Server
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(503)
    );
    assert!(header(&out[0].payload, HeaderName::WwwAuthenticate).is_none());
    assert!(header(&out[0].payload, HeaderName::SecurityServer).is_none());
    assert_eq!(w.reg.stats.sa_install_failed, 1);
    assert_eq!(w.reg.stats.challenges, 0);
    w.reg.check_sa_invariants().unwrap();
}

/// A forged integrity-protected never reaches the core: the forwarded REGISTER has
/// exactly one Authorization, rebuilt, with exactly one integrity-protected (ours); shapes we
/// cannot read exactly are refused with 400.
#[test]
fn forged_integrity_protected_never_reaches_the_core() {
    let base = "Authorization: Digest username=\"001010000000001@ims.mnc001.mcc001.3gppnetwork.org\",realm=\"ims.mnc001.mcc001.3gppnetwork.org\",uri=\"sip:ims.mnc001.mcc001.3gppnetwork.org\",nonce=\"\",response=\"\"";
    let start = REGISTER1.find("Authorization:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap();
    let with = |auth: &str| format!("{}{auth}{}", &REGISTER1[..start], &REGISTER1[end..]);
    // a readable forgery: rebuilt, ours only
    for (n, auth) in [
        format!("{base},integrity-protected=\"yes\""),
        format!("{base}, integrity-protected=yes , integrity-protected=\"yes\""),
    ]
    .iter()
    .enumerate()
    {
        let mut w = world();
        let m = with(auth).replace("a84b4c76e66710-", &format!("ok{n}-"));
        let out = w.feed(
            Side::Ue,
            Protection::Plain,
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            m.as_bytes(),
        );
        assert_eq!(out[0].side, Side::Core, "{auth}");
        let text = String::from_utf8_lossy(&out[0].payload).to_string();
        assert_eq!(text.matches("Authorization:").count(), 1, "{text}");
        assert_eq!(text.matches("integrity-protected").count(), 1, "{text}");
        assert!(text.contains("integrity-protected=\"no\""), "{text}");
    }
    // shapes that slipped a second value through before: refused
    for auth in [
        format!("{base}\r\nAuthorization: Basic integrity-protected=\"yes\""),
        format!("{base}\r\nAuthorization: Digest integrity-protected=\"yes\""),
        format!("{base} integrity-protected=\"yes\""),
        format!("{base};integrity-protected=\"yes\""),
        format!("{base},opaque=\"abc, integrity-protected=\"yes\""),
        format!("{base},integrity-protected"),
    ] {
        let mut w = world();
        let out = w.feed(
            Side::Ue,
            Protection::Plain,
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            with(&auth).as_bytes(),
        );
        assert!(
            out.iter().all(|o| o.side == Side::Ue),
            "not forwarded: {auth}"
        );
        // 400, or (an unterminated quote: not SIP at all) dropped and counted as malformed
        match out.first() {
            Some(o) => assert_eq!(
                Message::parse(&o.payload).unwrap().view().status(),
                Some(400),
                "{auth}"
            ),
            None => assert_eq!(w.reg.stats.malformed, 1, "{auth}"),
        }
    }
}

/// A small spoofed REGISTER gets no answer larger than itself (no amplification), and
/// the cache of completed transactions is capped, evictions counted.
#[test]
fn no_amplification_and_a_capped_completed_cache() {
    let mut w = world();
    let tiny = "REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:a@ims.test>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\n\r\n";
    assert!(tiny.len() < 160, "{}", tiny.len());
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "192.0.2.7:5060",
        "10.46.0.1:5060",
        tiny.as_bytes(),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(w.reg.stats.reflection_suppressed, 1);
    // a real REGISTER without Security-Client still gets its 494
    let start = REGISTER1.find("Security-Client:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap() + 2;
    let bad = format!("{}{}", &REGISTER1[..start], &REGISTER1[end..]);
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        bad.as_bytes(),
    );
    assert_eq!(out.len(), 1);

    // 12 completed transactions with max_pending = 8: 4 evicted, the newest still answered
    let mut w = world();
    for n in 0..12 {
        let impi = format!("0010100000002{n:02}@ims.mnc001.mcc001.3gppnetwork.org");
        let out = register_as(
            &mut w,
            &format!("10.46.1.{n}:5060"),
            &impi,
            &format!("c{n}-"),
            None,
        );
        assert_eq!(out[0].side, Side::Core);
        let resp = core_answer(
            &out[0].payload,
            401,
            "Unauthorized",
            "WWW-Authenticate: Digest realm=\"r\", nonce=\"n\"\r\n",
        );
        let out = w.feed(
            Side::Core,
            Protection::Plain,
            "10.0.1.20:5060",
            "10.0.1.10:5060",
            &resp,
        );
        assert_eq!(out.len(), 1);
    }
    assert_eq!(w.reg.stats.completed_evicted, 4);
    let impi = "001010000000211@ims.mnc001.mcc001.3gppnetwork.org";
    let again = register_as(&mut w, "10.46.1.11:5060", impi, "c11-", None);
    assert_eq!(
        (again.len(), again[0].side),
        (1, Side::Ue),
        "the cached answer"
    );
    assert_eq!(w.reg.stats.retransmissions, 1);
}

/// The UE does not choose its home network: an IP-literal Request-URI is refused, and
/// with `home_domains` set so is any domain not in it; a listed one (any case) goes on.
#[test]
fn only_served_home_domains_are_forwarded() {
    let mut w = world();
    let ip = REGISTER1.replacen(
        "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org ",
        "REGISTER sip:192.0.2.99 ",
        1,
    );
    let out = w.feed(
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        ip.as_bytes(),
    );
    assert_eq!((out.len(), out[0].side), (1, Side::Ue));
    assert!(out[0].payload.starts_with(b"SIP/2.0 403 "));
    assert_eq!(w.reg.stats.unknown_home_domain, 1);

    let (writer, _sas) = test_sa_table(64);
    let mut cfg = w.reg.config().clone();
    cfg.home_domains = vec!["IMS.mnc001.mcc001.3gppnetwork.org".into()];
    let mut reg = Registrar::new(cfg, writer);
    let mut feed = |text: &str| {
        let mut out = Vec::new();
        let msg = Incoming {
            side: Side::Ue,
            protection: Protection::Plain,
            src: addr("10.46.0.6:5060"),
            dst: addr("10.46.0.1:5060"),
            payload: text.as_bytes(),
        };
        reg.handle_message(msg, w.now);
        out.extend(std::iter::from_fn(|| reg.poll_transmit()));
        out
    };
    let evil = REGISTER1
        .replacen(
            "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org ",
            "REGISTER sip:evil.example ",
            1,
        )
        .replace("a84b4c76e66710-", "evil-");
    let out = feed(&evil);
    assert!(out[0].payload.starts_with(b"SIP/2.0 403 "));
    let out = feed(REGISTER1);
    assert_eq!(
        out[0].side,
        Side::Core,
        "a served domain goes to the I-CSCF"
    );
}

/// Each home domain may have an I-CSCF of its own (`core.icscf_by_domain`): a REGISTER for it
/// goes there, one for the other served domain to the static I-CSCF, and the core's answer is
/// accepted only from the I-CSCF the REGISTER went to.
#[test]
fn each_home_domain_goes_to_its_own_icscf() {
    let w = world();
    let (writer, _sas) = test_sa_table(64);
    let mut cfg = w.reg.config().clone();
    let other = "ims.mnc002.mcc001.3gppnetwork.org";
    cfg.home_domains = vec![REALM.into(), other.into()];
    cfg.icscf_by_domain = vec![(other.into(), addr("10.0.2.20:5060"))];
    let mut reg = Registrar::new(cfg, writer);
    let mut feed = |side: Side, src: &str, text: &[u8]| {
        let mut out = Vec::new();
        let msg = Incoming {
            side,
            protection: Protection::Plain,
            src: addr(src),
            dst: addr("10.46.0.1:5060"),
            payload: text,
        };
        reg.handle_message(msg, w.now);
        out.extend(std::iter::from_fn(|| reg.poll_transmit()));
        out
    };
    let out = feed(Side::Ue, "10.46.0.6:5060", REGISTER1.as_bytes());
    assert_eq!(out[0].dst, addr("10.0.1.20:5060"), "the static I-CSCF");
    let b = REGISTER1
        .replace(REALM, other)
        .replace("a84b4c76e66710-", "other-");
    let out = feed(Side::Ue, "10.46.0.7:5060", b.as_bytes());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Core);
    assert_eq!(
        out[0].dst,
        addr("10.0.2.20:5060"),
        "the domain's own I-CSCF"
    );
    // its answer from the static I-CSCF is not taken; from its own one it is
    let www = "WWW-Authenticate: Digest realm=\"r\", nonce=\"bm9uY2U=\", algorithm=AKAv1-MD5, ck=\"00112233445566778899aabbccddeeff\", ik=\"ffeeddccbbaa99887766554433221100\"\r\n";
    let resp = core_answer(&out[0].payload, 401, "Unauthorized", www);
    assert!(feed(Side::Core, "10.0.1.20:5060", &resp).is_empty());
    let out = feed(Side::Core, "10.0.2.20:5060", &resp);
    assert_eq!(out[0].dst, addr("10.46.0.7:5060"));
    assert!(out[0].payload.starts_with(b"SIP/2.0 401 "));
}

/// Sans-IO time: an idle registrar has no deadline; a challenged UE's temporary set is the
/// deadline `poll_timeout` names once the earlier ones are handled, and it ends exactly there,
/// not a nanosecond before; then nothing is left to wait for.
#[test]
fn a_temporary_set_ends_exactly_at_the_deadline_poll_timeout_names() {
    let mut w = world();
    assert_eq!(w.reg.poll_timeout(), None, "idle: nothing to wake up for");
    let c = challenge(&mut w);
    let end = w.now + REG_AWAIT_AUTH;
    // earlier deadlines (the answered transaction, its binding, the kept 401) come first
    let mut turns = 0;
    while let Some(t) = w.reg.poll_timeout().filter(|t| *t < end) {
        assert!(t >= w.now);
        w.reg.handle_timeout(t);
        turns += 1;
        assert!(turns < 16, "the earlier deadlines end");
    }
    assert_eq!(w.reg.poll_timeout(), Some(end));
    w.reg.handle_timeout(end - Duration::from_nanos(1));
    assert!(
        w.sas.pin().inbound(c.spi_ps).is_some(),
        "not before its time"
    );
    assert_eq!(w.reg.stats.expired_sets, 0);
    w.reg.handle_timeout(end);
    assert!(w.sas.pin().inbound(c.spi_ps).is_none(), "at its time");
    assert_eq!(w.reg.stats.expired_sets, 1);
    assert_eq!(
        w.reg.poll_timeout(),
        None,
        "the binding went with its last set"
    );
    w.reg.check_sa_invariants().unwrap();
}

/// A timeout looks only at the timers that are due: with a hundred challenges in progress, the
/// fifty due ones are fired (counted by the registrar), not a scan of every binding.
#[test]
fn a_timeout_touches_only_the_due_timers() {
    let mut w = world_sized(1024);
    let challenge_n = |w: &mut World, range: std::ops::Range<usize>| {
        for i in range {
            let impi = format!("0010100{i:08}@ims.mnc001.mcc001.3gppnetwork.org");
            let src = format!("10.46.{}.{}:5060", 1 + i / 200, 1 + i % 200);
            let out = register_as(w, &src, &impi, &format!("n{i}-"), None);
            assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
            let out = challenge_401(w, &out[0].payload);
            assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
        }
    };
    let t0 = w.now;
    challenge_n(&mut w, 0..50);
    w.now = t0 + Duration::from_secs(60);
    challenge_n(&mut w, 50..100);
    // everything before the first sets' end: transactions, bindings, kept answers
    w.reg.handle_timeout(t0 + Duration::from_secs(120));
    assert_eq!(w.reg.stats.challenges, 100);
    assert_eq!(w.reg.stats.expired_sets, 0);
    let before = w.reg.timer_stats();
    assert_eq!(before.queued, 100, "one live timer per set: {before:?}");
    w.reg.handle_timeout(t0 + REG_AWAIT_AUTH);
    let after = w.reg.timer_stats();
    assert_eq!(w.reg.stats.expired_sets, 50);
    assert_eq!(
        after.fired - before.fired,
        50,
        "only the due timers: {after:?}"
    );
    assert_eq!(after.stale, before.stale);
    assert_eq!(after.queued, 50);
    assert_eq!(
        w.reg.poll_timeout(),
        Some(t0 + Duration::from_secs(60) + REG_AWAIT_AUTH)
    );
    w.reg.check_sa_invariants().unwrap();
}

/// The registrar reports each SA it installs to the key log it was given: the four SAs of a
/// challenge, with our two SPIs and the UE's two.
#[test]
fn the_key_log_gets_the_four_sas_of_a_challenge() {
    #[derive(Default)]
    struct Spis(std::sync::Mutex<Vec<u32>>);
    impl KeyLog for Spis {
        fn log(&self, sa: &SaSecret<'_>) {
            self.0.lock().unwrap().push(sa.spi);
        }
    }
    let mut w = world();
    let log = std::sync::Arc::new(Spis::default());
    w.reg.set_keylog(log.clone());
    let c = challenge(&mut w);
    let mut got = log.0.lock().unwrap().clone();
    got.sort();
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(
        got.contains(&c.spi_pc) && got.contains(&c.spi_ps),
        "{got:?}"
    );
}

/// Timers are not removed when their transaction is answered (lazy deletion), but the queue
/// follows the live state: thousands of answered REGISTERs leave it bounded, not one entry each.
#[test]
fn answered_transactions_do_not_grow_the_timer_queue() {
    let mut w = world();
    for i in 0..3000 {
        let impi = format!("0010100{i:08}@ims.mnc001.mcc001.3gppnetwork.org");
        let src = format!("10.47.{}.{}:5060", i / 200, 1 + i % 200);
        let out = register_as(&mut w, &src, &impi, &format!("q{i}-"), None);
        assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
        let resp = core_answer(&out[0].payload, 403, "Forbidden", "");
        let out = w.feed(
            Side::Core,
            Protection::Plain,
            "10.0.1.20:5060",
            "10.0.1.10:5060",
            &resp,
        );
        assert_eq!(out.len(), 1);
        w.reg.handle_timeout(w.now);
        let t = w.reg.timer_stats();
        assert!(t.queued <= 1024 + 8, "after {i}: {t:?}");
    }
    assert_eq!(w.reg.stats.forwarded, 3000);
    // every transaction's timer, stale or not, is gone 32 s on, and so is every binding
    w.reg.handle_timeout(w.now + Duration::from_secs(32));
    assert_eq!(w.reg.timer_stats().queued, 0);
    assert_eq!(w.reg.poll_timeout(), None);
}

/// A protected REGISTER on a TCP connection inside the UE's SAs, tagged by the worker holding
/// it (`Protection::Stream` with the SPI of the SA it came over, `spi_of`) and from `ue_port` to
/// our `port`: its 200 must go back on that same connection (RFC 3261 §18.2.2), from our port
/// to the UE's, through that worker. Returns the set's challenge for more checks.
fn register_on_a_connection(
    spi_of: fn(&Challenge) -> u32,
    port_of: fn(&Challenge) -> u16,
    ue_port: u16,
) -> (World, Challenge) {
    let mut w = world();
    let c = challenge(&mut w);
    let got = w.usim.authenticate_nonce(&c.nonce).unwrap();
    let reg2 = protected_register(&c.nonce, &got.res, &c.server);
    let came = Protection::Stream {
        spi: spi_of(&c),
        worker: 3,
    };
    let ours = addr(&format!("10.46.0.1:{}", port_of(&c)));
    let theirs = addr(&format!("10.46.0.6:{ue_port}"));
    let out = w.feed(
        Side::Ue,
        came,
        &theirs.to_string(),
        &ours.to_string(),
        &reg2,
    );
    assert_eq!(out.len(), 1, "{:?}", w.reg.stats);
    let ok = core_answer(
        &out[0].payload,
        200,
        "OK",
        "Service-Route: <sip:orig@scscf.test:6060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.46.0.6:5060>;expires=600000\r\n",
    );
    let out = w.feed(
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &ok,
    );
    assert_eq!(out.len(), 1);
    let to_ue = &out[0];
    assert_eq!(
        (to_ue.side, to_ue.protection, to_ue.src, to_ue.dst),
        (Side::Ue, came, ours, theirs),
        "the 200 goes on the connection the REGISTER came on, by worker 3"
    );
    assert_eq!(w.reg.stats.registered, 1);
    (w, c)
}

/// On the UE's own connection (its port-c → our port-s, SA1): the 200 from our port-s to its
/// port-c (SA3); the set's SAs know both of the UE's ports, which its TCP pairs with ours (TS
/// 33.203 §7.1).
#[test]
fn a_register_on_the_ues_connection_is_answered_on_it_through_the_worker_holding_it() {
    let (w, c) = register_on_a_connection(|c| c.spi_ps, |c| c.port_ps, 7004);
    let g = w.sas.pin();
    let sa1 = g.inbound(c.spi_ps).expect("SA1");
    assert_eq!((sa1.ue_ports().c, sa1.ue_ports().s), (7004, 7005));
    let sa4 = g.inbound(c.spi_pc).expect("SA4");
    assert_eq!((sa4.ue_ports().c, sa4.ue_ports().s), (7004, 7005));
}

/// On the connection we opened to the UE (its port-s → our port-c, SA4): the 200 from our
/// port-c to its port-s (SA2), not on the UE's own connection, which may not even be open.
#[test]
fn a_register_on_our_connection_is_answered_on_it() {
    register_on_a_connection(|c| c.spi_pc, |c| c.port_pc, 7005);
}

/// RFC 3263 §4.1 / RFC 3261 §18.1.1: toward an I-CSCF configured for TCP the REGISTER goes
/// over TCP (queued for the core TCP thread, our Via saying TCP), a retransmission of the UE's
/// is not sent on (§17.1.1.2: the reliable transport retransmits), and the core's 401 that
/// came over TCP is answered to the UE as any other.
#[test]
fn a_register_toward_a_tcp_icscf_goes_over_tcp_once() {
    let mut w = world();
    let (writer, sas) = pcscf::satable::sa_table(pcscf::satable::SaTableConfig {
        inbound_capacity: 64,
        outbound_capacity: 64,
        spi_min: 4096,
        spi_max: 1 << 20,
    })
    .unwrap();
    let mut cfg = registrar_config(Some(addr("10.0.1.20:5060")), None);
    cfg.icscf_tcp = true;
    w.reg = Registrar::new(cfg, writer);
    w.sas = sas;
    let feed_register = |w: &mut World| {
        w.feed(
            Side::Ue,
            Protection::Plain,
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            REGISTER1.as_bytes(),
        )
    };
    let out = feed_register(&mut w);
    assert_eq!(out.len(), 1);
    let fwd = &out[0];
    assert_eq!(
        fwd.protection,
        Protection::CoreStream {
            conn: pcscf::dataplane::NO_CONN
        }
    );
    assert_eq!(fwd.dst, addr("10.0.1.20:5060"));
    let via = header(&fwd.payload, HeaderName::Via).unwrap();
    assert!(via.starts_with("SIP/2.0/TCP 10.0.1.10:5060;"), "{via}");
    assert!(feed_register(&mut w).is_empty(), "not sent again over TCP");
    let resp = core_answer(&fwd.payload, 401, "Unauthorized", "");
    let out = w.feed(
        Side::Core,
        Protection::CoreStream { conn: 0x0001_0001 },
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    assert_eq!(out.len(), 1, "an answer reaches the UE");
    assert_eq!(out[0].side, Side::Ue);
}
