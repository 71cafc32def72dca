//! The steering program: which frames go to the AF_XDP sockets, built as eBPF instructions.
//!
//! Owns: the program text (see the module doc of [`super`] for its logic in prose) and its
//! configuration, [`Steering`]. Addresses and ports are compiled in as immediates, so the
//! program needs no config map; changing them means building and attaching a new program
//! (which replaces the old one atomically).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::asm::{Alu, Asm, AsmError, Cond, Label, Op, Reg, Size};
use super::bpf::{FN_REDIRECT_MAP, XDP_PASS};

/// What the XDP program steers to the sockets. Everything else gets `XDP_PASS`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Steering {
    /// Our IPv4 addresses (destination must be one of them; empty: no IPv4 is steered).
    pub v4: Vec<Ipv4Addr>,
    /// Our IPv6 addresses (same rule).
    pub v6: Vec<Ipv6Addr>,
    /// UDP destination port ranges, inclusive (`(5060, 5060)`, `(lo, hi)` for protected ports).
    pub udp_ports: Vec<(u16, u16)>,
}

/// At most this many addresses per family and port ranges (keeps the program small).
pub const MAX_ADDRS: usize = 16;
pub const MAX_PORT_RANGES: usize = 16;

const ETH_HLEN: i32 = 14;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_ESP: i32 = 50;
const IPV6_FRAGMENT: i32 = 44;

/// Offsets in `struct xdp_md`.
const MD_DATA: i16 = 0;
const MD_DATA_END: i16 = 4;
const MD_RX_QUEUE_INDEX: i16 = 16;

/// How the program ends for a frame that matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `bpf_redirect_map(xskmap, rx_queue_index, XDP_PASS)`: to the socket bound to this
    /// queue, or to the kernel if there is none.
    Redirect { xskmap_fd: i32 },
    /// Return this constant instead (for testing the classifier with `BPF_PROG_TEST_RUN`).
    Return(u32),
}

/// Build the program. Errors if the steering set is too large.
pub fn build(s: &Steering, verdict: Verdict) -> Result<Vec<u64>, AsmError> {
    if s.v4.len() > MAX_ADDRS || s.v6.len() > MAX_ADDRS || s.udp_ports.len() > MAX_PORT_RANGES {
        return Err(AsmError(format!(
            "at most {MAX_ADDRS} addresses per family and {MAX_PORT_RANGES} port ranges"
        )));
    }
    use Reg::*;
    let mut a = Asm::new();
    // The verifier rejects unreachable instructions: emit only the blocks something jumps to.
    let (has_v4, has_v6) = (!s.v4.is_empty(), !s.v6.is_empty());
    if !has_v4 && !has_v6 {
        a.push(Op::AluImm(Alu::Mov, R0, XDP_PASS as i32));
        a.push(Op::Exit);
        return a.assemble();
    }
    let pass = a.label();
    let redirect = a.label();
    let ipv4 = a.label();
    let ipv6 = a.label();
    let v4_ours = a.label();
    let v6_ours = a.label();
    let v6_frag = a.label();
    let ports = a.label();

    // r6 = ctx, r2 = data, r3 = data_end.
    a.push(Op::AluReg(Alu::Mov, R6, R1));
    a.push(Op::Load(Size::W, R2, R6, MD_DATA));
    a.push(Op::Load(Size::W, R3, R6, MD_DATA_END));
    need(&mut a, ETH_HLEN, pass);
    // Ethertype, loaded little-endian: 0x0800 reads as 0x0008, 0x86dd as 0xdd86.
    a.push(Op::Load(Size::H, R5, R2, 12));
    if has_v4 {
        a.push(Op::JmpImm(Cond::Eq, R5, 0x0008, ipv4));
    }
    if has_v6 {
        a.push(Op::JmpImm(Cond::Eq, R5, 0xdd86, ipv6));
    }
    a.push(Op::Ja(pass));
    if has_v4 {
        ipv4_block(&mut a, s, [ipv4, v4_ours, redirect, ports, pass]);
    }
    if has_v6 {
        ipv6_block(&mut a, s, [ipv6, v6_ours, v6_frag, redirect, ports, pass]);
    }
    ports_block(&mut a, s, [ports, redirect, pass]);
    redirect_block(&mut a, verdict, redirect);
    a.bind(pass);
    a.push(Op::AluImm(Alu::Mov, R0, XDP_PASS as i32));
    a.push(Op::Exit);
    a.assemble()
}

