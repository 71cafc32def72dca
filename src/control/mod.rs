//! The control plane: the registration state machine and what it needs (DNS resolution, rate
//! limits, the key log, logging). Sans-IO where it can be: the daemon (`crate::daemon`) carries
//! its sockets, queues and timers.

#![forbid(unsafe_code)]

pub mod ctl;
pub mod dialogs;
pub(crate) mod dns;
mod idmap;
pub(crate) mod keylog;
pub(crate) mod log;
mod ratelimit;
pub mod regevent;
pub mod registrar;
pub mod store;

pub use keylog::{FileKeyLog, KeyLog, SaSecret, open_keylog};
