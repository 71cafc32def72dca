//! Forwarding a request (RFC 3261 §16.4–§16.6, §16.11, RFC 3581, TS 24.229 §5.2.6.3 and
//! §5.2.6.4), in place.
//!
//! Owns: received/rport on the sender's Via, our Via on top, Max-Forwards, popping the Route
//! entries that name us, the stateless branch hash, and the two relays of a registered UE's
//! traffic: its request toward the Service-Route with the asserted identity, and a request from
//! the core toward it through our Path.

use core::net::{IpAddr, SocketAddr};

use super::ProxyIdentity;
use super::reply::TopVia;
use crate::sip::branch::Branch;
use crate::sip::edit::{EditError, Editor, Rebuild};
use crate::sip::headers::{self, NameAddr, Via};
use crate::sip::lex::{self, ListIter, parse_u64};
use crate::sip::msg::{Header, HeaderName, Span, View};
use crate::sip::write::Writer;

/// Write an IP address as text: IPv4 by hand (the common case, no `fmt` machinery), IPv6
/// through `Display` (RFC 5952 form, no brackets).
fn write_ip(w: &mut Writer<'_>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            w.dec(o[0] as u64)
                .put(b".")
                .dec(o[1] as u64)
                .put(b".")
                .dec(o[2] as u64)
                .put(b".")
                .dec(o[3] as u64);
        }
        IpAddr::V6(v6) => {
            w.display(&v6);
        }
    }
}

/// received / rport on the UE's Via (RFC 3261 §18.2.1, RFC 3581 §4), in one rewrite of the
/// first Via value: every byte we do not change is copied as it was.
pub(super) fn fix_top_via(ed: &mut Editor<'_>, src: SocketAddr) -> Result<(), EditError> {
    let mut out = [0u8; 1024];
    let Some(top) = TopVia::of(ed.view()) else {
        return Ok(());
    };
    match top_via_fixed(ed.view(), &top, src, &mut out)? {
        Some((i, item, len)) => ed.replace_in_header(i, item, &[&out[..len]]),
        None => Ok(()),
    }
}

/// The first Via value with received / rport as [`fix_top_via`] sets them, written into `out`:
/// the Via header's index, the span of that value, and the length written; `None` when there
/// is nothing to change.
pub(super) fn top_via_fixed(
    v: View<'_>,
    top: &TopVia,
    src: SocketAddr,
    out: &mut [u8],
) -> Result<Option<(usize, Span, usize)>, EditError> {
    if top_via_stays(v, top, src) {
        return Ok(None);
    }
    let via = top.via(v);
    let mut ip = [0u8; 48];
    let mut w = Writer::new(&mut ip);
    write_ip(&mut w, src.ip());
    let iplen = w.finish().ok_or(EditError::NoRoom)?;
    let ip = &ip[..iplen];
    let item = via.raw;
    let mut w = Writer::new(out);
    let mut cursor = 0;
    let (mut has_received, mut has_rport, mut changed) = (false, false, false);
    for p in lex::ParamIter::new(via.params) {
        let at = Span::of(item, p.raw);
        w.put(&item[cursor..at.start as usize]);
        cursor = at.end as usize;
        if p.name.eq_ignore_ascii_case(b"received") {
            has_received = true;
            changed |= p.value != Some(ip);
            w.put(b"received=").put(ip);
        } else if p.name.eq_ignore_ascii_case(b"rport") {
            has_rport = true;
            match p.value {
                Some(_) => w.put(p.raw),
                None => {
                    changed = true;
                    w.put(b"rport=").dec(src.port() as u64)
                }
            };
        } else {
            w.put(p.raw);
        }
    }
    w.put(&item[cursor..]);
    // RFC 3261 §18.2.1: add received if sent-by differs from the packet's source; RFC 3581
    // §4 asks for it whenever rport is present.
    if !has_received && (has_rport || !host_is_ip(via.host, ip, src.ip())) {
        changed = true;
        w.put(b";received=").put(ip);
    }
    if !changed {
        return Ok(None);
    }
    let len = w.finish().ok_or(EditError::NoRoom)?;
    Ok(Some((top.header, top.item, len)))
}

/// Whether [`top_via_fixed`] surely finds nothing to change, known without writing anything:
/// the top value is not on the first Via line (received / rport go on the first line's first
/// value only: one on a later line, after an empty first line, is left as it always was), or
/// it has neither parameter and its sent-by is the IPv4 source as we would write it.
fn top_via_stays(v: View<'_>, top: &TopVia, src: SocketAddr) -> bool {
    if !top.first_line {
        return true;
    }
    let via = top.via(v);
    !via.received_or_rport
        && matches!(src.ip(), IpAddr::V4(a) if is_v4_text(strip_brackets(via.host), a))
}

