//! aws-lc-rs backend: AES-128-GCM via `aead::LessSafeKey`, AES-128-CBC and 3DES-EDE3-CBC via the
//! `cipher` module (`legacy-des` feature). HMAC is RustCrypto's pre-keyed state for both
//! hmac-sha-1-96 and hmac-md5-96: aws-lc-rs has no HMAC-MD5, and its HMAC-SHA-1 measured slower
//! than RustCrypto's SHA-NI path at every size (bench/README.md, crypto table).

// 3DES is deprecated in aws-lc-rs, but des-ede3-cbc is one of the TS 33.203 Annex I algorithms.
#![allow(deprecated)]

use super::CryptoBackend;
use super::rustcrypto::{RcCbc, RcMac, RustCrypto};
use crate::esp::alg::{EncAlg, IntegAlg};
use crate::esp::error::EspError;
use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_128, DES_EDE_FOR_LEGACY_USE_ONLY, DES_EDE3_FOR_LEGACY_USE_ONLY, DecryptingKey,
    DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;

/// The aws-lc-rs backend.
pub(crate) struct AwsLc;

/// Expanded CBC keys (aws-lc `AES_KEY` / `DES_key_schedule`s, zeroised by aws-lc-rs on drop).
#[allow(clippy::large_enum_variant)] // built once per SA; boxing would add a pointer chase per packet
pub(crate) enum AwsCbc {
    Aws {
        enc: EncryptingKey,
        dec: DecryptingKey,
        block: usize,
    },
    /// aws-lc refuses 3DES keys whose subkeys repeat (SP 800-67); Annex I's CK1 ‖ CK2 ‖ CK1 is
    /// 2-key TDEA and goes to `DES_EDE`, anything aws-lc still refuses (CK1 = CK2) to RustCrypto.
    Rc(RcCbc),
}

impl CryptoBackend for AwsLc {
    type Aead = LessSafeKey;
    type Cbc = AwsCbc;
    type Mac = RcMac;

    fn aead_new(key: &[u8]) -> Result<Self::Aead, EspError> {
        let k = UnboundKey::new(&AES_128_GCM, key).map_err(|_| EspError::BadKeyLength)?;
        Ok(LessSafeKey::new(k))
    }

    fn aead_seal(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; 16], EspError> {
        let tag = k
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), data)
            .map_err(|_| EspError::Crypto)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    fn aead_open(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), EspError> {
        k.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            data,
        )
        .map(|_| ())
        .map_err(|_| EspError::IcvMismatch)
    }

    fn cbc_new(alg: EncAlg, key: &[u8]) -> Result<Self::Cbc, EspError> {
        let orig = key;
        let (a, block, key) = match alg {
            EncAlg::AesCbc => (&AES_128, 16, key),
            EncAlg::DesEde3Cbc if key.len() == 24 && key[16..] == key[..8] => {
                (&DES_EDE_FOR_LEGACY_USE_ONLY, 8, &key[..16])
            }
            EncAlg::DesEde3Cbc => (&DES_EDE3_FOR_LEGACY_USE_ONLY, 8, key),
            _ => return Err(EspError::UnsupportedCombination),
        };
        let aws = || -> Result<AwsCbc, aws_lc_rs::error::Unspecified> {
            let enc = EncryptingKey::cbc(UnboundCipherKey::new(a, key)?)?;
            let dec = DecryptingKey::cbc(UnboundCipherKey::new(a, key)?)?;
            Ok(AwsCbc::Aws { enc, dec, block })
        };
        match aws() {
            Ok(k) => Ok(k),
            Err(_) if alg == EncAlg::DesEde3Cbc => RustCrypto::cbc_new(alg, orig).map(AwsCbc::Rc),
            Err(_) => Err(EspError::BadKeyLength),
        }
    }

    fn cbc_encrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError> {
        let (enc, block) = match k {
            AwsCbc::Aws { enc, block, .. } => (enc, block),
            AwsCbc::Rc(c) => return RustCrypto::cbc_encrypt(c, iv, data),
        };
        if iv.len() != *block || !data.len().is_multiple_of(*block) {
            return Err(EspError::Misaligned);
        }
        let ctx = if *block == 16 {
            EncryptionContext::Iv128(FixedLength::try_from(iv).map_err(|_| EspError::Crypto)?)
        } else {
            EncryptionContext::Iv64(FixedLength::try_from(iv).map_err(|_| EspError::Crypto)?)
        };
        enc.less_safe_encrypt(data, ctx)
            .map(|_| ())
            .map_err(|_| EspError::Crypto)
    }

    fn cbc_decrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError> {
        let (dec, block) = match k {
            AwsCbc::Aws { dec, block, .. } => (dec, block),
            AwsCbc::Rc(c) => return RustCrypto::cbc_decrypt(c, iv, data),
        };
        if iv.len() != *block || !data.len().is_multiple_of(*block) {
            return Err(EspError::Misaligned);
        }
        let ctx = if *block == 16 {
            DecryptionContext::Iv128(FixedLength::try_from(iv).map_err(|_| EspError::Crypto)?)
        } else {
            DecryptionContext::Iv64(FixedLength::try_from(iv).map_err(|_| EspError::Crypto)?)
        };
        dec.decrypt(data, ctx)
            .map(|_| ())
            .map_err(|_| EspError::Crypto)
    }

    fn mac_new(alg: IntegAlg, key: &[u8]) -> Result<Self::Mac, EspError> {
        RustCrypto::mac_new(alg, key)
    }

    fn mac(k: &Self::Mac, data: &[u8], out: &mut [u8; 20]) -> Result<usize, EspError> {
        RustCrypto::mac(k, data, out)
    }
}
