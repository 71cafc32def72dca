//! The P-CSCF's SIP rules: what it checks in a message and how it rewrites it, in place.
//!
//! One file per job, each knowing nothing of sockets, SAs or time (the caller passes in the
//! addresses, our identity, the branch and ICID values, the Security-Server text):
//! - [`register`](mod@register): the registration flow (TS 24.229 §5.2.2, TS 33.203 §7,
//!   RFC 3329, RFC 3327): the checks on a REGISTER from the UE, its rewrite toward the
//!   I-CSCF, the 401 and 200 rewrites toward the UE, the Security-Verify / Security-Client
//!   comparison of the protected REGISTER;
//! - [`relay`](mod@relay): forwarding any other request (RFC 3261 §16.6, RFC 3581, TS 24.229
//!   §5.2.6.3 and §5.2.6.4): our Via, received/rport, Max-Forwards, our Route entries popped,
//!   the Service-Route and the asserted identity of a registered UE's request;
//! - [`reply`](mod@reply): responses (RFC 3261 §16.7, §18.2.2): is the top Via ours, where a
//!   response goes, building our own responses and error answers;
//! - [`dialog`](mod@dialog): dialogs (RFC 3261 §12, §16.4, §16.12, RFC 5658, TS 24.229
//!   §5.2.6.3 and §5.2.6.4): which requests are record-routed, our two Record-Route entries
//!   with their flow tokens, popping them from a request inside a dialog, and the Record-Route
//!   of the responses that set one up.
//!
//! Owns the shared vocabulary: who we are ([`ProxyIdentity`]) and why a request is refused
//! ([`Reject`], [`RejectWhy`]). Every `rules::name` the rest of the crate uses is re-exported
//! here.

pub mod dialog;
pub mod register;
#[cfg(test)]
mod register_reference;
pub mod relay;
pub mod reply;

pub use dialog::{
    DialogError, DialogRoute, OurEntries, RequestKind, classify, classify_with, pop_dialog_routes,
    record_route, response_from_ue, response_to_ue,
};
pub use register::{
    AkaKeys, Forward, MAX_ROUTES, REWRITE_SCRATCH, RegisterInfo, Registered, SpanList,
    check_protected_register, check_register, copy_security_client, has_aka_keys, impi_from_impu,
    rewrite_200, rewrite_401, rewrite_register, strict_digest_params, write_security_server,
};
pub use relay::{
    forward_request, max_forwards_exhausted, pop_own_routes, request_uri_addr,
    request_uri_wants_tcp, rewrite_protected_request, rewrite_request_to_ue, set_top_via_transport,
    stateless_branch, stateless_branch_of, strip_charging, uri_wants_tcp,
};
pub use reply::{
    ALLOW_TO_US, ControlBranch, PCSCF_DEREG_BRANCH, RELEASE_BRANCH, SUBSCRIBE_BRANCH, TopVia,
    answer_to_us, assert_identity, build_reject, build_response, control_branch, cseq_method,
    is_final_to_invite, pop_top_via, pop_top_via_at, reply_port, response_next_hop, top_via_ours,
    top_via_ours_at, top_via_ours_split, top_via_port, top_via_sent_by, via_count,
};

use super::own::OwnUris;

/// Who we are, as written into forwarded messages. Built once from configuration.
#[derive(Clone, Copy, Debug)]
pub struct ProxyIdentity<'a> {
    /// Core-side Via sent-by, `host[:port]`.
    pub via_sent_by: &'a [u8],
    /// Core-side Via transport token, e.g. `UDP`.
    pub via_transport: &'a [u8],
    /// The URI we put in Path (RFC 3327), without the angle brackets, e.g.
    /// `sip:term@pcscf.ims.example.net:5060;lr`.
    pub path_uri: &'a [u8],
    /// What names us in a Route or Request-URI (addresses, hostnames, ports).
    pub own: &'a OwnUris,
    /// P-Visited-Network-ID value (RFC 7315 §4.3), token or quoted string as written.
    pub visited_network_id: &'a [u8],
    /// orig-ioi for P-Charging-Vector (type 1 IOI naming our network).
    pub orig_ioi: &'a [u8],
}

/// A SIP error to answer a request with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reject {
    pub code: u16,
    pub reason: &'static str,
    /// Why, for logs and counters.
    pub why: RejectWhy,
}

/// The reason behind a [`Reject`], one per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectWhy {
    NotRegister,
    TooManyHops,
    /// Proxy-Require names an option we do not support (RFC 3261 §16.3 item 4); the 420 lists
    /// them in Unsupported.
    UnsupportedProxyRequire,
    NoSecurityClient,
    /// Security-Client present but `sec-agree` not in Require and Proxy-Require (RFC 3329 §2.3.1).
    SecAgreeNotRequired,
    NoAcceptableMechanism,
    NoAuthorization,
    SecurityVerifyMismatch,
    SecurityClientMismatch,
    /// The Via of a protected request does not name the UE the SA belongs to.
    ViaMismatch,
    /// The next hop (the I-CSCF of the home domain) could not be found.
    NoNextHop,
    /// Too many REGISTER transactions in progress (a flood, or a core that stopped answering).
    Overloaded,
    /// A protected REGISTER names another IMPI than its SA set was created for.
    ImpiMismatch,
    /// The Request-URI names a domain we do not serve, or an IP address.
    UnknownHomeDomain,
    /// The IMPI already has as many challenges in progress as we allow.
    TooManyChallenges,
    Malformed,
}

impl Reject {
    const fn new(code: u16, reason: &'static str, why: RejectWhy) -> Reject {
        Reject { code, reason, why }
    }
}
