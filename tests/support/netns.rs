//! Test bed for the packet I/O tests: two network namespaces joined by a veth pair, removed on
//! drop, and helpers to run code inside one of them. Needs root and iproute2's `ip`.

pub use super::inet::csum;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

/// Fail (not skip) with a clear message when the tests can't build their namespaces.
pub fn require_root_and_ip() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and must run as root (CI does)"
    );
    let ok = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the `ip` command (iproute2) is required for these tests and was not found"
    );
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Wait until `ifn` in `ns` is operationally up. The end of a veth brought up before its peer
/// only starts transmitting (its queue discipline attached, operstate UP) when the kernel's
/// link-watch work has run, which waits for the RTNL lock; while other tests create and delete
/// namespaces that can take a while, and what it sends meanwhile (an ARP reply) is dropped.
pub fn wait_up(ns: &str, ifn: &str) {
    let t0 = Instant::now();
    loop {
        let o = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", "dev", ifn])
            .output()
            .expect("run ip");
        if String::from_utf8_lossy(&o.stdout).contains(" state UP ") {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{ns}/{ifn} not up after 10 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Namespace `a` (the backend, `.1` / `::1`) and `b` (the peer, `.2` / `::2`) joined by veth
/// `ifa` ↔ `ifb`, on 10.201.1.0/24 and fd00:201:1::/64, both visible only inside the namespaces.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub ifa: String,
    pub ifb: String,
}

pub const A4: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
pub const A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 1);
pub const B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2);

impl NetnsPair {
    /// `tag`: a short (≤ 4 chars) name unique among the tests of one binary.
    pub fn new(tag: &str) -> Self {
        require_root_and_ip();
        let pid = std::process::id();
        let p = NetnsPair {
            a: format!("pio-{pid}-{tag}-a"),
            b: format!("pio-{pid}-{tag}-b"),
            ifa: format!("p{}{tag}a", pid % 100_000),
            ifb: format!("p{}{tag}b", pid % 100_000),
        };
        assert!(p.ifa.len() <= 15);
        // From here on the guard removes whatever was created, even if a step fails.
        ip(&["netns", "add", &p.a]);
        ip(&["netns", "add", &p.b]);
        ip(&[
            "link", "add", &p.ifa, "netns", &p.a, "type", "veth", "peer", "name", &p.ifb, "netns",
            &p.b,
        ]);
        for (ns, ifn, v4, v6) in [
            (&p.a, &p.ifa, "10.201.1.1/24", "fd00:201:1::1/64"),
            (&p.b, &p.ifb, "10.201.1.2/24", "fd00:201:1::2/64"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", ifn]);
            ip(&["-n", ns, "addr", "add", v6, "dev", ifn, "nodad"]);
            ip(&["-n", ns, "link", "set", ifn, "up"]);
        }
        wait_up(&p.a, &p.ifa);
        wait_up(&p.b, &p.ifb);
        p
    }

    /// Set the MTU of both ends of the veth (e.g. 9000: jumbo frames).
    pub fn set_mtu(&self, mtu: u32) {
        let m = mtu.to_string();
        ip(&["-n", &self.a, "link", "set", &self.ifa, "mtu", &m]);
        ip(&["-n", &self.b, "link", "set", &self.ifb, "mtu", &m]);
    }

    /// Run `f` on a thread that has entered namespace `ns`; sockets it opens stay in `ns`.
    pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; only this thread's network namespace changes.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// ICMP "destination unreachable" messages sent from `ns` so far (IPv4 + IPv6).
    pub fn icmp_unreach_out(ns: &str) -> u64 {
        Self::run_in(ns, || {
            let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
            let mut lines = snmp.lines().filter(|l| l.starts_with("Icmp:"));
            let names: Vec<&str> = lines
                .next()
                .expect("Icmp header")
                .split_whitespace()
                .collect();
            let vals: Vec<&str> = lines
                .next()
                .expect("Icmp values")
                .split_whitespace()
                .collect();
            let i = names
                .iter()
                .position(|n| *n == "OutDestUnreachs")
                .expect("OutDestUnreachs");
            let v4: u64 = vals[i].parse().unwrap();
            let snmp6 = std::fs::read_to_string("/proc/thread-self/net/snmp6").expect("snmp6");
            let v6: u64 = snmp6
                .lines()
                .find_map(|l| l.strip_prefix("Icmp6OutDestUnreachs"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            v4 + v6
        })
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth end, and with it the peer.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Poll `f` until it returns `Some`, at most `limit` (sleeping 1 ms between tries).
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receive from a backend until `n` descriptors came (at most `limit`); what came.
pub fn recv_n<P: pcscf::io::PacketIo>(
    io: &mut P,
    n: usize,
    limit: Duration,
) -> Vec<pcscf::io::Desc> {
    let mut got = Vec::new();
    let mut buf = [pcscf::io::Desc {
        frame: 0,
        start: 0,
        end: 0,
        side: pcscf::io::Side::Ue,
    }; 64];
    poll_until(limit, || {
        let k = io.recv(&mut buf).unwrap();
        got.extend_from_slice(&buf[..k]);
        (got.len() >= n).then_some(())
    });
    got
}

/// The packet a descriptor points at, copied out.
pub fn packet_of<P: pcscf::io::PacketIo>(io: &mut P, d: &pcscf::io::Desc) -> Vec<u8> {
    io.frame(d)[d.start as usize..d.end as usize].to_vec()
}

/// A raw IP-protocol-50 socket (blocking, with a receive timeout) for the peer.
pub struct RawEsp {
    pub fd: std::os::fd::OwnedFd,
    pub v6: bool,
}

impl RawEsp {
    pub fn new(v6: bool) -> Self {
        use std::os::fd::FromRawFd;
        let dom = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain syscall; the fd is checked and owned.
        let fd =
            unsafe { libc::socket(dom, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ESP) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 300_000,
        };
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            );
            RawEsp {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
                v6,
            }
        }
    }

    pub fn send_to(&self, data: &[u8], dst: IpAddr) {
        let (sa, len) = sockaddr(dst);
        // SAFETY: valid buffers for the call's duration.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                0,
                (&sa as *const libc::sockaddr_in6).cast(),
                len,
            )
        };
        assert_eq!(
            r,
            data.len() as isize,
            "raw sendto: {}",
            std::io::Error::last_os_error()
        );
    }

    /// One datagram (IPv4: with the IP header; IPv6: payload only) and its source, or None on timeout.
    pub fn recv(&self) -> Option<(Vec<u8>, IpAddr)> {
        let mut buf = vec![0u8; 65536];
        // SAFETY: zeroed sockaddr storage is valid.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_in6>() as u32;
        // SAFETY: valid buffers.
        let r = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return None;
        }
        buf.truncate(r as usize);
        let src = if sa.sin6_family as i32 == libc::AF_INET6 {
            IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr))
        } else {
            // SAFETY: AF_INET: the storage holds a sockaddr_in.
            let s4: libc::sockaddr_in =
                unsafe { std::ptr::read((&sa as *const libc::sockaddr_in6).cast()) };
            IpAddr::V4(Ipv4Addr::from(s4.sin_addr.s_addr.to_ne_bytes()))
        };
        Some((buf, src))
    }
}

