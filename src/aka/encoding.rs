//! Allocation-free base64 (RFC 4648 §4, standard alphabet) and lowercase hex, writing into
//! caller-provided buffers.
//!
//! This file owns the two text encodings AKA needs on the wire:
//! - **base64** for the `nonce` (RFC 3310 §3.2: `base64(RAND ‖ AUTN ‖ server data)`) and the
//!   `auts` parameter (RFC 3310 §3.4);
//! - **lowercase hex** for the digest values (RFC 2617 §3.2.2: `request-digest = <"> 32LHEX <">`).
//!
//! Why not the `base64` crate: every value here is small and of fixed size (a 32-byte nonce, a
//! 14-byte AUTS), the hot decode path must not allocate, and we want one strict, documented
//! acceptance policy. That is ~100 lines and no dependency.
//!
//! Decoder policy (RFC 4648 §3.3, §3.5): characters outside the alphabet, `=` anywhere but at
//! the end, more than two `=`, a length of 1 mod 4, and non-zero pad bits are all rejected.
//! Missing trailing padding is accepted (some SIP stacks strip it), since it is unambiguous.
//! No function here panics, whatever the input.

use core::fmt;

/// Why an encode or decode failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingError {
    /// The output buffer cannot hold the result.
    BufferTooSmall,
    /// The input length is impossible for this encoding (base64: 1 mod 4; hex: odd).
    InvalidLength,
    /// A byte outside the alphabet, at this offset of the input.
    InvalidByte(usize),
    /// Misplaced or excess `=`, or non-zero bits in the final (padded) quantum.
    InvalidPadding,
}

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodingError::BufferTooSmall => f.write_str("output buffer too small"),
            EncodingError::InvalidLength => f.write_str("invalid encoded length"),
            EncodingError::InvalidByte(at) => write!(f, "invalid character at offset {at}"),
            EncodingError::InvalidPadding => f.write_str("invalid base64 padding"),
        }
    }
}

impl std::error::Error for EncodingError {}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Length of the padded base64 encoding of `n` bytes.
pub const fn base64_encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Upper bound on the decoded length of `n` base64 characters.
pub const fn base64_decoded_max_len(n: usize) -> usize {
    n.div_ceil(4) * 3
}

fn b64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Encodes `input` as padded base64 into `out` and returns the text.
pub fn base64_encode<'a>(input: &[u8], out: &'a mut [u8]) -> Result<&'a str, EncodingError> {
    let len = base64_encoded_len(input.len());
    let out = out.get_mut(..len).ok_or(EncodingError::BufferTooSmall)?;
    for (chunk, dst) in input.chunks(3).zip(out.chunks_mut(4)) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = u32::from(b0) << 16 | u32::from(b1) << 8 | u32::from(b2);
        let sym = |shift: u32| B64[((n >> shift) & 63) as usize];
        let enc = [
            sym(18),
            sym(12),
            if chunk.len() > 1 { sym(6) } else { b'=' },
            if chunk.len() > 2 { sym(0) } else { b'=' },
        ];
        dst.copy_from_slice(&enc);
    }
    // Only ASCII from the table and '=' were written.
    core::str::from_utf8(out).map_err(|_| EncodingError::InvalidByte(0))
}

/// Decodes base64 `input` (padded or not) into `out`; returns the decoded prefix of `out`.
pub fn base64_decode<'a>(input: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], EncodingError> {
    // Strip up to two trailing '=' and check that the padding is consistent with the length.
    let pad = input.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return Err(EncodingError::InvalidPadding);
    }
    let body = input.get(..input.len() - pad).unwrap_or(&[]);
    if pad > 0 && !input.len().is_multiple_of(4) {
        return Err(EncodingError::InvalidPadding);
    }
    let rem = body.len() % 4;
    if rem == 1 {
        return Err(EncodingError::InvalidLength);
    }
    if pad > 0 && pad + rem != 4 {
        return Err(EncodingError::InvalidPadding);
    }
    let out_len = body.len() / 4 * 3 + rem.saturating_sub(1);
    let out = out
        .get_mut(..out_len)
        .ok_or(EncodingError::BufferTooSmall)?;

    let mut o = 0usize;
    for (ci, chunk) in body.chunks(4).enumerate() {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match b64_value(c) {
                Some(v) => v,
                None if c == b'=' => return Err(EncodingError::InvalidPadding),
                None => return Err(EncodingError::InvalidByte(ci * 4 + i)),
            };
            n = n << 6 | u32::from(v);
        }
        let bytes = match chunk.len() {
            4 => 3,
            3 => {
                // 18 bits carry 2 bytes; the low 2 bits must be zero (RFC 4648 §3.5).
                if n & 0x3 != 0 {
                    return Err(EncodingError::InvalidPadding);
                }
                n <<= 6;
                2
            }
            _ => {
                // 2 characters: 12 bits carry 1 byte; the low 4 bits must be zero.
                if n & 0xf != 0 {
                    return Err(EncodingError::InvalidPadding);
                }
                n <<= 12;
                1
            }
        };
        let be = n.to_be_bytes();
        for &b in be.get(1..1 + bytes).unwrap_or(&[]) {
            if let Some(slot) = out.get_mut(o) {
                *slot = b;
                o += 1;
            }
        }
    }
    Ok(out)
}

