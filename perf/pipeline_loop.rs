//! The whole per-message pipeline of a worker, in memory, no I/O: a registered UE's protected
//! MESSAGE (~1 KB) comes in as ESP (SA lookup, ICV, replay, decrypt, selector check), is
//! rewritten toward the Service-Route (Via, Max-Forwards, P-Asserted-Identity, Route) and sent
//! to the core; the core's 200 comes back (Via popped) and goes out to the UE as ESP over SA2.
//! Reports ns per message and messages per second for one core, per suite, and counts
//! allocations in the loop (must be 0). Beside it, the same round trip with the UE's requests
//! on its TCP connection inside the SAs (its port-c → our port-s: segments in over SA1, the
//! 200s and our ACKs out over SA3; smoltcp at the UE too, its side untimed), in batches of 8
//! messages (what its 16 KB send buffer takes).
//!
//! cargo run --release --example pipeline_loop [rounds=20] [suite filter, e.g. gcm] [udp|tcp]
//! valgrind --tool=callgrind target/release/examples/pipeline_loop 1   (instructions per message)

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use pcscf::dataplane::{L4, MsgQueue, SharedStats, Worker, WorkerConfig, classify};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::io::{MemIo, Side};
use pcscf::satable::{EntryMeta, Registration, SetPorts, SetState};
use pcscf::tcp::{Conn, Endpoint, EndpointConfig, PortPairs, Segments};

#[path = "fixtures.rs"]
#[allow(dead_code)] // (the SIP benches' identity)
mod fixtures;
use fixtures::message;

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

const BATCH: usize = 64;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn run_suite(alg: &str, ealg: &str, rounds: usize, tcp: bool) -> (f64, u64) {
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
        ue_ports: SetPorts { c: 7004, s: 7005 },
        local_port,
        ports: SetPorts { c: 5102, s: 5103 },
        binding: 1,
        state: SetState::New,
    };
    // SA2 out: our port-c 5102 → UE port-s 7005
    writer
        .install_outbound(
            Sa::from_aka(0x9000, alg, ealg, &ck, &ik, SaOptions::default()).unwrap(),
            &meta(7005, 5102),
        )
        .unwrap();
    if tcp {
        // SA3 out: our port-s 5103 → UE port-c 7004 (our side of its connection)
        writer
            .install_outbound(
                Sa::from_aka(0x9001, alg, ealg, &ck, &ik, SaOptions::default()).unwrap(),
                &meta(7004, 5103),
            )
            .unwrap();
    }
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
    let mut w = Worker::new(
        MemIo::new(4 * BATCH),
        cfg,
        MsgQueue::new(16, None),
        Arc::new(SharedStats::default()),
    )
    .with_sas(reader);
    if tcp {
        return tcp_rounds(&mut w, &mut writer, (alg, ealg), rounds, reg);
    }
    let mut total_ns = 0u128;
    let mut msgs = 0u64;
    let mut allocs = 0u64;
    for _ in 0..rounds {
        // A fresh SA1 per round (a fresh replay window), installed through the writer as the
        // registration thread would; packets are encrypted before the clock starts.
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
        let mut batches = Vec::new();
        for b in 0..16 {
            let mut pkts = Vec::new();
            for i in 0..BATCH {
                let sip = message(b * BATCH + i);
                let mut frame = vec![0u8; 256 + sip.len() + 256];
                let at = 256 + 28;
                frame[at..at + sip.len()].copy_from_slice(&sip);
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
                pkts.push(frame[s..e].to_vec());
            }
            batches.push(pkts);
        }
        for pkts in &batches {
            // in: a batch of protected MESSAGEs (the "NIC" fills the frames: untimed)
            for p in pkts {
                w.io().inject(Side::Ue, p);
            }
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = Instant::now();
            w.poll_once(); // ESP in → SIP → toward the core
            total_ns += t0.elapsed().as_nanos();
            allocs += ALLOCS.load(Ordering::Relaxed) - a0;
            // the core's 200s (the harness plays the core: untimed)
            let answers = w.io().take_sent_into_responses();
            for p in &answers {
                w.io().inject(Side::Core, p);
            }
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = Instant::now();
            w.poll_once(); // SIP → ESP out over SA2
            total_ns += t0.elapsed().as_nanos();
            allocs += ALLOCS.load(Ordering::Relaxed) - a0;
            w.io().discard_sent();
            msgs += pkts.len() as u64;
        }
        writer.remove_inbound(spi).unwrap();
    }
    let s = w.stats();
    assert_eq!(
        s.forwarded,
        2 * msgs,
        "every message and its 200 forwarded: {s:?}"
    );
    assert_eq!(s.esp_in, msgs);
    assert_eq!(s.esp_out, msgs);
    (total_ns as f64 / msgs as f64, allocs)
}

