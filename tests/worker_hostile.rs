//! Hostile input through the whole worker (issue 10): responses that outgrow their frame, and
//! responses steered by what a UE writes. Over the in-memory backend.

use std::net::SocketAddr;
use std::sync::Arc;

use pcscf::dataplane::l3::{self, L4};
use pcscf::dataplane::queue::MsgQueue;
use pcscf::dataplane::stats::{Drop, SharedStats};
use pcscf::dataplane::worker::{Worker, WorkerConfig};
use pcscf::io::Side;
use pcscf::io::mem::MemIo;

const MESSAGE: &[u8] = include_bytes!("data/ims/message_v4.sip");

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn cfg(relay: bool) -> WorkerConfig {
    WorkerConfig {
        id: 0,
        ue_addrs: vec!["10.46.0.1".parse().unwrap(), "fd00:46::1".parse().unwrap()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: addr("10.0.1.10:5060"),
        icscf: Some(addr("10.0.1.20:5060")),
        stateless_relay: relay,
        via_sent_by: "10.0.1.10:5060".into(),
        hostname: "pcscf.example.net".into(),
        batch: 64,
        verify_udp_checksum: true,
    }
}

fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + payload.len()];
    buf[128..].copy_from_slice(payload);
    let r = l3::write_udp(&mut buf, 128..128 + payload.len(), addr(src), addr(dst)).unwrap();
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

/// Item 1: a ~3.4 KB request whose 403 (compact Via names expanded to `Via: `) or 400 (many
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
        assert_eq!(s.drops[Drop::NoRoom as usize], 1, "{code_drop}");
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
    assert!(matches!(l3::classify(&sent[0].1), L4::Udp { .. }));
    assert_eq!(w.stats().replied, 1);
}
