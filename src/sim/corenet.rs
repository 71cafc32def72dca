//! The core simulator's transports (RFC 3261 §18: an element MUST implement UDP and TCP): one
//! UDP socket and a TCP listener on the same address, the connections it accepts and the ones
//! it opens, all polled by one [`mio::Poll`].
//!
//! Owns: where every message the core sends goes ([`Net::respond`], [`Net::request`]), and the
//! byte streams of its connections, framed by the project's own [`Framer`] (RFC 3261 §18.3:
//! Content-Length required; a framing error closes the connection; a "\r\n\r\n" keep-alive is
//! answered "\r\n", RFC 5626 §4.4.1).
//!
//! The rules:
//! - A response goes back on the connection its request came on (RFC 3261 §18.2.2); when that
//!   connection is gone, on a connection to the top Via's sent-by. A response to a datagram goes
//!   back to its source, as a datagram.
//! - A request the core originates goes over TCP when the core runs with `--transport tcp`, or
//!   when it is larger than `max_udp_request` (RFC 3261 §18.1.1): [`request_over_tcp`], or when
//!   its next hop's URI asks for TCP ([`Net::request_on`]: a NOTIFY to a Contact with
//!   `;transport=tcp`, RFC 3263 §4.1); its top Via then says `SIP/2.0/TCP`. One connection per remote address, opened on first use
//!   (non-blocking connect), its bytes queued until it is writable (at most [`OUT_MAX`]). A
//!   CANCEL, and the ACK of a non-2xx final response, go the way of their INVITE whatever their
//!   size (RFC 3261 §9.1, §17.1.1.3: same transport, the same top Via): the branches of the
//!   INVITEs sent over TCP are kept for that.
//! - No request is sent again on a timer over TCP (RFC 3261 §17.1.1.2, §17.1.2.2: timers A and
//!   E are for unreliable transports); responses are (a 2xx until its ACK, RFC 3261 §13.3.1.4;
//!   a reliable 18x until its PRACK, RFC 3262 §3: the UAS core does that on any transport).
//! - At most [`CONNS_MAX`] connections, accepted and opened together: a connection accepted past
//!   that is closed at once and counted as refused.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use crate::sim::ue::Transport;
use crate::sip::headers::Via;
use crate::sip::rules::reply::top_via_sent_by;
use crate::sip::{Frame, Framer, HeaderName, Message};

/// At most this many TCP connections at once, accepted and opened together.
pub const CONNS_MAX: usize = 256;

/// At most this many bytes queued on one connection; past it the connection is closed (the
/// peer does not read).
pub const OUT_MAX: usize = 1 << 20;

/// The largest message taken from a connection (the framer's buffer).
const FRAME_MAX: usize = 65536;

/// At most this many INVITE branches kept ([`Net::request`]); past it the set starts afresh.
const TCP_BRANCHES_MAX: usize = 100_000;

/// Datagrams read per [`Net::poll`] at most: the caller's timers run in between.
const UDP_BURST: usize = 64;

const UDP: Token = Token(0);
const LISTENER: Token = Token(1);
/// Connection `slot` is `Token(FIRST_CONN + slot)`.
const FIRST_CONN: usize = 2;

/// Counters of the core's TCP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Connections accepted, and refused because [`CONNS_MAX`] were open.
    pub accepted: u64,
    pub refused: u64,
    /// Connections the core opened (to send a request, or a response whose connection was
    /// gone), and the ones it could not open.
    pub opened: u64,
    pub open_failed: u64,
    /// Connections closed on an error: framing (counted apart too), I/O, a failed connect, a
    /// send queue past [`OUT_MAX`].
    pub closed_by_error: u64,
    pub framing_errors: u64,
    /// SIP messages taken from and queued on connections (pings not counted).
    pub messages_in: u64,
    pub messages_out: u64,
    /// Keep-alive pings answered.
    pub pings: u64,
}

impl TcpStats {
    /// Whether any counter moved.
    pub fn any(&self) -> bool {
        *self != TcpStats::default()
    }
}

/// Where a message came from: what its response goes back on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A datagram from this address.
    Udp(SocketAddr),
    /// A connection: its slot, its id (a slot is reused; the id is not), its peer.
    Tcp {
        slot: usize,
        id: u64,
        peer: SocketAddr,
    },
}