/// The TCP round trips of [`run_suite`]: the UE's MESSAGEs on its connection, 8 per batch,
/// each batch's 200s from the core back on it; only the worker's polls are timed.
fn tcp_rounds(
    w: &mut Worker<MemIo>,
    writer: &mut pcscf::satable::SaWriter,
    (alg, ealg): (&str, &str),
    rounds: usize,
    reg: Arc<Registration>,
) -> (f64, u64) {
    let (ck, ik) = ([7u8; 16], [9u8; 16]);
    let sa = |spi| Sa::from_aka(spi, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
    let spi = writer.reserve_spi().unwrap();
    let ue_addr = "10.46.0.6".parse().unwrap();
    writer
        .install_inbound(
            sa(spi),
            &EntryMeta {
                ue_addr,
                ue_port: 7004,
                ue_ports: SetPorts { c: 7004, s: 7005 },
                local_port: 5103,
                ports: SetPorts { c: 5102, s: 5103 },
                binding: 1,
                state: SetState::New,
            },
        )
        .unwrap();
    writer.set_inbound_registration(spi, Some(reg)).unwrap();
    let (tx1, rx3) = (sa(spi), sa(0x9001));
    let mut ue = Endpoint::new(
        1,
        PortPairs {
            local: ue_addr,
            remote: "10.46.0.1".parse().unwrap(),
            local_c: 7004,
            local_s: 7005,
            remote_c: 5102,
            remote_s: 5103,
        },
        EndpointConfig::default(),
        7,
        Instant::now(),
    );
    let mut segs = Segments::with_limit(1024);
    let seal = |pkt: &[u8]| {
        let mut frame = vec![0u8; 256 + pkt.len() + 256];
        frame[256..256 + pkt.len()].copy_from_slice(pkt);
        let mut f = Frame::new(&mut frame, 256, 256 + pkt.len());
        tx1.outbound(&mut f).unwrap();
        let (s, e) = (f.start, f.end);
        frame[s..e].to_vec()
    };
    let (mut total_ns, mut msgs, mut allocs, mut n) = (0u128, 0u64, 0u64, 0usize);
    let mut got = 0usize;
    let mut rx: Vec<u8> = Vec::new();
    let timed = |w: &mut Worker<MemIo>| {
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        w.poll_once();
        (t0.elapsed().as_nanos(), ALLOCS.load(Ordering::Relaxed) - a0)
    };
    // warm up (the handshake, buffers grown) outside the count, then 16 batches a round
    for b in 0..(1 + 16 * rounds) {
        for _ in 0..8 {
            if let Err(e) = ue.send(Instant::now(), Conn::Opened, &message(n), &mut segs) {
                panic!(
                    "{e:?} at {n}, got {got}: {:?} {:?}",
                    w.stats(),
                    ue.state(Conn::Opened)
                );
            }
            n += 1;
        }
        let mut batch_ns = 0u128;
        let mut batch_allocs = 0u64;
        // until the 8 are through and their 200s back (a handshake, a window, ACKs)
        for _ in 0..16 {
            let pkts: Vec<Vec<u8>> = segs.iter().map(|(p, _, _)| seal(p)).collect();
            segs.clear();
            for p in &pkts {
                w.io().inject(Side::Ue, p);
            }
            let (t, a) = timed(w);
            batch_ns += t;
            batch_allocs += a;
            let mut to_ue = Vec::new();
            let mut answers = Vec::new();
            for (side, p) in w.io().take_sent() {
                match side {
                    Side::Ue => to_ue.push(p),
                    Side::Core => answers.extend(core_answer(&p)),
                }
            }
            for p in &answers {
                w.io().inject(Side::Core, p);
            }
            if !answers.is_empty() {
                let (t, a) = timed(w);
                batch_ns += t;
                batch_allocs += a;
                to_ue.extend(w.io().take_sent().into_iter().map(|(_, p)| p));
            }
            for mut p in to_ue {
                let (inner, _) = rx3.decapsulate(&mut p).expect("over SA3");
                let _ = ue.handle_segment(Instant::now(), &p[inner], &mut segs);
            }
            // (the 200s counted in what came, a status line possibly split between reads)
            let from = rx.len().saturating_sub(11);
            ue.recv(Conn::Opened, |bytes| {
                rx.extend_from_slice(bytes);
                bytes.len()
            });
            got += rx[from..]
                .windows(12)
                .filter(|w| *w == b"SIP/2.0 200 ")
                .count();
            let keep = rx.len().saturating_sub(11);
            rx.drain(..keep);
            if got as u64 >= (n as u64) && segs.is_empty() {
                break;
            }
        }
        if b > 0 {
            total_ns += batch_ns;
            allocs += batch_allocs;
            msgs += 8;
        }
    }
    assert_eq!(got, n, "every 200 back on the connection: {:?}", w.stats());
    (total_ns as f64 / msgs as f64, allocs)
}

/// What the core would answer: a 200 to each forwarded request (built outside the loop's
/// allocation budget: this is the test harness playing the core).
trait CoreAnswers {
    fn take_sent_into_responses(&mut self) -> Vec<Vec<u8>>;
}

impl CoreAnswers for MemIo {
    fn take_sent_into_responses(&mut self) -> Vec<Vec<u8>> {
        let sent = self.take_sent();
        sent.into_iter()
            .filter_map(|(_, pkt)| core_answer(&pkt))
            .collect()
    }
}

/// The core's 200 to the request in the UDP packet `pkt`.
fn core_answer(pkt: &[u8]) -> Option<Vec<u8>> {
    let L4::Udp { src, dst, payload } = classify(pkt) else {
        return None;
    };
    let m = pcscf::sip::Message::parse(&pkt[payload.start..payload.end]).ok()?;
    let mut out = vec![0u8; 4096];
    let n = pcscf::sip::rules::build_response(m.view(), 200, "OK", b"core", &[], &mut out)?;
    let mut frame = vec![0u8; 128 + n];
    frame[128..].copy_from_slice(&out[..n]);
    let r = pcscf::wire::emit_datagram(&mut frame, 128..128 + n, dst, src).ok()?;
    Some(frame[r].to_vec())
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // optional: only the suites whose "alg/ealg" contains this (e.g. "gcm")
    let only = std::env::args().nth(2).unwrap_or_default();
    // optional: one transport only (perf/profile counts instructions of the UDP path)
    let transport = std::env::args().nth(3).unwrap_or_default();
    println!(
        "| suite | transport | ns per message (in + its 200 out) | messages/s on one core | allocations in the loop |"
    );
    println!("|---|---|---:|---:|---:|");
    for (alg, ealg) in [
        ("null", "aes-gcm"),
        ("hmac-sha-1-96", "aes-cbc"),
        ("hmac-sha-1-96", "null"),
    ] {
        if !format!("{alg}/{ealg}").contains(&only) {
            continue;
        }
        for (tcp, name) in [(false, "UDP"), (true, "TCP")] {
            if !transport.is_empty() && !name.eq_ignore_ascii_case(&transport) {
                continue;
            }
            let (ns, allocs) = run_suite(alg, ealg, rounds, tcp);
            println!(
                "| {alg} / {ealg} | {name} | {ns:.0} | {:.0} | {allocs} |",
                1e9 / ns
            );
        }
    }
}
