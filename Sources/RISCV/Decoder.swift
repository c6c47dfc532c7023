/// One decoded instruction: what the interpreter executes and the disassembler prints.
/// Compressed instructions decode to the 32-bit instruction they expand to (C spec §16.1:
/// each RVC instruction expands to exactly one base instruction), with `length` 2.
public struct DecodedInstruction: Sendable, Equatable {
    public var op: Op
    public var rd: UInt8
    public var rs1: UInt8
    public var rs2: UInt8
    public var rs3: UInt8
    /// The rounding-mode field (bits 14:12) for FP instructions that have one; for atomics,
    /// aq (bit 1) and rl (bit 0); for fence, pred (bits 7:4) and succ (bits 3:0) in `imm`.
    public var rm: UInt8
    /// 2 or 4 bytes; 0 marks an empty slot in a decoded-page cache.
    public var length: UInt8
    /// The immediate in 32 bits (every RV64 immediate fits): keeps the struct at 16 bytes, so
    /// a page of decoded instructions is 32 KiB.
    private var immediate: Int32
    /// Sign-extended immediate, shift amount or CSR number, per the format.
    public var imm: Int64 {
        @inline(__always) get { Int64(immediate) }
        @inline(__always) set { immediate = Int32(truncatingIfNeeded: newValue) }
    }
    /// The instruction bits as fetched (16 bits for a compressed one), for `mtval` on an
    /// illegal-instruction trap and for traces.
    public var raw: UInt32

    init(op: Op, rd: UInt8, rs1: UInt8, rs2: UInt8, rs3: UInt8, rm: UInt8, imm: Int64, length: UInt8, raw: UInt32) {
        self.op = op
        self.rd = rd
        self.rs1 = rs1
        self.rs2 = rs2
        self.rs3 = rs3
        self.rm = rm
        self.length = length
        immediate = Int32(truncatingIfNeeded: imm)
        self.raw = raw
    }

    static func illegal(_ raw: UInt32, length: UInt8) -> DecodedInstruction {
        DecodedInstruction(op: .illegal, rd: 0, rs1: 0, rs2: 0, rs3: 0, rm: 0, imm: 0, length: length, raw: raw)
    }
}

/// Decodes instruction bits through `instructionTable`. The table is indexed once into 256
/// buckets by opcode[6:2] and funct3, each listing its candidates most specific first, in flat
/// storage of plain values (no strings, no nested arrays: decoding touches no reference
/// counts). Decoded 32-bit instructions are memoized by their bits in a small direct-mapped
/// cache: a decode depends on nothing but the bits, so the memo can never go stale, even
/// when the guest rewrites its code.
public final class Decoder: @unchecked Sendable {
    // SAFETY: `entries` and `bucketStart` are written in init and only read afterwards. The
    // memo is written without a lock, so a memoizing decoder belongs to one thread: each hart
    // has its own, run by its vCPU thread. The shared instance does not memoize.
    struct CompactEntry {
        let mask: UInt32
        let match: UInt32
        let op: Op
        let format: OperandFormat
        let hasRoundingMode: Bool
    }

    private let entries: UnsafeMutableBufferPointer<CompactEntry>
    private let bucketStart: UnsafeMutableBufferPointer<UInt16>
    private let memo: UnsafeMutableBufferPointer<DecodedInstruction>
    private let memoize: Bool
    static let memoSize = 4096

    /// For disassembly and tests, safe from any thread (no memo); each hart has its own.
    public static let shared = Decoder(memoize: false)

