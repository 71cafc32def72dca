//! ESP keys from the AKA CK and IK (TS 33.203 Annex I):
//! - hmac-md5-96: IK; hmac-sha-1-96: IK ‖ 0^32;
//! - aes-cbc: CK; des-ede3-cbc: CK1 ‖ CK2 ‖ CK1 (CK = CK1 ‖ CK2);
//! - aes-gcm: CK plus salt = last 4 bytes of HMAC-SHA-256(CK ‖ IK, 0x59 ‖ "AES_GCM_SALT" ‖ 0x000c);
//! - aes-gmac: IK plus salt = last 4 bytes of HMAC-SHA-256(CK ‖ IK, 0x58 ‖ "AES_GMAC_SALT" ‖ 0x000d).
//!
//! The KDF is TS 33.220 Annex B (S = FC ‖ P0 ‖ L0). Key bytes are zeroised on drop and never
//! printed.

use super::alg::{EncAlg, IntegAlg, Suite};
use core::fmt;
use hmac::{KeyInit, Mac};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// TS 33.220 Annex B KDF with a single parameter: HMAC-SHA-256(CK ‖ IK, FC ‖ P0 ‖ len(P0)).
pub fn annex_i_kdf(ck: &[u8; 16], ik: &[u8; 16], fc: u8, p0: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(ck);
    key[16..].copy_from_slice(ik);
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key)
        .expect("HMAC takes any key length");
    key.zeroize();
    mac.update(&[fc]);
    mac.update(p0);
    mac.update(&(p0.len() as u16).to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The 4-byte AES-GCM salt (FC 0x59, "AES_GCM_SALT").
pub fn gcm_salt(ck: &[u8; 16], ik: &[u8; 16]) -> [u8; 4] {
    let o = annex_i_kdf(ck, ik, 0x59, b"AES_GCM_SALT");
    [o[28], o[29], o[30], o[31]]
}

/// The 4-byte AES-GMAC salt (FC 0x58, "AES_GMAC_SALT").
pub fn gmac_salt(ck: &[u8; 16], ik: &[u8; 16]) -> [u8; 4] {
    let o = annex_i_kdf(ck, ik, 0x58, b"AES_GMAC_SALT");
    [o[28], o[29], o[30], o[31]]
}

/// The keys one SA uses. For GCM the cipher key is CK and for GMAC the integrity key is IK;
/// both come with [`EspKeys::salt`].
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EspKeys {
    enc: [u8; 24],
    enc_len: usize,
    auth: [u8; 20],
    auth_len: usize,
    salt: [u8; 4],
}

impl EspKeys {
    /// Derives the ESP keys of `suite` from CK and IK.
    pub fn derive(suite: Suite, ck: &[u8; 16], ik: &[u8; 16]) -> Self {
        let mut k = EspKeys {
            enc: [0; 24],
            enc_len: 0,
            auth: [0; 20],
            auth_len: 0,
            salt: [0; 4],
        };
        match suite.enc() {
            EncAlg::Null => {}
            EncAlg::AesCbc => {
                k.enc[..16].copy_from_slice(ck);
                k.enc_len = 16;
            }
            EncAlg::DesEde3Cbc => {
                k.enc[..16].copy_from_slice(ck);
                k.enc[16..].copy_from_slice(&ck[..8]);
                k.enc_len = 24;
            }
            EncAlg::AesGcm => {
                k.enc[..16].copy_from_slice(ck);
                k.enc_len = 16;
                k.salt = gcm_salt(ck, ik);
            }
        }
        match suite.integ() {
            IntegAlg::Null => {}
            IntegAlg::HmacMd5_96 => {
                k.auth[..16].copy_from_slice(ik);
                k.auth_len = 16;
            }
            IntegAlg::HmacSha1_96 => {
                k.auth[..16].copy_from_slice(ik);
                k.auth_len = 20;
            }
            IntegAlg::AesGmac => {
                k.auth[..16].copy_from_slice(ik);
                k.auth_len = 16;
                k.salt = gmac_salt(ck, ik);
            }
        }
        k
    }

    /// Builds keys directly (for interop with peers whose keys are not from AKA). Lengths:
    /// enc 0/16/24, auth 0/16/20.
    pub fn from_raw(enc: &[u8], auth: &[u8], salt: [u8; 4]) -> Option<Self> {
        if enc.len() > 24 || auth.len() > 20 {
            return None;
        }
        let mut k = EspKeys {
            enc: [0; 24],
            enc_len: enc.len(),
            auth: [0; 20],
            auth_len: auth.len(),
            salt,
        };
        k.enc[..enc.len()].copy_from_slice(enc);
        k.auth[..auth.len()].copy_from_slice(auth);
        Some(k)
    }

    /// Cipher key (CKesp; the AES key for GCM). Empty for `ealg=null`.
    pub fn enc_key(&self) -> &[u8] {
        &self.enc[..self.enc_len]
    }

    /// Integrity key (IKesp; the AES key for GMAC). Empty for GCM.
    pub fn auth_key(&self) -> &[u8] {
        &self.auth[..self.auth_len]
    }

    /// The GCM/GMAC salt (zero for other suites).
    pub fn salt(&self) -> [u8; 4] {
        self.salt
    }
}

impl fmt::Debug for EspKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspKeys")
            .field("enc_len", &self.enc_len)
            .field("auth_len", &self.auth_len)
            .finish_non_exhaustive()
    }
}
