//! In-place editing of a SIP message inside its frame buffer.
//!
//! Owns: splicing bytes into the message and keeping the [`Index`] in step. The frame buffer
//! has headroom before the message and tailroom after it; each edit moves whichever side of
//! the message is shorter (the head into the headroom or the tail into the tailroom), so an
//! edit near the top or near the end costs a few bytes of copying, not the whole message.
//! Content-Length is kept right when the body changes. Nothing here allocates.
//!
//! If an edit fails (no room, index full), the buffer and index are left as they were before
//! that edit: every check happens before the first byte moves.

use core::fmt;

use super::lex::{self, ListIter};
use super::msg::{self, Header, HeaderName, Index, MAX_HEADERS, ParseError, Span, View};
use super::write::Writer;

/// Why an edit could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditError {
    /// Not enough headroom or tailroom for the growth.
    NoRoom,
    /// The header index is full.
    TooManyHeaders,
    /// A span or header index that is not part of the message.
    BadTarget,
    /// The edited text did not parse back (a caller passed a malformed value).
    Reparse(ParseError),
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditError::NoRoom => f.write_str("no headroom or tailroom left for the edit"),
            EditError::TooManyHeaders => f.write_str("header index full"),
            EditError::BadTarget => f.write_str("edit target outside the message"),
            EditError::Reparse(e) => write!(f, "edited text does not parse: {e}"),
        }
    }
}

impl std::error::Error for EditError {}

/// An editor over a frame buffer holding one parsed message.
pub struct Editor<'b> {
    buf: &'b mut [u8],
    idx: Slot<'b>,
    /// Headroom and tailroom no edit may use: what the lower layers write around the message
    /// once it is edited (IP and UDP headers, ESP header, IV, padding and ICV).
    keep: Keep,
}

/// Where an [`Editor`]'s index lives: its own, or one the caller keeps and lends (a worker
/// reuses one index for every message instead of moving 1.5 KiB per message).
#[allow(clippy::large_enum_variant)] // the owned index in place: boxing it would allocate
enum Slot<'b> {
    Owned(Index),
    Lent(&'b mut Index),
}

impl core::ops::Deref for Slot<'_> {
    type Target = Index;
    #[inline]
    fn deref(&self) -> &Index {
        match self {
            Slot::Owned(i) => i,
            Slot::Lent(i) => i,
        }
    }
}

impl core::ops::DerefMut for Slot<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut Index {
        match self {
            Slot::Owned(i) => i,
            Slot::Lent(i) => i,
        }
    }
}

/// Room an [`Editor`] leaves free around the message ([`Editor::keeping`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    pub head: usize,
    pub tail: usize,
}

impl fmt::Debug for Editor<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Editor")
            .field("msg", &self.range())
            .field("frame_len", &self.buf.len())
            .finish()
    }
}

/// Where the inserted bytes landed.
#[derive(Clone, Copy, Debug)]
struct Spliced {
    head_moved: bool,
    write_at: usize,
}

impl<'b> Editor<'b> {
    /// Parse the message in `buf[start..end]`; the rest of `buf` is headroom and tailroom.
    pub fn new(buf: &'b mut [u8], start: usize, end: usize) -> Result<Editor<'b>, ParseError> {
        let idx = Index::parse(buf, start, end)?;
        Ok(Editor {
            buf,
            idx: Slot::Owned(idx),
            keep: Keep::default(),
        })
    }

    /// Take an index the caller already built over `buf`.
    pub fn from_index(buf: &'b mut [u8], idx: Index) -> Editor<'b> {
        Editor {
            buf,
            idx: Slot::Owned(idx),
            keep: Keep::default(),
        }
    }

    /// Edit with an index the caller built over `buf` and keeps: the edits keep it in step.
    pub fn over(buf: &'b mut [u8], idx: &'b mut Index) -> Editor<'b> {
        Editor {
            buf,
            idx: Slot::Lent(idx),
            keep: Keep::default(),
        }
    }

    /// Leave `keep` free before and after the message: an edit that would need it fails with
    /// [`EditError::NoRoom`] (the message then still fits its frame with the headers the
    /// lower layers add, rather than being edited into a frame it can no longer leave).
    pub fn keeping(mut self, keep: Keep) -> Editor<'b> {
        self.keep = keep;
        self
    }

