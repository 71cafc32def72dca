//! The reg event package through the registrar, sans-IO (TS 24.229 §5.2.3, §5.2.5; RFC 3680,
//! RFC 6665): the SUBSCRIBE after the first registration, its refresh and removal, the NOTIFYs
//! that end a registration or one identity of an implicit set, and the hostile ones (another
//! address, another dialog, bad bodies, versions out of order), which change nothing.

use std::time::Duration;

use pcscf::control::registrar::{Deregistration, Outgoing, RegistrarConfig};
use pcscf::dataplane::Protection;
use pcscf::io::Side;
use pcscf::sip::headers::NameAddr;
use pcscf::sip::{HeaderName, Message};

use crate::registration_flow::{Challenge, World, deregister, register_answered, world_with};
use crate::support::ims::*;

const SCSCF: &str = "10.0.1.30:5060";
const CORE: &str = "10.0.1.10:5060";
const OK_EXTRA: &str = "Service-Route: <sip:orig@10.0.1.30:5060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>, <tel:+15551230001>\r\nContact: <sip:001010000000001@10.46.0.6:7005>;expires=3600\r\n";
pub(crate) const UE_CONTACT: &str = "sip:001010000000001@10.46.0.6:7005";

fn config() -> RegistrarConfig {
    let mut cfg = registrar_config(Some(addr("10.0.1.20:5060")), None);
    cfg.reg_event = true;
    cfg
}

/// A registered UE with two identities; the SUBSCRIBE the 200 made.
pub(crate) fn registered() -> (World, Challenge, Outgoing) {
    let mut w = world_with(config());
    let (c, out) = register_answered(&mut w, OK_EXTRA);
    assert_eq!(out.len(), 2, "the 200 to the UE, then the SUBSCRIBE");
    assert_eq!(
        Message::parse(&out[0].payload).unwrap().view().status(),
        Some(200)
    );
    (w, c, out[1].clone())
}

fn text(o: &Outgoing) -> String {
    String::from_utf8_lossy(&o.payload).into_owned()
}

/// The S-CSCF's 2xx to a SUBSCRIBE (its tag, its Contact, the granted Expires).
pub(crate) fn accept(w: &mut World, sub: &Outgoing, expires: u32) -> Vec<Outgoing> {
    let ok = core_answer(
        &sub.payload,
        200,
        "OK",
        &format!("Expires: {expires}\r\nContact: <sip:scscf@10.0.1.30:5060>\r\n"),
    );
    w.feed(Side::Core, Protection::Plain, SCSCF, CORE, &ok)
}

/// A contact of a document: (uri, state, event).
pub(crate) type Contact<'a> = (&'a str, &'a str, &'a str);

