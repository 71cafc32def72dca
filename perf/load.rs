//! The load tool: blasts pre-built frames into a SIP relay running in a network namespace and
//! counts what comes out the other side, with latency percentiles.
//!
//! Three namespaces (`pcscf::lab::Lab`): the UE side, the relay, the core side. The relay
//! is `pcscf run` (any backend, 1..N workers) or Kamailio (`perf/kamailio/*.cfg`). Traffic:
//! - `esp`: protected ~1 KB MESSAGEs from up to 1M registered UEs. pcscf installs the UEs at start
//!   (`--bench-preload-ues`, a `bench-hooks` build) and writes which SPI and port each got; this
//!   tool builds the same SAs ([`pcscf::preload::BenchUe`]) and encrypts every frame before the
//!   clock starts. Each frame is sent once (ESP replay protection forbids resending).
//! - `message` / `register`: plain SIP over UDP to port 5060 (pcscf with `stateless_relay`, or
//!   Kamailio), one distinct Call-ID per frame.
//!
//! The sink in the core namespace reads the frame number from the Call-ID and takes the latency
//! against the send time (CLOCK_MONOTONIC is the same in every namespace). The relay's CPU time
//! over the run comes from /proc, so "messages per CPU-second" compares a busy-polling pcscf with
//! an event-driven Kamailio fairly.
//!
//! Prints one `result:` line of key=value pairs (perf/run parses it) and a readable summary.
//!
//! cargo build --release --features bench-hooks --bin pcscf --example load
//! sudo target/release/examples/load --traffic esp --ues 100000 --frames 1000000

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use pcscf::esp::{Frame, Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::preload::{Allocated, BenchUe};

const BATCH: usize = 64;
const STRIDE: usize = 1536;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Pcscf,
    KamailioStateless,
    KamailioTm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Traffic {
    Esp,
    Message,
    Register,
}

#[derive(Parser, Debug)]
#[command(about = "Blast pre-built SIP/ESP frames through pcscf or Kamailio in namespaces")]
struct Args {
    #[arg(long, value_enum, default_value = "pcscf")]
    target: Target,
    #[arg(long, value_enum, default_value = "esp")]
    traffic: Traffic,
    /// Registered UEs (esp): frames go round-robin over them.
    #[arg(long, default_value_t = 1000)]
    ues: u32,
    /// Frames to build and send (each once).
    #[arg(long, default_value_t = 500_000)]
    frames: usize,
    /// Offered packets per second; 0 = flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Frames per sendmmsg call (at most 64): small bursts for latency runs, so a message does
    /// not wait behind its burst-mates in the worker's batch.
    #[arg(long, default_value_t = 64)]
    burst: usize,
    /// Stop sending after this many seconds even if frames are left.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// pcscf workers (cores 0..N) or Kamailio UDP children.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// pcscf backend: xdp | afpacket | socket.
    #[arg(long, default_value = "xdp")]
    backend: String,
    /// XDP attach mode for the xdp backend: skb (generic) | drv (native). Several xdp workers
    /// need drv on veth: generic XDP sees every packet on queue 0.
    #[arg(long, default_value = "skb")]
    xdp_mode: String,
    /// ESP suite as alg/ealg.
    #[arg(long, default_value = "null/aes-gcm")]
    suite: String,
    /// Only install the UEs, report the memory they took, and stop.
    #[arg(long)]
    memory_only: bool,
    /// A label copied into the result line.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the latency distribution here as CSV (percentile, microseconds).
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn message(k: usize, ue: IpAddr, port: u16, pcscf: &str) -> Vec<u8> {
    let body = "x".repeat(560);
    format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/UDP {ue}:{port};branch=z9hG4bK{k:010}\r\nMax-Forwards: 70\r\nRoute: <sip:{pcscf};lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: ld-{k:010}@load\r\nCSeq: 1 MESSAGE\r\nP-Preferred-Identity: <sip:alice@ims.example.net>\r\nUser-Agent: pcscf-load\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn register(k: usize, ue: IpAddr) -> Vec<u8> {
    include_str!("../tests/data/ims/register1_v4.sip")
        .replace("a84b4c76e66710-1183462089", &format!("ld-{k:010}"))
        .replace("10.46.0.6", &ue.to_string())
        .into_bytes()
}

/// Frames laid out at a fixed stride: `buf[k*STRIDE..][..len[k]]`.
struct Frames {
    buf: Vec<u8>,
    len: Vec<u16>,
}

impl Frames {
    fn with_capacity(n: usize) -> Frames {
        Frames {
            buf: vec![0u8; n * STRIDE],
            len: Vec::with_capacity(n),
        }
    }
    fn push(&mut self, b: &[u8]) {
        let k = self.len.len();
        self.buf[k * STRIDE..k * STRIDE + b.len()].copy_from_slice(b);
        self.len.push(b.len() as u16);
    }
    fn get(&self, k: usize) -> &[u8] {
        &self.buf[k * STRIDE..k * STRIDE + self.len[k] as usize]
    }
}

/// ESP frames: whole IPv4 packets from UE `k % ues` over its SA1 to our port-s.
fn build_esp(a: &Args, lab: &Lab, map: &[Allocated]) -> Result<Frames, String> {
    let (alg, ealg) = a.suite.split_once('/').ok_or("--suite alg/ealg")?;
    let mut sas: Vec<Option<Sa>> = (0..map.len()).map(|_| None).collect();
    let mut out = Frames::with_capacity(a.frames);
    let mut scratch = vec![0u8; 4096];
    for k in 0..a.frames {
        let i = k % map.len();
        let m = &map[i];
        let ue = BenchUe::new(m.index);
        let sa = match &mut sas[i] {
            Some(s) => s,
            slot => slot.insert(
                Sa::from_aka(m.spi_ps, alg, ealg, &ue.ck, &ue.ik, SaOptions::default())
                    .map_err(|e| e.to_string())?,
            ),
        };
        let sip = message(
            k,
            ue.addr,
            ue.port_uc,
            &format!("{}:{}", lab.pcscf_ue_addr, m.port_ps),
        );
        let at = 256 + 28;
        scratch[at..at + sip.len()].copy_from_slice(&sip);
        let r = pcscf::wire::emit_datagram(
            &mut scratch,
            at..at + sip.len(),
            SocketAddr::new(ue.addr, ue.port_uc),
            SocketAddr::new(lab.pcscf_ue_addr, m.port_ps),
        )
        .ok()
        .ok_or("write_udp")?;
        let mut f = Frame::new(&mut scratch, r.start, r.end);
        sa.outbound(&mut f).map_err(|e| e.to_string())?;
        let (s, e) = (f.start, f.end);
        out.push(&scratch[s..e]);
    }
    Ok(out)
}

fn build_plain(a: &Args, lab: &Lab) -> Frames {
    let mut out = Frames::with_capacity(a.frames);
    for k in 0..a.frames {
        let m = match a.traffic {
            Traffic::Register => register(k, lab.ue_addr),
            _ => message(k, lab.ue_addr, 5060, &format!("{}:5060", lab.pcscf_ue_addr)),
        };
        out.push(&m);
    }
    out
}

/// Sends every frame once (sendmmsg, 64 per call), at `rate` per second or flat out; stamps
/// each frame's send time. `raw`: frames are whole IPv4 packets for an IPPROTO_RAW socket.
#[allow(clippy::too_many_arguments)]
fn blast(
    fd: i32,
    dst: SocketAddr,
    frames: &Frames,
    burst: usize,
    rate: u64,
    secs: f64,
    sent_at: &[AtomicU64],
    sent: &AtomicU64,
) {
    let SocketAddr::V4(d) = dst else { return };
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as u16;
    sin.sin_port = d.port().to_be();
    sin.sin_addr.s_addr = u32::from(*d.ip()).to_be();
    let n = frames.len.len();
    let start = Instant::now();
    let mut k = 0usize;
    let mut iov: Vec<libc::iovec> = vec![
        libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0
        };
        BATCH
    ];
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header that we fill below.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    while k < n && start.elapsed().as_secs_f64() < secs {
        if rate > 0 {
            let due = Duration::from_secs_f64(k as f64 / rate as f64);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        let m = burst.clamp(1, BATCH).min(n - k);
        for j in 0..m {
            let f = frames.get(k + j);
            iov[j].iov_base = f.as_ptr() as *mut libc::c_void;
            iov[j].iov_len = f.len();
            hdrs[j].msg_hdr.msg_iov = &mut iov[j];
            hdrs[j].msg_hdr.msg_iovlen = 1;
            hdrs[j].msg_hdr.msg_name = &mut sin as *mut _ as *mut libc::c_void;
            hdrs[j].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        let now = mono_ns();
        for s in &sent_at[k..k + m] {
            s.store(now, Ordering::Relaxed);
        }
        // SAFETY: hdrs[..m] point at iovecs into `frames` and at `sin`, alive for the call.
        let r = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), m as u32, 0) };
        if r > 0 {
            k += r as usize;
            sent.store(k as u64, Ordering::Relaxed);
        } else {
            std::thread::yield_now(); // ENOBUFS / EAGAIN: the veth queue is full
        }
    }
}

struct SinkResult {
    /// distinct frames received
    got: u64,
    /// frames received again, and datagrams that were not ours
    dups: u64,
    other: u64,
    last_ns: u64,
    hist: hdrhistogram::Histogram<u64>,
}

fn frame_no(p: &[u8]) -> Option<usize> {
    let at = memchr::memmem::find(p, b"Call-ID: ld-")? + 12;
    std::str::from_utf8(p.get(at..at + 10)?).ok()?.parse().ok()
}

fn sink(sock: &UdpSocket, stop: &AtomicBool, sent_at: &[AtomicU64], got: &AtomicU64) -> SinkResult {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // a deep receive buffer: the sink must not be where packets are lost
    let sz: libc::c_int = 256 << 20;
    // SAFETY: setsockopt with a c_int value of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &sz as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as in blast.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut seen = vec![false; sent_at.len()];
    let mut r = SinkResult {
        got: 0,
        dups: 0,
        other: 0,
        last_ns: 0,
        hist: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
    };
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: hdrs point at BATCH headers with iovecs into `bufs`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let now = mono_ns();
        r.last_ns = now;
        for (h, b) in hdrs.iter().zip(&bufs).take(n as usize) {
            let p = &b[..h.msg_len as usize];
            let Some(k) = frame_no(p).filter(|&k| k < sent_at.len()) else {
                r.other += 1;
                continue;
            };
            if std::mem::replace(&mut seen[k], true) {
                r.dups += 1; // e.g. Kamailio tm retransmitting to a silent core
                continue;
            }
            r.got += 1;
            let s = sent_at[k].load(Ordering::Relaxed);
            if s > 0 && now >= s {
                let _ = r.hist.record((now - s).max(1));
            }
        }
        got.store(r.got + r.dups + r.other, Ordering::Relaxed);
    }
    r
}

