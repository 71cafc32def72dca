//! One poll-mode worker: receive a batch, run each packet through the stages, send a batch.
//!
//! Stages, in the order a packet meets them (each counted in [`WorkerStats`]):
//! 1. **classify**: UDP or ESP to one of our addresses and ports, else drop;
//! 2. **ESP in**: SA by SPI, ICV, anti-replay, decrypt, selector check (RFC 4303 §3.4);
//! 3. **SIP**: parse and validate the message in the frame; registration traffic is punted to the
//!    registration thread, bad requests get their 4xx, the rest is rewritten in place;
//!    responses go where our authenticated Via branch says (`sip::branch`), never where a
//!    UE-written Via points, and one whose top Via does not verify is dropped;
//! 4. **ESP out / forward**: fresh IP + UDP headers toward the next hop (ESP-protected toward a
//!    registered UE), then TX.
//!
//! Owns: the per-packet path. Per packet it allocates nothing, takes no lock and makes no
//! syscall; `recv`, `send`, `flush` and the punt wake-up are once per batch.

use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::dataplane::classify::{L4, classify, udp_checksum_ok};
use crate::dataplane::queue::{Datagram, Msg, MsgQueue, Protection};
use crate::dataplane::stats::{DropReason, SharedStats, WorkerStats, new_histogram};
use crate::io::{Desc, HEADROOM, PacketIo, Side};
use crate::satable::{ReadGuard, SaReader};
use crate::sip::branch::{Branch, BranchKey, Dir, NO_UE};
use crate::sip::msg::Index;
use crate::sip::rules::{self, ProxyIdentity};
use crate::sip::{Editor, HeaderName, OwnUris};
use crate::wire;

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
    /// The next hop for requests toward the core (a static I-CSCF), if any.
    pub icscf: Option<SocketAddr>,
    /// Forward unprotected non-REGISTER requests statelessly to the I-CSCF (RFC 3261 §16.11)
    /// instead of rejecting them: a relay mode for load tests and side-by-side comparisons.
    pub stateless_relay: bool,
    /// Our Via sent-by toward the core, `host:port`, and the Path/Route identity.
    pub via_sent_by: String,
    pub hostname: String,
    pub batch: usize,
    /// Check UDP checksums on receive. Off for AF_XDP on veth, which hands over packets with
    /// partial (offloaded) checksums; ESP has its own integrity check either way.
    pub verify_udp_checksum: bool,
}

/// Who we are when the workers forward: only our Via matters (Path, P-Visited-Network-ID and
/// the charging vector belong to the REGISTER, which the registration thread rewrites).
fn relay_identity<'a>(cfg: &'a WorkerConfig, own: &'a OwnUris) -> ProxyIdentity<'a> {
    ProxyIdentity {
        via_sent_by: cfg.via_sent_by.as_bytes(),
        via_transport: b"UDP",
        path_uri: b"",
        own,
        visited_network_id: b"",
        orig_ioi: b"",
    }
}

/// Write IP + UDP headers for `frame[range]` from `from` to `to`, then ESP-protect the packet in
/// place with `sa` (the ESP-out stage). Returns where the ESP packet lies.
fn udp_over_sa(
    frame: &mut [u8],
    range: Range<usize>,
    from: SocketAddr,
    to: SocketAddr,
    sa: &crate::esp::Sa,
) -> Result<Range<usize>, DropReason> {
    let r = wire::emit_datagram(frame, range, from, to).map_err(|_| DropReason::NoRoom)?;
    let mut f = crate::esp::Frame::new(frame, r.start, r.end);
    sa.outbound(&mut f)?;
    Ok(f.start..f.end)
}

/// Our UE-side address of the same family as `peer`.
fn our_ue_addr(cfg: &WorkerConfig, peer: IpAddr) -> Option<IpAddr> {
    cfg.ue_addrs
        .iter()
        .copied()
        .find(|a| a.is_ipv4() == peer.is_ipv4())
}

/// The branch key of this process: every worker seals and verifies with it, so a response may
/// come back to any worker (drawn once from the OS; no lock after that).
fn branch_key() -> &'static BranchKey {
    static KEY: std::sync::OnceLock<BranchKey> = std::sync::OnceLock::new();
    KEY.get_or_init(BranchKey::random)
}

/// Our UE-side Via sent-by for `ours`:`port`, written without allocating.
fn ue_sent_by(ours: IpAddr, port: u16, out: &mut [u8; 64]) -> Option<usize> {
    let mut w = crate::sip::write::Writer::new(out);
    w.display(&SocketAddr::new(ours, port));
    w.finish()
}

