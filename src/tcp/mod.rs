//! TCP inside the SAs (TS 33.203 §7, RFC 3261 §18): SIP over a congestion-controlled transport
//! between the UE and us, carried in our own ESP.
//!
//! Since ESP is ours, so is the TCP inside it: segments never reach the kernel. Each SA set gets
//! an [`Endpoint`] (smoltcp, user space), with exactly the two connections TS 33.203 pairs with
//! the set's ports; a [`Host`] keeps every set's endpoint, frames the SIP messages of each
//! connection (`sip::Framer`) and runs the timers that bound what a peer may hold. Sans-IO:
//! decrypted IP packets and a `now` in, SIP messages and IP packets to encrypt out.

mod endpoint;
mod host;

pub use endpoint::{
    Conn, Endpoint, EndpointConfig, EndpointStats, PortPairs, SegmentError, Segments, SendError,
};
pub use host::{Host, HostConfig, HostError, HostStats, SLEEP_AFTER, SetId};

/// The earlier of two optional deadlines.
fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
