//! The registration thread under hostile load, sans-IO: DNS never blocks it
//! (a REGISTER waits for its domain's answer, the next one is handled at once), unprotected
//! REGISTERs have their own transaction budget and rate limits, and the punt queue keeps room
//! for the core's responses whatever the UE side sends.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pcscf::aka::{self, HssSubscriber, Milenage, SqnGenerator, UeSqnState, Usim};
use pcscf::control::registrar::{Incoming, Outgoing, Registrar};
use pcscf::dataplane::{Class, Datagram, MsgQueue, Protection};
use pcscf::io::Side;
use pcscf::sip::HeaderName;
use pcscf::sip::headers::SecMechanism;

use crate::support::ims::*;

fn registrar(icscf: Option<SocketAddr>, dns: Option<SocketAddr>) -> Registrar {
    let (writer, _sas) = test_sa_table(64);
    let cfg = registrar_config(icscf, dns);
    Registrar::new(cfg, writer)
}

fn feed(
    reg: &mut Registrar,
    now: Instant,
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
    reg.handle_message(msg, now);
    out.extend(std::iter::from_fn(|| reg.poll_transmit()));
    out
}

/// REGISTER1 with its own Call-ID (`n`) and, if `impi`, its own private identity.
fn register_n(n: usize, home: &str, impi: bool) -> Vec<u8> {
    let mut m = REGISTER1
        .replace("a84b4c76e66710-", &format!("n{n}-"))
        .replace(REALM, home);
    if impi {
        m = m.replace("001010000000001@", &format!("0010100{n:08}@"));
    }
    m.into_bytes()
}

fn status(o: &Outgoing) -> u16 {
    pcscf::sip::Message::parse(&o.payload)
        .unwrap()
        .view()
        .status()
        .unwrap_or(0)
}

/// With a DNS server that never answers, the old resolver blocked the registration thread two
/// times 300 ms per query: every other UE waited. Now the REGISTER waits alone.
#[test]
fn a_register_for_an_unresolved_domain_does_not_block() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // takes queries, answers none
    let mut reg = registrar(None, Some(silent.local_addr().unwrap()));
    let now = Instant::now();
    let t = Instant::now();
    let out = feed(
        &mut reg,
        now,
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        &register_n(1, "nowhere.example", false),
    );
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "handle_message returned after {took:?}"
    );
    assert!(
        out.is_empty(),
        "the REGISTER waits for DNS, no 503 yet: {out:?}"
    );
}

/// A DNS answer for `q` with one A record `a` (TTL 60), or NXDOMAIN.
fn dns_answer(q: &[u8], a: Option<[u8; 4]>) -> Vec<u8> {
    let mut r = q.to_vec();
    r[2] = 0x81;
    r[3] = if a.is_some() { 0x80 } else { 0x83 };
    if let Some(a) = a {
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&a);
    }
    r
}

fn qtype(q: &[u8]) -> u16 {
    let mut p = 12;
    while q[p] != 0 {
        p += 1 + q[p] as usize;
    }
    u16::from_be_bytes([q[p + 1], q[p + 2]])
}

/// Parked REGISTERs go on when the answer comes: forwarded to the address found, or 503 when
/// the domain does not resolve; that failure is cached, so the next REGISTER for the domain
/// gets its 503 at once, with no new query. A retransmission of a parked REGISTER is absorbed.
#[test]
fn parked_registers_go_on_when_dns_answers() {
    let server = addr("192.0.2.53:53");
    let mut reg = registrar(None, Some(server));
    let now = Instant::now();
    let send = |reg: &mut Registrar, n: usize, home: &str| {
        feed(
            reg,
            now,
            Side::Ue,
            Protection::Plain,
            &format!("10.46.0.{}:5060", 10 + n),
            "10.46.0.1:5060",
            &register_n(n, home, true),
        )
    };
    assert!(send(&mut reg, 1, "good.example").is_empty());
    assert!(
        send(&mut reg, 1, "good.example").is_empty(),
        "retransmission"
    );
    assert!(send(&mut reg, 2, "good.example").is_empty());
    assert!(send(&mut reg, 3, "bad.example").is_empty());
    assert_eq!(reg.stats.parked, 3);
    assert_eq!(reg.stats.retransmissions, 1);
    // the resolver's queries (NAPTR, SRV, A …): answer A for good.example, NXDOMAIN otherwise
    let mut out = Vec::new();
    for _ in 0..32 {
        let Some((to, q)) = reg.poll_dns_query() else {
            break;
        };
        assert_eq!(to, server);
        let good = String::from_utf8_lossy(&q).contains("good");
        let a = (good && qtype(&q) == 1).then_some([10, 0, 1, 99]);
        reg.handle_dns(server, &dns_answer(&q, a), now);
        out.extend(std::iter::from_fn(|| reg.poll_transmit()));
    }
    let fwd: Vec<_> = out.iter().filter(|o| o.side == Side::Core).collect();
    assert_eq!(fwd.len(), 2, "{out:?}");
    assert!(fwd.iter().all(|o| o.dst == addr("10.0.1.99:5060")));
    let refused: Vec<_> = out.iter().filter(|o| o.side == Side::Ue).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(status(refused[0]), 503);
    assert_eq!(refused[0].dst, addr("10.46.0.13:5060"));
    let queries = reg.dns_stats().queries;
    let out = send(&mut reg, 4, "bad.example");
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 503);
    assert!(reg.poll_dns_query().is_none());
    assert_eq!(reg.dns_stats().queries, queries, "the failure was cached");
    assert_eq!(reg.stats.registers_in, 5, "a parked REGISTER counts once");
}

