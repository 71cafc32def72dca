//! Plain-forward throughput of `pcscf run` per backend: a blaster in the UE namespace sends ~1 KB
//! SIP MESSAGE datagrams flat out (sendmmsg, 64 per call) to the P-CSCF, which relays them
//! statelessly to the core namespace, where a sink counts them (recvmmsg). Reports packets per
//! second sent and forwarded, and loss, per backend, side by side in one run.
//!
//! cargo build --release --bin pcscf --example relay_blast
//! sudo target/release/examples/relay_blast [seconds=5] [backends=xdp,afpacket,socket]
//!
//! On a 2-core machine the blaster, the sink, the kernel's veth softirqs and the pinned worker
//! share the cores: the figures are a floor for the worker, not its ceiling.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pcscf::lab::netns::{Lab, spawn_in};

const BATCH: usize = 64;

fn message() -> Vec<u8> {
    let body = "x".repeat(600);
    format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.211.0.2:5060;branch=z9hG4bK-blast;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: blast-1@10.211.0.2\r\nCSeq: 1 MESSAGE\r\nP-Preferred-Identity: <sip:alice@ims.example.net>\r\nUser-Agent: relay_blast\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// sendmmsg of `BATCH` copies of `msg` to `dst` until `stop`; counts datagrams the kernel took.
fn blast(sock: &UdpSocket, msg: &[u8], dst: SocketAddr, stop: &AtomicBool, sent: &AtomicU64) {
    sock.connect(dst).unwrap();
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; zeroed is a valid empty header that we fill below.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: hdrs points at BATCH valid headers whose iovecs point at `msg`, alive for the call.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// recvmmsg until `stop`, counting datagrams.
fn sink(sock: &UdpSocket, stop: &AtomicBool, got: &AtomicU64) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: hdrs points at BATCH headers with iovecs into `bufs`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            got.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

struct Row {
    backend: String,
    sent_pps: f64,
    fwd_pps: f64,
    loss: f64,
    ns_per_pkt: String,
}

fn run_one(backend: &str, secs: u64, pcscf: &std::path::Path) -> Result<Row, String> {
    let lab = Lab::new("pblast", &backend[..1])?;
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\n[dataplane]\nbackend = \"{backend}\"\nworkers = [0]\nbatch = 64\nring_size = 2048\nframes = 8192\nstateless_relay = true\n",
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let path = std::env::temp_dir().join(format!("{}.toml", lab.pcscf));
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.pcscf])
        .arg(pcscf)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start pcscf: {e}"))?;
    std::thread::sleep(Duration::from_millis(800));
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let (s2, g2) = (stop.clone(), got.clone());
    let sink_t = spawn_in(&lab.core, move || {
        let s = UdpSocket::bind(core_addr).unwrap();
        sink(&s, &s2, &g2);
    });
    let (s3, t3) = (stop.clone(), sent.clone());
    let ue_addr = SocketAddr::new(lab.ue_addr, 5060);
    let dst = SocketAddr::new(lab.pcscf_ue_addr, 5060);
    let msg = message();
    let blast_t = spawn_in(&lab.ue, move || {
        let s = UdpSocket::bind(ue_addr).unwrap();
        blast(&s, &msg, dst, &s3, &t3);
    });
    std::thread::sleep(Duration::from_secs(1)); // warm up (ARP, rings)
    let (s0, g0, t0) = (
        sent.load(Ordering::Relaxed),
        got.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (s1, g1, el) = (
        sent.load(Ordering::Relaxed),
        got.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = blast_t.join();
    let _ = sink_t.join();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let report = String::from_utf8_lossy(&out.stderr).to_string();
    let ns = report
        .lines()
        .find_map(|l| l.split('~').nth(1).map(|x| x.trim().to_string()))
        .unwrap_or_else(|| "?".into());
    let secs = el.as_secs_f64();
    let (sp, fp) = ((s1 - s0) as f64 / secs, (g1 - g0) as f64 / secs);
    Ok(Row {
        backend: backend.into(),
        sent_pps: sp,
        fwd_pps: fp,
        loss: if sp > 0.0 { 1.0 - fp / sp } else { 0.0 },
        ns_per_pkt: ns,
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let backends: Vec<String> = args
        .next()
        .unwrap_or_else(|| "xdp,afpacket,socket".into())
        .split(',')
        .map(String::from)
        .collect();
    let exe = std::env::current_exe().unwrap();
    let pcscf = exe.parent().and_then(|p| p.parent()).unwrap().join("pcscf");
    assert!(
        pcscf.exists(),
        "build the binary first: cargo build --release --bin pcscf ({} missing)",
        pcscf.display()
    );
    println!("| backend | offered (pkt/s) | forwarded (pkt/s) | loss | worker busy time |");
    println!("|---|---:|---:|---:|---|");
    for b in &backends {
        match run_one(b, secs, &pcscf) {
            Ok(r) => println!(
                "| {} | {:.0} | {:.0} | {:.1} % | {} |",
                r.backend,
                r.sent_pps,
                r.fwd_pps,
                100.0 * r.loss,
                r.ns_per_pkt
            ),
            Err(e) => println!("| {b} | error: {e} | | | |"),
        }
    }
}
