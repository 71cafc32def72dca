//! SIP over TCP inside the UEs' SAs, for one worker (TS 33.203 §7.1, RFC 3261 §18).
//!
//! Owns: the worker's [`tcp::Host`] (every SA set's TCP that this worker has seen segments of),
//! the IP packets it wants sent, and which of our inbound SPIs each set's connection of the UE
//! arrives over. The pipeline hands it segments ([`Verdict::Segment`](super::Verdict)) and
//! messages to send on a UE's connection; the worker takes the messages it framed into fresh
//! frames for the SIP stage ([`Streams::take_messages`]) and the IP packets it produced, ESP
//! protected over the set's SAs, to its TX batch ([`Streams::flush`]).
//!
//! A set's TCP lives on the worker its segments arrive at (ESP from one UE meets one receive
//! queue: the NIC hashes ESP by its addresses). Responses from the core come back on any
//! worker; our Via branch names the holder (`sip::branch::LANE_STREAM`), and another worker
//! hands such a response over through the holder's inject queue, as the registration thread
//! does with its answers (`Protection::Stream`).
//!
//! Bounds: the host's (sets, bytes and time per connection; `tcp::host`); a set whose SAs are
//! gone is closed within [`SWEEP_EVERY`]. Per packet nothing is allocated once warm (a set's
//! first segment builds its TCP: one allocation per set, not per packet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::io::{Desc, HEADROOM, PacketIo, Side};
use crate::satable::{Entry, ReadGuard};
use crate::tcp::{Conn, Host, HostConfig, HostError, PortPairs, Segments, SendError, SetId};
use crate::wire;

/// How often the sets are checked against the SA table (a set whose SAs went is closed).
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The most IP packets the worker's TCP produces between two flushes (more are dropped and
/// counted by the endpoints; TCP sends them again).
const SEGMENTS_PER_PASS: usize = 1024;

/// Where a framed message is copied in its fresh frame: room in front for the headers the SIP
/// stage writes around it (IPv6, UDP, ESP), as for a message we originate.
const MESSAGE_AT: usize = HEADROOM + wire::ip::IPV6_HEADER_LEN + wire::udp::HEADER_LEN;

/// ESP's trailer room a frame keeps behind what it carries (padding, pad length, next header,
/// ICV; `pipeline::LOWER_LAYERS`).
const ESP_TAIL: usize = 15 + 2 + 16;

/// The name of an SA set for the worker's TCP: its registration and our two ports (the UE's
/// address is checked on every segment by the set's endpoint, `tcp::PortPairs::remote`). A
/// re-registration's new set keeps our port-s with a new port-c (TS 33.203 §7.4): a new name.
pub fn set_id(e: &Entry) -> SetId {
    (e.binding() << 32) | (u64::from(e.port_c()) << 16) | u64::from(e.port_s())
}

/// A message framed on a UE's connection, copied into its own frame for the SIP stage.
#[derive(Clone, Copy, Debug)]
pub struct Framed {
    pub desc: Desc,
    /// Our inbound SPI of the SA the connection's segments arrive over (the set's SA1).
    pub spi: u32,
    pub set: SetId,
}

/// One worker's TCP (module doc).
pub struct Streams {
    host: Host,
    out: Segments,
    /// Per set: our inbound SPI of its SA1, the UE's port-c → our port-s (where the UE's
    /// connection comes from), and our UE-side address.
    sets: HashMap<SetId, (u32, IpAddr)>,
    next_sweep: Option<Instant>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("host", &self.host)
            .field("sets", &self.sets.len())
            .finish_non_exhaustive()
    }
}

impl Streams {
    pub fn new(cfg: HostConfig) -> Streams {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS random source");
        Streams {
            host: Host::new(cfg, u64::from_ne_bytes(seed)),
            out: Segments::with_limit(SEGMENTS_PER_PASS),
            sets: HashMap::new(),
            next_sweep: None,
        }
    }

    /// The worker's TCP (counters, sets).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Whether nothing is open (the worker need not read the clock for it).
    pub fn is_idle(&self) -> bool {
        self.sets.is_empty()
    }

