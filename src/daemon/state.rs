//! Where the registration state is kept across restarts and nodes (`[state]`): the store
//! behind one trait ([`Store`]: a local redb file, or a Redis server shared by a pair of nodes),
//! the restore at start, and the writer thread that takes the registrar's write-through off the
//! registration thread.
//!
//! The registrar (sans-IO, `control::registrar::persist`) says which bindings changed and gives
//! their records; this module seals them (`control::store::Sealer`, a key from
//! `state.seal_key_file`), writes each batch as one transaction (redb: a commit with fsync;
//! Redis: one MULTI/EXEC), and tells the registrar when a batch is durable, so the sequence
//! ceilings in it reach the SAs only then. One batch is in flight at a time: what changes while
//! it is written goes into the next one (group commit), so the registration thread never waits
//! for a disk or a network.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{State, StateBackend};
use crate::control::log;
use crate::control::registrar::{Registrar, StoreWrite};
use crate::control::store::{KEY_LEN, Sealer};

/// A key in the store: a keyed hash of the IMPI (`Sealer::key_of`).
pub type Key = [u8; KEY_LEN];
/// Stored (key, sealed value) pairs.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;
/// The configured store with the sealer of its records.
pub type Opened = (Box<dyn Store>, Sealer);

/// A store of sealed records. Implementations do blocking I/O: only the writer thread and the
/// start-up call them.
pub trait Store: Send {
    /// What it is, for logs (a path, a URL without credentials).
    fn describe(&self) -> String;
    /// Every stored record.
    fn load(&mut self) -> Result<Records, String>;
    /// Puts and deletes as one transaction: all of them are durable when it returns Ok.
    fn write(&mut self, puts: &[(Key, Vec<u8>)], deletes: &[Key]) -> Result<(), String>;
}

/// The records of a local file (redb: copy-on-write B-trees, a commit is durable once fsync
/// returns, a crash leaves the last commit).
pub struct FileStore {
    db: redb::Database,
    path: PathBuf,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("bindings");

impl FileStore {
    /// Opens the store at `path`, creating it with mode 0600. A file that is not a readable
    /// store (truncated, overwritten) is moved aside and a new one made: the start goes on,
    /// and the second value says what happened.
    pub fn open(path: &Path) -> Result<(FileStore, Option<String>), String> {
        let shown = path.display();
        let mut note = None;
        match std::fs::metadata(path) {
            Ok(m) => {
                if m.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| format!("{shown}: making it 0600: {e}"))?;
                    log::warn(format_args!(
                        "state: {shown} was readable by others: now 0600 (it holds sealed keys)"
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_private(path)?,
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        let db = match open_db(path) {
            Ok(db) => db,
            Err(e) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let aside = PathBuf::from(format!("{}.unreadable-{secs}", path.display()));
                std::fs::rename(path, &aside)
                    .map_err(|r| format!("{shown}: unreadable ({e}), and moving it aside: {r}"))?;
                note = Some(format!(
                    "{shown} is not a readable store ({e}): moved to {}; starting with no registrations",
                    aside.display()
                ));
                create_private(path)?;
                open_db(path).map_err(|e| format!("{shown}: {e}"))?
            }
        };
        Ok((
            FileStore {
                db,
                path: path.to_path_buf(),
            },
            note,
        ))
    }
}

/// A new empty file only its owner reads.
fn create_private(path: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|e| format!("{}: creating it: {e}", path.display()))
}

fn open_db(path: &Path) -> Result<redb::Database, String> {
    let db = redb::Database::builder()
        .create(path)
        .map_err(|e| e.to_string())?;
    // the table exists from the start (a read of a store never written finds it)
    let w = db.begin_write().map_err(|e| e.to_string())?;
    w.open_table(TABLE).map_err(|e| e.to_string())?;
    w.commit().map_err(|e| e.to_string())?;
    Ok(db)
}

impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&mut self) -> Result<Records, String> {
        use redb::{ReadableDatabase, ReadableTable};
        let r = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = r.open_table(TABLE).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn write(&mut self, puts: &[(Key, Vec<u8>)], deletes: &[Key]) -> Result<(), String> {
        let w = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut t = w.open_table(TABLE).map_err(|e| e.to_string())?;
            for k in deletes {
                t.remove(&k[..]).map_err(|e| e.to_string())?;
            }
            for (k, v) in puts {
                t.insert(&k[..], v.as_slice()).map_err(|e| e.to_string())?;
            }
        }
        w.commit().map_err(|e| e.to_string())
    }
}

