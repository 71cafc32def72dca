//! Two single-side backends (one per interface, each with its own frame pool) presented as one
//! [`PacketIo`]: what AF_XDP needs, where a socket and its UMEM belong to one interface.
//!
//! Owns: frame ownership across the two pools. A frame's owner is kept in the top bit of
//! [`Desc::frame`]. A packet sent out of the side that owns its frame goes as is; one that
//! crosses to the other side is copied into a frame of that side's pool (one copy of the
//! packet, no allocation) and its original frame is freed. AF_XDP uses it only where the
//! kernel refuses one UMEM for both interfaces ([`XdpPair`](crate::io::xdp::XdpPair), which
//! needs no copy).

use std::io;

use super::{Desc, FRAME_SIZE, IoStats, PacketIo, Side};

const CORE_BIT: u32 = 1 << 31;

#[derive(Debug)]
pub struct DualIo<A: PacketIo, B: PacketIo> {
    ue: A,
    core: B,
    tx_ue: Vec<Desc>,
    tx_core: Vec<Desc>,
    free_ue: Vec<Desc>,
    free_core: Vec<Desc>,
    core_first: bool,
    /// Packets dropped because the other side's pool had no frame for the copy.
    cross_no_frame: u64,
    /// Packets to cross sides whose descriptor lay outside the frame (dropped).
    cross_bad: u64,
}

impl<A: PacketIo, B: PacketIo> DualIo<A, B> {
    /// `ue` must hand out frames with side [`Side::Ue`], `core` with [`Side::Core`].
    pub fn new(ue: A, core: B, batch: usize) -> Self {
        DualIo {
            ue,
            core,
            tx_ue: Vec::with_capacity(2 * batch),
            tx_core: Vec::with_capacity(2 * batch),
            free_ue: Vec::with_capacity(2 * batch),
            free_core: Vec::with_capacity(2 * batch),
            core_first: false,
            cross_no_frame: 0,
            cross_bad: 0,
        }
    }

    pub fn sides(&mut self) -> (&mut A, &mut B) {
        (&mut self.ue, &mut self.core)
    }

    fn untag(d: &Desc) -> (bool, Desc) {
        let core = d.frame & CORE_BIT != 0;
        (
            core,
            Desc {
                frame: d.frame & !CORE_BIT,
                ..*d
            },
        )
    }
}

impl<A: PacketIo, B: PacketIo> PacketIo for DualIo<A, B> {
    fn recv(&mut self, out: &mut [Desc]) -> io::Result<usize> {
        // Alternate which side goes first, so neither starves the other.
        self.core_first = !self.core_first;
        let (n1, n2);
        if self.core_first {
            n1 = self.core.recv(out)?;
            for d in &mut out[..n1] {
                d.frame |= CORE_BIT;
            }
            n2 = self.ue.recv(&mut out[n1..])?;
        } else {
            n1 = self.ue.recv(out)?;
            n2 = self.core.recv(&mut out[n1..])?;
            for d in &mut out[n1..n1 + n2] {
                d.frame |= CORE_BIT;
            }
        }
        Ok(n1 + n2)
    }

    fn frame(&mut self, d: &Desc) -> &mut [u8] {
        let (core, u) = Self::untag(d);
        if core {
            self.core.frame(&u)
        } else {
            self.ue.frame(&u)
        }
    }

    fn alloc(&mut self, side: Side) -> Option<Desc> {
        match side {
            Side::Ue => self.ue.alloc(side),
            Side::Core => self.core.alloc(side).map(|d| Desc {
                frame: d.frame | CORE_BIT,
                ..d
            }),
        }
    }

