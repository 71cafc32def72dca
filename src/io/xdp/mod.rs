//! The AF_XDP backend: an XDP program that steers only our traffic to AF_XDP sockets, its
//! loader, and the sockets themselves ([`XdpIo`], a [`PacketIo`]). Pure Rust over `libc`: the
//! bpf(2) syscall, rtnetlink and the AF_XDP socket API, no libbpf/libxdp and no clang.
//!
//! # Files
//! - `asm.rs`: a tiny eBPF assembler (instruction enum, labels, encoding to `u64` words).
//! - `prog.rs`: the steering program, generated from a [`Steering`] (our addresses and UDP
//!   ports, compiled in as immediates).
//! - `bpf.rs`: bpf(2) — map create/update, program load with the verifier log on failure,
//!   program info, `BPF_PROG_TEST_RUN`.
//! - `netlink.rs`: rtnetlink `IFLA_XDP` attach/replace/detach and the link's MAC and XDP state.
//! - `loader.rs`: [`XdpProgram`] — XSKMAP + program + attachment on one interface, stale
//!   replacement on start, detach on drop.
//! - `ring.rs`: one mmapped AF_XDP ring (cached indices, Acquire/Release).
//! - `socket.rs`: [`XdpIo`] — UMEM, the four rings, frame pool, Ethernet strip/prepend;
//!   [`XdpPair`] — a worker's UE-side and core-side sockets over one UMEM.
//!
//! # The XDP program
//! For each frame: if it is shorter than an Ethernet header, pass. If the ethertype is IPv4,
//! the 20-byte header must be present and the destination address must be one of ours (each
//! compared as a 32-bit immediate); then protocol 50 (ESP) is redirected; protocol 17 (UDP) is
//! redirected if it is a fragment (MF or a fragment offset: later pieces have no port, and the
//! address is ours), else the UDP header at `14 + 4·IHL` must be present and its destination
//! port must lie in one of the configured ranges. IPv6 likewise: the 40-byte header, the
//! destination compared as four 32-bit words per address, next header ESP → redirect, UDP →
//! port check, a Fragment header whose next header is UDP or ESP → redirect; other extension
//! headers are not walked. Anything else (ARP, ND, ICMP, TCP, other UDP, VLAN tags, other
//! addresses) returns `XDP_PASS`, so the kernel still answers ARP, ping and SSH.
//! "Redirect" is `bpf_redirect_map(&xskmap, ctx->rx_queue_index, XDP_PASS)`: to the socket
//! bound to the receiving queue, or, when that XSKMAP slot is empty, to the kernel.
//! Every packet load is preceded by a `data + n > data_end` check the verifier can follow;
//! there are no loops. The program is named [`PROG_NAME`]; an attached program of that name
//! is taken as a leftover of ours and replaced on start.
//!
//! # Unsafe
//! Each block carries a SAFETY comment. In short: syscall arguments point to live buffers of
//! the stated sizes; ring and UMEM pointers stay inside mappings that live as long as their
//! owners; frames are only exposed as slices while the kernel does not own them (a
//! per-frame state checked on every access); ring indices follow the kernel's
//! producer/consumer protocol with Acquire loads of the other side's index and Release stores
//! of ours.

#[cfg(not(all(target_os = "linux", target_endian = "little")))]
compile_error!(
    "the AF_XDP backend supports little-endian Linux only (BPF insn bitfields, ethertype loads)"
);

// The one place that names the surrounding crate's I/O interface.
pub(crate) use crate::io::{Desc, FRAME_SIZE, HEADROOM, IoStats, PacketIo, Side};

pub mod asm;
pub mod bpf;
mod loader;
pub mod netlink;
pub mod prog;
mod ring;
mod socket;

pub use crate::io::ifindex;
pub use loader::{AttachMode, PROG_NAME, ProgramConfig, XdpProgram};
pub use prog::Steering;
pub use socket::{BindMode, PairRefused, XdpIo, XdpPair, XskConfig, XskKernelStats};
