//! Registered UEs for load tests, without AKA: the parameters of bench UE `i` follow from `i`
//! alone, so `pcscf run --bench-preload-ues N` (cargo feature `bench-hooks`) can install their
//! SA sets and registrations and `perf/load.rs` can build the same SAs to send from them.
//!
//! Owns: the per-UE parameters ([`BenchUe`]) and the text of the map file in which `pcscf`
//! tells the load tool which of our SPIs and ports each UE got (those come from the SA table's
//! allocator, not from `i`). Nothing here is used by a deployment: the keys are public by
//! construction.

use std::net::{IpAddr, Ipv4Addr};

/// The UE-side address of bench UE 0; UE `i` is this plus `i` (up to 2^22 UEs).
pub const BASE_V4: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 0);
/// The most bench UEs.
pub const MAX_UES: u32 = 1 << 22;
/// The UE's protected client and server ports (every bench UE has its own address).
pub const PORT_UC: u16 = 6100;
pub const PORT_US: u16 = 6101;

/// One bench UE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchUe {
    pub index: u32,
    pub addr: IpAddr,
    pub port_uc: u16,
    pub port_us: u16,
    /// The UE's inbound SPIs (our outbound SAs use them).
    pub spi_uc: u32,
    pub spi_us: u32,
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    /// Private and default public identity.
    pub impi: String,
    pub impu: String,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(i: u32, which: u64) -> [u8; 16] {
    let a = splitmix(u64::from(i) << 8 | which);
    let b = splitmix(a);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

impl BenchUe {
    /// Bench UE `i` (< [`MAX_UES`]).
    pub fn new(i: u32) -> BenchUe {
        BenchUe {
            index: i,
            addr: IpAddr::V4(Ipv4Addr::from(u32::from(BASE_V4) + (i % MAX_UES))),
            port_uc: PORT_UC,
            port_us: PORT_US,
            spi_uc: 0x1000_0000 + 2 * i,
            spi_us: 0x1000_0001 + 2 * i,
            ck: key(i, 1),
            ik: key(i, 2),
            impi: format!("bench{i}@ims.example.net"),
            impu: format!("sip:bench{i}@ims.example.net"),
        }
    }
}

/// What `pcscf` allocated for one bench UE: our SPIs and protected ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocated {
    pub index: u32,
    /// SA1's SPI: the UE sends from its port-c to our port-s over it.
    pub spi_ps: u32,
    pub port_ps: u16,
    /// SA4's SPI: the UE's port-s to our port-c.
    pub spi_pc: u32,
    pub port_pc: u16,
}

impl Allocated {
    /// One line of the map file: `index spi_ps port_ps spi_pc port_pc`.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {}\n",
            self.index, self.spi_ps, self.port_ps, self.spi_pc, self.port_pc
        )
    }

    /// Parses [`Allocated::line`]'s output.
    pub fn parse(line: &str) -> Option<Allocated> {
        let mut it = line.split_whitespace();
        let a = Allocated {
            index: it.next()?.parse().ok()?,
            spi_ps: it.next()?.parse().ok()?,
            port_ps: it.next()?.parse().ok()?,
            spi_pc: it.next()?.parse().ok()?,
            port_pc: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(a)
    }
}

/// Resident memory of this process in bytes (VmRSS), for the memory-per-UE figure.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        assert_eq!(BenchUe::new(7), BenchUe::new(7));
        let (a, b) = (BenchUe::new(1), BenchUe::new(2));
        assert_ne!(a.addr, b.addr);
        assert_ne!(a.ck, b.ck);
        assert_ne!(a.ck, a.ik);
        assert_ne!(a.spi_uc, b.spi_uc);
        assert_eq!(a.addr, "10.64.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(BenchUe::new(70_000).addr.to_string(), "10.65.17.112");
    }

    #[test]
    fn map_line_round_trip() {
        let a = Allocated {
            index: 3,
            spi_ps: 70000,
            port_ps: 5101,
            spi_pc: 70001,
            port_pc: 5100,
        };
        assert_eq!(Allocated::parse(&a.line()), Some(a));
        assert_eq!(Allocated::parse("1 2 3"), None);
        assert_eq!(Allocated::parse("1 2 3 4 5 6"), None);
    }
}
