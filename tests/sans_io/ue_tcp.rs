//! The UE simulator's TCP inside ESP (src/sim/uetcp.rs) against a `tcp::Host` playing the
//! P-CSCF, in memory on a simulated clock: the UE's connection from its port-c to the P-CSCF's
//! port-s, its segments over SA1 and the P-CSCF's over SA3 (TS 33.203 §7), whole SIP messages
//! both ways (RFC 3261 §18.2.2: the response on the request's connection), a 3 KB MESSAGE in
//! several segments, a reset and the reconnection on the next request, and ESP that is not the
//! set's refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcscf::esp::{Sa, SaOptions};
use pcscf::sim::ue::message_body;
use pcscf::sim::uetcp::{EspIn, UeTcp, seal};
use pcscf::sip::Message;
use pcscf::tcp::{Conn, Host, HostConfig, PortPairs, Segments, SetId};

const CK: [u8; 16] = [0x11; 16];
const IK: [u8; 16] = [0x22; 16];
/// The UE's spi-c (SA3, into its port-c) and the P-CSCF's spi-s (SA1, into its port-s).
const UE_SPI_C: u32 = 0x10000;
const P_SPI_S: u32 = 0x2001;
/// The P-CSCF's spi-c (SA4: the UE's port-s → its port-c).
const P_SPI_C: u32 = 0x2000;
const UE_C: u16 = 20000;
const UE_S: u16 = 20001;
const P_C: u16 = 5100;
const P_S: u16 = 5101;

fn ue_addr() -> IpAddr {
    [10, 211, 0, 2].into()
}
fn p_addr() -> IpAddr {
    [10, 211, 0, 1].into()
}

fn sa(spi: u32) -> Sa {
    Sa::from_aka(spi, "null", "aes-gcm", &CK, &IK, SaOptions::default()).unwrap()
}

/// The set's ports from the UE's side and from the P-CSCF's.
fn ports() -> (PortPairs, PortPairs) {
    (
        PortPairs {
            local: ue_addr(),
            remote: p_addr(),
            local_c: UE_C,
            local_s: UE_S,
            remote_c: P_C,
            remote_s: P_S,
        },
        PortPairs {
            local: p_addr(),
            remote: ue_addr(),
            local_c: P_C,
            local_s: P_S,
            remote_c: UE_C,
            remote_s: UE_S,
        },
    )
}

/// The UE side and a P-CSCF side joined by an in-memory link of ESP packets.
struct Net {
    now: Instant,
    id: SetId,
    ue: UeTcp,
    pcscf: Host,
    p_out: Segments,
    /// The P-CSCF's ends of SA1 (in) and SA3 (out).
    p_sa1: Sa,
    p_sa3: Sa,
    to_p: Vec<Vec<u8>>,
    to_ue: Vec<Vec<u8>>,
    /// The ESP packets the UE sent, and the next header of each (as the P-CSCF decrypted it).
    ue_sent: Vec<(usize, u8)>,
    at_p: Vec<Vec<u8>>,
    at_ue: Vec<(SetId, Vec<u8>)>,
}

const PSET: SetId = 9;

impl Net {
    fn new() -> Net {
        let id = UeTcp::set_id(3, 0);
        let (u, p) = ports();
        let mut ue = UeTcp::new(1);
        ue.open(
            id,
            u,
            Arc::new(sa(P_SPI_S)),
            sa(UE_SPI_C),
            Arc::new(sa(P_SPI_C)),
        )
        .unwrap();
        let mut pcscf = Host::new(HostConfig::default(), 2);
        pcscf.open(PSET, p).unwrap();
        Net {
            now: Instant::now(),
            id,
            ue,
            pcscf,
            p_out: Segments::with_limit(1024),
            p_sa1: sa(P_SPI_S),
            p_sa3: sa(UE_SPI_C),
            to_p: Vec::new(),
            to_ue: Vec::new(),
            ue_sent: Vec::new(),
            at_p: Vec::new(),
            at_ue: Vec::new(),
        }
    }

