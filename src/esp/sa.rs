//! One ESP security association, transport mode, 32-bit sequence numbers (3GPP IMS uses no ESN):
//! outbound encapsulation in a caller's frame buffer and inbound verification/decryption in
//! place. All per-packet methods take `&self` (sequence counter and replay window are atomics),
//! allocate nothing and never panic.

use super::alg::Suite;
use super::backend::BackendKind;
use super::error::EspError;
use super::keys::EspKeys;
use super::packet;
use super::replay::{DEFAULT_WINDOW, ReplayWindow};
use super::xform::{AnyXform, new_xform};
use crate::wire::protocol::{ESP as PROTO_ESP, NO_NEXT as PROTO_NONE};
use core::fmt;
use core::ops::Range;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Length of SPI + sequence number.
pub const ESP_HEADER_LEN: usize = 8;

/// Options for building an SA.
#[derive(Clone, Copy, Debug)]
pub struct SaOptions {
    /// Replay window in packets, 64..=1024 (rounded up to a multiple of 32).
    pub window: u32,
    /// Crypto library.
    pub backend: BackendKind,
}

impl Default for SaOptions {
    fn default() -> Self {
        SaOptions {
            window: DEFAULT_WINDOW,
            backend: BackendKind::default(),
        }
    }
}

/// A frame buffer holding one IP packet at `buf[start..end]`, with headroom before `start` and
/// tailroom after `end`. [`Sa::outbound`] grows the packet into both and updates the bounds.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The whole buffer.
    pub buf: &'a mut [u8],
    /// First byte of the IP header.
    pub start: usize,
    /// One past the last byte of the packet.
    pub end: usize,
}

impl<'a> Frame<'a> {
    /// A frame; the packet is `buf[start..end]`.
    pub fn new(buf: &'a mut [u8], start: usize, end: usize) -> Self {
        Frame { buf, start, end }
    }

    /// The packet bytes (empty if the bounds are inconsistent).
    pub fn packet(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or(&[])
    }
}

/// An accepted inbound ESP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Its sequence number.
    pub seq: u32,
    /// Next Header from the trailer: 17 UDP, 6 TCP, …
    pub next_header: u8,
    /// The decrypted inner payload (e.g. the UDP header and data), as a range of the buffer.
    pub payload: Range<usize>,
}

/// Bytes an SA adds around an IP payload (RFC 4303 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overhead {
    /// In front of the payload: the ESP header and the IV.
    pub head: usize,
    /// Behind it: padding, Pad Length, Next Header and the ICV.
    pub tail: usize,
}

/// What an SA of `suite` adds around an IP payload of `payload_len` bytes.
pub fn overhead(suite: Suite, payload_len: usize) -> Overhead {
    let align = suite.align();
    let pad = (align - (payload_len + 2) % align) % align;
    Overhead {
        head: ESP_HEADER_LEN + suite.iv_len(),
        tail: pad + 2 + suite.icv_len(),
    }
}

/// The explicit 8-byte GCM/GMAC IV of an outbound packet: `SPI ‖ seq`.
///
/// RFC 4106 §3.1 and RFC 4543 §3.1: an IV must never repeat under one key. The four SAs of a
/// TS 33.203 set share the key and salt (Annex I), so the counter alone would repeat across our
/// two outbound SAs and against a peer counting the same way. With the SPI in the top half,
/// our IVs are unique per key as long as the set's outbound SPIs differ from each other and
/// from the peer's outbound SPIs (see [`outbound_ivs_disjoint`]), and they never equal the
/// `0 ‖ seq` IVs of a peer that sends the zero-extended counter, since an SPI is never 0
/// (RFC 4303 §2.1). The receiver takes the IV from the packet, so any sender scheme decrypts.
/// `seq` is 32 bits: an SA never sends past 2^32 - 1 (RFC 4303 §3.3.3, no ESN).
pub fn aead_iv(spi: u32, seq: u32) -> [u8; 8] {
    let mut iv = [0u8; 8];
    iv[..4].copy_from_slice(&spi.to_be_bytes());
    iv[4..].copy_from_slice(&seq.to_be_bytes());
    iv
}

