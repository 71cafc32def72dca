//! Shared helpers for the ESP integration tests: packet builders with valid checksums.

use super::inet::{csum_add, csum_fold};
use pcscf::esp::{BackendKind, EspKeys, Frame, Sa, SaOptions, Suite};

pub const V4_SRC: [u8; 4] = [10, 77, 1, 2];
pub const V4_DST: [u8; 4] = [10, 77, 1, 1];
pub const V6_SRC: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const V6_DST: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const CK: [u8; 16] = [
    0xb4, 0x0b, 0xa9, 0xa3, 0xc5, 0x8b, 0x2a, 0x05, 0xbb, 0xf0, 0xd9, 0x87, 0xb2, 0x1b, 0xf8, 0xcb,
];
pub const IK: [u8; 16] = [
    0xf7, 0x69, 0xbc, 0xd7, 0x51, 0x04, 0x46, 0x04, 0x12, 0x76, 0x72, 0x71, 0x1c, 0x6d, 0x34, 0x41,
];
pub const HEADROOM: usize = 64;
pub const TAILROOM: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fam {
    V4,
    V6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Udp,
    Tcp,
}

/// The transport segment (UDP or TCP header + data) with a correct checksum.
pub fn l4_segment(fam: Fam, l4: L4, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    match l4 {
        L4::Udp => {
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
        }
        L4::Tcp => {
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&1000u32.to_be_bytes()); // seq
            seg.extend_from_slice(&0u32.to_be_bytes()); // ack
            seg.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // off=5, PSH|ACK
        }
    }
    seg.extend_from_slice(data);
    let proto = if l4 == L4::Udp { 17u8 } else { 6 };
    let mut sum = 0u32;
    match fam {
        Fam::V4 => {
            sum = csum_add(sum, &V4_SRC);
            sum = csum_add(sum, &V4_DST);
        }
        Fam::V6 => {
            sum = csum_add(sum, &V6_SRC);
            sum = csum_add(sum, &V6_DST);
        }
    }
    sum += u32::from(proto) + seg.len() as u32;
    sum = csum_add(sum, &seg);
    let mut c = csum_fold(sum);
    if c == 0 && l4 == L4::Udp {
        c = 0xffff;
    }
    let at = if l4 == L4::Udp { 6 } else { 16 };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    seg
}

/// A full IP packet. `v6_ext`: hop-by-hop + destination options headers before the segment.
pub fn ip_packet(fam: Fam, l4: L4, sport: u16, dport: u16, data: &[u8], v6_ext: bool) -> Vec<u8> {
    let seg = l4_segment(fam, l4, sport, dport, data);
    let proto = if l4 == L4::Udp { 17u8 } else { 6 };
    let mut p = Vec::new();
    match fam {
        Fam::V4 => {
            let total = (20 + seg.len()) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
            p.extend_from_slice(&V4_SRC);
            p.extend_from_slice(&V4_DST);
            pcscf::wire::Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        }
        Fam::V6 => {
            let ext: Vec<u8> = if v6_ext {
                // Hop-by-hop (8 bytes, PadN) -> Destination options (8 bytes, PadN) -> proto.
                vec![60, 0, 1, 4, 0, 0, 0, 0, proto, 0, 1, 4, 0, 0, 0, 0]
            } else {
                vec![]
            };
            let plen = (ext.len() + seg.len()) as u16;
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&plen.to_be_bytes());
            p.push(if v6_ext { 0 } else { proto });
            p.push(64);
            p.extend_from_slice(&V6_SRC);
            p.extend_from_slice(&V6_DST);
            p.extend_from_slice(&ext);
        }
    }
    p.extend_from_slice(&seg);
    p
}

/// A frame buffer with the packet at HEADROOM.
pub fn frame_buf(pkt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADROOM + pkt.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    buf
}

/// Encrypts `pkt` with `sa`, returning the ESP IP packet.
pub fn protect(sa: &Sa, pkt: &[u8]) -> Vec<u8> {
    let mut buf = frame_buf(pkt);
    let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
    sa.outbound(&mut f).expect("outbound");
    f.packet().to_vec()
}

pub fn sa(spi: u32, suite: Suite, backend: BackendKind) -> Sa {
    let keys = EspKeys::derive(suite, &CK, &IK);
    Sa::new(
        spi,
        suite,
        &keys,
        SaOptions {
            backend,
            ..SaOptions::default()
        },
    )
    .expect("sa")
}

pub fn suite_name(s: Suite) -> String {
    format!("{}+{}", s.integ().token(), s.enc().token())
}

/// Read the capture `pcap` with tshark, ESP decrypted and authenticated with the SAs of the
/// `esp_sa` file in `dir` (used as Wireshark's configuration directory), `extra` options
/// first: one row per packet, its `fields` in order. Fails the test when tshark does.
pub fn tshark_esp_rows(
    dir: &std::path::Path,
    pcap: &std::path::Path,
    extra: &[&str],
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = std::process::Command::new("tshark");
    cmd.env("WIRESHARK_CONFIG_DIR", dir).arg("-r").arg(pcap);
    cmd.args([
        "-o",
        "esp.enable_encryption_decode:TRUE",
        "-o",
        "esp.enable_authentication_check:TRUE",
    ]);
    cmd.args(extra).args(["-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark is required (CI installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}
