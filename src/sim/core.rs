//! `pcscf core-sim`: an I-CSCF + S-CSCF + HSS on one UDP address, enough to register UEs
//! through a P-CSCF: Milenage vectors per subscriber, the 401 with nonce / ck / ik, the
//! Digest-AKA check of the response (403 when wrong), the 200 with Service-Route and
//! P-Associated-URI, de-registration, and 200 to MESSAGE / OPTIONS.
//!
//! Calls: it is the S-CSCF and the far end of every call. A UE's INVITE gets a far-end leg
//! ([`call::Leg`], one per Call-ID, in the flow [`CorePlan::flows`] gives call `call-k`): 100,
//! 180 (reliable in the PRACK flows) and 200 (an SDP answer, its own Record-Route above the
//! received ones, RFC 3261 §16.6 item 4 and §12.1.1, sent again until the ACK), then whatever
//! the flow asks (PRACK, UPDATE, re-INVITE, CANCEL and 487, BYE either way). With a
//! [`CorePlan`] it also calls the registered UEs ([`serve_calls`]): an INVITE to the Contact the
//! UE registered, routed by the Path the P-CSCF put in that REGISTER (RFC 3327 §5.3, TS 24.229
//! §5.4.3.3), then the flow's requests inside the dialog with the route set the Record-Route
//! gives (RFC 3261 §12.1.2), or CANCEL and the ACK of the 487 the INVITE's way. A request of a
//! dialog it holds no leg for is answered 200 without state ([`CoreSim::answer`]).
//!
//! Reg event (RFC 3680, TS 24.229 §5.4.2.1, [`regevent`]): it is the notifier of its
//! registrations. A SUBSCRIBE `Event: reg` to a registered IMPU (the Request-URI's user part)
//! is answered 200 and followed by a NOTIFY with the full state to the subscriber's Contact;
//! refreshes and Expires 0 in the dialog, re-registrations (contact `refreshed`), the UE's
//! de-registration (`unregistered`, the subscription terminated) and the network's
//! ([`CoreSim::deregister_from_network`]; `--network-dereg N` de-registers the first N UEs when
//! the run stops, [`CorePlan::network_dereg`]) are notified. The NOTIFYs' responses are matched
//! and counted; over UDP a NOTIFY is sent again on timer E until timer F.
//!
//! Transports (RFC 3261 §18, `sim::corenet`): UDP and TCP on the same address, always; a response
//! goes back the way its request came (on its connection, RFC 3261 §18.2.2); the requests it
//! originates go over TCP with [`CorePlan::transport`] `tcp` or when larger than
//! [`CorePlan::max_udp_request`] (RFC 3261 §18.1.1), and are then never sent again on a timer.
//! With `tcp` its Service-Route and Record-Route URIs say `;transport=tcp` (RFC 3263 §4.1), so
//! that the P-CSCF sends the UEs' requests to it over TCP too.
//!
//! Subscribers: every IMPI `<imsi>@<realm>` is accepted with one K / OPc (TS 35.208 test set 1
//! unless given): a lab tool, not a real HSS.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::aka::{self, HssSubscriber, Milenage, Res, SqnGenerator, digest};
use crate::sim::call;
use crate::sim::corenet::{Net, Source, TcpStats};
use crate::sim::regevent::{self, ContactEvent, OutRequest, RegState, Subscription, Transactions};
use crate::sim::ue::Transport;
use crate::sip::headers::{Digest, NameAddr, cseq, split_host_port, uri_hostport, uri_params};
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
    /// The reg event package (RFC 3680, [`regevent`]): subscriptions accepted, refreshed and
    /// removed by the subscriber (Expires 0); SUBSCRIBEs refused (480, 481, 489, 400, 503).
    pub subscribed: u64,
    pub resubscribed: u64,
    pub unsubscribed: u64,
    pub subscribe_refused: u64,
    /// NOTIFYs sent (not counting the ones sent again), answered 2xx, answered with an
    /// error, never answered (timer F, or still open at the end).
    pub notifies: u64,
    pub notifies_ok: u64,
    pub notifies_failed: u64,
    pub notifies_unanswered: u64,
    /// Last NOTIFYs (`terminated`) answered 481: the subscriber had already ended the dialog
    /// (not an error).
    pub notifies_late: u64,
    /// UEs de-registered by the network ([`CoreSim::deregister_from_network`]).
    pub network_deregistered: u64,
    /// SIP over TCP ([`corenet`](super::corenet)).
    pub tcp: TcpStats,
}

impl CoreStats {
    /// Whether anything of the reg event package happened.
    pub fn reg_event_any(&self) -> bool {
        self.subscribed
            + self.resubscribed
            + self.unsubscribed
            + self.subscribe_refused
            + self.notifies
            + self.network_deregistered
            > 0
    }

    /// The reg event package in one line.
    pub fn reg_event_line(&self) -> String {
        format!(
            "core-sim reg event: {} subscriptions ({} refreshed, {} removed, {} refused); {} NOTIFYs ({} answered 2xx, {} errors, {} unanswered, {} last ones 481 after the subscriber ended); {} network-initiated de-registrations",
            self.subscribed,
            self.resubscribed,
            self.unsubscribed,
            self.subscribe_refused,
            self.notifies,
            self.notifies_ok,
            self.notifies_failed,
            self.notifies_unanswered,
            self.notifies_late,
            self.network_deregistered
        )
    }
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
    /// The registration's duration, seconds (the REGISTER's Expires).
    pub expires: u32,
}

/// The simulated core (sans-IO: [`CoreSim::handle`] turns a request into a response).
pub struct CoreSim {
    k: [u8; 16],
    opc: [u8; 16],
    realm: String,
    /// Our own URI host:port for Service-Route.
    route_host: String,
    /// `;transport=tcp` in our Service-Route and Record-Route URIs.
    tcp: bool,
    subscribers: HashMap<Vec<u8>, (HssSubscriber, Option<Res>)>,
    rand_counter: u64,
    /// Registered UEs by IMPU user part, in order.
    pub bindings: BTreeMap<String, Binding>,
    /// Reg event subscriptions by Call-ID ([`regevent`]).
    pub subscriptions: HashMap<String, Subscription>,
    /// Requests to send (NOTIFYs), taken by [`CoreSim::take_requests`].
    outbox: Vec<OutRequest>,
    /// The NOTIFYs sent and not answered yet.
    notifies: Transactions,
    /// Numbers our tags and branches.
    made: u64,
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
            tcp: false,
            subscribers: HashMap::new(),
            rand_counter: 0,
            bindings: BTreeMap::new(),
            subscriptions: HashMap::new(),
            outbox: Vec::new(),
            notifies: Transactions::default(),
            made: 0,
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

    /// With `true`, our Service-Route and Record-Route URIs say `;transport=tcp`: the P-CSCF
    /// sends what it routes by them to us over TCP (RFC 3263 §4.1).
    pub fn over_tcp(mut self, tcp: bool) -> CoreSim {
        self.tcp = tcp;
        self
    }

