//! ESP transforms written once over [`CryptoBackend`]: what is encrypted and what the ICV covers
//! for each suite. Input is always the ESP packet `SPI ‖ Seq ‖ IV ‖ body ‖ ICV` (RFC 4303 §2).
//!
//! - hmac-*-96 (+ null / aes-cbc / des-ede3-cbc): the body is CBC-encrypted with the IV in the
//!   packet, then the ICV = first 96 bits of HMAC over SPI…end of body (RFC 2403/2404 §2,
//!   RFC 4303 §2.8). Inbound the ICV is checked first, in constant time (RFC 4303 §3.4.4), and
//!   only then is the body decrypted.
//! - aes-gcm (RFC 4106 §3–§5): nonce = salt ‖ IV, AAD = SPI ‖ Seq, 16-byte tag.
//! - aes-gmac (RFC 4543 §3): nonce = salt ‖ IV, AAD = SPI…end of body (IV included), empty
//!   plaintext, 16-byte tag.
//!
//! For GCM the tag check and decryption are one AEAD call; on a tag failure the body may hold
//! garbage (aws-lc decrypts while hashing), which callers never see because the packet is dropped.

use super::alg::{EncAlg, IntegAlg, Suite};
#[cfg(feature = "aws-lc")]
use super::backend::awslc::AwsLc;
use super::backend::rustcrypto::RustCrypto;
use super::backend::{BackendKind, CryptoBackend};
use super::error::EspError;
use super::keys::EspKeys;
use subtle::ConstantTimeEq;

pub(crate) enum Xform<B: CryptoBackend> {
    Hmac { cbc: Option<B::Cbc>, mac: B::Mac },
    Gcm { key: B::Aead, salt: [u8; 4] },
    Gmac { key: B::Aead, salt: [u8; 4] },
}

#[inline]
fn nonce(salt: &[u8; 4], iv: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(salt);
    n[4..].copy_from_slice(&iv[..8]);
    n
}

fn need_len(k: &[u8], n: usize) -> Result<(), EspError> {
    if k.len() == n {
        Ok(())
    } else {
        Err(EspError::BadKeyLength)
    }
}

impl<B: CryptoBackend> Xform<B> {
    pub(crate) fn new(suite: Suite, keys: &EspKeys) -> Result<Self, EspError> {
        match (suite.integ(), suite.enc()) {
            (IntegAlg::Null, EncAlg::AesGcm) => {
                need_len(keys.enc_key(), 16)?;
                Ok(Xform::Gcm {
                    key: B::aead_new(keys.enc_key())?,
                    salt: keys.salt(),
                })
            }
            (IntegAlg::AesGmac, EncAlg::Null) => {
                need_len(keys.auth_key(), 16)?;
                Ok(Xform::Gmac {
                    key: B::aead_new(keys.auth_key())?,
                    salt: keys.salt(),
                })
            }
            (i, e) => {
                let cbc = match e {
                    EncAlg::Null => {
                        need_len(keys.enc_key(), 0)?;
                        None
                    }
                    EncAlg::AesCbc => {
                        need_len(keys.enc_key(), 16)?;
                        Some(B::cbc_new(e, keys.enc_key())?)
                    }
                    EncAlg::DesEde3Cbc => {
                        need_len(keys.enc_key(), 24)?;
                        Some(B::cbc_new(e, keys.enc_key())?)
                    }
                    EncAlg::AesGcm => return Err(EspError::UnsupportedCombination),
                };
                match i {
                    IntegAlg::HmacMd5_96 => need_len(keys.auth_key(), 16)?,
                    IntegAlg::HmacSha1_96 => need_len(keys.auth_key(), 20)?,
                    _ => return Err(EspError::UnsupportedCombination),
                }
                Ok(Xform::Hmac {
                    cbc,
                    mac: B::mac_new(i, keys.auth_key())?,
                })
            }
        }
    }

