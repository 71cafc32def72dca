//! `pcscf core-sim`: an I-CSCF + S-CSCF + HSS on one UDP address, enough to register UEs
//! through a P-CSCF: Milenage vectors per subscriber, the 401 with nonce / ck / ik, the
//! Digest-AKA check of the response (403 when wrong), the 200 with Service-Route and
//! P-Associated-URI, de-registration, and 200 to MESSAGE / OPTIONS.
//!
//! Calls: it is the S-CSCF and the far end of every call. A UE's INVITE is answered 100, 180
//! and 200 (an SDP answer, its own Record-Route above the received ones, RFC 3261 §16.6 item 4
//! and §12.1.1), its ACK taken, its BYE answered 200. With a [`CorePlan`] it also calls the
//! registered UEs ([`serve_calls`]): an INVITE to the Contact the UE registered, routed by the
//! Path the P-CSCF put in that REGISTER (RFC 3327 §5.3, TS 24.229 §5.4.3.3), then ACK and BYE
//! inside the dialog with the route set the 200's Record-Route gives (RFC 3261 §12.1.2).
//!
//! Subscribers: every IMPI `<imsi>@<realm>` is accepted with one K / OPc (TS 35.208 test set 1
//! unless given): a lab tool, not a real HSS.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::aka::{self, HssSubscriber, Milenage, Res, SqnGenerator, digest};
use crate::sim::call;
use crate::sip::headers::{Digest, NameAddr};
use crate::sip::rules::build_response;
use crate::sip::{HeaderName, Message};

/// Test set 1 (TS 35.208): K and OPc.
pub const TEST_K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const TEST_OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

/// Counters of the core simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStats {
    pub challenges: u64,
    pub registered: u64,
    pub deregistered: u64,
    pub auth_failed: u64,
    pub messages: u64,
    pub malformed: u64,
    /// Dialog-creating INVITEs answered (the UEs' calls), ACKs taken, BYEs answered.
    pub invites: u64,
    pub acks: u64,
    pub byes: u64,
}

/// A registered UE as the S-CSCF keeps it: where to reach it (RFC 3327 §5.3).
#[derive(Clone, Debug)]
pub struct Binding {
    /// The Contact URI it registered (the Request-URI of requests to it).
    pub contact: String,
    /// The Path entries of its REGISTER, as one Route value.
    pub path: String,
    /// Where the REGISTER came from (the P-CSCF, whose Path URI names a host we do not resolve).
    pub via: Option<SocketAddr>,
}

/// The simulated core (sans-IO: [`CoreSim::handle`] turns a request into a response).
pub struct CoreSim {
    k: [u8; 16],
    opc: [u8; 16],
    realm: String,
    /// Our own URI host:port for Service-Route.
    route_host: String,
    subscribers: HashMap<Vec<u8>, (HssSubscriber, Option<Res>)>,
    rand_counter: u64,
    /// Registered UEs by IMPU user part, in order.
    pub bindings: BTreeMap<String, Binding>,
    pub stats: CoreStats,
}

