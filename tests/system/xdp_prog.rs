//! The steering program: assembler encodings, the kernel verifier, and the classification
//! of hand-built frames through BPF_PROG_TEST_RUN (no network needed, but root for bpf(2)).

use std::ffi::CString;

use crate::support::xdp::*;
use pcscf::io::xdp::asm::{Alu, Asm, Cond, Op, Reg, Size};
use pcscf::io::xdp::bpf::{BPF_MAP_TYPE_XSKMAP, BPF_PROG_TYPE_XDP, Map, Prog, XDP_PASS, XDP_TX};
use pcscf::io::xdp::prog::{self, Verdict};
use pcscf::io::xdp::{PROG_NAME, Steering};

#[test]
fn xdp_asm_encodes_known_words() {
    let mut a = Asm::new();
    let l = a.label();
    a.push(Op::AluImm(Alu::Mov, Reg::R0, 2)); // b7 00 0000 02000000
    a.push(Op::Load(Size::W, Reg::R2, Reg::R1, 4)); // 61 12 0400 00000000
    a.push(Op::JmpImm(Cond::Eq, Reg::R5, 50, l)); // 15 05 0100 32000000
    a.push(Op::Be16(Reg::R5)); // dc 05 0000 10000000
    a.bind(l);
    a.push(Op::LoadMapFd(Reg::R1, 7)); // 18 11 0000 07000000, 0
    a.push(Op::Jmp32Imm(Cond::Ne, Reg::R5, 0xfe80_0000, l)); // 56 05 fdff 000080fe
    a.push(Op::Exit); // 95
    let w = a.assemble().unwrap();
    assert_eq!(
        w,
        vec![
            0x0000_0002_0000_00b7,
            0x0000_0000_0004_1261,
            0x0000_0032_0001_0515,
            0x0000_0010_0000_05dc,
            0x0000_0007_0000_1118,
            0,
            0xfe80_0000_fffd_0556,
            0x95,
        ]
    );
    let mut b = Asm::new();
    let never = b.label();
    b.push(Op::Ja(never));
    assert!(b.assemble().is_err(), "unbound label must be an error");
}

fn steering() -> Steering {
    Steering {
        v4: vec![V4_A.into(), [192, 168, 200, 1].into()],
        v6: vec![V6_A.parse().unwrap(), "2001:db8::5".parse().unwrap()],
        udp_ports: vec![(5060, 5060), (6100, 6199)],
    }
}

fn load(verdict: Verdict) -> Prog {
    let insns = prog::build(&steering(), verdict).expect("build");
    Prog::load(
        BPF_PROG_TYPE_XDP,
        &insns,
        PROG_NAME,
        &CString::new("Dual MIT/GPL").unwrap(),
    )
    .expect("the verifier must accept the steering program")
}

