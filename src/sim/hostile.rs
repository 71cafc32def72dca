//! Hostile UEs over TCP inside their SAs (issue 14): a UE that registered honestly (its
//! protected REGISTER answered 200 on its connection, so it holds real SAs) and then misbehaves
//! on its set's TCP instead of sending its MESSAGEs. The P-CSCF must refuse it, bound what it
//! holds for it and count it, while every honest UE keeps working (`tcp::Host`'s bounds).
//!
//! What each kind does and what the UE simulator then watches for is in [`HostileTcp`]'s
//! variants. A UE whose connection the P-CSCF ended then sends one honest MESSAGE on a new
//! connection over the same SAs and expects its 200 (the reset must cost it its connection,
//! not its registration). The outcomes are counted per kind ([`HostileTally`]), apart from the
//! honest UEs' failures.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::wire::{self, Ipv4Repr, Ipv6Repr, checksum};

/// One way a registered UE misbehaves on its TCP inside the SAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostileTcp {
    /// A MESSAGE one byte per [`SLOWLORIS_INTERVAL`] on its connection, never finished: the
    /// P-CSCF resets the connection once the message has taken longer than its
    /// `tcp::HostConfig::message_time` (10 s by default) since its first byte.
    Slowloris,
    /// A whole MESSAGE without Content-Length on its connection (RFC 3261 §18.3: it MUST be
    /// present on a stream): the P-CSCF resets the connection (a framing error).
    NoContentLength,
    /// A header section that never ends, [`ENDLESS_BYTES`] of it (past the P-CSCF's
    /// `tcp::HostConfig::max_message`, 16 KiB): the P-CSCF resets the connection.
    Endless,
    /// [`WRONG_PORT_SEGMENTS`] TCP segments over its SA1 whose ports are not SA1's selectors
    /// (TS 33.203 §7: SA1 carries only the UE's port-c → the P-CSCF's port-s): the P-CSCF drops
    /// them (`tcp_refused`).
    WrongPorts,
    /// The UE resets its own connection, then sends [`SYN_FLOOD`] SYNs from its port-c to the
    /// P-CSCF's port-s over SA1, each with its own initial sequence number, and never answers
    /// a SYN-ACK (half-open connections): the set holds two connections at most, and no one
    /// else may notice.
    SynFlood,
}

/// A slow loris's pace (RFC-less: "one byte a second").
pub const SLOWLORIS_INTERVAL: Duration = Duration::from_secs(1);
/// How much of a header section that never ends an `endless` UE sends (past 16 KiB).
pub const ENDLESS_BYTES: usize = 20_000;
/// How many segments with wrong ports a `wrong-ports` UE sends.
pub const WRONG_PORT_SEGMENTS: usize = 16;
/// How many SYNs a `syn-flood` UE sends.
pub const SYN_FLOOD: usize = 200;

impl HostileTcp {
    pub const ALL: [HostileTcp; 5] = [
        HostileTcp::Slowloris,
        HostileTcp::NoContentLength,
        HostileTcp::Endless,
        HostileTcp::WrongPorts,
        HostileTcp::SynFlood,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            HostileTcp::Slowloris => "slowloris",
            HostileTcp::NoContentLength => "no-content-length",
            HostileTcp::Endless => "endless",
            HostileTcp::WrongPorts => "wrong-ports",
            HostileTcp::SynFlood => "syn-flood",
        }
    }

    /// One kind by name.
    pub fn parse(s: &str) -> Result<HostileTcp, String> {
        HostileTcp::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = HostileTcp::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown hostile TCP kind {s:?} ({}, or all)",
                    names.join(", ")
                )
            })
    }

    /// A comma-separated list of kinds, or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<HostileTcp>, String> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(HostileTcp::ALL.to_vec());
        }
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(HostileTcp::parse)
            .collect()
    }

    /// Whether the P-CSCF is expected to end the UE's connection for it.
    pub fn expects_reset(self) -> bool {
        matches!(
            self,
            HostileTcp::Slowloris | HostileTcp::NoContentLength | HostileTcp::Endless
        )
    }

    /// How long the UE watches for the P-CSCF's answer (its connection ended) before it gives
    /// up: the P-CSCF's message time (10 s) and some for a slow loris, a few seconds otherwise.
    pub fn deadline(self) -> Duration {
        match self {
            HostileTcp::Slowloris => Duration::from_secs(15),
            _ => Duration::from_secs(5),
        }
    }
}

/// Which UEs misbehave, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostilePlan {
    /// The kinds, taken in turn by the hostile UEs (none: every UE is honest).
    pub kinds: Vec<HostileTcp>,
    /// UE `i` is hostile when `i % every == 0` (0: none).
    pub every: usize,
}

