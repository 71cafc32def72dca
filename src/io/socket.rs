//! The socket backend ([`SocketIo`]): kernel UDP sockets for SIP and raw IP-protocol-50 sockets
//! for ESP, driven in batches with `recvmmsg`/`sendmmsg`.
//!
//! Owns: the sockets (UDP per configured `(address, port)`, raw ESP per configured family and
//! address), one epoll instance over them, a [`FramePool`] the packets are received into, and the
//! per-socket TX queues. Packets are copied once by the kernel into pool frames.
//!
//! **Receive.** One `epoll_wait(0)` per `recv` call finds the readable sockets; each gets one
//! `recvmmsg(MSG_DONTWAIT)` for up to `batch` datagrams. The worker always sees an L3 packet at
//! `HEADROOM`:
//! - UDP: the payload is received after room for a synthetic IPv4 (20) or IPv6 (40) + UDP (8)
//!   header, which is then written from `msg_name` (source address and port), `IP_PKTINFO` /
//!   `IPV6_PKTINFO` (the destination address of the datagram), the bound port, and TTL / hop
//!   limit and TOS / traffic class from ancillary data. IPv4: id 0, DF set, valid header checksum;
//!   the UDP checksum is computed (valid on both families).
//! - raw ESP over IPv4: the kernel delivers the IP header itself; the packet is taken as is.
//! - raw ESP over IPv6: the kernel delivers only the ESP payload; the 40-byte IPv6 header
//!   (next header 50) is built from `msg_name`, `IPV6_PKTINFO`, hop limit and traffic class.
//!   Extension headers the original packet had are not reproduced.
//!
//! Datagrams that do not fit the frame (`MSG_TRUNC`) are dropped and counted in `rx_oversize`;
//! those that lack the ancillary data, in `rx_dropped`. IPv6 sockets are `IPV6_V6ONLY`, so each family has its own sockets.
//!
//! **Send.** `send` parses each packet's L3 header and queues it on a socket; a queue that fills
//! (`batch`) is flushed at once, and `flush` pushes all queues, one `sendmmsg(MSG_DONTWAIT)` per
//! socket with pending packets:
//! - UDP: the payload (after the UDP header) is sent from the socket bound to the packet's
//!   source port (and source address, or the wildcard) to its destination; a wildcard-bound socket
//!   gets the source address through `IP_PKTINFO` / `IPV6_PKTINFO`.
//! - ESP over IPv4: the whole packet through the raw socket with `IP_HDRINCL` (the kernel fills
//!   in the header checksum, and the id when it is 0).
//! - ESP over IPv6: the packet after the 40-byte header through the raw socket, with the source
//!   address in `IPV6_PKTINFO` and the hop limit in `IPV6_HOPLIMIT`.
//!
//! Anything else (other protocols, no socket for the source port, no raw socket for the family)
//! is dropped and counted in `tx_dropped`, as are packets the kernel refuses: `EAGAIN` /
//! `ENOBUFS` drop the rest of that socket's batch, any other error drops the one packet it
//! concerns. Frames are returned to the pool after their `sendmmsg`.
//!
//! **Unsafe.** The `msghdr`/`iovec` arrays hold raw pointers into the pool and into this
//! struct's own scratch buffers; they are rebuilt right before each syscall, from frames the
//! backend owns at that moment, and the kernel uses them only during that syscall. `SocketIo`
//! is `Send` because those pointers never outlive a call and nothing else aliases them.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::io::{Desc, FRAME_SIZE, HEADROOM, IoStats, PacketIo, Side};

use super::pool::FramePool;
use crate::wire::ip::{self, IPV4_HEADER_LEN as IPV4_HDR, IPV6_HEADER_LEN as IPV6_HDR};
use crate::wire::udp::{HEADER_LEN as UDP_HDR, UdpPacket, UdpRepr};
use crate::wire::{Ipv4Repr, Ipv6Repr, protocol};

/// A UDP socket to bind: packets received on it are tagged `side`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBind {
    pub side: Side,
    pub addr: SocketAddr,
}

/// A raw ESP socket: `addr`'s family picks IPv4 or IPv6; a specific address limits it to ESP
/// sent to that address (bind), the unspecified one takes all ESP of that family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspBind {
    pub side: Side,
    pub addr: IpAddr,
}

