//! What the simulators share for calls (RFC 3261 §12, §13, §15): the SDP offer and answer, a
//! response with a body, the few fields of a message they read, the plan of which flow each
//! call follows and who acts in it ([`CallPlan`]), and one side of a call as a sans-IO state
//! machine ([`Leg`]) that both simulators drive, as caller or as callee:
//!
//! - `basic`: INVITE, (100), 180, 200, ACK, BYE, 200;
//! - `prack`: the 180 is reliable (RFC 3262 §3: `Require: 100rel`, `RSeq`), the caller answers
//!   it with a PRACK inside the early dialog (`RAck`, RFC 3262 §7.2), the callee's 200 to the
//!   PRACK, then the 200 to the INVITE;
//! - `update`: as `prack`, then an UPDATE with an SDP offer inside the early dialog from the
//!   caller (RFC 3311 §5.1, preconditions as VoLTE phones do) answered 200 before the 200 to the
//!   INVITE; once confirmed, the acting side sends another UPDATE;
//! - `reinvite`: once confirmed, the acting side sends a re-INVITE with an offer (RFC 3261
//!   §14), its 200 with the answer, its ACK;
//! - `cancel`: the caller cancels after the 180 (RFC 3261 §9.1: the INVITE's Request-URI, Via,
//!   Route, CSeq number), the callee answers 200 to the CANCEL and 487 to the INVITE (§9.2), the
//!   caller ACKs the 487 the INVITE's way (§17.1.1.3);
//! - `rereg`: once confirmed, the UE re-registers with a new AKA run and a new SA set (TS
//!   33.203 §7.4), then sends an UPDATE inside the dialog over the new set; the acting side
//!   hangs up after it.
//!
//! - `release`: once confirmed, the core side (as the S-CSCF, TS 24.229 §5.4.5.1.2) sends a BYE
//!   the UE does not expect; both legs end as [`Outcome::Released`] (not part of `all`).
//! - `dereg`: once confirmed, the UE de-registers ([`Event::Deregister`]: a protected REGISTER
//!   with Expires 0, TS 24.229 §5.1.1.6) and both legs wait for the network's BYE (the P-CSCF
//!   releases the calls of a registration that ended, TS 24.229 §5.2.8): each answers it 200
//!   and ends as [`Outcome::Released`]; without it, the leg fails ("no BYE after
//!   de-registration"). A de-registered UE takes no further call: a plan with `dereg` gives
//!   every call a UE of its own ([`CallPlan::own_ues`]; not part of `all`).
//!
//! In every other flow the acting side ([`CallPlan::callee_acts`]) sends the BYE. A BYE for a
//! confirmed call that the plan did not expect (a network-initiated release, TS 24.229 §5.2.8)
//! is answered 200 and ends the leg as [`Outcome::Released`], not as a failure.
//!
//! Everything here reads messages that came from the network: nothing panics on what it reads,
//! a field that is missing or malformed is `None`, a message that does not fit is ignored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::sip::headers::{NameAddr, cseq};
use crate::sip::rules::build_response;
use crate::sip::{HeaderName, Message, View};

/// The call flows the simulators know (the module doc describes each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Flow {
    Basic,
    Prack,
    Update,
    Reinvite,
    Cancel,
    Rereg,
    Release,
    Dereg,
}

impl Flow {
    pub const ALL: [Flow; 6] = [
        Flow::Basic,
        Flow::Prack,
        Flow::Update,
        Flow::Reinvite,
        Flow::Cancel,
        Flow::Rereg,
    ];
    /// [`Flow::ALL`], `release` and `dereg`, which end as released, not as ok.
    pub const EVERY: [Flow; 8] = [
        Flow::Basic,
        Flow::Prack,
        Flow::Update,
        Flow::Reinvite,
        Flow::Cancel,
        Flow::Rereg,
        Flow::Release,
        Flow::Dereg,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flow::Basic => "basic",
            Flow::Prack => "prack",
            Flow::Update => "update",
            Flow::Reinvite => "reinvite",
            Flow::Cancel => "cancel",
            Flow::Rereg => "rereg",
            Flow::Release => "release",
            Flow::Dereg => "dereg",
        }
    }

    /// The network releases the call on purpose: both legs end as [`Outcome::Released`].
    pub fn ends_released(self) -> bool {
        matches!(self, Flow::Release | Flow::Dereg)
    }

    pub fn parse(s: &str) -> Option<Flow> {
        Flow::EVERY.into_iter().find(|f| f.name() == s.trim())
    }

    /// Whether the callee's 180 is reliable (RFC 3262).
    fn reliable(self) -> bool {
        matches!(self, Flow::Prack | Flow::Update)
    }
}

/// Which flow call `k` follows and which side acts in it. Both simulators hold the same plan,
/// so each side of call `k` knows what to send and what to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallPlan {
    /// Call `k` follows `flows[k % len]` (a flow named twice gets twice the calls).
    pub flows: Vec<Flow>,
}

impl Default for CallPlan {
    fn default() -> Self {
        CallPlan {
            flows: vec![Flow::Basic],
        }
    }
}

impl CallPlan {
    /// `basic,prack,...` or `all`.
    pub fn parse(s: &str) -> Result<CallPlan, String> {
        if s.trim() == "all" {
            return Ok(CallPlan {
                flows: Flow::ALL.to_vec(),
            });
        }
        let mut flows = Vec::new();
        for w in s.split(',').filter(|w| !w.trim().is_empty()) {
            flows.push(Flow::parse(w).ok_or_else(|| {
                format!(
                    "unknown call flow `{}` (known: {}, or all: every one but release and dereg)",
                    w.trim(),
                    Flow::EVERY.map(Flow::name).join(", ")
                )
            })?);
        }
        if flows.is_empty() {
            return Err("no call flow given".into());
        }
        Ok(CallPlan { flows })
    }

    pub fn flow(&self, k: usize) -> Flow {
        if self.flows.is_empty() {
            return Flow::Basic;
        }
        self.flows[k % self.flows.len()]
    }

    /// The callee acts in call `k` (sends the BYE, and the UPDATE / re-INVITE of the confirmed
    /// dialog) in every other round of the flows: each flow runs with either side acting.
    pub fn callee_acts(&self, k: usize) -> bool {
        (k / self.flows.len().max(1)) % 2 == 1
    }

    /// Every call has a UE of its own (a `dereg` call ends its UE's registration, so the UE
    /// can take part in no other call): the UEs place call `k` from UE `k`, the core places
    /// call `k` to the `k`-th UE from the last one registered ([`CallPlan::check_own_ues`]).
    pub fn own_ues(&self) -> bool {
        self.flows.contains(&Flow::Dereg)
    }

    /// With [`CallPlan::own_ues`], `calls` (both directions together) must not outnumber the
    /// `ues`: the ones past them would find no UE of their own.
    pub fn check_own_ues(&self, calls: u64, ues: u64) -> Result<(), String> {
        if self.own_ues() && calls > ues {
            return Err(format!(
                "the dereg flow de-registers the UE of each call, so each call needs a UE of its own: {calls} calls need at least as many UEs (got {ues})"
            ));
        }
        Ok(())
    }

