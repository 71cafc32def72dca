//! Responses (RFC 3261 §8.2.6, §16.7, §18.2.2, RFC 3581): whose they are, where they go, and
//! the ones we build ourselves.
//!
//! Owns: whether the top Via is ours (and its branch), popping it, where a response goes next,
//! the port a response to a request goes back to, the identity asserted on a UE's response, and
//! building a response or the error answer of a [`Reject`].

use core::net::{IpAddr, SocketAddr};

use super::Reject;
use crate::esp::{EncAlg, IntegAlg};
use crate::sip::branch::Branch;
use crate::sip::edit::{EditError, Editor};
use crate::sip::headers::{self, NameAddr, Via};
use crate::sip::lex::{ListIter, parse_u64};
use crate::sip::msg::{HeaderName, Span, View};
use crate::sip::write::Writer;

pub use crate::sip::TopVia;

/// How many Via values a message carries (header lines and comma-separated values alike).
pub fn via_count(v: View<'_>) -> usize {
    v.values(HeaderName::Via)
        .map(|h| ListIter::new(h).count())
        .sum()
}

/// [`pop_top_via`] of the top Via already found (in the message as it still stands). As
/// [`pop_top_via`], it pops only the first Via line's first value: a first Via line with no
/// value is [`EditError::BadTarget`] (the response is not forwarded).
pub fn pop_top_via_at(ed: &mut Editor<'_>, top: &TopVia) -> Result<(), EditError> {
    if !top.first_line {
        return Err(EditError::BadTarget);
    }
    ed.remove_item(top.header, top.item, b',', true)
}

/// Remove the topmost Via value (ours) from a response (RFC 3261 §16.7 item 3).
pub fn pop_top_via(ed: &mut Editor<'_>) -> Result<(), EditError> {
    let Some(i) = ed.find(HeaderName::Via, 0) else {
        return Err(EditError::BadTarget);
    };
    let item = {
        let v = ed.view();
        let h = v.idx.headers()[i];
        ListIter::new(v.bytes(h.value))
            .next()
            .map(|x| Span::of(v.buf, x))
            .ok_or(EditError::BadTarget)?
    };
    ed.remove_item(i, item, b',', true)
}

/// Build a response to `req` into `out` (RFC 3261 §8.2.6): status line, the request's Via,
/// From, To (with `to_tag` added if it has none), Call-ID and CSeq, the `extra` header lines
/// (each ending in CRLF), and `Content-Length: 0`. Returns the length written.
pub fn build_response(
    req: View<'_>,
    code: u16,
    reason: &str,
    to_tag: &[u8],
    extra: &[&[u8]],
    out: &mut [u8],
) -> Option<usize> {
    let mut w = Writer::new(out);
    w.put(b"SIP/2.0 ")
        .dec(code as u64)
        .put(b" ")
        .put(reason.as_bytes())
        .put(b"\r\n");
    for h in req.idx.headers() {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                w.put(h.name.as_str().as_bytes())
                    .put(b": ")
                    .put(req.bytes(h.value))
                    .put(b"\r\n");
            }
            HeaderName::To => {
                let value = req.bytes(h.value);
                w.put(b"To: ").put(value);
                let tagged = NameAddr::parse(value).is_some_and(|n| n.tag().is_some());
                if !tagged && code > 100 {
                    w.put(b";tag=").put(to_tag);
                }
                w.put(b"\r\n");
            }
            _ => {}
        }
    }
    for e in extra {
        w.put(e);
    }
    w.put(b"Content-Length: 0\r\n\r\n");
    w.finish()
}

/// The response for a [`Reject`], with the headers each code needs: 420 lists the unsupported
/// Proxy-Require options (RFC 3261 §20.40), 421 requires sec-agree (RFC 3329 §2.3.1), 494
/// lists the mechanisms we accept (RFC 3329 §2.3.1).
pub fn build_reject(
    req: View<'_>,
    r: &Reject,
    to_tag: &[u8],
    prefs: &[(IntegAlg, EncAlg)],
    out: &mut [u8],
) -> Option<usize> {
    let mut extra = [0u8; 512];
    let mut w = Writer::new(&mut extra);
    match r.code {
        420 => {
            w.put(b"Unsupported: ");
            let mut first = true;
            for t in req.values(HeaderName::ProxyRequire) {
                if !t.eq_ignore_ascii_case(b"sec-agree") {
                    if !first {
                        w.put(b", ");
                    }
                    w.put(t);
                    first = false;
                }
            }
            w.put(b"\r\n");
        }
        421 => {
            w.put(b"Require: sec-agree\r\n");
        }
        494 => {
            w.put(b"Require: sec-agree\r\nSecurity-Server: ");
            for (n, (alg, ealg)) in prefs.iter().enumerate() {
                if n > 0 {
                    w.put(b", ");
                }
                w.put(b"ipsec-3gpp;prot=esp;mod=trans;alg=")
                    .put(alg.token().as_bytes())
                    .put(b";ealg=")
                    .put(ealg.token().as_bytes());
            }
            w.put(b"\r\n");
        }
        _ => {}
    }
    let n = w.finish()?;
    build_response(req, r.code, r.reason, to_tag, &[&extra[..n]], out)
}

