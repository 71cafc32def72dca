//! End-to-end AKA in memory: HSS -> S-CSCF -> UE -> S-CSCF, MAC failure, sync failure + resync.

use pcscf::aka::digest::{self, DigestInput, Qop};
use pcscf::aka::{
    AkaError, Auts, HssSubscriber, Milenage, NONCE_B64_LEN, Sqn, SqnGenerator, UeSqnState, Usim,
    decode_nonce, encode_nonce, hex_array,
};

// Test set 2 keys (no 0x5b byte: the same keys work with SIPp).
const K: &str = "0396eb317b6d1c36f19c1c84cd6ffd16";
const OPC: &str = "53c15671c60a4b731c55b4a441c0bde2";
const USER: &[u8] = b"001010000000002@ims.mnc001.mcc001.3gppnetwork.org";
const REALM: &[u8] = b"ims.mnc001.mcc001.3gppnetwork.org";
const URI: &[u8] = b"sip:ims.mnc001.mcc001.3gppnetwork.org";
const AMF: [u8; 2] = [0x80, 0x00];

fn keys() -> Milenage {
    Milenage::new(&hex_array(K).unwrap(), &hex_array(OPC).unwrap())
}

fn hss_at(next: u64) -> HssSubscriber {
    HssSubscriber::new(
        keys(),
        SqnGenerator::new(Sqn::new(next).unwrap(), SqnGenerator::DEFAULT_STEP),
        AMF,
    )
}

fn rand(n: u8) -> [u8; 16] {
    let mut r = [0u8; 16];
    for (i, b) in r.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8 * 7);
    }
    r
}

fn digest_input<'a>(nonce: &'a str, qop: Qop<'a>) -> DigestInput<'a> {
    DigestInput {
        username: USER,
        realm: REALM,
        nonce: nonce.as_bytes(),
        method: b"REGISTER",
        uri: URI,
        qop,
    }
}

#[test]
fn hss_to_ue_to_scscf_round_trip() {
    let mut hss = HssSubscriber::new(keys(), SqnGenerator::with_default_step(), AMF);
    let mut ue = Usim::new(keys(), UeSqnState::default());

    for n in 0..3u8 {
        let av = hss.next_vector(&rand(n)).unwrap();
        let mut buf = [0u8; NONCE_B64_LEN];
        let nonce = av.nonce(&mut buf);

        let got = ue.authenticate_nonce(nonce).unwrap();
        assert_eq!(got.sqn.value(), 32 * (u64::from(n) + 1));
        assert_eq!(got.res, av.xres);
        assert_eq!(got.ck, av.ck);
        assert_eq!(got.ik, av.ik);

        for qop in [
            Qop::None,
            Qop::Auth {
                nc: b"00000001",
                cnonce: b"abcdef01",
            },
            Qop::AuthInt {
                nc: b"00000001",
                cnonce: b"abcdef01",
                body: b"",
            },
        ] {
            let inp = digest_input(nonce, qop);
            let resp = digest::response_aka(&inp, &got.res);
            assert_eq!(digest::verify_aka(&inp, &av.xres, resp.as_bytes()), Ok(()));
        }
        // Replaying the same challenge is now a sync failure.
        assert!(matches!(
            ue.authenticate_nonce(nonce),
            Err(AkaError::SyncFailure { .. })
        ));
    }
    assert_eq!(ue.state().highest().value(), 96);
    assert_eq!(hss.sqn().peek().unwrap().value(), 128);
}

#[test]
fn wrong_key_is_a_mac_failure() {
    let mut hss = hss_at(64);
    let mut other_k = hex_array::<16>(K).unwrap();
    other_k[0] ^= 1;
    let mut ue = Usim::new(
        Milenage::new(&other_k, &hex_array(OPC).unwrap()),
        UeSqnState::default(),
    );
    let av = hss.next_vector(&rand(1)).unwrap();
    assert_eq!(
        ue.authenticate(&av.rand, &av.autn),
        Err(AkaError::MacFailure)
    );
    // A MAC failure does not move the UE's SQN.
    assert_eq!(ue.state().highest(), Sqn::ZERO);
}

#[test]
fn tampered_autn_or_rand_is_a_mac_failure() {
    let mut hss = hss_at(64);
    let mut ue = Usim::new(keys(), UeSqnState::default());
    let av = hss.next_vector(&rand(2)).unwrap();
    for byte in 0..16 {
        let mut autn = av.autn;
        autn[byte] ^= 0x40;
        assert_eq!(
            ue.authenticate(&av.rand, &autn),
            Err(AkaError::MacFailure),
            "AUTN byte {byte}"
        );
        let mut r = av.rand;
        r[byte] ^= 0x40;
        assert_eq!(
            ue.authenticate(&r, &av.autn),
            Err(AkaError::MacFailure),
            "RAND byte {byte}"
        );
    }
    assert!(ue.authenticate(&av.rand, &av.autn).is_ok());
}

