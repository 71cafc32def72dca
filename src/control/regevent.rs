//! The P-CSCF's subscriptions to the reg event package (TS 24.229 §5.2.3, RFC 3680, RFC 6665):
//! one per registration, made after the 200 to its first registration, kept refreshed, removed
//! when the UE de-registers, and the NOTIFYs of each, checked and parsed
//! ([`crate::sip::reginfo`]) for the registrar to act on.
//!
//! Owns: the subscription dialogs (Call-ID, tags, remote target, CSeq, the reginfo version
//! seen), their SUBSCRIBE transactions (retransmitted over UDP, RFC 3261 §17.1.2.2), refresh
//! and retry deadlines. It never touches the SA table nor a registration: a NOTIFY it accepts
//! comes back to the registrar as a [`Notified`] (what the network says of the binding's
//! identities), and the registrar decides what ends. Sans-IO: messages and `now` in,
//! [`crate::control::registrar::Outgoing`] messages out; bounded by the registrations (one subscription per binding).
//!
//! What a SUBSCRIBE carries (TS 24.229 §5.2.3): Request-URI and To the default public user
//! identity; From the P-CSCF's SIP URI; `Event: reg`; `Accept: application/reginfo+xml`;
//! Expires larger than the registration's ([`EXTRA_EXPIRES`] more); P-Asserted-Identity the
//! URI we put in Path; P-Charging-Vector with a fresh icid; Contact our core-side address (the
//! NOTIFYs' target). It goes to the UE's S-CSCF by its Service-Route (the Route, and the next
//! hop the workers use for the UE's requests). Our Via carries a branch of the subscription
//! format ([`SUBSCRIBE_BRANCH`]): the workers hand its responses here.
//!
//! Later SUBSCRIBEs of the dialog (refresh, removal) take the remote target (the 2xx's
//! Contact) as Request-URI and the 2xx's Record-Route, reversed, as Route (RFC 3261
//! §12.1.2); with no Record-Route they keep the Service-Route, so they reach the S-CSCF the
//! same way the first did.

use super::idmap::IdMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::dataplane::{Datagram, Protection};
use crate::io::Side;
use crate::sip::headers::{NameAddr, Via};
use crate::sip::reginfo::{self, RegInfo, VersionError, Versions};
// a SUBSCRIBE over UDP is sent again after T1, 2·T1, … at most T2 apart, until Timer F
use crate::sip::{HeaderName, Message, T1, T2, TIMER_F, View};

use crate::sip::rules::SUBSCRIBE_BRANCH;
/// A subscription asks for this much longer than the registration it watches (TS 24.229
/// §5.2.3: "higher than the registration expiration interval").
pub const EXTRA_EXPIRES: u32 = 600;
/// A failed subscription is tried again after this, doubled per failure up to [`RETRY_MAX`]
/// (the S-CSCF may be restarting: no storm of SUBSCRIBEs at it).
pub const RETRY_MIN: Duration = Duration::from_secs(30);
pub const RETRY_MAX: Duration = Duration::from_secs(1800);
/// A subscription is refreshed at most this often, whatever the notifier grants (a 2xx or a
/// NOTIFY saying 0 or 1 s must not make a SUBSCRIBE storm of every UE's subscription).
pub const MIN_REFRESH: Duration = Duration::from_secs(30);

/// Counters of the subscriptions and their NOTIFYs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegEventStats {
    /// SUBSCRIBE requests sent (new, refresh, removal; not counting retransmissions).
    pub subscribes: u64,
    /// Of those, answered 2xx.
    pub subscribed: u64,
    /// Answered with an error or never answered (Timer F): tried again later.
    pub subscribe_failed: u64,
    /// Subscriptions removed with Expires: 0 (the UE de-registered).
    pub unsubscribed: u64,
    /// NOTIFYs that came to us.
    pub notifies: u64,
    /// NOTIFYs whose document was applied.
    pub notifies_applied: u64,
    /// NOTIFYs for no subscription of ours (481).
    pub notify_unknown: u64,
    /// NOTIFYs from another address than the subscription's peer (403).
    pub notify_foreign: u64,
    /// NOTIFYs with a body we refuse: not reginfo, malformed, too large (400 / 415).
    pub notify_bad_body: u64,
    /// Documents older than one seen, or after a gap (RFC 3680 §5.2: discarded; a gap makes us
    /// subscribe again for full state).
    pub notify_out_of_order: u64,
    /// Identities the network terminated for a UE, and registrations it ended entirely.
    pub impus_terminated: u64,
    pub network_deregistrations: u64,
}

