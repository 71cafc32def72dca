//! SIP over TCP inside a UE's SAs, through the worker (TS 33.203 §7.1, RFC 3261 §18): the UE's
//! own connection (its port-c → our port-s) carries its requests; our answers, the core's
//! responses and the registration thread's come back on it; what is not the SA's or the set's
//! is refused without costing the honest connection anything.
//!
//! The UE side is a `tcp::Endpoint` seen from the UE (its `Conn::Opened` is its connection to
//! our port-s), its packets ESP-protected with the rig UE's keys.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pcscf::dataplane::{DropReason, L4, MsgQueue, Protection, SharedStats, Worker, classify};
use pcscf::io::{MemIo, Side};
use pcscf::sip::{Message, rules};

use crate::support::worker::{
    BINDING, OUR_PORT_C, OUR_PORT_S, OURS, Rig, SPI_SA2, SPI_SA3, UE, UE_PORT_C, UE_PORT_S, Ue,
    addr, cfg, ip_tcp, protect, pump, rig_with, sa, tcp_checksum, tcp_rig, udp, with_sa3,
};

/// A MESSAGE over TCP with a `body`-byte body.
fn message(body: usize, cseq: u32) -> Vec<u8> {
    let text = "x".repeat(body);
    format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\n\
         Via: SIP/2.0/TCP 10.46.0.6:7005;branch=z9hG4bKtcp{cseq}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:10.46.0.1:5103;lr>\r\n\
         From: <sip:alice@ims.example.net>;tag=a1\r\n\
         To: <sip:bob@ims.example.net>\r\n\
         Call-ID: tcp-{cseq}@10.46.0.6\r\n\
         CSeq: {cseq} MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {body}\r\n\r\n{text}"
    )
    .into_bytes()
}

const REGISTER: &[u8] = b"REGISTER sip:ims.example.net SIP/2.0\r\nVia: SIP/2.0/TCP 10.46.0.6:7005;branch=z9hG4bKreg1\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=r1\r\nTo: <sip:alice@ims.example.net>\r\nCall-ID: reg@10.46.0.6\r\nCSeq: 2 REGISTER\r\nContact: <sip:10.46.0.6:7005>\r\nExpires: 600000\r\nContent-Length: 0\r\n\r\n";

/// A response to `req` (as the core got it) from the core.
fn answer(req: &[u8], code: u16) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut out = vec![0u8; 8192];
    let n = rules::build_response(m.view(), code, "OK", b"core1", &[], &mut out).unwrap();
    out.truncate(n);
    out
}

/// The whole SIP messages in `bytes`, split by Content-Length.
fn messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut f = pcscf::sip::Framer::with_capacity(65536);
    assert_eq!(f.push(bytes), bytes.len());
    let mut out = Vec::new();
    while let Ok(Some(pcscf::sip::Frame::Message(m))) = f.next_frame() {
        out.push(m.to_vec());
    }
    out
}

#[test]
fn a_3kb_message_on_the_ues_connection_reaches_the_core_and_its_answer_comes_back_on_it() {
    let mut r = tcp_rig();
    // (the rig's own SA1 sender: its sequence numbers go on)
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    let msg = message(3000, 11);
    ue.send(&msg);
    let at_core = pump(&mut ue, &mut r.w);
    assert_eq!(at_core.len(), 1, "{:?}", r.w.stats());
    let fwd = Message::parse(&at_core[0]).unwrap();
    assert!(fwd.view().is_method(b"MESSAGE"));
    assert_eq!(fwd.view().body().len(), 3000, "the body whole");
    // the core answers; the 200 goes back on the UE's connection, not over SA2 by UDP
    let ok = answer(&at_core[0], 200);
    assert!(r.w.io().inject(
        Side::Core,
        &udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &ok)
    ));
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let got = messages(&ue.got);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    let m = Message::parse(&got[0]).unwrap();
    assert!(got[0].starts_with(b"SIP/2.0 200 "));
    assert!(
        m.view()
            .header(pcscf::sip::HeaderName::Via)
            .is_some_and(|v| v.starts_with(b"SIP/2.0/TCP 10.46.0.6:7005")),
        "our Via gone, the UE's left"
    );
    let s = *r.w.stats();
    assert_eq!((s.stream_in, s.stream_out), (1, 1), "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
}

