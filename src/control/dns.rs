//! Locating the I-CSCF of the home domain by DNS (RFC 3263 §4 for UDP): NAPTR → SRV → A/AAAA,
//! with the answers cached for their TTL. Runs on the registration thread, which asks it once
//! per home domain per TTL; a static `core.icscf` in the configuration bypasses it.
//!
//! Owns: the DNS wire format we need (RFC 1035 §4: queries, answers, name compression; RFC 3403
//! NAPTR; RFC 2782 SRV; RFC 3596 AAAA) and the resolution procedure. The transport is a
//! function from query bytes to response bytes, so the procedure is tested without a network;
//! [`udp_transport`] is the real one (one UDP exchange, a short timeout, one retry).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_NAPTR: u16 = 35;

/// One answer record we understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Naptr {
        order: u16,
        preference: u16,
        flags: String,
        service: String,
        replacement: String,
    },
}

/// A DNS query for `name`/`qtype` with id `id`, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A name at `pos` (with compression pointers, RFC 1035 §4.1.4); the name and where it ends.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some((name, end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
            continue;
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        pos += 1 + len;
    }
    None // a pointer loop
}

fn char_string(msg: &[u8], pos: usize) -> Option<(String, usize)> {
    let len = *msg.get(pos)? as usize;
    let s = msg.get(pos + 1..pos + 1 + len)?;
    Some((String::from_utf8_lossy(s).into_owned(), pos + 1 + len))
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// The answers of a response to query `id`, with their TTLs. `None` if it is not a valid
/// response to that query or reports an error (RCODE ≠ 0 and ≠ NXDOMAIN).
pub fn parse_response(msg: &[u8], id: u16) -> Option<Vec<(Record, u32)>> {
    if u16_at(msg, 0)? != id || msg.get(2)? & 0x80 == 0 {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    if rcode == 3 {
        return Some(Vec::new()); // NXDOMAIN: no such name
    }
    if rcode != 0 {
        return None;
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        pos = read_name(msg, pos)?.1;
        let rtype = u16_at(msg, pos)?;
        let ttl = u32::from_be_bytes(msg.get(pos + 4..pos + 8)?.try_into().ok()?);
        let rdlen = u16_at(msg, pos + 8)? as usize;
        let rd = pos + 10;
        let rdata = msg.get(rd..rd + rdlen)?;
        let rec = match rtype {
            TYPE_A if rdlen == 4 => Some(Record::A(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            ))),
            TYPE_AAAA if rdlen == 16 => {
                let b: [u8; 16] = rdata.try_into().ok()?;
                Some(Record::Aaaa(Ipv6Addr::from(b)))
            }
            TYPE_SRV if rdlen >= 7 => Some(Record::Srv {
                priority: u16_at(msg, rd)?,
                weight: u16_at(msg, rd + 2)?,
                port: u16_at(msg, rd + 4)?,
                target: read_name(msg, rd + 6)?.0,
            }),
            TYPE_NAPTR if rdlen >= 7 => {
                let (flags, p) = char_string(msg, rd + 4)?;
                let (service, p) = char_string(msg, p)?;
                let (_regexp, p) = char_string(msg, p)?;
                Some(Record::Naptr {
                    order: u16_at(msg, rd)?,
                    preference: u16_at(msg, rd + 2)?,
                    flags,
                    service,
                    replacement: read_name(msg, p)?.0,
                })
            }
            _ => None,
        };
        if let Some(r) = rec {
            out.push((r, ttl));
        }
        pos = rd + rdlen;
    }
    Some(out)
}

/// Sends a query and returns the response bytes.
pub type Transport<'a> = dyn FnMut(&[u8]) -> std::io::Result<Vec<u8>> + 'a;

/// One UDP exchange with `server` (timeout `wait`, one retry).
pub fn udp_transport(
    server: SocketAddr,
    wait: Duration,
) -> impl FnMut(&[u8]) -> std::io::Result<Vec<u8>> {
    move |q: &[u8]| {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let s = UdpSocket::bind(bind)?;
        s.set_read_timeout(Some(wait))?;
        let mut buf = vec![0u8; 4096];
        let mut last = std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS answer");
        for _ in 0..2 {
            s.send_to(q, server)?;
            match s.recv_from(&mut buf) {
                Ok((n, from)) if from == server => return Ok(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// RFC 3263 resolution for SIP over UDP, with a TTL cache.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: HashMap<String, (SocketAddr, Instant)>,
    next_id: u16,
    pub lookups: u64,
    pub failures: u64,
}

impl Resolver {
    fn ask(
        &mut self,
        t: &mut Transport<'_>,
        name: &str,
        qtype: u16,
    ) -> Result<Vec<(Record, u32)>, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.lookups += 1;
        let resp = t(&query(id, name, qtype)).map_err(|e| format!("DNS {name}: {e}"))?;
        parse_response(&resp, id).ok_or_else(|| format!("DNS {name}: bad or failed response"))
    }

    fn address(
        &mut self,
        t: &mut Transport<'_>,
        host: &str,
        port: u16,
    ) -> Result<(SocketAddr, u32), String> {
        for qtype in [TYPE_A, TYPE_AAAA] {
            for (r, ttl) in self.ask(t, host, qtype)? {
                match r {
                    Record::A(a) => return Ok((SocketAddr::new(IpAddr::V4(a), port), ttl)),
                    Record::Aaaa(a) => return Ok((SocketAddr::new(IpAddr::V6(a), port), ttl)),
                    _ => {}
                }
            }
        }
        Err(format!("DNS: no address for {host}"))
    }

    fn srv(
        &mut self,
        t: &mut Transport<'_>,
        name: &str,
    ) -> Result<Option<(SocketAddr, u32)>, String> {
        let mut srvs: Vec<(u16, u16, u16, String, u32)> = self
            .ask(t, name, TYPE_SRV)?
            .into_iter()
            .filter_map(|(r, ttl)| match r {
                Record::Srv {
                    priority,
                    weight,
                    port,
                    target,
                } => Some((priority, u16::MAX - weight, port, target, ttl)),
                _ => None,
            })
            .collect();
        // RFC 2782: lowest priority first; among equals, the heaviest weight first.
        srvs.sort();
        for (_, _, port, target, ttl) in srvs {
            if let Ok((a, t2)) = self.address(t, &target, port) {
                return Ok(Some((a, ttl.min(t2))));
            }
        }
        Ok(None)
    }

    /// Where to send SIP over UDP for `domain` (RFC 3263 §4.1, §4.2).
    pub fn resolve(
        &mut self,
        domain: &str,
        now: Instant,
        t: &mut Transport<'_>,
    ) -> Result<SocketAddr, String> {
        if let Some((a, until)) = self.cache.get(domain)
            && *until > now
        {
            return Ok(*a);
        }
        let r = self.resolve_uncached(domain, t);
        match &r {
            Ok((a, ttl)) => {
                self.cache.insert(
                    domain.to_string(),
                    (*a, now + Duration::from_secs((*ttl).max(1) as u64)),
                );
            }
            Err(_) => self.failures += 1,
        }
        r.map(|(a, _)| a)
    }

    fn resolve_uncached(
        &mut self,
        domain: &str,
        t: &mut Transport<'_>,
    ) -> Result<(SocketAddr, u32), String> {
        let host = domain.trim_matches(|c| c == '[' || c == ']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok((SocketAddr::new(ip, 5060), u32::MAX));
        }
        // §4.1: NAPTR, keeping the SIP over UDP service with the "s" flag
        let mut naptrs: Vec<(u16, u16, String, u32)> = self
            .ask(t, domain, TYPE_NAPTR)?
            .into_iter()
            .filter_map(|(r, ttl)| match r {
                Record::Naptr {
                    order,
                    preference,
                    flags,
                    service,
                    replacement,
                } if service.eq_ignore_ascii_case("SIP+D2U") && flags.eq_ignore_ascii_case("s") => {
                    Some((order, preference, replacement, ttl))
                }
                _ => None,
            })
            .collect();
        naptrs.sort();
        for (_, _, replacement, ttl) in naptrs {
            if let Some((a, t2)) = self.srv(t, &replacement)? {
                return Ok((a, ttl.min(t2)));
            }
        }
        // §4.2: no NAPTR: SRV for _sip._udp, then the domain's own address on 5060
        if let Some(found) = self.srv(t, &format!("_sip._udp.{domain}"))? {
            return Ok(found);
        }
        self.address(t, domain, 5060)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `q` carrying `answers` (type, rdata) with TTL 300, names uncompressed.
    fn respond(q: &[u8], answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (t, rd) in answers {
            r.extend_from_slice(&[0xc0, 12]); // the question's name
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&300u32.to_be_bytes());
            r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            r.extend_from_slice(rd);
        }
        r
    }

    fn name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    fn qname(q: &[u8]) -> (String, u16) {
        let (n, end) = read_name(q, 12).unwrap();
        (n, u16_at(q, end).unwrap())
    }

    #[test]
    fn naptr_srv_a_chain_and_cache() {
        let mut asked = Vec::new();
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> {
            let (n, ty) = qname(q);
            asked.push((n.clone(), ty));
            Ok(match (n.as_str(), ty) {
                ("ims.example", TYPE_NAPTR) => {
                    let mut rd = vec![0, 10, 0, 50];
                    for s in ["s", "SIP+D2T", ""] {
                        rd.push(s.len() as u8);
                        rd.extend_from_slice(s.as_bytes());
                    }
                    rd.extend(name("_sip._tcp.icscf.ims.example"));
                    let mut rd2 = vec![0, 20, 0, 50];
                    for s in ["s", "SIP+D2U", ""] {
                        rd2.push(s.len() as u8);
                        rd2.extend_from_slice(s.as_bytes());
                    }
                    rd2.extend(name("_sip._udp.icscf.ims.example"));
                    respond(q, &[(TYPE_NAPTR, rd), (TYPE_NAPTR, rd2)])
                }
                ("_sip._udp.icscf.ims.example", TYPE_SRV) => {
                    let mut rd = vec![0, 10, 0, 5, 0x13, 0xc4];
                    rd.extend(name("icscf1.ims.example"));
                    respond(q, &[(TYPE_SRV, rd)])
                }
                ("icscf1.ims.example", TYPE_A) => respond(q, &[(TYPE_A, vec![10, 0, 1, 20])]),
                _ => respond(q, &[]),
            })
        };
        let mut r = Resolver::default();
        let now = Instant::now();
        let a = r.resolve("ims.example", now, &mut t).unwrap();
        assert_eq!(a, "10.0.1.20:5060".parse().unwrap());
        let a2 = r
            .resolve("ims.example", now + Duration::from_secs(10), &mut t)
            .unwrap();
        assert_eq!(a2, a);
        assert_eq!(
            asked.len(),
            3,
            "the second resolution came from the cache: {asked:?}"
        );
        assert!(
            asked.iter().all(|(n, _)| !n.contains("_tcp")),
            "only the UDP service is followed"
        );
    }

    #[test]
    fn falls_back_to_srv_then_a() {
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> {
            let (n, ty) = qname(q);
            Ok(match (n.as_str(), ty) {
                ("plain.example", TYPE_A) => respond(q, &[(TYPE_A, vec![192, 0, 2, 7])]),
                _ => respond(q, &[]),
            })
        };
        let mut r = Resolver::default();
        let a = r.resolve("plain.example", Instant::now(), &mut t).unwrap();
        assert_eq!(a, "192.0.2.7:5060".parse().unwrap());
        assert_eq!(
            r.resolve("10.9.9.9", Instant::now(), &mut t).unwrap(),
            "10.9.9.9:5060".parse().unwrap()
        );
    }

    #[test]
    fn garbage_responses_are_errors_not_panics() {
        for junk in [vec![], vec![0u8; 3], vec![0xff; 64], {
            let mut v = query(1, "x.example", TYPE_A);
            v[2] = 0x81;
            v[7] = 5; // five answers that are not there
            v
        }] {
            assert!(parse_response(&junk, 1).is_none_or(|a| a.is_empty()));
        }
        // a compression pointer loop
        let mut q = query(2, "x.example", TYPE_A);
        q[2] = 0x81;
        q[7] = 1;
        q.extend_from_slice(&[0xc0, (q.len()) as u8]);
        assert!(parse_response(&q, 2).is_none());
        let mut t = |_: &[u8]| -> std::io::Result<Vec<u8>> { Err(std::io::Error::other("down")) };
        assert!(
            Resolver::default()
                .resolve("a.example", Instant::now(), &mut t)
                .is_err()
        );
    }
}
