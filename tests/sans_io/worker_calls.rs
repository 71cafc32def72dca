//! Calls through the worker (RFC 3261 §12, §16.6, §16.12; RFC 5658; TS 24.229 §5.2.6.3 and
//! §5.2.6.4): an INVITE dialog set up and torn down from either side over the UE's SAs, with our
//! two Record-Route entries and their flow tokens, and every way a UE might misuse a dialog
//! refused and counted. Sans-IO: the in-memory backend.

use std::net::SocketAddr;

use pcscf::control::registrar::{Incoming, Outgoing};
use pcscf::dataplane::{DropReason, L4, Protection, classify, udp_checksum_ok};
use pcscf::io::Side;
use pcscf::sip::rules;
use pcscf::sip::{HeaderName, Message};

use crate::support::worker::{Kind, Rig, addr, rig, rig_for};

/// The S-CSCF's own Record-Route entry (it record-routes every dialog it serves).
const SCSCF_RR: &str = "<sip:scscf.ims.example.net:6060;lr>";

fn sip_of(pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    match classify(pkt) {
        L4::Udp { src, dst, payload } => {
            assert!(udp_checksum_ok(pkt, src, dst, &payload));
            (src, dst, pkt[payload.start..payload.end].to_vec())
        }
        other => panic!("not UDP: {other:?}"),
    }
}

/// What the worker sent the UE over SA2, decrypted with the UE's copy: (inner src, inner dst,
/// SIP).
fn over_sa2(r: &Rig, pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    assert!(matches!(classify(pkt), L4::Esp { .. }), "not ESP");
    let mut p = pkt.to_vec();
    let (inner, _) = r
        .sa2_rx
        .decapsulate(&mut p)
        .expect("the UE's SA2 decrypts it");
    sip_of(&p[inner])
}

fn send(r: &mut Rig, kind: Kind, sip: &[u8]) -> Vec<(Side, Vec<u8>)> {
    let (side, pkt) = r.packet(kind, sip).unwrap();
    assert!(r.w.io().inject(side, &pkt));
    r.w.poll_once();
    r.w.io().take_sent()
}

/// The one message the worker sent for `sip`, to the core: (src, dst, SIP).
fn to_core(r: &mut Rig, kind: Kind, sip: &[u8]) -> (SocketAddr, SocketAddr, String) {
    let sent = send(r, kind, sip);
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    assert_eq!(sent[0].0, Side::Core);
    let (s, d, m) = sip_of(&sent[0].1);
    (s, d, String::from_utf8(m).unwrap())
}

/// The one message the worker sent the UE over SA2 for `sip` from the core.
fn to_ue(r: &mut Rig, sip: &[u8]) -> (SocketAddr, SocketAddr, String) {
    let sent = send(r, Kind::Core, sip);
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    assert_eq!(sent[0].0, Side::Ue);
    let (s, d, m) = over_sa2(r, &sent[0].1);
    (s, d, String::from_utf8(m).unwrap())
}

fn values(sip: &str, h: HeaderName) -> Vec<String> {
    let m = Message::parse_strict(sip.as_bytes()).unwrap_or_else(|e| panic!("{e:?}\n{sip}"));
    m.view()
        .values(h)
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
        .collect()
}

