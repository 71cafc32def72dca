//! The bounded message queues between the workers and the registration thread, both ways:
//! - **punt**: a worker hands the registration thread a SIP message it cannot finish alone
//!   (registration traffic), with where it came from and how (plain or over which SA);
//! - **inject**: the registration thread hands a worker a SIP message to send (a 401 or 200
//!   toward a UE, a REGISTER toward the I-CSCF), with the addresses to use and whether it goes
//!   over the UE's SA; the worker sends it through its own TX path.
//!
//! Owns: a lock-free queue of pre-allocated buffers (crossbeam `ArrayQueue`s: one of free
//! buffers, one of full ones) and an optional mio [`Waker`](mio::Waker) for a sleeping
//! consumer. A producer never waits: no free buffer means drop and count. The buffers are
//! allocated once; a message is copied in (registration traffic is rare next to the data path)
//! and nothing is allocated. Workers wake the registration thread at most once per batch, not
//! per packet, and only when it sleeps ([`Doorbell`]), so the eventfd write is at most a
//! per-batch syscall and none while the consumer is busy.
//!
//! The punt queue has one lane per [`Class`], each with its own buffers: a
//! flood of unprotected REGISTERs, which anyone can send, fills only its own lane and cannot
//! cost the core's 401/200 or a registered UE's protected REGISTER a buffer; the consumer takes
//! the lanes in priority order with a budget each ([`MsgQueue::pop_class`]).

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::doorbell::Doorbell;
use crate::io::Side;

/// Largest packet that can be punted (a SIP message over UDP; larger ones go over TCP).
pub const MSG_MAX: usize = 4096;

/// Whether a message on the UE leg travels inside ESP: how a punted message came in and how an
/// injected one goes out. Not `Path` or `Transport`: those already mean `std::path::Path` and
/// SIP's UDP/TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Plain UDP on `side`.
    Plain,
    /// Punt: inside ESP on the SA with this (our inbound) SPI. Inject: over the outbound SA
    /// of the flow `src` port → `dst` (the SPI is not needed: the flow names the SA).
    Protected { spi: u32 },
    /// On the UE's TCP connection inside the SA set of our inbound `spi` (its SA1: the UE's
    /// port-c → our port-s, TS 33.203 §7.1), which `worker` holds. Punt: the message came on
    /// it. Inject: it goes on it (a response to a request that came on it, RFC 3261 §18.2.2),
    /// through that worker.
    Stream { spi: u32, worker: u16 },
    /// Between workers only: a TCP segment (the inner IP packet, ESP removed and its ports
    /// checked) that came over our inbound SA `spi`, for the worker that holds the UE's TCP.
    Segment { spi: u32 },
    /// On the core side, over TCP: the core TCP thread's connection `conn` (`daemon::core_tcp`).
    /// In (core TCP thread → worker): the message came on it. Out (→ the core TCP thread): it
    /// goes on it while it is open (a response, RFC 3261 §18.2.2), else on a connection to
    /// `dst`, reused or opened; [`NO_CONN`]: on one to `dst` (a request).
    CoreStream { conn: u32 },
}

/// [`Protection::CoreStream`]'s `conn` when no particular connection is meant.
pub const NO_CONN: u32 = 0;

impl Protection {
    /// How a message of the registration thread goes to the core: on a connection to its
    /// next hop (the core TCP thread picks or opens it) when `tcp`, else as a datagram.
    pub fn toward_core(tcp: bool) -> Protection {
        if tcp {
            Protection::CoreStream { conn: NO_CONN }
        } else {
            Protection::Plain
        }
    }

    /// The inbound SPI of the SA set the message came over or goes by, if protected.
    pub fn spi(self) -> Option<u32> {
        match self {
            Protection::Plain | Protection::CoreStream { .. } => None,
            Protection::Protected { spi }
            | Protection::Stream { spi, .. }
            | Protection::Segment { spi } => Some(spi),
        }
    }
}

/// One SIP message between the workers and the registration thread, either way: where it
/// came from or goes to, how, and its bytes. The one shape of punt and inject: a queue buffer
/// is a `Datagram<Slot>`, the registrar takes a `Datagram<&[u8]>` ([`Datagram::borrowed`]) and
/// hands back `Datagram<Vec<u8>>`s, which are pushed as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<P> {
    pub side: Side,
    /// `Protected`: in (punt) or over (inject) an SA of the flow `src` → `dst`.
    pub protection: Protection,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: P,
}

impl<P> Datagram<P> {
    /// The same addressing with another payload (an answer's bytes once they are built).
    pub fn with_payload<Q>(self, payload: Q) -> Datagram<Q> {
        Datagram {
            side: self.side,
            protection: self.protection,
            src: self.src,
            dst: self.dst,
            payload,
        }
    }
}

