//! IMS AKA: Milenage, authentication vectors, SQN resynchronisation and Digest AKAv1-MD5.
//!
//! The P-CSCF itself only relays the challenge and takes CK/IK from the 401; this module gives
//! the **other** roles too, so that tests, a stub S-CSCF/HSS and a UE harness can run the whole
//! exchange in memory:
//!
//! | Role | Entry points |
//! |---|---|
//! | HSS / AuC | [`HssSubscriber::next_vector`], [`generate_vector`], [`HssSubscriber::resync`], [`verify_auts`] |
//! | UE / USIM | [`Usim::authenticate_nonce`], [`check_challenge`], [`digest::response_aka`], [`digest::response_auts`] |
//! | S-CSCF | [`AuthVector::nonce`], [`digest::verify_aka`] |
//!
//! Files and what each owns:
//! - `milenage.rs`: TS 35.206 f1, f1*, f2-f5, f5*, OPc; the per-subscriber AES key schedule.
//! - `sqn.rs`: the 48-bit SQN, the HSS counter (step 32, TS 33.102 Annex C.3.2) and the UE's
//!   freshness rule (strictly greater than the highest accepted SQN).
//! - `vector.rs`: RES/CK/IK (zeroised, redacted), AUTN/AUTS layouts, the vector, the nonce.
//! - `hss.rs`: vector generation and AUTS verification/resync (TS 33.102 §6.3.2, §6.3.5).
//! - `ue.rs`: the USIM checks: MAC, then freshness, then RES/CK/IK (TS 33.102 §6.3.3).
//! - `digest.rs`: RFC 3310 / RFC 2617 response computation and constant-time verification.
//! - `encoding.rs`: allocation-free base64 and hex into caller buffers.
//!
//! Contract: no function panics on any input, none allocates, and every failure is an
//! [`AkaError`]. Keys (K schedule, OPc, RES, CK, IK) are zeroised on drop and never printed by
//! `Debug`. Secret comparisons (MAC-A, MAC-S, the digest response) are constant-time.
//! RAND is always an input: this module has no random number generator.
//!
//! A full exchange (test set 1 keys):
//!
//! ```
//! use pcscf::aka::{self, digest, HssSubscriber, Milenage, Sqn, SqnGenerator, UeSqnState, Usim};
//!
//! let k = aka::hex_array::<16>("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap();
//! let opc = aka::hex_array::<16>("cd63cb71954a9f4e48a5994e37a02baf").unwrap();
//! let mut hss = HssSubscriber::new(
//!     Milenage::new(&k, &opc),
//!     SqnGenerator::with_default_step(),
//!     [0x80, 0x00],
//! );
//! let mut ue = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
//!
//! // HSS -> S-CSCF: a vector; S-CSCF -> UE: the nonce in the 401.
//! let av = hss.next_vector(&[7u8; 16]).unwrap();
//! let mut buf = [0u8; aka::NONCE_B64_LEN];
//! let nonce = av.nonce(&mut buf);
//!
//! // UE: check AUTN, get RES/CK/IK, answer the digest.
//! let got = ue.authenticate_nonce(nonce).unwrap();
//! assert_eq!(got.ck, av.ck);
//! let input = digest::DigestInput {
//!     username: b"001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
//!     realm: b"ims.mnc001.mcc001.3gppnetwork.org",
//!     nonce: nonce.as_bytes(),
//!     method: b"REGISTER",
//!     uri: b"sip:ims.mnc001.mcc001.3gppnetwork.org",
//!     qop: digest::Qop::Auth { nc: b"00000001", cnonce: b"0a4f113b" },
//! };
//! let resp = digest::response_aka(&input, &got.res);
//!
//! // S-CSCF: verify against XRES.
//! assert!(digest::verify_aka(&input, &av.xres, resp.as_bytes()).is_ok());
//! ```

#![forbid(unsafe_code)]

use core::fmt;

pub mod digest;
mod encoding;
mod hss;
mod milenage;
mod sqn;
mod ue;
mod vector;

pub use encoding::{
    EncodingError, base64_decode, base64_encode, hex_array, hex_decode, hex_encode,
};
pub use hss::{HssSubscriber, RESYNC_AMF, generate_vector, verify_auts};
pub use milenage::{Amf, KeyOutputs, Milenage};
pub use sqn::{Sqn, SqnGenerator, UeSqnState};
pub use ue::{UeAuthResult, Usim, check_challenge, compute_auts};
pub use vector::{
    AUTS_B64_LEN, AUTS_LEN, AuthVector, Autn, Auts, Ck, Ik, NONCE_B64_LEN, NONCE_B64_MAX_LEN,
    NONCE_RAW_LEN, Rand, Res, decode_nonce, encode_nonce,
};

/// Every way an AKA operation can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AkaError {
    /// Malformed base64 or hex.
    Encoding(EncodingError),
    /// The nonce decodes to fewer than 32 bytes (RAND ‖ AUTN), RFC 3310 §3.2.
    NonceTooShort {
        /// Decoded length.
        len: usize,
    },
    /// The nonce is longer than [`NONCE_B64_MAX_LEN`] characters.
    NonceTooLong,
    /// A binary value has the wrong length.
    InvalidLength {
        /// Required length in bytes.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A SQN does not fit in 48 bits.
    SqnOutOfRange,
    /// The HSS SQN counter would pass 2^48 − 1.
    SqnExhausted,
    /// UE: MAC-A in AUTN is wrong; the network is not authentic (TS 33.102 §6.3.3).
    MacFailure,
    /// UE: SQN is not fresh; send this AUTS (TS 33.102 §6.3.3, RFC 3310 §3.4).
    SyncFailure {
        /// The AUTS to send in the `auts` parameter.
        auts: Auts,
    },
    /// HSS: MAC-S in AUTS is wrong; the SQN is left unchanged (TS 33.102 §6.3.5).
    ResyncMacFailure,
    /// The received digest `response` is not 32 hex digits.
    MalformedResponse,
    /// The received digest `response` does not match.
    ResponseMismatch,
    /// A `qop` value other than "auth" or "auth-int".
    UnsupportedQop,
    /// A Digest parameter required by the chosen qop is absent.
    MissingParameter(&'static str),
}

impl fmt::Display for AkaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AkaError::Encoding(e) => write!(f, "encoding error: {e}"),
            AkaError::NonceTooShort { len } => {
                write!(f, "nonce decodes to {len} bytes, need at least 32")
            }
            AkaError::NonceTooLong => f.write_str("nonce too long"),
            AkaError::InvalidLength { expected, got } => {
                write!(f, "wrong length: expected {expected} bytes, got {got}")
            }
            AkaError::SqnOutOfRange => f.write_str("SQN does not fit in 48 bits"),
            AkaError::SqnExhausted => f.write_str("SQN counter exhausted"),
            AkaError::MacFailure => f.write_str("AUTN MAC-A mismatch (network not authentic)"),
            AkaError::SyncFailure { .. } => f.write_str("SQN not fresh (synchronisation failure)"),
            AkaError::ResyncMacFailure => f.write_str("AUTS MAC-S mismatch"),
            AkaError::MalformedResponse => f.write_str("digest response is not 32 hex digits"),
            AkaError::ResponseMismatch => f.write_str("digest response mismatch"),
            AkaError::UnsupportedQop => f.write_str("unsupported qop"),
            AkaError::MissingParameter(p) => write!(f, "missing digest parameter {p}"),
        }
    }
}

impl std::error::Error for AkaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AkaError::Encoding(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EncodingError> for AkaError {
    fn from(e: EncodingError) -> Self {
        AkaError::Encoding(e)
    }
}
