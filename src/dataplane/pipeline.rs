//! The stages one received packet goes through, on its frame's bytes alone.
//!
//! Stages, in the order a packet meets them (each counted in [`WorkerStats`]):
//! 1. **classify**: UDP or ESP to one of our addresses and ports, else drop;
//! 2. **ESP in**: SA by SPI, ICV, anti-replay, decrypt, selector check (RFC 4303 §3.4);
//! 3. **SIP**: parse and validate the message in the frame; registration traffic is punted to the
//!    registration thread, bad requests get their 4xx, the rest is rewritten in place;
//!    responses go where our authenticated Via branch says (`sip::branch`), never where a
//!    UE-written Via points, and one whose top Via does not verify is dropped;
//! 4. **ESP out / forward**: fresh IP + UDP headers toward the next hop (ESP-protected toward a
//!    registered UE).
//!
//! Owns: what happens to one packet. It never touches the backend: [`Pipeline::handle`] takes
//! the frame and where the packet lies in it, and returns a [`Verdict`] — send the frame on,
//! send an answer built here (the worker puts it in a fresh frame, [`Pipeline::answer`]), punted,
//! or dropped. Per packet it allocates nothing, takes no lock and makes no syscall.
//!
//! Between the stages a SIP message travels as one [`InFrame`]: who sent it to whom, whether it
//! came inside ESP, and where its bytes lie in the frame (the same shape as a punted message).

use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;

use crate::dataplane::classify::{L4, classify, udp_checksum_ok};
use crate::dataplane::queue::{Datagram, MsgQueue, NO_CONN, Protection};
use crate::dataplane::stats::{DropReason, WorkerStats};
use crate::esp::Sa;
use crate::io::Side;
use crate::satable::{Entry, ReadGuard};
use crate::sip::Index;
use crate::sip::branch::{Branch, BranchKey, Dir, LANE_CORE_STREAM, LANE_STREAM, NO_UE};
use crate::sip::flow::{Flow, FlowKey};
use crate::sip::rules::{self, DialogError, OurEntries, ProxyIdentity, RequestKind};
use crate::sip::{Editor, HeaderName, Keep, OwnUris, View};
use crate::wire;

/// What a worker needs to know about the deployment; built once from the configuration.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub id: u16,
    /// Our UE-side addresses and the unprotected SIP port.
    pub ue_addrs: Vec<IpAddr>,
    pub ue_sip_port: u16,
    pub protected_ports: RangeInclusive<u16>,
    /// Our core-side address and port (Via, source of forwarded requests).
    pub core: SocketAddr,
    /// The next hop for requests toward the core (a static I-CSCF), if any, and whether it
    /// takes them over TCP (`core.icscf_transport`).
    pub icscf: Option<SocketAddr>,
    pub icscf_tcp: bool,
    /// Forward unprotected non-REGISTER requests statelessly to the I-CSCF (RFC 3261 §16.11)
    /// instead of rejecting them: a relay mode for load tests and side-by-side comparisons.
    pub stateless_relay: bool,
    /// Our Via sent-by toward the core, `host:port`, and the Path/Route identity.
    pub via_sent_by: String,
    pub hostname: String,
    pub batch: usize,
    /// The largest request sent to a UE in a datagram; larger ones go on our TCP connection
    /// inside its SAs (RFC 3261 §18.1.1; `ue.max_udp_request`).
    pub max_udp_request: usize,
    /// The largest request sent to the core in a datagram; larger ones go over TCP (RFC 3261
    /// §18.1.1; `core.max_udp_request`), through the core TCP thread.
    pub core_max_udp_request: usize,
    /// Check UDP checksums on receive. Off for AF_XDP on veth, which hands over packets with
    /// partial (offloaded) checksums; ESP has its own integrity check either way.
    pub verify_udp_checksum: bool,
}

impl WorkerConfig {
    /// What names us in a Route or Request-URI: our hostname, UE-side and core-side addresses,
    /// the plain UE-side and core-side ports and the protected range (`sip::own`).
    pub fn own_uris(&self) -> OwnUris {
        let mut addrs = self.ue_addrs.clone();
        addrs.push(self.core.ip());
        OwnUris::new(
            &[self.hostname.as_str()],
            &addrs,
            &[self.ue_sip_port, self.core.port()],
            Some(self.protected_ports.clone()),
        )
    }
}

/// A SIP message found in a frame: who sent it to whom, whether it came inside ESP (and over
/// which of our SPIs), and where its bytes lie in the frame.
pub type InFrame = Datagram<Range<usize>>;

/// What to do with one packet.
#[derive(Debug)]
pub enum Verdict<'g> {
    /// Re-addressed (and protected) in its own frame: send `frame[range]` toward `toward`.
    Forward {
        range: Range<usize>,
        toward: Side,
    },
    /// Answered: send [`Pipeline::answer`] in a fresh frame; the request's frame can go.
    Reply(Reply<'g>),
    /// Copied to the registration thread; the frame can go.
    Punted,
    Drop(DropReason),
    /// A TCP segment (the inner IP packet `frame[inner]`, ESP removed) that came over the UE's
    /// SA `entry`, to our address `ours`: for the worker's TCP (`dataplane::streams`).
    Segment {
        inner: Range<usize>,
        entry: &'g Entry,
        ours: IpAddr,
    },
    /// The SIP message `frame[range]` goes on a TCP connection in the SA set of `entry`, which
    /// this worker holds, from our address `ours`: the UE's (its port-c → our port-s) when
    /// `entry`'s port is our port-s (a response, RFC 3261 §18.2.2), ours (our port-c → its
    /// port-s) when it is our port-c (a request too large for a datagram, §18.1.1).
    Stream {
        range: Range<usize>,
        entry: &'g Entry,
        ours: IpAddr,
    },
    /// Copied to the worker that holds the UE's TCP; the frame can go.
    HandedOver,
    /// The SIP message `frame[range]` goes to the core over TCP: on the core TCP thread's
    /// connection `conn` while it is open (a response to a request that came on it, RFC 3261
    /// §18.2.2), else on its connection to `dst` ([`NO_CONN`]: a request, RFC 3261 §18.1.1).
    CoreStream {
        range: Range<usize>,
        conn: u32,
        dst: SocketAddr,
    },
}

/// An answer the pipeline built in its scratch buffer, and how it leaves.
#[derive(Debug)]
pub struct Reply<'g> {
    pub side: Side,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Its length in [`Pipeline::answer`].
    pub len: usize,
    /// The outbound SA it goes over (toward a UE over its set), or `None` for plain UDP.
    pub over: Option<&'g Sa>,
    /// Instead: on the UE's TCP connection in the set of this (inbound) entry, which the
    /// request came on (RFC 3261 §18.2.2).
    pub stream: Option<&'g Entry>,
    /// Instead: on the core TCP thread's connection that the request came on (or to `dst`
    /// over TCP once it is gone, RFC 3261 §18.2.2).
    pub core_conn: Option<u32>,
}

/// The branch key of this process: every worker seals and verifies with it, so a response may
/// come back to any worker (drawn once from the OS; no lock after that).
fn branch_key() -> &'static BranchKey {
    static KEY: std::sync::OnceLock<BranchKey> = std::sync::OnceLock::new();
    KEY.get_or_init(BranchKey::random)
}

/// What the layers below SIP write around a message the pipeline edited, which its edits must
/// leave room for: in front, an IPv6 header, UDP and (toward a UE) the ESP header with the
/// longest IV of our suites (RFC 4303 §2: AES-CBC's 16 bytes); behind, ESP's padding (at most
/// 15 with a 16-byte block), Pad Length, Next Header and the longest ICV (16).
const LOWER_LAYERS: Keep = Keep {
    head: wire::ip::IPV6_HEADER_LEN + wire::udp::HEADER_LEN + crate::esp::ESP_HEADER_LEN + 16,
    tail: 15 + 2 + 16,
};

