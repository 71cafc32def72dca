//! Framing and indexing of one SIP message (RFC 3261 §7, §18.3) over the caller's buffer.
//!
//! Owns: the start line, the fixed-capacity header index ([`Index`]), the body range, and the
//! read-only [`View`] with its accessors. The checks a proxy applies before it trusts a message
//! are in `validate.rs` ([`View::validate`]). It never copies the message and never allocates:
//! every field is a byte range into the buffer the caller owns.
//! More headers than [`MAX_HEADERS`] is an error, not a panic. No input can make it panic.

use core::fmt;
use core::ops::Range;

use super::lex::{self, ListIter, parse_u64};

/// The most header lines one message may carry. Real IMS REGISTERs carry 15–30.
pub const MAX_HEADERS: usize = 64;

/// A byte range inside the message buffer. `u32` keeps the index small; frames are < 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub const fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    #[inline]
    pub const fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
    #[inline]
    pub const fn len(self) -> usize {
        (self.end - self.start) as usize
    }
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.end == self.start
    }
    /// The span of `sub`, which must be a sub-slice of `buf` (as every accessor returns).
    #[inline]
    pub fn of(buf: &[u8], sub: &[u8]) -> Span {
        let start = (sub.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        debug_assert!(start + sub.len() <= buf.len(), "slice not from this buffer");
        Span::new(start, start + sub.len())
    }
}

macro_rules! header_names {
    ($( $variant:ident => $long:literal $(, $compact:literal)? ;)*) => {
        /// The headers pcscf knows by name. Anything else is [`HeaderName::Other`] and is
        /// carried through untouched.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum HeaderName {
            Other,
            $($variant,)*
        }

        impl HeaderName {
            /// Every name, in discriminant order (`ALL[n as usize] == n`).
            const ALL: &'static [HeaderName] = &[HeaderName::Other, $(HeaderName::$variant,)*];
            /// The long forms, in discriminant order (`""` for `Other`).
            const LONG: &'static [&'static str] = &["", $($long,)*];
            /// The compact forms (RFC 3261 §7.3.3), in discriminant order (0: none).
            const COMPACT: &'static [u8] = &[0, $(compact_or_none!($($compact)?),)*];

            /// The long form, as pcscf writes it.
            pub fn as_str(self) -> &'static str {
                Self::LONG[self as usize]
            }
        }
    };
}

macro_rules! compact_or_none {
    () => {
        0
    };
    ($c:literal) => {
        $c
    };
}

header_names! {
    Via => "Via", b'v';
    Route => "Route";
    RecordRoute => "Record-Route";
    Path => "Path";
    ServiceRoute => "Service-Route";
    PAssociatedUri => "P-Associated-URI";
    Contact => "Contact", b'm';
    Expires => "Expires";
    CSeq => "CSeq";
    CallId => "Call-ID", b'i';
    From => "From", b'f';
    To => "To", b't';
    Require => "Require";
    ProxyRequire => "Proxy-Require";
    Supported => "Supported", b'k';
    Unsupported => "Unsupported";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    SecurityClient => "Security-Client";
    SecurityServer => "Security-Server";
    SecurityVerify => "Security-Verify";
    ContentLength => "Content-Length", b'l';
    ContentType => "Content-Type", b'c';
    ContentEncoding => "Content-Encoding", b'e';
    MaxForwards => "Max-Forwards";
    PVisitedNetworkId => "P-Visited-Network-ID";
    PChargingVector => "P-Charging-Vector";
    PChargingFunctionAddresses => "P-Charging-Function-Addresses";
    PAssertedIdentity => "P-Asserted-Identity";
    PPreferredIdentity => "P-Preferred-Identity";
    PAccessNetworkInfo => "P-Access-Network-Info";
    Date => "Date";
    Subject => "Subject", b's';
    Event => "Event", b'o';
    AllowEvents => "Allow-Events", b'u';
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    SessionExpires => "Session-Expires", b'x';
    AcceptContact => "Accept-Contact", b'a';
    RejectContact => "Reject-Contact", b'j';
    RequestDisposition => "Request-Disposition", b'd';
    Identity => "Identity", b'y';
    IdentityInfo => "Identity-Info", b'n';
}

/// Slots in the long-name table ([`name_slot`]).
const NAME_SLOTS: usize = 128;

/// A hash of a header name's length, first and last byte (ASCII case folded) that gives every
/// long form pcscf knows a slot of its own: a name is classified with one table read and one
/// comparison, not a comparison per known name. The table is built at compile time and the
/// build fails if two names ever share a slot.
#[inline(always)]
const fn name_slot(len: usize, first: u8, last: u8) -> usize {
    (len.wrapping_mul(60)
        .wrapping_add((first | 0x20) as usize * 63)
        .wrapping_add(((last | 0x20) as usize) << 1))
        % NAME_SLOTS
}

