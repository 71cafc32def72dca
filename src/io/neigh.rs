//! Next-hop MAC addresses for the backends that write Ethernet headers themselves (AF_PACKET,
//! AF_XDP): an immutable snapshot of the kernel's routes, neighbours and link addresses, read
//! through rtnetlink by a control thread and swapped in; workers never ask netlink per packet.
//!
//! Owns:
//! - [`NeighTable`]: the snapshot. `lookup(dst)` does a longest-prefix match over the main
//!   routing table's unicast routes (IPv4 and IPv6; the first hop of a multipath route; policy
//!   routing rules are not consulted), takes the gateway or, for an on-link route, the
//!   destination itself as next hop, and returns `(ifindex, source MAC of that link, next-hop
//!   MAC)` from the neighbour table (states REACHABLE, STALE, DELAY, PROBE, PERMANENT, NOARP).
//!   The cost is a scan of the few routes a P-CSCF has plus one hash lookup, no syscall.
//! - [`NeighShared`] / [`NeighReader`]: publication. The control thread builds a new table
//!   ([`NeighTable::from_kernel`], three netlink dumps: RTM_GETLINK, RTM_GETROUTE,
//!   RTM_GETNEIGH) and [`NeighShared::publish`]es it: a mutex-protected `Arc` plus a generation
//!   counter. Each worker holds a [`NeighReader`] and calls [`NeighReader::update`] once per batch:
//!   one atomic load, and only when the generation changed, a short lock to clone the new `Arc`.
//!   Lookups then read the worker's own `Arc<NeighTable>`: no lock, no allocation.
//! - Missing neighbours: the backend drops the packet (counting `tx_no_neighbour`) and calls
//!   [`NeighReader::miss`], which records the destination in a bounded list with `try_lock`
//!   (never blocks; on contention or overflow the miss is simply not recorded: the next packet
//!   reports it again). [`NeighShared::refresh`] (the refresher's periodic step) takes those
//!   addresses and triggers resolution by sending one empty UDP datagram to port 9 (discard)
//!   of each through an ordinary kernel socket: the kernel's route lookup picks the same next
//!   hop and starts ARP / neighbour discovery for it. The reply lands in the kernel's neighbour
//!   table and in the next snapshot. (The peer may answer the datagram with ICMP port
//!   unreachable; that is harmless.)
//!
//! The netlink messages are built and parsed by hand (`nlmsghdr` + `ifinfomsg` / `rtmsg` /
//! `ndmsg` + `rtattr`s): three fixed-layout headers did not justify a crate.
//!
//! Unsafe: only the netlink socket syscalls, each with its buffer pointers and lengths taken
//! from live Rust buffers.

use std::collections::HashMap;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::socket::new_socket;

/// Where to send a frame for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NeighEntry {
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    /// Prefix as a 128-bit number (IPv4 in the low 32 bits), already masked.
    prefix: u128,
    len: u8,
    v6: bool,
    oif: u32,
    gw: Option<IpAddr>,
    metric: u32,
}

fn addr_bits(a: IpAddr) -> (u128, bool) {
    match a {
        IpAddr::V4(v) => (u32::from(v) as u128, false),
        IpAddr::V6(v) => (u128::from(v), true),
    }
}

fn mask(bits: u128, len: u8, v6: bool) -> u128 {
    let width = if v6 { 128 } else { 32 };
    let len = len.min(width) as u32;
    if len == 0 {
        return 0;
    }
    let m = if v6 {
        u128::MAX << (128 - len)
    } else {
        ((u32::MAX as u128) << (32 - len)) & 0xffff_ffff
    };
    bits & m
}

/// An immutable snapshot: routes, neighbours, link MACs. See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct NeighTable {
    /// Longest prefix first, then lowest metric.
    routes: Vec<Route>,
    neigh: HashMap<(IpAddr, u32), [u8; 6]>,
    links: HashMap<u32, [u8; 6]>,
}

impl NeighTable {
    /// An empty table (every lookup misses).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Add an on-link route `prefix/len` via `ifindex`, with the link's MAC (for tests and
    /// static configurations).
    pub fn add_link_route(
        &mut self,
        prefix: IpAddr,
        len: u8,
        ifindex: u32,
        gw: Option<IpAddr>,
        link_mac: [u8; 6],
    ) {
        let (bits, v6) = addr_bits(prefix);
        self.routes.push(Route {
            prefix: mask(bits, len, v6),
            len,
            v6,
            oif: ifindex,
            gw,
            metric: 0,
        });
        self.links.insert(ifindex, link_mac);
        self.sort();
    }

