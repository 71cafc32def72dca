//! `pcscf ue-sim`: many UEs from one process, each doing the whole UE side of IMS registration —
//! Security-Client, AKA (our USIM code), the four SAs in user space (our ESP code over raw
//! sockets), the protected REGISTER — then protected MESSAGEs, at a target rate, with failures
//! counted by reason and hdrhistogram latencies.
//!
//! Calls ([`UeSimConfig::calls`], once every UE is registered): UE `k mod n` places call `k` as a
//! phone does (TS 24.229 §5.1.2A.1.1: the preloaded Route names our protected server port and
//! the Service-Route; an INVITE with a ~900-byte SDP offer over SA1), and answers the calls the
//! core places to it ([`UeSimConfig::incoming_calls`]), each side of a call a [`call::Leg`]
//! following the flow the plan gives it ([`UeSimConfig::flows`]: basic, PRACK, UPDATE,
//! re-INVITE, CANCEL, or a call that outlives a re-registration): its requests go over SA1
//! (port-c → the P-CSCF's port-s) of its current set, its answers over SA4 (port-s → the
//! P-CSCF's port-c, TS 33.203 §7.1) of the set the request came over. In the `rereg` flow the
//! UE re-registers once the call is up, with a new AKA run and a new SA set (new SPIs and
//! port-c, the same port-s: TS 33.203 §7.4, TS 24.229 §5.1.1.4), and its UPDATE and what
//! follows go over the new set; it keeps the set before for what is still in flight over it,
//! and counts the requests of calls that come over another set than its current one
//! ([`UeSimReport::requests_over_old_set`]). Setup latencies INVITE → 180 and INVITE → 200 in
//! hdrhistograms; outcomes per flow, failures by reason; a BYE the plan did not expect for a
//! confirmed call is answered and counted as released. In the `dereg` flow the UE de-registers
//! once the call is up (TS 24.229 §5.1.1.6: a REGISTER with Expires 0 over its current set,
//! with Security-Verify and its last Authorization), then answers the P-CSCF's BYE (TS 24.229
//! §5.2.8) over the set it came on; such a plan gives each call a UE of its own (UE `k`
//! places call `k`, [`call::CallPlan::own_ues`]) and a de-registered UE places no more.
//!
//! One thread, non-blocking sockets: an unprotected UDP socket shared by all UEs (answers are
//! told apart by Call-ID), a raw socket to send ESP and one to receive it (told apart by the
//! UE's inbound SPI). UE `i` uses IMPI `001010000{i:06}@<realm>`, ports 20000+2i / 20001+2i
//! and SPIs 0x10000+2i / 0x10001+2i; each re-authentication a new port-c and SPI pair
//! (`Sim::port_c`, `Sim::spis_gen`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::aka::{self, Milenage, UeSqnState, Usim, digest};
use crate::dataplane::{L4, classify};
use crate::esp::{Frame, Sa, SaOptions, Suite};
use crate::sim::call;
use crate::sim::hostile::{self, HostileTcp};
use crate::sim::rawip::{esp6_socket, raw, recv_esp6, recv_ip, send_esp6, send_ip};
use crate::sim::uetcp::{EspIn, UeTcp, UeTcpStats};
use crate::sip::headers::{Digest, SecMechanism};
use crate::sip::{HeaderName, Message};
use crate::tcp::Conn;
use crate::tcp::PortPairs;
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
    /// Calls the UEs place once all of them are registered (0: none).
    pub calls: u32,
    /// Calls started per second.
    pub call_rate: u32,
    /// Calls the core will place to the UEs: the run ends when they are over (or when none
    /// came for three timeouts; the missing ones count as failed).
    pub incoming_calls: u32,
    /// Which flow each call follows, both the ones placed (`call-k`) and the incoming ones
    /// (`term-k`): the core must hold the same plan.
    pub flows: call::CallPlan,
    /// How the UEs send their protected requests ([`Transport`]).
    pub transport: Transport,
    /// The body size of each protected MESSAGE, bytes ([`DEFAULT_MESSAGE_SIZE`]: `hello`).
    pub message_size: usize,
    /// UEs that misbehave on their TCP once registered, instead of sending their MESSAGEs
    /// ([`hostile`]; [`Transport::Tcp`] only). Their outcomes are counted apart
    /// ([`UeSimReport::hostile`]), never as failures.
    pub hostile: hostile::HostilePlan,
    /// Time between a UE's MESSAGEs (after each 200): traffic that lasts, e.g. across a
    /// P-CSCF restart. Zero: the next one at once.
    pub message_interval: Duration,
    /// Record every (SPI, sequence number) the P-CSCF sends each UE and count any that comes
    /// twice ([`UeSimReport::esp_seq_repeated`]): RFC 4303 §3.3.3 across a restart.
    pub check_seq: bool,
}

/// The body of a protected MESSAGE by default (`hello`).
pub const DEFAULT_MESSAGE_SIZE: usize = 5;

/// The largest MESSAGE body: with its headers, under the 16 KB a TCP connection's send buffer
/// and framer take whole (`tcp::EndpointConfig::tx_buffer`, `tcp::HostConfig::max_message`).
pub const MAX_MESSAGE_SIZE: usize = 15_000;

/// How a UE sends its protected requests to the P-CSCF's port-s.
///
/// The unprotected first REGISTER and its 401 stay UDP to port 5060 either way, and so do the
/// requests the P-CSCF sends to the UE's port-s over SA2 and the UE's answers to them over SA4
/// (the P-CSCF's connection to the UE comes later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Each request in its own UDP datagram over SA1, sent again on timers A / E (RFC 3261
    /// §17.1.1.2, §17.1.2.2).
    #[default]
    Udp,
    /// One TCP connection per SA set, inside ESP (TS 33.203 §7, next header 6): from the UE's
    /// port-c to the P-CSCF's port-s, its segments over SA1 and the P-CSCF's over SA3; the
    /// requests go on it and their responses come back on it (RFC 3261 §18.2.2), never sent
    /// again on a timer; the Via says `SIP/2.0/TCP` with the UE's port-s (TS 24.229 §5.1.1.2).
    Tcp,
    /// RFC 3261 §18.1.1: a request larger than [`AUTO_MAX_UDP`] bytes goes on the TCP
    /// connection, as with `Tcp`; smaller ones as datagrams, as with `Udp`.
    Auto,
}

/// With [`Transport::Auto`]: the largest request sent as a datagram (RFC 3261 §18.1.1: 1,300
/// bytes when the path MTU is unknown).
pub const AUTO_MAX_UDP: usize = 1300;

impl Transport {
    /// `udp`, `tcp` or `auto`.
    pub fn parse(s: &str) -> Result<Transport, String> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "auto" => Ok(Transport::Auto),
            _ => Err(format!("unknown transport {s:?} (udp, tcp or auto)")),
        }
    }

    /// The transport in a Via (`SIP/2.0/<this>`) as a request is written; with `Auto` one
    /// that goes on the connection has it rewritten to TCP then (`sim::corenet::via_over_tcp`).
    pub fn via(self) -> &'static str {
        match self {
            Transport::Udp | Transport::Auto => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// The UEs take TCP at all (their connections, the P-CSCF's to them).
    pub fn takes_tcp(self) -> bool {
        self != Transport::Udp
    }

    /// A request of `len` bytes goes on the TCP connection.
    pub fn request_on_tcp(self, len: usize) -> bool {
        match self {
            Transport::Udp => false,
            Transport::Tcp => true,
            Transport::Auto => len > AUTO_MAX_UDP,
        }
    }
}

/// A MESSAGE body of `size` bytes: `hello` and then more of it, `hello hello hel…`.
pub fn message_body(size: usize) -> String {
    "hello ".chars().cycle().take(size).collect()
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
    /// Calls placed and torn down (the BYE answered 200).
    pub calls_ok: u64,
    /// Calls from the core answered and torn down.
    pub incoming_ok: u64,
    /// Failed calls (both directions) by reason.
    pub call_failures: BTreeMap<&'static str, u64>,
    /// From the first INVITE to the last call's end.
    pub calls_elapsed: Duration,
    /// INVITE → 180 and INVITE → 200 of the calls placed, µs.
    pub setup_180: Histogram<u64>,
    pub setup_200: Histogram<u64>,
    /// The calls placed and the incoming ones, by flow.
    pub placed: call::Tally,
    pub answered: call::Tally,
    /// Mid-call re-registrations with a new SA set.
    pub reauthenticated: u64,
    /// Mid-call de-registrations answered 200 (the `dereg` flow).
    pub deregistered: u64,
    /// Requests of calls that came over another SA set than the UE's current one: the set its
    /// re-registration replaced, or the new one before the re-registration's 200 (the P-CSCF
    /// should use the current set for them, TS 33.203 §7.4).
    pub requests_over_old_set: u64,
    /// ESP packets to a UE over an SA set it had dropped (one replaced twice since).
    pub esp_over_dropped_set: u64,
    /// With [`Transport::Tcp`]: what the UEs' TCP counted, and its stack's counters.
    pub tcp: Option<(UeTcpStats, crate::tcp::HostStats)>,
    /// The UEs that misbehaved once registered ([`UeSimConfig::hostile`]; included in
    /// `registered`), and what became of them.
    pub hostile_ues: usize,
    pub hostile: hostile::HostileTally,
    /// With [`UeSimConfig::check_seq`]: ESP packets from the P-CSCF whose sequence number the
    /// same SA had already used (never, RFC 4303 §3.3.3), and the highest number seen.
    pub esp_seq_repeated: u64,
    pub esp_seq_max: u32,
}

