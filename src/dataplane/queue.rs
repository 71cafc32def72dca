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
//! and nothing is allocated. Workers wake the registration thread once per batch, not per
//! packet, so the eventfd write is a per-batch syscall.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::io::Side;

/// Largest packet that can be punted (a SIP message over UDP; larger ones go over TCP).
pub const MSG_MAX: usize = 4096;

/// How a message arrived (punt) or is to be sent (inject).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Plain UDP on `side`.
    Plain,
    /// Punt: inside ESP on the SA with this (our inbound) SPI. Inject: over the outbound SA
    /// of the flow `src` port → `dst` (the SPI is not needed: the flow names the SA).
    Protected { spi: u32 },
}

/// One SIP message (the UDP payload) with its addresses.
#[derive(Debug)]
pub struct Msg {
    pub side: Side,
    pub arrival: Arrival,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub worker: u16,
    pub len: usize,
    pub data: [u8; MSG_MAX],
}

impl Msg {
    pub fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// One queue (shared through an `Arc`).
#[derive(Debug)]
pub struct MsgQueue {
    free: ArrayQueue<Box<Msg>>,
    full: ArrayQueue<Box<Msg>>,
    waker: Option<mio::Waker>,
}

/// Why a punt did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    Full,
    TooBig,
}

impl MsgQueue {
    /// `depth` buffers, all allocated now. `waker` wakes the consumer's mio poll.
    pub fn new(depth: usize, waker: Option<mio::Waker>) -> Arc<MsgQueue> {
        let depth = depth.max(1);
        let free = ArrayQueue::new(depth);
        for _ in 0..depth {
            let b = Box::new(Msg {
                side: Side::Ue,
                arrival: Arrival::Plain,
                src: SocketAddr::from(([0, 0, 0, 0], 0)),
                dst: SocketAddr::from(([0, 0, 0, 0], 0)),
                worker: 0,
                len: 0,
                data: [0; MSG_MAX],
            });
            let _ = free.push(b);
        }
        Arc::new(MsgQueue {
            free,
            full: ArrayQueue::new(depth),
            waker,
        })
    }

    /// Worker side: copy `payload` into a free buffer and queue it. Never blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &self,
        side: Side,
        arrival: Arrival,
        src: SocketAddr,
        dst: SocketAddr,
        worker: u16,
        payload: &[u8],
    ) -> Result<(), QueueError> {
        if payload.len() > MSG_MAX {
            return Err(QueueError::TooBig);
        }
        let mut b = self.free.pop().ok_or(QueueError::Full)?;
        b.side = side;
        b.arrival = arrival;
        b.src = src;
        b.dst = dst;
        b.worker = worker;
        b.len = payload.len();
        b.data[..payload.len()].copy_from_slice(payload);
        // `full` has the same capacity as the number of buffers, so this cannot fail; if it
        // did, the buffer goes back to the free list rather than leak.
        if let Err(b) = self.full.push(b) {
            let _ = self.free.push(b);
            return Err(QueueError::Full);
        }
        Ok(())
    }

    /// Worker side, once per batch that punted something.
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            let _ = w.wake();
        }
    }

    /// Consumer side: the next punted message.
    pub fn pop(&self) -> Option<Box<Msg>> {
        self.full.pop()
    }

    /// Consumer side: give a buffer back. Its bytes are wiped first: a punted 401 carries CK
    /// and IK in hex (TS 24.229 §5.2.2.2: the P-CSCF keeps them), and they must not stay in a
    /// free buffer until it is overwritten.
    pub fn recycle(&self, mut b: Box<Msg>) {
        zeroize::Zeroize::zeroize(&mut b.data[..b.len.min(MSG_MAX)]);
        b.len = 0;
        let _ = self.free.push(b);
    }

    pub fn len(&self) -> usize {
        self.full.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }
}
