//! Interop with independent ESP implementations, every suite, IPv4 and IPv6, UDP and TCP, every
//! backend:
//! (a) scapy decrypts and ICV-checks packets we build;
//! (b) tshark decrypts and ICV-checks packets we build (from a pcap we write; GMAC excepted:
//!     Wireshark 4.0's ESP SA table has no ENCR_NULL_AUTH_AES_GMAC, so GMAC is checked by scapy);
//! (c) our inbound path accepts packets scapy builds, and decapsulates them to scapy's plaintext.
//!
//! Needs `python3` with `scapy` and `cryptography` (pip), and `tshark` (apt). Missing tools make
//! the tests FAIL, not skip.

use crate::support::esp::*;
use crate::support::hex;
use pcscf::esp::{BackendKind, EncAlg, EspKeys, IntegAlg, Sa, SaOptions, Suite};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/esp_scapy.py");

fn scapy_algs(suite: Suite, k: &EspKeys) -> (&'static str, String, &'static str, String) {
    let salted = |key: &[u8]| format!("{}{}", hex(key), hex(&k.salt()));
    match (suite.integ(), suite.enc()) {
        (IntegAlg::Null, EncAlg::AesGcm) => ("AES-GCM", salted(k.enc_key()), "NULL", String::new()),
        (IntegAlg::AesGmac, _) => ("AES-NULL-GMAC", salted(k.auth_key()), "NULL", String::new()),
        (i, e) => (
            match e {
                EncAlg::Null => "NULL",
                EncAlg::AesCbc => "AES-CBC",
                _ => "3DES",
            },
            hex(k.enc_key()),
            if i == IntegAlg::HmacMd5_96 {
                "HMAC-MD5-96"
            } else {
                "HMAC-SHA1-96"
            },
            hex(k.auth_key()),
        ),
    }
}

/// Wireshark's esp_sa names (from `tshark` 4.0's UAT), or None where it has no such algorithm.
fn tshark_algs(suite: Suite, k: &EspKeys) -> Option<(&'static str, String, &'static str, String)> {
    let key = |b: &[u8]| {
        if b.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex(b))
        }
    };
    match (suite.integ(), suite.enc()) {
        (IntegAlg::Null, EncAlg::AesGcm) => Some((
            "AES-GCM with 16 octet ICV [RFC4106]",
            format!("0x{}{}", hex(k.enc_key()), hex(&k.salt())),
            "NULL",
            String::new(),
        )),
        (IntegAlg::AesGmac, _) => None,
        (i, e) => Some((
            match e {
                EncAlg::Null => "NULL",
                EncAlg::AesCbc => "AES-CBC [RFC3602]",
                _ => "TripleDES-CBC [RFC2451]",
            },
            key(k.enc_key()),
            if i == IntegAlg::HmacMd5_96 {
                "HMAC-MD5-96 [RFC2403]"
            } else {
                "HMAC-SHA-1-96 [RFC2404]"
            },
            key(k.auth_key()),
        )),
    }
}

