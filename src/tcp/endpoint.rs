//! One SA set's TCP: the two connections TS 33.203 §7 pairs with a set of SAs, terminated in
//! user space with smoltcp (so segments never leave the process, and memory per connection is
//! ours to bound).
//!
//! An [`Endpoint`] is one side of an SA set's pair of port pairs. It listens on its protected
//! server port for the one connection the peer may open from its protected client port
//! ([`Conn::Accepted`]), and opens its own from its client port to the peer's server port
//! ([`Conn::Opened`]). No other 4-tuple exists inside the set (the SAs' selectors name these
//! ports), so a set never holds more than these two connections, whatever the peer sends.
//!
//! Sans-IO: it takes decrypted inner IP packets and a `now`, and hands the IP packets it wants
//! sent to a [`Segments`] sink, tagged with the connection (and so the SA) they belong to; the
//! caller does ESP. It knows nothing of SIP: [`Endpoint::recv`] gives the byte stream and
//! [`Endpoint::send`] takes whole messages (all or nothing).
//!
//! Never: a segment whose addresses or ports are not this set's reaches smoltcp (refused and
//! counted); a message is half-queued; a connection outlives [`Endpoint::close`].

use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, CongestionControl, State};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

/// IP protocol number of TCP.
const TCP: u8 = 6;

/// The two connections of an SA set, named from this endpoint's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conn {
    /// The peer's, from its client port to our server port: its requests and our responses
    /// to them (RFC 3261 §18.2.2).
    Accepted,
    /// Ours, from our client port to the peer's server port: our requests and its responses.
    Opened,
}

impl Conn {
    fn index(self) -> usize {
        match self {
            Conn::Accepted => 0,
            Conn::Opened => 1,
        }
    }
}

/// The addresses and the four ports of one SA set, from this endpoint's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPairs {
    /// Our address (the inner source of what we send).
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// Our protected client port.
    pub local_c: u16,
    /// Our protected server port.
    pub local_s: u16,
    /// The peer's protected client port.
    pub remote_c: u16,
    /// The peer's protected server port.
    pub remote_s: u16,
}

/// Sizes and timers of an endpoint.
#[derive(Debug, Clone, Copy)]
pub struct EndpointConfig {
    /// The largest inner IP packet (the path MTU less the outer header and ESP's overhead).
    pub mtu: usize,
    /// Receive buffer per connection (also the window we offer).
    pub rx_buffer: usize,
    /// Send buffer per connection: the largest message [`Endpoint::send`] takes.
    pub tx_buffer: usize,
    /// A connection with nothing sent or received for this long is closed.
    pub idle: Duration,
    /// A connection whose peer stops acknowledging (or never completes the handshake) for this
    /// long is aborted.
    pub unacked: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            // 1500 less IPv6 (40), ESP header and IV (8 + 16), padding and trailer (≤ 17), ICV (16)
            mtu: 1400,
            rx_buffer: 8192,
            tx_buffer: 16384,
            idle: Duration::from_secs(300),
            unacked: Duration::from_secs(20),
        }
    }
}

/// Why a packet was refused before it reached the TCP stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentError {
    /// Not an IPv4/IPv6 packet carrying TCP, or truncated.
    NotTcp,
    /// Its addresses are not this set's.
    WrongAddress,
    /// Its ports are not one of the set's two port pairs (TS 33.203 §7.1 selectors).
    WrongPorts,
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The peer's connection to us is not open (it is the peer's to open).
    NotConnected,
    /// The connection's send buffer cannot take the whole message now.
    Full,
    /// The message is larger than a send buffer.
    TooLarge,
    /// The endpoint was closed.
    Closed,
}

/// What an endpoint counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Segments handed to the TCP stack.
    pub segments_in: u64,
    /// Segments the TCP stack sent.
    pub segments_out: u64,
    /// Connections established, by [`Conn`] index.
    pub established: [u64; 2],
    /// Connections closed for being idle.
    pub idle_closed: u64,
    /// Connections that ended any other way (FIN, RST, unacknowledged data).
    pub ended: u64,
    /// Outbound segments dropped: the sink was full.
    pub sink_full: u64,
    /// Messages that waited for our connection's handshake and never went: the peer refused
    /// it (RST), it timed out, or the connection was reset or closed first.
    pub pending_lost: u64,
}