/// The answer of the far end to `req` (its Vias, From, To with a tag, Call-ID, CSeq), with
/// `extra` header lines.
fn answer(req: &str, code: u16, extra: &str) -> String {
    let m = Message::parse(req.as_bytes()).unwrap();
    let mut out = vec![0u8; 4096];
    let n =
        rules::build_response(m.view(), code, "X", b"far", &[extra.as_bytes()], &mut out).unwrap();
    String::from_utf8(out[..n].to_vec()).unwrap()
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.46.0.6\r\ns=-\r\nc=IN IP4 10.46.0.6\r\nt=0 0\r\nm=audio 49152 RTP/AVP 116\r\na=rtpmap:116 AMR-WB/16000\r\n";

/// A's INVITE to Bob over SA1, as a phone writes it (our address and port-s pre-loaded).
fn invite() -> String {
    format!(
        "INVITE sip:bob@ims.example.net SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKinv1;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:10.46.0.1:5103;lr>\r\n\
         From: <sip:alice@ims.example.net>;tag=a1\r\n\
         To: <sip:bob@ims.example.net>\r\n\
         Call-ID: call-1@10.46.0.6\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@10.46.0.6:7005>\r\n\
         P-Preferred-Identity: <sip:alice@ims.example.net>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

/// A request of A inside the call, with `route` as its Route header value.
fn in_dialog(method: &str, cseq: u32, route: &str) -> String {
    format!(
        "{method} sip:bob@10.0.9.9:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK{method}{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         Route: {route}\r\n\
         From: <sip:alice@ims.example.net>;tag=a1\r\n\
         To: <sip:bob@ims.example.net>;tag=b1\r\n\
         Call-ID: call-1@10.46.0.6\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// An originating call up to the UE's 200: the Record-Route the core saw, and the route set the
/// UE keeps (the 200's Record-Route reversed, RFC 3261 §12.1.2).
fn originate(r: &mut Rig) -> (Vec<String>, String) {
    let (src, dst, fwd) = to_core(r, Kind::EspPortC, invite().as_bytes());
    assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.30:6060")));
    let rr = values(&fwd, HeaderName::RecordRoute);
    // the S-CSCF record-routes too, above us; Bob's 200 carries the whole list
    let extra = format!(
        "Record-Route: {SCSCF_RR}\r\nRecord-Route: {}\r\nContact: <sip:bob@10.0.9.9:5060>\r\n",
        rr.join(", ")
    );
    let (src, dst, ok) = to_ue(r, answer(&fwd, 200, &extra).as_bytes());
    assert_eq!((src, dst), (addr("10.46.0.1:5102"), addr("10.46.0.6:7005")));
    let mut set = values(&ok, HeaderName::RecordRoute);
    set.reverse();
    (rr, set.join(", "))
}

#[test]
fn an_originating_invite_is_record_routed_with_both_of_our_entries() {
    let mut r = rig(false);
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, invite().as_bytes());
    let rr = values(&fwd, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{fwd}");
    // the interface the request leaves by on top (RFC 5658): the core-facing entry, then the
    // UE-facing one naming our UE-side address and port-s
    assert!(
        rr[0].starts_with("<sip:10.0.1.10:5060;lr;ftok=2"),
        "{}",
        rr[0]
    );
    assert!(
        rr[1].starts_with("<sip:10.46.0.1:5103;lr;ftok=1"),
        "{}",
        rr[1]
    );
    // the rest is the originating rewrite: the Service-Route, the asserted identity, our Via
    assert_eq!(
        values(&fwd, HeaderName::Route),
        ["<sip:orig@scscf.ims.example.net:6060;lr>"]
    );
    assert_eq!(
        values(&fwd, HeaderName::PAssertedIdentity),
        ["<sip:alice@ims.example.net>"]
    );
    assert_eq!(values(&fwd, HeaderName::Via).len(), 2);
    assert!(fwd.ends_with(SDP), "the SDP passes untouched");
}

#[test]
fn a_call_from_the_ue_sets_up_and_tears_down_over_its_sas() {
    let mut r = rig(false);
    let (rr, route_set) = originate(&mut r);
    // the 200 reached the UE with the Record-Route as the core sent it: ours still name port-s
    assert!(route_set.starts_with(&rr[1]), "{route_set}");
    assert!(route_set.ends_with(SCSCF_RR), "{route_set}");
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let req = in_dialog(method, cseq, &route_set);
        let (src, dst, fwd) = to_core(&mut r, Kind::EspPortC, req.as_bytes());
        // to the S-CSCF that record-routed the dialog, our entries popped (RFC 3261 §16.4)
        assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.30:6060")));
        assert_eq!(values(&fwd, HeaderName::Route), [SCSCF_RR], "{method}");
        assert_eq!(values(&fwd, HeaderName::Via).len(), 2, "{method}");
        // inside a dialog the identity is not asserted again (TS 24.229 §5.2.6.3.5)
        assert!(values(&fwd, HeaderName::PAssertedIdentity).is_empty());
        assert!(fwd.starts_with(&format!("{method} sip:bob@10.0.9.9:5060 SIP/2.0\r\n")));
    }
    let s = r.w.stats();
    assert_eq!(s.dialog_refused, 0);
    assert_eq!(s.drops[DropReason::ForeignDialog as usize], 0);
}

/// RFC 3263 §4.1: an S-CSCF whose Record-Route entry asks for TCP gets the UE's requests inside
/// the dialog over TCP (queued for the core TCP thread, our Via saying TCP), small as they are.
#[test]
fn a_dialog_whose_scscf_record_routed_with_tcp_gets_the_ues_requests_over_tcp() {
    let mut r = rig(false);
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, invite().as_bytes());
    let rr = values(&fwd, HeaderName::RecordRoute);
    let scscf = "<sip:scscf.ims.example.net:6060;lr;transport=tcp>";
    let extra = format!(
        "Record-Route: {scscf}\r\nRecord-Route: {}\r\nContact: <sip:bob@10.0.9.9:5060>\r\n",
        rr.join(", ")
    );
    let (_, _, ok) = to_ue(&mut r, answer(&fwd, 200, &extra).as_bytes());
    let mut set = values(&ok, HeaderName::RecordRoute);
    set.reverse();
    let bye = in_dialog("BYE", 2, &set.join(", "));
    assert!(send(&mut r, Kind::EspPortC, bye.as_bytes()).is_empty());
    let m = r.core_out.pop().expect("queued for the core over TCP");
    assert_eq!(
        m.protection,
        Protection::CoreStream {
            conn: pcscf::dataplane::NO_CONN
        }
    );
    assert_eq!(m.dst, addr("10.0.1.30:6060"));
    let text = String::from_utf8_lossy(m.bytes()).into_owned();
    assert!(text.starts_with("BYE "), "{text}");
    assert_eq!(values(&text, HeaderName::Route), [scscf]);
    assert!(
        values(&text, HeaderName::Via)[0].starts_with("SIP/2.0/TCP 10.0.1.10:5060;"),
        "{text}"
    );
    r.core_out.recycle(m);
}

/// A route set that goes around our entries, or whose tokens were altered, or that belongs to
/// another UE's registration: refused with 403 over the UE's own SA set (an ACK dropped), and
/// counted; nothing reaches the core.
#[test]
fn a_ue_cannot_use_a_route_set_that_is_not_its_own() {
    let mut r = rig(false);
    let (_, route_set) = originate(&mut r);
    let tampered = {
        // flip one hex digit of the UE-facing entry's tag
        let at = route_set.find('>').unwrap() - 1;
        let mut b = route_set.clone().into_bytes();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let first_two_swapped = {
        let parts: Vec<&str> = route_set.splitn(3, ", ").collect();
        format!("{}, {}, {}", parts[1], parts[0], parts[2])
    };
    let bad = [
        SCSCF_RR.to_string(),
        tampered.clone(),
        first_two_swapped,
        format!("<sip:10.46.0.1:5103;lr>, {SCSCF_RR}"),
    ];
    for (n, route) in bad.iter().enumerate() {
        let sent = send(
            &mut r,
            Kind::EspPortC,
            in_dialog("BYE", 3, route).as_bytes(),
        );
        assert_eq!(sent.len(), 1, "case {n}: {:?}", r.w.stats());
        assert_eq!(sent[0].0, Side::Ue, "case {n}: answered, not forwarded");
        let (_, dst, answer) = over_sa2(&r, &sent[0].1);
        assert_eq!(dst, addr("10.46.0.6:7005"));
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("SIP/2.0 403 "), "case {n}: {answer}");
        assert_eq!(r.w.stats().dialog_refused, n as u64 + 1);
    }
    // an ACK takes no answer: dropped and counted
    let sent = send(
        &mut r,
        Kind::EspPortC,
        in_dialog("ACK", 1, &tampered).as_bytes(),
    );
    assert!(sent.is_empty());
    assert_eq!(r.w.stats().drops[DropReason::ForeignDialog as usize], 1);
    // the genuine route set still works
    to_core(
        &mut r,
        Kind::EspPortC,
        in_dialog("BYE", 4, &route_set).as_bytes(),
    );

    // the same route set from the same address under another registration: the tokens verify
    // (same process key) but name another binding
    let mut other = rig_for(false, 2);
    let sent = send(
        &mut other,
        Kind::EspPortC,
        in_dialog("BYE", 5, &route_set).as_bytes(),
    );
    assert_eq!(sent.len(), 1);
    let (_, _, answer) = over_sa2(&other, &sent[0].1);
    assert!(
        String::from_utf8(answer)
            .unwrap()
            .starts_with("SIP/2.0 403 ")
    );
    assert_eq!(other.w.stats().dialog_refused, 1);
    // each refusal counted by its reason, for the operator (pcscf_dialog_refusals_total)
    assert_eq!(
        refusals(&r),
        [
            ("not_our_route", 1),
            ("no_token", 1),
            ("forged", 2),
            ("wrong_order", 1)
        ]
    );
    assert_eq!(refusals(&other), [("other_registration", 1)]);
}

/// The dialog refusals a worker counted, by reason name (zeros left out).
fn refusals(r: &Rig) -> Vec<(&'static str, u64)> {
    let s = r.w.stats();
    (0..pcscf::dataplane::DIALOG_REFUSALS)
        .filter(|&i| s.dialog_refusals[i] > 0)
        .map(|i| {
            (
                pcscf::dataplane::dialog_refusal_name(i),
                s.dialog_refusals[i],
            )
        })
        .collect()
}

/// A UE's dialog-creating request that carries a Record-Route of its own is refused (only
/// proxies record-route, RFC 3261 §16.6 item 4).
#[test]
fn an_invite_with_a_record_route_of_the_ues_is_refused() {
    let mut r = rig(false);
    let inv = invite().replacen(
        "Call-ID:",
        "Record-Route: <sip:192.0.2.66;lr>\r\nCall-ID:",
        1,
    );
    let sent = send(&mut r, Kind::EspPortC, inv.as_bytes());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Side::Ue);
    let (_, _, answer) = over_sa2(&r, &sent[0].1);
    assert!(
        String::from_utf8(answer)
            .unwrap()
            .starts_with("SIP/2.0 403 ")
    );
    assert_eq!(r.w.stats().dialog_refused, 1);
    assert_eq!(refusals(&r), [("record_route_present", 1)]);
}

/// A 200 from the core whose Record-Route lost or altered our entries does not reach the UE.
#[test]
fn a_core_answer_with_our_record_route_altered_is_dropped() {
    let mut r = rig(false);
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, invite().as_bytes());
    let rr = values(&fwd, HeaderName::RecordRoute);
    let only_ue = format!("Record-Route: {SCSCF_RR}, {}\r\n", rr[1]);
    let forged = format!(
        "Record-Route: {}, {}\r\n",
        rr[0],
        rr[1].replacen("ftok=1", "ftok=2", 1)
    );
    for (n, extra) in [only_ue, forged].iter().enumerate() {
        let sent = send(&mut r, Kind::Core, answer(&fwd, 200, extra).as_bytes());
        assert!(sent.is_empty(), "case {n}");
        assert_eq!(
            r.w.stats().drops[DropReason::ForeignDialog as usize],
            n as u64 + 1
        );
    }
    assert_eq!(refusals(&r), [("forged", 1), ("half_pair", 1)]);
}

/// The core's INVITE to the UE (by our Path) with the S-CSCF's Record-Route.
fn core_invite() -> String {
    format!(
        "INVITE sip:alice@10.46.0.6:7005 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKt1\r\n\
         Max-Forwards: 68\r\n\
         Route: <sip:term@10.0.1.10:5060;lr>\r\n\
         Record-Route: {SCSCF_RR}\r\n\
         From: <sip:bob@ims.example.net>;tag=b9\r\n\
         To: <sip:alice@ims.example.net>\r\n\
         Call-ID: call-2@core\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:bob@10.0.9.9:5060>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn core_in_dialog(method: &str, cseq: u32, route: &str) -> String {
    format!(
        "{method} sip:alice@10.46.0.6:7005 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKt{method}{cseq}\r\n\
         Max-Forwards: 68\r\n\
         Route: {route}\r\n\
         From: <sip:bob@ims.example.net>;tag=b9\r\n\
         To: <sip:alice@ims.example.net>;tag=a9\r\n\
         Call-ID: call-2@core\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_call_to_the_ue_sets_up_and_tears_down_over_its_sas() {
    for answered_over in [Kind::EspPortS, Kind::EspPortC] {
        let mut r = rig(false);
        let (_, dst, inv) = to_ue(&mut r, core_invite().as_bytes());
        assert_eq!(dst, addr("10.46.0.6:7005"));
        // our Path entry popped; our two entries above the S-CSCF's, the UE-facing one on top
        assert!(values(&inv, HeaderName::Route).is_empty(), "{inv}");
        let rr = values(&inv, HeaderName::RecordRoute);
        assert_eq!(rr.len(), 3, "{inv}");
        assert!(
            rr[0].starts_with("<sip:10.46.0.1:5103;lr;ftok=1"),
            "{}",
            rr[0]
        );
        assert!(
            rr[1].starts_with("<sip:10.0.1.10:5060;lr;ftok=2"),
            "{}",
            rr[1]
        );
        assert_eq!(rr[2], SCSCF_RR);
        assert!(inv.ends_with(SDP));
        // the UE answers with the Record-Route it was given (RFC 3261 §12.1.1)
        let extra = format!(
            "Record-Route: {}\r\nContact: <sip:alice@10.46.0.6:7005>\r\n",
            rr.join(", ")
        );
        let (src, dst, ok) = to_core(&mut r, answered_over, answer(&inv, 200, &extra).as_bytes());
        // back where the request came from (RFC 3581: received, the sent-by port)
        assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:6060")));
        assert_eq!(values(&ok, HeaderName::RecordRoute), rr);
        assert_eq!(values(&ok, HeaderName::Via).len(), 1);
        // the core's route set: the Record-Route as it is (RFC 3261 §12.1.1)
        let core_set = format!("{}, {}", rr[1], rr[0]);
        let (_, dst, bye) = to_ue(&mut r, core_in_dialog("BYE", 2, &core_set).as_bytes());
        assert_eq!(dst, addr("10.46.0.6:7005"));
        assert!(values(&bye, HeaderName::Route).is_empty(), "{bye}");
        assert!(bye.starts_with("BYE sip:alice@10.46.0.6:7005 SIP/2.0\r\n"));
        // a route set without our core-facing entry is refused back to the core
        let sent = send(
            &mut r,
            Kind::Core,
            core_in_dialog("BYE", 3, &rr[0]).as_bytes(),
        );
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, Side::Core);
        let (_, _, refused) = sip_of(&sent[0].1);
        assert!(refused.starts_with(b"SIP/2.0 403 "));
        assert_eq!(r.w.stats().dialog_refused, 1);
    }
}

/// The UE cannot answer the core's INVITE with a Record-Route of its own making.
#[test]
fn a_ue_answer_with_a_foreign_record_route_is_dropped() {
    let mut r = rig(false);
    let (_, _, inv) = to_ue(&mut r, core_invite().as_bytes());
    let rr = values(&inv, HeaderName::RecordRoute);
    let cases = [
        format!("Record-Route: <sip:192.0.2.66;lr>, {}\r\n", rr.join(", ")),
        format!("Record-Route: {}, {}\r\n", rr[1], rr[0]),
        format!("Record-Route: {SCSCF_RR}\r\n"),
    ];
    for (n, extra) in cases.iter().enumerate() {
        let sent = send(&mut r, Kind::EspPortS, answer(&inv, 200, extra).as_bytes());
        assert!(sent.is_empty(), "case {n}");
        assert_eq!(
            r.w.stats().drops[DropReason::ForeignDialog as usize],
            n as u64 + 1,
            "case {n}"
        );
    }
}

/// A whole call through the worker, both ways, allocates nothing per packet: the INVITE, the
/// 200, the ACK and the BYE from the UE, the core's INVITE and BYE to the UE, the UE's 200, and
/// a refused BYE (its 403 included).
#[test]
fn call_paths_do_not_allocate() {
    let mut r = rig(false);
    let (_, route_set) = originate(&mut r);
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, invite().as_bytes());
    let rr = values(&fwd, HeaderName::RecordRoute);
    let extra = format!(
        "Record-Route: {SCSCF_RR}\r\nRecord-Route: {}\r\n",
        rr.join(", ")
    );
    let ok = answer(&fwd, 200, &extra);
    let (_, _, inv) = to_ue(&mut r, core_invite().as_bytes());
    let trr = values(&inv, HeaderName::RecordRoute);
    let ue_ok = answer(&inv, 200, &format!("Record-Route: {}\r\n", trr.join(", ")));
    let core_bye = core_in_dialog("BYE", 2, &format!("{}, {}", trr[1], trr[0]));
    let before = *r.w.stats();
    for round in 0..3 {
        // fresh ESP sequence numbers each round (a replayed packet is dropped)
        let pkts = [
            r.packet(Kind::EspPortC, invite().as_bytes()).unwrap(),
            r.packet(Kind::Core, ok.as_bytes()).unwrap(),
            r.packet(Kind::EspPortC, in_dialog("ACK", 1, &route_set).as_bytes())
                .unwrap(),
            r.packet(Kind::EspPortC, in_dialog("BYE", 2, &route_set).as_bytes())
                .unwrap(),
            r.packet(Kind::Core, core_invite().as_bytes()).unwrap(),
            r.packet(Kind::EspPortS, ue_ok.as_bytes()).unwrap(),
            r.packet(Kind::Core, core_bye.as_bytes()).unwrap(),
            r.packet(Kind::EspPortC, in_dialog("BYE", 3, SCSCF_RR).as_bytes())
                .unwrap(),
        ];
        for (side, p) in &pkts {
            assert!(r.w.io().inject(*side, p));
        }
        let n = crate::support::alloc::count();
        r.w.poll_once();
        let allocs = crate::support::alloc::count() - n;
        assert_eq!(allocs, 0, "round {round}: {allocs} allocations in a batch");
        r.w.io().discard_sent();
    }
    let s = r.w.stats();
    assert_eq!(s.forwarded - before.forwarded, 3 * 7, "{s:?}");
    assert_eq!(s.dialog_refused - before.dialog_refused, 3);
    assert_eq!(s.dropped(), before.dropped(), "{s:?}");
}

/// CANCEL follows its INVITE (RFC 3261 §9.1): the same next hop, the same Route, and the same
/// branch on our Via (the stateless hash of RFC 3261 §16.11 covers the top Via and Call-ID,
/// which the CANCEL shares), so the S-CSCF matches it to the INVITE's transaction; it is not
/// record-routed.
#[test]
fn a_cancel_goes_the_way_of_its_invite() {
    let mut r = rig(false);
    let (_, inv_dst, inv) = to_core(&mut r, Kind::EspPortC, invite().as_bytes());
    let cancel = "CANCEL sip:bob@ims.example.net SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKinv1;rport\r\n\
         Max-Forwards: 70\r\n\
         Route: <sip:10.46.0.1:5103;lr>\r\n\
         From: <sip:alice@ims.example.net>;tag=a1\r\n\
         To: <sip:bob@ims.example.net>\r\n\
         Call-ID: call-1@10.46.0.6\r\n\
         CSeq: 1 CANCEL\r\n\
         Content-Length: 0\r\n\r\n";
    let (_, dst, fwd) = to_core(&mut r, Kind::EspPortC, cancel.as_bytes());
    assert_eq!(dst, inv_dst);
    assert_eq!(
        values(&fwd, HeaderName::Route),
        values(&inv, HeaderName::Route)
    );
    assert_eq!(
        values(&fwd, HeaderName::Via)[0],
        values(&inv, HeaderName::Via)[0],
        "the same branch as the INVITE's"
    );
    assert!(values(&fwd, HeaderName::RecordRoute).is_empty());
}

/// Our edits of a big INVITE (Via, two Record-Route entries, P-Asserted-Identity) never use the
/// room the lower layers need around it: whatever the sizes, the INVITE leaves for the core
/// (a regression: edits that grew the head into the headroom left no room for the IP and UDP
/// headers, and some INVITEs were dropped as no_room). The removed Route entry's length moves
/// where the head edits leave the message, so a sweep over it finds any frame offset that
/// does not fit.
#[test]
fn big_invites_are_edited_without_eating_the_lower_layers_room() {
    let mut r = rig(false);
    let line = "a=fmtp:107 octet-align=1;mode-change-capability=2;max-red=0\r\n";
    for n in 0..640usize {
        let mut sdp = String::from(SDP);
        for _ in 0..n % 20 {
            sdp.push_str(line);
        }
        sdp.push_str(&"a=x\r\n".repeat(n / 20));
        let inv = invite()
            .replace("call-1@", &format!("call-{n:04}-1@"))
            .replace("tag=a1", &format!("tag=a{}", "1".repeat(n / 20)))
            .replace(";lr>", &format!(";lr;x={}>", "y".repeat(n % 64)))
            .replace("branch=z9hG4bKinv1", &format!("branch=z9hG4bKinv{n:08}"))
            .replace(
                &format!("Content-Length: {}\r\n\r\n{SDP}", SDP.len()),
                &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
            );
        let sent = send(&mut r, Kind::EspPortC, inv.as_bytes());
        assert_eq!(
            sent.len(),
            1,
            "INVITE {n} ({} bytes): {:?}",
            inv.len(),
            r.w.stats()
        );
        let (_, _, fwd) = sip_of(&sent[0].1);
        assert!(fwd.ends_with(sdp.as_bytes()));
    }
    assert_eq!(r.w.stats().dropped(), 0);
}

/// RFC 3261 §16.5: a request from the core for a UE we cannot reach is answered from our core
/// address — 480 for a contact with no SA set (expired, de-registered, never registered here),
/// 404 for a Request-URI that is no contact address — and counted; an ACK is dropped. None of
/// them reaches the registration thread.
#[test]
fn a_request_for_a_ue_we_cannot_reach_is_answered_480_or_404() {
    let mut r = rig(false);
    let cases = [
        ("sip:alice@10.46.0.6:7005", "sip:alice@10.46.0.99:7005", 480),
        ("sip:alice@10.46.0.6:7005", "sip:alice@10.46.0.6:7777", 480),
        (
            "sip:alice@10.46.0.6:7005",
            "sip:alice@[fd00:46::99]:7005",
            480,
        ),
        ("sip:alice@10.46.0.6:7005", "sip:alice@ims.example.net", 404),
        ("sip:alice@10.46.0.6:7005", "tel:+15550100", 404),
    ];
    for (n, (from, to, code)) in cases.into_iter().enumerate() {
        let inv = core_invite().replacen(from, to, 1);
        let sent = send(&mut r, Kind::Core, inv.as_bytes());
        assert_eq!(sent.len(), 1, "{to}: {:?}", r.w.stats());
        assert_eq!(sent[0].0, Side::Core);
        let (src, dst, ans) = sip_of(&sent[0].1);
        assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:5060")));
        let ans = String::from_utf8(ans).unwrap();
        assert!(ans.starts_with(&format!("SIP/2.0 {code} ")), "{to}: {ans}");
        assert_eq!(
            values(&ans, HeaderName::Via),
            ["SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKt1"]
        );
        assert_eq!(r.w.stats().ue_unreachable, n as u64 + 1);
    }
    let ack = core_in_dialog("ACK", 1, "<sip:10.0.1.10:5060;lr>")
        .replace("10.46.0.6:7005", "10.46.0.99:7005");
    assert!(send(&mut r, Kind::Core, ack.as_bytes()).is_empty());
    let s = r.w.stats();
    assert_eq!(s.drops[DropReason::NotRegistered as usize], 1);
    assert_eq!((s.punted, s.ue_unreachable, s.replied), (0, 5, 5));
}

/// A call outlives a re-authentication (TS 33.203 §7.4): the new SA set keeps our port-s and
/// gets a new port-c, so the route set the UE learnt before still names our port-s; once the
/// old set is gone, the UE's BYE over the new set is routed by it, and the answer goes back
/// over the new set.
#[test]
fn a_call_outlives_a_new_sa_set_that_keeps_our_port_s() {
    use crate::support::worker::{OUR_PORT_S, UE, sa, udp};
    use pcscf::esp::Frame;
    use pcscf::satable::{EntryMeta, SetPorts, SetState};

    let mut r = rig(false);
    let (_, route_set) = originate(&mut r);
    assert!(
        route_set.contains(&format!("10.46.0.1:{OUR_PORT_S};")),
        "{route_set}"
    );
    // the new set: our port-s kept, port-c 5104 new; the UE's port-c 7006 new, port-s 7005
    let ue = UE.parse().unwrap();
    let ports = SetPorts {
        c: 5104,
        s: OUR_PORT_S,
    };
    let meta = |ue_port, local_port| EntryMeta {
        ue_addr: ue,
        ue_port,
        ue_ports: SetPorts::default(),
        local_port,
        ports,
        binding: 1,
        state: SetState::New,
    };
    let spi1 = r.writer.reserve_spi().unwrap();
    r.writer
        .install_inbound(sa(spi1), &meta(7006, OUR_PORT_S))
        .unwrap();
    r.writer
        .install_outbound(sa(0x8000_0012), &meta(7005, 5104))
        .unwrap();
    r.writer
        .install_outbound(sa(0x8000_0013), &meta(7006, OUR_PORT_S))
        .unwrap();
    r.writer
        .set_inbound_registration(spi1, Some(r.reg.clone()))
        .unwrap();
    // the old set goes
    r.writer.remove_inbound(r.sa1_tx.spi()).unwrap();
    // the UE's BYE over the new SA1: from its new port-c to our (same) port-s
    let bye = in_dialog("BYE", 2, &route_set);
    let inner = udp(
        SocketAddr::new(ue, 7006),
        SocketAddr::new("10.46.0.1".parse().unwrap(), OUR_PORT_S),
        bye.as_bytes(),
    );
    let mut buf = vec![0u8; 256 + inner.len() + 256];
    buf[256..256 + inner.len()].copy_from_slice(&inner);
    let mut f = Frame::new(&mut buf, 256, 256 + inner.len());
    sa(spi1).outbound(&mut f).unwrap();
    let (s, e) = (f.start, f.end);
    assert!(r.w.io().inject(Side::Ue, &buf[s..e]));
    r.w.poll_once();
    let sent = r.w.io().take_sent();
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let (_, dst, fwd) = sip_of(&sent[0].1);
    assert_eq!(dst, addr("10.0.1.30:6060"));
    let fwd = String::from_utf8(fwd).unwrap();
    assert_eq!(values(&fwd, HeaderName::Route), [SCSCF_RR]);
    // the 200 goes back over the new set's SA2: our new port-c → the UE's port-s
    let ok = answer(&fwd, 200, "");
    let sent = send(&mut r, Kind::Core, ok.as_bytes());
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let mut p = sent[0].1.clone();
    let (inner, _) = sa(0x8000_0012)
        .decapsulate(&mut p)
        .expect("over the new SA2");
    let (src, dst, _) = sip_of(&p[inner]);
    assert_eq!((src, dst), (addr("10.46.0.1:5104"), addr("10.46.0.6:7005")));
}

/// Charging headers stay inside the network (RFC 7315; TS 24.229 §5.2.6.3, §5.2.6.4): a UE's
/// P-Charging-Vector or P-Charging-Function-Addresses never reaches the core — its dialog and
/// standalone requests carry one charging vector, ours, with an icid unique per request — and
/// the core's never reach the UE, in requests or responses, either way of a call.
#[test]
fn charging_headers_never_cross_the_trust_boundary() {
    let mut r = rig(false);
    let forged = "P-Charging-Vector: icid-value=free-calls;orig-ioi=evil\r\nP-Charging-Function-Addresses: ccf=10.9.9.9\r\n";
    let with = |sip: &str| {
        sip.replacen(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\n{forged}"),
            1,
        )
    };
    let mut icids = Vec::new();
    for n in 0..2 {
        let inv = with(&invite()).replace("call-1@", &format!("call-pcv{n}@"));
        let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, inv.as_bytes());
        let pcv = values(&fwd, HeaderName::PChargingVector);
        assert_eq!(pcv.len(), 1, "{fwd}");
        let icid = pcv[0].strip_prefix("icid-value=").expect("ours");
        assert!(
            icid.len() == 32 && icid.bytes().all(|b| b.is_ascii_hexdigit()),
            "{icid}"
        );
        assert!(values(&fwd, HeaderName::PChargingFunctionAddresses).is_empty());
        icids.push(icid.to_string());
        // the core's answer with its charging headers: none reach the UE
        let ok = answer(&fwd, 180, forged);
        let (_, _, ring) = to_ue(&mut r, ok.as_bytes());
        assert!(
            values(&ring, HeaderName::PChargingVector).is_empty(),
            "{ring}"
        );
        assert!(values(&ring, HeaderName::PChargingFunctionAddresses).is_empty());
    }
    assert_ne!(icids[0], icids[1]);
    // in a dialog: the UE's are removed, none added
    let (_, route_set) = originate(&mut r);
    let bye = with(&in_dialog("BYE", 2, &route_set));
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, bye.as_bytes());
    assert!(
        values(&fwd, HeaderName::PChargingVector).is_empty(),
        "{fwd}"
    );
    assert!(values(&fwd, HeaderName::PChargingFunctionAddresses).is_empty());
    // toward the UE: a terminating INVITE and its in-dialog requests lose the core's
    let inv = core_invite().replacen(
        "Max-Forwards: 68\r\n",
        &format!("Max-Forwards: 68\r\n{forged}"),
        1,
    );
    let (_, _, got) = to_ue(&mut r, inv.as_bytes());
    assert!(
        values(&got, HeaderName::PChargingVector).is_empty(),
        "{got}"
    );
    assert!(values(&got, HeaderName::PChargingFunctionAddresses).is_empty());
    // and the UE's answer loses what the UE wrote
    let ring = answer(&got, 180, forged);
    let sent = send(&mut r, Kind::EspPortC, ring.as_bytes());
    assert_eq!(sent.len(), 1, "{:?}", r.w.stats());
    let (_, _, fwd) = sip_of(&sent[0].1);
    let fwd = String::from_utf8(fwd).unwrap();
    assert!(
        values(&fwd, HeaderName::PChargingVector).is_empty(),
        "{fwd}"
    );
    assert!(values(&fwd, HeaderName::PChargingFunctionAddresses).is_empty());
}

