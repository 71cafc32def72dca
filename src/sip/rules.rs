//! The P-CSCF's SIP rules for the IMS registration flow (TS 24.229 §5.2.2, TS 33.203 §7,
//! RFC 3329, RFC 3327, RFC 3581), as checks and in-place rewrites.
//!
//! Owns: the checks on a REGISTER from the UE (and the SIP error each failure yields), the
//! REGISTER rewrite toward the I-CSCF, the 401 and 200 rewrites toward the UE, the
//! Security-Verify / Security-Client comparison of the protected REGISTER, and building the
//! error responses. It knows nothing of sockets, SAs or time: the caller passes in the UE's
//! source address, our identity, the branch and ICID values, and the Security-Server text.

use core::net::{IpAddr, SocketAddr};

use super::branch::Branch;
use super::edit::{EditError, Editor};
use super::headers::{self, Digest, IpsecOffer, NameAddr, Via};
use super::lex::{self, ListIter, parse_u64};
use super::msg::{HeaderName, Span, View};
use super::own::OwnUris;
use super::write::Writer;
use crate::esp::{EncAlg, IntegAlg};

/// Who we are, as written into forwarded messages. Built once from configuration.
#[derive(Clone, Copy, Debug)]
pub struct ProxyIdentity<'a> {
    /// Core-side Via sent-by, `host[:port]`.
    pub via_sent_by: &'a [u8],
    /// Core-side Via transport token, e.g. `UDP`.
    pub via_transport: &'a [u8],
    /// The URI we put in Path (RFC 3327), without the angle brackets, e.g.
    /// `sip:term@pcscf.ims.example.net:5060;lr`.
    pub path_uri: &'a [u8],
    /// What names us in a Route or Request-URI (addresses, hostnames, ports).
    pub own: &'a OwnUris,
    /// P-Visited-Network-ID value (RFC 7315 §4.3), token or quoted string as written.
    pub visited_network_id: &'a [u8],
    /// orig-ioi for P-Charging-Vector (type 1 IOI naming our network).
    pub orig_ioi: &'a [u8],
}

/// A SIP error to answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub code: u16,
    pub reason: &'static str,
    /// Why, for logs and counters.
    pub why: RejectWhy,
}

/// The reason behind a [`Reject`], one per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectWhy {
    NotRegister,
    TooManyHops,
    /// Proxy-Require names an option we do not support (RFC 3261 §16.3 item 4); the 420 lists
    /// them in Unsupported.
    UnsupportedProxyRequire,
    NoSecurityClient,
    /// Security-Client present but `sec-agree` not in Require and Proxy-Require (RFC 3329 §2.3.1).
    SecAgreeNotRequired,
    NoAcceptableMechanism,
    NoAuthorization,
    SecurityVerifyMismatch,
    SecurityClientMismatch,
    /// The Via of a protected request does not name the UE the SA belongs to.
    ViaMismatch,
    /// The next hop (the I-CSCF of the home domain) could not be found.
    NoNextHop,
    /// Too many REGISTER transactions in progress (a flood, or a core that stopped answering).
    Overloaded,
    /// A protected REGISTER names another IMPI than its SA set was created for.
    ImpiMismatch,
    /// The Request-URI names a domain we do not serve, or an IP address.
    UnknownHomeDomain,
    /// The IMPI already has as many challenges in progress as we allow.
    TooManyChallenges,
    Malformed,
}

impl Reject {
    const fn new(code: u16, reason: &'static str, why: RejectWhy) -> Reject {
        Reject { code, reason, why }
    }
}

/// What the registration thread needs from a REGISTER that passed the checks. Slices point into
/// the message buffer: copy them before rewriting.
#[derive(Clone, Copy, Debug)]
pub struct RegisterInfo<'a> {
    /// Authorization username: the private identity (TS 24.229 §5.1.1.2.1).
    pub impi: &'a [u8],
    /// The public identity being registered (To URI).
    pub impu: &'a [u8],
    /// Request-URI host: the home domain to resolve toward the I-CSCF.
    pub home_domain: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u64,
    /// The offer we chose from Security-Client, and its text.
    pub offer: IpsecOffer,
    pub offer_raw: &'a [u8],
    /// Expires header or the first Contact's expires parameter, if any.
    pub expires: Option<u32>,
    /// The first Contact URI.
    pub contact_uri: Option<&'a [u8]>,
}

