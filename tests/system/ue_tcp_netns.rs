//! `ue-sim --transport tcp` end to end over raw sockets, against a stand-in for the P-CSCF's
//! side of the contract (not `pcscf run`, whose TCP inside ESP is still to come): the 401 with
//! its Security-Server over UDP, then a `tcp::Host` behind the set's SAs — the UE's segments in
//! over SA1, its own out over SA3 — answering every protected request on the UE's connection
//! (RFC 3261 §18.2.2) with the core simulator's answers. 1000 UEs (the lab's target) each
//! register, send three 3 KB MESSAGEs and re-register over their connection, with no failure.
//! Needs root (namespaces, raw sockets).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pcscf::esp::{Sa, SaOptions};
use pcscf::lab::{Lab, spawn_in};
use pcscf::sim;
use pcscf::sim::core::CoreSim;
use pcscf::sim::rawip::{raw, recv_ip, send_ip};
use pcscf::sim::uetcp::seal;
use pcscf::sip::{HeaderName, Message};
use pcscf::tcp::{Conn, Host, HostConfig, PortPairs, Segments};

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

/// What the stand-in saw.
#[derive(Debug, Default)]
struct Seen {
    challenges: u64,
    /// Protected requests that came whole on a UE's connection, by method.
    over_tcp: HashMap<String, u64>,
    /// Their top Via's transport was TCP.
    via_tcp: u64,
    /// ESP packets that were not TCP (next header) or did not decrypt.
    not_tcp: u64,
    largest: usize,
}

/// `ck="…"` of the core's WWW-Authenticate (after a comma: a nonce may end in `ck=`).
fn param(www: &str, name: &str) -> [u8; 16] {
    let key = format!(", {name}=\"");
    let at = www.find(&key).unwrap() + key.len();
    let hex = &www[at..at + 32];
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    k
}

/// The stand-in, in the P-CSCF's namespace at `me`, until `stop`.
fn stand_in(me: Ipv4Addr, ue: Ipv4Addr, stop: Arc<AtomicBool>) -> Seen {
    let udp = UdpSocket::bind(SocketAddr::new(me.into(), 5060)).unwrap();
    udp.set_nonblocking(true).unwrap();
    let rx = raw(libc::IPPROTO_ESP).unwrap();
    let tx = raw(libc::IPPROTO_RAW).unwrap();
    let mut core = CoreSim::new(REALM, "10.212.0.2:5060");
    let mut host = Host::new(HostConfig::default(), 77);
    let mut out = Segments::with_limit(4096);
    // by our inbound spi-s: the UE's index; by UE: SA1 in, SA3 out
    let mut by_spi: HashMap<u32, u64> = HashMap::new();
    let mut sas: HashMap<u64, (Sa, Sa)> = HashMap::new();
    let mut seen = Seen::default();
    let mut buf = vec![0u8; 65536];
    let mut scratch = Vec::new();
    let t0 = Instant::now();
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
        let now = Instant::now();
        let mut idle = true;
        // the unprotected REGISTER: the core's 401, with our Security-Server
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            idle = false;
            let req = buf[..n].to_vec();
            let m = Message::parse(&req).unwrap();
            let cid =
                String::from_utf8_lossy(m.view().header(HeaderName::CallId).unwrap()).into_owned();
            let i: u64 = cid
                .strip_prefix("reg-")
                .and_then(|c| c.split('@').next())
                .unwrap()
                .parse()
                .unwrap();
            let Some(r401) = core.handle(&req) else {
                continue;
            };
            let text = String::from_utf8(r401).unwrap();
            let (ck, ik) = (param(&text, "ck"), param(&text, "ik"));
            // ue-sim's layout: spi-c 0x10000 + 2i, ports 20000 + 2i / 20001 + 2i
            let (ue_sc, ue_c, ue_s) = (
                0x10000 + 2 * i as u32,
                20000 + 2 * i as u16,
                20001 + 2 * i as u16,
            );
            let (p_sc, p_ss) = (0x3000 + 2 * i as u32, 0x3001 + 2 * i as u32);
            let (p_c, p_s) = (5100 + 2 * i as u16, 5101 + 2 * i as u16);
            let server = format!(
                "Security-Server: ipsec-3gpp;alg=null;ealg=aes-gcm;spi-c={p_sc};spi-s={p_ss};port-c={p_c};port-s={p_s};q=0.1\r\n"
            );
            let text = text.replacen("Content-Length:", &format!("{server}Content-Length:"), 1);
            let sa =
                |spi| Sa::from_aka(spi, "null", "aes-gcm", &ck, &ik, SaOptions::default()).unwrap();
            sas.insert(i, (sa(p_ss), sa(ue_sc)));
            by_spi.insert(p_ss, i);
            host.open(
                i,
                PortPairs {
                    local: me.into(),
                    remote: ue.into(),
                    local_c: p_c,
                    local_s: p_s,
                    remote_c: ue_c,
                    remote_s: ue_s,
                },
            )
            .unwrap();
            udp.send_to(text.as_bytes(), from).unwrap();
            seen.challenges += 1;
        }
        // ESP over SA1: the UE's segments
        while let Some(n) = recv_ip(&rx, &mut buf) {
            idle = false;
            let pkt = &mut buf[..n];
            let Some(&i) = pcscf::esp::packet::peek_spi(pkt)
                .ok()
                .and_then(|s| by_spi.get(&s))
            else {
                continue;
            };
            let Ok((inner, inb)) = sas[&i].0.decapsulate(pkt) else {
                seen.not_tcp += 1;
                continue;
            };
            if inb.next_header != 6 {
                seen.not_tcp += 1;
                continue;
            }
            let _ = host.handle_segment(i, now, &pkt[inner], &mut out);
        }
        let mut got = Vec::new();
        host.for_each_message(now, &mut out, |i, conn, m| {
            assert_eq!(conn, Conn::Accepted, "the UE's connection to our port-s");
            got.push((i, m.to_vec()));
        });
        for (i, req) in got {
            let m = Message::parse(&req).unwrap();
            let v = m.view();
            let method = String::from_utf8_lossy(v.method().unwrap()).into_owned();
            *seen.over_tcp.entry(method).or_insert(0) += 1;
            if v.header(HeaderName::Via)
                .is_some_and(|via| via.starts_with(b"SIP/2.0/TCP "))
            {
                seen.via_tcp += 1;
            }
            seen.largest = seen.largest.max(req.len());
            if let Some(answer) = core.handle(&req) {
                // the response on the request's connection (RFC 3261 §18.2.2)
                host.send(i, Conn::Accepted, now, &answer, &mut out)
                    .unwrap();
            }
        }
        if host.poll_timeout().is_some_and(|t| t <= now) {
            host.handle_timeout(now, &mut out);
        }
        for (seg, i, conn) in out.iter() {
            assert_eq!(conn, Conn::Accepted);
            let r = seal(&sas[&i].1, seg, &mut scratch).unwrap();
            send_ip(&tx, &scratch[r], ue);
        }
        out.clear();
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    seen
}

