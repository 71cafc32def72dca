//! A small leveled logger to stderr: one line per event, with a UTC timestamp and the level,
//! so a 3 a.m. reader can grep it. The level is set once from the configuration.
//!
//! Many events can be caused by anyone who can send us a datagram (a REGISTER for a domain we do
//! not serve, a forged identity): those are logged with [`event`], whose lines pass a budget
//! ([`LINES_PER_SECOND`], a burst of [`LINE_BURST`]) so a flood cannot turn into a flood of log
//! writes on the registration thread; what the budget holds back is counted and said in the next
//! line that passes ("N lines suppressed"). Every event is still counted in its own counter.
//! The daemon's own lines (start, stop, the report) are never held back.
//!
//! `pcscf run` writes its lines through a thread of their own ([`spawn_writer`]): a slow reader
//! of stderr (journald under load, a full pipe) never blocks the registration thread. Its queue
//! is bounded ([`QUEUE_LINES`]); a line that finds it full is dropped and counted, and the next
//! line that passes says how many went.

use std::fmt::{Arguments, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

/// Sustained lines per second below ERROR.
pub const LINES_PER_SECOND: f64 = 50.0;
/// Lines that may come at once.
pub const LINE_BURST: f64 = 200.0;

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

/// The level in force (`pcscf ctl log level` changes it while running).
pub fn level() -> LogLevel {
    match LEVEL.load(Ordering::Relaxed) {
        x if x == LogLevel::Error as u8 => LogLevel::Error,
        x if x == LogLevel::Warn as u8 => LogLevel::Warn,
        x if x == LogLevel::Info as u8 => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// A token bucket over log lines that remembers how many it refused.
#[derive(Debug)]
pub struct LineBudget {
    rate: f64,
    burst: f64,
    state: Option<(f64, Instant, u64)>,
}

impl LineBudget {
    pub const fn new(rate: f64, burst: f64) -> Self {
        LineBudget {
            rate,
            burst,
            state: None,
        }
    }

    /// May a line go out at `now`? `Some(n)`: yes, and `n` lines were held back since the last
    /// one that went; `None`: no (counted).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let (tokens, at, held) = self.state.get_or_insert((self.burst, now, 0));
        let dt = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + dt * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Some(std::mem::take(held))
        } else {
            *held += 1;
            None
        }
    }
}

static BUDGET: Mutex<LineBudget> = Mutex::new(LineBudget::new(LINES_PER_SECOND, LINE_BURST));

fn emit(l: LogLevel, tag: &str, args: Arguments<'_>, budgeted: bool) {
    if (l as u8) > LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let held = if !budgeted {
        0
    } else {
        // a poisoned lock only means a panic elsewhere while it was held: the bucket is fine
        let mut b = BUDGET.lock().unwrap_or_else(|p| p.into_inner());
        match b.admit(Instant::now()) {
            Some(n) => n,
            None => return,
        }
    };
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (s, ms) = (t.as_secs(), t.subsec_millis());
    let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    let mut text = String::new();
    if held > 0 {
        let _ = writeln!(
            text,
            "{h:02}:{m:02}:{sec:02}.{ms:03}Z WARN  {held} log lines suppressed (over {LINES_PER_SECOND}/s)"
        );
    }
    let _ = writeln!(text, "{h:02}:{m:02}:{sec:02}.{ms:03}Z {tag} {args}");
    let writer = WRITER.lock().unwrap_or_else(|p| p.into_inner());
    match writer.as_ref() {
        Some(tx) => {
            let lost = DROPPED.swap(0, Ordering::Relaxed);
            if lost > 0 {
                text.insert_str(
                    0,
                    &format!(
                        "{h:02}:{m:02}:{sec:02}.{ms:03}Z WARN  {lost} log lines dropped (stderr's reader fell behind)\n"
                    ),
                );
            }
            if let Err(TrySendError::Full(_)) = tx.try_send(text) {
                DROPPED.fetch_add(lost + 1, Ordering::Relaxed);
            }
        }
        None => {
            drop(writer);
            eprint!("{text}");
        }
    }
}

/// Lines the writer thread's queue holds at most.
pub const QUEUE_LINES: usize = 4096;

/// The writer thread's queue, while one runs.
static WRITER: Mutex<Option<SyncSender<String>>> = Mutex::new(None);
/// Lines dropped since the last one that went.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// While held, log lines go through a thread of their own; dropping it writes what is queued
/// and ends the thread (lines after it go straight to stderr again).
#[derive(Debug)]
pub struct WriterGuard {
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the writer thread ([`WriterGuard`]).
pub fn spawn_writer() -> std::io::Result<WriterGuard> {
    let (tx, rx) = sync_channel::<String>(QUEUE_LINES);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            use std::io::Write as _;
            let mut err = std::io::stderr().lock();
            for line in rx {
                let _ = err.write_all(line.as_bytes());
            }
            let _ = err.flush();
        })?;
    *WRITER.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    Ok(WriterGuard {
        thread: Some(thread),
    })
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        // the sender goes: the thread writes what is queued, then ends
        WRITER.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let lost = DROPPED.swap(0, Ordering::Relaxed);
        if lost > 0 {
            eprintln!("WARN  {lost} log lines dropped (stderr's reader fell behind)");
        }
    }
}

pub fn error(args: Arguments<'_>) {
    emit(LogLevel::Error, "ERROR", args, false)
}
pub fn warn(args: Arguments<'_>) {
    emit(LogLevel::Warn, "WARN ", args, false)
}
pub fn info(args: Arguments<'_>) {
    emit(LogLevel::Info, "INFO ", args, false)
}
pub fn debug(args: Arguments<'_>) {
    emit(LogLevel::Debug, "DEBUG", args, true)
}
/// A warning about something a peer did (any peer can cause it): under the line budget.
pub fn event(args: Arguments<'_>) {
    emit(LogLevel::Warn, "WARN ", args, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_flood_is_held_to_the_budget_and_the_held_lines_are_reported() {
        let mut b = LineBudget::new(10.0, 5.0);
        let t0 = Instant::now();
        let passed = (0..1000).filter(|_| b.admit(t0).is_some()).count();
        assert_eq!(passed, 5, "the burst, then nothing");
        // a tenth of a second later one token is back: the line says what was held
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), Some(995));
        assert_eq!(b.admit(t0 + Duration::from_millis(100)), None);
        // a quiet minute refills only to the burst
        let later = t0 + Duration::from_secs(60);
        assert_eq!(b.admit(later), Some(1));
        assert_eq!((1..5).filter(|_| b.admit(later).is_some()).count(), 4);
        assert_eq!(b.admit(later), None);
    }
}
