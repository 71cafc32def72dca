//! Calls through one worker, in memory, no I/O: a registered UE places calls, each of the seven
//! messages of a call through the whole pipeline — the INVITE (a ~900-byte SDP offer) in over
//! SA1 and out to the S-CSCF double record-routed; the core's 100, 180 and 200 (SDP answer,
//! the S-CSCF's and our Record-Route) out to the UE over SA2; the UE's ACK and BYE in over SA1,
//! routed by their route set (our two entries popped, the flow token checked); the core's 200
//! to the BYE out over SA2. Reports ns per call, per message (on average and by kind) and calls per second for one
//! core, per suite, and counts allocations in the timed part (must be 0). Only the worker's
//! `poll_once` is timed: building the UE's ESP packets and the core's answers is the harness.
//!
//! cargo run --release --example call_loop [rounds=20] [suite filter, e.g. gcm]
//! valgrind --tool=callgrind --toggle-collect='*poll_once*' target/release/examples/call_loop 1 gcm

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pcscf::dataplane::{L4, MsgQueue, SharedStats, Worker, WorkerConfig, classify};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::io::{MemIo, Side};
use pcscf::satable::{EntryMeta, Registration, SetPorts, SetState};
use pcscf::sip::{HeaderName, Message};

#[path = "fixtures.rs"]
#[allow(dead_code)] // (the other tools' fixtures)
mod fixtures;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
// SAFETY: forwards to System; the counter is a plain atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