/// Long form slot -> discriminant (0: no name there).
static LONG_NAMES: [u8; NAME_SLOTS] = {
    let mut t = [0u8; NAME_SLOTS];
    assert!(
        HeaderName::LONG.len() <= 64,
        "Index's name sets hold 64 names"
    );
    let mut i = 1;
    while i < HeaderName::LONG.len() {
        let n = HeaderName::LONG[i].as_bytes();
        let slot = name_slot(n.len(), n[0], n[n.len() - 1]);
        assert!(
            t[slot] == 0,
            "two header names share a slot: change name_slot"
        );
        t[slot] = i as u8;
        i += 1;
    }
    t
};

/// A long form as four little-endian words: its bytes lowercased, the bits that fold ASCII
/// case (0x20 under each letter, 0 elsewhere), and which bytes of each word belong to the
/// name (all ones, fewer in the last word, none past it).
#[derive(Clone, Copy)]
struct NameWords {
    lower: [u64; 4],
    fold: [u64; 4],
    mask: [u64; 4],
}

/// The longest long form, in bytes: what [`NameWords`] holds.
const NAME_MAX: usize = 32;

static NAME_WORDS: [NameWords; HeaderName::LONG.len()] = {
    let mut t = [NameWords {
        lower: [0; 4],
        fold: [0; 4],
        mask: [0; 4],
    }; HeaderName::LONG.len()];
    let mut i = 1;
    while i < HeaderName::LONG.len() {
        let n = HeaderName::LONG[i].as_bytes();
        assert!(
            n.len() <= NAME_MAX,
            "header name longer than NameWords holds"
        );
        let mut k = 0;
        while k < n.len() {
            let c = n[k];
            assert!(
                c.is_ascii_alphabetic() || c == b'-',
                "header names are letters and '-'"
            );
            let shift = (k % 8) * 8;
            t[i].lower[k / 8] |= (c.to_ascii_lowercase() as u64) << shift;
            t[i].mask[k / 8] |= 0xff << shift;
            if c.is_ascii_alphabetic() {
                t[i].fold[k / 8] |= 0x20 << shift;
            }
            k += 1;
        }
        i += 1;
    }
    t
};

/// Whether the `len` bytes at `buf[at..]` spell long form `d`, ASCII case aside, eight bytes a
/// step. Exact for any bytes: under a letter, `b | 0x20` is that letter only when `b` is it in
/// either case; under `-` nothing is folded, so only `-` matches. A match is therefore all
/// token characters.
#[inline(always)]
fn spells(buf: &[u8], at: usize, len: usize, d: usize) -> bool {
    if HeaderName::LONG[d].len() != len {
        return false;
    }
    let w = &NAME_WORDS[d];
    let mut k = 0;
    while k * 8 < len {
        let off = at + k * 8;
        let word = match buf.get(off..off + 8) {
            Some(c) => c.try_into().map_or(0, u64::from_le_bytes),
            None => {
                // the name ends the buffer: the tail one byte at a time
                let mut b = [0u8; 8];
                for (j, x) in b.iter_mut().enumerate().take(len - k * 8) {
                    *x = buf[off + j];
                }
                u64::from_le_bytes(b)
            }
        };
        if (word | w.fold[k]) & w.mask[k] != w.lower[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// Compact form (either case) -> discriminant (0: none).
static COMPACT_NAMES: [u8; 128] = {
    let mut t = [0u8; 128];
    let mut i = 1;
    while i < HeaderName::COMPACT.len() {
        let c = HeaderName::COMPACT[i];
        if c != 0 {
            t[c as usize] = i as u8;
            t[c.to_ascii_uppercase() as usize] = i as u8;
        }
        i += 1;
    }
    t
};

impl HeaderName {
    /// Case-insensitive lookup of a header name, long or compact form (RFC 3261 §7.3.3).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if !name.iter().all(|&b| lex::is_token_char(b)) {
            return HeaderName::Other;
        }
        HeaderName::of_token(name, 0, name.len())
    }

    /// The name at `buf[at..at + len]`, which is all token characters.
    #[inline(always)]
    fn of_token(buf: &[u8], at: usize, len: usize) -> HeaderName {
        let slot = match len {
            0 => 0,
            1 => COMPACT_NAMES.get(buf[at] as usize).copied().unwrap_or(0),
            _ => {
                let d = LONG_NAMES[name_slot(len, buf[at], buf[at + len - 1])];
                if spells(buf, at, len, d as usize) {
                    d
                } else {
                    0
                }
            }
        };
        HeaderName::ALL[slot as usize]
    }
}

impl HeaderName {
    /// This name's bit in [`Index`]'s name sets (every discriminant is below 64).
    #[inline]
    const fn bit(self) -> u64 {
        1 << (self as u8 & 63)
    }

    /// Headers that may appear at most once (RFC 3261 §7.3.1: only list headers may repeat).
    pub fn is_single(self) -> bool {
        matches!(
            self,
            HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
                | HeaderName::MaxForwards
                | HeaderName::ContentLength
                | HeaderName::ContentType
                | HeaderName::Expires
        )
    }
}

/// One header line in the index. `line` runs from the first byte of the name through the line
/// terminator of its last continuation line; `value` is the value with outer LWS trimmed (it may
/// still hold folded CRLF+WS, which every accessor treats as whitespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: HeaderName,
    pub line: Span,
    pub name_end: u32,
    pub value: Span,
}

