//! What a run ends with: the stop report printed on exit and the registration thread's closing
//! log lines (what it shows while it runs: `daemon::metrics`).

use std::time::Duration;

use super::registration::LoopCounts;
use crate::config::LogLevel;
use crate::control::log;
use crate::control::registrar::Registrar;
use crate::dataplane::WorkerStats;

/// What a run ends with.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub workers: Vec<WorkerStats>,
    /// rx-to-tx latency of all workers, merged (ns).
    pub latency: Option<hdrhistogram::Histogram<u64>>,
    pub punts_handled: u64,
    /// The core-side TCP's counters (`daemon::core_tcp`).
    pub core_tcp: super::core_tcp::CoreTcpCounts,
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

/// The registration thread's closing lines: its counters, the SA table's invariant, its CPU.
pub(super) fn log_registration_stop(registrar: &Registrar, counts: &LoopCounts) {
    let LoopCounts {
        punts,
        inject_dropped,
        cpu_loop,
        cpu_setup,
    } = *counts;
    if inject_dropped > 0 {
        log::warn(format_args!(
            "{inject_dropped} messages of the registration thread found the inject queue full"
        ));
    }
    log::info(format_args!("registrar: {:?}", registrar.stats));
    log::info(format_args!("registrar DNS: {:?}", registrar.dns_stats()));
    log::info(format_args!(
        "dialogs: {} open, {:?}",
        registrar.dialogs(),
        registrar.dialog_stats()
    ));
    log::info(format_args!(
        "reg event: {} subscriptions, {:?}",
        registrar.subscriptions(),
        registrar.reg_event_stats()
    ));
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
    // The control loop's CPU alone: the setup before it (SA table, UMEM, XDP) is a one-off
    // cost of this same thread, logged apart so the per-message figure means per message.
    log::info(format_args!(
        "registration thread: {punts} messages handled, {cpu_loop:.3} s of CPU ({:.1} us per \
         message); {cpu_setup:.3} s of CPU in the setup before its control loop",
        if punts > 0 {
            cpu_loop * 1e6 / punts as f64
        } else {
            0.0
        }
    ));
}

/// User + system CPU time of the calling thread.
pub(super) fn thread_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the rusage we pass; RUSAGE_THREAD needs nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
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
    for d in crate::dataplane::DropReason::ALL {
        let n = t.drops[d as usize];
        if n > 0 {
            eprintln!("pcscf:   dropped {:<18} {n}", d.name());
        }
    }
    if t.tcp_segments > 0 || t.stream_in > 0 || t.stream_out > 0 {
        eprintln!(
            "pcscf:   tcp in the SAs: {} segments, {} messages in, {} out, {} handed to the worker holding the connection",
            t.tcp_segments, t.stream_in, t.stream_out, t.handed_over
        );
        eprintln!(
            "pcscf:   tcp connections reset: {} for framing (no or conflicting Content-Length, too large), {} for slow messages; {} pings answered; {} sets refused",
            t.tcp_framing_errors, t.tcp_slow_messages, t.tcp_pings, t.tcp_sets_refused
        );
    }
    let c = &r.core_tcp;
    if c.any() || t.core_stream_in > 0 || t.core_stream_out > 0 {
        eprintln!(
            "pcscf:   tcp with the core: {} messages in, {} out; connections {} accepted, {} opened, {} closed ({} idle, {} for framing), {} refused, {} failed to connect; {} pings answered; lost {} in, {} out",
            c.messages_in,
            c.messages_out,
            c.accepted,
            c.opened,
            c.closed,
            c.idle_closed,
            c.framing_errors,
            c.refused,
            c.connect_failed,
            c.pings,
            c.in_dropped,
            c.out_lost
        );
    }
    if t.dialog_events > 0 || t.dialog_events_lost > 0 {
        // lost events are calls a de-registration may not release (TS 24.229 §5.2.8)
        eprintln!(
            "pcscf:   dialog events {} (lost to a full queue {})",
            t.dialog_events, t.dialog_events_lost
        );
    }
    for (i, n) in t.dialog_refusals.iter().enumerate() {
        if *n > 0 {
            eprintln!(
                "pcscf:   dialog refused {:<22} {n}",
                crate::dataplane::dialog_refusal_name(i)
            );
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
