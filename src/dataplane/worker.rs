//! One poll-mode worker: receive a batch, hand each packet to the [`Pipeline`], send a batch.
//!
//! Owns: the batch loop over one [`PacketIo`] — receive, the pipeline's verdicts turned into
//! TX / free lists, fresh frames for answers and for what the registration thread injects, the
//! SA table pinned once per batch, and the counters and latency published to the control
//! thread. What happens to each packet is the pipeline's (`dataplane::pipeline`). Per packet it
//! allocates nothing, takes no lock and makes no syscall; `recv`, `send`, `flush` and the punt
//! wake-up are once per batch.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use crate::dataplane::pipeline::WorkerConfig;
use crate::dataplane::pipeline::{Pipeline, Verdict, udp_over_sa};
use crate::dataplane::queue::{Datagram, Msg, MsgQueue, Protection};
use crate::dataplane::stats::{DropReason, SharedStats, WorkerStats, new_histogram};
use crate::dataplane::streams::{Framed, Streams, message_frame};
use crate::esp::Sa;
use crate::io::{Desc, HEADROOM, PacketIo, Side};
use crate::satable::{ReadGuard, SaReader};
use crate::wire;

/// Put `bytes` into a fresh frame of `side`, with IP + UDP headers from `src` to `dst`, and
/// ESP-protect it with `over` when given (the ESP-out stage for a packet we originate).
fn originate<P: PacketIo>(
    io: &mut P,
    side: Side,
    bytes: &[u8],
    (src, dst): (SocketAddr, SocketAddr),
    over: Option<&Sa>,
) -> Result<Desc, DropReason> {
    let out = io.alloc(side).ok_or(DropReason::NoRoom)?;
    let frame = io.frame(&out);
    // room below for the IP and UDP headers (and ESP's, which go in front of UDP)
    let at = HEADROOM + wire::ip::IPV6_HEADER_LEN + wire::udp::HEADER_LEN;
    let placed = match frame.get_mut(at..at + bytes.len()) {
        Some(body) => {
            body.copy_from_slice(bytes);
            match over {
                None => wire::emit_datagram(frame, at..at + bytes.len(), src, dst)
                    .map_err(|_| DropReason::NoRoom),
                Some(sa) => udp_over_sa(frame, at..at + bytes.len(), src, dst, sa),
            }
        }
        // An answer can be longer than its request (compact names expanded, a To tag and
        // Content-Length added): one that does not fit a frame is dropped, never a panic.
        None => Err(DropReason::NoRoom),
    };
    match placed {
        Ok(r) => Ok(Desc {
            frame: out.frame,
            start: r.start as u16,
            end: r.end as u16,
            side,
        }),
        Err(why) => {
            io.free(&[out]);
            Err(why)
        }
    }
}

/// Queue `msg` in `q` for the core TCP thread: on its connection `conn`, else to `dst`
/// ([`DropReason::CoreStreamLost`] when it is full, or with no core TCP).
fn to_core_stream(
    q: Option<&Arc<MsgQueue>>,
    (conn, src, dst): (u32, SocketAddr, SocketAddr),
    msg: &[u8],
) -> Result<(), DropReason> {
    let d = Datagram {
        side: Side::Core,
        protection: Protection::CoreStream { conn },
        src,
        dst,
        payload: msg,
    };
    q.ok_or(DropReason::CoreStreamLost)?
        .push(d)
        .map_err(|_| DropReason::CoreStreamLost)
}

