//! The SA table: every installed ESP SA, looked up by the poll-mode workers without locks
//! (the four SAs of a UE: TS 33.203 §7.1; the SA database: RFC 4301 §4.4.2).
//!
//! What it owns:
//! - the **inbound slab**: one slot per inbound SA, indexed straight from the SPI (no hashing);
//! - the **outbound map**: (UE address, UE port, our port) → the SA towards the UE, a
//!   fixed-capacity open-addressing table of atomic pointers;
//! - the writer-side bookkeeping: the SPI free list and the per-slot generations.
//!
//! One [`SaWriter`] (the registration thread; not `Clone`) installs, replaces and removes SAs.
//! Any number of [`SaReader`]s (`Clone + Send + Sync`, one per worker) look them up: a worker
//! calls [`SaReader::pin`] once per batch and then [`ReadGuard::inbound`] /
//! [`ReadGuard::outbound`], which return `&Entry` borrowing the guard. Lookups take no lock,
//! never block, never allocate and never write shared memory (beyond crossbeam's own per-thread
//! pin counter).
//!
//! ## SPIs (RFC 4303 §2.1)
//! The receiver chooses the SPI, so ours encode where the SA lives. With a slab of `C = 2^k`
//! slots and a configured range `[spi_min, spi_max]`:
//!
//! `spi = spi_min + generation * C + slot`, `generation < G = (spi_max - spi_min + 1) / C`.
//!
//! `spi_min >= 256` is enforced: RFC 4303 §2.1 reserves 0 for local use and 1–255 for IANA, and
//! an SPI is never 0 on the wire. `G >= 2` is enforced too: freeing a slot bumps its generation,
//! so the slot's next SPI differs from the last one and a late packet for the old SPI never
//! matches the new SA (the lookup compares the entry's SPI with the packet's). Slots are handed
//! out from a FIFO free list shuffled at start-up (SPIs are not predictable, and a freed slot is
//! reused as late as possible), as OpenSIPS does; an SPI value repeats only after `G` reuses
//! of its slot. Outbound SAs carry the UE's SPI and do not use the slab.
//!
//! ## Entries: `Arc<Sa>`, immutable, republished
//! An [`Entry`] is immutable once published; changing its `set_state` means publishing a new
//! entry. The entry holds an `Arc<Sa>` rather than an owned `Sa` because the republished entry
//! must keep the *same* `Sa`: its outbound sequence counter and replay window are live atomics
//! that workers are using at that moment, and an owned `Sa` cannot be moved out of an entry that
//! readers may still see. The `Arc` also lets the control plane keep a handle (counters,
//! `last_seq_sent`) and use one SA in two entries. The cost is one more pointer hop per packet.
//!
//! ## Outbound map
//! Linear probing over `2^m >= 2 * outbound_capacity` buckets of `crossbeam_epoch::Atomic<Entry>`,
//! keyed by a seeded hash of (UE address, UE port) only, so that every entry of one UE flow
//! (different local ports) sits on one probe chain and [`ReadGuard::outbound_any`] falls out for
//! free. Only the writer stores into buckets; removal leaves a tombstone (a null pointer tagged
//! 1), which readers step over and the next insert on that chain reuses; tombstones in front of
//! an empty bucket are turned back into empty buckets, and when empty buckets fall under a
//! quarter the writer rebuilds the bucket array (same size) off to the side and publishes it
//! with one pointer swap. So at least a quarter of the buckets is always empty and every probe
//! ends. A replacement (re-registration switching to the new SA set) is one atomic swap of the
//! bucket's pointer. `papaya` was the alternative: it is a general concurrent map (resizing,
//! many writers) with its own reclamation scheme; with one writer, a fixed capacity and keys we
//! never need to iterate concurrently, 40 lines of probing over crossbeam-epoch (which the inbound
//! slab needs anyway) give a read path of one hash and usually one bucket load, with no second
//! reclamation scheme in the process.
//!
//! ## Memory ordering
//! - Publish: the writer builds the `Entry` (and the `Sa` before it) completely, then stores the
//!   pointer with `Release`; readers load it with `Acquire`, so every write that built the entry
//!   happens-before any read through the pointer. No reader can see a half-built entry.
//! - Retire: the writer unlinks (stores null / a tombstone / the new pointer) and hands the old
//!   pointer to crossbeam-epoch (`defer`), which frees it only after every thread that was pinned
//!   when it was unlinked has unpinned. A reader's `&Entry` borrows its [`ReadGuard`], i.e. a pin,
//!   so it cannot outlive the pin: no reader ever sees a freed entry or `Sa`.
//! - Per-packet mutable state (outbound sequence number, replay window) lives in `Sa` as atomics,
//!   so two workers using one SA at once stay correct without the table's help.
//! - Workers that pin for a long time delay reclamation (never correctness): call
//!   [`ReadGuard::repin`] between batches. Freed entries drop their `Arc<Sa>` on whichever thread
//!   collects the garbage (usually the writer's, after [`SaWriter::collect`]).
//!
//! ## Memory
//! See [`SaTableConfig::memory_bytes`] and [`ENTRY_SIZE`]: per inbound slot 8 B shared + 5 B
//! writer-side + 4 B free list; per outbound capacity 16 B of buckets; per installed SA one
//! [`Entry`] (64 B) plus the `Arc<Sa>` it points to (96 B and its replay window; the four SAs of a
//! set share one key schedule). Entries are not cache-line aligned: an over-aligned allocation
//! cost ~58 B of allocator overhead each, ~230 B per registered UE (perf/RESULTS.md), more than
//! the occasional second cache line of an immutable, read-only entry.
//!
//! Measured (bench/satable.rs, shared 2-core VM, medians per lookup with 1k / 100k / 1M SAs):
//! inbound 1.4 / 23 / 39 ns; outbound 19 / 290 / 610 ns (a plain loop over the same 1M table
//! gives 120 ns: the gap is not probe length, mean 0.46); install+remove about 0.5 µs inbound
//! (of which 0.25 µs is building the `Sa`) and 0.35 µs outbound.

use crate::esp::Sa;