impl UeSimReport {
    /// Failed registrations and MESSAGEs.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Failed calls, both directions.
    pub fn calls_failed(&self) -> u64 {
        self.call_failures.values().sum()
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
        if self.calls_ok > 0 || self.incoming_ok > 0 || self.calls_failed() > 0 {
            let secs = self.calls_elapsed.as_secs_f64().max(1e-9);
            println!(
                "originating calls: {} ok in {:.2} s ({:.0} calls/s); incoming calls: {} ok; {} failed",
                self.calls_ok,
                secs,
                self.calls_ok as f64 / secs,
                self.incoming_ok,
                self.calls_failed()
            );
        }
        if !self.setup_180.is_empty() {
            println!(
                "originating setup INVITE→180: {}",
                call::percentiles(&self.setup_180)
            );
        }
        if !self.setup_200.is_empty() {
            println!(
                "originating setup INVITE→200: {}",
                call::percentiles(&self.setup_200)
            );
        }
        if self.deregistered > 0 {
            println!("mid-call de-registrations: {} ok", self.deregistered);
        }
        if self.reauthenticated > 0 {
            println!(
                "mid-call re-registrations (new SA set): {} ok; requests over another set than the current one: {}; ESP over a set already dropped: {}",
                self.reauthenticated, self.requests_over_old_set, self.esp_over_dropped_set
            );
        }
        if let Some((t, h)) = &self.tcp {
            println!(
                "ue-sim tcp: {} messages out, {} in; ESP {} out, {} in, {} refused; {} segments of the P-CSCF's connections; {} segments refused; {} messages refused by the stack; {} connections reset for framing, {} for slow messages",
                h.messages_out,
                t.messages_in,
                t.esp_out,
                t.esp_in,
                t.esp_refused,
                t.accepted_in,
                t.segments_refused,
                t.send_refused,
                h.framing_errors.iter().sum::<u64>(),
                h.slow_messages
            );
        }
        if self.esp_seq_repeated > 0 || self.esp_seq_max > 0 {
            println!(
                "ESP from the P-CSCF: {} sequence numbers repeated, highest {}",
                self.esp_seq_repeated, self.esp_seq_max
            );
        }
        if self.hostile_ues > 0 {
            println!(
                "hostile UEs: {} (registered, then misbehaving on their TCP; not counted as failures)",
                self.hostile_ues
            );
            for l in self.hostile.lines() {
                println!("{l}");
            }
        }
        for l in self.placed.lines("ue-sim originating") {
            println!("{l}");
        }
        for l in self.answered.lines("ue-sim incoming") {
            println!("{l}");
        }
        // what no leg counted (a call that never came, one still open at the end)
        let counted = |w: &&str| {
            self.placed.failed.keys().any(|(_, x)| x == w)
                || self.answered.failed.keys().any(|(_, x)| x == w)
        };
        for (why, n) in &self.call_failures {
            if !counted(why) {
                println!("call failed (ue-sim): {why}: {n}");
            }
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
    /// Registered, now misbehaving on its TCP ([`UeSimConfig::hostile`]).
    Hostile,
    Done,
    Failed,
}

/// A hostile UE at work.
struct HostileRun {
    kind: HostileTcp,
    started: Instant,
    /// When it last sent.
    last: Instant,
    /// Bytes sent so far.
    sent: usize,
    /// When the P-CSCF ended its connection: it then sends one honest MESSAGE on a new one
    /// over the same SAs, and whether it was answered 200 (the reset cost it its connection,
    /// not its registration).
    reset_at: Option<Instant>,
    served: Option<bool>,
}

struct Ue {
    step: Step,
    started: Instant,
    step_at: Instant,
    usim: Usim,
    /// SA1 (our port-c → the P-CSCF's port-s), shared with the set's TCP.
    sa1: Option<Arc<Sa>>,
    /// Our index.
    index: usize,
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
    /// SA4: our port-s → the P-CSCF's port-c (our answers to its requests).
    /// SA4 (shared with the set's TCP: our connection's segments go over it too).
    sa4: Option<Arc<Sa>>,
    /// The 200's Service-Route (the rest of the preloaded Route of new dialogs).
    service_route: String,
    /// Our current port-c (it changes with each new SA set) and the set's generation.
    port_uc: u16,
    generation: u32,
    /// The set before the last re-authentication: its SA2, SA4, the P-CSCF's port-c, its
    /// generation.
    prev: Option<(Sa, Arc<Sa>, u16, u32)>,
    /// A mid-call re-registration in progress, and the calls waiting for it.
    reauth: Option<Reauth>,
    waiting: Vec<CallRef>,
    /// The CSeq of our next REGISTER on the registration's Call-ID past the first ones.
    reg_cseq: u32,
    /// A de-registration in progress, the calls that asked for it, and whether one succeeded.
    dereg: Option<Dereg>,
    dereg_waiting: Vec<CallRef>,
    deregistered: bool,
    /// Once registered, when it is one of the hostile UEs.
    hostile: Option<HostileRun>,
    /// When its next MESSAGE goes ([`UeSimConfig::message_interval`]).
    next_msg_at: Option<Instant>,
}

/// A de-registration (TS 24.229 §5.1.1.6.1): the REGISTER with Expires 0 over the current set
/// (Security-Verify, the last Authorization), until its final answer.
struct Dereg {
    msg: String,
    cseq: u32,
    started: Instant,
    last_sent: Instant,
    resends: u32,
}

/// What a call asked of its UE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Reregister,
    Deregister,
}

/// A mid-call re-registration with a new AKA run and a new SA set (TS 33.203 §7.4): the
/// REGISTER over the current set with a new Security-Client (new SPIs and port-c, the same
/// port-s, TS 24.229 §5.1.1.4), its 401 over the current set, the REGISTER over the new
/// temporary set, its 200 over it; then the new set is the UE's.
struct Reauth {
    /// The generation of the new set (ports and SPIs, [`Sim::port_c`], [`Sim::spis`]).
    generation: u32,
    /// The REGISTER in flight, its CSeq number, and whether it goes over the new set.
    msg: String,
    cseq: u32,
    over_new: bool,
    started: Instant,
    last_sent: Instant,
    resends: u32,
    /// The new set, once the 401 came: SA1, SA2, SA4, the P-CSCF's port-s and port-c, its
    /// Security-Server, our Authorization.
    new: Option<NewSet>,
}

/// A re-registration's new set once its 401 came: SA1 (shared with the set's TCP), SA2, SA4,
/// the P-CSCF's port-s and port-c, its Security-Server, our Authorization.
type NewSet = (Arc<Sa>, Sa, Arc<Sa>, u16, u16, String, String);

/// A call held for its UE's re-registration.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CallRef {
    Out(usize),
    In(Vec<u8>),
}

/// The calls of all UEs.
struct Calls {
    /// The calls the UEs place, by index (`call-k`), with their UE.
    out: Vec<(usize, Option<call::Leg>)>,
    started: usize,
    t0: Option<Instant>,
    last_end: Option<Instant>,
    /// Incoming calls by Call-ID (`term-k`), with their UE.
    incoming: HashMap<Vec<u8>, (usize, call::Leg)>,
    /// By Call-ID: the generation of the SA set the call's last request came over.
    gens: HashMap<Vec<u8>, u32>,
    incoming_done: u64,
    last_incoming: Option<Instant>,
}

impl Calls {
    fn fail_out(
        &mut self,
        flow: call::Flow,
        why: &'static str,
        report: &mut UeSimReport,
        now: Instant,
    ) {
        report.placed.add(flow, call::Outcome::Failed(why));
        *report.call_failures.entry(why).or_insert(0) += 1;
        self.last_end = Some(now);
    }

    fn outgoing_over(&self) -> bool {
        self.started == self.out.len()
            && self
                .out
                .iter()
                .all(|(_, l)| l.as_ref().is_none_or(call::Leg::is_over))
    }

    /// Send what a leg of UE `i` wrote: requests over SA1 of the current set, answers over
    /// SA4 of the set the request came over (its generation `over`), while the UE has it: the
    /// answer goes back the way its request came, to the P-CSCF's port-c of that set that its
    /// Via names (RFC 3261 §18.2.2, TS 33.203 §7.1, §7.4).
    fn send_over(sim: &Sim, i: usize, ue: &Ue, out: &[call::Out], over: u32) {
        let (_, ps) = Sim::ports(i);
        let prev = ue
            .prev
            .as_ref()
            .filter(|p| p.3 == over && over != ue.generation)
            .map(|(_, sa4, pc, _)| (sa4, *pc));
        let new = ue
            .reauth
            .as_ref()
            .filter(|r| r.generation == over)
            .and_then(|r| r.new.as_ref())
            .map(|n| (&n.2, n.4));
        let other = prev.or(new);
        for o in out {
            if o.request {
                sim.send_sa1(ue, &o.bytes);
            } else if sim.tcp.is_some() && top_via_is_tcp(&o.bytes) {
                // an answer to a request that came on the P-CSCF's connection goes back on it
                // (RFC 3261 §18.2.2; its Via, the P-CSCF's on top, says TCP)
                sim.send_tcp_on(UeTcp::set_id(i, over), Conn::Accepted, &o.bytes);
            } else if let Some((sa4, port_pc)) = other {
                if let Some(pkt) = sim.esp_with(sa4, ps, port_pc, &o.bytes) {
                    sim.send_esp(&pkt);
                }
            } else {
                sim.send_sa4(i, ue, &o.bytes);
            }
        }
    }

    fn send(sim: &Sim, i: usize, ue: &Ue, out: &[call::Out]) {
        Self::send_over(sim, i, ue, out, ue.generation);
    }

