//! The mission end to end through `pcscf run`, in three network namespaces: a UE (our USIM
//! code, and our ESP over raw sockets as its IPsec) registers through the P-CSCF with an
//! HSS/S-CSCF stub in the core namespace. The unprotected REGISTER and the 401 go in the clear;
//! the protected REGISTER goes as ESP over SA1 and the 200 comes back as ESP over SA2, which the
//! UE decrypts. Run for each backend. Needs root (CI runs as root).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcscf::aka::{self, HssSubscriber, Milenage, SqnGenerator, UeSqnState, Usim, digest};
use pcscf::dataplane::{L4, classify};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim::rawip::{self, send_ip};
use pcscf::sip::headers::Digest;
use pcscf::sip::{HeaderName, Message};

use crate::support::ims::*;

/// The fixture's second Security-Client offer; each test swaps in its own suite (one offer,
/// so the protected REGISTER stays under the 1500-byte MTU: larger ones belong on TCP).
const FIXTURE_CLIENT: &str =
    "ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1236;spi-s=1237;port-c=7004;port-s=7005";

fn client_offer(suite: &str) -> String {
    let (alg, ealg) = suite.split_once('/').unwrap();
    format!("ipsec-3gpp;alg={alg};ealg={ealg};spi-c=1236;spi-s=1237;port-c=7004;port-s=7005")
}

fn config(lab: &Lab, backend: &str, suite: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[ue]
interface = "{}"
addresses = ["{}"]
protected_ports = "5100-5199"
[core]
interface = "{}"
address = "{}"
icscf = "{}:5060"
hostname = "pcscf.ims.mnc001.mcc001.3gppnetwork.org"
[ipsec]
algorithms = ["{suite}"]
[dataplane]
backend = "{backend}"
workers = [0]
batch = 32
ring_size = 512
frames = 2048
[log]
level = "info"
"#,
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let path = std::env::temp_dir().join(format!("{}-{backend}-reg.toml", lab.pcscf));
    std::fs::write(&path, text).unwrap();
    path
}

fn start(lab: &Lab, backend: &str, suite: &str, keylog: &std::path::Path) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pcscf,
            env!("CARGO_BIN_EXE_pcscf"),
            "run",
            "--config",
        ])
        .arg(config(lab, backend, suite))
        .arg("--keylog")
        .arg(keylog)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pcscf")
}

/// HSS + S-CSCF stub: 401 with an AKA vector to a REGISTER without a response, 200 (or 403)
/// after checking the digest against XRES.
/// A request of the core to the registered UE, through the Path the P-CSCF inserted.
const MT_MESSAGE: &str = "MESSAGE sip:001010000000001@10.211.0.2:7005 SIP/2.0\r\nVia: SIP/2.0/UDP 10.212.0.2:5060;branch=z9hG4bKcore-mt1\r\nMax-Forwards: 69\r\nRoute: <sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr>\r\nFrom: <sip:bob@ims.test>;tag=b1\r\nTo: <sip:001010000000001@ims.test>\r\nCall-ID: mt-1@10.212.0.2\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nyo!";

