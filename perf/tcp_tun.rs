//! Issue 14's choice, measured: where the TCP inside the SAs is terminated. The same UE (our
//! smoltcp endpoint, the harness) sends SIP messages to a server that is either
//! - **the kernel**, through a TUN device (what a TUN design would do per segment: one write to
//!   hand over each decrypted segment, the kernel's TCP, a read on the socket, a read per
//!   segment the kernel sends back), or
//! - **our user-space endpoint** (`tcp::Endpoint` + `sip::Framer`, in memory, no syscall),
//!
//! and reports the server side's wall-clock time per message, side by side in one run (the UE's
//! own time is measured and taken out). ESP is left out of both: it costs the same either way
//! (`perf/tcp_loop.rs` has it). Needs root: it runs in a network namespace of its own
//! (`unshare(CLONE_NEWNET)`), where it makes the TUN device, and leaves nothing behind.
//!
//! sudo target/release/examples/tcp_tun [rounds=5]

use std::io::Read;
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use pcscf::sip::{Frame, Framer, Message};
use pcscf::tcp::{Conn, Endpoint, EndpointConfig, PortPairs, Segments};

#[path = "fixtures.rs"]
#[allow(dead_code)] // (the other tools' fixtures)
mod fixtures;

const SERVER: [u8; 4] = [10, 99, 0, 1];
const UE: [u8; 4] = [10, 99, 0, 2];
const MESSAGES: usize = 20_000;
const MAX_MESSAGE: usize = 16384;

fn message(n: usize, len: usize) -> Vec<u8> {
    fixtures::tcp_message(n, len, "10.99.0.2")
}

/// The port pairs, the UE's client port `uc` (a fresh one per run: the kernel may still hold
/// the last connection's 4-tuple).
fn ports(uc: u16) -> (PortPairs, PortPairs) {
    let (s, u): (IpAddr, IpAddr) = (SERVER.into(), UE.into());
    (
        PortPairs {
            local: s,
            remote: u,
            local_c: 5102,
            local_s: 5103,
            remote_c: uc,
            remote_s: 7006,
        },
        PortPairs {
            local: u,
            remote: s,
            local_c: uc,
            local_s: 7006,
            remote_c: 5102,
            remote_s: 5103,
        },
    )
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{args:?} failed");
}

