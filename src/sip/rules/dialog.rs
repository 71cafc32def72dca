//! Dialogs through the P-CSCF (RFC 3261 §12, §16.4, §16.6, §16.12, RFC 5658, TS 24.229
//! §5.2.6.3 and §5.2.6.4): which requests are record-routed, our Record-Route entries, the
//! Route entries of a request inside a dialog, and the Record-Route of the responses that
//! set a dialog up. In place, no allocation, no state: what a worker needs later travels in
//! the flow token of our entries ([`crate::sip::flow`]).
//!
//! **Double Record-Routing** (RFC 5658, rather than the one entry rewritten in the response
//! that RFC 3261 §16.7 item 8 allows). pcscf is multi-homed: a UE reaches it at its UE-side address and,
//! once registered, at the protected server port of its SA set (port-s, TS 33.203 §7.1); the
//! core reaches it at its core-side address, often of another family. One URI cannot name both,
//! so each dialog-creating request gets two entries, one per interface:
//! `<sip:UE-SIDE-ADDRESS:PORT-S;lr;ftok=1…>` and `<sip:CORE-SIDE;lr;ftok=2…>`, the one of
//! the interface the request leaves by on top. The UE's route set then starts with the
//! UE-facing entry and the core's with the core-facing one, whichever side created the dialog,
//! so:
//! - TS 24.229 (§5.2.6.3 [spec-m]) has the P-CSCF rewrite the port of its own Record-Route
//!   entry to its port-s in the 1xx/2xx toward a calling UE. With our UE-facing entry already
//!   naming port-s, that is a no-op, except when the response goes over another SA set than the
//!   request came over (a re-registration in between gave new ports): [`response_to_ue`]
//!   rewrites the port then, in place, keeping every entry where it was (RFC 3261 §16.7 item 8:
//!   a proxy rewrites only the value it provided; TS 24.229 §5.2.6.4 [spec-m] asks the order
//!   of the request's entries to be kept);
//! - a request inside the dialog carries both entries as its first two Route values, UE-facing
//!   first when it comes from the UE, core-facing first when it comes from the core: both are
//!   popped (RFC 3261 §16.4) and their tokens must agree, verify and be in that order.
//!
//! **Stateless for INVITE.** The workers keep no transaction: an INVITE's retransmissions are
//! forwarded like the first (both the UE and the core are transaction-stateful and absorb
//! them), and a CANCEL goes the INVITE's way with the same Route and the same stateless branch
//! (RFC 3261 §9.1, §16.11: the branch is a hash of the top Via and Call-ID, which a CANCEL
//! shares with its INVITE), so it reaches the element that holds the INVITE's transaction. The
//! ACK of a non-2xx final response follows its INVITE too (RFC 3261 §17.1.1.3): its Route is
//! the INVITE's, without our tokens ([`RequestKind::AckNon2xx`]).
//!
//! Owns: [`classify`], [`record_route`], [`pop_dialog_routes`], [`response_to_ue`],
//! [`response_from_ue`] and their errors ([`DialogError`]). Checks come before any byte
//! moves: a refused message is left as it was.

use core::net::SocketAddr;

use crate::sip::branch::Dir;
use crate::sip::edit::{EditError, Editor};
use crate::sip::flow::{self, Flow, FlowKey, FlowToken, Role};
use crate::sip::headers::{self, NameAddr};
use crate::sip::lex::{ListIter, ParamIter};
use crate::sip::msg::{HeaderName, Span, View};
use crate::sip::own::OwnUris;
use crate::sip::write::Writer;

/// What a request is, for routing (RFC 3261 §12.1, §12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// No To tag and a method that creates a dialog (RFC 3261 §12.1: INVITE; RFC 6665:
    /// SUBSCRIBE; RFC 3515: REFER): record-routed ([`record_route`]).
    Initial,
    /// No To tag, another method (MESSAGE, OPTIONS, PUBLISH, ...): forwarded as before, not
    /// record-routed (it creates no dialog).
    Standalone,
    /// CANCEL without a To tag: goes where its INVITE went (RFC 3261 §9.1: same Route values);
    /// not record-routed.
    Cancel,
    /// A To tag (RFC 3261 §12.2): inside a dialog; routed by its Route set
    /// ([`pop_dialog_routes`]). A CANCEL of a re-INVITE is one.
    InDialog,
    /// An ACK with a To tag whose first Route is not one of our tokened entries: the ACK of a
    /// non-2xx final response, routed like its INVITE (RFC 3261 §17.1.1.3).
    AckNon2xx,
}

/// Why a dialog rule refused a message. Every variant but [`DialogError::Edit`] and
/// [`DialogError::TooLong`] is something the sender wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogError {
    /// A header we read (To, Route, Record-Route) does not parse.
    Malformed,
    /// A request inside a dialog with no Route at all: it would go by its Request-URI, past us
    /// and past the core's own entries.
    NoRoute,
    /// The first Route does not name us: a route set that points straight at the core (or
    /// anywhere else) instead of through our entries.
    NotOurRoute,
    /// One of our entries without a flow token (the pre-loaded Route of an initial request
    /// reused inside a dialog, say).
    NoToken,
    /// A flow token not in our format (truncated, upper case, extra characters), or two.
    BadToken,
    /// A flow token whose tag does not verify: forged or altered.
    Forged,
    /// One of our entries without `lr` (we write it on both; RFC 3261 §19.1.1).
    NoLr,
    /// Our two entries in the wrong order for the side the message came from, or the same
    /// role twice (direction confusion).
    WrongOrder,
    /// Only one of our two entries.
    HalfPair,
    /// Our two entries carry tokens of different flows (spliced from two dialogs).
    Mismatch,
    /// A request from the UE inside a dialog with nothing after our entries: it would go to the
    /// far end's contact directly, past the S-CSCF that record-routed the dialog.
    NoRouteBeyond,
    /// The next Route is a strict router (no `lr`); IMS elements are loose routers
    /// (RFC 3261 §16.12), so this is refused rather than rewritten (§16.6 item 6).
    StrictNextHop,
    /// A request toward the UE with Route values after our entries: the UE records no route,
    /// so the next hop is the UE itself (its Request-URI).
    RouteBeyondUe,
    /// The Request-URI names us: the previous hop strict-routed (RFC 3261 §16.4), which no IMS
    /// element does.
    RequestUriIsUs,
    /// An initial request from the UE that already carries a Record-Route (a UA inserts none,
    /// RFC 3261 §16.6 item 4 is a proxy's).
    RecordRoutePresent,
    /// A response from the UE with Record-Route entries above ours (a UAS copies the request's,
    /// RFC 3261 §12.1.1; TS 24.229 §5.2.6.4 [spec-m]: the request's entries, in order).
    ForeignRecordRoute,
    /// A response to a dialog-creating request with a Record-Route of which no entry is ours.
    NotOurRecordRoute,
    /// Our entries do not fit the line buffer (a configured host too long).
    TooLong,
    /// The edit failed (no headroom/tailroom, header index full).
    Edit(EditError),
}

