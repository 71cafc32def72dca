//! `pcscf run`: wiring the configuration into backends, pinned workers and the control thread.
//!
//! Owns: start-up (every backend is opened before any worker starts, so a bad interface or a
//! missing privilege is reported at once), the control loop (the registration thread's mio
//! poll on the punt queue and the DNS socket, asleep until the registrar's next deadline or the
//! next Prometheus renewal; the neighbour refresher, the stats merge and the Prometheus
//! endpoint), the `--keylog` file, SIGINT/SIGTERM handling, and the final counters. Backends
//! are dropped on the way out, which detaches an XDP program.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Backend, Config, LogLevel};
use crate::dataplane::queue::{Class, MsgQueue, Protection};
use crate::dataplane::stats::{SharedStats, WorkerStats};
use crate::dataplane::worker::{Worker, WorkerConfig};
use crate::io::PacketIo;
use crate::io::Side;
use crate::io::afpacket::{PacketMmapConfig, PacketMmapIo, PortConfig};
use crate::io::dual::DualIo;
use crate::io::neigh::{NeighReader, NeighShared, NeighTable};
use crate::io::socket::{EspBind, SocketConfig, SocketIo, UdpBind};
use crate::io::xdp::{
    AttachMode, NeighLookup, ProgramConfig, Steering, XdpIo, XdpProgram, XskConfig,
};
use crate::satable::{SaTableConfig, sa_table};

pub mod dns;
pub mod keylog;
pub mod log;
pub mod prometheus;
pub mod ratelimit;
pub mod registrar;

use registrar::{Registrar, RegistrarConfig};

/// Set by SIGINT / SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT / SIGTERM set the stop flag ([`stop_requested`]).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C"` function that only stores to an atomic, which
        // is async-signal-safe; `signal` has no other preconditions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT / SIGTERM arrived (or [`request_stop`] was called).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ask a running [`run`] to stop (what the signal handlers do).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

const WAKE: mio::Token = mio::Token(0);
/// The registration thread's DNS socket.
const DNS: mio::Token = mio::Token(1);
/// Punted messages of each class (core responses, protected REGISTERs, unprotected REGISTERs)
/// one pass of the control loop takes at most; between passes it sends what it has, reads DNS
/// and runs timers, so neither a backlog nor a flood of one class stalls the others.
pub const PASS_BUDGET: [usize; 3] = [256, 128, 64];
/// DNS datagrams one pass reads at most.
const DNS_BUDGET: usize = 64;
/// How often the registration thread's counters are renewed for Prometheus.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// The longest the control loop sleeps with nothing due: how soon it sees [`request_stop`].
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// What a run ends with.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub workers: Vec<WorkerStats>,
    /// rx-to-tx latency of all workers, merged (ns).
    pub latency: Option<hdrhistogram::Histogram<u64>>,
    pub punts_handled: u64,
    pub elapsed: Duration,
}

impl RunReport {
    pub fn total(&self) -> WorkerStats {
        let mut t = WorkerStats::default();
        for w in &self.workers {
            t.add(w);
        }
        t
    }
}

fn worker_config(cfg: &Config, id: u16) -> Result<WorkerConfig, Box<dyn std::error::Error>> {
    let core = SocketAddr::new(cfg.core.address, cfg.core.sip_port);
    Ok(WorkerConfig {
        id,
        ue_addrs: cfg.ue.addresses.clone(),
        ue_sip_port: cfg.ue.sip_port,
        protected_ports: cfg.protected_ports()?,
        core,
        icscf: cfg.core.icscf,
        stateless_relay: cfg.dataplane.stateless_relay,
        via_sent_by: core.to_string(),
        hostname: cfg.core.hostname.clone(),
        batch: cfg.dataplane.batch,
        verify_udp_checksum: cfg.dataplane.backend != Backend::Xdp,
    })
}

