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

use std::net::SocketAddr;
use std::sync::Arc;

use pcscf::dataplane::{L4, MsgQueue, SharedStats, Worker, WorkerConfig, WorkerStats, classify};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::io::{MemIo, Side};
use pcscf::satable::{EntryMeta, Registration, SaTableConfig, SetPorts, SetState, sa_table};

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
const FRAMES: usize = 64;
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
        stateless_relay: relay,
        via_sent_by: "10.0.1.10:5060".into(),
        hostname: "pcscf.example.net".into(),
        batch: 64,
        // (UDP-only peers: requests toward the UE stay datagrams)
        max_udp_request: usize::MAX,
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
    let w = Worker::new(MemIo::new(FRAMES), wcfg, punt.clone(), shared.clone())
        .with_sas(reader)
        .with_dialog_events(events.clone());
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

/// One fuzz input on a fresh rig: byte 0 picks the [`Kind`] (bit 2: stateless relay mode), the
/// rest is SIP. See [`Rig::run`].
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
        let Some((side, pkt)) = self.packet(kind, sip) else {
            return WorkerStats::default();
        };
        if !self.w.io().inject(side, &pkt) {
            return WorkerStats::default();
        }
        let before = *self.w.stats();
        self.w.poll_once();
        let s = *self.w.stats();
        let d = |f: fn(&WorkerStats) -> u64| f(&s) - f(&before);
        assert_eq!(d(|s| s.rx), 1);
        assert_eq!(
            d(|s| s.forwarded) + d(|s| s.punted) + d(|s| s.replied) + d(|s| s.dropped()),
            1,
            "the packet accounted for once: {s:?}"
        );
        assert_eq!(self.shared.snapshot(), s);
        let sent = self.w.io().take_sent();
        assert!(sent.len() <= 1);
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
