//! The registration state machine of the P-CSCF (TS 24.229 §5.2.2, TS 33.203 §7): the single
//! writer of the SA table.
//!
//! Owns: pending REGISTER transactions (by our Via branch), registrations (bindings) with their
//! SA sets (temporary → current), SPI and protected-port allocation, building the four SAs from
//! CK/IK, and the timers that remove SAs (reg-await-auth for a temporary set, registration
//! expiry + 30 s for a current one). It is sans-IO, shaped like quinn-proto's connection: time
//! is an argument, inputs are `handle_*` ([`Registrar::handle_message`] for a punted message,
//! [`Registrar::handle_dns`] for a DNS answer, [`Registrar::handle_timeout`]), outputs are
//! `poll_*` ([`Registrar::poll_transmit`] for the workers to send, [`Registrar::poll_dns_query`]
//! for the control loop's DNS socket) and [`Registrar::poll_timeout`] is the next deadline (a
//! heap of timers, so a timeout touches only what is due). It never touches a socket or a
//! file: SA keys go to a [`KeyLog`] only when one is set. The SAs it installs go straight into
//! the lock-free SA table it is the single writer of (memory, no I/O).
//!
//! The flow (spec digest §0):
//! 1. unprotected REGISTER → §1.1 checks (4xx on failure) → rewrite → to the I-CSCF;
//! 2. 401 with ck/ik → allocate spi-c/spi-s and port-c/port-s, install the four SAs as the
//!    temporary set, add Security-Server → 401 to the UE, unprotected;
//! 3. REGISTER over SA1 of that set → Security-Verify and Security-Client checks (494 over the
//!    SA on a mismatch) → rewrite with integrity-protected="yes" → to the I-CSCF;
//! 4. 200 → the set becomes current (lifetime expires + 30 s), Service-Route and
//!    P-Associated-URI kept → 200 to the UE over SA2 (our port-c → its port-s).
//!
//! Any other final response is relayed the way the request came; a failed authentication
//! removes the temporary set.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idmap::IdMap;

mod persist;
use super::keylog::{KeyLog, SaSecret};
use crate::dataplane::{Datagram, Protection};
use crate::esp::{EncAlg, IntegAlg, Suite};
use crate::esp::{Sa, SaOptions};
use crate::io::Side;
use crate::satable::{EntryMeta, Registration, SaWriter, SetPorts, SetState};
use crate::sip::headers::{IpsecOffer, Via};
use crate::sip::rules::{self, Forward, ProxyIdentity};
use crate::sip::{Editor, HeaderName, Index, Message, View};
pub use persist::Restored;

/// TS 24.229 Table 7.7.1: reg-await-auth, the life of a temporary SA set.
pub const REG_AWAIT_AUTH: Duration = Duration::from_secs(240);
/// REGISTER transactions in progress at most (each holds ~2 KB until answered or 32 s pass): past
/// it a new REGISTER gets 503 (RFC 3261 §21.5.4) instead of growing memory without bound under a
/// flood or a silent core.
pub const MAX_PENDING: usize = 1 << 17;
/// REGISTERs waiting for the DNS answer of one home domain at most; past it the next gets 503
/// (RFC 3261 §21.5.4). The resolver bounds the domains in progress, so this bounds them all.
pub const MAX_PARKED_PER_DOMAIN: usize = 32;
/// Unprotected REGISTERs per source address: a burst, then a rate. A UE sends one per
/// registration attempt (its retransmissions are absorbed before the check), so these leave it
/// ample room while one source cannot keep the registration thread busy.
pub const SOURCE_BURST: u32 = crate::config::DEFAULT_REGISTER_BURST_PER_SOURCE;
pub const SOURCE_PER_SECOND: f64 = crate::config::DEFAULT_REGISTER_RATE_PER_SOURCE;
/// Unprotected REGISTERs per IMPI.
pub const IMPI_BURST: u32 = 10;
pub const IMPI_PER_SECOND: f64 = 0.5;
/// Keys each rate limiter remembers at most.
pub const RATE_KEYS: usize = 1 << 16;
/// TS 24.229 §5.1.1.5.1: an SA set outlives the registration by 30 s.
pub const SA_GRACE: Duration = Duration::from_secs(30);
/// Challenges in progress per IMPI (one per UE address): past it a new challenge for that IMPI
/// from yet another address is refused, so a flood of REGISTERs naming one subscriber cannot
/// hold SA slots without bound nor evict the subscriber's own challenge.
pub const MAX_TEMPORARY: usize = 4;
/// After this long a de-registered or failed set is removed: time for the last answer to leave
/// over it.
const LINGER: Duration = Duration::from_secs(2);
/// 64*T1 (RFC 3261 §17.1.1.2 Timer B, §17.2.1 Timer J): how long a transaction waits for the
/// core's answer, and how long its answer is kept for retransmissions.
const TRANSACTION_LIFE: Duration = crate::sip::TIMER_F;
/// How long a set displaced by a second re-registration stays ([`Binding::retiring`]): a
/// non-INVITE transaction's life.
const RETIRE: Duration = TRANSACTION_LIFE;

/// A transaction as the UE names it: (Call-ID, CSeq number).
type Txn = (Vec<u8>, u64);

/// A deadline of the registrar, queued in `Registrar::timers`. Entries are not removed when
/// the state they name changes (lazy deletion): one that comes due checks that state and does
/// nothing when it moved on (a refreshed set, an answered transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    /// The SA set of `binding` whose inbound spi-c is `spi` expires.
    Set { binding: u64, spi: u32 },
    /// The REGISTER transaction of this branch has had no final response in time.
    Pending(u64),
    /// The binding goes if it holds no set and no transaction any more.
    Binding(u64),
}

/// The timers' counters (a timeout touches only the due entries: the tests count them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Entries queued now, live or stale.
    pub queued: usize,
    /// Entries that came due and were looked at.
    pub fired: u64,
    /// Of those, entries that had nothing to do (the state they named moved on).
    pub stale: u64,
}

/// What the registrar needs from the configuration.
#[derive(Clone, Debug)]
pub struct RegistrarConfig {
    pub ue_addrs: Vec<IpAddr>,
    pub ue_sip_port: u16,
    pub protected_ports: RangeInclusive<u16>,
    pub core: SocketAddr,
    /// A static I-CSCF; without it the home domain is resolved by DNS (RFC 3263).
    pub icscf: Option<SocketAddr>,
    /// The DNS server for that resolution.
    pub dns: Option<SocketAddr>,
    /// The home domains served (`core.home_domains` and `core.icscf_by_domain`); empty: any
    /// domain name (static I-CSCF).
    pub home_domains: Vec<String>,
    /// Home domains with an I-CSCF of their own, ahead of `icscf` and DNS.
    pub icscf_by_domain: Vec<(String, SocketAddr)>,
    /// The configured I-CSCFs (`icscf`, `icscf_by_domain`) take REGISTERs over TCP.
    pub icscf_tcp: bool,
    /// The largest REGISTER sent to the core in a datagram; larger ones go over TCP (RFC 3261
    /// §18.1.1).
    pub core_max_udp_request: usize,
    /// Unprotected REGISTERs per source address: (burst, per second). Defaults
    /// [`SOURCE_BURST`], [`SOURCE_PER_SECOND`]; a lab whose simulated UEs share one address
    /// raises them (`ue.register_burst_per_source`, `ue.register_rate_per_source`).
    pub source_limit: (u32, f64),
    pub via_sent_by: String,
    pub path_uri: String,
    /// Our hostnames. With `ue_addrs`, `core`, `ue_sip_port` and `protected_ports` they make
    /// the "is this URI us?" rule (`sip::own`) for Route pops and Request-URI checks.
    pub own_hosts: Vec<String>,
    pub visited_network_id: String,
    pub orig_ioi: String,
    pub prefs: Vec<(IntegAlg, EncAlg)>,
    pub sa_options: SaOptions,
    /// REGISTER transactions in progress at most ([`MAX_PENDING`] in `pcscf run`).
    pub max_pending: usize,
    /// Subscribe to each registration's reg event (`core.reg_event`, TS 24.229 §5.2.3).
    pub reg_event: bool,
}

/// A message a worker punted: how and where it arrived (the queue's [`Datagram`]).
pub type Incoming<'a> = Datagram<&'a [u8]>;

/// A message for a worker to send ([`Registrar::poll_transmit`]); `Protected`: over the
/// outbound SA of the flow `src` → `dst`.
pub type Outgoing = Datagram<Vec<u8>>;

/// Where and how an answer to a UE goes, before its bytes exist.
type Reply = Datagram<()>;

/// Counters of the registration thread, by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistrarStats {
    pub registers_in: u64,
    pub rejected: u64,
    pub forwarded: u64,
    pub challenges: u64,
    pub registered: u64,
    pub deregistered: u64,
    pub verify_mismatch: u64,
    pub auth_failed: u64,
    pub unknown_transaction: u64,
    pub no_next_hop: u64,
    pub retransmissions: u64,
    pub malformed: u64,
    pub sa_install_failed: u64,
    pub expired_sets: u64,
    /// New REGISTERs answered 503 because `max_pending` transactions were in progress.
    pub overloaded: u64,
    /// Protected REGISTERs naming another IMPI than the one their SA set was created for (403).
    pub impi_mismatch: u64,
    /// Challenges in progress dropped (the oldest) for a new one, the IMPI having
    /// [`MAX_TEMPORARY`] already.
    pub temporary_evicted: u64,
    /// 200s without P-Associated-URI: relayed, but no identity is asserted for the UE.
    pub no_associated_uri: u64,
    /// Final responses from another address than the one the REGISTER was sent to.
    pub foreign_response: u64,
    /// REGISTERs for a domain this P-CSCF does not serve, or an IP literal (403).
    pub unknown_home_domain: u64,
    /// Answers to completed transactions dropped from the retransmission cache when it was full.
    pub completed_evicted: u64,
    /// Answers to unprotected REGISTERs not sent because they were larger than the request
    /// (a spoofed source would make us an amplifier).
    pub reflection_suppressed: u64,
    /// REGISTERs held until the DNS answer for their home domain came.
    pub parked: u64,
    /// Unprotected REGISTERs dropped by the per-source / per-IMPI rate limits.
    pub rate_limited_source: u64,
    pub rate_limited_impi: u64,
    /// Final responses that carried no Via but ours: meant for us, not relayed to the UE
    /// (RFC 3261 §16.7 step 3).
    pub meant_for_us: u64,
    /// Registrations this P-CSCF ended itself ([`Registrar::deregister`]), and the answers of
    /// the core to the de-registrations it sent for them: 2xx, or anything else.
    pub pcscf_deregistrations: u64,
    pub pcscf_dereg_answered: u64,
    pub pcscf_dereg_refused: u64,
    /// SA sets installed again from the store at start ([`Registrar::restore`]).
    pub restored_sets: u64,
}

impl RegistrarStats {
    /// Every counter with its name (Prometheus labels and logs). The destructuring names each
    /// field, so a counter added to the struct and not here does not compile.
    pub fn named(&self) -> [(&'static str, u64); 30] {
        let RegistrarStats {
            registers_in,
            rejected,
            forwarded,
            challenges,
            registered,
            deregistered,
            verify_mismatch,
            auth_failed,
            unknown_transaction,
            no_next_hop,
            retransmissions,
            malformed,
            sa_install_failed,
            expired_sets,
            overloaded,
            impi_mismatch,
            temporary_evicted,
            no_associated_uri,
            foreign_response,
            unknown_home_domain,
            completed_evicted,
            reflection_suppressed,
            parked,
            rate_limited_source,
            rate_limited_impi,
            meant_for_us,
            pcscf_deregistrations,
            pcscf_dereg_answered,
            pcscf_dereg_refused,
            restored_sets,
        } = *self;
        [
            ("registers_in", registers_in),
            ("rejected", rejected),
            ("forwarded", forwarded),
            ("challenges", challenges),
            ("registered", registered),
            ("deregistered", deregistered),
            ("verify_mismatch", verify_mismatch),
            ("auth_failed", auth_failed),
            ("unknown_transaction", unknown_transaction),
            ("no_next_hop", no_next_hop),
            ("retransmissions", retransmissions),
            ("malformed", malformed),
            ("sa_install_failed", sa_install_failed),
            ("expired_sets", expired_sets),
            ("overloaded", overloaded),
            ("impi_mismatch", impi_mismatch),
            ("temporary_evicted", temporary_evicted),
            ("no_associated_uri", no_associated_uri),
            ("foreign_response", foreign_response),
            ("unknown_home_domain", unknown_home_domain),
            ("completed_evicted", completed_evicted),
            ("reflection_suppressed", reflection_suppressed),
            ("parked", parked),
            ("rate_limited_source", rate_limited_source),
            ("rate_limited_impi", rate_limited_impi),
            ("meant_for_us", meant_for_us),
            ("pcscf_deregistrations", pcscf_deregistrations),
            ("pcscf_dereg_answered", pcscf_dereg_answered),
            ("pcscf_dereg_refused", pcscf_dereg_refused),
            ("restored_sets", restored_sets),
        ]
    }
}

/// What becomes of a 401 from the core.
enum Challenge {
    /// Relay it (with Security-Server when it carried keys).
    Relay,
    /// Malformed: nothing goes to the UE (counted).
    Drop,
    /// No SA set could be made for it (table full, no free port pair): the UE gets a 503.
    Unavailable,
}

/// A REGISTER waiting for the resolution of its home domain: the message as it came, run again
/// through [`Registrar::handle_message`] when the answer is in the cache.
#[derive(Debug)]
struct Parked {
    msg: Datagram<Vec<u8>>,
    txn: Txn,
}

/// One set of four SAs (TS 33.203 §7.1).
#[derive(Clone, Debug)]
struct SaSet {
    ue: IpAddr,
    spi_pc: u32,
    spi_ps: u32,
    port_pc: u16,
    port_ps: u16,
    port_uc: u16,
    port_us: u16,
    /// The UE's SPIs (our outbound SAs carry them): an outbound entry is removed only while it
    /// still holds this set's SA, never one another set or binding installed since.
    spi_uc: u32,
    spi_us: u32,
    /// The algorithms we chose: with the SPIs and ports they rebuild the Security-Server we sent
    /// ([`SaSet::server`]) for the Security-Verify check, instead of keeping its text per UE.
    alg: IntegAlg,
    ealg: EncAlg,
    /// The Security-Client the UE sent, needed only while the set is temporary (the protected
    /// REGISTER that completes the challenge must repeat it); emptied when the set becomes current.
    client: Box<[u8]>,
    expires: Instant,
    /// CK ‖ IK, kept only while the state is persisted ([`Registrar::enable_persistence`]):
    /// the stored record rebuilds the SAs from them.
    keys: Option<SetKeys>,
    /// The outbound sequence ceilings (toward the UE's port-s, port-c) and the inbound
    /// high-water marks (on our spi-s, spi-c) as last put in the record ([`Persist`]).
    out_ceiling: [u32; 2],
    in_top: [u32; 2],
}

/// CK ‖ IK of a set: wiped on drop, never shown by `Debug`.
#[derive(Clone)]
struct SetKeys(zeroize::Zeroizing<[u8; 32]>);

impl SetKeys {
    fn new(ck: &[u8; 16], ik: &[u8; 16]) -> SetKeys {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        k[..16].copy_from_slice(ck);
        k[16..].copy_from_slice(ik);
        SetKeys(k)
    }

    fn ck(&self) -> &[u8; 16] {
        self.0[..16].try_into().expect("16 bytes")
    }

    fn ik(&self) -> &[u8; 16] {
        self.0[16..].try_into().expect("16 bytes")
    }
}

impl std::fmt::Debug for SetKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetKeys(..)")
    }
}