/// What [`SocketIo::new`] opens.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    pub udp: Vec<UdpBind>,
    pub esp: Vec<EspBind>,
    /// Frames in the pool (default 4096 = 16 MiB).
    pub frames: u32,
    /// Most datagrams per `recvmmsg`/`sendmmsg` (default 64).
    pub batch: usize,
    /// `SO_RCVBUF` / `SO_SNDBUF` for every socket, if set. The receive default is 4 MiB, not
    /// the kernel's ~200 KiB: a worker descheduled for a few milliseconds during a burst (a
    /// cell coming back, its phones all registering) must not lose datagrams.
    pub rcvbuf: Option<usize>,
    pub sndbuf: Option<usize>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            udp: Vec::new(),
            esp: Vec::new(),
            frames: 4096,
            batch: 64,
            rcvbuf: Some(4 << 20),
            sndbuf: None,
        }
    }
}

impl SocketConfig {
    /// Add one UDP socket per port of `ports` on `ip` (e.g. the protected port range).
    pub fn udp_range(&mut self, side: Side, ip: IpAddr, ports: RangeInclusive<u16>) -> &mut Self {
        for p in ports {
            self.udp.push(UdpBind {
                side,
                addr: SocketAddr::new(ip, p),
            });
        }
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Udp4,
    Udp6,
    Esp4,
    Esp6,
}

impl Kind {
    /// Bytes of synthetic header written in front of what the kernel delivers.
    fn rx_hdr(self) -> usize {
        match self {
            Kind::Udp4 => IPV4_HDR + UDP_HDR,
            Kind::Udp6 => IPV6_HDR + UDP_HDR,
            Kind::Esp4 => 0,
            Kind::Esp6 => IPV6_HDR,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct TxItem {
    frame: u32,
    off: u16,
    len: u16,
    dst: SockAddrBuf,
    /// Source address to put in PKTINFO (None: let the socket's binding decide).
    src: Option<IpAddr>,
    /// IPv6 hop limit to send with (raw ESP over IPv6), 0 = default.
    hlim: u8,
}

#[derive(Debug)]
struct Sock {
    /// The kernel's drop count (`SO_RXQ_OVFL`) last seen on this socket.
    queue_drops: u32,
    fd: OwnedFd,
    kind: Kind,
    side: Side,
    local: IpAddr,
    port: u16,
    txq: Vec<TxItem>,
}

/// A `sockaddr_in` or `sockaddr_in6` in storage big enough for either.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) union SockAddrBuf {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for SockAddrBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_socket_addr())
    }
}

impl SockAddrBuf {
    pub(crate) fn new(a: SocketAddr) -> (Self, libc::socklen_t) {
        match a {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
                let mut s: libc::sockaddr_in = unsafe { zeroed() };
                s.sin_family = libc::AF_INET as libc::sa_family_t;
                s.sin_port = a.port().to_be();
                s.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                (
                    SockAddrBuf { v4: s },
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                // SAFETY: as above.
                let mut s: libc::sockaddr_in6 = unsafe { zeroed() };
                s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                s.sin6_port = a.port().to_be();
                s.sin6_addr.s6_addr = a.ip().octets();
                s.sin6_scope_id = a.scope_id();
                (
                    SockAddrBuf { v6: s },
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    }

    fn zero() -> Self {
        // SAFETY: plain old data; all-zero is valid for both variants.
        unsafe { zeroed() }
    }

    fn len(&self) -> libc::socklen_t {
        // SAFETY: the family field lies at the same offset in both variants and is always
        // initialised (zeroed or set).
        match unsafe { self.v4.sin_family } as i32 {
            libc::AF_INET => size_of::<libc::sockaddr_in>() as libc::socklen_t,
            _ => size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        }
    }

    pub(crate) fn to_socket_addr(self) -> Option<SocketAddr> {
        // SAFETY: the family field decides which variant was written; both are plain data.
        unsafe {
            match self.v4.sin_family as i32 {
                libc::AF_INET => Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(self.v4.sin_addr.s_addr.to_ne_bytes())),
                    u16::from_be(self.v4.sin_port),
                )),
                libc::AF_INET6 => Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(self.v6.sin6_addr.s6_addr)),
                    u16::from_be(self.v6.sin6_port),
                )),
                _ => None,
            }
        }
    }
}

