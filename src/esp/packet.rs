//! Finding ESP in an IP packet (transport mode, RFC 4303 §3.1.1): the IP headers themselves are
//! read and rewritten by [`crate::wire::ip`]; this module only refuses what ESP must not see and
//! reads the SPI.
//!
//! Only reads; never allocates, never panics on any input.

use super::error::EspError;
use crate::wire::{self, ip::Layout, protocol};

impl From<wire::Error> for EspError {
    fn from(e: wire::Error) -> Self {
        match e {
            wire::Error::Truncated => EspError::Truncated,
            wire::Error::Malformed => EspError::BadIpHeader,
            wire::Error::TooLong => EspError::TooBig,
            wire::Error::NoRoom => EspError::NoRoom,
        }
    }
}

/// The layout of a whole (unfragmented) IP datagram. Real fragments are refused: ESP is applied
/// before fragmentation and checked after reassembly (RFC 4303 §3.3.5, §3.4.1).
pub fn whole_datagram(pkt: &[u8]) -> Result<Layout, EspError> {
    let l = wire::ip::parse(pkt)?;
    if l.fragment {
        return Err(EspError::Fragment);
    }
    Ok(l)
}

/// Finds ESP in an IP packet: the layout, whose [`Layout::body`] is the ESP packet from the SPI
/// to the end of the ICV. [`EspError::NotEsp`] if the protocol is not 50.
pub fn locate_esp(pkt: &[u8]) -> Result<Layout, EspError> {
    let l = whole_datagram(pkt)?;
    if l.protocol != protocol::ESP {
        return Err(EspError::NotEsp);
    }
    Ok(l)
}

/// Reads the SPI of the ESP packet inside an IP packet (for the SA lookup, RFC 4303 §3.4.2).
pub fn peek_spi(pkt: &[u8]) -> Result<u32, EspError> {
    let l = locate_esp(pkt)?;
    match pkt.get(l.header_len..l.header_len + 4) {
        Some(s) if l.header_len + 4 <= l.end => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        _ => Err(EspError::Truncated),
    }
}

/// The SPI and sequence number of the ESP packet in the IP packet `pkt`, before any check.
pub fn peek_spi_seq(pkt: &[u8]) -> Result<(u32, u32), EspError> {
    let l = locate_esp(pkt)?;
    match pkt.get(l.header_len..l.header_len + 8) {
        Some(s) if l.header_len + 8 <= l.end => Ok((
            u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            u32::from_be_bytes([s[4], s[5], s[6], s[7]]),
        )),
        _ => Err(EspError::Truncated),
    }
}
