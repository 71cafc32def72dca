//! A phone's first REGISTER in every shape of `tests/data/ims/phones/*.sip`, each
//! registered end to end through one `pcscf run` in a lab (one test per backend: AF_XDP,
//! AF_PACKET, sockets), with SIPp as the I-CSCF/S-CSCF checking what we forward
//! (`tests/sipp/scscf_uas.xml`: no Route naming us by address, hostname or port; no
//! Security-Client/-Verify; no sec-agree in Require; Path; integrity-protected "no" then "yes"). Our test UE (tests/support/ims.rs) does the AKA and ESP:
//! for each fixture it sends the file as written, reads the 401, derives the protected REGISTER
//! as the fixtures' README says and sends it over ESP to our port-s; the 200 must come back
//! over ESP. The README's expected answers are read from it: a row expecting 494 gets 494 and
//! nothing reaches the core. IPv4 and IPv6 fixtures share the P-CSCF; the core side is IPv4.
//!
//! Each fixture registers its own IMPI/IMPU (the file's IMSI replaced by a distinct one) with
//! its own ports and SPIs, so one P-CSCF and one SIPp (`-m N`) serve them all: the fixtures
//! share one identity and one port pair, and a P-CSCF rightly treats a second registration of
//! the same flow as a re-registration. Only one ipsec algorithm is configured (hmac-sha-1-96 /
//! aes-cbc, which every acceptable fixture offers), so Security-Server has one entry and the
//! protected REGISTER stays in one 1500-byte packet: we do not reassemble IP fragments. A
//! packet that does not fit fails the test. Needs root and sipp (CI installs both).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use pcscf::aka::{self, Milenage, UeSqnState, Usim};
use pcscf::dataplane::{L4, classify};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim::rawip;
use pcscf::sip::{HeaderName, Message};

use crate::support::ims::*;
use crate::support::sipp::*;

const FIXTURE_IMSI: &str = "001010000000001";
const PHONES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ims/phones");

/// One fixture as this test sends it.
struct Phone {
    name: String,
    /// The first REGISTER (IMSI, ports and SPIs made unique).
    text: String,
    v6: bool,
    /// What the README expects from the P-CSCF: 401 (and registration) or 494.
    expect_494: bool,
}

/// The files named in the README rows whose expected answer is 494, and all files it names.
fn readme_expectations() -> (Vec<String>, Vec<String>) {
    let readme = std::fs::read_to_string(Path::new(PHONES).join("README.md")).unwrap();
    let (mut refused, mut named) = (vec![], vec![]);
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let cols: Vec<&str> = line.split('|').collect();
        let files: Vec<String> = cols[1]
            .split('`')
            .filter(|s| s.ends_with(".sip"))
            .map(String::from)
            .collect();
        if cols.len() > 3 && cols[3].contains("494") {
            refused.extend(files.iter().cloned());
        }
        named.extend(files);
    }
    (refused, named)
}

/// `text` with every `key=<number>` increased by `by`.
fn shift_param(text: &str, key: &str, by: u32) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        let (head, tail) = rest.split_at(i + key.len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let n: u32 = tail[..digits].parse().unwrap();
        out.push_str(&(n + by).to_string());
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

fn load_phones() -> Vec<Phone> {
    let (refused, named) = readme_expectations();
    let mut files: Vec<_> = std::fs::read_dir(PHONES)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "fixtures missing in {PHONES}");
    files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            assert!(named.contains(&name), "{name} is not in the README");
            let raw = std::fs::read_to_string(p).unwrap();
            let i = i as u32;
            let imsi = format!("0010100000{:05}", 10 + i);
            let text = shift_param(
                &shift_param(&raw.replace(FIXTURE_IMSI, &imsi), "spi-c=", 100 * i),
                "spi-s=",
                100 * i,
            )
            .replace("port-c=7004", &format!("port-c={}", 7100 + 2 * i))
            .replace("port-s=7005", &format!("port-s={}", 7101 + 2 * i));
            Phone {
                v6: raw.contains("fd00:211::2"),
                expect_494: refused.contains(&name),
                name,
                text,
            }
        })
        .collect()
}

