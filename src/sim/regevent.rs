//! The S-CSCF's side of the reg event package (RFC 3680; TS 24.229 §5.4.2.1) in the core
//! simulator: what a subscription holds, the reginfo document ([`reginfo`], RFC 3680 §5), the
//! NOTIFY that carries it ([`notify`], RFC 6665 §4.2.1), and the client transactions of the
//! NOTIFYs sent ([`Transactions`]: matched by Call-ID and CSeq, sent again on timer E over UDP
//! up to timer F, RFC 3261 §17.1.2.2). [`CoreSim`](super::core::CoreSim) drives them; the serve
//! loop sends what comes out.
//!
//! Sans-IO: nothing here reads a clock or a socket; times come in as arguments.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// At most this many subscriptions kept (a flood of SUBSCRIBEs is answered 503 past it).
pub const SUBS_MAX: usize = 100_000;

/// At most this many NOTIFY transactions tracked; past it a NOTIFY is sent untracked.
pub const PENDING_MAX: usize = 100_000;

/// RFC 3680 §4.4: the package's default subscription duration, when the SUBSCRIBE has no
/// Expires.
pub const DEFAULT_EXPIRES: u32 = 3761;

// RFC 3261 §17.1.2.2: timer E starts at T1 and doubles up to T2; timer F is 64·T1.
use crate::sip::{T1, T2, TIMER_F};

/// The `event` attribute of a contact whose registration the network ends (RFC 3680 §5.1:
/// `deactivated`, `probation`, `rejected`, `expired`; `unregistered` when the UE de-registers
/// itself). TS 24.229 §5.4.1.5: `deactivated` when the UE is to register again, `rejected`
/// when not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactEvent {
    Deactivated,
    Probation,
    Rejected,
    Expired,
    Unregistered,
}

impl ContactEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            ContactEvent::Deactivated => "deactivated",
            ContactEvent::Probation => "probation",
            ContactEvent::Rejected => "rejected",
            ContactEvent::Expired => "expired",
            ContactEvent::Unregistered => "unregistered",
        }
    }

    /// The event by its name (as the attribute writes it).
    pub fn parse(s: &str) -> Option<ContactEvent> {
        [
            ContactEvent::Deactivated,
            ContactEvent::Probation,
            ContactEvent::Rejected,
            ContactEvent::Expired,
            ContactEvent::Unregistered,
        ]
        .into_iter()
        .find(|e| e.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// One subscription to a registration's state, as the notifier keeps it (RFC 6665 §4.2: the
/// dialog the SUBSCRIBE made, RFC 3261 §12.1.1).
#[derive(Clone, Debug)]
pub struct Subscription {
    /// The IMPU's user part (the key of the core's bindings).
    pub impu: String,
    pub call_id: String,
    /// The subscriber's From tag, and the tag of our 200 (the To tag of its refreshes).
    pub their_tag: String,
    pub our_tag: String,
    /// The SUBSCRIBE's From value (our NOTIFYs' To) and its To value without tag (our
    /// NOTIFYs' From, with our tag).
    pub peer: String,
    pub aor: String,
    /// The subscriber's Contact URI: our NOTIFYs' Request-URI (RFC 3261 §12.1.1: the remote
    /// target).
    pub target: String,
    /// Where our NOTIFYs go: the Contact's host:port, or where the SUBSCRIBE came from when the
    /// Contact names no address.
    pub to: SocketAddr,
    /// The Contact asks for TCP (`;transport=tcp`), or the core runs over TCP.
    pub tcp: bool,
    /// Where the SUBSCRIBE came from.
    pub source: Option<SocketAddr>,
    /// Our CSeq in the dialog (the last NOTIFY's).
    pub cseq: u32,
    /// The next reginfo document's version (RFC 3680 §5.2: 0 first, one more each NOTIFY).
    pub version: u32,
    /// The duration granted, seconds.
    pub expires: u32,
}

/// A request the core originates: where to, its bytes, whether it must go over TCP (else
/// [`request_over_tcp`](super::corenet::request_over_tcp) decides).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutRequest {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
    pub tcp: bool,
    /// Its Call-ID and CSeq number: how its response is matched.
    pub call_id: String,
    pub cseq: u32,
    /// The NOTIFY ends its subscription (`Subscription-State: terminated`).
    pub last: bool,
}

/// `s` fit for an XML attribute value or text (XML 1.0 §2.4, §3.3.3): `&`, `<`, `>`, `"` and
/// `'` as references.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The state one reginfo document tells of the registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegState<'a> {
    /// Registered: the contact active for `expires` more seconds, its event `registered`, or
    /// `refreshed` after a re-registration (RFC 3680 §5.1).
    Active {
        contact: &'a str,
        expires: u32,
        refreshed: bool,
    },
    /// The registration gone: the contact terminated by `event`.
    Terminated {
        contact: &'a str,
        event: ContactEvent,
    },
}

