//! The worker pipeline over the in-memory backend: classify, SIP, punt, relay, replies, drops,
//! counters that add up, and zero allocations per batch.

use std::net::SocketAddr;
use std::sync::Arc;

use pcscf::dataplane::{
    Datagram, DropReason, L4, MsgQueue, Protection, SharedStats, Worker, WorkerConfig, classify,
    udp_checksum_ok,
};
use pcscf::io::{MemIo, Side};
use pcscf::sip::headers::Via;
use pcscf::sip::{HeaderName, Message};

const REGISTER: &[u8] = include_bytes!("../data/ims/register1_v4.sip");
const MESSAGE: &[u8] = include_bytes!("../data/ims/message_v4.sip");

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

fn udp(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + payload.len()];
    buf[128..].copy_from_slice(payload);
    let r = pcscf::wire::emit_datagram(&mut buf, 128..128 + payload.len(), addr(src), addr(dst))
        .ok()
        .unwrap();
    buf[r].to_vec()
}

fn worker(relay: bool) -> (Worker<MemIo>, Arc<MsgQueue>, Arc<SharedStats>) {
    let punt = MsgQueue::new(64, None);
    let shared = Arc::new(SharedStats::default());
    (
        Worker::new(MemIo::new(512), cfg(relay), punt.clone(), shared.clone()),
        punt,
        shared,
    )
}

fn sip_of(pkt: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    match classify(pkt) {
        L4::Udp { src, dst, payload } => {
            assert!(
                udp_checksum_ok(pkt, src, dst, &payload),
                "checksum of what we sent"
            );
            (src, dst, pkt[payload.start..payload.end].to_vec())
        }
        other => panic!("not UDP: {other:?}"),
    }
}

#[test]
fn register_is_punted_with_its_source() {
    let (mut w, punt, _) = worker(false);
    assert!(
        w.io()
            .inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5060", REGISTER))
    );
    assert_eq!(w.poll_once(), 1);
    let b = punt.pop().expect("punted");
    assert_eq!(b.bytes(), REGISTER);
    assert_eq!(
        (b.side, b.protection, b.src),
        (Side::Ue, Protection::Plain, addr("10.46.0.6:5060"))
    );
    assert_eq!(w.stats().punted, 1);
    assert!(w.io().take_sent().is_empty());
}

#[test]
fn unprotected_message_is_refused_with_403() {
    let (mut w, _, _) = worker(false);
    w.io()
        .inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5060", MESSAGE));
    w.poll_once();
    let sent = w.io().take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Side::Ue);
    let (src, dst, sip) = sip_of(&sent[0].1);
    assert_eq!((src, dst), (addr("10.46.0.1:5060"), addr("10.46.0.6:5060")));
    let m = Message::parse_strict(&sip).unwrap();
    assert_eq!(m.view().status(), Some(403));
    assert_eq!(w.stats().replied, 1);
}

#[test]
fn stateless_relay_forwards_and_routes_the_response_back() {
    let (mut w, _, _) = worker(true);
    w.io()
        .inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5060", MESSAGE));
    w.poll_once();
    let sent = w.io().take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Side::Core);
    let (src, dst, sip) = sip_of(&sent[0].1);
    assert_eq!((src, dst), (addr("10.0.1.10:5060"), addr("10.0.1.20:5060")));
    let m = Message::parse_strict(&sip).unwrap();
    let v = m.view();
    let top = Via::parse(v.values(HeaderName::Via).next().unwrap()).unwrap();
    assert_eq!(top.host, b"10.0.1.10");
    // the same request again gets the same branch (RFC 3261 §16.11)
    w.io()
        .inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5060", MESSAGE));
    w.poll_once();
    let again = w.io().take_sent();
    let m2 = Message::parse(&sip_of(&again[0].1).2)
        .unwrap()
        .view()
        .values(HeaderName::Via)
        .next()
        .unwrap()
        .to_vec();
    assert_eq!(m2, v.values(HeaderName::Via).next().unwrap());

    // The core answers 200: it comes back to the UE's address from the Via received/rport.
    let call_id = String::from_utf8(v.header(HeaderName::CallId).unwrap().to_vec()).unwrap();
    let vias: Vec<String> = v
        .values(HeaderName::Via)
        .map(|x| String::from_utf8(x.to_vec()).unwrap())
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1]
    );
    w.io().inject(
        Side::Core,
        &udp("10.0.1.20:5060", "10.0.1.10:5060", ok.as_bytes()),
    );
    w.poll_once();
    let back = w.io().take_sent();
    assert_eq!(back.len(), 1, "{:?}", w.stats());
    assert_eq!(back[0].0, Side::Ue);
    let (src, dst, sip) = sip_of(&back[0].1);
    assert_eq!((src, dst), (addr("10.46.0.1:5060"), addr("10.46.0.6:5060")));
    let m = Message::parse_strict(&sip).unwrap();
    assert_eq!(m.view().values(HeaderName::Via).count(), 1);
}