/// The UE's ipsec-3gpp offers in its Security-Client headers (any number of headers, any
/// number of comma-separated entries): (alg, ealg, spi-c, spi-s, port-c, port-s).
fn offers(text: &str) -> Vec<(String, String, u32, u32, u16, u16)> {
    let mut out = vec![];
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("security-client") {
            continue;
        }
        for entry in value.split(',') {
            let mut parts = entry.trim().split(';');
            if parts.next() != Some("ipsec-3gpp") {
                continue;
            }
            let kv: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
            let get = |k: &str| kv.iter().find(|(a, _)| *a == k).map(|(_, v)| *v);
            out.push((
                get("alg").unwrap_or("").to_string(),
                get("ealg").unwrap_or("null").to_string(),
                get("spi-c").unwrap().parse().unwrap(),
                get("spi-s").unwrap().parse().unwrap(),
                get("port-c").unwrap().parse().unwrap(),
                get("port-s").unwrap().parse().unwrap(),
            ));
        }
    }
    out
}

/// The header name of a line, lower-case ("" for the start line and blank lines).
fn hname(line: &str) -> String {
    line.split_once(':')
        .filter(|(n, _)| !n.contains(' ') && !n.is_empty())
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The protected REGISTER derived from the first as the fixtures' README says: CSeq 2, the UE's
/// port-s in Via and Contact (and a new branch: a new transaction, RFC 3261 §17.1.3), our
/// port-s in a Route that names us by address, the AKA digest in Authorization (added if the
/// file had none) and Security-Verify = our Security-Server after the last Security-Client.
fn protected_from(text: &str, ue_port_s: u16, port_s: u16, digest: &str, server: &str) -> String {
    let mut lines: Vec<String> = vec![];
    let mut had_auth = false;
    for line in text.split("\r\n") {
        let l = match hname(line).as_str() {
            "cseq" => line.replace("1 REGISTER", "2 REGISTER"),
            "via" | "v" => line
                .replace(":5060", &format!(":{ue_port_s}"))
                .replace(";branch=z9hG4bK", ";branch=z9hG4bKprot"),
            "contact" | "m" => line.replace(":5060", &format!(":{ue_port_s}")),
            "route" => {
                if line.contains(":5060") {
                    line.replace(":5060", &format!(":{port_s}"))
                } else {
                    route_with_port(line, port_s)
                }
            }
            "authorization" => {
                had_auth = true;
                digest.to_string()
            }
            _ => line.to_string(),
        };
        lines.push(l);
    }
    let last_sc = lines
        .iter()
        .rposition(|l| hname(l) == "security-client")
        .unwrap();
    lines.insert(last_sc + 1, format!("Security-Verify: {server}"));
    if !had_auth {
        lines.insert(last_sc + 1, digest.to_string());
    }
    lines.join("\r\n")
}

/// A Route naming us by address without a port gets our port-s; by name it stays as it is.
fn route_with_port(line: &str, port_s: u16) -> String {
    let Some(at) = line.find("sip:") else {
        return line.to_string();
    };
    let host_start = at + 4;
    let rest = &line[host_start..];
    let host_len = if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find([';', '>', ':']).unwrap_or(rest.len())
    };
    let host = rest[..host_len].trim_matches(['[', ']']);
    if host.parse::<IpAddr>().is_err() || rest[host_len..].starts_with(':') {
        return line.to_string();
    }
    let end = host_start + host_len;
    format!("{}:{port_s}{}", &line[..end], &line[end..])
}

/// Rebuild the IPv6 header a raw IPv6 socket strips, so the SA can check the whole packet.
fn with_v6_header(esp: &[u8], from: Ipv6Addr, to: Ipv6Addr) -> Vec<u8> {
    let mut p = vec![0u8; 40 + esp.len()];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(esp.len() as u16).to_be_bytes());
    p[6] = 50;
    p[7] = 64;
    p[8..24].copy_from_slice(&from.octets());
    p[24..40].copy_from_slice(&to.octets());
    p[40..].copy_from_slice(esp);
    p
}

struct Sockets {
    udp4: UdpSocket,
    udp6: UdpSocket,
    tx4: OwnedFd,
    rx4: OwnedFd,
    esp6: OwnedFd,
}

