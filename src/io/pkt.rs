//! Small L3/L4 helpers shared by the copying backends: header parsing, synthetic header
//! writing, and the Internet checksum. Pure functions over byte slices; no allocation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ESP: u8 = 50;
pub const IPV4_HDR: usize = 20;
pub const IPV6_HDR: usize = 40;
pub const UDP_HDR: usize = 8;

/// What a backend needs to know about an L3 packet to route it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Upper-layer protocol (IPv4 protocol / IPv6 next header; extension headers not walked).
    pub proto: u8,
    /// Offset of the L4 header from the start of the packet.
    pub l4: usize,
    /// Packet length according to the IP header (≤ the buffer length).
    pub len: usize,
    /// IPv4 fragment (MF set or offset ≠ 0). Always false for IPv6 (fragment header = proto 44).
    pub fragment: bool,
}

impl L3 {
    /// UDP source and destination ports, if `proto` is UDP, unfragmented, and the header fits.
    #[inline]
    pub fn udp_ports(&self, pkt: &[u8]) -> Option<(u16, u16)> {
        if self.proto != IPPROTO_UDP || self.fragment || self.len < self.l4 + UDP_HDR {
            return None;
        }
        let u = &pkt[self.l4..];
        Some((
            u16::from_be_bytes([u[0], u[1]]),
            u16::from_be_bytes([u[2], u[3]]),
        ))
    }
}

/// Parse an IPv4 or IPv6 header at the start of `pkt`; `None` if malformed or truncated.
#[inline]
pub fn parse_l3(pkt: &[u8]) -> Option<L3> {
    match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < IPV4_HDR {
                return None;
            }
            let ihl = ((pkt[0] & 0x0f) as usize) * 4;
            let len = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
            if ihl < IPV4_HDR || len < ihl || len > pkt.len() {
                return None;
            }
            let frag = u16::from_be_bytes([pkt[6], pkt[7]]);
            Some(L3 {
                src: IpAddr::V4(Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15])),
                dst: IpAddr::V4(Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
                proto: pkt[9],
                l4: ihl,
                len,
                fragment: frag & 0x3fff != 0,
            })
        }
        6 => {
            if pkt.len() < IPV6_HDR {
                return None;
            }
            let len = IPV6_HDR + u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
            if len > pkt.len() {
                return None;
            }
            Some(L3 {
                src: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[8..24]).ok()?)),
                dst: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&pkt[24..40]).ok()?)),
                proto: pkt[6],
                l4: IPV6_HDR,
                len,
                fragment: false,
            })
        }
        _ => None,
    }
}

/// One's-complement sum of `data` added to `sum` (not folded).
#[inline]
pub fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes(c.try_into().expect("8 bytes"));
        // Add the two 32-bit halves: no overflow of the 64-bit accumulator for any frame size.
        sum += (w >> 32) + (w & 0xffff_ffff);
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        sum += u16::from_be_bytes([rest[0], rest[1]]) as u64;
        rest = &rest[2..];
    }
    if let [b] = rest {
        sum += (*b as u64) << 8;
    }
    sum
}

/// Fold and complement a sum into a checksum field value.
#[inline]
pub fn csum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recompute the IPv4 header checksum in place (`hdr` = the whole IPv4 header).
#[inline]
pub fn fix_ipv4_checksum(hdr: &mut [u8]) {
    hdr[10] = 0;
    hdr[11] = 0;
    let c = csum_fold(csum_add(0, hdr));
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Recompute the UDP checksum of an unfragmented UDP packet in place (`pkt` starts with the IP
/// header described by `l3`). A computed 0 is sent as 0xffff (RFC 768).
#[inline]
pub fn fix_udp_checksum(pkt: &mut [u8], l3: &L3) {
    let udp_len = l3.len - l3.l4;
    pkt[l3.l4 + 6] = 0;
    pkt[l3.l4 + 7] = 0;
    let mut sum = match (l3.src, l3.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => csum_add(csum_add(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => csum_add(csum_add(0, &s.octets()), &d.octets()),
        _ => return,
    };
    sum += IPPROTO_UDP as u64 + udp_len as u64;
    sum = csum_add(sum, &pkt[l3.l4..l3.len]);
    let mut c = csum_fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    pkt[l3.l4 + 6..l3.l4 + 8].copy_from_slice(&c.to_be_bytes());
}

/// Write an IPv4 header (20 bytes, DF set, id 0) at `buf[0..20]` for `payload_len` bytes of
/// protocol `proto` after it, with a valid header checksum.
pub fn write_ipv4(
    buf: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    tos: u8,
    payload_len: usize,
) {
    let total = (IPV4_HDR + payload_len) as u16;
    let h = &mut buf[..IPV4_HDR];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&[0, 0]);
    h[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    fix_ipv4_checksum(h);
}

/// Write an IPv6 header (40 bytes, flow label 0) at `buf[0..40]`.
pub fn write_ipv6(
    buf: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    nh: u8,
    hlim: u8,
    tclass: u8,
    payload_len: usize,
) {
    let h = &mut buf[..IPV6_HDR];
    let w = (6u32 << 28) | ((tclass as u32) << 20);
    h[0..4].copy_from_slice(&w.to_be_bytes());
    h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    h[6] = nh;
    h[7] = hlim;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
}

/// Write a UDP header at `buf[0..8]` for `payload_len` bytes (checksum left 0: fill it with
/// [`fix_udp_checksum`] once the payload is in place).
pub fn write_udp(buf: &mut [u8], sport: u16, dport: u16, payload_len: usize) {
    buf[0..2].copy_from_slice(&sport.to_be_bytes());
    buf[2..4].copy_from_slice(&dport.to_be_bytes());
    buf[4..6].copy_from_slice(&((UDP_HDR + payload_len) as u16).to_be_bytes());
    buf[6..8].copy_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_udp_roundtrip_and_checksums() {
        let mut b = [0u8; 64];
        let payload = b"hello";
        b[28..33].copy_from_slice(payload);
        write_ipv4(
            &mut b,
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 1),
            IPPROTO_UDP,
            64,
            0,
            13,
        );
        write_udp(&mut b[20..], 1234, 5060, 5);
        let l3 = parse_l3(&b).unwrap();
        fix_udp_checksum(&mut b, &l3);
        assert_eq!(l3.len, 33);
        assert_eq!(l3.udp_ports(&b), Some((1234, 5060)));
        // Verifying a correct checksum yields 0.
        assert_eq!(csum_fold(csum_add(0, &b[..20])), 0);
        let mut s = csum_add(csum_add(0, &b[12..16]), &b[16..20]) + 17 + 13;
        s = csum_add(s, &b[20..33]);
        assert_eq!(csum_fold(s), 0);
    }

    #[test]
    fn odd_lengths_sum_like_rfc1071() {
        let d = [0x00u8, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0xab];
        let mut naive: u64 = 0;
        for c in d.chunks(2) {
            naive += (u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])) as u64;
        }
        assert_eq!(csum_fold(csum_add(0, &d)), csum_fold(naive));
    }
}