/// What happened to one packet.
enum Verdict {
    Tx(Desc),
    Drop(DropReason),
    /// Copied to the registration thread; the frame can go.
    Punted,
    /// Answered with a new packet (the request's frame can go).
    Replied(Desc),
}

/// A worker over one [`PacketIo`].
pub struct Worker<P: PacketIo> {
    io: P,
    cfg: WorkerConfig,
    /// The SA table (pinned once per batch). `None`: no SAs, every SPI is unknown.
    sas: Option<SaReader>,
    /// Messages the registration thread wants this worker to send.
    inject: Option<Arc<MsgQueue>>,
    punt: Arc<MsgQueue>,
    shared: Arc<SharedStats>,
    stats: WorkerStats,
    /// Seals and checks our Via branches.
    key: &'static BranchKey,
    /// What names us in a Route / Request-URI (built once from `cfg`).
    own: OwnUris,
    rx: Vec<Desc>,
    tx: Vec<Desc>,
    freed: Vec<Desc>,
    /// Scratch for building responses (allocated once).
    scratch: Vec<u8>,
    punted_this_batch: bool,
    /// rx-to-tx latency (ns) per packet, merged into `shared` every ~100 ms.
    latency: hdrhistogram::Histogram<u64>,
    last_merge: Instant,
}

impl<P: PacketIo> std::fmt::Debug for Worker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.cfg.id)
            .field("stats", &self.stats)
            .finish()
    }
}

impl<P: PacketIo> Worker<P> {
    pub fn new(
        io: P,
        cfg: WorkerConfig,
        punt: Arc<MsgQueue>,
        shared: Arc<SharedStats>,
    ) -> Worker<P> {
        let batch = cfg.batch.max(1);
        Worker {
            io,
            sas: None,
            inject: None,
            punt,
            shared,
            stats: WorkerStats::default(),
            key: branch_key(),
            own: cfg.own_uris(),
            rx: vec![
                Desc {
                    frame: 0,
                    start: 0,
                    end: 0,
                    side: Side::Ue
                };
                batch
            ],
            tx: Vec::with_capacity(2 * batch),
            freed: Vec::with_capacity(2 * batch),
            scratch: vec![0; 4096],
            punted_this_batch: false,
            latency: new_histogram(),
            last_merge: Instant::now(),
            cfg,
        }
    }

    /// Give the worker its queue of messages to send for the registration thread.
    pub fn with_inject(mut self, q: Arc<MsgQueue>) -> Self {
        self.inject = Some(q);
        self
    }

    /// Give the worker its reader of the SA table.
    pub fn with_sas(mut self, sas: SaReader) -> Self {
        self.sas = Some(sas);
        self
    }

