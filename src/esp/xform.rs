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
//!
//! Key state is behind an `Arc` sized for its suite: the four SAs of a TS 33.203 set use the same
//! CK_ESP/IK_ESP (Annex I), so they share one expanded key instead of four (memory per UE).
//!
//! CBC IVs (RFC 3602 §2: unpredictable) are `E_K(seq ‖ spi ‖ "ESP")` under the SA's own CBC key,
//! the method of NIST SP 800-38A Appendix C (the forward cipher applied to a nonce under the
//! encryption key): (spi, seq) never repeats under the key, and no syscall or extra key schedule
//! is needed per SA.
//!
//! The `esp-null` cargo feature swaps every transform for [`AnyXform::Null`]: framing, sequence
//! numbers and replay checks stay, the crypto goes (the ICV is zeros and checked as zeros). It
//! exists only to tell crypto from non-crypto costs in benchmarks.

use super::alg::{EncAlg, IntegAlg, Suite};
#[cfg(feature = "aws-lc")]
use super::backend::awslc::AwsLc;
use super::backend::rustcrypto::RustCrypto;
use super::backend::{BackendKind, CryptoBackend};
use super::error::EspError;
use super::keys::EspKeys;
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub(crate) struct HmacKeys<B: CryptoBackend> {
    cbc: Option<B::Cbc>,
    mac: B::Mac,
}

pub(crate) struct AeadKeys<B: CryptoBackend> {
    key: B::Aead,
    salt: [u8; 4],
}

pub(crate) enum Xform<B: CryptoBackend> {
    Hmac(Arc<HmacKeys<B>>),
    Gcm(Arc<AeadKeys<B>>),
    Gmac(Arc<AeadKeys<B>>),
}

impl<B: CryptoBackend> Clone for Xform<B> {
    fn clone(&self) -> Self {
        match self {
            Xform::Hmac(k) => Xform::Hmac(k.clone()),
            Xform::Gcm(k) => Xform::Gcm(k.clone()),
            Xform::Gmac(k) => Xform::Gmac(k.clone()),
        }
    }
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
                Ok(Xform::Gcm(Arc::new(AeadKeys {
                    key: B::aead_new(keys.enc_key())?,
                    salt: keys.salt(),
                })))
            }
            (IntegAlg::AesGmac, EncAlg::Null) => {
                need_len(keys.auth_key(), 16)?;
                Ok(Xform::Gmac(Arc::new(AeadKeys {
                    key: B::aead_new(keys.auth_key())?,
                    salt: keys.salt(),
                })))
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
                Ok(Xform::Hmac(Arc::new(HmacKeys {
                    cbc,
                    mac: B::mac_new(i, keys.auth_key())?,
                })))
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
            Xform::Hmac(k) => {
                if let Some(c) = &k.cbc {
                    let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
                    B::cbc_encrypt(c, &head[8..], body)?;
                }
                let mut full = [0u8; 20];
                let n = B::mac(&k.mac, &esp[..ct_end], &mut full)?;
                if n < icv_len {
                    return Err(EspError::Crypto);
                }
                esp[ct_end..].copy_from_slice(&full[..icv_len]);
            }
            Xform::Gcm(k) => {
                let n = nonce(&k.salt, &esp[8..16]);
                let (head, rest) = esp.split_at_mut(8 + iv_len);
                let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
                let tag = B::aead_seal(&k.key, &n, &head[..8], body)?;
                icv.copy_from_slice(&tag);
            }
            Xform::Gmac(k) => {
                let n = nonce(&k.salt, &esp[8..16]);
                let (aad, icv) = esp.split_at_mut(ct_end);
                let tag = B::aead_seal(&k.key, &n, aad, &mut [])?;
                icv.copy_from_slice(&tag);
            }
        }
        Ok(())
    }

    /// The explicit CBC IV for (`spi`, `seq`): `E_K(seq ‖ spi ‖ "ESP\0")` (16-byte block) or
    /// `E_K(seq32 ‖ spi)` (8-byte block), as a one-block CBC encryption under a zero IV.
    /// `false` if this transform has no CBC cipher.
    pub(crate) fn fill_iv(&self, spi: u32, seq: u64, out: &mut [u8]) -> Result<bool, EspError> {
        let Xform::Hmac(k) = self else {
            return Ok(false);
        };
        let Some(c) = &k.cbc else {
            return Ok(false);
        };
        let mut block = [0u8; 16];
        let bs = out.len();
        match bs {
            16 => {
                block[..8].copy_from_slice(&seq.to_be_bytes());
                block[8..12].copy_from_slice(&spi.to_be_bytes());
                block[12..16].copy_from_slice(b"ESP\0");
            }
            8 => {
                block[..4].copy_from_slice(&(seq as u32).to_be_bytes());
                block[4..8].copy_from_slice(&spi.to_be_bytes());
            }
            _ => return Err(EspError::Crypto),
        }
        B::cbc_encrypt(c, &[0u8; 16][..bs], &mut block[..bs])?;
        out.copy_from_slice(&block[..bs]);
        Ok(true)
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
            Xform::Hmac(k) => {
                let mut full = [0u8; 20];
                let n = B::mac(&k.mac, &esp[..ct_end], &mut full)?;
                if n < icv_len || full[..icv_len].ct_eq(&esp[ct_end..]).unwrap_u8() != 1 {
                    return Err(EspError::IcvMismatch);
                }
                if let Some(c) = &k.cbc {
                    let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
                    B::cbc_decrypt(c, &head[8..], body)?;
                }
            }
            Xform::Gcm(k) => {
                let n = nonce(&k.salt, &esp[8..16]);
                let (head, rest) = esp.split_at_mut(8 + iv_len);
                let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
                let tag: &[u8; 16] = (&*icv).try_into().map_err(|_| EspError::Truncated)?;
                B::aead_open(&k.key, &n, &head[..8], body, tag)?;
            }
            Xform::Gmac(k) => {
                let n = nonce(&k.salt, &esp[8..16]);
                let (aad, icv) = esp.split_at(ct_end);
                let tag: &[u8; 16] = icv.try_into().map_err(|_| EspError::Truncated)?;
                B::aead_open(&k.key, &n, aad, &mut [], tag)?;
            }
        }
        Ok(())
    }
}

