//! Framing SIP messages out of a byte stream (SIP over TCP or TLS): a sans-IO framer.
//!
//! Owns: one fixed receive buffer per connection ([`Framer`]), allocated once in
//! [`Framer::with_capacity`], the scan state of the message being received, and the rules that
//! cut the stream into [`Frame`]s: whole messages and CRLF keep-alive pings.
//!
//! Never does: I/O, clocks, timers, allocation after construction, `unsafe`, or any check of the
//! message beyond what framing needs (the caller runs [`Message::parse`](super::Message::parse)
//! and the validation on each frame). No input can make it panic: the peer is a hostile phone.
//!
//! The rules, with what each implements:
//! - RFC 3261 §18.3, §20.14: on a stream the Content-Length header MUST be present and MUST be
//!   used to find the end of a message. Missing is [`FrameError::MissingContentLength`], a value
//!   that does not parse is [`FrameError::BadContentLength`], and two Content-Length headers with
//!   different values are [`FrameError::ConflictingContentLength`] (two readings of where the
//!   message ends is how requests get smuggled past a proxy). Every error ends the stream: the
//!   framer cannot find the next message once it has lost one, so errors are sticky and the
//!   owner closes the connection.
//! - RFC 3261 §7.5: CRLFs before a start line MUST be ignored. RFC 5626 §3.5.1, §4.4.1: a
//!   client's "\r\n\r\n" between messages is a keep-alive ping, which the owner answers with one
//!   "\r\n" pong ([`Frame::Ping`]).
//! - Lines are cut as `Index::parse` (`msg.rs`) cuts them, so that both always agree on where a
//!   message ends: a line ends at LF, optionally preceded by CR; the header section ends at the
//!   first empty line after the start line; a line starting with SP or HT continues the header
//!   above it (RFC 3261 §7.3.1), and each header is read by `msg.rs`'s own `scan_header`, its
//!   name by [`HeaderName::from_bytes`] (case-insensitive, compact form `l`), its value by
//!   `lex::parse_u64`. A header line `scan_header` refuses is no Content-Length here; the frame
//!   is still cut (the framing is unambiguous) and `Index::parse` refuses it. Two Content-Length
//!   headers with the same value in other digits ("4", "004") frame; the parser refuses them.
//! - Bytes before a message, consistent with `Index::parse`, which skips every leading CR and
//!   LF: "\r\n\r\n" is a ping; a "\r\n" followed by anything but CR is a stray CRLF and is
//!   skipped; a lone LF, or a CR followed by anything but LF, is skipped alone; "\r", "\r\n" and
//!   "\r\n\r" wait for the next byte. Any other byte starts a message (garbage too: the parser
//!   refuses the frame, or it never ends and fills the buffer).
//! - Each frame is exactly the start line through the last of the Content-Length body bytes, so
//!   `Message::parse` on it sees a body of exactly Content-Length bytes; what follows stays
//!   buffered for the next frame.
//! - A message that cannot fit the buffer is [`FrameError::TooLarge`]: at once when the header
//!   section plus Content-Length exceed the capacity, or when the header section alone fills the
//!   whole buffer.
//!
//! Cost: the scan position and the Content-Length seen so far are kept between calls, so a peer
//! feeding one byte at a time costs O(bytes), not O(bytes²). Bytes move only when the owner asks
//! for room that is not at the end of the buffer ([`Framer::spare`]).

use core::fmt;

use super::lex::parse_u64;
use super::msg::{HeaderName, scan_header};

/// What [`Framer::next_frame`] cut out of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One whole message: start line, headers, empty line and exactly Content-Length body bytes.
    Message(&'a [u8]),
    /// A "\r\n\r\n" keep-alive (RFC 5626 §3.5.1, §4.4.1): the owner answers one "\r\n".
    Ping,
}

/// Why a stream cannot be framed any further. The owner closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No Content-Length header: on a stream it MUST be present (RFC 3261 §18.3, §20.14).
    MissingContentLength,
    /// A Content-Length value that is not 1 to 10 decimal digits.
    BadContentLength,
    /// Two Content-Length headers with different values: no one end of the message.
    ConflictingContentLength,
    /// The message does not fit the buffer.
    TooLarge,
}

impl FrameError {
    /// The name of each error, indexed by [`FrameError::index`] (counters, logs).
    pub const NAMES: [&'static str; 4] = [
        "missing_content_length",
        "bad_content_length",
        "conflicting_content_length",
        "too_large",
    ];

