//! The UE simulator's SIP over TCP inside ESP (TS 33.203 §7, RFC 3261 §18), sans-IO: the
//! project's own user-space TCP ([`crate::tcp::Host`]) from the UE's side, one
//! [`crate::tcp::Endpoint`] per SA set, with the ESP of the set's SAs around its segments.
//!
//! The UE opens one connection per SA set, from its port-c to the P-CSCF's port-s
//! ([`Conn::Opened`] from the UE's side): its segments go over SA1 (ESP next header 6, the inner
//! packet an IP packet with a TCP segment, transport mode), the P-CSCF's segments of that
//! connection come back over SA3 (the P-CSCF's port-s → the UE's port-c, the UE's spi-c). The
//! UE's requests go on it, and their responses come back on it (RFC 3261 §18.2.2). The
//! connection is made on the first request and again on the next one after it ended (a reset,
//! an idle close). The P-CSCF's own connection to the UE's port-s ([`Conn::Accepted`] from the
//! UE's side: its segments come over SA2, which the caller decrypts and hands over with
//! [`UeTcp::segment_in`]; ours go over SA4) carries the P-CSCF's requests too large for a
//! datagram (RFC 3261 §18.1.1), and the UE's answers to them on the same connection (§18.2.2).
//!
//! ESP packets in and out are whole IP packets (the outer header and ESP, as
//! [`Sa::outbound`] makes them and as [`Sa::decapsulate`] takes them); the caller sends and
//! receives them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::esp::{Frame, Sa};
use crate::tcp::{Conn, Host, HostConfig, HostError, PortPairs, Segments, SendError, SetId};

/// IP protocol number of TCP (ESP's next header for a segment).
const TCP: u8 = 6;

/// Room around an inner packet for ESP: the header and IV in front, padding, trailer and ICV
/// behind (RFC 4303 §2; at most 8 + 16 and 15 + 2 + 16 for our suites).
const ESP_ROOM: usize = 64;

/// The most segments one call may leave to send (a whole send buffer at the smallest MTU, and
/// the ACKs and resets of every set closed at once stay well below).
const SEGMENTS: usize = 4096;

/// A set's SAs for its TCP: SA1 out (ours, shared with the UE's other requests) and SA3 in
/// for the UE's connection; SA4 out (shared with the UE's answers over UDP) for the P-CSCF's.
struct TcpSet {
    sa1: Arc<Sa>,
    sa3: Sa,
    sa4: Arc<Sa>,
}

/// What the UEs' TCP counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UeTcpStats {
    /// ESP packets sent and received with a segment.
    pub esp_out: u64,
    pub esp_in: u64,
    /// ESP packets over an SA3 that did not decrypt, or carried something else than TCP.
    pub esp_refused: u64,
    /// Segments the stack refused (not the set's addresses or ports).
    pub segments_refused: u64,
    /// Segments of the P-CSCF's connection to the UE's port-s (over SA2).
    pub accepted_in: u64,
    /// Segments that could not be put in ESP (SA1's counter exhausted, too large).
    pub seal_failed: u64,
    /// Messages the stack refused to queue (closed, full).
    pub send_refused: u64,
    /// Whole SIP messages the streams carried.
    pub messages_in: u64,
}

/// What [`UeTcp::esp_in`] made of an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspIn {
    /// Not over one of our SA3s: the caller's (SA2, UDP).
    NotOurs,
    /// Over an SA3, but refused (ICV, replay, not TCP, not the set's ports).
    Refused,
    /// A segment of this set, run through its stack.
    Segment(SetId),
}

/// Every UE's TCP, for the simulator's one thread (module doc).
pub struct UeTcp {
    host: Host,
    out: Segments,
    sets: HashMap<SetId, TcpSet>,
    /// SA3's SPI (the UE's spi-c) → its set.
    by_spi: HashMap<u32, SetId>,
    /// One ESP packet being built.
    scratch: Vec<u8>,
    stats: UeTcpStats,
}

