//! "Is this URI us?": the one rule every Route pop and Request-URI check uses (RFC 3261 §16.4).
//!
//! Owns: [`OwnUris`], built once from configuration — our UE-side addresses (IPv4 and IPv6), our
//! core-side address, our hostname(s), and our ports (none, 5060, the UE-side plain port, the
//! core-side port, every protected port the registrar may allocate) — and [`OwnUris::is_us`].
//!
//! Phones learn the P-CSCF's address from the bearer's PCO and pre-load it as a Route by IP
//! (`<sip:10.88.1.1:5060;lr>`, then `<sip:10.88.1.1:5101;lr>` — our port-s — once protected), so
//! our hostname alone is not enough. `is_us` reads the URI in place: no allocation,
//! no lock (it runs in the workers), linear in the URI, `false` for anything it cannot read.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::ops::RangeInclusive;

/// Longest host we look at (RFC 1035 §2.3.4: 255 octets for a name; an IPv6 literal is shorter).
const MAX_HOST: usize = 255;

/// Who we are in a SIP URI. Built once; read by every worker.
#[derive(Clone, Debug, Default)]
pub struct OwnUris {
    /// Our addresses: UE side (both families) and core side.
    addrs: Vec<IpAddr>,
    /// Our host names, compared case-insensitively (RFC 3261 §19.1.4).
    names: Vec<Box<[u8]>>,
    /// Single ports that are ours besides 5060 (the UE-side plain port, the core-side port).
    ports: Vec<u16>,
    /// The protected port range (port-c / port-s pairs, TS 33.203 §7.1).
    protected: Option<RangeInclusive<u16>>,
}

impl OwnUris {
    /// Nothing is us (tools and benchmarks that pop no Route).
    pub const NONE: OwnUris = OwnUris {
        addrs: Vec::new(),
        names: Vec::new(),
        ports: Vec::new(),
        protected: None,
    };

    /// `names`: our hostnames; `addrs`: every UE-side and core-side address; `ports`: our
    /// single SIP ports (5060 is always ours); `protected`: the range port-c/port-s come from.
    pub fn new<S: AsRef<str>>(
        names: &[S],
        addrs: &[IpAddr],
        ports: &[u16],
        protected: Option<RangeInclusive<u16>>,
    ) -> OwnUris {
        OwnUris {
            addrs: addrs.to_vec(),
            names: names
                .iter()
                .map(|n| n.as_ref().trim())
                .filter(|n| !n.is_empty())
                .map(|n| n.as_bytes().into())
                .collect(),
            ports: ports.to_vec(),
            protected,
        }
    }

    /// Whether `uri` (the addr-spec, without `<>`) names us: `sip:` or `sips:` (any case), an
    /// optional `user[:password]@`, then our hostname (any case) or one of our addresses (IPv6 in
    /// brackets, compared as addresses: any case, any zero compression), then no port, 5060, or
    /// one of ours, then nothing or `;params` / `?headers`. A `maddr` parameter sends the request
    /// elsewhere (RFC 3261 §19.1.1), so a URI carrying one is not us.
    pub fn is_us(&self, uri: &[u8]) -> bool {
        let Some(rest) = strip_scheme(uri) else {
            return false;
        };
        // RFC 3261 §25.1: '@' is not allowed unescaped in userinfo, params or headers, so a
        // second one makes the URI unreadable, and the only one ends the userinfo.
        let rest = match find_at(rest) {
            None => rest,
            Some(at) if find_at(&rest[at + 1..]).is_none() => &rest[at + 1..],
            Some(_) => return false,
        };
        let Some((host, port, tail)) = split_hostport(rest) else {
            return false;
        };
        if !self.host_is_us(host) || !self.port_is_us(port) {
            return false;
        }
        // after the host and port: nothing, parameters or headers
        match tail.first() {
            None => true,
            Some(b';') => !has_maddr(tail),
            Some(b'?') => true,
            Some(_) => false,
        }
    }

