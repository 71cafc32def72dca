//! The reg event package through `pcscf run`, with SIPp as the S-CSCF sending the NOTIFYs (an
//! independent stack proves the format we parse; `tests/sipp/scscf_regevent.xml`): SIPp as
//! the I-CSCF registers our UE (`tests/sipp/scscf_uas.xml`, two identities in
//! P-Associated-URI, a Service-Route to the S-CSCF at a second core address), pcscf subscribes
//! there (TS 24.229 §5.2.3) and the S-CSCF de-registers the user one identity at a time
//! (TS 24.229 §5.2.5.1 [spec-m]). The UE's protected MESSAGEs show what pcscf asserts at each
//! step: the default identity, then the one left, then nothing: refused, its SAs gone.
//! Needs root and sipp (CI installs it); a missing sipp fails the test.

use std::time::{Duration, Instant};

use pcscf::lab::{Lab, ip, spawn_in};
use pcscf::sip::Message;

use crate::sipp_registration::register_raw_ue;
use crate::support::ims::*;
use crate::support::sipp::*;

/// The S-CSCF's address: a second one in the core namespace (SIPp plays one scenario per
/// socket, and the registrar's and the notifier's are two).
const SCSCF: &str = "10.212.0.3";
const METRICS_PORT: u16 = 9471;
/// Between the S-CSCF's NOTIFYs: time for the UE's MESSAGE in each state.
const PAUSE_MS: u32 = 4000;
/// What a hostile UE would have pcscf believe: its whole registration terminated.
const FORGED: &str = "<?xml version=\"1.0\"?><reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"0\" state=\"full\"><registration aor=\"sip:001010000000001@ims.test\" id=\"x\" state=\"terminated\"/></reginfo>";

fn metric(lab: &Lab, event: &str) -> u64 {
    scrape(lab, METRICS_PORT)
        .get(&format!("pcscf_reg_event_total{{event=\"{event}\"}}"))
        .copied()
        .unwrap_or(0)
}

/// Wait until the reg event counter `event` reaches `n` (the registration thread renews the
/// metrics every 500 ms).
fn wait_metric(lab: &Lab, event: &str, n: u64, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if metric(lab, event) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn the_network_deregisters_a_ue_through_notifies_from_sipp() {
    network_deregistration_through_sipp(false);
}

/// The same with the core over TCP (SIPp `-t t1`, its Service-Route `;transport=tcp`): the
/// SUBSCRIBE and the UE's MESSAGEs go on our connection to the S-CSCF, its NOTIFYs come back on
/// it, the second larger than a worker's 4 KB queue slot (handed to the registration thread
/// whole by core TCP).
#[test]
fn the_network_deregisters_a_ue_through_notifies_from_sipp_over_tcp() {
    network_deregistration_through_sipp(true);
}

/// `n` RFC 3680 `unknown-param` elements (a contact's feature tags), about 100 bytes each.
fn padding(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!("<unknown-param name=\"+g.3gpp.tag{i:02}\">\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"</unknown-param>")
        })
        .collect()
}

