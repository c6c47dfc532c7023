// The public binary64 API (spec chapter 12, "D"): FADD.D through FCLASS.D and the conversions of RV32D/RV64D.
// Kept line for line parallel with F32.swift: change both together.
//
// Every operation takes its operands as bit patterns and the static rounding mode (already
// resolved from `frm` when the instruction's rm field is DYN), returns the result's bit pattern
// and ORs the exceptions it raises into `flags` (the hart's `fflags`).

/// binary64 (double precision) operations on `UInt64` bit patterns.
public enum F64 {
    /// The canonical NaN (spec 11.3): the result of every operation that produces a NaN.
    @inlinable public static var canonicalNaN: UInt64 { 0x7FF8_0000_0000_0000 }

    // MARK: Arithmetic (spec 11.6, 12.4)

    /// FADD.D: a + b.
    @inlinable
    public static func add(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .nearestEven, let r = hostAdd(a, b, &flags) { return r }
        return addSlow(a, b, rm, &flags)
    }

    /// FSUB.D: a − b.
    @inlinable
    public static func sub(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        add(a, b ^ 0x8000_0000_0000_0000, rm, &flags)
    }

    /// FMUL.D: a × b.
    @inlinable
    public static func mul(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .nearestEven, let r = hostMul(a, b, &flags) { return r }
        return mulSlow(a, b, rm, &flags)
    }

    /// FDIV.D: a / b (DZ for a finite nonzero a over zero).
    @inlinable
    public static func div(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .nearestEven, let r = hostDiv(a, b, &flags) { return r }
        return divSlow(a, b, rm, &flags)
    }

    /// FSQRT.D: √a (NV and the canonical NaN for a < 0; √−0 = −0).
    @inlinable
    public static func sqrt(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .nearestEven, let r = hostSqrt(a, &flags) { return r }
        return sqrtSlow(a, rm, &flags)
    }

    /// FMADD.D: a × b + c, rounded once.
    @inlinable
    public static func fmadd(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .nearestEven, let r = hostMulAdd(a, b, c, &flags) { return r }
        return mulAddSlow(a, b, c, rm, &flags)
    }

    /// FMSUB.D: a × b − c, rounded once.
    @inlinable
    public static func fmsub(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        fmadd(a, b, c ^ 0x8000_0000_0000_0000, rm, &flags)
    }

    /// FNMSUB.D: −(a × b) + c, rounded once.
    @inlinable
    public static func fnmsub(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        fmadd(a ^ 0x8000_0000_0000_0000, b, c, rm, &flags)
    }

    /// FNMADD.D: −(a × b) − c, rounded once.
    @inlinable
    public static func fnmadd(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        fmadd(a ^ 0x8000_0000_0000_0000, b, c ^ 0x8000_0000_0000_0000, rm, &flags)
    }

