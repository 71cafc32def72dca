//! Per-worker, per-stage counters and the rx-to-tx latency histogram.
//!
//! Owns: what a worker counts. The worker counts in plain integers (no atomic per packet) and
//! publishes a snapshot into [`SharedStats`] once per batch with relaxed stores; the control
//! thread reads and sums the snapshots. Drops are counted by [`DropReason`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::esp::EspError;
use crate::sip::rules::DialogError;

/// Reasons a dialog rule refused a message: every [`DialogError`], and a last one for a dialog
/// whose flow tokens verify but name another UE's registration ("other_registration").
pub const DIALOG_REFUSALS: usize = DialogError::NAMES.len() + 1;

/// The name of refusal reason `i` (`WorkerStats::dialog_refusals`).
pub fn dialog_refusal_name(i: usize) -> &'static str {
    DialogError::NAMES
        .get(i)
        .copied()
        .unwrap_or("other_registration")
}

/// A latency histogram in nanoseconds: 1 ns to 10 s, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Why a worker dropped a packet. One counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// Not UDP or ESP, a fragment, or a malformed IP header.
    NotIpUdpEsp = 0,
    /// UDP to a port we do not serve, or to an address that is not ours.
    NotForUs,
    BadUdpChecksum,
    /// The SIP message did not parse or failed validation (a 400 went back when possible).
    BadSip,
    /// ESP with an SPI we do not know.
    UnknownSpi,
    /// ESP that failed its integrity check.
    EspIcv,
    /// ESP replayed or too old for the window.
    EspReplay,
    /// Other ESP errors (truncated, bad padding, dummy, selector mismatch).
    EspOther,
    /// The registration thread's queue was full.
    PuntFull,
    /// No next hop for the message (no I-CSCF, a Via we cannot route back to).
    NoRoute,
    /// Max-Forwards reached zero (a 483 went back when possible).
    TooManyHops,
    /// A response whose top Via is not ours: another sent-by, or a branch that does not verify
    /// (RFC 3261 §18.1.2).
    NotOurVia,
    /// No headroom/tailroom or frame for a rewrite.
    NoRoom,
    /// A request over an SA whose UE is not (yet) registered, or an ACK from the core for a UE
    /// with no SA set (other such requests are answered: `WorkerStats::ue_unreachable`).
    NotRegistered,
    /// Received packets bigger than a frame (a jumbo-MTU link), dropped by the backend before
    /// the worker saw them (the backend's `IoStats::rx_oversize`).
    Oversize,
    /// Datagrams the kernel dropped because our socket's receive queue was full: the worker did
    /// not keep up (socket backend, `SO_RXQ_OVFL`; the backend's `IoStats::rx_queue_overflow`).
    QueueOverflow,
    /// A request addressed to us that takes no answer (an ACK, RFC 3261 §17.2.3), or whose
    /// answer would be larger than it (an unverified source: no amplification); a response
    /// with no Via left but ours, meant for us (RFC 3261 §16.7 step 3).
    ToUs,
    /// An ACK inside a dialog that is not the sending UE's (its route set lacks our flow tokens,
    /// carries forged or spliced ones, or names another UE's registration: an ACK takes no
    /// answer, RFC 3261 §17.1.1.3), or a response to a dialog-creating request whose
    /// Record-Route we did not write. Other such requests get a 403
    /// (`WorkerStats::dialog_refused`).
    ForeignDialog,
    /// A TCP segment inside a UE's SA that the worker's TCP refused: ports off the SA's
    /// selectors or the set's two connections, an address not the set's, or a set beyond the
    /// worker's limit (`dataplane::streams`).
    TcpRefused,
    /// A message for a UE's TCP connection that is gone, never opened, or whose send buffer is
    /// full (the UE has not read what we sent), or that another worker could not hand over.
    StreamLost,
    /// A message for the core over TCP that the core TCP thread's queue had no room for (or
    /// with no core TCP at all: a worker built without it).
    CoreStreamLost,
    /// A response for a UE whose request came over an SA set that is gone since (replaced by a
    /// re-registration and expired, or ended with the registration): nothing goes out in the
    /// clear or over another set; the UE retransmits its request over its current set. (A
    /// forged branch naming an SPI we do not have counts here too: its MAC binds the UE's
    /// address, which only the set would give.)
    SetGone,
    /// An ESP packet toward a UE whose SA reached the sequence-number ceiling the persisted
    /// state covers (`esp::Sa::set_seq_ceiling`): held back until the registration thread has
    /// written a higher one (or the store is failing: the log says so). Never a number twice.
    EspSeqCeiling,
}

