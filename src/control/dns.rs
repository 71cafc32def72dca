//! Locating the I-CSCF of the home domain by DNS (RFC 3263 §4): NAPTR → SRV → A/AAAA, with
//! positive and negative answers cached. The answer is a [`Target`]: an address and the
//! transport to reach it by, UDP or TCP (RFC 3263 §4.1: the NAPTR record's `SIP+D2U` or
//! `SIP+D2T` service, else the first of `_sip._udp` / `_sip._tcp` whose SRV leads to an
//! address, else UDP to the domain's address at 5060). A static `core.icscf` in the
//! configuration bypasses it.
//!
//! Owns: the DNS wire format we need (RFC 1035 §4: queries, answers, name compression; RFC 3403
//! NAPTR; RFC 2782 SRV; RFC 3596 AAAA), the resolution procedure, the cache and the query
//! timers. It is sans-IO in the quinn-proto style, so it never blocks the registration thread:
//! [`Resolver::lookup`] answers from the cache or starts a resolution and says `Pending`; the
//! owner sends what [`Resolver::poll_transmit`] gives to the server, feeds the server's
//! datagrams to [`Resolver::handle_datagram`] and the clock to [`Resolver::handle_timeout`],
//! and collects finished resolutions with [`Resolver::poll_done`].
//!
//! Hostile answers: the query ID is random (RFC 5452 §9.2), an answer is
//! taken only from the server we asked, with our ID and our question (RFC 5452 §9.1); TTLs are
//! clamped, failures are cached for a short fixed time, and resolutions in progress, queries per
//! resolution and cache entries are all bounded. The wire code is kept here rather than moved
//! to hickory-proto: it is a few hundred lines that parse only four record types with bounds
//! checks everywhere, fuzzable alone, and the crate would pull a large dependency tree into a
//! binary that otherwise has no async runtime.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

pub use crate::sip::Transport;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_NAPTR: u16 = 35;

/// A positive answer is kept for its TTL, within these bounds: a TTL of 0 would send a query per
/// REGISTER, a huge one would pin a moved I-CSCF for days.
pub const TTL_MIN: Duration = Duration::from_secs(5);
pub const TTL_MAX: Duration = Duration::from_secs(3600);
/// A failed resolution (NXDOMAIN, no usable record, no answer) is remembered this long, so a
/// flood of REGISTERs for a name that does not resolve costs one resolution, not one each
/// (RFC 2308 §5 caches negative answers; we do not read the SOA, so the time is fixed and short).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Wait for one answer, and sends of one query in all (the first and the retransmissions).
pub const QUERY_TIMEOUT: Duration = Duration::from_millis(400);
pub const QUERY_TRIES: u32 = 3;
/// Queries one resolution may send (a hostile NAPTR/SRV answer could list many targets).
pub const MAX_STEPS: usize = 12;
/// Resolutions in progress at once; past it a lookup fails at once (the REGISTER gets 503).
pub const MAX_IN_FLIGHT: usize = 64;
/// Cached names at most.
pub const MAX_CACHE: usize = 4096;
/// How long past its TTL a positive answer is still used while it is being refreshed (RFC 8767
/// §4, serve-stale): a busy P-CSCF would otherwise park every REGISTER for the I-CSCF's name
/// each time the answer expires, and refuse those past [`MAX_PARKED`](crate::control::registrar::MAX_PARKED_PER_DOMAIN)
/// with a 503, or refuse them all while the DNS server is down. A refresh that fails is tried
/// again after [`NEGATIVE_TTL`]; past this the stale answer is dropped.
pub const STALE_MAX: Duration = Duration::from_secs(300);

/// One answer record we understand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Naptr {
        order: u16,
        preference: u16,
        flags: String,
        service: String,
        replacement: String,
    },
}

/// A DNS query for `name`/`qtype` with id `id`, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A name at `pos` (with compression pointers, RFC 1035 §4.1.4); the name and where it ends.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some((name, end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            pos = ptr;
            continue;
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label));
        pos += 1 + len;
    }
    None // a pointer loop
}

fn char_string(msg: &[u8], pos: usize) -> Option<(String, usize)> {
    let len = *msg.get(pos)? as usize;
    let s = msg.get(pos + 1..pos + 1 + len)?;
    Some((String::from_utf8_lossy(s).into_owned(), pos + 1 + len))
}

fn u16_at(msg: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]))
}

/// Whether `msg` is a response to our query `id` for `name`/`qtype` (class IN): RFC 5452 §9.1
/// accepts an answer only if its ID and its question match the query's.
fn answers_question(msg: &[u8], id: u16, name: &str, qtype: u16) -> bool {
    let check = || -> Option<bool> {
        let ok_header = u16_at(msg, 0)? == id && msg.get(2)? & 0x80 != 0 && u16_at(msg, 4)? == 1;
        let (qn, end) = read_name(msg, 12)?;
        Some(
            ok_header
                && qn.eq_ignore_ascii_case(name.trim_end_matches('.'))
                && u16_at(msg, end)? == qtype
                && u16_at(msg, end + 2)? == 1,
        )
    };
    check().unwrap_or(false)
}

