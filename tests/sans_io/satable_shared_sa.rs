//! Two or more workers using one SA through the table at once: outbound sequence numbers stay
//! unique, and each inbound sequence number is accepted exactly once.

use crate::support::satable::{CK, IK, meta, udp4, v4};
use pcscf::esp::{EspError, Frame, Sa, SaOptions};
use pcscf::satable::{SaTableConfig, sa_table};
use std::sync::{Arc, Barrier};
use std::thread;

const THREADS: usize = 4;
const PER_THREAD: usize = 256; // 1024 packets: all fit in a 1024 window

fn sa(spi: u32, ealg: &str) -> Sa {
    let opts = SaOptions {
        window: 1024,
        ..SaOptions::default()
    };
    Sa::from_aka(spi, "hmac-sha-1-96", ealg, &CK, &IK, opts).unwrap()
}

#[test]
fn concurrent_outbound_and_inbound_on_one_sa() {
    for ealg in ["null", "aes-cbc"] {
        run(ealg);
    }
}

fn run(ealg: &str) {
    let cfg = SaTableConfig {
        inbound_capacity: 16,
        outbound_capacity: 16,
        ..SaTableConfig::default()
    };
    let (mut w, r) = sa_table(cfg).unwrap();
    // Loopback: our inbound SA and the "UE's" outbound one share SPI and keys.
    let spi = w.reserve_spi().unwrap();
    w.install_inbound(sa(spi, ealg), &meta(v4(2), 5064, 5063, 1))
        .unwrap();
    w.install_outbound(sa(spi, ealg), &meta(v4(2), 5064, 5063, 1))
        .unwrap();

    // Outbound from THREADS workers at once.
    let bar = Arc::new(Barrier::new(THREADS));
    let outs: Vec<Vec<(u32, Vec<u8>)>> = thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|_| {
                let (r, bar) = (r.clone(), Arc::clone(&bar));
                s.spawn(move || {
                    bar.wait();
                    let mut v = Vec::new();
                    for _ in 0..PER_THREAD {
                        let (mut buf, st, en) = udp4(100);
                        let g = r.pin();
                        let e = g.outbound(v4(2), 5064, 5063).unwrap();
                        let mut f = Frame::new(&mut buf, st, en);
                        let seq = e.sa().outbound(&mut f).unwrap();
                        let pkt = f.packet().to_vec();
                        v.push((seq, pkt));
                    }
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seqs: Vec<u32> = outs.iter().flatten().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    let want: Vec<u32> = (1..=(THREADS * PER_THREAD) as u32).collect();
    assert_eq!(seqs, want, "sequence numbers must be unique and dense");

    // Every packet delivered twice, once to each of two workers, in different orders.
    let pkts: Vec<(u32, Vec<u8>)> = outs.into_iter().flatten().collect();
    let bar = Arc::new(Barrier::new(2));
    let accepted: Vec<Vec<u32>> = thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let (r, bar, pkts) = (r.clone(), Arc::clone(&bar), &pkts);
                s.spawn(move || {
                    bar.wait();
                    let mut ok = Vec::new();
                    let order: Box<dyn Iterator<Item = &(u32, Vec<u8>)>> = if t == 0 {
                        Box::new(pkts.iter())
                    } else {
                        Box::new(pkts.iter().rev())
                    };
                    for (seq, p) in order {
                        let mut p = p.clone();
                        let g = r.pin();
                        let e = g.inbound(spi).unwrap();
                        match e.sa().inbound_ip(&mut p) {
                            Ok(inb) => {
                                assert_eq!(inb.seq, *seq);
                                ok.push(inb.seq);
                            }
                            Err(EspError::Replayed) => {}
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<u32> = accepted.concat();
    all.sort_unstable();
    assert_eq!(
        all, want,
        "each sequence number accepted exactly once ({ealg})"
    );
}
