//! SIP over TCP toward the core (Mw, RFC 3261 §18): the kernel's TCP, on a thread of its own.
//!
//! Owns: the listening socket on our core-side address and SIP port, the connections the core
//! opened to us and the ones we opened to it (one per next hop, reused: RFC 3261 §18.1.1), the
//! framing of what comes in (`sip::Framer`: Content-Length required, RFC 3261 §18.3; CRLF
//! keep-alives answered, RFC 5626 §4.4.1), the bytes waiting to go out, and the bounds and
//! counters of all of it. It never parses or rewrites SIP: the workers do.
//!
//! Between it and the workers are the queues of `dataplane::queue`, one message per buffer,
//! tagged [`Protection::CoreStream`] with the connection's id:
//! - in: each framed message goes to one worker's `core_in` queue, chosen by the connection
//!   (so the messages of one connection stay in order); the worker runs it through the same SIP
//!   stage as a datagram from the core, and its Via branch records the connection, so the UE's
//!   response comes back on it (RFC 3261 §18.2.2);
//! - out: what the workers and the registration thread send over TCP comes through one queue,
//!   whose waker wakes this thread: on the connection it names while that is open (a
//!   response), else on the connection to its destination, opened when there is none (a
//!   request, or a response whose connection is gone: RFC 3261 §18.2.2 opens one to the Via's
//!   sent-by).
//!
//! Why the kernel's TCP and a thread rather than the workers: the core is a handful of peers
//! with long-lived connections, so a syscall per message here costs little, and it keeps the
//! workers free of syscalls; the AF_XDP steering program passes TCP to the kernel already.
//!
//! Bounds: at most `max_connections` connections (further ones are refused at accept and
//! counted; a request to a new next hop past it is lost and counted), `max_message` bytes per
//! framed message (a larger one resets the connection), `max_pending` bytes waiting to be
//! written per connection (past it messages are lost and counted, never buffered without
//! limit), a connect that takes longer than `connect_timeout` fails, a connection idle for
//! `idle_timeout` is closed.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::control::log;
use crate::dataplane::{Datagram, MsgQueue, NO_CONN, Protection};
use crate::io::Side;
use crate::sip::{Frame, Framer};

const WAKE: Token = Token(0);
const LISTEN: Token = Token(1);
/// Connection tokens start here: token = FIRST + slot.
const FIRST: usize = 2;

