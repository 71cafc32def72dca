//! The AF_PACKET backend ([`PacketMmapIo`]): a TPACKET_V3 receive ring and a TPACKET_V2 transmit
//! ring per interface, in **copy mode**: frames are copied from the RX ring into the
//! [`FramePool`] (the worker owns pool frames, so ring blocks go back to the kernel at once),
//! and from pool frames into TX ring slots.
//!
//! Owns, per configured interface ("port"): an RX socket (`ETH_P_ALL`, `PACKET_IGNORE_OUTGOING`,
//! a classic BPF filter passing only IPv4 / IPv6 / VLAN-tagged frames, optional
//! `PACKET_FANOUT`) with its mmapped block ring; a TX socket bound with protocol 0 (so it receives
//! nothing) with its mmapped frame ring; and, unless disabled, the placeholder sockets below.
//! Plus the frame pool and a [`NeighReader`].
//!
//! **Receive** (no syscall): the ring's current block is checked in memory; while its status
//! says `TP_STATUS_USER`, its packets are parsed in place; a finished block is handed back
//! (`TP_STATUS_KERNEL`) at once. Partly filled blocks reach user space when the kernel retires
//! them (`retire_tov_ms`, default 1 ms). For each frame: the Ethernet header is stripped (up to
//! two 802.1Q / 802.1ad tags skipped); only IPv4 / IPv6 packets to one of `local` addresses
//! that are ESP, or unfragmented UDP to one of `udp_ports`, are copied to a pool frame at
//! `HEADROOM`, trimmed to the IP length (no Ethernet padding). One bigger than a frame
//! (`FRAME_SIZE - HEADROOM`, e.g. on a jumbo-MTU link) or cut short by the ring is dropped and
//! counted in `rx_oversize`, never copied. Everything else counts in
//! `rx_dropped` and is left to the kernel, which sees every frame anyway (AF_PACKET taps get
//! copies). Frames whose checksum is still partial (`TP_STATUS_CSUMNOTREADY`, e.g. from veth)
//! get their UDP checksum computed, so the worker sees valid packets. IPv4 fragments and IPv6
//! packets with extension headers are not ours (the kernel reassembles them and delivers them to
//! the placeholder sockets, which drop them: SIP over UDP bigger than the MTU is lost here).
//!
//! **Send**: per packet, the neighbour snapshot gives the interface and the MACs; the Ethernet
//! header is written into the next free TX slot with a copy of the packet, whose IPv4 header
//! checksum and UDP checksum are recomputed (the worker need not fill them), and the slot is
//! marked `TP_STATUS_SEND_REQUEST`. `flush` kicks each port that has new slots with one
//! `sendto(fd, NULL, 0, MSG_DONTWAIT)`. No neighbour → dropped, counted in `tx_no_neighbour`,
//! and reported to the refresher ([`NeighReader::miss`]); TX ring full or a route through an
//! interface this backend does not own → `tx_dropped`. `tx_packets` counts packets put on the
//! ring. VLAN tags are not written on send.
//!
//! **The ICMP-unreachable trap.** The kernel stack also receives every frame we take, and with
//! no socket on the UDP port or no handler for protocol 50 it answers "port / protocol
//! unreachable". Two ways out:
//! 1. (implemented, [`Placeholders`]) bind a UDP socket on each `(local address, SIP port)` and
//!    open a raw IP-protocol-50 socket per family, each with a BPF filter that drops everything
//!    and a minimal receive buffer: the kernel finds a receiver (so sends no ICMP), and the
//!    filter discards the copy at once. They are never read. UDP ones use `SO_REUSEPORT` so each
//!    worker's backend can hold its own set.
//! 2. (documented, needs nftables) a netfilter rule in INPUT, which runs after the AF_PACKET tap:
//!    `table inet pcscf { chain input { type filter hook input priority 0; policy accept;
//!    udp dport 5060-5069 drop; meta l4proto esp drop } }`.
//!
//! ARP and neighbour discovery stay with the kernel (AF_PACKET takes copies), so peers can
//! resolve our MAC; our next hops come from [`super::neigh`].
//!
//! **Unsafe.** The rings are `MAP_SHARED` mappings of the sockets, kept for the lifetime of the
//! struct and unmapped in `Drop`. All ring accesses are bounds-checked against the ring
//! geometry the kernel accepted; the status words that hand a block or slot between kernel and
//! user space are accessed as `AtomicU32` (acquire on reading ownership, release on handing it
//! back), which orders the payload accesses around them as the kernel's protocol requires.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::io::{Desc, FRAME_SIZE, HEADROOM, IoStats, PacketIo, Side};

