//! The rewrites as they were written before the one-pass ones (one splice per edit), kept
//! verbatim from 8a24a3c as the oracles of the differential tests below: the one-pass
//! [`rewrite_register`](super::register::rewrite_register) and
//! [`rewrite_protected_request`](super::relay::rewrite_protected_request), and
//! [`pop_top_via_at`](super::reply::pop_top_via_at), must do what these did.

use super::ProxyIdentity;
use super::register::{Forward, impi_from_impu, strict_digest_params};
use super::relay::{decrement_max_forwards, pop_own_routes};
use crate::sip::branch::Branch;
use crate::sip::edit::{EditError, Editor};
use crate::sip::headers::Via;
use crate::sip::headers::{self, NameAddr};
use crate::sip::lex::{self, ListIter};
use crate::sip::msg::HeaderName;
use crate::sip::msg::Span;
use crate::sip::write::Writer;
use core::net::{IpAddr, SocketAddr};

const MAX_AUTH_PARAMS: usize = 24;

pub(super) fn rewrite_register(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    fw: &Forward,
) -> Result<(), EditError> {
    fix_top_via(ed, fw.source)?;
    // Our Via on top (RFC 3261 §16.6 item 8).
    let mut via = [0u8; 160];
    let mut w = Writer::new(&mut via);
    w.put(b"SIP/2.0/")
        .put(me.via_transport)
        .put(b" ")
        .put(me.via_sent_by)
        .put(b";branch=z9hG4bK")
        .hex64(fw.branch);
    let vlen = w.finish().ok_or(EditError::NoRoom)?;
    let first_via = ed.find(HeaderName::Via, 0).unwrap_or(0);
    ed.insert_header(first_via, HeaderName::Via, &[&via[..vlen]])?;

    decrement_max_forwards(ed)?;
    pop_own_routes(ed, me)?;
    // TS 24.229 §5.2.2.2: the P-CSCF sends the REGISTER to the I-CSCF of the home network it
    // determines itself (the caller chose it). A Route the UE wrote after ours would have the
    // I-CSCF loose-route the REGISTER wherever the UE wants (RFC 3261 §16.4): every remaining
    // UE Route goes, so the UE never steers its registration.
    ed.remove_all(HeaderName::Route)?;
    // sec-agree is hop-by-hop: strip the option tags and the Security-* headers (RFC 3329
    // §2.3.1, TS 24.229 §5.2.2.2).
    ed.remove_list_value(HeaderName::Require, b"sec-agree")?;
    ed.remove_list_value(HeaderName::ProxyRequire, b"sec-agree")?;
    ed.remove_all(HeaderName::SecurityClient)?;
    ed.remove_all(HeaderName::SecurityVerify)?;
    // Values only the network may set: never forward what the UE wrote.
    ed.remove_all(HeaderName::PVisitedNetworkId)?;
    ed.remove_all(HeaderName::PChargingVector)?;
    ed.remove_all(HeaderName::PAssertedIdentity)?;
    if ed.find(HeaderName::Authorization, 0).is_some() {
        set_integrity_protected(ed, fw.protected)?;
    } else {
        add_authorization(ed, fw.protected)?;
    }

    // Appended at the end of the header section, so only the (usually empty) body moves.
    let mut icid = [0u8; 16];
    Writer::new(&mut icid).hex64(fw.icid);
    let mut cl = [0u8; 20];
    let body_len = ed.index().body.len();
    let mut parts: [&[u8]; 16] = [b""; 16];
    let mut n = 0;
    let mut lines = 0;
    for chunk in [
        &[b"Path: <" as &[u8], me.path_uri, b">\r\n"][..],
        &[b"Require: path\r\n"],
        &[b"P-Visited-Network-ID: ", me.visited_network_id, b"\r\n"],
        &[
            b"P-Charging-Vector: icid-value=",
            &icid,
            b";orig-ioi=",
            me.orig_ioi,
            b"\r\n",
        ],
    ] {
        parts[n..n + chunk.len()].copy_from_slice(chunk);
        n += chunk.len();
        lines += 1;
    }
    if ed.find(HeaderName::ContentLength, 0).is_none() {
        let mut w = Writer::new(&mut cl);
        w.dec(body_len as u64);
        let l = w.len();
        parts[n] = b"Content-Length: ";
        parts[n + 1] = &cl[..l];
        parts[n + 2] = b"\r\n";
        n += 3;
        lines += 1;
    }
    let end = ed.index().headers().len();
    ed.insert_lines(end, lines, &parts[..n])
}

