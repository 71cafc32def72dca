//! ESP crypto primitives, one packet per iteration: RustCrypto vs aws-lc-rs vs ring.
//!
//! Each bench times exactly what the ESP data path would call per packet, with all per-SA
//! state (key schedules, GHASH tables, HMAC ipad/opad midstates) prepared beforehand:
//! - AES-128-GCM seal / open in place: 12-byte nonce (RFC 4106 salt ‖ IV), 8-byte AAD
//!   (SPI ‖ seq), 16-byte tag.
//! - AES-128-CBC encrypt / decrypt, no padding (the ESP trailer already pads to 16).
//! - HMAC-SHA1 and HMAC-MD5 over the packet, from a pre-keyed state cloned per message.
//!
//! Payload sizes: 200, 500, 1000 and 1400 bytes. Run with `cargo bench --bench crypto`;
//! results and the recommendation are in `bench/README.md`.

use std::hint::black_box;

use divan::Bencher;
use divan::counter::BytesCount;

const SIZES: [usize; 4] = [200, 500, 1000, 1400];
const KEY: [u8; 16] = [0x42; 16];
const IV: [u8; 16] = [0x24; 16];
const NONCE: [u8; 12] = [0x17; 12];
const AAD: [u8; 8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1];
const HMAC_SHA1_KEY: [u8; 20] = [0x0b; 20];
const HMAC_MD5_KEY: [u8; 16] = [0x0c; 16];

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn main() {
    check_backends_agree();
    divan::main();
}

/// AES-128-GCM (ESP_AES_GCM_16, RFC 4106).
#[divan::bench_group(sample_count = 200, sample_size = 500)]
mod gcm {
    use super::*;

    #[divan::bench_group]
    mod rustcrypto {
        use super::*;
        use aes_gcm::aead::AeadInOut;
        use aes_gcm::{Aes128Gcm, KeyInit, Nonce, Tag};

        fn key() -> Aes128Gcm {
            Aes128Gcm::new((&KEY).into())
        }

        #[divan::bench(args = SIZES)]
        fn seal(bencher: Bencher, len: usize) {
            let cipher = key();
            let nonce: &Nonce<_> = (&NONCE).into();
            let mut buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                cipher
                    .encrypt_inout_detached(nonce, &AAD, black_box(&mut buf[..]).into())
                    .unwrap()
            });
        }

        #[divan::bench(args = SIZES)]
        fn open(bencher: Bencher, len: usize) {
            let cipher = key();
            let nonce: &Nonce<_> = (&NONCE).into();
            let mut ct = payload(len);
            let tag: Tag = cipher
                .encrypt_inout_detached(nonce, &AAD, ct.as_mut_slice().into())
                .unwrap();
            bencher
                .counter(BytesCount::new(len))
                .with_inputs(|| ct.clone())
                .bench_local_refs(|buf| {
                    let ok = cipher
                        .decrypt_inout_detached(nonce, &AAD, black_box(&mut buf[..]).into(), &tag)
                        .is_ok();
                    assert!(ok);
                });
        }
    }

    #[divan::bench_group]
    mod aws_lc_rs {
        use super::*;
        use ::aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

        fn key() -> LessSafeKey {
            LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).unwrap())
        }

        #[divan::bench(args = SIZES)]
        fn seal(bencher: Bencher, len: usize) {
            let key = key();
            let mut buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(AAD),
                    black_box(&mut buf[..]),
                )
                .unwrap()
            });
        }

        #[divan::bench(args = SIZES)]
        fn open(bencher: Bencher, len: usize) {
            let key = key();
            // ESP layout: ciphertext immediately followed by the ICV.
            let mut ct = payload(len);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(AAD),
                    &mut ct,
                )
                .unwrap();
            ct.extend_from_slice(tag.as_ref());
            bencher
                .counter(BytesCount::new(len))
                .with_inputs(|| ct.clone())
                .bench_local_refs(|buf| {
                    let ok = key
                        .open_in_place(
                            Nonce::assume_unique_for_key(NONCE),
                            Aad::from(AAD),
                            black_box(&mut buf[..]),
                        )
                        .is_ok();
                    assert!(ok);
                });
        }
    }

    #[divan::bench_group]
    mod ring {
        use super::*;
        use ::ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

        fn key() -> LessSafeKey {
            LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &KEY).unwrap())
        }

        #[divan::bench(args = SIZES)]
        fn seal(bencher: Bencher, len: usize) {
            let key = key();
            let mut buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(AAD),
                    black_box(&mut buf[..]),
                )
                .unwrap()
            });
        }

        #[divan::bench(args = SIZES)]
        fn open(bencher: Bencher, len: usize) {
            let key = key();
            let mut ct = payload(len);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(NONCE),
                    Aad::from(AAD),
                    &mut ct,
                )
                .unwrap();
            ct.extend_from_slice(tag.as_ref());
            bencher
                .counter(BytesCount::new(len))
                .with_inputs(|| ct.clone())
                .bench_local_refs(|buf| {
                    let ok = key
                        .open_in_place(
                            Nonce::assume_unique_for_key(NONCE),
                            Aad::from(AAD),
                            black_box(&mut buf[..]),
                        )
                        .is_ok();
                    assert!(ok);
                });
        }
    }
}