/// IPv4: the fixed header must be there; destination one of ours.
fn ipv4_block(a: &mut Asm, s: &Steering, [ipv4, v4_ours, redirect, ports, pass]: [Label; 5]) {
    use Reg::*;
    a.bind(ipv4);
    need(a, ETH_HLEN + 20, pass);
    a.push(Op::Load(Size::W, R5, R2, (ETH_HLEN + 16) as i16));
    for addr in &s.v4 {
        a.push(Op::Jmp32Imm(
            Cond::Eq,
            R5,
            u32::from_le_bytes(addr.octets()),
            v4_ours,
        ));
    }
    a.push(Op::Ja(pass));
    a.bind(v4_ours);
    a.push(Op::Load(Size::B, R5, R2, (ETH_HLEN + 9) as i16));
    a.push(Op::JmpImm(Cond::Eq, R5, IPPROTO_ESP, redirect));
    a.push(Op::JmpImm(Cond::Ne, R5, IPPROTO_UDP, pass));
    // A UDP fragment to our address (MF set or offset != 0) carries no port in most pieces:
    // all of them go to the socket, which reassembles or drops.
    a.push(Op::Load(Size::H, R5, R2, (ETH_HLEN + 6) as i16));
    a.push(Op::Be16(R5));
    a.push(Op::JmpImm(Cond::Set, R5, 0x3fff, redirect));
    // r4 = start of the UDP header = data + 14 + 4 * IHL (IHL 5..15).
    a.push(Op::Load(Size::B, R5, R2, ETH_HLEN as i16));
    a.push(Op::AluImm(Alu::And, R5, 0x0f));
    a.push(Op::JmpImm(Cond::Lt, R5, 5, pass));
    a.push(Op::AluImm(Alu::Lsh, R5, 2));
    a.push(Op::AluReg(Alu::Mov, R4, R2));
    a.push(Op::AluImm(Alu::Add, R4, ETH_HLEN));
    a.push(Op::AluReg(Alu::Add, R4, R5));
    a.push(Op::AluReg(Alu::Mov, R5, R4));
    a.push(Op::AluImm(Alu::Add, R5, 8));
    a.push(Op::JmpReg(Cond::Gt, R5, R3, pass));
    a.push(Op::Load(Size::H, R5, R4, 2));
    a.push(Op::Be16(R5));
    a.push(Op::Ja(ports));
}

/// IPv6: fixed header; destination (16 bytes at +24) compared as four words.
fn ipv6_block(
    a: &mut Asm,
    s: &Steering,
    [ipv6, v6_ours, v6_frag, redirect, ports, pass]: [Label; 6],
) {
    use Reg::*;
    a.bind(ipv6);
    need(a, ETH_HLEN + 40, pass);
    for addr in &s.v6 {
        let next = a.label();
        let o = addr.octets();
        for w in 0..4 {
            let word = u32::from_le_bytes([o[4 * w], o[4 * w + 1], o[4 * w + 2], o[4 * w + 3]]);
            a.push(Op::Load(
                Size::W,
                R5,
                R2,
                (ETH_HLEN + 24 + 4 * w as i32) as i16,
            ));
            a.push(Op::Jmp32Imm(Cond::Ne, R5, word, next));
        }
        a.push(Op::Ja(v6_ours));
        a.bind(next);
    }
    a.push(Op::Ja(pass));
    a.bind(v6_ours);
    a.push(Op::Load(Size::B, R5, R2, (ETH_HLEN + 6) as i16));
    a.push(Op::JmpImm(Cond::Eq, R5, IPPROTO_ESP, redirect));
    a.push(Op::JmpImm(Cond::Eq, R5, IPV6_FRAGMENT, v6_frag));
    a.push(Op::JmpImm(Cond::Ne, R5, IPPROTO_UDP, pass));
    need(a, ETH_HLEN + 40 + 8, pass);
    a.push(Op::Load(Size::H, R5, R2, (ETH_HLEN + 40 + 2) as i16));
    a.push(Op::Be16(R5));
    a.push(Op::Ja(ports));
    // Fragment header: steer fragments of UDP and ESP to our address (see IPv4).
    a.bind(v6_frag);
    need(a, ETH_HLEN + 40 + 8, pass);
    a.push(Op::Load(Size::B, R5, R2, (ETH_HLEN + 40) as i16));
    a.push(Op::JmpImm(Cond::Eq, R5, IPPROTO_ESP, redirect));
    a.push(Op::JmpImm(Cond::Eq, R5, IPPROTO_UDP, redirect));
    a.push(Op::Ja(pass));
}

/// r5 = UDP destination port in host order.
fn ports_block(a: &mut Asm, s: &Steering, [ports, redirect, pass]: [Label; 3]) {
    use Reg::*;
    a.bind(ports);
    for &(lo, hi) in &s.udp_ports {
        if lo == hi {
            a.push(Op::JmpImm(Cond::Eq, R5, i32::from(lo), redirect));
        } else if lo < hi {
            let next = a.label();
            a.push(Op::JmpImm(Cond::Lt, R5, i32::from(lo), next));
            a.push(Op::JmpImm(Cond::Le, R5, i32::from(hi), redirect));
            a.bind(next);
        }
    }
    a.push(Op::Ja(pass));
}

fn redirect_block(a: &mut Asm, verdict: Verdict, redirect: Label) {
    use Reg::*;
    a.bind(redirect);
    match verdict {
        Verdict::Redirect { xskmap_fd } => {
            a.push(Op::Load(Size::W, R2, R6, MD_RX_QUEUE_INDEX));
            a.push(Op::LoadMapFd(R1, xskmap_fd));
            // Flags: the low bits are the action when the map slot is empty.
            a.push(Op::AluImm(Alu::Mov, R3, XDP_PASS as i32));
            a.push(Op::Call(FN_REDIRECT_MAP));
            a.push(Op::Exit);
        }
        Verdict::Return(v) => {
            a.push(Op::AluImm(Alu::Mov, R0, v as i32));
            a.push(Op::Exit);
        }
    }
}

/// `if data + n > data_end goto fail` (r2 = data, r3 = data_end; clobbers r4). After it the
/// verifier knows `n` bytes from r2 are readable.
fn need(a: &mut Asm, n: i32, fail: Label) {
    a.push(Op::AluReg(Alu::Mov, Reg::R4, Reg::R2));
    a.push(Op::AluImm(Alu::Add, Reg::R4, n));
    a.push(Op::JmpReg(Cond::Gt, Reg::R4, Reg::R3, fail));
}
