//! Concurrency stress: reader threads hammer lookups while the writer installs, republishes,
//! replaces and removes SAs on a small table (slot reuse, SPI generation wrap, tombstones,
//! rebuilds). Catches:
//! - torn / half-built entries: every entry's redundant fields must agree (`is_intact`, SPI vs
//!   the `Sa`'s SPI, binding vs key);
//! - lost or stale updates: per key the writer publishes what it did last; a reader whose
//!   lookup ran entirely between two writer operations on that key must see exactly that;
//! - use after free: the binary's global allocator poisons every freed block (so a freed
//!   `Entry` or `Sa` fails the checks; tests/support/alloc.rs), `Entry`'s own drop poison, and
//!   at the end freed == created and every `Sa` dropped.

use crate::support::satable::{meta, null_sa, v4, v6};
use pcscf::esp::Sa;
use pcscf::satable::{Direction, SaTableConfig, SaTableError, SetState, sa_table};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

const KEYS: usize = 48; // inbound capacity 64: slots get reused constantly
const OUT_KEYS: usize = 120; // outbound capacity 60: often full, tombstones pile up, rebuilds
const READERS: usize = 3;
const OPS: u64 = 60_000;
const MAX_TIME: Duration = Duration::from_secs(5);
const K: u64 = 0x5a5a_0000_0000_0000;
/// Set by the writer on a key's published word before it touches the table for that key (the
/// table store that follows is `Release`, so a reader that saw the change also sees the bit).
const BUSY: u64 = 1 << 31;

/// What the writer last did to a key: version << 1 | present (inbound keys also carry the SPI),
/// plus [`BUSY`] while an operation on the key is under way.
struct Published {
    inb: Vec<AtomicU64>,  // spi << 32 | version << 1 | present
    outb: Vec<AtomicU64>, // version << 1 | present
}

fn out_key(k: usize) -> (IpAddr, u16, u16) {
    let ip = if k.is_multiple_of(2) {
        v4(k as u32 / 4)
    } else {
        v6(k as u32 / 4)
    };
    (ip, 6000 + (k % 4) as u16 / 2, 5100)
}

fn binding(k: usize, version: u64) -> u64 {
    K | (k as u64) << 32 | version
}

/// Every round checks all the safety properties; the table's hash is keyed per run, so whether
/// a round also drives the outbound map through a rebuild (the riskiest publication) depends on
/// how its keys cluster. Rounds repeat until one has rebuilt, and at least one must.
#[test]
fn readers_never_see_torn_stale_or_freed_entries() {
    for round in 0..8 {
        let (ops, rebuilds) = stress_round();
        if rebuilds > 0 || ops < 1000 {
            return;
        }
        eprintln!("round {round}: no rebuild yet, another round");
    }
    panic!("no round exercised an outbound rebuild");
}