/// The dialog events a worker queued: (the side the message came from, its binding, the
/// message).
fn dialog_events(r: &Rig) -> Vec<(Side, u64, String)> {
    std::iter::from_fn(|| r.events.pop())
        .map(|b| {
            let (binding, msg) = pcscf::dataplane::split_dialog_event(b.bytes()).unwrap();
            let out = (b.side, binding, String::from_utf8(msg.to_vec()).unwrap());
            r.events.recycle(b);
            out
        })
        .collect()
}

/// The messages that move a dialog reach the registration thread's dialog book, tagged with
/// the registration: the INVITE, its final response, the requests inside the dialog but ACK;
/// nothing else (TS 24.229 §5.2.8: it releases the calls of a registration that ends).
#[test]
fn a_call_reports_its_dialog_events_to_the_registration_thread() {
    let mut r = rig(false);
    let (_, route_set) = originate(&mut r);
    let mut bye = String::new();
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let req = in_dialog(method, cseq, &route_set);
        bye = to_core(&mut r, Kind::EspPortC, req.as_bytes()).2;
    }
    let _ = to_ue(&mut r, answer(&bye, 200, "").as_bytes());
    // a terminating call, answered and released by the core
    let (_, _, inv) = to_ue(&mut r, core_invite().as_bytes());
    let _ = to_ue(&mut r, core_invite().as_bytes()); // a retransmission: a second event
    let rr = values(&inv, HeaderName::RecordRoute);
    let extra = format!(
        "Record-Route: {}\r\nContact: <sip:alice@10.46.0.6:7005>\r\n",
        rr.join(", ")
    );
    let _ = to_core(&mut r, Kind::EspPortS, answer(&inv, 180, &extra).as_bytes());
    let _ = to_core(&mut r, Kind::EspPortS, answer(&inv, 486, &extra).as_bytes());
    let got: Vec<(Side, u64, String)> = dialog_events(&r)
        .into_iter()
        .map(|(side, b, m)| (side, b, m.lines().next().unwrap().to_string()))
        .collect();
    let want = [
        (Side::Ue, "INVITE sip:bob@ims.example.net SIP/2.0"),
        (Side::Core, "SIP/2.0 200 X"),
        (Side::Ue, "BYE sip:bob@10.0.9.9:5060 SIP/2.0"),
        (Side::Core, "INVITE sip:alice@10.46.0.6:7005 SIP/2.0"),
        (Side::Core, "INVITE sip:alice@10.46.0.6:7005 SIP/2.0"),
        (Side::Ue, "SIP/2.0 486 X"),
    ]
    .map(|(s, l)| (s, 1, l.to_string()));
    assert_eq!(got, want);
    let s = r.w.stats();
    assert_eq!((s.dialog_events, s.dialog_events_lost), (6, 0));
}

