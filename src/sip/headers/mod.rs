//! Typed, zero-copy views of the header values the P-CSCF reads, one file per header family.
//!
//! Owns: Via ([`Via`]), name-addr ([`NameAddr`]: From/To/Contact/Route/Path/Service-Route/
//! P-Associated-URI), CSeq ([`cseq`]), Digest credentials and challenges ([`Digest`], RFC 2617 /
//! RFC 3310 / TS 24.229 §7.2A.1–2), the sec-agree mechanisms ([`SecMechanism`], RFC 3329 §2.2,
//! TS 33.203 Annex H), and the URI parts we read ([`uri_hostport`], [`split_host_port`]).
//! Built on `sip/lex.rs` only; knows no message. Every function takes a byte slice and
//! returns sub-slices of it; nothing allocates, and a malformed value yields `None` or an
//! error, never a panic.

mod cseq;
#[cfg(test)]
mod differential;
mod digest;
mod name_addr;
mod sec_agree;
mod uri;
mod via;

pub use cseq::cseq;
pub use digest::{Digest, hex16};
pub use name_addr::NameAddr;
pub use sec_agree::{IpsecOffer, ParamSet, SecError, SecMechanism, mechanisms};
pub use uri::{request_uri_ok, same_identity, split_host_port, uri_host, uri_hostport, uri_params};
pub use via::Via;
