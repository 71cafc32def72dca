//! Round trips: every suite × IPv4/IPv6 × UDP/TCP × sender backend × receiver backend; the
//! decapsulated packet must equal the original byte for byte.

use crate::support::esp::*;
use pcscf::esp::{
    BackendKind, EncAlg, EspError, Frame, IntegAlg, Sa, SaOptions, Suite, overhead, packet,
};

#[test]
fn every_suite_family_transport_backend() {
    let mut n = 0;
    for &suite in &Suite::ALL {
        for fam in [Fam::V4, Fam::V6] {
            for l4 in [L4::Udp, L4::Tcp] {
                for ext in [false, true] {
                    if ext && fam == Fam::V4 {
                        continue;
                    }
                    for &btx in BackendKind::ALL {
                        for &brx in BackendKind::ALL {
                            let tx = sa(0x1234_5678, suite, btx);
                            let rx = sa(0x1234_5678, suite, brx);
                            for len in [1usize, 2, 3, 13, 14, 15, 16, 17, 100, 1000, 1400] {
                                let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                                let pkt = ip_packet(fam, l4, 50001, 5064, &data, ext);
                                let mut esp = protect(&tx, &pkt);
                                let ctx = format!(
                                    "{} {fam:?} {l4:?} ext={ext} {btx:?}->{brx:?} len={len}",
                                    suite_name(suite)
                                );
                                // Outer header says ESP and the length is right.
                                let l = packet::locate_esp(&esp)
                                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                                assert_eq!(l.end, esp.len(), "{ctx}");
                                let o = overhead(suite, pkt.len() - l.header_len);
                                assert_eq!(esp.len(), pkt.len() + o.head + o.tail, "{ctx}");
                                if fam == Fam::V4 {
                                    assert!(
                                        pcscf::wire::Ipv4Packet::new_checked(&esp[..])
                                            .unwrap()
                                            .verify_checksum(),
                                        "{ctx}"
                                    );
                                }
                                // Trailer 4-byte aligned (RFC 4303 §2.4).
                                assert_eq!(
                                    (esp.len() - l.header_len - suite.icv_len()) % 4,
                                    0,
                                    "{ctx}"
                                );
                                let (range, inb) = rx
                                    .decapsulate(&mut esp)
                                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                                assert_eq!(&esp[range], &pkt[..], "{ctx}");
                                assert_eq!(inb.next_header, if l4 == L4::Udp { 17 } else { 6 });
                                n += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(n > 0);
}

#[test]
fn sequence_numbers_and_inbound_ranges() {
    for &suite in &Suite::ALL {
        let tx = sa(0x100, suite, BackendKind::default());
        let rx = sa(0x100, suite, BackendKind::RustCrypto);
        for want in 1..=5u32 {
            let pkt = ip_packet(Fam::V4, L4::Udp, 1, 2, b"REGISTER sip:x SIP/2.0\r\n", false);
            let mut buf = frame_buf(&pkt);
            let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
            assert_eq!(tx.outbound(&mut f).unwrap(), want);
            let (s, e) = (f.start, f.end);
            // The payload was not moved: UDP header still at its old offset.
            assert_eq!(s + 20 + 8 + suite.iv_len(), HEADROOM + 20);
            let inb = rx.inbound_ip(&mut buf[s..e]).unwrap();
            assert_eq!(inb.seq, want);
            assert_eq!(&buf[s..e][inb.payload.clone()], &pkt[20..]);
        }
        assert_eq!(tx.last_seq_sent(), 5);
        assert_eq!(rx.highest_seq_received(), 5);
    }
}

#[test]
fn out_of_order_within_window_accepted() {
    let suite = Suite::new(IntegAlg::HmacSha1_96, EncAlg::AesCbc).unwrap();
    let tx = sa(0x200, suite, BackendKind::default());
    let rx = sa(0x200, suite, BackendKind::default());
    let pkts: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            protect(
                &tx,
                &ip_packet(Fam::V6, L4::Udp, 1, 2, &[i as u8; 10], false),
            )
        })
        .collect();
    // 100 first, then 50..99 backwards (inside a 64 window: 37..99 are), then 36 is too old.
    let mut p = pkts[99].clone();
    rx.inbound_ip(&mut p).unwrap();
    for i in (36..99).rev() {
        let mut p = pkts[i].clone();
        rx.inbound_ip(&mut p)
            .unwrap_or_else(|e| panic!("seq {}: {e}", i + 1));
    }
    let mut p = pkts[35].clone();
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::TooOld));
    // A big jump, then an old one.
    let mut p = pkts[199].clone();
    rx.inbound_ip(&mut p).unwrap();
    let mut p = pkts[120].clone();
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::TooOld));
    let mut p = pkts[140].clone();
    rx.inbound_ip(&mut p).unwrap();
}

#[test]
fn large_window() {
    let suite = Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap();
    let keys = pcscf::esp::EspKeys::derive(suite, &CK, &IK);
    let o = SaOptions {
        window: 1024,
        ..SaOptions::default()
    };
    let tx = Sa::new(9, suite, &keys, o).unwrap();
    let rx = Sa::new(9, suite, &keys, o).unwrap();
    let pkts: Vec<Vec<u8>> = (0..1100)
        .map(|_| protect(&tx, &ip_packet(Fam::V4, L4::Tcp, 1, 2, b"x", false)))
        .collect();
    let mut p = pkts[1099].clone();
    rx.inbound_ip(&mut p).unwrap();
    let mut p = pkts[1100 - 1024].clone(); // seq 77: 77 + 1024 = 1101 > 1100, inside
    rx.inbound_ip(&mut p).unwrap();
    let mut p = pkts[1100 - 1025].clone(); // seq 76: 76 + 1024 = 1100 <= 1100, outside
    assert_eq!(rx.inbound_ip(&mut p), Err(EspError::TooOld));
    assert_eq!(SaOptions { window: 2048, ..o }.window, 2048);
    assert_eq!(
        Sa::new(9, suite, &keys, SaOptions { window: 2048, ..o }).err(),
        Some(EspError::BadWindow)
    );
    assert_eq!(
        Sa::new(9, suite, &keys, SaOptions { window: 32, ..o }).err(),
        Some(EspError::BadWindow)
    );
}

#[test]
fn cbc_ivs_differ_and_gcm_iv_is_spi_seq() {
    let suite = Suite::new(IntegAlg::HmacMd5_96, EncAlg::AesCbc).unwrap();
    let tx = sa(0x300, suite, BackendKind::default());
    let pkt = ip_packet(Fam::V4, L4::Udp, 1, 2, b"same", false);
    let a = protect(&tx, &pkt);
    let b = protect(&tx, &pkt);
    assert_ne!(a[28..44], b[28..44]);
    assert_ne!(a[44..], b[44..]);
    let gcm = sa(
        0x301,
        Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap(),
        BackendKind::default(),
    );
    let a = protect(&gcm, &pkt);
    let b = protect(&gcm, &pkt);
    // RFC 4106 §3.1: SPI ‖ seq, unique across the SAs sharing the key (see `esp::aead_iv`)
    assert_eq!(a[28..36], [0, 0, 3, 1, 0, 0, 0, 1]);
    assert_eq!(b[28..36], [0, 0, 3, 1, 0, 0, 0, 2]);
}

#[test]
fn from_aka_tokens() {
    let o = SaOptions::default();
    let s = Sa::from_aka(0x1000, "hmac-sha-1-96", "des-ede3-cbc", &CK, &IK, o).unwrap();
    assert_eq!(
        s.suite(),
        Suite::new(IntegAlg::HmacSha1_96, EncAlg::DesEde3Cbc).unwrap()
    );
    assert!(Sa::from_aka(0x1000, "HMAC-MD5-96", "", &CK, &IK, o).is_ok());
    assert!(Sa::from_aka(0x1000, "null", "aes-gcm", &CK, &IK, o).is_ok());
    assert!(Sa::from_aka(0x1000, "aes-gmac", "null", &CK, &IK, o).is_ok());
    let dbg = format!("{s:?}");
    assert!(
        dbg.contains("0x00001000") && dbg.contains("hmac-sha-1-96"),
        "{dbg}"
    );
    assert!(!dbg.to_lowercase().contains("b40ba9"), "{dbg}");
}

/// The SAs of a set share one key state (`Sa::sibling`): each keeps its own SPI, sequence
/// counter and replay window, and interoperates with an SA built from the same keys.
#[test]
fn siblings_share_keys_not_state() {
    for &suite in &Suite::ALL {
        for &b in BackendKind::ALL {
            let first = sa(0x1000, suite, b);
            let sib = first.sibling(0x2000).unwrap();
            assert_eq!(sib.spi(), 0x2000);
            assert_eq!(first.sibling(0).err(), Some(EspError::BadSpi));
            let rx = sa(0x2000, suite, b);
            let pkt = ip_packet(Fam::V4, L4::Udp, 5000, 6000, b"hello over a sibling", false);
            let mut esp = protect(&sib, &pkt);
            let (range, _) = rx.decapsulate(&mut esp).unwrap();
            assert_eq!(&esp[range], &pkt[..], "{}", suite_name(suite));
            // The sibling's counter and window are its own.
            assert_eq!((first.last_seq_sent(), sib.last_seq_sent()), (0, 1));
            let mut esp = protect(&first, &pkt);
            assert_eq!(
                sib.decapsulate(&mut esp).err(),
                Some(EspError::SpiMismatch),
                "{}",
                suite_name(suite)
            );
        }
    }
}

/// CBC IVs (RFC 3602 §2) come from the SA key and (SPI, seq): two SAs sharing a key never use
/// the same IV for the same sequence number, and consecutive IVs of one SA are unrelated.
#[test]
fn cbc_ivs_unique_across_siblings() {
    for &b in BackendKind::ALL {
        for ealg in [EncAlg::AesCbc, EncAlg::DesEde3Cbc] {
            let suite = Suite::new(IntegAlg::HmacSha1_96, ealg).unwrap();
            let a = sa(0x1000, suite, b);
            let c = a.sibling(0x1001).unwrap();
            let pkt = ip_packet(Fam::V4, L4::Udp, 5000, 6000, &[0u8; 64], false);
            let iv_len = suite.iv_len();
            let iv = |p: &[u8]| p[28..28 + iv_len].to_vec();
            let (a1, a2, c1) = (
                iv(&protect(&a, &pkt)),
                iv(&protect(&a, &pkt)),
                iv(&protect(&c, &pkt)),
            );
            assert_ne!(a1, a2);
            assert_ne!(a1, c1);
            assert_ne!(a1, vec![0u8; iv_len]);
        }
    }
}
