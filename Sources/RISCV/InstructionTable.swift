/// The RISC-V instructions swemu implements: one table, the single source of truth for the
/// decoder (`Decoder`), the disassembler and the tests (DESIGN.md §9.10, like QEMU's
/// decodetree and riscv-opcodes). Each row gives the mnemonic, the encoding as a 32-character
/// bit pattern (bit 31 first; `-` = operand bits), the operand layout, and the extension.
///
/// Encodings: the RISC-V Unprivileged ISA (20191213) chapter 24 "RV32/64G Instruction Set
/// Listings", the Bitmanip spec 1.0.0 (Zba/Zbb/Zbs) and the Privileged ISA 1.12 §3.3, §4.2.

/// Every operation, in table order. The interpreter switches on this.
public enum Op: UInt8, CaseIterable, Sendable {
    // RV64I
    case lui, auipc, jal, jalr, beq, bne, blt, bge, bltu, bgeu
    case lb, lh, lw, ld, lbu, lhu, lwu, sb, sh, sw, sd
    case addi, slti, sltiu, xori, ori, andi, slli, srli, srai
    case add, sub, sll, slt, sltu, xor, srl, sra, or, and
    case addiw, slliw, srliw, sraiw, addw, subw, sllw, srlw, sraw
    case fence, fence_i, ecall, ebreak
    // Zicsr
    case csrrw, csrrs, csrrc, csrrwi, csrrsi, csrrci
    // M
    case mul, mulh, mulhsu, mulhu, div, divu, rem, remu, mulw, divw, divuw, remw, remuw
    // A
    case lr_w, sc_w, amoswap_w, amoadd_w, amoxor_w, amoand_w, amoor_w, amomin_w, amomax_w, amominu_w, amomaxu_w
    case lr_d, sc_d, amoswap_d, amoadd_d, amoxor_d, amoand_d, amoor_d, amomin_d, amomax_d, amominu_d, amomaxu_d
    // F
    case flw, fsw, fmadd_s, fmsub_s, fnmsub_s, fnmadd_s, fadd_s, fsub_s, fmul_s, fdiv_s, fsqrt_s
    case fsgnj_s, fsgnjn_s, fsgnjx_s, fmin_s, fmax_s, fcvt_w_s, fcvt_wu_s, fmv_x_w, feq_s, flt_s, fle_s, fclass_s
    case fcvt_s_w, fcvt_s_wu, fmv_w_x, fcvt_l_s, fcvt_lu_s, fcvt_s_l, fcvt_s_lu
    // D
    case fld, fsd, fmadd_d, fmsub_d, fnmsub_d, fnmadd_d, fadd_d, fsub_d, fmul_d, fdiv_d, fsqrt_d
    case fsgnj_d, fsgnjn_d, fsgnjx_d, fmin_d, fmax_d, fcvt_s_d, fcvt_d_s, feq_d, flt_d, fle_d, fclass_d
    case fcvt_w_d, fcvt_wu_d, fcvt_d_w, fcvt_d_wu, fcvt_l_d, fcvt_lu_d, fmv_x_d, fcvt_d_l, fcvt_d_lu, fmv_d_x
    // Zba
    case add_uw, sh1add, sh2add, sh3add, sh1add_uw, sh2add_uw, sh3add_uw, slli_uw
    // Zbb
    case andn, orn, xnor, clz, clzw, ctz, ctzw, cpop, cpopw, max, maxu, min, minu
    case sext_b, sext_h, zext_h, rol, rolw, ror, rori, roriw, rorw, orc_b, rev8
    // Zbs
    case bclr, bclri, bext, bexti, binv, binvi, bset, bseti
    // Privileged
    case sret, mret, wfi, sfence_vma
    /// Not an instruction: what the decoder returns for an illegal or reserved encoding.
    case illegal
}

