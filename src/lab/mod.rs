//! Test-bed plumbing shared by the namespace tests, the perf tools and (next) `pcscf lab`.
//!
//! - [`dns`]: the lab's DNS server (NAPTR / SRV / A for the home domain).
//! - [`netns`]: the three-namespace topology ue — pcscf — core, removed on drop.
//! - [`pcap`]: writing captures for tshark.
//! - [`run`]: `pcscf lab`, everything in one command.

pub mod dns;
pub mod netns;
pub mod pcap;
pub mod run;