fn add_authorization(ed: &mut Editor<'_>, protected: bool) -> Result<(), EditError> {
    let value: &[u8] = if protected { b"\"yes\"" } else { b"\"no\"" };
    let mut line = [0u8; 1024];
    let n = {
        let v = ed.view();
        let to = v
            .header(HeaderName::To)
            .and_then(NameAddr::parse)
            .ok_or(EditError::BadTarget)?;
        let impi = impi_from_impu(to.uri).ok_or(EditError::BadTarget)?;
        let ruri = v.request_uri().ok_or(EditError::BadTarget)?;
        let realm = headers::uri_host(ruri);
        // inside quoted strings: no quote, backslash or control character may come through
        if [ruri, realm].iter().any(|x| {
            x.iter()
                .any(|&b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f)
        }) {
            return Err(EditError::BadTarget);
        }
        let mut w = Writer::new(&mut line);
        w.put(b"Authorization: Digest username=\"")
            .put(impi)
            .put(b"\",realm=\"")
            .put(realm)
            .put(b"\",uri=\"")
            .put(ruri)
            .put(b"\",nonce=\"\",response=\"\",integrity-protected=")
            .put(value)
            .put(b"\r\n");
        w.finish().ok_or(EditError::NoRoom)?
    };
    let end = ed.index().headers().len();
    ed.insert_lines(end, 1, &[&line[..n]])
}

fn set_integrity_protected(ed: &mut Editor<'_>, protected: bool) -> Result<(), EditError> {
    let value: &[u8] = if protected { b"\"yes\"" } else { b"\"no\"" };
    let Some(i) = ed.find(HeaderName::Authorization, 0) else {
        return Ok(());
    };
    // any further Authorization header goes (check_register allows only one)
    while let Some(j) = ed.find(HeaderName::Authorization, i + 1) {
        ed.remove_header(j)?;
    }
    let mut buf = [0u8; 2048];
    let (span, len) = {
        let v = ed.view();
        let h = v.idx.headers()[i];
        let mut params = [(&[][..], &[][..]); MAX_AUTH_PARAMS];
        let n = strict_digest_params(v.bytes(h.value), &mut params).ok_or(EditError::BadTarget)?;
        let mut w = Writer::new(&mut buf);
        w.put(b"Digest ");
        for (name, val) in params[..n]
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case(b"integrity-protected"))
        {
            w.put(name).put(b"=").put(val).put(b", ");
        }
        w.put(b"integrity-protected=").put(value);
        (h.value, w.finish().ok_or(EditError::NoRoom)?)
    };
    ed.replace_in_header(i, span, &[&buf[..len]])
}

fn fix_top_via(ed: &mut Editor<'_>, src: SocketAddr) -> Result<(), EditError> {
    let Some(i) = ed.find(HeaderName::Via, 0) else {
        return Ok(());
    };
    let mut ip = [0u8; 48];
    let mut w = Writer::new(&mut ip);
    write_ip(&mut w, src.ip());
    let iplen = w.finish().ok_or(EditError::NoRoom)?;
    let ip = &ip[..iplen];
    let mut out = [0u8; 1024];
    let (item_span, len) = {
        let v = ed.view();
        let h = v.idx.headers()[i];
        let Some(item) = ListIter::new(v.bytes(h.value)).next() else {
            return Ok(());
        };
        let Some(via) = Via::parse(item) else {
            return Ok(());
        };
        let mut w = Writer::new(&mut out);
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
            return Ok(());
        }
        (Span::of(v.buf, item), w.finish().ok_or(EditError::NoRoom)?)
    };
    ed.replace_in_header(i, item_span, &[&out[..len]])
}

fn host_is_ip(host: &[u8], ip_text: &[u8], ip: IpAddr) -> bool {
    let h = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    h == ip_text
        || (ip.is_ipv6()
            && core::str::from_utf8(h)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
                == Some(ip))
}

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

