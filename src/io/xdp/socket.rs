//! AF_XDP sockets as [`PacketIo`]s: [`XdpIo`], one socket on one queue of one interface with
//! its own UMEM; [`XdpPair`], the UE side's and the core side's sockets of one worker over one
//! UMEM (`XDP_SHARED_UMEM`), so a packet crosses sides in the frame it arrived in.
//!
//! Owns: the UMEM (an anonymous mapping of `frames` chunks of [`FRAME_SIZE`] bytes) with the
//! frame free list and the per-frame ownership state (`Pool`), each socket's four rings
//! (`Port`; a pair's two fill rings are filled from, and both completion rings return to, the
//! one pool), the Ethernet header on receive (stripped by offset, no copy) and on send
//! (written in front of the L3 packet).
//!
//! Frame life cycle: `Free` (in the free list) → `Filled` (in a fill ring or on RX) or `Sending`
//! (in a TX ring until its completion) → `User` (handed out by `recv` or `alloc`, until `send` or
//! `free`). A descriptor the kernel returns is taken only in the state that ring gave it away
//! in (RX: `Filled`, completion: `Sending`), so a misbehaving kernel cannot make two owners of
//! one frame, even across a pair's two sockets. Only `User` frames can be read or written
//! through [`PacketIo::frame`]; that check is what keeps a wrong descriptor from racing with the
//! kernel's writes.
//!
//! Frame geometry: the UMEM is registered with no extra headroom, so the kernel puts a received
//! frame's Ethernet header at `XDP_PACKET_HEADROOM` (256) in the chunk and the L3 packet at
//! 270: at least [`HEADROOM`] bytes are free before it, as the trait asks. On send the packet
//! may start anywhere from offset 14; the Ethernet header goes into the 14 bytes before it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use super::netlink;
use super::ring::Ring;
use super::{Desc, FRAME_SIZE, HEADROOM, IoStats, PacketIo, Side};
use crate::io::{NeighReader, ifindex};
use crate::wire::{self, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv6Packet, ethertype};

const ETH_HLEN: usize = wire::eth::HEADER_LEN;

/// How to bind: the zero-copy question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// Try `XDP_ZEROCOPY`; if the driver refuses, use copy mode.
    Auto,
    /// `XDP_COPY` only (the only mode veth offers).
    Copy,
    /// `XDP_ZEROCOPY` only; fail if the driver can't.
    ZeroCopy,
}

/// Configuration of one socket.
#[derive(Debug, Clone)]
pub struct XskConfig {
    pub ifname: String,
    pub queue_id: u32,
    /// The side every received packet is tagged with.
    pub side: Side,
    /// UMEM chunks (power of two not required); memory is `frames * FRAME_SIZE`, pinned by the
    /// kernel (an [`XdpPair`]'s UMEM holds both sides' frames).
    pub frames: u32,
    /// Entries in each of the four rings (power of two).
    pub ring_size: u32,
    /// Frames kept with the kernel for receiving (fill ring + RX in flight); the rest serve
    /// `alloc`. Clamped to `ring_size` and `frames / 2`.
    pub fill_frames: u32,
    pub bind: BindMode,
    /// `XDP_USE_NEED_WAKEUP`: kick the kernel with a syscall only when a ring flag asks.
    pub need_wakeup: bool,
}

impl XskConfig {
    /// Defaults: 4096 frames (16 MiB), rings of 2048, Auto bind, need_wakeup on.
    pub fn new(ifname: &str, queue_id: u32, side: Side) -> Self {
        XskConfig {
            ifname: ifname.to_string(),
            queue_id,
            side,
            frames: 4096,
            ring_size: 2048,
            fill_frames: 2048,
            bind: BindMode::Auto,
            need_wakeup: true,
        }
    }
}

/// The kernel's own counters for the socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XskKernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum FrameState {
    Free,
    /// The kernel's, to receive into (a fill ring, RX).
    Filled,
    /// The kernel's, to send (a TX ring, until its completion).
    Sending,
    User,
}

/// The UMEM memory (unmapped on drop, after the socket that registered it is closed).
#[derive(Debug)]
struct Umem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory owned by one Pool (of one XdpIo or XdpPair); see the Send rationale on
// Ring.
unsafe impl Send for Umem {}