#[test]
fn bad_input_is_counted_and_dropped() {
    let (mut w, _, shared) = worker(true);
    let io = w.io();
    io.inject(
        Side::Ue,
        &udp(
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            b"\x00\x01garbage not sip",
        ),
    );
    io.inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5999", MESSAGE)); // wrong port
    io.inject(Side::Ue, &udp("10.46.0.6:5060", "10.46.0.1:5101", MESSAGE)); // plain UDP on a protected port
    io.inject(Side::Core, &udp("10.0.1.20:5060", "10.0.1.10:5060", b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\n"));
    let mut bad_ck = udp("10.46.0.6:5060", "10.46.0.1:5060", MESSAGE);
    let n = bad_ck.len();
    bad_ck[n - 1] ^= 0xff;
    io.inject(Side::Ue, &bad_ck);
    io.inject(
        Side::Ue,
        &[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 1, 2, 3, 4, 10, 46, 0, 1,
        ],
    ); // ICMP-ish
    let mut esp = vec![
        0x45, 0, 0, 40, 0, 0, 0, 0, 64, 50, 0, 0, 10, 46, 0, 6, 10, 46, 0, 1,
    ];
    esp.extend_from_slice(&[
        0, 0, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    io.inject(Side::Ue, &esp);
    let max_forwards_zero = String::from_utf8(MESSAGE.to_vec()).unwrap().replacen(
        "Max-Forwards: 70",
        "Max-Forwards: 0",
        1,
    );
    io.inject(
        Side::Ue,
        &udp(
            "10.46.0.6:5060",
            "10.46.0.1:5060",
            max_forwards_zero.as_bytes(),
        ),
    );
    assert_eq!(w.poll_once(), 8);
    let s = *w.stats();
    assert_eq!(s.drops[DropReason::BadSip as usize], 1);
    assert_eq!(s.drops[DropReason::NotForUs as usize], 2);
    assert_eq!(s.drops[DropReason::NotOurVia as usize], 1);
    assert_eq!(s.drops[DropReason::BadUdpChecksum as usize], 1);
    assert_eq!(s.drops[DropReason::NotIpUdpEsp as usize], 1);
    assert_eq!(s.drops[DropReason::UnknownSpi as usize], 1);
    assert_eq!(s.replied, 1, "483");
    // counters add up: every packet in is forwarded, punted, answered or dropped
    assert_eq!(s.rx, s.forwarded + s.punted + s.replied + s.dropped());
    assert_eq!(shared.snapshot(), s);
    let sent = w.io().take_sent();
    let sip = sip_of(&sent[0].1).2;
    let m = Message::parse(&sip).unwrap();
    assert_eq!(m.view().status(), Some(483));
    // every frame came back to the pool
    assert_eq!(w.io().free_frames(), 512);
}

#[test]
fn worker_batch_does_not_allocate() {
    let (mut w, punt, _) = worker(true);
    let pkts = [
        (Side::Ue, udp("10.46.0.6:5060", "10.46.0.1:5060", MESSAGE)),
        (Side::Ue, udp("10.46.0.6:5060", "10.46.0.1:5060", REGISTER)),
        (
            Side::Ue,
            udp("10.46.0.6:5060", "10.46.0.1:5060", b"garbage"),
        ),
        (Side::Ue, udp("10.46.0.6:5060", "10.46.0.1:5999", MESSAGE)),
        // addressed to us: answered, in relay mode too
        (
            Side::Ue,
            udp("10.46.0.6:5060", "10.46.0.1:5060", b"OPTIONS sip:[FD00:46:0::1];transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bKo1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"),
        ),
    ];
    let no_relay = {
        let (w2, _, _) = worker(false);
        w2
    };
    let mut w2 = no_relay;
    for round in 0..3 {
        for (side, p) in &pkts {
            assert!(w.io().inject(*side, p));
            assert!(w2.io().inject(*side, p));
        }
        let before = crate::support::alloc::count();
        w.poll_once();
        w2.poll_once();
        let allocs = crate::support::alloc::count() - before;
        assert_eq!(allocs, 0, "round {round}: {allocs} allocations in a batch");
        w.io().discard_sent();
        w2.io().discard_sent();
        while let Some(b) = punt.pop() {
            punt.recycle(b);
        }
    }
    assert!(w.stats().forwarded >= 3 && w2.stats().replied >= 6);
    assert!(
        w.stats().replied >= 3,
        "OPTIONS to us answered in relay mode"
    );
}

mod protected {
    use super::*;
    use pcscf::esp::{Frame, Sa, SaOptions};
    use pcscf::satable::{EntryMeta, SaTableConfig, SetPorts, SetState, sa_table};

    const CK: [u8; 16] = [0x11; 16];
    const IK: [u8; 16] = [0x22; 16];

    /// UE 10.46.0.6 port-c 7004 → our port-s 5103, over ESP with `spi`.
    fn esp_packet(tx: &Sa, sport: u16, dport: u16, sip: &[u8]) -> Vec<u8> {
        esp_of(tx, sport, dport, sip, 17)
    }

    /// `sip` in a UDP header, as IP protocol `protocol` (its Next Header inside ESP), sealed by `tx`.
    fn esp_of(tx: &Sa, sport: u16, dport: u16, sip: &[u8], protocol: u8) -> Vec<u8> {
        let mut inner = udp(
            &format!("10.46.0.6:{sport}"),
            &format!("10.46.0.1:{dport}"),
            sip,
        );
        inner[9] = protocol;
        let mut buf = vec![0u8; 256 + inner.len() + 128];
        buf[256..256 + inner.len()].copy_from_slice(&inner);
        let mut f = Frame::new(&mut buf, 256, 256 + inner.len());
        tx.outbound(&mut f).unwrap();
        let (s, e) = (f.start, f.end);
        buf[s..e].to_vec()
    }

    #[test]
    fn protected_register_reaches_the_registration_thread_and_bad_esp_is_dropped() {
        let (mut writer, reader) = sa_table(SaTableConfig {
            inbound_capacity: 64,
            outbound_capacity: 64,
            spi_min: 4096,
            spi_max: 1 << 20,
        })
        .unwrap();
        let spi = writer.reserve_spi().unwrap();
        let rx = Sa::from_aka(
            spi,
            "hmac-sha-1-96",
            "aes-cbc",
            &CK,
            &IK,
            SaOptions::default(),
        )
        .unwrap();
        writer
            .install_inbound(
                rx,
                &EntryMeta {
                    ue_addr: "10.46.0.6".parse().unwrap(),
                    ue_port: 7004,
                    ue_ports: SetPorts::default(),
                    local_port: 5103,
                    ports: SetPorts { c: 5102, s: 5103 },
                    binding: 1,
                    state: SetState::Temporary,
                },
            )
            .unwrap();
        let tx = Sa::from_aka(
            spi,
            "hmac-sha-1-96",
            "aes-cbc",
            &CK,
            &IK,
            SaOptions::default(),
        )
        .unwrap();
        let other = Sa::from_aka(
            spi + 1,
            "hmac-sha-1-96",
            "aes-cbc",
            &CK,
            &IK,
            SaOptions::default(),
        )
        .unwrap();

        let punt = MsgQueue::new(64, None);
        let shared = Arc::new(SharedStats::default());
        let mut w = Worker::new(MemIo::new(64), cfg(false), punt.clone(), shared).with_sas(reader);

        let good = esp_packet(&tx, 7004, 5103, REGISTER);
        let mut flipped = esp_packet(&tx, 7004, 5103, REGISTER);
        let n = flipped.len();
        flipped[n - 1] ^= 1; // ICV
        let wrong_port = esp_packet(&tx, 7005, 5103, REGISTER); // selector
        let unknown = esp_packet(&other, 7004, 5103, REGISTER);
        // next header 6 (TCP) over a UDP header
        let tcp = esp_of(&tx, 7004, 5103, REGISTER, 6);
        let io = w.io();
        for p in [&good, &good, &flipped, &wrong_port, &unknown, &tcp] {
            assert!(io.inject(Side::Ue, p));
        }
        assert_eq!(w.poll_once(), 6);
        let s = *w.stats();
        assert_eq!(s.punted, 1, "{s:?}");
        assert_eq!(
            s.drops[DropReason::EspReplay as usize],
            1,
            "the replayed copy"
        );
        assert_eq!(s.drops[DropReason::EspIcv as usize], 1);
        assert_eq!(
            s.drops[DropReason::EspOther as usize],
            1,
            "inner ports off the SA's selector"
        );
        assert_eq!(s.drops[DropReason::UnknownSpi as usize], 1);
        // TCP inside the SA goes to the worker's TCP, which the ports match (a UDP header is no
        // segment its stack accepts: nothing comes of it)
        assert_eq!(s.drops[DropReason::TcpRefused as usize], 0);
        assert_eq!(w.streams().host().stats().segments_in, 1);
        let b = punt.pop().unwrap();
        assert_eq!(b.protection, Protection::Protected { spi });
        assert_eq!(b.src, addr("10.46.0.6:7004"));
        assert_eq!(b.bytes(), REGISTER, "decrypted in place, byte for byte");
        // the bad packets did not hurt the SA: the next good packet still goes through
        w.io()
            .inject(Side::Ue, &esp_packet(&tx, 7004, 5103, REGISTER));
        w.poll_once();
        assert_eq!(w.stats().punted, 2);
    }
}

mod inject {
    use super::*;
    use pcscf::esp::{Sa, SaOptions};
    use pcscf::satable::{EntryMeta, SaTableConfig, SetPorts, SetState, sa_table};

    #[test]
    fn registration_thread_sends_plain_and_over_the_sa() {
        let (mut writer, reader) = sa_table(SaTableConfig {
            inbound_capacity: 16,
            outbound_capacity: 16,
            spi_min: 4096,
            spi_max: 1 << 20,
        })
        .unwrap();
        // outbound SA2: our port-c 5102 → UE port-s 7005, SPI chosen by the UE
        let ue_spi = 0x8000_0001;
        let ck = [3u8; 16];
        let ik = [4u8; 16];
        let out = Sa::from_aka(ue_spi, "null", "aes-gcm", &ck, &ik, SaOptions::default()).unwrap();
        writer
            .install_outbound(
                out,
                &EntryMeta {
                    ue_addr: "10.46.0.6".parse().unwrap(),
                    ue_port: 7005,
                    ue_ports: SetPorts::default(),
                    local_port: 5102,
                    ports: SetPorts { c: 5102, s: 5103 },
                    binding: 7,
                    state: SetState::New,
                },
            )
            .unwrap();
        let ue_rx =
            Sa::from_aka(ue_spi, "null", "aes-gcm", &ck, &ik, SaOptions::default()).unwrap();

        let punt = MsgQueue::new(8, None);
        let inject = MsgQueue::new(8, None);
        let shared = Arc::new(SharedStats::default());
        let mut w = Worker::new(MemIo::new(32), cfg(false), punt, shared)
            .with_sas(reader)
            .with_inject(inject.clone());
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n";
        inject
            .push(Datagram {
                side: Side::Ue,
                protection: Protection::Protected { spi: 0 },
                src: addr("10.46.0.1:5102"),
                dst: addr("10.46.0.6:7005"),
                payload: ok,
            })
            .unwrap();
        inject
            .push(Datagram {
                side: Side::Core,
                protection: Protection::Plain,
                src: addr("10.0.1.10:5060"),
                dst: addr("10.0.1.20:5060"),
                payload: REGISTER,
            })
            .unwrap();
        // a protected message to a flow with no SA is not sent in the clear
        inject
            .push(Datagram {
                side: Side::Ue,
                protection: Protection::Protected { spi: 0 },
                src: addr("10.46.0.1:5102"),
                dst: addr("10.46.0.9:7005"),
                payload: ok,
            })
            .unwrap();
        w.poll_once();
        let sent = w.io().take_sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (
                w.stats().injected,
                w.stats().inject_dropped,
                w.stats().esp_out
            ),
            (2, 1, 1)
        );
        let mut esp = sent[0].1.clone();
        assert_eq!(sent[0].0, Side::Ue);
        assert!(matches!(classify(&esp), L4::Esp { .. }), "went out as ESP");
        let (inner, _) = ue_rx
            .decapsulate(&mut esp)
            .expect("the UE's SA decrypts it");
        let (src, dst, sip) = sip_of(&esp[inner]);
        assert_eq!((src, dst), (addr("10.46.0.1:5102"), addr("10.46.0.6:7005")));
        assert_eq!(sip, ok);
        let (src, dst, sip) = sip_of(&sent[1].1);
        assert_eq!(
            (sent[1].0, src, dst),
            (Side::Core, addr("10.0.1.10:5060"), addr("10.0.1.20:5060"))
        );
        assert_eq!(sip, REGISTER);
    }
}