/// A worker over one [`PacketIo`].
pub struct Worker<P: PacketIo> {
    io: P,
    pipe: Pipeline,
    batch: usize,
    /// The SA table (pinned once per batch). `None`: no SAs, every SPI is unknown.
    sas: Option<SaReader>,
    /// Messages the registration thread wants this worker to send.
    inject: Option<Arc<MsgQueue>>,
    /// What the other workers hand this one for the UEs' TCP it holds (its entry in the
    /// peers': a queue apart from `inject`, so a flood of hand-overs never costs the
    /// registration thread's answers a slot).
    handover: Option<Arc<MsgQueue>>,
    /// SIP over TCP with the core (`daemon::core_tcp`): what the core TCP thread framed for
    /// this worker, and where what goes to the core over TCP is queued (woken once per batch).
    core_in: Option<Arc<MsgQueue>>,
    core_out: Option<Arc<MsgQueue>>,
    core_queued: bool,
    punt: Arc<MsgQueue>,
    shared: Arc<SharedStats>,
    rx: Vec<Desc>,
    tx: Vec<Desc>,
    freed: Vec<Desc>,
    /// SIP over TCP inside the UEs' SAs (`dataplane::streams`).
    streams: Streams,
    /// Messages the TCP framed this batch, each in its own frame.
    framed: Vec<Framed>,
    /// rx-to-tx latency (ns) per packet, merged into `shared` every ~100 ms.
    latency: hdrhistogram::Histogram<u64>,
    last_merge: Instant,
}

