//! Typed, zero-copy views of the header values the P-CSCF reads.
//!
//! Owns: the lexical rules of RFC 3261 §25 that matter here (tokens, LWS, quoted strings,
//! comma lists, `;` parameters), Via, name-addr (From/To/Contact/Route/Path/Service-Route/
//! P-Associated-URI), CSeq, Digest credentials and challenges (RFC 2617 / RFC 3310 / TS 24.229
//! §7.2A.1–2), and the sec-agree mechanisms (RFC 3329 §2.2, TS 33.203 Annex H).
//! Every function takes a byte slice and returns sub-slices of it; nothing allocates, and a
//! malformed value yields `None` or an error, never a panic.

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
fn quoted_end(s: &[u8]) -> Option<usize> {
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

fn split_param(raw: &[u8]) -> Param<'_> {
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

/// Whether a comma list (Require, Supported, Proxy-Require...) holds `tag` (case-insensitive).
pub fn list_contains(value: &[u8], tag: &[u8]) -> bool {
    ListIter::new(value).any(|v| v.eq_ignore_ascii_case(tag))
}

/// RFC 3261 §19.1.1 / §19.1.5: a Request-URI has a scheme, no `<>`, and a SIP(S) one carries
/// no headers.
pub fn request_uri_ok(uri: &[u8]) -> bool {
    let colon = match uri.iter().position(|&b| b == b':') {
        Some(c) if c > 0 => c,
        _ => return false,
    };
    let scheme = &uri[..colon];
    if !scheme[0].is_ascii_alphabetic()
        || !scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return false;
    }
    if uri.iter().any(|&b| matches!(b, b'<' | b'>' | b'"')) {
        return false;
    }
    let sip = scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips");
    // The userinfo may hold '?' (RFC 3261 §25.1 `user-unreserved`); headers follow the host.
    !(sip && uri_hostport_and_rest(&uri[colon + 1..]).contains(&b'?'))
}

/// CSeq: `1*DIGIT LWS Method` (RFC 3261 §20.16) → (number, method).
pub fn cseq(v: &[u8]) -> Option<(u64, &[u8])> {
    let v = trim(v);
    let sp = v.iter().position(|&b| is_ws(b))?;
    let num = super::msg::parse_u64(&v[..sp], 10)?;
    let method = trim(&v[sp..]);
    is_token(method).then_some((num, method))
}

/// The host part of a `host[:port]`, IPv6 references included (`[2001:db8::1]:5060`).
pub fn split_host_port(hp: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let hp = trim(hp);
    if hp.is_empty() {
        return None;
    }
    let (host, rest) = if hp[0] == b'[' {
        let close = hp.iter().position(|&b| b == b']')?;
        (&hp[..=close], &hp[close + 1..])
    } else {
        match hp.iter().position(|&b| b == b':') {
            Some(c) => (&hp[..c], &hp[c..]),
            None => (hp, &hp[hp.len()..]),
        }
    };
    if host.is_empty() || !all_class(host, HOST) {
        return None;
    }
    let rest = trim(rest);
    let port = if rest.is_empty() {
        None
    } else if rest[0] == b':' {
        let p = super::msg::parse_u64(trim(&rest[1..]), 5)?;
        Some(u16::try_from(p).ok()?)
    } else {
        return None;
    };
    Some((host, port))
}

/// One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=...;rport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// The whole value, trimmed.
    pub raw: &'a [u8],
    pub transport: &'a [u8],
    /// The sent-by host (an IPv6 reference keeps its brackets).
    pub host: &'a [u8],
    pub port: Option<u16>,
    /// The text after the first `;` (empty if none).
    pub params: &'a [u8],
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Option<Via<'a>> {
        let raw = trim(v);
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, LWS allowed
        // around the slashes (RFC 4475 wsinv).
        let mut parts = raw.splitn(3, |&b| b == b'/');
        let name = trim(parts.next()?);
        let version = trim(parts.next()?);
        let rest = parts.next()?;
        if !name.eq_ignore_ascii_case(b"SIP") || version != b"2.0" {
            return None;
        }
        let rest = trim(rest);
        let tend = rest.iter().position(|&b| !is_token_char(b))?;
        let transport = &rest[..tend];
        if transport.is_empty() {
            return None;
        }
        let after = &rest[tend..];
        if after.is_empty() || !is_ws(after[0]) {
            return None;
        }
        let (sent_by, params) = match memchr::memchr(b';', after) {
            Some(p) => (&after[..p], &after[p + 1..]),
            None => (after, &after[after.len()..]),
        };
        let (host, port) = split_host_port(sent_by)?;
        // each parameter must at least have a token name
        for p in ParamIter::new(params) {
            if !is_token(p.name) {
                return None;
            }
        }
        Some(Via {
            raw,
            transport,
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Param<'a>> {
        find_param(self.params, name)
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param(b"branch").and_then(|p| p.value)
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.param(b"received").and_then(|p| p.value)
    }

    /// `None`: no rport; `Some(None)`: rport without a value (RFC 3581 asks us to fill it).
    pub fn rport(&self) -> Option<Option<&'a [u8]>> {
        self.param(b"rport").map(|p| p.value)
    }
}