    pub fn io(&mut self) -> &mut P {
        &mut self.io
    }

    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// Run until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            if self.poll_once() == 0 {
                // The backend drops some packets before the worker sees any (oversize): an
                // idle worker still publishes them now and then.
                idle = idle.wrapping_add(1);
                if idle.is_multiple_of(1024) {
                    self.note_io_drops();
                    self.shared.publish(&self.stats);
                }
                std::hint::spin_loop();
            }
        }
        self.note_io_drops();
        self.shared.publish(&self.stats);
        while !self.shared.try_merge_latency(&mut self.latency) {
            std::thread::yield_now();
        }
    }

    /// Drops the backend made or saw on its own (packets too big for a frame, a full kernel
    /// receive queue) as drop reasons.
    #[inline]
    fn note_io_drops(&mut self) {
        let io = self.io.stats();
        self.stats.drops[DropReason::Oversize as usize] = io.rx_oversize;
        self.stats.drops[DropReason::QueueOverflow as usize] = io.rx_queue_overflow;
    }

    /// One batch: receive, process, send. Returns how many packets came in.
    // kept out of line: perf/profile counts instructions inside it (callgrind --toggle-collect)
    #[inline(never)]
    pub fn poll_once(&mut self) -> usize {
        let n = self.io.recv(&mut self.rx).unwrap_or_default();
        let injected = self.inject.as_ref().is_some_and(|q| !q.is_empty());
        if n == 0 && !injected {
            let _ = self.io.flush();
            return 0;
        }
        let t0 = Instant::now();
        self.stats.batches += 1;
        self.stats.rx += n as u64;
        // One epoch pin per batch: SAs seen by this batch stay valid until it is done.
        let sas = self.sas.clone();
        let guard = sas.as_ref().map(|s| s.pin());
        if injected {
            self.drain_inject(guard.as_ref());
        }
        for i in 0..n {
            let d = self.rx[i];
            match self.process(d, guard.as_ref()) {
                Verdict::Tx(out) => self.tx.push(out),
                Verdict::Replied(out) => {
                    self.stats.replied += 1;
                    self.tx.push(out);
                    self.freed.push(d);
                }
                Verdict::Punted => {
                    self.stats.punted += 1;
                    self.freed.push(d);
                }
                Verdict::Drop(why) => {
                    self.stats.drop(why);
                    self.freed.push(d);
                }
            }
        }
        self.stats.tx += self.tx.len() as u64;
        drop(guard);
        let _ = self.io.send(&self.tx);
        self.io.free(&self.freed);
        self.tx.clear();
        self.freed.clear();
        let _ = self.io.flush();
        if self.punted_this_batch {
            self.punt.wake();
            self.punted_this_batch = false;
        }
        let took = t0.elapsed();
        self.stats.busy_ns += took.as_nanos() as u64;
        // Every packet of the batch left (or was dropped) by now: one sample per packet, taken
        // once per batch (the clock is read twice per batch, never per packet).
        if n > 0 {
            let _ = self
                .latency
                .record_n(took.as_nanos().max(1) as u64, n as u64);
        }
        self.note_io_drops();
        self.shared.publish(&self.stats);
        if took + t0.duration_since(self.last_merge) > std::time::Duration::from_millis(100)
            && self.shared.try_merge_latency(&mut self.latency)
        {
            self.last_merge = Instant::now();
        }
        n
    }

    /// Send what the registration thread queued for this worker (at most one batch's worth).
    fn drain_inject(&mut self, sas: Option<&ReadGuard<'_>>) {
        let Some(q) = self.inject.clone() else {
            return;
        };
        for _ in 0..self.cfg.batch {
            let Some(m) = q.pop() else {
                break;
            };
            match self.send_injected(&m, sas) {
                Verdict::Tx(d) => {
                    self.stats.injected += 1;
                    self.tx.push(d);
                }
                Verdict::Drop(_) => self.stats.inject_dropped += 1,
                Verdict::Punted | Verdict::Replied(_) => {}
            }
            q.recycle(m);
        }
    }

    /// One injected message: into a fresh frame, IP + UDP headers, and ESP when it goes over
    /// the UE's SA (the outbound SA of its flow: our port → the UE's port, TS 33.203 §7.1).
    fn send_injected(&mut self, m: &Msg, sas: Option<&ReadGuard<'_>>) -> Verdict {
        let Some(out) = self.io.alloc(m.side) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let frame = self.io.frame(&out);
        let at = HEADROOM + wire::ip::IPV6_HEADER_LEN + wire::udp::HEADER_LEN;
        let len = m.bytes().len();
        if at + len + 64 > frame.len() {
            self.io.free(&[out]);
            return Verdict::Drop(DropReason::NoRoom);
        }
        frame[at..at + len].copy_from_slice(m.bytes());
        let Ok(r) = wire::emit_datagram(frame, at..at + len, m.src, m.dst) else {
            self.io.free(&[out]);
            return Verdict::Drop(DropReason::NoRoom);
        };
        let range = match m.protection {
            Protection::Plain => r,
            Protection::Protected { .. } => {
                let sa = sas.and_then(|g| g.outbound(m.dst.ip(), m.dst.port(), m.src.port()));
                let Some(e) = sa else {
                    self.io.free(&[out]);
                    return Verdict::Drop(DropReason::NoRoute);
                };
                let frame = self.io.frame(&out);
                let mut f = crate::esp::Frame::new(frame, r.start, r.end);
                if e.sa().outbound(&mut f).is_err() {
                    self.io.free(&[out]);
                    return Verdict::Drop(DropReason::EspOther);
                }
                self.stats.esp_out += 1;
                f.start..f.end
            }
        };
        Verdict::Tx(Desc {
            frame: out.frame,
            start: range.start as u16,
            end: range.end as u16,
            side: m.side,
        })
    }

    fn process(&mut self, d: Desc, sas: Option<&ReadGuard<'_>>) -> Verdict {
        self.stats.classify += 1;
        let class = {
            let frame = self.io.frame(&d);
            classify(&frame[d.start as usize..d.end as usize])
        };
        match (class, d.side) {
            (L4::Udp { src, dst, payload }, Side::Ue) => {
                if !self.cfg.ue_addrs.contains(&dst.ip()) || dst.port() != self.cfg.ue_sip_port {
                    // Protected ports carry only ESP (TS 33.203 §7.1): plain UDP there is dropped.
                    return Verdict::Drop(DropReason::NotForUs);
                }
                let frame = self.io.frame(&d);
                let pkt = &frame[d.start as usize..d.end as usize];
                if self.cfg.verify_udp_checksum && !udp_checksum_ok(pkt, src, dst, &payload) {
                    return Verdict::Drop(DropReason::BadUdpChecksum);
                }
                let at = d.start as usize;
                self.sip_from_ue(d, src, dst, at + payload.start..at + payload.end)
            }
            (L4::Udp { src, dst, payload }, Side::Core) => {
                if dst != self.cfg.core {
                    return Verdict::Drop(DropReason::NotForUs);
                }
                let frame = self.io.frame(&d);
                let pkt = &frame[d.start as usize..d.end as usize];
                if self.cfg.verify_udp_checksum && !udp_checksum_ok(pkt, src, dst, &payload) {
                    return Verdict::Drop(DropReason::BadUdpChecksum);
                }
                let at = d.start as usize;
                self.sip_from_core(d, src, dst, at + payload.start..at + payload.end, sas)
            }
            (L4::Esp { src, dst, .. }, Side::Ue) => {
                if !self.cfg.ue_addrs.contains(&dst) {
                    return Verdict::Drop(DropReason::NotForUs);
                }
                self.esp_in(d, src, sas)
            }
            (L4::Esp { .. }, Side::Core) => Verdict::Drop(DropReason::NotForUs),
            (L4::Other, _) => Verdict::Drop(DropReason::NotIpUdpEsp),
        }
    }

    /// ESP from a UE (RFC 4303 §3.4): SA by SPI, outer source = the SA's UE, ICV, anti-replay,
    /// decrypt (all in `Sa::decapsulate`), then the selector check on the inner UDP ports
    /// (RFC 4301 §5.2: SA1 is UE port-c → our port-s, SA4 UE port-s → our port-c).
    fn esp_in(&mut self, d: Desc, src: IpAddr, sas: Option<&ReadGuard<'_>>) -> Verdict {
        self.stats.esp_in += 1;
        let Some(sas) = sas else {
            return Verdict::Drop(DropReason::UnknownSpi);
        };
        let frame = self.io.frame(&d);
        let (start, end) = (d.start as usize, d.end as usize);
        let Ok(spi) = crate::esp::packet::peek_spi(&frame[start..end]) else {
            return Verdict::Drop(DropReason::EspOther);
        };
        let Some(e) = sas.inbound(spi) else {
            return Verdict::Drop(DropReason::UnknownSpi);
        };
        if e.ue_addr() != src {
            return Verdict::Drop(DropReason::EspOther);
        }
        let inner = match e.sa().decapsulate(&mut frame[start..end]) {
            Ok((inner, _)) => start + inner.start..start + inner.end,
            Err(why) => return Verdict::Drop(why.into()),
        };
        let L4::Udp {
            src: isrc,
            dst: idst,
            payload,
        } = classify(&frame[inner.clone()])
        else {
            // TCP over the SA is not handled yet.
            return Verdict::Drop(DropReason::EspOther);
        };
        if isrc.port() != e.ue_port() || idst.port() != e.local_port() {
            return Verdict::Drop(DropReason::EspOther);
        }
        let payload = inner.start + payload.start..inner.start + payload.end;
        self.stats.sip += 1;
        let Ok(idx) = Index::parse(frame, payload.start, payload.end) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let view = idx.view(frame);
        if view.validate().is_err() {
            return Verdict::Drop(DropReason::BadSip);
        }
        if !idx.is_request() {
            // the UE answering a request the core sent it (request_to_ue): back to the core
            return self.ue_response_over_sa(d, idx, e);
        }
        if view.is_method(b"REGISTER") {
            // REGISTER over the temporary or current set: the registration thread's.
            return self.punt(
                Side::Ue,
                Protection::Protected { spi },
                isrc,
                idst,
                payload,
                d,
            );
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
                Some((code, reason)) => self.reply_over_sa(d, idx, e, sas, code, reason),
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        // TS 24.229 §5.2.6.3: toward the Service-Route, asserting the registered identity.
        // The branch records the SPI the request came over and the UE's port (the Via sent-by,
        // TS 33.203 §7.1), so the response goes back over this SA set — even while a re-registration
        // has two — to this UE, whatever addresses the Vias name (core_response_to_ue).
        let Some(port) = rules::top_via_port(view) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let ue = e.ue_addr();
        let hash = rules::stateless_branch(view);
        let branch = self.key.seal(Dir::ToCore, spi, port, hash, ue, ue);
        let core = self.cfg.core;
        let me = relay_identity(&self.cfg, &self.own);
        // the index already describes this frame: edit with it, no second parse
        let mut ed = Editor::from_index(frame, idx);
        if rules::rewrite_protected_request(&mut ed, &me, isrc, &branch, reg.pai(), reg.route())
            .is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let range = ed.range();
        let r = wire::emit_datagram(frame, range, core, reg.next_hop).ok();
        self.forwarded(d, r, Side::Core)
    }

    /// An unprotected SIP message from a UE (port 5060).
    fn sip_from_ue(
        &mut self,
        d: Desc,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
    ) -> Verdict {
        self.stats.sip += 1;
        let frame = self.io.frame(&d);
        let Ok(idx) = Index::parse(frame, payload.start, payload.end) else {
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
            return self.ue_response_plain(d, idx, src);
        }
        if !valid {
            return self.reply(d, idx, src, dst, 400, "Bad Request");
        }
        if view.is_method(b"REGISTER") {
            return self.punt(Side::Ue, Protection::Plain, src, dst, payload, d);
        }
        if rules::max_forwards_exhausted(view) {
            return self.reply(d, idx, src, dst, 483, "Too Many Hops");
        }
        // RFC 3261 §16.4: a Request-URI that is us (after our Route entries, which a relayed
        // request loses anyway) makes us the UAS: answered here, never forwarded.
        if view.request_uri().is_some_and(|u| self.own.is_us(u)) {
            return match rules::answer_to_us(view) {
                // The source of a UDP request is not verified: an answer larger than the
                // request is not sent (no amplification toward a spoofed victim; a phone's
                // OPTIONS, with its Route and Max-Forwards, is larger than our answer).
                Some((code, reason)) => self.reply_with(
                    d,
                    idx,
                    (src, dst),
                    (code, reason),
                    rules::ALLOW_TO_US,
                    Some(payload.len()),
                ),
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        if !self.cfg.stateless_relay {
            // TS 24.229 §5.2.2: requests other than REGISTER must arrive over the UE's SAs.
            return self.reply(d, idx, src, dst, 403, "Forbidden");
        }
        let Some(next) = self.cfg.icscf else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        // RFC 3261 §16.11 hash; the response goes back where this request came from (RFC 3581).
        let Some(port) = rules::reply_port(view, src) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let hash = rules::stateless_branch(view);
        let branch = self.key.seal(Dir::ToCore, 0, port, hash, src.ip(), NO_UE);
        let core = self.cfg.core;
        let me = relay_identity(&self.cfg, &self.own);
        let frame = self.io.frame(&d);
        // the index already describes this frame: edit with it, no second parse
        let mut ed = Editor::from_index(frame, idx);
        // RFC 3261 §16.4: our own Route entries go (phones write our address, PCO-learned);
        // the Request-URI was checked above. (Relay mode is a load-test shortcut: the UE's
        // other Routes stay, as a stateless proxy's would.)
        if rules::pop_own_routes(&mut ed, &me).is_err()
            || rules::forward_request(&mut ed, &me, src, &branch).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let range = ed.range();
        let r = wire::emit_datagram(frame, range, core, next).ok();
        self.forwarded(d, r, Side::Core)
    }

    /// A SIP message from the core.
    fn sip_from_core(
        &mut self,
        d: Desc,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
        sas: Option<&ReadGuard<'_>>,
    ) -> Verdict {
        self.stats.sip += 1;
        let frame = self.io.frame(&d);
        let Ok(idx) = Index::parse(frame, payload.start, payload.end) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let view = idx.view(frame);
        if idx.is_request() {
            return self.request_to_ue(d, idx, src, dst, payload, sas);
        }
        // RFC 3261 §18.1.2: a response whose top Via is not ours is discarded.
        let Some(ours) = rules::top_via_ours(view, self.cfg.via_sent_by.as_bytes()) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let is_register = view
            .header(HeaderName::CSeq)
            .and_then(crate::sip::headers::cseq)
            .is_some_and(|(_, m)| m == b"REGISTER");
        if is_register {
            // the registration thread's branches have their own format and check
            return self.punt(Side::Core, Protection::Plain, src, dst, payload, d);
        }
        let Some(branch) = ours else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        self.core_response_to_ue(d, idx, branch, sas)
    }

    /// A request from the core toward a registered UE (through our Path; TS 24.229 §5.2.6.4):
    /// over the UE's SA2 — our port-c to the port-s of the registered contact — with our Route
    /// popped and our UE-side Via on top. Anything else goes to the registration thread.
    fn request_to_ue(
        &mut self,
        d: Desc,
        idx: Index,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
        sas: Option<&ReadGuard<'_>>,
    ) -> Verdict {
        let frame = self.io.frame(&d);
        let view = idx.view(frame);
        // RFC 3261 §16.4: a request from the core addressed to us (an OPTIONS keep-alive, say)
        // is answered here, from our core-side address.
        if view.request_uri().is_some_and(|u| self.own.is_us(u)) {
            return match rules::answer_to_us(view) {
                Some(cr) => self.reply_with(d, idx, (src, dst), cr, rules::ALLOW_TO_US, None),
                None => Verdict::Drop(DropReason::ToUs),
            };
        }
        let target = rules::request_uri_addr(view);
        let entry = target.and_then(|t| sas.and_then(|g| g.outbound_any(t.ip(), t.port())));
        let (Some(target), Some(e)) = (target, entry) else {
            return self.punt(Side::Core, Protection::Plain, src, dst, payload, d);
        };
        if rules::max_forwards_exhausted(view) {
            return Verdict::Drop(DropReason::TooManyHops);
        }
        let Some(ours) = our_ue_addr(&self.cfg, target.ip()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let from = SocketAddr::new(ours, e.local_port());
        let mut sent_by = [0u8; 64];
        let Some(n) = ue_sent_by(ours, e.local_port(), &mut sent_by) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let me = ProxyIdentity {
            via_sent_by: &sent_by[..n],
            via_transport: b"UDP",
            path_uri: b"",
            own: &self.own,
            visited_network_id: b"",
            orig_ioi: b"",
        };
        // The UE's response must come back with this branch (ue_response_over_sa): it binds
        // the UE and the core hop the response goes back to (RFC 3581: where this came from).
        let Some(port) = rules::reply_port(view, src) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let hash = rules::stateless_branch(view);
        let branch = self
            .key
            .seal(Dir::ToUe, 0, port, hash, src.ip(), e.ue_addr());
        // the index already describes this frame: edit with it, no second parse
        let mut ed = Editor::from_index(frame, idx);
        if rules::rewrite_request_to_ue(&mut ed, &me, src, &branch).is_err() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let range = ed.range();
        let to = SocketAddr::new(target.ip(), e.ue_port());
        let r = udp_over_sa(frame, range, from, to, e.sa());
        self.sent_over_sa(d, r)
    }

    /// A response from the core whose top Via is ours in the workers' format (RFC 3261
    /// §16.7, stateless per §16.11): the branch must verify, then our Via goes and the response
    /// is sent to the UE the branch names — over the SA set the request came over (TS 33.203 §7.1:
    /// our port-c → the UE's port-s, or the port it named), never one looked up from text.
    fn core_response_to_ue(
        &mut self,
        d: Desc,
        idx: Index,
        b: Branch,
        sas: Option<&ReadGuard<'_>>,
    ) -> Verdict {
        let (key, ue_port) = (self.key, self.cfg.ue_sip_port);
        let frame = self.io.frame(&d);
        let end = frame.len();
        let mut ed = Editor::from_index(&mut frame[..end], idx);
        if rules::pop_top_via(&mut ed).is_err() {
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
            let Some(ours) = our_ue_addr(&self.cfg, next.ip()) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            let range = ed.range();
            let r = wire::emit_datagram(frame, range, SocketAddr::new(ours, ue_port), next).ok();
            return self.forwarded(d, r, Side::Ue);
        }
        // The SA the request came over names the UE. If it is gone (the set was replaced or
        // the UE deregistered) the response is dropped: the UE retransmits over its new set,
        // and nothing goes out in the clear or over another UE's SA.
        let Some(inb) = sas.and_then(|g| g.inbound(b.spi)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let ue = inb.ue_addr();
        if !key.verify(&b, Dir::ToCore, ue, ue) {
            return Verdict::Drop(DropReason::NotOurVia);
        }
        // The set's outbound SA to the UE's port: it arrived at our port-s (SA1; our port-c is
        // one below, as the registrar pairs them) or at our port-c (SA4).
        let local = inb.local_port();
        let Some(e) = sas.and_then(|g| {
            g.outbound(ue, b.port, local.wrapping_sub(1))
                .or_else(|| g.outbound(ue, b.port, local))
        }) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(ours) = our_ue_addr(&self.cfg, ue) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let from = SocketAddr::new(ours, e.local_port());
        let range = ed.range();
        let r = udp_over_sa(frame, range, from, SocketAddr::new(ue, b.port), e.sa());
        self.sent_over_sa(d, r)
    }

    /// A UE's response, over its SA `e`, to a request the core sent it through us
    /// (`request_to_ue`): our UE-side Via must be on top with a branch we sealed for this UE and
    /// the core hop it names (RFC 3261 §18.1.2; else dropped); then our Via goes, the identity
    /// is the network's (RFC 3325 §9.1, TS 24.229 §5.2.6.4) and it goes to that hop.
    fn ue_response_over_sa(&mut self, d: Desc, idx: Index, e: &crate::satable::Entry) -> Verdict {
        let Some(reg) = e.registration() else {
            return Verdict::Drop(DropReason::NotRegistered);
        };
        self.ue_response_to_core(d, idx, e.ue_addr(), e.local_port(), Some(reg.pai()))
    }

    /// A UE's response in the clear (stateless relay mode): the same check of our UE-side Via
    /// as over an SA (for our unprotected address and port, this UE), then to the core hop.
    fn ue_response_plain(&mut self, d: Desc, idx: Index, src: SocketAddr) -> Verdict {
        let port = self.cfg.ue_sip_port;
        self.ue_response_to_core(d, idx, src.ip(), port, None)
    }

    /// The shared part of both: our UE-side Via (our address of the UE's family, `our_port`) on
    /// top with a branch sealed for `ue` and the core hop below it, else dropped; our Via
    /// popped; `pai`, when given, asserted; then to that hop.
    fn ue_response_to_core(
        &mut self,
        d: Desc,
        idx: Index,
        ue: IpAddr,
        our_port: u16,
        pai: Option<&[u8]>,
    ) -> Verdict {
        let Some(ours) = our_ue_addr(&self.cfg, ue) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let mut sent_by = [0u8; 64];
        let Some(n) = ue_sent_by(ours, our_port, &mut sent_by) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let (key, core) = (self.key, self.cfg.core);
        let frame = self.io.frame(&d);
        let Some(Some(b)) = rules::top_via_ours(idx.view(frame), &sent_by[..n]) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        let end = frame.len();
        let mut ed = Editor::from_index(&mut frame[..end], idx);
        if rules::pop_top_via(&mut ed).is_err() {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let Some(next) = rules::response_next_hop(ed.view()) else {
            return Verdict::Drop(DropReason::NotOurVia);
        };
        if b.spi != 0 || next.port() != b.port || !key.verify(&b, Dir::ToUe, next.ip(), ue) {
            return Verdict::Drop(DropReason::NotOurVia);
        }
        if let Some(pai) = pai
            && rules::assert_identity(&mut ed, pai).is_err()
        {
            return Verdict::Drop(DropReason::NoRoom);
        }
        let range = ed.range();
        let r = wire::emit_datagram(frame, range, core, next).ok();
        self.forwarded(d, r, Side::Core)
    }

    /// Answer a request that came over the SA entry `e` (a request addressed to us) with
    /// `code` and [`rules::ALLOW_TO_US`], back over the same set as any response to the UE
    /// (TS 33.203 §7.1: our port-c → the port its Via names; our port-s when that is the pair).
    fn reply_over_sa(
        &mut self,
        d: Desc,
        idx: Index,
        e: &crate::satable::Entry,
        sas: &ReadGuard<'_>,
        code: u16,
        reason: &str,
    ) -> Verdict {
        let frame = self.io.frame(&d);
        let view = idx.view(frame);
        let Some(port) = rules::top_via_port(view) else {
            return Verdict::Drop(DropReason::BadSip);
        };
        let Some(n) = rules::build_response(
            view,
            code,
            reason,
            b"pcscf",
            &[rules::ALLOW_TO_US],
            &mut self.scratch,
        ) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let (ue, local) = (e.ue_addr(), e.local_port());
        let Some(out_sa) = sas
            .outbound(ue, port, local.wrapping_sub(1))
            .or_else(|| sas.outbound(ue, port, local))
        else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(ours) = our_ue_addr(&self.cfg, ue) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(out) = self.io.alloc(Side::Ue) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let frame = self.io.frame(&out);
        let at = HEADROOM + wire::ip::IPV6_HEADER_LEN + wire::udp::HEADER_LEN;
        let Some(body) = frame.get_mut(at..at + n) else {
            self.io.free(&[out]);
            return Verdict::Drop(DropReason::NoRoom);
        };
        body.copy_from_slice(&self.scratch[..n]);
        let from = SocketAddr::new(ours, out_sa.local_port());
        match udp_over_sa(
            frame,
            at..at + n,
            from,
            SocketAddr::new(ue, port),
            out_sa.sa(),
        ) {
            Ok(r) => {
                self.stats.esp_out += 1;
                Verdict::Replied(Desc {
                    frame: out.frame,
                    start: r.start as u16,
                    end: r.end as u16,
                    side: Side::Ue,
                })
            }
            Err(why) => {
                self.io.free(&[out]);
                Verdict::Drop(why)
            }
        }
    }

    /// The verdict for a packet re-addressed and ESP-protected in its own frame.
    fn sent_over_sa(&mut self, d: Desc, r: Result<Range<usize>, DropReason>) -> Verdict {
        match r {
            Ok(r) => {
                self.stats.esp_out += 1;
                self.forwarded(d, Some(r), Side::Ue)
            }
            Err(why) => Verdict::Drop(why),
        }
    }

    /// The verdict for a packet re-addressed in its own frame (`r`: where it now lies).
    fn forwarded(&mut self, d: Desc, r: Option<Range<usize>>, toward: Side) -> Verdict {
        match r {
            Some(r) => {
                self.stats.forwarded += 1;
                Verdict::Tx(Desc {
                    frame: d.frame,
                    start: r.start as u16,
                    end: r.end as u16,
                    side: toward,
                })
            }
            None => Verdict::Drop(DropReason::NoRoom),
        }
    }

    fn punt(
        &mut self,
        side: Side,
        protection: Protection,
        src: SocketAddr,
        dst: SocketAddr,
        payload: Range<usize>,
        d: Desc,
    ) -> Verdict {
        let id = self.cfg.id;
        let frame = self.io.frame(&d);
        let d = Datagram {
            side,
            protection,
            src,
            dst,
            payload: &frame[payload.clone()],
        };
        match self.punt.push(d, id) {
            Ok(()) => {
                self.punted_this_batch = true;
                Verdict::Punted
            }
            Err(_) => Verdict::Drop(DropReason::PuntFull),
        }
    }

    /// Answer a request with `code` from the address it was sent to.
    fn reply(
        &mut self,
        d: Desc,
        idx: Index,
        src: SocketAddr,
        dst: SocketAddr,
        code: u16,
        reason: &str,
    ) -> Verdict {
        self.reply_with(d, idx, (src, dst), (code, reason), b"", None)
    }

    /// [`Self::reply`] with `extra` header lines (each ending in CRLF); not sent (dropped as
    /// [`DropReason::ToUs`]) when longer than `at_most` bytes.
    fn reply_with(
        &mut self,
        d: Desc,
        idx: Index,
        (src, dst): (SocketAddr, SocketAddr),
        (code, reason): (u16, &str),
        extra: &[u8],
        at_most: Option<usize>,
    ) -> Verdict {
        let frame = self.io.frame(&d);
        let n = match rules::build_response(
            idx.view(frame),
            code,
            reason,
            b"pcscf",
            &[extra],
            &mut self.scratch,
        ) {
            Some(n) => n,
            None => return Verdict::Drop(DropReason::NoRoom),
        };
        if at_most.is_some_and(|m| n > m) {
            return Verdict::Drop(DropReason::ToUs);
        }
        let Some(out) = self.io.alloc(d.side) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        let frame = self.io.frame(&out);
        let at = HEADROOM;
        // The answer can be longer than the request (compact names expanded, a To tag and
        // Content-Length added): one that does not fit the frame is dropped, never a panic.
        let Some(dst_bytes) = frame.get_mut(at..at + n) else {
            self.io.free(&[out]);
            return Verdict::Drop(DropReason::NoRoom);
        };
        dst_bytes.copy_from_slice(&self.scratch[..n]);
        match wire::emit_datagram(frame, at..at + n, dst, src) {
            Ok(r) => Verdict::Replied(Desc {
                frame: out.frame,
                start: r.start as u16,
                end: r.end as u16,
                side: d.side,
            }),
            Err(_) => {
                self.io.free(&[out]);
                Verdict::Drop(DropReason::NoRoom)
            }
        }
    }
}