fn registrar_config(cfg: &Config) -> Result<RegistrarConfig, Box<dyn std::error::Error>> {
    let core = SocketAddr::new(cfg.core.address, cfg.core.sip_port);

    Ok(RegistrarConfig {
        ue_addrs: cfg.ue.addresses.clone(),
        ue_sip_port: cfg.ue.sip_port,
        protected_ports: cfg.protected_ports()?,
        core,
        icscf: cfg.core.icscf,
        dns: cfg.core.dns,
        home_domains: cfg.core.served_domains(),
        icscf_by_domain: cfg
            .core
            .icscf_by_domain
            .iter()
            .map(|(d, a)| (d.clone(), *a))
            .collect(),
        source_limit: (
            cfg.ue.register_burst_per_source,
            cfg.ue.register_rate_per_source,
        ),
        via_sent_by: core.to_string(),
        path_uri: format!("sip:term@{}:{};lr", cfg.core.hostname, cfg.core.sip_port),
        own_hosts: vec![cfg.core.hostname.clone()],
        visited_network_id: cfg.network.visited_network_id.clone(),
        orig_ioi: cfg.network.orig_ioi.clone(),
        prefs: cfg.algorithms()?,
        sa_options: crate::esp::SaOptions {
            window: cfg.ipsec.replay_window,
            ..crate::esp::SaOptions::default()
        },
        max_pending: registrar::MAX_PENDING,
    })
}

fn open_backend(
    cfg: &Config,
    index: usize,
    neigh: &Arc<NeighShared>,
    progs: &[XdpProgram],
) -> Result<Box<dyn PacketIo>, Box<dyn std::error::Error>> {
    let dp = &cfg.dataplane;
    let protected = cfg.protected_ports()?;
    Ok(match dp.backend {
        Backend::Socket => {
            let mut udp = Vec::new();
            let mut esp = Vec::new();
            for a in &cfg.ue.addresses {
                udp.push(UdpBind {
                    side: Side::Ue,
                    addr: SocketAddr::new(*a, cfg.ue.sip_port),
                });
                esp.push(EspBind {
                    side: Side::Ue,
                    addr: *a,
                });
            }
            udp.push(UdpBind {
                side: Side::Core,
                addr: SocketAddr::new(cfg.core.address, cfg.core.sip_port),
            });
            let sc = SocketConfig {
                udp,
                esp,
                frames: dp.frames,
                batch: dp.batch,
                ..SocketConfig::default()
            };
            Box::new(SocketIo::new(&sc).map_err(|e| format!("socket backend: {e}"))?)
        }
        Backend::Afpacket => {
            let mut local = cfg.ue.addresses.clone();
            local.push(cfg.core.address);
            let pc = PacketMmapConfig {
                ports: vec![
                    PortConfig {
                        ifname: cfg.ue.interface.clone(),
                        side: Side::Ue,
                    },
                    PortConfig {
                        ifname: cfg.core.interface.clone(),
                        side: Side::Core,
                    },
                ],
                local,
                udp_ports: vec![
                    cfg.ue.sip_port..=cfg.ue.sip_port,
                    cfg.core.sip_port..=cfg.core.sip_port,
                    protected,
                ],
                frames: dp.frames,
                // one placeholder set is enough; every worker's sockets join one fanout group
                placeholders: index == 0,
                fanout: (dp.workers.len() > 1).then_some(0x5c5c),
                ..PacketMmapConfig::default()
            };
            Box::new(
                PacketMmapIo::new(&pc, neigh.reader())
                    .map_err(|e| format!("afpacket backend: {e}"))?,
            )
        }
        Backend::Xdp => {
            let queue = index as u32;
            let open = |ifname: &str, side: Side| -> Result<XdpIo, Box<dyn std::error::Error>> {
                let mut xc = XskConfig::new(ifname, queue, side);
                xc.frames = dp.frames;
                xc.ring_size = dp.ring_size;
                xc.fill_frames = dp.ring_size;
                let io = XdpIo::open(
                    &xc,
                    Box::new(NeighAdapter(std::cell::RefCell::new(neigh.reader()))),
                )
                .map_err(|e| format!("xdp backend on {ifname} queue {queue}: {e}"))?;
                Ok(io)
            };
            let ue = open(&cfg.ue.interface, Side::Ue)?;
            let core = open(&cfg.core.interface, Side::Core)?;
            // each interface's program steers its queue `index` to this worker's socket
            if let [p_ue, p_core] = progs {
                p_ue.register(&ue)?;
                p_core.register(&core)?;
            }
            Box::new(DualIo::new(ue, core, dp.batch))
        }
    })
}

