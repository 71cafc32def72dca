//! Next-hop MACs for transmit: the one question the AF_XDP backend asks the neighbour table.
//!
//! Owns: the [`NeighLookup`] interface and [`StaticNeigh`], a small table filled by the caller
//! (the netlink neighbour code, or a test). Looked up once per transmitted packet from
//! memory, never with a syscall.

use std::net::IpAddr;

/// Gives the Ethernet destination for an IP destination (the next hop's MAC: the host's own
/// on-link, the gateway's otherwise). `None`: unknown, the packet is dropped and counted.
pub trait NeighLookup: Send {
    fn lookup(&self, dst: IpAddr) -> Option<[u8; 6]>;
}

impl<F> NeighLookup for F
where
    F: Fn(IpAddr) -> Option<[u8; 6]> + Send,
{
    fn lookup(&self, dst: IpAddr) -> Option<[u8; 6]> {
        self(dst)
    }
}

/// A static table: exact entries, then an optional default (the gateway's MAC).
#[derive(Debug, Clone, Default)]
pub struct StaticNeigh {
    entries: Vec<(IpAddr, [u8; 6])>,
    default: Option<[u8; 6]>,
}

impl StaticNeigh {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the MAC for `ip`.
    pub fn set_neighbour(&mut self, ip: IpAddr, mac: [u8; 6]) {
        match self.entries.iter_mut().find(|(a, _)| *a == ip) {
            Some(e) => e.1 = mac,
            None => self.entries.push((ip, mac)),
        }
    }

    pub fn remove(&mut self, ip: IpAddr) {
        self.entries.retain(|(a, _)| *a != ip);
    }

    /// MAC for every destination without an entry (`None`: drop those).
    pub fn set_default(&mut self, mac: Option<[u8; 6]>) {
        self.default = mac;
    }
}

impl NeighLookup for StaticNeigh {
    fn lookup(&self, dst: IpAddr) -> Option<[u8; 6]> {
        self.entries
            .iter()
            .find(|(a, _)| *a == dst)
            .map(|e| e.1)
            .or(self.default)
    }
}