/// The home domains' I-CSCFs are resolved at start (`Registrar::warm_up`): the first REGISTER
/// finds the answer cached and is forwarded at once, none parked (at thousands a second, those
/// past the parking bound used to get a 503 while the first resolution ran).
#[test]
fn warmed_up_home_domains_need_no_parking() {
    let server = addr("192.0.2.53:53");
    let (writer, _sas) = test_sa_table(64);
    let mut cfg = registrar_config(None, Some(server));
    cfg.home_domains = vec!["good.example".into()];
    let mut reg = Registrar::new(cfg, writer);
    let now = Instant::now();
    reg.warm_up(now);
    let mut asked = 0;
    while let Some((to, q)) = reg.poll_dns_query() {
        assert_eq!(to, server);
        assert!(String::from_utf8_lossy(&q).contains("good"));
        let a = (qtype(&q) == 1).then_some([10, 0, 1, 99]);
        reg.handle_dns(server, &dns_answer(&q, a), now);
        asked += 1;
        assert!(asked < 32);
    }
    assert!(asked > 0, "warm_up asked the DNS server");
    let out = feed(
        &mut reg,
        now,
        Side::Ue,
        Protection::Plain,
        "10.46.0.11:5060",
        "10.46.0.1:5060",
        &register_n(1, "good.example", true),
    );
    assert_eq!(reg.stats.parked, 0);
    let fwd: Vec<_> = out.iter().filter(|o| o.side == Side::Core).collect();
    assert_eq!(fwd.len(), 1, "{out:?}");
    assert_eq!(fwd[0].dst, addr("10.0.1.99:5060"));
}

/// A silent DNS server: the parked REGISTER gets its 503 when the resolver gives up.
#[test]
fn a_parked_register_gets_503_when_dns_times_out() {
    let server = addr("192.0.2.53:53");
    let mut reg = registrar(None, Some(server));
    let t0 = Instant::now();
    let out = feed(
        &mut reg,
        t0,
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        &register_n(1, "slow.example", false),
    );
    assert!(out.is_empty());
    let mut out = Vec::new();
    while out.is_empty() {
        while reg.poll_dns_query().is_some() {}
        let now = reg.poll_timeout().expect("a query in flight");
        assert!(now - t0 < Duration::from_secs(5));
        reg.handle_timeout(now);
        out.extend(std::iter::from_fn(|| reg.poll_transmit()));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 503);
}

