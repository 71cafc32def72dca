//! The pinned workers of `pcscf run`: one thread per configured core, each with its backend, its
//! reader of the SA table, the shared punt queue and its own inject queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use crate::config::{Backend, Config};
use crate::control::log;
use crate::dataplane::{MsgQueue, SharedStats, Worker, WorkerConfig};
use crate::io::PacketIo;
use crate::satable::SaReader;

/// The running workers: what the rest of the run keeps of them.
pub(super) struct Workers {
    /// Each worker's counters, in worker order.
    pub shared: Vec<Arc<SharedStats>>,
    pub handles: Vec<JoinHandle<()>>,
    /// One inject queue per worker: the registration thread sends through the workers' TX path.
    pub injects: Vec<Arc<MsgQueue>>,
}

/// Start one worker per backend, pinned to its configured core, until `stop`.
pub(super) fn spawn(
    cfg: &Config,
    backends: Vec<Box<dyn PacketIo>>,
    (punt, dialog_events): (&Arc<MsgQueue>, &Arc<MsgQueue>),
    (core_in, core_out): (&[Arc<MsgQueue>], &Arc<MsgQueue>),
    sa_reader: &SaReader,
    stop: &Arc<AtomicBool>,
) -> Result<Workers, Box<dyn std::error::Error>> {
    let mut shared = Vec::new();
    let mut handles = Vec::new();
    // every worker's inject queue first (the registration thread sends through them)
    let injects: Vec<Arc<MsgQueue>> = (0..backends.len().min(cfg.dataplane.workers.len()))
        .map(|_| MsgQueue::new(cfg.dataplane.punt_queue, None))
        .collect();
    // and every worker's hand-over queue, apart from its inject queue (a UE flooding segments
    // at a worker that does not hold its TCP fills the holder's hand-over queue, never the
    // registration thread's)
    let peers: Arc<[Arc<MsgQueue>]> = injects
        .iter()
        .map(|_| MsgQueue::new(cfg.dataplane.punt_queue, None))
        .collect::<Vec<_>>()
        .into();
    for (i, (io, &core)) in backends.into_iter().zip(&cfg.dataplane.workers).enumerate() {
        let wcfg = worker_config(cfg, i as u16)?;
        let st = Arc::new(SharedStats::default());
        shared.push(st.clone());
        let punt = punt.clone();
        let events = dialog_events.clone();
        let stop = stop.clone();
        let sas = sa_reader.clone();
        let inject = injects[i].clone();
        let peers = peers.clone();
        let core_tcp = (core_in[i].clone(), core_out.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        log::warn(format_args!("worker {i}: could not pin to core {core}"));
                    }
                    let mut w = Worker::new(io, wcfg, punt, st)
                        .with_sas(sas)
                        .with_inject(inject)
                        .with_peers(peers)
                        .with_core_tcp(core_tcp.0, core_tcp.1)
                        .with_dialog_events(events);
                    w.run(&stop);
                })?,
        );
    }
    Ok(Workers {
        shared,
        handles,
        injects,
    })
}

fn worker_config(cfg: &Config, id: u16) -> Result<WorkerConfig, Box<dyn std::error::Error>> {
    let core = SocketAddr::new(cfg.core.address, cfg.core.sip_port);
    Ok(WorkerConfig {
        id,
        ue_addrs: cfg.ue.addresses.clone(),
        ue_sip_port: cfg.ue.sip_port,
        protected_ports: cfg.protected_ports()?,
        core,
        icscf: cfg.core.icscf,
        icscf_tcp: cfg.core.icscf_transport == crate::sip::Transport::Tcp,
        stateless_relay: cfg.dataplane.stateless_relay,
        via_sent_by: core.to_string(),
        hostname: cfg.core.hostname.clone(),
        batch: cfg.dataplane.batch,
        max_udp_request: usize::from(cfg.ue.max_udp_request),
        core_max_udp_request: usize::from(cfg.core.max_udp_request),
        verify_udp_checksum: cfg.dataplane.backend != Backend::Xdp,
    })
}
