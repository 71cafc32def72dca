//! Whole packets through a [`Worker`] over the in-memory backend, for the worker fuzz target
//! (fuzz/fuzz_targets/worker.rs) and its proptest (tests/sans_io/worker_proptest.rs).
//!
//! One registered UE (10.46.0.6, port-c 7004 / port-s 7005) with SA1 (its port-c → our port-s
//! 5103, registered), SA4 (its port-s → our port-c 5102) and SA2 (our port-c → its port-s), keys
//! fixed, so SIP bytes can be ESP-protected the way the UE would and reach the SIP stages inside
//! ESP. The first input byte picks how the SIP bytes arrive ([`Kind`]), whether the worker is in
//! stateless relay mode (bit 2), and whether [`MARK`] in the SIP bytes becomes one of our genuine
//! branches (bit 3: the core-side one from the core, the UE-side one from the UE), so the
//! response paths behind the branch check are reached too.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use pcscf::dataplane::{L4, MsgQueue, SharedStats, Worker, WorkerConfig, WorkerStats, classify};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::io::{MemIo, Side};
use pcscf::satable::{EntryMeta, Registration, SaTableConfig, SetPorts, SetState, sa_table};
use pcscf::tcp::{Conn, Endpoint, EndpointConfig, PortPairs, Segments};

pub const UE: &str = "10.46.0.6";
pub const UE_PORT_C: u16 = 7004;
pub const UE_PORT_S: u16 = 7005;
pub const OUR_PORT_C: u16 = 5102;
pub const OUR_PORT_S: u16 = 5103;
/// The SPI of the outbound SA2 (chosen by the UE).
pub const SPI_SA2: u32 = 0x8000_0002;
const CK: [u8; 16] = [0x11; 16];
const IK: [u8; 16] = [0x22; 16];
const ALG: &str = "hmac-sha-1-96";
const EALG: &str = "null";
pub const FRAMES: usize = 64;
/// In an input with bit 3 of byte 0 set, replaced by a branch the worker sealed.
pub const MARK: &[u8] = b"z9hG4bK$";
/// What the rig sends the worker to learn its branches: a MESSAGE from the UE (over SA1, or
/// in the clear in relay mode) and one from the core to the UE.
pub const UE_MESSAGE: &[u8] = include_bytes!("../data/ims/message_v4.sip");
pub const CORE_MESSAGE: &[u8] = b"MESSAGE sip:alice@10.46.0.6:7005 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.30:6060;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\nRoute: <sip:10.0.1.10:5060;lr>\r\nFrom: <sip:b@ims.example.net>;tag=1\r\nTo: <sip:alice@ims.example.net>\r\nCall-ID: y\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn cfg(relay: bool) -> WorkerConfig {
    WorkerConfig {
        id: 0,
        ue_addrs: vec!["10.46.0.1".parse().unwrap(), "fd00:46::1".parse().unwrap()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: addr("10.0.1.10:5060"),
        icscf: Some(addr("10.0.1.20:5060")),
        icscf_tcp: false,
        stateless_relay: relay,
        via_sent_by: "10.0.1.10:5060".into(),
        hostname: "pcscf.example.net".into(),
        batch: 64,
        // (UDP-only peers: requests toward the UE stay datagrams)
        max_udp_request: usize::MAX,
        core_max_udp_request: usize::MAX,
        verify_udp_checksum: true,
    }
}

/// An IPv4 UDP packet carrying `payload`.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + payload.len()];
    buf[128..].copy_from_slice(payload);
    let r = pcscf::wire::emit_datagram(&mut buf, 128..128 + payload.len(), src, dst)
        .ok()
        .unwrap();
    buf[r].to_vec()
}

/// An SA of the rig's UE (its suite and keys), for one more set.
pub fn sa(spi: u32) -> Sa {
    Sa::from_aka(spi, ALG, EALG, &CK, &IK, SaOptions::default()).unwrap()
}

/// How the SIP bytes of an input arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Plain UDP from the UE to our port 5060.
    PlainUe,
    /// Plain UDP from the core (the I-CSCF) to our core address.
    Core,
    /// Over SA1: the UE's port-c → our port-s (its requests, and its responses there).
    EspPortC,
    /// Over SA4: the UE's port-s → our port-c (its responses to requests sent over SA2).
    EspPortS,
}