    /// Add a neighbour (next-hop IP on `ifindex` → MAC).
    pub fn add_neighbour(&mut self, ip: IpAddr, ifindex: u32, mac: [u8; 6]) {
        self.neigh.insert((ip, ifindex), mac);
    }

    fn sort(&mut self) {
        self.routes
            .sort_by(|a, b| b.len.cmp(&a.len).then(a.metric.cmp(&b.metric)));
    }

    /// The next hop for `dst`: (outgoing ifindex, next-hop address).
    pub fn next_hop(&self, dst: IpAddr) -> Option<(u32, IpAddr)> {
        let (bits, v6) = addr_bits(dst);
        let r = self
            .routes
            .iter()
            .find(|r| r.v6 == v6 && mask(bits, r.len, v6) == r.prefix)?;
        Some((r.oif, r.gw.unwrap_or(dst)))
    }

    /// Where to send a frame for `dst`, or `None` when no route or no neighbour is known.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NeighEntry> {
        let (ifindex, hop) = self.next_hop(dst)?;
        let dst_mac = *self.neigh.get(&(hop, ifindex))?;
        let src_mac = *self.links.get(&ifindex)?;
        Some(NeighEntry {
            ifindex,
            src_mac,
            dst_mac,
        })
    }

    /// Number of neighbour entries.
    pub fn neighbours(&self) -> usize {
        self.neigh.len()
    }

    /// Snapshot the kernel's tables (of the calling thread's network namespace).
    pub fn from_kernel() -> io::Result<Self> {
        let nl = Netlink::open()?;
        let mut t = NeighTable::default();
        // Links: ifindex -> MAC.
        for m in nl.dump(libc::RTM_GETLINK, &[0u8; 16])? {
            if m.ty != libc::RTM_NEWLINK || m.body.len() < 16 {
                continue;
            }
            let idx = i32::from_ne_bytes(m.body[4..8].try_into().unwrap()) as u32;
            for (ty, v) in attrs(&m.body[16..]) {
                if ty == libc::IFLA_ADDRESS && v.len() == 6 {
                    t.links.insert(idx, v.try_into().unwrap());
                }
            }
        }
        // Routes (both families): main table, unicast.
        let mut rq = [0u8; 12];
        rq[0] = libc::AF_UNSPEC as u8;
        for m in nl.dump(libc::RTM_GETROUTE, &rq)? {
            if m.ty != libc::RTM_NEWROUTE {
                continue;
            }
            if let Some(r) = parse_route(&m.body) {
                t.routes.push(r);
            }
        }
        t.sort();
        // Neighbours.
        let mut nq = [0u8; 12];
        nq[0] = libc::AF_UNSPEC as u8;
        const USABLE: u16 = libc::NUD_REACHABLE
            | libc::NUD_STALE
            | libc::NUD_DELAY
            | libc::NUD_PROBE
            | libc::NUD_PERMANENT
            | libc::NUD_NOARP;
        for m in nl.dump(libc::RTM_GETNEIGH, &nq)? {
            if m.ty != libc::RTM_NEWNEIGH || m.body.len() < 12 {
                continue;
            }
            let b = &m.body;
            let idx = i32::from_ne_bytes(b[4..8].try_into().unwrap()) as u32;
            let state = u16::from_ne_bytes([b[8], b[9]]);
            if state & USABLE == 0 {
                continue;
            }
            let (mut ip, mut mac) = (None, None);
            for (ty, v) in attrs(&b[12..]) {
                match ty {
                    libc::NDA_DST => ip = ip_from(v),
                    libc::NDA_LLADDR if v.len() == 6 => mac = Some(<[u8; 6]>::try_from(v).unwrap()),
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                t.neigh.insert((ip, idx), mac);
            }
        }
        Ok(t)
    }
}