    /// Where this error's name is in [`FrameError::NAMES`].
    pub fn index(&self) -> usize {
        match self {
            FrameError::MissingContentLength => 0,
            FrameError::BadContentLength => 1,
            FrameError::ConflictingContentLength => 2,
            FrameError::TooLarge => 3,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::MissingContentLength => {
                "SIP message on a stream without Content-Length (RFC 3261 §18.3)"
            }
            FrameError::BadContentLength => "SIP message with a malformed Content-Length",
            FrameError::ConflictingContentLength => {
                "SIP message with two different Content-Length values"
            }
            FrameError::TooLarge => "SIP message larger than the stream buffer",
        })
    }
}

impl std::error::Error for FrameError {}

/// Where the scan of the current message stands. All positions are offsets from `start`, so
/// compaction does not touch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Between messages: skipping CR/LF, looking for pings.
    Idle,
    /// In the start line.
    StartLine,
    /// In the header section.
    Headers,
    /// Header section done: the message is `len` bytes long.
    Body { len: usize },
}

/// What one step of the scan found.
enum Step {
    Ping,
    Message(usize),
    NeedMore,
}

/// A sans-IO framer for one SIP stream: feed it bytes ([`Framer::spare`] + [`Framer::commit`],
/// or [`Framer::push`]), then take frames with [`Framer::next_frame`] until it returns
/// `Ok(None)`.
pub struct Framer {
    buf: Box<[u8]>,
    /// First byte not yet handed out.
    start: usize,
    /// End of the bytes received.
    end: usize,
    /// Sticky: once set, every `next_frame` returns it.
    error: Option<FrameError>,
    phase: Phase,
    /// Where the search for the next LF resumes (bytes before it hold none past `line`).
    seek: usize,
    /// Start of the physical line being scanned (header section).
    line: usize,
    /// Start of the header whose continuation lines may still follow.
    header: Option<usize>,
    /// The Content-Length of the current message, once seen.
    content_length: Option<u64>,
    /// Bytes examined, to check that the scan stays linear.
    #[cfg(test)]
    scanned: usize,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("capacity", &self.buf.len())
            .field("start", &self.start)
            .field("end", &self.end)
            .field("error", &self.error)
            .field("phase", &self.phase)
            .field("content_length", &self.content_length)
            .finish()
    }
}

impl Framer {
    /// The smallest capacity: room for one keep-alive ping.
    pub const MIN_CAPACITY: usize = 4;

    /// A framer whose largest message is `max_message` bytes, clamped to
    /// [`Framer::MIN_CAPACITY`] ..= `u32::MAX` (the most `Message::parse` indexes). The one
    /// allocation.
    pub fn with_capacity(max_message: usize) -> Framer {
        let cap = max_message.clamp(Framer::MIN_CAPACITY, u32::MAX as usize);
        Framer {
            buf: vec![0u8; cap].into_boxed_slice(),
            start: 0,
            end: 0,
            error: None,
            phase: Phase::Idle,
            seek: 0,
            line: 0,
            header: None,
            content_length: None,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Forget everything buffered and any error, keeping the buffer: the stream starts afresh
    /// (a new connection after the owner reset the old one).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.error = None;
        self.phase = Phase::Idle;
        self.seek = 0;
        self.line = 0;
        self.header = None;
        self.content_length = None;
    }

    /// The largest message this framer takes.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether part of a message is waiting for the rest (for the owner's idle and slow-sender
    /// timers): a byte other than CR or LF has arrived since the last frame. A half ping is not a
    /// message.
    pub fn in_message(&self) -> bool {
        self.phase != Phase::Idle
            || self.buf[self.start..self.end]
                .iter()
                .any(|&b| b != b'\r' && b != b'\n')
    }

    /// The room to receive into. Moves the bytes not yet handed out to the front of the buffer
    /// first, but only when there is no room after them. Empty when the buffer is full: take the
    /// frames first (a partial message filling the whole buffer is [`FrameError::TooLarge`]).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were written at the front of [`Framer::spare`]. More than the room there is
    /// counted as the room.
    pub fn commit(&mut self, n: usize) {
        self.end += n.min(self.buf.len() - self.end);
    }

    /// Copy as much of `data` as fits; returns how many bytes were taken.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let room = self.spare();
        let n = room.len().min(data.len());
        room[..n].copy_from_slice(&data[..n]);
        self.commit(n);
        n
    }