impl Umem {
    fn new(frames: u32) -> io::Result<Umem> {
        let len = frames as usize * FRAME_SIZE;
        // SAFETY: a fresh private anonymous mapping; nothing aliases it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mmap UMEM of {len} bytes: {e}"),
            ));
        }
        Ok(Umem {
            ptr: NonNull::new(p as *mut u8).expect("mmap returned non-null"),
            len,
        })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping; no borrow of it outlives the owning XdpIo. The
        // kernel keeps its own pin on the pages for as long as the socket lived.
        unsafe {
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len);
        }
    }
}

/// The UMEM and the ownership of its frames: one per [`XdpIo`], or one shared by the two
/// sockets of an [`XdpPair`].
struct Pool {
    umem: Umem,
    nframes: u32,
    free: Vec<u32>,
    state: Vec<FrameState>,
}

impl Pool {
    fn new(frames: u32) -> io::Result<Pool> {
        Ok(Pool {
            umem: Umem::new(frames)?,
            nframes: frames,
            // Pop order: frame 0 first.
            free: (0..frames).rev().collect(),
            state: vec![FrameState::Free; frames as usize],
        })
    }

    /// A free frame, now the caller's, as a descriptor of an empty packet at [`HEADROOM`].
    fn alloc(&mut self, side: Side) -> Option<Desc> {
        let f = self.free.pop()?;
        self.state[f as usize] = FrameState::User;
        Some(Desc {
            frame: f,
            start: HEADROOM as u16,
            end: HEADROOM as u16,
            side,
        })
    }

    /// Frames the caller gives back unsent.
    fn free_all(&mut self, pkts: &[Desc]) {
        for d in pkts {
            self.give_back(d.frame);
        }
    }

    fn give_back(&mut self, f: u32) {
        if f < self.nframes && self.state[f as usize] == FrameState::User {
            self.state[f as usize] = FrameState::Free;
            self.free.push(f);
        } else {
            debug_assert!(false, "frame {f} given back but not owned by the caller");
        }
    }

    fn owned(&self, f: u32) -> bool {
        f < self.nframes && self.state[f as usize] == FrameState::User
    }

    /// The whole frame `f` as a mutable slice.
    fn frame_slice(&mut self, f: u32) -> &mut [u8] {
        assert!(f < self.nframes, "frame {f} out of range");
        assert_eq!(
            self.state[f as usize],
            FrameState::User,
            "frame {f} is not owned by the caller"
        );
        // SAFETY: frame f lies inside the UMEM mapping (checked above); it is in state User,
        // so the kernel neither reads nor writes it until we hand it over, and `&mut self`
        // makes this the only borrow of it.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.umem.ptr.as_ptr().add(f as usize * FRAME_SIZE),
                FRAME_SIZE,
            )
        }
    }
}

/// One bound AF_XDP socket and its four rings, over a [`Pool`] it may share with another.
struct Port {
    // Field order is drop order: rings unmapped, then the socket closed (the UMEM is the
    // owner's, dropped after every port).
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    /// Frames in the fill ring or on their way to RX.
    in_fill: u32,
    fill_target: u32,
    side: Side,
    queue_id: u32,
    ifindex: u32,
    mac: [u8; 6],
    zerocopy: bool,
    need_wakeup: bool,
    stats: IoStats,
    /// Frames the kernel could not put in a UMEM frame because they were too big, from
    /// `XDP_STATISTICS` (read once per [`KSTATS_EVERY`] `recv` calls, never per packet).
    kernel_oversize: u64,
    recv_calls: u32,
}

/// An AF_XDP socket bound to one queue, with a UMEM of its own, implementing [`PacketIo`].
pub struct XdpIo {
    // Field order is drop order: the socket and its rings before the UMEM.
    port: Port,
    neigh: NeighReader,
    pool: Pool,
}

/// How many `recv` calls between two reads of the kernel's counters (one syscall).
const KSTATS_EVERY: u32 = 1024;

impl std::fmt::Debug for XdpIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpIo")
            .field("ifindex", &self.port.ifindex)
            .field("queue_id", &self.port.queue_id)
            .field("side", &self.port.side)
            .field("zerocopy", &self.port.zerocopy)
            .field("free", &self.pool.free.len())
            .field("stats", &self.port.stats)
            .finish()
    }
}

struct Rings {
    fd: OwnedFd,
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
}

fn setsockopt<T>(fd: RawFd, opt: i32, v: &T, what: &str) -> io::Result<()> {
    // SAFETY: `v` is a live T and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setsockopt {what}: {e}")));
    }
    Ok(())
}

