//! `pcscf lab`: the whole registration flow on one machine, with nothing to install. It makes
//! three network namespaces (ue, pcscf, core) joined by veth links, starts `pcscf run` in the
//! middle one (AF_XDP by default), the core simulator and the UE simulator in the others, shows
//! progress, prints a report, and removes everything it made — also on Ctrl-C or failure.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::netns::{Lab, spawn_in};
use crate::sim;

/// What to run.
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub ues: usize,
    pub rate: u32,
    pub messages: u32,
    pub backend: String,
    pub keylog: Option<std::path::PathBuf>,
    /// The UEs talk IPv6 to the P-CSCF (the core side stays IPv4).
    pub ipv6: bool,
}

/// Run the lab; `Ok(true)` when every UE registered.
pub fn run(cfg: &LabConfig) -> Result<bool, String> {
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
    let dir = std::env::temp_dir().join(format!("{}-run", lab.pcscf));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let config = dir.join("pcscf.toml");
    let text = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\nprotected_ports = \"5100-5999\"\nregister_burst_per_source = 1000000\nregister_rate_per_source = 1000000.0\n[core]\ninterface = \"{}\"\naddress = \"{}\"\ndns = \"{}:53\"\nhome_domains = [\"ims.mnc001.mcc001.3gppnetwork.org\"]\nhostname = \"pcscf.ims.mnc001.mcc001.3gppnetwork.org\"\n[dataplane]\nbackend = \"{}\"\nworkers = [0]\n[log]\nlevel = \"info\"\n",
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
    eprintln!(
        "lab: namespaces {} / {} / {}; pcscf ({} backend) on {} and {}",
        lab.ue, lab.pcscf, lab.core, cfg.backend, lab.pcscf_ue_addr, lab.pcscf_core_addr
    );

    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let realm = "ims.mnc001.mcc001.3gppnetwork.org";
    let core_stop = stop.clone();
    let core = spawn_in(&lab.core, move || {
        sim::core::serve(core_addr, realm, core_stop)
    });
    // The home domain's I-CSCF is found by DNS (RFC 3263), served from the core namespace.
    let IpAddr::V4(core_v4) = lab.core_addr else {
        return Err("lab addresses are IPv4".into());
    };
    let dns_stop = stop.clone();
    let dns_addr = SocketAddr::new(lab.core_addr, 53);
    let dns = spawn_in(&lab.core, move || {
        super::dns::serve(dns_addr, realm, core_v4, dns_stop)
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
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let _ = pcscf.wait();
    let mut log = String::new();
    if let Some(mut e) = pcscf.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    println!("== pcscf lab: {} UEs, {} backend", cfg.ues, cfg.backend);
    report.print();
    if let Ok(c) = core_stats {
        println!(
            "core-sim: {} challenges, {} registered, {} auth failures, {} MESSAGEs",
            c.challenges, c.registered, c.auth_failed, c.messages
        );
    }
    println!("dns: {dns_answers} answers (NAPTR / SRV / A for {realm})");
    println!("-- pcscf:");
    for l in log.lines().filter(|l| {
        l.starts_with("pcscf:") || l.contains("registrar") || l.contains("registration thread")
    }) {
        println!("{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report.registered == cfg.ues && report.failed() == 0)
}