    /// `;transport=tcp` when we ask for TCP, else nothing.
    fn transport_param(&self) -> &'static str {
        if self.tcp { ";transport=tcp" } else { "" }
    }

    /// Our own Record-Route entry (and Contact host).
    pub fn record_route(&self) -> String {
        format!("<sip:{}{};lr>", self.route_host, self.transport_param())
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
        if let Some(code) = v.status() {
            self.on_response(v, code);
            return Vec::new();
        }
        let Some(method) = v.method() else {
            return Vec::new();
        };
        match method {
            b"REGISTER" => self.register(&m, from).into_iter().collect(),
            b"SUBSCRIBE" => vec![self.subscribe(&m, from)],
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

    /// Our Contact in the reg event dialogs (RFC 6665 §4.2.1: the notifier's 200 and NOTIFYs
    /// carry one).
    fn notifier_contact(&self) -> String {
        format!("<sip:scscf@{}{}>", self.route_host, self.transport_param())
    }

    /// A SUBSCRIBE (RFC 6665 §4.2.1, RFC 3680 §4): the reg event package only (else 489 with
    /// Allow-Events, RFC 6665 §4.2.1.1); a new subscription to a registered
    /// IMPU (else 480, TS 24.229 §5.4.2.1.1) is answered 200 with our tag, its duration and
    /// our Contact, then a NOTIFY with the full state (RFC 6665 §4.2.1.2: at once after
    /// accepting); a refresh in a dialog we hold gets 200 and a NOTIFY with the full state
    /// (481 for a dialog we do not hold, RFC 6665 §4.1.2.2); Expires 0 ends it with a last
    /// NOTIFY, `terminated;reason=timeout` (RFC 6665 §4.2.1.4 / §4.1.3).
    fn subscribe(&mut self, m: &Message<'_>, from: Option<SocketAddr>) -> Vec<u8> {
        let v = m.view();
        let package = v
            .header(HeaderName::Event)
            .and_then(|e| std::str::from_utf8(e).ok())
            .map(|e| e.split(';').next().unwrap_or_default().trim());
        if !package.is_some_and(|p| p.eq_ignore_ascii_case("reg")) {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 489, "Bad Event", "Allow-Events: reg\r\n");
        }
        let (Some(call_id), Some(their_tag)) = (
            call::text(v, HeaderName::CallId),
            v.header(HeaderName::From)
                .and_then(NameAddr::parse)
                .and_then(|f| f.tag())
                .and_then(|t| std::str::from_utf8(t).ok()),
        ) else {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 400, "Bad Request", "");
        };
        let their_tag = their_tag.to_string();
        let requested = v
            .header(HeaderName::Expires)
            .and_then(|e| std::str::from_utf8(e).ok()?.trim().parse::<u32>().ok())
            .unwrap_or(regevent::DEFAULT_EXPIRES);
        let to_tag = v
            .header(HeaderName::To)
            .and_then(NameAddr::parse)
            .and_then(|t| t.tag())
            .map(<[u8]>::to_vec);
        if let Some(to_tag) = to_tag {
            return self.resubscribe(m, &call_id, &their_tag, &to_tag, requested);
        }
        // a new subscription: the Request-URI names the IMPU (RFC 3680 §4.1), its user part
        // the key of the bindings
        let user = v
            .request_uri()
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| u.split_once(':'))
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(user, _)| user.to_string());
        let Some((user, binding)) = user.and_then(|u| self.bindings.get(&u).map(|b| (u, b))) else {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 480, "Temporarily Unavailable", "");
        };
        let binding_expires = binding.expires;
        let contact = v.header(HeaderName::Contact).and_then(NameAddr::parse);
        let (Some(contact), Some(aor)) = (contact, call::text(v, HeaderName::To)) else {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 400, "Bad Request", "");
        };
        let target = String::from_utf8_lossy(contact.uri).into_owned();
        let hostport = uri_hostport(contact.uri);
        let to = split_host_port(hostport)
            .and_then(|(host, port)| {
                let host = std::str::from_utf8(host).ok()?;
                let ip = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .ok()?;
                Some(SocketAddr::new(ip, port.unwrap_or(5060)))
            })
            .or(from);
        let Some(to) = to else {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 400, "Bad Request", "");
        };
        if self.subscriptions.len() >= regevent::SUBS_MAX {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 503, "Service Unavailable", "Retry-After: 10\r\n");
        }
        let params = uri_params(contact.uri);
        let tcp = self.tcp
            || params
                .split(|&b| b == b';')
                .any(|p| p.eq_ignore_ascii_case(b"transport=tcp"));
        // (a lab tool's policy: at most twice the registration's duration)
        let expires = requested.min(binding_expires.saturating_mul(2));
        self.made += 1;
        let sub = Subscription {
            impu: user,
            call_id,
            their_tag,
            our_tag: format!("rs{}", self.made),
            peer: call::text(v, HeaderName::From).unwrap_or_default(),
            aor,
            target,
            to,
            tcp,
            source: from,
            cseq: 0,
            version: 0,
            expires,
        };
        let extra = format!(
            "Expires: {expires}\r\nContact: {}\r\n",
            self.notifier_contact()
        );
        let ok = self.respond_tagged(m, 200, "OK", &sub.our_tag, &extra);
        if expires == 0 {
            // a fetch (RFC 6665 §4.4.3): one NOTIFY, nothing kept
            self.notify_state(sub, "terminated;reason=timeout");
        } else {
            self.stats.subscribed += 1;
            self.notify_active(sub, expires);
        }
        ok
    }

    /// The full state NOTIFY of a subscription that goes on for `expires` s; it is kept.
    fn notify_active(&mut self, sub: Subscription, expires: u32) {
        let state = format!("active;expires={expires}");
        if let Some(sub) = self.notify_state(sub, &state) {
            self.subscriptions.insert(sub.call_id.clone(), sub);
        }
    }

    /// A SUBSCRIBE in a dialog: a refresh, or with Expires 0 the end of the subscription.
    fn resubscribe(
        &mut self,
        m: &Message<'_>,
        call_id: &str,
        their_tag: &str,
        to_tag: &[u8],
        requested: u32,
    ) -> Vec<u8> {
        let held = self
            .subscriptions
            .get(call_id)
            .is_some_and(|s| s.their_tag == their_tag && s.our_tag.as_bytes() == to_tag);
        let Some(mut sub) = held.then(|| self.subscriptions.remove(call_id)).flatten() else {
            self.stats.subscribe_refused += 1;
            return Self::respond(m, 481, "Call/Transaction Does Not Exist", "");
        };
        let registered = self.bindings.get(&sub.impu).map(|b| b.expires);
        let expires = registered.map_or(0, |e| requested.min(e.saturating_mul(2)));
        sub.expires = expires;
        let extra = format!(
            "Expires: {expires}\r\nContact: {}\r\n",
            self.notifier_contact()
        );
        let ok = Self::respond(m, 200, "OK", &extra);
        if requested == 0 {
            self.stats.unsubscribed += 1;
            self.notify_state(sub, "terminated;reason=timeout");
        } else if registered.is_none() {
            // (the registration ended and its subscription with it: cannot happen while
            // de-registrations end their subscriptions, kept for safety)
            self.notify_state(sub, "terminated;reason=noresource");
        } else {
            self.stats.resubscribed += 1;
            self.notify_active(sub, expires);
        }
        ok
    }

    /// [`Self::respond`] with our To tag `tag`.
    fn respond_tagged(
        &self,
        req: &Message<'_>,
        code: u16,
        reason: &str,
        tag: &str,
        extra: &str,
    ) -> Vec<u8> {
        let mut out = vec![0u8; req.buf.len() + 2048];
        let n = build_response(
            req.view(),
            code,
            reason,
            tag.as_bytes(),
            &[extra.as_bytes()],
            &mut out,
        )
        .unwrap_or(0);
        out.truncate(n);
        out
    }

    /// Queue a NOTIFY of `sub` with the registration's state as it is now (active when the
    /// binding is there, else terminated `unregistered`) and `sub_state`; the subscription
    /// back for the caller to keep, unless `sub_state` ends it.
    fn notify_state(&mut self, sub: Subscription, sub_state: &str) -> Option<Subscription> {
        self.notify_state_as(sub, sub_state, false)
    }

    /// [`Self::notify_state`]; `refreshed`: the contact's event is `refreshed` (a
    /// re-registration, RFC 3680 §5.1).
    fn notify_state_as(
        &mut self,
        sub: Subscription,
        sub_state: &str,
        refreshed: bool,
    ) -> Option<Subscription> {
        let binding = self.bindings.get(&sub.impu);
        let contact = binding.map(|b| b.contact.clone()).unwrap_or_default();
        let state = match binding {
            Some(b) => RegState::Active {
                contact: &contact,
                expires: b.expires,
                refreshed,
            },
            None => RegState::Terminated {
                contact: &contact,
                event: ContactEvent::Unregistered,
            },
        };
        let body = self.reginfo_of(&sub, state);
        self.queue_notify(sub, sub_state, &body)
    }

    /// The reginfo document of `sub` with `state`, at its next version.
    fn reginfo_of(&self, sub: &Subscription, state: RegState<'_>) -> String {
        let aor = format!("sip:{}@{}", sub.impu, self.realm);
        regevent::reginfo(sub.version, &aor, &format!("reg-{}", sub.impu), state)
    }

    /// Queue the NOTIFY of `sub` (its next CSeq and version); the subscription back unless
    /// `sub_state` is `terminated`.
    fn queue_notify(
        &mut self,
        mut sub: Subscription,
        sub_state: &str,
        body: &str,
    ) -> Option<Subscription> {
        sub.cseq += 1;
        self.made += 1;
        let bytes = regevent::notify(
            &sub,
            &self.route_host,
            &format!("n{}", self.made),
            &self.notifier_contact(),
            sub_state,
            body,
        );
        self.outbox.push(OutRequest {
            to: sub.to,
            bytes,
            tcp: sub.tcp,
            call_id: sub.call_id.clone(),
            cseq: sub.cseq,
            last: sub_state.starts_with("terminated"),
        });
        self.stats.notifies += 1;
        sub.version += 1;
        (!sub_state.starts_with("terminated")).then_some(sub)
    }

    /// A re-registration of `user`: every subscription to it gets a NOTIFY with the full state,
    /// the contact `refreshed` (RFC 3680 §5.1; TS 24.229 §5.4.2.1.2: a change of the
    /// registration state is notified).
    fn notify_refreshed(&mut self, user: &str) {
        let ids: Vec<String> = self
            .subscriptions
            .values()
            .filter(|s| s.impu == user)
            .map(|s| s.call_id.clone())
            .collect();
        for id in ids {
            let Some(sub) = self.subscriptions.remove(&id) else {
                continue;
            };
            let state = format!("active;expires={}", sub.expires);
            if let Some(sub) = self.notify_state_as(sub, &state, true) {
                self.subscriptions.insert(id, sub);
            }
        }
    }

    /// Every subscription to `user`'s registration gets a last NOTIFY: the registration and
    /// its contact `contact` terminated by `event`, `Subscription-State: terminated;
    /// reason=noresource` (RFC 6665 §4.1.3: the watched state no longer exists; RFC 3680 §5.1
    /// says nothing of the reason); the subscriptions are forgotten. How many.
    fn end_subscriptions(&mut self, user: &str, contact: &str, event: ContactEvent) -> usize {
        let ids: Vec<String> = self
            .subscriptions
            .values()
            .filter(|s| s.impu == user)
            .map(|s| s.call_id.clone())
            .collect();
        for id in &ids {
            let Some(sub) = self.subscriptions.remove(id) else {
                continue;
            };
            let body = self.reginfo_of(&sub, RegState::Terminated { contact, event });
            self.queue_notify(sub, "terminated;reason=noresource", &body);
        }
        ids.len()
    }

    /// Network-initiated de-registration of `user` (an IMPU's user part; TS 24.229 §5.4.1.5):
    /// the subscriptions to its registration get a last NOTIFY (registration and contact
    /// terminated, the contact's event `event`: `deactivated` when the UE is to register again,
    /// `rejected` when not, or `expired` / `probation`, RFC 3680 §5.1), the binding goes.
    /// `None` when `user` is not registered, else the NOTIFYs queued (sent by the serve loop,
    /// [`CoreSim::take_requests`]).
    pub fn deregister_from_network(&mut self, user: &str, event: ContactEvent) -> Option<usize> {
        let b = self.bindings.remove(user)?;
        self.stats.network_deregistered += 1;
        Some(self.end_subscriptions(user, &b.contact, event))
    }

    /// A response to a request of ours: a NOTIFY's ends its transaction, counted; an error
    /// ends the subscription too (RFC 6665 §4.2.2: a NOTIFY failing with a non-2xx final
    /// response removes it; 481 is the subscriber saying it holds no such dialog).
    fn on_response(&mut self, v: crate::sip::View<'_>, code: u16) {
        let Some((n, method)) = v.header(HeaderName::CSeq).and_then(cseq) else {
            return;
        };
        if method != b"NOTIFY" {
            return;
        }
        let Some(call_id) = call::text(v, HeaderName::CallId) else {
            return;
        };
        let Ok(n) = u32::try_from(n) else { return };
        let Some(req) = self.notifies.answered(&call_id, n, code) else {
            return;
        };
        if (200..300).contains(&code) {
            self.stats.notifies_ok += 1;
        } else if code == 481 && req.last {
            // (the subscriber ended the dialog first, e.g. on the 200 to the UE's
            // de-REGISTER, which goes out before this NOTIFY: both ends agree it is over)
            self.stats.notifies_late += 1;
        } else {
            self.stats.notifies_failed += 1;
            self.subscriptions.remove(&call_id);
        }
    }

    /// The requests to send now (NOTIFYs), their transactions started at `now`.
    pub fn take_requests(&mut self, now: Instant) -> Vec<OutRequest> {
        let out = std::mem::take(&mut self.outbox);
        for r in &out {
            self.notifies.sent(r, now);
        }
        out
    }

    /// At `now`: the NOTIFYs to send again (timer E, UDP only); the ones timer F ended are
    /// counted unanswered and their subscriptions removed (RFC 6665 §4.2.2).
    pub fn request_timers(&mut self, now: Instant) -> Vec<OutRequest> {
        let (again, dead) = self.notifies.timers(now);
        for d in dead {
            self.stats.notifies_unanswered += 1;
            self.subscriptions.remove(&d.call_id);
        }
        again
    }

    /// NOTIFYs queued or unanswered.
    pub fn notifies_pending(&self) -> usize {
        self.outbox.len() + self.notifies.len()
    }

    /// At the end of a run: the NOTIFYs still unanswered count as such.
    pub fn finish(&mut self) {
        self.stats.notifies_unanswered += self.notifies_pending() as u64;
        self.outbox.clear();
        self.notifies = Transactions::default();
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
            if let Some(b) = self.bindings.remove(user.as_ref()) {
                // RFC 3680 §5.1: the contact ends with event `unregistered`; the registration
                // is gone, so is what the subscription watched (RFC 6665 §4.1.3 `noresource`)
                self.end_subscriptions(&user, &b.contact, ContactEvent::Unregistered);
            }
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
                    expires,
                };
                if self.bindings.insert(user.to_string(), binding).is_some() {
                    self.notify_refreshed(&user);
                }
            }
        }
        let extra = format!(
            "Service-Route: <sip:orig@{}{};lr>\r\nP-Associated-URI: <sip:{user}@{}>\r\nContact: {contact};expires={expires}\r\n",
            self.route_host,
            self.transport_param(),
            self.realm
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
    /// The flow of each call, both the ones we place (`term-k`) and the ones the UEs place to
    /// us (`call-k`): the UEs must hold the same plan.
    pub flows: call::CallPlan,
    /// How the requests we originate go ([`corenet::request_over_tcp`](super::corenet::request_over_tcp)),
    /// and with `tcp` our Service-Route and Record-Route ask for TCP. We listen on both
    /// whatever this says.
    pub transport: Transport,
    /// Requests larger than this go over TCP in UDP mode too (RFC 3261 §18.1.1: 1300 bytes
    /// when the path MTU is unknown; `usize::MAX`: never, for a P-CSCF without TCP).
    pub max_udp_request: usize,
    /// Once `stop` is set (the UEs are done), de-register this many of the registered UEs from
    /// the network side ([`CoreSim::deregister_from_network`]), the first ones
    /// in IMPU order, and wait (within the 2 s the end allows) for the answers to the NOTIFYs.
    pub network_dereg: usize,
    /// The contact event of those de-registrations (RFC 3680 §5.1).
    pub network_dereg_event: ContactEvent,
}

