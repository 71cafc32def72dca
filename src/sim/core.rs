//! `pcscf core-sim`: an I-CSCF + S-CSCF + HSS on one UDP address, enough to register UEs
//! through a P-CSCF: Milenage vectors per subscriber, the 401 with nonce / ck / ik, the
//! Digest-AKA check of the response (403 when wrong), the 200 with Service-Route and
//! P-Associated-URI, de-registration, and 200 to MESSAGE / OPTIONS.
//!
//! Subscribers: every IMPI `<imsi>@<realm>` is accepted with one K / OPc (TS 35.208 test set 1
//! unless given): a lab tool, not a real HSS.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::aka::{self, HssSubscriber, Milenage, Res, SqnGenerator, digest};
use crate::sip::headers::Digest;
use crate::sip::rules::build_response;
use crate::sip::{HeaderName, Message};

/// Test set 1 (TS 35.208): K and OPc.
pub const TEST_K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
pub const TEST_OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

/// Counters of the core simulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreStats {
    pub challenges: u64,
    pub registered: u64,
    pub deregistered: u64,
    pub auth_failed: u64,
    pub messages: u64,
    pub malformed: u64,
}

/// The simulated core (sans-IO: [`CoreSim::handle`] turns a request into a response).
pub struct CoreSim {
    k: [u8; 16],
    opc: [u8; 16],
    realm: String,
    /// Our own URI host:port for Service-Route.
    route_host: String,
    subscribers: HashMap<Vec<u8>, (HssSubscriber, Option<Res>)>,
    rand_counter: u64,
    pub stats: CoreStats,
}

impl std::fmt::Debug for CoreSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreSim")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl CoreSim {
    pub fn new(realm: &str, route_host: &str) -> CoreSim {
        CoreSim {
            k: aka::hex_array::<16>(TEST_K).expect("constant"),
            opc: aka::hex_array::<16>(TEST_OPC).expect("constant"),
            realm: realm.into(),
            route_host: route_host.into(),
            subscribers: HashMap::new(),
            rand_counter: 0,
            stats: CoreStats::default(),
        }
    }

    fn respond(req: &Message<'_>, code: u16, reason: &str, extra: &str) -> Vec<u8> {
        let mut out = vec![0u8; req.buf.len() + 2048];
        let n = build_response(
            req.view(),
            code,
            reason,
            b"core",
            &[extra.as_bytes()],
            &mut out,
        )
        .unwrap_or(0);
        out.truncate(n);
        out
    }

    /// Answer one request (`None` for responses and garbage).
    pub fn handle(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        let Ok(m) = Message::parse(req) else {
            self.stats.malformed += 1;
            return None;
        };
        let v = m.view();
        let method = v.method()?;
        if method != b"REGISTER" {
            self.stats.messages += 1;
            return Some(Self::respond(&m, 200, "OK", ""));
        }
        let Some(d) = v.header(HeaderName::Authorization).and_then(Digest::parse) else {
            self.stats.malformed += 1;
            return Some(Self::respond(&m, 403, "Forbidden", ""));
        };
        let impi = d.username().unwrap_or_default().to_vec();
        let (k, opc) = (self.k, self.opc);
        let sub = self.subscribers.entry(impi.clone()).or_insert_with(|| {
            (
                HssSubscriber::new(
                    Milenage::new(&k, &opc),
                    SqnGenerator::with_default_step(),
                    [0x80, 0],
                ),
                None,
            )
        });
        let response = d.response().unwrap_or_default();
        if response.is_empty() || sub.1.is_none() {
            self.rand_counter += 1;
            let mut rand = [0u8; 16];
            rand[..8].copy_from_slice(&self.rand_counter.to_be_bytes());
            rand[8..].copy_from_slice(&(impi.len() as u64 ^ 0x5a5a).to_be_bytes());
            let av = sub.0.next_vector(&rand).ok()?;
            let mut nb = [0u8; aka::NONCE_B64_LEN];
            let nonce = av.nonce(&mut nb).to_string();
            let www = format!(
                "WWW-Authenticate: Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=AKAv1-MD5, ck=\"{}\", ik=\"{}\"\r\n",
                self.realm,
                hex(av.ck.as_bytes()),
                hex(av.ik.as_bytes())
            );
            sub.1 = Some(av.xres.clone());
            self.stats.challenges += 1;
            return Some(Self::respond(&m, 401, "Unauthorized", &www));
        }
        let input = digest::DigestInput {
            username: d.username().unwrap_or_default(),
            realm: d.realm().unwrap_or_default(),
            nonce: d.nonce().unwrap_or_default(),
            method: b"REGISTER",
            uri: d.uri().unwrap_or_default(),
            qop: digest::Qop::None,
        };
        let ok = sub
            .1
            .as_ref()
            .is_some_and(|x| digest::verify_aka(&input, x, response).is_ok());
        if !ok {
            sub.1 = None;
            self.stats.auth_failed += 1;
            return Some(Self::respond(&m, 403, "Forbidden", ""));
        }
        let expires = v
            .header(HeaderName::Expires)
            .and_then(|e| std::str::from_utf8(e).ok()?.parse::<u32>().ok())
            .unwrap_or(3600);
        let user = impi.split(|&b| b == b'@').next().unwrap_or_default();
        let user = String::from_utf8_lossy(user);
        let contact = v
            .header(HeaderName::Contact)
            .map(|c| {
                String::from_utf8_lossy(c)
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default();
        if expires == 0 {
            self.stats.deregistered += 1;
        } else {
            self.stats.registered += 1;
        }
        let extra = format!(
            "Service-Route: <sip:orig@{};lr>\r\nP-Associated-URI: <sip:{user}@{}>\r\nContact: {contact};expires={expires}\r\n",
            self.route_host, self.realm
        );
        Some(Self::respond(&m, 200, "OK", &extra))
    }
}

/// Serve on `addr` until `stop` is set; returns the counters.
pub fn serve(addr: SocketAddr, realm: &str, stop: Arc<AtomicBool>) -> std::io::Result<CoreStats> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut core = CoreSim::new(realm, &addr.to_string());
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(answer) = core.handle(&buf[..n]) {
            let _ = sock.send_to(&answer, from);
        }
    }
    Ok(core.stats)
}
