//! Real phones' REGISTER, proven by stacks we did not write: SIPp as the UE (`tests/sipp/ue_register.xml`:
//! Digest AKAv1-MD5 with its own K/OP/AMF, `Route: <sip:10.211.0.1:5060;lr>` on the first
//! REGISTER and `<sip:10.211.0.1:PORT_S;lr>` on the protected one) registers through
//! `pcscf run` (AF_XDP) to SIPp as the I-CSCF/S-CSCF (`tests/sipp/scscf_uas.xml`), which fails
//! on any forwarded Route naming the P-CSCF. Both SIPps must exit 0 with empty error files.
//! Once over IPv4 and once over IPv6 (`<sip:[fd00:211::1]:5060;lr>`; the core side stays IPv4).
//!
//! SIPp has no ESP and the kernel here has none either (shared/spec/testbed.md §2), so the UE
//! namespace runs a small user-space ESP shim as SIPp's remote host: SIPp's messages reach it
//! as plain UDP on loopback and leave unchanged — as plain UDP from UE:5060 until the 401 has
//! arrived, then inside ESP (RFC 4303 transport mode) from the UE's port-c to our port-s. The
//! shim learns CK/IK by running AKA itself on the 401's nonce with the scenario's K/OP (read
//! from the scenario file, so SIPp and the shim cannot disagree), the UE's SPIs/ports from the
//! Security-Client SIPp sent and ours from the Security-Server of the 401, as a phone's IPsec
//! layer would (TS 33.203 §7.1). ESP from us is decrypted and its UDP payload handed to SIPp.
//! Needs root and sipp (CI installs both). [`register_sipp_ue`] leaves the lab, pcscf and the
//! shim running for the calls of tests/system/sipp_calls.rs.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pcscf::aka::{self, HssSubscriber, Milenage, SqnGenerator, UeSqnState, Usim};
use pcscf::dataplane::{L4, classify};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim::rawip;

use crate::support::ims::*;
use crate::support::sipp::*;

/// SIPp (UE) and the shim's side facing it, on the UE namespace's loopback.
const SIPP_UE: &str = "127.0.0.1:5070";
const SHIM: &str = "127.0.0.1:5071";
/// The UE's offer in Security-Client (passed to SIPp with -key).
const SPI_C: u32 = 7001;
const SPI_S: u32 = 7002;
const PORT_C: u16 = 6100;
pub(crate) const PORT_S: u16 = 6101;

