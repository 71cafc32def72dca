//! The whole per-message worker pipeline, then each of its stages alone on the same data.
//!
//! The traffic is perf/pipeline_loop.rs's: a registered UE's protected SIP MESSAGE (~1 KB of
//! SIP) comes in as ESP over SA1 (SA lookup by SPI, ICV, anti-replay, decrypt), is rewritten
//! toward the Service-Route (our Via, Max-Forwards, P-Asserted-Identity, Route) and forwarded to
//! the core; the core's 200 comes back, loses our Via and goes out to the UE as ESP over SA2.
//!
//! - `whole`: that, through `Worker::poll_once` over the in-memory `MemIo`, one batch of
//!   [`BATCH`] MESSAGEs in and their [`BATCH`] 200s out per iteration. The "NIC" (encrypting the
//!   UE's packets with fresh sequence numbers and queueing them with the core's 200s) is outside
//!   the timed region; the item counter gives messages per second, divide the time by [`BATCH`]
//!   for one message (its 200 included).
//! - `stage::*`: one packet through one stage, the input copied in fresh outside the timing.
//!
//! Every iteration asserts that the packet got through (ESP accepted, everything forwarded).
//! Results are in bench/README.md. Run `cargo bench --bench pipeline`; with
//! `--features esp-null` the ESP rows keep the framing and drop the crypto.

use std::cell::RefCell;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use divan::Bencher;
use divan::counter::ItemsCount;
use pcscf::dataplane::{
    L4, MsgQueue, SharedStats, Worker, WorkerConfig, classify, udp_checksum_ok,
};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::io::{FRAME_SIZE, HEADROOM, MemIo, Side};
use pcscf::satable::{EntryMeta, Registration, SaReader, SaWriter, SetPorts, SetState};
use pcscf::sip::branch::{Branch, BranchKey, Dir};
use pcscf::sip::rules::{self, ProxyIdentity};
use pcscf::sip::{Editor, HeaderName, Index, Message};

#[path = "../perf/fixtures.rs"]
#[allow(dead_code)] // (the SIP benches' identity)
mod fixtures;
use fixtures::message;

/// Messages per worker batch (as pipeline_loop).
const BATCH: usize = 64;
/// Batches the in-memory NIC can hold queued at once: the `whole` bench queues `sample_size`
/// batches before timing them (its sample size is 1 unless `--sample-size` says otherwise).
const QUEUED_BATCHES: usize = 16;

/// The suites, as the rows name them: encryption + integrity.
const SUITES: &[&str] = &["aes-gcm", "aes-cbc+hmac-sha-1-96", "null+hmac-sha-1-96"];

const CK: [u8; 16] = [7; 16];
const IK: [u8; 16] = [9; 16];
const SPI_SA2: u32 = 0x9000;
const UE_IP: &str = "10.46.0.6";
/// SA1: UE port-c → our port-s; SA2: our port-c → UE port-s.
const UE_PORT_C: u16 = 7004;
const UE_PORT_S: u16 = 7005;
const OUR_PORT_C: u16 = 5102;
const OUR_PORT_S: u16 = 5103;
const OUR_UE_SIDE: &str = "10.46.0.1";
/// The SPI of SA1 in the SIP-stage benches (which seal a branch as the worker does).
const SA1_SPI: u32 = 0x1000;

/// The stage benches' branch key (the worker draws its own per process).
fn branch_key() -> &'static BranchKey {
    static KEY: std::sync::OnceLock<BranchKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| BranchKey::new(&[5; 32]))
}
const CORE: &str = "10.0.1.10:5060";
const NEXT_HOP: &str = "10.0.1.30:5060";
const PAI: &[u8] = b"<sip:alice@ims.example.net>";
const ROUTE: &[u8] = b"<sip:orig@10.0.1.30:5060;lr>";

