//! IP header handling for transport-mode ESP: find the ESP header in an IPv4/IPv6 packet
//! (walking IPv6 extension headers), find where ESP goes in an outbound packet, and fix the
//! outer header (protocol/next header, lengths, IPv4 checksum; RFC 4303 §3.1.1, spec §3.1).
//!
//! Only reads and in-place writes; never allocates, never panics on any input.

use super::error::EspError;
use core::ops::Range;

/// IP protocol number of ESP.
pub const PROTO_ESP: u8 = 50;
/// "No next header": an ESP dummy packet (RFC 4303 §2.6).
pub const PROTO_NONE: u8 = 59;
/// UDP.
pub const PROTO_UDP: u8 = 17;
/// TCP.
pub const PROTO_TCP: u8 = 6;

const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_DEST_OPTS: u8 = 60;

/// Where things are in an IP packet (offsets relative to the packet's first byte).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpLayout {
    /// 4 or 6.
    pub version: u8,
    /// Bytes of IP header plus extension headers before ESP (outbound: before the upper layer).
    pub hdr_len: usize,
    /// Offset of the byte that names the protocol after the headers (IPv4 protocol, or the
    /// next-header field of the last header before it).
    pub nh_field: usize,
    /// The protocol named there (50 for ESP inbound; the upper layer outbound).
    pub proto: u8,
    /// End of the IP datagram by its length field (bytes after it, e.g. Ethernet padding, are
    /// ignored).
    pub end: usize,
}

impl IpLayout {
    /// The range after the headers up to the datagram's end (ESP inbound, upper layer outbound).
    pub fn body(&self) -> Range<usize> {
        self.hdr_len..self.end
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> Result<u16, EspError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(EspError::Truncated),
    }
}

/// Walks the IP header (and IPv6 extension headers) up to the first header that is not
/// hop-by-hop, routing, fragment or destination options (RFC 8200 §4; RFC 4303 §3.1.1).
/// Real fragments are refused: ESP is applied before fragmentation and checked after
/// reassembly (RFC 4303 §3.3.5, §3.4.1).
pub fn parse_ip(pkt: &[u8]) -> Result<IpLayout, EspError> {
    let first = *pkt.first().ok_or(EspError::Truncated)?;
    match first >> 4 {
        4 => {
            if pkt.len() < 20 {
                return Err(EspError::Truncated);
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let total = usize::from(be16(pkt, 2)?);
            if ihl < 20 || total < ihl {
                return Err(EspError::BadIpHeader);
            }
            if total > pkt.len() {
                return Err(EspError::Truncated);
            }
            let frag = be16(pkt, 6)?;
            if frag & 0x3fff != 0 {
                return Err(EspError::Fragment);
            }
            Ok(IpLayout {
                version: 4,
                hdr_len: ihl,
                nh_field: 9,
                proto: pkt[9],
                end: total,
            })
        }
        6 => {
            if pkt.len() < 40 {
                return Err(EspError::Truncated);
            }
            let plen = usize::from(be16(pkt, 4)?);
            if plen == 0 {
                // Jumbograms (RFC 2675) are not for us.
                return Err(EspError::BadIpHeader);
            }
            let end = 40 + plen;
            if end > pkt.len() {
                return Err(EspError::Truncated);
            }
            let mut nh_field = 6;
            let mut nh = pkt[6];
            let mut off = 40;
            loop {
                match nh {
                    EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                        if off + 2 > end {
                            return Err(EspError::Truncated);
                        }
                        let len = (usize::from(pkt[off + 1]) + 1) * 8;
                        nh_field = off;
                        nh = pkt[off];
                        off += len;
                    }
                    EXT_FRAGMENT => {
                        if off + 8 > end {
                            return Err(EspError::Truncated);
                        }
                        // Offset or M flag set: a real fragment (an atomic fragment is fine).
                        if be16(pkt, off + 2)? & 0xfff9 != 0 {
                            return Err(EspError::Fragment);
                        }
                        nh_field = off;
                        nh = pkt[off];
                        off += 8;
                    }
                    _ => break,
                }
            }
            if off > end {
                return Err(EspError::Truncated);
            }
            Ok(IpLayout {
                version: 6,
                hdr_len: off,
                nh_field,
                proto: nh,
                end,
            })
        }
        _ => Err(EspError::BadIpHeader),
    }
}

/// Finds ESP in an IP packet: the layout, whose [`IpLayout::body`] is the ESP packet from the
/// SPI to the end of the ICV. [`EspError::NotEsp`] if the protocol is not 50.
pub fn locate_esp(pkt: &[u8]) -> Result<IpLayout, EspError> {
    let l = parse_ip(pkt)?;
    if l.proto != PROTO_ESP {
        return Err(EspError::NotEsp);
    }
    Ok(l)
}

/// Reads the SPI of the ESP packet inside an IP packet (for the SA lookup, spec §3.3 step 1).
pub fn peek_spi(pkt: &[u8]) -> Result<u32, EspError> {
    let l = locate_esp(pkt)?;
    match pkt.get(l.hdr_len..l.hdr_len + 4) {
        Some(s) if l.hdr_len + 4 <= l.end => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        _ => Err(EspError::Truncated),
    }
}

/// RFC 1071 Internet checksum of an IPv4 header whose checksum field is being recomputed.
pub fn ipv4_header_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < hdr.len() {
        if i != 10 {
            sum += u32::from(u16::from_be_bytes([hdr[i], hdr[i + 1]]));
        }
        i += 2;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the outer header after ESP was inserted or removed: sets the protocol byte at
/// `nh_field` to `proto`, the length field to make the datagram `new_len` bytes long, and (IPv4)
/// the header checksum. `hdr` is the IP header plus extension headers.
pub(crate) fn fix_ip_header(
    hdr: &mut [u8],
    version: u8,
    nh_field: usize,
    proto: u8,
    new_len: usize,
) -> Result<(), EspError> {
    match version {
        4 => {
            let len = u16::try_from(new_len).map_err(|_| EspError::TooBig)?;
            hdr[nh_field] = proto;
            hdr[2..4].copy_from_slice(&len.to_be_bytes());
            let ihl = usize::from(hdr[0] & 0x0f) * 4;
            let c = ipv4_header_checksum(&hdr[..ihl]);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        }
        _ => {
            let len = new_len.checked_sub(40).ok_or(EspError::BadIpHeader)?;
            let len = u16::try_from(len).map_err(|_| EspError::TooBig)?;
            hdr[nh_field] = proto;
            hdr[4..6].copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}
