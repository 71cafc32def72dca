//! The TOML configuration of `pcscf run`: its schema, defaults, and the checks made at start.
//!
//! Owns: turning a file into a [`Config`] or an error that names the bad key (serde reports
//! unknown keys and type errors with their path; [`Config::validate`] adds the semantic rules).
//! Nothing here touches the network.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::esp::{EncAlg, IntegAlg};

/// The commented example shipped with pcscf (`pcscf config-example`).
pub const EXAMPLE: &str = include_str!("example.toml");

/// The whole configuration. `pcscf ctl show config` prints every field (hence `Serialize`): a
/// secret must never be one (name a key's file, never its contents).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub ue: UeSide,
    pub core: CoreSide,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub ipsec: Ipsec,
    #[serde(default)]
    pub dataplane: Dataplane,
    #[serde(default)]
    pub stats: Stats,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub state: State,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UeSide {
    pub interface: String,
    pub addresses: Vec<IpAddr>,
    #[serde(default = "default_sip_port")]
    pub sip_port: u16,
    #[serde(default = "default_protected_ports")]
    pub protected_ports: String,
    /// Unprotected REGISTERs accepted per source address: a burst, then this many per second
    /// (more are dropped and counted). A phone sends one per registration attempt; raise these
    /// only where many UEs share one address (a lab, a load generator).
    #[serde(default = "default_register_burst")]
    pub register_burst_per_source: u32,
    #[serde(default = "default_register_rate")]
    pub register_rate_per_source: f64,
    /// The largest request sent to a UE in a datagram; a larger one, or one whose Request-URI
    /// says `;transport=tcp` (RFC 3263 §4.1), goes over TCP inside its SAs (RFC 3261 §18.1.1:
    /// 1,300 bytes when the path MTU is unknown). 65535: never TCP (UEs that cannot take it,
    /// such as a UDP-only load generator).
    #[serde(default = "default_max_udp_request")]
    pub max_udp_request: u16,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoreSide {
    pub interface: String,
    pub address: IpAddr,
    #[serde(default = "default_sip_port")]
    pub sip_port: u16,
    #[serde(default)]
    pub icscf: Option<SocketAddr>,
    /// DNS server for RFC 3263 resolution of the home domain (used when `icscf` is not set).
    #[serde(default)]
    pub dns: Option<SocketAddr>,
    /// The home network domains this P-CSCF serves: a REGISTER whose Request-URI names another
    /// domain (or an IP address) is refused with 403, so a UE cannot pick its own "home
    /// network". Required with `dns`; with a static `icscf` and no list, every domain goes to
    /// that I-CSCF.
    #[serde(default)]
    pub home_domains: Vec<String>,
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Home domains with an I-CSCF of their own (TS 24.229 §5.2.2.2): served as if listed in
    /// `home_domains`, and sent there rather than to `icscf` or by `dns`.
    #[serde(default)]
    pub icscf_by_domain: std::collections::BTreeMap<String, SocketAddr>,
    /// How the configured I-CSCFs (`icscf`, `icscf_by_domain`) take our REGISTERs: `udp` or
    /// `tcp`. One found by `dns` comes with its own (RFC 3263 §4.1).
    #[serde(default)]
    pub icscf_transport: crate::sip::Transport,
    /// The largest request sent to the core in a datagram; larger ones go over TCP (RFC 3261
    /// §18.1.1: 1,300 bytes when the path MTU is unknown). 65535: never by size (a core that
    /// takes only UDP).
    #[serde(default = "default_max_udp_request")]
    pub max_udp_request: u16,
    /// TCP connections with the core at most, both ways (we listen on `address`:`sip_port`).
    #[serde(default = "default_core_tcp_connections")]
    pub tcp_connections: usize,
    /// Subscribe to each registration's reg event at its S-CSCF (TS 24.229 §5.2.3), so that a
    /// network-initiated de-registration ends it here too. `false`: for a core that does not
    /// take SUBSCRIBE (registrations then end only by the UE or by expiry).
    #[serde(default = "default_true")]
    pub reg_event: bool,
}

fn default_true() -> bool {
    true
}

fn default_core_tcp_connections() -> usize {
    1024
}

impl CoreSide {
    /// Every home domain served: `home_domains` and the keys of `icscf_by_domain`. Empty:
    /// any domain name (only with a static `icscf`).
    pub fn served_domains(&self) -> Vec<String> {
        let mut all = self.home_domains.clone();
        for d in self.icscf_by_domain.keys() {
            if !all.iter().any(|h| h.eq_ignore_ascii_case(d)) {
                all.push(d.clone());
            }
        }
        all
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_vnid")]
    pub visited_network_id: String,
    #[serde(default = "default_ioi")]
    pub orig_ioi: String,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            visited_network_id: default_vnid(),
            orig_ioi: default_ioi(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ipsec {
    #[serde(default = "default_spi_range")]
    pub spi_range: String,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_replay_window")]
    pub replay_window: u32,
    /// Most inbound SAs at once (four SAs per UE registration, up to three sets while
    /// re-registering); sizes the SA table, allocated at start.
    #[serde(default = "default_max_sas")]
    pub max_sas: u32,
}

impl Default for Ipsec {
    fn default() -> Self {
        Ipsec {
            spi_range: default_spi_range(),
            algorithms: default_algorithms(),
            replay_window: default_replay_window(),
            max_sas: default_max_sas(),
        }
    }
}

/// The packet I/O backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Xdp,
    Afpacket,
    Socket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    Skb,
    Drv,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dataplane {
    #[serde(default = "default_backend")]
    pub backend: Backend,
    #[serde(default = "default_xdp_mode")]
    pub xdp_mode: XdpMode,
    #[serde(default = "default_workers")]
    pub workers: Vec<usize>,
    #[serde(default = "default_batch")]
    pub batch: usize,
    #[serde(default = "default_ring")]
    pub ring_size: u32,
    #[serde(default = "default_frames")]
    pub frames: u32,
    #[serde(default = "default_punt")]
    pub punt_queue: usize,
    /// Forward unprotected non-REGISTER requests statelessly to `core.icscf` instead of
    /// rejecting them (load tests and side-by-side comparisons only).
    #[serde(default)]
    pub stateless_relay: bool,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            backend: default_backend(),
            xdp_mode: default_xdp_mode(),
            workers: default_workers(),
            batch: default_batch(),
            ring_size: default_ring(),
            frames: default_frames(),
            punt_queue: default_punt(),
            stateless_relay: false,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    #[serde(default)]
    pub prometheus: Option<SocketAddr>,
}

/// Where the registration state is persisted (`daemon::state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// Registrations live in memory only: a restart costs every UE a re-registration.
    #[default]
    None,
    /// An embedded store in a local file (redb).
    File,
    /// A Redis server shared by a pair (or pool) of nodes.
    Redis,
}

/// The `[state]` section: write-through persistence of bindings and SA sets. `Debug` and
/// `Serialize` (`pcscf ctl show config`) leave a Redis URL's password out.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    #[serde(default)]
    pub backend: StateBackend,
    /// The store file (backend = "file"); created 0600.
    #[serde(default)]
    pub path: Option<std::path::PathBuf>,
    /// 32 random bytes (or 64 hex digits) that seal the stored records (AES-256-GCM); the file
    /// must be readable by its owner only. Required with any backend.
    #[serde(default)]
    pub seal_key_file: Option<std::path::PathBuf>,
    /// The Redis server (backend = "redis"): `redis://host:port/db` (`rediss://` for TLS is
    /// not built in).
    #[serde(default, serialize_with = "serialize_redacted")]
    pub redis_url: Option<String>,
    /// Prefix of this deployment's keys in Redis (nodes that share state use the same one).
    #[serde(default)]
    pub redis_prefix: Option<String>,
    /// How far ahead of an SA's last sequence number its persisted ceiling goes (tests make
    /// it small so that raises come often; at least 16).
    #[serde(default = "default_seq_step")]
    pub seq_step: u32,
}

/// A Redis URL with its credentials replaced, for logs, `Debug` and `pcscf ctl show config`:
/// the user-info of `redis://user:password@host` and the `pass` / `password` / `user`
/// parameters of the query (`unix:///path?pass=…`).
pub fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &base[..s], &base[at + 1..]),
        _ => base.to_string(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _))
                    if ["pass", "password", "user", "username"]
                        .iter()
                        .any(|n| k.eq_ignore_ascii_case(n)) =>
                {
                    format!("{k}=***")
                }
                _ => p.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn serialize_redacted<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_some(&redacted_url(u)),
        None => s.serialize_none(),
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("seal_key_file", &self.seal_key_file)
            .field("redis_url", &self.redis_url.as_deref().map(redacted_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("seq_step", &self.seq_step)
            .finish()
    }
}

