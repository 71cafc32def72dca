//! SIPp (Debian's sip-tester) around `pcscf run` in a [`Lab`](pcscf::lab::Lab): starting
//! it in a namespace with its error file where the test can read it, and the core-side check
//! "no Route names the P-CSCF" as a POSIX regular expression that SIPp itself evaluates.
//!
//! Why the expression is written into a copy of the scenario rather than passed with `-key` /
//! `-set`: SIPp 3.6 does not substitute keywords or variables in `<ereg regexp=…>` (a regexp
//! `[re]` with `-key re …` is compiled as the character class `[re]`, tried here), so the test
//! instantiates `@ROUTE_NAMES_PCSCF@` in the scenario template with the lab's addresses.
//!
//! SIPp 3.6 traps handled here: a failed `<ereg check_it…>` marks the call failed but does NOT
//! stop the scenario (the 401 and 200 still go out, so the registration succeeds), and only the
//! first failed check of a message is logged; [`SippRun::finish`] returns the error file
//! (`-trace_err -error_file`) and callers require it empty as well as exit 0; header lookups with
//! `search_in="hdr"` see only the first occurrence and are case-sensitive, so the Route check
//! searches the whole message (`search_in="msg"`); backslashes in attribute values are eaten by
//! its XML reader, so the expression escapes with bracket expressions (`[.]`) only.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::hex;

/// Fail loudly when sipp is missing: CI installs it (`.ci/run`), a test never skips.
pub fn require_sipp() {
    let ok = Command::new("sipp")
        .arg("-v")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("SIPp"));
    assert!(
        ok,
        "sipp (Debian package sip-tester) is required; .ci/run installs it"
    );
}

/// `s` matched case-insensitively, every character outside letters/digits as a bracket
/// expression (no backslashes: SIPp's XML reader eats them). Hosts, ports and URIs are safe in
/// it; `s` must not hold `^`, `]` or `\\` (they would not be literal in a bracket).
pub fn literal_ci(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphabetic() {
            out.push('[');
            out.push(c.to_ascii_lowercase());
            out.push(c.to_ascii_uppercase());
            out.push(']');
        } else if c.is_ascii_digit() {
            out.push(c);
        } else {
            out.push('[');
            out.push(c);
            out.push(']');
        }
    }
    out
}

/// One 16-bit group of an IPv6 address in any case and with optional leading zeros.
fn v6_group(g: u16) -> String {
    let h = format!("{g:x}");
    let zeros = 4 - h.len();
    let lead = if g == 0 {
        // "0", "00", "000" or "0000"
        return "0{1,4}".into();
    } else if zeros > 0 {
        format!("0{{0,{zeros}}}")
    } else {
        String::new()
    };
    format!("{lead}{}", literal_ci(&h))
}

/// Every text form of `a` (RFC 4291 §2.2): each group with or without leading zeros, any case,
/// and "::" in place of any one run of zero groups (RFC 5952's canonical form among them).
pub fn v6_forms(a: Ipv6Addr) -> Vec<String> {
    let g = a.segments();
    let join = |r: std::ops::Range<usize>| {
        g[r].iter()
            .map(|&x| v6_group(x))
            .collect::<Vec<_>>()
            .join("[:]")
    };
    let mut forms = vec![join(0..8)];
    for i in 0..8 {
        for j in i + 1..=8 {
            if g[i..j].iter().all(|&x| x == 0) {
                forms.push(format!("{}[:][:]{}", join(0..i), join(j..8)));
            }
        }
    }
    forms
}

