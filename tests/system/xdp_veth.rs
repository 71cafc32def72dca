//! AF_XDP end to end over a veth pair between two throwaway network namespaces (root, as in
//! CI): the program steers only our traffic to the socket, the rest still reaches the kernel,
//! replies sent through the socket arrive, stale programs are replaced, drop detaches.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::support::xdp::*;
use pcscf::io::xdp::bpf::{BPF_PROG_TYPE_XDP, Prog};
use pcscf::io::xdp::netlink::{self, XDP_FLAGS_SKB_MODE};
use pcscf::io::xdp::{
    AttachMode, BindMode, ProgramConfig, Steering, XdpIo, XdpPair, XdpProgram, XskConfig, ifindex,
};
use pcscf::io::{Desc, HEADROOM, NeighReader, NeighShared, NeighTable, PacketIo, Side};

fn steering() -> Steering {
    Steering {
        v4: vec![V4_A.into()],
        v6: vec![V6_A.parse().unwrap()],
        udp_ports: vec![(5060, 5060), (6100, 6199)],
    }
}

fn prog_cfg(tb: &Testbed, mode: AttachMode) -> ProgramConfig {
    ProgramConfig {
        ifname: tb.if_a.clone(),
        mode,
        steering: steering(),
        queues: 4,
    }
}

fn xsk_cfg(tb: &Testbed, queue: u32) -> XskConfig {
    let mut c = XskConfig::new(&tb.if_a, queue, Side::Ue);
    c.frames = 256;
    c.ring_size = 64;
    c.fill_frames = 64;
    c
}

/// The peer as the only neighbour: a host route to each of its addresses. An XDP socket sends
/// on its own interface, so the ifindex here is only the table's key.
fn neigh() -> NeighReader {
    const IF: u32 = 1;
    let mut t = NeighTable::empty();
    for ip in [IpAddr::V4(V4_B.into()), IpAddr::V6(V6_B.parse().unwrap())] {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        t.add_link_route(ip, len, IF, None, [0; 6]);
        t.add_neighbour(ip, IF, MAC_B);
    }
    NeighShared::new(t).reader()
}

/// The peer's sockets, created inside namespace b.
struct Peer {
    udp4: UdpSocket,
    udp6: UdpSocket,
    esp4: OwnedFd,
    esp6: OwnedFd,
    icmp4: OwnedFd,
    icmp6: OwnedFd,
}

fn raw_socket(family: i32, proto: i32) -> OwnedFd {
    // SAFETY: plain socket(2); the fd is checked and then owned.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    assert!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
    // SAFETY: fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: tv is a live timeval of the stated size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    fd
}

impl Peer {
    fn new() -> Peer {
        let udp4 = UdpSocket::bind("10.202.1.2:40000").unwrap();
        let udp6 = UdpSocket::bind("[fd00:202::2]:40000").unwrap();
        for s in [&udp4, &udp6] {
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        }
        Peer {
            udp4,
            udp6,
            esp4: raw_socket(libc::AF_INET, 50),
            esp6: raw_socket(libc::AF_INET6, 50),
            icmp4: raw_socket(libc::AF_INET, libc::IPPROTO_ICMP),
            icmp6: raw_socket(libc::AF_INET6, libc::IPPROTO_ICMPV6),
        }
    }
}

fn raw_send(fd: &OwnedFd, to: IpAddr, payload: &[u8]) {
    let r = match to {
        IpAddr::V4(a) => {
            // SAFETY: zeroed sockaddr_in is valid.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: payload and sa are live for the call with the stated sizes.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    payload.as_ptr() as *const libc::c_void,
                    payload.len(),
                    0,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: zeroed sockaddr_in6 is valid.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as u16;
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: as above.
            unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    payload.as_ptr() as *const libc::c_void,
                    payload.len(),
                    0,
                    &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        }
    };
    assert_eq!(
        r,
        payload.len() as isize,
        "raw sendto: {}",
        io::Error::last_os_error()
    );
}

fn raw_recv(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is writable for its length.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    (n > 0).then_some(n as usize)
}