const CTRL_LEN: usize = 128;

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Ctrl([u8; CTRL_LEN]);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int with its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub(crate) fn new_socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned descriptor is checked and then owned exclusively.
    let fd =
        cvt(unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn bind(fd: RawFd, a: SocketAddr) -> io::Result<()> {
    let (sa, len) = SockAddrBuf::new(a);
    // SAFETY: `sa` is a valid sockaddr of `len` bytes living across the call.
    cvt(unsafe { libc::bind(fd, (&sa as *const SockAddrBuf).cast(), len) }).map(drop)
}

fn is_again(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

/// The socket backend. See the module documentation.
pub struct SocketIo {
    socks: Vec<Sock>,
    epfd: OwnedFd,
    pool: FramePool,
    batch: usize,
    stats: IoStats,
    // Scratch for one syscall's batch (rebuilt before every call).
    events: Vec<libc::epoll_event>,
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddrBuf>,
    ctrls: Vec<Ctrl>,
    frames: Vec<u32>,
    /// Where the next epoll scan starts (fairness between sockets).
    rr: usize,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("socks", &self.socks)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

// SAFETY: the raw pointers in `msgs`/`iovs` (and the pool's mapping) point only into memory this
// struct owns and are rewritten before each syscall; moving the struct between threads moves
// that memory's sole owner with it.
unsafe impl Send for SocketIo {}

impl SocketIo {
    /// Open, configure and bind every socket of `cfg`, and map the frame pool.
    pub fn new(cfg: &SocketConfig) -> io::Result<Self> {
        let batch = cfg.batch.clamp(1, 1024);
        let mut socks = Vec::new();
        for b in &cfg.udp {
            let (domain, kind) = match b.addr {
                SocketAddr::V4(_) => (libc::AF_INET, Kind::Udp4),
                SocketAddr::V6(_) => (libc::AF_INET6, Kind::Udp6),
            };
            let fd = new_socket(domain, libc::SOCK_DGRAM, 0)?;
            let raw = fd.as_raw_fd();
            if kind == Kind::Udp4 {
                setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_RECVTOS, 1)?;
            } else {
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
            }
            set_bufs(raw, cfg)?;
            bind(raw, b.addr)
                .map_err(|e| io::Error::new(e.kind(), format!("bind UDP {}: {e}", b.addr)))?;
            socks.push(Sock {
                queue_drops: 0,
                fd,
                kind,
                side: b.side,
                local: b.addr.ip(),
                port: b.addr.port(),
                txq: Vec::with_capacity(batch),
            });
        }
        for b in &cfg.esp {
            let (domain, kind) = match b.addr {
                IpAddr::V4(_) => (libc::AF_INET, Kind::Esp4),
                IpAddr::V6(_) => (libc::AF_INET6, Kind::Esp6),
            };
            let fd = new_socket(domain, libc::SOCK_RAW, libc::IPPROTO_ESP)?;
            let raw = fd.as_raw_fd();
            if kind == Kind::Esp4 {
                setsockopt_int(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)?;
            } else {
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
                setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1)?;
            }
            set_bufs(raw, cfg)?;
            if !b.addr.is_unspecified() {
                bind(raw, SocketAddr::new(b.addr, 0))
                    .map_err(|e| io::Error::new(e.kind(), format!("bind ESP {}: {e}", b.addr)))?;
            }
            socks.push(Sock {
                queue_drops: 0,
                fd,
                kind,
                side: b.side,
                local: b.addr,
                port: 0,
                txq: Vec::with_capacity(batch),
            });
        }
        // SAFETY: plain syscall; the descriptor is checked and owned.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fresh descriptor, owned from here on.
        let epfd = unsafe { OwnedFd::from_raw_fd(ep) };
        for (i, s) in socks.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: valid epoll fd, socket fd and event pointer.
            cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.fd.as_raw_fd(), &mut ev) })?;
        }
        let nsock = socks.len().max(1);
        // SAFETY (zeroed): mmsghdr and iovec are plain C structs for which all-zero is valid.
        Ok(SocketIo {
            socks,
            epfd,
            pool: FramePool::new(cfg.frames)?,
            batch,
            stats: IoStats::default(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; nsock],
            msgs: (0..batch).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..batch)
                .map(|_| libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            names: vec![SockAddrBuf::zero(); batch],
            ctrls: vec![Ctrl([0; CTRL_LEN]); batch],
            frames: vec![0; batch],
            rr: 0,
        })
    }

    /// The local address each socket is bound to (after binding port 0 the kernel's choice), in
    /// configuration order: UDP sockets, then ESP sockets.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.socks
            .iter()
            .map(|s| {
                let mut sa = SockAddrBuf::zero();
                let mut len = size_of::<SockAddrBuf>() as libc::socklen_t;
                // SAFETY: `sa` is writable storage of `len` bytes.
                cvt(unsafe {
                    libc::getsockname(
                        s.fd.as_raw_fd(),
                        (&mut sa as *mut SockAddrBuf).cast(),
                        &mut len,
                    )
                })?;
                sa.to_socket_addr()
                    .ok_or_else(|| io::Error::other("unknown family"))
            })
            .collect()
    }

    /// Frames currently free in the pool.
    pub fn free_frames(&self) -> usize {
        self.pool.available()
    }

    fn recv_sock(&mut self, si: usize, out: &mut [Desc]) -> io::Result<usize> {
        let want = out.len().min(self.batch);
        let kind = self.socks[si].kind;
        let side = self.socks[si].side;
        let hdr = kind.rx_hdr();
        let data_off = HEADROOM + hdr;
        let mut k = 0;
        while k < want {
            match self.pool.alloc() {
                Some(f) => {
                    self.frames[k] = f;
                    k += 1;
                }
                None => break,
            }
        }
        if k == 0 {
            self.stats.rx_no_frame += 1;
            return Ok(0);
        }
        for i in 0..k {
            self.iovs[i] = libc::iovec {
                iov_base: self.pool.ptr(self.frames[i], data_off).cast(),
                iov_len: FRAME_SIZE - data_off,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut SockAddrBuf).cast();
            h.msg_namelen = size_of::<SockAddrBuf>() as libc::socklen_t;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = self.ctrls[i].0.as_mut_ptr().cast();
            h.msg_controllen = CTRL_LEN as _;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        self.stats.syscalls += 1;
        // SAFETY: `msgs[..k]` point at live iovecs, names and control buffers of this struct
        // and at frames this backend owns; all stay valid for the duration of the call.
        let r = unsafe {
            libc::recvmmsg(
                self.socks[si].fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                k as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            for i in 0..k {
                self.pool.free(self.frames[i]);
            }
            return if is_again(&e) { Ok(0) } else { Err(e) };
        }
        let r = r as usize;
        let mut n = 0;
        for i in 0..k {
            let f = self.frames[i];
            if i >= r {
                self.pool.free(f);
                continue;
            }
            let len = self.msgs[i].msg_len as usize;
            let flags = self.msgs[i].msg_hdr.msg_flags;
            if flags & libc::MSG_TRUNC != 0 {
                // The datagram did not fit the frame (a jumbo-MTU link): the kernel cut it.
                self.stats.rx_oversize += 1;
                self.pool.free(f);
                continue;
            }
            let meta = if flags & libc::MSG_CTRUNC != 0 {
                None
            } else {
                // SAFETY: msgs[i] was filled by the kernel; its control pointer/length describe
                // ctrls[i].
                Some(unsafe { parse_cmsgs(&self.msgs[i].msg_hdr) })
            };
            let name = self.names[i].to_socket_addr();
            let local = self.socks[si].local;
            let port = self.socks[si].port;
            if let Some(d) = meta.and_then(|m| m.queue_drops) {
                let seen = &mut self.socks[si].queue_drops;
                self.stats.rx_queue_overflow += u64::from(d.wrapping_sub(*seen));
                *seen = d;
            }
            let frame = self.pool.frame_mut(f);
            let ok = match meta {
                None => None,
                Some(m) => build_rx(kind, frame, len, name, local, port, &m),
            };
            match ok {
                Some(total) => {
                    out[n] = Desc {
                        frame: f,
                        start: HEADROOM as u16,
                        end: (HEADROOM + total) as u16,
                        side,
                    };
                    n += 1;
                }
                None => {
                    self.stats.rx_dropped += 1;
                    self.pool.free(f);
                }
            }
        }
        self.stats.rx_packets += n as u64;
        Ok(n)
    }

    fn flush_sock(&mut self, si: usize) -> io::Result<()> {
        let q = self.socks[si].txq.len();
        if q == 0 {
            return Ok(());
        }
        for i in 0..q {
            let it = self.socks[si].txq[i];
            self.names[i] = it.dst;
            self.iovs[i] = libc::iovec {
                iov_base: self.pool.ptr(it.frame, it.off as usize).cast(),
                iov_len: it.len as usize,
            };
            let clen = write_cmsgs(&mut self.ctrls[i], it.src, it.hlim);
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut SockAddrBuf).cast();
            h.msg_namelen = it.dst.len();
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = if clen == 0 {
                std::ptr::null_mut()
            } else {
                self.ctrls[i].0.as_mut_ptr().cast()
            };
            h.msg_controllen = clen as _;
            h.msg_flags = 0;
            self.msgs[i].msg_len = 0;
        }
        let fd = self.socks[si].fd.as_raw_fd();
        let mut sent = 0usize;
        let mut err = None;
        // Each round either sends ≥ 1 packet, drops ≥ 1, or ends: at most q + 4 rounds.
        let mut rounds = 0;
        while sent < q && rounds < q + 4 {
            rounds += 1;
            self.stats.syscalls += 1;
            // SAFETY: msgs[sent..q] were just built from live buffers and owned frames.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs.as_mut_ptr().add(sent),
                    (q - sent) as _,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                sent += r as usize;
                self.stats.tx_packets += r as u64;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                    self.stats.tx_dropped += (q - sent) as u64;
                    sent = q;
                }
                Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => {
                    self.stats.tx_dropped += (q - sent) as u64;
                    sent = q;
                    err = Some(e);
                }
                _ => {
                    // This packet was refused (e.g. EMSGSIZE, ENETUNREACH, EINVAL): drop it.
                    self.stats.tx_dropped += 1;
                    sent += 1;
                }
            }
        }
        if sent < q {
            self.stats.tx_dropped += (q - sent) as u64;
        }
        for i in 0..q {
            let f = self.socks[si].txq[i].frame;
            self.pool.free(f);
        }
        self.socks[si].txq.clear();
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Which socket sends this packet, and how: `None` = drop.
    fn classify(&self, d: &Desc) -> Option<(usize, TxItem)> {
        let frame = self.pool.frame(d.frame);
        let (s, e) = (d.start as usize, d.end as usize);
        if s > e || e > FRAME_SIZE {
            return None;
        }
        let pkt = &frame[s..e];
        let l3 = ip::parse(pkt).ok()?;
        if l3.fragment {
            return None;
        }
        match l3.protocol {
            protocol::UDP => {
                let udp = UdpPacket::new_checked(&pkt[l3.body()]).ok()?;
                let (sport, dport) = (udp.src_port(), udp.dst_port());
                let want_v4 = l3.src.is_ipv4();
                let si = self.socks.iter().position(|k| {
                    matches!((k.kind, want_v4), (Kind::Udp4, true) | (Kind::Udp6, false))
                        && k.port == sport
                        && (k.local == l3.src || k.local.is_unspecified())
                })?;
                let (dst, _) = SockAddrBuf::new(SocketAddr::new(l3.dst, dport));
                let off = s + l3.header_len + UDP_HDR;
                let src = self.socks[si].local.is_unspecified().then_some(l3.src);
                Some((
                    si,
                    TxItem {
                        frame: d.frame,
                        off: off as u16,
                        len: (s + l3.end - off) as u16,
                        dst,
                        src,
                        hlim: 0,
                    },
                ))
            }
            protocol::ESP => {
                let want = if l3.src.is_ipv4() {
                    Kind::Esp4
                } else {
                    Kind::Esp6
                };
                let si = self.socks.iter().position(|k| {
                    k.kind == want && (k.local == l3.src || k.local.is_unspecified())
                })?;
                let (dst, _) = SockAddrBuf::new(SocketAddr::new(l3.dst, 0));
                if want == Kind::Esp4 {
                    Some((
                        si,
                        TxItem {
                            frame: d.frame,
                            off: s as u16,
                            len: l3.end as u16,
                            dst,
                            src: None,
                            hlim: 0,
                        },
                    ))
                } else {
                    // the kernel writes the IPv6 header of a raw socket: no extension headers
                    if l3.header_len != IPV6_HDR {
                        return None;
                    }
                    let off = s + IPV6_HDR;
                    Some((
                        si,
                        TxItem {
                            frame: d.frame,
                            off: off as u16,
                            len: (l3.end - IPV6_HDR) as u16,
                            dst,
                            src: Some(l3.src),
                            hlim: pkt[7],
                        },
                    ))
                }
            }
            _ => None,
        }
    }
}