    pub fn names(&self) -> String {
        self.flows
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Terminating call `k` of the basic plan is hung up by the callee (the UE) when odd, by the
/// caller (the core) when even.
pub fn callee_hangs_up(k: usize) -> bool {
    CallPlan::default().callee_acts(k)
}

/// A latency histogram, µs, 1 µs .. 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds")
}

/// `ip` as an SDP connection address: (`IP4` / `IP6`, the address without brackets).
fn sdp_addr(ip: std::net::IpAddr) -> (&'static str, String) {
    match ip {
        std::net::IpAddr::V4(a) => ("IP4", a.to_string()),
        std::net::IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

/// An SDP offer of about 900 bytes, as a VoLTE phone makes (AMR-WB, AMR, telephone-event,
/// preconditions).
pub fn sdp_offer(ip: std::net::IpAddr, port: u16) -> String {
    let (fam, a) = sdp_addr(ip);
    let mut s = format!(
        "v=0\r\no=- 1705432100 1705432100 IN {fam} {a}\r\ns=-\r\nc=IN {fam} {a}\r\nb=AS:49\r\nb=RS:0\r\nb=RR:2500\r\nt=0 0\r\nm=audio {port} RTP/AVP 116 107 118 96 111 110\r\nb=AS:49\r\nb=RS:0\r\nb=RR:2500\r\n"
    );
    for (pt, codec) in [
        (116, "AMR-WB/16000/1"),
        (107, "AMR-WB/16000/1"),
        (118, "AMR/8000/1"),
        (96, "AMR/8000/1"),
        (111, "telephone-event/16000"),
        (110, "telephone-event/8000"),
    ] {
        s.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
    }
    s.push_str("a=fmtp:116 mode-change-capability=2;max-red=0\r\na=fmtp:107 octet-align=1;mode-change-capability=2;max-red=0\r\na=fmtp:118 mode-change-capability=2;max-red=0\r\na=fmtp:96 octet-align=1;mode-change-capability=2;max-red=0\r\na=fmtp:111 0-15\r\na=fmtp:110 0-15\r\na=curr:qos local none\r\na=curr:qos remote none\r\na=des:qos mandatory local sendrecv\r\na=des:qos optional remote sendrecv\r\na=sendrecv\r\na=rtcp-fb:* trr-int 5000\r\na=rtcp-fb:* nack\r\na=rtcp-fb:* ccm tmmbr\r\na=ecn-capable-rtp: leap ect=0\r\na=anbr\r\na=label:1\r\na=rtcp:");
    s.push_str(&format!("{}\r\na=ptime:20\r\na=maxptime:240\r\n", port + 1));
    s
}

/// The answer: one codec of the offer (RFC 3264 §6).
pub fn sdp_answer(ip: std::net::IpAddr, port: u16) -> String {
    let (fam, a) = sdp_addr(ip);
    format!(
        "v=0\r\no=- 1705432200 1705432200 IN {fam} {a}\r\ns=-\r\nc=IN {fam} {a}\r\nt=0 0\r\nm=audio {port} RTP/AVP 116 111\r\na=rtpmap:116 AMR-WB/16000/1\r\na=fmtp:116 mode-change-capability=2;max-red=0\r\na=rtpmap:111 telephone-event/16000\r\na=fmtp:111 0-15\r\na=sendrecv\r\na=ptime:20\r\n"
    )
}

/// A response to `req` (its Via, From, To with `to_tag` added, Call-ID, CSeq), the `extra`
/// header lines (each ending in CRLF), and an SDP body if given.
pub fn respond(
    req: View<'_>,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    sdp: Option<&str>,
) -> Option<Vec<u8>> {
    let mut out = vec![0u8; req.as_bytes().len() + extra.len() + 1024];
    let n = build_response(
        req,
        code,
        reason,
        to_tag.as_bytes(),
        &[extra.as_bytes()],
        &mut out,
    )?;
    out.truncate(n);
    if let Some(body) = sdp {
        let tail = b"Content-Length: 0\r\n\r\n";
        if !out.ends_with(tail) {
            return None;
        }
        out.truncate(out.len() - tail.len());
        out.extend_from_slice(
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    Some(out)
}

/// The first value of `h`, as text.
pub fn text(v: View<'_>, h: HeaderName) -> Option<String> {
    v.header(h)
        .and_then(|x| std::str::from_utf8(x).ok())
        .map(str::to_string)
}

/// Every value of `h` (all its lines, comma-separated values apart), as text.
pub fn all(v: View<'_>, h: HeaderName) -> Vec<String> {
    v.values(h)
        .filter_map(|x| std::str::from_utf8(x).ok())
        .map(|x| x.trim().to_string())
        .collect()
}

/// The CSeq method, when the CSeq is well formed.
pub fn cseq_method<'a>(v: View<'a>) -> Option<&'a [u8]> {
    v.header(HeaderName::CSeq)
        .and_then(cseq)
        .map(|(_, method)| method)
}

/// The URI of the first Contact (RFC 3261 §12.1.1: the remote target).
pub fn contact_uri(v: View<'_>) -> Option<String> {
    let c = v.header(HeaderName::Contact)?;
    let na = NameAddr::parse(c)?;
    std::str::from_utf8(na.uri).ok().map(str::to_string)
}

/// `k` from a Call-ID `<prefix><k>@...` when `k < limit`.
pub fn call_index(v: View<'_>, prefix: &str, limit: usize) -> Option<usize> {
    let c = std::str::from_utf8(v.header(HeaderName::CallId)?).ok()?;
    let k = c
        .strip_prefix(prefix)?
        .split('@')
        .next()?
        .parse::<usize>()
        .ok()?;
    (k < limit).then_some(k)
}

/// p50 / p99 / max of `h` in ms, as a line's tail.
pub fn percentiles(h: &Histogram<u64>) -> String {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        h.max() as f64 / 1000.0
    )
}

/// How a leg ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Failed(&'static str),
    /// An unexpected BYE ended the confirmed call (released by the network).
    Released,
}

/// What a leg tells its simulator, besides what to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The caller's first 18x, this long after its INVITE.
    Ringing(Duration),
    /// The caller's 200 to the INVITE.
    Answered(Duration),
    /// The UE must re-register (new AKA run, new SA set), then call [`Leg::resume`].
    Reregister,
    /// The UE must de-register (TS 24.229 §5.1.1.6); the leg then waits for the network's BYE
    /// (or [`Leg::fail`] if the de-registration fails).
    Deregister,
    Ended(Outcome),
}

/// A message to send: requests go as requests (a UE: over SA1 to the P-CSCF's port-s),
/// responses as responses (a UE: over SA4 to the P-CSCF's port-c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out {
    pub request: bool,
    pub bytes: Vec<u8>,
}

/// The side's own details for its requests and responses.
#[derive(Clone, Debug)]
pub struct Local {
    /// Via sent-by, `host:port`.
    pub sent_by: String,
    /// `;rport` in our Via (the UEs).
    pub rport: bool,
    /// Our Contact URI.
    pub contact: String,
    /// Makes our branches unique to the call (`z9hG4bK<prefix>...`).
    pub branch: String,
    /// Our To tag (callee).
    pub tag: String,
    /// Our SDP: the offer of a caller's re-INVITE / UPDATE, the answer of a callee.
    pub offer: String,
    pub answer: String,
    /// Our own Record-Route entry (the core as S-CSCF): above the received ones in our
    /// responses, and not in our route set.
    pub record_route: Option<String>,
    /// A callee sends 100 Trying first (the core does; phones need not).
    pub trying: bool,
    /// Give up on a step after this long.
    pub timeout: Duration,
    /// Our requests go over TCP (a UE's connection to the P-CSCF's port-s): `SIP/2.0/TCP` in
    /// our Via, and no timer retransmits them (RFC 3261 §17.1.1.2, §17.1.2.2: timers A and E
    /// are for unreliable transports only; timers B and F, our step timeout, stay). Our
    /// responses (over UDP, SA4) are still sent again until their ACK / PRACK (RFC 3261
    /// §13.3.1.4, RFC 3262 §3: the UAS core does that on any transport).
    pub tcp: bool,
}

/// Where a leg is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Caller: INVITE out, nothing back yet.
    Inviting,
    /// Caller: 100 or an unreliable 18x; waits for the 200.
    Proceeding,
    /// Caller: PRACK out.
    Pracking,
    /// Caller: UPDATE out inside the early dialog.
    EarlyUpdating,
    /// Caller: early dialog done (PRACK / UPDATE answered), waits for the 200.
    Early,
    /// Caller: CANCEL out, waits for its 200 and the 487.
    Cancelling,
    /// Callee: reliable 180 out, waits for the PRACK.
    Reliable,
    /// Callee: PRACK answered, waits for the caller's early UPDATE.
    EarlyWait,
    /// Callee: 180 out, waits for the CANCEL.
    RingingWait,
    /// Callee: 200 out, waits for the ACK.
    Answered,
    /// Callee: 487 out, waits for its ACK.
    Rejected,
    /// Confirmed; waits for the other side (its UPDATE / re-INVITE or its BYE).
    Up,
    /// Confirmed; the UE re-registers before its UPDATE.
    Held,
    /// Confirmed; the UE de-registers (or did) and waits for the network's BYE.
    Deregistering,
    /// Our UPDATE / re-INVITE out.
    Mid,
    /// Our BYE out.
    Byeing,
    Over,
}

/// Bounded: the responses kept to answer a repeated request with.
const ANSWERS_KEPT: usize = 6;

/// One side of one call (RFC 3261 §12–§17 as far as the flows need), sans-IO: messages in,
/// messages out. Retransmissions: the request in flight, the reliable 18x until its PRACK, the
/// 2xx or 487 until its ACK, at 0.5, 1, 2 s (RFC 3261 §17, RFC 3262 §3); a repeated request
/// is answered with the response it had.
#[derive(Debug)]
pub struct Leg {
    pub flow: Flow,
    pub caller: bool,
    /// This side sends the BYE (and the UPDATE / re-INVITE of the confirmed dialog).
    pub acts: bool,
    /// This side is the UE: in `rereg` it re-registers and sends the UPDATE.
    ue: bool,
    pub state: State,
    me: Local,
    started: Instant,
    step_at: Instant,
    call_id: String,
    /// Our From (caller) / To (callee) value, with our tag.
    local: String,
    /// Theirs, with their tag once known.
    remote: String,
    target: String,
    /// The route set as one Route value (empty: none).
    route: String,
    /// The last CSeq number we used in a request.
    cseq: u64,
    invite_cseq: u64,
    /// Caller: the INVITE as sent (CANCEL and the ACK of a non-2xx are built from it).
    /// Callee: the INVITE as received (its later responses are built from it).
    invite: Vec<u8>,
    /// The extra header lines of the callee's responses to the INVITE (Record-Route, Contact).
    invite_extra: String,
    pending: Option<Out>,
    /// Method and CSeq number of the request in flight.
    pending_req: Option<(Vec<u8>, u64)>,
    last_sent: Instant,
    resends: u32,
    answers: Vec<(Vec<u8>, u64, Vec<u8>)>,
    /// The ACK we sent for the last 2xx (sent again for a repeated one, RFC 3261 §13.2.2.4).
    ack: Vec<u8>,
    rang: bool,
    cancel_ok: bool,
    got_487: bool,
    mid_done: bool,
}

fn header_text(v: View<'_>, name: &[u8]) -> Option<String> {
    v.header_named(name)
        .and_then(|x| std::str::from_utf8(x).ok())
        .map(|x| x.trim().to_string())
}

/// The CSeq number and method.
fn cseq_of(v: View<'_>) -> Option<(u64, &[u8])> {
    v.header(HeaderName::CSeq).and_then(cseq)
}

/// Whether the Require header lists `100rel` (RFC 3262 §3).
fn requires_100rel(v: View<'_>) -> bool {
    v.values(HeaderName::Require)
        .any(|x| x.trim_ascii().eq_ignore_ascii_case(b"100rel"))
}

/// The tag of a From / To value.
fn tag_of(value: &str) -> Option<String> {
    let na = NameAddr::parse(value.as_bytes())?;
    std::str::from_utf8(na.tag()?).ok().map(str::to_string)
}