/// Ping `to` once from the peer's raw ICMP socket; true if the echo reply came back.
fn ping(fd: &OwnedFd, to: IpAddr, id: u16) -> bool {
    let v6 = to.is_ipv6();
    let mut req = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    req.extend_from_slice(&id.to_be_bytes());
    req.extend_from_slice(&1u16.to_be_bytes());
    req.extend_from_slice(b"pcscf-ping");
    if !v6 {
        // ICMPv6 checksums are filled in by the kernel on raw ICMPv6 sockets.
        let c = csum_fold(csum_add(0, &req));
        req[2..4].copy_from_slice(&c.to_be_bytes());
    }
    raw_send(fd, to, &req);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let Some(n) = raw_recv(fd, &mut buf) else {
            continue;
        };
        // Raw IPv4 sockets deliver the IP header too; raw IPv6 sockets do not.
        let icmp = if v6 {
            &buf[..n]
        } else {
            &buf[usize::from(buf[0] & 0xf) * 4..n]
        };
        let reply_type = if v6 { 129 } else { 0 };
        if icmp.len() >= 8 && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes() {
            return true;
        }
    }
    false
}

/// One received packet, copied out of its frame.
#[derive(Debug, Clone)]
struct Got {
    desc: Desc,
    bytes: Vec<u8>,
}

fn collect(io: &mut XdpIo, want: usize, within: Duration) -> Vec<Got> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut descs = [Desc {
        frame: 0,
        start: 0,
        end: 0,
        side: Side::Core,
    }; 32];
    while got.len() < want && Instant::now() < deadline {
        let n = io.recv(&mut descs).expect("recv");
        if n == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for d in &descs[..n] {
            let bytes = io.frame(d)[d.start as usize..d.end as usize].to_vec();
            got.push(Got { desc: *d, bytes });
        }
    }
    got
}

/// (version, protocol, UDP dport or 0, payload) of an L3 packet, checking it is exact: the
/// IP length fields cover it precisely and the addresses are the peer's → ours.
fn summarize(p: &[u8]) -> (u8, u8, u16, Vec<u8>) {
    match p[0] >> 4 {
        4 => {
            assert!(ipv4_header_ok(p), "IPv4 header checksum");
            assert_eq!(
                usize::from(u16::from_be_bytes([p[2], p[3]])),
                p.len(),
                "IPv4 total length"
            );
            assert_eq!(p[12..16], V4_B);
            assert_eq!(p[16..20], V4_A);
            let ihl = usize::from(p[0] & 0xf) * 4;
            let l4 = &p[ihl..];
            if p[9] == 17 {
                assert_eq!(
                    usize::from(u16::from_be_bytes([l4[4], l4[5]])),
                    l4.len(),
                    "UDP length"
                );
                (4, 17, u16::from_be_bytes([l4[2], l4[3]]), l4[8..].to_vec())
            } else {
                (4, p[9], 0, l4.to_vec())
            }
        }
        6 => {
            assert_eq!(
                usize::from(u16::from_be_bytes([p[4], p[5]])) + 40,
                p.len(),
                "IPv6 length"
            );
            assert_eq!(p[8..24], v6(V6_B));
            assert_eq!(p[24..40], v6(V6_A));
            let l4 = &p[40..];
            if p[6] == 17 {
                assert_eq!(
                    usize::from(u16::from_be_bytes([l4[4], l4[5]])),
                    l4.len(),
                    "UDP length"
                );
                (6, 17, u16::from_be_bytes([l4[2], l4[3]]), l4[8..].to_vec())
            } else {
                (6, p[6], 0, l4.to_vec())
            }
        }
        v => panic!("IP version {v}"),
    }
}

fn esp(spi: u32, text: &[u8]) -> Vec<u8> {
    let mut e = spi.to_be_bytes().to_vec();
    e.extend_from_slice(&1u32.to_be_bytes());
    e.extend_from_slice(text);
    e
}

fn write_packet(io: &mut XdpIo, d: &mut Desc, pkt: &[u8]) {
    let start = d.start as usize;
    io.frame(d)[start..start + pkt.len()].copy_from_slice(pkt);
    d.end = (start + pkt.len()) as u16;
}

