/// A small x86-64 encoder: the instructions the RISC-V translator emits, nothing more.
///
/// Written here rather than taken from asmjit or Zydis (Debian's libasmjit-dev, libzydis-dev):
/// the translator needs about forty forms, a Swift encoder emits them with no C++ bridge and
/// no allocation per instruction, and every form is checked byte for byte against binutils'
/// disassembler by `X86AssemblerTests`. Encodings: Intel SDM vol. 2, §2.1-2.2 (REX, ModRM,
/// SIB) and the instruction pages. Operands never come from the guest unchecked: registers
/// are an enum, immediates are typed, and memory operands are built from fixed bases.
package enum Reg: UInt8, Sendable, CaseIterable {
    case rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15

    var low: UInt8 { rawValue & 7 }
    var isExtended: Bool { rawValue >= 8 }
}

/// A memory operand `[base + index * scale + disp]`.
package struct Mem: Sendable {
    package var base: Reg
    package var index: Reg?
    package var scale: UInt8
    package var disp: Int32

    package init(_ base: Reg, _ disp: Int32 = 0) {
        self.base = base
        index = nil
        scale = 1
        self.disp = disp
    }

    package init(_ base: Reg, index: Reg, scale: UInt8 = 1, _ disp: Int32 = 0) {
        precondition(index != .rsp, "rsp cannot be an index register")
        precondition([1, 2, 4, 8].contains(scale), "scale must be 1, 2, 4 or 8")
        self.base = base
        self.index = index
        self.scale = scale
        self.disp = disp
    }
}

/// Condition codes (SDM vol. 1 appendix B), the low nibble of Jcc/SETcc/CMOVcc.
package enum Cond: UInt8, Sendable {
    case o, no, b, ae, e, ne, be, a, s, ns, p, np, l, ge, le, g
}

/// The eight classic ALU operations, numbered as their /digit in the 0x81 group.
package enum ALU: UInt8, Sendable {
    case add = 0, or = 1, adc = 2, sbb = 3, and = 4, sub = 5, xor = 6, cmp = 7
}

/// Shift and rotate operations, numbered as their /digit in the 0xC1/0xD3 groups.
package enum Shift: UInt8, Sendable {
    case rol = 0, ror = 1, shl = 4, shr = 5, sar = 7
}

/// Bit-test operations: /digit in 0F BA (immediate), and the 0F A3/AB/B3/BB register forms.
package enum BitTest: UInt8, Sendable {
    case bt = 4, bts = 5, btr = 6, btc = 7

    var registerOpcode: UInt8 {
        switch self {
        case .bt: return 0xa3
        case .bts: return 0xab
        case .btr: return 0xb3
        case .btc: return 0xbb
        }
    }
}

package struct Label: Hashable, Sendable {
    let id: Int
}