fn main() {
    if esp_is_null() {
        eprintln!(
            "note: ESP crypto is a no-op in this build (feature esp-null): the suite names give \
             the ESP framing only (IV, padding, ICV lengths), no cipher or MAC runs"
        );
    }
    divan::main();
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (alg, ealg) tokens of a suite row.
fn tokens(suite: &str) -> (&'static str, &'static str) {
    match suite {
        "aes-gcm" => ("null", "aes-gcm"),
        "aes-cbc+hmac-sha-1-96" => ("hmac-sha-1-96", "aes-cbc"),
        "null+hmac-sha-1-96" => ("hmac-sha-1-96", "null"),
        other => panic!("unknown suite {other}"),
    }
}

fn sa(suite: &str, spi: u32) -> Sa {
    let (alg, ealg) = tokens(suite);
    Sa::from_aka(spi, alg, ealg, &CK, &IK, SaOptions::default()).unwrap()
}

/// Whether this build's ESP leaves the payload in the clear under aes-gcm (the `esp-null`
/// feature): found by looking, so the bench needs no cfg for a feature it does not own.
fn esp_is_null() -> bool {
    let marker = [0x5au8; 64];
    let pkt = udp_packet(&marker, addr("10.46.0.6:7004"), addr("10.46.0.1:5103"));
    let mut buf = frame_with(&pkt);
    let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
    sa("aes-gcm", 0x4242).outbound(&mut f).unwrap();
    f.packet().windows(marker.len()).any(|w| w == marker)
}

/// An IPv4/UDP packet carrying `payload`.
fn udp_packet(payload: &[u8], src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0u8; 64 + payload.len()];
    buf[64..].copy_from_slice(payload);
    let end = buf.len();
    let r = pcscf::wire::emit_datagram(&mut buf, 64..end, src, dst)
        .ok()
        .unwrap();
    buf[r].to_vec()
}

/// A worker frame (FRAME_SIZE bytes) with `pkt` at HEADROOM, as the NIC would hand it over.
fn frame_with(pkt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; FRAME_SIZE];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    buf
}

fn meta(ue_port: u16, local_port: u16) -> EntryMeta {
    EntryMeta {
        ue_addr: ip(UE_IP),
        ue_port,
        ue_ports: SetPorts::default(),
        local_port,
        ports: SetPorts { c: 5102, s: 5103 },
        binding: 1,
        state: SetState::New,
    }
}

/// The SA table of one registered UE: SA1 inbound (with its registration) and SA2 outbound.
/// Returns the writer (keep it alive), a reader and SA1's SPI.
fn table(suite: &str) -> (SaWriter, SaReader, u32) {
    let (mut writer, reader) = fixtures::small_table();
    writer
        .install_outbound(sa(suite, SPI_SA2), &meta(UE_PORT_S, OUR_PORT_C))
        .unwrap();
    let spi = writer.reserve_spi().unwrap();
    writer
        .install_inbound(sa(suite, spi), &meta(UE_PORT_C, OUR_PORT_S))
        .unwrap();
    let reg = Arc::new(Registration::new(PAI, ROUTE, addr(NEXT_HOP)));
    writer.set_inbound_registration(spi, Some(reg)).unwrap();
    (writer, reader, spi)
}

/// The core's 200 to a request the worker forwarded (IP/UDP packet `pkt`), from where the
/// request went to where it came from.
fn core_answer(pkt: &[u8]) -> Vec<u8> {
    let L4::Udp { src, dst, payload } = classify(pkt) else {
        panic!("forwarded packet is not UDP");
    };
    let m = Message::parse(&pkt[payload.start..payload.end]).unwrap();
    let mut out = vec![0u8; 4096];
    let n = rules::build_response(m.view(), 200, "OK", b"core", &[], &mut out).unwrap();
    udp_packet(&out[..n], dst, src)
}

