//! Functional tests of the SA table: SPI encoding, lookups, replacement, states, capacity.

use crate::support::satable::{meta, null_sa, v4, v6};
use pcscf::satable::{Direction, ENTRY_SIZE, SaTableConfig, SaTableError, SetState, sa_table};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

fn small(inb: u32, out: u32, spi_min: u32, spi_max: u32) -> SaTableConfig {
    SaTableConfig {
        inbound_capacity: inb,
        outbound_capacity: out,
        spi_min,
        spi_max,
    }
}

#[test]
fn config_is_validated() {
    let bad = [
        small(16, 16, 0, 10_000),
        small(16, 16, 255, 10_000),
        small(16, 16, 1000, 999),
        small(16, 16, 256, 256 + 16), // 17 SPIs: one generation only
        small(0, 16, 256, 10_000),
        small(16, 0, 256, 10_000),
    ];
    for c in bad {
        assert!(
            matches!(sa_table(c), Err(SaTableError::BadConfig(_))),
            "{c:?}"
        );
    }
    assert!(sa_table(small(16, 16, 256, 256 + 31)).is_ok());
    assert!(sa_table(small(1, 1, 256, u32::MAX)).is_ok());
}

#[test]
fn spis_respect_range_and_rfc4303() {
    let cfg = small(64, 8, 4096, 4096 + 64 * 3 - 1);
    let (mut w, _r) = sa_table(cfg).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..64 {
        let spi = w.reserve_spi().unwrap();
        assert!(spi >= 4096 && spi <= cfg.spi_max && spi > 255, "{spi}");
        assert!(seen.insert(spi), "duplicate live SPI {spi}");
    }
    assert_eq!(w.reserve_spi(), Err(SaTableError::InboundFull));
    // Large range: no SPI near the top overflows.
    let (mut w, _r) = sa_table(small(4, 4, 256, u32::MAX)).unwrap();
    for _ in 0..1000 {
        let spi = w.reserve_spi().unwrap();
        assert!(spi >= 256);
        w.remove_inbound(spi).unwrap();
    }
}

#[test]
fn freed_slot_gets_a_new_spi_and_late_packets_miss() {
    let (mut w, r) = sa_table(small(1, 1, 256, 256 + 7)).unwrap(); // one slot, 8 generations
    let a = w.reserve_spi().unwrap();
    w.install_inbound(null_sa(a), &meta(v4(1), 5000, 5100, 1))
        .unwrap();
    assert_eq!(r.pin().inbound(a).unwrap().binding(), 1);
    assert!(w.remove_inbound(a).unwrap().is_some());
    assert!(r.pin().inbound(a).is_none());
    let b = w.reserve_spi().unwrap();
    assert_ne!(a, b, "generation bump");
    w.install_inbound(null_sa(b), &meta(v4(1), 5000, 5100, 2))
        .unwrap();
    let g = r.pin();
    assert!(
        g.inbound(a).is_none(),
        "late packet for the old SPI must not match"
    );
    assert_eq!(g.inbound(b).unwrap().binding(), 2);
    drop(g);
    // Operations on the stale SPI are refused.
    assert_eq!(w.remove_inbound(a).unwrap_err(), SaTableError::UnknownSpi);
    assert_eq!(
        w.set_inbound_state(a, SetState::Old).unwrap_err(),
        SaTableError::UnknownSpi
    );
    // Out of range SPIs: 0, reserved, above the range.
    let g = r.pin();
    for spi in [0, 1, 255, 256 + 8, u32::MAX] {
        assert!(g.inbound(spi).is_none());
    }
}

#[test]
fn install_requires_reservation_and_matching_spi() {
    let (mut w, r) = sa_table(small(8, 8, 256, 100_000)).unwrap();
    let m = meta(v4(1), 1, 2, 3);
    assert_eq!(
        w.install_inbound(null_sa(300), &m),
        Err(SaTableError::UnknownSpi)
    );
    let spi = w.reserve_spi().unwrap();
    assert!(r.pin().inbound(spi).is_none(), "reserved is not published");
    w.install_inbound(null_sa(spi), &m).unwrap();
    assert_eq!(
        w.install_inbound(null_sa(spi), &m),
        Err(SaTableError::NotReserved)
    );
    // A reservation can be cancelled.
    let s2 = w.reserve_spi().unwrap();
    assert!(w.remove_inbound(s2).unwrap().is_none());
    assert_eq!(w.stats().inbound_used, 1);
}

