//! `pcscf lab`: the whole registration flow on one machine, with nothing to install. It makes
//! three network namespaces (ue, pcscf, core) joined by veth links, starts `pcscf run` in the
//! middle one (AF_XDP by default), the core simulator and the UE simulator in the others, shows
//! progress, prints a report, and removes everything it made — also on Ctrl-C or failure.
//!
//! With `--calls N`, once every UE is registered, half the calls are placed by the UEs
//! (originating: UE → P-CSCF → S-CSCF, the core simulator answering as the far end) and half
//! by the core (terminating: to each UE's registered Contact by the P-CSCF's Path), each set up
//! (INVITE, 100, 180, 200, ACK) and torn down (BYE, 200) through the P-CSCF, in the flows
//! `--call-flows` names (call `k` of each direction follows the `k mod n`-th, and every other
//! round the callee acts: [`sim::call::CallPlan`]): basic, 100rel / PRACK, UPDATE in the early
//! and the confirmed dialog, re-INVITE, CANCEL before the answer, a call that outlives the
//! UE's re-registration with a new SA set, and (`release`) a call the core releases with a BYE
//! the UE does not expect; the report gives calls/s, setup latencies (INVITE →
//! 180, INVITE → 200) per direction, outcomes per flow and direction, and failures by reason.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::netns::{Lab, spawn_in};
use crate::sim;

/// The lab links' MTU when it places calls.
const CALL_MTU: u32 = 3000;

/// What a protected MESSAGE carries besides its body on the P-CSCF's link to the core, with
/// room to spare: the UE's headers (~330 bytes), the P-CSCF's Via, Route and asserted identity
/// (~300), IP and UDP. (On the UE's link it is less: ESP adds ~60 bytes where the P-CSCF's
/// headers are not in yet.)
const MESSAGE_OVERHEAD: usize = 900;

/// veth's default MTU.
const DEFAULT_MTU: u32 = 1500;

/// The MTU the lab's links need, when more than veth's default.
///
/// With `--transport tcp` none: whatever is larger than 1,300 bytes goes on a connection, on
/// both sides (RFC 3261 §18.1.1). With udp the UEs send their INVITEs (~1.5 kB with SDP) and
/// MESSAGEs in one ESP datagram each, and the P-CSCF sends theirs (~1.9 kB, our Via and
/// Record-Route in) to them as datagrams (`ue.max_udp_request` 65535: the UDP-only UEs take
/// no TCP); the P-CSCF neither fragments nor reassembles, so the links carry them whole. (Under
/// the 4 kB frames of the P-CSCF and veth's XDP limit: a MESSAGE body of 3200 bytes goes
/// through, 3300 does not, measured with `pcscf lab --message-size N`, udp, xdp backend.)
fn links_mtu(cfg: &LabConfig) -> Option<u32> {
    if cfg.transport.takes_tcp() {
        return None;
    }
    let calls = if cfg.calls > 0 { CALL_MTU } else { 0 };
    let message =
        u32::try_from(cfg.message_size.saturating_add(MESSAGE_OVERHEAD)).unwrap_or(u32::MAX);
    let mtu = calls.max(message);
    (mtu > DEFAULT_MTU).then_some(mtu)
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub ues: usize,
    pub rate: u32,
    pub messages: u32,
    pub backend: String,
    pub keylog: Option<std::path::PathBuf>,
    /// Capture the UE-side link into this pcapng file (dumpcap, in the UE namespace).
    pub pcap: Option<std::path::PathBuf>,
    /// The UEs talk IPv6 to the P-CSCF (the core side stays IPv4).
    pub ipv6: bool,
    /// Calls after registration: the UEs place half (rounded up), the core the other half.
    pub calls: u32,
    /// Calls started per second, both directions together.
    pub call_rate: u32,
    /// The flow of each call (in both directions: call `k` of each follows `flows.flow(k)`).
    pub flows: sim::call::CallPlan,
    /// How the UEs send their protected requests ([`sim::ue::Transport`]).
    pub transport: sim::ue::Transport,
    /// The body size of the UEs' protected MESSAGEs.
    pub message_size: usize,
    /// UEs that misbehave on their TCP once registered ([`sim::hostile`]): their own outcomes
    /// are reported apart and never fail the lab; every honest UE's failure does.
    pub hostile: sim::hostile::HostilePlan,
    /// Once the UEs are done, the core de-registers this many of them from the network side
    /// (TS 24.229 §5.4.1.5: a NOTIFY of the reg event package to the P-CSCF's subscription).
    pub network_dereg: usize,
}