fn set_bufs(fd: RawFd, cfg: &SocketConfig) -> io::Result<()> {
    // every datagram tells us how many the kernel dropped on a full queue before it
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    if let Some(n) = cfg.rcvbuf {
        let n = n.min(i32::MAX as usize / 2) as i32;
        // past net.core.rmem_max only with CAP_NET_ADMIN; without it, what the limit allows
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, n).is_err() {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n)?;
        }
    }
    if let Some(n) = cfg.sndbuf {
        setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            n.min(i32::MAX as usize) as i32,
        )?;
    }
    Ok(())
}

/// Ancillary data of one received datagram.
#[derive(Clone, Copy, Debug, Default)]
struct RxMeta {
    dst: Option<IpAddr>,
    ttl: Option<u8>,
    tos: u8,
    /// The socket's running count of datagrams dropped on a full receive queue.
    queue_drops: Option<u32>,
}

/// Read IP_PKTINFO / IPV6_PKTINFO, TTL / hop limit and TOS / traffic class.
///
/// # Safety
/// `h` must be a `msghdr` filled by `recvmsg`, whose control pointer and length describe a live
/// buffer.
unsafe fn parse_cmsgs(h: &libc::msghdr) -> RxMeta {
    let mut m = RxMeta::default();
    // SAFETY: per the contract, the CMSG_* walk stays inside the control buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let (lvl, ty) = ((*c).cmsg_level, (*c).cmsg_type);
            let data = libc::CMSG_DATA(c);
            match (lvl, ty) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p = data.cast::<libc::in_pktinfo>().read_unaligned();
                    m.dst = Some(IpAddr::V4(Ipv4Addr::from(p.ipi_addr.s_addr.to_ne_bytes())));
                }
                (libc::IPPROTO_IP, libc::IP_TTL) => {
                    m.ttl = Some(data.cast::<libc::c_int>().read_unaligned() as u8)
                }
                (libc::IPPROTO_IP, libc::IP_TOS) => m.tos = data.read(),
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    m.dst = Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    m.ttl = Some(data.cast::<libc::c_int>().read_unaligned() as u8)
                }
                (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                    m.tos = data.cast::<libc::c_int>().read_unaligned() as u8
                }
                (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                    m.queue_drops = Some(data.cast::<u32>().read_unaligned())
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    m
}

