//! Registrations that survive the P-CSCF (issue 16), end to end in three network namespaces:
//! 100 simulated UEs register through `pcscf run` with `[state] backend = "file"` and send
//! protected MESSAGEs every 100 ms; mid-traffic pcscf is killed with SIGKILL and started again.
//! Every MESSAGE is answered (the ones in flight during the restart after the UEs' own
//! retransmissions), no UE registers again, no ESP sequence number reaches a UE twice (the UE
//! side records every one), and the SA-table invariant holds in the restarted process. A store
//! that is not a store, or was sealed under another key, costs the UEs a registration, never
//! the start. Needs root and `ip` (CI runs as root); the namespaces are removed afterwards.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;

use crate::support::ims::scrape;

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";
/// The persisted ceilings go this far ahead: small, so that the sweep raises them (and the
/// writes make them durable) several times in each UE's MESSAGEs, before and after the kill.
const SEQ_STEP_TEST: u32 = 16;
const PROM_PORT: u16 = 9181;

fn lab(tag: &str) -> Lab {
    Lab::new("pstate", tag).unwrap_or_else(|e| panic!("{e} (CI runs these tests as root)"))
}

/// A fresh directory for the store, the key and the configuration.
fn workdir(lab: &Lab) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{}-state", lab.pcscf));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A seal key file (0600) of `byte` repeated, as hex.
fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{}\n", hex::repeat(byte))).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

mod hex {
    pub fn repeat(b: u8) -> String {
        format!("{b:02x}").repeat(32)
    }
}

fn config(lab: &Lab, dir: &Path, key: &Path) -> PathBuf {
    let state = format!(
        "backend = \"file\"\npath = \"{}\"",
        dir.join("state.redb").display()
    );
    config_with(
        (&lab.pcscf_ue_if, &lab.pcscf_core_if),
        lab,
        dir.join("pcscf.toml"),
        &state,
        key,
    )
}

