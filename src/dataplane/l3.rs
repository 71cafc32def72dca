//! Layer 3/4 helpers for the workers: find the UDP datagram in an IPv4/IPv6 packet, and write
//! fresh IP + UDP headers (with checksums) in front of a payload that was edited in place.
//!
//! Owns: the Internet checksum (RFC 1071) and the header layouts of RFC 791, RFC 8200 and
//! RFC 768. Never allocates.

use core::net::{IpAddr, SocketAddr};
use core::ops::Range;

pub const IPV4_HDR: usize = 20;
pub const IPV6_HDR: usize = 40;
pub const UDP_HDR: usize = 8;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ESP: u8 = 50;

/// What the classifier found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A UDP datagram: addresses, and where its payload lies in the packet.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: (usize, usize),
    },
    /// ESP (IP protocol 50); the offset of the ESP header.
    Esp {
        src: IpAddr,
        dst: IpAddr,
        esp: usize,
    },
    /// Anything else (another protocol, an IP fragment, a malformed header).
    Other,
}

/// Classify an L3 packet. Only what the workers need: UDP and ESP, unfragmented.
pub fn classify(pkt: &[u8]) -> L4 {
    let Ok(ip) = crate::esp::packet::parse_ip(pkt) else {
        return L4::Other;
    };
    let (src, dst) = match ip.version {
        4 => {
            let s: [u8; 4] = pkt[12..16].try_into().unwrap_or_default();
            let d: [u8; 4] = pkt[16..20].try_into().unwrap_or_default();
            // fragments (MF set or an offset) are not ours to reassemble here
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x3fff != 0 {
                return L4::Other;
            }
            (IpAddr::from(s), IpAddr::from(d))
        }
        _ => {
            let s: [u8; 16] = pkt[8..24].try_into().unwrap_or_default();
            let d: [u8; 16] = pkt[24..40].try_into().unwrap_or_default();
            (IpAddr::from(s), IpAddr::from(d))
        }
    };
    let body = ip.body();
    match ip.proto {
        PROTO_ESP => L4::Esp {
            src,
            dst,
            esp: body.start,
        },
        PROTO_UDP if body.len() >= UDP_HDR => {
            let u = &pkt[body.start..];
            let sport = u16::from_be_bytes([u[0], u[1]]);
            let dport = u16::from_be_bytes([u[2], u[3]]);
            let ulen = u16::from_be_bytes([u[4], u[5]]) as usize;
            if ulen < UDP_HDR || ulen > body.len() {
                return L4::Other;
            }
            L4::Udp {
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                payload: (body.start + UDP_HDR, body.start + ulen),
            }
        }
        _ => L4::Other,
    }
}

/// One's-complement sum of `data` (RFC 1071) added to `acc` (not folded, not inverted): the
/// 16-bit words are big-endian pairs from the start of `data`.
///
/// RFC 1071 §2(B): the sum is byte-order independent, so whole 8-byte words are added in native
/// order into a 128-bit accumulator (no carry handling in the loop), folded to 16 bits and
/// swapped back once: a quarter of the additions of a 16-bit loop, on every packet we forward.
pub fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut wide: u128 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        wide += u128::from(u64::from_ne_bytes(w));
    }
    let mut v = (wide as u64 as u128) + (wide >> 64);
    while v >> 16 != 0 {
        v = (v & 0xffff) + (v >> 16);
    }
    acc += u64::from(u16::from_be(v as u16));
    // (8-byte chunks keep the remainder at an even offset: its pairs are still word-aligned)
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    acc
}

pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Write IP + UDP headers for `buf[payload]` just in front of it, from `src` to `dst` (same
/// family). Returns the range of the whole packet. `None` if the headroom is too small or the
/// families differ.
pub fn write_udp(
    buf: &mut [u8],
    payload: Range<usize>,
    src: SocketAddr,
    dst: SocketAddr,
) -> Option<Range<usize>> {
    let plen = payload.len();
    let ulen = UDP_HDR + plen;
    if ulen > u16::MAX as usize {
        return None;
    }
    let iph = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_HDR,
        (IpAddr::V6(_), IpAddr::V6(_)) => IPV6_HDR,
        _ => return None,
    };
    // the IPv4 Total Length counts the header too (RFC 791); IPv6's Payload Length does not
    if iph == IPV4_HDR && IPV4_HDR + ulen > u16::MAX as usize {
        return None;
    }
    if payload.end > buf.len() {
        return None;
    }
    let start = payload.start.checked_sub(iph + UDP_HDR)?;
    let u = payload.start - UDP_HDR;
    buf[u..u + 2].copy_from_slice(&src.port().to_be_bytes());
    buf[u + 2..u + 4].copy_from_slice(&dst.port().to_be_bytes());
    buf[u + 4..u + 6].copy_from_slice(&(ulen as u16).to_be_bytes());
    buf[u + 6..u + 8].copy_from_slice(&[0, 0]);
    // pseudo-header (RFC 768; RFC 8200 §8.1)
    let mut acc = PROTO_UDP as u64 + ulen as u64;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            let total = (IPV4_HDR + ulen) as u16;
            let h = &mut buf[start..start + IPV4_HDR];
            h[0] = 0x45;
            h[1] = 0;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[4..6].copy_from_slice(&[0, 0]); // id
            h[6..8].copy_from_slice(&[0x40, 0]); // DF
            h[8] = 64;
            h[9] = PROTO_UDP;
            h[10..12].copy_from_slice(&[0, 0]);
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum16(h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
            let h = &mut buf[start..start + IPV6_HDR];
            h[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            h[4..6].copy_from_slice(&(ulen as u16).to_be_bytes());
            h[6] = PROTO_UDP;
            h[7] = 64;
            h[8..24].copy_from_slice(&s.octets());
            h[24..40].copy_from_slice(&d.octets());
        }
        _ => return None,
    }
    let c = !fold(sum16(&buf[u..payload.end], acc));
    // RFC 768: a computed zero is sent as all ones (and is mandatory on IPv6).
    let c = if c == 0 { 0xffff } else { c };
    buf[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    Some(start..payload.end)
}

/// Verify the UDP checksum of a packet found by [`classify`] (0 = none, allowed on IPv4 only).
pub fn udp_checksum_ok(
    pkt: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
    payload: (usize, usize),
) -> bool {
    let u = payload.0 - UDP_HDR;
    let ck = u16::from_be_bytes([pkt[u + 6], pkt[u + 7]]);
    if ck == 0 {
        return src.is_ipv4();
    }
    let ulen = payload.1 - u;
    let mut acc = PROTO_UDP as u64 + ulen as u64;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        _ => return false,
    }
    fold(sum16(&pkt[u..payload.1], acc)) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram too long for the IPv4 Total Length, or a payload range past the buffer, is
    /// refused rather than written with a truncated length or out of bounds.
    #[test]
    fn write_udp_refuses_what_does_not_fit() {
        let v4 = |p| SocketAddr::new(IpAddr::from([10, 0, 0, 1]), p);
        let v6 = |p| SocketAddr::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), p);
        let mut buf = vec![0u8; 70_000];
        let top = u16::MAX as usize - IPV4_HDR - UDP_HDR;
        assert!(write_udp(&mut buf, 64..64 + top + 1, v4(1), v4(2)).is_none());
        assert!(write_udp(&mut buf, 64..64 + top, v4(1), v4(2)).is_some());
        assert!(write_udp(&mut buf, 64..64 + top + 1, v6(1), v6(2)).is_some());
        let mut small = [0u8; 128];
        assert!(write_udp(&mut small, 64..129, v4(1), v4(2)).is_none());
    }

    /// The word-at-a-time sum equals the plain RFC 1071 16-bit loop, at every length and start.
    #[test]
    fn sum16_matches_the_plain_loop() {
        fn plain(d: &[u8], mut acc: u64) -> u64 {
            for c in d.chunks(2) {
                acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            acc
        }
        let data: Vec<u8> = (0..1600u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let ff = vec![0xffu8; 1600];
        for d in [&data[..], &ff[..]] {
            for start in 0..3 {
                for len in (0..200).chain([1023, 1024, 1025, 1500, 1597]) {
                    let s = &d[start..start + len];
                    assert_eq!(
                        fold(sum16(s, 77)),
                        fold(plain(s, 77)),
                        "start {start} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn write_then_classify_round_trips() {
        for (s, d) in [
            ("10.0.0.1:5060", "10.0.0.2:5070"),
            ("[fd00::1]:5060", "[fd00::2]:7000"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut buf = [0u8; 256];
            buf[100..111].copy_from_slice(b"hello world");
            let r = write_udp(&mut buf, 100..111, s, d).unwrap();
            let pkt = &buf[r.clone()];
            match classify(pkt) {
                L4::Udp { src, dst, payload } => {
                    assert_eq!((src, dst), (s, d));
                    assert_eq!(&pkt[payload.0..payload.1], b"hello world");
                    assert!(udp_checksum_ok(pkt, src, dst, payload));
                }
                other => panic!("{other:?}"),
            }
            if s.is_ipv4() {
                assert_eq!(fold(sum16(&pkt[..20], 0)), 0xffff, "IPv4 header checksum");
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is 220d (before folding: 2ddf0).
        assert_eq!(
            fold(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
    }
}
