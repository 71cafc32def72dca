//! Digest credentials and challenges: Authorization, WWW-Authenticate (RFC 2617, RFC 3310,
//! TS 24.229 §7.2A.1–2), and the hex CK/IK they carry.

use crate::sip::lex::{ListIter, Param, is_ws, split_param, trim, unquote};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_params() {
        let d = Digest::parse(br#"Digest realm="r", nonce="n=", algorithm=AKAv1-MD5, ck="00112233445566778899aabbccddeeff", ik="00112233445566778899AABBCCDDEEFF", qop="auth,auth-int""#).unwrap();
        assert_eq!(d.realm(), Some(&b"r"[..]));
        assert_eq!(d.qop(), Some(&b"auth,auth-int"[..]));
        assert_eq!(hex16(d.ck().unwrap()), hex16(d.ik().unwrap()));
        assert!(Digest::parse(b"Basic abc").is_none());
    }
}