/// Checks of TS 24.229 §5.2.2.2 / TS 33.203 §7.1 / RFC 3329 §2.3.1 on a REGISTER from the UE,
/// and choice of the mechanism: the first (alg, ealg) of `prefs` that the UE offers.
pub fn check_register<'a>(
    v: View<'a>,
    prefs: &[(IntegAlg, EncAlg)],
) -> Result<RegisterInfo<'a>, Reject> {
    let malformed = Reject::new(400, "Bad Request", RejectWhy::Malformed);
    if !v.is_method(b"REGISTER") {
        return Err(Reject::new(
            405,
            "Method Not Allowed",
            RejectWhy::NotRegister,
        ));
    }
    // RFC 3261 §16.3 item 3.
    if v.header(HeaderName::MaxForwards)
        .and_then(|m| parse_u64(m, 10))
        == Some(0)
    {
        return Err(Reject::new(483, "Too Many Hops", RejectWhy::TooManyHops));
    }
    // RFC 3261 §16.3 item 4: we support no Proxy-Require option other than sec-agree.
    if v.values(HeaderName::ProxyRequire)
        .any(|t| !t.eq_ignore_ascii_case(b"sec-agree"))
    {
        return Err(Reject::new(
            420,
            "Bad Extension",
            RejectWhy::UnsupportedProxyRequire,
        ));
    }
    // RFC 3329 §2.3.1 / TS 24.229 §5.2.2.2: IMS AKA needs an ipsec-3gpp Security-Client.
    let has_ipsec = v
        .headers(HeaderName::SecurityClient)
        .flat_map(|h| headers::mechanisms(v.bytes(h.value)))
        .any(|m| m.is_ipsec_3gpp());
    if !has_ipsec {
        return Err(Reject::new(
            494,
            "Security Agreement Required",
            RejectWhy::NoSecurityClient,
        ));
    }
    let in_require = v
        .values(HeaderName::Require)
        .any(|t| t.eq_ignore_ascii_case(b"sec-agree"));
    let in_proxy_require = v
        .values(HeaderName::ProxyRequire)
        .any(|t| t.eq_ignore_ascii_case(b"sec-agree"));
    if !in_require || !in_proxy_require {
        return Err(Reject::new(
            421,
            "Extension Required",
            RejectWhy::SecAgreeNotRequired,
        ));
    }
    // TS 24.229 §5.1.1.2.1: the REGISTER carries one Authorization with username = IMPI. We
    // forward it rebuilt (set_integrity_protected), so it must be one strictly well-formed
    // Digest value: a second Authorization, or one we cannot read exactly, is refused rather
    // than passed on with a forged integrity-protected somewhere in it.
    let to = v
        .header(HeaderName::To)
        .and_then(NameAddr::parse)
        .ok_or(malformed)?;
    let forbidden = Reject::new(403, "Forbidden", RejectWhy::NoAuthorization);
    let mut auths = v.headers(HeaderName::Authorization);
    let impi = match auths.next() {
        Some(auth) => {
            if auths.next().is_some() {
                return Err(malformed);
            }
            let mut params = [(&[][..], &[][..]); MAX_AUTH_PARAMS];
            if strict_digest_params(v.bytes(auth.value), &mut params).is_none() {
                return Err(malformed);
            }
            Digest::parse(v.bytes(auth.value))
                .and_then(|d| d.username())
                .filter(|u| !u.is_empty())
                .ok_or(forbidden)?
        }
        // No Authorization (phones send it, TS 24.229 §5.1.1.2.2, but not all do): the IMPI is
        // derived from the IMPU being registered, as the UE itself derives its temporary
        // identities (TS 23.003 §13.3/§13.4B: IMPI `<user>@<domain>`, temporary IMPU
        // `sip:<user>@<domain>`; [spec-m]): `sip:user@domain` → `user@domain`. A tel: URI, a
        // URI without a user part or with an IP host names no IMPI: 403. The REGISTER forwarded
        // carries an Authorization we write with that username ([`rewrite_register`]).
        None => impi_from_impu(to.uri).ok_or(forbidden)?,
    };
    let (offer_raw, offer) = choose_offer(v, prefs).ok_or(Reject::new(
        494,
        "Security Agreement Required",
        RejectWhy::NoAcceptableMechanism,
    ))?;
    let home_domain = headers::uri_host(v.request_uri().unwrap_or_default());
    let call_id = v.header(HeaderName::CallId).ok_or(malformed)?;
    let cseq = v
        .header(HeaderName::CSeq)
        .and_then(headers::cseq)
        .ok_or(malformed)?
        .0;
    let contact = v.values(HeaderName::Contact).find_map(NameAddr::parse);
    let expires = v
        .header(HeaderName::Expires)
        .and_then(|e| parse_u64(e, 10))
        .map(|e| e.min(u32::MAX as u64) as u32)
        .or_else(|| contact.and_then(|c| c.expires()));
    Ok(RegisterInfo {
        impi,
        impu: to.uri,
        home_domain,
        call_id,
        cseq,
        offer,
        offer_raw,
        expires,
        contact_uri: contact.map(|c| c.uri),
    })
}