    fn ue_send(&mut self, sip: &[u8]) {
        let to_p = &mut self.to_p;
        self.ue
            .send(self.id, self.now, sip, &mut |p| to_p.push(p.to_vec()))
            .unwrap();
    }

    /// The P-CSCF's segments into ESP over SA3, toward the UE.
    fn p_flush(&mut self) {
        let mut buf = Vec::new();
        for (pkt, _, conn) in self.p_out.iter() {
            // only the UE's connection to our port-s is in use
            assert_eq!(conn, Conn::Accepted);
            let r = seal(&self.p_sa3, pkt, &mut buf).unwrap();
            self.to_ue.push(buf[r].to_vec());
        }
        self.p_out.clear();
    }

    /// Deliver until both ways are quiet (bounded), then run the timers due.
    fn run(&mut self) {
        for _ in 0..1000 {
            if self.to_p.is_empty() && self.to_ue.is_empty() {
                break;
            }
            for mut pkt in std::mem::take(&mut self.to_p) {
                let (inner, inb) = self.p_sa1.decapsulate(&mut pkt).unwrap();
                self.ue_sent.push((pkt.len(), inb.next_header));
                self.pcscf
                    .handle_segment(PSET, self.now, &pkt[inner], &mut self.p_out)
                    .unwrap();
            }
            let at_p = &mut self.at_p;
            self.pcscf
                .for_each_message(self.now, &mut self.p_out, |_, conn, m| {
                    assert_eq!(conn, Conn::Accepted);
                    at_p.push(m.to_vec());
                });
            self.p_flush();
            let to_p = &mut self.to_p;
            for mut pkt in std::mem::take(&mut self.to_ue) {
                let r = self
                    .ue
                    .esp_in(self.now, &mut pkt, &mut |p| to_p.push(p.to_vec()));
                assert_eq!(r, EspIn::Segment(self.id));
            }
            let got = self.ue.messages(self.now, &mut |p| to_p.push(p.to_vec()));
            for (id, conn, msg) in got {
                assert_eq!(conn, Conn::Opened, "the UE's own connection");
                self.at_ue.push((id, msg));
            }
        }
        assert!(self.to_p.is_empty() && self.to_ue.is_empty(), "not quiet");
    }

    /// Let time pass, running both sides' timers.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        let to_p = &mut self.to_p;
        self.ue
            .handle_timeout(self.now, &mut |p| to_p.push(p.to_vec()));
        self.pcscf.handle_timeout(self.now, &mut self.p_out);
        self.p_flush();
        self.run();
    }

    fn p_respond(&mut self, sip: &[u8]) {
        self.pcscf
            .send(PSET, Conn::Accepted, self.now, sip, &mut self.p_out)
            .unwrap();
        self.p_flush();
        self.run();
    }
}

fn register() -> Vec<u8> {
    b"REGISTER sip:ims.example SIP/2.0\r\nVia: SIP/2.0/TCP 10.211.0.2:20001;branch=z9hG4bK3r2;rport\r\nMax-Forwards: 70\r\nFrom: <sip:u3@ims.example>;tag=u3\r\nTo: <sip:u3@ims.example>\r\nCall-ID: reg-3@10.211.0.2\r\nCSeq: 2 REGISTER\r\nContact: <sip:u3@10.211.0.2:20001>;expires=600000\r\nExpires: 600000\r\nContent-Length: 0\r\n\r\n".to_vec()
}