impl Kind {
    pub fn of(b: u8) -> Kind {
        match b & 3 {
            0 => Kind::PlainUe,
            1 => Kind::Core,
            2 => Kind::EspPortC,
            _ => Kind::EspPortS,
        }
    }
}

/// A worker with the UE's SAs installed, and the UE's own transmit SAs (SA1, SA4).
pub struct Rig {
    pub w: Worker<MemIo>,
    pub punt: Arc<MsgQueue>,
    /// Where the worker's dialog events go (`control::dialogs`).
    pub events: Arc<MsgQueue>,
    pub shared: Arc<SharedStats>,
    pub sa1_tx: Sa,
    pub sa4_tx: Sa,
    /// The UE's receive side of SA2 (to read what the worker sent it).
    pub sa2_rx: Sa,
    /// Keeps the table's writer (and its entries) alive.
    pub writer: pcscf::satable::SaWriter,
    /// The UE's registration, as its inbound SAs carry it.
    pub reg: Arc<Registration>,
    /// The worker's queues with the core TCP thread: what it framed for the worker, and what
    /// the worker sends to the core over TCP.
    pub core_in: Arc<MsgQueue>,
    pub core_out: Arc<MsgQueue>,
    /// Our branch on the UE's MESSAGE toward the core, and on the core's MESSAGE to the UE.
    pub core_branch: Vec<u8>,
    pub ue_branch: Vec<u8>,
}

/// The top Via's branch of `sip`.
fn top_branch(sip: &[u8]) -> Vec<u8> {
    let m = pcscf::sip::Message::parse(sip).unwrap();
    let v = m.view();
    let via = v.values(pcscf::sip::HeaderName::Via).next().unwrap();
    pcscf::sip::headers::Via::parse(via)
        .and_then(|v| v.branch())
        .unwrap()
        .to_vec()
}

/// The SIP payload of a UDP packet.
fn sip_in(pkt: &[u8]) -> Vec<u8> {
    match classify(pkt) {
        L4::Udp { payload, .. } => pkt[payload.start..payload.end].to_vec(),
        other => panic!("not UDP: {other:?}"),
    }
}

pub fn rig(relay: bool) -> Rig {
    rig_for(relay, 1)
}

/// [`rig`] with the UE's SA set and registration under the registrar's `binding` id.
pub fn rig_for(relay: bool, binding: u64) -> Rig {
    rig_with(cfg(relay), binding)
}

/// [`rig_for`] with a worker configured as `wcfg` says.
pub fn rig_with(wcfg: WorkerConfig, binding: u64) -> Rig {
    let relay = wcfg.stateless_relay;
    let (mut writer, reader) = sa_table(SaTableConfig {
        inbound_capacity: 16,
        outbound_capacity: 16,
        spi_min: 4096,
        spi_max: 1 << 20,
    })
    .unwrap();
    let meta = |ue_port, local_port| EntryMeta {
        ue_addr: UE.parse().unwrap(),
        ue_port,
        ue_ports: SetPorts {
            c: UE_PORT_C,
            s: UE_PORT_S,
        },
        local_port,
        ports: SetPorts {
            c: OUR_PORT_C,
            s: OUR_PORT_S,
        },
        binding,
        state: SetState::New,
    };
    let spi1 = writer.reserve_spi().unwrap();
    writer
        .install_inbound(sa(spi1), &meta(UE_PORT_C, OUR_PORT_S))
        .unwrap();
    let spi4 = writer.reserve_spi().unwrap();
    writer
        .install_inbound(sa(spi4), &meta(UE_PORT_S, OUR_PORT_C))
        .unwrap();
    writer
        .install_outbound(sa(SPI_SA2), &meta(UE_PORT_S, OUR_PORT_C))
        .unwrap();
    let reg = Arc::new(Registration::with_impus(
        b"<sip:alice@ims.example.net>",
        b"<sip:orig@scscf.ims.example.net:6060;lr>",
        &[
            b"sip:alice@ims.example.net",
            b"tel:+15550100",
            b"sip:alice.work@ims.example.net",
        ],
        addr("10.0.1.30:6060"),
    ));
    writer
        .set_inbound_registration(spi1, Some(reg.clone()))
        .unwrap();
    writer
        .set_inbound_registration(spi4, Some(reg.clone()))
        .unwrap();
    let punt = MsgQueue::new(64, None);
    let shared = Arc::new(SharedStats::default());
    let events = MsgQueue::new(64, None);
    let (core_in, core_out) = (MsgQueue::new(4, None), MsgQueue::new(4, None));
    let w = Worker::new(MemIo::new(FRAMES), wcfg, punt.clone(), shared.clone())
        .with_sas(reader)
        .with_dialog_events(events.clone())
        .with_core_tcp(core_in.clone(), core_out.clone());
    let mut r = Rig {
        w,
        punt,
        events,
        shared,
        sa1_tx: sa(spi1),
        sa4_tx: sa(spi4),
        sa2_rx: sa(SPI_SA2),
        writer,
        reg,
        core_in,
        core_out,
        core_branch: Vec::new(),
        ue_branch: Vec::new(),
    };
    // learn the branches (stable: the same request always gets the same one)
    let kind = if relay { Kind::PlainUe } else { Kind::EspPortC };
    let sent = r.exchange(kind, UE_MESSAGE);
    r.core_branch = top_branch(&sip_in(&sent));
    let mut esp = r.exchange(Kind::Core, CORE_MESSAGE);
    let (inner, _) = r.sa2_rx.decapsulate(&mut esp).unwrap();
    r.ue_branch = top_branch(&sip_in(&esp[inner]));
    r
}