/// Parse every ipsec-3gpp offer once, then take the first of our preferences the UE offers.
fn choose_offer<'a>(v: View<'a>, prefs: &[(IntegAlg, EncAlg)]) -> Option<(&'a [u8], IpsecOffer)> {
    const MAX_OFFERS: usize = 16;
    let mut offers: [Option<(&[u8], IpsecOffer)>; MAX_OFFERS] = [None; MAX_OFFERS];
    let mechs = v
        .headers(HeaderName::SecurityClient)
        .flat_map(|h| headers::mechanisms(v.bytes(h.value)))
        .filter_map(|m| m.ipsec().ok().map(|o| (m.raw, o)));
    for (slot, o) in offers.iter_mut().zip(mechs) {
        *slot = Some(o);
    }
    prefs.iter().find_map(|&(alg, ealg)| {
        offers
            .iter()
            .flatten()
            .find(|(_, o)| o.alg == alg && o.ealg == ealg)
            .copied()
    })
}

/// The IMPI a UE without Authorization registers as: `sip:user@domain` (or `sips:`, any case)
/// → `user@domain`, a slice of `impu`. The user part is RFC 3261 `unreserved` / escaped / a few
/// user-unreserved characters (no `;`, `?`, `:`, quotes); the host a domain name (no IP
/// literal, no port or parameters kept). Anything else, a tel: URI included, is `None`.
pub fn impi_from_impu(impu: &[u8]) -> Option<&[u8]> {
    let colon = impu.iter().position(|&b| b == b':')?;
    let scheme = &impu[..colon];
    if !scheme.eq_ignore_ascii_case(b"sip") && !scheme.eq_ignore_ascii_case(b"sips") {
        return None;
    }
    let rest = &impu[colon + 1..];
    let at = rest.iter().position(|&b| b == b'@')?;
    let user = &rest[..at];
    let host_end = rest[at + 1..]
        .iter()
        .position(|&b| matches!(b, b':' | b';' | b'?'))
        .map_or(rest.len(), |p| at + 1 + p);
    let host = &rest[at + 1..host_end];
    let user_ok = !user.is_empty()
        && user.len() <= 128
        && user
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.!~*'()%&=+$,/".contains(&b));
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && host.iter().any(|b| b.is_ascii_alphabetic());
    (user_ok && host_ok).then_some(&rest[..host_end])
}

