//! The neighbour table read from the kernel of a namespace: routes, neighbours, link MACs, and
//! resolution triggered by a reported miss. Run as root (CI does).

use std::net::IpAddr;
use std::time::Duration;

use crate::support::netns::{A4, A6, B4, B6, NetnsPair, link_info, poll_until};
use pcscf::io::{NeighEntry, NeighShared, NeighTable, kernel_route_get};

#[test]
fn neighbour_table_from_kernel() {
    let ns = NetnsPair::new("n");
    let (mac_a, idx_a) = link_info(&ns.a, &ns.ifa);
    let (mac_b, _) = link_info(&ns.b, &ns.ifb);
    // A default route via the peer, to check gateway handling.
    let o = std::process::Command::new("ip")
        .args(["-n", &ns.a, "route", "add", "default", "via", "10.201.1.2"])
        .output()
        .unwrap();
    assert!(o.status.success());

    let (before, after, after6, via_gw, rg, misses) = NetnsPair::run_in(&ns.a, move || {
        let shared = NeighShared::new(NeighTable::from_kernel().unwrap());
        let mut r = shared.reader();
        let before = r.lookup(IpAddr::V4(B4));
        // The worker misses, reports; the refresher triggers ARP/ND and re-reads the tables.
        r.miss(IpAddr::V4(B4));
        r.miss(IpAddr::V6(B6));
        let misses = shared.refresh().unwrap();
        let got = poll_until(Duration::from_secs(3), || {
            shared.refresh().unwrap();
            r.update();
            match (r.lookup(IpAddr::V4(B4)), r.lookup(IpAddr::V6(B6))) {
                (Some(a), Some(b)) => Some((a, b)),
                _ => {
                    // Resolution may need another nudge if the first datagram raced the refresh.
                    let _ = pcscf::io::trigger_resolution(IpAddr::V6(B6));
                    let _ = pcscf::io::trigger_resolution(IpAddr::V4(B4));
                    std::thread::sleep(Duration::from_millis(20));
                    None
                }
            }
        });
        let (after, after6) = got.expect("neighbours resolved within 3 s");
        let via_gw = r.lookup("192.0.2.77".parse().unwrap());
        let rg = kernel_route_get("192.0.2.77".parse().unwrap()).unwrap();
        (before, after, after6, via_gw, rg, misses)
    });
    assert_eq!(before, None, "no neighbour before any traffic");
    assert_eq!(misses, 2);
    let want = NeighEntry {
        ifindex: idx_a,
        src_mac: mac_a,
        dst_mac: mac_b,
    };
    assert_eq!(after, want);
    assert_eq!(after6, want);
    assert_eq!(
        via_gw,
        Some(want),
        "off-link destination goes to the gateway's MAC"
    );
    assert_eq!(rg, (idx_a, Some(IpAddr::V4(B4))), "RTM_GETROUTE agrees");
    let _ = (A4, A6);
}
