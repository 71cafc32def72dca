//! SIP over TCP inside the UEs' SAs, for one worker (TS 33.203 §7.1, RFC 3261 §18).
//!
//! Owns: the worker's [`tcp::Host`] (the TCP of the SA sets of the UEs this worker holds), the
//! IP packets it wants sent, and which of our inbound SPIs each set's connections arrive over. The pipeline hands it segments ([`Verdict::Segment`](super::Verdict)) and
//! messages to send on a UE's connection; the worker takes the messages it framed into fresh
//! frames for the SIP stage ([`Streams::take_messages`]) and the IP packets it produced, ESP
//! protected over the set's SAs, to its TX batch ([`Streams::flush`]).
//!
//! A UE's TCP lives on one worker, `dataplane::worker_of` its address, which every worker and
//! the registration thread compute alike: a segment that reached another worker, a response
//! from the core for the UE's connection (our Via branch names the holder,
//! `sip::branch::LANE_STREAM`), a request from the core too large for a datagram (RFC 3261
//! §18.1.1) go to the holder's hand-over queue, the registration thread's answers to its inject
//! queue (`Protection::Segment` / `Protection::Stream`; two queues, so a flood of hand-overs
//! never costs a registration answer its slot). With the NIC hashing a UE's ESP to one
//! receive queue, pinning that queue's worker as the holder (RSS steering) saves the copy.
//!
//! Bounds: the host's (sets, bytes and time per connection; `tcp::host`); a set whose SAs are
//! gone is closed by the sweep ([`SWEEP_EVERY`]). Per packet nothing is allocated once warm (a set's
//! first segment builds its TCP: one allocation per set, not per packet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::io::{Desc, HEADROOM, PacketIo, Side};
use crate::satable::{Entry, ReadGuard, SetPorts};
use crate::tcp::{Conn, Host, HostConfig, PortPairs, Segments, SendError, SetId};
use crate::wire;

/// How often a step of the sweep runs: 32 sets checked against the SA table (a
/// set whose SAs went is closed). Steps, not one pass over every set: a worker holding 65,536
/// sets would stall its batch for milliseconds; a step costs at most 64 lookups, and a set's
/// TCP goes within (sets / 32) ms of its SAs (2 s for 65,536 sets).
pub const SWEEP_EVERY: Duration = Duration::from_millis(1);

/// Sets checked per step of the sweep.
const SWEEP_STEP: usize = 32;

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

/// The connection of an SA's set that the SA's own port names: our port-s pairs with the UE's
/// port-c (its connection, SA1 and SA3), our port-c with its port-s (ours, SA2 and SA4).
pub fn conn_of(e: &Entry) -> Conn {
    if e.local_port() == e.port_s() {
        Conn::Accepted
    } else {
        Conn::Opened
    }
}

/// A message framed on a connection, copied into its own frame for the SIP stage.
#[derive(Clone, Copy, Debug)]
pub struct Framed {
    pub desc: Desc,
    /// Our inbound SPI of the SA the connection's segments arrive over (SA1 for the UE's
    /// connection, SA4 for ours).
    pub spi: u32,
    pub set: SetId,
}

/// What the worker keeps of a set beside its TCP.
#[derive(Clone, Copy, Debug)]
struct SetInfo {
    ports: PortPairs,
    /// Our inbound SPI that each connection's segments arrive over, once one has (by
    /// [`Conn`]: the UE's, ours).
    spi: [u32; 2],
}

/// One worker's TCP (module doc).
pub struct Streams {
    host: Host,
    out: Segments,
    sets: HashMap<SetId, SetInfo>,
    /// The sets in the order the sweep visits them, and where it is.
    order: Vec<SetId>,
    cursor: usize,
    next_sweep: Option<Instant>,
    /// The host's `messages_lost` already counted as `stream_lost`.
    lost_counted: u64,
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
            order: Vec::new(),
            cursor: 0,
            next_sweep: None,
            lost_counted: 0,
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

    /// The set of `e` (any SA of it), opened with our address `ours` if this is its first use.
    /// A set of the same name whose UE side differs (its address or ports) is one whose SAs
    /// went before the sweep saw it (our ports handed out again to the same registration, the
    /// UE's new port-c, TS 33.203 §7.4): it is closed first (its resets have no SA to go over:
    /// not sent).
    fn ensure(&mut self, e: &Entry, ours: IpAddr, now: Instant) -> Result<SetId, DropReason> {
        let id = set_id(e);
        let ue = e.ue_ports();
        let ports = PortPairs {
            local: ours,
            remote: e.ue_addr(),
            local_c: e.port_c(),
            local_s: e.port_s(),
            remote_c: ue.c,
            remote_s: ue.s,
        };
        let theirs = |p: &PortPairs| (p.remote, p.remote_c, p.remote_s);
        // (a stale set of the same name keeps its place in the sweep's order)
        let mut in_order = false;
        if self
            .sets
            .get(&id)
            .is_some_and(|s| theirs(&s.ports) != theirs(&ports))
        {
            self.host.close(id, now, &mut Segments::with_limit(0));
            self.sets.remove(&id);
            in_order = true;
        }
        if !self.sets.contains_key(&id) {
            self.host
                .open(id, ports)
                .map_err(|_| DropReason::TcpRefused)?;
            self.sets.insert(id, SetInfo { ports, spi: [0; 2] });
            if !in_order {
                self.order.push(id);
            }
            self.next_sweep.get_or_insert(now + SWEEP_EVERY);
        }
        Ok(id)
    }