/// The records in a Redis hash (`<prefix>bindings`) shared by the nodes of a pair: the active
/// node writes, the one that takes over reads it at its start.
pub struct RedisStore {
    client: redis::Client,
    con: Option<redis::Connection>,
    hash: String,
    shown: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

/// How long one Redis call may take (on the writer thread; a start-up load too).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries one HSCAN step asks for.
const SCAN_COUNT: usize = 1000;

impl RedisStore {
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        let info = client.get_connection_info();
        let shown = format!("redis {}", info.addr());
        let mut s = RedisStore {
            client,
            con: None,
            hash: format!("{prefix}bindings"),
            shown,
        };
        s.connection()?;
        Ok(s)
    }

    /// The connection, made again after a failure.
    fn connection(&mut self) -> Result<&mut redis::Connection, String> {
        if self.con.is_none() {
            let c = self
                .client
                .get_connection_with_timeout(REDIS_TIMEOUT)
                .map_err(|e| format!("{}: {e}", self.shown))?;
            c.set_read_timeout(Some(REDIS_TIMEOUT))
                .and_then(|_| c.set_write_timeout(Some(REDIS_TIMEOUT)))
                .map_err(|e| format!("{}: {e}", self.shown))?;
            self.con = Some(c);
        }
        Ok(self.con.as_mut().expect("just made"))
    }

    /// A failed call drops the connection (the next one connects again).
    fn fail(&mut self, e: redis::RedisError) -> String {
        self.con = None;
        format!("{}: {e}", self.shown)
    }
}

impl Store for RedisStore {
    fn describe(&self) -> String {
        format!("{} (hash {})", self.shown, self.hash)
    }

    fn load(&mut self) -> Result<Records, String> {
        let hash = self.hash.clone();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let con = self.connection()?;
            let r: Result<(u64, Records), _> = redis::cmd("HSCAN")
                .arg(&hash)
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query(con);
            let (next, items) = r.map_err(|e| self.fail(e))?;
            out.extend(items);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    fn write(&mut self, puts: &[(Key, Vec<u8>)], deletes: &[Key]) -> Result<(), String> {
        let mut p = redis::pipe();
        p.atomic();
        if !deletes.is_empty() {
            let c = p.cmd("HDEL").arg(&self.hash);
            for k in deletes {
                c.arg(&k[..]);
            }
            c.ignore();
        }
        if !puts.is_empty() {
            let c = p.cmd("HSET").arg(&self.hash);
            for (k, v) in puts {
                c.arg(&k[..]).arg(v.as_slice());
            }
            c.ignore();
        }
        let con = self.connection()?;
        let r: Result<(), _> = p.query(con);
        r.map_err(|e| self.fail(e))
    }
}

/// The seal key: 32 bytes, or 64 hex digits (a trailing newline allowed), in a file its owner
/// alone may read.
pub fn read_seal_key(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{shown}: readable by others (mode {:o}): chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    let raw = zeroize::Zeroizing::new(std::fs::read(path).map_err(|e| format!("{shown}: {e}"))?);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    let text = raw.trim_ascii();
    if raw.len() == 32 {
        key.copy_from_slice(&raw);
    } else if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
        for (i, k) in key.iter_mut().enumerate() {
            let hex = std::str::from_utf8(&text[2 * i..2 * i + 2]).expect("hex digits");
            *k = u8::from_str_radix(hex, 16).expect("hex digits");
        }
    } else {
        return Err(format!(
            "{shown}: not a key (32 bytes, or 64 hex digits; e.g. head -c 32 /dev/urandom)"
        ));
    }
    if key.iter().all(|&b| b == 0) {
        return Err(format!("{shown}: an all-zero key"));
    }
    Ok(key)
}

