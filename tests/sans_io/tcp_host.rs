//! Every SA set's TCP with SIP framing (src/tcp/host.rs): our host and the UEs' (one host
//! playing every UE), joined by an in-memory link, on a simulated clock. Whole SIP messages both
//! ways, pings, and the hostile side: slow senders, messages without Content-Length or too large,
//! sets beyond the bound, segments for no set, while an honest UE beside them keeps working.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use pcscf::sip::{FrameError, Message};
use pcscf::tcp::{Conn, Host, HostConfig, HostError, PortPairs, Segments, SendError, SetId};

/// The port pairs of set `id`, from our side and from the UE's (UE `id` at 10.0.1.id).
fn ports(id: SetId) -> (PortPairs, PortPairs) {
    let ours: IpAddr = [10, 0, 0, 1].into();
    let ue: IpAddr = [10, 0, 1, id as u8].into();
    let (pc, ps) = (5100 + 2 * id as u16, 5101 + 2 * id as u16);
    let (uc, us) = (6100, 6101);
    (
        PortPairs {
            local: ours,
            remote: ue,
            local_c: pc,
            local_s: ps,
            remote_c: uc,
            remote_s: us,
        },
        PortPairs {
            local: ue,
            remote: ours,
            local_c: uc,
            local_s: us,
            remote_c: pc,
            remote_s: ps,
        },
    )
}

struct Net {
    now: Instant,
    pcscf: Host,
    ues: Host,
    out: Segments,
    to_pcscf: Vec<(SetId, Vec<u8>)>,
    to_ues: Vec<(SetId, Vec<u8>)>,
    /// What each side's `for_each_message` handed out: (set, conn, message).
    at_pcscf: Vec<(SetId, Conn, Vec<u8>)>,
    at_ues: Vec<(SetId, Conn, Vec<u8>)>,
    /// Random loss: (xorshift state, loss %, most losses in a row one way).
    chaos: Option<(u64, u64, u8)>,
    run_lost: [u8; 2],
    /// A broken path: the UE's data segments lost (its bare ACKs, SYNs and RSTs pass) and
    /// everything toward it.
    broken: bool,
}

impl Net {
    fn new(cfg: HostConfig, sets: &[SetId]) -> Net {
        Net::with(cfg, HostConfig::default(), sets)
    }

    /// Our host with `cfg`, the UEs' with `ues`.
    fn with(cfg: HostConfig, ues: HostConfig, sets: &[SetId]) -> Net {
        let now = Instant::now();
        let mut n = Net {
            now,
            pcscf: Host::new(cfg, 11),
            ues: Host::new(ues, 22),
            out: Segments::with_limit(1024),
            to_pcscf: Vec::new(),
            to_ues: Vec::new(),
            at_pcscf: Vec::new(),
            at_ues: Vec::new(),
            chaos: None,
            run_lost: [0; 2],
            broken: false,
        };
        for &id in sets {
            let (p, u) = ports(id);
            n.pcscf.open(id, p).unwrap();
            n.ues.open(id, u).unwrap();
        }
        n
    }

    fn take(&mut self, from_pcscf: bool) {
        for (pkt, id, _) in self.out.iter() {
            let dir = usize::from(from_pcscf);
            if let Some((x, loss, most)) = self.chaos.as_mut() {
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                if *x % 100 < *loss && self.run_lost[dir] < *most {
                    self.run_lost[dir] += 1;
                    continue;
                }
            }
            self.run_lost[dir] = 0;
            if self.broken && (from_pcscf || tcp_payload_len(pkt) > 0) {
                continue;
            }
            if from_pcscf {
                self.to_ues.push((id, pkt.to_vec()));
            } else {
                self.to_pcscf.push((id, pkt.to_vec()));
            }
        }
        self.out.clear();
    }

    fn ue_send(&mut self, id: SetId, msg: &[u8]) -> Result<(), SendError> {
        let r = self
            .ues
            .send(id, Conn::Opened, self.now, msg, &mut self.out);
        self.take(false);
        r
    }

