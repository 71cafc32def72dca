//! Fuzz the SIP stream framer (`sip::stream`): arbitrary bytes from a hostile peer, cut into
//! arbitrary segments. Must never panic; every frame must be bytes the peer sent, in order, with
//! only CR/LF skipped between frames; the buffer never holds more than its capacity; errors stick;
//! and the frames (and the final error) are the same however the bytes were segmented.
//! Input: two bytes of capacity, one byte seeding the segment lengths, then the stream. Seeds:
//! SIP messages with Content-Length, pings ("\r\n\r\n"), e.g. `\x01\x00\x07INVITE ...`.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run stream_framer` from the crate root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pcscf::sip::{Frame, FrameError, Framer, Message};

/// One frame, as its place in the stream.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Msg { at: usize, len: usize },
    Ping { at: usize },
}

/// Feed `stream` in segments whose lengths `next_len` picks; check every step.
fn run(
    cap: usize,
    stream: &[u8],
    mut next_len: impl FnMut() -> usize,
) -> (Vec<Got>, Option<FrameError>) {
    let mut f = Framer::with_capacity(cap);
    let cap = f.capacity();
    assert!(cap >= Framer::MIN_CAPACITY);
    let (mut pushed, mut consumed) = (0usize, 0usize);
    let mut got = Vec::new();
    // Each round pushes at least one byte or ends: bounded by the stream length.
    for _ in 0..=stream.len() + 1 {
        let want = next_len().min(stream.len() - pushed);
        let n = f.push(&stream[pushed..pushed + want]);
        assert!(n <= want);
        pushed += n;
        assert!(f.buffered() <= cap);
        loop {
            let frame = match f.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    assert!(!m.is_empty() && m.len() <= cap);
                    assert!(m[0] != b'\r' && m[0] != b'\n');
                    // Where the parser takes it, it takes all of it.
                    if let Ok(p) = Message::parse(m) {
                        assert_eq!(p.view().as_bytes(), m);
                    }
                    Some(m.to_vec())
                }
                Ok(Some(Frame::Ping)) => None,
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(f.next_frame(), Err(e));
                    f.push(b"\r\n\r\nINVITE sip:a SIP/2.0\r\nl: 0\r\n\r\n");
                    assert_eq!(f.next_frame(), Err(e));
                    return (got, Some(e));
                }
            };
            // The frame ends where the buffered bytes now start.
            let end = pushed - f.buffered();
            let len = frame.as_ref().map_or(4, Vec::len);
            assert!(end >= consumed + len);
            let at = end - len;
            assert!(
                stream[consumed..at]
                    .iter()
                    .all(|&b| b == b'\r' || b == b'\n')
            );
            match frame {
                Some(m) => {
                    assert_eq!(&stream[at..end], &m[..]);
                    got.push(Got::Msg { at, len });
                }
                None => {
                    assert_eq!(&stream[at..end], b"\r\n\r\n");
                    got.push(Got::Ping { at });
                }
            }
            consumed = end;
        }
        if pushed == stream.len() {
            // Waiting for more: what is left is less than the buffer.
            assert!(f.buffered() < cap);
            return (got, None);
        }
        // There is room after taking the frames.
        assert!(f.buffered() < cap);
    }
    unreachable!("the stream did not drain");
}

fuzz_target!(|data: &[u8]| {
    let [c0, c1, seed, stream @ ..] = data else {
        return;
    };
    let cap = usize::from(u16::from_le_bytes([*c0, *c1]) % 4096);
    // Segments of 1 to 64 bytes from a xorshift, and the same stream in one piece.
    let mut x = u32::from(*seed) | 0x100;
    let segmented = run(cap, stream, || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x % 64) as usize + 1
    });
    let whole = run(cap, stream, || usize::MAX);
    assert_eq!(segmented, whole);
});
