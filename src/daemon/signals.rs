//! SIGINT / SIGTERM: the process-wide stop flag that `pcscf run` and `pcscf lab` poll; SIGHUP:
//! the reload flag the registration thread takes ([`take_reload`]).

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT / SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::SeqCst);
}

/// Set by SIGHUP.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hup(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RELOAD.store(true, Ordering::SeqCst);
}

/// Whether SIGHUP came since the last call (the flag is cleared).
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}

/// SIGINT / SIGTERM set the stop flag ([`stop_requested`]), SIGHUP the reload flag.
pub fn install_signal_handlers() {
    // SAFETY: as below: `on_hup` only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C"` function that only stores to an atomic, which
        // is async-signal-safe; `signal` has no other preconditions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT / SIGTERM arrived (or [`request_stop`] was called).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ask a running [`super::run`] to stop (what the signal handlers do).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Clear the flag as a run starts (a stop asked of an earlier run ends only that one).
pub(crate) fn clear() {
    STOP.store(false, Ordering::SeqCst);
}
