//! `pcscf ctl`: the operator's commands to a running P-CSCF, sans-IO. A request is one line of
//! words; [`answer`] parses it ([`parse`]: a typed [`Command`] or a typed [`ParseError`]),
//! runs it against the registrar and the [`Host`] (what the daemon around it knows: the
//! workers' counters, the configuration, the log level) and renders the reply as aligned text
//! tables or, with `--json`, as JSON. The daemon carries the lines over its Unix socket
//! (`crate::daemon`, on the registration thread, the registrar's single owner); nothing here
//! touches a socket or a clock.
//!
//! The grammar (words separated by blanks; `--json` may come first):
//!
//! | request | what it does |
//! | --- | --- |
//! | `show registrations [IMPU\|IMPI]` | the bindings: UE address, SA sets with their role, SPIs, ports, algorithms and expiry, the asserted identity and the registered IMPUs (at most [`LIST_LIMIT`] without an identity) |
//! | `show sa SPI` | the set one of our inbound SPIs belongs to, with its four SAs: sequence numbers, replay window |
//! | `show dialogs` | the confirmed calls of the dialog book (at most [`LIST_LIMIT`]) |
//! | `show runtime` | per worker and per stage: packets, ns/packet, drops by reason; the registration thread's counters |
//! | `show config` | the configuration in force (TOML; it holds no secret: paths, never keys) |
//! | `deregister IMPU` | P-CSCF-initiated de-registration (TS 24.229 §5.2.5): the binding and its SAs end, the S-CSCF is told |
//! | `log level LEVEL` | error, warn, info or debug from now on |
//! | `help` | this list |
//!
//! What a UE sent (its IMPI, IMPUs, Contact) is shown with every byte outside printable ASCII
//! written `\xNN` (a backslash too), in the tables and in JSON alike: a registered identity
//! cannot put terminal escapes or bidirectional overrides on the operator's screen.
//!
//! The wire reply is a status line, `ok` or `error`, then the body; the daemon closes the
//! connection after it (`pcscf ctl` exits non-zero on `error`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::registrar::{BindingView, Deregistration, Registrar, SetRole, SetView};
use crate::config::{Config, LogLevel};
use crate::dataplane::{DropReason, WorkerStats};
use crate::satable::Direction;

/// The longest request line, its end included; a longer one is refused unread.
pub const MAX_REQUEST: usize = 4096;
/// The largest reply body: past it the reply is an error asking for a narrower question.
pub const MAX_REPLY: usize = 1 << 20;
/// Bindings or dialogs one listing shows at most (the registration thread builds the reply
/// between two passes of its loop: a listing of a million UEs would stall it).
pub const LIST_LIMIT: usize = 200;
/// A table cell shows at most this many characters (a UE's long Contact must not widen every
/// row of a listing past the reply's limit): the rest is cut, with `…`.
pub const MAX_CELL: usize = 96;

/// How a reply is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned text tables, for people.
    Table,
    /// JSON, for scripts.
    Json,
}

/// A command of the grammar (module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    /// With an identity: an IMPI or a registered IMPU.
    ShowRegistrations(Option<String>),
    ShowSa(u32),
    ShowDialogs,
    ShowRuntime,
    ShowConfig,
    Deregister(String),
    LogLevel(LogLevel),
}

/// A parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub format: Format,
    pub command: Command,
}

