//! What the simulators share for calls (RFC 3261 §12, §13, §15): the SDP offer and answer, a
//! response with a body, the few fields of a message they read, and the plan of who hangs up.
//!
//! Everything here reads messages that came from the network: nothing panics on what it reads,
//! a field that is missing or malformed is `None`.

use hdrhistogram::Histogram;

use crate::sip::headers::{NameAddr, cseq};
use crate::sip::rules::build_response;
use crate::sip::{HeaderName, View};

/// Terminating call `k` is hung up by the callee (the UE) when odd, by the caller (the core)
/// when even: both sides follow the same plan, so each knows whether to send or wait for the BYE.
pub fn callee_hangs_up(k: usize) -> bool {
    k % 2 == 1
}

/// A latency histogram, µs, 1 µs .. 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant bounds")
}

/// `ip` as an SDP connection address: (`IP4` / `IP6`, the address without brackets).
fn sdp_addr(ip: std::net::IpAddr) -> (&'static str, String) {
    match ip {
        std::net::IpAddr::V4(a) => ("IP4", a.to_string()),
        std::net::IpAddr::V6(a) => ("IP6", a.to_string()),
    }
}

/// An SDP offer of about 900 bytes, as a VoLTE phone makes (AMR-WB, AMR, telephone-event,
/// preconditions).
pub fn sdp_offer(ip: std::net::IpAddr, port: u16) -> String {
    let (fam, a) = sdp_addr(ip);
    let mut s = format!(
        "v=0\r\no=- 1705432100 1705432100 IN {fam} {a}\r\ns=-\r\nc=IN {fam} {a}\r\nb=AS:49\r\nb=RS:0\r\nb=RR:2500\r\nt=0 0\r\nm=audio {port} RTP/AVP 116 107 118 96 111 110\r\nb=AS:49\r\nb=RS:0\r\nb=RR:2500\r\n"
    );
    for (pt, codec) in [
        (116, "AMR-WB/16000/1"),
        (107, "AMR-WB/16000/1"),
        (118, "AMR/8000/1"),
        (96, "AMR/8000/1"),
        (111, "telephone-event/16000"),
        (110, "telephone-event/8000"),
    ] {
        s.push_str(&format!("a=rtpmap:{pt} {codec}\r\n"));
    }
    s.push_str("a=fmtp:116 mode-change-capability=2;max-red=0\r\na=fmtp:107 octet-align=1;mode-change-capability=2;max-red=0\r\na=fmtp:118 mode-change-capability=2;max-red=0\r\na=fmtp:96 octet-align=1;mode-change-capability=2;max-red=0\r\na=fmtp:111 0-15\r\na=fmtp:110 0-15\r\na=curr:qos local none\r\na=curr:qos remote none\r\na=des:qos mandatory local sendrecv\r\na=des:qos optional remote sendrecv\r\na=sendrecv\r\na=rtcp-fb:* trr-int 5000\r\na=rtcp-fb:* nack\r\na=rtcp-fb:* ccm tmmbr\r\na=ecn-capable-rtp: leap ect=0\r\na=anbr\r\na=label:1\r\na=rtcp:");
    s.push_str(&format!("{}\r\na=ptime:20\r\na=maxptime:240\r\n", port + 1));
    s
}

/// The answer: one codec of the offer (RFC 3264 §6).
pub fn sdp_answer(ip: std::net::IpAddr, port: u16) -> String {
    let (fam, a) = sdp_addr(ip);
    format!(
        "v=0\r\no=- 1705432200 1705432200 IN {fam} {a}\r\ns=-\r\nc=IN {fam} {a}\r\nt=0 0\r\nm=audio {port} RTP/AVP 116 111\r\na=rtpmap:116 AMR-WB/16000/1\r\na=fmtp:116 mode-change-capability=2;max-red=0\r\na=rtpmap:111 telephone-event/16000\r\na=fmtp:111 0-15\r\na=sendrecv\r\na=ptime:20\r\n"
    )
}