/// The answers of a response to our query `id` for `name`/`qtype`, with their TTLs. `None` if
/// it is not a response to that question or reports an error (RCODE ≠ 0 and ≠ NXDOMAIN).
pub fn parse_response(msg: &[u8], id: u16, name: &str, qtype: u16) -> Option<Vec<(Record, u32)>> {
    if !answers_question(msg, id, name, qtype) {
        return None;
    }
    let rcode = msg.get(3)? & 0x0f;
    if rcode == 3 {
        return Some(Vec::new()); // NXDOMAIN: no such name
    }
    if rcode != 0 {
        return None;
    }
    let an = u16_at(msg, 6)?;
    let mut pos = read_name(msg, 12)?.1 + 4; // past the (one, checked) question
    let mut out = Vec::new();
    for _ in 0..an {
        pos = read_name(msg, pos)?.1;
        let rtype = u16_at(msg, pos)?;
        let ttl = u32::from_be_bytes(msg.get(pos + 4..pos + 8)?.try_into().ok()?);
        let rdlen = u16_at(msg, pos + 8)? as usize;
        let rd = pos + 10;
        let rdata = msg.get(rd..rd + rdlen)?;
        let rec = match rtype {
            TYPE_A if rdlen == 4 => Some(Record::A(Ipv4Addr::new(
                rdata[0], rdata[1], rdata[2], rdata[3],
            ))),
            TYPE_AAAA if rdlen == 16 => {
                let b: [u8; 16] = rdata.try_into().ok()?;
                Some(Record::Aaaa(Ipv6Addr::from(b)))
            }
            TYPE_SRV if rdlen >= 7 => Some(Record::Srv {
                priority: u16_at(msg, rd)?,
                weight: u16_at(msg, rd + 2)?,
                port: u16_at(msg, rd + 4)?,
                target: read_name(msg, rd + 6)?.0,
            }),
            TYPE_NAPTR if rdlen >= 7 => {
                let (flags, p) = char_string(msg, rd + 4)?;
                let (service, p) = char_string(msg, p)?;
                let (_regexp, p) = char_string(msg, p)?;
                Some(Record::Naptr {
                    order: u16_at(msg, rd)?,
                    preference: u16_at(msg, rd + 2)?,
                    flags,
                    service,
                    replacement: read_name(msg, p)?.0,
                })
            }
            _ => None,
        };
        if let Some(r) = rec {
            out.push((r, ttl));
        }
        pos = rd + rdlen;
    }
    Some(out)
}

/// Sends a query and returns the response bytes (tests and tools drive the resolver with it).
#[cfg(test)]
pub type Exchange<'a> = dyn FnMut(&[u8]) -> std::io::Result<Vec<u8>> + 'a;

/// Where to send SIP for a domain: an address and the transport RFC 3263 §4.1 chose for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    pub transport: Transport,
}

impl Target {
    /// `addr` over UDP (a numeric address, a static next hop, RFC 3263 §4.1's default).
    pub fn udp(addr: SocketAddr) -> Target {
        Target {
            addr,
            transport: Transport::Udp,
        }
    }
}

/// The NAPTR service of SIP over `t` (RFC 3263 §4.1; the SIPS services and SCTP are not ours).
fn naptr_service(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "SIP+D2U",
        Transport::Tcp => "SIP+D2T",
    }
}

/// The SRV name of SIP over `t` at `domain` (RFC 3263 §4.1, RFC 2782).
fn srv_name(t: Transport, domain: &str) -> String {
    match t {
        Transport::Udp => format!("_sip._udp.{domain}"),
        Transport::Tcp => format!("_sip._tcp.{domain}"),
    }
}

/// The transports we try, in our order of preference when DNS does not give the server's
/// (RFC 3263 §4.1: with no NAPTR, an SRV query per supported transport): UDP, then TCP.
const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// What [`Resolver::lookup`] knows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Ready(Target),
    /// No address (also cached: asking again within [`NEGATIVE_TTL`] costs no query).
    Failed,
    /// A resolution is in progress: [`Resolver::poll_done`] will name the domain when it ends.
    Pending,
}

/// One step of RFC 3263 §4 for a domain; each sends one query. `ttl`: the smallest TTL of the
/// records that led here; `transport`: the one the NAPTR record or SRV name chose (§4.1).
#[derive(Clone, Debug)]
enum Step {
    Naptr,
    Srv {
        name: String,
        transport: Transport,
        ttl: u32,
    },
    Addr {
        host: String,
        port: u16,
        qtype: u16,
        transport: Transport,
        ttl: u32,
    },
}

#[derive(Debug)]
struct Query {
    id: u16,
    name: String,
    qtype: u16,
    bytes: Vec<u8>,
    deadline: Instant,
    sent: u32,
    step: Step,
}

/// One resolution in progress: the steps still to try (a stack, the next one last).
#[derive(Debug)]
struct Job {
    todo: Vec<Step>,
    steps: usize,
    query: Option<Query>,
}

/// Counters of the resolver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub queries: u64,
    pub retransmissions: u64,
    pub failures: u64,
    pub cache_hits: u64,
    pub negative_hits: u64,
    /// Lookups answered from an expired answer while it was refreshed ([`STALE_MAX`]).
    pub stale_hits: u64,
    /// Datagrams dropped: not from the server, unknown ID, or not our question.
    pub ignored: u64,
    /// Lookups failed at once because [`MAX_IN_FLIGHT`] resolutions were in progress.
    pub overloaded: u64,
}

impl DnsStats {
    /// Every counter with its name (see `RegistrarStats::named`).
    pub fn named(&self) -> [(&'static str, u64); 8] {
        let DnsStats {
            queries,
            retransmissions,
            failures,
            cache_hits,
            negative_hits,
            stale_hits,
            ignored,
            overloaded,
        } = *self;
        [
            ("queries", queries),
            ("retransmissions", retransmissions),
            ("failures", failures),
            ("cache_hits", cache_hits),
            ("negative_hits", negative_hits),
            ("stale_hits", stale_hits),
            ("ignored", ignored),
            ("overloaded", overloaded),
        ]
    }
}

/// One cached answer: a target, or `None` for a failed resolution.
#[derive(Clone, Copy, Debug)]
struct Cached {
    target: Option<Target>,
    /// Until when it is the answer (its TTL, or [`NEGATIVE_TTL`]).
    fresh_until: Instant,
    /// Until when a positive one is still used while it is refreshed ([`STALE_MAX`]).
    stale_until: Instant,
    /// No refresh starts before this (a failed refresh waits [`NEGATIVE_TTL`]).
    retry_at: Instant,
}

/// RFC 3263 resolution for SIP over UDP or TCP, sans-IO, with a bounded cache.
#[derive(Debug, Default)]
pub struct Resolver {
    server: Option<SocketAddr>,
    cache: HashMap<String, Cached>,
    jobs: HashMap<String, Job>,
    ids: HashMap<u16, String>,
    transmit: VecDeque<Vec<u8>>,
    done: VecDeque<(String, Option<Target>)>,
    pub stats: DnsStats,
}

/// A query ID nobody off-path can guess (RFC 5452 §9.2).
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        use std::hash::BuildHasher;
        let h = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
        return h as u16;
    }
    u16::from_ne_bytes(b)
}