/// Answers to the BYEs of a release carry a branch of the registration thread's format: a
/// worker hands them to it (the core's, and the UE's over its SA), never relays them.
#[test]
fn answers_to_a_release_go_to_the_registration_thread() {
    let mut r = rig(false);
    let answer_with = |via: &str| {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-rel-00000000000000010123456789abcdef\r\n\
             From: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>;tag=b1\r\n\
             Call-ID: call-1@10.46.0.6\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let before = r.punt.len();
    assert!(send(&mut r, Kind::Core, answer_with("10.0.1.10:5060").as_bytes()).is_empty());
    assert!(
        send(
            &mut r,
            Kind::EspPortS,
            answer_with("10.46.0.1:5102").as_bytes()
        )
        .is_empty()
    );
    assert_eq!(r.punt.len(), before + 2);
    // a response with our Via in the workers' format that does not verify is still dropped
    let forged = answer_with("10.0.1.10:5060").replace("-rel-", "");
    assert!(send(&mut r, Kind::Core, forged.as_bytes()).is_empty());
    assert_eq!(r.punt.len(), before + 2);
    assert_eq!(r.w.stats().drops[DropReason::NotOurVia as usize], 1);
}

/// TS 24.229 §5.2.8.1.2 [spec-m]: when a UE de-registers, pcscf releases its calls — a BYE
/// toward the core on the UE's behalf and one toward the UE over its SA on the far end's,
/// each with the dialog's identifiers, route set and next CSeq. The calls are the ones the
/// worker reported (originating and terminating); a failed one and one already hung up are not
/// released, two still ringing are cancelled; the answers are counted and nothing is relayed.
#[test]
fn a_de_registration_releases_the_calls_the_workers_reported() {
    use crate::registration_flow::{deregister, register, world};
    let mut w = world();
    let c = register(&mut w);
    let binding = w.sas.pin().inbound(c.spi_ps).unwrap().binding();
    let mut r = rig_for(false, binding);
    // 1. an originating call; the far end re-INVITEs (CSeq 7) through the core
    let (rr, _) = originate(&mut r);
    let reinvite = format!(
        "INVITE sip:alice@10.46.0.6:7005 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKre7\r\nMax-Forwards: 68\r\n\
         Route: {}\r\nFrom: <sip:bob@ims.example.net>;tag=far\r\n\
         To: <sip:alice@ims.example.net>;tag=a1\r\nCall-ID: call-1@10.46.0.6\r\n\
         CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        rr.join(", ")
    );
    let _ = to_ue(&mut r, reinvite.as_bytes());
    // 2. a terminating call, answered by the UE
    let (_, _, inv) = to_ue(&mut r, core_invite().as_bytes());
    let rr2 = values(&inv, HeaderName::RecordRoute);
    let extra = format!(
        "Record-Route: {}\r\nContact: <sip:alice@10.46.0.6:7005>\r\n",
        rr2.join(", ")
    );
    let ok = answer(&inv, 200, &extra);
    let ue_tag = tag_of(&ok);
    let _ = to_core(&mut r, Kind::EspPortS, ok.as_bytes());
    // 3. a call that fails, 4. one hung up before the de-registration
    let failing = invite().replace("call-1@", "call-3@");
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, failing.as_bytes());
    let _ = to_ue(&mut r, answer(&fwd, 486, "").as_bytes());
    let ended = invite().replace("call-1@", "call-4@");
    let (_, _, fwd) = to_core(&mut r, Kind::EspPortC, ended.as_bytes());
    let extra = format!(
        "Record-Route: {SCSCF_RR}, {}\r\nContact: <sip:bob@10.0.9.9:5060>\r\n",
        values(&fwd, HeaderName::RecordRoute).join(", ")
    );
    let ok4 = to_ue(&mut r, answer(&fwd, 200, &extra).as_bytes()).2;
    let mut set4 = values(&ok4, HeaderName::RecordRoute);
    set4.reverse();
    let bye4 = in_dialog("BYE", 2, &set4.join(", ")).replace("call-1@", "call-4@");
    let bye4 = bye4.replace("tag=b1", &format!("tag={}", tag_of(&ok4)));
    let _ = to_core(&mut r, Kind::EspPortC, bye4.as_bytes());
    // 5. the UE's INVITE and 6. the core's, both still ringing
    let ringing = invite().replace("call-1@", "call-5@");
    let (_, _, fwd5) = to_core(&mut r, Kind::EspPortC, ringing.as_bytes());
    let inv6 = core_invite().replace("call-2@", "call-6@");
    let (_, _, fwd6) = to_ue(&mut r, inv6.as_bytes());
    let rr6 = values(&fwd6, HeaderName::RecordRoute).join(", ");
    let ringing6 = answer(&fwd6, 180, &format!("Record-Route: {rr6}\r\n"));
    let _ = to_core(&mut r, Kind::EspPortS, ringing6.as_bytes());

    to_the_book(&r, &mut w);
    let st = w.reg.dialog_stats();
    assert_eq!((st.confirmed, st.failed, st.ended), (3, 1, 1), "{st:?}");
    assert_eq!(w.reg.dialogs(), 2);
    assert_eq!(w.reg.dialogs_of(c.spi_ps), 2);

    let out = deregister(&mut w, &c);
    // the ringing calls are cancelled where their INVITE went, with its Via (RFC 3261 §9.1)
    let cancels: Vec<(&Outgoing, String)> = out
        .iter()
        .filter(|o| o.payload.starts_with(b"CANCEL "))
        .map(|o| (o, String::from_utf8(o.payload.clone()).unwrap()))
        .collect();
    assert_eq!(cancels.len(), 2, "{out:?}");
    let (o, t) = cancels.iter().find(|(o, _)| o.side == Side::Core).unwrap();
    assert_eq!(o.src, addr("10.0.1.10:5060"));
    assert!(
        t.starts_with("CANCEL sip:bob@ims.example.net SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(
        values(t, HeaderName::Via),
        values(&fwd5, HeaderName::Via)[..1]
    );
    assert_eq!(
        values(t, HeaderName::Route),
        values(&fwd5, HeaderName::Route)
    );
    assert_eq!(values(t, HeaderName::CallId), ["call-5@10.46.0.6"]);
    assert_eq!(values(t, HeaderName::CSeq), ["1 CANCEL"]);
    assert_eq!(values(t, HeaderName::To), ["<sip:bob@ims.example.net>"]);
    let (o, t) = cancels.iter().find(|(o, _)| o.side == Side::Ue).unwrap();
    assert!(matches!(o.protection, Protection::Protected { .. }));
    assert_eq!(o.dst, addr("10.46.0.6:7005"));
    assert!(
        t.starts_with("CANCEL sip:alice@10.46.0.6:7005 SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(
        values(t, HeaderName::Via),
        values(&fwd6, HeaderName::Via)[..1]
    );
    assert!(values(t, HeaderName::Route).is_empty());
    assert_eq!(values(t, HeaderName::CSeq), ["1 CANCEL"]);
    let byes: Vec<&Outgoing> = out
        .iter()
        .filter(|o| o.payload.starts_with(b"BYE "))
        .collect();
    assert_eq!(byes.len(), 4, "{out:?}");
    let text = |o: &Outgoing| String::from_utf8(o.payload.clone()).unwrap();
    let of = |call: &str, side: Side| {
        byes.iter()
            .find(|o| o.side == side && text(o).contains(&format!("Call-ID: {call}\r\n")))
            .map(|o| (*o, text(o)))
            .unwrap_or_else(|| panic!("no BYE of {call} toward {side:?}"))
    };
    // call 1 toward the core, on the calling UE's behalf: the far end's contact, the route set
    // beyond our entries (the S-CSCF's), the UE's CSeq + 1
    let (o, t) = of("call-1@10.46.0.6", Side::Core);
    assert_eq!(
        (o.src, o.protection),
        (addr("10.0.1.10:5060"), Protection::Plain)
    );
    assert!(
        t.starts_with("BYE sip:bob@10.0.9.9:5060 SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(values(&t, HeaderName::Route), [SCSCF_RR]);
    assert_eq!(
        values(&t, HeaderName::From),
        ["<sip:alice@ims.example.net>;tag=a1"]
    );
    assert!(values(&t, HeaderName::To)[0].starts_with("<sip:bob@ims.example.net>;tag="));
    assert_eq!(values(&t, HeaderName::CSeq), ["2 BYE"]);
    assert!(t.contains("\r\nReason: SIP;cause=480;"), "{t}");
    let via = &values(&t, HeaderName::Via)[0];
    assert!(
        via.starts_with("SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK-rel-"),
        "{via}"
    );
    // ...and toward the UE over its SA, on the far end's behalf, above the far end's CSeq 7
    let (o, t) = of("call-1@10.46.0.6", Side::Ue);
    assert!(matches!(o.protection, Protection::Protected { .. }));
    assert_eq!(o.dst, addr("10.46.0.6:7005"));
    assert_eq!(o.src, addr(&format!("10.46.0.1:{}", c.port_pc)));
    assert!(
        t.starts_with("BYE sip:alice@10.46.0.6:7005 SIP/2.0\r\n"),
        "{t}"
    );
    assert!(values(&t, HeaderName::Route).is_empty());
    assert_eq!(
        values(&t, HeaderName::To),
        ["<sip:alice@ims.example.net>;tag=a1"]
    );
    assert_eq!(values(&t, HeaderName::CSeq), ["8 BYE"]);
    // call 2 (the UE was called): toward the core the caller's contact and the core's
    // Record-Route beyond ours, in order; the UE never sent a request in it (CSeq 1)
    let (_, t) = of("call-2@core", Side::Core);
    assert!(
        t.starts_with("BYE sip:bob@10.0.9.9:5060 SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(values(&t, HeaderName::Route), [SCSCF_RR]);
    assert_eq!(
        values(&t, HeaderName::From),
        [format!("<sip:alice@ims.example.net>;tag={ue_tag}")]
    );
    assert_eq!(
        values(&t, HeaderName::To),
        ["<sip:bob@ims.example.net>;tag=b9"]
    );
    assert_eq!(values(&t, HeaderName::CSeq), ["1 BYE"]);
    let (_, t) = of("call-2@core", Side::Ue);
    assert_eq!(
        values(&t, HeaderName::From),
        ["<sip:bob@ims.example.net>;tag=b9"]
    );
    assert_eq!(values(&t, HeaderName::CSeq), ["2 BYE"]);
    assert_eq!(w.reg.dialogs(), 0);
    let st = w.reg.dialog_stats();
    assert_eq!(
        (st.released, st.release_bye_core, st.release_bye_ue),
        (2, 2, 2)
    );

    // the answers: counted, nothing sent; one with a branch we did not make is forged
    for o in &byes {
        let ok = answer(&text(o), 200, "");
        let from = if o.side == Side::Core {
            "10.0.1.20:5060"
        } else {
            "10.46.0.6:7005"
        };
        let msg = Incoming {
            side: o.side,
            protection: o.protection,
            src: addr(from),
            dst: o.src,
            payload: ok.as_bytes(),
        };
        w.reg.handle_message(msg, w.now);
    }
    let forged = answer(&text(byes[0]), 200, "").replacen("z9hG4bK-rel-0", "z9hG4bK-rel-1", 1);
    let msg = Incoming {
        side: Side::Core,
        protection: Protection::Plain,
        src: addr("10.0.1.20:5060"),
        dst: addr("10.0.1.10:5060"),
        payload: forged.as_bytes(),
    };
    w.reg.handle_message(msg, w.now);
    assert!(w.reg.poll_transmit().is_none());
    let st = w.reg.dialog_stats();
    assert_eq!((st.release_answered, st.release_forged), (4, 1), "{st:?}");
}

/// Hand the dialog events the rig's worker queued to the registrar of `w`, as the daemon's
/// registration thread does (the binding each carries is the rig's).
fn to_the_book(r: &Rig, w: &mut crate::registration_flow::World) {
    while let Some(b) = r.events.pop() {
        w.reg.handle_dialog_event(b.side, b.bytes(), w.now);
        r.events.recycle(b);
    }
}

/// The To tag of a response.
fn tag_of(resp: &str) -> String {
    let to = &values(resp, HeaderName::To)[0];
    to.split("tag=").nth(1).unwrap().to_string()
}

/// A registration that expires (no refresh) releases its calls toward the core only: its SA
/// set goes with it, so the UE is not reached any more (TS 24.229 §5.2.8 [spec-m]).
#[test]
fn an_expired_registration_releases_its_calls_toward_the_core() {
    use crate::registration_flow::{register, world};
    let mut w = world();
    let c = register(&mut w);
    let binding = w.sas.pin().inbound(c.spi_ps).unwrap().binding();
    let mut r = rig_for(false, binding);
    let _ = originate(&mut r);
    to_the_book(&r, &mut w);
    assert_eq!(w.reg.dialogs(), 1);
    // nothing before the set's end (expires 3600 + 30 s of grace)
    w.reg
        .handle_timeout(w.now + std::time::Duration::from_secs(3600));
    assert!(w.reg.poll_transmit().is_none());
    w.reg
        .handle_timeout(w.now + std::time::Duration::from_secs(3631));
    let out: Vec<Outgoing> = std::iter::from_fn(|| w.reg.poll_transmit()).collect();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].side, Side::Core);
    assert!(
        out[0]
            .payload
            .starts_with(b"BYE sip:bob@10.0.9.9:5060 SIP/2.0\r\n")
    );
    let st = w.reg.dialog_stats();
    assert_eq!(
        (st.released, st.release_bye_core, st.release_bye_ue),
        (1, 1, 0)
    );
    assert_eq!(w.reg.dialogs(), 0);
}

/// TS 24.229 §5.2.5.1 [spec-m], §5.2.8.1.2 [spec-m]: when the network ends the registration (a
/// reg event NOTIFY terminating every identity), pcscf releases the UE's calls as when the UE
/// de-registers: a BYE toward the core on the UE's behalf and one toward the UE over its SA,
/// which lingers for it.
#[test]
fn a_network_deregistration_releases_the_calls() {
    use crate::reg_event::{XML, accept, all_terminated, notify, registered, send_notify, status};
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    let binding = w.sas.pin().inbound(c.spi_ps).unwrap().binding();
    let mut r = rig_for(false, binding);
    let _ = originate(&mut r);
    to_the_book(&r, &mut w);
    assert_eq!(w.reg.dialogs_of(c.spi_ps), 1);
    let body = all_terminated(0, "full");
    let n = notify(&sub, 1, "terminated;reason=deactivated", XML, &body);
    let out = send_notify(&mut w, "10.0.1.30:5060", &n);
    let byes: Vec<&Outgoing> = out
        .iter()
        .filter(|o| o.payload.starts_with(b"BYE "))
        .collect();
    assert_eq!(byes.len(), 2, "{out:?}");
    assert!(byes.iter().any(|o| o.side == Side::Core));
    assert!(
        byes.iter()
            .any(|o| o.side == Side::Ue && matches!(o.protection, Protection::Protected { .. }))
    );
    let answers: Vec<u16> = out
        .iter()
        .filter(|o| o.payload.starts_with(b"SIP/2.0 "))
        .map(status)
        .collect();
    assert_eq!(answers, [200], "and the NOTIFY's 200");
    let st = w.reg.dialog_stats();
    assert_eq!(
        (st.released, st.release_bye_core, st.release_bye_ue),
        (1, 1, 1)
    );
    assert_eq!(w.reg.dialogs(), 0);
}
