//! The registration event package's body, `application/reginfo+xml` (RFC 3680 §5): a
//! sans-IO parser of one NOTIFY body into owned [`RegInfo`], and the subscriber's version
//! ordering over a subscription's NOTIFYs ([`Versions`], RFC 3680 §4.8 / §5.2).
//!
//! The P-CSCF subscribes to its users' registration state (TS 24.229 §5.2.3) and learns from
//! these documents when the S-CSCF ends a registration or a contact. The body comes from the
//! core, but it is still parsed as hostile input: everything is bounded ([`MAX_BODY`],
//! [`MAX_REGISTRATIONS`], [`MAX_CONTACTS`], [`MAX_DEPTH`], [`MAX_VALUE`]), a DTD is refused
//! outright (no entity expansion, no entity bombs), only the five predefined entities and
//! character references are resolved, and what is allocated is at most proportional to the body.
//!
//! Elements and attributes this module does not read, in any namespace and at any level
//! (RFC 3680's own `display-name` and `unknown-param`, RFC 5628's GRUUs, extensions), are
//! skipped with their whole subtree: the schema of RFC 3680 §6 allows extensions (`##other`)
//! everywhere.
//!
//! Unlike the rest of `sip`, this module allocates: the result owns its strings, since a NOTIFY
//! is rare and its state outlives the datagram it came in.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use quick_xml::NsReader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};

use crate::sip::headers::{split_host_port, uri_hostport};

/// Larger bodies are refused before any parsing.
pub const MAX_BODY: usize = 64 * 1024;
/// `<registration>` elements per document.
pub const MAX_REGISTRATIONS: usize = 64;
/// `<contact>` elements per registration.
pub const MAX_CONTACTS: usize = 32;
/// Element nesting, the root counting as one.
pub const MAX_DEPTH: usize = 16;
/// Bytes of one attribute value or of the `<uri>` text, after unescaping (aor, uri, id).
pub const MAX_VALUE: usize = 1024;

/// RFC 3680 §6 (schema): the namespace of every element this module reads.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:reginfo";

/// Longest excerpt of the input (an entity name, a parser message) put into an error text.
const MAX_ERROR_TEXT: usize = 160;

/// One `<reginfo>` document (RFC 3680 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegInfo {
    /// Orders the documents of one subscription: starts at 0, one more per NOTIFY.
    pub version: u32,
    /// Whether the document carries all the state or only what changed.
    pub state: DocState,
    pub registrations: Vec<RegistrationInfo>,
}

/// The `state` attribute of `<reginfo>` (RFC 3680 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocState {
    /// The whole registration state: replaces what the subscriber had.
    Full,
    /// Only the registrations (and in them the contacts) that changed since the last document.
    Partial,
}

/// One `<registration>`: an address-of-record and its contacts (RFC 3680 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationInfo {
    /// The address-of-record (in IMS, one IMPU of the implicit set), XML-unescaped.
    pub aor: Vec<u8>,
    /// Identifies the registration across documents (RFC 3680 §5.2).
    pub id: Vec<u8>,
    pub state: RegState,
    /// In document order.
    pub contacts: Vec<ContactInfo>,
}

/// The `state` attribute of `<registration>` (RFC 3680 §4.7.1 state machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegState {
    Init,
    Active,
    Terminated,
}

/// One `<contact>` of a registration (RFC 3680 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactInfo {
    /// Identifies the contact across documents (RFC 3680 §5.2).
    pub id: Vec<u8>,
    /// The `<uri>` child's text, XML-unescaped, surrounding whitespace removed.
    pub uri: Vec<u8>,
    pub state: ContactState,
    /// What made the contact change to `state`.
    pub event: ContactEvent,
    /// Seconds left, if the document says; a larger number than `u32` holds saturates.
    pub expires: Option<u32>,
}

/// The `state` attribute of `<contact>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactState {
    Active,
    Terminated,
}

/// The `event` attribute of `<contact>` (RFC 3680 §4.7.1, §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactEvent {
    Registered,
    Created,
    Refreshed,
    Shortened,
    Expired,
    Deactivated,
    Probation,
    Unregistered,
    Rejected,
    /// A token this module does not know: later extensions may add events, and the contact's
    /// `state` still says what matters.
    Unknown,
}

/// Why a body was refused. `&'static str` payloads name the element or attribute, as
/// `element@attribute` or `element/child`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegInfoError {
    /// The body's length, over [`MAX_BODY`].
    TooLarge(usize),
    /// Not well-formed XML (or not namespace-well-formed); the text says what and at which byte.
    Malformed(String),
    /// The root element is not `reginfo` in [`NAMESPACE`].
    NotReginfo,
    /// Elements nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// More `registration` than [`MAX_REGISTRATIONS`], or `contact` than [`MAX_CONTACTS`].
    TooMany(&'static str),
    /// A value longer than [`MAX_VALUE`].
    ValueTooLong(&'static str),
    /// A required attribute (or the contact's `uri` child) is missing.
    MissingAttribute(&'static str),
    /// A value that is not one the schema allows (RFC 3680 §6).
    BadAttribute(&'static str),
    /// The body has a `<!DOCTYPE`: refused, never expanded.
    Doctype,
}

impl fmt::Display for RegInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(n) => write!(
                f,
                "reginfo body of {n} bytes refused: over MAX_BODY ({MAX_BODY} bytes)"
            ),
            Self::Malformed(what) => write!(f, "reginfo body malformed: {what}"),
            Self::NotReginfo => write!(
                f,
                "reginfo body refused: root element is not <reginfo> in namespace {NAMESPACE}"
            ),
            Self::TooDeep => write!(
                f,
                "reginfo body refused: elements nested deeper than MAX_DEPTH ({MAX_DEPTH})"
            ),
            Self::TooMany("registration") => write!(
                f,
                "reginfo body refused: more than MAX_REGISTRATIONS ({MAX_REGISTRATIONS}) <registration> elements"
            ),
            Self::TooMany("contact") => write!(
                f,
                "reginfo body refused: more than MAX_CONTACTS ({MAX_CONTACTS}) <contact> elements in one <registration>"
            ),
            Self::TooMany(what) => write!(f, "reginfo body refused: too many <{what}> elements"),
            Self::ValueTooLong(what) => write!(
                f,
                "reginfo body refused: {what} longer than MAX_VALUE ({MAX_VALUE} bytes)"
            ),
            Self::MissingAttribute(what) => {
                write!(f, "reginfo body refused: required {what} missing")
            }
            Self::BadAttribute(what) => {
                write!(
                    f,
                    "reginfo body refused: {what} has a value RFC 3680 does not allow"
                )
            }
            Self::Doctype => write!(
                f,
                "reginfo body refused: it has a <!DOCTYPE> (DTDs are never processed)"
            ),
        }
    }
}

