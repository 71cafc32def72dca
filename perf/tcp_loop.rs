//! SIP over TCP inside ESP against SIP over UDP inside ESP, on one core, in memory, no I/O:
//! what receiving a protected message costs the P-CSCF each way (issue 14's choice of a
//! user-space TCP, src/tcp).
//!
//! UDP: the UE's ESP packet is decrypted (`Sa::decapsulate`) and the message framed
//! (`Message::parse`). TCP: the UE's segments (smoltcp at the UE too, MSS from a 1,400-byte inner
//! MTU) are decrypted, handed to our [`Endpoint`], the bytes read into a [`Framer`], the message
//! cut and parsed; our ACKs are built and encrypted. Only the P-CSCF's side is timed; the UE's
//! is the harness. Also prints the memory of one SA set's TCP: with the UE's connection in use
//! (bytes allocated by `Endpoint::new` and a framer, counted by the allocator), with ours too,
//! and quiet (per set in a `tcp::Host` of 10,000).
//!
//! cargo run --release --example tcp_loop [rounds=5] [suite filter, e.g. gcm]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::sip::{Frame as StreamFrame, Framer, Message};
use pcscf::tcp::{Conn, Endpoint, EndpointConfig, Host, HostConfig, PortPairs, Segments};

#[path = "fixtures.rs"]
#[allow(dead_code)] // (the other tools' fixtures)
mod fixtures;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
// SAFETY: forwards to System; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(l.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

const OURS: [u8; 4] = [10, 46, 0, 1];
const UE: [u8; 4] = [10, 46, 0, 6];
/// Messages per round and size.
const MESSAGES: usize = 20_000;
/// Headroom and tailroom around a packet for ESP.
const ROOM: usize = 128;
/// The framer's capacity (the largest message we take over TCP).
const MAX_MESSAGE: usize = 16384;

fn message(n: usize, len: usize) -> Vec<u8> {
    fixtures::tcp_message(n, len, "10.46.0.6")
}

fn ports() -> (PortPairs, PortPairs) {
    let (ours, ue): (IpAddr, IpAddr) = (OURS.into(), UE.into());
    (
        PortPairs {
            local: ours,
            remote: ue,
            local_c: 5102,
            local_s: 5103,
            remote_c: 7005,
            remote_s: 7006,
        },
        PortPairs {
            local: ue,
            remote: ours,
            local_c: 7005,
            local_s: 7006,
            remote_c: 5102,
            remote_s: 5103,
        },
    )
}

/// `pkt` encrypted by `sa` into `buf` (with room around it); the ESP packet's range.
fn seal(sa: &Sa, pkt: &[u8], buf: &mut [u8]) -> std::ops::Range<usize> {
    buf[ROOM..ROOM + pkt.len()].copy_from_slice(pkt);
    let mut f = Frame::new(buf, ROOM, ROOM + pkt.len());
    sa.outbound(&mut f).expect("room");
    f.start..f.end
}

/// ns per message received over UDP in ESP.
fn udp(to_us: &Sa, from_ue: &Sa, len: usize) -> f64 {
    let msgs: Vec<Vec<u8>> = (0..64).map(|n| message(n, len)).collect();
    let mut ips: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 4 * MAX_MESSAGE];
    for m in &msgs {
        buf[ROOM + 28..ROOM + 28 + m.len()].copy_from_slice(m);
        let r = pcscf::wire::emit_datagram(
            &mut buf,
            ROOM + 28..ROOM + 28 + m.len(),
            SocketAddr::from((UE, 7005)),
            SocketAddr::from((OURS, 5103)),
        )
        .unwrap();
        ips.push(buf[r].to_vec());
    }
    let mut work = vec![0u8; 4 * MAX_MESSAGE];
    let mut total = Duration::ZERO;
    let mut n = 0usize;
    while n < MESSAGES {
        for ip in &ips {
            // the UE seals a fresh packet (harness: each sequence number once)
            let e = seal(from_ue, ip, &mut work);
            let len = e.end - e.start;
            work.copy_within(e, 0);
            let t = Instant::now();
            let (inner, _) = to_us.decapsulate(&mut work[..len]).expect("decrypts");
            // IPv4 (20) + UDP (8) headers, then the message
            let ok = Message::parse(&work[inner.start + 28..inner.end]).is_ok();
            total += t.elapsed();
            assert!(ok);
            n += 1;
        }
    }
    total.as_nanos() as f64 / n as f64
}

