//! SIP: a zero-copy message view, an in-place editor, and the P-CSCF rewrites.
//!
//! - [`msg`] frames a datagram and indexes its start line and headers as byte ranges over the
//!   caller's buffer (no heap), and checks the RFC 3261 rules a proxy relies on.
//! - [`headers`] gives typed, zero-copy views of the header values the P-CSCF reads.
//! - [`edit`] rewrites a message inside its frame buffer, using headroom and tailroom.
//! - [`rules`] is the P-CSCF's registration-flow rules on top (TS 24.229 §5.2.2, RFC 3329).
//! - [`own`] is the one "is this URI us?" rule (Route pops, Request-URI checks).
//! - [`branch`] is our authenticated Via branch (what a response needs to find its way back).
//! - [`write`] is a tiny allocation-free formatter for header text.
//!
//! Nothing here allocates, locks or reads the clock.

pub mod branch;
pub mod edit;
pub mod headers;
pub mod lex;
pub mod msg;
pub mod own;
pub mod rules;
mod validate;
pub mod write;

pub use edit::{EditError, Editor};
pub use msg::{HeaderName, Index, Message, ParseError, ParseErrorKind, StartLine, View};
pub use own::OwnUris;