pub(crate) const EMPTY_HEADER: Header = Header {
    name: HeaderName::Other,
    line: Span { start: 0, end: 0 },
    name_end: 0,
    value: Span { start: 0, end: 0 },
};

/// The start line, as ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Span,
        uri: Span,
        version: Span,
    },
    Response {
        version: Span,
        code: u16,
        reason: Span,
    },
}

/// What was wrong, for a [`ParseError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    Empty,
    TooLarge,
    /// No empty line ends the header section.
    Truncated,
    BadStartLine,
    BadMethod,
    BadRequestUri,
    BadVersion,
    BadStatusCode,
    BadHeaderName,
    MissingColon,
    /// A continuation line (leading whitespace) where a header line must start.
    BadFolding,
    TooManyHeaders,
    BadContentLength,
    /// Content-Length claims more bytes than the datagram holds (RFC 3261 §18.3).
    ContentLengthExceedsDatagram,
    MissingHeader(HeaderName),
    DuplicateHeader(HeaderName),
    BadHeaderValue(HeaderName),
    BadCSeq,
    CSeqMethodMismatch,
    BadMaxForwards,
}

/// A parse or validation failure: what, and the byte offset (from the start of the buffer)
/// where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub offset: u32,
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn at(offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            offset: offset as u32,
            kind,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed SIP at byte {}: ", self.offset)?;
        match self.kind {
            ParseErrorKind::MissingHeader(h) => write!(f, "missing {} header", h.as_str()),
            ParseErrorKind::DuplicateHeader(h) => write!(f, "{} header appears twice", h.as_str()),
            ParseErrorKind::BadHeaderValue(h) => write!(f, "bad {} header value", h.as_str()),
            k => write!(f, "{k:?}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// The index of one message: start line, headers, body. Plain data (no borrow), so the editor
/// can keep it in step with the buffer as it rewrites.
#[derive(Clone)]
pub struct Index {
    pub start_line: StartLine,
    headers: [Header; MAX_HEADERS],
    len: u16,
    /// First byte of the message (after any leading CRLF keep-alive).
    pub msg_start: u32,
    /// Start of the empty line that ends the header section.
    pub headers_end: u32,
    pub body: Span,
    /// One bit per [`HeaderName`] (by discriminant) that may be present: set for every name the
    /// parse or an edit put in, never cleared by a removal. A clear bit lets a lookup skip the
    /// scan.
    present: u64,
    /// The names that may occur more than once (bits as `present`; set when a name comes a
    /// second time, never cleared by a removal): what validation's duplicate check reads
    /// (RFC 3261 §7.3.1).
    repeated: u64,
}

impl fmt::Debug for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Index")
            .field("start_line", &self.start_line)
            .field("headers", &self.headers())
            .field("body", &self.body)
            .finish()
    }
}

/// The first LF in `buf[from..end]`: eight bytes a step (the classic has-zero-byte test on the
/// word XOR `\n`), which beats a SIMD search's set-up on header lines of a few dozen bytes.
#[inline]
fn find_lf(buf: &[u8], from: usize, end: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let s = buf.get(from..end)?;
    let mut chunks = s.chunks_exact(8);
    let mut at = from;
    for c in &mut chunks {
        let w = c.try_into().map_or(0, u64::from_le_bytes) ^ (ONES * b'\n' as u64);
        // the lowest flagged byte is the first zero byte of `w`, the first LF of the chunk
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| at + p)
}

/// One line of the message: where its content ends (before CR LF or a bare LF) and where the
/// next line starts.
#[derive(Clone, Copy, Debug)]
struct Line {
    content_end: usize,
    next: usize,
}

/// The line starting at `pos`.
#[inline]
fn line_at(buf: &[u8], pos: usize, end: usize) -> Option<Line> {
    let lf = find_lf(buf, pos, end)?;
    let content_end = if lf > pos && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Some(Line {
        content_end,
        next: lf + 1,
    })
}

/// The usual start of a header line, `Name:` with no whitespace before the colon: its name
/// and where the colon is, or `None` to take the general path (whitespace before the colon, a
/// name longer than any we know, or no header line at all), which finds the same for a line
/// of this shape. The colon is found a word at a time; a known name is proven token characters
/// by [`spells`], any other is checked.
#[inline(always)]
fn name_then_colon(buf: &[u8], pos: usize, line: &[u8]) -> Option<(HeaderName, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    let colon = loop {
        if at > NAME_MAX {
            return None;
        }
        match line.get(at..at + 8) {
            Some(c) => {
                let w = c.try_into().map_or(0, u64::from_le_bytes) ^ (ONES * b':' as u64);
                // the lowest flagged byte is the first `:` of the word
                let hit = w.wrapping_sub(ONES) & !w & HIGHS;
                if hit != 0 {
                    break at + (hit.trailing_zeros() / 8) as usize;
                }
                at += 8;
            }
            None => break at + line.get(at..)?.iter().position(|&b| b == b':')?,
        }
    };
    let name = match colon {
        0 => return None,
        1 => HeaderName::ALL[COMPACT_NAMES.get(line[0] as usize).copied().unwrap_or(0) as usize],
        _ => {
            let d = LONG_NAMES[name_slot(colon, line[0], line[colon - 1])] as usize;
            if spells(buf, pos, colon, d) {
                HeaderName::ALL[d]
            } else {
                HeaderName::Other
            }
        }
    };
    if name == HeaderName::Other && lex::span(line, 0, lex::TOKEN) != colon {
        return None;
    }
    Some((name, colon))
}

/// Scan one header (with its continuation lines) starting at `pos`.
/// Returns the header and the position of the next line.
pub(crate) fn scan_header(
    buf: &[u8],
    pos: usize,
    end: usize,
) -> Result<(Header, usize), ParseError> {
    scan_header_inline(buf, pos, end)
}

/// [`scan_header`], inlined into the indexing loop (one call and one returned tuple per header
/// line less).
#[inline(always)]
fn scan_header_inline(buf: &[u8], pos: usize, end: usize) -> Result<(Header, usize), ParseError> {
    let Line {
        mut content_end,
        mut next,
    } = line_at(buf, pos, end).ok_or(ParseError::at(pos, ParseErrorKind::Truncated))?;
    // Continuation lines (RFC 3261 §7.3.1 folding): a line starting with SP or HT.
    while next < end && (buf[next] == b' ' || buf[next] == b'\t') {
        let l = line_at(buf, next, end).ok_or(ParseError::at(next, ParseErrorKind::Truncated))?;
        content_end = l.content_end;
        next = l.next;
    }
    // The name, the colon and the value's outer LWS, within the (unfolded) line.
    let line = &buf[pos..content_end];
    let (name, name_len, mut i) = match name_then_colon(buf, pos, line) {
        Some((name, colon)) => (name, colon, colon + 1),
        None => {
            let name_len = line
                .iter()
                .position(|&b| !lex::is_token_char(b))
                .unwrap_or(line.len());
            if name_len == 0 {
                return Err(ParseError::at(pos, ParseErrorKind::BadHeaderName));
            }
            let mut i = name_len;
            while i < line.len() && lex::is_ws(line[i]) {
                i += 1;
            }
            if i >= line.len() || line[i] != b':' {
                return Err(ParseError::at(pos + i, ParseErrorKind::MissingColon));
            }
            (HeaderName::of_token(buf, pos, name_len), name_len, i + 1)
        }
    };
    while i < line.len() && lex::is_ws(line[i]) {
        i += 1;
    }
    let mut vend = line.len();
    while vend > i && lex::is_ws(line[vend - 1]) {
        vend -= 1;
    }
    let header = Header {
        name,
        line: Span::new(pos, next),
        name_end: (pos + name_len) as u32,
        value: Span::new(pos + i, pos + vend),
    };
    Ok((header, next))
}

fn parse_start_line(buf: &[u8], pos: usize, content_end: usize) -> Result<StartLine, ParseError> {
    let line = &buf[pos..content_end];
    let bad = |k| Err(ParseError::at(pos, k));
    // RFC 3261 §7.1/§7.2: exactly one SP between the three elements.
    let sp1 = match line.iter().position(|&b| b == b' ') {
        Some(p) => p,
        None => return bad(ParseErrorKind::BadStartLine),
    };
    let rest = &line[sp1 + 1..];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let version = &line[..sp1];
        if !version.eq_ignore_ascii_case(b"SIP/2.0") {
            return bad(ParseErrorKind::BadVersion);
        }
        // Status-Code SP Reason-Phrase
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return bad(ParseErrorKind::BadStatusCode);
        }
        let code =
            (rest[0] - b'0') as u16 * 100 + (rest[1] - b'0') as u16 * 10 + (rest[2] - b'0') as u16;
        if !(100..=699).contains(&code) {
            return bad(ParseErrorKind::BadStatusCode);
        }
        let reason_start = if rest.len() == 3 {
            content_end
        } else if rest[3] == b' ' {
            pos + sp1 + 1 + 4
        } else {
            return bad(ParseErrorKind::BadStatusCode);
        };
        return Ok(StartLine::Response {
            version: Span::new(pos, pos + sp1),
            code,
            reason: Span::new(reason_start, content_end),
        });
    }
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| lex::is_token_char(b)) {
        return bad(ParseErrorKind::BadMethod);
    }
    let sp2 = match rest.iter().position(|&b| b == b' ') {
        Some(p) => p,
        None => return bad(ParseErrorKind::BadStartLine),
    };
    let uri = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if uri.is_empty() || uri.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return bad(ParseErrorKind::BadRequestUri);
    }
    if !version.eq_ignore_ascii_case(b"SIP/2.0") {
        return if version.len() >= 4 && version[..4].eq_ignore_ascii_case(b"SIP/") {
            bad(ParseErrorKind::BadVersion)
        } else {
            bad(ParseErrorKind::BadStartLine)
        };
    }
    let uri_start = pos + sp1 + 1;
    let ver_start = uri_start + sp2 + 1;
    Ok(StartLine::Request {
        method: Span::new(pos, pos + sp1),
        uri: Span::new(uri_start, uri_start + sp2),
        version: Span::new(ver_start, content_end),
    })
}