/// How far ahead of the last sequence number sent an outbound SA's persisted ceiling is put by
/// default ([`PersistOptions::seq_step`]; RFC 4303 §3.3.3: a restored SA resumes after its
/// ceiling, so it never sends a number twice). Each restart costs an SA up to one step of its
/// 32-bit space: 65,536 restarts. The counters sweep raises a ceiling once the SA is within
/// half a step of it.
pub const SEQ_STEP: u32 = crate::config::DEFAULT_SEQ_STEP;
/// Bindings the counters sweep ([`Registrar::sweep_counters`]) looks at per call at most.
pub const SWEEP_BUDGET: usize = 2048;
/// An inbound high-water mark is written again once it moved this far (each write is a
/// record; a replay after a crash is bounded by it and the sweep's round).
pub const IN_TOP_STEP: u32 = 16;
/// The longest life a restored set may have, whatever its record says (a clock set back, a
/// record from far off): registrations longer than a week are not expected.
pub const MAX_RESTORED_LIFE: Duration = Duration::from_secs(8 * 24 * 3600);

/// How the state is persisted ([`Registrar::enable_persistence`]).
#[derive(Clone, Copy, Debug)]
pub struct PersistOptions {
    /// [`SEQ_STEP`] unless a test wants raises to come often (at least 16).
    pub seq_step: u32,
    /// The store may lose writes it acknowledged (Redis without `appendfsync always`): a
    /// restored SA skips one more step, in case a raise it sent under was lost.
    pub store_may_lose_writes: bool,
}

impl Default for PersistOptions {
    fn default() -> Self {
        PersistOptions {
            seq_step: SEQ_STEP,
            store_may_lose_writes: false,
        }
    }
}

/// A change of the persisted state for the store ([`Registrar::drain_store`]).
#[derive(Debug)]
pub enum StoreWrite {
    /// A binding's record, new or changed.
    Put(crate::control::store::BindingRecord),
    /// The binding of this IMPI is gone.
    Delete(Arc<[u8]>),
}

/// The write-through bookkeeping, present while the state is persisted.
#[derive(Debug, Default)]
struct Persist {
    opts: PersistOptions,
    /// The IMPIs whose record changed since the last drain (by IMPI, not binding: a binding
    /// gone and a new one of the same IMPI make one write, the newest).
    dirty: std::collections::HashSet<Arc<[u8]>>,
    /// What the last drain handed out, until the shell says it is written or not.
    draining: Vec<Arc<[u8]>>,
    /// The outbound ceilings in the records being written, with their SAs: given to the SAs
    /// once written (a ceiling never runs ahead of the store for a set the store holds).
    draining_ceilings: Vec<(Arc<crate::esp::Sa>, u32)>,
    /// Bindings in the order the counters sweep visits them (each appears once while it
    /// lives; a gone one is dropped when met).
    sweep: VecDeque<u64>,
}

impl SaSet {
    /// The Security-Server value we sent for this set (TS 33.203 §7.2), into `buf`.
    fn server<'b>(&self, buf: &'b mut [u8; 256]) -> &'b [u8] {
        let n = rules::write_security_server(
            buf,
            self.alg,
            self.ealg,
            self.spi_pc,
            self.spi_ps,
            self.port_pc,
            self.port_ps,
        )
        .unwrap_or(0);
        &buf[..n]
    }
}

/// SA sets by role ([`SetRole`]), over all bindings ([`Registrar::set_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetCounts {
    pub temporary: u64,
    pub current: u64,
    pub old: u64,
    pub retiring: u64,
}

impl SetCounts {
    /// The sets of one binding.
    fn of(b: &Binding) -> SetCounts {
        SetCounts {
            temporary: b.temporary.len() as u64,
            current: u64::from(b.current.is_some()),
            old: u64::from(b.old.is_some()),
            retiring: u64::from(b.retiring.is_some()),
        }
    }

    /// A binding went from `before` to `after`.
    fn moved(&mut self, before: SetCounts, after: SetCounts) {
        for (n, b, a) in [
            (&mut self.temporary, before.temporary, after.temporary),
            (&mut self.current, before.current, after.current),
            (&mut self.old, before.old, after.old),
            (&mut self.retiring, before.retiring, after.retiring),
        ] {
            *n = (*n + a).saturating_sub(b);
        }
    }

    /// One set more (or less) in `role`.
    fn add(&mut self, role: SetRole, up: bool) {
        let n = match role {
            SetRole::Temporary => &mut self.temporary,
            SetRole::Current => &mut self.current,
            SetRole::Old => &mut self.old,
            SetRole::Retiring => &mut self.retiring,
        };
        *n = if up { *n + 1 } else { n.saturating_sub(1) };
    }

    /// `(role, count)` for each role (Prometheus labels).
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            (SetRole::Temporary.name(), self.temporary),
            (SetRole::Current.name(), self.current),
            (SetRole::Old.name(), self.old),
            (SetRole::Retiring.name(), self.retiring),
        ]
    }
}

/// The sets are boxed: a registered UE has one, and the bindings map of a million UEs should not
/// carry room for three inline (memory per UE, perf/RESULTS.md).
#[derive(Debug)]
struct Binding {
    /// The private identity, shared with its key in `by_impi`.
    impi: Arc<[u8]>,
    /// Transactions in `pending` for this binding: it lives while one is in progress.
    in_flight: u32,
    /// Challenges in progress, at most one per UE address and [`MAX_TEMPORARY`] in all (the
    /// oldest makes room for a new one): an
    /// unprotected REGISTER naming this IMPI from another address (anyone can send one) gets its
    /// own temporary set and never replaces or promotes another address's (issue: a 200 must
    /// promote only the set its protected REGISTER arrived on).
    temporary: Vec<SaSet>,
    current: Option<Box<SaSet>>,
    /// The set a re-registration replaced: it keeps carrying traffic until it expires
    /// (TS 33.203 §7.4), so no message in flight is lost across the switch.
    old: Option<Box<SaSet>>,
    /// The set a second re-registration displaced from `old` while it was still there: it
    /// stays for [`RETIRE`] (or its own expiry if sooner), time for the transactions and the
    /// TCP connection still on it to finish (TS 33.203 §7.4: a set is not deleted while
    /// transactions use it); a third displaces it at once, so a binding holds at most three
    /// established sets.
    retiring: Option<Box<SaSet>>,
    /// What the workers were given at the last 200 (asserted identity, Service-Route as a
    /// Route value, next hop, the registered IMPUs), shared with the SA entries: the
    /// registration's state is kept once, not again as lists here.
    reg: Option<Arc<Registration>>,
    /// The Contact URI the UE registered (a de-registration on its behalf names it).
    contact: Box<[u8]>,
}

impl Binding {
    fn new(impi: Arc<[u8]>) -> Binding {
        Binding {
            impi,
            in_flight: 0,
            temporary: Vec::new(),
            current: None,
            old: None,
            retiring: None,
            reg: None,
            contact: Box::default(),
        }
    }

    /// Every SA set of the binding.
    fn sets(&self) -> impl Iterator<Item = &SaSet> {
        self.temporary
            .iter()
            .chain(self.current.as_deref())
            .chain(self.old.as_deref())
            .chain(self.retiring.as_deref())
    }

    /// The set one of our inbound SPIs belongs to.
    fn set_of(&self, spi: u32) -> Option<&SaSet> {
        self.sets().find(|s| s.spi_ps == spi || s.spi_pc == spi)
    }

    fn is_temporary(&self, spi: u32) -> bool {
        self.temporary
            .iter()
            .any(|s| s.spi_ps == spi || s.spi_pc == spi)
    }
}

/// A REGISTER on its way through the stages of [`Registrar::on_register`].
struct Register<'a, 'm> {
    m: &'a Message<'m>,
    protection: Protection,
    src: SocketAddr,
    dst: SocketAddr,
    /// Where its answer goes, and how.
    reply: Reply,
    /// The binding of the SA set it came over (protected).
    binding: Option<u64>,
    txn: Txn,
    now: Instant,
}

#[derive(Debug)]
struct Pending {
    binding: u64,
    /// The private identity (for logs).
    impi: Box<[u8]>,
    /// Its key in `by_txn`.
    txn: Txn,
    /// Where the response goes, and how.
    reply: Reply,
    client: Vec<u8>,
    offer: IpsecOffer,
    ue: SocketAddr,
    contact: Option<Vec<u8>>,
    created: Instant,
    /// What we forwarded and where, for retransmissions.
    forwarded: Vec<u8>,
    next: SocketAddr,
    /// It went over TCP: a retransmission of the UE's is not sent on (RFC 3261 §17.1.1.2:
    /// a reliable transport retransmits for us).
    over_tcp: bool,
}

pub struct Registrar {
    cfg: RegistrarConfig,
    /// What names us in a Route / Request-URI (from `cfg`, built once).
    own: crate::sip::OwnUris,
    sas: SaWriter,
    bindings: IdMap<Binding>,
    by_impi: HashMap<Arc<[u8]>, u64>,
    /// Our inbound SPI → binding comes from the SA table itself (each entry carries its
    /// binding): no second map of two entries per UE.
    sas_view: crate::satable::SaReader,
    pending: IdMap<Pending>,
    /// (Call-ID, CSeq) of each pending REGISTER → its branch: a retransmission is forwarded
    /// again as the same transaction (RFC 3261 §17.2.3), not as a new one.
    by_txn: HashMap<Txn, u64>,
    /// Answers to completed REGISTER transactions, for their retransmissions, each with the
    /// number of its entry in `completed_order`.
    completed: HashMap<Txn, (Outgoing, u64)>,
    /// `completed`'s keys, oldest first, with their number and when they go: past
    /// `max_pending` answers the oldest is evicted, and the front is the next to expire (an
    /// entry whose number is not the map's is stale).
    completed_order: VecDeque<(Txn, u64, Instant)>,
    completed_seq: u64,
    /// Deadlines of sets, transactions and bindings, the earliest on top.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    timer_stats: TimerStats,
    /// Messages for the workers to send ([`Registrar::poll_transmit`]).
    transmits: VecDeque<Outgoing>,
    next_id: u64,
    next_port: u16,
    branch_seq: u64,
    branch_key: u64,
    /// Where every SA's keys go as it is installed; none by default.
    keylog: Option<Arc<dyn KeyLog>>,
    resolver: super::dns::Resolver,
    /// REGISTERs waiting for DNS, by home domain (lowercase, as the resolver names it).
    parked: HashMap<String, Vec<Parked>>,
    /// A parked REGISTER is being run again: it was counted and rate-limited the first time.
    resuming: bool,
    /// Unprotected transactions in `pending`: they have their own `max_pending` budget, apart
    /// from the protected ones, so REGISTERs anyone can send cannot get a registered UE's
    /// re-REGISTER a 503.
    pending_plain: usize,
    /// The SA sets the bindings hold, by role, kept as they change (the metrics read them every
    /// 500 ms: no walk over a million bindings); `check_sa_invariants` checks them by a walk.
    set_counts: SetCounts,
    source_limit: super::ratelimit::RateLimiter<IpAddr>,
    impi_limit: super::ratelimit::RateLimiter<Vec<u8>>,
    /// The calls of each binding, released when its registration ends (TS 24.229 §5.2.8).
    dialogs: super::dialogs::Dialogs,
    /// The reg event subscription of each registration (TS 24.229 §5.2.3).
    regevent: super::regevent::RegEvent,
    pub stats: RegistrarStats,
    /// Where REGISTERs are rewritten (rules::rewrite_register), allocated once.
    rewrite_scratch: Box<[u8]>,
    /// The frame a message is copied into to be edited ([`framed_into`]); taken out while an
    /// editor holds it.
    frame: Vec<u8>,
    /// Write-through of the registration state, when it is persisted.
    persist: Option<Persist>,
    /// Bindings by the key of each IMPU they registered ([`impu_key`]): the candidates an
    /// IMPU lookup compares (an operator's `deregister` / `show registrations` by IMPU), so a
    /// lookup is a map probe, not a walk over every binding.
    impu_index: HashMap<Box<[u8]>, Vec<u64>>,
}

/// The index key of an IMPU: what RFC 3261 §19.1.4 compares (scheme, user and host, up to the
/// parameters), lowercased, so that every identity [`Registration::registered_impu`] matches
/// has the same key (the index may give more candidates, never fewer).
fn impu_key(uri: &[u8]) -> Box<[u8]> {
    let u = uri.trim_ascii();
    let u = u.strip_prefix(b"<").unwrap_or(u);
    let u = u.strip_suffix(b">").unwrap_or(u);
    let from = u.iter().position(|&c| c == b'@').map_or(0, |at| at + 1);
    let end = from
        + u[from..]
            .iter()
            .position(|&c| c == b';' || c == b'?')
            .unwrap_or(u.len() - from);
    u[..end].to_ascii_lowercase().into_boxed_slice()
}

/// What became of an operator's de-registration ([`Registrar::deregister`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Deregistration {
    /// Ended here, and the S-CSCF told.
    Told,
    /// Ended here; the S-CSCF could not be told (the UE's IMPI or contact would not fit our
    /// REGISTER): its registration there ends at its expiry.
    NotTold,
    /// No registration has that identity.
    NotFound,
    /// The IMPU is registered by several IMPIs: name one of them.
    Ambiguous(Vec<Vec<u8>>),
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("bindings", &self.bindings.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// Room an edit frame keeps before and after the message for the rewrites to grow into.
const FRAME_HEAD: usize = 512;
const FRAME_TAIL: usize = 1024;

/// A frame with room for the rewrites (the slow path may allocate).
fn framed(payload: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut f = vec![0u8; FRAME_HEAD + payload.len() + FRAME_TAIL];
    f[FRAME_HEAD..FRAME_HEAD + payload.len()].copy_from_slice(payload);
    (f, FRAME_HEAD, FRAME_HEAD + payload.len())
}

/// The bytes of an edit frame a message of `len` bytes may use: it is copied at
/// [`FRAME_HEAD`] and its edits stay inside this span, so no byte of it lands beyond.
fn frame_span(len: usize) -> usize {
    FRAME_HEAD + len + FRAME_TAIL
}

/// [`framed`] into the registrar's reusable frame (grown if the message needs more), for a
/// message already indexed: the span of the frame the message may use ([`frame_span`]: an
/// editor over it can grow the message as far as [`framed`]'s frame allows, not further) and
/// its index moved along with the bytes, with no second parse, no allocation and no zeroing
/// per message. What an earlier message left around the copy is never read (an editor reads
/// only its message); the caller wipes what must not stay.
fn framed_into<'f>(frame: &'f mut Vec<u8>, m: &Message<'_>) -> Option<(&'f mut [u8], Index)> {
    let span = frame_span(m.buf.len());
    if frame.len() < span {
        frame.resize(span, 0);
    }
    let span = frame.get_mut(..span)?;
    span.get_mut(FRAME_HEAD..FRAME_HEAD + m.buf.len())?
        .copy_from_slice(m.buf);
    Some((span, m.idx.moved_by(FRAME_HEAD)?))
}

/// The reusable frame's first size: a punted message of the largest size fits.
const FRAME_BYTES: usize = FRAME_HEAD + crate::dataplane::MSG_MAX + FRAME_TAIL;