impl RegEventStats {
    /// Every counter with its name (Prometheus labels, the exit report). The destructuring
    /// names each field, so a counter added to the struct and not here does not compile.
    pub fn named(&self) -> [(&'static str, u64); 12] {
        let RegEventStats {
            subscribes,
            subscribed,
            subscribe_failed,
            unsubscribed,
            notifies,
            notifies_applied,
            notify_unknown,
            notify_foreign,
            notify_bad_body,
            notify_out_of_order,
            impus_terminated,
            network_deregistrations,
        } = *self;
        [
            ("subscribes", subscribes),
            ("subscribed", subscribed),
            ("subscribe_failed", subscribe_failed),
            ("unsubscribed", unsubscribed),
            ("notifies", notifies),
            ("notifies_applied", notifies_applied),
            ("notify_unknown", notify_unknown),
            ("notify_foreign", notify_foreign),
            ("notify_bad_body", notify_bad_body),
            ("notify_out_of_order", notify_out_of_order),
            ("impus_terminated", impus_terminated),
            ("network_deregistrations", network_deregistrations),
        ]
    }
}

/// What the subscriptions need from the configuration.
#[derive(Clone, Debug)]
pub struct RegEventConfig {
    /// Our core-side address: the source of SUBSCRIBEs and the Contact NOTIFYs come to.
    pub core: SocketAddr,
    /// Our Via sent-by toward the core.
    pub via_sent_by: String,
    /// The P-CSCF's SIP URI (From).
    pub from_uri: String,
    /// The URI we put in Path (P-Asserted-Identity, TS 24.229 §5.2.3).
    pub path_uri: String,
    /// Our network's orig-ioi (P-Charging-Vector, TS 24.229 §5.2.3).
    pub orig_ioi: String,
}

/// What to subscribe to, and how to reach the S-CSCF: from the registration.
#[derive(Clone, Debug)]
pub struct Target {
    pub binding: u64,
    /// The default public user identity (bare URI).
    pub impu: Vec<u8>,
    /// The Service-Route, as a Route value (`<uri>, <uri>`).
    pub route: Vec<u8>,
    pub next_hop: SocketAddr,
    pub tcp: bool,
    /// The registration's expiry (seconds) in its 200.
    pub expires: u32,
}

/// What a NOTIFY of `binding`'s subscription brought, for the registrar: its document when
/// accepted in order, and whether it ended the subscription.
#[derive(Debug)]
pub struct Notified {
    pub binding: u64,
    pub doc: Option<RegInfo>,
    /// `Some`: its Subscription-State was terminated, and whether a new subscription may be
    /// made at once (RFC 6665 §4.1.3). The registrar then calls [`RegEvent::resubscribe`] (the
    /// registration lives on) or [`RegEvent::end`].
    pub ended: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// SUBSCRIBE sent, no 2xx yet.
    Pending,
    Active,
    /// Expires: 0 sent; forgotten on its answer.
    Removing,
    /// Waiting to try again ([`Sub::retry_at`]).
    Failed,
    /// The notifier ended it; the registrar decides what follows.
    Ended,
}

/// A SUBSCRIBE transaction in progress.
#[derive(Debug)]
struct InFlight {
    branch: u64,
    payload: Vec<u8>,
    started: Instant,
    /// Next retransmission (UDP only) and the interval after it.
    resend_at: Option<Instant>,
    interval: Duration,
}

#[derive(Debug)]
struct Sub {
    target: Target,
    call_id: Vec<u8>,
    our_tag: String,
    their_tag: Option<Vec<u8>>,
    remote_target: Option<Vec<u8>>,
    /// The 2xx's Record-Route, reversed, as a Route value (empty: none).
    route_set: Vec<u8>,
    cseq: u32,
    state: State,
    in_flight: Option<InFlight>,
    refresh_at: Option<Instant>,
    retry_at: Option<Instant>,
    failures: u32,
    /// New subscriptions made at once (a gap in the versions, the notifier's
    /// `deactivated` / `timeout`) since a document was last applied: past one they wait the
    /// failure back-off, so a notifier that keeps asking cannot make a SUBSCRIBE storm.
    quick: u32,
    versions: Versions,
}

impl Sub {
    /// The earliest deadline it has.
    fn deadline(&self) -> Option<Instant> {
        let f = self.in_flight.as_ref();
        [
            f.and_then(|f| f.resend_at),
            f.map(|f| f.started + TIMER_F),
            self.refresh_at,
            self.retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// The subscriptions of all registrations.
pub struct RegEvent {
    cfg: RegEventConfig,
    subs: IdMap<Sub>,
    by_call_id: HashMap<Vec<u8>, u64>,
    by_branch: IdMap<u64>,
    /// Deadlines by binding (lazy deletion: one that comes due checks the subscription's own).
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    seq: u64,
    /// Keys [`RegEvent::unique`]: our Call-IDs, tags and branches cannot be told from one seen.
    key: std::collections::hash_map::RandomState,
    pub stats: RegEventStats,
}

impl std::fmt::Debug for RegEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegEvent")
            .field("subscriptions", &self.subs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The refresh point of a subscription granted for `secs` (TS 24.229 §5.2.3 [spec-m], as for
/// a UE's registration: 600 s before expiry when longer than 1200 s, else at half).
fn refresh_after(secs: u32) -> Duration {
    let s = u64::from(secs);
    Duration::from_secs(if s > 1200 { s - 600 } else { s / 2 }).max(MIN_REFRESH)
}

/// A header parameter's value (`;name=value`), case-insensitive name.
fn param<'a>(value: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    value.split(|&c| c == b';').skip(1).find_map(|p| {
        let p = p.trim_ascii();
        let (n, v) = match p.iter().position(|&c| c == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        };
        n.trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim_ascii())
    })
}

/// The `reason` parameter of a Subscription-State value.
fn param_reason(state: &[u8]) -> Option<&[u8]> {
    param(state, b"reason")
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// The IP address a URI names, when it is an IP literal.
fn uri_ip(uri: &[u8]) -> Option<IpAddr> {
    let hp = crate::sip::headers::uri_hostport(uri);
    let (host, _) = crate::sip::headers::split_host_port(hp)?;
    let host = std::str::from_utf8(host).ok()?;
    host.trim_matches(|c| c == '[' || c == ']').parse().ok()
}

impl RegEvent {
    pub fn new(cfg: RegEventConfig) -> RegEvent {
        RegEvent {
            cfg,
            subs: IdMap::default(),
            by_call_id: HashMap::new(),
            by_branch: IdMap::default(),
            timers: BinaryHeap::new(),
            seq: 0,
            key: std::collections::hash_map::RandomState::new(),
            stats: RegEventStats::default(),
        }
    }

    /// Subscriptions held (any state).
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Whether `binding` has a subscription, and it is accepted (2xx) now.
    pub fn is_active(&self, binding: u64) -> bool {
        self.subs
            .get(&binding)
            .is_some_and(|s| s.state == State::Active)
    }

    pub fn has(&self, binding: u64) -> bool {
        self.subs.contains_key(&binding)
    }

    /// A fresh unique value (branch, tag, Call-ID): a counter through a keyed hash (SipHash
    /// with a per-process key), so that a host that sees one of our SUBSCRIBEs cannot predict
    /// the dialog of the next and forge its NOTIFYs.
    fn unique(&mut self) -> u64 {
        use std::hash::BuildHasher;
        self.seq += 1;
        self.key.hash_one(self.seq)
    }

    /// After a 200 to a registration: subscribe for it, unless it is subscribed already (a
    /// re-registration: TS 24.229 §5.2.3 subscribes after the first one only), whose Service-
    /// Route and expiry are then kept for the refreshes.
    pub fn subscribe(&mut self, t: Target, now: Instant, out: &mut VecDeque<Datagram<Vec<u8>>>) {
        match self.subs.get_mut(&t.binding) {
            // one being removed or ended belongs to the registration before: a new one (the
            // removal's answer then meets an unknown branch and is ignored)
            Some(s) if matches!(s.state, State::Removing | State::Ended) => {
                self.forget(t.binding);
            }
            Some(s) => {
                s.target = t;
                return;
            }
            None => {}
        }
        let binding = t.binding;
        let call_id = format!("{:016x}-reg@{}", self.unique(), self.cfg.core.ip()).into_bytes();
        let our_tag = format!("{:016x}", self.unique());
        self.by_call_id.insert(call_id.clone(), binding);
        self.subs.insert(
            binding,
            Sub {
                target: t,
                call_id,
                our_tag,
                their_tag: None,
                remote_target: None,
                route_set: Vec::new(),
                cseq: 0,
                state: State::Pending,
                in_flight: None,
                refresh_at: None,
                retry_at: None,
                failures: 0,
                quick: 0,
                versions: Versions::default(),
            },
        );
        self.send(binding, false, now, out);
    }

    /// The registration of `binding` ended: the subscription goes, with a SUBSCRIBE Expires: 0
    /// first when `unsubscribe` (RFC 6665 §4.1.2.3: the UE de-registered; when the network
    /// ended the registration, its NOTIFY ended the subscription too).
    pub fn end(
        &mut self,
        binding: u64,
        unsubscribe: bool,
        now: Instant,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) {
        let Some(s) = self.subs.get(&binding) else {
            return;
        };
        if unsubscribe && s.state == State::Active {
            self.stats.unsubscribed += 1;
            self.send(binding, true, now, out);
        } else {
            self.forget(binding);
        }
    }

    /// `binding` is gone: so is its subscription, without a word to the S-CSCF (its
    /// registration ended before, and [`RegEvent::end`] ran then).
    pub fn forget_binding(&mut self, binding: u64) {
        self.forget(binding);
    }

    fn forget(&mut self, binding: u64) {
        if let Some(s) = self.subs.remove(&binding) {
            self.by_call_id.remove(&s.call_id);
            if let Some(f) = s.in_flight {
                self.by_branch.remove(&f.branch);
            }
        }
    }

    fn arm(&mut self, binding: u64) {
        if let Some(at) = self.subs.get(&binding).and_then(Sub::deadline) {
            self.timers.push(Reverse((at, binding)));
        }
        // stale entries (a deadline that moved) outnumbering the live ones: rebuild
        if self.timers.len() > 4 * self.subs.len() + 1024 {
            let mut live: Vec<_> = self
                .subs
                .iter()
                .filter_map(|(&b, s)| s.deadline().map(|at| Reverse((at, b))))
                .collect();
            live.sort_unstable();
            self.timers = live.into();
        }
    }

    /// Send the subscription's next SUBSCRIBE (a new one, a refresh, or its removal).
    fn send(
        &mut self,
        binding: u64,
        remove: bool,
        now: Instant,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) {
        let branch = self.unique();
        let icid = self.unique();
        let Some(s) = self.subs.get_mut(&binding) else {
            return;
        };
        if let Some(f) = s.in_flight.take() {
            self.by_branch.remove(&f.branch);
        }
        s.cseq = s.cseq.wrapping_add(1).max(1);
        s.refresh_at = None;
        s.retry_at = None;
        if remove {
            s.state = State::Removing;
        }
        let expires = if remove {
            0
        } else {
            s.target.expires.saturating_add(EXTRA_EXPIRES)
        };
        let t = &s.target;
        let transport = if t.tcp { "TCP" } else { "UDP" };
        let ruri = s.remote_target.as_deref().unwrap_or(&t.impu);
        let route = if s.route_set.is_empty() {
            &t.route
        } else {
            &s.route_set
        };
        let mut m = Vec::with_capacity(768 + route.len());
        m.extend_from_slice(b"SUBSCRIBE ");
        m.extend_from_slice(ruri);
        m.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/");
        m.extend_from_slice(transport.as_bytes());
        m.push(b' ');
        m.extend_from_slice(self.cfg.via_sent_by.as_bytes());
        m.extend_from_slice(b";branch=");
        m.extend_from_slice(SUBSCRIBE_BRANCH);
        m.extend_from_slice(format!("{branch:016x};rport\r\nMax-Forwards: 70\r\n").as_bytes());
        if !route.is_empty() {
            m.extend_from_slice(b"Route: ");
            m.extend_from_slice(route);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(
            format!("From: <{}>;tag={}\r\n", self.cfg.from_uri, s.our_tag).as_bytes(),
        );
        m.extend_from_slice(b"To: <");
        m.extend_from_slice(&t.impu);
        m.push(b'>');
        if let Some(tag) = &s.their_tag {
            m.extend_from_slice(b";tag=");
            m.extend_from_slice(tag);
        }
        m.extend_from_slice(b"\r\nCall-ID: ");
        m.extend_from_slice(&s.call_id);
        let contact = match self.cfg.core {
            SocketAddr::V4(a) => format!("sip:{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("sip:[{}]:{}", a.ip(), a.port()),
        };
        m.extend_from_slice(
            format!(
                "\r\nCSeq: {} SUBSCRIBE\r\nEvent: reg\r\nAccept: application/reginfo+xml\r\n\
                 Expires: {expires}\r\nContact: <{contact}{}>\r\nP-Asserted-Identity: <{}>\r\n\
                 P-Charging-Vector: icid-value={icid:016x};orig-ioi={}\r\nContent-Length: 0\r\n\r\n",
                s.cseq,
                if t.tcp { ";transport=tcp" } else { "" },
                self.cfg.path_uri,
                self.cfg.orig_ioi
            )
            .as_bytes(),
        );
        let (dst, tcp) = (t.next_hop, t.tcp);
        s.in_flight = Some(InFlight {
            branch,
            payload: m.clone(),
            started: now,
            resend_at: (!tcp).then_some(now + T1),
            interval: T1,
        });
        self.by_branch.insert(branch, binding);
        self.stats.subscribes += 1;
        out.push_back(self.datagram(dst, tcp, m));
        self.arm(binding);
    }

    fn datagram(&self, dst: SocketAddr, tcp: bool, payload: Vec<u8>) -> Datagram<Vec<u8>> {
        Datagram {
            side: Side::Core,
            protection: Protection::toward_core(tcp),
            src: self.cfg.core,
            dst,
            payload,
        }
    }

    /// A response whose top Via carries [`SUBSCRIBE_BRANCH`]: the transaction it answers, from
    /// the hop we sent it to (RFC 3261 §18.1.2; the address, not the port).
    pub fn handle_response(&mut self, v: View<'_>, from: SocketAddr, now: Instant) {
        let Some(code) = v.status() else {
            return;
        };
        let branch = v
            .values(HeaderName::Via)
            .next()
            .and_then(Via::parse)
            .and_then(|via| via.branch())
            .and_then(|b| b.strip_prefix(SUBSCRIBE_BRANCH))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let Some(&binding) = branch.and_then(|b| self.by_branch.get(&b)) else {
            return;
        };
        let Some(s) = self.subs.get_mut(&binding) else {
            return;
        };
        if s.target.next_hop.ip() != from.ip() || code < 200 {
            // another host's answer is not the transaction's; a provisional one only stops
            // the retransmissions (RFC 3261 §17.1.2.2: Proceeding)
            if code < 200
                && s.target.next_hop.ip() == from.ip()
                && let Some(f) = s.in_flight.as_mut()
            {
                f.resend_at = None;
            }
            return;
        }
        if let Some(f) = s.in_flight.take() {
            self.by_branch.remove(&f.branch);
        }
        if s.state == State::Removing {
            self.forget(binding);
            return;
        }
        let to_tag = v
            .header(HeaderName::To)
            .and_then(NameAddr::parse)
            .and_then(|n| n.tag())
            .map(<[u8]>::to_vec);
        // RFC 6665 §4.1.2.1: the 2xx's Expires is the duration granted
        let granted = v
            .header(HeaderName::Expires)
            .and_then(parse_u32)
            .unwrap_or(s.target.expires.saturating_add(EXTRA_EXPIRES));
        if (200..300).contains(&code) && to_tag.is_some() && granted > 0 {
            self.stats.subscribed += 1;
            s.state = State::Active;
            s.failures = 0;
            if s.their_tag.is_none() {
                // the dialog is made (RFC 3261 §12.1.2): its remote tag and route set are
                // fixed from now on; a refresh's 2xx updates only the remote target
                // (§12.2.1.2)
                s.their_tag = to_tag;
                let rr: Vec<&[u8]> = v.values(HeaderName::RecordRoute).collect();
                s.route_set = rr
                    .iter()
                    .rev()
                    .map(|r| r.trim_ascii())
                    .collect::<Vec<_>>()
                    .join(&b", "[..]);
            }
            if let Some(c) = v.header(HeaderName::Contact).and_then(NameAddr::parse) {
                s.remote_target = Some(c.uri.to_vec());
            }
            s.refresh_at = Some(now + refresh_after(granted));
        } else if (200..300).contains(&code) {
            // no dialog (a 2xx without a To tag), or none granted (Expires 0: RFC 6665
            // §4.1.2.1, a fetch): not a subscription we can keep
            let how = if to_tag.is_none() {
                "answered without a To tag"
            } else {
                "granted 0 s"
            };
            self.failed(binding, now, how, code);
        } else {
            self.failed(binding, now, "answered", code);
        }
        self.arm(binding);
    }

    /// The SUBSCRIBE of `binding` failed: a new subscription (new dialog) after a back-off.
    fn failed(&mut self, binding: u64, now: Instant, how: &str, code: u16) {
        let Some(s) = self.subs.get_mut(&binding) else {
            return;
        };
        self.stats.subscribe_failed += 1;
        if s.state == State::Removing {
            self.forget(binding);
            return;
        }
        let wait = RETRY_MIN
            .saturating_mul(1 << s.failures.min(6))
            .min(RETRY_MAX);
        s.failures = s.failures.saturating_add(1);
        crate::control::log::event(format_args!(
            "reg event: SUBSCRIBE for {} {how} {code}; trying again in {} s",
            String::from_utf8_lossy(&s.target.impu),
            wait.as_secs()
        ));
        s.state = State::Failed;
        s.retry_at = Some(now + wait);
        self.restart_dialog(binding);
    }

    /// A new dialog for the next SUBSCRIBE of `binding` (RFC 6665 §4.1.2.4 / §4.2.2: the old one
    /// is over).
    fn restart_dialog(&mut self, binding: u64) {
        let call_id = format!("{:016x}-reg@{}", self.unique(), self.cfg.core.ip()).into_bytes();
        let tag = format!("{:016x}", self.unique());
        let Some(s) = self.subs.get_mut(&binding) else {
            return;
        };
        self.by_call_id.remove(&s.call_id);
        self.by_call_id.insert(call_id.clone(), binding);
        s.call_id = call_id;
        s.our_tag = tag;
        s.their_tag = None;
        s.remote_target = None;
        s.route_set.clear();
        s.cseq = 0;
        s.versions.reset();
    }

    /// Subscribe `binding` again at once, in a new dialog (a gap in the versions: only a new
    /// subscription brings full state, RFC 3680 §5.2; or the notifier ended it while
    /// the registration lives).
    pub fn resubscribe(
        &mut self,
        binding: u64,
        now: Instant,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) {
        // (one being removed stays removed: the UE de-registered)
        if self
            .subs
            .get(&binding)
            .is_none_or(|s| s.state == State::Removing)
        {
            return;
        }
        self.restart_dialog(binding);
        let Some(s) = self.subs.get_mut(&binding) else {
            return;
        };
        s.quick = s.quick.saturating_add(1);
        if s.quick > 1 {
            // asked again before any document was applied: the failure back-off
            self.failed(binding, now, "asked for again", 0);
            self.arm(binding);
            return;
        }
        s.state = State::Pending;
        self.send(binding, false, now, out);
    }

    /// A NOTIFY punted by a worker (addressed to us, from the core): matched to a subscription
    /// by Call-ID and our tag (RFC 6665 §4.1.2.4: it may come before the 2xx), from the
    /// subscription's peer, its document parsed and its version checked. It is answered here
    /// (200, or 481 / 403 / 489 / 415 / 400); an accepted document is returned for the
    /// registrar.
    pub fn handle_notify(
        &mut self,
        m: &Message<'_>,
        came: Datagram<()>,
        now: Instant,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) -> Option<Notified> {
        self.stats.notifies += 1;
        let v = m.view();
        let (code, reason, result) = self.check_notify(v, came.src, now, out);
        self.answer(m, came, code, reason, out);
        // (a NOTIFY may have brought its refresh forward)
        if let Some(n) = &result {
            self.arm(n.binding);
        }
        result
    }

    fn check_notify(
        &mut self,
        v: View<'_>,
        src: SocketAddr,
        now: Instant,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) -> (u16, &'static str, Option<Notified>) {
        let to_tag = v
            .header(HeaderName::To)
            .and_then(NameAddr::parse)
            .and_then(|n| n.tag());
        let from_tag = v
            .header(HeaderName::From)
            .and_then(NameAddr::parse)
            .and_then(|n| n.tag());
        let binding = v
            .header(HeaderName::CallId)
            .and_then(|c| self.by_call_id.get(c.trim_ascii()))
            .copied();
        let Some((binding, s)) = binding.and_then(|b| Some((b, self.subs.get_mut(&b)?))) else {
            self.stats.notify_unknown += 1;
            return (481, "Subscription Does Not Exist", None);
        };
        if to_tag != Some(s.our_tag.as_bytes())
            || from_tag.is_none()
            || s.their_tag.as_deref().is_some_and(|t| Some(t) != from_tag)
        {
            self.stats.notify_unknown += 1;
            return (481, "Subscription Does Not Exist", None);
        }
        // only the S-CSCF we subscribed at notifies: the hop we sent the SUBSCRIBE to, the
        // remote target its 2xx gave, or a hop of the dialog's route set (by address: a name
        // there is not resolved here)
        let peer_ok = src.ip() == s.target.next_hop.ip()
            || s.remote_target
                .as_deref()
                .and_then(uri_ip)
                .is_some_and(|ip| ip == src.ip())
            || s.route_set
                .split(|&c| c == b',')
                .filter_map(|r| NameAddr::parse(r.trim_ascii()))
                .filter_map(|n| uri_ip(n.uri))
                .any(|ip| ip == src.ip());
        if !peer_ok {
            self.stats.notify_foreign += 1;
            crate::control::log::event(format_args!(
                "reg event: NOTIFY for {} from {src}, not from its S-CSCF {}: refused",
                String::from_utf8_lossy(&s.target.impu),
                s.target.next_hop
            ));
            return (403, "Forbidden", None);
        }
        let event_ok = v.header(HeaderName::Event).is_some_and(|e| {
            let e = e.split(|&c| c == b';').next().unwrap_or_default();
            e.trim_ascii().eq_ignore_ascii_case(b"reg")
        });
        if !event_ok {
            self.stats.notify_unknown += 1;
            return (489, "Bad Event", None);
        }
        if s.state == State::Removing {
            // the UE de-registered and we are removing it: nothing more to learn
            return (200, "OK", None);
        }
        if s.their_tag.is_none() {
            s.their_tag = from_tag.map(<[u8]>::to_vec);
        }
        // RFC 6665 §4.1.3: Subscription-State says whether it lives on, and for how long
        let state = v.header_named(b"Subscription-State").unwrap_or_default();
        let terminated = state
            .split(|&c| c == b';')
            .next()
            .is_some_and(|s| s.trim_ascii().eq_ignore_ascii_case(b"terminated"));
        if !terminated && let Some(secs) = param(state, b"expires").and_then(parse_u32) {
            let at = now + refresh_after(secs);
            if s.state == State::Active && s.refresh_at.is_none_or(|r| r > at) {
                s.refresh_at = Some(at);
            }
        }
        let body = v.body();
        let doc = if body.is_empty() {
            None
        } else {
            let ct = v.header(HeaderName::ContentType).unwrap_or_default();
            let ct = ct.split(|&c| c == b';').next().unwrap_or_default();
            if !ct
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/reginfo+xml")
            {
                self.stats.notify_bad_body += 1;
                return (415, "Unsupported Media Type", None);
            }
            match reginfo::parse(body) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.stats.notify_bad_body += 1;
                    crate::control::log::event(format_args!(
                        "reg event: NOTIFY for {} from {src} refused: {e}",
                        String::from_utf8_lossy(&s.target.impu)
                    ));
                    return (400, "Bad Request", None);
                }
            }
        };
        // RFC 6665 §4.1.3: after "deactivated" or "timeout" a new subscription may be made at
        // once; after the others ("noresource", "rejected", "giveup", "probation", ...) the
        // notifier does not want one now
        let ended = terminated.then(|| {
            param_reason(state).is_some_and(|r| {
                r.eq_ignore_ascii_case(b"deactivated") || r.eq_ignore_ascii_case(b"timeout")
            })
        });
        if ended.is_some() {
            s.state = State::Ended;
            s.refresh_at = None;
        }
        let doc = match doc.map(|d| (s.versions.accept(&d), d)) {
            None => None,
            Some((Ok(()), d)) => {
                self.stats.notifies_applied += 1;
                s.quick = 0;
                Some(d)
            }
            Some((Err(e), _)) => {
                self.stats.notify_out_of_order += 1;
                crate::control::log::event(format_args!(
                    "reg event: NOTIFY for {} discarded: {}",
                    String::from_utf8_lossy(&s.target.impu),
                    match e {
                        VersionError::Stale { last, got } =>
                            format!("version {got} after {last} (stale)"),
                        VersionError::Gap { last, got } =>
                            format!("version {got} after {last} (one missed: subscribing again)"),
                        VersionError::PartialFirst => "partial state first".into(),
                    }
                ));
                // RFC 3680 §5.2: after a gap only full state can be trusted, and a
                // new subscription brings it
                if !matches!(e, VersionError::Stale { .. }) && ended.is_none() {
                    self.resubscribe(binding, now, out);
                }
                None
            }
        };
        (
            200,
            "OK",
            Some(Notified {
                binding,
                doc,
                ended,
            }),
        )
    }

    /// Our answer to a NOTIFY, back the way it came (RFC 3261 §18.2.2: on its connection, or
    /// to its source and the Via's port).
    fn answer(
        &self,
        m: &Message<'_>,
        came: Datagram<()>,
        code: u16,
        reason: &str,
        out: &mut VecDeque<Datagram<Vec<u8>>>,
    ) {
        let v = m.view();
        let Some(port) = crate::sip::rules::reply_port(v, came.src) else {
            return;
        };
        let mut buf = vec![0u8; m.buf.len() + 512];
        let extra: &[&[u8]] = if code == 415 {
            &[b"Accept: application/reginfo+xml\r\n"]
        } else {
            &[]
        };
        let Some(n) = crate::sip::rules::build_response(v, code, reason, b"pcscf", extra, &mut buf)
        else {
            return;
        };
        buf.truncate(n);
        out.push_back(Datagram {
            side: Side::Core,
            protection: came.protection,
            src: came.dst,
            dst: SocketAddr::new(came.src.ip(), port),
            payload: buf,
        });
    }

    /// The next deadline (a retransmission, Timer F, a refresh, a retry).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Run what is due: retransmit, give up on a silent transaction (Timer F), refresh, retry.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut VecDeque<Datagram<Vec<u8>>>) {
        while let Some(&Reverse((at, binding))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.subs.get_mut(&binding) else {
                continue;
            };
            if s.deadline() != Some(at) {
                continue;
            }
            if let Some(f) = s.in_flight.as_mut() {
                if f.started + TIMER_F <= now {
                    let f = s.in_flight.take();
                    if let Some(f) = f {
                        self.by_branch.remove(&f.branch);
                    }
                    self.failed(binding, now, "timed out, no answer", 408);
                    self.arm(binding);
                    continue;
                }
                if f.resend_at.is_some_and(|r| r <= now) {
                    f.interval = (f.interval * 2).min(T2);
                    f.resend_at = Some(now + f.interval);
                    let (dst, tcp) = (s.target.next_hop, s.target.tcp);
                    let payload = f.payload.clone();
                    out.push_back(self.datagram(dst, tcp, payload));
                    self.arm(binding);
                    continue;
                }
            }
            if s.refresh_at.is_some_and(|r| r <= now) || s.retry_at.is_some_and(|r| r <= now) {
                if s.state == State::Failed {
                    s.state = State::Pending;
                }
                self.send(binding, false, now, out);
                continue;
            }
            // (nothing of it was due after all: re-queued only for a later deadline, so this
            // loop cannot spin)
            if s.deadline().is_some_and(|d| d > now) {
                self.arm(binding);
            }
        }
    }
}