impl HostilePlan {
    /// What UE `i` does, if it is hostile: the `j`-th hostile UE takes kind `j mod kinds`.
    pub fn kind_of(&self, i: usize) -> Option<HostileTcp> {
        if self.every == 0 || self.kinds.is_empty() || !i.is_multiple_of(self.every) {
            return None;
        }
        Some(self.kinds[(i / self.every) % self.kinds.len()])
    }

    /// How many of `ues` UEs are hostile.
    pub fn count(&self, ues: usize) -> usize {
        (0..ues).filter(|&i| self.kind_of(i).is_some()).count()
    }
}

/// The hostile UEs' outcomes, by kind and outcome (never an honest UE's failure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostileTally {
    pub outcomes: BTreeMap<(HostileTcp, &'static str), u64>,
    /// Segments they sent outside their stack (wrong ports, SYNs).
    pub crafted_segments: u64,
    /// The longest a connection of each kind took to be ended by the P-CSCF, from the UE's
    /// first misdeed.
    pub ended_after: BTreeMap<HostileTcp, Duration>,
}

impl HostileTally {
    pub fn add(&mut self, kind: HostileTcp, outcome: &'static str) {
        *self.outcomes.entry((kind, outcome)).or_insert(0) += 1;
    }

    /// `sent` crafted segments of `kind` went out (its outcome: sent, or not sent at all).
    pub fn crafted(&mut self, kind: HostileTcp, sent: u64) {
        self.crafted_segments += sent;
        self.add(kind, if sent > 0 { SENT } else { NOT_SENT });
    }

    /// A connection of `kind` ended by the P-CSCF `after` the UE's first misdeed.
    pub fn ended(&mut self, kind: HostileTcp, after: Duration) {
        self.add(kind, RESET);
        let e = self.ended_after.entry(kind).or_default();
        *e = (*e).max(after);
    }

    /// How many UEs of `kind` ended with `outcome`.
    pub fn get(&self, kind: HostileTcp, outcome: &'static str) -> u64 {
        self.outcomes.get(&(kind, outcome)).copied().unwrap_or(0)
    }

    /// The report's lines.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .outcomes
            .iter()
            .map(|((k, o), n)| format!("hostile tcp: {}: {o}: {n}", k.name()))
            .collect();
        for (k, d) in &self.ended_after {
            v.push(format!(
                "hostile tcp: {}: ended at most {:.2} s after its first misdeed",
                k.name(),
                d.as_secs_f64()
            ));
        }
        if self.crafted_segments > 0 {
            v.push(format!(
                "hostile tcp: {} segments crafted outside the UEs' stacks",
                self.crafted_segments
            ));
        }
        v
    }
}

/// Outcomes.
pub const RESET: &str = "connection ended by the P-CSCF";
pub const NOT_RESET: &str = "connection not ended in time";
pub const SENT: &str = "segments sent";
pub const NOT_SENT: &str = "could not send";
/// After the reset, its honest MESSAGE on a new connection: answered 200, answered otherwise,
/// not answered.
pub const SERVED_AGAIN: &str = "then its MESSAGE on a new connection answered 200";
pub const REFUSED_AGAIN: &str = "then its MESSAGE on a new connection refused";
pub const NOT_SERVED_AGAIN: &str = "then its MESSAGE on a new connection not answered";

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A whole IP packet with one TCP segment (no options) from `src` to `dst`, checksums filled
/// (RFC 9293 §3.1); `None` when the families differ.
pub fn tcp_segment(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Option<Vec<u8>> {
    let tcp_len = 20 + payload.len();
    let ip_len = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => 20,
        (IpAddr::V6(_), IpAddr::V6(_)) => 40,
        _ => return None,
    };
    let mut pkt = vec![0u8; ip_len + tcp_len];
    {
        let t = &mut pkt[ip_len..];
        t[0..2].copy_from_slice(&src.port().to_be_bytes());
        t[2..4].copy_from_slice(&dst.port().to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&65535u16.to_be_bytes());
        t[20..].copy_from_slice(payload);
        let acc = checksum::pseudo_header(src.ip(), dst.ip(), wire::protocol::TCP, tcp_len)?;
        let c = checksum::finish(checksum::sum(t, acc));
        t[16..18].copy_from_slice(&c.to_be_bytes());
    }
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ipv4Repr {
            src: s,
            dst: d,
            protocol: wire::protocol::TCP,
            ttl: 64,
            tos: 0,
            payload_len: tcp_len,
        }
        .emit(&mut pkt)
        .ok()?,
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Repr {
            src: s,
            dst: d,
            next_header: wire::protocol::TCP,
            hop_limit: 64,
            traffic_class: 0,
            payload_len: tcp_len,
        }
        .emit(&mut pkt)
        .ok()?,
        _ => return None,
    }
    Some(pkt)
}