/// ns per message received over TCP in ESP, and the allocations in the timed part.
fn tcp(sas: [&Sa; 4], len: usize) -> (f64, u64) {
    let [to_us, from_ue, to_ue, from_us] = sas;
    let (p, u) = ports();
    let cfg = EndpointConfig::default();
    let t0 = Instant::now();
    let mut now = t0;
    let mut ours = Endpoint::new(1, p, cfg, 1, now);
    let mut ue = Endpoint::new(2, u, cfg, 2, now);
    let mut framer = Framer::with_capacity(MAX_MESSAGE);
    let mut out = Segments::with_limit(256);
    let mut ue_out = Segments::with_limit(256);
    let mut esp = vec![0u8; 4 * MAX_MESSAGE];
    let mut work = vec![0u8; 4 * MAX_MESSAGE];
    // the UE's encrypted segments waiting for us, and ours for it
    let mut wire_in: Vec<Vec<u8>> = Vec::new();
    // our sealed ACKs: one arena and their ranges (kept between rounds: no allocation once grown)
    let mut wire_out: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut wire_out_at: Vec<std::ops::Range<usize>> = Vec::with_capacity(4096);
    let msgs: Vec<Vec<u8>> = (0..64).map(|n| message(n, len)).collect();
    let mut total = Duration::ZERO;
    let mut allocs = 0u64;
    let mut sent = 0usize;
    let mut got = 0usize;
    let mut timed = 0usize;
    // warm-up: the handshake and the buffers' growth (the first batches) are not timed
    let mut warm = 16u32;
    while got < MESSAGES {
        // the UE sends until its buffer is full (harness)
        while sent < got + 8
            && ue
                .send(now, Conn::Opened, &msgs[sent % msgs.len()], &mut ue_out)
                .is_ok()
        {
            sent += 1;
        }
        ue.handle_timeout(now, &mut ue_out);
        for (pkt, _, _) in ue_out.iter() {
            let r = seal(from_ue, pkt, &mut esp);
            wire_in.push(esp[r].to_vec());
        }
        ue_out.clear();
        // us (timed): decrypt, TCP, frame, parse; our ACKs encrypted
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let got0 = got;
        let t = Instant::now();
        for pkt in &wire_in {
            work[..pkt.len()].copy_from_slice(pkt);
            let (inner, _) = to_us.decapsulate(&mut work[..pkt.len()]).expect("decrypts");
            let _ = ours.handle_segment(now, &work[inner], &mut out);
        }
        if ours.poll_at(now).is_some_and(|at| at <= now) {
            ours.handle_timeout(now, &mut out);
        }
        loop {
            let n = ours.recv(Conn::Accepted, |b| {
                let room = framer.spare();
                let n = b.len().min(room.len());
                room[..n].copy_from_slice(&b[..n]);
                n
            });
            framer.commit(n);
            while let Ok(Some(f)) = framer.next_frame() {
                if let StreamFrame::Message(m) = f {
                    assert!(Message::parse(m).is_ok());
                    got += 1;
                }
            }
            if n == 0 {
                break;
            }
        }
        for (pkt, _, _) in out.iter() {
            let r = seal(from_us, pkt, &mut esp);
            let at = wire_out.len();
            wire_out.extend_from_slice(&esp[r]);
            wire_out_at.push(at..wire_out.len());
        }
        out.clear();
        let dt = t.elapsed();
        if warm == 0 {
            total += dt;
            timed += got - got0;
            allocs += ALLOCS.load(Ordering::Relaxed) - a0;
        }
        warm = warm.saturating_sub(1);
        wire_in.clear();
        // the UE takes our ACKs (harness)
        for r in wire_out_at.drain(..) {
            let pkt = &wire_out[r];
            work[..pkt.len()].copy_from_slice(pkt);
            let (inner, _) = to_ue.decapsulate(&mut work[..pkt.len()]).expect("decrypts");
            let _ = ue.handle_segment(now, &work[inner], &mut ue_out);
        }
        wire_out.clear();
        now += Duration::from_micros(200);
        assert!(now - t0 < Duration::from_secs(3600), "stalled at {got}");
    }
    (total.as_nanos() as f64 / timed as f64, allocs)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let only = std::env::args().nth(2).unwrap_or_default();
    let (ck, ik) = ([0x11u8; 16], [0x22u8; 16]);
    // memory of one SA set's TCP: with the UE's connection in use (our endpoint and one
    // framer, counted by the allocator), with ours too (its socket's buffers and a second
    // framer, taken when we connect: their sizes added), and quiet (a `tcp::Host` builds
    // nothing before the first segment or message)
    let b0 = BYTES.load(Ordering::Relaxed);
    let (p, _) = ports();
    let now = Instant::now();
    let ep = Endpoint::new(3, p, EndpointConfig::default(), 3, now);
    let f1 = Framer::with_capacity(MAX_MESSAGE);
    let one = BYTES.load(Ordering::Relaxed) - b0 + std::mem::size_of_val(&ep) as u64;
    // ours: its socket's receive and send buffers and a second framer, taken when we connect
    let cfg = EndpointConfig::default();
    let both = one + (cfg.rx_buffer + cfg.tx_buffer + MAX_MESSAGE) as u64;
    println!(
        "memory of one SA set's TCP: {} KiB with the UE's connection in use, {} KiB with ours too",
        one / 1024,
        both / 1024
    );
    drop((ep, f1));
    let sets = 10_000u64;
    let mut host = Host::new(HostConfig::default(), 1);
    let b0 = BYTES.load(Ordering::Relaxed);
    for id in 0..sets {
        host.open(id, p).unwrap();
    }
    let heap = BYTES.load(Ordering::Relaxed) - b0;
    println!(
        "memory of one quiet SA set's TCP (no connection; {sets} sets in a tcp::Host): {} B",
        heap / sets
    );
    drop(host);
    println!();
    println!(
        "| suite | message | UDP ns/msg | TCP ns/msg | TCP/UDP | TCP msgs/s on one core | allocations in the TCP loop |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (alg, ealg) in [("null", "aes-gcm"), ("hmac-sha-1-96", "aes-cbc")] {
        if !format!("{alg}/{ealg}").contains(&only) {
            continue;
        }
        let sa = |spi| Sa::from_aka(spi, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        for len in [1000, 3000] {
            let mut u = Vec::new();
            let mut t = Vec::new();
            let mut allocs = 0;
            for _ in 0..rounds {
                // UE → us: its SA to our port-s (sealed by the UE, opened by us); us → UE
                // likewise; fresh each run, so sequence numbers start again
                let (to_us, from_ue) = (sa(0x1001), sa(0x1001));
                let (to_ue, from_us) = (sa(0x2001), sa(0x2001));
                u.push(udp(&to_us, &from_ue, len));
                let (to_us, from_ue) = (sa(0x1001), sa(0x1001));
                let (ns, a) = tcp([&to_us, &from_ue, &to_ue, &from_us], len);
                t.push(ns);
                allocs += a;
            }
            u.sort_by(f64::total_cmp);
            t.sort_by(f64::total_cmp);
            let (u, t) = (u[u.len() / 2], t[t.len() / 2]);
            println!(
                "| {alg} / {ealg} | {len} B | {u:.0} | {t:.0} | {:.2} | {:.0} | {allocs} |",
                t / u,
                1e9 / t
            );
            assert_eq!(allocs, 0, "the TCP receive path allocates");
        }
    }
}
