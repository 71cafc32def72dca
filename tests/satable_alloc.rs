//! Lookups allocate nothing: a counting global allocator (per thread, so other tests' threads
//! do not disturb the count).
//!
//! A test binary of its own, not a module of `sans_io`: crossbeam-epoch's collector is
//! process-wide, and every 128th pin of a thread collects garbage that other threads retired,
//! deferring the freed queue nodes into this thread's bag; once the bag is full, sealing it
//! allocates on this thread. The 2000 rounds of pins here get there whenever other tests of the
//! same process retire SAs (the SA-table stress test does, a lot), so the count is exact only
//! alone. (The worker tests' counted batches pin a few times only, far from a full bag.)

#[path = "support/mod.rs"]
mod support;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

use crate::support::satable::{meta, null_sa, v4, v6};
use pcscf::satable::{SaTableConfig, sa_table};
use std::sync::Arc;

fn allocs() -> u64 {
    crate::support::alloc::count()
}

#[test]
fn lookups_do_not_allocate() {
    let cfg = SaTableConfig {
        inbound_capacity: 1024,
        outbound_capacity: 1024,
        ..SaTableConfig::default()
    };
    let (mut w, r) = sa_table(cfg).unwrap();
    let mut spis = Vec::new();
    let shared = null_sa(0x7777);
    for i in 0..500 {
        let spi = w.reserve_spi().unwrap();
        w.install_inbound(null_sa(spi), &meta(v4(i), 5000, 5100, 0))
            .unwrap();
        w.install_outbound(Arc::clone(&shared), &meta(v6(i), 6000, 5100, 0))
            .unwrap();
        spis.push(spi);
    }
    // Retire some entries so that lookups run while garbage is pending.
    for &spi in &spis[..100] {
        w.remove_inbound(spi).unwrap();
    }
    // The thread's first pin registers it with crossbeam (one allocation); not counted.
    drop(r.pin());

    let before = allocs();
    let mut found = 0usize;
    for round in 0..2000u32 {
        let mut g = r.pin();
        for (i, &spi) in spis.iter().enumerate() {
            found += usize::from(g.inbound(spi).is_some());
            found += usize::from(g.outbound(v6(i as u32), 6000, 5100).is_some());
            found += usize::from(g.outbound_any(v6(i as u32), 6000).is_some());
            found += usize::from(g.outbound(v4(i as u32), 1, 2).is_some());
        }
        if round.is_multiple_of(7) {
            g.repin();
        }
        found += usize::from(g.inbound(round).is_some());
    }
    let after = allocs();
    assert_eq!(found, 2000 * (400 + 500 + 500));
    assert_eq!(after - before, 0, "lookups allocated");
}