    /// Deliver, frame and run timers for `ms` milliseconds of simulated time, 1 ms a step.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            for (id, pkt) in std::mem::take(&mut self.to_pcscf) {
                let _ = self.pcscf.handle_segment(id, self.now, &pkt, &mut self.out);
                self.take(true);
            }
            for (id, pkt) in std::mem::take(&mut self.to_ues) {
                let _ = self.ues.handle_segment(id, self.now, &pkt, &mut self.out);
                self.take(false);
            }
            let got = &mut self.at_pcscf;
            self.pcscf
                .for_each_message(self.now, &mut self.out, |id, c, m| {
                    got.push((id, c, m.to_vec()))
                });
            self.take(true);
            let got = &mut self.at_ues;
            self.ues
                .for_each_message(self.now, &mut self.out, |id, c, m| {
                    got.push((id, c, m.to_vec()))
                });
            self.take(false);
            self.now += Duration::from_millis(1);
            if self.pcscf.poll_timeout().is_some_and(|t| t <= self.now) {
                self.pcscf.handle_timeout(self.now, &mut self.out);
                self.take(true);
            }
            if self.ues.poll_timeout().is_some_and(|t| t <= self.now) {
                self.ues.handle_timeout(self.now, &mut self.out);
                self.take(false);
            }
        }
    }
}

/// The TCP payload length of an IPv4 packet.
fn tcp_payload_len(pkt: &[u8]) -> usize {
    let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
    let data_offset = ((pkt[20 + 12] >> 4) as usize) * 4;
    total - 20 - data_offset
}

/// A MESSAGE of `len` bytes with a correct Content-Length.
fn message(n: usize, len: usize) -> Vec<u8> {
    let head = format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/TCP 10.0.1.1:6100;branch=z9hG4bK{n:06}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=a\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: tcp-{n}\r\nCSeq: 1 MESSAGE\r\nContent-Length: "
    );
    let body = len - head.len() - 9;
    let mut m = format!("{head}{body:05}\r\n\r\n").into_bytes();
    m.extend(std::iter::repeat_n(b'x', body));
    assert_eq!(m.len(), len);
    m
}

#[test]
fn sip_messages_cross_whole_both_ways() {
    let mut net = Net::new(HostConfig::default(), &[1, 2]);
    // a 3 KB MESSAGE, then three small ones in one write: four messages out, in order
    let big = message(1, 3000);
    net.ue_send(1, &big).unwrap();
    let three: Vec<u8> = (2..5).flat_map(|n| message(n, 400)).collect();
    net.run(20);
    net.ue_send(1, &three).unwrap();
    net.ue_send(2, &message(9, 2500)).unwrap();
    net.run(50);
    let ones: Vec<_> = net.at_pcscf.iter().filter(|(id, ..)| *id == 1).collect();
    assert_eq!(ones.len(), 4, "{:?}", net.pcscf);
    assert_eq!(ones[0].2, big);
    for (k, (_, conn, m)) in ones[1..].iter().enumerate() {
        assert_eq!(*conn, Conn::Accepted);
        assert_eq!(*m, message(k + 2, 400));
        assert!(Message::parse(m).is_ok());
    }
    assert_eq!(net.at_pcscf.iter().filter(|(id, ..)| *id == 2).count(), 1);
    // the answer goes back on the UE's connection; a request of ours on our own
    net.pcscf
        .send(1, Conn::Accepted, net.now, &message(20, 1500), &mut net.out)
        .unwrap();
    net.take(true);
    net.pcscf
        .send(2, Conn::Opened, net.now, &message(21, 3100), &mut net.out)
        .unwrap();
    net.take(true);
    net.run(50);
    assert_eq!(
        net.at_ues,
        vec![
            (1, Conn::Opened, message(20, 1500)),
            (2, Conn::Accepted, message(21, 3100)),
        ]
    );
    assert_eq!(net.pcscf.stats().messages_in, 5);
    assert_eq!(net.pcscf.stats().messages_out, 2);
}

#[test]
fn a_keep_alive_ping_gets_one_crlf() {
    let mut net = Net::new(HostConfig::default(), &[1]);
    net.ue_send(1, &message(1, 600)).unwrap();
    net.run(20);
    net.ue_send(1, b"\r\n\r\n").unwrap();
    net.run(20);
    assert_eq!(net.pcscf.stats().pings, 1);
    // the pong is a bare CRLF: the UE's framer takes it as a stray CRLF and nothing else
    net.ue_send(1, &message(2, 600)).unwrap();
    net.run(20);
    assert_eq!(net.at_pcscf.len(), 2);
    assert!(net.at_ues.is_empty());
    assert!(net.ues.is_established(1, Conn::Opened));
}