/// AES-128-CBC (ESP_AES_CBC, RFC 3602), no padding: the buffer is the size rounded up to a
/// multiple of 16 (208, 500 → 512, 1008, 1408 bytes). ring has no CBC.
#[divan::bench_group(sample_count = 200, sample_size = 500)]
mod cbc {
    use super::*;

    #[divan::bench_group]
    mod rustcrypto {
        use super::*;
        use ::aes::Aes128;
        use ::aes::cipher::array::Array;
        use ::aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};

        type Enc<'a> = ::cbc::Encryptor<&'a Aes128>;
        type Dec<'a> = ::cbc::Decryptor<&'a Aes128>;

        #[divan::bench(args = SIZES)]
        fn encrypt(bencher: Bencher, len: usize) {
            // Per SA: the expanded key. Per packet: a CBC state over it with the packet's IV.
            let aes = Aes128::new((&KEY).into());
            let mut buf = payload(len.next_multiple_of(16));
            bencher.counter(BytesCount::new(buf.len())).bench_local(|| {
                let (blocks, rest) = Array::slice_as_chunks_mut(black_box(&mut buf[..]));
                debug_assert!(rest.is_empty());
                Enc::inner_iv_init(&aes, (&IV).into()).encrypt_blocks(blocks);
            });
        }

        #[divan::bench(args = SIZES)]
        fn decrypt(bencher: Bencher, len: usize) {
            let aes = Aes128::new((&KEY).into());
            let mut buf = payload(len.next_multiple_of(16));
            bencher.counter(BytesCount::new(buf.len())).bench_local(|| {
                let (blocks, _) = Array::slice_as_chunks_mut(black_box(&mut buf[..]));
                Dec::inner_iv_init(&aes, (&IV).into()).decrypt_blocks(blocks);
            });
        }
    }

    #[divan::bench_group]
    mod aws_lc_rs {
        use super::*;
        use ::aws_lc_rs::cipher::{
            AES_128, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
            UnboundCipherKey,
        };

        #[divan::bench(args = SIZES)]
        fn encrypt(bencher: Bencher, len: usize) {
            let key = EncryptingKey::cbc(UnboundCipherKey::new(&AES_128, &KEY).unwrap()).unwrap();
            let mut buf = payload(len.next_multiple_of(16));
            bencher.counter(BytesCount::new(buf.len())).bench_local(|| {
                let ctx = key
                    .less_safe_encrypt(black_box(&mut buf[..]), EncryptionContext::Iv128(IV.into()))
                    .unwrap();
                black_box(ctx);
            });
        }

        #[divan::bench(args = SIZES)]
        fn decrypt(bencher: Bencher, len: usize) {
            let key = DecryptingKey::cbc(UnboundCipherKey::new(&AES_128, &KEY).unwrap()).unwrap();
            let mut buf = payload(len.next_multiple_of(16));
            bencher.counter(BytesCount::new(buf.len())).bench_local(|| {
                let out = key
                    .decrypt(black_box(&mut buf[..]), DecryptionContext::Iv128(IV.into()))
                    .unwrap();
                black_box(out);
            });
        }
    }
}

/// HMAC-SHA1-96 (RFC 2404) and HMAC-MD5-96 (RFC 2403): the full HMAC, truncated for free.
#[divan::bench_group(sample_count = 200, sample_size = 500)]
mod hmac {
    use super::*;

    #[divan::bench_group]
    mod rustcrypto {
        use super::*;
        use ::hmac::{Hmac, KeyInit, Mac};