/// Compare a stored mechanism list with the `name` headers of `v`, as sets of parameter sets
/// (RFC 3329 §2.3.1): same count, and each stored mechanism listed.
fn same_mechanisms(stored: &[u8], v: View<'_>, name: HeaderName) -> bool {
    let theirs = || {
        v.headers(name)
            .flat_map(move |h| headers::mechanisms(v.bytes(h.value)))
    };
    // theirs parsed once (a UE offers a handful); more than fit: compare the slow way
    const MAX: usize = 8;
    let mut parsed: [Option<headers::ParamSet<'_>>; MAX] = [None; MAX];
    let mut n = 0;
    for m in theirs() {
        match (parsed.get_mut(n), headers::ParamSet::of(&m)) {
            (Some(slot), Some(p)) => *slot = Some(p),
            _ => return same_mechanisms_slow(stored, v, name),
        }
        n += 1;
    }
    let mut count = 0;
    for m in headers::mechanisms(stored) {
        count += 1;
        let Some(mine) = headers::ParamSet::of(&m) else {
            return same_mechanisms_slow(stored, v, name);
        };
        if !parsed[..n].iter().flatten().any(|t| t.same_as(&mine)) {
            return false;
        }
    }
    count > 0 && count == n
}

fn same_mechanisms_slow(stored: &[u8], v: View<'_>, name: HeaderName) -> bool {
    let theirs = || {
        v.headers(name)
            .flat_map(move |h| headers::mechanisms(v.bytes(h.value)))
    };
    let mut count = 0;
    for m in headers::mechanisms(stored) {
        count += 1;
        if !theirs().any(|x| x.same_as(&m)) {
            return false;
        }
    }
    count > 0 && count == theirs().count()
}

/// TS 33.203 §7.2 / RFC 3329 §2.3.1 on the protected REGISTER: Security-Verify must list exactly
/// the Security-Server we sent, and Security-Client must equal the first REGISTER's.
pub fn check_protected_register(
    v: View<'_>,
    sent_server: &[u8],
    first_client: &[u8],
) -> Result<(), Reject> {
    if !same_mechanisms(sent_server, v, HeaderName::SecurityVerify) {
        return Err(Reject::new(
            494,
            "Security Agreement Required",
            RejectWhy::SecurityVerifyMismatch,
        ));
    }
    if !same_mechanisms(first_client, v, HeaderName::SecurityClient) {
        return Err(Reject::new(
            494,
            "Security Agreement Required",
            RejectWhy::SecurityClientMismatch,
        ));
    }
    Ok(())
}

/// Copy every Security-Client value, joined with ", ", into `out` (what the registration thread
/// keeps to compare with the protected REGISTER). `None` if it does not fit.
pub fn copy_security_client(v: View<'_>, out: &mut [u8]) -> Option<usize> {
    let mut w = Writer::new(out);
    for (n, h) in v.headers(HeaderName::SecurityClient).enumerate() {
        if n > 0 {
            w.put(b", ");
        }
        w.put(v.bytes(h.value));
    }
    w.finish()
}

/// Our Security-Server value for a 401 (RFC 3329 §2.2, TS 33.203 Annex H), in the parameter
/// order Kamailio uses. SPIs are written unsigned.
#[allow(clippy::too_many_arguments)]
pub fn write_security_server(
    out: &mut [u8],
    alg: IntegAlg,
    ealg: EncAlg,
    spi_c: u32,
    spi_s: u32,
    port_c: u16,
    port_s: u16,
) -> Option<usize> {
    let mut w = Writer::new(out);
    w.put(b"ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=")
        .dec(spi_c as u64)
        .put(b";spi-s=")
        .dec(spi_s as u64)
        .put(b";port-c=")
        .dec(port_c as u64)
        .put(b";port-s=")
        .dec(port_s as u64)
        .put(b";alg=")
        .put(alg.token().as_bytes())
        .put(b";ealg=")
        .put(ealg.token().as_bytes());
    w.finish()
}

/// Values the caller supplies per forwarded request.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    /// Where the request came from (for received / rport, RFC 3261 §18.2.1, RFC 3581 §4).
    pub source: SocketAddr,
    /// Whether it came over an IPsec SA: sets integrity-protected (TS 24.229 §7.2A.2).
    pub protected: bool,
    /// Makes our branch unique (RFC 3261 §16.6 item 8).
    pub branch: u64,
    /// Makes the icid-value globally unique (RFC 7315 §4.6).
    pub icid: u64,
}

