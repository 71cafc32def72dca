//! Property tests: no input makes the AKA parsers panic, and the encoders round-trip.

use pcscf::aka::digest::{self, DigestInput, Qop};
use pcscf::aka::{
    Auts, Milenage, Sqn, UeSqnState, Usim, base64_decode, base64_encode, decode_nonce, hex_array,
    hex_decode,
};
use proptest::prelude::*;

fn usim() -> Usim {
    Usim::new(
        Milenage::new(
            &hex_array("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap(),
            &hex_array("cd63cb71954a9f4e48a5994e37a02baf").unwrap(),
        ),
        UeSqnState::default(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_nonce_strings_never_panic(s in any::<String>()) {
        let _ = decode_nonce(&s);
        let _ = usim().authenticate_nonce(&s);
        let _ = Auts::from_base64(&s);
    }

    #[test]
    fn base64_alphabet_strings_never_panic(s in "[A-Za-z0-9+/=]{0,140}") {
        let _ = decode_nonce(&s);
        let _ = usim().authenticate_nonce(&s);
        let _ = Auts::from_base64(&s);
        let mut out = [0u8; 128];
        let _ = base64_decode(s.as_bytes(), &mut out);
        let mut small = [0u8; 5];
        let _ = base64_decode(s.as_bytes(), &mut small);
    }

    #[test]
    fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut enc = [0u8; 136];
        let text = base64_encode(&data, &mut enc).unwrap();
        let mut dec = [0u8; 100];
        prop_assert_eq!(base64_decode(text.as_bytes(), &mut dec).unwrap(), &data[..]);
    }

    #[test]
    fn any_32_plus_bytes_decode_as_nonce(data in proptest::collection::vec(any::<u8>(), 32..90)) {
        let mut enc = [0u8; 120];
        let text = base64_encode(&data, &mut enc).unwrap();
        let (rand, autn) = decode_nonce(text).unwrap();
        prop_assert_eq!(&rand[..], &data[..16]);
        prop_assert_eq!(&autn[..], &data[16..32]);
        // And a random AUTN is (overwhelmingly) a MAC failure, never a panic.
        prop_assert!(usim().authenticate(&rand, &autn).is_err());
    }

    #[test]
    fn verify_never_panics(resp in proptest::collection::vec(any::<u8>(), 0..64),
                           nc in "[0-9a-f]{0,10}", body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let inp = DigestInput {
            username: b"u", realm: b"r", nonce: b"n", method: b"REGISTER", uri: b"sip:x",
            qop: Qop::AuthInt { nc: nc.as_bytes(), cnonce: b"c", body: &body },
        };
        let _ = digest::verify(&inp, b"pw", &resp);
        let mut out = [0u8; 40];
        let _ = hex_decode(&resp, &mut out);
    }

    #[test]
    fn sqn_bytes_round_trip(v in 0u64..(1 << 48)) {
        let s = Sqn::new(v).unwrap();
        prop_assert_eq!(Sqn::from_bytes(s.to_bytes()), s);
    }
}