    /// What a leg said; `held`: the calls waiting for their UE's re-registration.
    #[allow(clippy::too_many_arguments)]
    fn events(
        &mut self,
        r: CallRef,
        flow: call::Flow,
        i: usize,
        ev: &[call::Event],
        held: &mut Vec<(usize, CallRef, Ask)>,
        report: &mut UeSimReport,
        now: Instant,
    ) {
        let incoming = matches!(r, CallRef::In(_));
        for e in ev {
            match *e {
                call::Event::Ringing(d) => {
                    let _ = report.setup_180.record(d.as_micros().max(1) as u64);
                }
                call::Event::Answered(d) => {
                    let _ = report.setup_200.record(d.as_micros().max(1) as u64);
                }
                call::Event::Reregister => held.push((i, r.clone(), Ask::Reregister)),
                call::Event::Deregister => held.push((i, r.clone(), Ask::Deregister)),
                call::Event::Ended(o) => {
                    if incoming {
                        report.answered.add(flow, o);
                        self.incoming_done += 1;
                        self.last_incoming = Some(now);
                        if o == call::Outcome::Ok {
                            report.incoming_ok += 1;
                        }
                    } else {
                        report.placed.add(flow, o);
                        self.last_end = Some(now);
                        if o == call::Outcome::Ok {
                            report.calls_ok += 1;
                        }
                    }
                    if let call::Outcome::Failed(why) = o {
                        *report.call_failures.entry(why).or_insert(0) += 1;
                    }
                }
            }
        }
    }

    /// Start the calls that are due (all UEs registered).
    fn start_due(&mut self, sim: &Sim, ues: &[Ue], now: Instant, report: &mut UeSimReport) {
        let t0 = *self.t0.get_or_insert(now);
        let due = ((now - t0).as_secs_f64() * sim.cfg.call_rate.max(1) as f64) as usize + 1;
        while self.started < self.out.len().min(due) && !ues.is_empty() {
            let k = self.started;
            self.started += 1;
            let i = k % ues.len();
            self.out[k].0 = i;
            if sim.cfg.flows.own_ues() && k >= ues.len() {
                // (the core places its calls to the UEs from the last one)
                let why = "no UE of its own for the call (dereg)";
                self.fail_out(sim.cfg.flows.flow(k), why, report, now);
                continue;
            }
            if ues[i].step != Step::Done {
                self.fail_out(sim.cfg.flows.flow(k), "caller not registered", report, now);
                continue;
            }
            if ues[i].deregistered || ues[i].dereg.is_some() {
                self.fail_out(sim.cfg.flows.flow(k), "caller de-registered", report, now);
                continue;
            }
            let flow = sim.cfg.flows.flow(k);
            let acts = !sim.cfg.flows.callee_acts(k);
            let inv = sim.invite(i, k, &ues[i]);
            let mut out = Vec::new();
            let me = sim.local(i, format!("{i}c{k}"), format!("c{k}"));
            let Some(leg) =
                call::Leg::caller(flow, acts, true, inv.into_bytes(), me, now, &mut out)
            else {
                self.fail_out(flow, "INVITE build", report, now);
                continue;
            };
            Self::send(sim, i, &ues[i], &out);
            self.out[k].1 = Some(leg);
        }
    }

    /// A message of a call for UE `i`, over its SAs.
    #[allow(clippy::too_many_arguments)]
    fn on_message(
        &mut self,
        sim: &Sim,
        i: usize,
        ue: &Ue,
        v: crate::sip::View<'_>,
        over: u32,
        now: Instant,
        held: &mut Vec<(usize, CallRef, Ask)>,
        report: &mut UeSimReport,
    ) {
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        if v.method().is_some()
            && let Some(cid) = v.header(HeaderName::CallId)
            && (self.gens.len() < self.out.len() + 4 * sim.cfg.incoming_calls as usize + 1024
                || self.gens.contains_key(cid))
        {
            // the set its answers go back over, also when sent again
            self.gens.insert(cid.to_vec(), over);
        }
        if let Some(k) = call::call_index(v, "call-", self.started) {
            let (owner, leg) = &mut self.out[k];
            let Some(leg) = leg.as_mut().filter(|_| *owner == i) else {
                return;
            };
            leg.handle(v, now, &mut out, &mut ev);
            let flow = leg.flow;
            Self::send_over(sim, i, ue, &out, over);
            self.events(CallRef::Out(k), flow, i, &ev, held, report, now);
            return;
        }
        let Some(k) = call::call_index(v, "term-", usize::MAX) else {
            return;
        };
        let Some(cid) = v.header(HeaderName::CallId) else {
            return;
        };
        if let Some((owner, leg)) = self.incoming.get_mut(cid) {
            if *owner != i {
                return;
            }
            leg.handle(v, now, &mut out, &mut ev);
            let flow = leg.flow;
            Self::send_over(sim, i, ue, &out, over);
            self.events(CallRef::In(cid.to_vec()), flow, i, &ev, held, report, now);
            return;
        }
        // a new incoming call; bounded: a core that invents Call-IDs cannot grow the map
        // without end
        if !v.is_method(b"INVITE")
            || self.incoming.len() >= 4 * sim.cfg.incoming_calls as usize + 1024
        {
            return;
        }
        self.last_incoming = Some(now);
        let flow = sim.cfg.flows.flow(k);
        let acts = sim.cfg.flows.callee_acts(k);
        let me = sim.local(i, format!("{i}t{k}"), format!("t{k}"));
        let Some(leg) = call::Leg::callee(flow, acts, true, v, me, now, &mut out) else {
            report
                .answered
                .add(flow, call::Outcome::Failed("unusable incoming INVITE"));
            *report
                .call_failures
                .entry("unusable incoming INVITE")
                .or_insert(0) += 1;
            self.incoming_done += 1;
            return;
        };
        Self::send_over(sim, i, ue, &out, over);
        self.incoming.insert(cid.to_vec(), (i, leg));
    }

    /// The leg of a held call.
    fn leg(&mut self, r: &CallRef) -> Option<&mut call::Leg> {
        match r {
            CallRef::Out(k) => self.out.get_mut(*k).and_then(|(_, l)| l.as_mut()),
            CallRef::In(cid) => self.incoming.get_mut(cid).map(|(_, l)| l),
        }
    }

    /// UE `i` re-registered (`ok`) or could not: its held calls go on or fail.
    #[allow(clippy::too_many_arguments)]
    fn reregistered(
        &mut self,
        sim: &Sim,
        i: usize,
        ue: &mut Ue,
        ok: Result<(), &'static str>,
        now: Instant,
        held: &mut Vec<(usize, CallRef, Ask)>,
        report: &mut UeSimReport,
    ) {
        for r in std::mem::take(&mut ue.waiting) {
            let (mut out, mut ev) = (Vec::new(), Vec::new());
            let Some(leg) = self.leg(&r) else { continue };
            match ok {
                Ok(()) => leg.resume(now, &mut out),
                Err(why) => leg.fail(why, &mut ev),
            }
            let flow = leg.flow;
            Self::send(sim, i, ue, &out);
            self.events(r, flow, i, &ev, held, report, now);
        }
    }

    /// UE `i`'s de-registration failed: the calls that asked for it fail.
    #[allow(clippy::too_many_arguments)]
    fn deregistration_failed(
        &mut self,
        i: usize,
        ue: &mut Ue,
        why: &'static str,
        now: Instant,
        held: &mut Vec<(usize, CallRef, Ask)>,
        report: &mut UeSimReport,
    ) {
        for r in std::mem::take(&mut ue.dereg_waiting) {
            let mut ev = Vec::new();
            let Some(leg) = self.leg(&r) else { continue };
            leg.fail(why, &mut ev);
            let flow = leg.flow;
            self.events(r, flow, i, &ev, held, report, now);
        }
    }

    /// Retransmissions and timeouts of every open call.
    fn timers(
        &mut self,
        sim: &Sim,
        ues: &[Ue],
        now: Instant,
        held: &mut Vec<(usize, CallRef, Ask)>,
        report: &mut UeSimReport,
    ) {
        for k in 0..self.started {
            let i = self.out[k].0;
            let Some(leg) = self.out[k].1.as_mut().filter(|l| !l.is_over()) else {
                continue;
            };
            let (mut out, mut ev) = (Vec::new(), Vec::new());
            leg.timers(now, &mut out, &mut ev);
            let flow = leg.flow;
            let over = self.gens.get(leg.call_id().as_bytes()).copied();
            Self::send_over(sim, i, &ues[i], &out, over.unwrap_or(ues[i].generation));
            self.events(CallRef::Out(k), flow, i, &ev, held, report, now);
        }
        let mut ended = Vec::new();
        for (cid, (i, leg)) in self.incoming.iter_mut() {
            if leg.is_over() {
                continue;
            }
            let (mut out, mut ev) = (Vec::new(), Vec::new());
            leg.timers(now, &mut out, &mut ev);
            let over = self.gens.get(cid).copied().unwrap_or(ues[*i].generation);
            Self::send_over(sim, *i, &ues[*i], &out, over);
            if !ev.is_empty() {
                ended.push((cid.clone(), leg.flow, *i, ev));
            }
        }
        for (cid, flow, i, ev) in ended {
            self.events(CallRef::In(cid), flow, i, &ev, held, report, now);
        }
    }
}

struct Sim {
    cfg: UeSimConfig,
    udp: UdpSocket,
    /// IPv4: a raw IPPROTO_RAW socket to send whole packets and an ESP one to receive.
    /// IPv6: one ESP socket both ways; the kernel writes and strips the IPv6 header.
    tx: OwnedFd,
    rx: OwnedFd,
    /// With [`Transport::Tcp`]: every SA set's TCP ([`UeTcp`]; a cell, for the `&Sim` that
    /// sends requests from everywhere).
    tcp: Option<RefCell<UeTcp>>,
}

