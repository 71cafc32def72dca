//! Packet I/O: one batch-oriented interface ([`PacketIo`]) in front of the backends
//! (AF_XDP, AF_PACKET with TPACKET_V3, and plain sockets).
//!
//! Owns: the frame geometry and the descriptor a worker passes around. Every backend hands the
//! worker **layer-3 packets** (an IPv4 or IPv6 header first) inside fixed-size frames with
//! [`HEADROOM`] bytes free before the packet and the rest of the frame free after it, so ESP
//! and SIP can grow the packet in place. Link-layer headers are the backend's business: AF_XDP and
//! AF_PACKET strip the Ethernet header on receive and write it (from the neighbour table, never
//! looked up per packet) on send; the socket backend writes a synthetic IP/UDP header on receive
//! and strips it on send.
//!
//! Rules for implementations: `recv`, `send` and `flush` work on batches and never block; no
//! heap allocation, lock or syscall per packet (a syscall per batch is fine).

use std::io;

mod afpacket;
mod dual;
mod mem;
mod neigh;
mod pool;
mod socket;
// AF_XDP (socket, rings, the XDP program, its assembler, bpf(2) and netlink): a namespace of
// its own, tested piece by piece.
pub mod xdp;

pub use afpacket::{PacketMmapConfig, PacketMmapIo, Placeholders, PortConfig};
pub use dual::DualIo;
pub use mem::MemIo;
pub use neigh::{
    NeighEntry, NeighReader, NeighShared, NeighTable, ifindex, kernel_route_get, trigger_resolution,
};
pub use pool::FramePool;
pub use socket::{EspBind, SocketConfig, SocketIo, UdpBind};

/// Size of every frame (the AF_XDP UMEM chunk size).
pub const FRAME_SIZE: usize = 4096;

/// Free bytes before the L3 packet when a backend hands it over: room for an Ethernet header
/// on send, the ESP header and IV, and SIP header insertions.
pub const HEADROOM: usize = 256;

/// Which side of the P-CSCF a packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    /// Toward the UEs (the Gm interface): unprotected SIP on 5060 and ESP.
    Ue = 0,
    /// Toward the IMS core (the Mw interface): plain SIP.
    Core = 1,
}

/// One packet: where it lies in which frame, and which side it came from / goes to.
/// `buf[start..end]` of frame `frame` is the L3 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    pub frame: u32,
    pub start: u16,
    pub end: u16,
    pub side: Side,
}

impl Desc {
    #[inline]
    pub fn len(&self) -> usize {
        // A descriptor with end before start (a bug upstream) is empty, not a panic.
        self.end.saturating_sub(self.start) as usize
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Counters every backend keeps (per queue / per worker; read by the control thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Received frames that were not IPv4/IPv6 for us (dropped before the worker saw them).
    pub rx_dropped: u64,
    /// Packets the TX ring or socket did not take (ring full, EAGAIN): dropped and counted.
    pub tx_dropped: u64,
    /// No free frame to receive into.
    pub rx_no_frame: u64,
    /// Received packets too big for a frame (over `FRAME_SIZE - HEADROOM` bytes, e.g. on a
    /// jumbo-MTU link): dropped before any copy into a frame. The worker reports them as the
    /// `oversize` drop reason.
    pub rx_oversize: u64,
    /// No next-hop MAC known for the destination (AF_XDP / AF_PACKET).
    pub tx_no_neighbour: u64,
    /// Datagrams the kernel dropped because a socket's receive queue was full (socket backend,
    /// `SO_RXQ_OVFL`): we did not read fast enough.
    pub rx_queue_overflow: u64,
    pub syscalls: u64,
}

/// A batch-oriented packet interface, one per worker (each owns its queues).
pub trait PacketIo: Send {
    /// Receive up to `out.len()` packets into `out`; returns how many. Never blocks.
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize>;

    /// The whole frame buffer (`FRAME_SIZE` bytes) of a descriptor, to read and rewrite in place.
    fn frame(&mut self, d: &Desc) -> &mut [u8];

    /// A fresh frame for a packet the worker originates (e.g. a SIP error response), or `None`
    /// when the pool is empty.
    fn alloc(&mut self, side: Side) -> Option<Desc>;

    /// Queue packets for transmission; ownership of their frames passes to the backend, which
    /// frees them after sending or when it drops them (counted in `tx_dropped`).
    fn send(&mut self, pkts: &[Desc]) -> io::Result<()>;

    /// Give frames back without sending them.
    fn free(&mut self, pkts: &[Desc]);

    /// Push queued packets out (one syscall per batch where the backend needs one) and reclaim
    /// completed frames.
    fn flush(&mut self) -> io::Result<()>;

    fn stats(&self) -> IoStats;
}

impl<T: PacketIo + ?Sized> PacketIo for Box<T> {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        (**self).recv(out)
    }
    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        (**self).frame(d)
    }
    fn alloc(&mut self, side: Side) -> Option<Desc> {
        (**self).alloc(side)
    }
    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        (**self).send(pkts)
    }
    fn free(&mut self, pkts: &[Desc]) {
        (**self).free(pkts)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn stats(&self) -> IoStats {
        (**self).stats()
    }
}