#[test]
fn ue_sim_over_tcp_registers_messages_and_reregisters() {
    let lab = Lab::new("putcp", "ut").unwrap_or_else(|e| panic!("{e} (CI runs this as root)"));
    let (IpAddr::V4(me), IpAddr::V4(ue)) = (lab.pcscf_ue_addr, lab.ue_addr) else {
        panic!("IPv4 lab addresses");
    };
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let p = spawn_in(&lab.pcscf, move || stand_in(me, ue, s2));
    std::thread::sleep(Duration::from_millis(300));
    let ues = 1000;
    let cfg = sim::ue::UeSimConfig {
        ue_ip: lab.ue_addr,
        pcscf: SocketAddr::new(lab.pcscf_ue_addr, 5060),
        realm: REALM.into(),
        ues,
        rate: 500,
        messages: 3,
        timeout: Duration::from_secs(5),
        progress: false,
        wrong_res_every: 0,
        reregister: true,
        calls: 0,
        call_rate: 1,
        incoming_calls: 0,
        flows: Default::default(),
        transport: sim::ue::Transport::Tcp,
        message_size: 3000,
        hostile: Default::default(),
        message_interval: Duration::ZERO,
        check_seq: false,
    };
    let s3 = stop.clone();
    let report = spawn_in(&lab.ue, move || sim::ue::run(cfg, s3))
        .join()
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let seen = p.join().unwrap();
    report.print();
    eprintln!("{seen:?}");
    assert_eq!(report.failures, HashMap::new());
    assert_eq!(report.registered, ues);
    assert_eq!(report.messages_ok, 3 * ues as u64);
    assert_eq!(report.reregistered, ues);
    assert_eq!(seen.challenges, ues as u64);
    // every protected request on the connections, once: no SIP retransmission over TCP
    assert_eq!(seen.over_tcp.get("REGISTER"), Some(&(2 * ues as u64)));
    assert_eq!(seen.over_tcp.get("MESSAGE"), Some(&(3 * ues as u64)));
    assert_eq!(seen.via_tcp, 5 * ues as u64);
    assert_eq!(seen.not_tcp, 0);
    assert!(seen.largest > 3000, "{}", seen.largest);
    let (t, _) = report.tcp.expect("tcp counters");
    assert_eq!(t.messages_in, 5 * ues as u64);
    assert_eq!((t.esp_refused, t.seal_failed, t.send_refused), (0, 0, 0));
}