impl Registrar {
    pub fn new(cfg: RegistrarConfig, sas: SaWriter) -> Registrar {
        let sas_view = sas.reader();
        let resolver = super::dns::Resolver::new(cfg.dns);
        let (burst, rate) = cfg.source_limit;
        let own = {
            let mut addrs = cfg.ue_addrs.clone();
            addrs.push(cfg.core.ip());
            crate::sip::OwnUris::new(
                &cfg.own_hosts,
                &addrs,
                &[cfg.ue_sip_port, cfg.core.port()],
                Some(cfg.protected_ports.clone()),
            )
        };
        let regevent = super::regevent::RegEvent::new(super::regevent::RegEventConfig {
            core: cfg.core,
            via_sent_by: cfg.via_sent_by.clone(),
            from_uri: match cfg.own_hosts.first() {
                Some(h) => format!("sip:{h}"),
                None => format!("sip:{}", cfg.via_sent_by),
            },
            path_uri: cfg.path_uri.clone(),
            orig_ioi: cfg.orig_ioi.clone(),
        });
        Registrar {
            rewrite_scratch: vec![0; rules::REWRITE_SCRATCH].into_boxed_slice(),
            frame: vec![0; FRAME_BYTES],
            persist: None,
            impu_index: HashMap::new(),
            own,
            cfg,
            sas,
            bindings: IdMap::default(),
            by_impi: HashMap::new(),
            sas_view,
            pending: IdMap::default(),
            by_txn: HashMap::new(),
            completed: HashMap::new(),
            completed_order: VecDeque::new(),
            completed_seq: 0,
            timers: BinaryHeap::new(),
            timer_stats: TimerStats::default(),
            transmits: VecDeque::new(),
            next_id: 1,
            next_port: 0,
            branch_seq: 0,
            branch_key: {
                use std::hash::BuildHasher;
                std::collections::hash_map::RandomState::new().hash_one(0x5ca1ab1e_u64)
            },
            keylog: None,
            resolver,
            parked: HashMap::new(),
            resuming: false,
            pending_plain: 0,
            set_counts: SetCounts::default(),
            source_limit: super::ratelimit::RateLimiter::new(burst, rate, RATE_KEYS),
            impi_limit: super::ratelimit::RateLimiter::new(IMPI_BURST, IMPI_PER_SECOND, RATE_KEYS),
            dialogs: super::dialogs::Dialogs::new(),
            regevent,
            stats: RegistrarStats::default(),
        }
    }

