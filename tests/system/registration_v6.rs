//! An IPv6 UE registers through `pcscf run` (AF_XDP) in namespaces: the unprotected REGISTER
//! and 401 over IPv6 UDP, the protected REGISTER as ESP over IPv6, the 200 back as ESP over IPv6;
//! the core side stays IPv4. Needs root (CI runs as root).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcscf::aka::{self, Milenage, UeSqnState, Usim};
use pcscf::dataplane::{L4, classify};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;
use pcscf::sip::Message;

use crate::support::ims::*;

const REGISTER_V6: &str = include_str!("../data/ims/register1_v6.sip");

/// A raw IPv6 socket for ESP: the kernel writes (and strips) the IPv6 header.
fn esp6_socket() -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            libc::IPPROTO_ESP,
        )
    };
    assert!(
        fd >= 0,
        "raw IPv6 ESP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn send_esp6(fd: &OwnedFd, esp: &[u8], dst: Ipv6Addr) {
    // SAFETY: sockaddr_in6 is plain data; we fill family and address.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_addr.s6_addr = dst.octets();
    // SAFETY: esp is valid for its length; sa is a valid sockaddr_in6.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            esp.as_ptr() as *const libc::c_void,
            esp.len(),
            0,
            &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
    assert_eq!(
        n as usize,
        esp.len(),
        "sendto: {}",
        std::io::Error::last_os_error()
    );
}

/// The next ESP payload (no IPv6 header) and its source.
fn recv_esp6(fd: &OwnedFd, buf: &mut [u8], until: Instant) -> Option<(usize, Ipv6Addr)> {
    while Instant::now() < until {
        // SAFETY: as above; recvfrom fills `from` up to its size.
        let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
                &mut from as *mut libc::sockaddr_in6 as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n > 0 {
            return Some((n as usize, Ipv6Addr::from(from.sin6_addr.s6_addr)));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

#[test]
fn ipv6_ue_registers_over_esp() {
    let lab = Lab::new("pv6", "v6").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let realm = "ims.mnc001.mcc001.3gppnetwork.org";
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nhostname = \"pcscf.{realm}\"\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_ue_addr6,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr
    );
    let pcscf = start_pcscf(&lab, "v6", &cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let core_addr = SocketAddr::new(lab.core_addr, 5060);
    let s2 = stop.clone();
    let core = spawn_in(&lab.core, move || sim::core::serve(core_addr, realm, s2));

    let IpAddr::V6(ue6) = lab.ue_addr6 else {
        unreachable!()
    };
    let IpAddr::V6(pc6) = lab.pcscf_ue_addr6 else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let ue = spawn_in(&lab.ue, move || -> Result<Vec<u8>, String> {
        let k = aka::hex_array::<16>(sim::core::TEST_K).unwrap();
        let opc = aka::hex_array::<16>(sim::core::TEST_OPC).unwrap();
        let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
        let register = REGISTER_V6.replace("2001:db8:46::6", &ue6.to_string());
        let s = UdpSocket::bind(SocketAddr::new(ue6.into(), 5060)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let pcscf = SocketAddr::new(pc6.into(), 5060);
        let Challenge { server, mech, nonce, auth: got } = challenge(&s, register.as_bytes(), pcscf, &mut usim, deadline)?;
        let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
        let sa1 = Sa::from_aka(mech.spi_s, "hmac-sha-1-96", "aes-cbc", &ck, &ik, SaOptions::default()).unwrap();
        let sa2 = Sa::from_aka(3523141112, "hmac-sha-1-96", "aes-cbc", &ck, &ik, SaOptions::default()).unwrap();
        // the protected REGISTER: the v6 fixture with Security-Verify and the digest response
        let uri = format!("sip:{realm}");
        let input = aka::digest::DigestInput {
            username: IMPI.as_bytes(),
            realm: REALM.as_bytes(),
            nonce: nonce.as_bytes(),
            method: b"REGISTER",
            uri: uri.as_bytes(),
            qop: aka::digest::Qop::None,
        };
        let resp = aka::digest::response_aka(&input, &got.res);
        let start = register.find("Authorization:").unwrap();
        let end = start + register[start..].find("\r\n").unwrap() + 2;
        let reg2 = format!(
            "{}Authorization: Digest username=\"{IMPI}\",realm=\"{REALM}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\nSecurity-Verify: {server}\r\n{}",
            &register[..start],
            resp.as_str(),
            &register[end..]
        )
        .replacen("CSeq: 1 REGISTER", "CSeq: 2 REGISTER", 1);
        let src = SocketAddr::new(ue6.into(), 6301);
        let dst = SocketAddr::new(pc6.into(), mech.port_s);
        let packet = esp_packet(&sa1, src, dst, reg2.as_bytes());
        let esp = esp6_socket();
        send_esp6(&esp, &packet[40..], pc6); // the kernel writes the IPv6 header
        let mut pkt = [0u8; 4096];
        while let Some((n, from)) = recv_esp6(&esp, &mut pkt, deadline) {
            // rebuild the IPv6 header the raw socket stripped, to decapsulate the whole packet
            let mut p = vec![0u8; 40 + n];
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(n as u16).to_be_bytes());
            p[6] = 50;
            p[7] = 64;
            p[8..24].copy_from_slice(&from.octets());
            p[24..40].copy_from_slice(&ue6.octets());
            p[40..].copy_from_slice(&pkt[..n]);
            let Ok((inner, _)) = sa2.decapsulate(&mut p) else { continue };
            let inner = &p[inner];
            let L4::Udp { src, dst, payload } = classify(inner) else {
                return Err("inner not UDP".into());
            };
            if dst.port() != 6300 || src.port() != mech.port_c || src.ip() != IpAddr::V6(pc6) {
                return Err(format!("200 on the wrong flow {src} -> {dst}"));
            }
            return Ok(inner[payload.start..payload.end].to_vec());
        }
        Err("no ESP answer over IPv6".into())
    })
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let core_stats = core.join().unwrap().unwrap();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let out = pcscf.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let ok = ue.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(
        Message::parse_strict(&ok).unwrap().view().status(),
        Some(200),
        "{log}"
    );
    assert_eq!(core_stats.registered, 1);
    assert!(log.contains("registered: 1"), "{log}");
}