fn rx_tx_flow(mode: AttachMode, need_wakeup: bool) {
    require_root();
    let tb = Testbed::new(1);
    let peer = in_netns(&tb.ns_b, Peer::new);
    let _in_a = InNetns::enter(&tb.ns_a);

    let prog = XdpProgram::attach(&prog_cfg(&tb, mode)).expect("attach XDP program");
    assert_eq!(prog.replaced_stale(), None);
    let shown = tb.link_show_a();
    assert!(shown.contains("xdp"), "program not attached: {shown}");
    let mut cfg = xsk_cfg(&tb, 0);
    cfg.need_wakeup = need_wakeup;
    let mut io = XdpIo::open(&cfg, neigh()).expect("open AF_XDP socket");
    assert!(!io.is_zerocopy(), "veth has no zero-copy");
    assert_eq!(io.mac(), MAC_A);
    prog.register(&io).expect("XSKMAP insert");
    let free0 = io.free_frames();

    // Kernel sockets in a on a port we do not steer.
    let k4 = UdpSocket::bind("10.202.1.1:9999").unwrap();
    let k6 = UdpSocket::bind("[fd00:202::1]:9999").unwrap();
    for s in [&k4, &k6] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }

    let a4 = IpAddr::V4(V4_A.into());
    let a6: IpAddr = V6_A.parse().unwrap();
    peer.udp4.send_to(b"sip over v4", (a4, 5060)).unwrap();
    peer.udp4.send_to(b"protected v4", (a4, 6150)).unwrap();
    peer.udp4.send_to(b"kernel v4", (a4, 9999)).unwrap();
    raw_send(&peer.esp4, a4, &esp(0x1001, b"esp v4"));
    peer.udp6.send_to(b"sip over v6", (a6, 5060)).unwrap();
    peer.udp6.send_to(b"protected v6", (a6, 6150)).unwrap();
    peer.udp6.send_to(b"kernel v6", (a6, 9999)).unwrap();
    raw_send(&peer.esp6, a6, &esp(0x1002, b"esp v6"));

    // ARP, ND and ICMP are the kernel's: ping works in both families.
    assert!(
        ping(&peer.icmp4, a4, 0x4a4a),
        "IPv4 ping through the XDP program failed"
    );
    assert!(
        ping(&peer.icmp6, a6, 0x6b6b),
        "IPv6 ping through the XDP program failed"
    );

    // Other UDP reached the kernel.
    let mut buf = [0u8; 256];
    let (n, from) = k4
        .recv_from(&mut buf)
        .expect("kernel v4 socket got nothing");
    assert_eq!(
        (&buf[..n], from),
        (&b"kernel v4"[..], SocketAddr::from((V4_B, 40000)))
    );
    let (n, _) = k6
        .recv_from(&mut buf)
        .expect("kernel v6 socket got nothing");
    assert_eq!(&buf[..n], b"kernel v6");

    // Our traffic reached the socket, as exact L3 packets with HEADROOM before them.
    let got = collect(&mut io, 6, Duration::from_secs(3));
    let mut seen: Vec<_> = got
        .iter()
        .map(|g| {
            assert!(
                g.desc.start as usize >= HEADROOM,
                "headroom {}",
                g.desc.start
            );
            assert_eq!(g.desc.len(), g.bytes.len());
            assert_eq!(g.desc.side, Side::Ue);
            summarize(&g.bytes)
        })
        .collect();
    seen.sort();
    let mut want = vec![
        (4, 17, 5060, b"sip over v4".to_vec()),
        (4, 17, 6150, b"protected v4".to_vec()),
        (4, 50, 0, esp(0x1001, b"esp v4")),
        (6, 17, 5060, b"sip over v6".to_vec()),
        (6, 17, 6150, b"protected v6".to_vec()),
        (6, 50, 0, esp(0x1002, b"esp v6")),
    ];
    want.sort();
    assert_eq!(seen, want);
    // Nothing else (no ARP, ND, ICMP or port-9999 frames) came to the socket.
    std::thread::sleep(Duration::from_millis(100));
    assert!(collect(&mut io, 1, Duration::from_millis(100)).is_empty());

    // Replies: IPv4 rewritten in the received frame, IPv6 in a freshly allocated one.
    let mut keep = Vec::new();
    for g in &got {
        let (v, proto, port, _) = summarize(&g.bytes);
        if (v, proto, port) == (4, 17, 5060) {
            keep.push(g.desc);
        } else {
            io.free(&[g.desc]);
        }
    }
    let mut d4 = keep[0];
    write_packet(
        &mut io,
        &mut d4,
        &ipv4(V4_A, V4_B, 17, &udp(5060, 40000, b"reply v4")),
    );
    let mut d6 = io.alloc(Side::Ue).expect("alloc");
    assert_eq!(d6.start as usize, HEADROOM);
    write_packet(
        &mut io,
        &mut d6,
        &ipv6(v6(V6_A), v6(V6_B), 17, &udp(5060, 40000, b"reply v6")),
    );
    io.send(&[d4, d6]).unwrap();
    io.flush().unwrap();
    let (n, from) = peer
        .udp4
        .recv_from(&mut buf)
        .expect("peer got no IPv4 reply");
    assert_eq!(
        (&buf[..n], from),
        (&b"reply v4"[..], SocketAddr::from((V4_A, 5060)))
    );
    let (n, from) = peer
        .udp6
        .recv_from(&mut buf)
        .expect("peer got no IPv6 reply");
    assert_eq!(&buf[..n], b"reply v6");
    assert_eq!(
        from,
        SocketAddr::from((V6_A.parse::<Ipv6Addr>().unwrap(), 5060))
    );

    // No neighbour: dropped, counted, frame back in the pool.
    let mut dn = io.alloc(Side::Core).unwrap();
    write_packet(
        &mut io,
        &mut dn,
        &ipv4(V4_A, [10, 202, 1, 77], 17, &udp(5060, 1, b"lost")),
    );
    io.send(&[dn]).unwrap();
    io.flush().unwrap();

    // Every frame is back: completions reaped (bounded wait).
    for _ in 0..100 {
        if io.free_frames() == free0 {
            break;
        }
        io.flush().unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(io.free_frames(), free0, "frames leaked");
    let st = io.stats();
    assert_eq!(
        (st.rx_packets, st.tx_packets, st.tx_no_neighbour),
        (6, 2, 1),
        "{st:?}"
    );
    assert_eq!((st.rx_dropped, st.tx_dropped), (0, 0), "{st:?}");
    let ks = io.kernel_stats().unwrap();
    assert_eq!(ks.rx_dropped, 0, "{ks:?}");

    drop(io);
    drop(prog);
    let shown = tb.link_show_a();
    assert!(
        !shown.contains("xdp"),
        "program still attached after drop: {shown}"
    );
}

