//! The registration thread's capacity, without I/O: N UEs register one after another through the
//! sans-IO `Registrar` (REGISTER → the core's 401 with CK/IK → four SAs built and installed, 401
//! to the UE → protected REGISTER with Security-Verify → 200 → registration published). The core
//! (`sim::core::CoreSim`: HSS, Milenage, Digest-AKA check) and the UE (USIM, digest) run in the
//! same loop but only the registrar's own calls are timed. Reports registrations per second of
//! the registration thread and µs per registration; `callgrind` on it gives instructions per
//! registration (the stable figure):
//!
//! With `file` as third argument the registrar writes its state through to a redb store in a
//! temporary directory (`[state] backend = "file"`): the writer thread seals and commits
//! batches while the loop runs, the registration thread's share (which bindings changed,
//! their records) is timed with the rest, and the run ends when every record is durable.
//!
//! cargo run --release --example register_loop [ues=20000] [suite=null/aes-gcm] [none|file]
//! valgrind --tool=callgrind --toggle-collect='*Registrar*handle_message*' \
//!     target/release/examples/register_loop 2000

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use pcscf::aka::{self, Milenage, UeSqnState, Usim, digest};
use pcscf::control::registrar::{Incoming, MAX_PENDING, Outgoing, Registrar, RegistrarConfig};
use pcscf::daemon::state;
use pcscf::dataplane::Protection;
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::io::Side;
use pcscf::satable::{SaTableConfig, sa_table};
use pcscf::sim::core::{CoreSim, TEST_K, TEST_OPC};
use pcscf::sip::headers::{Digest, SecMechanism};
use pcscf::sip::{HeaderName, Message};

const REALM: &str = "ims.mnc001.mcc001.3gppnetwork.org";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ue_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(10, 80, 0, 0)) + i as u32,
    ))
}

/// UE `i`'s REGISTER (cseq 1: unprotected, empty credentials; cseq 2: protected, with the digest
/// response and Security-Verify).
fn register(i: usize, cseq: u32, auth: &str, verify: &str) -> Vec<u8> {
    let ip = ue_ip(i);
    let user = format!("00101{i:010}");
    format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:6101;branch=z9hG4bK{i}r{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{REALM}>;tag=u{i}\r\nTo: <sip:{user}@{REALM}>\r\nCall-ID: reg-{i}@{ip}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}@{ip}:6101>;expires=600000\r\n{auth}Security-Client: ipsec-3gpp;alg=null;ealg=aes-gcm;spi-c={};spi-s={};port-c=6100;port-s=6101, ipsec-3gpp;alg=hmac-sha-1-96;ealg=aes-cbc;spi-c={};spi-s={};port-c=6100;port-s=6101\r\n{verify}Require: sec-agree\r\nProxy-Require: sec-agree\r\nSupported: path, sec-agree\r\nExpires: 600000\r\nContent-Length: 0\r\n\r\n",
        0x10000 + 2 * i,
        0x10001 + 2 * i,
        0x10000 + 2 * i,
        0x10001 + 2 * i,
    )
    .into_bytes()
}

struct Timed<'a> {
    reg: &'a mut Registrar,
    now: Instant,
    spent: Duration,
    out: Vec<Outgoing>,
}