#[test]
fn xdp_program_passes_verifier_and_has_our_name() {
    require_root();
    let map = Map::create(BPF_MAP_TYPE_XSKMAP, 4, 4, 4, "t_xsks").expect("XSKMAP");
    let p = load(Verdict::Redirect {
        xskmap_fd: map.raw_fd(),
    });
    let info = p.info().unwrap();
    assert_eq!(info.name, PROG_NAME);
    assert_eq!(info.prog_type, BPF_PROG_TYPE_XDP);
    // A matching frame with no socket in the XSKMAP falls back to the kernel.
    let f = eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(1234, 5060, b"x")));
    assert_eq!(p.test_run(&f).unwrap(), XDP_PASS);
    // Partial steering sets load too (the verifier rejects unreachable code, so the builder
    // must leave out the blocks nothing jumps to).
    let v4_only = Steering {
        v4: vec![V4_A.into()],
        ..Default::default()
    };
    let v6_only = Steering {
        v6: vec![V6_A.parse().unwrap()],
        udp_ports: vec![(5060, 5060)],
        ..Default::default()
    };
    for (name, st) in [("t_v4", v4_only), ("t_v6", v6_only)] {
        let insns = prog::build(&st, Verdict::Return(XDP_TX)).unwrap();
        let p = Prog::load(BPF_PROG_TYPE_XDP, &insns, name, c"GPL")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let esp4 = eth(0x0800, &ipv4(V4_B, V4_A, 50, &[0; 8]));
        let sip6 = eth(0x86dd, &ipv6(v6(V6_B), v6(V6_A), 17, &udp(1, 5060, b"x")));
        let want = if name == "t_v4" {
            (XDP_TX, XDP_PASS)
        } else {
            (XDP_PASS, XDP_TX)
        };
        assert_eq!(
            (p.test_run(&esp4).unwrap(), p.test_run(&sip6).unwrap()),
            want,
            "{name}"
        );
    }
    // An empty steering set also loads (no addresses: everything passes).
    let insns = prog::build(&Steering::default(), Verdict::Return(XDP_TX)).unwrap();
    let p = Prog::load(
        BPF_PROG_TYPE_XDP,
        &insns,
        "t_empty",
        &CString::new("GPL").unwrap(),
    )
    .unwrap();
    assert_eq!(p.test_run(&f).unwrap(), XDP_PASS);
}

#[test]
fn xdp_program_verifier_error_carries_log() {
    require_root();
    // Reads r2 uninitialised: the verifier refuses, and the error must say why.
    let mut a = Asm::new();
    a.push(Op::AluReg(Alu::Mov, Reg::R0, Reg::R2));
    a.push(Op::Exit);
    let e = Prog::load(
        BPF_PROG_TYPE_XDP,
        &a.assemble().unwrap(),
        "t_bad",
        &CString::new("GPL").unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("verifier log") && e.contains("R2"), "{e}");
}