impl Leg {
    /// A caller's leg for `invite` (built by the simulator, with our Via on top, From with our
    /// tag, Call-ID, CSeq; sent at once: it is the first message of `out`).
    pub fn caller(
        flow: Flow,
        acts: bool,
        ue: bool,
        invite: Vec<u8>,
        me: Local,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<Leg> {
        let m = Message::parse(&invite).ok()?;
        let v = m.view();
        let (num, method) = cseq_of(v)?;
        if method != b"INVITE" {
            return None;
        }
        let call_id = text(v, HeaderName::CallId)?;
        let local = text(v, HeaderName::From)?;
        let remote = text(v, HeaderName::To)?;
        let target = std::str::from_utf8(v.request_uri()?).ok()?.to_string();
        let mut leg = Leg::blank(flow, true, acts, ue, me, now);
        leg.call_id = call_id;
        leg.local = local;
        leg.remote = remote;
        leg.target = target;
        leg.cseq = num;
        leg.invite_cseq = num;
        leg.invite = invite.clone();
        leg.state = State::Inviting;
        leg.send(
            Out {
                request: true,
                bytes: invite,
            },
            Some((b"INVITE".to_vec(), num)),
            now,
            out,
        );
        Some(leg)
    }

    /// A callee's leg for the INVITE `v`: its first answers go to `out` (100 if the side sends
    /// it, 180, and the 200 unless the flow waits for a PRACK or a CANCEL). `None` when the
    /// INVITE lacks what a dialog needs (Call-ID, From tag, To, CSeq, Contact).
    pub fn callee(
        flow: Flow,
        acts: bool,
        ue: bool,
        v: View<'_>,
        me: Local,
        now: Instant,
        out: &mut Vec<Out>,
    ) -> Option<Leg> {
        let (num, method) = cseq_of(v)?;
        if method != b"INVITE" || !v.is_method(b"INVITE") {
            return None;
        }
        let remote = text(v, HeaderName::From)?;
        tag_of(&remote)?;
        let to = text(v, HeaderName::To)?;
        if tag_of(&to).is_some() {
            return None;
        }
        let call_id = text(v, HeaderName::CallId)?;
        let target = contact_uri(v)?;
        let received = all(v, HeaderName::RecordRoute);
        let mut extra = String::new();
        if let Some(rr) = &me.record_route {
            extra.push_str(&format!("Record-Route: {rr}\r\n"));
        }
        for rr in &received {
            extra.push_str(&format!("Record-Route: {rr}\r\n"));
        }
        extra.push_str(&format!("Contact: <{}>\r\n", me.contact));
        let mut leg = Leg::blank(flow, false, acts, ue, me, now);
        // our own CSeq space (RFC 3261 §12.2.1.1), apart from the caller's numbers
        leg.cseq = 100;
        // RFC 3261 §12.1.1: the route set is the Record-Route as it came, in order
        leg.route = received.join(", ");
        leg.local = format!("{to};tag={}", leg.me.tag);
        leg.remote = remote;
        leg.target = target;
        leg.call_id = call_id;
        leg.invite_cseq = num;
        leg.invite = v.as_bytes().to_vec();
        leg.invite_extra = extra;
        if leg.me.trying {
            let t = respond(v, 100, "Trying", "", "", None)?;
            out.push(Out {
                request: false,
                bytes: t,
            });
        }
        if flow.reliable() {
            // RFC 3262 §3: Require: 100rel and an RSeq; sent again until the PRACK
            let extra = format!("{}Require: 100rel\r\nRSeq: 1\r\n", leg.invite_extra);
            let r = respond(v, 180, "Ringing", &leg.me.tag, &extra, None)?;
            leg.remember(b"INVITE", num, &r);
            leg.send(
                Out {
                    request: false,
                    bytes: r,
                },
                None,
                now,
                out,
            );
            leg.state = State::Reliable;
        } else {
            let r = respond(v, 180, "Ringing", &leg.me.tag, &leg.invite_extra, None)?;
            leg.remember(b"INVITE", num, &r);
            let r = Out {
                request: false,
                bytes: r,
            };
            if flow == Flow::Cancel {
                // the caller cancels on the 180: sent again until the CANCEL
                leg.send(r, None, now, out);
                leg.state = State::RingingWait;
            } else {
                out.push(r);
                leg.answer_invite(now, out)?;
            }
        }
        Some(leg)
    }

    fn blank(flow: Flow, caller: bool, acts: bool, ue: bool, me: Local, now: Instant) -> Leg {
        Leg {
            flow,
            caller,
            acts,
            ue,
            state: State::Over,
            me,
            started: now,
            step_at: now,
            call_id: String::new(),
            local: String::new(),
            remote: String::new(),
            target: String::new(),
            route: String::new(),
            cseq: 0,
            invite_cseq: 0,
            invite: Vec::new(),
            invite_extra: String::new(),
            pending: None,
            pending_req: None,
            last_sent: now,
            resends: 0,
            answers: Vec::new(),
            ack: Vec::new(),
            rang: false,
            cancel_ok: false,
            got_487: false,
            mid_done: false,
        }
    }

    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    pub fn is_over(&self) -> bool {
        self.state == State::Over
    }

    fn goto(&mut self, s: State, now: Instant) {
        self.state = s;
        self.step_at = now;
    }

    fn end(&mut self, o: Outcome, ev: &mut Vec<Event>) {
        if self.state != State::Over {
            self.state = State::Over;
            self.pending = None;
            self.pending_req = None;
            ev.push(Event::Ended(o));
        }
    }

    /// End the leg as failed from outside (the UE's re-registration failed).
    pub fn fail(&mut self, why: &'static str, ev: &mut Vec<Event>) {
        self.end(Outcome::Failed(why), ev);
    }

    /// Send `o` now and keep it for the retransmission timer; `req`: the request's method and
    /// CSeq number, whose final response stops it.
    fn send(&mut self, o: Out, req: Option<(Vec<u8>, u64)>, now: Instant, out: &mut Vec<Out>) {
        out.push(o.clone());
        self.pending = Some(o);
        self.pending_req = req;
        self.last_sent = now;
        self.resends = 0;
    }

    fn remember(&mut self, method: &[u8], num: u64, r: &[u8]) {
        if let Some(a) = self
            .answers
            .iter_mut()
            .find(|a| a.0 == method && a.1 == num)
        {
            a.2 = r.to_vec();
            return;
        }
        if self.answers.len() >= ANSWERS_KEPT {
            self.answers.remove(0);
        }
        self.answers.push((method.to_vec(), num, r.to_vec()));
    }

    /// A request of ours inside the dialog (RFC 3261 §12.2.1.1), with a new branch.
    fn request(&self, method: &str, num: u64, sdp: Option<&str>, extra: &str) -> Vec<u8> {
        let route = if self.route.is_empty() {
            String::new()
        } else {
            format!("Route: {}\r\n", self.route)
        };
        let rport = if self.me.rport { ";rport" } else { "" };
        let contact = if matches!(method, "INVITE" | "UPDATE") {
            format!("Contact: <{}>\r\n", self.me.contact)
        } else {
            String::new()
        };
        let (body_headers, body) = match sdp {
            Some(b) => (
                format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                    b.len()
                ),
                b,
            ),
            None => ("Content-Length: 0\r\n\r\n".to_string(), ""),
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{proto} {sent_by};branch=z9hG4bK{b}{m}{num}{rport}\r\nMax-Forwards: 70\r\n{route}From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {num} {method}\r\n{contact}{extra}{body_headers}{body}",
            target = self.target,
            proto = if self.me.tcp { "TCP" } else { "UDP" },
            sent_by = self.me.sent_by,
            b = self.me.branch,
            m = method.to_ascii_lowercase(),
            from = &self.local,
            to = &self.remote,
            cid = self.call_id,
        )
        .into_bytes()
    }

    /// CANCEL or the ACK of a non-2xx final response, built from the INVITE as sent: its
    /// Request-URI, top Via (the same branch), Route, From, Call-ID and CSeq number
    /// (RFC 3261 §9.1, §17.1.1.3); `to`: the INVITE's To, or the response's for the ACK.
    fn like_invite(&self, method: &str, to: &str) -> Option<Vec<u8>> {
        let m = Message::parse(&self.invite).ok()?;
        let v = m.view();
        let uri = std::str::from_utf8(v.request_uri()?).ok()?;
        let via = text(v, HeaderName::Via)?;
        let mut route = String::new();
        for r in v.headers(HeaderName::Route) {
            route.push_str(&format!(
                "Route: {}\r\n",
                std::str::from_utf8(v.bytes(r.value)).ok()?
            ));
        }
        Some(
            format!(
                "{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n{route}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nContent-Length: 0\r\n\r\n",
                self.local, self.call_id, self.invite_cseq
            )
            .into_bytes(),
        )
    }

    /// Callee: the 200 to the INVITE (its SDP answer), sent until the ACK.
    fn answer_invite(&mut self, now: Instant, out: &mut Vec<Out>) -> Option<()> {
        let m = Message::parse(&self.invite).ok()?;
        let r = respond(
            m.view(),
            200,
            "OK",
            &self.me.tag,
            &self.invite_extra,
            Some(&self.me.answer),
        )?;
        self.remember(b"INVITE", self.invite_cseq, &r);
        self.send(
            Out {
                request: false,
                bytes: r,
            },
            None,
            now,
            out,
        );
        self.goto(State::Answered, now);
        Some(())
    }

    fn answer_or_fail(&mut self, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        if self.answer_invite(now, out).is_none() {
            self.end(Outcome::Failed("200 build"), ev);
        }
    }

    /// Callee: 487 to the INVITE (RFC 3261 §9.2), sent until its ACK.
    fn reject_invite(&mut self, now: Instant, out: &mut Vec<Out>) -> Option<()> {
        let m = Message::parse(&self.invite).ok()?;
        let r = respond(m.view(), 487, "Request Terminated", &self.me.tag, "", None)?;
        self.remember(b"INVITE", self.invite_cseq, &r);
        self.send(
            Out {
                request: false,
                bytes: r,
            },
            None,
            now,
            out,
        );
        self.goto(State::Rejected, now);
        Some(())
    }

    /// The other side sends an UPDATE / re-INVITE in the confirmed dialog before the BYE.
    fn mid_from_other(&self) -> bool {
        match self.flow {
            Flow::Update | Flow::Reinvite => !self.acts,
            Flow::Rereg => !self.ue,
            _ => false,
        }
    }