use core::fmt;
use core::net::IpAddr;
use core::sync::atomic::{AtomicU64, Ordering};
use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned, Shared};
use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

/// Size of one [`Entry`] in bytes.
pub const ENTRY_SIZE: usize = core::mem::size_of::<Entry>();

/// Smallest SPI the table hands out (RFC 4303 §2.1: 0 is reserved, 1–255 belong to IANA).
pub const MIN_SPI: u32 = 256;

const TOMBSTONE: usize = 1;
const POISON: u64 = 0xdead_dead_dead_dead;
const CHECK_KEY: u64 = 0x9e37_79b9_7f4a_7c15;

/// Direction of an SA as seen from the P-CSCF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// UE → P-CSCF: looked up by SPI (the UE → P-CSCF SAs of TS 33.203 §7.1).
    In = 0,
    /// P-CSCF → UE: looked up by the UE's flow (SA2, SA3).
    Out = 1,
}

/// Where an SA stands in the registration's life (TS 33.203 §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SetState {
    /// Created for the 401 challenge; becomes `New` when the protected REGISTER arrives on it.
    Temporary = 0,
    /// The set in use.
    New = 1,
    /// The previous set, kept until the UE has moved over, then removed.
    Old = 2,
}

/// Table sizes and the SPI range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaTableConfig {
    /// Inbound slots, i.e. the most inbound SAs at once (rounded up to a power of two).
    pub inbound_capacity: u32,
    /// The most outbound entries at once (the bucket array is the next power of two of twice
    /// this).
    pub outbound_capacity: u32,
    /// Lowest SPI handed out (>= 256).
    pub spi_min: u32,
    /// Highest SPI handed out. `(spi_max - spi_min + 1)` must hold at least two generations of
    /// `inbound_capacity`.
    pub spi_max: u32,
}

impl Default for SaTableConfig {
    /// 2^20 inbound slots and outbound entries, SPIs in `[2^16, 2^31)` (RFC 4303 §2.1: 1–255 reserved).
    fn default() -> Self {
        SaTableConfig {
            inbound_capacity: 1 << 20,
            outbound_capacity: 1 << 20,
            spi_min: 1 << 16,
            spi_max: (1 << 31) - 1,
        }
    }
}

impl SaTableConfig {
    fn slots(&self) -> usize {
        (self.inbound_capacity.max(1) as usize).next_power_of_two()
    }

    fn buckets(&self) -> usize {
        (2 * self.outbound_capacity.max(1) as usize).next_power_of_two()
    }

    /// Bytes the table allocates up front (not counting installed entries and SAs).
    pub fn memory_bytes(&self) -> usize {
        let slots = self.slots();
        // Shared slab pointer + writer generation (u32) and state (u8) + free list (u32).
        let inbound = slots * (core::mem::size_of::<Atomic<Entry>>() + 4 + 1 + 4);
        let outbound = self.buckets() * core::mem::size_of::<Atomic<Entry>>();
        inbound + outbound
    }

    fn validate(&self) -> Result<(), SaTableError> {
        if self.spi_min < MIN_SPI {
            return Err(SaTableError::BadConfig(
                "spi_min must be >= 256 (RFC 4303 §2.1)",
            ));
        }
        if self.spi_max < self.spi_min {
            return Err(SaTableError::BadConfig("spi_max < spi_min"));
        }
        if self.inbound_capacity == 0 || self.inbound_capacity > 1 << 30 {
            return Err(SaTableError::BadConfig("inbound_capacity must be 1..=2^30"));
        }
        if self.outbound_capacity == 0 || self.outbound_capacity > 1 << 30 {
            return Err(SaTableError::BadConfig(
                "outbound_capacity must be 1..=2^30",
            ));
        }
        let span = u64::from(self.spi_max - self.spi_min) + 1;
        if span / (self.slots() as u64) < 2 {
            return Err(SaTableError::BadConfig(
                "SPI range must hold two generations of inbound_capacity",
            ));
        }
        Ok(())
    }
}

/// Why a writer operation was refused. The table is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SaTableError {
    /// Every inbound slot is reserved or in use.
    InboundFull,
    /// `outbound_capacity` outbound entries are installed.
    OutboundFull,
    /// The SPI is outside the table's range, or its generation is not the slot's current one.
    UnknownSpi,
    /// `install_inbound` for an SPI that was not reserved, or is already installed.
    NotReserved,
    /// No entry for that key.
    NotFound,
    /// An inconsistent [`SaTableConfig`].
    BadConfig(&'static str),
}

impl fmt::Display for SaTableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SaTableError::InboundFull => f.write_str("SA table full (inbound slots)"),
            SaTableError::OutboundFull => f.write_str("SA table full (outbound entries)"),
            SaTableError::UnknownSpi => f.write_str("SPI not allocated by this table"),
            SaTableError::NotReserved => f.write_str("SPI not reserved, or already installed"),
            SaTableError::NotFound => f.write_str("no such SA entry"),
            SaTableError::BadConfig(why) => write!(f, "bad SA table config: {why}"),
        }
    }
}

impl std::error::Error for SaTableError {}

/// What the control plane attaches to an SA when installing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// The UE's address.
    pub ue_addr: IpAddr,
    /// The UE's port (port_uc or port_us).
    pub ue_port: u16,
    /// Both of the UE's protected ports of the set (`SetPorts::default()` when not known): its
    /// TCP connections inside the set are between these and ours (TS 33.203 §7.1).
    pub ue_ports: SetPorts,
    /// Our port (port_ps or port_pc: one of `ports`).
    pub local_port: u16,
    /// Both of our protected ports of the SA set this SA belongs to.
    pub ports: SetPorts,
    /// The control plane's registration id.
    pub binding: u64,
    /// Temporary / new / old.
    pub state: SetState,
}