/// The XDP steering programs (one per interface); detached when dropped.
fn attach_xdp(cfg: &Config) -> Result<Vec<XdpProgram>, Box<dyn std::error::Error>> {
    let mode = match cfg.dataplane.xdp_mode {
        crate::config::XdpMode::Skb => AttachMode::Skb,
        crate::config::XdpMode::Drv => AttachMode::Drv,
    };
    let split = |addrs: &[std::net::IpAddr]| {
        let mut s = Steering::default();
        for a in addrs {
            match a {
                std::net::IpAddr::V4(v) => s.v4.push(*v),
                std::net::IpAddr::V6(v) => s.v6.push(*v),
            }
        }
        s
    };
    let protected = cfg.protected_ports()?;
    let mut ue = split(&cfg.ue.addresses);
    ue.udp_ports = vec![
        (cfg.ue.sip_port, cfg.ue.sip_port),
        (*protected.start(), *protected.end()),
    ];
    let mut core = split(&[cfg.core.address]);
    core.udp_ports = vec![(cfg.core.sip_port, cfg.core.sip_port)];
    let queues = cfg.dataplane.workers.len() as u32;
    let mut progs = Vec::new();
    for (ifname, steering) in [(&cfg.ue.interface, ue), (&cfg.core.interface, core)] {
        let p = XdpProgram::attach(&ProgramConfig {
            ifname: ifname.clone(),
            mode,
            steering,
            queues,
        })
        .map_err(|e| format!("attaching XDP to {ifname}: {e}"))?;
        if let Some(old) = p.replaced_stale() {
            log::warn(format_args!(
                "{ifname}: replaced a stale pcscf XDP program (id {old}, left by a crash?)"
            ));
        }
        progs.push(p);
    }
    Ok(progs)
}

/// The neighbour table as AF_XDP's next-hop lookup: one atomic load per call to pick up a new
/// snapshot; misses are reported so the refresher resolves them.
struct NeighAdapter(std::cell::RefCell<NeighReader>);

impl NeighLookup for NeighAdapter {
    fn lookup(&self, dst: std::net::IpAddr) -> Option<[u8; 6]> {
        let mut r = self.0.borrow_mut();
        r.update();
        match r.lookup(dst) {
            Some(e) => Some(e.dst_mac),
            None => {
                r.miss(dst);
                None
            }
        }
    }
}

/// Options of [`run`] beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Every SA is written there as it is created, in Wireshark's `esp_sa` format.
    pub keylog: Option<std::path::PathBuf>,
    /// Load tests only (cargo feature `bench-hooks`): install this many registered bench UEs
    /// ([`crate::preload`]) before serving, and write what each got to `preload_map`.
    pub preload_ues: u32,
    pub preload_map: Option<std::path::PathBuf>,
    /// Load tests and lab comparisons only (`--allow-stateless-relay`, a hidden flag): without
    /// it a configuration with `dataplane.stateless_relay` is refused.
    pub allow_stateless_relay: bool,
}

pub use keylog::open_keylog;

/// Why `run` refuses a configuration with `dataplane.stateless_relay`.
pub const STATELESS_RELAY_REFUSED: &str = "dataplane.stateless_relay relays unprotected requests \
of unregistered UEs to the I-CSCF: for load tests only, never in a deployment; refusing to start \
(the load tools pass --allow-stateless-relay)";