impl DialogError {
    /// The name of each refusal reason, indexed by [`DialogError::index`] (counters, logs).
    pub const NAMES: [&'static str; 19] = [
        "malformed",
        "no_route",
        "not_our_route",
        "no_token",
        "bad_token",
        "forged",
        "no_lr",
        "wrong_order",
        "half_pair",
        "mismatch",
        "no_route_beyond",
        "strict_next_hop",
        "route_beyond_ue",
        "request_uri_is_us",
        "record_route_present",
        "foreign_record_route",
        "not_our_record_route",
        "too_long",
        "edit",
    ];

    /// Where this error's name is in [`DialogError::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            DialogError::Malformed => 0,
            DialogError::NoRoute => 1,
            DialogError::NotOurRoute => 2,
            DialogError::NoToken => 3,
            DialogError::BadToken => 4,
            DialogError::Forged => 5,
            DialogError::NoLr => 6,
            DialogError::WrongOrder => 7,
            DialogError::HalfPair => 8,
            DialogError::Mismatch => 9,
            DialogError::NoRouteBeyond => 10,
            DialogError::StrictNextHop => 11,
            DialogError::RouteBeyondUe => 12,
            DialogError::RequestUriIsUs => 13,
            DialogError::RecordRoutePresent => 14,
            DialogError::ForeignRecordRoute => 15,
            DialogError::NotOurRecordRoute => 16,
            DialogError::TooLong => 17,
            DialogError::Edit(_) => 18,
        }
    }

    /// The answer to a request refused with this error: 403 for what only a hostile or broken
    /// sender writes (a request inside someone else's dialog, a forged token, a route set
    /// around us), 400 for what does not parse, 500 for our own limits. Responses are dropped.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            DialogError::Malformed => (400, "Bad Request"),
            DialogError::TooLong | DialogError::Edit(_) => (500, "Server Internal Error"),
            _ => (403, "Forbidden"),
        }
    }
}

impl From<EditError> for DialogError {
    fn from(e: EditError) -> DialogError {
        DialogError::Edit(e)
    }
}

fn is_dialog_creating(method: &[u8]) -> bool {
    // RFC 3261 §7.1: method names are case-sensitive.
    matches!(method, b"INVITE" | b"SUBSCRIBE" | b"REFER")
}

/// The Route or Record-Route values of a message, in order across header lines and commas,
/// with the header line each lies in.
fn values(v: View<'_>, name: HeaderName) -> impl Iterator<Item = (usize, &[u8])> + '_ {
    v.idx
        .headers()
        .iter()
        .enumerate()
        .filter(move |(_, h)| h.name == name)
        .flat_map(move |(i, h)| ListIter::new(v.bytes(h.value)).map(move |item| (i, item)))
}

/// One Route / Record-Route value that names us: its URI and verified token.
#[derive(Clone, Copy, Debug)]
struct Ours<'a> {
    uri: &'a [u8],
    token: FlowToken,
}

/// Read one Route / Record-Route value: `Ok(None)` when it does not name us, else our entry
/// with its token checked (format, `lr`, tag).
fn ours<'a>(item: &'a [u8], own: &OwnUris, key: &FlowKey) -> Result<Option<Ours<'a>>, DialogError> {
    let na = NameAddr::parse(item).ok_or(DialogError::Malformed)?;
    if !own.is_us(na.uri) {
        return Ok(None);
    }
    let (mut lr, mut tok, mut toks) = (false, None, 0);
    for p in ParamIter::new(headers::uri_params(na.uri)) {
        if p.name.eq_ignore_ascii_case(b"lr") {
            lr = true;
        } else if p.name.eq_ignore_ascii_case(flow::PARAM) {
            toks += 1;
            tok = p.value;
        }
    }
    let text = match (toks, tok) {
        (0, _) => return Err(DialogError::NoToken),
        (1, Some(t)) => t,
        _ => return Err(DialogError::BadToken),
    };
    let token = FlowToken::parse(text).ok_or(DialogError::BadToken)?;
    if !key.verify(&token) {
        return Err(DialogError::Forged);
    }
    if !lr {
        return Err(DialogError::NoLr);
    }
    Ok(Some(Ours { uri: na.uri, token }))
}

/// Whether the To header has a tag; `None` if there is no readable To.
fn to_tag(v: View<'_>) -> Option<bool> {
    let to = v.header(HeaderName::To).and_then(NameAddr::parse)?;
    Some(to.tag().is_some())
}

/// What kind of request this is (RFC 3261 §12.1, §12.2); `None` for a response or a request
/// without a readable To. `own` tells our Route entries (for an ACK: does its first Route
/// carry one of our tokens?).
pub fn classify(v: View<'_>, own: &OwnUris) -> Option<RequestKind> {
    classify_with(v, own, to_tag(v)?)
}

/// [`classify`] of a request whose To tag validation has already read
/// ([`crate::sip::Checked::to_tag`]).
pub fn classify_with(v: View<'_>, own: &OwnUris, to_tag: bool) -> Option<RequestKind> {
    let method = v.method()?;
    if !to_tag {
        return Some(if is_dialog_creating(method) {
            RequestKind::Initial
        } else if method == b"CANCEL" {
            RequestKind::Cancel
        } else {
            RequestKind::Standalone
        });
    }
    if method == b"ACK" {
        // only the shape is looked at here; pop_dialog_routes verifies
        let tokened = values(v, HeaderName::Route)
            .next()
            .is_some_and(|(_, item)| {
                NameAddr::parse(item).is_some_and(|na| {
                    own.is_us(na.uri)
                        && ParamIter::new(headers::uri_params(na.uri))
                            .any(|p| p.name.eq_ignore_ascii_case(flow::PARAM))
                })
            });
        if !tokened {
            return Some(RequestKind::AckNon2xx);
        }
    }
    Some(RequestKind::InDialog)
}

