//! The calls of each registration, as the registration thread knows them, and their release
//! when the registration ends (TS 24.229 §5.2.8.1.2 [spec-m]: the P-CSCF releases the
//! sessions of a user whose registration is gone, with a BYE toward the core and one toward
//! the UE while it can still be reached).
//!
//! The workers stay stateless: they copy each message that moves a dialog — an initial INVITE,
//! a final response to an INVITE, a request inside a dialog other than ACK — to a bounded queue
//! of their own, tagged with the registration (binding) it belongs to
//! ([`crate::dataplane::split_dialog_event`]). From those copies this book keeps, per dialog,
//! what a BYE needs (RFC 3261 §12.1, §12.2.1.1): Call-ID, both tags with their From/To values,
//! both contacts (remote targets), the route set toward the core and the highest CSeq each side
//! used.
//!
//! Owns: the INVITEs waiting for a final response (keyed by Call-ID and From tag), the
//! confirmed dialogs (Call-ID and both tags) of each binding, the BYEs of a release. Sans-IO:
//! events and `now` in, [`Outgoing`] messages out. Its memory is bounded: INVITEs wait at most
//! [`EARLY_LIFE`] and [`MAX_EARLY`] in all, a binding keeps at most [`MAX_PER_BINDING`]
//! dialogs and the book [`MAX_DIALOGS`]; the oldest make room, counted.
//!
//! What a release sends (on behalf of each end toward the other, TS 24.229 §5.2.8.1.2
//! [spec-m], modelled on the S-CSCF's §5.4.5.1.2): Request-URI the other end's contact; From /
//! To the sender's and the other end's values with their tags; the dialog's Call-ID; CSeq the
//! sender's last one plus one (RFC 3261 §12.2.1.1); toward the core the route set beyond our
//! own entries (the UE's S-CSCF first, where the workers send the UE's in-dialog requests);
//! `Reason: SIP;cause=480` (RFC 3326: the user is no longer reachable here). Our Via carries a
//! branch of the release format ([`crate::sip::rules::RELEASE_BRANCH`]): the workers hand the
//! answers back here ([`Dialogs::on_release_answer`]) instead of relaying them. An INVITE still
//! waiting for its final response is cancelled instead (§5.2.8.1.1 [spec-m], RFC 3261 §9.1):
//! its CANCEL repeats the Request-URI, Call-ID, From, To, CSeq number, Route and our Via of the
//! INVITE as forwarded, so it reaches the transaction downstream even though the workers keep
//! none.

use super::idmap::IdMap;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dataplane::{Datagram, Protection};
use crate::io::Side;
use crate::sip::headers::{NameAddr, cseq};
use crate::sip::{HeaderName, Message, OwnUris, View};

/// INVITEs waiting for their final response, all bindings together.
pub const MAX_EARLY: usize = 1 << 16;
/// How long an INVITE waits for its final response: longer than a proxy's Timer C (RFC 3261
/// §16.6 item 11: more than 3 minutes) would let it.
pub const EARLY_LIFE: Duration = Duration::from_secs(200);
/// Confirmed dialogs per registration: a phone holds a few calls at once (hold, waiting,
/// conference); past this the oldest is forgotten, so a UE that never sends BYE cannot grow the
/// book.
pub const MAX_PER_BINDING: usize = 16;
/// Confirmed dialogs in all.
pub const MAX_DIALOGS: usize = 1 << 20;

/// The book's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DialogStats {
    /// Events handed in by the workers.
    pub events: u64,
    /// Events that did not parse or lacked a field a dialog needs (Call-ID, tags, CSeq, Contact).
    pub malformed: u64,
    /// Dialogs confirmed (a 2xx to an INVITE we saw; its retransmissions are not counted).
    pub confirmed: u64,
    /// 2xx responses to an INVITE we had no event of (lost to a full queue, or older than
    /// [`EARLY_LIFE`]): such a call cannot be released.
    pub untracked: u64,
    /// INVITEs that got a non-2xx final response.
    pub failed: u64,
    /// Dialogs ended by a BYE through us.
    pub ended: u64,
    /// Dialogs and waiting INVITEs forgotten to keep within the bounds (module doc).
    pub evicted: u64,
    /// Dialogs released because their registration ended, and the BYEs sent for them.
    pub released: u64,
    pub release_bye_core: u64,
    pub release_bye_ue: u64,
    /// INVITEs still waiting when their registration ended, cancelled toward where they went.
    pub release_cancel_core: u64,
    pub release_cancel_ue: u64,
    /// Answers to those BYEs, 2xx and others.
    pub release_answered: u64,
    pub release_refused: u64,
    /// Responses with a release branch we did not make (a UE's invention): dropped.
    pub release_forged: u64,
    /// Release requests not sent because they would not be valid SIP (a value of the dialog
    /// that cannot stand where a release puts it, e.g. a Contact as Request-URI).
    pub release_unsendable: u64,
}