impl Index {
    /// Frame and index the message in `buf[start..end]` (one UDP datagram, or one message cut
    /// from a stream). With no Content-Length the body is the rest of the datagram; bytes past
    /// Content-Length are not part of the message (RFC 3261 §18.3).
    pub fn parse(buf: &[u8], start: usize, end: usize) -> Result<Index, ParseError> {
        let mut idx = Index::empty();
        idx.parse_into(buf, start, end)?;
        Ok(idx)
    }

    /// An index of nothing, to [`parse_into`](Index::parse_into) later.
    pub const fn empty() -> Index {
        Index {
            start_line: StartLine::Response {
                version: Span { start: 0, end: 0 },
                code: 0,
                reason: Span { start: 0, end: 0 },
            },
            headers: [EMPTY_HEADER; MAX_HEADERS],
            len: 0,
            msg_start: 0,
            headers_end: 0,
            body: Span { start: 0, end: 0 },
            present: 0,
            repeated: 0,
        }
    }

    /// [`parse`](Index::parse) into this index, reusing its storage (a worker keeps one and
    /// indexes every message into it: no 1.5 KiB index is built and moved per message). After
    /// an error the index describes nothing and must not be read.
    pub fn parse_into(&mut self, buf: &[u8], start: usize, end: usize) -> Result<(), ParseError> {
        self.len = 0;
        self.present = 0;
        self.repeated = 0;
        if start > end || end > buf.len() {
            return Err(ParseError::at(start, ParseErrorKind::Empty));
        }
        if end > u32::MAX as usize {
            return Err(ParseError::at(start, ParseErrorKind::TooLarge));
        }
        let mut pos = start;
        // RFC 3261 §7.5: CRLFs before the start line are ignored (keep-alives).
        while pos < end && (buf[pos] == b'\r' || buf[pos] == b'\n') {
            pos += 1;
        }
        if pos == end {
            return Err(ParseError::at(pos, ParseErrorKind::Empty));
        }
        let msg_start = pos;
        let Line { content_end, next } =
            line_at(buf, pos, end).ok_or(ParseError::at(pos, ParseErrorKind::Truncated))?;
        let start_line = parse_start_line(buf, pos, content_end)?;
        pos = next;

        let idx = self;
        idx.start_line = start_line;
        idx.msg_start = msg_start as u32;
        let mut content_length: Option<Span> = None;
        loop {
            if pos >= end {
                return Err(ParseError::at(pos, ParseErrorKind::Truncated));
            }
            if buf[pos] == b'\n' || (buf[pos] == b'\r' && pos + 1 < end && buf[pos + 1] == b'\n') {
                idx.headers_end = pos as u32;
                pos += if buf[pos] == b'\n' { 1 } else { 2 };
                break;
            }
            if buf[pos] == b' ' || buf[pos] == b'\t' {
                return Err(ParseError::at(pos, ParseErrorKind::BadFolding));
            }
            let (h, next) = scan_header_inline(buf, pos, end)?;
            if idx.len as usize == MAX_HEADERS {
                return Err(ParseError::at(pos, ParseErrorKind::TooManyHeaders));
            }
            if h.name == HeaderName::ContentLength {
                if let Some(prev) = content_length
                    && buf[prev.range()] != buf[h.value.range()]
                {
                    return Err(ParseError::at(
                        pos,
                        ParseErrorKind::DuplicateHeader(HeaderName::ContentLength),
                    ));
                }
                content_length = Some(h.value);
            }
            idx.headers[idx.len as usize] = h;
            idx.len += 1;
            let bit = h.name.bit();
            idx.repeated |= idx.present & bit;
            idx.present |= bit;
            pos = next;
        }
        let body_start = pos;
        let body_end = match content_length {
            Some(v) => {
                let n = parse_u64(&buf[v.range()], 10).ok_or(ParseError::at(
                    v.start as usize,
                    ParseErrorKind::BadContentLength,
                ))?;
                if n > (end - body_start) as u64 {
                    return Err(ParseError::at(
                        v.start as usize,
                        ParseErrorKind::ContentLengthExceedsDatagram,
                    ));
                }
                body_start + n as usize
            }
            None => end,
        };
        idx.body = Span::new(body_start, body_end);
        Ok(())
    }

