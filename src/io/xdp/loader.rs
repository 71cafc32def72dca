//! Loading and attaching the steering program: XSKMAP creation, `BPF_PROG_LOAD`, netlink
//! attach in skb or driver mode, replacement of a stale program of ours, detach on drop.
//!
//! Owns: [`XdpProgram`], the lifetime of the attachment on one interface.

use std::ffi::CString;
use std::io;

use super::bpf::{BPF_MAP_TYPE_XSKMAP, BPF_PROG_TYPE_XDP, Map, Prog};
use super::netlink::{
    self, XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_FLAGS_DRV_MODE, XDP_FLAGS_REPLACE,
    XDP_FLAGS_SKB_MODE, XDP_FLAGS_UPDATE_IF_NOEXIST,
};
use super::prog::{self, Steering, Verdict};
use super::socket::XdpIo;
use crate::io::ifindex;

/// Name of our program in the kernel; an attached program with this name is ours (left by a
/// crashed run) and is replaced on start.
pub const PROG_NAME: &str = "pcscf_xsk";
const MAP_NAME: &str = "pcscf_xsks";
const LICENSE: &str = "Dual MIT/GPL";

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`): works on every device, slowest.
    Skb,
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`); veth has it.
    Drv,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Skb => XDP_FLAGS_SKB_MODE,
            AttachMode::Drv => XDP_FLAGS_DRV_MODE,
        }
    }
}

/// Configuration of the program on one interface.
#[derive(Debug, Clone)]
pub struct ProgramConfig {
    pub ifname: String,
    pub mode: AttachMode,
    pub steering: Steering,
    /// XSKMAP size: queue ids `0..queues` can have a socket.
    pub queues: u32,
}

/// The steering program attached to one interface; detached when dropped.
#[derive(Debug)]
pub struct XdpProgram {
    ifindex: u32,
    mode: AttachMode,
    prog: Prog,
    prog_id: u32,
    xskmap: Map,
    replaced: Option<u32>,
    attached: bool,
}

fn mode_of_attached(attached: u8) -> Option<AttachMode> {
    match attached {
        XDP_ATTACHED_SKB => Some(AttachMode::Skb),
        XDP_ATTACHED_DRV => Some(AttachMode::Drv),
        _ => None,
    }
}

impl XdpProgram {
    /// Create the XSKMAP, build and load the program, and attach it to `cfg.ifname`. A program
    /// named [`PROG_NAME`] already attached there is replaced; any other program is an error
    /// (we never take over someone else's interface).
    pub fn attach(cfg: &ProgramConfig) -> io::Result<XdpProgram> {
        let ifindex = ifindex(&cfg.ifname)?;
        let xskmap = Map::create(BPF_MAP_TYPE_XSKMAP, 4, 4, cfg.queues.max(1), MAP_NAME)?;
        let insns = prog::build(
            &cfg.steering,
            Verdict::Redirect {
                xskmap_fd: xskmap.raw_fd(),
            },
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let license = CString::new(LICENSE).expect("no NUL");
        let prog = Prog::load(BPF_PROG_TYPE_XDP, &insns, PROG_NAME, &license)?;
        let prog_id = prog.info()?.id;

        let link = netlink::link_xdp(ifindex)?;
        let mut replaced = None;
        let mode_flags = cfg.mode.flags();
        if link.prog_id != 0 {
            let old = Prog::from_id(link.prog_id)?;
            let info = old.info()?;
            if info.name != PROG_NAME {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{}: XDP program id {} ({:?}) is attached and is not ours; not replacing it",
                        cfg.ifname, info.id, info.name
                    ),
                ));
            }
            match mode_of_attached(link.attached) {
                Some(m) if m == cfg.mode => {
                    netlink::set_xdp(
                        ifindex,
                        prog.raw_fd(),
                        mode_flags | XDP_FLAGS_REPLACE,
                        Some(old.raw_fd()),
                    )
                    .map_err(|e| ctx(e, &cfg.ifname, "replace stale XDP program"))?;
                }
                Some(m) => {
                    netlink::set_xdp(ifindex, -1, m.flags(), None)
                        .map_err(|e| ctx(e, &cfg.ifname, "detach stale XDP program"))?;
                    netlink::set_xdp(
                        ifindex,
                        prog.raw_fd(),
                        mode_flags | XDP_FLAGS_UPDATE_IF_NOEXIST,
                        None,
                    )
                    .map_err(|e| ctx(e, &cfg.ifname, "attach XDP program"))?;
                }
                None => {
                    return Err(io::Error::other(format!(
                        "{}: XDP attached in unsupported mode {}",
                        cfg.ifname, link.attached
                    )));
                }
            }
            replaced = Some(info.id);
        } else {
            netlink::set_xdp(
                ifindex,
                prog.raw_fd(),
                mode_flags | XDP_FLAGS_UPDATE_IF_NOEXIST,
                None,
            )
            .map_err(|e| ctx(e, &cfg.ifname, "attach XDP program"))?;
        }
        Ok(XdpProgram {
            ifindex,
            mode: cfg.mode,
            prog,
            prog_id,
            xskmap,
            replaced,
            attached: true,
        })
    }

    /// Put a socket into the XSKMAP at its queue id, so the program redirects that queue's
    /// matching frames to it. (Closing the socket removes it from the map.)
    pub fn register(&self, io: &XdpIo) -> io::Result<()> {
        self.register_socket(io.queue_id(), io.raw_fd())
    }

    /// [`XdpProgram::register`] for a socket given as its queue id and descriptor (one of an
    /// [`XdpPair`](super::XdpPair)'s).
    pub fn register_socket(&self, queue_id: u32, fd: std::os::fd::RawFd) -> io::Result<()> {
        self.xskmap.update_u32(queue_id, fd as u32)
    }

    /// Take a queue's socket out of the map (its frames then go to the kernel).
    pub fn unregister(&self, queue_id: u32) -> io::Result<()> {
        self.xskmap.delete_u32(queue_id)
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The kernel's id of our program.
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Id of the stale program of ours this attach replaced, if any.
    pub fn replaced_stale(&self) -> Option<u32> {
        self.replaced
    }

    /// Detach now, reporting errors (drop does the same silently). Leaves the interface alone
    /// if someone else's program has replaced ours meanwhile.
    pub fn detach(mut self) -> io::Result<()> {
        self.detach_inner()
    }

    fn detach_inner(&mut self) -> io::Result<()> {
        if !self.attached {
            return Ok(());
        }
        self.attached = false;
        let link = netlink::link_xdp(self.ifindex)?;
        if link.prog_id != self.prog_id {
            return Ok(());
        }
        netlink::set_xdp(self.ifindex, -1, self.mode.flags(), None)
    }

    /// Keep the program attached after this value is dropped (e.g. for a hand-over).
    pub fn leak_attachment(mut self) {
        self.attached = false;
    }

    #[doc(hidden)]
    pub fn prog_fd(&self) -> i32 {
        self.prog.raw_fd()
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        let _ = self.detach_inner();
    }
}

fn ctx(e: io::Error, ifname: &str, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{ifname}: {what}: {e}"))
}