impl<P: AsRef<[u8]>> Datagram<P> {
    /// The same message borrowing its bytes (an owned one run again as if punted).
    pub fn borrowed(&self) -> Datagram<&[u8]> {
        Datagram {
            side: self.side,
            protection: self.protection,
            src: self.src,
            dst: self.dst,
            payload: self.payload.as_ref(),
        }
    }
}

/// The bytes in front of a dialog event's message: the binding it belongs to, little-endian.
pub const DIALOG_EVENT_PREFIX: usize = 8;

/// A dialog event, as the registration thread reads it from its queue: the binding the
/// dialog belongs to and the whole SIP message as the worker relayed it (`control::dialogs`).
/// The event's `side` says where the message came from.
pub fn split_dialog_event(payload: &[u8]) -> Option<(u64, &[u8])> {
    let (b, msg) = payload.split_first_chunk::<DIALOG_EVENT_PREFIX>()?;
    Some((u64::from_le_bytes(*b), msg))
}

/// The worker that holds the TCP of a UE's SA sets (and takes the registration thread's
/// messages for it), of `workers`: every worker and the registration thread agree on it, so a
/// message for a UE's connection, or a segment that reached another worker, finds its way.
pub fn worker_of(ue: std::net::IpAddr, workers: usize) -> usize {
    let v = match ue {
        std::net::IpAddr::V4(a) => u64::from(u32::from(a)),
        std::net::IpAddr::V6(a) => {
            let o = u128::from(a);
            (o as u64) ^ ((o >> 64) as u64)
        }
    };
    // (a multiplicative mix: neighbouring addresses spread over the workers)
    (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % workers.max(1)
}

/// Priority classes of punted messages, highest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Responses from the core (401, 200 …): they complete work already done.
    Core = 0,
    /// REGISTERs over an SA: from UEs that authenticated.
    Protected = 1,
    /// Plain REGISTERs from the UE side: from anyone.
    Unprotected = 2,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Core, Class::Protected, Class::Unprotected];

    pub fn of(side: Side, protection: Protection) -> Class {
        match (side, protection) {
            (Side::Core, _) => Class::Core,
            (Side::Ue, Protection::Plain) => Class::Unprotected,
            (Side::Ue, _) => Class::Protected,
        }
    }
}

/// A queue buffer: one SIP message (the UDP payload) in a [`Datagram`] whose bytes live in a
/// pre-allocated [`Slot`].
pub type Msg = Datagram<Slot>;

/// The fixed storage of a queued message's bytes.
#[derive(Debug)]
pub struct Slot {
    pub len: usize,
    pub data: [u8; MSG_MAX],
}

impl AsRef<[u8]> for Slot {
    fn as_ref(&self) -> &[u8] {
        &self.data[..self.len.min(MSG_MAX)]
    }
}

impl Msg {
    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.payload.as_ref()
    }
}

/// Free and full buffers of one lane.
#[derive(Debug)]
struct Lane {
    free: ArrayQueue<Box<Msg>>,
    full: ArrayQueue<Box<Msg>>,
}

impl Lane {
    fn new(depth: usize) -> Lane {
        let depth = depth.max(1);
        let free = ArrayQueue::new(depth);
        for _ in 0..depth {
            let b = Box::new(Msg {
                side: Side::Ue,
                protection: Protection::Plain,
                src: SocketAddr::from(([0, 0, 0, 0], 0)),
                dst: SocketAddr::from(([0, 0, 0, 0], 0)),
                payload: Slot {
                    len: 0,
                    data: [0; MSG_MAX],
                },
            });
            let _ = free.push(b);
        }
        Lane {
            free,
            full: ArrayQueue::new(depth),
        }
    }
}

/// One queue (shared through an `Arc`): one lane, or one per [`Class`].
#[derive(Debug)]
pub struct MsgQueue {
    lanes: Vec<Lane>,
    waker: Option<mio::Waker>,
    /// Whether the consumer sleeps on `waker`: a consumer with a waker arms it before each
    /// sleep ([`MsgQueue::arm`]), or [`MsgQueue::wake`] never wakes it.
    bell: Doorbell,
}

/// Why a punt did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    Full,
    TooBig,
}

impl MsgQueue {
    /// `depth` buffers, all allocated now, in one lane. `waker` wakes the consumer's mio poll.
    pub fn new(depth: usize, waker: Option<mio::Waker>) -> Arc<MsgQueue> {
        Arc::new(MsgQueue {
            lanes: vec![Lane::new(depth)],
            waker,
            bell: Doorbell::new(),
        })
    }

    /// `depth` buffers shared out among the three [`Class`] lanes: a quarter each for the core's
    /// responses and protected REGISTERs (bounded by the transactions in progress), the rest
    /// for unprotected REGISTERs.
    pub fn prioritized(depth: usize, waker: Option<mio::Waker>) -> Arc<MsgQueue> {
        let quarter = (depth / 4).max(1);
        Arc::new(MsgQueue {
            lanes: vec![
                Lane::new(quarter),
                Lane::new(quarter),
                Lane::new(depth.saturating_sub(2 * quarter)),
            ],
            waker,
            bell: Doorbell::new(),
        })
    }

