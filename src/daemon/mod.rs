//! `pcscf run`: the daemon's wiring of the configuration into backends, pinned workers and the
//! registration thread (the control plane of `control/` does the protocol work; this module
//! does its I/O and the process around it).
//!
//! Owns: start-up (every backend is opened before any worker starts, so a bad interface or a
//! missing privilege is reported at once: `backends.rs`), the pinned workers (`workers.rs`), the
//! control loop that carries the registrar's inputs and outputs (`registration.rs`), the
//! `--keylog` file, SIGINT/SIGTERM (`signals.rs`), the Prometheus endpoint (`prometheus.rs`), the
//! operator's control socket (`ctl.rs`, for `pcscf ctl`), systemd's readiness notification
//! (`notify.rs`) and the final counters (`report.rs`).
//! Backends are dropped on the way out, which detaches an XDP program.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Backend, Config};
use crate::control::registrar::Registrar;
use crate::control::{keylog, log};
use crate::daemon::core_tcp::{CoreTcp, CoreTcpConfig};
use crate::dataplane::MsgQueue;
use crate::io::{NeighShared, NeighTable};
use crate::satable::{SaTableConfig, sa_table};

mod backends;
pub mod core_tcp;
mod ctl;
pub mod metrics;
mod notify;
mod prometheus;
mod registration;
mod reload;
mod report;
mod signals;
pub mod state;
mod workers;

pub use ctl::{CtlServer, CtlStats, Limits as CtlLimits, request as ctl_request};
pub use metrics::metrics_text;
pub use registration::{PASS_BUDGET, punt_pass};
pub use report::{RunReport, print_report};
pub use signals::{install_signal_handlers, request_stop, stop_requested};

/// Options of [`run`] beyond the configuration file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Every SA is written there as it is created, in Wireshark's `esp_sa` format.
    pub keylog: Option<std::path::PathBuf>,
    /// Load tests only (cargo feature `bench-hooks`): install this many registered bench UEs
    /// (`crate::preload`) before serving, and write what each got to `preload_map`.
    pub preload_ues: u32,
    pub preload_map: Option<std::path::PathBuf>,
    /// Load tests and lab comparisons only (`--allow-stateless-relay`, a hidden flag): without
    /// it a configuration with `dataplane.stateless_relay` is refused.
    pub allow_stateless_relay: bool,
    /// The configuration file, read again on SIGHUP (`daemon::reload`).
    pub config_path: Option<std::path::PathBuf>,
}

/// Why `run` refuses a configuration with `dataplane.stateless_relay`.
/// NOTIFYs too large for a worker's queue waiting for the registration thread at most (64 KiB
/// each at most: the core TCP framer's bound).
const LARGE_DEPTH: usize = 64;

pub const STATELESS_RELAY_REFUSED: &str = "dataplane.stateless_relay relays unprotected requests \
of unregistered UEs to the I-CSCF: for load tests only, never in a deployment; refusing to start \
(the load tools pass --allow-stateless-relay)";