/// `sip` over `tx` from the UE's `sport` to our `dport`, as the UE would send it.
pub fn esp(tx: &Sa, sport: u16, dport: u16, sip: &[u8]) -> Option<Vec<u8>> {
    let inner = udp(
        SocketAddr::new(UE.parse().unwrap(), sport),
        SocketAddr::new("10.46.0.1".parse().unwrap(), dport),
        sip,
    );
    let mut buf = vec![0u8; 256 + inner.len() + 256];
    buf[256..256 + inner.len()].copy_from_slice(&inner);
    let mut f = Frame::new(&mut buf, 256, 256 + inner.len());
    tx.outbound(&mut f).ok()?;
    let (s, e) = (f.start, f.end);
    Some(buf[s..e].to_vec())
}

impl Rig {
    /// Send `sip` the way `kind` says; the one packet the worker sent for it.
    pub fn exchange(&mut self, kind: Kind, sip: &[u8]) -> Vec<u8> {
        let (side, pkt) = self.packet(kind, sip).unwrap();
        assert!(self.w.io().inject(side, &pkt));
        self.w.poll_once();
        let mut sent = self.w.io().take_sent();
        assert_eq!(sent.len(), 1, "{:?}", self.w.stats());
        sent.remove(0).1
    }

    /// The packet that carries `sip` the way `kind` says, or `None` if it cannot be built.
    pub fn packet(&self, kind: Kind, sip: &[u8]) -> Option<(Side, Vec<u8>)> {
        let ue = |p| SocketAddr::new(UE.parse().unwrap(), p);
        Some(match kind {
            Kind::PlainUe => (Side::Ue, udp(ue(5060), addr("10.46.0.1:5060"), sip)),
            Kind::Core => (
                Side::Core,
                udp(addr("10.0.1.20:5060"), addr("10.0.1.10:5060"), sip),
            ),
            Kind::EspPortC => (Side::Ue, esp(&self.sa1_tx, UE_PORT_C, OUR_PORT_S, sip)?),
            Kind::EspPortS => (Side::Ue, esp(&self.sa4_tx, UE_PORT_S, OUR_PORT_C, sip)?),
        })
    }
}

/// One fuzz input on a fresh rig: byte 0 picks the [`Kind`] (bit 2: stateless relay mode; bit 4
/// with [`Kind::Core`]: on a TCP connection of the core, through the core TCP thread's queue),
/// the rest is SIP. See [`Rig::run`].
pub fn run_one(data: &[u8]) -> WorkerStats {
    let Some(&sel) = data.first() else {
        return WorkerStats::default();
    };
    rig(sel & 4 != 0).run(data)
}