/// The IP packets an endpoint wants sent, each tagged with its connection, in one reusable
/// buffer (no allocation once it has grown to a batch's size).
#[derive(Debug, Default)]
pub struct Segments {
    buf: Vec<u8>,
    items: Vec<(Range<usize>, u64, Conn)>,
    limit: usize,
}

impl Segments {
    /// A sink that takes at most `limit` packets between two [`Segments::clear`]s.
    pub fn with_limit(limit: usize) -> Segments {
        Segments {
            buf: Vec::new(),
            items: Vec::with_capacity(limit),
            limit,
        }
    }

    /// The packets, oldest first, with the set (the endpoint's `id`) and the connection each
    /// belongs to: the SA it goes over.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64, Conn)> {
        self.items
            .iter()
            .map(|(r, id, c)| (&self.buf[r.clone()], *id, *c))
    }

    /// How many packets are waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Forget them (keeping the memory).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    fn is_full(&self) -> bool {
        self.items.len() >= self.limit
    }
}

/// The smoltcp device of one endpoint: at most one packet in, packets out into [`Segments`].
struct Link<'a> {
    id: u64,
    rx: Option<&'a [u8]>,
    out: &'a mut Segments,
    ports: PortPairs,
    mtu: usize,
    dropped: u64,
}

struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

struct TxToken<'a, 'b> {
    id: u64,
    out: &'a mut Segments,
    ports: PortPairs,
    dropped: &'a mut u64,
    _rx: std::marker::PhantomData<&'b ()>,
}

impl phy::TxToken for TxToken<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let start = self.out.buf.len();
        self.out.buf.resize(start + len, 0);
        let r = f(&mut self.out.buf[start..]);
        // the connection from our source port: our server port is the accepted one
        match conn_of_sent(&self.out.buf[start..], self.ports) {
            Some(conn) if !self.out.is_full() => {
                self.out.items.push((start..start + len, self.id, conn))
            }
            _ => {
                self.out.buf.truncate(start);
                *self.dropped += 1;
            }
        }
        r
    }
}

/// [`Endpoint::check_segment`] for a set's ports, without its endpoint.
pub(super) fn check_segment(p: &PortPairs, pkt: &[u8]) -> Result<(), SegmentError> {
    let (src, dst, l4) = tcp_of(pkt).ok_or(SegmentError::NotTcp)?;
    if l4.len() < 20 {
        return Err(SegmentError::NotTcp);
    }
    if src != p.remote || dst != p.local {
        return Err(SegmentError::WrongAddress);
    }
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    if (sport, dport) == (p.remote_c, p.local_s) || (sport, dport) == (p.remote_s, p.local_c) {
        Ok(())
    } else {
        Err(SegmentError::WrongPorts)
    }
}

/// Which connection a packet we built belongs to (by its TCP source port).
fn conn_of_sent(pkt: &[u8], ports: PortPairs) -> Option<Conn> {
    let (_, _, l4) = tcp_of(pkt)?;
    let src = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    if src == ports.local_s {
        Some(Conn::Accepted)
    } else if src == ports.local_c {
        Some(Conn::Opened)
    } else {
        None
    }
}

/// The addresses and TCP header-and-payload of an IPv4/IPv6 packet carrying TCP (no IPv6
/// extension headers: ESP transport mode leaves none before TCP).
fn tcp_of(pkt: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match pkt.first()? >> 4 {
        4 => {
            let v = crate::wire::Ipv4Packet::new_checked(pkt).ok()?;
            if v.protocol() != TCP || v.is_fragment() {
                return None;
            }
            let l4 = pkt.get(v.header_len()..v.total_len())?;
            Some((v.src_addr().into(), v.dst_addr().into(), l4))
        }
        6 => {
            let v = crate::wire::Ipv6Packet::new_checked(pkt).ok()?;
            if v.next_header() != TCP {
                return None;
            }
            let l4 = pkt.get(40..v.total_len())?;
            Some((v.src_addr().into(), v.dst_addr().into(), l4))
        }
        _ => None,
    }
}