    #[inline]
    pub fn view(&self) -> View<'_> {
        self.idx.view(self.buf)
    }

    #[inline]
    pub fn index(&self) -> &Index {
        &self.idx
    }

    /// Where the message now lies in the frame buffer.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.idx.msg_start as usize..self.idx.body.end as usize
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.range()]
    }

    pub fn headroom(&self) -> usize {
        self.idx.msg_start as usize
    }

    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.idx.body.end as usize
    }

    /// Replace `buf[at..at+len]` with the concatenation of `parts`, moving the shorter side.
    /// Shifts every index entry that lies wholly before or wholly after the edit; an entry
    /// that contains the edit must be rescanned by the caller.
    fn splice(&mut self, at: usize, len: usize, parts: &[&[u8]]) -> Result<Spliced, EditError> {
        let start = self.idx.msg_start as usize;
        let end = self.idx.body.end as usize;
        if at < start || at.checked_add(len).is_none_or(|e| e > end) {
            return Err(EditError::BadTarget);
        }
        let ins: usize = parts.iter().map(|p| p.len()).sum();
        let delta = ins as isize - len as isize;
        let head_len = at - start;
        let tail_len = end - (at + len);
        let grow = delta.max(0) as usize;
        let can_head = start >= grow + self.keep.head;
        let can_tail = self.buf.len() - end >= grow + self.keep.tail;
        let head_moved = match (can_head, can_tail) {
            _ if delta == 0 => false,
            (true, true) => head_len < tail_len,
            (true, false) => true,
            (false, true) => false,
            (false, false) => return Err(EditError::NoRoom),
        };
        let write_at = if delta == 0 {
            at
        } else if head_moved {
            let new_start = (start as isize - delta) as usize;
            self.buf.copy_within(start..at, new_start);
            self.idx.shift(true, at, at + len, -delta);
            (at as isize - delta) as usize
        } else {
            let new_tail = ((at + len) as isize + delta) as usize;
            self.buf.copy_within(at + len..end, new_tail);
            self.idx.shift(false, at, at + len, delta);
            at
        };
        let mut w = write_at;
        for p in parts {
            self.buf[w..w + p.len()].copy_from_slice(p);
            w += p.len();
        }
        Ok(Spliced {
            head_moved,
            write_at,
        })
    }

    fn rescan(&mut self, i: usize, line_start: usize) -> Result<(), EditError> {
        let end = self.idx.body.end as usize;
        let (h, _) = msg::scan_header(self.buf, line_start, end).map_err(EditError::Reparse)?;
        self.idx.headers_mut()[i] = h;
        Ok(())
    }

    /// Replace `span` (which lies inside the value of header `i`) with `parts`.
    pub fn replace_in_header(
        &mut self,
        i: usize,
        span: Span,
        parts: &[&[u8]],
    ) -> Result<(), EditError> {
        let h = *self.idx.headers().get(i).ok_or(EditError::BadTarget)?;
        if span.start < h.name_end || span.end > h.line.end || span.start > span.end {
            return Err(EditError::BadTarget);
        }
        let ins: usize = parts.iter().map(|p| p.len()).sum();
        let delta = ins as isize - span.len() as isize;
        let s = self.splice(span.start as usize, span.len(), parts)?;
        // Bytes before the edit moved by -delta if the head moved; bytes after it by +delta if
        // the tail moved.
        let (before, after) = if s.head_moved {
            (-delta, 0)
        } else {
            (0, delta)
        };
        let at = |p: u32, d: isize| (p as isize + d) as u32;
        let line_start = at(h.line.start, before) as usize;
        // An edit strictly inside the value (the usual case) changes only where the value and
        // line end: no need to rescan. Anything touching the value's edges is rescanned, since
        // trimming may move them.
        if span.start > h.value.start && span.end < h.value.end {
            let nh = &mut self.idx.headers_mut()[i];
            nh.line.start = line_start as u32;
            nh.name_end = at(h.name_end, before);
            nh.value.start = at(h.value.start, before);
            nh.value.end = at(h.value.end, after);
            nh.line.end = at(h.line.end, after);
            return Ok(());
        }
        self.rescan(i, line_start)
    }

    /// Append `parts` right after the end of header `i`'s value (e.g. `;received=1.2.3.4`).
    pub fn append_to_header(&mut self, i: usize, parts: &[&[u8]]) -> Result<(), EditError> {
        let h = *self.idx.headers().get(i).ok_or(EditError::BadTarget)?;
        self.replace_in_header(
            i,
            Span {
                start: h.value.end,
                end: h.value.end,
            },
            parts,
        )
    }

    /// Insert whole header lines (each part list must end in CRLF) before header `pos`
    /// (`pos == headers().len()` appends at the end of the header section).
    /// `parts` is the concatenated text of `lines` complete lines.
    pub fn insert_lines(
        &mut self,
        pos: usize,
        lines: usize,
        parts: &[&[u8]],
    ) -> Result<(), EditError> {
        let n = self.idx.headers().len();
        if pos > n {
            return Err(EditError::BadTarget);
        }
        if n + lines > MAX_HEADERS {
            return Err(EditError::TooManyHeaders);
        }
        let at = if pos < n {
            self.idx.headers()[pos].line.start as usize
        } else {
            self.idx.headers_end as usize
        };
        let s = self.splice(at, 0, parts)?;
        let mut p = s.write_at;
        let end = self.idx.body.end as usize;
        for k in 0..lines {
            let (h, next) = msg::scan_header(self.buf, p, end).map_err(EditError::Reparse)?;
            self.idx.insert_header(pos + k, h);
            p = next;
        }
        Ok(())
    }

    /// Insert one header line `Name: value` before header `pos`.
    pub fn insert_header(
        &mut self,
        pos: usize,
        name: HeaderName,
        value: &[&[u8]],
    ) -> Result<(), EditError> {
        let mut parts: [&[u8]; 8] = [b""; 8];
        if value.len() > 5 {
            return Err(EditError::BadTarget);
        }
        parts[0] = name.as_str().as_bytes();
        parts[1] = b": ";
        parts[2..2 + value.len()].copy_from_slice(value);
        parts[2 + value.len()] = b"\r\n";
        self.insert_lines(pos, 1, &parts[..3 + value.len()])
    }

    /// Append one header line at the end of the header section.
    pub fn push_header(&mut self, name: HeaderName, value: &[&[u8]]) -> Result<(), EditError> {
        let n = self.idx.headers().len();
        self.insert_header(n, name, value)
    }

    /// Remove header line `i` entirely.
    pub fn remove_header(&mut self, i: usize) -> Result<(), EditError> {
        let h = *self.idx.headers().get(i).ok_or(EditError::BadTarget)?;
        self.splice(h.line.start as usize, h.line.len(), &[])?;
        self.idx.remove_header(i);
        Ok(())
    }

    /// Remove every header line with this name. Returns how many went.
    pub fn remove_all(&mut self, name: HeaderName) -> Result<usize, EditError> {
        let mut removed = 0;
        while let Some(i) = self.find(name, 0) {
            self.remove_header(i)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Index of the first header named `name` at or after position `from`.
    pub fn find(&self, name: HeaderName, from: usize) -> Option<usize> {
        if !self.idx.may_have(name) {
            return None;
        }
        self.idx
            .headers()
            .iter()
            .skip(from)
            .position(|h| h.name == name)
            .map(|p| p + from)
    }

    /// Remove one item of a `sep`-separated list inside header `i` (a comma-list value, or a
    /// Digest parameter), together with one adjacent separator. If it was the only item and
    /// `drop_empty_line` is set, the whole line goes.
    pub fn remove_item(
        &mut self,
        i: usize,
        item: Span,
        sep: u8,
        drop_empty_line: bool,
    ) -> Result<(), EditError> {
        let h = *self.idx.headers().get(i).ok_or(EditError::BadTarget)?;
        if item.start < h.value.start || item.end > h.value.end || item.start > item.end {
            return Err(EditError::BadTarget);
        }
        let b = &self.buf[..];
        let (vs, ve) = (h.value.start as usize, h.value.end as usize);
        // a separator before the item (only whitespace between)?
        let mut a = item.start as usize;
        while a > vs && lex::is_ws(b[a - 1]) {
            a -= 1;
        }
        if a > vs && b[a - 1] == sep {
            return self.replace_in_header(i, Span::new(a - 1, item.end as usize), &[]);
        }
        // a separator after it?
        let mut z = item.end as usize;
        while z < ve && lex::is_ws(b[z]) {
            z += 1;
        }
        if z < ve && b[z] == sep {
            z += 1;
            while z < ve && lex::is_ws(b[z]) {
                z += 1;
            }
            return self.replace_in_header(i, Span::new(item.start as usize, z), &[]);
        }
        if drop_empty_line && lex::trim(&b[vs..ve]).len() == item.len() {
            return self.remove_header(i);
        }
        self.replace_in_header(i, item, &[])
    }

    /// Remove every comma-list value equal (case-insensitively) to `tag` from every header
    /// named `name`, dropping lines left empty. Returns how many values went.
    pub fn remove_list_value(&mut self, name: HeaderName, tag: &[u8]) -> Result<usize, EditError> {
        let mut removed = 0;
        let mut i = 0;
        while let Some(hi) = self.find(name, i) {
            let found = {
                let v = self.view();
                let h = v.idx.headers()[hi];
                ListIter::new(v.bytes(h.value))
                    .find(|x| x.eq_ignore_ascii_case(tag))
                    .map(|x| Span::of(v.buf, x))
            };
            match found {
                Some(item) => {
                    let before = self.idx.headers().len();
                    self.remove_item(hi, item, b',', true)?;
                    removed += 1;
                    if self.idx.headers().len() < before {
                        i = hi;
                    }
                }
                None => i = hi + 1,
            }
        }
        Ok(removed)
    }

    /// Replace the body and keep Content-Length right (RFC 3261 §20.14).
    pub fn set_body(&mut self, body: &[&[u8]]) -> Result<(), EditError> {
        let new_len: usize = body.iter().map(|p| p.len()).sum();
        // Update Content-Length first: it is in the head, the body is in the tail.
        self.set_content_length(new_len)?;
        let b = self.idx.body;
        let s = self.splice(b.start as usize, b.len(), body)?;
        self.idx.body = Span::new(s.write_at, s.write_at + new_len);
        Ok(())
    }

    /// Write `Content-Length: n`, replacing the value or adding the header.
    pub fn set_content_length(&mut self, n: usize) -> Result<(), EditError> {
        let mut tmp = [0u8; 20];
        let mut w = Writer::new(&mut tmp);
        w.dec(n as u64);
        let len = w.len();
        match self.find(HeaderName::ContentLength, 0) {
            Some(i) => {
                let v = self.idx.headers()[i].value;
                self.replace_in_header(i, v, &[&tmp[..len]])
            }
            None => self.push_header(HeaderName::ContentLength, &[&tmp[..len]]),
        }
    }

    /// Header entry `i`.
    pub fn header(&self, i: usize) -> Option<Header> {
        self.idx.headers().get(i).copied()
    }

    /// Start writing the header block anew into `scratch` ([`Rebuild`]): for a rewrite that
    /// touches many headers, one pass and one copy instead of a splice per edit.
    pub fn rebuild<'e>(&'e mut self, scratch: &'e mut [u8]) -> Rebuild<'e, 'b> {
        let first = match self.idx.headers().first() {
            Some(h) => h.line.start,
            None => self.idx.headers_end,
        };
        let mut rb = Rebuild {
            ed: self,
            out: scratch,
            len: 0,
            heads: [msg::EMPTY_HEADER; MAX_HEADERS],
            n: 0,
            failed: None,
            pending: Span::default(),
        };
        let start = rb.ed.idx.msg_start;
        rb.copy_old(Span { start, end: first });
        rb
    }
}