    fn host_is_us(&self, host: &[u8]) -> bool {
        if host.is_empty() || host.len() > MAX_HOST {
            return false;
        }
        if let Some(inner) = host.strip_prefix(b"[") {
            let Some(inner) = inner.strip_suffix(b"]") else {
                return false;
            };
            return parse_ip::<Ipv6Addr>(inner)
                .is_some_and(|a| self.addrs.contains(&IpAddr::V6(a)));
        }
        // A host name's last label starts with a letter (RFC 3261 §25.1 toplabel), so only a
        // host ending in a digit can be an IPv4 address: a domain skips the parse.
        if host.last().is_some_and(u8::is_ascii_digit)
            && let Some(a) = parse_v4(host)
        {
            return self.addrs.contains(&IpAddr::V4(a));
        }
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    fn port_is_us(&self, port: Option<u16>) -> bool {
        match port {
            None | Some(5060) => true,
            Some(p) => {
                self.ports.contains(&p) || self.protected.as_ref().is_some_and(|r| r.contains(&p))
            }
        }
    }
}

/// The first '@' of `s`: a plain scan below 32 bytes (a Request-URI's user part), where it
/// costs less than a SIMD search's set-up; `memchr` on longer text (our flow-token URIs).
fn find_at(s: &[u8]) -> Option<usize> {
    if s.len() < 32 {
        s.iter().position(|&b| b == b'@')
    } else {
        memchr::memchr(b'@', s)
    }
}

/// The text after `sip:` / `sips:` (scheme compared case-insensitively, RFC 3261 §19.1.4).
fn strip_scheme(uri: &[u8]) -> Option<&[u8]> {
    for scheme in [&b"sip:"[..], b"sips:"] {
        if uri.len() >= scheme.len() && uri[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return Some(&uri[scheme.len()..]);
        }
    }
    None
}

/// `host [":" port]` at the start of `s`, and what follows. The host is `[...]` for IPv6;
/// the port is 1..=5 digits and fits u16. `None` for an unterminated bracket or a bad port.
fn split_hostport(s: &[u8]) -> Option<(&[u8], Option<u16>, &[u8])> {
    let host_end = if s.first() == Some(&b'[') {
        s.iter().position(|&b| b == b']')? + 1
    } else {
        s.iter()
            .position(|&b| matches!(b, b':' | b';' | b'?'))
            .unwrap_or(s.len())
    };
    let (host, rest) = s.split_at(host_end);
    let Some(after_colon) = rest.strip_prefix(b":") else {
        return Some((host, None, rest));
    };
    let digits = after_colon
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(after_colon.len());
    if digits == 0 || digits > 5 {
        return None;
    }
    let port = after_colon[..digits]
        .iter()
        .fold(0u32, |p, &d| p * 10 + (d - b'0') as u32);
    let port = u16::try_from(port).ok()?;
    Some((host, Some(port), &after_colon[digits..]))
}

/// Parse an IP address from bytes without allocating (std parses `&str` in place).
fn parse_ip<T: core::str::FromStr>(b: &[u8]) -> Option<T> {
    core::str::from_utf8(b).ok()?.parse().ok()
}

/// A dotted-quad IPv4 address, read as `Ipv4Addr`'s `FromStr` reads it (four decimal octets of
/// at most three digits, no leading zero, each at most 255) without the UTF-8 and `str` detour:
/// Route and Request-URI hosts are compared on every request inside a dialog.
fn parse_v4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = b.split(|&c| c == b'.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || (p.len() > 1 && p[0] == b'0') {
            return None;
        }
        let mut n: u16 = 0;
        for &d in p {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u16::from(d - b'0');
        }
        *o = u8::try_from(n).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

/// Whether the `;params[?headers]` tail carries a `maddr` parameter.
fn has_maddr(tail: &[u8]) -> bool {
    // no 'm' at all (our flow-token routes: long hex values), no maddr: skip the split
    if memchr::memchr2(b'm', b'M', tail).is_none() {
        return false;
    }
    let params = match tail.iter().position(|&b| b == b'?') {
        Some(q) => &tail[..q],
        None => tail,
    };
    params.split(|&b| b == b';').any(|p| {
        let name = p.split(|&b| b == b'=').next().unwrap_or(p);
        name.trim_ascii().eq_ignore_ascii_case(b"maddr")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> OwnUris {
        OwnUris::new(
            &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
            &[
                "10.88.1.1".parse().unwrap(),
                "2001:db8:88::1".parse().unwrap(),
                "10.0.1.10".parse().unwrap(),
            ],
            &[5070, 5080],
            Some(5100..=5199),
        )
    }

    fn us(u: &str) -> bool {
        own().is_us(u.as_bytes())
    }

    #[test]
    fn ipv4_with_and_without_port() {
        assert!(us("sip:10.88.1.1"));
        assert!(us("sip:10.88.1.1:5060"));
        assert!(us("sip:10.88.1.1:5060;lr"));
        assert!(us("sip:10.88.1.1;lr"));
        assert!(us("sip:10.88.1.1:5101;lr"));
        assert!(us("sip:10.88.1.1:5100;lr"));
        assert!(us("sip:10.88.1.1:5199;lr"));
        assert!(us("sip:10.88.1.1:5070"));
        assert!(us("sip:10.0.1.10:5080;lr"));
    }

    #[test]
    fn scheme_any_case_and_sips() {
        assert!(us("SIP:10.88.1.1;lr"));
        assert!(us("sips:10.88.1.1;lr"));
        assert!(us("SiPs:10.88.1.1:5101;lr"));
        assert!(!us("tel:+10881011"));
        assert!(!us("http:10.88.1.1"));
        assert!(!us("sipx:10.88.1.1"));
        assert!(!us("10.88.1.1"));
    }

    #[test]
    fn ipv6_any_form() {
        assert!(us("sip:[2001:db8:88::1]"));
        assert!(us("sip:[2001:db8:88::1]:5060;lr"));
        assert!(us("sip:[2001:DB8:88:0::1]:5101;lr"));
        assert!(us(
            "sip:[2001:0db8:0088:0000:0000:0000:0000:0001];lr;transport=udp"
        ));
        assert!(!us("sip:[2001:db8:88::2]:5060;lr"));
        assert!(!us("sip:2001:db8:88::1"));
    }

    #[test]
    fn hostname_any_case() {
        assert!(us("sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr"));
        assert!(us("sip:PCSCF.IMS.mnc001.mcc001.3gppnetwork.org:5060;lr"));
        assert!(us(
            "sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5101;lr"
        ));
    }

    #[test]
    fn params_and_headers() {
        assert!(us("sip:10.88.1.1:5060;lr;transport=udp;ftag=x"));
        assert!(us("sip:10.88.1.1?subject=x"));
        assert!(us("sip:10.88.1.1;lr?subject=x"));
        assert!(!us("sip:10.88.1.1;lr;maddr=192.0.2.9"));
        assert!(!us("sip:10.88.1.1;MADDR=192.0.2.9;lr"));
    }

    #[test]
    fn userinfo() {
        assert!(us("sip:user@10.88.1.1:5060;lr"));
        assert!(us("sip:user:pw@10.88.1.1"));
        assert!(us("sip:+1555;npdi@10.88.1.1"));
        // the user part names us, the host is someone else's
        assert!(!us("sip:10.88.1.1@evil.com"));
        assert!(!us("sip:10.88.1.1:5060@evil.com;lr"));
        assert!(!us("sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org@evil.com"));
        assert!(!us("sip:a@b@10.88.1.1"));
        assert!(!us("sip:@"));
        assert!(!us("sip:user@"));
    }

    #[test]
    fn other_hosts_and_ports() {
        assert!(!us("sip:10.88.1.1:5061;lr"));
        assert!(!us("sip:10.88.1.1:5200;lr"));
        assert!(!us("sip:10.88.1.1:99999;lr"));
        assert!(!us("sip:10.88.1.1:65536"));
        assert!(!us("sip:10.88.1.1:;lr"));
        assert!(!us("sip:10.88.1.1:50600"));
        assert!(!us("sip:10.88.1.1:5060x"));
        assert!(!us("sip:10.88.1.10"));
        assert!(!us("sip:10.88.1.10:5060;lr"));
        assert!(!us("sip:10.88.1.1.evil.com"));
        assert!(!us(
            "sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org.evil.com;lr"
        ));
        assert!(!us("sip:pcscf.ims.mnc001.mcc001.3gppnetwork.orgx"));
        assert!(!us("sip:scscf.ims.mnc001.mcc001.3gppnetwork.org;lr"));
        assert!(!us("sip:010.088.001.001"));
        assert!(!us("sip:10.88.1.1 ;lr"));
    }

    #[test]
    fn garbage() {
        for g in [
            "",
            "sip:",
            "sips:",
            "sip:[",
            "sip:[::1",
            "sip:[2001:db8:88::1",
            "sip:[2001:db8:88::1]x",
            "sip:[]",
            "sip:[10.88.1.1]",
            "sip:[zz::1]",
            "sip:\u{0}",
            "sip:;lr",
            "sip::5060",
            "<sip:10.88.1.1>",
        ] {
            assert!(!us(g), "{g:?}");
        }
        assert!(!own().is_us(b"sip:10.88.1.\xff"));
        let huge = format!("sip:{}.example.com;lr", "a".repeat(100_000));
        assert!(!us(&huge));
        let huge6 = format!("sip:[{}]", "0:".repeat(50_000));
        assert!(!us(&huge6));
        let many_params = format!("sip:10.88.1.1{}", ";lr".repeat(50_000));
        assert!(us(&many_params));
    }

    #[test]
    fn nothing_configured_is_never_us_but_ports_still_checked() {
        let none = OwnUris::default();
        assert!(!none.is_us(b"sip:10.88.1.1"));
        assert!(!none.is_us(b"sip:localhost"));
    }

    /// The hand-written IPv4 reader agrees with `Ipv4Addr`'s `FromStr` on every short string of
    /// digits and dots, and on a few others.
    #[test]
    fn ipv4_reader_agrees_with_std() {
        let alphabet = b"0123456789.";
        let mut seen = 0;
        let mut s = Vec::new();
        // every string of length <= 6 over the alphabet, and a sample of longer ones
        fn all(len: usize, s: &mut Vec<u8>, alphabet: &[u8], f: &mut dyn FnMut(&[u8])) {
            if s.len() == len {
                return f(s);
            }
            for &c in alphabet {
                s.push(c);
                all(len, s, alphabet, f);
                s.pop();
            }
        }
        let mut check = |b: &[u8]| {
            let std = core::str::from_utf8(b).unwrap().parse::<Ipv4Addr>().ok();
            assert_eq!(parse_v4(b), std, "{:?}", String::from_utf8_lossy(b));
            seen += 1;
        };
        for len in 0..=6 {
            all(len, &mut s, alphabet, &mut check);
        }
        let mut x: u64 = 1;
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 7 + (x >> 60) as usize;
            let b: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i * 4 % 56)) % 11) as usize])
                .collect();
            check(&b);
        }
        for b in [
            &b"255.255.255.255"[..],
            b"256.1.1.1",
            b"1.2.3.4.",
            b"01.2.3.4",
            b"0.0.0.0",
            b"1.2.3",
            b"1..2.3",
            b"+1.2.3.4",
            b"1.2.3.4 ",
        ] {
            check(b);
        }
        assert!(seen > 1_900_000);
    }

    #[test]
    fn maddr_is_found_in_any_case_and_only_as_a_name() {
        assert!(has_maddr(b";lr;maddr=10.0.0.1"));
        assert!(has_maddr(b";lr; MADDR =x"));
        assert!(has_maddr(b";maddr"));
        assert!(!has_maddr(b";lr;ft=0123456789abcdef"));
        assert!(!has_maddr(b";lr;x=maddr"));
        assert!(!has_maddr(b";lr?maddr=1"));
        assert!(!has_maddr(b""));
    }
}