/// RFC 3261 §18.2.2: the UE's connection that its request came on is gone (it reset it) by the
/// time the core answers; the answer goes on a connection we open to the UE's port-s (its Via's
/// sent-by, the protected server port), over SA2, and the UE reads it there.
#[test]
fn an_answer_whose_connection_is_gone_goes_on_ours_to_the_ues_port_s() {
    let mut r = with_sa3(tcp_rig());
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    let msg = message(100, 12);
    ue.send(&msg);
    let at_core = pump(&mut ue, &mut r.w);
    assert_eq!(at_core.len(), 1, "{:?}", r.w.stats());
    // the UE resets its connection (and so forgets it)
    ue.ep.close(std::time::Instant::now(), &mut ue.segs);
    assert!(pump(&mut ue, &mut r.w).is_empty());
    // the same UE's stack, still listening on its port-s
    let mut ue = Ue::new(sa(1));
    ue.sa4_tx = Some(std::mem::replace(&mut r.sa4_tx, sa(1)));
    let ok = answer(&at_core[0], 200);
    assert!(r.w.io().inject(
        Side::Core,
        &udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &ok)
    ));
    r.w.poll_once();
    let first = r.w.io().take_sent();
    assert_eq!(first.len(), 1, "our SYN: {:?}", r.w.stats());
    for (_, p) in first {
        ue.take(p);
    }
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let got = messages(&ue.got_ours);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    assert!(got[0].starts_with(b"SIP/2.0 200 "));
    assert_eq!(r.w.stats().dropped(), 0, "{:?}", r.w.stats());
}

#[test]
fn a_register_on_the_connection_is_punted_tagged_and_the_answer_goes_back_on_it() {
    let mut r = tcp_rig();
    let inject = MsgQueue::new(16, None);
    r.w.set_inject(inject.clone());
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(REGISTER);
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let p = r.punt.pop().expect("the REGISTER punted");
    let Protection::Stream { spi, worker } = p.protection else {
        panic!("{:?}", p.protection)
    };
    assert_eq!(worker, 0);
    assert_eq!(p.bytes(), REGISTER);
    assert_eq!(p.src, SocketAddr::new(UE.parse().unwrap(), UE_PORT_C));
    // the registration thread's answer, tagged the same way, goes on the connection
    let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.46.0.6:7005;branch=z9hG4bKreg1\r\nFrom: <sip:alice@ims.example.net>;tag=r1\r\nTo: <sip:alice@ims.example.net>;tag=s\r\nCall-ID: reg@10.46.0.6\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n";
    let to = pcscf::dataplane::Datagram {
        side: Side::Ue,
        protection: Protection::Stream { spi, worker: 0 },
        src: addr("10.46.0.1:5103"),
        dst: p.src,
        payload: &ok[..],
    };
    inject.push(to).unwrap();
    assert!(pump(&mut ue, &mut r.w).is_empty());
    assert_eq!(messages(&ue.got), vec![ok.to_vec()]);
    let s = *r.w.stats();
    assert_eq!((s.punted, s.injected, s.stream_out), (1, 1, 1), "{s:?}");
}