/// Why a request line is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but blanks.
    Empty,
    /// Longer than [`MAX_REQUEST`].
    TooLong,
    /// Not UTF-8, or a control character in it.
    NotText,
    /// No such command (the words that did not match).
    Unknown(String),
    /// The command needs this argument.
    Missing(&'static str),
    /// A word after a complete command.
    Extra(String),
    /// Not an SPI (decimal or 0x-hex, 1..=2^32-1).
    BadSpi(String),
    /// Not error, warn, info or debug.
    BadLevel(String),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Empty => write!(f, "empty request (try `help`)"),
            ParseError::TooLong => write!(f, "request longer than {MAX_REQUEST} bytes"),
            ParseError::NotText => write!(f, "the request is not printable text"),
            ParseError::Unknown(w) => write!(f, "unknown command {w:?} (try `help`)"),
            ParseError::Missing(what) => write!(f, "missing {what}"),
            ParseError::Extra(w) => write!(f, "unexpected {w:?} after the command"),
            ParseError::BadSpi(w) => write!(f, "{w:?} is not an SPI (decimal or 0x-hex)"),
            ParseError::BadLevel(w) => {
                write!(f, "{w:?} is not a log level (error, warn, info, debug)")
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// The command list `help` prints.
pub const HELP: &str = "\
show registrations [IMPU|IMPI]   bindings: UE address, SA sets, SPIs, ports, algorithms, expiry, identities
show sa SPI                      one of our inbound SPIs: its set's four SAs, sequence numbers, replay window
show dialogs                     the confirmed calls of the dialog book
show runtime                     per worker and stage: packets, ns/packet, drops by reason; the registrar's counters
show config                      the configuration in force
deregister IMPU                  end the registration here and tell the S-CSCF (TS 24.229 5.2.5)
log level LEVEL                  error | warn | info | debug
help                             this list
(--json before a command: JSON instead of tables)
";

/// Parse one request line (its line end already taken off).
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    if line.len() > MAX_REQUEST {
        return Err(ParseError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| ParseError::NotText)?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return Err(ParseError::NotText);
    }
    let mut words = text.split_ascii_whitespace().peekable();
    let mut format = Format::Table;
    while words.peek() == Some(&"--json") {
        words.next();
        format = Format::Json;
    }
    let first = words.next().ok_or(ParseError::Empty)?;
    let unknown = |a: &str, b: Option<&str>| {
        ParseError::Unknown(b.map_or_else(|| a.to_string(), |b| format!("{a} {b}")))
    };
    let command = match first {
        "help" => Command::Help,
        "show" => match words.next() {
            Some("registrations") => Command::ShowRegistrations(words.next().map(String::from)),
            Some("sa") => {
                let w = words.next().ok_or(ParseError::Missing("SPI"))?;
                Command::ShowSa(parse_spi(w).ok_or_else(|| ParseError::BadSpi(w.into()))?)
            }
            Some("dialogs") => Command::ShowDialogs,
            Some("runtime") => Command::ShowRuntime,
            Some("config") => Command::ShowConfig,
            Some(w) => return Err(unknown("show", Some(w))),
            None => return Err(ParseError::Missing("what to show (try `help`)")),
        },
        "deregister" => Command::Deregister(
            words
                .next()
                .ok_or(ParseError::Missing("IMPU (or IMPI)"))?
                .into(),
        ),
        "log" => match words.next() {
            Some("level") => {
                let w = words.next().ok_or(ParseError::Missing("LEVEL"))?;
                Command::LogLevel(parse_level(w).ok_or_else(|| ParseError::BadLevel(w.into()))?)
            }
            w => return Err(unknown("log", w)),
        },
        w => return Err(unknown(w, None)),
    };
    if let Some(w) = words.next() {
        return Err(ParseError::Extra(w.into()));
    }
    Ok(Request { format, command })
}

fn parse_spi(w: &str) -> Option<u32> {
    let v = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok()?,
        None => w.parse().ok()?,
    };
    (v != 0).then_some(v)
}

fn parse_level(w: &str) -> Option<LogLevel> {
    Some(match w {
        "error" => LogLevel::Error,
        "warn" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        _ => return None,
    })
}

fn level_name(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

/// One worker as [`Host::runtime`] reports it.
#[derive(Clone, Debug, Default)]
pub struct WorkerRuntime {
    /// The CPU core it is pinned to.
    pub core: usize,
    pub stats: WorkerStats,
    /// rx-to-tx latency (ns): p50, p99, max; None before the first sample.
    pub latency_ns: Option<[u64; 3]>,
}

/// What the daemon around the registrar measures (`show runtime`).
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    pub uptime: Duration,
    pub workers: Vec<WorkerRuntime>,
    /// CPU seconds the registration thread has used (user + system).
    pub registration_cpu_s: f64,
    /// Other counters of the daemon by section (the core-side TCP thread's, say).
    pub sections: Vec<(&'static str, Vec<(&'static str, u64)>)>,
}

/// What a command needs of the daemon besides the registrar.
pub trait Host {
    /// The configuration in force.
    fn config(&self) -> &Config;
    /// The workers' and the daemon's counters now.
    fn runtime(&self) -> Runtime;
    /// The log level from now on.
    fn set_log_level(&mut self, level: LogLevel);
    /// The log level in force.
    fn log_level(&self) -> LogLevel;
}

/// A reply: whether the command succeeded, and its body in the format asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    pub body: String,
}

impl Reply {
    fn error(format: Format, msg: impl std::fmt::Display) -> Reply {
        let body = match format {
            Format::Table => format!("{msg}\n"),
            Format::Json => json(&serde_json::json!({ "error": msg.to_string() })),
        };
        Reply { ok: false, body }
    }

