//! name-addr / addr-spec (RFC 3261 §20.10, §25.1): From, To, Contact, Route, Record-Route,
//! Path, Service-Route, P-Associated-URI, P-Asserted-Identity, P-Preferred-Identity.

use super::uri::uri_host;
use crate::sip::lex::{
    Param, all_token_or_ws, any_bad_bare_uri, any_bad_in_angle, find_param, parse_u64, quoted_end,
    trim, unquote,
};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
