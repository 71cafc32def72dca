//! The AF_PACKET backend in a namespace pair: exact L3 packets from the RX ring, replies through
//! the TX ring with MACs from the neighbour table, drops counted, and no ICMP unreachable thanks
//! to the placeholder sockets. Run as root (CI does).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crate::support::netns::{
    A4, A6, B4, B6, NetnsPair, RawEsp, packet_of, poll_until, recv_n, udp_checksum_ok, udp_ports,
    write_ip, write_udp,
};
use pcscf::io::{
    Desc, HEADROOM, NeighShared, NeighTable, PacketIo, PacketMmapConfig, PacketMmapIo, PortConfig,
    Side,
};

const WAIT: Duration = Duration::from_secs(2);

/// A reply in a fresh frame: UDP with checksums left 0 (the backend fills them) or ESP.
fn build(
    io: &mut PacketMmapIo,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    ports: (u16, u16),
    body: &[u8],
) -> Desc {
    let a = io.alloc(Side::Ue).unwrap();
    let f = &mut io.frame(&a)[HEADROOM..];
    let ipl = if src.is_ipv4() { 20 } else { 40 };
    let l4 = if proto == 17 { 8 } else { 0 };
    f[ipl + l4..ipl + l4 + body.len()].copy_from_slice(body);
    write_ip(f, src, dst, proto, l4 + body.len());
    if proto == 17 {
        write_udp(&mut f[ipl..], ports.0, ports.1, body.len());
        if src.is_ipv4() {
            f[10] = 0; // spoil the IPv4 header checksum: the backend must recompute it
        }
    }
    Desc {
        end: a.start + (ipl + l4 + body.len()) as u16,
        ..a
    }
}