    /// Whether a timer or the sweep is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.host.poll_timeout().is_some_and(|t| t <= now)
            || self.next_sweep.is_some_and(|t| t <= now)
    }

    /// A segment `pkt` (an inner IP packet, its ports checked against the SA's selectors) that
    /// came over the UE's SA entry `e` to our address `ours`.
    pub fn segment(
        &mut self,
        e: &Entry,
        ours: IpAddr,
        pkt: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let id = set_id(e);
        if !self.sets.contains_key(&id) {
            let ue = e.ue_ports();
            let ports = PortPairs {
                local: ours,
                remote: e.ue_addr(),
                local_c: e.port_c(),
                local_s: e.port_s(),
                remote_c: ue.c,
                remote_s: ue.s,
            };
            self.host
                .open(id, ports)
                .map_err(|_| DropReason::TcpRefused)?;
            self.sets.insert(id, (0, ours));
            self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        }
        if let Some(s) = self.sets.get_mut(&id)
            && e.local_port() == e.port_s()
        {
            s.0 = e.spi();
        }
        match self.host.handle_segment(id, now, pkt, &mut self.out) {
            Ok(()) => Ok(()),
            Err(HostError::UnknownSet | HostError::Full | HostError::Segment(_)) => {
                Err(DropReason::TcpRefused)
            }
        }
    }

    /// Queue `msg` whole on the UE's own connection (its port-c → our port-s) of the set of
    /// the inbound SA `e` (RFC 3261 §18.2.2: a response goes back on the connection its request
    /// came on). A connection that is gone or full loses it.
    pub fn send(&mut self, e: &Entry, msg: &[u8], now: Instant) -> Result<(), DropReason> {
        let id = set_id(e);
        if !self.sets.contains_key(&id) {
            return Err(DropReason::StreamLost);
        }
        match self.host.send(id, Conn::Accepted, now, msg, &mut self.out) {
            Ok(()) => Ok(()),
            Err(SendError::TooLarge) => Err(DropReason::NoRoom),
            Err(_) => Err(DropReason::StreamLost),
        }
    }

    /// Run what is due: the host's timers, and the sweep that closes sets whose SAs went.
    pub fn run_timers(&mut self, now: Instant, sas: Option<&ReadGuard<'_>>) {
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now, &mut self.out);
        }
        if self.next_sweep.is_some_and(|t| t <= now) {
            let (host, out) = (&mut self.host, &mut self.out);
            self.sets.retain(|&id, &mut (spi, _)| {
                // kept while its SA1 is the set's (a set the UE never opened its connection on
                // keeps 0 and goes)
                let alive = sas
                    .and_then(|g| g.inbound(spi))
                    .is_some_and(|e| set_id(e) == id);
                if !alive {
                    host.close(id, now, out);
                }
                alive
            });
            self.next_sweep = (!self.sets.is_empty()).then(|| now + SWEEP_EVERY);
        }
    }

    /// Copy every message the connections now hold whole into a fresh frame each, for the SIP
    /// stage, into `framed`. A message with no frame or too large for one is lost, counted in
    /// `stats` (the UE's transaction fails; TCP has taken its bytes).
    pub fn take_messages<P: PacketIo + ?Sized>(
        &mut self,
        io: &mut P,
        now: Instant,
        framed: &mut Vec<Framed>,
        stats: &mut WorkerStats,
    ) {
        let sets = &self.sets;
        self.host
            .for_each_message(now, &mut self.out, |id, conn, msg| {
                // only the UE's own connection carries its requests (ours is not opened yet)
                let Some(&(spi, _)) = sets.get(&id).filter(|_| conn == Conn::Accepted) else {
                    stats.drop(DropReason::StreamLost);
                    return;
                };
                let Some(d) = io.alloc(Side::Ue) else {
                    stats.drop(DropReason::NoRoom);
                    return;
                };
                let frame = io.frame(&d);
                let end = MESSAGE_AT + msg.len();
                let room = frame.len().saturating_sub(ESP_TAIL);
                match frame[..room].get_mut(MESSAGE_AT..end) {
                    Some(room) => {
                        room.copy_from_slice(msg);
                        framed.push(Framed {
                            desc: Desc {
                                frame: d.frame,
                                start: MESSAGE_AT as u16,
                                end: end as u16,
                                side: Side::Ue,
                            },
                            spi,
                            set: id,
                        });
                    }
                    _ => {
                        io.free(&[d]);
                        stats.drop(DropReason::NoRoom);
                    }
                }
            });
    }

    /// Every IP packet the TCP produced, ESP-protected over the set's SA for its connection
    /// (the UE's: our port-s → its port-c, SA3; ours: our port-c → its port-s, SA2) in a fresh
    /// frame, onto `tx`. One whose SA or frame is missing is dropped (TCP sends it again).
    pub fn flush<P: PacketIo + ?Sized>(
        &mut self,
        io: &mut P,
        sas: Option<&ReadGuard<'_>>,
        tx: &mut Vec<Desc>,
        stats: &mut WorkerStats,
    ) {
        for (pkt, id, conn) in self.out.iter() {
            let Some(ep) = self.host.endpoint(id) else {
                stats.drop(DropReason::StreamLost);
                continue;
            };
            let p = ep.ports();
            let (ours, theirs) = match conn {
                Conn::Accepted => (p.local_s, p.remote_c),
                Conn::Opened => (p.local_c, p.remote_s),
            };
            let Some(e) = sas.and_then(|g| g.outbound(p.remote, theirs, ours)) else {
                stats.drop(DropReason::NoRoute);
                continue;
            };
            match protect(io, pkt, e) {
                Ok(d) => {
                    stats.esp_out += 1;
                    tx.push(d);
                }
                Err(why) => stats.drop(why),
            }
        }
        self.out.clear();
    }
}

/// The IP packet `pkt` into a fresh frame, ESP-protected over `e`'s SA (transport mode).
fn protect<P: PacketIo + ?Sized>(io: &mut P, pkt: &[u8], e: &Entry) -> Result<Desc, DropReason> {
    let d = io.alloc(Side::Ue).ok_or(DropReason::NoRoom)?;
    let frame = io.frame(&d);
    let end = HEADROOM + pkt.len();
    let r = match frame.get_mut(HEADROOM..end) {
        Some(room) => {
            room.copy_from_slice(pkt);
            let mut f = crate::esp::Frame::new(frame, HEADROOM, end);
            e.sa()
                .outbound(&mut f)
                .map(|_| f.start..f.end)
                .map_err(DropReason::from)
        }
        None => Err(DropReason::NoRoom),
    };
    match r {
        Ok(r) => Ok(Desc {
            frame: d.frame,
            start: r.start as u16,
            end: r.end as u16,
            side: Side::Ue,
        }),
        Err(why) => {
            io.free(&[d]);
            Err(why)
        }
    }
}
