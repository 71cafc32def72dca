//! Issue 13 proven by stacks we did not write: calls through `pcscf run` (AF_XDP) between SIPp
//! as a registered UE and SIPp as the S-CSCF (and far end), both ways, over the SAs of an IMS
//! registration.
//!
//! 1. The SIPp UE registers (tests/system/sipp_ue.rs: `tests/sipp/ue_register.xml` over the
//!    user-space ESP shim, SIPp as registrar with `tests/sipp/scscf_uas.xml`).
//! 2. Originating (`tests/sipp/ue_call_uac.xml` → `tests/sipp/scscf_call_uas.xml`): the UE sends
//!    an INVITE with SDP to our port-s, our address in Route as phones pre-load it; the S-CSCF
//!    answers 100, 180 and 200 with its own Record-Route entry above ours; the UE sends ACK and
//!    BYE by its route set (SIPp's `[routes]`: the 200's Record-Route reversed) and gets the
//!    BYE's 200. The S-CSCF checks our two Record-Route entries (RFC 5658: core-facing first,
//!    naming our core address; UE-facing second, naming our UE-side address and port-s), our
//!    Via on top, the Service-Route as the Route, P-Asserted-Identity set and
//!    P-Preferred-Identity gone (TS 24.229 §5.2.6.3), and that the ACK and the BYE reach it with
//!    our entries popped (RFC 3261 §16.4). The UE checks the 200 carries our UE-facing entry.
//! 3. Terminating (`tests/sipp/scscf_call_uac.xml` → `tests/sipp/ue_call_uas.xml`): the S-CSCF
//!    sends an INVITE to the UE's registered Contact through the Path we put in its REGISTER
//!    (TS 24.229 §5.2.6.4); the UE answers 180 and 200 with the Record-Route it was given; the
//!    S-CSCF sends ACK and BYE with a Route made of our two entries (core-facing first) and
//!    gets the UE's 200. The UE checks the Request-URI is its Contact, that no Route is left and
//!    our UE-facing entry is on top of the Record-Route with our port-s.
//!
//! SIPp does not stop on a failed `<ereg check_it>`: every SIPp must exit 0 with an empty error
//! file. Then the test reads the message traces and checks the same headers exactly (how many
//! entries, in which order). Once over IPv4 and once with the UE on IPv6 (the core side stays
//! IPv4). Needs root and sipp (CI installs both).
//!
//! And both again with the core over TCP (RFC 3261 §18, RFC 3263 §4.1): every SIPp playing the
//! core runs with `-t t1` (one connection), pcscf's I-CSCF is `icscf_transport = "tcp"`, the
//! S-CSCF's Service-Route and Record-Route entries say `;transport=tcp`, so the REGISTERs and
//! the UE's INVITE, ACK and BYE go on connections pcscf opens, the core's INVITE, ACK and BYE
//! come on the connection SIPp opens to pcscf's core address and the UE's answers go back on
//! it. The same checks, our Via saying TCP, plus: SIPp traced TCP only, and pcscf's report
//! counts messages both ways on core connections and lost none.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sipp_ue::{PORT_S, Registered, register_sipp_ue, sipp_ue_args, uri_host};
use crate::support::ims::HOSTNAME;
use crate::support::sipp::*;

/// The S-CSCF's Record-Route entry (its address in the lab: SIPp's `[local_ip]:[local_port]`),
/// `;transport=tcp` with the core over TCP.
fn scscf_rr(tcp: bool) -> String {
    format!("<sip:scscf@10.212.0.2:5060;lr{}>", tcp_param(tcp))
}
/// The Service-Route tests/sipp/scscf_uas.xml hands out at registration.
fn service_route(tcp: bool) -> String {
    format!("<sip:orig@10.212.0.2:5060;lr{}>", tcp_param(tcp))
}
/// The IMPU tests/sipp/scscf_uas.xml registers (P-Associated-URI).
const IMPU: &str = "<sip:001010000000001@ims.test>";

#[test]
fn sipp_call_originating_and_terminating_through_us_over_ipv4() {
    sipp_calls(false, false);
}

#[test]
fn sipp_call_originating_and_terminating_through_us_over_ipv6() {
    sipp_calls(true, false);
}

#[test]
fn sipp_call_originating_and_terminating_through_us_over_ipv4_with_the_core_over_tcp() {
    sipp_calls(false, true);
}

