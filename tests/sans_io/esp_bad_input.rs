//! Bad input: each failure has its own typed error; random input never panics and never moves
//! the replay window.

use crate::support::esp::*;
use hmac::{KeyInit, Mac};
use pcscf::esp::{BackendKind, EncAlg, EspError, Frame, IntegAlg, Sa, SaOptions, Suite, packet};
use proptest::prelude::*;

fn null_sha1() -> Suite {
    Suite::new(IntegAlg::HmacSha1_96, EncAlg::Null).unwrap()
}

/// Re-signs a null+hmac-sha-1-96 ESP packet (IPv4, 20-byte header) after editing it.
fn resign_null_sha1(pkt: &mut [u8]) {
    let mut key = IK.to_vec();
    key.extend_from_slice(&[0; 4]);
    let n = pkt.len();
    let mut m = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(&key).unwrap();
    m.update(&pkt[20..n - 12]);
    let t = m.finalize().into_bytes();
    pkt[n - 12..].copy_from_slice(&t[..12]);
}

#[test]
fn icv_and_ciphertext_bit_flips() {
    for &suite in &Suite::ALL {
        for &b in BackendKind::ALL {
            let tx = sa(0x42, suite, b);
            let rx = sa(0x42, suite, b);
            let pkt = ip_packet(Fam::V4, L4::Udp, 1, 2, b"INVITE sip:bob SIP/2.0", false);
            let good = protect(&tx, &pkt);
            let n = good.len();
            for at in [
                n - 1,
                n - suite.icv_len(),
                20 + 8,
                n - suite.icv_len() - 1,
                20 + 3,
            ] {
                let mut p = good.clone();
                p[at] ^= 0x01;
                let want = if at == 23 {
                    EspError::SpiMismatch
                } else {
                    EspError::IcvMismatch
                };
                assert_eq!(
                    rx.inbound_ip(&mut p),
                    Err(want),
                    "{} byte {at}",
                    suite_name(suite)
                );
            }
            // Sequence number is authenticated too.
            let mut p = good.clone();
            p[27] ^= 0x02;
            assert_eq!(rx.inbound_ip(&mut p), Err(EspError::IcvMismatch));
            assert_eq!(
                rx.highest_seq_received(),
                0,
                "window moved on a forged packet"
            );
            let mut p = good.clone();
            rx.inbound_ip(&mut p).unwrap();
        }
    }
}

#[test]
fn truncated() {
    for &suite in &Suite::ALL {
        let tx = sa(0x42, suite, BackendKind::default());
        let rx = sa(0x42, suite, BackendKind::default());
        let good = protect(&tx, &ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false));
        // Buffer shorter than the IP length field.
        let mut p = good[..good.len() - 1].to_vec();
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Truncated));
        // ESP too short for header + IV + trailer + ICV (length fields consistent).
        let min = 8 + suite.iv_len() + 2 + suite.icv_len();
        let mut p = good[..20 + min - 1].to_vec();
        p[2..4].copy_from_slice(&((20 + min - 1) as u16).to_be_bytes());
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Truncated));
        let mut p = good.clone();
        assert_eq!(
            rx.inbound(&mut p, 20..good.len() + 1),
            Err(EspError::Truncated)
        );
        let mut p = vec![0x45];
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Truncated));
    }
    let rx = sa(0x42, null_sha1(), BackendKind::default());
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 50, 64];
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Truncated));
}

