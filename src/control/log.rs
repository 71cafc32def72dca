//! A small leveled logger to stderr: one line per event, with a UTC timestamp and the level,
//! so a 3 a.m. reader can grep it. The level is set once from the configuration.

use std::fmt::Arguments;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

fn emit(l: LogLevel, tag: &str, args: Arguments<'_>) {
    if (l as u8) > LEVEL.load(Ordering::Relaxed) {
        return;
    }
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (s, ms) = (t.as_secs(), t.subsec_millis());
    let (h, m, sec) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
    eprintln!("{h:02}:{m:02}:{sec:02}.{ms:03}Z {tag} {args}");
}

pub fn error(args: Arguments<'_>) {
    emit(LogLevel::Error, "ERROR", args)
}
pub fn warn(args: Arguments<'_>) {
    emit(LogLevel::Warn, "WARN ", args)
}
pub fn info(args: Arguments<'_>) {
    emit(LogLevel::Info, "INFO ", args)
}
pub fn debug(args: Arguments<'_>) {
    emit(LogLevel::Debug, "DEBUG", args)
}
