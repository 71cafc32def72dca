//! The transport a SIP message goes over (RFC 3261 §18): what a Via's sent-protocol names and
//! what RFC 3263 resolution picks for a next hop.

/// RFC 3261 §17.1.1.1 / Table 4: T1, the round-trip estimate a client transaction over UDP
/// starts its retransmissions at; T2, the most they are apart for a non-INVITE request
/// (§17.1.2.2, Timer E); and 64·T1, how long a client transaction waits for its final response
/// (Timer B / Timer F).
pub const T1: core::time::Duration = core::time::Duration::from_millis(500);
pub const T2: core::time::Duration = core::time::Duration::from_secs(4);
pub const TIMER_F: core::time::Duration = core::time::Duration::from_secs(32);

/// SIP over UDP or over TCP (TLS and SCTP are not spoken here). In the configuration
/// (`core.icscf_transport`) it is written `"udp"` or `"tcp"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 3261 §18.1.1: the default for a `sip:` URI without a transport (RFC 3263 §4.1).
    #[default]
    Udp,
    Tcp,
}

impl Transport {
    /// TCP when `tcp`, else UDP.
    pub fn tcp_if(tcp: bool) -> Transport {
        if tcp { Transport::Tcp } else { Transport::Udp }
    }

    /// The transport token of a Via (`SIP/2.0/<this>`, RFC 3261 §20.42): `UDP` or `TCP`.
    pub fn as_via(&self) -> &'static [u8] {
        match self {
            Transport::Udp => b"UDP",
            Transport::Tcp => b"TCP",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_tokens() {
        assert_eq!(Transport::Udp.as_via(), b"UDP");
        assert_eq!(Transport::Tcp.as_via(), b"TCP");
        assert_eq!(Transport::default(), Transport::Udp);
    }
}