/// A POSIX extended regular expression (glibc's, as SIPp compiles it) that matches a SIP
/// message with a Route header (any case, folded or not, any entry of a comma-separated list)
/// whose URI (`sip:`/`sips:`, any user part) has one of `addrs` (IPv6 in brackets, every form)
/// or `names` (any case, a trailing dot allowed) as its host — whatever the port or parameters:
/// nothing else listens on our addresses, so any port of ours names us.
pub fn route_names_us_regex(addrs: &[IpAddr], names: &[&str]) -> String {
    // a character that cannot continue a host name or IPv4 address
    const END: &str = "[^-.0-9A-Za-z]";
    let mut hosts: Vec<String> = names
        .iter()
        .map(|n| format!("{}[.]?{END}", literal_ci(n)))
        .collect();
    for a in addrs {
        match a {
            IpAddr::V4(v4) => hosts.push(format!("{}{END}", literal_ci(&v4.to_string()))),
            IpAddr::V6(v6) => hosts.push(format!("[[]({})[]]", v6_forms(*v6).join("|"))),
        }
    }
    format!(
        "[[:cntrl:]]{}[[:blank:]]*:([^[:cntrl:]]|[[:blank:]]|[[:cntrl:]]+[[:blank:]])*{}[sS]?:([^@;,[:cntrl:]]*@)?({})",
        literal_ci("route"),
        literal_ci("sip"),
        hosts.join("|")
    )
}

/// Whether glibc's POSIX regex (the engine SIPp uses, REG_EXTENDED) finds `re` in `text`.
pub fn posix_match(re: &str, text: &str) -> bool {
    let cre = std::ffi::CString::new(re).unwrap();
    let ctext = std::ffi::CString::new(text).unwrap();
    // SAFETY: regex_t is plain data filled by regcomp; freed below with regfree.
    let mut r: libc::regex_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid C strings; r is a valid regex_t.
    let rc = unsafe { libc::regcomp(&mut r, cre.as_ptr(), libc::REG_EXTENDED | libc::REG_NOSUB) };
    assert_eq!(rc, 0, "regcomp failed for {re}");
    // SAFETY: r compiled above; no match array requested.
    let m = unsafe { libc::regexec(&r, ctext.as_ptr(), 0, std::ptr::null_mut(), 0) } == 0;
    // SAFETY: r compiled above, freed once.
    unsafe { libc::regfree(&mut r) };
    m
}

/// The scenario `tests/sipp/<name>` with `@ROUTE_NAMES_PCSCF@` replaced by `route_re`, written
/// into `dir`.
pub fn scenario(name: &str, route_re: &str, dir: &Path) -> PathBuf {
    scenario_with(name, &[("@ROUTE_NAMES_PCSCF@", route_re)], dir)
}

/// The scenario `tests/sipp/<name>` with each placeholder of `subs` (`@NAME@`) replaced by its
/// regular expression, written into `dir`. Every placeholder must be used and none may be left.
pub fn scenario_with(name: &str, subs: &[(&str, &str)], dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name);
    let mut text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    for (placeholder, re) in subs {
        assert!(
            !re.contains(['"', '<', '>', '&', '\\']),
            "{placeholder}: the expression must survive SIPp's XML reader"
        );
        assert!(text.contains(placeholder), "{name} has no {placeholder}");
        text = text.replace(placeholder, re);
    }
    let left = text.match_indices('@').find_map(|(i, _)| {
        let rest = &text[i + 1..];
        let w = &rest[..rest.find('@')?];
        (!w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')).then_some(w)
    });
    assert!(
        left.is_none(),
        "{name}: @{}@ not replaced",
        left.unwrap_or("")
    );
    let out = dir.join(name);
    std::fs::write(&out, text).unwrap();
    out
}

/// A fresh working directory for one SIPp run (its logs land there).
pub fn work_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pcscf-sipp-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A SIPp process started in a namespace, with its error and message logs.
pub struct SippRun {
    pub child: Child,
    pub errors: PathBuf,
    pub messages: PathBuf,
}

/// What a finished SIPp run left: exit status, the error log (must be empty), its stderr and
/// its message trace (for failure reports).
pub struct SippOutcome {
    pub status: Option<std::process::ExitStatus>,
    pub errors: String,
    pub stderr: String,
    pub messages: String,
}

impl SippOutcome {
    /// Exit 0 and an empty error file: every check of the scenario held.
    pub fn clean(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && self.errors.trim().is_empty()
    }