    /// All header lines, in message order.
    #[inline]
    pub fn headers(&self) -> &[Header] {
        &self.headers[..self.len as usize]
    }

    /// Whether a header of this name may be present (`false`: surely not).
    #[inline]
    pub fn may_have(&self, name: HeaderName) -> bool {
        self.present & name.bit() != 0
    }

    /// Whether this name may be on more than one line (`false`: surely not).
    #[inline]
    pub fn repeats(&self, name: HeaderName) -> bool {
        self.repeated & name.bit() != 0
    }

    /// End of the message (end of the body).
    #[inline]
    pub fn msg_end(&self) -> u32 {
        self.body.end
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start_line, StartLine::Request { .. })
    }

    /// Borrow a read-only view over `buf`, which must be the buffer this index was built from.
    #[inline]
    pub fn view<'a>(&'a self, buf: &'a [u8]) -> View<'a> {
        View { buf, idx: self }
    }

    /// This index for a copy of its message placed `by` bytes further on (copied into a frame
    /// with headroom for an editor): every position moved, nothing parsed again. `None` if a
    /// position would not fit a `u32`.
    pub fn moved_by(&self, by: usize) -> Option<Index> {
        let by = u32::try_from(by).ok()?;
        self.body.end.checked_add(by)?;
        let mv = |s: Span| Span {
            start: s.start + by,
            end: s.end + by,
        };
        let mut idx = self.clone();
        idx.msg_start += by;
        idx.headers_end += by;
        idx.body = mv(idx.body);
        idx.start_line = match idx.start_line {
            StartLine::Request {
                method,
                uri,
                version,
            } => StartLine::Request {
                method: mv(method),
                uri: mv(uri),
                version: mv(version),
            },
            StartLine::Response {
                version,
                code,
                reason,
            } => StartLine::Response {
                version: mv(version),
                code,
                reason: mv(reason),
            },
        };
        for h in idx.headers_mut() {
            shift_header(h, by as isize);
        }
        Some(idx)
    }

    // ---- used by the editor to keep the index in step with the buffer ----

    pub(crate) fn headers_mut(&mut self) -> &mut [Header] {
        &mut self.headers[..self.len as usize]
    }

    pub(crate) fn insert_header(&mut self, at: usize, h: Header) -> bool {
        let n = self.len as usize;
        if n == MAX_HEADERS || at > n {
            return false;
        }
        self.headers.copy_within(at..n, at + 1);
        self.headers[at] = h;
        self.len += 1;
        self.repeated |= self.present & h.name.bit();
        self.present |= h.name.bit();
        true
    }

    /// Replace every entry with `heads`, each moved by `by` (a rebuilt header block).
    pub(crate) fn set_headers(&mut self, heads: &[Header], by: u32) {
        let n = heads.len().min(MAX_HEADERS);
        (self.present, self.repeated) = (0, 0);
        for (dst, h) in self.headers.iter_mut().zip(&heads[..n]) {
            self.repeated |= self.present & h.name.bit();
            self.present |= h.name.bit();
            *dst = Header {
                name: h.name,
                line: Span {
                    start: h.line.start + by,
                    end: h.line.end + by,
                },
                name_end: h.name_end + by,
                value: Span {
                    start: h.value.start + by,
                    end: h.value.end + by,
                },
            };
        }
        self.len = n as u16;
    }

    pub(crate) fn remove_header(&mut self, at: usize) {
        let n = self.len as usize;
        if at < n {
            self.headers.copy_within(at + 1..n, at);
            self.len -= 1;
        }
    }

    /// Shift every position at or after `from` by `delta` (tail moved), or every position at or
    /// before `upto` (head moved). Positions inside the edited header are fixed by the caller.
    pub(crate) fn shift(&mut self, moved_head: bool, at: usize, removed_end: usize, delta: isize) {
        let sh = |p: &mut u32| *p = (*p as isize + delta) as u32;
        let n = self.len as usize;
        if moved_head {
            let before = |p: u32| (p as usize) <= at;
            sh(&mut self.msg_start);
            match &mut self.start_line {
                StartLine::Request {
                    method,
                    uri,
                    version,
                } => {
                    for s in [method, uri, version] {
                        sh(&mut s.start);
                        sh(&mut s.end);
                    }
                }
                StartLine::Response {
                    version, reason, ..
                } => {
                    for s in [version, reason] {
                        sh(&mut s.start);
                        sh(&mut s.end);
                    }
                }
            }
            for h in &mut self.headers[..n] {
                if before(h.line.end) {
                    shift_header(h, delta);
                }
            }
        } else {
            let after = |p: u32| (p as usize) >= removed_end;
            for h in &mut self.headers[..n] {
                if after(h.line.start) {
                    shift_header(h, delta);
                }
            }
            if after(self.headers_end) {
                sh(&mut self.headers_end);
            }
            if after(self.body.start) {
                sh(&mut self.body.start);
            }
            sh(&mut self.body.end);
        }
    }
}