/// `state.seq_step`'s default (`control::registrar::SEQ_STEP`).
pub const DEFAULT_SEQ_STEP: u32 = 1 << 16;

fn default_seq_step() -> u32 {
    DEFAULT_SEQ_STEP
}

impl Default for State {
    fn default() -> Self {
        State {
            backend: StateBackend::None,
            path: None,
            seal_key_file: None,
            redis_url: None,
            redis_prefix: None,
            seq_step: default_seq_step(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    #[serde(default = "default_level")]
    pub level: LogLevel,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_level(),
        }
    }
}

fn default_sip_port() -> u16 {
    5060
}
/// `ue.register_burst_per_source` when unset: unprotected REGISTERs one source address may send
/// at once (a phone needs 1; a NAT or a lab's shared address more).
pub const DEFAULT_REGISTER_BURST_PER_SOURCE: u32 = 20;
/// `ue.register_rate_per_source` when unset: the refill, REGISTERs per second.
pub const DEFAULT_REGISTER_RATE_PER_SOURCE: f64 = 5.0;

fn default_register_burst() -> u32 {
    DEFAULT_REGISTER_BURST_PER_SOURCE
}
fn default_register_rate() -> f64 {
    DEFAULT_REGISTER_RATE_PER_SOURCE
}
/// `ue.max_udp_request` when unset (RFC 3261 §18.1.1).
pub const DEFAULT_MAX_UDP_REQUEST: u16 = 1300;

fn default_max_udp_request() -> u16 {
    DEFAULT_MAX_UDP_REQUEST
}
fn default_protected_ports() -> String {
    "5100-5199".into()
}
fn default_hostname() -> String {
    "pcscf.invalid".into()
}
fn default_vnid() -> String {
    "\"Visited Network\"".into()
}
fn default_ioi() -> String {
    "pcscf.invalid".into()
}
fn default_spi_range() -> String {
    "4096-1048575".into()
}
fn default_algorithms() -> Vec<String> {
    [
        "null/aes-gcm",
        "hmac-sha-1-96/aes-cbc",
        "hmac-sha-1-96/null",
        "hmac-md5-96/aes-cbc",
        "hmac-md5-96/null",
    ]
    .map(String::from)
    .to_vec()
}
fn default_replay_window() -> u32 {
    64
}
fn default_max_sas() -> u32 {
    1 << 16
}
fn default_backend() -> Backend {
    Backend::Xdp
}
fn default_xdp_mode() -> XdpMode {
    XdpMode::Skb
}
fn default_workers() -> Vec<usize> {
    vec![0]
}
fn default_batch() -> usize {
    64
}
fn default_ring() -> u32 {
    2048
}
fn default_frames() -> u32 {
    8192
}
fn default_punt() -> usize {
    4096
}
fn default_level() -> LogLevel {
    LogLevel::Info
}

/// Upper bounds of the sizes allocated at start: a value beyond them would abort the process
/// in the allocator (or take the machine's memory) instead of being refused with the key's name.
/// `dataplane.frames`: frames per worker (4 KiB each, so 1 GiB per worker at most).
pub const MAX_FRAMES: u32 = 1 << 18;
/// `dataplane.punt_queue`: message buffers per queue (the punt queue, the dialog-event queue
/// and one inject queue per worker, each buffer a full SIP message).
pub const MAX_PUNT_QUEUE: usize = 1 << 15;
/// `dataplane.workers`: worker threads (each owns a backend with its rings and frames).
pub const MAX_WORKERS: usize = 256;

/// A configuration error: the key (dotted path) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn bad(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// Parse `"a-b"` into an inclusive range.
fn parse_range(key: &str, s: &str) -> Result<RangeInclusive<u64>, ConfigError> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| bad(key, format!("expected \"FIRST-LAST\", got {s:?}")))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| bad(key, format!("{x:?} is not a number")))
    };
    let (a, b) = (num(a)?, num(b)?);
    if a > b {
        return Err(bad(key, format!("{a} is greater than {b}")));
    }
    Ok(a..=b)
}