impl Default for CorePlan {
    fn default() -> Self {
        CorePlan {
            calls: 0,
            rate: 100,
            after_registered: 1,
            timeout: Duration::from_secs(5),
            flows: call::CallPlan::default(),
            transport: Transport::Udp,
            max_udp_request: usize::from(crate::config::DEFAULT_MAX_UDP_REQUEST),
            network_dereg: 0,
            network_dereg_event: ContactEvent::Deactivated,
        }
    }
}

/// What [`serve_calls`] did.
#[derive(Debug)]
pub struct CoreReport {
    pub stats: CoreStats,
    /// Terminating calls set up and torn down (the BYE answered 200, or the 487 ACKed).
    pub calls_ok: u64,
    /// Failed terminating calls by reason.
    pub call_failures: BTreeMap<&'static str, u64>,
    /// The terminating calls (we are the caller) by flow.
    pub placed: call::Tally,
    /// The UEs' calls (we are the far end) by flow.
    pub answered: call::Tally,
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

/// One terminating call: the core's leg as caller, where the P-CSCF is (our requests' next
/// hop), and where its last request to us came from (our responses' way back).
struct Term {
    leg: Option<call::Leg>,
    to: SocketAddr,
    src: Option<Source>,
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
    tally: call::Tally,
    setup_180: Histogram<u64>,
    setup_200: Histogram<u64>,
    /// Our address as written in SIP, and our Record-Route entry.
    me: String,
    rr: String,
    realm: String,
    /// With [`call::CallPlan::own_ues`]: the registered users when the first call started, in
    /// order (a `dereg` call's UE leaves the bindings; the others keep their places).
    own: Option<Vec<String>>,
}

/// The core's side of a call: its Via, Contact, tag, SDP, Record-Route.
fn local(core: &CoreSim, branch: String, tag: String, timeout: Duration) -> call::Local {
    let ip = core.route_host.parse::<SocketAddr>().ok().map(|a| a.ip());
    call::Local {
        sent_by: core.route_host.clone(),
        rport: false,
        contact: format!("sip:far@{}", core.route_host),
        branch,
        tag,
        offer: ip.map(|ip| call::sdp_offer(ip, 41000)).unwrap_or_default(),
        answer: ip.map(|ip| call::sdp_answer(ip, 40000)).unwrap_or_default(),
        record_route: Some(core.record_route()),
        trying: true,
        timeout,
        // (our requests' Via, and no timer sends them again: RFC 3261 §17.1.1.2)
        tcp: core.tcp,
    }
}

impl Caller {
    fn fail_unplaced(&mut self, k: usize, why: &'static str, now: Instant) {
        let flow = self.plan.flows.flow(k);
        self.tally.add(flow, call::Outcome::Failed(why));
        *self.failures.entry(why).or_insert(0) += 1;
        self.last_end = Some(now);
    }

    fn finished(&self) -> bool {
        self.started == self.calls.len()
            && self
                .calls
                .iter()
                .all(|c| c.leg.as_ref().is_none_or(call::Leg::is_over))
    }

    /// What a leg said: latencies, its end.
    fn events(&mut self, k: usize, ev: &[call::Event], now: Instant) {
        let flow = self.plan.flows.flow(k);
        for e in ev {
            match *e {
                call::Event::Ringing(d) => {
                    let _ = self.setup_180.record(d.as_micros().max(1) as u64);
                }
                call::Event::Answered(d) => {
                    let _ = self.setup_200.record(d.as_micros().max(1) as u64);
                }
                call::Event::Ended(o) => {
                    self.tally.add(flow, o);
                    match o {
                        call::Outcome::Ok => self.ok += 1,
                        call::Outcome::Failed(why) => {
                            *self.failures.entry(why).or_insert(0) += 1;
                        }
                        call::Outcome::Released => {}
                    }
                    self.last_end = Some(now);
                }
                call::Event::Reregister | call::Event::Deregister => {}
            }
        }
    }

    /// Start the calls that are due.
    fn start_due(&mut self, core: &CoreSim, net: &mut Net, now: Instant) {
        if self.started == self.calls.len() {
            return;
        }
        let targets: Vec<(&String, &Binding)> = core.bindings.iter().collect();
        if self.t0.is_none() && targets.len() < self.plan.after_registered.max(1) {
            return;
        }
        let t0 = *self.t0.get_or_insert(now);
        if self.plan.flows.own_ues() && self.own.is_none() {
            self.own = Some(targets.iter().map(|(u, _)| (*u).clone()).collect());
        }
        let due = ((now - t0).as_secs_f64() * self.plan.rate.max(1) as f64) as usize + 1;
        while self.started < self.calls.len().min(due) {
            let k = self.started;
            self.started += 1;
            // call k to the k-th UE from the last: the UEs place theirs from the first
            // (sim::ue), so no UE is in two calls
            let own = self.own.as_ref().map(|own| {
                own.len()
                    .checked_sub(k + 1)
                    .and_then(|j| own.get(j))
                    .cloned()
            });
            let target = match own {
                Some(user) => {
                    let Some(user) = user else {
                        self.fail_unplaced(k, "no UE of its own for the call (dereg)", now);
                        continue;
                    };
                    match core.bindings.get_key_value(&user) {
                        Some(t) => t,
                        None => {
                            self.fail_unplaced(k, "callee no longer registered", now);
                            continue;
                        }
                    }
                }
                None if targets.is_empty() => {
                    self.fail_unplaced(k, "callee no longer registered", now);
                    continue;
                }
                None => targets[k % targets.len()],
            };
            let (user, b) = target;
            let Some(to) = b.via else {
                self.fail_unplaced(k, "no address for the P-CSCF of the callee", now);
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
                "INVITE {} SIP/2.0\r\nVia: SIP/2.0/{proto} {me};branch=z9hG4bKt{k}i\r\nMax-Forwards: 68\r\n{route}Record-Route: {rr}\r\nFrom: <sip:far{k}@{realm}>;tag=c{k}\r\nTo: <sip:{user}@{realm}>\r\nCall-ID: term-{k}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:far@{me}>\r\nP-Asserted-Identity: <sip:far{k}@{realm}>\r\nSupported: 100rel\r\nAllow: INVITE, ACK, CANCEL, BYE, PRACK, UPDATE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                b.contact,
                sdp.len(),
                proto = self.plan.transport.via(),
                me = self.me,
                rr = self.rr,
                realm = self.realm,
            );
            let flow = self.plan.flows.flow(k);
            let acts = !self.plan.flows.callee_acts(k);
            let me = local(core, format!("t{k}"), format!("c{k}"), self.plan.timeout);
            let mut out = Vec::new();
            let leg = call::Leg::caller(flow, acts, false, invite.into_bytes(), me, now, &mut out);
            for o in &out {
                net.request(to, &o.bytes, false);
            }
            if leg.is_none() {
                self.fail_unplaced(k, "INVITE build", now);
            }
            self.calls[k] = Term { leg, to, src: None };
        }
    }

