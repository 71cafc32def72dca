//! The transport a SIP message goes over (RFC 3261 §18): what a Via's sent-protocol names and
//! what RFC 3263 resolution picks for a next hop.

/// SIP over UDP or over TCP (TLS and SCTP are not spoken here). In the configuration
/// (`core.icscf_transport`) it is written `"udp"` or `"tcp"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RFC 3261 §18.1.1: the default for a `sip:` URI without a transport (RFC 3263 §4.1).
    #[default]
    Udp,
    Tcp,
}

impl Transport {
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