/// A worker with one registered UE, the UE's side of SA1, and the traffic of one batch.
struct Pipeline {
    worker: Worker<MemIo>,
    _writer: SaWriter,
    /// The UE's copy of SA1: encrypts the MESSAGEs with fresh sequence numbers.
    ue_sa1: Sa,
    /// The MESSAGEs as IPv4/UDP packets, UE port-c → our port-s, in the clear.
    messages: Vec<Vec<u8>>,
    /// The core's 200s to them, IPv4/UDP, as the core sends them.
    answers: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

impl Pipeline {
    fn new(suite: &str) -> Pipeline {
        let (writer, reader, spi) = table(suite);
        let cfg = WorkerConfig {
            id: 0,
            ue_addrs: vec![ip(OUR_UE_SIDE)],
            ue_sip_port: 5060,
            protected_ports: 5100..=5199,
            core: addr(CORE),
            icscf: Some(addr("10.0.1.20:5060")),
            icscf_tcp: false,
            stateless_relay: false,
            via_sent_by: CORE.into(),
            hostname: "pcscf.ims.example.net".into(),
            batch: BATCH,
            // (UDP-only peers: requests toward the UE stay datagrams)
            max_udp_request: usize::MAX,
            core_max_udp_request: usize::MAX,
            verify_udp_checksum: true,
        };
        let worker = Worker::new(
            MemIo::new(2 * BATCH * QUEUED_BATCHES),
            cfg,
            MsgQueue::new(16, None),
            Arc::new(SharedStats::default()),
        )
        .with_sas(reader);
        let ue = SocketAddr::new(ip(UE_IP), UE_PORT_C);
        let us = SocketAddr::new(ip(OUR_UE_SIDE), OUR_PORT_S);
        let mut p = Pipeline {
            worker,
            _writer: writer,
            ue_sa1: sa(suite, spi),
            messages: (0..BATCH)
                .map(|n| udp_packet(&message(n), ue, us))
                .collect(),
            answers: Vec::new(),
            scratch: vec![0u8; FRAME_SIZE],
        };
        // One untimed round trip: the core's answers to what the worker forwards. The worker
        // is stateless (the branch is a hash of the request), so they answer every later batch.
        p.queue_messages();
        assert_eq!(p.worker.poll_once(), BATCH);
        let sent = p.worker.io().take_sent();
        assert_eq!(
            sent.len(),
            BATCH,
            "every MESSAGE forwarded: {:?}",
            p.worker.stats()
        );
        p.answers = sent
            .iter()
            .map(|(side, pkt)| {
                assert_eq!(*side, Side::Core);
                core_answer(pkt)
            })
            .collect();
        p.queue_answers();
        assert_eq!(p.worker.poll_once(), BATCH);
        p.check_sent_to_ue();
        p
    }

    /// The NIC: a batch of MESSAGEs, ESP-protected by the UE with its next sequence numbers.
    fn queue_messages(&mut self) {
        for pkt in &self.messages {
            self.scratch[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
            let mut f = Frame::new(&mut self.scratch, HEADROOM, HEADROOM + pkt.len());
            self.ue_sa1.outbound(&mut f).unwrap();
            let (s, e) = (f.start, f.end);
            assert!(
                self.worker.io().inject(Side::Ue, &self.scratch[s..e]),
                "MemIo full: more than {QUEUED_BATCHES} batches queued (lower --sample-size)"
            );
        }
    }

    /// The NIC: the core's 200s to a batch.
    fn queue_answers(&mut self) {
        for pkt in &self.answers {
            assert!(
                self.worker.io().inject(Side::Core, pkt),
                "MemIo full: more than {QUEUED_BATCHES} batches queued (lower --sample-size)"
            );
        }
    }

    /// What went out last is BATCH ESP packets to the UE (the 200s over SA2).
    fn check_sent_to_ue(&mut self) {
        let sent = self.worker.io().take_sent();
        assert_eq!(
            sent.len(),
            BATCH,
            "every 200 sent: {:?}",
            self.worker.stats()
        );
        for (side, pkt) in &sent {
            assert_eq!(*side, Side::Ue);
            let L4::Esp { dst, .. } = classify(pkt) else {
                panic!("a 200 went to the UE without ESP");
            };
            assert_eq!(dst, ip(UE_IP));
            assert_eq!(pcscf::esp::packet::peek_spi(pkt), Ok(SPI_SA2));
        }
    }

    /// One timed batch: the MESSAGEs in and forwarded, then their 200s out over SA2.
    fn run_batch(&mut self) {
        let before = *self.worker.stats();
        assert_eq!(self.worker.poll_once(), BATCH);
        self.worker.io().discard_sent();
        assert_eq!(self.worker.poll_once(), BATCH);
        self.worker.io().discard_sent();
        let after = self.worker.stats();
        assert_eq!(after.esp_in - before.esp_in, BATCH as u64);
        assert_eq!(after.esp_out - before.esp_out, BATCH as u64);
        assert_eq!(
            after.forwarded - before.forwarded,
            2 * BATCH as u64,
            "{after:?}"
        );
    }
}

/// The whole worker pipeline, per batch of BATCH messages (each: ESP in → SIP → core, and its
/// 200: SIP → ESP out).
#[divan::bench(args = SUITES, sample_size = 1, sample_count = 200)]
fn whole(b: Bencher, suite: &str) {
    let p = RefCell::new(Pipeline::new(suite));
    b.counter(ItemsCount::new(BATCH))
        .with_inputs(|| {
            let mut p = p.borrow_mut();
            p.queue_messages();
            p.queue_answers();
        })
        .bench_local_values(|()| p.borrow_mut().run_batch());
    // the last batch's output was discarded; check the counters once more
    let p = p.into_inner();
    let s = p.worker.stats();
    assert_eq!(s.dropped(), 0, "{s:?}");
    assert_eq!(s.forwarded, 2 * s.esp_in, "{s:?}");
}

/// Each stage alone, one packet per iteration.
mod stage {
    use super::*;