/// A reginfo document: per registration (aor, state, contacts).
pub(crate) fn doc(version: u32, state: &str, regs: &[(&str, &str, &[Contact<'_>])]) -> String {
    let mut d = format!(
        "<?xml version=\"1.0\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"{version}\" state=\"{state}\">\n"
    );
    for (i, (aor, st, contacts)) in regs.iter().enumerate() {
        d.push_str(&format!(
            "  <registration aor=\"{aor}\" id=\"r{i}\" state=\"{st}\">\n"
        ));
        for (j, (uri, cs, ev)) in contacts.iter().enumerate() {
            d.push_str(&format!(
                "    <contact id=\"c{i}{j}\" state=\"{cs}\" event=\"{ev}\"><uri>{uri}</uri></contact>\n"
            ));
        }
        d.push_str("  </registration>\n");
    }
    d.push_str("</reginfo>\n");
    d
}

/// The S-CSCF's NOTIFY in the subscription `sub` made (to the Contact it gave, in its
/// dialog), with `body` as reginfo.
pub(crate) fn notify(sub: &Outgoing, cseq: u32, state: &str, ctype: &str, body: &str) -> Vec<u8> {
    let m = Message::parse(&sub.payload).unwrap();
    let v = m.view();
    let h = |n| String::from_utf8_lossy(v.header(n).unwrap()).into_owned();
    let contact = NameAddr::parse(v.header(HeaderName::Contact).unwrap())
        .unwrap()
        .uri;
    format!(
        "NOTIFY {} SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.30:5060;branch=z9hG4bKn{cseq}\r\nMax-Forwards: 70\r\nFrom: {};tag=scscf\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nEvent: reg\r\nSubscription-State: {state}\r\nContact: <sip:scscf@10.0.1.30:5060>\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        String::from_utf8_lossy(contact),
        h(HeaderName::To),
        h(HeaderName::From),
        h(HeaderName::CallId),
        body.len()
    )
    .into_bytes()
}

pub(crate) fn send_notify(w: &mut World, from: &str, n: &[u8]) -> Vec<Outgoing> {
    w.feed(Side::Core, Protection::Plain, from, CORE, n)
}

pub(crate) fn status(o: &Outgoing) -> u16 {
    Message::parse(&o.payload).unwrap().view().status().unwrap()
}

/// The identities asserted for the UE now (P-Asserted-Identity first), None: not registered.
fn asserted(w: &World, c: &Challenge) -> Option<Vec<String>> {
    let g = w.sas.pin();
    let e = g.inbound(c.spi_ps)?;
    let r = e.registration()?;
    let mut v = vec![String::from_utf8_lossy(r.pai()).into_owned()];
    v.extend(r.impus().map(|u| String::from_utf8_lossy(u).into_owned()));
    Some(v)
}

fn active_doc(version: u32) -> String {
    doc(
        version,
        "full",
        &[
            (
                "sip:001010000000001@ims.test",
                "active",
                &[(UE_CONTACT, "active", "registered")],
            ),
            (
                "tel:+15551230001",
                "active",
                &[(UE_CONTACT, "active", "registered")],
            ),
        ],
    )
}

/// Both identities of the UE terminated, its contact deactivated (administrative
/// de-registration).
pub(crate) fn all_terminated(version: u32, state: &str) -> String {
    doc(
        version,
        state,
        &[
            (
                "sip:001010000000001@ims.test",
                "terminated",
                &[(UE_CONTACT, "terminated", "deactivated")],
            ),
            (
                "tel:+15551230001",
                "terminated",
                &[(UE_CONTACT, "terminated", "deactivated")],
            ),
        ],
    )
}

pub(crate) const XML: &str = "application/reginfo+xml";

#[test]
fn the_first_registration_subscribes_at_the_scscf_as_ts_24_229_says() {
    let (w, _c, sub) = registered();
    assert_eq!(
        (sub.side, sub.protection, sub.src, sub.dst),
        (Side::Core, Protection::Plain, addr(CORE), addr(SCSCF)),
        "to the S-CSCF the Service-Route names, from our core side"
    );
    let t = text(&sub);
    let m = Message::parse_strict(&sub.payload).unwrap_or_else(|e| panic!("{e}: {t}"));
    let v = m.view();
    assert_eq!(v.method(), Some(&b"SUBSCRIBE"[..]));
    assert!(
        t.starts_with("SUBSCRIBE sip:001010000000001@ims.test SIP/2.0\r\n"),
        "Request-URI: the default IMPU: {t}"
    );
    let h = |n| String::from_utf8_lossy(v.header(n).unwrap()).into_owned();
    assert_eq!(h(HeaderName::To), "<sip:001010000000001@ims.test>");
    assert!(
        h(HeaderName::From).starts_with("<sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org>;tag="),
        "{t}"
    );
    assert_eq!(h(HeaderName::Event), "reg");
    assert_eq!(
        v.header_named(b"Accept"),
        Some(&b"application/reginfo+xml"[..])
    );
    assert_eq!(h(HeaderName::Expires), "4200", "registration's 3600 + 600");
    assert_eq!(h(HeaderName::Contact), "<sip:10.0.1.10:5060>");
    assert_eq!(
        h(HeaderName::PAssertedIdentity),
        "<sip:term@pcscf.test:5060;lr>",
        "the URI we put in Path"
    );
    assert_eq!(h(HeaderName::Route), "<sip:orig@10.0.1.30:5060;lr>");
    assert!(h(HeaderName::PChargingVector).starts_with("icid-value="));
    assert!(
        h(HeaderName::Via).starts_with("SIP/2.0/UDP 10.0.1.10:5060;branch=z9hG4bK-sub-"),
        "{t}"
    );
    assert_eq!(w.reg.subscriptions(), 1);
    assert_eq!(w.reg.reg_event_stats().subscribes, 1);
}

#[test]
fn an_accepted_subscription_is_refreshed_in_its_dialog() {
    let (mut w, c, sub) = registered();
    assert!(accept(&mut w, &sub, 1000).is_empty());
    assert!(w.reg.reg_event_active(c.spi_ps));
    // RFC 6665 §4.1.2.1 / TS 24.229 §5.2.3: 1000 s granted, refreshed at half
    w.reg.handle_timeout(w.now + Duration::from_secs(499));
    assert!(w.reg.poll_transmit().is_none());
    w.now += Duration::from_secs(500);
    w.reg.handle_timeout(w.now);
    let refresh = w.reg.poll_transmit().expect("the refresh");
    let t = text(&refresh);
    assert!(
        t.starts_with("SUBSCRIBE sip:scscf@10.0.1.30:5060 SIP/2.0\r\n"),
        "{t}"
    );
    assert!(t.contains("CSeq: 2 SUBSCRIBE\r\n"), "{t}");
    assert!(t.contains(";tag=scscf\r\n"), "the S-CSCF's tag in To: {t}");
    assert_eq!(
        header(&refresh.payload, HeaderName::CallId),
        header(&sub.payload, HeaderName::CallId)
    );
    assert_eq!(refresh.dst, addr(SCSCF));
}

#[test]
fn an_unanswered_subscribe_is_sent_again_then_retried_after_a_back_off() {
    let (mut w, _c, sub) = registered();
    let t0 = w.now;
    w.reg.handle_timeout(t0 + Duration::from_millis(500));
    let again = w.reg.poll_transmit().expect("Timer E: again after T1");
    assert_eq!(again.payload, sub.payload);
    // Timer F: the transaction fails at 32 s; a new one 30 s later, in a new dialog
    let mut at = t0;
    while at < t0 + Duration::from_secs(33) {
        at += Duration::from_millis(250);
        w.reg.handle_timeout(at);
        while w.reg.poll_transmit().is_some() {}
    }
    assert_eq!(w.reg.reg_event_stats().subscribe_failed, 1);
    w.reg.handle_timeout(at + Duration::from_secs(31));
    let retry = w.reg.poll_transmit().expect("the retry");
    assert!(text(&retry).contains("CSeq: 1 SUBSCRIBE"));
    assert_ne!(
        header(&retry.payload, HeaderName::CallId),
        header(&sub.payload, HeaderName::CallId)
    );
}

#[test]
fn a_notify_that_terminates_the_registration_ends_it_here_at_once() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    let out = send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 1, "active;expires=4200", XML, &active_doc(0)),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 200);
    assert_eq!((out[0].dst, out[0].src), (addr(SCSCF), addr(CORE)));
    assert!(asserted(&w, &c).is_some(), "active: nothing changes");

    // administrative de-registration: both identities, contact deactivated
    let body = all_terminated(1, "partial");
    let out = send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 2, "terminated;reason=deactivated", XML, &body),
    );
    assert_eq!(out.len(), 1, "only our 200: {out:?}");
    assert_eq!(status(&out[0]), 200);
    assert_eq!(asserted(&w, &c), None, "no identity asserted from now on");
    let st = w.reg.reg_event_stats();
    assert_eq!((st.network_deregistrations, st.impus_terminated), (1, 2));
    assert_eq!(w.reg.subscriptions(), 0);
    // the SA set lingers for the last messages over it, then goes
    assert!(w.sas.pin().inbound(c.spi_ps).is_some());
    w.reg.handle_timeout(w.now + Duration::from_secs(3));
    assert!(w.sas.pin().inbound(c.spi_ps).is_none());
    assert!(w.sas.pin().inbound(c.spi_pc).is_none());
    assert_eq!(w.reg.registrations(), 0);
    w.reg.check_sa_invariants().unwrap();
}

