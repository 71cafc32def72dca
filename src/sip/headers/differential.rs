//! Differential tests (issue 15): the one-pass lexical primitives, `Via`, `NameAddr` and the
//! URI parts must answer exactly as the implementations they replaced (kept below, verbatim,
//! as `reference`) for every input: the same `Some`/`None` and the same sub-slices (compared
//! by position in the input, not only by content).

use super::{NameAddr, Via, cseq, split_host_port, uri_host, uri_hostport, uri_params};
use crate::sip::lex;
use proptest::prelude::*;

/// The implementations before issue 15's rewrite, verbatim (lex.rs, uri.rs, via.rs,
/// name_addr.rs, cseq.rs of main 8a24a3c), the oracle of the tests below.
#[allow(dead_code, clippy::all)]
mod reference {
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
        if host.is_empty() || !all_host_chars(host) {
            return None;
        }
        let rest = trim(rest);
        let port = if rest.is_empty() {
            None
        } else if rest[0] == b':' {
            let p = parse_u64(trim(&rest[1..]), 5)?;
            Some(u16::try_from(p).ok()?)
        } else {
            return None;
        };
        Some((host, port))
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

    /// The `;params` of a SIP URI (after host and port, before `?headers`).
    pub fn uri_params(uri: &[u8]) -> &[u8] {
        let hp = uri_hostport(uri);
        let end = (hp.as_ptr() as usize).wrapping_sub(uri.as_ptr() as usize) + hp.len();
        let rest = uri.get(end..).unwrap_or_default();
        let rest = match rest.iter().position(|&b| b == b'?') {
            Some(q) => &rest[..q],
            None => rest,
        };
        rest.strip_prefix(b";").unwrap_or(rest)
    }

    pub fn uri_host(uri: &[u8]) -> &[u8] {
        let hp = uri_hostport(uri);
        match split_host_port(hp) {
            Some((h, _)) => h,
            None => hp,
        }
    }

