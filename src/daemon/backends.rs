//! Opening the packet backends of `pcscf run`: one per worker (sockets, AF_PACKET, or an AF_XDP
//! socket per interface behind the steering programs attached first).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Backend, Config};
use crate::control::log;
use crate::io::xdp::{AttachMode, ProgramConfig, Steering, XdpIo, XdpPair, XdpProgram, XskConfig};
use crate::io::{
    DualIo, EspBind, NeighShared, PacketIo, PacketMmapConfig, PacketMmapIo, PortConfig, Side,
    SocketConfig, SocketIo, UdpBind,
};

/// Worker `index`'s backend.
pub(super) fn open_backend(
    cfg: &Config,
    index: usize,
    neigh: &Arc<NeighShared>,
    progs: &[XdpProgram],
) -> Result<Box<dyn PacketIo>, Box<dyn std::error::Error>> {
    let dp = &cfg.dataplane;
    let protected = cfg.protected_ports()?;
    Ok(match dp.backend {
        Backend::Socket => {
            let mut udp = Vec::new();
            let mut esp = Vec::new();
            for a in &cfg.ue.addresses {
                udp.push(UdpBind {
                    side: Side::Ue,
                    addr: SocketAddr::new(*a, cfg.ue.sip_port),
                });
                esp.push(EspBind {
                    side: Side::Ue,
                    addr: *a,
                });
            }
            udp.push(UdpBind {
                side: Side::Core,
                addr: SocketAddr::new(cfg.core.address, cfg.core.sip_port),
            });
            let sc = SocketConfig {
                udp,
                esp,
                frames: dp.frames,
                batch: dp.batch,
                ..SocketConfig::default()
            };
            Box::new(SocketIo::new(&sc).map_err(|e| format!("socket backend: {e}"))?)
        }
        Backend::Afpacket => {
            let mut local = cfg.ue.addresses.clone();
            local.push(cfg.core.address);
            let pc = PacketMmapConfig {
                ports: vec![
                    PortConfig {
                        ifname: cfg.ue.interface.clone(),
                        side: Side::Ue,
                    },
                    PortConfig {
                        ifname: cfg.core.interface.clone(),
                        side: Side::Core,
                    },
                ],
                local,
                udp_ports: vec![
                    cfg.ue.sip_port..=cfg.ue.sip_port,
                    cfg.core.sip_port..=cfg.core.sip_port,
                    protected,
                ],
                frames: dp.frames,
                // one placeholder set is enough; every worker's sockets join one fanout group
                placeholders: index == 0,
                fanout: (dp.workers.len() > 1).then_some(0x5c5c),
                ..PacketMmapConfig::default()
            };
            Box::new(
                PacketMmapIo::new(&pc, neigh.reader())
                    .map_err(|e| format!("afpacket backend: {e}"))?,
            )
        }
        Backend::Xdp => {
            let queue = index as u32;
            let xsk = |ifname: &str, side: Side| {
                let mut xc = XskConfig::new(ifname, queue, side);
                xc.frames = dp.frames;
                xc.ring_size = dp.ring_size;
                xc.fill_frames = dp.ring_size;
                xc
            };
            // One UMEM for both interfaces: a packet crosses from one to the other in the
            // frame it arrived in. A kernel that refuses (XDP_SHARED_UMEM across devices is
            // Linux 5.10) gets a UMEM per interface and a copy per crossing packet.
            let (ue_xc, core_xc) = (
                xsk(&cfg.ue.interface, Side::Ue),
                xsk(&cfg.core.interface, Side::Core),
            );
            let prebound = match XdpPair::open(&ue_xc, &core_xc, neigh.reader()) {
                Ok(pair) => {
                    if let [p_ue, p_core] = progs {
                        let [(q_ue, fd_ue), (q_core, fd_core)] = pair.sockets();
                        p_ue.register_socket(q_ue, fd_ue)?;
                        p_core.register_socket(q_core, fd_core)?;
                    }
                    return Ok(Box::new(pair));
                }
                Err(refused) => {
                    log::warn(format_args!(
                        "worker {index}: one UMEM for {} and {} refused ({}; sharing needs Linux 5.10 and both interfaces in the same copy or zero-copy mode): a UMEM each, and a copy per packet crossing sides",
                        cfg.ue.interface, cfg.core.interface, refused.error
                    ));
                    refused.ue
                }
            };
            let open = |xc: &XskConfig| -> Result<XdpIo, Box<dyn std::error::Error>> {
                let io = XdpIo::open(xc, neigh.reader())
                    .map_err(|e| format!("xdp backend on {} queue {queue}: {e}", xc.ifname))?;
                Ok(io)
            };
            // the UE side's socket the refusal left bound, else a new one
            let ue = match prebound {
                Some(io) => *io,
                None => open(&ue_xc)?,
            };
            let core = open(&core_xc)?;
            // each interface's program steers its queue `index` to this worker's socket
            if let [p_ue, p_core] = progs {
                p_ue.register(&ue)?;
                p_core.register(&core)?;
            }
            Box::new(DualIo::new(ue, core, dp.batch))
        }
    })
}

