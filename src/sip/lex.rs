//! The lexical level of SIP (RFC 3261 §25.1, §7.3.1): the bottom layer of `sip/`.
//!
//! Owns: the character classes (one table lookup per byte), LWS trimming, quoted strings,
//! splitting comma lists and `;` parameter runs outside quotes and `<...>`, and bounded decimal
//! numbers. It knows no header and no message; every function takes a byte slice and returns
//! sub-slices of it: nothing allocates, nothing panics.

pub const TOKEN: u8 = 1;
const WS: u8 = 2;
/// Not allowed inside `<...>` (RFC 4475 badaspec: no LWS in an addr-spec).
const BAD_IN_ANGLE: u8 = 4;
/// Not allowed in an addr-spec written without `<>` (RFC 3261 §20).
const BAD_BARE_URI: u8 = 8;
/// Allowed in a host (name, IPv4, or IPv6 reference).
const HOST: u8 = 16;
/// `:`, which every URI holds after its scheme.
const COLON: u8 = 32;
/// A host character other than `:` (where a host name or IPv4 address ends, before a port).
pub const HOST_NAME: u8 = 64;

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
        if b == b':' {
            t[c] |= COLON;
        }
        if t[c] & HOST != 0 && b != b':' {
            t[c] |= HOST_NAME;
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

/// A URI inside `<...>`: not empty, with a `:`, and no LWS or `<` (RFC 4475 badaspec: no LWS
/// in an addr-spec); one pass over the class table.
#[inline]
pub fn angle_uri_ok(uri: &[u8]) -> bool {
    let acc = uri.iter().fold(0u8, |acc, &b| acc | CLASS[b as usize]);
    acc & (COLON | BAD_IN_ANGLE) == COLON
}

/// An addr-spec written without `<>`: not empty, with a `:`, and none of LWS `,` `?` `<` `>`
/// `"` (RFC 3261 §20: those need the `<>` form); one pass over the class table.
#[inline]
pub fn bare_uri_ok(uri: &[u8]) -> bool {
    let acc = uri.iter().fold(0u8, |acc, &b| acc | CLASS[b as usize]);
    acc & (COLON | BAD_BARE_URI) == COLON
}

/// The index of the first byte of `s` at or after `i` that is not of `class` (one class bit),
/// `s.len()` if none. Eight bytes at a time while they all are (their class bits ANDed, no
/// branch per byte), then byte by byte.
#[inline(always)]
pub fn span(s: &[u8], mut i: usize, class: u8) -> usize {
    while let Some(w) = s.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        if w.iter().fold(class, |acc, &b| acc & CLASS[b as usize]) == 0 {
            break;
        }
        i += 8;
    }
    while i < s.len() && CLASS[s[i] as usize] & class != 0 {
        i += 1;
    }
    i
}

/// Whether `b` may appear in a host (name, IPv4, or IPv6 reference).
#[inline(always)]
pub fn is_host_char(b: u8) -> bool {
    CLASS[b as usize] & HOST != 0
}

/// Whitespace inside a header value. CR and LF count because a folded value keeps its CRLF.
#[inline(always)]
pub fn is_ws(b: u8) -> bool {
    CLASS[b as usize] & WS != 0
}

/// Whether `s` holds whitespace (as [`is_ws`]): eight bytes a step, a word passing when none of
/// its bytes is below `!` (SP, HT, CR and LF all are); one that has such a byte is looked at
/// byte by byte.
#[inline]
pub fn has_ws(s: &[u8]) -> bool {
    // the high bit of every byte below 0x21, and possibly of bytes above a flagged one
    // (borrow), which the byte-wise look sorts out
    let below_bang = |w: u64| w.wrapping_sub(LO * 0x21) & !w & HI;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        if below_bang(c.try_into().map_or(0, u64::from_le_bytes)) != 0
            && c.iter().any(|&b| is_ws(b))
        {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| is_ws(b))
}

/// The index of the first byte of `s` at or after `i` that is not whitespace (`s.len()` if
/// none).
#[inline(always)]
pub fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// Whether `b` is a token character or whitespace.
#[inline(always)]
pub fn is_token_or_ws(b: u8) -> bool {
    CLASS[b as usize] & (TOKEN | WS) != 0
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

/// Slices at least this long are searched with `memchr` (SIMD); shorter ones with an 8-byte
/// word at a time, which costs less than `memchr`'s call and set-up on the short values SIP
/// headers mostly hold (issue 15).
const MEMCHR_MIN: usize = 32;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `x` equal to `b`, plus possibly false ones *above* a true
/// one (borrow): the lowest set bit is always exact, which is all [`find_by`] reads.
#[inline(always)]
fn eq_bits(x: u64, b: u8) -> u64 {
    let y = x ^ (LO * b as u64);
    y.wrapping_sub(LO) & !y & HI
}

/// First index of a byte for which `hit` holds; `bits` is the same test on 8 bytes at once
/// (see [`eq_bits`]). A slice of 8 bytes or more ends with one word that overlaps the last
/// one read (whose bytes held no hit), not with up to 7 single bytes.
#[inline(always)]
fn find_by(s: &[u8], bits: impl Fn(u64) -> u64, hit: impl Fn(u8) -> bool) -> Option<usize> {
    let word = |at: usize| -> u64 {
        match s.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
            Some(w) => bits(u64::from_le_bytes(w)),
            None => 0,
        }
    };
    if s.len() < 8 {
        return s.iter().position(|&b| hit(b));
    }
    let mut base = 0;
    while base + 8 < s.len() {
        let m = word(base);
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    let last = s.len() - 8;
    let m = word(last);
    (m != 0).then(|| last + (m.trailing_zeros() / 8) as usize)
}

/// `memchr(a, s)`, cheaper on short slices.
#[inline]
pub fn find1(a: u8, s: &[u8]) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr(a, s);
    }
    find_by(s, |x| eq_bits(x, a), |b| b == a)
}

