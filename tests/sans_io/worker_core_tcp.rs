//! SIP over TCP toward the core, through the worker (RFC 3261 §18.1.1, §18.2.2; RFC 3263
//! §4.1): what goes to the core over TCP is queued for the core TCP thread (`daemon::core_tcp`)
//! with the connection it belongs to; what the core sent over TCP comes from that thread's
//! queue and is answered on its connection.

use std::net::SocketAddr;
use std::sync::Arc;

use pcscf::dataplane::{DropReason, L4, MsgQueue, NO_CONN, Protection, classify};
use pcscf::io::Side;
use pcscf::satable::Registration;
use pcscf::sip::{HeaderName, Message, rules};

use crate::support::worker::{CORE_MESSAGE, Kind, Rig, UE_MESSAGE, addr, cfg, rig_with};

/// A worker whose requests larger than 1,300 bytes go to the core over TCP, with its queues to
/// and from the core TCP thread.
fn rig() -> (Rig, Arc<MsgQueue>, Arc<MsgQueue>) {
    let mut c = cfg(false);
    c.core_max_udp_request = 1300;
    let mut r = rig_with(c, 1);
    let (core_in, core_out) = (MsgQueue::new(16, None), MsgQueue::new(16, None));
    r.w.set_core_tcp(core_in.clone(), core_out.clone());
    (r, core_in, core_out)
}

/// `UE_MESSAGE` with a body of `n` bytes.
fn ue_message(n: usize) -> Vec<u8> {
    let s = std::str::from_utf8(UE_MESSAGE).unwrap();
    let head = &s[..s.find("Content-Length:").unwrap()];
    format!("{head}Content-Length: {n}\r\n\r\n{}", "x".repeat(n)).into_bytes()
}

/// The top Via of `sip`.
fn top_via(sip: &[u8]) -> String {
    let m = Message::parse(sip).unwrap();
    let v = m.view().values(HeaderName::Via).next().unwrap().to_vec();
    String::from_utf8(v).unwrap()
}

/// What the worker queued for the core TCP thread: (connection, destination, message).
fn to_core(q: &MsgQueue) -> Vec<(u32, SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(m) = q.pop() {
        assert_eq!(m.side, Side::Core);
        assert_eq!(m.src, addr("10.0.1.10:5060"), "from our core-side address");
        let Protection::CoreStream { conn } = m.protection else {
            panic!("not for the core TCP: {:?}", m.protection);
        };
        out.push((conn, m.dst, m.bytes().to_vec()));
        q.recycle(m);
    }
    out
}

/// Hand the worker `sip` as the core TCP thread does: framed from connection `conn`.
fn from_core(r: &mut Rig, core_in: &MsgQueue, conn: u32, from: &str, sip: &[u8]) {
    let d = pcscf::dataplane::Datagram {
        side: Side::Core,
        protection: Protection::CoreStream { conn },
        src: addr(from),
        dst: addr("10.0.1.10:5060"),
        payload: sip,
    };
    core_in.push(d).unwrap();
    r.w.poll_once();
}

/// A response to `req` (as its receiver got it).
fn answer(req: &[u8], code: u16) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut out = vec![0u8; 8192];
    let n = rules::build_response(m.view(), code, "OK", b"t1", &[], &mut out).unwrap();
    out.truncate(n);
    out
}

/// The SIP payload of the UDP packet `pkt`.
fn sip_of(pkt: &[u8]) -> Vec<u8> {
    match classify(pkt) {
        L4::Udp { payload, .. } => pkt[payload].to_vec(),
        other => panic!("not UDP: {other:?}"),
    }
}

#[test]
fn a_ue_request_larger_than_a_datagram_may_be_goes_to_the_core_over_tcp() {
    let (mut r, _core_in, core_out) = rig();
    let big = ue_message(1500);
    let (side, pkt) = r.packet(Kind::EspPortC, &big).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(
        r.w.io().take_sent().is_empty(),
        "nothing went as a datagram"
    );
    let got = to_core(&core_out);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    let (conn, dst, msg) = &got[0];
    assert_eq!(
        *conn, NO_CONN,
        "a request: on the connection to the next hop"
    );
    assert_eq!(
        *dst,
        addr("10.0.1.30:6060"),
        "the Service-Route's first hop"
    );
    assert!(
        top_via(msg).starts_with("SIP/2.0/TCP 10.0.1.10:5060;"),
        "our Via says TCP (RFC 3261 §18.1.1): {}",
        top_via(msg)
    );
    assert_eq!(Message::parse(msg).unwrap().view().body().len(), 1500);
    assert_eq!(r.w.stats().core_stream_out, 1);
    assert_eq!(r.w.stats().dropped(), 0);
    // a small one stays a datagram
    let (side, pkt) = r.packet(Kind::EspPortC, &ue_message(100)).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Side::Core);
    assert!(top_via(&sip_of(&sent[0].1)).starts_with("SIP/2.0/UDP "));
    assert!(to_core(&core_out).is_empty());
}