    /// A message of one of our calls.
    fn on_message(&mut self, v: crate::sip::View<'_>, src: Source, net: &mut Net, now: Instant) {
        let Some(k) = call::call_index(v, "term-", self.started) else {
            return;
        };
        let term = &mut self.calls[k];
        let Some(leg) = term.leg.as_mut() else {
            return;
        };
        if v.method().is_some() {
            term.src = Some(src);
        }
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        leg.handle(v, now, &mut out, &mut ev);
        for o in &out {
            send(net, o, term.to, src, false);
        }
        self.events(k, &ev, now);
    }

    /// Retransmissions (0.5, 1, 2 s) and timeouts.
    fn timers(&mut self, net: &mut Net, now: Instant) {
        for k in 0..self.started {
            let term = &mut self.calls[k];
            let Some(leg) = term.leg.as_mut() else {
                continue;
            };
            if leg.is_over() {
                continue;
            }
            let (mut out, mut ev) = (Vec::new(), Vec::new());
            leg.timers(now, &mut out, &mut ev);
            let back = term.src.unwrap_or(Source::Udp(term.to));
            for o in &out {
                send(net, o, term.to, back, true);
            }
            self.events(k, &ev, now);
        }
    }
}

/// Send one message of a leg: a request to its next hop `to`, a response back the way `src`
/// came. `again`: sent again on a timer (a request then never goes over TCP, RFC 3261
/// §17.1.1.2).
fn send(net: &mut Net, o: &call::Out, to: SocketAddr, src: Source, again: bool) {
    if o.request {
        net.request(to, &o.bytes, again);
    } else {
        net.respond(src, &o.bytes);
    }
}

/// Where our requests to the element that sent `v` go: a datagram's source; for a connection,
/// the top Via's sent-by when it is an address (where that element listens: the connection
/// comes from a port of its own, RFC 3261 §18.2.2), else the connection's peer.
fn next_hop(src: Source, v: crate::sip::View<'_>) -> SocketAddr {
    match src {
        Source::Udp(from) => from,
        Source::Tcp { peer, .. } => crate::sip::rules::reply::top_via_sent_by(v).unwrap_or(peer),
    }
}

/// A far-end leg: its requests' next hop, the way back of its INVITE (its responses sent
/// again), when it ended.
struct FarLeg {
    leg: call::Leg,
    to: SocketAddr,
    src: Source,
    at: Option<Instant>,
}

/// The far end of the UEs' calls: one leg per Call-ID, and when it ended (kept a while to
/// answer repeats).
struct FarEnd {
    legs: HashMap<Vec<u8>, FarLeg>,
    tally: call::Tally,
    made: u64,
}

/// At most this many far-end legs are kept, a few kB each (a flood of INVITEs does not grow
/// the table past it; the ones past it are answered without state, as a basic call).
const LEGS_MAX: usize = 50_000;

/// How long an ended far-end leg stays to answer repeated requests.
const LINGER: Duration = Duration::from_secs(5);

impl FarEnd {
    fn events(
        tally: &mut call::Tally,
        flow: call::Flow,
        ev: &[call::Event],
        at: &mut Option<Instant>,
        now: Instant,
    ) {
        for e in ev {
            if let call::Event::Ended(o) = *e {
                tally.add(flow, o);
                *at = Some(now);
            }
        }
    }

    /// A message of a UE's call; `false` if it is none of ours and no new one.
    fn on_message(
        &mut self,
        core: &mut CoreSim,
        plan: &CorePlan,
        v: crate::sip::View<'_>,
        src: Source,
        net: &mut Net,
        now: Instant,
    ) -> bool {
        let Some(cid) = v.header(HeaderName::CallId) else {
            return false;
        };
        let (mut out, mut ev) = (Vec::new(), Vec::new());
        if let Some(f) = self.legs.get_mut(cid) {
            f.leg.handle(v, now, &mut out, &mut ev);
            for o in &out {
                // (a response goes back where its request came from)
                send(net, o, f.to, src, false);
            }
            Self::events(&mut self.tally, f.leg.flow, &ev, &mut f.at, now);
            return true;
        }
        let new_invite = v.is_method(b"INVITE")
            && v.header(HeaderName::To)
                .and_then(NameAddr::parse)
                .is_some_and(|t| t.tag().is_none());
        if !new_invite || self.legs.len() >= LEGS_MAX {
            return false;
        }
        let k = call::call_index(v, "call-", usize::MAX);
        let (flow, acts) = match k {
            Some(k) => (plan.flows.flow(k), plan.flows.callee_acts(k)),
            None => (call::Flow::Basic, false),
        };
        self.made += 1;
        let n = self.made;
        let me = local(core, format!("f{n}"), format!("far{n}"), plan.timeout);
        let Some(leg) = call::Leg::callee(flow, acts, false, v, me, now, &mut out) else {
            return false;
        };
        core.stats.invites += 1;
        let to = next_hop(src, v);
        for o in &out {
            send(net, o, to, src, false);
        }
        let mut at = None;
        Self::events(&mut self.tally, flow, &ev, &mut at, now);
        self.legs.insert(cid.to_vec(), FarLeg { leg, to, src, at });
        true
    }