/// One pass of the control loop over the punt queue: at most [`PASS_BUDGET`] messages of each
/// class, the highest class first, into the registrar (what it sends then waits in
/// [`Registrar::poll_transmit`]). The messages handled, and whether any are left for the next
/// pass.
pub fn punt_pass(punt: &MsgQueue, registrar: &mut Registrar, now: Instant) -> (u64, bool) {
    let mut handled = 0;
    for (class, budget) in Class::ALL.into_iter().zip(PASS_BUDGET) {
        for _ in 0..budget {
            let Some(b) = punt.pop_class(class) else {
                break;
            };
            handled += 1;
            let what = match b.protection {
                Protection::Plain => "plain",
                Protection::Protected { .. } => "protected",
            };
            log::debug(format_args!(
                "punted {} bytes ({what}) from {} on {:?}",
                b.bytes().len(),
                b.src,
                b.side
            ));
            registrar.handle_message(b.borrowed(), now);
            punt.recycle(b);
        }
    }
    (handled, !punt.is_empty())
}

/// Run the P-CSCF until SIGINT/SIGTERM (or [`request_stop`]).
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<RunReport, Box<dyn std::error::Error>> {
    // The relay forwards any unprotected request from any UE to the I-CSCF, registered or
    // not and without integrity protection: a load-test shortcut, never a deployment mode.
    if cfg.dataplane.stateless_relay && !opts.allow_stateless_relay {
        return Err(STATELESS_RELAY_REFUSED.into());
    }
    let keylog = opts.keylog.as_deref();
    log::set_level(cfg.log.level);
    install_signal_handlers();
    STOP.store(false, Ordering::SeqCst);
    let started = Instant::now();

    let neigh = NeighShared::new(NeighTable::from_kernel().unwrap_or_else(|e| {
        log::warn(format_args!("neighbour table: {e}; starting empty"));
        NeighTable::empty()
    }));
    let mut poll = mio::Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), WAKE)?;
    let punt = MsgQueue::prioritized(cfg.dataplane.punt_queue, Some(waker));
    let spis = cfg.spi_range()?;
    // The registration thread is the single writer of the SA table.
    let (sa_writer, sa_reader) = sa_table(SaTableConfig {
        inbound_capacity: cfg.ipsec.max_sas,
        outbound_capacity: cfg.ipsec.max_sas,
        spi_min: *spis.start() as u32,
        spi_max: *spis.end() as u32,
    })
    .map_err(|e| format!("ipsec: SA table: {e:?}"))?;

    // Attach XDP and open every backend first: errors surface before anything runs.
    let progs = if cfg.dataplane.backend == Backend::Xdp {
        attach_xdp(cfg)?
    } else {
        Vec::new()
    };
    let mut backends = Vec::new();
    for i in 0..cfg.dataplane.workers.len() {
        let io = open_backend(cfg, i, &neigh, &progs)?;
        backends.push(io);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let refresher = neigh.spawn_refresher(Duration::from_secs(1), stop.clone());

    let mut shared = Vec::new();
    let mut handles = Vec::new();
    // One inject queue per worker: the registration thread sends through the workers' TX path.
    let mut injects = Vec::new();
    for (i, (io, &core)) in backends.into_iter().zip(&cfg.dataplane.workers).enumerate() {
        let wcfg = worker_config(cfg, i as u16)?;
        let st = Arc::new(SharedStats::default());
        shared.push(st.clone());
        let punt = punt.clone();
        let stop = stop.clone();
        let sas = sa_reader.clone();
        let inject = MsgQueue::new(cfg.dataplane.punt_queue, None);
        injects.push(inject.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        log::warn(format_args!("worker {i}: could not pin to core {core}"));
                    }
                    let mut w = Worker::new(io, wcfg, punt, st)
                        .with_sas(sas)
                        .with_inject(inject);
                    w.run(&stop);
                })?,
        );
    }
    log::info(format_args!(
        "running: {} worker(s) on cores {:?}, backend {:?}, UE side {} {:?}:{}, core side {} {}:{}",
        cfg.dataplane.workers.len(),
        cfg.dataplane.workers,
        cfg.dataplane.backend,
        cfg.ue.interface,
        cfg.ue.addresses,
        cfg.ue.sip_port,
        cfg.core.interface,
        cfg.core.address,
        cfg.core.sip_port
    ));

    // The registration thread's counters, as Prometheus text, renewed every PUBLISH_EVERY (the
    // metrics thread only copies it: the registrar is never shared).
    let control_text = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = cfg.stats.prometheus {
        spawn_prometheus(addr, shared.clone(), control_text.clone(), stop.clone())?;
    }

    // The control loop: the registration thread. It drains the punt queue into the registrar
    // and hands what it sends to the workers' inject queues.
    let mut registrar = Registrar::new(registrar_config(cfg)?, sa_writer);
    let mut keylog_file = None;
    if let Some(path) = keylog {
        let f = keylog::FileKeyLog::open(path)
            .map_err(|e| format!("--keylog {}: {e}", path.display()))?;
        log::warn(format_args!(
            "writing ESP keys to {} (Wireshark esp_sa): protect that file",
            path.display()
        ));
        let f = Arc::new(f);
        registrar.set_keylog(f.clone());
        keylog_file = Some(f);
    }
    if opts.preload_ues > 0 {
        preload(&mut registrar, opts)?;
    }
    // The DNS socket (non-blocking): the registrar's resolver is sans-IO, this loop carries
    // its queries and answers.
    let mut dns_sock = match cfg.core.dns {
        Some(server) => {
            let bind: SocketAddr = if server.is_ipv4() {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let mut s = mio::net::UdpSocket::bind(bind)?;
            poll.registry()
                .register(&mut s, DNS, mio::Interest::READABLE)?;
            Some(s)
        }
        None => None,
    };
    let mut dns_buf = vec![0u8; 4096];
    let mut events = mio::Events::with_capacity(64);
    let mut punts: u64 = 0;
    let mut inject_dropped: u64 = 0;
    let mut last_publish = Instant::now();
    // more to do than one pass took: poll without sleeping
    let mut backlog = false;
    while !STOP.load(Ordering::SeqCst) {
        // Sleep until the registrar's next deadline, the next Prometheus renewal, or a punt or
        // DNS answer wakes us.
        let before = Instant::now();
        let mut wait = if backlog { Duration::ZERO } else { IDLE_WAIT };
        if let Some(t) = registrar.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(before));
        }
        if cfg.stats.prometheus.is_some() {
            wait = wait.min((last_publish + PUBLISH_EVERY).saturating_duration_since(before));
        }
        let _ = poll.poll(&mut events, Some(wait));
        let now = Instant::now();
        backlog = false;
        if let Some(s) = dns_sock.as_mut() {
            let mut read = 0;
            while read < DNS_BUDGET {
                match s.recv_from(&mut dns_buf) {
                    Ok((n, from)) => registrar.handle_dns(from, &dns_buf[..n], now),
                    Err(_) => break,
                }
                read += 1;
            }
            // (edge-triggered: what is left gives no new event, so come back at once)
            backlog |= read == DNS_BUDGET;
        }
        if registrar.poll_timeout().is_some_and(|t| t <= now) {
            registrar.handle_timeout(now);
        }
        // One bounded pass, the highest class first.
        let (handled, left) = punt_pass(&punt, &mut registrar, now);
        punts += handled;
        backlog |= left;
        while let Some((server, q)) = registrar.poll_dns_query() {
            if let Some(s) = dns_sock.as_ref() {
                // a lost query is sent again by the resolver's timer
                let _ = s.send_to(&q, server);
            }
        }
        while let Some(o) = registrar.poll_transmit() {
            // Messages of one UE always go through the same worker.
            let w = match o.dst.ip() {
                std::net::IpAddr::V4(a) => u32::from(a) as usize,
                std::net::IpAddr::V6(a) => a.segments()[7] as usize,
            } % injects.len().max(1);
            if injects[w].push(o.borrowed(), 0).is_err() {
                inject_dropped += 1;
            }
        }
        if cfg.stats.prometheus.is_some() && now.duration_since(last_publish) >= PUBLISH_EVERY {
            last_publish = now;
            let text = control_metrics(&registrar);
            *control_text.lock().unwrap_or_else(|p| p.into_inner()) = text;
        }
    }
    if inject_dropped > 0 {
        log::warn(format_args!(
            "{inject_dropped} messages of the registration thread found the inject queue full"
        ));
    }
    log::info(format_args!("registrar: {:?}", registrar.stats));
    log::info(format_args!("registrar DNS: {:?}", registrar.dns_stats()));
    // Every SA in the table belongs to a set a binding holds, and the other way round (a
    // leak here would, over days, fill the table): checked once on the way out, where a walk
    // over every binding costs nothing.
    let st = registrar.sa_table_stats();
    match registrar.check_sa_invariants() {
        Ok(()) => log::info(format_args!(
            "registrar: SA table invariant holds ({} inbound, {} outbound entries)",
            st.inbound_live, st.outbound_live
        )),
        Err(e) => log::warn(format_args!("registrar: SA table invariant BROKEN: {e}")),
    }
    let cpu = thread_cpu_seconds();
    log::info(format_args!(
        "registration thread: {punts} messages handled, {:.3} s of CPU ({:.1} us per message)",
        cpu,
        if punts > 0 {
            cpu * 1e6 / punts as f64
        } else {
            0.0
        }
    ));
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    let _ = refresher.join();
    drop(registrar); // the SA table's writer
    if let Some(f) = keylog_file {
        if f.dropped() > 0 {
            log::warn(format_args!(
                "--keylog: {} SA lines dropped (the file's writer fell behind)",
                f.dropped()
            ));
        }
        drop(f); // what is queued is written, the file closed
    }
    drop(injects);
    drop(progs); // detach XDP
    let mut latency = crate::dataplane::stats::new_histogram();
    for s in &shared {
        let _ = latency.add(s.latency());
    }
    let report = RunReport {
        workers: shared.iter().map(|s| s.snapshot()).collect(),
        latency: Some(latency),
        punts_handled: punts,
        elapsed: started.elapsed(),
    };
    Ok(report)
}