#[test]
fn terminating_one_identity_of_the_implicit_set_leaves_the_other_asserted() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 1, "active", XML, &active_doc(0)),
    );
    let body = doc(
        1,
        "partial",
        &[(
            "sip:001010000000001@ims.test",
            "terminated",
            &[(UE_CONTACT, "terminated", "rejected")],
        )],
    );
    let out = send_notify(&mut w, SCSCF, &notify(&sub, 2, "active", XML, &body));
    assert_eq!(status(&out[0]), 200);
    assert_eq!(
        asserted(&w, &c),
        Some(vec!["<tel:+15551230001>".into(), "tel:+15551230001".into()]),
        "the remaining identity is the default one now"
    );
    assert_eq!(w.reg.reg_event_stats().network_deregistrations, 0);
    assert!(w.reg.reg_event_active(c.spi_ps), "the subscription goes on");
}

#[test]
fn only_this_ues_contact_counts() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 1, "active", XML, &active_doc(0)),
    );
    // another device of the same user expired: not us
    let other = doc(
        1,
        "partial",
        &[(
            "sip:001010000000001@ims.test",
            "active",
            &[
                (UE_CONTACT, "active", "refreshed"),
                (
                    "sip:001010000000001@10.46.0.99:7005",
                    "terminated",
                    "expired",
                ),
            ],
        )],
    );
    send_notify(&mut w, SCSCF, &notify(&sub, 2, "active", XML, &other));
    assert_eq!(asserted(&w, &c).map(|v| v.len()), Some(3));
    // our contact expired on the network side: this identity is gone for us
    let ours = doc(
        2,
        "partial",
        &[(
            "tel:+15551230001",
            "active",
            &[(UE_CONTACT, "terminated", "expired")],
        )],
    );
    send_notify(&mut w, SCSCF, &notify(&sub, 3, "active", XML, &ours));
    assert_eq!(
        asserted(&w, &c),
        Some(vec![
            "<sip:001010000000001@ims.test>".into(),
            "sip:001010000000001@ims.test".into()
        ])
    );
}