    /// The bytes on the wire: `ok` or `error`, a line end, the body.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 8);
        out.extend_from_slice(if self.ok { b"ok\n" } else { b"error\n" });
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

/// Split a wire reply into its status and body (the client's side of [`Reply::to_wire`]);
/// None: no status line.
pub fn from_wire(bytes: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(bytes);
    let (status, body) = text.split_once('\n')?;
    let ok = match status {
        "ok" => true,
        "error" => false,
        _ => return None,
    };
    Some(Reply {
        ok,
        body: body.to_string(),
    })
}

/// Parse `line`, run it, render the reply (module doc).
pub fn answer(line: &[u8], registrar: &mut Registrar, host: &mut dyn Host, now: Instant) -> Reply {
    // the format is known even when the rest does not parse
    let format = if String::from_utf8_lossy(line)
        .split_ascii_whitespace()
        .next()
        == Some("--json")
    {
        Format::Json
    } else {
        Format::Table
    };
    let req = match parse(line) {
        Ok(r) => r,
        Err(e) => return Reply::error(format, e),
    };
    let reply = match run(&req, registrar, host, now) {
        Ok(body) => Reply { ok: true, body },
        Err(e) => Reply::error(req.format, e),
    };
    if reply.body.len() > MAX_REPLY {
        return Reply::error(
            req.format,
            format!("the reply is larger than {MAX_REPLY} bytes: ask for less (one identity)"),
        );
    }
    reply
}

fn run(
    req: &Request,
    registrar: &mut Registrar,
    host: &mut dyn Host,
    now: Instant,
) -> Result<String, String> {
    let f = req.format;
    match &req.command {
        Command::Help => Ok(match f {
            Format::Table => HELP.to_string(),
            Format::Json => json(&serde_json::json!({ "help": HELP })),
        }),
        Command::ShowRegistrations(id) => show_registrations(registrar, id.as_deref(), f, now),
        Command::ShowSa(spi) => show_sa(registrar, *spi, f, now),
        Command::ShowDialogs => Ok(show_dialogs(registrar, f)),
        Command::ShowRuntime => Ok(show_runtime(registrar, &host.runtime(), f)),
        Command::ShowConfig => show_config(host.config(), f),
        Command::Deregister(id) => deregister(registrar, id, f, now),
        Command::LogLevel(l) => {
            let was = host.log_level();
            host.set_log_level(*l);
            Ok(match f {
                Format::Table => {
                    format!("log level {} (was {})\n", level_name(*l), level_name(was))
                }
                Format::Json => json(&serde_json::json!({
                    "level": level_name(*l),
                    "was": level_name(was),
                })),
            })
        }
    }
}

/// What a UE (or anyone) sent, made safe to print: printable ASCII as it is, every other byte
/// and the backslash as `\xNN`.
pub fn printable(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(char::from(c));
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s
}

/// JSON for scripts: one compact line (listings stay within the reply's limit).
fn json<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string());
    s.push('\n');
    s
}

/// An identity as the operator typed it: what [`printable`] showed, `\xNN` read back as the
/// byte, so a UE whose identity needed escaping can be named.
pub fn unprintable(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && let Some(v) = b
                .get(i + 2..i + 4)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// A cell cut to [`MAX_CELL`] characters.
fn cell(s: String) -> String {
    if s.chars().count() <= MAX_CELL {
        return s;
    }
    let mut t: String = s.chars().take(MAX_CELL - 1).collect();
    t.push('…');
    t
}

/// An aligned text table: columns as wide as their widest cell, two blanks apart; a column
/// whose cells are all numbers (or `-`) is aligned right.
struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[&'static str]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(cell).collect());
    }

    fn render(&self, out: &mut String) {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|h| h.len()).collect();
        let mut numeric = vec![true; n];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                width[i] = width[i].max(c.chars().count());
                numeric[i] &= c == "-" || c.parse::<f64>().is_ok();
            }
        }
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, c) in cells.enumerate().take(n) {
                if i > 0 {
                    l.push_str("  ");
                }
                let pad = width[i].saturating_sub(c.chars().count());
                if numeric[i] {
                    l.extend(std::iter::repeat_n(' ', pad));
                    l.push_str(c);
                } else {
                    l.push_str(c);
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&mut self.head.iter().copied());
        for r in &self.rows {
            line(&mut r.iter().map(String::as_str));
        }
    }
}

#[derive(Serialize)]
struct SetOut {
    role: &'static str,
    ue: String,
    spi_pc: u32,
    spi_ps: u32,
    spi_uc: u32,
    spi_us: u32,
    port_pc: u16,
    port_ps: u16,
    port_uc: u16,
    port_us: u16,
    alg: &'static str,
    ealg: &'static str,
    /// Seconds until the set's SAs go.
    expires_in_s: u64,
}

