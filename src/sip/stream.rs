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
//!   `lex::parse_u64`. Header lines that `Index::parse` would refuse are not Content-Length here
//!   either; the frame is handed out and the parser refuses it.
//! - Bytes before a message, consistent with `Index::parse`, which skips every leading CR and
//!   LF: "\r\n\r\n" is a ping; a "\r\n" followed by anything but CR is a stray CRLF and is
//!   skipped; a lone LF, or a CR followed by anything but LF, is skipped alone; "\r", "\r\n" and
//!   "\r\n\r" wait for the next byte. Any other byte starts a message.
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

/// The smallest capacity: room for one keep-alive ping.
pub const MIN_CAPACITY: usize = 4;

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
    /// A framer whose largest message is `max_message` bytes (clamped to [`MIN_CAPACITY`] ..=
    /// `u32::MAX`, the most `Message::parse` indexes). The one allocation.
    pub fn with_capacity(max_message: usize) -> Framer {
        let cap = max_message.clamp(MIN_CAPACITY, u32::MAX as usize);
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