    pub fn report(&self, who: &str) -> String {
        format!(
            "{who}: exit {:?}\n--- error file ---\n{}\n--- stderr ---\n{}\n--- messages (tail) ---\n{}",
            self.status,
            self.errors,
            self.stderr,
            tail(&self.messages, 6000)
        )
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// Start `sipp -sf scenario` in namespace `ns` with `args`, in `dir`; errors and messages are
/// traced into files there.
/// SIPp's arguments for one call within 20 s on `ip`:`port`, `remote` (the remote host, if
/// any) and a `-key` for each of `keys`.
pub fn one_call_args(
    ip: &str,
    port: &str,
    remote: Option<&str>,
    keys: &[(&str, String)],
) -> Vec<String> {
    let mut args: Vec<String> = ["-i", ip, "-p", port].map(String::from).to_vec();
    args.extend(remote.map(String::from));
    args.extend(["-m", "1", "-timeout", "20", "-timeout_error"].map(String::from));
    for (k, v) in keys {
        args.extend(["-key".to_string(), k.to_string(), v.clone()]);
    }
    args
}

pub fn start_sipp(ns: &str, dir: &Path, scenario: &Path, args: &[String]) -> SippRun {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "sipp"]);
    spawn_sipp(cmd, dir, scenario, args)
}

/// [`start_sipp`] in our own namespace (loopback tests, no root needed).
pub fn start_sipp_here(dir: &Path, scenario: &Path, args: &[String]) -> SippRun {
    spawn_sipp(Command::new("sipp"), dir, scenario, args)
}

fn spawn_sipp(mut cmd: Command, dir: &Path, scenario: &Path, args: &[String]) -> SippRun {
    let stem = scenario.file_stem().unwrap().to_string_lossy().into_owned();
    let errors = dir.join(format!("{stem}.errors.log"));
    let messages = dir.join(format!("{stem}.messages.log"));
    let child = cmd
        .arg("-sf")
        .arg(scenario)
        .args(args)
        .args(["-nostdin", "-trace_err", "-error_file"])
        .arg(&errors)
        .args(["-trace_msg", "-message_file"])
        .arg(&messages)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sipp");
    SippRun {
        child,
        errors,
        messages,
    }
}