fn getsockopt<T: Copy>(fd: RawFd, opt: i32, v: &mut T, what: &str) -> io::Result<()> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a writable T of `len` bytes; the kernel writes at most `len`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            v as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("getsockopt {what}: {e}")));
    }
    Ok(())
}

/// What a socket binds with: flags of its own, or the UMEM of a bound socket (`shared_with`).
#[derive(Clone, Copy)]
enum Bind {
    Own(u16),
    /// `XDP_SHARED_UMEM` with another device or queue than the UMEM's first socket (Linux
    /// 5.10): this socket has fill and completion rings of its own; copy or zero-copy mode and
    /// need_wakeup are the first socket's (the kernel takes no flags here).
    Shared(RawFd),
}

/// A socket with its rings set up and mapped, not bound yet: the UMEM registered when it is
/// to be its own (`own`), else fill and completion rings of its own for a shared one.
fn prepare_socket(umem: &Umem, cfg: &XskConfig, own: bool) -> io::Result<Rings> {
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("socket(AF_XDP): {e} (kernel without CONFIG_XDP_SOCKETS, or not root?)"),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let raw = fd.as_raw_fd();

    if own {
        // SAFETY: xdp_umem_reg is plain integers; all-zero is a valid value.
        let mut reg: libc::xdp_umem_reg = unsafe { std::mem::zeroed() };
        reg.addr = umem.ptr.as_ptr() as u64;
        reg.len = umem.len as u64;
        reg.chunk_size = FRAME_SIZE as u32;
        reg.headroom = 0;
        setsockopt(raw, libc::XDP_UMEM_REG, &reg, "XDP_UMEM_REG")?;
    }
    let n = cfg.ring_size;
    setsockopt(raw, libc::XDP_UMEM_FILL_RING, &n, "XDP_UMEM_FILL_RING")?;
    setsockopt(
        raw,
        libc::XDP_UMEM_COMPLETION_RING,
        &n,
        "XDP_UMEM_COMPLETION_RING",
    )?;
    setsockopt(raw, libc::XDP_RX_RING, &n, "XDP_RX_RING")?;
    setsockopt(raw, libc::XDP_TX_RING, &n, "XDP_TX_RING")?;

    // SAFETY: plain integers; all-zero is valid.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    getsockopt(raw, libc::XDP_MMAP_OFFSETS, &mut off, "XDP_MMAP_OFFSETS")?;
    let fill = Ring::map(raw, libc::XDP_UMEM_PGOFF_FILL_RING, n, &off.fr)?;
    let comp = Ring::map(raw, libc::XDP_UMEM_PGOFF_COMPLETION_RING, n, &off.cr)?;
    let rx = Ring::map(raw, libc::XDP_PGOFF_RX_RING as u64, n, &off.rx)?;
    let tx = Ring::map(raw, libc::XDP_PGOFF_TX_RING as u64, n, &off.tx)?;
    Ok(Rings {
        fd,
        fill,
        comp,
        rx,
        tx,
    })
}

/// Bind a prepared socket to `cfg`'s queue of `ifindex`.
fn bind_socket(rings: &Rings, cfg: &XskConfig, ifindex: u32, bind: Bind) -> io::Result<()> {
    let raw = rings.fd.as_raw_fd();
    // SAFETY: plain integers; all-zero is valid.
    let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
    sa.sxdp_family = libc::AF_XDP as u16;
    match bind {
        Bind::Own(flags) => sa.sxdp_flags = flags,
        Bind::Shared(first) => {
            sa.sxdp_flags = libc::XDP_SHARED_UMEM;
            sa.sxdp_shared_umem_fd = first as u32;
        }
    }
    sa.sxdp_ifindex = ifindex;
    sa.sxdp_queue_id = cfg.queue_id;
    // SAFETY: `sa` is a live sockaddr_xdp and the length is its size.
    let r = unsafe {
        libc::bind(
            raw,
            &sa as *const libc::sockaddr_xdp as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        let shared = if let Bind::Shared(_) = bind {
            " sharing the UMEM of the other interface's socket (XDP_SHARED_UMEM)"
        } else {
            ""
        };
        return Err(io::Error::new(
            e.kind(),
            format!(
                "bind AF_XDP to {} queue {}{shared}: {e}",
                cfg.ifname, cfg.queue_id
            ),
        ));
    }
    Ok(())
}

/// [`prepare_socket`] then [`bind_socket`].
fn open_socket(umem: &Umem, cfg: &XskConfig, ifindex: u32, bind: Bind) -> io::Result<Rings> {
    let rings = prepare_socket(umem, cfg, matches!(bind, Bind::Own(_)))?;
    bind_socket(&rings, cfg, ifindex, bind)?;
    Ok(rings)
}

fn check_config(cfg: &XskConfig) -> io::Result<()> {
    if !cfg.ring_size.is_power_of_two() || cfg.frames < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "ring_size must be a power of two and frames >= 2",
        ));
    }
    Ok(())
}