impl Timed<'_> {
    /// One message into the registrar, timed; what it sends.
    fn feed(
        &mut self,
        side: Side,
        protection: Protection,
        src: SocketAddr,
        dst: SocketAddr,
        p: &[u8],
    ) -> Outgoing {
        self.out.clear();
        let msg = Incoming {
            side,
            protection,
            src,
            dst,
            payload: p,
        };
        let t = Instant::now();
        self.reg.handle_message(msg, self.now);
        self.out
            .extend(std::iter::from_fn(|| self.reg.poll_transmit()));
        self.spent += t.elapsed();
        assert_eq!(self.out.len(), 1, "{:?}", self.reg.stats);
        self.out.pop().unwrap()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let suite = args.next().unwrap_or_else(|| "null/aes-gcm".into());
    let state = args.next().unwrap_or_else(|| "none".into());
    let (a, e) = suite.split_once('/').expect("suite alg/ealg");
    let pref = (
        IntegAlg::from_token(a.as_bytes()).expect("alg"),
        EncAlg::from_token(e.as_bytes()).expect("ealg"),
    );
    let cap = (4 * n as u32 + 1024).next_power_of_two();
    let (writer, _reader) = sa_table(SaTableConfig {
        inbound_capacity: cap,
        outbound_capacity: cap,
        spi_min: 4096,
        spi_max: 4096 + 4 * cap - 1,
    })
    .unwrap();
    let (pcscf, core, icscf) = (
        addr("10.46.0.1:5060"),
        addr("10.0.1.10:5060"),
        addr("10.0.1.20:5060"),
    );
    let cfg = RegistrarConfig {
        ue_addrs: vec![pcscf.ip()],
        ue_sip_port: 5060,
        protected_ports: 5100..=5199,
        core,
        icscf: Some(icscf),
        dns: None,
        home_domains: vec![],
        icscf_by_domain: vec![],
        icscf_tcp: false,
        core_max_udp_request: usize::MAX,
        source_limit: (u32::MAX, 1e9), // its simulated UEs share addresses
        via_sent_by: core.to_string(),
        path_uri: "sip:term@pcscf.test:5060;lr".into(),
        own_hosts: vec!["pcscf.test".into()],
        visited_network_id: "\"Visited\"".into(),
        orig_ioi: "visited.test".into(),
        prefs: vec![pref],
        sa_options: Default::default(),
        max_pending: MAX_PENDING,
        reg_event: false,
    };
    let mut reg = Registrar::new(cfg, writer);
    let dir = std::env::temp_dir().join(format!("register_loop-{}", std::process::id()));
    let mut store_writer = match state.as_str() {
        "none" => None,
        "file" => {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let (store, _) = state::FileStore::open(&dir.join("state.redb")).unwrap();
            reg.enable_persistence(pcscf::control::registrar::PersistOptions::default());
            let sealer = pcscf::control::store::Sealer::new(&[0x3c; 32]);
            Some(state::Writer::spawn(Box::new(store), sealer).unwrap())
        }
        other => panic!("state: none or file, not {other}"),
    };
    let mut core_sim = CoreSim::new(REALM, "10.0.1.30:5060");
    let k = aka::hex_array::<16>(TEST_K).unwrap();
    let opc = aka::hex_array::<16>(TEST_OPC).unwrap();
    let mut t = Timed {
        reg: &mut reg,
        now: Instant::now(),
        spent: Duration::ZERO,
        out: Vec::new(),
    };
    let wall = Instant::now();
    for i in 0..n {
        let ue = SocketAddr::new(ue_ip(i), 5060);
        let impi = format!("00101{i:010}@{REALM}");
        let auth = format!(
            "Authorization: Digest username=\"{impi}\",realm=\"{REALM}\",uri=\"sip:{REALM}\",nonce=\"\",response=\"\"\r\n"
        );
        // 1. unprotected REGISTER → the I-CSCF
        let fwd = t.feed(
            Side::Ue,
            Protection::Plain,
            ue,
            pcscf,
            &register(i, 1, &auth, ""),
        );
        // 2. the core's 401 → the UE, SAs installed
        let c401 = core_sim.handle(&fwd.payload).expect("401");
        let to_ue = t.feed(Side::Core, Protection::Plain, icscf, core, &c401);
        // 3. the UE: RES from the nonce, Security-Verify = Security-Server
        let m = Message::parse(&to_ue.payload).unwrap();
        let v = m.view();
        assert_eq!(v.status(), Some(401), "{}", String::from_utf8_lossy(m.buf));
        let server = String::from_utf8_lossy(v.header(HeaderName::SecurityServer).unwrap());
        let offer = SecMechanism::parse(server.as_bytes())
            .and_then(|m| m.ipsec().ok())
            .unwrap();
        let nonce = Digest::parse(v.header(HeaderName::WwwAuthenticate).unwrap())
            .and_then(|d| d.nonce().map(|x| String::from_utf8_lossy(x).into_owned()))
            .unwrap();
        let mut usim = Usim::new(Milenage::new(&k, &opc), UeSqnState::default());
        let res = usim.authenticate_nonce(&nonce).unwrap().res;
        let uri = format!("sip:{REALM}");
        let input = digest::DigestInput {
            username: impi.as_bytes(),
            realm: REALM.as_bytes(),
            nonce: nonce.as_bytes(),
            method: b"REGISTER",
            uri: uri.as_bytes(),
            qop: digest::Qop::None,
        };
        let resp = digest::response_aka(&input, &res);
        let auth2 = format!(
            "Authorization: Digest username=\"{impi}\",realm=\"{REALM}\",uri=\"sip:{REALM}\",nonce=\"{nonce}\",response=\"{}\",algorithm=AKAv1-MD5\r\n",
            resp.as_str()
        );
        let verify = format!("Security-Verify: {server}\r\n");
        // 4. protected REGISTER (arrived over SA1: UE port-c → our port-s) → the I-CSCF
        let fwd2 = t.feed(
            Side::Ue,
            Protection::Protected { spi: offer.spi_s },
            SocketAddr::new(ue.ip(), 6100),
            SocketAddr::new(pcscf.ip(), offer.port_s),
            &register(i, 2, &auth2, &verify),
        );
        // 5. the core's 200 → the UE over SA2, registration published
        let c200 = core_sim.handle(&fwd2.payload).expect("200");
        let ok = t.feed(Side::Core, Protection::Plain, icscf, core, &c200);
        assert!(ok.payload.starts_with(b"SIP/2.0 200"));
        // the control loop's pass: the write-through's share on the registration thread
        if let Some(w) = store_writer.as_mut() {
            let at = Instant::now();
            w.pass(t.reg, t.now);
            t.spent += at.elapsed();
        }
    }
    let looped = wall.elapsed();
    let spent = t.spent;
    let mut durable = None;
    if let Some(mut w) = store_writer.take() {
        let at = Instant::now();
        assert!(w.finish(&mut reg, Duration::from_secs(120)), "all written");
        durable = Some((at.elapsed(), w.stats));
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(reg.stats.registered as usize, n, "{:?}", reg.stats);
    let per = spent.as_secs_f64() / n as f64;
    println!(
        "registrations: {n} ({suite}), registrar time {:.3} s: {:.1} us per registration, {:.0} registrations/s on the registration thread (wall {:.1} s with the simulated core and UEs)",
        spent.as_secs_f64(),
        per * 1e6,
        1.0 / per,
        looped.as_secs_f64()
    );
    if let Some((tail, st)) = durable {
        println!(
            "write-through (file): {} records in {} batches ({:.0} records per batch, the last took {:.2} ms); all durable {:.3} s after the last 200: {:.0} durable registrations/s over the whole run",
            st.records,
            st.batches,
            st.records as f64 / st.batches.max(1) as f64,
            st.last_write.as_secs_f64() * 1e3,
            tail.as_secs_f64(),
            n as f64 / (looped + tail).as_secs_f64()
        );
    }
}
