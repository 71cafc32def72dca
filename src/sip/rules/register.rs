//! The registration flow (TS 24.229 §5.2.2, TS 33.203 §7, RFC 3329, RFC 3327, RFC 3581), as
//! checks and in-place rewrites.
//!
//! Owns: the checks on a REGISTER from the UE (and the SIP error each failure yields), the
//! REGISTER rewrite toward the I-CSCF, the 401 and 200 rewrites toward the UE, the
//! Security-Verify / Security-Client comparison of the protected REGISTER, and the
//! Security-Server we write. It knows nothing of sockets, SAs or time: the caller passes in the
//! UE's source address, our identity, the branch and ICID values, and the Security-Server text.

use core::net::SocketAddr;

use super::relay::{ForwardLines, top_via_fixed};
use super::reply::{TopVia, pop_top_via};
use super::{ProxyIdentity, Reject, RejectWhy};
use crate::esp::{EncAlg, IntegAlg};
use crate::sip::edit::{EditError, Editor};
use crate::sip::headers::{self, Digest, IpsecOffer, NameAddr};
use crate::sip::lex::{self, parse_u64};
use crate::sip::msg::{HeaderName, Span, View};
use crate::sip::write::Writer;

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
///
/// `scratch` ([`REWRITE_SCRATCH`] bytes; less fails with [`EditError::NoRoom`]) is where the
/// new header block and the rewritten values are written before they take their place: the
/// caller's, so nothing is allocated or zeroed per REGISTER.
pub fn rewrite_register(
    ed: &mut Editor<'_>,
    me: &ProxyIdentity<'_>,
    fw: &Forward,
    scratch: &mut [u8],
) -> Result<(), EditError> {
    if scratch.len() < REWRITE_SCRATCH {
        return Err(EditError::NoRoom);
    }
    let (block, rest) = scratch.split_at_mut(REBUILD_MAX);
    let (auth, rest) = rest.split_at_mut(AUTH_MAX);
    let fixed = &mut rest[..VIA_MAX];
    // sec-agree is hop-by-hop: strip the option tags and the Security-* headers (RFC 3329
    // §2.3.1, TS 24.229 §5.2.2.2). A Require or Proxy-Require that lists more than sec-agree
    // loses that one value here; the usual line of sec-agree alone goes in the pass below.
    for name in [HeaderName::Require, HeaderName::ProxyRequire] {
        if needs_list_edit(ed.view(), name) {
            ed.remove_list_value(name, b"sec-agree")?;
        }
    }
    let v = ed.view();
    let top = match TopVia::of(v) {
        Some(t) => top_via_fixed(v, &t, fw.source, fixed)?,
        None => None,
    };
    // Our Via on top (RFC 3261 §16.6 item 8).
    let mut via = [0u8; 160];
    let mut w = Writer::new(&mut via);
    w.put(b"SIP/2.0/")
        .put(me.via_transport)
        .put(b" ")
        .put(me.via_sent_by)
        .put(b";branch=z9hG4bK")
        .hex64(fw.branch);
    let via_len = w.finish().ok_or(EditError::NoRoom)?;
    let via = &via[..via_len];
    // The credentials: the UE's with our integrity-protected (TS 24.229 §5.2.2.2, §7.2A.2), or
    // those a conforming UE writes on its first REGISTER when it wrote none.
    let (auth_at, auth_len) = match v
        .idx
        .headers()
        .iter()
        .position(|h| h.name == HeaderName::Authorization)
    {
        Some(i) => (Some(i), integrity_protected(v, i, fw.protected, auth)?),
        None => (None, authorization_line(v, fw.protected, auth)?),
    };
    let mut icid = [0u8; 16];
    Writer::new(&mut icid).hex64(fw.icid);
    let mut cl = [0u8; 20];
    let cl_len = {
        let mut w = Writer::new(&mut cl);
        w.dec(v.idx.body.len() as u64);
        w.len()
    };
    let has_cl = v.headers(HeaderName::ContentLength).next().is_some();
    let has_via = v.headers(HeaderName::Via).next().is_some();
    let n = v.idx.headers().len();

    // Every other edit in one pass over the headers (Editor::rebuild).
    let mut rb = ed.rebuild(block);
    // our Via, received/rport, Max-Forwards (RFC 3261 §16.6)
    let mut fwd = ForwardLines::start(&mut rb, has_via, via, top, fixed);
    for i in 0..n {
        let h = rb.view().idx.headers()[i];
        if fwd.line(&mut rb, i, h) {
            continue;
        }
        match h.name {
            // TS 24.229 §5.2.2.2: the P-CSCF sends the REGISTER to the I-CSCF of the home
            // network it determines itself (the caller chose it). A Route the UE wrote, ours
            // or any after it, would have the I-CSCF loose-route the REGISTER wherever the UE
            // wants (RFC 3261 §16.4): every UE Route goes, so the UE never steers its
            // registration.
            HeaderName::Route
            | HeaderName::SecurityClient
            | HeaderName::SecurityVerify
            // values only the network may set: never forward what the UE wrote
            | HeaderName::PVisitedNetworkId
            | HeaderName::PChargingVector
            | HeaderName::PAssertedIdentity => {}
            HeaderName::Require | HeaderName::ProxyRequire
                if rb.view().bytes(h.value).eq_ignore_ascii_case(b"sec-agree") => {}
            // one Authorization (check_register allows only one): ours in its place
            HeaderName::Authorization if auth_at == Some(i) => {
                rb.edit(i, h.value, &[&auth[..auth_len]]);
            }
            HeaderName::Authorization => {}
            _ => rb.keep(i),
        }
    }
    fwd.finish(&mut rb);
    if auth_at.is_none() {
        rb.line(HeaderName::Authorization, &[&auth[..auth_len]]);
    }
    // TS 24.229 §5.2.2.2 [spec-m]: our Path (RFC 3327), its option tag, the visited network
    // (RFC 7315 §4.3) and the charging vector we start (RFC 7315 §4.6).
    rb.line(HeaderName::Path, &[b"<", me.path_uri, b">"]);
    rb.line(HeaderName::Require, &[b"path"]);
    rb.line(HeaderName::PVisitedNetworkId, &[me.visited_network_id]);
    rb.line(
        HeaderName::PChargingVector,
        &[b"icid-value=", &icid, b";orig-ioi=", me.orig_ioi],
    );
    if !has_cl {
        rb.line(HeaderName::ContentLength, &[&cl[..cl_len]]);
    }
    rb.finish()
}