    /// Whether a REGISTER's Request-URI host is a home domain we serve: a name (never an IP
    /// literal), in `home_domains` when that list is set (case-insensitive, RFC 3261 §19.1.4).
    fn serves(&self, host: &[u8]) -> bool {
        let Ok(h) = std::str::from_utf8(host) else {
            return false;
        };
        if h.is_empty()
            || h.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok()
        {
            return false;
        }
        self.cfg.home_domains.is_empty()
            || self
                .cfg
                .home_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(h))
    }

    /// The I-CSCF for `home`: its own (`icscf_by_domain`), the static one, else RFC 3263 resolution from the cache, or
    /// `Pending` while the resolver asks (it never blocks this thread).
    /// Start resolving the I-CSCF of every home domain served, so that the first REGISTERs
    /// find it in the cache rather than wait for DNS: at thousands of REGISTERs per second,
    /// [`MAX_PARKED_PER_DOMAIN`] of them wait for a resolution and the rest get a 503. A
    /// domain with a configured I-CSCF needs nothing.
    /// What a reload (SIGHUP) may change while traffic flows: the home domains served and
    /// their I-CSCFs (a domain added is resolved at once; REGISTERs for a domain taken away are
    /// refused from now on, registrations made stay), and the per-source REGISTER limits.
    pub fn reload(
        &mut self,
        home_domains: Vec<String>,
        icscf_by_domain: Vec<(String, SocketAddr)>,
        source_limit: (u32, f64),
        now: Instant,
    ) {
        self.cfg.home_domains = home_domains;
        self.cfg.icscf_by_domain = icscf_by_domain;
        self.cfg.source_limit = source_limit;
        self.source_limit.set_limits(source_limit.0, source_limit.1);
        self.warm_up(now);
    }

    pub fn warm_up(&mut self, now: Instant) {
        for d in self.cfg.home_domains.clone() {
            let _ = self.next_hop(&d, now);
        }
    }

    fn next_hop(&mut self, home: &str, now: Instant) -> super::dns::Lookup {
        if let Some((_, a)) = self
            .cfg
            .icscf_by_domain
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(home))
        {
            return super::dns::Lookup::Ready(self.configured(*a));
        }
        match self.cfg.icscf {
            Some(a) => super::dns::Lookup::Ready(self.configured(a)),
            None => self.resolver.lookup(home, now),
        }
    }

    /// A configured I-CSCF at `addr`, with the configured transport (`core.icscf_transport`).
    fn configured(&self, addr: SocketAddr) -> super::dns::Target {
        super::dns::Target {
            addr,
            transport: crate::sip::Transport::tcp_if(self.cfg.icscf_tcp),
        }
    }

    /// Where a registered UE's requests go, and whether over TCP: the first Service-Route hop
    /// (an address as is, a name from the DNS cache when a server is configured: RFC 3263 §4.1,
    /// its NAPTR choosing the transport when the URI names no port), else `fallback`. The 200 is not
    /// held for DNS: a name not cached yet starts its resolution and the UE's requests go to
    /// `fallback` (the I-CSCF that routed the REGISTER, which can route them on) until its
    /// next re-registration finds the name cached.
    fn route_next_hop(
        &mut self,
        routes: &[Vec<u8>],
        fallback: (SocketAddr, bool),
        now: Instant,
    ) -> (SocketAddr, bool) {
        let Some(r) = routes.first() else {
            return fallback;
        };
        let hp = crate::sip::headers::uri_hostport(r);
        let Some((host, port)) = crate::sip::headers::split_host_port(hp) else {
            return fallback;
        };
        // RFC 3263 §4.1: a transport parameter decides; else, for a name without a port, the
        // NAPTR records the resolver read
        let wants_tcp = rules::uri_wants_tcp(r);
        let host = String::from_utf8_lossy(host).into_owned();
        if host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok()
            || self.cfg.dns.is_none()
        {
            return match fallback_or_ip(&host, port) {
                Some(a) => (a, wants_tcp),
                None => fallback,
            };
        }
        match self.resolver.lookup(&host, now) {
            super::dns::Lookup::Ready(t) => (
                SocketAddr::new(t.addr.ip(), port.unwrap_or(t.addr.port())),
                wants_tcp || (port.is_none() && t.transport == crate::sip::Transport::Tcp),
            ),
            _ => fallback,
        }
    }

    /// The next message for a worker to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.transmits.pop_front()
    }

    /// The next DNS query to send, and to which server (the control loop owns the socket).
    pub fn poll_dns_query(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.resolver.poll_transmit()
    }

    pub fn dns_stats(&self) -> super::dns::DnsStats {
        self.resolver.stats
    }

    /// A datagram on the DNS socket; REGISTERs whose domain it resolved go on.
    pub fn handle_dns(&mut self, from: SocketAddr, msg: &[u8], now: Instant) {
        self.resolver.handle_datagram(from, msg, now);
        self.resume_parked(now);
    }

    /// Run again the REGISTERs of every domain whose resolution ended: the answer (or the
    /// failure) is in the cache now, so they are forwarded or get 503 without waiting again.
    fn resume_parked(&mut self, now: Instant) {
        while let Some((domain, _)) = self.resolver.poll_done() {
            for p in self.parked.remove(&domain).unwrap_or_default() {
                self.resuming = true;
                self.handle_message(p.msg.borrowed(), now);
                self.resuming = false;
            }
        }
    }

    /// Hold `m` until its home domain resolves; false if that domain has no room left.
    fn park(&mut self, home: &str, m: &Message<'_>, how: Datagram<()>, txn: Txn) -> bool {
        let key = home.trim_end_matches('.').to_ascii_lowercase();
        let list = self.parked.entry(key).or_default();
        if list.len() >= MAX_PARKED_PER_DOMAIN {
            return false;
        }
        self.stats.parked += 1;
        list.push(Parked {
            msg: how.with_payload(m.buf.to_vec()),
            txn,
        });
        true
    }

    /// Report every SA installed from now on to `log` (`--keylog`: [`super::keylog::FileKeyLog`]).
    pub fn set_keylog(&mut self, log: Arc<dyn KeyLog>) {
        self.keylog = Some(log);
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    /// The SA table's counters (for the operator's report and the tests' leak checks).
    pub fn sa_table_stats(&self) -> crate::satable::SaTableStats {
        self.sas.stats()
    }

    /// Registered UEs: bindings with a current SA set (O(1): [`Registrar::set_counts`]).
    pub fn registrations(&self) -> usize {
        self.set_counts.current as usize
    }

    /// The SA sets the bindings hold, by role (kept as they change: O(1)).
    pub fn set_counts(&self) -> SetCounts {
        self.set_counts
    }

    /// REGISTER transactions forwarded to the core and not answered yet.
    pub fn pending_registers(&self) -> usize {
        self.pending.len()
    }

    /// A message punted by a worker; what it makes the registrar send waits in
    /// [`Registrar::poll_transmit`].
    // out of line: perf/profile counts instructions inside it (callgrind --toggle-collect)
    #[inline(never)]
    pub fn handle_message(&mut self, msg: Incoming<'_>, now: Instant) {
        let Incoming {
            side,
            protection,
            src,
            dst,
            payload,
        } = msg;
        let Ok(m) = Message::parse_strict(payload) else {
            self.stats.malformed += 1;
            return;
        };
        // answers to what this thread sent itself (rules::ControlBranch): never relayed
        if let Some(code) = m.view().status()
            && let Some(ours) = rules::control_branch(m.view())
        {
            match (ours, side) {
                (rules::ControlBranch::Release, _) => {
                    // a BYE of a release, answered by either side: counted
                    let branch = m
                        .view()
                        .values(HeaderName::Via)
                        .next()
                        .and_then(crate::sip::headers::Via::parse)
                        .and_then(|v| v.branch())
                        .unwrap_or_default();
                    self.dialogs.on_release_answer(branch, code);
                }
                (rules::ControlBranch::Subscription, Side::Core) => {
                    self.regevent.handle_response(m.view(), src, now);
                }
                (rules::ControlBranch::Deregistration, Side::Core) => {
                    self.on_deregistration_answer(code, src);
                }
                _ => self.stats.unknown_transaction += 1,
            }
            return;
        }
        match (side, m.view().method()) {
            (Side::Ue, Some(b"REGISTER")) => self.on_register(&m, protection, src, dst, now),
            (Side::Core, None) => self.on_response(&m, src, now),
            // (a NOTIFY for someone else, too large for a worker, that core TCP handed us
            // because of its size: not ours to answer)
            (Side::Core, Some(b"NOTIFY"))
                if !m.view().request_uri().is_some_and(|u| self.own.is_us(u)) =>
            {
                self.stats.unknown_transaction += 1;
            }
            (Side::Core, Some(b"NOTIFY")) => {
                let came = Datagram {
                    side,
                    protection,
                    src,
                    dst,
                    payload: (),
                };
                self.on_notify(&m, came, now);
            }
            // Other requests need the registered-UE path of the workers (not yet here).
            _ => self.stats.unknown_transaction += 1,
        }
    }

    /// A dialog event from a worker (`dataplane::split_dialog_event`: the binding and the
    /// message as relayed; `from`: the side it came from) for the dialog book.
    pub fn handle_dialog_event(&mut self, from: Side, payload: &[u8], now: Instant) {
        let Some((binding, msg)) = crate::dataplane::split_dialog_event(payload) else {
            self.dialogs.stats.malformed += 1;
            return;
        };
        let next_hop = self
            .bindings
            .get(&binding)
            .and_then(|b| b.reg.as_ref())
            .map(|r| r.next_hop);
        self.dialogs
            .handle_event(from, binding, msg, next_hop, &self.own, now);
    }

    /// The dialog book's counters.
    pub fn dialog_stats(&self) -> super::dialogs::DialogStats {
        self.dialogs.stats
    }

    /// Confirmed dialogs the book holds (all bindings), and those of the UE behind one of our
    /// inbound SPIs.
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    pub fn dialogs_of(&self, spi: u32) -> usize {
        self.binding_of(spi)
            .map_or(0, |id| self.dialogs.of_binding(id))
    }

    /// The registration of `binding` ended: its calls are released (TS 24.229 §5.2.8.1.2
    /// [spec-m]), toward the core and, while the binding has a current SA set, toward the UE
    /// over it (`control::dialogs`).
    fn release_dialogs(&mut self, binding: u64, next_hop: Option<(SocketAddr, bool)>) {
        if !self.dialogs.has_calls(binding) {
            return;
        }
        let ue = self.bindings.get(&binding).and_then(|b| {
            let set = b.current.as_deref()?;
            let ours = self
                .cfg
                .ue_addrs
                .iter()
                .find(|a| a.is_ipv4() == set.ue.is_ipv4())?;
            Some(super::dialogs::UeLeg {
                from: SocketAddr::new(*ours, set.port_pc),
                to: SocketAddr::new(set.ue, set.port_us),
                spi: set.spi_pc,
            })
        });
        let legs = super::dialogs::Legs {
            core: self.cfg.core,
            via_sent_by: &self.cfg.via_sent_by,
            next_hop: next_hop.map(|(a, _)| a),
            core_tcp: next_hop.is_some_and(|(_, tcp)| tcp),
            ue,
        };
        let before = self.dialogs.stats.released;
        self.dialogs.release(binding, &legs, &mut self.transmits);
        crate::control::log::event(format_args!(
            "registration of {:?} ended: {} call(s) released",
            self.bindings
                .get(&binding)
                .map(|b| String::from_utf8_lossy(&b.impi).into_owned())
                .unwrap_or_default(),
            self.dialogs.stats.released - before
        ));
    }

    fn reply_to(&self, m: &Message<'_>, why: rules::Reject, to: Reply) -> Outgoing {
        let mut buf = vec![0u8; m.buf.len() + 1024];
        let n = rules::build_reject(m.view(), &why, b"pcscf", &self.cfg.prefs, &mut buf)
            .unwrap_or_default();
        buf.truncate(n);
        to.with_payload(buf)
    }

    /// Answer a REGISTER with an error. An unprotected REGISTER's source may be spoofed, so its
    /// answer is not sent when larger than the request: no amplification toward a victim (the
    /// 494's Security-Server list and the To tag can make it so; a real phone's REGISTER is
    /// larger than any of our error answers).
    fn answer(&mut self, m: &Message<'_>, why: rules::Reject, to: Reply) {
        let o = self.reply_to(m, why, to);
        if to.protection == Protection::Plain && o.payload.len() > m.buf.len() {
            self.stats.reflection_suppressed += 1;
            return;
        }
        self.transmits.push_back(o);
    }

    /// A REGISTER from a UE, through the stages of the flow (module doc, steps 1 and 3). Each
    /// stage that stops it has answered or counted it already:
    /// 1. [`Registrar::reply_route`]: where its answer goes (protected: over SA2 of its set);
    /// 2. `rules::check_register` and [`Registrar::check_impi`]: the checks of TS 24.229
    ///    §5.2.2, and the IMPI its SA set was created for;
    /// 3. [`Registrar::absorb_retransmission`]: a retransmission gets what the first got;
    /// 4. [`Registrar::admit`]: the rate limits and the transaction budget;
    /// 5. [`Registrar::home_next_hop`]: a home domain we serve, and its I-CSCF (or parked
    ///    until DNS answers);
    /// 6. [`Registrar::verify_protected`]: Security-Verify and Security-Client;
    /// 7. [`Registrar::forward_register`]: its binding, our rewrite, the transaction, out to
    ///    the I-CSCF.
    fn on_register(
        &mut self,
        m: &Message<'_>,
        protection: Protection,
        src: SocketAddr,
        dst: SocketAddr,
        now: Instant,
    ) {
        if !self.resuming {
            self.stats.registers_in += 1;
        }
        let Some((binding, reply)) = self.reply_route(protection, src, dst) else {
            return;
        };
        let info = match rules::check_register(m.view(), &self.cfg.prefs) {
            Ok(i) => i,
            Err(r) => {
                self.stats.rejected += 1;
                self.answer(m, r, reply);
                return;
            }
        };
        let r = Register {
            m,
            protection,
            src,
            dst,
            reply,
            binding,
            txn: (info.call_id.to_vec(), info.cseq),
            now,
        };
        if !self.check_impi(&r, info.impi)
            || self.absorb_retransmission(&r.txn)
            || !self.admit(&r, info.impi)
        {
            return;
        }
        let Some(next) = self.home_next_hop(&r, info.home_domain) else {
            return;
        };
        let Some(client) = self.verify_protected(&r) else {
            return;
        };
        self.forward_register(&r, &info, client, next);
    }

    /// Stage 1: the binding a protected REGISTER's SA set belongs to, and where the answer
    /// goes: unprotected back from 5060; protected over SA2 (our port-c → the UE's port-s),
    /// TS 33.203 §7.1. `None`: an SA we do not know (counted).
    fn reply_route(
        &mut self,
        protection: Protection,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<(Option<u64>, Reply)> {
        let reply = |src, dst, protection| Datagram {
            side: Side::Ue,
            protection,
            src,
            dst,
            payload: (),
        };
        let Some(spi) = protection.spi() else {
            return Some((None, reply(dst, src, Protection::Plain)));
        };
        let Some(id) = self.binding_of(spi) else {
            self.stats.unknown_transaction += 1;
            return None;
        };
        let Some(set) = self.bindings.get(&id).and_then(|b| b.set_of(spi)) else {
            self.stats.unknown_transaction += 1;
            return None;
        };
        let (from, to) = match protection {
            // RFC 3261 §18.2.2: back on the connection the request came on: ours when it came
            // over SA4 (our port-c → the UE's port-s, SA2), else the UE's (SA3: our port-s →
            // the UE's port-c)
            Protection::Stream { spi, .. } if spi == set.spi_pc => (
                SocketAddr::new(dst.ip(), set.port_pc),
                SocketAddr::new(set.ue, set.port_us),
            ),
            Protection::Stream { .. } => (
                SocketAddr::new(dst.ip(), set.port_ps),
                SocketAddr::new(set.ue, set.port_uc),
            ),
            _ => (
                SocketAddr::new(dst.ip(), set.port_pc),
                SocketAddr::new(set.ue, set.port_us),
            ),
        };
        Some((Some(id), reply(from, to, protection)))
    }

    /// Stage 2: TS 33.203 §7.1 / TS 24.229 §5.2.2: an SA set is bound to the IMPI it was
    /// created for. A protected REGISTER naming another IMPI would have the core trust this
    /// UE's SA for someone else's identity (e.g. de-register them): 403, nothing forwarded.
    fn check_impi(&mut self, r: &Register<'_, '_>, impi: &[u8]) -> bool {
        let Some(id) = r.binding else {
            return true;
        };
        if self.by_impi.get(impi) == Some(&id) {
            return true;
        }
        self.stats.impi_mismatch += 1;
        crate::control::log::event(format_args!(
            "protected REGISTER from {} names IMPI {:?}, not the one its SAs belong to: 403",
            r.src,
            String::from_utf8_lossy(impi)
        ));
        let why = rules::Reject {
            code: 403,
            reason: "Forbidden",
            why: rules::RejectWhy::ImpiMismatch,
        };
        self.answer(r.m, why, r.reply);
        false
    }

    /// Stage 3: a retransmission (RFC 3261 §17.2.3: same Call-ID and CSeq) of a completed
    /// REGISTER gets its answer again; of one in progress, the same forward again; of one
    /// waiting for DNS, nothing (it goes on when the answer comes). True when it was one.
    fn absorb_retransmission(&mut self, txn: &Txn) -> bool {
        if let Some((o, _)) = self.completed.get(txn) {
            self.stats.retransmissions += 1;
            self.transmits.push_back(o.clone());
            return true;
        }
        if let Some(p) = self.by_txn.get(txn).and_then(|b| self.pending.get(b)) {
            self.stats.retransmissions += 1;
            if p.over_tcp {
                return true;
            }
            let o = Outgoing {
                side: Side::Core,
                protection: Protection::Plain,
                src: self.cfg.core,
                dst: p.next,
                payload: p.forwarded.clone(),
            };
            self.transmits.push_back(o);
            return true;
        }
        if self.parked.values().flatten().any(|p| &p.txn == txn) {
            self.stats.retransmissions += 1;
            return true;
        }
        false
    }

    /// Stage 4: unprotected REGISTERs come from anyone: per source and per IMPI rate limits.
    /// Over them the request is dropped, not answered: the source of a UDP request is not
    /// verified, so a 503 would make us a reflector, and a UE whose request is lost simply
    /// retransmits (RFC 3261 §17.1.2.2); it is what Kamailio's pike module setups do. Then the
    /// transaction budget of its class (see `pending_plain`): 503 past it (RFC 3261 §21.5.4).
    fn admit(&mut self, r: &Register<'_, '_>, impi: &[u8]) -> bool {
        if r.protection == Protection::Plain && !self.resuming {
            if !self.source_limit.allow(&r.src.ip(), r.now) {
                self.stats.rate_limited_source += 1;
                return false;
            }
            if !self.impi_limit.allow(impi, r.now) {
                self.stats.rate_limited_impi += 1;
                return false;
            }
        }
        let in_class = if r.protection == Protection::Plain {
            self.pending_plain
        } else {
            self.pending.len() - self.pending_plain.min(self.pending.len())
        };
        if in_class >= self.cfg.max_pending {
            self.stats.overloaded += 1;
            let why = rules::Reject {
                code: 503,
                reason: "Service Unavailable",
                why: rules::RejectWhy::Overloaded,
            };
            self.answer(r.m, why, r.reply);
            return false;
        }
        true
    }

    /// Stage 5: the I-CSCF of the REGISTER's home network (TS 24.229 §5.2.2.2, e.g. by DNS,
    /// RFC 3263). `None`: refused (answered), or parked until the resolver has the answer.
    ///
    /// TS 24.229 §5.1.1.2.1: the Request-URI of a REGISTER names the home network's domain.
    /// The UE does not choose which network authenticates it: an IP address, or a domain we
    /// do not serve, is refused (else any host it names would be "home" and could hand out
    /// keys and identities through us). RFC 3261 §16.4: a Request-URI that is us (our
    /// address, say, once the UE's Route naming us is popped) addresses the REGISTER to us,
    /// and we are no registrar and no home domain: the same 403, nothing forwarded.
    fn home_next_hop(&mut self, r: &Register<'_, '_>, home: &[u8]) -> Option<super::dns::Target> {
        let to_us = r.m.view().request_uri().is_some_and(|u| self.own.is_us(u));
        if to_us || !self.serves(home) {
            self.stats.unknown_home_domain += 1;
            crate::control::log::event(format_args!(
                "REGISTER from {} for {:?}: not a home domain we serve: 403",
                r.src,
                String::from_utf8_lossy(home)
            ));
            let why = rules::Reject {
                code: 403,
                reason: "Forbidden",
                why: rules::RejectWhy::UnknownHomeDomain,
            };
            self.answer(r.m, why, r.reply);
            return None;
        }
        let home = String::from_utf8_lossy(home).into_owned();
        match self.next_hop(&home, r.now) {
            super::dns::Lookup::Ready(t) => Some(t),
            super::dns::Lookup::Pending
                if self.park(
                    &home,
                    r.m,
                    Datagram {
                        side: Side::Ue,
                        protection: r.protection,
                        src: r.src,
                        dst: r.dst,
                        payload: (),
                    },
                    r.txn.clone(),
                ) =>
            {
                None
            }
            lookup => {
                self.stats.no_next_hop += 1;
                crate::control::log::event(format_args!(
                    "REGISTER for {home}: no I-CSCF ({lookup:?}: no address, or too many waiting)"
                ));
                let why = rules::Reject {
                    code: 503,
                    reason: "Service Unavailable",
                    why: rules::RejectWhy::NoNextHop,
                };
                self.answer(r.m, why, r.reply);
                None
            }
        }
    }

    /// Stage 6: the UE's Security-Client (kept for the protected REGISTER of a challenge).
    /// TS 33.203 §7.2 / RFC 3329 §2.3.1: a protected REGISTER repeats our Security-Server in
    /// Security-Verify; over the temporary set (completing a challenge) its Security-Client
    /// must be the first REGISTER's; over the current set (a re-registration) it carries the
    /// UE's new SPIs and ports, and only Security-Verify is checked (TS 33.203 §7.4). `None`:
    /// refused (494 answered, or an SA set gone meanwhile, counted).
    fn verify_protected(&mut self, r: &Register<'_, '_>) -> Option<Vec<u8>> {
        let mut client = vec![0u8; r.m.buf.len()]; // (the values cannot outgrow the message)
        let n = rules::copy_security_client(r.m.view(), &mut client).unwrap_or(0);
        client.truncate(n);
        let (Some(id), Some(spi)) = (r.binding, r.protection.spi()) else {
            return Some(client);
        };
        let b = self.bindings.get(&id);
        let on_temporary = b.is_some_and(|b| b.is_temporary(spi));
        let Some(set) = b.and_then(|b| b.set_of(spi)) else {
            self.stats.unknown_transaction += 1;
            return None;
        };
        let expected: &[u8] = if on_temporary { &set.client } else { &client };
        let mut sbuf = [0u8; 256];
        if let Err(why) =
            rules::check_protected_register(r.m.view(), set.server(&mut sbuf), expected)
        {
            self.stats.verify_mismatch += 1;
            self.answer(r.m, why, r.reply);
            return None;
        }
        Some(client)
    }

    /// The REGISTER rewritten for the core in `frame` (TS 24.229 §5.2.2): its bytes, and
    /// whether it goes over TCP. `None` if it cannot be (malformed, or no room).
    fn rewrite_for_core(
        &mut self,
        frame: &mut Vec<u8>,
        m: &Message<'_>,
        fw: &Forward,
        target: super::dns::Target,
    ) -> Option<(Vec<u8>, bool)> {
        let (span, idx) = framed_into(frame, m)?;
        let mut ed = Editor::from_index(span, idx);
        let me = ProxyIdentity {
            via_sent_by: self.cfg.via_sent_by.as_bytes(),
            via_transport: b"UDP",
            path_uri: self.cfg.path_uri.as_bytes(),
            own: &self.own,
            visited_network_id: self.cfg.visited_network_id.as_bytes(),
            orig_ioi: self.cfg.orig_ioi.as_bytes(),
        };
        rules::rewrite_register(&mut ed, &me, fw, &mut self.rewrite_scratch).ok()?;
        // over TCP when the I-CSCF takes it so (configured, or its NAPTR records: RFC 3263
        // §4.1) or when it is too large for a datagram (RFC 3261 §18.1.1), our Via saying so
        let over_tcp = target.transport == crate::sip::Transport::Tcp
            || ed.as_bytes().len() > self.cfg.core_max_udp_request;
        if over_tcp {
            rules::set_top_via_transport(&mut ed, b"TCP").ok()?;
        }
        Some((ed.as_bytes().to_vec(), over_tcp))
    }

    /// Stage 7: the binding (the one its SA set belongs to, else the IMPI's, else a new one),
    /// the REGISTER rewritten for the core (TS 24.229 §5.2.2: Path, Via, P-Charging-Vector,
    /// integrity-protected), the transaction kept under our branch, and the forward.
    fn forward_register(
        &mut self,
        r: &Register<'_, '_>,
        info: &rules::RegisterInfo<'_>,
        client: Vec<u8>,
        target: super::dns::Target,
    ) {
        let next = target.addr;
        let id = match r.binding {
            Some(id) => id,
            None => self.binding_for(info.impi, r.now),
        };
        let branch = self.next_branch();
        let fw = Forward {
            source: r.src,
            protected: r.binding.is_some(),
            branch,
            icid: branch.rotate_left(17),
        };
        let mut frame = std::mem::take(&mut self.frame);
        let payload = self.rewrite_for_core(&mut frame, r.m, &fw, target);
        self.frame = frame;
        let Some((payload, over_tcp)) = payload else {
            self.stats.malformed += 1;
            return;
        };
        self.by_txn.insert(r.txn.clone(), branch);
        if r.protection == Protection::Plain {
            self.pending_plain += 1;
        }
        if let Some(b) = self.bindings.get_mut(&id) {
            b.in_flight += 1;
        }
        self.pending.insert(
            branch,
            Pending {
                binding: id,
                impi: info.impi.into(),
                txn: r.txn.clone(),
                reply: r.reply,
                client,
                offer: info.offer,
                ue: r.src,
                contact: info.contact_uri.map(<[u8]>::to_vec),
                created: r.now,
                forwarded: payload.clone(),
                next,
                over_tcp,
            },
        );
        self.arm(r.now + TRANSACTION_LIFE, Timer::Pending(branch));
        self.stats.forwarded += 1;
        self.transmits.push_back(Outgoing {
            side: Side::Core,
            protection: Protection::toward_core(over_tcp),
            src: self.cfg.core,
            dst: next,
            payload,
        });
    }

    /// The binding of `impi`, made when it has none. A new one is looked at again once due
    /// timers run ([`Timer::Binding`]): it goes if nothing came to hold it.
    fn binding_for(&mut self, impi: &[u8], now: Instant) -> u64 {
        if let Some(&id) = self.by_impi.get(impi)
            && self.bindings.contains_key(&id)
        {
            return id;
        }
        let id = self.next_id;
        self.next_id += 1;
        let impi: Arc<[u8]> = impi.into();
        self.by_impi.insert(impi.clone(), id);
        self.bindings.insert(id, Binding::new(impi));
        self.arm(now, Timer::Binding(id));
        if let Some(p) = &mut self.persist {
            p.sweep.push_back(id);
        }
        id
    }

    /// A final response from the core; the answer sent to the UE is kept for 32 s (RFC 3261
    /// §17.2.1, Timer J) so a retransmitted REGISTER gets it again instead of a new transaction.
    fn on_response(&mut self, m: &Message<'_>, from: SocketAddr, now: Instant) {
        let before = self.transmits.len();
        let txn = {
            let v = m.view();
            v.header(HeaderName::CallId)
                .zip(
                    v.header(HeaderName::CSeq)
                        .and_then(crate::sip::headers::cseq),
                )
                .map(|(call_id, (cseq, _))| (call_id.to_vec(), cseq))
        };
        self.on_final_response(m, from, now);
        if let Some(txn) = txn
            && let Some(o) = self.transmits.range(before..).find(|o| o.side == Side::Ue)
        {
            let o = o.clone();
            self.remember_answer(txn, o, now);
        }
    }

    /// Keep the answer of a completed transaction for its retransmissions; past `max_pending`
    /// answers the oldest goes (its retransmission then starts a new transaction, which the
    /// core absorbs).
    fn remember_answer(&mut self, txn: Txn, o: Outgoing, now: Instant) {
        while self.completed.len() >= self.cfg.max_pending.max(1) {
            let Some((k, seq, _)) = self.completed_order.pop_front() else {
                break;
            };
            if self.completed.get(&k).is_some_and(|(_, s)| *s == seq) {
                self.completed.remove(&k);
                self.stats.completed_evicted += 1;
            }
        }
        self.completed_seq += 1;
        self.completed.insert(txn.clone(), (o, self.completed_seq));
        self.completed_order
            .push_back((txn, self.completed_seq, now + TRANSACTION_LIFE));
    }

    /// A final response to one of our REGISTER transactions (module doc, steps 2 and 4), in
    /// stages:
    /// 1. [`Registrar::take_transaction`]: the transaction it answers, from the hop we sent
    ///    it to;
    /// 2. by status: a 401 makes the temporary SA set ([`Registrar::on_401`]), a 200 changes
    ///    the registration and answers the UE itself ([`Registrar::on_200`]), another final
    ///    response ends a failed challenge's set ([`Registrar::on_failure`]);
    /// 3. the response, our Via popped, to the UE the way its REGISTER came.
    fn on_final_response(&mut self, m: &Message<'_>, from: SocketAddr, now: Instant) {
        let Some((p, status)) = self.take_transaction(m.view(), from, now) else {
            return;
        };
        let mut frame = std::mem::take(&mut self.frame);
        self.final_response_in(&mut frame, m, p, status, now);
        // A 401 carries CK and IK in hex (TS 24.229 §5.2.2.2: the P-CSCF keeps them): none of
        // it stays in the frame once the answer is out, wherever the editor shifted it inside
        // the message's span (it writes nowhere else).
        if status == 401 {
            let span = frame_span(m.buf.len()).min(frame.len());
            zeroize::Zeroize::zeroize(&mut frame[..span]);
        }
        self.frame = frame;
    }

    /// Test hook: whether the registrar's reusable frame holds `needle` (key hygiene: a 401's
    /// ck/ik hex must not stay there).
    #[doc(hidden)]
    pub fn frame_holds(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.frame.windows(needle.len()).any(|w| w == needle)
    }

    /// [`Registrar::on_final_response`] once its transaction is found, editing in `frame`.
    fn final_response_in(
        &mut self,
        frame: &mut Vec<u8>,
        m: &Message<'_>,
        p: Pending,
        status: u16,
        now: Instant,
    ) {
        let Some((span, idx)) = framed_into(frame, m) else {
            self.stats.malformed += 1;
            return;
        };
        let mut ed = Editor::from_index(span, idx);
        // RFC 3261 §16.7 step 3: with no Via left once ours goes, the response was meant for
        // us and MUST NOT be forwarded. The transaction is over: nothing is installed, and the
        // UE's retransmission starts a new one.
        if rules::via_count(ed.view()) < 2 {
            self.stats.meant_for_us += 1;
            return;
        }
        // The SA set the REGISTER arrived on, if it came protected.
        let came_on = p.reply.protection.spi();
        match status {
            401 => match self.on_401(&mut ed, &p, now) {
                Challenge::Relay => {}
                Challenge::Drop => return,
                Challenge::Unavailable => {
                    // The UE would otherwise wait out its transaction timer and retry blind: a
                    // 503 with Retry-After says when (RFC 3261 §21.5.4), and no key leaves us.
                    if let Some(o) = self.unavailable(m, &p) {
                        self.transmits.push_back(o);
                    }
                    return;
                }
            },
            200 => {
                self.on_200(&mut ed, &p, came_on, now);
                return;
            }
            _ => {
                if !self.on_failure(&mut ed, &p, status, came_on, now) {
                    return;
                }
            }
        }
        self.transmits
            .push_back(p.reply.with_payload(ed.as_bytes().to_vec()));
    }

    /// Stage 1 of a final response: the pending transaction its top Via branch names, taken
    /// out, with the status. Only the next hop we sent the REGISTER to may answer it (RFC 3261
    /// §18.1.2 matches responses to the transaction; we also bind it to where it went) — the
    /// address, not the port: a proxy may answer from another of its sockets. `None`: not
    /// ours, malformed or provisional (counted, except provisional: nothing to relay for
    /// REGISTER).
    fn take_transaction(
        &mut self,
        v: View<'_>,
        from: SocketAddr,
        now: Instant,
    ) -> Option<(Pending, u16)> {
        let branch = v
            .values(HeaderName::Via)
            .next()
            .and_then(Via::parse)
            .and_then(|via| via.branch())
            .and_then(|b| b.strip_prefix(b"z9hG4bK"))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        let status = v.status().unwrap_or(0);
        let Some(branch) = branch else {
            self.stats.unknown_transaction += 1;
            return None;
        };
        if status < 200 {
            return None;
        }
        match self.pending.get(&branch) {
            None => {
                self.stats.unknown_transaction += 1;
                return None;
            }
            Some(p) if p.next.ip() != from.ip() => {
                self.stats.foreign_response += 1;
                return None;
            }
            Some(_) => {}
        }
        let p = self.pending.remove(&branch)?;
        self.forget_pending(branch, &p);
        // the binding goes once this response is through if nothing holds it any more
        self.arm(now, Timer::Binding(p.binding));
        Some((p, status))
    }

    /// A transaction left `pending` (answered or timed out): its other indexes follow.
    fn forget_pending(&mut self, branch: u64, p: &Pending) {
        if p.reply.protection == Protection::Plain {
            self.pending_plain = self.pending_plain.saturating_sub(1);
        }
        if self.by_txn.get(&p.txn) == Some(&branch) {
            self.by_txn.remove(&p.txn);
        }
        if let Some(b) = self.bindings.get_mut(&p.binding) {
            b.in_flight = b.in_flight.saturating_sub(1);
        }
    }

    /// Another final response than 401 and 200: a 4xx to a REGISTER that came over a
    /// temporary set (e.g. 403 for a wrong RES) ends that set, right after this answer went
    /// out over it; a current set stays (a failed re-authentication does not end the
    /// registration). Our Via goes; false when the response is malformed (counted).
    fn on_failure(
        &mut self,
        ed: &mut Editor<'_>,
        p: &Pending,
        status: u16,
        came_on: Option<u32>,
        now: Instant,
    ) -> bool {
        if (400..500).contains(&status)
            && let Some(spi) = came_on
        {
            self.stats.auth_failed += 1;
            let ends = self.bindings.get_mut(&p.binding).and_then(|b| {
                let t = b
                    .temporary
                    .iter_mut()
                    .find(|t| t.spi_ps == spi || t.spi_pc == spi)?;
                t.expires = t.expires.min(now + LINGER);
                Some((t.expires, t.spi_pc))
            });
            if let Some((at, spi)) = ends {
                self.arm(
                    at,
                    Timer::Set {
                        binding: p.binding,
                        spi,
                    },
                );
                self.touch(p.binding);
            }
        }
        if rules::pop_top_via(ed).is_err() {
            self.stats.malformed += 1;
            return false;
        }
        true
    }

    /// A 401 for the UE: with IMS AKA keys, a new temporary SA set for this UE address (replacing
    /// the one it may have, never another address's) and Security-Server; without, only our Via
    /// goes. Every SPI reserved here is installed in the set or released again, whatever fails.
    fn on_401(&mut self, ed: &mut Editor<'_>, p: &Pending, now: Instant) -> Challenge {
        let ue = p.ue.ip();
        let has_keys = rules::has_aka_keys(ed.view());
        if !has_keys || !self.bindings.contains_key(&p.binding) {
            // plain Digest (no ck/ik), or the binding went meanwhile: no SAs, no Security-Server
            if rules::rewrite_401(ed, b"").is_err() {
                self.stats.malformed += 1;
                return Challenge::Drop;
            }
            return Challenge::Relay;
        }
        // A new challenge replaces this UE address's earlier temporary set (TS 33.203 §7.4),
        // whether the REGISTER came protected (a re-authentication) or not; other addresses'
        // challenges for the same IMPI stay.
        let replaced = self.bindings.get_mut(&p.binding).and_then(|b| {
            let i = b.temporary.iter().position(|t| t.ue == ue)?;
            Some(b.temporary.swap_remove(i))
        });
        if let Some(t) = replaced {
            self.set_counts.add(SetRole::Temporary, false);
            self.remove_set(&t, p.binding);
        }
        // At the cap the oldest challenge goes, not this one: unprotected REGISTERs naming
        // the IMPI can come from anyone and any (forged) address, so refusing new challenges
        // would let a few of them lock the subscriber out for REG_AWAIT_AUTH; evicting the
        // oldest only costs a challenge that waited longest (its UE registers again).
        let evicted = self.bindings.get_mut(&p.binding).and_then(|b| {
            if b.temporary.len() < MAX_TEMPORARY {
                return None;
            }
            let i = (0..b.temporary.len()).min_by_key(|&i| b.temporary[i].expires)?;
            Some(b.temporary.swap_remove(i))
        });
        if let Some(t) = evicted {
            self.set_counts.add(SetRole::Temporary, false);
            self.stats.temporary_evicted += 1;
            crate::control::log::event(format_args!(
                "REGISTER from {}: {MAX_TEMPORARY} challenges already in progress for IMPI {:?}; the oldest (UE {}) dropped",
                p.ue,
                String::from_utf8_lossy(&p.impi),
                t.ue
            ));
            self.remove_set(&t, p.binding);
        }
        // TS 33.203 §7.4 [spec-m]: a new set negotiated over an existing one keeps that set's
        // port-s (the UE's dialogs route to it: our Record-Route entry names it).
        let keep_ps = (p.reply.protection.spi())
            .and_then(|spi| self.sas_view.pin().inbound(spi).map(|e| e.port_s()));
        let Some((spi_pc, spi_ps, port_pc, port_ps)) = self.allocate(ue, &p.offer, keep_ps) else {
            self.stats.sa_install_failed += 1;
            crate::control::log::event(format_args!(
                "SA set for {}: no free SPIs or protected port pair: 503",
                p.ue
            ));
            return Challenge::Unavailable;
        };
        let mut set = SaSet {
            ue,
            spi_pc,
            spi_ps,
            port_pc,
            port_ps,
            port_uc: p.offer.port_c,
            port_us: p.offer.port_s,
            spi_uc: p.offer.spi_c,
            spi_us: p.offer.spi_s,
            alg: p.offer.alg,
            ealg: p.offer.ealg,
            client: p.client.clone().into_boxed_slice(),
            expires: now + REG_AWAIT_AUTH,
            keys: None,
            out_ceiling: [u32::MAX; 2],
            in_top: [0; 2],
        };
        // the Security-Server of the 401 is the one the protected REGISTER is checked against:
        // both come from SaSet::server
        let mut sbuf = [0u8; 256];
        let keys = match rules::rewrite_401(ed, set.server(&mut sbuf)) {
            Ok(Some(k)) => k,
            Ok(None) | Err(_) => {
                self.stats.malformed += 1;
                self.remove_set(&set, p.binding);
                return Challenge::Drop;
            }
        };
        if let Some(p) = &self.persist {
            set.keys = Some(SetKeys::new(&keys.ck, &keys.ik));
            set.out_ceiling = [p.opts.seq_step; 2];
        }
        if let Err(e) = self.install(&set, &keys.ck, &keys.ik, p.binding, None) {
            self.stats.sa_install_failed += 1;
            crate::control::log::event(format_args!("SA set for {}: {e}: 503", p.ue));
            self.remove_set(&set, p.binding);
            return Challenge::Unavailable;
        }
        let timer = Timer::Set {
            binding: p.binding,
            spi: set.spi_pc,
        };
        let at = set.expires;
        if let Some(b) = self.bindings.get_mut(&p.binding) {
            b.temporary.push(set);
            self.set_counts.add(SetRole::Temporary, true);
            self.arm(at, timer);
        }
        self.touch(p.binding);
        self.stats.challenges += 1;
        Challenge::Relay
    }

    /// 503 to the UE in place of a 401 we could not give SAs: built from the 401 (the UE's
    /// Via, From, To, Call-ID, CSeq; our Via popped), nothing else of it.
    fn unavailable(&self, m: &Message<'_>, p: &Pending) -> Option<Outgoing> {
        let (f, s, _) = framed(m.buf);
        let mut f = zeroize::Zeroizing::new(f);
        let mut ed = Editor::from_index(&mut f, m.idx.moved_by(s)?);
        rules::pop_top_via(&mut ed).ok()?;
        let mut buf = vec![0u8; m.buf.len() + 256];
        let n = rules::build_response(
            ed.view(),
            503,
            "Service Unavailable",
            b"pcscf",
            &[b"Retry-After: 30\r\n"],
            &mut buf,
        )?;
        buf.truncate(n);
        Some(p.reply.with_payload(buf))
    }

    /// A 200: only a REGISTER that came over one of the binding's SA sets changes the
    /// registration — the temporary set it came over becomes current, or the current one is
    /// refreshed. A 200 to an unprotected REGISTER (anyone may send one naming any IMPI) is
    /// relayed and changes nothing. Stages: our rewrite ([`rules::rewrite_200`]), the sets
    /// ([`Registrar::promote`]), what the workers are given
    /// ([`Registrar::publish_registration`]), the 200 to the UE.
    fn on_200(&mut self, ed: &mut Editor<'_>, p: &Pending, came_on: Option<u32>, now: Instant) {
        let reg = rules::rewrite_200(ed, p.contact.as_deref()).unwrap_or_default();
        let view = ed.view();
        let routes: Vec<Vec<u8>> = reg
            .service_route
            .as_slice()
            .iter()
            .map(|s| view.bytes(*s).to_vec())
            .collect();
        let impus: Vec<Vec<u8>> = reg
            .associated_uris
            .as_slice()
            .iter()
            .map(|s| view.bytes(*s).to_vec())
            .collect();
        let expires = reg.expires.unwrap_or(0);
        let registered = if let Some(spi) = came_on
            && self.promote(p.binding, spi, expires, now)
        {
            self.publish_registration(p, &routes, &impus, expires, now);
            true
        } else {
            false
        };
        // The 200 to a protected REGISTER goes over the new set: our port-c → the UE's port-s
        // (TS 33.203 §7.4); one that came on the UE's TCP connection goes back on it (RFC 3261
        // §18.2.2), which is in the new set too: the protected REGISTER came over that set.
        let on_stream = matches!(p.reply.protection, Protection::Stream { .. });
        let to = match self
            .bindings
            .get(&p.binding)
            .and_then(|b| b.current.as_ref())
        {
            Some(c) if came_on.is_some() && !on_stream => Datagram {
                side: Side::Ue,
                protection: Protection::Protected { spi: c.spi_pc },
                src: SocketAddr::new(p.reply.src.ip(), c.port_pc),
                dst: SocketAddr::new(c.ue, c.port_us),
                payload: (),
            },
            _ => p.reply,
        };
        self.transmits
            .push_back(to.with_payload(ed.as_bytes().to_vec()));
        // TS 24.229 §5.2.3: after the 200 to the registration, its reg event
        if registered {
            self.subscribe_reg_event(p.binding, expires, now);
        }
    }

    /// The sets of a 200 to a REGISTER that came over SA `spi` of `binding`: its temporary set
    /// becomes current (TS 33.203 §7.4) with lifetime max(old, expires + 30 s), the replaced
    /// set becomes "old" and goes at its own expiry (an older one retires: [`RETIRE`]); over the current
    /// set, its lifetime is renewed. Whether the registration changed.
    fn promote(&mut self, binding: u64, spi: u32, expires: u32, now: Instant) -> bool {
        let Some(b) = self.bindings.get_mut(&binding) else {
            return false;
        };
        let life = now + Duration::from_secs(expires as u64) + SA_GRACE;
        let before = SetCounts::of(b);
        let mut gone_now = None;
        let mut retiring = None;
        let current = if let Some(i) = b
            .temporary
            .iter()
            .position(|t| t.spi_ps == spi || t.spi_pc == spi)
        {
            let mut t = b.temporary.swap_remove(i);
            t.client = Box::default();
            t.expires = b.current.as_ref().map_or(life, |c| c.expires.max(life));
            if let Some(prev) = b.current.replace(Box::new(t))
                && let Some(mut older) = b.old.replace(prev)
            {
                // not deleted under the transactions still on it: it retires
                older.expires = older.expires.min(now + RETIRE);
                retiring = Some((older.expires, older.spi_pc));
                gone_now = b.retiring.replace(older);
            }
            b.current.as_deref()
        } else if let Some(c) = b.current.as_mut() {
            c.expires = life;
            Some(&**c)
        } else {
            None
        };
        let Some(c) = current else {
            return false;
        };
        let (at, timer) = (
            c.expires,
            Timer::Set {
                binding,
                spi: c.spi_pc,
            },
        );
        // (the set `gone_now` took from the binding is counted gone here)
        self.set_counts.moved(before, SetCounts::of(b));
        self.arm(at, timer);
        if let Some((at, spi)) = retiring {
            self.arm(at, Timer::Set { binding, spi });
        }
        if let Some(set) = gone_now {
            self.remove_set(&set, binding);
        }
        self.touch(binding);
        true
    }

    /// What the workers are given after a 200 that changed the registration: the asserted
    /// identity, the Service-Route as a Route value and the next hop, on the sets' inbound SAs
    /// (the current set's marked in use); a de-registration (expires 0) takes the identity off
    /// every set and ends them right after the 200 went out over the current one
    /// (TS 33.203 §7.4).
    fn publish_registration(
        &mut self,
        p: &Pending,
        routes: &[Vec<u8>],
        impus: &[Vec<u8>],
        expires: u32,
        now: Instant,
    ) {
        if expires > 0 && impus.is_empty() {
            // TS 24.229 §5.2.2.2: the asserted identity comes from P-Associated-URI; we do
            // not make one up from what the UE wrote
            self.stats.no_associated_uri += 1;
            crate::control::log::event(format_args!(
                "200 to REGISTER of {:?} has no P-Associated-URI: registered, but its requests are refused",
                String::from_utf8_lossy(&p.impi)
            ));
        }
        let fallback = self.route_next_hop(routes, (p.next, p.over_tcp), now);
        let reg = (expires > 0 && !impus.is_empty())
            .then(|| Arc::new(registration(impus, routes, fallback)));
        if expires == 0 {
            // calls released, identity off every set, sets ending, subscription removed
            // (RFC 6665 §4.1.2.3: it goes with the registration)
            self.end_registration(p.binding, now);
        }
        if let Some(b) = self.bindings.get_mut(&p.binding)
            && let Some(c) = &p.contact
        {
            b.contact = c.as_slice().into();
        }
        self.set_reg(p.binding, reg.clone());
        let sets: Vec<(u32, u32, bool)> = self
            .bindings
            .get(&p.binding)
            .map(|b| {
                b.current
                    .iter()
                    .map(|c| (c.spi_pc, c.spi_ps, true))
                    .chain(b.old.iter().map(|o| (o.spi_pc, o.spi_ps, false)))
                    .chain(b.temporary.iter().map(|t| (t.spi_pc, t.spi_ps, false)))
                    .collect()
            })
            .unwrap_or_default();
        // Requests toward the UE go over the set in use: its outbound SAs are marked so
        // (satable::ReadGuard::outbound_any), the previous set's as old.
        let marks: Vec<(IpAddr, (u16, u16), SetState)> = self
            .bindings
            .get(&p.binding)
            .map(|b| {
                let current = b.current.iter().map(|c| (c, SetState::New));
                current
                    .chain(b.old.iter().map(|o| (o, SetState::Old)))
                    .flat_map(|(set, state)| {
                        let keys = self.outbound_of(set, p.binding);
                        keys.into_iter().map(move |k| (set.ue, k, state))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (ue, (port, lport), state) in marks {
            let _ = self.sas.set_outbound_state(ue, port, lport, state);
        }
        for (spi_pc, spi_ps, current) in sets {
            for spi in [spi_pc, spi_ps] {
                if current {
                    let _ = self.sas.set_inbound_state(spi, SetState::New);
                    let _ = self.sas.set_inbound_registration(spi, reg.clone());
                }
            }
        }
        self.touch(p.binding);
        if expires == 0 {
            self.stats.deregistered += 1;
        } else {
            self.stats.registered += 1;
        }
    }

    /// The core's answer to a de-registration we sent on a UE's behalf
    /// ([`Registrar::deregister`]): counted, nothing to relay.
    fn on_deregistration_answer(&mut self, code: u16, from: SocketAddr) {
        if code < 200 {
            return;
        }
        if (200..300).contains(&code) {
            self.stats.pcscf_dereg_answered += 1;
        } else {
            self.stats.pcscf_dereg_refused += 1;
            crate::control::log::warn(format_args!(
                "the core answered {code} to a de-registration of ours (from {from})"
            ));
        }
    }

    /// A branch of ours, unique per transaction (RFC 3261 §8.1.1.7): a counter scrambled by a
    /// per-process key.
    fn next_branch(&mut self) -> u64 {
        self.branch_seq += 1;
        (self.branch_seq ^ self.branch_key).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// After a 200 that registered `binding`: its reg event subscription (TS 24.229 §5.2.3),
    /// unless it has one (a re-registration) or `core.reg_event` is off.
    fn subscribe_reg_event(&mut self, binding: u64, expires: u32, now: Instant) {
        if !self.cfg.reg_event || expires == 0 {
            return;
        }
        let Some(reg) = self.bindings.get(&binding).and_then(|b| b.reg.clone()) else {
            return;
        };
        let Some(impu) = reg.impus().next() else {
            return;
        };
        let target = super::regevent::Target {
            binding,
            impu: impu.to_vec(),
            route: reg.route().to_vec(),
            next_hop: reg.next_hop,
            tcp: reg.next_hop_tcp,
            expires,
        };
        self.regevent.subscribe(target, now, &mut self.transmits);
    }

    /// A NOTIFY from the core addressed to us: the subscriptions check and answer it; what an
    /// accepted document says of the registration is applied here.
    fn on_notify(&mut self, m: &Message<'_>, came: Datagram<()>, now: Instant) {
        let Some(n) = self
            .regevent
            .handle_notify(m, came, now, &mut self.transmits)
        else {
            return;
        };
        if let Some(doc) = &n.doc {
            self.apply_reginfo(n.binding, doc, now);
        }
        if let Some(again) = n.ended {
            let registered = self
                .bindings
                .get(&n.binding)
                .is_some_and(|b| b.reg.is_some());
            if registered && again {
                self.regevent
                    .resubscribe(n.binding, now, &mut self.transmits);
            } else {
                self.regevent
                    .end(n.binding, false, now, &mut self.transmits);
            }
        }
    }

    /// What a reg event document says of `binding`'s identities (TS 24.229 §5.2.5.1
    /// [spec-m], RFC 3680 §5): an IMPU whose `<registration>` is terminated, or whose contacts
    /// at this UE's address and port-s (the contact it registered) are all terminated
    /// (deactivated, expired, probation, unregistered, rejected), is no longer asserted for
    /// it, at once; once none is left the registration ends as a de-registration does
    /// ([`Registrar::network_deregister`]). Elements for identities the UE does not hold, and
    /// contacts of other UEs, change nothing.
    fn apply_reginfo(&mut self, binding: u64, doc: &crate::sip::reginfo::RegInfo, now: Instant) {
        use crate::sip::reginfo::RegState;
        let Some(b) = self.bindings.get(&binding) else {
            return;
        };
        let Some(reg) = b.reg.clone() else {
            return;
        };
        // this UE's contact as the S-CSCF holds it: the one it registered, and its address
        // with its port-s (where a phone's protected Contact points, TS 24.229 §5.1.1.2.2)
        let mut ours: Vec<(Vec<u8>, u16)> = Vec::with_capacity(2);
        if let Some((host, port)) =
            crate::sip::headers::split_host_port(crate::sip::headers::uri_hostport(&b.contact))
            && !host.is_empty()
        {
            ours.push((host.to_vec(), port.unwrap_or(5060)));
        }
        if let Some(c) = b.current.as_deref() {
            ours.push((c.ue.to_string().into_bytes(), c.port_us));
        }
        let mut impus: Vec<Vec<u8>> = reg.impus().map(<[u8]>::to_vec).collect();
        let mut lost: Vec<(Vec<u8>, String)> = Vec::new();
        for r in &doc.registrations {
            let why = if r.state == RegState::Terminated {
                Some(format!(
                    "registration terminated ({:?})",
                    r.contacts.first().map(|c| c.event)
                ))
            } else {
                // (none of ours listed: the element says nothing of this UE)
                let mine = ours
                    .iter()
                    .flat_map(|(host, port)| r.contacts_at(host, *port));
                let mut event = None;
                for c in mine {
                    if !c.is_terminated() {
                        event = None;
                        break;
                    }
                    event = Some(c.event);
                }
                event.map(|e| format!("contact terminated ({e:?})"))
            };
            let Some(why) = why else {
                continue;
            };
            impus.retain(|u| {
                let gone = crate::sip::headers::same_identity(u, &r.aor);
                if gone {
                    lost.push((u.clone(), why.clone()));
                }
                !gone
            });
        }
        if lost.is_empty() {
            return;
        }
        let impi = String::from_utf8_lossy(&b.impi).into_owned();
        for (u, why) in &lost {
            crate::control::log::event(format_args!(
                "reg event: {} of {impi}: {why}, no longer asserted",
                String::from_utf8_lossy(u)
            ));
        }
        self.regevent.stats.impus_terminated += lost.len() as u64;
        if impus.is_empty() {
            self.network_deregister(binding, now);
            return;
        }
        // the others stay: the first left is the default identity now (TS 24.229 §5.2.6.3)
        let pai = [&b"<"[..], &impus[0], b">"].concat();
        let refs: Vec<&[u8]> = impus.iter().map(|u| u.as_slice()).collect();
        let mut next = Registration::with_impus(&pai, reg.route(), &refs, reg.next_hop);
        next.next_hop_tcp = reg.next_hop_tcp;
        let next = Arc::new(next);
        let mut spis = Vec::new();
        self.set_reg(binding, Some(next.clone()));
        if let Some(b) = self.bindings.get_mut(&binding) {
            let sets = b.current.iter().chain(&b.old).chain(&b.retiring);
            spis.extend(sets.flat_map(|s| [s.spi_pc, s.spi_ps]));
        }
        for spi in spis {
            let _ = self.sas.set_inbound_registration(spi, Some(next.clone()));
        }
        self.touch(binding);
    }

    /// The network ended `binding`'s registration (a NOTIFY, TS 24.229 §5.2.5.1 [spec-m]): as
    /// when the UE de-registers, its calls are released, no identity is asserted for it from
    /// now on, and its SA sets go once the last messages over them (the S-CSCF's NOTIFY to the
    /// UE, the BYEs) had time to leave.
    fn network_deregister(&mut self, binding: u64, now: Instant) {
        let Some(b) = self.bindings.get(&binding) else {
            return;
        };
        crate::control::log::event(format_args!(
            "reg event: the network de-registered {}",
            String::from_utf8_lossy(&b.impi)
        ));
        self.regevent.stats.network_deregistrations += 1;
        self.end_registration(binding, now);
    }

    /// `binding`'s registration ends here (the UE's de-registration, the network's word, or
    /// ours): its calls are released, no identity is asserted for it from now on, its SA sets
    /// go after [`LINGER`] (time for the last answers over them) and its reg event
    /// subscription is removed.
    fn end_registration(&mut self, binding: u64, now: Instant) {
        let next_hop = self
            .bindings
            .get(&binding)
            .and_then(|b| b.reg.as_ref())
            .map(|r| (r.next_hop, r.next_hop_tcp));
        self.release_dialogs(binding, next_hop);
        let mut ending = Vec::new();
        self.set_reg(binding, None);
        if let Some(b) = self.bindings.get_mut(&binding) {
            let later = (b
                .current
                .iter_mut()
                .chain(&mut b.old)
                .chain(&mut b.retiring))
            .map(|s| &mut **s);
            for set in b.temporary.iter_mut().chain(later) {
                set.expires = set.expires.min(now + LINGER);
                ending.push((set.expires, set.spi_pc, set.spi_ps));
            }
        }
        for (at, spi, spi_ps) in ending {
            self.arm(at, Timer::Set { binding, spi });
            for spi in [spi, spi_ps] {
                let _ = self.sas.set_inbound_registration(spi, None);
            }
        }
        // a subscription still active is removed (Expires: 0; one the notifier ended is forgotten)
        self.regevent.end(binding, true, now, &mut self.transmits);
        self.touch(binding);
    }

    /// [`Registrar::deregister`] of one binding: false when it has no registration, or its
    /// IMPI or contact cannot go into our REGISTER (nothing ended then).
    fn deregister_binding(&mut self, binding: u64, now: Instant) -> bool {
        let Some(b) = self.bindings.get(&binding) else {
            return false;
        };
        let Some(reg) = b.reg.clone() else {
            return false;
        };
        let impi = b.impi.clone();
        let contact = b.contact.clone();
        // what the UE wrote goes into our header values: nothing that would end a quoted
        // string or an angle-bracketed URI early (the REGISTER's parse refused CR and LF)
        let unsafe_text = |t: &[u8]| {
            t.iter()
                .any(|&c| matches!(c, b'<' | b'>' | b'"' | b'\\') || c < 0x20)
        };
        if unsafe_text(&impi) || unsafe_text(&contact) {
            crate::control::log::event(format_args!(
                "not de-registering {:?}: its IMPI or contact would not fit our REGISTER",
                String::from_utf8_lossy(&impi)
            ));
            return false;
        }
        let impu = reg.impus().next().unwrap_or_default().to_vec();
        let realm = impi
            .iter()
            .position(|&c| c == b'@')
            .map_or(&impi[..], |i| &impi[i + 1..])
            .to_vec();
        let home = String::from_utf8_lossy(&realm).into_owned();
        let target = match self.next_hop(&home, now) {
            super::dns::Lookup::Ready(t) => t,
            _ => super::dns::Target {
                addr: reg.next_hop,
                transport: crate::sip::Transport::tcp_if(reg.next_hop_tcp),
            },
        };
        let id = self.next_branch();
        let tcp = target.transport == crate::sip::Transport::Tcp;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let msg = format!(
            "REGISTER sip:{home} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={}{id:016x}\r\n\
             Max-Forwards: 70\r\nFrom: <{impu}>;tag={id:016x}\r\nTo: <{impu}>\r\n\
             Call-ID: {id:016x}-dereg@{}\r\nCSeq: 1 REGISTER\r\nContact: <{}>;expires=0\r\n\
             Expires: 0\r\nAuthorization: Digest username=\"{}\",realm=\"{home}\",\
             uri=\"sip:{home}\",nonce=\"\",response=\"\",integrity-protected=\"yes\"\r\n\
             Path: <{}>\r\nRequire: path\r\nSupported: path\r\nP-Visited-Network-ID: {}\r\n\
             P-Charging-Vector: icid-value={:016x};orig-ioi={}\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(target.transport.as_via()),
            self.cfg.via_sent_by,
            String::from_utf8_lossy(rules::PCSCF_DEREG_BRANCH),
            self.cfg.core.ip(),
            text(&contact),
            text(&impi),
            self.cfg.path_uri,
            self.cfg.visited_network_id,
            id.rotate_left(17),
            self.cfg.orig_ioi,
            impu = text(&impu),
        );
        crate::control::log::event(format_args!(
            "de-registering {} (IMPI {}) on the P-CSCF's initiative; telling {}",
            text(&impu),
            text(&impi),
            target.addr
        ));
        self.stats.pcscf_deregistrations += 1;
        self.end_registration(binding, now);
        self.transmits.push_back(Outgoing {
            side: Side::Core,
            protection: Protection::toward_core(tcp),
            src: self.cfg.core,
            dst: target.addr,
            payload: msg.into_bytes(),
        });
        true
    }

    /// `binding`'s registration becomes `reg`, and the IMPU index follows.
    pub(super) fn set_reg(&mut self, binding: u64, reg: Option<Arc<Registration>>) {
        let Some(b) = self.bindings.get_mut(&binding) else {
            return;
        };
        let old = std::mem::replace(&mut b.reg, reg.clone());
        self.index_impus(binding, old.as_deref(), false);
        self.index_impus(binding, reg.as_deref(), true);
    }

    fn index_impus(&mut self, binding: u64, reg: Option<&Registration>, add: bool) {
        let Some(reg) = reg else { return };
        for u in reg.impus() {
            let key = impu_key(u);
            if add {
                let ids = self.impu_index.entry(key).or_default();
                if !ids.contains(&binding) {
                    ids.push(binding);
                }
            } else if let Some(ids) = self.impu_index.get_mut(&key) {
                ids.retain(|&x| x != binding);
                if ids.is_empty() {
                    self.impu_index.remove(&key);
                }
            }
        }
    }

    /// The bindings `identity` names: its binding when it is an IMPI, else every binding that
    /// registered it as an IMPU (RFC 3261 §19.1.4 comparison), by the index.
    pub fn bindings_named(&self, identity: &[u8]) -> Vec<u64> {
        if let Some(&id) = self.by_impi.get(identity) {
            return vec![id];
        }
        let Some(ids) = self.impu_index.get(&impu_key(identity)) else {
            return Vec::new();
        };
        ids.iter()
            .copied()
            .filter(|id| {
                self.bindings
                    .get(id)
                    .and_then(|b| b.reg.as_ref())
                    .is_some_and(|r| r.registered_impu(identity).is_some())
            })
            .collect()
    }

    /// P-CSCF-initiated de-registration (an operator's `deregister`, TS 24.229 §5.2.5
    /// [spec-m]): the registration that `identity` (an IMPI, or any IMPU it registered) names
    /// ends here as a network de-registration does (`Registrar::end_registration`), and the
    /// S-CSCF is told, so that the network's state agrees: a REGISTER on the UE's behalf
    /// removing its contact (RFC 3261 §10.2.2: Expires 0), integrity-protected as the UE's own
    /// de-registration over its SAs would be, sent the way the UE's REGISTERs went (the home
    /// domain's I-CSCF; the S-CSCF of the Service-Route while that domain's name is not
    /// resolved). Its answer is only counted. An IMPU that several IMPIs registered is not
    /// guessed at, and a registration whose IMPI or contact cannot go into our REGISTER still
    /// ends here ([`Deregistration`] says which).
    pub fn deregister(&mut self, identity: &[u8], now: Instant) -> Deregistration {
        let ids = self.bindings_named(identity);
        let registered: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.bindings.get(id).is_some_and(|b| b.reg.is_some()))
            .collect();
        match registered[..] {
            [] => Deregistration::NotFound,
            [one] => {
                if self.deregister_binding(one, now) {
                    Deregistration::Told
                } else {
                    self.stats.pcscf_deregistrations += 1;
                    self.end_registration(one, now);
                    Deregistration::NotTold
                }
            }
            _ => Deregistration::Ambiguous(
                registered
                    .iter()
                    .filter_map(|id| self.bindings.get(id).map(|b| b.impi.to_vec()))
                    .collect(),
            ),
        }
    }

    /// The reg event subscriptions' counters, and how many are held.
    pub fn reg_event_stats(&self) -> super::regevent::RegEventStats {
        self.regevent.stats
    }

    pub fn subscriptions(&self) -> usize {
        self.regevent.len()
    }

    /// Whether the registration behind one of our inbound SPIs has an accepted reg event
    /// subscription.
    pub fn reg_event_active(&self, spi: u32) -> bool {
        self.binding_of(spi)
            .is_some_and(|b| self.regevent.is_active(b))
    }

    /// Two of our SPIs and a (port-c, port-s) pair of the protected range whose outbound keys
    /// toward this UE address and ports are free in the whole table: a new set never replaces
    /// an outbound SA of another set or another binding (a spoofed source naming a victim's
    /// address and ports gets other ports of ours, not the victim's SAs). With `keep_ps` (a set
    /// negotiated over an existing one) that port-s is kept and only port-c is new, as long as
    /// the keys are free (the UE chose a new port-c, TS 33.203 §7.4); else a fresh pair.
    fn allocate(
        &mut self,
        ue: IpAddr,
        offer: &IpsecOffer,
        keep_ps: Option<u16>,
    ) -> Option<(u32, u32, u16, u16)> {
        let (lo, hi) = (
            *self.cfg.protected_ports.start(),
            *self.cfg.protected_ports.end(),
        );
        // Fresh sets take whole pairs (port-c at an even offset of the range, port-s the next
        // port): many UEs share a pair (their SAs differ by address and SPI), but one
        // (address, port) of a UE must not meet the same port of ours twice.
        let pairs = (hi - lo).div_ceil(2).max(1);
        let (port_pc, port_ps) = {
            let g = self.sas_view.pin();
            let free = |pc: u16, ps: u16| {
                pc != ps
                    && g.outbound(ue, offer.port_s, pc).is_none()
                    && g.outbound(ue, offer.port_c, ps).is_none()
            };
            let mut found = None;
            for keep in [keep_ps, None] {
                for _ in 0..pairs {
                    let k = self.next_port % pairs;
                    self.next_port = self.next_port.wrapping_add(1);
                    let pc = lo + 2 * k;
                    let ps = keep.unwrap_or(pc + 1);
                    if free(pc, ps) {
                        found = Some((pc, ps));
                        break;
                    }
                }
                if found.is_some() || keep.is_none() {
                    break;
                }
            }
            found?
        };
        // none of the UE's SPIs (see `esp::outbound_ivs_disjoint`)
        let ue_spis = [offer.spi_c, offer.spi_s];
        let spi_pc = self.sas.reserve_spi_avoiding(&ue_spis).ok()?;
        let spi_ps = match self.sas.reserve_spi_avoiding(&ue_spis) {
            Ok(s) => s,
            Err(_) => {
                let _ = self.sas.remove_inbound(spi_pc);
                return None;
            }
        };
        Some((spi_pc, spi_ps, port_pc, port_ps))
    }

    /// The four SAs of TS 33.203 §7.1 from CK/IK (keys derived per TS 33.203 Annex I in `esp`),
    /// marked temporary, or as `restored` says for a set restored from the store (its role's
    /// state; where its outbound counters resume and its inbound windows start). A fresh set's
    /// outbound ceilings are the set's own (`u32::MAX` unless persisted: [`SEQ_STEP`]).
    fn install(
        &mut self,
        set: &SaSet,
        ck: &[u8; 16],
        ik: &[u8; 16],
        binding: u64,
        restored: Option<SetState>,
    ) -> Result<(), String> {
        // check_register chose the offer among the configured pairs, all valid suites
        // (config::algorithms), so this fails only for a hand-built offer (or a stored record
        // of another configuration).
        let suite = Suite::new(set.alg, set.ealg).map_err(|e| e.to_string())?;
        // RFC 4106 §3.1 / RFC 4543 §3.1: no GCM/GMAC IV may repeat under the set's one key
        if !crate::esp::outbound_ivs_disjoint([set.spi_pc, set.spi_ps], [set.spi_uc, set.spi_us]) {
            return Err("UE SPIs equal each other or ours".into());
        }
        // One key schedule for the four SAs (they share CK_ESP/IK_ESP, TS 33.203 Annex I).
        let keys = Sa::from_aka_suite(set.spi_ps, suite, ck, ik, self.cfg.sa_options)
            .map_err(|e| e.to_string())?;
        let sa = |spi: u32| keys.sibling(spi).map(Arc::new).map_err(|e| e.to_string());
        let (in_s, in_c, out_s, out_c) = (
            sa(set.spi_ps)?,
            sa(set.spi_pc)?,
            sa(set.spi_us)?,
            sa(set.spi_uc)?,
        );
        for (o, ceiling) in [(&out_s, set.out_ceiling[0]), (&out_c, set.out_ceiling[1])] {
            if restored.is_some() {
                // RFC 4303 §3.3.3: nothing it sent before the restart is at or above the
                // persisted ceiling; it sends nothing more until a higher one is written
                o.resume_after(ceiling);
            }
            o.set_seq_ceiling(ceiling);
        }
        if restored.is_some() {
            // RFC 4303 §3.4.3: what was accepted before the restart is not accepted again
            in_s.replay_window().restore_floor(set.in_top[0]);
            in_c.replay_window().restore_floor(set.in_top[1]);
        }
        let state = restored.unwrap_or(SetState::Temporary);
        let meta = |ue_port: u16, local_port: u16| EntryMeta {
            ue_addr: set.ue,
            ue_port,
            ue_ports: SetPorts {
                c: set.port_uc,
                s: set.port_us,
            },
            local_port,
            ports: SetPorts {
                c: set.port_pc,
                s: set.port_ps,
            },
            binding,
            state,
        };
        // SA1: UE port-c → our port-s (in, our spi-s); SA4: UE port-s → our port-c (in, spi-c)
        self.sas
            .install_inbound(in_s, &meta(set.port_uc, set.port_ps))
            .map_err(|e| format!("{e:?}"))?;
        self.sas
            .install_inbound(in_c, &meta(set.port_us, set.port_pc))
            .map_err(|e| format!("{e:?}"))?;
        // SA2: our port-c → UE port-s (out, the UE's spi-s); SA3: our port-s → UE port-c.
        // Never over an outbound SA someone else holds (allocate chose free keys; this keeps
        // it true whatever calls install).
        for (port, lport) in [(set.port_us, set.port_pc), (set.port_uc, set.port_ps)] {
            if self.sas_view.pin().outbound(set.ue, port, lport).is_some() {
                return Err(format!(
                    "outbound SA toward {}:{port} from our port {lport} is held by another set",
                    set.ue
                ));
            }
        }
        self.sas
            .install_outbound(out_s, &meta(set.port_us, set.port_pc))
            .map_err(|e| format!("{e:?}"))?;
        self.sas
            .install_outbound(out_c, &meta(set.port_uc, set.port_ps))
            .map_err(|e| format!("{e:?}"))?;
        if let Some(log) = self.keylog.as_deref() {
            let keys = crate::esp::EspKeys::derive(suite, ck, ik);
            for spi in [set.spi_ps, set.spi_pc, set.spi_us, set.spi_uc] {
                log.log(&SaSecret {
                    ue: set.ue,
                    spi,
                    suite,
                    keys: &keys,
                });
            }
        }
        Ok(())
    }

    /// The outbound entries (UE port, our port) that still hold `set`'s SAs: an entry another
    /// set or binding has at the same address and ports is not the set's.
    fn outbound_of(&self, set: &SaSet, binding: u64) -> Vec<(u16, u16)> {
        let g = self.sas_view.pin();
        [
            (set.port_us, set.port_pc, set.spi_us),
            (set.port_uc, set.port_ps, set.spi_uc),
        ]
        .into_iter()
        .filter(|&(port, lport, spi)| {
            g.outbound(set.ue, port, lport)
                .is_some_and(|e| e.binding() == binding && e.spi() == spi)
        })
        .map(|(port, lport, _)| (port, lport))
        .collect()
    }

    /// Removes a set's SAs: its two inbound SPIs (installed or only reserved) and the outbound
    /// entries that still hold this set's SAs — an entry another set or binding has at the same
    /// address and ports stays.
    fn remove_set(&mut self, set: &SaSet, binding: u64) {
        self.touch(binding);
        for spi in [set.spi_pc, set.spi_ps] {
            let _ = self.sas.remove_inbound(spi);
        }
        for (port, lport) in self.outbound_of(set, binding) {
            let _ = self.sas.remove_outbound(set.ue, port, lport);
        }
    }

    /// The next deadline: when [`Registrar::handle_timeout`] has something to do (an SA set
    /// to end, a transaction to give up, an answer to forget, a DNS query to retransmit).
    /// `None`: nothing is waiting. It may be early (an entry whose state moved on), never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _))| *at);
        let answer = self.completed_order.front().map(|(_, _, at)| *at);
        let regevent = self.regevent.poll_timeout();
        [timer, answer, self.resolver.poll_timeout(), regevent]
            .into_iter()
            .flatten()
            .min()
    }

    /// Timers due at `now`: temporary sets after reg-await-auth, current sets after expiry +
    /// 30 s, transactions the core never answered, answers kept for retransmissions, DNS
    /// queries (REGISTERs whose resolution failed get their 503). Only what is due is touched.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.resolver.poll_timeout().is_some_and(|t| t <= now) {
            self.resolver.handle_timeout(now);
            self.resume_parked(now);
        }
        if self.regevent.poll_timeout().is_some_and(|t| t <= now) {
            self.regevent.handle_timeout(now, &mut self.transmits);
        }
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.timer_stats.fired += 1;
            let acted = match timer {
                Timer::Set { binding, spi } => self.expire_set(binding, spi, now),
                Timer::Pending(branch) => self.expire_pending(branch, now),
                Timer::Binding(id) => self.collect_binding(id),
            };
            if !acted {
                self.timer_stats.stale += 1;
            }
        }
        while let Some((k, seq, at)) = self.completed_order.front() {
            if *at > now {
                break;
            }
            if self.completed.get(k).is_some_and(|(_, s)| s == seq) {
                self.completed.remove(k);
            }
            self.completed_order.pop_front();
        }
    }

    /// The timers' counters (the queue length, entries fired, stale ones among them).
    pub fn timer_stats(&self) -> TimerStats {
        TimerStats {
            queued: self.timers.len(),
            ..self.timer_stats
        }
    }

    /// Queue `timer` for `at`. Entries are never taken out early (lazy deletion); when stale
    /// ones outnumber the live ones the queue is rebuilt, so its memory follows the live
    /// state, not the history of refreshes.
    fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
        // live and distinct: at most 4 temporary + current + old + retiring set timers and one binding
        // check per binding, one per transaction; past 8 per item most entries are stale, and
        // the rebuild is paid for by the pushes since the last one
        let live = 8 * (self.bindings.len() + self.pending.len()) + 1024;
        if self.timers.len() > live {
            // (duplicates go too: a set armed twice for one instant, say two answers handled
            // with the same `now`, would otherwise count as live twice)
            let mut timers = std::mem::take(&mut self.timers).into_vec();
            timers.sort_unstable();
            timers.dedup();
            timers.retain(|Reverse((at, t))| self.timer_live(*at, *t));
            self.timers = timers.into();
        }
    }

    /// Whether a queued timer still names the state it was armed for.
    fn timer_live(&self, at: Instant, timer: Timer) -> bool {
        match timer {
            Timer::Set { binding, spi } => self
                .bindings
                .get(&binding)
                .is_some_and(|b| b.sets().any(|s| s.spi_pc == spi && s.expires == at)),
            Timer::Pending(branch) => self
                .pending
                .get(&branch)
                .is_some_and(|p| p.created + TRANSACTION_LIFE == at),
            Timer::Binding(id) => self.bindings.contains_key(&id),
        }
    }

    /// The set of `binding` with inbound SPI `spi`, if it has expired: its SAs go. Whether it
    /// did (false: refreshed or gone meanwhile).
    fn expire_set(&mut self, binding: u64, spi: u32, now: Instant) -> bool {
        let Some(b) = self.bindings.get_mut(&binding) else {
            return false;
        };
        let due = |s: &SaSet| s.spi_pc == spi && s.expires <= now;
        let before = SetCounts::of(b);
        let set = if let Some(i) = b.temporary.iter().position(due) {
            Box::new(b.temporary.swap_remove(i))
        } else if let Some(c) = b.current.take_if(|c| due(c)) {
            // The registration expired (its set outlived it by SA_GRACE, TS 24.229
            // §5.1.1.5.1): its calls are released toward the core; the UE, whose SAs go now,
            // is not reached any more.
            let next_hop = b.reg.as_ref().map(|r| (r.next_hop, r.next_hop_tcp));
            self.release_dialogs(binding, next_hop);
            // the S-CSCF's registration has expired too: its subscription with it
            self.regevent.end(binding, false, now, &mut self.transmits);
            c
        } else if let Some(o) = b.old.take_if(|o| due(o)) {
            o
        } else if let Some(r) = b.retiring.take_if(|r| due(r)) {
            r
        } else {
            return false;
        };
        if let Some(b) = self.bindings.get(&binding) {
            self.set_counts.moved(before, SetCounts::of(b));
        }
        self.stats.expired_sets += 1;
        self.remove_set(&set, binding);
        self.collect_binding(binding);
        true
    }

    /// The transaction of `branch`, if the core has not answered it in time (RFC 3261
    /// §17.1.1.2, Timer B: 64*T1): forgotten.
    fn expire_pending(&mut self, branch: u64, now: Instant) -> bool {
        if self
            .pending
            .get(&branch)
            .is_none_or(|p| p.created + TRANSACTION_LIFE > now)
        {
            return false;
        }
        let Some(p) = self.pending.remove(&branch) else {
            return false;
        };
        self.forget_pending(branch, &p);
        self.collect_binding(p.binding);
        true
    }

    /// A binding lives while it has an SA set or a transaction in progress. Whether it went.
    fn collect_binding(&mut self, id: u64) -> bool {
        let Some(b) = self.bindings.get(&id) else {
            return false;
        };
        if b.in_flight > 0 || b.sets().next().is_some() {
            return false;
        }
        self.touch(id);
        self.set_reg(id, None);
        if let Some(b) = self.bindings.remove(&id)
            && self.by_impi.get(&*b.impi) == Some(&id)
        {
            self.by_impi.remove(&*b.impi);
        }
        self.regevent.forget_binding(id);
        true
    }

    /// The SA table holds exactly what the bindings hold: two inbound and two outbound entries
    /// per set, each naming its binding, and no SPI reserved beyond them (no leaked slot); and
    /// every set and transaction has its timer queued for its deadline (none would live
    /// forever). The tests run it after every scenario.
    pub fn check_sa_invariants(&self) -> Result<(), String> {
        let st = self.sas.stats();
        let g = self.sas_view.pin();
        let timers: std::collections::HashSet<(Instant, Timer)> =
            self.timers.iter().map(|Reverse(e)| *e).collect();
        for (&branch, p) in &self.pending {
            if !timers.contains(&(p.created + TRANSACTION_LIFE, Timer::Pending(branch))) {
                return Err(format!("transaction {branch:x} has no timer"));
            }
        }
        let mut sets = 0;
        let mut counts = SetCounts::default();
        for (&id, b) in &self.bindings {
            counts.moved(SetCounts::default(), SetCounts::of(b));
            for s in b.sets() {
                sets += 1;
                let spi = s.spi_pc;
                if !timers.contains(&(s.expires, Timer::Set { binding: id, spi })) {
                    return Err(format!("binding {id}: set {spi} has no timer"));
                }
                for spi in [s.spi_pc, s.spi_ps] {
                    match g.inbound(spi) {
                        Some(e) if e.binding() == id => {}
                        _ => {
                            return Err(format!(
                                "binding {id}: inbound SPI {spi} not in the table"
                            ));
                        }
                    }
                }
                for (port, lport, spi) in [
                    (s.port_us, s.port_pc, s.spi_us),
                    (s.port_uc, s.port_ps, s.spi_uc),
                ] {
                    match g.outbound(s.ue, port, lport) {
                        Some(e) if e.binding() == id && e.spi() == spi => {}
                        _ => {
                            return Err(format!(
                                "binding {id}: outbound {}:{port}/{lport} not this set's",
                                s.ue
                            ));
                        }
                    }
                }
            }
        }
        for (&id, b) in &self.bindings {
            for u in b.reg.iter().flat_map(|r| r.impus()) {
                if !self
                    .impu_index
                    .get(&impu_key(u))
                    .is_some_and(|ids| ids.contains(&id))
                {
                    return Err(format!("binding {id}: an IMPU not in the index"));
                }
            }
        }
        let indexed: usize = self.impu_index.values().map(Vec::len).sum();
        let impus: usize = self
            .bindings
            .values()
            .filter_map(|b| b.reg.as_ref())
            .map(|r| {
                let mut keys: Vec<Box<[u8]>> = r.impus().map(impu_key).collect();
                keys.sort();
                keys.dedup();
                keys.len()
            })
            .sum();
        if indexed != impus {
            return Err(format!("{indexed} IMPU index entries for {impus} IMPUs"));
        }
        if st.inbound_used != 2 * sets || st.inbound_live != 2 * sets {
            return Err(format!(
                "{sets} sets but {} inbound SPIs reserved, {} installed",
                st.inbound_used, st.inbound_live
            ));
        }
        if st.outbound_live != 2 * sets {
            return Err(format!(
                "{sets} sets but {} outbound entries",
                st.outbound_live
            ));
        }
        if counts != self.set_counts {
            return Err(format!(
                "the bindings hold {counts:?} but {:?} are counted",
                self.set_counts
            ));
        }
        Ok(())
    }

    /// The binding one of our inbound SPIs belongs to.
    fn binding_of(&self, spi: u32) -> Option<u64> {
        self.sas_view.pin().inbound(spi).map(|e| e.binding())
    }

    /// The registration of the UE behind one of our inbound SPIs.
    pub fn registration_of(&self, spi: u32) -> Option<RegistrationView<'_>> {
        let id = self.binding_of(spi)?;
        let b = self.bindings.get(&id)?;
        let impi = &*b.impi;
        let unbracket = |u: &[u8]| {
            let u = u.strip_prefix(b"<").unwrap_or(u);
            u.strip_suffix(b">").unwrap_or(u).to_vec()
        };
        let mut impus = Vec::new();
        let mut service_route = Vec::new();
        if let Some(r) = &b.reg {
            // the default first: the one asserted
            impus = r.impus().map(<[u8]>::to_vec).collect();
            // we wrote the Route value as "<uri>, <uri>"
            service_route = r
                .route()
                .split(|&c| c == b',')
                .map(|x| unbracket(x.trim_ascii()))
                .filter(|x| !x.is_empty())
                .collect();
        }
        Some(RegistrationView {
            impi,
            impus,
            service_route,
        })
    }
}