fn clamp_ttl(ttl: u32) -> Duration {
    Duration::from_secs(ttl as u64).clamp(TTL_MIN, TTL_MAX)
}

impl Resolver {
    /// A resolver asking `server` (none: every name that is not an address fails).
    pub fn new(server: Option<SocketAddr>) -> Resolver {
        Resolver {
            server,
            ..Resolver::default()
        }
    }

    /// Where to send SIP for `domain`, and over which transport (RFC 3263 §4.1, §4.2), if
    /// known now; else a resolution starts (or is already running) and the answer is `Pending`.
    pub fn lookup(&mut self, domain: &str, now: Instant) -> Lookup {
        let host = domain.trim_matches(|c| c == '[' || c == ']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            // §4.1: a numeric address with no transport named: UDP for a SIP URI; §4.2: 5060.
            return Lookup::Ready(Target::udp(SocketAddr::new(ip, 5060)));
        }
        let key = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.cache.get(&key).copied() {
            if c.fresh_until > now {
                return match c.target {
                    Some(a) => {
                        self.stats.cache_hits += 1;
                        Lookup::Ready(a)
                    }
                    None => {
                        self.stats.negative_hits += 1;
                        Lookup::Failed
                    }
                };
            }
            // RFC 8767 §4: the expired answer, while a refresh runs in the background
            if let Some(a) = c.target
                && c.stale_until > now
            {
                self.stats.stale_hits += 1;
                if c.retry_at <= now {
                    self.start(&key, now);
                }
                return Lookup::Ready(a);
            }
        }
        if self.jobs.contains_key(&key) {
            return Lookup::Pending;
        }
        if self.server.is_none() || key.is_empty() {
            return Lookup::Failed;
        }
        if !self.start(&key, now) {
            return Lookup::Failed;
        }
        if self.jobs.contains_key(&key) {
            Lookup::Pending
        } else {
            self.lookup(&key, now)
        }
    }

    /// Start resolving `key` unless it is being resolved already; false when it cannot be (no
    /// server, or [`MAX_IN_FLIGHT`] resolutions in progress: counted).
    fn start(&mut self, key: &str, now: Instant) -> bool {
        if self.jobs.contains_key(key) {
            return true;
        }
        if self.server.is_none() || key.is_empty() {
            return false;
        }
        if self.jobs.len() >= MAX_IN_FLIGHT {
            self.stats.overloaded += 1;
            return false;
        }
        let job = Job {
            todo: vec![Step::Naptr],
            steps: 0,
            query: None,
        };
        self.jobs.insert(key.to_string(), job);
        self.advance(key, now);
        true
    }

