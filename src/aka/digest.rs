//! HTTP Digest AKAv1-MD5 (RFC 3310 over RFC 2617): computing and verifying `response`.
//!
//! This file owns the digest arithmetic for both ends:
//! - **UE**: [`response_aka`] (password = RES), [`response_auts`] (password empty, for the
//!   resync Authorization that carries `auts`, RFC 3310 §3.4), or [`response`] with any password.
//! - **S-CSCF**: [`verify_aka`] / [`verify`] recompute the response and compare it with the
//!   received one in constant time.
//!
//! Rules implemented (section numbers of RFC 2617 unless noted):
//! - RFC 3310 §3.3: the password is **RES as raw octets** (not hex). A RES used as a hex string
//!   gives a different response; that is a known interop bug, and a test pins it.
//! - §3.2.2.2: `A1 = username ":" realm ":" password`, `HA1 = MD5(A1)` (algorithm "AKAv1-MD5"
//!   is RFC 3310's name for plain MD5 with this password; no "-sess" variant).
//! - §3.2.2.3: `A2 = method ":" digest-uri` for qop none / "auth", and
//!   `A2 = method ":" digest-uri ":" H(entity-body)` for "auth-int", with H(body) in hex.
//! - §3.2.2.1: `response = KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2)` with qop, and
//!   `KD(HA1, nonce ":" HA2)` without (RFC 2069 compatibility), `KD(s, d) = MD5(s ":" d)`.
//! - §3.2.2 / §3.1.3: every hash is written as 32 **lowercase** hex digits. A received response
//!   is accepted in either case (it is compared as 16 bytes).
//!
//! All outputs are fixed `[u8; 32]` buffers ([`HexDigest`]); nothing here allocates or panics.
//! The username, realm, nonce, uri, nc and cnonce are the unquoted parameter values exactly as
//! they appear in the Authorization header: the S-CSCF hashes what the UE sent.

use core::fmt;

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

use super::AkaError;
use super::encoding::{hex_decode, hex16};
use super::vector::Res;

/// The `algorithm` parameter value for Digest AKAv1 (RFC 3310 §3.1).
pub const ALGORITHM: &str = "AKAv1-MD5";

/// 32 lowercase hex digits of an MD5 digest.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct HexDigest([u8; 32]);

impl HexDigest {
    /// The hex text.
    pub fn as_str(&self) -> &str {
        // Always ASCII hex.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The hex text as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HexDigest({})", self.as_str())
    }
}

impl fmt::Display for HexDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The quality of protection and the values that go with it (RFC 2617 §3.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qop<'a> {
    /// No `qop` parameter (RFC 2069 compatibility).
    None,
    /// `qop=auth`.
    Auth {
        /// `nc`, 8 hex digits as sent.
        nc: &'a [u8],
        /// `cnonce`, unquoted.
        cnonce: &'a [u8],
    },
    /// `qop=auth-int`: the message body is hashed into A2.
    AuthInt {
        /// `nc`, 8 hex digits as sent.
        nc: &'a [u8],
        /// `cnonce`, unquoted.
        cnonce: &'a [u8],
        /// The SIP message body (empty for a REGISTER without one).
        body: &'a [u8],
    },
}

impl<'a> Qop<'a> {
    /// Builds a [`Qop`] from Authorization parameters: `qop` absent means [`Qop::None`];
    /// "auth" and "auth-int" (case-insensitive) need `nc` and `cnonce`
    /// ([`AkaError::MissingParameter`]); any other value is [`AkaError::UnsupportedQop`].
    pub fn from_params(
        qop: Option<&'a [u8]>,
        nc: Option<&'a [u8]>,
        cnonce: Option<&'a [u8]>,
        body: &'a [u8],
    ) -> Result<Qop<'a>, AkaError> {
        let Some(q) = qop else {
            return Ok(Qop::None);
        };
        let is_auth = q.eq_ignore_ascii_case(b"auth");
        let is_int = q.eq_ignore_ascii_case(b"auth-int");
        if !is_auth && !is_int {
            return Err(AkaError::UnsupportedQop);
        }
        let nc = nc.ok_or(AkaError::MissingParameter("nc"))?;
        let cnonce = cnonce.ok_or(AkaError::MissingParameter("cnonce"))?;
        Ok(if is_auth {
            Qop::Auth { nc, cnonce }
        } else {
            Qop::AuthInt { nc, cnonce, body }
        })
    }

    /// The `qop` token as it enters the response hash.
    pub fn token(&self) -> Option<&'static str> {
        match self {
            Qop::None => None,
            Qop::Auth { .. } => Some("auth"),
            Qop::AuthInt { .. } => Some("auth-int"),
        }
    }
}

