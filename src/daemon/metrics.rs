//! What `/metrics` shows: every series, with its `# HELP` and `# TYPE`, encoded by the
//! Prometheus project's `prometheus-client` (OpenMetrics 1.0 text, or the 0.0.4 text format for
//! a scraper that does not ask for OpenMetrics: [`render`]).
//!
//! Owns: the names, help texts, kinds and labels of the series. Nothing here touches a hot path:
//! the workers keep publishing their plain counters into [`SharedStats`] (relaxed atomics), and
//! the registration thread copies its state's numbers into a [`ControlSnapshot`] every 500 ms
//! (`registration::serve`); the collectors read those snapshots when a scrape comes. A counter
//! family is named without `_total` here, the encoder adds it: the series operators see are
//! `pcscf_rx_packets_total{worker="0"}` and so on.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::core_tcp::CoreTcpStats;
use super::state::WriterStats;
use crate::control::dialogs::DialogStats;
use crate::control::dns::DnsStats;
use crate::control::regevent::RegEventStats;
use crate::control::registrar::{Registrar, RegistrarStats, SetCounts};
use crate::dataplane::{DropReason, MsgQueue, SharedStats, WorkerStats, dialog_refusal_name};
use crate::satable::SaTableStats;

/// The Content-Type of [`render`]'s OpenMetrics text (what `prometheus-client`'s
/// `encoding::text` writes).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Content-Type of [`render`]'s Prometheus text (format 0.0.4).
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The rx-to-tx latency quantiles shown per worker.
const QUANTILES: [(f64, &str); 4] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999")];

/// The registration thread's numbers, copied every 500 ms for the metrics thread: plain
/// numbers, no walk over the bindings (each is O(1) on the registrar).
#[derive(Clone, Debug, Default)]
pub struct ControlSnapshot {
    pub registrar: RegistrarStats,
    pub dns: DnsStats,
    pub dialog_book: DialogStats,
    pub reg_event: RegEventStats,
    pub sa_table: SaTableStats,
    pub sets: SetCounts,
    /// Bindings held (registered or registering).
    pub bindings: u64,
    pub pending_registers: u64,
    pub dialogs: u64,
    pub subscriptions: u64,
    /// Messages waiting in the punt queue, the dialog-event queue, the core TCP thread's
    /// queue of large NOTIFYs, and each worker's inject queue.
    pub punt_queue: u64,
    pub dialog_queue: u64,
    pub large_queue: u64,
    pub inject_queues: Vec<u64>,
    /// The state writer's counters and the records waiting for it, when state is persisted.
    pub state: Option<(WriterStats, u64)>,
}

impl ControlSnapshot {
    /// The registrar's numbers (O(1) each).
    pub fn registrar(&mut self, r: &Registrar) {
        self.registrar = r.stats;
        self.dns = r.dns_stats();
        self.dialog_book = r.dialog_stats();
        self.reg_event = r.reg_event_stats();
        self.sa_table = r.sa_table_stats();
        self.sets = r.set_counts();
        self.bindings = r.bindings_count() as u64;
        self.pending_registers = r.pending_registers() as u64;
        self.dialogs = r.dialogs() as u64;
        self.subscriptions = r.subscriptions() as u64;
    }

    /// The queues' depths (the vector is reused: no allocation once it has its length).
    pub fn queues(
        &mut self,
        punt: &MsgQueue,
        dialog: &MsgQueue,
        large: usize,
        injects: &[Arc<MsgQueue>],
    ) {
        self.punt_queue = punt.len() as u64;
        self.dialog_queue = dialog.len() as u64;
        self.large_queue = large as u64;
        self.inject_queues.clear();
        self.inject_queues
            .extend(injects.iter().map(|q| q.len() as u64));
    }
}

/// The registry of every series: the workers' (and the core TCP thread's) counters read from
/// their shared snapshots, the registration thread's from `control`.
pub fn registry(
    workers: Vec<Arc<SharedStats>>,
    core_tcp: Option<Arc<CoreTcpStats>>,
    control: Arc<Mutex<ControlSnapshot>>,
) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Workers { workers, core_tcp }));
    r.register_collector(Box::new(Control(control)));
    r
}

/// The exposition of `registry`: OpenMetrics text (ending in `# EOF`), or the Prometheus text
/// format 0.0.4; see [`OPENMETRICS_CONTENT_TYPE`] and [`TEXT_CONTENT_TYPE`].
pub fn render(registry: &Registry, openmetrics: bool) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
    };
    // writing into a String fails only if a collector does, and ours do not
    debug_assert!(r.is_ok(), "{r:?}");
    out
}

/// The workers' series alone, OpenMetrics text (tests, tools).
pub fn metrics_text(workers: &[Arc<SharedStats>]) -> String {
    let mut r = Registry::default();
    r.register_collector(Box::new(Workers {
        workers: workers.to_vec(),
        core_tcp: None,
    }));
    render(&r, true)
}