/// What the workers need to relay a UE's requests: its default IMPU as the asserted identity,
/// its Service-Route as the Route set, and where that route goes and whether over TCP
/// (`Registrar::route_next_hop`).
fn registration(
    impus: &[Vec<u8>],
    service_route: &[Vec<u8>],
    (next_hop, tcp): (SocketAddr, bool),
) -> Registration {
    let pai = [
        &b"<"[..],
        impus.first().map_or(&[][..], |u| u.as_slice()),
        b">",
    ]
    .concat();
    let mut route = Vec::new();
    for (i, r) in service_route.iter().enumerate() {
        if i > 0 {
            route.extend_from_slice(b", ");
        }
        route.extend_from_slice(b"<");
        route.extend_from_slice(r);
        route.extend_from_slice(b">");
    }
    let impus: Vec<&[u8]> = impus.iter().map(|u| u.as_slice()).collect();
    let mut reg = Registration::with_impus(&pai, &route, &impus, next_hop);
    reg.next_hop_tcp = tcp;
    reg
}

/// What the registrar knows of one registered UE.
#[derive(Clone, Debug)]
pub struct RegistrationView<'a> {
    pub impi: &'a [u8],
    /// P-Associated-URI, in order: the first is the default for P-Asserted-Identity.
    pub impus: Vec<Vec<u8>>,
    pub service_route: Vec<Vec<u8>>,
}