impl SetOut {
    fn of(s: &SetView, now: Instant) -> SetOut {
        SetOut {
            role: s.role.name(),
            ue: s.ue.to_string(),
            spi_pc: s.spi_pc,
            spi_ps: s.spi_ps,
            spi_uc: s.spi_uc,
            spi_us: s.spi_us,
            port_pc: s.port_pc,
            port_ps: s.port_ps,
            port_uc: s.port_uc,
            port_us: s.port_us,
            alg: s.alg.token(),
            ealg: s.ealg.token(),
            expires_in_s: s.expires.saturating_duration_since(now).as_secs(),
        }
    }
}

#[derive(Serialize)]
struct RegistrationOut {
    impi: String,
    state: &'static str,
    contact: String,
    asserted: Option<String>,
    impus: Vec<String>,
    transactions: u32,
    dialogs: usize,
    sets: Vec<SetOut>,
}

impl RegistrationOut {
    fn of(b: &BindingView<'_>, now: Instant) -> RegistrationOut {
        RegistrationOut {
            impi: printable(b.impi),
            // no registration: being made (only challenges), or ended (its sets going)
            state: if b.registered {
                "registered"
            } else if b.sets.iter().any(|s| s.role != SetRole::Temporary) {
                "ending"
            } else {
                "registering"
            },
            contact: printable(b.contact),
            asserted: b.asserted.map(printable),
            impus: b.impus.iter().map(|u| printable(u)).collect(),
            transactions: b.in_flight,
            dialogs: b.dialogs,
            sets: b.sets.iter().map(|s| SetOut::of(s, now)).collect(),
        }
    }
}

#[derive(Serialize)]
struct RegistrationsOut {
    /// Bindings held in all.
    bindings: usize,
    registrations: Vec<RegistrationOut>,
}

fn show_registrations(
    registrar: &Registrar,
    id: Option<&str>,
    f: Format,
    now: Instant,
) -> Result<String, String> {
    let total = registrar.bindings_count();
    let mut regs: Vec<RegistrationOut> = match id {
        Some(id) => {
            // an IMPU several IMPIs registered shows them all
            let named = registrar.bindings_named(&unprintable(id));
            let views: Vec<_> = named
                .iter()
                .filter_map(|&b| registrar.binding_view_by_id(b))
                .take(LIST_LIMIT)
                .collect();
            if views.is_empty() {
                return Err(format!(
                    "no registration has identity {}",
                    printable(id.as_bytes())
                ));
            }
            views.iter().map(|b| RegistrationOut::of(b, now)).collect()
        }
        None => registrar
            .bindings_view(LIST_LIMIT)
            .iter()
            .map(|b| RegistrationOut::of(b, now))
            .collect(),
    };
    regs.sort_by(|a, b| a.impi.cmp(&b.impi));
    let out = RegistrationsOut {
        bindings: total,
        registrations: regs,
    };
    if f == Format::Json {
        return Ok(json(&out));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} binding(s){}",
        total,
        if id.is_none() && total > out.registrations.len() {
            format!(
                ", {} shown (name an IMPU or IMPI for one)",
                out.registrations.len()
            )
        } else {
            String::new()
        }
    );
    if out.registrations.is_empty() {
        return Ok(s);
    }
    let mut t = Table::new(&[
        "IMPI",
        "STATE",
        "UE",
        "SET",
        "SPI-PC",
        "SPI-PS",
        "SPI-UC",
        "SPI-US",
        "PORT-PC",
        "PORT-PS",
        "PORT-UC",
        "PORT-US",
        "ALG",
        "EALG",
        "EXPIRES-S",
    ]);
    for r in &out.registrations {
        if r.sets.is_empty() {
            let mut row = vec![r.impi.clone(), r.state.to_string()];
            row.extend(std::iter::repeat_n("-".to_string(), 13));
            t.row(row);
        }
        for set in &r.sets {
            t.row(vec![
                r.impi.clone(),
                r.state.to_string(),
                set.ue.clone(),
                set.role.to_string(),
                set.spi_pc.to_string(),
                set.spi_ps.to_string(),
                set.spi_uc.to_string(),
                set.spi_us.to_string(),
                set.port_pc.to_string(),
                set.port_ps.to_string(),
                set.port_uc.to_string(),
                set.port_us.to_string(),
                set.alg.to_string(),
                set.ealg.to_string(),
                set.expires_in_s.to_string(),
            ]);
        }
    }
    t.render(&mut s);
    s.push('\n');
    let mut t = Table::new(&[
        "IMPI",
        "ASSERTED",
        "IMPUS",
        "CONTACT",
        "TRANSACTIONS",
        "DIALOGS",
    ]);
    for r in &out.registrations {
        let dash = |v: &str| {
            if v.is_empty() {
                "-".into()
            } else {
                v.to_string()
            }
        };
        t.row(vec![
            r.impi.clone(),
            r.asserted.clone().unwrap_or_else(|| "-".into()),
            dash(&r.impus.join(",")),
            dash(&r.contact),
            r.transactions.to_string(),
            r.dialogs.to_string(),
        ]);
    }
    t.render(&mut s);
    Ok(s)
}