/// A unicast route of the main table from an `RTM_NEWROUTE` body (`rtmsg` then attributes);
/// `None` for anything else or a malformed message (every slice is checked: the body comes
/// from outside this process).
fn parse_route(b: &[u8]) -> Option<Route> {
    if b.len() < 12 {
        return None;
    }
    let (fam, dst_len, table, rtype) = (b[0] as i32, b[1], b[4], b[7]);
    if rtype != libc::RTN_UNICAST {
        return None;
    }
    let v6 = fam == libc::AF_INET6;
    if !v6 && fam != libc::AF_INET {
        return None;
    }
    let mut table = table as u32;
    let (mut dst, mut oif, mut gw, mut metric) = (None, 0u32, None, 0u32);
    for (ty, v) in attrs(&b[12..]) {
        match ty {
            libc::RTA_DST => dst = ip_from(v),
            libc::RTA_OIF if v.len() == 4 => oif = u32::from_ne_bytes(v.try_into().ok()?),
            libc::RTA_GATEWAY => gw = ip_from(v),
            libc::RTA_PRIORITY if v.len() == 4 => metric = u32::from_ne_bytes(v.try_into().ok()?),
            libc::RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes(v.try_into().ok()?),
            libc::RTA_MULTIPATH if oif == 0 && v.len() >= 8 => {
                // First rtnexthop: len u16, flags u8, hops u8, ifindex i32, then attrs. Its
                // length may claim less than its own header: then it has no attributes.
                let l = (u16::from_ne_bytes([v[0], v[1]]) as usize).min(v.len());
                oif = i32::from_ne_bytes(v[4..8].try_into().ok()?) as u32;
                for (t2, v2) in attrs(v.get(8..l).unwrap_or_default()) {
                    if t2 == libc::RTA_GATEWAY {
                        gw = ip_from(v2);
                    }
                }
            }
            _ => {}
        }
    }
    if table != libc::RT_TABLE_MAIN as u32 || oif == 0 {
        return None;
    }
    let bits = match dst {
        Some(a) => addr_bits(a).0,
        None => 0,
    };
    Some(Route {
        prefix: mask(bits, dst_len, v6),
        len: dst_len,
        v6,
        oif,
        gw,
        metric,
    })
}

/// Ask the kernel (RTM_GETROUTE for one destination, honouring policy routing) for the next
/// hop of `dst`: (outgoing ifindex, gateway if any). For the control plane, not per packet.
pub fn kernel_route_get(dst: IpAddr) -> io::Result<(u32, Option<IpAddr>)> {
    let nl = Netlink::open()?;
    let (fam, octets): (u8, Vec<u8>) = match dst {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec()),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec()),
    };
    let mut body = vec![0u8; 12];
    body[0] = fam;
    body[1] = (octets.len() * 8) as u8;
    push_attr(&mut body, libc::RTA_DST, &octets);
    let msgs = nl.request(libc::RTM_GETROUTE, libc::NLM_F_REQUEST as u16, &body)?;
    for m in msgs {
        if m.ty == libc::RTM_NEWROUTE && m.body.len() >= 12 {
            let (mut oif, mut gw) = (0, None);
            for (ty, v) in attrs(&m.body[12..]) {
                match ty {
                    libc::RTA_OIF if v.len() == 4 => {
                        oif = u32::from_ne_bytes(v.try_into().unwrap())
                    }
                    libc::RTA_GATEWAY => gw = ip_from(v),
                    _ => {}
                }
            }
            return Ok((oif, gw));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no route to {dst}"),
    ))
}

/// Trigger ARP / neighbour discovery for `dst`'s next hop: one empty UDP datagram to port 9.
pub fn trigger_resolution(dst: IpAddr) -> io::Result<()> {
    let any: IpAddr = if dst.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))?;
    s.send_to(&[], SocketAddr::new(dst, 9)).map(drop)
}

fn ip_from(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterate `rtattr`s (len u16, type u16, value, padding to 4).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff; // strip NLA_F_NESTED / BYTEORDER
        if len < 4 || len > b.len() {
            return None;
        }
        let v = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((ty, v))
    })
}

fn push_attr(buf: &mut Vec<u8>, ty: u16, v: &[u8]) {
    buf.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(v);
    buf.resize(align4(buf.len()), 0);
}

struct NlMsg {
    ty: u16,
    body: Vec<u8>,
}

struct Netlink {
    fd: OwnedFd,
    /// Sequence number of the last request (each request gets a new one; answers carry it).
    seq: std::cell::Cell<u32>,
}