/// Run the P-CSCF until SIGINT/SIGTERM (or [`request_stop`]).
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<RunReport, Box<dyn std::error::Error>> {
    // The relay forwards any unprotected request from any UE to the I-CSCF, registered or
    // not and without integrity protection: a load-test shortcut, never a deployment mode.
    if cfg.dataplane.stateless_relay && !opts.allow_stateless_relay {
        return Err(STATELESS_RELAY_REFUSED.into());
    }
    let keylog = opts.keylog.as_deref();
    log::set_level(cfg.log.level);
    // log lines through a thread of their own: a slow stderr never blocks the registration
    // thread (written out, in order, when this returns)
    let _log_writer = log::spawn_writer()?;
    install_signal_handlers();
    signals::clear();
    let started = Instant::now();

    let neigh = NeighShared::new(NeighTable::from_kernel().unwrap_or_else(|e| {
        log::warn(format_args!("neighbour table: {e}; starting empty"));
        NeighTable::empty()
    }));
    let mut poll = mio::Poll::new()?;
    let waker = mio::Waker::new(poll.registry(), registration::WAKE)?;
    let punt = MsgQueue::prioritized(cfg.dataplane.punt_queue, Some(waker));
    // Dialog events have their own buffers: a burst of calls never costs a REGISTER its punt
    // (the workers wake the registration thread through the punt queue's waker).
    let dialog_events = MsgQueue::new(cfg.dataplane.punt_queue, None);
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
        backends::attach_xdp(cfg)?
    } else {
        Vec::new()
    };
    let mut backends = Vec::new();
    for i in 0..cfg.dataplane.workers.len() {
        let io = backends::open_backend(cfg, i, &neigh, &progs)?;
        backends.push(io);
    }

    // SIP over TCP with the core: listening before any worker starts (a port taken is
    // reported at once); one queue per worker of what it framed, one queue of what goes out.
    let core_in: Vec<Arc<MsgQueue>> = (0..backends.len())
        .map(|_| MsgQueue::new(cfg.dataplane.punt_queue, None))
        .collect();
    let listen = std::net::SocketAddr::new(cfg.core.address, cfg.core.sip_port);
    let (mut core_tcp, core_out) = CoreTcp::bind(
        CoreTcpConfig {
            max_connections: cfg.core.tcp_connections,
            ..CoreTcpConfig::new(listen)
        },
        core_in.clone(),
        cfg.dataplane.punt_queue,
    )
    .map_err(|e| format!("core side: listening on TCP {listen}: {e}"))?;
    // NOTIFYs too large for a worker's queue go straight to the registration thread
    let large = core_tcp::LargeToRegistrar::new(LARGE_DEPTH, punt.clone());
    core_tcp.set_large(large.clone());
    let core_tcp_stats = core_tcp.stats();
    // the control socket before any thread starts: an unsafe or unusable control.socket is said
    // at once (after the backends, whose errors, a missing privilege say, come first)
    let ctl_server = ctl::bind(cfg, poll.registry())?;

    let stop = Arc::new(AtomicBool::new(false));
    let refresher = neigh.spawn_refresher(Duration::from_secs(1), stop.clone());
    let core_tcp_thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("core-tcp".into())
            .spawn(move || core_tcp.run(&stop))?
    };

    // The registrar, and what the store kept of the last run, before any worker looks at a
    // packet: a restored UE's first packet finds its SAs.
    let mut registrar = Registrar::new(registration::registrar_config(cfg)?, sa_writer);
    let mut state_writer = match state::open(&cfg.state)? {
        None => None,
        Some((mut store, sealer)) => {
            registrar.enable_persistence(crate::control::registrar::PersistOptions {
                seq_step: cfg.state.seq_step,
                store_may_lose_writes: store.may_lose_writes(),
            });
            let t = Instant::now();
            let r = state::restore(&mut *store, &sealer, &mut registrar)?;
            log::info(format_args!(
                "state: {}: {} records, {} registrations restored ({} SA sets) in {:.3} s; \
                 {} sets expired, {} not restorable, {} records unreadable",
                store.describe(),
                r.records,
                r.bindings,
                r.sets,
                t.elapsed().as_secs_f64(),
                r.expired,
                r.failed,
                r.unreadable
            ));
            Some(state::Writer::spawn(store, sealer)?)
        }
    };
    let workers::Workers {
        shared,
        handles,
        injects,
    } = workers::spawn(
        cfg,
        backends,
        (&punt, &dialog_events),
        (&core_in, &core_out),
        &sa_reader,
        &stop,
    )?;
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

    // The registration thread's numbers, renewed every PUBLISH_EVERY (the metrics thread
    // reads this copy: the registrar is never shared).
    let control = Arc::new(Mutex::new(metrics::ControlSnapshot::default()));
    if let Some(addr) = cfg.stats.prometheus {
        let registry = metrics::registry(
            shared.clone(),
            Some(core_tcp_stats.clone()),
            control.clone(),
        );
        prometheus::spawn(addr, registry, stop.clone())?;
    }

    // The control loop: the registration thread. It drains the punt queue into the registrar
    // and hands what it sends to the workers' inject queues.
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
    let mut ctl = ctl_server
        .map(|s| ctl::CtlShell::new(s, cfg, (shared.clone(), core_tcp_stats.clone()), started));
    // Type=notify: everything that can fail at start has; the workers run, the control socket is
    // bound (what connects now waits in its backlog for the loop below)
    notify::notify("READY=1");
    let counts = registration::serve(
        cfg,
        &mut registrar,
        &mut poll,
        (&punt, &dialog_events, &large),
        &injects,
        &control,
        (
            state_writer.as_mut(),
            ctl.as_mut(),
            opts.config_path.as_deref(),
        ),
    )?;
    notify::notify("STOPPING=1");
    if let Some(c) = &ctl {
        log::info(format_args!("control socket: {:?}", c.stats()));
    }
    drop(ctl); // the socket file goes
    report::log_registration_stop(&registrar, &counts);
    stop.store(true, Ordering::SeqCst);
    for h in handles {
        let _ = h.join();
    }
    if let Some(w) = state_writer.as_mut() {
        // the workers are stopped: the inbound marks written now are exact (nothing accepted
        // can be replayed after a clean restart)
        if w.finish(&mut registrar, Duration::from_secs(5)) {
            log::info(format_args!("state: written"));
        } else {
            log::error(format_args!(
                "state: {} records not written at stop: their UEs may have to register again",
                registrar.store_backlog()
            ));
        }
    }
    drop(state_writer);
    let _ = core_tcp_thread.join();
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
    let mut latency = crate::dataplane::new_histogram();
    for s in &shared {
        let _ = latency.add(s.latency());
    }
    let report = RunReport {
        workers: shared.iter().map(|s| s.snapshot()).collect(),
        latency: Some(latency),
        punts_handled: counts.punts,
        core_tcp: core_tcp_stats.snapshot(),
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