pub const DROP_REASONS: usize = 23;

impl DropReason {
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::NotIpUdpEsp,
        DropReason::NotForUs,
        DropReason::BadUdpChecksum,
        DropReason::BadSip,
        DropReason::UnknownSpi,
        DropReason::EspIcv,
        DropReason::EspReplay,
        DropReason::EspOther,
        DropReason::PuntFull,
        DropReason::NoRoute,
        DropReason::TooManyHops,
        DropReason::NotOurVia,
        DropReason::NoRoom,
        DropReason::NotRegistered,
        DropReason::Oversize,
        DropReason::QueueOverflow,
        DropReason::ToUs,
        DropReason::ForeignDialog,
        DropReason::TcpRefused,
        DropReason::StreamLost,
        DropReason::CoreStreamLost,
        DropReason::SetGone,
        DropReason::EspSeqCeiling,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::NotIpUdpEsp => "not_ip_udp_esp",
            DropReason::NotForUs => "not_for_us",
            DropReason::BadUdpChecksum => "bad_udp_checksum",
            DropReason::BadSip => "bad_sip",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::EspIcv => "esp_icv",
            DropReason::EspReplay => "esp_replay",
            DropReason::EspOther => "esp_other",
            DropReason::PuntFull => "punt_full",
            DropReason::NoRoute => "no_route",
            DropReason::TooManyHops => "too_many_hops",
            DropReason::NotOurVia => "not_our_via",
            DropReason::NoRoom => "no_room",
            DropReason::NotRegistered => "not_registered",
            DropReason::Oversize => "oversize",
            DropReason::QueueOverflow => "queue_overflow",
            DropReason::ToUs => "to_us",
            DropReason::ForeignDialog => "foreign_dialog",
            DropReason::TcpRefused => "tcp_refused",
            DropReason::StreamLost => "stream_lost",
            DropReason::CoreStreamLost => "core_stream_lost",
            DropReason::SetGone => "set_gone",
            DropReason::EspSeqCeiling => "esp_seq_ceiling",
        }
    }
}

/// The one mapping from an ESP refusal to a drop reason: authentication and replay failures
/// apart (an operator tells an attack from a key mismatch by them), no room as no room, the rest
/// as `esp_other`.
impl From<EspError> for DropReason {
    fn from(e: EspError) -> Self {
        match e {
            EspError::IcvMismatch => DropReason::EspIcv,
            EspError::Replayed | EspError::TooOld => DropReason::EspReplay,
            EspError::NoRoom | EspError::TooBig => DropReason::NoRoom,
            EspError::SeqCeiling => DropReason::EspSeqCeiling,
            _ => DropReason::EspOther,
        }
    }
}

