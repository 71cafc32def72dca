//! The punt path: workers hand packets they cannot finish alone (registration traffic) to the
//! registration thread.
//!
//! Owns: a bounded, lock-free queue of pre-allocated buffers (crossbeam `ArrayQueue`s: one of
//! free buffers, one of full ones) and the mio [`Waker`](mio::Waker) that wakes the registration
//! thread. A worker never waits: no free buffer or a full queue means drop and count. The
//! buffers are allocated once; a punt copies the packet (registration traffic is rare next to
//! the data path) and allocates nothing. The worker wakes the thread once per batch, not per
//! packet, so the eventfd write is a per-batch syscall.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::io::Side;

/// Largest packet that can be punted (a SIP message over UDP; larger ones go over TCP).
pub const PUNT_MAX: usize = 4096;

/// How a punted message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// Plain UDP on `side`.
    Plain,
    /// Inside ESP on the SA with this (our inbound) SPI.
    Protected { spi: u32 },
}

/// One punted SIP message (the UDP payload) with where it came from.
#[derive(Debug)]
pub struct PuntBuf {
    pub side: Side,
    pub arrival: Arrival,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub worker: u16,
    pub len: usize,
    pub data: [u8; PUNT_MAX],
}

impl PuntBuf {
    pub fn payload(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// The queue between the workers and the registration thread (shared through an `Arc`).
#[derive(Debug)]
pub struct PuntQueue {
    free: ArrayQueue<Box<PuntBuf>>,
    full: ArrayQueue<Box<PuntBuf>>,
    waker: Option<mio::Waker>,
}

/// Why a punt did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PuntError {
    Full,
    TooBig,
}

impl PuntQueue {
    /// `depth` buffers, all allocated now. `waker` wakes the consumer's mio poll.
    pub fn new(depth: usize, waker: Option<mio::Waker>) -> Arc<PuntQueue> {
        let depth = depth.max(1);
        let free = ArrayQueue::new(depth);
        for _ in 0..depth {
            let b = Box::new(PuntBuf {
                side: Side::Ue,
                arrival: Arrival::Plain,
                src: SocketAddr::from(([0, 0, 0, 0], 0)),
                dst: SocketAddr::from(([0, 0, 0, 0], 0)),
                worker: 0,
                len: 0,
                data: [0; PUNT_MAX],
            });
            let _ = free.push(b);
        }
        Arc::new(PuntQueue {
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
    ) -> Result<(), PuntError> {
        if payload.len() > PUNT_MAX {
            return Err(PuntError::TooBig);
        }
        let mut b = self.free.pop().ok_or(PuntError::Full)?;
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
            return Err(PuntError::Full);
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
    pub fn pop(&self) -> Option<Box<PuntBuf>> {
        self.full.pop()
    }

    /// Consumer side: give a buffer back.
    pub fn recycle(&self, b: Box<PuntBuf>) {
        let _ = self.free.push(b);
    }

    pub fn len(&self) -> usize {
        self.full.len()
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_empty()
    }
}