    public init(table: [InstructionEntry] = instructionTable, memoize: Bool = true) {
        self.memoize = memoize
        var buckets = [[InstructionEntry]](repeating: [], count: 256)
        for entry in table {
            precondition(entry.match & 3 == 3, "instruction table: \(entry.op) is not a 32-bit encoding")
            let major = Int((entry.match >> 2) & 0x1f)
            let funct3Fixed = (entry.mask >> 12) & 7 == 7
            for funct3 in 0..<8 where !funct3Fixed || UInt32(funct3) == (entry.match >> 12) & 7 {
                buckets[major << 3 | funct3].append(entry)
            }
        }
        let total = buckets.reduce(0) { $0 + $1.count }
        entries = .allocate(capacity: total)
        bucketStart = .allocate(capacity: 257)
        var next = 0
        for (i, bucket) in buckets.enumerated() {
            bucketStart[i] = UInt16(next)
            for e in bucket.sorted(by: { $0.mask.nonzeroBitCount > $1.mask.nonzeroBitCount }) {
                entries[next] = CompactEntry(mask: e.mask, match: e.match, op: e.op, format: e.format, hasRoundingMode: e.hasRoundingMode)
                next += 1
            }
        }
        bucketStart[256] = UInt16(next)
        memo = .allocate(capacity: Decoder.memoSize)
        // raw = 0 never matches a 32-bit instruction (bits 1:0 are 11), so it marks empty slots.
        memo.initialize(repeating: .illegal(0, length: 4))
    }

    deinit {
        entries.deallocate()
        bucketStart.deallocate()
        memo.deallocate()
    }

    /// The table row that matches `bits` (a 32-bit instruction), if any.
    public func entry(for bits: UInt32) -> InstructionEntry? {
        guard let compact = compactEntry(for: bits) else { return nil }
        return instructionTable.first { $0.op == compact.op }
    }

    @inline(__always)
    func compactEntry(for bits: UInt32) -> CompactEntry? {
        let bucket = Int((bits >> 2) & 0x1f) << 3 | Int((bits >> 12) & 7)
        var i = Int(bucketStart[bucket])
        let end = Int(bucketStart[bucket + 1])
        while i < end {
            let e = entries[i]
            if bits & e.mask == e.match { return e }
            i += 1
        }
        return nil
    }

    /// Decodes a 32-bit instruction, through the memo.
    @inline(__always)
    public func decode32(_ bits: UInt32) -> DecodedInstruction {
        guard memoize else { return decodeUncached(bits) }
        let slot = Int((bits ^ (bits >> 12) ^ (bits >> 20)) & UInt32(Decoder.memoSize - 1))
        if memo[slot].raw == bits && memo[slot].length == 4 { return memo[slot] }
        let d = decodeUncached(bits)
        memo[slot] = d
        return d
    }

    /// Decodes a 32-bit instruction (bits 1:0 == 11) from the table.
    func decodeUncached(_ bits: UInt32) -> DecodedInstruction {
        guard let entry = compactEntry(for: bits) else { return .illegal(bits, length: 4) }
        var d = DecodedInstruction(
            op: entry.op, rd: UInt8((bits >> 7) & 31), rs1: UInt8((bits >> 15) & 31),
            rs2: UInt8((bits >> 20) & 31), rs3: UInt8(bits >> 27), rm: 0, imm: 0, length: 4, raw: bits)
        let signed = Int32(bitPattern: bits)
        switch entry.format {
        case .i, .load:
            d.imm = Int64(signed >> 20)
        case .store:
            d.imm = Int64((signed >> 25) << 5 | Int32((bits >> 7) & 31))
        case .branch:
            // imm[12|10:5] in 31:25, imm[4:1|11] in 11:7 (Unprivileged §2.5).
            let imm = (signed >> 31) << 12 | Int32((bits >> 7) & 1) << 11 | Int32((bits >> 25) & 0x3f) << 5
                | Int32((bits >> 8) & 0xf) << 1
            d.imm = Int64(imm)
        case .u:
            d.imm = Int64(signed & ~0xfff)
        case .jal:
            // imm[20|10:1|11|19:12] in 31:12 (Unprivileged §2.5).
            let imm = (signed >> 31) << 20 | Int32((bits >> 12) & 0xff) << 12 | Int32((bits >> 20) & 1) << 11
                | Int32((bits >> 21) & 0x3ff) << 1
            d.imm = Int64(imm)
        case .shift:
            d.imm = Int64((bits >> 20) & 0x3f)
        case .shiftW:
            d.imm = Int64((bits >> 20) & 0x1f)
        case .csr:
            d.imm = Int64(bits >> 20)
        case .csrImmediate:
            d.imm = Int64(bits >> 20)
        case .atomic, .loadReserved:
            d.rm = UInt8((bits >> 25) & 3)  // aq = bit 1, rl = bit 0
        case .fence:
            d.imm = Int64((bits >> 20) & 0xff)
        case .r, .r1, .r4, .none, .sfence:
            break
        }
        if entry.hasRoundingMode { d.rm = UInt8((bits >> 12) & 7) }
        return d
    }

