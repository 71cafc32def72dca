//! User-space IPsec ESP (RFC 4303), transport mode, for the P-CSCF's protected ports
//! (TS 33.203 §7, Annex I).
//!
//! What each file owns:
//! - `alg.rs`: Security-Client tokens → [`IntegAlg`], [`EncAlg`], valid pairs → [`Suite`]
//!   (TS 33.203 Annex I).
//! - `keys.rs`: ESP keys from CK/IK, incl. the GCM/GMAC salt KDF ([`EspKeys`]).
//! - `backend/`: the one internal crypto trait and its RustCrypto and aws-lc-rs implementations.
//! - `xform.rs`: per-suite ESP transforms over that trait (what is encrypted, what the ICV covers,
//!   CBC IVs), with key state shared by the SAs of a set.
//! - `replay.rs`: the lock-free anti-replay window ([`ReplayWindow`], RFC 4303 §3.4.3).
//! - `packet.rs`: finding ESP in an IP packet (the IP headers themselves are `crate::wire`'s).
//! - `sa.rs`: [`Sa`]: outbound ([`Sa::outbound`] on a [`Frame`]) and inbound ([`Sa::inbound`],
//!   [`Sa::inbound_ip`], [`Sa::decapsulate`]).
//! - `error.rs`: [`EspError`].
//! - `wireshark.rs`: the `esp_sa` key-log line for Wireshark/tshark.
//!
//! Typical use:
//! ```
//! use pcscf::esp::{Frame, Sa, SaOptions};
//! let (ck, ik) = ([1u8; 16], [2u8; 16]);
//! let tx = Sa::from_aka(0x1000, "hmac-sha-1-96", "aes-cbc", &ck, &ik, SaOptions::default()).unwrap();
//! let rx = Sa::from_aka(0x1000, "hmac-sha-1-96", "aes-cbc", &ck, &ik, SaOptions::default()).unwrap();
//! // An IPv4/UDP packet at buf[64..92] with 64 bytes of headroom and room after it.
//! let mut buf = [0u8; 256];
//! let ip = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
//!           0x13, 0xc4, 0x13, 0xc5, 0, 8, 0, 0];
//! buf[64..92].copy_from_slice(&ip);
//! let mut f = Frame::new(&mut buf, 64, 92);
//! let seq = tx.outbound(&mut f).unwrap();
//! let (s, e) = (f.start, f.end);
//! let inb = rx.inbound_ip(&mut buf[s..e]).unwrap();
//! assert_eq!((inb.seq, seq, inb.next_header), (1, 1, 17));
//! ```

#![forbid(unsafe_code)]

mod alg;
mod backend;
mod error;
mod keys;
pub mod packet;
mod replay;
mod sa;
pub mod wireshark;
mod xform;

#[cfg(test)]
mod kat_tests;

pub use alg::{EncAlg, IntegAlg, Suite};
pub use backend::BackendKind;
pub use error::EspError;
pub use keys::{EspKeys, annex_i_kdf, gcm_salt, gmac_salt};
pub use replay::{DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW, ReplayWindow};
pub use sa::{
    ESP_HEADER_LEN, Frame, Inbound, Overhead, Sa, SaOptions, aead_iv, outbound_ivs_disjoint,
    overhead,
};
