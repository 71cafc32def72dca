//! name-addr / addr-spec (RFC 3261 §20.10, §25.1): From, To, Contact, Route, Record-Route,
//! Path, Service-Route, P-Associated-URI, P-Asserted-Identity, P-Preferred-Identity.

use super::uri::uri_host;
use crate::sip::lex::{
    Param, angle_uri_ok, bare_uri_ok, find_param, find1, is_token_or_ws, parse_u64, quoted_end,
    skip_ws, trim, unquote,
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
        // `lt`: the '<' that opens the name-addr's URI.
        let (display, lt) = match *v.first()? {
            b'<' => (None, 0),
            b'"' => {
                let end = quoted_end(v)?;
                // After a quoted display-name only `<addr-spec>` may come.
                let lt = skip_ws(v, end);
                if v.get(lt) != Some(&b'<') {
                    return None;
                }
                (Some(&v[..end]), lt)
            }
            _ => {
                // display-name = *(token LWS) before the '<': no separators such as ',' or
                // '"' unquoted. A byte that is neither, with a '<' after it, breaks that; with
                // none, the value is an addr-spec.
                let mut i = 0;
                while i < v.len() && is_token_or_ws(v[i]) {
                    i += 1;
                }
                if v.get(i) != Some(&b'<') {
                    if find1(b'<', &v[i..]).is_some() {
                        return None;
                    }
                    return Self::addr_spec(v);
                }
                let d = trim(&v[..i]);
                (if d.is_empty() { None } else { Some(d) }, i)
            }
        };
        let rest = &v[lt + 1..];
        let gt = find1(b'>', rest)?;
        let uri = &rest[..gt];
        // No LWS inside the brackets (RFC 4475 badaspec), and a scheme.
        if !angle_uri_ok(uri) {
            return None;
        }
        let i = skip_ws(rest, gt + 1);
        let params = match rest.get(i) {
            None => &rest[i..],
            Some(b';') => &rest[i + 1..],
            Some(_) => return None,
        };
        Some(NameAddr {
            display,
            uri,
            params,
            bracketed: true,
        })
    }

    /// addr-spec: the URI ends at the first ';' (what follows are header parameters), and
    /// must not hold ',', '?' or whitespace (RFC 3261 §20: those need the <> form).
    fn addr_spec(v: &'a [u8]) -> Option<NameAddr<'a>> {
        let (uri, params) = match find1(b';', v) {
            Some(p) => (trim(&v[..p]), &v[p + 1..]),
            None => (v, &v[v.len()..]),
        };
        if !bare_uri_ok(uri) {
            return None;
        }
        Some(NameAddr {
            display: None,
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
