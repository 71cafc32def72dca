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
        let branch = params_named(params)?;
        Some(Via {
            raw,
            transport,
            host,
            port,
            params,
            branch,
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

/// Whether a parameter name is `branch`, in any case: its six bytes with ASCII case folded in
/// one word (OR 0x20 turns only `A`–`Z` and `a`–`z` into a lower-case letter).
#[inline(always)]
fn is_branch_name(name: &[u8]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020;
    const BRANCH: u64 = u64::from_le_bytes(*b"branch\0\0");
    match <[u8; 6]>::try_from(name) {
        Ok(n) => {
            let [a, b, c, d, e, f] = n;
            u64::from_le_bytes([a, b, c, d, e, f, 0, 0]) | FOLD == BRANCH
        }
        Err(_) => false,
    }
}

/// Whether each parameter of a `;` run has a token name (RFC 3261 §20.42 `via-params`), the
/// run split as [`crate::sip::lex::ParamIter`] splits it (empty items skipped); one pass, the
/// names checked as they are read. `Some` with the value of the first `branch` parameter as
/// [`crate::sip::lex::find_param`] reads it (`None` within when there is none or it has no
/// value), `None` when a name is missing.
fn params_named(params: &[u8]) -> Option<Option<&[u8]>> {
    let mut s = params;
    // the first `branch` parameter seen: its value, if it has one
    let mut branch: Option<Option<&[u8]>> = None;
    loop {
        // An item: LWS, a token name, LWS, then '=' and a value, or ';', or the end. The name
        // holds no '"' or '<', so the item's end is searched for only after the '='.
        let n0 = skip_ws(s, 0);
        let mut i = n0;
        while i < s.len() && is_token_char(s[i]) {
            i += 1;
        }
        let named = i > n0;
        let is_branch = branch.is_none() && is_branch_name(&s[n0..i]);
        let i = skip_ws(s, i);
        match s.get(i) {
            None => {
                if is_branch {
                    branch = Some(None);
                }
                return Some(branch.flatten());
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
                    branch = Some(Some(trim(&rest[..p.unwrap_or(rest.len())])));
                }
                match p {
                    Some(p) => s = &rest[p + 1..],
                    None => return Some(branch.flatten()),
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