impl<P: PacketIo> std::fmt::Debug for Worker<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pipeline", &self.pipe)
            .finish_non_exhaustive()
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
            pipe: Pipeline::new(cfg, punt.clone()),
            batch,
            sas: None,
            inject: None,
            handover: None,
            core_in: None,
            core_out: None,
            core_queued: false,
            punt,
            shared,
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
            streams: Streams::new(crate::tcp::HostConfig::default()),
            framed: Vec::with_capacity(batch),
            latency: new_histogram(),
            last_merge: Instant::now(),
        }
    }

    /// Give the worker its queue of messages to send for the registration thread.
    pub fn with_inject(mut self, q: Arc<MsgQueue>) -> Self {
        self.inject = Some(q);
        self
    }

    /// Give the worker the queue its dialog events go to (`Pipeline::with_dialog_events`).
    pub fn with_dialog_events(mut self, q: Arc<MsgQueue>) -> Self {
        self.pipe.set_dialog_events(q);
        self
    }

    /// Give the worker every worker's hand-over queue, by worker id (its own is the one at its
    /// id): a segment or message for a UE's TCP that another worker holds goes there.
    pub fn with_peers(mut self, peers: Arc<[Arc<MsgQueue>]>) -> Self {
        self.set_peers(peers);
        self
    }

    /// Give the worker its queues with the core TCP thread: `core_in`, the messages it framed
    /// for this worker; `core_out`, where messages for the core over TCP go.
    pub fn with_core_tcp(mut self, core_in: Arc<MsgQueue>, core_out: Arc<MsgQueue>) -> Self {
        self.core_in = Some(core_in);
        self.core_out = Some(core_out);
        self
    }

    /// [`Worker::with_core_tcp`] on a built worker.
    pub fn set_core_tcp(&mut self, core_in: Arc<MsgQueue>, core_out: Arc<MsgQueue>) {
        self.core_in = Some(core_in);
        self.core_out = Some(core_out);
    }

    /// [`Worker::with_inject`] on a built worker.
    pub fn set_inject(&mut self, q: Arc<MsgQueue>) {
        self.inject = Some(q);
    }

    /// [`Worker::with_peers`] on a built worker.
    pub fn set_peers(&mut self, peers: Arc<[Arc<MsgQueue>]>) {
        self.handover = peers.get(usize::from(self.pipe.config().id)).cloned();
        self.pipe.set_peers(peers);
    }

    /// The worker's TCP inside the UEs' SAs (counters, sets).
    pub fn streams(&self) -> &Streams {
        &self.streams
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
        self.pipe.stats()
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
                    self.shared.publish(&self.pipe.stats);
                }
                std::hint::spin_loop();
            }
        }
        self.note_io_drops();
        self.shared.publish(&self.pipe.stats);
        while !self.shared.try_merge_latency(&mut self.latency) {
            std::thread::yield_now();
        }
    }

    /// Drops the backend made or saw on its own (packets too big for a frame, a full kernel
    /// receive queue) as drop reasons.
    #[inline]
    fn note_io_drops(&mut self) {
        let io = self.io.stats();
        self.pipe.stats.drops[DropReason::Oversize as usize] = io.rx_oversize;
        self.pipe.stats.drops[DropReason::QueueOverflow as usize] = io.rx_queue_overflow;
    }

    /// One batch: receive, process, send. Returns how many packets came in.
    // kept out of line: perf/profile counts instructions inside it (callgrind --toggle-collect)
    #[inline(never)]
    pub fn poll_once(&mut self) -> usize {
        let n = self.io.recv(&mut self.rx).unwrap_or_default();
        let waiting = |q: &Option<Arc<MsgQueue>>| q.as_ref().is_some_and(|q| !q.is_empty());
        let injected = waiting(&self.inject) || waiting(&self.handover);
        let from_core = waiting(&self.core_in);
        // the clock is read for the TCP's timers only while it holds a set
        let tcp_due = !self.streams.is_idle() && self.streams.is_due(Instant::now());
        if n == 0 && !injected && !from_core && !tcp_due {
            let _ = self.io.flush();
            return 0;
        }
        let t0 = Instant::now();
        self.pipe.stats.batches += 1;
        self.pipe.stats.rx += n as u64;
        // One epoch pin per batch: SAs seen by this batch stay valid until it is done.
        let sas = self.sas.clone();
        let guard = sas.as_ref().map(|s| s.pin());
        if injected {
            for q in [self.inject.clone(), self.handover.clone()]
                .into_iter()
                .flatten()
            {
                self.drain_inject(&q, guard.as_ref(), t0);
            }
        }
        if from_core && let Some(q) = self.core_in.clone() {
            self.drain_core(&q, guard.as_ref(), t0);
        }
        for i in 0..n {
            let d = self.rx[i];
            let frame = self.io.frame(&d);
            let at = d.start as usize..d.end as usize;
            let v = self.pipe.handle(frame, d.side, at, guard.as_ref());
            self.settle(d, v, t0, guard.as_ref());
        }
        if !self.streams.is_idle() {
            self.stream_pass(guard.as_ref(), t0);
            let h = self.streams.host().stats();
            let st = &mut self.pipe.stats;
            st.tcp_framing_errors = h.framing_errors.iter().sum();
            st.tcp_slow_messages = h.slow_messages;
            st.tcp_pings = h.pings;
            st.tcp_sets_refused = h.sets_refused;
        }
        self.pipe.stats.tx += self.tx.len() as u64;
        drop(guard);
        let _ = self.io.send(&self.tx);
        self.io.free(&self.freed);
        self.tx.clear();
        self.freed.clear();
        let _ = self.io.flush();
        if self.pipe.take_punted() {
            self.punt.wake();
        }
        if std::mem::take(&mut self.core_queued)
            && let Some(q) = &self.core_out
        {
            q.wake();
        }
        let took = t0.elapsed();
        self.pipe.stats.busy_ns += took.as_nanos() as u64;
        // Every packet of the batch left (or was dropped) by now: one sample per packet, taken
        // once per batch (the clock is read twice per batch, never per packet).
        if n > 0 {
            let _ = self
                .latency
                .record_n(took.as_nanos().max(1) as u64, n as u64);
        }
        self.note_io_drops();
        self.shared.publish(&self.pipe.stats);
        if took + t0.duration_since(self.last_merge) > std::time::Duration::from_millis(100)
            && self.shared.try_merge_latency(&mut self.latency)
        {
            self.last_merge = Instant::now();
        }
        n
    }

    /// Carry out the pipeline's verdict on the packet in frame `d`. What it gives the TCP to
    /// send joins the TX batch at once, in order with the datagrams around it (a response on a
    /// UE's connection must not fall behind the BYE the core sent after it as a datagram).
    fn settle(&mut self, d: Desc, v: Verdict<'_>, now: Instant, sas: Option<&ReadGuard<'_>>) {
        match v {
            Verdict::Forward { range, toward } => {
                self.tx.push(Desc {
                    frame: d.frame,
                    start: range.start as u16,
                    end: range.end as u16,
                    side: toward,
                });
                return;
            }
            Verdict::Reply(r) => {
                let answer = self.pipe.answer(&r);
                if let Some(conn) = r.core_conn {
                    let ends = (conn, r.src, r.dst);
                    match to_core_stream(self.core_out.as_ref(), ends, answer) {
                        Ok(()) => {
                            self.core_queued = true;
                            self.pipe.stats.replied += 1;
                            self.pipe.stats.core_stream_out += 1;
                        }
                        Err(why) => self.pipe.stats.drop(why),
                    }
                } else if let Some(e) = r.stream {
                    match self.streams.send(e, r.src.ip(), answer, now) {
                        Ok(()) => {
                            self.pipe.stats.replied += 1;
                            self.pipe.stats.stream_out += 1;
                        }
                        Err(why) => self.pipe.stats.drop(why),
                    }
                } else {
                    let ends = (r.src, r.dst);
                    match originate(&mut self.io, r.side, answer, ends, r.over) {
                        Ok(out) => {
                            self.pipe.stats.replied += 1;
                            self.pipe.stats.esp_out += u64::from(r.over.is_some());
                            self.tx.push(out);
                        }
                        Err(why) => self.pipe.stats.drop(why),
                    }
                }
            }
            Verdict::Segment { inner, entry, ours } => {
                let pkt = &self.io.frame(&d)[inner];
                match self.streams.segment(entry, ours, pkt, now) {
                    Ok(()) => self.pipe.stats.tcp_segments += 1,
                    Err(why) => self.pipe.stats.drop(why),
                }
            }
            Verdict::Stream { range, entry, ours } => {
                let msg = &self.io.frame(&d)[range];
                match self.streams.send(entry, ours, msg, now) {
                    Ok(()) => {
                        self.pipe.stats.forwarded += 1;
                        self.pipe.stats.stream_out += 1;
                    }
                    Err(why) => self.pipe.stats.drop(why),
                }
            }
            Verdict::CoreStream { range, conn, dst } => {
                let msg = &self.io.frame(&d)[range];
                let ends = (conn, self.pipe.config().core, dst);
                match to_core_stream(self.core_out.as_ref(), ends, msg) {
                    Ok(()) => {
                        self.core_queued = true;
                        self.pipe.stats.core_stream_out += 1;
                    }
                    Err(why) => {
                        // (the pipeline counted it forwarded)
                        self.pipe.stats.forwarded -= 1;
                        self.pipe.stats.drop(why);
                    }
                }
            }
            Verdict::HandedOver => {}
            Verdict::Punted => self.pipe.stats.punted += 1,
            Verdict::Drop(why) => self.pipe.stats.drop(why),
        }
        self.freed.push(d);
        self.streams
            .flush(&mut self.io, sas, &mut self.tx, &mut self.pipe.stats);
    }

    /// The TCP's part of a batch: its timers, the messages it framed through the SIP stage,
    /// then every IP packet it produced onto the TX batch.
    fn stream_pass(&mut self, sas: Option<&ReadGuard<'_>>, now: Instant) {
        self.streams.run_timers(now, sas);
        let mut framed = std::mem::take(&mut self.framed);
        self.streams
            .take_messages(&mut self.io, now, &mut framed, &mut self.pipe.stats);
        for f in framed.drain(..) {
            // the set's SA1 must still be the set's: its registration and ports
            let entry = sas
                .and_then(|g| g.inbound(f.spi))
                .filter(|e| crate::dataplane::streams::set_id(e) == f.set);
            let (Some(g), Some(e)) = (sas, entry) else {
                self.pipe.stats.drop(DropReason::NotRegistered);
                self.freed.push(f.desc);
                continue;
            };
            let frame = self.io.frame(&f.desc);
            let at = f.desc.start as usize..f.desc.end as usize;
            let v = self.pipe.handle_stream(frame, at, e, g);
            self.settle(f.desc, v, now, sas);
        }
        self.framed = framed;
        self.streams
            .flush(&mut self.io, sas, &mut self.tx, &mut self.pipe.stats);
    }

    /// The messages the core TCP thread framed for this worker (at most one batch's worth):
    /// each into a frame of its own, then the SIP stage as a message from the core.
    fn drain_core(&mut self, q: &MsgQueue, sas: Option<&ReadGuard<'_>>, now: Instant) {
        for _ in 0..self.batch {
            let Some(m) = q.pop() else {
                break;
            };
            let conn = match m.protection {
                Protection::CoreStream { conn } => conn,
                _ => crate::dataplane::queue::NO_CONN,
            };
            let placed = message_frame(&mut self.io, Side::Core, m.bytes());
            let src = m.src;
            q.recycle(m);
            let d = match placed {
                Ok(d) => d,
                Err(why) => {
                    self.pipe.stats.drop(why);
                    continue;
                }
            };
            let frame = self.io.frame(&d);
            let at = d.start as usize..d.end as usize;
            let v = self.pipe.handle_core_stream(frame, at, (src, conn), sas);
            self.settle(d, v, now, sas);
        }
    }

    /// Send what the registration thread (`inject`) or the other workers (`handover`) queued
    /// for this worker in `q` (at most one batch's worth).
    fn drain_inject(&mut self, q: &MsgQueue, sas: Option<&ReadGuard<'_>>, now: Instant) {
        for _ in 0..self.batch {
            let Some(m) = q.pop() else {
                break;
            };
            match m.protection {
                Protection::Stream { .. } => {
                    // on a connection of the UE's TCP, which this worker holds: the outbound SA
                    // of the flow names the set and the connection (the registration thread's
                    // answer to a REGISTER that came on it, or another worker's hand-over)
                    let sent = sas
                        .and_then(|g| g.outbound(m.dst.ip(), m.dst.port(), m.src.port()))
                        .ok_or(DropReason::StreamLost)
                        .and_then(|e| self.streams.send(e, m.src.ip(), m.bytes(), now));
                    match sent {
                        Ok(()) => {
                            self.pipe.stats.injected += 1;
                            self.pipe.stats.stream_out += 1;
                        }
                        Err(_) => self.pipe.stats.inject_dropped += 1,
                    }
                    q.recycle(m);
                    self.streams
                        .flush(&mut self.io, sas, &mut self.tx, &mut self.pipe.stats);
                    continue;
                }
                Protection::Segment { spi } => {
                    // a segment another worker received for the UE's TCP, which this one holds
                    let took = sas
                        .and_then(|g| g.inbound(spi))
                        .ok_or(DropReason::UnknownSpi)
                        .and_then(|e| self.streams.segment(e, m.dst.ip(), m.bytes(), now));
                    match took {
                        Ok(()) => self.pipe.stats.tcp_segments += 1,
                        Err(why) => self.pipe.stats.drop(why),
                    }
                    q.recycle(m);
                    self.streams
                        .flush(&mut self.io, sas, &mut self.tx, &mut self.pipe.stats);
                    continue;
                }
                Protection::CoreStream { conn } => {
                    // the registration thread's message for the core over TCP
                    match to_core_stream(self.core_out.as_ref(), (conn, m.src, m.dst), m.bytes()) {
                        Ok(()) => {
                            self.core_queued = true;
                            self.pipe.stats.injected += 1;
                            self.pipe.stats.core_stream_out += 1;
                        }
                        Err(_) => self.pipe.stats.inject_dropped += 1,
                    }
                    q.recycle(m);
                    continue;
                }
                Protection::Plain | Protection::Protected { .. } => {}
            }
            match self.send_injected(&m, sas) {
                Ok(d) => {
                    self.pipe.stats.injected += 1;
                    self.tx.push(d);
                }
                Err(_) => self.pipe.stats.inject_dropped += 1,
            }
            q.recycle(m);
        }
    }

    /// One injected message: into a fresh frame, IP + UDP headers, and ESP when it goes over
    /// the UE's SA (the outbound SA of its flow: our port → the UE's port, TS 33.203 §7.1).
    fn send_injected(&mut self, m: &Msg, sas: Option<&ReadGuard<'_>>) -> Result<Desc, DropReason> {
        let over = match m.protection {
            Protection::Plain => None,
            // (taken on the worker's TCP before: drain_inject)
            Protection::Stream { .. }
            | Protection::Segment { .. }
            | Protection::CoreStream { .. } => {
                return Err(DropReason::StreamLost);
            }
            Protection::Protected { .. } => {
                let e = sas.and_then(|g| g.outbound(m.dst.ip(), m.dst.port(), m.src.port()));
                Some(e.ok_or(DropReason::NoRoute)?.sa().as_ref())
            }
        };
        let d = originate(&mut self.io, m.side, m.bytes(), (m.src, m.dst), over)?;
        self.pipe.stats.esp_out += u64::from(over.is_some());
        Ok(d)
    }
}
