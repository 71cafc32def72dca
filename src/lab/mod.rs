//! Test-bed plumbing shared by the namespace tests, the perf tools and (next) `pcscf lab`.
//!
//! - [`netns`]: the three-namespace topology ue — pcscf — core, removed on drop.
//! - [`pcap`]: writing captures for tshark.

pub mod netns;
pub mod pcap;