    /// Whether two URIs name the same identity, for matching a P-Preferred-Identity against the
    /// registered IMPUs (TS 24.229 §5.2.6.3; RFC 3261 §19.1.4): the scheme and host compare
    /// without case, the user part exactly, and the parameters and headers are not compared
    /// (identities carry none that matter, and `;user=phone` may come and go). A `tel:` URI
    /// (RFC 3966) compares its number exactly, parameters aside.
    pub fn same_identity(a: &[u8], b: &[u8]) -> bool {
        let (Some(ca), Some(cb)) = (
            a.iter().position(|&x| x == b':'),
            b.iter().position(|&x| x == b':'),
        ) else {
            return false;
        };
        let (scheme_a, rest_a) = (&a[..ca], &a[ca + 1..]);
        let (scheme_b, rest_b) = (&b[..cb], &b[cb + 1..]);
        if !scheme_a.eq_ignore_ascii_case(scheme_b) {
            return false;
        }
        let upto_params = |r: &[u8]| -> usize {
            // `;` inside userinfo (RFC 3261 user-unreserved) comes before the '@'
            let from = r.iter().position(|&x| x == b'@').map_or(0, |at| at + 1);
            from + r[from..]
                .iter()
                .position(|&x| x == b';' || x == b'?')
                .unwrap_or(r.len() - from)
        };
        let (ia, ib) = (
            &rest_a[..upto_params(rest_a)],
            &rest_b[..upto_params(rest_b)],
        );
        match (
            ia.iter().position(|&x| x == b'@'),
            ib.iter().position(|&x| x == b'@'),
        ) {
            (Some(x), Some(y)) => {
                ia[..x] == ib[..y] && ia[x + 1..].eq_ignore_ascii_case(&ib[y + 1..])
            }
            (None, None) if scheme_a.eq_ignore_ascii_case(b"tel") => ia == ib,
            (None, None) => ia.eq_ignore_ascii_case(ib),
            _ => false,
        }
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
                if !all_token_or_ws(d) {
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
                if uri.is_empty() || any_bad_in_angle(uri) || memchr::memchr(b':', uri).is_none() {
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
            if uri.is_empty() || memchr::memchr(b':', uri).is_none() || any_bad_bare_uri(uri) {
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
            parse_u64(unquote(v), 10).map(|n| n.min(u32::MAX as u64) as u32)
        }

        /// The host of a sip/sips/tel URI (userinfo and parameters stripped).
        pub fn uri_host(&self) -> &'a [u8] {
            uri_host(self.uri)
        }
    }

    /// CSeq: `1*DIGIT LWS Method` (RFC 3261 §20.16) → (number, method).
    pub fn cseq(v: &[u8]) -> Option<(u64, &[u8])> {
        let v = trim(v);
        let sp = v.iter().position(|&b| is_ws(b))?;
        let num = parse_u64(&v[..sp], 10)?;
        let method = trim(&v[sp..]);
        is_token(method).then_some((num, method))
    }
}

/// Where `sub` lies in `base` (offset, length): sub-slices compare by position.
fn at(base: &[u8], sub: &[u8]) -> (usize, usize) {
    (
        (sub.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize),
        sub.len(),
    )
}

type Span = (usize, usize);

fn param_new(base: &[u8], p: lex::Param<'_>) -> (Span, Option<Span>, Span) {
    (
        at(base, p.name),
        p.value.map(|v| at(base, v)),
        at(base, p.raw),
    )
}

fn param_old(base: &[u8], p: reference::Param<'_>) -> (Span, Option<Span>, Span) {
    (
        at(base, p.name),
        p.value.map(|v| at(base, v)),
        at(base, p.raw),
    )
}

const NAMES: &[&[u8]] = &[
    b"branch",
    b"tag",
    b"rport",
    b"received",
    b"expires",
    b"lr",
    b"",
    b"a",
    b"BRANCH",
    b"x=y",
];

/// Every lexical primitive on `s`, new against old.
fn check_lex(s: &[u8]) {
    assert_eq!(lex::trim(s), reference::trim(s));
    if s.first() == Some(&b'"') {
        assert_eq!(lex::quoted_end(s), reference::quoted_end(s), "quoted_end");
    }
    for i in 0..s.len().min(4) {
        if s[i] == b'"' {
            assert_eq!(lex::quoted_end(&s[i..]), reference::quoted_end(&s[i..]));
        }
    }
    assert_eq!(
        lex::quotes_balanced(s),
        reference::quotes_balanced(s),
        "balanced"
    );
    for sep in [b',', b';', b'"', b'<', b'=', b' ', b'>'] {
        let new: Vec<Span> = lex::split_outside(s, sep).map(|x| at(s, x)).collect();
        let old: Vec<Span> = reference::split_outside(s, sep).map(|x| at(s, x)).collect();
        assert_eq!(new, old, "split_outside {:?}", sep as char);
    }
    let new: Vec<Span> = lex::ListIter::new(s).map(|x| at(s, x)).collect();
    let old: Vec<Span> = reference::ListIter::new(s).map(|x| at(s, x)).collect();
    assert_eq!(new, old, "ListIter");
    let new: Vec<_> = lex::ParamIter::new(s).map(|p| param_new(s, p)).collect();
    let old: Vec<_> = reference::ParamIter::new(s)
        .map(|p| param_old(s, p))
        .collect();
    assert_eq!(new, old, "ParamIter");
    let t = lex::trim(s);
    assert_eq!(
        param_new(s, lex::split_param(t)),
        param_old(s, reference::split_param(t))
    );
    for name in NAMES {
        assert_eq!(
            lex::find_param(s, name).map(|p| param_new(s, p)),
            reference::find_param(s, name).map(|p| param_old(s, p)),
            "find_param {:?}",
            String::from_utf8_lossy(name)
        );
    }
    // a name taken from the input itself
    if let Some(p) = reference::ParamIter::new(s).last() {
        assert_eq!(
            lex::find_param(s, p.name).map(|p| param_new(s, p)),
            reference::find_param(s, p.name).map(|p| param_old(s, p)),
        );
    }
}

fn check_uri(s: &[u8]) {
    assert_eq!(
        split_host_port(s).map(|(h, p)| (at(s, h), p)),
        reference::split_host_port(s).map(|(h, p)| (at(s, h), p)),
        "split_host_port"
    );
    assert_eq!(at(s, uri_hostport(s)), at(s, reference::uri_hostport(s)));
    assert_eq!(at(s, uri_params(s)), at(s, reference::uri_params(s)));
    assert_eq!(at(s, uri_host(s)), at(s, reference::uri_host(s)));
    assert_eq!(
        super::request_uri_ok(s),
        reference::request_uri_ok(s),
        "request_uri_ok"
    );
    assert_eq!(
        cseq(s).map(|(n, m)| (n, at(s, m))),
        reference::cseq(s).map(|(n, m)| (n, at(s, m)))
    );
}

fn check_via(s: &[u8]) {
    let new = Via::parse(s);
    let old = reference::Via::parse(s);
    assert_eq!(
        new.map(|v| (
            at(s, v.raw),
            at(s, v.transport),
            at(s, v.host),
            v.port,
            at(s, v.params)
        )),
        old.map(|v| (
            at(s, v.raw),
            at(s, v.transport),
            at(s, v.host),
            v.port,
            at(s, v.params)
        )),
        "Via::parse"
    );
    if let (Some(n), Some(o)) = (new, old) {
        assert_eq!(n.branch().map(|x| at(s, x)), o.branch().map(|x| at(s, x)));
        assert_eq!(
            n.received().map(|x| at(s, x)),
            o.received().map(|x| at(s, x))
        );
        assert_eq!(
            n.rport().map(|r| r.map(|x| at(s, x))),
            o.rport().map(|r| r.map(|x| at(s, x)))
        );
        assert_eq!(
            n.received_or_rport,
            o.param(b"received").is_some() || o.param(b"rport").is_some(),
            "received_or_rport"
        );
    }
}

fn check_name_addr(s: &[u8]) {
    let new = NameAddr::parse(s);
    let old = reference::NameAddr::parse(s);
    assert_eq!(
        new.map(|n| (
            n.display.map(|d| at(s, d)),
            at(s, n.uri),
            at(s, n.params),
            n.bracketed
        )),
        old.map(|n| (
            n.display.map(|d| at(s, d)),
            at(s, n.uri),
            at(s, n.params),
            n.bracketed
        )),
        "NameAddr::parse"
    );
    if let (Some(n), Some(o)) = (new, old) {
        assert_eq!(n.tag().map(|x| at(s, x)), o.tag().map(|x| at(s, x)));
        assert_eq!(n.expires(), o.expires());
        assert_eq!(at(s, n.uri_host()), at(s, o.uri_host()));
    }
}

fn check_all(s: &[u8]) {
    check_lex(s);
    check_uri(s);
    check_via(s);
    check_name_addr(s);
}

/// The bytes SIP's grammar turns on, and some letters and digits.
const ALPHABET: &[u8] =
    b";,\"<>:[]=/ \t\r\n@?\\.-_+!~*%'`SIPsip2.0UDPTCPbranchz9hG4bKrport0123456789abcdefxyzABCDEF";

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![9 => prop::sample::select(ALPHABET), 1 => any::<u8>()]
}