    fn send(&mut self, pkts: &[Desc]) -> io::Result<()> {
        for d in pkts {
            let (owned_by_core, u) = Self::untag(d);
            match (owned_by_core, d.side) {
                (false, Side::Ue) => self.tx_ue.push(u),
                (true, Side::Core) => self.tx_core.push(u),
                (false, Side::Core) => {
                    let (s, e) = (u.start as usize, u.end as usize);
                    if s > e || e > FRAME_SIZE {
                        // A descriptor outside its frame: never copied, dropped and counted.
                        self.cross_bad += 1;
                        self.free_ue.push(u);
                        continue;
                    }
                    match self.core.alloc(Side::Core) {
                        Some(n) => {
                            let src = &self.ue.frame(&u)[s..e];
                            let dst = self.core.frame(&n);
                            dst[s..e].copy_from_slice(src);
                            self.tx_core.push(Desc {
                                start: u.start,
                                end: u.end,
                                ..n
                            });
                        }
                        None => self.cross_no_frame += 1,
                    }
                    self.free_ue.push(u);
                }
                (true, Side::Ue) => {
                    let (s, e) = (u.start as usize, u.end as usize);
                    if s > e || e > FRAME_SIZE {
                        // A descriptor outside its frame: never copied, dropped and counted.
                        self.cross_bad += 1;
                        self.free_core.push(u);
                        continue;
                    }
                    match self.ue.alloc(Side::Ue) {
                        Some(n) => {
                            let src = &self.core.frame(&u)[s..e];
                            let dst = self.ue.frame(&n);
                            dst[s..e].copy_from_slice(src);
                            self.tx_ue.push(Desc {
                                start: u.start,
                                end: u.end,
                                ..n
                            });
                        }
                        None => self.cross_no_frame += 1,
                    }
                    self.free_core.push(u);
                }
            }
        }
        let r1 = self.ue.send(&self.tx_ue);
        let r2 = self.core.send(&self.tx_core);
        self.ue.free(&self.free_ue);
        self.core.free(&self.free_core);
        self.tx_ue.clear();
        self.tx_core.clear();
        self.free_ue.clear();
        self.free_core.clear();
        r1.and(r2)
    }

    fn free(&mut self, pkts: &[Desc]) {
        for d in pkts {
            let (core, u) = Self::untag(d);
            if core {
                self.free_core.push(u);
            } else {
                self.free_ue.push(u);
            }
        }
        self.ue.free(&self.free_ue);
        self.core.free(&self.free_core);
        self.free_ue.clear();
        self.free_core.clear();
    }

    fn flush(&mut self) -> io::Result<()> {
        let r1 = self.ue.flush();
        let r2 = self.core.flush();
        r1.and(r2)
    }

    fn stats(&self) -> IoStats {
        let (a, b) = (self.ue.stats(), self.core.stats());
        IoStats {
            rx_packets: a.rx_packets + b.rx_packets,
            tx_packets: a.tx_packets + b.tx_packets,
            rx_dropped: a.rx_dropped + b.rx_dropped,
            tx_dropped: a.tx_dropped + b.tx_dropped + self.cross_no_frame + self.cross_bad,
            rx_no_frame: a.rx_no_frame + b.rx_no_frame,
            rx_oversize: a.rx_oversize + b.rx_oversize,
            rx_queue_overflow: a.rx_queue_overflow + b.rx_queue_overflow,
            tx_no_neighbour: a.tx_no_neighbour + b.tx_no_neighbour,
            syscalls: a.syscalls + b.syscalls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemIo;

    #[test]
    fn crossing_sides_copies_and_frees() {
        let mut io = DualIo::new(MemIo::new(8), MemIo::new(8), 8);
        io.sides().0.inject(Side::Ue, b"from-ue");
        io.sides().1.inject(Side::Core, b"from-core");
        let mut d = [Desc {
            frame: 0,
            start: 0,
            end: 0,
            side: Side::Ue,
        }; 4];
        let n = io.recv(&mut d).unwrap();
        assert_eq!(n, 2);
        // send each out of the other side
        let out: Vec<Desc> = d[..n]
            .iter()
            .map(|x| Desc {
                side: if x.side == Side::Ue {
                    Side::Core
                } else {
                    Side::Ue
                },
                ..*x
            })
            .collect();
        io.send(&out).unwrap();
        let (ue, core) = io.sides();
        let got_ue = ue.take_sent();
        let got_core = core.take_sent();
        assert_eq!(got_ue, vec![(Side::Ue, b"from-core".to_vec())]);
        assert_eq!(got_core, vec![(Side::Core, b"from-ue".to_vec())]);
        assert_eq!((ue.free_frames(), core.free_frames()), (8, 8));
    }

    #[test]
    fn a_descriptor_outside_its_frame_is_dropped_not_copied() {
        let mut io = DualIo::new(MemIo::new(8), MemIo::new(8), 8);
        io.sides().0.inject(Side::Ue, b"from-ue");
        let mut d = [Desc {
            frame: 0,
            start: 0,
            end: 0,
            side: Side::Ue,
        }; 4];
        assert_eq!(io.recv(&mut d).unwrap(), 1);
        let bad = [Desc {
            side: Side::Core,
            end: u16::MAX,
            ..d[0]
        }];
        io.send(&bad).unwrap();
        assert_eq!(io.stats().tx_dropped, 1);
        let (ue, core) = io.sides();
        assert!(core.take_sent().is_empty());
        assert_eq!((ue.free_frames(), core.free_frames()), (8, 8));
    }
}