#[test]
fn hostile_notifies_change_nothing() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    let kill = doc(
        0,
        "full",
        &[(
            "sip:001010000000001@ims.test",
            "terminated",
            &[(UE_CONTACT, "terminated", "deactivated")],
        )],
    );
    // from another address than the S-CSCF we subscribed at
    let out = send_notify(
        &mut w,
        "10.0.1.66:5060",
        &notify(&sub, 1, "active", XML, &kill),
    );
    assert_eq!(status(&out[0]), 403);
    // a dialog we never made: another Call-ID, or our Call-ID with another tag
    let forged = String::from_utf8(notify(&sub, 1, "active", XML, &kill)).unwrap();
    let call_id = header(&sub.payload, HeaderName::CallId).unwrap();
    let other_call = forged.replace(&call_id, "forged@10.0.1.30");
    let out = send_notify(&mut w, SCSCF, other_call.as_bytes());
    assert_eq!(status(&out[0]), 481);
    let from = header(&sub.payload, HeaderName::From).unwrap();
    let tag = from.split(";tag=").nth(1).unwrap();
    let other_tag = forged.replace(tag, "0000000000000000");
    let out = send_notify(&mut w, SCSCF, other_tag.as_bytes());
    assert_eq!(status(&out[0]), 481);
    // bodies: not reginfo, malformed, too large, another content type
    for (ctype, body, code) in [
        (XML, "<reginfo", 400),
        (XML, "<foo xmlns=\"urn:x\"/>", 400),
        (XML, &format!("<!DOCTYPE x [<!ENTITY a \"b\">]>{kill}"), 400),
        (XML, &" ".repeat(70_000), 400),
        ("application/pidf+xml", kill.as_str(), 415),
    ] {
        let out = send_notify(&mut w, SCSCF, &notify(&sub, 1, "active", ctype, body));
        assert_eq!(
            status(&out[0]),
            code,
            "{ctype} {}",
            &body[..body.len().min(40)]
        );
    }
    // another event package in our dialog
    let other_event = String::from_utf8(notify(&sub, 1, "active", XML, &kill))
        .unwrap()
        .replace("Event: reg\r\n", "Event: presence\r\n");
    let out = send_notify(&mut w, SCSCF, other_event.as_bytes());
    assert_eq!(status(&out[0]), 489);
    assert_eq!(
        asserted(&w, &c).map(|v| v.len()),
        Some(3),
        "still registered"
    );
    let st = w.reg.reg_event_stats();
    assert_eq!(
        (st.notify_foreign, st.notify_unknown, st.notify_bad_body),
        (1, 3, 5)
    );
    assert_eq!(st.network_deregistrations, 0);
}

