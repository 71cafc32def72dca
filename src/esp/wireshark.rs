//! Key logging for Wireshark: one line of its `esp_sa` table (Protocols → ESP → ESP SAs; the
//! UAT file `esp_sa` in a configuration directory) per SA, so an operator can read protected
//! SIP in a capture. Key material leaves the process only through here, and only when the
//! operator asked for a key log.

use std::net::IpAddr;

use super::alg::{EncAlg, IntegAlg, Suite};
use super::keys::EspKeys;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `esp_sa` line for an SA, with `*` for any source and destination of the family of
/// `ue`. `None` for aes-gmac, which Wireshark cannot check.
pub fn esp_sa_line(ue: IpAddr, spi: u32, suite: Suite, keys: &EspKeys) -> Option<String> {
    let key = |b: &[u8]| {
        if b.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex(b))
        }
    };
    let (enc, ekey, auth, akey) = match (suite.integ(), suite.enc()) {
        (IntegAlg::Null, EncAlg::AesGcm) => (
            "AES-GCM with 16 octet ICV [RFC4106]",
            // RFC 4106: the key is the AES key followed by the 4-byte salt
            format!("0x{}{}", hex(keys.enc_key()), hex(&keys.salt())),
            "NULL",
            String::new(),
        ),
        (IntegAlg::AesGmac, _) => return None,
        (i, e) => (
            match e {
                EncAlg::Null => "NULL",
                EncAlg::AesCbc => "AES-CBC [RFC3602]",
                _ => "TripleDES-CBC [RFC2451]",
            },
            key(keys.enc_key()),
            if i == IntegAlg::HmacMd5_96 {
                "HMAC-MD5-96 [RFC2403]"
            } else {
                "HMAC-SHA-1-96 [RFC2404]"
            },
            key(keys.auth_key()),
        ),
    };
    let family = if ue.is_ipv4() { "IPv4" } else { "IPv6" };
    Some(format!(
        "\"{family}\",\"*\",\"*\",\"0x{spi:08x}\",\"{enc}\",\"{ekey}\",\"{auth}\",\"{akey}\"\n"
    ))
}
