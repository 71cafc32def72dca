//! The control socket's I/O: `pcscf ctl`'s requests, served on the registration thread (the
//! registrar's single owner) between two passes of its loop. The grammar and the replies are
//! `crate::control::ctl`'s (sans-IO); this module carries the bytes and bounds what a client
//! may cost.
//!
//! Owns: the Unix socket at `control.socket` (its directory made 0700 when missing, refused when
//! someone else could write to it; the socket 0600; a stale one from a killed run replaced, a
//! live one left to the process serving it; removed at the stop when it is still ours), the
//! peer check (SO_PEERCRED: root or our own user, on top of the file's mode), and the
//! connections. Nothing here blocks: the listener and every connection are non-blocking on the
//! registration thread's mio poll; a connection reads one line of at most
//! [`ctl::MAX_REQUEST`] bytes within [`Limits::read_timeout`] and has its reply written within
//! [`Limits::write_timeout`], or it is dropped; at most [`Limits::max_connections`] are open
//! (one more is told `busy` and closed), and one pass answers at most [`REQUESTS_PER_PASS`]
//! requests (the rest wait for the next pass).

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};

use crate::config::{Config, LogLevel};
use crate::control::ctl::{self, Host, Runtime, WorkerRuntime};
use crate::control::log;
use crate::control::registrar::Registrar;
use crate::dataplane::SharedStats;

use super::core_tcp::CoreTcpStats;

/// The listener's token on the registration thread's poll; connection `i` has the next ones
/// (far above the loop's own tokens).
const LISTENER: mio::Token = mio::Token(1 << 20);
/// Requests answered in one pass of the loop at most.
pub const REQUESTS_PER_PASS: usize = 4;
/// Connections accepted in one pass at most.
const ACCEPTS_PER_PASS: usize = 16;

/// What one client may cost.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From the accept to the end of the request line.
    pub read_timeout: Duration,
    /// From the request to the last byte of the reply written.
    pub write_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Who may talk to us, by the peer's user id.
    pub allow: fn(u32) -> bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(2),
            max_connections: 8,
            allow: root_or_us,
        }
    }
}

/// Root, or the user this process runs as.
fn root_or_us(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// What the control socket counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtlStats {
    pub accepted: u64,
    pub requests: u64,
    /// Peers that are neither root nor our user.
    pub refused_peer: u64,
    /// Connections beyond the limit.
    pub refused_busy: u64,
    /// Connections dropped for a request or a reply that took too long.
    pub timed_out: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Reading the request line.
    Reading,
    /// A whole line is in `buf` (up to its end), waiting for this pass's budget.
    Ready(usize),
    /// Writing `out`.
    Writing,
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    deadline: Instant,
    state: State,
    /// The poll said it may read or write (edge-triggered: until WouldBlock).
    io_ready: bool,
}

/// The control socket (module doc).
pub struct CtlServer {
    path: PathBuf,
    listener: UnixListener,
    /// The poll's registry, for the connections.
    registry: mio::Registry,
    /// The socket file we made (device, inode): removed at the end only while it is ours.
    file: (u64, u64),
    conns: Vec<Option<Conn>>,
    limits: Limits,
    /// The last accept stopped at its budget: accept again without a new event.
    accept_more: bool,
    pub stats: CtlStats,
}

impl std::fmt::Debug for CtlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtlServer")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn err(kind: ErrorKind, msg: String) -> std::io::Error {
    std::io::Error::new(kind, msg)
}

