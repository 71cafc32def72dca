//! The registration through `pcscf run` with SIPp (Debian's sip-tester) playing the
//! I-CSCF/S-CSCF from `tests/sipp/scscf_uas.xml`: an independent SIP stack reads what we forward
//! (it checks Path, integrity-protected "no" then "yes", and that no Route names us) and its 401
//! and 200 come back to our UE — the 200 as ESP. The UE pre-loads our address as phones learn it
//! from the bearer's PCO: `Route: <sip:10.211.0.1:5060;lr>`, then our port-s on the protected
//! REGISTER. Needs root and sipp (CI installs it); a missing sipp fails the test.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pcscf::dataplane::{L4, classify};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim::rawip::{self, send_ip};
use pcscf::sip::Message;

use crate::support::ims::*;
use crate::support::sipp::*;

#[test]
fn registration_with_sipp_as_the_scscf() {
    register_through_sipp("psipp", false);
}

/// The same over TCP toward the core (RFC 3261 §18, RFC 3263 §4.1): SIPp listens with `-t t1`,
/// the P-CSCF's I-CSCF is configured `icscf_transport = "tcp"`, both REGISTERs go on one
/// connection of ours with our Via saying TCP, and the 401 and 200 come back on it.
#[test]
fn registration_with_sipp_as_the_scscf_over_tcp() {
    register_through_sipp("psippt", true);
}