    /// The next whole frame, consumed; `Ok(None)` when more bytes are needed. Errors are sticky.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.step() {
            Ok(Step::Ping) => Ok(Some(Frame::Ping)),
            Ok(Step::Message(len)) => {
                let at = self.start;
                self.start += len;
                self.phase = Phase::Idle;
                self.seek = 0;
                self.line = 0;
                self.header = None;
                self.content_length = None;
                Ok(Some(Frame::Message(&self.buf[at..at + len])))
            }
            // Needs more bytes, and there is no room for them.
            Ok(Step::NeedMore) if self.buffered() == self.buf.len() => {
                self.error = Some(FrameError::TooLarge);
                Err(FrameError::TooLarge)
            }
            Ok(Step::NeedMore) => Ok(None),
            Err(e) => {
                self.error = Some(e);
                Err(e)
            }
        }
    }

    fn step(&mut self) -> Result<Step, FrameError> {
        if self.phase == Phase::Idle {
            // Before a message (RFC 3261 §7.5, RFC 5626 §3.5.1): see the module doc.
            loop {
                match &self.buf[self.start..self.end] {
                    [] | [b'\r'] | [b'\r', b'\n'] | [b'\r', b'\n', b'\r'] => {
                        return Ok(Step::NeedMore);
                    }
                    [b'\r', b'\n', b'\r', b'\n', ..] => {
                        self.start += 4;
                        return Ok(Step::Ping);
                    }
                    [b'\r', b'\n', ..] => self.start += 2,
                    [b'\r', ..] | [b'\n', ..] => self.start += 1,
                    _ => break,
                }
            }
            self.phase = Phase::StartLine;
            self.seek = 0;
        }
        if self.phase == Phase::StartLine {
            let Some(lf) = self.find_lf() else {
                return Ok(Step::NeedMore);
            };
            self.line = lf + 1;
            self.seek = lf + 1;
            self.header = None;
            self.phase = Phase::Headers;
        }
        if self.phase == Phase::Headers {
            loop {
                let Some(lf) = self.find_lf() else {
                    return Ok(Step::NeedMore);
                };
                let line = self.line;
                let first = self.buf[self.start + line];
                // A line starting with SP or HT continues the header above (RFC 3261 §7.3.1);
                // any other line ends it.
                if first != b' ' && first != b'\t' {
                    if let Some(h) = self.header.take() {
                        self.header_done(h, line)?;
                    }
                    if lf == line || (lf == line + 1 && first == b'\r') {
                        // The empty line: the body is Content-Length bytes, which MUST be
                        // present on a stream (RFC 3261 §18.3, §20.14).
                        let cl = self
                            .content_length
                            .ok_or(FrameError::MissingContentLength)?;
                        // At most 10 digits: no overflow.
                        let len = (lf as u64 + 1) + cl;
                        if len > self.buf.len() as u64 {
                            return Err(FrameError::TooLarge);
                        }
                        self.phase = Phase::Body { len: len as usize };
                        break;
                    }
                    self.header = Some(line);
                }
                self.line = lf + 1;
                self.seek = lf + 1;
            }
        }
        match self.phase {
            Phase::Body { len } if self.buffered() >= len => Ok(Step::Message(len)),
            _ => Ok(Step::NeedMore),
        }
    }

    /// The next LF at or after `seek`, as an offset from `start`. Without one, `seek` moves to
    /// the end so that no byte is searched twice.
    fn find_lf(&mut self) -> Option<usize> {
        let from = self.start + self.seek;
        let hay = &self.buf[from..self.end];
        let found = memchr::memchr(b'\n', hay);
        #[cfg(test)]
        {
            self.scanned += found.map_or(hay.len(), |p| p + 1);
        }
        match found {
            Some(p) => Some(self.seek + p),
            None => {
                self.seek = self.end - self.start;
                None
            }
        }
    }

    /// The header at `h` ends where the line at `next` starts: if it is a Content-Length, read
    /// it as `Index::parse` does.
    fn header_done(&mut self, h: usize, next: usize) -> Result<(), FrameError> {
        let (from, to) = (self.start + h, self.start + next);
        // Fast path: only "Content-Length" and "l" can name it.
        if !matches!(self.buf[from], b'c' | b'C' | b'l' | b'L') {
            return Ok(());
        }
        #[cfg(test)]
        {
            self.scanned += to - from;
        }
        let Ok((header, _)) = scan_header(&self.buf, from, to) else {
            return Ok(()); // not a header line: the parser refuses the frame
        };
        if header.name != HeaderName::ContentLength {
            return Ok(());
        }
        let n =
            parse_u64(&self.buf[header.value.range()], 10).ok_or(FrameError::BadContentLength)?;
        match self.content_length {
            Some(prev) if prev != n => Err(FrameError::ConflictingContentLength),
            _ => {
                self.content_length = Some(n);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{HeaderName, Message, ParseErrorKind};
    use proptest::prelude::*;

    /// A frame, owned (tests only).
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Got {
        Msg(Vec<u8>),
        Ping,
    }

    fn msg(m: &[u8]) -> Got {
        Got::Msg(m.to_vec())
    }

    /// Take frames until `None` (or the error).
    fn drain(f: &mut Framer, out: &mut Vec<Got>) -> Result<(), FrameError> {
        for _ in 0..100_000 {
            match f.next_frame()? {
                Some(Frame::Message(m)) => out.push(Got::Msg(m.to_vec())),
                Some(Frame::Ping) => out.push(Got::Ping),
                None => return Ok(()),
            }
        }
        panic!("next_frame never ran out of frames");
    }

    /// Feed `chunks` in order as an owner would (push what fits, take the frames, push the
    /// rest); the frames, and the error if the stream ended in one.
    fn feed<'a>(
        cap: usize,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<Got>, Option<FrameError>) {
        let mut f = Framer::with_capacity(cap);
        let mut out = Vec::new();
        for mut chunk in chunks {
            loop {
                let n = f.push(chunk);
                assert!(f.buffered() <= f.capacity());
                chunk = &chunk[n..];
                if let Err(e) = drain(&mut f, &mut out) {
                    return (out, Some(e));
                }
                if chunk.is_empty() {
                    break;
                }
                // After a drain there is room: a full buffer is TooLarge.
                assert!(f.buffered() < f.capacity(), "{f:?}");
            }
        }
        (out, None)
    }

    fn whole(cap: usize, stream: &[u8]) -> (Vec<Got>, Option<FrameError>) {
        feed(cap, [stream])
    }

    /// A message: start line, a few fixed headers, `headers` (each ending in CRLF), the empty
    /// line, `body`.
    fn sip(start_line: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "{start_line}\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
             Call-ID: c1@10.0.0.1\r\nCSeq: 1 X\r\n{headers}\r\n"
        )
        .into_bytes();
        m.extend_from_slice(body);
        m
    }

    /// A message with a right Content-Length for `body`.
    fn with_body(start_line: &str, body: &[u8]) -> Vec<u8> {
        sip(
            start_line,
            &format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n",
                body.len()
            ),
            body,
        )
    }

    fn register() -> Vec<u8> {
        with_body("REGISTER sip:ims.test SIP/2.0", b"")
    }

    fn invite() -> Vec<u8> {
        with_body(
            "INVITE sip:bob@ims.test SIP/2.0",
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
              m=audio 4000 RTP/AVP 0\r\n",
        )
    }

    fn ok() -> Vec<u8> {
        with_body("SIP/2.0 200 OK", b"")
    }

    /// A MESSAGE whose body holds "\r\n\r\n" and a whole SIP message of its own.
    fn nested() -> Vec<u8> {
        let mut body = b"text\r\n\r\nmore\r\n\r\n".to_vec();
        body.extend_from_slice(&ok());
        body.extend_from_slice(b"\r\n\r\nINVITE sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        with_body("MESSAGE sip:bob@ims.test SIP/2.0", &body)
    }

    /// `frame` is one whole message for the parser: framed from its first to its last byte,
    /// with a body of `body_len` bytes.
    fn parses_whole(frame: &[u8], body_len: usize) {
        let m = Message::parse(frame).unwrap();
        assert_eq!(m.view().as_bytes(), frame);
        assert_eq!(m.view().body().len(), body_len);
        assert_eq!(m.idx.msg_start, 0);
    }

    #[test]
    fn several_messages_in_one_push() {
        let (a, b, c, d) = (register(), invite(), ok(), nested());
        let stream = [&a[..], &b, &c, &d].concat();
        let mut f = Framer::with_capacity(4096);
        assert_eq!(f.push(&stream), stream.len());
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&a[..]))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&b[..]))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&c[..]))));
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&d[..]))));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
        assert!(!f.in_message());
        parses_whole(&a, 0);
        parses_whole(&b, 85);
        parses_whole(&c, 0);
        parses_whole(
            &d,
            d.len() - d.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4,
        );
        assert!(
            Message::parse(&b)
                .unwrap()
                .view()
                .body()
                .starts_with(b"v=0\r\n")
        );
    }

    #[test]
    fn a_message_fed_byte_by_byte_costs_linear_scanning() {
        let mut headers = String::new();
        for i in 0..40 {
            headers.push_str(&format!(
                "Contact: <sip:u{i}@10.0.0.{i}:5060>;expires=600\r\n"
            ));
        }
        headers.push_str("Content-Length: 500\r\n");
        let m = sip("INVITE sip:bob@ims.test SIP/2.0", &headers, &[b'x'; 500]);
        let mut f = Framer::with_capacity(m.len());
        for (i, byte) in m.iter().enumerate() {
            assert_eq!(f.push(&[*byte]), 1);
            if i + 1 < m.len() {
                assert_eq!(f.next_frame(), Ok(None), "at byte {i}");
                assert!(f.in_message());
            }
        }
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&m[..]))));
        // Every byte is searched for LF once; the header lines starting with c or l once more.
        // Rescanning from the message start on every byte would be ~len²/2.
        assert!(
            f.scanned <= 2 * m.len(),
            "{} bytes scanned for {}",
            f.scanned,
            m.len()
        );
        assert!(f.scanned >= m.len() - 500, "{}", f.scanned);
        parses_whole(&m, 500);
    }

    #[test]
    fn every_split_point_gives_the_same_message() {
        let m = invite();
        let cut = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        // Exactly at, inside and after the CRLF CRLF that ends the headers.
        for i in cut..=cut + 4 {
            assert_eq!(
                feed(m.len(), [&m[..i], &m[i..]]),
                (vec![msg(&m)], None),
                "{i}"
            );
        }
        for i in 0..=m.len() {
            for j in i..=m.len() {
                let (got, err) = feed(m.len(), [&m[..i], &m[i..j], &m[j..]]);
                assert_eq!((got, err), (vec![msg(&m)], None), "{i} {j}");
            }
        }
    }

    #[test]
    fn pings_whole_and_split() {
        assert_eq!(whole(64, b"\r\n\r\n"), (vec![Got::Ping], None));
        assert_eq!(
            whole(64, b"\r\n\r\n\r\n\r\n"),
            (vec![Got::Ping, Got::Ping], None)
        );
        let mut f = Framer::with_capacity(64);
        f.push(b"\r\n");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"\r");
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 3);
        assert!(!f.in_message());
        f.push(b"\n");
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 0);
        // Between and after messages.
        let (a, b) = (register(), ok());
        let stream = [&b"\r\n\r\n"[..], &a, b"\r\n\r\n", &b, b"\r\n\r\n"].concat();
        let want = vec![Got::Ping, msg(&a), Got::Ping, msg(&b), Got::Ping];
        assert_eq!(whole(1024, &stream), (want.clone(), None));
        let bytes = stream.iter().map(core::slice::from_ref);
        assert_eq!(feed(1024, bytes), (want, None));
        // The smallest buffer holds a ping.
        assert_eq!(Framer::with_capacity(0).capacity(), Framer::MIN_CAPACITY);
        assert_eq!(
            whole(0, b"\r\n\r\n\r\n\r\n"),
            (vec![Got::Ping, Got::Ping], None)
        );
    }

    #[test]
    fn cr_and_lf_before_a_message_are_skipped() {
        let a = register();
        for lead in [
            &b"\r\n"[..],
            b"\n",
            b"\r",
            b"\n\n\n",
            b"\r\r\n",
            b"\r\n\r",
            b"\r\n\n",
            b"\n\r\n",
            b"\r\n\r\r\n",
        ] {
            let stream = [lead, &a].concat();
            assert_eq!(whole(1024, &stream), (vec![msg(&a)], None), "{lead:?}");
            let bytes = stream.iter().map(core::slice::from_ref);
            assert_eq!(feed(1024, bytes), (vec![msg(&a)], None), "{lead:?}");
        }
        // A ping, then a stray CRLF: "\r\n\r\n\r\n" is one ping and two skipped bytes.
        let stream = [&b"\r\n\r\n\r\n"[..], &a].concat();
        assert_eq!(whole(1024, &stream), (vec![Got::Ping, msg(&a)], None));
        // "\r\n" and "\r\n\r" wait: they may become a ping.
        let mut f = Framer::with_capacity(64);
        f.push(b"\r\n\r");
        assert_eq!(f.next_frame(), Ok(None));
        f.push(b"I");
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 1);
        assert!(f.in_message());
    }

    #[test]
    fn a_missing_content_length_is_an_error_and_sticks() {
        let m = sip("MESSAGE sip:bob@ims.test SIP/2.0", "", b"hello");
        let mut f = Framer::with_capacity(1024);
        f.push(&m);
        assert_eq!(f.next_frame(), Err(FrameError::MissingContentLength));
        f.push(&register());
        assert_eq!(f.next_frame(), Err(FrameError::MissingContentLength));
        assert_eq!(f.next_frame(), Err(FrameError::MissingContentLength));
        // A header that only starts like it is not it.
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "Content-Lengthy: 0\r\nlx: 0\r\n",
            b"",
        );
        assert_eq!(
            whole(1024, &m),
            (vec![], Some(FrameError::MissingContentLength))
        );
    }

    #[test]
    fn a_bad_content_length_is_an_error_the_parser_agrees_with() {
        for cl in [
            "Content-Length: abc\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: +1\r\n",
            "Content-Length: 1 2\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length:\r\n",
            "Content-Length: 12345678901\r\n",
            "Content-Length: 1\r\n 2\r\n",
            "l: 1;x\r\n",
        ] {
            let m = sip("MESSAGE sip:b SIP/2.0", cl, b"x");
            assert_eq!(
                whole(1024, &m),
                (vec![], Some(FrameError::BadContentLength)),
                "{cl}"
            );
            let e = Message::parse(&m).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::BadContentLength, "{cl}");
        }
        // Ten digits parse; the message is then too large for any buffer here.
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "Content-Length: 9999999999\r\n",
            b"",
        );
        assert_eq!(whole(1024, &m), (vec![], Some(FrameError::TooLarge)));
    }

    #[test]
    fn two_content_lengths_must_agree() {
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "Content-Length: 1\r\nl: 4\r\n",
            b"abcd",
        );
        assert_eq!(
            whole(1024, &m),
            (vec![], Some(FrameError::ConflictingContentLength))
        );
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "l: 4\r\nContent-Length:  4\r\n",
            b"abcd",
        );
        assert_eq!(whole(1024, &m), (vec![msg(&m)], None));
        parses_whole(&m, 4);
        // Same value, other digits: one end for the framer; the parser refuses the duplicate.
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "l: 4\r\nContent-Length: 004\r\n",
            b"abcd",
        );
        assert_eq!(whole(1024, &m), (vec![msg(&m)], None));
        let e = Message::parse(&m).unwrap_err();
        assert_eq!(
            e.kind,
            ParseErrorKind::DuplicateHeader(HeaderName::ContentLength)
        );
    }

    #[test]
    fn content_length_in_any_spelling_the_parser_reads() {
        for cl in [
            "l: 5\r\n",
            "L:5\r\n",
            "content-length: 5\r\n",
            "CONTENT-LENGTH : 5 \r\n",
            "Content-Length:\r\n 5\r\n",
            "Content-Length\r\n\t: 5\r\n",
            "Content-Length: 5\n",
        ] {
            // Another folded header before it, and after it.
            let headers = format!("Subject: a\r\n b\r\n{cl}Contact: <sip:a@b>\r\n \r\n");
            let m = sip("MESSAGE sip:b SIP/2.0", &headers, b"hello");
            let stream = [&m[..], &register()].concat();
            assert_eq!(
                whole(1024, &stream),
                (vec![msg(&m), msg(&register())], None),
                "{cl}"
            );
            parses_whole(&m, 5);
            let bytes = stream.iter().map(core::slice::from_ref);
            let cap = m.len().max(register().len());
            assert_eq!(feed(cap, bytes), (vec![msg(&m), msg(&register())], None));
        }
        // Bare LF line ends throughout.
        let m = b"MESSAGE sip:b SIP/2.0\nCall-ID: x\nl: 3\n\nabc".to_vec();
        assert_eq!(whole(1024, &m), (vec![msg(&m)], None));
        parses_whole(&m, 3);
        // The start line is not a header.
        let m = b"l: 3 SIP/2.0\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert_eq!(whole(1024, &m), (vec![msg(&m)], None));
    }

    #[test]
    fn a_body_is_never_split() {
        let (d, a) = (nested(), register());
        let stream = [&d[..], &a].concat();
        assert_eq!(whole(4096, &stream), (vec![msg(&d), msg(&a)], None));
        let bytes = stream.iter().map(core::slice::from_ref);
        assert_eq!(feed(d.len(), bytes), (vec![msg(&d), msg(&a)], None));
        parses_whole(&d, Message::parse(&d).unwrap().view().body().len());
        assert!(
            Message::parse(&d)
                .unwrap()
                .view()
                .body()
                .ends_with(b"Content-Length: 0\r\n\r\n")
        );
    }

    #[test]
    fn too_large_at_once_when_the_content_length_cannot_fit() {
        let head = sip("MESSAGE sip:b SIP/2.0", "Content-Length: 1000\r\n", b"");
        let mut f = Framer::with_capacity(head.len() + 999);
        assert_eq!(f.push(&head), head.len());
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
        // One byte more and it fits.
        let m = sip(
            "MESSAGE sip:b SIP/2.0",
            "Content-Length: 1000\r\n",
            &[b'y'; 1000],
        );
        assert_eq!(whole(head.len() + 1000, &m), (vec![msg(&m)], None));
    }

    #[test]
    fn too_large_when_the_headers_fill_the_buffer() {
        let m = invite();
        let cut = m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        // The headers alone, one byte short of their end: the buffer is full.
        let mut f = Framer::with_capacity(cut - 1);
        assert_eq!(f.push(&m), cut - 1);
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
        assert_eq!(f.spare().len(), 0);
        // Bytes consumed before it are moved out of the way first: a ping, then the headers.
        let mut f = Framer::with_capacity(64);
        assert_eq!(f.push(b"\r\n\r\nINVITE sip:a SIP/2.0\r\n"), 26);
        assert_eq!(f.next_frame(), Ok(Some(Frame::Ping)));
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.push(&[b'a'; 100]), 64 - 26);
        assert_eq!(f.next_frame(), Ok(None));
        assert_eq!(f.buffered(), 60);
        assert_eq!(f.push(&[b'a'; 100]), 4);
        assert_eq!(f.buffered(), 64);
        assert_eq!(f.next_frame(), Err(FrameError::TooLarge));
        // A start line with no end.
        let (got, err) = feed(100, [&[b'A'; 300][..]]);
        assert_eq!((got, err), (vec![], Some(FrameError::TooLarge)));
    }

    #[test]
    fn a_buffer_exactly_the_message_size() {
        let m = invite();
        assert_eq!(whole(m.len(), &m), (vec![msg(&m)], None));
        let twice = [&m[..], &m].concat();
        assert_eq!(whole(m.len(), &twice), (vec![msg(&m), msg(&m)], None));
        // With a ping before each: the bytes move to the front.
        let stream = [&b"\r\n\r\n"[..], &m, b"\r\n\r\n", &m].concat();
        let want = vec![Got::Ping, msg(&m), Got::Ping, msg(&m)];
        for step in [1, 7, 64, m.len() - 1, m.len()] {
            assert_eq!(
                feed(m.len(), stream.chunks(step)),
                (want.clone(), None),
                "{step}"
            );
        }
        // One byte short.
        assert_eq!(whole(m.len() - 1, &m), (vec![], Some(FrameError::TooLarge)));
    }

    #[test]
    fn spare_and_commit() {
        let m = register();
        let mut f = Framer::with_capacity(m.len() + 10);
        let room = f.spare();
        assert_eq!(room.len(), m.len() + 10);
        room[..m.len()].copy_from_slice(&m);
        f.commit(m.len());
        assert_eq!(f.next_frame(), Ok(Some(Frame::Message(&m[..]))));
        // Nothing left: the whole buffer is room again, without a copy.
        assert_eq!(f.spare().len(), m.len() + 10);
        // More than the room counts as the room.
        f.commit(usize::MAX);
        assert_eq!(f.buffered(), m.len() + 10);
        assert_eq!(f.spare().len(), 0);
    }

    #[test]
    fn error_names() {
        let all = [
            FrameError::MissingContentLength,
            FrameError::BadContentLength,
            FrameError::ConflictingContentLength,
            FrameError::TooLarge,
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(FrameError::NAMES[FrameError::TooLarge.index()], "too_large");
        assert_eq!(
            FrameError::MissingContentLength.to_string(),
            "SIP message on a stream without Content-Length (RFC 3261 §18.3)"
        );
    }

    /// Messages for the property tests: every spelling the framer reads.
    fn corpus() -> Vec<Vec<u8>> {
        vec![
            register(),
            invite(),
            ok(),
            nested(),
            sip("MESSAGE sip:b SIP/2.0", "l: 3\r\n", b"\r\n\r"),
            sip(
                "MESSAGE sip:b SIP/2.0",
                "content-length:\r\n 4\r\n",
                b"\r\n\r\n",
            ),
            b"SIP/2.0 180 Ringing\nl: 1\n\n\n".to_vec(),
        ]
    }

    /// `(0..=corpus().len(), prefix)`: a message or a ping, with a leading CR/LF to skip.
    fn stream_of(items: &[(usize, u8)]) -> (Vec<u8>, Vec<Got>) {
        let corpus = corpus();
        let (mut stream, mut want) = (Vec::new(), Vec::new());
        for &(k, prefix) in items {
            match corpus.get(k) {
                Some(m) => {
                    stream.extend_from_slice([&b""[..], b"\r\n", b"\n"][prefix as usize % 3]);
                    stream.extend_from_slice(m);
                    want.push(msg(m));
                }
                None => {
                    stream.extend_from_slice(b"\r\n\r\n");
                    want.push(Got::Ping);
                }
            }
        }
        (stream, want)
    }

    fn chunks_at(stream: &[u8], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.sort_unstable();
        let mut prev = 0;
        let mut out = Vec::new();
        for c in at.into_iter().chain([stream.len()]) {
            out.push(stream[prev..c].to_vec());
            prev = c;
        }
        out
    }

    /// Bytes for the arbitrary-stream property: fragments the framer cares about.
    fn fragment() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b"Content-Length: ".to_vec()),
            Just(b"l:".to_vec()),
            Just(b"INVITE sip:a SIP/2.0\r\n".to_vec()),
            (0u8..10).prop_map(|d| vec![b'0' + d]),
            any::<u8>().prop_map(|b| vec![b]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_segmentation_of_valid_messages_and_pings_gives_the_same_frames(
            items in prop::collection::vec((0..=corpus().len(), 0u8..3), 1..12),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
            extra in 0usize..64,
        ) {
            let (stream, want) = stream_of(&items);
            prop_assert_eq!(whole(stream.len(), &stream), (want.clone(), None));
            let cap = corpus().iter().map(Vec::len).max().unwrap() + extra;
            let chunks = chunks_at(&stream, &cuts);
            prop_assert_eq!(feed(cap, chunks.iter().map(Vec::as_slice)), (want.clone(), None));
            for g in &want {
                if let Got::Msg(m) = g {
                    let p = Message::parse(m).unwrap();
                    prop_assert_eq!(p.view().as_bytes(), &m[..]);
                }
            }
        }

        #[test]
        fn arbitrary_streams_frame_the_same_in_any_segmentation(
            frags in prop::collection::vec(fragment(), 0..60),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
            cap in 0usize..200,
        ) {
            let stream = frags.concat();
            let one = whole(cap, &stream);
            let chunks = chunks_at(&stream, &cuts);
            prop_assert_eq!(feed(cap, chunks.iter().map(Vec::as_slice)), one.clone());
            let bytes = stream.iter().map(core::slice::from_ref);
            prop_assert_eq!(feed(cap, bytes), one.clone());
            for g in &one.0 {
                if let Got::Msg(m) = g {
                    prop_assert!(m.len() <= cap.max(Framer::MIN_CAPACITY));
                    prop_assert!(!matches!(m.first(), Some(b'\r' | b'\n')));
                    // Where the parser takes it, it takes all of it.
                    if let Ok(p) = Message::parse(m) {
                        prop_assert_eq!(p.view().as_bytes(), &m[..]);
                    }
                }
            }
        }
    }
}
