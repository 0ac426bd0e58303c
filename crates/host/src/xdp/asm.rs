//! A small eBPF assembler: instructions as values, and a program builder whose jumps name
//! labels, so that the responder reads as a listing and no offset is counted by hand.
//!
//! Only what the responder uses is here. The encoding is the kernel's `struct bpf_insn`
//! (`include/uapi/linux/bpf.h`): an 8-bit opcode, two 4-bit registers, a signed 16-bit
//! offset and a signed 32-bit immediate, in the host's byte order.

use std::collections::BTreeMap;

/// An eBPF register, `r0` to `r10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reg(u8);

/// Return value of calls and of the program.
pub(crate) const R0: Reg = Reg(0);
/// First argument; the program's context at entry.
pub(crate) const R1: Reg = Reg(1);
pub(crate) const R2: Reg = Reg(2);
pub(crate) const R3: Reg = Reg(3);
pub(crate) const R4: Reg = Reg(4);
/// Callee-saved registers (`r6` to `r9`): they keep their value across helper calls.
pub(crate) const R6: Reg = Reg(6);
pub(crate) const R7: Reg = Reg(7);
pub(crate) const R8: Reg = Reg(8);
pub(crate) const R9: Reg = Reg(9);
/// The read-only frame pointer (the stack grows down from it).
pub(crate) const R10: Reg = Reg(10);

// Instruction classes.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
// Sizes of loads and stores.
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const DW: u8 = 0x18;
// Modes of loads and stores.
const IMM: u8 = 0x00;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
// Operand source: the immediate (K) or the source register (X).
const K: u8 = 0x00;
const X: u8 = 0x08;
/// `BPF_END`'s flag for "convert to big-endian" (in the source bit).
const TO_BE: u8 = 0x08;
/// `src` of an `LD_IMM64` whose immediate is a map's file descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// The atomic operation "add" (`BPF_ADD` in the immediate of a `BPF_ATOMIC` store).
const ATOMIC_ADD: i32 = 0x00;

/// An arithmetic operation (`BPF_OP` of the ALU classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Alu {
    Add = 0x00,
    Or = 0x40,
    And = 0x50,
    Rsh = 0x70,
    Xor = 0xa0,
    Mov = 0xb0,
}

/// A conditional jump's comparison (`BPF_OP` of the jump class), unsigned where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Cond {
    Eq = 0x10,
    Gt = 0x20,
    Ne = 0x50,
    Lt = 0xa0,
}

const JA: u8 = 0x00;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const END: u8 = 0xd0;

/// The width of a memory access (the responder needs no 64-bit one but the atomic add).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    B,
    H,
    W,
}

