//! Sec-agree: Security-Client, Security-Server, Security-Verify (RFC 3329 §2.2, §2.3.1) and
//! the `ipsec-3gpp` mechanism with its algorithms (TS 33.203 Annex H).

use crate::esp::{EncAlg, IntegAlg};
use crate::sip::lex::{ListIter, ParamIter, find_param, is_token, parse_u64, trim, unquote};

/// One sec-agree mechanism (RFC 3329 §2.2): `ipsec-3gpp;alg=...;spi-c=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecMechanism<'a> {
    pub raw: &'a [u8],
    pub name: &'a [u8],
    /// Text after the first `;`.
    pub params: &'a [u8],
}

/// Why an `ipsec-3gpp` offer cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecError {
    NotIpsec3gpp,
    MissingParam(&'static str),
    BadParam(&'static str),
    UnknownAlg,
    UnknownEalg,
    /// `prot` other than esp, or `mod` other than trans (TS 33.203 Annex H).
    Unsupported,
}

/// A parsed `ipsec-3gpp` mechanism with the defaults of TS 33.203 Annex H applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpsecOffer {
    /// `alg=` (TS 33.203 Annex H), in the ESP module's vocabulary.
    pub alg: IntegAlg,
    /// `ealg=`, null when absent (TS 33.203 Annex H).
    pub ealg: EncAlg,
    pub spi_c: u32,
    pub spi_s: u32,
    pub port_c: u16,
    pub port_s: u16,
    /// q in thousandths (RFC 3329 §2.2), if given.
    pub q: Option<u16>,
}

impl<'a> SecMechanism<'a> {
    pub fn parse(v: &'a [u8]) -> Option<SecMechanism<'a>> {
        let raw = trim(v);
        let (name, params) = match memchr::memchr(b';', raw) {
            Some(p) => (trim(&raw[..p]), &raw[p + 1..]),
            None => (raw, &raw[raw.len()..]),
        };
        is_token(name).then_some(SecMechanism { raw, name, params })
    }

    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
            .and_then(|p| p.value)
            .map(unquote)
    }

    pub fn is_ipsec_3gpp(&self) -> bool {
        self.name.eq_ignore_ascii_case(b"ipsec-3gpp")
    }

    /// Parse as an ipsec-3gpp offer: alg mandatory, ealg default null, prot default esp,
    /// mod default trans (TS 33.203 Annex H); SPIs are full u32 (they do exceed 2^31).
    pub fn ipsec(&self) -> Result<IpsecOffer, SecError> {
        if !self.is_ipsec_3gpp() {
            return Err(SecError::NotIpsec3gpp);
        }
        fn num(v: Option<&[u8]>, name: &'static str, max: u64) -> Result<u64, SecError> {
            let v = v.ok_or(SecError::MissingParam(name))?;
            match parse_u64(unquote(v), 10) {
                Some(n) if n <= max => Ok(n),
                _ => Err(SecError::BadParam(name)),
            }
        }
        // One pass over the parameters.
        let (mut alg, mut ealg, mut q) = (None, None, None);
        let (mut spi_c, mut spi_s, mut port_c, mut port_s) = (None, None, None, None);
        for p in ParamIter::new(self.params) {
            let v = p.value.map(unquote);
            let is = |n: &[u8]| p.name.eq_ignore_ascii_case(n);
            if is(b"alg") {
                alg = v;
            } else if is(b"ealg") {
                ealg = v;
            } else if is(b"spi-c") {
                spi_c = v;
            } else if is(b"spi-s") {
                spi_s = v;
            } else if is(b"port-c") {
                port_c = v;
            } else if is(b"port-s") {
                port_s = v;
            } else if is(b"q") {
                q = v;
            } else if is(b"prot") {
                if !v.is_some_and(|v| v.eq_ignore_ascii_case(b"esp")) {
                    return Err(SecError::Unsupported);
                }
            } else if is(b"mod") && !v.is_some_and(|v| v.eq_ignore_ascii_case(b"trans")) {
                return Err(SecError::Unsupported);
            }
        }
        let alg = IntegAlg::from_token(alg.ok_or(SecError::MissingParam("alg"))?)
            .ok_or(SecError::UnknownAlg)?;
        let ealg = match ealg {
            Some(e) => EncAlg::from_token(e).ok_or(SecError::UnknownEalg)?,
            None => EncAlg::Null,
        };
        let q = match q {
            Some(q) => Some(parse_qvalue(q).ok_or(SecError::BadParam("q"))?),
            None => None,
        };
        Ok(IpsecOffer {
            alg,
            ealg,
            spi_c: num(spi_c, "spi-c", u32::MAX as u64)? as u32,
            spi_s: num(spi_s, "spi-s", u32::MAX as u64)? as u32,
            port_c: num(port_c, "port-c", u16::MAX as u64)? as u16,
            port_s: num(port_s, "port-s", u16::MAX as u64)? as u16,
            q,
        })
    }