impl SippRun {
    /// Wait up to `limit` for SIPp to exit (killed after that), then collect its logs.
    pub fn finish(mut self, limit: Duration) -> SippOutcome {
        let until = Instant::now() + limit;
        let mut status = None;
        while Instant::now() < until {
            if let Ok(Some(s)) = self.child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if status.is_none() {
            let _ = self.child.kill();
        }
        let out = self.child.wait_with_output().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        SippOutcome {
            status,
            errors: read(&self.errors),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            messages: read(&self.messages),
        }
    }
}

/// SIPp as the I-CSCF/S-CSCF (`tests/sipp/scscf_uas.xml`) in the lab's core namespace, for
/// `calls` registrations within `timeout_s`: it challenges with `av`'s nonce, CK and IK and
/// fails (error file) on any Route naming pcscf — by any of its addresses or `hostname`.
pub fn start_scscf(
    lab: &pcscf::lab::Lab,
    dir: &Path,
    hostname: &str,
    calls: (usize, u32),
    av: &pcscf::aka::AuthVector,
) -> SippRun {
    start_scscf_with(lab, dir, hostname, calls, av, &[])
}

/// [`start_scscf`] with more SIPp arguments (`-t t1`: over TCP, one connection; its
/// Service-Route then says `;transport=tcp`, so the UE's requests reach the core over TCP too:
/// RFC 3263 §4.1).
pub fn start_scscf_with(
    lab: &pcscf::lab::Lab,
    dir: &Path,
    hostname: &str,
    (calls, timeout_s): (usize, u32),
    av: &pcscf::aka::AuthVector,
    extra: &[&str],
) -> SippRun {
    let sr_host = lab.core_addr.to_string();
    let keys = [
        ("sr_host", sr_host.as_str()),
        ("associated", "<sip:001010000000001@ims.test>"),
    ];
    start_scscf_keyed(lab, dir, hostname, (calls, timeout_s), av, extra, &keys)
}

/// [`start_scscf_with`] with the 200's Service-Route host (`sr_host`: where the UE's requests
/// and the reg event SUBSCRIBE go) and P-Associated-URI value (`associated`) given in `keys`.
pub fn start_scscf_keyed(
    lab: &pcscf::lab::Lab,
    dir: &Path,
    hostname: &str,
    (calls, timeout_s): (usize, u32),
    av: &pcscf::aka::AuthVector,
    extra: &[&str],
    keys: &[(&str, &str)],
) -> SippRun {
    let mut nb = [0u8; pcscf::aka::NONCE_B64_LEN];
    let nonce = av.nonce(&mut nb);
    let (ck, ik) = (av.ck.as_bytes(), av.ik.as_bytes());
    let route_re = route_names_us_regex(
        &[lab.pcscf_ue_addr, lab.pcscf_ue_addr6, lab.pcscf_core_addr],
        &[hostname],
    );
    let sf = scenario_with(
        "scscf_uas.xml",
        &[
            ("@ROUTE_NAMES_PCSCF@", &route_re),
            ("@TCP_PARAM@", tcp_param(sipp_over_tcp(extra))),
        ],
        dir,
    );
    let args: Vec<String> = [
        "-i",
        &lab.core_addr.to_string(),
        "-p",
        "5060",
        "-m",
        &calls.to_string(),
        "-timeout",
        &timeout_s.to_string(),
        "-timeout_error",
        "-key",
        "nonce",
        nonce,
        "-key",
        "ck",
        &hex(ck),
        "-key",
        "ik",
        &hex(ik),
    ]
    .map(String::from)
    .into_iter()
    .chain(
        keys.iter()
            .flat_map(|(k, v)| ["-key".to_string(), k.to_string(), v.to_string()]),
    )
    .chain(extra.iter().map(|a| a.to_string()))
    .collect();
    start_sipp(&lab.core, dir, &sf, &args)
}

/// Whether SIPp's arguments `args` make it speak TCP (`-t t1` or `-t tn`).
pub fn sipp_over_tcp<S: AsRef<str>>(args: &[S]) -> bool {
    args.windows(2)
        .any(|w| w[0].as_ref() == "-t" && w[1].as_ref().starts_with('t'))
}

/// What the core's scenarios put after `;lr` in their Service-Route and Record-Route URIs
/// (`@TCP_PARAM@`): `;transport=tcp` over TCP (RFC 3263 §4.1), else nothing.
pub fn tcp_param(tcp: bool) -> &'static str {
    if tcp { ";transport=tcp" } else { "" }
}

/// One message of a SIPp message trace (`-trace_msg`): whether SIPp received or sent it, and
/// its text as it was on the wire.
#[derive(Debug)]
pub struct Traced {
    pub received: bool,
    pub text: String,
}

/// The messages of a SIPp message trace, in order. SIPp 3.6 writes each as a line of dashes
/// and a timestamp, `UDP message received [N] bytes :` or `UDP message sent (N bytes):`, an
/// empty line, the message and a newline.
pub fn trace(log: &str) -> Vec<Traced> {
    log.split("----------------------------------------------- ")
        .filter_map(|block| {
            let (_stamp, rest) = block.split_once('\n')?;
            let (what, msg) = rest.split_once("\n\n")?;
            let received = what.contains("message received");
            if !received && !what.contains("message sent") {
                return None;
            }
            let text = msg.strip_suffix('\n').unwrap_or(msg);
            Some(Traced {
                received,
                text: text.to_string(),
            })
        })
        .collect()
}

/// The values of header `name` (any case, long form) in `msg`, each comma-separated value on
/// its own, trimmed: for Via, Route, Record-Route, identities (no comma inside their values).
pub fn header_values(msg: &str, name: &str) -> Vec<String> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v)
        })
        .flat_map(|v| v.split(',').map(|x| x.trim().to_string()))
        .collect()
}