/// An [`Xform`] for whichever backend the SA was built with (static dispatch). Cloning shares
/// the key state.
#[derive(Clone)]
pub(crate) enum AnyXform {
    Rc(Xform<RustCrypto>),
    #[cfg(feature = "aws-lc")]
    Aws(Xform<AwsLc>),
    /// `esp-null` builds only: no crypto (benchmarks).
    #[cfg(feature = "esp-null")]
    Null,
}

impl AnyXform {
    pub(crate) fn new(kind: BackendKind, suite: Suite, keys: &EspKeys) -> Result<Self, EspError> {
        let x = match kind {
            BackendKind::RustCrypto => AnyXform::Rc(Xform::new(suite, keys)?),
            #[cfg(feature = "aws-lc")]
            BackendKind::AwsLc => AnyXform::Aws(Xform::new(suite, keys)?),
        };
        // (keys are still validated above, so a null build refuses what a real one refuses)
        #[cfg(feature = "esp-null")]
        let x = {
            drop(x);
            AnyXform::Null
        };
        Ok(x)
    }

    /// See [`Xform::fill_iv`].
    #[inline]
    pub(crate) fn fill_iv(&self, spi: u32, seq: u64, out: &mut [u8]) -> Result<bool, EspError> {
        match self {
            AnyXform::Rc(x) => x.fill_iv(spi, seq, out),
            #[cfg(feature = "aws-lc")]
            AnyXform::Aws(x) => x.fill_iv(spi, seq, out),
            #[cfg(feature = "esp-null")]
            AnyXform::Null => {
                // any IV length (16 for aes-cbc): the sequence number, zero-extended
                out.fill(0);
                let n = out.len().min(8);
                let at = out.len() - n;
                out[at..].copy_from_slice(&seq.to_be_bytes()[8 - n..]);
                Ok(true)
            }
        }
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
            #[cfg(feature = "esp-null")]
            AnyXform::Null => {
                let ct_end = esp.len().checked_sub(icv_len).ok_or(EspError::Truncated)?;
                esp[ct_end..].fill(0);
                Ok(())
            }
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
            #[cfg(feature = "esp-null")]
            AnyXform::Null => {
                let ct_end = esp.len().checked_sub(icv_len).ok_or(EspError::Truncated)?;
                if esp[ct_end..].iter().any(|&b| b != 0) {
                    return Err(EspError::IcvMismatch);
                }
                Ok(())
            }
        }
    }
}