/// utime + stime (clock ticks) of every thread of `pids`.
fn cpu_ticks(pids: &[u32]) -> u64 {
    let mut t = 0;
    for pid in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for e in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("stat")) {
                // fields after the ")" of comm: state is 3rd; utime 14th, stime 15th overall
                if let Some(rest) = s.rsplit_once(')').map(|x| x.1) {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    let u: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
                    let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
                    t += u + st;
                }
            }
        }
    }
    t
}

fn pids_named(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&c).contains(needle)
            {
                v.push(pid);
            }
        }
    }
    v
}

fn start_pcscf(
    a: &Args,
    lab: &Lab,
    dir: &std::path::Path,
) -> Result<(Child, Vec<Allocated>, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let pcscf = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("exe path")?
        .join("pcscf");
    if !pcscf.exists() {
        return Err(format!(
            "{} missing: cargo build --release --features bench-hooks --bin pcscf",
            pcscf.display()
        ));
    }
    let workers: Vec<String> = (0..a.workers).map(|w| w.to_string()).collect();
    let max_sas = (2 * a.ues as usize + 4096).next_power_of_two();
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\nprotected_ports = \"5100-5199\"\nregister_burst_per_source = 10000000\nregister_rate_per_source = 10000000.0\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\n[ipsec]\nspi_range = \"4096-{}\"\n{}max_sas = {max_sas}\n[dataplane]\nbackend = \"{}\"\nxdp_mode = \"{}\"\nworkers = [{}]\nbatch = 64\nring_size = 2048\nframes = 8192\nstateless_relay = {}\n[log]\nlevel = \"info\"\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr,
        4096 + 4 * max_sas - 1,
        // plain REGISTERs offer what tests/data's UE offers: keep the default preference list
        if a.traffic == Traffic::Esp || a.memory_only {
            format!("algorithms = [\"{}\"]\n", a.suite)
        } else {
            String::new()
        },
        a.backend,
        a.xdp_mode,
        workers.join(", "),
        a.traffic != Traffic::Esp
    );
    let path = dir.join("pcscf.toml");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let map_path = dir.join("preload.map");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.pcscf])
        .arg(&pcscf)
        .args(["run", "--config"])
        .arg(&path);
    if a.traffic != Traffic::Esp {
        // the config above sets stateless_relay, which pcscf run refuses without this
        cmd.arg("--allow-stateless-relay");
    }
    if a.traffic == Traffic::Esp || a.memory_only {
        cmd.args([
            "--bench-preload-ues",
            &a.ues.to_string(),
            "--bench-preload-map",
        ])
        .arg(&map_path);
    }
    // stderr to a file, read after the run: a pipe nobody reads during the run can fill and
    // block the relay's logging thread
    let errf = std::fs::File::create(dir.join("relay.err")).map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(errf)
        .spawn()
        .map_err(|e| format!("start pcscf: {e}"))?;
    let mut line = String::new();
    if a.traffic == Traffic::Esp || a.memory_only {
        use std::io::BufRead;
        let out = child.stdout.take().ok_or("stdout")?;
        let mut r = std::io::BufReader::new(out);
        loop {
            line.clear();
            if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "pcscf exited: {}",
                    std::fs::read_to_string(dir.join("relay.err")).unwrap_or_default()
                ));
            }
            if line.starts_with("bench-preload:") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let map = if a.traffic == Traffic::Esp {
        std::fs::read_to_string(&map_path)
            .map_err(|e| e.to_string())?
            .lines()
            .filter_map(Allocated::parse)
            .collect()
    } else {
        Vec::new()
    };
    Ok((child, map, line.trim().to_string()))
}