    /// A segment `pkt` (an inner IP packet, its ports checked against the SA's selectors) that
    /// came over the UE's inbound SA `e` to our address `ours`.
    pub fn segment(
        &mut self,
        e: &Entry,
        ours: IpAddr,
        pkt: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let id = self.ensure(e, ours, now)?;
        if let Some(s) = self.sets.get_mut(&id) {
            s.spi[conn_index(conn_of(e))] = e.spi();
        }
        self.host
            .handle_segment(id, now, pkt, &mut self.out)
            .map_err(|_| DropReason::TcpRefused)
    }

    /// Queue `msg` whole, from our address `ours`, on the connection of `e`'s set that `e`'s
    /// port names (`conn_of`): the UE's, for a response to a request that came on it (RFC
    /// 3261 §18.2.2); ours, connecting first if need be, for a request (§18.1.1). A
    /// connection that is gone, refused or full loses it.
    pub fn send(
        &mut self,
        e: &Entry,
        ours: IpAddr,
        msg: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let conn = conn_of(e);
        let id = self.ensure(e, ours, now)?;
        let sent = match self.host.send(id, conn, now, msg, &mut self.out) {
            // RFC 3261 §18.2.2: the UE's connection that the request came on is gone; the
            // response SHOULD go on a connection to the Via's sent-by, its port-s (TS 24.229
            // §5.1.1.2: the protected server port): ours, over SA2, opened when need be
            Err(SendError::NotConnected | SendError::Closed) if conn == Conn::Accepted => {
                self.host.send(id, Conn::Opened, now, msg, &mut self.out)
            }
            r => r,
        };
        match sent {
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
            for _ in 0..SWEEP_STEP.min(self.order.len()) {
                if self.cursor >= self.order.len() {
                    self.cursor = 0;
                }
                let id = self.order[self.cursor];
                // kept while an outbound SA of the set is there (SA3 or SA2), still the set's:
                // its name and the UE's ports (a new set may take the name, not the ports)
                let alive = self.sets.get(&id).is_some_and(|s| {
                    let p = s.ports;
                    let ue = SetPorts {
                        c: p.remote_c,
                        s: p.remote_s,
                    };
                    [(p.remote_c, p.local_s), (p.remote_s, p.local_c)]
                        .iter()
                        .filter_map(|&(theirs, ours)| sas?.outbound(p.remote, theirs, ours))
                        .any(|e| set_id(e) == id && e.ue_ports() == ue)
                });
                if alive {
                    self.cursor += 1;
                } else {
                    // its resets cannot go: the SAs they would go over are gone
                    self.host.close(id, now, &mut Segments::with_limit(0));
                    self.sets.remove(&id);
                    self.order.swap_remove(self.cursor);
                }
            }
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
                let spi = sets.get(&id).map_or(0, |s| s.spi[conn_index(conn)]);
                if spi == 0 {
                    stats.drop(DropReason::StreamLost);
                    return;
                }
                match message_frame(io, Side::Ue, msg) {
                    Ok(desc) => framed.push(Framed { desc, spi, set: id }),
                    Err(why) => stats.drop(why),
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
            // (the set's own record: its TCP may be given back already, quiet after a RST)
            let Some(p) = self.sets.get(&id).map(|s| s.ports) else {
                // (a set closed since: what it sent can no longer go)
                stats.drop(DropReason::NoRoute);
                continue;
            };
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
        // messages taken for our connection that never went (the UE refused or never answered
        // its handshake, or the set closed first)
        let lost = self.host.messages_lost();
        stats.drops[DropReason::StreamLost as usize] += lost - self.lost_counted;
        self.lost_counted = lost;
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

fn conn_index(c: Conn) -> usize {
    match c {
        Conn::Accepted => 0,
        Conn::Opened => 1,
    }
}

/// A fresh frame of `side` holding the SIP message `msg` where a received datagram's payload
/// would lie, with room in front for IP, UDP and ESP headers and behind for ESP's trailer and
/// ICV: the SIP stage rewrites it in place as one that came in a datagram. One that does not
/// fit is [`DropReason::NoRoom`].
pub(crate) fn message_frame<P: PacketIo + ?Sized>(
    io: &mut P,
    side: Side,
    msg: &[u8],
) -> Result<Desc, DropReason> {
    let d = io.alloc(side).ok_or(DropReason::NoRoom)?;
    let frame = io.frame(&d);
    let end = MESSAGE_AT + msg.len();
    let room = frame.len().saturating_sub(ESP_TAIL);
    match frame[..room].get_mut(MESSAGE_AT..end) {
        Some(room) => {
            room.copy_from_slice(msg);
            Ok(Desc {
                frame: d.frame,
                start: MESSAGE_AT as u16,
                end: end as u16,
                side,
            })
        }
        None => {
            io.free(&[d]);
            Err(DropReason::NoRoom)
        }
    }
}