/// What a worker needs to relay the traffic of a registered UE arriving over an inbound SA
/// (TS 24.229 §5.2.6.3): the identity it asserts by default, the other identities it may
/// assert when the UE prefers one (its P-Associated-URIs), and where its requests go.
/// Published by the registration thread when the 200 to REGISTER arrives. The texts share one
/// allocation (memory per registered UE).
#[derive(Debug, PartialEq, Eq)]
pub struct Registration {
    /// P-Asserted-Identity value ‖ Route value ‖ the associated IMPUs, one after another.
    text: Box<[u8]>,
    pai_len: usize,
    route_end: usize,
    /// Where each associated IMPU ends in `text` (each starts where the one before ends).
    impu_ends: Box<[usize]>,
    /// Where requests go (the first Service-Route hop, resolved).
    pub next_hop: std::net::SocketAddr,
    /// That hop asked for TCP (`;transport=tcp` in its URI, RFC 3263 §4.1).
    pub next_hop_tcp: bool,
}

impl Registration {
    /// `pai`: the P-Asserted-Identity value to set (the default IMPU, as `<uri>`); `route`: the
    /// Route to set (the stored Service-Route, as header value text).
    pub fn new(pai: &[u8], route: &[u8], next_hop: std::net::SocketAddr) -> Registration {
        Registration::with_impus(pai, route, &[], next_hop)
    }

    /// [`Registration::new`] with the registered IMPUs (the P-Associated-URIs of the 200 to
    /// REGISTER, default first; bare URIs, no `<>`), any of which the UE may prefer.
    pub fn with_impus(
        pai: &[u8],
        route: &[u8],
        impus: &[&[u8]],
        next_hop: std::net::SocketAddr,
    ) -> Registration {
        let mut text = Vec::with_capacity(
            pai.len() + route.len() + impus.iter().map(|u| u.len()).sum::<usize>(),
        );
        text.extend_from_slice(pai);
        text.extend_from_slice(route);
        let route_end = text.len();
        let mut impu_ends = Vec::with_capacity(impus.len());
        for u in impus {
            text.extend_from_slice(u);
            impu_ends.push(text.len());
        }
        Registration {
            text: text.into_boxed_slice(),
            pai_len: pai.len(),
            route_end,
            impu_ends: impu_ends.into_boxed_slice(),
            next_hop,
            next_hop_tcp: false,
        }
    }

    /// The P-Asserted-Identity value.
    pub fn pai(&self) -> &[u8] {
        &self.text[..self.pai_len]
    }

    /// The Route value.
    pub fn route(&self) -> &[u8] {
        &self.text[self.pai_len..self.route_end]
    }

    /// The registered IMPUs, default first.
    pub fn impus(&self) -> impl Iterator<Item = &[u8]> {
        let starts = core::iter::once(self.route_end).chain(self.impu_ends.iter().copied());
        starts
            .zip(self.impu_ends.iter().copied())
            .map(|(a, b)| &self.text[a..b])
    }

    /// The registered IMPU that `uri` (a UE's P-Preferred-Identity) names, if any
    /// (TS 24.229 §5.2.6.3: the P-CSCF asserts a preferred identity only when it is one of
    /// the registered ones; compared per RFC 3261 §19.1.4).
    pub fn registered_impu(&self, uri: &[u8]) -> Option<&[u8]> {
        self.impus()
            .find(|u| crate::sip::headers::same_identity(u, uri))
    }
}

