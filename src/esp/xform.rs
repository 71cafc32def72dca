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
//! Each suite is its own type behind one `Arc<dyn EspXform>` (16 bytes in the `Sa`), sized for
//! that suite alone: the four SAs of a TS 33.203 set use the same CK_ESP/IK_ESP (Annex I), so
//! they share one expanded key instead of four (memory per UE). The indirect call per packet is
//! nothing next to the crypto behind it.
//!
//! CBC IVs (RFC 3602 §2: unpredictable) are `E_K(seq ‖ spi ‖ "ESP")` under the SA's own CBC key,
//! the method of NIST SP 800-38A Appendix C (the forward cipher applied to a nonce under the
//! encryption key): (spi, seq) never repeats under the key, and no syscall or extra key schedule
//! is needed per SA.
//!
//! The `esp-null` cargo feature swaps every transform for a no-op (`NullX`): framing, sequence
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

/// One suite's ESP processing over an ESP packet `SPI ‖ Seq ‖ IV ‖ body ‖ ICV`.
pub(crate) trait EspXform: Send + Sync {
    /// Encrypts the body and writes the ICV. The caller has laid out SPI, Seq, IV, body
    /// (payload ‖ padding ‖ pad length ‖ next header) and `icv_len` bytes of room.
    fn seal(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError>;
    /// Verifies the ICV (constant time), then decrypts the body in place.
    fn open(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError>;
    /// Writes the explicit IV for (`spi`, `seq`) when the suite derives it from its key (CBC);
    /// `false`: the caller writes `SPI ‖ seq` (GCM/GMAC, RFC 4106 §3.1; see `sa::aead_iv`).
    fn fill_iv(&self, _spi: u32, _seq: u64, _out: &mut [u8]) -> Result<bool, EspError> {
        Ok(false)
    }
}

/// The transform an SA holds; cloning shares the key state.
pub(crate) type AnyXform = Arc<dyn EspXform>;

/// hmac-*-96 with null / aes-cbc / des-ede3-cbc.
struct HmacX<B: CryptoBackend> {
    cbc: Option<B::Cbc>,
    mac: B::Mac,
}

/// aes-gcm (RFC 4106).
struct GcmX<B: CryptoBackend> {
    key: B::Aead,
    salt: [u8; 4],
}

/// aes-gmac (RFC 4543).
struct GmacX<B: CryptoBackend> {
    key: B::Aead,
    salt: [u8; 4],
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

/// Where the ICV starts, after checking the packet holds SPI, Seq and the IV before it.
#[inline]
fn icv_start(esp: &[u8], iv_len: usize, icv_len: usize) -> Result<usize, EspError> {
    let ct_end = esp.len().checked_sub(icv_len).ok_or(EspError::Truncated)?;
    if ct_end < 8 + iv_len {
        return Err(EspError::Truncated);
    }
    Ok(ct_end)
}

/// The transform for `suite` with `keys`, over backend `B`.
pub(crate) fn build<B: CryptoBackend>(suite: Suite, keys: &EspKeys) -> Result<AnyXform, EspError> {
    match (suite.integ(), suite.enc()) {
        (IntegAlg::Null, EncAlg::AesGcm) => {
            need_len(keys.enc_key(), 16)?;
            Ok(Arc::new(GcmX::<B> {
                key: B::aead_new(keys.enc_key())?,
                salt: keys.salt(),
            }))
        }
        (IntegAlg::AesGmac, EncAlg::Null) => {
            need_len(keys.auth_key(), 16)?;
            Ok(Arc::new(GmacX::<B> {
                key: B::aead_new(keys.auth_key())?,
                salt: keys.salt(),
            }))
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
            Ok(Arc::new(HmacX::<B> {
                cbc,
                mac: B::mac_new(i, keys.auth_key())?,
            }))
        }
    }
}

/// The transform for whichever backend the SA is built with.
pub(crate) fn new_xform(
    kind: BackendKind,
    suite: Suite,
    keys: &EspKeys,
) -> Result<AnyXform, EspError> {
    let x = match kind {
        BackendKind::RustCrypto => build::<RustCrypto>(suite, keys)?,
        #[cfg(feature = "aws-lc")]
        BackendKind::AwsLc => build::<AwsLc>(suite, keys)?,
    };
    // (keys are still validated above, so a null build refuses what a real one refuses)
    #[cfg(feature = "esp-null")]
    let x: AnyXform = {
        drop(x);
        Arc::new(NullX)
    };
    Ok(x)
}

impl<B: CryptoBackend> EspXform for HmacX<B> {
    fn seal(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        if let Some(c) = &self.cbc {
            let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
            B::cbc_encrypt(c, &head[8..], body)?;
        }
        let mut full = [0u8; 20];
        let n = B::mac(&self.mac, &esp[..ct_end], &mut full)?;
        if n < icv_len {
            return Err(EspError::Crypto);
        }
        esp[ct_end..].copy_from_slice(&full[..icv_len]);
        Ok(())
    }

    fn open(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        let mut full = [0u8; 20];
        let n = B::mac(&self.mac, &esp[..ct_end], &mut full)?;
        if n < icv_len || full[..icv_len].ct_eq(&esp[ct_end..]).unwrap_u8() != 1 {
            return Err(EspError::IcvMismatch);
        }
        if let Some(c) = &self.cbc {
            let (head, body) = esp[..ct_end].split_at_mut(8 + iv_len);
            B::cbc_decrypt(c, &head[8..], body)?;
        }
        Ok(())
    }

    /// `E_K(seq ‖ spi ‖ "ESP\0")` (16-byte block) or `E_K(seq32 ‖ spi)` (8-byte block), as a
    /// one-block CBC encryption under a zero IV.
    fn fill_iv(&self, spi: u32, seq: u64, out: &mut [u8]) -> Result<bool, EspError> {
        let Some(c) = &self.cbc else {
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
}

impl<B: CryptoBackend> EspXform for GcmX<B> {
    fn seal(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        let n = nonce(&self.salt, &esp[8..16]);
        let (head, rest) = esp.split_at_mut(8 + iv_len);
        let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
        let tag = B::aead_seal(&self.key, &n, &head[..8], body)?;
        icv.copy_from_slice(&tag);
        Ok(())
    }

    fn open(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        let n = nonce(&self.salt, &esp[8..16]);
        let (head, rest) = esp.split_at_mut(8 + iv_len);
        let (body, icv) = rest.split_at_mut(ct_end - 8 - iv_len);
        let tag: &[u8; 16] = (&*icv).try_into().map_err(|_| EspError::Truncated)?;
        B::aead_open(&self.key, &n, &head[..8], body, tag)
    }
}

impl<B: CryptoBackend> EspXform for GmacX<B> {
    fn seal(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        let n = nonce(&self.salt, &esp[8..16]);
        let (aad, icv) = esp.split_at_mut(ct_end);
        let tag = B::aead_seal(&self.key, &n, aad, &mut [])?;
        icv.copy_from_slice(&tag);
        Ok(())
    }

    fn open(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        let n = nonce(&self.salt, &esp[8..16]);
        let (aad, icv) = esp.split_at(ct_end);
        let tag: &[u8; 16] = icv.try_into().map_err(|_| EspError::Truncated)?;
        B::aead_open(&self.key, &n, aad, &mut [], tag)
    }
}

/// `esp-null` builds only: no crypto (benchmarks). The ICV is zeros and checked as zeros.
#[cfg(feature = "esp-null")]
struct NullX;

#[cfg(feature = "esp-null")]
impl EspXform for NullX {
    fn seal(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        esp[ct_end..].fill(0);
        Ok(())
    }

    fn open(&self, esp: &mut [u8], iv_len: usize, icv_len: usize) -> Result<(), EspError> {
        let ct_end = icv_start(esp, iv_len, icv_len)?;
        if esp[ct_end..].iter().any(|&b| b != 0) {
            return Err(EspError::IcvMismatch);
        }
        Ok(())
    }

    fn fill_iv(&self, _spi: u32, seq: u64, out: &mut [u8]) -> Result<bool, EspError> {
        // any IV length (16 for aes-cbc): the sequence number, zero-extended
        out.fill(0);
        let n = out.len().min(8);
        let at = out.len() - n;
        out[at..].copy_from_slice(&seq.to_be_bytes()[8 - n..]);
        Ok(true)
    }
}
