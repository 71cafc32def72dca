//! Fuzz TCP inside an SA set (`tcp::Host`: smoltcp and the SIP framing) with segments a hostile
//! UE writes: any flags, sequence and acknowledgement numbers, options, window and payload, on
//! the set's own ports (what the ESP selectors let through) or others, at any pace. Must never
//! panic; the host must refuse what is not its set's and keep its bounds (two connections, its
//! framers' capacity); what it sends must be its set's.
//! Input: a list of records `[kind, len, bytes…]`: kind's low bits pick the port pair (0/1 the
//! set's two, 2 a foreign one), the clock step and a `for_each_message` call.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run tcp_host` from the crate root.
#![no_main]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use pcscf::tcp::{Conn, Host, HostConfig, PortPairs, Segments};

const OURS: [u8; 4] = [10, 0, 0, 1];
const UE: [u8; 4] = [10, 0, 1, 2];

fn ports() -> PortPairs {
    let (local, remote): (IpAddr, IpAddr) = (OURS.into(), UE.into());
    PortPairs {
        local,
        remote,
        local_c: 5100,
        local_s: 5101,
        remote_c: 6100,
        remote_s: 6101,
    }
}

/// An IPv4 packet from the UE to us carrying `tcp` (its first 4 bytes are set to the ports).
fn packet(sport: u16, dport: u16, tcp: &[u8]) -> Vec<u8> {
    let mut seg = vec![0u8; 20.max(tcp.len())];
    seg[..tcp.len()].copy_from_slice(tcp);
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    let total = 20 + seg.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    p.extend_from_slice(&UE);
    p.extend_from_slice(&OURS);
    p.extend_from_slice(&seg);
    p
}

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = HostConfig {
        max_message: 2048,
        ..HostConfig::default()
    };
    let mut host = Host::new(cfg, 1);
    host.open(7, ports()).unwrap();
    let mut out = Segments::with_limit(64);
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (seg, next) = tail.split_at(n);
        rest = next;
        let (sport, dport) = match kind & 3 {
            0 => (6100, 5101),
            1 => (6101, 5100),
            _ => (6100, 5100),
        };
        let _ = host.handle_segment(7, now, &packet(sport, dport, seg), &mut out);
        if kind & 4 != 0 {
            host.for_each_message(now, &mut out, |id, _, m| {
                assert_eq!(id, 7);
                assert!(m.len() <= 2048);
            });
        }
        if kind & 8 != 0 {
            host.send(
                7,
                Conn::Opened,
                now,
                b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n",
                &mut out,
            )
            .ok();
        }
        now += Duration::from_millis(u64::from(kind >> 4) * 250);
        if host.poll_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now, &mut out);
        }
        for (pkt, id, _) in out.iter() {
            assert_eq!(id, 7);
            // ours to the UE, from one of our two ports
            assert_eq!(&pkt[12..16], &OURS);
            assert_eq!(&pkt[16..20], &UE);
            let sport = u16::from_be_bytes([pkt[20], pkt[21]]);
            assert!(sport == 5100 || sport == 5101);
        }
        out.clear();
    }
    host.close(7, now, &mut out);
    assert!(host.is_empty());
});