/// One published SA with its selectors. Immutable; see the module doc. The lookup keys come
/// first.
#[repr(C)]
pub struct Entry {
    ue_addr: IpAddr,
    /// Whether our port of this SA is the set's port-s (else its port-c): with both ports
    /// kept, the entry stays one 64-byte cache line.
    at_port_s: bool,
    ue_port: u16,
    spi: u32,
    port_c: u16,
    port_s: u16,
    /// The UE's other protected port of the set (0: not known).
    ue_other: u16,
    dir: Direction,
    state: SetState,
    sa: Arc<Sa>,
    reg: Option<Arc<Registration>>,
    binding: u64,
    /// A fold of all other fields: lets tests catch torn or freed entries; poisoned on drop.
    check: u64,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("dir", &self.dir)
            .field("ue", &(self.ue_addr, self.ue_port))
            .field("local_port", &self.local_port())
            .field("ports", &(self.port_c, self.port_s))
            .field("binding", &self.binding)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Entry {
    fn new(sa: Arc<Sa>, dir: Direction, m: &EntryMeta) -> Entry {
        let mut e = Entry {
            spi: sa.spi(),
            sa,
            reg: None,
            binding: m.binding,
            check: 0,
            ue_addr: m.ue_addr,
            ue_port: m.ue_port,
            ue_other: if m.ue_port == m.ue_ports.c {
                m.ue_ports.s
            } else {
                m.ue_ports.c
            },
            at_port_s: m.local_port == m.ports.s && m.ports.s != m.ports.c,
            // `local_port` is one of the set's ports; taken as port-c when it is neither
            port_c: if m.local_port == m.ports.s {
                m.ports.c
            } else {
                m.local_port
            },
            port_s: m.ports.s,
            dir,
            state: m.state,
        };
        e.check = e.fold();
        e
    }

    fn with_state(&self, state: SetState) -> Entry {
        let mut e = Entry {
            sa: Arc::clone(&self.sa),
            reg: self.reg.clone(),
            state,
            ..*self
        };
        e.check = e.fold();
        e
    }

    fn with_registration(&self, reg: Option<Arc<Registration>>) -> Entry {
        let mut e = Entry {
            sa: Arc::clone(&self.sa),
            reg,
            ..*self
        };
        e.check = e.fold();
        e
    }

    /// The registration this (inbound) SA belongs to, once the UE is registered.
    #[inline]
    pub fn registration(&self) -> Option<&Registration> {
        self.reg.as_deref()
    }

    fn fold(&self) -> u64 {
        let addr = match self.ue_addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) | 4 << 120,
            IpAddr::V6(a) => u128::from(a),
        };
        let a = fold(addr as u64 ^ CHECK_KEY, (addr >> 64) as u64 ^ self.binding);
        let b = u64::from(self.spi)
            | u64::from(self.ue_port) << 32
            | u64::from(self.local_port()) << 48;
        let c = u64::from(self.dir as u8)
            | u64::from(self.state as u8) << 8
            | u64::from(self.at_port_s) << 15
            | u64::from(self.port_c) << 16
            | u64::from(self.port_s) << 32
            | u64::from(self.ue_other) << 48;
        fold(a ^ b, c ^ CHECK_KEY) ^ 1
    }

    /// The SA (ESP processing: [`Sa::inbound`], [`Sa::outbound`]).
    #[inline]
    pub fn sa(&self) -> &Arc<Sa> {
        &self.sa
    }
    /// The SA's SPI (ours for inbound, the UE's for outbound).
    #[inline]
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// The UE's address.
    #[inline]
    pub fn ue_addr(&self) -> IpAddr {
        self.ue_addr
    }
    /// The UE's port.
    #[inline]
    pub fn ue_port(&self) -> u16 {
        self.ue_port
    }
    /// The UE's two protected ports of this SA's set, port-c and port-s (0 for one not
    /// known). Our port-s pairs with the UE's port-c (SA1, SA3), our port-c with its port-s
    /// (SA2, SA4), TS 33.203 §7.1.
    #[inline]
    pub fn ue_ports(&self) -> SetPorts {
        if self.at_port_s {
            SetPorts {
                c: self.ue_port,
                s: self.ue_other,
            }
        } else {
            SetPorts {
                c: self.ue_other,
                s: self.ue_port,
            }
        }
    }
    /// Our port.
    #[inline]
    pub fn local_port(&self) -> u16 {
        if self.at_port_s {
            self.port_s
        } else {
            self.port_c
        }
    }
    /// Our port-c of this SA's set (where our Via names us toward the UE).
    #[inline]
    pub fn port_c(&self) -> u16 {
        self.port_c
    }
    /// Our port-s of this SA's set (where the UE sends its requests, and the port our
    /// UE-facing Record-Route entry names).
    #[inline]
    pub fn port_s(&self) -> u16 {
        self.port_s
    }
    /// In or out.
    #[inline]
    pub fn direction(&self) -> Direction {
        self.dir
    }
    /// The control plane's registration id.
    #[inline]
    pub fn binding(&self) -> u64 {
        self.binding
    }
    /// Temporary / new / old.
    #[inline]
    pub fn set_state(&self) -> SetState {
        self.state
    }
    /// Whether the redundant check word agrees with the fields (false for a torn, freed or
    /// poisoned entry; for tests and debug assertions).
    pub fn is_intact(&self) -> bool {
        self.check == self.fold() && self.spi == self.sa.spi()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Poison, so that a use after free shows in `is_intact` (volatile: not optimised away).
        // SAFETY: plain writes to fields of `*self`, which is valid and exclusively borrowed.
        unsafe {
            core::ptr::write_volatile(&mut self.check, POISON);
            core::ptr::write_volatile(&mut self.spi, 0);
        }
    }
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// The outbound bucket array (replaced whole by a rebuild).
struct Buckets {
    mask: usize,
    b: Box<[Atomic<Entry>]>,
}

impl Buckets {
    fn new(n: usize) -> Buckets {
        Buckets {
            mask: n - 1,
            b: (0..n).map(|_| Atomic::null()).collect(),
        }
    }
}

/// Counts entries whose memory was given back (for leak tests). Clone it before dropping the
/// table; the count keeps rising as the epoch garbage is collected.
#[derive(Clone, Debug, Default)]
pub struct FreedCounter(Arc<AtomicU64>);

impl FreedCounter {
    /// Entries freed so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

struct Inner {
    slots: Box<[Atomic<Entry>]>,
    spi_min: u32,
    /// `generations * slots`: offsets at or past this are not ours.
    span: u64,
    slot_mask: u32,
    out: Atomic<Buckets>,
    seed: [u64; 3],
    freed: FreedCounter,
}

impl Inner {
    #[inline]
    fn hash(&self, addr: &IpAddr, port: u16) -> u64 {
        let (lo, hi) = match addr {
            IpAddr::V4(a) => (u64::from(u32::from(*a)), 4),
            IpAddr::V6(a) => {
                let x = u128::from(*a);
                (x as u64, (x >> 64) as u64)
            }
        };
        let h = fold(lo ^ self.seed[0], hi ^ self.seed[1]);
        fold(h ^ u64::from(port) ^ self.seed[2], CHECK_KEY)
    }

    #[inline]
    fn inbound<'g>(&self, spi: u32, guard: &'g Guard) -> Option<&'g Entry> {
        let off = spi.wrapping_sub(self.spi_min);
        if u64::from(off) >= self.span {
            return None;
        }
        let slot = self.slots.get((off & self.slot_mask) as usize)?;
        let p = slot.load(Ordering::Acquire, guard);
        // SAFETY: non-null slot pointers come from `Owned::new` and are freed only through the
        // epoch after being unlinked; `guard` pins us, so the entry outlives `'g`.
        let e = unsafe { p.as_ref() }?;
        (e.spi == spi).then_some(e)
    }

    #[inline]
    fn probe<'g>(
        &self,
        addr: &IpAddr,
        port: u16,
        guard: &'g Guard,
        want: impl Fn(&Entry) -> bool,
    ) -> Option<&'g Entry> {
        // SAFETY: `out` is never null and retired bucket arrays are freed through the epoch.
        let bk = unsafe { self.out.load(Ordering::Acquire, guard).deref() };
        let mut i = self.hash(addr, port) as usize & bk.mask;
        for _ in 0..=bk.mask {
            let p = bk.b[i].load(Ordering::Acquire, guard);
            // SAFETY: as in `inbound`.
            match unsafe { p.as_ref() } {
                Some(e) if e.ue_port == port && e.ue_addr == *addr && want(e) => return Some(e),
                Some(_) => {}
                None if p.tag() == TOMBSTONE => {}
                None => return None,
            }
            i = (i + 1) & bk.mask;
        }
        None
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last `Arc`: no reader or writer exists, hence no guard and no borrowed entry.
        // SAFETY: nothing else can reach these pointers any more.
        unsafe {
            let g = epoch::unprotected();
            let mut n = 0;
            for s in self.slots.iter() {
                let p = s.load(Ordering::Relaxed, g);
                if !p.is_null() {
                    drop(p.into_owned());
                    n += 1;
                }
            }
            let bk = self.out.load(Ordering::Relaxed, g);
            for s in bk.deref().b.iter() {
                let p = s.load(Ordering::Relaxed, g);
                if !p.is_null() {
                    drop(p.into_owned());
                    n += 1;
                }
            }
            drop(bk.into_owned());
            self.freed.0.fetch_add(n, Ordering::Release);
        }
    }
}