/// `name=0x<hex>` of the scenario's `[authentication …]`, without SIPp's C-string `00`.
fn scenario_hex(text: &str, name: &str, len: usize) -> Vec<u8> {
    let at = text.find(&format!("{name}=0x")).unwrap() + name.len() + 3;
    let hexs: String = text[at..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(
        hexs.len(),
        2 * len + 2,
        "{name}: {len} bytes and the C-string 00"
    );
    assert!(
        hexs.ends_with("00"),
        "{name} must end in 00 (SIPp reads a C string)"
    );
    let b: Vec<u8> = (0..len)
        .map(|i| u8::from_str_radix(&hexs[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // bytes SIPp 3.6 cannot carry in these values (C string, line ends, its [keyword] syntax)
    assert!(
        !b.iter()
            .any(|x| matches!(x, 0x00 | 0x0a | 0x0d | 0x5b..=0x5d)),
        "{name} has a byte SIPp mangles"
    );
    b
}

/// What the shim saw and did.
#[derive(Debug, Default)]
pub(crate) struct ShimStats {
    pub plain_out: u32,
    pub plain_in: u32,
    pub esp_out: u32,
    pub esp_in: u32,
    /// ESP packets that did not decrypt under our SAs.
    pub esp_bad: u32,
    pub error: Option<String>,
}

/// The UE's offer from the Security-Client line of a message SIPp sent.
fn client_offer(msg: &str) -> Option<(u32, u32, u16, u16)> {
    let line = msg
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("security-client:"))?;
    let get = |k: &str| {
        line.split(';')
            .find_map(|p| p.trim().strip_prefix(k))
            .and_then(|v| v.split(',').next())
            .map(str::to_string)
    };
    Some((
        get("spi-c=")?.parse().ok()?,
        get("spi-s=")?.parse().ok()?,
        get("port-c=")?.parse().ok()?,
        get("port-s=")?.parse().ok()?,
    ))
}

/// The ESP shim: SIPp's datagrams on `SHIM` go to the P-CSCF (plain before the 401, ESP after);
/// what comes back (plain UDP to UE:5060, ESP under the UE's inbound SPIs) goes to SIPp.
fn shim(ue: IpAddr, pcscf: IpAddr, k: [u8; 16], op: [u8; 16], stop: Arc<AtomicBool>) -> ShimStats {
    let mut st = ShimStats::default();
    let from_sipp = UdpSocket::bind(SHIM).unwrap();
    let plain = UdpSocket::bind((ue, 5060)).unwrap();
    for s in [&from_sipp, &plain] {
        s.set_nonblocking(true).unwrap();
    }
    let tx = rawip::raw(libc::IPPROTO_RAW).unwrap();
    let rx = rawip::raw(libc::IPPROTO_ESP).unwrap();
    let esp6 = rawip::esp6_socket().unwrap();
    let sipp: SocketAddr = SIPP_UE.parse().unwrap();
    let mut usim = Usim::new(Milenage::from_op(&k, &op), UeSqnState::default());
    let mut offer = None;
    // (outbound SA, inbound SAs, our port-s)
    let mut sas: Option<(Sa, [Sa; 2], u16)> = None;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        if let Ok((n, _)) = from_sipp.recv_from(&mut buf) {
            idle = false;
            let msg = &buf[..n];
            match &sas {
                None => {
                    if offer.is_none() {
                        offer = client_offer(&String::from_utf8_lossy(msg));
                    }
                    plain.send_to(msg, (pcscf, 5060)).unwrap();
                    st.plain_out += 1;
                }
                Some((out, _, port_ps)) => {
                    let (_, _, port_c, _) = offer.unwrap();
                    let src = SocketAddr::new(ue, port_c);
                    let dst = SocketAddr::new(pcscf, *port_ps);
                    let p = esp_packet(out, src, dst, msg);
                    if p.len() > 1500 {
                        st.error =
                            Some(format!("protected message of {} bytes over 1500", p.len()));
                    }
                    match pcscf {
                        IpAddr::V4(a) => rawip::send_ip(&tx, &p, a),
                        // the kernel writes the IPv6 header
                        IpAddr::V6(a) => rawip::send_esp6(&esp6, &p[40..], a),
                    }
                    st.esp_out += 1;
                }
            }
        }
        if let Ok((n, from)) = plain.recv_from(&mut buf) {
            idle = false;
            st.plain_in += 1;
            let msg = buf[..n].to_vec();
            if sas.is_none() && msg.starts_with(b"SIP/2.0 401") && from.port() == 5060 {
                // the 401 sets up the SAs (TS 33.203 §7.1): keys from AKA, SPIs/ports from
                // Security-Client (ours, as SIPp sent it) and Security-Server (the P-CSCF's)
                match (read_challenge(&msg, &mut usim), offer) {
                    (Ok(ch), Some((spi_c, spi_s, _, _))) => {
                        let (ck, ik) = (*ch.auth.ck.as_bytes(), *ch.auth.ik.as_bytes());
                        let (a, e) = (ch.mech.alg.token(), ch.mech.ealg.token());
                        let sa =
                            |spi| Sa::from_aka(spi, a, e, &ck, &ik, SaOptions::default()).unwrap();
                        sas = Some((sa(ch.mech.spi_s), [sa(spi_s), sa(spi_c)], ch.mech.port_s));
                    }
                    (Err(e), _) => st.error = Some(format!("shim cannot read the 401: {e}")),
                    (_, None) => st.error = Some("no Security-Client seen".into()),
                }
            }
            from_sipp.send_to(&msg, sipp).unwrap();
        }
        let got = match ue {
            IpAddr::V4(_) => rawip::recv_ip(&rx, &mut buf).map(|n| buf[..n].to_vec()),
            IpAddr::V6(me) => rawip::recv_esp6(&esp6, &mut buf)
                .map(|(n, from)| with_v6_header(&buf[..n], from, me)),
        };
        if let Some(p) = got {
            idle = false;
            let inbound = sas.as_ref().map(|(_, i, _)| i);
            let dec = inbound.and_then(|i| {
                i.iter().find_map(|sa| {
                    let mut q = p.clone();
                    sa.decapsulate(&mut q).ok().map(|(r, _)| q[r].to_vec())
                })
            });
            match dec.as_deref().map(classify) {
                Some(L4::Udp { payload, .. }) => {
                    st.esp_in += 1;
                    let inner = dec.as_ref().unwrap();
                    from_sipp
                        .send_to(&inner[payload.start..payload.end], sipp)
                        .unwrap();
                }
                _ => st.esp_bad += 1,
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    st
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

#[test]
fn sipp_ue_registers_over_ipv4_with_our_address_in_route() {
    sipp_ue_registers(false);
}

#[test]
fn sipp_ue_registers_over_ipv6_with_our_address_in_route() {
    sipp_ue_registers(true);
}

/// `[v6]` for a SIP URI or Via host.
pub(crate) fn uri_host(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The SIPp UE registered (or not: see the outcomes) through `pcscf run` in a lab of its own,
/// with the ESP shim still running in the UE namespace, so that what follows (calls,
/// tests/system/sipp_calls.rs) goes over the SAs the registration set up. Dropping it stops
/// the shim and pcscf; [`Registered::stop`] does so and returns what they report.
pub(crate) struct Registered {
    pub lab: Lab,
    pub dir: PathBuf,
    pub ue_ip: IpAddr,
    pub pc_ip: IpAddr,
    /// The nonce the core handed out and the vector behind it.
    pub nonce: String,
    pub av: aka::AuthVector,
    pub ue_out: SippOutcome,
    pub core_out: SippOutcome,
    pcscf: Option<Child>,
    stop: Arc<AtomicBool>,
    shim: Option<JoinHandle<ShimStats>>,
}

impl Registered {
    /// Stop the shim and pcscf: what the shim saw and did, and pcscf's report (its stderr).
    pub fn stop(&mut self) -> (ShimStats, String) {
        self.stop.store(true, Ordering::Relaxed);
        let shim_stats = self
            .shim
            .take()
            .map(|s| s.join().unwrap())
            .unwrap_or_default();
        let report = match self.pcscf.take() {
            Some(pcscf) => {
                // SAFETY: kill(2) on our child's pid.
                unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
                let pc = pcscf.wait_with_output().unwrap();
                String::from_utf8_lossy(&pc.stderr).into_owned()
            }
            None => String::new(),
        };
        (shim_stats, report)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // a test that failed half-way leaves neither pcscf nor the shim behind
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut pcscf) = self.pcscf.take() {
            let _ = pcscf.kill();
            let _ = pcscf.wait();
        }
    }
}

/// The SIPp UE's arguments, `-key` for each of `keys`: SIPp on [`SIPP_UE`] with the shim as its
/// remote host, one call within 20 s.
pub(crate) fn sipp_ue_args(keys: &[(&str, String)]) -> Vec<String> {
    let (ip, port) = SIPP_UE.split_once(':').unwrap();
    one_call_args(ip, port, Some(SHIM), keys)
}

/// Register the SIPp UE (`tests/sipp/ue_register.xml`) through `pcscf run` (AF_XDP) in a new
/// lab (`prefix`, `tag`, as [`Lab::new`]) to SIPp as the I-CSCF/S-CSCF
/// (`tests/sipp/scscf_uas.xml`); its IPv6 address when `v6` (the core side stays IPv4). With
/// `tcp` the core speaks TCP: SIPp as the S-CSCF runs with `-t t1`, its Service-Route says
/// `;transport=tcp`, and pcscf's I-CSCF is `icscf_transport = "tcp"` (the UE side stays UDP
/// over the SAs: SIPp as the UE takes no TCP). Both SIPps have finished when it returns; their
/// outcomes are for the caller to judge.
pub(crate) fn register_sipp_ue(prefix: &str, tag: &str, v6: bool, tcp: bool) -> Registered {
    require_sipp();
    let ue_xml = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/ue_register.xml");
    let text = std::fs::read_to_string(ue_xml).unwrap();
    let k: [u8; 16] = scenario_hex(&text, "aka_K", 16).try_into().unwrap();
    let op: [u8; 16] = scenario_hex(&text, "aka_OP", 16).try_into().unwrap();
    let amf: [u8; 2] = scenario_hex(&text, "aka_AMF", 2).try_into().unwrap();

    // The vector SIPp (core) hands out: a RAND whose RES has no 0x00 byte, since SIPp (UE)
    // hashes RES with strlen().
    let m = Milenage::from_op(&k, &op);
    let rand = (1u8..=255)
        .map(|r| [r; 16])
        .find(|r| !m.f2(r).as_bytes().contains(&0))
        .unwrap();
    let mut hss = HssSubscriber::new(m, SqnGenerator::with_default_step(), amf);
    let av = hss.next_vector(&rand).unwrap();
    assert!(!av.xres.as_bytes().contains(&0));
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();

    let lab = Lab::new(prefix, tag).unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let (ue_ip, pc_ip) = if v6 {
        (lab.ue_addr6, lab.pcscf_ue_addr6)
    } else {
        (lab.ue_addr, lab.pcscf_ue_addr)
    };
    // SIPp as the UE speaks UDP: requests toward it stay datagrams whatever their size
    let icscf_transport = if tcp { "tcp" } else { "udp" };
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\", \"{}\"]\nmax_udp_request = 65535\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nicscf_transport = \"{icscf_transport}\"\nmax_udp_request = 65535\nhostname = \"{HOSTNAME}\"\nreg_event = false\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if,
        lab.pcscf_ue_addr,
        lab.pcscf_ue_addr6,
        lab.pcscf_core_if,
        lab.pcscf_core_addr,
        lab.core_addr
    );
    let pcscf = start_pcscf(&lab, &format!("{prefix}-{tag}"), &cfg);

    let dir = work_dir(&format!("{prefix}-{tag}"));
    let extra: &[&str] = if tcp { &["-t", "t1"] } else { &[] };
    let core = start_scscf_with(&lab, &dir, HOSTNAME, (1, 20), &av, extra);

    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let shim = spawn_in(&lab.ue, move || shim(ue_ip, pc_ip, k, op, s2));
    let mut ue_args = sipp_ue_args(&[
        ("ue_ip", uri_host(ue_ip)),
        ("pcscf_ip", uri_host(pc_ip)),
        ("spi_c", SPI_C.to_string()),
        ("spi_s", SPI_S.to_string()),
        ("port_c", PORT_C.to_string()),
        ("port_s", PORT_S.to_string()),
    ]);
    ue_args.extend(["-auth_uri", "sip:ims.mnc001.mcc001.3gppnetwork.org"].map(String::from));
    let ue_sf = dir.join("ue_register.xml");
    std::fs::write(&ue_sf, &text).unwrap();
    let ue = start_sipp(&lab.ue, &dir, &ue_sf, &ue_args);

    let ue_out = ue.finish(Duration::from_secs(25));
    let core_out = core.finish(Duration::from_secs(5));
    Registered {
        lab,
        dir,
        ue_ip,
        pc_ip,
        nonce,
        av,
        ue_out,
        core_out,
        pcscf: Some(pcscf),
        stop,
        shim: Some(shim),
    }
}

fn sipp_ue_registers(v6: bool) {
    let t0 = Instant::now();
    let mut reg = register_sipp_ue("psue", if v6 { "e6" } else { "e4" }, v6, false);
    let (shim_stats, report) = reg.stop();
    let (ue_out, core_out, av) = (&reg.ue_out, &reg.core_out, &reg.av);
    let (ue_ip, pc_ip, nonce) = (reg.ue_ip, reg.pc_ip, &reg.nonce);
    let all = || {
        format!(
            "shim: {shim_stats:?}\n\n{}\n\n{}\n\npcscf:\n{}",
            ue_out.report("SIPp UE"),
            core_out.report("SIPp S-CSCF"),
            tail(&report, 4000)
        )
    };
    assert!(ue_out.clean(), "the SIPp UE did not register:\n{}", all());
    assert!(
        core_out.clean(),
        "the core's checks failed (a Route naming us?):\n{}",
        all()
    );
    assert!(shim_stats.error.is_none(), "{}", all());
    // SIPp really named us by address: 5060 first, then our port-s (the protected range)
    let sent = &ue_out.messages;
    assert!(
        sent.contains(&format!("Route: <sip:{}:5060;lr>", uri_host(pc_ip)))
            && (5100..=5199)
                .any(|p| sent.contains(&format!("Route: <sip:{}:{p};lr>", uri_host(pc_ip)))),
        "the SIPp UE did not send our address in Route:\n{}",
        all()
    );
    // the protected REGISTER went out as ESP and the 200 came back as ESP
    assert!(
        shim_stats.esp_out >= 1 && shim_stats.esp_in >= 1,
        "{}",
        all()
    );
    // SIPp's Digest AKAv1-MD5 agrees with ours on the vector the core handed out (RFC 3310 §3.3:
    // RES is the password): the independent UE really did AKA, not just any 32 hex digits
    let auth = sent
        .lines()
        .find(|l| l.starts_with("Authorization:") && !l.contains("response=\"\""))
        .unwrap_or_else(|| panic!("no AKA Authorization sent\n{}", all()));
    let param = |k: &str| {
        auth.split([',', ' '])
            .find_map(|p| p.trim().strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    let (user, realm, uri) = (param("username"), param("realm"), param("uri"));
    let (nc, cnonce) = (param("nc"), param("cnonce"));
    let input = aka::digest::DigestInput {
        username: user.as_deref().unwrap().as_bytes(),
        realm: realm.as_deref().unwrap().as_bytes(),
        nonce: nonce.as_bytes(),
        method: b"REGISTER",
        uri: uri.as_deref().unwrap().as_bytes(),
        qop: match (&nc, &cnonce) {
            (Some(nc), Some(cn)) => aka::digest::Qop::Auth {
                nc: nc.as_bytes(),
                cnonce: cn.as_bytes(),
            },
            _ => aka::digest::Qop::None,
        },
    };
    let ours = aka::digest::response_aka(&input, &av.xres);
    assert_eq!(
        param("response").as_deref(),
        Some(ours.as_str()),
        "SIPp's AKA response differs from ours: {auth}"
    );
    assert!(report.contains("registered: 1"), "{}", all());
    eprintln!(
        "SIPp UE ({ue_ip}) registered in {:?}; shim {shim_stats:?}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&reg.dir);
}
