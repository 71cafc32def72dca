//! The registration through `pcscf run` with SIPp (Debian's sip-tester) playing the
//! I-CSCF/S-CSCF from `tests/sipp/scscf_uas.xml`: an independent SIP stack reads what we forward
//! (it checks Path and integrity-protected "no" then "yes") and its 401 and 200 come back to our
//! UE — the 200 as ESP. Needs root and sipp (CI installs it); a missing sipp fails the test.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pcscf::aka::{self, HssSubscriber, Milenage, SqnGenerator, UeSqnState, Usim};
use pcscf::dataplane::classify::{self, L4};
use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::netns::{Lab, spawn_in};
use pcscf::lab::rawip::{self, send_ip};
use pcscf::sip::Message;

mod ims_support;
use ims_support::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn registration_with_sipp_as_the_scscf() {
    assert!(
        Command::new("sipp").arg("-v").output().is_ok(),
        "sipp (Debian package sip-tester) is required; .ci/run installs it"
    );
    let lab = Lab::new("psipp", "s").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let cfg = format!(
        "[ue]\ninterface = \"{}\"\naddresses = [\"{}\"]\n[core]\ninterface = \"{}\"\naddress = \"{}\"\nicscf = \"{}:5060\"\nhostname = \"pcscf.ims.mnc001.mcc001.3gppnetwork.org\"\n[ipsec]\nalgorithms = [\"hmac-sha-1-96/aes-cbc\"]\n[dataplane]\nbackend = \"xdp\"\nworkers = [0]\nring_size = 512\nframes = 2048\n",
        lab.pcscf_ue_if, lab.pcscf_ue_addr, lab.pcscf_core_if, lab.pcscf_core_addr, lab.core_addr
    );
    let pcscf = start_pcscf(&lab, "sipp", &cfg);

    // The vector SIPp hands out (our HSS code, test set 1).
    let k = aka::hex_array::<16>(K).unwrap();
    let opc = aka::hex_array::<16>(OPC).unwrap();
    let mut hss = HssSubscriber::new(
        Milenage::new(&k, &opc),
        SqnGenerator::with_default_step(),
        [0x80, 0],
    );
    let av = hss.next_vector(&[0x31; 16]).unwrap();
    let mut nb = [0u8; aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb).to_string();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/scscf_uas.xml");
    let sipp = Command::new("ip")
        .args(["netns", "exec", &lab.core, "sipp", "-sf", scenario, "-i"])
        .arg(lab.core_addr.to_string())
        .args([
            "-p",
            "5060",
            "-m",
            "1",
            "-timeout",
            "20",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .args([
            "-key",
            "nonce",
            &nonce,
            "-key",
            "ck",
            &hex(av.ck.as_bytes()),
            "-key",
            "ik",
            &hex(av.ik.as_bytes()),
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp");

    let deadline = Instant::now() + Duration::from_secs(20);
    let ue = spawn_in(&lab.ue, move || -> Result<Vec<u8>, String> {
        let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
        let register = REGISTER1.replace("10.46.0.6", "10.211.0.2");
        let s = UdpSocket::bind("10.211.0.2:5060").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let pcscf: SocketAddr = "10.211.0.1:5060".parse().unwrap();
        let Challenge {
            server,
            mech,
            nonce,
            auth: got,
        } = challenge(&s, register.as_bytes(), pcscf, &mut usim, deadline)?;
        let (ck, ik) = (*got.ck.as_bytes(), *got.ik.as_bytes());
        let (alg, ealg) = (mech.alg.as_str(), mech.ealg.as_str());
        let sa1 = Sa::from_aka(mech.spi_s, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        let sa2 = Sa::from_aka(1237, alg, ealg, &ck, &ik, SaOptions::default()).unwrap();
        let reg2 = String::from_utf8(protected_register(&nonce, &got.res, &server))
            .unwrap()
            .replace("10.46.0.6", "10.211.0.2");
        let src: SocketAddr = "10.211.0.2:7004".parse().unwrap();
        let dst = SocketAddr::new("10.211.0.1".parse().unwrap(), mech.port_s);
        let esp = esp_packet(&sa1, src, dst, reg2.as_bytes());
        let tx = rawip::raw(libc::IPPROTO_RAW).unwrap();
        let rx = rawip::raw(libc::IPPROTO_ESP).unwrap();
        send_ip(&tx, &esp, "10.211.0.1".parse().unwrap());
        let mut pkt = [0u8; 4096];
        while let Some(n) = recv_ip_until(&rx, &mut pkt, deadline) {
            let mut p = pkt[..n].to_vec();
            let Ok((inner, _)) = sa2.decapsulate(&mut p) else {
                continue;
            };
            let inner = &p[inner];
            let L4::Udp { payload, .. } = classify::classify(inner) else {
                return Err("inner packet not UDP".into());
            };
            return Ok(inner[payload.start..payload.end].to_vec());
        }
        Err("no 200 over SA2".into())
    })
    .join()
    .unwrap();

    let sipp_out = sipp.wait_with_output().unwrap();
    // SAFETY: kill(2) on our child's pid.
    unsafe { libc::kill(pcscf.id() as i32, libc::SIGTERM) };
    let pc = pcscf.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&pc.stderr);
    let ok = ue.unwrap_or_else(|e| {
        panic!(
            "UE: {e}\n{report}\nsipp: {}",
            String::from_utf8_lossy(&sipp_out.stderr)
        )
    });
    assert_eq!(
        Message::parse_strict(&ok).unwrap().view().status(),
        Some(200)
    );
    assert!(
        sipp_out.status.success(),
        "SIPp's checks of what we forwarded failed ({}):\n{}",
        sipp_out.status,
        String::from_utf8_lossy(&sipp_out.stderr)
    );
    assert!(report.contains("registered: 1"), "{report}");
}
