//! A UE and an IMS core for tests: the messages of the registration flow built from the test
//! fixtures, our AKA code as the USIM and as the HSS/S-CSCF (TS 35.208 test set 1).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcscf::aka::{self, UeAuthResult, Usim, digest};
use pcscf::control::registrar::{RegistrarConfig, SOURCE_BURST, SOURCE_PER_SECOND};
use pcscf::esp::SaOptions;
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::esp::{Frame, Sa};
use pcscf::satable::{SaReader, SaTableConfig, SaWriter, sa_table};
use pcscf::sim::rawip;
use pcscf::sip::headers::{Digest, IpsecOffer, SecMechanism};
use pcscf::sip::rules::build_response;
use pcscf::sip::{HeaderName, Message};

pub const REGISTER1: &str = include_str!("../data/ims/register1_v4.sip");
pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";
/// The P-CSCF's hostname in the lab and the sans-IO tests.
pub const HOSTNAME: &str = "pcscf.ims.mnc001.mcc001.3gppnetwork.org";

/// The registrar of the sans-IO tests: UE side 10.46.0.1, core side 10.0.1.10, the I-CSCF or
/// DNS server given, room for 8 transactions, the default per-source limits.
pub fn registrar_config(icscf: Option<SocketAddr>, dns: Option<SocketAddr>) -> RegistrarConfig {
    RegistrarConfig {
        ue_addrs: vec!["10.46.0.1".parse().unwrap()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core: addr("10.0.1.10:5060"),
        icscf,
        dns,
        home_domains: vec![],
        icscf_by_domain: vec![],
        icscf_tcp: false,
        core_max_udp_request: usize::MAX,
        source_limit: (SOURCE_BURST, SOURCE_PER_SECOND),
        via_sent_by: "10.0.1.10:5060".into(),
        path_uri: "sip:term@pcscf.test:5060;lr".into(),
        own_hosts: vec!["pcscf.ims.mnc001.mcc001.3gppnetwork.org".into()],
        visited_network_id: "\"Visited\"".into(),
        orig_ioi: "visited.test".into(),
        prefs: vec![
            (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
            (IntegAlg::HmacMd5_96, EncAlg::Null),
        ],
        sa_options: SaOptions::default(),
        max_pending: 8,
        reg_event: false,
    }
}

/// The SA table of the sans-IO tests: `inbound` inbound entries, 64 outbound, SPIs from 4096.
pub fn test_sa_table(inbound: u32) -> (SaWriter, SaReader) {
    sa_table(SaTableConfig {
        inbound_capacity: inbound,
        outbound_capacity: 64,
        spi_min: 4096,
        spi_max: 1 << 20,
    })
    .unwrap()
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The core's answer to a forwarded REGISTER: `code` with the request's Via/From/To/Call-ID/CSeq
/// and `extra` header lines.
pub fn core_answer(req: &[u8], code: u16, reason: &str, extra: &str) -> Vec<u8> {
    let m = Message::parse(req).unwrap();
    let mut out = vec![0u8; 4096];
    let n = build_response(
        m.view(),
        code,
        reason,
        b"scscf",
        &[extra.as_bytes()],
        &mut out,
    )
    .unwrap();
    out.truncate(n);
    out
}

pub fn header(msg: &[u8], h: HeaderName) -> Option<String> {
    let m = Message::parse(msg).unwrap();
    m.view()
        .header(h)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The UE's protected REGISTER: the first one with Security-Verify = our Security-Server and the
/// digest response computed from RES.
pub fn protected_register(nonce: &str, res: &aka::Res, server: &str) -> Vec<u8> {
    let uri = "sip:ims.mnc001.mcc001.3gppnetwork.org";
    let input = digest::DigestInput {
        username: IMPI.as_bytes(),
        realm: REALM.as_bytes(),
        nonce: nonce.as_bytes(),
        method: b"REGISTER",
        uri: uri.as_bytes(),
        qop: digest::Qop::None,
    };
    let resp = digest::response_aka(&input, res);
    let auth = format!(
        "Authorization: Digest username=\"{IMPI}\",realm=\"{REALM}\",uri=\"{uri}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\n",
        resp.as_str()
    );
    let start = REGISTER1.find("Authorization:").unwrap();
    let end = start + REGISTER1[start..].find("\r\n").unwrap() + 2;
    let mut s = format!(
        "{}{}Security-Verify: {server}\r\n{}",
        &REGISTER1[..start],
        auth,
        &REGISTER1[end..]
    );
    s = s.replacen("CSeq: 1 REGISTER", "CSeq: 2 REGISTER", 1);
    s.into_bytes()
}

/// Start `pcscf run` in the lab's P-CSCF namespace with `config` (TOML text), stderr piped.
pub fn start_pcscf(lab: &pcscf::lab::Lab, name: &str, config: &str) -> Child {
    let path = std::env::temp_dir().join(format!("{}-{name}.toml", lab.pcscf));
    std::fs::write(&path, config).unwrap();
    Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.pcscf,
            env!("CARGO_BIN_EXE_pcscf"),
            "run",
            "--config",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pcscf")
}

/// What the UE takes from the 401: our Security-Server (text, for its Security-Verify, and
/// parsed), the nonce, and what the USIM made of it.
pub struct Challenge {
    pub server: String,
    pub mech: IpsecOffer,
    pub nonce: String,
    pub auth: UeAuthResult,
}

/// Steps 1–3 as the UE: send the unprotected `register` from `s` to `pcscf` until an answer
/// comes (the P-CSCF may still be starting), then [`read_challenge`] it. `s` needs a read timeout.
pub fn challenge(
    s: &UdpSocket,
    register: &[u8],
    pcscf: SocketAddr,
    usim: &mut Usim,
    deadline: Instant,
) -> Result<Challenge, String> {
    let mut buf = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            return Err("no 401".into());
        }
        s.send_to(register, pcscf).map_err(|e| e.to_string())?;
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return read_challenge(&buf[..n], usim);
        }
    }
}

/// The UE's reading of an answer to its REGISTER: it must be the 401 with our Security-Server,
/// and the USIM must accept its nonce.
pub fn read_challenge(answer: &[u8], usim: &mut Usim) -> Result<Challenge, String> {
    let m = Message::parse_strict(answer).map_err(|e| e.to_string())?;
    let v = m.view();
    if v.status() != Some(401) {
        return Err(format!(
            "expected 401, got {}",
            String::from_utf8_lossy(answer)
        ));
    }
    let server = String::from_utf8_lossy(
        v.header(HeaderName::SecurityServer)
            .ok_or("no Security-Server")?,
    )
    .into_owned();
    let mech = SecMechanism::parse(server.as_bytes())
        .and_then(|m| m.ipsec().ok())
        .ok_or_else(|| format!("bad Security-Server {server}"))?;
    let www = v
        .header(HeaderName::WwwAuthenticate)
        .ok_or("no WWW-Authenticate")?;
    let nonce = Digest::parse(www)
        .and_then(|d| d.nonce().map(|n| String::from_utf8_lossy(n).into_owned()))
        .ok_or("no nonce")?;
    let auth = usim
        .authenticate_nonce(&nonce)
        .map_err(|e| format!("{e:?}"))?;
    Ok(Challenge {
        server,
        mech,
        nonce,
        auth,
    })
}

/// A SIP message as the UE's ESP packet over `sa`: UDP `src` → `dst` in an IP header of their
/// family, then ESP (transport mode). The whole IP packet comes back.
pub fn esp_packet(sa: &Sa, src: SocketAddr, dst: SocketAddr, sip: &[u8]) -> Vec<u8> {
    let ip_udp = if src.is_ipv4() { 20 + 8 } else { 40 + 8 };
    let at = 256 + ip_udp;
    let mut frame = vec![0u8; at + sip.len() + 512];
    frame[at..at + sip.len()].copy_from_slice(sip);
    let r = pcscf::wire::emit_datagram(&mut frame, at..at + sip.len(), src, dst)
        .ok()
        .unwrap();
    let mut f = Frame::new(&mut frame, r.start, r.end);
    sa.outbound(&mut f).unwrap();
    let (fs, fe) = (f.start, f.end);
    frame[fs..fe].to_vec()
}

/// The next IP packet on the raw socket `fd` before `until` (it is non-blocking: poll it).
pub fn recv_ip_until(fd: &OwnedFd, buf: &mut [u8], until: Instant) -> Option<usize> {
    while Instant::now() < until {
        if let Some(n) = rawip::recv_ip(fd, buf) {
            return Some(n);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// A flood from `from` (a UE-side address) at the P-CSCF `pcscf` until `stop` or `max` garbage
/// datagrams: garbage at 5060, and every tenth time an ESP packet under an SPI nobody gave out,
/// `pause` between datagrams. Returns (garbage, forged ESP) sent.
pub fn flood(
    from: std::net::Ipv4Addr,
    pcscf: std::net::Ipv4Addr,
    stop: &std::sync::atomic::AtomicBool,
    max: u64,
    pause: Duration,
) -> (u64, u64) {
    let s = UdpSocket::bind(SocketAddr::new(from.into(), 0)).unwrap();
    let raw = rawip::raw(libc::IPPROTO_RAW).unwrap();
    let forged = Sa::from_aka(
        0x7777_0000,
        "null",
        "aes-gcm",
        &[1; 16],
        &[2; 16],
        SaOptions::default(),
    )
    .unwrap();
    let mut sent = (0u64, 0u64);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent.0 < max {
        let _ = s.send_to(
            b"INVITE garbage \xff\xfe\r\n\r\n",
            SocketAddr::new(pcscf.into(), 5060),
        );
        sent.0 += 1;
        if sent.0.is_multiple_of(10) {
            let p = esp_packet(
                &forged,
                SocketAddr::new(from.into(), 7004),
                SocketAddr::new(pcscf.into(), 5101),
                &[0u8; 20],
            );
            rawip::send_ip(&raw, &p, pcscf);
            sent.1 += 1;
        }
        std::thread::sleep(pause);
    }
    sent
}

/// The home network's view of the test subscriber (K/OPc above, AMF 8000).
pub fn test_hss() -> aka::HssSubscriber {
    let (k, opc) = (
        aka::hex_array::<16>(K).unwrap(),
        aka::hex_array::<16>(OPC).unwrap(),
    );
    aka::HssSubscriber::new(
        aka::Milenage::new(&k, &opc),
        aka::SqnGenerator::with_default_step(),
        [0x80, 0],
    )
}

/// The test subscriber's USIM (K/OPc above), SQN state fresh.
pub fn test_usim() -> aka::Usim {
    let (k, opc) = (
        aka::hex_array::<16>(K).unwrap(),
        aka::hex_array::<16>(OPC).unwrap(),
    );
    aka::Usim::new(aka::Milenage::new(&k, &opc), aka::UeSqnState::default())
}

/// `GET /metrics` from `pcscf run` (`[stats] prometheus = "127.0.0.1:<port>"`) inside the
/// lab's P-CSCF namespace: every `name{labels} value` line.
pub fn scrape(lab: &pcscf::lab::Lab, port: u16) -> std::collections::HashMap<String, u64> {
    use std::io::{Read, Write};
    let text = pcscf::lab::spawn_in(&lab.pcscf, move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .join()
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}