/// Registrations completed, and 200s received for the core's own request to the UE.
fn core(ns: &str, done: Arc<AtomicBool>) -> std::thread::JoinHandle<(u32, u32)> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("10.212.0.2:5060").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let k = aka::hex_array::<16>(K).unwrap();
        let opc = aka::hex_array::<16>(OPC).unwrap();
        let mut hss = HssSubscriber::new(
            Milenage::new(&k, &opc),
            SqnGenerator::with_default_step(),
            [0x80, 0],
        );
        let mut xres = None;
        // the nonce of the last successful registration: a REGISTER that reuses it is
        // challenged again (re-authentication, with a new SA set)
        let mut used_nonce: Option<Vec<u8>> = None;
        let mut vectors = 0u8;
        let mut registered = 0;
        let mut mt_answered = 0;
        let mut buf = [0u8; 4096];
        while !done.load(Ordering::Relaxed) {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                continue;
            };
            let req = buf[..n].to_vec();
            let Ok(m) = Message::parse(&req) else {
                continue;
            };
            let v = m.view();
            if v.status().is_some() {
                // the UE's answer to our request, relayed back by the P-CSCF
                if v.status() == Some(200)
                    && v.header(HeaderName::CallId) == Some(&b"mt-1@10.212.0.2"[..])
                {
                    assert_eq!(
                        v.values(HeaderName::Via).count(),
                        1,
                        "the P-CSCF's Via popped"
                    );
                    mt_answered += 1;
                }
                continue;
            }
            if v.is_method(b"SUBSCRIBE") {
                // the P-CSCF's reg event subscription (TS 24.229 §5.2.3), to the S-CSCF of the
                // Service-Route: accepted, no NOTIFY (tests/system/sipp_reg_event.rs sends them)
                assert_eq!(v.header(HeaderName::Event), Some(&b"reg"[..]));
                assert_eq!(
                    v.header(HeaderName::Route),
                    Some(&b"<sip:orig@10.212.0.2:5060;lr>"[..])
                );
                let answer = core_answer(&req, 200, "OK", "Expires: 600000\r\n");
                s.send_to(&answer, from).unwrap();
                continue;
            }
            if !v.is_method(b"REGISTER") {
                // a registered UE's request: the P-CSCF asserted the registered identity and
                // set the Service-Route (TS 24.229 §5.2.6.3)
                assert_eq!(
                    v.header(HeaderName::PAssertedIdentity),
                    Some(&b"<sip:001010000000001@ims.test>"[..])
                );
                assert!(v.header(HeaderName::PPreferredIdentity).is_none());
                assert_eq!(
                    v.header(HeaderName::Route),
                    Some(&b"<sip:orig@10.212.0.2:5060;lr>"[..])
                );
                let answer = core_answer(&req, 200, "OK", "");
                s.send_to(&answer, from).unwrap();
                // after the first MESSAGE, a request of ours to the UE through the P-CSCF
                if v.header(HeaderName::CallId) == Some(&b"msg-1@10.211.0.2"[..]) {
                    s.send_to(MT_MESSAGE.as_bytes(), "10.212.0.1:5060").unwrap();
                }
                continue;
            }
            let d = Digest::parse(v.header(HeaderName::Authorization).unwrap()).unwrap();
            let integrity = d.integrity_protected().map(<[u8]>::to_vec);
            if v.header(HeaderName::Expires) == Some(&b"0"[..]) {
                // de-registration over the SA: accepted as it is
                let bye = core_answer(
                    &req,
                    200,
                    "OK",
                    "Contact: <sip:001010000000001@10.211.0.2:7005>;expires=0\r\n",
                );
                s.send_to(&bye, from).unwrap();
                continue;
            }
            let stale = used_nonce.as_deref() == d.nonce();
            let answer = if d.response().unwrap_or_default().is_empty() || stale {
                if !stale {
                    assert_eq!(integrity.as_deref(), Some(&b"no"[..]));
                }
                vectors += 1;
                let av = hss.next_vector(&[0x42 ^ vectors; 16]).unwrap();
                let mut nb = [0u8; aka::NONCE_B64_LEN];
                let nonce = av.nonce(&mut nb).to_string();
                let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                let www = format!(
                    "WWW-Authenticate: Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
                    hex(av.ck.as_bytes()),
                    hex(av.ik.as_bytes())
                );
                xres = Some(av.xres.clone());
                core_answer(&req, 401, "Unauthorized", &www)
            } else {
                assert_eq!(
                    integrity.as_deref(),
                    Some(&b"yes"[..]),
                    "protected REGISTER marked so"
                );
                let input = digest::DigestInput {
                    username: d.username().unwrap(),
                    realm: d.realm().unwrap(),
                    nonce: d.nonce().unwrap(),
                    method: b"REGISTER",
                    uri: d.uri().unwrap(),
                    qop: digest::Qop::None,
                };
                match xres
                    .as_ref()
                    .map(|x| digest::verify_aka(&input, x, d.response().unwrap()))
                {
                    Some(Ok(())) => {
                        registered += 1;
                        used_nonce = d.nonce().map(<[u8]>::to_vec);
                        core_answer(
                            &req,
                            200,
                            "OK",
                            "Service-Route: <sip:orig@10.212.0.2:5060;lr>\r\nP-Associated-URI: <sip:001010000000001@ims.test>\r\nContact: <sip:001010000000001@10.211.0.2:7005>;expires=3600\r\n",
                        )
                    }
                    _ => core_answer(&req, 403, "Forbidden", ""),
                }
            };
            s.send_to(&answer, from).unwrap();
        }
        (registered, mt_answered)
    })
}

fn raw_socket(proto: i32) -> OwnedFd {
    rawip::raw(proto).expect("raw socket (root)")
}

/// Encrypt a SIP message from the UE's port-c to the P-CSCF's port-s over SA1.
fn esp_from_ue(sa1: &Sa, port_s: u16, sip: &[u8]) -> Vec<u8> {
    esp_from(sa1, 7004, port_s, sip)
}

