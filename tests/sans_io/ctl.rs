//! `pcscf ctl` against the registrar, sans-IO (`pcscf::control::ctl`): a registered UE as each
//! command shows it, in tables and in JSON, and the operator's `deregister` (TS 24.229 §5.2.5):
//! the binding and its SAs go (the SA table's invariant checked), the core is told; what is
//! refused (an unknown identity or SPI, garbage) changes nothing.

use std::time::Duration;

use pcscf::config::{Config, LogLevel};
use pcscf::control::ctl::{self, Host, Runtime, WorkerRuntime};
use pcscf::io::Side;

use crate::reg_event::{accept, registered};

const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";

/// The daemon as the commands see it: the example configuration, one worker.
struct TestHost {
    cfg: Config,
    level: LogLevel,
}

impl Host for TestHost {
    fn config(&self) -> &Config {
        &self.cfg
    }
    fn runtime(&self) -> Runtime {
        let mut w = WorkerRuntime::default();
        w.stats.rx = 10;
        w.stats.busy_ns = 5000;
        w.stats.drop(pcscf::dataplane::DropReason::UnknownSpi);
        Runtime {
            uptime: Duration::from_secs(3),
            workers: vec![w],
            registration_cpu_s: 0.25,
            sections: vec![("core_tcp", vec![("accepted", 2)])],
        }
    }
    fn set_log_level(&mut self, level: LogLevel) {
        self.level = level;
    }
    fn log_level(&self) -> LogLevel {
        self.level
    }
}

fn host() -> TestHost {
    TestHost {
        cfg: Config::parse(pcscf::config::EXAMPLE).unwrap(),
        level: LogLevel::Info,
    }
}

