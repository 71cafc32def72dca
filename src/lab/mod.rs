//! Test-bed plumbing shared by the namespace tests, the perf tools and (next) `pcscf lab`.
//!
//! - `dns.rs`: the lab's DNS server (NAPTR / SRV / A for the home domain).
//! - `netns.rs`: the three-namespace topology ue — pcscf — core ([`Lab`]), removed on drop.
//! - `pcap.rs`: writing captures for tshark ([`write_raw`]).
//! - `run.rs`: `pcscf lab`, everything in one command ([`run`]).

mod dns;
mod netns;
mod pcap;
mod run;

pub use dns::answer as dns_answer;
pub use netns::{Lab, Standby, check_privileges, ip, spawn_in};
pub use pcap::write_raw;
pub use run::{LabConfig, run};