/// Write the synthetic headers for a received datagram of `len` bytes (already at
/// `HEADROOM + kind.rx_hdr()`); returns the L3 packet length, or `None` to drop it.
fn build_rx(
    kind: Kind,
    frame: &mut [u8],
    len: usize,
    name: Option<SocketAddr>,
    local: IpAddr,
    port: u16,
    m: &RxMeta,
) -> Option<usize> {
    let p = &mut frame[HEADROOM..];
    let dst = m.dst.or((!local.is_unspecified()).then_some(local));
    match kind {
        Kind::Esp4 => {
            let l3 = ip::parse(p.get(..len)?).ok()?;
            (l3.end == len).then_some(len)
        }
        Kind::Esp6 => {
            let (IpAddr::V6(s), Some(IpAddr::V6(d))) = (name?.ip(), dst) else {
                return None;
            };
            Ipv6Repr {
                src: s,
                dst: d,
                next_header: protocol::ESP,
                hop_limit: m.ttl.unwrap_or(64),
                traffic_class: m.tos,
                payload_len: len,
            }
            .emit(p)
            .ok()?;
            Some(IPV6_HDR + len)
        }
        Kind::Udp4 | Kind::Udp6 => {
            let src = name?;
            let dst = dst?;
            let udp_len = UDP_HDR + len;
            let ip_len = match (src.ip(), dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    Ipv4Repr {
                        src: s,
                        dst: d,
                        protocol: protocol::UDP,
                        ttl: m.ttl.unwrap_or(64),
                        tos: m.tos,
                        payload_len: udp_len,
                    }
                    .emit(p)
                    .ok()?;
                    IPV4_HDR
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    Ipv6Repr {
                        src: s,
                        dst: d,
                        next_header: protocol::UDP,
                        hop_limit: m.ttl.unwrap_or(64),
                        traffic_class: m.tos,
                        payload_len: udp_len,
                    }
                    .emit(p)
                    .ok()?;
                    IPV6_HDR
                }
                _ => return None,
            };
            let total = ip_len + udp_len;
            let udp = p.get_mut(ip_len..total)?;
            UdpRepr {
                src_port: src.port(),
                dst_port: port,
                payload_len: len,
            }
            .emit(udp)
            .ok()?;
            UdpPacket::new_unchecked(udp).fill_checksum(src.ip(), dst);
            Some(total)
        }
    }
}

