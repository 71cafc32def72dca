//! Flow tokens: what our Record-Route entries carry so that the workers can route the requests
//! inside a dialog, and refuse one sent over the wrong UE's SAs, with no per-dialog state and
//! nothing a UE can forge.
//!
//! A dialog's route set is fixed when it is created (RFC 3261 §12.1.1, §12.1.2) and every
//! in-dialog request carries it back to us as Route entries (§12.2.1.1). So the entries we
//! record-route (`rules::dialog`) are the place to keep what the fast path needs later: the
//! token in the `ftok` URI parameter of each of our two entries (RFC 3261 §12.1.1, §12.1.2:
//! the route set is the Record-Route's URIs with all their URI parameters; header parameters
//! do not come back).
//!
//! The fields, and why these:
//! - the **binding** (`u64`), the registrar's id of the UE's registration. It stays the same
//!   across re-registrations while the SA set, its SPIs and ports change under a call that
//!   outlives them (a new AKA run makes a new set, TS 33.203 §7.4 [spec-m]; our registrar also
//!   draws new ports), and the registrar never reuses an id within a process, whose lifetime is
//!   the key's. The caller accepts a request inside the dialog from the UE only over an SA set
//!   of this binding ([`Flow::is_of`]): one over another UE's SAs is refused;
//! - the **UE's address** (IPv4 or IPv6), what the registration's SA sets are bound to and
//!   what a request from the core toward the UE is sent to (over the UE's SA), so a request
//!   from the core for a dialog is sent nowhere else; it is as stable as the binding (a UE
//!   whose address changes registers anew);
//! - the **role**: which of our two entries carries it (the UE-facing or the core-facing one,
//!   RFC 5658 double Record-Routing), so one cannot pass for the other and a Route set in the
//!   wrong order for the side it came from is refused;
//! - a **tag**: SipHash-2-4 (64 bits; a PRF made for short inputs) under a per-process random key,
//!   over a domain label, the role, the binding, the address family and the address (16 bytes,
//!   IPv4 mapped), compared in constant time. Ports and SPIs are not in it (they change under
//!   a call), nor is the dialog (a UE's token for one of its dialogs gains it nothing in
//!   another of its own).
//!
//! The binding is in the clear (whoever sees the Record-Route learns a registration counter;
//! nothing more), so a worker compares it with the SA entry's without a lookup.
//!
//! Text: lower-case hex, fixed width: role digit (`1` UE-facing, `2` core-facing), family digit
//! (`4` or `6`), binding (16 digits), address (8 or 32 digits), tag (16 digits): 42 characters
//! for IPv4, 66 for IPv6. Anything else (upper case, another length, another digit) does not
//! parse.
//!
//! Owns: the token format and its MAC. Never allocates; its own key type, so a branch key
//! ([`crate::sip::branch`]) can never verify a token or the reverse.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use core::hash::Hasher;

use siphasher::sip::SipHasher24;
use subtle::ConstantTimeEq;

use super::write::Writer;

/// The URI parameter our Record-Route entries carry the token in.
pub const PARAM: &[u8] = b"ftok";

/// The longest token text (IPv6).
pub const MAX_LEN: usize = 2 + 16 + 32 + 16;
/// The token text for an IPv4 UE.
pub const V4_LEN: usize = 2 + 16 + 8 + 16;

/// Domain separation: nothing else this process MACs starts with these bytes.
const LABEL: &[u8] = b"pcscf flow token v1\0";

/// Which of our two Record-Route entries a token is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// The entry naming our UE-side address and protected server port.
    UeSide = 1,
    /// The entry naming our core-side address.
    CoreSide = 2,
}

/// What a dialog's tokens bind: the UE's registration and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The registrar's binding id (stable across re-registrations).
    pub binding: u64,
    /// The UE's address.
    pub ue: IpAddr,
}

impl Flow {
    /// Whether this flow is the one of an SA set with `binding` for `ue` (the check of a
    /// request inside a dialog against the SA set it came over).
    pub fn is_of(&self, binding: u64, ue: IpAddr) -> bool {
        self.binding == binding && self.ue == ue
    }
}

/// One token: its role, its flow and its tag (not yet checked: see [`FlowKey::verify`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowToken {
    pub role: Role,
    pub flow: Flow,
    pub tag: u64,
}

fn put_hex(w: &mut Writer<'_>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        w.put(&[HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
    }
}

/// Lower-case hex digits only, into `out` (two digits a byte); `None` otherwise.
fn get_hex(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != 2 * out.len() {
        return None;
    }
    // eight digits (four bytes) at a time: every length here is a multiple of four bytes
    if out.len().is_multiple_of(4) {
        for (o, t) in out.chunks_exact_mut(4).zip(text.chunks_exact(8)) {
            o.copy_from_slice(&crate::sip::write::unhex8(t)?.to_be_bytes());
        }
        return Some(());
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *o = nib(pair[0])? << 4 | nib(pair[1])?;
    }
    Some(())
}

