//! `pcscf ctl` against a running `pcscf run` in three network namespaces (ue — pcscf — core):
//! two simulated UEs register over IPsec through it with the core simulator, then each command
//! is run as an operator would and its output checked; `deregister` removes one UE and its SAs
//! (and tells the core); hostile clients (silent, oversized, garbage, another user) do not stop
//! the others from being served. Needs root (CI runs as root); the namespaces are removed
//! afterwards.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

fn ctl(sock: &Path, words: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pcscf"))
        .arg("ctl")
        .arg("--socket")
        .arg(sock)
        .args(words)
        .output()
        .expect("run pcscf ctl")
}

/// `pcscf ctl WORDS`, which must succeed: its standard output.
fn ok(sock: &Path, words: &[&str]) -> String {
    let o = ctl(sock, words);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "pcscf ctl {words:?}: {}\n{out}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// `pcscf ctl WORDS`, which must fail: its standard error.
fn refused(sock: &Path, words: &[&str]) -> String {
    let o = ctl(sock, words);
    assert!(!o.status.success(), "pcscf ctl {words:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(sock: &Path, words: &[&str]) -> serde_json::Value {
    let mut w = vec!["--json"];
    w.extend_from_slice(words);
    let out = ok(sock, &w);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn ctl_against_a_running_pcscf() {
    let lab =
        Lab::new("pctl", "ct").unwrap_or_else(|e| panic!("{e} (CI runs these tests as root)"));
    // (made 0700 by pcscf: it does not exist yet)
    let dir = std::env::temp_dir().join(format!("{}-ctl", lab.pcscf));
    let _ = std::fs::remove_dir_all(&dir);
    let sock = dir.join("ctl.sock");
    let config = format!(
        r#"
[ue]
interface = "{}"
addresses = ["{}"]
protected_ports = "5100-5199"
max_udp_request = 65535
[core]
interface = "{}"
address = "{}"
icscf = "{}:5060"
home_domains = ["{REALM}"]
hostname = "pcscf.{REALM}"
[dataplane]
backend = "xdp"
workers = [0]
batch = 32
ring_size = 512
frames = 2048
[control]
socket = "{}"
[log]
level = "info"
"#,
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr,
        sock.display()
    );
    let mut child = crate::support::ims::start_pcscf(&lab, "ctl", &config);
    // its log read as it comes (a full pipe would block its registration thread)
    let mut err = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let core_stop = stop.clone();
    let core = spawn_in(&lab.core, move || {
        sim::core::serve_calls(core_addr, REALM, &sim::core::CorePlan::default(), core_stop)
    });

    // up: the socket answers
    let t = Instant::now();
    while !ctl(&sock, &["help"]).status.success() {
        assert!(t.elapsed() < Duration::from_secs(10), "no control socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!((mode(&sock), mode(&dir)), (0o600, 0o700));
    // the peers ARP each other, the neighbour refresher (1 s) sees them (as `pcscf lab` does)
    for (ns, to) in [
        (&lab.ue, lab.pcscf_ue_addr),
        (&lab.core, lab.pcscf_core_addr),
    ] {
        let _ = spawn_in(ns, move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let _ = s.send_to(b"", SocketAddr::new(to, 9));
        })
        .join();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let ue_cfg = sim::ue::UeSimConfig {
        ue_ip: lab.ue_addr,
        pcscf: SocketAddr::new(lab.pcscf_ue_addr, 5060),
        realm: REALM.into(),
        ues: 2,
        rate: 10,
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
    };
    let ue_stop = stop.clone();
    let report = spawn_in(&lab.ue, move || sim::ue::run(ue_cfg, ue_stop))
        .join()
        .unwrap()
        .unwrap();
    assert_eq!((report.registered, report.failed()), (2, 0));

    // show registrations: both UEs, their current sets, their identities
    let out = ok(&sock, &["show", "registrations"]);
    println!("$ pcscf ctl show registrations\n{out}");
    for want in [
        "2 binding(s)",
        &format!("001010000000000@{REALM}"),
        &format!("001010000000001@{REALM}"),
        "registered",
        "current",
        "10.211.0.2",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
    let v = json(&sock, &["show", "registrations"]);
    let regs = v["registrations"].as_array().unwrap();
    assert_eq!(regs.len(), 2, "{v}");
    let first = &regs[0];
    let impu = first["impus"][0].as_str().unwrap().to_string();
    assert!(
        first["asserted"].as_str().unwrap().contains(&impu),
        "{first}"
    );
    let spi_ps = first["sets"][0]["spi_ps"].as_u64().unwrap();
    let spi = spi_ps.to_string();
    let v = json(&sock, &["show", "registrations", &impu]);
    assert_eq!(v["registrations"][0]["impi"], first["impi"]);

    // show sa: the four SAs, the traffic the UE sent over them
    let out = ok(&sock, &["show", "sa", &spi]);
    println!("$ pcscf ctl show sa {spi}\n{out}");
    let v = json(&sock, &["show", "sa", &spi]);
    let sas = v["sas"].as_array().unwrap();
    assert_eq!(sas.len(), 4, "{v}");
    let this = sas.iter().find(|s| s["spi"] == spi_ps).unwrap();
    assert!(
        this["seq"].as_u64().unwrap() >= 1,
        "the protected REGISTER came over it: {v}"
    );
    assert!(this["received_in_window"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        sas.iter()
            .any(|s| s["direction"] == "out" && s["seq"].as_u64().unwrap() >= 1),
        "the 200 went out over one: {v}"
    );

    // show dialogs, runtime, config
    assert!(ok(&sock, &["show", "dialogs"]).starts_with("0 dialog(s)"));
    let out = ok(&sock, &["show", "runtime"]);
    println!("$ pcscf ctl show runtime\n{out}");
    for want in [
        "per-stage time is not measured",
        "esp_in",
        "registrar.registered",
        "NS/PKT",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
    let v = json(&sock, &["show", "runtime"]);
    assert!(
        v["workers"][0]["stages"].as_array().unwrap().len() > 10,
        "{v}"
    );
    let out = ok(&sock, &["show", "config"]);
    let shown = pcscf::config::Config::parse(&out).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    assert_eq!(shown.control.socket, sock);

    // log level, there and back
    assert!(ok(&sock, &["log", "level", "debug"]).contains("log level debug (was info)"));
    assert!(ok(&sock, &["log", "level", "info"]).contains("(was debug)"));

    // hostile clients: a silent one holds nobody up; oversized and garbage lines are refused
    let mut silent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let t = Instant::now();
    ok(&sock, &["show", "runtime"]);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let mut big = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let _ = big.write_all(&vec![b'x'; 64 * 1024]);
    let mut answer = String::new();
    let _ = big.read_to_string(&mut answer);
    assert!(
        answer.starts_with("error\nrequest longer than"),
        "{answer:?}"
    );
    assert!(refused(&sock, &["reboot"]).contains("unknown command"));
    assert!(refused(&sock, &["show", "sa", "1"]).contains("no inbound SA"));
    // another user cannot reach the socket (its directory is 0700)
    let o = {
        use std::os::unix::process::CommandExt;
        Command::new(env!("CARGO_BIN_EXE_pcscf"))
            .args(["ctl", "--socket"])
            .arg(&sock)
            .args(["show", "runtime"])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is pcscf running?"),
        "{o:?}"
    );
    let mut buf = [0u8; 8];
    silent
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        silent.read(&mut buf).unwrap(),
        0,
        "the silent client was dropped"
    );

    // deregister: the UE and its SAs go, the other stays
    let out = ok(&sock, &["deregister", &impu]);
    assert!(out.contains(&format!("deregistered {impu}")), "{out}");
    let t = Instant::now();
    loop {
        let v = json(&sock, &["show", "registrations"]);
        if v["bindings"] == 1 {
            assert_ne!(v["registrations"][0]["impi"], first["impi"]);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "still there: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(refused(&sock, &["show", "sa", &spi]).contains("no inbound SA"));
    assert!(refused(&sock, &["deregister", &impu]).contains("no registration"));
    let v = json(&sock, &["show", "runtime"]);
    let counter = |name: &str| {
        v["registration_thread"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == name)
            .map_or(0, |c| c[1].as_u64().unwrap())
    };
    assert_eq!(counter("registrar.pcscf_deregistrations"), 1, "{v}");
    assert_eq!(counter("sa_table.inbound_live"), 2, "one set left: {v}");
    assert_eq!(counter("sa_table.outbound_live"), 2, "{v}");

    stop.store(true, Ordering::Relaxed);
    let _ = core.join();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("SA table invariant holds"), "{log}");
    assert!(log.contains("pcscf ctl: deregister"), "{log}");
    assert!(!sock.exists(), "the socket goes at the stop");
    assert!(refused(&sock, &["show", "runtime"]).contains("is pcscf running? socket"));
    let _ = std::fs::remove_dir_all(&dir);
}