    /// Decodes the instruction whose low 16 bits are `low` and, if it is 32 bits long, whose
    /// high 16 bits are `high()` (fetched only then: the second half may be on another page).
    @inline(__always)
    public func decode<E: Error>(low: UInt16, high: () throws(E) -> UInt16) throws(E) -> DecodedInstruction {
        if low & 3 != 3 { return decodeCompressed(low) }
        return decode32(UInt32(low) | UInt32(try high()) << 16)
    }

    /// Decodes a 16-bit RVC instruction by expanding it to its 32-bit equivalent (C spec
    /// §16.8 table 16.5-16.7, RV64C). Reserved and illegal encodings, and HINTs we do not
    /// treat as such, decode as illegal with the 16 bits as `raw`.
    public func decodeCompressed(_ c: UInt16) -> DecodedInstruction {
        // Memoized under the 16 bits (raw < 0x10000, length 2), apart from 32-bit entries.
        let slot = Int((UInt32(c) ^ (UInt32(c) >> 9)) & UInt32(Decoder.memoSize - 1))
        if memoize && memo[slot].raw == UInt32(c) && memo[slot].length == 2 { return memo[slot] }
        var d: DecodedInstruction
        if let expanded = expandCompressed(c) {
            d = decodeUncached(expanded)
            d.length = 2
            d.raw = UInt32(c)
        } else {
            d = .illegal(UInt32(c), length: 2)
        }
        if memoize { memo[slot] = d }
        return d
    }
}

// MARK: - RVC expansion

@inline(__always) private func bit(_ c: UInt32, _ n: UInt32) -> UInt32 { (c >> n) & 1 }
@inline(__always) private func bits(_ c: UInt32, _ hi: UInt32, _ lo: UInt32) -> UInt32 { (c >> lo) & ((1 << (hi - lo + 1)) - 1) }

// 32-bit encoders for the base instructions RVC expands to.
private func encI(_ imm: Int32, _ rs1: UInt32, _ f3: UInt32, _ rd: UInt32, _ opc: UInt32) -> UInt32 {
    UInt32(bitPattern: imm << 20) | rs1 << 15 | f3 << 12 | rd << 7 | opc
}
private func encS(_ imm: Int32, _ rs2: UInt32, _ rs1: UInt32, _ f3: UInt32, _ opc: UInt32) -> UInt32 {
    let u = UInt32(bitPattern: imm)
    return (u >> 5 & 0x7f) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | (u & 31) << 7 | opc
}
private func encR(_ f7: UInt32, _ rs2: UInt32, _ rs1: UInt32, _ f3: UInt32, _ rd: UInt32, _ opc: UInt32) -> UInt32 {
    f7 << 25 | rs2 << 20 | rs1 << 15 | f3 << 12 | rd << 7 | opc
}
private func encB(_ imm: Int32, _ rs2: UInt32, _ rs1: UInt32, _ f3: UInt32) -> UInt32 {
    let u = UInt32(bitPattern: imm)
    return (u >> 12 & 1) << 31 | (u >> 5 & 0x3f) << 25 | rs2 << 20 | rs1 << 15 | f3 << 12
        | (u >> 1 & 0xf) << 8 | (u >> 11 & 1) << 7 | 0x63
}
private func encJ(_ imm: Int32, _ rd: UInt32) -> UInt32 {
    let u = UInt32(bitPattern: imm)
    return (u >> 20 & 1) << 31 | (u >> 1 & 0x3ff) << 21 | (u >> 11 & 1) << 20 | (u >> 12 & 0xff) << 12 | rd << 7 | 0x6f
}
@inline(__always) private func signExtend(_ value: UInt32, bits n: UInt32) -> Int32 {
    Int32(bitPattern: value << (32 - n)) >> (32 - n)
}