/// Rewrite a checked REGISTER from the UE into the REGISTER toward the I-CSCF
/// (TS 24.229 §5.2.2.2; spec digest §1.2 and §1.4).
pub fn rewrite_register(
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

/// A REGISTER without Authorization ([`check_register`] derived its IMPI from To): the core
/// gets one as a conforming UE writes it on its first REGISTER (TS 24.229 §5.1.1.2.2: username =
/// IMPI, realm = the home domain, uri = the Request-URI, empty nonce and response) with our
/// integrity-protected (TS 24.229 §5.2.2.2, §7.2A.2), so the S-CSCF runs IMS AKA as for any
/// phone.
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

/// Whether a Via sent-by host is the source address: textual match first (cheap), parsing only
/// for IPv6, whose text forms vary.
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

/// RFC 3261 §16.6 item 3: decrement Max-Forwards, or add it with 70.
fn decrement_max_forwards(ed: &mut Editor<'_>) -> Result<(), EditError> {
    match ed.find(HeaderName::MaxForwards, 0) {
        Some(i) => {
            let h = ed.header(i).ok_or(EditError::BadTarget)?;
            let cur = parse_u64(ed.view().bytes(h.value), 10).unwrap_or(70);
            let mut tmp = [0u8; 4];
            let mut w = Writer::new(&mut tmp);
            w.dec(cur.saturating_sub(1).min(255));
            let l = w.len();
            ed.replace_in_header(i, h.value, &[&tmp[..l]])
        }
        None => ed.push_header(HeaderName::MaxForwards, &[b"70"]),
    }
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

/// Most auth-params a REGISTER's credentials may carry (RFC 2617 §3.2.2 defines about ten).
const MAX_AUTH_PARAMS: usize = 24;

/// RFC 2617 §3.2.2 / RFC 3261 §25.1, strictly: `Digest` LWS auth-param *( "," auth-param ),
/// auth-param = token "=" ( token / quoted-string ). Anything else (a missing comma, `;`, an
/// unterminated quote, a bare token, trailing bytes) is `None`: what we forward is rebuilt from
/// these pairs, so a shape we cannot read must not reach the core.
pub fn strict_digest_params<'a>(
    value: &'a [u8],
    out: &mut [(&'a [u8], &'a [u8]); MAX_AUTH_PARAMS],
) -> Option<usize> {
    let d = Digest::parse(value)?;
    let s = d.params;
    let mut i = 0;
    let mut n = 0;
    let skip_ws = |i: &mut usize| {
        while *i < s.len() && lex::is_ws(s[*i]) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        let start = i;
        while i < s.len() && lex::is_token_char(s[i]) {
            i += 1;
        }
        let name = &s[start..i];
        if name.is_empty() {
            return None;
        }
        skip_ws(&mut i);
        if s.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let vstart = i;
        if s.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match s.get(i)? {
                    b'"' => break,
                    b'\\' => i += 2,
                    b'\r' | b'\n' => return None,
                    _ => i += 1,
                }
            }
            i += 1;
        } else {
            while i < s.len() && lex::is_token_char(s[i]) {
                i += 1;
            }
            if i == vstart {
                return None;
            }
        }
        let slot = out.get_mut(n)?;
        *slot = (name, &s[vstart..i]);
        n += 1;
        skip_ws(&mut i);
        match s.get(i) {
            None => return Some(n),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// TS 24.229 §5.2.2.2: the REGISTER toward the core carries exactly one Authorization, ours:
/// rebuilt from the strictly parsed parameters of the UE's single Digest credentials, without
/// any integrity-protected the UE wrote, with ours appended (TS 24.229 §7.2A.2).
/// [`check_register`] refused every shape this cannot rebuild.
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

/// CK and IK taken from a 401 (TS 24.229 §7.2A.1). Not `Copy`, and wiped on drop, so no
/// stray copy of the keys outlives its use.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct AkaKeys {
    pub ck: [u8; 16],
    pub ik: [u8; 16],
}

impl core::fmt::Debug for AkaKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("AkaKeys { .. }")
    }
}

/// Whether a 401 carries IMS AKA keys (ck and ik in a WWW-Authenticate, TS 24.229 §7.2A.1):
/// only then does the registration thread reserve SPIs for it.
pub fn has_aka_keys(v: View<'_>) -> bool {
    v.headers(HeaderName::WwwAuthenticate)
        .filter_map(|h| Digest::parse(v.bytes(h.value)))
        .any(|d| d.ck().is_some_and(|c| c.len() == 32) && d.ik().is_some_and(|i| i.len() == 32))
}

/// Rewrite the 401 from the S-CSCF for the UE (TS 24.229 §5.2.2.2; spec digest §1.3): our Via
/// removed; ck and ik taken out of every WWW-Authenticate and handed back; Security-Server
/// (and `Supported: sec-agree`) added. `Ok(None)` when the challenge is not IMS AKA (no ck/ik):
/// then only the Via is removed and no Security-Server is added.
pub fn rewrite_401(
    ed: &mut Editor<'_>,
    security_server: &[u8],
) -> Result<Option<AkaKeys>, EditError> {
    pop_top_via(ed)?;
    let mut keys: Option<AkaKeys> = None;
    let mut from = 0;
    while let Some(i) = ed.find(HeaderName::WwwAuthenticate, from) {
        from = i + 1;
        if keys.is_none() {
            let v = ed.view();
            let h = v.idx.headers()[i];
            if let Some(d) = Digest::parse(v.bytes(h.value))
                && let (Some(ck), Some(ik)) = (d.ck(), d.ik())
            {
                // decoded straight into the wiped-on-drop keys: no bare copy on the stack
                let mut k = AkaKeys {
                    ck: [0; 16],
                    ik: [0; 16],
                };
                let hex = crate::aka::hex_decode;
                if ck.len() == 32
                    && ik.len() == 32
                    && hex(ck, &mut k.ck).is_ok()
                    && hex(ik, &mut k.ik).is_ok()
                {
                    keys = Some(k);
                }
            }
        }
        // CK and IK must never reach the UE: strip them from every challenge.
        loop {
            let found = {
                let v = ed.view();
                let h = v.idx.headers()[i];
                Digest::parse(v.bytes(h.value)).and_then(|d| {
                    d.items()
                        .find(|p| {
                            p.name.eq_ignore_ascii_case(b"ck") || p.name.eq_ignore_ascii_case(b"ik")
                        })
                        .map(|p| Span::of(v.buf, p.raw))
                })
            };
            match found {
                Some(item) => ed.remove_item(i, item, b',', false)?,
                None => break,
            }
        }
    }
    if keys.is_some() {
        let has_sec_agree = ed
            .view()
            .values(HeaderName::Supported)
            .any(|t| t.eq_ignore_ascii_case(b"sec-agree"));
        let end = ed.index().headers().len();
        if has_sec_agree {
            ed.insert_lines(end, 1, &[b"Security-Server: ", security_server, b"\r\n"])?;
        } else {
            ed.insert_lines(
                end,
                2,
                &[
                    b"Security-Server: ",
                    security_server,
                    b"\r\nSupported: sec-agree\r\n",
                ],
            )?;
        }
    }
    Ok(keys)
}

