//! Hostile UEs over TCP inside their SAs, against the real P-CSCF in the lab's namespaces
//! (issue 14): some UEs register honestly (their protected REGISTER answered 200 on their
//! connection, so they hold real SAs) and then misbehave on their set's TCP
//! (`pcscf lab --hostile-tcp`, `sim::hostile`): a slow loris, a MESSAGE without Content-Length
//! (RFC 3261 §18.3), a header section that never ends, segments over SA1 with other ports than
//! its selectors (TS 33.203 §7), a SYN flood on the set's one 4-tuple. The P-CSCF must end
//! their connections or drop their segments, and count it, while every honest UE registers and
//! has every MESSAGE answered; the P-CSCF stops cleanly at the end (no crash). Needs root.

use pcscf::sim::hostile::{HostilePlan, HostileTcp, SERVED_AGAIN, WRONG_PORT_SEGMENTS};

// (a lab that must succeed: every honest UE did)
use crate::lab::run_lab;

/// The P-CSCF's drop counters from its exit report (`pcscf:   dropped <reason> <n>`).
fn drops(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("pcscf:   dropped "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

/// A lab of `ues` UEs over TCP, every `every`-th one hostile with `kinds` in turn; checks
/// everything the honest UEs and the P-CSCF's report must show.
fn hostile_lab(ues: usize, every: usize, kinds: &[HostileTcp], rate: u32, ipv6: bool) -> String {
    let plan = HostilePlan {
        kinds: kinds.to_vec(),
        every,
    };
    let hostile = plan.count(ues);
    let honest = ues - hostile;
    let of = |k: HostileTcp| (0..ues).filter(|&i| plan.kind_of(i) == Some(k)).count() as u64;
    let messages = 3usize;
    let (n, rate, m, e) = (
        ues.to_string(),
        rate.to_string(),
        messages.to_string(),
        every.to_string(),
    );
    let list: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let list = list.join(",");
    let mut args = vec![
        "lab",
        "--ues",
        &n,
        "--rate",
        &rate,
        "--messages",
        &m,
        "--transport",
        "tcp",
        "--hostile-tcp",
        &list,
        "--hostile-every",
        &e,
    ];
    if ipv6 {
        args.push("--ipv6");
    }
    let stdout = run_lab(&args);
    // every UE registered (the hostile ones too, honestly, first); every honest MESSAGE answered
    assert!(
        stdout.contains(&format!("registrations: {ues} ok, 0 failed")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "protected MESSAGEs answered: {}\n",
            honest * messages
        )),
        "{stdout}"
    );
    // (the ue-sim's failures by reason: none)
    assert!(
        !stdout.lines().any(|l| l.starts_with("failed: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("hostile UEs: {hostile} (")),
        "{stdout}"
    );
    // the P-CSCF ended every connection that broke the rules, in time; that cost the UE its
    // connection only: its MESSAGE on a new one over the same SAs is answered 200
    let mut resets = 0;
    for k in kinds.iter().filter(|k| k.expects_reset()) {
        resets += of(*k) as usize;
        assert!(
            stdout.contains(&format!(
                "hostile tcp: {}: connection ended by the P-CSCF: {}\n",
                k.name(),
                of(*k)
            )),
            "{}: {stdout}",
            k.name()
        );
        assert!(
            stdout.contains(&format!(
                "hostile tcp: {}: {SERVED_AGAIN}: {}\n",
                k.name(),
                of(*k)
            )),
            "{}: {stdout}",
            k.name()
        );
    }
    assert!(
        !stdout.contains("on a new connection not answered"),
        "{stdout}"
    );
    assert!(!stdout.contains("on a new connection refused"), "{stdout}");
    for k in kinds.iter().filter(|k| !k.expects_reset()) {
        assert!(
            stdout.contains(&format!(
                "hostile tcp: {}: segments sent: {}\n",
                k.name(),
                of(*k)
            )),
            "{}: {stdout}",
            k.name()
        );
    }
    assert!(!stdout.contains("connection not ended in time"), "{stdout}");
    assert!(!stdout.contains("could not send"), "{stdout}");
    // the P-CSCF stopped cleanly (it printed its exit report) and dropped only the segments
    // with wrong ports, each one counted
    assert!(stdout.contains("pcscf: stopped after "), "{stdout}");
    let d = drops(&stdout);
    let wrong = of(HostileTcp::WrongPorts) * WRONG_PORT_SEGMENTS as u64;
    let refused = d
        .iter()
        .find(|(r, _)| r == "tcp_refused")
        .map_or(0, |(_, n)| *n);
    assert_eq!(refused, wrong, "{stdout}");
    assert!(
        d.iter().all(|(r, _)| r == "tcp_refused"),
        "other drops: {d:?}\n{stdout}"
    );
    // on the streams: every UE's protected REGISTER, every honest MESSAGE and each reset
    // UE's MESSAGE after it, in and answered (a hostile UE's broken message is never taken
    // as one); the core got those MESSAGEs and no other
    let framed = ues + honest * messages + resets;
    assert!(
        stdout.contains(&format!(
            "registered, 0 auth failures, {} MESSAGEs\n",
            honest * messages + resets
        )),
        "{stdout}"
    );
    let tcp = stdout
        .lines()
        .find(|l| l.starts_with("pcscf:   tcp in the SAs: "))
        .unwrap_or_else(|| panic!("no tcp line: {stdout}"));
    assert!(
        tcp.contains(&format!("{framed} messages in, {framed} out")),
        "{tcp}"
    );
    // the P-CSCF's own count of the connections it reset: each framing breaker (no
    // Content-Length, a header section past its bound) and each slow loris, no other
    let framing = of(HostileTcp::NoContentLength) + of(HostileTcp::Endless);
    let slow = of(HostileTcp::Slowloris);
    assert!(
        stdout.contains(&format!(
            "pcscf:   tcp connections reset: {framing} for framing (no or conflicting Content-Length, too large), {slow} for slow messages;"
        )),
        "{stdout}"
    );
    stdout
}

/// Every kind once among 50 UEs (every 10th), registering at 5/s so that the honest ones
/// register and exchange their MESSAGEs all through the 10 s a slow loris takes to be reset
/// (the P-CSCF's `message_time`): the slow loris's connection ends no sooner than that.
#[test]
fn hostile_tcp_ues_are_refused_while_honest_ues_work() {
    let _alone = crate::support::exclusive();
    let stdout = hostile_lab(50, 10, &HostileTcp::ALL, 5, false);
    let after = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hostile tcp: slowloris: ended at most "))
        .and_then(|l| l.split(' ').next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no slowloris timing: {stdout}"));
    assert!((9.5..14.0).contains(&after), "{after}\n{stdout}");
}

/// Half the UEs hostile (IPv6), the quick kinds in turn, 100 UEs at once: the P-CSCF ends or
/// refuses each, and the other 50 see nothing of it.
#[test]
fn hostile_tcp_half_of_the_ues_ipv6() {
    let _alone = crate::support::exclusive();
    hostile_lab(
        100,
        2,
        &[
            HostileTcp::NoContentLength,
            HostileTcp::Endless,
            HostileTcp::WrongPorts,
            HostileTcp::SynFlood,
        ],
        200,
        true,
    );
}
