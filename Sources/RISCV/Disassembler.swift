/// RISC-V disassembly in GNU objdump's syntax (ABI register names, the common
/// pseudo-instructions objdump prints by default, absolute branch targets), driven by the
/// same `instructionTable` as the decoder. Used by `-d in_asm`, traces and error messages.
public enum Disassembler {
    public static let integerRegisterNames = [
        "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
        "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
    ]
    public static let floatRegisterNames = [
        "ft0", "ft1", "ft2", "ft3", "ft4", "ft5", "ft6", "ft7", "fs0", "fs1", "fa0", "fa1", "fa2", "fa3", "fa4", "fa5",
        "fa6", "fa7", "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11", "ft8", "ft9", "ft10", "ft11",
    ]
    /// The names Debian 12's binutils (2.40) prints; the CSRs it has no name for
    /// (senvcfg, menvcfg, mconfigptr) print as numbers, as there.
    static let csrNames: [UInt16: String] = [
        0x001: "fflags", 0x002: "frm", 0x003: "fcsr", 0xc00: "cycle", 0xc01: "time", 0xc02: "instret",
        0x100: "sstatus", 0x104: "sie", 0x105: "stvec", 0x106: "scounteren", 0x140: "sscratch",
        0x141: "sepc", 0x142: "scause", 0x143: "stval", 0x144: "sip", 0x14d: "stimecmp", 0x180: "satp",
        0xf11: "mvendorid", 0xf12: "marchid", 0xf13: "mimpid", 0xf14: "mhartid",
        0x300: "mstatus", 0x301: "misa", 0x302: "medeleg", 0x303: "mideleg", 0x304: "mie", 0x305: "mtvec",
        0x306: "mcounteren", 0x320: "mcountinhibit", 0x340: "mscratch", 0x341: "mepc",
        0x342: "mcause", 0x343: "mtval", 0x344: "mip", 0xb00: "mcycle", 0xb02: "minstret",
        0x3a0: "pmpcfg0", 0x3a1: "pmpcfg1", 0x3a2: "pmpcfg2", 0x3a3: "pmpcfg3",
        0x7a0: "tselect", 0x7a1: "tdata1", 0x7a2: "tdata2", 0x7a3: "tdata3",
    ]
    /// GNU binutils (2.39 and later) print register-immediate forms under the register
    /// form's name: `addi` as `add`, `slli` as `sll`, `bseti` as `bset`.
    static let immediateNames: [Op: String] = [
        .addi: "add", .slti: "slt", .xori: "xor", .ori: "or", .andi: "and",
        .slli: "sll", .srli: "srl", .srai: "sra", .addiw: "addw", .slliw: "sllw", .srliw: "srlw", .sraiw: "sraw",
        .rori: "ror", .roriw: "rorw", .bclri: "bclr", .bexti: "bext", .binvi: "binv", .bseti: "bset",
    ]
    /// Exact conversions ignore rm; objdump leaves it out for them, as for dynamic.
    static let exactConversions: Set<Op> = [.fcvt_d_s, .fcvt_d_w, .fcvt_d_wu]
    /// objdump's names in frflags/fsflags, frrm/fsrm, frcsr/fscsr.
    static let fpCSR = ["", "flags", "rm", "csr"]
    static let roundingModes = ["rne", "rtz", "rdn", "rup", "rmm", "", "", "dyn"]

    static func csrName(_ number: UInt16) -> String {
        if let name = csrNames[number] { return name }
        if (0x3b0...0x3ef).contains(number) { return "pmpaddr\(number - 0x3b0)" }
        if (0x323...0x33f).contains(number) { return "mhpmevent\(number - 0x320)" }
        if (0xb03...0xb1f).contains(number) { return "mhpmcounter\(number - 0xb00)" }
        if (0xc03...0xc1f).contains(number) { return "hpmcounter\(number - 0xc00)" }
        return hexString(UInt64(number))
    }

