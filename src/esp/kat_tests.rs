//! Known-answer tests of the primitives, run against every backend (the TS 33.203 Annex I algorithms).

use super::alg::{EncAlg, IntegAlg, Suite};
use super::backend::CryptoBackend;
#[cfg(feature = "aws-lc")]
use super::backend::awslc::AwsLc;
use super::backend::rustcrypto::RustCrypto;
use super::error::EspError;
use super::keys::{EspKeys, annex_i_kdf, gcm_salt, gmac_salt};
use super::xform::build;

fn h(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hmac_kats<B: CryptoBackend>() {
    // RFC 2202 cases 1, 2, 3, 5.
    let sha1: [(Vec<u8>, Vec<u8>, &str); 4] = [
        (
            vec![0x0b; 20],
            b"Hi There".to_vec(),
            "b617318655057264e28bc0b6fb378c8ef146be00",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
        ),
        (
            vec![0xaa; 20],
            vec![0xdd; 50],
            "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
        ),
        (
            vec![0x0c; 20],
            b"Test With Truncation".to_vec(),
            "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
        ),
    ];
    for (k, d, want) in sha1 {
        let m = B::mac_new(IntegAlg::HmacSha1_96, &k).unwrap();
        let mut out = [0u8; 20];
        assert_eq!(B::mac(&m, &d, &mut out).unwrap(), 20);
        assert_eq!(out.to_vec(), h(want));
    }
    let md5: [(Vec<u8>, Vec<u8>, &str); 3] = [
        (
            vec![0x0b; 16],
            b"Hi There".to_vec(),
            "9294727a3638bb1c13f48ef8158bfc9d",
        ),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "750c783e6ab0b503eaa86e310a5db738",
        ),
        (
            vec![0x0c; 16],
            b"Test With Truncation".to_vec(),
            "56461ef2342edc00f9bab995690efd4c",
        ),
    ];
    for (k, d, want) in md5 {
        let m = B::mac_new(IntegAlg::HmacMd5_96, &k).unwrap();
        let mut out = [0u8; 20];
        assert_eq!(B::mac(&m, &d, &mut out).unwrap(), 16);
        assert_eq!(out[..16].to_vec(), h(want));
    }
}

/// RFC 2202 case 5 through the ESP transform: the 12-byte ICV is the 96-bit truncation.
fn hmac96_truncation<B: CryptoBackend>() {
    for (integ, key, want) in [
        (
            IntegAlg::HmacSha1_96,
            vec![0x0c; 20],
            "4c1a03424b55e07fe7f27be1",
        ),
        (
            IntegAlg::HmacMd5_96,
            vec![0x0c; 16],
            "56461ef2342edc00f9bab995",
        ),
    ] {
        let suite = Suite::new(integ, EncAlg::Null).unwrap();
        let keys = EspKeys::from_raw(&[], &key, [0; 4]).unwrap();
        let x = build::<B>(suite, &keys).unwrap();
        // "Test With Truncation" is 20 bytes: 8 as "SPI‖Seq", 12 as body, then 12 bytes of ICV.
        let mut pkt = b"Test With Truncation".to_vec();
        pkt.extend_from_slice(&[0; 12]);
        x.seal(&mut pkt, 0, 12).unwrap();
        assert_eq!(pkt[20..].to_vec(), h(want));
        x.open(&mut pkt, 0, 12).unwrap();
        pkt[25] ^= 1;
        assert_eq!(x.open(&mut pkt, 0, 12), Err(EspError::IcvMismatch));
    }
}