#[test]
fn sipp_call_originating_and_terminating_through_us_over_ipv6_with_the_core_over_tcp() {
    sipp_calls(true, true);
}

/// Our port-s, from the Security-Server of the 401 the SIPp UE received.
fn our_port_s(ue_trace: &str) -> u16 {
    trace(ue_trace)
        .iter()
        .filter(|m| m.received && m.text.starts_with("SIP/2.0 401"))
        .flat_map(|m| header_values(&m.text, "Security-Server"))
        .find_map(|v| {
            v.split(';')
                .find_map(|p| p.trim().strip_prefix("port-s="))
                .and_then(|p| p.parse().ok())
        })
        .expect("a 401 with our port-s")
}

/// The Path URI we put in the REGISTER the S-CSCF received (without the angle brackets).
fn our_path(core_trace: &str) -> String {
    trace(core_trace)
        .iter()
        .filter(|m| m.received && m.text.starts_with("REGISTER "))
        .flat_map(|m| header_values(&m.text, "Path"))
        .map(|p| p.trim_start_matches('<').trim_end_matches('>').to_string())
        .next()
        .expect("a REGISTER with our Path")
}

/// The Contact URI of the last REGISTER the S-CSCF received (the protected one: the contact
/// the UE registered, with its port-s).
fn registered_contact(core_trace: &str) -> String {
    let t = trace(core_trace);
    let register = t
        .iter()
        .rev()
        .find(|m| m.received && m.text.starts_with("REGISTER "))
        .expect("a REGISTER");
    let contact = header_values(&register.text, "Contact");
    let uri = contact.first().and_then(|c| {
        let c = c.strip_prefix('<')?;
        Some(c[..c.find('>')?].to_string())
    });
    uri.unwrap_or_else(|| panic!("no Contact URI in\n{}", register.text))
}

/// The first message of `t` received (or sent) whose first line starts with `start` and whose
/// CSeq method is `method`.
fn message<'a>(t: &'a [Traced], received: bool, start: &str, method: &str) -> &'a str {
    t.iter()
        .find(|m| {
            m.received == received
                && m.text.starts_with(start)
                && header_values(&m.text, "CSeq")
                    .first()
                    .is_some_and(|c| c.ends_with(&format!(" {method}")))
        })
        .map(|m| m.text.as_str())
        .unwrap_or_else(|| {
            panic!(
                "no {} {start} ({method}) in the trace",
                if received { "received" } else { "sent" }
            )
        })
}

/// SIPp in the core namespace on the core's address and port 5060, one call within 20 s; over
/// TCP (`-t t1`: one connection) when `tcp`.
fn core_args(
    core: IpAddr,
    remote: Option<String>,
    keys: &[(&str, String)],
    tcp: bool,
) -> Vec<String> {
    let mut args = one_call_args(&core.to_string(), "5060", remote.as_deref(), keys);
    if tcp {
        args.extend(["-t", "t1"].map(String::from));
    }
    args
}

/// The numbers of pcscf's `tcp with the core:` report line, by the word after each: messages
/// in and out, connections accepted and opened, closed for framing, refused, failed to
/// connect, lost in and out.
#[derive(Debug, Default, PartialEq)]
struct CoreTcp {
    messages_in: u64,
    messages_out: u64,
    accepted: u64,
    opened: u64,
    framing: u64,
    refused: u64,
    connect_failed: u64,
    lost_in: u64,
    lost_out: u64,
}

/// pcscf's `tcp with the core:` line (src/daemon/report.rs), if it wrote one.
fn core_tcp(report: &str) -> Option<CoreTcp> {
    let line = report.lines().find(|l| l.contains("tcp with the core:"))?;
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
        .filter(|w| !w.is_empty())
        .collect();
    // the number before `what`, the first time `what` follows a number
    let before = |what: &[&str]| -> u64 {
        words
            .windows(what.len() + 1)
            .find_map(|w| (w[1..] == *what).then(|| w[0].parse().ok()).flatten())
            .unwrap_or_else(|| panic!("no {what:?} in {line}"))
    };
    let lost = line
        .split_once("lost ")
        .unwrap_or_else(|| panic!("no lost in {line}"))
        .1;
    let lost_words: Vec<&str> = lost
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let num = |i: usize| -> u64 {
        lost_words
            .get(i)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("lost: {line}"))
    };
    Some(CoreTcp {
        messages_in: before(&["messages", "in"]),
        messages_out: before(&["out"]),
        accepted: before(&["accepted"]),
        opened: before(&["opened"]),
        framing: before(&["for", "framing"]),
        refused: before(&["refused"]),
        connect_failed: before(&["failed", "to", "connect"]),
        lost_in: num(0),
        lost_out: num(2),
    })
}