/// `--bench-preload-ues`: registered bench UEs, their map file, and the resident memory they
/// took (the memory-per-UE figure of perf/RESULTS.md).
#[cfg(feature = "bench-hooks")]
fn preload(registrar: &mut Registrar, opts: &RunOptions) -> Result<(), Box<dyn std::error::Error>> {
    use crate::preload::{BenchUe, MAX_UES, rss_bytes};
    if opts.preload_ues > MAX_UES {
        return Err(format!("--bench-preload-ues: at most {MAX_UES}").into());
    }
    log::warn(format_args!(
        "bench hook: installing {} registered UEs with public keys: never in a deployment",
        opts.preload_ues
    ));
    let before = rss_bytes().unwrap_or(0);
    let t = Instant::now();
    let mut map = String::new();
    for i in 0..opts.preload_ues {
        let a = registrar
            .bench_preload(
                &BenchUe::new(i),
                Duration::from_secs(24 * 3600),
                Instant::now(),
            )
            .map_err(|e| format!("bench preload of UE {i}: {e}"))?;
        if opts.preload_map.is_some() {
            map.push_str(&a.line());
        }
    }
    let after = rss_bytes().unwrap_or(0);
    if let Some(p) = &opts.preload_map {
        std::fs::write(p, map).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    // one line for scripts to read
    println!(
        "bench-preload: ues={} seconds={:.3} rss_before={} rss_after={} bytes_per_ue={}",
        opts.preload_ues,
        t.elapsed().as_secs_f64(),
        before,
        after,
        after.saturating_sub(before) / u64::from(opts.preload_ues)
    );
    Ok(())
}

#[cfg(not(feature = "bench-hooks"))]
fn preload(_: &mut Registrar, _: &RunOptions) -> Result<(), Box<dyn std::error::Error>> {
    Err("--bench-preload-ues needs a build with the bench-hooks feature".into())
}

/// User + system CPU time of the calling thread.
fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the rusage we pass; RUSAGE_THREAD needs nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Prometheus text format (version 0.0.4) on `GET /metrics`, one connection at a time, from a
/// thread of its own ([`prometheus::serve`] bounds what each client may cost).
fn spawn_prometheus(
    addr: SocketAddr,
    shared: Vec<Arc<SharedStats>>,
    control: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("prometheus".into())
        .spawn(move || {
            prometheus::serve(listener, &stop, || {
                let mut text = metrics_text(&shared);
                text.push_str(&control.lock().unwrap_or_else(|p| p.into_inner()));
                text
            })
        })?;
    Ok(())
}

/// The registration thread's counters and its SA table's occupancy, in Prometheus text format.
pub fn control_metrics(registrar: &Registrar) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (name, v) in registrar.stats.named() {
        let _ = writeln!(out, "pcscf_registrar_events_total{{event=\"{name}\"}} {v}");
    }
    for (name, v) in registrar.dns_stats().named() {
        let _ = writeln!(out, "pcscf_dns_events_total{{event=\"{name}\"}} {v}");
    }
    let st = registrar.sa_table_stats();
    for (name, v) in [
        ("inbound_reserved", st.inbound_used),
        ("inbound_live", st.inbound_live),
        ("outbound_live", st.outbound_live),
        ("outbound_tombstones", st.outbound_tombstones),
    ] {
        let _ = writeln!(out, "pcscf_sa_table_entries{{kind=\"{name}\"}} {v}");
    }
    out
}

