//! The registration thread's I/O: the control loop that carries the registrar's (sans-IO) inputs
//! and outputs. A mio poll on the punt queue's waker and the DNS socket, asleep until the
//! registrar's next deadline or the next Prometheus renewal (the workers ring it only while it
//! sleeps: [`MsgQueue::arm`]); each pass reads DNS when it has answers, runs the due timers, takes a bounded share of each punt class, sends the DNS questions and hands what the
//! registrar sends to the workers' inject queues.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::log;
use crate::control::registrar::{self, Registrar, RegistrarConfig};
use crate::dataplane::{Class, MsgQueue, Protection};

use super::signals;

/// The punt queue's waker.
pub(super) const WAKE: mio::Token = mio::Token(0);
/// The registration thread's DNS socket.
const DNS: mio::Token = mio::Token(1);
/// Punted messages of each class (core responses, protected REGISTERs, unprotected REGISTERs)
/// one pass of the control loop takes at most; between passes it sends what it has, reads DNS
/// and runs timers, so neither a backlog nor a flood of one class stalls the others.
pub const PASS_BUDGET: [usize; 3] = [256, 128, 64];
/// Dialog events one pass takes at most (each is a hash-map update: cheap next to a REGISTER).
pub const DIALOG_BUDGET: usize = 1024;
/// Large NOTIFYs (`core_tcp::LargeToRegistrar`) one pass takes at most.
const LARGE_BUDGET: usize = 16;
/// DNS datagrams one pass reads at most.
const DNS_BUDGET: usize = 64;
/// How often the registration thread's counters are renewed for Prometheus.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);
/// How often the counters sweep of the persisted state runs ([`Registrar::sweep_counters`],
/// `registrar::SWEEP_BUDGET` bindings each time).
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How soon the loop looks again for the state writer's answer while a batch is in flight.
const STATE_POLL: Duration = Duration::from_millis(2);
/// The longest the control loop sleeps with nothing due: how soon it sees [`request_stop`].
const IDLE_WAIT: Duration = Duration::from_millis(100);

pub(super) fn registrar_config(
    cfg: &Config,
) -> Result<RegistrarConfig, Box<dyn std::error::Error>> {
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
        icscf_tcp: cfg.core.icscf_transport == crate::sip::Transport::Tcp,
        core_max_udp_request: usize::from(cfg.core.max_udp_request),
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
        reg_event: cfg.core.reg_event,
    })
}

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
                Protection::Stream { .. } | Protection::Segment { .. } => "protected, tcp",
                Protection::CoreStream { .. } => "core, tcp",
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

/// One pass over the dialog-event queue: at most [`DIALOG_BUDGET`] events into the registrar's
/// dialog book. The events handled, and whether any are left.
pub fn dialog_pass(events: &MsgQueue, registrar: &mut Registrar, now: Instant) -> (u64, bool) {
    let mut handled = 0;
    while handled < DIALOG_BUDGET as u64 {
        let Some(b) = events.pop() else {
            break;
        };
        handled += 1;
        registrar.handle_dialog_event(b.side, b.bytes(), now);
        events.recycle(b);
    }
    (handled, !events.is_empty())
}

/// What the control loop counted.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LoopCounts {
    /// Punted messages handed to the registrar.
    pub punts: u64,
    /// Messages of the registrar that found their worker's inject queue full.
    pub inject_dropped: u64,
    /// CPU seconds (user + system) the thread spent in the control loop, and before it (the
    /// daemon's setup runs on this thread: the SA table, the UMEM, the XDP programs).
    pub cpu_loop: f64,
    pub cpu_setup: f64,
}