/// Whether the SPIs of a TS 33.203 set keep every [`aead_iv`] unique under the set's one key:
/// `ours` are the SPIs we receive on (spi-c, spi-s of our Security-Server, the UE's outbound
/// SAs), `theirs` the UE's (Security-Client spi-c, spi-s, our outbound SAs). Ours send with
/// the UE's SPIs, so those must be nonzero and distinct (else SA2 and SA3 repeat each other),
/// and differ from ours (else a UE that uses `SPI ‖ seq` as well repeats our IVs).
pub fn outbound_ivs_disjoint(ours: [u32; 2], theirs: [u32; 2]) -> bool {
    let [t1, t2] = theirs;
    t1 != 0 && t2 != 0 && t1 != t2 && !ours.contains(&t1) && !ours.contains(&t2)
}

/// One ESP SA. Key material lives in the expanded key schedules (zeroised on drop by the crypto
/// crates) and is never shown by `Debug`; SAs made with [`Sa::sibling`] share it.
pub struct Sa {
    spi: u32,
    suite: Suite,
    backend: BackendKind,
    xform: AnyXform,
    /// Last sequence number handed out (outbound).
    seq: AtomicU64,
    /// The highest sequence number this SA may send (`u32::MAX` unless the state is persisted:
    /// [`Sa::set_seq_ceiling`]).
    ceiling: AtomicU32,
    replay: ReplayWindow,
}

impl fmt::Debug for Sa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("alg", &self.suite.integ().token())
            .field("ealg", &self.suite.enc().token())
            .field("backend", &self.backend.name())
            .field("window", &self.replay.size())
            .finish_non_exhaustive()
    }
}

impl Sa {
    /// Builds an SA from explicit keys. SPI 0 is refused (RFC 4303 §2.1).
    pub fn new(spi: u32, suite: Suite, keys: &EspKeys, opts: SaOptions) -> Result<Self, EspError> {
        if spi == 0 {
            return Err(EspError::BadSpi);
        }
        let xform = new_xform(opts.backend, suite, keys)?;
        Ok(Sa {
            spi,
            suite,
            backend: opts.backend,
            xform,
            seq: AtomicU64::new(0),
            ceiling: AtomicU32::new(u32::MAX),
            replay: ReplayWindow::new(opts.window)?,
        })
    }

    /// A new SA with another SPI and the same algorithms and keys, sharing this one's expanded key
    /// state (TS 33.203 Annex I: the four SAs of a set use the same CK_ESP/IK_ESP), with its own
    /// sequence counter and replay window.
    pub fn sibling(&self, spi: u32) -> Result<Self, EspError> {
        if spi == 0 {
            return Err(EspError::BadSpi);
        }
        Ok(Sa {
            spi,
            suite: self.suite,
            backend: self.backend,
            xform: self.xform.clone(),
            seq: AtomicU64::new(0),
            ceiling: AtomicU32::new(u32::MAX),
            replay: ReplayWindow::new(self.replay.size())?,
        })
    }

    /// Builds an SA from the Security-Client/Server tokens and the AKA CK/IK, deriving the ESP
    /// keys per TS 33.203 Annex I (see [`EspKeys::derive`]).
    pub fn from_aka(
        spi: u32,
        alg: &str,
        ealg: &str,
        ck: &[u8; 16],
        ik: &[u8; 16],
        opts: SaOptions,
    ) -> Result<Self, EspError> {
        Sa::from_aka_suite(spi, Suite::from_tokens(alg, ealg)?, ck, ik, opts)
    }

    /// [`Sa::from_aka`] for a suite already parsed (the registrar's, from the Security-Client
    /// offer): derives the ESP keys per TS 33.203 Annex I.
    pub fn from_aka_suite(
        spi: u32,
        suite: Suite,
        ck: &[u8; 16],
        ik: &[u8; 16],
        opts: SaOptions,
    ) -> Result<Self, EspError> {
        let keys = EspKeys::derive(suite, ck, ik);
        Sa::new(spi, suite, &keys, opts)
    }