impl Source {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        match *self {
            Source::Udp(a) => a,
            Source::Tcp { peer, .. } => peer,
        }
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self, Source::Tcp { .. })
    }
}

/// Whether a request the core originates goes over TCP: always with `--transport tcp`, and in
/// UDP mode when it is larger than `max_udp_request` bytes (RFC 3261 §18.1.1: larger than
/// 1300 bytes with the path MTU unknown, it MUST go over a congestion-controlled transport).
pub fn request_over_tcp(transport: Transport, len: usize, max_udp_request: usize) -> bool {
    transport == Transport::Tcp || len > max_udp_request
}

/// `bytes` with its top Via's transport `UDP` made `TCP` (a request that goes over TCP though
/// it was built for UDP: RFC 3261 §18.1.1, the Via names the transport it is sent on).
pub fn via_over_tcp(bytes: &[u8]) -> Cow<'_, [u8]> {
    const UDP_VIA: &[u8] = b"\r\nVia: SIP/2.0/UDP ";
    let Some(at) = memchr::memmem::find(bytes, UDP_VIA) else {
        return Cow::Borrowed(bytes);
    };
    // (the first Via line is the top Via: nothing but headers before it)
    if memchr::memmem::find(&bytes[..at], b"\r\n\r\n").is_some() {
        return Cow::Borrowed(bytes);
    }
    let mut out = bytes.to_vec();
    let proto = at + UDP_VIA.len() - 4;
    out[proto..proto + 3].copy_from_slice(b"TCP");
    Cow::Owned(out)
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    framer: Framer,
    out: Vec<u8>,
    sent: usize,
    /// Our connect has not completed yet.
    connecting: bool,
}

/// The core's sockets.
pub struct Net {
    poll: Poll,
    events: Events,
    udp: UdpSocket,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    /// The connection to each remote address (the last one accepted from it or opened to it).
    by_peer: HashMap<SocketAddr, usize>,
    next_id: u64,
    transport: Transport,
    max_udp_request: usize,
    /// The top Via branches of the INVITEs we sent over TCP: their CANCEL and non-2xx ACK
    /// follow them.
    tcp_branches: HashSet<Vec<u8>>,
    /// Datagrams may be waiting still (the last read stopped at [`UDP_BURST`]).
    udp_more: bool,
    buf: Vec<u8>,
    pub stats: TcpStats,
    /// Datagrams dropped (the socket's buffer stayed full).
    pub udp_dropped: u64,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Net {
    /// UDP and TCP on `addr` (port 0: the one the UDP socket got, for both).
    pub fn bind(addr: SocketAddr, transport: Transport, max_udp_request: usize) -> io::Result<Net> {
        let poll = Poll::new()?;
        let (mut udp, mut listener) = Self::bind_both(addr)?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Net {
            poll,
            events: Events::with_capacity(256),
            udp,
            listener,
            conns: (0..CONNS_MAX).map(|_| None).collect(),
            by_peer: HashMap::new(),
            next_id: 0,
            transport,
            max_udp_request,
            tcp_branches: HashSet::new(),
            udp_more: true,
            buf: vec![0u8; 65536],
            stats: TcpStats::default(),
            udp_dropped: 0,
        })
    }