#[test]
fn the_core_answer_reaching_another_worker_is_handed_to_the_one_holding_the_connection() {
    let mut r = tcp_rig();
    let (q0, q1) = (MsgQueue::new(16, None), MsgQueue::new(16, None));
    let peers: Arc<[Arc<MsgQueue>]> = vec![q0.clone(), q1.clone()].into();
    r.w.set_peers(peers.clone());
    let mut other = {
        let mut c = cfg(false);
        c.id = 1;
        Worker::new(
            MemIo::new(16),
            c,
            MsgQueue::new(16, None),
            Arc::new(SharedStats::default()),
        )
        .with_sas(r.writer.reader())
        .with_peers(peers)
    };
    assert_eq!(
        pcscf::dataplane::worker_of(UE.parse().unwrap(), 2),
        0,
        "the rig's UE is worker 0's of two"
    );
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(100, 12));
    let at_core = pump(&mut ue, &mut r.w);
    assert_eq!(at_core.len(), 1);
    let ok = answer(&at_core[0], 200);
    let pkt = udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &ok);
    assert!(other.io().inject(Side::Core, &pkt));
    other.poll_once();
    assert!(
        other.io().take_sent().is_empty(),
        "worker 1 holds no connection"
    );
    assert_eq!(other.stats().handed_over, 1, "{:?}", other.stats());
    // worker 0 takes it from its inject queue and sends it on the connection
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let got = messages(&ue.got);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with(b"SIP/2.0 200 "));
}

/// A hostile UE on its own set: segments off the SA's selectors (SA1 carries its port-c → our
/// port-s only), a connection attempt to our client port, garbage under protocol 6 — refused or
/// answered by TCP as a stack would, and the honest connection beside them unharmed.
#[test]
fn segments_off_the_sas_selectors_are_refused_and_the_connection_survives_them() {
    let mut r = tcp_rig();
    let sa4_tx = std::mem::replace(&mut r.sa4_tx, sa(1));
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(10, 13));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1);
    // a SYN from the UE's port-s to our port-s, over SA1: off SA1's selectors
    let ue_ip: IpAddr = UE.parse().unwrap();
    let ours: IpAddr = OURS.parse().unwrap();
    let syn = |sport: u16, dport: u16| {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&1u32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x02;
        t[14..16].copy_from_slice(&1024u16.to_be_bytes());
        ip_tcp(ue_ip, ours, &t)
    };
    let before = *r.w.stats();
    for p in [
        protect(&ue.sa1_tx, &syn(UE_PORT_S, OUR_PORT_S)),
        protect(&ue.sa1_tx, &syn(UE_PORT_C, OUR_PORT_C)),
        // SA4 carries the UE's port-s → our port-c: a connection to our client port, which
        // listens for nothing (ours is opened by us)
        protect(&sa4_tx, &syn(UE_PORT_S, OUR_PORT_C)),
        // a TCP header cut short
        protect(&ue.sa1_tx, &ip_tcp(ue_ip, ours, &[0x1b, 0x5c, 0x13])),
    ] {
        assert!(r.w.io().inject(Side::Ue, &p));
    }
    r.w.poll_once();
    let s = *r.w.stats();
    assert_eq!(
        s.drops[DropReason::TcpRefused as usize] - before.drops[DropReason::TcpRefused as usize],
        3,
        "{s:?}"
    );
    // whatever TCP answered the SYN to our client port went over SA2, never into the honest
    // connection
    for (side, pkt) in r.w.io().take_sent() {
        assert_eq!(side, Side::Ue);
        assert!(
            ue.sa3_rx.decapsulate(&mut pkt.clone()).is_err(),
            "not over SA3"
        );
    }
    ue.send(&message(10, 14));
    assert_eq!(
        pump(&mut ue, &mut r.w).len(),
        1,
        "the honest connection goes on"
    );
}

/// A message the TCP framed whole but that cannot fit a frame after our edits (we cannot relay
/// it over UDP toward the core yet) is dropped and counted; the connection goes on.
#[test]
fn a_message_too_large_for_a_frame_is_dropped_counted_and_the_connection_kept() {
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(6000, 15));
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let s = *r.w.stats();
    assert_eq!(s.drops[DropReason::NoRoom as usize], 1, "{s:?}");
    ue.send(&message(3000, 16));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1, "the connection goes on");
}