const UE4: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 2);
const PC4: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const UE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x211, 0, 0, 0, 0, 0, 2);
const PC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x211, 0, 0, 0, 0, 0, 1);

/// Register one phone; Ok(size of the protected REGISTER's IP packet) or what went wrong.
fn register(ph: &Phone, s: &Sockets, deadline: Instant) -> Result<usize, String> {
    let k = aka::hex_array::<16>(K).unwrap();
    let opc = aka::hex_array::<16>(OPC).unwrap();
    let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
    let (udp, ue_ip, pc_ip): (&UdpSocket, IpAddr, IpAddr) = if ph.v6 {
        (&s.udp6, UE6.into(), PC6.into())
    } else {
        (&s.udp4, UE4.into(), PC4.into())
    };
    let pcscf = SocketAddr::new(pc_ip, 5060);
    // the first REGISTER, resent until an answer comes (the P-CSCF may still be starting)
    let mut buf = [0u8; 4096];
    let answer = loop {
        if Instant::now() > deadline {
            return Err("no answer to the first REGISTER".into());
        }
        udp.send_to(ph.text.as_bytes(), pcscf)
            .map_err(|e| e.to_string())?;
        if let Ok((n, from)) = udp.recv_from(&mut buf) {
            if from != pcscf {
                return Err(format!("answer from {from}"));
            }
            break buf[..n].to_vec();
        }
    };
    let status = Message::parse_strict(&answer)
        .map_err(|e| format!("answer unparsable: {e}"))?
        .view()
        .status();
    if ph.expect_494 {
        return if status == Some(494) {
            Ok(0)
        } else {
            Err(format!(
                "expected 494, got {}",
                String::from_utf8_lossy(&answer)
            ))
        };
    }
    // RFC 3581 §4: a Via with rport is answered with received= and rport= (the source port).
    let top_via = ph
        .text
        .split("\r\n")
        .find(|l| matches!(hname(l).as_str(), "via" | "v"))
        .unwrap();
    if top_via.contains(";rport") {
        let via = header(&answer, HeaderName::Via).unwrap_or_default();
        if !via.contains("rport=5060") || !via.contains(&format!("received={ue_ip}")) {
            return Err(format!("401 Via without received/rport (RFC 3581): {via}"));
        }
    }
    let ch = read_challenge(&answer, &mut usim)?;
    let (alg, ealg) = (ch.mech.alg.token(), ch.mech.ealg.token());
    if (alg, ealg) != ("hmac-sha-1-96", "aes-cbc") || ch.server.contains(',') {
        return Err(format!(
            "Security-Server not our one algorithm: {}",
            ch.server
        ));
    }
    let mine = offers(&ph.text);
    let &(_, _, _spi_c, spi_s, port_c, ue_port_s) = mine
        .iter()
        .find(|o| o.0 == alg && o.1 == ealg)
        .ok_or("chosen algorithm not among the UE's offers")?;
    let (ck, ik) = (*ch.auth.ck.as_bytes(), *ch.auth.ik.as_bytes());
    let out = Sa::from_aka(ch.mech.spi_s, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
    let inb = Sa::from_aka(spi_s, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();

    let impi = header(ph.text.as_bytes(), HeaderName::To)
        .and_then(|t| {
            t.split("sip:")
                .nth(1)
                .map(|s| s.split('>').next().unwrap().to_string())
        })
        .ok_or("no To")?;
    let uri = "sip:ims.mnc001.mcc001.3gppnetwork.org";
    let input = aka::digest::DigestInput {
        username: impi.as_bytes(),
        realm: REALM.as_bytes(),
        nonce: ch.nonce.as_bytes(),
        method: b"REGISTER",
        uri: uri.as_bytes(),
        qop: aka::digest::Qop::None,
    };
    let resp = aka::digest::response_aka(&input, &ch.auth.res);
    let digest = format!(
        "Authorization: Digest username=\"{impi}\",realm=\"{REALM}\",uri=\"{uri}\",nonce=\"{}\",response=\"{}\",algorithm=AKAv1-MD5",
        ch.nonce,
        resp.as_str()
    );
    let reg2 = protected_from(&ph.text, ue_port_s, ch.mech.port_s, &digest, &ch.server);
    let src = SocketAddr::new(ue_ip, port_c);
    let dst = SocketAddr::new(pc_ip, ch.mech.port_s);
    let packet = esp_packet(&out, src, dst, reg2.as_bytes());
    if packet.len() > 1500 {
        return Err(format!(
            "protected REGISTER is {} bytes as an IP packet: over 1500, it would be fragmented",
            packet.len()
        ));
    }
    match (ue_ip, pc_ip) {
        (IpAddr::V4(_), IpAddr::V4(p)) => rawip::send_ip(&s.tx4, &packet, p),
        (_, IpAddr::V6(p)) => rawip::send_esp6(&s.esp6, &packet[40..], p),
        _ => unreachable!(),
    }
    let mut pkt = [0u8; 4096];
    while Instant::now() < deadline {
        let mut p = if ph.v6 {
            match rawip::recv_esp6(&s.esp6, &mut pkt) {
                Some((n, from)) => with_v6_header(&pkt[..n], from, UE6),
                None => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        } else {
            match rawip::recv_ip(&s.rx4, &mut pkt) {
                Some(n) => pkt[..n].to_vec(),
                None => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
        };
        let Ok((inner, _)) = inb.decapsulate(&mut p) else {
            continue; // another phone's SA
        };
        let inner = &p[inner];
        let L4::Udp { dst, payload, .. } = classify(inner) else {
            return Err("inner packet not UDP".into());
        };
        let sip = &inner[payload.start..payload.end];
        let st = Message::parse_strict(sip)
            .ok()
            .and_then(|m| m.view().status());
        if st != Some(200) {
            return Err(format!(
                "protected answer: {}",
                String::from_utf8_lossy(sip)
            ));
        }
        if dst.port() != ue_port_s {
            return Err(format!(
                "200 to port {} instead of our port-s {ue_port_s}",
                dst.port()
            ));
        }
        return Ok(packet.len());
    }
    Err("no 200 over ESP".into())
}

#[test]
fn every_phone_shape_registers_through_xdp_and_the_core_sees_no_route_to_us() {
    phones_through("xdp", "fx");
}

#[test]
fn every_phone_shape_registers_through_afpacket_and_the_core_sees_no_route_to_us() {
    phones_through("afpacket", "fa");
}

#[test]
fn every_phone_shape_registers_through_sockets_and_the_core_sees_no_route_to_us() {
    phones_through("socket", "fs");
}

/// Every fixture through one `pcscf run` on `backend`; `tag` keeps the labs of the three
/// backends apart when the tests run at once.
fn phones_through(backend: &str, tag: &str) {
    require_sipp();
    let t0 = Instant::now();
    let phones = load_phones();
    let forwarded = phones.iter().filter(|p| !p.expect_494).count();
    assert!(
        phones.iter().any(|p| p.expect_494) && phones.iter().any(|p| p.v6),
        "the README's 494 row and the IPv6 fixtures are part of the proof"
    );
    let lab = Lab::new("pphn", tag).unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    // SIPp speaks UDP: requests toward it stay datagrams whatever their size
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\nmax_udp_request = 65535\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nmax_udp_request = 65535\nhostname = \"{HOSTNAME}\"\nreg_event = false\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"{backend}\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_ue_addr6,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr
    );
    let pcscf = start_pcscf(&lab, &format!("phones-{backend}"), &cfg);

    // One vector for every call: each phone has a fresh USIM, so the same SQN is fresh to each.
    let mut hss = test_hss();
    let av = hss.next_vector(&[0x31; 16]).unwrap();
    let dir = work_dir(&format!("phones-{backend}"));
    let sipp = start_scscf(&lab, &dir, HOSTNAME, (forwarded, 25), &av);

    let deadline = Instant::now() + Duration::from_secs(25);
    let ue = spawn_in(&lab.ue, move || {
        let udp4 = UdpSocket::bind((UE4, 5060)).unwrap();
        let udp6 = UdpSocket::bind((UE6, 5060)).unwrap();
        for u in [&udp4, &udp6] {
            u.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let s = Sockets {
            udp4,
            udp6,
            tx4: rawip::raw(libc::IPPROTO_RAW).unwrap(),
            rx4: rawip::raw(libc::IPPROTO_ESP).unwrap(),
            esp6: rawip::esp6_socket().unwrap(),
        };
        phones
            .iter()
            .map(|ph| Outcome {
                name: ph.name.clone(),
                call_id: call_id(&ph.text),
                refused: ph.expect_494,
                result: register(ph, &s, deadline),
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();

    let failed: Vec<String> = ue
        .iter()
        .filter_map(|o| o.result.as_ref().err().map(|e| format!("{}: {e}", o.name)))
        .collect();
    // a phone that failed never reaches the core: don't wait for SIPp's -m count then
    let limit = if failed.is_empty() { 25 } else { 2 };
    let core = sipp.finish(Duration::from_secs(limit));
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let pc = pcscf.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&pc.stderr);
    assert!(
        failed.is_empty(),
        "phones that did not register as the README expects:\n{}\n\npcscf:\n{}\n{}",
        failed.join("\n"),
        tail(&report, 4000),
        core.report("SIPp S-CSCF")
    );
    assert!(
        core.clean(),
        "the core's checks failed:\n{}",
        core.report("SIPp S-CSCF")
    );
    // nothing of a refused phone reached the core
    for o in ue.iter().filter(|o| o.refused) {
        assert!(
            !core.messages.contains(&o.call_id),
            "{} was refused but reached the core",
            o.name
        );
    }
    assert!(
        report.contains(&format!("registered: {forwarded}")),
        "{report}"
    );
    let sizes: Vec<String> = ue
        .iter()
        .map(|o| format!("{}={}", o.name, o.result.as_ref().unwrap()))
        .collect();
    eprintln!(
        "{backend}: {} phones ({forwarded} registered) in {:?}; protected REGISTER IP packet sizes: {}",
        ue.len(),
        t0.elapsed(),
        sizes.join(" ")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What became of one phone.
struct Outcome {
    name: String,
    call_id: String,
    refused: bool,
    result: Result<usize, String>,
}

fn call_id(text: &str) -> String {
    text.split("\r\n")
        .find(|l| matches!(hname(l).as_str(), "call-id" | "i"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap()
}

/// The derivation of the protected REGISTER, without a network.
#[test]
fn protected_register_is_derived_as_the_readme_says() {
    let text = "REGISTER sip:ims.mnc001.mcc001.3gppnetwork.org SIP/2.0\r\nv: SIP/2.0/UDP 10.211.0.2:5060;branch=z9hG4bKa;rport\r\nRoute: <sip:10.211.0.1;lr>\r\nm: <sip:x@10.211.0.2:5060>\r\nCSeq: 1 REGISTER\r\nSecurity-Client: ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c=1;spi-s=2;port-c=7100;port-s=7101\r\nl: 0\r\n\r\n";
    let out = protected_from(text, 7101, 5103, "Authorization: Digest x", "ipsec-3gpp;x");
    assert!(out.contains("v: SIP/2.0/UDP 10.211.0.2:7101;branch=z9hG4bKprota;rport"));
    assert!(out.contains("Route: <sip:10.211.0.1:5103;lr>"));
    assert!(out.contains("m: <sip:x@10.211.0.2:7101>"));
    assert!(out.contains("CSeq: 2 REGISTER"));
    assert!(out.contains(
        "port-s=7101\r\nAuthorization: Digest x\r\nSecurity-Verify: ipsec-3gpp;x\r\nl: 0\r\n\r\n"
    ));
    assert_eq!(
        route_with_port("Route: <sip:[FD00:211:0:0::1];lr>", 5103),
        "Route: <sip:[FD00:211:0:0::1]:5103;lr>"
    );
    assert_eq!(
        route_with_port(
            "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>",
            5103
        ),
        "Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr>"
    );
    assert_eq!(offers(text).len(), 1);
    assert_eq!(
        shift_param("spi-c=3000;spi-s=3001", "spi-s=", 100),
        "spi-c=3000;spi-s=3101"
    );
}
