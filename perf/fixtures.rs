//! Messages shared by the in-memory pipeline measurements (`perf/pipeline_loop.rs`,
//! `bench/pipeline.rs`), so both time the same bytes.

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