fn fallback_or_ip(host: &str, port: Option<u16>) -> Option<SocketAddr> {
    let ip = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// Load-test hook (cargo feature `bench-hooks`): registered UEs without AKA.
#[cfg(feature = "bench-hooks")]
impl Registrar {
    /// Installs bench UE `ue` as if it had registered: its four SAs from its CK/IK (the first
    /// algorithm preference), a current set living `lifetime`, its IMPU and a Service-Route to the
    /// I-CSCF published for the workers, its binding and SPI maps, all through the same
    /// structures a real registration fills. Returns what was allocated for it.
    pub fn bench_preload(
        &mut self,
        ue: &crate::preload::BenchUe,
        lifetime: Duration,
        now: Instant,
    ) -> Result<crate::preload::Allocated, String> {
        let (alg, ealg) = *self.cfg.prefs.first().ok_or("no algorithms configured")?;
        let offer = IpsecOffer {
            alg,
            ealg,
            spi_c: ue.spi_uc,
            spi_s: ue.spi_us,
            port_c: ue.port_uc,
            port_s: ue.port_us,
            q: None,
        };
        let (spi_pc, spi_ps, port_pc, port_ps) = self
            .allocate(ue.addr, &offer, None)
            .ok_or("SA table full (SPIs or ports)")?;
        let set = SaSet {
            ue: ue.addr,
            spi_pc,
            spi_ps,
            port_pc,
            port_ps,
            port_uc: ue.port_uc,
            port_us: ue.port_us,
            spi_uc: ue.spi_uc,
            spi_us: ue.spi_us,
            alg,
            ealg,
            client: Box::default(),
            expires: now + lifetime + SA_GRACE,
            keys: None,
            out_ceiling: [u32::MAX; 2],
            in_top: [0; 2],
        };
        let id = self.next_id;
        self.next_id += 1;
        let (at, timer) = (
            set.expires,
            Timer::Set {
                binding: id,
                spi: spi_pc,
            },
        );
        if let Err(e) = self.install(&set, &ue.ck, &ue.ik, id, None) {
            self.remove_set(&set, id);
            return Err(e);
        }
        let next = self.cfg.icscf.unwrap_or(self.cfg.core);
        let routes = [format!("sip:orig@{next};lr").into_bytes()];
        let impus = [ue.impu.as_bytes().to_vec()];
        let reg = Some(Arc::new(registration(&impus, &routes, (next, false))));
        let impi: Arc<[u8]> = ue.impi.as_bytes().into();
        let b = Binding {
            current: Some(Box::new(set)),
            reg: reg.clone(),
            ..Binding::new(impi.clone())
        };
        for spi in [spi_pc, spi_ps] {
            let _ = self.sas.set_inbound_state(spi, SetState::New);
            let _ = self.sas.set_inbound_registration(spi, reg.clone());
        }
        self.by_impi.insert(impi, id);
        self.set_counts.add(SetRole::Current, true);
        self.bindings.insert(id, b);
        self.index_impus(id, reg.as_deref(), true);
        self.arm(at, timer);
        self.stats.registered += 1;
        Ok(crate::preload::Allocated {
            index: ue.index,
            spi_ps,
            port_ps,
            spi_pc,
            port_pc,
        })
    }
}

/// The role of an SA set in its binding (TS 33.203 §7.4): what the store records and
/// `pcscf ctl` shows.
pub use crate::control::store::SetRole;

/// One SA set of a binding, read-only (operator views: `control::ctl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetView {
    pub role: SetRole,
    pub ue: IpAddr,
    /// Our inbound SPIs (port-c's and port-s's SAs).
    pub spi_pc: u32,
    pub spi_ps: u32,
    /// The UE's SPIs (our outbound SAs carry them).
    pub spi_uc: u32,
    pub spi_us: u32,
    pub port_pc: u16,
    pub port_ps: u16,
    pub port_uc: u16,
    pub port_us: u16,
    pub alg: IntegAlg,
    pub ealg: EncAlg,
    /// When the set's SAs go (a current set: the registration's expiry + [`SA_GRACE`]).
    pub expires: Instant,
}