impl std::error::Error for RegInfoError {}

impl ContactInfo {
    /// Whether the contact is gone (`state="terminated"`), whatever the event that ended it.
    pub fn is_terminated(&self) -> bool {
        self.state == ContactState::Terminated
    }
}

impl RegistrationInfo {
    /// The contacts whose URI host and port equal `host`/`port` (compare host
    /// case-insensitively, IPv6 with or without [], a missing port = 5060).
    ///
    /// Only `sip:` and `sips:` URIs have a host to match; a `sips:` URI without a port means
    /// 5061 (RFC 3261 §19.1.2). IP addresses compare as addresses, so `[2001:DB8::2]` equals
    /// `2001:db8:0:0:0:0:0:2`.
    pub fn contacts_at<'a>(
        &'a self,
        host: &'a [u8],
        port: u16,
    ) -> impl Iterator<Item = &'a ContactInfo> + 'a {
        self.contacts
            .iter()
            .filter(move |c| uri_is_at(&c.uri, host, port))
    }
}

/// Whether a SIP(S) URI's host and port are `host` and `port`.
fn uri_is_at(uri: &[u8], host: &[u8], port: u16) -> bool {
    let Some(colon) = uri.iter().position(|&b| b == b':') else {
        return false;
    };
    let scheme = &uri[..colon];
    let default_port = if scheme.eq_ignore_ascii_case(b"sip") {
        5060
    } else if scheme.eq_ignore_ascii_case(b"sips") {
        5061
    } else {
        return false;
    };
    let Some((uri_host, uri_port)) = split_host_port(uri_hostport(uri)) else {
        return false;
    };
    uri_port.unwrap_or(default_port) == port && same_host(uri_host, host)
}

/// Host equality: without case (RFC 3261 §19.1.4), IPv6 with or without brackets, and IP
/// addresses by value (textual forms of one IPv6 address differ).
fn same_host(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (unbracket(a), unbracket(b));
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let ip = |s: &[u8]| std::str::from_utf8(s).ok()?.parse::<IpAddr>().ok();
    matches!((ip(a), ip(b)), (Some(x), Some(y)) if x == y)
}

fn unbracket(h: &[u8]) -> &[u8] {
    h.strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(h)
}

/// Parses one `application/reginfo+xml` body (RFC 3680 §5).
///
/// The root must be `reginfo` in [`NAMESPACE`] (as default namespace or under any prefix).
/// Elements of other namespaces, unknown elements and unknown attributes are skipped with
/// their subtrees. Nothing here panics, whatever the input.
pub fn parse(body: &[u8]) -> Result<RegInfo, RegInfoError> {
    if body.len() > MAX_BODY {
        return Err(RegInfoError::TooLarge(body.len()));
    }
    let mut reader = NsReader::from_reader(body);
    // Defaults that matter here, set so that a change of default cannot loosen them:
    // end tags must match their start tags; `<a/>` stays one event.
    reader.config_mut().check_end_names = true;
    reader.config_mut().expand_empty_elements = false;
    reader.config_mut().allow_unmatched_ends = false;
    reader.config_mut().allow_dangling_amp = false;
    let mut p = Parser::default();
    loop {
        let at = reader.buffer_position();
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (Ns::of(&ns), event),
            // Some errors (bad UTF-8) leave error_position at 0: say at least which event.
            Err(e) => return Err(malformed(reader.error_position().max(at), &e)),
        };
        match event {
            Event::DocType(_) => return Err(RegInfoError::Doctype),
            Event::Start(e) => p.open(ns, &e, at)?,
            Event::Empty(e) => {
                p.open(ns, &e, at)?;
                p.close(at)?;
            }
            Event::End(_) => p.close(at)?,
            Event::Text(t) => {
                if p.capturing() {
                    p.capture(&t.xml10_content(), at)?;
                } else {
                    p.other_text(&t, at)?;
                }
            }
            Event::CData(c) => {
                if p.capturing() {
                    p.capture(&c.xml10_content(), at)?;
                } else {
                    p.other_text(&c, at)?;
                }
            }
            Event::GeneralRef(r) => {
                // Resolved everywhere, captured or not: an undefined entity is not
                // well-formed (XML 1.0 §4.1, WFC: Entity Declared), and there is no DTD.
                let mut utf8 = [0u8; 4];
                let text: &str = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => c.encode_utf8(&mut utf8),
                        _ => {
                            return Err(malformed(
                                at,
                                format_args!("bad character reference &{};", excerpt(&r)),
                            ));
                        }
                    }
                } else {
                    match quick_xml::escape::resolve_xml_entity(&r) {
                        Some(s) => s,
                        None => {
                            return Err(malformed(
                                at,
                                format_args!("undefined entity &{};", excerpt(&r)),
                            ));
                        }
                    }
                };
                if p.capturing() {
                    p.capture(text, at)?;
                } else {
                    p.other_text(text, at)?;
                }
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => return p.finish(reader.buffer_position()),
        }
    }
}

/// Where an element's name resolved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    /// [`NAMESPACE`].
    Reginfo,
    /// Another namespace, or none.
    Other,
    /// A prefix that no `xmlns:` declares: not namespace-well-formed.
    Undeclared,
}

impl Ns {
    fn of(r: &ResolveResult<'_>) -> Ns {
        match r {
            ResolveResult::Bound(Namespace(ns)) if *ns == NAMESPACE => Ns::Reginfo,
            ResolveResult::Unknown(_) => Ns::Undeclared,
            _ => Ns::Other,
        }
    }
}

/// A `<contact>` whose `<uri>` may still come.
struct OpenContact {
    id: Vec<u8>,
    state: ContactState,
    event: ContactEvent,
    expires: Option<u32>,
    uri: Option<Vec<u8>>,
    /// Inside the `<uri>` child: text goes to `uri`.
    in_uri: bool,
}

/// The walk over the events: which elements are open, and what they have built so far.
/// Depth 1 is `reginfo`, 2 `registration`, 3 `contact`, 4 `uri`; anything else opens a
/// skipped subtree.
#[derive(Default)]
struct Parser {
    depth: usize,
    /// The depth of the element whose subtree is being skipped.
    skip_from: Option<usize>,
    doc: Option<RegInfo>,
    root_closed: bool,
    reg: Option<RegistrationInfo>,
    contact: Option<OpenContact>,
}

