//! The parts of a SIP URI the P-CSCF reads (RFC 3261 §19.1): the Request-URI check, and
//! `host[:port]` with IPv6 references.

use crate::sip::lex::{HOST_NAME, is_host_char, is_ws, skip_ws, span};

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
    // No `host[:port]` holds a ';', so one whose prefix ends before the end is no host-port.
    match host_port_prefix(hp)? {
        (host, port, end) if end == hp.len() => Some((host, port)),
        _ => None,
    }
}

/// `split_host_port(&s[..end])`, where `end` is the index of the first ';' in `s` (`s.len()`
/// if none), in one forward pass that finds `end` too: a Via's sent-by and the `;` parameters
/// after it. The LWS around the whole is skipped, and around a bracketed host's ':'; a host
/// name or IPv4 address ends at the first ':'.
pub(super) fn host_port_prefix(s: &[u8]) -> Option<(&[u8], Option<u16>, usize)> {
    let h0 = skip_ws(s, 0);
    let hend = if *s.get(h0)? == b'[' {
        let mut i = h0 + 1;
        loop {
            let b = *s.get(i)?;
            if b == b']' {
                break i + 1;
            }
            if !is_host_char(b) {
                return None;
            }
            i += 1;
        }
    } else {
        let i = span(s, h0, HOST_NAME);
        // a host name or address ends at ':' or at the end: LWS is allowed only when nothing
        // but LWS follows (it trails the value)
        if i == h0 || (s.get(i).is_some_and(|&b| is_ws(b)) && !at_end(s, skip_ws(s, i))) {
            return None;
        }
        i
    };
    let host = &s[h0..hend];
    let mut i = skip_ws(s, hend);
    let port = match s.get(i) {
        Some(b':') => {
            i = skip_ws(s, i + 1);
            let d0 = i;
            let mut p: u32 = 0;
            while let Some(&b) = s.get(i).filter(|b| b.is_ascii_digit()) {
                if i - d0 == 5 {
                    return None;
                }
                p = p * 10 + u32::from(b - b'0');
                i += 1;
            }
            if i == d0 {
                return None;
            }
            i = skip_ws(s, i);
            Some(u16::try_from(p).ok()?)
        }
        _ => None,
    };
    at_end(s, i).then_some((host, port, i))
}

/// Whether `s[i..]` is empty or starts with ';' (the end of a sent-by).
#[inline(always)]
fn at_end(s: &[u8], i: usize) -> bool {
    matches!(s.get(i), None | Some(b';'))
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
        (Some(x), Some(y)) => ia[..x] == ib[..y] && ia[x + 1..].eq_ignore_ascii_case(&ib[y + 1..]),
        (None, None) if scheme_a.eq_ignore_ascii_case(b"tel") => ia == ib,
        (None, None) => ia.eq_ignore_ascii_case(ib),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::same_identity;

    #[test]
    fn identities_compare_as_rfc_3261_says() {
        let same = [
            ("sip:alice@ims.example.net", "sip:alice@ims.example.net"),
            ("sip:alice@ims.example.net", "SIP:alice@IMS.Example.NET"),
            (
                "sip:alice@ims.example.net;user=phone",
                "sip:alice@ims.example.net",
            ),
            (
                "sip:+1555;npdi@ims.example.net",
                "sip:+1555;npdi@ims.example.net",
            ),
            ("tel:+15551234", "tel:+15551234;phone-context=x"),
            ("sips:bob@h", "sips:bob@h"),
        ];
        for (a, b) in same {
            assert!(same_identity(a.as_bytes(), b.as_bytes()), "{a} ~ {b}");
            assert!(same_identity(b.as_bytes(), a.as_bytes()), "{b} ~ {a}");
        }
        let other = [
            ("sip:alice@ims.example.net", "sip:Alice@ims.example.net"),
            ("sip:alice@ims.example.net", "sips:alice@ims.example.net"),
            ("sip:alice@ims.example.net", "sip:alice@ims.example.org"),
            ("sip:alice@ims.example.net", "sip:ims.example.net"),
            (
                "sip:alice@ims.example.net",
                "sip:alice@ims.example.net.evil",
            ),
            ("tel:+15551234", "tel:+15551235"),
            ("tel:+15551234", "sip:+15551234@h"),
            ("", "sip:a@b"),
            ("sip", "sip"),
            ("sip:", "sip:a@b"),
        ];
        for (a, b) in other {
            assert!(!same_identity(a.as_bytes(), b.as_bytes()), "{a} !~ {b}");
            assert!(!same_identity(b.as_bytes(), a.as_bytes()), "{b} !~ {a}");
        }
    }
}