/// How many Via values a message carries (header lines and comma-separated values alike).
pub fn via_count(v: View<'_>) -> usize {
    v.values(HeaderName::Via)
        .map(|h| ListIter::new(h).count())
        .sum()
}

/// Remove the topmost Via value (ours) from a response (RFC 3261 §16.7 item 3).
pub fn pop_top_via(ed: &mut Editor<'_>) -> Result<(), EditError> {
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

/// Up to this many Service-Route / P-Associated-URI entries are reported; more are ignored.
pub const MAX_ROUTES: usize = 8;

/// A short list of spans into the message buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanList {
    items: [Span; MAX_ROUTES],
    len: usize,
}

impl SpanList {
    fn push(&mut self, s: Span) {
        if self.len < MAX_ROUTES {
            self.items[self.len] = s;
            self.len += 1;
        }
    }
    pub fn as_slice(&self) -> &[Span] {
        &self.items[..self.len]
    }
}

/// What a 200 to REGISTER tells the registration thread (TS 24.229 §5.2.2.2).
/// Spans are URIs (inside the angle brackets) in the rewritten message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registered {
    /// Granted expiry: the matching Contact's expires, else Expires; 0 means de-registered.
    pub expires: Option<u32>,
    pub service_route: SpanList,
    pub associated_uris: SpanList,
}

/// Rewrite the 200 to REGISTER for the UE: our Via removed; Service-Route, P-Associated-URI and
/// the granted expiry reported. `ue_contact` picks the Contact whose expires counts.
pub fn rewrite_200(
    ed: &mut Editor<'_>,
    ue_contact: Option<&[u8]>,
) -> Result<Registered, EditError> {
    pop_top_via(ed)?;
    let v = ed.view();
    let mut out = Registered::default();
    let contacts = || v.values(HeaderName::Contact).filter_map(NameAddr::parse);
    let contact_expires = match ue_contact {
        Some(u) => contacts().find(|c| c.uri == u).and_then(|c| c.expires()),
        None => None,
    }
    .or_else(|| contacts().find_map(|c| c.expires()));
    out.expires = contact_expires.or_else(|| {
        v.header(HeaderName::Expires)
            .and_then(|e| parse_u64(e, 10))
            .map(|e| e.min(u32::MAX as u64) as u32)
    });
    for na in v
        .values(HeaderName::ServiceRoute)
        .filter_map(NameAddr::parse)
    {
        out.service_route.push(Span::of(v.buf, na.uri));
    }
    for na in v
        .values(HeaderName::PAssociatedUri)
        .filter_map(NameAddr::parse)
    {
        out.associated_uris.push(Span::of(v.buf, na.uri));
    }
    Ok(out)
}

/// Build a response to `req` into `out` (RFC 3261 §8.2.6): status line, the request's Via,
/// From, To (with `to_tag` added if it has none), Call-ID and CSeq, the `extra` header lines
/// (each ending in CRLF), and `Content-Length: 0`. Returns the length written.
pub fn build_response(
    req: View<'_>,
    code: u16,
    reason: &str,
    to_tag: &[u8],
    extra: &[&[u8]],
    out: &mut [u8],
) -> Option<usize> {
    let mut w = Writer::new(out);
    w.put(b"SIP/2.0 ")
        .dec(code as u64)
        .put(b" ")
        .put(reason.as_bytes())
        .put(b"\r\n");
    for h in req.idx.headers() {
        match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => {
                w.put(h.name.as_str().as_bytes())
                    .put(b": ")
                    .put(req.bytes(h.value))
                    .put(b"\r\n");
            }
            HeaderName::To => {
                let value = req.bytes(h.value);
                w.put(b"To: ").put(value);
                let tagged = NameAddr::parse(value).is_some_and(|n| n.tag().is_some());
                if !tagged && code > 100 {
                    w.put(b";tag=").put(to_tag);
                }
                w.put(b"\r\n");
            }
            _ => {}
        }
    }
    for e in extra {
        w.put(e);
    }
    w.put(b"Content-Length: 0\r\n\r\n");
    w.finish()
}