#[test]
fn the_cores_response_on_its_connection_goes_to_the_ue_over_its_sa() {
    let (mut r, core_in, core_out) = rig();
    let (side, pkt) = r.packet(Kind::EspPortC, &ue_message(1500)).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    let (_, _, fwd) = to_core(&core_out).remove(0);
    from_core(
        &mut r,
        &core_in,
        0x0001_0002,
        "10.0.1.30:6060",
        &answer(&fwd, 200),
    );
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    assert_eq!(sent[0].0, Side::Ue, "over the UE's SA");
    assert!(matches!(classify(&sent[0].1), L4::Esp { .. }));
    assert_eq!(r.w.stats().core_stream_in, 1);
    assert_eq!(r.w.stats().dropped(), 0);
}

#[test]
fn a_service_route_hop_that_asks_for_tcp_gets_every_request_over_tcp() {
    let (mut r, _core_in, core_out) = rig();
    let mut reg = Registration::with_impus(
        b"<sip:alice@ims.example.net>",
        b"<sip:orig@10.0.1.30:6060;lr;transport=tcp>",
        &[b"sip:alice@ims.example.net"],
        addr("10.0.1.30:6060"),
    );
    reg.next_hop_tcp = true;
    let reg = Arc::new(reg);
    for spi in [r.sa1_tx.spi(), r.sa4_tx.spi()] {
        r.writer
            .set_inbound_registration(spi, Some(reg.clone()))
            .unwrap();
    }
    let (side, pkt) = r.packet(Kind::EspPortC, UE_MESSAGE).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty());
    let got = to_core(&core_out);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    assert_eq!(got[0].1, addr("10.0.1.30:6060"));
    assert!(top_via(&got[0].2).starts_with("SIP/2.0/TCP "));
}

#[test]
fn a_core_request_on_a_connection_is_answered_by_the_ue_on_that_connection() {
    let (mut r, core_in, core_out) = rig();
    let conn = 0x0003_0007;
    from_core(&mut r, &core_in, conn, "10.0.1.30:40001", CORE_MESSAGE);
    let mut sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let (inner, _) = r.sa2_rx.decapsulate(&mut sent[0].1).unwrap();
    let to_ue = sip_of(&sent[0].1[inner]);
    // the UE answers over its SA4 (its port-s → our port-c)
    let ok = answer(&to_ue, 200);
    let (side, pkt) = r.packet(Kind::EspPortS, &ok).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty(), "not as a datagram");
    let got = to_core(&core_out);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    let (c, dst, msg) = &got[0];
    assert_eq!(
        *c, conn,
        "on the connection the request came on (RFC 3261 §18.2.2)"
    );
    assert_eq!(
        *dst,
        addr("10.0.1.30:6060"),
        "else to the Via's sent-by, on a new connection"
    );
    assert!(
        top_via(msg).starts_with("SIP/2.0/UDP 10.0.1.30:6060"),
        "our Via gone"
    );
}

#[test]
fn a_ue_cannot_steer_its_response_onto_another_connection() {
    let (mut r, core_in, core_out) = rig();
    from_core(
        &mut r,
        &core_in,
        0x0003_0007,
        "10.0.1.30:40001",
        CORE_MESSAGE,
    );
    let mut sent = r.w.io().take_sent();
    let (inner, _) = r.sa2_rx.decapsulate(&mut sent[0].1).unwrap();
    let to_ue = sip_of(&sent[0].1[inner]);
    let ok = String::from_utf8(answer(&to_ue, 200)).unwrap();
    // the branch's connection field (after the cookie: lane, then the SPI field) rewritten
    let at = ok.find("z9hG4bK").unwrap() + 7;
    let forged_conn = format!("{}{}", &ok[..at + 4], "00090007");
    let forged = format!("{forged_conn}{}", &ok[at + 12..]);
    assert_ne!(forged, ok);
    let (side, pkt) = r.packet(Kind::EspPortS, forged.as_bytes()).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty());
    assert!(to_core(&core_out).is_empty());
    assert_eq!(r.w.stats().drops[DropReason::NotOurVia as usize], 1);
}