impl SetView {
    fn of(role: SetRole, s: &SaSet) -> SetView {
        SetView {
            role,
            ue: s.ue,
            spi_pc: s.spi_pc,
            spi_ps: s.spi_ps,
            spi_uc: s.spi_uc,
            spi_us: s.spi_us,
            port_pc: s.port_pc,
            port_ps: s.port_ps,
            port_uc: s.port_uc,
            port_us: s.port_us,
            alg: s.alg,
            ealg: s.ealg,
            expires: s.expires,
        }
    }
}

/// One binding, read-only: what `pcscf ctl show registrations` lists.
#[derive(Clone, Debug)]
pub struct BindingView<'a> {
    /// The binding's number (order of creation).
    pub id: u64,
    pub impi: &'a [u8],
    /// The Contact URI the UE registered (empty before its first 200).
    pub contact: &'a [u8],
    /// Registered: a 200 came and the registration has not ended.
    pub registered: bool,
    /// The P-Asserted-Identity value the workers set for it (`<uri>`), when registered.
    pub asserted: Option<&'a [u8]>,
    /// The registered IMPUs (P-Associated-URI), the default first.
    pub impus: Vec<&'a [u8]>,
    /// REGISTER transactions in progress.
    pub in_flight: u32,
    /// Its sets: temporary ones first, then current, old, retiring.
    pub sets: Vec<SetView>,
    /// Its confirmed calls in the dialog book.
    pub dialogs: usize,
}