/// Messages taken from the out queue per pass (the rest wait for the next pass).
const OUT_BUDGET: usize = 1024;
/// Bytes read from one connection per readiness event before the others get their turn.
const READ_BUDGET: usize = 256 * 1024;
/// How often the timeouts are looked at.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// The limits of [`CoreTcp`].
#[derive(Clone, Copy, Debug)]
pub struct CoreTcpConfig {
    /// Our core-side address and SIP port: where we listen.
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub max_message: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl CoreTcpConfig {
    /// The defaults for listening on `listen`.
    pub fn new(listen: SocketAddr) -> CoreTcpConfig {
        CoreTcpConfig {
            listen,
            max_connections: 1024,
            max_message: 65536,
            max_pending: 1 << 20,
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// Counters of the core-side TCP, shared with the report and the metrics.
#[derive(Debug, Default)]
pub struct CoreTcpStats {
    /// Connections the core opened to us, and those refused past `max_connections`.
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Connections we opened, and those that failed to connect (refused, timed out).
    pub opened: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Connections closed: by the peer or an error, for framing (RFC 3261 §18.3), for idling.
    pub closed: AtomicU64,
    pub framing_errors: AtomicU64,
    pub idle_closed: AtomicU64,
    /// Messages framed and handed to a worker; messages written to a connection.
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Keep-alive pings answered (RFC 5626 §4.4.1).
    pub pings: AtomicU64,
    /// Messages in that found their worker's queue full or were larger than a queue buffer.
    pub in_dropped: AtomicU64,
    /// Messages out lost: no connection to be had, its connection failed or closed before they
    /// were written, or too many bytes already waiting on it.
    pub out_lost: AtomicU64,
}

/// A plain copy of [`CoreTcpStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreTcpCounts {
    pub accepted: u64,
    pub refused: u64,
    pub opened: u64,
    pub connect_failed: u64,
    pub closed: u64,
    pub framing_errors: u64,
    pub idle_closed: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub pings: u64,
    pub in_dropped: u64,
    pub out_lost: u64,
}

impl CoreTcpStats {
    pub fn snapshot(&self) -> CoreTcpCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CoreTcpCounts {
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            opened: g(&self.opened),
            connect_failed: g(&self.connect_failed),
            closed: g(&self.closed),
            framing_errors: g(&self.framing_errors),
            idle_closed: g(&self.idle_closed),
            messages_in: g(&self.messages_in),
            messages_out: g(&self.messages_out),
            pings: g(&self.pings),
            in_dropped: g(&self.in_dropped),
            out_lost: g(&self.out_lost),
        }
    }
}

impl CoreTcpCounts {
    /// (name, value) pairs, for the metrics and the report.
    pub fn fields(&self) -> [(&'static str, u64); 12] {
        [
            ("accepted", self.accepted),
            ("refused", self.refused),
            ("opened", self.opened),
            ("connect_failed", self.connect_failed),
            ("closed", self.closed),
            ("framing_errors", self.framing_errors),
            ("idle_closed", self.idle_closed),
            ("messages_in", self.messages_in),
            ("messages_out", self.messages_out),
            ("pings", self.pings),
            ("in_dropped", self.in_dropped),
            ("out_lost", self.out_lost),
        ]
    }

    /// Anything happened at all (the report prints the line only then).
    pub fn any(&self) -> bool {
        self.fields().iter().any(|(_, v)| *v > 0)
    }
}

/// A non-blocking connect to `dst` from our address `local` (any port): the core sees our
/// core-side address whatever the routing table would pick (our Via and Path name it).
fn connect_from(local: std::net::IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    if local.is_unspecified() || local.is_ipv4() != dst.is_ipv4() {
        return TcpStream::connect(dst);
    }
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments; the fd is owned by `sock` below at once.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it on every path.
    let sock = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let (from, from_len) = sockaddr(SocketAddr::new(local, 0));
    let (to, to_len) = sockaddr(dst);
    // SAFETY: the addresses are valid sockaddr_storage of the lengths given.
    if unsafe {
        libc::bind(
            fd,
            (&from as *const libc::sockaddr_storage).cast(),
            from_len,
        )
    } < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    let r = unsafe { libc::connect(fd, (&to as *const libc::sockaddr_storage).cast(), to_len) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    Ok(TcpStream::from_std(sock))
}

/// `a` as a `sockaddr_storage` and its length.
fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let sin = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in6.
            let sin6 = unsafe {
                &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            sin6.sin6_scope_id = v6.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// One connection, either way.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    framer: Framer,
    /// Bytes to write, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    /// Ends of the messages in `out` not yet written in full: counted out when they are, lost
    /// if the connection goes first.
    ends: std::collections::VecDeque<usize>,
    /// A connect of ours still in progress, since when.
    connecting: Option<Instant>,
    /// We opened it (to `peer`, which is then a next hop in `by_dst`).
    ours: bool,
    last: Instant,
}

/// Messages from the core larger than a queue slot ([`crate::dataplane::MSG_MAX`]) that the
/// registration thread takes itself, not a worker: the reg event's NOTIFYs (an implicit set's
/// reginfo, with its contacts' feature tags, can pass 4 KB; TS 24.229 §5.2.3). Bounded: past
/// its depth a message is lost and counted (`in_dropped`).
pub struct LargeToRegistrar {
    q: crossbeam_queue::ArrayQueue<Datagram<Vec<u8>>>,
    /// The registration thread's queue, for its waker.
    wake: Arc<MsgQueue>,
}

impl LargeToRegistrar {
    pub fn new(depth: usize, wake: Arc<MsgQueue>) -> Arc<LargeToRegistrar> {
        Arc::new(LargeToRegistrar {
            q: crossbeam_queue::ArrayQueue::new(depth.max(1)),
            wake,
        })
    }

    /// Queue `d` and wake the registration thread; false when full.
    pub fn push(&self, d: Datagram<Vec<u8>>) -> bool {
        let ok = self.q.push(d).is_ok();
        if ok {
            self.wake.wake();
        }
        ok
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// NOTIFYs waiting (the metrics' queue depth).
    pub fn len(&self) -> usize {
        self.q.len()
    }

    pub fn pop(&self) -> Option<Datagram<Vec<u8>>> {
        self.q.pop()
    }
}

impl std::fmt::Debug for LargeToRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LargeToRegistrar")
            .field("waiting", &self.q.len())
            .finish()
    }
}

/// The core-side TCP: see the module doc. Built by [`CoreTcp::bind`], run by [`CoreTcp::run`].
pub struct CoreTcp {
    cfg: CoreTcpConfig,
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    /// Generation of each slot: a connection's id is `generation << 16 | slot`, never 0
    /// ([`NO_CONN`]), so a response for a connection long gone never finds its successor.
    gens: Vec<u16>,
    free: Vec<usize>,
    /// Our connection to each next hop.
    by_dst: HashMap<SocketAddr, usize>,
    out: Arc<MsgQueue>,
    core_in: Vec<Arc<MsgQueue>>,
    /// Where NOTIFYs too large for `core_in` go ([`LargeToRegistrar`]); none: they are lost.
    large: Option<Arc<LargeToRegistrar>>,
    stats: Arc<CoreTcpStats>,
    last_sweep: Instant,
}

impl std::fmt::Debug for CoreTcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTcp")
            .field("listen", &self.cfg.listen)
            .finish_non_exhaustive()
    }
}

impl CoreTcp {
    /// Listen on `cfg.listen`; framed messages go to `core_in` (one queue per worker). Returns
    /// the thread's state and the queue of what goes out (its waker wakes the thread).
    pub fn bind(
        cfg: CoreTcpConfig,
        core_in: Vec<Arc<MsgQueue>>,
        out_depth: usize,
    ) -> std::io::Result<(CoreTcp, Arc<MsgQueue>)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let out = MsgQueue::new(out_depth, Some(waker));
        let mut listener = TcpListener::bind(cfg.listen)?;
        poll.registry()
            .register(&mut listener, LISTEN, Interest::READABLE)?;
        let slots = cfg.max_connections.clamp(1, 1 << 16);
        let t = CoreTcp {
            cfg,
            poll,
            listener,
            conns: (0..slots).map(|_| None).collect(),
            gens: vec![0; slots],
            free: (0..slots).rev().collect(),
            by_dst: HashMap::new(),
            out: out.clone(),
            core_in,
            large: None,
            stats: Arc::new(CoreTcpStats::default()),
            last_sweep: Instant::now(),
        };
        Ok((t, out))
    }