/// Hands `p` (already unlinked) to the epoch for freeing.
///
/// # Safety
/// `p` is non-null, was unlinked from every shared location, and is retired only once.
unsafe fn retire(guard: &Guard, p: Shared<'_, Entry>, freed: &FreedCounter) {
    let freed = freed.clone();
    let raw = p.as_raw() as usize;
    // SAFETY: per the contract, no new reader can reach `p` and old ones are pinned; the closure
    // (two words, stored inline) runs after they unpin. `Entry` is Send, so freeing it on another
    // thread is fine.
    unsafe {
        guard.defer_unchecked(move || {
            drop(Box::from_raw(raw as *mut Entry));
            freed.0.fetch_add(1, Ordering::Release);
        });
    }
}

/// A worker's handle: cheap to clone, one per worker thread.
#[derive(Clone)]
pub struct SaReader {
    inner: Arc<Inner>,
}

impl fmt::Debug for SaReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaReader").finish_non_exhaustive()
    }
}

impl SaReader {
    /// Pins the current thread (once per batch of packets). Allocates only on a thread's very
    /// first pin (crossbeam registers the thread).
    #[inline]
    pub fn pin(&self) -> ReadGuard<'_> {
        ReadGuard {
            inner: &self.inner,
            guard: epoch::pin(),
        }
    }
}

/// A pinned view of the table; entries borrowed from it stay valid until it is dropped or
/// repinned. Not `Send`: pin on the thread that uses it.
pub struct ReadGuard<'r> {
    inner: &'r Inner,
    guard: Guard,
}

impl fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGuard").finish_non_exhaustive()
    }
}

/// Our two protected ports of one SA set (TS 33.203 §7.1: port_pc and port_ps). Every SA of
/// the set carries both, so a worker finds the set's other SAs and names our port-s (in our
/// Record-Route entry) from whichever SA a message used. No arithmetic ties them: a
/// re-registration's new set keeps the old set's port-s with a new port-c (TS 33.203 §7.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetPorts {
    /// Our protected client port (port_pc).
    pub c: u16,
    /// Our protected server port (port_ps).
    pub s: u16,
}

impl ReadGuard<'_> {
    /// The inbound SA for an ESP packet's SPI: one slab load, then the entry's SPI must equal
    /// `spi` (an SPI from an older generation of the slot finds nothing).
    #[inline]
    pub fn inbound(&self, spi: u32) -> Option<&Entry> {
        self.inner.inbound(spi, &self.guard)
    }

    /// The outbound SA towards `ue_addr:ue_port` from our `local_port`.
    #[inline]
    pub fn outbound(&self, ue_addr: IpAddr, ue_port: u16, local_port: u16) -> Option<&Entry> {
        self.inner.probe(&ue_addr, ue_port, &self.guard, |e| {
            e.local_port() == local_port
        })
    }

    /// The outbound SA of the set that the inbound SA `inbound` belongs to, toward the UE's
    /// `ue_port`: a response goes back over the set its request came over (TS 33.203 §7.1),
    /// from our port-c of that set (SA2), else from the port the request arrived at (SA3).
    #[inline]
    pub fn outbound_of_set(&self, ue_port: u16, inbound: &Entry) -> Option<&Entry> {
        let ue_addr = inbound.ue_addr;
        self.outbound(ue_addr, ue_port, inbound.port_c)
            .or_else(|| self.outbound(ue_addr, ue_port, inbound.local_port()))
    }

    /// An outbound SA towards `ue_addr:ue_port`, whatever our port: the one of the set in use
    /// (`New`) when the UE has two (a re-registration's old set lingers until it expires, TS
    /// 33.203 §7.4: requests toward the UE go over the new one), else the first on the chain.
    #[inline]
    pub fn outbound_any(&self, ue_addr: IpAddr, ue_port: u16) -> Option<&Entry> {
        self.inner
            .probe(&ue_addr, ue_port, &self.guard, |e| e.state == SetState::New)
            .or_else(|| self.inner.probe(&ue_addr, ue_port, &self.guard, |_| true))
    }

    /// Unpins and pins again (between batches), letting retired entries be freed.
    #[inline]
    pub fn repin(&mut self) {
        self.guard.repin();
    }
}

/// Writer-side state of an inbound slot.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum SlotState {
    Free,
    Reserved,
    Installed,
}

/// Counters of the table (writer's view).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaTableStats {
    /// SPIs reserved or installed.
    pub inbound_used: usize,
    /// Inbound entries published.
    pub inbound_live: usize,
    /// Outbound entries published.
    pub outbound_live: usize,
    /// Outbound tombstones.
    pub outbound_tombstones: usize,
    /// Outbound bucket-array rebuilds so far.
    pub rebuilds: u64,
    /// Entries ever allocated (compare with [`FreedCounter::get`]).
    pub entries_created: u64,
}

/// The only writer (the registration thread). Not `Clone`.
pub struct SaWriter {
    inner: Arc<Inner>,
    generation: Box<[u32]>,
    state: Box<[SlotState]>,
    free: VecDeque<u32>,
    generations: u64,
    shift: u32,
    out_max: usize,
    stats: SaTableStats,
}

