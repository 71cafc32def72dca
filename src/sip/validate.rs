//! The checks a proxy applies to a message from an untrusted peer before it trusts it
//! (RFC 3261 §8.1.1, §16.3, §20; the RFC 4475 invalid messages are refused here).
//!
//! Owns: [`View::validate`] and [`Message::parse_strict`] (parse, then validate). Framing and
//! indexing stay in `msg.rs`, which knows nothing of these checks; the per-header syntax comes
//! from the typed headers. Reads only; nothing allocates.

use super::headers;
use super::lex::{self, ListIter, parse_u64};
use super::msg::{HeaderName, Message, ParseError, ParseErrorKind, Span, StartLine, View};

/// The first Via value of a message (what `View::values(Via)` yields first), found and parsed
/// once (RFC 3261 §20.42) for every rule that reads it: spans into the message as it stands,
/// good until the message is edited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopVia {
    /// The index of its header line.
    pub header: usize,
    /// The value: its line's first comma-separated item, trimmed.
    pub item: Span,
    pub transport: Span,
    /// The sent-by host (an IPv6 reference keeps its brackets).
    pub host: Span,
    pub port: Option<u16>,
    /// The text after the first `;` (empty if none).
    pub params: Span,
    /// The value of its first `branch` parameter ([`headers::Via::branch`]).
    pub branch: Option<Span>,
    /// [`headers::Via::received_or_rport`].
    pub received_or_rport: bool,
    /// Whether it stands on the message's first Via line (not after an empty one): received /
    /// rport and the pop of a response's Via act only there, as they always did.
    pub first_line: bool,
}

impl TopVia {
    /// The top Via of `v`; `None` when it has none or the first value is no Via.
    pub fn of(v: View<'_>) -> Option<TopVia> {
        let mut vias = v
            .idx
            .headers()
            .iter()
            .enumerate()
            .filter(|(_, h)| h.name == HeaderName::Via);
        let (first, h) = vias.next()?;
        let (header, item) = match ListIter::new(v.bytes(h.value)).next() {
            Some(x) => (first, x),
            None => {
                vias.find_map(|(i, h)| ListIter::new(v.bytes(h.value)).next().map(|x| (i, x)))?
            }
        };
        let via = headers::Via::parse(item)?;
        Some(TopVia::from_parsed(&v, header, via, header == first))
    }

    /// The top Via at header `header`, parsed as `via`.
    fn from_parsed(v: &View<'_>, header: usize, via: headers::Via<'_>, first_line: bool) -> TopVia {
        TopVia {
            first_line,
            header,
            item: Span::of(v.buf, via.raw),
            transport: Span::of(v.buf, via.transport),
            host: Span::of(v.buf, via.host),
            port: via.port,
            params: Span::of(v.buf, via.params),
            branch: via.branch.map(|b| Span::of(v.buf, b)),
            received_or_rport: via.received_or_rport,
        }
    }

    /// The parsed value, over the message `v` it was found in.
    pub fn via<'a>(&self, v: View<'a>) -> headers::Via<'a> {
        headers::Via {
            raw: v.bytes(self.item),
            transport: v.bytes(self.transport),
            host: v.bytes(self.host),
            port: self.port,
            params: v.bytes(self.params),
            branch: self.branch.map(|b| v.bytes(b)),
            received_or_rport: self.received_or_rport,
        }
    }
}

/// What validation read that the rules read again ([`View::validate_checked`]): kept so that
/// nothing is parsed twice. Spans into the message as validated: good until it is edited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// The top Via ([`TopVia::of`] of the message).
    pub top_via: Option<TopVia>,
    /// Whether the To header carries a tag (RFC 3261 §12: a request inside a dialog).
    pub to_tag: bool,
    /// The URIs of the first P-Preferred-Identity values, in message order (RFC 3325 §9.2: a
    /// UE may send a sip: and a tel: one), as [`headers::NameAddr::parse`] reads them.
    pub ppi: [Span; 2],
    /// How many P-Preferred-Identity values there are (past `ppi.len()`, the rest are read
    /// from the message).
    pub ppi_count: usize,
}

