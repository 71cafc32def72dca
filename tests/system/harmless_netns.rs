//! Bad actors are harmless to the other UEs: through `pcscf run` in namespaces, 20 UEs register
//! (ue-sim, core-sim) while every fifth answers the challenge with a wrong RES (the core refuses
//! it, the 403 reaches the UE over its temporary SA, and those SAs go), and a flood of garbage
//! and forged ESP hits the P-CSCF at the same time. Every honest UE registers and gets its
//! MESSAGE through; every bad packet is counted. Needs root (CI runs as root).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;

use crate::support::ims::{flood, start_pcscf};

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

#[test]
fn wrong_res_and_floods_do_not_hurt_the_other_ues() {
    // Its floods would slow the other namespace tests; their load would slow its honest UEs.
    let _alone = crate::support::exclusive();
    let lab = Lab::new("pbad", "b").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\nregister_burst_per_source = 1000\nregister_rate_per_source = 1000.0\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nhostname = \"pcscf.{REALM}\"\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let pcscf = start_pcscf(&lab, "bad", &cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let s2 = stop.clone();
    let core = spawn_in(&lab.core, move || sim::core::serve(core_addr, REALM, s2));
    std::thread::sleep(Duration::from_millis(1500));

    // the flood, from the UE namespace: garbage at 5060 and ESP with SPIs nobody gave out
    let (pcscf_ue, ue_addr) = (lab.pcscf_ue_addr, lab.ue_addr);
    let flood_stop = stop.clone();
    let flood = spawn_in(&lab.ue, move || {
        let (IpAddr::V4(from), IpAddr::V4(to)) = (ue_addr, pcscf_ue) else {
            unreachable!()
        };
        flood(from, to, &flood_stop, 2000, Duration::from_micros(200))
    });

    let ue_ip = lab.ue_addr;
    let pcscf_addr = SocketAddr::new(lab.pcscf_ue_addr, 5060);
    let s3 = stop.clone();
    let report = spawn_in(&lab.ue, move || {
        sim::ue::run(
            sim::ue::UeSimConfig {
                ue_ip,
                pcscf: pcscf_addr,
                realm: REALM.into(),
                ues: 20,
                rate: 40,
                messages: 1,
                timeout: Duration::from_secs(5),
                progress: false,
                wrong_res_every: 5,
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
    let (garbage, forged) = flood.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let core_stats = core.join().unwrap().unwrap();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let out = pcscf.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);

    assert_eq!(
        report.registered, 16,
        "every honest UE registered: {report:?}\n{log}"
    );
    assert_eq!(report.messages_ok, 16);
    assert_eq!(report.failed(), 4);
    assert_eq!(
        report.failures.get("protected REGISTER refused"),
        Some(&4),
        "the wrong-RES UEs got their 403: {report:?}"
    );
    assert_eq!(core_stats.auth_failed, 4);
    assert!(log.contains("auth_failed: 4"), "{log}");
    let count = |reason: &str| -> u64 {
        log.lines()
            .find(|l| l.contains(&format!("dropped {reason}")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count("bad_sip"), garbage, "{log}");
    assert_eq!(count("unknown_spi"), forged, "{log}");
}
