//! SA-table lookups and writes with 1k, 100k and 1M installed SAs.
//!
//! Each table is built once per size (inbound: one `ealg=null` SA per SPI; outbound: one entry
//! per UE flow, all sharing one SA) and kept for the whole run. Lookups go in a pseudo-random
//! order over the installed keys, so the 1M case pays its cache misses; the reader is pinned
//! once outside the timed loop (workers pin once per batch), and `pin` is measured on its own.
//! Lookup benches time batches of [`BATCH`] lookups: divide their times by 1024.

use divan::Bencher;
use pcscf::esp::{Sa, SaOptions};
use pcscf::satable::{EntryMeta, SaReader, SaTableConfig, SaWriter, SetPorts, SetState, sa_table};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, OnceLock};

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [1_000, 100_000, 1_000_000];

struct Fixture {
    writer: Mutex<SaWriter>,
    reader: SaReader,
    spis: Vec<u32>,
    flows: Vec<(IpAddr, u16, u16)>,
}

fn sa(spi: u32) -> Arc<Sa> {
    let k = [7u8; 16];
    Arc::new(Sa::from_aka(spi, "hmac-sha-1-96", "null", &k, &k, SaOptions::default()).unwrap())
}

fn meta(ip: IpAddr, port: u16, lport: u16) -> EntryMeta {
    EntryMeta {
        ue_addr: ip,
        ue_port: port,
        ue_ports: SetPorts::default(),
        local_port: lport,
        ports: SetPorts {
            c: lport & !1,
            s: lport | 1,
        },
        binding: 1,
        state: SetState::New,
    }
}

fn shuffle<T>(v: &mut [T]) {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn fixture(n: usize) -> &'static Fixture {
    static ALL: OnceLock<Mutex<HashMap<usize, &'static Fixture>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap();
    all.entry(n).or_insert_with(|| {
        let cfg = SaTableConfig {
            inbound_capacity: (n + 1024) as u32,
            outbound_capacity: (n + 1024) as u32,
            ..SaTableConfig::default()
        };
        let (mut w, r) = sa_table(cfg).unwrap();
        let shared = sa(0x1234);
        let mut spis = Vec::with_capacity(n);
        let mut flows = Vec::with_capacity(n);
        for i in 0..n as u32 {
            let spi = w.reserve_spi().unwrap();
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            w.install_inbound(sa(spi), &meta(ip, 6000, 5100)).unwrap();
            w.install_outbound(Arc::clone(&shared), &meta(ip, 6001, 5101))
                .unwrap();
            spis.push(spi);
            flows.push((ip, 6001, 5101));
        }
        shuffle(&mut spis);
        shuffle(&mut flows);
        if std::env::var_os("SATABLE_PROBES").is_some() {
            eprintln!(
                "n={n}: outbound probe (mean, max) = {:?}",
                w.outbound_probe_lengths()
            );
        }
        Box::leak(Box::new(Fixture {
            writer: Mutex::new(w),
            reader: r,
            spis,
            flows,
        }))
    })
}

#[divan::bench]
fn pin(bencher: Bencher) {
    let f = fixture(SIZES[0]);
    bencher.bench_local(|| drop(divan::black_box(f.reader.pin())));
}

/// Lookups per timed iteration: divide the reported times by this for one lookup.
const BATCH: usize = 1024;

/// Runs `f` on BATCH consecutive keys of the shuffled key list per iteration, after one
/// untimed pass over all keys.
fn batched<K: Copy>(bencher: Bencher, keys: &[K], f: impl Fn(K)) {
    for &k in keys {
        f(k);
    }
    let pos = Cell::new(0usize);
    bencher
        .counter(divan::counter::ItemsCount::new(BATCH))
        .bench_local(|| {
            let mut p = pos.get();
            for _ in 0..BATCH {
                f(divan::black_box(keys[p]));
                p += 1;
                if p == keys.len() {
                    p = 0;
                }
            }
            pos.set(p);
        });
}

#[divan::bench(args = SIZES)]
fn inbound(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let g = f.reader.pin();
    batched(bencher, &f.spis, |spi| {
        divan::black_box(g.inbound(spi).unwrap().sa());
    });
}

/// Same slots, next generation: a late packet for a replaced SA finds nothing.
#[divan::bench(args = SIZES)]
fn inbound_miss_old_generation(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let g = f.reader.pin();
    let stride = (n + 1024).next_power_of_two() as u32;
    batched(bencher, &f.spis, |spi| {
        assert!(g.inbound(spi.wrapping_add(stride)).is_none());
    });
}

#[divan::bench(args = SIZES)]
fn outbound(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let g = f.reader.pin();
    batched(bencher, &f.flows, |(ip, p, l)| {
        divan::black_box(g.outbound(ip, p, l).unwrap().sa());
    });
}

#[divan::bench(args = SIZES)]
fn outbound_miss(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let g = f.reader.pin();
    batched(bencher, &f.flows, |(ip, p, l)| {
        assert!(g.outbound(ip, p + 100, l).is_none());
    });
}

/// Building the SA alone (to subtract from `inbound_install_remove`).
#[divan::bench]
fn sa_build_null() -> Arc<Sa> {
    sa(divan::black_box(0x4000))
}

/// reserve_spi + Sa build + install_inbound + remove_inbound, on a table holding n SAs.
#[divan::bench(args = SIZES, sample_count = 30, sample_size = 100)]
fn inbound_install_remove(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let w = RefCell::new(f.writer.lock().unwrap());
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    bencher.bench_local(|| {
        let mut w = w.borrow_mut();
        let spi = w.reserve_spi().unwrap();
        w.install_inbound(sa(spi), &meta(ip, 1, 2)).unwrap();
        w.remove_inbound(spi).unwrap();
    });
}

/// install_outbound (new key) + remove_outbound, on a table holding n outbound entries.
#[divan::bench(args = SIZES, sample_count = 30, sample_size = 100)]
fn outbound_install_remove(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let w = RefCell::new(f.writer.lock().unwrap());
    let s = sa(0x4001);
    let i = Cell::new(0u32);
    bencher.bench_local(|| {
        let mut w = w.borrow_mut();
        let ip = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (i.get() & 1023)));
        i.set(i.get() + 1);
        w.install_outbound(Arc::clone(&s), &meta(ip, 1, 2)).unwrap();
        w.remove_outbound(ip, 1, 2).unwrap();
    });
}

/// Re-registration switch: replace the outbound SA of an existing flow.
#[divan::bench(args = SIZES, sample_count = 30, sample_size = 100)]
fn outbound_replace(bencher: Bencher, n: usize) {
    let f = fixture(n);
    let w = RefCell::new(f.writer.lock().unwrap());
    let s = sa(0x4002);
    let i = Cell::new(0usize);
    bencher.bench_local(|| {
        let mut w = w.borrow_mut();
        let k = i.get() % f.flows.len();
        i.set(k + 1);
        let (ip, p, l) = f.flows[k];
        w.install_outbound(Arc::clone(&s), &meta(ip, p, l)).unwrap();
    });
}
