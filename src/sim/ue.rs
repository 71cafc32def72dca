//! `pcscf ue-sim`: many UEs from one process, each doing the whole UE side of IMS registration —
//! Security-Client, AKA (our USIM code), the four SAs in user space (our ESP code over raw
//! sockets), the protected REGISTER — then protected MESSAGEs, at a target rate, with failures
//! counted by reason and hdrhistogram latencies.
//!
//! One thread, non-blocking sockets: an unprotected UDP socket shared by all UEs (answers are
//! told apart by Call-ID), a raw socket to send ESP and one to receive it (told apart by the
//! UE's inbound SPI). UE `i` uses IMPI `001010000{i:06}@<realm>`, ports 20000+2i / 20001+2i
//! and SPIs 0x10000+2i / 0x10001+2i.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::aka::{self, Milenage, UeSqnState, Usim, digest};
use crate::dataplane::{L4, classify};
use crate::esp::{Frame, Sa, SaOptions, Suite};
use crate::sim::rawip::{esp6_socket, raw, recv_esp6, recv_ip, send_esp6, send_ip};
use crate::sip::headers::{Digest, SecMechanism};
use crate::sip::{HeaderName, Message};
use crate::wire::{self, Ipv6Repr, protocol};

/// What to run.
#[derive(Clone, Debug)]
pub struct UeSimConfig {
    /// The UEs' address (IPv4 or IPv6; all UEs share it, with their own ports).
    pub ue_ip: IpAddr,
    pub pcscf: SocketAddr,
    pub realm: String,
    pub ues: usize,
    /// New registrations started per second.
    pub rate: u32,
    /// Protected MESSAGEs per UE after it registered.
    pub messages: u32,
    /// Give up on a step after this long.
    pub timeout: Duration,
    /// Print progress to stderr.
    pub progress: bool,
    /// Every n-th UE (n > 0) answers the challenge with a wrong RES, as a cloned or broken SIM
    /// would: the core must refuse it and the P-CSCF drop its temporary SAs, and no other UE
    /// may notice.
    pub wrong_res_every: usize,
    /// After its MESSAGEs, each UE refreshes its registration with a protected re-REGISTER over
    /// its SAs (TS 24.229 §5.1.1.4: the same Security-Verify, the last Authorization) and
    /// waits for the 200.
    pub reregister: bool,
}

/// The outcome.
#[derive(Debug)]
pub struct UeSimReport {
    pub registered: usize,
    /// Re-registrations answered 200 ([`UeSimConfig::reregister`]).
    pub reregistered: usize,
    pub messages_ok: u64,
    pub failures: HashMap<&'static str, u64>,
    pub elapsed: Duration,
    /// Registration (first REGISTER → protected 200) and MESSAGE → 200 latencies, µs.
    pub reg_latency: Histogram<u64>,
    pub msg_latency: Histogram<u64>,
}

impl UeSimReport {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn print(&self) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "registrations: {} ok, {} failed in {:.2} s ({:.0} registrations/s)",
            self.registered,
            self.failed(),
            secs,
            self.registered as f64 / secs
        );
        println!("protected MESSAGEs answered: {}", self.messages_ok);
        if self.reregistered > 0 {
            println!("re-registrations: {} ok", self.reregistered);
        }
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        if !self.reg_latency.is_empty() {
            println!(
                "registration latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                q(&self.reg_latency, 0.5),
                q(&self.reg_latency, 0.99),
                self.reg_latency.max() as f64 / 1000.0
            );
        }
        if !self.msg_latency.is_empty() {
            println!(
                "MESSAGE latency: p50 {:.2} ms, p99 {:.2} ms",
                q(&self.msg_latency, 0.5),
                q(&self.msg_latency, 0.99)
            );
        }
        let mut f: Vec<_> = self.failures.iter().collect();
        f.sort();
        for (why, n) in f {
            println!("failed: {why}: {n}");
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Idle,
    Challenged,
    Registering,
    Messaging,
    Reregistering,
    Done,
    Failed,
}

struct Ue {
    step: Step,
    started: Instant,
    step_at: Instant,
    usim: Usim,
    sa1: Option<Sa>,
    sa2: Option<Sa>,
    port_ps: u16,
    port_pc: u16,
    messages_left: u32,
    msg_sent: Instant,
    /// RFC 3261 §17.1.2.2 timer E for the unprotected REGISTER: resend after 0.5, 1, 2 s.
    resends: u32,
    last_sent: Instant,
    /// The protected request in flight (protected REGISTER or MESSAGE), for retransmission.
    in_flight: Option<String>,
    /// Our Security-Verify (the 401's Security-Server) and Authorization line, for the
    /// re-REGISTER.
    verify: String,
    auth: String,
}

