//! UDP (RFC 768): a checked view, the header we emit, checksums with the pseudo-header, and
//! [`emit_datagram`], which writes IP + UDP headers in front of a payload edited in place.

use core::net::{IpAddr, SocketAddr};
use core::ops::Range;

use super::Error;
use super::checksum;
use super::ip::{IPV4_HEADER_LEN, IPV6_HEADER_LEN, Ipv4Repr, Ipv6Repr, protocol};

pub const HEADER_LEN: usize = 8;

/// A read (or read-write) view of a UDP datagram. After [`UdpPacket::new_checked`] the header
/// lies in the buffer and 8 ≤ Length ≤ buffer.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    pub fn src_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn dst_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// Header plus payload, by the Length field.
    pub fn len(&self) -> usize {
        let b = self.buffer.as_ref();
        usize::from(u16::from_be_bytes([b[4], b[5]]))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }

    /// The payload's range within the datagram: `8..Length`.
    pub fn payload_range(&self) -> Range<usize> {
        HEADER_LEN..self.len()
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    /// Does the checksum verify under the pseudo-header of `src` → `dst`? A zero checksum means
    /// "none", allowed on IPv4 only (RFC 768; RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        if self.checksum() == 0 {
            return src.is_ipv4();
        }
        let len = self.len();
        match checksum::pseudo_header(src, dst, protocol::UDP, len) {
            Some(acc) => checksum::fold(checksum::sum(&self.buffer.as_ref()[..len], acc)) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Computes and stores the checksum under the pseudo-header of `src` → `dst`; a computed zero
    /// is sent as all ones (RFC 768). Different families: nothing is written, `false`.
    pub fn fill_checksum(&mut self, src: IpAddr, dst: IpAddr) -> bool {
        let len = self.len();
        let Some(acc) = checksum::pseudo_header(src, dst, protocol::UDP, len) else {
            return false;
        };
        let b = self.buffer.as_mut();
        b[6] = 0;
        b[7] = 0;
        let c = checksum::finish(checksum::sum(&b[..len], acc));
        let c = if c == 0 { 0xffff } else { c };
        b[6..8].copy_from_slice(&c.to_be_bytes());
        true
    }
}

/// The UDP header we write (checksum left 0 until [`UdpPacket::fill_checksum`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN,
        }
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let len = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| Error::TooLong)?;
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        h[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        h[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        h[4..6].copy_from_slice(&len.to_be_bytes());
        h[6..8].copy_from_slice(&[0, 0]);
        Ok(())
    }
}