impl Checked {
    /// The P-Preferred-Identity URIs, when all of them are in [`Checked::ppi`].
    pub fn ppi_uris(&self) -> Option<&[Span]> {
        self.ppi.get(..self.ppi_count)
    }
}

impl<'a> Message<'a> {
    /// Parse, then apply [`View::validate`]: what a proxy must do with input it does not trust.
    pub fn parse_strict(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        let m = Message::parse(buf)?;
        m.view().validate()?;
        Ok(m)
    }
}

impl HeaderName {
    /// Headers whose value is a name-addr / addr-spec (RFC 3261 §20.10, §20.20, §20.34...).
    fn is_name_addr(self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
                | HeaderName::ServiceRoute
                | HeaderName::PAssociatedUri
                | HeaderName::PAssertedIdentity
                | HeaderName::PPreferredIdentity
        )
    }
}

impl View<'_> {
    /// The syntax and consistency checks a proxy applies to a message from an untrusted peer
    /// (RFC 3261 §8.1.1, §16.3, §20; the RFC 4475 invalid messages are refused here).
    pub fn validate(&self) -> Result<(), ParseError> {
        self.validate_checked().map(|_| ())
    }

    /// [`validate`](View::validate), returning what it read that the rules read again.
    pub fn validate_checked(&self) -> Result<Checked, ParseError> {
        let mut checked = Checked::default();
        let idx = self.idx;
        let err = |s: Span, k| Err(ParseError::at(s.start as usize, k));
        if let StartLine::Request { uri, .. } = idx.start_line
            && !headers::request_uri_ok(self.bytes(uri))
        {
            return err(uri, ParseErrorKind::BadRequestUri);
        }
        // Mandatory headers (RFC 3261 §8.1.1; Max-Forwards is added by a proxy when absent, §16.6),
        // the names on the lines gathered in one pass (the index's own name set may hold names
        // an edit removed)
        let present = idx
            .headers()
            .iter()
            .fold(0u64, |set, h| set | 1 << (h.name as u8 & 63));
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            if present & 1 << (name as u8 & 63) == 0 {
                return Err(ParseError::at(
                    idx.headers_end as usize,
                    ParseErrorKind::MissingHeader(name),
                ));
            }
        }
        let hs = idx.headers();
        for (i, h) in hs.iter().enumerate() {
            let v = self.bytes(h.value);
            let bad = ParseErrorKind::BadHeaderValue(h.name);
            if h.name.is_single() && idx.repeats(h.name) && hs[..i].iter().any(|p| p.name == h.name)
            {
                return err(h.line, ParseErrorKind::DuplicateHeader(h.name));
            }
            match h.name {
                HeaderName::CSeq => {
                    let (num, method) = headers::cseq(v).ok_or(ParseError::at(
                        h.value.start as usize,
                        ParseErrorKind::BadCSeq,
                    ))?;
                    // RFC 3261 §8.1.1.5: the number MUST be < 2^31.
                    if num >= 1 << 31 {
                        return err(h.value, ParseErrorKind::BadCSeq);
                    }
                    if self.method().is_some_and(|m| m != method) {
                        return err(h.value, ParseErrorKind::CSeqMethodMismatch);
                    }
                }
                HeaderName::MaxForwards => {
                    // RFC 3261 §20.22: 0..=255.
                    if !matches!(parse_u64(v, 10), Some(0..=255)) {
                        return err(h.value, ParseErrorKind::BadMaxForwards);
                    }
                }
                HeaderName::CallId => {
                    if v.is_empty() || lex::has_ws(v) {
                        return err(h.value, bad);
                    }
                }
                HeaderName::Expires => {
                    // delta-seconds (RFC 3261 §20.19), kept within 32 bits.
                    if !matches!(parse_u64(v, 10), Some(0..=0xffff_ffff)) {
                        return err(h.value, bad);
                    }
                }
                HeaderName::Date => {
                    // RFC 3261 §20.17: SIP-date is RFC 1123 and always in GMT.
                    if !v.ends_with(b"GMT") {
                        return err(h.value, bad);
                    }
                }
                HeaderName::Via => {
                    // RFC 3261 §25.1: Via = "Via" HCOLON via-parm *(COMMA via-parm): a line
                    // with no value is no Via
                    let mut count = 0;
                    for item in ListIter::new(v) {
                        count += 1;
                        let Some(via) = headers::Via::parse(item) else {
                            return err(h.value, bad);
                        };
                        if checked.top_via.is_none() {
                            // (a Via line before this one would have had a value, or been
                            // refused below: this is the first Via line)
                            checked.top_via = Some(TopVia::from_parsed(self, i, via, true));
                        }
                    }
                    if count == 0 {
                        return err(h.value, bad);
                    }
                }
                HeaderName::Contact if v == b"*" => {}
                n if n.is_name_addr() => {
                    let mut count = 0;
                    for item in ListIter::new(v) {
                        count += 1;
                        // RFC 3261 §20.20/§20.39: To, From (and the other single ones) are not
                        // lists: their one value is the whole field. An empty element beside it
                        // (`To: ,<sip:b@h>;tag=1`) would make it a value for this reading and
                        // not for one that parses the whole field.
                        if h.name.is_single() && item.len() != v.len() {
                            return err(h.value, bad);
                        }
                        let Some(na) = headers::NameAddr::parse(item) else {
                            return err(h.value, bad);
                        };
                        if h.name == HeaderName::To {
                            checked.to_tag = na.tag().is_some();
                        } else if h.name == HeaderName::PPreferredIdentity {
                            if let Some(at) = checked.ppi.get_mut(checked.ppi_count) {
                                *at = Span::of(self.buf, na.uri);
                            }
                            checked.ppi_count += 1;
                        }
                    }
                    if count == 0 || (h.name.is_single() && count > 1) {
                        return err(h.value, bad);
                    }
                }
                HeaderName::Other | HeaderName::Subject => {}
                _ => {
                    if !lex::quotes_balanced(v) {
                        return err(h.value, bad);
                    }
                }
            }
        }
        if let StartLine::Response { .. } = idx.start_line {
            // nothing more: responses are matched by the transaction layer.
        }
        Ok(checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// To and From are one value, not a list: an empty element beside it is malformed (found by
    /// the proptest: validation read `To: ,:;sip:…>;tag=…` as tagged, a whole-field parse as
    /// not).
    #[test]
    fn a_single_name_addr_field_with_an_empty_element_is_malformed() {
        let msg = |to: &str| {
            format!(
                "MESSAGE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@h>;tag=1\r\nTo: {to}\r\nCall-ID: c\r\n\
                 CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for to in [
            ",<sip:b@h>;tag=2",
            "<sip:b@h>;tag=2,",
            ", <sip:b@h>",
            ",:;sip:b@h>;tag=2",
        ] {
            let m = msg(to);
            let parsed = crate::sip::Message::parse(m.as_bytes()).unwrap();
            assert!(parsed.view().validate_checked().is_err(), "{to:?}");
        }
        for (to, tagged) in [("<sip:b@h>;tag=2", true), ("sip:b@h", false)] {
            let m = msg(to);
            let parsed = crate::sip::Message::parse(m.as_bytes()).unwrap();
            assert_eq!(
                parsed.view().validate_checked().unwrap().to_tag,
                tagged,
                "{to:?}"
            );
        }
    }

    /// A Via line with no value (empty, or only commas) is refused, before or after a good one:
    /// a first Via line with nothing on it would otherwise make the next line's value the top
    /// one for some readers and not for others.
    #[test]
    fn a_via_line_without_a_value_is_malformed() {
        let good = "SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bKa";
        for (first, second) in [("", good), (" , ", good), (good, ""), (good, ",")] {
            let m = format!(
                "MESSAGE sip:b@h SIP/2.0\r\nVia: {first}\r\nVia: {second}\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
            );
            let e = Message::parse_strict(m.as_bytes()).unwrap_err();
            assert_eq!(
                e.kind,
                ParseErrorKind::BadHeaderValue(HeaderName::Via),
                "{m}"
            );
        }
        let m = format!(
            "MESSAGE sip:b@h SIP/2.0\r\nVia: {good}\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(Message::parse_strict(m.as_bytes()).is_ok());
    }
}