fn shift_header(h: &mut Header, delta: isize) {
    let sh = |p: &mut u32| *p = (*p as isize + delta) as u32;
    sh(&mut h.line.start);
    sh(&mut h.line.end);
    sh(&mut h.name_end);
    sh(&mut h.value.start);
    sh(&mut h.value.end);
}

/// A parsed message that borrows its buffer: the usual entry point for reading.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub buf: &'a [u8],
    pub idx: Index,
}

impl<'a> Message<'a> {
    /// Frame and index a whole datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, ParseError> {
        Ok(Message {
            buf,
            idx: Index::parse(buf, 0, buf.len())?,
        })
    }

    #[inline]
    pub fn view(&self) -> View<'_> {
        View {
            buf: self.buf,
            idx: &self.idx,
        }
    }
}

/// A read-only view: buffer plus index. All accessors return sub-slices of `buf`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buf: &'a [u8],
    pub idx: &'a Index,
}

impl<'a> View<'a> {
    #[inline]
    pub fn bytes(&self, s: Span) -> &'a [u8] {
        &self.buf[s.range()]
    }

    /// The whole message as it now stands in the buffer.
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.buf[self.idx.msg_start as usize..self.idx.body.end as usize]
    }

    pub fn method(&self) -> Option<&'a [u8]> {
        match self.idx.start_line {
            StartLine::Request { method, .. } => Some(self.bytes(method)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&'a [u8]> {
        match self.idx.start_line {
            StartLine::Request { uri, .. } => Some(self.bytes(uri)),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self.idx.start_line {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn is_method(&self, m: &[u8]) -> bool {
        self.method() == Some(m)
    }

    pub fn body(&self) -> &'a [u8] {
        self.bytes(self.idx.body)
    }

    /// Header lines with this name, in order.
    pub fn headers(&self, name: HeaderName) -> impl Iterator<Item = &'a Header> + 'a {
        let all = if self.idx.may_have(name) {
            self.idx.headers()
        } else {
            &[]
        };
        all.iter().filter(move |h| h.name == name)
    }

    /// The first header with this name, as its value bytes.
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.headers(name).next().map(|h| self.bytes(h.value))
    }

    /// Every comma-separated value of every header line with this name, in order.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.headers(name)
            .flat_map(move |h| ListIter::new(&buf[h.value.range()]))
    }

    /// Look up an unknown header by its exact name (case-insensitive).
    pub fn header_named(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.idx
            .headers()
            .iter()
            .find(|h| {
                self.buf[h.line.start as usize..h.name_end as usize].eq_ignore_ascii_case(name)
            })
            .map(|h| self.bytes(h.value))
    }
}