    /// RFC 3329 §2.3.1 comparison of two mechanisms as parameter sets: same name, same
    /// parameters and values, regardless of order, case and whitespace.
    pub fn same_as(&self, other: &SecMechanism<'_>) -> bool {
        match (ParamSet::of(self), ParamSet::of(other)) {
            (Some(a), Some(b)) => a.same_as(&b),
            _ => self.same_as_slow(other),
        }
    }

    /// [`SecMechanism::same_as`] re-parsing the parameters for every lookup: for mechanisms
    /// with more parameters than a [`ParamSet`] holds.
    fn same_as_slow(&self, other: &SecMechanism<'_>) -> bool {
        if !self.name.eq_ignore_ascii_case(other.name) {
            return false;
        }
        let covers = |a: &SecMechanism<'_>, b: &SecMechanism<'_>| {
            ParamIter::new(a.params).all(|p| {
                let mut found =
                    ParamIter::new(b.params).filter(|q| q.name.eq_ignore_ascii_case(p.name));
                match found.next() {
                    Some(q) => {
                        let pv = p.value.map(unquote).unwrap_or(b"");
                        let qv = q.value.map(unquote).unwrap_or(b"");
                        pv.eq_ignore_ascii_case(qv) && found.next().is_none()
                    }
                    None => false,
                }
            })
        };
        covers(self, other) && covers(other, self)
    }
}

/// A mechanism's name and parameters, parsed once (values unquoted), for comparing mechanism
/// lists (RFC 3329 §2.3.1) without re-parsing each parameter list per lookup: the protected
/// REGISTER's Security-Verify and Security-Client checks were ~100k instructions a registration.
#[derive(Clone, Copy, Debug)]
pub struct ParamSet<'a> {
    name: &'a [u8],
    n: usize,
    params: [(&'a [u8], &'a [u8]); ParamSet::MAX],
}

impl<'a> ParamSet<'a> {
    /// ipsec-3gpp carries 7–9 parameters.
    pub const MAX: usize = 16;