/// `max_pending` unprotected REGISTERs in progress (anyone can send them) used to get a UE's
/// protected REGISTER a 503: the two kinds have separate budgets now.
#[test]
fn unprotected_registers_cannot_get_a_protected_register_503() {
    let mut reg = registrar(Some(addr("10.0.1.20:5060")), None);
    let now = Instant::now();
    let k = aka::hex_array::<16>(K).unwrap();
    let opc = aka::hex_array::<16>(OPC).unwrap();
    let mut hss = HssSubscriber::new(
        Milenage::new(&k, &opc),
        SqnGenerator::with_default_step(),
        [0x80, 0],
    );
    let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
    // the UE's REGISTER and the core's 401: a temporary SA set
    let out = feed(
        &mut reg,
        now,
        Side::Ue,
        Protection::Plain,
        "10.46.0.6:5060",
        "10.46.0.1:5060",
        REGISTER1.as_bytes(),
    );
    assert_eq!(out[0].side, Side::Core);
    let (nonce, resp) = crate::registration_flow::core_401(&mut hss, &out[0].payload, 0x23);
    let out = feed(
        &mut reg,
        now,
        Side::Core,
        Protection::Plain,
        "10.0.1.20:5060",
        "10.0.1.10:5060",
        &resp,
    );
    let server = header(&out[0].payload, HeaderName::SecurityServer).unwrap();
    let mech = SecMechanism::parse(server.as_bytes())
        .unwrap()
        .ipsec()
        .unwrap();
    // eight unprotected REGISTERs from elsewhere, never answered by the core
    for n in 0..8 {
        let out = feed(
            &mut reg,
            now,
            Side::Ue,
            Protection::Plain,
            &format!("10.46.1.{n}:5060"),
            "10.46.0.1:5060",
            &register_n(n, REALM, true),
        );
        assert_eq!(out[0].side, Side::Core, "flood REGISTER {n} forwarded");
    }
    // the UE's protected REGISTER over the set still goes to the core
    let got = usim.authenticate_nonce(&nonce).unwrap();
    let reg2 = protected_register(&nonce, &got.res, &server);
    let out = feed(
        &mut reg,
        now,
        Side::Ue,
        Protection::Protected { spi: mech.spi_s },
        "10.46.0.6:7004",
        &format!("10.46.0.1:{}", mech.port_s),
        &reg2,
    );
    assert_eq!(out.len(), 1, "{:?}", reg.stats);
    assert_eq!(
        out[0].side,
        Side::Core,
        "not a 503: {}",
        String::from_utf8_lossy(&out[0].payload)
    );
    assert_eq!(reg.stats.overloaded, 0);
    // and the unprotected budget is still enforced
    let out = feed(
        &mut reg,
        now,
        Side::Ue,
        Protection::Plain,
        "10.46.1.200:5060",
        "10.46.0.1:5060",
        &register_n(99, REALM, true),
    );
    assert_eq!(status(&out[0]), 503);
}

/// Per-source and per-IMPI rate limits on unprotected REGISTERs: past them the request is
/// dropped silently and counted; the bucket refills with time.
#[test]
fn unprotected_registers_are_rate_limited_per_source_and_per_impi() {
    use pcscf::control::registrar::{IMPI_BURST, SOURCE_BURST};
    let mut reg = registrar(Some(addr("10.0.1.20:5060")), None);
    let now = Instant::now();
    // one source, a new IMPI each time
    let mut answered = 0;
    for n in 0..SOURCE_BURST as usize + 5 {
        let out = feed(
            &mut reg,
            now,
            Side::Ue,
            Protection::Plain,
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            &register_n(n, REALM, true),
        );
        answered += out.len();
    }
    assert_eq!(
        answered, SOURCE_BURST as usize,
        "forwarded or 503, the rest dropped"
    );
    assert_eq!(reg.stats.rate_limited_source, 5);
    // one IMPI, a new source each time
    let mut reg = registrar(Some(addr("10.0.1.20:5060")), None);
    let send = |reg: &mut Registrar, n: usize, at: Instant| {
        feed(
            reg,
            at,
            Side::Ue,
            Protection::Plain,
            &format!("10.46.2.{n}:5060"),
            "10.46.0.1:5060",
            &register_n(n, REALM, false),
        )
    };
    for n in 0..IMPI_BURST as usize {
        assert_eq!(send(&mut reg, n, now).len(), 1);
    }
    assert!(send(&mut reg, 100, now).is_empty());
    assert_eq!(reg.stats.rate_limited_impi, 1);
    assert_eq!(send(&mut reg, 101, now + Duration::from_secs(3)).len(), 1);
}

/// The punt queue has a lane per class with its own buffers: a flood of unprotected REGISTERs
/// fills its lane only, the core's 401 and a protected REGISTER still get in and come out first.
#[test]
fn a_flood_of_unprotected_registers_leaves_room_for_the_core() {
    let q = MsgQueue::prioritized(16, None);
    let (ue, us) = (addr("10.46.0.6:5060"), addr("10.46.0.1:5060"));
    let refused = (0..100)
        .filter(|_| {
            q.push(Datagram {
                side: Side::Ue,
                protection: Protection::Plain,
                src: ue,
                dst: us,
                payload: b"REGISTER",
            })
            .is_err()
        })
        .count();
    assert!(refused > 80, "the unprotected lane is full");
    let spi = Protection::Protected { spi: 5000 };
    assert!(
        q.push(Datagram {
            side: Side::Ue,
            protection: spi,
            src: ue,
            dst: us,
            payload: b"REGISTER sa"
        })
        .is_ok()
    );
    let (icscf, core) = (addr("10.0.1.20:5060"), addr("10.0.1.10:5060"));
    assert!(
        q.push(Datagram {
            side: Side::Core,
            protection: Protection::Plain,
            src: icscf,
            dst: core,
            payload: b"SIP/2.0 401"
        })
        .is_ok()
    );
    let b = q.pop().unwrap();
    assert_eq!(b.bytes(), b"SIP/2.0 401");
    q.recycle(b);
    assert_eq!(
        q.pop_class(Class::Protected).unwrap().bytes(),
        b"REGISTER sa"
    );
    // a buffer given back goes to its own lane
    let b = q.pop_class(Class::Unprotected).unwrap();
    q.recycle(b);
    assert!(
        q.push(Datagram {
            side: Side::Ue,
            protection: Protection::Plain,
            src: ue,
            dst: us,
            payload: b"REGISTER"
        })
        .is_ok()
    );
    assert!(
        q.push(Datagram {
            side: Side::Ue,
            protection: Protection::Plain,
            src: ue,
            dst: us,
            payload: b"REGISTER"
        })
        .is_err()
    );
}