/// A worker's counters, by stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub batches: u64,
    pub rx: u64,
    pub tx: u64,
    /// Packets through each stage.
    pub classify: u64,
    pub esp_in: u64,
    pub sip: u64,
    pub esp_out: u64,
    pub forwarded: u64,
    pub punted: u64,
    /// SIP responses the worker generated (4xx for bad requests).
    pub replied: u64,
    /// Requests inside a dialog refused with 403 because the dialog is not the sending UE's
    /// (also counted in `replied`; an ACK or a response refused so is a
    /// [`DropReason::ForeignDialog`] drop).
    pub dialog_refused: u64,
    /// Requests from the core for a UE we cannot reach, answered 404 (the Request-URI is no
    /// contact address) or 480 (no SA set at that contact; RFC 3261 §16.5); also counted in
    /// `replied` (an ACK so is a [`DropReason::NotRegistered`] drop).
    pub ue_unreachable: u64,
    /// Every message a dialog rule refused — requests answered 403/400/500, ACKs and
    /// responses dropped — by reason ([`dialog_refusal_name`]).
    pub dialog_refusals: [u64; DIALOG_REFUSALS],
    /// Dialog events (an INVITE that starts a dialog, its final responses, requests inside a
    /// dialog) copied to the registration thread, and those lost to a full queue: a lost one
    /// may leave a call that a de-registration cannot release (TS 24.229 §5.2.8).
    pub dialog_events: u64,
    pub dialog_events_lost: u64,
    /// Messages the registration thread had this worker send, and those it could not (no
    /// frame, no outbound SA); kept apart from `drops`, which count received packets.
    pub injected: u64,
    pub inject_dropped: u64,
    /// Received TCP segments (inside a UE's SA) that the worker's TCP took.
    pub tcp_segments: u64,
    /// SIP messages taken whole from UEs' TCP connections inside their SAs (each then counted
    /// like a received message: forwarded, punted, replied or dropped), and messages queued on
    /// them (answers, the core's responses; `dataplane::streams`).
    pub stream_in: u64,
    pub stream_out: u64,
    /// Messages for a UE's connection that another worker holds, handed to it.
    pub handed_over: u64,
    /// What the worker's TCP (`tcp::HostStats`) counted: connections reset for a framing
    /// error (no Content-Length, two that differ, too large) or for a message that did not
    /// arrive whole in time (a slow sender), keep-alive pings answered, sets refused (the
    /// worker's limit).
    pub tcp_framing_errors: u64,
    pub tcp_slow_messages: u64,
    pub tcp_pings: u64,
    pub tcp_sets_refused: u64,
    /// SIP messages that came from the core over TCP (the core TCP thread framed them), and
    /// messages handed to it to send to the core over TCP (RFC 3261 §18.1.1: too large for a
    /// datagram, or a next hop that asks for TCP; a response to a request that came so).
    pub core_stream_in: u64,
    pub core_stream_out: u64,
    pub drops: [u64; DROP_REASONS],
    /// Time spent processing batches (ns), to derive ns per packet.
    pub busy_ns: u64,
}

impl WorkerStats {
    #[inline]
    pub fn drop(&mut self, why: DropReason) {
        self.drops[why as usize] += 1;
    }

    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub fn add(&mut self, o: &WorkerStats) {
        self.batches += o.batches;
        self.rx += o.rx;
        self.tx += o.tx;
        self.classify += o.classify;
        self.esp_in += o.esp_in;
        self.sip += o.sip;
        self.esp_out += o.esp_out;
        self.forwarded += o.forwarded;
        self.punted += o.punted;
        self.replied += o.replied;
        self.dialog_refused += o.dialog_refused;
        self.ue_unreachable += o.ue_unreachable;
        for (a, b) in self.dialog_refusals.iter_mut().zip(o.dialog_refusals) {
            *a += b;
        }
        self.dialog_events += o.dialog_events;
        self.dialog_events_lost += o.dialog_events_lost;
        self.injected += o.injected;
        self.inject_dropped += o.inject_dropped;
        self.tcp_segments += o.tcp_segments;
        self.stream_in += o.stream_in;
        self.stream_out += o.stream_out;
        self.handed_over += o.handed_over;
        self.tcp_framing_errors += o.tcp_framing_errors;
        self.tcp_slow_messages += o.tcp_slow_messages;
        self.tcp_pings += o.tcp_pings;
        self.tcp_sets_refused += o.tcp_sets_refused;
        self.core_stream_in += o.core_stream_in;
        self.core_stream_out += o.core_stream_out;
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        self.busy_ns += o.busy_ns;
    }