/// A full-state reginfo document (RFC 3680 §5.3: `application/reginfo+xml`, namespace
/// `urn:ietf:params:xml:ns:reginfo`): one registration of `aor` (its `id` stable across
/// documents, RFC 3680 §5.2) with its one contact.
pub fn reginfo(version: u32, aor: &str, id: &str, state: RegState<'_>) -> String {
    let (reg_state, contact) = match state {
        RegState::Active {
            contact,
            expires,
            refreshed,
        } => (
            "active",
            format!(
                "    <contact id=\"{}-c\" state=\"active\" event=\"{}\" expires=\"{expires}\">\n      <uri>{}</uri>\n    </contact>\n",
                escape(id),
                if refreshed { "refreshed" } else { "registered" },
                escape(contact)
            ),
        ),
        RegState::Terminated { contact, event } => (
            "terminated",
            format!(
                "    <contact id=\"{}-c\" state=\"terminated\" event=\"{}\">\n      <uri>{}</uri>\n    </contact>\n",
                escape(id),
                event.as_str(),
                escape(contact)
            ),
        ),
    };
    format!(
        "<?xml version=\"1.0\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"{version}\" state=\"full\">\n  <registration aor=\"{}\" id=\"{}\" state=\"{reg_state}\">\n{contact}  </registration>\n</reginfo>\n",
        escape(aor),
        escape(id)
    )
}

/// A NOTIFY in `sub`'s dialog (RFC 6665 §4.2.1, RFC 3261 §12.2.1.1): to its remote target,
/// From its To with our tag, To its From, our CSeq `sub.cseq`, with `sub_state` as the
/// Subscription-State and `body` as reginfo. `via_host`: our sent-by; `contact`: our Contact
/// value.
pub fn notify(
    sub: &Subscription,
    via_host: &str,
    branch: &str,
    contact: &str,
    sub_state: &str,
    body: &str,
) -> Vec<u8> {
    format!(
        "NOTIFY {} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} NOTIFY\r\nEvent: reg\r\nSubscription-State: {sub_state}\r\nContact: {contact}\r\nContent-Type: application/reginfo+xml\r\nContent-Length: {}\r\n\r\n{body}",
        sub.target,
        sub.aor,
        sub.our_tag,
        sub.peer,
        sub.call_id,
        sub.cseq,
        body.len()
    )
    .into_bytes()
}

/// One NOTIFY waiting for its final response.
#[derive(Debug)]
struct Pending {
    req: OutRequest,
    started: Instant,
    next: Instant,
    interval: Duration,
}

/// What became of a NOTIFY whose transaction ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with this final status.
    Answered(u16),
    /// No final response within timer F.
    TimedOut,
}

/// The client transactions of the NOTIFYs sent, by Call-ID and CSeq.
#[derive(Debug, Default)]
pub struct Transactions {
    pending: HashMap<(String, u32), Pending>,
}

impl Transactions {
    /// Track `req`, sent at `now` (untracked past [`PENDING_MAX`]).
    pub fn sent(&mut self, req: &OutRequest, now: Instant) {
        if self.pending.len() >= PENDING_MAX {
            return;
        }
        self.pending.insert(
            (req.call_id.clone(), req.cseq),
            Pending {
                req: req.clone(),
                started: now,
                next: now + T1,
                interval: T1,
            },
        );
    }