impl Config {
    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad("", format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parse and validate configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message names the key path and the line; keep it whole.
            bad("", e.to_string().trim_end().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The semantic rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.control.check()?;
        if self.ue.interface.is_empty() {
            return Err(bad("ue.interface", "must not be empty"));
        }
        if self.core.interface.is_empty() {
            return Err(bad("core.interface", "must not be empty"));
        }
        // connection ids carry a 16-bit slot (`daemon::core_tcp`)
        if !(1..=65536).contains(&self.core.tcp_connections) {
            return Err(bad("core.tcp_connections", "must be 1 to 65536"));
        }
        if self.ue.register_burst_per_source == 0
            || !(self.ue.register_rate_per_source > 0.0 && self.ue.register_rate_per_source <= 1e7)
        {
            return Err(bad(
                "ue.register_rate_per_source",
                "burst >= 1 and a rate in (0, 10000000] per second",
            ));
        }
        if self.core.icscf.is_none() && self.core.dns.is_some() && self.core.home_domains.is_empty()
        {
            return Err(bad(
                "core.home_domains",
                "list the home domains this P-CSCF serves: with core.dns, a UE would otherwise choose which network (and I-CSCF) authenticates it",
            ));
        }
        if let Some(d) = self.core.served_domains().iter().find(|d| {
            d.is_empty()
                || d.trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .is_ok()
        }) {
            return Err(bad(
                "core.home_domains",
                format!("{d:?} is not a domain name"),
            ));
        }
        if self.core.icscf.is_none() && self.core.dns.is_none() {
            if self.core.icscf_by_domain.is_empty() {
                return Err(bad(
                    "core.icscf",
                    "set core.icscf (a static I-CSCF), core.dns (resolve the home domain, RFC 3263) or core.icscf_by_domain",
                ));
            }
            // only the domains given an I-CSCF can be served
            if let Some(d) = self.core.home_domains.iter().find(|d| {
                !self
                    .core
                    .icscf_by_domain
                    .keys()
                    .any(|k| k.eq_ignore_ascii_case(d))
            }) {
                return Err(bad(
                    "core.home_domains",
                    format!(
                        "{d:?} has no I-CSCF: add it to core.icscf_by_domain, or set core.icscf or core.dns"
                    ),
                ));
            }
        }
        if self.ue.addresses.is_empty() {
            return Err(bad("ue.addresses", "needs at least one address"));
        }
        match self.state.backend {
            StateBackend::None => {}
            StateBackend::File if self.state.path.is_none() => {
                return Err(bad("state.path", "backend \"file\" needs the store's path"));
            }
            StateBackend::Redis if self.state.redis_url.is_none() => {
                return Err(bad(
                    "state.redis_url",
                    "backend \"redis\" needs the server's URL",
                ));
            }
            _ if self.state.seal_key_file.is_none() => {
                return Err(bad(
                    "state.seal_key_file",
                    "the store holds ESP keys: name the file of the key that seals them",
                ));
            }
            _ if self.state.seq_step < 16 => {
                return Err(bad("state.seq_step", "at least 16"));
            }
            _ => {}
        }
        let ports = self.protected_ports()?;
        if ports.contains(&self.ue.sip_port) {
            return Err(bad(
                "ue.protected_ports",
                format!("must not include ue.sip_port ({})", self.ue.sip_port),
            ));
        }
        if ports.len() < 2 {
            return Err(bad(
                "ue.protected_ports",
                "needs at least two ports (port-c and port-s)",
            ));
        }
        let spis = self.spi_range()?;
        if *spis.start() < 256 {
            return Err(bad(
                "ipsec.spi_range",
                "SPIs 0-255 are reserved (RFC 4303 §2.1): start at 256 or above",
            ));
        }
        if *spis.end() > u32::MAX as u64 {
            return Err(bad("ipsec.spi_range", "SPIs are 32-bit"));
        }
        if spis.end() - spis.start() < 1 {
            return Err(bad("ipsec.spi_range", "needs at least two SPIs"));
        }
        self.algorithms()?;
        if !(16..=1 << 24).contains(&self.ipsec.max_sas) {
            return Err(bad("ipsec.max_sas", "must be within 16..=16777216"));
        }
        let slots = self.ipsec.max_sas.next_power_of_two() as u64;
        if spis.end() - spis.start() + 1 < 2 * slots {
            return Err(bad(
                "ipsec.spi_range",
                format!(
                    "must hold at least twice ipsec.max_sas rounded up ({} SPIs)",
                    2 * slots
                ),
            ));
        }
        if !(64..=1024).contains(&self.ipsec.replay_window) {
            return Err(bad("ipsec.replay_window", "must be within 64..=1024"));
        }
        let dp = &self.dataplane;
        if dp.workers.is_empty() {
            return Err(bad("dataplane.workers", "needs at least one core"));
        }
        if dp.workers.len() > MAX_WORKERS {
            return Err(bad(
                "dataplane.workers",
                format!("at most {MAX_WORKERS} workers"),
            ));
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if let Some(c) = dp.workers.iter().find(|&&c| c >= cores) {
            return Err(bad(
                "dataplane.workers",
                format!("core {c} does not exist (this machine has {cores})"),
            ));
        }
        if !(32..=256).contains(&dp.batch) {
            return Err(bad("dataplane.batch", "must be within 32..=256"));
        }
        if !dp.ring_size.is_power_of_two() || !(64..=65536).contains(&dp.ring_size) {
            return Err(bad(
                "dataplane.ring_size",
                "must be a power of two within 64..=65536",
            ));
        }
        if dp.frames > MAX_FRAMES {
            return Err(bad(
                "dataplane.frames",
                format!("must be at most {MAX_FRAMES} (each frame is 4 KiB, mapped at start)"),
            ));
        }
        if dp.frames < 2 * dp.ring_size {
            return Err(bad(
                "dataplane.frames",
                "must be at least twice dataplane.ring_size",
            ));
        }
        if dp.backend == Backend::Socket && dp.workers.len() > 1 {
            return Err(bad(
                "dataplane.workers",
                "the socket backend runs one worker",
            ));
        }
        if dp.stateless_relay && self.core.icscf.is_none() {
            return Err(bad(
                "dataplane.stateless_relay",
                "needs core.icscf (where to relay to)",
            ));
        }
        if !(1..=MAX_PUNT_QUEUE).contains(&dp.punt_queue) {
            return Err(bad(
                "dataplane.punt_queue",
                format!(
                    "must be within 1..={MAX_PUNT_QUEUE} (each slot is a message buffer allocated at start)"
                ),
            ));
        }
        Ok(())
    }

    pub fn protected_ports(&self) -> Result<RangeInclusive<u16>, ConfigError> {
        let key = "ue.protected_ports";
        let r = parse_range(key, &self.ue.protected_ports)?;
        if *r.start() == 0 || *r.end() > u16::MAX as u64 {
            return Err(bad(key, "ports are 1..=65535"));
        }
        Ok(*r.start() as u16..=*r.end() as u16)
    }

    pub fn spi_range(&self) -> Result<RangeInclusive<u64>, ConfigError> {
        parse_range("ipsec.spi_range", &self.ipsec.spi_range)
    }

    /// The (alg, ealg) preference list.
    pub fn algorithms(&self) -> Result<Vec<(IntegAlg, EncAlg)>, ConfigError> {
        let key = "ipsec.algorithms";
        if self.ipsec.algorithms.is_empty() {
            return Err(bad(key, "needs at least one alg/ealg pair"));
        }
        self.ipsec
            .algorithms
            .iter()
            .map(|s| {
                let (a, e) = s
                    .split_once('/')
                    .ok_or_else(|| bad(key, format!("{s:?}: expected \"ALG/EALG\"")))?;
                let alg = IntegAlg::from_token(a.as_bytes())
                    .ok_or_else(|| bad(key, format!("{s:?}: unknown alg {a:?}")))?;
                let ealg = EncAlg::from_token(e.as_bytes())
                    .ok_or_else(|| bad(key, format!("{s:?}: unknown ealg {e:?}")))?;
                // TS 33.203 Annex I: only the pairs the ESP module implements (e.g. alg=null
                // only with aes-gcm, aes-gmac only with ealg=null).
                crate::esp::Suite::new(alg, ealg)
                    .map_err(|_| bad(key, format!("{s:?}: not a valid TS 33.203 combination")))?;
                Ok((alg, ealg))
            })
            .collect()
    }
}

/// `[control]`: the local control socket that `pcscf ctl` talks to (`crate::daemon` serves it on
/// the registration thread; `crate::control::ctl` is its grammar).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The Unix socket's path. Its directory is created 0700 when missing and must otherwise
    /// belong to us (or root) and be writable by nobody else; the socket is made 0600 and only
    /// root or our own user may talk to it (checked per connection, SO_PEERCRED).
    #[serde(default = "default_control_socket")]
    pub socket: std::path::PathBuf,
}

/// `control.socket` when unset.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/pcscf/ctl.sock";

fn default_control_socket() -> std::path::PathBuf {
    DEFAULT_CONTROL_SOCKET.into()
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_control_socket(),
        }
    }
}