    /// Every counter but `drops` and `dialog_refusals`, as a metrics family: its name (the
    /// exposition adds `_total`), its help text, its value. The destructuring names each field,
    /// so a counter added to the struct and not here does not compile.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 27] {
        let WorkerStats {
            batches,
            rx,
            tx,
            classify,
            esp_in,
            sip,
            esp_out,
            forwarded,
            punted,
            replied,
            dialog_refused,
            ue_unreachable,
            dialog_refusals: _,
            dialog_events,
            dialog_events_lost,
            injected,
            inject_dropped,
            tcp_segments,
            stream_in,
            stream_out,
            handed_over,
            tcp_framing_errors,
            tcp_slow_messages,
            tcp_pings,
            tcp_sets_refused,
            core_stream_in,
            core_stream_out,
            drops: _,
            busy_ns,
        } = *self;
        [
            (
                "pcscf_batches",
                "Batches of received packets the worker processed.",
                batches,
            ),
            ("pcscf_rx_packets", "Packets the worker received.", rx),
            ("pcscf_tx_packets", "Packets the worker sent.", tx),
            (
                "pcscf_stage_classify_packets",
                "Packets through the classify stage.",
                classify,
            ),
            (
                "pcscf_stage_esp_in_packets",
                "Packets through ESP decapsulation.",
                esp_in,
            ),
            (
                "pcscf_stage_sip_packets",
                "Packets through the SIP stage.",
                sip,
            ),
            (
                "pcscf_stage_esp_out_packets",
                "Packets through ESP encapsulation.",
                esp_out,
            ),
            (
                "pcscf_forwarded_packets",
                "SIP messages relayed (UE to core or core to UE).",
                forwarded,
            ),
            (
                "pcscf_punted_packets",
                "Messages handed to the registration thread.",
                punted,
            ),
            (
                "pcscf_replied_packets",
                "SIP responses the worker generated itself.",
                replied,
            ),
            (
                "pcscf_dialog_refused_requests",
                "Requests inside a dialog refused with 403: the dialog is not the sender's.",
                dialog_refused,
            ),
            (
                "pcscf_ue_unreachable_requests",
                "Requests from the core for a UE we cannot reach (404 or 480).",
                ue_unreachable,
            ),
            (
                "pcscf_dialog_events",
                "Dialog events copied to the registration thread.",
                dialog_events,
            ),
            (
                "pcscf_dialog_events_lost",
                "Dialog events lost to a full queue (calls a de-registration may not release).",
                dialog_events_lost,
            ),
            (
                "pcscf_injected_packets",
                "Messages the registration thread had the worker send.",
                injected,
            ),
            (
                "pcscf_inject_dropped_packets",
                "Messages of the registration thread the worker could not send.",
                inject_dropped,
            ),
            (
                "pcscf_tcp_segments",
                "TCP segments inside UEs' SAs the worker's TCP took.",
                tcp_segments,
            ),
            (
                "pcscf_stream_in_messages",
                "SIP messages taken from UEs' TCP connections.",
                stream_in,
            ),
            (
                "pcscf_stream_out_messages",
                "SIP messages queued on UEs' TCP connections.",
                stream_out,
            ),
            (
                "pcscf_handed_over_messages",
                "Messages handed to the worker holding the UE's TCP connection.",
                handed_over,
            ),
            (
                "pcscf_tcp_framing_errors",
                "UE TCP connections reset for a framing error.",
                tcp_framing_errors,
            ),
            (
                "pcscf_tcp_slow_messages",
                "UE TCP connections reset for a message not whole in time.",
                tcp_slow_messages,
            ),
            (
                "pcscf_tcp_pings",
                "Keep-alive pings answered on UE TCP connections.",
                tcp_pings,
            ),
            (
                "pcscf_tcp_sets_refused",
                "SA sets refused a TCP connection (the worker's limit).",
                tcp_sets_refused,
            ),
            (
                "pcscf_core_stream_in_messages",
                "SIP messages from the core over TCP.",
                core_stream_in,
            ),
            (
                "pcscf_core_stream_out_messages",
                "SIP messages handed to the core TCP thread.",
                core_stream_out,
            ),
            (
                "pcscf_busy_ns",
                "Nanoseconds the worker spent processing batches.",
                busy_ns,
            ),
        ]
    }
}

