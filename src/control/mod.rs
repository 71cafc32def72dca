//! The control plane: the registration state machine and what it needs (DNS resolution, rate
//! limits, the key log, logging). Sans-IO where it can be: the daemon (`crate::daemon`) carries
//! its sockets, queues and timers.

#![forbid(unsafe_code)]

pub mod dns;
pub mod keylog;
pub mod log;
pub mod ratelimit;
pub mod registrar;

pub use keylog::open_keylog;