pub fn metrics_text(shared: &[Arc<SharedStats>]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (i, s) in shared.iter().enumerate() {
        s.snapshot().write_prometheus(&i.to_string(), &mut out);
        let h = s.latency();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let _ = writeln!(
                out,
                "pcscf_rx_tx_latency_ns{{worker=\"{i}\",quantile=\"{q}\"}} {}",
                h.value_at_quantile(q)
            );
        }
        let _ = writeln!(
            out,
            "pcscf_rx_tx_latency_ns_count{{worker=\"{i}\"}} {}",
            h.len()
        );
    }
    out
}

/// The final counters, as printed on exit.
pub fn print_report(r: &RunReport, level: LogLevel) {
    let t = r.total();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "pcscf: stopped after {:.1} s: rx {} tx {} forwarded {} punted {} replied {} dropped {} ({:.0} pkt/s in)",
        secs,
        t.rx,
        t.tx,
        t.forwarded,
        t.punted,
        t.replied,
        t.dropped(),
        t.rx as f64 / secs
    );
    if let Some(h) = r.latency.as_ref().filter(|h| !h.is_empty()) {
        eprintln!(
            "pcscf:   rx-to-tx latency: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    for d in crate::dataplane::stats::DropReason::ALL {
        let n = t.drops[d as usize];
        if n > 0 {
            eprintln!("pcscf:   dropped {:<18} {n}", d.name());
        }
    }
    if level >= LogLevel::Info {
        for (i, w) in r.workers.iter().enumerate() {
            let ns = w.busy_ns.checked_div(w.rx).unwrap_or(0);
            eprintln!(
                "pcscf:   worker {i}: rx {} tx {} batches {} ~{ns} ns/packet",
                w.rx, w.tx, w.batches
            );
        }
    }
}
