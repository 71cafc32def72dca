//! Loom model of the table's publication / reclamation protocol. Runs only with crossbeam's
//! loom support, on which crossbeam-epoch's own atomics and collector become loom objects:
//!
//! ```text
//! RUSTFLAGS="--cfg crossbeam_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --no-default-features --test satable_loom
//! ```
//!
//! Loom explores the interleavings of the epoch's atomics (pin, advance, collect) against one
//! writer and one reader. It does not track plain memory, so freed entries are caught by the
//! entry's drop poison (`is_intact`), which a read after the free sees in every explored order.
//!
//! A test binary of its own, not a module of `sans_io`: it is built only under
//! `--cfg crossbeam_loom`, which swaps crossbeam-epoch's atomics for loom's in the whole crate
//! (so CI builds it alone, `--test satable_loom`, in its own target folder); without the cfg it
//! is empty.
#![cfg(crossbeam_loom)]

use pcscf::esp::{Sa, SaOptions};
use pcscf::satable::{EntryMeta, SaTableConfig, SetPorts, SetState, sa_table};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

fn sa(spi: u32) -> Arc<Sa> {
    let k = [3u8; 16];
    Arc::new(Sa::from_aka(spi, "hmac-sha-1-96", "null", &k, &k, SaOptions::default()).unwrap())
}

fn meta(binding: u64) -> EntryMeta {
    EntryMeta {
        ue_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        ue_port: 6000,
        ue_ports: SetPorts::default(),
        local_port: 5100,
        ports: SetPorts { c: 5100, s: 5101 },
        binding,
        state: SetState::Temporary,
    }
}

fn cfg() -> SaTableConfig {
    SaTableConfig {
        inbound_capacity: 2,
        outbound_capacity: 2,
        spi_min: 256,
        spi_max: 256 + 7,
    }
}

/// Reader looks up an inbound SA while the writer republishes it, removes it and reclaims.
#[test]
fn inbound_remove_vs_lookup() {
    loom::model(|| {
        let (mut w, r) = sa_table(cfg()).unwrap();
        let spi = w.reserve_spi().unwrap();
        w.install_inbound(sa(spi), &meta(1)).unwrap();
        let t = loom::thread::spawn(move || {
            let g = r.pin();
            if let Some(e) = g.inbound(spi) {
                assert!(e.is_intact());
                assert_eq!(e.sa().spi(), spi);
                assert_eq!(e.binding(), 1);
            }
        });
        w.set_inbound_state(spi, SetState::New).unwrap();
        w.remove_inbound(spi).unwrap();
        w.collect();
        w.collect();
        t.join().unwrap();
    });
}

/// Reader looks up an outbound flow while the writer switches it to a new SA: it must see the
/// old or the new entry, never none, never a freed one.
#[test]
fn outbound_replace_vs_lookup() {
    loom::model(|| {
        let (mut w, r) = sa_table(cfg()).unwrap();
        let ip = meta(0).ue_addr;
        w.install_outbound(sa(0x1000), &meta(1)).unwrap();
        let t = loom::thread::spawn(move || {
            let g = r.pin();
            let e = g.outbound(ip, 6000, 5100).expect("old or new, never none");
            assert!(e.is_intact());
            assert!(e.binding() == 1 || e.binding() == 2);
        });
        w.install_outbound(sa(0x2000), &meta(2)).unwrap();
        w.collect();
        w.collect();
        t.join().unwrap();
    });
}