type Enc<'a> = DescriptorEncoder<'a>;
type Res = Result<(), std::fmt::Error>;

/// One family: `items`' label sets and values, each a sample of `kind`.
fn family<L: EncodeLabelSet>(
    enc: &mut Enc<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    items: impl IntoIterator<Item = (L, u64)>,
) -> Res {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in items {
        let mut s = m.encode_family(&labels)?;
        if kind == MetricType::Counter {
            s.encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        } else {
            s.encode_gauge(&v)?;
        }
    }
    Ok(())
}

/// One family of a single unlabelled sample.
fn single(enc: &mut Enc<'_>, name: &str, help: &str, kind: MetricType, v: u64) -> Res {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    if kind == MetricType::Counter {
        m.encode_counter::<NoLabelSet, _, u64>(&v, None)
    } else {
        m.encode_gauge(&v)
    }
}

/// A family of `(label value, counter)` pairs under one label name.
fn named(
    enc: &mut Enc<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &'static str,
    items: &[(&'static str, u64)],
) -> Res {
    family(
        enc,
        name,
        help,
        kind,
        items.iter().map(|&(n, v)| ([(label, n)], v)),
    )
}

/// The workers' counters and latency, and the core TCP thread's counters.
#[derive(Debug)]
struct Workers {
    workers: Vec<Arc<SharedStats>>,
    core_tcp: Option<Arc<CoreTcpStats>>,
}

impl Collector for Workers {
    fn encode(&self, mut enc: Enc<'_>) -> Res {
        use MetricType::{Counter, Gauge};
        let snaps: Vec<WorkerStats> = self.workers.iter().map(|s| s.snapshot()).collect();
        let counters: Vec<_> = snaps.iter().map(WorkerStats::counters).collect();
        for (i, &(name, help, _)) in WorkerStats::default().counters().iter().enumerate() {
            family(
                &mut enc,
                name,
                help,
                Counter,
                counters
                    .iter()
                    .enumerate()
                    .map(|(w, c)| ([("worker", w)], c[i].2)),
            )?;
        }
        family(
            &mut enc,
            "pcscf_dialog_refusals",
            "Messages a dialog rule refused, by reason.",
            Counter,
            snaps.iter().enumerate().flat_map(|(w, s)| {
                s.dialog_refusals.iter().enumerate().map(move |(i, &v)| {
                    (([("worker", w)], [("reason", dialog_refusal_name(i))]), v)
                })
            }),
        )?;
        family(
            &mut enc,
            "pcscf_dropped_packets",
            "Received packets the worker dropped, by reason.",
            Counter,
            snaps.iter().enumerate().flat_map(|(w, s)| {
                DropReason::ALL.into_iter().map(move |d| {
                    (
                        ([("worker", w)], [("reason", d.name())]),
                        s.drops[d as usize],
                    )
                })
            }),
        )?;
        let latency: Vec<_> = self.workers.iter().map(|s| s.latency()).collect();
        family(
            &mut enc,
            "pcscf_rx_tx_latency_ns",
            "Receive-to-send latency of the worker's packets since start (ns), by quantile.",
            Gauge,
            latency.iter().enumerate().flat_map(|(w, h)| {
                QUANTILES.iter().map(move |&(q, l)| {
                    (([("worker", w)], [("quantile", l)]), h.value_at_quantile(q))
                })
            }),
        )?;
        family(
            &mut enc,
            "pcscf_rx_tx_latency_ns_count",
            "Latency samples recorded since start (one per packet sent).",
            Gauge,
            latency
                .iter()
                .enumerate()
                .map(|(w, h)| ([("worker", w)], h.len())),
        )?;
        if let Some(c) = &self.core_tcp {
            for (name, v) in c.snapshot().fields() {
                let (family_name, help) = core_tcp_family(name);
                single(&mut enc, family_name, help, Counter, v)?;
            }
        }
        Ok(())
    }
}

/// The family name and help of a core TCP counter (`CoreTcpCounts::fields`).
fn core_tcp_family(field: &str) -> (&'static str, &'static str) {
    match field {
        "accepted" => (
            "pcscf_core_tcp_accepted",
            "TCP connections from the core accepted.",
        ),
        "refused" => (
            "pcscf_core_tcp_refused",
            "TCP connections from the core refused (limit).",
        ),
        "opened" => (
            "pcscf_core_tcp_opened",
            "TCP connections to the core opened.",
        ),
        "connect_failed" => (
            "pcscf_core_tcp_connect_failed",
            "TCP connections to the core that failed.",
        ),
        "closed" => (
            "pcscf_core_tcp_closed",
            "TCP connections with the core closed.",
        ),
        "framing_errors" => (
            "pcscf_core_tcp_framing_errors",
            "Core TCP connections closed for a framing error.",
        ),
        "idle_closed" => (
            "pcscf_core_tcp_idle_closed",
            "Core TCP connections closed when idle.",
        ),
        "messages_in" => (
            "pcscf_core_tcp_messages_in",
            "SIP messages received from the core over TCP.",
        ),
        "messages_out" => (
            "pcscf_core_tcp_messages_out",
            "SIP messages sent to the core over TCP.",
        ),
        "pings" => (
            "pcscf_core_tcp_pings",
            "Keep-alive pings from the core answered.",
        ),
        "in_dropped" => (
            "pcscf_core_tcp_in_dropped",
            "Messages from the core over TCP dropped (a full queue).",
        ),
        "out_lost" => (
            "pcscf_core_tcp_out_lost",
            "Messages for the core over TCP lost.",
        ),
        _ => ("pcscf_core_tcp_other", "Another core TCP counter."),
    }
}

/// The registration thread's series, from its last [`ControlSnapshot`].
#[derive(Debug)]
struct Control(Arc<Mutex<ControlSnapshot>>);

impl Collector for Control {
    fn encode(&self, mut enc: Enc<'_>) -> Res {
        use MetricType::{Counter, Gauge};
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let enc = &mut enc;
        named(
            enc,
            "pcscf_registrar_events",
            "Registration thread events by outcome (challenges, auth_failed, verify_mismatch = 494, ...).",
            Counter,
            "event",
            &s.registrar.named(),
        )?;
        single(
            enc,
            "pcscf_registered_ues",
            "Registered UEs: bindings with a current SA set.",
            Gauge,
            s.sets.current,
        )?;
        single(
            enc,
            "pcscf_bindings",
            "Bindings held: registered or registering UEs.",
            Gauge,
            s.bindings,
        )?;
        named(
            enc,
            "pcscf_sa_sets",
            "SA sets held, by state (temporary: challenged; current; old: replaced by a re-registration; retiring).",
            Gauge,
            "state",
            &s.sets.named(),
        )?;
        single(
            enc,
            "pcscf_pending_registers",
            "REGISTER transactions forwarded to the core and not answered yet.",
            Gauge,
            s.pending_registers,
        )?;
        named(
            enc,
            "pcscf_dns_events",
            "DNS resolver events (queries, failures, cache hits, ...).",
            Counter,
            "event",
            &s.dns.named(),
        )?;
        named(
            enc,
            "pcscf_dialog_book_events",
            "Dialog book events of the registration thread (confirmed, ended, released, ...).",
            Counter,
            "event",
            &s.dialog_book.named(),
        )?;
        single(
            enc,
            "pcscf_dialogs",
            "Calls in the dialog book.",
            Gauge,
            s.dialogs,
        )?;
        named(
            enc,
            "pcscf_reg_event",
            "Reg event subscription and NOTIFY events.",
            Counter,
            "event",
            &s.reg_event.named(),
        )?;
        single(
            enc,
            "pcscf_reg_event_subscriptions",
            "Reg event subscriptions held.",
            Gauge,
            s.subscriptions,
        )?;
        let st = &s.sa_table;
        named(
            enc,
            "pcscf_sa_table_entries",
            "SA table entries by kind.",
            Gauge,
            "kind",
            &[
                ("inbound_reserved", st.inbound_used as u64),
                ("inbound_live", st.inbound_live as u64),
                ("outbound_live", st.outbound_live as u64),
                ("outbound_tombstones", st.outbound_tombstones as u64),
            ],
        )?;
        single(
            enc,
            "pcscf_punt_queue_depth",
            "Messages waiting for the registration thread in the punt queue.",
            Gauge,
            s.punt_queue,
        )?;
        single(
            enc,
            "pcscf_dialog_event_queue_depth",
            "Dialog events waiting for the registration thread.",
            Gauge,
            s.dialog_queue,
        )?;
        single(
            enc,
            "pcscf_large_notify_queue_depth",
            "Large NOTIFYs from the core TCP thread waiting for the registration thread.",
            Gauge,
            s.large_queue,
        )?;
        family(
            enc,
            "pcscf_inject_queue_depth",
            "Messages of the registration thread waiting for the worker to send them.",
            Gauge,
            s.inject_queues
                .iter()
                .enumerate()
                .map(|(w, &v)| ([("worker", w)], v)),
        )?;
        if let Some((w, backlog)) = &s.state {
            single(
                enc,
                "pcscf_state_batches",
                "Batches of records written to the state store.",
                Counter,
                w.batches,
            )?;
            single(
                enc,
                "pcscf_state_records",
                "Records written to the state store (puts and deletes).",
                Counter,
                w.records,
            )?;
            single(
                enc,
                "pcscf_state_write_failures",
                "Batches the state store refused or lost.",
                Counter,
                w.failures,
            )?;
            single(
                enc,
                "pcscf_state_backlog",
                "Records changed and not yet written.",
                Gauge,
                *backlog,
            )?;
            let mut m = enc.encode_descriptor(
                "pcscf_state_last_write_seconds",
                "How long the last batch took to write.",
                None,
                Gauge,
            )?;
            m.encode_gauge(&w.last_write.as_secs_f64())?;
        }
        Ok(())
    }
}
