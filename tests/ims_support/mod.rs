//! A UE and an IMS core for tests: the messages of the registration flow built from the test
//! fixtures, our AKA code as the USIM and as the HSS/S-CSCF (TS 35.208 test set 1).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use pcscf::aka::{self, digest};
use pcscf::sip::pcscf::build_response;
use pcscf::sip::{HeaderName, Message};

pub const REGISTER1: &str = include_str!("../data/ims/register1_v4.sip");
pub const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";
pub const IMPI: &str = "001010000000001@ims.mnc001.mcc001.3gppnetwork.org";
pub const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

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
pub fn start_pcscf(lab: &pcscf::lab::netns::Lab, name: &str, config: &str) -> Child {
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