/// The honest UE of set 2 beside a hostile one in set 1: its message still arrives.
fn honest_still_works(net: &mut Net) {
    let before = net.at_pcscf.iter().filter(|(id, ..)| *id == 2).count();
    net.ue_send(2, &message(77, 1200)).unwrap();
    net.run(30);
    let after = net.at_pcscf.iter().filter(|(id, ..)| *id == 2).count();
    assert_eq!(after, before + 1, "the honest UE's message was lost");
}

#[test]
fn a_slow_sender_is_cut_off_after_the_message_time() {
    let cfg = HostConfig::default();
    let mut net = Net::new(cfg, &[1, 2]);
    let m = message(1, 800);
    let mut sent = 0;
    // one byte every 100 ms, for longer than the message may take
    let steps = cfg.message_time.as_millis() as usize / 100 + 20;
    for &b in m.iter().take(steps) {
        if net.pcscf.stats().slow_messages > 0 || net.ue_send(1, &[b]).is_err() {
            break;
        }
        sent += 1;
        net.run(100);
    }
    assert!(sent < m.len(), "the test sent the whole message");
    assert_eq!(
        net.pcscf.stats().slow_messages,
        1,
        "{:?}",
        net.pcscf.stats()
    );
    assert!(net.at_pcscf.is_empty());
    assert!(!net.ues.is_established(1, Conn::Opened));
    honest_still_works(&mut net);
}

#[test]
fn framing_errors_reset_the_connection_and_are_counted() {
    let cfg = HostConfig::default();
    let cases: [(&[u8], FrameError); 3] = [
        (
            b"MESSAGE sip:b@x SIP/2.0\r\nCall-ID: 1\r\n\r\nhello",
            FrameError::MissingContentLength,
        ),
        (
            b"MESSAGE sip:b@x SIP/2.0\r\nContent-Length: 5\r\nl: 6\r\n\r\nhello!",
            FrameError::ConflictingContentLength,
        ),
        (
            b"MESSAGE sip:b@x SIP/2.0\r\nContent-Length: 99999999\r\n\r\n",
            FrameError::TooLarge,
        ),
    ];
    for (bytes, why) in cases {
        let mut net = Net::new(cfg, &[1, 2]);
        net.ue_send(1, bytes).unwrap();
        net.run(30);
        assert_eq!(
            net.pcscf.stats().framing_errors[why.index()],
            1,
            "{why:?}: {:?}",
            net.pcscf.stats()
        );
        assert!(net.at_pcscf.is_empty());
        assert!(!net.ues.is_established(1, Conn::Opened));
        honest_still_works(&mut net);
        // the UE may connect again and be framed afresh
        net.run(100);
        net.ue_send(1, &message(5, 700)).unwrap();
        net.run(50);
        assert_eq!(
            net.at_pcscf.iter().filter(|(id, ..)| *id == 1).count(),
            1,
            "{why:?}: no fresh start"
        );
    }
}