/// When the set's SAs go (de-registration, expiry), its TCP goes within a sweep: nothing of it
/// is left in the worker.
#[test]
fn a_sets_tcp_goes_with_its_sas() {
    let mut r = tcp_rig();
    let spi1 = r.sa1_tx.spi();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(10, 17));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1);
    assert_eq!(r.w.streams().host().len(), 1);
    // the set goes, as a de-registration takes it: its inbound and outbound SAs
    let ue: IpAddr = UE.parse().unwrap();
    r.writer.remove_inbound(spi1).unwrap();
    r.writer.remove_outbound(ue, UE_PORT_C, OUR_PORT_S).unwrap();
    r.writer.remove_outbound(ue, UE_PORT_S, OUR_PORT_C).unwrap();
    std::thread::sleep(pcscf::dataplane::SWEEP_EVERY + std::time::Duration::from_millis(50));
    r.w.poll_once();
    assert!(r.w.streams().is_idle());
    assert_eq!(r.w.streams().host().len(), 0, "the set's TCP closed");
    assert_eq!(r.w.streams().host().stats().sets_closed, 1);
}

/// Once the connection is up and the buffers have grown, the worker's TCP path allocates
/// nothing: segments in, messages framed and relayed toward the core, the core's answers sent
/// back on the connection, ACKs encrypted out.
#[test]
fn the_workers_tcp_path_does_not_allocate_once_warm() {
    use crate::support::alloc::allocations_in;
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    let (mut allocs, mut relayed) = (0u64, 0usize);
    for n in 0..120u32 {
        let warm = n >= 40;
        ue.send(&message(200 + (n as usize % 5) * 600, 100 + n));
        for _ in 0..8 {
            let pkts = ue.packets();
            let mut answers = Vec::new();
            for p in &pkts {
                assert!(r.w.io().inject(Side::Ue, p));
            }
            let ((), a) = allocations_in(|| {
                r.w.poll_once();
            });
            if warm {
                allocs += a;
            }
            for (side, pkt) in r.w.io().take_sent() {
                match side {
                    Side::Ue => ue.take(pkt),
                    Side::Core => {
                        let L4::Udp { payload, .. } = classify(&pkt) else {
                            panic!()
                        };
                        relayed += 1;
                        let ok = answer(&pkt[payload], 200);
                        answers.push(udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &ok));
                    }
                }
            }
            for a in &answers {
                assert!(r.w.io().inject(Side::Core, a));
            }
        }
    }
    assert_eq!(relayed, 120, "{:?}", r.w.stats());
    assert_eq!(
        messages(&ue.got).len(),
        120,
        "every answer back on the connection"
    );
    assert_eq!(allocs, 0, "allocations once warm");
}

/// A request from the core to a UE, `body` bytes of body.
fn core_request(body: usize) -> Vec<u8> {
    let text = "y".repeat(body);
    format!(
        "MESSAGE sip:alice@10.46.0.6:7005 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKbig{body}\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:10.0.1.10:5060;lr>\r\n\
         From: <sip:b@ims.example.net>;tag=1\r\n\
         To: <sip:alice@ims.example.net>\r\n\
         Call-ID: big{body}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {body}\r\n\r\n{text}"
    )
    .into_bytes()
}