    /// NOTIFYs larger than a worker's queue slot go to `large` (the registration thread's).
    pub fn set_large(&mut self, large: Arc<LargeToRegistrar>) {
        self.large = Some(large);
    }

    /// The address it listens on (the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<CoreTcpStats> {
        self.stats.clone()
    }

    /// Serve until `stop` is set; then what is still waiting to be written gets a last try.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        while !stop.load(Ordering::Relaxed) {
            // The workers wake this thread only while it sleeps (`MsgQueue::arm`); armed, it
            // looks at the queue once more, and does not sleep if something came.
            self.out.arm();
            let wait = if self.out.is_empty() {
                SWEEP_EVERY
            } else {
                self.out.disarm();
                Duration::ZERO
            };
            let polled = self.poll.poll(&mut events, Some(wait));
            self.out.disarm();
            if let Err(e) = polled {
                if e.kind() != ErrorKind::Interrupted {
                    log::warn(format_args!("core tcp: poll: {e}"));
                }
                continue;
            }
            self.pass(&events);
        }
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            let pending = self.conns.iter().flatten().any(|c| c.sent < c.out.len());
            if !pending {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
            self.pass(&events);
        }
    }

    /// One pass: the readiness events, then what waits in the out queue, then the timeouts.
    pub fn pass(&mut self, events: &Events) {
        let now = Instant::now();
        for ev in events.iter() {
            match ev.token() {
                WAKE => {}
                LISTEN => self.accept(now),
                Token(t) => {
                    let slot = t - FIRST;
                    if ev.is_writable() {
                        self.writable(slot, now);
                    }
                    if ev.is_readable() || ev.is_read_closed() {
                        self.readable(slot, now);
                    }
                }
            }
        }
        for _ in 0..OUT_BUDGET {
            let Some(m) = self.out.pop() else {
                break;
            };
            let conn = match m.protection {
                Protection::CoreStream { conn } => conn,
                _ => NO_CONN,
            };
            self.send(conn, m.dst, m.bytes(), now);
            self.out.recycle(m);
        }
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.last_sweep = now;
            self.sweep(now);
        }
    }

    fn id(&self, slot: usize) -> u32 {
        u32::from(self.gens[slot]) << 16 | slot as u32
    }

    /// The slot of the live connection `id`, if it is still the one.
    fn live(&self, id: u32) -> Option<usize> {
        let slot = (id & 0xffff) as usize;
        let c = self.conns.get(slot)?.as_ref()?;
        (c.id == id).then_some(slot)
    }

    /// Take a slot for `stream`, registered for readiness. `None`: no slot free.
    fn install(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        ours: bool,
        now: Instant,
    ) -> Option<usize> {
        let slot = self.free.pop()?;
        // generation 0 never names a live connection: ids are never NO_CONN
        self.gens[slot] = self.gens[slot].wrapping_add(1).max(1);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut stream, Token(FIRST + slot), interest)
            .is_err()
        {
            self.free.push(slot);
            return None;
        }
        self.conns[slot] = Some(Conn {
            stream,
            peer,
            id: self.id(slot),
            framer: Framer::with_capacity(self.cfg.max_message),
            out: Vec::new(),
            sent: 0,
            ends: Default::default(),
            connecting: ours.then_some(now),
            ours,
            last: now,
        });
        Some(slot)
    }

    fn accept(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.install(stream, peer, false, now).is_some() {
                        bump(&self.stats.accepted);
                    } else {
                        // dropped at once: the core tries another connection later
                        bump(&self.stats.refused);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // (EMFILE and the like: the listener stays; the next event tries again)
                    log::warn(format_args!("core tcp: accept: {e}"));
                    return;
                }
            }
        }
    }

    /// Queue `bytes` on connection `conn` while it is open, else on the connection to `dst`.
    fn send(&mut self, conn: u32, dst: SocketAddr, bytes: &[u8], now: Instant) {
        let slot = match self.live(conn).or_else(|| self.by_dst.get(&dst).copied()) {
            Some(s) => s,
            None => match self.connect(dst, now) {
                Some(s) => s,
                None => {
                    bump(&self.stats.out_lost);
                    return;
                }
            },
        };
        if !self.enqueue(slot, bytes, true, now) {
            bump(&self.stats.out_lost);
        }
    }

    /// Put `bytes` behind what waits on `slot` and write what the socket takes; a `message`
    /// is counted out once written whole (a pong is not). False: no room (`max_pending`).
    fn enqueue(&mut self, slot: usize, bytes: &[u8], message: bool, now: Instant) -> bool {
        let max = self.cfg.max_pending;
        let Some(c) = self.conns[slot].as_mut() else {
            return false;
        };
        if c.out.len() - c.sent + bytes.len() > max {
            return false;
        }
        if c.sent > 0 {
            // what was written goes: the buffer holds only what waits
            c.out.drain(..c.sent);
            for e in c.ends.iter_mut() {
                *e -= c.sent;
            }
            c.sent = 0;
        }
        c.out.extend_from_slice(bytes);
        if message {
            c.ends.push_back(c.out.len());
        }
        if c.connecting.is_none() {
            self.flush(slot, now);
        }
        true
    }

    /// Open a connection to `dst` (non-blocking: it is writable once connected).
    fn connect(&mut self, dst: SocketAddr, now: Instant) -> Option<usize> {
        if self.free.is_empty() {
            return None;
        }
        let stream = match connect_from(self.cfg.listen.ip(), dst) {
            Ok(s) => s,
            Err(e) => {
                bump(&self.stats.connect_failed);
                log::warn(format_args!("core tcp: connect to {dst}: {e}"));
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let slot = self.install(stream, dst, true, now)?;
        self.by_dst.insert(dst, slot);
        bump(&self.stats.opened);
        Some(slot)
    }

    fn writable(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        if c.connecting.is_some() {
            // RFC-free detail of non-blocking connect: writable means done; an error or no
            // peer address means it failed
            let failed = matches!(c.stream.take_error(), Ok(Some(_)) | Err(_))
                || c.stream.peer_addr().is_err();
            if failed {
                bump(&self.stats.connect_failed);
                log::warn(format_args!("core tcp: connect to {} failed", c.peer));
                self.close(slot);
                return;
            }
            c.connecting = None;
        }
        self.flush(slot, now);
    }

    /// Write what waits on `slot` until the socket would block.
    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns[slot].as_mut() else {
            return;
        };
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.sent += n;
                    c.last = now;
                    while c.ends.front().is_some_and(|&e| e <= c.sent) {
                        c.ends.pop_front();
                        bump(&self.stats.messages_out);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(slot);
                    return;
                }
            }
        }
        if c.sent == c.out.len() {
            c.out.clear();
            c.sent = 0;
            c.ends.clear();
        }
    }

    fn readable(&mut self, slot: usize, now: Instant) {
        let mut read = 0;
        let workers = self.core_in.len().max(1);
        let mut pong = false;
        loop {
            let Some(c) = self.conns[slot].as_mut() else {
                return;
            };
            let got = {
                let spare = c.framer.spare();
                if spare.is_empty() {
                    // full and no frame in it: the framer has reported TooLarge below
                    Ok(0)
                } else {
                    c.stream.read(spare)
                }
            };
            let n = match got {
                Ok(0) => {
                    self.close(slot);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(slot);
                    return;
                }
            };
            c.framer.commit(n);
            c.last = now;
            read += n;
            let q = &self.core_in[(slot % workers).min(self.core_in.len().saturating_sub(1))];
            let local = self.cfg.listen;
            loop {
                match c.framer.next_frame() {
                    Ok(Some(Frame::Message(msg))) => {
                        let d = Datagram {
                            side: Side::Core,
                            protection: Protection::CoreStream { conn: c.id },
                            src: c.peer,
                            dst: local,
                            payload: msg,
                        };
                        let large = self.large.as_ref().filter(|_| {
                            msg.len() > crate::dataplane::MSG_MAX && msg.starts_with(b"NOTIFY ")
                        });
                        let queued = match large {
                            Some(l) => l.push(d.with_payload(msg.to_vec())),
                            None => q.push(d).is_ok(),
                        };
                        if queued {
                            bump(&self.stats.messages_in);
                        } else {
                            bump(&self.stats.in_dropped);
                        }
                    }
                    Ok(Some(Frame::Ping)) => {
                        pong = true;
                        bump(&self.stats.pings);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        bump(&self.stats.framing_errors);
                        log::warn(format_args!("core tcp: {}: {e}: connection closed", c.peer));
                        self.close(slot);
                        return;
                    }
                }
            }
            if read >= READ_BUDGET {
                // (edge-triggered: come back for the rest at the next pass)
                let _ = self.poll.registry().reregister(
                    &mut c.stream,
                    Token(FIRST + slot),
                    Interest::READABLE | Interest::WRITABLE,
                );
                break;
            }
        }
        if pong {
            // RFC 5626 §4.4.1: a double CRLF gets a single CRLF back
            let _ = self.enqueue(slot, b"\r\n", false, now);
        }
    }

    /// Connect and idle timeouts.
    fn sweep(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                continue;
            };
            if c.connecting
                .is_some_and(|t| now.duration_since(t) > self.cfg.connect_timeout)
            {
                bump(&self.stats.connect_failed);
                log::warn(format_args!("core tcp: connect to {} timed out", c.peer));
                self.close(slot);
            } else if c.sent == c.out.len() && now.duration_since(c.last) > self.cfg.idle_timeout {
                bump(&self.stats.idle_closed);
                self.close(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(mut c) = self.conns[slot].take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        if c.ours && self.by_dst.get(&c.peer) == Some(&slot) {
            self.by_dst.remove(&c.peer);
        }
        self.stats
            .out_lost
            .fetch_add(c.ends.len() as u64, Ordering::Relaxed);
        bump(&self.stats.closed);
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    const REQ: &[u8] = b"OPTIONS sip:10.0.1.10 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\nCall-ID: a\r\nCSeq: 1 OPTIONS\r\nContent-Length: 2\r\n\r\nhi";

    /// A core TCP on a loopback port of its own, with one worker queue.
    fn start() -> (CoreTcp, Arc<MsgQueue>, Arc<MsgQueue>, SocketAddr) {
        let core_in = MsgQueue::new(16, None);
        let cfg = CoreTcpConfig {
            max_connections: 4,
            max_message: 4096,
            ..CoreTcpConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let (t, out) = CoreTcp::bind(cfg, vec![core_in.clone()], 16).unwrap();
        let at = t.local_addr().unwrap();
        (t, core_in, out, at)
    }

    /// Passes of `t` until `done` holds (at most 2 s).
    fn spin(t: &mut CoreTcp, mut done: impl FnMut(&mut CoreTcp) -> bool) {
        let mut events = Events::with_capacity(64);
        let until = Instant::now() + Duration::from_secs(2);
        while !done(t) {
            assert!(Instant::now() < until, "timed out");
            let _ = t.poll.poll(&mut events, Some(Duration::from_millis(5)));
            t.pass(&events);
        }
    }

    fn read_some(s: &mut StdStream, n: usize) -> Vec<u8> {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = vec![0u8; n];
        s.read_exact(&mut got).unwrap();
        got
    }

    #[test]
    fn messages_from_the_core_are_framed_and_answers_go_back_on_their_connection() {
        let (mut t, core_in, out, at) = start();
        let mut peer = StdStream::connect(at).unwrap();
        // one message in two writes, cut in its headers, then a keep-alive ping
        peer.write_all(&REQ[..20]).unwrap();
        spin(&mut t, |t| t.stats.accepted.load(Ordering::Relaxed) == 1);
        peer.write_all(&REQ[20..]).unwrap();
        peer.write_all(b"\r\n\r\n").unwrap();
        let mut got = None;
        spin(&mut t, |_| {
            got = got.take().or_else(|| core_in.pop());
            got.is_some()
        });
        let m = got.unwrap();
        assert_eq!(m.bytes(), REQ);
        assert_eq!(m.src, peer.local_addr().unwrap());
        let Protection::CoreStream { conn } = m.protection else {
            panic!("{:?}", m.protection)
        };
        assert_ne!(conn, NO_CONN);
        core_in.recycle(m);
        // the pong (RFC 5626 §4.4.1), then our answer on the same connection
        assert_eq!(read_some(&mut peer, 2), b"\r\n");
        let answer = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        let d = Datagram {
            side: Side::Core,
            protection: Protection::CoreStream { conn },
            src: at,
            dst: "127.0.0.1:9".parse().unwrap(),
            payload: &answer[..],
        };
        out.push(d).unwrap();
        spin(&mut t, |t| {
            t.stats.messages_out.load(Ordering::Relaxed) == 1
        });
        assert_eq!(read_some(&mut peer, answer.len()), answer);
        let s = t.stats.snapshot();
        assert_eq!((s.messages_in, s.pings, s.opened), (1, 1, 0));
    }

    /// A NOTIFY too large for a worker's queue slot goes to the registration thread's queue
    /// whole (the reg event's reginfo can pass 4 KB); another message that large is lost,
    /// counted; a small NOTIFY goes to the workers as before.
    #[test]
    fn a_large_notify_goes_to_the_registration_thread() {
        let core_in = MsgQueue::new(16, None);
        let cfg = CoreTcpConfig {
            max_connections: 4,
            ..CoreTcpConfig::new("127.0.0.1:0".parse().unwrap())
        };
        let (mut t, _out) = CoreTcp::bind(cfg, vec![core_in.clone()], 16).unwrap();
        let punt = MsgQueue::new(4, None);
        let large = LargeToRegistrar::new(4, punt);
        t.set_large(large.clone());
        let at = t.local_addr().unwrap();
        let mut peer = StdStream::connect(at).unwrap();
        let body = "x".repeat(6000);
        let msg = |method: &str, body: &str| {
            format!(
                "{method} sip:10.0.1.10:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKl\r\nCall-ID: l\r\nCSeq: 1 {method}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        for m in [
            msg("NOTIFY", &body),
            msg("MESSAGE", &body),
            msg("NOTIFY", "hi"),
        ] {
            peer.write_all(m.as_bytes()).unwrap();
        }
        let mut got = None;
        spin(&mut t, |t| {
            got = got.take().or_else(|| large.pop());
            got.is_some() && t.stats.snapshot().messages_in + t.stats.snapshot().in_dropped == 3
        });
        let big = got.unwrap();
        assert_eq!(big.payload, msg("NOTIFY", &body).into_bytes());
        assert_eq!(big.src, peer.local_addr().unwrap());
        assert!(matches!(big.protection, Protection::CoreStream { .. }));
        let small = core_in.pop().expect("the small NOTIFY, to a worker");
        assert_eq!(small.bytes(), msg("NOTIFY", "hi").as_bytes());
        let s = t.stats.snapshot();
        assert_eq!((s.messages_in, s.in_dropped), (2, 1));
    }

    #[test]
    fn a_message_without_content_length_closes_the_connection() {
        let (mut t, core_in, _out, at) = start();
        let mut peer = StdStream::connect(at).unwrap();
        peer.write_all(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n")
            .unwrap();
        spin(&mut t, |t| {
            t.stats.framing_errors.load(Ordering::Relaxed) == 1
        });
        assert!(core_in.pop().is_none());
        // the peer sees the close
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 16];
        assert!(matches!(peer.read(&mut b), Ok(0) | Err(_)));
        assert_eq!(t.stats.snapshot().closed, 1);
    }

    #[test]
    fn requests_open_one_connection_per_next_hop_and_reuse_it() {
        let (mut t, _core_in, out, _at) = start();
        let hop = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dst = hop.local_addr().unwrap();
        for _ in 0..2 {
            let d = Datagram {
                side: Side::Core,
                protection: Protection::CoreStream { conn: NO_CONN },
                src: dst,
                dst,
                payload: REQ,
            };
            out.push(d).unwrap();
        }
        spin(&mut t, |t| {
            t.stats.messages_out.load(Ordering::Relaxed) == 2
        });
        let (mut s, _) = hop.accept().unwrap();
        assert_eq!(read_some(&mut s, 2 * REQ.len()), [REQ, REQ].concat());
        assert_eq!(t.stats.snapshot().opened, 1, "one connection, reused");
    }

    #[test]
    fn a_next_hop_that_refuses_loses_its_messages_counted() {
        let (mut t, _core_in, out, _at) = start();
        // a port nobody listens on
        let dst = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let d = Datagram {
            side: Side::Core,
            protection: Protection::CoreStream { conn: NO_CONN },
            src: dst,
            dst,
            payload: REQ,
        };
        out.push(d).unwrap();
        spin(&mut t, |t| t.stats.out_lost.load(Ordering::Relaxed) == 1);
        let s = t.stats.snapshot();
        assert_eq!((s.connect_failed, s.messages_out), (1, 0));
    }

    #[test]
    fn connections_past_the_limit_are_refused() {
        let (mut t, _core_in, _out, at) = start();
        let peers: Vec<StdStream> = (0..6).map(|_| StdStream::connect(at).unwrap()).collect();
        spin(&mut t, |t| {
            let s = t.stats.snapshot();
            s.accepted + s.refused == 6
        });
        let s = t.stats.snapshot();
        assert_eq!((s.accepted, s.refused), (4, 2));
        drop(peers);
    }
}