/// The response for a [`Reject`], with the headers each code needs: 420 lists the unsupported
/// Proxy-Require options (RFC 3261 §20.40), 421 requires sec-agree (RFC 3329 §2.3.1), 494
/// lists the mechanisms we accept (RFC 3329 §2.3.1).
pub fn build_reject(
    req: View<'_>,
    r: &Reject,
    to_tag: &[u8],
    prefs: &[(IntegAlg, EncAlg)],
    out: &mut [u8],
) -> Option<usize> {
    let mut extra = [0u8; 512];
    let mut w = Writer::new(&mut extra);
    match r.code {
        420 => {
            w.put(b"Unsupported: ");
            let mut first = true;
            for t in req.values(HeaderName::ProxyRequire) {
                if !t.eq_ignore_ascii_case(b"sec-agree") {
                    if !first {
                        w.put(b", ");
                    }
                    w.put(t);
                    first = false;
                }
            }
            w.put(b"\r\n");
        }
        421 => {
            w.put(b"Require: sec-agree\r\n");
        }
        494 => {
            w.put(b"Require: sec-agree\r\nSecurity-Server: ");
            for (n, (alg, ealg)) in prefs.iter().enumerate() {
                if n > 0 {
                    w.put(b", ");
                }
                w.put(b"ipsec-3gpp;prot=esp;mod=trans;alg=")
                    .put(alg.token().as_bytes())
                    .put(b";ealg=")
                    .put(ealg.token().as_bytes());
            }
            w.put(b"\r\n");
        }
        _ => {}
    }
    let n = w.finish()?;
    build_response(req, r.code, r.reason, to_tag, &[&extra[..n]], out)
}

/// What we answer a request addressed to us — its Request-URI is us ([`crate::sip::OwnUris`])
/// once our own Route entries are popped (RFC 3261 §16.4: we are then its UAS, nothing is
/// forwarded): OPTIONS gets 200 (RFC 3261 §11.2) with [`ALLOW_TO_US`]; ACK gets nothing
/// (RFC 3261 §17.2.3: never answered); every other method 405 with the same Allow (RFC 3261
/// §8.2.1: a UAS lists what it supports). REGISTER addressed to us is the registrar's (403:
/// we are no home domain, TS 24.229 §5.1.1.2.1).
pub fn answer_to_us(v: View<'_>) -> Option<(u16, &'static str)> {
    if v.is_method(b"ACK") {
        None
    } else if v.is_method(b"OPTIONS") {
        Some((200, "OK"))
    } else {
        Some((405, "Method Not Allowed"))
    }
}

/// The Allow line of [`answer_to_us`]: the only method we serve as a UAS.
pub const ALLOW_TO_US: &[u8] = b"Allow: OPTIONS\r\n";

/// RFC 3261 §16.11: a stateless proxy's branch must be the same for retransmissions of a
/// request, so it is a hash (FNV-1a, 64 bits) of the incoming top Via value and Call-ID.
pub fn stateless_branch(v: View<'_>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    if let Some(top) = v.values(HeaderName::Via).next() {
        eat(top);
    }
    if let Some(c) = v.header(HeaderName::CallId) {
        eat(c);
    }
    h
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

/// Max-Forwards of a request is zero (RFC 3261 §16.3 item 3: answer 483).
pub fn max_forwards_exhausted(v: View<'_>) -> bool {
    v.header(HeaderName::MaxForwards)
        .and_then(|m| parse_u64(m, 10))
        == Some(0)
}

/// Whether the top Via of a response is ours — its sent-by equals `sent_by` as we write it (host
/// case-insensitive, a missing port meaning 5060) and it carries an RFC 3261 branch — and if so,
/// the branch when it has the format of the workers' branches ([`Branch`], still to be verified
/// with [`crate::sip::branch::BranchKey::verify`]): `None` if the Via is not ours,
/// `Some(None)` for one of ours in another format (the registration thread's).
pub fn top_via_ours(v: View<'_>, sent_by: &[u8]) -> Option<Option<Branch>> {
    let (our_host, our_port) = headers::split_host_port(sent_by)?;
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let branch = via.branch()?;
    let ours = via.host.eq_ignore_ascii_case(our_host)
        && via.port.unwrap_or(5060) == our_port.unwrap_or(5060)
        && branch.starts_with(crate::sip::branch::COOKIE);
    ours.then(|| Branch::parse(branch))
}