/// The most a REGISTER's rewritten start line and headers may take (its frame holds at most
/// 4 KiB: a UDP datagram the workers punt, or one framed from a TCP stream).
const REBUILD_MAX: usize = 8192;
/// The most the forwarded Authorization value may take.
const AUTH_MAX: usize = 2048;
/// The most the UE's Via value with received / rport may take.
const VIA_MAX: usize = 1024;
/// The scratch [`rewrite_register`] needs.
pub const REWRITE_SCRATCH: usize = REBUILD_MAX + AUTH_MAX + VIA_MAX;

/// Whether a `name` line lists sec-agree beside other values (or in a shape the one-pass
/// rewrite does not drop whole): then the list loses that value by the editor's own removal.
fn needs_list_edit(v: View<'_>, name: HeaderName) -> bool {
    v.headers(name).any(|h| {
        let value = v.bytes(h.value);
        !value.eq_ignore_ascii_case(b"sec-agree")
            && lex::ListIter::new(value).any(|x| x.eq_ignore_ascii_case(b"sec-agree"))
    })
}

/// The value of Authorization `i` as forwarded (`Digest` + its parameters but
/// integrity-protected, then ours), written into `out`; its length.
fn integrity_protected(
    v: View<'_>,
    i: usize,
    protected: bool,
    out: &mut [u8],
) -> Result<usize, EditError> {
    let value: &[u8] = if protected { b"\"yes\"" } else { b"\"no\"" };
    let h = v.idx.headers()[i];
    let mut params = [(&[][..], &[][..]); MAX_AUTH_PARAMS];
    let n = strict_digest_params(v.bytes(h.value), &mut params).ok_or(EditError::BadTarget)?;
    let mut w = Writer::new(out);
    w.put(b"Digest ");
    for (name, val) in params[..n]
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(b"integrity-protected"))
    {
        w.put(name).put(b"=").put(val).put(b", ");
    }
    w.put(b"integrity-protected=").put(value);
    w.finish().ok_or(EditError::NoRoom)
}

/// A REGISTER without Authorization ([`check_register`] derived its IMPI from To): the core
/// gets one as a conforming UE writes it on its first REGISTER (TS 24.229 §5.1.1.2.2: username =
/// IMPI, realm = the home domain, uri = the Request-URI, empty nonce and response) with our
/// integrity-protected (TS 24.229 §5.2.2.2, §7.2A.2), so the S-CSCF runs IMS AKA as for any
/// phone. Its value is written into `out`; its length.
fn authorization_line(v: View<'_>, protected: bool, out: &mut [u8]) -> Result<usize, EditError> {
    let value: &[u8] = if protected { b"\"yes\"" } else { b"\"no\"" };
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
    let mut w = Writer::new(out);
    w.put(b"Digest username=\"")
        .put(impi)
        .put(b"\",realm=\"")
        .put(realm)
        .put(b"\",uri=\"")
        .put(ruri)
        .put(b"\",nonce=\"\",response=\"\",integrity-protected=")
        .put(value);
    w.finish().ok_or(EditError::NoRoom)
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
