//! The `pcscf` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use pcscf::esp::{EncAlg, IntegAlg};
use pcscf::sip::rules::{self, Forward, ProxyIdentity};
use pcscf::sip::{Editor, Message};

#[derive(Parser)]
#[command(
    name = "pcscf",
    version,
    about = "A user-space P-CSCF that does ESP itself"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How the simulated UEs speak over their SAs (`pcscf lab` and `pcscf ue-sim`).
#[derive(clap::Args)]
struct UeTcpArgs {
    /// How the UEs send their protected requests: udp, tcp (one connection per SA set from
    /// the UE's port-c to the P-CSCF's port-s, inside ESP; the responses come back on it), or
    /// auto (those larger than 1,300 bytes on it, RFC 3261 §18.1.1, the others as datagrams).
    /// The first REGISTER stays UDP; with tcp or auto the P-CSCF's requests larger than 1,300
    /// bytes come on its own connection to the UE's port-s, smaller ones as datagrams.
    #[arg(long, default_value = "udp", value_parser = parse_transport)]
    pub transport: pcscf::sim::ue::Transport,
    /// The body size in bytes of each protected MESSAGE (the lab's links get an MTU that
    /// carries it whole).
    #[arg(long, default_value_t = pcscf::sim::ue::DEFAULT_MESSAGE_SIZE)]
    pub message_size: usize,
    /// Hostile UEs over TCP (with --transport tcp): once registered, every --hostile-every-th
    /// UE misbehaves on its TCP inside the SAs instead of sending its MESSAGEs, the kinds
    /// taken in turn (comma-separated, or all): slowloris (a MESSAGE one byte a second),
    /// no-content-length, endless (a header section that never ends), wrong-ports (segments
    /// over SA1 with other ports than its selectors), syn-flood (SYNs on its one 4-tuple,
    /// never completed). Their outcomes are reported apart, not as failures.
    #[arg(long, value_parser = parse_hostile)]
    pub hostile_tcp: Option<HostileKinds>,
    /// Which UEs --hostile-tcp makes hostile: UE i when i % N == 0.
    #[arg(long, default_value_t = 10)]
    pub hostile_every: usize,
}