impl Port {
    /// `cfg.ifname`'s index and Ethernet address.
    fn link(cfg: &XskConfig) -> io::Result<(u32, [u8; 6])> {
        let ifindex = ifindex(&cfg.ifname)?;
        let mac = netlink::link_xdp(ifindex)?
            .mac
            .ok_or_else(|| io::Error::other(format!("{}: no Ethernet address", cfg.ifname)))?;
        Ok((ifindex, mac))
    }

    /// Open and bind a socket on `cfg.ifname` queue `cfg.queue_id` with `pool`'s UMEM
    /// registered as its own.
    fn open(cfg: &XskConfig, pool: &Pool) -> io::Result<Port> {
        let (ifindex, mac) = Port::link(cfg)?;
        let umem = &pool.umem;
        let wake = if cfg.need_wakeup {
            libc::XDP_USE_NEED_WAKEUP
        } else {
            0
        };
        let own = |flags: u16| open_socket(umem, cfg, ifindex, Bind::Own(flags | wake));
        let rings = match cfg.bind {
            BindMode::Copy => own(libc::XDP_COPY)?,
            BindMode::ZeroCopy => own(libc::XDP_ZEROCOPY)?,
            BindMode::Auto => match own(libc::XDP_ZEROCOPY) {
                Ok(r) => r,
                // The failed socket is closed (dropped) before the copy-mode one registers
                // the same memory.
                Err(_) => own(libc::XDP_COPY)?,
            },
        };
        Port::bound(rings, cfg, ifindex, mac)
    }

    /// Bind `rings` (prepared without a UMEM of their own) to `cfg.ifname` queue
    /// `cfg.queue_id`, sharing the UMEM of the bound socket `first`.
    fn bind_shared(
        rings: Rings,
        cfg: &XskConfig,
        (ifindex, mac): (u32, [u8; 6]),
        first: RawFd,
    ) -> io::Result<Port> {
        bind_socket(&rings, cfg, ifindex, Bind::Shared(first))?;
        Port::bound(rings, cfg, ifindex, mac)
    }

    /// The port of a bound socket.
    fn bound(rings: Rings, cfg: &XskConfig, ifindex: u32, mac: [u8; 6]) -> io::Result<Port> {
        // SAFETY: plain integers; all-zero is valid.
        let mut opts: libc::xdp_options = unsafe { std::mem::zeroed() };
        getsockopt(
            rings.fd.as_raw_fd(),
            libc::XDP_OPTIONS,
            &mut opts,
            "XDP_OPTIONS",
        )?;
        let zerocopy = opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        let fill_target = cfg
            .fill_frames
            .min(cfg.ring_size)
            .min(cfg.frames / 2)
            .max(1);
        Ok(Port {
            fill: rings.fill,
            comp: rings.comp,
            rx: rings.rx,
            tx: rings.tx,
            fd: rings.fd,
            in_fill: 0,
            fill_target,
            side: cfg.side,
            queue_id: cfg.queue_id,
            ifindex,
            mac,
            zerocopy,
            need_wakeup: cfg.need_wakeup,
            stats: IoStats::default(),
            kernel_oversize: 0,
            recv_calls: 0,
        })
    }

