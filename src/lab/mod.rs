//! Test-bed plumbing shared by the namespace tests, the perf tools and (next) `pcscf lab`.
//!
//! - [`netns`]: the three-namespace topology ue — pcscf — core, removed on drop.
//! - [`pcap`]: writing captures for tshark.
//! - [`run`]: `pcscf lab`, everything in one command.

pub mod netns;
pub mod pcap;
pub mod run;