/// One stress run; returns (writer ops, outbound rebuilds).
fn stress_round() -> (u64, u64) {
    let cfg = SaTableConfig {
        inbound_capacity: 64,
        outbound_capacity: 60,
        spi_min: 256,
        spi_max: 256 + 64 * 4 - 1, // 4 generations: SPIs wrap
    };
    let (mut w, r) = sa_table(cfg).unwrap();
    let freed = w.freed_counter();
    let pubd = Arc::new(Published {
        inb: (0..KEYS).map(|_| AtomicU64::new(0)).collect(),
        outb: (0..OUT_KEYS).map(|_| AtomicU64::new(0)).collect(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|t| {
            let (r, pubd, stop, lookups) =
                (r.clone(), Arc::clone(&pubd), Arc::clone(&stop), Arc::clone(&lookups));
            thread::spawn(move || {
                let mut n = 0u64;
                let mut x = 0x9e37_79b9u64 + t as u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut g = r.pin();
                    for _ in 0..64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = (x % KEYS as u64) as usize;
                        // Inbound by the key's current SPI.
                        let before = pubd.inb[k].load(Ordering::Acquire);
                        let spi = (before >> 32) as u32;
                        let got = g.inbound(spi);
                        if let Some(e) = got {
                            assert!(e.is_intact(), "torn/freed inbound entry {e:?}");
                            assert_eq!(e.spi(), spi);
                            assert_eq!(e.sa().spi(), spi);
                            assert_eq!(e.direction(), Direction::In);
                            assert_eq!(e.binding() & 0xffff_0000_0000_0000, K);
                        }
                        let after = pubd.inb[k].load(Ordering::Acquire);
                        if before == after && before & BUSY == 0 && spi != 0 {
                            let mine = got.filter(|e| (e.binding() >> 32) as usize & 0xffff == k);
                            if before & 1 == 1 {
                                let e = mine.unwrap_or_else(|| panic!("lost inbound install k={k} spi={spi:#x} before={before:#x} got={got:?}"));
                                assert_eq!(e.binding() & 0xffff_ffff, (before >> 1) & 0x3fff_ffff);
                            } else {
                                assert!(mine.is_none(), "removed inbound entry still visible");
                            }
                        }
                        // Outbound by the key's flow.
                        let k = (x >> 20) as usize % OUT_KEYS;
                        let (ip, port, lport) = out_key(k);
                        let before = pubd.outb[k].load(Ordering::Acquire);
                        let got = g.outbound(ip, port, lport);
                        if let Some(e) = got {
                            assert!(e.is_intact(), "torn/freed outbound entry {e:?}");
                            assert_eq!((e.ue_addr(), e.ue_port(), e.local_port()), (ip, port, lport));
                            assert_eq!(e.sa().spi(), e.spi());
                            assert_eq!(e.direction(), Direction::Out);
                            assert_eq!(e.binding() >> 32, (K >> 32) | k as u64);
                        }
                        if let Some(e) = g.outbound_any(ip, port) {
                            assert!(e.is_intact());
                            assert_eq!(e.ue_addr(), ip);
                        }
                        let after = pubd.outb[k].load(Ordering::Acquire);
                        if before == after && before & BUSY == 0 {
                            if before & 1 == 1 {
                                let e = got.expect("lost outbound install");
                                assert_eq!(e.binding() & 0xffff_ffff, before >> 1);
                            } else {
                                assert!(got.is_none(), "removed outbound entry still visible");
                            }
                        }
                        n += 1;
                    }
                    g.repin();
                }
                lookups.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    // The writer.
    let start = Instant::now();
    let mut weaks: Vec<Weak<Sa>> = Vec::new();
    let mut inb_spi = [0u32; KEYS];
    let mut out_present = [false; OUT_KEYS];
    let mut version = 0u64;
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut ops = 0;
    while ops < OPS && start.elapsed() < MAX_TIME {
        ops += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % KEYS as u64) as usize;
        version = (version + 1) & 0x3fff_ffff;
        let b = binding(k, version);
        pubd.inb[k].fetch_or(BUSY, Ordering::Relaxed);
        let ko = (x >> 20) as usize % OUT_KEYS;
        pubd.outb[ko].fetch_or(BUSY, Ordering::Relaxed);
        match (x >> 40) % 6 {
            // Inbound: install (after removing the previous SA of this key).
            0 | 1 => {
                if inb_spi[k] != 0 {
                    w.remove_inbound(inb_spi[k]).unwrap().unwrap();
                }
                let spi = w.reserve_spi().unwrap();
                let sa = null_sa(spi);
                weaks.push(Arc::downgrade(&sa));
                let mut m = meta(v4(k as u32), 5000, 5100, b);
                m.state = SetState::Temporary;
                w.install_inbound(sa, &m).unwrap();
                inb_spi[k] = spi;
                pubd.inb[k].store(u64::from(spi) << 32 | version << 1 | 1, Ordering::Release);
            }
            // Inbound: remove, or republish with another state (same Sa, same binding).
            2 => {
                if inb_spi[k] != 0 {
                    let spi = inb_spi[k];
                    if x & 1 == 0 {
                        w.remove_inbound(spi).unwrap().unwrap();
                        inb_spi[k] = 0;
                        pubd.inb[k].store(u64::from(spi) << 32 | version << 1, Ordering::Release);
                    } else {
                        w.set_inbound_state(spi, SetState::New).unwrap();
                    }
                }
            }
            // Outbound: install or replace atomically.
            3 | 4 => {
                let (ip, port, lport) = out_key(ko);
                let sa = null_sa(0x1000 + ko as u32);
                weaks.push(Arc::downgrade(&sa));
                match w.install_outbound(sa, &meta(ip, port, lport, binding(ko, version))) {
                    Ok(_) => {
                        out_present[ko] = true;
                        pubd.outb[ko].store(version << 1 | 1, Ordering::Release);
                    }
                    Err(SaTableError::OutboundFull) => assert!(!out_present[ko]),
                    Err(e) => panic!("{e}"),
                }
            }
            // Outbound: remove or republish.
            _ => {
                let (ip, port, lport) = out_key(ko);
                if out_present[ko] {
                    if x & 1 == 0 {
                        w.remove_outbound(ip, port, lport).unwrap();
                        out_present[ko] = false;
                        pubd.outb[ko].store(version << 1, Ordering::Release);
                    } else {
                        w.set_outbound_state(ip, port, lport, SetState::Old)
                            .unwrap();
                    }
                }
            }
        }
        pubd.inb[k].fetch_and(!BUSY, Ordering::Release);
        pubd.outb[ko].fetch_and(!BUSY, Ordering::Release);
        if ops.is_multiple_of(1024) {
            w.collect();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        h.join().unwrap();
    }
    let stats = w.stats();
    let created = stats.entries_created;
    println!(
        "{ops} writer ops, {} lookups in {:?}; {stats:?}",
        lookups.load(Ordering::Relaxed),
        start.elapsed()
    );
    drop(r);
    drop(w);
    let t = Instant::now();
    while freed.get() < created && t.elapsed() < Duration::from_secs(5) {
        crossbeam_epoch::pin().flush();
    }
    assert_eq!(freed.get(), created, "entries freed != entries created");
    let alive = weaks.iter().filter(|w| w.strong_count() > 0).count();
    assert_eq!(alive, 0, "Sa leaked");
    (ops, stats.rebuilds)
}