    /// The next query to send, and where.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let server = self.server?;
        self.transmit.pop_front().map(|q| (server, q))
    }

    /// A resolution that ended: the domain (lowercase) and its target, or `None` if it failed.
    pub fn poll_done(&mut self) -> Option<(String, Option<Target>)> {
        self.done.pop_front()
    }

    /// When [`Resolver::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| j.query.as_ref().map(|q| q.deadline))
            .min()
    }

    /// Resolutions in progress.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// Retransmit unanswered queries; a query unanswered after [`QUERY_TRIES`] sends fails its
    /// resolution (the server is down or the path lossy: retrying other names would wait too).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (key, job) in &mut self.jobs {
            let Some(q) = job.query.as_mut() else {
                continue;
            };
            if q.deadline > now {
                continue;
            }
            if q.sent < QUERY_TRIES {
                q.sent += 1;
                q.deadline = now + QUERY_TIMEOUT;
                self.stats.retransmissions += 1;
                self.transmit.push_back(q.bytes.clone());
            } else {
                failed.push(key.clone());
            }
        }
        for key in failed {
            self.finish(&key, None, now);
        }
    }

    /// A datagram from `from` on the DNS socket. Only an answer from the server, with the ID
    /// and the question of a query in flight, is taken; anything else is counted and dropped.
    pub fn handle_datagram(&mut self, from: SocketAddr, msg: &[u8], now: Instant) {
        if Some(from) != self.server {
            self.stats.ignored += 1;
            return;
        }
        let Some(key) = u16_at(msg, 0).and_then(|id| self.ids.get(&id)).cloned() else {
            self.stats.ignored += 1;
            return;
        };
        let Some(job) = self.jobs.get_mut(&key) else {
            self.stats.ignored += 1;
            return;
        };
        let Some(q) = job
            .query
            .take_if(|q| answers_question(msg, q.id, &q.name, q.qtype))
        else {
            self.stats.ignored += 1;
            return;
        };
        self.ids.remove(&q.id);
        // an error RCODE counts as no records: the next step is tried
        let records = parse_response(msg, q.id, &q.name, q.qtype).unwrap_or_default();
        match q.step {
            Step::Naptr => {
                // RFC 3263 §4.1: the records whose service is SIP over a transport we speak
                // (`SIP+D2U`, `SIP+D2T`; not SIPS nor SCTP) with the "s" flag (an SRV lookup
                // follows), lowest order then lowest preference first (RFC 3403 §4.1); we
                // speak both, so the first whose SRV leads to an address wins, and its
                // transport with it. More than MAX_STEPS could never be queried: the rest of
                // a long (hostile) answer is dropped here.
                let mut naptrs: Vec<(u16, u16, String, Transport, u32)> = records
                    .into_iter()
                    .filter_map(|(r, ttl)| match r {
                        Record::Naptr {
                            order,
                            preference,
                            flags,
                            service,
                            replacement,
                        } if flags.eq_ignore_ascii_case("s") => TRANSPORTS
                            .into_iter()
                            .find(|t| service.eq_ignore_ascii_case(naptr_service(*t)))
                            .map(|t| (order, preference, replacement, t, ttl)),
                        _ => None,
                    })
                    .collect();
                naptrs.sort_by_key(|n| (n.0, n.1));
                naptrs.truncate(MAX_STEPS);
                // Pushed last-first (a stack). When no NAPTR leads on (§4.1's last
                // paragraphs): an SRV query per transport we speak, in our preference order
                // (UDP, then TCP), the first that leads to an address giving the transport;
                // with no SRV either, UDP to the domain's own address at 5060 (§4.2).
                job.todo.push(Step::Addr {
                    host: key.clone(),
                    port: 5060,
                    qtype: TYPE_A,
                    transport: Transport::Udp,
                    ttl: u32::MAX,
                });
                for transport in TRANSPORTS.into_iter().rev() {
                    let name = srv_name(transport, &key);
                    // a NAPTR naming this very SRV has it queried already
                    if naptrs.iter().any(|n| n.2.eq_ignore_ascii_case(&name)) {
                        continue;
                    }
                    job.todo.push(Step::Srv {
                        name,
                        transport,
                        ttl: u32::MAX,
                    });
                }
                for (_, _, name, transport, ttl) in naptrs.into_iter().rev() {
                    job.todo.push(Step::Srv {
                        name,
                        transport,
                        ttl,
                    });
                }
            }
            Step::Srv { transport, ttl, .. } => {
                let mut srvs: Vec<(u16, u16, u16, String, u32)> = records
                    .into_iter()
                    .filter_map(|(r, t)| match r {
                        Record::Srv {
                            priority,
                            weight,
                            port,
                            target,
                        } => Some((priority, u16::MAX - weight, port, target, t)),
                        _ => None,
                    })
                    .collect();
                // RFC 2782: lowest priority first; among equals, the heaviest weight first
                // (RFC 3263 §4.3); no more than could ever be queried.
                srvs.sort();
                srvs.truncate(MAX_STEPS);
                for (_, _, port, host, t) in srvs.into_iter().rev() {
                    job.todo.push(Step::Addr {
                        host,
                        port,
                        qtype: TYPE_A,
                        transport,
                        ttl: ttl.min(t),
                    });
                }
            }
            Step::Addr {
                host,
                port,
                qtype,
                transport,
                ttl,
            } => {
                let found = records.into_iter().find_map(|(r, t)| match r {
                    Record::A(a) => Some((SocketAddr::new(IpAddr::V4(a), port), t)),
                    Record::Aaaa(a) => Some((SocketAddr::new(IpAddr::V6(a), port), t)),
                    _ => None,
                });
                if let Some((addr, t)) = found {
                    self.finish_ok(&key, Target { addr, transport }, ttl.min(t), now);
                    return;
                }
                if qtype == TYPE_A {
                    job.todo.push(Step::Addr {
                        host,
                        port,
                        qtype: TYPE_AAAA,
                        transport,
                        ttl,
                    });
                }
            }
        }
        self.advance(&key, now);
    }

    /// Send the next step's query, or end the resolution if none is left.
    fn advance(&mut self, key: &str, now: Instant) {
        let Some(job) = self.jobs.get_mut(key) else {
            return;
        };
        let step = if job.steps < MAX_STEPS {
            job.todo.pop()
        } else {
            None
        };
        let Some(step) = step else {
            self.finish(key, None, now);
            return;
        };
        job.steps += 1;
        let (name, qtype) = match &step {
            Step::Naptr => (key.to_string(), TYPE_NAPTR),
            Step::Srv { name, .. } => (name.clone(), TYPE_SRV),
            Step::Addr { host, qtype, .. } => (host.clone(), *qtype),
        };
        let mut id = random_id();
        while self.ids.contains_key(&id) {
            id = random_id();
        }
        let bytes = query(id, &name, qtype);
        self.ids.insert(id, key.to_string());
        self.transmit.push_back(bytes.clone());
        self.stats.queries += 1;
        job.query = Some(Query {
            id,
            name,
            qtype,
            bytes,
            deadline: now + QUERY_TIMEOUT,
            sent: 1,
            step,
        });
    }

    fn finish_ok(&mut self, key: &str, a: Target, ttl: u32, now: Instant) {
        self.end(key, Some(a), now + clamp_ttl(ttl), now);
    }

    fn finish(&mut self, key: &str, a: Option<Target>, now: Instant) {
        self.stats.failures += u64::from(a.is_none());
        self.end(key, a, now + NEGATIVE_TTL, now);
    }

    fn end(&mut self, key: &str, a: Option<Target>, until: Instant, now: Instant) {
        if let Some(q) = self.jobs.remove(key).and_then(|j| j.query) {
            self.ids.remove(&q.id);
        }
        if self.cache.len() >= MAX_CACHE && !self.cache.contains_key(key) {
            self.cache
                .retain(|_, c| c.fresh_until.max(c.stale_until) > now);
            if self.cache.len() >= MAX_CACHE
                && let Some(k) = self.cache.keys().next().cloned()
            {
                self.cache.remove(&k);
            }
        }
        let cached = match (a, self.cache.get(key)) {
            // a refresh that failed: the stale answer stays until its end, and the next
            // refresh waits (RFC 8767 §4's failure recheck)
            (None, Some(old)) if old.target.is_some() && old.stale_until > now => Cached {
                retry_at: until,
                ..*old
            },
            (None, _) => Cached {
                target: None,
                fresh_until: until,
                stale_until: until,
                retry_at: until,
            },
            (Some(_), _) => Cached {
                target: a,
                fresh_until: until,
                stale_until: until + STALE_MAX,
                retry_at: until,
            },
        };
        self.cache.insert(key.to_string(), cached);
        self.done.push_back((key.to_string(), cached.target));
    }

    /// Runs a lookup to its end with `t` as the network, one exchange per query (tests only;
    /// the registration thread never calls it).
    #[cfg(test)]
    pub fn resolve_with(
        &mut self,
        domain: &str,
        now: Instant,
        t: &mut Exchange<'_>,
    ) -> Result<Target, String> {
        let mut at = now;
        for _ in 0..(MAX_STEPS as u32 * QUERY_TRIES + 4) {
            match self.lookup(domain, now) {
                Lookup::Ready(a) => return Ok(a),
                Lookup::Failed => return Err(format!("DNS: no address for {domain}")),
                Lookup::Pending => {}
            }
            let mut answered = false;
            while let Some((server, q)) = self.poll_transmit() {
                if let Ok(r) = t(&q) {
                    self.handle_datagram(server, &r, now);
                    answered = true;
                }
            }
            if !answered {
                at += QUERY_TIMEOUT;
                self.handle_timeout(at);
            }
        }
        Err(format!("DNS: {domain}: no end"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53);

    /// A response to `q` carrying `answers` (type, rdata) with TTL 300, names uncompressed.
    fn respond(q: &[u8], answers: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] = 0x81;
        r[3] = 0x80;
        r[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
        for (t, rd) in answers {
            r.extend_from_slice(&[0xc0, 12]); // the question's name
            r.extend_from_slice(&t.to_be_bytes());
            r.extend_from_slice(&1u16.to_be_bytes());
            r.extend_from_slice(&300u32.to_be_bytes());
            r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
            r.extend_from_slice(rd);
        }
        r
    }

    fn name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    fn qname(q: &[u8]) -> (String, u16) {
        let (n, end) = read_name(q, 12).unwrap();
        (n, u16_at(q, end).unwrap())
    }

    /// NAPTR rdata: order, preference, flags, service, no regexp, replacement.
    fn naptr(order: u16, preference: u16, flags: &str, service: &str, to: &str) -> Vec<u8> {
        let mut rd = order.to_be_bytes().to_vec();
        rd.extend_from_slice(&preference.to_be_bytes());
        for s in [flags, service, ""] {
            rd.push(s.len() as u8);
            rd.extend_from_slice(s.as_bytes());
        }
        rd.extend(name(to));
        rd
    }

    /// SRV rdata: priority 10, weight 5, `port`, `target`.
    fn srv(port: u16, target: &str) -> Vec<u8> {
        let mut rd = vec![0, 10, 0, 5];
        rd.extend_from_slice(&port.to_be_bytes());
        rd.extend(name(target));
        rd
    }

    /// A zone for `ims.example`: the NAPTR records `naptrs`, an SRV record for each of `srvs`
    /// (its name → port 5060 at host `<n>.ims.example`, n its index), and an A record
    /// 10.0.1.<20 + n> for each of those hosts; every other question is answered empty.
    /// The questions asked are logged in `asked`.
    fn zone<'a>(
        naptrs: &'a [Vec<u8>],
        srvs: &'a [&'a str],
        asked: &'a mut Vec<(String, u16)>,
    ) -> impl FnMut(&[u8]) -> std::io::Result<Vec<u8>> + 'a {
        move |q: &[u8]| {
            let (n, ty) = qname(q);
            asked.push((n.clone(), ty));
            let host = |i: usize| format!("h{i}.ims.example");
            Ok(match ty {
                TYPE_NAPTR if n == "ims.example" => respond(
                    q,
                    &naptrs
                        .iter()
                        .map(|rd| (TYPE_NAPTR, rd.clone()))
                        .collect::<Vec<_>>(),
                ),
                TYPE_SRV => match srvs.iter().position(|s| *s == n) {
                    Some(i) => respond(q, &[(TYPE_SRV, srv(5060, &host(i)))]),
                    None => respond(q, &[]),
                },
                TYPE_A => match (0..srvs.len()).find(|i| host(*i) == n) {
                    Some(i) => respond(q, &[(TYPE_A, vec![10, 0, 1, 20 + i as u8])]),
                    None => respond(q, &[]),
                },
                _ => respond(q, &[]),
            })
        }
    }

    fn target(a: &str, transport: Transport) -> Target {
        Target {
            addr: a.parse().unwrap(),
            transport,
        }
    }

    const UDP_SRV: &str = "_sip._udp.icscf.ims.example";
    const TCP_SRV: &str = "_sip._tcp.icscf.ims.example";

    /// Resolves `ims.example` in [`zone`]; the target and the questions asked.
    fn resolve_in(
        naptrs: &[Vec<u8>],
        srvs: &[&str],
    ) -> (Result<Target, String>, Vec<(String, u16)>) {
        let mut asked = Vec::new();
        let mut t = zone(naptrs, srvs, &mut asked);
        let r = Resolver::new(Some(SERVER)).resolve_with("ims.example", Instant::now(), &mut t);
        drop(t);
        (r, asked)
    }

    #[test]
    fn naptr_srv_a_chain_and_cache() {
        // SIP+D2U has the lower order: only the UDP service is followed
        let naptrs = [
            naptr(10, 50, "s", "SIP+D2U", UDP_SRV),
            naptr(20, 50, "s", "SIP+D2T", TCP_SRV),
        ];
        let srvs = [UDP_SRV, TCP_SRV];
        let mut asked = Vec::new();
        let mut t = zone(&naptrs, &srvs, &mut asked);
        let mut r = Resolver::new(Some(SERVER));
        let now = Instant::now();
        let a = r.resolve_with("ims.example", now, &mut t).unwrap();
        assert_eq!(a, target("10.0.1.20:5060", Transport::Udp));
        let a2 = r
            .resolve_with("ims.example", now + Duration::from_secs(10), &mut t)
            .unwrap();
        assert_eq!(a2, a);
        drop(t);
        assert_eq!(
            asked.len(),
            3,
            "the second resolution came from the cache: {asked:?}"
        );
        assert!(
            asked.iter().all(|(n, _)| !n.contains("_tcp")),
            "only the UDP service is followed"
        );
    }

    #[test]
    fn d2t_with_the_lower_order_gives_tcp_and_the_cache_keeps_it() {
        // RFC 3263 §4.1: order decides before preference (D2U's better preference loses)
        let naptrs = [
            naptr(20, 10, "s", "SIP+D2U", UDP_SRV),
            naptr(10, 90, "s", "SIP+D2T", TCP_SRV),
        ];
        let srvs = [UDP_SRV, TCP_SRV];
        let mut asked = Vec::new();
        let mut t = zone(&naptrs, &srvs, &mut asked);
        let mut r = Resolver::new(Some(SERVER));
        let now = Instant::now();
        let a = r.resolve_with("ims.example", now, &mut t).unwrap();
        drop(t);
        let tcp = target("10.0.1.21:5060", Transport::Tcp);
        assert_eq!(a, tcp);
        assert_eq!(
            asked,
            [
                ("ims.example".to_string(), TYPE_NAPTR),
                (TCP_SRV.to_string(), TYPE_SRV),
                ("h1.ims.example".to_string(), TYPE_A),
            ]
        );
        assert_eq!(r.poll_done(), Some(("ims.example".into(), Some(tcp))));
        // the cache keeps the transport with the address
        let (queries, hits) = (r.stats.queries, r.stats.cache_hits);
        let later = now + Duration::from_secs(10);
        assert_eq!(r.lookup("ims.example", later), Lookup::Ready(tcp));
        assert_eq!(r.lookup("IMS.example.", later), Lookup::Ready(tcp));
        assert_eq!(r.stats.queries, queries);
        assert_eq!(r.stats.cache_hits, hits + 2);
    }

    #[test]
    fn equal_order_the_preference_decides() {
        let srvs = [UDP_SRV, TCP_SRV];
        let (a, _) = resolve_in(
            &[
                naptr(10, 60, "s", "SIP+D2U", UDP_SRV),
                naptr(10, 40, "s", "SIP+D2T", TCP_SRV),
            ],
            &srvs,
        );
        assert_eq!(a.unwrap(), target("10.0.1.21:5060", Transport::Tcp));
        let (a, _) = resolve_in(
            &[
                naptr(10, 60, "s", "SIP+D2T", TCP_SRV),
                naptr(10, 40, "s", "SIP+D2U", UDP_SRV),
            ],
            &srvs,
        );
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Udp));
    }

    #[test]
    fn sips_sctp_and_other_flags_are_ignored() {
        let sips = "_sips._tcp.icscf.ims.example";
        let sctp = "_sip._sctp.icscf.ims.example";
        let other = "_sip._tcp.other.ims.example";
        let (a, asked) = resolve_in(
            &[
                naptr(1, 1, "s", "SIPS+D2T", sips),
                naptr(2, 1, "s", "SIP+D2S", sctp),
                naptr(3, 1, "a", "SIP+D2T", other), // "a": an address record, not SRV
                naptr(4, 1, "s", "SIP+D2X", other),
                naptr(5, 1, "s", "E2U+sip", other),
                naptr(10, 50, "s", "sip+d2u", UDP_SRV), // case-insensitive
            ],
            &[sips, sctp, other, UDP_SRV],
        );
        assert_eq!(a.unwrap(), target("10.0.1.23:5060", Transport::Udp));
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert!(
            asked
                .iter()
                .all(|(n, _)| n != sips && n != sctp && n != other)
        );
    }

    #[test]
    fn a_naptr_whose_srv_fails_gives_way_to_the_next_with_its_transport() {
        // D2T first, but its SRV names nothing: D2U, and UDP with it
        let (a, asked) = resolve_in(
            &[
                naptr(10, 50, "s", "SIP+D2T", TCP_SRV),
                naptr(20, 50, "s", "SIP+D2U", UDP_SRV),
            ],
            &[UDP_SRV],
        );
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Udp));
        let names: Vec<_> = asked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ims.example", TCP_SRV, UDP_SRV, "h0.ims.example"]);
    }

    #[test]
    fn without_naptr_srv_for_udp_then_tcp() {
        let udp = "_sip._udp.ims.example";
        let tcp = "_sip._tcp.ims.example";
        // RFC 3263 §4.1: an SRV query per transport, ours first (UDP)
        let (a, asked) = resolve_in(&[], &[udp, tcp]);
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Udp));
        let names: Vec<_> = asked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ims.example", udp, "h0.ims.example"]);
        // no `_sip._udp`: `_sip._tcp` gives TCP
        let (a, asked) = resolve_in(&[], &[tcp]);
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Tcp));
        let names: Vec<_> = asked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ims.example", udp, tcp, "h0.ims.example"]);
        // NAPTR records of services we do not speak count as none
        let (a, _) = resolve_in(
            &[naptr(10, 50, "s", "SIPS+D2T", "_sips._tcp.ims.example")],
            &[tcp],
        );
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Tcp));
        // a NAPTR naming `_sip._udp.<domain>` has it asked once, not again as a fallback
        let (a, asked) = resolve_in(&[naptr(10, 50, "s", "SIP+D2U", udp)], &[tcp]);
        assert_eq!(a.unwrap(), target("10.0.1.20:5060", Transport::Tcp));
        let names: Vec<_> = asked.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ims.example", udp, tcp, "h0.ims.example"]);
    }

    #[test]
    fn a_hostile_answer_with_many_naptrs_stays_within_max_steps() {
        let names: Vec<String> = (0..100)
            .map(|i| format!("_sip._tcp.n{i}.ims.example"))
            .collect();
        let naptrs: Vec<Vec<u8>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let service = if i % 2 == 0 { "SIP+D2T" } else { "SIP+D2U" };
                naptr(i as u16, 0, "s", service, n)
            })
            .collect();
        // every SRV named answers nothing (but the last, which is never reached)
        let last = [names[99].as_str()];
        let mut asked = Vec::new();
        let mut t = zone(&naptrs, &last, &mut asked);
        let mut r = Resolver::new(Some(SERVER));
        assert!(
            r.resolve_with("ims.example", Instant::now(), &mut t)
                .is_err()
        );
        drop(t);
        assert_eq!(asked.len(), MAX_STEPS, "{asked:?}");
        assert_eq!(r.stats.queries, MAX_STEPS as u64);
        assert_eq!(r.in_flight(), 0);
        // in order: the lowest order first
        assert_eq!(asked[1].0, names[0]);
        assert_eq!(asked[MAX_STEPS - 1].0, names[MAX_STEPS - 2]);
    }

    #[test]
    fn falls_back_to_srv_then_a() {
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> {
            let (n, ty) = qname(q);
            Ok(match (n.as_str(), ty) {
                ("plain.example", TYPE_A) => respond(q, &[(TYPE_A, vec![192, 0, 2, 7])]),
                _ => respond(q, &[]),
            })
        };
        let mut r = Resolver::new(Some(SERVER));
        let a = r
            .resolve_with("plain.example", Instant::now(), &mut t)
            .unwrap();
        // RFC 3263 §4.1/§4.2: no NAPTR, no SRV: UDP to the domain's address at 5060
        assert_eq!(a, target("192.0.2.7:5060", Transport::Udp));
        assert_eq!(
            r.resolve_with("10.9.9.9", Instant::now(), &mut t).unwrap(),
            target("10.9.9.9:5060", Transport::Udp)
        );
    }

    #[test]
    fn garbage_responses_are_errors_not_panics() {
        for junk in [vec![], vec![0u8; 3], vec![0xff; 64], {
            let mut v = query(1, "x.example", TYPE_A);
            v[2] = 0x81;
            v[7] = 5; // five answers that are not there
            v
        }] {
            assert!(parse_response(&junk, 1, "x.example", TYPE_A).is_none_or(|a| a.is_empty()));
        }
        // a compression pointer loop
        let mut q = query(2, "x.example", TYPE_A);
        q[2] = 0x81;
        q[7] = 1;
        q.extend_from_slice(&[0xc0, (q.len()) as u8]);
        assert!(parse_response(&q, 2, "x.example", TYPE_A).is_none());
        let mut t = |_: &[u8]| -> std::io::Result<Vec<u8>> { Err(std::io::Error::other("down")) };
        assert!(
            Resolver::new(Some(SERVER))
                .resolve_with("a.example", Instant::now(), &mut t)
                .is_err()
        );
    }

    /// `respond` with every TTL set to `ttl`.
    fn with_ttl(mut r: Vec<u8>, ttl: u32) -> Vec<u8> {
        let (_, end) = read_name(&r, 12).unwrap();
        let mut pos = end + 4;
        while pos + 12 <= r.len() {
            r[pos + 6..pos + 10].copy_from_slice(&ttl.to_be_bytes());
            let rdlen = u16_at(&r, pos + 10).unwrap() as usize;
            pos += 12 + rdlen;
        }
        r
    }

    /// A plain domain: no NAPTR, no SRV, an A record with `ttl`.
    fn plain(q: &[u8], ttl: u32) -> Vec<u8> {
        match qname(q) {
            (n, TYPE_A) if n == "plain.example" => {
                with_ttl(respond(q, &[(TYPE_A, vec![192, 0, 2, 7])]), ttl)
            }
            _ => respond(q, &[]),
        }
    }

    #[test]
    fn answers_from_elsewhere_with_another_id_or_question_are_ignored() {
        let now = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        assert_eq!(r.lookup("plain.example", now), Lookup::Pending);
        let (to, q) = r.poll_transmit().unwrap();
        assert_eq!(to, SERVER);
        assert_eq!(qname(&q).1, TYPE_NAPTR);
        // an answer with records for our question, but from another address
        let elsewhere: SocketAddr = "192.0.2.66:53".parse().unwrap();
        r.handle_datagram(elsewhere, &respond(&q, &[]), now);
        // from the server, our question, another ID
        let mut wrong_id = respond(&q, &[]);
        wrong_id[0] ^= 0x55;
        r.handle_datagram(SERVER, &wrong_id, now);
        // from the server, our ID, another question (type A instead of NAPTR)
        let id = u16_at(&q, 0).unwrap();
        let other = respond(
            &query(id, "plain.example", TYPE_A),
            &[(TYPE_A, vec![6, 6, 6, 6])],
        );
        r.handle_datagram(SERVER, &other, now);
        let other_name = respond(&query(id, "evil.example", TYPE_NAPTR), &[]);
        r.handle_datagram(SERVER, &other_name, now);
        assert_eq!(r.stats.ignored, 4);
        assert!(r.poll_transmit().is_none(), "nothing moved on");
        assert_eq!(r.lookup("plain.example", now), Lookup::Pending);
        // the real answer, then the rest of the chain
        r.handle_datagram(SERVER, &plain(&q, 300), now);
        while let Some((_, q)) = r.poll_transmit() {
            r.handle_datagram(SERVER, &plain(&q, 300), now);
        }
        assert_eq!(
            r.poll_done(),
            Some((
                "plain.example".into(),
                Some(target("192.0.2.7:5060", Transport::Udp))
            ))
        );
        assert_eq!(
            r.lookup("plain.example", now),
            Lookup::Ready(target("192.0.2.7:5060", Transport::Udp))
        );
    }

    #[test]
    fn query_ids_are_random() {
        let now = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        let mut ids = Vec::new();
        for i in 0..16 {
            assert_eq!(r.lookup(&format!("d{i}.example"), now), Lookup::Pending);
            let (_, q) = r.poll_transmit().unwrap();
            ids.push(u16_at(&q, 0).unwrap());
        }
        let sequential = ids
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert!(sequential < 3, "{ids:?}");
    }

    #[test]
    fn ttls_are_clamped() {
        let t0 = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> { Ok(plain(q, u32::MAX)) };
        r.resolve_with("plain.example", t0, &mut t).unwrap();
        let later = t0 + TTL_MAX + Duration::from_secs(1);
        let queries = r.stats.queries;
        assert!(matches!(r.lookup("plain.example", later), Lookup::Ready(_)));
        assert!(
            r.stats.queries > queries && r.stats.stale_hits == 1,
            "a TTL of 136 years is kept at most TTL_MAX: past it the answer is refreshed"
        );
        let mut r = Resolver::new(Some(SERVER));
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> { Ok(plain(q, 0)) };
        r.resolve_with("plain.example", t0, &mut t).unwrap();
        let queries = r.stats.queries;
        assert!(matches!(
            r.lookup("plain.example", t0 + Duration::from_secs(1)),
            Lookup::Ready(_)
        ));
        assert_eq!(r.stats.queries, queries, "a TTL of 0 is kept TTL_MIN");
    }

    /// RFC 8767 §4: past its TTL an answer is still used while one refresh runs; the refresh
    /// replaces it; a failed refresh keeps it and is retried only after NEGATIVE_TTL; past
    /// STALE_MAX it is dropped.
    #[test]
    fn an_expired_answer_serves_while_it_is_refreshed() {
        let t0 = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> { Ok(plain(q, 60)) };
        let first = r.resolve_with("plain.example", t0, &mut t).unwrap();
        let _ = r.poll_done();
        let expired = t0 + Duration::from_secs(61);
        let queries = r.stats.queries;
        // a burst of lookups once it expired: all answered, one refresh sent
        for _ in 0..100 {
            assert_eq!(r.lookup("plain.example", expired), Lookup::Ready(first));
        }
        assert_eq!(r.stats.stale_hits, 100);
        let sent: Vec<_> = std::iter::from_fn(|| r.poll_transmit()).collect();
        assert_eq!(sent.len(), 1, "one refresh, not one per lookup");
        assert_eq!(r.stats.queries, queries + 1);
        // the refresh fails (the server is down: no answer to any try)
        let mut at = expired;
        while r.poll_done().is_none() {
            at += QUERY_TIMEOUT;
            r.handle_timeout(at);
            while r.poll_transmit().is_some() {}
        }
        assert_eq!(r.stats.failures, 1);
        let queries = r.stats.queries;
        assert_eq!(r.lookup("plain.example", at), Lookup::Ready(first));
        assert!(
            r.poll_transmit().is_none(),
            "no new refresh before NEGATIVE_TTL"
        );
        assert_eq!(r.stats.queries, queries);
        // after it, one more try; this one is answered and replaces the answer
        let retry = at + NEGATIVE_TTL;
        assert_eq!(r.lookup("plain.example", retry), Lookup::Ready(first));
        let mut asked = 0;
        while r.poll_done().is_none() && asked < MAX_STEPS {
            let (_, q) = r.poll_transmit().expect("the second refresh's next query");
            r.handle_datagram(SERVER, &plain(&q, 60), retry);
            asked += 1;
        }
        assert!(asked > 0, "a second refresh");
        let hits = r.stats.cache_hits;
        assert!(matches!(r.lookup("plain.example", retry), Lookup::Ready(_)));
        assert_eq!(r.stats.cache_hits, hits + 1, "fresh again");
        // an answer never refreshed is dropped STALE_MAX past its TTL
        let mut r = Resolver::new(Some(SERVER));
        let mut t = |q: &[u8]| -> std::io::Result<Vec<u8>> { Ok(plain(q, 60)) };
        r.resolve_with("plain.example", t0, &mut t).unwrap();
        let gone = t0 + Duration::from_secs(60) + STALE_MAX + Duration::from_secs(1);
        assert_eq!(r.lookup("plain.example", gone), Lookup::Pending);
    }

    #[test]
    fn a_failure_is_cached_and_costs_no_second_query() {
        let t0 = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        assert_eq!(r.lookup("nowhere.example", t0), Lookup::Pending);
        while let Some((_, q)) = r.poll_transmit() {
            let mut nx = respond(&q, &[]);
            nx[3] = 0x83; // NXDOMAIN
            r.handle_datagram(SERVER, &nx, t0);
        }
        assert_eq!(r.poll_done(), Some(("nowhere.example".into(), None)));
        let queries = r.stats.queries;
        assert_eq!(
            r.lookup("nowhere.example", t0 + Duration::from_secs(5)),
            Lookup::Failed
        );
        assert_eq!(
            r.lookup("NOWHERE.example.", t0 + Duration::from_secs(5)),
            Lookup::Failed
        );
        assert!(r.poll_transmit().is_none());
        assert_eq!(r.stats.queries, queries);
        assert_eq!(r.stats.negative_hits, 2);
        assert_eq!(
            r.lookup(
                "nowhere.example",
                t0 + NEGATIVE_TTL + Duration::from_secs(1)
            ),
            Lookup::Pending
        );
    }

    #[test]
    fn a_silent_server_fails_the_lookup_after_the_retries() {
        let t0 = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        assert_eq!(r.lookup("plain.example", t0), Lookup::Pending);
        let mut sent = 0;
        let mut now = t0;
        while r.poll_done().is_none() {
            while r.poll_transmit().is_some() {
                sent += 1;
            }
            now = r.poll_timeout().expect("a query in flight has a timer");
            r.handle_timeout(now);
            assert!(now - t0 < Duration::from_secs(5));
        }
        assert_eq!(sent, QUERY_TRIES);
        assert_eq!(r.lookup("plain.example", now), Lookup::Failed);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn resolutions_in_progress_are_bounded() {
        let now = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        for i in 0..MAX_IN_FLIGHT {
            assert_eq!(r.lookup(&format!("d{i}.example"), now), Lookup::Pending);
        }
        assert_eq!(r.lookup("one-more.example", now), Lookup::Failed);
        assert_eq!(r.stats.overloaded, 1);
        // a name already in progress is not a new resolution
        assert_eq!(r.lookup("d0.example", now), Lookup::Pending);
    }

    #[test]
    fn the_cache_is_bounded() {
        let now = Instant::now();
        let mut r = Resolver::new(Some(SERVER));
        for i in 0..MAX_CACHE + 10 {
            assert_eq!(r.lookup(&format!("d{i}.example"), now), Lookup::Pending);
            while let Some((_, q)) = r.poll_transmit() {
                r.handle_datagram(SERVER, &respond(&q, &[]), now);
            }
        }
        assert_eq!(r.cache.len(), MAX_CACHE);
        // expired entries go first
        let later = now + NEGATIVE_TTL + Duration::from_secs(1);
        assert_eq!(r.lookup("new.example", later), Lookup::Pending);
        while let Some((_, q)) = r.poll_transmit() {
            r.handle_datagram(SERVER, &respond(&q, &[]), later);
        }
        assert_eq!(r.cache.len(), 1);
    }
}