/// The 32-bit instruction a compressed one stands for, or nil when reserved/illegal.
func expandCompressed(_ half: UInt16) -> UInt32? {
    let c = UInt32(half)
    let op = c & 3
    let f3 = bits(c, 15, 13)
    let rdFull = bits(c, 11, 7)
    let rs2Full = bits(c, 6, 2)
    let rdP = bits(c, 4, 2) + 8  // rd' / rs2'
    let rs1P = bits(c, 9, 7) + 8  // rs1' / rd'
    switch (op, f3) {
    case (0, 0):  // C.ADDI4SPN: addi rd', x2, nzuimm[9:2]
        let imm = bits(c, 10, 7) << 6 | bits(c, 12, 11) << 4 | bit(c, 5) << 3 | bit(c, 6) << 2
        guard imm != 0 else { return nil }  // also covers the all-zero illegal instruction
        return encI(Int32(imm), 2, 0, rdP, 0x13)
    case (0, 1):  // C.FLD
        let imm = bits(c, 6, 5) << 6 | bits(c, 12, 10) << 3
        return encI(Int32(imm), rs1P, 3, rdP, 0x07)
    case (0, 2):  // C.LW
        let imm = bit(c, 5) << 6 | bits(c, 12, 10) << 3 | bit(c, 6) << 2
        return encI(Int32(imm), rs1P, 2, rdP, 0x03)
    case (0, 3):  // C.LD
        let imm = bits(c, 6, 5) << 6 | bits(c, 12, 10) << 3
        return encI(Int32(imm), rs1P, 3, rdP, 0x03)
    case (0, 5):  // C.FSD
        let imm = bits(c, 6, 5) << 6 | bits(c, 12, 10) << 3
        return encS(Int32(imm), rdP, rs1P, 3, 0x27)
    case (0, 6):  // C.SW
        let imm = bit(c, 5) << 6 | bits(c, 12, 10) << 3 | bit(c, 6) << 2
        return encS(Int32(imm), rdP, rs1P, 2, 0x23)
    case (0, 7):  // C.SD
        let imm = bits(c, 6, 5) << 6 | bits(c, 12, 10) << 3
        return encS(Int32(imm), rdP, rs1P, 3, 0x23)
    case (1, 0):  // C.ADDI (C.NOP when rd = 0)
        let imm = signExtend(bit(c, 12) << 5 | bits(c, 6, 2), bits: 6)
        return encI(imm, rdFull, 0, rdFull, 0x13)
    case (1, 1):  // C.ADDIW (RV64); rd = 0 is reserved
        guard rdFull != 0 else { return nil }
        let imm = signExtend(bit(c, 12) << 5 | bits(c, 6, 2), bits: 6)
        return encI(imm, rdFull, 0, rdFull, 0x1b)
    case (1, 2):  // C.LI: addi rd, x0, imm
        let imm = signExtend(bit(c, 12) << 5 | bits(c, 6, 2), bits: 6)
        return encI(imm, 0, 0, rdFull, 0x13)
    case (1, 3):
        if rdFull == 2 {  // C.ADDI16SP
            let raw = bit(c, 12) << 9 | bits(c, 4, 3) << 7 | bit(c, 5) << 6 | bit(c, 2) << 5 | bit(c, 6) << 4
            guard raw != 0 else { return nil }
            return encI(signExtend(raw, bits: 10), 2, 0, 2, 0x13)
        }
        // C.LUI; nzimm = 0 is reserved
        let raw = bit(c, 12) << 5 | bits(c, 6, 2)
        guard raw != 0 else { return nil }
        return UInt32(bitPattern: signExtend(raw, bits: 6) << 12) | rdFull << 7 | 0x37
    case (1, 4):
        let f2 = bits(c, 11, 10)
        let shamt = bit(c, 12) << 5 | bits(c, 6, 2)
        switch f2 {
        case 0: return encI(Int32(shamt), rs1P, 5, rs1P, 0x13)  // C.SRLI
        case 1: return encI(Int32(shamt | 0x400), rs1P, 5, rs1P, 0x13)  // C.SRAI
        case 2: return encI(signExtend(shamt, bits: 6), rs1P, 7, rs1P, 0x13)  // C.ANDI
        default:
            let rs2 = rdP
            switch (bit(c, 12), bits(c, 6, 5)) {
            case (0, 0): return encR(0x20, rs2, rs1P, 0, rs1P, 0x33)  // C.SUB
            case (0, 1): return encR(0, rs2, rs1P, 4, rs1P, 0x33)  // C.XOR
            case (0, 2): return encR(0, rs2, rs1P, 6, rs1P, 0x33)  // C.OR
            case (0, 3): return encR(0, rs2, rs1P, 7, rs1P, 0x33)  // C.AND
            case (1, 0): return encR(0x20, rs2, rs1P, 0, rs1P, 0x3b)  // C.SUBW
            case (1, 1): return encR(0, rs2, rs1P, 0, rs1P, 0x3b)  // C.ADDW
            default: return nil  // reserved
            }
        }
    case (1, 5):  // C.J
        let raw = bit(c, 12) << 11 | bit(c, 8) << 10 | bits(c, 10, 9) << 8 | bit(c, 6) << 7 | bit(c, 7) << 6
            | bit(c, 2) << 5 | bit(c, 11) << 4 | bits(c, 5, 3) << 1
        return encJ(signExtend(raw, bits: 12), 0)
    case (1, 6), (1, 7):  // C.BEQZ / C.BNEZ
        let raw = bit(c, 12) << 8 | bits(c, 6, 5) << 6 | bit(c, 2) << 5 | bits(c, 11, 10) << 3 | bits(c, 4, 3) << 1
        return encB(signExtend(raw, bits: 9), 0, rs1P, f3 == 6 ? 0 : 1)
    case (2, 0):  // C.SLLI
        let shamt = bit(c, 12) << 5 | bits(c, 6, 2)
        return encI(Int32(shamt), rdFull, 1, rdFull, 0x13)
    case (2, 1):  // C.FLDSP
        let imm = bits(c, 4, 2) << 6 | bit(c, 12) << 5 | bits(c, 6, 5) << 3
        return encI(Int32(imm), 2, 3, rdFull, 0x07)
    case (2, 2):  // C.LWSP; rd = 0 reserved
        guard rdFull != 0 else { return nil }
        let imm = bits(c, 3, 2) << 6 | bit(c, 12) << 5 | bits(c, 6, 4) << 2
        return encI(Int32(imm), 2, 2, rdFull, 0x03)
    case (2, 3):  // C.LDSP; rd = 0 reserved
        guard rdFull != 0 else { return nil }
        let imm = bits(c, 4, 2) << 6 | bit(c, 12) << 5 | bits(c, 6, 5) << 3
        return encI(Int32(imm), 2, 3, rdFull, 0x03)
    case (2, 4):
        if bit(c, 12) == 0 {
            if rs2Full == 0 {  // C.JR; rs1 = 0 reserved
                guard rdFull != 0 else { return nil }
                return encI(0, rdFull, 0, 0, 0x67)
            }
            return encR(0, rs2Full, 0, 0, rdFull, 0x33)  // C.MV: add rd, x0, rs2
        }
        if rs2Full == 0 {
            if rdFull == 0 { return 0x0010_0073 }  // C.EBREAK
            return encI(0, rdFull, 0, 1, 0x67)  // C.JALR: jalr ra, 0(rs1)
        }
        return encR(0, rs2Full, rdFull, 0, rdFull, 0x33)  // C.ADD
    case (2, 5):  // C.FSDSP
        let imm = bits(c, 9, 7) << 6 | bits(c, 12, 10) << 3
        return encS(Int32(imm), rs2Full, 2, 3, 0x27)
    case (2, 6):  // C.SWSP
        let imm = bits(c, 8, 7) << 6 | bits(c, 12, 9) << 2
        return encS(Int32(imm), rs2Full, 2, 2, 0x23)
    case (2, 7):  // C.SDSP
        let imm = bits(c, 9, 7) << 6 | bits(c, 12, 10) << 3
        return encS(Int32(imm), rs2Full, 2, 3, 0x23)
    default:
        return nil  // (0,4) is reserved
    }
}