impl Rig {
    /// One input (as for [`run_one`]; the relay bit is the rig's) through this rig's worker, and
    /// what must always hold: no panic, the packet accounted for exactly once, every frame back
    /// in the pool, and what was sent is IP. Returns the counters this packet moved.
    pub fn run(&mut self, data: &[u8]) -> WorkerStats {
        let Some((&sel, sip)) = data.split_first() else {
            return WorkerStats::default();
        };
        let kind = Kind::of(sel);
        let marked;
        let sip = if sel & 8 != 0 {
            let b = if kind == Kind::Core {
                &self.core_branch
            } else {
                &self.ue_branch
            };
            marked = replace_all(sip, MARK, b);
            &marked[..]
        } else {
            sip
        };
        let on_core_tcp = kind == Kind::Core && sel & 16 != 0;
        if on_core_tcp {
            let d = pcscf::dataplane::Datagram {
                side: Side::Core,
                protection: pcscf::dataplane::Protection::CoreStream { conn: 0x0001_0001 },
                src: addr("10.0.1.20:5060"),
                dst: addr("10.0.1.10:5060"),
                payload: sip,
            };
            if self.core_in.push(d).is_err() {
                return WorkerStats::default();
            }
        } else {
            let Some((side, pkt)) = self.packet(kind, sip) else {
                return WorkerStats::default();
            };
            if !self.w.io().inject(side, &pkt) {
                return WorkerStats::default();
            }
        }
        let before = *self.w.stats();
        self.w.poll_once();
        let s = *self.w.stats();
        let d = |f: fn(&WorkerStats) -> u64| f(&s) - f(&before);
        assert_eq!(d(|s| s.rx), u64::from(!on_core_tcp));
        // (one that fits no frame is dropped before the SIP stage counts it)
        assert!(d(|s| s.core_stream_in) <= u64::from(on_core_tcp));
        assert_eq!(
            d(|s| s.forwarded) + d(|s| s.punted) + d(|s| s.replied) + d(|s| s.dropped()),
            1,
            "the packet accounted for once: {s:?}"
        );
        assert_eq!(self.shared.snapshot(), s);
        let sent = self.w.io().take_sent();
        let mut to_core_tcp = 0;
        while let Some(m) = self.core_out.pop() {
            to_core_tcp += 1;
            self.core_out.recycle(m);
        }
        assert!(sent.len() + to_core_tcp <= 1);
        for (_, p) in &sent {
            assert!(
                !matches!(classify(p), L4::Other),
                "sent a packet that is not IP/UDP/ESP"
            );
        }
        while let Some(b) = self.punt.pop() {
            self.punt.recycle(b);
        }
        assert_eq!(self.w.io().free_frames(), FRAMES, "every frame back");
        let mut delta = s;
        for (f, b) in [
            (&mut delta.batches, before.batches),
            (&mut delta.rx, before.rx),
            (&mut delta.tx, before.tx),
            (&mut delta.classify, before.classify),
            (&mut delta.esp_in, before.esp_in),
            (&mut delta.sip, before.sip),
            (&mut delta.esp_out, before.esp_out),
            (&mut delta.forwarded, before.forwarded),
            (&mut delta.punted, before.punted),
            (&mut delta.replied, before.replied),
        ] {
            *f -= b;
        }
        for (f, b) in delta.drops.iter_mut().zip(before.drops) {
            *f -= b;
        }
        delta
    }
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + to.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

// ---- SIP over TCP inside the SAs: the UE's side (tests/sans_io/worker_tcp.rs, fuzz) ----

/// The SPI of the outbound SA3 (our port-s → the UE's port-c; the UE chose it).
pub const SPI_SA3: u32 = 0x8000_0003;
pub const BINDING: u64 = 7;
pub const OURS: &str = "10.46.0.1";

/// The UE's side of its TCP inside the set, and what it received.
pub struct Ue {
    pub ep: Endpoint,
    pub segs: Segments,
    pub sa1_tx: Sa,
    /// Its port-s → our port-c (its side of our connection).
    pub sa4_tx: Option<Sa>,
    pub sa3_rx: Sa,
    pub sa2_rx: Sa,
    /// Bytes the UE read from our connection to it.
    pub got_ours: Vec<u8>,
    /// Bytes the UE read from its connection.
    pub got: Vec<u8>,
}

impl Ue {
    pub fn new(sa1_tx: Sa) -> Ue {
        Ue::with_port_c(sa1_tx, UE_PORT_C)
    }

    /// [`Ue::new`] for a set in which the UE's port-c is `port_c` (its port-s the rig's).
    pub fn with_port_c(sa1_tx: Sa, port_c: u16) -> Ue {
        let ports = PortPairs {
            local: UE.parse().unwrap(),
            remote: OURS.parse().unwrap(),
            local_c: port_c,
            local_s: UE_PORT_S,
            remote_c: OUR_PORT_C,
            remote_s: OUR_PORT_S,
        };
        Ue {
            ep: Endpoint::new(1, ports, EndpointConfig::default(), 42, Instant::now()),
            segs: Segments::with_limit(256),
            sa1_tx,
            sa4_tx: None,
            sa3_rx: sa(SPI_SA3),
            sa2_rx: sa(SPI_SA2),
            got_ours: Vec::new(),
            got: Vec::new(),
        }
    }