/// A header block being written anew ([`Editor::rebuild`]): the start line as it was, then
/// the lines the caller emits in order — old ones kept or edited, new ones — while the index
/// entries are recorded as they are written (no rescan). Every header not emitted is gone.
/// [`finish`](Rebuild::finish) puts the new block in place of the old, leaving the body where
/// it is when the headroom allows; until then the frame is untouched, so a rebuild that fails
/// (no room, too many headers) or is dropped leaves the message as it was.
pub struct Rebuild<'e, 'b> {
    ed: &'e mut Editor<'b>,
    out: &'e mut [u8],
    len: usize,
    /// The new entries, positions relative to `out`.
    heads: [Header; MAX_HEADERS],
    n: usize,
    failed: Option<EditError>,
    /// Old bytes already counted in `len` but not yet copied: runs of kept lines go in one
    /// copy (`(old start, old end)`; empty when none).
    pending: Span,
}

impl fmt::Debug for Rebuild<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rebuild")
            .field("written", &self.len)
            .field("headers", &self.n)
            .field("failed", &self.failed)
            .finish()
    }
}

impl Rebuild<'_, '_> {
    /// The message being rebuilt, as it was.
    pub fn view(&self) -> View<'_> {
        self.ed.view()
    }

    fn fail(&mut self, e: EditError) {
        self.failed.get_or_insert(e);
    }

    fn put(&mut self, b: &[u8]) {
        self.flush();
        match self.out.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.fail(EditError::NoRoom),
        }
    }

    /// Copy old bytes `s` of the frame (after any pending run).
    fn copy_old(&mut self, s: Span) {
        self.flush();
        self.defer_old(s);
        self.flush();
    }

    /// Count old bytes `s` as written, copying them later with the run they extend.
    fn defer_old(&mut self, s: Span) {
        if self.pending.is_empty() {
            self.pending = s;
        } else if self.pending.end == s.start {
            self.pending.end = s.end;
        } else {
            self.flush();
            self.pending = s;
        }
        self.len += s.len();
    }

    /// Copy the pending run of old bytes, which ends at `len`.
    fn flush(&mut self) {
        let run = core::mem::take(&mut self.pending);
        if run.is_empty() {
            return;
        }
        let at = self.len - run.len();
        match self.out.get_mut(at..self.len) {
            Some(dst) => dst.copy_from_slice(&self.ed.buf[run.range()]),
            None => self.fail(EditError::NoRoom),
        }
    }

    /// Record a header line written from `line_start` to here, its name ending at `name_end`
    /// and its value between `vs` and `ve` (trimmed here: a part may bring whitespace).
    fn record(
        &mut self,
        name: HeaderName,
        line_start: usize,
        name_end: usize,
        vs: usize,
        ve: usize,
    ) {
        self.flush();
        if self.failed.is_some() {
            return;
        }
        if self.n == MAX_HEADERS {
            return self.fail(EditError::TooManyHeaders);
        }
        let (mut vs, mut ve) = (vs, ve);
        while vs < ve && lex::is_ws(self.out[vs]) {
            vs += 1;
        }
        while ve > vs && lex::is_ws(self.out[ve - 1]) {
            ve -= 1;
        }
        self.heads[self.n] = Header {
            name,
            line: Span::new(line_start, self.len),
            name_end: name_end as u32,
            value: Span::new(vs, ve),
        };
        self.n += 1;
    }

    /// Old header `i`, as it was.
    pub fn keep(&mut self, i: usize) {
        let Some(h) = self.ed.header(i) else {
            return self.fail(EditError::BadTarget);
        };
        let at = self.len;
        self.defer_old(h.line);
        let rel = |p: u32| at + (p - h.line.start) as usize;
        if self.failed.is_none() {
            self.heads_push(Header {
                name: h.name,
                line: Span::new(at, self.len),
                name_end: rel(h.name_end) as u32,
                value: Span::new(rel(h.value.start), rel(h.value.end)),
            });
        }
    }

    fn heads_push(&mut self, h: Header) {
        if self.n == MAX_HEADERS {
            return self.fail(EditError::TooManyHeaders);
        }
        self.heads[self.n] = h;
        self.n += 1;
    }

    /// Old header `i` with `span` (inside its value, or the whole value) replaced by `parts`.
    pub fn edit(&mut self, i: usize, span: Span, parts: &[&[u8]]) {
        let Some(h) = self.ed.header(i) else {
            return self.fail(EditError::BadTarget);
        };
        if span.start < h.value.start || span.end > h.value.end || span.start > span.end {
            return self.fail(EditError::BadTarget);
        }
        let at = self.len;
        self.defer_old(Span {
            start: h.line.start,
            end: h.value.start,
        });
        let vs = self.len;
        self.defer_old(Span {
            start: h.value.start,
            end: span.start,
        });
        for p in parts {
            self.put(p);
        }
        self.defer_old(Span {
            start: span.end,
            end: h.value.end,
        });
        let ve = self.len;
        self.defer_old(Span {
            start: h.value.end,
            end: h.line.end,
        });
        let name_end = at + (h.name_end - h.line.start) as usize;
        self.record(h.name, at, name_end, vs, ve);
    }

    /// A new line `Name: parts`.
    pub fn line(&mut self, name: HeaderName, parts: &[&[u8]]) {
        let at = self.len;
        self.put(name.as_str().as_bytes());
        let name_end = self.len;
        self.put(b": ");
        let vs = self.len;
        for p in parts {
            self.put(p);
        }
        let ve = self.len;
        self.put(b"\r\n");
        self.record(name, at, name_end, vs, ve);
    }

    /// Put the new header block in place of the old one. The body stays where it is when the
    /// headroom takes the new block, else it moves toward the tailroom; either way the room the
    /// editor keeps for the lower layers is left free.
    pub fn finish(mut self) -> Result<(), EditError> {
        let (old_start, headers_end, body) = {
            let idx = &self.ed.idx;
            (idx.msg_start, idx.headers_end, idx.body)
        };
        let head_end = self.len;
        self.copy_old(Span {
            start: headers_end,
            end: body.start,
        });
        if let Some(e) = self.failed {
            return Err(e);
        }
        let len = self.len;
        let ed = &mut *self.ed;
        let keep = ed.keep;
        let frame = ed.buf.len();
        let (bs, be) = (body.start as usize, body.end as usize);
        // the new block ends where the body starts, if the headroom allows; else it starts at
        // the first byte the lower layers leave us and the body moves up behind it
        let start = match bs.checked_sub(len) {
            Some(s) if s >= keep.head => s,
            _ => keep.head,
        };
        let new_bs = start + len;
        if new_bs + (be - bs) + keep.tail > frame {
            return Err(EditError::NoRoom);
        }
        if new_bs != bs {
            ed.buf.copy_within(bs..be, new_bs);
        }
        ed.buf[start..new_bs].copy_from_slice(&self.out[..len]);
        // the index: the start line moved by `start - old_start`, the entries by `start`
        let delta = start as isize - old_start as isize;
        let sh = |s: &mut Span, d: isize| {
            s.start = (s.start as isize + d) as u32;
            s.end = (s.end as isize + d) as u32;
        };
        let idx = &mut ed.idx;
        match &mut idx.start_line {
            msg::StartLine::Request {
                method,
                uri,
                version,
            } => {
                for s in [method, uri, version] {
                    sh(s, delta);
                }
            }
            msg::StartLine::Response {
                version, reason, ..
            } => {
                for s in [version, reason] {
                    sh(s, delta);
                }
            }
        }
        idx.set_headers(&self.heads[..self.n], start as u32);
        idx.msg_start = start as u32;
        idx.headers_end = (start + head_end) as u32;
        idx.body = Span::new(new_bs, new_bs + (be - bs));
        Ok(())
    }
}
