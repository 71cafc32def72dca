//! Via (RFC 3261 §20.42, RFC 3581 `rport`).

use super::uri::split_host_port;
use crate::sip::lex::{Param, ParamIter, find_param, is_token, is_token_char, is_ws, trim};

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