/// Real values (Via, name-addr, host:port, CSeq) to mutate.
const SEEDS: &[&[u8]] = &[
    b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds;rport",
    b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1m2;rport=5060;received=192.0.2.7",
    b"SIP / 2.0 / UDP  [2001:db8::6]:5060 ; branch=z9hG4bKx;rport",
    b"SIP/2.0/TCP pcscf.ims.mnc001.mcc001.3gppnetwork.org;branch=z9hG4bKpc1.abc;x=\"a;b\"",
    b"SIP/2.0/UDP h;maddr=<sip:x;y>;ttl=1",
    b"sip/2.0/tls host:0;branch",
    b"  SIP/2.0/UDP\t h\r\n ;branch=z9hG4bK ; rport",
    b"<sip:alice@ims.example.net>;tag=u1",
    b"\"A, B\" <sip:a@b.c;lr>;tag=x",
    b"Alice Smith <sip:alice@10.0.0.1:5070;transport=udp>;expires=600",
    b"sip:a@b.c;tag=1",
    b"<sip:+1555;npdi@ims.example.net;user=phone>;+g.3gpp.icsi-ref=\"urn%3Aurn-7\"",
    b"\"esc \\\" q\" <tel:+15551234>;expires=\"3600\"",
    b"<sip:term@pcscf.example.net;lr>",
    b"10.0.0.1:5060",
    b"[2001:db8::1]:5060",
    b" host.example.net : 65535 ",
    b"[::1]",
    b"sip:user@host.example.net:5061;transport=tcp?Route=x",
    b"1 MESSAGE",
    b"4711 REGISTER",
];

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    Repeat(usize, usize),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), byte()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), byte()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), 1usize..12).prop_map(|(i, n)| Edit::Repeat(i, n)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(SEEDS),
        prop::collection::vec(edit(), 0..4),
    )
        .prop_map(|(seed, edits)| {
            let mut v = seed.to_vec();
            for e in edits {
                let n = v.len() + 1;
                match e {
                    Edit::Insert(i, b) => v.insert(i % n, b),
                    Edit::Delete(i) if !v.is_empty() => {
                        v.remove(i % v.len());
                    }
                    Edit::Replace(i, b) if !v.is_empty() => {
                        let l = v.len();
                        v[i % l] = b;
                    }
                    Edit::Repeat(i, k) => {
                        let a = i % n;
                        let z = (a + k).min(v.len());
                        let piece = v[a..z].to_vec();
                        v.splice(a..a, piece);
                    }
                    Edit::Cut(i) => v.truncate(i % n),
                    _ => {}
                }
            }
            v
        })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn same_as_reference_on_sip_bytes(s in prop::collection::vec(byte(), 0..96)) {
        check_all(&s);
    }

    #[test]
    fn same_as_reference_on_mutated_values(s in mutated()) {
        check_all(&s);
    }
}

#[test]
fn same_as_reference_on_seeds_and_their_cuts() {
    for seed in SEEDS {
        for a in 0..seed.len() {
            for z in a..=seed.len() {
                check_all(&seed[a..z]);
            }
        }
    }
}