package struct X86Assembler: ~Copyable {
    /// The bytes emitted so far: `count` of them at `bytes`, which holds `capacity`. Plain
    /// memory rather than an array: an append to an array checks uniqueness and capacity
    /// through the runtime, byte by byte, and that was a third of the translation time (perf).
    /// Noncopyable, so no two assemblers share it.
    // SAFETY: `bytes` is allocated with `capacity` bytes in init and `grow`, freed once (deinit,
    // or `grow` after copying); `count <= capacity` always, and every write is below `count`
    // (`byte` grows first; `patch32` checks its offset).
    private var bytes: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    package private(set) var count = 0
    private var labels: [Int] = []
    private var fixups: [(at: Int, label: Int)] = []
    /// The address `code[0]` will have when it runs, for jumps to absolute addresses.
    package let origin: UInt

    package init(origin: UInt = 0) {
        self.origin = origin
        // Room for a typical block, so that translating one grows nothing (perf).
        capacity = 4096
        bytes = .allocate(capacity: capacity)
        labels.reserveCapacity(32)
        fixups.reserveCapacity(32)
    }

    deinit { bytes.deallocate() }

    /// The bytes emitted so far.
    package var code: [UInt8] { Array(UnsafeBufferPointer(start: bytes, count: count)) }

    /// The address the next byte will have when it runs.
    package var here: UInt { origin + UInt(count) }

    // MARK: - Labels

    package mutating func newLabel() -> Label {
        labels.append(-1)
        return Label(id: labels.count - 1)
    }

    package mutating func bind(_ label: Label) {
        precondition(labels[label.id] < 0, "label bound twice")
        labels[label.id] = count
    }

    /// Resolves every rel32 that names a label; each label used must be bound.
    package mutating func finish() -> [UInt8] {
        for fixup in fixups {
            let target = labels[fixup.label]
            precondition(target >= 0, "jump to an unbound label")
            patch32(at: fixup.at, Int32(target - (fixup.at + 4)))
        }
        fixups.removeAll()
        return code
    }

    private mutating func patch32(at offset: Int, _ value: Int32) {
        let v = UInt32(bitPattern: value)
        precondition(offset >= 0 && offset + 4 <= count, "patch outside the code")
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }

    // MARK: - Encoding core

    @inline(__always)
    private mutating func byte(_ b: UInt8) {
        if count == capacity { grow() }
        // SAFETY: count < capacity, the size of the allocation at `bytes`.
        bytes[count] = b
        count += 1
    }

    private mutating func grow() {
        let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
        larger.update(from: bytes, count: count)
        bytes.deallocate()
        bytes = larger
        capacity *= 2
    }

    private mutating func imm32(_ v: Int32) {
        let u = UInt32(bitPattern: v)
        byte(UInt8(truncatingIfNeeded: u))
        byte(UInt8(truncatingIfNeeded: u >> 8))
        byte(UInt8(truncatingIfNeeded: u >> 16))
        byte(UInt8(truncatingIfNeeded: u >> 24))
    }

    private mutating func imm64(_ v: UInt64) {
        for i in 0..<8 { byte(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
    }

    /// REX prefix (SDM §2.2.1) when needed: W for 64-bit operands, R/X/B extend the ModRM reg,
    /// SIB index and base/rm fields. `byteRegs` forces it so registers 4-7 mean spl..dil.
    private mutating func rex(w: Bool, reg: UInt8, index: Reg? = nil, base: UInt8, byteRegs: Bool = false) {
        let value: UInt8 = 0x40 | (w ? 8 : 0) | (reg >= 8 ? 4 : 0) | ((index?.isExtended ?? false) ? 2 : 0) | (base >= 8 ? 1 : 0)
        if value != 0x40 || byteRegs { byte(value) }
    }

    /// A register-direct operand: prefixes, REX, opcode, ModRM with mod = 11. `byteRegs` says
    /// `rm` is a byte register; `reg` is never one here (an opcode digit, or the 32/64-bit
    /// destination of movzx/movsx), so it must not force a REX of its own.
    /// One- or two-byte opcode (two-byte ones are 0F xx, written 0x0Fxx).
    @inline(__always)
    private mutating func opcode(_ value: UInt16) {
        if value > 0xff { byte(UInt8(value >> 8)) }
        byte(UInt8(truncatingIfNeeded: value))
    }

    private mutating func op(_ opcode: UInt16, w: Bool, reg: UInt8, rm: Reg, prefix: UInt8? = nil, byteRegs: Bool = false) {
        if let prefix { byte(prefix) }
        rex(w: w, reg: reg, base: rm.rawValue, byteRegs: byteRegs && rm.low >= 4)
        self.opcode(opcode)
        byte(0xc0 | (reg & 7) << 3 | rm.low)
    }

    /// A memory operand: prefixes, REX, opcode, ModRM, SIB and displacement (SDM tables 2-2, 2-3).
    private mutating func op(_ opcode: UInt16, w: Bool, reg: UInt8, mem m: Mem, prefix: UInt8? = nil, byteRegs: Bool = false) {
        if let prefix { byte(prefix) }
        rex(w: w, reg: reg, index: m.index, base: m.base.rawValue, byteRegs: byteRegs && reg & 7 >= 4)
        self.opcode(opcode)
        memoryOperand(reg: reg, m)
    }

    /// ModRM, SIB and displacement of a memory operand (SDM tables 2-2, 2-3).
    private mutating func memoryOperand(reg: UInt8, _ m: Mem) {
        let mod: UInt8
        // rbp/r13 as base has no mod = 00 form (that encoding means RIP-relative/disp32).
        if m.disp == 0 && m.base.low != 5 {
            mod = 0
        } else if Int8(exactly: m.disp) != nil {
            mod = 1
        } else {
            mod = 2
        }
        if m.index != nil || m.base.low == 4 {
            // rsp/r12 as base need a SIB byte; index 100 = none.
            byte(mod << 6 | (reg & 7) << 3 | 4)
            let scaleBits = UInt8(m.scale.trailingZeroBitCount)
            byte(scaleBits << 6 | (m.index?.low ?? 4) << 3 | m.base.low)
        } else {
            byte(mod << 6 | (reg & 7) << 3 | m.base.low)
        }
        if mod == 1 { byte(UInt8(bitPattern: Int8(m.disp))) } else if mod == 2 { imm32(m.disp) }
    }

    // MARK: - Moves

    /// mov dst, src (64-bit; 32-bit zero-extends when `w` is false).
    package mutating func mov(_ dst: Reg, _ src: Reg, w: Bool = true) {
        op(0x8b, w: w, reg: dst.rawValue, rm: src)
    }

    /// mov dst, imm: the shortest form that gives the same 64-bit value.
    package mutating func mov(_ dst: Reg, imm value: UInt64) {
        if value == 0 {
            alu(.xor, dst, dst, w: false)
        } else if value <= UInt64(UInt32.max) {
            rex(w: false, reg: 0, base: dst.rawValue)
            byte(0xb8 + dst.low)
            imm32(Int32(bitPattern: UInt32(value)))
        } else if let v = Int32(exactly: Int64(bitPattern: value)) {
            op(0xc7, w: true, reg: 0, rm: dst)
            imm32(v)
        } else {
            rex(w: true, reg: 0, base: dst.rawValue)
            byte(0xb8 + dst.low)
            imm64(value)
        }
    }

    /// mov r64, imm64 always in the 10-byte form (a value patched later keeps its place).
    package mutating func movabs(_ dst: Reg, imm value: UInt64) {
        rex(w: true, reg: 0, base: dst.rawValue)
        byte(0xb8 + dst.low)
        imm64(value)
    }

    /// Loads of 1, 2, 4 or 8 bytes into a 64-bit register, zero- or sign-extended.
    package mutating func load(_ dst: Reg, _ m: Mem, size: Int, signed: Bool) {
        switch (size, signed) {
        case (1, false): op(0x0fb6, w: false, reg: dst.rawValue, mem: m)
        case (1, true): op(0x0fbe, w: true, reg: dst.rawValue, mem: m)
        case (2, false): op(0x0fb7, w: false, reg: dst.rawValue, mem: m)
        case (2, true): op(0x0fbf, w: true, reg: dst.rawValue, mem: m)
        case (4, false): op(0x8b, w: false, reg: dst.rawValue, mem: m)
        case (4, true): op(0x63, w: true, reg: dst.rawValue, mem: m)
        default: op(0x8b, w: true, reg: dst.rawValue, mem: m)
        }
    }

    /// mov r64, [m]
    package mutating func load(_ dst: Reg, _ m: Mem) { load(dst, m, size: 8, signed: false) }

    /// Stores the low 1, 2, 4 or 8 bytes of `src`.
    package mutating func store(_ m: Mem, _ src: Reg, size: Int = 8) {
        switch size {
        case 1: op(0x88, w: false, reg: src.rawValue, mem: m, byteRegs: true)
        case 2: op(0x89, w: false, reg: src.rawValue, mem: m, prefix: 0x66)
        case 4: op(0x89, w: false, reg: src.rawValue, mem: m)
        default: op(0x89, w: true, reg: src.rawValue, mem: m)
        }
    }

    /// mov qword [m], imm32 (sign-extended).
    package mutating func store(_ m: Mem, imm value: Int32) {
        op(0xc7, w: true, reg: 0, mem: m)
        imm32(value)
    }

    package mutating func lea(_ dst: Reg, _ m: Mem) {
        op(0x8d, w: true, reg: dst.rawValue, mem: m)
    }

    /// movsxd dst, src32: sign-extends the low 32 bits.
    package mutating func movsxd(_ dst: Reg, _ src: Reg) {
        op(0x63, w: true, reg: dst.rawValue, rm: src)
    }

    /// movsx/movzx from the low 8 or 16 bits of `src` into a 64-bit register.
    package mutating func extend(_ dst: Reg, _ src: Reg, bits: Int, signed: Bool) {
        let opcode: UInt8 = (bits == 8 ? 0xb6 : 0xb7) | (signed ? 0x08 : 0)
        op(0x0f00 | UInt16(opcode), w: signed, reg: dst.rawValue, rm: src, byteRegs: bits == 8)
    }

    // MARK: - Arithmetic

    /// op dst, src (`w`: 64-bit, else 32-bit with the upper half zeroed).
    package mutating func alu(_ kind: ALU, _ dst: Reg, _ src: Reg, w: Bool = true) {
        op(UInt16(kind.rawValue << 3 | 1), w: w, reg: src.rawValue, rm: dst)
    }

    /// op dst, [m]
    package mutating func alu(_ kind: ALU, _ dst: Reg, _ m: Mem, w: Bool = true) {
        op(UInt16(kind.rawValue << 3 | 3), w: w, reg: dst.rawValue, mem: m)
    }

    /// op dst, imm32 (sign-extended to 64 bits when `w`).
    package mutating func alu(_ kind: ALU, _ dst: Reg, imm value: Int32, w: Bool = true) {
        if let small = Int8(exactly: value) {
            op(0x83, w: w, reg: kind.rawValue, rm: dst)
            byte(UInt8(bitPattern: small))
        } else {
            op(0x81, w: w, reg: kind.rawValue, rm: dst)
            imm32(value)
        }
    }

    /// op qword [m], imm32
    package mutating func alu(_ kind: ALU, _ m: Mem, imm value: Int32) {
        if let small = Int8(exactly: value) {
            op(0x83, w: true, reg: kind.rawValue, mem: m)
            byte(UInt8(bitPattern: small))
        } else {
            op(0x81, w: true, reg: kind.rawValue, mem: m)
            imm32(value)
        }
    }

    package mutating func test(_ a: Reg, _ b: Reg, w: Bool = true) {
        op(0x85, w: w, reg: b.rawValue, rm: a)
    }

    package mutating func shift(_ kind: Shift, _ dst: Reg, imm amount: UInt8, w: Bool = true) {
        op(0xc1, w: w, reg: kind.rawValue, rm: dst)
        byte(amount)
    }

    /// Shift by cl (the count is masked to 6 bits, or 5 for 32-bit operands, as RISC-V's).
    package mutating func shiftByCL(_ kind: Shift, _ dst: Reg, w: Bool = true) {
        op(0xd3, w: w, reg: kind.rawValue, rm: dst)
    }

    /// imul dst, src (low half of the product).
    package mutating func imul(_ dst: Reg, _ src: Reg, w: Bool = true) {
        op(0x0faf, w: w, reg: dst.rawValue, rm: src)
    }

    /// rdx:rax = rax * src, unsigned (mul) or signed (imul).
    package mutating func mulWide(_ src: Reg, signed: Bool) {
        op(0xf7, w: true, reg: signed ? 5 : 4, rm: src)
    }

    package mutating func neg(_ dst: Reg, w: Bool = true) { op(0xf7, w: w, reg: 3, rm: dst) }
    package mutating func not(_ dst: Reg, w: Bool = true) { op(0xf7, w: w, reg: 2, rm: dst) }

    package mutating func bswap(_ dst: Reg) {
        rex(w: true, reg: 0, base: dst.rawValue)
        byte(0x0f)
        byte(0xc8 + dst.low)
    }

    /// lzcnt, tzcnt or popcnt dst, src (F3 0F BD/BC/B8 /r). Only where the host has them
    /// (`clx_cpu_has_bit_counts`): elsewhere the first two decode as bsr and bsf.
    package mutating func count(_ kind: BitCount, _ dst: Reg, _ src: Reg, w: Bool = true) {
        op(kind.rawValue, w: w, reg: dst.rawValue, rm: src, prefix: 0xf3)
    }

    /// bt/bts/btr/btc dst, src (bit index masked to 6 bits for register operands).
    package mutating func bitTest(_ kind: BitTest, _ dst: Reg, _ src: Reg) {
        op(0x0f00 | UInt16(kind.registerOpcode), w: true, reg: src.rawValue, rm: dst)
    }

    package mutating func bitTest(_ kind: BitTest, _ dst: Reg, imm bit: UInt8) {
        op(0x0fba, w: true, reg: kind.rawValue, rm: dst)
        byte(bit & 63)
    }

    /// setcc on the low byte of `dst`, then zero-extends it to 64 bits.
    package mutating func set(_ cond: Cond, _ dst: Reg) {
        op(0x0f90 | UInt16(cond.rawValue), w: false, reg: 0, rm: dst, byteRegs: true)
        extend(dst, dst, bits: 8, signed: false)
    }

    package mutating func cmov(_ cond: Cond, _ dst: Reg, _ src: Reg, w: Bool = true) {
        op(0x0f40 | UInt16(cond.rawValue), w: w, reg: dst.rawValue, rm: src)
    }

    // MARK: - Control flow

    package mutating func jmp(_ label: Label) {
        byte(0xe9)
        fixups.append((count, label.id))
        imm32(0)
    }

    /// jmp rel32 with the displacement left 0, to be patched; returns the offset of the rel32.
    package mutating func jmpPatchable() -> Int {
        byte(0xe9)
        imm32(0)
        return count - 4
    }

    /// jmp rel32 to an absolute address (within ±2 GiB of the code: the same code buffer).
    package mutating func jmp(absolute target: UInt) {
        byte(0xe9)
        imm32(Self.rel32(from: here + 4, to: target))
    }

    package mutating func jcc(_ cond: Cond, absolute target: UInt) {
        byte(0x0f)
        byte(0x80 | cond.rawValue)
        imm32(Self.rel32(from: here + 4, to: target))
    }

    private static func rel32(from next: UInt, to target: UInt) -> Int32 {
        let distance = Int(bitPattern: target) &- Int(bitPattern: next)
        guard let rel = Int32(exactly: distance) else { preconditionFailure("jump target out of rel32 range") }
        return rel
    }

    package mutating func jcc(_ cond: Cond, _ label: Label) {
        byte(0x0f)
        byte(0x80 | cond.rawValue)
        fixups.append((count, label.id))
        imm32(0)
    }

    package mutating func call(_ target: Reg) { op(0xff, w: false, reg: 2, rm: target) }

    /// call rel32 to an absolute address (within ±2 GiB: the same code buffer).
    package mutating func call(absolute target: UInt) {
        byte(0xe8)
        imm32(Self.rel32(from: here + 4, to: target))
    }
    package mutating func jmp(_ target: Reg) { op(0xff, w: false, reg: 4, rm: target) }
    package mutating func ret() { byte(0xc3) }

    package mutating func push(_ r: Reg) {
        rex(w: false, reg: 0, base: r.rawValue)
        byte(0x50 + r.low)
    }

    package mutating func pop(_ r: Reg) {
        rex(w: false, reg: 0, base: r.rawValue)
        byte(0x58 + r.low)
    }

    /// xchg [m], src (64 or 32 bits): swaps, locked without a prefix (SDM: XCHG).
    package mutating func xchg(_ m: Mem, _ src: Reg, w: Bool = true) {
        op(0x87, w: w, reg: src.rawValue, mem: m)
    }

    /// lock xadd [m], src (64 or 32 bits): [m] += src, src = the old [m].
    package mutating func lockXadd(_ m: Mem, _ src: Reg, w: Bool = true) {
        op(0x0fc1, w: w, reg: src.rawValue, mem: m, prefix: 0xf0)
    }

    /// lock cmpxchg [m], src (64 or 32 bits): if [m] = rax, [m] = src (ZF set); else rax = [m].
    package mutating func lockCmpxchg(_ m: Mem, _ src: Reg, w: Bool = true) {
        op(0x0fb1, w: w, reg: src.rawValue, mem: m, prefix: 0xf0)
    }

    package mutating func mfence() {
        byte(0x0f)
        byte(0xae)
        byte(0xf0)
    }
    /// cqo: sign-extends rax into rdx:rax.
    package mutating func cqo() {
        byte(0x48)
        byte(0x99)
    }
    /// cdq: sign-extends eax into edx:eax.
    package mutating func cdq() { byte(0x99) }
    /// div/idiv src: rdx:rax (or edx:eax) by src; quotient in rax, remainder in rdx.
    package mutating func divide(_ src: Reg, signed: Bool, w: Bool = true) {
        op(0xf7, w: w, reg: signed ? 7 : 6, rm: src)
    }

    /// Raw bytes (constants the generated code reads), never executed.
    package mutating func data(_ data: [UInt8]) {
        for b in data { byte(b) }
    }

    package mutating func int3() { byte(0xcc) }

    package mutating func ud2() {
        byte(0x0f)
        byte(0x0b)
    }

    // MARK: - SSE2 scalar doubles and MXCSR (the D extension's translation)

    /// movsd xmm, qword [m]
    package mutating func movsd(_ dst: XMM, _ m: Mem) { op(0x0f10, w: false, reg: dst.number, mem: m, prefix: 0xf2) }
    /// movsd qword [m], xmm
    package mutating func movsd(_ m: Mem, _ src: XMM) { op(0x0f11, w: false, reg: src.number, mem: m, prefix: 0xf2) }
    /// addsd/subsd/mulsd/divsd/sqrtsd xmm, qword [m]
    package mutating func scalarDouble(_ kind: ScalarDouble, _ dst: XMM, _ m: Mem) {
        op(kind.rawValue, w: false, reg: dst.number, mem: m, prefix: 0xf2)
    }
    /// ucomisd a, b: the unordered compare (PF set when either is a NaN; invalid only for a
    /// signaling NaN).
    package mutating func ucomisd(_ a: XMM, _ b: XMM) { op(0x0f2e, w: false, reg: a.number, rm: b.asReg, prefix: 0x66) }
    /// movq xmm, r64
    package mutating func movq(_ dst: XMM, _ src: Reg) { op(0x0f6e, w: true, reg: dst.number, rm: src, prefix: 0x66) }
    package mutating func ldmxcsr(_ m: Mem) { op(0x0fae, w: false, reg: 2, mem: m) }
    package mutating func stmxcsr(_ m: Mem) { op(0x0fae, w: false, reg: 3, mem: m) }
    /// vfmadd231sd / vfmsub231sd / vfnmadd231sd / vfnmsub231sd acc, src, qword [m]
    /// (FMA3): acc = ±(src * [m]) ± acc with one rounding. VEX.LIG.66.0F38.W1 (SDM §2.3).
    package mutating func fusedMultiplyAdd(_ kind: FusedMultiplyAdd, _ acc: XMM, _ src: XMM, _ m: Mem) {
        byte(0xc4)
        let r: UInt8 = acc.number >= 8 ? 0 : 0x80, x: UInt8 = (m.index?.isExtended ?? false) ? 0 : 0x40
        let b: UInt8 = m.base.isExtended ? 0 : 0x20
        byte(r | x | b | 0x02)  // map 0F38
        byte(0x80 | (~src.number & 15) << 3 | 0x01)  // W1, vvvv = src, L0, pp = 66
        byte(kind.rawValue)
        memoryOperand(reg: acc.number, m)
    }

    /// test dword [m], imm32
    package mutating func test32(_ m: Mem, imm value: UInt32) {
        op(0xf7, w: false, reg: 0, mem: m)
        imm32(Int32(bitPattern: value))
    }
    /// cmp byte [m], imm8
    package mutating func cmp8(_ m: Mem, imm value: UInt8) {
        op(0x80, w: false, reg: 7, mem: m)
        byte(value)
    }
}

/// An SSE register (only the low double is used).
package struct XMM: Sendable, Equatable {
    let number: UInt8
    package static let xmm0 = XMM(number: 0)
    package static let xmm1 = XMM(number: 1)
    /// The same number as a general register, for the ModRM rm field.
    var asReg: Reg { Reg(rawValue: number)! }
}

/// The FMA3 scalar-double forms with operand order 231 (acc = ±(src * mem) ± acc).
package enum FusedMultiplyAdd: UInt8, Sendable, CaseIterable {
    case madd = 0xb9, msub = 0xbb, nmadd = 0xbd, nmsub = 0xbf
}

/// The scalar-double arithmetic opcodes (F2 0F xx).
package enum ScalarDouble: UInt16, Sendable, CaseIterable {
    case sqrt = 0x0f51, add = 0x0f58, mul = 0x0f59, sub = 0x0f5c, div = 0x0f5e
}

/// The bit-counting instructions of `X86Assembler.count` (their 0F opcodes).
package enum BitCount: UInt16, Sendable, CaseIterable {
    case lzcnt = 0x0fbd, tzcnt = 0x0fbc, popcnt = 0x0fb8
}