/// One instruction, `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Self {
        Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        }
    }

    /// The instruction as the kernel reads it from memory.
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        // The register nibbles are C bit-fields: `dst_reg` comes first, which is the low
        // nibble on a little-endian machine and the high one on a big-endian one.
        let regs = if cfg!(target_endian = "little") {
            (self.src << 4) | (self.dst & 0x0f)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let [o0, o1] = self.off.to_ne_bytes();
        let [i0, i1, i2, i3] = self.imm.to_ne_bytes();
        [self.code, regs, o0, o1, i0, i1, i2, i3]
    }

    /// The instruction as one 64-bit word, as the kernel's `struct bpf_insn` reads.
    pub(crate) fn encode(self) -> u64 {
        u64::from_ne_bytes(self.to_bytes())
    }

    /// `dst = *(size *)(src + off)`, zero-extended.
    pub(crate) const fn ldx(size: Size, dst: Reg, src: Reg, off: i16) -> Self {
        Insn::new(LDX | MEM | size_bits(size), dst, src, off, 0)
    }

    /// `dst = *(u8 *)(src + off)`.
    pub(crate) const fn ldx_b(dst: Reg, src: Reg, off: i16) -> Self {
        Insn::ldx(Size::B, dst, src, off)
    }

    /// `dst = *(u16 *)(src + off)`.
    pub(crate) const fn ldx_h(dst: Reg, src: Reg, off: i16) -> Self {
        Insn::ldx(Size::H, dst, src, off)
    }

    /// `dst = *(u32 *)(src + off)`.
    pub(crate) const fn ldx_w(dst: Reg, src: Reg, off: i16) -> Self {
        Insn::ldx(Size::W, dst, src, off)
    }

    /// `*(size *)(dst + off) = src`.
    pub(crate) const fn stx(size: Size, dst: Reg, off: i16, src: Reg) -> Self {
        Insn::new(STX | MEM | size_bits(size), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub(crate) const fn st(size: Size, dst: Reg, off: i16, imm: i32) -> Self {
        Insn::new(ST | MEM | size_bits(size), dst, R0, off, imm)
    }

    /// `lock *(u64 *)(dst + off) += src`.
    pub(crate) const fn atomic_add64(dst: Reg, off: i16, src: Reg) -> Self {
        Insn::new(STX | ATOMIC | DW, dst, src, off, ATOMIC_ADD)
    }

    /// `dst = dst op imm`, on 64 bits (the immediate is sign-extended).
    pub(crate) const fn alu64_imm(op: Alu, dst: Reg, imm: i32) -> Self {
        Insn::new(ALU64 | K | op as u8, dst, R0, 0, imm)
    }

    /// `dst = dst op src`, on 64 bits.
    pub(crate) const fn alu64_reg(op: Alu, dst: Reg, src: Reg) -> Self {
        Insn::new(ALU64 | X | op as u8, dst, src, 0, 0)
    }

    /// `dst = imm`, on 64 bits (sign-extended).
    pub(crate) const fn mov64_imm(dst: Reg, imm: i32) -> Self {
        Insn::alu64_imm(Alu::Mov, dst, imm)
    }

    /// `dst = src`, on 64 bits.
    pub(crate) const fn mov64_reg(dst: Reg, src: Reg) -> Self {
        Insn::alu64_reg(Alu::Mov, dst, src)
    }

    /// `dst = htobe16(dst)`: the low 16 bits in network order read as a number (a swap on a
    /// little-endian machine), the rest cleared.
    pub(crate) const fn be16(dst: Reg) -> Self {
        Insn::new(ALU | END | TO_BE, dst, R0, 0, 16)
    }

    /// `r0 = helper(r1, ..., r5)`; r1 to r5 are clobbered.
    pub(crate) const fn call(helper: i32) -> Self {
        Insn::new(JMP | CALL, R0, R0, 0, helper)
    }

    /// Returns `r0`.
    pub(crate) const fn exit() -> Self {
        Insn::new(JMP | EXIT, R0, R0, 0, 0)
    }

    /// `dst = map` (the 16-byte `LD_IMM64`; the kernel puts the map's address in place of
    /// its file descriptor when it loads the program).
    pub(crate) const fn ld_map_fd(dst: Reg, fd: i32) -> [Self; 2] {
        [
            Insn::new(LD | DW | IMM, dst, Reg(PSEUDO_MAP_FD), 0, fd),
            Insn::new(0, R0, R0, 0, 0),
        ]
    }

    /// `if dst cond imm goto pc + 1 + off` (64-bit, the immediate sign-extended).
    const fn jmp_imm(cond: Cond, dst: Reg, imm: i32, off: i16) -> Self {
        Insn::new(JMP | K | cond as u8, dst, R0, off, imm)
    }

    /// `if dst cond src goto pc + 1 + off` (64-bit).
    const fn jmp_reg(cond: Cond, dst: Reg, src: Reg, off: i16) -> Self {
        Insn::new(JMP | X | cond as u8, dst, src, off, 0)
    }

    /// `goto pc + 1 + off`.
    const fn ja(off: i16) -> Self {
        Insn::new(JMP | JA, R0, R0, off, 0)
    }

    fn is_jump(&self) -> bool {
        let op = self.code & 0xf0;
        self.code & 0x07 == JMP && op != CALL && op != EXIT
    }
}

const fn size_bits(size: Size) -> u8 {
    match size {
        Size::B => B,
        Size::H => H,
        Size::W => W,
    }
}

/// A program that does not assemble: a mistake in the listing, never in the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AsmError {
    /// A jump names a label that is never placed.
    #[error("Jump at {at} to unknown label {label:?}")]
    UnknownLabel { at: usize, label: &'static str },
    /// A label is placed twice.
    #[error("Label {0:?} placed twice")]
    DuplicateLabel(&'static str),
    /// A jump's distance does not fit its 16-bit offset.
    #[error("Jump at {at} to label {label:?} is too far")]
    TooFar { at: usize, label: &'static str },
}

/// A program being written: instructions, labels, and jumps whose targets are labels,
/// resolved by [`Asm::finish`]. Positions count instruction slots, so an `LD_IMM64` counts
/// two, as it does for the kernel.
#[derive(Debug, Default)]
pub(crate) struct Asm {
    insns: Vec<Insn>,
    labels: BTreeMap<&'static str, usize>,
    duplicate: Option<&'static str>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    pub(crate) fn new() -> Self {
        Asm::default()
    }

    /// Appends instructions.
    pub(crate) fn push(&mut self, insns: impl IntoIterator<Item = Insn>) -> &mut Self {
        self.insns.extend(insns);
        self
    }

    /// Places `name` at the next instruction.
    pub(crate) fn label(&mut self, name: &'static str) -> &mut Self {
        if self.labels.insert(name, self.insns.len()).is_some() {
            self.duplicate.get_or_insert(name);
        }
        self
    }

    fn jump_to(&mut self, insn: Insn, label: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), label));
        self.insns.push(insn);
        self
    }

    /// `if dst cond imm goto label`.
    pub(crate) fn jmp_imm(
        &mut self,
        cond: Cond,
        dst: Reg,
        imm: i32,
        label: &'static str,
    ) -> &mut Self {
        self.jump_to(Insn::jmp_imm(cond, dst, imm, 0), label)
    }

    /// `if dst cond src goto label`.
    pub(crate) fn jmp_reg(
        &mut self,
        cond: Cond,
        dst: Reg,
        src: Reg,
        label: &'static str,
    ) -> &mut Self {
        self.jump_to(Insn::jmp_reg(cond, dst, src, 0), label)
    }

    /// `if dst == imm goto label`.
    pub(crate) fn jeq_imm(&mut self, dst: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.jmp_imm(Cond::Eq, dst, imm, label)
    }

    /// `if dst != imm goto label`.
    pub(crate) fn jne_imm(&mut self, dst: Reg, imm: i32, label: &'static str) -> &mut Self {
        self.jmp_imm(Cond::Ne, dst, imm, label)
    }

    /// `goto label`.
    pub(crate) fn ja(&mut self, label: &'static str) -> &mut Self {
        self.jump_to(Insn::ja(0), label)
    }

    /// The program, every jump pointed at its label.
    pub(crate) fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(name) = self.duplicate {
            return Err(AsmError::DuplicateLabel(name));
        }
        for &(at, label) in &self.jumps {
            let target = *self
                .labels
                .get(label)
                .ok_or(AsmError::UnknownLabel { at, label })?;
            // Offsets count from the instruction after the jump.
            let off = i64::try_from(target).unwrap_or(i64::MAX) - (at as i64 + 1);
            let off = i16::try_from(off).map_err(|_| AsmError::TooFar { at, label })?;
            debug_assert!(self.insns[at].is_jump());
            self.insns[at].off = off;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_where_struct_bpf_insn_has_them() {
        // r3 = *(u16 *)(r7 + 12): 0x69, dst 3, src 7, off 12.
        let insn = Insn::ldx_h(R3, R7, 12);
        assert_eq!(insn.code, 0x69);
        if cfg!(target_endian = "little") {
            assert_eq!(insn.encode(), 0x0000_0000_000c_7369);
        }
        assert_eq!(insn.to_bytes()[0], 0x69);
        // Negative offsets and immediates keep their two's complement bits.
        let st = Insn::st(Size::W, R10, -4, -1);
        assert_eq!(st.code, 0x62);
        if cfg!(target_endian = "little") {
            assert_eq!(st.encode(), 0xffff_ffff_fffc_0a62);
        }
        assert_eq!(Insn::exit().encode() & 0xff, 0x95);
        assert_eq!(
            Insn::call(1).encode(),
            u64::from_ne_bytes([0x85, 0, 0, 0, 1, 0, 0, 0])
        );
    }

    #[test]
    fn opcodes_match_the_kernel_headers() {
        assert_eq!(Insn::mov64_imm(R0, 2).code, 0xb7); // BPF_ALU64 | BPF_MOV | BPF_K
        assert_eq!(Insn::mov64_reg(R9, R0).code, 0xbf); // BPF_ALU64 | BPF_MOV | BPF_X
        assert_eq!(Insn::alu64_imm(Alu::Add, R2, 14).code, 0x07);
        assert_eq!(Insn::alu64_reg(Alu::Add, R3, R4).code, 0x0f);
        assert_eq!(Insn::alu64_imm(Alu::Rsh, R4, 16).code, 0x77);
        assert_eq!(Insn::alu64_imm(Alu::Xor, R3, 0xffff).code, 0xa7);
        assert_eq!(Insn::be16(R3).code, 0xdc); // BPF_ALU | BPF_END | BPF_TO_BE
        assert_eq!(Insn::ldx_b(R3, R7, 0).code, 0x71);
        assert_eq!(Insn::ldx_w(R3, R7, 0).code, 0x61);
        assert_eq!(Insn::stx(Size::H, R7, 0, R3).code, 0x6b);
        assert_eq!(Insn::st(Size::B, R7, 0, 0).code, 0x72);
        assert_eq!(Insn::atomic_add64(R9, 8, R1).code, 0xdb); // BPF_STX | BPF_ATOMIC | BPF_DW
        assert_eq!(Insn::atomic_add64(R9, 8, R1).imm, 0x00); // BPF_ADD, no fetch
        assert_eq!(Insn::jmp_imm(Cond::Eq, R3, 0, 0).code, 0x15);
        assert_eq!(Insn::jmp_imm(Cond::Ne, R3, 0, 0).code, 0x55);
        assert_eq!(Insn::jmp_reg(Cond::Gt, R2, R8, 0).code, 0x2d);
        assert_eq!(Insn::jmp_imm(Cond::Lt, R3, 28, 0).code, 0xa5);
        assert_eq!(Insn::ja(0).code, 0x05);
    }

    #[test]
    fn ld_map_fd_is_two_slots_with_the_fd_in_the_first() {
        let [first, second] = Insn::ld_map_fd(R1, 7);
        assert_eq!(first.code, 0x18); // BPF_LD | BPF_DW | BPF_IMM
        assert_eq!((first.dst, first.src, first.off, first.imm), (1, 1, 0, 7));
        if cfg!(target_endian = "little") {
            assert_eq!(first.encode(), 0x0000_0007_0000_1118);
        }
        assert_eq!(second.encode(), 0, "the upper half of a map fd is zero");
    }

    #[test]
    fn jumps_point_at_their_labels_forward_and_back() {
        let mut a = Asm::new();
        a.label("top") // 0
            .jeq_imm(R3, 1, "end") // 0 -> 5
            .push(Insn::ld_map_fd(R1, 3)) // 1, 2
            .jmp_reg(Cond::Gt, R2, R8, "top") // 3 -> 0
            .ja("end") // 4 -> 5
            .label("end")
            .push([Insn::exit()]); // 5
        let p = a.finish().expect("assembles");
        assert_eq!(p.len(), 6);
        assert_eq!(p[0].off, 4, "1 + 4 = 5, past the two slots of LD_IMM64");
        assert_eq!(p[3].off, -4, "4 - 4 = 0");
        assert_eq!(p[4].off, 0, "a jump to the next instruction");
    }

    #[test]
    fn unknown_and_duplicate_labels_are_refused() {
        let mut a = Asm::new();
        a.ja("nowhere").push([Insn::exit()]);
        assert_eq!(
            a.finish(),
            Err(AsmError::UnknownLabel {
                at: 0,
                label: "nowhere"
            })
        );
        let mut a = Asm::new();
        a.label("x").push([Insn::exit()]).label("x");
        assert_eq!(a.finish(), Err(AsmError::DuplicateLabel("x")));
    }

    #[test]
    fn a_jump_beyond_16_bits_is_refused() {
        let mut a = Asm::new();
        a.ja("far");
        a.push(std::iter::repeat_n(Insn::mov64_imm(R0, 0), 40_000));
        a.label("far").push([Insn::exit()]);
        assert_eq!(
            a.finish(),
            Err(AsmError::TooFar {
                at: 0,
                label: "far"
            })
        );
    }
}