/// One answer datagram from the kernel: the messages of request `seq` go to `out`. Returns
/// whether the answer is complete (NLMSG_DONE, an ACK, or the one reply of a non-dump). A
/// message of another sequence number (a stale answer) is skipped; every length is checked, so
/// a truncated or hostile datagram is an error, never a panic.
fn parse_answer(mut b: &[u8], seq: u32, is_dump: bool, out: &mut Vec<NlMsg>) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().map_err(|_| bad("header"))?) as usize;
        let mty = u16::from_ne_bytes([b[4], b[5]]);
        let mseq = u32::from_ne_bytes(b[8..12].try_into().map_err(|_| bad("header"))?);
        if len < 16 || len > b.len() {
            return Err(bad("bad message length"));
        }
        let body = &b[16..len];
        b = &b[align4(len).min(b.len())..];
        if mseq != seq {
            continue;
        }
        match mty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                // struct nlmsgerr: error i32, then the request's header.
                let code = body
                    .get(0..4)
                    .and_then(|c| c.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .ok_or_else(|| bad("truncated error message"))?;
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(code.saturating_neg()));
                }
                return Ok(true); // an ACK
            }
            _ => {
                out.push(NlMsg {
                    ty: mty,
                    body: body.to_vec(),
                });
                if !is_dump {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

impl Netlink {
    fn open() -> io::Result<Self> {
        let fd = new_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: zeroed sockaddr_nl is valid (pid 0 = kernel assigns, no groups).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid fd and sockaddr of the stated size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink {
            fd,
            seq: std::cell::Cell::new(0),
        })
    }

    fn dump(&self, ty: u16, body: &[u8]) -> io::Result<Vec<NlMsg>> {
        self.request(ty, (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16, body)
    }

    /// Send one request and collect the answer until NLMSG_DONE (dump) or the first reply.
    /// Only datagrams from the kernel (sender port id 0) are read: another process may send to
    /// this socket's port id (a unicast netlink message needs no privilege to address it), and
    /// its messages are skipped whatever they say.
    fn request(&self, ty: u16, flags: u16, body: &[u8]) -> io::Result<Vec<NlMsg>> {
        let seq = self.seq.get().wrapping_add(1).max(1);
        self.seq.set(seq);
        let mut req = Vec::with_capacity(16 + body.len());
        req.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        req.extend_from_slice(&ty.to_ne_bytes());
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        // SAFETY: `req` is a live buffer of the given length; kernel is the default destination.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let is_dump = flags & libc::NLM_F_DUMP as u16 != 0;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Bounded: a dump of a P-CSCF namespace is a handful of buffers; stop after 10 000.
        for _ in 0..10_000 {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let pr = unsafe { libc::poll(&mut pfd, 1, 2000) };
            if pr == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "netlink: no answer",
                ));
            }
            // SAFETY: zeroed sockaddr_nl is valid; recvfrom fills it.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are live, writable buffers of the stated lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    continue;
                }
                return Err(e);
            }
            if !from_kernel(&from, from_len) {
                continue;
            }
            if parse_answer(&buf[..n as usize], seq, is_dump, &mut out)? {
                return Ok(out);
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "netlink: dump did not end",
        ))
    }
}

/// Was a datagram sent by the kernel? (netlink address of port id 0)
fn from_kernel(sa: &libc::sockaddr_nl, len: libc::socklen_t) -> bool {
    len as usize >= size_of::<libc::sockaddr_nl>()
        && sa.nl_family == libc::AF_NETLINK as u16
        && sa.nl_pid == 0
}

const MAX_MISSES: usize = 64;

/// The published table and the misses workers reported. Shared by the control thread and the
/// workers' [`NeighReader`]s.
#[derive(Debug)]
pub struct NeighShared {
    generation: AtomicU64,
    table: Mutex<Arc<NeighTable>>,
    misses: Mutex<Vec<IpAddr>>,
}

impl NeighShared {
    pub fn new(t: NeighTable) -> Arc<Self> {
        Arc::new(NeighShared {
            generation: AtomicU64::new(1),
            table: Mutex::new(Arc::new(t)),
            misses: Mutex::new(Vec::with_capacity(MAX_MISSES)),
        })
    }

    /// Replace the table; readers pick it up at their next `update`.
    pub fn publish(&self, t: NeighTable) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current table.
    pub fn current(&self) -> Arc<NeighTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A reader for one worker.
    pub fn reader(self: &Arc<Self>) -> NeighReader {
        let generation = self.generation.load(Ordering::Acquire);
        NeighReader {
            shared: self.clone(),
            generation,
            cur: self.current(),
        }
    }

