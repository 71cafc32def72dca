//! Packets a backend drops as too big for a frame reach the operator: the worker publishes the
//! backend's `rx_oversize` as the `oversize` drop reason, which the Prometheus text shows.

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pcscf::daemon::metrics_text;
use pcscf::dataplane::{DropReason, MsgQueue, SharedStats, Worker, WorkerConfig};
use pcscf::io::{Desc, IoStats, MemIo, PacketIo, Side};

/// The in-memory backend, plus oversize drops it "saw".
struct Jumbo {
    mem: MemIo,
    oversize: u64,
}

impl PacketIo for Jumbo {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        self.mem.recv(out)
    }
    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        self.mem.frame(d)
    }
    fn alloc(&mut self, side: Side) -> Option<Desc> {
        self.mem.alloc(side)
    }
    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        self.mem.send(pkts)
    }
    fn free(&mut self, pkts: &[Desc]) {
        self.mem.free(pkts)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.mem.flush()
    }
    fn stats(&self) -> IoStats {
        IoStats {
            rx_oversize: self.oversize,
            ..self.mem.stats()
        }
    }
}

fn cfg() -> WorkerConfig {
    WorkerConfig {
        id: 0,
        ue_addrs: vec!["10.46.0.1".parse().unwrap()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: "10.0.1.10:5060".parse().unwrap(),
        icscf: Some("10.0.1.20:5060".parse().unwrap()),
        icscf_tcp: false,
        stateless_relay: false,
        via_sent_by: "10.0.1.10:5060".into(),
        hostname: "pcscf.example.net".into(),
        batch: 64,
        // (UDP-only peers: requests toward the UE stay datagrams)
        max_udp_request: usize::MAX,
        core_max_udp_request: usize::MAX,
        verify_udp_checksum: true,
    }
}

#[test]
fn backend_oversize_drops_are_a_published_drop_reason() {
    let shared = Arc::new(SharedStats::default());
    let io = Jumbo {
        mem: MemIo::new(16),
        oversize: 0,
    };
    let mut w = Worker::new(io, cfg(), MsgQueue::new(4, None), shared.clone());
    // An idle worker (nothing reached it: the backend dropped everything) still reports them.
    w.io().oversize = 3;
    w.run(&AtomicBool::new(true));
    let s = shared.snapshot();
    assert_eq!(s.drops[DropReason::Oversize as usize], 3);
    assert_eq!(s.dropped(), 3);
    let text = metrics_text(std::slice::from_ref(&shared));
    assert!(
        text.contains("pcscf_dropped_packets_total{worker=\"0\",reason=\"oversize\"} 3"),
        "{text}"
    );
}