/// Milliseconds since the UNIX epoch: the records' clock.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The configured store and its sealer.
pub fn open(cfg: &State) -> Result<Option<Opened>, String> {
    let store: Box<dyn Store> = match cfg.backend {
        StateBackend::None => return Ok(None),
        StateBackend::File => {
            let path = cfg.path.as_deref().ok_or("state.path is not set")?;
            let (s, note) = FileStore::open(path)?;
            if let Some(n) = note {
                log::error(format_args!("state: {n}"));
            }
            Box::new(s)
        }
        StateBackend::Redis => {
            let url = cfg
                .redis_url
                .as_deref()
                .ok_or("state.redis_url is not set")?;
            let prefix = cfg.redis_prefix.as_deref().unwrap_or("pcscf:");
            Box::new(RedisStore::open(url, prefix)?)
        }
    };
    let key_file = cfg
        .seal_key_file
        .as_deref()
        .ok_or("state.seal_key_file is not set")?;
    let key = read_seal_key(key_file).map_err(|e| format!("state.seal_key_file {e}"))?;
    Ok(Some((store, Sealer::new(&key))))
}

/// What the restore at start found.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreReport {
    pub records: usize,
    pub bindings: usize,
    pub sets: usize,
    pub expired: usize,
    pub failed: usize,
    /// Records that did not open (another seal key, altered bytes): left in the store.
    pub unreadable: usize,
}