    /// Take the destinations that missed since the last call (deduplicated).
    pub fn take_misses(&self) -> Vec<IpAddr> {
        let mut v = std::mem::take(&mut *self.misses.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort();
        v.dedup();
        v
    }

    /// One refresh step: trigger resolution for the reported misses, then snapshot the
    /// kernel's tables and publish them. Returns the number of misses handled.
    pub fn refresh(&self) -> io::Result<usize> {
        let misses = self.take_misses();
        for &m in &misses {
            let _ = trigger_resolution(m);
        }
        self.publish(NeighTable::from_kernel()?);
        Ok(misses.len())
    }

    /// Run [`refresh`](Self::refresh) every `every` on a new thread (in the calling thread's
    /// network namespace) until `stop` is set.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        every: Duration,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("neigh-refresh".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = me.refresh();
                    std::thread::sleep(every);
                }
            })
            .expect("spawn neighbour refresher")
    }
}

/// A worker's view: its own `Arc` of the current table, swapped at `update`.
#[derive(Debug)]
pub struct NeighReader {
    shared: Arc<NeighShared>,
    generation: u64,
    cur: Arc<NeighTable>,
}

impl NeighReader {
    /// Pick up a newly published table (call once per batch). One atomic load when nothing
    /// changed.
    #[inline]
    pub fn update(&mut self) {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.cur = self.shared.current();
            self.generation = g;
        }
    }

    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<NeighEntry> {
        self.cur.lookup(dst)
    }

    pub fn table(&self) -> &NeighTable {
        &self.cur
    }

    /// Report a destination without a neighbour (never blocks; may be lost under contention).
    #[inline]
    pub fn miss(&self, dst: IpAddr) {
        if let Ok(mut v) = self.shared.misses.try_lock()
            && v.len() < MAX_MISSES
            && !v.contains(&dst)
        {
            v.push(dst);
        }
    }
}