    /// Who the worker is toward the core (its `relay_identity`).
    const ME: ProxyIdentity<'static> = ProxyIdentity {
        via_sent_by: CORE.as_bytes(),
        via_transport: b"UDP",
        path_uri: b"",
        own: &pcscf::sip::OwnUris::NONE,
        visited_network_id: b"",
        orig_ioi: b"",
    };

    /// Where the SIP of a decrypted MESSAGE lies in its frame (after the IPv4, ESP, IV and
    /// UDP headers) and the frame.
    fn plain_message() -> (Vec<u8>, usize, usize) {
        let sip = message(0);
        let at = HEADROOM + 20 + 8 + 16 + 8;
        let mut buf = vec![0u8; FRAME_SIZE];
        buf[at..at + sip.len()].copy_from_slice(&sip);
        (buf, at, at + sip.len())
    }

    /// The core's 200 to MESSAGE 0 (what the worker forwards for it, answered).
    fn core_200() -> Vec<u8> {
        let (mut buf, s, e) = plain_message();
        let source = SocketAddr::new(ip(UE_IP), UE_PORT_C);
        let r = sip_request(&mut buf, s, e, source);
        let fwd = pcscf::wire::emit_datagram(&mut buf, r, addr(CORE), addr(NEXT_HOP))
            .ok()
            .unwrap();
        core_answer(&buf[fwd])
    }

    /// The worker's SIP stage for a request from a registered UE over SA1 (`esp_in`):
    /// parse, validate, the checks, the rewrite toward the Service-Route.
    fn sip_request(
        frame: &mut [u8],
        start: usize,
        end: usize,
        source: SocketAddr,
    ) -> std::ops::Range<usize> {
        let idx = Index::parse(frame, start, end).unwrap();
        let view = idx.view(frame);
        view.validate().unwrap();
        assert!(idx.is_request() && !view.is_method(b"REGISTER"));
        assert!(!rules::max_forwards_exhausted(view));
        // as the worker does: the SPI it came over and the UE's Via port, sealed
        let port = rules::top_via_port(view).unwrap();
        let hash = rules::stateless_branch(view);
        let ue = source.ip();
        let branch = branch_key().seal(Dir::ToCore, 0, SA1_SPI, port, hash, ue, ue);
        let mut ed = Editor::from_index(frame, idx);
        let top = rules::TopVia::of(ed.view());
        rules::rewrite_protected_request(
            &mut ed,
            &ME,
            source,
            &branch,
            PAI,
            ROUTE,
            b"0123456789abcdef0123456789abcdef",
            top.as_ref(),
            &mut [0u8; 4096],
        )
        .unwrap();
        ed.range()
    }

