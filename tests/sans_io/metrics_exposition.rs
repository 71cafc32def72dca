//! The `/metrics` exposition (`pcscf::daemon::metrics`), built in memory from a registrar with a
//! registered UE and two workers' stats: every family has its `# HELP` and `# TYPE`, every
//! sample belongs to the family announced before it (OpenMetrics and 0.0.4 text alike), the new
//! gauges say what the registrar holds, and every series the Grafana dashboard
//! (deploy/grafana/pcscf-dashboard.json) queries is one the exporter writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use pcscf::daemon::core_tcp::CoreTcpStats;
use pcscf::daemon::metrics::{ControlSnapshot, registry, render};
use pcscf::daemon::state::WriterStats;
use pcscf::dataplane::{MsgQueue, SharedStats};

use crate::reg_event::registered;

const DASHBOARD: &str = "deploy/grafana/pcscf-dashboard.json";

/// The exposition of a registrar holding one registered UE, two workers, the core TCP thread
/// and a state writer.
fn exposition(openmetrics: bool) -> String {
    let (w, _, _) = registered();
    let mut snap = ControlSnapshot::default();
    snap.registrar(&w.reg);
    let (punt, events) = (MsgQueue::new(4, None), MsgQueue::new(4, None));
    let injects = [MsgQueue::new(4, None), MsgQueue::new(4, None)];
    snap.queues(&punt, &events, 0, &injects);
    snap.state = Some((WriterStats::default(), 0));
    let workers = vec![
        Arc::new(SharedStats::default()),
        Arc::new(SharedStats::default()),
    ];
    let r = registry(
        workers,
        Some(Arc::new(CoreTcpStats::default())),
        Arc::new(Mutex::new(snap)),
    );
    render(&r, openmetrics)
}

/// Sample name → the `name{labels}` lines' values, and each family's type; panics where a
/// family lacks `# HELP` or `# TYPE` or a sample is not of the family announced before it.
fn parse(text: &str, openmetrics: bool) -> (BTreeMap<String, Vec<f64>>, BTreeMap<String, String>) {
    let mut helps = BTreeSet::new();
    let mut types = BTreeMap::new();
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "a line after # EOF: {line}");
        if line == "# EOF" {
            eof = true;
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "{name}: empty help");
            assert!(helps.insert(name.to_string()), "{name}: a second HELP");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(helps.contains(name), "{name}: TYPE without HELP before it");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{name}: a second TYPE"
            );
            current = Some((name.to_string(), ty.to_string()));
        } else {
            assert!(!line.starts_with('#'), "unexpected comment: {line}");
            let name_end = line.find(['{', ' ']).expect("a sample");
            let name = &line[..name_end];
            let (fam, ty) = current
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: no TYPE"));
            let expected = if openmetrics && ty == "counter" {
                format!("{fam}_total")
            } else {
                fam.clone()
            };
            assert_eq!(name, expected, "a sample of family {fam} ({ty})");
            let (_, v) = line.rsplit_once(' ').unwrap();
            samples
                .entry(name.to_string())
                .or_default()
                .push(v.parse().unwrap_or_else(|_| panic!("{line}: value")));
        }
    }
    assert_eq!(
        eof, openmetrics,
        "OpenMetrics text ends in # EOF, 0.0.4 has none"
    );
    assert_eq!(helps.len(), types.len());
    (samples, types)
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn every_family_has_help_and_type_and_its_samples() {
    for openmetrics in [true, false] {
        let text = exposition(openmetrics);
        let (samples, types) = parse(&text, openmetrics);
        assert!(types.len() > 40, "{} families", types.len());
        // the names operators know stay what they were (counters end in _total either way)
        for s in [
            "pcscf_rx_packets_total",
            "pcscf_dropped_packets_total",
            "pcscf_dialog_refusals_total",
            "pcscf_rx_tx_latency_ns",
            "pcscf_rx_tx_latency_ns_count",
            "pcscf_registrar_events_total",
            "pcscf_dns_events_total",
            "pcscf_reg_event_total",
            "pcscf_reg_event_subscriptions",
            "pcscf_sa_table_entries",
            "pcscf_dialogs",
            "pcscf_core_tcp_accepted_total",
            "pcscf_state_batches_total",
            "pcscf_state_write_failures_total",
            "pcscf_state_backlog",
            "pcscf_state_last_write_seconds",
        ] {
            assert!(
                samples.contains_key(s),
                "{s} missing (openmetrics {openmetrics})"
            );
        }
    }
}