    /// The dialog is confirmed (caller: ACK sent; callee: ACK received).
    fn confirmed(&mut self, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        self.pending = None;
        self.pending_req = None;
        self.goto(State::Up, now);
        if self.flow == Flow::Release {
            // the network (the core's side) releases the call; the UE waits for it
            if !self.ue {
                self.send_bye(now, out);
            }
        } else if self.flow == Flow::Dereg {
            // the UE de-registers; both sides wait for the P-CSCF's BYE
            if self.ue {
                self.goto(State::Deregistering, now);
                ev.push(Event::Deregister);
            }
        } else if self.flow == Flow::Rereg && self.ue {
            self.goto(State::Held, now);
            ev.push(Event::Reregister);
        } else if self.acts && matches!(self.flow, Flow::Update | Flow::Reinvite) {
            self.send_mid(now, out);
        } else if self.acts && !self.mid_from_other() {
            self.send_bye(now, out);
        }
    }

    /// The UE re-registered: its UPDATE, over the new SA set.
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Out>) {
        if self.state == State::Held {
            self.send_mid(now, out);
        }
    }

    fn send_mid(&mut self, now: Instant, out: &mut Vec<Out>) {
        self.cseq += 1;
        let method = if self.flow == Flow::Reinvite {
            "INVITE"
        } else {
            "UPDATE"
        };
        let r = self.request(method, self.cseq, Some(&self.me.offer.clone()), "");
        self.send(
            Out {
                request: true,
                bytes: r,
            },
            Some((method.as_bytes().to_vec(), self.cseq)),
            now,
            out,
        );
        self.goto(State::Mid, now);
    }

    fn send_bye(&mut self, now: Instant, out: &mut Vec<Out>) {
        self.cseq += 1;
        let r = self.request("BYE", self.cseq, None, "");
        self.send(
            Out {
                request: true,
                bytes: r,
            },
            Some((b"BYE".to_vec(), self.cseq)),
            now,
            out,
        );
        self.goto(State::Byeing, now);
    }

    /// Our UPDATE / re-INVITE was answered.
    fn mid_answered(&mut self, now: Instant, out: &mut Vec<Out>) {
        self.mid_done = true;
        self.pending = None;
        self.pending_req = None;
        if self.acts {
            self.send_bye(now, out);
        } else {
            self.goto(State::Up, now);
        }
    }

    /// Take the dialog's remote side from a response that creates or confirms it (RFC 3261
    /// §12.1.2: remote tag from To, target from Contact, route set the Record-Route reversed,
    /// without our own entry).
    fn dialog_from(&mut self, v: View<'_>) -> Result<(), &'static str> {
        let to = text(v, HeaderName::To).ok_or("response without To")?;
        if tag_of(&to).is_none() {
            return Err("response without a To tag");
        }
        let target = contact_uri(v).ok_or("response without Contact")?;
        let mut set = all(v, HeaderName::RecordRoute);
        set.reverse();
        if let Some(own) = &self.me.record_route {
            set.retain(|e| e != own);
        }
        if set.is_empty() {
            return Err("response without Record-Route");
        }
        self.remote = to;
        self.target = target;
        self.route = set.join(", ");
        Ok(())
    }

    /// A message of this call (the simulator matched the Call-ID).
    pub fn handle(&mut self, v: View<'_>, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        if v.status().is_some() {
            self.response(v, now, out, ev);
        } else {
            self.incoming(v, now, out, ev);
        }
    }

    fn response(&mut self, v: View<'_>, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        let (Some(status), Some((num, method))) = (v.status(), cseq_of(v)) else {
            return;
        };
        let since = now.duration_since(self.started);
        let final_for_pending = status >= 200
            && self
                .pending_req
                .as_ref()
                .is_some_and(|(m, n)| m == method && *n == num);
        if final_for_pending {
            self.pending = None;
            self.pending_req = None;
        }
        match method {
            b"INVITE" if self.caller && num == self.invite_cseq => {
                self.invite_response(v, status, since, now, out, ev)
            }
            b"INVITE" => {
                // our re-INVITE
                if (200..300).contains(&status) {
                    self.ack = self.request("ACK", num, None, "");
                    out.push(Out {
                        request: true,
                        bytes: self.ack.clone(),
                    });
                    if self.state == State::Mid && final_for_pending {
                        self.mid_answered(now, out);
                    }
                } else if status >= 300 && self.state == State::Mid {
                    self.end(Outcome::Failed("re-INVITE refused"), ev);
                } else if (100..200).contains(&status)
                    && self
                        .pending_req
                        .as_ref()
                        .is_some_and(|(m, n)| m == b"INVITE" && *n == num)
                {
                    // a provisional stops the retransmissions (RFC 3261 §17.1.1.2)
                    self.pending = None;
                }
            }
            b"PRACK" if self.state == State::Pracking && final_for_pending => {
                if status >= 300 {
                    self.end(Outcome::Failed("PRACK refused"), ev);
                } else if self.flow == Flow::Update {
                    self.cseq += 1;
                    let r = self.request("UPDATE", self.cseq, Some(&self.me.offer.clone()), "");
                    self.send(
                        Out {
                            request: true,
                            bytes: r,
                        },
                        Some((b"UPDATE".to_vec(), self.cseq)),
                        now,
                        out,
                    );
                    self.goto(State::EarlyUpdating, now);
                } else {
                    self.goto(State::Early, now);
                }
            }
            b"UPDATE" if final_for_pending => {
                if status >= 300 {
                    self.end(Outcome::Failed("UPDATE refused"), ev);
                } else if self.state == State::EarlyUpdating {
                    self.goto(State::Early, now);
                } else if self.state == State::Mid {
                    self.mid_answered(now, out);
                }
            }
            b"BYE" if self.state == State::Byeing && final_for_pending => {
                if status >= 300 {
                    self.end(Outcome::Failed("BYE refused"), ev);
                } else if self.flow == Flow::Release {
                    self.end(Outcome::Released, ev);
                } else {
                    self.end(Outcome::Ok, ev);
                }
            }
            b"CANCEL" if self.state == State::Cancelling && final_for_pending => {
                if status >= 300 {
                    self.end(Outcome::Failed("CANCEL refused"), ev);
                } else {
                    self.cancel_ok = true;
                    self.step_at = now;
                    if self.got_487 {
                        self.end(Outcome::Ok, ev);
                    }
                }
            }
            _ => {}
        }
    }

    fn invite_response(
        &mut self,
        v: View<'_>,
        status: u16,
        since: Duration,
        now: Instant,
        out: &mut Vec<Out>,
        ev: &mut Vec<Event>,
    ) {
        let early = matches!(
            self.state,
            State::Inviting
                | State::Proceeding
                | State::Pracking
                | State::EarlyUpdating
                | State::Early
        );
        match status {
            100..=199 => {
                if self.state == State::Inviting {
                    // a provisional stops the INVITE's retransmissions (RFC 3261 §17.1.1.2)
                    self.pending = None;
                    self.pending_req = None;
                    self.goto(State::Proceeding, now);
                }
                if status == 100 || self.state != State::Proceeding {
                    return;
                }
                if !self.rang {
                    self.rang = true;
                    ev.push(Event::Ringing(since));
                }
                if self.flow.reliable() {
                    // RFC 3262 §4: PRACK a reliable provisional response, with its RSeq
                    let reliable = requires_100rel(v);
                    let rseq = header_text(v, b"RSeq").and_then(|r| r.parse::<u32>().ok());
                    let Some(rseq) = rseq.filter(|_| reliable) else {
                        self.end(Outcome::Failed("180 not reliable (no 100rel / RSeq)"), ev);
                        return;
                    };
                    if let Err(why) = self.dialog_from(v) {
                        self.end(Outcome::Failed(why), ev);
                        return;
                    }
                    self.cseq += 1;
                    let rack = format!("RAck: {rseq} {} INVITE\r\n", self.invite_cseq);
                    let r = self.request("PRACK", self.cseq, None, &rack);
                    self.send(
                        Out {
                            request: true,
                            bytes: r,
                        },
                        Some((b"PRACK".to_vec(), self.cseq)),
                        now,
                        out,
                    );
                    self.goto(State::Pracking, now);
                } else if self.flow == Flow::Cancel {
                    let Some(c) = self.like_invite("CANCEL", &self.remote.clone()) else {
                        self.end(Outcome::Failed("CANCEL build"), ev);
                        return;
                    };
                    self.send(
                        Out {
                            request: true,
                            bytes: c,
                        },
                        Some((b"CANCEL".to_vec(), self.invite_cseq)),
                        now,
                        out,
                    );
                    self.goto(State::Cancelling, now);
                } else {
                    self.step_at = now;
                }
            }
            200..=299 => {
                if !early {
                    // a repeated 200: ACK it again (RFC 3261 §13.2.2.4)
                    if !self.ack.is_empty() && self.state != State::Over {
                        out.push(Out {
                            request: true,
                            bytes: self.ack.clone(),
                        });
                    }
                    return;
                }
                ev.push(Event::Answered(since));
                if let Err(why) = self.dialog_from(v) {
                    self.end(Outcome::Failed(why), ev);
                    return;
                }
                self.ack = self.request("ACK", self.invite_cseq, None, "");
                out.push(Out {
                    request: true,
                    bytes: self.ack.clone(),
                });
                self.confirmed(now, out, ev);
            }
            _ => {
                // the ACK of a non-2xx goes the INVITE's way (RFC 3261 §17.1.1.3), also
                // for a repeated one
                let to = text(v, HeaderName::To).unwrap_or_else(|| self.remote.clone());
                if let Some(ack) = self.like_invite("ACK", &to) {
                    out.push(Out {
                        request: true,
                        bytes: ack,
                    });
                }
                if self.state == State::Cancelling && status == 487 {
                    self.got_487 = true;
                    self.step_at = now;
                    if self.cancel_ok {
                        self.end(Outcome::Ok, ev);
                    }
                } else if early {
                    self.end(Outcome::Failed("INVITE refused"), ev);
                } else if self.state == State::Cancelling {
                    self.end(Outcome::Failed("INVITE refused (not 487) after CANCEL"), ev);
                }
            }
        }
    }

    /// A request of the other side (or of the network) in this call.
    fn incoming(&mut self, v: View<'_>, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        let Some(method) = v.method() else { return };
        let Some((num, _)) = cseq_of(v) else { return };
        if method == b"ACK" {
            match self.state {
                State::Answered if num == self.invite_cseq => self.confirmed(now, out, ev),
                State::Rejected if num == self.invite_cseq => self.end(Outcome::Ok, ev),
                _ => {}
            }
            return;
        }
        // a request answered before: the same answer, nothing else (RFC 3261 §17.2)
        if let Some(a) = self
            .answers
            .iter()
            .find(|a| a.0 == method && a.1 == num)
            .map(|a| a.2.clone())
        {
            // (the callee's CANCEL shares the INVITE's CSeq number, not its method)
            out.push(Out {
                request: false,
                bytes: a,
            });
            return;
        }
        if self.state == State::Answered && matches!(method, b"UPDATE" | b"INVITE") {
            // the caller's request in the confirmed dialog overtook its ACK (or the ACK was
            // lost): it has the 200, so the dialog is confirmed
            self.confirmed(now, out, ev);
        }
        let ok = |extra: &str, sdp: Option<&str>| respond(v, 200, "OK", &self.me.tag, extra, sdp);
        let contact = format!("Contact: <{}>\r\n", self.me.contact);
        let answer = match method {
            b"INVITE" | b"UPDATE" => ok(&contact, Some(&self.me.answer)),
            _ => ok("", None),
        };
        let Some(answer) = answer else { return };
        self.remember(method, num, &answer);
        out.push(Out {
            request: false,
            bytes: answer,
        });
        match method {
            b"PRACK" if self.state == State::Reliable => {
                self.pending = None;
                if self.flow == Flow::Update {
                    self.goto(State::EarlyWait, now);
                } else {
                    self.answer_or_fail(now, out, ev);
                }
            }
            b"UPDATE" if self.state == State::EarlyWait => self.answer_or_fail(now, out, ev),
            b"UPDATE" | b"INVITE" if self.state == State::Up => {
                self.mid_done = true;
                self.step_at = now;
                if self.acts {
                    self.send_bye(now, out);
                }
            }
            b"CANCEL" if matches!(self.state, State::RingingWait | State::Reliable) => {
                self.pending = None;
                if self.reject_invite(now, out).is_none() {
                    self.end(Outcome::Failed("487 build"), ev);
                }
            }
            b"BYE" => {
                let expected = !self.acts
                    && !self.flow.ends_released()
                    && (!self.mid_from_other() || self.mid_done);
                match self.state {
                    State::Up | State::Answered if expected => self.end(Outcome::Ok, ev),
                    // the other side answered our UPDATE / re-INVITE and hung up as planned, its
                    // BYE overtaking that answer (one over UDP, the other on a connection:
                    // nothing orders messages across transports, RFC 3261 §18)
                    State::Mid if expected => self.end(Outcome::Ok, ev),
                    State::Up
                    | State::Answered
                    | State::Held
                    | State::Deregistering
                    | State::Mid
                    | State::Byeing => self.end(Outcome::Released, ev),
                    State::Over => {}
                    _ => self.end(Outcome::Failed("BYE before the dialog was confirmed"), ev),
                }
            }
            _ => {}
        }
    }

    /// Retransmissions (0.5, 1, 2 s) and the step's timeout.
    pub fn timers(&mut self, now: Instant, out: &mut Vec<Out>, ev: &mut Vec<Event>) {
        if self.state == State::Over {
            return;
        }
        if let Some(p) = &self.pending
            && !(p.request && self.me.tcp)
            && self.resends < 3
            && now.duration_since(self.last_sent) > Duration::from_millis(500 << self.resends)
        {
            out.push(p.clone());
            self.resends += 1;
            self.last_sent = now;
        }
        if now.duration_since(self.step_at) <= self.me.timeout {
            return;
        }
        let why = match self.state {
            State::Inviting => "no answer to the INVITE",
            State::Proceeding if self.rang => "no 200 after the 180",
            State::Proceeding => "no 180 after the 100",
            State::Pracking => "no answer to the PRACK",
            State::EarlyUpdating => "no answer to the early UPDATE",
            State::Early => "no 200 after the PRACK",
            State::Cancelling if self.cancel_ok => "no 487 after the CANCEL",
            State::Cancelling => "no answer to the CANCEL",
            State::Reliable => "no PRACK to the reliable 180",
            State::EarlyWait => "no UPDATE in the early dialog",
            State::RingingWait => "no CANCEL after the 180",
            State::Answered => "no ACK to the 200",
            State::Rejected => "no ACK to the 487",
            State::Up if self.mid_from_other() && !self.mid_done => {
                if self.flow == Flow::Reinvite {
                    "no re-INVITE from the other side"
                } else {
                    "no UPDATE from the other side"
                }
            }
            State::Up if self.flow == Flow::Release => "no releasing BYE from the network",
            State::Up if self.flow == Flow::Dereg => "no BYE after de-registration",
            State::Deregistering => "no BYE after de-registration",
            State::Up => "no BYE from the other side",
            State::Held => "re-registration took too long",
            State::Mid if self.flow == Flow::Reinvite => "no answer to the re-INVITE",
            State::Mid => "no answer to the UPDATE",
            State::Byeing => "no answer to the BYE",
            State::Over => return,
        };
        self.end(Outcome::Failed(why), ev);
    }
}