    /// The SPI (network order on the wire).
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The algorithms.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The crypto backend.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// The last outbound sequence number used (0 = none yet).
    pub fn last_seq_sent(&self) -> u64 {
        self.seq.load(Ordering::Relaxed).min(u64::from(u32::MAX))
    }

    /// Test hook: pretend `n` packets were sent (to exercise [`EspError::SeqExhausted`]).
    #[doc(hidden)]
    pub fn force_last_seq_sent(&self, n: u32) {
        self.seq.store(u64::from(n), Ordering::Relaxed);
    }

    /// Starts the outbound counter after `n` (an SA restored from persisted state: `n` is at
    /// least every number it may have sent before, RFC 4303 §3.3.3 forbids sending one twice).
    pub fn resume_after(&self, n: u32) {
        self.seq.store(u64::from(n), Ordering::Relaxed);
    }

    /// The highest sequence number this SA may send: past it [`Sa::outbound`] refuses with
    /// [`EspError::SeqCeiling`]. The registration thread raises it only after the new value is
    /// persisted, so a restart that resumes after the persisted ceiling never repeats a number
    /// (nor a GCM/GMAC IV, RFC 4106 §3.1).
    pub fn set_seq_ceiling(&self, n: u32) {
        self.ceiling.store(n, Ordering::Release);
    }

    /// Raises the ceiling to `n` unless it is higher already (raises written out of order
    /// never lower it).
    pub fn raise_seq_ceiling(&self, n: u32) {
        self.ceiling.fetch_max(n, Ordering::AcqRel);
    }

    /// The ceiling ([`Sa::set_seq_ceiling`]).
    pub fn seq_ceiling(&self) -> u32 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// The highest inbound sequence number accepted (0 = none yet).
    pub fn highest_seq_received(&self) -> u64 {
        self.replay.highest()
    }

    /// The replay window.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Inbound processing of the ESP packet at `buf[esp]` (SPI through ICV), RFC 4303 §3.4 in
    /// order: replay pre-check (§3.4.3), ICV check (§3.4.4), decryption in place (§3.4.2),
    /// padding check (§2.4), and only then the replay window update (§3.4.3). Returns the
    /// inner payload's range; [`EspError::Dummy`] for next header 59 (§2.6: drop silently).
    pub fn inbound(&self, buf: &mut [u8], esp: Range<usize>) -> Result<Inbound, EspError> {
        let base = esp.start;
        let pkt = buf.get_mut(esp).ok_or(EspError::Truncated)?;
        let iv_len = self.suite.iv_len();
        let icv_len = self.suite.icv_len();
        if pkt.len() < ESP_HEADER_LEN + iv_len + 2 + icv_len {
            return Err(EspError::Truncated);
        }
        let spi = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        if spi != self.spi {
            return Err(EspError::SpiMismatch);
        }
        let seq = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        let body_start = ESP_HEADER_LEN + iv_len;
        let body_end = pkt.len() - icv_len;
        let bs = self.suite.block_len();
        if !(body_end - body_start).is_multiple_of(bs) {
            return Err(EspError::Misaligned);
        }
        // §3.4.3: cheap check before spending crypto.
        self.replay.precheck(seq)?;
        // §3.4.4 then §3.4.2: ICV first (constant time), then decrypt.
        self.xform.open(pkt, iv_len, icv_len)?;
        // §2.4: Pad Length must fit, pad bytes must be 1, 2, 3, ...
        let nh = pkt[body_end - 1];
        let pad_len = usize::from(pkt[body_end - 2]);
        let trailer = body_end - 2;
        if body_start + pad_len > trailer {
            return Err(EspError::BadPadding);
        }
        let pad_start = trailer - pad_len;
        if pkt[pad_start..trailer]
            .iter()
            .enumerate()
            .any(|(i, &b)| usize::from(b) != i + 1)
        {
            return Err(EspError::BadPadding);
        }
        // §3.4.3: only an authentic packet moves the window.
        self.replay.check_and_set(seq)?;
        if nh == PROTO_NONE {
            return Err(EspError::Dummy);
        }
        if pad_start == body_start {
            return Err(EspError::EmptyPayload);
        }
        Ok(Inbound {
            seq,
            next_header: nh,
            payload: base + body_start..base + pad_start,
        })
    }