impl fmt::Debug for SaWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaWriter")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Builds a table: the one writer and a first reader.
pub fn sa_table(cfg: SaTableConfig) -> Result<(SaWriter, SaReader), SaTableError> {
    cfg.validate()?;
    let n = cfg.slots();
    let span = u64::from(cfg.spi_max - cfg.spi_min) + 1;
    let generations = span / n as u64;
    let rs = RandomState::new();
    let seed = [rs.hash_one(1u8), rs.hash_one(2u8), rs.hash_one(3u8)];
    let inner = Arc::new(Inner {
        slots: (0..n).map(|_| Atomic::null()).collect(),
        spi_min: cfg.spi_min,
        span: generations * n as u64,
        slot_mask: (n - 1) as u32,
        out: Atomic::new(Buckets::new(cfg.buckets())),
        seed,
        freed: FreedCounter::default(),
    });
    // Shuffled free list (Fisher-Yates with xorshift64*, seeded from the OS-keyed RandomState).
    let mut free: Vec<u32> = (0..n as u32).collect();
    let mut x = rs.hash_one(4u8) | 1;
    for i in (1..free.len()).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        free.swap(i, (r % (i as u64 + 1)) as usize);
    }
    let w = SaWriter {
        inner: Arc::clone(&inner),
        generation: vec![0; n].into_boxed_slice(),
        state: vec![SlotState::Free; n].into_boxed_slice(),
        free: free.into(),
        generations,
        shift: n.trailing_zeros(),
        out_max: cfg.outbound_capacity as usize,
        stats: SaTableStats::default(),
    };
    Ok((w, SaReader { inner }))
}