impl FlowToken {
    /// Write the token text (no parameter name).
    pub fn write(&self, w: &mut Writer<'_>) {
        w.put(&[b'0' + self.role as u8]);
        match self.flow.ue {
            IpAddr::V4(a) => {
                w.put(b"4").hex64(self.flow.binding);
                put_hex(w, &a.octets());
            }
            IpAddr::V6(a) => {
                w.put(b"6").hex64(self.flow.binding);
                put_hex(w, &a.octets());
            }
        }
        w.hex64(self.tag);
    }

    /// A token text in our format (exactly; not yet checked: see [`FlowKey::verify`]).
    pub fn parse(text: &[u8]) -> Option<FlowToken> {
        if text.len() != V4_LEN && text.len() != MAX_LEN {
            return None;
        }
        let role = match text[0] {
            b'1' => Role::UeSide,
            b'2' => Role::CoreSide,
            _ => return None,
        };
        let addr_len = match (text[1], text.len()) {
            (b'4', V4_LEN) => 8,
            (b'6', MAX_LEN) => 32,
            _ => return None,
        };
        let mut binding = [0u8; 8];
        get_hex(&text[2..18], &mut binding)?;
        let addr_text = &text[18..18 + addr_len];
        let ue = if addr_len == 8 {
            let mut a = [0u8; 4];
            get_hex(addr_text, &mut a)?;
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            let mut a = [0u8; 16];
            get_hex(addr_text, &mut a)?;
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let mut tag = [0u8; 8];
        get_hex(&text[18 + addr_len..], &mut tag)?;
        Some(FlowToken {
            role,
            flow: Flow {
                binding: u64::from_be_bytes(binding),
                ue,
            },
            tag: u64::from_be_bytes(tag),
        })
    }
}

/// The per-process flow-token key (SipHash-2-4's 128-bit key, as the branch's: a PRF made for
/// short inputs).
#[derive(Clone)]
pub struct FlowKey([u8; 16]);

impl core::fmt::Debug for FlowKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("FlowKey(..)")
    }
}

impl FlowKey {
    /// The key is the first 16 bytes of `key`.
    pub fn new(key: &[u8; 32]) -> FlowKey {
        let mut k = [0u8; 16];
        k.copy_from_slice(&key[..16]);
        FlowKey(k)
    }

