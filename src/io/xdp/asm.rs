//! A tiny eBPF assembler: an enum of the instructions the steering program uses, forward and
//! backward labels, and the encoding into 64-bit instruction words.
//!
//! Owns: the instruction encoding only (no knowledge of XDP). An instruction word is, from the
//! lowest byte up: `code` (8 bits), `dst_reg` (low nibble) and `src_reg` (high nibble) of one
//! byte, a signed 16-bit `off` and a signed 32-bit `imm` — `struct bpf_insn` on a little-endian
//! machine. `ld_imm64` takes two words. Jump offsets count words from the instruction after
//! the jump; [`Asm::assemble`] resolves labels into them.

use std::fmt;

/// The eleven eBPF registers (`R10` is the read-only frame pointer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reg {
    R0 = 0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
}

/// Memory access width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }
}

/// Arithmetic operations (64-bit, `BPF_ALU64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    Add,
    Sub,
    Or,
    And,
    Lsh,
    Rsh,
    Xor,
    Mov,
}

impl Alu {
    fn bits(self) -> u8 {
        match self {
            Alu::Add => 0x00,
            Alu::Sub => 0x10,
            Alu::Or => 0x40,
            Alu::And => 0x50,
            Alu::Lsh => 0x60,
            Alu::Rsh => 0x70,
            Alu::Xor => 0xa0,
            Alu::Mov => 0xb0,
        }
    }
}

/// Jump conditions (unsigned comparisons only; the program needs no signed ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Set,
}

impl Cond {
    fn bits(self) -> u8 {
        match self {
            Cond::Eq => 0x10,
            Cond::Gt => 0x20,
            Cond::Ge => 0x30,
            Cond::Set => 0x40,
            Cond::Ne => 0x50,
            Cond::Lt => 0xa0,
            Cond::Le => 0xb0,
        }
    }
}

/// A jump target; create with [`Asm::label`], place with [`Asm::bind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// One instruction (or a label position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `dst = dst OP imm` (64-bit).
    AluImm(Alu, Reg, i32),
    /// `dst = dst OP src` (64-bit).
    AluReg(Alu, Reg, Reg),
    /// `dst = htobe16(dst)`: byte-swap the low 16 bits into host order (and zero the rest).
    Be16(Reg),
    /// `dst = *(size *)(src + off)`.
    Load(Size, Reg, Reg, i16),
    /// `dst = map` for a map file descriptor (`ld_imm64` with `BPF_PSEUDO_MAP_FD`; two words).
    LoadMapFd(Reg, i32),
    /// Unconditional jump.
    Ja(Label),
    /// `if dst COND imm goto` (64-bit compare, imm sign-extended).
    JmpImm(Cond, Reg, i32, Label),
    /// `if dst COND src goto` (64-bit compare).
    JmpReg(Cond, Reg, Reg, Label),
    /// `if (u32)dst COND (u32)imm goto` (`BPF_JMP32`).
    Jmp32Imm(Cond, Reg, u32, Label),
    /// Call helper number `n`.
    Call(i32),
    Exit,
}

/// An assembly error (a label used but never bound, a jump out of range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsmError(pub String);

impl fmt::Display for AsmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bpf asm: {}", self.0)
    }
}

impl std::error::Error for AsmError {}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU: u8 = 0x04;
const CLASS_ALU64: u8 = 0x07;
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_END: u8 = 0xd0;
const TO_BE: u8 = 0x08;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: u8 = 1;

/// Encode one instruction word.
pub fn encode(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst as u8) << 8)
        | (u64::from(src as u8) << 12)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// A program under construction.
#[derive(Debug, Default)]
pub struct Asm {
    ops: Vec<Op>,
    /// For each label, the index in `ops` it was bound before (`None` until bound).
    labels: Vec<Option<usize>>,
}

impl Asm {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Bind `l` to the next instruction pushed.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.ops.len());
    }

    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Number of words `op` occupies.
    fn width(op: &Op) -> usize {
        match op {
            Op::LoadMapFd(..) => 2,
            _ => 1,
        }
    }

    /// Resolve labels and encode.
    pub fn assemble(&self) -> Result<Vec<u64>, AsmError> {
        // Word position of every op (and of the end, for labels bound last).
        let mut pos = Vec::with_capacity(self.ops.len() + 1);
        let mut p = 0usize;
        for op in &self.ops {
            pos.push(p);
            p += Self::width(op);
        }
        pos.push(p);
        let target = |l: Label, at: usize| -> Result<i16, AsmError> {
            let idx = self
                .labels
                .get(l.0)
                .copied()
                .flatten()
                .ok_or_else(|| AsmError(format!("label {} never bound", l.0)))?;
            let rel = pos[idx] as i64 - (pos[at] as i64 + 1);
            i16::try_from(rel).map_err(|_| AsmError(format!("jump {rel} out of range")))
        };
        let mut out = Vec::with_capacity(p);
        let r0 = Reg::R0;
        for (i, op) in self.ops.iter().enumerate() {
            match *op {
                Op::AluImm(a, d, imm) => {
                    out.push(encode(CLASS_ALU64 | a.bits() | SRC_K, d, r0, 0, imm))
                }
                Op::AluReg(a, d, s) => out.push(encode(CLASS_ALU64 | a.bits() | SRC_X, d, s, 0, 0)),
                Op::Be16(d) => out.push(encode(CLASS_ALU | OP_END | TO_BE, d, r0, 0, 16)),
                Op::Load(sz, d, s, off) => {
                    out.push(encode(CLASS_LDX | MODE_MEM | sz.bits(), d, s, off, 0))
                }
                Op::LoadMapFd(d, fd) => {
                    // src_reg = BPF_PSEUDO_MAP_FD (1) tells the kernel imm is a map fd.
                    let src = Reg::R1;
                    debug_assert_eq!(src as u8, PSEUDO_MAP_FD);
                    out.push(encode(CLASS_LD | MODE_IMM | Size::DW.bits(), d, src, 0, fd));
                    out.push(0);
                }
                Op::Ja(l) => out.push(encode(CLASS_JMP | OP_JA, r0, r0, target(l, i)?, 0)),
                Op::JmpImm(c, d, imm, l) => out.push(encode(
                    CLASS_JMP | c.bits() | SRC_K,
                    d,
                    r0,
                    target(l, i)?,
                    imm,
                )),
                Op::JmpReg(c, d, s, l) => {
                    out.push(encode(CLASS_JMP | c.bits() | SRC_X, d, s, target(l, i)?, 0))
                }
                Op::Jmp32Imm(c, d, imm, l) => out.push(encode(
                    CLASS_JMP32 | c.bits() | SRC_K,
                    d,
                    r0,
                    target(l, i)?,
                    imm as i32,
                )),
                Op::Call(n) => out.push(encode(CLASS_JMP | OP_CALL, r0, r0, 0, n)),
                Op::Exit => out.push(encode(CLASS_JMP | OP_EXIT, r0, r0, 0, 0)),
            }
        }
        Ok(out)
    }
}