    /// `None` if `m` has more than [`ParamSet::MAX`] parameters.
    pub fn of(m: &SecMechanism<'a>) -> Option<ParamSet<'a>> {
        let mut set = ParamSet {
            name: m.name,
            n: 0,
            params: [(&[][..], &[][..]); ParamSet::MAX],
        };
        for p in ParamIter::new(m.params) {
            let slot = set.params.get_mut(set.n)?;
            *slot = (p.name, p.value.map(unquote).unwrap_or(b""));
            set.n += 1;
        }
        Some(set)
    }

    fn params(&self) -> &[(&'a [u8], &'a [u8])] {
        &self.params[..self.n]
    }

    /// Same name; every parameter of each is in the other exactly once with the same value
    /// (case-insensitive, any order).
    pub fn same_as(&self, other: &ParamSet<'_>) -> bool {
        fn covers(a: &[(&[u8], &[u8])], b: &[(&[u8], &[u8])]) -> bool {
            a.iter().all(|(k, v)| {
                let mut found = b.iter().filter(|(q, _)| q.eq_ignore_ascii_case(k));
                match found.next() {
                    Some((_, qv)) => qv.eq_ignore_ascii_case(v) && found.next().is_none(),
                    None => false,
                }
            })
        }
        if !self.name.eq_ignore_ascii_case(other.name) || self.n != other.n {
            return false;
        }
        let (a, b) = (self.params(), other.params());
        // The usual case, a list echoed back (Security-Verify is the Security-Server list we
        // sent): the same parameters in the same order. Then each is in the other exactly
        // once if and only if no name repeats, which is cheaper to check than the lookups.
        if a.iter()
            .zip(b)
            .all(|((k, v), (q, w))| k.eq_ignore_ascii_case(q) && v.eq_ignore_ascii_case(w))
        {
            return a
                .iter()
                .enumerate()
                .all(|(i, (k, _))| !a[i + 1..].iter().any(|(q, _)| q.eq_ignore_ascii_case(k)));
        }
        covers(a, b) && covers(b, a)
    }
}

/// qvalue (RFC 3261 §25.1) → thousandths.
fn parse_qvalue(q: &[u8]) -> Option<u16> {
    let (int, frac) = match q.iter().position(|&b| b == b'.') {
        Some(d) => (&q[..d], &q[d + 1..]),
        None => (q, &q[q.len()..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u16 = match int[0] {
        b'0' => 0,
        b'1' => 1000,
        _ => return None,
    };
    let mut scale = 100;
    for &d in frac {
        v += (d - b'0') as u16 * scale;
        scale /= 10;
    }
    (v <= 1000).then_some(v)
}

/// Every mechanism of a Security-Client / -Server / -Verify value.
pub fn mechanisms(value: &[u8]) -> impl Iterator<Item = SecMechanism<'_>> {
    ListIter::new(value).filter_map(SecMechanism::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parsed-once comparison agrees with the re-parsing one on the cases RFC 3329 §2.3.1
    /// cares about, and a mechanism with more parameters than a ParamSet holds still compares.
    #[test]
    fn param_set_comparison_matches_the_slow_one() {
        let base = "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=6";
        let long: String = (0..20).map(|i| format!(";x{i}={i}")).collect();
        let cases = [
            (
                base,
                "IPSEC-3GPP; port-s=6 ;spi-c=1;ALG=HMAC-SHA-1-96;ealg=aes-cbc;spi-s=2;port-c=5",
                true,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=7",
                false,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5",
                false,
            ),
            (
                base,
                "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=5;port-s=6;q=0.1",
                false,
            ),
            ("ipsec-3gpp;a=1;a=1", "ipsec-3gpp;a=1;b=2", false),
            // in the same order, but a name repeats: not "exactly once"
            ("ipsec-3gpp;a=1;a=1", "ipsec-3gpp;a=1;A=1", false),
            ("ipsec-3gpp;a=1;b=2;c", "ipsec-3gpp;A=1;B=2;c", true),
            ("ipsec-3gpp;a=1;b=2", "ipsec-3gpp;b=2;a=1", true),
            ("ipsec-3gpp;alg=\"x\"", "ipsec-3gpp;alg=x", true),
            ("tls;alg=x", "ipsec-3gpp;alg=x", false),
        ];
        let long_a = format!("ipsec-3gpp{long}");
        let long_b = format!("ipsec-3gpp{long};y=1");
        for (a, b, same) in cases.into_iter().chain([
            (long_a.as_str(), long_a.as_str(), true),
            (long_a.as_str(), long_b.as_str(), false),
        ]) {
            let (ma, mb) = (
                SecMechanism::parse(a.as_bytes()).unwrap(),
                SecMechanism::parse(b.as_bytes()).unwrap(),
            );
            assert_eq!(ma.same_as(&mb), same, "{a} vs {b}");
            assert_eq!(mb.same_as(&ma), same, "{b} vs {a}");
            assert_eq!(ma.same_as_slow(&mb), same, "slow: {a} vs {b}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]
        /// The parsed comparison (its in-order shortcut included) agrees with the re-parsing
        /// one on lists drawn from a few names and values, so that repeats, reorderings and
        /// case changes are common.
        #[test]
        fn param_set_comparison_agrees_with_the_slow_one(
            a in proptest::collection::vec((0..4usize, 0..3usize, proptest::bool::ANY), 0..6),
            edits in proptest::collection::vec((0..4usize, 0..6usize), 0..3),
            swap in proptest::option::of((0..6usize, 0..6usize)),
        ) {
            const NAMES: [&str; 4] = ["alg", "spi-c", "SPI-C", "q"];
            const VALUES: [&str; 3] = ["1", "x", "X"];
            let text = |ps: &[(usize, usize, bool)]| {
                let mut t = String::from("ipsec-3gpp");
                for &(n, v, has) in ps {
                    t.push(';');
                    t.push_str(NAMES[n]);
                    if has {
                        t.push('=');
                        t.push_str(VALUES[v]);
                    }
                }
                t
            };
            let mut b = a.clone();
            if let Some((i, j)) = swap && i < b.len() && j < b.len() {
                b.swap(i, j);
            }
            for (what, at) in edits {
                if let Some(p) = b.get_mut(at) {
                    match what {
                        0 => p.0 = (p.0 + 1) % NAMES.len(),
                        1 => p.1 = (p.1 + 1) % VALUES.len(),
                        2 => p.2 = !p.2,
                        _ => {
                            b.remove(at);
                        }
                    }
                }
            }
            let (ta, tb) = (text(&a), text(&b));
            let ma = SecMechanism::parse(ta.as_bytes()).unwrap();
            let mb = SecMechanism::parse(tb.as_bytes()).unwrap();
            proptest::prop_assert_eq!(ma.same_as(&mb), ma.same_as_slow(&mb), "{} vs {}", ta, tb);
            proptest::prop_assert_eq!(mb.same_as(&ma), mb.same_as_slow(&ma), "{} vs {}", tb, ta);
        }
    }

    #[test]
    fn sec_mechanism() {
        let m = SecMechanism::parse(b"ipsec-3gpp; alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=4294967295;spi-s=2177074695;port-c=7004;port-s=7005;q=0.1").unwrap();
        let o = m.ipsec().unwrap();
        assert_eq!(o.spi_c, u32::MAX);
        assert_eq!(o.spi_s, 2177074695);
        assert_eq!(o.alg, IntegAlg::HmacSha1_96);
        assert_eq!(o.ealg, EncAlg::AesCbc);
        assert_eq!(o.q, Some(100));
        let a = SecMechanism::parse(b"ipsec-3gpp;spi-c=1;ALG=hmac-md5-96").unwrap();
        let b = SecMechanism::parse(b"IPSEC-3gpp; alg = HMAC-MD5-96 ; spi-c=1").unwrap();
        assert!(a.same_as(&b));
        let c = SecMechanism::parse(b"ipsec-3gpp;spi-c=2;alg=hmac-md5-96").unwrap();
        assert!(!a.same_as(&c));
        let d = SecMechanism::parse(b"ipsec-3gpp;spi-c=1;alg=hmac-md5-96;ealg=null").unwrap();
        assert!(!a.same_as(&d));
    }
}