fn json(r: &ctl::Reply) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn each_command_on_a_registered_ue_and_the_operators_deregistration() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    while w.reg.poll_transmit().is_some() {}
    let mut h = host();
    let mut ask = |w: &mut crate::registration_flow::World, line: &str| {
        ctl::answer(line.as_bytes(), &mut w.reg, &mut h, w.now)
    };

    // show registrations: one binding, its current set, its identities
    let r = ask(&mut w, "show registrations");
    assert!(r.ok, "{}", r.body);
    for want in [
        "1 binding(s)\n",
        IMPI,
        "registered",
        "10.46.0.6",
        "current",
        &c.spi_pc.to_string(),
        &c.spi_ps.to_string(),
        "<sip:001010000000001@ims.test>",
        "sip:001010000000001@ims.test,tel:+15551230001",
        "sip:001010000000001@10.46.0.6:5060",
    ] {
        assert!(r.body.contains(want), "{want}:\n{}", r.body);
    }
    let v = json(&ask(&mut w, "--json show registrations"));
    assert_eq!(v["bindings"], 1);
    let reg = &v["registrations"][0];
    assert_eq!(reg["impi"], IMPI);
    assert_eq!(reg["state"], "registered");
    assert_eq!(reg["asserted"], "<sip:001010000000001@ims.test>");
    assert_eq!(reg["impus"][1], "tel:+15551230001");
    let set = &reg["sets"][0];
    assert_eq!(set["role"], "current");
    assert_eq!(set["ue"], "10.46.0.6");
    assert_eq!(set["spi_ps"], c.spi_ps);
    assert_eq!(set["port_ps"], c.port_ps);
    assert_eq!(set["spi_uc"], 1236);
    assert!(set["expires_in_s"].as_u64().unwrap() > 3000, "{set}");
    // by IMPI, by any registered IMPU; an unknown one is refused
    for id in [IMPI, "tel:+15551230001", "sip:001010000000001@ims.test"] {
        let v = json(&ask(&mut w, &format!("--json show registrations {id}")));
        assert_eq!(v["registrations"][0]["impi"], IMPI, "{id}");
    }
    let r = ask(&mut w, "show registrations sip:nobody@ims.test");
    assert!(!r.ok && r.body.contains("no registration"), "{}", r.body);

    // show sa: the set's four SAs
    let r = ask(&mut w, &format!("show sa {}", c.spi_ps));
    assert!(r.ok, "{}", r.body);
    assert!(r.body.contains("current set of"), "{}", r.body);
    let v = json(&ask(&mut w, &format!("--json show sa {}", c.spi_pc)));
    let sas = v["sas"].as_array().unwrap();
    assert_eq!(sas.len(), 4, "{v}");
    let dirs: Vec<&str> = sas
        .iter()
        .map(|s| s["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["in", "in", "out", "out"]);
    assert_eq!(sas[0]["window"], 64);
    assert!(ask(&mut w, "show sa 1").body.contains("no inbound SA"));

    // the others
    assert!(ask(&mut w, "show dialogs").body.starts_with("0 dialog(s)"));
    let r = ask(&mut w, "show runtime");
    for want in [
        "per-stage time is not measured",
        "unknown_spi",
        "registrar.registered",
        "core_tcp.accepted",
    ] {
        assert!(r.body.contains(want), "{want}:\n{}", r.body);
    }
    let v = json(&ask(&mut w, "--json show runtime"));
    assert_eq!(v["workers"][0]["ns_per_packet"], 500);
    let r = ask(&mut w, "show config");
    Config::parse(&r.body).unwrap_or_else(|e| panic!("{e}:\n{}", r.body));
    assert!(json(&ask(&mut w, "--json show config"))["control"]["socket"].is_string());
    assert!(
        ask(&mut w, "log level debug")
            .body
            .contains("log level debug (was info)")
    );
    assert_eq!(h.level, LogLevel::Debug);
    let mut ask = |w: &mut crate::registration_flow::World, line: &str| {
        ctl::answer(line.as_bytes(), &mut w.reg, &mut h, w.now)
    };

    // garbage changes nothing
    for junk in [
        "",
        "deregister",
        "show sa x",
        "\u{1b}]0;pwned\u{7}",
        "deregister a b",
    ] {
        let r = ask(&mut w, junk);
        assert!(!r.ok, "{junk:?}: {}", r.body);
    }
    assert_eq!(w.reg.registrations(), 1);

    // deregister: the registration ends, the S-CSCF is told, the SAs go after their linger
    let r = ask(&mut w, "deregister tel:+15551230001");
    assert!(r.ok, "{}", r.body);
    assert!(
        r.body.contains("deregistered tel:+15551230001"),
        "{}",
        r.body
    );
    let out: Vec<_> = std::iter::from_fn(|| w.reg.poll_transmit()).collect();
    assert!(
        out.iter().any(|o| o.side == Side::Core
            && o.payload.starts_with(b"REGISTER ")
            && String::from_utf8_lossy(&o.payload).contains("\r\nExpires: 0\r\n")),
        "{out:?}"
    );
    assert_eq!(w.reg.stats.pcscf_deregistrations, 1);
    let r = ask(&mut w, "show registrations");
    assert!(
        r.body.contains("ending") && !r.body.contains("registering"),
        "no identity any more, its sets going:\n{}",
        r.body
    );
    w.now += Duration::from_secs(3);
    w.reg.handle_timeout(w.now);
    while w.reg.poll_transmit().is_some() {}
    w.reg.check_sa_invariants().unwrap();
    let st = w.reg.sa_table_stats();
    assert_eq!((st.inbound_live, st.outbound_live), (0, 0));
    let r = ask(&mut w, "show registrations");
    assert!(r.body.starts_with("0 binding(s)"), "{}", r.body);
    assert!(
        ask(&mut w, &format!("show sa {}", c.spi_ps))
            .body
            .contains("no inbound SA")
    );
    let r = ask(&mut w, "--json deregister tel:+15551230001");
    assert!(!r.ok);
    assert!(
        json(&r)["error"]
            .as_str()
            .unwrap()
            .contains("no registration")
    );
    assert_eq!(w.reg.stats.pcscf_deregistrations, 1);
}