fn cbc_kats<B: CryptoBackend>() {
    let cases = [
        (
            "06a9214036b8a15b512e03d534120006",
            "3dafba429d9eb430b422da802c9fac41",
            b"Single block msg".to_vec(),
            "e353779c1079aeb82708942dbe77181a",
        ),
        (
            "c286696d887c9aa0611bbb3e2025a45a",
            "562e17996d093d28ddb3ba695a2e6f58",
            (0u8..32).collect::<Vec<u8>>(),
            "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
        ),
    ];
    for (k, iv, pt, ct) in cases {
        let key = B::cbc_new(EncAlg::AesCbc, &h(k)).unwrap();
        let mut d = pt.clone();
        B::cbc_encrypt(&key, &h(iv), &mut d).unwrap();
        assert_eq!(d, h(ct));
        B::cbc_decrypt(&key, &h(iv), &mut d).unwrap();
        assert_eq!(d, pt);
    }
    assert_eq!(
        B::cbc_encrypt(
            &B::cbc_new(EncAlg::AesCbc, &[0; 16]).unwrap(),
            &[0; 16],
            &mut [0; 15]
        ),
        Err(EspError::Misaligned)
    );
}

/// 3DES-EDE3: NIST SP 800-67 Rev. 2 example (ECB = one CBC block under a zero IV), keys
/// 0123456789abcdef / 23456789abcdef01 / 456789abcdef0123, "The qufck brown fox jump" (sic).
/// Then a CBC round trip with an Annex I style key (K3 = K1) against the RustCrypto result.
fn tdes_kat<B: CryptoBackend>() {
    let key = h("0123456789abcdef23456789abcdef01456789abcdef0123");
    let k = B::cbc_new(EncAlg::DesEde3Cbc, &key).unwrap();
    let pt = b"The qufck brown fox jump";
    let ct = h("a826fd8ce53b855fcce21c8112256fe668d5c05dd9b6b900");
    for i in 0..3 {
        let mut d = pt[i * 8..i * 8 + 8].to_vec();
        B::cbc_encrypt(&k, &[0; 8], &mut d).unwrap();
        assert_eq!(d, ct[i * 8..i * 8 + 8].to_vec());
        B::cbc_decrypt(&k, &[0; 8], &mut d).unwrap();
        assert_eq!(d, pt[i * 8..i * 8 + 8].to_vec());
    }
    let key = h("0123456789abcdef23456789abcdef010123456789abcdef");
    let iv = h("1234567890abcdef");
    let mut a = pt.to_vec();
    let mut b = pt.to_vec();
    B::cbc_encrypt(&B::cbc_new(EncAlg::DesEde3Cbc, &key).unwrap(), &iv, &mut a).unwrap();
    RustCrypto::cbc_encrypt(
        &RustCrypto::cbc_new(EncAlg::DesEde3Cbc, &key).unwrap(),
        &iv,
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(&a[..], &pt[..]);
    // CK1 = CK2: degenerate, refused by aws-lc, still has to work (falls back).
    let key = h("0123456789abcdef0123456789abcdef0123456789abcdef");
    let mut a = pt.to_vec();
    let mut b = pt.to_vec();
    B::cbc_encrypt(&B::cbc_new(EncAlg::DesEde3Cbc, &key).unwrap(), &iv, &mut a).unwrap();
    RustCrypto::cbc_encrypt(
        &RustCrypto::cbc_new(EncAlg::DesEde3Cbc, &key).unwrap(),
        &iv,
        &mut b,
    )
    .unwrap();
    assert_eq!(a, b);
}

fn gcm_kats<B: CryptoBackend>() {
    let p3 = h(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    );
    let c3 = h(
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
    );
    let k3 = h("feffe9928665731c6d6a8f9467308308");
    let n3 = h("cafebabefacedbaddecaf888");
    type Case = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec![0; 16],
            vec![0; 12],
            vec![],
            vec![],
            vec![],
            "58e2fccefa7e3061367f1d57a4e7455a",
        ),
        (
            vec![0; 16],
            vec![0; 12],
            vec![0; 16],
            vec![],
            h("0388dace60b6a392f328c2b971b2fe78"),
            "ab6e47d42cec13bdf53a67b21257bddf",
        ),
        (
            k3.clone(),
            n3.clone(),
            p3.clone(),
            vec![],
            c3.clone(),
            "4d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            k3,
            n3,
            p3[..60].to_vec(),
            h("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
            c3[..60].to_vec(),
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
        // RFC 4106 ESP packet 1 (draft-mcgrew-gcm-test-01 §4): nonce = salt ‖ IV, AAD = SPI ‖ ESN.
        (
            h("4c80cdefbb5d10da906ac73c3613a634"),
            h("2e443b684956ed7e3b244cfe"),
            h(
                "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f756470037369700963796265726369747902646b000021000101020201",
            ),
            h("000043218765432100000000"),
            h(
                "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732",
            ),
            "459018148f6cbe722fd04796562dfdb4",
        ),
    ];
    for (k, n, p, aad, c, t) in cases {
        let key = B::aead_new(&k).unwrap();
        let nonce: [u8; 12] = n.try_into().unwrap();
        let mut d = p.clone();
        let tag = B::aead_seal(&key, &nonce, &aad, &mut d).unwrap();
        assert_eq!(d, c);
        assert_eq!(tag.to_vec(), h(t));
        B::aead_open(&key, &nonce, &aad, &mut d, &tag).unwrap();
        assert_eq!(d, p);
        let mut bad = tag;
        bad[15] ^= 0x80;
        let mut d2 = c.clone();
        assert_eq!(
            B::aead_open(&key, &nonce, &aad, &mut d2, &bad),
            Err(EspError::IcvMismatch)
        );
    }
}

fn all<B: CryptoBackend>() {
    hmac_kats::<B>();
    hmac96_truncation::<B>();
    cbc_kats::<B>();
    tdes_kat::<B>();
    gcm_kats::<B>();
}

#[test]
fn kats_rustcrypto() {
    all::<RustCrypto>();
}

#[cfg(feature = "aws-lc")]
#[test]
fn kats_awslc() {
    all::<AwsLc>();
}

#[test]
fn salt_kdf_test_set_1() {
    let ck: [u8; 16] = h("b40ba9a3c58b2a05bbf0d987b21bf8cb").try_into().unwrap();
    let ik: [u8; 16] = h("f769bcd751044604127672711c6d3441").try_into().unwrap();
    assert_eq!(
        annex_i_kdf(&ck, &ik, 0x59, b"AES_GCM_SALT").to_vec(),
        h("990208b8e98def9647b3267bbc4fb85ba56472b9fe616bae6ed8e3d589273db6")
    );
    assert_eq!(
        annex_i_kdf(&ck, &ik, 0x58, b"AES_GMAC_SALT").to_vec(),
        h("de2d8fa4a81e8872bed63550622ea1e4b741f4e0ef633fa3ecbf4e12dbc2b1c2")
    );
    assert_eq!(gcm_salt(&ck, &ik).to_vec(), h("89273db6"));
    assert_eq!(gmac_salt(&ck, &ik).to_vec(), h("dbc2b1c2"));
}

#[test]
fn key_expansion_annex_i() {
    let ck: [u8; 16] = core::array::from_fn(|i| i as u8);
    let ik: [u8; 16] = core::array::from_fn(|i| 0x80 + i as u8);
    let k = EspKeys::derive(
        Suite::new(IntegAlg::HmacSha1_96, EncAlg::DesEde3Cbc).unwrap(),
        &ck,
        &ik,
    );
    assert_eq!(k.auth_key(), [&ik[..], &[0; 4]].concat());
    assert_eq!(k.enc_key(), [&ck[..], &ck[..8]].concat());
    let k = EspKeys::derive(
        Suite::new(IntegAlg::HmacMd5_96, EncAlg::AesCbc).unwrap(),
        &ck,
        &ik,
    );
    assert_eq!((k.auth_key(), k.enc_key()), (&ik[..], &ck[..]));
    let k = EspKeys::derive(
        Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap(),
        &ck,
        &ik,
    );
    assert_eq!(
        (k.auth_key(), k.enc_key(), k.salt()),
        (&[][..], &ck[..], gcm_salt(&ck, &ik))
    );
    let k = EspKeys::derive(
        Suite::new(IntegAlg::AesGmac, EncAlg::Null).unwrap(),
        &ck,
        &ik,
    );
    assert_eq!(
        (k.auth_key(), k.enc_key(), k.salt()),
        (&ik[..], &[][..], gmac_salt(&ck, &ik))
    );
    assert!(
        !format!("{k:?}").contains("128"),
        "Debug must not show key bytes"
    );
}