/// The XDP steering programs (one per interface); detached when dropped.
pub(super) fn attach_xdp(cfg: &Config) -> Result<Vec<XdpProgram>, Box<dyn std::error::Error>> {
    let mode = match cfg.dataplane.xdp_mode {
        crate::config::XdpMode::Skb => AttachMode::Skb,
        crate::config::XdpMode::Drv => AttachMode::Drv,
    };
    let split = |addrs: &[std::net::IpAddr]| {
        let mut s = Steering::default();
        for a in addrs {
            match a {
                std::net::IpAddr::V4(v) => s.v4.push(*v),
                std::net::IpAddr::V6(v) => s.v6.push(*v),
            }
        }
        s
    };
    let protected = cfg.protected_ports()?;
    let mut ue = split(&cfg.ue.addresses);
    ue.udp_ports = vec![
        (cfg.ue.sip_port, cfg.ue.sip_port),
        (*protected.start(), *protected.end()),
    ];
    let mut core = split(&[cfg.core.address]);
    core.udp_ports = vec![(cfg.core.sip_port, cfg.core.sip_port)];
    let queues = cfg.dataplane.workers.len() as u32;
    let mut progs = Vec::new();
    for (ifname, steering) in [(&cfg.ue.interface, ue), (&cfg.core.interface, core)] {
        // Worker i takes queue i: each needs a queue, and packets must reach it.
        let link = crate::io::ifindex(ifname).and_then(crate::io::xdp::netlink::link_xdp);
        if let Ok(link) = link {
            // in use (ethtool), else allocated (netlink; 0: not said)
            let have = crate::io::xdp::netlink::active_rx_queues(ifname).unwrap_or(link.rx_queues);
            if have != 0 && have < queues {
                return Err(format!(
                    "{ifname} has {have} receive queue(s) in use: dataplane.workers needs one per worker ({queues})"
                )
                .into());
            }
            if queues > 1 && link.veth && mode == AttachMode::Skb {
                log::warn(format_args!(
                    "{ifname} is a veth in generic XDP, which does not spread its packets over the queues as native XDP does: some workers get nothing from it (xdp_mode = \"drv\" spreads a veth's flows over its queues)"
                ));
            }
        }
        let p = XdpProgram::attach(&ProgramConfig {
            ifname: ifname.clone(),
            mode,
            steering,
            queues,
        })
        .map_err(|e| format!("attaching XDP to {ifname}: {e}"))?;
        if let Some(old) = p.replaced_stale() {
            log::warn(format_args!(
                "{ifname}: replaced a stale pcscf XDP program (id {old}, left by a crash?)"
            ));
        }
        progs.push(p);
    }
    Ok(progs)
}