/// The four SAs of one set with their counters, read-only: what `pcscf ctl show sa` shows.
#[derive(Clone, Debug)]
pub struct SaSetDetail<'a> {
    pub binding: BindingView<'a>,
    pub set: SetView,
    /// (direction, SPI, our port, the UE's port, the SA itself) for SA1..SA4 as the table holds
    /// them; an entry missing from the table (never, while the invariant holds) is left out.
    pub sas: Vec<(crate::satable::Direction, u32, u16, u16, Arc<Sa>)>,
}

/// A confirmed call of the dialog book with its registration, read-only.
#[derive(Clone, Debug)]
pub struct DialogLine<'a> {
    pub impi: &'a [u8],
    pub dialog: super::dialogs::DialogView<'a>,
}

/// Read-only views for the operator's control socket (`pcscf ctl`, `control::ctl`): nothing here
/// changes state, and each is bounded by what it is asked for (a listing by `limit`).
impl Registrar {
    /// The view of binding `id`.
    pub fn binding_view_by_id(&self, id: u64) -> Option<BindingView<'_>> {
        let b = self.bindings.get(&id)?;
        Some(self.binding_view(id, b))
    }

    fn binding_view<'a>(&'a self, id: u64, b: &'a Binding) -> BindingView<'a> {
        let mut sets: Vec<SetView> = b
            .temporary
            .iter()
            .map(|s| SetView::of(SetRole::Temporary, s))
            .collect();
        for (role, s) in [
            (SetRole::Current, &b.current),
            (SetRole::Old, &b.old),
            (SetRole::Retiring, &b.retiring),
        ] {
            if let Some(s) = s {
                sets.push(SetView::of(role, s));
            }
        }
        BindingView {
            id,
            impi: &b.impi,
            contact: &b.contact,
            registered: b.reg.is_some(),
            asserted: b.reg.as_ref().map(|r| r.pai()),
            impus: b
                .reg
                .as_ref()
                .map_or_else(Vec::new, |r| r.impus().collect()),
            in_flight: b.in_flight,
            sets,
            dialogs: self.dialogs.of_binding(id),
        }
    }

    /// Bindings held now (registered or registering).
    pub fn bindings_count(&self) -> usize {
        self.bindings.len()
    }

    /// At most `limit` bindings, in no particular order (the map's).
    pub fn bindings_view(&self, limit: usize) -> Vec<BindingView<'_>> {
        self.bindings
            .iter()
            .take(limit)
            .map(|(&id, b)| self.binding_view(id, b))
            .collect()
    }

    /// The binding `identity` names: an IMPI, else a registered IMPU (compared per RFC 3261
    /// §19.1.4; the IMPU index, [`Registrar::bindings_named`]; the first of several).
    pub fn binding_view_of(&self, identity: &[u8]) -> Option<BindingView<'_>> {
        let id = self.bindings_named(identity).first().copied()?;
        let b = self.bindings.get(&id)?;
        Some(self.binding_view(id, b))
    }

    /// The set one of our inbound SPIs belongs to, with its four SAs from the SA table.
    pub fn sa_set_detail(&self, spi: u32) -> Option<SaSetDetail<'_>> {
        use crate::satable::Direction;
        let id = self.binding_of(spi)?;
        let b = self.bindings.get(&id)?;
        let s = b.set_of(spi)?;
        let binding = self.binding_view(id, b);
        let set = *binding
            .sets
            .iter()
            .find(|v| v.spi_pc == s.spi_pc && v.spi_ps == s.spi_ps)?;
        let g = self.sas_view.pin();
        let mut sas = Vec::with_capacity(4);
        for (spi, lport, uport) in [
            (s.spi_pc, s.port_pc, s.port_uc),
            (s.spi_ps, s.port_ps, s.port_us),
        ] {
            if let Some(e) = g.inbound(spi) {
                sas.push((Direction::In, spi, lport, uport, e.sa().clone()));
            }
        }
        for (uport, lport) in [(s.port_us, s.port_pc), (s.port_uc, s.port_ps)] {
            if let Some(e) = g.outbound(s.ue, uport, lport) {
                sas.push((Direction::Out, e.spi(), lport, uport, e.sa().clone()));
            }
        }
        Some(SaSetDetail { binding, set, sas })
    }

    /// At most `limit` confirmed calls of the dialog book, each with the IMPI it belongs to.
    pub fn dialogs_view(&self, limit: usize) -> Vec<DialogLine<'_>> {
        self.dialogs
            .views()
            .take(limit)
            .map(|d| DialogLine {
                impi: self.bindings.get(&d.binding).map_or(&[][..], |b| &b.impi),
                dialog: d,
            })
            .collect()
    }

    /// INVITEs of the dialog book waiting for their final response.
    pub fn dialogs_waiting(&self) -> usize {
        self.dialogs.waiting()
    }
}