#[test]
fn inbound_entry_fields_and_state_republish() {
    let (mut w, r) = sa_table(SaTableConfig::default()).unwrap();
    let spi = w.reserve_spi().unwrap();
    let sa = null_sa(spi);
    w.install_inbound(Arc::clone(&sa), &meta(v6(7), 5062, 6100, 42))
        .unwrap();
    {
        let g = r.pin();
        let e = g.inbound(spi).unwrap();
        assert_eq!(e.spi(), spi);
        assert_eq!(e.direction(), Direction::In);
        assert_eq!(
            (e.ue_addr(), e.ue_port(), e.local_port()),
            (v6(7), 5062, 6100)
        );
        assert_eq!((e.binding(), e.set_state()), (42, SetState::Temporary));
        assert!(Arc::ptr_eq(e.sa(), &sa));
        assert!(e.is_intact());
    }
    w.set_inbound_state(spi, SetState::New).unwrap();
    let g = r.pin();
    let e = g.inbound(spi).unwrap();
    assert_eq!(e.set_state(), SetState::New);
    assert!(Arc::ptr_eq(e.sa(), &sa), "republish keeps the same Sa");
    assert!(e.is_intact());
}

#[test]
fn outbound_lookup_replace_and_remove() {
    let (mut w, r) = sa_table(small(16, 16, 256, 100_000)).unwrap();
    let (ue, us, uc, pc, ps) = (v4(9), 6000, 6001, 5100, 6100);
    let sa2 = null_sa(0x1111);
    let sa3 = null_sa(0x2222);
    assert!(
        w.install_outbound(Arc::clone(&sa2), &meta(ue, us, pc, 1))
            .unwrap()
            .is_none()
    );
    assert!(
        w.install_outbound(Arc::clone(&sa3), &meta(ue, uc, ps, 1))
            .unwrap()
            .is_none()
    );
    {
        let g = r.pin();
        assert!(Arc::ptr_eq(g.outbound(ue, us, pc).unwrap().sa(), &sa2));
        assert!(Arc::ptr_eq(g.outbound(ue, uc, ps).unwrap().sa(), &sa3));
        assert_eq!(g.outbound(ue, us, pc).unwrap().direction(), Direction::Out);
        assert!(g.outbound(ue, us, ps).is_none());
        assert!(g.outbound(v4(10), us, pc).is_none());
        assert!(g.outbound(v6(9), us, pc).is_none(), "v4 and v6 keys differ");
        assert!(Arc::ptr_eq(g.outbound_any(ue, us).unwrap().sa(), &sa2));
        assert!(g.outbound_any(ue, 1).is_none());
    }
    // Re-registration: the new set's SA replaces the old one atomically.
    let sa2b = null_sa(0x3333);
    let prev = w
        .install_outbound(Arc::clone(&sa2b), &meta(ue, us, pc, 2))
        .unwrap()
        .unwrap();
    assert!(Arc::ptr_eq(&prev, &sa2));
    assert_eq!(w.stats().outbound_live, 2);
    w.set_outbound_state(ue, us, pc, SetState::New).unwrap();
    {
        let g = r.pin();
        let e = g.outbound(ue, us, pc).unwrap();
        assert!(Arc::ptr_eq(e.sa(), &sa2b));
        assert_eq!((e.binding(), e.set_state()), (2, SetState::New));
    }
    assert!(Arc::ptr_eq(&w.remove_outbound(ue, us, pc).unwrap(), &sa2b));
    assert_eq!(
        w.remove_outbound(ue, us, pc).unwrap_err(),
        SaTableError::NotFound
    );
    assert_eq!(
        w.set_outbound_state(ue, us, pc, SetState::Old),
        Err(SaTableError::NotFound)
    );
    let g = r.pin();
    assert!(g.outbound(ue, us, pc).is_none());
    assert!(g.outbound(ue, uc, ps).is_some());
}