/// What we answer a request addressed to us — its Request-URI is us ([`crate::sip::OwnUris`])
/// once our own Route entries are popped (RFC 3261 §16.4: we are then its UAS, nothing is
/// forwarded): OPTIONS gets 200 (RFC 3261 §11.2) with [`ALLOW_TO_US`]; ACK gets nothing
/// (RFC 3261 §17.2.3: never answered); every other method 405 with the same Allow (RFC 3261
/// §8.2.1: a UAS lists what it supports). REGISTER addressed to us is the registrar's (403:
/// we are no home domain, TS 24.229 §5.1.1.2.1).
pub fn answer_to_us(v: View<'_>) -> Option<(u16, &'static str)> {
    if v.is_method(b"ACK") {
        None
    } else if v.is_method(b"OPTIONS") {
        Some((200, "OK"))
    } else {
        Some((405, "Method Not Allowed"))
    }
}

/// The Allow line of [`answer_to_us`]: the only method we serve as a UAS.
pub const ALLOW_TO_US: &[u8] = b"Allow: OPTIONS\r\n";

/// The branch prefix of the BYEs the registration thread sends when it releases the calls of
/// a registration that ended (`control::dialogs`): the workers hand their answers to it rather
/// than relay them. An RFC 3261 branch (§8.1.1.7 magic cookie), never one of the workers'
/// ([`Branch::parse`] refuses it).
pub const RELEASE_BRANCH: &[u8] = b"z9hG4bK-rel-";

/// Whether a response is a final one (2xx–6xx) to an INVITE (its CSeq method; RFC 3261
/// §13.2.2.4, §13.2.2.3): what confirms or ends the dialogs of an INVITE.
pub fn is_final_to_invite(v: View<'_>) -> bool {
    v.status().is_some_and(|c| c >= 200) && cseq_method(v) == Some(b"INVITE")
}

/// The branch prefix of the registration thread's SUBSCRIBEs to the reg event
/// (`control::regevent`): the workers hand their answers to it. An RFC 3261 branch, never one
/// of the workers' ([`Branch::parse`] refuses it).
pub const SUBSCRIBE_BRANCH: &[u8] = b"z9hG4bK-sub-";

/// The branch prefix of the de-registrations the registration thread sends on a UE's behalf
/// (`control::registrar`, P-CSCF-initiated): their answers are its own, never relayed.
pub const PCSCF_DEREG_BRANCH: &[u8] = b"z9hG4bK-dreg-";

/// The registration thread's own branch formats (the Via of the requests it sends itself):
/// the workers hand the answers that carry one to it, never relay them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlBranch {
    /// A BYE or CANCEL of a release ([`RELEASE_BRANCH`]).
    Release,
    /// A reg event SUBSCRIBE ([`SUBSCRIBE_BRANCH`]).
    Subscription,
    /// A de-registration on a UE's behalf ([`PCSCF_DEREG_BRANCH`]).
    Deregistration,
}

/// Which of the [`ControlBranch`] formats the top Via of a message carries, if any.
pub fn control_branch(v: View<'_>) -> Option<ControlBranch> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let branch = via.branch()?;
    [
        (RELEASE_BRANCH, ControlBranch::Release),
        (SUBSCRIBE_BRANCH, ControlBranch::Subscription),
        (PCSCF_DEREG_BRANCH, ControlBranch::Deregistration),
    ]
    .into_iter()
    .find(|(prefix, _)| branch.starts_with(prefix))
    .map(|(_, c)| c)
}

