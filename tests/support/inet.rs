//! The Internet checksum (RFC 1071) for the packets the tests build and check, written apart
//! from the crate's own so that a bug there is not repeated here.

/// Add `data` to a running one's-complement sum, as 16-bit big-endian words (an odd last byte
/// padded with zero).
pub fn csum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        sum += u32::from(*b) << 8;
    }
    sum
}

/// Fold the carries back in and complement: the checksum field's value.
pub fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Internet checksum over `data` (folded and complemented): 0 when verifying a correct one.
pub fn csum(data: &[u8]) -> u16 {
    csum_fold(csum_add(0, data))
}