#[test]
fn outbound_full_is_an_error() {
    let (mut w, _r) = sa_table(small(4, 5, 256, 100_000)).unwrap();
    for i in 0..5 {
        w.install_outbound(null_sa(1000), &meta(v4(i), 1, 2, 0))
            .unwrap();
    }
    assert_eq!(
        w.install_outbound(null_sa(1000), &meta(v4(99), 1, 2, 0))
            .unwrap_err(),
        SaTableError::OutboundFull
    );
    // Replacing still works when full.
    assert!(
        w.install_outbound(null_sa(1000), &meta(v4(0), 1, 2, 0))
            .unwrap()
            .is_some()
    );
}

/// Heavy churn on a small outbound map against a `HashMap` model: tombstones, their clean-up
/// and rebuilds never lose or invent an entry.
#[test]
fn outbound_churn_matches_model() {
    churn(20); // mostly succeeds: tombstones cleaned up in place
    churn(90); // mostly full: tombstones pile up, rebuilds
}

fn churn(addrs: u64) {
    let (mut w, r) = sa_table(small(4, 64, 256, 100_000)).unwrap();
    let sa = null_sa(0x4444);
    let mut model: HashMap<(u32, u16, u16), u64> = HashMap::new();
    let mut x: u64 = 0x1234_5678;
    for step in 0..40_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (
            (x % addrs) as u32,
            (x >> 8) as u16 % 2,
            5100 + (x >> 16) as u16 % 2,
        );
        let ip = if k.0.is_multiple_of(2) {
            v4(k.0)
        } else {
            v6(k.0)
        };
        if (x >> 32).is_multiple_of(3) {
            let got = w.remove_outbound(ip, k.1, k.2);
            assert_eq!(got.is_ok(), model.remove(&k).is_some());
        } else {
            match w.install_outbound(Arc::clone(&sa), &meta(ip, k.1, k.2, step)) {
                Ok(prev) => {
                    assert_eq!(prev.is_some(), model.insert(k, step).is_some());
                }
                Err(SaTableError::OutboundFull) => {
                    assert!(model.len() >= 64 && !model.contains_key(&k))
                }
                Err(e) => panic!("{e}"),
            }
        }
        if step % 997 == 0 {
            let g = r.pin();
            for a in 0..addrs as u32 {
                let ip = if a.is_multiple_of(2) { v4(a) } else { v6(a) };
                for p in 0..2u16 {
                    for l in [5100, 5101] {
                        let got = g.outbound(ip, p, l).map(|e| e.binding());
                        assert_eq!(got, model.get(&(a, p, l)).copied(), "step {step}");
                    }
                }
            }
        }
    }
    let s = w.stats();
    assert_eq!(s.outbound_live, model.len());
    println!("stats after churn: {s:?}");
}

#[test]
fn drop_frees_every_entry() {
    let (mut w, r) = sa_table(small(64, 64, 256, 100_000)).unwrap();
    let freed = w.freed_counter();
    let sa = null_sa(0x5555);
    let weak = Arc::downgrade(&sa);
    for i in 0..40 {
        let spi = w.reserve_spi().unwrap();
        w.install_inbound(null_sa(spi), &meta(v4(i), 1, 2, 0))
            .unwrap();
        w.install_outbound(Arc::clone(&sa), &meta(v4(i), 1, 2, 0))
            .unwrap();
        if i.is_multiple_of(3) {
            w.remove_inbound(spi).unwrap();
            w.set_outbound_state(v4(i), 1, 2, SetState::Old).unwrap();
        }
    }
    drop(sa);
    let created = w.stats().entries_created;
    drop(r);
    drop(w);
    let t = std::time::Instant::now();
    while freed.get() < created && t.elapsed().as_secs() < 10 {
        crossbeam_epoch::pin().flush();
    }
    assert_eq!(freed.get(), created);
    assert_eq!(weak.strong_count(), 0);
}

#[test]
fn memory_report() {
    assert_eq!(ENTRY_SIZE, 64);
    let cfg = SaTableConfig::default();
    let fixed = cfg.memory_bytes();
    let sa = std::mem::size_of::<pcscf::esp::Sa>();
    println!(
        "entry {ENTRY_SIZE} B, Sa {sa} B (+16 B Arc header), fixed {fixed} B for 2^20 in + 2^20 out = {} B per SA slot",
        fixed / (2 << 20)
    );
    // The readers' part of the table: 8 B per inbound slot, 8 B per outbound bucket.
    assert!(fixed < 64 << 20);
}

#[test]
fn handle_traits() {
    fn reader<T: Clone + Send + Sync + 'static>() {}
    fn writer<T: Send + 'static>() {}
    reader::<pcscf::satable::SaReader>();
    writer::<pcscf::satable::SaWriter>();
}

