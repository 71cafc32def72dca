//! `pcscf run` end to end in three network namespaces (ue — pcscf — core), one test per backend:
//! SIP from the UE namespace crosses the P-CSCF's workers to the core namespace and the answers
//! come back; a REGISTER is punted to the registration thread; the counters add up; SIGTERM
//! stops it cleanly (and detaches XDP); an XDP program left by a killed run does not break the
//! next start. Needs root and `ip` (CI runs as root); the namespaces are removed afterwards.

use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcscf::lab::{Lab, spawn_in};
use pcscf::sip::{HeaderName, Message};

fn lab(tag: &str) -> Lab {
    lab_with_queues(tag, 1)
}

fn lab_with_queues(tag: &str, queues: u32) -> Lab {
    Lab::with_queues("prun", tag, queues)
        .unwrap_or_else(|e| panic!("{e} (CI runs these tests as root)"))
}

/// How `pcscf run` is started: the backend, its workers' cores, the XDP attach mode.
#[derive(Clone, Copy)]
struct Plan {
    backend: &'static str,
    workers: &'static str,
    xdp_mode: &'static str,
}

impl Plan {
    fn one(backend: &'static str) -> Plan {
        Plan {
            backend,
            workers: "0",
            xdp_mode: "skb",
        }
    }
}

fn config(lab: &Lab, plan: Plan) -> std::path::PathBuf {
    let Plan {
        backend,
        workers,
        xdp_mode,
    } = plan;
    let text = format!(
        r#"
[ue]
interface = "{}"
addresses = ["{}"]
[core]
interface = "{}"
address = "{}"
icscf = "{}:5060"
hostname = "pcscf.test"
[dataplane]
backend = "{backend}"
workers = [{workers}]
xdp_mode = "{xdp_mode}"
batch = 32
ring_size = 512
frames = 2048
stateless_relay = true
[log]
level = "info"
"#,
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let path = std::env::temp_dir().join(format!("{}-{backend}.toml", lab.pcscf));
    std::fs::write(&path, text).unwrap();
    path
}

fn start(lab: &Lab, plan: Plan) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pcscf,
            env!("CARGO_BIN_EXE_pcscf"),
            "run",
            "--allow-stateless-relay",
            "--config",
        ])
        .arg(config(lab, plan))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pcscf")
}

/// The core: answer every request with 200 (Via, From, To, Call-ID, CSeq copied) until `until`.
fn core_responder(ns: &str, until: Instant, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("10.212.0.2:5060").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut answered = 0;
        while Instant::now() < until && !done.load(Ordering::Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let Ok(m) = Message::parse(&buf[..n]) else {
                continue;
            };
            let v = m.view();
            if v.method().is_none() {
                continue;
            }
            let mut out = [0u8; 4096];
            let len =
                pcscf::sip::rules::build_response(v, 200, "OK", b"core", &[], &mut out).unwrap();
            s.send_to(&out[..len], from).unwrap();
            answered += 1;
        }
        answered
    })
}