    /// A key from the operating system's random source.
    pub fn random() -> FlowKey {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).expect("the OS random source");
        FlowKey::new(&k)
    }

    fn tag(&self, role: Role, flow: &Flow) -> u64 {
        let (family, addr) = match flow.ue {
            IpAddr::V4(a) => (4u8, a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => (6u8, a.octets()),
        };
        // one contiguous input: SipHash over the byte string, as the known answers state it
        let mut m = [0u8; LABEL.len() + 26];
        let l = LABEL.len();
        m[..l].copy_from_slice(LABEL);
        m[l] = role as u8;
        m[l + 1..l + 9].copy_from_slice(&flow.binding.to_be_bytes());
        m[l + 9] = family;
        m[l + 10..].copy_from_slice(&addr);
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write(&m);
        h.finish()
    }

    /// The token for our `role` entry of a dialog of `flow`.
    pub fn seal(&self, role: Role, flow: Flow) -> FlowToken {
        FlowToken {
            role,
            flow,
            tag: self.tag(role, &flow),
        }
    }

    /// Whether `t` is a token we sealed (constant-time comparison of the tag).
    pub fn verify(&self, t: &FlowToken) -> bool {
        let want = self.tag(t.role, &t.flow);
        want.to_be_bytes().ct_eq(&t.tag.to_be_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> FlowKey {
        FlowKey::new(&[9; 32])
    }

    fn flow4() -> Flow {
        Flow {
            binding: 0x1234,
            ue: "10.46.0.6".parse().unwrap(),
        }
    }

    fn flow6() -> Flow {
        Flow {
            binding: u64::MAX,
            ue: "2001:db8:46::6".parse().unwrap(),
        }
    }

    fn text(t: &FlowToken) -> ([u8; 80], usize) {
        let mut buf = [0u8; 80];
        let mut w = Writer::new(&mut buf);
        t.write(&mut w);
        let n = w.finish().unwrap();
        (buf, n)
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let k = key();
        for (f, len) in [(flow4(), V4_LEN), (flow6(), MAX_LEN)] {
            for role in [Role::UeSide, Role::CoreSide] {
                let t = k.seal(role, f);
                let (buf, n) = text(&t);
                assert_eq!(n, len);
                let s = &buf[..n];
                assert!(s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
                let p = FlowToken::parse(s).unwrap();
                assert_eq!(p, t);
                assert!(k.verify(&p));
            }
        }
        let (buf, n) = text(&k.seal(Role::UeSide, flow4()));
        assert_eq!(&buf[..18], b"140000000000001234");
        assert_eq!(&buf[18..26], b"0a2e0006");
        assert_eq!(n, 42);
    }

    /// Known answers: the tag is SipHash-2-4 keyed with the key's first 16 bytes over label ‖
    /// role ‖ binding ‖ family ‖ address (16 bytes, IPv4 mapped), computed independently with a
    /// Python SipHash written from the paper (its vector: `sip::branch`'s test):
    /// `siphash24(b"\x09"*16, b"pcscf flow token v1\x00" + b"\x01" +
    /// (0x1234).to_bytes(8, "big") + b"\x04" + bytes(10) + b"\xff\xff" + bytes([10, 46, 0, 6]))`,
    /// and the same for the IPv6 core-facing one.
    #[test]
    fn tag_known_answers() {
        assert_eq!(key().seal(Role::UeSide, flow4()).tag, 0x5db2_15dc_aa3f_0c78);
        assert_eq!(
            key().seal(Role::CoreSide, flow6()).tag,
            0xe98a_72c6_a63b_0b7c
        );
    }

    #[test]
    fn hostile_text_does_not_parse() {
        let k = key();
        for f in [flow4(), flow6()] {
            let (buf, n) = text(&k.seal(Role::CoreSide, f));
            let good = &buf[..n];
            // truncated, at every length
            for l in 0..n {
                assert_eq!(FlowToken::parse(&good[..l]), None, "len {l}");
            }
            // extra characters
            let mut long = good.to_vec();
            long.push(b'0');
            assert_eq!(FlowToken::parse(&long), None);
            long.pop();
            long.extend_from_slice(b";lr");
            assert_eq!(FlowToken::parse(&long), None);
            // wrong case, or any non-hex digit, anywhere
            for i in 0..n {
                for c in [b'A', b'F', b'g', b'x', b' ', b'-', 0, 0xff] {
                    let mut t = good.to_vec();
                    if t[i] == c {
                        continue;
                    }
                    t[i] = c;
                    assert_eq!(FlowToken::parse(&t), None, "{i} {c}");
                }
            }
            // the role and family digits: only the ones we write
            for (i, c) in [(0, b'0'), (0, b'3'), (1, b'5'), (1, b'0')] {
                let mut t = good.to_vec();
                t[i] = c;
                assert_eq!(FlowToken::parse(&t), None);
            }
        }
        // an IPv4 token relabelled IPv6 (and the reverse) has the wrong length
        let (buf, n) = text(&k.seal(Role::UeSide, flow4()));
        let mut t = buf[..n].to_vec();
        t[1] = b'6';
        assert_eq!(FlowToken::parse(&t), None);
        assert_eq!(FlowToken::parse(&[b'1'; MAX_LEN + 1]), None);
        assert_eq!(FlowToken::parse(&[b'a'; 10_000]), None);
    }

    #[test]
    fn flipped_bits_do_not_verify() {
        let k = key();
        for f in [flow4(), flow6()] {
            let (buf, n) = text(&k.seal(Role::UeSide, f));
            let good = &buf[..n];
            for i in 2..n {
                let mut t = good.to_vec();
                // another hex digit at the same place: parses, must not verify
                t[i] = if t[i] == b'0' { b'1' } else { b'0' };
                let p = FlowToken::parse(&t).unwrap();
                assert!(!k.verify(&p), "digit {i}");
            }
        }
    }

    #[test]
    fn another_ue_role_or_key_does_not_verify() {
        let k = key();
        let t = k.seal(Role::UeSide, flow4());
        // the token of another UE: its fields put in place of ours
        let other = Flow {
            binding: 0x1235,
            ..flow4()
        };
        assert!(!k.verify(&FlowToken { flow: other, ..t }));
        let other = Flow {
            ue: "10.46.0.7".parse().unwrap(),
            ..flow4()
        };
        assert!(!k.verify(&FlowToken { flow: other, ..t }));
        // IPv4 UE vs its IPv4-mapped IPv6 form
        let mapped = Flow {
            ue: IpAddr::V6("10.46.0.6".parse::<Ipv4Addr>().unwrap().to_ipv6_mapped()),
            ..flow4()
        };
        assert!(!k.verify(&FlowToken { flow: mapped, ..t }));
        // direction confusion: the UE-facing tag relabelled core-facing
        assert!(!k.verify(&FlowToken {
            role: Role::CoreSide,
            ..t
        }));
        // another process's key
        assert!(!FlowKey::new(&[8; 32]).verify(&t));
        assert!(t.flow.is_of(0x1234, flow4().ue));
        assert!(!t.flow.is_of(0x1235, flow4().ue));
        assert!(!t.flow.is_of(0x1234, "10.46.0.7".parse().unwrap()));
    }
}