/// The control loop drains the punt queue in bounded passes: a pass takes every waiting core
/// response (up to its budget) but only its budget of unprotected REGISTERs, then the loop
/// sends, reads DNS and runs timers before the next pass.
#[test]
fn a_pass_takes_the_core_first_and_a_bounded_number_of_registers() {
    use pcscf::daemon::{PASS_BUDGET, punt_pass};
    let mut reg = registrar(Some(addr("10.0.1.20:5060")), None);
    let q = MsgQueue::prioritized(2048, None);
    let (ue, us) = (addr("10.46.0.6:5060"), addr("10.46.0.1:5060"));
    for _ in 0..300 {
        q.push(Datagram {
            side: Side::Ue,
            protection: Protection::Plain,
            src: ue,
            dst: us,
            payload: b"junk",
        })
        .unwrap();
    }
    let answer = core_answer(&register_n(1, REALM, false), 200, "OK", "");
    let (icscf, core) = (addr("10.0.1.20:5060"), addr("10.0.1.10:5060"));
    q.push(Datagram {
        side: Side::Core,
        protection: Protection::Plain,
        src: icscf,
        dst: core,
        payload: &answer,
    })
    .unwrap();
    let (handled, left) = punt_pass(&q, &mut reg, Instant::now());
    assert!(left);
    assert_eq!(handled as usize, 1 + PASS_BUDGET[2]);
    assert_eq!(
        reg.stats.unknown_transaction, 1,
        "the core's answer was handled"
    );
    assert_eq!(reg.stats.malformed as usize, PASS_BUDGET[2]);
    assert_eq!(q.len(), 300 - PASS_BUDGET[2]);
}

/// RFC 3263 §4.1 end to end in the registrar: the home domain's NAPTR offers SIP over TCP
/// (the lab's DNS server, `SIP+D2T` → `_sip._tcp` SRV → A), so the REGISTER goes to that
/// I-CSCF over TCP, our Via saying so; offered UDP, it goes as a datagram.
#[test]
fn the_icscf_found_by_naptr_gets_the_register_over_the_transport_it_offers() {
    for transport in [pcscf::sip::Transport::Tcp, pcscf::sip::Transport::Udp] {
        let server = addr("192.0.2.53:53");
        let mut reg = registrar(None, Some(server));
        let now = Instant::now();
        let register = register_n(1, REALM, true);
        let first = feed(
            &mut reg,
            now,
            Side::Ue,
            Protection::Plain,
            "10.46.0.11:5060",
            "10.46.0.1:5060",
            &register,
        );
        assert!(first.is_empty(), "parked for DNS");
        let mut out = Vec::new();
        for _ in 0..16 {
            let Some((_, q)) = reg.poll_dns_query() else {
                break;
            };
            let a = pcscf::lab::dns_answer(&q, REALM, "10.0.1.99".parse().unwrap(), transport)
                .expect("a question the lab's server answers");
            reg.handle_dns(server, &a, now);
            out.extend(std::iter::from_fn(|| reg.poll_transmit()));
        }
        assert_eq!(out.len(), 1, "{transport:?}: {out:?}");
        let fwd = &out[0];
        assert_eq!(fwd.dst, addr("10.0.1.99:5060"));
        let via = header(&fwd.payload, HeaderName::Via).unwrap();
        match transport {
            pcscf::sip::Transport::Tcp => {
                assert!(matches!(fwd.protection, Protection::CoreStream { .. }));
                assert!(via.starts_with("SIP/2.0/TCP "), "{via}");
            }
            pcscf::sip::Transport::Udp => {
                assert_eq!(fwd.protection, Protection::Plain);
                assert!(via.starts_with("SIP/2.0/UDP "), "{via}");
            }
        }
    }
}