#[test]
fn xdp_veth_skb_mode_rx_tx() {
    rx_tx_flow(AttachMode::Skb, true);
}

#[test]
fn xdp_veth_skb_mode_rx_tx_without_need_wakeup() {
    rx_tx_flow(AttachMode::Skb, false);
}

#[test]
fn xdp_veth_drv_mode_rx_tx() {
    rx_tx_flow(AttachMode::Drv, true);
}

#[test]
fn xdp_veth_tx_batches_beyond_kernel_budget() {
    // Copy mode sends at most 32 frames per kick; flush must keep kicking until the ring is
    // empty. Two batches of 48 into a 64-entry TX ring all arrive.
    require_root();
    let tb = Testbed::new(1);
    let peer = in_netns(&tb.ns_b, Peer::new);
    let _in_a = InNetns::enter(&tb.ns_a);
    let _prog = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Skb)).expect("attach");
    let mut io = XdpIo::open(&xsk_cfg(&tb, 0), neigh()).expect("open");
    let free0 = io.free_frames();
    for batch in 0..2 {
        let mut ds = Vec::new();
        for i in 0..48 {
            let mut d = io.alloc(Side::Core).expect("alloc");
            let text = format!("batch {batch} pkt {i}");
            write_packet(
                &mut io,
                &mut d,
                &ipv4(V4_A, V4_B, 17, &udp(5060, 40000, text.as_bytes())),
            );
            ds.push(d);
        }
        io.send(&ds).unwrap();
        io.flush().unwrap();
    }
    let mut buf = [0u8; 256];
    let mut n = 0;
    while n < 96 {
        match peer.udp4.recv_from(&mut buf) {
            Ok(_) => n += 1,
            Err(e) => panic!("peer got {n} of 96: {e}"),
        }
    }
    io.flush().unwrap();
    assert_eq!(io.free_frames(), free0);
    let st = io.stats();
    assert_eq!((st.tx_packets, st.tx_dropped), (96, 0), "{st:?}");
    assert!(
        st.syscalls >= 4,
        "at least two kicks per batch of 48: {st:?}"
    );

    // The pool runs dry (alloc gives None), and every frame comes back with free.
    let mut all = Vec::new();
    while let Some(d) = io.alloc(Side::Ue) {
        all.push(d);
        assert!(all.len() <= 256, "more frames than the UMEM has");
    }
    assert_eq!(all.len(), free0);
    io.free(&all);
    assert_eq!(io.free_frames(), free0);
}