impl Parser {
    fn capturing(&self) -> bool {
        self.skip_from.is_none() && self.contact.as_ref().is_some_and(|c| c.in_uri)
    }

    fn capture(&mut self, text: &str, at: u64) -> Result<(), RegInfoError> {
        let Some(uri) = self.contact.as_mut().and_then(|c| c.uri.as_mut()) else {
            return Err(malformed(at, "text outside <uri> captured (parser state)"));
        };
        // Bounded by the body (MAX_BODY); MAX_VALUE is checked once surrounding whitespace
        // (indentation) is gone.
        uri.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Text anywhere but `<uri>`: ignored inside the root (mixed content of extensions,
    /// whitespace), not allowed outside it (XML 1.0 §2.1 `document`).
    fn other_text(&self, text: &str, at: u64) -> Result<(), RegInfoError> {
        if self.depth == 0 && !text.bytes().all(is_xml_ws) {
            return Err(malformed(at, "text outside the root element"));
        }
        Ok(())
    }

    fn open(&mut self, ns: Ns, e: &BytesStart<'_>, at: u64) -> Result<(), RegInfoError> {
        if ns == Ns::Undeclared {
            return Err(malformed(
                at,
                format_args!("undeclared namespace prefix in <{}>", excerpt(e.name().0)),
            ));
        }
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(RegInfoError::TooDeep);
        }
        self.depth = depth;
        if self.skip_from.is_some() {
            return Ok(());
        }
        let ours = |name: &str| ns == Ns::Reginfo && e.local_name().as_ref() == name;
        match depth {
            1 => {
                if self.root_closed {
                    return Err(malformed(at, "a second root element"));
                }
                if !ours("reginfo") {
                    return Err(RegInfoError::NotReginfo);
                }
                self.doc = Some(root(e, at)?);
            }
            2 if ours("registration") => {
                let doc = self.doc.as_ref().map_or(0, |d| d.registrations.len());
                if doc >= MAX_REGISTRATIONS {
                    return Err(RegInfoError::TooMany("registration"));
                }
                self.reg = Some(registration(e, at)?);
            }
            3 if ours("contact") && self.reg.is_some() => {
                let n = self.reg.as_ref().map_or(0, |r| r.contacts.len());
                if n >= MAX_CONTACTS {
                    return Err(RegInfoError::TooMany("contact"));
                }
                self.contact = Some(contact(e, at)?);
            }
            4 if ours("uri") && self.contact.is_some() => {
                if let Some(c) = self.contact.as_mut() {
                    if c.uri.is_some() {
                        return Err(malformed(at, "a second <uri> in one <contact>"));
                    }
                    c.uri = Some(Vec::new());
                    c.in_uri = true;
                }
            }
            _ => self.skip_from = Some(depth),
        }
        Ok(())
    }

    fn close(&mut self, at: u64) -> Result<(), RegInfoError> {
        let depth = self.depth;
        // quick-xml checks that an end tag matches its start tag; this only guards our count.
        self.depth = depth
            .checked_sub(1)
            .ok_or_else(|| malformed(at, "an end tag with no start tag"))?;
        match self.skip_from {
            Some(d) if d == depth => {
                self.skip_from = None;
                return Ok(());
            }
            Some(_) => return Ok(()),
            None => {}
        }
        match depth {
            1 => self.root_closed = true,
            2 => {
                if let (Some(reg), Some(doc)) = (self.reg.take(), self.doc.as_mut()) {
                    doc.registrations.push(reg);
                }
            }
            3 => {
                if let Some(c) = self.contact.take() {
                    let uri = c.uri.ok_or(RegInfoError::MissingAttribute("contact/uri"))?;
                    let uri = trim_xml_ws(&uri);
                    if uri.is_empty() {
                        return Err(RegInfoError::BadAttribute("contact/uri"));
                    }
                    if uri.len() > MAX_VALUE {
                        return Err(RegInfoError::ValueTooLong("contact/uri"));
                    }
                    let info = ContactInfo {
                        id: c.id,
                        uri: uri.to_vec(),
                        state: c.state,
                        event: c.event,
                        expires: c.expires,
                    };
                    if let Some(reg) = self.reg.as_mut() {
                        reg.contacts.push(info);
                    }
                }
            }
            4 => {
                if let Some(c) = self.contact.as_mut() {
                    c.in_uri = false;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn finish(self, at: u64) -> Result<RegInfo, RegInfoError> {
        if self.depth > 0 {
            return Err(malformed(
                at,
                format_args!(
                    "body ends with {} element(s) still open (truncated?)",
                    self.depth
                ),
            ));
        }
        self.doc.ok_or_else(|| malformed(at, "no root element"))
    }
}

/// `<reginfo version= state=>`.
fn root(e: &BytesStart<'_>, at: u64) -> Result<RegInfo, RegInfoError> {
    const VERSION: &str = "reginfo@version";
    const STATE: &str = "reginfo@state";
    let [version, state] = attrs(e, [("version", VERSION), ("state", STATE)], at)?;
    let version = version.ok_or(RegInfoError::MissingAttribute(VERSION))?;
    let version = parse_uint(&version)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(RegInfoError::BadAttribute(VERSION))?;
    let state = match state.as_deref() {
        None => return Err(RegInfoError::MissingAttribute(STATE)),
        Some("full") => DocState::Full,
        Some("partial") => DocState::Partial,
        Some(_) => return Err(RegInfoError::BadAttribute(STATE)),
    };
    Ok(RegInfo {
        version,
        state,
        registrations: Vec::new(),
    })
}

/// `<registration aor= id= state=>`.
fn registration(e: &BytesStart<'_>, at: u64) -> Result<RegistrationInfo, RegInfoError> {
    const AOR: &str = "registration@aor";
    const ID: &str = "registration@id";
    const STATE: &str = "registration@state";
    let [aor, id, state] = attrs(e, [("aor", AOR), ("id", ID), ("state", STATE)], at)?;
    let state = match state.as_deref() {
        None => return Err(RegInfoError::MissingAttribute(STATE)),
        Some("init") => RegState::Init,
        Some("active") => RegState::Active,
        Some("terminated") => RegState::Terminated,
        Some(_) => return Err(RegInfoError::BadAttribute(STATE)),
    };
    Ok(RegistrationInfo {
        aor: required_text(aor, AOR)?,
        id: required_text(id, ID)?,
        state,
        contacts: Vec::new(),
    })
}

/// `<contact id= state= event= expires=>`.
fn contact(e: &BytesStart<'_>, at: u64) -> Result<OpenContact, RegInfoError> {
    const ID: &str = "contact@id";
    const STATE: &str = "contact@state";
    const EVENT: &str = "contact@event";
    const EXPIRES: &str = "contact@expires";
    let [id, state, event, expires] = attrs(
        e,
        [
            ("id", ID),
            ("state", STATE),
            ("event", EVENT),
            ("expires", EXPIRES),
        ],
        at,
    )?;
    let state = match state.as_deref() {
        None => return Err(RegInfoError::MissingAttribute(STATE)),
        Some("active") => ContactState::Active,
        Some("terminated") => ContactState::Terminated,
        Some(_) => return Err(RegInfoError::BadAttribute(STATE)),
    };
    let event = match event.as_deref() {
        None => return Err(RegInfoError::MissingAttribute(EVENT)),
        Some("registered") => ContactEvent::Registered,
        Some("created") => ContactEvent::Created,
        Some("refreshed") => ContactEvent::Refreshed,
        Some("shortened") => ContactEvent::Shortened,
        Some("expired") => ContactEvent::Expired,
        Some("deactivated") => ContactEvent::Deactivated,
        Some("probation") => ContactEvent::Probation,
        Some("unregistered") => ContactEvent::Unregistered,
        Some("rejected") => ContactEvent::Rejected,
        Some(_) => ContactEvent::Unknown,
    };
    // The schema's xs:unsignedLong; beyond u32 (136 years) saturates rather than refuses.
    let expires = match expires {
        None => None,
        Some(v) => Some(
            parse_uint(&v)
                .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
                .ok_or(RegInfoError::BadAttribute(EXPIRES))?,
        ),
    };
    Ok(OpenContact {
        id: required_text(id, ID)?,
        state,
        event,
        expires,
        uri: None,
        in_uri: false,
    })
}

/// The values of the unprefixed attributes `want` names (an unprefixed attribute has no
/// namespace, XML Namespaces §6.2, whatever the element's), unescaped and normalised
/// (XML 1.0 §3.3.3), each at most [`MAX_VALUE`] bytes. Others are ignored; a repeated
/// attribute is not well-formed.
fn attrs<'a, const N: usize>(
    e: &'a BytesStart<'_>,
    want: [(&str, &'static str); N],
    at: u64,
) -> Result<[Option<Cow<'a, str>>; N], RegInfoError> {
    let mut out: [Option<Cow<'a, str>>; N] = [const { None }; N];
    for attr in e.attributes() {
        let attr = attr.map_err(|err| malformed(at, &err))?;
        if attr.key.prefix().is_some() {
            continue;
        }
        let local = attr.key.local_name();
        let Some(i) = want.iter().position(|(n, _)| *n == local.as_ref()) else {
            continue;
        };
        let Some((_, label)) = want.get(i) else {
            continue;
        };
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| malformed(at, format_args!("{label}: {err}")))?;
        if value.len() > MAX_VALUE {
            return Err(RegInfoError::ValueTooLong(label));
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(value);
        }
    }
    Ok(out)
}

/// A required, non-empty string attribute, as bytes.
fn required_text(v: Option<Cow<'_, str>>, label: &'static str) -> Result<Vec<u8>, RegInfoError> {
    match v {
        None => Err(RegInfoError::MissingAttribute(label)),
        Some(v) if v.trim().is_empty() => Err(RegInfoError::BadAttribute(label)),
        Some(v) => Ok(v.into_owned().into_bytes()),
    }
}

/// An xs:nonNegativeInteger / xs:unsignedLong: digits only (whitespace collapsed), up to u64.
fn parse_uint(v: &str) -> Option<u64> {
    let v = v.trim_matches(|c: char| c.is_ascii() && is_xml_ws(c as u8));
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits: only overflow fails; leading zeros are fine for the schema and for parse.
    v.parse::<u64>().ok().or(Some(u64::MAX))
}

/// XML 1.0 §2.3 `S`.
fn is_xml_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_xml_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s
        && is_xml_ws(*first)
    {
        s = rest;
    }
    while let [rest @ .., last] = s
        && is_xml_ws(*last)
    {
        s = rest;
    }
    s
}

/// At most [`MAX_ERROR_TEXT`] characters of `s`, for an error text.
fn excerpt(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_ERROR_TEXT) {
        Some((end, _)) => Cow::Owned(format!("{}...", s.get(..end).unwrap_or_default())),
        None => Cow::Borrowed(s),
    }
}

fn malformed(at: u64, what: impl fmt::Display) -> RegInfoError {
    let what = what.to_string();
    RegInfoError::Malformed(format!("at byte {at}: {}", excerpt(&what)))
}

/// RFC 3680 version ordering over one subscription's NOTIFYs (§5.2, the subscriber's
/// processing of §4.8): documents are numbered from 0 per subscription, one more each time.
///
/// Keep one per subscription; [`reset`](Versions::reset) it when a new subscription (not a
/// refresh) starts, since versions are scoped to a subscription (RFC 3680 §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    last: Option<u32>,
}

/// Why [`Versions::accept`] turned a document down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionError {
    /// The version is not newer than the last accepted one: an old or repeated NOTIFY;
    /// discard it (RFC 3680 §5.2).
    Stale { last: u32, got: u32 },
    /// A partial document skipped versions: one (or more) NOTIFY was missed, so merging would
    /// be wrong; refresh the subscription to get full state (RFC 3680 §5.2).
    Gap { last: u32, got: u32 },
    /// The first document of a subscription is partial: there is nothing to apply it to.
    PartialFirst,
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale { last, got } => write!(
                f,
                "reginfo version {got} not newer than the last accepted {last}: discarded"
            ),
            Self::Gap { last, got } => write!(
                f,
                "partial reginfo version {got} after {last}: a NOTIFY was missed, full state needed"
            ),
            Self::PartialFirst => write!(
                f,
                "first reginfo of a subscription is partial: full state needed"
            ),
        }
    }
}