/// The index of interface `name` in the calling thread's network namespace (what netlink and
/// the XDP/AF_PACKET binds name interfaces by).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in interface name")
    })?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("interface {name}: {e}"),
        ));
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_and_neighbours() {
        let mut t = NeighTable::empty();
        let m1 = [2, 0, 0, 0, 0, 1];
        t.add_link_route("10.0.0.0".parse().unwrap(), 24, 3, None, m1);
        t.add_link_route(
            "0.0.0.0".parse().unwrap(),
            0,
            4,
            Some("192.168.1.1".parse().unwrap()),
            [2, 0, 0, 0, 0, 2],
        );
        t.add_neighbour("10.0.0.7".parse().unwrap(), 3, [0xaa; 6]);
        t.add_neighbour("192.168.1.1".parse().unwrap(), 4, [0xbb; 6]);
        assert_eq!(
            t.lookup("10.0.0.7".parse().unwrap()),
            Some(NeighEntry {
                ifindex: 3,
                src_mac: m1,
                dst_mac: [0xaa; 6]
            })
        );
        assert_eq!(t.lookup("10.0.0.8".parse().unwrap()), None);
        assert_eq!(
            t.lookup("8.8.8.8".parse().unwrap()).unwrap().dst_mac,
            [0xbb; 6]
        );
        assert_eq!(t.lookup("::1".parse().unwrap()), None);
        let s = NeighShared::new(NeighTable::empty());
        let mut r = s.reader();
        assert_eq!(r.lookup("10.0.0.7".parse().unwrap()), None);
        r.miss("10.0.0.7".parse().unwrap());
        r.miss("10.0.0.7".parse().unwrap());
        s.publish(t);
        r.update();
        assert!(r.lookup("10.0.0.7".parse().unwrap()).is_some());
        assert_eq!(s.take_misses().len(), 1);
    }

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn rtmsg(attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0u8; 12];
        b[0] = libc::AF_INET as u8;
        b[1] = 24;
        b[4] = libc::RT_TABLE_MAIN;
        b[7] = libc::RTN_UNICAST;
        for (t, v) in attrs {
            push_attr(&mut b, *t, v);
        }
        b
    }

    #[test]
    fn hostile_route_attributes_do_not_panic() {
        // A multipath next hop whose length claims less than its own 8-byte header: the old
        // code sliced `v[8..4]` and panicked.
        let mut nh = vec![0u8; 12];
        nh[0..2].copy_from_slice(&4u16.to_ne_bytes());
        nh[4..8].copy_from_slice(&7i32.to_ne_bytes());
        let r = parse_route(&rtmsg(&[(libc::RTA_MULTIPATH, nh)])).unwrap();
        assert_eq!((r.oif, r.gw), (7, None));
        // Good multipath: the gateway inside is found.
        let mut nh = vec![0u8; 8];
        nh[4..8].copy_from_slice(&9i32.to_ne_bytes());
        push_attr(&mut nh, libc::RTA_GATEWAY, &[10, 0, 0, 1]);
        let l = nh.len() as u16;
        nh[0..2].copy_from_slice(&l.to_ne_bytes());
        let r = parse_route(&rtmsg(&[(libc::RTA_MULTIPATH, nh)])).unwrap();
        assert_eq!((r.oif, r.gw), (9, Some("10.0.0.1".parse().unwrap())));
        // Truncated bodies and attributes, odd lengths, a prefix longer than the family.
        for n in 0..12 {
            assert_eq!(parse_route(&[0u8; 12][..n]), None);
        }
        let mut b = rtmsg(&[(libc::RTA_OIF, 3u32.to_ne_bytes().to_vec())]);
        b[1] = 200;
        assert_eq!(parse_route(&b).unwrap().len, 200);
        let mut b = rtmsg(&[(libc::RTA_OIF, 3u32.to_ne_bytes().to_vec())]);
        b.extend_from_slice(&[0xff, 0xff, 1, 0]); // an attribute longer than what is left
        assert_eq!(parse_route(&b).unwrap().oif, 3);
        for cut in 12..b.len() {
            let _ = parse_route(&b[..cut]);
        }
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let mut out = Vec::new();
        // Truncated NLMSG_ERROR (no error code).
        let m = nlmsg(libc::NLMSG_ERROR as u16, 5, &[]);
        assert!(parse_answer(&m, 5, true, &mut out).is_err());
        // An error code of i32::MIN (negating it overflowed).
        let m = nlmsg(libc::NLMSG_ERROR as u16, 5, &i32::MIN.to_ne_bytes());
        assert!(parse_answer(&m, 5, true, &mut out).is_err());
        // Length below the header, or past the datagram.
        let mut m = nlmsg(libc::RTM_NEWROUTE, 5, &[0; 12]);
        m[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(parse_answer(&m, 5, true, &mut out).is_err());
        m[0..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert!(parse_answer(&m, 5, true, &mut out).is_err());
        // Every truncation of a good answer: no panic.
        let mut good = nlmsg(libc::RTM_NEWROUTE, 5, &rtmsg(&[]));
        good.extend(nlmsg(libc::NLMSG_DONE as u16, 5, &[0; 4]));
        for cut in 0..good.len() {
            let _ = parse_answer(&good[..cut], 5, true, &mut Vec::new());
        }
        // Messages of another sequence number are skipped: a stale DONE does not end the dump.
        let mut d = nlmsg(libc::NLMSG_DONE as u16, 4, &[0; 4]);
        d.extend(nlmsg(libc::RTM_NEWROUTE, 5, &rtmsg(&[])));
        let mut out = Vec::new();
        assert!(!parse_answer(&d, 5, true, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        assert!(parse_answer(&good, 5, true, &mut out).unwrap());
    }

    /// Another socket (any process may address ours by port id) sends a forged end of dump
    /// with the sequence number we are about to use: it is ignored, the kernel's answer counts.
    #[test]
    fn answers_from_other_senders_are_ignored() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("needs root (sending to another netlink socket's port id)");
        }
        let nl = Netlink::open().unwrap();
        let mut me: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut l = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: getsockname fills a sockaddr_nl of the stated size.
        let r = unsafe {
            libc::getsockname(
                nl.fd.as_raw_fd(),
                (&mut me as *mut libc::sockaddr_nl).cast(),
                &mut l,
            )
        };
        assert_eq!(r, 0);
        let spoof = Netlink::open().unwrap();
        let forged = nlmsg(libc::NLMSG_DONE as u16, 1, &[0; 4]);
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        to.nl_pid = me.nl_pid;
        // SAFETY: live buffers of the stated sizes.
        let r = unsafe {
            libc::sendto(
                spoof.fd.as_raw_fd(),
                forged.as_ptr().cast(),
                forged.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        assert_eq!(r as usize, forged.len(), "{}", io::Error::last_os_error());
        let links = nl.dump(libc::RTM_GETLINK, &[0u8; 16]).unwrap();
        assert!(!links.is_empty(), "the forged NLMSG_DONE ended the dump");
    }
}