impl DialogStats {
    /// Every counter with its name (Prometheus and logs); the destructuring names each field,
    /// so one added to the struct and not here does not compile.
    pub fn named(&self) -> [(&'static str, u64); 16] {
        let DialogStats {
            events,
            malformed,
            confirmed,
            untracked,
            failed,
            ended,
            evicted,
            released,
            release_bye_core,
            release_bye_ue,
            release_cancel_core,
            release_cancel_ue,
            release_answered,
            release_refused,
            release_forged,
            release_unsendable,
        } = *self;
        [
            ("events", events),
            ("malformed", malformed),
            ("confirmed", confirmed),
            ("untracked", untracked),
            ("failed", failed),
            ("ended", ended),
            ("evicted", evicted),
            ("released", released),
            ("release_bye_core", release_bye_core),
            ("release_bye_ue", release_bye_ue),
            ("release_cancel_core", release_cancel_core),
            ("release_cancel_ue", release_cancel_ue),
            ("release_answered", release_answered),
            ("release_refused", release_refused),
            ("release_forged", release_forged),
            ("release_unsendable", release_unsendable),
        ]
    }
}

/// An INVITE on its way: what the dialog needs from it.
#[derive(Debug)]
struct Offer {
    binding: u64,
    ue_is_caller: bool,
    /// The From value (with the caller's tag) and the caller's Contact URI.
    caller: Box<[u8]>,
    caller_contact: Box<[u8]>,
    cseq: u64,
    /// For an INVITE from the core (a called UE): its Record-Route entries other than ours, in
    /// order — the UE's route set beyond us (RFC 3261 §12.1.1), taken from the core's request
    /// rather than from the UE's 2xx, whose entries below ours the UE could have rewritten.
    core_route: Vec<Box<[u8]>>,
    /// What a CANCEL of it repeats (RFC 3261 §9.1): the Request-URI, the To value, the Route
    /// values and our Via, as we forwarded it.
    request_uri: Box<[u8]>,
    to: Box<[u8]>,
    routes: Vec<Box<[u8]>>,
    top_via: Box<[u8]>,
    /// A 2xx came (a dialog of it is in the book): nothing left to cancel.
    answered: bool,
    at: Instant,
}

/// (Call-ID, From tag): an INVITE and the dialogs it may create.
type EarlyKey = (Box<[u8]>, Box<[u8]>);
/// (Call-ID, caller's tag, callee's tag) (RFC 3261 §12).
type DialogId = (Box<[u8]>, Box<[u8]>, Box<[u8]>);

/// A confirmed dialog of a registered UE.
#[derive(Debug)]
struct Dialog {
    binding: u64,
    ue_is_caller: bool,
    caller: Box<[u8]>,
    callee: Box<[u8]>,
    caller_contact: Box<[u8]>,
    callee_contact: Box<[u8]>,
    /// Route values toward the far end, after our own entries, in the order a request from the
    /// UE carries them (RFC 3261 §12.1.1 / §12.1.2).
    core_route: Vec<Box<[u8]>>,
    caller_cseq: u64,
    /// None until the callee sends a request in the dialog (RFC 3261 §12.1.1: its remote
    /// sequence number is empty, any value is accepted).
    callee_cseq: Option<u64>,
    /// Where the workers send the UE's requests in this dialog (its S-CSCF), when known.
    next_hop: Option<SocketAddr>,
    /// Its number in the binding's list, oldest first.
    seq: u64,
}

/// How a release reaches the UE: over the outbound SA of its current set, from our port-c to
/// its port-s (TS 33.203 §7.1), with our UE-side address as Via sent-by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UeLeg {
    pub from: SocketAddr,
    pub to: SocketAddr,
    /// Our inbound SPI of that set (names the set; the worker picks the SA by the flow).
    pub spi: u32,
}

impl UeLeg {
    /// `payload` over the UE's SA set (module doc).
    fn carry(&self, payload: Vec<u8>) -> Outgoing {
        Datagram {
            side: Side::Ue,
            protection: Protection::Protected { spi: self.spi },
            src: self.from,
            dst: self.to,
            payload,
        }
    }
}

/// Where a release goes: our core-side address (source and Via), the next hop toward the core
/// when the dialog does not name one, and the UE while it has an SA set.
#[derive(Clone, Debug)]
pub struct Legs<'a> {
    pub core: SocketAddr,
    pub via_sent_by: &'a str,
    pub next_hop: Option<SocketAddr>,
    /// The registration's next hop takes requests over TCP (RFC 3263 §4.1): our BYEs go so.
    pub core_tcp: bool,
    pub ue: Option<UeLeg>,
}

impl Legs<'_> {
    /// `payload` from our core-side address to `next`, in the clear: over TCP when its top
    /// Via says so (our BYE toward a TCP next hop; a CANCEL, which goes the way of its INVITE,
    /// RFC 3261 §9.1), as a datagram otherwise.
    fn toward_core(&self, next: SocketAddr, payload: Vec<u8>) -> Outgoing {
        let tcp = crate::sip::Message::parse(&payload).is_ok_and(|m| {
            m.view()
                .values(crate::sip::HeaderName::Via)
                .next()
                .and_then(crate::sip::headers::Via::parse)
                .is_some_and(|v| v.transport.eq_ignore_ascii_case(b"TCP"))
        });
        Datagram {
            side: Side::Core,
            protection: Protection::toward_core(tcp),
            src: self.core,
            dst: next,
            payload,
        }
    }
}