    fn timers(&mut self, net: &mut Net, now: Instant) {
        let tally = &mut self.tally;
        self.legs.retain(|_, f| {
            if let Some(t) = f.at {
                return now.duration_since(t) < LINGER;
            }
            let (mut out, mut ev) = (Vec::new(), Vec::new());
            f.leg.timers(now, &mut out, &mut ev);
            for o in &out {
                send(net, o, f.to, f.src, true);
            }
            Self::events(tally, f.leg.flow, &ev, &mut f.at, now);
            true
        });
    }
}

/// One message in, from `src`: to the terminating call it belongs to, to a far-end leg, or to
/// [`CoreSim::answer`].
#[allow(clippy::too_many_arguments)]
fn dispatch(
    core: &mut CoreSim,
    caller: &mut Caller,
    far: &mut FarEnd,
    plan: &CorePlan,
    net: &mut Net,
    bytes: &[u8],
    src: Source,
    now: Instant,
) {
    let mut hop = src.peer();
    if let Ok(m) = Message::parse(bytes) {
        let v = m.view();
        hop = next_hop(src, v);
        let cid = v.header(HeaderName::CallId).unwrap_or_default();
        if cid.starts_with(b"term-") {
            if v.is_method(b"BYE") {
                core.stats.byes += 1;
            }
            caller.on_message(v, src, net, now);
            return;
        } else if !v.is_method(b"REGISTER") {
            let handled = far.on_message(core, plan, v, src, net, now);
            if handled && v.is_method(b"ACK") {
                core.stats.acks += 1;
            } else if handled && v.is_method(b"BYE") {
                core.stats.byes += 1;
            }
            if handled {
                return;
            }
        }
    }
    for answer in core.answer(bytes, Some(hop)) {
        net.respond(src, &answer);
    }
    // (the NOTIFY after the 200 that accepted its SUBSCRIBE, RFC 6665 §4.2.1.2)
    send_requests(core, net, now);
}

/// Send the requests the core queued (its NOTIFYs): over TCP when their subscriber's Contact
/// asks for it, else as [`corenet::request_over_tcp`](super::corenet::request_over_tcp) says.
fn send_requests(core: &mut CoreSim, net: &mut Net, now: Instant) {
    for r in core.take_requests(now) {
        net.request_on(r.to, &r.bytes, false, r.tcp);
    }
}

/// `--network-dereg N`: the first N registered UEs (in IMPU order: the UE simulator's order)
/// de-registered by the network, with the plan's contact event (TS 24.229 §5.4.1.5).
fn network_dereg(core: &mut CoreSim, plan: &CorePlan) {
    let users: Vec<String> = core
        .bindings
        .keys()
        .take(plan.network_dereg)
        .cloned()
        .collect();
    for u in users {
        core.deregister_from_network(&u, plan.network_dereg_event);
    }
}

/// Serve on `addr` until `stop` is set; returns the counters.
pub fn serve(addr: SocketAddr, realm: &str, stop: Arc<AtomicBool>) -> std::io::Result<CoreStats> {
    serve_calls(addr, realm, &CorePlan::default(), stop).map(|r| r.stats)
}

/// Serve on `addr` (UDP and TCP), and place the calls of `plan`, until `stop` is set and the
/// calls are over (or 2 s after `stop`: the ones still open count as failed).
pub fn serve_calls(
    addr: SocketAddr,
    realm: &str,
    plan: &CorePlan,
    stop: Arc<AtomicBool>,
) -> std::io::Result<CoreReport> {
    let net = Net::bind(addr, plan.transport, plan.max_udp_request)?;
    serve_on(net, realm, plan, stop)
}

/// [`serve_calls`] on sockets already bound (a test binds port 0 and reads the port first).
pub fn serve_on(
    mut net: Net,
    realm: &str,
    plan: &CorePlan,
    stop: Arc<AtomicBool>,
) -> std::io::Result<CoreReport> {
    let addr = net.local_addr()?;
    // (placing calls, the loop turns every ms: the timers of many calls are due)
    let wait = Duration::from_millis(if plan.calls > 0 { 1 } else { 50 });
    let mut core =
        CoreSim::new(realm, &addr.to_string()).over_tcp(plan.transport == Transport::Tcp);
    let mut caller = Caller {
        plan: plan.clone(),
        calls: (0..plan.calls)
            .map(|_| Term {
                leg: None,
                to: addr,
                src: None,
            })
            .collect(),
        started: 0,
        t0: None,
        last_end: None,
        ok: 0,
        failures: BTreeMap::new(),
        tally: call::Tally::default(),
        setup_180: call::histogram(),
        setup_200: call::histogram(),
        me: addr.to_string(),
        rr: core.record_route(),
        realm: realm.into(),
        own: None,
    };
    let mut far = FarEnd {
        legs: HashMap::new(),
        tally: call::Tally::default(),
        made: 0,
    };
    let mut inbox = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    let mut swept = Instant::now();
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert_with(|| {
                // the UEs are done: the network de-registers the first ones now
                network_dereg(&mut core, plan);
                now
            });
            send_requests(&mut core, &mut net, now);
            let done = caller.finished() && core.notifies_pending() == 0;
            if done || now.duration_since(at) > Duration::from_secs(2) {
                break;
            }
        }
        net.poll(wait, &mut inbox);
        for (bytes, src) in inbox.drain(..) {
            if bytes.is_empty() && src.is_tcp() {
                net.pong(src);
                continue;
            }
            let now = Instant::now();
            dispatch(
                &mut core,
                &mut caller,
                &mut far,
                plan,
                &mut net,
                &bytes,
                src,
                now,
            );
        }
        let now = Instant::now();
        // (the sweep walks the whole table: every 10 ms, not at every packet)
        if now.duration_since(swept) >= Duration::from_millis(10) {
            swept = now;
            for r in core.request_timers(now) {
                net.request_on(r.to, &r.bytes, true, r.tcp);
            }
            far.timers(&mut net, now);
            if plan.calls > 0 {
                caller.timers(&mut net, now);
            }
        }
        if plan.calls > 0 {
            caller.start_due(&core, &mut net, now);
        }
    }
    core.finish();
    core.stats.tcp = net.stats;
    let now = Instant::now();
    let open = caller
        .calls
        .iter()
        .filter(|c| c.leg.as_ref().is_some_and(|l| !l.is_over()))
        .count() as u64;
    let not_placed = (caller.calls.len() - caller.started) as u64;
    if not_placed > 0 {
        *caller
            .failures
            .entry("terminating call not placed (too few UEs registered)")
            .or_insert(0) += not_placed;
    }
    if open > 0 {
        *caller
            .failures
            .entry("terminating call still open at the end")
            .or_insert(0) += open;
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
        placed: caller.tally,
        answered: far.tally,
        calls_elapsed,
        setup_180: caller.setup_180,
        setup_200: caller.setup_200,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aka::{UeSqnState, Usim};
    use crate::sip::Framer;

    fn register(auth: &str, expires: u32, cseq: u32) -> String {
        format!(
            "REGISTER sip:ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.6:5061;branch=z9hG4bKr{cseq}\r\nFrom: <sip:001010000000007@ims.test>;tag=u7\r\nTo: <sip:001010000000007@ims.test>\r\nCall-ID: reg-7@10.0.0.6\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:001010000000007@10.0.0.6:5061>;expires={expires}\r\n{auth}Expires: {expires}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// A de-registration (TS 24.229 §5.1.1.6.1: Expires 0, the last Authorization) is answered
    /// 200 with the Contact at `expires=0`, without a new challenge, and the binding is gone:
    /// no call goes to that UE any more.
    #[test]
    fn a_deregistration_is_answered_and_ends_the_binding() {
        let mut core = CoreSim::new("ims.test", "10.0.0.9:5060");
        let r401 = core
            .handle(register(&empty_auth(), 600000, 1).as_bytes())
            .unwrap();
        assert_eq!(Message::parse(&r401).unwrap().view().status(), Some(401));
        let auth = aka_auth(&r401);
        let ok = core.handle(register(&auth, 600000, 2).as_bytes()).unwrap();
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        assert!(core.bindings.contains_key("001010000000007"));
        let ok = core.handle(register(&auth, 0, 3).as_bytes()).unwrap();
        let m = Message::parse(&ok).unwrap();
        assert_eq!(m.view().status(), Some(200));
        assert_eq!(
            call::text(m.view(), HeaderName::Contact).as_deref(),
            Some("<sip:001010000000007@10.0.0.6:5061>;expires=0")
        );
        assert!(core.bindings.is_empty());
        assert_eq!(core.stats.deregistered, 1);
        assert_eq!(core.stats.challenges, 1, "not challenged again");
    }

    /// A core with UE 7 registered (for 3600 s, its Contact `sip:001010000000007@10.0.0.6:5061`).
    fn registered_core() -> (CoreSim, String) {
        let mut core = CoreSim::new("ims.test", "10.0.0.9:5060");
        let r401 = core
            .handle(register(&empty_auth(), 3600, 1).as_bytes())
            .unwrap();
        let auth = aka_auth(&r401);
        let ok = core.handle(register(&auth, 3600, 2).as_bytes()).unwrap();
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        (core, auth)
    }

    /// The P-CSCF's SUBSCRIBE to the reg event of UE 7 (TS 24.229 §5.2.3): `to_tag` empty for
    /// a new one, `contact` its Contact URI.
    fn subscribe(event: &str, to_tag: &str, cseq: u32, expires: u32, contact: &str) -> String {
        let to_tag = if to_tag.is_empty() {
            String::new()
        } else {
            format!(";tag={to_tag}")
        };
        format!(
            "SUBSCRIBE sip:001010000000007@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.212.0.1:5060;branch=z9hG4bK-sub-{cseq};rport\r\nMax-Forwards: 70\r\nRoute: <sip:orig@10.0.0.9:5060;lr>\r\nFrom: <sip:pcscf.ims.test>;tag=pt1\r\nTo: <sip:001010000000007@ims.test>{to_tag}\r\nCall-ID: sub-1@10.0.0.9\r\nCSeq: {cseq} SUBSCRIBE\r\nEvent: {event}\r\nAccept: application/reginfo+xml\r\nExpires: {expires}\r\nContact: <{contact}>\r\nP-Asserted-Identity: <sip:term@pcscf.ims.test;lr>\r\nP-Charging-Vector: icid-value=abc\r\nContent-Length: 0\r\n\r\n"
        )
    }

    const PCSCF_CONTACT: &str = "sip:10.212.0.1:5060";

    /// The one NOTIFY the core queued: checked strictly (RFC 3261 §8.1.1 headers), its
    /// request, and its text.
    fn one_notify(core: &mut CoreSim) -> (OutRequest, String) {
        let mut out = core.take_requests(Instant::now());
        assert_eq!(out.len(), 1, "one NOTIFY");
        let r = out.remove(0);
        let m = Message::parse_strict(&r.bytes).expect("a well-formed NOTIFY");
        assert!(m.view().is_method(b"NOTIFY"));
        let text = String::from_utf8(r.bytes.clone()).unwrap();
        (r, text)
    }

    fn header(text: &str, name: &str) -> String {
        let m = Message::parse(text.as_bytes()).unwrap();
        let v = m.view();
        v.header_named(name.as_bytes())
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .unwrap_or_default()
    }

    /// The subscriber's answer to a NOTIFY.
    fn answer_notify(text: &str, code: u16) -> Vec<u8> {
        let m = Message::parse(text.as_bytes()).unwrap();
        CoreSim::respond(&m, code, "X", "")
    }

    /// RFC 6665 §4.2.1, RFC 3680, TS 24.229 §5.4.2.1: a SUBSCRIBE to a registered IMPU's reg
    /// event is answered 200 (our tag, the duration granted, our Contact), then a NOTIFY to the
    /// subscriber's Contact with the full state, version 0; its 200 is counted.
    #[test]
    fn a_subscription_is_accepted_and_notified_with_the_full_state() {
        let (mut core, _) = registered_core();
        let from: SocketAddr = "10.212.0.1:5060".parse().unwrap();
        // (the package name without case, with parameters)
        let ok = core
            .handle(subscribe("Reg;id=1", "", 1, 4200, PCSCF_CONTACT).as_bytes())
            .unwrap();
        let m = Message::parse_strict(&ok).unwrap();
        let v = m.view();
        assert_eq!(v.status(), Some(200));
        let to = v.header(HeaderName::To).and_then(NameAddr::parse).unwrap();
        let tag = String::from_utf8(to.tag().unwrap().to_vec()).unwrap();
        assert_eq!(call::text(v, HeaderName::Expires).as_deref(), Some("4200"));
        assert_eq!(
            call::text(v, HeaderName::Contact).as_deref(),
            Some("<sip:scscf@10.0.0.9:5060>")
        );
        let (r, text) = one_notify(&mut core);
        assert_eq!(r.to, from);
        assert!(!r.tcp);
        assert!(
            text.starts_with("NOTIFY sip:10.212.0.1:5060 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(header(&text, "Via").starts_with("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK"));
        assert_eq!(
            header(&text, "From"),
            format!("<sip:001010000000007@ims.test>;tag={tag}")
        );
        assert_eq!(header(&text, "To"), "<sip:pcscf.ims.test>;tag=pt1");
        assert_eq!(header(&text, "Call-ID"), "sub-1@10.0.0.9");
        assert_eq!(header(&text, "CSeq"), "1 NOTIFY");
        assert_eq!(header(&text, "Event"), "reg");
        assert_eq!(header(&text, "Subscription-State"), "active;expires=4200");
        assert_eq!(header(&text, "Content-Type"), "application/reginfo+xml");
        assert_eq!(header(&text, "Contact"), "<sip:scscf@10.0.0.9:5060>");
        assert_eq!(header(&text, "Max-Forwards"), "70");
        for s in [
            "<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"0\" state=\"full\">",
            "<registration aor=\"sip:001010000000007@ims.test\" id=\"reg-001010000000007\" state=\"active\">",
            "state=\"active\" event=\"registered\" expires=\"3600\">",
            "<uri>sip:001010000000007@10.0.0.6:5061</uri>",
        ] {
            assert!(text.contains(s), "{s} in {text}");
        }
        assert!(core.handle(&answer_notify(&text, 200)).is_none());
        assert_eq!(core.stats.subscribed, 1);
        assert_eq!(core.stats.notifies, 1);
        assert_eq!(core.stats.notifies_ok, 1);
        assert_eq!(core.notifies_pending(), 0);
        assert_eq!(core.subscriptions.len(), 1);
        // a duration past twice the registration's is cut down to it
        let sub = subscribe("reg", "", 1, 90000, PCSCF_CONTACT).replace("sub-1@", "sub-2@");
        let ok = core.handle(sub.as_bytes()).unwrap();
        let m = Message::parse(&ok).unwrap();
        assert_eq!(
            call::text(m.view(), HeaderName::Expires).as_deref(),
            Some("7200")
        );
    }

    /// TS 24.229 §5.4.2.1.1: a SUBSCRIBE for an IMPU not registered gets 480; RFC 6665
    /// §4.2.1.1: another event package 489 with Allow-Events; no NOTIFY either way.
    #[test]
    fn a_subscription_to_an_unknown_impu_or_another_package_is_refused() {
        let (mut core, _) = registered_core();
        let unknown = subscribe("reg", "", 1, 600, PCSCF_CONTACT).replace(
            "SUBSCRIBE sip:001010000000007@",
            "SUBSCRIBE sip:001010000000099@",
        );
        let r = core.handle(unknown.as_bytes()).unwrap();
        assert_eq!(Message::parse(&r).unwrap().view().status(), Some(480));
        let r = core
            .handle(subscribe("presence", "", 1, 600, PCSCF_CONTACT).as_bytes())
            .unwrap();
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.view().status(), Some(489));
        assert_eq!(
            call::text(m.view(), HeaderName::AllowEvents).as_deref(),
            Some("reg")
        );
        assert!(core.take_requests(Instant::now()).is_empty());
        assert_eq!(core.stats.subscribe_refused, 2);
        assert!(core.subscriptions.is_empty());
    }

    /// RFC 6665 §4.2.1.2: a refresh in the dialog gets 200 and a NOTIFY (CSeq and version one
    /// more); one in a dialog we do not hold 481 (§4.1.2.2); Expires 0 ends it: 200, a last
    /// NOTIFY `terminated;reason=timeout`, and the dialog is gone.
    #[test]
    fn a_refresh_is_notified_and_expires_0_ends_the_subscription() {
        let (mut core, _) = registered_core();
        let ok = core
            .handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes())
            .unwrap();
        let m = Message::parse(&ok).unwrap();
        let tag = m
            .view()
            .header(HeaderName::To)
            .and_then(NameAddr::parse)
            .and_then(|t| t.tag())
            .map(|t| String::from_utf8(t.to_vec()).unwrap())
            .unwrap();
        let (_, first) = one_notify(&mut core);
        core.handle(&answer_notify(&first, 200));
        let ok = core
            .handle(subscribe("reg", &tag, 2, 3600, PCSCF_CONTACT).as_bytes())
            .unwrap();
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        let (_, text) = one_notify(&mut core);
        assert_eq!(header(&text, "CSeq"), "2 NOTIFY");
        assert!(text.contains("version=\"1\" state=\"full\""), "{text}");
        assert_eq!(header(&text, "Subscription-State"), "active;expires=3600");
        core.handle(&answer_notify(&text, 200));
        // not our dialog: 481, nothing sent
        let r = core
            .handle(subscribe("reg", "other", 3, 3600, PCSCF_CONTACT).as_bytes())
            .unwrap();
        assert_eq!(Message::parse(&r).unwrap().view().status(), Some(481));
        assert!(core.take_requests(Instant::now()).is_empty());
        // removal
        let ok = core
            .handle(subscribe("reg", &tag, 4, 0, PCSCF_CONTACT).as_bytes())
            .unwrap();
        let m = Message::parse(&ok).unwrap();
        assert_eq!(m.view().status(), Some(200));
        assert_eq!(
            call::text(m.view(), HeaderName::Expires).as_deref(),
            Some("0")
        );
        let (_, last) = one_notify(&mut core);
        assert_eq!(header(&last, "CSeq"), "3 NOTIFY");
        assert_eq!(
            header(&last, "Subscription-State"),
            "terminated;reason=timeout"
        );
        assert!(last.contains("version=\"2\""));
        core.handle(&answer_notify(&last, 200));
        assert!(core.subscriptions.is_empty());
        let r = core
            .handle(subscribe("reg", &tag, 5, 3600, PCSCF_CONTACT).as_bytes())
            .unwrap();
        assert_eq!(Message::parse(&r).unwrap().view().status(), Some(481));
        assert_eq!(
            (
                core.stats.subscribed,
                core.stats.resubscribed,
                core.stats.unsubscribed,
                core.stats.subscribe_refused
            ),
            (1, 1, 1, 2)
        );
        assert_eq!((core.stats.notifies, core.stats.notifies_ok), (3, 3));
    }

    /// RFC 3680 §5.1: a re-registration is notified, the contact `refreshed`, the
    /// subscription kept.
    #[test]
    fn a_reregistration_is_notified_as_refreshed() {
        let (mut core, auth) = registered_core();
        core.handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes());
        let (_, first) = one_notify(&mut core);
        core.handle(&answer_notify(&first, 200));
        let ok = core.handle(register(&auth, 3600, 3).as_bytes()).unwrap();
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        let (_, text) = one_notify(&mut core);
        assert_eq!(header(&text, "CSeq"), "2 NOTIFY");
        assert_eq!(header(&text, "Subscription-State"), "active;expires=3600");
        assert!(text.contains("version=\"1\" state=\"full\""), "{text}");
        assert!(text.contains("state=\"active\" event=\"refreshed\" expires=\"3600\""));
        assert_eq!(core.subscriptions.len(), 1);
    }

    /// RFC 3680 §5.1: the UE's de-registration ends its registration; the subscription gets a
    /// last NOTIFY (registration and contact terminated, event `unregistered`,
    /// `terminated;reason=noresource`, RFC 6665 §4.1.3) and is forgotten.
    #[test]
    fn the_ues_deregistration_ends_its_subscription_with_a_notify() {
        let (mut core, auth) = registered_core();
        core.handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes());
        let (_, first) = one_notify(&mut core);
        core.handle(&answer_notify(&first, 200));
        let ok = core.handle(register(&auth, 0, 3).as_bytes()).unwrap();
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        let (_, text) = one_notify(&mut core);
        assert_eq!(header(&text, "CSeq"), "2 NOTIFY");
        assert_eq!(
            header(&text, "Subscription-State"),
            "terminated;reason=noresource"
        );
        for s in [
            "version=\"1\" state=\"full\"",
            "id=\"reg-001010000000007\" state=\"terminated\">",
            "state=\"terminated\" event=\"unregistered\">",
            "<uri>sip:001010000000007@10.0.0.6:5061</uri>",
        ] {
            assert!(text.contains(s), "{s} in {text}");
        }
        assert!(core.subscriptions.is_empty());
        assert!(core.bindings.is_empty());
    }

    /// TS 24.229 §5.4.1.5: the network de-registers a UE: its subscription gets a NOTIFY with
    /// the contact terminated by the event asked (`deactivated`, `rejected`...), the binding
    /// goes; the subscriber's 481 to that last NOTIFY counts apart (it had ended the dialog
    /// already), not as an error.
    #[test]
    fn a_network_deregistration_notifies_and_removes_the_binding() {
        for (event, answer) in [
            (ContactEvent::Deactivated, 200),
            (ContactEvent::Rejected, 481),
        ] {
            let (mut core, _) = registered_core();
            core.handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes());
            let (_, first) = one_notify(&mut core);
            core.handle(&answer_notify(&first, 200));
            assert_eq!(
                core.deregister_from_network("001010000000007", event),
                Some(1)
            );
            let (r, text) = one_notify(&mut core);
            assert_eq!(r.to, "10.212.0.1:5060".parse::<SocketAddr>().unwrap());
            assert_eq!(
                header(&text, "Subscription-State"),
                "terminated;reason=noresource"
            );
            assert!(text.contains("state=\"terminated\">"), "{text}");
            assert!(
                text.contains(&format!(
                    "state=\"terminated\" event=\"{}\">",
                    event.as_str()
                )),
                "{text}"
            );
            assert!(core.bindings.is_empty());
            assert!(core.subscriptions.is_empty());
            assert_eq!(core.stats.network_deregistered, 1);
            core.handle(&answer_notify(&text, answer));
            let s = core.stats;
            assert_eq!(
                (
                    s.notifies,
                    s.notifies_ok,
                    s.notifies_late,
                    s.notifies_failed
                ),
                (2, 1 + u64::from(answer == 200), u64::from(answer != 200), 0)
            );
            assert_eq!(core.deregister_from_network("001010000000007", event), None);
        }
    }

    /// RFC 6665 §4.2.2: a NOTIFY answered with an error (here the subscriber's 400 to a body
    /// it cannot read) counts as one and ends the subscription; a response to no NOTIFY of
    /// ours changes nothing.
    #[test]
    fn a_notify_answered_with_an_error_ends_the_subscription() {
        let (mut core, _) = registered_core();
        core.handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes());
        let (_, first) = one_notify(&mut core);
        core.handle(&answer_notify(
            &first.replace("CSeq: 1 NOTIFY", "CSeq: 9 NOTIFY"),
            200,
        ));
        assert_eq!(core.stats.notifies_ok, 0);
        core.handle(&answer_notify(&first, 400));
        assert_eq!(core.stats.notifies_failed, 1);
        assert!(core.subscriptions.is_empty());
        core.handle(&answer_notify(&first, 200));
        assert_eq!(core.stats.notifies_ok, 0, "its transaction is over");
    }

    /// A NOTIFY never answered over UDP is sent again on timer E and counted unanswered at
    /// timer F (RFC 3261 §17.1.2.2), its subscription removed (RFC 6665 §4.2.2).
    #[test]
    fn an_unanswered_notify_is_sent_again_then_given_up() {
        let (mut core, _) = registered_core();
        core.handle(subscribe("reg", "", 1, 3600, PCSCF_CONTACT).as_bytes());
        let t0 = Instant::now();
        assert_eq!(core.take_requests(t0).len(), 1);
        assert!(core.request_timers(t0).is_empty());
        assert_eq!(
            core.request_timers(t0 + Duration::from_millis(600)).len(),
            1
        );
        assert!(core.request_timers(t0 + Duration::from_secs(33)).is_empty());
        assert_eq!(core.stats.notifies_unanswered, 1);
        assert!(core.subscriptions.is_empty());
    }

    /// With `network_dereg`, once stopped the core de-registers the first UE from the network
    /// side: the NOTIFY goes to the subscriber's Contact (UDP), its 200 is counted, and the run
    /// ends once it is answered.
    #[test]
    fn when_stopped_the_core_deregisters_from_the_network_side() {
        let pcscf = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        pcscf
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let me = pcscf.local_addr().unwrap();
        let plan = CorePlan {
            network_dereg: 1,
            ..CorePlan::default()
        };
        let (addr, stop, h) = running(plan);
        let mut b = vec![0u8; 65536];
        let mut recv = |pcscf: &std::net::UdpSocket| {
            let (n, _) = pcscf.recv_from(&mut b).unwrap();
            String::from_utf8(b[..n].to_vec()).unwrap()
        };
        pcscf
            .send_to(register(&empty_auth(), 3600, 1).as_bytes(), addr)
            .unwrap();
        let r401 = recv(&pcscf);
        pcscf
            .send_to(
                register(&aka_auth(r401.as_bytes()), 3600, 2).as_bytes(),
                addr,
            )
            .unwrap();
        assert!(recv(&pcscf).starts_with("SIP/2.0 200"));
        let contact = format!("sip:{me}");
        pcscf
            .send_to(subscribe("reg", "", 1, 3600, &contact).as_bytes(), addr)
            .unwrap();
        assert!(recv(&pcscf).starts_with("SIP/2.0 200"));
        let first = recv(&pcscf);
        assert!(
            first.starts_with(&format!("NOTIFY {contact} SIP/2.0")),
            "{first}"
        );
        pcscf.send_to(&answer_notify(&first, 200), addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        let last = recv(&pcscf);
        assert!(last.contains("event=\"deactivated\""), "{last}");
        pcscf.send_to(&answer_notify(&last, 200), addr).unwrap();
        let r = h.join().unwrap().unwrap();
        let s = r.stats;
        assert_eq!(s.network_deregistered, 1);
        assert_eq!(
            (s.notifies, s.notifies_ok, s.notifies_unanswered),
            (2, 2, 0)
        );
    }

    /// Over TCP (RFC 3261 §18): a SUBSCRIBE on a connection is answered on it (§18.2.2), and
    /// the NOTIFY goes to the Contact (`;transport=tcp`) on a connection the core opens there,
    /// its Via `SIP/2.0/TCP`; the 200 on that connection ends its transaction.
    #[test]
    fn a_subscribe_over_tcp_is_answered_on_its_connection_and_notified_over_tcp() {
        use std::io::Write;
        let pcscf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pcscf_addr = pcscf.local_addr().unwrap();
        pcscf.set_nonblocking(true).unwrap();
        let (addr, stop, h) = running(CorePlan::default());
        let mut c = connect(addr);
        let mut framer = Framer::with_capacity(65536);
        let tcp = |s: String| s.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        c.write_all(tcp(register(&empty_auth(), 3600, 1)).as_bytes())
            .unwrap();
        let (r401, _) = read_message(&mut c, &mut framer);
        c.write_all(tcp(register(&aka_auth(&r401), 3600, 2)).as_bytes())
            .unwrap();
        let (ok, _) = read_message(&mut c, &mut framer);
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        let contact = format!("sip:{pcscf_addr};transport=tcp");
        c.write_all(tcp(subscribe("reg", "", 1, 3600, &contact)).as_bytes())
            .unwrap();
        let (ok, _) = read_message(&mut c, &mut framer);
        assert_eq!(Message::parse(&ok).unwrap().view().status(), Some(200));
        let mut inbound = accepted(&pcscf, Duration::from_secs(3), "the core did not connect");
        let (notify, _) = read_message(&mut inbound, &mut Framer::with_capacity(65536));
        let text = String::from_utf8(notify).unwrap();
        assert!(
            text.starts_with(&format!("NOTIFY {contact} SIP/2.0")),
            "{text}"
        );
        assert!(header(&text, "Via").starts_with("SIP/2.0/TCP "), "{text}");
        inbound.write_all(&answer_notify(&text, 200)).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        let s = r.stats;
        assert_eq!((s.subscribed, s.notifies, s.notifies_ok), (1, 1, 1));
        assert_eq!(s.notifies_unanswered, 0);
        assert_eq!(s.tcp.opened, 1);
    }

    /// A running core on 127.0.0.1 (a free port), stopped and joined by the caller.
    fn running(
        plan: CorePlan,
    ) -> (
        SocketAddr,
        Arc<AtomicBool>,
        std::thread::JoinHandle<std::io::Result<CoreReport>>,
    ) {
        let net = Net::bind(
            "127.0.0.1:0".parse().unwrap(),
            plan.transport,
            plan.max_udp_request,
        )
        .unwrap();
        let addr = net.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = std::thread::spawn(move || serve_on(net, "ims.test", &plan, s2));
        (addr, stop, h)
    }

    /// The connection the core opens to our listener `pcscf` within `limit` (blocking reads,
    /// 200 ms timeout); `what` failed otherwise.
    fn accepted(pcscf: &std::net::TcpListener, limit: Duration, what: &str) -> std::net::TcpStream {
        let deadline = Instant::now() + limit;
        let s = loop {
            match pcscf.accept() {
                Ok((s, _)) => break s,
                Err(_) => {
                    assert!(Instant::now() < deadline, "{what}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    }

    fn connect(addr: SocketAddr) -> std::net::TcpStream {
        let c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        c
    }

    /// Read from `c` into `framer` until it holds a whole message (bounded: 3 s); the message,
    /// and what stays buffered after it.
    fn read_message(c: &mut std::net::TcpStream, framer: &mut Framer) -> (Vec<u8>, usize) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Ok(Some(crate::sip::Frame::Message(m))) = framer.next_frame() {
                let m = m.to_vec();
                return (m, framer.buffered());
            }
            assert!(Instant::now() < deadline, "no whole message in time");
            let mut b = [0u8; 4096];
            match c.read(&mut b) {
                Ok(0) => panic!("connection closed"),
                Ok(n) => assert_eq!(framer.push(&b[..n]), n),
                Err(_) => {}
            }
        }
    }

    /// Whether `c` is closed by the peer within 3 s (EOF or reset), reading what comes.
    fn closed_soon(c: &mut std::net::TcpStream) -> bool {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut b = [0u8; 4096];
        while Instant::now() < deadline {
            match c.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }

    fn empty_auth() -> String {
        "Authorization: Digest username=\"001010000000007@ims.test\",realm=\"ims.test\",uri=\"sip:ims.test\",nonce=\"\",response=\"\"\r\n".into()
    }

    /// The Authorization answering the 401 `r401` (the USIM of test set 1).
    fn aka_auth(r401: &[u8]) -> String {
        let impi = "001010000000007@ims.test";
        let m = Message::parse(r401).unwrap();
        let nonce = m
            .view()
            .header(HeaderName::WwwAuthenticate)
            .and_then(Digest::parse)
            .and_then(|d| d.nonce().map(<[u8]>::to_vec))
            .unwrap();
        let nonce = String::from_utf8(nonce).unwrap();
        let k = aka::hex_array::<16>(TEST_K).unwrap();
        let opc = aka::hex_array::<16>(TEST_OPC).unwrap();
        let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
        let got = usim.authenticate_nonce(&nonce).unwrap();
        let input = digest::DigestInput {
            username: impi.as_bytes(),
            realm: b"ims.test",
            nonce: nonce.as_bytes(),
            method: b"REGISTER",
            uri: b"sip:ims.test",
            qop: digest::Qop::None,
        };
        let resp = digest::response_aka(&input, &got.res);
        format!(
            "Authorization: Digest username=\"{impi}\",realm=\"ims.test\",uri=\"sip:ims.test\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\n",
            resp.as_str()
        )
    }

    /// RFC 3261 §18: the core listens on TCP at its UDP address, frames the stream (a REGISTER
    /// cut mid-header into two segments), answers on the same connection (§18.2.2), and
    /// answers a "\r\n\r\n" keep-alive with "\r\n" (RFC 5626 §4.4.1).
    #[test]
    fn a_register_over_tcp_is_answered_on_its_connection_and_a_ping_is_ponged() {
        use std::io::Write;
        let (addr, stop, h) = running(CorePlan::default());
        let mut c = connect(addr);
        let reg = register(&empty_auth(), 600000, 1).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        let cut = reg.find("Call-ID").unwrap() + 4;
        c.write_all(&reg.as_bytes()[..cut]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(&reg.as_bytes()[cut..]).unwrap();
        c.write_all(b"\r\n\r\n").unwrap();
        let mut framer = Framer::with_capacity(65536);
        let (r401, left) = read_message(&mut c, &mut framer);
        let m = Message::parse(&r401).unwrap();
        assert_eq!(m.view().status(), Some(401));
        // the pong: "\r\n" after the 401, nothing else
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut rest = left;
        while rest < 2 && Instant::now() < deadline {
            use std::io::Read;
            let mut b = [0u8; 64];
            if let Ok(n) = c.read(&mut b) {
                assert!(n > 0, "closed");
                framer.push(&b[..n]);
                rest += n;
            }
        }
        assert_eq!(rest, 2, "one CRLF pong after the 401");
        assert!(!framer.in_message());
        // the second REGISTER, its answer on the same connection: registered
        c.write_all(
            register(&aka_auth(&r401), 600000, 2)
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                .as_bytes(),
        )
        .unwrap();
        let (ok, _) = read_message(&mut c, &mut framer);
        let m = Message::parse(&ok).unwrap();
        assert_eq!(m.view().status(), Some(200));
        let sr = call::text(m.view(), HeaderName::ServiceRoute).unwrap();
        assert!(!sr.contains("transport=tcp"), "udp mode: {sr}");
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.stats.challenges, 1);
        assert_eq!(r.stats.registered, 1);
        assert_eq!(r.stats.tcp.accepted, 1);
        assert_eq!(r.stats.tcp.messages_in, 2);
        assert_eq!(r.stats.tcp.messages_out, 2);
        assert_eq!(r.stats.tcp.pings, 1);
        assert_eq!(r.stats.tcp.closed_by_error, 0);
    }

    /// RFC 3261 §18.3: on a stream a message without Content-Length cannot be framed: the
    /// connection is closed (counted), and the core goes on serving others.
    #[test]
    fn a_message_without_content_length_closes_its_connection() {
        use std::io::Write;
        let (addr, stop, h) = running(CorePlan::default());
        let mut bad = connect(addr);
        bad.write_all(b"OPTIONS sip:ims.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@ims.test>;tag=1\r\nTo: <sip:ims.test>\r\nCall-ID: nocl\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap();
        assert!(closed_soon(&mut bad), "the connection is closed");
        // another connection is still served
        let mut c = connect(addr);
        c.write_all(
            register(&empty_auth(), 600000, 1)
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                .as_bytes(),
        )
        .unwrap();
        let (r, _) = read_message(&mut c, &mut Framer::with_capacity(65536));
        assert_eq!(Message::parse(&r).unwrap().view().status(), Some(401));
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.stats.tcp.accepted, 2);
        assert_eq!(r.stats.tcp.framing_errors, 1);
        assert_eq!(r.stats.tcp.closed_by_error, 1);
        assert_eq!(r.stats.messages, 0, "the OPTIONS was never handled");
    }

    /// With `--transport tcp` the Service-Route asks for TCP (RFC 3263 §4.1), and the core's
    /// own call to the registered UE goes over a connection it opens to the P-CSCF (the top Via
    /// sent-by of the REGISTER: where the P-CSCF listens), its Via `SIP/2.0/TCP`, and is not
    /// sent again on timer A (RFC 3261 §17.1.1.2: unreliable transports only).
    #[test]
    fn in_tcp_mode_the_core_calls_over_a_connection_it_opens() {
        use std::io::Write;
        let pcscf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pcscf_addr = pcscf.local_addr().unwrap();
        pcscf.set_nonblocking(true).unwrap();
        let plan = CorePlan {
            calls: 1,
            transport: Transport::Tcp,
            timeout: Duration::from_secs(3),
            ..CorePlan::default()
        };
        let (addr, stop, h) = running(plan);
        let mut c = connect(addr);
        let via = format!("SIP/2.0/TCP {pcscf_addr}");
        let reg = |auth: &str, cseq| {
            register(auth, 600000, cseq)
                .replace("SIP/2.0/UDP 10.0.0.6:5061", &via)
                .replace(
                    "Contact:",
                    &format!("Path: <sip:term@{pcscf_addr};lr>\r\nContact:"),
                )
        };
        let mut framer = Framer::with_capacity(65536);
        c.write_all(reg(&empty_auth(), 1).as_bytes()).unwrap();
        let (r401, _) = read_message(&mut c, &mut framer);
        c.write_all(reg(&aka_auth(&r401), 2).as_bytes()).unwrap();
        let (ok, _) = read_message(&mut c, &mut framer);
        let m = Message::parse(&ok).unwrap();
        assert_eq!(m.view().status(), Some(200));
        let sr = call::text(m.view(), HeaderName::ServiceRoute).unwrap();
        assert!(sr.contains(";transport=tcp"), "{sr}");
        // the core connects to the P-CSCF's address and sends its INVITE there
        let mut inbound = accepted(&pcscf, Duration::from_secs(3), "the core did not connect");
        let mut framer = Framer::with_capacity(65536);
        let (invite, left) = read_message(&mut inbound, &mut framer);
        let m = Message::parse(&invite).unwrap();
        let v = m.view();
        assert!(v.is_method(b"INVITE"));
        assert_eq!(
            v.request_uri(),
            Some(&b"sip:001010000000007@10.0.0.6:5061"[..])
        );
        let top_via = call::text(v, HeaderName::Via).unwrap();
        assert!(top_via.starts_with("SIP/2.0/TCP "), "{top_via}");
        let rr = call::text(v, HeaderName::RecordRoute).unwrap();
        assert!(rr.contains(";transport=tcp"), "{rr}");
        assert_eq!(left, 0);
        // no INVITE again after timer A's 500 ms
        let quiet = Instant::now() + Duration::from_millis(800);
        while Instant::now() < quiet {
            use std::io::Read;
            let mut b = [0u8; 4096];
            if let Ok(n) = inbound.read(&mut b) {
                assert_eq!(n, 0, "nothing sent again over TCP");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.stats.tcp.opened, 1);
        assert_eq!(r.stats.tcp.accepted, 1);
        assert_eq!(r.stats.tcp.messages_out, 3, "401, 200, INVITE");
    }

    /// RFC 3261 §18.2.2: a response whose connection is gone goes on a new connection to the
    /// top Via's sent-by: the far end's 200, sent again until its ACK (§13.3.1.4), after the
    /// P-CSCF closed the connection the INVITE came on.
    #[test]
    fn a_response_whose_connection_is_gone_goes_to_the_via_sent_by() {
        use std::io::Write;
        let pcscf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pcscf_addr = pcscf.local_addr().unwrap();
        pcscf.set_nonblocking(true).unwrap();
        let (addr, stop, h) = running(CorePlan::default());
        let mut c = connect(addr);
        let invite = format!(
            "INVITE sip:far@ims.test SIP/2.0\r\nVia: SIP/2.0/TCP {pcscf_addr};branch=z9hG4bKinv1\r\nMax-Forwards: 70\r\nFrom: <sip:001010000000007@ims.test>;tag=u1\r\nTo: <sip:far@ims.test>\r\nCall-ID: call-0@t\r\nCSeq: 1 INVITE\r\nContact: <sip:u@{pcscf_addr}>\r\nContent-Length: 0\r\n\r\n"
        );
        c.write_all(invite.as_bytes()).unwrap();
        let mut framer = Framer::with_capacity(65536);
        let mut codes = Vec::new();
        while codes.last() != Some(&200) {
            let (r, _) = read_message(&mut c, &mut framer);
            codes.push(Message::parse(&r).unwrap().view().status().unwrap());
        }
        assert_eq!(codes, [100, 180, 200]);
        drop(c);
        let mut again = accepted(&pcscf, Duration::from_secs(4), "the 200 did not come again");
        let (r, _) = read_message(&mut again, &mut Framer::with_capacity(65536));
        let m = Message::parse(&r).unwrap();
        assert_eq!(m.view().status(), Some(200));
        assert_eq!(
            call::text(m.view(), HeaderName::CallId).as_deref(),
            Some("call-0@t")
        );
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.stats.tcp.accepted, 1);
        assert_eq!(r.stats.tcp.opened, 1);
        assert_eq!(r.stats.tcp.closed_by_error, 0);
    }

    /// The connections are bounded: past [`CONNS_MAX`](crate::sim::corenet::CONNS_MAX) open
    /// ones a new connection is closed at once and counted as refused; the open ones are still
    /// served.
    #[test]
    fn connections_past_the_bound_are_refused() {
        use crate::sim::corenet::CONNS_MAX;
        use std::io::Write;
        let (addr, stop, h) = running(CorePlan::default());
        let mut held: Vec<std::net::TcpStream> =
            (0..CONNS_MAX + 4).map(|_| connect(addr)).collect();
        // the ones past the bound are closed by the core
        let refused = held.split_off(CONNS_MAX);
        let mut closed = 0;
        for mut c in refused {
            if closed_soon(&mut c) {
                closed += 1;
            }
        }
        assert_eq!(closed, 4);
        let c = &mut held[CONNS_MAX - 1];
        c.write_all(
            register(&empty_auth(), 600000, 1)
                .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
                .as_bytes(),
        )
        .unwrap();
        let (r, _) = read_message(c, &mut Framer::with_capacity(65536));
        assert_eq!(Message::parse(&r).unwrap().view().status(), Some(401));
        stop.store(true, Ordering::Relaxed);
        let r = h.join().unwrap().unwrap();
        assert_eq!(r.stats.tcp.accepted, CONNS_MAX as u64);
        assert_eq!(r.stats.tcp.refused, 4);
    }
}
