//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers: checked views, the parsed form we emit from, and
//! [`Layout`], the walk every packet gets (addresses, where the upper layer starts, which byte
//! names it, where the datagram ends).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Error;
use super::checksum;

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), shared with IPv6's Next
/// Header.
pub mod protocol {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    /// "No next header" (RFC 8200 §4.7); an ESP dummy packet (RFC 4303 §2.6).
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A read (or read-write) view of an IPv4 packet. After [`Ipv4Packet::new_checked`] the header
/// and the Total Length lie inside the buffer, so no accessor can panic.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks: accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer whose IPv4 header and Total Length it holds: version 4, IHL ≥ 5,
    /// IHL ≤ Total Length ≤ buffer (bytes after Total Length, e.g. Ethernet padding, are ignored).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < IPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(be16(b, 2));
        if b[0] >> 4 != 4 || ihl < IPV4_HEADER_LEN || total < ihl {
            return Err(Error::Malformed);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    /// Type of service / DSCP + ECN byte.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 2))
    }

    /// More Fragments set or a Fragment Offset: one piece of a datagram.
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), 6) & 0x3fff != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }

    /// Does the header checksum verify (RFC 791 §3.1)?
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.buffer.as_ref()[..self.header_len()], 0)) == 0xffff
    }

    /// The bytes after the header up to Total Length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[9] = p;
    }

    /// Recomputes the header checksum over the IHL bytes.
    pub fn fill_checksum(&mut self) {
        let ihl = self.header_len();
        let h = &mut self.buffer.as_mut()[..ihl];
        h[10] = 0;
        h[11] = 0;
        let c = checksum::finish(checksum::sum(h, 0));
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// The IPv4 header we write: 20 bytes, no options, identification 0 and Don't Fragment
/// (RFC 6864 §4.1: an atomic datagram's ID carries nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Ipv4Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Ipv4Repr {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            payload_len: p.total_len() - p.header_len(),
        }
    }

    /// Writes the header, checksum included, at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let total =
            u16::try_from(IPV4_HEADER_LEN + self.payload_len).map_err(|_| Error::TooLong)?;
        let h = buf.get_mut(..IPV4_HEADER_LEN).ok_or(Error::NoRoom)?;
        h[0] = 0x45;
        h[1] = self.tos;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h[4..6].copy_from_slice(&[0, 0]);
        h[6..8].copy_from_slice(&[0x40, 0]);
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[12..16].copy_from_slice(&self.src.octets());
        h[16..20].copy_from_slice(&self.dst.octets());
        Ipv4Packet::new_unchecked(h).fill_checksum();
        Ok(())
    }
}

/// A read (or read-write) view of an IPv6 packet. After [`Ipv6Packet::new_checked`] the fixed
/// header and the Payload Length lie inside the buffer.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer holding an IPv6 header and its Payload Length: version 6, Payload Length
    /// ≠ 0 (jumbograms, RFC 2675, are not for us), 40 + Payload Length ≤ buffer.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < IPV6_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 || be16(b, 4) == 0 {
            return Err(Error::Malformed);
        }
        if IPV6_HEADER_LEN + usize::from(be16(b, 4)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }

    /// The whole datagram's length: header plus Payload Length.
    pub fn total_len(&self) -> usize {
        IPV6_HEADER_LEN + self.payload_len()
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        Ipv6Addr::from(a)
    }

    /// The bytes after the fixed header up to Payload Length (extension headers included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV6_HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
}

/// The IPv6 header we write: flow label 0, no extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub payload_len: usize,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            payload_len: p.payload_len(),
        }
    }

    /// Writes the 40-byte header at the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let plen = u16::try_from(self.payload_len).map_err(|_| Error::TooLong)?;
        let h = buf.get_mut(..IPV6_HEADER_LEN).ok_or(Error::NoRoom)?;
        let w = (6u32 << 28) | (u32::from(self.traffic_class) << 20);
        h[0..4].copy_from_slice(&w.to_be_bytes());
        h[4..6].copy_from_slice(&plen.to_be_bytes());
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src.octets());
        h[24..40].copy_from_slice(&self.dst.octets());
        Ok(())
    }
}