#[test]
fn a_header_section_that_never_ends_is_bounded() {
    let cfg = HostConfig {
        max_message: 4096,
        ..HostConfig::default()
    };
    let mut net = Net::new(cfg, &[1, 2]);
    net.ue_send(1, b"MESSAGE sip:b@x SIP/2.0\r\n").unwrap();
    for _ in 0..120 {
        if net
            .ue_send(1, b"X-Junk: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
            .is_err()
        {
            break;
        }
        net.run(2);
    }
    net.run(30);
    assert_eq!(
        net.pcscf.stats().framing_errors[FrameError::TooLarge.index()],
        1
    );
    honest_still_works(&mut net);
}

#[test]
fn sets_are_bounded_and_segments_need_an_open_set() {
    let cfg = HostConfig {
        max_sets: 2,
        ..HostConfig::default()
    };
    let mut net = Net::with(cfg, HostConfig::default(), &[1, 2]);
    let (p, _) = ports(3);
    assert_eq!(net.pcscf.open(3, p), Err(HostError::Full));
    assert_eq!(net.pcscf.stats().sets_refused, 1);
    // the UE of a set we do not have: its SYN is refused and counted, nothing answers
    let (_, u) = ports(3);
    net.ues.open(3, u).unwrap();
    net.ue_send(3, b"x").unwrap();
    let (id, syn) = net.to_pcscf.pop().unwrap();
    assert_eq!(
        net.pcscf.handle_segment(id, net.now, &syn, &mut net.out),
        Err(HostError::UnknownSet)
    );
    assert!(net.out.is_empty());
    // a segment of set 1 handed over as set 2's (the SA set does not match): refused
    net.ue_send(1, b"y").unwrap();
    let (_, syn1) = net.to_pcscf.pop().unwrap();
    assert!(matches!(
        net.pcscf.handle_segment(2, net.now, &syn1, &mut net.out),
        Err(HostError::Segment(_))
    ));
    assert_eq!(net.pcscf.stats().segments_refused, 1);
    assert_eq!(net.pcscf.stats().segments_unknown_set, 1);
}

#[test]
fn closing_a_set_resets_its_connections_and_forgets_it() {
    let mut net = Net::new(HostConfig::default(), &[1, 2]);
    net.ue_send(1, &message(1, 500)).unwrap();
    net.run(20);
    net.pcscf.close(1, net.now, &mut net.out);
    net.take(true);
    net.run(20);
    assert!(!net.ues.is_established(1, Conn::Opened));
    assert_eq!(net.pcscf.len(), 1);
    assert_eq!(
        net.pcscf.send(1, Conn::Opened, net.now, b"x", &mut net.out),
        Err(SendError::Closed)
    );
    honest_still_works(&mut net);
}

#[test]
fn a_quiet_set_holds_no_tcp_memory() {
    let sets: Vec<SetId> = (1..=50).collect();
    let mut net = Net::new(HostConfig::default(), &sets);
    // fifty sets, none using TCP: nothing built
    assert_eq!((net.pcscf.len(), net.pcscf.live()), (50, 0));
    net.ue_send(1, &message(1, 900)).unwrap();
    net.run(20);
    assert_eq!(net.at_pcscf.len(), 1);
    assert_eq!(net.pcscf.live(), 1);
    // idle: closed, then (after TIME-WAIT) given back
    let idle = HostConfig::default().endpoint.idle;
    for _ in 0..3 {
        net.now += idle + Duration::from_secs(1);
        net.run(50);
    }
    let st = net.pcscf.stats();
    assert_eq!(net.pcscf.live(), 0, "{st:?}");
    // (the UE's last segments after our close may wake it briefly: each wake ends asleep)
    assert!(st.slept >= 1 && st.woken == st.slept, "{st:?}");
    // and built again when the UE comes back
    net.ue_send(1, &message(2, 900)).unwrap();
    net.run(50);
    assert_eq!(net.at_pcscf.len(), 2, "{:?}", net.pcscf.stats());
    assert_eq!(net.pcscf.live(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random loss (up to 40 %, up to five in a row one way) with the default bound on a silent
    /// peer, so a connection whose peer stays silent too long is reset and a later message
    /// opens a new one: what the host hands out is always whole messages, each one sent, in the order
    /// sent, none twice (a partial message of a connection that ended is dropped, never
    /// completed by the next connection's bytes); one missing means a connection ended.
    #[test]
    fn only_whole_messages_in_order_whatever_the_loss(
        seed in 1u64..,
        loss in 0u64..40,
        sizes in prop::collection::vec(100usize..4000, 1..8),
    ) {
        // (no bound on a message's time here: a partial message must be dropped because its
        // connection ended, not because it was slow)
        let cfg = HostConfig { message_time: Duration::from_secs(3600), ..HostConfig::default() };
        let mut net = Net::new(cfg, &[1]);
        net.chaos = Some((seed, loss, 5));
        let mut sent = Vec::new();
        for (n, len) in sizes.iter().enumerate() {
            let m = message(n, (*len).max(300));
            if net.ue_send(1, &m).is_ok() {
                sent.push(m);
            }
            // a few seconds between messages, so retransmissions and the bound both play
            for _ in 0..5 {
                net.run(10);
                net.now += Duration::from_secs(1);
            }
        }
        for _ in 0..60 {
            net.run(10);
            net.now += Duration::from_secs(1);
        }
        let got: Vec<&Vec<u8>> = net.at_pcscf.iter().map(|(_, _, m)| m).collect();
        let mut at = 0;
        for m in &got {
            let Some(k) = sent[at..].iter().position(|s| s == *m) else {
                return Err(TestCaseError::fail(format!("a message handed out that was not sent in this order ({} bytes)", m.len())));
            };
            at += k + 1;
        }
        if got.len() < sent.len() {
            let st = net.ues.stats();
            let ended = net.ues.endpoint(1).map_or(0, |e| e.stats().ended)
                + net.pcscf.endpoint(1).map_or(0, |e| e.stats().ended);
            prop_assert!(ended > 0 || st.slept > 0 || net.pcscf.stats().slept > 0,
                "{} of {} messages and no connection ended", got.len(), sent.len());
        }
    }
}

#[test]
fn a_partial_message_of_a_dead_connection_is_never_completed_by_the_next() {
    let cfg = HostConfig {
        message_time: Duration::from_secs(3600),
        ..HostConfig::default()
    };
    let mut net = Net::new(cfg, &[1]);
    net.ue_send(1, &message(1, 400)).unwrap();
    net.run(20);
    // a 3 KB message: its first segment arrives, then the path breaks
    net.ue_send(1, &message(2, 3000)).unwrap();
    assert!(net.to_pcscf.len() >= 2, "one segment only: nothing to cut");
    net.to_pcscf.truncate(1);
    net.broken = true;
    net.run(20);
    assert_eq!(net.at_pcscf.len(), 1, "the partial message was handed out");
    // the UE gives up on the silent path (its RST still passes) ...
    for _ in 0..40 {
        net.now += Duration::from_secs(1);
        net.run(5);
    }
    assert!(!net.ues.is_established(1, Conn::Opened));
    assert!(!net.pcscf.is_established(1, Conn::Accepted));
    // ... and sends its next message over a new connection once the path is back
    net.broken = false;
    net.ue_send(1, &message(3, 500)).unwrap();
    net.run(50);
    let got: Vec<&Vec<u8>> = net.at_pcscf.iter().map(|(_, _, m)| m).collect();
    assert_eq!(got, vec![&message(1, 400), &message(3, 500)]);
    assert_eq!(
        net.pcscf.stats().partial_dropped,
        1,
        "{:?}",
        net.pcscf.stats()
    );
}

/// The per-packet path of the P-CSCF's host allocates nothing once a connection is up and its
/// buffers have grown: segments in, messages framed and handed out, answers sent, timers run.
#[test]
fn the_per_packet_path_does_not_allocate() {
    use crate::support::alloc::allocations_in;
    let mut net = Net::new(HostConfig::default(), &[1]);
    let (mut allocs, mut messages) = (0u64, 0usize);
    let answer = message(999, 600);
    for n in 0..300 {
        net.ue_send(1, &message(n, 400 + (n % 7) * 500)).unwrap();
        for _ in 0..3 {
            // the P-CSCF's side, counted once warm
            let warm = n >= 50;
            let batch = std::mem::take(&mut net.to_pcscf);
            let (got, a) = allocations_in(|| {
                for (id, pkt) in &batch {
                    let _ = net.pcscf.handle_segment(*id, net.now, pkt, &mut net.out);
                }
                let mut got = 0usize;
                let mut ids = [0u64; 8];
                net.pcscf
                    .for_each_message(net.now, &mut net.out, |id, _, _| {
                        ids[got % 8] = id;
                        got += 1;
                    });
                for &id in ids.iter().take(got.min(8)) {
                    let _ = net
                        .pcscf
                        .send(id, Conn::Accepted, net.now, &answer, &mut net.out);
                }
                if net.pcscf.poll_timeout().is_some_and(|t| t <= net.now) {
                    net.pcscf.handle_timeout(net.now, &mut net.out);
                }
                got
            });
            if warm {
                allocs += a;
                messages += got;
            }
            net.take(true);
            // the UE's side (harness)
            for (id, pkt) in std::mem::take(&mut net.to_ues) {
                let _ = net.ues.handle_segment(id, net.now, &pkt, &mut net.out);
                net.take(false);
            }
            net.ues
                .for_each_message(net.now, &mut net.out, |_, _, _| {});
            net.take(false);
            net.now += Duration::from_millis(1);
            if net.ues.poll_timeout().is_some_and(|t| t <= net.now) {
                net.ues.handle_timeout(net.now, &mut net.out);
                net.take(false);
            }
        }
    }
    assert!(messages > 200, "only {messages} messages counted");
    // deadlines a set left behind stay a bounded share of the timer heap
    assert!(net.pcscf.timer_entries() <= 2 * net.pcscf.len() + 16);
    assert_eq!(allocs, 0, "{allocs} allocations for {messages} messages");
}