/// Whether the top Via of a response is ours — its sent-by equals `sent_by` as we write it (host
/// case-insensitive, a missing port meaning 5060) and it carries an RFC 3261 branch — and if so,
/// the branch when it has the format of the workers' branches ([`Branch`], still to be verified
/// with [`crate::sip::branch::BranchKey::verify`]): `None` if the Via is not ours,
/// `Some(None)` for one of ours in another format (the registration thread's).
pub fn top_via_ours(v: View<'_>, sent_by: &[u8]) -> Option<Option<Branch>> {
    top_via_ours_at(v, &TopVia::of(v)?, sent_by)
}

/// [`top_via_ours`] of the top Via already found.
pub fn top_via_ours_at(v: View<'_>, top: &TopVia, sent_by: &[u8]) -> Option<Option<Branch>> {
    top_via_ours_split(v, top, headers::split_host_port(sent_by)?)
}

/// [`top_via_ours_at`] with our sent-by already split into host and port
/// ([`headers::split_host_port`]): a worker splits its own once, not per response.
pub fn top_via_ours_split(
    v: View<'_>,
    top: &TopVia,
    (our_host, our_port): (&[u8], Option<u16>),
) -> Option<Option<Branch>> {
    let via = top.via(v);
    // the sent-by first: a Via that is not ours is no branch's to look for
    if !(via.host.eq_ignore_ascii_case(our_host)
        && via.port.unwrap_or(5060) == our_port.unwrap_or(5060))
    {
        return None;
    }
    let branch = via.branch()?;
    branch
        .starts_with(crate::sip::branch::COOKIE)
        .then(|| Branch::parse(branch))
}

/// The method of a message's CSeq (its first CSeq line), if it parses.
pub fn cseq_method(v: View<'_>) -> Option<&[u8]> {
    v.header(HeaderName::CSeq)
        .and_then(headers::cseq)
        .map(|(_, m)| m)
}

/// The port a response to this request goes back to (RFC 3261 §18.2.2, RFC 3581 §4), where
/// `source` is where the request came from: the rport we fill in (or the one written), else the
/// Via's sent-by port (5060 when none) — what [`response_next_hop`] reads back once the request's
/// Via was fixed. The address is always `source`'s: the Via either names it or gets `received`.
pub fn reply_port(v: View<'_>, source: SocketAddr) -> Option<u16> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    Some(match via.rport() {
        Some(Some(p)) => parse_u64(p, 5).and_then(|p| u16::try_from(p).ok())?,
        Some(None) => source.port(),
        None => via.port.unwrap_or(5060),
    })
}

/// The top Via's sent-by port (5060 when none): where a UE asks for the response to a request it
/// sent over an SA (TS 33.203 §7.1).
pub fn top_via_port(v: View<'_>) -> Option<u16> {
    Some(TopVia::of(v)?.port.unwrap_or(5060))
}

/// Replace the identity a UE wrote by the network-asserted one (RFC 3325 §9.1, TS 24.229
/// §5.2.6.3 and §5.2.6.4): every P-Preferred-Identity and P-Asserted-Identity goes, and
/// `P-Asserted-Identity: <pai>` is added.
pub fn assert_identity(ed: &mut Editor<'_>, pai: &[u8]) -> Result<(), EditError> {
    ed.remove_all(HeaderName::PPreferredIdentity)?;
    ed.remove_all(HeaderName::PAssertedIdentity)?;
    let end = ed.index().headers().len();
    ed.insert_lines(end, 1, &[b"P-Asserted-Identity: ", pai, b"\r\n"])
}

/// Where a response goes after our Via is gone (RFC 3261 §18.2.2, RFC 3581 §4): the top Via's
/// `received` (else its sent-by host, which must be an IP literal) and `rport` (else its port,
/// else 5060).
pub fn response_next_hop(v: View<'_>) -> Option<SocketAddr> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let host = via.received().unwrap_or(via.host);
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    let ip: IpAddr = core::str::from_utf8(host).ok()?.parse().ok()?;
    let port = match via.rport() {
        Some(Some(p)) => parse_u64(p, 5).and_then(|p| u16::try_from(p).ok())?,
        _ => via.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// The top Via's sent-by as an address, when its host is an IP literal (the UE's protected
/// port for a request that came over an SA, TS 33.203 §7.1).
pub fn top_via_sent_by(v: View<'_>) -> Option<SocketAddr> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let host = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let ip: IpAddr = core::str::from_utf8(host).ok()?.parse().ok()?;
    Some(SocketAddr::new(ip, via.port.unwrap_or(5060)))
}