impl phy::Device for Link<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, 'a>
    where
        Self: 'a;

    fn receive(
        &mut self,
        _: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let pkt = self.rx.take()?;
        Some((
            RxToken(pkt),
            TxToken {
                id: self.id,
                out: self.out,
                ports: self.ports,
                dropped: &mut self.dropped,
                _rx: std::marker::PhantomData,
            },
        ))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if self.out.is_full() {
            return None;
        }
        Some(TxToken {
            id: self.id,
            out: self.out,
            ports: self.ports,
            dropped: &mut self.dropped,
            _rx: std::marker::PhantomData,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // ESP's ICV already proves every inbound byte; outbound checksums are still written
        // for the peer's stack
        let mut sums = ChecksumCapabilities::default();
        sums.ipv4 = Checksum::Tx;
        sums.tcp = Checksum::Tx;
        caps.checksum = sums;
        caps
    }
}

/// One SA set's pair of TCP connections (module doc).
pub struct Endpoint {
    id: u64,
    iface: Interface,
    sockets: SocketSet<'static>,
    handles: [SocketHandle; 2],
    ports: PortPairs,
    cfg: EndpointConfig,
    epoch: Instant,
    /// When each connection last moved bytes (idle timer), `None` while it is not open.
    last_active: [Option<Instant>; 2],
    /// Whether each connection was seen established (to count ends once).
    up: [bool; 2],
    /// How many times each connection was established: bytes of one connection never run on
    /// into the next's (the owner's framer starts afresh, [`Endpoint::generation`]).
    generation: [u32; 2],
    /// A message waiting for our own connection's handshake.
    pending: Vec<u8>,
    /// How many messages `pending` holds.
    pending_msgs: u64,
    /// Messages lost from `pending` since the owner last asked ([`Endpoint::take_lost`]).
    lost_untaken: u64,
    closed: bool,
    stats: EndpointStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("ports", &self.ports)
            .field("accepted", &self.state(Conn::Accepted))
            .field("opened", &self.state(Conn::Opened))
            .field("stats", &self.stats)
            .finish()
    }
}

fn ip(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => IpAddress::Ipv4(v),
        IpAddr::V6(v) => IpAddress::Ipv6(v),
    }
}

impl Endpoint {
    /// An endpoint listening on its server port. `id` tags the packets it sends (the owner's
    /// name for the set); `seed` makes its initial sequence numbers (give each endpoint a
    /// different, unpredictable one).
    pub fn new(
        id: u64,
        ports: PortPairs,
        cfg: EndpointConfig,
        seed: u64,
        now: Instant,
    ) -> Endpoint {
        let mut out = Segments::with_limit(0);
        let mut link = Link {
            id,
            rx: None,
            out: &mut out,
            ports,
            mtu: cfg.mtu,
            dropped: 0,
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut link, smoltcp::time::Instant::ZERO);
        let prefix = if ports.local.is_ipv4() { 32 } else { 128 };
        iface.update_ip_addrs(|a| {
            // capacity 2 by smoltcp's default: one address never fails
            let _ = a.push(IpCidr::new(ip(ports.local), prefix));
        });
        // every peer is one hop away over Medium::Ip; the route only makes it reachable
        match ports.remote {
            IpAddr::V4(v) => {
                let _ = iface.routes_mut().add_default_ipv4_route(v);
            }
            IpAddr::V6(v) => {
                let _ = iface.routes_mut().add_default_ipv6_route(v);
            }
        }
        let mut sockets = SocketSet::new(Vec::with_capacity(2));
        // our own connection's buffers are taken when we first connect (most sets only ever
        // carry the UE's connection to us)
        let handles = [
            sockets.add(Self::socket(&cfg)),
            sockets.add(Self::socket_without_buffers()),
        ];
        let mut ep = Endpoint {
            id,
            iface,
            sockets,
            handles,
            ports,
            cfg,
            epoch: now,
            last_active: [None; 2],
            up: [false; 2],
            generation: [0; 2],
            pending: Vec::new(),
            pending_msgs: 0,
            lost_untaken: 0,
            closed: false,
            stats: EndpointStats::default(),
        };
        ep.relisten();
        ep
    }

