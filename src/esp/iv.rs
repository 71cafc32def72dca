//! CBC IVs (RFC 3602 §2: unpredictable, not derived from the previous ciphertext; spec §3.2).
//!
//! Each SA draws a random AES-128 key from the OS once, when it is built; the IV for sequence
//! number `n` is the first `iv_len` bytes of AES_k(n ‖ "ESPIV\0\0\0"), i.e. an AES-CTR keystream
//! block that is secret and never repeats under the SA. No syscall per packet, `&self` only.
//! GCM/GMAC do not use this: their explicit IV is the sequence number (RFC 4106 §3.1).

use super::error::EspError;
use aes::Aes128Enc;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use zeroize::Zeroize;

/// The per-SA IV generator; its key schedule is zeroised on drop (aes `zeroize` feature).
pub(crate) struct IvGen {
    key: Aes128Enc,
}

impl IvGen {
    pub(crate) fn new() -> Result<Self, EspError> {
        let mut k = [0u8; 16];
        getrandom::fill(&mut k).map_err(|_| EspError::Crypto)?;
        let key = Aes128Enc::new_from_slice(&k).map_err(|_| EspError::Crypto)?;
        k.zeroize();
        Ok(IvGen { key })
    }

    /// Writes the IV for `seq` into `out` (at most 16 bytes).
    #[inline]
    pub(crate) fn fill(&self, seq: u64, out: &mut [u8]) {
        let mut block = aes::Block::default();
        block[..8].copy_from_slice(&seq.to_be_bytes());
        block[8..13].copy_from_slice(b"ESPIV");
        self.key.encrypt_block(&mut block);
        let n = out.len().min(16);
        out[..n].copy_from_slice(&block[..n]);
    }
}