    /// The worker's SIP stage for a response from the core (`sip_from_core` +
    /// `relay_response`): parse, our Via on top?, not a REGISTER's, Via popped, the UE's
    /// address from the next Via. Returns the 200's range and where it goes.
    fn sip_response(
        frame: &mut [u8],
        start: usize,
        end: usize,
    ) -> (std::ops::Range<usize>, SocketAddr, Branch) {
        let idx = Index::parse(frame, start, end).unwrap();
        let view = idx.view(frame);
        assert!(!idx.is_request());
        // as the worker does: our Via and its branch from one parse, the branch verified
        let branch = rules::top_via_ours(view, CORE.as_bytes()).unwrap().unwrap();
        let cseq = view
            .header(HeaderName::CSeq)
            .and_then(pcscf::sip::headers::cseq);
        assert!(cseq.is_some_and(|(_, m)| m != b"REGISTER"));
        let mut ed = Editor::from_index(frame, idx);
        rules::pop_top_via(&mut ed).unwrap();
        // the UE and its port come from the branch (the worker then looks up SA1 by its SPI)
        let ue = ip(UE_IP);
        assert!(branch_key().verify(&branch, Dir::ToCore, ue, ue));
        (ed.range(), SocketAddr::new(ue, branch.port), branch)
    }

    /// ESP in: `Sa::decapsulate` (replay pre-check, ICV, decrypt, padding, window update,
    /// inner IP header rebuilt) of the protected MESSAGE (1002 B of IPv4/UDP inside).
    #[divan::bench(args = SUITES)]
    fn esp_in(b: Bencher, suite: &str) {
        let ue_side = sa(suite, 0x1000);
        let ours = sa(suite, 0x1000);
        let pkt = udp_packet(
            &message(0),
            SocketAddr::new(ip(UE_IP), UE_PORT_C),
            SocketAddr::new(ip(OUR_UE_SIDE), OUR_PORT_S),
        );
        let mut buf = frame_with(&pkt);
        // Each input gets the next sequence number, and divan times the inputs in the order it
        // made them, so the replay window always accepts.
        b.with_inputs(|| {
            buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(&pkt);
            let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
            ue_side.outbound(&mut f).unwrap();
            f.packet().to_vec()
        })
        .bench_local_refs(|esp| {
            let (inner, _) = ours.decapsulate(esp).unwrap();
            inner
        });
        assert_eq!(ours.highest_seq_received(), ue_side.last_seq_sent());
    }

    /// SIP in: the MESSAGE as decrypted: parse, validate, Max-Forwards, branch, and the
    /// rewrite toward the Service-Route (`rewrite_protected_request`).
    #[divan::bench]
    fn sip_message(b: Bencher) {
        let (frame, s, e) = plain_message();
        let source = SocketAddr::new(ip(UE_IP), UE_PORT_C);
        b.with_inputs(|| frame.clone())
            .bench_local_refs(|f| sip_request(f, s, e, source));
    }

    /// Parse alone (the header index), of the MESSAGE and of the core's 200: to split the
    /// SIP rows into parse and the rest.
    #[divan::bench(args = ["message", "200"])]
    fn sip_parse_only(b: Bencher, which: &str) {
        let (frame, s, e) = match which {
            "message" => plain_message(),
            _ => {
                let pkt = core_200();
                let L4::Udp { payload, .. } = classify(&pkt) else {
                    unreachable!()
                };
                (
                    frame_with(&pkt),
                    HEADROOM + payload.start,
                    HEADROOM + payload.end,
                )
            }
        };
        b.bench_local(|| {
            Index::parse(black_box(&frame), s, e)
                .unwrap()
                .headers()
                .len()
        });
    }

    /// Parse + validate (RFC 3261 checks) of the MESSAGE: `sip_message` less this is the
    /// rewrite.
    #[divan::bench]
    fn sip_message_parse_validate(b: Bencher) {
        let (frame, s, e) = plain_message();
        b.bench_local(|| {
            let frame = black_box(&frame[..]);
            let idx = Index::parse(frame, s, e).unwrap();
            idx.view(frame).validate().unwrap();
            idx.headers().len()
        });
    }