#[test]
fn xdp_veth_zerocopy_falls_back_to_copy() {
    require_root();
    let tb = Testbed::new(1);
    let _in_a = InNetns::enter(&tb.ns_a);
    let _prog = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Drv)).expect("attach");
    let mut c = xsk_cfg(&tb, 0);
    c.bind = BindMode::ZeroCopy;
    let e = XdpIo::open(&c, neigh()).expect_err("veth offers no zero-copy");
    assert!(e.to_string().contains("bind AF_XDP"), "{e}");
    c.bind = BindMode::Auto;
    let io = XdpIo::open(&c, neigh()).expect("Auto falls back to copy");
    assert!(!io.is_zerocopy());
    c.bind = BindMode::Copy;
    c.queue_id = 0;
    // A second socket on the same queue is refused (one socket per queue).
    assert!(XdpIo::open(&c, neigh()).is_err());
}

#[test]
fn xdp_veth_stale_program_replaced_and_detached() {
    require_root();
    let tb = Testbed::new(1);
    let _in_a = InNetns::enter(&tb.ns_a);
    let idx = ifindex(&tb.if_a).unwrap();
    let attached_id = || netlink::link_xdp(idx).unwrap().prog_id;

    // Load twice without detaching: the second replaces the first (same mode, atomic).
    let p1 = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Skb)).expect("first attach");
    assert_eq!(attached_id(), p1.prog_id());
    let p2 = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Skb)).expect("second attach");
    assert_eq!(p2.replaced_stale(), Some(p1.prog_id()));
    assert_eq!(attached_id(), p2.prog_id());
    // Dropping the replaced one leaves the new one alone.
    drop(p1);
    assert_eq!(attached_id(), p2.prog_id());

    // A crash leaves the program attached; the next start replaces it, also across modes.
    let stale = p2.prog_id();
    p2.leak_attachment();
    assert!(tb.link_show_a().contains("xdp"));
    let p3 =
        XdpProgram::attach(&prog_cfg(&tb, AttachMode::Drv)).expect("attach over stale, other mode");
    assert_eq!(p3.replaced_stale(), Some(stale));
    assert_eq!(attached_id(), p3.prog_id());
    drop(p3);
    assert_eq!(attached_id(), 0);
    let shown = tb.link_show_a();
    assert!(!shown.contains("xdp"), "still attached: {shown}");

    // Someone else's program is never replaced.
    let insns = [0x0000_0002_0000_00b7u64, 0x95]; // r0 = XDP_PASS; exit
    let foreign = Prog::load(BPF_PROG_TYPE_XDP, &insns, "foreign", c"GPL").unwrap();
    netlink::set_xdp(idx, foreign.raw_fd(), XDP_FLAGS_SKB_MODE, None).unwrap();
    let e = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Skb))
        .expect_err("must not replace a foreign program");
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(attached_id(), foreign.info().unwrap().id);
    netlink::set_xdp(idx, -1, XDP_FLAGS_SKB_MODE, None).unwrap();
    assert_eq!(attached_id(), 0);
}