/// A name-addr or addr-spec (RFC 3261 §20.10, §25.1): `"Display" <uri>;params` or `uri;params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: Option<&'a [u8]>,
    pub uri: &'a [u8],
    /// The header parameters after the URI (the text after the first `;`, empty if none).
    pub params: &'a [u8],
    pub bracketed: bool,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a [u8]) -> Option<NameAddr<'a>> {
        let v = trim(v);
        if v.is_empty() {
            return None;
        }
        let (display, after_display) = if v[0] == b'"' {
            let end = quoted_end(v)?;
            (Some(&v[..end]), trim(&v[end..]))
        } else if let Some(lt) = memchr::memchr(b'<', v) {
            let d = trim(&v[..lt]);
            // display-name = *(token LWS): no separators such as ',' or '"' unquoted.
            if !d.iter().all(|&b| CLASS[b as usize] & (TOKEN | WS) != 0) {
                return None;
            }
            (if d.is_empty() { None } else { Some(d) }, &v[lt..])
        } else {
            (None, v)
        };
        if let Some(rest) = after_display.strip_prefix(b"<") {
            let gt = memchr::memchr(b'>', rest)?;
            let uri = &rest[..gt];
            // No LWS inside the brackets (RFC 4475 badaspec).
            if uri.is_empty() || any_class(uri, BAD_IN_ANGLE) || memchr::memchr(b':', uri).is_none()
            {
                return None;
            }
            let tail = trim(&rest[gt + 1..]);
            let params = match tail {
                [] => tail,
                [b';', p @ ..] => p,
                _ => return None,
            };
            return Some(NameAddr {
                display,
                uri,
                params,
                bracketed: true,
            });
        }
        if display.is_some() {
            return None;
        }
        // addr-spec: the URI ends at the first ';' (what follows are header parameters), and
        // must not hold ',', '?' or whitespace (RFC 3261 §20: those need the <> form).
        let (uri, params) = match memchr::memchr(b';', v) {
            Some(p) => (trim(&v[..p]), &v[p + 1..]),
            None => (v, &v[v.len()..]),
        };
        if uri.is_empty() || memchr::memchr(b':', uri).is_none() || any_class(uri, BAD_BARE_URI) {
            return None;
        }
        Some(NameAddr {
            display,
            uri,
            params,
            bracketed: false,
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Param<'a>> {
        find_param(self.params, name)
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param(b"tag").and_then(|p| p.value)
    }

    /// Contact `expires` parameter (RFC 3261 §20.10).
    pub fn expires(&self) -> Option<u32> {
        let v = self.param(b"expires")?.value?;
        super::msg::parse_u64(unquote(v), 10).map(|n| n.min(u32::MAX as u64) as u32)
    }

    /// The host of a sip/sips/tel URI (userinfo and parameters stripped).
    pub fn uri_host(&self) -> &'a [u8] {
        uri_host(self.uri)
    }
}

/// What follows the userinfo of a URI (the text after `scheme:`): from the host on.
/// A raw '@' cannot appear in userinfo (it must be escaped), so the first one ends it.
fn uri_hostport_and_rest(after_scheme: &[u8]) -> &[u8] {
    match after_scheme.iter().position(|&b| b == b'@') {
        Some(at) => &after_scheme[at + 1..],
        None => after_scheme,
    }
}

/// The `host[:port]` part of a SIP URI: after `scheme:` and `user@`, before `;` or `?`.
pub fn uri_hostport(uri: &[u8]) -> &[u8] {
    let after_scheme = match uri.iter().position(|&b| b == b':') {
        Some(c) => &uri[c + 1..],
        None => uri,
    };
    let hp = uri_hostport_and_rest(after_scheme);
    let end = hp
        .iter()
        .position(|&b| b == b';' || b == b'?')
        .unwrap_or(hp.len());
    &hp[..end]
}