    /// A closed socket that holds no memory, for a connection not in use.
    fn socket_without_buffers() -> tcp::Socket<'static> {
        tcp::Socket::new(
            tcp::SocketBuffer::new(Vec::new()),
            tcp::SocketBuffer::new(Vec::new()),
        )
    }

    /// Give our own connection its buffers before it connects, or take them back once it is
    /// over (nothing waits for it): a set that is not using it holds none.
    fn size_opened(&mut self, in_use: bool) {
        let h = self.handles[1];
        let s = self.sockets.get::<tcp::Socket>(h);
        let has = s.recv_capacity() > 0;
        if in_use == has || s.state() != State::Closed {
            return;
        }
        self.sockets.remove(h);
        self.handles[1] = self.sockets.add(if in_use {
            Self::socket(&self.cfg)
        } else {
            Self::socket_without_buffers()
        });
    }

    fn socket(cfg: &EndpointConfig) -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; cfg.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; cfg.tx_buffer]),
        );
        // RFC 3261 §18.1.1: a congestion-controlled transport
        s.set_congestion_control(CongestionControl::Reno);
        // SIP messages are whole writes: send them at once
        s.set_nagle_enabled(false);
        s
    }

    /// smoltcp's timeout aborts a connection whose peer has been silent that long, idle or not:
    /// keep it for a handshake and for data waiting to be acknowledged (the peer that stops
    /// acknowledging), never for an idle connection (those get [`EndpointConfig::idle`]).
    fn tune_timeouts(&mut self) {
        let unacked = smoltcp::time::Duration::from_millis(self.cfg.unacked.as_millis() as u64);
        for h in self.handles {
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            let waiting = match s.state() {
                State::Established | State::CloseWait => s.send_queue() > 0,
                State::Closed | State::Listen | State::TimeWait => false,
                // a handshake, or a close the peer must answer
                _ => true,
            };
            s.set_timeout(waiting.then_some(unacked));
        }
    }

    /// Listen again on the server port once the accepted connection is over.
    fn relisten(&mut self) {
        let s = self.sockets.get_mut::<tcp::Socket>(self.handles[0]);
        if s.state() == State::Closed && !self.closed {
            let _ = s.listen(IpListenEndpoint {
                addr: Some(ip(self.ports.local)),
                port: self.ports.local_s,
            });
        }
    }

    fn at(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// The ports this endpoint serves.
    pub fn ports(&self) -> PortPairs {
        self.ports
    }

    /// What it counted.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The TCP state of a connection.
    pub fn state(&self, conn: Conn) -> State {
        self.sockets
            .get::<tcp::Socket>(self.handles[conn.index()])
            .state()
    }

    /// Whether a connection is established (it can carry a message now).
    pub fn is_established(&self, conn: Conn) -> bool {
        self.state(conn) == State::Established
    }

    /// Whether neither connection is open and nothing waits (the endpoint may be dropped).
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty()
            && [Conn::Accepted, Conn::Opened]
                .iter()
                .all(|c| matches!(self.state(*c), State::Closed | State::Listen))
    }

    /// Check that a decrypted packet is one of this set's segments: the set's addresses and one
    /// of its two port pairs (TS 33.203 §7.1: the SAs' selectors; we check them again here
    /// because the TCP stack would otherwise answer any port).
    pub fn check_segment(&self, pkt: &[u8]) -> Result<(), SegmentError> {
        check_segment(&self.ports, pkt)
    }

    /// Take one decrypted inner IP packet (checked with [`Endpoint::check_segment`] first) and
    /// run the stack: what it sends goes to `out`.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        pkt: &[u8],
        out: &mut Segments,
    ) -> Result<(), SegmentError> {
        self.check_segment(pkt)?;
        if self.closed {
            return Ok(());
        }
        self.stats.segments_in += 1;
        self.run(now, Some(pkt), out);
        Ok(())
    }

    /// Run timers (retransmissions, idle connections): call at [`Endpoint::poll_at`].
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Segments) {
        for conn in [Conn::Accepted, Conn::Opened] {
            let i = conn.index();
            if let Some(t) = self.last_active[i]
                && now.saturating_duration_since(t) >= self.cfg.idle
            {
                let s = self.sockets.get_mut::<tcp::Socket>(self.handles[i]);
                if s.send_queue() > 0 {
                    // not idle: bytes wait for the peer's ACK (its retransmissions run; a
                    // peer that never answers is `unacked`'s to abort)
                    self.last_active[i] = Some(now);
                    continue;
                }
                s.close();
                self.last_active[i] = None;
                self.stats.idle_closed += 1;
            }
        }
        self.run(now, None, out);
    }

    /// When [`Endpoint::handle_timeout`] is next due.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let stack = self
            .iface
            .poll_at(self.at(now), &self.sockets)
            .map(|t| self.epoch + Duration::from_micros(t.total_micros().max(0) as u64));
        let idle = self
            .last_active
            .iter()
            .flatten()
            .map(|t| *t + self.cfg.idle)
            .min();
        super::earliest(stack, idle)
    }

    /// Queue one whole message on a connection. [`Conn::Opened`] is connected first when it is
    /// not open (the message waits for the handshake); [`Conn::Accepted`] must be open.
    pub fn send(
        &mut self,
        now: Instant,
        conn: Conn,
        msg: &[u8],
        out: &mut Segments,
    ) -> Result<(), SendError> {
        if self.closed {
            return Err(SendError::Closed);
        }
        if msg.len() > self.cfg.tx_buffer {
            return Err(SendError::TooLarge);
        }
        let i = conn.index();
        if conn == Conn::Opened {
            self.size_opened(true);
        }
        let s = self.sockets.get_mut::<tcp::Socket>(self.handles[i]);
        if s.may_send() {
            if s.send_capacity() - s.send_queue() < msg.len() {
                return Err(SendError::Full);
            }
            // the room was checked: the whole message goes in
            let _ = s.send_slice(msg);
            self.last_active[i] = Some(now);
        } else if conn == Conn::Accepted {
            return Err(SendError::NotConnected);
        } else {
            if !self.pending.is_empty() && self.pending.len() + msg.len() > self.cfg.tx_buffer {
                return Err(SendError::Full);
            }
            if matches!(s.state(), State::Closed) {
                let remote = IpEndpoint::new(ip(self.ports.remote), self.ports.remote_s);
                let local = IpListenEndpoint {
                    addr: Some(ip(self.ports.local)),
                    port: self.ports.local_c,
                };
                if s.connect(self.iface.context(), remote, local).is_err() {
                    return Err(SendError::NotConnected);
                }
                self.last_active[i] = Some(now);
            } else if !matches!(s.state(), State::SynSent | State::SynReceived) {
                // closing: a new connection only once this one is gone
                return Err(SendError::NotConnected);
            }
            self.pending.extend_from_slice(msg);
            self.pending_msgs += 1;
        }
        self.run(now, None, out);
        Ok(())
    }

    /// How many messages waiting for our connection's handshake were lost since the last call
    /// (`EndpointStats::pending_lost`).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost_untaken)
    }

    /// Read what a connection received: `f` gets the bytes waiting and returns how many it
    /// took; returns that count (0 when nothing waits or the connection is not open).
    pub fn recv(&mut self, conn: Conn, f: impl FnOnce(&[u8]) -> usize) -> usize {
        let s = self
            .sockets
            .get_mut::<tcp::Socket>(self.handles[conn.index()]);
        if !s.can_recv() {
            return 0;
        }
        s.recv(|b| {
            let n = f(b).min(b.len());
            (n, n)
        })
        .unwrap_or(0)
    }

    /// The bytes its sockets' buffers hold (what a set's TCP costs beyond a few hundred bytes).
    pub fn buffer_bytes(&self) -> usize {
        self.handles
            .iter()
            .map(|h| {
                let s = self.sockets.get::<tcp::Socket>(*h);
                s.recv_capacity() + s.send_capacity()
            })
            .sum()
    }

    /// How many times a connection was established (changes when a new one replaces it).
    pub fn generation(&self, conn: Conn) -> u32 {
        self.generation[conn.index()]
    }

    /// Whether a connection is open (established or being closed with bytes still to come).
    pub fn is_open(&self, conn: Conn) -> bool {
        self.sockets
            .get::<tcp::Socket>(self.handles[conn.index()])
            .is_open()
    }

    /// Whether a connection has received bytes not yet read.
    pub fn has_data(&self, conn: Conn) -> bool {
        self.sockets
            .get::<tcp::Socket>(self.handles[conn.index()])
            .can_recv()
    }

    /// Reset one connection (RST), e.g. after a framing error: its byte stream cannot be trusted
    /// to resume at a message boundary.
    pub fn shut(&mut self, now: Instant, conn: Conn, out: &mut Segments) {
        let i = conn.index();
        self.sockets.get_mut::<tcp::Socket>(self.handles[i]).abort();
        self.last_active[i] = None;
        if conn == Conn::Opened {
            self.lose_pending();
        }
        self.run(now, None, out);
    }

    /// End both connections (RST) because the SA set goes; nothing is accepted or sent after.
    pub fn close(&mut self, now: Instant, out: &mut Segments) {
        for h in self.handles {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
        }
        self.lose_pending();
        self.last_active = [None; 2];
        self.run(now, None, out);
        self.closed = true;
    }

    /// Drop what waits for our connection's handshake, counted.
    fn lose_pending(&mut self) {
        self.stats.pending_lost += self.pending_msgs;
        self.lost_untaken += self.pending_msgs;
        self.pending_msgs = 0;
        self.pending.clear();
    }

    /// Poll the stack with at most one inbound packet, then move a waiting message into our
    /// connection once it is up and note connection changes.
    fn run(&mut self, now: Instant, pkt: Option<&[u8]>, out: &mut Segments) {
        let at = self.at(now);
        let before = out.len();
        let mut link = Link {
            id: self.id,
            rx: pkt,
            out,
            ports: self.ports,
            mtu: self.cfg.mtu,
            dropped: 0,
        };
        self.iface.poll(at, &mut link, &mut self.sockets);
        let mut dropped = link.dropped;
        for conn in [Conn::Accepted, Conn::Opened] {
            let i = conn.index();
            let s = self.sockets.get_mut::<tcp::Socket>(self.handles[i]);
            // SIP has no use for a half-closed connection: the peer's FIN closes ours too
            // (once what we queued has gone)
            if s.state() == State::CloseWait {
                s.close();
            }
            let established = s.state() == State::Established;
            if established && !self.up[i] {
                self.up[i] = true;
                self.generation[i] = self.generation[i].wrapping_add(1);
                self.stats.established[i] += 1;
                self.last_active[i] = Some(now);
            }
            if self.up[i] && !s.is_open() {
                self.up[i] = false;
                self.stats.ended += 1;
                self.last_active[i] = None;
            }
            if pkt.is_some() && self.up[i] {
                self.last_active[i] = Some(now);
            }
        }
        let s = self.sockets.get_mut::<tcp::Socket>(self.handles[1]);
        if !self.pending.is_empty() {
            if s.may_send() {
                let n = s.send_slice(&self.pending).unwrap_or(0);
                self.pending.drain(..n);
                if self.pending.is_empty() {
                    self.pending_msgs = 0;
                }
                let mut link = Link {
                    id: self.id,
                    rx: None,
                    out,
                    ports: self.ports,
                    mtu: self.cfg.mtu,
                    dropped: 0,
                };
                self.iface.poll(at, &mut link, &mut self.sockets);
                dropped += link.dropped;
            } else if !s.is_open() {
                // the handshake failed (RST, timeout): what waited is lost
                self.lose_pending();
            }
        }
        if self.pending.is_empty() {
            self.size_opened(false);
        }
        self.relisten();
        self.tune_timeouts();
        self.stats.sink_full += dropped;
        self.stats.segments_out += (out.len() - before) as u64;
    }
}
