//! A tiny allocation-free writer for header text: bytes, decimal and hex numbers, and anything
//! `Display` (IP addresses), into a caller's stack buffer.

use core::fmt;

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
        for (i, t) in tmp.iter_mut().enumerate() {
            let d = (n >> (60 - 4 * i)) & 0xf;
            *t = b"0123456789abcdef"[d as usize];
        }
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