    /// [`Sa::inbound`] on a whole IP packet (`pkt` starts at the IPv4/IPv6 header); ESP is found
    /// by walking the headers.
    pub fn inbound_ip(&self, pkt: &mut [u8]) -> Result<Inbound, EspError> {
        let l = packet::locate_esp(pkt)?;
        self.inbound(pkt, l.body())
    }

    /// Inbound processing that also rebuilds the inner IP packet in place (RFC 4303 §3.4 step 6
    /// of RFC 4303 §3.4, transport mode): the outer header moves forward over the ESP header, its protocol becomes the
    /// Next Header and lengths/checksum are fixed. Returns the inner packet's range in `pkt`
    /// and the accepted packet's details (whose `payload` is relative to `pkt` as well).
    pub fn decapsulate(&self, pkt: &mut [u8]) -> Result<(Range<usize>, Inbound), EspError> {
        let l = packet::locate_esp(pkt)?;
        let inb = self.inbound(pkt, l.body())?;
        let shift = ESP_HEADER_LEN + self.suite.iv_len();
        pkt.copy_within(0..l.header_len, shift);
        let new_len = l.header_len + inb.payload.len();
        l.rewrite(
            &mut pkt[shift..shift + l.header_len],
            inb.next_header,
            new_len,
        )?;
        Ok((shift..shift + new_len, inb))
    }