    /// `msg` whole on the UE's connection (connecting first if need be).
    pub fn send(&mut self, msg: &[u8]) {
        self.ep
            .send(Instant::now(), Conn::Opened, msg, &mut self.segs)
            .unwrap();
    }

    /// What the UE wants sent, each IP packet ESP-protected over SA1.
    pub fn packets(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (pkt, _, conn) in self.segs.iter() {
            let over = match conn {
                Conn::Opened => &self.sa1_tx,
                Conn::Accepted => self.sa4_tx.as_ref().expect("the rig's SA4"),
            };
            out.push(protect(over, pkt));
        }
        self.segs.clear();
        out
    }

    /// An ESP packet the worker sent toward the UE: TCP inside SA3 (the UE's connection) or
    /// SA2 (ours).
    pub fn take(&mut self, mut esp: Vec<u8>) {
        let spi = u32::from_be_bytes(esp[20..24].try_into().unwrap());
        let rx = if spi == SPI_SA3 {
            &self.sa3_rx
        } else {
            &self.sa2_rx
        };
        let (inner, _) = rx.decapsulate(&mut esp).expect("over SA3 or SA2");
        let _ = self
            .ep
            .handle_segment(Instant::now(), &esp[inner], &mut self.segs);
        for (conn, got) in [
            (Conn::Opened, &mut self.got),
            (Conn::Accepted, &mut self.got_ours),
        ] {
            self.ep.recv(conn, |b| {
                got.extend_from_slice(b);
                b.len()
            });
        }
    }

    /// `msg` whole on our connection to the UE (its answer to our request).
    pub fn answer_on_ours(&mut self, msg: &[u8]) {
        self.ep
            .send(Instant::now(), Conn::Accepted, msg, &mut self.segs)
            .unwrap();
    }
}

/// The IP packet `pkt` ESP-protected over `tx`.
pub fn protect(tx: &Sa, pkt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 256 + pkt.len() + 256];
    buf[256..256 + pkt.len()].copy_from_slice(pkt);
    let mut f = Frame::new(&mut buf, 256, 256 + pkt.len());
    tx.outbound(&mut f).unwrap();
    let (s, e) = (f.start, f.end);
    buf[s..e].to_vec()
}

/// The rig's set, with SA3 installed (our port-s → the UE's port-c, where our segments of the
/// UE's connection go).
pub fn tcp_rig() -> Rig {
    with_sa3(rig_for(false, BINDING))
}

pub fn with_sa3(mut r: Rig) -> Rig {
    r.writer
        .install_outbound(
            sa(SPI_SA3),
            &EntryMeta {
                ue_addr: UE.parse().unwrap(),
                ue_port: UE_PORT_C,
                ue_ports: SetPorts {
                    c: UE_PORT_C,
                    s: UE_PORT_S,
                },
                local_port: OUR_PORT_S,
                ports: SetPorts {
                    c: OUR_PORT_C,
                    s: OUR_PORT_S,
                },
                binding: BINDING,
                state: SetState::New,
            },
        )
        .unwrap();
    r
}

/// Move packets between the UE and the worker until neither has anything to say; returns the
/// SIP messages the worker sent toward the core.
pub fn pump(ue: &mut Ue, w: &mut Worker<MemIo>) -> Vec<Vec<u8>> {
    let mut core = Vec::new();
    for _ in 0..64 {
        let pkts = ue.packets();
        for p in &pkts {
            assert!(w.io().inject(Side::Ue, p));
        }
        w.poll_once();
        let sent = w.io().take_sent();
        if pkts.is_empty() && sent.is_empty() {
            return core;
        }
        for (side, pkt) in sent {
            match side {
                Side::Ue => ue.take(pkt),
                Side::Core => match classify(&pkt) {
                    L4::Udp { payload, .. } => core.push(pkt[payload].to_vec()),
                    other => panic!("not UDP toward the core: {other:?}"),
                },
            }
        }
    }
    panic!("no quiet after 64 rounds");
}