/// The port a response to this request goes back to (RFC 3261 §18.2.2, RFC 3581 §4), where
/// `source` is where the request came from: the rport we fill in (or the one written), else the
/// Via's sent-by port (5060 when none) — what [`response_next_hop`] reads back once the request's
/// Via was fixed. The address is always `source`'s: the Via either names it or gets `received`.
pub fn reply_port(v: View<'_>, source: SocketAddr) -> Option<u16> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    Some(match via.rport() {
        Some(Some(p)) => parse_u64(p, 5).and_then(|p| u16::try_from(p).ok())?,
        Some(None) => source.port(),
        None => via.port.unwrap_or(5060),
    })
}

/// The top Via's sent-by port (5060 when none): where a UE asks for the response to a request it
/// sent over an SA (TS 33.203 §7.1).
pub fn top_via_port(v: View<'_>) -> Option<u16> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    Some(via.port.unwrap_or(5060))
}

/// Replace the identity a UE wrote by the network-asserted one (RFC 3325 §9.1, TS 24.229
/// §5.2.6.3 and §5.2.6.4): every P-Preferred-Identity and P-Asserted-Identity goes, and
/// `P-Asserted-Identity: <pai>` is added.
pub fn assert_identity(ed: &mut Editor<'_>, pai: &[u8]) -> Result<(), EditError> {
    ed.remove_all(HeaderName::PPreferredIdentity)?;
    ed.remove_all(HeaderName::PAssertedIdentity)?;
    let end = ed.index().headers().len();
    ed.insert_lines(end, 1, &[b"P-Asserted-Identity: ", pai, b"\r\n"])
}

/// Where a response goes after our Via is gone (RFC 3261 §18.2.2, RFC 3581 §4): the top Via's
/// `received` (else its sent-by host, which must be an IP literal) and `rport` (else its port,
/// else 5060).
pub fn response_next_hop(v: View<'_>) -> Option<SocketAddr> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let host = via.received().unwrap_or(via.host);
    let host = host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(host);
    let ip: IpAddr = core::str::from_utf8(host).ok()?.parse().ok()?;
    let port = match via.rport() {
        Some(Some(p)) => parse_u64(p, 5).and_then(|p| u16::try_from(p).ok())?,
        _ => via.port.unwrap_or(5060),
    };
    Some(SocketAddr::new(ip, port))
}

/// A request from a registered UE, received over its SA, toward the core (TS 24.229 §5.2.6.3):
/// our Via and Max-Forwards as for any forward; the identity is the network's — any
/// P-Preferred-Identity or P-Asserted-Identity the UE wrote goes (RFC 3325 §9.1) and
/// `P-Asserted-Identity: <pai>` (its default registered IMPU) is set; the Route set is the
/// Service-Route stored at registration (`route`), whatever the UE pre-loaded.
pub fn rewrite_protected_request(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    source: SocketAddr,
    branch: &Branch,
    pai: &[u8],
    route: &[u8],
) -> Result<(), EditError> {
    forward_request(ed, me, source, branch)?;
    ed.remove_all(HeaderName::PPreferredIdentity)?;
    ed.remove_all(HeaderName::PAssertedIdentity)?;
    ed.remove_all(HeaderName::Route)?;
    let end = ed.index().headers().len();
    ed.insert_lines(
        end,
        2,
        &[
            b"Route: ",
            route,
            b"\r\nP-Asserted-Identity: ",
            pai,
            b"\r\n",
        ],
    )
}

/// The top Via's sent-by as an address, when its host is an IP literal (the UE's protected
/// port for a request that came over an SA, TS 33.203 §7.1).
pub fn top_via_sent_by(v: View<'_>) -> Option<SocketAddr> {
    let via = v.values(HeaderName::Via).next().and_then(Via::parse)?;
    let host = via
        .host
        .strip_prefix(b"[")
        .and_then(|h| h.strip_suffix(b"]"))
        .unwrap_or(via.host);
    let ip: IpAddr = core::str::from_utf8(host).ok()?.parse().ok()?;
    Some(SocketAddr::new(ip, via.port.unwrap_or(5060)))
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
    forward_request(ed, me, source, branch)
}