#[derive(Serialize)]
struct SaOut {
    direction: &'static str,
    spi: u32,
    /// Our port and the UE's of the SA's flow.
    local_port: u16,
    ue_port: u16,
    alg: &'static str,
    ealg: &'static str,
    /// Outbound: the last sequence number sent (= packets sent). Inbound: the highest
    /// received (packets received, at most).
    seq: u64,
    /// Inbound only: the replay window's size and how many of its numbers were received.
    window: Option<u32>,
    received_in_window: Option<u32>,
}

#[derive(Serialize)]
struct SaSetOut {
    impi: String,
    set: SetOut,
    sas: Vec<SaOut>,
    /// What the workers do not record per SA.
    not_measured: &'static str,
}

const SA_NOT_MEASURED: &str = "per-SA last use, byte counts and drops are not recorded (the \
workers count drops by reason per worker: show runtime); the sequence numbers show the traffic";

fn show_sa(registrar: &Registrar, spi: u32, f: Format, now: Instant) -> Result<String, String> {
    let d = registrar.sa_set_detail(spi).ok_or_else(|| {
        format!(
            "no inbound SA with SPI {spi} (show sa takes our SPIs, spi-pc or spi-ps of show \
             registrations; the UE's are not unique)"
        )
    })?;
    let sas: Vec<SaOut> = d
        .sas
        .iter()
        .map(|(dir, spi, lport, uport, sa)| {
            let inbound = *dir == Direction::In;
            SaOut {
                direction: if inbound { "in" } else { "out" },
                spi: *spi,
                local_port: *lport,
                ue_port: *uport,
                alg: sa.suite().integ().token(),
                ealg: sa.suite().enc().token(),
                seq: if inbound {
                    sa.highest_seq_received()
                } else {
                    sa.last_seq_sent()
                },
                window: inbound.then(|| sa.replay_window().size()),
                received_in_window: inbound.then(|| sa.replay_window().received_in_window()),
            }
        })
        .collect();
    let out = SaSetOut {
        impi: printable(d.binding.impi),
        set: SetOut::of(&d.set, now),
        sas,
        not_measured: SA_NOT_MEASURED,
    };
    if f == Format::Json {
        return Ok(json(&out));
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "SPI {spi}: {} set of {} at {}, {}/{}, expires in {} s",
        out.set.role, out.impi, out.set.ue, out.set.alg, out.set.ealg, out.set.expires_in_s
    );
    let mut t = Table::new(&[
        "DIR",
        "SPI",
        "LOCAL-PORT",
        "UE-PORT",
        "SEQ",
        "WINDOW",
        "RECEIVED-IN-WINDOW",
    ]);
    for a in &out.sas {
        let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        t.row(vec![
            a.direction.to_string(),
            a.spi.to_string(),
            a.local_port.to_string(),
            a.ue_port.to_string(),
            a.seq.to_string(),
            opt(a.window),
            opt(a.received_in_window),
        ]);
    }
    t.render(&mut s);
    let _ = writeln!(
        s,
        "SEQ: out, the last sequence number sent (packets sent); in, the highest received.\n{SA_NOT_MEASURED}."
    );
    Ok(s)
}

#[derive(Serialize)]
struct DialogOut {
    impi: String,
    direction: &'static str,
    call_id: String,
    caller: String,
    callee: String,
    next_hop: Option<String>,
}

#[derive(Serialize)]
struct DialogsOut {
    dialogs: usize,
    waiting_invites: usize,
    shown: Vec<DialogOut>,
}