/// Where things are in an IPv4/IPv6 packet, found by [`parse`]; offsets from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Bytes of IP header plus IPv6 extension headers before the upper layer.
    pub header_len: usize,
    /// Offset of the byte naming the upper layer: the IPv4 Protocol, or the Next Header of the
    /// last IPv6 header before it.
    pub nh_field: usize,
    /// The upper-layer protocol named there.
    pub protocol: u8,
    /// End of the datagram by its length field (bytes after it are not the packet's).
    pub end: usize,
    /// A piece of a fragmented datagram (IPv4 MF/offset, or an IPv6 Fragment header with M or an
    /// offset): `protocol` is the datagram's, but only the first piece starts with its header.
    pub fragment: bool,
}

impl Layout {
    pub fn version(&self) -> u8 {
        if self.src.is_ipv4() { 4 } else { 6 }
    }

    /// The upper-layer bytes: `header_len..end`.
    pub fn body(&self) -> core::ops::Range<usize> {
        self.header_len..self.end
    }

    /// After the upper layer was replaced in place (ESP inserted or removed): names `protocol`
    /// at `nh_field`, sets the length fields for a datagram of `new_len` bytes and (IPv4) the
    /// header checksum. `hdr` is the packet's IP header plus extension headers.
    pub fn rewrite(&self, hdr: &mut [u8], protocol: u8, new_len: usize) -> Result<(), Error> {
        if hdr.len() < self.header_len || self.nh_field >= self.header_len {
            return Err(Error::NoRoom);
        }
        if self.src.is_ipv4() {
            let len = u16::try_from(new_len).map_err(|_| Error::TooLong)?;
            let mut p = Ipv4Packet::new_unchecked(&mut hdr[..self.header_len]);
            p.set_protocol(protocol);
            p.set_total_len(len);
            p.fill_checksum();
        } else {
            let len = new_len
                .checked_sub(IPV6_HEADER_LEN)
                .ok_or(Error::Malformed)?;
            let len = u16::try_from(len).map_err(|_| Error::TooLong)?;
            hdr[self.nh_field] = protocol;
            Ipv6Packet::new_unchecked(&mut hdr[..self.header_len]).set_payload_len(len);
        }
        Ok(())
    }
}