        #[divan::bench(args = SIZES)]
        fn sha1(bencher: Bencher, len: usize) {
            let keyed = Hmac::<::sha1::Sha1>::new_from_slice(&HMAC_SHA1_KEY).unwrap();
            let buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                let mut mac = keyed.clone();
                mac.update(black_box(&buf[..]));
                black_box(mac.finalize().into_bytes());
            });
        }

        #[divan::bench(args = SIZES)]
        fn md5(bencher: Bencher, len: usize) {
            let keyed = Hmac::<::md5::Md5>::new_from_slice(&HMAC_MD5_KEY).unwrap();
            let buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                let mut mac = keyed.clone();
                mac.update(black_box(&buf[..]));
                black_box(mac.finalize().into_bytes());
            });
        }
    }

    /// aws-lc-rs has no HMAC-MD5.
    #[divan::bench_group]
    mod aws_lc_rs {
        use super::*;
        use ::aws_lc_rs::hmac::{Context, HMAC_SHA1_FOR_LEGACY_USE_ONLY, Key};

        #[divan::bench(args = SIZES)]
        fn sha1(bencher: Bencher, len: usize) {
            let key = Key::new(HMAC_SHA1_FOR_LEGACY_USE_ONLY, &HMAC_SHA1_KEY);
            let buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                let mut ctx = Context::with_key(&key);
                ctx.update(black_box(&buf[..]));
                black_box(ctx.sign());
            });
        }
    }

    /// ring has no HMAC-MD5, and its SHA-1 is portable Rust.
    #[divan::bench_group]
    mod ring {
        use super::*;
        use ::ring::hmac::{Context, HMAC_SHA1_FOR_LEGACY_USE_ONLY, Key};

        #[divan::bench(args = SIZES)]
        fn sha1(bencher: Bencher, len: usize) {
            let key = Key::new(HMAC_SHA1_FOR_LEGACY_USE_ONLY, &HMAC_SHA1_KEY);
            let buf = payload(len);
            bencher.counter(BytesCount::new(len)).bench_local(|| {
                let mut ctx = Context::with_key(&key);
                ctx.update(black_box(&buf[..]));
                black_box(ctx.sign());
            });
        }
    }
}

/// Cross-checks that the backends produce identical output, so the benches compare equal
/// work. Runs once before the benches (`main`).
fn check_backends_agree() {
    use ::aes::cipher::array::Array;
    use ::aes::cipher::{BlockModeEncrypt, KeyIvInit};
    use ::hmac::{Hmac, KeyInit, Mac};
    use aes_gcm::aead::AeadInOut;

    let len = 1008;
    // GCM: RustCrypto vs aws-lc-rs vs ring.
    let mut a = payload(len);
    let ta = aes_gcm::Aes128Gcm::new((&KEY).into())
        .encrypt_inout_detached((&NONCE).into(), &AAD, a.as_mut_slice().into())
        .unwrap();
    let mut b = payload(len);
    let tb = ::aws_lc_rs::aead::LessSafeKey::new(
        ::aws_lc_rs::aead::UnboundKey::new(&::aws_lc_rs::aead::AES_128_GCM, &KEY).unwrap(),
    )
    .seal_in_place_separate_tag(
        ::aws_lc_rs::aead::Nonce::assume_unique_for_key(NONCE),
        ::aws_lc_rs::aead::Aad::from(AAD),
        &mut b,
    )
    .unwrap();
    let mut c = payload(len);
    let tc = ::ring::aead::LessSafeKey::new(
        ::ring::aead::UnboundKey::new(&::ring::aead::AES_128_GCM, &KEY).unwrap(),
    )
    .seal_in_place_separate_tag(
        ::ring::aead::Nonce::assume_unique_for_key(NONCE),
        ::ring::aead::Aad::from(AAD),
        &mut c,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(ta.as_slice(), tb.as_ref());
    assert_eq!(ta.as_slice(), tc.as_ref());

    // CBC: RustCrypto vs aws-lc-rs.
    let mut a = payload(len);
    let (blocks, _) = Array::slice_as_chunks_mut(&mut a[..]);
    ::cbc::Encryptor::<::aes::Aes128>::new((&KEY).into(), (&IV).into()).encrypt_blocks(blocks);
    let mut b = payload(len);
    ::aws_lc_rs::cipher::EncryptingKey::cbc(
        ::aws_lc_rs::cipher::UnboundCipherKey::new(&::aws_lc_rs::cipher::AES_128, &KEY).unwrap(),
    )
    .unwrap()
    .less_safe_encrypt(
        &mut b,
        ::aws_lc_rs::cipher::EncryptionContext::Iv128(IV.into()),
    )
    .unwrap();
    assert_eq!(a, b);

    // HMAC-SHA1: all three.
    let data = payload(len);
    let mut m = Hmac::<::sha1::Sha1>::new_from_slice(&HMAC_SHA1_KEY).unwrap();
    m.update(&data);
    let ra = m.finalize().into_bytes();
    let rb = ::aws_lc_rs::hmac::sign(
        &::aws_lc_rs::hmac::Key::new(
            ::aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            &HMAC_SHA1_KEY,
        ),
        &data,
    );
    let rc = ::ring::hmac::sign(
        &::ring::hmac::Key::new(::ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &HMAC_SHA1_KEY),
        &data,
    );
    assert_eq!(ra.as_slice(), rb.as_ref());
    assert_eq!(ra.as_slice(), rc.as_ref());
}