    /// FMIN.D (version 2.2 semantics): the smaller operand, −0 < +0; the non-NaN operand when
    /// exactly one is a NaN; the canonical NaN when both are; NV for any signaling NaN.
    @inlinable
    public static func min(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: minMax(Binary64.self, UInt64(a), UInt64(b), max: false, &flags))
    }

    /// FMAX.D: as `min`, for the larger operand.
    @inlinable
    public static func max(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: minMax(Binary64.self, UInt64(a), UInt64(b), max: true, &flags))
    }

    /// FSGNJ.D: a's magnitude with b's sign (no NaN canonicalization, no flags).
    @inlinable
    public static func sgnj(_ a: UInt64, _ b: UInt64) -> UInt64 { (a & ~0x8000_0000_0000_0000) | (b & 0x8000_0000_0000_0000) }

    /// FSGNJN.D: a's magnitude with the opposite of b's sign.
    @inlinable
    public static func sgnjn(_ a: UInt64, _ b: UInt64) -> UInt64 { (a & ~0x8000_0000_0000_0000) | (~b & 0x8000_0000_0000_0000) }

    /// FSGNJX.D: a with its sign XORed with b's.
    @inlinable
    public static func sgnjx(_ a: UInt64, _ b: UInt64) -> UInt64 { a ^ (b & 0x8000_0000_0000_0000) }

    // MARK: Compare and classify (spec 11.8, 11.9; 12.6, 12.7)

    /// FEQ.D: quiet equality (NV only for a signaling NaN; −0 == +0; false with a NaN).
    @inlinable
    public static func eq(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> Bool {
        equal(Binary64.self, UInt64(a), UInt64(b), &flags)
    }

    /// FLT.D: signaling a < b (NV for any NaN, and false).
    @inlinable
    public static func lt(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> Bool {
        less(Binary64.self, UInt64(a), UInt64(b), orEqual: false, &flags)
    }

    /// FLE.D: signaling a ≤ b (NV for any NaN, and false).
    @inlinable
    public static func le(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> Bool {
        less(Binary64.self, UInt64(a), UInt64(b), orEqual: true, &flags)
    }

    /// FCLASS.D: the 10-bit class mask, ready for x[rd]: bit 0 −∞, 1 negative normal, 2 negative
    /// subnormal, 3 −0, 4 +0, 5 positive subnormal, 6 positive normal, 7 +∞, 8 signaling NaN,
    /// 9 quiet NaN.
    @inlinable
    public static func classify(_ a: UInt64) -> UInt64 { SoftFloat.classify(Binary64.self, UInt64(a)) }

    /// True for any NaN.
    @inlinable
    public static func isNaN(_ a: UInt64) -> Bool { Binary64.isNaN(UInt64(a)) }

    /// True for a signaling NaN (quiet bit clear).
    @inlinable
    public static func isSignalingNaN(_ a: UInt64) -> Bool { Binary64.isSignalingNaN(UInt64(a)) }

    // MARK: Conversions (spec 11.7, 12.5)
    //
    // To integers: RISC-V saturation (table 11.4). NaN and values above the range give the
    // largest value, values below it the smallest (0 for unsigned), and raise NV only;
    // otherwise NX when inexact. A value that rounds into the range is valid: −0.5 to unsigned
    // with RTZ or RNE is 0 with NX only.
    //
    // On RV64, FCVT.W.D and FCVT.WU.D write the 32-bit result sign-extended to 64 bits, also for
    // WU; that is the caller's job: `UInt64(bitPattern: Int64(Int32(bitPattern: result)))`.

    /// FCVT.W.D.
    @inlinable
    public static func toInt32(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> Int32 {
        if rm == .towardZero, let r = hostTruncateToInt32(a, &flags) { return r }
        if rm == .nearestEven, let r = hostRoundNearestEven(a, limit: 30, unsigned: false, &flags) { return Int32(truncatingIfNeeded: r) }
        return Int32(truncatingIfNeeded: toIntegerSlow(a, rm, signed: true, width: 32, &flags))
    }

    /// FCVT.WU.D.
    @inlinable
    public static func toUInt32(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt32 {
        if rm == .towardZero, let r = hostTruncateToUInt32(a, &flags) { return r }
        if rm == .nearestEven, let r = hostRoundNearestEven(a, limit: 31, unsigned: true, &flags) { return UInt32(truncatingIfNeeded: r) }
        return UInt32(truncatingIfNeeded: toIntegerSlow(a, rm, signed: false, width: 32, &flags))
    }

    /// FCVT.L.D.
    @inlinable
    public static func toInt64(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> Int64 {
        if rm == .towardZero, let r = hostTruncateToInt64(a, &flags) { return r }
        if rm == .nearestEven, let r = hostRoundNearestEven(a, limit: 52, unsigned: false, &flags) { return r }
        return Int64(bitPattern: toIntegerSlow(a, rm, signed: true, width: 64, &flags))
    }

    /// FCVT.LU.D.
    @inlinable
    public static func toUInt64(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        if rm == .towardZero, let r = hostTruncateToUInt64(a, &flags) { return r }
        if rm == .nearestEven, let r = hostRoundNearestEven(a, limit: 52, unsigned: true, &flags) { return UInt64(bitPattern: r) }
        return toIntegerSlow(a, rm, signed: false, width: 64, &flags)
    }

    /// FCVT.D.W: always exact.
    public static func fromInt32(_ v: Int32, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softFromInteger(Binary64.self, negative: v < 0, magnitude: UInt64(v.magnitude), rm, &flags))
    }

    /// FCVT.D.WU.
    public static func fromUInt32(_ v: UInt32, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softFromInteger(Binary64.self, negative: false, magnitude: UInt64(v), rm, &flags))
    }

    /// FCVT.D.L.
    public static func fromInt64(_ v: Int64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softFromInteger(Binary64.self, negative: v < 0, magnitude: v.magnitude, rm, &flags))
    }

    /// FCVT.D.LU.
    public static func fromUInt64(_ v: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softFromInteger(Binary64.self, negative: false, magnitude: v, rm, &flags))
    }

    /// FCVT.S.D: rounding narrowing (spec 12.5).
    public static func toF32(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt32 {
        UInt32(truncatingIfNeeded: softConvert(Binary64.self, Binary32.self, a, rm, &flags))
    }

    // MARK: Integer reference paths (every rounding mode; the fast paths' fallback)

    @usableFromInline
    static func addSlow(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softAdd(Binary64.self, UInt64(a), UInt64(b), rm, &flags))
    }

    @usableFromInline
    static func mulSlow(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softMul(Binary64.self, UInt64(a), UInt64(b), rm, &flags))
    }

    @usableFromInline
    static func divSlow(_ a: UInt64, _ b: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softDiv(Binary64.self, UInt64(a), UInt64(b), rm, &flags))
    }

    @usableFromInline
    static func sqrtSlow(_ a: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softSqrt(Binary64.self, UInt64(a), rm, &flags))
    }

    @usableFromInline
    static func toIntegerSlow(_ a: UInt64, _ rm: RoundingMode, signed: Bool, width: Int,
                              _ flags: inout ExceptionFlags) -> UInt64 {
        softToInteger(Binary64.self, UInt64(a), rm, signed: signed, width: width, &flags)
    }

    @usableFromInline
    static func mulAddSlow(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
        UInt64(truncatingIfNeeded: softMulAdd(Binary64.self, UInt64(a), UInt64(b), UInt64(c), rm, &flags))
    }
}