/// Encrypt a SIP message from our `sport` to the P-CSCF's `dport` over `sa`.
fn esp_from(sa: &Sa, sport: u16, dport: u16, sip: &[u8]) -> Vec<u8> {
    let src = SocketAddr::new("10.211.0.2".parse().unwrap(), sport);
    let dst = SocketAddr::new("10.211.0.1".parse().unwrap(), dport);
    esp_packet(sa, src, dst, sip)
}

/// The next SIP message that arrives over SA2 (from the P-CSCF's port-c to our port-s).
fn esp_to_ue(
    rx: &OwnedFd,
    sa2: &Sa,
    port_c: u16,
    deadline: Instant,
    seen: &mut Vec<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    let mut pkt = [0u8; 4096];
    while let Some(n) = recv_ip_until(rx, &mut pkt, deadline) {
        seen.push(pkt[..n].to_vec());
        let mut p = pkt[..n].to_vec();
        let Ok((inner, _)) = sa2.decapsulate(&mut p) else {
            continue;
        };
        let inner = &p[inner];
        let L4::Udp { src, dst, payload } = classify(inner) else {
            return Err("inner packet not UDP".into());
        };
        if dst.port() != 7005 || src.port() != port_c {
            return Err(format!("wrong ports {src} -> {dst}"));
        }
        return Ok(inner[payload.start..payload.end].to_vec());
    }
    Err("nothing arrived over SA2".into())
}

const MESSAGE: &str = "MESSAGE sip:bob@ims.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.211.0.2:7005;branch=z9hG4bKmsg1\r\nMax-Forwards: 70\r\nRoute: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org:5103;lr>\r\nFrom: <sip:001010000000001@ims.test>;tag=m1\r\nTo: <sip:bob@ims.test>\r\nCall-ID: msg-1@10.211.0.2\r\nCSeq: 1 MESSAGE\r\nP-Preferred-Identity: <sip:somebody-else@ims.test>\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";

/// The UE: REGISTER, 401, AKA, the four SAs, protected REGISTER over ESP, 200 over ESP, then a
/// protected MESSAGE and its 200 over the SAs. Returns the two 200s.
/// The 200 to the protected REGISTER, the 200 to the MESSAGE, and every ESP packet the UE
/// sent or received (for the capture) — or what went wrong.
type UeResult = Result<(Vec<u8>, Vec<u8>, Vec<Vec<u8>>), String>;