#[test]
fn bad_padding() {
    let tx = sa(0x42, null_sha1(), BackendKind::default());
    let rx = sa(0x42, null_sha1(), BackendKind::default());
    // 1 byte of UDP data: 8 + 1 = 9 payload bytes, 1 pad byte to reach 12.
    let good = protect(&tx, &ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false));
    let n = good.len();
    let (pad_at, len_at) = (n - 12 - 3, n - 12 - 2);
    assert_eq!((good[pad_at], good[len_at]), (1, 1));
    let mut p = good.clone();
    p[pad_at] = 7;
    resign_null_sha1(&mut p);
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::BadPadding));
    let mut p = good.clone();
    p[len_at] = 200; // more than the payload
    resign_null_sha1(&mut p);
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::BadPadding));
    assert_eq!(rx.highest_seq_received(), 0, "window moved on bad padding");
    let mut p = good.clone();
    rx.inbound_ip(&mut p).unwrap();
    // Misaligned CBC body.
    let cbc = Suite::new(IntegAlg::HmacSha1_96, EncAlg::AesCbc).unwrap();
    let tx = sa(0x43, cbc, BackendKind::default());
    let rx = sa(0x43, cbc, BackendKind::default());
    let mut p = protect(&tx, &ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false));
    p.remove(50);
    let l = p.len() as u16;
    p[2..4].copy_from_slice(&l.to_be_bytes());
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Misaligned));
}

#[test]
fn replayed_and_too_old() {
    for &suite in &Suite::ALL {
        let tx = sa(0x42, suite, BackendKind::default());
        let rx = sa(0x42, suite, BackendKind::default());
        let pkts: Vec<Vec<u8>> = (0..70)
            .map(|_| protect(&tx, &ip_packet(Fam::V6, L4::Tcp, 1, 2, b"y", false)))
            .collect();
        let mut p = pkts[0].clone();
        rx.inbound_ip(&mut p).unwrap();
        let mut p = pkts[0].clone();
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Replayed));
        let mut p = pkts[69].clone();
        rx.inbound_ip(&mut p).unwrap();
        let mut p = pkts[5].clone(); // seq 6: 6 + 64 <= 70
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::TooOld));
        let mut p = pkts[6].clone(); // seq 7: inside
        rx.inbound_ip(&mut p).unwrap();
        let mut p = pkts[6].clone();
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Replayed));
        // A replayed packet with a broken ICV is refused before crypto as Replayed.
        let mut p = pkts[69].clone();
        let n = p.len();
        p[n - 1] ^= 1;
        assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Replayed));
        assert_eq!(rx.highest_seq_received(), 70);
    }
}

#[test]
fn algorithms() {
    assert_eq!(
        Suite::from_tokens("hmac-sha-256-128", "aes-cbc"),
        Err(EspError::UnknownAlgorithm)
    );
    assert_eq!(
        Suite::from_tokens("hmac-sha-1-96", "aes-ctr"),
        Err(EspError::UnknownAlgorithm)
    );
    assert_eq!(
        Suite::from_tokens("", "null"),
        Err(EspError::UnknownAlgorithm)
    );
    assert_eq!(
        Suite::from_tokens("hmac-sha-1-96", "aes-gcm"),
        Err(EspError::UnsupportedCombination)
    );
    assert_eq!(
        Suite::from_tokens("aes-gmac", "aes-cbc"),
        Err(EspError::UnsupportedCombination)
    );
    assert_eq!(
        Suite::from_tokens("null", "null"),
        Err(EspError::UnsupportedCombination)
    );
    assert_eq!(
        Sa::from_aka(1, "md5", "null", &CK, &IK, SaOptions::default()).err(),
        Some(EspError::UnknownAlgorithm)
    );
    assert_eq!(
        Sa::from_aka(0, "hmac-md5-96", "null", &CK, &IK, SaOptions::default()).err(),
        Some(EspError::BadSpi)
    );
    for &s in &Suite::ALL {
        let t = Suite::from_tokens(s.integ().token(), s.enc().token()).unwrap();
        assert_eq!(t, s);
    }
    let bad = pcscf::esp::EspKeys::from_raw(&[1; 16], &[2; 12], [0; 4]).unwrap();
    assert_eq!(
        Sa::new(
            1,
            Suite::new(IntegAlg::HmacSha1_96, EncAlg::AesCbc).unwrap(),
            &bad,
            SaOptions::default()
        )
        .err(),
        Some(EspError::BadKeyLength)
    );
}