    /// UDP and TCP on `addr`; with port 0, on one port free for both (the port the system
    /// gives UDP may be some TCP socket's ephemeral port: another is tried).
    fn bind_both(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
        let mut tries = if addr.port() == 0 { 16 } else { 1 };
        loop {
            let udp = UdpSocket::bind(addr)?;
            match TcpListener::bind(udp.local_addr()?) {
                Ok(l) => return Ok((udp, l)),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 1 => tries -= 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The address both listen on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    /// Wait up to `timeout` (no wait while datagrams may be waiting), then move every message
    /// received into `inbox`, with where it came from. A keep-alive ping on a connection is an
    /// empty message there: answer it with [`Net::pong`].
    pub fn poll(&mut self, timeout: Duration, inbox: &mut Vec<(Vec<u8>, Source)>) {
        let wait = if self.udp_more {
            Duration::ZERO
        } else {
            timeout
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return;
        }
        let mut ready: Vec<(Token, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token(),
                    e.is_readable() || e.is_read_closed() || e.is_error(),
                    e.is_writable() || e.is_error(),
                )
            })
            .collect();
        if self.udp_more && !ready.iter().any(|r| r.0 == UDP) {
            ready.push((UDP, true, false));
        }
        for (token, readable, writable) in ready {
            match token {
                UDP => self.read_udp(inbox),
                LISTENER => self.accept(),
                Token(t) => {
                    let slot = t - FIRST_CONN;
                    if writable {
                        self.on_writable(slot);
                    }
                    if readable {
                        self.read_conn(slot, inbox);
                    }
                }
            }
        }
    }

    fn read_udp(&mut self, inbox: &mut Vec<(Vec<u8>, Source)>) {
        self.udp_more = false;
        for _ in 0..UDP_BURST {
            match self.udp.recv_from(&mut self.buf) {
                Ok((n, from)) => inbox.push((self.buf[..n].to_vec(), Source::Udp(from))),
                Err(e) if would_block(&e) => return,
                Err(_) => {}
            }
        }
        self.udp_more = true;
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.add(stream, peer, false).is_some() {
                        self.stats.accepted += 1;
                    } else {
                        self.stats.refused += 1;
                    }
                }
                Err(e) if would_block(&e) => return,
                // (ECONNABORTED and the like: that one connection)
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => return,
            }
        }
    }

    /// A connection into a free slot; `None` (and the stream dropped: closed) when all are
    /// taken.
    fn add(&mut self, mut stream: TcpStream, peer: SocketAddr, connecting: bool) -> Option<usize> {
        let slot = self.conns.iter().position(Option::is_none)?;
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(FIRST_CONN + slot),
                Interest::READABLE | Interest::WRITABLE,
            )
            .ok()?;
        let _ = stream.set_nodelay(true);
        self.next_id += 1;
        self.conns[slot] = Some(Conn {
            stream,
            peer,
            id: self.next_id,
            framer: Framer::with_capacity(FRAME_MAX),
            out: Vec::new(),
            sent: 0,
            connecting,
        });
        self.by_peer.insert(peer, slot);
        Some(slot)
    }

    fn close(&mut self, slot: usize, error: bool) {
        let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if self.by_peer.get(&c.peer) == Some(&slot) {
            self.by_peer.remove(&c.peer);
        }
        if error {
            self.stats.closed_by_error += 1;
        }
    }

    fn read_conn(&mut self, slot: usize, inbox: &mut Vec<(Vec<u8>, Source)>) {
        loop {
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            if c.connecting {
                return;
            }
            let source = Source::Tcp {
                slot,
                id: c.id,
                peer: c.peer,
            };
            let framed = loop {
                match c.framer.next_frame() {
                    Ok(Some(Frame::Message(m))) => {
                        self.stats.messages_in += 1;
                        inbox.push((m.to_vec(), source));
                    }
                    // (in the inbox in its place: the pong follows the responses to what came
                    // before it)
                    Ok(Some(Frame::Ping)) => inbox.push((Vec::new(), source)),
                    Ok(None) => break true,
                    Err(_) => break false,
                }
            };
            if !framed {
                self.stats.framing_errors += 1;
                self.close(slot, true);
                return;
            }
            let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
                return;
            };
            let room = c.framer.spare();
            if room.is_empty() {
                // (cannot happen: a message filling the buffer is a framing error above)
                self.close(slot, true);
                return;
            }
            match c.stream.read(room) {
                Ok(0) => {
                    self.close(slot, false);
                    return;
                }
                Ok(n) => c.framer.commit(n),
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot, true);
                    return;
                }
            }
        }
    }

    fn on_writable(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting {
            // (mio: a writable event ends a connect; take_error / peer_addr say how)
            match c.stream.take_error() {
                Ok(None) => {}
                _ => {
                    self.close(slot, true);
                    return;
                }
            }
            match c.stream.peer_addr() {
                Ok(_) => c.connecting = false,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => {
                    self.close(slot, true);
                    return;
                }
            }
        }
        self.flush(slot);
    }

    /// Write what is queued until the socket takes no more.
    fn flush(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if c.connecting {
            return;
        }
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => {
                    self.close(slot, true);
                    return;
                }
                Ok(n) => c.sent += n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot, true);
                    return;
                }
            }
        }
        c.out.clear();
        c.sent = 0;
    }

    /// Queue `bytes` on connection `slot` and write what it takes; `false` if the connection
    /// is gone or closed now (its queue would pass [`OUT_MAX`]).
    fn queue(&mut self, slot: usize, bytes: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return false;
        };
        if c.out.len() - c.sent + bytes.len() > OUT_MAX {
            self.close(slot, true);
            return false;
        }
        if c.sent > 0 {
            c.out.drain(..c.sent);
            c.sent = 0;
        }
        c.out.extend_from_slice(bytes);
        self.flush(slot);
        self.conns[slot].is_some()
    }

    /// Send `bytes` over TCP to `to`: on the connection to it, or a new one.
    fn send_tcp(&mut self, to: SocketAddr, bytes: &[u8]) {
        let slot = match self.by_peer.get(&to) {
            Some(&s) => s,
            None => {
                let Ok(stream) = TcpStream::connect(to) else {
                    self.stats.open_failed += 1;
                    return;
                };
                match self.add(stream, to, true) {
                    Some(s) => {
                        self.stats.opened += 1;
                        s
                    }
                    None => {
                        self.stats.open_failed += 1;
                        return;
                    }
                }
            }
        };
        if self.queue(slot, bytes) {
            self.stats.messages_out += 1;
        }
    }

    fn send_udp(&mut self, to: SocketAddr, bytes: &[u8]) {
        // (the socket is non-blocking: a full send buffer is waited out a little, as the
        // blocking socket before it did)
        for _ in 0..100 {
            match self.udp.send_to(bytes, to) {
                Err(e) if would_block(&e) => std::thread::sleep(Duration::from_micros(100)),
                _ => return,
            }
        }
        self.udp_dropped += 1;
    }

    /// The "\r\n" answering a keep-alive ping that came on connection `src` (RFC 5626
    /// §4.4.1), if it is still open.
    pub fn pong(&mut self, src: Source) {
        if let Source::Tcp { slot, id, .. } = src
            && self
                .conns
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id)
        {
            self.stats.pings += 1;
            self.queue(slot, b"\r\n");
        }
    }

    /// A response to a message from `src`: back on its connection (RFC 3261 §18.2.2), on a
    /// new one to the top Via's sent-by when that one is gone; to a datagram's source as a
    /// datagram.
    pub fn respond(&mut self, src: Source, bytes: &[u8]) {
        match src {
            Source::Udp(to) => self.send_udp(to, bytes),
            Source::Tcp { slot, id, .. } => {
                let alive = self
                    .conns
                    .get(slot)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.id == id);
                if alive {
                    if self.queue(slot, bytes) {
                        self.stats.messages_out += 1;
                    }
                    return;
                }
                let to = Message::parse(bytes)
                    .ok()
                    .and_then(|m| top_via_sent_by(m.view()));
                if let Some(to) = to {
                    self.send_tcp(to, bytes);
                }
            }
        }
    }

    /// A request the core originates, to its next hop `to`: over TCP or UDP as
    /// [`request_over_tcp`] says. `again`: a retransmission on a timer, which never goes over
    /// TCP (RFC 3261 §17.1.1.2).
    pub fn request(&mut self, to: SocketAddr, bytes: &[u8], again: bool) {
        self.request_on(to, bytes, again, false);
    }

    /// [`Net::request`], over TCP whatever its size and the mode with `tcp` (the next hop's
    /// URI asks for TCP, RFC 3263 §4.1: a subscriber's Contact with `;transport=tcp`).
    pub fn request_on(&mut self, to: SocketAddr, bytes: &[u8], again: bool, tcp: bool) {
        let m = Message::parse(bytes).ok();
        let v = m.as_ref().map(Message::view);
        let branch = v
            .and_then(|v| v.values(HeaderName::Via).next())
            .and_then(Via::parse)
            .and_then(|via| via.branch());
        let follows_invite = v.is_some_and(|v| v.is_method(b"CANCEL") || v.is_method(b"ACK"))
            && branch.is_some_and(|b| self.tcp_branches.contains(b));
        if tcp
            || follows_invite
            || request_over_tcp(self.transport, bytes.len(), self.max_udp_request)
        {
            if let (Some(v), Some(b)) = (v, branch)
                && v.is_method(b"INVITE")
                && !self.tcp_branches.contains(b)
            {
                if self.tcp_branches.len() >= TCP_BRANCHES_MAX {
                    self.tcp_branches.clear();
                }
                self.tcp_branches.insert(b.to_vec());
            }
            if !again {
                let bytes = via_over_tcp(bytes);
                self.send_tcp(to, &bytes);
            }
        } else {
            self.send_udp(to, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_of_a_request_follows_the_mode_and_its_size() {
        for (transport, len, tcp) in [
            (Transport::Udp, 0, false),
            (Transport::Udp, 1300, false),
            (Transport::Udp, 1301, true),
            (Transport::Udp, 65535, true),
            (Transport::Tcp, 0, true),
            (Transport::Tcp, 200, true),
            (Transport::Tcp, 5000, true),
        ] {
            assert_eq!(
                request_over_tcp(transport, len, 1300),
                tcp,
                "{transport:?} {len}"
            );
        }
        // a lab without TCP on the P-CSCF's core side keeps everything on UDP
        assert!(!request_over_tcp(Transport::Udp, 60000, usize::MAX));
    }

    #[test]
    fn a_request_sent_over_tcp_says_so_in_its_top_via_only() {
        let req = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\nContent-Length: 0\r\n\r\n";
        let out = via_over_tcp(req);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Via: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\n"));
        assert!(text.contains("Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\n"));
        assert_eq!(out.len(), req.len());
        let tcp =
            b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.0.1:5060\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(via_over_tcp(tcp), Cow::Borrowed(_)));
        // a Via-looking line in the body is not the top Via
        let body =
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 24\r\n\r\n\r\nVia: SIP/2.0/UDP x:1\r\n";
        assert!(matches!(via_over_tcp(body), Cow::Borrowed(_)));
    }

    fn request(method: &str, branch: &str, body: usize) -> Vec<u8> {
        format!(
            "{method} sip:u@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:u@b>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nContent-Length: {body}\r\n\r\n{}",
            "x".repeat(body)
        )
        .into_bytes()
    }

    /// In UDP mode an INVITE over 1300 bytes goes over TCP (RFC 3261 §18.1.1), its Via made
    /// TCP; its CANCEL and the ACK of its 487 follow it there though small (RFC 3261 §9.1,
    /// §17.1.1.3), on the same connection; a small request of another transaction stays UDP.
    #[test]
    fn a_large_invite_goes_over_tcp_and_its_cancel_follows_it() {
        use std::io::Read;
        let udp_peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = udp_peer.local_addr().unwrap();
        let Ok(tcp_peer) = std::net::TcpListener::bind(to) else {
            return; // (the port is taken for TCP by someone else: nothing to learn)
        };
        udp_peer
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut net = Net::bind("127.0.0.1:0".parse().unwrap(), Transport::Udp, 1300).unwrap();
        let mut inbox = Vec::new();
        net.request(to, &request("INVITE", "i1", 1500), false);
        net.request(to, &request("INVITE", "i1", 1500), true);
        net.request(to, &request("CANCEL", "i1", 0), false);
        net.request(to, &request("ACK", "i1", 0), false);
        net.request(to, &request("BYE", "b2", 0), false);
        let (mut conn, _) = tcp_peer.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut framer = Framer::with_capacity(65536);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while got.len() < 3 && std::time::Instant::now() < deadline {
            net.poll(Duration::from_millis(5), &mut inbox);
            let mut b = [0u8; 4096];
            if let Ok(n) = conn.read(&mut b) {
                framer.push(&b[..n]);
            }
            while let Ok(Some(Frame::Message(m))) = framer.next_frame() {
                got.push(String::from_utf8(m.to_vec()).unwrap());
            }
        }
        assert_eq!(got.len(), 3, "{got:?}");
        for (g, method) in got.iter().zip(["INVITE", "CANCEL", "ACK"]) {
            assert!(g.starts_with(method), "{g}");
            assert!(g.contains("Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKi1\r\n"));
        }
        let mut b = [0u8; 2048];
        let (n, _) = udp_peer.recv_from(&mut b).unwrap();
        assert!(b[..n].starts_with(b"BYE "), "the BYE as a datagram");
        assert!(inbox.is_empty());
        assert_eq!(net.stats.opened, 1);
        assert_eq!(net.stats.messages_out, 3);
    }
}