impl std::error::Error for VersionError {}

impl Versions {
    /// Whether `doc` may be applied, by RFC 3680 §5.2: a version not above the last is
    /// discarded; full state replaces whatever came before; partial state applies only on top
    /// of the version just before it. On success the document's version becomes the last.
    pub fn accept(&mut self, doc: &RegInfo) -> Result<(), VersionError> {
        let got = doc.version;
        match (self.last, doc.state) {
            (None, DocState::Partial) => return Err(VersionError::PartialFirst),
            (None, DocState::Full) => {}
            (Some(last), _) if got <= last => return Err(VersionError::Stale { last, got }),
            (Some(_), DocState::Full) => {}
            (Some(last), DocState::Partial) => {
                // `got > last` here, so `last < u32::MAX`; checked all the same.
                if last.checked_add(1) != Some(got) {
                    return Err(VersionError::Gap { last, got });
                }
            }
        }
        self.last = Some(got);
        Ok(())
    }

    /// The version of the last accepted document, if any.
    pub fn last(&self) -> Option<u32> {
        self.last
    }

    /// Forgets the versions seen: the next document must be full.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IMS full-state document: two IMPUs of one implicit set, each with two contacts
    /// (IPv4 and IPv6, URI parameters), GRUU extensions and display names to skip.
    const FULL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo"
         xmlns:gr="urn:ietf:params:xml:ns:gruuinfo"
         version="0" state="full">
  <registration aor="sip:+1234@ims.test" id="a7" state="active">
    <contact id="76" state="active" event="registered" expires="600000" q="0.5">
      <uri>sip:001010000000001@10.211.0.2:7005;transport=udp</uri>
      <display-name>Alice</display-name>
      <unknown-param name="+sip.instance">"&lt;urn:gsma:imei:35000000-000000-0&gt;"</unknown-param>
      <gr:pub-gruu uri="sip:+1234@ims.test;gr=urn:uuid:1"/>
      <gr:temp-gruu uri="sip:tgruu.1@ims.test;gr" first-cseq="1"/>
    </contact>
    <contact id="77" state="active" event="created" expires="3600">
      <uri>sip:001010000000001@[2001:db8::2]:7005;transport=tcp;ob</uri>
    </contact>
  </registration>
  <registration aor="tel:+1234" id="a8" state="active">
    <contact id="78" state="active" event="registered">
      <uri>sip:001010000000001@10.211.0.2:7005;transport=udp</uri>
    </contact>
    <contact id="79" state="terminated" event="expired" expires="0">
      <uri>sip:001010000000001@10.211.0.3</uri>
    </contact>
  </registration>
</reginfo>
"#;