/// RFC 3261 §18.1.1: a request from the core larger than `max_udp_request` goes to the UE over
/// TCP — our connection, our port-c → its port-s, over SA2, our Via saying TCP — and the UE's
/// answer on that connection (over SA4) goes back to the core; a small one stays a datagram.
#[test]
fn a_large_request_toward_the_ue_goes_on_our_connection_and_the_answer_comes_back() {
    let mut c = cfg(false);
    c.max_udp_request = 1300;
    let mut r = with_sa3(rig_with(c, BINDING));
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.sa4_tx = Some(std::mem::replace(&mut r.sa4_tx, sa(1)));
    let core = |r: &mut Rig, sip: &[u8]| {
        let p = udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), sip);
        assert!(r.w.io().inject(Side::Core, &p));
    };
    // small: one datagram over SA2, as before
    core(&mut r, &core_request(100));
    r.w.poll_once();
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1);
    let mut esp = sent[0].1.clone();
    let (inner, _) = r.sa2_rx.decapsulate(&mut esp).unwrap();
    assert!(
        matches!(classify(&esp[inner]), L4::Udp { .. }),
        "UDP inside"
    );
    // large: over our connection
    core(&mut r, &core_request(2000));
    r.w.poll_once();
    for (side, pkt) in r.w.io().take_sent() {
        assert_eq!(side, Side::Ue);
        ue.take(pkt);
    }
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let got = messages(&ue.got_ours);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    let m = Message::parse(&got[0]).unwrap();
    assert_eq!(m.view().body().len(), 2000);
    let top = m.view().header(pcscf::sip::HeaderName::Via).unwrap();
    assert!(
        top.starts_with(b"SIP/2.0/TCP 10.46.0.1:5102;"),
        "our Via says TCP: {}",
        String::from_utf8_lossy(top)
    );
    // the UE answers on the same connection; the 200 reaches the core
    ue.answer_on_ours(&answer(&got[0], 200));
    let at_core = pump(&mut ue, &mut r.w);
    assert_eq!(at_core.len(), 1, "{:?}", r.w.stats());
    assert!(at_core[0].starts_with(b"SIP/2.0 200 "));
    let s = *r.w.stats();
    assert_eq!((s.stream_out, s.stream_in), (1, 1), "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
}

/// A UE's segments that reach a worker other than the one holding its TCP are handed to that
/// worker, which answers them; nothing of the UE's TCP is built on the other.
#[test]
fn segments_reaching_another_worker_are_handed_to_the_holder() {
    let mut r = tcp_rig();
    let (q0, q1) = (MsgQueue::new(64, None), MsgQueue::new(64, None));
    let peers: Arc<[Arc<MsgQueue>]> = vec![q0.clone(), q1.clone()].into();
    r.w.set_peers(peers.clone());
    let mut c = cfg(false);
    c.id = 1;
    let mut other = Worker::new(
        MemIo::new(64),
        c,
        MsgQueue::new(16, None),
        Arc::new(SharedStats::default()),
    )
    .with_sas(r.writer.reader())
    .with_peers(peers);
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(500, 20));
    // every UE packet arrives at worker 1; worker 0 holds the UE
    let mut at_core = Vec::new();
    for _ in 0..32 {
        let pkts = ue.packets();
        for p in &pkts {
            assert!(other.io().inject(Side::Ue, p));
        }
        other.poll_once();
        assert!(
            other.io().take_sent().is_empty(),
            "worker 1 sends nothing of it"
        );
        r.w.poll_once();
        let sent = r.w.io().take_sent();
        if pkts.is_empty() && sent.is_empty() {
            break;
        }
        for (side, pkt) in sent {
            match side {
                Side::Ue => ue.take(pkt),
                Side::Core => at_core.push(pkt),
            }
        }
    }
    assert_eq!(at_core.len(), 1, "{:?} {:?}", r.w.stats(), other.stats());
    assert!(other.streams().is_idle());
    assert!(other.stats().handed_over >= 2, "{:?}", other.stats());
    assert_eq!(r.w.stats().tcp_segments, other.stats().handed_over);
}

/// A set the sweep closes (its SAs gone) loses no message: the resets its TCP makes on the way
/// out have no SA left to go over, and are not counted as messages lost (`stream_lost`, which
/// an operator reads as SIP messages that did not reach a UE).
#[test]
fn a_set_closed_by_the_sweep_counts_no_message_lost() {
    let mut r = tcp_rig();
    let spi1 = r.sa1_tx.spi();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(10, 18));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1);
    let set = (BINDING << 32) | (u64::from(OUR_PORT_C) << 16) | u64::from(OUR_PORT_S);
    assert!(
        r.w.streams()
            .host()
            .is_established(set, pcscf::tcp::Conn::Accepted),
        "the UE's connection is up"
    );
    let ue: IpAddr = UE.parse().unwrap();
    r.writer.remove_inbound(spi1).unwrap();
    r.writer.remove_outbound(ue, UE_PORT_C, OUR_PORT_S).unwrap();
    r.writer.remove_outbound(ue, UE_PORT_S, OUR_PORT_C).unwrap();
    let before = *r.w.stats();
    std::thread::sleep(pcscf::dataplane::SWEEP_EVERY + std::time::Duration::from_millis(50));
    r.w.poll_once();
    assert_eq!(r.w.streams().host().len(), 0, "the set's TCP closed");
    let s = *r.w.stats();
    let lost = DropReason::StreamLost as usize;
    assert_eq!(s.drops[lost] - before.drops[lost], 0, "{s:?}");
    assert!(r.w.io().take_sent().is_empty(), "nothing sent without SAs");
}