#[test]
fn sync_failure_auts_resync_then_next_vector_accepted() {
    // The UE has already seen SQN 10_000 (e.g. from another HSS front-end); the HSS is behind.
    let sqn_ms = Sqn::new(10_000).unwrap();
    let mut ue = Usim::new(keys(), UeSqnState::new(sqn_ms));
    let mut hss = hss_at(64);

    let av = hss.next_vector(&rand(3)).unwrap();
    let mut buf = [0u8; NONCE_B64_LEN];
    let nonce = av.nonce(&mut buf);
    let auts = match ue.authenticate_nonce(nonce) {
        Err(AkaError::SyncFailure { auts }) => auts,
        other => panic!("expected a sync failure, got {other:?}"),
    };
    assert_eq!(ue.state().highest(), sqn_ms);

    // UE -> S-CSCF: Authorization with auts="..." and a response over an empty password.
    let mut auts_buf = [0u8; 20];
    let auts_text = auts.to_base64(&mut auts_buf);
    let inp = digest_input(nonce, Qop::None);
    let resp = digest::response_auts(&inp);
    assert_eq!(digest::verify(&inp, b"", resp.as_bytes()), Ok(()));

    // S-CSCF -> HSS: RAND of the failed challenge + AUTS.
    let (rand_back, _) = decode_nonce(nonce).unwrap();
    let parsed = Auts::from_base64(auts_text).unwrap();
    // A tampered AUTS is refused and leaves the counter alone.
    let mut bad = *parsed.as_bytes();
    bad[13] ^= 1;
    let before = *hss.sqn();
    assert_eq!(
        hss.resync(&rand_back, &Auts::new(bad)),
        Err(AkaError::ResyncMacFailure)
    );
    assert_eq!(*hss.sqn(), before);
    // The genuine one resets the counter to SQN_MS + step.
    assert_eq!(hss.resync(&rand_back, &parsed), Ok(sqn_ms));
    assert_eq!(hss.sqn().peek().unwrap().value(), 10_032);

    // The next vector is accepted.
    let av2 = hss.next_vector(&rand(4)).unwrap();
    let got = ue.authenticate(&av2.rand, &av2.autn).unwrap();
    assert_eq!(got.sqn.value(), 10_032);
    assert_eq!(got.res, av2.xres);
    let mut buf2 = [0u8; NONCE_B64_LEN];
    let nonce2 = encode_nonce(&av2.rand, &av2.autn, &mut buf2);
    let inp2 = digest_input(nonce2, Qop::None);
    let resp2 = digest::response_aka(&inp2, &got.res);
    assert_eq!(
        digest::verify_aka(&inp2, &av2.xres, resp2.as_bytes()),
        Ok(())
    );
}

#[test]
fn auts_with_wrong_rand_is_refused() {
    let mut ue = Usim::new(keys(), UeSqnState::new(Sqn::new(5000).unwrap()));
    let mut hss = hss_at(64);
    let av = hss.next_vector(&rand(5)).unwrap();
    let Err(AkaError::SyncFailure { auts }) = ue.authenticate(&av.rand, &av.autn) else {
        panic!("expected sync failure");
    };
    assert_eq!(hss.resync(&rand(6), &auts), Err(AkaError::ResyncMacFailure));
}

#[test]
fn nonce_errors_are_typed() {
    let mut ue = Usim::new(keys(), UeSqnState::default());
    assert!(matches!(
        ue.authenticate_nonce("not base64!"),
        Err(AkaError::Encoding(_))
    ));
    // 24 bytes only.
    assert_eq!(
        ue.authenticate_nonce("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        Err(AkaError::NonceTooShort { len: 24 })
    );
    assert_eq!(
        ue.authenticate_nonce(""),
        Err(AkaError::NonceTooShort { len: 0 })
    );
    let long = "A".repeat(200);
    assert_eq!(ue.authenticate_nonce(&long), Err(AkaError::NonceTooLong));
    // Server-specific data after RAND ‖ AUTN is allowed (RFC 3310 §3.2).
    let mut hss = hss_at(64);
    let av = hss.next_vector(&rand(7)).unwrap();
    let mut raw = [0u8; 40];
    raw[..16].copy_from_slice(&av.rand);
    raw[16..32].copy_from_slice(&av.autn);
    raw[32..].copy_from_slice(b"srvdata!");
    let mut text = [0u8; 64];
    let nonce = pcscf::aka::base64_encode(&raw, &mut text).unwrap();
    assert!(ue.authenticate_nonce(nonce).is_ok());
}
