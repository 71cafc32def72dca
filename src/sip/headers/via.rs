//! Via (RFC 3261 §20.42, RFC 3581 `rport`).

use super::uri::host_port_prefix;
use crate::sip::lex::{Param, find_param, is_token_char, is_ws, skip_ws, split_point, trim};

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
    /// The value of the first `branch` parameter, read as the parameters are checked (what
    /// [`Via::branch`] returns: `None` when there is none, or when it has no value).
    pub branch: Option<&'a [u8]>,
    /// Whether any parameter is named `received` or `rport` (read with the same check): a
    /// Via with neither and a sent-by that is its packet's source needs no fixing (RFC 3261
    /// §18.2.1, RFC 3581 §4).
    pub received_or_rport: bool,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a [u8]) -> Option<Via<'a>> {
        let raw = trim(v);
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, LWS allowed
        // around the slashes (RFC 4475 wsinv); read in one forward pass.
        let t0 = if raw.starts_with(b"SIP/2.0/") {
            skip_ws(raw, 8)
        } else {
            sent_protocol_lws(raw)?
        };
        let mut i = t0;
        while i < raw.len() && is_token_char(raw[i]) {
            i += 1;
        }
        // A transport, then LWS before the sent-by.
        if i == t0 || !is_ws(*raw.get(i)?) {
            return None;
        }
        let transport = &raw[t0..i];
        // The sent-by runs to the first ';' (or the end), the parameters after it.
        let after = &raw[i..];
        let (host, port, end) = host_port_prefix(after)?;
        let params = after.get(end + 1..).unwrap_or(&after[end..]);
        let (branch, received_or_rport) = params_named(params)?;
        Some(Via {
            raw,
            transport,
            host,
            port,
            params,
            branch,
            received_or_rport,
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Param<'a>> {
        find_param(self.params, name)
    }

    /// The branch parameter's value (RFC 3261 §20.42), as `param(b"branch")` finds it.
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }

    pub fn received(&self) -> Option<&'a [u8]> {
        self.param(b"received").and_then(|p| p.value)
    }

    /// `None`: no rport; `Some(None)`: rport without a value (RFC 3581 asks us to fill it).
    pub fn rport(&self) -> Option<Option<&'a [u8]>> {
        self.param(b"rport").map(|p| p.value)
    }
}

/// Where the transport starts in a sent-protocol written otherwise than `SIP/2.0/`: any case,
/// LWS around the slashes.
fn sent_protocol_lws(raw: &[u8]) -> Option<usize> {
    if !raw.get(..3)?.eq_ignore_ascii_case(b"SIP") {
        return None;
    }
    let i = skip_ws(raw, 3);
    if raw.get(i) != Some(&b'/') {
        return None;
    }
    let i = skip_ws(raw, i + 1);
    if raw.get(i..i + 3)? != b"2.0" {
        return None;
    }
    let i = skip_ws(raw, i + 3);
    if raw.get(i) != Some(&b'/') {
        return None;
    }
    Some(skip_ws(raw, i + 1))
}

/// Whether a parameter name is `lower` (lower-case letters, at most eight) in any case, in
/// one word: for a letter `l`, `b | 0x20 == l` only when `b` is `l` in either case.
#[inline(always)]
fn name_is<const N: usize>(name: &[u8], lower: &[u8; N]) -> bool {
    const { assert!(N <= 8) };
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..N].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    name.len() == N && word(name) | word(&[0x20; N]) == word(lower)
}

/// Whether each parameter of a `;` run has a token name (RFC 3261 §20.42 `via-params`), the
/// run split as [`crate::sip::lex::ParamIter`] splits it (empty items skipped); one pass, the
/// names checked as they are read. `Some` when they all have one, with the value of the first
/// `branch` parameter as [`crate::sip::lex::find_param`] reads it (`None` within when there is
/// none or it has no value) and whether any is named `received` or `rport`.
fn params_named(params: &[u8]) -> Option<(Option<&[u8]>, bool)> {
    let mut s = params;
    // the first `branch` parameter seen: its value, if it has one
    let mut branch: Option<Option<&[u8]>> = None;
    let mut received_or_rport = false;
    loop {
        // An item: LWS, a token name, LWS, then '=' and a value, or ';', or the end. The name
        // holds no '"' or '<', so the item's end is searched for only after the '='.
        let n0 = skip_ws(s, 0);
        let mut i = n0;
        while i < s.len() && is_token_char(s[i]) {
            i += 1;
        }
        let named = i > n0;
        let name = &s[n0..i];
        let mut is_branch = false;
        match name.len() {
            6 => is_branch = branch.is_none() && name_is(name, b"branch"),
            8 => received_or_rport |= name_is(name, b"received"),
            5 => received_or_rport |= name_is(name, b"rport"),
            _ => {}
        }
        let i = skip_ws(s, i);
        match s.get(i) {
            None => {
                if is_branch {
                    branch = Some(None);
                }
                return Some((branch.flatten(), received_or_rport));
            }
            Some(b';') => {
                if is_branch {
                    branch = Some(None);
                }
                s = &s[i + 1..];
            }
            Some(b'=') if named => {
                let rest = &s[i + 1..];
                let p = split_point(rest, b';');
                if is_branch {
                    // an empty value sits right after the '=', where find_param puts it
                    let v = trim(&rest[..p.unwrap_or(rest.len())]);
                    branch = Some(Some(if v.is_empty() { &rest[..0] } else { v }));
                }
                match p {
                    Some(p) => s = &rest[p + 1..],
                    None => return Some((branch.flatten(), received_or_rport)),
                }
            }
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