#[test]
fn afpacket_backend_rx_tx_icmp() {
    let ns = NetnsPair::new("p");
    let ifa = ns.ifa.clone();
    let (mut io, shared) = NetnsPair::run_in(&ns.a, move || {
        let shared = NeighShared::new(NeighTable::from_kernel().unwrap());
        let cfg = PacketMmapConfig {
            ports: vec![PortConfig {
                ifname: ifa,
                side: Side::Ue,
            }],
            local: vec![A4.into(), A6.into()],
            udp_ports: vec![5060..=5060, 5062..=5063],
            frames: 64,
            block_count: 8,
            tx_slots: 32,
            ..Default::default()
        };
        (
            PacketMmapIo::new(&cfg, shared.reader()).expect("PacketMmapIo::new"),
            shared,
        )
    });
    let (u4, u6, e4, e6) = NetnsPair::run_in(&ns.b, || {
        let u4 = UdpSocket::bind((B4, 40000)).unwrap();
        let u6 = UdpSocket::bind((B6, 40006)).unwrap();
        u4.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        u6.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        (u4, u6, RawEsp::new(false), RawEsp::new(true))
    });
    let icmp0 = NetnsPair::icmp_unreach_out(&ns.a);

    // No neighbour yet: dropped and counted.
    let d = build(
        &mut io,
        A4.into(),
        B4.into(),
        50,
        (0, 0),
        &[0, 0, 0, 1, 0, 0, 0, 1],
    );
    io.send(&[d]).unwrap();
    io.flush().unwrap();
    assert_eq!(io.stats().tx_no_neighbour, 1);

    // RX: UDP v4/v6 and ESP v4/v6, exact L3 packets, no syscall.
    u4.send_to(b"REGISTER over af_packet", (A4, 5060)).unwrap();
    u6.send_to(b"REGISTER v6", (A6, 5062)).unwrap();
    let esp4 = [0u8, 0, 0x10, 0x01, 0, 0, 0, 5, 0xca, 0xfe, 1, 2];
    let esp6 = [0u8, 0, 0x10, 0x02, 0, 0, 0, 6, 0xbe, 0xef];
    e4.send_to(&esp4, A4.into());
    e6.send_to(&esp6, A6.into());
    let sys0 = io.stats().syscalls;
    let got = recv_n(&mut io, 4, WAIT);
    assert_eq!(io.stats().syscalls, sys0, "RX ring polled without syscalls");
    assert_eq!(got.len(), 4, "stats {:?}", io.stats());
    let mut seen = 0;
    for d in &got {
        assert_eq!(d.side, Side::Ue);
        assert_eq!(d.start as usize, HEADROOM);
        let p = packet_of(&mut io, d);
        let l3 = pcscf::wire::ip::parse(&p).unwrap();
        assert_eq!(l3.end, p.len(), "trimmed to the IP length");
        match (l3.protocol, l3.src) {
            (17, IpAddr::V4(s)) => {
                assert_eq!((s, l3.dst), (B4, IpAddr::V4(A4)));
                assert_eq!(crate::support::netns::csum(&p[..20]), 0);
                assert_eq!(udp_ports(&p), Some((40000, 5060)));
                assert!(udp_checksum_ok(&p), "UDP checksum completed");
                assert_eq!(&p[28..], b"REGISTER over af_packet");
                seen |= 1;
            }
            (17, IpAddr::V6(s)) => {
                assert_eq!((s, l3.dst), (B6, IpAddr::V6(A6)));
                assert_eq!(udp_ports(&p), Some((40006, 5062)));
                assert!(udp_checksum_ok(&p));
                assert_eq!(&p[48..], b"REGISTER v6");
                seen |= 2;
            }
            (50, IpAddr::V4(s)) => {
                assert_eq!((s, l3.dst), (B4, IpAddr::V4(A4)));
                assert_eq!(&p[20..], &esp4);
                seen |= 4;
            }
            (50, IpAddr::V6(s)) => {
                assert_eq!((s, l3.dst), (B6, IpAddr::V6(A6)));
                assert_eq!(&p[40..], &esp6);
                seen |= 8;
            }
            o => panic!("unexpected {o:?}"),
        }
    }
    assert_eq!(seen, 15);
    io.free(&got);

    // Neighbours: the peer's traffic taught the kernel its MAC; refresh until both are known.
    let sh = Arc::clone(&shared);
    let ok = NetnsPair::run_in(&ns.a, move || {
        poll_until(WAIT, || {
            sh.refresh().unwrap();
            let t = sh.current();
            (t.lookup(B4.into()).is_some() && t.lookup(B6.into()).is_some()).then_some(())
        })
    });
    assert!(ok.is_some(), "neighbours of the peer resolved");

    // TX: four replies, one kick.
    let r = [
        build(
            &mut io,
            A4.into(),
            B4.into(),
            17,
            (5060, 40000),
            b"SIP/2.0 401 v4",
        ),
        build(
            &mut io,
            A6.into(),
            B6.into(),
            17,
            (5062, 40006),
            b"SIP/2.0 401 v6",
        ),
        build(&mut io, A4.into(), B4.into(), 50, (0, 0), &esp4),
        build(&mut io, A6.into(), B6.into(), 50, (0, 0), &esp6),
    ];
    let sys0 = io.stats().syscalls;
    io.send(&r).unwrap();
    io.flush().unwrap();
    assert_eq!(io.stats().syscalls - sys0, 1, "one sendto kick per batch");
    let mut b = [0u8; 2048];
    let (n, from) = u4
        .recv_from(&mut b)
        .expect("UDP v4 reply (checksums valid, else the kernel drops it)");
    assert_eq!(
        (&b[..n], from),
        (&b"SIP/2.0 401 v4"[..], SocketAddr::new(A4.into(), 5060))
    );
    let (n, from) = u6.recv_from(&mut b).expect("UDP v6 reply");
    assert_eq!(
        (&b[..n], from),
        (&b"SIP/2.0 401 v6"[..], SocketAddr::new(A6.into(), 5062))
    );
    let (p, from) = e4.recv().expect("ESP v4 reply");
    assert_eq!((&p[20..], from), (&esp4[..], IpAddr::V4(A4)));
    let (p, from) = e6.recv().expect("ESP v6 reply");
    assert_eq!((&p[..], from), (&esp6[..], IpAddr::V6(A6)));
    assert_eq!(io.stats().tx_packets, 4);
    assert_eq!(io.free_frames(), 64);

    // No ICMP unreachable for anything the backend took.
    assert_eq!(
        NetnsPair::icmp_unreach_out(&ns.a),
        icmp0,
        "placeholders suppress ICMP unreachable"
    );

    // Not ours (UDP to another port): left to the kernel, counted as rx_dropped, not delivered.
    let dropped0 = io.stats().rx_dropped;
    u4.send_to(b"not for us", (A4, 7777)).unwrap();
    assert!(
        poll_until(WAIT, || {
            let mut buf = [Desc {
                frame: 0,
                start: 0,
                end: 0,
                side: Side::Ue,
            }; 4];
            assert_eq!(io.recv(&mut buf).unwrap(), 0);
            (io.stats().rx_dropped > dropped0).then_some(())
        })
        .is_some()
    );

    // Control: without the backend (and its placeholders) the kernel does answer with ICMP,
    // so the check above can fail.
    // The kernel rate-limits ICMP errors (per peer, and a host-wide budget other namespace
    // tests draw on too), so the probes are sent again every 200 ms until both are answered
    // (at most 5 s: 25 rounds).
    drop(io);
    let before = NetnsPair::icmp_unreach_out(&ns.a);
    let mut sent_at: Option<std::time::Instant> = None;
    assert!(
        poll_until(Duration::from_secs(5), || {
            if sent_at.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                u4.send_to(b"x", (A4, 5060)).unwrap();
                e4.send_to(&esp4, A4.into());
                sent_at = Some(std::time::Instant::now());
            }
            (NetnsPair::icmp_unreach_out(&ns.a) >= before + 2).then_some(())
        })
        .is_some(),
        "ICMP unreachable expected once the placeholders are gone"
    );
}