/// The counters of [`WorkerStats`] that [`SharedStats`] carries besides `drops`.
const FIELDS: usize = 27;

/// Where a worker publishes its counters for the control thread: one atomic per field, relaxed
/// stores once per batch, so a reader sees each counter monotonic (not a consistent cut).
#[derive(Debug)]
pub struct SharedStats {
    fields: [AtomicU64; FIELDS + DROP_REASONS + DIALOG_REFUSALS],
    /// rx-to-tx latency of this worker's batches (ns, one sample per packet). The worker merges
    /// its local histogram in with `try_lock` every ~100 ms and never waits for it.
    latency: Mutex<Histogram<u64>>,
}

impl Default for SharedStats {
    fn default() -> Self {
        SharedStats {
            fields: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Mutex::new(new_histogram()),
        }
    }
}

impl SharedStats {
    pub fn publish(&self, s: &WorkerStats) {
        let vals: [u64; FIELDS] = [
            s.batches,
            s.rx,
            s.tx,
            s.classify,
            s.esp_in,
            s.sip,
            s.esp_out,
            s.forwarded,
            s.punted,
            s.replied,
            s.busy_ns,
            s.injected,
            s.inject_dropped,
            s.dialog_refused,
            s.ue_unreachable,
            s.dialog_events,
            s.dialog_events_lost,
            s.stream_in,
            s.stream_out,
            s.handed_over,
            s.tcp_segments,
            s.tcp_framing_errors,
            s.tcp_slow_messages,
            s.tcp_pings,
            s.tcp_sets_refused,
            s.core_stream_in,
            s.core_stream_out,
        ];
        let all = vals.iter().chain(&s.drops).chain(&s.dialog_refusals);
        for (f, v) in self.fields.iter().zip(all) {
            f.store(*v, Ordering::Relaxed);
        }
    }

    /// Worker side: fold `local` into the shared histogram if nobody holds it, then clear it.
    /// Returns whether it was merged (if not, the worker keeps counting and tries later).
    pub fn try_merge_latency(&self, local: &mut Histogram<u64>) -> bool {
        match self.latency.try_lock() {
            Ok(mut h) => {
                // Same bounds on both sides: `add` does not allocate.
                let _ = h.add(&*local);
                local.reset();
                true
            }
            Err(_) => false,
        }
    }

    /// Control side: a copy of the latency histogram so far.
    /// [`SharedStats::latency`] unless a worker holds it at this moment (for the control
    /// socket, which must not wait on a worker).
    pub fn try_latency(&self) -> Option<Histogram<u64>> {
        match self.latency.try_lock() {
            Ok(h) => Some(h.clone()),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner().clone()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    pub fn latency(&self) -> Histogram<u64> {
        match self.latency.lock() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn snapshot(&self) -> WorkerStats {
        let v = |i: usize| self.fields[i].load(Ordering::Relaxed);
        let mut s = WorkerStats {
            batches: v(0),
            rx: v(1),
            tx: v(2),
            classify: v(3),
            esp_in: v(4),
            sip: v(5),
            esp_out: v(6),
            forwarded: v(7),
            punted: v(8),
            replied: v(9),
            busy_ns: v(10),
            injected: v(11),
            inject_dropped: v(12),
            dialog_refused: v(13),
            ue_unreachable: v(14),
            dialog_events: v(15),
            dialog_events_lost: v(16),
            stream_in: v(17),
            stream_out: v(18),
            handed_over: v(19),
            tcp_segments: v(20),
            tcp_framing_errors: v(21),
            tcp_slow_messages: v(22),
            tcp_pings: v(23),
            tcp_sets_refused: v(24),
            core_stream_in: v(25),
            core_stream_out: v(26),
            ..WorkerStats::default()
        };
        for (i, d) in s.drops.iter_mut().enumerate() {
            *d = v(FIELDS + i);
        }
        for (i, d) in s.dialog_refusals.iter_mut().enumerate() {
            *d = v(FIELDS + DROP_REASONS + i);
        }
        s
    }
}