struct Sim {
    cfg: UeSimConfig,
    udp: UdpSocket,
    /// IPv4: a raw IPPROTO_RAW socket to send whole packets and an ESP one to receive.
    /// IPv6: one ESP socket both ways; the kernel writes and strips the IPv6 header.
    tx: OwnedFd,
    rx: OwnedFd,
}

impl Sim {
    fn impi(&self, i: usize) -> String {
        format!("001010000{i:06}@{}", self.cfg.realm)
    }
    fn ports(i: usize) -> (u16, u16) {
        (20000 + 2 * i as u16, 20001 + 2 * i as u16)
    }
    fn spis(i: usize) -> (u32, u32) {
        (0x10000 + 2 * i as u32, 0x10001 + 2 * i as u32)
    }

    fn register(&self, i: usize, cseq: u32, auth: &str, verify: Option<&str>) -> String {
        let (pc, ps) = Self::ports(i);
        let (sc, ss) = Self::spis(i);
        let impi = self.impi(i);
        let user = impi.split('@').next().unwrap_or_default();
        let realm = &self.cfg.realm;
        let ip = self.host();
        let verify = verify
            .map(|v| format!("Security-Verify: {v}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{ps};branch=z9hG4bK{i}r{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=u{i}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: reg-{i}@{ip}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{ip}:{ps}>;expires=600000\r\n{auth}Security-Client: ipsec-3gpp;alg=null;ealg=aes-gcm;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}, ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}, ipsec-3gpp;alg=hmac-sha-1-96;ealg=null;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}\r\n{verify}Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\nExpires: 600000\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn first_register(&self, i: usize) {
        let auth = format!(
            "Authorization: Digest username=\"{}\",realm=\"{}\",uri=\"sip:{}\",nonce=\"\",response=\"\"\r\n",
            self.impi(i),
            self.cfg.realm,
            self.cfg.realm
        );
        let _ = self
            .udp
            .send_to(self.register(i, 1, &auth, None).as_bytes(), self.cfg.pcscf);
    }

    /// The UEs' address as written in SIP (an IPv6 reference in brackets).
    fn host(&self) -> String {
        match self.cfg.ue_ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }

    /// Send an ESP packet (a whole IP packet as `esp` builds it) to the P-CSCF.
    fn send_esp(&self, pkt: &[u8]) {
        match self.cfg.pcscf.ip() {
            IpAddr::V4(dst) => send_ip(&self.tx, pkt, dst),
            IpAddr::V6(dst) => send_esp6(&self.tx, &pkt[40..], dst),
        }
    }

    /// The next ESP packet for us, as a whole IP packet in `buf` (IPv6: the header the raw
    /// socket stripped is rebuilt). Returns its length.
    fn recv_esp(&self, buf: &mut [u8]) -> Option<usize> {
        match self.cfg.ue_ip {
            IpAddr::V4(_) => recv_ip(&self.rx, buf),
            IpAddr::V6(me) => {
                let (n, from) = recv_esp6(&self.rx, &mut buf[40..])?;
                Ipv6Repr {
                    src: from,
                    dst: me,
                    next_header: protocol::ESP,
                    hop_limit: 64,
                    traffic_class: 0,
                    payload_len: n,
                }
                .emit(buf)
                .ok()?;
                Some(40 + n)
            }
        }
    }

    fn message(&self, i: usize, n: u32) -> String {
        let (_, ps) = Self::ports(i);
        let realm = &self.cfg.realm;
        let ip = self.host();
        let impi = self.impi(i);
        let user = impi.split('@').next().unwrap_or_default();
        format!(
            "MESSAGE sip:echo@{realm} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{ps};branch=z9hG4bK{i}m{n}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=m{i}\r\nTo: <sip:echo@{realm}>\r\nCall-ID: msg-{i}-{n}@{ip}\r\nCSeq: {n} MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        )
    }

    /// An ESP packet over `sa1` from our port-c to the P-CSCF's port-s.
    fn esp(&self, i: usize, sa1: &Sa, port_ps: u16, sip: &[u8]) -> Option<Vec<u8>> {
        let (pc, _) = Self::ports(i);
        let mut frame = vec![0u8; 256 + sip.len() + 256];
        let at = 256 + 28;
        frame[at..at + sip.len()].copy_from_slice(sip);
        let src = SocketAddr::new(self.cfg.ue_ip, pc);
        let dst = SocketAddr::new(self.cfg.pcscf.ip(), port_ps);
        let r = wire::emit_datagram(&mut frame, at..at + sip.len(), src, dst).ok()?;
        let mut f = Frame::new(&mut frame, r.start, r.end);
        sa1.outbound(&mut f).ok()?;
        let (s, e) = (f.start, f.end);
        Some(frame[s..e].to_vec())
    }
}

/// Run the simulation until every UE is done or failed, or `stop` is set.
pub fn run(cfg: UeSimConfig, stop: Arc<AtomicBool>) -> std::io::Result<UeSimReport> {
    let udp = UdpSocket::bind(SocketAddr::new(cfg.ue_ip, 5060))?;
    udp.set_nonblocking(true)?;
    if cfg.ue_ip.is_ipv4() != cfg.pcscf.is_ipv4() {
        return Err(std::io::Error::other(
            "the UEs and the P-CSCF address must be of one family",
        ));
    }
    let (tx, rx) = if cfg.ue_ip.is_ipv4() {
        (raw(libc::IPPROTO_RAW)?, raw(libc::IPPROTO_ESP)?)
    } else {
        (esp6_socket()?, esp6_socket()?)
    };
    let sim = Sim { tx, rx, udp, cfg };
    let k = aka::hex_array::<16>(super::core::TEST_K).expect("constant");
    let opc = aka::hex_array::<16>(super::core::TEST_OPC).expect("constant");
    let t0 = Instant::now();
    let n = sim.cfg.ues;
    let mut ues: Vec<Ue> = (0..n)
        .map(|_| Ue {
            step: Step::Idle,
            started: t0,
            step_at: t0,
            usim: Usim::new(Milenage::new(&k, &opc), UeSqnState::default()),
            sa1: None,
            sa2: None,
            port_ps: 0,
            port_pc: 0,
            messages_left: 0,
            msg_sent: t0,
            resends: 0,
            last_sent: t0,
            in_flight: None,
            verify: String::new(),
            auth: String::new(),
        })
        .collect();
    let mut by_spi: HashMap<u32, usize> = HashMap::new();
    let mut report = UeSimReport {
        registered: 0,
        reregistered: 0,
        messages_ok: 0,
        failures: HashMap::new(),
        elapsed: Duration::ZERO,
        reg_latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        msg_latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    };
    let fail = |ue: &mut Ue, why: &'static str, report: &mut UeSimReport| {
        ue.step = Step::Failed;
        *report.failures.entry(why).or_insert(0) += 1;
    };
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut buf = vec![0u8; 65536];
    let mut last_progress = t0;
    while finished < n && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        // start new UEs at the target rate
        let due = ((now - t0).as_secs_f64() * sim.cfg.rate as f64) as usize + 1;
        while started < n.min(due) {
            let i = started;
            sim.first_register(i);
            ues[i].step = Step::Challenged;
            ues[i].started = now;
            ues[i].step_at = now;
            ues[i].last_sent = now;
            started += 1;
        }
        // retransmissions of unanswered first REGISTERs (UDP may lose them, e.g. while the
        // P-CSCF still resolves its next hop)
        for (i, ue) in ues.iter_mut().enumerate().take(started) {
            if ue.resends < 3
                && now.duration_since(ue.last_sent) > Duration::from_millis(500 << ue.resends)
            {
                match ue.step {
                    Step::Challenged => sim.first_register(i),
                    Step::Registering | Step::Messaging | Step::Reregistering => {
                        // a protected request again, as a new ESP packet (a new sequence number)
                        let (Some(sip), Some(sa1)) = (ue.in_flight.as_ref(), ue.sa1.as_ref())
                        else {
                            continue;
                        };
                        if let Some(pkt) = sim.esp(i, sa1, ue.port_ps, sip.as_bytes()) {
                            sim.send_esp(&pkt);
                        }
                    }
                    _ => continue,
                }
                ue.resends += 1;
                ue.last_sent = now;
            }
        }
        let mut idle = true;
        // unprotected answers: the 401s
        while let Ok((len, _)) = sim.udp.recv_from(&mut buf) {
            idle = false;
            let Ok(m) = Message::parse(&buf[..len]) else {
                continue;
            };
            let v = m.view();
            let Some(i) = v
                .header(HeaderName::CallId)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.strip_prefix("reg-"))
                .and_then(|c| c.split('@').next())
                .and_then(|c| c.parse::<usize>().ok())
                .filter(|&i| i < n)
            else {
                continue;
            };
            let ue = &mut ues[i];
            if ue.step != Step::Challenged {
                continue;
            }
            if v.status() != Some(401) {
                fail(ue, "first REGISTER not challenged", &mut report);
                finished += 1;
                continue;
            }
            let server = v
                .header(HeaderName::SecurityServer)
                .map(|s| String::from_utf8_lossy(s).into_owned());
            let mech = server
                .as_deref()
                .and_then(|s| SecMechanism::parse(s.as_bytes()))
                .and_then(|m| m.ipsec().ok());
            let nonce = v
                .header(HeaderName::WwwAuthenticate)
                .and_then(Digest::parse)
                .and_then(|d| d.nonce())
                .map(|n| String::from_utf8_lossy(n).into_owned());
            let (Some(server), Some(mech), Some(nonce)) = (server, mech, nonce) else {
                fail(ue, "401 without Security-Server or nonce", &mut report);
                finished += 1;
                continue;
            };
            let Ok(got) = ue.usim.authenticate_nonce(&nonce) else {
                fail(ue, "AUTN rejected", &mut report);
                finished += 1;
                continue;
            };
            let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
            let (_, ss) = Sim::spis(i);
            let sa = |spi| {
                Suite::new(mech.alg, mech.ealg).and_then(|suite| {
                    Sa::from_aka_suite(spi, suite, &ck, &ik, SaOptions::default())
                })
            };
            let (Ok(sa1), Ok(sa2)) = (sa(mech.spi_s), sa(ss)) else {
                fail(ue, "SA build", &mut report);
                finished += 1;
                continue;
            };
            let realm = &sim.cfg.realm;
            let uri = format!("sip:{realm}");
            let impi = sim.impi(i);
            let input = digest::DigestInput {
                username: impi.as_bytes(),
                realm: realm.as_bytes(),
                nonce: nonce.as_bytes(),
                method: b"REGISTER",
                uri: uri.as_bytes(),
                qop: digest::Qop::None,
            };
            let wrong = sim.cfg.wrong_res_every > 0 && i % sim.cfg.wrong_res_every == 0;
            let res = if wrong {
                aka::Res::from_slice(&[0u8; 8]).expect("8 bytes")
            } else {
                got.res.clone()
            };
            let resp = digest::response_aka(&input, &res);
            let auth = format!(
                "Authorization: Digest username=\"{impi}\",realm=\"{realm}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\n",
                resp.as_str()
            );
            let reg2 = sim.register(i, 2, &auth, Some(&server));
            let Some(pkt) = sim.esp(i, &sa1, mech.port_s, reg2.as_bytes()) else {
                fail(ue, "ESP build", &mut report);
                finished += 1;
                continue;
            };
            sim.send_esp(&pkt);
            by_spi.insert(ss, i);
            ue.in_flight = Some(reg2);
            ue.verify = server;
            ue.auth = auth;
            ue.resends = 0;
            ue.last_sent = now;
            ue.sa1 = Some(sa1);
            ue.sa2 = Some(sa2);
            ue.port_ps = mech.port_s;
            ue.port_pc = mech.port_c;
            ue.step = Step::Registering;
            ue.step_at = now;
        }
        // protected answers: 200 to the REGISTER, 200 to MESSAGEs
        while let Some(len) = sim.recv_esp(&mut buf) {
            idle = false;
            let Ok(spi) = crate::esp::packet::peek_spi(&buf[..len]) else {
                continue;
            };
            let Some(&i) = by_spi.get(&spi) else { continue };
            let ue = &mut ues[i];
            let Some(sa2) = ue.sa2.as_ref() else { continue };
            let Ok((inner, _)) = sa2.decapsulate(&mut buf[..len]) else {
                continue;
            };
            let L4::Udp { src, payload, .. } = classify(&buf[inner.clone()]) else {
                continue;
            };
            if src.port() != ue.port_pc {
                continue;
            }
            let sip = &buf[inner.start + payload.start..inner.start + payload.end];
            let Ok(m) = Message::parse(sip) else { continue };
            let status = m.view().status();
            // only the answer to the request in flight (retransmissions bring duplicates)
            let expected = ue.in_flight.as_deref().and_then(|r| {
                Message::parse(r.as_bytes())
                    .ok()
                    .and_then(|q| q.view().header(HeaderName::CallId).map(<[u8]>::to_vec))
            });
            let cseq_of = |v: crate::sip::View<'_>| v.header(HeaderName::CSeq).map(<[u8]>::to_vec);
            let in_flight_cseq = ue.in_flight.as_deref().and_then(|r| {
                Message::parse(r.as_bytes())
                    .ok()
                    .and_then(|q| cseq_of(q.view()))
            });
            if expected.as_deref() != m.view().header(HeaderName::CallId)
                || in_flight_cseq != cseq_of(m.view())
            {
                continue;
            }
            match ue.step {
                Step::Registering => {
                    if status != Some(200) {
                        fail(ue, "protected REGISTER refused", &mut report);
                        finished += 1;
                        continue;
                    }
                    report.registered += 1;
                    let _ = report
                        .reg_latency
                        .record((now - ue.started).as_micros().max(1) as u64);
                    ue.messages_left = sim.cfg.messages;
                    ue.step = Step::Messaging;
                    ue.step_at = now;
                }
                Step::Messaging => {
                    if status != Some(200) {
                        fail(ue, "MESSAGE refused", &mut report);
                        finished += 1;
                        continue;
                    }
                    report.messages_ok += 1;
                    let _ = report
                        .msg_latency
                        .record((now - ue.msg_sent).as_micros().max(1) as u64);
                    ue.step_at = now;
                }
                Step::Reregistering => {
                    if status != Some(200) {
                        fail(ue, "re-REGISTER refused", &mut report);
                    } else {
                        report.reregistered += 1;
                        ue.step = Step::Done;
                    }
                    finished += 1;
                    continue;
                }
                _ => continue,
            }
            if ue.step == Step::Messaging {
                if ue.messages_left == 0 && sim.cfg.reregister {
                    // CSeq past the MESSAGEs' numbers, on the REGISTER's Call-ID
                    let reg = sim.register(i, 1000, &ue.auth, Some(&ue.verify));
                    let sa1 = ue.sa1.as_ref().expect("registered");
                    if let Some(pkt) = sim.esp(i, sa1, ue.port_ps, reg.as_bytes()) {
                        sim.send_esp(&pkt);
                    }
                    ue.in_flight = Some(reg);
                    ue.resends = 0;
                    ue.last_sent = now;
                    ue.step = Step::Reregistering;
                } else if ue.messages_left == 0 {
                    ue.step = Step::Done;
                    finished += 1;
                } else {
                    let k = sim.cfg.messages - ue.messages_left + 1;
                    ue.messages_left -= 1;
                    let msg = sim.message(i, k);
                    let sa1 = ue.sa1.as_ref().expect("registered");
                    if let Some(pkt) = sim.esp(i, sa1, ue.port_ps, msg.as_bytes()) {
                        ue.msg_sent = now;
                        sim.send_esp(&pkt);
                    }
                    ue.in_flight = Some(msg);
                    ue.resends = 0;
                    ue.last_sent = now;
                }
            }
        }
        // timeouts
        for ue in ues.iter_mut().take(started) {
            if matches!(
                ue.step,
                Step::Challenged | Step::Registering | Step::Messaging | Step::Reregistering
            ) && now.duration_since(ue.step_at) > sim.cfg.timeout
            {
                let why = match ue.step {
                    Step::Challenged => "no answer to the first REGISTER",
                    Step::Registering => "no answer to the protected REGISTER",
                    Step::Reregistering => "no answer to the re-REGISTER",
                    _ => "no answer to a MESSAGE",
                };
                fail(ue, why, &mut report);
                finished += 1;
            }
        }
        if sim.cfg.progress && now.duration_since(last_progress) > Duration::from_millis(500) {
            last_progress = now;
            eprint!(
                "\r  {started}/{n} started, {} registered, {} failed    ",
                report.registered,
                report.failed()
            );
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    if sim.cfg.progress {
        eprintln!();
    }
    report.elapsed = t0.elapsed();
    Ok(report)
}