extension Op {
    /// Zicsr's six instructions (contiguous in `Op`, so this is one range check).
    @inline(__always)
    var isCSR: Bool { rawValue &- Op.csrrw.rawValue <= Op.csrrci.rawValue &- Op.csrrw.rawValue }

    /// The F and D instructions, flw to fmv.d.x (contiguous in `Op`).
    @inline(__always)
    var isFloat: Bool { rawValue &- Op.flw.rawValue <= Op.fmv_d_x.rawValue &- Op.flw.rawValue }
}

/// How an instruction's operand bits are laid out, and how the disassembler prints them.
public enum OperandFormat: UInt8, Sendable {
    case r  // rd, rs1, rs2
    case r1  // rd, rs1 (unary: clz, sext.b, fsqrt, fcvt, fmv, fclass)
    case i  // rd, rs1, imm[11:0]
    case load  // rd, imm(rs1)
    case store  // rs2, imm(rs1)
    case branch  // rs1, rs2, pc-relative imm[12:1]
    case u  // rd, imm[31:12]
    case jal  // rd, pc-relative imm[20:1]
    case shift  // rd, rs1, shamt[5:0]
    case shiftW  // rd, rs1, shamt[4:0]
    case csr  // rd, csr, rs1
    case csrImmediate  // rd, csr, uimm[4:0]
    case atomic  // rd, rs2, (rs1) with aq/rl
    case loadReserved  // rd, (rs1) with aq/rl
    case r4  // rd, rs1, rs2, rs3 (fused multiply-add)
    case fence  // pred, succ
    case none  // no operands
    case sfence  // rs1, rs2
}

/// Which register file an operand names, for the disassembler (x or f registers).
public struct RegisterClasses: Sendable, Equatable {
    /// rd, rs1, rs2, rs3: true = floating-point register.
    public let rd: Bool, rs1: Bool, rs2: Bool, rs3: Bool
    static let integer = RegisterClasses(rd: false, rs1: false, rs2: false, rs3: false)
    static let float = RegisterClasses(rd: true, rs1: true, rs2: true, rs3: true)
    static let floatToInt = RegisterClasses(rd: false, rs1: true, rs2: true, rs3: false)
    static let intToFloat = RegisterClasses(rd: true, rs1: false, rs2: false, rs3: false)
    static let floatStore = RegisterClasses(rd: false, rs1: false, rs2: true, rs3: false)
}

/// The extension an instruction belongs to (`misa` letters and Z extensions).
public enum Extension: String, Sendable {
    case i = "I", m = "M", a = "A", f = "F", d = "D", zicsr = "Zicsr", zifencei = "Zifencei"
    case zba = "Zba", zbb = "Zbb", zbs = "Zbs", privileged = "Priv"
}

public struct InstructionEntry: Sendable {
    public let op: Op
    public let mnemonic: String
    public let mask: UInt32
    public let match: UInt32
    public let format: OperandFormat
    public let registers: RegisterClasses
    public let ext: Extension
    /// Whether the instruction has a rounding-mode field (bits 14:12) that the decoder keeps.
    public let hasRoundingMode: Bool
}

private func row(
    _ op: Op, _ pattern: StaticString, _ format: OperandFormat, _ ext: Extension,
    _ registers: RegisterClasses = .integer, rm: Bool = false
) -> InstructionEntry {
    var mask: UInt32 = 0
    var match: UInt32 = 0
    var count = 0
    pattern.withUTF8Buffer { bytes in
        for byte in bytes where byte != UInt8(ascii: "_") {
            mask <<= 1
            match <<= 1
            count += 1
            switch byte {
            case UInt8(ascii: "0"): mask |= 1
            case UInt8(ascii: "1"): mask |= 1; match |= 1
            default: break
            }
        }
    }
    precondition(count == 32, "instruction table: pattern for \(op) has \(count) bits")  // a table typo, not input
    let mnemonic = String(describing: op).replacingOccurrences(of: "_", with: ".")
    return InstructionEntry(op: op, mnemonic: mnemonic, mask: mask, match: match, format: format,
                            registers: registers, ext: ext, hasRoundingMode: rm)
}