fn message(n: u32, body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:echo@ims.example SIP/2.0\r\nVia: SIP/2.0/TCP 10.211.0.2:20001;branch=z9hG4bK3m{n}\r\nMax-Forwards: 70\r\nFrom: <sip:u3@ims.example>;tag=m3\r\nTo: <sip:echo@ims.example>\r\nCall-ID: msg-3-{n}@10.211.0.2\r\nCSeq: {n} MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ok(cseq: &str) -> Vec<u8> {
    format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.211.0.2:20001;branch=z9hG4bK3r2;rport=20000;received=10.211.0.2\r\nCall-ID: reg-3@10.211.0.2\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

/// The REGISTER goes whole over the UE's connection (its SYN first), in ESP with next header 6
/// over SA1; the 200 comes back on the same connection over SA3.
#[test]
fn register_crosses_whole_and_its_answer_comes_back_on_the_connection() {
    let mut n = Net::new();
    assert!(!n.ue.is_connected(n.id));
    n.ue_send(&register());
    n.run();
    assert!(n.ue.is_connected(n.id));
    assert_eq!(n.at_p, vec![register()]);
    assert!(n.ue_sent.iter().all(|&(_, nh)| nh == 6), "{:?}", n.ue_sent);
    n.p_respond(&ok("2 REGISTER"));
    assert_eq!(n.at_ue, vec![(n.id, ok("2 REGISTER"))]);
    let m = Message::parse(&n.at_ue[0].1).unwrap();
    assert_eq!(m.view().status(), Some(200));
    let s = n.ue.stats();
    assert_eq!(s.messages_in, 1);
    assert_eq!((s.esp_refused, s.seal_failed, s.accepted_in), (0, 0, 0));
}

/// A MESSAGE with a 3000-byte body (`--message-size 3000`) goes in several segments, each
/// ESP packet under a 1500-byte link, and arrives whole; two more follow on the connection.
#[test]
fn a_3_kb_message_crosses_whole_in_several_segments() {
    let mut n = Net::new();
    let body = message_body(3000);
    assert_eq!(body.len(), 3000);
    assert!(body.starts_with("hello hello"));
    let big = message(1, &body);
    n.ue_send(&big);
    n.run();
    assert_eq!(n.at_p, vec![big.clone()]);
    let data = n.ue_sent.iter().filter(|&&(len, _)| len > 200).count();
    assert!(data >= 3, "{:?}", n.ue_sent);
    assert!(n.ue_sent.iter().all(|&(len, _)| len <= 1500));
    for k in 2..4 {
        n.ue_send(&message(k, &body));
    }
    n.run();
    assert_eq!(n.at_p.len(), 3);
    assert_eq!(n.at_p[2], message(3, &body));
}

/// The P-CSCF resets the connection (its set's TCP closed and opened again, as when it drops a
/// connection): the UE's connection ends, and its next request connects again and arrives.
#[test]
fn after_a_reset_the_next_request_connects_again() {
    let mut n = Net::new();
    n.ue_send(&message(1, "hello"));
    n.run();
    assert_eq!(n.at_p.len(), 1);
    n.pcscf.close(PSET, n.now, &mut n.p_out);
    n.p_flush();
    n.run();
    assert!(!n.ue.is_connected(n.id), "the RST ends the UE's connection");
    n.pcscf.open(PSET, ports().1).unwrap();
    n.advance(Duration::from_millis(100));
    n.ue_send(&message(2, "hello"));
    n.run();
    assert!(n.ue.is_connected(n.id));
    assert_eq!(n.at_p, vec![message(1, "hello"), message(2, "hello")]);
    n.p_respond(&ok("2 MESSAGE"));
    assert_eq!(n.at_ue.len(), 1);
}

/// A lost SYN is sent again by the stack's own timer (TCP's retransmission, not SIP's).
#[test]
fn a_lost_segment_is_sent_again_by_tcp() {
    let mut n = Net::new();
    n.ue_send(&register());
    assert!(!n.to_p.is_empty());
    n.to_p.clear();
    for _ in 0..40 {
        n.advance(Duration::from_millis(250));
        if !n.at_p.is_empty() {
            break;
        }
    }
    assert_eq!(n.at_p, vec![register()]);
}

/// ESP that is not over one of the UE's SA3s is the caller's; over an SA3 but forged, replayed
/// or not TCP, it is refused and counted, and the connection goes on.
#[test]
fn esp_that_is_not_the_sets_is_refused() {
    let mut n = Net::new();
    n.ue_send(&register());
    n.run();
    let mut sink = Vec::new();
    // another SPI (SA2's, UDP): not ours
    let mut buf = Vec::new();
    let udp = {
        let mut f = vec![0u8; 28 + 5];
        f[28..].copy_from_slice(b"hello");
        let r = pcscf::wire::emit_datagram(
            &mut f,
            28..33,
            std::net::SocketAddr::new(p_addr(), P_C),
            std::net::SocketAddr::new(ue_addr(), UE_S),
        )
        .unwrap();
        f[r].to_vec()
    };
    let r = seal(&sa(0x10001), &udp, &mut buf).unwrap();
    let mut other = buf[r].to_vec();
    assert_eq!(
        n.ue.esp_in(n.now, &mut other, &mut |p| sink.push(p.to_vec())),
        EspIn::NotOurs
    );
    // UDP over SA3
    let r = seal(&n.p_sa3, &udp, &mut buf).unwrap();
    let mut not_tcp = buf[r].to_vec();
    assert_eq!(
        n.ue.esp_in(n.now, &mut not_tcp, &mut |p| sink.push(p.to_vec())),
        EspIn::Refused
    );
    // a flipped bit in an answer over SA3
    n.pcscf
        .send(PSET, Conn::Accepted, n.now, &ok("2 REGISTER"), &mut n.p_out)
        .unwrap();
    n.p_flush();
    let mut good = n.to_ue.pop().unwrap();
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        n.ue.esp_in(n.now, &mut forged, &mut |p| sink.push(p.to_vec())),
        EspIn::Refused
    );
    let mut copy = good.clone();
    assert_eq!(
        n.ue.esp_in(n.now, &mut good, &mut |p| sink.push(p.to_vec())),
        EspIn::Segment(n.id)
    );
    // and again: a replay
    assert_eq!(
        n.ue.esp_in(n.now, &mut copy, &mut |p| sink.push(p.to_vec())),
        EspIn::Refused
    );
    assert_eq!(n.ue.stats().esp_refused, 3);
    n.to_p.extend(sink);
    n.run();
    let got = n.ue.messages(n.now, &mut |_| {});
    assert_eq!(got, vec![(n.id, Conn::Opened, ok("2 REGISTER"))]);
}

/// A set closed: its connection reset over SA1, its SA3 no longer known, sends refused.
#[test]
fn a_closed_set_resets_and_forgets() {
    let mut n = Net::new();
    n.ue_send(&register());
    n.run();
    let to_p = &mut n.to_p;
    n.ue.close(n.id, n.now, &mut |p| to_p.push(p.to_vec()));
    assert_eq!(n.to_p.len(), 1, "one RST");
    assert!(n.ue.is_empty());
    n.run();
    let mut sink = Vec::new();
    assert!(
        n.ue.send(n.id, n.now, &register(), &mut |p| sink.push(p.to_vec()))
            .is_err()
    );
    assert!(sink.is_empty());
}

/// A hostile or broken P-CSCF: an answer without Content-Length on the stream (RFC 3261 §18.3:
/// it MUST be there) resets the UE's connection, nothing of it is handed out, and the UE's next
/// request connects again and arrives.
#[test]
fn a_broken_stream_from_the_pcscf_resets_and_the_next_request_reconnects() {
    let mut n = Net::new();
    n.ue_send(&message(1, "hello"));
    n.run();
    n.p_respond(b"SIP/2.0 200 OK\r\nCall-ID: msg-3-1@10.211.0.2\r\nCSeq: 1 MESSAGE\r\n\r\n");
    assert!(n.at_ue.is_empty(), "{:?}", n.at_ue);
    assert!(!n.ue.is_connected(n.id));
    assert_eq!(n.ue.host().stats().framing_errors.iter().sum::<u64>(), 1);
    n.advance(Duration::from_millis(100));
    n.ue_send(&message(2, "hello"));
    n.run();
    assert!(n.ue.is_connected(n.id));
    assert_eq!(n.at_p.last(), Some(&message(2, "hello")));
    n.p_respond(&ok("2 MESSAGE"));
    assert_eq!(n.at_ue, vec![(n.id, ok("2 MESSAGE"))]);
}
