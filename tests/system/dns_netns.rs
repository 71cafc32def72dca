//! The home domain resolved by DNS (RFC 3263: NAPTR → SRV → A) against dnsmasq (Debian's
//! dnsmasq-base) as an external DNS server in the core namespace: UEs register through
//! `pcscf run` with no static I-CSCF. Needs root and dnsmasq (CI installs both).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;

use crate::support::ims::start_pcscf;

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

#[test]
fn dns_and_aes_gcm() {
    registration_with_the_i_cscf_found_by_dns("null/aes-gcm", "dg", false);
}

#[test]
fn dns_and_aes_cbc_hmac_sha1() {
    registration_with_the_i_cscf_found_by_dns("hmac-sha-1-96/aes-cbc", "dc", false);
}

#[test]
fn dns_and_null_hmac_sha1() {
    registration_with_the_i_cscf_found_by_dns("hmac-sha-1-96/null", "dn", false);
}

#[test]
fn dns_ipv6_ues_and_aes_gcm() {
    registration_with_the_i_cscf_found_by_dns("null/aes-gcm", "d6", true);
}

#[test]
fn dns_ipv6_ues_and_aes_cbc_hmac_sha1() {
    registration_with_the_i_cscf_found_by_dns("hmac-sha-1-96/aes-cbc", "d7", true);
}

#[test]
fn dns_ipv6_ues_and_null_hmac_sha1() {
    registration_with_the_i_cscf_found_by_dns("hmac-sha-1-96/null", "d8", true);
}

/// ue-sim and core-sim around `pcscf run` with only `suite` allowed.
fn registration_with_the_i_cscf_found_by_dns(suite: &str, tag: &str, ipv6: bool) {
    assert!(
        Command::new("dnsmasq").arg("--version").output().is_ok(),
        "dnsmasq (Debian package dnsmasq-base) is required; .ci/run installs it"
    );
    let lab = Lab::new("pdns", tag).unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let core_ip = lab.core_addr.to_string();
    let mut dns = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.core,
            "dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
        ])
        .arg(format!("--listen-address={core_ip}"))
        .args([
            "--bind-interfaces",
            "--port=53",
            "--log-queries",
            "--pid-file=",
        ])
        .arg(format!(
            "--naptr-record={REALM},10,50,s,SIP+D2U,,_sip._udp.icscf.{REALM}"
        ))
        .arg(format!(
            "--srv-host=_sip._udp.icscf.{REALM},icscf1.{REALM},5060,0,10"
        ))
        .arg(format!("--host-record=icscf1.{REALM},{core_ip}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dnsmasq");
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\ndns = \"{core_ip}:53\"\nhome_domains = [\"{REALM}\"]\nhostname = \"pcscf.{REALM}\"\n[ipsec]\nalgorithms = [\"{suite}\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_ue_addr6,
        lab.pcscf_core_if,
        lab.pcscf_core_addr
    );
    let pcscf = start_pcscf(&lab, "dns", &cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let s2 = stop.clone();
    let core = spawn_in(&lab.core, move || sim::core::serve(core_addr, REALM, s2));
    std::thread::sleep(Duration::from_millis(1500));
    let (ue_ip, pcscf_ue) = if ipv6 {
        (lab.ue_addr6, lab.pcscf_ue_addr6)
    } else {
        (lab.ue_addr, lab.pcscf_ue_addr)
    };
    let pcscf_addr = SocketAddr::new(pcscf_ue, 5060);
    let s3 = stop.clone();
    let report = spawn_in(&lab.ue, move || {
        sim::ue::run(
            sim::ue::UeSimConfig {
                ue_ip,
                pcscf: pcscf_addr,
                realm: REALM.into(),
                ues: 5,
                rate: 50,
                messages: 1,
                timeout: Duration::from_secs(5),
                progress: false,
                wrong_res_every: 0,
                reregister: false,
                calls: 0,
                call_rate: 1,
                incoming_calls: 0,
                flows: Default::default(),
                transport: Default::default(),
                message_size: sim::ue::DEFAULT_MESSAGE_SIZE,
                hostile: Default::default(),
                message_interval: Duration::ZERO,
                check_seq: false,
            },
            s3,
        )
    })
    .join()
    .unwrap()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let core_stats = core.join().unwrap().unwrap();
    // SAFETY: kill(2) on our children's pids.
    unsafe {
        libc::kill(pcscf.id() as i32, libc::SIGTERM);
        libc::kill(dns.id() as i32, libc::SIGTERM);
    }
    let pc = pcscf.wait_with_output().unwrap();
    let _ = dns.wait();
    let mut dns_log = String::new();
    if let Some(mut e) = dns.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut dns_log);
    }
    let log = String::from_utf8_lossy(&pc.stderr);
    assert_eq!(report.registered, 5, "{report:?}\n{log}");
    assert_eq!(report.messages_ok, 5);
    assert_eq!(core_stats.registered, 5);
    assert!(dns_log.contains("query[NAPTR]"), "NAPTR asked:\n{dns_log}");
    assert!(
        dns_log.contains("query[SRV]") && dns_log.contains("query[A]"),
        "{dns_log}"
    );
    assert!(log.contains("registered: 5"), "{log}");
}
