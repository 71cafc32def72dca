//! What the measurements share, so they time the same bytes: the pipeline MESSAGE and SA table
//! (`perf/pipeline_loop.rs`, `bench/pipeline.rs`), the SIP benches' identity (`perf/sip_loop.rs`,
//! `bench/sip.rs`). Each includes this file with `#[path]`; what one does not use is dead there.

/// The registered UE's MESSAGE number `n`: 974 bytes of SIP (a 560-byte text body), 1002 B as
/// IPv4/UDP; forwarded it is 1030 B of SIP. The core's 200 to it is 294 B of SIP, 230 B once
/// our Via is gone.
pub fn message(n: usize) -> Vec<u8> {
    let body = "x".repeat(560);
    format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/UDP 10.46.0.6:7005;branch=z9hG4bK{n:08}\r\nMax-Forwards: 70\r\nRoute: <sip:pcscf.ims.example.net:5103;lr>\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: pipeline-{n:08}@10.46.0.6\r\nCSeq: 1 MESSAGE\r\nP-Preferred-Identity: <sip:alice@ims.example.net>\r\nUser-Agent: pipeline_loop\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An SA table for a handful of UEs.
pub fn small_table() -> (pcscf::satable::SaWriter, pcscf::satable::SaReader) {
    pcscf::satable::sa_table(pcscf::satable::SaTableConfig {
        inbound_capacity: 1024,
        outbound_capacity: 1024,
        spi_min: 4096,
        spi_max: 1 << 20,
    })
    .expect("a valid table")
}

/// The P-CSCF identity and algorithm preferences of the SIP benchmarks (`bench/sip.rs`,
/// `perf/sip_loop.rs`).
pub const PREFS: &[(pcscf::esp::IntegAlg, pcscf::esp::EncAlg)] = &[
    (
        pcscf::esp::IntegAlg::HmacSha1_96,
        pcscf::esp::EncAlg::AesCbc,
    ),
    (pcscf::esp::IntegAlg::HmacMd5_96, pcscf::esp::EncAlg::Null),
];
static OWN: std::sync::LazyLock<pcscf::sip::OwnUris> = std::sync::LazyLock::new(|| {
    pcscf::sip::OwnUris::new(
        &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
        &["10.46.0.1".parse().unwrap()],
        &[5060],
        Some(5100..=5199),
    )
});
/// Who the P-CSCF is in the benchmarks (the REGISTER fixtures' P-CSCF).
pub fn me() -> pcscf::sip::rules::ProxyIdentity<'static> {
    pcscf::sip::rules::ProxyIdentity {
        via_sent_by: b"10.0.1.10:5060",
        via_transport: b"UDP",
        path_uri: b"sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;lr",
        own: &OWN,
        visited_network_id: b"\"Visited Network\"",
        orig_ioi: b"ims.mnc001.mcc001.3gppnetwork.org",
    }
}

/// A MESSAGE of exactly `len` bytes (a text body of x's) sent over TCP by the UE at `ue`, number
/// `n` in its Via branch and Call-ID (`perf/tcp_loop.rs`, `perf/tcp_tun.rs`).
pub fn tcp_message(n: usize, len: usize, ue: &str) -> Vec<u8> {
    let head = format!(
        "MESSAGE sip:bob@ims.example.net SIP/2.0\r\nVia: SIP/2.0/TCP {ue}:7005;branch=z9hG4bK{n:08}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@ims.example.net>;tag=a1\r\nTo: <sip:bob@ims.example.net>\r\nCall-ID: tcp-{n:08}@{ue}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: "
    );
    let body_len = len - head.len() - 8;
    let mut m = format!("{head}{body_len:04}\r\n\r\n").into_bytes();
    m.extend(std::iter::repeat_n(b'x', body_len));
    assert_eq!(m.len(), len);
    m
}