/// The dialog book (module doc).
#[derive(Debug)]
pub struct Dialogs {
    early: HashMap<EarlyKey, Offer>,
    /// `early`'s keys, oldest first, with when each came (an entry whose Offer is younger was
    /// replaced by a retransmission or a new INVITE and is stale here).
    early_order: VecDeque<(Instant, EarlyKey)>,
    dialogs: HashMap<DialogId, Dialog>,
    /// The dialogs in the order they were confirmed, with their number (an entry whose dialog
    /// is gone or has another number is stale): who goes when the book is full.
    order: VecDeque<(u64, DialogId)>,
    by_binding: IdMap<Vec<DialogId>>,
    /// The keys of each binding's INVITEs in `early` (stale ones skipped and pruned; at most
    /// 4 × [`MAX_PER_BINDING`] kept).
    early_by_binding: IdMap<Vec<EarlyKey>>,
    seq: u64,
    /// Confirmed dialogs kept at most ([`MAX_DIALOGS`]).
    max_dialogs: usize,
    /// Keys the tag of the release branches: an answer is counted only for a BYE we sent.
    branch_key: std::hash::RandomState,
    pub stats: DialogStats,
}

impl Default for Dialogs {
    fn default() -> Self {
        Dialogs::new()
    }
}

/// The bytes of a header's value as an owned box.
fn boxed(b: &[u8]) -> Box<[u8]> {
    b.into()
}

/// The URI of the first Contact of `v`.
fn contact_uri(v: View<'_>) -> Option<Box<[u8]>> {
    let c = v.values(HeaderName::Contact).next()?;
    Some(boxed(NameAddr::parse(c)?.uri))
}

/// The Record-Route entries of `v` that are not ours, top first.
fn foreign_record_route(v: View<'_>, own: &OwnUris) -> Vec<Box<[u8]>> {
    v.values(HeaderName::RecordRoute)
        .filter(|rr| NameAddr::parse(rr).is_some_and(|na| !own.is_us(na.uri)))
        .map(boxed)
        .collect()
}

/// The tag of a From or To value.
fn tag_of(value: &[u8]) -> Option<&[u8]> {
    NameAddr::parse(value)?.tag()
}

impl Dialogs {
    pub fn new() -> Dialogs {
        Dialogs::with_capacity(MAX_DIALOGS)
    }

    /// A book of at most `max_dialogs` confirmed dialogs (tests use small ones).
    pub fn with_capacity(max_dialogs: usize) -> Dialogs {
        Dialogs {
            max_dialogs: max_dialogs.max(1),
            early: HashMap::new(),
            early_order: VecDeque::new(),
            dialogs: HashMap::new(),
            order: VecDeque::new(),
            by_binding: IdMap::default(),
            early_by_binding: IdMap::default(),
            seq: 0,
            branch_key: std::hash::RandomState::new(),
            stats: DialogStats::default(),
        }
    }

    /// Confirmed dialogs in the book.
    pub fn len(&self) -> usize {
        self.dialogs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dialogs.is_empty()
    }

    /// INVITEs waiting for a final response.
    pub fn waiting(&self) -> usize {
        self.early.len()
    }

    /// Confirmed dialogs of `binding`.
    pub fn of_binding(&self, binding: u64) -> usize {
        self.by_binding.get(&binding).map_or(0, Vec::len)
    }

    /// The book is consistent: every dialog is in its binding's list and every listed one in
    /// the book, no binding over [`MAX_PER_BINDING`], no empty list, the waiting INVITEs within
    /// [`MAX_EARLY`]. The tests and the fuzz target check it after every step.
    pub fn check(&self) -> Result<(), String> {
        let listed: usize = self.by_binding.values().map(Vec::len).sum();
        if listed != self.dialogs.len() {
            return Err(format!(
                "{listed} listed, {} in the book",
                self.dialogs.len()
            ));
        }
        for (b, list) in &self.by_binding {
            if list.is_empty() || list.len() > MAX_PER_BINDING {
                return Err(format!("binding {b}: {} dialogs", list.len()));
            }
            if let Some(id) = list
                .iter()
                .find(|id| self.dialogs.get(*id).is_none_or(|d| d.binding != *b))
            {
                return Err(format!("binding {b}: {id:?} not its own"));
            }
        }
        if self.order.len() < self.dialogs.len() {
            return Err(format!(
                "{} in order, {} in the book",
                self.order.len(),
                self.dialogs.len()
            ));
        }
        if self.early.len() > MAX_EARLY || self.early_order.len() < self.early.len() {
            return Err(format!(
                "{} waiting, {} in order",
                self.early.len(),
                self.early_order.len()
            ));
        }
        Ok(())
    }

