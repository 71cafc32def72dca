//! Every SA set's TCP, for one owner thread: the [`Endpoint`]s by set, the SIP framing of each
//! connection, and the timers that bound what a peer may hold.
//!
//! Sans-IO, quinn-proto's shape: [`Host::handle_segment`] and [`Host::handle_timeout`] take
//! packets and a `now`; [`Host::for_each_message`] hands out the SIP messages the streams
//! carried; [`Host::send`] takes whole messages; every call writes the IP packets to encrypt
//! and send into a [`Segments`] sink, each tagged with its set and connection;
//! [`Host::poll_timeout`] says when to come back.
//!
//! Bounds, each counted when it bites (a hostile UE holds its own set's resources only):
//! - sets: at most [`HostConfig::max_sets`] (one per SA set in use; [`Host::open`] refuses more);
//! - connections: two per set, by construction ([`Endpoint`]);
//! - buffered bytes: a connection's framer holds at most [`HostConfig::max_message`] bytes, and a
//!   message that cannot fit, lacks Content-Length (RFC 3261 §18.3: it MUST be present on a
//!   stream) or carries two that differ resets the connection;
//! - time: a message must arrive whole within [`HostConfig::message_time`] of its first byte
//!   (a peer sending one byte a second holds the buffer no longer than that), an idle
//!   connection is closed after [`EndpointConfig::idle`], and a handshake or data the peer never
//!   acknowledges ends after [`EndpointConfig::unacked`].
//!
//! Keep-alives: a CRLFCRLF ping is answered with one CRLF (RFC 5626 §3.5.1; §5.4 for an edge
//! proxy such as us) and counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::endpoint::{
    Conn, Endpoint, EndpointConfig, PortPairs, SegmentError, Segments, SendError, check_segment,
};
use crate::sip::{Frame, FrameError, Framer};

/// The owner's name for an SA set (e.g. our inbound SPI of its port-s).
pub type SetId = u64;

/// How long a set's TCP stays quiet before its memory is given back: segments that open
/// nothing (a peer's stray or hostile ACKs, each answered with a RST) do not build and drop
/// its endpoint and buffers one by one.
pub const SLEEP_AFTER: Duration = Duration::from_secs(1);

/// Limits of a [`Host`].
#[derive(Debug, Clone, Copy)]
pub struct HostConfig {
    /// Sizes and timers of each set's connections.
    pub endpoint: EndpointConfig,
    /// The largest SIP message taken from a stream (each connection's framer holds this much).
    pub max_message: usize,
    /// The most sets at once.
    pub max_sets: usize,
    /// How long a message may take to arrive whole once its first byte came.
    pub message_time: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            endpoint: EndpointConfig::default(),
            max_message: 16384,
            max_sets: 65536,
            message_time: Duration::from_secs(10),
        }
    }
}

/// Why [`Host::open`] or [`Host::handle_segment`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// [`HostConfig::max_sets`] sets are open.
    Full,
    /// No set of that name is open.
    UnknownSet,
    /// The segment is not one of the set's (its addresses or ports).
    Segment(SegmentError),
}

/// What a host counted (its sets' endpoint counters are summed in on close).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HostStats {
    pub sets_opened: u64,
    pub sets_closed: u64,
    /// [`Host::open`] refused: too many sets.
    pub sets_refused: u64,
    pub segments_in: u64,
    /// Segments refused before the stack: not this set's addresses or ports.
    pub segments_refused: u64,
    /// Segments for a set that is not open.
    pub segments_unknown_set: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Keep-alive pings answered.
    pub pings: u64,
    /// Connections reset for a framing error, by [`FrameError::index`].
    pub framing_errors: [u64; FrameError::NAMES.len()],
    /// Connections reset: a message did not arrive whole in time (slow sender).
    pub slow_messages: u64,
    /// Messages not sent, by cause (not connected, full, too large, closed).
    pub send_refused: u64,
    /// Sets whose TCP was built (first segment or message), and given back once quiet for
    /// [`SLEEP_AFTER`].
    pub woken: u64,
    pub slept: u64,
    /// Partial messages dropped because their connection ended or was replaced.
    pub partial_dropped: u64,
    /// Messages [`Host::send`] took for our connection that never went: the handshake failed
    /// (the peer refused it, or never answered) or the set closed first.
    pub messages_lost: u64,
}