/// RFC 3261 §18.1.1: a request too large for a datagram waits for our connection to the UE's
/// port-s. A UE that refuses it (a RST to our SYN: no TCP server) never gets the request: that
/// loss is counted (`stream_lost`), not left looking forwarded.
#[test]
fn a_large_request_to_a_ue_that_refuses_our_connection_is_counted_lost() {
    let mut c = cfg(false);
    c.max_udp_request = 1300;
    let mut r = with_sa3(rig_with(c, BINDING));
    let sa4_tx = std::mem::replace(&mut r.sa4_tx, sa(1));
    let before = *r.w.stats();
    let p = udp(
        addr("10.0.1.30:6060"),
        addr("10.0.1.10:5060"),
        &core_request(2000),
    );
    assert!(r.w.io().inject(Side::Core, &p));
    r.w.poll_once();
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1, "our SYN: {:?}", r.w.stats());
    let mut esp = sent[0].1.clone();
    let (inner, _) = r.sa2_rx.decapsulate(&mut esp).unwrap();
    let syn = &esp[inner];
    assert_eq!(syn[20 + 13] & 0x02, 0x02, "a SYN");
    let seq = u32::from_be_bytes(syn[24..28].try_into().unwrap());
    // the UE has no TCP server on its port-s: RST|ACK
    let (ue, ours): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (UE.parse().unwrap(), OURS.parse().unwrap());
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&UE_PORT_S.to_be_bytes());
    t[2..4].copy_from_slice(&OUR_PORT_C.to_be_bytes());
    t[8..12].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x14;
    let sum = tcp_checksum(ue, ours, &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    assert!(r.w.io().inject(
        Side::Ue,
        &protect(&sa4_tx, &ip_tcp(ue.into(), ours.into(), &t))
    ));
    r.w.poll_once();
    assert!(r.w.io().take_sent().is_empty());
    let s = *r.w.stats();
    let lost = DropReason::StreamLost as usize;
    assert_eq!(
        s.drops[lost] - before.drops[lost],
        1,
        "the request lost, counted: {s:?}"
    );
}