/// Our two Record-Route entries for one dialog.
#[derive(Clone, Copy, Debug)]
pub struct OurEntries<'a> {
    /// Our UE-side address (of the UE's family) and our protected server port (port-s) of the
    /// UE's SA set: where the UE sends its requests inside the dialog, over the SA
    /// (TS 33.203 §7.1; TS 24.229 §5.2.6.3 and §5.2.6.4 [spec-m]: the UE sees our port-s).
    pub ue_side: SocketAddr,
    /// Our core-side `host[:port]` (as in our core-side Via; IPv6 in brackets).
    pub core_side: &'a [u8],
}

/// The longest Record-Route line we write.
const MAX_RR_LINE: usize = 512;

/// Record-route an initial request (RFC 3261 §16.6 item 4: before any existing Record-Route
/// value) with our two entries (RFC 5658 double Record-Routing), the entry of the interface it
/// leaves by on top: toward the core (`Dir::ToCore`, originating) the core-facing entry then
/// the UE-facing one; toward the UE (`Dir::ToUe`, terminating) the reverse. Both carry `lr`
/// (RFC 3261 §16.6 item 4: a loose router's URI) and the token of `flow` for their role.
/// A request from the UE that already carries a Record-Route is refused (no UA writes one).
pub fn record_route(
    ed: &mut Editor<'_>,
    key: &FlowKey,
    ours: &OurEntries<'_>,
    flow: Flow,
    dir: Dir,
) -> Result<(), DialogError> {
    let first_rr = ed.find(HeaderName::RecordRoute, 0);
    if dir == Dir::ToCore && first_rr.is_some() {
        return Err(DialogError::RecordRoutePresent);
    }
    let mut line = [0u8; MAX_RR_LINE];
    let mut w = Writer::new(&mut line);
    let ue = |w: &mut Writer<'_>| {
        w.put(b"<sip:").display(&ours.ue_side).put(b";lr;");
        w.put(flow::PARAM).put(b"=");
        key.seal(Role::UeSide, flow).write(w);
        w.put(b">");
    };
    let core = |w: &mut Writer<'_>| {
        w.put(b"<sip:").put(ours.core_side).put(b";lr;");
        w.put(flow::PARAM).put(b"=");
        key.seal(Role::CoreSide, flow).write(w);
        w.put(b">");
    };
    w.put(b"Record-Route: ");
    match dir {
        Dir::ToCore => {
            core(&mut w);
            w.put(b", ");
            ue(&mut w);
        }
        Dir::ToUe => {
            ue(&mut w);
            w.put(b", ");
            core(&mut w);
        }
    }
    w.put(b"\r\n");
    let n = w.finish().ok_or(DialogError::TooLong)?;
    let at = first_rr.unwrap_or(ed.index().headers().len());
    ed.insert_lines(at, 1, &[&line[..n]])?;
    Ok(())
}

/// Where a request inside a dialog goes once our entries are popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialogRoute {
    /// The flow both our entries named (verified): the caller checks it against the SA set the
    /// request came over, or will go over ([`Flow::is_of`]).
    pub flow: Flow,
    /// The next hop's URI in the edited message: the first remaining Route value's URI
    /// (toward the core, RFC 3261 §16.12 loose routing) or the Request-URI (toward the UE: the
    /// UE's contact, which the caller checks names `flow.ue` before sending over its SA).
    pub next: Span,
}

/// A request inside a dialog (RFC 3261 §12.2), arriving from the UE (`Dir::ToCore`) or from
/// the core (`Dir::ToUe`): its first two Route values must be our two entries — UE-facing then
/// core-facing from the UE, the reverse from the core — with tokens that parse, verify, carry
/// `lr` and name the same flow; both are popped (RFC 3261 §16.4). Toward the core the next hop
/// is the next Route (which must exist and be a loose router, §16.12); toward the UE there must
/// be no Route left and the next hop is the Request-URI (the UE's contact). The Request-URI
/// must not be us (§16.4 strict-routing fix-up: no IMS element strict-routes).
/// On error nothing was changed.
pub fn pop_dialog_routes(
    ed: &mut Editor<'_>,
    own: &OwnUris,
    key: &FlowKey,
    dir: Dir,
) -> Result<DialogRoute, DialogError> {
    let flow = {
        let v = ed.view();
        if v.request_uri().is_some_and(|u| own.is_us(u)) {
            return Err(DialogError::RequestUriIsUs);
        }
        let mut routes = values(v, HeaderName::Route).map(|(_, item)| item);
        let first = routes.next().ok_or(DialogError::NoRoute)?;
        let first = ours(first, own, key)?.ok_or(DialogError::NotOurRoute)?;
        let second = match routes.next() {
            Some(item) => ours(item, own, key)?.ok_or(DialogError::HalfPair)?,
            None => return Err(DialogError::HalfPair),
        };
        let want = match dir {
            Dir::ToCore => (Role::UeSide, Role::CoreSide),
            Dir::ToUe => (Role::CoreSide, Role::UeSide),
        };
        if (first.token.role, second.token.role) != want {
            return Err(DialogError::WrongOrder);
        }
        if first.token.flow != second.token.flow {
            return Err(DialogError::Mismatch);
        }
        match (dir, routes.next()) {
            (Dir::ToCore, None) => return Err(DialogError::NoRouteBeyond),
            (Dir::ToCore, Some(next)) => {
                let na = NameAddr::parse(next).ok_or(DialogError::Malformed)?;
                if own.is_us(na.uri) {
                    // a third entry of ours: a loop through us, or a spliced route set
                    return Err(DialogError::WrongOrder);
                }
                if !ParamIter::new(headers::uri_params(na.uri))
                    .any(|p| p.name.eq_ignore_ascii_case(b"lr"))
                {
                    return Err(DialogError::StrictNextHop);
                }
            }
            (Dir::ToUe, Some(_)) => return Err(DialogError::RouteBeyondUe),
            (Dir::ToUe, None) => {}
        }
        first.token.flow
    };
    for _ in 0..2 {
        pop_first_route(ed)?;
    }
    let v = ed.view();
    let next = match dir {
        Dir::ToCore => values(v, HeaderName::Route)
            .next()
            .and_then(|(_, item)| NameAddr::parse(item))
            .map(|na| Span::of(v.buf, na.uri))
            .ok_or(DialogError::Malformed)?,
        Dir::ToUe => v
            .request_uri()
            .map(|u| Span::of(v.buf, u))
            .ok_or(DialogError::Malformed)?,
    };
    Ok(DialogRoute { flow, next })
}

/// Remove the first Route value (and its line when it was the only one).
fn pop_first_route(ed: &mut Editor<'_>) -> Result<(), DialogError> {
    let (i, item) = {
        let v = ed.view();
        let (i, item) = values(v, HeaderName::Route)
            .next()
            .ok_or(DialogError::Malformed)?;
        (i, Span::of(v.buf, item))
    };
    ed.remove_item(i, item, b',', true)?;
    Ok(())
}