/// A set whose TCP is in use: its endpoint and the framers of the connections in use.
struct Live {
    ep: Endpoint,
    framers: [Framer; 2],
    /// When each connection's current partial message began.
    partial_since: [Option<Instant>; 2],
    /// The connection generation each framer holds bytes of.
    gens: [u32; 2],
    /// Since when the set's TCP is quiet (given back [`SLEEP_AFTER`] later, if still quiet).
    quiet_since: Option<Instant>,
}

impl Live {
    /// A framer holds the bytes of one connection only: when its connection is gone (and its
    /// last bytes were framed) or another replaced it, a partial message is dropped, never
    /// completed by the next connection's bytes.
    /// With `drained` (every byte the stack held was framed), a connection that is gone takes
    /// its partial message and buffer with it; without, only a replaced one does (its bytes
    /// must not meet the new connection's).
    fn forget_dead_streams(&mut self, stats: &mut HostStats, drained: bool) {
        for (i, conn) in [(0, Conn::Accepted), (1, Conn::Opened)] {
            let g = self.ep.generation(conn);
            let gone = drained && !self.ep.is_open(conn) && !self.ep.has_data(conn);
            let f = &mut self.framers[i];
            let holds_buffer = f.capacity() > Framer::MIN_CAPACITY;
            if g == self.gens[i] && !(gone && (holds_buffer || f.buffered() > 0)) {
                continue;
            }
            if f.buffered() > 0 {
                stats.partial_dropped += 1;
            }
            self.partial_since[i] = None;
            self.gens[i] = g;
            if gone && holds_buffer {
                // its buffer goes with the connection (taken again when bytes come)
                *f = Framer::with_capacity(0);
            } else {
                f.reset();
            }
        }
    }
}

/// One SA set. Its [`Live`] part exists only while a connection is up or being made (and for
/// [`SLEEP_AFTER`] after): a set whose TCP is quiet costs its ports alone.
struct Set {
    ports: PortPairs,
    live: Option<Box<Live>>,
    /// Whether the set is in the ready queue.
    queued: bool,
    /// The deadline it has on the timer heap (entries that differ are stale).
    armed: Option<Instant>,
}

/// Every SA set's TCP (module doc).
pub struct Host {
    cfg: HostConfig,
    sets: HashMap<SetId, Set>,
    /// Sets with bytes to frame.
    ready: VecDeque<SetId>,
    /// (when, set): a set's timers; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, SetId)>>,
    seed: u64,
    stats: HostStats,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("sets", &self.sets.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// splitmix64: each endpoint's initial-sequence seed from the host's.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set's live part, built when its TCP is first used.
fn wake<'s>(
    s: &'s mut Set,
    id: SetId,
    cfg: &HostConfig,
    seed: &mut u64,
    stats: &mut HostStats,
    now: Instant,
) -> &'s mut Live {
    s.live.get_or_insert_with(|| {
        *seed = mix(*seed);
        stats.woken += 1;
        Box::new(Live {
            ep: Endpoint::new(id, s.ports, cfg.endpoint, *seed, now),
            framers: [
                // buffers taken when a connection's first bytes come
                Framer::with_capacity(0),
                Framer::with_capacity(0),
            ],
            partial_since: [None; 2],
            gens: [0; 2],
            quiet_since: None,
        })
    })
}

/// Whether a set's stack holds received bytes not yet framed.
fn has_data(s: &Set) -> bool {
    s.live
        .as_deref()
        .is_some_and(|l| l.ep.has_data(Conn::Accepted) || l.ep.has_data(Conn::Opened))
}

impl Host {
    /// A host with no sets; `seed` (random, from the OS) makes the sets' initial sequence
    /// numbers.
    pub fn new(cfg: HostConfig, seed: u64) -> Host {
        Host {
            cfg,
            sets: HashMap::new(),
            ready: VecDeque::new(),
            // room for what compaction keeps with few sets (more grows with the sets)
            timers: BinaryHeap::with_capacity(32),
            seed,
            stats: HostStats::default(),
        }
    }

    /// What it counted.
    pub fn stats(&self) -> HostStats {
        self.stats
    }

    /// [`HostStats::messages_lost`] alone (cheap: read after every verdict by the worker).
    pub fn messages_lost(&self) -> u64 {
        self.stats.messages_lost
    }

    /// Entries on the timer heap (live deadlines and ones left behind, bounded).
    pub fn timer_entries(&self) -> usize {
        self.timers.len()
    }

