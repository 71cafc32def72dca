//! The socket backend in a namespace pair: exact L3 packets in, replies out, drops counted, no
//! ICMP unreachable. Run as root (CI does).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use crate::support::netns::{
    A4, A6, B4, B6, NetnsPair, RawEsp, packet_of, poll_until, recv_n, udp_checksum_ok, udp_ports,
    write_ip, write_udp,
};
use pcscf::io::{Desc, EspBind, HEADROOM, PacketIo, Side, SocketConfig, SocketIo, UdpBind};

const WAIT: Duration = Duration::from_secs(2);

/// Turn a received UDP packet around in place: swap addresses and ports, new payload.
fn make_reply(io: &mut SocketIo, d: &Desc, payload: &[u8]) -> Desc {
    let f = io.frame(d);
    let p = &mut f[d.start as usize..];
    let l3 = pcscf::wire::ip::parse(p).unwrap();
    let (sp, dp) = udp_ports(p).unwrap();
    let body = l3.header_len + 8;
    p[body..body + payload.len()].copy_from_slice(payload);
    let total = body + payload.len();
    write_ip(p, l3.dst, l3.src, 17, total - l3.header_len);
    write_udp(&mut p[l3.header_len..], dp, sp, payload.len());
    Desc {
        end: d.start + total as u16,
        ..*d
    }
}