#[test]
fn versions_out_of_order_are_discarded_and_a_gap_subscribes_again() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 1, "active", XML, &active_doc(5)),
    );
    let kill = |v| {
        doc(
            v,
            "partial",
            &[(
                "sip:001010000000001@ims.test",
                "terminated",
                &[(UE_CONTACT, "terminated", "deactivated")],
            )],
        )
    };
    // an old document (version 5 again) changes nothing
    let out = send_notify(&mut w, SCSCF, &notify(&sub, 2, "active", XML, &kill(5)));
    assert_eq!(out.len(), 1);
    assert_eq!(status(&out[0]), 200);
    assert_eq!(asserted(&w, &c).map(|v| v.len()), Some(3));
    // a gap (7 after 5): discarded, and a new subscription for full state
    let out = send_notify(&mut w, SCSCF, &notify(&sub, 3, "active", XML, &kill(7)));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(status(&out[1]), 200);
    let again = &out[0];
    assert!(text(again).starts_with("SUBSCRIBE sip:001010000000001@ims.test"));
    assert_ne!(
        header(&again.payload, HeaderName::CallId),
        header(&sub.payload, HeaderName::CallId)
    );
    assert_eq!(asserted(&w, &c).map(|v| v.len()), Some(3));
    assert_eq!(w.reg.reg_event_stats().notify_out_of_order, 2);
}

#[test]
fn a_notify_on_a_connection_is_answered_on_it() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    let n = notify(&sub, 1, "active", XML, &active_doc(0));
    let out = w.feed(
        Side::Core,
        Protection::CoreStream { conn: 0x1_0007 },
        "10.0.1.30:40111",
        CORE,
        &n,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].protection, Protection::CoreStream { conn: 0x1_0007 });
    assert_eq!(status(&out[0]), 200);
    assert!(asserted(&w, &c).is_some());
}

#[test]
fn the_ues_deregistration_removes_the_subscription() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    // (late enough that the first REGISTER's answer is no longer kept for retransmissions,
    // so the same REGISTER is a new registration below)
    w.now += Duration::from_secs(31);
    let out = deregister(&mut w, &c);
    w.now += Duration::from_secs(2);
    w.reg.handle_timeout(w.now);
    while w.reg.poll_transmit().is_some() {}
    let unsub = out
        .iter()
        .find(|o| o.side == Side::Core && text(o).starts_with("SUBSCRIBE "))
        .unwrap_or_else(|| panic!("no SUBSCRIBE Expires: 0 in {out:?}"));
    assert!(
        text(unsub).contains("\r\nExpires: 0\r\n"),
        "{}",
        text(unsub)
    );
    assert_eq!(w.reg.reg_event_stats().unsubscribed, 1);
    let ok = core_answer(&unsub.payload, 200, "OK", "");
    w.feed(Side::Core, Protection::Plain, SCSCF, CORE, &ok);
    assert_eq!(w.reg.subscriptions(), 0);
}

#[test]
fn without_reg_event_no_subscribe_and_notifies_find_no_dialog() {
    let mut cfg = config();
    cfg.reg_event = false;
    let mut w = world_with(cfg);
    let (_c, out) = register_answered(&mut w, OK_EXTRA);
    assert_eq!(out.len(), 1, "only the 200");
    assert_eq!(w.reg.subscriptions(), 0);
}