fn require_scapy() {
    let ok = Command::new("python3")
        .args(["-c", "import scapy.layers.ipsec, cryptography"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "ESP interop tests need python3 with scapy and cryptography: `pip install scapy cryptography`"
    );
}

fn require_tshark() {
    let ok = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "ESP interop tests need tshark: `DEBIAN_FRONTEND=noninteractive apt-get install -y tshark`"
    );
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pcscf-esp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_scapy(mode: &str, json: &str) -> Vec<String> {
    require_scapy();
    let mut child = Command::new("python3")
        .args([SCRIPT, mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "scapy {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

struct Built {
    name: String,
    suite: Suite,
    fam: Fam,
    l4: L4,
    spi: u32,
    esp: Vec<u8>,
    inner: Vec<u8>,
    data: Vec<u8>,
}

fn sip_data(i: usize) -> Vec<u8> {
    let pad: String = (0..(i * 37) % 200)
        .map(|j| (b'a' + (j % 26) as u8) as char)
        .collect();
    format!(
        "REGISTER sip:ims.example.net SIP/2.0\r\nCSeq: {i} REGISTER\r\nX-Pad: {pad}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Our packets: every suite × family × transport × backend, each with its own SPI.
fn build_ours() -> Vec<Built> {
    let mut v = Vec::new();
    let mut spi = 0x1000u32;
    for &suite in &Suite::ALL {
        for fam in [Fam::V4, Fam::V6] {
            for l4 in [L4::Udp, L4::Tcp] {
                for &b in BackendKind::ALL {
                    spi += 1;
                    let tx = sa(spi, suite, b);
                    let data = sip_data(spi as usize);
                    let pkt = ip_packet(fam, l4, 50001, 5064, &data, false);
                    let hl = if fam == Fam::V4 { 20 } else { 40 };
                    let esp = protect(&tx, &pkt);
                    v.push(Built {
                        name: format!("{}/{fam:?}/{l4:?}/{}", suite_name(suite), b.name()),
                        suite,
                        fam,
                        l4,
                        spi,
                        esp,
                        inner: pkt[hl..].to_vec(),
                        data,
                    });
                }
            }
        }
    }
    v
}

#[test]
fn scapy_decrypts_our_packets() {
    let built = build_ours();
    let mut json = String::from("[");
    for (i, c) in built.iter().enumerate() {
        let k = EspKeys::derive(c.suite, &CK, &IK);
        let (crypt, ck, auth, ak) = scapy_algs(c.suite, &k);
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            r#"{{"name":"{}","spi":{},"crypt":"{crypt}","crypt_key":"{ck}","auth":"{auth}","auth_key":"{ak}","packet":"{}","inner":"{}"}}"#,
            c.name,
            c.spi,
            hex(&c.esp),
            hex(&c.inner)
        ));
    }
    json.push(']');
    let lines = run_scapy("check", &json);
    let oks = lines.iter().filter(|l| l.starts_with("OK ")).count();
    assert_eq!(oks, built.len(), "{lines:#?}");
}

fn write_pcap(path: &std::path::Path, pkts: &[&[u8]]) {
    pcscf::lab::write_raw(path, pkts).unwrap();
}

#[test]
fn tshark_decrypts_our_packets() {
    require_tshark();
    let built: Vec<Built> = build_ours()
        .into_iter()
        .filter(|c| tshark_algs(c.suite, &EspKeys::derive(c.suite, &CK, &IK)).is_some())
        .collect();
    let dir = scratch_dir("tshark");
    let mut uat = String::new();
    for c in &built {
        let k = EspKeys::derive(c.suite, &CK, &IK);
        let (e, ek, a, ak) = tshark_algs(c.suite, &k).unwrap();
        let proto = if c.fam == Fam::V4 { "IPv4" } else { "IPv6" };
        uat.push_str(&format!(
            "\"{proto}\",\"*\",\"*\",\"0x{:08x}\",\"{e}\",\"{ek}\",\"{a}\",\"{ak}\"\n",
            c.spi
        ));
    }
    std::fs::write(dir.join("esp_sa"), uat).unwrap();
    let pcap = dir.join("ours.pcap");
    // Negative control: the first packet again with one ICV bit flipped must be flagged bad.
    let mut forged = built[0].esp.clone();
    *forged.last_mut().unwrap() ^= 1;
    let mut pkts: Vec<&[u8]> = built.iter().map(|c| &c.esp[..]).collect();
    pkts.push(&forged);
    write_pcap(&pcap, &pkts);
    let rows = tshark_esp_rows(
        &dir,
        &pcap,
        &["-o", "tcp.analyze_sequence_numbers:FALSE"],
        &[
            "esp.spi",
            "esp.icv_good",
            "udp.srcport",
            "udp.dstport",
            "tcp.srcport",
            "tcp.dstport",
            "udp.payload",
            "tcp.payload",
        ],
    );
    let stdout = format!("{rows:?}");
    let lines: Vec<String> = rows.iter().map(|r| r.join("|")).collect();
    assert_eq!(lines.len(), built.len() + 1, "{stdout}");
    let last: Vec<&str> = lines[built.len()].split('|').collect();
    assert_eq!(
        last[1],
        "0",
        "tshark did not flag a forged ICV: {}",
        lines[built.len()]
    );
    for (c, line) in built.iter().zip(&lines) {
        let f: Vec<&str> = line.split('|').collect();
        let ctx = format!("{}: {line}", c.name);
        assert_eq!(f[0], format!("0x{:08x}", c.spi), "{ctx}");
        assert_eq!(f[1], "1", "ICV not good: {ctx}");
        let (sp, dp, pl) = match c.l4 {
            L4::Udp => (f[2], f[3], f[6]),
            L4::Tcp => (f[4], f[5], f[7]),
        };
        assert_eq!((sp, dp), ("50001", "5064"), "{ctx}");
        assert_eq!(pl.replace(':', ""), hex(&c.data), "{ctx}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn we_accept_scapy_packets() {
    let mut cases = Vec::new();
    let mut json = String::from("[");
    let mut spi = 0x2000u32;
    for &suite in &Suite::ALL {
        for fam in [4, 6] {
            for l4 in ["udp", "tcp"] {
                spi += 1;
                let k = EspKeys::derive(suite, &CK, &IK);
                let (crypt, ck, auth, ak) = scapy_algs(suite, &k);
                let data = sip_data(spi as usize);
                let name = format!("{}/v{fam}/{l4}", suite_name(suite));
                if json.len() > 1 {
                    json.push(',');
                }
                json.push_str(&format!(
                    r#"{{"name":"{name}","spi":{spi},"crypt":"{crypt}","crypt_key":"{ck}","auth":"{auth}","auth_key":"{ak}","family":{fam},"l4":"{l4}","sport":50001,"dport":5064,"data":"{}"}}"#,
                    hex(&data)
                ));
                cases.push((name, suite, spi));
            }
        }
    }
    json.push(']');
    let lines = run_scapy("build", &json);
    assert_eq!(lines.len(), cases.len(), "{lines:#?}");
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    for ((name, suite, spi), line) in cases.iter().zip(&lines) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!((f[0], f[1]), ("OK", name.as_str()), "{line}");
        let (esp, plain) = (unhex(f[2]), unhex(f[3]));
        for &b in BackendKind::ALL {
            let keys = EspKeys::derive(*suite, &CK, &IK);
            let rx = Sa::new(
                *spi,
                *suite,
                &keys,
                SaOptions {
                    backend: b,
                    ..SaOptions::default()
                },
            )
            .unwrap();
            let mut p = esp.clone();
            let (range, inb) = rx
                .decapsulate(&mut p)
                .unwrap_or_else(|e| panic!("{name} {b:?}: {e}"));
            assert_eq!(inb.seq, 1, "{name}");
            assert_eq!(hex(&p[range]), hex(&plain), "{name} {b:?}");
        }
    }
}