/// A response to `req` (its Via, From, To with `to_tag` added, Call-ID, CSeq), the `extra`
/// header lines (each ending in CRLF), and an SDP body if given.
pub fn respond(
    req: View<'_>,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &str,
    sdp: Option<&str>,
) -> Option<Vec<u8>> {
    let mut out = vec![0u8; req.as_bytes().len() + extra.len() + 1024];
    let n = build_response(
        req,
        code,
        reason,
        to_tag.as_bytes(),
        &[extra.as_bytes()],
        &mut out,
    )?;
    out.truncate(n);
    if let Some(body) = sdp {
        let tail = b"Content-Length: 0\r\n\r\n";
        if !out.ends_with(tail) {
            return None;
        }
        out.truncate(out.len() - tail.len());
        out.extend_from_slice(
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    Some(out)
}

/// The first value of `h`, as text.
pub fn text(v: View<'_>, h: HeaderName) -> Option<String> {
    v.header(h)
        .and_then(|x| std::str::from_utf8(x).ok())
        .map(str::to_string)
}

/// Every value of `h` (all its lines, comma-separated values apart), as text.
pub fn all(v: View<'_>, h: HeaderName) -> Vec<String> {
    v.values(h)
        .filter_map(|x| std::str::from_utf8(x).ok())
        .map(|x| x.trim().to_string())
        .collect()
}

/// The CSeq method, when the CSeq is well formed.
pub fn cseq_method<'a>(v: View<'a>) -> Option<&'a [u8]> {
    v.header(HeaderName::CSeq)
        .and_then(cseq)
        .map(|(_, method)| method)
}

/// The URI of the first Contact (RFC 3261 §12.1.1: the remote target).
pub fn contact_uri(v: View<'_>) -> Option<String> {
    let c = v.header(HeaderName::Contact)?;
    let na = NameAddr::parse(c)?;
    std::str::from_utf8(na.uri).ok().map(str::to_string)
}

/// `k` from a Call-ID `<prefix><k>@...` when `k < limit`.
pub fn call_index(v: View<'_>, prefix: &str, limit: usize) -> Option<usize> {
    let c = std::str::from_utf8(v.header(HeaderName::CallId)?).ok()?;
    let k = c
        .strip_prefix(prefix)?
        .split('@')
        .next()?
        .parse::<usize>()
        .ok()?;
    (k < limit).then_some(k)
}

/// p50 / p99 / max of `h` in ms, as a line's tail.
pub fn percentiles(h: &Histogram<u64>) -> String {
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        q(0.5),
        q(0.9),
        q(0.99),
        h.max() as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Message;

    #[test]
    fn the_offer_is_about_900_bytes() {
        let n = sdp_offer("10.46.0.6".parse().unwrap(), 49152).len();
        assert!((850..1000).contains(&n), "{n}");
    }

    #[test]
    fn a_response_carries_its_body() {
        let req = b"INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: call-7@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(req).unwrap();
        assert_eq!(call_index(m.view(), "call-", 8), Some(7));
        assert_eq!(call_index(m.view(), "call-", 7), None);
        assert_eq!(cseq_method(m.view()), Some(&b"INVITE"[..]));
        let body = sdp_answer("10.0.0.2".parse().unwrap(), 4000);
        let out = respond(
            m.view(),
            200,
            "OK",
            "t",
            "Contact: <sip:b@y>\r\n",
            Some(&body),
        )
        .unwrap();
        let r = Message::parse_strict(&out).unwrap();
        assert_eq!(r.view().status(), Some(200));
        assert_eq!(r.view().body(), body.as_bytes());
        assert_eq!(contact_uri(r.view()).as_deref(), Some("sip:b@y"));
        assert_eq!(
            text(r.view(), HeaderName::To).as_deref(),
            Some("<sip:b@x>;tag=t")
        );
    }
}