/// A configuration on the interfaces `ifs` with the `[state]` lines given.
fn config_with(
    (ue_if, core_if): (&str, &str),
    lab: &Lab,
    path: PathBuf,
    state: &str,
    key: &Path,
) -> PathBuf {
    let text = format!(
        r#"
[ue]
interface = "{}"
addresses = ["{}"]
protected_ports = "5100-5999"
register_burst_per_source = 1000000
register_rate_per_source = 1000000.0
[core]
interface = "{}"
address = "{}"
icscf = "{}:5060"
hostname = "pcscf.{REALM}"
[dataplane]
backend = "socket"
workers = [0]
[stats]
prometheus = "127.0.0.1:{PROM_PORT}"
[state]
{state}
seal_key_file = "{}"
seq_step = {SEQ_STEP_TEST}
[log]
level = "info"
"#,
        ue_if,
        lab.pcscf_ue_addr,
        core_if,
        lab.pcscf_core_addr,
        lab.core_addr,
        key.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `pcscf run` in the P-CSCF namespace, its stderr read as it comes (a full pipe would block
/// its log writes).
struct Pcscf {
    child: Child,
    log: Option<JoinHandle<String>>,
}

fn start(lab: &Lab, config: &Path) -> Pcscf {
    start_in(&lab.pcscf, config)
}

fn start_in(ns: &str, config: &Path) -> Pcscf {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_pcscf"),
            "run",
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pcscf");
    let mut err = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Pcscf {
        child,
        log: Some(log),
    }
}

impl Pcscf {
    /// Its log once it exited.
    fn log(&mut self) -> String {
        self.log.take().unwrap().join().unwrap()
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(15), "pcscf did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, a clean exit, and its log.
    fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit();
        let log = self.log();
        assert!(status.success(), "pcscf exited with {status}:\n{log}");
        log
    }

    /// SIGKILL: no clean-up, no last write.
    fn kill9(mut self) -> String {
        self.signal(libc::SIGKILL);
        self.wait_exit();
        self.log()
    }
}

/// The core simulator (I-CSCF + S-CSCF + HSS) until `stop`.
fn core(lab: &Lab, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let addr = SocketAddr::new(lab.core_addr, 5060);
    let plan = sim::core::CorePlan {
        calls: 0,
        rate: 1,
        after_registered: 1,
        timeout: Duration::from_secs(5),
        flows: sim::call::CallPlan::parse("basic").unwrap(),
        transport: sim::ue::Transport::Udp,
        max_udp_request: 65535,
        network_dereg: 0,
        network_dereg_event: sim::regevent::ContactEvent::Deactivated,
    };
    let h = spawn_in(&lab.core, move || {
        let _ = sim::core::serve_calls(addr, REALM, &plan, stop);
    });
    // each side's kernel learns the other's link address, and pcscf's neighbour refresher
    // (1 s) takes it in
    for (ns, to) in [
        (&lab.ue, lab.pcscf_ue_addr),
        (&lab.core, lab.pcscf_core_addr),
    ] {
        let _ = spawn_in(ns, move || {
            if let Ok(s) = std::net::UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0)) {
                let _ = s.send_to(b"", SocketAddr::new(to, 9));
            }
        })
        .join();
    }
    h
}

/// `n` UEs in the UE namespace: register, then `messages` MESSAGEs each, `interval` apart,
/// every ESP sequence number from the P-CSCF recorded.
fn ues(
    lab: &Lab,
    n: usize,
    messages: u32,
    interval: Duration,
) -> JoinHandle<std::io::Result<sim::ue::UeSimReport>> {
    let cfg = sim::ue::UeSimConfig {
        ue_ip: lab.ue_addr,
        pcscf: SocketAddr::new(lab.pcscf_ue_addr, 5060),
        realm: REALM.into(),
        ues: n,
        rate: 200,
        messages,
        // long enough for a MESSAGE's retransmissions (0.5 + 1 + 2 s) to meet the restarted
        // P-CSCF
        timeout: Duration::from_secs(8),
        progress: false,
        wrong_res_every: 0,
        reregister: false,
        calls: 0,
        call_rate: 1,
        incoming_calls: 0,
        flows: sim::call::CallPlan::parse("basic").unwrap(),
        transport: sim::ue::Transport::Udp,
        message_size: sim::ue::DEFAULT_MESSAGE_SIZE,
        hostile: Default::default(),
        message_interval: interval,
        check_seq: true,
    };
    let stop = Arc::new(AtomicBool::new(false));
    spawn_in(&lab.ue, move || sim::ue::run(cfg, stop))
}

fn registered(lab: &Lab) -> u64 {
    scrape(lab, PROM_PORT)
        .get("pcscf_registrar_events_total{event=\"registered\"}")
        .copied()
        .unwrap_or(0)
}

/// Waits until the P-CSCF has `n` registrations (its Prometheus endpoint).
fn wait_registered(lab: &Lab, n: u64) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if std::panic::catch_unwind(|| registered(lab)).unwrap_or(0) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{n} registrations not reached in 30 s");
}

/// The restarted run's own `registered` counter, from its stop report (`RegistrarStats`).
fn stat(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("registrar: RegistrarStats"))
        .unwrap_or_else(|| panic!("no registrar stats in:\n{log}"));
    let at = line.find(&format!(" {name}: ")).unwrap() + name.len() + 3;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

const N: usize = 100;
const MESSAGES: u32 = 40;

/// What the UEs and the node that served them after the kill must show: every UE registered
/// once, every MESSAGE answered across the kill, no ESP sequence number twice, the numbers
/// resumed past the persisted ceilings, no registration in the second node, all restored,
/// the SA-table invariant.
fn check_survived(report: &sim::ue::UeSimReport, log: &str) {
    report.print();
    assert!(
        log.contains(&format!("{N} registrations restored ({N} SA sets)")),
        "every binding restored:\n{log}"
    );
    assert_eq!(report.registered, N, "{:?}", report.failures);
    assert_eq!(report.failed(), 0, "{:?}\n{log}", report.failures);
    assert_eq!(
        report.messages_ok,
        N as u64 * u64::from(MESSAGES),
        "every MESSAGE answered, across the kill"
    );
    assert_eq!(
        report.esp_seq_repeated, 0,
        "RFC 4303 §3.3.3: no number twice"
    );
    // each UE's SA2 carried its 200s (about one per MESSAGE): a restored SA resumed past its
    // ceiling, so the highest number is past what was sent
    assert!(
        report.esp_seq_max > MESSAGES + 1,
        "the restored SAs resumed past their persisted ceilings ({})",
        report.esp_seq_max
    );
    assert_eq!(stat(log, "registered"), 0, "no UE registered again:\n{log}");
    assert_eq!(stat(log, "restored_sets"), N as u64);
    assert!(
        log.contains("SA table invariant holds"),
        "SA-table invariant:\n{log}"
    );
}

