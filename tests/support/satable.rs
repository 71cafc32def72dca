//! Helpers shared by the SA-table tests.

use pcscf::esp::{Sa, SaOptions};
use pcscf::satable::{EntryMeta, SetPorts, SetState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

pub const CK: [u8; 16] = [0x11; 16];
pub const IK: [u8; 16] = [0x22; 16];

/// The cheapest SA to build: HMAC-SHA-1-96, no encryption.
pub fn null_sa(spi: u32) -> Arc<Sa> {
    Arc::new(Sa::from_aka(spi, "hmac-sha-1-96", "null", &CK, &IK, SaOptions::default()).unwrap())
}

pub fn meta(addr: IpAddr, ue_port: u16, local_port: u16, binding: u64) -> EntryMeta {
    EntryMeta {
        ue_addr: addr,
        ue_port,
        ue_ports: SetPorts::default(),
        local_port,
        // the pairing the tests use: port-c even, port-s the next port
        ports: SetPorts {
            c: local_port & !1,
            s: local_port | 1,
        },
        binding,
        state: SetState::Temporary,
    }
}

pub fn v4(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

pub fn v6(i: u32) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16,
    ))
}

/// An IPv4/UDP packet (src 10.0.0.1:5063 → 10.0.0.2:5064, `payload` bytes of 0x61) placed in a
/// 2 KB buffer with 128 bytes of headroom; returns (buf, start, end).
pub fn udp4(payload: usize) -> (Vec<u8>, usize, usize) {
    let mut buf = vec![0u8; 2048];
    let total = 28 + payload;
    let start = 128;
    let p = &mut buf[start..start + total];
    p[..20].copy_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ]);
    p[20..24].copy_from_slice(&[0x13, 0xc7, 0x13, 0xc8]);
    p[24..26].copy_from_slice(&((8 + payload) as u16).to_be_bytes());
    for b in &mut p[28..] {
        *b = 0x61;
    }
    (buf, start, start + total)
}
