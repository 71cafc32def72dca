//! Our Via branches: what a response needs to find its way back, authenticated so that nothing
//! a UE writes can steer it (RFC 3261 §18.1.2: a response whose top Via is not ours is
//! discarded).
//!
//! A branch is the RFC 3261 §8.1.1.7 magic cookie followed by 48 lower-case hex digits: the
//! lane the response goes back by (the datagram way, or the UE's TCP connection and the worker
//! holding it), the inbound SPI the request arrived over (0: in the clear), the port the
//! response goes to, the
//! RFC 3261 §16.11 stateless hash of the request (so a retransmission gets the same branch), and
//! a 64-bit SipHash-2-4 tag (a PRF made for short inputs: one tag is ~60 bytes) over all of it
//! plus the direction and the addresses the response must go between. The key is random per
//! process, so a branch can be checked by any worker and forged by nobody outside (a guess
//! succeeds with probability 2^-64).
//!
//! Owns: the branch format and its MAC. Never allocates.

use core::net::{IpAddr, Ipv6Addr};

use core::hash::Hasher;

use siphasher::sip::SipHasher24;
use subtle::ConstantTimeEq;

use super::write::Writer;

/// The RFC 3261 §8.1.1.7 magic cookie.
pub const COOKIE: &[u8] = b"z9hG4bK";
/// Hex digits after the cookie.
pub const TOKEN_LEN: usize = 8 + 4 + 16 + 16;

/// Which of our Vias a branch belongs to (part of the MAC input, so one cannot pass for the
/// other).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    /// Our core-side Via on a request from a UE toward the core.
    ToCore = 1,
    /// Our UE-side Via on a request from the core toward a UE.
    ToUe = 2,
}

/// [`Branch::lane`] of a request that came on a UE's TCP connection: its response goes back on
/// that connection (RFC 3261 §18.2.2), which the worker in the low bits holds.
pub const LANE_STREAM: u16 = 0x8000;

/// [`Branch::lane`] of a request that came from the core on one of our core-side TCP
/// connections: the response goes back on that connection, whose id is the branch's `spi`
/// (RFC 3261 §18.2.2).
pub const LANE_CORE_STREAM: u16 = 0x4000;

/// The fields of one of our branches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    /// How the response goes back: 0 as a datagram; [`LANE_STREAM`] | worker on the UE's
    /// connection that the request came on; [`LANE_CORE_STREAM`] on the core's connection
    /// named in `spi`.
    pub lane: u16,
    /// The inbound SPI the request came over; 0 for a request that came in the clear; the core
    /// connection with [`LANE_CORE_STREAM`].
    pub spi: u32,
    /// The port the response goes to.
    pub port: u16,
    /// The stateless hash of the request (RFC 3261 §16.11).
    pub hash: u64,
    pub mac: u64,
}

impl Branch {
    /// Write `z9hG4bK` and the token.
    pub fn write(&self, w: &mut Writer<'_>) {
        w.put(COOKIE)
            .hex64(u64::from(self.lane) << 48 | (u64::from(self.spi) << 16) | u64::from(self.port))
            .hex64(self.hash)
            .hex64(self.mac);
    }

    /// A branch value in our format (not yet checked: see [`BranchKey::verify`]).
    pub fn parse(branch: &[u8]) -> Option<Branch> {
        let hex = branch.strip_prefix(COOKIE)?;
        if hex.len() != 48 {
            return None;
        }
        let field = |r: core::ops::Range<usize>| -> Option<u64> {
            let hi = crate::sip::write::unhex8(hex.get(r.start..r.start + 8)?)?;
            let lo = crate::sip::write::unhex8(hex.get(r.start + 8..r.end)?)?;
            Some(u64::from(hi) << 32 | u64::from(lo))
        };
        let head = field(0..16)?;
        Some(Branch {
            lane: (head >> 48) as u16,
            spi: (head >> 16) as u32,
            port: head as u16,
            hash: field(16..32)?,
            mac: field(32..48)?,
        })
    }
}

/// The per-process branch key (SipHash-2-4's 128-bit key).
#[derive(Clone)]
pub struct BranchKey([u8; 16]);

impl core::fmt::Debug for BranchKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BranchKey(..)")
    }
}

fn v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

impl BranchKey {
    /// The key is the first 16 bytes of `key`.
    pub fn new(key: &[u8; 32]) -> BranchKey {
        let mut k = [0u8; 16];
        k.copy_from_slice(&key[..16]);
        BranchKey(k)
    }

    /// A key from the operating system's random source.
    pub fn random() -> BranchKey {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS random source");
        BranchKey::new(&k)
    }

    /// The tag over the branch fields, the direction, `peer` (where the response goes) and `ue`
    /// (the UE the transaction belongs to; unspecified when none).
    fn tag(&self, dir: Dir, b: &Branch, peer: IpAddr, ue: IpAddr) -> u64 {
        let Branch {
            lane,
            spi,
            port,
            hash,
            ..
        } = *b;
        // one contiguous input: SipHash over the byte string, as the known answers state it
        let mut m = [0u8; 49];
        m[0] = dir as u8;
        m[1..3].copy_from_slice(&lane.to_be_bytes());
        m[3..7].copy_from_slice(&spi.to_be_bytes());
        m[7..9].copy_from_slice(&port.to_be_bytes());
        m[9..17].copy_from_slice(&hash.to_be_bytes());
        m[17..33].copy_from_slice(&v6(peer));
        m[33..49].copy_from_slice(&v6(ue));
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(&m);
        h.finish()
    }