private extension String {
    func replacingOccurrences(of a: Character, with b: Character) -> String {
        String(map { $0 == a ? b : $0 })
    }
}

// Patterns are written funct7 | rs2 | rs1 | funct3 | rd | opcode, with `_` as a separator.
public let instructionTable: [InstructionEntry] = [
    row(.lui, "-------_-----_-----_---_-----_0110111", .u, .i),
    row(.auipc, "-------_-----_-----_---_-----_0010111", .u, .i),
    row(.jal, "-------_-----_-----_---_-----_1101111", .jal, .i),
    row(.jalr, "-------_-----_-----_000_-----_1100111", .i, .i),
    row(.beq, "-------_-----_-----_000_-----_1100011", .branch, .i),
    row(.bne, "-------_-----_-----_001_-----_1100011", .branch, .i),
    row(.blt, "-------_-----_-----_100_-----_1100011", .branch, .i),
    row(.bge, "-------_-----_-----_101_-----_1100011", .branch, .i),
    row(.bltu, "-------_-----_-----_110_-----_1100011", .branch, .i),
    row(.bgeu, "-------_-----_-----_111_-----_1100011", .branch, .i),
    row(.lb, "-------_-----_-----_000_-----_0000011", .load, .i),
    row(.lh, "-------_-----_-----_001_-----_0000011", .load, .i),
    row(.lw, "-------_-----_-----_010_-----_0000011", .load, .i),
    row(.ld, "-------_-----_-----_011_-----_0000011", .load, .i),
    row(.lbu, "-------_-----_-----_100_-----_0000011", .load, .i),
    row(.lhu, "-------_-----_-----_101_-----_0000011", .load, .i),
    row(.lwu, "-------_-----_-----_110_-----_0000011", .load, .i),
    row(.sb, "-------_-----_-----_000_-----_0100011", .store, .i),
    row(.sh, "-------_-----_-----_001_-----_0100011", .store, .i),
    row(.sw, "-------_-----_-----_010_-----_0100011", .store, .i),
    row(.sd, "-------_-----_-----_011_-----_0100011", .store, .i),
    row(.addi, "-------_-----_-----_000_-----_0010011", .i, .i),
    row(.slti, "-------_-----_-----_010_-----_0010011", .i, .i),
    row(.sltiu, "-------_-----_-----_011_-----_0010011", .i, .i),
    row(.xori, "-------_-----_-----_100_-----_0010011", .i, .i),
    row(.ori, "-------_-----_-----_110_-----_0010011", .i, .i),
    row(.andi, "-------_-----_-----_111_-----_0010011", .i, .i),
    row(.slli, "000000-_-----_-----_001_-----_0010011", .shift, .i),
    row(.srli, "000000-_-----_-----_101_-----_0010011", .shift, .i),
    row(.srai, "010000-_-----_-----_101_-----_0010011", .shift, .i),
    row(.add, "0000000_-----_-----_000_-----_0110011", .r, .i),
    row(.sub, "0100000_-----_-----_000_-----_0110011", .r, .i),
    row(.sll, "0000000_-----_-----_001_-----_0110011", .r, .i),
    row(.slt, "0000000_-----_-----_010_-----_0110011", .r, .i),
    row(.sltu, "0000000_-----_-----_011_-----_0110011", .r, .i),
    row(.xor, "0000000_-----_-----_100_-----_0110011", .r, .i),
    row(.srl, "0000000_-----_-----_101_-----_0110011", .r, .i),
    row(.sra, "0100000_-----_-----_101_-----_0110011", .r, .i),
    row(.or, "0000000_-----_-----_110_-----_0110011", .r, .i),
    row(.and, "0000000_-----_-----_111_-----_0110011", .r, .i),
    row(.addiw, "-------_-----_-----_000_-----_0011011", .i, .i),
    row(.slliw, "0000000_-----_-----_001_-----_0011011", .shiftW, .i),
    row(.srliw, "0000000_-----_-----_101_-----_0011011", .shiftW, .i),
    row(.sraiw, "0100000_-----_-----_101_-----_0011011", .shiftW, .i),
    row(.addw, "0000000_-----_-----_000_-----_0111011", .r, .i),
    row(.subw, "0100000_-----_-----_000_-----_0111011", .r, .i),
    row(.sllw, "0000000_-----_-----_001_-----_0111011", .r, .i),
    row(.srlw, "0000000_-----_-----_101_-----_0111011", .r, .i),
    row(.sraw, "0100000_-----_-----_101_-----_0111011", .r, .i),
    // FENCE ignores fm/rs1/rd as the spec requires of implementations (§2.7: reserved
    // fields must be ignored for forward compatibility).
    row(.fence, "-------_-----_-----_000_-----_0001111", .fence, .i),
    row(.fence_i, "-------_-----_-----_001_-----_0001111", .none, .zifencei),
    row(.ecall, "0000000_00000_00000_000_00000_1110011", .none, .i),
    row(.ebreak, "0000000_00001_00000_000_00000_1110011", .none, .i),
    row(.csrrw, "-------_-----_-----_001_-----_1110011", .csr, .zicsr),
    row(.csrrs, "-------_-----_-----_010_-----_1110011", .csr, .zicsr),
    row(.csrrc, "-------_-----_-----_011_-----_1110011", .csr, .zicsr),
    row(.csrrwi, "-------_-----_-----_101_-----_1110011", .csrImmediate, .zicsr),
    row(.csrrsi, "-------_-----_-----_110_-----_1110011", .csrImmediate, .zicsr),
    row(.csrrci, "-------_-----_-----_111_-----_1110011", .csrImmediate, .zicsr),

    row(.mul, "0000001_-----_-----_000_-----_0110011", .r, .m),
    row(.mulh, "0000001_-----_-----_001_-----_0110011", .r, .m),
    row(.mulhsu, "0000001_-----_-----_010_-----_0110011", .r, .m),
    row(.mulhu, "0000001_-----_-----_011_-----_0110011", .r, .m),
    row(.div, "0000001_-----_-----_100_-----_0110011", .r, .m),
    row(.divu, "0000001_-----_-----_101_-----_0110011", .r, .m),
    row(.rem, "0000001_-----_-----_110_-----_0110011", .r, .m),
    row(.remu, "0000001_-----_-----_111_-----_0110011", .r, .m),
    row(.mulw, "0000001_-----_-----_000_-----_0111011", .r, .m),
    row(.divw, "0000001_-----_-----_100_-----_0111011", .r, .m),
    row(.divuw, "0000001_-----_-----_101_-----_0111011", .r, .m),
    row(.remw, "0000001_-----_-----_110_-----_0111011", .r, .m),
    row(.remuw, "0000001_-----_-----_111_-----_0111011", .r, .m),

    row(.lr_w, "00010--_00000_-----_010_-----_0101111", .loadReserved, .a),
    row(.sc_w, "00011--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amoswap_w, "00001--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amoadd_w, "00000--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amoxor_w, "00100--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amoand_w, "01100--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amoor_w, "01000--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amomin_w, "10000--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amomax_w, "10100--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amominu_w, "11000--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.amomaxu_w, "11100--_-----_-----_010_-----_0101111", .atomic, .a),
    row(.lr_d, "00010--_00000_-----_011_-----_0101111", .loadReserved, .a),
    row(.sc_d, "00011--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amoswap_d, "00001--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amoadd_d, "00000--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amoxor_d, "00100--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amoand_d, "01100--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amoor_d, "01000--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amomin_d, "10000--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amomax_d, "10100--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amominu_d, "11000--_-----_-----_011_-----_0101111", .atomic, .a),
    row(.amomaxu_d, "11100--_-----_-----_011_-----_0101111", .atomic, .a),

    row(.flw, "-------_-----_-----_010_-----_0000111", .load, .f, .intToFloat),
    row(.fsw, "-------_-----_-----_010_-----_0100111", .store, .f, .floatStore),
    row(.fmadd_s, "-----00_-----_-----_---_-----_1000011", .r4, .f, .float, rm: true),
    row(.fmsub_s, "-----00_-----_-----_---_-----_1000111", .r4, .f, .float, rm: true),
    row(.fnmsub_s, "-----00_-----_-----_---_-----_1001011", .r4, .f, .float, rm: true),
    row(.fnmadd_s, "-----00_-----_-----_---_-----_1001111", .r4, .f, .float, rm: true),
    row(.fadd_s, "0000000_-----_-----_---_-----_1010011", .r, .f, .float, rm: true),
    row(.fsub_s, "0000100_-----_-----_---_-----_1010011", .r, .f, .float, rm: true),
    row(.fmul_s, "0001000_-----_-----_---_-----_1010011", .r, .f, .float, rm: true),
    row(.fdiv_s, "0001100_-----_-----_---_-----_1010011", .r, .f, .float, rm: true),
    row(.fsqrt_s, "0101100_00000_-----_---_-----_1010011", .r1, .f, .float, rm: true),
    row(.fsgnj_s, "0010000_-----_-----_000_-----_1010011", .r, .f, .float),
    row(.fsgnjn_s, "0010000_-----_-----_001_-----_1010011", .r, .f, .float),
    row(.fsgnjx_s, "0010000_-----_-----_010_-----_1010011", .r, .f, .float),
    row(.fmin_s, "0010100_-----_-----_000_-----_1010011", .r, .f, .float),
    row(.fmax_s, "0010100_-----_-----_001_-----_1010011", .r, .f, .float),
    row(.fcvt_w_s, "1100000_00000_-----_---_-----_1010011", .r1, .f, .floatToInt, rm: true),
    row(.fcvt_wu_s, "1100000_00001_-----_---_-----_1010011", .r1, .f, .floatToInt, rm: true),
    row(.fmv_x_w, "1110000_00000_-----_000_-----_1010011", .r1, .f, .floatToInt),
    row(.feq_s, "1010000_-----_-----_010_-----_1010011", .r, .f, .floatToInt),
    row(.flt_s, "1010000_-----_-----_001_-----_1010011", .r, .f, .floatToInt),
    row(.fle_s, "1010000_-----_-----_000_-----_1010011", .r, .f, .floatToInt),
    row(.fclass_s, "1110000_00000_-----_001_-----_1010011", .r1, .f, .floatToInt),
    row(.fcvt_s_w, "1101000_00000_-----_---_-----_1010011", .r1, .f, .intToFloat, rm: true),
    row(.fcvt_s_wu, "1101000_00001_-----_---_-----_1010011", .r1, .f, .intToFloat, rm: true),
    row(.fmv_w_x, "1111000_00000_-----_000_-----_1010011", .r1, .f, .intToFloat),
    row(.fcvt_l_s, "1100000_00010_-----_---_-----_1010011", .r1, .f, .floatToInt, rm: true),
    row(.fcvt_lu_s, "1100000_00011_-----_---_-----_1010011", .r1, .f, .floatToInt, rm: true),
    row(.fcvt_s_l, "1101000_00010_-----_---_-----_1010011", .r1, .f, .intToFloat, rm: true),
    row(.fcvt_s_lu, "1101000_00011_-----_---_-----_1010011", .r1, .f, .intToFloat, rm: true),

    row(.fld, "-------_-----_-----_011_-----_0000111", .load, .d, .intToFloat),
    row(.fsd, "-------_-----_-----_011_-----_0100111", .store, .d, .floatStore),
    row(.fmadd_d, "-----01_-----_-----_---_-----_1000011", .r4, .d, .float, rm: true),
    row(.fmsub_d, "-----01_-----_-----_---_-----_1000111", .r4, .d, .float, rm: true),
    row(.fnmsub_d, "-----01_-----_-----_---_-----_1001011", .r4, .d, .float, rm: true),
    row(.fnmadd_d, "-----01_-----_-----_---_-----_1001111", .r4, .d, .float, rm: true),
    row(.fadd_d, "0000001_-----_-----_---_-----_1010011", .r, .d, .float, rm: true),
    row(.fsub_d, "0000101_-----_-----_---_-----_1010011", .r, .d, .float, rm: true),
    row(.fmul_d, "0001001_-----_-----_---_-----_1010011", .r, .d, .float, rm: true),
    row(.fdiv_d, "0001101_-----_-----_---_-----_1010011", .r, .d, .float, rm: true),
    row(.fsqrt_d, "0101101_00000_-----_---_-----_1010011", .r1, .d, .float, rm: true),
    row(.fsgnj_d, "0010001_-----_-----_000_-----_1010011", .r, .d, .float),
    row(.fsgnjn_d, "0010001_-----_-----_001_-----_1010011", .r, .d, .float),
    row(.fsgnjx_d, "0010001_-----_-----_010_-----_1010011", .r, .d, .float),
    row(.fmin_d, "0010101_-----_-----_000_-----_1010011", .r, .d, .float),
    row(.fmax_d, "0010101_-----_-----_001_-----_1010011", .r, .d, .float),
    row(.fcvt_s_d, "0100000_00001_-----_---_-----_1010011", .r1, .d, .float, rm: true),
    row(.fcvt_d_s, "0100001_00000_-----_---_-----_1010011", .r1, .d, .float, rm: true),
    row(.feq_d, "1010001_-----_-----_010_-----_1010011", .r, .d, .floatToInt),
    row(.flt_d, "1010001_-----_-----_001_-----_1010011", .r, .d, .floatToInt),
    row(.fle_d, "1010001_-----_-----_000_-----_1010011", .r, .d, .floatToInt),
    row(.fclass_d, "1110001_00000_-----_001_-----_1010011", .r1, .d, .floatToInt),
    row(.fcvt_w_d, "1100001_00000_-----_---_-----_1010011", .r1, .d, .floatToInt, rm: true),
    row(.fcvt_wu_d, "1100001_00001_-----_---_-----_1010011", .r1, .d, .floatToInt, rm: true),
    row(.fcvt_d_w, "1101001_00000_-----_---_-----_1010011", .r1, .d, .intToFloat, rm: true),
    row(.fcvt_d_wu, "1101001_00001_-----_---_-----_1010011", .r1, .d, .intToFloat, rm: true),
    row(.fcvt_l_d, "1100001_00010_-----_---_-----_1010011", .r1, .d, .floatToInt, rm: true),
    row(.fcvt_lu_d, "1100001_00011_-----_---_-----_1010011", .r1, .d, .floatToInt, rm: true),
    row(.fmv_x_d, "1110001_00000_-----_000_-----_1010011", .r1, .d, .floatToInt),
    row(.fcvt_d_l, "1101001_00010_-----_---_-----_1010011", .r1, .d, .intToFloat, rm: true),
    row(.fcvt_d_lu, "1101001_00011_-----_---_-----_1010011", .r1, .d, .intToFloat, rm: true),
    row(.fmv_d_x, "1111001_00000_-----_000_-----_1010011", .r1, .d, .intToFloat),

    row(.add_uw, "0000100_-----_-----_000_-----_0111011", .r, .zba),
    row(.sh1add, "0010000_-----_-----_010_-----_0110011", .r, .zba),
    row(.sh2add, "0010000_-----_-----_100_-----_0110011", .r, .zba),
    row(.sh3add, "0010000_-----_-----_110_-----_0110011", .r, .zba),
    row(.sh1add_uw, "0010000_-----_-----_010_-----_0111011", .r, .zba),
    row(.sh2add_uw, "0010000_-----_-----_100_-----_0111011", .r, .zba),
    row(.sh3add_uw, "0010000_-----_-----_110_-----_0111011", .r, .zba),
    row(.slli_uw, "000010-_-----_-----_001_-----_0011011", .shift, .zba),

    row(.andn, "0100000_-----_-----_111_-----_0110011", .r, .zbb),
    row(.orn, "0100000_-----_-----_110_-----_0110011", .r, .zbb),
    row(.xnor, "0100000_-----_-----_100_-----_0110011", .r, .zbb),
    row(.clz, "0110000_00000_-----_001_-----_0010011", .r1, .zbb),
    row(.clzw, "0110000_00000_-----_001_-----_0011011", .r1, .zbb),
    row(.ctz, "0110000_00001_-----_001_-----_0010011", .r1, .zbb),
    row(.ctzw, "0110000_00001_-----_001_-----_0011011", .r1, .zbb),
    row(.cpop, "0110000_00010_-----_001_-----_0010011", .r1, .zbb),
    row(.cpopw, "0110000_00010_-----_001_-----_0011011", .r1, .zbb),
    row(.max, "0000101_-----_-----_110_-----_0110011", .r, .zbb),
    row(.maxu, "0000101_-----_-----_111_-----_0110011", .r, .zbb),
    row(.min, "0000101_-----_-----_100_-----_0110011", .r, .zbb),
    row(.minu, "0000101_-----_-----_101_-----_0110011", .r, .zbb),
    row(.sext_b, "0110000_00100_-----_001_-----_0010011", .r1, .zbb),
    row(.sext_h, "0110000_00101_-----_001_-----_0010011", .r1, .zbb),
    row(.zext_h, "0000100_00000_-----_100_-----_0111011", .r1, .zbb),
    row(.rol, "0110000_-----_-----_001_-----_0110011", .r, .zbb),
    row(.rolw, "0110000_-----_-----_001_-----_0111011", .r, .zbb),
    row(.ror, "0110000_-----_-----_101_-----_0110011", .r, .zbb),
    row(.rori, "011000-_-----_-----_101_-----_0010011", .shift, .zbb),
    row(.roriw, "0110000_-----_-----_101_-----_0011011", .shiftW, .zbb),
    row(.rorw, "0110000_-----_-----_101_-----_0111011", .r, .zbb),
    row(.orc_b, "0010100_00111_-----_101_-----_0010011", .r1, .zbb),
    row(.rev8, "0110101_11000_-----_101_-----_0010011", .r1, .zbb),

    row(.bclr, "0100100_-----_-----_001_-----_0110011", .r, .zbs),
    row(.bclri, "010010-_-----_-----_001_-----_0010011", .shift, .zbs),
    row(.bext, "0100100_-----_-----_101_-----_0110011", .r, .zbs),
    row(.bexti, "010010-_-----_-----_101_-----_0010011", .shift, .zbs),
    row(.binv, "0110100_-----_-----_001_-----_0110011", .r, .zbs),
    row(.binvi, "011010-_-----_-----_001_-----_0010011", .shift, .zbs),
    row(.bset, "0010100_-----_-----_001_-----_0110011", .r, .zbs),
    row(.bseti, "001010-_-----_-----_001_-----_0010011", .shift, .zbs),

    row(.sret, "0001000_00010_00000_000_00000_1110011", .none, .privileged),
    row(.mret, "0011000_00010_00000_000_00000_1110011", .none, .privileged),
    row(.wfi, "0001000_00101_00000_000_00000_1110011", .none, .privileged),
    row(.sfence_vma, "0001001_-----_-----_000_00000_1110011", .sfence, .privileged),
]