/// The inputs of one digest computation, as they appear in the Authorization header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestInput<'a> {
    /// `username` (the IMPI).
    pub username: &'a [u8],
    /// `realm`.
    pub realm: &'a [u8],
    /// `nonce`, exactly as in the challenge.
    pub nonce: &'a [u8],
    /// The SIP method of the request (e.g. `REGISTER`).
    pub method: &'a [u8],
    /// `uri` (digest-uri).
    pub uri: &'a [u8],
    /// qop with nc/cnonce/body.
    pub qop: Qop<'a>,
}

fn md5_parts(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `HA1 = MD5(username ":" realm ":" password)` (RFC 2617 §3.2.2.2).
/// HA1 stands for the password (RES), so it and its raw hash are wiped after use.
pub fn ha1(username: &[u8], realm: &[u8], password: &[u8]) -> HexDigest {
    let raw = zeroize::Zeroizing::new(md5_parts(&[username, b":", realm, b":", password]));
    HexDigest(hex16(&raw))
}

/// `HA2 = MD5(method ":" uri)`, or `MD5(method ":" uri ":" hex(MD5(body)))` for auth-int
/// (RFC 2617 §3.2.2.3).
pub fn ha2(method: &[u8], uri: &[u8], qop: &Qop<'_>) -> HexDigest {
    let raw = match qop {
        Qop::AuthInt { body, .. } => {
            let hbody = hex16(&md5_parts(&[body]));
            md5_parts(&[method, b":", uri, b":", &hbody])
        }
        Qop::None | Qop::Auth { .. } => md5_parts(&[method, b":", uri]),
    };
    HexDigest(hex16(&raw))
}

fn response_raw(input: &DigestInput<'_>, password: &[u8]) -> [u8; 16] {
    let h1 = ha1(input.username, input.realm, password);
    let h2 = ha2(input.method, input.uri, &input.qop);
    match input.qop {
        Qop::None => md5_parts(&[h1.as_bytes(), b":", input.nonce, b":", h2.as_bytes()]),
        Qop::Auth { nc, cnonce } | Qop::AuthInt { nc, cnonce, .. } => {
            let token = input.qop.token().unwrap_or_default().as_bytes();
            md5_parts(&[
                h1.as_bytes(),
                b":",
                input.nonce,
                b":",
                nc,
                b":",
                cnonce,
                b":",
                token,
                b":",
                h2.as_bytes(),
            ])
        }
    }
}

/// The request-digest for any password (RFC 2617 §3.2.2.1).
pub fn response(input: &DigestInput<'_>, password: &[u8]) -> HexDigest {
    HexDigest(hex16(&response_raw(input, password)))
}

/// UE: the response with RES (raw octets) as the password (RFC 3310 §3.3).
pub fn response_aka(input: &DigestInput<'_>, res: &Res) -> HexDigest {
    response(input, res.as_bytes())
}

/// UE: the response sent with `auts` after a sync failure: empty password (RFC 3310 §3.4).
pub fn response_auts(input: &DigestInput<'_>) -> HexDigest {
    response(input, b"")
}

/// S-CSCF: checks a received `response` (32 hex digits, either case) for `password`.
///
/// [`AkaError::MalformedResponse`] if it is not 32 hex digits, [`AkaError::ResponseMismatch`]
/// if it is wrong. The comparison is constant-time.
pub fn verify(input: &DigestInput<'_>, password: &[u8], received: &[u8]) -> Result<(), AkaError> {
    if received.len() != 32 {
        return Err(AkaError::MalformedResponse);
    }
    let mut got = [0u8; 16];
    hex_decode(received, &mut got).map_err(|_| AkaError::MalformedResponse)?;
    let expected = response_raw(input, password);
    if bool::from(expected.ct_eq(&got)) {
        Ok(())
    } else {
        Err(AkaError::ResponseMismatch)
    }
}

/// S-CSCF: [`verify`] with XRES as the password (RFC 3310 §3.3).
pub fn verify_aka(input: &DigestInput<'_>, xres: &Res, received: &[u8]) -> Result<(), AkaError> {
    verify(input, xres.as_bytes(), received)
}
