//! Algorithm tokens of TS 33.203 (Security-Client `alg=` / `ealg=`) and the suites they form
//! (TS 33.203 Annex I). Parsing is exact and case-insensitive; anything else is
//! [`EspError::UnknownAlgorithm`].

use super::error::EspError;
use core::str::FromStr;

/// Integrity algorithm (`alg=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntegAlg {
    /// `hmac-md5-96` (RFC 2403).
    HmacMd5_96,
    /// `hmac-sha-1-96` (RFC 2404).
    HmacSha1_96,
    /// `aes-gmac` (RFC 4543, ENCR_NULL_AUTH_AES_GMAC), used with `ealg=null`.
    AesGmac,
    /// `null`: only valid with `ealg=aes-gcm` (integrity comes from the AEAD).
    Null,
}

/// Encryption algorithm (`ealg=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncAlg {
    /// `null` (RFC 2410).
    Null,
    /// `aes-cbc` (RFC 3602), AES-128.
    AesCbc,
    /// `des-ede3-cbc` (RFC 2451).
    DesEde3Cbc,
    /// `aes-gcm` (RFC 4106), AES-128, 16-byte ICV.
    AesGcm,
}

impl IntegAlg {
    /// Every integrity algorithm, in token-lookup order.
    pub const ALL: [IntegAlg; 4] = [
        IntegAlg::HmacMd5_96,
        IntegAlg::HmacSha1_96,
        IntegAlg::AesGmac,
        IntegAlg::Null,
    ];

    /// The algorithm a Security-Client/-Server `alg=` token names (exact, case-insensitive;
    /// TS 33.203 Annex H), as the sec-agree parser and the configuration read it.
    pub fn from_token(t: &[u8]) -> Option<IntegAlg> {
        IntegAlg::ALL
            .into_iter()
            .find(|a| t.eq_ignore_ascii_case(a.token().as_bytes()))
    }

    /// The Security-Client token.
    pub fn token(self) -> &'static str {
        match self {
            IntegAlg::HmacMd5_96 => "hmac-md5-96",
            IntegAlg::HmacSha1_96 => "hmac-sha-1-96",
            IntegAlg::AesGmac => "aes-gmac",
            IntegAlg::Null => "null",
        }
    }
}

impl EncAlg {
    /// Every encryption algorithm, in token-lookup order.
    pub const ALL: [EncAlg; 4] = [
        EncAlg::Null,
        EncAlg::AesCbc,
        EncAlg::DesEde3Cbc,
        EncAlg::AesGcm,
    ];

    /// The algorithm an `ealg=` token names (exact, case-insensitive; TS 33.203 Annex H).
    /// An absent `ealg` means null; that default is the caller's (it has no token).
    pub fn from_token(t: &[u8]) -> Option<EncAlg> {
        EncAlg::ALL
            .into_iter()
            .find(|e| t.eq_ignore_ascii_case(e.token().as_bytes()))
    }

    /// The Security-Client token.
    pub fn token(self) -> &'static str {
        match self {
            EncAlg::Null => "null",
            EncAlg::AesCbc => "aes-cbc",
            EncAlg::DesEde3Cbc => "des-ede3-cbc",
            EncAlg::AesGcm => "aes-gcm",
        }
    }
}

impl FromStr for IntegAlg {
    type Err = EspError;
    fn from_str(s: &str) -> Result<Self, EspError> {
        IntegAlg::from_token(s.trim().as_bytes()).ok_or(EspError::UnknownAlgorithm)
    }
}

impl FromStr for EncAlg {
    type Err = EspError;
    fn from_str(s: &str) -> Result<Self, EspError> {
        EncAlg::from_token(s.trim().as_bytes()).ok_or(EspError::UnknownAlgorithm)
    }
}

/// A valid (integrity, encryption) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Suite {
    integ: IntegAlg,
    enc: EncAlg,
}

impl Suite {
    /// Validates a pair: hmac-md5-96/hmac-sha-1-96 × null/aes-cbc/des-ede3-cbc,
    /// null + aes-gcm, aes-gmac + null (TS 33.203 Annex I).
    pub fn new(integ: IntegAlg, enc: EncAlg) -> Result<Self, EspError> {
        use EncAlg as E;
        use IntegAlg as I;
        match (integ, enc) {
            (I::HmacMd5_96 | I::HmacSha1_96, E::Null | E::AesCbc | E::DesEde3Cbc)
            | (I::Null, E::AesGcm)
            | (I::AesGmac, E::Null) => Ok(Suite { integ, enc }),
            _ => Err(EspError::UnsupportedCombination),
        }
    }

    /// Parses `alg` and `ealg` tokens (an absent `ealg` means `null`, RFC 3329 / TS 33.203).
    pub fn from_tokens(alg: &str, ealg: &str) -> Result<Self, EspError> {
        let ealg = if ealg.trim().is_empty() { "null" } else { ealg };
        Suite::new(alg.parse()?, ealg.parse()?)
    }

    /// Integrity algorithm.
    pub fn integ(self) -> IntegAlg {
        self.integ
    }

    /// Encryption algorithm.
    pub fn enc(self) -> EncAlg {
        self.enc
    }

    /// Every suite this module implements.
    pub const ALL: [Suite; 8] = [
        Suite {
            integ: IntegAlg::HmacMd5_96,
            enc: EncAlg::Null,
        },
        Suite {
            integ: IntegAlg::HmacSha1_96,
            enc: EncAlg::Null,
        },
        Suite {
            integ: IntegAlg::HmacMd5_96,
            enc: EncAlg::AesCbc,
        },
        Suite {
            integ: IntegAlg::HmacSha1_96,
            enc: EncAlg::AesCbc,
        },
        Suite {
            integ: IntegAlg::HmacMd5_96,
            enc: EncAlg::DesEde3Cbc,
        },
        Suite {
            integ: IntegAlg::HmacSha1_96,
            enc: EncAlg::DesEde3Cbc,
        },
        Suite {
            integ: IntegAlg::Null,
            enc: EncAlg::AesGcm,
        },
        Suite {
            integ: IntegAlg::AesGmac,
            enc: EncAlg::Null,
        },
    ];

    /// Bytes of IV carried after the sequence number.
    pub fn iv_len(self) -> usize {
        match self.enc {
            EncAlg::AesCbc => 16,
            EncAlg::DesEde3Cbc => 8,
            EncAlg::AesGcm => 8,
            EncAlg::Null if self.integ == IntegAlg::AesGmac => 8,
            EncAlg::Null => 0,
        }
    }

    /// Bytes of ICV at the end.
    pub fn icv_len(self) -> usize {
        match (self.integ, self.enc) {
            (_, EncAlg::AesGcm) | (IntegAlg::AesGmac, _) => 16,
            _ => 12,
        }
    }

    /// Cipher block size (1 for stream/AEAD/null).
    pub fn block_len(self) -> usize {
        match self.enc {
            EncAlg::AesCbc => 16,
            EncAlg::DesEde3Cbc => 8,
            _ => 1,
        }
    }

    /// Alignment of (payload + padding + 2): the block size, at least 4 (RFC 4303 §2.4).
    pub fn align(self) -> usize {
        self.block_len().max(4)
    }
}
