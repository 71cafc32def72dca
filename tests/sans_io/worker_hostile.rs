//! Hostile input through the whole worker: responses that outgrow their frame, and
//! responses steered by what a UE writes. Over the in-memory backend.

use std::net::SocketAddr;
use std::sync::Arc;

use pcscf::dataplane::{DropReason, L4, MsgQueue, SharedStats, Worker, classify, udp_checksum_ok};
use pcscf::io::{MemIo, Side};
use pcscf::sip::headers::Via;
use pcscf::sip::rules;
use pcscf::sip::{HeaderName, Message};

const MESSAGE: &[u8] = include_bytes!("../data/ims/message_v4.sip");

use crate::support::worker::{addr, cfg};

fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + payload.len()];
    buf[128..].copy_from_slice(payload);
    let r = pcscf::wire::emit_datagram(&mut buf, 128..128 + payload.len(), addr(src), addr(dst))
        .ok()
        .unwrap();
    buf[r].to_vec()
}

fn worker(relay: bool) -> Worker<MemIo> {
    let punt = MsgQueue::new(64, None);
    let shared = Arc::new(SharedStats::default());
    Worker::new(MemIo::new(64), cfg(relay), punt, shared)
}

/// A minimal MESSAGE of about `size` bytes: `line` repeated (as many header lines as the parser
/// takes) and a long compact Call-ID. Little of it is dropped in an error response, and every
/// compact name grows there (`v:` → `Via: `, `i:` → `Call-ID: `).
fn fat_request(line: &str, size: usize) -> Vec<u8> {
    let mut out = String::from(
        "MESSAGE sip:b@ims.example.net SIP/2.0\r\n\
         v:SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bKm5g0\r\n\
         f:<sip:a@ims.example.net>;tag=1\r\nt:<sip:b@ims.example.net>\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n",
    );
    for _ in 0..56 {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("i:c");
    while out.len() + 11 < size {
        out.push('x');
    }
    out.push_str("\r\nl:0\r\n\r\n");
    out.into_bytes()
}

/// A ~3.4 KB request whose 403 (compact Via names expanded to `Via: `) or 400 (many
/// Call-IDs expanded) is longer than what the frame holds after its headroom.
#[test]
fn error_response_that_outgrows_the_frame_is_dropped_and_counted() {
    for (line, code_drop) in [("v:SIP/2.0/UDP h;branch=z9hG4bK1", "403"), ("i:a", "400")] {
        let mut w = worker(false);
        let req = fat_request(line, 3780);
        let pkt = udp("10.46.0.6:5060", "10.46.0.1:5060", &req);
        assert!(w.io().inject(Side::Ue, &pkt), "{code_drop}: fits the frame");
        assert_eq!(w.poll_once(), 1);
        let s = *w.stats();
        assert_eq!(s.drops[DropReason::NoRoom as usize], 1, "{code_drop}");
        assert_eq!(s.replied, 0, "{code_drop}");
        assert!(w.io().take_sent().is_empty());
        assert_eq!(w.io().free_frames(), 64, "{code_drop}: every frame back");
    }
}

/// The same shape small enough still gets its answer (the check is not too strict).
#[test]
fn error_response_that_fits_still_goes_back() {
    let mut w = worker(false);
    let req = fat_request("v:SIP/2.0/UDP h;branch=z9hG4bK1", 2500);
    w.io()
        .inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5060", &req));
    w.poll_once();
    let sent = w.io().take_sent();
    assert_eq!(sent.len(), 1);
    assert!(matches!(classify(&sent[0].1), L4::Udp { .. }));
    assert_eq!(w.stats().replied, 1);
}

// ---- Responses are not steered by what a UE writes (RFC 3261 §18.1.2) ----

use crate::support::worker::{Kind, Rig, rig};
use pcscf::esp::{Sa, SaOptions};
use pcscf::satable::{EntryMeta, SetPorts, SetState};

fn sip_of(pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    match classify(pkt) {
        L4::Udp { src, dst, payload } => {
            assert!(udp_checksum_ok(pkt, src, dst, &payload));
            (src, dst, pkt[payload.start..payload.end].to_vec())
        }
        other => panic!("not UDP: {other:?}"),
    }
}

/// What the worker sent the UE over SA2, decrypted with the UE's copy: (outer dst, inner
/// src, inner dst, SIP).
fn over_sa2(r: &Rig, pkt: &[u8]) -> (std::net::IpAddr, SocketAddr, SocketAddr, Vec<u8>) {
    let L4::Esp { dst, .. } = classify(pkt) else {
        panic!("not ESP");
    };
    let mut p = pkt.to_vec();
    let (inner, _) = r
        .sa2_rx
        .decapsulate(&mut p)
        .expect("the UE's SA2 decrypts it");
    let (s, d, sip) = sip_of(&p[inner]);
    (dst, s, d, sip)
}

fn send(r: &mut Rig, kind: Kind, sip: &[u8]) -> Vec<(Side, Vec<u8>)> {
    let (side, pkt) = r.packet(kind, sip).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    r.w.io().take_sent()
}

/// The core's 200 to a request the worker forwarded (keeps every Via).
fn answer(sip: &[u8], extra: &[&[u8]]) -> Vec<u8> {
    let m = Message::parse(sip).unwrap();
    let mut out = vec![0u8; 4096];
    let n = rules::build_response(m.view(), 200, "OK", b"x", extra, &mut out).unwrap();
    out.truncate(n);
    out
}

/// UE B (10.46.0.7) with its own SA2 on the same ports, in A's rig.
fn add_ue_b(r: &mut Rig) {
    let sa = Sa::from_aka(
        0x8000_0b0b,
        "hmac-sha-1-96",
        "null",
        &[1; 16],
        &[2; 16],
        SaOptions::default(),
    )
    .unwrap();
    r.writer
        .install_outbound(
            sa,
            &EntryMeta {
                ue_addr: "10.46.0.7".parse().unwrap(),
                ue_port: crate::support::worker::UE_PORT_S,
                ue_ports: SetPorts::default(),
                local_port: crate::support::worker::OUR_PORT_C,
                ports: SetPorts {
                    c: crate::support::worker::OUR_PORT_C,
                    s: crate::support::worker::OUR_PORT_S,
                },
                binding: 2,
                state: SetState::New,
            },
        )
        .unwrap();
}

/// A's request over its SA1, its Via naming `via_host`: forwarded to the core.
fn a_request(r: &mut Rig, via_host: &str) -> Vec<u8> {
    let msg = String::from_utf8(MESSAGE.to_vec()).unwrap().replacen(
        "10.46.0.6:7005",
        &format!("{via_host}:7005"),
        1,
    );
    let sent = send(r, Kind::EspPortC, msg.as_bytes());
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    assert_eq!(sent[0].0, Side::Core);
    let (src, dst, sip) = sip_of(&sent[0].1);
    assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.30:6060")));
    sip
}

#[test]
fn core_response_goes_back_over_the_requesting_ues_sa() {
    let mut r = rig(false);
    let fwd = a_request(&mut r, "10.46.0.6");
    let sent = send(&mut r, Kind::Core, &answer(&fwd, &[]));
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let (outer, src, dst, sip) = over_sa2(&r, &sent[0].1);
    assert_eq!(outer.to_string(), "10.46.0.6");
    assert_eq!((src, dst), (addr("10.46.0.1:5102"), addr("10.46.0.6:7005")));
    let m = Message::parse_strict(&sip).unwrap();
    assert_eq!(
        m.view().values(HeaderName::Via).count(),
        1,
        "our Via popped"
    );
}

/// TS 24.229 §5.2.6.3: a P-Preferred-Identity naming one of the UE's registered IMPUs is what
/// the core sees asserted (any form RFC 3261 §19.1.4 calls the same; a sip: and a tel: one may
/// come in one header); one naming anyone else is replaced by the default IMPU. Either way no
/// P-Preferred-Identity and no identity the UE asserted itself reaches the core.
#[test]
fn a_registered_preferred_identity_is_asserted_and_any_other_is_not() {
    let ppi = "P-Preferred-Identity: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>";
    let cases = [
        (
            "P-Preferred-Identity: <sip:alice.work@IMS.example.net>",
            "<sip:alice.work@ims.example.net>",
        ),
        (
            "P-Preferred-Identity: \"Work\" <sip:bob@ims.example.net>, <tel:+15550100>",
            "<tel:+15550100>",
        ),
        (
            "P-Preferred-Identity: <sip:bob@ims.example.net>",
            "<sip:alice@ims.example.net>",
        ),
        (
            "P-Preferred-Identity: <sip:Alice.work@ims.example.net>",
            "<sip:alice@ims.example.net>",
        ),
        (
            "P-Asserted-Identity: <sip:alice.work@ims.example.net>",
            "<sip:alice@ims.example.net>",
        ),
    ];
    for (header, asserted) in cases {
        let mut r = rig(false);
        let msg = String::from_utf8(MESSAGE.to_vec()).unwrap();
        assert!(msg.contains(ppi));
        let msg = msg.replacen(ppi, header, 1);
        let sent = send(&mut r, Kind::EspPortC, msg.as_bytes());
        assert_eq!(sent.len(), 1, "{header}: {:?}", r.w.stats());
        let (_, _, sip) = sip_of(&sent[0].1);
        let m = Message::parse_strict(&sip).unwrap();
        let v = m.view();
        let pai: Vec<&[u8]> = v.values(HeaderName::PAssertedIdentity).collect();
        assert_eq!(pai, [asserted.as_bytes()], "{header}");
        assert!(
            v.header(HeaderName::PPreferredIdentity).is_none(),
            "{header}"
        );
    }
    // not a name-addr at all: the message is not valid SIP (RFC 3325 §9.2), dropped and counted
    let mut r = rig(false);
    let msg = String::from_utf8(MESSAGE.to_vec()).unwrap().replacen(
        ppi,
        "P-Preferred-Identity: garbage",
        1,
    );
    assert!(send(&mut r, Kind::EspPortC, msg.as_bytes()).is_empty());
    assert_eq!(r.w.stats().drops[DropReason::BadSip as usize], 1);
}

/// UE A writes UE B's address in its Via: the answer still goes to A over A's SA, never over
/// B's (which exists on the same ports).
#[test]
fn ue_a_gets_its_answer_over_its_own_sa_even_naming_ue_b_in_its_via() {
    let mut r = rig(false);
    add_ue_b(&mut r);
    let fwd = a_request(&mut r, "10.46.0.7");
    let sent = send(&mut r, Kind::Core, &answer(&fwd, &[]));
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let (outer, _, dst, _) = over_sa2(&r, &sent[0].1);
    assert_eq!(outer.to_string(), "10.46.0.6", "to A, not B");
    assert_eq!(dst, addr("10.46.0.6:7005"));
}

/// The core's answer to a request whose SA set has gone since (the registration ended, or a
/// re-registration's set replaced it and expired) goes nowhere: not in the clear, not over
/// another set (TS 33.203 §7.4); it is counted as `set_gone`, not as a routing failure.
#[test]
fn core_response_for_a_set_that_is_gone_is_dropped_and_counted() {
    let mut r = rig(false);
    let fwd = a_request(&mut r, "10.46.0.6");
    r.writer.remove_inbound(r.sa1_tx.spi()).unwrap();
    assert!(send(&mut r, Kind::Core, &answer(&fwd, &[])).is_empty());
    let s = r.w.stats();
    assert_eq!(s.drops[DropReason::SetGone as usize], 1, "{s:?}");
    assert_eq!(s.drops[DropReason::NoRoute as usize], 0, "{s:?}");
    assert_eq!(DropReason::SetGone.name(), "set_gone");
}

/// Core responses whose top Via has our sent-by but a branch we did not seal (the old format,
/// ours with a flipped MAC, another SPI) are dropped and counted; nothing is sent.
#[test]
fn core_response_with_a_forged_branch_is_dropped() {
    let mut r = rig(false);
    let fwd = a_request(&mut r, "10.46.0.6");
    let ok = String::from_utf8(answer(&fwd, &[])).unwrap();
    let top = Message::parse(ok.as_bytes())
        .unwrap()
        .view()
        .values(HeaderName::Via)
        .next()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .unwrap();
    let branch = String::from_utf8(
        Via::parse(top.as_bytes())
            .unwrap()
            .branch()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    let mut flipped = branch.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let mut other_spi = branch.clone().into_bytes();
    other_spi[7 + 11] = if other_spi[7 + 11] == b'1' {
        b'2'
    } else {
        b'1'
    };
    let other_spi = String::from_utf8(other_spi).unwrap();
    let forwarded = r.w.stats().forwarded;
    for forged in ["z9hG4bK0123456789ab13ff", &flipped, &other_spi] {
        let bad = ok.replacen(&branch, forged, 1);
        let before = r.w.stats().drops[DropReason::NotOurVia as usize]
            + r.w.stats().drops[DropReason::SetGone as usize];
        assert!(
            send(&mut r, Kind::Core, bad.as_bytes()).is_empty(),
            "{forged}"
        );
        let after = r.w.stats().drops[DropReason::NotOurVia as usize]
            + r.w.stats().drops[DropReason::SetGone as usize];
        assert_eq!(after, before + 1, "{forged}: counted");
    }
    assert_eq!(
        r.w.stats().forwarded,
        forwarded,
        "none of them went anywhere"
    );
}

/// A core REGISTER response with our sent-by still reaches the registration thread (its
/// branches have their own format and check).
#[test]
fn core_register_response_is_still_punted() {
    let mut r = rig(false);
    let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK0123456789abcdef\r\nVia: SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: r\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    assert!(send(&mut r, Kind::Core, ok).is_empty());
    assert_eq!(r.w.stats().punted, 1);
    assert!(r.punt.pop().is_some());
}

const CORE_MESSAGE: &[u8] = b"MESSAGE sip:alice@10.46.0.6:7005 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nRoute: <sip:10.0.1.10:5060;lr>\r\nFrom: <sip:b@ims.example.net>;tag=1\r\nTo: <sip:alice@ims.example.net>\r\nCall-ID: y\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";

/// The core's MESSAGE to the UE, as the UE receives it over SA2.
fn to_ue(r: &mut Rig) -> Vec<u8> {
    let sent = send(r, Kind::Core, CORE_MESSAGE);
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    over_sa2(r, &sent[0].1).3
}

/// TS 24.229 §5.2.6.4 / RFC 3325 §9.1: the UE's answer goes to the core with the registered
/// identity asserted, whatever identity the UE wrote.
#[test]
fn ue_response_over_sa_reaches_the_core_with_the_registered_identity() {
    let mut r = rig(false);
    let req = to_ue(&mut r);
    let ok = answer(
        &req,
        &[b"P-Asserted-Identity: <sip:evil@ims.example.net>\r\nP-Preferred-Identity: <sip:evil@ims.example.net>\r\n"],
    );
    let sent = send(&mut r, Kind::EspPortS, &ok);
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    assert_eq!(sent[0].0, Side::Core);
    let (src, dst, sip) = sip_of(&sent[0].1);
    // back to where the core's request came from (RFC 3581: received, the sent-by port)
    assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:6060")));
    let m = Message::parse_strict(&sip).unwrap();
    let v = m.view();
    assert_eq!(v.values(HeaderName::Via).count(), 1);
    let pai: Vec<&[u8]> = v.values(HeaderName::PAssertedIdentity).collect();
    assert_eq!(pai, [&b"<sip:alice@ims.example.net>"[..]]);
    assert!(v.header(HeaderName::PPreferredIdentity).is_none());
}

/// Phones answer the core's request from their port-c to our port-s (SA1) as well as from their
/// port-s to our port-c (SA4): both reach the core.
#[test]
fn ue_response_over_either_sa_of_the_set_reaches_the_core() {
    for kind in [Kind::EspPortS, Kind::EspPortC] {
        let mut r = rig(false);
        let req = to_ue(&mut r);
        let ok = answer(&req, &[]);
        let sent = send(&mut r, kind, &ok);
        assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
        assert_eq!(sent[0].0, Side::Core);
        let (src, dst, _) = sip_of(&sent[0].1);
        assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:6060")));
    }
}

/// A core response whose only Via is ours was meant for us (RFC 3261 §16.7 step 3): it is not
/// forwarded to the UE, over the SA or in the clear, and it is counted.
#[test]
fn core_response_with_only_our_via_is_not_forwarded() {
    for plain in [false, true] {
        let mut r = rig(plain);
        let fwd = a_request(&mut r, "10.46.0.6");
        let ok = String::from_utf8(answer(&fwd, &[])).unwrap();
        let mut seen = 0;
        let only_ours: String = ok
            .split_inclusive("\r\n")
            .filter(|l| {
                let via = l.starts_with("Via:");
                seen += usize::from(via);
                !via || seen == 1
            })
            .collect();
        assert!(seen >= 2, "the answer carried our Via and the UE's: {ok}");
        let before = r.w.stats().drops[DropReason::ToUs as usize];
        assert!(send(&mut r, Kind::Core, only_ours.as_bytes()).is_empty());
        assert_eq!(r.w.stats().drops[DropReason::ToUs as usize], before + 1);
        // the genuine answer still goes through
        assert_eq!(
            send(&mut r, Kind::Core, ok.as_bytes()).len(),
            1,
            "plain {plain}"
        );
    }
}

/// A UE's response over its SA whose top Via is not ours (or is ours with the core hop below it
/// changed) is dropped and counted: the UE cannot make us send SIP from our core address to a
/// host of its choosing.
#[test]
fn ue_response_over_sa_with_a_forged_via_is_dropped() {
    let mut r = rig(false);
    let req = to_ue(&mut r);
    let ok = String::from_utf8(answer(&req, &[])).unwrap();
    let forged_top = ok.replacen("10.46.0.1:5102", "192.0.2.9:5060", 1);
    assert!(ok.contains("received=10.0.1.20"));
    let redirected = ok.replacen("received=10.0.1.20", "received=192.0.2.9", 1);
    let plain_victim = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKx\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: z\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n".to_string();
    for (n, bad) in [forged_top, redirected, plain_victim].iter().enumerate() {
        assert_ne!(bad, &ok);
        assert!(
            send(&mut r, Kind::EspPortS, bad.as_bytes()).is_empty(),
            "case {n}"
        );
        assert_eq!(
            r.w.stats().drops[DropReason::NotOurVia as usize],
            n as u64 + 1,
            "case {n}"
        );
    }
    // the genuine answer still goes through
    assert_eq!(send(&mut r, Kind::EspPortS, ok.as_bytes()).len(), 1);
}

/// Stateless relay mode: a UE's plain response gets the same Via check.
#[test]
fn plain_ue_response_with_a_foreign_via_is_dropped_in_relay_mode() {
    let mut r = rig(true);
    let victim = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bKx\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKy\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: z\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    assert!(send(&mut r, Kind::PlainUe, victim).is_empty());
    assert_eq!(r.w.stats().drops[DropReason::NotOurVia as usize], 1);
}

/// An OPTIONS from the UE to us (our address in another IPv6 form, our port-s).
const OPTIONS_TO_US: &[u8] = b"OPTIONS sip:[FD00:46:0::1]:5103 SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKo1\r\nMax-Forwards: 70\r\nRoute: <sip:10.46.0.1:5103;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

/// The new paths allocate nothing per packet: A's request over SA1, the core's answer over
/// SA2, the core's request to the UE, the UE's answer over SA4, and a forged one.
#[test]
fn response_paths_do_not_allocate() {
    let mut r = rig(false);
    // one untimed round to learn the packets (branches are stable for the same request)
    let fwd = a_request(&mut r, "10.46.0.6");
    let core_ok = answer(&fwd, &[]);
    let req = to_ue(&mut r);
    let ue_ok = answer(&req, &[b"P-Preferred-Identity: <sip:evil@x>\r\n"]);
    let forged =
        String::from_utf8(ue_ok.clone())
            .unwrap()
            .replacen("10.46.0.1:5102", "192.0.2.9:5060", 1);
    for round in 0..3 {
        let pkts = [
            r.packet(Kind::EspPortC, MESSAGE).unwrap(),
            r.packet(Kind::Core, &core_ok).unwrap(),
            r.packet(Kind::Core, CORE_MESSAGE).unwrap(),
            r.packet(Kind::EspPortS, &ue_ok).unwrap(),
            r.packet(Kind::EspPortS, forged.as_bytes()).unwrap(),
            // addressed to us: answered over SA2, IPv6 R-URI in another form
            r.packet(Kind::EspPortC, OPTIONS_TO_US).unwrap(),
        ];
        for (side, p) in &pkts {
            assert!(r.w.io().inject(*side, p));
        }
        let before = crate::support::alloc::count();
        r.w.poll_once();
        let allocs = crate::support::alloc::count() - before;
        assert_eq!(allocs, 0, "round {round}: {allocs} allocations in a batch");
        r.w.io().discard_sent();
    }
    let s = r.w.stats();
    // the rig's two, the untimed two, then per round: request and UE answer to the core,
    // core answer and core request over SA2
    assert_eq!(s.forwarded, 2 + 2 + 3 * 4, "{s:?}");
    assert_eq!(s.drops[DropReason::NotOurVia as usize], 3);
    assert_eq!(s.replied, 3, "the OPTIONS to us, once a round: {s:?}");
}
