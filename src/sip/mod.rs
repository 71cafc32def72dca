//! SIP: a zero-copy message view, an in-place editor, and the P-CSCF's rules on top.
//!
//! Layers, lowest first; a file imports only from layers below its own (no circle; the layering
//! of ezk's `sip-types`, parse → typed headers → message, without its allocations):
//!
//! 0. `lex.rs`: the lexical level of RFC 3261 §25.1 (character classes, trim/unquote, quoted
//!    strings, list and `;` parameter iterators, `parse_u64`); `write.rs` ([`Writer`]), a tiny
//!    allocation-free formatter; `own.rs` ([`OwnUris`]), the one "is this URI us?" rule (Route pops,
//!    Request-URI checks); `transport.rs` ([`Transport`]): UDP or TCP, as a Via names it and as
//!    RFC 3263 resolution picks it.
//! 1. [`headers`]: typed, zero-copy views of the header values the P-CSCF reads, one file per
//!    header family (`via`, `name_addr`, `cseq`, `digest`, `sec_agree`, `uri`); built on
//!    `lex`. `msg.rs` ([`Message`], [`View`], [`Index`]): frames a datagram and indexes its start line and headers as byte ranges
//!    over the caller's buffer; built on `lex`. [`branch`]: our authenticated Via branch (what
//!    a response needs to find its way back); [`flow`]: the flow token of our Record-Route
//!    entries (what a request inside a dialog needs: the UE's registration and address);
//!    both built on `write`.
//! 2. `validate` ([`View::validate`], [`Message::parse_strict`]): the RFC 3261 checks a proxy
//!    applies before it trusts a message; on `msg` and `headers`. `stream.rs` ([`Framer`]):
//!    cuts SIP over TCP into whole messages and keep-alive pings (RFC 3261 §18.3, §7.5;
//!    RFC 5626 §3.5.1), reading lines and Content-Length as `msg` does; on `msg` and `lex`.
//!    `edit.rs` ([`Editor`]): rewrites a message inside its frame buffer, using headroom and
//!    tailroom; on `msg`, `lex` and `write`.
//! 3. [`rules`]: the P-CSCF's rules, one file per job: `register` (the registration flow,
//!    TS 24.229 §5.2.2, TS 33.203 §7, RFC 3329), `relay` (forwarding requests), `reply`
//!    (responses), `dialog` (record-routing and the route set of a dialog, RFC 3261 §12,
//!    RFC 5658, TS 24.229 §5.2.6): the checks, the rewrites and the error responses; on
//!    everything below.
//!
//! Beside the layers, [`reginfo`] parses the body of a registration-event NOTIFY
//! (`application/reginfo+xml`, RFC 3680) into owned state; it uses `headers` only to match
//! contact URIs.
//!
//! The files of layers 0–2 are private: what they offer is re-exported here; `headers`,
//! `branch`, `flow`, `reginfo` and `rules` are namespaces of their own.
//!
//! Nothing here locks or reads the clock, and nothing here is `unsafe`; nothing allocates but
//! [`reginfo`], whose result outlives the NOTIFY it came in (off the per-packet path).

#![forbid(unsafe_code)]

pub mod branch;
mod edit;
pub mod flow;
pub mod headers;
mod lex;
mod msg;
mod own;
pub mod reginfo;
pub mod rules;
mod stream;
mod transport;
mod validate;
mod write;

pub use edit::{EditError, Editor, Keep, Rebuild};
pub use msg::{HeaderName, Index, Message, ParseError, ParseErrorKind, Span, StartLine, View};
pub use own::OwnUris;
pub use stream::{Frame, FrameError, Framer};
pub use transport::{T1, T2, TIMER_F, Transport};
pub use validate::{Checked, TopVia};
pub use write::Writer;