/// P-CSCF-initiated de-registration (an operator's `deregister`, TS 24.229 §5.2.5 [spec-m]):
/// the registration ends here at once and the core is told: a REGISTER on the UE's behalf
/// with Expires 0 for its contact, integrity-protected, toward the I-CSCF; the subscription
/// is removed. The core's answer is counted and goes nowhere. An identity nobody registered
/// changes nothing.
#[test]
fn a_deregistration_on_our_initiative_tells_the_core() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    assert_eq!(
        w.reg.deregister(b"sip:nobody@ims.test", w.now),
        Deregistration::NotFound
    );
    assert_eq!(
        w.reg.deregister(b"tel:+15551230001", w.now),
        Deregistration::Told
    );
    let out: Vec<Outgoing> = std::iter::from_fn(|| w.reg.poll_transmit()).collect();
    let reg = out
        .iter()
        .find(|o| text(o).starts_with("REGISTER "))
        .unwrap_or_else(|| panic!("no REGISTER in {out:?}"));
    assert_eq!((reg.side, reg.dst), (Side::Core, addr("10.0.1.20:5060")));
    let t = text(reg);
    let m = Message::parse_strict(&reg.payload).unwrap_or_else(|e| panic!("{e}: {t}"));
    let v = m.view();
    let h = |n| String::from_utf8_lossy(v.header(n).unwrap()).into_owned();
    assert!(
        t.starts_with("REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0\r\n"),
        "{t}"
    );
    assert_eq!(h(HeaderName::To), "<sip:001010000000001@ims.test>");
    // the contact the UE registered (this fixture's REGISTER names port 5060)
    assert_eq!(
        h(HeaderName::Contact),
        "<sip:001010000000001@10.46.0.6:5060>;expires=0"
    );
    assert_eq!(h(HeaderName::Expires), "0");
    assert!(
        h(HeaderName::Authorization).contains("integrity-protected=\"yes\""),
        "{t}"
    );
    assert_eq!(h(HeaderName::Path), "<sip:term@pcscf.test:5060;lr>");
    let unsub = out
        .iter()
        .find(|o| text(o).starts_with("SUBSCRIBE "))
        .expect("the subscription removed");
    assert!(text(unsub).contains("\r\nExpires: 0\r\n"));
    assert_eq!(asserted(&w, &c), None, "no identity asserted from now on");
    assert_eq!(w.reg.stats.pcscf_deregistrations, 1);
    // the core's answer: counted, not relayed
    let ok = core_answer(&reg.payload, 200, "OK", "");
    assert!(
        w.feed(Side::Core, Protection::Plain, "10.0.1.20:5060", CORE, &ok)
            .is_empty()
    );
    assert_eq!(w.reg.stats.pcscf_dereg_answered, 1);
    w.reg.handle_timeout(w.now + Duration::from_secs(3));
    assert!(w.sas.pin().inbound(c.spi_ps).is_none(), "the SAs went");
    assert_eq!(
        w.reg
            .deregister(b"001010000000001@ims.mnc001.mcc001.3gppnetwork.org", w.now),
        Deregistration::NotFound
    );
}

/// A NOTIFY whose Subscription-State grants less than the 2xx did brings the refresh forward,
/// and the refresh goes out then (the timer follows it).
#[test]
fn a_notify_that_shortens_the_subscription_brings_its_refresh_forward() {
    let (mut w, _c, sub) = registered();
    accept(&mut w, &sub, 4200);
    send_notify(
        &mut w,
        SCSCF,
        &notify(&sub, 1, "active;expires=1000", XML, &active_doc(0)),
    );
    // refreshed at half of 1000 s, not 600 s before 4200 s
    let due = w.reg.poll_timeout().expect("a deadline");
    assert!(due <= w.now + Duration::from_secs(500), "{:?}", due - w.now);
    w.reg.handle_timeout(w.now + Duration::from_secs(500));
    let refresh = w.reg.poll_transmit().expect("the refresh");
    assert!(text(&refresh).contains("CSeq: 2 SUBSCRIBE"));
}

/// What a broken or hostile notifier says cannot make a SUBSCRIBE storm: a 2xx granting 0 s is
/// no subscription (tried again after the back-off), a NOTIFY granting 1 s is refreshed no
/// sooner than 30 s later, and asking again and again for full state (versions out of order)
/// gets one new subscription at once, the next ones after the back-off.
#[test]
fn a_notifier_cannot_make_a_subscribe_storm() {
    let (mut w, _c, sub) = registered();
    let out = accept(&mut w, &sub, 0);
    assert!(out.is_empty());
    w.reg.handle_timeout(w.now + Duration::from_secs(29));
    assert!(w.reg.poll_transmit().is_none(), "no SUBSCRIBE at once");
    assert_eq!(w.reg.reg_event_stats().subscribe_failed, 1);
    w.now += Duration::from_secs(30);
    w.reg.handle_timeout(w.now);
    let again = w.reg.poll_transmit().expect("after the back-off");
    assert!(w.reg.poll_transmit().is_none());
    accept(&mut w, &again, 4200);
    send_notify(
        &mut w,
        SCSCF,
        &notify(&again, 1, "active;expires=1", XML, &active_doc(0)),
    );
    w.reg.handle_timeout(w.now + Duration::from_secs(29));
    assert!(w.reg.poll_transmit().is_none(), "no refresh within 30 s");
    // partial documents with gaps, over and over
    let gap = |v| {
        doc(
            v,
            "partial",
            &[(
                "tel:+15551230001",
                "active",
                &[(UE_CONTACT, "active", "refreshed")],
            )],
        )
    };
    let out = send_notify(&mut w, SCSCF, &notify(&again, 2, "active", XML, &gap(5)));
    let subscribes = |o: &[Outgoing]| {
        o.iter()
            .filter(|o| text(o).starts_with("SUBSCRIBE "))
            .count()
    };
    assert_eq!(subscribes(&out), 1, "one new subscription at once");
    let third = out
        .iter()
        .find(|o| text(o).starts_with("SUBSCRIBE "))
        .unwrap()
        .clone();
    accept(&mut w, &third, 4200);
    // its first document partial: the second ask within one applied document waits
    let out = send_notify(&mut w, SCSCF, &notify(&third, 1, "active", XML, &gap(0)));
    assert_eq!(subscribes(&out), 0, "the back-off, not at once");
    assert_eq!(w.reg.reg_event_stats().notify_out_of_order, 2);
}

