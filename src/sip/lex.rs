//! The lexical level of SIP (RFC 3261 §25.1, §7.3.1): the bottom layer of `sip/`.
//!
//! Owns: the character classes (one table lookup per byte), LWS trimming, quoted strings,
//! splitting comma lists and `;` parameter runs outside quotes and `<...>`, and bounded decimal
//! numbers. It knows no header and no message; every function takes a byte slice and returns
//! sub-slices of it: nothing allocates, nothing panics.

const TOKEN: u8 = 1;
const WS: u8 = 2;
/// Not allowed inside `<...>` (RFC 4475 badaspec: no LWS in an addr-spec).
const BAD_IN_ANGLE: u8 = 4;
/// Not allowed in an addr-spec written without `<>` (RFC 3261 §20).
const BAD_BARE_URI: u8 = 8;
/// Allowed in a host (name, IPv4, or IPv6 reference).
const HOST: u8 = 16;

/// Character classes, one table lookup per byte on the hot path.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            t[c] |= TOKEN;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            t[c] |= WS | BAD_IN_ANGLE | BAD_BARE_URI;
        }
        if b == b'<' {
            t[c] |= BAD_IN_ANGLE;
        }
        if matches!(b, b',' | b'?' | b'<' | b'>' | b'"') {
            t[c] |= BAD_BARE_URI;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':' | b'_') {
            t[c] |= HOST;
        }
        c += 1;
    }
    t
};

/// RFC 3261 §25.1 `token` characters.
#[inline(always)]
pub fn is_token_char(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}

#[inline(always)]
fn any_class(s: &[u8], class: u8) -> bool {
    s.iter().fold(0u8, |acc, &b| acc | CLASS[b as usize]) & class != 0
}

#[inline(always)]
fn all_class(s: &[u8], class: u8) -> bool {
    s.iter().fold(class, |acc, &b| acc & CLASS[b as usize]) & class != 0
}

/// A display-name without quotes (RFC 3261 §25.1 `*(token LWS)`): token characters and
/// whitespace only.
#[inline(always)]
pub fn all_token_or_ws(s: &[u8]) -> bool {
    s.iter().all(|&b| CLASS[b as usize] & (TOKEN | WS) != 0)
}

/// Whether `s` holds a byte not allowed inside `<...>` (RFC 4475 badaspec: no LWS in an
/// addr-spec).
#[inline(always)]
pub fn any_bad_in_angle(s: &[u8]) -> bool {
    any_class(s, BAD_IN_ANGLE)
}

/// Whether `s` holds a byte not allowed in an addr-spec written without `<>` (RFC 3261 §20).
#[inline(always)]
pub fn any_bad_bare_uri(s: &[u8]) -> bool {
    any_class(s, BAD_BARE_URI)
}

/// Whether every byte of `s` may appear in a host (name, IPv4, or IPv6 reference); `true`
/// for an empty `s`.
#[inline(always)]
pub fn all_host_chars(s: &[u8]) -> bool {
    all_class(s, HOST)
}

/// Whitespace inside a header value. CR and LF count because a folded value keeps its CRLF.
#[inline(always)]
pub fn is_ws(b: u8) -> bool {
    CLASS[b as usize] & WS != 0
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Strip the quotes of a quoted-string (escapes are left as they are).
pub fn unquote(s: &[u8]) -> &[u8] {
    if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// End (exclusive) of the quoted-string starting at `s[0] == b'"'`, honouring `\` escapes.
pub fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        let p = i + memchr::memchr2(b'\\', b'"', s.get(i..)?)?;
        if s[p] == b'"' {
            return Some(p + 1);
        }
        i = p + 2;
    }
}

/// Whether every quoted-string in `s` is closed.
pub fn quotes_balanced(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &s[i..]) {
        match quoted_end(&s[i + q..]) {
            Some(n) => i += q + n,
            None => return false,
        }
    }
    true
}

/// Split `s` at `sep` bytes that are outside quoted strings and outside `<...>`.
#[derive(Clone, Debug)]
pub struct SplitOutside<'a> {
    rest: &'a [u8],
    sep: u8,
    done: bool,
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.rest;
        let mut i = 0;
        // Jump between the bytes that matter with SIMD searches, not byte by byte.
        while let Some(off) = memchr::memchr3(self.sep, b'"', b'<', &s[i..]) {
            let p = i + off;
            match s[p] {
                b'"' => match quoted_end(&s[p..]) {
                    Some(n) => i = p + n,
                    None => break,
                },
                b'<' => match memchr::memchr(b'>', &s[p..]) {
                    Some(n) => i = p + n + 1,
                    None => break,
                },
                _ => {
                    self.rest = &s[p + 1..];
                    return Some(&s[..p]);
                }
            }
        }
        self.done = true;
        Some(s)
    }
}

pub fn split_outside(s: &[u8], sep: u8) -> SplitOutside<'_> {
    SplitOutside {
        rest: s,
        sep,
        done: false,
    }
}

/// The comma-separated values of a list header (RFC 3261 §7.3.1), trimmed, empty ones skipped.
#[derive(Clone, Debug)]
pub struct ListIter<'a>(SplitOutside<'a>);

impl<'a> ListIter<'a> {
    pub fn new(s: &'a [u8]) -> ListIter<'a> {
        ListIter(split_outside(s, b','))
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        for item in self.0.by_ref() {
            let t = trim(item);
            if !t.is_empty() {
                return Some(t);
            }
        }
        None
    }
}

/// `;name[=value]` parameters. The input is the text after the first `;` (or a whole
/// `;`-separated run); each item is trimmed; the value is raw (quotes kept).
#[derive(Clone, Debug)]
pub struct ParamIter<'a>(SplitOutside<'a>);

impl<'a> ParamIter<'a> {
    pub fn new(s: &'a [u8]) -> ParamIter<'a> {
        ParamIter(split_outside(s, b';'))
    }
}

/// One parameter: its name, its value if any, and the whole trimmed `name=value` text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub raw: &'a [u8],
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        for item in self.0.by_ref() {
            let raw = trim(item);
            if raw.is_empty() {
                continue;
            }
            return Some(split_param(raw));
        }
        None
    }
}

/// Split one trimmed `name[=value]` item at its first `=` (name and value trimmed).
pub fn split_param(raw: &[u8]) -> Param<'_> {
    match raw.iter().position(|&b| b == b'=') {
        Some(eq) => Param {
            name: trim(&raw[..eq]),
            value: Some(trim(&raw[eq + 1..])),
            raw,
        },
        None => Param {
            name: raw,
            value: None,
            raw,
        },
    }
}

/// Find a parameter by name (case-insensitive) in a `;` parameter run.
pub fn find_param<'a>(params: &'a [u8], name: &[u8]) -> Option<Param<'a>> {
    ParamIter::new(params).find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Parse a decimal number of at most `max_digits` digits (no sign, no spaces).
pub fn parse_u64(s: &[u8], max_digits: usize) -> Option<u64> {
    if s.is_empty() || s.len() > max_digits {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as u64;
    }
    Some(v)
}