    /// A response to (`call_id`, `cseq`): the ended transaction's request when it was final
    /// and ours (a provisional one changes nothing here; over UDP timer E goes on, RFC 3261
    /// §17.1.2.2 at T2 — kept simple: at its own pace).
    pub fn answered(&mut self, call_id: &str, cseq: u32, code: u16) -> Option<OutRequest> {
        if code < 200 {
            return None;
        }
        self.pending
            .remove(&(call_id.to_string(), cseq))
            .map(|p| p.req)
    }

    /// At `now`: the NOTIFYs to send again over UDP (timer E), and the ones that timed out
    /// (timer F), removed.
    pub fn timers(&mut self, now: Instant) -> (Vec<OutRequest>, Vec<OutRequest>) {
        let (mut again, mut dead) = (Vec::new(), Vec::new());
        self.pending.retain(|_, p| {
            if now.duration_since(p.started) >= TIMER_F {
                dead.push(p.req.clone());
                return false;
            }
            // (over TCP nothing is sent again, RFC 3261 §17.1.2.2; timer F still runs)
            if !p.req.tcp && now >= p.next {
                again.push(p.req.clone());
                p.interval = (p.interval * 2).min(T2);
                p.next = now + p.interval;
            }
            true
        });
        (again, dead)
    }

    /// NOTIFYs still unanswered.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Whether a NOTIFY of dialog `call_id` is unanswered.
    pub fn has_dialog(&self, call_id: &str) -> bool {
        self.pending.keys().any(|(c, _)| c == call_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_the_document() {
        assert_eq!(escape("a&b<c>\"d'"), "a&amp;b&lt;c&gt;&quot;d&apos;");
        let doc = reginfo(
            3,
            "sip:u@x",
            "r\"1",
            RegState::Active {
                contact: "sip:u@1.2.3.4;a=<b>&c",
                expires: 60,
                refreshed: false,
            },
        );
        assert!(doc.contains("version=\"3\" state=\"full\""));
        assert!(doc.contains("id=\"r&quot;1\""));
        assert!(doc.contains("<uri>sip:u@1.2.3.4;a=&lt;b&gt;&amp;c</uri>"));
    }

    #[test]
    fn udp_notifies_are_sent_again_on_timer_e_until_timer_f() {
        let t0 = Instant::now();
        let mut t = Transactions::default();
        let req = |tcp, cseq| OutRequest {
            to: "127.0.0.1:5060".parse().unwrap(),
            bytes: b"NOTIFY".to_vec(),
            tcp,
            call_id: "c".into(),
            cseq,
            last: false,
        };
        t.sent(&req(false, 1), t0);
        t.sent(&req(true, 2), t0);
        let mut sends = 0;
        let mut ms = 0;
        let mut dead = Vec::new();
        while ms <= 33_000 {
            let (a, d) = t.timers(t0 + Duration::from_millis(ms));
            assert!(a.iter().all(|r| !r.tcp), "nothing again over TCP");
            sends += a.len();
            dead.extend(d);
            ms += 10;
        }
        // 0.5, 1.5, 3.5, 7.5, 11.5, ... 31.5 s: 4 doubling, then every 4 s up to 32 s
        assert_eq!(sends, 10);
        assert_eq!(dead.len(), 2);
        assert!(t.is_empty());
        t.sent(&req(false, 3), t0);
        assert_eq!(t.answered("c", 3, 180), None);
        assert_eq!(t.answered("c", 3, 200).map(|r| r.cseq), Some(3));
        assert_eq!(t.answered("c", 3, 200), None);
    }

    #[test]
    fn contact_events_parse_by_name() {
        assert_eq!(
            ContactEvent::parse("Rejected"),
            Some(ContactEvent::Rejected)
        );
        assert_eq!(ContactEvent::parse("nope"), None);
    }
}