#[test]
fn outbound_probes_stay_short() {
    let (mut w, _r) = sa_table(small(4, 1 << 16, 256, 100_000)).unwrap();
    let sa = null_sa(0x6666);
    for i in 0..(1u32 << 16) {
        let ip = if i.is_multiple_of(3) { v6(i) } else { v4(i) };
        w.install_outbound(Arc::clone(&sa), &meta(ip, 6001, 5101, 0))
            .unwrap();
    }
    let (mean, max) = w.outbound_probe_lengths();
    println!("2^16 flows in 2^17 buckets: mean probe {mean:.2}, max {max}");
    assert!(mean < 2.0 && max < 64, "{mean} {max}");
}

/// A UE's own SPIs are never handed out as ours for its set (GCM/GMAC IVs `SPI ‖ seq` under
/// the set's shared key must not repeat, RFC 4106 §3.1): the colliding SPIs are skipped and
/// return to the free list.
#[test]
fn reserve_spi_avoiding_skips_the_ues_spis() {
    // one slot, 8 generations: its SPIs come round in a fixed cycle of 8
    let (mut w, _r) = sa_table(small(1, 1, 256, 256 + 7)).unwrap();
    let cycle: Vec<u32> = (0..8)
        .map(|_| {
            let s = w.reserve_spi().unwrap();
            w.remove_inbound(s).unwrap();
            s
        })
        .collect();
    assert_eq!(cycle.iter().collect::<HashSet<_>>().len(), 8);
    let got = w.reserve_spi_avoiding(&cycle[..2]).unwrap();
    assert_eq!(got, cycle[2]);
    w.install_inbound(null_sa(got), &meta(v4(1), 5000, 5100, 1))
        .unwrap();
    w.remove_inbound(got).unwrap();
    // every SPI avoided: refused, and the slot is free again
    assert_eq!(
        w.reserve_spi_avoiding(&cycle),
        Err(SaTableError::InboundFull)
    );
    assert!(w.reserve_spi().is_ok());
}

/// An SPI handed out by one table is reserved again, exactly, in a fresh table of the same
/// configuration (a restart restoring its SA sets); the slot is not handed out twice, a taken
/// or out-of-range SPI is refused, and the other slots are still all there.
#[test]
fn exact_spis_are_reserved_again_after_a_restart() {
    let cfg = small(16, 16, 4096, 4096 + 16 * 8 - 1);
    let (mut before, _) = sa_table(cfg).unwrap();
    // churn so that generations above 0 appear
    let mut kept = Vec::new();
    for i in 0..40 {
        let spi = before.reserve_spi().unwrap();
        if i % 3 == 0 {
            kept.push(spi);
        } else {
            before.remove_inbound(spi).unwrap();
        }
    }
    assert!(
        kept.iter().any(|&s| (s - 4096) >= 16),
        "some past generation 0"
    );
    let (mut w, r) = sa_table(cfg).unwrap();
    for &spi in &kept {
        w.reserve_exact_spi(spi).unwrap();
        w.install_inbound(null_sa(spi), &meta(v4(1), 5000, 5100, 7))
            .unwrap();
        assert_eq!(w.reserve_exact_spi(spi), Err(SaTableError::NotReserved));
    }
    for bad in [0, 4095, 4096 + 16 * 8, u32::MAX] {
        assert_eq!(w.reserve_exact_spi(bad), Err(SaTableError::UnknownSpi));
    }
    // the rest of the slots, each once, none of them a restored one
    let mut fresh = HashSet::new();
    while let Ok(spi) = w.reserve_spi() {
        assert!(fresh.insert((spi - 4096) % 16), "slot handed out twice");
        assert!(!kept.contains(&spi));
        assert!(r.pin().inbound(spi).is_none());
    }
    assert_eq!(fresh.len() + kept.len(), 16);
    for &spi in &kept {
        assert_eq!(r.pin().inbound(spi).unwrap().binding(), 7);
    }
    // a restored SA removed frees its slot like any other
    w.remove_inbound(kept[0]).unwrap();
    let again = w.reserve_spi().unwrap();
    assert_eq!((again - 4096) % 16, (kept[0] - 4096) % 16);
    assert_ne!(again, kept[0]);
}