impl Sim {
    fn impi(&self, i: usize) -> String {
        format!("001010000{i:06}@{}", self.cfg.realm)
    }
    fn ports(i: usize) -> (u16, u16) {
        (20000 + 2 * i as u16, 20001 + 2 * i as u16)
    }
    fn spis(i: usize) -> (u32, u32) {
        Self::spis_gen(i, 0)
    }
    /// The SPIs of UE `i`'s SA set of generation `g` (a new pair for each AKA run).
    fn spis_gen(i: usize, g: u32) -> (u32, u32) {
        let base = 0x10000u32
            .wrapping_add(g.wrapping_mul(0x10_0000))
            .wrapping_add(2 * i as u32);
        (base, base.wrapping_add(1))
    }
    /// UE `i`'s port-c in its set of generation `g`: a new one for each new set (TS 33.203
    /// §7.4), three in turn, apart from every other UE's (up to 10,000 UEs).
    fn port_c(i: usize, g: u32) -> u16 {
        match g % 3 {
            0 => Self::ports(i).0,
            1 => 40000u16.wrapping_add(i as u16),
            _ => 50000u16.wrapping_add(i as u16),
        }
    }

    fn register(&self, i: usize, cseq: u32, auth: &str, verify: Option<&str>) -> String {
        self.register_gen(i, 0, cseq, auth, verify)
    }

    /// A REGISTER of UE `i` offering its SA set of generation `g` (same port-s: it is in the
    /// Contact).
    fn register_gen(
        &self,
        i: usize,
        g: u32,
        cseq: u32,
        auth: &str,
        verify: Option<&str>,
    ) -> String {
        self.register_with(i, g, cseq, auth, verify, 600000)
    }