/// The socket's directory: created 0700 when missing; else a real directory (no symbolic link)
/// of root or ours that no one else may write to, where nobody else can plant or swap the
/// socket file.
fn check_dir(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| err(e.kind(), format!("creating {}: {e}", dir.display())))?;
    }
    let m = std::fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(err(
            ErrorKind::PermissionDenied,
            format!("{} is not a directory (a symbolic link?)", dir.display()),
        ));
    }
    if !root_or_us(m.uid()) || m.mode() & 0o022 != 0 {
        return Err(err(
            ErrorKind::PermissionDenied,
            format!(
                "{} (owner {}, mode {:o}) may be written by others: the control socket needs a \
                 directory of its own (one that does not exist yet is made 0700)",
                dir.display(),
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

impl CtlServer {
    /// Make the socket at `path` (module doc) and register it on `registry`.
    /// [`ErrorKind::AddrInUse`]: another process serves that path.
    pub fn bind(path: &Path, registry: &mio::Registry) -> std::io::Result<CtlServer> {
        CtlServer::bind_with(path, registry, Limits::default())
    }

    pub fn bind_with(
        path: &Path,
        registry: &mio::Registry,
        limits: Limits,
    ) -> std::io::Result<CtlServer> {
        let dir = path
            .parent()
            .ok_or_else(|| err(ErrorKind::InvalidInput, "no directory".into()))?;
        check_dir(dir)?;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket: not removing it",
                        path.display()
                    ),
                ));
            }
            // a live one is another process's; a dead one is left by a killed run
            // (non-blocking: a live listener with a full backlog answers WouldBlock, and
            // the start never waits on it)
            let live = match mio::net::UnixStream::connect(path) {
                Ok(_) => true,
                Err(e) => e.kind() == ErrorKind::WouldBlock,
            };
            if live {
                return Err(err(
                    ErrorKind::AddrInUse,
                    format!("{} is served by another process", path.display()),
                ));
            }
            let _ = std::fs::remove_file(path);
        }
        let mut listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let m = std::fs::symlink_metadata(path)?;
        registry.register(&mut listener, LISTENER, mio::Interest::READABLE)?;
        Ok(CtlServer {
            path: path.to_path_buf(),
            listener,
            registry: registry.try_clone()?,
            file: (m.dev(), m.ino()),
            conns: (0..limits.max_connections).map(|_| None).collect(),
            limits,
            accept_more: false,
            stats: CtlStats::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// One pass: accept, read, answer (each whole request line through `handle`, which returns
    /// the reply's bytes), write, and drop what is late. True: more is waiting than this pass
    /// took (poll again without sleeping).
    pub fn pass(
        &mut self,
        events: &mio::Events,
        now: Instant,
        mut handle: impl FnMut(&[u8]) -> Vec<u8>,
    ) -> bool {
        let base = LISTENER.0 + 1;
        let mut listen = std::mem::take(&mut self.accept_more);
        for e in events.iter() {
            let t = e.token().0;
            if t == LISTENER.0 {
                listen = true;
            } else if let Some(Some(c)) = t.checked_sub(base).and_then(|i| self.conns.get_mut(i)) {
                c.io_ready = true;
            }
        }
        let mut more = false;
        if listen {
            more = self.accept(now);
        }
        let mut budget = REQUESTS_PER_PASS;
        let mut waiting = false;
        for slot in &mut self.conns {
            let Some(c) = slot.as_mut() else {
                continue;
            };
            let mut keep = true;
            if std::mem::take(&mut c.io_ready) {
                keep = match c.state {
                    State::Reading => c.read(),
                    State::Writing => c.write(),
                    State::Ready(_) => true,
                };
            }
            if keep && let State::Ready(len) = c.state {
                if budget == 0 {
                    waiting = true;
                } else {
                    budget -= 1;
                    self.stats.requests += 1;
                    c.out = handle(&c.buf[..len]);
                    c.buf = Vec::new();
                    c.state = State::Writing;
                    c.deadline = now + self.limits.write_timeout;
                    keep = c.write();
                }
            }
            if keep && now >= c.deadline {
                self.stats.timed_out += 1;
                keep = false;
            }
            if !keep {
                *slot = None; // closed on drop (mio deregisters a closed fd)
            }
        }
        waiting || more
    }

    /// Accept what waits, up to the budget. True: the budget ran out (more may wait).
    fn accept(&mut self, now: Instant) -> bool {
        for _ in 0..ACCEPTS_PER_PASS {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // (out of descriptors, say: try again on the next pass, without hurrying it)
                Err(_) => {
                    self.accept_more = true;
                    return false;
                }
            };
            self.stats.accepted += 1;
            if !peer_uid(&stream).is_some_and(self.limits.allow) {
                self.stats.refused_peer += 1;
                refuse(&mut stream, b"error\npermission denied\n");
                continue;
            }
            let Some(i) = self.conns.iter().position(Option::is_none) else {
                self.stats.refused_busy += 1;
                refuse(&mut stream, b"error\nbusy: too many control connections\n");
                continue;
            };
            let token = mio::Token(LISTENER.0 + 1 + i);
            if self
                .registry
                .register(
                    &mut stream,
                    token,
                    mio::Interest::READABLE | mio::Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            self.conns[i] = Some(Conn {
                stream,
                buf: Vec::new(),
                out: Vec::new(),
                sent: 0,
                deadline: now + self.limits.read_timeout,
                state: State::Reading,
                // it may have written before we accepted: read at once
                io_ready: true,
            });
        }
        self.accept_more = true;
        true
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        // only the file we made: not one another process put there since
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Conn {
    /// Read until the line ends, the bound is passed, the peer has nothing more now, or closes.
    /// False: drop the connection.
    fn read(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // the peer closed its side: what came is the request, if anything
                    if self.buf.is_empty() {
                        return false;
                    }
                    self.state = State::Ready(self.buf.len());
                    return true;
                }
                Ok(n) => {
                    let start = self.buf.len();
                    self.buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
                        let mut end = start + i;
                        if end > 0 && self.buf[end - 1] == b'\r' {
                            end -= 1;
                        }
                        self.state = State::Ready(end);
                        return true;
                    }
                    if self.buf.len() > ctl::MAX_REQUEST {
                        // too long: answered as such (ctl::parse refuses it), nothing more read
                        self.state = State::Ready(self.buf.len());
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Write what the socket takes now. False: done (or failed): drop the connection.
    fn write(&mut self) -> bool {
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return false,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        false
    }
}

/// Say why and close, without waiting: what the client sent already is read first (a Unix
/// socket closed with unread data resets the connection, and the client would lose the answer).
fn refuse(stream: &mut UnixStream, why: &[u8]) {
    let mut sink = [0u8; 1024];
    for _ in 0..4 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    let _ = stream.write(why);
}

/// The peer's user id (SO_PEERCRED).
fn peer_uid(s: &UnixStream) -> Option<u32> {
    // SAFETY: an all-zero ucred is valid; getsockopt writes at most `len` bytes into it.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor, and a buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == size_of::<libc::ucred>()).then_some(cred.uid)
}

/// The daemon as `pcscf ctl`'s commands see it ([`Host`]): the configuration, the workers'
/// published counters, the core-side TCP thread's, the log level.
struct DaemonHost {
    cfg: Config,
    shared: Vec<Arc<SharedStats>>,
    core_tcp: Arc<CoreTcpStats>,
    started: Instant,
}

impl Host for DaemonHost {
    fn config(&self) -> &Config {
        &self.cfg
    }

    fn runtime(&self) -> Runtime {
        let workers = self
            .shared
            .iter()
            .zip(&self.cfg.dataplane.workers)
            .map(|(s, &core)| {
                // (a worker holding the histogram at this moment: no figure, no wait)
                let h = s.try_latency();
                WorkerRuntime {
                    core,
                    stats: s.snapshot(),
                    latency_ns: h
                        .filter(|h| !h.is_empty())
                        .map(|h| [h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()]),
                }
            })
            .collect();
        Runtime {
            uptime: self.started.elapsed(),
            workers,
            // (the control socket runs on the registration thread: this is its CPU)
            registration_cpu_s: super::report::thread_cpu_seconds(),
            sections: vec![("core_tcp", self.core_tcp.snapshot().fields().to_vec())],
        }
    }

    fn set_log_level(&mut self, level: LogLevel) {
        log::set_level(level);
    }

    fn log_level(&self) -> LogLevel {
        log::level()
    }
}

/// The control socket with what its commands need: what the registration thread's loop holds
/// (`registration::serve`).
pub(super) struct CtlShell {
    server: CtlServer,
    host: DaemonHost,
}

impl CtlShell {
    pub(super) fn new(
        server: CtlServer,
        cfg: &Config,
        (shared, core_tcp): (Vec<Arc<SharedStats>>, Arc<CoreTcpStats>),
        started: Instant,
    ) -> CtlShell {
        CtlShell {
            server,
            host: DaemonHost {
                cfg: cfg.clone(),
                shared,
                core_tcp,
                started,
            },
        }
    }

    /// One pass of the control socket ([`CtlServer::pass`]) answering with the registrar.
    pub(super) fn pass(
        &mut self,
        events: &mio::Events,
        registrar: &mut Registrar,
        now: Instant,
    ) -> bool {
        let host = &mut self.host;
        self.server.pass(events, now, |line| {
            let reply = ctl::answer(line, registrar, host, now);
            // what changes state is logged (who can talk to us is root or our user anyway)
            let text = String::from_utf8_lossy(line);
            let words: Vec<&str> = text
                .split_ascii_whitespace()
                .filter(|w| *w != "--json")
                .collect();
            if matches!(words.first(), Some(&"deregister") | Some(&"log")) {
                log::info(format_args!(
                    "pcscf ctl: {} -> {}",
                    ctl::printable(words.join(" ").as_bytes()),
                    if reply.ok { "ok" } else { "refused" }
                ));
            } else {
                log::debug(format_args!(
                    "pcscf ctl: {}",
                    ctl::printable(words.join(" ").as_bytes())
                ));
            }
            reply.to_wire()
        })
    }

    pub(super) fn stats(&self) -> CtlStats {
        self.server.stats
    }
}

/// Bind `cfg`'s control socket on `registry`. None (with a warning): another process serves
/// that path, so this run has no control socket; an error: the path is unsafe or unusable.
pub(super) fn bind(cfg: &Config, registry: &mio::Registry) -> Result<Option<CtlServer>, String> {
    let path = &cfg.control.socket;
    match CtlServer::bind(path, registry) {
        Ok(s) => {
            log::info(format_args!(
                "control socket {} (pcscf ctl)",
                path.display()
            ));
            Ok(Some(s))
        }
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            log::warn(format_args!(
                "control.socket {}: {e}; this run has no control socket (give it another \
                 control.socket for `pcscf ctl`)",
                path.display()
            ));
            Ok(None)
        }
        Err(e) => Err(format!("control.socket {}: {e}", path.display())),
    }
}

/// `pcscf ctl`'s side: send `line` to the socket at `path`, read the whole reply (at most
/// [`ctl::MAX_REPLY`] and a status line) within `timeout`.
pub fn request(path: &Path, line: &str, timeout: Duration) -> std::io::Result<ctl::Reply> {
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_write_timeout(Some(timeout))?;
    s.set_read_timeout(Some(timeout))?;
    // (a refusal may close the connection before the request is written: its answer is read)
    let sent = s.write_all(format!("{line}\n").as_bytes());
    let mut out = Vec::new();
    let read = (&mut s)
        .take((ctl::MAX_REPLY + 64) as u64)
        .read_to_end(&mut out);
    // a reset after the answer came (the daemon closed with our request unread) keeps it
    if out.is_empty() {
        sent?;
        read?;
    }
    ctl::from_wire(&out).ok_or_else(|| {
        err(
            ErrorKind::InvalidData,
            format!(
                "not a reply of pcscf: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(80)])
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream as StdStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread::JoinHandle;

    /// A fresh path in a directory that does not exist yet (bind makes it 0700).
    fn socket_path(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pcscf-ctl-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("ctl.sock")
    }

    fn quick(max_connections: usize) -> Limits {
        Limits {
            read_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(300),
            max_connections,
            allow: root_or_us,
        }
    }

    /// The sans-IO parse as the handler: `ok` and the line, or the refusal; `big` gets 1 MiB.
    fn handler(line: &[u8]) -> Vec<u8> {
        if line == b"big" {
            let mut v = b"ok\n".to_vec();
            v.resize(ctl::MAX_REPLY, b'x');
            return v;
        }
        match ctl::parse(line) {
            Ok(_) => [b"ok\n", line, b"\n"].concat(),
            Err(e) => format!("error\n{e}\n").into_bytes(),
        }
    }

    struct Running {
        stop: Arc<AtomicBool>,
        thread: JoinHandle<CtlStats>,
    }

    impl Running {
        fn end(self) -> CtlStats {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap()
        }
    }

    /// A server on a thread of its own, polling as the registration thread does.
    fn serve(path: &Path, limits: Limits) -> Running {
        let mut poll = mio::Poll::new().unwrap();
        let mut server = CtlServer::bind_with(path, poll.registry(), limits).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut events = mio::Events::with_capacity(64);
            while !st.load(Ordering::Relaxed) {
                let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
                server.pass(&events, Instant::now(), handler);
            }
            server.stats
        });
        Running { stop, thread }
    }

    fn ask(path: &Path, line: &str) -> ctl::Reply {
        request(path, line, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn a_request_is_answered_on_a_private_socket_removed_at_the_end() {
        let path = socket_path("ok");
        let s = serve(&path, quick(2));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let r = ask(&path, "show runtime");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.body, "show runtime\n");
        // a CRLF line end, and a request that ends with the client's close
        let mut c = StdStream::connect(&path).unwrap();
        c.write_all(b"show config").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "ok\nshow config\n");
        assert_eq!(ask(&path, "help\r").body, "help\n");
        let st = s.end();
        assert_eq!(st.requests, 3);
        assert!(!path.exists(), "the socket goes with the server");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_silent_client_holds_no_one_up_and_is_dropped() {
        let path = socket_path("silent");
        let s = serve(&path, quick(2));
        let mut silent = StdStream::connect(&path).unwrap();
        let t = Instant::now();
        assert!(ask(&path, "show dialogs").ok);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        // dropped after the read timeout: EOF
        silent
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(silent.read(&mut buf).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(2));
        let st = s.end();
        assert_eq!(st.timed_out, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn oversize_and_garbage_are_refused_and_the_next_is_served() {
        let path = socket_path("junk");
        let s = serve(&path, quick(2));
        let mut c = StdStream::connect(&path).unwrap();
        // more than the bound, no line end: refused once the bound is passed, not read on
        let _ = c.write_all(&[b'a'; 3 * ctl::MAX_REQUEST]);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(
            out.starts_with("error\nrequest longer than 4096 bytes"),
            "{out:?}"
        );
        let r = ask(&path, "\u{1b}[2J\u{0}");
        assert!(!r.ok && r.body.contains("not printable"), "{r:?}");
        let r = ask(&path, "reboot now");
        assert!(
            !r.ok && r.body.contains("unknown command \"reboot\""),
            "{r:?}"
        );
        assert!(ask(&path, "show runtime").ok);
        s.end();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn beyond_the_limit_a_client_is_told_busy() {
        let path = socket_path("busy");
        let s = serve(&path, quick(2));
        let _a = StdStream::connect(&path).unwrap();
        let _b = StdStream::connect(&path).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let r = ask(&path, "show runtime");
        assert!(!r.ok && r.body.starts_with("busy"), "{r:?}");
        // once the silent ones are dropped, served again
        std::thread::sleep(Duration::from_millis(400));
        assert!(ask(&path, "show runtime").ok);
        let st = s.end();
        assert_eq!((st.refused_busy, st.timed_out), (1, 2));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_peer_that_is_not_allowed_is_refused() {
        let path = socket_path("peer");
        let s = serve(
            &path,
            Limits {
                allow: |_| false,
                ..quick(2)
            },
        );
        let r = ask(&path, "show runtime");
        assert!(!r.ok && r.body.starts_with("permission denied"), "{r:?}");
        assert_eq!(s.end().refused_peer, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_client_that_never_reads_its_reply_is_dropped_in_time() {
        let path = socket_path("noread");
        let s = serve(&path, quick(2));
        let mut stuck = StdStream::connect(&path).unwrap();
        stuck.write_all(b"big\n").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        assert!(ask(&path, "show config").ok);
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(400));
        // what it reads now ends short of the whole reply: it was cut off
        stuck
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut got = Vec::new();
        let _ = stuck.read_to_end(&mut got);
        assert!(got.len() < ctl::MAX_REPLY, "{}", got.len());
        assert_eq!(s.end().timed_out, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn stale_sockets_are_replaced_live_ones_and_other_files_kept() {
        let path = socket_path("stale");
        let poll = mio::Poll::new().unwrap();
        // a socket left by a killed run: nobody listens
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let s = serve(&path, quick(2));
        // a live one: another server's, left alone
        let e = CtlServer::bind_with(&path, poll.registry(), quick(2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AddrInUse, "{e}");
        assert!(ask(&path, "help").ok);
        s.end();
        // a file that is not a socket is never removed
        std::fs::write(&path, "precious").unwrap();
        let e = CtlServer::bind_with(&path, poll.registry(), quick(2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
        // the server's drop removes only its own socket, not what replaced it
        std::fs::remove_file(&path).unwrap();
        let server = CtlServer::bind_with(&path, poll.registry(), quick(2)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(server);
        assert!(path.exists());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn a_directory_others_may_write_to_is_refused() {
        let path = socket_path("open");
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let poll = mio::Poll::new().unwrap();
        let e = CtlServer::bind_with(&path, poll.registry(), quick(2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(!path.exists());
        // nor through a symbolic link
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(dir, &link).unwrap();
        let e =
            CtlServer::bind_with(&link.join("ctl.sock"), poll.registry(), quick(2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(dir);
    }
}