    /// The kernel's counters for this socket (one syscall).
    fn kernel_stats(&self) -> io::Result<XskKernelStats> {
        // SAFETY: plain integers; all-zero is valid.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        getsockopt(
            self.fd.as_raw_fd(),
            libc::XDP_STATISTICS,
            &mut s,
            "XDP_STATISTICS",
        )?;
        Ok(XskKernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// The kernel counts in `rx_dropped` both the frames too big for a UMEM frame and those
    /// that found the fill ring empty (which it also counts in `rx_fill_ring_empty_descs`, one
    /// each): the difference is the oversize ones.
    fn note_kernel_drops(&mut self) {
        if let Ok(k) = self.kernel_stats() {
            self.kernel_oversize = k.rx_dropped.saturating_sub(k.rx_fill_ring_empty_descs);
        }
    }

    /// Top the fill ring up to `fill_target` frames from the free list. Counts `rx_no_frame`
    /// once per call that leaves the kernel with no frame at all to receive into (the worker
    /// holds them all); the kernel's own count of dropped frames is in `kernel_stats`.
    fn refill(&mut self, pool: &mut Pool) {
        let want = self.fill_target.saturating_sub(self.in_fill);
        if want == 0 {
            return;
        }
        let have = (pool.free.len() as u32).min(want);
        if have == 0 && self.in_fill == 0 {
            self.stats.rx_no_frame += 1;
        }
        let n = self.fill.prod_reserve(have);
        for i in 0..n {
            let f = pool.free.pop().expect("counted above");
            pool.state[f as usize] = FrameState::Filled;
            self.fill.prod_write(i, u64::from(f) * FRAME_SIZE as u64);
        }
        if n > 0 {
            self.fill.prod_submit(n);
            self.in_fill += n;
        }
    }

    /// Take back frames the kernel finished sending.
    fn reap_completions(&mut self, pool: &mut Pool) {
        let n = self.comp.cons_peek(self.comp.size());
        for i in 0..n {
            let addr = self.comp.cons_read(i);
            let f = (addr / FRAME_SIZE as u64) as u32;
            if f < pool.nframes && pool.state[f as usize] == FrameState::Sending {
                pool.state[f as usize] = FrameState::Free;
                pool.free.push(f);
            }
        }
        if n > 0 {
            self.comp.cons_release(n);
        }
    }

    /// Kick the kernel to transmit (sendto), as often as it asks for it in copy mode.
    fn kick_tx(&mut self, pool: &mut Pool) -> io::Result<()> {
        // Copy mode sends at most a small budget (32) per call and answers EAGAIN when more is
        // left; bounded by the ring size.
        let max_kicks = self.tx.size() / 16 + 2;
        for _ in 0..max_kicks {
            if self.tx.prod_outstanding() == 0 {
                return Ok(());
            }
            if self.need_wakeup && !self.tx.needs_wakeup() {
                return Ok(());
            }
            self.stats.syscalls += 1;
            // SAFETY: sendto with no buffer and no address: the AF_XDP "kick".
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            self.reap_completions(pool);
            if r >= 0 {
                if self.zerocopy {
                    return Ok(());
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => continue,
                Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::ENETDOWN) => return Ok(()),
                _ => return Err(e),
            }
        }
        Ok(())
    }

    fn recv(&mut self, pool: &mut Pool, out: &mut [Desc]) -> usize {
        let n = self.rx.cons_peek(out.len().min(u32::MAX as usize) as u32);
        let mut k = 0;
        for i in 0..n {
            let d = self.rx.cons_read(i);
            let f = (d.addr / FRAME_SIZE as u64) as u32;
            let off = (d.addr % FRAME_SIZE as u64) as usize;
            self.in_fill = self.in_fill.saturating_sub(1);
            if f >= pool.nframes || pool.state[f as usize] != FrameState::Filled {
                // Cannot happen with a well-behaved kernel (a frame we did not give it to
                // receive into); never touch such a frame.
                self.stats.rx_dropped += 1;
                continue;
            }
            pool.state[f as usize] = FrameState::User;
            if off + d.len as usize > FRAME_SIZE {
                // Longer than its frame (the kernel drops such frames itself: see
                // `kernel_oversize`); never read past the frame, give it back.
                self.stats.rx_oversize += 1;
                pool.give_back(f);
                continue;
            }
            let len = d.len as usize;
            let frame = pool.frame_slice(f);
            let pkt = &frame[off..off + len];
            let l3 = match EthernetFrame::new_checked(pkt).map(|f| f.ethertype()) {
                Ok(ethertype::IPV4 | ethertype::IPV6) => l3_len(&pkt[ETH_HLEN..]),
                _ => None,
            };
            match l3 {
                Some(l) => {
                    let start = off + ETH_HLEN;
                    out[k] = Desc {
                        frame: f,
                        start: start as u16,
                        end: (start + l) as u16,
                        side: self.side,
                    };
                    k += 1;
                }
                None => {
                    self.stats.rx_dropped += 1;
                    pool.give_back(f);
                }
            }
        }
        if n > 0 {
            self.rx.cons_release(n);
        }
        self.stats.rx_packets += k as u64;
        self.recv_calls = self.recv_calls.wrapping_add(1);
        if self.recv_calls.is_multiple_of(KSTATS_EVERY) {
            self.note_kernel_drops();
        }
        self.refill(pool);
        if n == 0 && self.need_wakeup && self.fill.needs_wakeup() {
            self.stats.syscalls += 1;
            // SAFETY: recvfrom with no buffer: the AF_XDP RX wakeup; never blocks (DONTWAIT).
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
        k
    }

    /// Put the packets of `pkts` that go out of this port (all of them when `only` is `None`)
    /// on its TX ring, Ethernet header written in front; their frames are the kernel's until
    /// their completion. What cannot go is dropped, counted and its frame freed.
    fn send(&mut self, pool: &mut Pool, neigh: &NeighReader, pkts: &[Desc], only: Option<Side>) {
        let mine = |d: &&Desc| only.is_none_or(|s| d.side == s);
        let want = pkts.iter().filter(mine).count().min(u32::MAX as usize) as u32;
        if want == 0 {
            return;
        }
        let mut slots = self.tx.prod_reserve(want);
        if slots < want {
            self.reap_completions(pool);
            let _ = self.kick_tx(pool);
            slots = self.tx.prod_reserve(want);
        }
        let mac = self.mac;
        let mut k = 0u32;
        for d in pkts.iter().filter(mine) {
            let (start, end) = (d.start as usize, d.end as usize);
            if !pool.owned(d.frame) {
                debug_assert!(false, "send of frame {} not owned by the caller", d.frame);
                self.stats.tx_dropped += 1;
                continue;
            }
            if k == slots || start < ETH_HLEN || end > FRAME_SIZE || end <= start {
                self.stats.tx_dropped += 1;
                pool.give_back(d.frame);
                continue;
            }
            let frame = pool.frame_slice(d.frame);
            let Ok(dst) = wire::ip::parse(&frame[start..end]).map(|l| l.dst) else {
                self.stats.tx_dropped += 1;
                pool.give_back(d.frame);
                continue;
            };
            let Some(dmac) = neigh.lookup(dst).map(|n| n.dst_mac) else {
                self.stats.tx_no_neighbour += 1;
                neigh.miss(dst);
                pool.give_back(d.frame);
                continue;
            };
            let ethertype = if dst.is_ipv4() {
                ethertype::IPV4
            } else {
                ethertype::IPV6
            };
            // (room checked above: start ≥ ETH_HLEN)
            let _ = EthernetRepr {
                src: mac,
                dst: dmac,
                ethertype,
            }
            .emit(&mut frame[start - ETH_HLEN..start]);
            pool.state[d.frame as usize] = FrameState::Sending;
            self.tx.prod_write(
                k,
                libc::xdp_desc {
                    addr: u64::from(d.frame) * FRAME_SIZE as u64 + (start - ETH_HLEN) as u64,
                    len: (end - start + ETH_HLEN) as u32,
                    options: 0,
                },
            );
            k += 1;
        }
        if k > 0 {
            self.tx.prod_submit(k);
            self.stats.tx_packets += u64::from(k);
        }
    }

    fn flush(&mut self, pool: &mut Pool) -> io::Result<()> {
        let r = self.kick_tx(pool);
        self.reap_completions(pool);
        self.refill(pool);
        r
    }

    fn stats(&self) -> IoStats {
        IoStats {
            rx_oversize: self.stats.rx_oversize + self.kernel_oversize,
            ..self.stats
        }
    }
}

impl XdpIo {
    /// Open a socket on `cfg.ifname` queue `cfg.queue_id` (in the calling thread's network
    /// namespace). `neigh` gives next-hop MACs for `send` (a miss is reported to its refresher). Register it with
    /// [`XdpProgram::register`](super::XdpProgram::register) to receive.
    pub fn open(cfg: &XskConfig, neigh: NeighReader) -> io::Result<XdpIo> {
        check_config(cfg)?;
        let pool = Pool::new(cfg.frames)?;
        let port = Port::open(cfg, &pool)?;
        let mut io = XdpIo { port, neigh, pool };
        io.port.refill(&mut io.pool);
        Ok(io)
    }

    pub fn queue_id(&self) -> u32 {
        self.port.queue_id
    }

    pub fn ifindex(&self) -> u32 {
        self.port.ifindex
    }

    /// Our interface's MAC (the source of every frame sent).
    pub fn mac(&self) -> [u8; 6] {
        self.port.mac
    }

    /// Whether the driver gave us zero-copy (`XDP_OPTIONS_ZEROCOPY`).
    pub fn is_zerocopy(&self) -> bool {
        self.port.zerocopy
    }

    pub fn raw_fd(&self) -> RawFd {
        self.port.fd.as_raw_fd()
    }

    /// Frames in the free list (for tests and monitoring).
    pub fn free_frames(&self) -> usize {
        self.pool.free.len()
    }

    /// The kernel's counters for this socket (one syscall).
    pub fn kernel_stats(&self) -> io::Result<XskKernelStats> {
        self.port.kernel_stats()
    }

    /// Frames the kernel dropped as too big for a UMEM frame (a jumbo-MTU link), read from
    /// the kernel's counters now.
    pub fn note_kernel_drops(&mut self) {
        self.port.note_kernel_drops();
    }
}

/// The IP datagram's length from its header at `p` (`None`: not IPv4/IPv6, or malformed, or
/// longer than `p`). Frames may carry Ethernet padding after the packet: the IP length is the
/// truth.
fn l3_len(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 => Some(Ipv4Packet::new_checked(p).ok()?.total_len()),
        6 => Some(Ipv6Packet::new_checked(p).ok()?.total_len()),
        _ => None,
    }
}

impl PacketIo for XdpIo {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        Ok(self.port.recv(&mut self.pool, out))
    }

    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        self.pool.frame_slice(d.frame)
    }

    fn alloc(&mut self, side: Side) -> Option<Desc> {
        if self.pool.free.is_empty() {
            self.port.reap_completions(&mut self.pool);
        }
        self.pool.alloc(side)
    }

    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        // a newly published neighbour table: one atomic load when nothing changed
        self.neigh.update();
        self.port.send(&mut self.pool, &self.neigh, pkts, None);
        Ok(())
    }

    fn free(&mut self, pkts: &[Desc]) {
        self.pool.free_all(pkts);
    }

    fn flush(&mut self) -> io::Result<()> {
        self.port.flush(&mut self.pool)
    }

    fn stats(&self) -> IoStats {
        self.port.stats()
    }
}