impl SaWriter {
    /// Another reader (for another worker).
    pub fn reader(&self) -> SaReader {
        SaReader {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The counters.
    pub fn stats(&self) -> SaTableStats {
        self.stats
    }

    /// (mean, longest) probe distance of the live outbound entries, in buckets (0 = found at
    /// its home bucket): a health figure for the hash and the tombstone clean-up.
    pub fn outbound_probe_lengths(&self) -> (f64, usize) {
        let g = epoch::pin();
        // SAFETY: `out` is never null; only this writer replaces it or frees entries.
        let bk = unsafe { self.inner.out.load(Ordering::Relaxed, &g).deref() };
        let (mut sum, mut max, mut n) = (0usize, 0usize, 0usize);
        for (i, s) in bk.b.iter().enumerate() {
            // SAFETY: as above.
            if let Some(e) = unsafe { s.load(Ordering::Relaxed, &g).as_ref() } {
                let home = self.inner.hash(&e.ue_addr, e.ue_port) as usize & bk.mask;
                let d = i.wrapping_sub(home) & bk.mask;
                sum += d;
                max = max.max(d);
                n += 1;
            }
        }
        (sum as f64 / n.max(1) as f64, max)
    }

    /// A counter of freed entries that outlives the table.
    pub fn freed_counter(&self) -> FreedCounter {
        self.inner.freed.clone()
    }

    /// Pushes this thread's retired entries to the epoch and frees what is already safe to free.
    pub fn collect(&self) {
        let g = epoch::pin();
        g.flush();
    }

    fn spi_of(&self, slot: u32) -> u32 {
        let off = (u64::from(self.generation[slot as usize]) << self.shift) | u64::from(slot);
        // off < span <= 2^32 - spi_min, so this does not overflow.
        self.inner.spi_min + off as u32
    }

    /// The slot of one of our SPIs, if its generation is current and the slot not free.
    fn slot_of(&self, spi: u32) -> Result<usize, SaTableError> {
        let off = spi.wrapping_sub(self.inner.spi_min);
        if u64::from(off) >= self.inner.span {
            return Err(SaTableError::UnknownSpi);
        }
        let slot = (off & self.inner.slot_mask) as usize;
        if off >> self.shift != self.generation[slot] || self.state[slot] == SlotState::Free {
            return Err(SaTableError::UnknownSpi);
        }
        Ok(slot)
    }

    /// Reserves a fresh inbound SPI (for Security-Server's spi-c / spi-s), to build the `Sa`
    /// with and then [`SaWriter::install_inbound`]. Release it with
    /// [`SaWriter::remove_inbound`] if the registration fails.
    pub fn reserve_spi(&mut self) -> Result<u32, SaTableError> {
        // (a slot taken by `reserve_exact_spi` is still in the list: skipped here)
        let slot = loop {
            let slot = self.free.pop_front().ok_or(SaTableError::InboundFull)?;
            if self.state[slot as usize] == SlotState::Free {
                break slot;
            }
        };
        self.state[slot as usize] = SlotState::Reserved;
        self.stats.inbound_used += 1;
        Ok(self.spi_of(slot))
    }

    /// Reserves this very SPI (an SA set restored from persisted state keeps the SPIs the UE
    /// knows): its slot must be free, and the SPI inside the table's range, as it is when the
    /// table has the configuration it had when the SPI was handed out. The slot stays in the
    /// free list, where [`SaWriter::reserve_spi`] skips it, so this costs no search.
    pub fn reserve_exact_spi(&mut self, spi: u32) -> Result<(), SaTableError> {
        let off = spi.wrapping_sub(self.inner.spi_min);
        if spi < self.inner.spi_min || u64::from(off) >= self.inner.span {
            return Err(SaTableError::UnknownSpi);
        }
        let slot = (off & self.inner.slot_mask) as usize;
        if self.state[slot] != SlotState::Free {
            return Err(SaTableError::NotReserved);
        }
        self.generation[slot] = off >> self.shift;
        self.state[slot] = SlotState::Reserved;
        self.stats.inbound_used += 1;
        Ok(())
    }

    /// [`SaWriter::reserve_spi`], but never one of `avoid` (the UE's own SPIs: an SA set whose
    /// SPIs coincide could repeat GCM/GMAC IVs under its shared key, see
    /// `esp::outbound_ivs_disjoint`). A slot whose SPI is in `avoid` goes straight back to the
    /// free list under its next generation; after `avoid.len() + 1` tries it is
    /// [`SaTableError::InboundFull`].
    pub fn reserve_spi_avoiding(&mut self, avoid: &[u32]) -> Result<u32, SaTableError> {
        for _ in 0..=avoid.len() {
            let spi = self.reserve_spi()?;
            if !avoid.contains(&spi) {
                return Ok(spi);
            }
            self.remove_inbound(spi)?;
        }
        Err(SaTableError::InboundFull)
    }

    /// Publishes an inbound SA under its own SPI, which must have come from
    /// [`SaWriter::reserve_spi`] and not be installed yet.
    pub fn install_inbound(
        &mut self,
        sa: impl Into<Arc<Sa>>,
        meta: &EntryMeta,
    ) -> Result<(), SaTableError> {
        let sa = sa.into();
        let slot = self.slot_of(sa.spi())?;
        if self.state[slot] != SlotState::Reserved {
            return Err(SaTableError::NotReserved);
        }
        let g = epoch::pin();
        let e = Owned::new(Entry::new(sa, Direction::In, meta));
        self.inner.slots[slot].store(e, Ordering::Release);
        drop(g);
        self.state[slot] = SlotState::Installed;
        self.stats.inbound_live += 1;
        self.stats.entries_created += 1;
        Ok(())
    }

    /// Republishes an inbound entry with another `set_state` (same `Sa`).
    pub fn set_inbound_state(&mut self, spi: u32, state: SetState) -> Result<(), SaTableError> {
        let slot = self.slot_of(spi)?;
        if self.state[slot] != SlotState::Installed {
            return Err(SaTableError::NotFound);
        }
        let g = epoch::pin();
        let cell = &self.inner.slots[slot];
        // SAFETY: installed slots are non-null and only this writer frees them.
        let old = cell.load(Ordering::Relaxed, &g);
        let new = Owned::new(unsafe { old.deref() }.with_state(state));
        cell.store(new, Ordering::Release);
        // SAFETY: `old` was just unlinked, by the only writer.
        unsafe { retire(&g, old, &self.inner.freed) };
        self.stats.entries_created += 1;
        Ok(())
    }

    /// Attaches (or clears) the registration of an inbound SA: republished like a state change.
    pub fn set_inbound_registration(
        &mut self,
        spi: u32,
        reg: Option<Arc<Registration>>,
    ) -> Result<(), SaTableError> {
        let slot = self.slot_of(spi)?;
        if self.state[slot] != SlotState::Installed {
            return Err(SaTableError::NotFound);
        }
        let g = epoch::pin();
        let cell = &self.inner.slots[slot];
        // SAFETY: installed slots are non-null and only this writer frees them.
        let old = cell.load(Ordering::Relaxed, &g);
        let new = Owned::new(unsafe { old.deref() }.with_registration(reg));
        cell.store(new, Ordering::Release);
        // SAFETY: `old` was just unlinked, by the only writer.
        unsafe { retire(&g, old, &self.inner.freed) };
        self.stats.entries_created += 1;
        Ok(())
    }

    /// Unpublishes an inbound SA (or cancels a reservation) and frees its SPI; the slot's next
    /// SPI will differ. Returns the SA if one was installed.
    pub fn remove_inbound(&mut self, spi: u32) -> Result<Option<Arc<Sa>>, SaTableError> {
        let slot = self.slot_of(spi)?;
        let mut sa = None;
        if self.state[slot] == SlotState::Installed {
            let g = epoch::pin();
            let old = self.inner.slots[slot].swap(Shared::null(), Ordering::Release, &g);
            // SAFETY: installed slots are non-null; `old` is unlinked, by the only writer.
            unsafe {
                sa = Some(Arc::clone(&old.deref().sa));
                retire(&g, old, &self.inner.freed);
            }
            self.stats.inbound_live -= 1;
        }
        let next = u64::from(self.generation[slot]) + 1;
        self.generation[slot] = (next % self.generations) as u32;
        self.state[slot] = SlotState::Free;
        self.free.push_back(slot as u32);
        self.stats.inbound_used -= 1;
        Ok(sa)
    }

    /// Publishes the outbound SA for (`meta.ue_addr`, `meta.ue_port`, `meta.local_port`),
    /// atomically replacing the one there (returned): readers see the old or the new entry,
    /// never neither.
    pub fn install_outbound(
        &mut self,
        sa: impl Into<Arc<Sa>>,
        meta: &EntryMeta,
    ) -> Result<Option<Arc<Sa>>, SaTableError> {
        let g = epoch::pin();
        let (found, free) = self.find_out(&meta.ue_addr, meta.ue_port, meta.local_port, &g);
        // SAFETY: `out` is never null; only this writer replaces it.
        let bk = unsafe { self.inner.out.load(Ordering::Relaxed, &g).deref() };
        if let Some(i) = found {
            let e = Owned::new(Entry::new(sa.into(), Direction::Out, meta));
            let old = bk.b[i].swap(e, Ordering::Release, &g);
            self.stats.entries_created += 1;
            // SAFETY: non-null (found), unlinked just now by the only writer.
            unsafe {
                let prev = Arc::clone(&old.deref().sa);
                retire(&g, old, &self.inner.freed);
                return Ok(Some(prev));
            }
        }
        if self.stats.outbound_live >= self.out_max {
            return Err(SaTableError::OutboundFull);
        }
        // A probe always ends on an empty bucket (a quarter are empty), so `free` is set.
        let i = free.ok_or(SaTableError::OutboundFull)?;
        if bk.b[i].load(Ordering::Relaxed, &g).tag() == TOMBSTONE {
            self.stats.outbound_tombstones -= 1;
        }
        let e = Owned::new(Entry::new(sa.into(), Direction::Out, meta));
        bk.b[i].store(e, Ordering::Release);
        self.stats.outbound_live += 1;
        self.stats.entries_created += 1;
        if (self.stats.outbound_live + self.stats.outbound_tombstones) * 4 > 3 * (bk.mask + 1) {
            self.rebuild(&g);
        }
        Ok(None)
    }

    /// Republishes an outbound entry with another `set_state` (same `Sa`).
    pub fn set_outbound_state(
        &mut self,
        ue_addr: IpAddr,
        ue_port: u16,
        local_port: u16,
        state: SetState,
    ) -> Result<(), SaTableError> {
        let g = epoch::pin();
        let i = self
            .find_out(&ue_addr, ue_port, local_port, &g)
            .0
            .ok_or(SaTableError::NotFound)?;
        // SAFETY: `out` is never null; found buckets are non-null; only this writer frees.
        unsafe {
            let bk = self.inner.out.load(Ordering::Relaxed, &g).deref();
            let old = bk.b[i].load(Ordering::Relaxed, &g);
            let new = Owned::new(old.deref().with_state(state));
            bk.b[i].store(new, Ordering::Release);
            retire(&g, old, &self.inner.freed);
        }
        self.stats.entries_created += 1;
        Ok(())
    }

    /// Unpublishes an outbound entry and returns its SA.
    pub fn remove_outbound(
        &mut self,
        ue_addr: IpAddr,
        ue_port: u16,
        local_port: u16,
    ) -> Result<Arc<Sa>, SaTableError> {
        let g = epoch::pin();
        let i = self
            .find_out(&ue_addr, ue_port, local_port, &g)
            .0
            .ok_or(SaTableError::NotFound)?;
        // SAFETY: `out` is never null; only this writer replaces it.
        let bk = unsafe { self.inner.out.load(Ordering::Relaxed, &g).deref() };
        let mask = bk.mask;
        let next_empty = {
            let n = bk.b[(i + 1) & mask].load(Ordering::Relaxed, &g);
            n.is_null() && n.tag() != TOMBSTONE
        };
        let mark = if next_empty {
            Shared::null()
        } else {
            Shared::null().with_tag(TOMBSTONE)
        };
        let old = bk.b[i].swap(mark, Ordering::Release, &g);
        self.stats.outbound_live -= 1;
        if next_empty {
            // The cluster ends here, so the tombstones right before `i` guard no entry: make
            // them empty again (a reader stopping there would have found nothing further on).
            let mut j = i.wrapping_sub(1) & mask;
            while bk.b[j].load(Ordering::Relaxed, &g).tag() == TOMBSTONE {
                bk.b[j].store(Shared::null(), Ordering::Release);
                self.stats.outbound_tombstones -= 1;
                j = j.wrapping_sub(1) & mask;
            }
        } else {
            self.stats.outbound_tombstones += 1;
        }
        // SAFETY: found, so non-null; unlinked just now by the only writer.
        unsafe {
            let sa = Arc::clone(&old.deref().sa);
            retire(&g, old, &self.inner.freed);
            Ok(sa)
        }
    }

    /// (bucket holding the key, first reusable bucket on its chain).
    fn find_out(
        &self,
        addr: &IpAddr,
        port: u16,
        lport: u16,
        g: &Guard,
    ) -> (Option<usize>, Option<usize>) {
        // SAFETY: `out` is never null; only this writer replaces it.
        let bk = unsafe { self.inner.out.load(Ordering::Relaxed, g).deref() };
        let mut i = self.inner.hash(addr, port) as usize & bk.mask;
        let mut free = None;
        for _ in 0..=bk.mask {
            let p = bk.b[i].load(Ordering::Relaxed, g);
            // SAFETY: only this writer frees entries.
            match unsafe { p.as_ref() } {
                Some(e) if e.ue_port == port && e.local_port() == lport && e.ue_addr == *addr => {
                    return (Some(i), free);
                }
                Some(_) => {}
                None => {
                    free.get_or_insert(i);
                    if p.tag() != TOMBSTONE {
                        break;
                    }
                }
            }
            i = (i + 1) & bk.mask;
        }
        (None, free)
    }

    /// Re-inserts every live outbound entry into a fresh bucket array without tombstones and
    /// publishes it; readers on the old array still see valid entries until they unpin.
    fn rebuild(&mut self, g: &Guard) {
        // SAFETY: `out` is never null; only this writer replaces it.
        let old = self.inner.out.load(Ordering::Relaxed, g);
        let ob = unsafe { old.deref() };
        let nb = Buckets::new(ob.mask + 1);
        for s in ob.b.iter() {
            let p = s.load(Ordering::Relaxed, g);
            // SAFETY: only this writer frees entries.
            if let Some(e) = unsafe { p.as_ref() } {
                let mut i = self.inner.hash(&e.ue_addr, e.ue_port) as usize & nb.mask;
                while !nb.b[i].load(Ordering::Relaxed, g).is_null() {
                    i = (i + 1) & nb.mask;
                }
                nb.b[i].store(p, Ordering::Relaxed);
            }
        }
        self.inner.out.store(Owned::new(nb), Ordering::Release);
        // SAFETY: the old array is unlinked; dropping it does not drop the entries it points to.
        unsafe { g.defer_destroy(old) };
        self.stats.outbound_tombstones = 0;
        self.stats.rebuilds += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_knows_its_impus_and_matches_a_preferred_one() {
        let next: std::net::SocketAddr = "10.0.1.30:6060".parse().unwrap();
        let r = Registration::with_impus(
            b"<sip:alice@ims.example.net>",
            b"<sip:scscf.ims.example.net;lr>",
            &[
                b"sip:alice@ims.example.net",
                b"tel:+15551234",
                b"sip:a2@ims.example.net",
            ],
            next,
        );
        assert_eq!(r.pai(), b"<sip:alice@ims.example.net>");
        assert_eq!(r.route(), b"<sip:scscf.ims.example.net;lr>");
        let impus: Vec<&[u8]> = r.impus().collect();
        assert_eq!(impus.len(), 3);
        assert_eq!(impus[1], b"tel:+15551234");
        assert_eq!(
            r.registered_impu(b"sip:A2@ims.example.net"),
            None,
            "the user part is case-sensitive"
        );
        assert_eq!(
            r.registered_impu(b"sip:a2@IMS.example.net;user=phone"),
            Some(&b"sip:a2@ims.example.net"[..])
        );
        assert_eq!(
            r.registered_impu(b"tel:+15551234"),
            Some(&b"tel:+15551234"[..])
        );
        assert_eq!(r.registered_impu(b"sip:bob@ims.example.net"), None);
        let bare = Registration::new(b"<sip:x@y>", b"", next);
        assert_eq!(bare.impus().count(), 0);
        assert_eq!(bare.registered_impu(b"sip:x@y"), None);
    }
}
