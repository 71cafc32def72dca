//! Simulators for labs and tests: the IMS core ([`core`]: I-CSCF + S-CSCF + HSS, over UDP and
//! TCP with [`corenet`]) and many UEs
//! ([`ue`], with SIP over TCP inside their SAs in [`uetcp`]), built on the same SIP, AKA and ESP code as the P-CSCF but playing the other roles,
//! the raw IP sockets they send and receive ESP with ([`rawip`]: no kernel IPsec), and what both
//! need for calls ([`call`]), and the S-CSCF's reg event package ([`regevent`]).

pub mod call;
pub mod core;
pub mod corenet;
pub mod hostile;
pub mod rawip;
pub mod regevent;
pub mod ue;
pub mod uetcp;