/// Why [`XdpPair::open`] could not share one UMEM, and the UE side's socket when it was
/// already bound (a working [`XdpIo`] over a UMEM of both sides' frames).
#[derive(Debug)]
pub struct PairRefused {
    pub error: io::Error,
    pub ue: Option<Box<XdpIo>>,
}

/// The two interfaces' sockets (UE side, core side) over one UMEM (`XDP_SHARED_UMEM`): a
/// packet received on one interface is sent out of the other from the frame it arrived in, no
/// copy (what [`DualIo`](crate::io::DualIo) over two [`XdpIo`]s has to do). One frame pool
/// serves both fill rings; both completion rings return to it.
pub struct XdpPair {
    // Field order is drop order: both sockets and their rings before the UMEM.
    ue: Port,
    core: Port,
    neigh: NeighReader,
    pool: Pool,
    core_first: bool,
}

impl std::fmt::Debug for XdpPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPair")
            .field("ue_ifindex", &self.ue.ifindex)
            .field("core_ifindex", &self.core.ifindex)
            .field("queue_id", &self.ue.queue_id)
            .field("zerocopy", &self.ue.zerocopy)
            .field("free", &self.pool.free.len())
            .finish()
    }
}

impl XdpPair {
    /// Open the UE side's socket with a UMEM of `ue.frames + core.frames` frames, then the
    /// core side's sharing it. `ue.side` must be [`Side::Ue`] and `core.side` [`Side::Core`];
    /// `ue.bind` and `ue.need_wakeup` decide for both (the kernel gives the shared socket the
    /// first one's copy or zero-copy mode). Refused where the kernel cannot share a UMEM
    /// across devices (Linux 5.10), or not in that mode: the caller falls back to two
    /// [`XdpIo`]s, taking the UE side's already bound socket from the refusal when there is
    /// one (a closed socket's queue is freed asynchronously: binding it again at once could
    /// fail with EBUSY).
    pub fn open(
        ue: &XskConfig,
        core: &XskConfig,
        neigh: NeighReader,
    ) -> Result<XdpPair, PairRefused> {
        let refused = |error| PairRefused { error, ue: None };
        check_config(ue).map_err(refused)?;
        check_config(core).map_err(refused)?;
        if ue.side != Side::Ue || core.side != Side::Core {
            return Err(refused(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an XdpPair is a UE side and a core side",
            )));
        }
        let mut core_cfg = core.clone();
        core_cfg.need_wakeup = ue.need_wakeup;
        let pool = Pool::new(ue.frames.saturating_add(core.frames)).map_err(refused)?;
        let core_link = Port::link(&core_cfg).map_err(refused)?;
        // The core socket's own fill and completion rings first: a kernel that cannot share a
        // UMEM across devices refuses them here, before the UE side's socket is bound.
        let core_rings = prepare_socket(&pool.umem, &core_cfg, false).map_err(refused)?;
        let ue_port = Port::open(ue, &pool).map_err(refused)?;
        let first = ue_port.fd.as_raw_fd();
        match Port::bind_shared(core_rings, &core_cfg, core_link, first) {
            Ok(core_port) => {
                let mut io = XdpPair {
                    ue: ue_port,
                    core: core_port,
                    neigh,
                    pool,
                    core_first: false,
                };
                io.ue.refill(&mut io.pool);
                io.core.refill(&mut io.pool);
                Ok(io)
            }
            Err(error) => {
                let mut ue = XdpIo {
                    port: ue_port,
                    neigh,
                    pool,
                };
                ue.port.refill(&mut ue.pool);
                Err(PairRefused {
                    error,
                    ue: Some(Box::new(ue)),
                })
            }
        }
    }

    /// The sockets as (queue id, descriptor) for the XDP programs' maps: UE side, core side.
    pub fn sockets(&self) -> [(u32, RawFd); 2] {
        [
            (self.ue.queue_id, self.ue.fd.as_raw_fd()),
            (self.core.queue_id, self.core.fd.as_raw_fd()),
        ]
    }

    /// Whether the driver gave zero-copy (`XDP_OPTIONS_ZEROCOPY`) to both sockets.
    pub fn is_zerocopy(&self) -> bool {
        self.ue.zerocopy && self.core.zerocopy
    }

    /// Frames in the shared free list (for tests and monitoring).
    pub fn free_frames(&self) -> usize {
        self.pool.free.len()
    }
}