impl UeTcpArgs {
    fn hostile(&self) -> pcscf::sim::hostile::HostilePlan {
        pcscf::sim::hostile::HostilePlan {
            kinds: self.hostile_tcp.clone().map(|k| k.0).unwrap_or_default(),
            every: self.hostile_every,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole IMS registration on this machine: three network namespaces (ue, pcscf, core),
    /// pcscf in the middle, the core and UE simulators around it; N UEs register over IPsec and
    /// send protected MESSAGEs; a report; everything removed afterwards. Needs root.
    Lab {
        /// How many UEs register.
        #[arg(long, default_value_t = 1000)]
        ues: usize,
        /// Registrations started per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Protected MESSAGEs each UE sends once registered.
        #[arg(long, default_value_t = 1)]
        messages: u32,
        /// Packet I/O backend of the P-CSCF: xdp, afpacket or socket.
        #[arg(long, default_value = "xdp")]
        backend: String,
        /// Write every SA to this file in Wireshark's esp_sa format.
        #[arg(long)]
        keylog: Option<PathBuf>,
        /// Capture the link between the UEs and pcscf (ESP both ways) into this pcapng file with dumpcap;
        /// with --keylog, tshark decrypts it.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// The UEs use IPv6 toward the P-CSCF.
        #[arg(long)]
        ipv6: bool,
        /// Calls once every UE is registered: the UEs place half, the core calls the UEs for the
        /// other half; each set up and torn down through the P-CSCF.
        #[arg(long, default_value_t = 0)]
        calls: u32,
        /// Calls started per second (both directions together).
        #[arg(long, default_value_t = 200)]
        call_rate: u32,
        /// The call flows, comma-separated, or `all` (every one but release): basic, prack
        /// (reliable 180, PRACK), update (UPDATE in the early and the confirmed dialog),
        /// reinvite, cancel (CANCEL after the 180, 487), rereg (the UE re-registers with a new
        /// SA set mid-call), release (the core releases the call with a BYE the UE does not
        /// expect: counted as released), dereg (the UE de-registers mid-call and the P-CSCF
        /// releases the call both ways; one UE per call). Call k of each direction follows the
        /// (k mod n)-th; every other round the callee acts (hangs up, sends the UPDATE /
        /// re-INVITE).
        #[arg(long, default_value = "basic", value_parser = parse_flows)]
        call_flows: pcscf::sim::call::CallPlan,
        /// Once the UEs are done (registered, MESSAGEs and calls over), the core de-registers
        /// the first N of them from the network side: a NOTIFY of the reg event package
        /// (RFC 3680) to the P-CSCF's subscription, contact `deactivated` (at most --ues).
        #[arg(long, default_value_t = 0)]
        network_dereg: usize,
        #[command(flatten)]
        tcp: UeTcpArgs,
    },
    /// Run the IMS core simulator (I-CSCF + S-CSCF + HSS) on an address, UDP and TCP.
    CoreSim {
        /// Where to listen, e.g. 10.0.1.20:5060.
        #[arg(long)]
        listen: SocketAddr,
        /// The home domain (realm).
        #[arg(long, default_value = "ims.mnc001.mcc001.3gppnetwork.org")]
        realm: String,
        /// Calls to place toward the registered UEs (by the Path of their REGISTER).
        #[arg(long, default_value_t = 0)]
        calls: u32,
        /// Calls started per second.
        #[arg(long, default_value_t = 100)]
        call_rate: u32,
        /// Start calling once this many UEs are registered.
        #[arg(long, default_value_t = 1)]
        after_registered: usize,
        /// The call flows, both ways (see `pcscf lab --help`); the UEs must use the same.
        #[arg(long, default_value = "basic", value_parser = parse_flows)]
        call_flows: pcscf::sim::call::CallPlan,
        /// It always listens on UDP and TCP (RFC 3261 §18) and answers on the connection a
        /// request came on. With tcp, the requests it originates (its calls to the UEs) go
        /// over TCP, one connection per next hop, and its Service-Route and Record-Route say
        /// `;transport=tcp`; with udp (or auto, the same), only its requests larger than
        /// --max-udp-request do.
        #[arg(long, default_value = "udp", value_parser = parse_transport)]
        transport: pcscf::sim::ue::Transport,
        /// Requests larger than this many bytes go over TCP in udp mode too (RFC 3261 §18.1.1).
        #[arg(long, default_value_t = usize::from(pcscf::config::DEFAULT_MAX_UDP_REQUEST))]
        max_udp_request: usize,
        /// When stopped (SIGINT / SIGTERM), first de-register the first N registered UEs from
        /// the network side (a NOTIFY to each subscription to their reg event, RFC 3680) and
        /// wait up to 2 s for the answers.
        #[arg(long, default_value_t = 0)]
        network_dereg: usize,
        /// The contact event of those de-registrations: deactivated, rejected, expired or
        /// probation (RFC 3680 §5.1, TS 24.229 §5.4.1.5).
        #[arg(long, default_value = "deactivated", value_parser = parse_contact_event)]
        network_dereg_event: pcscf::sim::regevent::ContactEvent,
    },
    /// Run many simulated UEs against a P-CSCF (needs root for the raw ESP sockets).
    UeSim {
        /// The P-CSCF's unprotected SIP address, e.g. 10.46.0.1:5060.
        #[arg(long)]
        pcscf: SocketAddr,
        /// The UEs' address (IPv4 or IPv6).
        #[arg(long)]
        ue_ip: std::net::IpAddr,
        #[arg(long, default_value_t = 100)]
        ues: usize,
        #[arg(long, default_value_t = 200)]
        rate: u32,
        #[arg(long, default_value_t = 1)]
        messages: u32,
        #[arg(long, default_value = "ims.mnc001.mcc001.3gppnetwork.org")]
        realm: String,
        /// After its MESSAGEs, each UE re-registers over its SAs (a protected re-REGISTER).
        #[arg(long)]
        reregister: bool,
        /// Milliseconds between a UE's MESSAGEs (traffic that lasts, e.g. across a restart).
        #[arg(long, default_value_t = 0)]
        message_interval_ms: u64,
        /// Fail if the P-CSCF sends any UE two ESP packets with one sequence number on one SA
        /// (RFC 4303 §3.3.3), e.g. across its restart.
        #[arg(long)]
        check_seq: bool,
        /// Calls the UEs place once all are registered.
        #[arg(long, default_value_t = 0)]
        calls: u32,
        /// Calls started per second.
        #[arg(long, default_value_t = 100)]
        call_rate: u32,
        /// Calls the core will place to the UEs (answered; the run waits for them).
        #[arg(long, default_value_t = 0)]
        incoming_calls: u32,
        /// The call flows, both ways (see `pcscf lab --help`); the core must use the same.
        #[arg(long, default_value = "basic", value_parser = parse_flows)]
        call_flows: pcscf::sim::call::CallPlan,
        #[command(flatten)]
        tcp: UeTcpArgs,
    },
    /// Run the P-CSCF: pinned workers on the configured interfaces, the registration thread,
    /// counters. Stops cleanly on SIGINT / SIGTERM and prints the final counters.
    Run {
        /// The TOML configuration (`pcscf config-example` prints a commented one).
        #[arg(long, short)]
        config: PathBuf,
        /// Append every SA, as it is created, to this file in Wireshark's `esp_sa` format
        /// (put it as `esp_sa` in a Wireshark configuration directory to read protected SIP).
        #[arg(long)]
        keylog: Option<PathBuf>,
        /// Load tests only (needs a `--features bench-hooks` build): install N registered UEs
        /// whose keys follow from their index (perf/load.rs sends from them).
        #[arg(long, default_value_t = 0, hide = !cfg!(feature = "bench-hooks"))]
        bench_preload_ues: u32,
        /// Where to write what each preloaded UE got (index, our SPIs and ports).
        #[arg(long, hide = !cfg!(feature = "bench-hooks"))]
        bench_preload_map: Option<PathBuf>,
        /// Load tests only: accept a configuration with `dataplane.stateless_relay` (refused
        /// otherwise: it relays requests of unregistered UEs).
        #[arg(long, hide = true)]
        allow_stateless_relay: bool,
    },
    /// Ask a running `pcscf run` over its control socket (root or the daemon's user only):
    /// show registrations [IMPU|IMPI], show sa SPI, show dialogs, show runtime, show config,
    /// deregister IMPU, log level LEVEL, help. Exits non-zero when the command is refused or
    /// the daemon cannot be reached.
    Ctl {
        /// The control socket (the daemon's `control.socket`).
        #[arg(long, default_value = pcscf::config::DEFAULT_CONTROL_SOCKET, conflicts_with = "config")]
        socket: PathBuf,
        /// Take the socket's path from this configuration file instead.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// JSON instead of aligned tables (for scripts).
        #[arg(long)]
        json: bool,
        /// The command, e.g. `show registrations`, `deregister sip:alice@ims.example`.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Check a configuration file and exit (0 if it is valid).
    CheckConfig {
        /// The TOML configuration to check.
        config: PathBuf,
    },
    /// Print the commented example configuration.
    ConfigExample,
    /// Parse a SIP message from a file and print its index (start line, headers, body).
    Parse {
        /// File holding one SIP message (CRLF line ends).
        file: PathBuf,
    },
    /// Apply the P-CSCF REGISTER rewrite (toward the I-CSCF) to a REGISTER read from a file and
    /// print the result: the §1.1 checks, then the rewrite.
    RewriteRegister {
        file: PathBuf,
        /// The UE's source address, as the packet carried it.
        #[arg(long, default_value = "10.46.0.6:5060")]
        source: SocketAddr,
        /// Mark it as received over an IPsec SA (integrity-protected="yes").
        #[arg(long)]
        protected: bool,
    },
    /// Packaging only: write the manual pages (pcscf.1 and pcscf-SUBCOMMAND.1 for each command
    /// above) into a directory, rendered from this very command line (packaging/build-deb.sh).
    #[command(hide = true)]
    Manpage {
        /// Where to write the pages (created if missing).
        out_dir: PathBuf,
    },
}

fn parse_flows(s: &str) -> Result<pcscf::sim::call::CallPlan, String> {
    pcscf::sim::call::CallPlan::parse(s)
}

fn parse_contact_event(s: &str) -> Result<pcscf::sim::regevent::ContactEvent, String> {
    use pcscf::sim::regevent::ContactEvent;
    match ContactEvent::parse(s) {
        Some(ContactEvent::Unregistered) | None => Err(format!(
            "{s}: one of deactivated, rejected, expired, probation"
        )),
        Some(e) => Ok(e),
    }
}

/// `--hostile-tcp`'s list (one argument, comma-separated).
#[derive(Clone, Debug)]
struct HostileKinds(Vec<pcscf::sim::hostile::HostileTcp>);

fn parse_hostile(s: &str) -> Result<HostileKinds, String> {
    pcscf::sim::hostile::HostileTcp::parse_list(s).map(HostileKinds)
}

fn parse_transport(s: &str) -> Result<pcscf::sim::ue::Transport, String> {
    pcscf::sim::ue::Transport::parse(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pcscf: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Lab {
            ues,
            rate,
            messages,
            backend,
            keylog,
            pcap,
            ipv6,
            calls,
            call_rate,
            call_flows,
            network_dereg,
            tcp,
        } => {
            let hostile = tcp.hostile();
            let cfg = pcscf::lab::LabConfig {
                ues,
                rate,
                messages,
                backend,
                keylog,
                pcap,
                ipv6,
                calls,
                call_rate,
                flows: call_flows,
                transport: tcp.transport,
                message_size: tcp.message_size,
                hostile,
                network_dereg,
            };
            if !pcscf::lab::run(&cfg)? {
                return Err("some registrations or calls failed".into());
            }
        }
        Cmd::CoreSim {
            listen,
            realm,
            calls,
            call_rate,
            after_registered,
            call_flows,
            transport,
            max_udp_request,
            network_dereg,
            network_dereg_event,
        } => {
            pcscf::daemon::install_signal_handlers();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::spawn(move || {
                while !pcscf::daemon::stop_requested() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                s2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let plan = pcscf::sim::core::CorePlan {
                calls,
                rate: call_rate,
                after_registered,
                flows: call_flows,
                transport,
                max_udp_request,
                network_dereg,
                network_dereg_event,
                ..Default::default()
            };
            let report = pcscf::sim::core::serve_calls(listen, &realm, &plan, stop)?;
            eprintln!("core-sim: {:?}", report.stats);
            if report.stats.reg_event_any() || network_dereg > 0 {
                eprintln!("{}", report.stats.reg_event_line());
            }
            if calls > 0 {
                eprintln!(
                    "core-sim: {} terminating calls ok, failed: {:?}",
                    report.calls_ok, report.call_failures
                );
            }
        }
        Cmd::UeSim {
            pcscf,
            ue_ip,
            ues,
            rate,
            messages,
            realm,
            reregister,
            message_interval_ms,
            check_seq,
            calls,
            call_rate,
            incoming_calls,
            call_flows,
            tcp,
        } => {
            let hostile = tcp.hostile();
            pcscf::daemon::install_signal_handlers();
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::spawn(move || {
                while !pcscf::daemon::stop_requested() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                s2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            let cfg = pcscf::sim::ue::UeSimConfig {
                ue_ip,
                pcscf,
                realm,
                ues,
                rate,
                messages,
                timeout: std::time::Duration::from_secs(5),
                progress: true,
                wrong_res_every: 0,
                reregister,
                calls,
                call_rate,
                incoming_calls,
                flows: call_flows,
                transport: tcp.transport,
                message_size: tcp.message_size,
                hostile,
                message_interval: std::time::Duration::from_millis(message_interval_ms),
                check_seq,
            };
            let report = pcscf::sim::ue::run(cfg, stop)?;
            report.print();
            if report.failed() > 0 || report.calls_failed() > 0 {
                return Err("some registrations or calls failed".into());
            }
            if report.esp_seq_repeated > 0 {
                return Err("the P-CSCF used an ESP sequence number twice".into());
            }
        }
        Cmd::Run {
            config,
            keylog,
            bench_preload_ues,
            bench_preload_map,
            allow_stateless_relay,
        } => {
            let cfg = pcscf::config::Config::load(&config)
                .map_err(|e| format!("{}: {e}", config.display()))?;
            let opts = pcscf::daemon::RunOptions {
                keylog,
                preload_ues: bench_preload_ues,
                preload_map: bench_preload_map,
                allow_stateless_relay,
                config_path: Some(config.clone()),
            };
            let report = pcscf::daemon::run(&cfg, &opts)?;
            pcscf::daemon::print_report(&report, cfg.log.level);
        }
        Cmd::Ctl {
            socket,
            config,
            json,
            command,
        } => {
            let socket = match config {
                Some(c) => {
                    pcscf::config::Config::load(&c)
                        .map_err(|e| format!("{}: {e}", c.display()))?
                        .control
                        .socket
                }
                None => socket,
            };
            let line = if json {
                format!("--json {}", command.join(" "))
            } else {
                command.join(" ")
            };
            let reply =
                pcscf::daemon::ctl_request(&socket, &line, std::time::Duration::from_secs(5))
                    .map_err(|e| format!("is pcscf running? socket {}: {e}", socket.display()))?;
            if reply.ok {
                print!("{}", reply.body);
            } else if json {
                // scripts read the error object on stdout; the exit status says it failed
                print!("{}", reply.body);
                return Err("the command was refused".into());
            } else {
                return Err(reply.body.trim_end().into());
            }
        }
        Cmd::CheckConfig { config } => {
            pcscf::config::Config::load(&config)
                .map_err(|e| format!("{}: {e}", config.display()))?;
            println!("{}: ok", config.display());
        }
        Cmd::ConfigExample => print!("{}", pcscf::config::EXAMPLE),
        Cmd::Manpage { out_dir } => {
            std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
            // one page per command, as clap_mangen lays them out (git's and cargo's way): the
            // top page's COMMANDS section names pcscf-run(1) and the others; hidden ones
            // (this one) are left out
            clap_mangen::generate_to(Cli::command(), &out_dir)
                .map_err(|e| format!("{}: {e}", out_dir.display()))?;
        }
        Cmd::Parse { file } => {
            let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let msg = Message::parse_strict(&data)?;
            let v = msg.view();
            println!("{:?}", msg.idx.start_line);
            for h in msg.idx.headers() {
                println!(
                    "{:<22} {}",
                    format!("{:?}", h.name),
                    String::from_utf8_lossy(v.bytes(h.value))
                );
            }
            println!("body: {} bytes", v.body().len());
        }
        Cmd::RewriteRegister {
            file,
            source,
            protected,
        } => {
            let data = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let mut frame = vec![0u8; data.len() + 1024];
            frame[512..512 + data.len()].copy_from_slice(&data);
            let mut ed = Editor::new(&mut frame, 512, 512 + data.len())?;
            ed.view().validate()?;
            let prefs = [
                (IntegAlg::HmacSha1_96, EncAlg::AesCbc),
                (IntegAlg::HmacSha1_96, EncAlg::Null),
                (IntegAlg::HmacMd5_96, EncAlg::Null),
            ];
            if let Err(r) = rules::check_register(ed.view(), &prefs) {
                return Err(format!("rejected: {} {} ({:?})", r.code, r.reason, r.why).into());
            }
            // the lab's and the test fixtures' P-CSCF (tests/data/ims, tests/data/ims/phones)
            let own = pcscf::sip::OwnUris::new(
                &["pcscf.ims.mnc001.mcc001.3gppnetwork.org"],
                &[
                    "10.46.0.1".parse()?,
                    "2001:db8:46::1".parse()?,
                    "10.211.0.1".parse()?,
                    "fd00:211::1".parse()?,
                    "10.0.1.10".parse()?,
                ],
                &[5060],
                Some(5100..=5199),
            );
            let me = ProxyIdentity {
                via_sent_by: b"10.0.1.10:5060",
                via_transport: b"UDP",
                path_uri: b"sip:term@pcscf.ims.mnc001.mcc001.3gppnetwork.org;lr",
                own: &own,
                visited_network_id: b"\"Visited Network\"",
                orig_ioi: b"ims.mnc001.mcc001.3gppnetwork.org",
            };
            let fw = Forward {
                source,
                protected,
                branch: 1,
                icid: 1,
            };
            rules::rewrite_register(&mut ed, &me, &fw, &mut vec![0; rules::REWRITE_SCRATCH])?;
            print!("{}", String::from_utf8_lossy(ed.as_bytes()));
        }
    }
    Ok(())
}