    /// How many sets are open.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The endpoint of a set, to look at: `None` while its TCP is quiet (no connection up or
    /// being made: the endpoint is built on the first segment or message).
    pub fn endpoint(&self, id: SetId) -> Option<&Endpoint> {
        self.sets.get(&id)?.live.as_deref().map(|l| &l.ep)
    }

    /// Whether a set's connection is established.
    pub fn is_established(&self, id: SetId, conn: Conn) -> bool {
        self.endpoint(id).is_some_and(|e| e.is_established(conn))
    }

    /// How many sets have their TCP in use (an endpoint and framers in memory).
    pub fn live(&self) -> usize {
        self.sets.values().filter(|s| s.live.is_some()).count()
    }

    /// Open a set's TCP: it listens on its server port from now on. Opening a set that is open
    /// keeps it as it is.
    pub fn open(&mut self, id: SetId, ports: PortPairs) -> Result<(), HostError> {
        if self.sets.contains_key(&id) {
            return Ok(());
        }
        if self.sets.len() >= self.cfg.max_sets {
            self.stats.sets_refused += 1;
            return Err(HostError::Full);
        }
        self.sets.insert(
            id,
            Set {
                ports,
                live: None,
                queued: false,
                armed: None,
            },
        );
        self.stats.sets_opened += 1;
        Ok(())
    }

    /// Close a set (its SAs are going): both connections reset, its buffers dropped.
    pub fn close(&mut self, id: SetId, now: Instant, out: &mut Segments) {
        if let Some(s) = self.sets.remove(&id) {
            if let Some(mut l) = s.live {
                l.ep.close(now, out);
                self.stats.messages_lost += l.ep.take_lost();
            }
            self.stats.sets_closed += 1;
        }
    }

    /// One decrypted inner IP packet that came over one of the set's SAs.
    pub fn handle_segment(
        &mut self,
        id: SetId,
        now: Instant,
        pkt: &[u8],
        out: &mut Segments,
    ) -> Result<(), HostError> {
        let Some(s) = self.sets.get_mut(&id) else {
            self.stats.segments_unknown_set += 1;
            return Err(HostError::UnknownSet);
        };
        // refused before anything is built for it
        if let Err(e) = check_segment(&s.ports, pkt) {
            self.stats.segments_refused += 1;
            return Err(HostError::Segment(e));
        }
        self.stats.segments_in += 1;
        let l = wake(s, id, &self.cfg, &mut self.seed, &mut self.stats, now);
        let _ = l.ep.handle_segment(now, pkt, out);
        if !s.queued && has_data(s) {
            s.queued = true;
            self.ready.push_back(id);
        }
        self.arm(id, now);
        Ok(())
    }

    /// Queue one whole message on a set's connection ([`Endpoint::send`]).
    pub fn send(
        &mut self,
        id: SetId,
        conn: Conn,
        now: Instant,
        msg: &[u8],
        out: &mut Segments,
    ) -> Result<(), SendError> {
        let Some(s) = self.sets.get_mut(&id) else {
            self.stats.send_refused += 1;
            return Err(SendError::Closed);
        };
        let l = wake(s, id, &self.cfg, &mut self.seed, &mut self.stats, now);
        let r = l.ep.send(now, conn, msg, out);
        match r {
            Ok(()) => {
                self.stats.messages_out += 1;
                self.arm(id, now);
                Ok(())
            }
            Err(e) => {
                self.stats.send_refused += 1;
                self.arm(id, now);
                Err(e)
            }
        }
    }

