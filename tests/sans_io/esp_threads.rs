//! `Sa` is `Send + Sync` and its `&self` per-packet methods are safe to share: concurrent senders
//! get distinct sequence numbers, concurrent receivers accept each sequence number exactly once.

use crate::support::esp::*;
use pcscf::esp::{BackendKind, EspError, Sa, Suite};
use std::sync::atomic::{AtomicUsize, Ordering};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn sa_is_send_sync() {
    assert_send_sync::<Sa>();
}

#[test]
fn concurrent_outbound_and_inbound() {
    for &b in BackendKind::ALL {
        let suite = Suite::ALL[3]; // hmac-sha-1-96 + aes-cbc
        let tx = sa(0x900, suite, b);
        let rx = sa(0x900, suite, b);
        let pkt = ip_packet(Fam::V4, L4::Udp, 1, 2, b"MESSAGE sip:a SIP/2.0\r\n", false);
        const THREADS: usize = 4;
        const PER: usize = 40;
        let mut all: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|_| s.spawn(|| (0..PER).map(|_| protect(&tx, &pkt)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut seqs: Vec<u32> = all
            .iter()
            .map(|p| u32::from_be_bytes([p[24], p[25], p[26], p[27]]))
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=(THREADS * PER) as u32).collect::<Vec<_>>());
        // Every thread tries to receive every packet (in seq order): each is accepted once.
        all.sort_by_key(|p| u32::from_be_bytes([p[24], p[25], p[26], p[27]]));
        let ok = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for p in &all {
                        let mut p = p.clone();
                        match rx.inbound_ip(&mut p) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(EspError::Replayed | EspError::TooOld) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                });
            }
        });
        assert_eq!(ok.load(Ordering::Relaxed), THREADS * PER, "{b:?}");
    }
}
