//! `EspError`: every way ESP processing can refuse a packet or an SA. Each case is distinct so that
//! callers (and counters) can tell them apart; none carries key material.

use core::fmt;

/// Why an ESP operation failed. Inbound errors mean "drop the packet"; the SA is unchanged
/// (in particular the replay window has not moved, except for [`EspError::Dummy`], whose packet
/// was authentic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EspError {
    /// The packet (or the IP header's length fields) is shorter than the ESP layout needs.
    Truncated,
    /// The ciphertext is not a whole number of cipher blocks (RFC 4303 §2.4; RFC 3602 §2).
    Misaligned,
    /// The ICV did not verify (RFC 4303 §3.4.4).
    IcvMismatch,
    /// The sequence number was already received (RFC 4303 §3.4.3).
    Replayed,
    /// The sequence number is left of the replay window, or 0 (RFC 4303 §3.4.3).
    TooOld,
    /// Pad Length exceeds the payload, or the pad bytes are not 1, 2, 3, … (RFC 4303 §2.4).
    BadPadding,
    /// An algorithm token that this module does not implement.
    UnknownAlgorithm,
    /// Known tokens in a combination that TS 33.203 Annex I does not define (e.g. aes-gcm with hmac).
    UnsupportedCombination,
    /// A key of the wrong length was given.
    BadKeyLength,
    /// A replay window outside 64..=1024.
    BadWindow,
    /// SPI 0 (RFC 4303 §2.1: reserved, never sent).
    BadSpi,
    /// Nothing to protect outbound, or nothing but padding inbound with a real next header.
    EmptyPayload,
    /// Next Header 59: an authentic dummy packet (RFC 4303 §2.6); drop it silently.
    Dummy,
    /// The 32-bit sequence number space is spent; the SA must be replaced (RFC 4303 §3.3.3).
    SeqExhausted,
    /// The sequence number would pass the SA's ceiling: the highest number the persisted state
    /// covers ([`crate::esp::Sa::set_seq_ceiling`]). Nothing was sent with it; the packet is
    /// dropped until the registration thread has persisted a higher ceiling, so a restart never
    /// sends a number twice.
    SeqCeiling,
    /// The IP packet does not carry ESP (protocol / next header is not 50).
    NotEsp,
    /// The SPI in the packet is not this SA's.
    SpiMismatch,
    /// Not an IPv4/IPv6 header, or inconsistent header fields.
    BadIpHeader,
    /// An IP fragment: ESP is applied before fragmentation and checked after reassembly
    /// (RFC 4303 §3.3.5, §3.4.1).
    Fragment,
    /// Not enough headroom (before) or tailroom (after) the IP packet in the frame buffer.
    NoRoom,
    /// The protected packet would exceed the 16-bit IP length field.
    TooBig,
    /// The crypto library reported a failure that is not an ICV mismatch.
    Crypto,
}

impl fmt::Display for EspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            EspError::Truncated => "ESP packet truncated",
            EspError::Misaligned => "ESP ciphertext not a multiple of the block size",
            EspError::IcvMismatch => "ESP ICV mismatch",
            EspError::Replayed => "ESP sequence number replayed",
            EspError::TooOld => "ESP sequence number left of the replay window",
            EspError::BadPadding => "ESP padding invalid",
            EspError::UnknownAlgorithm => "unknown ESP algorithm",
            EspError::UnsupportedCombination => "unsupported ESP algorithm combination",
            EspError::BadKeyLength => "ESP key of wrong length",
            EspError::BadWindow => "replay window must be 64..=1024",
            EspError::BadSpi => "SPI 0 is reserved",
            EspError::EmptyPayload => "ESP payload empty",
            EspError::Dummy => "ESP dummy packet (next header 59)",
            EspError::SeqExhausted => "ESP sequence numbers exhausted: replace the SA",
            EspError::SeqCeiling => "ESP sequence number past the persisted ceiling",
            EspError::NotEsp => "IP packet is not ESP",
            EspError::SpiMismatch => "SPI does not belong to this SA",
            EspError::BadIpHeader => "malformed IP header",
            EspError::Fragment => "IP fragment",
            EspError::NoRoom => "not enough headroom or tailroom in the frame",
            EspError::TooBig => "protected packet exceeds the IP length field",
            EspError::Crypto => "crypto library failure",
        };
        f.write_str(s)
    }
}

impl std::error::Error for EspError {}