/// A host without the brackets of an IPv6 reference.
fn strip_brackets(host: &[u8]) -> &[u8] {
    host.strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host)
}

/// Whether `h` is `ip` as [`write_ip`] writes it (dotted decimal, no leading zeros), read in
/// one pass without writing it: four parts of one to three digits, none starting with a `0`
/// it is not alone in, each equal to its octet.
fn is_v4_text(h: &[u8], ip: core::net::Ipv4Addr) -> bool {
    let o = ip.octets();
    let (mut k, mut n, mut digits) = (0, 0u32, 0);
    for &b in h {
        match b {
            b'0'..=b'9' => {
                if digits == 3 || (digits == 1 && n == 0) {
                    return false;
                }
                n = n * 10 + u32::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && k < 3 && n == u32::from(o[k]) => {
                (k, n, digits) = (k + 1, 0, 0);
            }
            _ => return false,
        }
    }
    k == 3 && digits > 0 && n == u32::from(o[3])
}

/// Whether a Via sent-by host is the source address: textual match first (cheap), parsing only
/// for IPv6, whose text forms vary.
fn host_is_ip(host: &[u8], ip_text: &[u8], ip: IpAddr) -> bool {
    let h = strip_brackets(host);
    h == ip_text
        || (ip.is_ipv6()
            && core::str::from_utf8(h)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
                == Some(ip))
}

/// RFC 3261 §16.6 item 3: decrement Max-Forwards, or add it with 70.
pub(super) fn decrement_max_forwards(ed: &mut Editor<'_>) -> Result<(), EditError> {
    match ed.find(HeaderName::MaxForwards, 0) {
        Some(i) => {
            let h = ed.header(i).ok_or(EditError::BadTarget)?;
            let mut tmp = [0u8; 4];
            let l = next_max_forwards(ed.view().bytes(h.value), &mut tmp);
            ed.replace_in_header(i, h.value, &[&tmp[..l]])
        }
        None => ed.push_header(HeaderName::MaxForwards, &[b"70"]),
    }
}

/// The Max-Forwards value to forward with, written into `out`: one less than `value` (70 for a
/// value that does not parse, which validation has refused already); its length.
pub(super) fn next_max_forwards(value: &[u8], out: &mut [u8; 4]) -> usize {
    let cur = parse_u64(value, 10).unwrap_or(70);
    let mut w = Writer::new(out);
    w.dec(cur.saturating_sub(1).min(255));
    w.len()
}

/// RFC 3261 §16.4: pop every leading Route value that names us (the pre-loaded P-CSCF route,
/// by hostname or by the address a phone learned from PCO), across several Route headers and
/// comma-separated values; the first value that is not us stops it.
pub fn pop_own_routes(ed: &mut Editor<'_>, me: &ProxyIdentity<'_>) -> Result<(), EditError> {
    loop {
        let Some(i) = ed.find(HeaderName::Route, 0) else {
            return Ok(());
        };
        let target = {
            let v = ed.view();
            let h = v.idx.headers()[i];
            ListIter::new(v.bytes(h.value)).next().and_then(|item| {
                let na = NameAddr::parse(item)?;
                me.own.is_us(na.uri).then(|| Span::of(v.buf, item))
            })
        };
        match target {
            Some(item) => ed.remove_item(i, item, b',', true)?,
            None => return Ok(()),
        }
    }
}

/// RFC 3261 §16.11: a stateless proxy's branch must be the same for retransmissions of a
/// request, so it is a hash (`BranchHash`, 64 bits) of the incoming top Via value and
/// Call-ID.
pub fn stateless_branch(v: View<'_>) -> u64 {
    stateless_hash(v, v.values(HeaderName::Via).next())
}

/// [`stateless_branch`] with the top Via already found.
pub fn stateless_branch_of(v: View<'_>, top: &TopVia) -> u64 {
    stateless_hash(v, Some(v.bytes(top.item)))
}

/// The hash of the top Via value (when any) and the Call-ID.
fn stateless_hash(v: View<'_>, top_via: Option<&[u8]>) -> u64 {
    let mut h = BranchHash::new();
    if let Some(top) = top_via {
        h.eat(top);
    }
    if let Some(c) = v.header(HeaderName::CallId) {
        h.eat(c);
    }
    h.finish()
}

/// A 64-bit hash over byte strings, eight bytes a step: a multiply-rotate per word, each
/// string's length mixed in (so no two splits of the same bytes collide by construction), and
/// a final avalanche. Not keyed: the branch's MAC is what a peer cannot forge; this only has
/// to tell requests apart and stay the same for a retransmission.
struct BranchHash(u64);

impl BranchHash {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> BranchHash {
        BranchHash(0xcbf2_9ce4_8422_2325)
    }

    #[inline(always)]
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K).rotate_left(29);
    }

    fn eat(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.word(c.try_into().map_or(0, u64::from_le_bytes));
        }
        let rest = chunks.remainder();
        let tail = match bytes.len().checked_sub(8) {
            // the last eight bytes, shifted so that only the unread ones remain
            Some(last) if !rest.is_empty() => bytes[last..]
                .try_into()
                .map_or(0, u64::from_le_bytes)
                .wrapping_shr(8 * (8 - rest.len() as u32)),
            _ => rest
                .iter()
                .rev()
                .fold(0u64, |acc, &b| acc << 8 | u64::from(b)),
        };
        self.word(tail);
        self.word(bytes.len() as u64);
    }

    fn finish(&self) -> u64 {
        // murmur3's 64-bit finaliser
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Prepare a request for forwarding toward the core (RFC 3261 §16.6): received/rport on the
/// sender's Via, our Via on top with `branch`, Max-Forwards decremented. The caller has checked
/// that Max-Forwards is not zero.
pub fn forward_request(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    source: SocketAddr,
    branch: &Branch,
) -> Result<(), EditError> {
    fix_top_via(ed, source)?;
    let via = our_via(me, branch)?;
    let first_via = ed.find(HeaderName::Via, 0).unwrap_or(0);
    ed.insert_header(first_via, HeaderName::Via, &[via.as_bytes()])?;
    decrement_max_forwards(ed)
}

/// Set the transport of the top Via (ours, just written) to `transport` (RFC 3261 §18.1.1: a
/// request we send over TCP after all says so in its Via; `UDP` and `TCP` are the same length,
/// so nothing moves).
pub fn set_top_via_transport(ed: &mut Editor<'_>, transport: &[u8]) -> Result<(), EditError> {
    let i = ed.find(HeaderName::Via, 0).ok_or(EditError::BadTarget)?;
    let span = {
        let v = ed.view();
        let h = v.idx.headers()[i];
        let top = ListIter::new(v.bytes(h.value))
            .next()
            .ok_or(EditError::BadTarget)?;
        let via = Via::parse(top).ok_or(EditError::BadTarget)?;
        Span::of(v.buf, via.transport)
    };
    ed.replace_in_header(i, span, &[transport])
}

/// Max-Forwards of a request is zero (RFC 3261 §16.3 item 3: answer 483).
pub fn max_forwards_exhausted(v: View<'_>) -> bool {
    v.header(HeaderName::MaxForwards)
        .and_then(|m| parse_u64(m, 10))
        == Some(0)
}

/// A request from a registered UE, received over its SA, toward the core (TS 24.229 §5.2.6.3):
/// our Via and Max-Forwards as for any forward; the identity is the network's — any
/// P-Preferred-Identity or P-Asserted-Identity the UE wrote goes (RFC 3325 §9.1) and
/// `P-Asserted-Identity: <pai>` (its default registered IMPU) is set; the Route set is the
/// Service-Route stored at registration (`route`), whatever the UE pre-loaded.
#[allow(clippy::too_many_arguments)] // one call site, the pipeline's; each is one fact
pub fn rewrite_protected_request(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    source: SocketAddr,
    branch: &Branch,
    pai: &[u8],
    route: &[u8],
    icid: &[u8],
    top: Option<&TopVia>,
    scratch: &mut [u8],
) -> Result<(), EditError> {
    // Every edit of RFC 3261 §16.6 and TS 24.229 §5.2.6.3 in one pass over the headers (the
    // result is what forward_request, the removals and the appended lines would write one
    // splice at a time).
    // the fixed Via value is written aside only when there is something to fix (the buffer
    // is not even zeroed otherwise)
    let mut buf: [u8; 1024];
    let mut fixed: &[u8] = &[];
    let top = match top {
        Some(t) if !top_via_stays(ed.view(), t, source) => {
            buf = [0u8; 1024];
            let r = top_via_fixed(ed.view(), t, source, &mut buf)?;
            fixed = &buf;
            r
        }
        _ => None,
    };
    let via = our_via(me, branch)?;
    let n = ed.index().headers().len();
    let has_via = ed.find(HeaderName::Via, 0).is_some();
    let mut rb = ed.rebuild(scratch);
    let mut fwd = ForwardLines::start(&mut rb, has_via, via.as_bytes(), top, fixed);
    for i in 0..n {
        let h = rb.view().idx.headers()[i];
        if fwd.line(&mut rb, i, h) {
            continue;
        }
        match h.name {
            // RFC 3325 §9.1: the identity is the network's; the route set is the
            // Service-Route; the charging headers are the network's (strip_charging)
            HeaderName::PPreferredIdentity
            | HeaderName::PAssertedIdentity
            | HeaderName::Route
            | HeaderName::PChargingVector
            | HeaderName::PChargingFunctionAddresses => {}
            _ => rb.keep(i),
        }
    }
    fwd.finish(&mut rb);
    rb.line(HeaderName::Route, &[route]);
    rb.line(HeaderName::PAssertedIdentity, &[pai]);
    // TS 24.229 §5.2.6.3.3 / §5.2.6.3.4 [spec-m]: the P-CSCF starts the charging vector of an
    // originating request (its icid; the IOIs are the S-CSCF's).
    rb.line(HeaderName::PChargingVector, &[b"icid-value=", icid]);
    rb.finish()
}

/// The edits of RFC 3261 §16.6 every request we forward gets, line by line in a rebuild of
/// its header block: our Via before the first Via line (item 8), received / rport on the top
/// Via value when it stands on the first Via line (§18.2.1, RFC 3581 §4), Max-Forwards one less
/// (item 3), or 70 added at [`finish`](ForwardLines::finish) when there was none.
pub(super) struct ForwardLines<'a> {
    via: &'a [u8],
    /// The top Via value's line, span and fixed text length in `fixed` ([`top_via_fixed`]).
    top: Option<(usize, Span, usize)>,
    fixed: &'a [u8],
    via_seen: bool,
    mf_seen: bool,
}

