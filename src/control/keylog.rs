//! The key log: where the registrar reports the keys of each SA it installs, so that an operator
//! who asked for it (`--keylog FILE`) can read protected SIP in a capture.
//!
//! Owns: the [`KeyLog`] trait the sans-IO registrar calls (it has none by default: no key
//! material leaves it), and [`FileKeyLog`], the daemon's implementation, which appends
//! Wireshark `esp_sa` lines to a file from a thread of its own so the registration thread never
//! waits on the disk.

use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;

use zeroize::Zeroizing;

use crate::esp::{EspKeys, Suite};

/// One SA's secrets as the registrar installs it: the UE's address, the SPI, the suite and the
/// keys derived from CK/IK (TS 33.203 Annex I).
#[derive(Clone, Copy)]
pub struct SaSecret<'a> {
    pub ue: IpAddr,
    pub spi: u32,
    pub suite: Suite,
    pub keys: &'a EspKeys,
}

impl std::fmt::Debug for SaSecret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the keys
        f.debug_struct("SaSecret")
            .field("ue", &self.ue)
            .field("spi", &self.spi)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SaSecret<'_> {
    /// Its line of Wireshark's `esp_sa` table (`None` for a suite Wireshark cannot check).
    pub fn esp_sa_line(&self) -> Option<String> {
        crate::esp::wireshark::esp_sa_line(self.ue, self.spi, self.suite, self.keys)
    }
}

/// Receives every SA's secrets as the registrar installs them (after rustls's `KeyLog`). It is
/// called on the registration thread, so an implementation must not block.
pub trait KeyLog: Send + Sync {
    fn log(&self, sa: &SaSecret<'_>);
}

/// Lines a [`FileKeyLog`] holds for its writer at most; past it a line is dropped (counted).
const QUEUE: usize = 4096;

/// `--keylog FILE`: each SA as a Wireshark `esp_sa` line, appended by a writer thread; the
/// registration thread only queues the line. Dropping it writes what is queued and closes the
/// file.
pub struct FileKeyLog {
    tx: Option<SyncSender<Zeroizing<String>>>,
    writer: Option<JoinHandle<()>>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for FileKeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKeyLog")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl FileKeyLog {
    /// Opens (appends to) or creates `path`, owner-only ([`open_keylog`]).
    pub fn open(path: &std::path::Path) -> std::io::Result<FileKeyLog> {
        FileKeyLog::new(open_keylog(path)?)
    }

    /// A key log writing to `file`.
    pub fn new(file: std::fs::File) -> std::io::Result<FileKeyLog> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Zeroizing<String>>(QUEUE);
        let writer = std::thread::Builder::new()
            .name("keylog".into())
            .spawn(move || {
                let mut f = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let _ = f.write_all(line.as_bytes());
                    while let Ok(line) = rx.try_recv() {
                        let _ = f.write_all(line.as_bytes());
                    }
                    // flushed whenever the queue runs dry: a reader sees each SA soon after
                    let _ = f.flush();
                }
            })?;
        Ok(FileKeyLog {
            tx: Some(tx),
            writer: Some(writer),
            dropped: AtomicU64::new(0),
        })
    }

    /// Lines dropped because the writer fell `QUEUE` lines behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl KeyLog for FileKeyLog {
    fn log(&self, sa: &SaSecret<'_>) {
        let Some(line) = sa.esp_sa_line() else {
            return;
        };
        let Some(tx) = self.tx.as_ref() else {
            return;
        };
        match tx.try_send(Zeroizing::new(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for FileKeyLog {
    fn drop(&mut self) {
        drop(self.tx.take()); // the writer drains the queue and ends
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Open (append) or create the `--keylog` file. It holds every SA's keys, so a new one is
/// created owner-only (0600) whatever the umask; an existing file keeps the mode it has.
pub fn open_keylog(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}
