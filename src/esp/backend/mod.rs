//! The one internal crypto trait, [`CryptoBackend`], and its implementations:
//! - [`rustcrypto::RustCrypto`]: pure Rust (aes, des, aes-gcm, hmac, sha1, md-5), always compiled;
//! - `awslc::AwsLc` (cargo feature `aws-lc`): aws-lc-rs for AES-GCM, AES-CBC and 3DES-CBC;
//!   HMAC (SHA-1 and MD5) stays on RustCrypto, which measured faster (bench/README.md).
//!
//! Keys are expanded once (`*_new`); per-packet calls take `&Key` and never allocate.
//! The ESP logic that composes these primitives lives in `xform.rs`, written once for all
//! backends.

pub(crate) mod rustcrypto;

#[cfg(feature = "aws-lc")]
pub(crate) mod awslc;

use super::alg::{EncAlg, IntegAlg};
use super::error::EspError;

/// Which crypto library an SA uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Pure-Rust RustCrypto crates.
    RustCrypto,
    /// aws-lc-rs (feature `aws-lc`).
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

impl BackendKind {
    /// Every backend compiled into this build.
    pub const ALL: &'static [BackendKind] = &[
        BackendKind::RustCrypto,
        #[cfg(feature = "aws-lc")]
        BackendKind::AwsLc,
    ];

    /// Short name for logs and benches.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::RustCrypto => "rustcrypto",
            #[cfg(feature = "aws-lc")]
            BackendKind::AwsLc => "aws-lc",
        }
    }
}

impl Default for BackendKind {
    /// aws-lc-rs when compiled in (it measured faster for every suite, see bench/README-esp.md),
    /// RustCrypto otherwise.
    fn default() -> Self {
        #[cfg(feature = "aws-lc")]
        {
            BackendKind::AwsLc
        }
        #[cfg(not(feature = "aws-lc"))]
        {
            BackendKind::RustCrypto
        }
    }
}

/// Block-cipher, AEAD and MAC primitives that ESP needs. Implementations must verify tags in
/// constant time and must not allocate in the per-packet functions.
pub(crate) trait CryptoBackend: 'static {
    /// An expanded AES-128-GCM key.
    type Aead: Send + Sync;
    /// An expanded CBC key (AES-128 or 3DES-EDE3).
    type Cbc: Send + Sync;
    /// A pre-keyed HMAC state (inner/outer pads already absorbed).
    type Mac: Send + Sync;

    /// Expands a 16-byte AES-GCM key.
    fn aead_new(key: &[u8]) -> Result<Self::Aead, EspError>;
    /// Encrypts `data` in place; returns the 16-byte tag over `aad` and the ciphertext.
    fn aead_seal(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; 16], EspError>;
    /// Checks `tag` over `aad` and the ciphertext, then decrypts `data` in place;
    /// [`EspError::IcvMismatch`] if the tag is wrong.
    fn aead_open(
        k: &Self::Aead,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), EspError>;

    /// Expands a CBC key for `alg` (aes-cbc: 16 bytes, des-ede3-cbc: 24 bytes).
    fn cbc_new(alg: EncAlg, key: &[u8]) -> Result<Self::Cbc, EspError>;
    /// CBC-encrypts whole blocks in place.
    fn cbc_encrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError>;
    /// CBC-decrypts whole blocks in place.
    fn cbc_decrypt(k: &Self::Cbc, iv: &[u8], data: &mut [u8]) -> Result<(), EspError>;

    /// Pre-keys HMAC for `alg` (hmac-md5-96 or hmac-sha-1-96).
    fn mac_new(alg: IntegAlg, key: &[u8]) -> Result<Self::Mac, EspError>;
    /// The full (untruncated) HMAC of `data` into `out`; returns its length (16 or 20).
    fn mac(k: &Self::Mac, data: &[u8], out: &mut [u8; 20]) -> Result<usize, EspError>;
}