#[test]
fn empty_payload_and_dummy() {
    let tx = sa(0x42, null_sha1(), BackendKind::default());
    let rx = sa(0x42, null_sha1(), BackendKind::default());
    // Outbound: an IP header with nothing after it.
    let mut hdr = ip_packet(Fam::V4, L4::Udp, 1, 2, b"", false);
    hdr.truncate(20);
    hdr[2..4].copy_from_slice(&20u16.to_be_bytes());
    let mut buf = frame_buf(&hdr);
    let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + 20);
    assert_eq!(tx.outbound(&mut f), Err(EspError::EmptyPayload));
    // Inbound: take a real packet, make it payload-less with nh 17, re-sign.
    let good = protect(&tx, &ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false));
    let n = good.len();
    let mut p: Vec<u8> = good[..28].to_vec();
    p.extend_from_slice(&[1, 2, 2, 17]); // pad 1,2, pad len 2, nh 17
    p.extend_from_slice(&[0; 12]);
    let l = p.len() as u16;
    p[2..4].copy_from_slice(&l.to_be_bytes());
    resign_null_sha1(&mut p);
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::EmptyPayload));
    // Dummy: next header 59.
    let mut p = good.clone();
    p[n - 13] = 59;
    resign_null_sha1(&mut p);
    let mut q = p.clone();
    // seq 1 was used by the empty one above (authentic, so it moved the window); use seq 2.
    let good2 = protect(&tx, &ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false));
    let mut d = good2.clone();
    d[n - 13] = 59;
    resign_null_sha1(&mut d);
    assert_eq!(rx.inbound_ip(&mut d), Err(EspError::Dummy));
    assert_eq!(rx.inbound_ip(&mut q), Err(EspError::Replayed));
}

