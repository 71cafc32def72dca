//! Every Ethernet, IP and UDP byte: typed zero-copy views over packet buffers, the parsed forms
//! we emit from, and the one Internet checksum. Used by the I/O backends, the worker, `esp`
//! (which keeps only ESP framing) and the simulators.
//!
//! Pattern (after smoltcp's `wire`): `XPacket<T: AsRef<[u8]>>` wraps a buffer; `new_checked`
//! does the one length check after which accessors never panic; `XRepr` is the parsed header
//! with `parse` and a bounds-checked `emit`. Nothing here allocates, and nothing knows of
//! sockets or of SIP.

#![forbid(unsafe_code)]

pub mod checksum;
pub mod eth;
pub mod ip;
pub mod udp;

pub use eth::{EthernetFrame, EthernetRepr, ethertype};
pub use ip::{Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, Layout, protocol};
pub use udp::{UdpPacket, UdpRepr, emit_datagram};

use core::fmt;

/// Why a header could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header or than its own length field says.
    Truncated,
    /// Fields that contradict each other or the protocol (wrong version, a length below the
    /// header's, an IPv6 jumbogram, different address families).
    Malformed,
    /// The value does not fit its length field (16 bits).
    TooLong,
    /// Not enough room in the buffer to write it.
    NoRoom,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "packet truncated",
            Error::Malformed => "malformed header",
            Error::TooLong => "length does not fit its header field",
            Error::NoRoom => "no room in the buffer",
        })
    }
}

impl std::error::Error for Error {}