impl PacketIo for XdpPair {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        // Alternate which side goes first, so neither starves the other.
        self.core_first = !self.core_first;
        let (first, second) = if self.core_first {
            (&mut self.core, &mut self.ue)
        } else {
            (&mut self.ue, &mut self.core)
        };
        let n = first.recv(&mut self.pool, out);
        if n == out.len() {
            // full: the other side's ring waits for the next call (no wakeup syscall for it)
            return Ok(n);
        }
        Ok(n + second.recv(&mut self.pool, &mut out[n..]))
    }

    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        self.pool.frame_slice(d.frame)
    }

    fn alloc(&mut self, side: Side) -> Option<Desc> {
        if self.pool.free.is_empty() {
            self.ue.reap_completions(&mut self.pool);
            self.core.reap_completions(&mut self.pool);
        }
        self.pool.alloc(side)
    }

    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        self.neigh.update();
        self.ue
            .send(&mut self.pool, &self.neigh, pkts, Some(Side::Ue));
        self.core
            .send(&mut self.pool, &self.neigh, pkts, Some(Side::Core));
        Ok(())
    }

    fn free(&mut self, pkts: &[Desc]) {
        self.pool.free_all(pkts);
    }

    fn flush(&mut self) -> io::Result<()> {
        let r1 = self.ue.flush(&mut self.pool);
        let r2 = self.core.flush(&mut self.pool);
        r1.and(r2)
    }

    fn stats(&self) -> IoStats {
        let (a, b) = (self.ue.stats(), self.core.stats());
        IoStats {
            rx_packets: a.rx_packets + b.rx_packets,
            tx_packets: a.tx_packets + b.tx_packets,
            rx_dropped: a.rx_dropped + b.rx_dropped,
            tx_dropped: a.tx_dropped + b.tx_dropped,
            rx_no_frame: a.rx_no_frame + b.rx_no_frame,
            rx_oversize: a.rx_oversize + b.rx_oversize,
            rx_queue_overflow: a.rx_queue_overflow + b.rx_queue_overflow,
            tx_no_neighbour: a.tx_no_neighbour + b.tx_no_neighbour,
            syscalls: a.syscalls + b.syscalls,
        }
    }
}