impl std::fmt::Debug for CoreSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreSim")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl CoreSim {
    pub fn new(realm: &str, route_host: &str) -> CoreSim {
        CoreSim {
            k: aka::hex_array::<16>(TEST_K).expect("constant"),
            opc: aka::hex_array::<16>(TEST_OPC).expect("constant"),
            realm: realm.into(),
            route_host: route_host.into(),
            subscribers: HashMap::new(),
            rand_counter: 0,
            bindings: BTreeMap::new(),
            stats: CoreStats::default(),
        }
    }

    fn respond(req: &Message<'_>, code: u16, reason: &str, extra: &str) -> Vec<u8> {
        let mut out = vec![0u8; req.buf.len() + 2048];
        let n = build_response(
            req.view(),
            code,
            reason,
            b"core",
            &[extra.as_bytes()],
            &mut out,
        )
        .unwrap_or(0);
        out.truncate(n);
        out
    }

    /// Our own Record-Route entry (and Contact host).
    pub fn record_route(&self) -> String {
        format!("<sip:{};lr>", self.route_host)
    }

    /// Answer one request (`None` for responses, ACKs and garbage; an INVITE gets its 100).
    pub fn handle(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        self.answer(req, None).into_iter().next()
    }

    /// Every answer to one request that came from `from`, in the order to send them: nothing
    /// for responses, ACKs and garbage; 100, 180 and 200 for a UE's INVITE.
    pub fn answer(&mut self, req: &[u8], from: Option<SocketAddr>) -> Vec<Vec<u8>> {
        let Ok(m) = Message::parse(req) else {
            self.stats.malformed += 1;
            return Vec::new();
        };
        let v = m.view();
        let Some(method) = v.method() else {
            return Vec::new();
        };
        match method {
            b"REGISTER" => self.register(&m, from).into_iter().collect(),
            b"INVITE" => self.invite(&m),
            b"ACK" => {
                self.stats.acks += 1;
                Vec::new()
            }
            b"BYE" => {
                self.stats.byes += 1;
                vec![Self::respond(&m, 200, "OK", "")]
            }
            _ => {
                self.stats.messages += 1;
                vec![Self::respond(&m, 200, "OK", "")]
            }
        }
    }

    /// The far end answers at once: 100, 180, then 200 with the SDP answer. Our Record-Route
    /// goes above the ones the request collected (RFC 3261 §16.6 item 4: we are a proxy on the
    /// way), and both responses echo the whole list (RFC 3261 §12.1.1).
    fn invite(&mut self, m: &Message<'_>) -> Vec<Vec<u8>> {
        let v = m.view();
        let mut extra = format!("Record-Route: {}\r\n", self.record_route());
        for rr in call::all(v, HeaderName::RecordRoute) {
            extra.push_str(&format!("Record-Route: {rr}\r\n"));
        }
        extra.push_str(&format!("Contact: <sip:far@{}>\r\n", self.route_host));
        let host = self.route_host.parse::<SocketAddr>().ok();
        let sdp = host.map(|h| call::sdp_answer(h.ip(), 40000));
        let mut out = Vec::with_capacity(3);
        out.push(Self::respond(m, 100, "Trying", ""));
        out.extend(call::respond(v, 180, "Ringing", "far", &extra, None));
        let ok = call::respond(v, 200, "OK", "far", &extra, sdp.as_deref());
        if ok.is_some() {
            self.stats.invites += 1;
        }
        out.extend(ok);
        out
    }

    fn register(&mut self, m: &Message<'_>, from: Option<SocketAddr>) -> Option<Vec<u8>> {
        let v = m.view();
        let Some(d) = v.header(HeaderName::Authorization).and_then(Digest::parse) else {
            self.stats.malformed += 1;
            return Some(Self::respond(m, 403, "Forbidden", ""));
        };
        let impi = d.username().unwrap_or_default().to_vec();
        let (k, opc) = (self.k, self.opc);
        let sub = self.subscribers.entry(impi.clone()).or_insert_with(|| {
            (
                HssSubscriber::new(
                    Milenage::new(&k, &opc),
                    SqnGenerator::with_default_step(),
                    [0x80, 0],
                ),
                None,
            )
        });
        let response = d.response().unwrap_or_default();
        if response.is_empty() || sub.1.is_none() {
            self.rand_counter += 1;
            let mut rand = [0u8; 16];
            rand[..8].copy_from_slice(&self.rand_counter.to_be_bytes());
            rand[8..].copy_from_slice(&(impi.len() as u64 ^ 0x5a5a).to_be_bytes());
            let av = sub.0.next_vector(&rand).ok()?;
            let mut nb = [0u8; aka::NONCE_B64_LEN];
            let nonce = av.nonce(&mut nb).to_string();
            let www = format!(
                "WWW-Authenticate: Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
                self.realm,
                hex(av.ck.as_bytes()),
                hex(av.ik.as_bytes())
            );
            sub.1 = Some(av.xres.clone());
            self.stats.challenges += 1;
            return Some(Self::respond(m, 401, "Unauthorized", &www));
        }
        let input = digest::DigestInput {
            username: d.username().unwrap_or_default(),
            realm: d.realm().unwrap_or_default(),
            nonce: d.nonce().unwrap_or_default(),
            method: b"REGISTER",
            uri: d.uri().unwrap_or_default(),
            qop: digest::Qop::None,
        };
        let ok = sub
            .1
            .as_ref()
            .is_some_and(|x| digest::verify_aka(&input, x, response).is_ok());
        if !ok {
            sub.1 = None;
            self.stats.auth_failed += 1;
            return Some(Self::respond(m, 403, "Forbidden", ""));
        }
        let expires = v
            .header(HeaderName::Expires)
            .and_then(|e| std::str::from_utf8(e).ok()?.parse::<u32>().ok())
            .unwrap_or(3600);
        let user = impi.split(|&b| b == b'@').next().unwrap_or_default();
        let user = String::from_utf8_lossy(user);
        let contact = v
            .header(HeaderName::Contact)
            .map(|c| {
                String::from_utf8_lossy(c)
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        if expires == 0 {
            self.stats.deregistered += 1;
            self.bindings.remove(user.as_ref());
        } else {
            self.stats.registered += 1;
            let uri = v
                .header(HeaderName::Contact)
                .and_then(NameAddr::parse)
                .and_then(|c| std::str::from_utf8(c.uri).ok());
            if let Some(uri) = uri {
                let path = call::all(v, HeaderName::Path).join(", ");
                let binding = Binding {
                    contact: uri.to_string(),
                    path,
                    via: from,
                };
                self.bindings.insert(user.to_string(), binding);
            }
        }
        let extra = format!(
            "Service-Route: <sip:orig@{};lr>\r\nP-Associated-URI: <sip:{user}@{}>\r\nContact: {contact};expires={expires}\r\n",
            self.route_host, self.realm
        );
        Some(Self::respond(m, 200, "OK", &extra))
    }
}

/// Terminating calls the core places toward registered UEs ([`serve_calls`]).
#[derive(Clone, Debug)]
pub struct CorePlan {
    /// Calls to place (0: none; the core only answers).
    pub calls: u32,
    /// Calls started per second.
    pub rate: u32,
    /// Start once this many UEs are registered; call `k` goes to the `k mod n`-th of them.
    pub after_registered: usize,
    /// Give up on a step of a call after this long.
    pub timeout: Duration,
}

impl Default for CorePlan {
    fn default() -> Self {
        CorePlan {
            calls: 0,
            rate: 100,
            after_registered: 1,
            timeout: Duration::from_secs(5),
        }
    }
}

/// What [`serve_calls`] did.
#[derive(Debug)]
pub struct CoreReport {
    pub stats: CoreStats,
    /// Terminating calls set up and torn down (the BYE answered 200).
    pub calls_ok: u64,
    pub call_failures: BTreeMap<&'static str, u64>,
    /// From the first terminating INVITE to the last call's end.
    pub calls_elapsed: Duration,
    /// INVITE → 180 and INVITE → 200 of the terminating calls, µs.
    pub setup_180: Histogram<u64>,
    pub setup_200: Histogram<u64>,
}

impl CoreReport {
    pub fn calls_failed(&self) -> u64 {
        self.call_failures.values().sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Step {
    Waiting,
    Inviting,
    Proceeding,
    Ringing,
    /// ACKed; the UE hangs up ([`call::callee_hangs_up`]).
    Up,
    Byeing,
    Done,
    Failed,
}

/// One terminating call (the core's dialog as UAC).
struct Term {
    step: Step,
    started: Instant,
    step_at: Instant,
    last_sent: Instant,
    resends: u32,
    to: SocketAddr,
    /// The INVITE or BYE in flight, for retransmission (RFC 3261 §17.1.1.2, §17.1.2.2).
    pending: Vec<u8>,
    /// The ACK, sent again for each retransmitted 200 (RFC 3261 §13.2.2.4).
    ack: Vec<u8>,
}

/// The core as the caller of the terminating calls.
struct Caller {
    plan: CorePlan,
    calls: Vec<Term>,
    started: usize,
    t0: Option<Instant>,
    last_end: Option<Instant>,
    ok: u64,
    failures: BTreeMap<&'static str, u64>,
    setup_180: Histogram<u64>,
    setup_200: Histogram<u64>,
    /// Our address as written in SIP, and our Record-Route entry.
    me: String,
    rr: String,
    realm: String,
}

impl Caller {
    fn fail(&mut self, k: usize, why: &'static str, now: Instant) {
        if let Some(c) = self.calls.get_mut(k) {
            c.step = Step::Failed;
        }
        *self.failures.entry(why).or_insert(0) += 1;
        self.last_end = Some(now);
    }

    fn finished(&self) -> bool {
        self.started == self.calls.len()
            && self
                .calls
                .iter()
                .all(|c| matches!(c.step, Step::Done | Step::Failed))
    }

    /// Start the calls that are due.
    fn start_due(&mut self, core: &CoreSim, sock: &UdpSocket, now: Instant) {
        if self.started == self.calls.len() {
            return;
        }
        let targets: Vec<(&String, &Binding)> = core.bindings.iter().collect();
        if targets.len() < self.plan.after_registered.max(1) {
            return;
        }
        let t0 = *self.t0.get_or_insert(now);
        let due = ((now - t0).as_secs_f64() * self.plan.rate.max(1) as f64) as usize + 1;
        while self.started < self.calls.len().min(due) {
            let k = self.started;
            self.started += 1;
            let (user, b) = targets[k % targets.len()];
            let Some(to) = b.via else {
                self.fail(k, "no address for the P-CSCF of the callee", now);
                continue;
            };
            let sdp = core
                .route_host
                .parse::<SocketAddr>()
                .map(|a| call::sdp_offer(a.ip(), 41000))
                .unwrap_or_default();
            let route = if b.path.is_empty() {
                String::new()
            } else {
                format!("Route: {}\r\n", b.path)
            };
            let invite = format!(
                "INVITE {} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKt{k}i\r\nMax-Forwards: 68\r\n{route}Record-Route: {rr}\r\nFrom: <sip:far{k}@{realm}>;tag=c{k}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: term-{k}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:far@{me}>\r\nP-Asserted-Identity: <sip:far{k}@{realm}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                b.contact,
                sdp.len(),
                me = self.me,
                rr = self.rr,
                realm = self.realm,
            );
            let _ = sock.send_to(invite.as_bytes(), to);
            let c = &mut self.calls[k];
            c.step = Step::Inviting;
            c.started = now;
            c.step_at = now;
            c.last_sent = now;
            c.to = to;
            c.pending = invite.into_bytes();
        }
    }

    /// A response to one of our requests.
    fn on_response(&mut self, v: crate::sip::View<'_>, sock: &UdpSocket, now: Instant) {
        let Some(k) = call::call_index(v, "term-", self.calls.len()) else {
            return;
        };
        let (Some(status), Some(method)) = (v.status(), call::cseq_method(v)) else {
            return;
        };
        let step = self.calls[k].step;
        let since = (now - self.calls[k].started).as_micros().max(1) as u64;
        match (method, status) {
            (b"INVITE", 100..=199) => {
                if step < Step::Proceeding {
                    self.calls[k].step = Step::Proceeding;
                }
                if status != 100 && step < Step::Ringing {
                    let _ = self.setup_180.record(since);
                    self.calls[k].step = Step::Ringing;
                    self.calls[k].step_at = now;
                }
            }
            (b"INVITE", 200..=299) => {
                if step > Step::Ringing {
                    // a retransmitted 200: ACK it again
                    if step != Step::Failed && !self.calls[k].ack.is_empty() {
                        let c = &self.calls[k];
                        let _ = sock.send_to(&c.ack, c.to);
                    }
                    return;
                }
                let _ = self.setup_200.record(since);
                // RFC 3261 §12.1.2: the route set is the Record-Route reversed; our own entry
                // (we are the S-CSCF that record-routed) is ours to consume, not to send to.
                let mut set = call::all(v, HeaderName::RecordRoute);
                set.reverse();
                set.retain(|e| *e != self.rr);
                let (Some(target), Some(to_hdr), Some(from_hdr)) = (
                    call::contact_uri(v),
                    call::text(v, HeaderName::To),
                    call::text(v, HeaderName::From),
                ) else {
                    self.fail(k, "200 to a terminating INVITE without Contact", now);
                    return;
                };
                if set.is_empty() {
                    self.fail(k, "200 to a terminating INVITE without Record-Route", now);
                    return;
                }
                let route = set.join(", ");
                let me = &self.me;
                let in_dialog = |method: &str, cseq: u32, branch: &str| {
                    format!(
                        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKt{k}{branch}\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: {from_hdr}\r\nTo: {to_hdr}\r\nCall-ID: term-{k}@{me}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
                    )
                    .into_bytes()
                };
                let ack = in_dialog("ACK", 1, "a");
                let c = &mut self.calls[k];
                let _ = sock.send_to(&ack, c.to);
                c.ack = ack;
                c.step_at = now;
                c.resends = 0;
                if call::callee_hangs_up(k) {
                    c.step = Step::Up;
                } else {
                    let bye = in_dialog("BYE", 2, "b");
                    let _ = sock.send_to(&bye, c.to);
                    c.pending = bye;
                    c.last_sent = now;
                    c.step = Step::Byeing;
                }
            }
            (b"INVITE", _) if step < Step::Up => {
                self.fail(k, "terminating INVITE refused", now);
            }
            (b"BYE", 200..=299) if step == Step::Byeing => {
                self.calls[k].step = Step::Done;
                self.ok += 1;
                self.last_end = Some(now);
            }
            (b"BYE", 300..) if step == Step::Byeing => {
                self.fail(k, "the core's BYE refused", now);
            }
            _ => {}
        }
    }

    /// A request of the UE inside one of our dialogs (its BYE).
    fn on_request(&mut self, v: crate::sip::View<'_>, now: Instant) {
        let Some(k) = call::call_index(v, "term-", self.calls.len()) else {
            return;
        };
        if v.is_method(b"BYE") && self.calls[k].step == Step::Up {
            self.calls[k].step = Step::Done;
            self.ok += 1;
            self.last_end = Some(now);
        }
    }

    /// Retransmissions (timer A / E: 0.5, 1, 2 s) and timeouts.
    fn timers(&mut self, sock: &UdpSocket, now: Instant) {
        for k in 0..self.started {
            let c = &mut self.calls[k];
            if matches!(c.step, Step::Inviting | Step::Byeing)
                && c.resends < 3
                && now.duration_since(c.last_sent) > Duration::from_millis(500 << c.resends)
            {
                let _ = sock.send_to(&c.pending, c.to);
                c.resends += 1;
                c.last_sent = now;
            }
            if now.duration_since(c.step_at) <= self.plan.timeout {
                continue;
            }
            let why = match c.step {
                Step::Inviting | Step::Proceeding => "no answer to a terminating INVITE",
                Step::Ringing => "no 200 after the 180 (terminating)",
                Step::Up => "no BYE from the UE",
                Step::Byeing => "no answer to the core's BYE",
                _ => continue,
            };
            self.fail(k, why, now);
        }
    }
}

/// At most this many 200s wait for their ACK.
const UNACKED_MAX: usize = 100_000;

/// Serve on `addr` until `stop` is set; returns the counters.
pub fn serve(addr: SocketAddr, realm: &str, stop: Arc<AtomicBool>) -> std::io::Result<CoreStats> {
    serve_calls(addr, realm, &CorePlan::default(), stop).map(|r| r.stats)
}

/// Serve on `addr`, and place the calls of `plan`, until `stop` is set and the calls are over
/// (or 2 s after `stop`: the ones still open count as failed).
pub fn serve_calls(
    addr: SocketAddr,
    realm: &str,
    plan: &CorePlan,
    stop: Arc<AtomicBool>,
) -> std::io::Result<CoreReport> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(if plan.calls > 0 {
        1
    } else {
        50
    })))?;
    let mut core = CoreSim::new(realm, &addr.to_string());
    let t0 = Instant::now();
    let mut caller = Caller {
        plan: plan.clone(),
        calls: (0..plan.calls)
            .map(|_| Term {
                step: Step::Waiting,
                started: t0,
                step_at: t0,
                last_sent: t0,
                resends: 0,
                to: addr,
                pending: Vec::new(),
                ack: Vec::new(),
            })
            .collect(),
        started: 0,
        t0: None,
        last_end: None,
        ok: 0,
        failures: BTreeMap::new(),
        setup_180: call::histogram(),
        setup_200: call::histogram(),
        me: addr.to_string(),
        rr: core.record_route(),
        realm: realm.into(),
    };
    let mut buf = vec![0u8; 65536];
    let mut stopped_at: Option<Instant> = None;
    // the 200s to the UEs' INVITEs not ACKed yet: (200, to, last sent, resends)
    let mut unacked: HashMap<Vec<u8>, (Vec<u8>, SocketAddr, Instant, u32)> = HashMap::new();
    let mut swept = Instant::now();
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert(now);
            if caller.finished() || now.duration_since(at) > Duration::from_secs(2) {
                break;
            }
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let now = Instant::now();
            let mut invite = None;
            if let Ok(m) = Message::parse(&buf[..n]) {
                let v = m.view();
                if v.status().is_some() {
                    caller.on_response(v, &sock, now);
                } else {
                    caller.on_request(v, now);
                }
                let cid = v.header(HeaderName::CallId).map(<[u8]>::to_vec);
                if v.is_method(b"ACK") {
                    if let Some(c) = cid.as_ref() {
                        unacked.remove(c);
                    }
                } else if v.is_method(b"INVITE") {
                    invite = cid;
                }
            }
            let answers = core.answer(&buf[..n], Some(from));
            for answer in &answers {
                let _ = sock.send_to(answer, from);
            }
            // RFC 3261 §13.3.1.4: the 200 again until its ACK (bounded: a flood of INVITEs
            // does not grow the table past its cap)
            if let (Some(cid), Some(ok)) = (invite, answers.last())
                && ok.starts_with(b"SIP/2.0 200")
                && unacked.len() < UNACKED_MAX
            {
                unacked.insert(cid, (ok.clone(), from, now, 0));
            }
        }
        let now = Instant::now();
        // (the sweep walks the whole table: every 10 ms, not at every packet)
        if now.duration_since(swept) >= Duration::from_millis(10) {
            swept = now;
            unacked.retain(|_, (ok, to, sent, n)| {
                if now.duration_since(*sent) > Duration::from_millis(500 << *n) {
                    if *n == 3 {
                        return false;
                    }
                    let _ = sock.send_to(ok, *to);
                    *n += 1;
                    *sent = now;
                }
                true
            });
        }
        if plan.calls > 0 {
            let now = Instant::now();
            caller.start_due(&core, &sock, now);
            caller.timers(&sock, now);
        }
    }
    let now = Instant::now();
    let open = caller.calls.len() as u64
        - caller
            .calls
            .iter()
            .filter(|c| matches!(c.step, Step::Done | Step::Failed))
            .count() as u64;
    if open > 0 {
        let not_placed = (caller.calls.len() - caller.started) as u64;
        if not_placed > 0 {
            *caller
                .failures
                .entry("terminating call not placed (too few UEs registered)")
                .or_insert(0) += not_placed;
        }
        if open > not_placed {
            *caller
                .failures
                .entry("terminating call still open at the end")
                .or_insert(0) += open - not_placed;
        }
    }
    let calls_elapsed = match (caller.t0, caller.last_end) {
        (Some(a), Some(b)) => b.duration_since(a),
        (Some(a), None) => now.duration_since(a),
        _ => Duration::ZERO,
    };
    Ok(CoreReport {
        stats: core.stats,
        calls_ok: caller.ok,
        call_failures: caller.failures,
        calls_elapsed,
        setup_180: caller.setup_180,
        setup_200: caller.setup_200,
    })
}
