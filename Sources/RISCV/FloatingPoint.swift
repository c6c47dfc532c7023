import SoftFloat

/// The F and D extensions (Unprivileged ISA ch. 11-12) on top of `SoftFloat`, which rounds
/// and raises flags exactly. Here: register-file rules — NaN boxing of singles (§12.2),
/// `mstatus.FS` (Off traps, any write makes it Dirty), dynamic rounding from `frm` with
/// reserved modes illegal (§11.2), and accrual of the exception flags into `fflags`.
extension Hart {
    @inline(__always)
    private func f(_ r: UInt8) -> UInt64 { state.pointee.f[Int(r)] }

    @inline(__always)
    private func single(_ r: UInt8) -> UInt32 { unboxSingle(state.pointee.f[Int(r)]) }

    @inline(__always)
    private func setF(_ r: UInt8, _ value: UInt64) {
        state.pointee.f[Int(r)] = value
        state.pointee.mstatus |= MStatus.fs  // Dirty
    }

    @inline(__always)
    private func setSingle(_ r: UInt8, _ value: UInt32) { setF(r, boxSingle(value)) }

    @inline(__always)
    private func setXFromFloat(_ r: UInt8, _ value: UInt64) {
        if r != 0 { state.pointee.x[Int(r)] = value }
    }

    @inline(__always)
    private static func sext32(_ v: UInt32) -> UInt64 { UInt64(bitPattern: Int64(Int32(bitPattern: v))) }