fn show_dialogs(registrar: &Registrar, f: Format) -> String {
    let mut shown: Vec<DialogOut> = registrar
        .dialogs_view(LIST_LIMIT)
        .iter()
        .map(|l| DialogOut {
            impi: printable(l.impi),
            direction: if l.dialog.ue_is_caller {
                "originating"
            } else {
                "terminating"
            },
            call_id: printable(l.dialog.call_id),
            caller: printable(l.dialog.caller),
            callee: printable(l.dialog.callee),
            next_hop: l.dialog.next_hop.map(|a| a.to_string()),
        })
        .collect();
    shown.sort_by(|a, b| (&a.impi, &a.call_id).cmp(&(&b.impi, &b.call_id)));
    let out = DialogsOut {
        dialogs: registrar.dialogs(),
        waiting_invites: registrar.dialogs_waiting(),
        shown,
    };
    if f == Format::Json {
        return json(&out);
    }
    let mut s = format!(
        "{} dialog(s), {} INVITE(s) waiting for a final response{}\n",
        out.dialogs,
        out.waiting_invites,
        if out.dialogs > out.shown.len() {
            format!(", {} shown", out.shown.len())
        } else {
            String::new()
        }
    );
    if !out.shown.is_empty() {
        let mut t = Table::new(&[
            "IMPI",
            "DIRECTION",
            "CALL-ID",
            "CALLER",
            "CALLEE",
            "NEXT-HOP",
        ]);
        for d in &out.shown {
            t.row(vec![
                d.impi.clone(),
                d.direction.to_string(),
                d.call_id.clone(),
                d.caller.clone(),
                d.callee.clone(),
                d.next_hop.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        t.render(&mut s);
    }
    s
}

/// The stages of a worker's pipeline, in order, with their packet counters.
fn stages(w: &WorkerStats) -> [(&'static str, u64); 18] {
    [
        ("rx", w.rx),
        ("classify", w.classify),
        ("esp_in", w.esp_in),
        ("tcp_in", w.tcp_segments),
        ("sip", w.sip),
        ("forwarded", w.forwarded),
        ("punted", w.punted),
        ("replied", w.replied),
        ("dialog_events", w.dialog_events),
        ("injected", w.injected),
        ("handed_over", w.handed_over),
        ("stream_in", w.stream_in),
        ("stream_out", w.stream_out),
        ("core_stream_in", w.core_stream_in),
        ("core_stream_out", w.core_stream_out),
        ("esp_out", w.esp_out),
        ("tx", w.tx),
        ("dropped", w.dropped()),
    ]
}

#[derive(Serialize)]
struct WorkerOut {
    worker: usize,
    core: usize,
    batches: u64,
    rx: u64,
    tx: u64,
    /// Busy time per received packet (batch time over packets), ns.
    ns_per_packet: Option<u64>,
    latency_ns_p50: Option<u64>,
    latency_ns_p99: Option<u64>,
    latency_ns_max: Option<u64>,
    stages: Vec<(&'static str, u64)>,
    drops: Vec<(&'static str, u64)>,
    lost: Vec<(&'static str, u64)>,
}

#[derive(Serialize)]
struct RuntimeOut {
    uptime_s: f64,
    note: &'static str,
    workers: Vec<WorkerOut>,
    registration_thread_cpu_s: f64,
    registration_thread: Vec<(String, u64)>,
}

const RUNTIME_NOTE: &str = "per-stage time is not measured: NS/PKT is each worker's busy time \
(its batches) over the packets it received; the stages count packets";

fn show_runtime(registrar: &Registrar, rt: &Runtime, f: Format) -> String {
    let workers: Vec<WorkerOut> = rt
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let s = &w.stats;
            WorkerOut {
                worker: i,
                core: w.core,
                batches: s.batches,
                rx: s.rx,
                tx: s.tx,
                ns_per_packet: s.busy_ns.checked_div(s.rx),
                latency_ns_p50: w.latency_ns.map(|l| l[0]),
                latency_ns_p99: w.latency_ns.map(|l| l[1]),
                latency_ns_max: w.latency_ns.map(|l| l[2]),
                stages: stages(s).to_vec(),
                drops: DropReason::ALL
                    .iter()
                    .map(|&d| (d.name(), s.drops[d as usize]))
                    .filter(|&(_, n)| n > 0)
                    .collect(),
                lost: [
                    ("inject_dropped", s.inject_dropped),
                    ("dialog_events_lost", s.dialog_events_lost),
                ]
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .collect(),
            }
        })
        .collect();
    let mut reg: Vec<(String, u64)> = Vec::new();
    let mut section = |name: &str, named: &[(&'static str, u64)]| {
        for &(k, v) in named {
            if v > 0 {
                reg.push((format!("{name}.{k}"), v));
            }
        }
    };
    section("registrar", &registrar.stats.named());
    section("dns", &registrar.dns_stats().named());
    section("dialogs", &registrar.dialog_stats().named());
    section("reg_event", &registrar.reg_event_stats().named());
    for (name, named) in &rt.sections {
        section(name, named);
    }
    let st = registrar.sa_table_stats();
    reg.push(("bindings".into(), registrar.bindings_count() as u64));
    reg.push(("registrations".into(), registrar.registrations() as u64));
    reg.push(("dialogs".into(), registrar.dialogs() as u64));
    reg.push((
        "reg_event_subscriptions".into(),
        registrar.subscriptions() as u64,
    ));
    reg.push(("sa_table.inbound_live".into(), st.inbound_live as u64));
    reg.push(("sa_table.outbound_live".into(), st.outbound_live as u64));
    let out = RuntimeOut {
        uptime_s: rt.uptime.as_secs_f64(),
        note: RUNTIME_NOTE,
        workers,
        registration_thread_cpu_s: rt.registration_cpu_s,
        registration_thread: reg,
    };
    if f == Format::Json {
        return json(&out);
    }
    let mut s = format!("uptime {:.1} s; {RUNTIME_NOTE}\n", out.uptime_s);
    let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut t = Table::new(&[
        "WORKER",
        "CORE",
        "BATCHES",
        "RX",
        "TX",
        "NS/PKT",
        "LAT-P50-NS",
        "LAT-P99-NS",
        "LAT-MAX-NS",
    ]);
    for w in &out.workers {
        t.row(vec![
            w.worker.to_string(),
            w.core.to_string(),
            w.batches.to_string(),
            w.rx.to_string(),
            w.tx.to_string(),
            opt(w.ns_per_packet),
            opt(w.latency_ns_p50),
            opt(w.latency_ns_p99),
            opt(w.latency_ns_max),
        ]);
    }
    t.render(&mut s);
    s.push('\n');
    let mut t = Table::new(&["WORKER", "STAGE", "PACKETS"]);
    for w in &out.workers {
        for (name, n) in &w.stages {
            t.row(vec![w.worker.to_string(), name.to_string(), n.to_string()]);
        }
    }
    t.render(&mut s);
    s.push('\n');
    let mut t = Table::new(&["WORKER", "DROP-REASON", "PACKETS"]);
    for w in &out.workers {
        for (name, n) in w.drops.iter().chain(&w.lost) {
            t.row(vec![w.worker.to_string(), name.to_string(), n.to_string()]);
        }
    }
    if t.rows.is_empty() {
        s.push_str("no drops\n");
    } else {
        t.render(&mut s);
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "registration thread: {:.3} s of CPU",
        out.registration_thread_cpu_s
    );
    let mut t = Table::new(&["COUNTER", "VALUE"]);
    for (k, v) in &out.registration_thread {
        t.row(vec![k.clone(), v.to_string()]);
    }
    t.render(&mut s);
    s
}

fn show_config(cfg: &Config, f: Format) -> Result<String, String> {
    match f {
        Format::Json => serde_json::to_value(cfg)
            .map(|v| json(&v))
            .map_err(|e| format!("the configuration as JSON: {e}")),
        Format::Table => {
            toml::to_string(cfg).map_err(|e| format!("the configuration as TOML: {e}"))
        }
    }
}

fn deregister(
    registrar: &mut Registrar,
    id: &str,
    f: Format,
    now: Instant,
) -> Result<String, String> {
    let shown = printable(id.as_bytes());
    let identity = unprintable(id);
    let (impi, sets) = match registrar.binding_view_of(&identity) {
        Some(b) => (printable(b.impi), b.sets.len()),
        None => return Err(format!("no registration has identity {shown}")),
    };
    let told = match registrar.deregister(&identity, now) {
        Deregistration::Told => true,
        Deregistration::NotTold => false,
        Deregistration::NotFound => {
            return Err(format!(
                "{shown} is not registered (a registration in progress, or one ending)"
            ));
        }
        Deregistration::Ambiguous(impis) => {
            let list: Vec<String> = impis.iter().map(|i| printable(i)).collect();
            return Err(format!(
                "{shown} is registered by {} IMPIs: name one of them ({})",
                list.len(),
                list.join(", ")
            ));
        }
    };
    Ok(match f {
        Format::Json => json(&serde_json::json!({
            "deregistered": shown,
            "impi": impi,
            "sa_sets": sets,
            "s_cscf_told": told,
        })),
        Format::Table if told => format!(
            "deregistered {shown} (IMPI {impi}): its {sets} SA set(s) go within 2 s, its calls \
             are released; the S-CSCF is told (REGISTER with Expires: 0, TS 24.229 5.2.5)\n"
        ),
        Format::Table => format!(
            "deregistered {shown} (IMPI {impi}) here: its {sets} SA set(s) go within 2 s, its \
             calls are released; the S-CSCF could NOT be told (its IMPI or contact would not fit \
             our REGISTER): its registration there ends at its expiry\n"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Result<Command, ParseError> {
        parse(line.as_bytes()).map(|r| r.command)
    }

    #[test]
    fn the_grammar() {
        assert_eq!(cmd("help"), Ok(Command::Help));
        assert_eq!(
            cmd("show registrations"),
            Ok(Command::ShowRegistrations(None))
        );
        assert_eq!(
            cmd("  show\tregistrations  sip:a@b "),
            Ok(Command::ShowRegistrations(Some("sip:a@b".into())))
        );
        assert_eq!(cmd("show sa 4096"), Ok(Command::ShowSa(4096)));
        assert_eq!(cmd("show sa 0x1000"), Ok(Command::ShowSa(4096)));
        assert_eq!(cmd("show dialogs"), Ok(Command::ShowDialogs));
        assert_eq!(cmd("show runtime"), Ok(Command::ShowRuntime));
        assert_eq!(cmd("show config"), Ok(Command::ShowConfig));
        assert_eq!(
            cmd("deregister tel:+1555"),
            Ok(Command::Deregister("tel:+1555".into()))
        );
        assert_eq!(
            cmd("log level debug"),
            Ok(Command::LogLevel(LogLevel::Debug))
        );
        let r = parse(b"--json show runtime").unwrap();
        assert_eq!((r.format, r.command), (Format::Json, Command::ShowRuntime));
        assert_eq!(parse(b"show runtime").unwrap().format, Format::Table);
    }

    #[test]
    fn refusals_are_typed() {
        assert_eq!(cmd(""), Err(ParseError::Empty));
        assert_eq!(cmd(" --json "), Err(ParseError::Empty));
        assert_eq!(cmd("reboot"), Err(ParseError::Unknown("reboot".into())));
        assert_eq!(cmd("show sas"), Err(ParseError::Unknown("show sas".into())));
        assert_eq!(
            cmd("show"),
            Err(ParseError::Missing("what to show (try `help`)"))
        );
        assert_eq!(cmd("show sa"), Err(ParseError::Missing("SPI")));
        assert_eq!(cmd("show sa 0"), Err(ParseError::BadSpi("0".into())));
        assert_eq!(
            cmd("show sa 4294967296"),
            Err(ParseError::BadSpi("4294967296".into()))
        );
        assert_eq!(cmd("show sa -1"), Err(ParseError::BadSpi("-1".into())));
        assert_eq!(
            cmd("deregister"),
            Err(ParseError::Missing("IMPU (or IMPI)"))
        );
        assert_eq!(
            cmd("log level loud"),
            Err(ParseError::BadLevel("loud".into()))
        );
        assert_eq!(cmd("log"), Err(ParseError::Unknown("log".into())));
        assert_eq!(
            cmd("show runtime now"),
            Err(ParseError::Extra("now".into()))
        );
        assert_eq!(
            cmd("show registrations a b"),
            Err(ParseError::Extra("b".into()))
        );
        assert_eq!(cmd("show \x1b[2Jruntime"), Err(ParseError::NotText));
        assert_eq!(parse(b"show \xff"), Err(ParseError::NotText));
        assert_eq!(parse(&[b'a'; MAX_REQUEST + 1]), Err(ParseError::TooLong));
        // every refusal says something
        for e in [ParseError::Empty, ParseError::TooLong, ParseError::NotText] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn what_a_ue_sent_is_printed_harmless() {
        assert_eq!(printable(b"sip:alice@ims.test"), "sip:alice@ims.test");
        assert_eq!(printable(b"a\x1b[2Jb\\c"), "a\\x1b[2Jb\\x5cc");
        // a right-to-left override (U+202E) in UTF-8
        assert_eq!(printable("x\u{202e}y".as_bytes()), "x\\xe2\\x80\\xaey");
        assert_eq!(printable(b"\r\n\0\x7f"), "\\x0d\\x0a\\x00\\x7f");
    }

    #[test]
    fn tables_align_and_right_align_numbers() {
        let mut t = Table::new(&["NAME", "N"]);
        t.row(vec!["a".into(), "5".into()]);
        t.row(vec!["longer".into(), "123".into()]);
        t.row(vec!["x".into(), "-".into()]);
        let mut s = String::new();
        t.render(&mut s);
        assert_eq!(s, "NAME      N\na         5\nlonger  123\nx         -\n");
    }

    #[test]
    fn the_wire_reply_round_trips() {
        let r = Reply {
            ok: false,
            body: "no\nway\n".into(),
        };
        assert_eq!(r.to_wire(), b"error\nno\nway\n");
        assert_eq!(from_wire(&r.to_wire()), Some(r));
        assert_eq!(
            from_wire(b"ok\n"),
            Some(Reply {
                ok: true,
                body: String::new()
            })
        );
        assert_eq!(from_wire(b"maybe\n"), None);
        assert_eq!(from_wire(b"ok"), None);
        let e = Reply::error(Format::Json, "bad \"thing\"");
        let v: serde_json::Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["error"], "bad \"thing\"");
    }

    #[test]
    fn stages_are_named_once() {
        let names: std::collections::HashSet<_> = stages(&WorkerStats::default())
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names.len(), stages(&WorkerStats::default()).len());
    }
}