    /// A worker's dialog event: `msg` (a whole SIP message as relayed) of the registration
    /// `binding`, which came from the UE (`from` [`Side::Ue`]) or from the core; `next_hop` the
    /// registration's S-CSCF now, `own` what names us (our Record-Route entries).
    pub fn handle_event(
        &mut self,
        from: Side,
        binding: u64,
        msg: &[u8],
        next_hop: Option<SocketAddr>,
        own: &OwnUris,
        now: Instant,
    ) {
        self.stats.events += 1;
        self.expire(now);
        // (the workers validated what they relayed; checked again: the book trusts no input)
        let Ok(m) = Message::parse_strict(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let v = m.view();
        let ok = match v.status() {
            None => self.on_request(v, from, binding, own, now),
            Some(code) => self.on_final(v, code, binding, next_hop, own),
        };
        if ok.is_none() {
            self.stats.malformed += 1;
        }
    }

    /// An initial INVITE, or a request inside a dialog (its CSeq; a BYE ends the dialog).
    fn on_request(
        &mut self,
        v: View<'_>,
        from: Side,
        binding: u64,
        own: &OwnUris,
        now: Instant,
    ) -> Option<()> {
        let call_id = v.header(HeaderName::CallId)?;
        let from_v = v.header(HeaderName::From)?;
        let from_tag = tag_of(from_v)?;
        let (n, method) = cseq(v.header(HeaderName::CSeq)?)?;
        let to_tag = v.header(HeaderName::To).and_then(tag_of);
        let Some(to_tag) = to_tag else {
            if !v.is_method(b"INVITE") {
                return Some(());
            }
            let key = (boxed(call_id), boxed(from_tag));
            let offer = Offer {
                binding,
                ue_is_caller: from == Side::Ue,
                caller: boxed(from_v),
                caller_contact: contact_uri(v)?,
                cseq: n,
                core_route: if from == Side::Core {
                    foreign_record_route(v, own)
                } else {
                    Vec::new()
                },
                request_uri: boxed(v.request_uri()?),
                to: boxed(v.header(HeaderName::To)?),
                routes: v.values(HeaderName::Route).map(boxed).collect(),
                top_via: boxed(v.values(HeaderName::Via).next()?),
                answered: false,
                at: now,
            };
            if self.early.len() >= MAX_EARLY && !self.early.contains_key(&key) {
                self.evict_early();
            }
            self.early_order.push_back((now, key.clone()));
            let list = self.early_by_binding.entry(binding).or_default();
            if list.len() >= MAX_PER_BINDING {
                // forget the keys of INVITEs already answered or gone
                let early = &self.early;
                list.retain(|k| early.get(k).is_some_and(|o| !o.answered));
            }
            if list.len() < 4 * MAX_PER_BINDING {
                list.push(key.clone());
            }
            self.early.insert(key, offer);
            return Some(());
        };
        // Inside a dialog: the sender is the caller when its From tag is the caller's.
        let as_caller = (boxed(call_id), boxed(from_tag), boxed(to_tag));
        let (id, by_caller) = if self.dialogs.contains_key(&as_caller) {
            (as_caller, true)
        } else {
            ((as_caller.0, as_caller.2, as_caller.1), false)
        };
        let Some(d) = self.dialogs.get_mut(&id) else {
            return Some(());
        };
        // a request from another registration's leg is not this dialog's (the workers check
        // the flow tokens; this keeps the book consistent whatever comes)
        if d.binding != binding || d.ue_is_caller != (by_caller == (from == Side::Ue)) {
            return Some(());
        }
        if by_caller {
            d.caller_cseq = d.caller_cseq.max(n);
        } else {
            d.callee_cseq = Some(d.callee_cseq.map_or(n, |c| c.max(n)));
        }
        if method == b"BYE" {
            // the INVITE is done with too: a 2xx sent again after the BYE (the callee's
            // retransmissions, RFC 3261 §13.3.1.4) must not bring the dialog back
            self.early.remove(&(id.0.clone(), id.1.clone()));
            self.remove(&id);
            self.stats.ended += 1;
        }
        Some(())
    }

    /// A final response to an INVITE: a 2xx confirms a dialog, anything else ends the wait.
    fn on_final(
        &mut self,
        v: View<'_>,
        code: u16,
        binding: u64,
        next_hop: Option<SocketAddr>,
        own: &OwnUris,
    ) -> Option<()> {
        let call_id = v.header(HeaderName::CallId)?;
        let from_tag = tag_of(v.header(HeaderName::From)?)?;
        let key = (boxed(call_id), boxed(from_tag));
        if code >= 300 {
            // (a failed re-INVITE, or a fork's refusal after another fork's 2xx, ends nothing)
            if self.early.get(&key).is_some_and(|o| !o.answered) {
                self.early.remove(&key);
                self.stats.failed += 1;
            }
            return Some(());
        }
        if !(200..300).contains(&code) {
            return Some(());
        }
        let to_v = v.header(HeaderName::To)?;
        let to_tag = tag_of(to_v)?;
        let id = (key.0.clone(), key.1.clone(), boxed(to_tag));
        let swapped = (key.0.clone(), boxed(to_tag), key.1.clone());
        if self.dialogs.contains_key(&id) || self.dialogs.contains_key(&swapped) {
            // a retransmitted 2xx, or the 2xx to a re-INVITE (from either side)
            return Some(());
        }
        let Some(offer) = self.early.get_mut(&key) else {
            self.stats.untracked += 1;
            return Some(());
        };
        if offer.binding != binding {
            return Some(());
        }
        offer.answered = true;
        let offer = &*offer;
        // A calling UE's route set is the 2xx's Record-Route reversed (RFC 3261 §12.1.2); this
        // 2xx came from the core. A called UE's is the INVITE's (§12.1.1), kept with the offer.
        let core_route = if offer.ue_is_caller {
            let mut r = foreign_record_route(v, own);
            r.reverse();
            r
        } else {
            offer.core_route.clone()
        };
        let d = Dialog {
            binding,
            ue_is_caller: offer.ue_is_caller,
            caller: offer.caller.clone(),
            callee: boxed(to_v),
            caller_contact: offer.caller_contact.clone(),
            callee_contact: contact_uri(v)?,
            core_route,
            caller_cseq: offer.cseq,
            callee_cseq: None,
            next_hop,
            seq: self.next_seq(),
        };
        self.insert(id, d);
        self.stats.confirmed += 1;
        Some(())
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn insert(&mut self, id: DialogId, d: Dialog) {
        let binding = d.binding;
        if self.of_binding(binding) >= MAX_PER_BINDING {
            if let Some(oldest) = self.by_binding.get(&binding).and_then(|l| l.first()) {
                let oldest = oldest.clone();
                self.remove(&oldest);
                self.stats.evicted += 1;
            }
        } else if self.dialogs.len() >= self.max_dialogs {
            // the book is full: the dialog that has waited longest for a BYE goes (the oldest
            // live entry of `order`; a scan of the book would cost a full book per call)
            while let Some((seq, oldest)) = self.order.pop_front() {
                if self.dialogs.get(&oldest).is_some_and(|d| d.seq == seq) {
                    self.remove(&oldest);
                    self.stats.evicted += 1;
                    break;
                }
            }
        }
        self.order.push_back((d.seq, id.clone()));
        if self.order.len() > 2 * self.dialogs.len() + 1024 {
            // most entries name dialogs that ended: keep the live ones (amortised by the
            // pushes since the last time)
            let dialogs = &self.dialogs;
            self.order
                .retain(|(seq, k)| dialogs.get(k).is_some_and(|d| d.seq == *seq));
        }
        self.by_binding.entry(binding).or_default().push(id.clone());
        self.dialogs.insert(id, d);
    }

    fn remove(&mut self, id: &DialogId) -> Option<Dialog> {
        let d = self.dialogs.remove(id)?;
        if let Some(list) = self.by_binding.get_mut(&d.binding) {
            list.retain(|k| k != id);
            if list.is_empty() {
                self.by_binding.remove(&d.binding);
            }
        }
        Some(d)
    }

    /// INVITEs older than [`EARLY_LIFE`] are forgotten (their final response never came
    /// through us).
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.early_order.front() {
            if now.saturating_duration_since(*at) < EARLY_LIFE {
                break;
            }
            if let Some((at, key)) = self.early_order.pop_front()
                && self.early.get(&key).is_some_and(|o| o.at == at)
            {
                self.early.remove(&key);
            }
        }
    }

    /// The oldest waiting INVITE goes to make room.
    fn evict_early(&mut self) {
        while let Some((at, key)) = self.early_order.pop_front() {
            if self.early.get(&key).is_some_and(|o| o.at == at) {
                self.early.remove(&key);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// Whether `binding` has calls to release: confirmed dialogs or INVITEs still waiting.
    pub fn has_calls(&self, binding: u64) -> bool {
        self.by_binding.contains_key(&binding) || self.early_by_binding.contains_key(&binding)
    }

    /// The registration `binding` ended: its calls are released (module doc) and forgotten,
    /// the requests queued in `out` (their answers are counted, never waited for). A confirmed
    /// dialog gets a BYE each way; an INVITE still waiting for its final response is cancelled
    /// (RFC 3261 §9.1, TS 24.229 §5.2.8.1.1 [spec-m]) toward where it went — the core for the
    /// UE's, the UE (while it has an SA set) for the core's — with the INVITE's own Via, so it
    /// meets the transaction there; the 487 that follows reaches the caller through the
    /// workers as any response does.
    pub fn release(&mut self, binding: u64, legs: &Legs<'_>, out: &mut VecDeque<Outgoing>) {
        for key in self.early_by_binding.remove(&binding).unwrap_or_default() {
            let Some(o) = self.early.get(&key) else {
                continue;
            };
            if o.answered || o.binding != binding {
                continue;
            }
            let Some(o) = self.early.remove(&key) else {
                continue;
            };
            let cancel = Request {
                method: b"CANCEL",
                target: &o.request_uri,
                via: &o.top_via,
                route: &o.routes,
                from: &o.caller,
                to: &o.to,
                call_id: &key.0,
                cseq: o.cseq,
            }
            .write();
            if o.ue_is_caller {
                let Some(next) = legs.next_hop else {
                    continue;
                };
                if self.queue(out, legs.toward_core(next, cancel)) {
                    self.stats.release_cancel_core += 1;
                }
            } else if let Some(ue) = legs.ue
                && self.queue(out, ue.carry(cancel))
            {
                self.stats.release_cancel_ue += 1;
            }
        }
        let Some(ids) = self.by_binding.remove(&binding) else {
            return;
        };
        for id in ids {
            let Some(d) = self.dialogs.remove(&id) else {
                continue;
            };
            self.stats.released += 1;
            let (ue_party, far_party, ue_contact, far_contact) = if d.ue_is_caller {
                (&d.caller, &d.callee, &d.caller_contact, &d.callee_contact)
            } else {
                (&d.callee, &d.caller, &d.callee_contact, &d.caller_contact)
            };
            let (ue_cseq, far_cseq) = if d.ue_is_caller {
                (Some(d.caller_cseq), d.callee_cseq)
            } else {
                (d.callee_cseq, Some(d.caller_cseq))
            };
            if let Some(next) = d.core_route_next(legs) {
                let transport = if legs.core_tcp { "TCP" } else { "UDP" };
                let via = self.release_via(transport, legs.via_sent_by);
                let bye = Request {
                    method: b"BYE",
                    target: far_contact,
                    via: via.as_bytes(),
                    route: &d.core_route,
                    from: ue_party,
                    to: far_party,
                    call_id: &id.0,
                    cseq: ue_cseq.map_or(1, |c| c.saturating_add(1)),
                }
                .write();
                if self.queue(out, legs.toward_core(next, bye)) {
                    self.stats.release_bye_core += 1;
                }
            }
            if let Some(ue) = legs.ue {
                let via = self.release_via("UDP", &ue.from.to_string());
                let bye = Request {
                    method: b"BYE",
                    target: ue_contact,
                    via: via.as_bytes(),
                    route: &[],
                    from: far_party,
                    to: ue_party,
                    call_id: &id.0,
                    cseq: far_cseq.map_or(1, |c| c.saturating_add(1)),
                }
                .write();
                if self.queue(out, ue.carry(bye)) {
                    self.stats.release_bye_ue += 1;
                }
            }
        }
    }

    /// Queue a release request unless it is not valid SIP (RFC 3261 §25: what we send must
    /// parse as what we mean); whether it was queued.
    fn queue(&mut self, out: &mut VecDeque<Outgoing>, d: Outgoing) -> bool {
        let valid = Message::parse_strict(&d.payload).is_ok_and(|m| {
            m.view()
                .request_uri()
                .is_some_and(|u| crate::sip::headers::request_uri_ok(u) && u.is_ascii())
        });
        if valid {
            out.push_back(d);
        } else {
            self.stats.release_unsendable += 1;
        }
        valid
    }

    /// Our Via value for a release BYE sent over `transport` from `sent_by`, with a fresh
    /// release branch.
    fn release_via(&mut self, transport: &str, sent_by: &str) -> String {
        let branch = self.branch();
        format!(
            "SIP/2.0/{transport} {sent_by};branch={}{branch}",
            String::from_utf8_lossy(crate::sip::rules::RELEASE_BRANCH)
        )
    }

    /// An answer to one of our release BYEs (the workers hand them back by their branch's
    /// prefix): counted by outcome when its branch is one we made, else as forged.
    pub fn on_release_answer(&mut self, branch: &[u8], code: u16) {
        let ours = branch
            .strip_prefix(crate::sip::rules::RELEASE_BRANCH)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .filter(|hex| hex.len() == 32)
            .and_then(|hex| {
                let seq = u64::from_str_radix(&hex[..16], 16).ok()?;
                let tag = u64::from_str_radix(&hex[16..], 16).ok()?;
                Some(tag == self.branch_tag(seq))
            })
            .unwrap_or(false);
        if !ours {
            self.stats.release_forged += 1;
        } else if (200..300).contains(&code) {
            self.stats.release_answered += 1;
        } else if code >= 300 {
            self.stats.release_refused += 1;
        }
    }

    /// A fresh branch of the release format: a number and its keyed tag, 32 hex digits after
    /// [`crate::sip::rules::RELEASE_BRANCH`] (unique per request, RFC 3261 §8.1.1.7).
    fn branch(&mut self) -> String {
        self.seq += 1;
        format!("{:016x}{:016x}", self.seq, self.branch_tag(self.seq))
    }

    fn branch_tag(&self, seq: u64) -> u64 {
        use std::hash::BuildHasher;
        self.branch_key.hash_one(seq)
    }
}

impl Dialog {
    /// Where the BYE toward the core goes: the S-CSCF the workers send the UE's requests to
    /// (the registration's now, else the one when the dialog was confirmed).
    fn core_route_next(&self, legs: &Legs<'_>) -> Option<SocketAddr> {
        legs.next_hop.or(self.next_hop)
    }
}

/// A message for a worker to send (the registrar's outputs).
pub type Outgoing = Datagram<Vec<u8>>;

/// A request of a release (module doc): a BYE with our Via and a release branch, or the
/// CANCEL of a waiting INVITE with the INVITE's own Via (RFC 3261 §9.1).
struct Request<'a> {
    method: &'a [u8],
    target: &'a [u8],
    /// The whole Via value.
    via: &'a [u8],
    route: &'a [Box<[u8]>],
    from: &'a [u8],
    to: &'a [u8],
    call_id: &'a [u8],
    cseq: u64,
}

impl Request<'_> {
    /// The request's bytes: every value is copied as it came, byte for byte (header values that
    /// parsed as such hold no bare CR or LF).
    fn write(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(512);
        let mut put = |parts: &[&[u8]]| {
            for p in parts {
                v.extend_from_slice(p);
            }
        };
        let cseq = self.cseq.to_string();
        put(&[self.method, b" ", self.target, b" SIP/2.0\r\n"]);
        put(&[b"Via: ", self.via, b"\r\nMax-Forwards: 70\r\n"]);
        for r in self.route {
            put(&[b"Route: ", r, b"\r\n"]);
        }
        put(&[b"From: ", self.from, b"\r\nTo: ", self.to, b"\r\n"]);
        put(&[b"Call-ID: ", self.call_id, b"\r\nCSeq: ", cseq.as_bytes()]);
        put(&[b" ", self.method, b"\r\n"]);
        put(&[b"Reason: SIP;cause=480;text=\"Registration ended\"\r\n"]);
        put(&[b"Content-Length: 0\r\n\r\n"]);
        v
    }
}

/// A confirmed dialog, read-only: what the operator's `pcscf ctl show dialogs` lists.
#[derive(Clone, Copy, Debug)]
pub struct DialogView<'a> {
    /// The registration (binding) it belongs to.
    pub binding: u64,
    pub call_id: &'a [u8],
    /// The UE placed the call (originating); else the core called the UE (terminating).
    pub ue_is_caller: bool,
    /// The From value with the caller's tag, and the To value with the callee's.
    pub caller: &'a [u8],
    pub callee: &'a [u8],
    /// Where the UE's requests in it go, when known.
    pub next_hop: Option<SocketAddr>,
}

/// Read-only views for the operator (`crate::control::ctl`).
impl Dialogs {
    /// The confirmed dialogs, in no particular order.
    pub fn views(&self) -> impl Iterator<Item = DialogView<'_>> {
        self.dialogs.iter().map(|(id, d)| DialogView {
            binding: d.binding,
            call_id: &id.0,
            ue_is_caller: d.ue_is_caller,
            caller: &d.caller,
            callee: &d.callee,
            next_hop: d.next_hop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnUris {
        OwnUris::new(
            &["pcscf.test"],
            &["10.46.0.1".parse().unwrap(), "10.0.1.10".parse().unwrap()],
            &[5060],
            Some(5100..=5199),
        )
    }

    fn invite(call: &str, from_tag: &str) -> String {
        format!(
            "INVITE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK1\r\n\
             Record-Route: <sip:10.0.1.10:5060;lr>, <sip:10.46.0.1:5103;lr>\r\n\
             From: <sip:alice@ims.test>;tag={from_tag}\r\nTo: <sip:bob@ims.test>\r\n\
             Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.46.0.6:7005>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    fn ok(call: &str, from_tag: &str, to_tag: &str) -> String {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK0\r\n\
             Record-Route: <sip:scscf.test;lr>, <sip:10.0.1.10:5060;lr>, <sip:10.46.0.1:5103;lr>\r\n\
             From: <sip:alice@ims.test>;tag={from_tag}\r\nTo: <sip:bob@ims.test>;tag={to_tag}\r\n\
             Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@10.9.9.9>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    /// Hand the book one event of `binding` seen from `side`.
    fn feed(d: &mut Dialogs, side: Side, binding: u64, msg: &str, own: &OwnUris, now: Instant) {
        d.handle_event(side, binding, msg.as_bytes(), None, own, now);
    }

    /// The BYE of call `call`, from the caller (`from_tag`) to the callee (`to_tag`).
    fn bye(call: &str, from_tag: &str, to_tag: &str) -> String {
        format!(
            "BYE sip:bob@10.9.9.9 SIP/2.0\r\nVia: SIP/2.0/UDP x;branch=z9hG4bK2\r\n\
             From: <sip:alice@ims.test>;tag={from_tag}\r\nTo: <sip:bob@ims.test>;tag={to_tag}\r\n\
             Call-ID: {call}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn legs() -> Legs<'static> {
        Legs {
            core: "10.0.1.10:5060".parse().unwrap(),
            via_sent_by: "10.0.1.10:5060",
            core_tcp: false,
            next_hop: Some("10.0.1.30:6060".parse().unwrap()),
            ue: None,
        }
    }

    /// Events are hostile input: garbage, truncated messages and dialogs of another binding
    /// change nothing and never panic.
    #[test]
    fn events_that_do_not_fit_change_nothing() {
        let mut d = Dialogs::new();
        let now = Instant::now();
        let own = own();
        let good = invite("c1", "a1");
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 200 OK\r\n\r\n",
            &good.as_bytes()[..good.len() / 2],
            good.replace("tag=a1", "tag").as_bytes(),
            good.replace("Contact", "X-Contact").as_bytes(),
        ] {
            d.handle_event(Side::Ue, 1, bad, None, &own, now);
        }
        assert_eq!(d.waiting(), 0);
        assert_eq!(d.stats.malformed, 6);
        feed(&mut d, Side::Ue, 1, &good, &own, now);
        // the 2xx of binding 2 does not confirm binding 1's INVITE
        feed(&mut d, Side::Core, 2, &ok("c1", "a1", "b1"), &own, now);
        assert_eq!(d.len(), 0);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        assert_eq!((d.len(), d.stats.confirmed), (1, 1));
        // another binding's BYE with these identifiers does not end it
        let bye = bye("c1", "a1", "b1");
        feed(&mut d, Side::Ue, 2, &bye, &own, now);
        assert_eq!(d.len(), 1);
        feed(&mut d, Side::Ue, 1, &bye, &own, now);
        assert_eq!((d.len(), d.stats.ended), (0, 1));
        d.check().unwrap();
    }

    /// A 2xx that comes again after the BYE (the callee retransmits it until the ACK, RFC 3261
    /// §13.3.1.4; it can cross the BYE) does not bring the dialog back: a release would
    /// otherwise send BYEs for a call that is over.
    #[test]
    fn a_late_2xx_does_not_revive_a_dialog() {
        let mut d = Dialogs::new();
        let now = Instant::now();
        let own = own();
        feed(&mut d, Side::Ue, 1, &invite("c1", "a1"), &own, now);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        let bye = bye("c1", "a1", "b1");
        feed(&mut d, Side::Ue, 1, &bye, &own, now);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        assert_eq!((d.len(), d.stats.confirmed, d.stats.ended), (0, 1, 1));
        assert!(!d.has_calls(1) || d.waiting() == 0);
        let mut out = VecDeque::new();
        d.release(1, &legs(), &mut out);
        assert!(out.is_empty(), "{out:?}");
        d.check().unwrap();
    }

    /// The answers to a re-INVITE, whichever side sent it, neither confirm a new dialog nor
    /// count as untracked or failed.
    #[test]
    fn re_invites_answers_are_not_new_dialogs() {
        let mut d = Dialogs::new();
        let now = Instant::now();
        let own = own();
        feed(&mut d, Side::Ue, 1, &invite("c1", "a1"), &own, now);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        // the callee's re-INVITE: its 2xx has the callee's tag in From
        let callee_ok = ok("c1", "b1", "a1");
        feed(&mut d, Side::Ue, 1, &callee_ok, &own, now);
        // the caller's re-INVITE refused (491), then accepted
        let refused = ok("c1", "a1", "b1").replace("200 OK", "491 Request Pending");
        feed(&mut d, Side::Core, 1, &refused, &own, now);
        feed(&mut d, Side::Core, 1, &ok("c1", "a1", "b1"), &own, now);
        let s = d.stats;
        assert_eq!((s.confirmed, s.untracked, s.failed), (1, 0, 0), "{s:?}");
        assert_eq!(d.len(), 1);
    }

    /// A UE that never hangs up keeps at most MAX_PER_BINDING dialogs; an INVITE never
    /// answered is forgotten after EARLY_LIFE.
    #[test]
    fn the_book_is_bounded() {
        let mut d = Dialogs::new();
        let now = Instant::now();
        let own = own();
        for i in 0..MAX_PER_BINDING + 4 {
            let call = format!("c{i}");
            feed(&mut d, Side::Ue, 7, &invite(&call, "a"), &own, now);
            feed(&mut d, Side::Core, 7, &ok(&call, "a", "b"), &own, now);
        }
        assert_eq!(d.of_binding(7), MAX_PER_BINDING);
        assert_eq!(d.stats.evicted, 4);
        d.check().unwrap();
        feed(&mut d, Side::Ue, 7, &invite("late", "a"), &own, now);
        let later = now + EARLY_LIFE;
        d.handle_event(
            Side::Core,
            7,
            ok("late", "a", "b").as_bytes(),
            None,
            &own,
            later,
        );
        assert_eq!(d.stats.untracked, 1);
        assert_eq!(d.waiting(), 0);
        // the released BYEs name the first hop beyond us; none toward a UE without a set
        let mut out = VecDeque::new();
        d.release(7, &legs(), &mut out);
        assert_eq!(out.len(), MAX_PER_BINDING);
        assert!(out.iter().all(|o| o.side == Side::Core));
        let first = String::from_utf8(out[0].payload.clone()).unwrap();
        assert!(
            first.contains("\r\nRoute: <sip:scscf.test;lr>\r\n"),
            "{first}"
        );
        assert_eq!(d.of_binding(7), 0);
    }

    /// A dialog value that cannot stand where a release puts it (found by the fuzz target: a
    /// Contact with control bytes as the BYE's Request-URI) is never sent, and counted.
    #[test]
    fn a_release_that_would_not_be_valid_sip_is_not_sent() {
        let mut d = Dialogs::new();
        let now = Instant::now();
        let own = own();
        feed(&mut d, Side::Ue, 1, &invite("c1", "a1"), &own, now);
        let bad = ok("c1", "a1", "b1").replace("<sip:bob@10.9.9.9>", "<sip:bo\0\u{7f}9>");
        feed(&mut d, Side::Core, 1, &bad, &own, now);
        let mut out = VecDeque::new();
        d.release(1, &legs(), &mut out);
        assert!(
            out.iter()
                .all(|o| Message::parse_strict(&o.payload).is_ok())
        );
        assert!(
            d.stats.release_unsendable + d.stats.malformed >= 1,
            "{:?}",
            d.stats
        );
        d.check().unwrap();
    }

    /// A full book makes room by forgetting the dialog confirmed first that is still there
    /// (not by scanning the book: that would cost a full book per call).
    #[test]
    fn a_full_book_forgets_its_oldest_dialog() {
        let mut d = Dialogs::with_capacity(8);
        let now = Instant::now();
        let own = own();
        for i in 0..20u64 {
            let call = format!("c{i}");
            feed(&mut d, Side::Ue, i, &invite(&call, "a"), &own, now);
            feed(&mut d, Side::Core, i, &ok(&call, "a", "b"), &own, now);
            if i == 13 {
                // one hung up: it does not count against the others
                let bye = bye("c13", "a", "b");
                feed(&mut d, Side::Ue, 13, &bye, &own, now);
            }
            d.check().unwrap();
        }
        assert_eq!(d.len(), 8);
        assert_eq!(d.stats.evicted, 11);
        let kept: Vec<u64> = (0..20).filter(|&b| d.of_binding(b) > 0).collect();
        assert_eq!(kept, [11, 12, 14, 15, 16, 17, 18, 19]);
    }

    /// Only a branch this book made counts as an answer.
    #[test]
    fn release_answers_are_checked_by_their_branch() {
        let mut d = Dialogs::new();
        let b = d.branch();
        let ours = [crate::sip::rules::RELEASE_BRANCH, b.as_bytes()].concat();
        d.on_release_answer(&ours, 200);
        d.on_release_answer(&ours, 481);
        let mut forged = ours.clone();
        *forged.last_mut().unwrap() ^= 1;
        d.on_release_answer(&forged, 200);
        d.on_release_answer(crate::sip::rules::RELEASE_BRANCH, 200);
        let s = d.stats;
        assert_eq!(
            (s.release_answered, s.release_refused, s.release_forged),
            (1, 1, 2)
        );
    }
}