fn network_deregistration_through_sipp(tcp: bool) {
    require_sipp();
    let tag = if tcp { "t" } else { "n" };
    let transport = if tcp { "tcp" } else { "udp" };
    let lab = Lab::new("psrev", tag).unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    ip(&[
        "-n",
        &lab.core,
        "addr",
        "add",
        &format!("{SCSCF}/24"),
        "dev",
        &lab.core_if,
    ])
    .unwrap();
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nicscf_transport = \"{transport}\"\nmax_udp_request = 65535\nhostname = \"{HOSTNAME}\"\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n[stats]\nprometheus = \"127.0.0.1:{METRICS_PORT}\"\n",
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let pcscf = start_pcscf(&lab, &format!("sipprev{tag}"), &cfg);

    let mut hss = test_hss();
    let av = hss.next_vector(&[0x31; 16]).unwrap();
    let dir = work_dir(&format!("regevent{tag}"));
    let over_tcp: &[&str] = if tcp { &["-t", "t1"] } else { &[] };
    let registrar = start_scscf_keyed(
        &lab,
        &dir,
        HOSTNAME,
        (1, 30),
        &av,
        over_tcp,
        &[
            ("sr_host", SCSCF),
            (
                "associated",
                "<sip:001010000000001@ims.test>, <tel:+15551230001>",
            ),
        ],
    );
    let sf = scenario_with(
        "scscf_regevent.xml",
        &[
            ("@CONTACT@", "sip:001010000000001@10.211.0.2:7005"),
            ("@PAUSE@", &PAUSE_MS.to_string()),
        ],
        &dir,
    );
    // the subscription, and the UE's two MESSAGEs that reach it
    // the second NOTIFY: over 1300 bytes as a datagram (one packet still: the link's MTU is
    // 1500), over 4 KB on the connection
    let pad = padding(if tcp { 60 } else { 7 });
    let mut args: Vec<String> = [
        "-i",
        SCSCF,
        "-p",
        "5060",
        "-m",
        "3",
        "-timeout",
        "40",
        "-timeout_error",
        "-key",
        "padding",
        &pad,
    ]
    .map(String::from)
    .to_vec();
    args.extend(over_tcp.iter().map(|a| a.to_string()));
    let scscf = start_sipp(&lab.core, &dir, &sf, &args);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ue = spawn_in(&lab.ue, move || register_raw_ue(deadline))
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("UE: {e}"));
    let status =
        |m: Option<Vec<u8>>| m.and_then(|m| Message::parse_strict(&m).ok()?.view().status());
    // registered with both identities: the default one is asserted
    let first = status(ue.message("sip:bob@ims.test", Duration::from_secs(3)));
    // a UE cannot notify pcscf of its own reg event: a NOTIFY to our core-side Contact, over
    // its SA, with a document terminating itself, is answered 405 and changes nothing
    let forged = format!(
        "Event: reg\r\nSubscription-State: terminated\r\nContent-Type: application/reginfo+xml\r\nContent-Length: {}\r\n\r\n{FORGED}",
        FORGED.len()
    );
    let own_notify = status(ue.request(
        "NOTIFY",
        "sip:10.212.0.1:5060",
        &forged,
        Duration::from_secs(2),
    ));
    // the S-CSCF terminates the default identity: the other is asserted
    let one_gone = wait_metric(&lab, "impus_terminated", 1, Duration::from_secs(15));
    let second = status(ue.message("sip:bob@ims.test", Duration::from_secs(3)));
    // ... and then the other: the registration has ended, the MESSAGE is refused
    let all_gone = wait_metric(&lab, "network_deregistrations", 1, Duration::from_secs(15));
    let third = status(ue.message("sip:bob@ims.test", Duration::from_secs(1)));
    // once the last messages had time to leave over them, the SAs are gone too
    std::thread::sleep(Duration::from_secs(3));
    let fourth = status(ue.message("sip:bob@ims.test", Duration::from_secs(1)));

    let scscf_out = scscf.finish(Duration::from_secs(10));
    let registrar_out = registrar.finish(Duration::from_secs(5));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let pc = pcscf.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&pc.stderr);
    let all = || {
        format!(
            "{}\n{}\npcscf:\n{}",
            registrar_out.report("SIPp I-CSCF"),
            scscf_out.report("SIPp S-CSCF"),
            tail(&report, 5000)
        )
    };
    assert!(registrar_out.clean(), "{}", all());
    assert!(
        scscf_out.clean(),
        "the S-CSCF's checks of our SUBSCRIBE or its NOTIFYs failed:\n{}",
        all()
    );
    assert_eq!(
        (first, own_notify, one_gone, second, all_gone, third, fourth),
        (Some(200), Some(405), true, Some(200), true, None, None),
        "{}",
        all()
    );
    // what the S-CSCF received: the MESSAGEs, each with the identity asserted then
    let got: Vec<Traced> = trace(&scscf_out.messages)
        .into_iter()
        .filter(|t| t.received && t.text.starts_with("MESSAGE "))
        .collect();
    assert_eq!(got.len(), 2, "{}", all());
    assert!(
        got[0]
            .text
            .contains("P-Asserted-Identity: <sip:001010000000001@ims.test>"),
        "{}",
        got[0].text
    );
    assert!(
        got[1]
            .text
            .contains("P-Asserted-Identity: <tel:+15551230001>"),
        "{}",
        got[1].text
    );
    for want in [
        "notify_unknown: 0",
        "network_deregistrations: 1",
        "impus_terminated: 2",
        "notifies_applied: 3",
        "subscribed: 1",
    ] {
        assert!(report.contains(want), "{want}\n{}", all());
    }
    // the third MESSAGE met an SA with no registration, the fourth no SA at all
    let dropped = |name: &str| {
        report
            .lines()
            .find(|l| l.contains(&format!("dropped {name} ")))
            .and_then(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // (each sent again on the UE's timer: at least one of each)
    assert!(
        dropped("not_registered") >= 1 && dropped("unknown_spi") >= 1,
        "{}",
        all()
    );
    // the NOTIFYs' sizes as SIPp sent them, and how they came
    let sizes: Vec<usize> = trace(&scscf_out.messages)
        .into_iter()
        .filter(|t| !t.received && t.text.starts_with("NOTIFY "))
        .map(|t| t.text.len())
        .collect();
    assert_eq!(sizes.len(), 3, "{}", all());
    assert!(sizes[1] > if tcp { 4096 } else { 1300 }, "{sizes:?}");
    if tcp {
        assert!(report.contains("tcp with the core: "), "{}", all());
        assert!(scscf_out.messages.contains("TCP message sent"), "{}", all());
    } else {
        assert!(sizes[1] <= 1500 - 28, "one datagram at MTU 1500: {sizes:?}");
        assert!(!report.contains("tcp with the core"), "{}", all());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