/// The flow-token key of this process: the Record-Route entries any worker writes verify on
/// every worker (drawn once from the OS; no lock after that).
fn flow_key() -> &'static FlowKey {
    static KEY: std::sync::OnceLock<FlowKey> = std::sync::OnceLock::new();
    KEY.get_or_init(FlowKey::random)
}

/// Write IP + UDP headers for `frame[range]` from `from` to `to`, then ESP-protect the packet in
/// place with `sa` (the ESP-out stage). Returns where the ESP packet lies.
pub(crate) fn udp_over_sa(
    frame: &mut [u8],
    range: Range<usize>,
    from: SocketAddr,
    to: SocketAddr,
    sa: &Sa,
) -> Result<Range<usize>, DropReason> {
    let r = wire::emit_datagram(frame, range, from, to).map_err(|_| DropReason::NoRoom)?;
    let mut f = crate::esp::Frame::new(frame, r.start, r.end);
    sa.outbound(&mut f)?;
    Ok(f.start..f.end)
}

/// The identity to assert for a registered UE's request (TS 24.229 §5.2.6.3): the first
/// P-Preferred-Identity (RFC 3325 §9.2 allows a sip: and a tel: one) that is one of its
/// registered IMPUs (written into
/// `out` as `<uri>`), else `None` (the default IMPU). A preferred identity that is not
/// registered is not an error: it is replaced, as RFC 3325 §9.1 lets a trusted proxy do.
/// `checked` is what validation read of `view`: the URIs, unless there were too many to keep.
fn preferred_identity<'o>(
    view: crate::sip::View<'_>,
    checked: &crate::sip::Checked,
    reg: &crate::satable::Registration,
    out: &'o mut [u8; 256],
) -> Option<&'o [u8]> {
    let impu = match checked.ppi_uris() {
        Some(uris) => uris
            .iter()
            .find_map(|&u| reg.registered_impu(view.bytes(u))),
        None => view
            .values(HeaderName::PPreferredIdentity)
            .filter_map(crate::sip::headers::NameAddr::parse)
            .find_map(|na| reg.registered_impu(na.uri)),
    }?;
    let mut w = crate::sip::Writer::new(out);
    w.put(b"<").put(impu).put(b">");
    let n = w.finish()?;
    Some(&out[..n])
}

/// Our UE-side Via host for one of our UE-side addresses, rendered once (`10.0.0.1`,
/// `[fd00::1]`).
#[derive(Clone, Debug)]
struct UeHost {
    addr: IpAddr,
    text: [u8; 48],
    len: usize,
}

/// The per-packet pipeline of one worker.
pub struct Pipeline {
    cfg: WorkerConfig,
    /// What names us in a Route / Request-URI (built once from `cfg`).
    own: OwnUris,
    /// Our UE-side Via hosts, one per UE-side address (built once from `cfg`).
    ue_hosts: Vec<UeHost>,
    /// Our core-side Via sent-by split into the host (its bytes in `cfg.via_sent_by`) and the
    /// port, once: what a core response's top Via must name (`None`: it does not parse, and no
    /// Via is ours).
    core_sent_by: Option<(Range<usize>, Option<u16>)>,
    /// Seals and checks our Via branches.
    key: &'static BranchKey,
    /// Seals and checks the flow tokens of our Record-Route entries.
    flow_key: &'static FlowKey,
    punt: Arc<MsgQueue>,
    /// Where the dialog events go (`control::dialogs`), if anywhere.
    events: Option<Arc<MsgQueue>>,
    /// Every worker's hand-over queue, by worker id: a message for a UE's TCP connection that
    /// another worker holds goes to that worker's.
    peers: Option<Arc<[Arc<MsgQueue>]>>,
    pub(crate) stats: WorkerStats,
    /// Where answers are built (allocated once).
    scratch: Vec<u8>,
    /// The index every message is parsed into (allocated once; taken out while a message is
    /// handled, so the handlers may borrow it beside `self`).
    idx: Option<Box<Index>>,
    punted: bool,
    /// The icid-values of the charging vectors we start: a random prefix per pipeline and a
    /// counter, so they are unique across workers, restarts and nodes without coordination.
    icid_prefix: u64,
    icid_seq: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("id", &self.cfg.id)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(cfg: WorkerConfig, punt: Arc<MsgQueue>) -> Pipeline {
        let ue_hosts = cfg
            .ue_addrs
            .iter()
            .map(|&addr| {
                let mut text = [0u8; 48];
                let mut w = crate::sip::Writer::new(&mut text);
                match addr {
                    IpAddr::V4(a) => w.display(&a),
                    IpAddr::V6(a) => w.put(b"[").display(&a).put(b"]"),
                };
                let len = w.finish().expect("an IP address fits 48 bytes");
                UeHost { addr, text, len }
            })
            .collect();
        let sent_by = cfg.via_sent_by.as_bytes();
        let core_sent_by = crate::sip::headers::split_host_port(sent_by)
            .map(|(host, port)| (crate::sip::Span::of(sent_by, host).range(), port));
        Pipeline {
            own: cfg.own_uris(),
            ue_hosts,
            core_sent_by,
            key: branch_key(),
            flow_key: flow_key(),
            punt,
            events: None,
            peers: None,
            stats: WorkerStats::default(),
            // every frame a message is edited in is at most FRAME_SIZE: a rebuilt head fits
            scratch: vec![0; crate::io::FRAME_SIZE],
            idx: Some(Box::new(Index::empty())),
            punted: false,
            icid_prefix: {
                let mut b = [0u8; 8];
                getrandom::fill(&mut b).expect("the OS random source");
                u64::from_ne_bytes(b)
            },
            icid_seq: 0,
            cfg,
        }
    }

    /// Every worker's hand-over queue, by worker id (`Verdict::HandedOver`).
    pub fn set_peers(&mut self, peers: Arc<[Arc<MsgQueue>]>) {
        self.peers = Some(peers);
    }

    /// Copy the messages that move a dialog to `q` from now on (`Pipeline::dialog_event`).
    pub fn set_dialog_events(&mut self, q: Arc<MsgQueue>) {
        self.events = Some(q);
    }

    /// Copy `msg`, which moves a dialog of the registration `binding` and came from `from`, to
    /// the registration thread's dialog book (`control::dialogs`: it releases the calls of a
    /// registration that ends, TS 24.229 §5.2.8). The workers keep no dialog state; a full
    /// queue loses the event, counted. The callers hand in what moves a dialog, from what they
    /// already know of the message: an INVITE that starts one, a request inside one but ACK,
    /// a final response to an INVITE (`rules::is_final_to_invite`; RFC 3261 §12.1, §12.2).
    fn dialog_event(&mut self, msg: View<'_>, from: Side, binding: u64) {
        let Some(q) = &self.events else {
            return;
        };
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        let d = Datagram {
            side: from,
            protection: Protection::Plain,
            src: nowhere,
            dst: nowhere,
            payload: (),
        };
        match q.push_parts(d, [&binding.to_le_bytes(), msg.as_bytes()]) {
            Ok(()) => {
                self.stats.dialog_events += 1;
                self.punted = true;
            }
            Err(_) => self.stats.dialog_events_lost += 1,
        }
    }

    /// Count a message a dialog rule refused, by reason (`None`: a dialog whose tokens verify
    /// but name another UE's registration), and return the answer a request gets for it.
    fn refuse(&mut self, why: Option<DialogError>) -> (u16, &'static str) {
        let i = why.map_or(DialogError::NAMES.len(), |w| w.index());
        if let Some(n) = self.stats.dialog_refusals.get_mut(i) {
            *n += 1;
        }
        why.map_or(DialogError::Forged.status(), |w| w.status())
    }