#[test]
fn xdp_veth_two_queues_drv_mode() {
    require_root();
    let tb = Testbed::new(2);
    let peer = in_netns(&tb.ns_b, Peer::new);
    let _in_a = InNetns::enter(&tb.ns_a);
    let prog = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Drv)).expect("attach");
    let mut q0 = XdpIo::open(&xsk_cfg(&tb, 0), neigh()).expect("queue 0");
    let mut q1 = XdpIo::open(&xsk_cfg(&tb, 1), neigh()).expect("queue 1");
    prog.register(&q0).unwrap();
    prog.register(&q1).unwrap();
    // 20 flows from different source ports (each its own socket in b).
    let a4 = IpAddr::V4(Ipv4Addr::from(V4_A));
    let senders: Vec<UdpSocket> = in_netns(&tb.ns_b, || {
        (0..20)
            .map(|_| UdpSocket::bind("10.202.1.2:0").unwrap())
            .collect()
    });
    for (i, s) in senders.iter().enumerate() {
        s.send_to(format!("flow {i}").as_bytes(), (a4, 5060))
            .unwrap();
    }
    drop(peer);
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut n0, mut n1) = (0, 0);
    while total < 20 && Instant::now() < deadline {
        let a = collect(&mut q0, 1, Duration::from_millis(5));
        let b = collect(&mut q1, 1, Duration::from_millis(5));
        for g in a.iter().chain(&b) {
            assert_eq!(summarize(&g.bytes).2, 5060);
        }
        n0 += a.len();
        n1 += b.len();
        total = n0 + n1;
        for g in a {
            q0.free(&[g.desc]);
        }
        for g in b {
            q1.free(&[g.desc]);
        }
    }
    assert_eq!(total, 20, "queue 0 got {n0}, queue 1 got {n1}");
    eprintln!("two queues: {n0} on queue 0, {n1} on queue 1");
}

/// A jumbo-MTU link (generic XDP): frames bigger than a UMEM frame are dropped by the kernel;
/// the backend reports them as oversize (from the kernel's counters, read every so many `recv`
/// calls), nothing aborts, and the next normal datagram goes through.
#[test]
fn xdp_veth_jumbo_frames_dropped_and_counted() {
    require_root();
    let tb = Testbed::new(1);
    for (ns, ifn) in [(&tb.ns_a, &tb.if_a), (&tb.ns_b, &tb.if_b)] {
        run(&["ip", "-n", ns, "link", "set", ifn, "mtu", "9000"]);
    }
    let peer = in_netns(&tb.ns_b, Peer::new);
    let _in_a = InNetns::enter(&tb.ns_a);
    let prog = XdpProgram::attach(&prog_cfg(&tb, AttachMode::Skb)).expect("attach XDP program");
    let mut io = XdpIo::open(&xsk_cfg(&tb, 0), neigh()).expect("open AF_XDP socket");
    prog.register(&io).expect("XSKMAP insert");
    let free0 = io.free_frames();

    let a4 = IpAddr::V4(V4_A.into());
    let a6: IpAddr = V6_A.parse().unwrap();
    for size in [5000, 8000] {
        peer.udp4.send_to(&vec![b'x'; size], (a4, 5060)).unwrap();
        peer.udp6.send_to(&vec![b'y'; size], (a6, 5060)).unwrap();
    }
    peer.udp4.send_to(b"sip after jumbo", (a4, 5060)).unwrap();
    let got = collect(&mut io, 1, Duration::from_secs(3));
    assert_eq!(got.len(), 1, "stats {:?}", io.stats());
    assert!(got[0].bytes.ends_with(b"sip after jumbo"));
    io.free(&[got[0].desc]);
    // The kernel's counters are read once per 1024 `recv` calls.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut descs = [got[0].desc; 8];
    while io.stats().rx_oversize < 4 && Instant::now() < deadline {
        for _ in 0..1024 {
            let n = io.recv(&mut descs).expect("recv");
            io.free(&descs[..n]);
        }
    }
    assert_eq!(
        io.stats().rx_oversize,
        4,
        "stats {:?}, kernel {:?}",
        io.stats(),
        io.kernel_stats()
    );
    assert_eq!(io.free_frames(), free0, "no frame lost");
}

