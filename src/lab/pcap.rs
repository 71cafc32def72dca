//! Writing packets to a classic pcap file (LINKTYPE_RAW: each record is an IP packet), for
//! captures that tshark or Wireshark read back — with a key log, decrypted.

use std::io::Write;
use std::path::Path;

/// Write `pkts` (IPv4 or IPv6 packets) to `path`, one second apart from a fixed epoch.
pub fn write_raw(path: &Path, pkts: &[&[u8]]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(&0xa1b2_c3d4u32.to_le_bytes())?; // magic, microsecond timestamps
    f.write_all(&2u16.to_le_bytes())?;
    f.write_all(&4u16.to_le_bytes())?;
    f.write_all(&0i32.to_le_bytes())?;
    f.write_all(&0u32.to_le_bytes())?;
    f.write_all(&65535u32.to_le_bytes())?;
    f.write_all(&101u32.to_le_bytes())?; // LINKTYPE_RAW
    for (i, p) in pkts.iter().enumerate() {
        f.write_all(&(1_700_000_000u32 + i as u32).to_le_bytes())?;
        f.write_all(&0u32.to_le_bytes())?;
        f.write_all(&(p.len() as u32).to_le_bytes())?;
        f.write_all(&(p.len() as u32).to_le_bytes())?;
        f.write_all(p)?;
    }
    f.flush()
}