    /// SIP out: the core's 200 (parse, our Via checked and popped, the UE's Via read).
    #[divan::bench]
    fn sip_200(b: Bencher) {
        let pkt = core_200();
        let L4::Udp { payload, .. } = classify(&pkt) else {
            unreachable!()
        };
        let frame = frame_with(&pkt);
        let (s, e) = (HEADROOM + payload.start, HEADROOM + payload.end);
        b.with_inputs(|| frame.clone())
            .bench_local_refs(|f| sip_response(f, s, e));
    }

    /// ESP out: `Sa::outbound` (ESP header, IV, padding, encrypt, ICV) of the rewritten 200 as
    /// an IPv4/UDP packet to the UE's port-s (258 B).
    #[divan::bench(args = SUITES)]
    fn esp_out(b: Bencher, suite: &str) {
        let sa2 = sa(suite, SPI_SA2);
        let pkt = core_200();
        let L4::Udp { payload, .. } = classify(&pkt) else {
            unreachable!()
        };
        let mut frame = frame_with(&pkt);
        let (r, to, _) = sip_response(&mut frame, HEADROOM + payload.start, HEADROOM + payload.end);
        assert_eq!(to, SocketAddr::new(ip(UE_IP), UE_PORT_S));
        let from = SocketAddr::new(ip(OUR_UE_SIDE), OUR_PORT_C);
        let ip_pkt = pcscf::wire::emit_datagram(&mut frame, r, from, to)
            .ok()
            .unwrap();
        b.with_inputs(|| frame.clone()).bench_local_refs(|f| {
            let mut f = Frame::new(f, ip_pkt.start, ip_pkt.end);
            sa2.outbound(&mut f).unwrap()
        });
    }

    /// L3 in: classify + UDP checksum check of the core's 200 (the worker checks UDP checksums
    /// of plain packets; ESP packets rely on the ICV).
    #[divan::bench]
    fn l3_classify_verify(b: Bencher) {
        let pkt = core_200();
        b.bench_local(|| {
            let pkt = black_box(&pkt[..]);
            let L4::Udp { src, dst, payload } = classify(pkt) else {
                unreachable!()
            };
            assert!(udp_checksum_ok(pkt, src, dst, &payload));
        });
    }

    /// L3 out: IPv4 + UDP headers and the UDP checksum for the rewritten MESSAGE toward the
    /// core (the worker does this once per packet it sends, before ESP when protected).
    #[divan::bench]
    fn l3_write_udp(b: Bencher) {
        let (mut frame, s, e) = plain_message();
        let source = SocketAddr::new(ip(UE_IP), UE_PORT_C);
        let r = sip_request(&mut frame, s, e, source);
        let (core, next) = (addr(CORE), addr(NEXT_HOP));
        b.bench_local(|| {
            pcscf::wire::emit_datagram(black_box(&mut frame), r.clone(), core, next)
                .ok()
                .unwrap()
        });
    }

    /// The inbound SA lookup of an ESP packet (by SPI), in a table of one UE; bench/satable.rs
    /// has 1k, 100k and 1M SAs and the cost of `pin` (once per batch).
    #[divan::bench]
    fn sa_lookup_inbound(b: Bencher) {
        let (_w, reader, spi) = table("aes-gcm");
        let g = reader.pin();
        let ue = ip(UE_IP);
        b.bench_local(|| {
            let e = g.inbound(black_box(spi)).unwrap();
            assert!(e.ue_addr() == ue && e.registration().is_some());
            Arc::as_ptr(e.sa())
        });
    }

    /// The outbound SA lookup of the 200 (by UE address, UE port, our port).
    #[divan::bench]
    fn sa_lookup_outbound(b: Bencher) {
        let (_w, reader, _) = table("aes-gcm");
        let g = reader.pin();
        let ue = ip(UE_IP);
        b.bench_local(|| {
            let e = g
                .outbound(black_box(ue), black_box(UE_PORT_S), OUR_PORT_C)
                .unwrap();
            Arc::as_ptr(e.sa())
        });
    }
}