/// `memchr2(a, b, s)`, cheaper on short slices.
#[inline]
fn find2(a: u8, b: u8, s: &[u8]) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr2(a, b, s);
    }
    find_by(s, |x| eq_bits(x, a) | eq_bits(x, b), |y| y == a || y == b)
}

/// `memchr3(a, b, c, s)`, cheaper on short slices.
#[inline]
fn find3(a: u8, b: u8, c: u8, s: &[u8]) -> Option<usize> {
    if s.len() >= MEMCHR_MIN {
        return memchr::memchr3(a, b, c, s);
    }
    find_by(
        s,
        |x| eq_bits(x, a) | eq_bits(x, b) | eq_bits(x, c),
        |y| y == a || y == b || y == c,
    )
}

/// End (exclusive) of the quoted-string starting at `s[0] == b'"'`, honouring `\` escapes.
pub fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    loop {
        let p = i + find2(b'\\', b'"', s.get(i..)?)?;
        if s[p] == b'"' {
            return Some(p + 1);
        }
        i = p + 2;
    }
}

/// Whether every quoted-string in `s` is closed.
pub fn quotes_balanced(s: &[u8]) -> bool {
    let mut i = 0;
    while let Some(q) = find1(b'"', &s[i..]) {
        match quoted_end(&s[i + q..]) {
            Some(n) => i += q + n,
            None => return false,
        }
    }
    true
}

/// The first `sep` in `s` outside quoted strings and `<...>`. `None` when there is none, or
/// when a quoted string or a `<` is left open (the rest is then one item). A `sep` of `"` or
/// `<` opens, as it always did, rather than splits.
#[inline]
pub fn split_point(s: &[u8], sep: u8) -> Option<usize> {
    // no separator byte at all (most values: one name-addr, one Via): nothing to split, and
    // no quote or bracket to walk past
    find1(sep, s)?;
    let p = find3(sep, b'"', b'<', s)?;
    match s[p] {
        b'"' | b'<' => split_point_past(s, sep, p),
        _ => Some(p),
    }
}

/// [`split_point`] on from an opening `"` or `<` at `s[p]`: out of line, so that the common
/// case (no quote, no bracket) stays small where it is inlined.
#[inline(never)]
fn split_point_past(s: &[u8], sep: u8, mut p: usize) -> Option<usize> {
    loop {
        let i = match s[p] {
            b'"' => p + quoted_end(&s[p..])?,
            b'<' => p + find1(b'>', &s[p..])? + 1,
            _ => return Some(p),
        };
        p = i + find3(sep, b'"', b'<', &s[i..])?;
    }
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
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.rest;
        match split_point(s, self.sep) {
            Some(p) => {
                self.rest = &s[p + 1..];
                Some(&s[..p])
            }
            None => {
                self.done = true;
                Some(s)
            }
        }
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
#[inline]
pub fn split_param(raw: &[u8]) -> Param<'_> {
    match find1(b'=', raw) {
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
    // A `name` with '=' or edge whitespace never equals a parameter name as split (before the
    // first '=', trimmed) the way the quick test below assumes: those go the long way.
    if name.contains(&b'=')
        || name.first().is_some_and(|&b| is_ws(b))
        || name.last().is_some_and(|&b| is_ws(b))
    {
        return ParamIter::new(params).find(|p| p.name.eq_ignore_ascii_case(name));
    }
    let n = name.len();
    for item in split_outside(params, b';') {
        // The item matches only if, past its leading LWS, it starts with `name`, then LWS and
        // '=', or nothing (it is trimmed); any other item is passed over without trimming or
        // splitting it.
        let lead = skip_ws(item, 0);
        match item.get(lead..lead + n) {
            Some(head) if head.eq_ignore_ascii_case(name) => {}
            _ => continue,
        }
        let raw = trim(item);
        let j = skip_ws(raw, n);
        match raw.get(j) {
            // `raw` is `name` itself (it is trimmed, so no LWS ends it).
            None if n > 0 => {
                return Some(Param {
                    name: raw,
                    value: None,
                    raw,
                });
            }
            Some(b'=') => {
                return Some(Param {
                    name: &raw[..n],
                    value: Some(trim(&raw[j + 1..])),
                    raw,
                });
            }
            _ => {}
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `has_ws` answers as a byte-by-byte look, for every byte value at every position.
    #[test]
    fn has_ws_is_the_bytewise_test() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    assert_eq!(
                        has_ws(&s),
                        s.iter().any(|&c| is_ws(c)),
                        "len {len} byte {b:#x} at {at}"
                    );
                }
            }
        }
        assert!(!has_ws(b""));
        assert!(has_ws(b"\x01\x00\x20"));
        assert!(!has_ws(b"\x01\x00\x21\x7f\x80\xff\x1f\x0b\x0c"));
    }
}
