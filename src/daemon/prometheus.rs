//! The Prometheus endpoint's HTTP loop: one connection at a time from a thread of its own.
//!
//! Owns: accepting scrapes and bounding what each may cost. A scraper is not trusted to behave:
//! the request is read for at most [`READ_TIMEOUT`] and [`MAX_REQUEST`] bytes, and the response
//! is written within [`WRITE_TIMEOUT`] in all (not per `write`, so a client that reads a byte
//! at a time cannot hold the thread either). A client that sends nothing, never reads, or
//! floods the request is cut off, and the next client is served.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;

use super::metrics::{OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE, render};

/// Longest wait for the request head (`GET /metrics ... \r\n\r\n`).
pub const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest time spent writing one response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head read; more is refused with 431.
pub const MAX_REQUEST: usize = 4096;

/// `registry` on `GET /metrics` (`daemon::metrics`), one connection at a time, from a thread of
/// its own ([`serve`] bounds what each client may cost): OpenMetrics text to a scraper whose
/// `Accept` asks for it (Prometheus does), else the Prometheus text format 0.0.4.
pub(super) fn spawn(
    addr: SocketAddr,
    registry: Registry,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            serve(listener, &stop, |openmetrics| {
                let ct = if openmetrics {
                    OPENMETRICS_CONTENT_TYPE
                } else {
                    TEXT_CONTENT_TYPE
                };
                (ct, render(&registry, openmetrics))
            })
        })?;
    Ok(())
}

/// Whether a request head's `Accept` names OpenMetrics text (RFC 9110 §12.5.1; what
/// Prometheus sends: `application/openmetrics-text;version=1.0.0,...;q=0.5,...`). A media type
/// with `q=0` is refused, not asked for.
pub fn wants_openmetrics(head: &[u8]) -> bool {
    let Ok(head) = std::str::from_utf8(head) else {
        return false;
    };
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .flat_map(|(_, v)| v.split(','))
        .any(|m| {
            let mut parts = m.split(';').map(str::trim);
            let ty = parts.next().unwrap_or("");
            ty.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

/// Serve `body(openmetrics)` (its Content-Type and text) to every client of `listener` (made
/// non-blocking here) until `stop`; `openmetrics`: [`wants_openmetrics`] of the request.
pub fn serve(
    listener: TcpListener,
    stop: &AtomicBool,
    body: impl Fn(bool) -> (&'static str, String),
) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((s, _)) => serve_one(s, &body),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn serve_one(mut s: TcpStream, body: &impl Fn(bool) -> (&'static str, String)) {
    // The accepted socket may inherit non-blocking mode on some systems: the timeouts below
    // need a blocking one.
    if s.set_nonblocking(false).is_err() {
        return;
    }
    let mut req = [0u8; MAX_REQUEST];
    let Some((complete, n)) = read_head(&mut s, &mut req) else {
        return;
    };
    let resp = if complete {
        let (ct, b) = body(wants_openmetrics(&req[..n]));
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
    } else {
        // RFC 6585 §5: request header fields too large.
        "HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    write_within(&mut s, resp.as_bytes(), Instant::now() + WRITE_TIMEOUT);
}

/// Read the request head into `buf` within [`READ_TIMEOUT`], with the bytes read. `true`: the
/// head ended (blank line) or the client half-closed after sending something; `false`: `buf`
/// filled with no end in sight; `None`: nothing usable before the deadline.
fn read_head(s: &mut TcpStream, buf: &mut [u8]) -> Option<(bool, usize)> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut n = 0;
    loop {
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some((true, n));
        }
        if n == buf.len() {
            return Some((false, n));
        }
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return None;
        }
        match s.read(&mut buf[n..]) {
            Ok(0) => return (n > 0).then_some((true, n)),
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Write `data` unless `deadline` passes first (then the connection is dropped).
fn write_within(s: &mut TcpStream, data: &[u8], deadline: Instant) {
    let mut off = 0;
    while off < data.len() {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        if left.is_zero() || s.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match s.write(&data[off..]) {
            Ok(0) => return,
            Ok(k) => off += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    /// A body far bigger than the socket buffers of both ends, so a client that never reads
    /// fills them and the server's `write` would wait for it.
    fn big_body() -> String {
        "pcscf_test_total{worker=\"0\"} 1\n".repeat(1 << 20)
    }

    fn start(body: fn() -> String) -> (SocketAddr, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let h = std::thread::spawn(move || serve(l, &st, move |_| ("text/plain", body())));
        (addr, stop, h)
    }

    /// A client with a small receive buffer (set before connecting, so the window stays small).
    fn small_client(addr: SocketAddr) -> TcpStream {
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        // SAFETY: a fresh socket we own; wrapped below so it is closed on drop.
        let s: TcpStream = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        let v: libc::c_int = 4096;
        // SAFETY: setsockopt with an int of its size on our socket.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        let SocketAddr::V4(a) = addr else { panic!() };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a valid sockaddr_in of its size.
        let r = unsafe {
            libc::connect(
                s.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(r, 0);
        s
    }

    /// Scrape once; the whole response within `bound`.
    fn scrape(addr: SocketAddr, bound: Duration) -> Result<Vec<u8>, String> {
        let t = Instant::now();
        let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while t.elapsed() < bound {
            match c.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(_) => {}
            }
        }
        Err(format!(
            "no complete response in {bound:?} ({} bytes)",
            out.len()
        ))
    }

    #[test]
    fn a_client_that_never_reads_does_not_block_the_next() {
        let (addr, stop, h) = start(big_body);
        // Sends its request, then never reads: the response cannot be written in full.
        let mut stuck = small_client(addr);
        stuck.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // One that connects and never sends anything.
        let _silent = TcpStream::connect(addr).unwrap();
        let bound = WRITE_TIMEOUT + READ_TIMEOUT + Duration::from_secs(5);
        let r = scrape(addr, bound);
        stop.store(true, Ordering::Relaxed);
        drop(stuck);
        let r = r.unwrap();
        assert!(r.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert!(r.len() > big_body().len());
        h.join().unwrap();
    }

    #[test]
    fn openmetrics_is_served_to_whom_asks_for_it() {
        // what Prometheus 2.x/3.x sends
        let prom = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2\r\n\r\n";
        assert!(wants_openmetrics(prom));
        assert!(!wants_openmetrics(b"GET /metrics HTTP/1.0\r\n\r\n"));
        assert!(!wants_openmetrics(b"GET / HTTP/1.0\r\naccept: */*\r\n\r\n"));
        assert!(!wants_openmetrics(
            b"GET / HTTP/1.0\r\nAccept: application/openmetrics-text; q=0\r\n\r\n"
        ));
        assert!(wants_openmetrics(
            b"GET / HTTP/1.0\r\naccept: Application/OpenMetrics-Text\r\n\r\n"
        ));
    }

    #[test]
    fn an_oversized_request_is_refused() {
        let (addr, stop, h) = start(|| "x 1\n".into());
        let mut c = TcpStream::connect(addr).unwrap();
        let mut head = b"GET /metrics HTTP/1.0\r\nX: ".to_vec();
        // exactly the cap, no blank line: read in full, so the close is orderly
        head.resize(MAX_REQUEST, b'a');
        let _ = c.write_all(&head);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        assert!(out.starts_with(b"HTTP/1.0 431"), "{out:?}");
        let r = scrape(addr, Duration::from_secs(5)).unwrap();
        assert!(r.ends_with(b"x 1\n"));
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