use super::neigh::{NeighReader, ifindex};
use super::pool::FramePool;
use super::socket::{bind, new_socket, setsockopt_int};
use crate::wire::{self, EthernetFrame, EthernetRepr, Ipv4Packet, UdpPacket, ethertype, protocol};

const ETH_HDR: usize = wire::eth::HEADER_LEN;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
const TPACKET_V2: i32 = 1;
const TPACKET_V3: i32 = 2;
/// Data offset in a TPACKET_V2 TX slot: TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
const TX_DATA_OFF: usize = 32;
const TX_SLOT: usize = 4096;
const PACKET_OUTGOING: u8 = 4;

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub ifname: String,
    pub side: Side,
}

/// What [`PacketMmapIo::new`] sets up.
#[derive(Clone, Debug)]
pub struct PacketMmapConfig {
    pub ports: Vec<PortConfig>,
    /// Our addresses: only packets to these are taken.
    pub local: Vec<IpAddr>,
    /// Our SIP ports (UDP to other ports is left to the kernel).
    pub udp_ports: Vec<RangeInclusive<u16>>,
    /// Pool frames (default 4096).
    pub frames: u32,
    /// RX ring: block size (power of two ≥ page size, default 64 KiB) and count (default 64).
    pub block_size: u32,
    pub block_count: u32,
    /// Retire a partly filled RX block after this many ms (default 1).
    pub retire_tov_ms: u32,
    /// TX ring slots of 4 KiB (multiple of 16, default 256).
    pub tx_slots: u32,
    /// Create the ICMP-suppressing [`Placeholders`] (default true).
    pub placeholders: bool,
    /// `PACKET_FANOUT` group id (hash fanout) for several workers on one interface.
    pub fanout: Option<u16>,
}

impl Default for PacketMmapConfig {
    fn default() -> Self {
        PacketMmapConfig {
            ports: Vec::new(),
            local: Vec::new(),
            udp_ports: Vec::new(),
            frames: 4096,
            block_size: 1 << 16,
            block_count: 64,
            retire_tov_ms: 1,
            tx_slots: 256,
            placeholders: true,
            fanout: None,
        }
    }
}

/// A `MAP_SHARED` ring mapping, unmapped on drop.
#[derive(Debug)]
struct Ring {
    base: *mut u8,
    len: usize,
}