/// A jumbo-MTU link: datagrams bigger than a frame are dropped and counted as oversize (they
/// used to abort the process on the copy into the frame), and the next normal one goes through.
#[test]
fn afpacket_jumbo_frames_dropped_and_counted() {
    let ns = NetnsPair::new("j");
    ns.set_mtu(9000);
    let ifa = ns.ifa.clone();
    let mut io = NetnsPair::run_in(&ns.a, move || {
        let shared = NeighShared::new(NeighTable::from_kernel().unwrap());
        let cfg = PacketMmapConfig {
            ports: vec![PortConfig {
                ifname: ifa,
                side: Side::Ue,
            }],
            local: vec![A4.into(), A6.into()],
            udp_ports: vec![5060..=5060],
            frames: 64,
            block_count: 8,
            tx_slots: 32,
            ..Default::default()
        };
        PacketMmapIo::new(&cfg, shared.reader()).expect("PacketMmapIo::new")
    });
    let (u4, u6) = NetnsPair::run_in(&ns.b, || {
        (
            UdpSocket::bind((B4, 40000)).unwrap(),
            UdpSocket::bind((B6, 40006)).unwrap(),
        )
    });
    for size in [5000, 8000] {
        u4.send_to(&vec![b'x'; size], (A4, 5060)).unwrap();
        u6.send_to(&vec![b'y'; size], (A6, 5060)).unwrap();
    }
    u4.send_to(b"REGISTER after jumbo", (A4, 5060)).unwrap();
    let got = recv_n(&mut io, 1, WAIT);
    assert_eq!(got.len(), 1, "stats {:?}", io.stats());
    let p = packet_of(&mut io, &got[0]);
    assert_eq!(&p[28..], b"REGISTER after jumbo");
    io.free(&got);
    assert_eq!(io.stats().rx_oversize, 4, "stats {:?}", io.stats());
    assert_eq!(io.free_frames(), 64, "no frame lost");
}