/// One UMEM for two interfaces (`XdpPair`, `XDP_SHARED_UMEM`): a datagram received on the UE
/// side goes out of the core side from the frame it arrived in, and back; the kernel accepts
/// the other socket's frames on each TX ring, and every frame returns to the one pool.
#[test]
fn xdp_pair_sends_out_of_one_interface_the_frame_received_on_the_other() {
    use pcscf::lab::Lab;
    require_root();
    let lab = Lab::new("pxpr", "xp").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    const UE_MAC: [u8; 6] = [0x02, 0x31, 0, 0, 0, 0x02];
    const CORE_MAC: [u8; 6] = [0x02, 0x32, 0, 0, 0, 0x02];
    run(&[
        "ip",
        "-n",
        &lab.ue,
        "link",
        "set",
        &lab.ue_if,
        "address",
        "02:31:00:00:00:02",
    ]);
    run(&[
        "ip",
        "-n",
        &lab.core,
        "link",
        "set",
        &lab.core_if,
        "address",
        "02:32:00:00:00:02",
    ]);
    let ue_peer = in_netns(&lab.ue, || UdpSocket::bind("10.211.0.2:40000").unwrap());
    let core_peer = in_netns(&lab.core, || UdpSocket::bind("10.212.0.2:5060").unwrap());
    for s in [&ue_peer, &core_peer] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    }
    let _in = InNetns::enter(&lab.pcscf);
    let prog = |ifname: &str, ours: [u8; 4]| {
        XdpProgram::attach(&ProgramConfig {
            ifname: ifname.into(),
            mode: AttachMode::Skb,
            steering: Steering {
                v4: vec![ours.into()],
                v6: vec![],
                udp_ports: vec![(5060, 5060)],
            },
            queues: 1,
        })
        .expect("attach")
    };
    let (p_ue, p_core) = (
        prog(&lab.pcscf_ue_if, [10, 211, 0, 1]),
        prog(&lab.pcscf_core_if, [10, 212, 0, 1]),
    );
    let cfg = |ifname: &str, side| {
        let mut c = XskConfig::new(ifname, 0, side);
        c.frames = 256;
        c.ring_size = 64;
        c.fill_frames = 64;
        c
    };
    let mut t = NeighTable::empty();
    for (ip, mac) in [([10, 211, 0, 2], UE_MAC), ([10, 212, 0, 2], CORE_MAC)] {
        let ip = IpAddr::V4(Ipv4Addr::from(ip));
        t.add_link_route(ip, 32, 1, None, [0; 6]);
        t.add_neighbour(ip, 1, mac);
    }
    let mut pair = XdpPair::open(
        &cfg(&lab.pcscf_ue_if, Side::Ue),
        &cfg(&lab.pcscf_core_if, Side::Core),
        NeighShared::new(t).reader(),
    )
    .expect("one UMEM for both interfaces (Linux 5.10+)");
    assert!(!pair.is_zerocopy(), "veth offers copy mode only");
    let [(q_ue, fd_ue), (q_core, fd_core)] = pair.sockets();
    p_ue.register_socket(q_ue, fd_ue).unwrap();
    p_core.register_socket(q_core, fd_core).unwrap();
    let idle = pair.free_frames();
    assert_eq!(
        idle,
        512 - 2 * 64,
        "one pool; each fill ring took its share"
    );

    let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
    // Receive one datagram on `side`, rewrite its headers from `from` to `to` in place and
    // send it out of the other side: the frame's index does not change.
    let mut cross = |side: Side, from: SocketAddr, to: SocketAddr| -> Vec<u8> {
        let mut d = [Desc {
            frame: 0,
            start: 0,
            end: 0,
            side: Side::Ue,
        }; 8];
        let deadline = Instant::now() + Duration::from_secs(3);
        let n = loop {
            let n = pair.recv(&mut d).unwrap();
            if n > 0 || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        assert_eq!(n, 1, "one datagram");
        assert_eq!(d[0].side, side);
        let (start, end) = (d[0].start as usize, d[0].end as usize);
        let frame = pair.frame(&d[0]);
        let payload = frame[start + 28..end].to_vec();
        let r = pcscf::wire::emit_datagram(frame, start + 28..end, from, to).unwrap();
        let out = Desc {
            frame: d[0].frame,
            start: r.start as u16,
            end: r.end as u16,
            side: if side == Side::Ue {
                Side::Core
            } else {
                Side::Ue
            },
        };
        pair.send(&[out]).unwrap();
        pair.flush().unwrap();
        payload
    };
    let mut buf = [0u8; 2048];
    ue_peer
        .send_to(b"to the core", addr("10.211.0.1:5060"))
        .unwrap();
    let p = cross(Side::Ue, addr("10.212.0.1:5060"), addr("10.212.0.2:5060"));
    assert_eq!(p, b"to the core");
    let (n, from) = core_peer.recv_from(&mut buf).expect("the core got it");
    assert_eq!(
        (&buf[..n], from),
        (&b"to the core"[..], addr("10.212.0.1:5060"))
    );

    core_peer
        .send_to(b"to the UE", addr("10.212.0.1:5060"))
        .unwrap();
    cross(
        Side::Core,
        addr("10.211.0.1:5060"),
        addr("10.211.0.2:40000"),
    );
    let (n, from) = ue_peer.recv_from(&mut buf).expect("the UE got it");
    assert_eq!(
        (&buf[..n], from),
        (&b"to the UE"[..], addr("10.211.0.1:5060"))
    );

    // both frames came back from the completion rings to the one pool
    let deadline = Instant::now() + Duration::from_secs(2);
    while pair.free_frames() != idle && Instant::now() < deadline {
        pair.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(pair.free_frames(), idle);
    let st = pair.stats();
    assert_eq!((st.rx_packets, st.tx_packets, st.tx_dropped), (2, 2, 0));
}

/// Where the core side's socket cannot share the UE side's UMEM (here: a queue its veth does
/// not have), the refusal hands back the UE side's socket, bound and working, so the fallback
/// does not bind that queue again while the kernel may still be freeing it.
#[test]
fn xdp_pair_refused_after_the_ue_bind_hands_back_a_working_ue_socket() {
    use pcscf::lab::Lab;
    require_root();
    let lab = Lab::new("pxpf", "xf").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let ue_peer = in_netns(&lab.ue, || UdpSocket::bind("10.211.0.2:40000").unwrap());
    let _in = InNetns::enter(&lab.pcscf);
    let prog = XdpProgram::attach(&ProgramConfig {
        ifname: lab.pcscf_ue_if.clone(),
        mode: AttachMode::Skb,
        steering: Steering {
            v4: vec![[10, 211, 0, 1].into()],
            v6: vec![],
            udp_ports: vec![(5060, 5060)],
        },
        queues: 1,
    })
    .expect("attach");
    let cfg = |ifname: &str, queue, side| {
        let mut c = XskConfig::new(ifname, queue, side);
        c.frames = 256;
        c.ring_size = 64;
        c.fill_frames = 64;
        c
    };
    let refused = XdpPair::open(
        &cfg(&lab.pcscf_ue_if, 0, Side::Ue),
        &cfg(&lab.pcscf_core_if, 7, Side::Core),
        NeighShared::new(NeighTable::empty()).reader(),
    )
    .expect_err("the core veth has no queue 7");
    assert!(
        refused.error.to_string().contains("queue 7"),
        "{}",
        refused.error
    );
    let mut ue = refused
        .ue
        .expect("the UE side was bound before the refusal");
    prog.register(&ue).unwrap();
    ue_peer.send_to(b"still here", "10.211.0.1:5060").unwrap();
    let got = collect(&mut ue, 1, Duration::from_secs(3));
    assert_eq!(got.len(), 1, "the handed-back socket receives");
    assert!(got[0].bytes.ends_with(b"still here"));
    assert_eq!(got[0].desc.side, Side::Ue);
}