    static func hexString(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    /// The instruction's text, e.g. `addi\tsp,sp,-16` or `beqz\ta0,80000010`.
    public static func text(_ d: DecodedInstruction, pc: UInt64) -> String {
        guard d.op != .illegal else { return d.length == 2 ? ".2byte\t\(hexString(UInt64(d.raw)))" : ".4byte\t\(hexString(UInt64(d.raw)))" }
        if let alias = pseudo(d, pc: pc) { return alias }
        guard let entry = instructionTable.first(where: { $0.op == d.op }) else { return "unknown" }
        let r = entry.registers
        func xr(_ n: UInt8) -> String { integerRegisterNames[Int(n)] }
        func reg(_ n: UInt8, float: Bool) -> String { float ? floatRegisterNames[Int(n)] : xr(n) }
        let rd = reg(d.rd, float: r.rd), rs1 = reg(d.rs1, float: r.rs1), rs2 = reg(d.rs2, float: r.rs2)
        let target = String(pc &+ UInt64(bitPattern: d.imm), radix: 16)
        var operands: String
        switch entry.format {
        case .r: operands = "\(rd),\(rs1),\(rs2)"
        case .r1: operands = "\(rd),\(rs1)"
        case .i: operands = "\(rd),\(rs1),\(d.imm)"
        case .load: operands = "\(rd),\(d.imm)(\(xr(d.rs1)))"
        case .store: operands = "\(rs2),\(d.imm)(\(xr(d.rs1)))"
        case .branch: operands = "\(rs1),\(rs2),\(target)"
        case .u: operands = "\(rd),\(hexString(UInt64(bitPattern: d.imm >> 12) & 0xfffff))"
        case .jal: operands = "\(rd),\(target)"
        case .shift, .shiftW: operands = "\(rd),\(rs1),\(hexString(UInt64(d.imm)))"
        case .csr: operands = "\(rd),\(csrName(UInt16(d.imm & 0xfff))),\(rs1)"
        case .csrImmediate: operands = "\(rd),\(csrName(UInt16(d.imm & 0xfff))),\(d.rs1)"
        case .atomic: operands = "\(rd),\(rs2),(\(rs1))"
        case .loadReserved: operands = "\(rd),(\(rs1))"
        case .r4: operands = "\(rd),\(rs1),\(rs2),\(reg(d.rs3, float: true))"
        case .fence: operands = fenceSet(UInt8(d.imm >> 4) & 0xf) + "," + fenceSet(UInt8(d.imm) & 0xf)
        case .none: operands = ""
        case .sfence: operands = "\(rs1),\(rs2)"
        }
        var mnemonic = immediateNames[d.op] ?? entry.mnemonic
        if entry.format == .atomic || entry.format == .loadReserved {
            // objdump's spelling: .aq, .rl, and .aqrl for both.
            mnemonic += ["", ".rl", ".aq", ".aqrl"][Int(d.rm & 3)]
        }
        if entry.hasRoundingMode && d.rm != 7 && d.rm < 5 && !exactConversions.contains(d.op) {
            operands += "," + roundingModes[Int(d.rm)]
        }
        return operands.isEmpty ? mnemonic : mnemonic + "\t" + operands
    }

    static func fenceSet(_ bits: UInt8) -> String {
        var s = ""
        if bits & 8 != 0 { s += "i" }
        if bits & 4 != 0 { s += "o" }
        if bits & 2 != 0 { s += "r" }
        if bits & 1 != 0 { s += "w" }
        return s.isEmpty ? "0" : s
    }

    /// objdump's default aliases for the most common forms.
    static func pseudo(_ d: DecodedInstruction, pc: UInt64) -> String? {
        let x = integerRegisterNames
        let rd = x[Int(d.rd)], rs1 = x[Int(d.rs1)], rs2 = x[Int(d.rs2)]
        let target = String(pc &+ UInt64(bitPattern: d.imm), radix: 16)
        switch d.op {
        case .addi where d.rd == 0 && d.rs1 == 0 && d.imm == 0: return "nop"
        case .addi where d.rs1 == 0: return "li\t\(rd),\(d.imm)"
        case .addi where d.imm == 0: return "mv\t\(rd),\(rs1)"
        case .addiw where d.imm == 0: return "sext.w\t\(rd),\(rs1)"
        case .add where d.rs1 == 0: return "mv\t\(rd),\(rs2)"  // c.mv expands to add rd, x0, rs2
        case .xori where d.imm == -1: return "not\t\(rd),\(rs1)"
        case .sltiu where d.imm == 1: return "seqz\t\(rd),\(rs1)"
        case .sub where d.rs1 == 0: return "neg\t\(rd),\(rs2)"
        case .subw where d.rs1 == 0: return "negw\t\(rd),\(rs2)"
        case .sltu where d.rs1 == 0: return "snez\t\(rd),\(rs2)"
        case .jal where d.rd == 0: return "j\t\(target)"
        case .jal where d.rd == 1: return "jal\t\(target)"
        case .jalr where d.rd == 0 && d.rs1 == 1 && d.imm == 0: return "ret"
        case .jalr where d.rd == 0 && d.imm == 0: return "jr\t\(rs1)"
        case .jalr where d.rd == 1 && d.imm == 0: return "jalr\t\(rs1)"
        // objdump's other jalr forms (binutils riscv-opc.c: jr o(s), jalr o(s), jalr d,s, jalr d,o(s)).
        case .jalr where d.rd == 0: return "jr\t\(d.imm)(\(rs1))"
        case .jalr where d.rd == 1: return "jalr\t\(d.imm)(\(rs1))"
        case .jalr where d.imm == 0: return "jalr\t\(rd),\(rs1)"
        case .jalr: return "jalr\t\(rd),\(d.imm)(\(rs1))"
        case .beq where d.rs2 == 0: return "beqz\t\(rs1),\(target)"
        case .bne where d.rs2 == 0: return "bnez\t\(rs1),\(target)"
        case .bge where d.rs2 == 0: return "bgez\t\(rs1),\(target)"
        case .blt where d.rs2 == 0: return "bltz\t\(rs1),\(target)"
        case .bge where d.rs1 == 0: return "blez\t\(rs2),\(target)"
        case .blt where d.rs1 == 0: return "bgtz\t\(rs2),\(target)"
        case .csrrs where d.rs1 == 0 && (1...3).contains(d.imm): return "fr\(fpCSR[Int(d.imm)])\t\(rd)"
        case .csrrw where (1...3).contains(d.imm):
            return "fs\(fpCSR[Int(d.imm)])\t" + (d.rd == 0 ? rs1 : "\(rd),\(rs1)")
        case .csrrwi where (1...2).contains(d.imm):
            return "fs\(fpCSR[Int(d.imm)])i\t" + (d.rd == 0 ? "\(d.rs1)" : "\(rd),\(d.rs1)")
        case .csrrs where d.rs1 == 0 && d.imm == 0xc00: return "rdcycle\t\(rd)"
        case .csrrs where d.rs1 == 0 && d.imm == 0xc01: return "rdtime\t\(rd)"
        case .csrrs where d.rs1 == 0 && d.imm == 0xc02: return "rdinstret\t\(rd)"
        case .csrrs where d.rs1 == 0: return "csrr\t\(rd),\(csrName(UInt16(d.imm & 0xfff)))"
        case .csrrw where d.rd == 0: return "csrw\t\(csrName(UInt16(d.imm & 0xfff))),\(rs1)"
        case .csrrs where d.rd == 0: return "csrs\t\(csrName(UInt16(d.imm & 0xfff))),\(rs1)"
        case .csrrc where d.rd == 0: return "csrc\t\(csrName(UInt16(d.imm & 0xfff))),\(rs1)"
        case .csrrwi where d.rd == 0: return "csrw\t\(csrName(UInt16(d.imm & 0xfff))),\(d.rs1)"
        case .csrrsi where d.rd == 0: return "csrs\t\(csrName(UInt16(d.imm & 0xfff))),\(d.rs1)"
        case .csrrci where d.rd == 0: return "csrc\t\(csrName(UInt16(d.imm & 0xfff))),\(d.rs1)"
        case .fsgnj_s, .fsgnjn_s, .fsgnjx_s, .fsgnj_d, .fsgnjn_d, .fsgnjx_d:
            // Sign injection from a register itself: fmv, fneg, fabs.
            guard d.rs1 == d.rs2 else { return nil }
            let f = floatRegisterNames
            let name: String
            switch d.op {
            case .fsgnj_s: name = "fmv.s"
            case .fsgnjn_s: name = "fneg.s"
            case .fsgnjx_s: name = "fabs.s"
            case .fsgnj_d: name = "fmv.d"
            case .fsgnjn_d: name = "fneg.d"
            default: name = "fabs.d"
            }
            return "\(name)\t\(f[Int(d.rd)]),\(f[Int(d.rs1)])"
        case .fence where d.imm == 0xff: return "fence"
        case .sfence_vma where d.rs2 == 0: return d.rs1 == 0 ? "sfence.vma" : "sfence.vma\t\(rs1)"
        default: return nil
        }
    }
}