    /// Hand every whole SIP message the streams now hold to `f` (set, connection, bytes), in
    /// order per connection; answer pings; reset connections whose framing broke.
    pub fn for_each_message(
        &mut self,
        now: Instant,
        out: &mut Segments,
        mut f: impl FnMut(SetId, Conn, &[u8]),
    ) {
        while let Some(id) = self.ready.pop_front() {
            let Some(s) = self.sets.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            let Some(s) = s.live.as_deref_mut() else {
                continue;
            };
            // a new connection's bytes never join the last one's partial message
            s.forget_dead_streams(&mut self.stats, false);
            for conn in [Conn::Accepted, Conn::Opened] {
                let i = match conn {
                    Conn::Accepted => 0,
                    Conn::Opened => 1,
                };
                if s.ep.has_data(conn) && s.framers[i].capacity() < self.cfg.max_message {
                    s.framers[i] = Framer::with_capacity(self.cfg.max_message);
                }
                loop {
                    // move what the stack holds into the framer, as much as it takes
                    let framer = &mut s.framers[i];
                    let n = s.ep.recv(conn, |b| {
                        let room = framer.spare();
                        let n = room.len().min(b.len());
                        room[..n].copy_from_slice(&b[..n]);
                        n
                    });
                    framer.commit(n);
                    let mut pong = false;
                    let mut broke = None;
                    loop {
                        match framer.next_frame() {
                            Ok(Some(Frame::Message(m))) => {
                                self.stats.messages_in += 1;
                                f(id, conn, m);
                            }
                            Ok(Some(Frame::Ping)) => pong = true,
                            Ok(None) => break,
                            Err(e) => {
                                broke = Some(e);
                                break;
                            }
                        }
                    }
                    if pong {
                        // RFC 5626 §3.5.1, §5.4: one CRLF answers the ping, at once
                        self.stats.pings += 1;
                        let _ = s.ep.send(now, conn, b"\r\n", out);
                    }
                    if let Some(e) = broke {
                        self.stats.framing_errors[e.index()] += 1;
                        s.ep.shut(now, conn, out);
                        s.framers[i].reset();
                        s.partial_since[i] = None;
                        break;
                    }
                    s.partial_since[i] = match (s.framers[i].in_message(), s.partial_since[i]) {
                        (false, _) => None,
                        (true, None) => Some(now),
                        (true, since) => since,
                    };
                    if n == 0 {
                        break;
                    }
                }
            }
        }
    }

    /// When [`Host::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Run the timers that are due: retransmissions, idle connections, slow messages.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Segments) {
        while let Some(&Reverse((t, id))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let message_time = self.cfg.message_time;
            let Some(s) = self.sets.get_mut(&id) else {
                continue;
            };
            if s.armed != Some(t) {
                continue;
            }
            s.armed = None;
            let Some(l) = s.live.as_deref_mut() else {
                continue;
            };
            for (i, conn) in [(0, Conn::Accepted), (1, Conn::Opened)] {
                if let Some(since) = l.partial_since[i]
                    && now.saturating_duration_since(since) >= message_time
                {
                    self.stats.slow_messages += 1;
                    l.ep.shut(now, conn, out);
                    l.framers[i].reset();
                    l.partial_since[i] = None;
                }
            }
            l.ep.handle_timeout(now, out);
            if !s.queued && has_data(s) {
                s.queued = true;
                self.ready.push_back(id);
            }
            self.arm(id, now);
        }
    }

    /// Put the set's next deadline on the timer heap.
    fn arm(&mut self, id: SetId, now: Instant) {
        let Some(s) = self.sets.get_mut(&id) else {
            return;
        };
        if let Some(l) = s.live.as_deref_mut() {
            self.stats.messages_lost += l.ep.take_lost();
        }
        if let Some(l) = s.live.as_deref_mut()
            && !s.queued
        {
            l.forget_dead_streams(&mut self.stats, true);
        }
        // a set whose TCP has been quiet for SLEEP_AFTER gives its memory back (built again on
        // the next segment)
        if !s.queued
            && let Some(l) = s.live.as_deref_mut()
        {
            let quiet = l.ep.is_quiet() && l.framers.iter().all(|f| f.buffered() == 0);
            l.quiet_since = quiet.then(|| l.quiet_since.unwrap_or(now));
            if l.quiet_since
                .is_some_and(|t| now.saturating_duration_since(t) >= SLEEP_AFTER)
            {
                s.live = None;
                self.stats.slept += 1;
            }
        }
        let Some(l) = s.live.as_deref_mut() else {
            return;
        };
        let slow = l
            .partial_since
            .iter()
            .flatten()
            .map(|t| *t + self.cfg.message_time)
            .min();
        let sleep = l.quiet_since.map(|t| t + SLEEP_AFTER);
        let at = super::earliest(super::earliest(l.ep.poll_at(now), slow), sleep);
        // one live entry per set: a later deadline waits for the earlier entry to fire
        if let Some(at) = at.map(|a| a.max(now))
            && s.armed.is_none_or(|armed| at < armed)
        {
            s.armed = Some(at);
            self.timers.push(Reverse((at, id)));
        }
        // entries a set left behind when its deadline moved earlier wait for their time: keep
        // them a bounded share of the heap (in place, amortised O(1) per push)
        if self.timers.len() > 2 * self.sets.len() + 16 {
            let sets = &self.sets;
            self.timers
                .retain(|Reverse((t, id))| sets.get(id).is_some_and(|s| s.armed == Some(*t)));
        }
    }
}