impl Control {
    /// An absolute path that fits a `sockaddr_un` (107 bytes and the NUL), naming a file in a
    /// directory (not `/` itself).
    fn check(&self) -> Result<(), ConfigError> {
        use std::os::unix::ffi::OsStrExt;
        let key = "control.socket";
        let p = &self.socket;
        if !p.is_absolute() || p.file_name().is_none() || p.parent().is_none() {
            return Err(bad(
                key,
                format!("{p:?}: an absolute path to a file is needed"),
            ));
        }
        if p.as_os_str().as_bytes().len() > 107 {
            return Err(bad(key, "at most 107 bytes (sockaddr_un)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.ue.sip_port, 5060);
        assert_eq!(c.protected_ports().unwrap(), 5100..=5199);
        assert_eq!(c.algorithms().unwrap()[0], (IntegAlg::Null, EncAlg::AesGcm));
        assert_eq!(c.dataplane.backend, Backend::Xdp);
    }

    fn err_key(text: &str) -> String {
        let e = Config::parse(text).unwrap_err();
        format!("{e}")
    }

    #[test]
    fn sizes_have_upper_bounds() {
        let base = EXAMPLE.replacen(
            "workers = [0]",
            &format!("workers = [{}]", vec!["0"; MAX_WORKERS + 1].join(",")),
            1,
        );
        let msg = err_key(&base);
        assert!(msg.contains("dataplane.workers"), "{msg}");
        // the bounds themselves are accepted
        let ok = EXAMPLE
            .replacen("frames = 8192", &format!("frames = {MAX_FRAMES}"), 1)
            .replacen(
                "punt_queue = 4096",
                &format!("punt_queue = {MAX_PUNT_QUEUE}"),
                1,
            );
        Config::parse(&ok).unwrap();
    }

    #[test]
    fn home_domains_with_their_own_icscf() {
        let base = EXAMPLE
            .replacen("# [core.icscf_by_domain]", "[core.icscf_by_domain]", 1)
            .replacen(
                "# \"ims.mnc002.mcc001.3gppnetwork.org\" = ",
                "\"ims.mnc002.mcc001.3gppnetwork.org\" = ",
                1,
            );
        let c = Config::parse(&base).unwrap();
        assert_eq!(
            c.core.served_domains(),
            [
                "ims.mnc001.mcc001.3gppnetwork.org",
                "ims.mnc002.mcc001.3gppnetwork.org"
            ]
        );
        // without icscf or dns, each served domain needs its own I-CSCF
        let no_default = base.replacen("icscf = \"10.0.1.20:5060\"", "# icscf", 1);
        assert!(err_key(&no_default).contains("core.home_domains"));
        let only_mapped = no_default.replacen(
            "home_domains = [\"ims.mnc001.mcc001.3gppnetwork.org\"]",
            "home_domains = []",
            1,
        );
        let c = Config::parse(&only_mapped).unwrap();
        assert_eq!(
            c.core.served_domains(),
            ["ims.mnc002.mcc001.3gppnetwork.org"]
        );
        let ip = base.replacen(
            "\"ims.mnc002.mcc001.3gppnetwork.org\" = ",
            "\"10.9.9.9\" = ",
            1,
        );
        assert!(err_key(&ip).contains("core.home_domains"));
    }

    #[test]
    fn errors_name_the_key() {
        let base = EXAMPLE;
        let cases = [
            ("batch = 64", "batch = 7", "dataplane.batch"),
            (
                "replay_window = 64",
                "replay_window = 9",
                "ipsec.replay_window",
            ),
            (
                "spi_range = \"4096-1048575\"",
                "spi_range = \"1-100\"",
                "ipsec.spi_range",
            ),
            (
                "protected_ports = \"5100-5199\"",
                "protected_ports = \"5000-5100\"",
                "ue.protected_ports",
            ),
            ("backend = \"xdp\"", "backend = \"dpdk\"", "backend"),
            (
                "home_domains = [\"ims.mnc001.mcc001.3gppnetwork.org\"]",
                "home_domains = [\"10.0.1.20\"]",
                "core.home_domains",
            ),
            (
                "icscf = \"10.0.1.20:5060\"              # a static I-CSCF; or leave it out and set dns:\n# dns = \"10.0.1.53:53\"                # resolve the home domain: NAPTR -> SRV -> A/AAAA (RFC 3263)\nhome_domains = [\"ims.mnc001.mcc001.3gppnetwork.org\"]",
                "dns = \"10.0.1.53:53\"",
                "core.home_domains",
            ),
            (
                "ring_size = 2048",
                "ring_size = 1000",
                "dataplane.ring_size",
            ),
            ("workers = [0]", "workers = [4096]", "dataplane.workers"),
            ("level = \"info\"", "level = \"chatty\"", "level"),
            (
                "sip_port = 5060                       # unprotected",
                "sip_prot = 5060 # typo",
                "sip_prot",
            ),
            ("\"null/aes-gcm\"", "\"null/aes-cbc\"", "ipsec.algorithms"),
            ("frames = 8192", "frames = 4294967295", "dataplane.frames"),
            ("frames = 8192", "frames = 262145", "dataplane.frames"),
            (
                "punt_queue = 4096",
                "punt_queue = 9223372036854775807",
                "dataplane.punt_queue",
            ),
            (
                "punt_queue = 4096",
                "punt_queue = 32769",
                "dataplane.punt_queue",
            ),
            ("max_sas = 65536", "max_sas = 4294967295", "ipsec.max_sas"),
        ];
        for (from, to, key) in cases {
            assert!(base.contains(from), "{from}");
            let msg = err_key(&base.replacen(from, to, 1));
            assert!(msg.contains(key), "{to}: {msg}");
        }
    }

    #[test]
    fn the_control_socket() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.control.socket, Path::new(DEFAULT_CONTROL_SOCKET));
        let without = EXAMPLE.replacen("[control]\nsocket = \"/run/pcscf/ctl.sock\"", "", 1);
        assert_ne!(without, EXAMPLE);
        let c = Config::parse(&without).unwrap();
        assert_eq!(c.control.socket, Path::new(DEFAULT_CONTROL_SOCKET));
        let long = format!("/run/{}", "x".repeat(103));
        for bad in ["ctl.sock", "/", &long] {
            let msg = err_key(&EXAMPLE.replacen(
                "socket = \"/run/pcscf/ctl.sock\"",
                &format!("socket = {bad:?}"),
                1,
            ));
            assert!(msg.contains("control.socket"), "{bad}: {msg}");
        }
        // `pcscf ctl show config` prints what was parsed, and it parses again the same (a
        // table among the keys of [core] included)
        let full = EXAMPLE
            .replacen("# [core.icscf_by_domain]", "[core.icscf_by_domain]", 1)
            .replacen(
                "# \"ims.mnc002.mcc001.3gppnetwork.org\" = ",
                "\"ims.mnc002.mcc001.3gppnetwork.org\" = ",
                1,
            )
            .replacen("# prometheus", "prometheus", 1);
        for text in [EXAMPLE, &full] {
            let c = Config::parse(text).unwrap();
            let shown = toml::to_string(&c).unwrap();
            let again = Config::parse(&shown).unwrap_or_else(|e| panic!("{e}:\n{shown}"));
            assert_eq!(format!("{again:?}"), format!("{c:?}"));
        }
    }

    /// No Redis credential reaches a log, `Debug` or `pcscf ctl show config`.
    #[test]
    fn redis_credentials_are_never_shown() {
        for (url, secret) in [
            ("redis://:s3cret@10.0.0.1:6379/0", "s3cret"),
            ("redis://admin:s3cret@host/1", "s3cret"),
            ("redis+unix:///run/redis.sock?db=0&pass=s3cret", "s3cret"),
            (
                "unix:///run/redis.sock?password=s3cret&user=admin",
                "s3cret",
            ),
        ] {
            let r = redacted_url(url);
            assert!(!r.contains(secret), "{url} -> {r}");
            let st = State {
                backend: StateBackend::Redis,
                redis_url: Some(url.into()),
                ..State::default()
            };
            assert!(!format!("{st:?}").contains(secret));
            let toml = toml::to_string(&st).unwrap();
            assert!(!toml.contains(secret), "{toml}");
        }
        assert_eq!(
            redacted_url("redis://10.0.0.1:6379/0"),
            "redis://10.0.0.1:6379/0"
        );
    }
}
