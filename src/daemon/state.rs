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
    /// Whether a write it acknowledged may still be lost (a restored SA then skips one more
    /// step of sequence numbers).
    fn may_lose_writes(&self) -> bool {
        false
    }
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
        // (not following a link: a planted one would have us chmod its target)
        match std::fs::symlink_metadata(path) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(format!("{shown}: not a regular file"));
            }
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
            // only a file that is not a store is moved aside: a store another pcscf holds, one
            // we may not read, a full disk or a newer format are not ours to move
            Err(Opening::Other(e)) => return Err(format!("{shown}: {e}")),
            Err(Opening::Corrupt(e)) => {
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
                open_db(path).map_err(|e| format!("{shown}: {}", e.text()))?
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

/// Why a store did not open.
enum Opening {
    /// The file is not a store (truncated, overwritten, checksums wrong).
    Corrupt(String),
    Other(String),
}

impl Opening {
    fn text(&self) -> &str {
        match self {
            Opening::Corrupt(e) | Opening::Other(e) => e,
        }
    }
}

fn open_db(path: &Path) -> Result<redb::Database, Opening> {
    use redb::{DatabaseError, StorageError};
    let other = |e: &dyn std::fmt::Display| Opening::Other(e.to_string());
    let db = redb::Database::builder()
        .create(path)
        .map_err(|e| match &e {
            DatabaseError::Storage(StorageError::Corrupted(_)) => Opening::Corrupt(e.to_string()),
            DatabaseError::Storage(StorageError::Io(io))
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) =>
            {
                Opening::Corrupt(e.to_string())
            }
            _ => other(&e),
        })?;
    // the table exists from the start (a read of a store never written finds it)
    let w = db.begin_write().map_err(|e| other(&e))?;
    w.open_table(TABLE).map_err(|e| other(&e))?;
    w.commit().map_err(|e| other(&e))?;
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
///
/// One writer at a time: each start takes a new *epoch* (`INCR <prefix>epoch`) and every write
/// is a Lua script that refuses to run unless the epoch is still ours, so a node that another
/// has taken over from (a split brain, a node thought dead) can no longer write: its SAs then
/// hold at their ceilings, which the new node resumes past. Each write carries the batch's
/// number and a late one (a write that timed out on a dropped connection and ran afterwards)
/// changes nothing. Whether Redis keeps what it acknowledged is its own persistence: without
/// `appendfsync always` the store says it may lose writes ([`Store::may_lose_writes`]).
pub struct RedisStore {
    client: redis::Client,
    con: Option<redis::Connection>,
    prefix: String,
    shown: String,
    epoch: u64,
    batch: u64,
    lossy: bool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("shown", &self.shown)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// How long one Redis call may take (on the writer thread; a start-up load too).
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Entries one HSCAN step asks for.
const SCAN_COUNT: usize = 1000;
/// The write: fenced by the epoch, ordered by the batch number. KEYS: epoch, hash, batch key.
/// ARGV: our epoch, the batch number, the number of deletes, the deleted keys, then key/value
/// pairs.
const WRITE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED: another node holds the state now')
end
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if last >= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[3], ARGV[2], 'EX', 604800)
local nd = tonumber(ARGV[3])
for i = 4, 3 + nd do redis.call('HDEL', KEYS[2], ARGV[i]) end
for i = 4 + nd, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
";

impl RedisStore {
    /// Connects, takes the next epoch (from now on the node that held the state before cannot
    /// write) and looks at Redis's own persistence.
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis: {e}"))?;
        // (the URL's password stays out of logs)
        let shown = format!("redis {}", client.get_connection_info().addr());
        let mut s = RedisStore {
            client,
            con: None,
            prefix: prefix.to_string(),
            shown,
            epoch: 0,
            batch: 0,
            lossy: true,
        };
        let epoch_key = s.key("epoch");
        let con = s.connection()?;
        let r: Result<u64, _> = redis::cmd("INCR").arg(&epoch_key).query(con);
        s.epoch = r.map_err(|e| s.fail(e))?;
        // appendfsync always: what Redis acknowledged is on its disk (CONFIG may be renamed
        // away: then it may lose writes, as far as we know)
        let con = s.connection()?;
        let r: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query(con);
        let aof: Result<Vec<String>, _> =
            redis::cmd("CONFIG").arg("GET").arg("appendonly").query(con);
        s.lossy = !matches!(
            (r.as_deref(), aof.as_deref()),
            (Ok([_, f]), Ok([_, a])) if f == "always" && a == "yes"
        );
        if s.lossy {
            log::warn(format_args!(
                "state: {} runs without appendonly yes / appendfsync always: a Redis crash may \
                 lose acknowledged writes; restored SAs skip one more step of sequence numbers",
                s.shown
            ));
        }
        Ok(s)
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
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
        format!(
            "{} (hash {}bindings, epoch {})",
            self.shown, self.prefix, self.epoch
        )
    }

    fn load(&mut self) -> Result<Records, String> {
        let hash = self.key("bindings");
        // HSCAN may return an entry twice: one record per key
        let mut out: std::collections::HashMap<Vec<u8>, Vec<u8>> = Default::default();
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
                return Ok(out.into_iter().collect());
            }
            cursor = next;
        }
    }

    fn write(&mut self, puts: &[(Key, Vec<u8>)], deletes: &[Key]) -> Result<(), String> {
        self.batch += 1;
        let mut c = redis::cmd("EVAL");
        c.arg(WRITE_SCRIPT)
            .arg(3)
            .arg(self.key("epoch"))
            .arg(self.key("bindings"))
            .arg(self.key(&format!("batch:{}", self.epoch)))
            .arg(self.epoch)
            .arg(self.batch)
            .arg(deletes.len());
        for k in deletes {
            c.arg(&k[..]);
        }
        for (k, v) in puts {
            c.arg(&k[..]).arg(v.as_slice());
        }
        let con = self.connection()?;
        let r: Result<i64, _> = c.query(con);
        r.map(drop).map_err(|e| self.fail(e))
    }

    fn may_lose_writes(&self) -> bool {
        self.lossy
    }
}