/// Calls per batch (one worker batch of INVITEs, then of ACKs, of BYEs ...).
const BATCH: usize = 64;
/// Messages per call: INVITE, 100, 180, 200, ACK, BYE, 200.
const PER_CALL: u64 = 7;
const SCSCF_RR: &str = "<sip:scscf.ims.example.net:6060;lr>";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn invite(n: usize, sdp: &str) -> Vec<u8> {
    format!(
        "INVITE tel:+15550100{n:04} SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKi{n:08};rport\r\nMax-Forwards: 70\r\nRoute: <sip:10.46.0.1:5103;lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a{n}\r\nTo: <tel:+15550100{n:04}>\r\nCall-ID: call-{n:08}@10.46.0.6\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.46.0.6:7005>;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"\r\nP-Preferred-Identity: <sip:alice@ims.example.net>\r\nAccept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"\r\nSupported: 100rel,timer,precondition\r\nAllow: INVITE,ACK,OPTIONS,CANCEL,BYE,UPDATE,INFO,REFER,NOTIFY,MESSAGE,PRACK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn in_dialog(method: &str, n: usize, cseq: u32, route: &str) -> Vec<u8> {
    format!(
        "{method} sip:bob@10.0.9.9:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK{method}{n:08};rport\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:alice@ims.example.net>;tag=a{n}\r\nTo: <tel:+15550100{n:04}>;tag=b{n}\r\nCall-ID: call-{n:08}@10.46.0.6\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `sip` as the UE sends it: UDP from its port-c to our port-s inside ESP over `tx` (SA1).
fn esp(tx: &Sa, sip: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; 256 + sip.len() + 256];
    let at = 256 + 28;
    frame[at..at + sip.len()].copy_from_slice(sip);
    let r = pcscf::wire::emit_datagram(
        &mut frame,
        at..at + sip.len(),
        addr("10.46.0.6:7004"),
        addr("10.46.0.1:5103"),
    )
    .ok()
    .unwrap();
    let mut f = Frame::new(&mut frame, r.start, r.end);
    tx.outbound(&mut f).unwrap();
    let (s, e) = (f.start, f.end);
    frame[s..e].to_vec()
}

/// The core's answer `code` to each request the worker sent it, with `extra` header lines
/// (`{rr}` replaced by the request's own Record-Route) and `body`.
fn core_answers(sent: &[(Side, Vec<u8>)], code: u16, extra: &str, body: &str) -> Vec<Vec<u8>> {
    sent.iter()
        .filter_map(|(_, pkt)| {
            let L4::Udp { src, dst, payload } = classify(pkt) else {
                return None;
            };
            let m = Message::parse(&pkt[payload.start..payload.end]).ok()?;
            let rr: Vec<&[u8]> = m.view().values(HeaderName::RecordRoute).collect();
            let rr = rr
                .iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
                .join(", ");
            let mut lines = extra.replace("{rr}", &rr);
            if !body.is_empty() {
                lines.push_str("Content-Type: application/sdp\r\n");
            }
            let mut out = vec![0u8; 8192];
            let n = pcscf::sip::rules::build_response(
                m.view(),
                code,
                "X",
                b"core",
                &[lines.as_bytes()],
                &mut out,
            )?;
            let mut sip = out[..n].to_vec();
            if !body.is_empty() {
                // build_response wrote Content-Length: 0 and an empty body: put the SDP in
                let text = String::from_utf8(sip).ok()?.replacen(
                    "Content-Length: 0\r\n\r\n",
                    &format!("Content-Length: {}\r\n\r\n{body}", body.len()),
                    1,
                );
                sip = text.into_bytes();
            }
            let mut frame = vec![0u8; 128 + sip.len()];
            frame[128..].copy_from_slice(&sip);
            let r = pcscf::wire::emit_datagram(&mut frame, 128..128 + sip.len(), dst, src).ok()?;
            Some(frame[r].to_vec())
        })
        .collect()
}

/// The worker turns a batch of inputs around: inject (untimed), `poll_once` until all are
/// consumed (timed, allocations counted), what it sent.
/// The seven messages of a call, in order: what the per-message table names.
const KINDS: [&str; 7] = ["INVITE", "100", "180", "200", "ACK", "BYE", "200 (BYE)"];

/// Time inside `poll_once` per message kind (ns, all calls), and allocations there.
#[derive(Default)]
struct Clock {
    ns: [u128; 7],
    allocs: u64,
}

fn turn(
    w: &mut Worker<MemIo>,
    side: Side,
    pkts: &[Vec<u8>],
    (clock, kind): (&mut Clock, usize),
) -> Vec<(Side, Vec<u8>)> {
    for chunk in pkts.chunks(BATCH) {
        for p in chunk {
            assert!(w.io().inject(side, p));
        }
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        w.poll_once();
        clock.ns[kind] += t0.elapsed().as_nanos();
        clock.allocs += ALLOCS.load(Ordering::Relaxed) - a0;
    }
    w.io().take_sent()
}

/// ns per call, ns per message of each kind, allocations.
fn run_suite(alg: &str, ealg: &str, rounds: usize) -> (f64, [f64; 7], u64) {
    let ck = [7u8; 16];
    let ik = [9u8; 16];
    let ue = "10.46.0.6".parse().unwrap();
    let (mut writer, reader) = fixtures::small_table();
    let reg = Arc::new(Registration::new(
        b"<sip:alice@ims.example.net>",
        b"<sip:orig@10.0.1.30:5060;lr>",
        addr("10.0.1.30:5060"),
    ));
    let meta = |ue_port, local_port| EntryMeta {
        ue_addr: ue,
        ue_port,
        ue_ports: SetPorts::default(),
        local_port,
        ports: SetPorts { c: 5102, s: 5103 },
        binding: 1,
        state: SetState::New,
    };
    writer
        .install_outbound(
            Sa::from_aka(0x9000, alg, ealg, &ck, &ik, SaOptions::default()).unwrap(),
            &meta(7005, 5102),
        )
        .unwrap();
    let cfg = WorkerConfig {
        id: 0,
        ue_addrs: vec!["10.46.0.1".parse().unwrap()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: addr("10.0.1.10:5060"),
        icscf: Some(addr("10.0.1.20:5060")),
        icscf_tcp: false,
        stateless_relay: false,
        via_sent_by: "10.0.1.10:5060".into(),
        hostname: "pcscf.ims.example.net".into(),
        batch: BATCH,
        // (UDP-only peers: requests toward the UE stay datagrams)
        max_udp_request: usize::MAX,
        core_max_udp_request: usize::MAX,
        verify_udp_checksum: true,
    };
    // the dialog events go where the daemon sends them (the registration thread's book), which
    // this loop empties between batches, outside the timed part
    let events = MsgQueue::new(4 * BATCH, None);
    let mut w = Worker::new(
        MemIo::new(8 * BATCH),
        cfg,
        MsgQueue::new(16, None),
        Arc::new(SharedStats::default()),
    )
    .with_sas(reader)
    .with_dialog_events(events.clone());
    // the same ~900-byte offer the lab's UEs make
    let offer = pcscf::sim::call::sdp_offer(ue, 49152);
    let answer = offer.replace("10.46.0.6", "10.0.9.9");
    let mut clock = Clock::default();
    let mut calls = 0u64;
    for round in 0..rounds {
        // A fresh SA1 per round (a fresh replay window), as the registration thread installs it.
        let spi = writer.reserve_spi().unwrap();
        writer
            .install_inbound(
                Sa::from_aka(spi, alg, ealg, &ck, &ik, SaOptions::default()).unwrap(),
                &meta(7004, 5103),
            )
            .unwrap();
        writer
            .set_inbound_registration(spi, Some(reg.clone()))
            .unwrap();
        let tx = Sa::from_aka(spi, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        for b in 0..4 {
            let ids: Vec<usize> = (0..BATCH).map(|i| (round * 4 + b) * BATCH + i).collect();
            let invites: Vec<Vec<u8>> = ids.iter().map(|&n| esp(&tx, &invite(n, &offer))).collect();
            let fwd = turn(&mut w, Side::Ue, &invites, (&mut clock, 0));
            assert_eq!(fwd.len(), BATCH, "INVITEs forwarded: {:?}", w.stats());
            let contact = "Contact: <sip:bob@10.0.9.9:5060>\r\n";
            let rr = format!("Record-Route: {SCSCF_RR}\r\nRecord-Route: {{rr}}\r\n{contact}");
            for (kind, answers) in [
                (1, core_answers(&fwd, 100, "", "")),
                (2, core_answers(&fwd, 180, &rr, "")),
                (3, core_answers(&fwd, 200, &rr, &answer)),
            ] {
                let to_ue = turn(&mut w, Side::Core, &answers, (&mut clock, kind));
                assert_eq!(to_ue.len(), BATCH, "answers to the UE: {:?}", w.stats());
            }
            // the UE's route set: the 200's Record-Route reversed (the same for every call of
            // this UE: the token names its registration, not the call)
            let fwd0 = &fwd[0].1;
            let L4::Udp { payload, .. } = classify(fwd0) else {
                unreachable!()
            };
            let m = Message::parse(&fwd0[payload.start..payload.end]).unwrap();
            let ours: Vec<String> = m
                .view()
                .values(HeaderName::RecordRoute)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            let route = format!("{}, {}, {SCSCF_RR}", ours[1], ours[0]);
            let acks: Vec<Vec<u8>> = ids
                .iter()
                .map(|&n| esp(&tx, &in_dialog("ACK", n, 1, &route)))
                .collect();
            let byes: Vec<Vec<u8>> = ids
                .iter()
                .map(|&n| esp(&tx, &in_dialog("BYE", n, 2, &route)))
                .collect();
            let sent = turn(&mut w, Side::Ue, &acks, (&mut clock, 4));
            assert_eq!(sent.len(), BATCH, "ACKs forwarded: {:?}", w.stats());
            let sent = turn(&mut w, Side::Ue, &byes, (&mut clock, 5));
            assert_eq!(sent.len(), BATCH, "BYEs forwarded: {:?}", w.stats());
            let oks = core_answers(&sent, 200, "", "");
            let to_ue = turn(&mut w, Side::Core, &oks, (&mut clock, 6));
            assert_eq!(to_ue.len(), BATCH, "200s to BYE: {:?}", w.stats());
            calls += BATCH as u64;
            while let Some(b) = events.pop() {
                events.recycle(b);
            }
        }
        writer.remove_inbound(spi).unwrap();
    }
    let s = w.stats();
    assert_eq!(s.forwarded, PER_CALL * calls, "{s:?}");
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.dialog_refused, 0, "{s:?}");
    // per call: the INVITE, its 200, the BYE
    assert_eq!(
        (s.dialog_events, s.dialog_events_lost),
        (3 * calls, 0),
        "{s:?}"
    );
    let total: u128 = clock.ns.iter().sum();
    let per_kind = clock.ns.map(|ns| ns as f64 / calls as f64);
    (total as f64 / calls as f64, per_kind, clock.allocs)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let only = std::env::args().nth(2).unwrap_or_default();
    println!(
        "| suite | ns per call ({PER_CALL} messages) | ns per message | calls/s on one core | allocations in the loop |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut by_kind = Vec::new();
    for (alg, ealg) in [
        ("null", "aes-gcm"),
        ("hmac-sha-1-96", "aes-cbc"),
        ("hmac-sha-1-96", "null"),
    ] {
        if !format!("{alg}/{ealg}").contains(&only) {
            continue;
        }
        let (ns, per_kind, allocs) = run_suite(alg, ealg, rounds);
        println!(
            "| {alg} / {ealg} | {ns:.0} | {:.0} | {:.0} | {allocs} |",
            ns / PER_CALL as f64,
            1e9 / ns
        );
        assert_eq!(allocs, 0, "the call path allocates");
        by_kind.push((format!("{alg} / {ealg}"), per_kind));
    }
    // the cost of each message of the call (the INVITE and the 200 carry the SDP)
    println!();
    println!(
        "| suite | {} |",
        KINDS.map(|k| format!("{k} ns")).join(" | ")
    );
    println!("|---|{}", "---:|".repeat(KINDS.len()));
    for (suite, per_kind) in by_kind {
        let cells: Vec<String> = per_kind.iter().map(|ns| format!("{ns:.0}")).collect();
        println!("| {suite} | {} |", cells.join(" | "));
    }
}