fn ue(ns: &str, deadline: Instant, suite: &str) -> std::thread::JoinHandle<UeResult> {
    let client = client_offer(suite);
    spawn_in(ns, move || {
        let k = aka::hex_array::<16>(K).unwrap();
        let opc = aka::hex_array::<16>(OPC).unwrap();
        let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
        assert!(REGISTER1.contains(FIXTURE_CLIENT));
        let register = REGISTER1
            .replace("10.46.0.6", "10.211.0.2")
            .replace(FIXTURE_CLIENT, &client);
        let s = UdpSocket::bind("10.211.0.2:5060").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let pcscf: SocketAddr = "10.211.0.1:5060".parse().unwrap();
        let mut buf = [0u8; 4096];
        // 1–3: the unprotected REGISTER until the P-CSCF is up; the answer is the 401
        let Challenge {
            server,
            mech,
            nonce,
            auth: got,
        } = challenge(&s, register.as_bytes(), pcscf, &mut usim, deadline)?;
        // 4: the UE's SAs: SA1 out (our spi-s, 7004 → port-s), SA2 in (its spi-s 1237)
        let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
        let (alg, ealg) = (mech.alg.token(), mech.ealg.token());
        let sa1 = Sa::from_aka(mech.spi_s, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        let sa2 = Sa::from_aka(1237, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        // 5: the protected REGISTER, from port-c 7004 to the P-CSCF's port-s, over SA1
        let reg2 = String::from_utf8(protected_register(&nonce, &got.res, &server))
            .unwrap()
            .replace("10.46.0.6", "10.211.0.2")
            .replace(FIXTURE_CLIENT, &client);
        let tx = raw_socket(libc::IPPROTO_RAW);
        let rx = raw_socket(libc::IPPROTO_ESP);
        // Before the real one, two protected REGISTERs that must not pass:
        // a Security-Verify that bids down (494 over the SA, nothing forwarded)...
        let forged = reg2.replace(
            "Security-Verify: ipsec-3gpp;q=0.1;",
            "Security-Verify: ipsec-3gpp;q=0.5;",
        );
        assert_ne!(forged, reg2);
        send_ip(
            &tx,
            &esp_from_ue(&sa1, mech.port_s, forged.as_bytes()),
            "10.211.0.1".parse().unwrap(),
        );
        let mut scratch = Vec::new();
        let refused = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut scratch)?;
        let code = Message::parse(&refused)
            .map_err(|e| e.to_string())?
            .view()
            .status();
        if code != Some(494) {
            return Err(format!("forged Security-Verify answered {code:?}"));
        }
        // ...and one from another UE port than the SA's selector (dropped by the worker)
        send_ip(
            &tx,
            &esp_from(&sa1, 7010, mech.port_s, reg2.as_bytes()),
            "10.211.0.1".parse().unwrap(),
        );
        let mut seen = Vec::new();
        let p = esp_from_ue(&sa1, mech.port_s, reg2.as_bytes());
        send_ip(&tx, &p, "10.211.0.1".parse().unwrap());
        seen.push(p);
        let ok = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut seen)?;
        // registered: a MESSAGE over SA1, its 200 back over SA2
        let p = esp_from_ue(&sa1, mech.port_s, MESSAGE.as_bytes());
        send_ip(&tx, &p, "10.211.0.1".parse().unwrap());
        seen.push(p);
        let msg_ok = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut seen)?;
        // the core's MESSAGE to us arrives over SA2; we answer over SA4 (our port-s → the
        // P-CSCF's port-c, TS 33.203 §7.1)
        let mt = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut seen)?;
        let m = Message::parse_strict(&mt).map_err(|e| e.to_string())?;
        let v = m.view();
        if !v.is_method(b"MESSAGE") || v.header(HeaderName::Route).is_some() {
            return Err(format!(
                "expected the core's MESSAGE without our Route: {}",
                String::from_utf8_lossy(&mt)
            ));
        }
        let mut out = [0u8; 4096];
        let n = pcscf::sip::rules::build_response(v, 200, "OK", b"ue", &[], &mut out).unwrap();
        let sa4 = Sa::from_aka(mech.spi_c, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        let p = esp_from(&sa4, 7005, mech.port_c, &out[..n]);
        send_ip(&tx, &p, "10.211.0.1".parse().unwrap());
        seen.push(p);

        // Bad input, each harmless to the registration (spec: counted and dropped, or answered):
        let pcscf_ip = "10.211.0.1".parse().unwrap();
        // a replayed ESP packet (the first MESSAGE again, byte for byte)
        send_ip(&tx, &seen[2], pcscf_ip);
        // ESP with an SPI nobody gave out
        let stranger =
            Sa::from_aka(0x00de_ad00, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        send_ip(
            &tx,
            &esp_from(&stranger, 7004, mech.port_s, MESSAGE.as_bytes()),
            pcscf_ip,
        );
        // a flood of garbage at 5060
        for i in 0..200u32 {
            s.send_to(format!("garbage {i} \x01\x02").as_bytes(), pcscf)
                .unwrap();
        }
        // an unprotected MESSAGE: refused with 403 (TS 24.229 §5.2.2)
        s.send_to(MESSAGE.replace("msg-1", "plain-1").as_bytes(), pcscf)
            .unwrap();
        let refused = loop {
            if Instant::now() > deadline {
                return Err("no answer to the unprotected MESSAGE".into());
            }
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let m = Message::parse(&buf[..n]).map_err(|e| e.to_string())?;
                if m.view().header(HeaderName::CallId) == Some(&b"plain-1@10.211.0.2"[..]) {
                    break m.view().status();
                }
            }
        };
        if refused != Some(403) {
            return Err(format!("unprotected MESSAGE answered {refused:?}"));
        }
        // and the registration still carries traffic: a second protected MESSAGE gets its 200
        let p = esp_from_ue(
            &sa1,
            mech.port_s,
            MESSAGE.replace("msg-1", "msg-2").as_bytes(),
        );
        send_ip(&tx, &p, pcscf_ip);
        let mut later = Vec::new();
        let again = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut later)?;
        let m = Message::parse(&again).map_err(|e| e.to_string())?;
        if m.view().status() != Some(200)
            || m.view().header(HeaderName::CallId) != Some(&b"msg-2@10.211.0.2"[..])
        {
            return Err(format!(
                "after the bad input: {}",
                String::from_utf8_lossy(&again)
            ));
        }

        // Re-registration with re-authentication (TS 33.203 §7.4): over the current set, a new
        // Security-Client (new SPIs and port-c, same port-s); the core challenges again.
        let renew = |t: &str| {
            t.replace("spi-c=1236", "spi-c=2236")
                .replace("spi-s=1237", "spi-s=2237")
                .replace("port-c=7004", "port-c=7006")
        };
        let rereg = renew(&reg2).replacen("CSeq: 2 REGISTER", "CSeq: 10 REGISTER", 1);
        send_ip(
            &tx,
            &esp_from_ue(&sa1, mech.port_s, rereg.as_bytes()),
            pcscf_ip,
        );
        let c2 = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut later)?;
        let Challenge {
            server: server2,
            mech: mech2,
            nonce: nonce2,
            auth: got2,
        } = read_challenge(&c2, &mut usim).map_err(|e| format!("re-registration: {e}"))?;
        let (ck2, ik2) = (*got2.ck.as_bytes(), *got2.ik.as_bytes());
        let new1 = Sa::from_aka(mech2.spi_s, alg, ealg, &ck2, &ik2, SaOptions::default()).unwrap();
        let new2 = Sa::from_aka(2237, alg, ealg, &ck2, &ik2, SaOptions::default()).unwrap();
        // while the new set is being set up, the old one still carries traffic
        send_ip(
            &tx,
            &esp_from_ue(
                &sa1,
                mech.port_s,
                MESSAGE.replace("msg-1", "msg-3").as_bytes(),
            ),
            pcscf_ip,
        );
        let r3 = esp_to_ue(&rx, &sa2, mech.port_c, deadline, &mut later)?;
        if Message::parse(&r3)
            .map_err(|e| e.to_string())?
            .view()
            .status()
            != Some(200)
        {
            return Err("a MESSAGE over the old set during re-registration was lost".into());
        }
        // the REGISTER over the new temporary set completes the switch
        let reg3 = renew(
            &String::from_utf8(protected_register(&nonce2, &got2.res, &server2))
                .unwrap()
                .replace("10.46.0.6", "10.211.0.2")
                .replace(FIXTURE_CLIENT, &client),
        )
        .replacen("CSeq: 2 REGISTER", "CSeq: 11 REGISTER", 1);
        send_ip(
            &tx,
            &esp_from(&new1, 7006, mech2.port_s, reg3.as_bytes()),
            pcscf_ip,
        );
        let ok2 = esp_to_ue(&rx, &new2, mech2.port_c, deadline, &mut later)?;
        if Message::parse(&ok2)
            .map_err(|e| e.to_string())?
            .view()
            .status()
            != Some(200)
        {
            return Err(format!(
                "re-registration over the new set: {}",
                String::from_utf8_lossy(&ok2)
            ));
        }
        // both sets carry traffic now
        send_ip(
            &tx,
            &esp_from(
                &new1,
                7006,
                mech2.port_s,
                MESSAGE.replace("msg-1", "msg-4").as_bytes(),
            ),
            pcscf_ip,
        );
        let r4 = esp_to_ue(&rx, &new2, mech2.port_c, deadline, &mut later)?;
        if Message::parse(&r4)
            .map_err(|e| e.to_string())?
            .view()
            .status()
            != Some(200)
        {
            return Err("a MESSAGE over the new set got no 200".into());
        }
        // De-registration over the new set: the 200 still comes over it (TS 33.203 §7.4), then every
        // set of the UE goes; MESSAGEs afterwards find no SA (counted as unknown SPIs).
        let bye = reg3
            .replacen("CSeq: 11 REGISTER", "CSeq: 12 REGISTER", 1)
            .replacen("Expires: 600000", "Expires: 0", 1)
            .replacen(";expires=600000", ";expires=0", 1);
        send_ip(
            &tx,
            &esp_from(&new1, 7006, mech2.port_s, bye.as_bytes()),
            pcscf_ip,
        );
        let r5 = esp_to_ue(&rx, &new2, mech2.port_c, deadline, &mut later)?;
        if Message::parse(&r5)
            .map_err(|e| e.to_string())?
            .view()
            .status()
            != Some(200)
        {
            return Err(format!("de-registration: {}", String::from_utf8_lossy(&r5)));
        }
        std::thread::sleep(Duration::from_millis(3000));
        let late_new = MESSAGE.replace("msg-1", "msg-5");
        send_ip(
            &tx,
            &esp_from(&new1, 7006, mech2.port_s, late_new.as_bytes()),
            pcscf_ip,
        );
        let late_old = MESSAGE.replace("msg-1", "msg-6");
        send_ip(
            &tx,
            &esp_from_ue(&sa1, mech.port_s, late_old.as_bytes()),
            pcscf_ip,
        );
        std::thread::sleep(Duration::from_millis(200));
        Ok((ok, msg_ok, seen))
    })
}