/// Run the lab; `Ok(true)` when every UE registered, every call completed, every NOTIFY of the
/// reg event package was answered 2xx and the network de-registered as many UEs as asked.
pub fn run(cfg: &LabConfig) -> Result<bool, String> {
    if cfg.message_size > sim::ue::MAX_MESSAGE_SIZE {
        return Err(format!(
            "--message-size {}: at most {}",
            cfg.message_size,
            sim::ue::MAX_MESSAGE_SIZE
        ));
    }
    cfg.flows
        .check_own_ues(u64::from(cfg.calls), cfg.ues as u64)?;
    if cfg.network_dereg > cfg.ues {
        return Err(format!(
            "--network-dereg {}: at most --ues ({})",
            cfg.network_dereg, cfg.ues
        ));
    }
    super::netns::check_privileges().map_err(|e| {
        format!("{e}.\n`pcscf lab` builds network namespaces and loads XDP: run it as root (sudo), or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN")
    })?;
    crate::daemon::install_signal_handlers();
    let lab = Lab::new("pcscf-lab", "l")?;
    let (ue_ip, pcscf_ue) = if cfg.ipv6 {
        (lab.ue_addr6, lab.pcscf_ue_addr6)
    } else {
        (lab.ue_addr, lab.pcscf_ue_addr)
    };
    if let Some(mtu) = links_mtu(cfg) {
        lab.set_mtu(mtu)?;
    }
    let dir = std::env::temp_dir().join(format!("{}-run", lab.pcscf));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("pcscf.toml");
    // With UDP the simulated UEs take requests as datagrams only, whatever their size; with
    // TCP the P-CSCF's larger requests go on its connection to the UE (RFC 3261 §18.1.1).
    let max_udp_request = match cfg.transport {
        sim::ue::Transport::Udp => 65535,
        sim::ue::Transport::Tcp | sim::ue::Transport::Auto => {
            crate::config::DEFAULT_MAX_UDP_REQUEST
        }
    };
    // The core side: with TCP toward the core in the P-CSCF, the core-sim takes the lab's
    // transport (tcp: its Service-Route and Record-Route ask for TCP, it calls over TCP) and
    // sends its requests larger than 1,300 bytes over TCP (RFC 3261 §18.1.1); without, all
    // stays UDP.
    let (core_transport, core_max_udp_request) = (
        cfg.transport,
        usize::from(crate::config::DEFAULT_MAX_UDP_REQUEST),
    );
    // The P-CSCF's side of it: its requests larger than 1,300 bytes over TCP to the core, and
    // with tcp the I-CSCF over TCP (the lab's DNS offers SIP+D2T, RFC 3263 §4.1).
    let pcscf_core_max_udp_request = crate::config::DEFAULT_MAX_UDP_REQUEST;
    let core_tcp = cfg.transport == sim::ue::Transport::Tcp;
    let icscf_transport = if core_tcp {
        "icscf_transport = \"tcp\"\n"
    } else {
        ""
    };
    let text = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\nprotected_ports = \"5100-5999\"\nmax_udp_request = {max_udp_request}\nregister_burst_per_source = 1000000\nregister_rate_per_source = 1000000.0\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nmax_udp_request = {pcscf_core_max_udp_request}\ndns = \"{}:53\"\nhome_domains = [\"ims.mnc001.mcc001.3gppnetwork.org\"]\nhostname = \"pcscf.ims.mnc001.mcc001.3gppnetwork.org\"\n{icscf_transport}[dataplane]\nbackend = \"{}\"\nworkers = [0]\n[log]\nlevel = \"info\"\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_ue_addr6,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr,
        cfg.backend
    );
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.pcscf])
        .arg(&exe)
        .args(["run", "--config"])
        .arg(&config);
    if let Some(k) = &cfg.keylog {
        cmd.arg("--keylog").arg(k);
    }
    let mut pcscf = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting pcscf: {e}"))?;
    // Its log is read as it comes: a pipe left full would block pcscf's registration thread
    // on its next line (and with it every registration) until the end of the run.
    let log_reader = pcscf.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut log = String::new();
            let _ = e.read_to_string(&mut log);
            log
        })
    });
    eprintln!(
        "lab: namespaces {} / {} / {}; pcscf ({} backend) on {} and {}",
        lab.ue, lab.pcscf, lab.core, cfg.backend, lab.pcscf_ue_addr, lab.pcscf_core_addr
    );

    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let realm = "ims.mnc001.mcc001.3gppnetwork.org";
    let core_stop = stop.clone();
    let originating = cfg.calls - cfg.calls / 2;
    let terminating = cfg.calls / 2;
    let half_rate = cfg.call_rate.div_ceil(2).max(1);
    let plan = sim::core::CorePlan {
        calls: terminating,
        rate: half_rate,
        after_registered: cfg.ues,
        timeout: Duration::from_secs(5),
        flows: cfg.flows.clone(),
        transport: core_transport,
        max_udp_request: core_max_udp_request,
        network_dereg: cfg.network_dereg,
        network_dereg_event: sim::regevent::ContactEvent::Deactivated,
    };
    let core = spawn_in(&lab.core, move || {
        sim::core::serve_calls(core_addr, realm, &plan, core_stop)
    });
    // The home domain's I-CSCF is found by DNS (RFC 3263), served from the core namespace.
    let IpAddr::V4(core_v4) = lab.core_addr else {
        return Err("lab addresses are IPv4".into());
    };
    let dns_stop = stop.clone();
    let dns_addr = SocketAddr::new(lab.core_addr, 53);
    let dns_t = if core_tcp {
        crate::sip::Transport::Tcp
    } else {
        crate::sip::Transport::Udp
    };
    let dns = spawn_in(&lab.core, move || {
        super::dns::serve(dns_addr, realm, core_v4, dns_t, dns_stop)
    });
    // Ctrl-C reaches us and the child: pass it on to the simulators.
    let watch_stop = stop.clone();
    let watcher = std::thread::spawn(move || {
        while !watch_stop.load(Ordering::Relaxed) {
            if crate::daemon::stop_requested() {
                watch_stop.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // Let each side's kernel resolve the other (a datagram to the discard port makes the peers
    // ARP), then give pcscf's neighbour refresher (1 s) and XDP attach time to settle.
    for (ns, to) in [(&lab.ue, pcscf_ue), (&lab.core, lab.pcscf_core_addr)] {
        let _ = spawn_in(ns, move || {
            if let Ok(s) = std::net::UdpSocket::bind(SocketAddr::new(
                if to.is_ipv4() {
                    IpAddr::from([0, 0, 0, 0])
                } else {
                    IpAddr::from([0u16; 8])
                },
                0,
            )) {
                let _ = s.send_to(b"", SocketAddr::new(to, 9));
            }
        })
        .join();
    }
    std::thread::sleep(Duration::from_millis(2000));
    let capture = match &cfg.pcap {
        Some(path) => Some(start_capture(&lab, path)?),
        None => None,
    };
    let ue_cfg = sim::ue::UeSimConfig {
        ue_ip,
        pcscf: SocketAddr::new(pcscf_ue, 5060),
        realm: realm.into(),
        ues: cfg.ues,
        rate: cfg.rate,
        messages: cfg.messages,
        timeout: Duration::from_secs(5),
        progress: true,
        wrong_res_every: 0,
        reregister: false,
        calls: originating,
        call_rate: half_rate,
        incoming_calls: terminating,
        flows: cfg.flows.clone(),
        transport: cfg.transport,
        message_size: cfg.message_size,
        hostile: cfg.hostile.clone(),
        message_interval: Duration::ZERO,
        check_seq: false,
    };
    let ue_stop = stop.clone();
    let report = spawn_in(&lab.ue, move || sim::ue::run(ue_cfg, ue_stop))
        .join()
        .map_err(|_| "ue-sim panicked".to_string())?
        .map_err(|e| format!("ue-sim: {e}"))?;
    stop.store(true, Ordering::Relaxed);
    let core_stats = core.join().map_err(|_| "core-sim panicked".to_string())?;
    let dns_answers = dns
        .join()
        .map_err(|_| "dns panicked".to_string())?
        .unwrap_or(0);
    let _ = watcher.join();
    if let Some(c) = capture {
        stop_capture(c);
    }
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let _ = pcscf.wait();
    let log = log_reader.and_then(|r| r.join().ok()).unwrap_or_default();
    println!("== pcscf lab: {} UEs, {} backend", cfg.ues, cfg.backend);
    report.print();
    let mut calls_ok = cfg.calls == 0;
    let mut reg_event_ok = cfg.network_dereg == 0;
    match &core_stats {
        Ok(c) => {
            let s = c.stats;
            println!(
                "core-sim: {} challenges, {} registered, {} auth failures, {} MESSAGEs",
                s.challenges, s.registered, s.auth_failed, s.messages
            );
            if s.tcp.any() || core_transport == sim::ue::Transport::Tcp {
                let t = s.tcp;
                println!(
                    "core-sim tcp: {} connections accepted, {} refused, {} opened, {} failed to open, {} closed on errors ({} framing); {} messages in, {} out; {} pings",
                    t.accepted,
                    t.refused,
                    t.opened,
                    t.open_failed,
                    t.closed_by_error,
                    t.framing_errors,
                    t.messages_in,
                    t.messages_out,
                    t.pings
                );
            }
            if s.reg_event_any() || cfg.network_dereg > 0 {
                println!("{}", s.reg_event_line());
            }
            // every NOTIFY answered 2xx, and as many UEs de-registered by the network as asked
            reg_event_ok = s.notifies_failed == 0
                && s.notifies_unanswered == 0
                && s.network_deregistered == cfg.network_dereg as u64;
            if cfg.calls > 0 {
                calls_ok = print_calls(cfg, &report, c);
            }
        }
        Err(e) => println!("core-sim: {e}"),
    }
    println!("dns: {dns_answers} answers (NAPTR / SRV / A for {realm})");
    println!("-- pcscf:");
    for l in log.lines().filter(|l| {
        l.starts_with("pcscf:")
            || l.contains("registrar")
            || l.contains("registration thread")
            || l.contains("dialogs:")
            || (l.contains("reg event:") && l.contains("subscriptions,"))
    }) {
        println!("{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report.registered == cfg.ues && report.failed() == 0 && calls_ok && reg_event_ok)
}

/// Start dumpcap on the UE namespace's end of the link to pcscf (pcscf's own end, under XDP,
/// hands its packets to the workers before any tap sees them), writing pcapng to `path`; wait
/// until it captures.
fn start_capture(lab: &Lab, path: &std::path::Path) -> Result<std::process::Child, String> {
    let _ = std::fs::remove_file(path);
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", &lab.ue, "dumpcap", "-q", "-i", &lab.ue_if, "-w",
        ])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("--pcap: starting dumpcap (install tshark): {e}"))?;
    // dumpcap creates the file once it captures (bounded wait)
    for _ in 0..100 {
        if path.exists() {
            std::thread::sleep(Duration::from_millis(200));
            return Ok(child);
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("--pcap: dumpcap exited ({st})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err("--pcap: dumpcap did not start capturing within 5 s".into())
}

/// Stop dumpcap (SIGINT: it flushes the file) and wait for it.
fn stop_capture(mut child: std::process::Child) {
    // give the last packets time to land in the capture
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

/// The calls' part of the report; `true` when every call, both ways, completed.
fn print_calls(cfg: &LabConfig, ue: &sim::ue::UeSimReport, core: &sim::core::CoreReport) -> bool {
    let ok = ue.calls_ok + core.calls_ok;
    let failed = ue.calls_failed() + core.calls_failed();
    // both directions run at once: the longer of the two spans is the calls' wall time
    let secs = ue
        .calls_elapsed
        .max(core.calls_elapsed)
        .as_secs_f64()
        .max(1e-9);
    println!(
        "calls: {ok} ok, {failed} failed of {} in {secs:.2} s ({:.0} calls/s): {} originating ok, {} terminating ok",
        cfg.calls,
        ok as f64 / secs,
        ue.calls_ok,
        core.calls_ok
    );
    if !core.setup_180.is_empty() {
        println!(
            "terminating setup INVITE→180: {}",
            sim::call::percentiles(&core.setup_180)
        );
    }
    if !core.setup_200.is_empty() {
        println!(
            "terminating setup INVITE→200: {}",
            sim::call::percentiles(&core.setup_200)
        );
    }
    let released = ue.placed.released() + core.placed.released();
    if released > 0 {
        println!("calls released by the network (an unexpected BYE): {released}");
    }
    for l in core.placed.lines("core-sim terminating") {
        println!("{l}");
    }
    for l in core.answered.lines("core-sim far end") {
        println!("{l}");
    }
    // what a leg that was not counted above saw: a call placed but never answered by
    // the far end, or the far end's failure when the caller's leg succeeded
    for (why, n) in &core.call_failures {
        if !core.placed.failed.keys().any(|(_, w)| w == why) {
            println!("call failed (core-sim): {why}: {n}");
        }
    }
    let s = core.stats;
    println!(
        "core-sim calls: {} INVITEs answered, {} ACKs, {} BYEs answered",
        s.invites, s.acks, s.byes
    );
    // (a call the network released on purpose, `--call-flows release` or `dereg`, completed
    // as planned)
    let released_on_purpose = ue.placed.released_as_planned() + core.placed.released_as_planned();
    failed == 0
        && ok + released_on_purpose == u64::from(cfg.calls)
        && ue.incoming_ok == core.calls_ok
        && core.answered.failed() == 0
        && ue.answered.failed() == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(calls: u32, message_size: usize) -> LabConfig {
        LabConfig {
            ues: 1,
            rate: 1,
            messages: 1,
            backend: "xdp".into(),
            keylog: None,
            pcap: None,
            ipv6: false,
            calls,
            call_rate: 1,
            flows: Default::default(),
            transport: Default::default(),
            message_size,
            hostile: Default::default(),
            network_dereg: 0,
        }
    }

    /// veth's default MTU unless calls or a MESSAGE need more; what they need otherwise.
    #[test]
    fn the_links_carry_the_largest_message_whole() {
        let small = sim::ue::DEFAULT_MESSAGE_SIZE;
        assert_eq!(links_mtu(&cfg(0, small)), None);
        assert_eq!(links_mtu(&cfg(4, small)), Some(CALL_MTU));
        assert_eq!(links_mtu(&cfg(0, 3000)), Some(3900));
        assert_eq!(links_mtu(&cfg(4, 3000)), Some(3900));
        assert_eq!(links_mtu(&cfg(4, 1000)), Some(CALL_MTU));
        // with tcp whatever is larger than 1,300 bytes goes on a connection
        let tcp = LabConfig {
            transport: sim::ue::Transport::Tcp,
            ..cfg(4, 3000)
        };
        assert_eq!(links_mtu(&tcp), None);
    }
}