    fn lane(&self, side: Side, protection: Protection) -> &Lane {
        let i = Class::of(side, protection) as usize;
        &self.lanes[if self.lanes.len() > i { i } else { 0 }]
    }

    /// Copy `d` into a free buffer and queue it. Never blocks.
    pub fn push(&self, d: Datagram<&[u8]>) -> Result<(), QueueError> {
        self.push_parts(d.with_payload(()), [d.payload, &[]])
    }

    /// Copy the concatenation of `parts` into a free buffer with the addressing of `d`, and
    /// queue it (a dialog event is a fixed prefix and the message's head). Never blocks.
    pub fn push_parts(&self, d: Datagram<()>, parts: [&[u8]; 2]) -> Result<(), QueueError> {
        let [a, z] = parts;
        let len = a.len() + z.len();
        if len > MSG_MAX {
            return Err(QueueError::TooBig);
        }
        let lane = self.lane(d.side, d.protection);
        let mut b = lane.free.pop().ok_or(QueueError::Full)?;
        b.side = d.side;
        b.protection = d.protection;
        b.src = d.src;
        b.dst = d.dst;
        b.payload.len = len;
        b.payload.data[..a.len()].copy_from_slice(a);
        b.payload.data[a.len()..len].copy_from_slice(z);
        // `full` has the same capacity as the number of buffers, so this cannot fail; if it
        // did, the buffer goes back to the free list rather than leak.
        if let Err(b) = lane.full.push(b) {
            let _ = lane.free.push(b);
            return Err(QueueError::Full);
        }
        Ok(())
    }

    /// Producer side, once per batch that queued something: wake the consumer if it sleeps
    /// (or is about to: see [`Doorbell`]).
    pub fn wake(&self) {
        if let Some(w) = &self.waker
            && self.bell.ring()
        {
            let _ = w.wake();
        }
    }

    /// Consumer side, before it sleeps on the waker: from here [`wake`](Self::wake) wakes it.
    /// Then it must look at this queue, and any other whose producers wake it through this one,
    /// and not sleep if one holds a message. [`disarm`](Self::disarm) once awake.
    pub fn arm(&self) {
        self.bell.arm();
    }

    /// Consumer side, awake: producers need not wake it.
    pub fn disarm(&self) {
        self.bell.disarm();
    }

    /// Consumer side: the next punted message, the highest class first.
    pub fn pop(&self) -> Option<Box<Msg>> {
        self.lanes.iter().find_map(|l| l.full.pop())
    }

    /// Consumer side: the next message of `class` (a one-lane queue has only the first class's).
    pub fn pop_class(&self, class: Class) -> Option<Box<Msg>> {
        self.lanes.get(class as usize)?.full.pop()
    }

    /// Consumer side: give a buffer back (to its lane: its side and protection are unchanged). Its
    /// bytes are wiped first: a punted 401 carries CK and IK in hex (TS 24.229 §5.2.2.2: the
    /// P-CSCF keeps them), and they must not stay in a free buffer until it is overwritten.
    pub fn recycle(&self, mut b: Box<Msg>) {
        zeroize::Zeroize::zeroize(&mut b.payload.data[..b.payload.len.min(MSG_MAX)]);
        b.payload.len = 0;
        let _ = self.lane(b.side, b.protection).free.push(b);
    }

    pub fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.full.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.full.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WAKE: mio::Token = mio::Token(7);

    /// Whether the consumer's poll has a wake-up pending (not waiting for one).
    fn woken(poll: &mut mio::Poll) -> bool {
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        events.iter().any(|e| e.token() == WAKE)
    }

    #[test]
    fn producers_wake_the_consumer_only_while_it_sleeps() {
        let mut poll = mio::Poll::new().unwrap();
        let q = MsgQueue::new(4, Some(mio::Waker::new(poll.registry(), WAKE).unwrap()));
        let d = Datagram {
            side: Side::Ue,
            protection: Protection::Plain,
            src: SocketAddr::from(([10, 0, 0, 1], 5060)),
            dst: SocketAddr::from(([10, 0, 0, 2], 5060)),
            payload: &b"x"[..],
        };
        // a busy consumer (not armed) is not woken: it takes the message on its next pass
        q.push(d).unwrap();
        q.wake();
        assert!(!woken(&mut poll));
        // armed, it is: the first ring goes through, the next finds the flag cleared
        q.arm();
        q.push(d).unwrap();
        q.wake();
        assert!(woken(&mut poll));
        q.wake();
        assert!(!woken(&mut poll));
        // awake again
        q.disarm();
        q.wake();
        assert!(!woken(&mut poll));
        assert_eq!(q.len(), 2);
    }
}