#[cfg(test)]
mod tests {
    /// The header-line fast path ([`name_then_colon`]) against the general path's rules
    /// (the token span, then optional whitespace, then the colon): where the fast path answers,
    /// it finds the same name and colon; where it declines, the general path decides. Every
    /// known name in three cases and compact forms, each with `:`, ` :`, `\t:`, names of every
    /// length up to past the fast path's reach, and bytes that are not token characters.
    #[test]
    fn the_fast_header_name_path_agrees_with_the_general_one() {
        fn general(line: &[u8]) -> Option<(HeaderName, usize)> {
            let n = line
                .iter()
                .position(|&b| !lex::is_token_char(b))
                .unwrap_or(line.len());
            if n == 0 {
                return None;
            }
            let mut i = n;
            while i < line.len() && lex::is_ws(line[i]) {
                i += 1;
            }
            (line.get(i) == Some(&b':')).then(|| (HeaderName::of_token(line, 0, n), i))
        }
        let mut names: Vec<Vec<u8>> = Vec::new();
        for (i, &n) in HeaderName::ALL.iter().enumerate().skip(1) {
            let long = n.as_str();
            names.push(long.as_bytes().to_vec());
            names.push(long.to_ascii_uppercase().into_bytes());
            names.push(long.to_ascii_lowercase().into_bytes());
            let c = HeaderName::COMPACT[i];
            if c != 0 {
                names.push(vec![c]);
                names.push(vec![c.to_ascii_uppercase()]);
            }
        }
        for len in 1..=48 {
            names.push(vec![b'x'; len]);
            names.push((0..len).map(|k| b"ab-.!%*_+`'~"[k % 12]).collect());
        }
        for odd in [
            &b"Vi\x80"[..],
            b"Via\xba",
            b"Call ID",
            b"Call\"ID",
            b"\xff",
            b"(Via)",
        ] {
            names.push(odd.to_vec());
        }
        let mut checked = 0;
        for name in &names {
            for sep in [&b":"[..], b" :", b"\t:", b"", b"::"] {
                let mut line = name.clone();
                line.extend_from_slice(sep);
                line.extend_from_slice(b" value;p=1");
                let fast = name_then_colon(&line, 0, &line);
                if let Some(f) = fast {
                    assert_eq!(
                        Some(f),
                        general(&line),
                        "{:?}",
                        String::from_utf8_lossy(&line)
                    );
                    checked += 1;
                }
            }
        }
        assert!(
            checked > 200,
            "the fast path answered for {checked} lines only"
        );
    }