/// Outcomes of calls, per flow, and failures by flow and reason.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub ok: BTreeMap<Flow, u64>,
    pub released: BTreeMap<Flow, u64>,
    pub failed: BTreeMap<(Flow, &'static str), u64>,
}

impl Tally {
    pub fn add(&mut self, flow: Flow, o: Outcome) {
        match o {
            Outcome::Ok => *self.ok.entry(flow).or_insert(0) += 1,
            Outcome::Released => *self.released.entry(flow).or_insert(0) += 1,
            Outcome::Failed(why) => *self.failed.entry((flow, why)).or_insert(0) += 1,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.values().sum()
    }

    pub fn released(&self) -> u64 {
        self.released.values().sum()
    }

    /// The calls released in the flows where the network releases them on purpose
    /// ([`Flow::ends_released`]): they completed as planned.
    pub fn released_as_planned(&self) -> u64 {
        self.released
            .iter()
            .filter(|(f, _)| f.ends_released())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn failed(&self) -> u64 {
        self.failed.values().sum()
    }

    /// One line per flow that ran: `<who> <flow>: N ok, N released, N failed`, then the
    /// failures by reason: `call failed (<who>) [<flow>]: <why>: N`.
    pub fn lines(&self, who: &str) -> Vec<String> {
        let mut out = Vec::new();
        for f in Flow::EVERY {
            let ok = self.ok.get(&f).copied().unwrap_or(0);
            let rel = self.released.get(&f).copied().unwrap_or(0);
            let failed: u64 = self
                .failed
                .iter()
                .filter(|((g, _), _)| *g == f)
                .map(|(_, n)| n)
                .sum();
            if ok + rel + failed > 0 {
                out.push(format!(
                    "{who} flow {}: {ok} ok, {rel} released, {failed} failed",
                    f.name()
                ));
            }
        }
        for ((f, why), n) in &self.failed {
            out.push(format!("call failed ({who}) [{}]: {why}: {n}", f.name()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    #[test]
    fn the_offer_is_about_900_bytes() {
        let n = sdp_offer("10.46.0.6".parse().unwrap(), 49152).len();
        assert!((850..1000).contains(&n), "{n}");
    }

    #[test]
    fn a_response_carries_its_body() {
        let req = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: call-7@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(req).unwrap();
        assert_eq!(call_index(m.view(), "call-", 8), Some(7));
        assert_eq!(call_index(m.view(), "call-", 7), None);
        assert_eq!(cseq_method(m.view()), Some(&b"INVITE"[..]));
        let body = sdp_answer("10.0.0.2".parse().unwrap(), 4000);
        let out = respond(
            m.view(),
            200,
            "OK",
            "t",
            "Contact: <sip:b@y>\r\n",
            Some(&body),
        )
        .unwrap();
        let r = Message::parse_strict(&out).unwrap();
        assert_eq!(r.view().status(), Some(200));
        assert_eq!(r.view().body(), body.as_bytes());
        assert_eq!(contact_uri(r.view()).as_deref(), Some("sip:b@y"));
        assert_eq!(
            text(r.view(), HeaderName::To).as_deref(),
            Some("<sip:b@x>;tag=t")
        );
    }
}

#[cfg(test)]
mod leg_tests {
    use super::*;
    use crate::sip::Message;

    fn local(name: &str, ue: bool) -> Local {
        Local {
            sent_by: format!("{name}.example:5060"),
            rport: ue,
            contact: format!("sip:{name}@{name}.example:5060"),
            branch: format!("{name}1"),
            tag: format!("{name}tag"),
            offer: "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n".into(),
            answer: "v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\n".into(),
            record_route: None,
            trying: !ue,
            timeout: Duration::from_secs(5),
            tcp: false,
        }
    }

    /// The caller's INVITE as the callee gets it: a proxy's Record-Route in it.
    const INVITE: &str = "INVITE sip:b@b.example SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKa1i\r\nMax-Forwards: 70\r\nRoute: <sip:proxy.example;lr>\r\nRecord-Route: <sip:proxy.example;lr;ftok=1>\r\nFrom: <sip:a@example>;tag=atag\r\nTo: <sip:b@example>\r\nCall-ID: call-1@a.example\r\nCSeq: 1 INVITE\r\nSupported: 100rel\r\nContact: <sip:a@a.example:5060>\r\nContent-Length: 0\r\n\r\n";

    struct Run {
        caller: Option<Outcome>,
        callee: Option<Outcome>,
        /// `A>B METHOD` / `B>A 200 PRACK` lines, in order.
        log: Vec<String>,
        reregistered: bool,
        /// Every message delivered, as sent.
        wire: Vec<Vec<u8>>,
    }

    fn line(dir: &str, m: &[u8]) -> String {
        let msg = Message::parse(m).expect("the legs write what they can read");
        let v = msg.view();
        let (n, meth) = cseq_of(v).unwrap();
        let meth = String::from_utf8_lossy(meth);
        match v.status() {
            Some(s) => format!("{dir} {s} {meth}"),
            None => format!("{dir} {} {n}", String::from_utf8_lossy(v.method().unwrap())),
        }
    }

    /// Caller and callee back to back; `drop(i)` loses the i-th message on the wire.
    fn run(flow: Flow, callee_acts: bool, lose: &dyn Fn(usize) -> bool) -> Run {
        run_with(flow, callee_acts, lose, true)
    }

    /// `ue_caller`: the caller is the UE (else the callee).
    fn run_with(
        flow: Flow,
        callee_acts: bool,
        lose: &dyn Fn(usize) -> bool,
        ue_caller: bool,
    ) -> Run {
        let t0 = Instant::now();
        let mut now = t0;
        let mut to_b = Vec::new();
        let mut a = Leg::caller(
            flow,
            !callee_acts,
            ue_caller,
            INVITE.as_bytes().to_vec(),
            local("a", true),
            now,
            &mut to_b,
        )
        .unwrap();
        let mut b: Option<Leg> = None;
        let mut r = Run {
            caller: None,
            callee: None,
            log: Vec::new(),
            reregistered: false,
            wire: Vec::new(),
        };
        let mut wire = 0usize;
        let mut to_a_later = Vec::new();
        let mut ev_late = Vec::new();
        for _ in 0..200 {
            let mut to_a = Vec::new();
            let mut ev_a = Vec::new();
            let mut ev_b = Vec::new();
            for o in std::mem::take(&mut to_b) {
                wire += 1;
                if lose(wire) {
                    continue;
                }
                r.log.push(line("A>B", &o.bytes));
                r.wire.push(o.bytes.clone());
                let m = Message::parse(&o.bytes).unwrap();
                match b.as_mut() {
                    Some(b) => b.handle(m.view(), now, &mut to_a, &mut ev_b),
                    None => {
                        b = Leg::callee(
                            flow,
                            callee_acts,
                            !ue_caller,
                            m.view(),
                            local("b", false),
                            now,
                            &mut to_a,
                        )
                    }
                }
            }
            for o in std::mem::take(&mut to_a) {
                wire += 1;
                if lose(wire) {
                    continue;
                }
                r.log.push(line("B>A", &o.bytes));
                r.wire.push(o.bytes.clone());
                let m = Message::parse(&o.bytes).unwrap();
                a.handle(m.view(), now, &mut to_b, &mut ev_a);
            }
            now += Duration::from_millis(100);
            a.timers(now, &mut to_b, &mut ev_a);
            if let Some(b) = b.as_mut() {
                b.timers(now, &mut to_a, &mut ev_b);
            }
            // the callee's retransmissions go out with the next round
            for o in to_a {
                let m = Message::parse(&o.bytes).unwrap();
                r.log.push(line("B>A", &o.bytes));
                r.wire.push(o.bytes.clone());
                a.handle(m.view(), now, &mut to_b, &mut ev_a);
            }
            for e in ev_a {
                match e {
                    Event::Reregister => {
                        r.reregistered = true;
                        a.resume(now, &mut to_b);
                    }
                    Event::Ended(o) => r.caller = Some(o),
                    _ => {}
                }
            }
            for e in ev_b {
                match e {
                    Event::Reregister => {
                        r.reregistered = true;
                        if let Some(b) = b.as_mut() {
                            b.resume(now, &mut to_a_later);
                        }
                    }
                    Event::Ended(o) => r.callee = Some(o),
                    _ => {}
                }
            }
            // the callee's UPDATE after its re-registration goes out with the next round
            for o in std::mem::take(&mut to_a_later) {
                let m = Message::parse(&o.bytes).unwrap();
                r.log.push(line("B>A", &o.bytes));
                r.wire.push(o.bytes.clone());
                a.handle(m.view(), now, &mut to_b, &mut ev_late);
            }
            for e in std::mem::take(&mut ev_late) {
                if let Event::Ended(o) = e {
                    r.caller = Some(o);
                }
            }
            if r.caller.is_some() && r.callee.is_some() && to_b.is_empty() {
                break;
            }
        }
        r
    }

    fn never(_: usize) -> bool {
        false
    }

    #[test]
    fn every_flow_completes_with_either_side_acting() {
        for flow in Flow::ALL {
            for callee_acts in [false, true] {
                let r = run(flow, callee_acts, &never);
                assert_eq!(
                    r.caller,
                    Some(Outcome::Ok),
                    "{flow:?} {callee_acts}: {:?}",
                    r.log
                );
                assert_eq!(
                    r.callee,
                    Some(Outcome::Ok),
                    "{flow:?} {callee_acts}: {:?}",
                    r.log
                );
                assert_eq!(r.reregistered, flow == Flow::Rereg, "{flow:?}");
                let has = |l: &str| r.log.iter().any(|x| x == l);
                let bye = if callee_acts { "B>A BYE" } else { "A>B BYE" };
                if flow != Flow::Cancel {
                    assert!(
                        r.log.iter().any(|l| l.starts_with(bye)),
                        "{flow:?}: {:?}",
                        r.log
                    );
                }
                match flow {
                    Flow::Basic => assert!(has("A>B ACK 1"), "{:?}", r.log),
                    Flow::Prack => {
                        assert!(has("A>B PRACK 2") && has("B>A 200 PRACK"), "{:?}", r.log)
                    }
                    Flow::Update => {
                        assert!(has("A>B UPDATE 3") && has("B>A 200 UPDATE"), "{:?}", r.log);
                        let mid = if callee_acts {
                            "B>A UPDATE 101"
                        } else {
                            "A>B UPDATE 4"
                        };
                        assert!(has(mid), "{:?}", r.log);
                    }
                    Flow::Reinvite => {
                        let (inv, ack) = if callee_acts {
                            ("B>A INVITE 101", "B>A ACK 101")
                        } else {
                            ("A>B INVITE 2", "A>B ACK 2")
                        };
                        assert!(has(inv) && has(ack), "{:?}", r.log);
                    }
                    Flow::Cancel => assert!(
                        has("A>B CANCEL 1")
                            && has("B>A 200 CANCEL")
                            && has("B>A 487 INVITE")
                            && has("A>B ACK 1")
                            && !r.log.iter().any(|l| l.contains("BYE")),
                        "{:?}",
                        r.log
                    ),
                    Flow::Rereg => assert!(has("A>B UPDATE 2"), "{:?}", r.log),
                    Flow::Release | Flow::Dereg => unreachable!("not in Flow::ALL"),
                }
            }
        }
    }

    /// The same flows with the UE as the callee: the re-registration and the release are the
    /// UE's and the core's whichever side calls.
    #[test]
    fn every_flow_completes_with_the_ue_as_callee() {
        for flow in Flow::ALL {
            for callee_acts in [false, true] {
                let r = run_with(flow, callee_acts, &never, false);
                assert_eq!(
                    r.caller,
                    Some(Outcome::Ok),
                    "{flow:?} {callee_acts}: {:?}",
                    r.log
                );
                assert_eq!(
                    r.callee,
                    Some(Outcome::Ok),
                    "{flow:?} {callee_acts}: {:?}",
                    r.log
                );
                assert_eq!(r.reregistered, flow == Flow::Rereg, "{flow:?}");
                if flow == Flow::Rereg {
                    assert!(r.log.iter().any(|l| l == "B>A UPDATE 101"), "{:?}", r.log);
                }
            }
        }
    }

    /// `release`: the core's side sends a BYE the UE does not expect once the call is up; both
    /// legs end released, whichever side calls, whoever the plan says acts.
    #[test]
    fn the_core_releases_the_call() {
        for ue_caller in [true, false] {
            for callee_acts in [false, true] {
                let r = run_with(Flow::Release, callee_acts, &never, ue_caller);
                assert_eq!(r.caller, Some(Outcome::Released), "{:?}", r.log);
                assert_eq!(r.callee, Some(Outcome::Released), "{:?}", r.log);
                let bye = if ue_caller { "B>A BYE" } else { "A>B BYE" };
                assert_eq!(
                    r.log.iter().filter(|l| l.contains("BYE")).count(),
                    2,
                    "one BYE and its 200: {:?}",
                    r.log
                );
                assert!(r.log.iter().any(|l| l.starts_with(bye)), "{:?}", r.log);
            }
        }
    }

    /// Caller and callee of one call back to back until neither has more to say (bounded);
    /// returns each side's events.
    fn converse(a: &mut Leg, b: &mut Leg, mut to_b: Vec<Out>, now: Instant) -> [Vec<Event>; 2] {
        let mut evs = [Vec::new(), Vec::new()];
        for _ in 0..20 {
            let mut to_a = Vec::new();
            for o in std::mem::take(&mut to_b) {
                let m = Message::parse(&o.bytes).unwrap();
                b.handle(m.view(), now, &mut to_a, &mut evs[1]);
            }
            for o in &to_a {
                let m = Message::parse(&o.bytes).unwrap();
                a.handle(m.view(), now, &mut to_b, &mut evs[0]);
            }
            if to_b.is_empty() {
                break;
            }
        }
        evs
    }

    /// A call of `flow` to the callee's first answers: the caller (the UE's leg when
    /// `ue_caller`) sends its INVITE, the callee takes it and answers, the caller takes those.
    /// Returns both legs, what the caller sent back and the caller's events.
    fn dial(
        flow: Flow,
        caller_acts: bool,
        callee_acts: bool,
        ue_caller: bool,
        now: Instant,
    ) -> (Leg, Leg, Vec<Out>, Vec<Event>) {
        let mut to_b = Vec::new();
        let mut a = Leg::caller(
            flow,
            caller_acts,
            ue_caller,
            INVITE.as_bytes().to_vec(),
            local("a", ue_caller),
            now,
            &mut to_b,
        )
        .unwrap();
        let m = Message::parse(&to_b[0].bytes).unwrap();
        let mut to_a = Vec::new();
        let b = Leg::callee(
            flow,
            callee_acts,
            !ue_caller,
            m.view(),
            local("b", !ue_caller),
            now,
            &mut to_a,
        )
        .unwrap();
        let (mut back, mut ev) = (Vec::new(), Vec::new());
        for o in &to_a {
            let m = Message::parse(&o.bytes).unwrap();
            a.handle(m.view(), now, &mut back, &mut ev);
        }
        (a, b, back, ev)
    }

    /// `dereg`: once the call is up the UE's leg asks its simulator to de-register and both
    /// legs wait for the network's BYE (the P-CSCF's, TS 24.229 §5.2.8), whichever side calls
    /// and whoever the plan says acts; each answers it 200 and ends released. Without it, each
    /// fails with its reason.
    #[test]
    fn the_ue_deregisters_and_the_network_releases_the_call() {
        for ue_caller in [true, false] {
            for callee_acts in [false, true] {
                let now = Instant::now();
                let (mut a, mut b, first, first_ev) =
                    dial(Flow::Dereg, !callee_acts, callee_acts, ue_caller, now);
                let [mut ev_a, ev_b] = converse(&mut a, &mut b, first, now);
                ev_a.splice(0..0, first_ev);
                let (ue_ev, core_ev) = if ue_caller {
                    (&ev_a, &ev_b)
                } else {
                    (&ev_b, &ev_a)
                };
                assert_eq!(
                    ue_ev.iter().filter(|e| **e == Event::Deregister).count(),
                    1,
                    "{ue_ev:?}"
                );
                assert!(!core_ev.contains(&Event::Deregister), "{core_ev:?}");
                assert!(
                    !ue_ev
                        .iter()
                        .chain(core_ev)
                        .any(|e| matches!(e, Event::Ended(_))),
                    "{ev_a:?} {ev_b:?}"
                );
                let (ue_leg, core_leg) = if ue_caller { (&a, &b) } else { (&b, &a) };
                assert_eq!(ue_leg.state, State::Deregistering);
                assert_eq!(core_leg.state, State::Up, "nobody hangs up");
                // the P-CSCF's BYEs: toward each end on the other's behalf
                let bye_to_a = b.request("BYE", 500, None, "Reason: SIP;cause=480\r\n");
                let bye_to_b = a.request("BYE", 900, None, "Reason: SIP;cause=480\r\n");
                for (leg, bye) in [(&mut a, bye_to_a), (&mut b, bye_to_b)] {
                    let m = Message::parse(&bye).unwrap();
                    let (mut out, mut ev) = (Vec::new(), Vec::new());
                    leg.handle(m.view(), now, &mut out, &mut ev);
                    assert_eq!(ev, vec![Event::Ended(Outcome::Released)]);
                    assert_eq!(out.len(), 1);
                    let ok = Message::parse(&out[0].bytes).unwrap();
                    assert_eq!(ok.view().status(), Some(200));
                    assert!(!out[0].request);
                }
                // no BYE: both fail, saying why
                let (mut a, mut b, first, _) = dial(Flow::Dereg, true, false, ue_caller, now);
                converse(&mut a, &mut b, first, now);
                let later = now + Duration::from_secs(6);
                for leg in [&mut a, &mut b] {
                    let (mut out, mut ev) = (Vec::new(), Vec::new());
                    leg.timers(later, &mut out, &mut ev);
                    assert_eq!(
                        ev,
                        vec![Event::Ended(Outcome::Failed(
                            "no BYE after de-registration"
                        ))]
                    );
                }
            }
        }
    }

    #[test]
    fn the_prack_the_ack_and_the_cancel_of_the_caller() {
        let mut out = Vec::new();
        let now = Instant::now();
        let mut a = Leg::caller(
            Flow::Prack,
            true,
            true,
            INVITE.as_bytes().to_vec(),
            local("a", true),
            now,
            &mut out,
        )
        .unwrap();
        let inv = Message::parse(INVITE.as_bytes()).unwrap();
        let extra = "Record-Route: <sip:core;lr>\r\nRecord-Route: <sip:proxy.example;lr;ftok=1>\r\nContact: <sip:b@b.example>\r\nRequire: 100rel\r\nRSeq: 7\r\n";
        let r180 = respond(inv.view(), 180, "Ringing", "bt", extra, None).unwrap();
        let m = Message::parse(&r180).unwrap();
        let mut ev = Vec::new();
        out.clear();
        a.handle(m.view(), now, &mut out, &mut ev);
        assert_eq!(ev, vec![Event::Ringing(Duration::ZERO)]);
        let prack = String::from_utf8(out[0].bytes.clone()).unwrap();
        // RFC 3262 §7.2: RAck = RSeq, CSeq number, method; the early dialog's route set is
        // the Record-Route reversed (RFC 3261 §12.1.2), the remote target its Contact
        assert!(
            prack.starts_with("PRACK sip:b@b.example SIP/2.0\r\n"),
            "{prack}"
        );
        assert!(prack.contains("\r\nRAck: 7 1 INVITE\r\n"), "{prack}");
        assert!(
            prack.contains("\r\nRoute: <sip:proxy.example;lr;ftok=1>, <sip:core;lr>\r\n"),
            "{prack}"
        );
        assert!(
            prack.contains("\r\nTo: <sip:b@example>;tag=bt\r\n"),
            "{prack}"
        );
        assert!(prack.contains("\r\nCSeq: 2 PRACK\r\n"), "{prack}");

        // CANCEL and the ACK of the 487: the INVITE's Request-URI, Via, Route (RFC 3261 §9.1)
        let mut out = Vec::new();
        let mut c = Leg::caller(
            Flow::Cancel,
            false,
            true,
            INVITE.as_bytes().to_vec(),
            local("a", true),
            now,
            &mut out,
        )
        .unwrap();
        let r180 = respond(
            inv.view(),
            180,
            "Ringing",
            "bt",
            "Contact: <sip:b@b>\r\n",
            None,
        )
        .unwrap();
        let m = Message::parse(&r180).unwrap();
        out.clear();
        c.handle(m.view(), now, &mut out, &mut ev);
        let cancel = String::from_utf8(out[0].bytes.clone()).unwrap();
        assert!(cancel.starts_with("CANCEL sip:b@b.example SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKa1i\r\n"), "{cancel}");
        assert!(
            cancel.contains("\r\nRoute: <sip:proxy.example;lr>\r\n"),
            "{cancel}"
        );
        assert!(cancel.contains("\r\nTo: <sip:b@example>\r\n"), "{cancel}");
        assert!(cancel.contains("\r\nCSeq: 1 CANCEL\r\n"), "{cancel}");
        let r487 = respond(inv.view(), 487, "Request Terminated", "bt", "", None).unwrap();
        let m = Message::parse(&r487).unwrap();
        out.clear();
        c.handle(m.view(), now, &mut out, &mut ev);
        let ack = String::from_utf8(out[0].bytes.clone()).unwrap();
        assert!(ack.starts_with("ACK sip:b@b.example SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060;branch=z9hG4bKa1i\r\n"), "{ack}");
        assert!(ack.contains("\r\nTo: <sip:b@example>;tag=bt\r\n"), "{ack}");
        assert!(ack.contains("\r\nCSeq: 1 ACK\r\n"), "{ack}");
        assert!(
            c.state == State::Cancelling,
            "the CANCEL's 200 still to come"
        );
    }

    #[test]
    fn lost_messages_are_sent_again() {
        for flow in Flow::ALL {
            for lost in 1..12 {
                let r = run(flow, lost % 2 == 0, &|i| i == lost);
                assert_eq!(
                    r.caller,
                    Some(Outcome::Ok),
                    "{flow:?} lost #{lost}: {:?}",
                    r.log
                );
                assert_eq!(
                    r.callee,
                    Some(Outcome::Ok),
                    "{flow:?} lost #{lost}: {:?}",
                    r.log
                );
            }
        }
    }

    /// Over TCP a UE's request is never sent again on a timer (RFC 3261 §17.1.1.2: timer A only
    /// for unreliable transports), its Via says TCP, and timer B (the step's timeout) still
    /// ends the call; over UDP the INVITE goes again at 0.5 s.
    #[test]
    fn over_tcp_the_ue_does_not_send_its_request_again() {
        let t0 = Instant::now();
        for tcp in [false, true] {
            let mut me = local("a", true);
            me.tcp = tcp;
            let mut out = Vec::new();
            let mut a = Leg::caller(
                Flow::Basic,
                true,
                true,
                INVITE.as_bytes().to_vec(),
                me,
                t0,
                &mut out,
            )
            .unwrap();
            assert_eq!(out.len(), 1);
            out.clear();
            let mut ev = Vec::new();
            for ms in [600, 1700, 3800] {
                a.timers(t0 + Duration::from_millis(ms), &mut out, &mut ev);
            }
            assert_eq!(out.len(), if tcp { 0 } else { 3 }, "tcp {tcp}");
            assert!(ev.is_empty());
            // its own requests name the transport (the INVITE is the simulator's)
            let bye = a.request("BYE", 2, None, "");
            let via = if tcp { "SIP/2.0/TCP" } else { "SIP/2.0/UDP" };
            assert!(
                String::from_utf8_lossy(&bye).contains(&format!("Via: {via} a.example:5060;")),
                "{}",
                String::from_utf8_lossy(&bye)
            );
            a.timers(t0 + Duration::from_secs(6), &mut out, &mut ev);
            assert_eq!(
                ev,
                vec![Event::Ended(Outcome::Failed("no answer to the INVITE"))],
                "tcp {tcp}"
            );
        }
    }

    /// Over TCP the UE's answers (over UDP, SA4) are still sent again until their ACK: the
    /// 200 to an INVITE (RFC 3261 §13.3.1.4).
    #[test]
    fn over_tcp_the_ue_still_sends_its_200_again() {
        let t0 = Instant::now();
        let mut me = local("b", true);
        me.tcp = true;
        me.trying = false;
        let inv = Message::parse(INVITE.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut b = Leg::callee(Flow::Basic, false, true, inv.view(), me, t0, &mut out).unwrap();
        let mut ev = Vec::new();
        let sent = out.len();
        assert!(
            out.iter()
                .any(|o| !o.request && o.bytes.starts_with(b"SIP/2.0 200")),
            "{out:?}"
        );
        b.timers(t0 + Duration::from_millis(600), &mut out, &mut ev);
        assert_eq!(out.len(), sent + 1);
        assert!(out[sent].bytes.starts_with(b"SIP/2.0 200"));
    }

    /// A BYE the plan did not expect for a confirmed call (the network releasing it, TS 24.229
    /// §5.2.8) is answered 200 and counted as released, on either side, in any confirmed step.
    #[test]
    fn an_unexpected_bye_releases_the_call() {
        let now = Instant::now();
        // the caller waits for the callee's re-INVITE; the callee for the caller's ACK
        let (mut a, mut b, _, ev) = dial(Flow::Reinvite, false, true, true, now);
        // the ACK is kept from the callee, so it waits
        assert_eq!(a.state, State::Up, "{ev:?}");
        assert_eq!(b.state, State::Answered);
        // the network's BYE toward the caller: as the callee would build it
        let bye = b.request("BYE", 500, None, "");
        let m = Message::parse(&bye).unwrap();
        let mut out = Vec::new();
        let mut ev = Vec::new();
        a.handle(m.view(), now, &mut out, &mut ev);
        assert_eq!(ev, vec![Event::Ended(Outcome::Released)]);
        let ok = Message::parse(&out[0].bytes).unwrap();
        assert_eq!(ok.view().status(), Some(200));
        // repeated: the same 200, nothing counted twice
        out.clear();
        ev.clear();
        a.handle(m.view(), now, &mut out, &mut ev);
        assert!(ev.is_empty());
        assert_eq!(out.len(), 1);
        // and toward the callee, still waiting for its ACK (it would have hung up itself)
        let bye = a.request("BYE", 900, None, "");
        let m = Message::parse(&bye).unwrap();
        let mut ev = Vec::new();
        out.clear();
        b.handle(m.view(), now, &mut out, &mut ev);
        assert_eq!(ev, vec![Event::Ended(Outcome::Released)]);
        // in the middle of the callee's UPDATE
        let mut to_a = Vec::new();
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let mut c = Leg::callee(
            Flow::Update,
            true,
            false,
            m.view(),
            local("c", false),
            now,
            &mut to_a,
        )
        .unwrap();
        assert_eq!(c.state, State::Reliable);
        let mut ev = Vec::new();
        c.goto(State::Mid, now);
        let bye = "BYE sip:c@c.example:5060 SIP/2.0\r\nVia: SIP/2.0/UDP p:5060;branch=z9hG4bKrel\r\nFrom: <sip:a@example>;tag=atag\r\nTo: <sip:b@example>;tag=ctag\r\nCall-ID: call-1@a.example\r\nCSeq: 77 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(bye.as_bytes()).unwrap();
        c.handle(m.view(), now, &mut out, &mut ev);
        assert_eq!(ev, vec![Event::Ended(Outcome::Released)]);
    }

    /// The far end answers the UE's mid-call UPDATE and hangs up as planned, but its BYE (a
    /// datagram) overtakes the 200 (on a connection): the call still ends as planned, not as
    /// released by the network (nothing orders messages across transports, RFC 3261 §18).
    #[test]
    fn a_planned_bye_that_overtakes_the_answer_to_our_update_ends_the_call_ok() {
        let now = Instant::now();
        let mut to_a = Vec::new();
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        // the called UE re-registers and sends the UPDATE; the far end hangs up after
        let mut c = Leg::callee(
            Flow::Rereg,
            false,
            true,
            m.view(),
            local("c", false),
            now,
            &mut to_a,
        )
        .unwrap();
        c.goto(State::Mid, now);
        let bye = "BYE sip:c@c.example:5060 SIP/2.0\r\nVia: SIP/2.0/UDP p:5060;branch=z9hG4bKrel\r\nFrom: <sip:a@example>;tag=atag\r\nTo: <sip:b@example>;tag=ctag\r\nCall-ID: call-1@a.example\r\nCSeq: 77 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(bye.as_bytes()).unwrap();
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        c.handle(m.view(), now, &mut out, &mut ev);
        assert_eq!(ev, vec![Event::Ended(Outcome::Ok)]);
        assert!(out[0].bytes.starts_with(b"SIP/2.0 200"), "{out:?}");
    }

    #[test]
    fn garbage_from_the_network_changes_nothing() {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut a = Leg::caller(
            Flow::Prack,
            false,
            true,
            INVITE.as_bytes().to_vec(),
            local("a", true),
            now,
            &mut out,
        )
        .unwrap();
        let bad: [&[u8]; 6] = [
            b"SIP/2.0 180 Ringing\r\nCall-ID: call-1@a.example\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 180 Ringing\r\nCSeq: x INVITE\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\nRequire: 100rel\r\nRSeq: 99999999999\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nTo: <sip:b@x>\r\nContent-Length: 0\r\n\r\n",
            b"BYE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n",
            b"ACK sip:x SIP/2.0\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        ];
        let mut ev = Vec::new();
        for (i, b) in bad.iter().enumerate() {
            let m = Message::parse(b).unwrap();
            out.clear();
            a.handle(m.view(), now, &mut out, &mut ev);
            if i < 2 {
                assert!(out.is_empty() && ev.is_empty(), "#{i}: {out:?} {ev:?}");
            }
        }
        // the unreliable / broken 180 and the 200 without a tag fail the call, nothing panics
        assert!(a.is_over());
        // a callee refuses to start from what is no INVITE
        for b in bad {
            let m = Message::parse(b).unwrap();
            assert!(
                Leg::callee(
                    Flow::Basic,
                    false,
                    true,
                    m.view(),
                    local("b", true),
                    now,
                    &mut out
                )
                .is_none()
            );
        }
    }

    /// Every message of every flow, cut short and with bytes changed, fed to legs in each of
    /// their steps: nothing panics (what they read comes from the network).
    #[test]
    fn mangled_messages_do_not_panic_a_leg() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let now = Instant::now();
        let mut fed = 0;
        for flow in Flow::ALL {
            let r = run(flow, false, &never);
            // legs part-way: a caller after its INVITE, a callee after the INVITE
            let inv = Message::parse(INVITE.as_bytes()).unwrap();
            for m in &r.wire {
                for round in 0..200 {
                    let mut b = m.clone();
                    if round % 2 == 0 {
                        b.truncate(next() as usize % (b.len() + 1));
                    } else {
                        for _ in 0..(1 + next() % 4) {
                            let at = next() as usize % b.len().max(1);
                            if let Some(x) = b.get_mut(at) {
                                *x = (next() % 256) as u8;
                            }
                        }
                    }
                    let Ok(msg) = Message::parse(&b) else {
                        continue;
                    };
                    fed += 1;
                    let (mut out, mut ev) = (Vec::new(), Vec::new());
                    let mut a = Leg::caller(
                        flow,
                        round % 3 == 0,
                        true,
                        INVITE.as_bytes().to_vec(),
                        local("a", true),
                        now,
                        &mut out,
                    )
                    .unwrap();
                    let mut b = Leg::callee(
                        flow,
                        round % 3 == 1,
                        false,
                        inv.view(),
                        local("b", false),
                        now,
                        &mut out,
                    )
                    .unwrap();
                    for st in [
                        State::Inviting,
                        State::Up,
                        State::Mid,
                        State::Byeing,
                        State::Cancelling,
                    ] {
                        a.state = st;
                        a.handle(msg.view(), now, &mut out, &mut ev);
                        b.state = st;
                        b.handle(msg.view(), now, &mut out, &mut ev);
                        a.timers(now + Duration::from_secs(9), &mut out, &mut ev);
                    }
                    let _ = Leg::callee(
                        flow,
                        false,
                        true,
                        msg.view(),
                        local("c", true),
                        now,
                        &mut out,
                    );
                }
            }
        }
        assert!(fed > 1000, "only {fed} mangled messages parsed");
    }

    #[test]
    fn the_plan_names_and_spreads_the_flows() {
        let p = CallPlan::parse("basic, prack,update,reinvite,cancel,rereg").unwrap();
        assert_eq!(p.flows, Flow::ALL.to_vec());
        assert_eq!(CallPlan::parse("all").unwrap(), p);
        assert!(CallPlan::parse("basic,nope").is_err());
        assert!(CallPlan::parse("").is_err());
        // release and dereg run only when named; dereg gives each call a UE of its own
        assert!(!p.flows.contains(&Flow::Release) && !p.flows.contains(&Flow::Dereg));
        assert!(!p.own_ues() && p.check_own_ues(40, 8).is_ok());
        let d = CallPlan::parse("dereg").unwrap();
        assert_eq!(d.flows, vec![Flow::Dereg]);
        assert!(d.own_ues() && CallPlan::parse("basic,dereg").unwrap().own_ues());
        assert!(d.check_own_ues(8, 8).is_ok());
        assert!(d.check_own_ues(9, 8).unwrap_err().contains("9 calls"));
        // each flow with either side acting within 2 rounds
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..12 {
            seen.insert((p.flow(k), p.callee_acts(k)));
        }
        assert_eq!(seen.len(), 12);
        // the basic plan is the one the lab always had: the callee hangs up odd calls
        assert!(!callee_hangs_up(0) && callee_hangs_up(1) && !callee_hangs_up(2));
    }
}
