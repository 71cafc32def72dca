//! Per-packet processing (outbound and inbound, every suite, every backend) allocates nothing.
//! SA construction may allocate. Counts Rust heap allocations on the current thread only.
//! (C code inside aws-lc allocates with libc malloc, which a Rust global allocator cannot see;
//! aws-lc's AES-GCM/CBC/HMAC paths used here keep their state inline.)

use crate::support::esp::*;
use pcscf::esp::{BackendKind, Frame, Suite};

fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let (r, n) = crate::support::alloc::allocations_in(f);
    (r, n as usize)
}

#[test]
fn counter_works() {
    let (_, n) = counted(|| std::hint::black_box(vec![1u8; 10]));
    assert_eq!(n, 1);
}

#[test]
fn no_allocation_per_packet() {
    for &suite in &Suite::ALL {
        for &b in BackendKind::ALL {
            let tx = sa(0x5000, suite, b);
            let rx = sa(0x5000, suite, b);
            for fam in [Fam::V4, Fam::V6] {
                let pkt = ip_packet(fam, L4::Udp, 5060, 5064, &[0x41; 1000], fam == Fam::V6);
                let mut buf = frame_buf(&pkt);
                let mut bad = Vec::with_capacity(buf.len());
                let (res, n) = counted(|| {
                    let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
                    tx.outbound(&mut f).map(|_| (f.start, f.end))
                });
                let (s, e) = res.unwrap();
                assert_eq!(
                    n,
                    0,
                    "outbound {} {b:?} {fam:?} allocated",
                    suite_name(suite)
                );
                bad.extend_from_slice(&buf[s..e]);
                let l = bad.len();
                bad[l - 1] ^= 1;
                let (res, n) = counted(|| rx.inbound_ip(&mut buf[s..e]));
                res.unwrap();
                assert_eq!(
                    n,
                    0,
                    "inbound {} {b:?} {fam:?} allocated",
                    suite_name(suite)
                );
                let (res, n) = counted(|| rx.inbound_ip(&mut bad));
                assert!(res.is_err());
                assert_eq!(
                    n,
                    0,
                    "inbound error path {} {b:?} allocated",
                    suite_name(suite)
                );
                // decapsulate as well.
                let mut buf = frame_buf(&pkt);
                let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
                tx.outbound(&mut f).unwrap();
                let (s, e) = (f.start, f.end);
                let (res, n) = counted(|| rx.decapsulate(&mut buf[s..e]).map(|_| ()));
                res.unwrap();
                assert_eq!(n, 0, "decapsulate {} {b:?} allocated", suite_name(suite));
            }
        }
    }
}
