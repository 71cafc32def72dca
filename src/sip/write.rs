//! A tiny allocation-free writer for header text: bytes, decimal and hex numbers, and anything
//! `Display` (IP addresses), into a caller's stack buffer.

use core::fmt;

/// `n` as eight lower-case hex digits, the first in the lowest byte (as `to_le_bytes` lays them
/// out): the nibbles are spread one per byte and turned into ASCII all at once, not a digit at
/// a time.
#[inline]
pub(crate) const fn hex8(n: u32) -> u64 {
    const LOW4: u64 = 0x0f0f_0f0f_0f0f_0f0f;
    // bytes, first digit's first: [h7h6, h5h4, h3h2, h1h0, 0, 0, 0, 0]
    let mut x = n.swap_bytes() as u64;
    x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    // each 16-bit lane `hl` becomes the bytes [h, l]
    x = ((x >> 4) & 0x000f_000f_000f_000f) | ((x & 0x000f_000f_000f_000f) << 8);
    // '0' + d, and 'a' - '0' - 10 = 39 more where d > 9 (d + 6 carries into bit 4)
    let above9 = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (x & LOW4) + 0x3030_3030_3030_3030 + above9 * 39
}

/// Eight lower-case hex digits as a number (the inverse of `Writer::hex64`'s halves), checked
/// and converted all at once; `None` for any other byte, upper-case hex included.
#[inline]
pub(crate) fn unhex8(s: &[u8]) -> Option<u32> {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let w = u64::from_le_bytes(s.try_into().ok()?);
    if w & HIGH != 0 {
        return None;
    }
    // per byte b < 0x80: bit 7 of b + (0x80 - c) is set iff b >= c (no carry leaves the byte)
    let ge = |c: u64| (w + (0x80 - c) * 0x0101_0101_0101_0101) & HIGH;
    let digit = ge(b'0' as u64) & !ge(b'9' as u64 + 1);
    let letter = ge(b'a' as u64) & !ge(b'f' as u64 + 1);
    if digit | letter != HIGH {
        return None;
    }
    // '0'..'9' -> low nibble; 'a'..'f' -> low nibble (1..6) + 9
    let nib = (w & 0x0f0f_0f0f_0f0f_0f0f) + (letter >> 7) * 9;
    // bytes [n0, n1, ..., n7], n0 the most significant digit: pair them, then gather
    let y = ((nib & 0x000f_000f_000f_000f) << 4) | ((nib >> 8) & 0x000f_000f_000f_000f);
    let z = (y | (y >> 8)) & 0x0000_ffff_0000_ffff;
    let u = (z | (z >> 16)) & 0xffff_ffff;
    Some((u as u32).swap_bytes())
}

/// Writes into a fixed buffer; overflow is remembered and reported by [`Writer::finish`].
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer {
            buf,
            len: 0,
            overflow: false,
        }
    }

    pub fn put(&mut self, b: &[u8]) -> &mut Self {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflow = true,
        }
        self
    }

    pub fn dec(&mut self, mut n: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&tmp[i..])
    }

    /// Lower-case hex, fixed width of 16 digits.
    pub fn hex64(&mut self, n: u64) -> &mut Self {
        let mut tmp = [0u8; 16];
        tmp[..8].copy_from_slice(&hex8((n >> 32) as u32).to_le_bytes());
        tmp[8..].copy_from_slice(&hex8(n as u32).to_le_bytes());
        self.put(&tmp)
    }

    pub fn display(&mut self, v: &dyn fmt::Display) -> &mut Self {
        if fmt::write(self, format_args!("{v}")).is_err() {
            self.overflow = true;
        }
        self
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The written length, or `None` if anything did not fit.
    pub fn finish(&self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }

    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes());
        if self.overflow {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes() {
        let mut b = [0u8; 64];
        let mut w = Writer::new(&mut b);
        w.put(b"x=").dec(4294967295).put(b";").hex64(0xabc);
        w.display(&std::net::Ipv6Addr::LOCALHOST);
        assert_eq!(w.written(), b"x=4294967295;0000000000000abc::1");
        let mut small = [0u8; 2];
        let mut w = Writer::new(&mut small);
        w.dec(123);
        assert_eq!(w.finish(), None);
    }
}