/// Restores every stored binding into the registrar (before it handles any message), then
/// writes what the restore changed (expired records deleted, raised ceilings) before the
/// restored SAs may send: nothing restored sends until this write is durable.
pub fn restore(
    store: &mut dyn Store,
    sealer: &Sealer,
    registrar: &mut Registrar,
) -> Result<RestoreReport, String> {
    let mut rep = RestoreReport::default();
    let now = Instant::now();
    let wall = wall_ms();
    let records = store.load()?;
    rep.records = records.len();
    let mut first_error = None;
    for (k, v) in &records {
        match sealer.open_binding(k, v) {
            Ok(rec) => {
                let done = registrar.restore(&rec, now, wall);
                rep.bindings += usize::from(done.sets > 0);
                rep.sets += done.sets;
                rep.expired += done.expired;
                rep.failed += done.failed;
            }
            Err(e) => {
                rep.unreadable += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        log::error(format_args!(
            "state: {} of {} records in {} could not be read ({e}): left in the store, not restored; \
             their UEs register again. Another state.seal_key_file than the one that wrote them?",
            rep.unreadable,
            rep.records,
            store.describe()
        ));
    }
    let writes = registrar.drain_store(now, wall);
    match write_batch(store, sealer, &writes) {
        Ok(()) => registrar.store_written(),
        Err(e) => {
            registrar.store_failed();
            return Err(format!(
                "{}: writing the restored state: {e}",
                store.describe()
            ));
        }
    }
    Ok(rep)
}

/// Seals a batch and writes it as one transaction.
fn write_batch(
    store: &mut dyn Store,
    sealer: &Sealer,
    writes: &[StoreWrite],
) -> Result<(), String> {
    let mut puts = Vec::new();
    let mut deletes = Vec::new();
    for w in writes {
        match w {
            StoreWrite::Put(rec) => puts.push(
                sealer
                    .seal_binding(rec)
                    .map_err(|e| format!("sealing: {e}"))?,
            ),
            StoreWrite::Delete(impi) => deletes.push(sealer.key_of(impi)),
        }
    }
    store.write(&puts, &deletes)
}

/// The writer thread's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterStats {
    pub batches: u64,
    pub records: u64,
    pub failures: u64,
    /// The last batch's write time.
    pub last_write: Duration,
}

/// The registration thread's handle on the writer thread: one batch in flight at a time.
pub struct Writer {
    tx: Option<mpsc::SyncSender<Vec<StoreWrite>>>,
    rx: mpsc::Receiver<(Result<(), String>, Duration, usize)>,
    thread: Option<std::thread::JoinHandle<()>>,
    in_flight: bool,
    pub stats: WriterStats,
    describe: String,
    /// Failures in a row (logged once each power of two: a dead store is said, not flooded).
    failing: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Moves the store onto its own thread.
    pub fn spawn(mut store: Box<dyn Store>, sealer: Sealer) -> std::io::Result<Writer> {
        let describe = store.describe();
        let (tx, brx) = mpsc::sync_channel::<Vec<StoreWrite>>(1);
        let (rtx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                for batch in brx {
                    let t = Instant::now();
                    let r = write_batch(&mut *store, &sealer, &batch);
                    if rtx.send((r, t.elapsed(), batch.len())).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Writer {
            tx: Some(tx),
            rx,
            thread: Some(thread),
            in_flight: false,
            stats: WriterStats::default(),
            describe,
            failing: 0,
        })
    }

    /// Whether a batch is being written.
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// One step, each pass of the control loop: the answer to the batch in flight is given to
    /// the registrar; then, if none is in flight, what changed is sent as the next batch.
    pub fn pass(&mut self, registrar: &mut Registrar, now: Instant) {
        if self.in_flight {
            match self.rx.try_recv() {
                Ok((r, took, n)) => self.answered(registrar, r, took, n),
                Err(mpsc::TryRecvError::Empty) => return,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.in_flight = false;
                    registrar.store_failed();
                    return;
                }
            }
        }
        if registrar.store_backlog() == 0 {
            return;
        }
        let batch = registrar.drain_store(now, wall_ms());
        if let Some(tx) = &self.tx
            && tx.send(batch).is_ok()
        {
            self.in_flight = true;
        } else {
            registrar.store_failed();
        }
    }

    fn answered(
        &mut self,
        registrar: &mut Registrar,
        r: Result<(), String>,
        took: Duration,
        n: usize,
    ) {
        self.in_flight = false;
        self.stats.last_write = took;
        match r {
            Ok(()) => {
                if self.failing > 0 {
                    log::info(format_args!(
                        "state: {} writes again after {} failed batches",
                        self.describe, self.failing
                    ));
                }
                self.failing = 0;
                self.stats.batches += 1;
                self.stats.records += n as u64;
                registrar.store_written();
            }
            Err(e) => {
                self.failing += 1;
                self.stats.failures += 1;
                if self.failing.is_power_of_two() {
                    log::error(format_args!(
                        "state: writing {n} records to {}: {e} ({} batches failed in a row; \
                         the records wait and are written again; an SA at its sequence \
                         ceiling holds its packets meanwhile)",
                        self.describe, self.failing
                    ));
                }
                registrar.store_failed();
            }
        }
    }

    /// At a clean stop: the batch in flight answered, every counter swept exactly, the rest
    /// written, within `limit`. Whether all of it was written.
    pub fn finish(&mut self, registrar: &mut Registrar, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        registrar.sweep_counters(None);
        loop {
            if self.in_flight {
                let left = until.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok((r, took, n)) => self.answered(registrar, r, took, n),
                    Err(_) => return false,
                }
            }
            if registrar.store_backlog() == 0 {
                return self.failing == 0;
            }
            if Instant::now() >= until {
                return false;
            }
            self.pass(registrar, Instant::now());
            if !self.in_flight {
                return false;
            }
        }
    }

    /// Prometheus lines of the writer (the registration thread's text).
    pub fn metrics(&self, backlog: usize, out: &mut String) {
        use std::fmt::Write as _;
        let s = &self.stats;
        let _ = write!(
            out,
            "# HELP pcscf_state_batches_total Batches of records written to the state store.\n\
             # TYPE pcscf_state_batches_total counter\npcscf_state_batches_total {}\n\
             # HELP pcscf_state_records_total Records written to the state store (puts and deletes).\n\
             # TYPE pcscf_state_records_total counter\npcscf_state_records_total {}\n\
             # HELP pcscf_state_write_failures_total Batches the state store refused or lost.\n\
             # TYPE pcscf_state_write_failures_total counter\npcscf_state_write_failures_total {}\n\
             # HELP pcscf_state_backlog Records changed and not yet written.\n\
             # TYPE pcscf_state_backlog gauge\npcscf_state_backlog {backlog}\n\
             # HELP pcscf_state_last_write_seconds How long the last batch took to write.\n\
             # TYPE pcscf_state_last_write_seconds gauge\npcscf_state_last_write_seconds {:.6}\n",
            s.batches,
            s.records,
            s.failures,
            s.last_write.as_secs_f64()
        );
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
