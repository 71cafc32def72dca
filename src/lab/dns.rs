//! The lab's own DNS server: answers for the home domain exactly what RFC 3263 resolution asks
//! (NAPTR → `SIP+D2U` → SRV `_sip._udp` → A, or with TCP `SIP+D2T` → `_sip._tcp`), so
//! `pcscf lab` resolves its I-CSCF, and the transport toward it, by DNS with nothing
//! installed. Authoritative for those three names only; anything else gets NXDOMAIN. A lab
//! tool built on the resolver's wire code (`control::dns`), not a general DNS server.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::control::dns::{TYPE_A, TYPE_NAPTR, TYPE_SRV};
use crate::sip::Transport;

fn name(n: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in n.trim_end_matches('.').split('.') {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// The question's name and type, and where the question ends.
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut pos = 12;
    let mut n = String::new();
    loop {
        let len = *q.get(pos)? as usize;
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        if !n.is_empty() {
            n.push('.');
        }
        n.push_str(&String::from_utf8_lossy(q.get(pos + 1..pos + 1 + len)?));
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(pos + 1)?, *q.get(pos + 2)?]);
    Some((n.to_ascii_lowercase(), qtype, pos + 5))
}

/// The answer to one query, or `None` for garbage. `transport`: the one the NAPTR record
/// offers for the I-CSCF (RFC 3263 §4.1: `SIP+D2U` → `_sip._udp`, `SIP+D2T` → `_sip._tcp`).
pub fn answer(q: &[u8], realm: &str, icscf: Ipv4Addr, transport: Transport) -> Option<Vec<u8>> {
    let (qname, qtype, qend) = question(q)?;
    let realm = realm.to_ascii_lowercase();
    let (service, proto) = match transport {
        Transport::Udp => ("SIP+D2U", "_udp"),
        Transport::Tcp => ("SIP+D2T", "_tcp"),
    };
    let srv_name = format!("_sip.{proto}.icscf.{realm}");
    let host = format!("icscf1.{realm}");
    let rdata: Option<(u16, Vec<u8>)> = if qname == realm && qtype == TYPE_NAPTR {
        let mut rd = vec![0, 10, 0, 50];
        for s in ["s", service, ""] {
            rd.push(s.len() as u8);
            rd.extend_from_slice(s.as_bytes());
        }
        rd.extend(name(&srv_name));
        Some((TYPE_NAPTR, rd))
    } else if qname == srv_name && qtype == TYPE_SRV {
        let mut rd = vec![0, 10, 0, 10, 0x13, 0xc4];
        rd.extend(name(&host));
        Some((TYPE_SRV, rd))
    } else if qname == host && qtype == TYPE_A {
        Some((TYPE_A, icscf.octets().to_vec()))
    } else {
        None
    };
    let mut r = q.get(..qend)?.to_vec();
    r[2] = 0x84 | (q[2] & 0x01); // response, authoritative, RD copied
    r[3] = if rdata.is_some() || qname.ends_with(&realm) {
        0x80
    } else {
        0x83
    }; // NOERROR / NXDOMAIN
    r[4..12].copy_from_slice(&[0, 1, 0, rdata.is_some() as u8, 0, 0, 0, 0]);
    if let Some((t, rd)) = rdata {
        r.extend_from_slice(&[0xc0, 12]);
        r.extend_from_slice(&t.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]); // class IN, TTL 3600
        r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        r.extend_from_slice(&rd);
    }
    Some(r)
}

/// Serve on `addr` until `stop`, offering the I-CSCF over `transport`.
pub fn serve(
    addr: SocketAddr,
    realm: &str,
    icscf: Ipv4Addr,
    transport: Transport,
    stop: Arc<AtomicBool>,
) -> std::io::Result<u64> {
    let s = UdpSocket::bind(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut buf = [0u8; 512];
    let mut answered = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = s.recv_from(&mut buf) else {
            continue;
        };
        if let Some(a) = answer(&buf[..n], realm, icscf, transport) {
            let _ = s.send_to(&a, from);
            answered += 1;
        }
    }
    Ok(answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::dns::{Resolver, Target};

    #[test]
    fn the_resolver_finds_the_icscf_through_this_server() {
        let icscf = Ipv4Addr::new(10, 212, 0, 2);
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut asked = Vec::new();
            let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> {
                asked.push(question(q).map(|(n, _, _)| n));
                answer(q, "ims.example", icscf, transport)
                    .ok_or_else(|| std::io::Error::other("garbage"))
            };
            let a = Resolver::new(Some("192.0.2.53:53".parse().unwrap()))
                .resolve_with("ims.example", std::time::Instant::now(), &mut t)
                .unwrap();
            assert_eq!(
                a,
                Target {
                    addr: SocketAddr::new(icscf.into(), 5060),
                    transport
                }
            );
            // NAPTR, the SRV it names, A: nothing else was needed
            let srv = match transport {
                Transport::Udp => "_sip._udp.icscf.ims.example",
                Transport::Tcp => "_sip._tcp.icscf.ims.example",
            };
            assert_eq!(
                asked,
                [Some("ims.example"), Some(srv), Some("icscf1.ims.example")]
                    .map(|n| n.map(String::from))
            );
            assert!(answer(&[1, 2, 3], "ims.example", icscf, transport).is_none());
        }
    }
}