/// A TUN device `pcscftun0` in this (private) namespace, up, with the server's address.
fn tun() -> OwnedFd {
    // SAFETY: plain syscalls on a path and an ifreq we own; the fd is checked before use.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_NONBLOCK) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is ours and valid.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"pcscftun0") {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF takes a pointer to an ifreq, which lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
    assert!(r == 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    sh(&["ip", "link", "set", "pcscftun0", "up"]);
    sh(&["ip", "addr", "add", "10.99.0.1/24", "dev", "pcscftun0"]);
    fd
}

/// The server: the kernel behind the TUN device, or our endpoint.
enum Server {
    Kernel {
        tun: OwnedFd,
        listener: TcpListener,
        conn: Option<TcpStream>,
        buf: Vec<u8>,
    },
    Ours(Box<Endpoint>),
}

/// The server's ns per message for `len`-byte messages.
fn run(server: &mut Server, len: usize, uc: u16) -> f64 {
    let (sp, up) = ports(uc);
    let t0 = Instant::now();
    let mut now = t0;
    let mut ue = Endpoint::new(2, up, EndpointConfig::default(), 0x77, now);
    let mut ue_out = Segments::with_limit(512);
    let mut out = Segments::with_limit(512);
    let mut framer = Framer::with_capacity(MAX_MESSAGE);
    let msgs: Vec<Vec<u8>> = (0..64).map(|n| message(n, len)).collect();
    let mut to_ue: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut to_ue_at: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pkt = vec![0u8; 65536];
    if let Server::Ours(ep) = server {
        **ep = Endpoint::new(1, sp, EndpointConfig::default(), 0x55, now);
    }
    let (mut sent, mut got, mut timed) = (0usize, 0usize, 0usize);
    let mut server_time = Duration::ZERO;
    let mut warm = 16u32;
    while got < MESSAGES {
        now = Instant::now();
        // the UE (harness)
        while sent < got + 8
            && ue
                .send(now, Conn::Opened, &msgs[sent % msgs.len()], &mut ue_out)
                .is_ok()
        {
            sent += 1;
        }
        if ue.poll_at(now).is_some_and(|t| t <= now) {
            ue.handle_timeout(now, &mut ue_out);
        }
        // the server (timed): take the UE's segments, frame what arrived, send its own
        let got0 = got;
        let t = Instant::now();
        match server {
            Server::Kernel {
                tun,
                listener,
                conn,
                buf,
            } => {
                for (p, _, _) in ue_out.iter() {
                    // SAFETY: writes p, a valid slice, to our fd.
                    let n = unsafe { libc::write(tun.as_raw_fd(), p.as_ptr().cast(), p.len()) };
                    assert_eq!(n as usize, p.len(), "tun write");
                }
                if conn.is_none()
                    && let Ok((s, _)) = listener.accept()
                {
                    s.set_nonblocking(true).unwrap();
                    s.set_nodelay(true).unwrap();
                    *conn = Some(s);
                }
                if let Some(c) = conn.as_mut() {
                    while let Ok(n) = c.read(buf)
                        && n > 0
                    {
                        let mut rest = &buf[..n];
                        while !rest.is_empty() {
                            let k = framer.push(rest);
                            rest = &rest[k..];
                            while let Ok(Some(f)) = framer.next_frame() {
                                if let Frame::Message(m) = f {
                                    assert!(Message::parse(m).is_ok());
                                    got += 1;
                                }
                            }
                        }
                    }
                }
                loop {
                    // SAFETY: reads into pkt, a buffer we own, at most its length.
                    let n =
                        unsafe { libc::read(tun.as_raw_fd(), pkt.as_mut_ptr().cast(), pkt.len()) };
                    if n <= 0 {
                        break;
                    }
                    let at = to_ue.len();
                    to_ue.extend_from_slice(&pkt[..n as usize]);
                    to_ue_at.push(at..to_ue.len());
                }
            }
            Server::Ours(ep) => {
                for (p, _, _) in ue_out.iter() {
                    let _ = ep.handle_segment(now, p, &mut out);
                }
                if ep.poll_at(now).is_some_and(|t| t <= now) {
                    ep.handle_timeout(now, &mut out);
                }
                loop {
                    let n = ep.recv(Conn::Accepted, |b| framer.push(b));
                    while let Ok(Some(f)) = framer.next_frame() {
                        if let Frame::Message(m) = f {
                            assert!(Message::parse(m).is_ok());
                            got += 1;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                for (p, _, _) in out.iter() {
                    let at = to_ue.len();
                    to_ue.extend_from_slice(p);
                    to_ue_at.push(at..to_ue.len());
                }
                out.clear();
            }
        }
        let dt = t.elapsed();
        if warm == 0 {
            server_time += dt;
            timed += got - got0;
        }
        warm = warm.saturating_sub(1);
        ue_out.clear();
        // the UE takes the server's segments (harness)
        for r in to_ue_at.drain(..) {
            let _ = ue.handle_segment(now, &to_ue[r], &mut ue_out);
        }
        to_ue.clear();
        assert!(t0.elapsed() < Duration::from_secs(120), "stalled at {got}");
    }
    if let Server::Kernel { conn, .. } = server {
        // the next run connects afresh from the same ports: let the kernel forget this one
        *conn = None;
    }
    server_time.as_nanos() as f64 / timed.max(1) as f64
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    // SAFETY: unshare has no memory effects; a namespace of our own for the TUN device.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "tcp_tun: needs root (unshare: {})",
            std::io::Error::last_os_error()
        );
        std::process::exit(2);
    }
    sh(&["ip", "link", "set", "lo", "up"]);
    let tun = tun();
    let listener = TcpListener::bind("10.99.0.1:5103").unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut kernel = Server::Kernel {
        tun,
        listener,
        conn: None,
        buf: vec![0u8; 65536],
    };
    let (sp, _) = ports(7000);
    let mut ours = Server::Ours(Box::new(Endpoint::new(
        1,
        sp,
        EndpointConfig::default(),
        1,
        Instant::now(),
    )));
    println!(
        "| message | kernel TCP via TUN, ns/msg | user-space (smoltcp) ns/msg | kernel / ours |"
    );
    println!("|---:|---:|---:|---:|");
    for len in [1000, 3000] {
        let (mut k, mut o) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            let uc = 7000 + 10 * r as u16 + (len / 1000) as u16;
            k.push(run(&mut kernel, len, uc));
            o.push(run(&mut ours, len, uc));
        }
        k.sort_by(f64::total_cmp);
        o.sort_by(f64::total_cmp);
        let (k, o) = (k[k.len() / 2], o[o.len() / 2]);
        println!("| {len} B | {k:.0} | {o:.0} | {:.2} |", k / o);
    }
}