impl Ring {
    fn map(fd: RawFd, len: usize) -> io::Result<Self> {
        // SAFETY: maps the ring the kernel just set up on `fd`, of exactly its size.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Ring {
            base: p.cast(),
            len,
        })
    }

    /// The status word at byte `off` (4-aligned, in bounds).
    #[inline]
    fn status(&self, off: usize) -> &AtomicU32 {
        assert!(off + 4 <= self.len && off.is_multiple_of(4));
        // SAFETY: in bounds and aligned (checked); the word is shared with the kernel, which
        // accesses it atomically, so an AtomicU32 view is the right type.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    #[inline]
    fn read_u32(&self, off: usize) -> u32 {
        assert!(off + 4 <= self.len);
        // SAFETY: in bounds; the region is owned by user space (status checked by the caller).
        unsafe { self.base.add(off).cast::<u32>().read_unaligned() }
    }

    #[inline]
    fn read_u16(&self, off: usize) -> u16 {
        assert!(off + 2 <= self.len);
        // SAFETY: as in `read_u32`.
        unsafe { self.base.add(off).cast::<u16>().read_unaligned() }
    }

    /// `len` bytes at `off`; the caller owns that region (per the ring status protocol).
    #[inline]
    fn bytes(&self, off: usize, len: usize) -> &[u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds; owned by user space while the block/slot status says so.
        unsafe { std::slice::from_raw_parts(self.base.add(off), len) }
    }

    #[inline]
    #[allow(clippy::mut_from_ref)]
    fn bytes_mut(&self, off: usize, len: usize) -> &mut [u8] {
        assert!(off.checked_add(len).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds; a TX slot with status AVAILABLE belongs to user space, and this
        // backend (single-threaded, `&mut self` in all callers) writes one slot at a time.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(off), len) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly this mapping; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

#[derive(Debug)]
struct Port {
    side: Side,
    ifindex: u32,
    rx_fd: OwnedFd,
    tx_fd: OwnedFd,
    rx: Ring,
    tx: Ring,
    block_size: usize,
    block_count: usize,
    /// RX cursor: current block, packets left in it (0 = not entered), next packet offset.
    blk: usize,
    left: u32,
    off: usize,
    tx_slots: usize,
    tx_head: usize,
    tx_pending: bool,
}

/// Sockets that make the kernel consider our SIP ports and ESP handled (so it sends no ICMP
/// unreachable for packets the AF_PACKET backend takes) and drop whatever they get.
#[derive(Debug)]
pub struct Placeholders {
    fds: Vec<OwnedFd>,
}

/// Classic BPF: `ret #0` (drop everything).
fn attach_drop_all(fd: RawFd) -> io::Result<()> {
    let prog = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    attach_filter(fd, &prog)
}

fn attach_filter(fd: RawFd, prog: &[libc::sock_filter]) -> io::Result<()> {
    let f = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `f` points at `prog`, which outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&f as *const libc::sock_fprog).cast(),
            size_of::<libc::sock_fprog>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Placeholders {
    /// One UDP socket per `(local, port)` and one raw ESP socket per local address.
    pub fn new(local: &[IpAddr], udp_ports: &[RangeInclusive<u16>]) -> io::Result<Self> {
        let mut fds = Vec::new();
        for &a in local {
            let dom = if a.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            for r in udp_ports {
                for p in r.clone() {
                    let fd = new_socket(dom, libc::SOCK_DGRAM, 0)?;
                    attach_drop_all(fd.as_raw_fd())?;
                    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 0)?;
                    setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
                    if dom == libc::AF_INET6 {
                        setsockopt_int(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
                    }
                    bind(fd.as_raw_fd(), SocketAddr::new(a, p)).map_err(|e| {
                        io::Error::new(e.kind(), format!("placeholder UDP {a}:{p}: {e}"))
                    })?;
                    fds.push(fd);
                }
            }
            let fd = new_socket(dom, libc::SOCK_RAW, libc::IPPROTO_ESP)?;
            attach_drop_all(fd.as_raw_fd())?;
            setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 0)?;
            bind(fd.as_raw_fd(), SocketAddr::new(a, 0))?;
            fds.push(fd);
        }
        Ok(Placeholders { fds })
    }

    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }
}

fn bind_ll(fd: RawFd, proto: u16, ifindex: u32) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: valid sockaddr_ll of the stated size.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_ring<T>(fd: RawFd, opt: libc::c_int, req: &T) -> io::Result<()> {
    // SAFETY: `req` is a live request struct of its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            opt,
            (req as *const T).cast(),
            size_of::<T>() as u32,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Port {
    fn open(pc: &PortConfig, cfg: &PacketMmapConfig) -> io::Result<Self> {
        let idx = ifindex(&pc.ifname)?;
        let page = 4096u32;
        let bs = cfg.block_size.max(page).next_power_of_two();
        let bn = cfg.block_count.max(2);
        // RX: protocol 0 until the ring is set up, so nothing lands before bind.
        let rx_fd = new_socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let rfd = rx_fd.as_raw_fd();
        setsockopt_int(rfd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V3)?;
        let _ = setsockopt_int(rfd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1);
        // ldh [12]; jeq IPv4/IPv6/802.1Q/802.1ad → accept; else drop.
        let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let prog = [
            f(0x28, 0, 0, 12),
            f(0x15, 4, 0, 0x0800),
            f(0x15, 3, 0, 0x86dd),
            f(0x15, 2, 0, 0x8100),
            f(0x15, 1, 0, 0x88a8),
            f(0x06, 0, 0, 0),
            f(0x06, 0, 0, 0x0004_0000),
        ];
        attach_filter(rfd, &prog)?;
        let frame = 2048u32;
        let req = libc::tpacket_req3 {
            tp_block_size: bs,
            tp_block_nr: bn,
            tp_frame_size: frame,
            tp_frame_nr: bs / frame * bn,
            tp_retire_blk_tov: cfg.retire_tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        set_ring(rfd, libc::PACKET_RX_RING, &req)?;
        let rx = Ring::map(rfd, bs as usize * bn as usize)?;
        bind_ll(rfd, ETH_P_ALL, idx)?;
        if let Some(g) = cfg.fanout {
            // a fanout group belongs to one device: one group id per interface (the kernel
            // refuses, EINVAL, a socket of another ifindex joining the group)
            let g = g.wrapping_add(idx as u16);
            let v = g as i32 | ((libc::PACKET_FANOUT_HASH as i32) << 16);
            setsockopt_int(rfd, libc::SOL_PACKET, libc::PACKET_FANOUT, v)?;
        }
        // TX: TPACKET_V2 ring, protocol 0 (receives nothing).
        let tx_fd = new_socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let tfd = tx_fd.as_raw_fd();
        setsockopt_int(tfd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2)?;
        setsockopt_int(tfd, libc::SOL_PACKET, libc::PACKET_LOSS, 1)?;
        let per_block = 16u32;
        let slots = cfg.tx_slots.max(per_block).div_ceil(per_block) * per_block;
        let treq = libc::tpacket_req {
            tp_block_size: TX_SLOT as u32 * per_block,
            tp_block_nr: slots / per_block,
            tp_frame_size: TX_SLOT as u32,
            tp_frame_nr: slots,
        };
        set_ring(tfd, libc::PACKET_TX_RING, &treq)?;
        let tx = Ring::map(tfd, slots as usize * TX_SLOT)?;
        bind_ll(tfd, 0, idx)?;
        Ok(Port {
            side: pc.side,
            ifindex: idx,
            rx_fd,
            tx_fd,
            rx,
            tx,
            block_size: bs as usize,
            block_count: bn as usize,
            blk: 0,
            left: 0,
            off: 0,
            tx_slots: slots as usize,
            tx_head: 0,
            tx_pending: false,
        })
    }
}

/// The AF_PACKET backend. See the module documentation.
#[derive(Debug)]
pub struct PacketMmapIo {
    ports: Vec<Port>,
    local: Vec<IpAddr>,
    udp_ports: Vec<RangeInclusive<u16>>,
    pool: FramePool,
    neigh: NeighReader,
    stats: IoStats,
    _placeholders: Option<Placeholders>,
    rr: usize,
}

// SAFETY: the ring pointers are owned mappings used only through `&mut self` (or `&self` for
// reads of user-owned regions); moving the struct moves their sole user.
unsafe impl Send for PacketMmapIo {}

impl PacketMmapIo {
    /// Open every port's rings (and the placeholders) in the calling thread's namespace.
    pub fn new(cfg: &PacketMmapConfig, neigh: NeighReader) -> io::Result<Self> {
        let placeholders = if cfg.placeholders {
            Some(Placeholders::new(&cfg.local, &cfg.udp_ports)?)
        } else {
            None
        };
        let ports = cfg
            .ports
            .iter()
            .map(|p| Port::open(p, cfg))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(PacketMmapIo {
            ports,
            local: cfg.local.clone(),
            udp_ports: cfg.udp_ports.clone(),
            pool: FramePool::new(cfg.frames)?,
            neigh,
            stats: IoStats::default(),
            _placeholders: placeholders,
            rr: 0,
        })
    }

    /// Frames currently free in the pool.
    pub fn free_frames(&self) -> usize {
        self.pool.available()
    }

    /// Is this L3 packet (inside an Ethernet frame) ours? Returns its L3 length.
    fn ours(&self, l3pkt: &[u8]) -> Option<usize> {
        let l3 = wire::ip::parse(l3pkt).ok()?;
        if !self.local.contains(&l3.dst) || l3.fragment {
            return None;
        }
        match l3.protocol {
            protocol::ESP => Some(l3.end),
            protocol::UDP => {
                let dport = UdpPacket::new_checked(&l3pkt[l3.body()]).ok()?.dst_port();
                self.udp_ports
                    .iter()
                    .any(|r| r.contains(&dport))
                    .then_some(l3.end)
            }
            _ => None,
        }
    }

    fn recv_port(&mut self, pi: usize, out: &mut [Desc]) -> usize {
        let mut n = 0;
        // Bounded: each iteration consumes a packet or a block, or stops.
        let max_iter = out.len() + 2 * self.ports[pi].block_count + 2;
        for _ in 0..max_iter {
            if n == out.len() {
                break;
            }
            let p = &mut self.ports[pi];
            let bbase = p.blk * p.block_size;
            if p.left == 0 {
                // tpacket_block_desc: version u32, offset_to_priv u32, then tpacket_hdr_v1:
                // block_status @8, num_pkts @12, offset_to_first_pkt @16.
                let st = p.rx.status(bbase + 8).load(Ordering::Acquire);
                if st & TP_STATUS_USER == 0 {
                    break;
                }
                let num = p.rx.read_u32(bbase + 12);
                if num == 0 {
                    p.rx.status(bbase + 8)
                        .store(TP_STATUS_KERNEL, Ordering::Release);
                    p.blk = (p.blk + 1) % p.block_count;
                    continue;
                }
                p.left = num;
                p.off = p.rx.read_u32(bbase + 16) as usize;
            }
            // The packet header (48 bytes, then sockaddr_ll up to sll_pkttype) must lie inside
            // the block: if the offsets say otherwise, give the block back and count what was
            // left in it, rather than read past it.
            if p.off.checked_add(48 + 11).is_none_or(|e| e > p.block_size) {
                self.stats.rx_dropped += u64::from(p.left);
                p.left = 0;
                p.rx.status(bbase + 8)
                    .store(TP_STATUS_KERNEL, Ordering::Release);
                p.blk = (p.blk + 1) % p.block_count;
                continue;
            }
            // tpacket3_hdr: next_offset @0, snaplen @12, len @16, status @20, mac u16 @24.
            let h = bbase + p.off;
            let next = p.rx.read_u32(h) as usize;
            let snap = p.rx.read_u32(h + 12) as usize;
            let wire_len = p.rx.read_u32(h + 16) as usize;
            let status = p.rx.read_u32(h + 20);
            let mac = p.rx.read_u16(h + 24) as usize;
            // sockaddr_ll follows the 48-byte aligned header: sll_pkttype at +10.
            let pkttype = p.rx.bytes(h + 48 + 10, 1)[0];
            let side = p.side;
            let frame_ok = mac + snap <= p.block_size - p.off;
            p.left -= 1;
            p.off += next;
            let finished = p.left == 0;
            if frame_ok && pkttype != PACKET_OUTGOING && wire_len > snap {
                // Cut by the ring (a frame larger than a block can hold): too big for us.
                self.stats.rx_oversize += 1;
            } else if frame_ok && pkttype != PACKET_OUTGOING {
                let data = self.ports[pi].rx.bytes(h + mac, snap);
                match l3_offset(data).and_then(|o| self.ours(&data[o..]).map(|l| (o, l))) {
                    // Bigger than a pool frame (a jumbo-MTU link): dropped, never copied.
                    Some((_, len)) if len > FRAME_SIZE - HEADROOM => self.stats.rx_oversize += 1,
                    Some((o, len)) => match self.pool.alloc() {
                        Some(f) => {
                            let dst = &mut self.pool.frame_mut(f)[HEADROOM..HEADROOM + len];
                            dst.copy_from_slice(&data[o..o + len]);
                            if status & TP_STATUS_CSUMNOTREADY != 0 {
                                fill_udp_checksum(dst);
                            }
                            out[n] = Desc {
                                frame: f,
                                start: HEADROOM as u16,
                                end: (HEADROOM + len) as u16,
                                side,
                            };
                            n += 1;
                        }
                        None => self.stats.rx_no_frame += 1,
                    },
                    None => self.stats.rx_dropped += 1,
                }
            } else if !frame_ok {
                self.stats.rx_dropped += 1;
            }
            if finished {
                let p = &mut self.ports[pi];
                p.rx.status(bbase + 8)
                    .store(TP_STATUS_KERNEL, Ordering::Release);
                p.blk = (p.blk + 1) % p.block_count;
            }
        }
        self.stats.rx_packets += n as u64;
        n
    }

    /// Put one packet on a TX ring; the frame is freed by the caller.
    fn queue_tx(&mut self, d: &Desc) {
        let (s, e) = (d.start as usize, d.end as usize);
        let pkt_ok = s <= e && e <= FRAME_SIZE;
        let l3 = if pkt_ok {
            wire::ip::parse(&self.pool.frame(d.frame)[s..e]).ok()
        } else {
            None
        };
        let Some(l3) = l3 else {
            self.stats.tx_dropped += 1;
            return;
        };
        let Some(nb) = self.neigh.lookup(l3.dst) else {
            self.stats.tx_no_neighbour += 1;
            self.neigh.miss(l3.dst);
            return;
        };
        let Some(pi) = self.ports.iter().position(|p| p.ifindex == nb.ifindex) else {
            self.stats.tx_dropped += 1;
            return;
        };
        let total = ETH_HDR + l3.end;
        let p = &mut self.ports[pi];
        if TX_DATA_OFF + total > TX_SLOT {
            self.stats.tx_dropped += 1;
            return;
        }
        let slot = p.tx_head * TX_SLOT;
        let st = p.tx.status(slot).load(Ordering::Acquire);
        if st != TP_STATUS_AVAILABLE && st != TP_STATUS_WRONG_FORMAT {
            self.stats.tx_dropped += 1;
            return;
        }
        let buf = p.tx.bytes_mut(slot + TX_DATA_OFF, total);
        let ethertype = if l3.dst.is_ipv4() {
            ethertype::IPV4
        } else {
            ethertype::IPV6
        };
        let eth = EthernetRepr {
            src: nb.src_mac,
            dst: nb.dst_mac,
            ethertype,
        };
        if eth.emit(buf).is_err() {
            self.stats.tx_dropped += 1;
            return;
        }
        let ip = &mut buf[ETH_HDR..];
        ip.copy_from_slice(&self.pool.frame(d.frame)[s..s + l3.end]);
        if l3.dst.is_ipv4() {
            Ipv4Packet::new_unchecked(&mut ip[..l3.header_len]).fill_checksum();
        }
        fill_udp_checksum(ip);
        // tpacket2_hdr: tp_len @4, tp_snaplen @8.
        let hdr = p.tx.bytes_mut(slot, 16);
        hdr[4..8].copy_from_slice(&(total as u32).to_ne_bytes());
        hdr[8..12].copy_from_slice(&(total as u32).to_ne_bytes());
        p.tx.status(slot)
            .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        p.tx_head = (p.tx_head + 1) % p.tx_slots;
        p.tx_pending = true;
        self.stats.tx_packets += 1;
    }
}

/// Offset of the L3 header in an Ethernet frame (VLAN tags skipped), if IPv4/IPv6.
#[inline]
fn l3_offset(f: &[u8]) -> Option<usize> {
    EthernetFrame::new_checked(f).ok()?.ip_offset()
}

/// Fills the UDP checksum of an unfragmented UDP packet in place (anything else is left alone).
fn fill_udp_checksum(pkt: &mut [u8]) {
    let Ok(l) = wire::ip::parse(pkt) else {
        return;
    };
    if l.fragment || l.protocol != protocol::UDP {
        return;
    }
    if let Ok(mut u) = UdpPacket::new_checked(&mut pkt[l.body()]) {
        u.fill_checksum(l.src, l.dst);
    }
}

impl PacketIo for PacketMmapIo {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        let np = self.ports.len();
        let mut n = 0;
        for k in 0..np {
            if n == out.len() {
                break;
            }
            let pi = (self.rr + k) % np;
            n += self.recv_port(pi, &mut out[n..]);
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
        self.neigh.update();
        for d in pkts {
            self.queue_tx(d);
            self.pool.free(d.frame);
        }
        Ok(())
    }

    fn free(&mut self, pkts: &[Desc]) {
        for d in pkts {
            self.pool.free(d.frame);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut res = Ok(());
        for p in &mut self.ports {
            if !p.tx_pending {
                continue;
            }
            p.tx_pending = false;
            self.stats.syscalls += 1;
            // SAFETY: a kick with no buffer: the kernel sends the slots marked SEND_REQUEST.
            let r = unsafe {
                libc::sendto(
                    p.tx_fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Slots stay queued; the next kick sends them.
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                        p.tx_pending = true
                    }
                    _ => res = Err(e),
                }
            }
        }
        res
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

impl PacketMmapIo {
    /// The RX socket of each port (e.g. to `poll` on when idle instead of spinning).
    pub fn rx_fds(&self) -> Vec<RawFd> {
        self.ports.iter().map(|p| p.rx_fd.as_raw_fd()).collect()
    }
}