/// Parses the IP header at the start of `pkt` and walks IPv6 extension headers (hop-by-hop,
/// routing, destination options, fragment; RFC 8200 §4) up to the upper layer. Never panics.
pub fn parse(pkt: &[u8]) -> Result<Layout, Error> {
    match pkt.first().ok_or(Error::Truncated)? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(pkt)?;
            Ok(Layout {
                src: IpAddr::V4(p.src_addr()),
                dst: IpAddr::V4(p.dst_addr()),
                header_len: p.header_len(),
                nh_field: 9,
                protocol: p.protocol(),
                end: p.total_len(),
                fragment: p.is_fragment(),
            })
        }
        6 => {
            let p = Ipv6Packet::new_checked(pkt)?;
            let end = p.total_len();
            let (mut nh_field, mut nh, mut off) = (6, p.next_header(), IPV6_HEADER_LEN);
            let mut fragment = false;
            loop {
                match nh {
                    protocol::HOP_BY_HOP | protocol::ROUTING | protocol::DEST_OPTS => {
                        if off + 2 > end {
                            return Err(Error::Truncated);
                        }
                        nh_field = off;
                        nh = pkt[off];
                        off += (usize::from(pkt[off + 1]) + 1) * 8;
                    }
                    protocol::FRAGMENT => {
                        if off + 8 > end {
                            return Err(Error::Truncated);
                        }
                        nh_field = off;
                        nh = pkt[off];
                        // Offset or M set: a real fragment (an atomic fragment is whole).
                        fragment = be16(pkt, off + 2) & 0xfff9 != 0;
                        off += 8;
                        if fragment {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            if off > end {
                return Err(Error::Truncated);
            }
            Ok(Layout {
                src: IpAddr::V6(p.src_addr()),
                dst: IpAddr::V6(p.dst_addr()),
                header_len: off,
                nh_field,
                protocol: nh,
                end,
                fragment,
            })
        }
        _ => Err(Error::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.2 → 10.0.0.1, UDP, 13 bytes of payload, DF, TTL 64, checksum filled.
    const V4: [u8; 20] = [
        0x45, 0x00, 0x00, 0x21, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0xca, 10, 0, 0, 2, 10, 0,
        0, 1,
    ];

    #[test]
    fn ipv4_deconstruct() {
        let mut buf = [0u8; 40];
        buf[..20].copy_from_slice(&V4);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 33);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.ttl(), 64);
        assert!(!p.is_fragment());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 13);
    }

    #[test]
    fn ipv4_construct_and_emit() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 2),
            dst: Ipv4Addr::new(10, 0, 0, 1),
            protocol: protocol::UDP,
            ttl: 64,
            tos: 0,
            payload_len: 13,
        };
        let mut buf = [0xaau8; 20];
        repr.emit(&mut buf).unwrap();
        assert_eq!(buf, V4);
        let mut full = [0u8; 33];
        full[..20].copy_from_slice(&buf);
        assert_eq!(
            Ipv4Repr::parse(&Ipv4Packet::new_checked(&full[..]).unwrap()),
            repr
        );
        assert_eq!(repr.emit(&mut [0u8; 19]), Err(Error::NoRoom));
        let huge = Ipv4Repr {
            payload_len: 65_516,
            ..repr
        };
        assert_eq!(huge.emit(&mut buf), Err(Error::TooLong));
    }

    #[test]
    fn ipv4_refuses_what_lies() {
        let mut b = [0u8; 33];
        b[..20].copy_from_slice(&V4);
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..32]).err(),
            Some(Error::Truncated)
        );
        let mut bad = b;
        bad[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Error::Malformed)
        );
        let mut bad = b;
        bad[3] = 19; // Total Length below the header
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).err(),
            Some(Error::Malformed)
        );
        let mut frag = b;
        frag[6] = 0x20; // MF
        assert!(parse(&frag).unwrap().fragment);
    }

    #[test]
    fn ipv6_construct_parse_and_walk() {
        let repr = Ipv6Repr {
            src: "fd00::2".parse().unwrap(),
            dst: "fd00::1".parse().unwrap(),
            next_header: protocol::HOP_BY_HOP,
            hop_limit: 64,
            traffic_class: 0xb8,
            payload_len: 8 + 8 + 4,
        };
        let mut b = [0u8; 60];
        repr.emit(&mut b).unwrap();
        // hop-by-hop (8 bytes) → destination options (8 bytes) → ESP
        b[40] = protocol::DEST_OPTS;
        b[48] = protocol::ESP;
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), repr);
        let l = parse(&b).unwrap();
        assert_eq!(
            (l.header_len, l.nh_field, l.protocol, l.end, l.fragment),
            (56, 48, protocol::ESP, 60, false)
        );
        assert_eq!(l.body(), 56..60);
        assert_eq!(l.version(), 6);
        // a real fragment: offset 1
        b[40] = protocol::FRAGMENT;
        b[48..56].copy_from_slice(&[protocol::ESP, 0, 0, 8, 0, 0, 0, 1]);
        let l = parse(&b).unwrap();
        assert!(l.fragment);
        // an atomic fragment (offset 0, M clear) is a whole datagram
        b[48..56].copy_from_slice(&[protocol::ESP, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(parse(&b).unwrap().protocol, protocol::ESP);
        assert!(!parse(&b).unwrap().fragment);
        // an extension header running past the datagram
        b[41] = 9;
        b[40] = protocol::DEST_OPTS;
        assert_eq!(parse(&b), Err(Error::Truncated));
    }

    #[test]
    fn ipv6_refuses_what_lies() {
        let mut b = [0u8; 48];
        b[0] = 0x60;
        assert_eq!(parse(&b), Err(Error::Malformed), "jumbogram");
        b[5] = 9;
        assert_eq!(parse(&b), Err(Error::Truncated));
        assert_eq!(parse(&b[..39]), Err(Error::Truncated));
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&[0x50; 60]), Err(Error::Malformed));
    }

    #[test]
    fn rewrite_sets_protocol_length_and_checksum() {
        let mut b = [0u8; 33];
        b[..20].copy_from_slice(&V4);
        let l = parse(&b).unwrap();
        l.rewrite(&mut b[..20], protocol::ESP, 29).unwrap();
        let p = Ipv4Packet::new_checked(&b[..29]).unwrap();
        assert_eq!((p.protocol(), p.total_len()), (protocol::ESP, 29));
        assert!(p.verify_checksum());
        assert_eq!(
            l.rewrite(&mut b[..20], protocol::ESP, 70_000),
            Err(Error::TooLong)
        );
    }
}