#[test]
fn registrations_survive_sigkill_and_restart() {
    // the UEs' retransmission windows must meet the restarted process: no other load
    let _alone = crate::support::exclusive();
    let lab = lab("k");
    let dir = workdir(&lab);
    let key = key_file(&dir, "state.key", 0x5c);
    let cfg = config(&lab, &dir, &key);
    let first = start(&lab, &cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let core = core(&lab, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));

    let ue = ues(&lab, N, MESSAGES, Duration::from_millis(100));
    wait_registered(&lab, N as u64);
    // mid-traffic: each UE is some MESSAGEs into its 4 s of them
    std::thread::sleep(Duration::from_millis(1200));
    let killed_log = first.kill9();
    assert!(
        killed_log.contains("state: file"),
        "the store was opened:\n{killed_log}"
    );
    let mode = std::fs::metadata(dir.join("state.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the store is its owner's only");
    let raw = std::fs::read(dir.join("state.redb")).unwrap();
    assert!(
        !raw.windows(20)
            .any(|w| w == b"001010000000001@ims.".as_slice()),
        "no identity in the clear in the store"
    );
    let second = start(&lab, &cfg);

    let report = ue.join().unwrap().expect("ue-sim ran");
    let log = second.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = core.join();
    check_survived(&report, &log);
    let _ = std::fs::remove_dir_all(&dir);
}

/// redis-server in the core namespace (both nodes reach it over their core links), without
/// persistence of its own; killed on drop.
struct Redis(Child);

const REDIS_PORT: u16 = 16379;

impl Redis {
    fn start(lab: &Lab) -> Redis {
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.core, "redis-server", "--bind"])
            .arg(lab.core_addr.to_string())
            .args(["--port", &REDIS_PORT.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e} (.ci/run installs it)"));
        let to = SocketAddr::new(lab.core_addr, REDIS_PORT);
        let up = spawn_in(&lab.core, move || {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        });
        assert!(up.join().unwrap(), "redis-server did not come up");
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pair of nodes sharing their state in Redis: the active one is killed mid-traffic, its
/// service addresses move to the standby's links (as VRRP would), the standby starts there and
/// serves every UE without a re-registration.
#[test]
fn the_standby_takes_over_from_redis_without_re_registration() {
    let _alone = crate::support::exclusive();
    let lab = lab("t");
    let standby = lab.add_standby().unwrap();
    let dir = workdir(&lab);
    let key = key_file(&dir, "state.key", 0x6d);
    let redis = Redis::start(&lab);
    let state = format!(
        "backend = \"redis\"\nredis_url = \"redis://{}:{REDIS_PORT}/0\"\nredis_prefix = \"pair-test:\"",
        lab.core_addr
    );
    let cfg_a = config_with(
        (&lab.pcscf_ue_if, &lab.pcscf_core_if),
        &lab,
        dir.join("a.toml"),
        &state,
        &key,
    );
    let cfg_b = config_with(
        (&standby.ue_if, &standby.core_if),
        &lab,
        dir.join("b.toml"),
        &state,
        &key,
    );
    let active = start(&lab, &cfg_a);
    let stop = Arc::new(AtomicBool::new(false));
    let core = core(&lab, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));

    let ue = ues(&lab, N, MESSAGES, Duration::from_millis(100));
    wait_registered(&lab, N as u64);
    std::thread::sleep(Duration::from_millis(1200));
    let killed_log = active.kill9();
    assert!(killed_log.contains("state: redis"), "{killed_log}");
    standby.take_over().unwrap();
    let second = start_in(&standby.ns, &cfg_b);

    let report = ue.join().unwrap().expect("ue-sim ran");
    let log = second.stop();
    stop.store(true, Ordering::Relaxed);
    let _ = core.join();
    drop(redis);
    check_survived(&report, &log);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreadable_store_or_another_seal_key_costs_a_registration_not_the_start() {
    let lab = lab("c");
    let dir = workdir(&lab);
    let stop = Arc::new(AtomicBool::new(false));
    let key_a = key_file(&dir, "a.key", 0x11);
    let key_b = key_file(&dir, "b.key", 0x22);
    let store = dir.join("state.redb");

    // 1. a truncated, overwritten store: moved aside, the P-CSCF serves new registrations
    std::fs::write(&store, b"this is not a redb file, it was cut short").unwrap();
    let p = start(&lab, &config(&lab, &dir, &key_a));
    let core = core(&lab, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let r = ues(&lab, 10, 1, Duration::ZERO).join().unwrap().unwrap();
    let log = p.stop();
    assert_eq!(
        (r.registered, r.failed()),
        (10, 0),
        "{:?}\n{log}",
        r.failures
    );
    assert!(
        log.contains("is not a readable store") && log.contains("moved to"),
        "says what it could not restore:\n{log}"
    );
    assert!(
        std::fs::read_dir(&dir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("unreadable")),
        "the bad file kept aside for the operator"
    );

    // 2. the store of that run, opened under another key: nothing restored, all said, and the
    //    UEs register again
    let p = start(&lab, &config(&lab, &dir, &key_b));
    std::thread::sleep(Duration::from_millis(1500));
    let r = ues(&lab, 10, 1, Duration::ZERO).join().unwrap().unwrap();
    let log = p.stop();
    assert_eq!(
        (r.registered, r.failed()),
        (10, 0),
        "{:?}\n{log}",
        r.failures
    );
    assert!(
        log.contains("10 of 10 records") && log.contains("could not be read"),
        "says what it could not restore:\n{log}"
    );
    assert_eq!(stat(&log, "restored_sets"), 0);

    // 3. a key file others may read is refused at start, with the reason
    std::fs::set_permissions(&key_b, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut p = start(&lab, &config(&lab, &dir, &key_b));
    let status = p.wait_exit();
    let log = p.log();
    assert!(!status.success());
    assert!(log.contains("readable by others"), "{log}");

    stop.store(true, Ordering::Relaxed);
    let _ = core.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP: the file is read again; the log level, the per-source limits and the home domains
/// are applied while it runs, a changed key that needs a restart is named (and keeps its
/// running value), and a file that no longer parses changes nothing.
#[test]
fn sighup_applies_what_it_can_and_names_the_rest() {
    let lab = lab("h");
    let dir = workdir(&lab);
    let key = key_file(&dir, "state.key", 0x77);
    let cfg = config(&lab, &dir, &key);
    let p = start(&lab, &cfg);
    std::thread::sleep(Duration::from_millis(1500));
    let text = std::fs::read_to_string(&cfg).unwrap();
    let edited = text
        .replace("level = \"info\"", "level = \"debug\"")
        .replace(
            "register_rate_per_source = 1000000.0",
            "register_rate_per_source = 50.0",
        )
        .replace(
            "protected_ports = \"5100-5999\"",
            "protected_ports = \"6100-6999\"",
        );
    assert_ne!(edited, text);
    std::fs::write(&cfg, edited).unwrap();
    p.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(600));
    std::fs::write(&cfg, "[ue]\nthis is not toml").unwrap();
    p.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(600));
    let log = p.stop();
    assert!(
        log.contains("applied log.level, ue.register_rate_per_source"),
        "{log}"
    );
    assert!(log.contains("need a restart): ue.protected_ports"), "{log}");
    assert!(log.contains("SIGHUP: nothing reloaded"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