pub fn uri_host(uri: &[u8]) -> &[u8] {
    let hp = uri_hostport(uri);
    match split_host_port(hp) {
        Some((h, _)) => h,
        None => hp,
    }
}

/// Digest credentials or challenge (RFC 2617 §3.2.1/§3.2.2, RFC 3310, TS 24.229 §7.2A):
/// `Digest name=value, name="value", ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest<'a> {
    /// The text after the scheme.
    pub params: &'a [u8],
}

impl<'a> Digest<'a> {
    /// `Some` if the value's scheme is Digest.
    pub fn parse(v: &'a [u8]) -> Option<Digest<'a>> {
        let v = trim(v);
        let sp = v.iter().position(|&b| is_ws(b)).unwrap_or(v.len());
        if !v[..sp].eq_ignore_ascii_case(b"Digest") {
            return None;
        }
        Some(Digest { params: &v[sp..] })
    }

    /// Each `name=value` item, in order (value raw, quotes kept).
    pub fn items(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        ListIter::new(self.params).map(split_param)
    }

    /// A parameter's value with quotes removed.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.items()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .and_then(|p| p.value)
            .map(unquote)
    }

    pub fn username(&self) -> Option<&'a [u8]> {
        self.get(b"username")
    }
    pub fn realm(&self) -> Option<&'a [u8]> {
        self.get(b"realm")
    }
    pub fn nonce(&self) -> Option<&'a [u8]> {
        self.get(b"nonce")
    }
    pub fn uri(&self) -> Option<&'a [u8]> {
        self.get(b"uri")
    }
    pub fn response(&self) -> Option<&'a [u8]> {
        self.get(b"response")
    }
    pub fn algorithm(&self) -> Option<&'a [u8]> {
        self.get(b"algorithm")
    }
    pub fn qop(&self) -> Option<&'a [u8]> {
        self.get(b"qop")
    }
    /// TS 24.229 §7.2A.1: `ck="<32 hex digits>"` in a 401 from the S-CSCF.
    pub fn ck(&self) -> Option<&'a [u8]> {
        self.get(b"ck")
    }
    pub fn ik(&self) -> Option<&'a [u8]> {
        self.get(b"ik")
    }
    /// TS 24.229 §7.2A.2 (accepted quoted or not).
    pub fn integrity_protected(&self) -> Option<&'a [u8]> {
        self.get(b"integrity-protected")
    }
}