#[test]
fn seq_exhausted_no_room_and_headers() {
    let tx = sa(
        0x42,
        Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap(),
        BackendKind::default(),
    );
    let pkt = ip_packet(Fam::V4, L4::Udp, 1, 2, b"x", false);
    tx.force_last_seq_sent(u32::MAX - 1);
    let mut buf = frame_buf(&pkt);
    let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
    assert_eq!(tx.outbound(&mut f), Ok(u32::MAX));
    for _ in 0..3 {
        let mut buf = frame_buf(&pkt);
        let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
        assert_eq!(tx.outbound(&mut f), Err(EspError::SeqExhausted));
        assert_eq!(f.start, HEADROOM, "frame changed on error");
    }
    let tx = sa(
        0x42,
        Suite::new(IntegAlg::HmacSha1_96, EncAlg::AesCbc).unwrap(),
        BackendKind::default(),
    );
    // Headroom 23 < 8 + 16.
    let mut buf = vec![0u8; 23 + pkt.len() + 64];
    buf[23..23 + pkt.len()].copy_from_slice(&pkt);
    let mut f = Frame::new(&mut buf, 23, 23 + pkt.len());
    assert_eq!(tx.outbound(&mut f), Err(EspError::NoRoom));
    // Tailroom 10 < pad + 2 + 12.
    let mut buf = vec![0u8; 64 + pkt.len() + 10];
    buf[64..64 + pkt.len()].copy_from_slice(&pkt);
    let mut f = Frame::new(&mut buf, 64, 64 + pkt.len());
    assert_eq!(tx.outbound(&mut f), Err(EspError::NoRoom));
    assert_eq!(tx.last_seq_sent(), 0, "no sequence number burnt on NoRoom");
    // Not ESP / wrong SPI / fragment / bad version.
    let rx = sa(0x42, null_sha1(), BackendKind::default());
    let mut p = pkt.clone();
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::NotEsp));
    let other = sa(0x43, null_sha1(), BackendKind::default());
    let mut p = protect(&other, &pkt);
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::SpiMismatch));
    assert_eq!(packet::peek_spi(&p), Ok(0x43));
    let mut p = protect(&rx, &pkt);
    p[6] = 0x20; // MF
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::Fragment));
    let mut p = protect(&rx, &pkt);
    p[0] = 0x55;
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::BadIpHeader));
    let mut p = protect(&rx, &pkt);
    p[0] = 0x44; // IHL 4
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::BadIpHeader));
    // IPv6 fragment header with offset.
    let mut v6 = ip_packet(Fam::V6, L4::Udp, 1, 2, b"abc", false);
    v6[6] = 44;
    let mut frag = vec![50, 0, 0, 8, 0, 0, 0, 1];
    frag.extend_from_slice(&[0; 16]);
    v6.truncate(40);
    v6.extend_from_slice(&frag);
    v6[4..6].copy_from_slice(&24u16.to_be_bytes());
    assert_eq!(rx.inbound_ip(&mut v6), Err(EspError::Fragment));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Random bytes (often with a plausible IPv4/IPv6 + ESP prefix) never panic and never move
    /// the window.
    #[test]
    fn random_bytes_never_panic(
        kind in 0u8..3,
        suite_i in 0usize..8,
        spi_ok in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..400),
        start in 0usize..64,
        end in 0usize..500,
    ) {
        let suite = Suite::ALL[suite_i];
        for &b in BackendKind::ALL {
            let rx = sa(0x4242, suite, b);
            let mut p = match kind {
                0 => body.clone(),
                1 => {
                    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 50, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
                    let len = (20 + body.len()) as u16;
                    p[2..4].copy_from_slice(&len.to_be_bytes());
                    if spi_ok { p.extend_from_slice(&0x4242u32.to_be_bytes()); }
                    p.extend_from_slice(&body);
                    p
                }
                _ => {
                    let mut p = vec![0x60, 0, 0, 0, 0, 0, 50, 64];
                    p.extend_from_slice(&[0; 32]);
                    let plen = (body.len() + if spi_ok { 4 } else { 0 }) as u16;
                    p[4..6].copy_from_slice(&plen.to_be_bytes());
                    if spi_ok { p.extend_from_slice(&0x4242u32.to_be_bytes()); }
                    p.extend_from_slice(&body);
                    p
                }
            };
            prop_assert!(rx.inbound_ip(&mut p).is_err());
            let mut q = body.clone();
            let _ = rx.inbound(&mut q, start..end);
            prop_assert_eq!(rx.highest_seq_received(), 0);
            // Outbound on random frames must not panic either.
            let mut buf = body.clone();
            let e = end.min(buf.len());
            let mut f = Frame::new(&mut buf, start.min(e), e);
            let _ = rx.outbound(&mut f);
        }
    }

    /// Mutating any byte of a real ESP packet (after the outer header), or truncating it, is
    /// refused and leaves the window alone.
    #[test]
    fn mutated_real_packets_rejected(
        suite_i in 0usize..8,
        v6 in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 1..200),
        at in any::<prop::sample::Index>(),
        x in 1u8..=255,
        cut in 1usize..40,
    ) {
        let suite = Suite::ALL[suite_i];
        let fam = if v6 { Fam::V6 } else { Fam::V4 };
        let tx = sa(0x77, suite, BackendKind::default());
        let rx = sa(0x77, suite, BackendKind::RustCrypto);
        let good = protect(&tx, &ip_packet(fam, L4::Udp, 5, 6, &data, false));
        let hdr = if v6 { 40 } else { 20 };
        let i = hdr + at.index(good.len() - hdr);
        let mut p = good.clone();
        p[i] ^= x;
        prop_assert!(rx.inbound_ip(&mut p).is_err());
        let mut p = good[..good.len() - cut.min(good.len() - 1)].to_vec();
        prop_assert!(rx.inbound_ip(&mut p).is_err());
        prop_assert_eq!(rx.highest_seq_received(), 0);
        let mut p = good.clone();
        prop_assert!(rx.inbound_ip(&mut p).is_ok());
    }
}
