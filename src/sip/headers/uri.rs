//! The parts of a SIP URI the P-CSCF reads (RFC 3261 §19.1): the Request-URI check, and
//! `host[:port]` with IPv6 references.

use crate::sip::lex::{all_host_chars, parse_u64, trim};

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

pub fn uri_host(uri: &[u8]) -> &[u8] {
    let hp = uri_hostport(uri);
    match split_host_port(hp) {
        Some((h, _)) => h,
        None => hp,
    }
}
