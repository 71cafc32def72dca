//! Simulators for labs and tests: the IMS core ([`core`]: I-CSCF + S-CSCF + HSS) and many UEs
//! ([`ue`]), built on the same SIP, AKA and ESP code as the P-CSCF but playing the other roles.

pub mod core;
pub mod ue;
