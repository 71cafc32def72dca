//! The Internet checksum (RFC 1071), the one implementation every header in `wire` uses.
//!
//! Sums are kept unfolded in a `u64` so that pieces (a pseudo-header, a header, a payload) can
//! be added in any order and folded once (RFC 1071 §2(A), (C)).

use core::net::IpAddr;

/// One's-complement sum of `data` added to `acc` (not folded, not inverted): the 16-bit words
/// are big-endian pairs from the start of `data`.
///
/// RFC 1071 §2(B): the sum is byte-order independent, so whole 8-byte words are added in native
/// order into a 128-bit accumulator (no carry handling in the loop), folded to 16 bits and
/// swapped back once: a quarter of the additions of a 16-bit loop, on every packet we forward.
#[inline]
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut wide: u128 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        wide += u128::from(u64::from_ne_bytes(w));
    }
    acc += u64::from(u16::from_be(fold_wide(wide)));
    // (8-byte chunks keep the remainder at an even offset: its pairs are still word-aligned)
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// The 128-bit sum of native-order words folded to 16 bits (still in native byte order) in a
/// fixed number of steps: 128 → 64 → 32 → 16 bits, each with its end-around carry. Only an
/// all-zero sum folds to 0, as with a 16-bit fold loop, so the result is the same value.
#[inline(always)]
fn fold_wide(wide: u128) -> u16 {
    let (lo, carry) = (wide as u64).overflowing_add((wide >> 64) as u64);
    // no overflow: the sum of two u64 is at most 2^65 - 2, so lo + carry fits
    let v = lo + u64::from(carry);
    let v = (v & 0xffff_ffff) + (v >> 32);
    let v = (v & 0xffff) + (v >> 16);
    let v = (v & 0xffff) + (v >> 16);
    let v = (v & 0xffff) + (v >> 16);
    v as u16
}

/// Folds an accumulated sum to 16 bits (end-around carry, not inverted). A packet whose
/// checksum verifies folds to 0xffff.
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The value for a checksum field: the folded sum, inverted.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The sum of the pseudo-header an upper-layer checksum covers: addresses, protocol and the
/// upper-layer length (RFC 768; RFC 8200 §8.1). `None` when the families differ.
#[inline]
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> Option<u64> {
    let acc = u64::from(protocol) + len as u64;
    match (src, dst) {
        // an IPv4 address is two big-endian 16-bit words: its halves as a number
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let (s, d) = (u32::from(s), u32::from(d));
            Some(
                acc + u64::from(s >> 16)
                    + u64::from(s & 0xffff)
                    + u64::from(d >> 16)
                    + u64::from(d & 0xffff),
            )
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(sum(&d.octets(), sum(&s.octets(), acc))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time sum equals the plain RFC 1071 16-bit loop, at every length and start.
    #[test]
    fn sum_matches_the_plain_loop() {
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
                        fold(sum(s, 77)),
                        fold(plain(s, 77)),
                        "start {start} len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (before folding: 2ddf0).
        let s = sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7], 0);
        assert_eq!(fold(s), 0xddf2);
        assert_eq!(finish(s), !0xddf2);
    }

    #[test]
    fn pseudo_header_needs_one_family() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert!(pseudo_header(v4, v6, 17, 8).is_none());
        // 0a00 0001 + 0a00 0001 + 0011 + 0008
        assert_eq!(
            pseudo_header(v4, v4, 17, 8).map(fold),
            Some(0x0a00 * 2 + 2 + 0x11 + 8)
        );
    }
}
