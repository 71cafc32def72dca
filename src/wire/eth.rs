//! Ethernet II frames (IEEE 802.3): a checked view, the header we write, and finding the IP
//! packet behind up to two VLAN tags (IEEE 802.1Q / 802.1ad).

use super::Error;

pub const HEADER_LEN: usize = 14;

/// EtherType values we read or write.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// A read (or read-write) view of an Ethernet frame; after [`EthernetFrame::new_checked`] the
/// 14-byte header lies in the buffer.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[0..6]);
        a
    }

    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[6..12]);
        a
    }

    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[12], b[13]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Offset of the IPv4/IPv6 packet in the frame, behind at most two VLAN tags; `None` for
    /// any other EtherType or a tag cut short.
    pub fn ip_offset(&self) -> Option<usize> {
        let f = self.buffer.as_ref();
        let mut o = 12;
        for _ in 0..3 {
            let et = u16::from_be_bytes([*f.get(o)?, *f.get(o + 1)?]);
            match et {
                ethertype::IPV4 | ethertype::IPV6 => return Some(o + 2),
                ethertype::VLAN | ethertype::QINQ => o += 4,
                _ => return None,
            }
        }
        None
    }
}

/// The Ethernet header we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: [u8; 6],
    pub dst: [u8; 6],
    pub ethertype: u16,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            src: f.src_addr(),
            dst: f.dst_addr(),
            ethertype: f.ethertype(),
        }
    }

    /// The EtherType for the IP packet starting `pkt` (by its version nibble).
    pub fn ethertype_of(pkt: &[u8]) -> Option<u16> {
        match pkt.first()? >> 4 {
            4 => Some(ethertype::IPV4),
            6 => Some(ethertype::IPV6),
            _ => None,
        }
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), Error> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        h[0..6].copy_from_slice(&self.dst);
        h[6..12].copy_from_slice(&self.src);
        h[12..14].copy_from_slice(&self.ethertype.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 18] = [
        1, 2, 3, 4, 5, 6, 0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 0x08, 0x00, 0x45, 0, 0, 20,
    ];

    #[test]
    fn deconstruct() {
        let f = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [0xa, 0xb, 0xc, 0xd, 0xe, 0xf]);
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.payload(), &FRAME[14..]);
        assert_eq!(f.ip_offset(), Some(14));
    }

    #[test]
    fn construct() {
        let mut b = FRAME;
        b[..14].fill(0);
        EthernetRepr::parse(&EthernetFrame::new_checked(&FRAME[..]).unwrap())
            .emit(&mut b)
            .unwrap();
        assert_eq!(b, FRAME);
        assert_eq!(
            EthernetRepr::ethertype_of(&FRAME[14..]),
            Some(ethertype::IPV4)
        );
        assert_eq!(EthernetRepr::ethertype_of(&[0x60]), Some(ethertype::IPV6));
        assert_eq!(EthernetRepr::ethertype_of(&[0x50]), None);
        assert_eq!(
            EthernetRepr::parse(&EthernetFrame::new_unchecked(&FRAME[..])).emit(&mut [0; 13]),
            Err(Error::NoRoom)
        );
    }

    #[test]
    fn vlan_tags_and_lies() {
        assert_eq!(
            EthernetFrame::new_checked(&FRAME[..13]).err(),
            Some(Error::Truncated)
        );
        let mut q = [0u8; 26];
        q[12..14].copy_from_slice(&ethertype::QINQ.to_be_bytes());
        q[16..18].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        q[20..22].copy_from_slice(&ethertype::IPV6.to_be_bytes());
        assert_eq!(
            EthernetFrame::new_checked(&q[..]).unwrap().ip_offset(),
            Some(22)
        );
        // three tags, or a tag cut short: not ours
        q[20..22].copy_from_slice(&ethertype::VLAN.to_be_bytes());
        q[24..26].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        assert_eq!(
            EthernetFrame::new_checked(&q[..]).unwrap().ip_offset(),
            None
        );
        assert_eq!(
            EthernetFrame::new_checked(&q[..17]).unwrap().ip_offset(),
            None
        );
    }
}