    /// Encrypts the body and writes the ICV. The caller has laid out SPI, Seq, IV, body
    /// (payload ‖ padding ‖ pad length ‖ next header) and `icv_len` bytes of room.
    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        iv_len: usize,
        icv_len: usize,
    ) -> Result<(), EspError> {
        let ct_end = esp.len().checked_sub(icv_len).ok_or(EspError::Truncated)?;
        if ct_end < 8 + iv_len {
            return Err(EspError::Truncated);
        }
        match self {
            Xform::Hmac { cbc, mac } => {
                if let Some(c) = cbc {
                    let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
                    B::cbc_encrypt(c, &head[8..], body)?;
                }
                let mut full = [0u8; 20];
                let n = B::mac(mac, &esp[..ct_end], &mut full)?;
                if n < icv_len {
                    return Err(EspError::Crypto);
                }
                esp[ct_end..].copy_from_slice(&full[..icv_len]);
            }
            Xform::Gcm { key, salt } => {
                let n = nonce(salt, &esp[8..16]);
                let (head, rest) = esp.split_at_mut(8 + iv_len);
                let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
                let tag = B::aead_seal(key, &n, &head[..8], body)?;
                icv.copy_from_slice(&tag);
            }
            Xform::Gmac { key, salt } => {
                let n = nonce(salt, &esp[8..16]);
                let (aad, icv) = esp.split_at_mut(ct_end);
                let tag = B::aead_seal(key, &n, aad, &mut [])?;
                icv.copy_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// Verifies the ICV (constant time), then decrypts the body in place.
    pub(crate) fn open(
        &self,
        esp: &mut [u8],
        iv_len: usize,
        icv_len: usize,
    ) -> Result<(), EspError> {
        let ct_end = esp.len().checked_sub(icv_len).ok_or(EspError::Truncated)?;
        if ct_end < 8 + iv_len {
            return Err(EspError::Truncated);
        }
        match self {
            Xform::Hmac { cbc, mac } => {
                let mut full = [0u8; 20];
                let n = B::mac(mac, &esp[..ct_end], &mut full)?;
                if n < icv_len || full[..icv_len].ct_eq(&esp[ct_end..]).unwrap_u8() != 1 {
                    return Err(EspError::IcvMismatch);
                }
                if let Some(c) = cbc {
                    let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
                    B::cbc_decrypt(c, &head[8..], body)?;
                }
            }
            Xform::Gcm { key, salt } => {
                let n = nonce(salt, &esp[8..16]);
                let (head, rest) = esp.split_at_mut(8 + iv_len);
                let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
                let tag: &[u8; 16] = (&*icv).try_into().map_err(|_| EspError::Truncated)?;
                B::aead_open(key, &n, &head[..8], body, tag)?;
            }
            Xform::Gmac { key, salt } => {
                let n = nonce(salt, &esp[8..16]);
                let (aad, icv) = esp.split_at(ct_end);
                let tag: &[u8; 16] = icv.try_into().map_err(|_| EspError::Truncated)?;
                B::aead_open(key, &n, aad, &mut [], tag)?;
            }
        }
        Ok(())
    }
}

/// An [`Xform`] for whichever backend the SA was built with (static dispatch).
#[allow(clippy::large_enum_variant)] // built once per SA; boxing would add a pointer chase per packet
pub(crate) enum AnyXform {
    Rc(Xform<RustCrypto>),
    #[cfg(feature = "aws-lc")]
    Aws(Xform<AwsLc>),
}

impl AnyXform {
    pub(crate) fn new(kind: BackendKind, suite: Suite, keys: &EspKeys) -> Result<Self, EspError> {
        Ok(match kind {
            BackendKind::RustCrypto => AnyXform::Rc(Xform::new(suite, keys)?),
            #[cfg(feature = "aws-lc")]
            BackendKind::AwsLc => AnyXform::Aws(Xform::new(suite, keys)?),
        })
    }

    #[inline]
    pub(crate) fn seal(
        &self,
        esp: &mut [u8],
        iv_len: usize,
        icv_len: usize,
    ) -> Result<(), EspError> {
        match self {
            AnyXform::Rc(x) => x.seal(esp, iv_len, icv_len),
            #[cfg(feature = "aws-lc")]
            AnyXform::Aws(x) => x.seal(esp, iv_len, icv_len),
        }
    }

    #[inline]
    pub(crate) fn open(
        &self,
        esp: &mut [u8],
        iv_len: usize,
        icv_len: usize,
    ) -> Result<(), EspError> {
        match self {
            AnyXform::Rc(x) => x.open(esp, iv_len, icv_len),
            #[cfg(feature = "aws-lc")]
            AnyXform::Aws(x) => x.open(esp, iv_len, icv_len),
        }
    }
}