/// An IPv4 packet carrying the TCP header/segment `tcp` (checksum left 0: the stack checks it).
pub fn ip_tcp(src: IpAddr, dst: IpAddr, tcp: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        unreachable!()
    };
    let mut p = vec![0u8; 20 + tcp.len()];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    let mut sum = 0u32;
    for c in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..].copy_from_slice(tcp);
    p
}

/// The TCP checksum of `tcp` (its checksum field taken as zero) between IPv4 `src` and `dst`
/// (RFC 9293 §3.1: over the pseudo-header and the segment).
pub fn tcp_checksum(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, tcp: &[u8]) -> u16 {
    let mut sum = 0u32;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&[0, 6]);
    add(&(tcp.len() as u16).to_be_bytes());
    let mut t = tcp.to_vec();
    if t.len() >= 18 {
        t[16] = 0;
        t[17] = 0;
    }
    add(&t);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One fuzz input as hostile TCP from the rig's UE: byte 0 picks the SA (bit 0: SA1, its
/// port-c → our port-s; else SA4, its port-s → our port-c), whether the ports are the SA's
/// (bit 1) and the checksum right (bit 2); the rest is the TCP segment. What must hold: no
/// panic, the packet taken by the TCP or dropped, every frame back, and whatever the worker
/// sends toward the UE ESP over its SA3 or SA2.
pub fn run_tcp_segment(data: &[u8]) {
    let Some((&sel, seg)) = data.split_first() else {
        return;
    };
    if seg.is_empty() {
        // (ESP takes no empty payload: nothing to send)
        return;
    }
    let mut r = tcp_rig();
    let (tx, sport, dport) = if sel & 1 != 0 {
        (&r.sa1_tx, UE_PORT_C, OUR_PORT_S)
    } else {
        (&r.sa4_tx, UE_PORT_S, OUR_PORT_C)
    };
    let mut seg = seg.to_vec();
    if sel & 2 != 0 && seg.len() >= 4 {
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&dport.to_be_bytes());
    }
    let (ue, ours): (std::net::Ipv4Addr, std::net::Ipv4Addr) =
        (UE.parse().unwrap(), OURS.parse().unwrap());
    if sel & 4 != 0 && seg.len() >= 18 {
        let c = tcp_checksum(ue, ours, &seg);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
    }
    let pkt = protect(tx, &ip_tcp(ue.into(), ours.into(), &seg));
    if !r.w.io().inject(Side::Ue, &pkt) {
        return;
    }
    let before = *r.w.stats();
    r.w.poll_once();
    let s = *r.w.stats();
    assert_eq!(
        (s.tcp_segments - before.tcp_segments) + (s.dropped() - before.dropped()),
        1,
        "the segment taken or dropped: {s:?}"
    );
    check_sent_to_ue(&mut r);
}

/// One fuzz input as the byte stream of the rig UE's honest connection (whole, after the
/// handshake): framing, pings and SIP from a hostile UE through the worker's TCP. What must
/// hold: no panic, every frame back, what goes toward the UE ESP over its SA3 or SA2.
pub fn run_tcp_stream(data: &[u8]) {
    if data.is_empty() || data.len() > 8192 {
        return;
    }
    let mut r = tcp_rig();
    let mut ue = Ue::new(std::mem::replace(&mut r.sa1_tx, sa(1)));
    ue.send(data);
    // (pump asserts every packet toward the UE decrypts under SA3 or SA2)
    let _ = pump(&mut ue, &mut r.w);
    assert_eq!(r.w.io().free_frames(), FRAMES, "every frame back");
}

/// What the worker sent: toward the UE only ESP over its SA3 or SA2, toward the core UDP; and
/// every frame back in the pool.
fn check_sent_to_ue(r: &mut Rig) {
    for (side, mut pkt) in r.w.io().take_sent() {
        match side {
            Side::Ue => {
                let spi = u32::from_be_bytes(pkt[20..24].try_into().unwrap());
                let rx = if spi == SPI_SA3 {
                    sa(SPI_SA3)
                } else {
                    sa(SPI_SA2)
                };
                // (a fresh SA: its replay window starts anew)
                assert!(rx.decapsulate(&mut pkt).is_ok(), "ESP over SA3 or SA2");
            }
            Side::Core => assert!(matches!(classify(&pkt), L4::Udp { .. })),
        }
    }
    assert_eq!(r.w.io().free_frames(), FRAMES, "every frame back");
}