    /// Outbound processing (RFC 4303 §3.3) of the IP packet `frame.buf[frame.start..frame.end]`:
    /// the IP header (and IPv6 extension headers) moves `8 + iv_len` bytes into the headroom, the
    /// ESP header and IV go between it and the untouched payload, padding (1, 2, 3, …), Pad Length,
    /// Next Header and ICV go into the tailroom; then the payload is encrypted in place and the
    /// outer header fixed (protocol 50, lengths, IPv4 checksum). On success `frame.start/end` bound
    /// the ESP packet and the sequence number used is returned. Errors leave the frame unchanged.
    pub fn outbound(&self, frame: &mut Frame<'_>) -> Result<u32, EspError> {
        let (start, end) = (frame.start, frame.end);
        if start > end || end > frame.buf.len() {
            return Err(EspError::Truncated);
        }
        let l = packet::whole_datagram(&frame.buf[start..end])?;
        if l.protocol == PROTO_NONE && l.header_len == l.end {
            return Err(EspError::EmptyPayload);
        }
        let payload_len = l.end - l.header_len;
        if payload_len == 0 {
            return Err(EspError::EmptyPayload);
        }
        let ip_end = start + l.end;
        let iv_len = self.suite.iv_len();
        let icv_len = self.suite.icv_len();
        let Overhead { head, tail } = overhead(self.suite, payload_len);
        let pad = tail - 2 - icv_len;
        if start < head || frame.buf.len() - ip_end < tail {
            return Err(EspError::NoRoom);
        }
        let new_len = l.end + head + tail;
        let limit = if l.version() == 4 {
            0xffff
        } else {
            0xffff + 40
        };
        if new_len > limit {
            return Err(EspError::TooBig);
        }
        // §3.3.3: 1, 2, ...; without ESN the counter must not cycle.
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if seq > u64::from(u32::MAX) {
            self.seq.store(u64::from(u32::MAX), Ordering::Relaxed);
            return Err(EspError::SeqExhausted);
        }
        // (the counter stays past the ceiling: the numbers skipped were never sent; Relaxed: a
        // stale ceiling is only lower, and the ceiling guards no other memory)
        if seq > u64::from(self.ceiling.load(Ordering::Relaxed)) {
            return Err(EspError::SeqCeiling);
        }
        let seq32 = seq as u32;

        let buf = &mut *frame.buf;
        let new_start = start - head;
        buf.copy_within(start..start + l.header_len, new_start);
        let esp_off = new_start + l.header_len;
        buf[esp_off..esp_off + 4].copy_from_slice(&self.spi.to_be_bytes());
        buf[esp_off + 4..esp_off + 8].copy_from_slice(&seq32.to_be_bytes());
        let iv = &mut buf[esp_off + 8..esp_off + 8 + iv_len];
        // RFC 3602 §2: CBC IVs unpredictable (see xform.rs); RFC 4106 §3.1 / RFC 4543 §3.1: the
        // GCM/GMAC explicit IV must never repeat under the key, which all four SAs of a set
        // share (TS 33.203 Annex I): see [`aead_iv`].
        if !self.xform.fill_iv(self.spi, seq, iv)? {
            iv.copy_from_slice(&aead_iv(self.spi, seq32)[..iv_len]);
        }
        // §2.4: trailer.
        for (i, b) in buf[ip_end..ip_end + pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        buf[ip_end + pad] = pad as u8;
        buf[ip_end + pad + 1] = l.protocol;
        l.rewrite(&mut buf[new_start..esp_off], PROTO_ESP, new_len)?;
        let esp_end = ip_end + tail;
        self.xform
            .seal(&mut buf[esp_off..esp_end], iv_len, icv_len)?;
        frame.start = new_start;
        frame.end = esp_end;
        Ok(seq32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esp::{EncAlg, IntegAlg};
    use std::collections::HashSet;

    /// The explicit IV of one outbound packet of `sa` (a small IPv4/UDP packet).
    fn next_iv(sa: &Sa) -> [u8; 8] {
        let mut buf = [0u8; 256];
        let ip = [
            0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0xc4, 0x13,
            0xc5, 0, 9, 0, 0, 0x55,
        ];
        buf[64..64 + ip.len()].copy_from_slice(&ip);
        let mut f = Frame::new(&mut buf, 64, 64 + ip.len());
        sa.outbound(&mut f).unwrap();
        let esp = f.start + 20;
        f.buf[esp + 8..esp + 16].try_into().unwrap()
    }

    const AEAD: [(IntegAlg, EncAlg); 2] = [
        (IntegAlg::Null, EncAlg::AesGcm),
        (IntegAlg::AesGmac, EncAlg::Null),
    ];

    /// RFC 4106 §3.1 / RFC 4543 §3.1: the four SAs of a set share the key and salt (TS 33.203
    /// Annex I), so no IV may repeat across them. Our two outbound SAs (the UE's SPIs) and a UE
    /// that sends `SPI ‖ seq` with our SPIs, or the bare counter, never meet.
    #[test]
    fn aead_ivs_unique_across_a_set() {
        for (i, e) in AEAD {
            let suite = Suite::new(i, e).unwrap();
            for &backend in BackendKind::ALL {
                let keys = EspKeys::derive(suite, &[7; 16], &[9; 16]);
                let opts = SaOptions {
                    backend,
                    ..SaOptions::default()
                };
                let (ours, theirs) = ([0x1000, 0x1001], [0x2000_0001, 0x2000_0002]);
                assert!(outbound_ivs_disjoint(ours, theirs));
                let first = Sa::new(ours[0], suite, &keys, opts).unwrap();
                let set: Vec<Sa> = ours
                    .iter()
                    .chain(&theirs)
                    .map(|&s| first.sibling(s).unwrap())
                    .collect();
                let mut seen = HashSet::new();
                for _ in 0..2000 {
                    for sa in &set {
                        let iv = next_iv(sa);
                        assert!(seen.insert(iv), "{suite:?} {backend:?} repeats {iv:02x?}");
                    }
                }
                // a peer sending the zero-extended counter: 0 ‖ seq
                for seq in 1..=2000u64 {
                    assert!(!seen.contains(&seq.to_be_bytes()), "{suite:?} {seq}");
                }
            }
        }
    }

    /// The IV layout is `SPI ‖ seq`, big-endian, and follows the sequence number.
    #[test]
    fn aead_iv_layout() {
        assert_eq!(aead_iv(0x0102_0304, 5), [1, 2, 3, 4, 0, 0, 0, 5]);
        for (i, e) in AEAD {
            let suite = Suite::new(i, e).unwrap();
            let keys = EspKeys::derive(suite, &[1; 16], &[2; 16]);
            let sa = Sa::new(0xdead_beef, suite, &keys, SaOptions::default()).unwrap();
            assert_eq!(next_iv(&sa), [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
            assert_eq!(next_iv(&sa), [0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 2]);
            sa.force_last_seq_sent(u32::MAX - 1);
            assert_eq!(
                next_iv(&sa),
                [0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff]
            );
        }
    }

    /// SPIs that would let IVs repeat under the set's key are refused.
    #[test]
    fn colliding_spis_refused() {
        let ours = [0x1000, 0x1001];
        assert!(outbound_ivs_disjoint(ours, [5, 6]));
        assert!(!outbound_ivs_disjoint(ours, [5, 5]));
        assert!(!outbound_ivs_disjoint(ours, [0, 6]));
        assert!(!outbound_ivs_disjoint(ours, [5, 0x1001]));
        assert!(!outbound_ivs_disjoint(ours, [0x1000, 6]));
    }

    /// A restored SA resumes after the persisted number and never sends past its ceiling; the
    /// numbers refused at the ceiling are never used, and a raised ceiling lets it go on.
    #[test]
    fn outbound_resumes_after_and_stops_at_the_ceiling() {
        let suite = Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap();
        let keys = EspKeys::derive(suite, &[3; 16], &[4; 16]);
        let sa = Sa::new(0x0100_0000, suite, &keys, SaOptions::default()).unwrap();
        sa.resume_after(1000);
        sa.set_seq_ceiling(1002);
        assert_eq!(next_iv(&sa)[4..], 1001u32.to_be_bytes());
        assert_eq!(next_iv(&sa)[4..], 1002u32.to_be_bytes());
        let mut buf = [0u8; 256];
        let ip = [
            0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x13, 0xc4, 0x13,
            0xc5, 0, 9, 0, 0, 0x55,
        ];
        buf[64..64 + ip.len()].copy_from_slice(&ip);
        let before = buf;
        let mut f = Frame::new(&mut buf, 64, 64 + ip.len());
        assert_eq!(sa.outbound(&mut f), Err(EspError::SeqCeiling));
        assert_eq!(buf, before, "a refused packet leaves the frame alone");
        sa.set_seq_ceiling(2000);
        // 1003 was spent by the refusal, never sent
        assert_eq!(next_iv(&sa)[4..], 1004u32.to_be_bytes());
    }

    /// A window restored at `top` refuses every number up to it (in and left of the window)
    /// and accepts the numbers above it, once each.
    #[test]
    fn restored_window_refuses_up_to_its_floor() {
        for window in [64, 100, 1024] {
            for top in [1u32, 31, 32, 33, 63, 64, 65, 1000, 4096, u32::MAX - 5] {
                let w = ReplayWindow::new(window).unwrap();
                w.restore_floor(top);
                assert_eq!(w.highest(), u64::from(top));
                let lo = top.saturating_sub(window + 70).max(1);
                for seq in lo..=top {
                    assert!(
                        w.precheck(seq).is_err(),
                        "window {window} top {top} seq {seq}"
                    );
                    assert!(w.check_and_set(seq).is_err());
                }
                for seq in top.saturating_add(1)..=top.saturating_add(3) {
                    if seq == top {
                        break;
                    }
                    assert_eq!(
                        w.precheck(seq),
                        Ok(()),
                        "window {window} top {top} seq {seq}"
                    );
                    assert_eq!(w.check_and_set(seq), Ok(()));
                    assert_eq!(w.check_and_set(seq), Err(EspError::Replayed));
                }
            }
        }
        let w = ReplayWindow::new(64).unwrap();
        w.restore_floor(0);
        assert_eq!(w.check_and_set(1), Ok(()));
    }
}