/// The control loop, until SIGINT/SIGTERM (or [`super::request_stop`]). `control` receives
/// the registration thread's numbers for the metrics every [`PUBLISH_EVERY`] when an endpoint
/// is configured.
pub(super) fn serve(
    cfg: &Config,
    registrar: &mut Registrar,
    poll: &mut mio::Poll,
    (punt, dialog_events, large): (&MsgQueue, &MsgQueue, &super::core_tcp::LargeToRegistrar),
    injects: &[Arc<MsgQueue>],
    control: &Mutex<super::metrics::ControlSnapshot>,
    (mut state, mut ctl, config_path): (
        Option<&mut super::state::Writer>,
        Option<&mut super::ctl::CtlShell>,
        Option<&std::path::Path>,
    ),
) -> std::io::Result<LoopCounts> {
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
    name_this_thread(c"registration");
    // the I-CSCFs' names resolved before the first REGISTER needs them (sent on the first pass)
    registrar.warm_up(Instant::now());
    let mut dns_buf = vec![0u8; 4096];
    let mut events = mio::Events::with_capacity(64);
    let cpu_setup = super::report::thread_cpu_seconds();
    let mut punts: u64 = 0;
    let mut inject_dropped: u64 = 0;
    let mut last_publish = Instant::now();
    let mut last_sweep = Instant::now();
    // what SIGHUP may change, as it runs now
    let mut live = cfg.clone();
    // more to do than one pass took: poll without sleeping (at first: the warm-up's queries)
    let mut backlog = true;
    // the DNS socket may hold more than one pass read
    let mut dns_more = false;
    while !signals::stop_requested() {
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
        // the state writer's answer is looked for soon (its ceilings wait for it), and the
        // counters sweep comes round
        if let Some(w) = state.as_deref() {
            if w.busy() {
                wait = wait.min(STATE_POLL);
            }
            wait = wait.min((last_sweep + SWEEP_EVERY).saturating_duration_since(before));
        }
        // Producers wake the thread only while it sleeps (`MsgQueue::arm`): armed, it looks at
        // its queues once more, and a message that came in meanwhile means no sleep.
        if !wait.is_zero() {
            punt.arm();
            if !(punt.is_empty() && dialog_events.is_empty() && large.is_empty()) {
                punt.disarm();
                wait = Duration::ZERO;
            }
        }
        let _ = poll.poll(&mut events, Some(wait));
        punt.disarm();
        let now = Instant::now();
        backlog = false;
        // The DNS socket is read when it says it has something (or the last read stopped at
        // its budget), not on every pass: a read that finds nothing is a wasted syscall.
        let dns_ready = std::mem::take(&mut dns_more) || events.iter().any(|e| e.token() == DNS);
        if let Some(s) = dns_sock.as_mut().filter(|_| dns_ready) {
            let mut read = 0;
            while read < DNS_BUDGET {
                match s.recv_from(&mut dns_buf) {
                    Ok((n, from)) => registrar.handle_dns(from, &dns_buf[..n], now),
                    Err(e) => {
                        // (an error other than "nothing left", an ICMP error say, may leave
                        // answers behind it: read again at once)
                        dns_more = e.kind() != std::io::ErrorKind::WouldBlock;
                        break;
                    }
                }
                read += 1;
            }
            // (edge-triggered: what is left gives no new event, so come back at once)
            if read == DNS_BUDGET {
                dns_more = true;
            }
            backlog |= dns_more;
        }
        if signals::take_reload() {
            match config_path {
                Some(p) => super::reload::reload_logged(p, &mut live, registrar, now),
                None => log::warn(format_args!("SIGHUP: no configuration file to read again")),
            }
        }
        if registrar.poll_timeout().is_some_and(|t| t <= now) {
            registrar.handle_timeout(now);
        }
        // One bounded pass, the highest class first.
        let (handled, left) = punt_pass(punt, registrar, now);
        punts += handled;
        backlog |= left;
        let (_, left) = dialog_pass(dialog_events, registrar, now);
        backlog |= left;
        // NOTIFYs from the core too large for a worker (core TCP: LargeToRegistrar)
        for _ in 0..LARGE_BUDGET {
            let Some(d) = large.pop() else {
                break;
            };
            punts += 1;
            registrar.handle_message(d.borrowed(), now);
        }
        // the operator's `pcscf ctl` requests, a bounded share per pass (daemon::ctl)
        if let Some(c) = ctl.as_mut() {
            backlog |= c.pass(&events, registrar, now);
        }
        while let Some((server, q)) = registrar.poll_dns_query() {
            if let Some(s) = dns_sock.as_ref() {
                // a lost query is sent again by the resolver's timer
                let _ = s.send_to(&q, server);
            }
        }
        while let Some(o) = registrar.poll_transmit() {
            // Messages of one UE always go through the same worker; one on a UE's TCP
            // connection through the worker that holds it.
            let w = match o.protection {
                Protection::Stream { worker, .. } => usize::from(worker) % injects.len().max(1),
                _ => crate::dataplane::worker_of(o.dst.ip(), injects.len()),
            };
            if injects[w].push(o.borrowed()).is_err() {
                inject_dropped += 1;
            }
        }
        if let Some(w) = state.as_deref_mut() {
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                registrar.sweep_counters(Some(registrar::SWEEP_BUDGET));
            }
            w.pass(registrar, now);
        }
        if cfg.stats.prometheus.is_some() && now.duration_since(last_publish) >= PUBLISH_EVERY {
            last_publish = now;
            // a copy of numbers, each O(1), under a lock a scrape holds only while it encodes
            let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
            c.registrar(registrar);
            c.queues(punt, dialog_events, large.len(), injects);
            c.state = state
                .as_deref()
                .map(|w| (w.stats, registrar.store_backlog() as u64));
        }
    }
    Ok(LoopCounts {
        punts,
        inject_dropped,
        cpu_loop: super::report::thread_cpu_seconds() - cpu_setup,
        cpu_setup,
    })
}

/// Name the calling thread (what `top -H`, `ps -L` and `perf report --comm` show) unless it is
/// the process's main thread, whose name is the process's (`pcscf run` runs the control loop
/// there; `pcscf lab` on a thread of its own).
fn name_this_thread(name: &std::ffi::CStr) {
    // SAFETY: gettid takes nothing and cannot fail.
    if std::process::id() == unsafe { libc::gettid() } as u32 {
        return;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes (longer is cut).
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}