/// The seal key: 32 bytes, or 64 hex digits (a trailing newline allowed), in a regular file
/// that root or this process's user owns and no one else may read.
pub fn read_seal_key(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    // the checks are on the file opened (no swap between a check and the read)
    let mut f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{shown}: readable by others (mode {:o}): chmod 600 it",
            meta.permissions().mode() & 0o777
        ));
    }
    // SAFETY: geteuid takes nothing and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "{shown}: owned by uid {}, neither root nor this process's user",
            meta.uid()
        ));
    }
    let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(80));
    f.by_ref()
        .take(80)
        .read_to_end(&mut raw)
        .map_err(|e| format!("{shown}: {e}"))?;
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    let text = raw.trim_ascii();
    let hex = |t: &[u8]| t.iter().all(u8::is_ascii_hexdigit);
    if text.len() == 64 && hex(text) {
        for (i, k) in key.iter_mut().enumerate() {
            let pair = std::str::from_utf8(&text[2 * i..2 * i + 2]).expect("hex digits");
            *k = u8::from_str_radix(pair, 16).expect("hex digits");
        }
    } else if raw.len() == 32 && !hex(&raw) {
        key.copy_from_slice(&raw);
    } else {
        return Err(format!(
            "{shown}: not a key: 32 random bytes (head -c 32 /dev/urandom) or 64 hex digits"
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
    /// Outbound SAs restored past half their sequence space.
    pub worn: usize,
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
                rep.worn += done.worn;
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
    if rep.worn > 0 {
        log::warn(format_args!(
            "state: {} outbound SAs resume past half their sequence numbers (each restart \
             spends a step of them): their UEs need new SA sets before long",
            rep.worn
        ));
    }
    while registrar.store_backlog() > 0 {
        let writes = registrar.drain_store(now, wall, MAX_BATCH);
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

/// Records one batch holds at most: a backlog after an outage is written in steps, and the
/// registration thread builds no more than this many records in one pass.
pub const MAX_BATCH: usize = 4096;
/// The longest wait before a failed write is tried again (doubling from 10 ms).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// No batch goes before this (after a failure).
    retry_at: Option<Instant>,
    /// A batch did not come back in time at stop: the thread is left, not joined.
    hung: bool,
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
            retry_at: None,
            hung: false,
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
        if registrar.store_backlog() == 0 || self.retry_at.is_some_and(|t| now < t) {
            return;
        }
        let batch = registrar.drain_store(now, wall_ms(), MAX_BATCH);
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
                self.retry_at = None;
                self.stats.batches += 1;
                self.stats.records += n as u64;
                registrar.store_written();
            }
            Err(e) => {
                self.failing += 1;
                self.stats.failures += 1;
                let wait = Duration::from_millis(10)
                    .saturating_mul(1 << self.failing.min(16))
                    .min(MAX_BACKOFF);
                self.retry_at = Some(Instant::now() + wait);
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
                    Err(_) => {
                        self.hung = true;
                        return false;
                    }
                }
            }
            if registrar.store_backlog() == 0 {
                return self.failing == 0;
            }
            if Instant::now() >= until {
                return false;
            }
            // at stop a failed write is tried again at once (within the limit)
            self.retry_at = None;
            self.pass(registrar, Instant::now());
            if !self.in_flight {
                return false;
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx = None; // ends the thread's loop
        if let Some(t) = self.thread.take()
            && !self.hung
        {
            let _ = t.join();
        }
    }
}