#[test]
fn a_request_to_us_on_the_cores_connection_is_answered_on_it() {
    let (mut r, core_in, core_out) = rig();
    let options = b"OPTIONS sip:10.0.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.1.30:6060;branch=z9hG4bKo1\r\nMax-Forwards: 70\r\nFrom: <sip:scscf@ims.example.net>;tag=o\r\nTo: <sip:10.0.1.10:5060>\r\nCall-ID: ka@10.0.1.30\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    from_core(&mut r, &core_in, 0x0001_0004, "10.0.1.30:40002", options);
    assert!(r.w.io().take_sent().is_empty());
    let got = to_core(&core_out);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    assert_eq!(got[0].0, 0x0001_0004);
    assert!(got[0].2.starts_with(b"SIP/2.0 200 "));
}

#[test]
fn a_full_core_tcp_queue_drops_and_counts() {
    let mut c = cfg(false);
    c.core_max_udp_request = 1300;
    let mut r = rig_with(c, 1);
    let core_out = MsgQueue::new(1, None);
    r.w.set_core_tcp(MsgQueue::new(4, None), core_out.clone());
    for _ in 0..2 {
        let (side, pkt) = r.packet(Kind::EspPortC, &ue_message(1500)).unwrap();
        assert!(r.w.io().inject(side, &pkt));
        r.w.poll_once();
    }
    assert_eq!(to_core(&core_out).len(), 1);
    let st = r.w.stats();
    assert_eq!(st.drops[DropReason::CoreStreamLost as usize], 1);
    assert_eq!(st.core_stream_out, 1);
    // every frame back in the pool
    assert_eq!(r.w.io().free_frames(), crate::support::worker::FRAMES);
}

#[test]
fn a_core_request_over_udp_stays_udp_both_ways() {
    let (mut r, _core_in, core_out) = rig();
    let (side, pkt) = r.packet(Kind::Core, CORE_MESSAGE).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    let mut sent = r.w.io().take_sent();
    let (inner, _) = r.sa2_rx.decapsulate(&mut sent[0].1).unwrap();
    let ok = answer(&sip_of(&sent[0].1[inner]), 200);
    let (side, pkt) = r.packet(Kind::EspPortS, &ok).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Side::Core);
    assert!(to_core(&core_out).is_empty());
}

/// The worker's side of core TCP allocates nothing per message once warm: a UE's large request
/// queued for the core TCP thread, the core's answer taken from it into a frame and relayed to
/// the UE, a core request from it relayed and the UE's answer queued back on its connection.
#[test]
fn the_workers_core_tcp_path_does_not_allocate() {
    use crate::support::alloc::allocations_in;
    let (mut r, core_in, core_out) = rig();
    let big = ue_message(1500);
    let round = |r: &mut Rig| -> u64 {
        let mut allocs = 0;
        let (side, pkt) = r.packet(Kind::EspPortC, &big).unwrap();
        assert!(r.w.io().inject(side, &pkt));
        let ((), a) = allocations_in(|| {
            r.w.poll_once();
        });
        allocs += a;
        let (_, _, fwd) = to_core(&core_out).remove(0);
        let ok = answer(&fwd, 200);
        let d = pcscf::dataplane::Datagram {
            side: Side::Core,
            protection: Protection::CoreStream { conn: 0x0001_0002 },
            src: addr("10.0.1.30:6060"),
            dst: addr("10.0.1.10:5060"),
            payload: &ok[..],
        };
        core_in.push(d).unwrap();
        let ((), a) = allocations_in(|| {
            r.w.poll_once();
        });
        allocs += a;
        assert_eq!(r.w.io().take_sent().len(), 1);
        allocs
    };
    // warm: the first round may grow the worker's lists
    round(&mut r);
    let mut allocs = 0;
    for _ in 0..20 {
        allocs += round(&mut r);
    }
    assert_eq!(allocs, 0, "allocations in the worker per message once warm");
    assert_eq!(r.w.stats().dropped(), 0, "{:?}", r.w.stats());
}