    /// [`Sim::register_gen`] asking for `expires` (0: a de-registration, TS 24.229 §5.1.1.6.1:
    /// in the Expires header and on the Contact).
    fn register_with(
        &self,
        i: usize,
        g: u32,
        cseq: u32,
        auth: &str,
        verify: Option<&str>,
        expires: u32,
    ) -> String {
        let (_, ps) = Self::ports(i);
        let pc = Self::port_c(i, g);
        let (sc, ss) = Self::spis_gen(i, g);
        let impi = self.impi(i);
        let user = impi.split('@').next().unwrap_or_default();
        let realm = &self.cfg.realm;
        let ip = self.host();
        let verify = verify
            .map(|v| format!("Security-Verify: {v}\r\n"))
            .unwrap_or_default();
        // the unprotected first REGISTER (no Security-Verify) goes over UDP to port 5060
        let proto = if verify.is_empty() {
            "UDP"
        } else {
            self.cfg.transport.via()
        };
        format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/{proto} {ip}:{ps};branch=z9hG4bK{i}r{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=u{i}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: reg-{i}@{ip}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{ip}:{ps}>;expires={expires}\r\n{auth}Security-Client: ipsec-3gpp;alg=null;ealg=aes-gcm;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}, ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}, ipsec-3gpp;alg=hmac-sha-1-96;ealg=null;spi-c={sc};spi-s={ss};port-c={pc};port-s={ps}\r\n{verify}Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
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
        let proto = self.cfg.transport.via();
        let body = message_body(self.cfg.message_size);
        format!(
            "MESSAGE sip:echo@{realm} SIP/2.0\r\nVia: SIP/2.0/{proto} {ip}:{ps};branch=z9hG4bK{i}m{n}\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=m{i}\r\nTo: <sip:echo@{realm}>\r\nCall-ID: msg-{i}-{n}@{ip}\r\nCSeq: {n} MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// An ESP packet over `sa1` from our port-c to the P-CSCF's port-s.
    fn esp(&self, i: usize, sa1: &Sa, port_ps: u16, sip: &[u8]) -> Option<Vec<u8>> {
        let (pc, _) = Self::ports(i);
        self.esp_with(sa1, pc, port_ps, sip)
    }

    /// A request of UE `i` over SA1 of its current set (its port-c → the P-CSCF's port-s).
    fn send_sa1(&self, ue: &Ue, sip: &[u8]) -> bool {
        let Some(sa1) = ue.sa1.as_ref() else {
            return false;
        };
        if self.on_tcp(sip) {
            return self.send_tcp(UeTcp::set_id(ue.index, ue.generation), sip);
        }
        let Some(pkt) = self.esp_with(sa1, ue.port_uc, ue.port_ps, sip) else {
            return false;
        };
        self.send_esp(&pkt);
        true
    }

    /// A message on connection `conn` of set `id`'s TCP.
    fn send_tcp_on(&self, id: crate::tcp::SetId, conn: Conn, sip: &[u8]) -> bool {
        let Some(t) = &self.tcp else {
            return false;
        };
        t.borrow_mut()
            .send_on(id, conn, Instant::now(), sip, &mut |p| self.send_esp(p))
            .is_ok()
    }

    /// A request on the UE's TCP connection of set `id` (connected first when it is not), its
    /// Via saying TCP.
    fn send_tcp(&self, id: crate::tcp::SetId, sip: &[u8]) -> bool {
        let Some(t) = &self.tcp else {
            return false;
        };
        let sip = crate::sim::corenet::via_over_tcp(sip);
        t.borrow_mut()
            .send(id, Instant::now(), &sip, &mut |p| self.send_esp(p))
            .is_ok()
    }

    /// The request `sip` goes on the UE's TCP connection (`--transport`).
    fn on_tcp(&self, sip: &[u8]) -> bool {
        self.tcp.is_some() && self.cfg.transport.request_on_tcp(sip.len())
    }

    /// With [`Transport::Tcp`]: open the TCP of UE `i`'s set of generation `g` (its SA1, SA3
    /// and SA4, the P-CSCF's port-s and port-c), and take SA3's SPI (our spi-c) for the UE.
    fn open_tcp(
        &self,
        i: usize,
        g: u32,
        (sa1, sa3, sa4): (&Arc<Sa>, Sa, &Arc<Sa>),
        port_ps: u16,
        port_pc: u16,
        by_spi: &mut HashMap<u32, usize>,
    ) {
        let Some(t) = &self.tcp else {
            return;
        };
        let ports = PortPairs {
            local: self.cfg.ue_ip,
            remote: self.cfg.pcscf.ip(),
            local_c: Self::port_c(i, g),
            local_s: Self::ports(i).1,
            remote_c: port_pc,
            remote_s: port_ps,
        };
        by_spi.insert(sa3.spi(), i);
        let _ = t
            .borrow_mut()
            .open(UeTcp::set_id(i, g), ports, sa1.clone(), sa3, sa4.clone());
    }

    /// With [`Transport::Tcp`]: close the TCP of UE `i`'s set of generation `g` (the set is
    /// dropped).
    fn close_tcp(&self, i: usize, g: u32) {
        if let Some(t) = &self.tcp {
            t.borrow_mut()
                .close(UeTcp::set_id(i, g), Instant::now(), &mut |p| {
                    self.send_esp(p)
                });
        }
    }

    /// With [`Transport::Tcp`]: forget the TCP of UE `i`'s set of generation `g`, whose SAs
    /// both sides delete now ([`UeTcp::forget`]).
    fn forget_tcp(&self, i: usize, g: u32) {
        if let Some(t) = &self.tcp {
            t.borrow_mut().forget(UeTcp::set_id(i, g), Instant::now());
        }
    }

    /// An answer of UE `i` to a request the P-CSCF sent it, over SA4 (its port-s → the
    /// P-CSCF's port-c, TS 33.203 §7.1).
    fn send_sa4(&self, i: usize, ue: &Ue, sip: &[u8]) -> bool {
        let (_, ps) = Self::ports(i);
        let Some(sa4) = ue.sa4.as_ref() else {
            return false;
        };
        let Some(pkt) = self.esp_with(sa4, ps, ue.port_pc, sip) else {
            return false;
        };
        self.send_esp(&pkt);
        true
    }

    /// The P-CSCF's address as written in SIP.
    fn pcscf_host(&self) -> String {
        match self.cfg.pcscf.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }

    /// UE `i`'s INVITE of call `k`: the preloaded Route (TS 24.229 §5.1.2A.1.1: the P-CSCF
    /// with its protected server port, then the Service-Route), an SDP offer of ~900 bytes.
    fn invite(&self, i: usize, k: usize, ue: &Ue) -> String {
        let (_, ps) = Self::ports(i);
        let realm = &self.cfg.realm;
        let ip = self.host();
        let impi = self.impi(i);
        let user = impi.split('@').next().unwrap_or_default();
        let mut route = format!("<sip:{}:{};lr>", self.pcscf_host(), ue.port_ps);
        if !ue.service_route.is_empty() {
            route.push_str(", ");
            route.push_str(&ue.service_route);
        }
        let sdp = call::sdp_offer(self.cfg.ue_ip, 30000 + 2 * (i as u16 % 10000));
        let proto = self.cfg.transport.via();
        format!(
            "INVITE sip:far{k}@{realm} SIP/2.0\r\nVia: SIP/2.0/{proto} {ip}:{ps};branch=z9hG4bK{i}c{k};rport\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:{user}@{realm}>;tag=c{k}\r\nTo: <sip:far{k}@{realm}>\r\nCall-ID: call-{k}@{ip}\r\nCSeq: 1 INVITE\r\nContact: <sip:{user}@{ip}:{ps}>;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"\r\nP-Preferred-Identity: <sip:{user}@{realm}>\r\nAccept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"\r\nAllow: INVITE,ACK,CANCEL,BYE,PRACK,UPDATE,MESSAGE\r\nSupported: 100rel\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
    }

    /// UE `i`'s side of a call: its Via, Contact, SDP.
    fn local(&self, i: usize, branch: String, tag: String) -> call::Local {
        let (_, ps) = Self::ports(i);
        let ip = self.host();
        let impi = self.impi(i);
        let user = impi.split('@').next().unwrap_or_default();
        let media = 30000 + 2 * (i as u16 % 10000);
        call::Local {
            sent_by: format!("{ip}:{ps}"),
            rport: true,
            contact: format!("sip:{user}@{ip}:{ps}"),
            branch,
            tag,
            offer: call::sdp_offer(self.cfg.ue_ip, media),
            answer: call::sdp_answer(self.cfg.ue_ip, media),
            record_route: None,
            trying: false,
            timeout: self.cfg.timeout,
            tcp: self.cfg.transport == Transport::Tcp,
        }
    }

    /// An ESP packet over `sa` from our `src_port` to the P-CSCF's `dst_port`.
    fn esp_with(&self, sa: &Sa, src_port: u16, dst_port: u16, sip: &[u8]) -> Option<Vec<u8>> {
        let pc = src_port;
        let port_ps = dst_port;
        let sa1 = sa;
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
    if cfg.message_size > MAX_MESSAGE_SIZE {
        return Err(std::io::Error::other(format!(
            "a MESSAGE body of {} bytes: at most {MAX_MESSAGE_SIZE}",
            cfg.message_size
        )));
    }
    if cfg.hostile.count(cfg.ues) > 0 && cfg.transport != Transport::Tcp {
        return Err(std::io::Error::other(
            "hostile TCP UEs need the TCP transport (--transport tcp)",
        ));
    }
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
    let tcp = cfg.transport.takes_tcp().then(|| {
        let mut seed = [0u8; 8];
        // the connections' initial sequence numbers (RFC 9293 §3.4.1); a fixed seed if the
        // OS has none is only a simulator's weakness
        let _ = getrandom::fill(&mut seed);
        RefCell::new(UeTcp::new(u64::from_le_bytes(seed)))
    });
    let sim = Sim {
        tx,
        rx,
        udp,
        cfg,
        tcp,
    };
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
            index: 0,
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
            sa4: None,
            service_route: String::new(),
            port_uc: 0,
            generation: 0,
            prev: None,
            reauth: None,
            waiting: Vec::new(),
            reg_cseq: 2000,
            dereg: None,
            dereg_waiting: Vec::new(),
            deregistered: false,
            hostile: None,
            next_msg_at: None,
        })
        .collect();
    for (i, ue) in ues.iter_mut().enumerate() {
        ue.port_uc = Sim::ports(i).0;
        ue.index = i;
    }
    let mut by_spi: HashMap<u32, usize> = HashMap::new();
    let mut report = UeSimReport {
        registered: 0,
        reregistered: 0,
        messages_ok: 0,
        failures: HashMap::new(),
        elapsed: Duration::ZERO,
        reg_latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        msg_latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
        calls_ok: 0,
        incoming_ok: 0,
        call_failures: BTreeMap::new(),
        calls_elapsed: Duration::ZERO,
        setup_180: call::histogram(),
        setup_200: call::histogram(),
        placed: call::Tally::default(),
        answered: call::Tally::default(),
        reauthenticated: 0,
        deregistered: 0,
        requests_over_old_set: 0,
        esp_over_dropped_set: 0,
        tcp: None,
        hostile_ues: 0,
        hostile: hostile::HostileTally::default(),
        esp_seq_repeated: 0,
        esp_seq_max: 0,
    };
    // (SPI, sequence number) of every ESP packet from the P-CSCF (`check_seq`)
    let mut seqs_seen: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
    // calls that wait for their UE's re-registration (a leg asked for it)
    let mut held: Vec<(usize, CallRef, Ask)> = Vec::new();
    let mut calls = Calls {
        out: (0..sim.cfg.calls).map(|_| (0, None)).collect(),
        started: 0,
        t0: None,
        last_end: None,
        incoming: HashMap::new(),
        gens: HashMap::new(),
        incoming_done: 0,
        last_incoming: None,
    };
    // when every UE was done registering (and with its MESSAGEs)
    let mut registered_at: Option<Instant> = None;
    let mut started = 0usize;
    let mut finished = 0usize;
    let mut buf = vec![0u8; 65536];
    let mut last_progress = t0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if finished >= n {
            let at = *registered_at.get_or_insert(now);
            calls.start_due(&sim, &ues, now, &mut report);
            let open_incoming = calls.incoming.values().any(|(_, l)| !l.is_over());
            let expected = u64::from(sim.cfg.incoming_calls);
            // a de- or re-registration still in flight has its answer to come (the network's
            // BYE can overtake the 200 to a de-REGISTER); its own timer bounds the wait
            let registering = ues.iter().any(|u| u.dereg.is_some() || u.reauth.is_some());
            if calls.outgoing_over() && calls.incoming_done >= expected && !registering {
                break;
            }
            // the calls the core should have placed and never did
            let quiet = now.duration_since(calls.last_incoming.unwrap_or(at));
            if calls.outgoing_over() && !open_incoming && quiet > 3 * sim.cfg.timeout {
                *report
                    .call_failures
                    .entry("incoming call never came")
                    .or_insert(0) += expected.saturating_sub(calls.incoming_done);
                break;
            }
        }
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
                    // over TCP, never on a timer (RFC 3261 §17.1.1.2, §17.1.2.2: timers A and
                    // E are for unreliable transports; the step's timeout is timer B / F)
                    Step::Registering | Step::Messaging | Step::Reregistering => {
                        // a protected request again, as a new ESP packet (a new sequence number)
                        let (Some(sip), Some(sa1)) = (ue.in_flight.as_ref(), ue.sa1.as_ref())
                        else {
                            continue;
                        };
                        if sim.on_tcp(sip.as_bytes()) {
                            continue;
                        }
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
        if let Some(t) = &sim.tcp {
            // the connections' retransmissions and idle timers
            t.borrow_mut().handle_timeout(now, &mut |p| sim.send_esp(p));
        }
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
            let (sc, ss) = Sim::spis(i);
            let sa = |spi| {
                Suite::new(mech.alg, mech.ealg).and_then(|suite| {
                    Sa::from_aka_suite(spi, suite, &ck, &ik, SaOptions::default())
                })
            };
            let (Ok(sa1), Ok(sa2), Ok(sa4)) = (sa(mech.spi_s), sa(ss), sa(mech.spi_c)) else {
                fail(ue, "SA build", &mut report);
                finished += 1;
                continue;
            };
            let (sa1, sa4) = (Arc::new(sa1), Arc::new(sa4));
            if sim.tcp.is_some() {
                // SA3: the P-CSCF's port-s → our port-c, its segments of our connection
                let Ok(sa3) = sa(sc) else {
                    fail(ue, "SA build", &mut report);
                    finished += 1;
                    continue;
                };
                sim.open_tcp(
                    i,
                    0,
                    (&sa1, sa3, &sa4),
                    mech.port_s,
                    mech.port_c,
                    &mut by_spi,
                );
            }
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
            if sim.on_tcp(reg2.as_bytes()) {
                if !sim.send_tcp(UeTcp::set_id(i, 0), reg2.as_bytes()) {
                    fail(ue, "protected REGISTER not queued on TCP", &mut report);
                    finished += 1;
                    continue;
                }
            } else {
                let Some(pkt) = sim.esp(i, &sa1, mech.port_s, reg2.as_bytes()) else {
                    fail(ue, "ESP build", &mut report);
                    finished += 1;
                    continue;
                };
                sim.send_esp(&pkt);
            }
            by_spi.insert(ss, i);
            ue.in_flight = Some(reg2);
            ue.verify = server;
            ue.auth = auth;
            ue.resends = 0;
            ue.last_sent = now;
            ue.sa1 = Some(sa1);
            ue.sa2 = Some(sa2);
            ue.sa4 = Some(sa4);
            ue.port_ps = mech.port_s;
            ue.port_pc = mech.port_c;
            ue.step = Step::Registering;
            ue.step_at = now;
        }
        // protected answers: 200 to the REGISTER, 200 to MESSAGEs
        // a protected message for UE `i` over its set of generation `over`
        macro_rules! protected {
            ($i:expr, $over:expr, $sip:expr) => {
                on_protected(
                    &sim,
                    $i,
                    $over,
                    $sip,
                    now,
                    &mut ues,
                    &mut calls,
                    &mut held,
                    &mut report,
                    &mut by_spi,
                    &mut finished,
                )
            };
        }
        // the whole messages a TCP segment completed, from either connection of a set, handled
        // at once (in the order they came with the datagrams around them)
        macro_rules! stream_messages {
            ($t:expr) => {
                let got = $t.borrow_mut().messages(now, &mut |p| sim.send_esp(p));
                for (id, _, msg) in got {
                    let (i, over) = ((id & 0xffff_ffff) as usize, (id >> 32) as u32);
                    if i < n {
                        protected!(i, over, &msg);
                    }
                }
            };
        }
        while let Some(len) = sim.recv_esp(&mut buf) {
            idle = false;
            if let Some(t) = &sim.tcp {
                // a segment of a UE's connection, over its SA3
                let r = t
                    .borrow_mut()
                    .esp_in(now, &mut buf[..len], &mut |p| sim.send_esp(p));
                match r {
                    EspIn::NotOurs => {}
                    EspIn::Refused => continue,
                    EspIn::Segment(_) => {
                        stream_messages!(t);
                        continue;
                    }
                }
            }
            let Ok((spi, seq)) = crate::esp::packet::peek_spi_seq(&buf[..len]) else {
                continue;
            };
            let Some(&i) = by_spi.get(&spi) else { continue };
            if sim.cfg.check_seq {
                // before the window's check: a number used twice is counted even where the
                // UE's window would refuse it
                if !seqs_seen.insert((spi, seq)) {
                    report.esp_seq_repeated += 1;
                }
                report.esp_seq_max = report.esp_seq_max.max(seq);
            }
            // the current set, the one before it (what was in flight over it), or the new
            // one of a re-registration under way
            let ue = &ues[i];
            let sets = [
                ue.sa2.as_ref().map(|s| (s, ue.port_pc, ue.generation)),
                ue.prev.as_ref().map(|(s, _, p, g)| (s, *p, *g)),
                ue.reauth
                    .as_ref()
                    .and_then(|r| r.new.as_ref().map(|n| (&n.1, n.4, r.generation))),
            ];
            let Some((sa2, from_port, over)) =
                sets.into_iter().flatten().find(|(s, ..)| s.spi() == spi)
            else {
                // an SPI of this UE's whose set it no longer holds (replaced twice)
                report.esp_over_dropped_set += 1;
                continue;
            };
            let Ok((inner, inb)) = sa2.decapsulate(&mut buf[..len]) else {
                continue;
            };
            if inb.next_header == crate::wire::protocol::TCP {
                // the P-CSCF's connection to our port-s (RFC 3261 §18.1.1): its requests
                // too large for a datagram, our answers on the same connection
                if let Some(t) = &sim.tcp {
                    let id = UeTcp::set_id(i, over);
                    let took = t
                        .borrow_mut()
                        .segment_in(id, now, &buf[inner], &mut |p| sim.send_esp(p));
                    if took {
                        stream_messages!(t);
                    }
                }
                continue;
            }
            let L4::Udp { src, payload, .. } = classify(&buf[inner.clone()]) else {
                continue;
            };
            if src.port() != from_port {
                continue;
            }
            let sip = &buf[inner.start + payload.start..inner.start + payload.end];
            protected!(i, over, sip);
        }
        // MESSAGEs held for their interval
        for (i, ue) in ues.iter_mut().enumerate().take(started) {
            if ue.step == Step::Messaging && ue.next_msg_at.is_some_and(|t| t <= now) {
                ue.next_msg_at = None;
                ue.step_at = now;
                send_next_message(&sim, i, ue, now);
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
        // the hostile UEs' misdeeds, and what the P-CSCF made of them
        for (i, ue) in ues.iter_mut().enumerate().take(started) {
            if ue.step == Step::Hostile
                && drive_hostile(&sim, i, ue, now, &mut report.hostile, &mut by_spi)
            {
                ue.step = Step::Done;
                finished += 1;
            }
        }
        if finished >= n {
            calls.timers(&sim, &ues, now, &mut held, &mut report);
            for (i, ue) in ues.iter_mut().enumerate() {
                if let Some(why) = reauth_timer(&sim, i, ue, now) {
                    calls.reregistered(&sim, i, ue, Err(why), now, &mut held, &mut report);
                }
                if let Some(why) = dereg_timer(&sim, ue, now) {
                    calls.deregistration_failed(i, ue, why, now, &mut held, &mut report);
                }
                // a de-registration asked for while a re-registration was under way
                if !ue.dereg_waiting.is_empty()
                    && ue.dereg.is_none()
                    && ue.reauth.is_none()
                    && !ue.deregistered
                {
                    start_dereg(&sim, i, ue, now);
                }
            }
        }
        // the calls that asked for their UE's re-registration (one at a time per UE) or its
        // de-registration (once its re-registration, if any, is over)
        for (i, r, ask) in std::mem::take(&mut held) {
            let Some(ue) = ues.get_mut(i) else { continue };
            match ask {
                Ask::Reregister if ue.deregistered || ue.dereg.is_some() => {
                    ue.waiting.push(r);
                    let why = Err("re-registration asked of a de-registered UE");
                    calls.reregistered(&sim, i, ue, why, now, &mut held, &mut report);
                }
                Ask::Reregister => {
                    ue.waiting.push(r);
                    if ue.reauth.is_none() {
                        start_reauth(&sim, i, ue, now);
                    }
                }
                Ask::Deregister if ue.deregistered => {
                    // already done: the call waits for its BYE like the others
                }
                Ask::Deregister => {
                    ue.dereg_waiting.push(r);
                    if ue.dereg.is_none() && ue.reauth.is_none() {
                        start_dereg(&sim, i, ue, now);
                    }
                }
            }
        }
        if sim.cfg.progress && now.duration_since(last_progress) > Duration::from_millis(500) {
            last_progress = now;
            eprint!(
                "\r  {started}/{n} started, {} registered, {} failed",
                report.registered,
                report.failed()
            );
            if sim.cfg.calls + sim.cfg.incoming_calls > 0 {
                eprint!(
                    "; calls {} + {} ok, {} failed",
                    report.calls_ok,
                    report.incoming_ok,
                    report.calls_failed()
                );
            }
            eprint!("    ");
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    if sim.cfg.progress {
        eprintln!();
    }
    // the registrations' time (the calls have their own)
    report.elapsed = registered_at.unwrap_or_else(Instant::now) - t0;
    if stop.load(Ordering::Relaxed) {
        let open = calls.out[..calls.started]
            .iter()
            .filter(|(_, l)| l.as_ref().is_some_and(|l| !l.is_over()))
            .count()
            + calls
                .incoming
                .values()
                .filter(|(_, l)| !l.is_over())
                .count();
        if open > 0 {
            *report
                .call_failures
                .entry("call still open when stopped")
                .or_insert(0) += open as u64;
        }
    }
    report.tcp = sim.tcp.as_ref().map(|t| {
        let t = t.borrow();
        (t.stats(), t.host().stats())
    });
    report.calls_elapsed = match (calls.t0, calls.last_end) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    Ok(report)
}

/// UE failed a step.
fn fail(ue: &mut Ue, why: &'static str, report: &mut UeSimReport) {
    ue.step = Step::Failed;
    *report.failures.entry(why).or_insert(0) += 1;
}

/// One step of hostile UE `i` ([`hostile::HostileTcp`]); `true` once it is over, its outcome
/// in `tally`.
fn drive_hostile(
    sim: &Sim,
    i: usize,
    ue: &mut Ue,
    now: Instant,
    tally: &mut hostile::HostileTally,
    by_spi: &mut HashMap<u32, usize>,
) -> bool {
    let (Some(h), Some(t), Some(sa1)) = (ue.hostile.as_mut(), &sim.tcp, ue.sa1.as_ref()) else {
        return true;
    };
    if let Some(at) = h.reset_at {
        let outcome = match h.served {
            Some(true) => hostile::SERVED_AGAIN,
            Some(false) => hostile::REFUSED_AGAIN,
            None if now.duration_since(at) > sim.cfg.timeout => hostile::NOT_SERVED_AGAIN,
            None => return false,
        };
        tally.add(h.kind, outcome);
        return true;
    }
    let id = UeTcp::set_id(i, ue.generation);
    let connected = t.borrow().is_connected(id);
    let impi = sim.impi(i);
    let user = impi.split('@').next().unwrap_or_default();
    let head = hostile::message_head(user, &sim.cfg.realm, &sim.host(), Sim::ports(i).1, i);
    let src = |port| SocketAddr::new(sim.cfg.ue_ip, port);
    let dst = |port| SocketAddr::new(sim.cfg.pcscf.ip(), port);
    let mut buf = Vec::new();
    // a segment crafted outside the UE's stack, over SA1
    let mut craft = |from: u16, to: u16, seq: u32, flags: u8| -> bool {
        let Some(seg) = hostile::tcp_segment(src(from), dst(to), seq, 0, flags, b"") else {
            return false;
        };
        let Some(r) = crate::sim::uetcp::seal(sa1, &seg, &mut buf) else {
            return false;
        };
        sim.send_esp(&buf[r]);
        true
    };
    match h.kind {
        HostileTcp::WrongPorts => {
            let mut sent = 0;
            for k in 0..hostile::WRONG_PORT_SEGMENTS {
                let (from, to) =
                    hostile::wrong_ports(k, ue.port_uc, Sim::ports(i).1, ue.port_ps, ue.port_pc);
                let seq = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(k as u32);
                sent += u64::from(craft(from, to, seq, hostile::SYN));
            }
            tally.crafted(h.kind, sent);
            return true;
        }
        HostileTcp::SynFlood => {
            // its own connection reset (the RST over SA1, the set gone from its stack), then
            // SYNs it never completes: half-open connections on its one 4-tuple
            sim.close_tcp(i, ue.generation);
            by_spi.remove(&Sim::spis_gen(i, ue.generation).0);
            let mut sent = 0;
            for k in 0..hostile::SYN_FLOOD {
                let seq = (i as u32 ^ 0x5a5a_5a5a).wrapping_mul(2_654_435_761 ^ k as u32);
                sent += u64::from(craft(ue.port_uc, ue.port_ps, seq, hostile::SYN));
            }
            tally.crafted(h.kind, sent);
            return true;
        }
        HostileTcp::NoContentLength => {
            if h.sent == 0 {
                // a whole message, its header section ended, its body there: no Content-Length
                let msg = format!("{head}\r\nhello");
                if !sim.send_tcp(id, msg.as_bytes()) {
                    tally.add(h.kind, hostile::NOT_SENT);
                    return true;
                }
                h.sent = msg.len();
                h.last = now;
                return false;
            }
        }
        HostileTcp::Endless => {
            if connected && h.sent < hostile::ENDLESS_BYTES {
                let chunk = if h.sent == 0 {
                    head
                } else {
                    hostile::endless_line(h.sent)
                };
                // (a full send buffer refuses it: again on the next round)
                if sim.send_tcp(id, chunk.as_bytes()) {
                    h.sent += chunk.len();
                    h.last = now;
                }
            }
        }
        HostileTcp::Slowloris => {
            let due = h.sent == 0 || now.duration_since(h.last) >= hostile::SLOWLORIS_INTERVAL;
            if connected && due && h.sent < head.len() {
                if sim.send_tcp(id, &head.as_bytes()[h.sent..h.sent + 1]) {
                    h.sent += 1;
                }
                h.last = now;
            }
        }
    }
    if h.sent == 0 && !connected {
        tally.add(h.kind, hostile::NOT_SENT);
        return true;
    }
    if h.sent > 0 && !connected {
        tally.ended(h.kind, now.duration_since(h.started));
        // one honest MESSAGE on a new connection over the same SAs
        h.reset_at = Some(now);
        let msg = sim.message(i, 1);
        ue.msg_sent = now;
        if !sim.send_sa1(ue, msg.as_bytes())
            && let Some(h) = ue.hostile.as_mut()
        {
            h.served = Some(false);
        }
        ue.in_flight = Some(msg);
        return false;
    }
    if now.duration_since(h.started) > h.kind.deadline() {
        tally.add(h.kind, hostile::NOT_RESET);
        return true;
    }
    false
}

/// Whether the top Via of `sip` says TCP.
fn top_via_is_tcp(sip: &[u8]) -> bool {
    Message::parse(sip).is_ok_and(|m| {
        m.view()
            .header(HeaderName::Via)
            .is_some_and(|v| v.starts_with(b"SIP/2.0/TCP"))
    })
}

/// A protected SIP message that came to UE `i` over its set of generation `over` (ESP over
/// UDP, or a whole message from one of its set's TCP connections): the answers to its
/// registration and MESSAGEs, and the messages of its calls.
#[allow(clippy::too_many_arguments)]
fn on_protected(
    sim: &Sim,
    i: usize,
    over: u32,
    sip: &[u8],
    now: Instant,
    ues: &mut [Ue],
    calls: &mut Calls,
    held: &mut Vec<(usize, CallRef, Ask)>,
    report: &mut UeSimReport,
    by_spi: &mut HashMap<u32, usize>,
    finished: &mut usize,
) {
    let Ok(m) = Message::parse(sip) else { return };
    let cid = m.view().header(HeaderName::CallId).unwrap_or_default();
    if cid.starts_with(b"call-") || cid.starts_with(b"term-") {
        if over != ues[i].generation && m.view().method().is_some() {
            report.requests_over_old_set += 1;
        }
        calls.on_message(sim, i, &ues[i], m.view(), over, now, held, report);
        return;
    }
    let ue = &mut ues[i];
    if ue.dereg.is_some() && cid.starts_with(b"reg-") {
        let Some(done) = dereg_answer(ue, m.view()) else {
            return;
        };
        ue.dereg = None;
        match done {
            Ok(()) => {
                // the calls now wait for the network's BYE (TS 24.229 §5.2.8)
                ue.deregistered = true;
                ue.dereg_waiting.clear();
                report.deregistered += 1;
            }
            Err(why) => calls.deregistration_failed(i, ue, why, now, held, report),
        }
        return;
    }
    if ue.reauth.is_some() && cid.starts_with(b"reg-") {
        let Some(done) = reauth_answer(sim, i, ue, m.view(), now, by_spi) else {
            return;
        };
        if done.is_ok() {
            report.reauthenticated += 1;
        } else {
            ue.reauth = None;
        }
        calls.reregistered(sim, i, ue, done, now, held, report);
        return;
    }
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
        return;
    }
    match ue.step {
        Step::Registering => {
            if status != Some(200) {
                fail(ue, "protected REGISTER refused", report);
                *finished += 1;
                return;
            }
            report.registered += 1;
            ue.service_route = call::all(m.view(), HeaderName::ServiceRoute).join(", ");
            let _ = report
                .reg_latency
                .record((now - ue.started).as_micros().max(1) as u64);
            ue.messages_left = sim.cfg.messages;
            ue.step = Step::Messaging;
            ue.step_at = now;
            if let Some(kind) = sim.cfg.hostile.kind_of(i) {
                // registered honestly: now it misbehaves instead of sending its MESSAGEs
                report.hostile_ues += 1;
                ue.in_flight = None;
                ue.step = Step::Hostile;
                ue.hostile = Some(HostileRun {
                    kind,
                    started: now,
                    last: now,
                    sent: 0,
                    reset_at: None,
                    served: None,
                });
                return;
            }
        }
        Step::Messaging => {
            if status != Some(200) {
                fail(ue, "MESSAGE refused", report);
                *finished += 1;
                return;
            }
            report.messages_ok += 1;
            let _ = report
                .msg_latency
                .record((now - ue.msg_sent).as_micros().max(1) as u64);
            ue.step_at = now;
        }
        Step::Hostile => {
            // the answer to its honest MESSAGE after the reset
            if let Some(h) = ue.hostile.as_mut() {
                h.served = Some(status == Some(200));
            }
            return;
        }
        Step::Reregistering => {
            if status != Some(200) {
                fail(ue, "re-REGISTER refused", report);
            } else {
                report.reregistered += 1;
                ue.step = Step::Done;
            }
            *finished += 1;
            return;
        }
        _ => return,
    }
    if ue.step == Step::Messaging {
        if ue.messages_left == 0 && sim.cfg.reregister {
            // CSeq past the MESSAGEs' numbers, on the REGISTER's Call-ID
            let reg = sim.register(i, 1000, &ue.auth, Some(&ue.verify));
            if sim.on_tcp(reg.as_bytes()) {
                sim.send_sa1(ue, reg.as_bytes());
            } else {
                let sa1 = ue.sa1.as_ref().expect("registered");
                if let Some(pkt) = sim.esp(i, sa1, ue.port_ps, reg.as_bytes()) {
                    sim.send_esp(&pkt);
                }
            }
            ue.in_flight = Some(reg);
            ue.resends = 0;
            ue.last_sent = now;
            ue.step = Step::Reregistering;
        } else if ue.messages_left == 0 {
            ue.step = Step::Done;
            *finished += 1;
        } else if !sim.cfg.message_interval.is_zero() && ue.messages_left < sim.cfg.messages {
            // the next one after the interval (the loop sends it)
            ue.in_flight = None;
            ue.next_msg_at = Some(now + sim.cfg.message_interval);
        } else {
            send_next_message(sim, i, ue, now);
        }
    }
}

/// UE `i`'s next protected MESSAGE, over SA1 (or its TCP connection).
fn send_next_message(sim: &Sim, i: usize, ue: &mut Ue, now: Instant) {
    let k = sim.cfg.messages - ue.messages_left + 1;
    ue.messages_left -= 1;
    let msg = sim.message(i, k);
    if sim.on_tcp(msg.as_bytes()) {
        ue.msg_sent = now;
        sim.send_sa1(ue, msg.as_bytes());
    } else {
        let sa1 = ue.sa1.as_ref().expect("registered");
        if let Some(pkt) = sim.esp(i, sa1, ue.port_ps, msg.as_bytes()) {
            ue.msg_sent = now;
            sim.send_esp(&pkt);
        }
    }
    ue.in_flight = Some(msg);
    ue.resends = 0;
    ue.last_sent = now;
}

/// Start UE `i`'s de-registration (TS 24.229 §5.1.1.6.1): a REGISTER over its current set
/// with Expires 0 and `expires=0` on its Contact, its Security-Client and Security-Verify
/// (sec-agree, as for a re-registration) and the last Authorization.
fn start_dereg(sim: &Sim, i: usize, ue: &mut Ue, now: Instant) {
    ue.reg_cseq += 1;
    let cseq = ue.reg_cseq;
    let msg = sim.register_with(i, ue.generation, cseq, &ue.auth, Some(&ue.verify), 0);
    sim.send_sa1(ue, msg.as_bytes());
    ue.dereg = Some(Dereg {
        msg,
        cseq,
        started: now,
        last_sent: now,
        resends: 0,
    });
}

/// A protected answer to UE's de-registration: `Some` when final (200: done).
fn dereg_answer(ue: &Ue, v: crate::sip::View<'_>) -> Option<Result<(), &'static str>> {
    let d = ue.dereg.as_ref()?;
    let status = v.status()?;
    let num = v
        .header(HeaderName::CSeq)
        .and_then(crate::sip::headers::cseq)?
        .0;
    if num != u64::from(d.cseq) || status < 200 {
        return None;
    }
    Some(if status == 200 {
        Ok(())
    } else {
        Err("de-REGISTER refused")
    })
}

/// Retransmission (0.5, 1, 2 s) and timeout of a UE's de-registration.
fn dereg_timer(sim: &Sim, ue: &mut Ue, now: Instant) -> Option<&'static str> {
    let d = ue.dereg.as_mut()?;
    if now.duration_since(d.started) > sim.cfg.timeout {
        ue.dereg = None;
        return Some("no answer to the de-REGISTER");
    }
    // over TCP, never on a timer (RFC 3261 §17.1.2.2)
    if !sim.on_tcp(d.msg.as_bytes())
        && d.resends < 3
        && now.duration_since(d.last_sent) > Duration::from_millis(500 << d.resends)
    {
        d.resends += 1;
        d.last_sent = now;
        let msg = d.msg.clone();
        sim.send_sa1(ue, msg.as_bytes());
    }
    None
}

/// Start UE `i`'s mid-call re-registration: the REGISTER over its current set, with a new
/// Security-Client and no response, so the core challenges it again (a new AKA run).
fn start_reauth(sim: &Sim, i: usize, ue: &mut Ue, now: Instant) {
    let generation = ue.generation + 1;
    ue.reg_cseq += 1;
    let cseq = ue.reg_cseq;
    let nonce = Digest::parse(
        ue.auth
            .trim_end()
            .trim_start_matches("Authorization: ")
            .as_bytes(),
    )
    .and_then(|d| d.nonce().map(|n| String::from_utf8_lossy(n).into_owned()))
    .unwrap_or_default();
    let auth = format!(
        "Authorization: Digest username=\"{}\",realm=\"{}\",uri=\"sip:{}\",nonce=\"{nonce}\",response=\"\",algorithm=AKAv1-MD5\r\n",
        sim.impi(i),
        sim.cfg.realm,
        sim.cfg.realm
    );
    let msg = sim.register_gen(i, generation, cseq, &auth, Some(&ue.verify));
    sim.send_sa1(ue, msg.as_bytes());
    ue.reauth = Some(Reauth {
        generation,
        msg,
        cseq,
        over_new: false,
        started: now,
        last_sent: now,
        resends: 0,
        new: None,
    });
}

/// A protected answer to UE `i`'s re-registration: `Some` when it is over (the 200 over the
/// new set: the new set is the UE's; or a failure).
fn reauth_answer(
    sim: &Sim,
    i: usize,
    ue: &mut Ue,
    v: crate::sip::View<'_>,
    now: Instant,
    by_spi: &mut HashMap<u32, usize>,
) -> Option<Result<(), &'static str>> {
    let r = ue.reauth.as_mut()?;
    let status = v.status()?;
    let num = v
        .header(HeaderName::CSeq)
        .and_then(crate::sip::headers::cseq)?
        .0;
    if num != u64::from(r.cseq) || status < 200 {
        return None;
    }
    if !r.over_new {
        if status != 401 {
            return Some(Err("mid-call re-REGISTER not challenged"));
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
            return Some(Err("mid-call 401 without Security-Server or nonce"));
        };
        let Ok(got) = ue.usim.authenticate_nonce(&nonce) else {
            return Some(Err("mid-call AUTN rejected"));
        };
        let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
        let (sc, ss) = Sim::spis_gen(i, r.generation);
        let sa = |spi| {
            Suite::new(mech.alg, mech.ealg)
                .and_then(|suite| Sa::from_aka_suite(spi, suite, &ck, &ik, SaOptions::default()))
        };
        let (Ok(sa1), Ok(sa2), Ok(sa4)) = (sa(mech.spi_s), sa(ss), sa(mech.spi_c)) else {
            return Some(Err("mid-call SA build"));
        };
        let (sa1, sa4) = (Arc::new(sa1), Arc::new(sa4));
        if sim.tcp.is_some() {
            // the new set's own connection, from its new port-c (TS 33.203 §7.4)
            let Ok(sa3) = sa(sc) else {
                return Some(Err("mid-call SA build"));
            };
            sim.open_tcp(
                i,
                r.generation,
                (&sa1, sa3, &sa4),
                mech.port_s,
                mech.port_c,
                by_spi,
            );
        }
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
        let resp = digest::response_aka(&input, &got.res);
        let auth = format!(
            "Authorization: Digest username=\"{impi}\",realm=\"{realm}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\n",
            resp.as_str()
        );
        ue.reg_cseq += 1;
        r.cseq = ue.reg_cseq;
        r.msg = sim.register_gen(i, r.generation, r.cseq, &auth, Some(&server));
        r.over_new = true;
        r.resends = 0;
        r.last_sent = now;
        let pc = Sim::port_c(i, r.generation);
        if sim.on_tcp(r.msg.as_bytes()) {
            sim.send_tcp(UeTcp::set_id(i, r.generation), r.msg.as_bytes());
        } else if let Some(pkt) = sim.esp_with(&sa1, pc, mech.port_s, r.msg.as_bytes()) {
            sim.send_esp(&pkt);
        }
        by_spi.insert(ss, i);
        r.new = Some((sa1, sa2, sa4, mech.port_s, mech.port_c, server, auth));
        return None;
    }
    if status != 200 {
        return Some(Err("mid-call re-REGISTER refused"));
    }
    let r = ue.reauth.take()?;
    let (sa1, sa2, sa4, port_ps, port_pc, server, auth) = r.new?;
    // the old set stays for what is still in flight over it (TS 33.203 §7.4)
    if let (Some(old2), Some(old4)) = (ue.sa2.replace(sa2), ue.sa4.replace(sa4))
        && let Some(dropped) = ue.prev.replace((old2, old4, ue.port_pc, ue.generation))
    {
        // the set before that one goes, and its TCP with it (silently: the P-CSCF drops
        // that set at the same 200)
        sim.forget_tcp(i, dropped.3);
    }
    ue.sa1 = Some(sa1);
    ue.port_ps = port_ps;
    ue.port_pc = port_pc;
    ue.port_uc = Sim::port_c(i, r.generation);
    ue.generation = r.generation;
    ue.verify = server;
    ue.auth = auth;
    Some(Ok(()))
}

/// Retransmission (0.5, 1, 2 s) and timeout of UE `i`'s re-registration.
fn reauth_timer(sim: &Sim, i: usize, ue: &mut Ue, now: Instant) -> Option<&'static str> {
    let r = ue.reauth.as_mut()?;
    if now.duration_since(r.started) > sim.cfg.timeout {
        ue.reauth = None;
        return Some("no answer to the mid-call re-REGISTER");
    }
    // over TCP, never on a timer (RFC 3261 §17.1.2.2)
    if !sim.on_tcp(r.msg.as_bytes())
        && r.resends < 3
        && now.duration_since(r.last_sent) > Duration::from_millis(500 << r.resends)
    {
        r.resends += 1;
        r.last_sent = now;
        match &r.new {
            Some((sa1, _, _, port_ps, ..)) => {
                let pc = Sim::port_c(i, r.generation);
                if let Some(pkt) = sim.esp_with(sa1, pc, *port_ps, r.msg.as_bytes()) {
                    sim.send_esp(&pkt);
                }
            }
            None => {
                let msg = r.msg.clone();
                sim.send_sa1(ue, msg.as_bytes());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each new SA set of a UE gets new SPIs and a new port-c (TS 33.203 §7.4), the same
    /// port-s (it is in the Contact), and no two UEs' sets share a port-c or an SPI.
    #[test]
    fn every_sa_set_has_its_own_ports_and_spis() {
        let n = 10_000;
        let mut ports = std::collections::HashSet::new();
        let mut spis = std::collections::HashSet::new();
        for i in 0..n {
            for g in 0..3 {
                assert!(ports.insert(Sim::port_c(i, g)), "UE {i} set {g}");
                let (c, s) = Sim::spis_gen(i, g);
                assert!(spis.insert(c) && spis.insert(s), "UE {i} set {g}");
            }
        }
        // port-s apart from every port-c of any set
        for i in 0..n {
            let (_, ps) = Sim::ports(i);
            assert!(!ports.contains(&ps), "UE {i}'s port-s");
        }
        assert_eq!(Sim::port_c(7, 3), Sim::port_c(7, 0), "three in turn");
    }

    /// `--transport` and `--message-size`: udp by default, the body `hello` by default.
    #[test]
    fn transport_and_message_body() {
        assert_eq!(Transport::default(), Transport::Udp);
        assert_eq!(Transport::parse("tcp"), Ok(Transport::Tcp));
        assert_eq!(Transport::parse("UDP"), Ok(Transport::Udp));
        assert!(Transport::parse("sctp").is_err());
        assert_eq!(Transport::Tcp.via(), "TCP");
        assert_eq!(Transport::parse("auto"), Ok(Transport::Auto));
        assert_eq!(Transport::Auto.via(), "UDP");
        // RFC 3261 §18.1.1 per request with auto
        assert!(!Transport::Auto.request_on_tcp(AUTO_MAX_UDP));
        assert!(Transport::Auto.request_on_tcp(AUTO_MAX_UDP + 1));
        assert!(Transport::Tcp.request_on_tcp(10) && !Transport::Udp.request_on_tcp(5000));
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n";
        let t = crate::sim::corenet::via_over_tcp(m);
        assert_eq!(t.len(), m.len());
        assert!(t.windows(12).any(|w| w == b"SIP/2.0/TCP "));
        // nothing else is touched: no Via, or one that says TCP already
        let no_via = b"SIP/2.0/UDP x\r\n";
        assert_eq!(&*crate::sim::corenet::via_over_tcp(no_via), no_via);
        assert_eq!(message_body(DEFAULT_MESSAGE_SIZE), "hello");
        assert_eq!(message_body(0), "");
        let b = message_body(3000);
        assert_eq!(b.len(), 3000);
        assert!(b.starts_with("hello hello "));
    }

    /// The sets of UE `i` have names of their own, from which the UE and the generation come
    /// back (the TCP path hands messages out by set).
    #[test]
    fn tcp_set_names_give_back_the_ue_and_the_set() {
        for (i, g) in [(0, 0), (9999, 1), (7, u32::MAX)] {
            let id = UeTcp::set_id(i, g);
            assert_eq!(((id & 0xffff_ffff) as usize, (id >> 32) as u32), (i, g));
        }
    }
}