/// Control messages for a send: PKTINFO with the source address, and the IPv6 hop limit.
/// Returns the control length (0 = none).
fn write_cmsgs(ctrl: &mut Ctrl, src: Option<IpAddr>, hlim: u8) -> usize {
    ctrl.0.fill(0);
    let mut off = 0usize;
    let mut put = |level: libc::c_int, ty: libc::c_int, data: &[u8]| {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let (space, clen) = unsafe {
            (
                libc::CMSG_SPACE(data.len() as u32) as usize,
                libc::CMSG_LEN(data.len() as u32) as usize,
            )
        };
        let hdr = libc::cmsghdr {
            cmsg_len: clen as _,
            cmsg_level: level,
            cmsg_type: ty,
        };
        let hsz = size_of::<libc::cmsghdr>();
        // SAFETY: `hdr` is plain data of `hsz` bytes; the buffer has room (≤ 2 small cmsgs).
        let hb =
            unsafe { std::slice::from_raw_parts((&hdr as *const libc::cmsghdr).cast::<u8>(), hsz) };
        ctrl.0[off..off + hsz].copy_from_slice(hb);
        ctrl.0[off + (clen - data.len())..off + clen].copy_from_slice(data);
        off += space;
    };
    match src {
        Some(IpAddr::V4(a)) => {
            // in_pktinfo { ipi_ifindex: c_int, ipi_spec_dst: in_addr, ipi_addr: in_addr }
            let mut d = [0u8; 12];
            d[4..8].copy_from_slice(&a.octets());
            put(libc::IPPROTO_IP, libc::IP_PKTINFO, &d);
        }
        Some(IpAddr::V6(a)) => {
            // in6_pktinfo { ipi6_addr: in6_addr, ipi6_ifindex: c_uint }
            let mut d = [0u8; 20];
            d[..16].copy_from_slice(&a.octets());
            put(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &d);
        }
        None => {}
    }
    if hlim != 0 {
        put(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &(hlim as libc::c_int).to_ne_bytes(),
        );
    }
    off
}