/// Writes IP + UDP headers (TTL/hop limit 64, checksums filled) for `buf[payload]` just in front
/// of it, from `src` to `dst`. Returns the range of the whole packet. Refused: a payload past the
/// buffer or without headroom for the headers ([`Error::NoRoom`]), a datagram too long for the
/// length fields ([`Error::TooLong`]; RFC 791 counts the IPv4 header in Total Length, RFC 8200
/// does not), families that differ ([`Error::Malformed`]).
pub fn emit_datagram(
    buf: &mut [u8],
    payload: Range<usize>,
    src: SocketAddr,
    dst: SocketAddr,
) -> Result<Range<usize>, Error> {
    let udp_len = HEADER_LEN + payload.len();
    let ip_len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => IPV4_HEADER_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => IPV6_HEADER_LEN,
        _ => return Err(Error::Malformed),
    };
    if payload.end > buf.len() || payload.start > payload.end {
        return Err(Error::NoRoom);
    }
    let start = payload
        .start
        .checked_sub(ip_len + HEADER_LEN)
        .ok_or(Error::NoRoom)?;
    let u = payload.start - HEADER_LEN;
    UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        payload_len: payload.len(),
    }
    .emit(&mut buf[u..])?;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
            src: s,
            dst: d,
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            payload_len: udp_len,
        }
        .emit(&mut buf[start..])?,
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
            src: s,
            dst: d,
            next_header: protocol::UDP,
            hop_limit: 64,
            traffic_class: 0,
            payload_len: udp_len,
        }
        .emit(&mut buf[start..])?,
        _ => return Err(Error::Malformed),
    }
    UdpPacket::new_unchecked(&mut buf[u..payload.end]).fill_checksum(src.ip(), dst.ip());
    Ok(start..payload.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip;

    const DGRAM: [u8; 13] = [
        0x04, 0xd2, 0x13, 0xc4, 0x00, 0x0d, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn deconstruct() {
        let p = UdpPacket::new_checked(&DGRAM[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (1234, 5060, 13));
        assert_eq!(p.payload(), b"hello");
        assert_eq!(
            UdpRepr::parse(&p),
            UdpRepr {
                src_port: 1234,
                dst_port: 5060,
                payload_len: 5
            }
        );
    }

    #[test]
    fn construct() {
        let mut b = [0xffu8; 13];
        UdpRepr {
            src_port: 1234,
            dst_port: 5060,
            payload_len: 5,
        }
        .emit(&mut b)
        .unwrap();
        b[8..].copy_from_slice(b"hello");
        assert_eq!(b, DGRAM);
        assert_eq!(
            UdpRepr {
                src_port: 1,
                dst_port: 2,
                payload_len: 65_528
            }
            .emit(&mut b),
            Err(Error::TooLong)
        );
    }

    #[test]
    fn refuses_what_lies() {
        assert_eq!(
            UdpPacket::new_checked(&DGRAM[..7]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            UdpPacket::new_checked(&DGRAM[..12]).err(),
            Some(Error::Truncated)
        );
        let mut bad = DGRAM;
        bad[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).err(),
            Some(Error::Malformed)
        );
    }

    #[test]
    fn checksums_both_families() {
        for (s, d) in [("10.0.0.2", "10.0.0.1"), ("fd00::2", "fd00::1")] {
            let (s, d): (IpAddr, IpAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut b = DGRAM;
            let mut p = UdpPacket::new_checked(&mut b[..]).unwrap();
            assert!(p.fill_checksum(s, d));
            assert_ne!(p.checksum(), 0);
            assert!(p.verify_checksum(s, d));
            assert!(!p.verify_checksum(d, "10.9.9.9".parse().unwrap()));
            b[12] ^= 1;
            assert!(
                !UdpPacket::new_checked(&b[..])
                    .unwrap()
                    .verify_checksum(s, d)
            );
        }
        // zero = no checksum: IPv4 only
        let p = UdpPacket::new_checked(&DGRAM[..]).unwrap();
        assert!(p.verify_checksum("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap()));
        assert!(!p.verify_checksum("fd00::2".parse().unwrap(), "fd00::1".parse().unwrap()));
    }

    /// A datagram too long for the IPv4 Total Length, or a payload range past the buffer, is
    /// refused rather than written with a truncated length or out of bounds.
    #[test]
    fn emit_datagram_refuses_what_does_not_fit() {
        let v4 = |p| SocketAddr::new(IpAddr::from([10, 0, 0, 1]), p);
        let v6 = |p| SocketAddr::new(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), p);
        let mut buf = vec![0u8; 70_000];
        let top = u16::MAX as usize - IPV4_HEADER_LEN - HEADER_LEN;
        assert_eq!(
            emit_datagram(&mut buf, 64..64 + top + 1, v4(1), v4(2)),
            Err(Error::TooLong)
        );
        assert!(emit_datagram(&mut buf, 64..64 + top, v4(1), v4(2)).is_ok());
        assert!(emit_datagram(&mut buf, 64..64 + top + 1, v6(1), v6(2)).is_ok());
        let mut small = [0u8; 128];
        assert_eq!(
            emit_datagram(&mut small, 64..129, v4(1), v4(2)),
            Err(Error::NoRoom)
        );
        assert_eq!(
            emit_datagram(&mut small, 10..20, v4(1), v4(2)),
            Err(Error::NoRoom)
        );
        assert_eq!(
            emit_datagram(&mut small, 64..70, v4(1), v6(2)),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn emit_datagram_then_parse_round_trips() {
        for (s, d) in [
            ("10.0.0.1:5060", "10.0.0.2:5070"),
            ("[fd00::1]:5060", "[fd00::2]:7000"),
        ] {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            let mut buf = [0u8; 256];
            buf[100..111].copy_from_slice(b"hello world");
            let r = emit_datagram(&mut buf, 100..111, s, d).unwrap();
            let pkt = &buf[r];
            let l = ip::parse(pkt).unwrap();
            assert_eq!((l.src, l.dst, l.protocol), (s.ip(), d.ip(), protocol::UDP));
            let u = UdpPacket::new_checked(&pkt[l.body()]).unwrap();
            assert_eq!((u.src_port(), u.dst_port()), (s.port(), d.port()));
            assert_eq!(u.payload(), b"hello world");
            assert!(u.verify_checksum(l.src, l.dst));
            if s.is_ipv4() {
                assert!(ip::Ipv4Packet::new_checked(pkt).unwrap().verify_checksum());
            }
        }
    }
}
