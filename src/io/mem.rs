//! An in-memory [`PacketIo`] for tests and benches: packets are injected into an RX queue and
//! what the worker sends is collected. All storage is allocated up front, so a worker loop over
//! it can be checked for zero allocations.

use std::collections::VecDeque;
use std::io;

use super::{Desc, FRAME_SIZE, HEADROOM, IoStats, PacketIo, Side};

#[derive(Debug)]
pub struct MemIo {
    frames: Vec<u8>,
    free: Vec<u32>,
    rx: VecDeque<Desc>,
    /// Packets the worker sent, in order (frame, range, side); read with [`MemIo::take_sent`].
    sent: Vec<Desc>,
    stats: IoStats,
}

impl MemIo {
    pub fn new(frames: usize) -> MemIo {
        MemIo {
            frames: vec![0; frames * FRAME_SIZE],
            free: (0..frames as u32).rev().collect(),
            rx: VecDeque::with_capacity(frames),
            sent: Vec::with_capacity(frames),
            stats: IoStats::default(),
        }
    }

    /// Queue an L3 packet for the worker to receive. `false` if no frame is free.
    pub fn inject(&mut self, side: Side, pkt: &[u8]) -> bool {
        if pkt.len() > FRAME_SIZE - HEADROOM {
            return false;
        }
        let Some(f) = self.free.pop() else {
            return false;
        };
        let base = f as usize * FRAME_SIZE;
        self.frames[base + HEADROOM..base + HEADROOM + pkt.len()].copy_from_slice(pkt);
        self.rx.push_back(Desc {
            frame: f,
            start: HEADROOM as u16,
            end: (HEADROOM + pkt.len()) as u16,
            side,
        });
        true
    }

    /// What was sent since the last call, as (side, bytes); frees the frames.
    pub fn take_sent(&mut self) -> Vec<(Side, Vec<u8>)> {
        let sent = std::mem::take(&mut self.sent);
        let mut out = Vec::with_capacity(sent.len());
        for d in &sent {
            let base = d.frame as usize * FRAME_SIZE;
            out.push((
                d.side,
                self.frames[base + d.start as usize..base + d.end as usize].to_vec(),
            ));
            self.free.push(d.frame);
        }
        self.sent = sent;
        self.sent.clear();
        out
    }

    /// Drop what was sent without looking (keeps storage; no allocation).
    pub fn discard_sent(&mut self) {
        for d in self.sent.drain(..) {
            self.free.push(d.frame);
        }
    }

    pub fn free_frames(&self) -> usize {
        self.free.len()
    }
}

impl PacketIo for MemIo {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            match self.rx.pop_front() {
                Some(d) => {
                    out[n] = d;
                    n += 1;
                }
                None => break,
            }
        }
        self.stats.rx_packets += n as u64;
        Ok(n)
    }

    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        let base = d.frame as usize * FRAME_SIZE;
        &mut self.frames[base..base + FRAME_SIZE]
    }

    fn alloc(&mut self, side: Side) -> Option<Desc> {
        self.free.pop().map(|frame| Desc {
            frame,
            start: HEADROOM as u16,
            end: HEADROOM as u16,
            side,
        })
    }

    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        for d in pkts {
            if self.sent.len() < self.sent.capacity() {
                self.sent.push(*d);
                self.stats.tx_packets += 1;
            } else {
                self.free.push(d.frame);
                self.stats.tx_dropped += 1;
            }
        }
        Ok(())
    }

    fn free(&mut self, pkts: &[Desc]) {
        for d in pkts {
            self.free.push(d.frame);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