    /// A branch for a request whose response must go to `peer`:`port` (over the SA set of
    /// inbound `spi`, when not 0; on the UE's connection when `lane` says so), within the
    /// transaction of `ue`.
    #[allow(clippy::too_many_arguments)]
    pub fn seal(
        &self,
        dir: Dir,
        lane: u16,
        spi: u32,
        port: u16,
        hash: u64,
        peer: IpAddr,
        ue: IpAddr,
    ) -> Branch {
        let mut b = Branch {
            lane,
            spi,
            port,
            hash,
            mac: 0,
        };
        b.mac = self.tag(dir, &b, peer, ue);
        b
    }

    /// Whether `b` is a branch we sealed for `dir`, `peer` and `ue` (constant time).
    pub fn verify(&self, b: &Branch, dir: Dir, peer: IpAddr, ue: IpAddr) -> bool {
        let t = self.tag(dir, b, peer, ue);
        t.to_be_bytes().ct_eq(&b.mac.to_be_bytes()).into()
    }
}

/// `ue` for a transaction with no UE side (unspecified address).
pub const NO_UE: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer of the primitive: SipHash-2-4, the paper's vector (Aumasson, Bernstein,
    /// "SipHash: a fast short-input PRF", 2012, Appendix A): key 00..0f, message 00..0e.
    #[test]
    fn siphash_2_4_known_answer() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        let mut h = SipHasher24::new_with_key(&key);
        h.write(&msg);
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    /// Known answer: the tag is SipHash-2-4 keyed with the key's first 16 bytes over dir ‖
    /// lane ‖ SPI ‖ port ‖ hash ‖ peer ‖ UE (big-endian fields, addresses as 16 bytes, IPv4
    /// mapped), computed independently with a Python SipHash written from the paper (checked
    /// against its vector above).
    #[test]
    fn tag_known_answer() {
        let k = BranchKey::new(&[7; 32]);
        let ue: IpAddr = "10.46.0.6".parse().unwrap();
        let b = k.seal(Dir::ToCore, 0, 0x1234, 7005, 0xdead_beef, ue, ue);
        assert_eq!(b.mac, 0xc338_1280_2d63_0153);
        let b = k.seal(
            Dir::ToCore,
            LANE_STREAM | 3,
            0x1234,
            7005,
            0xdead_beef,
            ue,
            ue,
        );
        assert_eq!(b.mac, 0x93b8_1cd5_7b84_7cf7);
    }

    #[test]
    fn round_trip_and_tamper() {
        let k = BranchKey::new(&[7; 32]);
        let ue: IpAddr = "10.46.0.6".parse().unwrap();
        let b = k.seal(
            Dir::ToCore,
            LANE_STREAM | 1,
            0x1234,
            7005,
            0xdead_beef,
            ue,
            ue,
        );
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        b.write(&mut w);
        let n = w.finish().unwrap();
        assert_eq!(n, COOKIE.len() + 48);
        let p = Branch::parse(&buf[..n]).unwrap();
        assert_eq!(p, b);
        assert!(k.verify(&p, Dir::ToCore, ue, ue));
        assert!(!k.verify(&p, Dir::ToUe, ue, ue));
        let other: IpAddr = "10.46.0.7".parse().unwrap();
        assert!(!k.verify(&p, Dir::ToCore, other, ue));
        for f in [
            Branch { lane: 0, ..p },
            Branch { lane: 1, ..p },
            Branch { spi: 1, ..p },
            Branch { port: 7006, ..p },
            Branch { hash: 1, ..p },
            Branch {
                mac: p.mac ^ 1,
                ..p
            },
        ] {
            assert!(!k.verify(&f, Dir::ToCore, ue, ue));
        }
        assert!(!BranchKey::new(&[8; 32]).verify(&p, Dir::ToCore, ue, ue));
        assert_eq!(Branch::parse(b"z9hG4bK0123456789abcdef"), None);
        assert_eq!(Branch::parse(&buf[..n - 1]), None);
    }

    /// The word-at-a-time hex reader agrees with a digit-at-a-time one on every byte value at
    /// every position, and with the writer on numbers across the range.
    #[test]
    fn hex_digits_read_and_write_as_digit_by_digit() {
        let scalar = |s: &[u8]| -> Option<u32> {
            s.iter().try_fold(0u32, |n, &c| {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => return None,
                };
                Some(n << 4 | u32::from(d))
            })
        };
        for base in [*b"0123abcd", *b"ffffffff", *b"00000000", *b"9a9a9a9a"] {
            for pos in 0..8 {
                for c in 0..=255u8 {
                    let mut s = base;
                    s[pos] = c;
                    assert_eq!(crate::sip::write::unhex8(&s), scalar(&s), "{s:?}");
                }
            }
        }
        let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..100_000u64 {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = if i < 64 { 1u64 << i } else { n };
            let mut buf = [0u8; 16];
            Writer::new(&mut buf).hex64(v);
            assert_eq!(buf, *format!("{v:016x}").as_bytes());
            assert_eq!(crate::sip::write::unhex8(&buf[..8]), Some((v >> 32) as u32));
            assert_eq!(crate::sip::write::unhex8(&buf[8..]), Some(v as u32));
        }
        assert_eq!(crate::sip::write::unhex8(b"0123456"), None);
    }
}