#[test]
fn xdp_program_classifies_frames() {
    require_root();
    // Matching frames return XDP_TX in this build, so the verdict is visible.
    let p = load(Verdict::Return(XDP_TX));
    let (a6, b6) = (v6(V6_A), v6(V6_B));
    let esp = [0u8, 0, 0x10, 0, 0, 0, 0, 1, 0xaa, 0xbb];
    let icmp = [8u8, 0, 0, 0, 0, 1, 0, 1];
    let mut v4_opts = ipv4(V4_B, V4_A, 17, &[]);
    // IHL 6: one 4-byte option (NOPs) before the UDP header.
    v4_opts[0] = 0x46;
    v4_opts.extend_from_slice(&[1, 1, 1, 1]);
    v4_opts.extend_from_slice(&udp(1, 5060, b"opt"));
    let tot = v4_opts.len() as u16;
    v4_opts[2..4].copy_from_slice(&tot.to_be_bytes());
    let mut v4_frag = ipv4(V4_B, V4_A, 17, b"later piece, no udp header");
    v4_frag[6] = 0x00;
    v4_frag[7] = 0x10; // offset 16*8, MF clear: a last fragment
    let mut v6_frag_l4 = vec![17u8, 0, 0, 0x10, 0, 0, 0, 1];
    v6_frag_l4.extend_from_slice(b"piece");
    let mut v6_frag_tcp = v6_frag_l4.clone();
    v6_frag_tcp[0] = 6;
    let arp = {
        let mut f = eth(0x0806, &[0u8; 28]);
        f.truncate(42);
        f
    };
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        (
            "v4 udp 5060",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 5060, b"sip"))),
            XDP_TX,
        ),
        (
            "v4 udp 6100 lo",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 6100, b"p"))),
            XDP_TX,
        ),
        (
            "v4 udp 6199 hi",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 6199, b"p"))),
            XDP_TX,
        ),
        (
            "v4 udp 6200",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 6200, b"p"))),
            XDP_PASS,
        ),
        (
            "v4 udp 6099",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 6099, b"p"))),
            XDP_PASS,
        ),
        (
            "v4 udp 53",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &udp(4000, 53, b"dns"))),
            XDP_PASS,
        ),
        (
            "v4 second addr",
            eth(
                0x0800,
                &ipv4(V4_B, [192, 168, 200, 1], 17, &udp(1, 5060, b"")),
            ),
            XDP_TX,
        ),
        (
            "v4 other addr",
            eth(0x0800, &ipv4(V4_A, V4_B, 17, &udp(4000, 5060, b"sip"))),
            XDP_PASS,
        ),
        ("v4 esp", eth(0x0800, &ipv4(V4_B, V4_A, 50, &esp)), XDP_TX),
        (
            "v4 esp other addr",
            eth(0x0800, &ipv4(V4_A, [10, 9, 9, 9], 50, &esp)),
            XDP_PASS,
        ),
        (
            "v4 icmp",
            eth(0x0800, &ipv4(V4_B, V4_A, 1, &icmp)),
            XDP_PASS,
        ),
        (
            "v4 tcp 5060",
            eth(0x0800, &ipv4(V4_B, V4_A, 6, &udp(1, 5060, b"tcp-ish"))),
            XDP_PASS,
        ),
        ("v4 options", eth(0x0800, &v4_opts), XDP_TX),
        ("v4 udp fragment", eth(0x0800, &v4_frag), XDP_TX),
        (
            "v4 truncated udp",
            eth(0x0800, &ipv4(V4_B, V4_A, 17, &[0x13, 0xc4])),
            XDP_PASS,
        ),
        ("v4 truncated ip", eth(0x0800, &[0x45, 0, 0, 20]), XDP_PASS),
        ("arp", arp, XDP_PASS),
        (
            "v6 udp 5060",
            eth(0x86dd, &ipv6(b6, a6, 17, &udp(4000, 5060, b"sip"))),
            XDP_TX,
        ),
        (
            "v6 udp 6150",
            eth(0x86dd, &ipv6(b6, a6, 17, &udp(4000, 6150, b"p"))),
            XDP_TX,
        ),
        (
            "v6 udp 53",
            eth(0x86dd, &ipv6(b6, a6, 17, &udp(4000, 53, b"dns"))),
            XDP_PASS,
        ),
        (
            "v6 second addr",
            eth(0x86dd, &ipv6(b6, v6("2001:db8::5"), 17, &udp(1, 5060, b""))),
            XDP_TX,
        ),
        (
            "v6 other addr",
            eth(0x86dd, &ipv6(a6, b6, 17, &udp(4000, 5060, b"sip"))),
            XDP_PASS,
        ),
        (
            "v6 near addr",
            eth(
                0x86dd,
                &ipv6(b6, v6("fd00:202::3"), 17, &udp(4000, 5060, b"x")),
            ),
            XDP_PASS,
        ),
        ("v6 esp", eth(0x86dd, &ipv6(b6, a6, 50, &esp)), XDP_TX),
        (
            "v6 icmpv6",
            eth(0x86dd, &ipv6(b6, a6, 58, &[135, 0, 0, 0])),
            XDP_PASS,
        ),
        (
            "v6 fragment udp",
            eth(0x86dd, &ipv6(b6, a6, 44, &v6_frag_l4)),
            XDP_TX,
        ),
        (
            "v6 fragment tcp",
            eth(0x86dd, &ipv6(b6, a6, 44, &v6_frag_tcp)),
            XDP_PASS,
        ),
        (
            "v6 hop-by-hop",
            eth(0x86dd, &ipv6(b6, a6, 0, &[17, 0, 1, 4, 0, 0, 0, 0])),
            XDP_PASS,
        ),
        (
            "v6 truncated udp",
            eth(0x86dd, &ipv6(b6, a6, 17, &[0x13, 0xc4, 0, 0])),
            XDP_PASS,
        ),
        ("vlan", eth(0x8100, &[0u8; 64]), XDP_PASS),
    ];
    for (name, frame, want) in cases {
        let got = p.test_run(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}: verdict {got}, want {want}");
    }
}