/// Time for a SIPp playing a UAS to bind its socket before the other side's first request (the
/// request's retransmissions would also cover a late start).
const UAS_HEAD_START: Duration = Duration::from_millis(300);

fn sipp_calls(v6: bool, tcp: bool) {
    let t0 = Instant::now();
    let tag = match (v6, tcp) {
        (false, false) => "k4",
        (true, false) => "k6",
        (false, true) => "t4",
        (true, true) => "t6",
    };
    let mut reg = register_sipp_ue("pcall", tag, v6, tcp);
    if !(reg.ue_out.clean() && reg.core_out.clean()) {
        let (shim, report) = reg.stop();
        panic!(
            "the SIPp UE did not register:\nshim {shim:?}\n{}\n{}\npcscf:\n{}",
            reg.ue_out.report("SIPp UE (register)"),
            reg.core_out.report("SIPp S-CSCF (register)"),
            tail(&report, 4000)
        );
    }
    let Registered {
        ue_ip, pc_ip, dir, ..
    } = &reg;
    let (ue_ip, pc_ip) = (*ue_ip, *pc_ip);
    let lab = &reg.lab;
    let port_ps = our_port_s(&reg.ue_out.messages);
    let path = our_path(&reg.core_out.messages);
    // the core calls the UE at the contact it registered
    let contact = registered_contact(&reg.core_out.messages);
    assert_eq!(
        contact,
        format!("sip:001010000000001@{}:{PORT_S}", uri_host(ue_ip))
    );
    // our entries as the scenarios look for them (host:port, then the parameters)
    let ue_facing = format!("{}:{port_ps}", uri_host(pc_ip));
    let core_facing = format!("{}:5060", lab.pcscf_core_addr);
    let (ue_facing_re, core_facing_re) = (literal_ci(&ue_facing), literal_ci(&core_facing));
    let transport = if tcp { "TCP" } else { "UDP" };
    let (scscf_rr, service_route) = (scscf_rr(tcp), service_route(tcp));
    let scscf_rr = scscf_rr.as_str();
    let route_re = route_names_us_regex(
        &[lab.pcscf_ue_addr, lab.pcscf_ue_addr6, lab.pcscf_core_addr],
        &[HOSTNAME],
    );
    let ue_keys = [
        ("ue_ip", uri_host(ue_ip)),
        ("ue_addr", ue_ip.to_string()),
        ("ip_ver", if v6 { "IP6" } else { "IP4" }.to_string()),
        ("pcscf_ip", uri_host(pc_ip)),
        ("port_ps", port_ps.to_string()),
        ("port_s", PORT_S.to_string()),
    ];

    // the UE calls
    let core_sf = scenario_with(
        "scscf_call_uas.xml",
        &[
            ("@ROUTE_NAMES_PCSCF@", &route_re),
            ("@CORE_FACING@", &core_facing_re),
            ("@UE_FACING@", &ue_facing_re),
            ("@TRANSPORT@", transport),
            ("@TCP_PARAM@", tcp_param(tcp)),
        ],
        dir,
    );
    let core = start_sipp(
        &lab.core,
        dir,
        &core_sf,
        &core_args(lab.core_addr, None, &[], tcp),
    );
    std::thread::sleep(UAS_HEAD_START);
    let ue_sf = scenario_with("ue_call_uac.xml", &[("@UE_FACING@", &ue_facing_re)], dir);
    let ue = start_sipp(&lab.ue, dir, &ue_sf, &sipp_ue_args(&ue_keys));
    let orig_ue = ue.finish(Duration::from_secs(25));
    let orig_core = core.finish(Duration::from_secs(5));

    // the UE is called
    let ue_sf = scenario_with(
        "ue_call_uas.xml",
        &[
            (
                "@CONTACT@",
                &literal_ci(&format!("{}:{PORT_S}", uri_host(ue_ip))),
            ),
            ("@UE_HOST@", &literal_ci(&uri_host(pc_ip))),
            ("@UE_FACING@", &ue_facing_re),
            ("@CORE_FACING@", &core_facing_re),
            ("@TCP_PARAM@", tcp_param(tcp)),
        ],
        dir,
    );
    let ue = start_sipp(&lab.ue, dir, &ue_sf, &sipp_ue_args(&ue_keys));
    std::thread::sleep(UAS_HEAD_START);
    let core_sf = scenario_with(
        "scscf_call_uac.xml",
        &[
            ("@CORE_FACING@", &core_facing_re),
            ("@UE_FACING@", &ue_facing_re),
            ("@TCP_PARAM@", tcp_param(tcp)),
        ],
        dir,
    );
    let core = start_sipp(
        &lab.core,
        dir,
        &core_sf,
        &core_args(
            lab.core_addr,
            Some(format!("{}:5060", lab.pcscf_core_addr)),
            &[("path", path.clone()), ("ue_contact", contact.clone())],
            tcp,
        ),
    );
    let term_core = core.finish(Duration::from_secs(25));
    let term_ue = ue.finish(Duration::from_secs(5));

    let (shim_stats, report) = reg.stop();
    let all = || {
        format!(
            "shim: {shim_stats:?}\nport-s {port_ps}, Path {path}\n\n{}\n\n{}\n\n{}\n\n{}\n\npcscf:\n{}",
            orig_ue.report("SIPp UE (calling)"),
            orig_core.report("SIPp S-CSCF (called)"),
            term_core.report("SIPp S-CSCF (calling)"),
            term_ue.report("SIPp UE (called)"),
            tail(&report, 4000)
        )
    };
    for (who, out) in [
        ("the calling SIPp UE", &orig_ue),
        ("the called SIPp S-CSCF", &orig_core),
        ("the calling SIPp S-CSCF", &term_core),
        ("the called SIPp UE", &term_ue),
    ] {
        assert!(out.clean(), "{who} failed (exit or a check):\n{}", all());
    }
    assert!(shim_stats.error.is_none(), "{}", all());
    assert_eq!(shim_stats.esp_bad, 0, "{}", all());

    // The same checks, exactly, on what SIPp traced.
    let ours_core = format!("<sip:{core_facing};lr;");
    let ours_ue = format!("<sip:{ue_facing};lr;");
    let rr_of = |m: &str| header_values(m, "Record-Route");
    let is = |v: &[String], prefixes: &[&str]| {
        v.len() == prefixes.len() && v.iter().zip(prefixes).all(|(v, p)| v.starts_with(p))
    };

    // originating, at the S-CSCF
    let t = trace(&orig_core.messages);
    let invite = message(&t, true, "INVITE sip:bob@ims.test SIP/2.0", "INVITE");
    let rr = rr_of(invite);
    assert!(is(&rr, &[&ours_core, &ours_ue]), "{rr:?}\n{}", all());
    let via = header_values(invite, "Via");
    assert_eq!(via.len(), 2, "{invite}");
    assert!(
        via[0].starts_with(&format!("SIP/2.0/{transport} {core_facing};branch=z9hG4bK")),
        "{invite}"
    );
    assert!(
        via[1].starts_with(&format!("SIP/2.0/UDP {}:{PORT_S};", uri_host(ue_ip))),
        "{invite}"
    );
    assert_eq!(header_values(invite, "Route"), [service_route], "{invite}");
    assert_eq!(
        header_values(invite, "P-Asserted-Identity"),
        [IMPU],
        "{invite}"
    );
    assert!(header_values(invite, "P-Preferred-Identity").is_empty());
    for (start, method) in [("ACK sip:bob@", "ACK"), ("BYE sip:bob@", "BYE")] {
        let m = message(&t, true, start, method);
        assert_eq!(header_values(m, "Route"), [scscf_rr], "{m}");
        assert_eq!(header_values(m, "Via").len(), 2, "{m}");
        assert!(header_values(m, "P-Asserted-Identity").is_empty(), "{m}");
    }
    // originating, at the UE: the 200's Record-Route as the S-CSCF wrote it, and the route set
    // SIPp built from it (ours first, UE-facing first) on the ACK and the BYE
    let t = trace(&orig_ue.messages);
    let ok = message(&t, true, "SIP/2.0 200", "INVITE");
    let rr = rr_of(ok);
    assert!(is(&rr, &[scscf_rr, &ours_core, &ours_ue]), "{rr:?}\n{ok}");
    assert_eq!(header_values(ok, "Via").len(), 1, "{ok}");
    for method in ["ACK", "BYE"] {
        let m = message(&t, false, method, method);
        let route = header_values(m, "Route");
        assert!(is(&route, &[&ours_ue, &ours_core, scscf_rr]), "{m}");
        assert_eq!(route[..2], [rr[2].clone(), rr[1].clone()], "{m}");
    }
    message(&t, true, "SIP/2.0 200", "BYE");

    // terminating, at the UE
    let t = trace(&term_ue.messages);
    for method in ["INVITE", "ACK", "BYE"] {
        let m = message(&t, true, &format!("{method} {contact} SIP/2.0"), method);
        assert!(header_values(m, "Route").is_empty(), "{m}");
        let via = header_values(m, "Via");
        assert_eq!(via.len(), 2, "{m}");
        assert!(
            via[0].starts_with(&format!("SIP/2.0/UDP {}:", uri_host(pc_ip))),
            "{m}"
        );
    }
    let invite = message(&t, true, "INVITE ", "INVITE");
    let rr = rr_of(invite);
    assert!(
        is(&rr, &[&ours_ue, &ours_core, scscf_rr]),
        "{rr:?}\n{invite}"
    );
    // terminating, at the S-CSCF: the 200 as the UE wrote it, our Via gone; its ACK and BYE
    // went by our two entries, core-facing first
    let t = trace(&term_core.messages);
    let ok = message(&t, true, "SIP/2.0 200", "INVITE");
    assert_eq!(rr_of(ok), rr, "{ok}");
    assert_eq!(header_values(ok, "Via").len(), 1, "{ok}");
    for method in ["ACK", "BYE"] {
        let m = message(&t, false, method, method);
        assert_eq!(
            header_values(m, "Route"),
            [rr[1].clone(), rr[0].clone()],
            "{m}"
        );
    }
    message(&t, true, "SIP/2.0 200", "BYE");

    assert!(report.contains("registered: 1"), "{}", all());
    // every message between pcscf and the core went the configured way: SIPp as the core
    // traced only TCP (or only UDP), and pcscf's report counts the core connections' messages
    let (ours, other) = if tcp { ("TCP", "UDP") } else { ("UDP", "TCP") };
    for (who, log) in [
        ("the registering S-CSCF", &reg.core_out.messages),
        ("the called S-CSCF", &orig_core.messages),
        ("the calling S-CSCF", &term_core.messages),
    ] {
        for dir in ["received", "sent"] {
            assert!(
                log.contains(&format!("{ours} message {dir}")),
                "{who}: no {ours} message {dir}\n{}",
                all()
            );
            assert!(
                !log.contains(&format!("{other} message {dir}")),
                "{who}: {other} message {dir}\n{}",
                all()
            );
        }
    }
    match core_tcp(&report) {
        Some(c) if tcp => {
            // on ours (the REGISTERs, the UE's call): 2 REGISTERs, INVITE, ACK and BYE out,
            // 401, 200, 100, 180, 200 and the BYE's 200 in; on the calling S-CSCF's: its
            // INVITE, ACK and BYE in, the UE's 180, 200 and the BYE's 200 out
            assert!(
                c.messages_in >= 9 && c.messages_out >= 8,
                "{c:?}\n{}",
                all()
            );
            assert!(c.accepted >= 1 && c.opened >= 1, "{c:?}\n{}", all());
            assert_eq!(
                (
                    c.framing,
                    c.refused,
                    c.connect_failed,
                    c.lost_in,
                    c.lost_out
                ),
                (0, 0, 0, 0, 0),
                "{c:?}\n{}",
                all()
            );
        }
        None if !tcp => {}
        c => panic!("core tcp {c:?} with tcp = {tcp}\n{}", all()),
    }
    eprintln!(
        "SIPp UE ({ue_ip}) called and was called through us in {:?}; shim {shim_stats:?}\n{}",
        t0.elapsed(),
        tail(&report, 1500)
    );
    let _ = std::fs::remove_dir_all(&reg.dir);
}