fn sockaddr(a: IpAddr) -> (libc::sockaddr_in6, u32) {
    // SAFETY: zeroed sockaddr storage is valid.
    let mut s: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    match a {
        IpAddr::V4(v4) => {
            let p = (&mut s as *mut libc::sockaddr_in6).cast::<libc::sockaddr_in>();
            // SAFETY: sockaddr_in fits inside sockaddr_in6 storage.
            unsafe {
                (*p).sin_family = libc::AF_INET as u16;
                (*p).sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
            }
            (s, size_of::<libc::sockaddr_in>() as u32)
        }
        IpAddr::V6(v6) => {
            s.sin6_family = libc::AF_INET6 as u16;
            s.sin6_addr.s6_addr = v6.octets();
            (s, size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

/// Verify the UDP checksum of an IPv4/IPv6 + UDP packet (independent of the crate's code).
pub fn udp_checksum_ok(pkt: &[u8]) -> bool {
    let (pseudo, l4) = if pkt[0] >> 4 == 4 {
        let ihl = (pkt[0] & 15) as usize * 4;
        let ulen = pkt.len() - ihl;
        let mut p = Vec::new();
        p.extend_from_slice(&pkt[12..20]);
        p.extend_from_slice(&[0, 17]);
        p.extend_from_slice(&(ulen as u16).to_be_bytes());
        (p, ihl)
    } else {
        let ulen = pkt.len() - 40;
        let mut p = Vec::new();
        p.extend_from_slice(&pkt[8..40]);
        p.extend_from_slice(&(ulen as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 17]);
        (p, 40)
    };
    let mut all = pseudo;
    all.extend_from_slice(&pkt[l4..]);
    csum(&all) == 0
}

/// MAC address and ifindex of `ifname` in namespace `ns` (from `ip -o link show`).
pub fn link_info(ns: &str, ifname: &str) -> ([u8; 6], u32) {
    let o = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", ifname])
        .output()
        .expect("ip link show");
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    let idx: u32 = s
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("ifindex");
    let mac = s
        .split("link/ether ")
        .nth(1)
        .expect("link/ether")
        .split_whitespace()
        .next()
        .unwrap();
    let mut m = [0u8; 6];
    for (i, b) in mac.split(':').enumerate() {
        m[i] = u8::from_str_radix(b, 16).unwrap();
    }
    (m, idx)
}

/// Test frames: writes an IP header at `buf[0..]` for `payload_len` bytes of `proto` after it
/// (TTL 64) and returns the header's length.
pub fn write_ip(buf: &mut [u8], src: IpAddr, dst: IpAddr, proto: u8, payload_len: usize) -> usize {
    use pcscf::wire::{Ipv4Repr, Ipv6Repr};
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            Ipv4Repr {
                src,
                dst,
                protocol: proto,
                ttl: 64,
                tos: 0,
                payload_len,
            }
            .emit(buf)
            .unwrap();
            20
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            Ipv6Repr {
                src,
                dst,
                next_header: proto,
                hop_limit: 64,
                traffic_class: 0,
                payload_len,
            }
            .emit(buf)
            .unwrap();
            40
        }
        _ => panic!("families differ"),
    }
}

/// Test frames: a UDP header at `buf[0..8]` (checksum 0).
pub fn write_udp(buf: &mut [u8], sport: u16, dport: u16, payload_len: usize) {
    pcscf::wire::UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len,
    }
    .emit(buf)
    .unwrap();
}

/// The UDP ports of an IP packet, if it is unfragmented UDP.
pub fn udp_ports(p: &[u8]) -> Option<(u16, u16)> {
    let l = pcscf::wire::ip::parse(p).ok()?;
    if l.fragment || l.protocol != 17 {
        return None;
    }
    let u = pcscf::wire::UdpPacket::new_checked(&p[l.body()]).ok()?;
    Some((u.src_port(), u.dst_port()))
}