/// The ports of the `k`-th segment a `wrong-ports` UE sends over its SA1 (UE port-c → P-CSCF
/// port-s is SA1's only pair): its port-c + 1, the P-CSCF's port-s + 1, its port-s as the
/// source, the P-CSCF's port-c as the destination, in turn. None is SA1's pair.
pub fn wrong_ports(k: usize, port_uc: u16, port_us: u16, port_ps: u16, port_pc: u16) -> (u16, u16) {
    match k % 4 {
        0 => (port_uc.wrapping_add(1), port_ps),
        1 => (port_uc, port_ps.wrapping_add(1)),
        2 => (port_us, port_ps),
        _ => (port_uc, port_pc),
    }
}

/// The start of a MESSAGE a hostile UE sends (request line and first headers, no
/// Content-Length, no end of its header section).
pub fn message_head(user: &str, realm: &str, via_host: &str, port_s: u16, i: usize) -> String {
    format!(
        "MESSAGE sip:echo@{realm} SIP/2.0\r\nVia: SIP/2.0/TCP {via_host}:{port_s};branch=z9hG4bK{i}h\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{realm}>;tag=h{i}\r\nTo: <sip:echo@{realm}>\r\nCall-ID: hostile-{i}@{via_host}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\n"
    )
}

/// The `k`-th kilobyte-ish line of a header section that never ends.
pub fn endless_line(k: usize) -> String {
    format!("X-Endless-{k}: {}\r\n", "a".repeat(1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Layout;

    #[test]
    fn kinds_parse_by_name_and_in_lists() {
        for k in HostileTcp::ALL {
            assert_eq!(HostileTcp::parse(k.name()), Ok(k));
        }
        assert_eq!(
            HostileTcp::parse_list("slowloris, wrong-ports"),
            Ok(vec![HostileTcp::Slowloris, HostileTcp::WrongPorts])
        );
        assert_eq!(HostileTcp::parse_list("all"), Ok(HostileTcp::ALL.to_vec()));
        assert!(HostileTcp::parse("nice").is_err());
        assert!(HostileTcp::parse_list("endless,nice").is_err());
    }

    #[test]
    fn every_nth_ue_is_hostile_and_the_kinds_take_turns() {
        let p = HostilePlan {
            kinds: vec![HostileTcp::Endless, HostileTcp::SynFlood],
            every: 10,
        };
        assert_eq!(p.kind_of(0), Some(HostileTcp::Endless));
        assert_eq!(p.kind_of(10), Some(HostileTcp::SynFlood));
        assert_eq!(p.kind_of(20), Some(HostileTcp::Endless));
        assert_eq!(p.kind_of(11), None);
        assert_eq!(p.count(50), 5);
        assert_eq!(HostilePlan::default().kind_of(0), None);
        let none = HostilePlan {
            kinds: vec![],
            every: 3,
        };
        assert_eq!(none.count(10), 0);
    }

    #[test]
    fn wrong_ports_are_never_sa1s_pair() {
        for k in 0..8 {
            let (s, d) = wrong_ports(k, 20000, 20001, 6100, 6101);
            assert_ne!((s, d), (20000, 6100));
        }
    }

    /// The segment parses as IP + TCP with its ports, and its checksum verifies (RFC 1071: the
    /// sum over the pseudo-header and the segment folds to 0xffff), both families.
    #[test]
    fn crafted_segments_are_valid_tcp() {
        for (a, b) in [
            ("10.0.0.1:20000", "10.0.0.2:6100"),
            ("[fd00::1]:20000", "[fd00::2]:6100"),
        ] {
            let (src, dst): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let pkt = tcp_segment(src, dst, 7, 0, SYN, b"").expect("segment");
            let l: Layout = wire::ip::parse(&pkt).expect("parses");
            assert_eq!(l.src, src.ip());
            assert_eq!(l.dst, dst.ip());
            let seg = &pkt[l.body()];
            assert_eq!(seg.len(), 20);
            assert_eq!(u16::from_be_bytes([seg[0], seg[1]]), 20000);
            assert_eq!(u16::from_be_bytes([seg[2], seg[3]]), 6100);
            assert_eq!(seg[13], SYN);
            let acc = checksum::pseudo_header(src.ip(), dst.ip(), 6, seg.len()).unwrap();
            assert_eq!(checksum::fold(checksum::sum(seg, acc)), 0xffff);
        }
        assert!(
            tcp_segment(
                "10.0.0.1:1".parse().unwrap(),
                "[fd00::2]:2".parse().unwrap(),
                0,
                0,
                SYN,
                b""
            )
            .is_none()
        );
    }

    #[test]
    fn the_hostile_messages_never_carry_content_length() {
        let h = message_head("u", "ims.example", "10.0.0.1", 20001, 3);
        assert!(h.starts_with("MESSAGE sip:echo@ims.example SIP/2.0\r\n"));
        assert!(!h.to_ascii_lowercase().contains("content-length"));
        assert!(!h.contains("\r\n\r\n"));
        let l = endless_line(4);
        assert!(l.len() > 1000 && l.ends_with("\r\n") && !l.contains("\r\n\r\n"));
    }
}