impl PacketIo for SocketIo {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        if out.is_empty() || self.socks.is_empty() {
            return Ok(0);
        }
        self.stats.syscalls += 1;
        // SAFETY: `events` is a live buffer of `events.len()` entries.
        let ne = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                0,
            )
        };
        if ne < 0 {
            let e = io::Error::last_os_error();
            return if is_again(&e) { Ok(0) } else { Err(e) };
        }
        let ne = ne as usize;
        let mut n = 0;
        for j in 0..ne {
            if n == out.len() {
                break;
            }
            let si = self.events[(j + self.rr) % ne].u64 as usize;
            n += self.recv_sock(si, &mut out[n..])?;
        }
        self.rr = self.rr.wrapping_add(1);
        Ok(n)
    }

    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        self.pool.frame_mut(d.frame)
    }

    fn alloc(&mut self, side: Side) -> Option<Desc> {
        self.pool.alloc_desc(side)
    }

    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        let mut res = Ok(());
        for d in pkts {
            match self.classify(d) {
                Some((si, it)) => {
                    self.socks[si].txq.push(it);
                    if self.socks[si].txq.len() >= self.batch
                        && let Err(e) = self.flush_sock(si)
                    {
                        res = Err(e);
                    }
                }
                None => {
                    self.stats.tx_dropped += 1;
                    self.pool.free(d.frame);
                }
            }
        }
        res
    }

    fn free(&mut self, pkts: &[Desc]) {
        for d in pkts {
            self.pool.free(d.frame);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut res = Ok(());
        for si in 0..self.socks.len() {
            if let Err(e) = self.flush_sock(si) {
                res = Err(e);
            }
        }
        res
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