fn message(i: u32) -> String {
    format!(
        "MESSAGE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.211.0.2:5060;branch=z9hG4bK-{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.test>;tag=a{i}\r\nTo: <sip:bob@ims.test>\r\nCall-ID: call-{i}@10.211.0.2\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
}

const REGISTER: &[u8] = include_bytes!("../data/ims/register1_v4.sip");

/// The UE: send `n` MESSAGEs, each until its 200 comes back (the P-CSCF may still be starting),
/// then one REGISTER. Returns how many got their 200.
fn ue_client(ns: &str, n: u32, deadline: Instant) -> std::thread::JoinHandle<u32> {
    ue_client_from(ns, n, deadline, 1)
}

/// As [`ue_client`], message `i` from the `i % sources`-th of `sources` UDP sockets (5060, then
/// ephemeral ports; `rport` brings each answer back to its socket): that many flows.
fn ue_client_from(
    ns: &str,
    n: u32,
    deadline: Instant,
    sources: usize,
) -> std::thread::JoinHandle<u32> {
    spawn_in(ns, move || {
        let socks: Vec<UdpSocket> = (0..sources.max(1))
            .map(|k| {
                let port = if k == 0 { 5060 } else { 0 };
                let s = UdpSocket::bind(("10.211.0.2", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                s
            })
            .collect();
        let pcscf: SocketAddr = "10.211.0.1:5060".parse().unwrap();
        let mut ok = 0;
        let mut buf = [0u8; 4096];
        'msgs: for i in 0..n {
            let s = &socks[i as usize % socks.len()];
            while Instant::now() < deadline {
                s.send_to(message(i).as_bytes(), pcscf).unwrap();
                let Ok((len, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                assert_eq!(from, pcscf, "answers come from the P-CSCF");
                let m = Message::parse_strict(&buf[..len]).expect("a valid SIP response");
                let v = m.view();
                if v.status() == Some(200)
                    && v.header(HeaderName::CallId)
                        == Some(format!("call-{i}@10.211.0.2").as_bytes())
                {
                    // our Via was removed on the way back: only the UE's remains
                    assert_eq!(v.values(HeaderName::Via).count(), 1);
                    ok += 1;
                    continue 'msgs;
                }
            }
            break;
        }
        socks[0].send_to(REGISTER, pcscf).unwrap();
        ok
    })
}

fn stop(mut child: Child) -> String {
    // SAFETY: kill(2) on the child's pid; no memory is involved.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pcscf did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = stderr_of(&mut child);
    assert!(status.success(), "pcscf exited with {status}:\n{err}");
    err
}

/// What an exited pcscf wrote to stderr (its log and stop report).
fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

fn counter(report: &str, name: &str) -> u64 {
    report
        .split_whitespace()
        .skip_while(|w| *w != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{report}"))
}

fn relay_through(backend: &'static str, tag: &str) -> String {
    let lab = lab(tag);
    relay_with(&lab, Plan::one(backend), 1)
}

/// 20 MESSAGEs from `sources` UDP flows through `pcscf run` as `plan` says, and a REGISTER;
/// the counters are checked and the stop report returned.
fn relay_with(lab: &Lab, plan: Plan, sources: usize) -> String {
    let backend = plan.backend;
    let child = start(lab, plan);
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = Arc::new(AtomicBool::new(false));
    let core = core_responder(&lab.core, deadline, done.clone());
    let n = 20;
    let ok = ue_client_from(&lab.ue, n, deadline, sources)
        .join()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300)); // let the REGISTER reach the punt queue
    let report = stop(child);
    let _ = core.join();
    assert_eq!(
        ok, n,
        "all MESSAGEs answered through the {backend} backend:\n{report}"
    );
    let fwd = counter(&report, "forwarded");
    assert!(
        fwd >= 2 * n as u64,
        "requests and responses forwarded ({fwd}):\n{report}"
    );
    assert!(
        counter(&report, "punted") >= 1,
        "the REGISTER was punted:\n{report}"
    );
    assert!(
        counter(&report, "rx") >= counter(&report, "forwarded"),
        "{report}"
    );
    assert!(
        !lab.xdp_attached(),
        "no XDP program left after a clean stop"
    );
    report
}

#[test]
fn run_socket_backend() {
    relay_through("socket", "us");
}

#[test]
fn run_afpacket_backend() {
    relay_through("afpacket", "up");
}

#[test]
fn run_xdp_backend() {
    let report = relay_through("xdp", "ux");
    // one UMEM for both interfaces: nothing is copied between sides (XdpPair)
    assert!(!report.contains("a copy per packet crossing"), "{report}");
}

/// Two AF_XDP workers, one veth queue each (native XDP: the sender's flow hash picks the
/// queue): the UE's 16 flows spread over both, each worker relays its share, nothing is lost,
/// and both queues' sockets are detached at the stop.
#[test]
fn run_xdp_two_workers_one_queue_each() {
    let lab = lab_with_queues("u2", 2);
    let plan = Plan {
        backend: "xdp",
        workers: "0, 1",
        xdp_mode: "drv",
    };
    let report = relay_with(&lab, plan, 16);
    let rx = |w: u32| -> u64 {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("  worker {w}: ")))
            .unwrap_or_else(|| panic!("no worker {w} line:\n{report}"));
        counter(line, "rx")
    };
    let (rx0, rx1) = (rx(0), rx(1));
    eprintln!("two xdp workers: rx {rx0} / {rx1}");
    assert!(rx0 > 0 && rx1 > 0, "both workers got packets:\n{report}");
    assert_eq!(rx0 + rx1, counter(&report, "rx"), "{report}");
    assert_eq!(counter(&report, "dropped"), 0, "{report}");
}

/// Two xdp workers where the interfaces cannot give them their share: a veth with one queue
/// (worker 1 has no queue to bind: refused at start, saying why), and a veth with two queues
/// in generic XDP (every packet on queue 0: it runs, and says so).
#[test]
fn xdp_workers_without_queues_to_spread_over_are_named() {
    let lab1 = lab("uq");
    let plan = |xdp_mode| Plan {
        backend: "xdp",
        workers: "0, 1",
        xdp_mode,
    };
    let mut child = start(&lab1, plan("drv"));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(10) {
            // not left busy-polling in a lab that is about to go
            let _ = child.kill();
            let _ = child.wait();
            panic!("pcscf started with two workers on one queue");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = stderr_of(&mut child);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("has 1 receive queue(s) in use: dataplane.workers needs one per worker (2)"),
        "{err}"
    );
    assert!(!lab1.xdp_attached(), "{err}");
    drop(lab1);

    let lab2 = lab_with_queues("uw", 2);
    let report = relay_with(&lab2, plan("skb"), 4);
    assert!(
        report.contains("is a veth in generic XDP, which does not spread its packets"),
        "{report}"
    );
}

#[test]
fn xdp_left_by_a_killed_run_is_replaced() {
    let lab = lab("uk");
    let mut first = start(&lab, Plan::one("xdp"));
    // wait until it attached, then kill it hard: the program stays attached
    let t = Instant::now();
    while !lab.xdp_attached() {
        assert!(t.elapsed() < Duration::from_secs(10), "XDP never attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    let _ = first.wait();
    assert!(
        lab.xdp_attached(),
        "a killed run leaves its program (as a crash would)"
    );
    let child = start(&lab, Plan::one("xdp"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = Arc::new(AtomicBool::new(false));
    let core = core_responder(&lab.core, deadline, done.clone());
    let ok = ue_client(&lab.ue, 3, deadline).join().unwrap();
    done.store(true, Ordering::Relaxed);
    let report = stop(child);
    let _ = core.join();
    assert_eq!(ok, 3, "{report}");
    assert!(
        report.contains("replaced a stale pcscf XDP program"),
        "{report}"
    );
    assert!(!lab.xdp_attached());
}
