//! The worker's first question about a packet: is it UDP (and where is its payload) or ESP, and
//! from whom to whom. Headers are read by [`crate::wire`]; nothing here allocates.

use core::net::{IpAddr, SocketAddr};
use core::ops::Range;

use crate::wire::{self, UdpPacket, protocol};

/// What the classifier found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A UDP datagram: addresses, and where its payload lies in the packet.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
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

/// Classify an IP packet. Only what the workers need: UDP and ESP, unfragmented (fragments are
/// not reassembled here).
#[inline]
pub fn classify(pkt: &[u8]) -> L4 {
    let Ok(ip) = wire::ip::parse(pkt) else {
        return L4::Other;
    };
    if ip.fragment {
        return L4::Other;
    }
    match ip.protocol {
        protocol::ESP => L4::Esp {
            src: ip.src,
            dst: ip.dst,
            esp: ip.header_len,
        },
        protocol::UDP => match UdpPacket::new_checked(&pkt[ip.body()]) {
            Ok(u) => {
                let p = u.payload_range();
                L4::Udp {
                    src: SocketAddr::new(ip.src, u.src_port()),
                    dst: SocketAddr::new(ip.dst, u.dst_port()),
                    payload: ip.header_len + p.start..ip.header_len + p.end,
                }
            }
            Err(_) => L4::Other,
        },
        _ => L4::Other,
    }
}

/// Verify the UDP checksum of a datagram found by [`classify`] (0 = none, allowed on IPv4 only).
pub fn udp_checksum_ok(
    pkt: &[u8],
    src: SocketAddr,
    dst: SocketAddr,
    payload: &Range<usize>,
) -> bool {
    let Some(udp) = pkt.get(payload.start.wrapping_sub(wire::udp::HEADER_LEN)..payload.end) else {
        return false;
    };
    UdpPacket::new_checked(udp).is_ok_and(|u| u.verify_checksum(src.ip(), dst.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_classify_round_trips() {
        for (s, d) in [
            ("10.0.0.1:5060", "10.0.0.2:5070"),
            ("[fd00::1]:5060", "[fd00::2]:7000"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut buf = [0u8; 256];
            buf[100..111].copy_from_slice(b"hello world");
            let r = wire::emit_datagram(&mut buf, 100..111, s, d).unwrap();
            let pkt = &buf[r];
            match classify(pkt) {
                L4::Udp { src, dst, payload } => {
                    assert_eq!((src, dst), (s, d));
                    assert_eq!(&pkt[payload.clone()], b"hello world");
                    assert!(udp_checksum_ok(pkt, src, dst, &payload));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn fragments_and_garbage_are_other() {
        let s: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let d: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let mut buf = [0u8; 128];
        let r = wire::emit_datagram(&mut buf, 64..80, s, d).unwrap();
        let mut pkt = buf[r].to_vec();
        pkt[6] |= 0x20; // MF
        assert_eq!(classify(&pkt), L4::Other);
        assert_eq!(classify(&[0x45; 10]), L4::Other);
        assert_eq!(classify(&[]), L4::Other);
        // a UDP length past the datagram
        pkt[6] &= !0x20;
        pkt[24] = 0xff;
        assert_eq!(classify(&pkt), L4::Other);
        assert!(!udp_checksum_ok(&pkt, s, d, &(0..4)));
    }
}