impl<'a> ForwardLines<'a> {
    /// Start; with no Via line at all, ours goes first.
    pub(super) fn start(
        rb: &mut Rebuild<'_, '_>,
        has_via: bool,
        via: &'a [u8],
        top: Option<(usize, Span, usize)>,
        fixed: &'a [u8],
    ) -> ForwardLines<'a> {
        if !has_via {
            rb.line(HeaderName::Via, &[via]);
        }
        ForwardLines {
            via,
            top,
            fixed,
            via_seen: false,
            mf_seen: false,
        }
    }

    /// Write old line `i` (`h`) if it is one of these edits' lines; `false` for any other.
    pub(super) fn line(&mut self, rb: &mut Rebuild<'_, '_>, i: usize, h: Header) -> bool {
        match h.name {
            HeaderName::Via => {
                if !self.via_seen {
                    self.via_seen = true;
                    rb.line(HeaderName::Via, &[self.via]);
                }
                match self.top {
                    Some((at, item, len)) if at == i => rb.edit(i, item, &[&self.fixed[..len]]),
                    _ => rb.keep(i),
                }
            }
            HeaderName::MaxForwards if !self.mf_seen => {
                self.mf_seen = true;
                let mut tmp = [0u8; 4];
                let l = next_max_forwards(rb.view().bytes(h.value), &mut tmp);
                rb.edit(i, h.value, &[&tmp[..l]]);
            }
            _ => return false,
        }
        true
    }

    /// After the old lines: Max-Forwards 70 if there was none.
    pub(super) fn finish(self, rb: &mut Rebuild<'_, '_>) {
        if !self.mf_seen {
            rb.line(HeaderName::MaxForwards, &[b"70"]);
        }
    }
}