/// A UE's set goes and, before the sweep has seen it go, the registrar gives the same UE a new
/// set with the same name for the worker's TCP (same registration, our same port-c and port-s:
/// the ports came free and were handed out again) but a new port-c of the UE (TS 33.203 §7.4).
/// The new set's TCP is its own: the UE's connection from its new port-c is served, and the old
/// set's record is not kept alive by the new set's SAs.
#[test]
fn a_new_set_with_the_name_of_one_not_yet_swept_gets_its_own_tcp() {
    let mut r = tcp_rig();
    let (spi1, spi4) = (r.sa1_tx.spi(), r.sa4_tx.spi());
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(10, 30));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1);
    // the set goes: its four SAs
    let ue_ip: IpAddr = UE.parse().unwrap();
    r.writer.remove_inbound(spi1).unwrap();
    r.writer.remove_inbound(spi4).unwrap();
    r.writer
        .remove_outbound(ue_ip, UE_PORT_C, OUR_PORT_S)
        .unwrap();
    r.writer
        .remove_outbound(ue_ip, UE_PORT_S, OUR_PORT_C)
        .unwrap();
    // the new set, at once: the UE's new port-c, everything else as before
    const NEW_PORT_C: u16 = 7010;
    let meta = |ue_port, local_port| pcscf::satable::EntryMeta {
        ue_addr: ue_ip,
        ue_port,
        ue_ports: pcscf::satable::SetPorts {
            c: NEW_PORT_C,
            s: UE_PORT_S,
        },
        local_port,
        ports: pcscf::satable::SetPorts {
            c: OUR_PORT_C,
            s: OUR_PORT_S,
        },
        binding: BINDING,
        state: pcscf::satable::SetState::New,
    };
    let new1 = r.writer.reserve_spi().unwrap();
    r.writer
        .install_inbound(sa(new1), &meta(NEW_PORT_C, OUR_PORT_S))
        .unwrap();
    r.writer
        .set_inbound_registration(new1, Some(r.reg.clone()))
        .unwrap();
    let new4 = r.writer.reserve_spi().unwrap();
    r.writer
        .install_inbound(sa(new4), &meta(UE_PORT_S, OUR_PORT_C))
        .unwrap();
    r.writer
        .install_outbound(
            sa(crate::support::worker::SPI_SA2),
            &meta(UE_PORT_S, OUR_PORT_C),
        )
        .unwrap();
    r.writer
        .install_outbound(
            sa(crate::support::worker::SPI_SA3),
            &meta(NEW_PORT_C, OUR_PORT_S),
        )
        .unwrap();
    let mut ue = Ue::with_port_c(sa(new1), NEW_PORT_C);
    ue.send(&message(10, 31));
    assert_eq!(
        pump(&mut ue, &mut r.w).len(),
        1,
        "the UE's connection in its new set: {:?}",
        r.w.stats()
    );
    // past a sweep: the new set's TCP still serves the UE (nothing of the old one in its way)
    std::thread::sleep(pcscf::dataplane::SWEEP_EVERY + std::time::Duration::from_millis(50));
    r.w.poll_once();
    ue.send(&message(10, 32));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1, "{:?}", r.w.stats());
    let s = *r.w.stats();
    assert_eq!(s.drops[DropReason::TcpRefused as usize], 0, "{s:?}");
}

