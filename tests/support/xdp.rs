//! Shared helpers for the AF_XDP tests: root check, a veth pair between two throwaway network
//! namespaces (deleted on drop, also after a panic), entering a namespace from a thread, and
//! packet building / checksums.

pub use super::inet::{csum_add, csum_fold};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const MAC_A: [u8; 6] = [0x02, 0x20, 0x02, 0x00, 0x00, 0x01];
pub const MAC_B: [u8; 6] = [0x02, 0x20, 0x02, 0x00, 0x00, 0x02];
pub const V4_A: [u8; 4] = [10, 202, 1, 1];
pub const V4_B: [u8; 4] = [10, 202, 1, 2];
pub const V6_A: &str = "fd00:202::1";
pub const V6_B: &str = "fd00:202::2";

/// Fail (not skip) when the test cannot do its job: CI runs these as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the AF_XDP tests need root (network namespaces, bpf(2), AF_XDP); run them as root as CI does"
    );
    // SAFETY: plain socket(2) probe, closed right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP) failed: {} — the kernel needs CONFIG_XDP_SOCKETS=y",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
}

pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces `a` and `b` joined by a veth pair `if_a` (in a) / `if_b` (in b), with
/// 10.202.1.1/24 + fd00:202::1/64 on a and .2 / ::2 on b. Deleted on drop.
pub struct Testbed {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Testbed {
    pub fn new(queues: u32) -> Testbed {
        let pid = std::process::id();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let t = Testbed {
            ns_a: format!("pcxa-{pid}-{n}"),
            ns_b: format!("pcxb-{pid}-{n}"),
            // IFNAMSIZ is 16: keep names short; they live inside the namespaces only.
            if_a: format!("xa{}", n),
            if_b: format!("xb{}", n),
        };
        run(&["ip", "netns", "add", &t.ns_a]);
        // From here on, drop cleans up whatever exists.
        run(&["ip", "netns", "add", &t.ns_b]);
        let q = queues.to_string();
        run(&[
            "ip",
            "-n",
            &t.ns_a,
            "link",
            "add",
            &t.if_a,
            "address",
            "02:20:02:00:00:01",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &t.if_b,
            "address",
            "02:20:02:00:00:02",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            &t.ns_b,
        ]);
        for (ns, ifn, v4, v6) in [
            (&t.ns_a, &t.if_a, "10.202.1.1/24", "fd00:202::1/64"),
            (&t.ns_b, &t.if_b, "10.202.1.2/24", "fd00:202::2/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", ifn]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", ifn, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", ifn, "up"]);
        }
        super::netns::wait_up(&t.ns_a, &t.if_a);
        super::netns::wait_up(&t.ns_b, &t.if_b);
        t
    }

    /// `ip link show` of if_a (shows `xdp`/`xdpgeneric` while a program is attached).
    pub fn link_show_a(&self) -> String {
        run(&["ip", "-n", &self.ns_a, "link", "show", "dev", &self.if_a])
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// While alive, the calling thread is in namespace `name`; back in the original on drop.
pub struct InNetns {
    orig: OwnedFd,
}

fn open_ro(path: &str) -> OwnedFd {
    let c = CString::new(path).unwrap();
    // SAFETY: valid C string; the fd is checked and then owned.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl InNetns {
    pub fn enter(name: &str) -> InNetns {
        let orig = open_ro("/proc/thread-self/ns/net");
        let target = open_ro(&format!("/var/run/netns/{name}"));
        // SAFETY: setns on a namespace fd affects only the calling thread.
        let r = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
        InNetns { orig }
    }
}

impl Drop for InNetns {
    fn drop(&mut self) {
        // SAFETY: as in enter.
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Run `f` on a fresh thread inside namespace `name` (sockets it creates stay in that
/// namespace and can be used from any thread afterwards).
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let _g = InNetns::enter(name);
            f()
        })
        .join()
        .expect("thread in netns panicked")
    })
}

// ---- checksums and packets ----

/// Fill in the IPv4 header checksum and the UDP checksum of an IPv4/UDP or IPv6/UDP packet.
pub fn fix_checksums(p: &mut [u8]) {
    match p[0] >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0xf) * 4;
            p[10] = 0;
            p[11] = 0;
            let c = csum_fold(csum_add(0, &p[..ihl]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
            if p[9] == 17 && p.len() >= ihl + 8 {
                let ulen = p.len() - ihl;
                p[ihl + 6] = 0;
                p[ihl + 7] = 0;
                let mut s = csum_add(0, &p[12..20]);
                s += 17 + ulen as u32;
                s = csum_add(s, &p[ihl..]);
                let mut c = csum_fold(s);
                if c == 0 {
                    c = 0xffff;
                }
                p[ihl + 6..ihl + 8].copy_from_slice(&c.to_be_bytes());
            }
        }
        6 => {
            if p[6] == 17 && p.len() >= 48 {
                let ulen = p.len() - 40;
                p[46] = 0;
                p[47] = 0;
                let mut s = csum_add(0, &p[8..40]);
                s += 17 + ulen as u32;
                s = csum_add(s, &p[40..]);
                let mut c = csum_fold(s);
                if c == 0 {
                    c = 0xffff;
                }
                p[46..48].copy_from_slice(&c.to_be_bytes());
            }
        }
        _ => panic!("not IP"),
    }
}

pub fn ipv4_header_ok(p: &[u8]) -> bool {
    let ihl = usize::from(p[0] & 0xf) * 4;
    csum_fold(csum_add(0, &p[..ihl])) == 0
}

/// An IPv4 packet with `proto` and `l4` as its payload (checksums filled for UDP).
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let tot = (20 + l4.len()) as u16;
    p[2..4].copy_from_slice(&tot.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p.extend_from_slice(l4);
    fix_checksums(&mut p);
    p
}

pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    p[6] = next;
    p[7] = 64;
    p[8..24].copy_from_slice(&src);
    p[24..40].copy_from_slice(&dst);
    p.extend_from_slice(l4);
    if next == 17 {
        fix_checksums(&mut p);
    }
    p
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

pub fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + l3.len());
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().unwrap().octets()
}
