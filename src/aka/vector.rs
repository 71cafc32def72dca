//! AKA values on the wire and in memory: RES/CK/IK, AUTN, AUTS, the authentication vector and
//! the Digest-AKA nonce.
//!
//! This file owns the layouts and encodings:
//! - `AUTN = SQN ⊕ AK ‖ AMF ‖ MAC-A`, 16 bytes (TS 33.102 §6.3.2).
//! - `AUTS = SQN_MS ⊕ AK* ‖ MAC-S`, 14 bytes (TS 33.102 §6.3.3); sent base64-encoded in the
//!   `auts` Authorization parameter (RFC 3310 §3.4).
//! - `nonce = base64(RAND ‖ AUTN ‖ server-specific data)` (RFC 3310 §3.2). The decoder takes the
//!   first 32 bytes and rejects shorter nonces; trailing server data is allowed and ignored.
//!
//! [`Res`], [`Ck`] and [`Ik`] are key material: zeroised on drop, `Debug` redacted.

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::AkaError;
use super::encoding::{base64_decode, base64_decoded_max_len, base64_encode};

/// A 128-bit RAND challenge.
pub type Rand = [u8; 16];
/// A 128-bit AUTN network authentication token.
pub type Autn = [u8; 16];

/// Length of RAND ‖ AUTN.
pub const NONCE_RAW_LEN: usize = 32;
/// Length of base64(RAND ‖ AUTN): 44 characters, one `=`.
pub const NONCE_B64_LEN: usize = 44;
/// Longest nonce text accepted by [`decode_nonce`] (allows 64 bytes of server-specific data).
pub const NONCE_B64_MAX_LEN: usize = 128;
/// Length of AUTS.
pub const AUTS_LEN: usize = 14;
/// Length of base64(AUTS): 20 characters, one `=`.
pub const AUTS_B64_LEN: usize = 20;

macro_rules! secret_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// From a slice of exactly [`Self::LEN`] bytes.
            pub fn from_slice(b: &[u8]) -> Result<Self, AkaError> {
                let arr: [u8; $len] = b.try_into().map_err(|_| AkaError::InvalidLength {
                    expected: $len,
                    got: b.len(),
                })?;
                Ok(Self(arr))
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(b: [u8; $len]) -> Self {
                Self(b)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_bytes!(
    /// RES / XRES: the 64-bit f2 output; in Digest-AKAv1 it is the password (RFC 3310 §3.3).
    Res,
    8
);
secret_bytes!(
    /// CK: the 128-bit f3 cipher key.
    Ck,
    16
);
secret_bytes!(
    /// IK: the 128-bit f4 integrity key.
    Ik,
    16
);

/// AUTS, the resynchronisation token (TS 33.102 §6.3.3). Not secret: it travels in clear.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Auts([u8; AUTS_LEN]);

impl Auts {
    /// From its 14 bytes.
    pub const fn new(b: [u8; AUTS_LEN]) -> Auts {
        Auts(b)
    }

    /// From a slice of exactly 14 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Auts, AkaError> {
        let arr: [u8; AUTS_LEN] = b.try_into().map_err(|_| AkaError::InvalidLength {
            expected: AUTS_LEN,
            got: b.len(),
        })?;
        Ok(Auts(arr))
    }

    /// From the base64 text of the `auts` parameter (RFC 3310 §3.4), quotes already removed.
    pub fn from_base64(s: &str) -> Result<Auts, AkaError> {
        let mut buf = [0u8; base64_decoded_max_len(AUTS_B64_LEN)];
        if s.len() > AUTS_B64_LEN {
            return Err(AkaError::InvalidLength {
                expected: AUTS_LEN,
                got: base64_decoded_max_len(s.len()),
            });
        }
        let raw = base64_decode(s.as_bytes(), &mut buf)?;
        Auts::from_slice(raw)
    }

    /// The 14 bytes.
    pub const fn as_bytes(&self) -> &[u8; AUTS_LEN] {
        &self.0
    }

    /// `SQN_MS ⊕ AK*`, the concealed SQN.
    pub fn concealed_sqn(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        out.copy_from_slice(&self.0[0..6]);
        out
    }

    /// MAC-S.
    pub fn mac_s(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&self.0[6..14]);
        out
    }

    /// base64 text for the `auts` parameter, written into `out`.
    pub fn to_base64<'a>(&self, out: &'a mut [u8; AUTS_B64_LEN]) -> &'a str {
        // 14 bytes always fit in 20 characters.
        base64_encode(&self.0, out).unwrap_or_default()
    }
}

impl fmt::Debug for Auts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Auts(")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        f.write_str(")")
    }
}

/// An authentication vector, as the HSS hands it to the S-CSCF (TS 33.203 §6.1; the
/// Cx Multimedia-Auth-Answer SIP-Authenticate / -Authorization / CK / IK AVPs).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthVector {
    /// RAND.
    pub rand: Rand,
    /// AUTN = SQN ⊕ AK ‖ AMF ‖ MAC-A.
    pub autn: Autn,
    /// XRES, the expected response.
    pub xres: Res,
    /// CK.
    pub ck: Ck,
    /// IK.
    pub ik: Ik,
}

impl AuthVector {
    /// The Digest nonce base64(RAND ‖ AUTN), written into `out` (RFC 3310 §3.2).
    pub fn nonce<'a>(&self, out: &'a mut [u8; NONCE_B64_LEN]) -> &'a str {
        encode_nonce(&self.rand, &self.autn, out)
    }
}

impl fmt::Debug for AuthVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthVector")
            .field("rand", &Hex(&self.rand))
            .field("autn", &Hex(&self.autn))
            .finish_non_exhaustive()
    }
}

struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// base64(RAND ‖ AUTN) into `out` (RFC 3310 §3.2).
pub fn encode_nonce<'a>(rand: &Rand, autn: &Autn, out: &'a mut [u8; NONCE_B64_LEN]) -> &'a str {
    let mut raw = [0u8; NONCE_RAW_LEN];
    raw[..16].copy_from_slice(rand);
    raw[16..].copy_from_slice(autn);
    // 32 bytes always fit in 44 characters.
    base64_encode(&raw, out).unwrap_or_default()
}

/// Splits a Digest-AKA nonce (quotes already removed) into RAND and AUTN (RFC 3310 §3.2).
///
/// Errors: malformed base64 ([`AkaError::Encoding`]), fewer than 32 decoded bytes
/// ([`AkaError::NonceTooShort`]), more than [`NONCE_B64_MAX_LEN`] characters
/// ([`AkaError::NonceTooLong`]).
pub fn decode_nonce(nonce: &str) -> Result<(Rand, Autn), AkaError> {
    if nonce.len() > NONCE_B64_MAX_LEN {
        return Err(AkaError::NonceTooLong);
    }
    let mut buf = [0u8; base64_decoded_max_len(NONCE_B64_MAX_LEN)];
    let raw = base64_decode(nonce.as_bytes(), &mut buf)?;
    let (Some(rand), Some(autn)) = (raw.get(0..16), raw.get(16..32)) else {
        return Err(AkaError::NonceTooShort { len: raw.len() });
    };
    let mut r = [0u8; 16];
    let mut a = [0u8; 16];
    r.copy_from_slice(rand);
    a.copy_from_slice(autn);
    Ok((r, a))
}