/// A hostile UE on its own set sends segments that open nothing (bare ACKs to our port-s, no
/// connection up: each answered with a RST, RFC 9293 §3.10.7.2): the worker allocates nothing
/// per segment once warm (its set's TCP is not built and given back again for each one, ~25
/// KiB of buffers a time, on the worker that serves every other UE).
#[test]
fn hostile_segments_to_a_quiet_set_allocate_nothing_per_segment() {
    use crate::support::alloc::allocations_in;
    let mut r = tcp_rig();
    let sa1 = std::mem::replace(&mut r.sa1_tx, sa(1));
    let (ue, ours): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (UE.parse().unwrap(), OURS.parse().unwrap());
    let ack = |n: u32| {
        let mut t = [0u8; 20];
        t[0..2].copy_from_slice(&UE_PORT_C.to_be_bytes());
        t[2..4].copy_from_slice(&OUR_PORT_S.to_be_bytes());
        t[4..8].copy_from_slice(&n.to_be_bytes());
        t[8..12].copy_from_slice(&n.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x10;
        t[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let sum = tcp_checksum(ue, ours, &t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        protect(&sa1, &ip_tcp(ue.into(), ours.into(), &t))
    };
    let (mut allocs, mut resets) = (0u64, 0usize);
    for n in 0..100u32 {
        assert!(r.w.io().inject(Side::Ue, &ack(1000 + n)));
        let ((), a) = allocations_in(|| {
            r.w.poll_once();
        });
        if n >= 20 {
            allocs += a;
        }
        resets += r.w.io().take_sent().len();
    }
    assert_eq!(resets, 100, "each answered: {:?}", r.w.stats());
    assert_eq!(allocs, 0, "allocations per hostile segment once warm");
}

/// What the worker sends toward a UE leaves in the order it came, whatever the transport: the
/// core's 200 on the UE's connection, then its next request as a datagram, both in one batch
/// (a BYE overtaking the 200 to the UE's UPDATE ended calls in the lab).
#[test]
fn the_ues_connection_and_its_datagrams_keep_the_order_of_the_batch() {
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(&message(50, 30));
    let at_core = pump(&mut ue, &mut r.w);
    assert_eq!(at_core.len(), 1);
    for sip in [answer(&at_core[0], 200), core_request(100)] {
        let p = udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &sip);
        assert!(r.w.io().inject(Side::Core, &p));
    }
    r.w.poll_once();
    let spis: Vec<u32> =
        r.w.io()
            .take_sent()
            .iter()
            .map(|(_, p)| u32::from_be_bytes(p[20..24].try_into().unwrap()))
            .collect();
    assert_eq!(
        spis,
        vec![SPI_SA3, SPI_SA2],
        "the 200 on the connection (SA3) before the datagram (SA2)"
    );
}

/// A hostile UE's message without Content-Length on its stream (RFC 3261 §18.3: it MUST be
/// there): its connection is reset and counted, nothing of it reaches the core, and its next
/// connection works.
#[test]
fn a_stream_without_content_length_resets_only_that_connection() {
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(b"MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/TCP 10.46.0.6:7005;branch=z9hG4bKnocl\r\nFrom: <sip:alice@ims.example.net>;tag=1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: nocl\r\nCSeq: 1 MESSAGE\r\n\r\nhello");
    assert!(pump(&mut ue, &mut r.w).is_empty(), "nothing relayed");
    let s = *r.w.stats();
    assert_eq!((s.tcp_framing_errors, s.stream_in), (1, 0), "{s:?}");
    assert!(
        !ue.ep.is_open(pcscf::tcp::Conn::Opened),
        "the UE's connection was reset"
    );
    ue.send(&message(10, 40));
    assert_eq!(pump(&mut ue, &mut r.w).len(), 1, "a new connection works");
}

/// A request to us on the UE's connection is answered on it (RFC 3261 §18.2.2), whatever port
/// its Via names: no SA of the set need match that port (a datagram answer would need one).
#[test]
fn a_request_to_us_on_the_connection_is_answered_on_it_whatever_its_via_port() {
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(b"OPTIONS sip:10.46.0.1:5103 SIP/2.0\r\nVia: SIP/2.0/TCP 10.46.0.6:9999;branch=z9hG4bKopt\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=1\r\nTo: <sip:10.46.0.1:5103>\r\nCall-ID: opt@10.46.0.6\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert!(pump(&mut ue, &mut r.w).is_empty());
    let got = messages(&ue.got);
    assert_eq!(got.len(), 1, "{:?}", r.w.stats());
    assert!(
        got[0].starts_with(b"SIP/2.0 200 "),
        "{}",
        String::from_utf8_lossy(&got[0])
    );
    assert_eq!(r.w.stats().replied, 1);
}

/// RFC 3263 §4.1: a request for a contact registered with `;transport=tcp` goes on our
/// connection however small; with TCP toward UEs off (`max_udp_request` 65535) it stays a
/// datagram.
#[test]
fn a_request_for_a_tcp_contact_goes_on_our_connection_however_small() {
    let small_tcp = String::from_utf8(core_request(10))
        .unwrap()
        .replacen(
            "sip:alice@10.46.0.6:7005",
            "sip:alice@10.46.0.6:7005;transport=TCP",
            1,
        )
        .into_bytes();
    for (max, over_tcp) in [(1300, true), (usize::from(u16::MAX), false)] {
        let mut c = cfg(false);
        c.max_udp_request = max;
        let mut r = with_sa3(rig_with(c, BINDING));
        let p = udp(addr("10.0.1.30:6060"), addr("10.0.1.10:5060"), &small_tcp);
        assert!(r.w.io().inject(Side::Core, &p));
        r.w.poll_once();
        let sent = r.w.io().take_sent();
        assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
        let mut esp = sent[0].1.clone();
        let (inner, _) = r.sa2_rx.decapsulate(&mut esp).unwrap();
        let tcp = !matches!(classify(&esp[inner]), L4::Udp { .. });
        assert_eq!(tcp, over_tcp, "max_udp_request {max}: over TCP (our SYN)");
    }
}