/// Writes `input` as lowercase hex into `out` and returns the text.
pub fn hex_encode<'a>(input: &[u8], out: &'a mut [u8]) -> Result<&'a str, EncodingError> {
    let out = out
        .get_mut(..input.len() * 2)
        .ok_or(EncodingError::BufferTooSmall)?;
    for (b, dst) in input.iter().zip(out.chunks_exact_mut(2)) {
        dst[0] = HEX[usize::from(b >> 4)];
        dst[1] = HEX[usize::from(b & 0x0f)];
    }
    core::str::from_utf8(out).map_err(|_| EncodingError::InvalidByte(0))
}

/// Lowercase hex of a fixed 16-byte value (an MD5 digest) into a fixed 32-byte array.
pub(crate) fn hex16(input: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (b, dst) in input.iter().zip(out.chunks_exact_mut(2)) {
        dst[0] = HEX[usize::from(b >> 4)];
        dst[1] = HEX[usize::from(b & 0x0f)];
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case) into `out`; returns the decoded prefix of `out`.
pub fn hex_decode<'a>(input: &[u8], out: &'a mut [u8]) -> Result<&'a [u8], EncodingError> {
    if !input.len().is_multiple_of(2) {
        return Err(EncodingError::InvalidLength);
    }
    let out = out
        .get_mut(..input.len() / 2)
        .ok_or(EncodingError::BufferTooSmall)?;
    for (i, (pair, dst)) in input.chunks_exact(2).zip(out.iter_mut()).enumerate() {
        let hi = hex_value(pair[0]).ok_or(EncodingError::InvalidByte(2 * i))?;
        let lo = hex_value(pair[1]).ok_or(EncodingError::InvalidByte(2 * i + 1))?;
        *dst = hi << 4 | lo;
    }
    Ok(out)
}

/// Decodes exactly `N` bytes of hex (e.g. a 32-character K or OPc from configuration).
pub fn hex_array<const N: usize>(input: &str) -> Result<[u8; N], EncodingError> {
    if input.len() != 2 * N {
        return Err(EncodingError::InvalidLength);
    }
    let mut out = [0u8; N];
    hex_decode(input.as_bytes(), &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (raw, enc) in cases {
            let mut buf = [0u8; 16];
            assert_eq!(base64_encode(raw, &mut buf).unwrap(), enc);
            let mut dec = [0u8; 16];
            assert_eq!(base64_decode(enc.as_bytes(), &mut dec).unwrap(), raw);
            // Unpadded is accepted too.
            let unpadded = enc.trim_end_matches('=');
            assert_eq!(base64_decode(unpadded.as_bytes(), &mut dec).unwrap(), raw);
        }
    }

    #[test]
    fn base64_rejects() {
        let mut out = [0u8; 16];
        assert_eq!(
            base64_decode(b"Zg=", &mut out),
            Err(EncodingError::InvalidPadding)
        );
        assert_eq!(
            base64_decode(b"Z===", &mut out),
            Err(EncodingError::InvalidPadding)
        );
        assert_eq!(
            base64_decode(b"Zh==", &mut out),
            Err(EncodingError::InvalidPadding)
        );
        assert_eq!(
            base64_decode(b"Z=g=", &mut out),
            Err(EncodingError::InvalidPadding)
        );
        assert_eq!(
            base64_decode(b"Zm9", &mut out[..1]),
            Err(EncodingError::BufferTooSmall)
        );
        assert_eq!(
            base64_decode(b"Zm9vY", &mut out),
            Err(EncodingError::InvalidLength)
        );
        assert_eq!(
            base64_decode(b"Zm 9", &mut out),
            Err(EncodingError::InvalidByte(2))
        );
        let mut small = [0u8; 3];
        assert_eq!(
            base64_encode(b"foob", &mut small),
            Err(EncodingError::BufferTooSmall)
        );
    }

    #[test]
    fn hex_roundtrip() {
        let mut buf = [0u8; 8];
        assert_eq!(hex_encode(&[0xde, 0xad, 0x0f], &mut buf).unwrap(), "dead0f");
        let mut out = [0u8; 3];
        assert_eq!(
            hex_decode(b"DEad0F", &mut out).unwrap(),
            &[0xde, 0xad, 0x0f]
        );
        assert_eq!(
            hex_decode(b"abc", &mut out),
            Err(EncodingError::InvalidLength)
        );
        assert_eq!(
            hex_decode(b"zz", &mut out),
            Err(EncodingError::InvalidByte(0))
        );
        assert_eq!(hex_array::<2>("b9b9").unwrap(), [0xb9, 0xb9]);
        assert_eq!(hex_array::<2>("b9b"), Err(EncodingError::InvalidLength));
    }
}