#[test]
fn socket_backend_udp_esp_v4_v6() {
    let ns = NetnsPair::new("s");
    let mut cfg = SocketConfig {
        frames: 64,
        batch: 16,
        ..Default::default()
    };
    cfg.udp.push(UdpBind {
        side: Side::Ue,
        addr: SocketAddr::new(A4.into(), 5060),
    });
    cfg.udp.push(UdpBind {
        side: Side::Ue,
        addr: SocketAddr::new(A6.into(), 5060),
    });
    cfg.udp_range(Side::Ue, A4.into(), 5062..=5063);
    cfg.udp.push(UdpBind {
        side: Side::Core,
        addr: SocketAddr::new("::".parse().unwrap(), 5080),
    });
    cfg.esp.push(EspBind {
        side: Side::Ue,
        addr: A4.into(),
    });
    cfg.esp.push(EspBind {
        side: Side::Ue,
        addr: A6.into(),
    });
    let mut io = NetnsPair::run_in(&ns.a, move || SocketIo::new(&cfg).expect("SocketIo::new"));
    let (u4, u6, e4, e6) = NetnsPair::run_in(&ns.b, || {
        let u4 = UdpSocket::bind((B4, 40000)).unwrap();
        let u6 = UdpSocket::bind((B6, 40006)).unwrap();
        u4.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        u6.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        (u4, u6, RawEsp::new(false), RawEsp::new(true))
    });
    let icmp_before = NetnsPair::icmp_unreach_out(&ns.a);

    // --- UDP over IPv4: exact synthetic header, reply arrives.
    u4.send_to(b"REGISTER sip:ims v4", (A4, 5060)).unwrap();
    let d = recv_n(&mut io, 1, WAIT);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].side, Side::Ue);
    assert_eq!(d[0].start as usize, HEADROOM);
    let p = packet_of(&mut io, &d[0]);
    assert_eq!(p.len(), 20 + 8 + 19);
    assert_eq!(p[0], 0x45);
    assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
    assert_eq!(p[9], 17);
    assert_eq!(&p[12..16], &B4.octets());
    assert_eq!(&p[16..20], &A4.octets());
    assert_eq!(
        crate::support::netns::csum(&p[..20]),
        0,
        "IPv4 header checksum"
    );
    assert_eq!(&p[20..24], &[0x9c, 0x40, 0x13, 0xc4]); // 40000 -> 5060
    assert_eq!(u16::from_be_bytes([p[24], p[25]]), 27);
    assert!(udp_checksum_ok(&p));
    assert_eq!(&p[28..], b"REGISTER sip:ims v4");
    let r = make_reply(&mut io, &d[0], b"SIP/2.0 401 Unauthorized");
    io.send(&[r]).unwrap();
    io.flush().unwrap();
    let mut b = [0u8; 2048];
    let (n, from) = u4.recv_from(&mut b).expect("v4 reply");
    assert_eq!(&b[..n], b"SIP/2.0 401 Unauthorized");
    assert_eq!(from, SocketAddr::new(A4.into(), 5060));

    // --- UDP over IPv6 (bound address) and to the wildcard-bound core-side socket.
    u6.send_to(b"REGISTER v6", (A6, 5060)).unwrap();
    u6.send_to(b"to core", (A6, 5080)).unwrap();
    let d = recv_n(&mut io, 2, WAIT);
    assert_eq!(d.len(), 2);
    let (mut ue, mut core) = (None, None);
    for x in &d {
        let p = packet_of(&mut io, x);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(p[6], 17);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]) as usize, p.len() - 40);
        assert_eq!(&p[8..24], &B6.octets());
        assert_eq!(&p[24..40], &A6.octets());
        assert_eq!(u16::from_be_bytes([p[40], p[41]]), 40006);
        assert!(udp_checksum_ok(&p));
        match u16::from_be_bytes([p[42], p[43]]) {
            5060 => {
                assert_eq!(x.side, Side::Ue);
                assert_eq!(&p[48..], b"REGISTER v6");
                ue = Some(*x);
            }
            5080 => {
                assert_eq!(x.side, Side::Core);
                assert_eq!(&p[48..], b"to core");
                core = Some(*x);
            }
            o => panic!("unexpected port {o}"),
        }
    }
    let r1 = make_reply(&mut io, &ue.unwrap(), b"v6 reply ue");
    let r2 = make_reply(
        &mut io,
        &core.unwrap(),
        b"v6 reply core (wildcard + PKTINFO)",
    );
    io.send(&[r1, r2]).unwrap();
    io.flush().unwrap();
    let mut replies = Vec::new();
    for _ in 0..2 {
        let (n, from) = u6.recv_from(&mut b).expect("v6 reply");
        replies.push((b[..n].to_vec(), from));
    }
    replies.sort();
    assert_eq!(
        replies[0],
        (
            b"v6 reply core (wildcard + PKTINFO)".to_vec(),
            SocketAddr::new(A6.into(), 5080)
        )
    );
    assert_eq!(
        replies[1],
        (b"v6 reply ue".to_vec(), SocketAddr::new(A6.into(), 5060))
    );

    // --- Protected port range, and a batch: 10 datagrams in one recv, ≤ 2 syscalls.
    for i in 0..10u8 {
        u4.send_to(&[b'x', i], (A4, 5063)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let before = io.stats().syscalls;
    let mut buf = [Desc {
        frame: 0,
        start: 0,
        end: 0,
        side: Side::Core,
    }; 32];
    let k = io.recv(&mut buf).unwrap();
    assert_eq!(k, 10, "one recv gets the whole batch");
    assert!(
        io.stats().syscalls - before <= 2,
        "epoll_wait + one recvmmsg"
    );
    for (i, x) in buf[..k].iter().enumerate() {
        let p = packet_of(&mut io, x);
        assert_eq!(&p[22..24], &5063u16.to_be_bytes());
        assert_eq!(&p[28..], &[b'x', i as u8]);
    }
    // Ten replies leave in one sendmmsg.
    let replies: Vec<Desc> = buf[..k]
        .to_vec()
        .iter()
        .map(|x| make_reply(&mut io, x, b"ok"))
        .collect();
    let before = io.stats().syscalls;
    io.send(&replies).unwrap();
    io.flush().unwrap();
    assert_eq!(io.stats().syscalls - before, 1);
    for _ in 0..10 {
        let (n, from) = u4.recv_from(&mut b).expect("batch reply");
        assert_eq!((&b[..n], from.port()), (&b"ok"[..], 5063));
    }

    // --- ESP over IPv4: the kernel's IP header as is; reply through IP_HDRINCL.
    let esp_in = [
        0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
    ];
    e4.send_to(&esp_in, A4.into());
    let d = recv_n(&mut io, 1, WAIT);
    assert_eq!(d.len(), 1);
    let p = packet_of(&mut io, &d[0]);
    assert_eq!(p[0], 0x45);
    assert_eq!(p[9], 50);
    assert_eq!(u16::from_be_bytes([p[2], p[3]]) as usize, p.len());
    assert_eq!(
        (&p[12..16], &p[16..20]),
        (&B4.octets()[..], &A4.octets()[..])
    );
    assert_eq!(&p[20..], &esp_in);
    io.free(&d);
    let out = [0, 0, 0x20, 0x02, 0, 0, 0, 7, 9, 8, 7, 6, 5];
    let a = io.alloc(Side::Ue).unwrap();
    let f = io.frame(&a);
    write_ip(&mut f[HEADROOM..], A4.into(), B4.into(), 50, out.len());
    f[HEADROOM + 20..HEADROOM + 20 + out.len()].copy_from_slice(&out);
    io.send(&[Desc {
        end: a.start + 20 + out.len() as u16,
        ..a
    }])
    .unwrap();
    io.flush().unwrap();
    let (got, from) = e4.recv().expect("ESP v4 at the peer");
    assert_eq!(from, IpAddr::V4(A4));
    assert_eq!(&got[20..], &out);
    assert_eq!(crate::support::netns::csum(&got[..20]), 0);

    // --- ESP over IPv6: header built from ancillary data; reply with PKTINFO source.
    let esp6 = [0, 0, 0x30, 0x03, 0, 0, 0, 2, 0x55, 0x66];
    e6.send_to(&esp6, A6.into());
    let d = recv_n(&mut io, 1, WAIT);
    assert_eq!(d.len(), 1);
    let p = packet_of(&mut io, &d[0]);
    assert_eq!(p.len(), 40 + esp6.len());
    assert_eq!(p[0] >> 4, 6);
    assert_eq!(p[6], 50);
    assert_eq!(u16::from_be_bytes([p[4], p[5]]) as usize, esp6.len());
    assert_eq!(p[7], 64, "hop limit from IPV6_HOPLIMIT");
    assert_eq!(
        (&p[8..24], &p[24..40]),
        (&B6.octets()[..], &A6.octets()[..])
    );
    assert_eq!(&p[40..], &esp6);
    io.free(&d);
    let a = io.alloc(Side::Ue).unwrap();
    let f = io.frame(&a);
    write_ip(&mut f[HEADROOM..], A6.into(), B6.into(), 50, out.len());
    f[HEADROOM + 40..HEADROOM + 40 + out.len()].copy_from_slice(&out);
    io.send(&[Desc {
        end: a.start + 40 + out.len() as u16,
        ..a
    }])
    .unwrap();
    io.flush().unwrap();
    let (got, from) = e6.recv().expect("ESP v6 at the peer");
    assert_eq!(from, IpAddr::V6(A6));
    assert_eq!(&got[..], &out);

    // --- Drops: unknown source port, non-UDP/ESP protocol, garbage; an oversize datagram.
    let s0 = io.stats();
    let mut bad = Vec::new();
    for proto in [17u8, 6, 0] {
        let a = io.alloc(Side::Core).unwrap();
        let f = io.frame(&a);
        write_ip(&mut f[HEADROOM..], A4.into(), B4.into(), proto, 8 + 4);
        write_udp(&mut f[HEADROOM + 20..], 5999, 40000, 4);
        if proto == 0 {
            f[HEADROOM] = 0x99; // not IP
        }
        bad.push(Desc {
            end: a.start + 32,
            ..a
        });
    }
    io.send(&bad).unwrap();
    io.flush().unwrap();
    assert_eq!(io.stats().tx_dropped - s0.tx_dropped, 3);
    assert_eq!(io.stats().tx_packets, s0.tx_packets);
    u4.send_to(&vec![b'z'; 4000], (A4, 5060)).unwrap();
    assert!(
        poll_until(WAIT, || {
            let mut buf = [Desc {
                frame: 0,
                start: 0,
                end: 0,
                side: Side::Ue,
            }; 4];
            assert_eq!(
                io.recv(&mut buf).unwrap(),
                0,
                "oversize datagram must not be delivered"
            );
            (io.stats().rx_oversize > s0.rx_oversize).then_some(())
        })
        .is_some()
    );
    assert_eq!(io.free_frames(), 64, "every frame is back in the pool");
    assert!(
        u4.recv_from(&mut b).is_err(),
        "nothing unexpected reached the peer"
    );

    assert_eq!(
        NetnsPair::icmp_unreach_out(&ns.a),
        icmp_before,
        "no ICMP unreachable from the backend's namespace"
    );
    let st = io.stats();
    assert_eq!(st.rx_packets, 1 + 2 + 10 + 1 + 1);
    assert_eq!(st.tx_packets, 1 + 2 + 10 + 1 + 1);
}

/// A jumbo-MTU link: datagrams bigger than a frame are dropped and counted as oversize, and the
/// next normal one goes through.
#[test]
fn socket_jumbo_datagrams_dropped_and_counted() {
    let ns = NetnsPair::new("k");
    ns.set_mtu(9000);
    let mut cfg = SocketConfig {
        frames: 64,
        batch: 16,
        ..Default::default()
    };
    cfg.udp.push(UdpBind {
        side: Side::Ue,
        addr: SocketAddr::new(A4.into(), 5060),
    });
    cfg.esp.push(EspBind {
        side: Side::Ue,
        addr: A4.into(),
    });
    let mut io = NetnsPair::run_in(&ns.a, move || SocketIo::new(&cfg).expect("SocketIo::new"));
    let (u4, e4) = NetnsPair::run_in(&ns.b, || {
        (UdpSocket::bind((B4, 40000)).unwrap(), RawEsp::new(false))
    });
    for size in [5000, 8000] {
        u4.send_to(&vec![b'x'; size], (A4, 5060)).unwrap();
        let mut esp = vec![0u8; size];
        esp[..8].copy_from_slice(&[0, 0, 0x10, 0x01, 0, 0, 0, 1]);
        e4.send_to(&esp, A4.into());
    }
    u4.send_to(b"REGISTER after jumbo", (A4, 5060)).unwrap();
    let got = recv_n(&mut io, 1, WAIT);
    assert_eq!(got.len(), 1, "stats {:?}", io.stats());
    let p = packet_of(&mut io, &got[0]);
    assert_eq!(&p[28..], b"REGISTER after jumbo");
    io.free(&got);
    // The ESP ones may come in after the UDP one (another socket): wait for all four.
    poll_until(WAIT, || {
        let mut buf = [got[0]; 8];
        let k = io.recv(&mut buf).unwrap();
        io.free(&buf[..k]);
        (io.stats().rx_oversize >= 4).then_some(())
    });
    assert_eq!(io.stats().rx_oversize, 4, "stats {:?}", io.stats());
    assert_eq!(io.stats().rx_dropped, 0, "stats {:?}", io.stats());
    assert_eq!(io.free_frames(), 64, "no frame lost");
}

/// A socket queue that overflows while the worker is away: the kernel's drops come back as
/// `rx_queue_overflow` (SO_RXQ_OVFL), so every datagram sent is either received or counted.
#[test]
fn socket_queue_overflow_is_counted() {
    let ns = NetnsPair::new("q");
    let mut cfg = SocketConfig {
        frames: 256,
        batch: 32,
        // the smallest queue the kernel allows (it doubles and floors the value)
        rcvbuf: Some(1),
        ..Default::default()
    };
    cfg.udp.push(UdpBind {
        side: Side::Ue,
        addr: SocketAddr::new(A4.into(), 5060),
    });
    let mut io = NetnsPair::run_in(&ns.a, move || SocketIo::new(&cfg).expect("SocketIo::new"));
    let u4 = NetnsPair::run_in(&ns.b, || UdpSocket::bind((B4, 40000)).unwrap());
    const SENT: u64 = 200;
    for i in 0..SENT {
        u4.send_to(format!("OPTIONS {i:04}").as_bytes(), (A4, 5060))
            .unwrap();
    }
    let mut received = 0u64;
    let mut drain = |io: &mut SocketIo, until: std::time::Instant| {
        while std::time::Instant::now() < until {
            let mut buf = [Desc {
                frame: 0,
                start: 0,
                end: 0,
                side: Side::Ue,
            }; 32];
            let k = io.recv(&mut buf).unwrap();
            received += k as u64;
            io.free(&buf[..k]);
        }
    };
    drain(
        &mut io,
        std::time::Instant::now() + Duration::from_millis(300),
    );
    // the kernel reports the drops with the next datagram it queues
    u4.send_to(b"OPTIONS last", (A4, 5060)).unwrap();
    drain(
        &mut io,
        std::time::Instant::now() + Duration::from_millis(300),
    );
    let s = io.stats();
    assert!(s.rx_queue_overflow > 0, "a 2 KiB queue overflowed: {s:?}");
    assert!(received > 0, "{s:?}");
    assert_eq!(received + s.rx_queue_overflow, SENT + 1, "{s:?}");
}