fn start_kamailio(a: &Args, lab: &Lab, dir: &std::path::Path) -> Result<Child, String> {
    let cfg = match a.target {
        Target::KamailioTm => "perf/kamailio/tm.cfg",
        _ => "perf/kamailio/stateless.cfg",
    };
    let cfg =
        std::fs::canonicalize(cfg).map_err(|e| format!("{cfg}: {e} (run from the repo root)"))?;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.pcscf, "kamailio", "-f"])
        .arg(&cfg)
        .args([
            "-DD",
            "-E",
            "-n",
            &a.workers.to_string(),
            // tm keeps ~7 KB per transaction (one branch) alive toward a core that never
            // answers (perf/kamailio/README.md)
            "-m",
            "6144",
            "-M",
            "32",
        ])
        .args(["-x", "tlsf", "-b", "4194304", "-Y"])
        .arg(dir)
        .args([
            "-A",
            &format!(
                "LISTEN=udp:0.0.0.0:5060 advertise {}:5060",
                lab.pcscf_core_addr
            ),
            "-A",
            &format!("NEXT_HOP_IP=\"{}\"", lab.core_addr),
            "-A",
            "NEXT_HOP_PORT=5060",
            "-A",
            "MAX_BRANCHES=1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("relay.err")).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start kamailio (apt-get install kamailio): {e}"))?;
    std::thread::sleep(Duration::from_millis(1500));
    Ok(child)
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("load: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), String> {
    let tag = format!("{}", std::process::id() % 1000);
    // one veth queue per xdp worker (each worker's sockets are bound to its queue)
    let queues = if a.backend == "xdp" { a.workers } else { 1 };
    let lab = Lab::with_queues("pl", &tag[..tag.len().min(3)], queues as u32)?;
    let dir = std::env::temp_dir().join(format!("pcscf-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // Resolve the neighbours before the relay starts: its first frames must not meet an empty
    // neighbour table (pcscf refreshes its snapshot once a second).
    let peers = [lab.core_addr, lab.ue_addr];
    let _ = spawn_in(&lab.pcscf, move || {
        if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
            for p in peers {
                let _ = s.send_to(b"arp", SocketAddr::new(p, 9));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    })
    .join();
    let (mut child, map, preload_line) = match a.target {
        Target::Pcscf => start_pcscf(a, &lab, &dir)?,
        _ => (start_kamailio(a, &lab, &dir)?, Vec::new(), String::new()),
    };
    let res = drive(a, &lab, &dir, &map, &child, &preload_line);
    // SAFETY: kill(2) on our child (ip netns exec execs the relay in place).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    if a.target != Target::Pcscf {
        for p in pids_named(&dir.to_string_lossy()) {
            // SAFETY: kill(2) of leftover Kamailio children of this run.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
    }
    let report = std::fs::read_to_string(dir.join("relay.err")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    let mut line = res?;
    if a.target == Target::Pcscf {
        for l in report.lines().filter(|l| {
            l.contains("stopped after")
                || l.contains("drop")
                || l.contains("latency")
                || l.contains("  worker ")
        }) {
            eprintln!("  {l}");
        }
        // how the packets spread over the workers (RSS / fanout): each worker's rx
        let per_worker: Vec<&str> = report
            .lines()
            .filter_map(|l| l.split("  worker ").nth(1))
            .filter_map(|l| l.split(" rx ").nth(1)?.split_whitespace().next())
            .collect();
        if !per_worker.is_empty() {
            line.push_str(&format!(" worker_rx={}", per_worker.join("/")));
        }
        // the registration thread's own CPU (REGISTERs go there, not to the workers)
        if let Some(l) = report.lines().find(|l| l.contains("registration thread:")) {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = |w: &str| f.iter().position(|x| *x == w);
            if let (Some(m), Some(c)) = (at("messages"), at("s")) {
                line.push_str(&format!(
                    " reg_thread_msgs={} reg_thread_cpu_s={}",
                    f[m - 1],
                    f[c - 1]
                ));
            }
        }
        // the P-CSCF's own rx-to-tx latency (its workers' histogram): the latency it adds
        if let Some(l) = report.lines().find(|l| l.contains("rx-to-tx latency:")) {
            let num = |key: &str| {
                l.split(key)
                    .nth(1)
                    .and_then(|x| x.trim_start().split(' ').next())
                    .and_then(|x| x.parse::<f64>().ok())
                    .map_or(-1.0, |ns| ns / 1e3)
            };
            line.push_str(&format!(
                " added_p50_us={:.1} added_p99_us={:.1} added_p999_us={:.1}",
                num("p50"),
                num("p99"),
                num("p99.9")
            ));
        }
    }
    println!("{line}");
    Ok(())
}

fn drive(
    a: &Args,
    lab: &Lab,
    dir: &std::path::Path,
    map: &[Allocated],
    child: &Child,
    preload: &str,
) -> Result<String, String> {
    let label = if a.label.is_empty() {
        format!("{:?}-{:?}", a.target, a.traffic).to_lowercase()
    } else {
        a.label.clone()
    };
    if a.memory_only {
        return Ok(format!(
            "result: label={label} {}",
            preload.trim_start_matches("bench-preload: ")
        ));
    }
    let t = Instant::now();
    let frames = match a.traffic {
        Traffic::Esp => build_esp(a, lab, map)?,
        _ => build_plain(a, lab),
    };
    eprintln!(
        "built {} frames of {} B in {:.1} s",
        frames.len.len(),
        frames.len.first().copied().unwrap_or(0),
        t.elapsed().as_secs_f64()
    );
    let frames = Arc::new(frames);
    let n = frames.len.len();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let core = SocketAddr::new(lab.core_addr, 5060);
    let (s2, g2, sa2) = (stop.clone(), got.clone(), sent_at.clone());
    let sink_t = spawn_in(&lab.core, move || {
        let s = UdpSocket::bind(core).expect("bind sink");
        sink(&s, &s2, &sa2, &g2)
    });
    std::thread::sleep(Duration::from_millis(200));
    let relay_pids = match a.target {
        Target::Pcscf => vec![child.id()],
        // this run's Kamailio processes: their command line names our run directory
        _ => pids_named(&dir.to_string_lossy()),
    };
    let cpu0 = cpu_ticks(&relay_pids);
    let (fr, sa3, t3) = (frames.clone(), sent_at.clone(), sent.clone());
    let (esp, rate, secs, burst) = (a.traffic == Traffic::Esp, a.rate, a.secs, a.burst);
    let ue_addr = SocketAddr::new(lab.ue_addr, 5060);
    let dst = SocketAddr::new(lab.pcscf_ue_addr, if esp { 0 } else { 5060 });
    let blast_t = spawn_in(&lab.ue, move || {
        if esp {
            // SAFETY: socket(2); the fd is owned below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // SAFETY: fd is a fresh socket we own.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let t0 = Instant::now();
            blast(owned.as_raw_fd(), dst, &fr, burst, rate, secs, &sa3, &t3);
            t0.elapsed()
        } else {
            let s = UdpSocket::bind(ue_addr).expect("bind blaster");
            let t0 = Instant::now();
            blast(s.as_raw_fd(), dst, &fr, burst, rate, secs, &sa3, &t3);
            t0.elapsed()
        }
    });
    let send_time = blast_t.join().map_err(|_| "blaster panicked")?;
    let first_sent_ns = sent_at.first().map_or(0, |s| s.load(Ordering::Relaxed));
    // drain: until nothing arrives for 300 ms
    let mut last = got.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let g = got.load(Ordering::Relaxed);
        if g == last {
            break;
        }
        last = g;
    }
    let cpu1 = cpu_ticks(&relay_pids);
    stop.store(true, Ordering::Relaxed);
    let r = sink_t.join().map_err(|_| "sink panicked")?;
    let sent = sent.load(Ordering::Relaxed);
    let offered = sent as f64 / send_time.as_secs_f64();
    // from the first frame sent to the last message out: bursty delivery cannot inflate it
    let span = (r.last_ns.saturating_sub(first_sent_ns)) as f64 / 1e9;
    let delivered = if span > 0.0 { r.got as f64 / span } else { 0.0 };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (cpu1 - cpu0) as f64 / hz;
    let per_cpu_s = if cpu_s > 0.0 {
        r.got as f64 / cpu_s
    } else {
        0.0
    };
    let h = &r.hist;
    let line = format!(
        "result: label={label} target={:?} traffic={:?} backend={} workers={} ues={} suite={} sent={sent} got={} offered_pps={offered:.0} delivered_pps={delivered:.0} loss={:.4} dups={} other={} relay_cpu_s={cpu_s:.2} msgs_per_cpu_s={per_cpu_s:.0} p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
        a.target,
        a.traffic,
        if a.target == Target::Pcscf {
            &a.backend
        } else {
            "-"
        },
        a.workers,
        if esp { a.ues } else { 0 },
        if esp { &a.suite } else { "-" },
        r.got,
        1.0 - r.got as f64 / sent.max(1) as f64,
        r.dups,
        r.other,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.9) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3,
    );
    eprintln!(
        "{label}: sent {sent} at {offered:.0}/s, delivered {} at {delivered:.0}/s, relay CPU {cpu_s:.2} s ({per_cpu_s:.0} msgs/CPU-s), latency p50 {:.1} us p99 {:.1} us",
        r.got,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3
    );
    if let Some(p) = &a.hist_out {
        let mut csv = String::from("percentile,latency_us\n");
        for v in h.iter_quantiles(2) {
            csv.push_str(&format!(
                "{:.5},{:.2}\n",
                100.0 * v.quantile_iterated_to(),
                v.value_iterated_to() as f64 / 1e3
            ));
        }
        std::fs::write(p, csv).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if r.got == 0 {
        return Err(format!("{label}: nothing came out of the relay"));
    }
    Ok(line)
}