/// Decode 32 hex digits (either case) into 16 bytes.
pub fn hex16(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (s[2 * i] as char).to_digit(16)?;
        let lo = (s[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The integrity algorithms of TS 33.203 Annex H (`alg=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    HmacMd5_96,
    HmacSha1_96,
    AesGmac,
    Null,
}

impl Alg {
    pub const ALL: [Alg; 4] = [Alg::HmacMd5_96, Alg::HmacSha1_96, Alg::AesGmac, Alg::Null];

    pub fn from_token(t: &[u8]) -> Option<Alg> {
        Alg::ALL
            .into_iter()
            .find(|a| t.eq_ignore_ascii_case(a.as_str().as_bytes()))
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HmacMd5_96 => "hmac-md5-96",
            Alg::HmacSha1_96 => "hmac-sha-1-96",
            Alg::AesGmac => "aes-gmac",
            Alg::Null => "null",
        }
    }
}

/// The encryption algorithms of TS 33.203 Annex H (`ealg=`; absent means null).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ealg {
    Null,
    AesCbc,
    DesEde3Cbc,
    AesGcm,
}

impl Ealg {
    pub const ALL: [Ealg; 4] = [Ealg::Null, Ealg::AesCbc, Ealg::DesEde3Cbc, Ealg::AesGcm];

    pub fn from_token(t: &[u8]) -> Option<Ealg> {
        Ealg::ALL
            .into_iter()
            .find(|e| t.eq_ignore_ascii_case(e.as_str().as_bytes()))
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Ealg::Null => "null",
            Ealg::AesCbc => "aes-cbc",
            Ealg::DesEde3Cbc => "des-ede3-cbc",
            Ealg::AesGcm => "aes-gcm",
        }
    }
}

/// One sec-agree mechanism (RFC 3329 §2.2): `ipsec-3gpp;alg=...;spi-c=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecMechanism<'a> {
    pub raw: &'a [u8],
    pub name: &'a [u8],
    /// Text after the first `;`.
    pub params: &'a [u8],
}

/// Why an `ipsec-3gpp` offer cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecError {
    NotIpsec3gpp,
    MissingParam(&'static str),
    BadParam(&'static str),
    UnknownAlg,
    UnknownEalg,
    /// `prot` other than esp, or `mod` other than trans (TS 33.203 Annex H).
    Unsupported,
}

/// A parsed `ipsec-3gpp` mechanism with the defaults of TS 33.203 Annex H applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpsecOffer {
    pub alg: Alg,
    pub ealg: Ealg,
    pub spi_c: u32,
    pub spi_s: u32,
    pub port_c: u16,
    pub port_s: u16,
    /// q in thousandths (RFC 3329 §2.2), if given.
    pub q: Option<u16>,
}

impl<'a> SecMechanism<'a> {
    pub fn parse(v: &'a [u8]) -> Option<SecMechanism<'a>> {
        let raw = trim(v);
        let (name, params) = match memchr::memchr(b';', raw) {
            Some(p) => (trim(&raw[..p]), &raw[p + 1..]),
            None => (raw, &raw[raw.len()..]),
        };
        is_token(name).then_some(SecMechanism { raw, name, params })
    }

    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
            .and_then(|p| p.value)
            .map(unquote)
    }

    pub fn is_ipsec_3gpp(&self) -> bool {
        self.name.eq_ignore_ascii_case(b"ipsec-3gpp")
    }

    /// Parse as an ipsec-3gpp offer: alg mandatory, ealg default null, prot default esp,
    /// mod default trans (TS 33.203 Annex H); SPIs are full u32 (they do exceed 2^31).
    pub fn ipsec(&self) -> Result<IpsecOffer, SecError> {
        if !self.is_ipsec_3gpp() {
            return Err(SecError::NotIpsec3gpp);
        }
        fn num(v: Option<&[u8]>, name: &'static str, max: u64) -> Result<u64, SecError> {
            let v = v.ok_or(SecError::MissingParam(name))?;
            match super::msg::parse_u64(unquote(v), 10) {
                Some(n) if n <= max => Ok(n),
                _ => Err(SecError::BadParam(name)),
            }
        }
        // One pass over the parameters.
        let (mut alg, mut ealg, mut q) = (None, None, None);
        let (mut spi_c, mut spi_s, mut port_c, mut port_s) = (None, None, None, None);
        for p in ParamIter::new(self.params) {
            let v = p.value.map(unquote);
            let is = |n: &[u8]| p.name.eq_ignore_ascii_case(n);
            if is(b"alg") {
                alg = v;
            } else if is(b"ealg") {
                ealg = v;
            } else if is(b"spi-c") {
                spi_c = v;
            } else if is(b"spi-s") {
                spi_s = v;
            } else if is(b"port-c") {
                port_c = v;
            } else if is(b"port-s") {
                port_s = v;
            } else if is(b"q") {
                q = v;
            } else if is(b"prot") {
                if !v.is_some_and(|v| v.eq_ignore_ascii_case(b"esp")) {
                    return Err(SecError::Unsupported);
                }
            } else if is(b"mod") && !v.is_some_and(|v| v.eq_ignore_ascii_case(b"trans")) {
                return Err(SecError::Unsupported);
            }
        }
        let alg = Alg::from_token(alg.ok_or(SecError::MissingParam("alg"))?)
            .ok_or(SecError::UnknownAlg)?;
        let ealg = match ealg {
            Some(e) => Ealg::from_token(e).ok_or(SecError::UnknownEalg)?,
            None => Ealg::Null,
        };
        let q = match q {
            Some(q) => Some(parse_qvalue(q).ok_or(SecError::BadParam("q"))?),
            None => None,
        };
        Ok(IpsecOffer {
            alg,
            ealg,
            spi_c: num(spi_c, "spi-c", u32::MAX as u64)? as u32,
            spi_s: num(spi_s, "spi-s", u32::MAX as u64)? as u32,
            port_c: num(port_c, "port-c", u16::MAX as u64)? as u16,
            port_s: num(port_s, "port-s", u16::MAX as u64)? as u16,
            q,
        })
    }

    /// RFC 3329 §2.3.1 comparison of two mechanisms as parameter sets: same name, same
    /// parameters and values, regardless of order, case and whitespace.
    pub fn same_as(&self, other: &SecMechanism<'_>) -> bool {
        match (ParamSet::of(self), ParamSet::of(other)) {
            (Some(a), Some(b)) => a.same_as(&b),
            _ => self.same_as_slow(other),
        }
    }

    /// [`SecMechanism::same_as`] re-parsing the parameters for every lookup: for mechanisms
    /// with more parameters than a [`ParamSet`] holds.
    fn same_as_slow(&self, other: &SecMechanism<'_>) -> bool {
        if !self.name.eq_ignore_ascii_case(other.name) {
            return false;
        }
        let covers = |a: &SecMechanism<'_>, b: &SecMechanism<'_>| {
            ParamIter::new(a.params).all(|p| {
                let mut found =
                    ParamIter::new(b.params).filter(|q| q.name.eq_ignore_ascii_case(p.name));
                match found.next() {
                    Some(q) => {
                        let pv = p.value.map(unquote).unwrap_or(b"");
                        let qv = q.value.map(unquote).unwrap_or(b"");
                        pv.eq_ignore_ascii_case(qv) && found.next().is_none()
                    }
                    None => false,
                }
            })
        };
        covers(self, other) && covers(other, self)
    }
}

/// A mechanism's name and parameters, parsed once (values unquoted), for comparing mechanism
/// lists (RFC 3329 §2.3.1) without re-parsing each parameter list per lookup: the protected
/// REGISTER's Security-Verify and Security-Client checks were ~100k instructions a registration.
#[derive(Clone, Copy, Debug)]
pub struct ParamSet<'a> {
    name: &'a [u8],
    n: usize,
    params: [(&'a [u8], &'a [u8]); ParamSet::MAX],
}

impl<'a> ParamSet<'a> {
    /// ipsec-3gpp carries 7–9 parameters.
    pub const MAX: usize = 16;

    /// `None` if `m` has more than [`ParamSet::MAX`] parameters.
    pub fn of(m: &SecMechanism<'a>) -> Option<ParamSet<'a>> {
        let mut set = ParamSet {
            name: m.name,
            n: 0,
            params: [(&[][..], &[][..]); ParamSet::MAX],
        };
        for p in ParamIter::new(m.params) {
            let slot = set.params.get_mut(set.n)?;
            *slot = (p.name, p.value.map(unquote).unwrap_or(b""));
            set.n += 1;
        }
        Some(set)
    }

    fn params(&self) -> &[(&'a [u8], &'a [u8])] {
        &self.params[..self.n]
    }

    /// Same name; every parameter of each is in the other exactly once with the same value
    /// (case-insensitive, any order).
    pub fn same_as(&self, other: &ParamSet<'_>) -> bool {
        fn covers(a: &[(&[u8], &[u8])], b: &[(&[u8], &[u8])]) -> bool {
            a.iter().all(|(k, v)| {
                let mut found = b.iter().filter(|(q, _)| q.eq_ignore_ascii_case(k));
                match found.next() {
                    Some((_, qv)) => qv.eq_ignore_ascii_case(v) && found.next().is_none(),
                    None => false,
                }
            })
        }
        self.name.eq_ignore_ascii_case(other.name)
            && self.n == other.n
            && covers(self.params(), other.params())
            && covers(other.params(), self.params())
    }
}

/// qvalue (RFC 3261 §25.1) → thousandths.
fn parse_qvalue(q: &[u8]) -> Option<u16> {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(d) => (&q[..d], &q[d + 1..]),
        None => (q, &q[q.len()..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u16 = match int[0] {
        b'0' => 0,
        b'1' => 1000,
        _ => return None,
    };
    let mut scale = 100;
    for &d in frac {
        v += (d - b'0') as u16 * scale;
        scale /= 10;
    }
    (v <= 1000).then_some(v)
}

/// Every mechanism of a Security-Client / -Server / -Verify value.
pub fn mechanisms(value: &[u8]) -> impl Iterator<Item = SecMechanism<'_>> {
    ListIter::new(value).filter_map(SecMechanism::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed-once comparison agrees with the re-parsing one on the cases RFC 3329 §2.3.1
    /// cares about, and a mechanism with more parameters than a ParamSet holds still compares.
    #[test]
    fn param_set_comparison_matches_the_slow_one() {
        let base = "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=6";
        let long: String = (0..20).map(|i| format!(";x{i}={i}")).collect();
        let cases = [
            (
                base,
                "IPSEC-3GPP; port-s=6 ;spi-c=1;ALG=HMAC-SHA-1-96;ealg=aes-cbc;spi-s=2;port-c=5",
                true,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=7",
                false,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5",
                false,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=6;q=0.1",
                false,
            ),
            ("ipsec-3gpp;a=1;a=1", "ipsec-3gpp;a=1;b=2", false),
            ("ipsec-3gpp;alg=\"x\"", "ipsec-3gpp;alg=x", true),
            ("tls;alg=x", "ipsec-3gpp;alg=x", false),
        ];
        let long_a = format!("ipsec-3gpp{long}");
        let long_b = format!("ipsec-3gpp{long};y=1");
        for (a, b, same) in cases.into_iter().chain([
            (long_a.as_str(), long_a.as_str(), true),
            (long_a.as_str(), long_b.as_str(), false),
        ]) {
            let (ma, mb) = (
                SecMechanism::parse(a.as_bytes()).unwrap(),
                SecMechanism::parse(b.as_bytes()).unwrap(),
            );
            assert_eq!(ma.same_as(&mb), same, "{a} vs {b}");
            assert_eq!(mb.same_as(&ma), same, "{b} vs {a}");
            assert_eq!(ma.same_as_slow(&mb), same, "slow: {a} vs {b}");
        }
    }

    #[test]
    fn via_forms() {
        let v = Via::parse(b"SIP / 2.0 / UDP  [2001:db8::6]:5060 ; branch=z9hG4bKx;rport").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.host, b"[2001:db8::6]");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some(&b"z9hG4bKx"[..]));
        assert_eq!(v.rport(), Some(None));
        assert!(Via::parse(b"SIP/2.0/UDP").is_none());
        assert!(Via::parse(b"SIP/3.0/UDP host").is_none());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(br#""A, B" <sip:a@b.c;lr>;tag=x"#).unwrap();
        assert_eq!(n.uri, b"sip:a@b.c;lr");
        assert_eq!(n.tag(), Some(&b"x"[..]));
        let n = NameAddr::parse(b"sip:a@b.c;tag=1").unwrap();
        assert_eq!(n.uri, b"sip:a@b.c");
        assert!(NameAddr::parse(b"Bell, Alexander <sip:a@b>").is_none());
        assert!(NameAddr::parse(b"\"unterminated <sip:a@b>").is_none());
        assert!(NameAddr::parse(b"sip:a@b?Route=x").is_none());
        assert!(NameAddr::parse(b"<sip: a@b>").is_none());
    }

    #[test]
    fn sec_mechanism() {
        let m = SecMechanism::parse(b"ipsec-3gpp; alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=4294967295;spi-s=2177074695;port-c=7004;port-s=7005;q=0.1").unwrap();
        let o = m.ipsec().unwrap();
        assert_eq!(o.spi_c, u32::MAX);
        assert_eq!(o.spi_s, 2177074695);
        assert_eq!(o.alg, Alg::HmacSha1_96);
        assert_eq!(o.ealg, Ealg::AesCbc);
        assert_eq!(o.q, Some(100));
        let a = SecMechanism::parse(b"ipsec-3gpp;spi-c=1;ALG=hmac-md5-96").unwrap();
        let b = SecMechanism::parse(b"IPSEC-3gpp; alg = HMAC-MD5-96 ; spi-c=1").unwrap();
        assert!(a.same_as(&b));
        let c = SecMechanism::parse(b"ipsec-3gpp;spi-c=2;alg=hmac-md5-96").unwrap();
        assert!(!a.same_as(&c));
        let d = SecMechanism::parse(b"ipsec-3gpp;spi-c=1;alg=hmac-md5-96;ealg=null").unwrap();
        assert!(!a.same_as(&d));
    }

    #[test]
    fn digest_params() {
        let d = Digest::parse(br#"Digest realm="r", nonce="n=", algorithm=AKAv1-MD5, ck="00112233445566778899aabbccddeeff", ik="00112233445566778899AABBCCDDEEFF", qop="auth,auth-int""#).unwrap();
        assert_eq!(d.realm(), Some(&b"r"[..]));
        assert_eq!(d.qop(), Some(&b"auth,auth-int"[..]));
        assert_eq!(hex16(d.ck().unwrap()), hex16(d.ik().unwrap()));
        assert!(Digest::parse(b"Basic abc").is_none());
    }
}