#[test]
fn the_gauges_say_what_the_registrar_holds() {
    let text = exposition(true);
    assert_eq!(value(&text, "pcscf_registered_ues"), 1.0);
    assert_eq!(value(&text, "pcscf_bindings"), 1.0);
    assert_eq!(value(&text, "pcscf_sa_sets{state=\"current\"}"), 1.0);
    assert_eq!(value(&text, "pcscf_sa_sets{state=\"temporary\"}"), 0.0);
    assert_eq!(value(&text, "pcscf_sa_sets{state=\"old\"}"), 0.0);
    assert_eq!(value(&text, "pcscf_sa_sets{state=\"retiring\"}"), 0.0);
    assert_eq!(value(&text, "pcscf_pending_registers"), 0.0);
    // the registered UE's reg event SUBSCRIBE is out, not yet accepted
    assert_eq!(
        value(&text, "pcscf_registrar_events_total{event=\"registered\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "pcscf_registrar_events_total{event=\"challenges\"}"),
        1.0
    );
    assert_eq!(value(&text, "pcscf_inject_queue_depth{worker=\"1\"}"), 0.0);
    assert_eq!(value(&text, "pcscf_punt_queue_depth"), 0.0);
    assert_eq!(
        value(&text, "pcscf_sa_table_entries{kind=\"inbound_live\"}"),
        2.0
    );
}

/// Every string value under an `expr` key, anywhere in the dashboard.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// The `pcscf_…` metric names a PromQL expression names.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pcscf_") {
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if boundary {
            out.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn every_series_of_the_dashboard_is_exported() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // the Prometheus datasource is the operator's choice: a template variable every panel uses
    let vars = json["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let mut all = Vec::new();
    exprs(&json, &mut all);
    assert!(all.len() >= 15, "{} queries", all.len());
    let (samples, _) = parse(&exposition(true), true);
    let mut named = BTreeSet::new();
    for e in &all {
        let names = metric_names(e);
        assert!(!names.is_empty(), "a query that names no pcscf series: {e}");
        for n in names {
            assert!(
                samples.contains_key(&n),
                "the dashboard queries {n} ({e}), which the exporter does not write"
            );
            named.insert(n);
        }
    }
    // what an operator needs to see is there
    for n in [
        "pcscf_registered_ues",
        "pcscf_sa_sets",
        "pcscf_registrar_events_total",
        "pcscf_rx_packets_total",
        "pcscf_dropped_packets_total",
        "pcscf_rx_tx_latency_ns",
        "pcscf_punt_queue_depth",
        "pcscf_inject_queue_depth",
        "pcscf_state_backlog",
        "pcscf_dns_events_total",
    ] {
        assert!(named.contains(n), "the dashboard has no panel on {n}");
    }
    // every panel's datasource is the variable, not a fixed uid
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("\"uid\": \"prometheus\""),
        "a fixed datasource uid"
    );
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            "sum by (reason) (rate(pcscf_dropped_packets_total{job=~\"$job\"}[$__rate_interval])) / ignoring(x) pcscf_rx_packets_total"
        ),
        ["pcscf_dropped_packets_total", "pcscf_rx_packets_total"]
    );
    assert!(metric_names("rate(up[5m]) + my_pcscf_x").is_empty());
}