    use super::*;

    #[test]
    fn every_name_is_found_in_either_case_and_no_other() {
        for (i, &n) in HeaderName::ALL.iter().enumerate().skip(1) {
            assert_eq!(n as usize, i);
            let long = n.as_str();
            assert_eq!(HeaderName::from_bytes(long.as_bytes()), n, "{long}");
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_uppercase().as_bytes()),
                n
            );
            assert_eq!(
                HeaderName::from_bytes(long.to_ascii_lowercase().as_bytes()),
                n
            );
            // one byte off, anywhere: another name or none, never this one
            for k in 0..long.len() {
                let mut b = long.as_bytes().to_vec();
                b[k] ^= 0x01;
                assert_ne!(
                    HeaderName::from_bytes(&b),
                    n,
                    "{long} with byte {k} changed"
                );
            }
            let c = HeaderName::COMPACT[i];
            if c != 0 {
                assert_eq!(HeaderName::from_bytes(&[c]), n);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), n);
            }
        }
        for other in [
            &b""[..],
            b"q",
            b"\xff",
            b"User-Agent",
            b"Vias",
            b"Vi",
            b"Call-I\x80",
            b"Call\rID",
            b"X-Via",
        ] {
            assert_eq!(
                HeaderName::from_bytes(other),
                HeaderName::Other,
                "{other:?}"
            );
        }
    }

    #[test]
    fn line_ends_are_found_at_every_offset() {
        for len in 0..40 {
            for lf in 0..=len {
                let mut b = vec![b'a'; len];
                if lf < len {
                    b[lf] = b'\n';
                }
                for from in 0..=len {
                    let want = b[from..].iter().position(|&x| x == b'\n').map(|p| from + p);
                    assert_eq!(
                        find_lf(&b, from, len),
                        want,
                        "len {len} lf {lf} from {from}"
                    );
                }
            }
        }
        assert_eq!(find_lf(b"\x8a\x0b\n", 0, 3), Some(2));
        assert_eq!(
            find_lf(b"\xff\xff\xff\xff\xff\xff\xff\xff\n", 0, 9),
            Some(8)
        );
    }
}