pub(super) fn forward_request(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    source: SocketAddr,
    branch: &Branch,
) -> Result<(), EditError> {
    fix_top_via(ed, source)?;
    let mut via = [0u8; 160];
    let mut w = Writer::new(&mut via);
    w.put(b"SIP/2.0/")
        .put(me.via_transport)
        .put(b" ")
        .put(me.via_sent_by)
        .put(b";branch=");
    branch.write(&mut w);
    let vlen = w.finish().ok_or(EditError::NoRoom)?;
    let first_via = ed.find(HeaderName::Via, 0).unwrap_or(0);
    ed.insert_header(first_via, HeaderName::Via, &[&via[..vlen]])?;
    decrement_max_forwards(ed)
}

pub(super) fn pop_top_via(ed: &mut Editor<'_>) -> Result<(), EditError> {
    let Some(i) = ed.find(HeaderName::Via, 0) else {
        return Err(EditError::BadTarget);
    };
    let item = {
        let v = ed.view();
        let h = v.idx.headers()[i];
        ListIter::new(v.bytes(h.value))
            .next()
            .map(|x| Span::of(v.buf, x))
            .ok_or(EditError::BadTarget)?
    };
    ed.remove_item(i, item, b',', true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::msg::Message;
    use crate::sip::own::OwnUris;
    use proptest::prelude::*;

    const SEEDS: &[&[u8]] = &[
        include_bytes!("../../../tests/data/ims/register1_v4.sip"),
        include_bytes!("../../../tests/data/ims/register1_v6.sip"),
        include_bytes!("../../../tests/data/ims/register2_v4.sip"),
        include_bytes!("../../../tests/data/ims/register1_compact.sip"),
        include_bytes!("../../../tests/data/ims/phones/auth_empty_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/contact_features_v6.sip"),
        include_bytes!("../../../tests/data/ims/phones/expires_header_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/large_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/no_auth_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/route_fqdn_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/route_ip_v6.sip"),
        include_bytes!("../../../tests/data/ims/phones/rport_v4.sip"),
        include_bytes!("../../../tests/data/ims/phones/sec_client_multi_headers_v6.sip"),
        include_bytes!("../../../tests/data/ims/phones/supported_require_v4.sip"),
    ];

    /// Lines a REGISTER may gain, for the shapes the rewrite treats apart.
    const EXTRA: &[&str] = &[
        "Require: sec-agree",
        "Require: Sec-Agree , path",
        "Require: path, sec-agree",
        "Require: sec-agree,sec-agree",
        "Require: , sec-agree",
        "Proxy-Require: sec-agree, other",
        "Proxy-Require: SEC-AGREE",
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>, <sip:evil@10.0.0.9;lr>",
        "Route: <sip:orig@scscf.example;lr>",
        "Max-Forwards: 0",
        "Max-Forwards: 69",
        "Via: ",
        "v: SIP/2.0/UDP 10.46.0.6:5060;branch=z9hG4bKz;rport, SIP/2.0/UDP h;branch=z9hG4bKy",
        "Authorization: Digest username=\"a@b\", realm=\"b\", nonce=\"\", uri=\"sip:b\", response=\"\", integrity-protected=\"yes\"",
        "Authorization: Digest username=\"a@b\";realm=\"b\"",
        "Security-Verify: ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4",
        "P-Charging-Vector: icid-value=forged",
        "P-Visited-Network-ID: forged",
        "P-Asserted-Identity: <sip:mallory@evil>",
        "Subject: folded\r\n  line",
    ];

    fn soup() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::sample::select(SEEDS.to_vec()),
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    0u8..4,
                    prop::sample::select(EXTRA.to_vec()),
                ),
                0..6,
            ),
        )
            .prop_map(|(seed, edits)| {
                let text = String::from_utf8_lossy(seed).replace("\r\n", "\n");
                let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
                let mut lines: Vec<String> = head.lines().map(str::to_owned).collect();
                for (at, op, extra) in edits {
                    if lines.len() < 2 {
                        break;
                    }
                    let i = 1 + at.index(lines.len() - 1);
                    match op {
                        0 => {
                            lines.remove(i);
                        }
                        1 => {
                            let l = lines[i].clone();
                            lines.insert(i, l);
                        }
                        _ => lines.insert(i, extra.replace("\r\n", "\n")),
                    }
                }
                let mut out = lines.join("\n").replace('\n', "\r\n");
                out.push_str("\r\n\r\n");
                out.push_str(&body.replace('\n', "\r\n"));
                out.into_bytes()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        /// The one-pass REGISTER rewrite writes what the splices wrote, and an index a fresh
        /// parse agrees with.
        #[test]
        fn one_pass_register_rewrite_matches_the_splices(
            msg in soup(),
            head in 0usize..300,
            tail in 0usize..600,
            protected in any::<bool>(),
            v6 in any::<bool>(),
        ) {
            let own = OwnUris::new(&["pcscf.ims.mnc001.mcc001.3gppnetwork.org"], &[], &[5060], Some(5100..=5199));
            let me = ProxyIdentity {
                via_sent_by: b"10.0.1.10:5060",
                via_transport: b"UDP",
                path_uri: b"sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr",
                own: &own,
                visited_network_id: b"\"Visited Network\"",
                orig_ioi: b"ims.mnc001.mcc001.3gppnetwork.org",
            };
            let source = if v6 { "[2001:db8::6]:5060" } else { "10.46.0.6:5071" };
            let fw = Forward { source: source.parse().unwrap(), protected, branch: 0x1234_5678_9abc_def0, icid: 7 };
            let frame = |m: &[u8]| {
                let mut f = vec![0u8; head + m.len() + tail];
                f[head..head + m.len()].copy_from_slice(m);
                f
            };
            let (mut a, mut b) = (frame(&msg), frame(&msg));
            let Ok(mut old) = Editor::new(&mut a, head, head + msg.len()) else {
                prop_assert!(false, "seed soup does not parse: {}", String::from_utf8_lossy(&msg));
                return Ok(());
            };
            let mut new = Editor::new(&mut b, head, head + msg.len()).unwrap();
            let by_splices = rewrite_register(&mut old, &me, &fw);
            let mut scratch = vec![0u8; super::super::register::REWRITE_SCRATCH];
            let in_one_pass = super::super::register::rewrite_register(&mut new, &me, &fw, &mut scratch);
            match (&by_splices, &in_one_pass) {
                (Ok(()), Ok(())) => prop_assert_eq!(
                    String::from_utf8_lossy(new.as_bytes()),
                    String::from_utf8_lossy(old.as_bytes())
                ),
                (Err(EditError::NoRoom), Ok(())) | (Ok(()), Err(EditError::NoRoom)) => {}
                (Err(x), Err(y)) => prop_assert!(
                    x == y || *x == EditError::NoRoom || *y == EditError::NoRoom,
                    "{x:?} / {y:?}"
                ),
                _ => prop_assert!(false, "{by_splices:?} / {in_one_pass:?}"),
            }
            if in_one_pass.is_ok() {
                let out = new.as_bytes().to_vec();
                let m = Message::parse(&out).unwrap();
                let base = new.index().msg_start;
                let kept: Vec<_> = new.index().headers().iter().map(|h| {
                    (h.name, h.line.start - base, h.line.end - base, h.name_end - base, h.value.start - base, h.value.end - base)
                }).collect();
                let fresh: Vec<_> = m.idx.headers().iter().map(|h| {
                    (h.name, h.line.start, h.line.end, h.name_end, h.value.start, h.value.end)
                }).collect();
                prop_assert_eq!(kept, fresh);
            }
        }
    }

    const MESSAGE: &[u8] = include_bytes!("../../../tests/data/ims/message_v4.sip");

    fn identity(own: &OwnUris) -> ProxyIdentity<'_> {
        ProxyIdentity {
            via_sent_by: b"10.0.1.10:5060",
            via_transport: b"UDP",
            path_uri: b"sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr",
            own,
            visited_network_id: b"\"Visited Network\"",
            orig_ioi: b"ims.mnc001.mcc001.3gppnetwork.org",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        /// The protected request's one-pass rewrite writes what forward_request, the removals
        /// and the appended lines wrote, splice by splice, as they were (8a24a3c).
        #[test]
        fn one_pass_protected_rewrite_matches_the_splices(
            msg in prop_oneof![soup(), Just(MESSAGE.to_vec())],
            head in 0usize..300,
            tail in 0usize..600,
            v6 in any::<bool>(),
        ) {
            let own = OwnUris::new(&["pcscf.ims.mnc001.mcc001.3gppnetwork.org"], &[], &[5060], Some(5100..=5199));
            let me = identity(&own);
            let source: SocketAddr = if v6 { "[2001:db8::6]:7005" } else { "10.46.0.6:7005" }.parse().unwrap();
            let key = crate::sip::branch::BranchKey::new(&[7; 32]);
            let ue = source.ip();
            let branch = key.seal(crate::sip::branch::Dir::ToCore, 0, 4097, 7005, 42, ue, ue);
            let (route, pai, icid) = (&b"<sip:orig@scscf.example;lr>"[..], &b"<sip:a@example>"[..], &b"00ff"[..]);
            let frame = |m: &[u8]| {
                let mut f = vec![0u8; head + m.len() + tail];
                f[head..head + m.len()].copy_from_slice(m);
                f
            };
            let (mut a, mut b) = (frame(&msg), frame(&msg));
            let Ok(mut old) = Editor::new(&mut a, head, head + msg.len()) else {
                return Ok(());
            };
            let mut new = Editor::new(&mut b, head, head + msg.len()).unwrap();
            let by_splices = (|| {
                forward_request(&mut old, &me, source, &branch)?;
                old.remove_all(HeaderName::PPreferredIdentity)?;
                old.remove_all(HeaderName::PAssertedIdentity)?;
                old.remove_all(HeaderName::Route)?;
                old.remove_all(HeaderName::PChargingVector)?;
                old.remove_all(HeaderName::PChargingFunctionAddresses)?;
                let end = old.index().headers().len();
                old.insert_lines(end, 3, &[
                    b"Route: ", route, b"\r\nP-Asserted-Identity: ", pai,
                    b"\r\nP-Charging-Vector: icid-value=", icid, b"\r\n",
                ])
            })();
            let top = super::super::reply::TopVia::of(new.view());
            let mut scratch = vec![0u8; 4096];
            let in_one_pass = super::super::relay::rewrite_protected_request(
                &mut new, &me, source, &branch, pai, route, icid, top.as_ref(), &mut scratch,
            );
            match (&by_splices, &in_one_pass) {
                (Ok(()), Ok(())) => prop_assert_eq!(
                    String::from_utf8_lossy(new.as_bytes()),
                    String::from_utf8_lossy(old.as_bytes())
                ),
                // where room or the header count runs out the two may part: the splices count
                // every intermediate state, the one pass only the result
                (Err(EditError::NoRoom | EditError::TooManyHeaders), Ok(()))
                | (Ok(()), Err(EditError::NoRoom)) => {}
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "{by_splices:?} / {in_one_pass:?}"),
            }
        }

        /// Popping the top Via found once does what popping the first Via line's first value
        /// did, whatever Via lines a response carries.
        #[test]
        fn pop_at_the_top_via_matches_the_old_pop(
            vias in prop::collection::vec(prop::sample::select(vec![
                "Via: \r\n",
                "Via: ,\r\n",
                "Via: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bKa\r\n",
                "Via: SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bKa , SIP/2.0/UDP 10.46.0.6:7005;rport\r\n",
                "v: SIP/2.0/UDP [2001:db8::6];branch=z9hG4bKb\r\n",
                "Via: SIP/2.0/UDP\r\n",
            ]), 0..4),
        ) {
            let mut m = b"SIP/2.0 200 OK\r\n".to_vec();
            for v in &vias {
                m.extend_from_slice(v.as_bytes());
            }
            m.extend_from_slice(b"Call-ID: x\r\nContent-Length: 0\r\n\r\n");
            let (mut a, mut b) = (m.clone(), m.clone());
            let n = m.len();
            let mut old = Editor::new(&mut a, 0, n).unwrap();
            let mut new = Editor::new(&mut b, 0, n).unwrap();
            let before = pop_top_via(&mut old);
            let after = match super::super::reply::TopVia::of(new.view()) {
                Some(top) => super::super::reply::pop_top_via_at(&mut new, &top),
                // no parseable top value: the pipeline drops the response before popping
                None => return Ok(()),
            };
            prop_assert_eq!(before, after);
            prop_assert_eq!(old.as_bytes(), new.as_bytes());
        }
    }
}