impl std::fmt::Debug for UeTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UeTcp")
            .field("sets", &self.sets.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl UeTcp {
    /// No sets yet; `seed` makes the connections' initial sequence numbers.
    pub fn new(seed: u64) -> UeTcp {
        UeTcp::with_config(HostConfig::default(), seed)
    }

    /// [`UeTcp::new`] with the stack's sizes and timers.
    pub fn with_config(cfg: HostConfig, seed: u64) -> UeTcp {
        UeTcp {
            host: Host::new(cfg, seed),
            out: Segments::with_limit(SEGMENTS),
            sets: HashMap::new(),
            by_spi: HashMap::new(),
            scratch: Vec::new(),
            stats: UeTcpStats::default(),
        }
    }

    /// The name of UE `ue`'s SA set of generation `generation`.
    pub fn set_id(ue: usize, generation: u32) -> SetId {
        (u64::from(generation) << 32) | ue as u64
    }

    /// What it counted.
    pub fn stats(&self) -> UeTcpStats {
        self.stats
    }

    /// The stack's counters.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// How many sets are open.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Whether the UE's connection of a set is established.
    pub fn is_connected(&self, id: SetId) -> bool {
        self.host.is_established(id, Conn::Opened)
    }

    /// Open a set's TCP: `ports` from the UE's side (its address and port-c / port-s, the
    /// P-CSCF's), `sa1` (UE port-c → P-CSCF port-s) for its segments, `sa3` (P-CSCF port-s →
    /// UE port-c) for the P-CSCF's. A set already open stays as it is.
    pub fn open(
        &mut self,
        id: SetId,
        ports: PortPairs,
        sa1: Arc<Sa>,
        sa3: Sa,
        sa4: Arc<Sa>,
    ) -> Result<(), HostError> {
        if self.sets.contains_key(&id) {
            return Ok(());
        }
        self.host.open(id, ports)?;
        self.by_spi.insert(sa3.spi(), id);
        self.sets.insert(id, TcpSet { sa1, sa3, sa4 });
        Ok(())
    }

    /// Forget a set whose SAs both sides delete now (the set before the previous one, once a
    /// re-registration's new set is in use: TS 33.203 §7.4): its connections go without a
    /// word, since nothing can be sent over SAs being deleted (a RST would meet an SPI the
    /// P-CSCF no longer knows).
    pub fn forget(&mut self, id: SetId, now: Instant) {
        self.host.close(id, now, &mut Segments::with_limit(0));
        if let Some(s) = self.sets.remove(&id) {
            self.by_spi.remove(&s.sa3.spi());
        }
    }

    /// Close a set (its SAs go): its connection is reset, the RST sent over its SA1 to `emit`.
    pub fn close(&mut self, id: SetId, now: Instant, emit: &mut dyn FnMut(&[u8])) {
        self.host.close(id, now, &mut self.out);
        self.flush(emit);
        if let Some(s) = self.sets.remove(&id) {
            self.by_spi.remove(&s.sa3.spi());
        }
    }

    /// Queue one whole request on the UE's connection of a set (connected first when it is not:
    /// the request waits for the handshake); the ESP packets to send go to `emit`.
    pub fn send(
        &mut self,
        id: SetId,
        now: Instant,
        sip: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), SendError> {
        self.send_on(id, Conn::Opened, now, sip, emit)
    }

    /// Queue one whole message on connection `conn` of a set: [`Conn::Opened`], the UE's own
    /// (see [`UeTcp::send`]); [`Conn::Accepted`], the P-CSCF's, for an answer to a request
    /// that came on it (RFC 3261 §18.2.2).
    pub fn send_on(
        &mut self,
        id: SetId,
        conn: Conn,
        now: Instant,
        sip: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<(), SendError> {
        if !self.sets.contains_key(&id) {
            self.stats.send_refused += 1;
            return Err(SendError::Closed);
        }
        let r = self.host.send(id, conn, now, sip, &mut self.out);
        if r.is_err() {
            self.stats.send_refused += 1;
        }
        self.flush(emit);
        r
    }

    /// An ESP packet that came to the UEs (a whole IP packet): over one of our SA3s, it is
    /// decrypted and its segment run (what the stack answers goes to `emit`); the messages it
    /// completed wait for [`UeTcp::messages`].
    pub fn esp_in(&mut self, now: Instant, pkt: &mut [u8], emit: &mut dyn FnMut(&[u8])) -> EspIn {
        let Ok(spi) = crate::esp::packet::peek_spi(pkt) else {
            return EspIn::NotOurs;
        };
        let Some(&id) = self.by_spi.get(&spi) else {
            return EspIn::NotOurs;
        };
        let Some(set) = self.sets.get(&id) else {
            return EspIn::NotOurs;
        };
        let Ok((inner, inb)) = set.sa3.decapsulate(pkt) else {
            self.stats.esp_refused += 1;
            return EspIn::Refused;
        };
        if inb.next_header != TCP {
            self.stats.esp_refused += 1;
            return EspIn::Refused;
        }
        self.stats.esp_in += 1;
        let r = self
            .host
            .handle_segment(id, now, &pkt[inner], &mut self.out);
        self.flush(emit);
        match r {
            Ok(()) => EspIn::Segment(id),
            Err(_) => {
                self.stats.segments_refused += 1;
                EspIn::Refused
            }
        }
    }

    /// A segment of the P-CSCF's connection to the UE's port-s (the inner packet of an ESP
    /// packet over the set's SA2, which the caller decrypted), run through the set's stack.
    pub fn segment_in(
        &mut self,
        id: SetId,
        now: Instant,
        inner: &[u8],
        emit: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let r = self.host.handle_segment(id, now, inner, &mut self.out);
        self.flush(emit);
        match r {
            Ok(()) => {
                self.stats.accepted_in += 1;
                true
            }
            Err(_) => {
                self.stats.segments_refused += 1;
                false
            }
        }
    }

    /// The whole SIP messages the connections carried since the last call, with their set and
    /// connection, in order per connection (pings answered, broken streams reset: to `emit`).
    pub fn messages(
        &mut self,
        now: Instant,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Vec<(SetId, Conn, Vec<u8>)> {
        let mut got = Vec::new();
        self.host
            .for_each_message(now, &mut self.out, |id, conn, msg| {
                got.push((id, conn, msg.to_vec()));
            });
        self.stats.messages_in += got.len() as u64;
        self.flush(emit);
        got
    }

    /// When [`UeTcp::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.host.poll_timeout()
    }

    /// Run the stack's timers (retransmissions, idle connections) that are due.
    pub fn handle_timeout(&mut self, now: Instant, emit: &mut dyn FnMut(&[u8])) {
        if self.host.poll_timeout().is_some_and(|t| t <= now) {
            self.host.handle_timeout(now, &mut self.out);
            self.flush(emit);
        }
    }

    /// Put every segment the stack left in the sink into ESP over its set's SA1 and hand it to
    /// `emit`.
    fn flush(&mut self, emit: &mut dyn FnMut(&[u8])) {
        for (pkt, id, conn) in self.out.iter() {
            let Some(set) = self.sets.get(&id) else {
                continue;
            };
            // ours over SA1; the P-CSCF's connection to our port-s over SA4
            let over = match conn {
                Conn::Opened => &set.sa1,
                Conn::Accepted => &set.sa4,
            };
            match seal(over, pkt, &mut self.scratch) {
                Some(esp) => {
                    self.stats.esp_out += 1;
                    emit(&self.scratch[esp]);
                }
                None => self.stats.seal_failed += 1,
            }
        }
        self.out.clear();
    }
}

/// ESP transport mode over `sa` around a whole inner IP packet (its protocol becomes ESP's next
/// header): the ESP packet's range in `buf`.
pub fn seal(sa: &Sa, inner: &[u8], buf: &mut Vec<u8>) -> Option<std::ops::Range<usize>> {
    buf.clear();
    buf.resize(ESP_ROOM + inner.len() + ESP_ROOM, 0);
    buf[ESP_ROOM..ESP_ROOM + inner.len()].copy_from_slice(inner);
    let mut f = Frame::new(buf, ESP_ROOM, ESP_ROOM + inner.len());
    sa.outbound(&mut f).ok()?;
    Some(f.start..f.end)
}
