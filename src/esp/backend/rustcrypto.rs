//! Pure-Rust backend: `aes` (AES-NI/VAES autodetected), `des`, `aes-gcm`, `hmac` over `sha1` /
//! `md-5`. CBC is done here over the block ciphers so that the key schedule is expanded once per
//! SA (the `cbc` crate would re-key per packet); decryption runs 8 blocks at a time so that the
//! block cipher can pipeline them.

use super::CryptoBackend;
use crate::esp::alg::{EncAlg, IntegAlg};
use crate::esp::error::EspError;
use aes::Aes128;
use aes::cipher::array::Array;
use aes::cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use aes_gcm::Aes128Gcm;
use aes_gcm::aead::AeadInOut;
use des::TdesEde3;
use hmac::{Hmac, Mac};

/// The RustCrypto backend.
pub(crate) struct RustCrypto;

/// Expanded CBC keys.
#[allow(clippy::large_enum_variant)] // built once per SA; boxing would add a pointer chase per packet
pub(crate) enum RcCbc {
    Aes(Aes128),
    Tdes(TdesEde3),
}

/// Pre-keyed HMAC states; cloned per packet.
#[derive(Clone)]
pub(crate) enum RcMac {
    Md5(Hmac<md5::Md5>),
    Sha1(Hmac<sha1::Sha1>),
}

#[inline]
fn xor_in(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

/// CBC encryption over any block cipher (serial by nature, RFC 3602 §2).
pub(crate) fn cbc_encrypt_with<C: BlockCipherEncrypt>(
    c: &C,
    iv: &[u8],
    data: &mut [u8],
) -> Result<(), EspError> {
    let bs = C::block_size();
    if iv.len() != bs || !data.len().is_multiple_of(bs) {
        return Err(EspError::Misaligned);
    }
    let (blocks, _) = Array::<u8, C::BlockSize>::slice_as_chunks_mut(data);
    let mut prev: &[u8] = iv;
    for b in blocks.iter_mut() {
        xor_in(b, prev);
        c.encrypt_block(b);
        prev = b;
    }
    Ok(())
}

/// CBC decryption over any block cipher, 8 blocks per batch.
pub(crate) fn cbc_decrypt_with<C: BlockCipherDecrypt>(
    c: &C,
    iv: &[u8],
    data: &mut [u8],
) -> Result<(), EspError> {
    const PAR: usize = 8;
    let bs = C::block_size();
    if iv.len() != bs || !data.len().is_multiple_of(bs) {
        return Err(EspError::Misaligned);
    }
    let (blocks, _) = Array::<u8, C::BlockSize>::slice_as_chunks_mut(data);
    let mut prev: Block<C> = Default::default();
    prev.copy_from_slice(iv);
    for chunk in blocks.chunks_mut(PAR) {
        let n = chunk.len();
        let mut saved: [Block<C>; PAR] = Default::default();
        saved[..n].clone_from_slice(chunk);
        c.decrypt_blocks(chunk);
        xor_in(&mut chunk[0], &prev);
        for i in 1..n {
            xor_in(&mut chunk[i], &saved[i - 1]);
        }
        prev = saved[n - 1].clone();
    }
    Ok(())
}

fn hmac_into<M: Mac + Clone>(m: &M, data: &[u8], out: &mut [u8; 20]) -> usize {
    let mut m = m.clone();
    m.update(data);
    let tag = m.finalize().into_bytes();
    let n = tag.len().min(20);
    out[..n].copy_from_slice(&tag[..n]);
    n
}

impl CryptoBackend for RustCrypto {
    type Aead = Aes128Gcm;
    type Cbc = RcCbc;
    type Mac = RcMac;

    fn aead_new(key: &[u8]) -> Result<Self::Aead, EspError> {
        Aes128Gcm::new_from_slice(key).map_err(|_| EspError::BadKeyLength)
    }

    fn aead_seal(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; 16], EspError> {
        let n = (*nonce).into();
        let tag = k
            .encrypt_inout_detached(&n, aad, data.into())
            .map_err(|_| EspError::Crypto)?;
        Ok(tag.into())
    }

    fn aead_open(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), EspError> {
        let n = (*nonce).into();
        let t = (*tag).into();
        k.decrypt_inout_detached(&n, aad, data.into(), &t)
            .map_err(|_| EspError::IcvMismatch)
    }

    fn cbc_new(alg: EncAlg, key: &[u8]) -> Result<Self::Cbc, EspError> {
        match alg {
            EncAlg::AesCbc => Aes128::new_from_slice(key)
                .map(RcCbc::Aes)
                .map_err(|_| EspError::BadKeyLength),
            EncAlg::DesEde3Cbc => TdesEde3::new_from_slice(key)
                .map(RcCbc::Tdes)
                .map_err(|_| EspError::BadKeyLength),
            _ => Err(EspError::UnsupportedCombination),
        }
    }

    fn cbc_encrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError> {
        match k {
            RcCbc::Aes(c) => cbc_encrypt_with(c, iv, data),
            RcCbc::Tdes(c) => cbc_encrypt_with(c, iv, data),
        }
    }

    fn cbc_decrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError> {
        match k {
            RcCbc::Aes(c) => cbc_decrypt_with(c, iv, data),
            RcCbc::Tdes(c) => cbc_decrypt_with(c, iv, data),
        }
    }

    fn mac_new(alg: IntegAlg, key: &[u8]) -> Result<Self::Mac, EspError> {
        use hmac::KeyInit as _;
        match alg {
            IntegAlg::HmacMd5_96 => Hmac::<md5::Md5>::new_from_slice(key)
                .map(RcMac::Md5)
                .map_err(|_| EspError::BadKeyLength),
            IntegAlg::HmacSha1_96 => Hmac::<sha1::Sha1>::new_from_slice(key)
                .map(RcMac::Sha1)
                .map_err(|_| EspError::BadKeyLength),
            _ => Err(EspError::UnsupportedCombination),
        }
    }

    fn mac(k: &Self::Mac, data: &[u8], out: &mut [u8; 20]) -> Result<usize, EspError> {
        Ok(match k {
            RcMac::Md5(m) => hmac_into(m, data, out),
            RcMac::Sha1(m) => hmac_into(m, data, out),
        })
    }
}

// Silence "unused" for the BlockSizeUser import on some feature sets.
const _: fn() -> usize = <Aes128 as BlockSizeUser>::block_size;