/// Our entries in a response's Record-Route: where they stand among the values, and their
/// tokens. `Ok(None)` when the response has no Record-Route at all (a response to a request
/// inside a dialog, or one that created none).
#[derive(Clone, Copy, Debug)]
struct PairAt {
    /// Index of our first entry among the Record-Route values.
    at: usize,
    first: FlowToken,
    second: FlowToken,
    /// The header line and span of the UE-facing entry's URI host:port.
    ue_line: usize,
    ue_hostport: Span,
}

fn find_pair(v: View<'_>, own: &OwnUris, key: &FlowKey) -> Result<Option<PairAt>, DialogError> {
    let mut found: [Option<(usize, usize, Ours<'_>)>; 2] = [None, None];
    let mut n_ours = 0;
    let mut any = false;
    for (k, (line, item)) in values(v, HeaderName::RecordRoute).enumerate() {
        any = true;
        if let Some(o) = ours(item, own, key)? {
            match found.get_mut(n_ours) {
                Some(slot) => *slot = Some((k, line, o)),
                // a third entry of ours: not what we wrote
                None => return Err(DialogError::WrongOrder),
            }
            n_ours += 1;
        }
    }
    let (a, b) = match found {
        [None, _] if any => return Err(DialogError::NotOurRecordRoute),
        [None, _] => return Ok(None),
        [Some(_), None] => return Err(DialogError::HalfPair),
        [Some(a), Some(b)] => (a, b),
    };
    if b.0 != a.0 + 1 {
        // something was put between our two entries
        return Err(DialogError::WrongOrder);
    }
    if a.2.token.flow != b.2.token.flow {
        return Err(DialogError::Mismatch);
    }
    let ue = if a.2.token.role == Role::UeSide { a } else { b };
    Ok(Some(PairAt {
        at: a.0,
        first: a.2.token,
        second: b.2.token,
        ue_line: ue.1,
        ue_hostport: Span::of(v.buf, headers::uri_hostport(ue.2.uri)),
    }))
}

/// A 1xx/2xx toward the UE to a request it sent (TS 24.229 §5.2.6.3 [spec-m]): if it carries
/// a Record-Route, our two entries must be in it as we wrote them into the request toward the
/// core — core-facing then UE-facing, adjacent, same flow — and the UE-facing one is made to
/// name `port_s`, our protected server port of the SA set the response goes over (the rewrite
/// TS 24.229 asks for; a no-op unless the UE's SA set changed since the request). Only that
/// port changes: every entry stays in its place. Returns the flow (`None`: no Record-Route), for
/// the caller to check against that SA set.
pub fn response_to_ue(
    ed: &mut Editor<'_>,
    own: &OwnUris,
    key: &FlowKey,
    port_s: u16,
) -> Result<Option<Flow>, DialogError> {
    let Some(p) = find_pair(ed.view(), own, key)? else {
        return Ok(None);
    };
    if (p.first.role, p.second.role) != (Role::CoreSide, Role::UeSide) {
        return Err(DialogError::WrongOrder);
    }
    let v = ed.view();
    let (host, port) =
        headers::split_host_port(v.bytes(p.ue_hostport)).ok_or(DialogError::Malformed)?;
    if port != Some(port_s) {
        let mut digits = [0u8; 6];
        let mut w = Writer::new(&mut digits);
        w.put(b":").dec(port_s.into());
        let n = w.len();
        // the host keeps its text (brackets included); only `:port` after it is rewritten
        let port_at = Span::new(
            p.ue_hostport.start as usize + host.len(),
            p.ue_hostport.end as usize,
        );
        ed.replace_in_header(p.ue_line, port_at, &[&digits[..n]])?;
    }
    Ok(Some(p.first.flow))
}

/// A 1xx/2xx from the UE to a request the core sent it (TS 24.229 §5.2.6.4 [spec-m]): if it
/// carries a Record-Route, its first two values must be our entries as we wrote them into the
/// request toward the UE — UE-facing then core-facing, same flow — with nothing above them (a
/// UAS copies the request's Record-Route, RFC 3261 §12.1.1; it adds none). Nothing to rewrite:
/// the core-facing entry already names our core side. Returns the flow (`None`: no
/// Record-Route), for the caller to check against the SA set the response came over.
///
/// The entries below ours are the core's; that they are the request's, in order (the rest of
/// the TS 24.229 §5.2.6.4 check), needs the request's list, which a stateless worker does not
/// keep.
pub fn response_from_ue(
    v: View<'_>,
    own: &OwnUris,
    key: &FlowKey,
) -> Result<Option<Flow>, DialogError> {
    let Some(p) = find_pair(v, own, key)? else {
        return Ok(None);
    };
    if p.at != 0 {
        return Err(DialogError::ForeignRecordRoute);
    }
    if (p.first.role, p.second.role) != (Role::UeSide, Role::CoreSide) {
        return Err(DialogError::WrongOrder);
    }
    Ok(Some(p.first.flow))
}

#[cfg(test)]
mod tests {
    use core::net::IpAddr;

    use super::*;
    use crate::sip::Message;

    const HEADROOM: usize = 256;
    const TAILROOM: usize = 1024;
    const SCSCF: &str = "<sip:scscf.ims.example.net:6060;lr>";

    fn own() -> OwnUris {
        OwnUris::new(
            &["pcscf.ims.example.net"],
            &[
                "10.88.1.1".parse().unwrap(),
                "2001:db8:88::1".parse().unwrap(),
                "10.0.1.10".parse().unwrap(),
            ],
            &[5060],
            Some(5100..=5199),
        )
    }

    fn key() -> FlowKey {
        FlowKey::new(&[3; 32])
    }

    fn flow4() -> Flow {
        Flow {
            binding: 7,
            ue: "10.46.0.6".parse().unwrap(),
        }
    }

    fn flow6() -> Flow {
        Flow {
            binding: 9,
            ue: "2001:db8:46::6".parse().unwrap(),
        }
    }

    fn ours4() -> OurEntries<'static> {
        OurEntries {
            ue_side: "10.88.1.1:5101".parse().unwrap(),
            core_side: b"10.0.1.10:5060",
        }
    }

    fn ours6() -> OurEntries<'static> {
        OurEntries {
            ue_side: "[2001:db8:88::1]:5101".parse().unwrap(),
            core_side: b"10.0.1.10:5060",
        }
    }

    fn token(role: Role, flow: Flow) -> String {
        let mut buf = [0u8; 80];
        let mut w = Writer::new(&mut buf);
        key().seal(role, flow).write(&mut w);
        String::from_utf8(w.written().to_vec()).unwrap()
    }

    /// `<sip:HOSTPORT;lr;ftok=TOKEN>`
    fn entry(hostport: &str, role: Role, flow: Flow) -> String {
        format!("<sip:{hostport};lr;ftok={}>", token(role, flow))
    }

    fn ue_entry(flow: Flow) -> String {
        entry("10.88.1.1:5101", Role::UeSide, flow)
    }

    fn core_entry(flow: Flow) -> String {
        entry("10.0.1.10:5060", Role::CoreSide, flow)
    }

    /// The message in a frame with head- and tailroom.
    fn framed(msg: &str) -> (Vec<u8>, usize, usize) {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(msg.as_bytes());
        let end = buf.len();
        buf.resize(end + TAILROOM, 0);
        (buf, HEADROOM, end)
    }

    fn request(method: &str, ruri: &str, to_tag: bool, extra: &str) -> String {
        let tag = if to_tag { ";tag=far1" } else { "" };
        format!(
            "{method} {ruri} SIP/2.0\r\n\
             v: SIP/2.0/UDP 10.46.0.6:5103;branch=z9hG4bKue1;rport\r\n\
             Max-Forwards: 70\r\n\
             f: <sip:alice@ims.example.net>;tag=a1\r\n\
             t: <sip:bob@ims.example.net>{tag}\r\n\
             i: call-1@10.46.0.6\r\n\
             CSeq: 2 {method}\r\n\
             {extra}\
             Content-Length: 0\r\n\r\n"
        )
    }

    fn kind(msg: &str) -> Option<RequestKind> {
        let m = Message::parse(msg.as_bytes()).unwrap();
        classify(m.view(), &own())
    }

    fn header_values(ed: &Editor<'_>, name: HeaderName) -> Vec<String> {
        values(ed.view(), name)
            .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn classify_by_to_tag_and_method() {
        let k = |m: &str, tag: bool| kind(&request(m, "sip:bob@ims.example.net", tag, ""));
        assert_eq!(k("INVITE", false), Some(RequestKind::Initial));
        assert_eq!(k("SUBSCRIBE", false), Some(RequestKind::Initial));
        assert_eq!(k("REFER", false), Some(RequestKind::Initial));
        assert_eq!(k("MESSAGE", false), Some(RequestKind::Standalone));
        assert_eq!(k("OPTIONS", false), Some(RequestKind::Standalone));
        assert_eq!(k("CANCEL", false), Some(RequestKind::Cancel));
        // RFC 3261 §7.1: methods are case-sensitive
        assert_eq!(k("invite", false), Some(RequestKind::Standalone));
        for m in [
            "INVITE", "BYE", "PRACK", "UPDATE", "INFO", "CANCEL", "NOTIFY",
        ] {
            assert_eq!(k(m, true), Some(RequestKind::InDialog), "{m}");
        }
        // ACK: inside the dialog only with our tokened entry first (an ACK to a 2xx)
        let with_token = format!("Route: {}, {}\r\n", ue_entry(flow4()), core_entry(flow4()));
        let ack = |extra: &str| kind(&request("ACK", "sip:bob@10.9.9.9", true, extra));
        assert_eq!(ack(&with_token), Some(RequestKind::InDialog));
        let preloaded = format!("Route: <sip:10.88.1.1:5101;lr>, {SCSCF}\r\n");
        assert_eq!(ack(&preloaded), Some(RequestKind::AckNon2xx));
        assert_eq!(ack(""), Some(RequestKind::AckNon2xx));
        // a response, and a request without a readable To
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.46.0.6\r\nTo: <sip:b@x>\r\n\r\n";
        assert_eq!(kind(resp), None);
        let no_to = "BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6\r\n\r\n";
        assert_eq!(kind(no_to), None);
    }

    #[test]
    fn record_route_originating_v4() {
        let msg = request("INVITE", "sip:bob@ims.example.net", false, "");
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        record_route(&mut ed, &key(), &ours4(), flow4(), Dir::ToCore).unwrap();
        // one line, core-facing on top (the interface it leaves by), both with lr and a token
        assert_eq!(
            header_values(&ed, HeaderName::RecordRoute),
            [core_entry(flow4()), ue_entry(flow4())]
        );
        assert_eq!(ed.view().headers(HeaderName::RecordRoute).count(), 1);
        Message::parse(ed.as_bytes())
            .unwrap()
            .view()
            .validate()
            .unwrap();
        // a UE writes no Record-Route: refused, nothing changed
        let msg = request(
            "INVITE",
            "sip:bob@ims.example.net",
            false,
            "Record-Route: <sip:evil.example.com;lr>\r\n",
        );
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let before = ed.as_bytes().to_vec();
        assert_eq!(
            record_route(&mut ed, &key(), &ours4(), flow4(), Dir::ToCore),
            Err(DialogError::RecordRoutePresent)
        );
        assert_eq!(ed.as_bytes(), before);
    }

    #[test]
    fn record_route_terminating_v6_goes_above_the_cores_entries() {
        let extra =
            format!("Record-Route: {SCSCF}\r\nRecord-Route: <sip:icscf.ims.example.net;lr>\r\n");
        let msg = request("INVITE", "sip:bob@[2001:db8:46::6]:5105", false, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        record_route(&mut ed, &key(), &ours6(), flow6(), Dir::ToUe).unwrap();
        assert_eq!(
            header_values(&ed, HeaderName::RecordRoute),
            [
                entry("[2001:db8:88::1]:5101", Role::UeSide, flow6()),
                core_entry(flow6()),
                SCSCF.to_string(),
                "<sip:icscf.ims.example.net;lr>".to_string(),
            ]
        );
        // RFC 3261 §16.6 item 4: before any existing value — here, a line of its own above
        let first_rr = ed.find(HeaderName::RecordRoute, 0).unwrap();
        let v = ed.view();
        let line = v.idx.headers()[first_rr].value;
        assert!(
            v.bytes(line)
                .starts_with(b"<sip:[2001:db8:88::1]:5101;lr;ftok=16")
        );
    }

    /// Originating: the UE's route set is the Record-Route reversed (RFC 3261 §12.1.2); the far
    /// end's is the Record-Route as is (§12.1.1). Both come back through our pair.
    #[test]
    fn in_dialog_both_ways_after_an_originating_setup() {
        let f = flow4();
        // the UE's BYE: Route = [ue-facing, core-facing, S-CSCF], over two lines
        let extra = format!(
            "Route: {}, {}\r\nRoute: {SCSCF}\r\n",
            ue_entry(f),
            core_entry(f)
        );
        let msg = request("BYE", "sip:bob@10.9.9.9:5070", true, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let r = pop_dialog_routes(&mut ed, &own(), &key(), Dir::ToCore).unwrap();
        assert_eq!(r.flow, f);
        assert!(r.flow.is_of(7, "10.46.0.6".parse().unwrap()));
        assert_eq!(
            ed.view().bytes(r.next),
            b"sip:scscf.ims.example.net:6060;lr"
        );
        assert_eq!(header_values(&ed, HeaderName::Route), [SCSCF]);
        Message::parse(ed.as_bytes())
            .unwrap()
            .view()
            .validate()
            .unwrap();

        // the far end's BYE toward the UE: Route = [core-facing, ue-facing], then the
        // Request-URI (the UE's contact)
        let extra = format!("Route: {},{}\r\n", core_entry(f), ue_entry(f));
        let msg = request("BYE", "sip:alice@10.46.0.6:5105", true, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let r = pop_dialog_routes(&mut ed, &own(), &key(), Dir::ToUe).unwrap();
        assert_eq!(r.flow, f);
        assert_eq!(ed.view().bytes(r.next), b"sip:alice@10.46.0.6:5105");
        assert!(ed.find(HeaderName::Route, 0).is_none());
    }

    #[test]
    fn in_dialog_v6_route_per_line() {
        let f = flow6();
        let ue = entry("[2001:db8:88::1]:5101", Role::UeSide, f);
        let extra = format!(
            "Route: {ue}\r\nRoute: {}\r\nRoute: {SCSCF}\r\n",
            core_entry(f)
        );
        let msg = request("UPDATE", "sip:bob@[2001:db8:9::9]", true, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let r = pop_dialog_routes(&mut ed, &own(), &key(), Dir::ToCore).unwrap();
        assert_eq!(r.flow, f);
        assert_eq!(header_values(&ed, HeaderName::Route), [SCSCF]);
        assert_eq!(ed.view().headers(HeaderName::Route).count(), 1);
    }

    /// Each hostile Route set, from the UE (or toward it), is refused with its error and the
    /// message is left as it was.
    #[test]
    fn hostile_route_sets_are_refused_untouched() {
        let f = flow4();
        let other = Flow { binding: 8, ..f };
        let good_ue = ue_entry(f);
        let good_core = core_entry(f);
        let tok = token(Role::UeSide, f);
        let mut flipped = tok.clone().into_bytes();
        flipped[30] = if flipped[30] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        let with = |t: &str| format!("<sip:10.88.1.1:5101;lr;ftok={t}>");
        let cases: Vec<(String, Dir, &str, DialogError)> = vec![
            (String::new(), Dir::ToCore, "", DialogError::NoRoute),
            // a route set pointing straight at the core
            (
                format!("Route: {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::NotOurRoute,
            ),
            (
                format!("Route: <sip:10.0.1.99;lr>, {good_ue}, {good_core}, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::NotOurRoute,
            ),
            // the pre-loaded Route of an initial request, without a token
            (
                format!("Route: <sip:10.88.1.1:5101;lr>, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::NoToken,
            ),
            (
                format!("Route: {}, {good_core}, {SCSCF}\r\n", with(&flipped)),
                Dir::ToCore,
                "",
                DialogError::Forged,
            ),
            (
                format!(
                    "Route: {}, {good_core}, {SCSCF}\r\n",
                    with(&tok[..tok.len() - 1])
                ),
                Dir::ToCore,
                "",
                DialogError::BadToken,
            ),
            (
                format!(
                    "Route: {}, {good_core}, {SCSCF}\r\n",
                    with(&tok.to_uppercase())
                ),
                Dir::ToCore,
                "",
                DialogError::BadToken,
            ),
            (
                format!(
                    "Route: {}, {good_core}, {SCSCF}\r\n",
                    with(&format!("{tok}0"))
                ),
                Dir::ToCore,
                "",
                DialogError::BadToken,
            ),
            (
                format!(
                    "Route: {}, {good_core}, {SCSCF}\r\n",
                    with(&"a".repeat(5000))
                ),
                Dir::ToCore,
                "",
                DialogError::BadToken,
            ),
            (
                format!(
                    "Route: <sip:10.88.1.1:5101;lr;ftok={tok};ftok={tok}>, {good_core}, {SCSCF}\r\n"
                ),
                Dir::ToCore,
                "",
                DialogError::BadToken,
            ),
            (
                format!("Route: <sip:10.88.1.1:5101;ftok={tok}>, {good_core}, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::NoLr,
            ),
            // direction confusion: the far end's order sent by the UE, one role twice
            (
                format!("Route: {good_core}, {good_ue}, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::WrongOrder,
            ),
            (
                format!("Route: {good_ue}, {good_ue}, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::WrongOrder,
            ),
            (
                format!("Route: {good_ue}, {good_core}\r\n"),
                Dir::ToUe,
                "",
                DialogError::WrongOrder,
            ),
            // spliced from two dialogs
            (
                format!("Route: {good_ue}, {}, {SCSCF}\r\n", core_entry(other)),
                Dir::ToCore,
                "",
                DialogError::Mismatch,
            ),
            (
                format!("Route: {good_ue}, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::HalfPair,
            ),
            (
                format!("Route: {good_ue}\r\n"),
                Dir::ToCore,
                "",
                DialogError::HalfPair,
            ),
            // nothing after us: straight to the far end's contact, past the S-CSCF
            (
                format!("Route: {good_ue}, {good_core}\r\n"),
                Dir::ToCore,
                "",
                DialogError::NoRouteBeyond,
            ),
            (
                format!("Route: {good_ue}, {good_core}, <sip:scscf.ims.example.net>\r\n"),
                Dir::ToCore,
                "",
                DialogError::StrictNextHop,
            ),
            (
                format!("Route: {good_ue}, {good_core}, {good_core}\r\n"),
                Dir::ToCore,
                "",
                DialogError::WrongOrder,
            ),
            (
                format!("Route: {good_core}, {good_ue}, <sip:10.46.0.99;lr>\r\n"),
                Dir::ToUe,
                "",
                DialogError::RouteBeyondUe,
            ),
            (
                format!("Route: {good_ue}, {good_core}, {SCSCF}\r\n"),
                Dir::ToCore,
                "sip:10.88.1.1:5101;lr",
                DialogError::RequestUriIsUs,
            ),
            (
                format!("Route: <sip:10.88.1.1:5101;lr, {SCSCF}\r\n"),
                Dir::ToCore,
                "",
                DialogError::Malformed,
            ),
        ];
        for (extra, dir, ruri, want) in cases {
            let ruri = if ruri.is_empty() {
                "sip:bob@10.9.9.9:5070"
            } else {
                ruri
            };
            let msg = request("BYE", ruri, true, &extra);
            let (mut buf, s, e) = framed(&msg);
            let mut ed = Editor::new(&mut buf, s, e).unwrap();
            let before = ed.as_bytes().to_vec();
            let got = pop_dialog_routes(&mut ed, &own(), &key(), dir);
            assert_eq!(got, Err(want), "{extra}");
            assert_eq!(ed.as_bytes(), before, "{extra}");
            assert_eq!(want.status().0 / 100, 4);
        }
    }

    /// A UE using the route set of another UE's dialog: the entries verify (we made them), and
    /// the flow they name is not the one of the SA set the request came over.
    #[test]
    fn another_ues_dialog_is_told_by_the_flow() {
        let victim = Flow {
            binding: 8,
            ue: "10.46.0.8".parse().unwrap(),
        };
        let extra = format!(
            "Route: {}, {}, {SCSCF}\r\n",
            ue_entry(victim),
            core_entry(victim)
        );
        let msg = request("BYE", "sip:bob@10.9.9.9:5070", true, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let r = pop_dialog_routes(&mut ed, &own(), &key(), Dir::ToCore).unwrap();
        // the attacker's SA set: binding 7, 10.46.0.6
        assert!(!r.flow.is_of(flow4().binding, flow4().ue));
        assert!(r.flow.is_of(8, "10.46.0.8".parse().unwrap()));
        // another process's key verifies none of it
        let msg = request("BYE", "sip:bob@10.9.9.9:5070", true, &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let got = pop_dialog_routes(&mut ed, &own(), &FlowKey::new(&[4; 32]), Dir::ToCore);
        assert_eq!(got, Err(DialogError::Forged));
    }

    fn response(code: &str, extra: &str) -> String {
        format!(
            "SIP/2.0 {code}\r\n\
             Via: SIP/2.0/UDP 10.46.0.6:5103;branch=z9hG4bKue1;rport=5103\r\n\
             {extra}\
             From: <sip:alice@ims.example.net>;tag=a1\r\n\
             To: <sip:bob@ims.example.net>;tag=b1\r\n\
             Call-ID: call-1@10.46.0.6\r\n\
             CSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn response_to_ue_keeps_order_and_rewrites_only_our_port() {
        let f = flow4();
        let extra = format!(
            "Record-Route: <sip:as.ims.example.net;lr>\r\nRecord-Route: {SCSCF}, {}, {}\r\n",
            core_entry(f),
            ue_entry(f)
        );
        let msg = response("180 Ringing", &extra);
        // the same SA set: nothing to rewrite
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let before = ed.as_bytes().to_vec();
        assert_eq!(response_to_ue(&mut ed, &own(), &key(), 5101), Ok(Some(f)));
        assert_eq!(ed.as_bytes(), before);
        // a new SA set since the INVITE: our UE-facing entry names the new port-s, the token
        // (no port in it) still verifies, every entry keeps its place
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        assert_eq!(response_to_ue(&mut ed, &own(), &key(), 5103), Ok(Some(f)));
        assert_eq!(
            header_values(&ed, HeaderName::RecordRoute),
            [
                "<sip:as.ims.example.net;lr>".to_string(),
                SCSCF.to_string(),
                core_entry(f),
                entry("10.88.1.1:5103", Role::UeSide, f),
            ]
        );
        Message::parse(ed.as_bytes())
            .unwrap()
            .view()
            .validate()
            .unwrap();
        // IPv6: brackets kept
        let f = flow6();
        let extra = format!(
            "Record-Route: {SCSCF},{},{}\r\n",
            core_entry(f),
            entry("[2001:db8:88::1]:5101", Role::UeSide, f)
        );
        let msg = response("200 OK", &extra);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        assert_eq!(response_to_ue(&mut ed, &own(), &key(), 5199), Ok(Some(f)));
        assert_eq!(
            header_values(&ed, HeaderName::RecordRoute)[2],
            entry("[2001:db8:88::1]:5199", Role::UeSide, f)
        );
    }

    #[test]
    fn hostile_response_record_routes() {
        let f = flow4();
        let (ue, core) = (ue_entry(f), core_entry(f));
        let other = core_entry(Flow { binding: 99, ..f });
        let to_ue: Vec<(String, Result<Option<Flow>, DialogError>)> = vec![
            (String::new(), Ok(None)),
            (
                format!("Record-Route: {SCSCF}\r\n"),
                Err(DialogError::NotOurRecordRoute),
            ),
            (
                format!("Record-Route: {SCSCF}, {ue}, {core}\r\n"),
                Err(DialogError::WrongOrder),
            ),
            (
                format!("Record-Route: {SCSCF}, {ue}\r\n"),
                Err(DialogError::HalfPair),
            ),
            (
                format!("Record-Route: {core}, {SCSCF}, {ue}\r\n"),
                Err(DialogError::WrongOrder),
            ),
            (
                format!("Record-Route: {other}, {ue}\r\n"),
                Err(DialogError::Mismatch),
            ),
            (
                format!("Record-Route: {core}, {ue}, {core}\r\n"),
                Err(DialogError::WrongOrder),
            ),
            (
                format!("Record-Route: {core}, <sip:10.88.1.1:5101;lr>\r\n"),
                Err(DialogError::NoToken),
            ),
        ];
        for (extra, want) in to_ue {
            let msg = response("200 OK", &extra);
            let (mut buf, s, e) = framed(&msg);
            let mut ed = Editor::new(&mut buf, s, e).unwrap();
            let before = ed.as_bytes().to_vec();
            assert_eq!(
                response_to_ue(&mut ed, &own(), &key(), 5103),
                want,
                "{extra}"
            );
            assert_eq!(ed.as_bytes(), before, "{extra}");
        }
        // from the UE (terminating): our pair on top, UE-facing first, nothing above it
        let from_ue: Vec<(String, Result<Option<Flow>, DialogError>)> = vec![
            (
                format!("Record-Route: {ue}, {core}, {SCSCF}\r\n"),
                Ok(Some(f)),
            ),
            (
                format!("Record-Route: {ue}\r\nRecord-Route: {core}\r\nRecord-Route: {SCSCF}\r\n"),
                Ok(Some(f)),
            ),
            (String::new(), Ok(None)),
            (
                format!("Record-Route: <sip:10.46.0.6:5105;lr>, {ue}, {core}, {SCSCF}\r\n"),
                Err(DialogError::ForeignRecordRoute),
            ),
            (
                format!("Record-Route: {core}, {ue}, {SCSCF}\r\n"),
                Err(DialogError::WrongOrder),
            ),
            (
                format!("Record-Route: {SCSCF}\r\n"),
                Err(DialogError::NotOurRecordRoute),
            ),
        ];
        for (extra, want) in from_ue {
            let msg = response("183 Session Progress", &extra);
            let m = Message::parse(msg.as_bytes()).unwrap();
            assert_eq!(response_from_ue(m.view(), &own(), &key()), want, "{extra}");
        }
    }

    #[test]
    fn no_room_is_an_edit_error_and_changes_nothing() {
        let msg = request("INVITE", "sip:bob@ims.example.net", false, "");
        let mut buf = msg.clone().into_bytes();
        let end = buf.len();
        let mut ed = Editor::new(&mut buf, 0, end).unwrap();
        assert_eq!(
            record_route(&mut ed, &key(), &ours4(), flow4(), Dir::ToCore),
            Err(DialogError::Edit(EditError::NoRoom))
        );
        assert_eq!(ed.as_bytes(), msg.as_bytes());
        // a core-side host that does not fit our line
        let long = "h".repeat(MAX_RR_LINE);
        let (mut buf, s, e) = framed(&msg);
        let mut ed = Editor::new(&mut buf, s, e).unwrap();
        let ours = OurEntries {
            core_side: long.as_bytes(),
            ..ours4()
        };
        assert_eq!(
            record_route(&mut ed, &key(), &ours, flow4(), Dir::ToCore),
            Err(DialogError::TooLong)
        );
    }

    /// Bytes changed at random in messages that pass: every rule returns (never panics), and
    /// whatever it accepted and edited still parses.
    #[test]
    fn mutated_messages_never_panic() {
        let (own, key, f) = (own(), key(), flow4());
        let seeds = [
            request(
                "BYE",
                "sip:bob@10.9.9.9",
                true,
                &format!("Route: {}, {}, {SCSCF}\r\n", ue_entry(f), core_entry(f)),
            ),
            request(
                "ACK",
                "sip:alice@10.46.0.6:5105",
                true,
                &format!("Route: {},{}\r\n", core_entry(f), ue_entry(f)),
            ),
            response(
                "200 OK",
                &format!(
                    "Record-Route: {SCSCF}, {}, {}\r\n",
                    core_entry(f),
                    ue_entry(f)
                ),
            ),
            request("INVITE", "sip:bob@ims.example.net", false, ""),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"<>;,:=@[]0123456789abcdefABCDEF \r\nsiplrftok";
        let mut edited = 0;
        for round in 0..4000 {
            let seed = &seeds[round % seeds.len()];
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let mut buf = vec![0u8; HEADROOM];
            buf.extend_from_slice(&bytes);
            let end = buf.len();
            buf.resize(end + TAILROOM, 0);
            let Ok(mut ed) = Editor::new(&mut buf, HEADROOM, end) else {
                continue;
            };
            let _ = classify(ed.view(), &own);
            let _ = response_from_ue(ed.view(), &own, &key);
            for dir in [Dir::ToCore, Dir::ToUe] {
                if pop_dialog_routes(&mut ed, &own, &key, dir).is_ok() {
                    Message::parse(ed.as_bytes()).unwrap();
                    edited += 1;
                }
            }
            if response_to_ue(&mut ed, &own, &key, 5107).is_ok_and(|f| f.is_some()) {
                Message::parse(ed.as_bytes()).unwrap();
            }
            if record_route(&mut ed, &key, &ours6(), flow6(), Dir::ToUe).is_ok() {
                Message::parse(ed.as_bytes()).unwrap();
            }
        }
        // the mutations left enough messages acceptable for the edits to be exercised
        assert!(edited > 200, "{edited}");
    }

    /// The whole dialog path of one call allocates nothing (messages and frames are made
    /// before counting starts, as a worker's frames are).
    #[test]
    fn dialog_rules_do_not_allocate() {
        let own = own();
        let key = key();
        let f = flow4();
        let invite = framed(&request("INVITE", "sip:bob@ims.example.net", false, ""));
        let bye = framed(&request(
            "BYE",
            "sip:bob@10.9.9.9",
            true,
            &format!("Route: {}, {}, {SCSCF}\r\n", ue_entry(f), core_entry(f)),
        ));
        let ringing = framed(&response(
            "180 Ringing",
            &format!(
                "Record-Route: {SCSCF}, {}, {}\r\n",
                core_entry(f),
                ue_entry(f)
            ),
        ));
        let from_ue = response(
            "200 OK",
            &format!(
                "Record-Route: {}, {}, {SCSCF}\r\n",
                ue_entry(f),
                core_entry(f)
            ),
        );
        let from_ue = Message::parse(from_ue.as_bytes()).unwrap();
        let ip: IpAddr = "10.46.0.6".parse().unwrap();
        let ((invite, _bye, ringing), n) = crate::test_alloc::allocations_in(|| {
            let (mut b, s, e) = invite;
            let mut ed = Editor::new(&mut b, s, e).unwrap();
            assert_eq!(classify(ed.view(), &own), Some(RequestKind::Initial));
            record_route(&mut ed, &key, &ours4(), f, Dir::ToCore).unwrap();
            let (mut b2, s, e) = bye;
            let mut ed = Editor::new(&mut b2, s, e).unwrap();
            assert_eq!(classify(ed.view(), &own), Some(RequestKind::InDialog));
            let r = pop_dialog_routes(&mut ed, &own, &key, Dir::ToCore).unwrap();
            assert!(r.flow.is_of(7, ip));
            let (mut b3, s, e) = ringing;
            let mut ed = Editor::new(&mut b3, s, e).unwrap();
            assert_eq!(response_to_ue(&mut ed, &own, &key, 5103), Ok(Some(f)));
            assert_eq!(response_from_ue(from_ue.view(), &own, &key), Ok(Some(f)));
            (b, b2, b3)
        });
        assert_eq!(n, 0, "allocations on the dialog path");
        // the edits were made, and the counter does count
        let has = |b: &[u8], s: &[u8]| b.windows(s.len()).any(|w| w == s);
        assert!(has(
            &invite,
            b"Record-Route: <sip:10.0.1.10:5060;lr;ftok=24"
        ));
        assert!(has(&ringing, b"<sip:10.88.1.1:5103;lr;ftok=14"));
        let (_, one) = crate::test_alloc::allocations_in(|| Vec::<u8>::with_capacity(8));
        assert_eq!(one, 1);
    }
}
