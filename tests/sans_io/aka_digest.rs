//! Digest AKAv1-MD5 (RFC 3310) worked on TS 35.208 test set 1, plus verification.

use pcscf::aka::digest::{self, DigestInput, Qop};
use pcscf::aka::{
    AkaError, Auts, Milenage, NONCE_B64_LEN, Res, Sqn, compute_auts, decode_nonce, generate_vector,
    hex_array, verify_auts,
};

const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
const RAND: &str = "23553cbe9637a89d218ae64dae47bf35";
const NONCE: &str = "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=";
const USER: &[u8] = b"001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
const REALM: &[u8] = b"ims.mnc001.mcc001.3gppnetwork.org";
const URI: &[u8] = b"sip:ims.mnc001.mcc001.3gppnetwork.org";

fn milenage() -> Milenage {
    Milenage::new(&hex_array(K).unwrap(), &hex_array(OPC).unwrap())
}

fn input(qop: Qop<'static>) -> DigestInput<'static> {
    DigestInput {
        username: USER,
        realm: REALM,
        nonce: NONCE.as_bytes(),
        method: b"REGISTER",
        uri: URI,
        qop,
    }
}

fn res() -> Res {
    Res::from(hex_array::<8>("a54211d5e3ba50bf").unwrap())
}

#[test]
fn autn_and_nonce() {
    let m = milenage();
    let rand = hex_array::<16>(RAND).unwrap();
    let sqn = Sqn::from_bytes(hex_array("ff9bb4d0b607").unwrap());
    let av = generate_vector(&m, &rand, sqn, &[0xb9, 0xb9]);
    assert_eq!(
        av.autn,
        hex_array::<16>("55f328b43577b9b94a9ffac354dfafb3").unwrap()
    );
    assert_eq!(av.xres, res());
    let mut buf = [0u8; NONCE_B64_LEN];
    assert_eq!(av.nonce(&mut buf), NONCE);
    assert_eq!(decode_nonce(NONCE).unwrap(), (av.rand, av.autn));
}

#[test]
fn ha1_ha2_and_responses() {
    let res = res();
    assert_eq!(
        digest::ha1(USER, REALM, res.as_bytes()).as_str(),
        "da00069eb0de6587da7e09ef503c29db"
    );
    assert_eq!(
        digest::ha2(b"REGISTER", URI, &Qop::None).as_str(),
        "df94ff42c4e05afeddd46c372e8208b4"
    );
    let no_qop = input(Qop::None);
    assert_eq!(
        digest::response_aka(&no_qop, &res).as_str(),
        "1125a3c2e293453f07e08957ff235efc"
    );
    let auth = input(Qop::Auth {
        nc: b"00000001",
        cnonce: b"0a4f113b",
    });
    assert_eq!(
        digest::response_aka(&auth, &res).as_str(),
        "402ab8df9f3a4d63a9f47c2f90e02938"
    );
    assert_eq!(digest::ALGORITHM, "AKAv1-MD5");
}

#[test]
fn res_as_hex_string_is_the_known_wrong_value() {
    let wrong = digest::response(&input(Qop::None), b"a54211d5e3ba50bf");
    assert_eq!(wrong.as_str(), "b9305fd07d0d91eaa3b4a78e81354666");
    assert_ne!(wrong, digest::response_aka(&input(Qop::None), &res()));
}

#[test]
fn auth_int_hashes_the_body() {
    // Independent recomputation (Python hashlib) of RFC 2617 §3.2.2.3 with test set 1:
    // HA2 = MD5("REGISTER:" uri ":" MD5(body)), response with nc=00000001 cnonce=0a4f113b.
    let cases: [(&[u8], &str, &str); 2] = [
        (
            b"",
            "050bbbfef45dc8fabb4f60f5fcb4de79",
            "5682a0ac7d51b056ce2245ed00d885c0",
        ),
        (
            b"v=0\r\n",
            "14136962315a5b621b32a0a6ace33444",
            "de76020441cc301ff24633f46ab2efa5",
        ),
    ];
    for (body, ha2, resp) in cases {
        let qop = Qop::AuthInt {
            nc: b"00000001",
            cnonce: b"0a4f113b",
            body,
        };
        assert_eq!(digest::ha2(b"REGISTER", URI, &qop).as_str(), ha2);
        let r = digest::response_aka(&input(qop), &res());
        assert_eq!(r.as_str(), resp);
        assert!(digest::verify_aka(&input(qop), &res(), r.as_bytes()).is_ok());
    }
}

#[test]
fn verify_accepts_either_case_and_rejects_bad_values() {
    let inp = input(Qop::Auth {
        nc: b"00000001",
        cnonce: b"0a4f113b",
    });
    let xres = res();
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"402ab8df9f3a4d63a9f47c2f90e02938"),
        Ok(())
    );
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"402AB8DF9F3A4D63A9F47C2F90E02938"),
        Ok(())
    );
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"402ab8df9f3a4d63a9f47c2f90e02939"),
        Err(AkaError::ResponseMismatch)
    );
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"402ab8df"),
        Err(AkaError::MalformedResponse)
    );
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"zz2ab8df9f3a4d63a9f47c2f90e02938"),
        Err(AkaError::MalformedResponse)
    );
    // The no-qop response does not verify as a qop=auth one.
    assert_eq!(
        digest::verify_aka(&inp, &xres, b"1125a3c2e293453f07e08957ff235efc"),
        Err(AkaError::ResponseMismatch)
    );
}