fn register_through_sipp(name: &str, tcp: bool) {
    require_sipp();
    let lab = Lab::new(name, "s").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let transport = if tcp { "tcp" } else { "udp" };
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nicscf_transport = \"{transport}\"\nmax_udp_request = 65535\nhostname = \"{HOSTNAME}\"\nreg_event = false\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let pcscf = start_pcscf(&lab, "sipp", &cfg);

    // The vector SIPp hands out (our HSS code, test set 1).
    let mut hss = test_hss();
    let av = hss.next_vector(&[0x31; 16]).unwrap();
    let dir = work_dir(if tcp { "regtcp" } else { "reg" });
    let extra: &[&str] = if tcp { &["-t", "t1"] } else { &[] };
    let sipp = start_scscf_with(&lab, &dir, HOSTNAME, (1, 20), &av, extra);

    let deadline = Instant::now() + Duration::from_secs(20);
    let ue = spawn_in(&lab.ue, move || register_raw_ue(deadline).map(|ue| ue.ok))
        .join()
        .unwrap();

    let sipp_out = sipp.finish(Duration::from_secs(20));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let pc = pcscf.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&pc.stderr);
    let ok = ue.unwrap_or_else(|e| panic!("UE: {e}\n{report}\n{}", sipp_out.report("SIPp S-CSCF")));
    assert_eq!(
        Message::parse_strict(&ok).unwrap().view().status(),
        Some(200)
    );
    assert!(
        sipp_out.clean(),
        "SIPp's checks of what we forwarded failed:\n{}",
        sipp_out.report("SIPp S-CSCF")
    );
    assert!(report.contains("registered: 1"), "{report}");
    // what SIPp received: both REGISTERs, over TCP with our Via saying so, or as datagrams
    let log = sipp_out.messages.clone();
    let got: Vec<Traced> = trace(&log).into_iter().filter(|t| t.received).collect();
    assert_eq!(got.len(), 2, "{log}");
    for t in &got {
        let via = format!("Via: SIP/2.0/{} ", transport.to_uppercase());
        assert!(t.text.contains(&via), "{}", t.text);
    }
    if tcp {
        assert!(
            report.contains(
                "tcp with the core: 2 messages in, 2 out; connections 0 accepted, 1 opened"
            ),
            "{report}"
        );
        assert!(log.contains("TCP message received"), "{log}");
    } else {
        assert!(!report.contains("tcp with the core"), "{report}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our UE in the lab's UE namespace (AKA, digest and ESP of our own, over raw IP), once
/// registered: the SAs it sends and answers come on, and the 200 it got over SA2.
pub(crate) struct RawUe {
    /// UE port-c → our port-s (its requests), and our port-s → its port-c (their answers).
    sa1: Sa,
    sa3: Sa,
    port_s: u16,
    tx: std::os::fd::OwnedFd,
    rx: std::os::fd::OwnedFd,
    pub ok: Vec<u8>,
    sent: u32,
}

/// Register [`REGISTER1`] as 10.211.0.2 with our address in Route (as a phone learns it from
/// PCO) through the P-CSCF at 10.211.0.1; run it inside the UE namespace (its raw sockets stay
/// there).
pub(crate) fn register_raw_ue(deadline: Instant) -> Result<RawUe, String> {
    let mut usim = test_usim();
    let register = REGISTER1
        .replace("10.46.0.6", "10.211.0.2")
        .replace(&format!("{HOSTNAME}:5060"), "10.211.0.1:5060");
    let s = UdpSocket::bind("10.211.0.2:5060").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let pcscf: SocketAddr = "10.211.0.1:5060".parse().unwrap();
    let Challenge {
        server,
        mech,
        nonce,
        auth: got,
    } = challenge(&s, register.as_bytes(), pcscf, &mut usim, deadline)?;
    let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
    let (alg, ealg) = (mech.alg.token(), mech.ealg.token());
    let sa = |spi| Sa::from_aka(spi, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
    // REGISTER1 offers spi-c 1236, spi-s 1237, port-c 7004, port-s 7005
    let (sa1, sa2, sa3) = (sa(mech.spi_s), sa(1237), sa(1236));
    let reg2 = String::from_utf8(protected_register(&nonce, &got.res, &server))
        .unwrap()
        .replace("10.46.0.6", "10.211.0.2")
        .replace(
            &format!("{HOSTNAME}:5060"),
            &format!("10.211.0.1:{}", mech.port_s),
        );
    let src: SocketAddr = "10.211.0.2:7004".parse().unwrap();
    let dst = SocketAddr::new("10.211.0.1".parse().unwrap(), mech.port_s);
    let esp = esp_packet(&sa1, src, dst, reg2.as_bytes());
    let tx = rawip::raw(libc::IPPROTO_RAW).unwrap();
    let rx = rawip::raw(libc::IPPROTO_ESP).unwrap();
    send_ip(&tx, &esp, "10.211.0.1".parse().unwrap());
    let ok = recv_over(&rx, &sa2, deadline).ok_or("no 200 over SA2")??;
    Ok(RawUe {
        sa1,
        sa3,
        port_s: mech.port_s,
        tx,
        rx,
        ok,
        sent: 0,
    })
}

/// The UDP payload of the next ESP packet `sa` opens on `rx`, by `deadline`.
fn recv_over(
    rx: &std::os::fd::OwnedFd,
    sa: &Sa,
    deadline: Instant,
) -> Option<Result<Vec<u8>, String>> {
    let mut pkt = [0u8; 4096];
    while let Some(n) = recv_ip_until(rx, &mut pkt, deadline) {
        let mut p = pkt[..n].to_vec();
        let Ok((inner, _)) = sa.decapsulate(&mut p) else {
            continue;
        };
        let inner = &p[inner];
        let L4::Udp { payload, .. } = classify(inner) else {
            return Some(Err("inner packet not UDP".into()));
        };
        return Some(Ok(inner[payload.start..payload.end].to_vec()));
    }
    None
}

impl RawUe {
    /// A protected MESSAGE to `to` from the default identity, over SA1 (port-c 7004 → our
    /// port-s); its answer over SA3 within `wait`, if one comes.
    pub(crate) fn message(&mut self, to: &str, wait: Duration) -> Option<Vec<u8>> {
        let body = "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        self.request("MESSAGE", to, body, wait)
    }

    /// A protected `method` to `ruri` ([`RawUe::message`]'s way), `tail` its last header
    /// lines and body.
    pub(crate) fn request(
        &mut self,
        method: &str,
        ruri: &str,
        tail: &str,
        wait: Duration,
    ) -> Option<Vec<u8>> {
        self.sent += 1;
        let n = self.sent;
        let msg = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.211.0.2:7004;branch=z9hG4bKmsg{n};rport\r\nMax-Forwards: 70\r\nRoute: <sip:10.211.0.1:{};lr>\r\nFrom: <sip:001010000000001@ims.test>;tag=m{n}\r\nTo: <{ruri}>\r\nCall-ID: msg{n}@10.211.0.2\r\nCSeq: 1 {method}\r\n{tail}",
            self.port_s
        );
        let src: SocketAddr = "10.211.0.2:7004".parse().unwrap();
        let dst = SocketAddr::new("10.211.0.1".parse().unwrap(), self.port_s);
        // sent again on RFC 3261 §17.1.2.2's schedule (T1, doubling) until `wait` is over: a
        // first datagram may meet a neighbour not resolved yet on the core side
        let until = Instant::now() + wait;
        let mut interval = Duration::from_millis(500);
        while Instant::now() < until {
            // (each is a new ESP packet: a replayed sequence number would be refused)
            let esp = esp_packet(&self.sa1, src, dst, msg.as_bytes());
            send_ip(&self.tx, &esp, "10.211.0.1".parse().unwrap());
            let next = (Instant::now() + interval).min(until);
            if let Some(Ok(answer)) = recv_over(&self.rx, &self.sa3, next) {
                return Some(answer);
            }
            interval *= 2;
        }
        None
    }
}

/// The core-side Route check, run through glibc's POSIX regex as SIPp runs it: every form in
/// which a phone may name us matches, and nothing that is not us does (a check that never
/// fires would prove nothing).
#[test]
fn route_check_expression_finds_us_in_every_form_and_only_us() {
    let re = route_names_us_regex(
        &[
            "10.211.0.1".parse().unwrap(),
            "fd00:211::1".parse().unwrap(),
            "10.212.0.1".parse().unwrap(),
        ],
        &[HOSTNAME],
    );
    let msg = |route: &str| {
        format!(
            "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0\r\nVia: SIP/2.0/UDP 10.212.0.1:5060;branch=z9hG4bK1\r\n{route}\r\nPath: <sip:term@{HOSTNAME};lr>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    for us in [
        "Route: <sip:10.211.0.1:5060;lr>",
        "Route: <sip:10.211.0.1;lr>",
        "Route: <sip:10.211.0.1:5101;lr>",
        "route:<sips:10.211.0.1>",
        "ROUTE: <sip:10.212.0.1:5060;lr>",
        "Route: <sip:[fd00:211::1]:5060;lr>",
        "Route: <sip:[FD00:211:0:0::1]:5060;lr;transport=udp>",
        "Route: <sip:[fd00:0211:0000:0000:0000:0000:0000:0001];lr>",
        "Route: <sip:[fd00:211:0:0:0:0:0:1]:5103;lr>",
        "Route: <sip:[fd00:211::0:1];lr>",
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>",
        "Route: <sip:PCSCF.IMS.mnc001.mcc001.3GPPNETWORK.ORG:5060;lr>",
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org.;lr>",
        "Route: <sip:orig@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>",
        "Route: <sip:scscf.test;lr>, <sip:10.211.0.1:5060;lr>",
        "Route: <sip:scscf.test;lr>\r\nRoute: <sip:10.211.0.1:5060;lr>",
        "Route: <sip:scscf.test;lr>,\r\n <sip:10.211.0.1:5060;lr>",
        "Route:\t<sip:10.211.0.1>",
    ] {
        assert!(posix_match(&re, &msg(us)), "not found: {us}");
    }
    for other in [
        "Max-Forwards: 70",
        "Route: <sip:10.211.0.12:5060;lr>",
        "Route: <sip:110.211.0.1:5060;lr>",
        "Route: <sip:10.211.0.2:5060;lr>",
        "Route: <sip:[fd00:211::2]:5060;lr>",
        "Route: <sip:[fd00:211::1:1];lr>",
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org.evil;lr>",
        "Route: <sip:xpcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>",
        "Route: <sip:scscf.test;lr>",
        "Service-Route: <sip:10.211.0.1;lr>",
        "Record-Route: <sip:10.211.0.1;lr>",
    ] {
        assert!(!posix_match(&re, &msg(other)), "matched: {other}");
    }
}

/// The hostile side of the core's checks, without a P-CSCF: the SIPp S-CSCF of
/// `scscf_uas.xml` (as the tests instantiate it) is fed REGISTERs straight from a socket on
/// loopback. A clean pair passes; a pair whose Routes name us (IPv6 in another form, then our
/// hostname in capitals, second in a folded list) and a pair that still carries
/// Security-Client, then `Require: sec-agree`, are reported in SIPp's error file — so an empty
/// error file in the namespace tests means something. SIPp logs only the first failed check
/// of a message, hence one trap per message. Needs sipp, not root.
#[test]
fn the_sipp_core_reports_a_route_naming_us() {
    require_sipp();
    let dir = work_dir("hostile-core");
    let route_re = route_names_us_regex(
        &[
            "10.211.0.1".parse().unwrap(),
            "fd00:211::1".parse().unwrap(),
            "10.212.0.1".parse().unwrap(),
        ],
        &[HOSTNAME],
    );
    let sf = scenario_with(
        "scscf_uas.xml",
        &[
            ("@ROUTE_NAMES_PCSCF@", &route_re),
            ("@TCP_PARAM@", tcp_param(false)),
        ],
        &dir,
    );
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args: Vec<String> = [
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "3",
        "-timeout",
        "15",
        "-timeout_error",
        "-key",
        "nonce",
        "bm9uY2U=",
        "-key",
        "ck",
        "00",
        "-key",
        "ik",
        "00",
        "-key",
        "sr_host",
        "127.0.0.1",
        "-key",
        "associated",
        "<sip:001010000000001@ims.test>",
    ]
    .map(String::from)
    .to_vec();
    let sipp = start_sipp_here(&dir, &sf, &args);
    let core: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let me = s.local_addr().unwrap();
    let register = |call: &str, cseq: u32, extra: &str, ip: &str| {
        format!(
            "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}{cseq}\r\nMax-Forwards: 69\r\n{extra}From: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>;tag={call}\r\nTo: <sip:001010000000001@ims.mnc001.mcc001.3gppnetwork.org>\r\nCall-ID: {call}@test\r\nCSeq: {cseq} REGISTER\r\nAuthorization: Digest username=\"{IMPI}\",realm=\"{REALM}\",uri=\"sip:{REALM}\",nonce=\"bm9uY2U=\",response=\"0123456789abcdef0123456789abcdef\",integrity-protected=\"{ip}\"\r\nPath: <sip:term@{HOSTNAME};lr>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let exchange = |msg: String, expect: &str| {
        let mut buf = [0u8; 4096];
        loop {
            assert!(Instant::now() < deadline, "SIPp did not answer {msg}");
            s.send_to(msg.as_bytes(), core).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let a = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(a.starts_with(expect), "{a}");
                return;
            }
        }
    };
    exchange(register("clean", 1, "", "no"), "SIP/2.0 401");
    exchange(register("clean", 2, "", "yes"), "SIP/2.0 200");
    let bad1 = "Route: <sip:[FD00:211:0:0::1]:5060;lr;transport=udp>\r\n";
    let bad2 =
        "Route: <sip:scscf.test;lr>,\r\n <sip:PCSCF.IMS.MNC001.MCC001.3GPPNETWORK.ORG:5103;lr>\r\n";
    exchange(register("bad", 1, bad1, "no"), "SIP/2.0 401");
    exchange(register("bad", 2, bad2, "yes"), "SIP/2.0 200");
    let sec1 =
        "Security-Client: ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4\r\n";
    exchange(register("sec", 1, sec1, "no"), "SIP/2.0 401");
    exchange(
        register("sec", 2, "Proxy-Require: foo, sec-agree\r\n", "yes"),
        "SIP/2.0 200",
    );
    let out = sipp.finish(Duration::from_secs(10));
    let hits = out.errors.matches("Regexp matched but should not").count();
    assert_eq!(hits, 4, "{}", out.report("SIPp S-CSCF"));
    assert_eq!(out.errors.matches("Call-ID: bad@test").count(), 2);
    assert_eq!(out.errors.matches("Call-ID: sec@test").count(), 2);
    assert!(
        !out.errors.contains("clean@test"),
        "{}",
        out.report("SIPp S-CSCF")
    );
    assert!(!out.clean());
    let _ = std::fs::remove_dir_all(&dir);
}