    /// Executes the F/D instruction at `slot` (decoded, at `pc`); returns the next pc. Takes
    /// the slot rather than a copy, so the run loop that calls it keeps its host registers.
    func executeFloat(_ slot: UnsafePointer<DecodedInstruction>, pc: UInt64) throws(Trap) -> UInt64 {
        let d = slot.pointee
        let s = state
        let illegal = Trap(.illegalInstruction, tval: UInt64(d.raw))
        // FS = Off: every F/D instruction is illegal (Privileged §3.1.6.6).
        guard s.pointee.mstatus & MStatus.fs != 0 else { throw illegal }
        var rm = RoundingMode.nearestEven
        if instructionHasRoundingMode(d.op) {
            // rm 7 = dynamic (frm); 5 and 6, or frm holding one of them, are reserved: illegal.
            guard let mode = RoundingMode(rawValue: d.rm == 7 ? s.pointee.frm : d.rm) else { throw illegal }
            rm = mode
        }
        var flags = ExceptionFlags()
        let x1 = s.pointee.x[Int(d.rs1)]
        switch d.op {
        case .flw:
            setSingle(d.rd, UInt32(truncatingIfNeeded: try load(x1 &+ UInt64(bitPattern: d.imm), size: 4)))
        case .fld:
            setF(d.rd, try load(x1 &+ UInt64(bitPattern: d.imm), size: 8))
        case .fsw:
            // FSW stores the low 32 bits as they are, boxed or not (§12.2).
            try store(x1 &+ UInt64(bitPattern: d.imm), f(d.rs2), size: 4)
        case .fsd:
            try store(x1 &+ UInt64(bitPattern: d.imm), f(d.rs2), size: 8)

        case .fadd_s: setSingle(d.rd, F32.add(single(d.rs1), single(d.rs2), rm, &flags))
        case .fsub_s: setSingle(d.rd, F32.sub(single(d.rs1), single(d.rs2), rm, &flags))
        case .fmul_s: setSingle(d.rd, F32.mul(single(d.rs1), single(d.rs2), rm, &flags))
        case .fdiv_s: setSingle(d.rd, F32.div(single(d.rs1), single(d.rs2), rm, &flags))
        case .fsqrt_s: setSingle(d.rd, F32.sqrt(single(d.rs1), rm, &flags))
        case .fmadd_s: setSingle(d.rd, F32.fmadd(single(d.rs1), single(d.rs2), single(d.rs3), rm, &flags))
        case .fmsub_s: setSingle(d.rd, F32.fmsub(single(d.rs1), single(d.rs2), single(d.rs3), rm, &flags))
        case .fnmsub_s: setSingle(d.rd, F32.fnmsub(single(d.rs1), single(d.rs2), single(d.rs3), rm, &flags))
        case .fnmadd_s: setSingle(d.rd, F32.fnmadd(single(d.rs1), single(d.rs2), single(d.rs3), rm, &flags))
        case .fsgnj_s: setSingle(d.rd, F32.sgnj(single(d.rs1), single(d.rs2)))
        case .fsgnjn_s: setSingle(d.rd, F32.sgnjn(single(d.rs1), single(d.rs2)))
        case .fsgnjx_s: setSingle(d.rd, F32.sgnjx(single(d.rs1), single(d.rs2)))
        case .fmin_s: setSingle(d.rd, F32.min(single(d.rs1), single(d.rs2), &flags))
        case .fmax_s: setSingle(d.rd, F32.max(single(d.rs1), single(d.rs2), &flags))
        case .fcvt_w_s: setXFromFloat(d.rd, UInt64(bitPattern: Int64(F32.toInt32(single(d.rs1), rm, &flags))))
        case .fcvt_wu_s: setXFromFloat(d.rd, Hart.sext32(F32.toUInt32(single(d.rs1), rm, &flags)))
        case .fcvt_l_s: setXFromFloat(d.rd, UInt64(bitPattern: F32.toInt64(single(d.rs1), rm, &flags)))
        case .fcvt_lu_s: setXFromFloat(d.rd, F32.toUInt64(single(d.rs1), rm, &flags))
        case .fcvt_s_w: setSingle(d.rd, F32.fromInt32(Int32(truncatingIfNeeded: x1), rm, &flags))
        case .fcvt_s_wu: setSingle(d.rd, F32.fromUInt32(UInt32(truncatingIfNeeded: x1), rm, &flags))
        case .fcvt_s_l: setSingle(d.rd, F32.fromInt64(Int64(bitPattern: x1), rm, &flags))
        case .fcvt_s_lu: setSingle(d.rd, F32.fromUInt64(x1, rm, &flags))
        // FMV.X.W moves the raw low 32 bits, sign-extended; FMV.W.X boxes (§11.7).
        case .fmv_x_w: setXFromFloat(d.rd, Hart.sext32(UInt32(truncatingIfNeeded: f(d.rs1))))
        case .fmv_w_x: setSingle(d.rd, UInt32(truncatingIfNeeded: x1))
        case .feq_s: setXFromFloat(d.rd, F32.eq(single(d.rs1), single(d.rs2), &flags) ? 1 : 0)
        case .flt_s: setXFromFloat(d.rd, F32.lt(single(d.rs1), single(d.rs2), &flags) ? 1 : 0)
        case .fle_s: setXFromFloat(d.rd, F32.le(single(d.rs1), single(d.rs2), &flags) ? 1 : 0)
        case .fclass_s: setXFromFloat(d.rd, F32.classify(single(d.rs1)))

        case .fadd_d: setF(d.rd, F64.add(f(d.rs1), f(d.rs2), rm, &flags))
        case .fsub_d: setF(d.rd, F64.sub(f(d.rs1), f(d.rs2), rm, &flags))
        case .fmul_d: setF(d.rd, F64.mul(f(d.rs1), f(d.rs2), rm, &flags))
        case .fdiv_d: setF(d.rd, F64.div(f(d.rs1), f(d.rs2), rm, &flags))
        case .fsqrt_d: setF(d.rd, F64.sqrt(f(d.rs1), rm, &flags))
        case .fmadd_d: setF(d.rd, F64.fmadd(f(d.rs1), f(d.rs2), f(d.rs3), rm, &flags))
        case .fmsub_d: setF(d.rd, F64.fmsub(f(d.rs1), f(d.rs2), f(d.rs3), rm, &flags))
        case .fnmsub_d: setF(d.rd, F64.fnmsub(f(d.rs1), f(d.rs2), f(d.rs3), rm, &flags))
        case .fnmadd_d: setF(d.rd, F64.fnmadd(f(d.rs1), f(d.rs2), f(d.rs3), rm, &flags))
        case .fsgnj_d: setF(d.rd, F64.sgnj(f(d.rs1), f(d.rs2)))
        case .fsgnjn_d: setF(d.rd, F64.sgnjn(f(d.rs1), f(d.rs2)))
        case .fsgnjx_d: setF(d.rd, F64.sgnjx(f(d.rs1), f(d.rs2)))
        case .fmin_d: setF(d.rd, F64.min(f(d.rs1), f(d.rs2), &flags))
        case .fmax_d: setF(d.rd, F64.max(f(d.rs1), f(d.rs2), &flags))
        case .fcvt_s_d: setSingle(d.rd, F64.toF32(f(d.rs1), rm, &flags))
        case .fcvt_d_s: setF(d.rd, F32.toF64(single(d.rs1), &flags))
        case .feq_d: setXFromFloat(d.rd, F64.eq(f(d.rs1), f(d.rs2), &flags) ? 1 : 0)
        case .flt_d: setXFromFloat(d.rd, F64.lt(f(d.rs1), f(d.rs2), &flags) ? 1 : 0)
        case .fle_d: setXFromFloat(d.rd, F64.le(f(d.rs1), f(d.rs2), &flags) ? 1 : 0)
        case .fclass_d: setXFromFloat(d.rd, F64.classify(f(d.rs1)))
        case .fcvt_w_d: setXFromFloat(d.rd, UInt64(bitPattern: Int64(F64.toInt32(f(d.rs1), rm, &flags))))
        case .fcvt_wu_d: setXFromFloat(d.rd, Hart.sext32(F64.toUInt32(f(d.rs1), rm, &flags)))
        case .fcvt_l_d: setXFromFloat(d.rd, UInt64(bitPattern: F64.toInt64(f(d.rs1), rm, &flags)))
        case .fcvt_lu_d: setXFromFloat(d.rd, F64.toUInt64(f(d.rs1), rm, &flags))
        case .fcvt_d_w: setF(d.rd, F64.fromInt32(Int32(truncatingIfNeeded: x1), rm, &flags))
        case .fcvt_d_wu: setF(d.rd, F64.fromUInt32(UInt32(truncatingIfNeeded: x1), rm, &flags))
        case .fcvt_d_l: setF(d.rd, F64.fromInt64(Int64(bitPattern: x1), rm, &flags))
        case .fcvt_d_lu: setF(d.rd, F64.fromUInt64(x1, rm, &flags))
        case .fmv_x_d: setXFromFloat(d.rd, f(d.rs1))
        case .fmv_d_x: setF(d.rd, x1)
        default:
            throw illegal
        }
        if !flags.isEmpty {
            s.pointee.fflags |= flags.rawValue
            s.pointee.mstatus |= MStatus.fs
        }
        return pc &+ UInt64(d.length)
    }

    /// Whether `op`'s encoding has an rm field (from the instruction table).
    @inline(__always)
    private func instructionHasRoundingMode(_ op: Op) -> Bool {
        roundingModeOps[Int(op.rawValue >> 6)] >> UInt64(op.rawValue & 63) & 1 != 0
    }

    /// Bit `op.rawValue` set for the instructions with a rounding-mode field, from the
    /// instruction table; each hart keeps a copy (`roundingModeOps`), which costs no lazy
    /// global's check per FP instruction.
    static let roundingModeBits: InlineArray<4, UInt64> = {
        precondition(Op.allCases.count <= 256)
        var bits = InlineArray<4, UInt64>(repeating: 0)
        for entry in instructionTable where entry.hasRoundingMode {
            bits[Int(entry.op.rawValue >> 6)] |= 1 << UInt64(entry.op.rawValue & 63)
        }
        return bits
    }()
}