#[test]
fn qop_from_params() {
    assert_eq!(Qop::from_params(None, None, None, b""), Ok(Qop::None));
    assert_eq!(
        Qop::from_params(Some(b"AUTH"), Some(b"00000001"), Some(b"x"), b""),
        Ok(Qop::Auth {
            nc: b"00000001",
            cnonce: b"x"
        })
    );
    assert_eq!(
        Qop::from_params(Some(b"auth-int"), Some(b"00000001"), Some(b"x"), b"body"),
        Ok(Qop::AuthInt {
            nc: b"00000001",
            cnonce: b"x",
            body: b"body"
        })
    );
    assert_eq!(
        Qop::from_params(Some(b"auth"), None, Some(b"x"), b""),
        Err(AkaError::MissingParameter("nc"))
    );
    assert_eq!(
        Qop::from_params(Some(b"auth-conf"), Some(b"1"), Some(b"x"), b""),
        Err(AkaError::UnsupportedQop)
    );
}

#[test]
fn auts_example() {
    let m = milenage();
    let rand = hex_array::<16>(RAND).unwrap();
    let sqn_ms = Sqn::from_bytes(hex_array("ff9bb4d0b607").unwrap());
    let auts = compute_auts(&m, &rand, sqn_ms);
    assert_eq!(
        auts.as_bytes(),
        &hex_array::<14>("ba853f3c123ccf44e93596e355c6").unwrap()
    );
    let mut buf = [0u8; 20];
    assert_eq!(auts.to_base64(&mut buf), "uoU/PBI8z0TpNZbjVcY=");
    let parsed = Auts::from_base64("uoU/PBI8z0TpNZbjVcY=").unwrap();
    assert_eq!(parsed, auts);
    assert_eq!(verify_auts(&m, &rand, &parsed), Ok(sqn_ms));

    // The Authorization that carries auts is computed with an empty password (RFC 3310 §3.4).
    let inp = input(Qop::None);
    let r = digest::response_auts(&inp);
    assert_eq!(r.as_str(), "6821238d21754c12bf172c668144dbb6");
    assert_eq!(r, digest::response(&inp, b""));
    assert!(digest::verify(&inp, b"", r.as_bytes()).is_ok());
    assert_eq!(
        digest::verify_aka(&inp, &res(), r.as_bytes()),
        Err(AkaError::ResponseMismatch)
    );
}

#[test]
fn auts_malformed_inputs_are_errors() {
    assert!(Auts::from_base64("uoU/PBI8z0TpNZbjVc").is_err()); // 13 bytes
    assert!(Auts::from_base64("uoU/PBI8z0TpNZbjVcY=AAAA").is_err()); // too long
    assert!(Auts::from_base64("uoU/PBI8z0TpNZbjVcY!").is_err());
    assert!(Auts::from_base64("").is_err());
    assert_eq!(
        Auts::from_slice(&[0u8; 13]),
        Err(AkaError::InvalidLength {
            expected: 14,
            got: 13
        })
    );
}