/// The UE registers again while our removal of its last subscription is still unanswered (the
/// network de-registered it and it came straight back): a new subscription is made; the old
/// removal's answer changes nothing.
#[test]
fn a_registration_during_the_removal_of_the_last_subscription_gets_a_new_one() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    // (late enough that the first REGISTER's answer is no longer kept for retransmissions,
    // so the same REGISTER is a new registration below)
    w.now += Duration::from_secs(31);
    let out = deregister(&mut w, &c);
    w.now += Duration::from_secs(2);
    w.reg.handle_timeout(w.now);
    while w.reg.poll_transmit().is_some() {}
    let unsub = out
        .iter()
        .find(|o| text(o).starts_with("SUBSCRIBE "))
        .expect("the removal")
        .clone();
    // registered again before the removal's answer
    let (_c2, out) = register_answered(&mut w, OK_EXTRA);
    let fresh = out
        .iter()
        .find(|o| text(o).starts_with("SUBSCRIBE "))
        .unwrap_or_else(|| panic!("no new subscription in {out:?}"))
        .clone();
    assert_ne!(
        header(&fresh.payload, HeaderName::CallId),
        header(&unsub.payload, HeaderName::CallId)
    );
    let ok = core_answer(&unsub.payload, 200, "OK", "Expires: 0\r\n");
    w.feed(Side::Core, Protection::Plain, SCSCF, CORE, &ok);
    accept(&mut w, &fresh, 4200);
    assert_eq!(w.reg.subscriptions(), 1);
}

/// A NOTIFY larger than a worker's queue slot (an implicit set whose contacts carry their
/// feature tags; core TCP hands it to the registration thread whole) is applied like any
/// other; one of that size for someone else is not ours to answer.
#[test]
fn a_large_notify_on_a_connection_is_applied() {
    let (mut w, c, sub) = registered();
    accept(&mut w, &sub, 4200);
    let tags: String = (0..60)
        .map(|i| format!("<unknown-param name=\"+g.3gpp.feature-{i}\">\"urn%3Aurn-7%3A3gpp-service.ims.icsi.mmtel\"</unknown-param>"))
        .collect();
    let body = format!(
        "<?xml version=\"1.0\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"0\" state=\"full\">\n\
         <registration aor=\"sip:001010000000001@ims.test\" id=\"a\" state=\"terminated\">\
         <contact id=\"c\" state=\"terminated\" event=\"deactivated\"><uri>{UE_CONTACT}</uri>{tags}</contact></registration>\n\
         <registration aor=\"tel:+15551230001\" id=\"b\" state=\"active\">\
         <contact id=\"d\" state=\"active\" event=\"registered\"><uri>{UE_CONTACT}</uri>{tags}</contact></registration>\n\
         </reginfo>\n"
    );
    assert!(body.len() > 8000, "{}", body.len());
    let n = notify(&sub, 1, "active", XML, &body);
    let conn = Protection::CoreStream { conn: 0x2_0003 };
    let out = w.feed(Side::Core, conn, "10.0.1.30:40222", CORE, &n);
    assert_eq!(out.len(), 1);
    assert_eq!((status(&out[0]), out[0].protection), (200, conn));
    assert_eq!(
        asserted(&w, &c),
        Some(vec!["<tel:+15551230001>".into(), "tel:+15551230001".into()])
    );
    // the same for a UE's contact (not us): nothing sent, nothing changed
    let other = String::from_utf8(n).unwrap().replacen(
        "NOTIFY sip:10.0.1.10:5060 ",
        "NOTIFY sip:001010000000001@10.46.0.6:7005 ",
        1,
    );
    assert!(
        w.feed(Side::Core, conn, "10.0.1.30:40222", CORE, other.as_bytes())
            .is_empty()
    );
}