/// Our Via value toward the core: `SIP/2.0/<transport> <sent-by>;branch=<branch>`.
fn our_via(me: &ProxyIdentity<'_>, branch: &Branch) -> Result<ViaText, EditError> {
    let mut t = ViaText {
        buf: [0; 160],
        len: 0,
    };
    let mut w = Writer::new(&mut t.buf);
    w.put(b"SIP/2.0/")
        .put(me.via_transport)
        .put(b" ")
        .put(me.via_sent_by)
        .put(b";branch=");
    branch.write(&mut w);
    t.len = w.finish().ok_or(EditError::NoRoom)?;
    Ok(t)
}

/// A Via value written aside ([`our_via`]).
struct ViaText {
    buf: [u8; 160],
    len: usize,
}

impl ViaText {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Charging headers belong to the network's trust domain (RFC 7315 §4.6, §5.6; TS 24.229
/// §5.2.6.3 and §5.2.6.4 [spec-m]): what a UE wrote never reaches the core, and what the core
/// wrote never reaches a UE (it would tell the UE our charging functions' addresses).
pub fn strip_charging(ed: &mut Editor<'_>) -> Result<(), EditError> {
    ed.remove_all(HeaderName::PChargingVector)?;
    ed.remove_all(HeaderName::PChargingFunctionAddresses)?;
    Ok(())
}

/// The Request-URI's host and port as an address, when the host is an IP literal (the
/// registered contact of a UE, for a request the core sends it through our Path).
pub fn request_uri_addr(v: View<'_>) -> Option<SocketAddr> {
    let hp = headers::uri_hostport(v.request_uri()?);
    let (host, port) = headers::split_host_port(hp)?;
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    let ip: IpAddr = core::str::from_utf8(host).ok()?.parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// Whether the Request-URI asks for TCP (`;transport=tcp`, RFC 3263 §4.1: a UE that registered
/// a contact so reaches it over TCP).
pub fn request_uri_wants_tcp(v: View<'_>) -> bool {
    v.request_uri().is_some_and(uri_wants_tcp)
}

/// The SIP URI `uri` says `;transport=tcp` (RFC 3263 §4.1: the transport of its target).
pub fn uri_wants_tcp(uri: &[u8]) -> bool {
    lex::ParamIter::new(headers::uri_params(uri)).any(|p| {
        p.name.eq_ignore_ascii_case(b"transport")
            && p.value.is_some_and(|t| t.eq_ignore_ascii_case(b"tcp"))
    })
}

/// A request from the core toward a registered UE, arriving through the Path we inserted
/// (TS 24.229 §5.2.6.4): our Route entry popped, our UE-side Via on top (`me.via_sent_by`),
/// Max-Forwards decremented.
pub fn rewrite_request_to_ue(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    source: SocketAddr,
    branch: &Branch,
) -> Result<(), EditError> {
    pop_own_routes(ed, me)?;
    strip_charging(ed)?;
    forward_request(ed, me, source, branch)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 sent-by test answers as comparing with the text `write_ip` writes.
    #[test]
    fn v4_text_is_the_written_form() {
        let ips = [
            "0.0.0.0",
            "10.46.0.6",
            "255.255.255.255",
            "1.20.100.9",
            "192.0.2.10",
        ];
        let hosts = [
            "0.0.0.0",
            "10.46.0.6",
            "010.46.0.6",
            "10.46.0.06",
            "10.46.0.6.",
            "10.46.0",
            "10.46.0.60",
            "255.255.255.255",
            "1.20.100.9",
            "1.20.100.9 ",
            "192.0.2.10",
            "192.0.2.1",
            "",
            "host",
        ];
        for ip in ips {
            let a: core::net::Ipv4Addr = ip.parse().unwrap();
            let mut text = [0u8; 48];
            let mut w = Writer::new(&mut text);
            write_ip(&mut w, IpAddr::V4(a));
            let n = w.finish().unwrap();
            for h in hosts {
                assert_eq!(
                    is_v4_text(h.as_bytes(), a),
                    h.as_bytes() == &text[..n],
                    "{h:?} against {ip}"
                );
            }
        }
    }

    /// RFC 3261 §16.11: the same Via value and Call-ID give the same hash; a byte changed, or
    /// moved from one to the other, gives another.
    #[test]
    fn branch_hash_is_stable_and_tells_requests_apart() {
        let hash = |parts: &[&[u8]]| {
            let mut h = BranchHash::new();
            for p in parts {
                h.eat(p);
            }
            h.finish()
        };
        let via = &b"SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK00000001"[..];
        let call = &b"pipeline-00000001@10.46.0.6"[..];
        let h = hash(&[via, call]);
        assert_eq!(h, hash(&[via, call]));
        let mut seen = std::collections::HashSet::new();
        seen.insert(h);
        for k in 0..via.len() {
            let mut v = via.to_vec();
            v[k] ^= 1;
            assert!(seen.insert(hash(&[&v, call])), "Via byte {k}");
        }
        for k in 0..call.len() {
            let mut c = call.to_vec();
            c[k] ^= 1;
            assert!(seen.insert(hash(&[via, &c])), "Call-ID byte {k}");
        }
        assert!(seen.insert(hash(&[&via[..via.len() - 1], &[via[via.len() - 1]], call])));
        assert!(seen.insert(hash(&[&b"ab"[..], b"c"])));
        assert!(seen.insert(hash(&[&b"a"[..], b"bc"])));
        assert!(seen.insert(hash(&[&b""[..], b""])));
        assert!(seen.insert(hash(&[&b""[..]])));
    }
}