    fn doc(body: &str) -> Result<RegInfo, RegInfoError> {
        parse(body.as_bytes())
    }

    /// A root with `inner` inside, in the default namespace.
    fn wrap(inner: &str) -> String {
        format!(
            r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="1" state="partial">{inner}</reginfo>"#
        )
    }

    fn reg(contacts: &str) -> String {
        format!(r#"<registration aor="sip:a@x" id="r1" state="active">{contacts}</registration>"#)
    }

    const CONTACT: &str =
        r#"<contact id="c" state="active" event="registered"><uri>sip:u@h</uri></contact>"#;

    #[test]
    fn full_ims_document() {
        let d = doc(FULL).unwrap();
        assert_eq!(d.version, 0);
        assert_eq!(d.state, DocState::Full);
        assert_eq!(d.registrations.len(), 2);
        let r0 = &d.registrations[0];
        assert_eq!(r0.aor, b"sip:+1234@ims.test");
        assert_eq!(r0.id, b"a7");
        assert_eq!(r0.state, RegState::Active);
        assert_eq!(
            r0.contacts,
            vec![
                ContactInfo {
                    id: b"76".to_vec(),
                    uri: b"sip:001010000000001@10.211.0.2:7005;transport=udp".to_vec(),
                    state: ContactState::Active,
                    event: ContactEvent::Registered,
                    expires: Some(600000),
                },
                ContactInfo {
                    id: b"77".to_vec(),
                    uri: b"sip:001010000000001@[2001:db8::2]:7005;transport=tcp;ob".to_vec(),
                    state: ContactState::Active,
                    event: ContactEvent::Created,
                    expires: Some(3600),
                },
            ]
        );
        let r1 = &d.registrations[1];
        assert_eq!(r1.aor, b"tel:+1234");
        assert_eq!(r1.contacts.len(), 2);
        assert_eq!(r1.contacts[0].expires, None);
        assert!(!r1.contacts[0].is_terminated());
        assert!(r1.contacts[1].is_terminated());
        assert_eq!(r1.contacts[1].event, ContactEvent::Expired);
        assert_eq!(r1.contacts[1].expires, Some(0));
    }

    #[test]
    fn partial_documents() {
        let d = doc(&wrap(
            r#"<registration aor="sip:+1234@ims.test" id="a7" state="terminated">
                 <contact id="76" state="terminated" event="unregistered">
                   <uri>sip:001010000000001@10.211.0.2:7005</uri></contact>
               </registration>"#,
        ))
        .unwrap();
        assert_eq!((d.version, d.state), (1, DocState::Partial));
        assert_eq!(d.registrations[0].state, RegState::Terminated);
        assert_eq!(
            d.registrations[0].contacts[0].event,
            ContactEvent::Unregistered
        );
        // A partial document may carry no registration at all, and a registration no contact.
        assert!(doc(&wrap("")).unwrap().registrations.is_empty());
        let d = doc(&wrap(
            r#"<registration aor="sip:a@x" id="r" state="init"/>"#,
        ))
        .unwrap();
        assert_eq!(d.registrations[0].state, RegState::Init);
        assert!(d.registrations[0].contacts.is_empty());
    }

    #[test]
    fn every_contact_event() {
        for (token, ev) in [
            ("registered", ContactEvent::Registered),
            ("created", ContactEvent::Created),
            ("refreshed", ContactEvent::Refreshed),
            ("shortened", ContactEvent::Shortened),
            ("expired", ContactEvent::Expired),
            ("deactivated", ContactEvent::Deactivated),
            ("probation", ContactEvent::Probation),
            ("unregistered", ContactEvent::Unregistered),
            ("rejected", ContactEvent::Rejected),
            ("teleported", ContactEvent::Unknown),
            ("", ContactEvent::Unknown),
        ] {
            let c = format!(
                r#"<contact id="c" state="active" event="{token}"><uri>sip:u@h</uri></contact>"#
            );
            let d = doc(&wrap(&reg(&c))).unwrap();
            assert_eq!(d.registrations[0].contacts[0].event, ev, "{token}");
        }
    }

    #[test]
    fn prefixed_namespace() {
        let body = r#"<r:reginfo xmlns:r="urn:ietf:params:xml:ns:reginfo" version="5" state="full">
            <r:registration aor="sip:a@x" id="1" state="active">
              <r:contact id="c" state="active" event="registered"><r:uri>sip:u@h</r:uri></r:contact>
              <contact id="x" state="active" event="registered"><uri>sip:not-ours@h</uri></contact>
            </r:registration>
            <registration aor="sip:not-ours@x" id="2" state="active"/>
          </r:reginfo>"#;
        let d = doc(body).unwrap();
        assert_eq!(d.version, 5);
        // Unprefixed elements have no namespace here (no default one): not ours, skipped.
        assert_eq!(d.registrations.len(), 1);
        assert_eq!(d.registrations[0].contacts.len(), 1);
        assert_eq!(d.registrations[0].contacts[0].uri, b"sip:u@h");
        // A prefix redeclared to another namespace inside the document is not ours either.
        let body = r#"<r:reginfo xmlns:r="urn:ietf:params:xml:ns:reginfo" version="5" state="full">
            <r:registration xmlns:r="urn:example:other" aor="sip:a@x" id="1" state="active"/>
          </r:reginfo>"#;
        assert!(doc(body).unwrap().registrations.is_empty());
    }

    #[test]
    fn unknown_elements_and_attributes_skipped() {
        let body = wrap(
            r#"<ext xmlns="urn:example:ext"><registration aor="sip:x@x" id="z" state="bogus">
                 <deep><deeper>text &amp; more</deeper></deep></registration></ext>
               <registration aor="sip:a@x" id="r1" state="active" foo="bar" x:y="z" xmlns:x="urn:x">
                 <note>ignored <b>bold</b></note>
                 <contact id="c" state="active" event="registered" duration-registered="7"
                          callid="abc" cseq="3" retry-after="1">
                   <uri>sip:u@h</uri>
                   <ext:thing xmlns:ext="urn:example:ext"><uri>sip:decoy@h</uri></ext:thing>
                 </contact>
                 <registration aor="nested-is-unknown" id="n" state="wrong"/>
               </registration>
               <!-- a comment --><?pi data?>
               <contact id="stray" state="active" event="registered"><uri>sip:s@h</uri></contact>"#,
        );
        let d = doc(&body).unwrap();
        assert_eq!(d.registrations.len(), 1);
        assert_eq!(d.registrations[0].id, b"r1");
        assert_eq!(d.registrations[0].contacts.len(), 1);
        assert_eq!(d.registrations[0].contacts[0].uri, b"sip:u@h");
    }

    #[test]
    fn escapes() {
        let body = wrap(
            r#"<registration aor="sip:a&amp;b@x?h=&quot;&#x41;&#66;&apos;&lt;&gt;" id="r&#x31;" state="active">
                 <contact id="c" state="active" event="registered">
                   <uri> sip:u&amp;v@h;p=&#x3c;1&#x3E;<![CDATA[;q=<&>]]> </uri></contact>
               </registration>"#,
        );
        let d = doc(&body).unwrap();
        assert_eq!(d.registrations[0].aor, b"sip:a&b@x?h=\"AB'<>");
        assert_eq!(d.registrations[0].id, b"r1");
        assert_eq!(d.registrations[0].contacts[0].uri, b"sip:u&v@h;p=<1>;q=<&>");
        // Undefined entities are not well-formed, in values, in text, in skipped subtrees.
        for bad in [
            wrap(r#"<registration aor="&nope;" id="r" state="active"/>"#),
            wrap(&reg(
                r#"<contact id="c" state="active" event="registered"><uri>&nope;</uri></contact>"#,
            )),
            wrap("<ext>&nope;</ext>"),
            wrap(&reg(
                r#"<contact id="c" state="active" event="registered"><uri>&#0;</uri></contact>"#,
            )),
        ] {
            assert!(
                matches!(doc(&bad), Err(RegInfoError::Malformed(_))),
                "{bad}: {:?}",
                doc(&bad)
            );
        }
    }

    #[test]
    fn error_too_large() {
        let mut body = wrap("").into_bytes();
        body.resize(MAX_BODY + 1, b' ');
        assert_eq!(parse(&body), Err(RegInfoError::TooLarge(MAX_BODY + 1)));
        // At the bound exactly, trailing whitespace is fine.
        body.truncate(MAX_BODY);
        assert!(parse(&body).is_ok());
    }

    #[test]
    fn error_too_many() {
        let regs = |n: usize| {
            (0..n)
                .map(|i| format!(r#"<registration aor="sip:a@x" id="{i}" state="active"/>"#))
                .collect::<String>()
        };
        assert_eq!(
            doc(&wrap(&regs(MAX_REGISTRATIONS)))
                .unwrap()
                .registrations
                .len(),
            MAX_REGISTRATIONS
        );
        assert_eq!(
            doc(&wrap(&regs(MAX_REGISTRATIONS + 1))),
            Err(RegInfoError::TooMany("registration"))
        );
        let contacts = |n: usize| reg(&CONTACT.repeat(n));
        assert_eq!(
            doc(&wrap(&contacts(MAX_CONTACTS))).unwrap().registrations[0]
                .contacts
                .len(),
            MAX_CONTACTS
        );
        assert_eq!(
            doc(&wrap(&contacts(MAX_CONTACTS + 1))),
            Err(RegInfoError::TooMany("contact"))
        );
        // The contact bound is per registration.
        let two = format!("{}{}", contacts(MAX_CONTACTS), contacts(MAX_CONTACTS));
        assert_eq!(doc(&wrap(&two)).unwrap().registrations.len(), 2);
    }

    #[test]
    fn error_too_deep() {
        let nest = |n: usize| format!("{}{}", "<x>".repeat(n), "</x>".repeat(n));
        // The root is level 1: MAX_DEPTH - 1 more levels fit.
        assert!(doc(&wrap(&nest(MAX_DEPTH - 1))).is_ok());
        assert_eq!(doc(&wrap(&nest(MAX_DEPTH))), Err(RegInfoError::TooDeep));
        // Empty elements count too.
        let empty = format!(
            "{}<x/>{}",
            "<x>".repeat(MAX_DEPTH - 1),
            "</x>".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(doc(&wrap(&empty)), Err(RegInfoError::TooDeep));
    }

    #[test]
    fn error_value_too_long() {
        let long = "a".repeat(MAX_VALUE + 1);
        let fits = "a".repeat(MAX_VALUE);
        let aor = |v: &str| {
            wrap(&format!(
                r#"<registration aor="{v}" id="r" state="active"/>"#
            ))
        };
        assert!(doc(&aor(&fits)).is_ok());
        assert_eq!(
            doc(&aor(&long)),
            Err(RegInfoError::ValueTooLong("registration@aor"))
        );
        let uri = |v: &str| {
            wrap(&reg(&format!(
                r#"<contact id="c" state="active" event="registered"><uri>
                   {v}
                   </uri></contact>"#
            )))
        };
        assert!(doc(&uri(&fits)).is_ok(), "indentation does not count");
        assert_eq!(
            doc(&uri(&long)),
            Err(RegInfoError::ValueTooLong("contact/uri"))
        );
        let id = wrap(&reg(&format!(
            r#"<contact id="{long}" state="active" event="registered"><uri>sip:u@h</uri></contact>"#
        )));
        assert_eq!(doc(&id), Err(RegInfoError::ValueTooLong("contact@id")));
        // Counted after unescaping: 1024 `&amp;` are 1024 bytes.
        assert!(doc(&aor(&"&amp;".repeat(MAX_VALUE))).is_ok());
    }

    #[test]
    fn error_missing_and_bad_attributes() {
        use RegInfoError::{BadAttribute as Bad, MissingAttribute as Missing};
        let root =
            |attrs: &str| format!(r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" {attrs}/>"#);
        let r = |attrs: &str| wrap(&format!("<registration {attrs}/>"));
        let c =
            |attrs: &str, inner: &str| wrap(&reg(&format!("<contact {attrs}>{inner}</contact>")));
        let u = "<uri>sip:u@h</uri>";
        for (body, want) in [
            (root(r#"state="full""#), Missing("reginfo@version")),
            (root(r#"version="1""#), Missing("reginfo@state")),
            (root(r#"version="-1" state="full""#), Bad("reginfo@version")),
            (root(r#"version="+1" state="full""#), Bad("reginfo@version")),
            (
                root(r#"version="4294967296" state="full""#),
                Bad("reginfo@version"),
            ),
            (root(r#"version="" state="full""#), Bad("reginfo@version")),
            (root(r#"version="1" state="Full""#), Bad("reginfo@state")),
            (r(r#"id="r" state="active""#), Missing("registration@aor")),
            (
                r(r#"aor="sip:a@x" state="active""#),
                Missing("registration@id"),
            ),
            (r(r#"aor="sip:a@x" id="r""#), Missing("registration@state")),
            (
                r(r#"aor="" id="r" state="active""#),
                Bad("registration@aor"),
            ),
            (
                r(r#"aor="sip:a@x" id="r" state="pending""#),
                Bad("registration@state"),
            ),
            (
                c(r#"state="active" event="registered""#, u),
                Missing("contact@id"),
            ),
            (
                c(r#"id="c" event="registered""#, u),
                Missing("contact@state"),
            ),
            (c(r#"id="c" state="active""#, u), Missing("contact@event")),
            (
                c(r#"id="c" state="init" event="registered""#, u),
                Bad("contact@state"),
            ),
            (
                c(
                    r#"id="c" state="active" event="registered" expires="soon""#,
                    u,
                ),
                Bad("contact@expires"),
            ),
            (
                c(r#"id="c" state="active" event="registered""#, ""),
                Missing("contact/uri"),
            ),
            (
                c(
                    r#"id="c" state="active" event="registered""#,
                    "<uri> </uri>",
                ),
                Bad("contact/uri"),
            ),
            // A prefixed attribute is another attribute, even with our namespace's prefix.
            (
                r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" xmlns:r="urn:ietf:params:xml:ns:reginfo" r:version="1" state="full"/>"#.to_string(),
                Missing("reginfo@version"),
            ),
        ] {
            assert_eq!(doc(&body), Err(want), "{body}");
        }
        // An expires beyond u32 saturates (the schema allows xs:unsignedLong).
        let big = c(
            r#"id="c" state="active" event="registered" expires="99999999999999999999999""#,
            u,
        );
        assert_eq!(
            doc(&big).unwrap().registrations[0].contacts[0].expires,
            Some(u32::MAX)
        );
        let ws = root(r#"version=" 7 " state="full""#);
        assert_eq!(doc(&ws).unwrap().version, 7);
    }

    #[test]
    fn error_doctype() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE reginfo [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo" version="1" state="full">&b;</reginfo>"#;
        assert_eq!(doc(bomb), Err(RegInfoError::Doctype));
        let inside = wrap("<!DOCTYPE x>");
        assert!(
            matches!(
                doc(&inside),
                Err(RegInfoError::Doctype | RegInfoError::Malformed(_))
            ),
            "{:?}",
            doc(&inside)
        );
    }

    #[test]
    fn error_not_reginfo() {
        for body in [
            r#"<reginfo version="1" state="full"/>"#,
            r#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo2" version="1" state="full"/>"#,
            r#"<presence xmlns="urn:ietf:params:xml:ns:reginfo" version="1" state="full"/>"#,
            r#"<x:reginfo xmlns:x="urn:example" xmlns="urn:ietf:params:xml:ns:reginfo" version="1" state="full"/>"#,
        ] {
            assert_eq!(doc(body), Err(RegInfoError::NotReginfo), "{body}");
        }
    }

    #[test]
    fn error_malformed() {
        let malformed = |body: &[u8]| matches!(parse(body), Err(RegInfoError::Malformed(_)));
        let full = FULL.as_bytes();
        // Truncated XML: cut inside the last end tag, and right before it.
        assert!(malformed(&full[..full.len() - 5]));
        assert!(malformed(&full[..full.len() - 11]));
        assert!(malformed(b""));
        assert!(malformed(b"<?xml version=\"1.0\"?>"));
        // Mismatched end tag; text and a second element after the root; undeclared prefix.
        assert!(malformed(wrap("<a></b>").as_bytes()));
        assert!(malformed(format!("{}junk", wrap("")).as_bytes()));
        assert!(malformed(format!("{}{}", wrap(""), wrap("")).as_bytes()));
        assert!(malformed(wrap("<zz:ext/>").as_bytes()));
        // Repeated attribute.
        assert!(malformed(
            wrap(r#"<registration aor="a" aor="b" id="r" state="active"/>"#).as_bytes()
        ));
        // A second <uri> in one contact.
        assert!(malformed(
            wrap(&reg(
                r#"<contact id="c" state="active" event="registered"><uri>sip:a@h</uri><uri>sip:b@h</uri></contact>"#
            ))
            .as_bytes()
        ));
        // Bad UTF-8, in a value and in text.
        let mut bad = wrap(r#"<registration aor="sip:X@x" id="r" state="active"/>"#).into_bytes();
        let at = bad.iter().position(|&b| b == b'X').unwrap();
        bad[at] = 0xff;
        assert!(malformed(&bad), "{:?}", parse(&bad));
        let mut bad = wrap(&reg(CONTACT)).into_bytes();
        let at = bad.windows(3).position(|w| w == b"u@h").unwrap();
        bad[at] = 0xc3;
        assert!(malformed(&bad), "{:?}", parse(&bad));
        // The message says where.
        let Err(RegInfoError::Malformed(msg)) = parse(&full[..full.len() - 5]) else {
            panic!()
        };
        assert!(msg.starts_with("at byte "), "{msg}");
    }

    #[test]
    fn errors_display_one_line() {
        for e in [
            RegInfoError::TooLarge(70000),
            RegInfoError::Malformed("at byte 3: x".into()),
            RegInfoError::NotReginfo,
            RegInfoError::TooDeep,
            RegInfoError::TooMany("registration"),
            RegInfoError::TooMany("contact"),
            RegInfoError::ValueTooLong("contact/uri"),
            RegInfoError::MissingAttribute("reginfo@version"),
            RegInfoError::BadAttribute("contact@state"),
            RegInfoError::Doctype,
        ] {
            let s = e.to_string();
            assert!(!s.contains('\n') && s.starts_with("reginfo"), "{s}");
        }
        assert!(
            RegInfoError::TooMany("contact")
                .to_string()
                .contains("MAX_CONTACTS")
        );
    }

    /// Every prefix of a valid document parses to an error or a document, never a panic; so
    /// does the document with any one byte changed to a few troublesome values.
    #[test]
    fn truncations_and_mutations_do_not_panic() {
        let full = FULL.as_bytes();
        // Until the root's end tag is whole, a prefix is never taken for a document.
        let root_end = full.len() - 1;
        for end in 0..=full.len() {
            let r = parse(&full[..end]);
            assert_eq!(r.is_ok(), end >= root_end, "{end}: {r:?}");
        }
        let mut m = full.to_vec();
        for i in 0..m.len() {
            let orig = m[i];
            for b in [b'<', b'>', b'&', b'"', b'/', b':', 0xff, 0] {
                m[i] = b;
                let _ = parse(&m);
            }
            m[i] = orig;
        }
    }

    #[test]
    fn contacts_at_matching() {
        let d = doc(FULL).unwrap();
        let ids = |r: &RegistrationInfo, host: &[u8], port: u16| {
            r.contacts_at(host, port)
                .map(|c| String::from_utf8_lossy(&c.id).into_owned())
                .collect::<Vec<_>>()
        };
        let (r0, r1) = (&d.registrations[0], &d.registrations[1]);
        assert_eq!(ids(r0, b"10.211.0.2", 7005), ["76"]);
        assert_eq!(ids(r1, b"10.211.0.2", 7005), ["78"]);
        assert!(ids(r0, b"10.211.0.2", 5060).is_empty());
        // IPv6 with or without brackets, another spelling of the address, any case.
        assert_eq!(ids(r0, b"[2001:db8::2]", 7005), ["77"]);
        assert_eq!(ids(r0, b"2001:db8::2", 7005), ["77"]);
        assert_eq!(ids(r0, b"2001:DB8:0:0:0:0:0:2", 7005), ["77"]);
        assert!(ids(r0, b"2001:db8::3", 7005).is_empty());
        // A missing port is 5060.
        assert_eq!(ids(r1, b"10.211.0.3", 5060), ["79"]);
        assert!(ids(r1, b"10.211.0.3", 5061).is_empty());
        // Host names without case.
        let r = &doc(&wrap(&reg(
            r#"<contact id="h" state="active" event="registered"><uri>sip:u@UE.IMS.Test;transport=tcp</uri></contact>
               <contact id="s" state="active" event="registered"><uri>sips:u@ue.ims.test</uri></contact>
               <contact id="t" state="active" event="registered"><uri>tel:+1234</uri></contact>"#,
        )))
        .unwrap()
        .registrations[0];
        assert_eq!(ids(r, b"ue.ims.test", 5060), ["h"]);
        assert_eq!(ids(r, b"UE.ims.TEST", 5061), ["s"]);
        assert!(ids(r, b"+1234", 5060).is_empty());
    }

    fn version(v: u32, state: DocState) -> RegInfo {
        RegInfo {
            version: v,
            state,
            registrations: Vec::new(),
        }
    }

    #[test]
    fn versions_rules() {
        use DocState::{Full, Partial};
        let mut vs = Versions::default();
        assert_eq!(vs.last(), None);
        // The first document must be full.
        assert_eq!(
            vs.accept(&version(0, Partial)),
            Err(VersionError::PartialFirst)
        );
        assert_eq!(vs.last(), None);
        // In order.
        assert_eq!(vs.accept(&version(0, Full)), Ok(()));
        assert_eq!(vs.accept(&version(1, Partial)), Ok(()));
        assert_eq!(vs.accept(&version(2, Partial)), Ok(()));
        assert_eq!(vs.last(), Some(2));
        // Stale: repeated or older, full or partial.
        for (v, s) in [(2, Partial), (1, Partial), (2, Full), (0, Full)] {
            assert_eq!(
                vs.accept(&version(v, s)),
                Err(VersionError::Stale { last: 2, got: v })
            );
        }
        // Gap: a partial document after a missed one; the last stays.
        assert_eq!(
            vs.accept(&version(4, Partial)),
            Err(VersionError::Gap { last: 2, got: 4 })
        );
        assert_eq!(vs.last(), Some(2));
        // Full state after the gap (the refresh's NOTIFY) is accepted, and partial follows.
        assert_eq!(vs.accept(&version(5, Full)), Ok(()));
        assert_eq!(vs.accept(&version(6, Partial)), Ok(()));
        assert_eq!(vs.last(), Some(6));
        // A new subscription starts over.
        vs.reset();
        assert_eq!(vs.last(), None);
        assert_eq!(vs.accept(&version(0, Full)), Ok(()));
    }

    #[test]
    fn versions_at_u32_max() {
        let mut vs = Versions::default();
        vs.accept(&version(u32::MAX - 1, DocState::Full)).unwrap();
        vs.accept(&version(u32::MAX, DocState::Partial)).unwrap();
        assert_eq!(
            vs.accept(&version(u32::MAX, DocState::Partial)),
            Err(VersionError::Stale {
                last: u32::MAX,
                got: u32::MAX
            })
        );
        assert_eq!(
            vs.accept(&version(u32::MAX, DocState::Full)),
            Err(VersionError::Stale {
                last: u32::MAX,
                got: u32::MAX
            })
        );
    }
}