    /// The verdict on a request's route-set check (`rules::pop_dialog_routes`) against the
    /// registration it must belong to (`binding`, UE address): `None` to go on; else it is
    /// counted by reason and gets an answer (`Ok`, counted in `dialog_refused`) or, an ACK
    /// (RFC 3261 §17.1.1.3: no answer) or our own limit, a drop (`Err`).
    fn dialog_request(
        &mut self,
        popped: Result<rules::DialogRoute, DialogError>,
        (binding, ue): (u64, IpAddr),
        is_ack: bool,
    ) -> Option<Result<(u16, &'static str), DropReason>> {
        let why = match popped {
            Ok(r) if r.flow.is_of(binding, ue) => return None,
            // another UE's dialog: its tokens verify, but not for this registration
            Ok(_) => None,
            Err(why) => Some(why),
        };
        let status = self.refuse(why);
        Some(match why {
            Some(DialogError::TooLong | DialogError::Edit(_)) => Err(DropReason::NoRoom),
            _ if is_ack => Err(DropReason::ForeignDialog),
            _ => {
                self.stats.dialog_refused += 1;
                Ok(status)
            }
        })
    }

    /// The verdict on a response's Record-Route check (`rules::response_to_ue` /
    /// `response_from_ue`): `None` to go on (no dialog, or ours with a flow `is_ours` accepts),
    /// else the drop, counted by reason.
    fn dialog_response<'g>(
        &mut self,
        checked: Result<Option<Flow>, DialogError>,
        is_ours: impl Fn(&Flow) -> bool,
    ) -> Option<Verdict<'g>> {
        let why = match checked {
            Ok(None) => return None,
            Ok(Some(f)) if is_ours(&f) => return None,
            Ok(Some(_)) => None,
            Err(why) => Some(why),
        };
        self.refuse(why);
        Some(Verdict::Drop(match why {
            Some(DialogError::TooLong | DialogError::Edit(_)) => DropReason::NoRoom,
            _ => DropReason::ForeignDialog,
        }))
    }

    /// A fresh icid-value (RFC 7315 §4.6: globally unique), 32 hex digits, in `out`.
    fn next_icid<'o>(&mut self, out: &'o mut [u8; 32]) -> &'o [u8] {
        self.icid_seq = self.icid_seq.wrapping_add(1);
        let mut w = crate::sip::Writer::new(out);
        w.hex64(self.icid_prefix).hex64(self.icid_seq);
        out
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// The bytes of the answer a [`Verdict::Reply`] names.
    pub fn answer(&self, r: &Reply<'_>) -> &[u8] {
        &self.scratch[..r.len.min(self.scratch.len())]
    }

    /// Whether anything was punted since the last call (the worker wakes the registration
    /// thread once per batch, not per message).
    pub fn take_punted(&mut self) -> bool {
        std::mem::take(&mut self.punted)
    }

    /// Our UE-side address of the same family as `peer`.
    fn our_ue_addr(&self, peer: IpAddr) -> Option<IpAddr> {
        self.ue_host(peer).map(|h| h.addr)
    }

    fn ue_host(&self, peer: IpAddr) -> Option<&UeHost> {
        self.ue_hosts
            .iter()
            .find(|h| h.addr.is_ipv4() == peer.is_ipv4())
    }

    /// Our UE-side Via sent-by toward `peer` with our `port`, written into `out` (no
    /// allocation). Returns it with the address it names.
    fn ue_sent_by<'o>(
        &self,
        peer: IpAddr,
        port: u16,
        out: &'o mut [u8; 64],
    ) -> Option<(IpAddr, &'o [u8])> {
        let h = self.ue_host(peer)?;
        let mut w = crate::sip::Writer::new(out);
        w.put(&h.text[..h.len]).put(b":").dec(u64::from(port));
        let n = w.finish()?;
        Some((h.addr, &out[..n]))
    }

    /// Who we are when the workers forward: only our Via matters (Path, P-Visited-Network-ID
    /// and the charging vector belong to the REGISTER, which the registration thread rewrites).
    fn relay_identity(&self) -> ProxyIdentity<'_> {
        self.identity(self.cfg.via_sent_by.as_bytes())
    }

    fn identity<'a>(&'a self, via_sent_by: &'a [u8]) -> ProxyIdentity<'a> {
        ProxyIdentity {
            via_sent_by,
            via_transport: b"UDP",
            path_uri: b"",
            own: &self.own,
            visited_network_id: b"",
            orig_ioi: b"",
        }
    }

    /// One received packet, `frame[at]`, that came in on `side`. `sas` is the SA table pinned
    /// for this batch (`None`: no SAs, every SPI is unknown).
    pub fn handle<'g>(
        &mut self,
        frame: &mut [u8],
        side: Side,
        at: Range<usize>,
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        self.stats.classify += 1;
        let Some(pkt) = frame.get(at.clone()) else {
            return Verdict::Drop(DropReason::NotIpUdpEsp);
        };
        let (src, dst, payload) = match (classify(pkt), side) {
            (L4::Udp { src, dst, payload }, _) => (src, dst, payload),
            (L4::Esp { src, dst, .. }, Side::Ue) => {
                if !self.cfg.ue_addrs.contains(&dst) {
                    return Verdict::Drop(DropReason::NotForUs);
                }
                return self.esp_in(frame, at, src, sas);
            }
            (L4::Esp { .. }, Side::Core) => return Verdict::Drop(DropReason::NotForUs),
            (L4::Other, _) => return Verdict::Drop(DropReason::NotIpUdpEsp),
        };
        let for_us = match side {
            // Protected ports carry only ESP (TS 33.203 §7.1): plain UDP there is dropped.
            Side::Ue => self.cfg.ue_addrs.contains(&dst.ip()) && dst.port() == self.cfg.ue_sip_port,
            Side::Core => dst == self.cfg.core,
        };
        if !for_us {
            return Verdict::Drop(DropReason::NotForUs);
        }
        if self.cfg.verify_udp_checksum && !udp_checksum_ok(pkt, src, dst, &payload) {
            return Verdict::Drop(DropReason::BadUdpChecksum);
        }
        let m = InFrame {
            side,
            protection: Protection::Plain,
            src,
            dst,
            payload: at.start + payload.start..at.start + payload.end,
        };
        match side {
            Side::Ue => self.sip_from_ue(frame, m),
            Side::Core => self.sip_from_core(frame, m, sas),
        }
    }

    /// ESP from a UE (RFC 4303 §3.4): SA by SPI, outer source = the SA's UE, ICV, anti-replay,
    /// decrypt (all in `Sa::decapsulate`), then the selector check on the inner UDP ports
    /// (RFC 4301 §5.2: SA1 is UE port-c → our port-s, SA4 UE port-s → our port-c).
    fn esp_in<'g>(
        &mut self,
        frame: &mut [u8],
        at: Range<usize>,
        src: IpAddr,
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        self.stats.esp_in += 1;
        let Some(sas) = sas else {
            return Verdict::Drop(DropReason::UnknownSpi);
        };
        let Ok(spi) = crate::esp::packet::peek_spi(&frame[at.clone()]) else {
            return Verdict::Drop(DropReason::EspOther);
        };
        let Some(e) = sas.inbound(spi) else {
            return Verdict::Drop(DropReason::UnknownSpi);
        };
        if e.ue_addr() != src {
            return Verdict::Drop(DropReason::EspOther);
        }
        let inner = match e.sa().decapsulate(&mut frame[at.clone()]) {
            Ok((inner, inb)) if inb.next_header == wire::protocol::TCP => {
                let inner = at.start + inner.start..at.start + inner.end;
                return self.tcp_in(frame, inner, e);
            }
            Ok((inner, _)) => at.start + inner.start..at.start + inner.end,
            Err(why) => return Verdict::Drop(why.into()),
        };
        let L4::Udp {
            src: isrc,
            dst: idst,
            payload,
        } = classify(&frame[inner.clone()])
        else {
            return Verdict::Drop(DropReason::EspOther);
        };
        if isrc.port() != e.ue_port() || idst.port() != e.local_port() {
            return Verdict::Drop(DropReason::EspOther);
        }
        let m = InFrame {
            side: Side::Ue,
            protection: Protection::Protected { spi },
            src: isrc,
            dst: idst,
            payload: inner.start + payload.start..inner.start + payload.end,
        };
        self.sip_over_sa(frame, m, e, sas)
    }

    /// A TCP segment over the UE's SA entry `e`, ESP removed (`frame[inner]`): its ports must
    /// be the SA's (RFC 4301 §5.2, as for UDP: SA1 carries the UE's port-c → our port-s only),
    /// then it is the worker's TCP's ([`Verdict::Segment`]).
    fn tcp_in<'g>(&mut self, frame: &[u8], inner: Range<usize>, e: &'g Entry) -> Verdict<'g> {
        let ports = frame.get(inner.clone()).and_then(tcp_ports);
        if ports != Some((e.ue_port(), e.local_port())) {
            return Verdict::Drop(DropReason::TcpRefused);
        }
        let Some(ours) = self.our_ue_addr(e.ue_addr()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let holder = self.holder(e.ue_addr());
        if holder != self.cfg.id {
            let d = Datagram {
                side: Side::Ue,
                protection: Protection::Segment { spi: e.spi() },
                src: SocketAddr::new(e.ue_addr(), e.ue_port()),
                dst: SocketAddr::new(ours, e.local_port()),
                payload: &frame[inner],
            };
            return self.hand_over(holder, d);
        }
        Verdict::Segment {
            inner,
            entry: e,
            ours,
        }
    }

    /// The worker that holds the TCP of `ue`'s SA sets (`dataplane::worker_of`).
    fn holder(&self, ue: IpAddr) -> u16 {
        match &self.peers {
            Some(p) => crate::dataplane::worker_of(ue, p.len()) as u16,
            // a worker alone holds every UE's TCP
            None => self.cfg.id,
        }
    }

    /// Copy `d` to worker `holder`'s hand-over queue (a full queue or an unknown worker loses it,
    /// counted).
    fn hand_over<'g>(&mut self, holder: u16, d: Datagram<&[u8]>) -> Verdict<'g> {
        let Some(q) = self.peers.as_ref().and_then(|p| p.get(usize::from(holder))) else {
            return Verdict::Drop(DropReason::StreamLost);
        };
        match q.push(d) {
            Ok(()) => {
                self.stats.handed_over += 1;
                Verdict::HandedOver
            }
            Err(_) => Verdict::Drop(DropReason::StreamLost),
        }
    }

    /// A SIP message that came whole on the UE's TCP connection in the SA set whose SA1 (the
    /// UE's port-c → our port-s) is `e`, copied by the worker to `frame[payload]`: the same
    /// stage as one that came over the SA in a datagram (`sip_over_sa`), except that answers
    /// and the core's responses go back on the connection (RFC 3261 §18.2.2).
    pub fn handle_stream<'g>(
        &mut self,
        frame: &mut [u8],
        payload: Range<usize>,
        e: &'g Entry,
        sas: &'g ReadGuard<'_>,
    ) -> Verdict<'g> {
        let Some(ours) = self.our_ue_addr(e.ue_addr()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        self.stats.stream_in += 1;
        let m = InFrame {
            side: Side::Ue,
            protection: Protection::Stream {
                spi: e.spi(),
                worker: self.cfg.id,
            },
            src: SocketAddr::new(e.ue_addr(), e.ue_port()),
            dst: SocketAddr::new(ours, e.local_port()),
            payload,
        };
        self.sip_over_sa(frame, m, e, sas)
    }

    /// A SIP message `frame[payload]` that came from the core at `src` on the core TCP
    /// thread's connection `conn` (framed there; here in a frame of its own): the same SIP stage
    /// as a datagram from the core, what answers it going back on that connection.
    pub fn handle_core_stream<'g>(
        &mut self,
        frame: &mut [u8],
        payload: Range<usize>,
        (src, conn): (SocketAddr, u32),
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        self.stats.core_stream_in += 1;
        let m = InFrame {
            side: Side::Core,
            protection: Protection::CoreStream { conn },
            src,
            dst: self.cfg.core,
            payload,
        };
        self.sip_from_core(frame, m, sas)
    }

    /// The pipeline's index, out of `self` while a message is handled (put back after). Only
    /// a handler that did not put it back would leave none: then a new one is made.
    fn take_index(&mut self) -> Box<Index> {
        self.idx.take().unwrap_or_else(|| Box::new(Index::empty()))
    }

    /// A SIP message that came over a UE's SA entry `e` (parsed into the pipeline's index).
    fn sip_over_sa<'g>(
        &mut self,
        frame: &mut [u8],
        m: InFrame,
        e: &'g Entry,
        sas: &'g ReadGuard<'_>,
    ) -> Verdict<'g> {
        let mut idx = self.take_index();
        let v = self.sip_over_sa_in(frame, m, e, sas, &mut idx);
        self.idx = Some(idx);
        v
    }

    /// A SIP message that came over the UE's SA entry `e` (ESP checked and removed).
    fn sip_over_sa_in<'g>(
        &mut self,
        frame: &mut [u8],
        m: InFrame,
        e: &'g Entry,
        sas: &'g ReadGuard<'_>,
        idx: &mut Index,
    ) -> Verdict<'g> {
        self.stats.sip += 1;
        let Ok(()) = idx.parse_into(frame, m.payload.start, m.payload.end) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let view = idx.view(frame);
        let Ok(checked) = view.validate_checked() else {
            return Verdict::Drop(DropReason::BadSip);
        };
        if !idx.is_request() {
            // the UE answering a BYE of a release (control::dialogs): the registration
            // thread's, over the protected lane that its REGISTERs take
            if rules::control_branch(view) == Some(rules::ControlBranch::Release) {
                return self.punt(frame, &m);
            }
            // the UE answering a request the core sent it (request_to_ue): back to the core
            let Some(reg) = e.registration() else {
                return Verdict::Drop(DropReason::NotRegistered);
            };
            // Phones answer from their port-s to our port-c (SA4) or from their port-c to our
            // port-s (SA1): our Via names our port-c either way.
            let ours = [e.local_port(), e.port_c()];
            let flow = Flow {
                binding: e.binding(),
                ue: e.ue_addr(),
            };
            return self.ue_response_to_core(frame, idx, flow.ue, ours, Some((reg.pai(), flow)));
        }
        if view.is_method(b"REGISTER") {
            // REGISTER over the temporary or current set: the registration thread's.
            return self.punt(frame, &m);
        }
        let Some(reg) = e.registration() else {
            return Verdict::Drop(DropReason::NotRegistered);
        };
        if rules::max_forwards_exhausted(view) {
            return Verdict::Drop(DropReason::TooManyHops);
        }
        // RFC 3261 §16.4: a Request-URI that is us makes us the UAS (the UE's Route entries do
        // not matter: below they are all replaced by the Service-Route). Answered over the SA
        // set it came over, never forwarded.
        if view.request_uri().is_some_and(|u| self.own.is_us(u)) {
            return match rules::answer_to_us(view) {
                Some(cr) => self.reply_over_sa(view, (e, m.protection), sas, cr),
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        // TS 24.229 §5.2.6.3: toward the Service-Route, asserting the registered identity.
        // The branch records the SPI the request came over and the UE's port (the Via sent-by,
        // TS 33.203 §7.1), so the response goes back over this SA set — even while a re-registration
        // has two — to this UE, whatever addresses the Vias name (core_response_to_ue).
        let Some(top) = checked.top_via else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let port = top.port.unwrap_or(5060);
        let (spi, lane) = match m.protection {
            Protection::Protected { spi } => (spi, 0),
            Protection::Stream { spi, worker } => (spi, LANE_STREAM | worker),
            Protection::Plain | Protection::Segment { .. } | Protection::CoreStream { .. } => {
                return Verdict::Drop(DropReason::EspOther);
            }
        };
        let ue = e.ue_addr();
        let hash = rules::stateless_branch_of(view, &top);
        let branch = self.key.seal(Dir::ToCore, lane, spi, port, hash, ue, ue);
        let flow = Flow {
            binding: e.binding(),
            ue,
        };
        let kind = rules::classify_with(view, &self.own, checked.to_tag);
        if kind == Some(RequestKind::InDialog) {
            let next = (reg.next_hop, reg.next_hop_tcp);
            return self.in_dialog_from_ue(frame, idx, &m, (e, sas), &branch, next);
        }
        // RFC 3261 §16.6 item 4 is a proxy's: a UA's dialog-creating request carries no
        // Record-Route, and one that does could steer the dialog around us.
        let initial = kind == Some(RequestKind::Initial);
        if initial && view.header(HeaderName::RecordRoute).is_some() {
            self.stats.dialog_refused += 1;
            let status = self.refuse(Some(DialogError::RecordRoutePresent));
            return self.reply_over_sa(view, (e, m.protection), sas, status);
        }
        let mut pai = [0u8; 256];
        let pai = preferred_identity(view, &checked, reg, &mut pai).unwrap_or(reg.pai());
        let mut icid = [0u8; 32];
        let icid = self.next_icid(&mut icid);
        let entries = OurEntries {
            ue_side: match self.our_ue_addr(ue) {
                Some(a) => SocketAddr::new(a, e.port_s()),
                None => return Verdict::Drop(DropReason::NoRoute),
            },
            core_side: self.cfg.via_sent_by.as_bytes(),
        };
        // the header block is rebuilt in the scratch buffer (free between answers)
        let mut scratch = core::mem::take(&mut self.scratch);
        let me = self.relay_identity();
        // the index already describes this frame: edit with it, no second parse
        let mut ed = Editor::over(frame, idx).keeping(LOWER_LAYERS);
        let rewritten = rules::rewrite_protected_request(
            &mut ed,
            &me,
            m.src,
            &branch,
            pai,
            reg.route(),
            icid,
            Some(&top),
            &mut scratch,
        );
        self.scratch = scratch;
        if rewritten.is_err() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        // TS 24.229 §5.2.6.3.3 [spec-m]: the P-CSCF record-routes a dialog it takes part in;
        // our two entries (rules::dialog: double Record-Routing) carry the flow token that
        // routes the dialog's later requests and ties them to this UE.
        if initial
            && rules::record_route(&mut ed, self.flow_key, &entries, flow, Dir::ToCore).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        if initial && ed.view().is_method(b"INVITE") {
            self.dialog_event(ed.view(), Side::Ue, flow.binding);
        }
        let conn = match self.core_transport(&mut ed, reg.next_hop_tcp) {
            Ok(c) => c,
            Err(why) => return Verdict::Drop(why),
        };
        let range = ed.range();
        self.toward_core(frame, range, reg.next_hop, conn)
    }

    /// A request inside a dialog from the UE over its SA entry `e` (RFC 3261 §12.2, TS 24.229
    /// §5.2.6.3.5 [spec-m]): its route set must start with our two entries, tokened for this UE's
    /// registration; both are popped and it goes on by loose routing (RFC 3261 §16.12), with
    /// our Via and no Service-Route or asserted identity of ours. Anything else is refused with
    /// 403 over the set (an ACK, which takes no answer, is dropped), never forwarded.
    ///
    /// The next hop is the UE's S-CSCF (`s_cscf`, the Service-Route's first hop), which
    /// record-routed every dialog of this UE: the Route values after ours are the UE's to write,
    /// and a stateless worker cannot tell them from the dialog's, so it never sends a UE's
    /// request to a host the UE named.
    fn in_dialog_from_ue<'g>(
        &mut self,
        frame: &mut [u8],
        idx: &mut Index,
        m: &InFrame,
        (e, sas): (&'g Entry, &'g ReadGuard<'_>),
        branch: &Branch,
        (s_cscf, s_cscf_tcp): (SocketAddr, bool),
    ) -> Verdict<'g> {
        let is_ack = idx.view(frame).is_method(b"ACK");
        let end = frame.len();
        let mut ed = Editor::over(&mut frame[..end], idx).keeping(LOWER_LAYERS);
        let popped = rules::pop_dialog_routes(&mut ed, &self.own, self.flow_key, Dir::ToCore);
        match self.dialog_request(popped, (e.binding(), e.ue_addr()), is_ack) {
            None => {}
            Some(Err(drop)) => return Verdict::Drop(drop),
            Some(Ok(status)) => {
                return self.reply_over_sa(ed.view(), (e, m.protection), sas, status);
            }
        }
        let me = self.relay_identity();
        if rules::strip_charging(&mut ed).is_err()
            || rules::forward_request(&mut ed, &me, m.src, branch).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        if !is_ack {
            self.dialog_event(ed.view(), Side::Ue, e.binding());
        }
        // RFC 3263 §4.1: the route set's next entry (the S-CSCF's Record-Route) may ask for TCP
        let route_tcp = ed
            .view()
            .values(HeaderName::Route)
            .next()
            .and_then(crate::sip::headers::NameAddr::parse)
            .is_some_and(|na| rules::uri_wants_tcp(na.uri));
        let conn = match self.core_transport(&mut ed, s_cscf_tcp || route_tcp) {
            Ok(c) => c,
            Err(why) => return Verdict::Drop(why),
        };
        let range = ed.range();
        self.toward_core(frame, range, s_cscf, conn)
    }

    /// An unprotected SIP message from a UE (port 5060).
    fn sip_from_ue<'g>(&mut self, frame: &mut [u8], m: InFrame) -> Verdict<'g> {
        let mut idx = self.take_index();
        let v = self.sip_from_ue_in(frame, m, &mut idx);
        self.idx = Some(idx);
        v
    }

    fn sip_from_ue_in<'g>(&mut self, frame: &mut [u8], m: InFrame, idx: &mut Index) -> Verdict<'g> {
        self.stats.sip += 1;
        let Ok(()) = idx.parse_into(frame, m.payload.start, m.payload.end) else {
            // Not SIP at all: nothing to answer (RFC 3261 §18.3 lets us discard it).
            return Verdict::Drop(DropReason::BadSip);
        };
        let view = idx.view(frame);
        let valid = view.validate().is_ok();
        if !idx.is_request() {
            if !valid || !self.cfg.stateless_relay {
                return Verdict::Drop(DropReason::BadSip);
            }
            // a UE's response in the clear: only to a request that carries our UE-side Via
            let port = self.cfg.ue_sip_port;
            return self.ue_response_to_core(frame, idx, m.src.ip(), [port, port], None);
        }
        if !valid {
            return self.reply(view, &m, (400, "Bad Request"), b"", None);
        }
        if view.is_method(b"REGISTER") {
            return self.punt(frame, &m);
        }
        if rules::max_forwards_exhausted(view) {
            return self.reply(view, &m, (483, "Too Many Hops"), b"", None);
        }
        // RFC 3261 §16.4: a Request-URI that is us (after our Route entries, which a relayed
        // request loses anyway) makes us the UAS: answered here, never forwarded.
        if view.request_uri().is_some_and(|u| self.own.is_us(u)) {
            return match rules::answer_to_us(view) {
                // The source of a UDP request is not verified: an answer larger than the
                // request is not sent (no amplification toward a spoofed victim; a phone's
                // OPTIONS, with its Route and Max-Forwards, is larger than our answer).
                Some(cr) => {
                    let at_most = Some(m.payload.len());
                    self.reply(view, &m, cr, rules::ALLOW_TO_US, at_most)
                }
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        if !self.cfg.stateless_relay {
            // TS 24.229 §5.2.2: requests other than REGISTER must arrive over the UE's SAs.
            return self.reply(view, &m, (403, "Forbidden"), b"", None);
        }
        let Some(next) = self.cfg.icscf else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        // RFC 3261 §16.11 hash; the response goes back where this request came from (RFC 3581).
        let Some(port) = rules::reply_port(view, m.src) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let hash = rules::stateless_branch(view);
        let branch = self
            .key
            .seal(Dir::ToCore, 0, 0, port, hash, m.src.ip(), NO_UE);
        let me = self.relay_identity();
        // the index already describes this frame: edit with it, no second parse
        let mut ed = Editor::over(frame, idx).keeping(LOWER_LAYERS);
        // RFC 3261 §16.4: our own Route entries go (phones write our address, PCO-learned);
        // the Request-URI was checked above. (Relay mode is a load-test shortcut: the UE's
        // other Routes stay, as a stateless proxy's would.)
        if rules::pop_own_routes(&mut ed, &me).is_err()
            || rules::forward_request(&mut ed, &me, m.src, &branch).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let conn = match self.core_transport(&mut ed, self.cfg.icscf_tcp) {
            Ok(c) => c,
            Err(why) => return Verdict::Drop(why),
        };
        let range = ed.range();
        self.toward_core(frame, range, next, conn)
    }

    /// A SIP message from the core.
    fn sip_from_core<'g>(
        &mut self,
        frame: &mut [u8],
        m: InFrame,
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        let mut idx = self.take_index();
        let v = self.sip_from_core_in(frame, m, sas, &mut idx);
        self.idx = Some(idx);
        v
    }

    fn sip_from_core_in<'g>(
        &mut self,
        frame: &mut [u8],
        m: InFrame,
        sas: Option<&'g ReadGuard<'_>>,
        idx: &mut Index,
    ) -> Verdict<'g> {
        self.stats.sip += 1;
        let Ok(()) = idx.parse_into(frame, m.payload.start, m.payload.end) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let view = idx.view(frame);
        if idx.is_request() {
            return self.request_to_ue(frame, idx, m, sas);
        }
        // RFC 3261 §18.1.2: a response whose top Via is not ours is discarded.
        let Some(top) = rules::TopVia::of(view) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let Some((host, port)) = self.core_sent_by.clone() else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let sent_by = (&self.cfg.via_sent_by.as_bytes()[host], port);
        let Some(ours) = rules::top_via_ours_split(view, &top, sent_by) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        // the CSeq read once: for the registration thread's responses and for the dialog book
        let method = rules::cseq_method(view);
        let is_register = method == Some(b"REGISTER");
        let final_to_invite = view.status().is_some_and(|c| c >= 200) && method == Some(b"INVITE");
        // the registration thread's branches have their own format and check: its REGISTERs',
        // the BYEs of a release (control::dialogs) and its SUBSCRIBEs (control::regevent)
        // (looked at only for a branch not in the workers' format: off the relay path)
        if is_register || (ours.is_none() && rules::control_branch(view).is_some()) {
            return self.punt(frame, &m);
        }
        let Some(branch) = ours else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        self.core_response_to_ue(frame, idx, (branch, top), final_to_invite, sas)
    }

    /// A request from the core toward a registered UE (through our Path; TS 24.229 §5.2.6.4):
    /// over the UE's SA2 — our port-c to the port-s of the registered contact — with our Route
    /// popped and our UE-side Via on top; one for a UE with no SA set is answered 404 or 480.
    fn request_to_ue<'g>(
        &mut self,
        frame: &mut [u8],
        idx: &mut Index,
        m: InFrame,
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        let view = idx.view(frame);
        // RFC 3261 §16.4: a request from the core addressed to us (an OPTIONS keep-alive, say)
        // is answered here, from our core-side address; a NOTIFY is the registration
        // thread's (the reg event we subscribed to, TS 24.229 §5.2.3: it checks the dialog).
        if view.request_uri().is_some_and(|u| self.own.is_us(u)) {
            if view.is_method(b"NOTIFY") {
                return self.punt(frame, &m);
            }
            return match rules::answer_to_us(view) {
                Some(cr) => self.reply(view, &m, cr, rules::ALLOW_TO_US, None),
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        // RFC 3261 §16.5: a proxy with no target for a request answers it. The core reaches a
        // UE by the contact it registered (an IP literal, TS 24.229 §5.2.6.4): a Request-URI
        // that is none is not a UE we serve (404); a contact with no SA set now is a UE that
        // is no longer (or not yet) reachable here (480). An ACK takes no answer.
        let Some(target) = rules::request_uri_addr(view) else {
            return self.no_such_ue(view, &m, (404, "Not Found"));
        };
        let Some(e) = sas.and_then(|g| g.outbound_any(target.ip(), target.port())) else {
            return self.no_such_ue(view, &m, (480, "Temporarily Unavailable"));
        };
        if rules::max_forwards_exhausted(view) {
            return Verdict::Drop(DropReason::TooManyHops);
        }
        let mut sent_by = [0u8; 64];
        let Some((ours, sent_by)) = self.ue_sent_by(target.ip(), e.local_port(), &mut sent_by)
        else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        // The UE's response must come back with this branch (ue_response_to_core): it binds
        // the UE and the core hop the response goes back to (RFC 3581: where this came from).
        let Some(port) = rules::reply_port(view, m.src) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let hash = rules::stateless_branch(view);
        // RFC 3261 §18.2.2: a request that came on a connection is answered on it: the branch
        // names the connection (under its MAC, so a UE cannot steer the answer elsewhere)
        let (lane, conn) = match m.protection {
            Protection::CoreStream { conn } => (LANE_CORE_STREAM, conn),
            _ => (0, 0),
        };
        let branch = self
            .key
            .seal(Dir::ToUe, lane, conn, port, hash, m.src.ip(), e.ue_addr());
        let kind = rules::classify(view, &self.own);
        let is_ack = view.is_method(b"ACK");
        // RFC 3263 §4.1: a contact registered with `;transport=tcp` is reached over TCP
        // (unless TCP toward UEs is off: `ue.max_udp_request` 65535)
        let wants_tcp =
            self.cfg.max_udp_request < usize::from(u16::MAX) && rules::request_uri_wants_tcp(view);
        let flow = Flow {
            binding: e.binding(),
            ue: e.ue_addr(),
        };
        let entries = OurEntries {
            ue_side: SocketAddr::new(ours, e.port_s()),
            core_side: self.cfg.via_sent_by.as_bytes(),
        };
        // the index already describes this frame: edit with it, no second parse
        let end = frame.len();
        let mut ed = Editor::over(&mut frame[..end], idx).keeping(LOWER_LAYERS);
        if kind == Some(RequestKind::InDialog) {
            // RFC 3261 §12.2, TS 24.229 §5.2.6.4 [spec-m]: the core's request inside a dialog
            // comes by our core-facing entry; both of ours are popped, and their token must
            // name the UE that the Request-URI (its contact) reaches over this SA.
            let popped = rules::pop_dialog_routes(&mut ed, &self.own, self.flow_key, Dir::ToUe);
            match self.dialog_request(popped, (flow.binding, flow.ue), is_ack) {
                None => {}
                Some(Err(drop)) => return Verdict::Drop(drop),
                Some(Ok(status)) => return self.reply(ed.view(), &m, status, b"", None),
            }
            let me = self.identity(sent_by);
            if rules::strip_charging(&mut ed).is_err()
                || rules::forward_request(&mut ed, &me, m.src, &branch).is_err()
            {
                return Verdict::Drop(DropReason::NoRoom);
            }
            if !is_ack {
                self.dialog_event(ed.view(), Side::Core, flow.binding);
            }
        } else {
            let me = self.identity(sent_by);
            if rules::rewrite_request_to_ue(&mut ed, &me, m.src, &branch).is_err() {
                return Verdict::Drop(DropReason::NoRoom);
            }
            // TS 24.229 §5.2.6.4.3 [spec-m]: a dialog toward the UE is record-routed too; the
            // UE-facing entry, on top, names our port-s (rules::dialog).
            if kind == Some(RequestKind::Initial) {
                if rules::record_route(&mut ed, self.flow_key, &entries, flow, Dir::ToUe).is_err() {
                    return Verdict::Drop(DropReason::NoRoom);
                }
                if ed.view().is_method(b"INVITE") {
                    self.dialog_event(ed.view(), Side::Core, flow.binding);
                }
            }
        }
        let range = ed.range();
        // RFC 3261 §18.1.1: a request larger than a datagram may safely be goes over a
        // congestion-controlled transport (as does one for a TCP contact): our connection to
        // the UE's port-s, in the set of SA2
        if range.len() > self.cfg.max_udp_request || wants_tcp {
            if rules::set_top_via_transport(&mut ed, b"TCP").is_err() {
                return Verdict::Drop(DropReason::NoRoom);
            }
            let holder = self.holder(e.ue_addr());
            return self.on_stream(frame, range, (e, ours), holder);
        }
        let from = SocketAddr::new(ours, e.local_port());
        let to = SocketAddr::new(target.ip(), e.ue_port());
        let r = udp_over_sa(frame, range, from, to, e.sa());
        self.sent_over_sa(r)
    }

    /// A response from the core whose top Via is ours in the workers' format (RFC 3261
    /// §16.7, stateless per §16.11): the branch must verify, then our Via goes and the response
    /// is sent to the UE the branch names — over the SA set the request came over (TS 33.203 §7.1:
    /// our port-c → the UE's port-s, or the port it named), never one looked up from text.
    /// `final_to_invite`: [`rules::is_final_to_invite`] of the response as it came (our edits
    /// leave its status and CSeq alone).
    fn core_response_to_ue<'g>(
        &mut self,
        frame: &mut [u8],
        idx: &mut Index,
        (b, top): (Branch, rules::TopVia),
        final_to_invite: bool,
        sas: Option<&'g ReadGuard<'_>>,
    ) -> Verdict<'g> {
        let key = self.key;
        let end = frame.len();
        let mut ed = Editor::over(&mut frame[..end], idx).keeping(LOWER_LAYERS);
        if rules::pop_top_via_at(&mut ed, &top).is_err() || rules::strip_charging(&mut ed).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        // RFC 3261 §16.7 step 3: with no Via left the response was meant for us; it MUST NOT
        // be forwarded (a core that answers with our Via only would otherwise reach the UE).
        if ed.find(HeaderName::Via, 0).is_none() {
            return Verdict::Drop(DropReason::ToUs);
        }
        if b.spi == 0 {
            // The request came in the clear (stateless relay): back to where it came from,
            // which the branch binds (RFC 3581 §4; a Via changed on the way does not verify).
            let Some(next) = rules::response_next_hop(ed.view()) else {
                return Verdict::Drop(DropReason::NotOurVia);
            };
            if next.port() != b.port || !key.verify(&b, Dir::ToCore, next.ip(), NO_UE) {
                return Verdict::Drop(DropReason::NotOurVia);
            }
            let Some(ours) = self.our_ue_addr(next.ip()) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            let range = ed.range();
            let from = SocketAddr::new(ours, self.cfg.ue_sip_port);
            let r = wire::emit_datagram(frame, range, from, next).ok();
            return self.forwarded(r, Side::Ue);
        }
        // The SA the request came over names the UE. If it is gone (the set was replaced or
        // the UE deregistered) the response is dropped: the UE retransmits over its new set,
        // and nothing goes out in the clear or over another UE's SA.
        let Some(inb) = sas.and_then(|g| g.inbound(b.spi)) else {
            return Verdict::Drop(DropReason::SetGone);
        };
        let ue = inb.ue_addr();
        if !key.verify(&b, Dir::ToCore, ue, ue) {
            return Verdict::Drop(DropReason::NotOurVia);
        }
        let stream = b.lane & LANE_STREAM != 0;
        let out = if stream {
            None
        } else {
            match sas.and_then(|g| g.outbound_of_set(b.port, inb)) {
                Some(e) => Some(e),
                None => return Verdict::Drop(DropReason::SetGone),
            }
        };
        let Some(ours) = self.our_ue_addr(ue) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        // A response that sets up a dialog carries the Record-Route we wrote into the request:
        // our entries as we wrote them, for this UE, and the UE-facing one naming our port-s of
        // the set it now goes over (TS 24.229 §5.2.6.3.4 [spec-m]; rules::response_to_ue).
        let port_s = inb.port_s();
        let checked = rules::response_to_ue(&mut ed, &self.own, self.flow_key, port_s);
        if let Some(drop) = self.dialog_response(checked, |f| f.is_of(inb.binding(), ue)) {
            return drop;
        }
        if final_to_invite {
            self.dialog_event(ed.view(), Side::Core, inb.binding());
        }
        let Some(e) = out else {
            // RFC 3261 §18.2.2: back on the connection the request came on
            let range = ed.range();
            return self.on_stream(frame, range, (inb, ours), b.lane & !LANE_STREAM);
        };
        let from = SocketAddr::new(ours, e.local_port());
        let range = ed.range();
        let r = udp_over_sa(frame, range, from, SocketAddr::new(ue, b.port), e.sa());
        self.sent_over_sa(r)
    }

    /// A UE's response to a request the core sent it through us (`request_to_ue`), over its SA
    /// (`registered`: the registration's identity and flow) or in the clear (stateless relay
    /// mode, `registered` none):
    /// our UE-side Via (our address of the UE's family, one of `our_ports`) must be on top with
    /// a branch we sealed for `ue` and the core hop below it (RFC 3261 §18.1.2; else dropped);
    /// then our Via goes, the identity is the network's (RFC 3325 §9.1, TS 24.229 §5.2.6.4) and
    /// it goes to that hop. A response that sets up a dialog must carry our Record-Route entries
    /// as we wrote them, tokened for this UE (rules::response_from_ue), else it is dropped.
    fn ue_response_to_core<'g>(
        &mut self,
        frame: &mut [u8],
        idx: &mut Index,
        ue: IpAddr,
        our_ports: [u16; 2],
        registered: Option<(&[u8], Flow)>,
    ) -> Verdict<'g> {
        let ours = our_ports.iter().find_map(|&port| {
            let mut sent_by = [0u8; 64];
            let (_, sent_by) = self.ue_sent_by(ue, port, &mut sent_by)?;
            rules::top_via_ours(idx.view(frame), sent_by)?
        });
        let Some(b) = ours else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        if let Some((_, flow)) = registered {
            let checked = rules::response_from_ue(idx.view(frame), &self.own, self.flow_key);
            if let Some(drop) = self.dialog_response(checked, |f| *f == flow) {
                return drop;
            }
        }
        let end = frame.len();
        let mut ed = Editor::over(&mut frame[..end], idx).keeping(LOWER_LAYERS);
        if rules::pop_top_via(&mut ed).is_err() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let Some(next) = rules::response_next_hop(ed.view()) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let on_core_stream = b.lane == LANE_CORE_STREAM;
        if (b.spi != 0 && !on_core_stream)
            || next.port() != b.port
            || !self.key.verify(&b, Dir::ToUe, next.ip(), ue)
        {
            return Verdict::Drop(DropReason::NotOurVia);
        }
        if let Some((pai, flow)) = registered {
            if rules::assert_identity(&mut ed, pai).is_err()
                || rules::strip_charging(&mut ed).is_err()
            {
                return Verdict::Drop(DropReason::NoRoom);
            }
            if rules::is_final_to_invite(ed.view()) {
                self.dialog_event(ed.view(), Side::Ue, flow.binding);
            }
        }
        let range = ed.range();
        self.toward_core(frame, range, next, on_core_stream.then_some(b.spi))
    }

    /// Answer a request that came over the SA entry `e` (a request addressed to us) with
    /// `code` and [`rules::ALLOW_TO_US`], back over the same set as any response to the UE
    /// (TS 33.203 §7.1: our port-c → the port its Via names; our port-s when that is the pair).
    fn reply_over_sa<'g>(
        &mut self,
        view: View<'_>,
        (e, came): (&'g Entry, Protection),
        sas: &'g ReadGuard<'_>,
        (code, reason): (u16, &str),
    ) -> Verdict<'g> {
        let Some(port) = rules::top_via_port(view) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let ue = e.ue_addr();
        let stream = matches!(came, Protection::Stream { .. });
        // RFC 3261 §18.2.2: on the connection the request came on, whatever its Via's port;
        // as a datagram over the set's SA toward that port
        let out_sa = if stream {
            None
        } else {
            match sas.outbound_of_set(port, e) {
                Some(o) => Some(o),
                None => return Verdict::Drop(DropReason::NoRoute),
            }
        };
        let Some(ours) = self.our_ue_addr(ue) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(len) = rules::build_response(
            view,
            code,
            reason,
            b"pcscf",
            &[rules::ALLOW_TO_US],
            &mut self.scratch,
        ) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        Verdict::Reply(Reply {
            side: Side::Ue,
            src: SocketAddr::new(ours, out_sa.map_or(e.local_port(), |o| o.local_port())),
            dst: SocketAddr::new(ue, port),
            len,
            over: out_sa.map(|o| o.sa().as_ref()),
            stream: stream.then_some(e),
            core_conn: None,
        })
    }

    /// Answer the plain request `m` with `code` from the address it was sent to, with `extra`
    /// header lines (each ending in CRLF); not sent (dropped as [`DropReason::ToUs`]) when
    /// longer than `at_most` bytes.
    fn reply<'g>(
        &mut self,
        view: View<'_>,
        m: &InFrame,
        (code, reason): (u16, &str),
        extra: &[u8],
        at_most: Option<usize>,
    ) -> Verdict<'g> {
        let Some(len) =
            rules::build_response(view, code, reason, b"pcscf", &[extra], &mut self.scratch)
        else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        if at_most.is_some_and(|most| len > most) {
            return Verdict::Drop(DropReason::ToUs);
        }
        Verdict::Reply(Reply {
            side: m.side,
            src: m.dst,
            dst: m.src,
            len,
            over: None,
            stream: None,
            core_conn: match m.protection {
                Protection::CoreStream { conn } => Some(conn),
                _ => None,
            },
        })
    }

    /// Answer a request from the core for a UE we cannot reach (`request_to_ue`), counted in
    /// `ue_unreachable`; an ACK is dropped as [`DropReason::NotRegistered`].
    fn no_such_ue<'g>(&mut self, view: View<'_>, m: &InFrame, status: (u16, &str)) -> Verdict<'g> {
        if view.is_method(b"ACK") {
            return Verdict::Drop(DropReason::NotRegistered);
        }
        self.stats.ue_unreachable += 1;
        self.reply(view, m, status, b"", None)
    }

    /// The verdict for a packet re-addressed and ESP-protected in its own frame.
    fn sent_over_sa<'g>(&mut self, r: Result<Range<usize>, DropReason>) -> Verdict<'g> {
        match r {
            Ok(r) => {
                self.stats.esp_out += 1;
                self.forwarded(Some(r), Side::Ue)
            }
            Err(why) => Verdict::Drop(why),
        }
    }

    /// How a request toward the core goes (RFC 3261 §18.1.1, RFC 3263 §4.1): over TCP when its
    /// next hop asks for it (`hop_tcp`) or when it is larger than a datagram may safely be, our
    /// Via (on top in `ed`) then saying TCP; the connection for [`Pipeline::toward_core`].
    fn core_transport(
        &self,
        ed: &mut Editor<'_>,
        hop_tcp: bool,
    ) -> Result<Option<u32>, DropReason> {
        if !hop_tcp && ed.range().len() <= self.cfg.core_max_udp_request {
            return Ok(None);
        }
        rules::set_top_via_transport(ed, b"TCP").map_err(|_| DropReason::NoRoom)?;
        Ok(Some(NO_CONN))
    }

    /// `frame[range]` toward the core at `dst`: over TCP on `conn` ([`Verdict::CoreStream`]),
    /// else as a datagram from our core-side address.
    fn toward_core<'g>(
        &mut self,
        frame: &mut [u8],
        range: Range<usize>,
        dst: SocketAddr,
        conn: Option<u32>,
    ) -> Verdict<'g> {
        match conn {
            Some(conn) => {
                self.stats.forwarded += 1;
                Verdict::CoreStream { range, conn, dst }
            }
            None => {
                let r = wire::emit_datagram(frame, range, self.cfg.core, dst).ok();
                self.forwarded(r, Side::Core)
            }
        }
    }

    /// The verdict for a packet re-addressed in its own frame (`r`: where it now lies).
    fn forwarded<'g>(&mut self, r: Option<Range<usize>>, toward: Side) -> Verdict<'g> {
        match r {
            Some(range) => {
                self.stats.forwarded += 1;
                Verdict::Forward { range, toward }
            }
            None => Verdict::Drop(DropReason::NoRoom),
        }
    }

    /// The message `frame[range]` goes on the TCP connection of the SA set of `e` that `e`'s
    /// port names ([`Verdict::Stream`]), from our address `ours`, which worker `holder` holds:
    /// this one, or handed over to it through its hand-over queue (a copy, as
    /// `Protection::Stream` from `ours` at `e`'s port to the UE at its port: the outbound SA of
    /// that flow names the set and the connection).
    fn on_stream<'g>(
        &mut self,
        frame: &[u8],
        range: Range<usize>,
        (e, ours): (&'g Entry, IpAddr),
        holder: u16,
    ) -> Verdict<'g> {
        if holder == self.cfg.id {
            return Verdict::Stream {
                range,
                entry: e,
                ours,
            };
        }
        let Some(bytes) = frame.get(range) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let d = Datagram {
            side: Side::Ue,
            protection: Protection::Stream {
                spi: e.spi(),
                worker: holder,
            },
            src: SocketAddr::new(ours, e.local_port()),
            dst: SocketAddr::new(e.ue_addr(), e.ue_port()),
            payload: bytes,
        };
        self.hand_over(holder, d)
    }

    /// Copy `m` to the registration thread.
    fn punt<'g>(&mut self, frame: &[u8], m: &InFrame) -> Verdict<'g> {
        let Some(bytes) = frame.get(m.payload.clone()) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        match self.punt.push(m.clone().with_payload(bytes)) {
            Ok(()) => {
                self.punted = true;
                Verdict::Punted
            }
            Err(_) => Verdict::Drop(DropReason::PuntFull),
        }
    }
}

/// The (source, destination) ports of the TCP segment in the IP packet `pkt`, if it is one.
fn tcp_ports(pkt: &[u8]) -> Option<(u16, u16)> {
    let l = wire::ip::parse(pkt).ok()?;
    if l.protocol != wire::protocol::TCP || l.fragment {
        return None;
    }
    let t = pkt.get(l.header_len..l.header_len + 4)?;
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
    ))
}