fn stop(child: Child) -> String {
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "pcscf: {}\n{err}", out.status);
    err
}

fn register_through(backend: &str, tag: &str, suite: &str) {
    let lab = Lab::new("preg", tag).unwrap_or_else(|e| panic!("{e} (CI runs these tests as root)"));
    let dir = std::env::temp_dir().join(format!("{}-wireshark", lab.pcscf));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let keylog = dir.join("esp_sa");
    let child = start(&lab, backend, suite, &keylog);
    let done = Arc::new(AtomicBool::new(false));
    let core_t = core(&lab.core, done.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = ue(&lab.ue, deadline, suite).join().unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the UE's 200 to the core's MESSAGE
    done.store(true, Ordering::Relaxed);
    let (registered, mt_answered) = core_t.join().unwrap();
    let report = stop(child);
    let (ok, msg_ok, seen) = result.unwrap_or_else(|e| panic!("{backend}: {e}\n{report}"));
    tshark_reads_the_capture(&dir, &seen);
    let m = Message::parse_strict(&ok).unwrap();
    assert_eq!(m.view().status(), Some(200), "{report}");
    let m = Message::parse_strict(&msg_ok).unwrap();
    assert_eq!(m.view().status(), Some(200), "{report}");
    assert_eq!(
        m.view().header(HeaderName::CallId),
        Some(&b"msg-1@10.211.0.2"[..])
    );
    assert_eq!(
        m.view().values(HeaderName::Via).count(),
        1,
        "our Via popped"
    );
    assert_eq!(registered, 2, "the registration and the re-registration");
    assert_eq!(
        mt_answered, 1,
        "the core's request reached the UE over its SA and the 200 came back"
    );
    assert!(report.contains("registered: 2"), "{report}");
    assert!(report.contains("verify_mismatch: 1"), "{report}");
    assert!(report.contains("deregistered: 1"), "{report}");
    // the stranger's SPI, then the new and the old set's after the de-registration
    for (reason, n) in [
        ("esp_replay", 1),
        ("unknown_spi", 3),
        ("bad_sip", 200),
        ("esp_other", 1),
    ] {
        let line = report
            .lines()
            .find(|l| l.contains(&format!("dropped {reason}")))
            .unwrap_or_else(|| panic!("no {reason} drops counted:\n{report}"));
        let got: u64 = line.split_whitespace().last().unwrap().parse().unwrap();
        assert_eq!(got, n, "{reason}: {report}");
    }
}

/// The UE-side capture, decrypted by tshark with nothing but the P-CSCF's key log: every packet's
/// ICV good and every SIP message readable.
fn tshark_reads_the_capture(dir: &std::path::Path, pkts: &[Vec<u8>]) {
    assert_eq!(
        pkts.len(),
        6,
        "REGISTER, 200, MESSAGE, 200, the core's MESSAGE, 200 over the SAs"
    );
    let pcap = dir.join("ue-side.pcap");
    let refs: Vec<&[u8]> = pkts.iter().map(|p| &p[..]).collect();
    pcscf::lab::write_raw(&pcap, &refs).unwrap();
    let lines = crate::support::esp::tshark_esp_rows(
        dir,
        &pcap,
        &["-d", "udp.port==7004,sip", "-d", "udp.port==7005,sip"],
        &["esp.spi", "esp.icv_good", "sip.Method", "sip.Status-Code"],
    );
    let text = format!("{lines:?}");
    assert_eq!(lines.len(), 6, "{text}");
    for l in &lines {
        assert_eq!(l[1], "1", "ICV good: {text}");
    }
    let sip: Vec<String> = lines.iter().map(|l| format!("{}{}", l[2], l[3])).collect();
    assert_eq!(
        sip,
        ["REGISTER", "200", "MESSAGE", "200", "MESSAGE", "200"],
        "{text}"
    );
}

#[test]
fn registration_over_xdp() {
    register_through("xdp", "rx", "hmac-sha-1-96/aes-cbc");
}

#[test]
fn registration_over_afpacket() {
    register_through("afpacket", "rp", "null/aes-gcm");
}

#[test]
fn registration_over_sockets() {
    register_through("socket", "rs", "hmac-sha-1-96/null");
}
