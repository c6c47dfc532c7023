import Testing
@testable import SoftFloat

/// One hand-checked case: operation name as in the vectors, rounding mode, operands, expected
/// result bits and flags, and why the case matters.
struct Case: CustomTestStringConvertible, Sendable {
    let op: String
    let rm: RoundingMode
    let operands: [UInt64]
    let result: UInt64
    let flags: ExceptionFlags
    let why: String
    init(_ op: String, _ rm: RoundingMode, _ operands: [UInt64], _ result: UInt64, _ flags: ExceptionFlags, _ why: String) {
        (self.op, self.rm, self.operands, self.result, self.flags, self.why) = (op, rm, operands, result, flags, why)
    }
    var testDescription: String { "\(op) \(rm) \(operands.map { hex($0) }): \(why)" }
}

// binary32 constants
let s1: UInt64 = 0x3F80_0000, s2: UInt64 = 0x4000_0000, s3: UInt64 = 0x4040_0000, s6: UInt64 = 0x40C0_0000
let sHalf: UInt64 = 0x3F00_0000, sNeg1: UInt64 = 0xBF80_0000, sNeg6: UInt64 = 0xC0C0_0000
let sZero: UInt64 = 0, sNegZero: UInt64 = 0x8000_0000
let sInf: UInt64 = 0x7F80_0000, sNegInf: UInt64 = 0xFF80_0000
let sQNaN: UInt64 = 0x7FC0_0000, sSNaN: UInt64 = 0x7F80_0001, sNegQNaNPayload: UInt64 = 0xFFC1_2345
let sMax: UInt64 = 0x7F7F_FFFF, sNegMax: UInt64 = 0xFF7F_FFFF
let sMinNormal: UInt64 = 0x0080_0000, sMinSub: UInt64 = 0x0000_0001
// binary64 constants
let d1: UInt64 = 0x3FF0_0000_0000_0000, d2: UInt64 = 0x4000_0000_0000_0000, d3: UInt64 = 0x4008_0000_0000_0000
let d6: UInt64 = 0x4018_0000_0000_0000, dNeg6: UInt64 = 0xC018_0000_0000_0000
let dHalf: UInt64 = 0x3FE0_0000_0000_0000, dNeg1: UInt64 = 0xBFF0_0000_0000_0000, dNegHalf: UInt64 = 0xBFE0_0000_0000_0000
let dZero: UInt64 = 0, dNegZero: UInt64 = 0x8000_0000_0000_0000
let dInf: UInt64 = 0x7FF0_0000_0000_0000, dNegInf: UInt64 = 0xFFF0_0000_0000_0000
let dQNaN: UInt64 = 0x7FF8_0000_0000_0000, dSNaN: UInt64 = 0x7FF0_0000_0000_0001
let dNegQNaNPayload: UInt64 = 0xFFF8_0000_0012_3456
let dMax: UInt64 = 0x7FEF_FFFF_FFFF_FFFF, dNegMax: UInt64 = 0xFFEF_FFFF_FFFF_FFFF
let dMinNormal: UInt64 = 0x0010_0000_0000_0000, dMinSub: UInt64 = 1

let arithmeticCases: [Case] = [
    // Signed zeros (IEEE 754-2008 §6.3).
    Case("f32_add", RNE, [s1, sNeg1], sZero, none, "x + (−x) = +0"),
    Case("f32_add", RDN, [s1, sNeg1], sNegZero, none, "x + (−x) = −0 when rounding down"),
    Case("f32_sub", RDN, [s1, s1], sNegZero, none, "x − x = −0 when rounding down"),
    Case("f32_add", RNE, [sNegZero, sNegZero], sNegZero, none, "−0 + −0 = −0"),
    Case("f32_add", RNE, [sZero, sNegZero], sZero, none, "+0 + −0 = +0"),
    Case("f32_add", RDN, [sZero, sNegZero], sNegZero, none, "+0 + −0 = −0 when rounding down"),
    Case("f64_sub", RNE, [d1, d1], dZero, none, "x − x = +0"),
    Case("f64_sub", RDN, [d1, d1], dNegZero, none, "x − x = −0 when rounding down"),
    Case("f32_mul", RNE, [sNegZero, s3], sNegZero, none, "−0 × 3 = −0"),
    Case("f64_mul", RNE, [dNegZero, dNegZero], dZero, none, "−0 × −0 = +0"),
    Case("f32_div", RNE, [sZero, sNeg1], sNegZero, none, "+0 / −1 = −0"),
    Case("f64_sqrt", RNE, [dNegZero], dNegZero, none, "√−0 = −0, no NV"),
    Case("f32_sqrt", RNE, [sNegZero], sNegZero, none, "√−0 = −0, no NV"),

    // Halfway cases: RNE ties to even, RMM ties away.
    Case("f32_add", RNE, [s1, 0x3380_0000], s1, NX, "1 + 2^-24: tie, even is 1"),
    Case("f32_add", RMM, [s1, 0x3380_0000], 0x3F80_0001, NX, "1 + 2^-24: tie, away is 1 + 2^-23"),
    Case("f32_add", RTZ, [s1, 0x3380_0000], s1, NX, "1 + 2^-24 truncated"),
    Case("f32_add", RUP, [s1, 0x3380_0000], 0x3F80_0001, NX, "1 + 2^-24 up"),
    Case("f32_add", RDN, [s1, 0x3380_0000], s1, NX, "1 + 2^-24 down"),
    Case("f32_add", RNE, [0x3F80_0001, 0x3380_0000], 0x3F80_0002, NX, "odd + half ulp: tie to even rounds up"),
    Case("f32_add", RMM, [sNeg1, 0xB380_0000], 0xBF80_0001, NX, "−1 − 2^-24: tie, away from zero"),
    Case("f32_add", RNE, [sNeg1, 0xB380_0000], sNeg1, NX, "−1 − 2^-24: tie to even"),
    Case("f32_add", RDN, [sNeg1, 0xB380_0000], 0xBF80_0001, NX, "−1 − 2^-24 down (away from zero)"),
    Case("f32_add", RUP, [sNeg1, 0xB380_0000], sNeg1, NX, "−1 − 2^-24 up (towards zero)"),
    Case("f64_add", RNE, [d1, 0x3CA0_0000_0000_0000], d1, NX, "1 + 2^-53: tie to even"),
    Case("f64_add", RMM, [d1, 0x3CA0_0000_0000_0000], 0x3FF0_0000_0000_0001, NX, "1 + 2^-53: tie away"),
    Case("f64_add", RNE, [0x3FF0_0000_0000_0001, 0x3CA0_0000_0000_0000], 0x3FF0_0000_0000_0002, NX, "odd + half ulp"),

    // Subnormal inputs and results.
    Case("f32_add", RNE, [sMinSub, sMinSub], 0x0000_0002, none, "subnormal sums are exact: no UF"),
    Case("f64_add", RNE, [dMinSub, dMinSub], 2, none, "subnormal sums are exact: no UF"),
    Case("f32_mul", RNE, [sMinNormal, sHalf], 0x0040_0000, none, "exact subnormal product: no UF"),
    Case("f32_mul", RNE, [sMinSub, sHalf], sZero, [UF, NX], "half the smallest subnormal: tie to even 0"),
    Case("f32_mul", RUP, [sMinSub, sHalf], sMinSub, [UF, NX], "half the smallest subnormal, up"),
    Case("f32_mul", RMM, [sMinSub, sHalf], sMinSub, [UF, NX], "half the smallest subnormal, tie away"),
    Case("f32_mul", RDN, [sMinSub | 0x8000_0000, sHalf], 0x8000_0001, [UF, NX], "−half the smallest subnormal, down"),
    Case("f32_mul", RNE, [sMinSub | 0x8000_0000, sHalf], sNegZero, [UF, NX], "underflow to −0"),
    Case("f32_mul", RNE, [0x0000_0003, sHalf], 0x0000_0002, [UF, NX], "1.5 units: tie to even 2"),
    Case("f64_mul", RNE, [dMinSub, dMinSub], dZero, [UF, NX], "2^-2148 rounds to 0"),
    Case("f64_mul", RUP, [dMinSub, dMinSub], dMinSub, [UF, NX], "2^-2148 rounds up to the smallest subnormal"),
    Case("f64_div", RNE, [dMinNormal, 0x4010_0000_0000_0000], 0x0004_0000_0000_0000, none, "exact subnormal quotient"),
    Case("f64_div", RNE, [d1, dMax], 0x0004_0000_0000_0000, [UF, NX], "1 / max is a rounded subnormal"),
    Case("f32_sqrt", RNE, [sMinSub], 0x1A35_04F3, NX, "√ of the smallest subnormal is normal"),
    Case("f64_sqrt", RNE, [dMinSub], 0x1E60_0000_0000_0000, none, "√2^-1074 = 2^-537 exactly"),

    // Tininess after rounding (spec 11.4).
    Case("f32_mul", RNE, [0x0080_0001, 0x3F7F_FFFE], sMinNormal, NX,
         "2^-126·(1 − 2^-46): tiny before rounding, not after: NX without UF"),
    Case("f32_mul", RUP, [0x0080_0001, 0x3F7F_FFFE], sMinNormal, NX, "same, rounding up: not tiny"),
    Case("f32_mul", RTZ, [0x0080_0001, 0x3F7F_FFFE], 0x007F_FFFF, [UF, NX], "same, truncated: tiny"),
    Case("f32_mul", RDN, [0x0080_0001, 0x3F7F_FFFE], 0x007F_FFFF, [UF, NX], "same, down: tiny"),
    Case("f32_mul", RNE, [0x3F7F_FFFF, sMinNormal], sMinNormal, [UF, NX],
         "2^-126·(1 − 2^-24): tiny after rounding, yet the subnormal rounding reaches the smallest normal"),
    Case("f64_mul", RNE, [0x0010_0000_0000_0001, 0x3FEF_FFFF_FFFF_FFFE], dMinNormal, NX,
         "2^-1022·(1 − 2^-104): not tiny after rounding"),
    Case("f64_mul", RNE, [0x3FEF_FFFF_FFFF_FFFF, dMinNormal], dMinNormal, [UF, NX],
         "2^-1022·(1 − 2^-53): tiny after rounding, rounds to the smallest normal"),
    Case("f64_to_f32", RNE, [0x380F_FFFF_F000_0000], sMinNormal, NX, "2^-126·(1 − 2^-25) narrows without UF"),
    Case("f64_to_f32", RNE, [0x380F_FFFF_E000_0000], sMinNormal, [UF, NX], "2^-126·(1 − 2^-24) narrows with UF"),

    // Overflow: ∞ or the largest finite value by rounding mode (IEEE 754-2008 §7.4).
    Case("f32_mul", RNE, [sMax, s2], sInf, [OF, NX], "overflow to +∞"),
    Case("f32_mul", RMM, [sMax, s2], sInf, [OF, NX], "overflow to +∞"),
    Case("f32_mul", RTZ, [sMax, s2], sMax, [OF, NX], "overflow towards zero: max"),
    Case("f32_mul", RDN, [sMax, s2], sMax, [OF, NX], "positive overflow rounding down: max"),
    Case("f32_mul", RUP, [sMax, s2], sInf, [OF, NX], "positive overflow rounding up: +∞"),
    Case("f32_mul", RDN, [sNegMax, s2], sNegInf, [OF, NX], "negative overflow rounding down: −∞"),
    Case("f32_mul", RUP, [sNegMax, s2], sNegMax, [OF, NX], "negative overflow rounding up: −max"),
    Case("f32_add", RNE, [sMax, sMax], sInf, [OF, NX], "max + max"),
    Case("f64_mul", RTZ, [dMax, d2], dMax, [OF, NX], "overflow towards zero: max"),
    Case("f64_mul", RNE, [dNegMax, d2], dNegInf, [OF, NX], "overflow to −∞"),
    Case("f64_add", RNE, [dMax, 0x7C90_0000_0000_0000], dInf, [OF, NX], "max + half ulp: tie to even overflows"),
    Case("f64_add", RTZ, [dMax, 0x7C90_0000_0000_0000], dMax, NX, "max + half ulp truncated: inexact, no overflow"),
    Case("f64_to_f32", RNE, [0x47F0_0000_0000_0000], sInf, [OF, NX], "2^128 narrows to ∞"),
    Case("f64_to_f32", RTZ, [0x47F0_0000_0000_0000], sMax, [OF, NX], "2^128 narrows to max towards zero"),
    Case("f64_to_f32", RNE, [0x47EF_FFFF_F000_0000], sInf, [OF, NX], "max + half ulp: tie to even overflows"),
    Case("f64_to_f32", RTZ, [0x47EF_FFFF_F000_0000], sMax, NX, "max + half ulp truncated: no overflow"),
    Case("f32_fmadd", RNE, [sMax, s2, sNegMax], sMax, none, "fma does not overflow in the intermediate product"),

    // Division and square root.
    Case("f32_div", RNE, [s1, sZero], sInf, DZ, "1/0"),
    Case("f32_div", RNE, [sNeg1, sZero], sNegInf, DZ, "−1/0"),
    Case("f32_div", RNE, [s1, sNegZero], sNegInf, DZ, "1/−0"),
    Case("f32_div", RNE, [sInf, sZero], sInf, none, "∞/0 is exact: no DZ"),
    Case("f32_div", RNE, [sZero, sZero], sQNaN, NV, "0/0"),
    Case("f32_div", RNE, [sInf, sNegInf], sQNaN, NV, "∞/∞"),
    Case("f32_div", RNE, [sZero, sInf], sZero, none, "0/∞"),
    Case("f32_div", RNE, [s1, s3], 0x3EAA_AAAB, NX, "1/3"),
    Case("f32_div", RTZ, [s1, s3], 0x3EAA_AAAA, NX, "1/3 truncated"),
    Case("f32_div", RDN, [sNeg1, s3], 0xBEAA_AAAB, NX, "−1/3 down"),
    Case("f64_div", RNE, [d1, d3], 0x3FD5_5555_5555_5555, NX, "1/3"),
    Case("f64_div", RUP, [d1, d3], 0x3FD5_5555_5555_5556, NX, "1/3 up"),
    Case("f64_div", RNE, [dZero, dZero], dQNaN, NV, "0/0"),
    Case("f64_div", RNE, [d1, dNegZero], dNegInf, DZ, "1/−0"),
    Case("f32_sqrt", RNE, [0x4080_0000], s2, none, "√4"),
    Case("f32_sqrt", RNE, [s2], 0x3FB5_04F3, NX, "√2"),
    Case("f32_sqrt", RUP, [s2], 0x3FB5_04F4, NX, "√2 up"),
    Case("f32_sqrt", RNE, [sNeg1], sQNaN, NV, "√−1"),
    Case("f32_sqrt", RNE, [sNegInf], sQNaN, NV, "√−∞"),
    Case("f32_sqrt", RNE, [sInf], sInf, none, "√+∞"),
    Case("f64_sqrt", RNE, [d2], 0x3FF6_A09E_667F_3BCD, NX, "√2"),
    Case("f64_sqrt", RTZ, [d2], 0x3FF6_A09E_667F_3BCC, NX, "√2 truncated"),
    Case("f64_sqrt", RNE, [dNeg1], dQNaN, NV, "√−1"),
    Case("f64_sqrt", RNE, [0x4010_0000_0000_0000], d2, none, "√4"),

    // NaNs: canonical results, NV only for signaling NaNs and invalid operations (spec 11.3).
    Case("f32_add", RNE, [sSNaN, s1], sQNaN, NV, "signaling NaN operand"),
    Case("f32_add", RNE, [sNegQNaNPayload, s1], sQNaN, none, "quiet NaN: canonical, no payload or sign"),
    Case("f32_mul", RNE, [s1, sSNaN], sQNaN, NV, "signaling NaN operand"),
    Case("f32_add", RNE, [sInf, sNegInf], sQNaN, NV, "∞ − ∞"),
    Case("f32_add", RNE, [sInf, sInf], sInf, none, "∞ + ∞"),
    Case("f32_mul", RNE, [sInf, sZero], sQNaN, NV, "∞ × 0"),
    Case("f32_mul", RNE, [sNegZero, sNegInf], sQNaN, NV, "0 × ∞"),
    Case("f64_add", RNE, [dNegQNaNPayload, d1], dQNaN, none, "quiet NaN: canonical"),
    Case("f64_add", RNE, [dSNaN, dQNaN], dQNaN, NV, "signaling and quiet NaN"),
    Case("f64_sqrt", RNE, [dSNaN], dQNaN, NV, "√sNaN"),
    Case("f64_sqrt", RNE, [dQNaN], dQNaN, none, "√qNaN"),
    Case("f64_div", RNE, [dSNaN, d1], dQNaN, NV, "sNaN / 1"),

    // Fused multiply-add: one rounding (spec 11.6).
    Case("f64_fmadd", RNE, [0x3FF0_0000_0000_0001, 0x3FEF_FFFF_FFFF_FFFF, dNeg1], 0x3C9F_FFFF_FFFF_FFFE, none,
         "(1 + 2^-52)(1 − 2^-53) − 1 = 2^-53 − 2^-105 exactly; rounding the product first would give 0"),
    Case("f32_fmadd", RNE, [0x3F80_0800, 0x3F80_0800, 0x1780_0000], 0x3F80_1001, NX,
         "(1 + 2^-12)² + 2^-80 lies just above a binary32 midpoint; via a binary64 sum it would tie to even"),
    Case("f32_fmadd", RNE, [0x3F80_0800, 0x3F80_0800, 0x9780_0000], 0x3F80_1000, NX, "just below the midpoint"),
    Case("f32_fmadd", RNE, [0x3F80_0800, 0x3F80_0800, sZero], 0x3F80_1000, NX, "exactly the midpoint: even"),
    Case("f32_fmadd", RMM, [0x3F80_0800, 0x3F80_0800, sZero], 0x3F80_1001, NX, "exactly the midpoint: away"),
    Case("f32_fmadd", RNE, [sInf, sZero, sQNaN], sQNaN, NV, "∞ × 0 + qNaN raises NV (spec 11.6)"),
    Case("f32_fmadd", RNE, [sZero, sNegInf, sQNaN], sQNaN, NV, "0 × ∞ + qNaN raises NV"),
    Case("f64_fmadd", RNE, [dInf, dZero, dQNaN], dQNaN, NV, "∞ × 0 + qNaN raises NV"),
    Case("f64_fmadd", RNE, [dZero, dInf, dSNaN], dQNaN, NV, "0 × ∞ + sNaN"),
    Case("f32_fmadd", RNE, [sQNaN, sZero, s1], sQNaN, none, "qNaN × 0 + 1: quiet"),
    Case("f32_fmadd", RNE, [sQNaN, sInf, sZero], sQNaN, none, "qNaN × ∞: quiet (no ∞ × 0)"),
    Case("f32_fmadd", RNE, [s1, s1, sSNaN], sQNaN, NV, "signaling addend"),
    Case("f32_fmadd", RNE, [sInf, s1, sNegInf], sQNaN, NV, "∞ − ∞"),
    Case("f32_fmadd", RNE, [sInf, s1, sInf], sInf, none, "∞ + ∞"),
    Case("f64_fmadd", RNE, [d1, d1, dNegInf], dNegInf, none, "finite + (−∞)"),
    Case("f32_fmadd", RNE, [s2, s3, sNeg6], sZero, none, "exact cancellation: +0"),
    Case("f32_fmadd", RDN, [s2, s3, sNeg6], sNegZero, none, "exact cancellation rounding down: −0"),
    Case("f64_fmadd", RNE, [d2, d3, dNeg6], dZero, none, "exact cancellation: +0"),
    Case("f64_fmadd", RDN, [d2, d3, dNeg6], dNegZero, none, "exact cancellation rounding down: −0"),
    Case("f32_fmadd", RNE, [sNegZero, s1, sZero], sZero, none, "−0 + +0 = +0"),
    Case("f32_fmadd", RDN, [sNegZero, s1, sZero], sNegZero, none, "−0 + +0 = −0 rounding down"),
    Case("f32_fmadd", RNE, [sNegZero, s1, sNegZero], sNegZero, none, "−0 + −0 = −0"),
    Case("f32_fmadd", RNE, [sMinSub, sHalf, sZero], sZero, [UF, NX], "underflowing product plus +0"),
    Case("f32_fmadd", RNE, [sMinNormal, 0x8080_0000, s1], s1, NX, "1 − tiny"),
    Case("f32_fmadd", RDN, [sMinNormal, 0x8080_0000, s1], 0x3F7F_FFFF, NX, "1 − tiny, down"),
    Case("f32_fmsub", RNE, [s2, s3, s6], sZero, none, "2·3 − 6"),
    Case("f32_fnmsub", RNE, [s2, s3, s6], sZero, none, "−(2·3) + 6"),
    Case("f32_fnmadd", RNE, [s2, s3, sNeg6], sZero, none, "−(2·3) − (−6)"),
    Case("f32_fnmadd", RNE, [s1, s1, s1], 0xC000_0000, none, "−(1·1) − 1 = −2"),
    Case("f64_fnmsub", RNE, [d1, d1, d3], d2, none, "−(1·1) + 3 = 2"),
    Case("f64_fmsub", RNE, [d1, d1, d3], 0xC000_0000_0000_0000, none, "1·1 − 3 = −2"),
]

let nonRoundingCases: [Case] = [
    // FMIN/FMAX, version 2.2 (spec 11.6).
    Case("f32_min", RNE, [sNegZero, sZero], sNegZero, none, "min(−0, +0) = −0"),
    Case("f32_min", RNE, [sZero, sNegZero], sNegZero, none, "min(+0, −0) = −0"),
    Case("f32_max", RNE, [sNegZero, sZero], sZero, none, "max(−0, +0) = +0"),
    Case("f32_max", RNE, [sZero, sNegZero], sZero, none, "max(+0, −0) = +0"),
    Case("f32_min", RNE, [sQNaN, s1], s1, none, "one quiet NaN: the other operand"),
    Case("f32_min", RNE, [s1, sNegQNaNPayload], s1, none, "one quiet NaN: the other operand"),
    Case("f32_max", RNE, [sSNaN, s1], s1, NV, "one signaling NaN: the other operand, and NV"),
    Case("f32_min", RNE, [sQNaN, sNegQNaNPayload], sQNaN, none, "two quiet NaNs: canonical"),
    Case("f32_max", RNE, [sSNaN, sQNaN], sQNaN, NV, "signaling and quiet: canonical, NV"),
    Case("f32_min", RNE, [sNegInf, s1], sNegInf, none, "min(−∞, 1)"),
    Case("f32_min", RNE, [sNeg1, 0xC000_0000], 0xC000_0000, none, "min(−1, −2) = −2"),
    Case("f32_max", RNE, [sNeg1, 0xC000_0000], sNeg1, none, "max(−1, −2) = −1"),
    Case("f32_max", RNE, [sMinSub, sZero], sMinSub, none, "subnormal above zero"),
    Case("f64_min", RNE, [dNegZero, dZero], dNegZero, none, "min(−0, +0) = −0"),
    Case("f64_max", RNE, [dZero, dNegZero], dZero, none, "max(+0, −0) = +0"),
    Case("f64_max", RNE, [dQNaN, dNeg1], dNeg1, none, "one quiet NaN"),
    Case("f64_min", RNE, [d1, dSNaN], d1, NV, "one signaling NaN"),
    Case("f64_max", RNE, [dNegQNaNPayload, dQNaN], dQNaN, none, "two NaNs: canonical"),
    Case("f64_min", RNE, [dNeg1, dNegHalf], dNeg1, none, "min(−1, −0.5)"),

    // FEQ is quiet, FLT/FLE signal (spec 11.8).
    Case("f32_eq", RNE, [sQNaN, s1], 0, none, "feq with a quiet NaN: false, no NV"),
    Case("f32_eq", RNE, [sQNaN, sQNaN], 0, none, "feq qNaN, qNaN: false"),
    Case("f32_eq", RNE, [sSNaN, s1], 0, NV, "feq with a signaling NaN: NV"),
    Case("f32_lt", RNE, [sQNaN, s1], 0, NV, "flt with a quiet NaN: NV"),
    Case("f32_le", RNE, [s1, sQNaN], 0, NV, "fle with a quiet NaN: NV"),
    Case("f32_eq", RNE, [sNegZero, sZero], 1, none, "−0 == +0"),
    Case("f32_lt", RNE, [sNegZero, sZero], 0, none, "−0 < +0 is false"),
    Case("f32_le", RNE, [sZero, sNegZero], 1, none, "+0 ≤ −0"),
    Case("f32_lt", RNE, [sNeg1, s1], 1, none, "−1 < 1"),
    Case("f32_lt", RNE, [0xC000_0000, sNeg1], 1, none, "−2 < −1"),
    Case("f32_lt", RNE, [sNeg1, 0xC000_0000], 0, none, "−1 < −2 is false"),
    Case("f32_lt", RNE, [s1, s1], 0, none, "1 < 1 is false"),
    Case("f32_le", RNE, [s1, s1], 1, none, "1 ≤ 1"),
    Case("f32_lt", RNE, [sMinSub | 0x8000_0000, sZero], 1, none, "−subnormal < 0"),
    Case("f32_le", RNE, [sNegInf, sInf], 1, none, "−∞ ≤ +∞"),
    Case("f64_eq", RNE, [dNegZero, dZero], 1, none, "−0 == +0"),
    Case("f64_eq", RNE, [dSNaN, dSNaN], 0, NV, "sNaN == sNaN: false, NV"),
    Case("f64_lt", RNE, [dQNaN, dQNaN], 0, NV, "flt qNaN: NV"),
    Case("f64_le", RNE, [dNeg1, dNegHalf], 1, none, "−1 ≤ −0.5"),
    Case("f64_lt", RNE, [dNegHalf, dNeg1], 0, none, "−0.5 < −1 is false"),

    // FCLASS (spec 11.9).
    Case("f32_class", RNE, [sNegInf], 1 << 0, none, "−∞"),
    Case("f32_class", RNE, [sNeg1], 1 << 1, none, "negative normal"),
    Case("f32_class", RNE, [0x807F_FFFF], 1 << 2, none, "negative subnormal"),
    Case("f32_class", RNE, [sNegZero], 1 << 3, none, "−0"),
    Case("f32_class", RNE, [sZero], 1 << 4, none, "+0"),
    Case("f32_class", RNE, [sMinSub], 1 << 5, none, "positive subnormal"),
    Case("f32_class", RNE, [sMax], 1 << 6, none, "positive normal"),
    Case("f32_class", RNE, [sInf], 1 << 7, none, "+∞"),
    Case("f32_class", RNE, [0xFFBF_FFFF], 1 << 8, none, "signaling NaN (negative)"),
    Case("f32_class", RNE, [sQNaN], 1 << 9, none, "quiet NaN"),
    Case("f64_class", RNE, [dNegInf], 1 << 0, none, "−∞"),
    Case("f64_class", RNE, [dNegMax], 1 << 1, none, "negative normal"),
    Case("f64_class", RNE, [0x8000_0000_0000_0001], 1 << 2, none, "negative subnormal"),
    Case("f64_class", RNE, [dNegZero], 1 << 3, none, "−0"),
    Case("f64_class", RNE, [dZero], 1 << 4, none, "+0"),
    Case("f64_class", RNE, [0x000F_FFFF_FFFF_FFFF], 1 << 5, none, "positive subnormal"),
    Case("f64_class", RNE, [dMinNormal], 1 << 6, none, "positive normal"),
    Case("f64_class", RNE, [dInf], 1 << 7, none, "+∞"),
    Case("f64_class", RNE, [dSNaN], 1 << 8, none, "signaling NaN"),
    Case("f64_class", RNE, [dNegQNaNPayload], 1 << 9, none, "quiet NaN (negative, payload)"),
]

// 2^31 − 0.5, −2^31 − 0.5, −2^31 − 1 and friends as binary64.
let d2p31MinusHalf: UInt64 = 0x41DF_FFFF_FFE0_0000
let dNeg2p31MinusHalf: UInt64 = 0xC1E0_0000_0010_0000
let dNeg2p31Minus1: UInt64 = 0xC1E0_0000_0020_0000
let d2p32MinusHalf: UInt64 = 0x41EF_FFFF_FFF0_0000

let conversionCases: [Case] = [
    // Saturation boundaries (spec 11.7, table 11.4): NV and nothing else when out of range.
    Case("f64_to_i32", RNE, [d2p31MinusHalf], 0x7FFF_FFFF, NV, "2^31 − 0.5 rounds (to even) out of range"),
    Case("f64_to_i32", RMM, [d2p31MinusHalf], 0x7FFF_FFFF, NV, "2^31 − 0.5 rounds away, out of range"),
    Case("f64_to_i32", RUP, [d2p31MinusHalf], 0x7FFF_FFFF, NV, "2^31 − 0.5 rounds up, out of range"),
    Case("f64_to_i32", RTZ, [d2p31MinusHalf], 0x7FFF_FFFF, NX, "2^31 − 0.5 truncates into range: NX only"),
    Case("f64_to_i32", RDN, [d2p31MinusHalf], 0x7FFF_FFFF, NX, "2^31 − 0.5 rounds down into range"),
    Case("f64_to_u32", RNE, [d2p31MinusHalf], 0x8000_0000, NX, "2^31 − 0.5 fits unsigned"),
    Case("f64_to_i32", RNE, [dNeg2p31MinusHalf], 0x8000_0000, NX, "−2^31 − 0.5: tie to even −2^31, valid"),
    Case("f64_to_i32", RMM, [dNeg2p31MinusHalf], 0x8000_0000, NV, "−2^31 − 0.5 away: out of range"),
    Case("f64_to_i32", RDN, [dNeg2p31MinusHalf], 0x8000_0000, NV, "−2^31 − 0.5 down: out of range"),
    Case("f64_to_i32", RUP, [dNeg2p31MinusHalf], 0x8000_0000, NX, "−2^31 − 0.5 up: valid"),
    Case("f64_to_i32", RTZ, [dNeg2p31Minus1], 0x8000_0000, NV, "−2^31 − 1 is out of range"),
    Case("f64_to_i32", RNE, [0xC1E0_0000_0000_0000], 0x8000_0000, none, "−2^31 exactly"),
    Case("f64_to_u32", RTZ, [d2p32MinusHalf], 0xFFFF_FFFF, NX, "2^32 − 0.5 truncated"),
    Case("f64_to_u32", RNE, [d2p32MinusHalf], 0xFFFF_FFFF, NV, "2^32 − 0.5 rounds to 2^32: out of range"),
    Case("f64_to_i64", RNE, [0x43E0_0000_0000_0000], 0x7FFF_FFFF_FFFF_FFFF, NV, "2^63 is out of range"),
    Case("f64_to_u64", RNE, [0x43E0_0000_0000_0000], 0x8000_0000_0000_0000, none, "2^63 fits unsigned"),
    Case("f64_to_i64", RNE, [0xC3E0_0000_0000_0000], 0x8000_0000_0000_0000, none, "−2^63 exactly"),
    Case("f64_to_u64", RNE, [0xC3E0_0000_0000_0000], 0, NV, "−2^63 to unsigned"),
    Case("f64_to_u64", RNE, [0x43F0_0000_0000_0000], 0xFFFF_FFFF_FFFF_FFFF, NV, "2^64 is out of range"),
    Case("f64_to_u64", RNE, [0x43EF_FFFF_FFFF_FFFF], 0xFFFF_FFFF_FFFF_F800, none, "largest double below 2^64"),
    Case("f64_to_i32", RNE, [dQNaN], 0x7FFF_FFFF, NV, "NaN → max"),
    Case("f64_to_i32", RNE, [dNegQNaNPayload], 0x7FFF_FFFF, NV, "negative NaN → max too"),
    Case("f64_to_u32", RNE, [dSNaN], 0xFFFF_FFFF, NV, "NaN → unsigned max"),
    Case("f64_to_i64", RNE, [dQNaN], 0x7FFF_FFFF_FFFF_FFFF, NV, "NaN → max"),
    Case("f64_to_u64", RNE, [dQNaN], 0xFFFF_FFFF_FFFF_FFFF, NV, "NaN → unsigned max"),
    Case("f64_to_i32", RNE, [dNegInf], 0x8000_0000, NV, "−∞ → min"),
    Case("f64_to_u32", RNE, [dNegInf], 0, NV, "−∞ → 0"),
    Case("f64_to_u64", RNE, [dInf], 0xFFFF_FFFF_FFFF_FFFF, NV, "+∞ → max"),
    Case("f64_to_i64", RNE, [dNegInf], 0x8000_0000_0000_0000, NV, "−∞ → min"),
    // Values that round into range are valid.
    Case("f64_to_u32", RTZ, [dNegHalf], 0, NX, "−0.5 truncates to 0: NX, no NV"),
    Case("f64_to_u32", RNE, [dNegHalf], 0, NX, "−0.5 rounds to (−)0: NX, no NV"),
    Case("f64_to_u32", RUP, [dNegHalf], 0, NX, "−0.5 rounds up to 0"),
    Case("f64_to_u32", RDN, [dNegHalf], 0, NV, "−0.5 rounds down to −1: out of range"),
    Case("f64_to_u32", RMM, [dNegHalf], 0, NV, "−0.5 rounds away to −1: out of range"),
    Case("f64_to_u64", RNE, [dNegHalf], 0, NX, "−0.5 to unsigned 64"),
    Case("f64_to_i32", RDN, [dNegHalf], 0xFFFF_FFFF, NX, "−0.5 down is −1"),
    Case("f64_to_u32", RNE, [dNegZero], 0, none, "−0 → 0, exact"),
    Case("f64_to_i32", RNE, [dHalf], 0, NX, "0.5: tie to even 0"),
    Case("f64_to_i32", RNE, [0x3FF8_0000_0000_0000], 2, NX, "1.5: tie to even 2"),
    Case("f64_to_i32", RNE, [0x4004_0000_0000_0000], 2, NX, "2.5: tie to even 2"),
    Case("f64_to_i32", RMM, [0x4004_0000_0000_0000], 3, NX, "2.5: tie away 3"),
    Case("f64_to_i32", RMM, [0xC004_0000_0000_0000], 0xFFFF_FFFD, NX, "−2.5: tie away −3"),
    Case("f64_to_i64", RNE, [dMinSub], 0, NX, "tiny positive"),
    Case("f64_to_i64", RUP, [dMinSub], 1, NX, "tiny positive rounded up"),
    Case("f32_to_i32", RNE, [0x4F00_0000], 0x7FFF_FFFF, NV, "2^31 is out of range"),
    Case("f32_to_u32", RNE, [0x4F00_0000], 0x8000_0000, none, "2^31 fits unsigned"),
    Case("f32_to_i32", RNE, [0xCF00_0000], 0x8000_0000, none, "−2^31 exactly"),
    Case("f32_to_u32", RNE, [0x4F80_0000], 0xFFFF_FFFF, NV, "2^32 is out of range"),
    Case("f32_to_u32", RNE, [0x4F7F_FFFF], 0xFFFF_FF00, none, "largest float below 2^32"),
    Case("f32_to_i64", RNE, [0x5F00_0000], 0x7FFF_FFFF_FFFF_FFFF, NV, "2^63 is out of range"),
    Case("f32_to_i64", RNE, [0xDF00_0000], 0x8000_0000_0000_0000, none, "−2^63 exactly"),
    Case("f32_to_u64", RNE, [0x5F80_0000], 0xFFFF_FFFF_FFFF_FFFF, NV, "2^64 is out of range"),
    Case("f32_to_u32", RNE, [sNegInf], 0, NV, "−∞ → 0"),
    Case("f32_to_i32", RNE, [sSNaN], 0x7FFF_FFFF, NV, "NaN → max"),
    // Integer to float.
    Case("i64_to_f64", RNE, [0x7FFF_FFFF_FFFF_FFFF], 0x43E0_0000_0000_0000, NX, "Int64.max rounds to 2^63"),
    Case("i64_to_f64", RTZ, [0x7FFF_FFFF_FFFF_FFFF], 0x43DF_FFFF_FFFF_FFFF, NX, "Int64.max truncated"),
    Case("i64_to_f64", RNE, [0x8000_0000_0000_0000], 0xC3E0_0000_0000_0000, none, "Int64.min is exact"),
    Case("u64_to_f32", RNE, [0xFFFF_FFFF_FFFF_FFFF], 0x5F80_0000, NX, "UInt64.max rounds to 2^64"),
    Case("u64_to_f32", RTZ, [0xFFFF_FFFF_FFFF_FFFF], 0x5F7F_FFFF, NX, "UInt64.max truncated"),
    Case("u64_to_f64", RNE, [0xFFFF_FFFF_FFFF_FFFF], 0x43F0_0000_0000_0000, NX, "UInt64.max to binary64"),
    Case("i32_to_f32", RNE, [0x0100_0001], 0x4B80_0000, NX, "2^24 + 1: tie to even"),
    Case("i32_to_f32", RMM, [0x0100_0001], 0x4B80_0001, NX, "2^24 + 1: tie away"),
    Case("i32_to_f32", RUP, [0x0100_0001], 0x4B80_0001, NX, "2^24 + 1 up"),
    Case("i32_to_f32", RDN, [0xFEFF_FFFF], 0xCB80_0001, NX, "−(2^24 + 1) down"),
    Case("i32_to_f32", RNE, [0xFEFF_FFFF], 0xCB80_0000, NX, "−(2^24 + 1) to even"),
    Case("i32_to_f64", RNE, [0x8000_0000], 0xC1E0_0000_0000_0000, none, "Int32.min exact"),
    Case("u32_to_f32", RNE, [0xFFFF_FFFF], 0x4F80_0000, NX, "UInt32.max rounds to 2^32"),
    Case("u32_to_f64", RNE, [0xFFFF_FFFF], 0x41EF_FFFF_FFE0_0000, none, "UInt32.max exact in binary64"),
    Case("i64_to_f32", RNE, [0], 0, none, "0 → +0"),
    Case("i32_to_f32", RDN, [0], 0, none, "0 → +0 in every mode"),
    // Between formats (spec 12.5).
    Case("f64_to_f32", RNE, [0x36A0_0000_0000_0000], sMinSub, none, "2^-149 exactly"),
    Case("f64_to_f32", RNE, [0x3690_0000_0000_0000], sZero, [UF, NX], "2^-150: tie to even 0"),
    Case("f64_to_f32", RUP, [0x3690_0000_0000_0000], sMinSub, [UF, NX], "2^-150 up"),
    Case("f64_to_f32", RNE, [dSNaN], sQNaN, NV, "sNaN narrows to the canonical NaN"),
    Case("f64_to_f32", RNE, [dNegQNaNPayload], sQNaN, none, "qNaN narrows to the canonical NaN"),
    Case("f64_to_f32", RNE, [dNegInf], sNegInf, none, "−∞"),
    Case("f64_to_f32", RNE, [dNegZero], sNegZero, none, "−0"),
    Case("f64_to_f32", RNE, [0x3FF0_0000_1000_0000], s1, NX, "1 + 2^-24: tie to even"),
    Case("f64_to_f32", RMM, [0x3FF0_0000_1000_0000], 0x3F80_0001, NX, "1 + 2^-24: tie away"),
    Case("f32_to_f64", RNE, [sSNaN], dQNaN, NV, "sNaN widens to the canonical NaN"),
    Case("f32_to_f64", RNE, [sNegQNaNPayload], dQNaN, none, "qNaN widens to the canonical NaN"),
    Case("f32_to_f64", RNE, [sMinSub], 0x36A0_0000_0000_0000, none, "subnormal widens exactly"),
    Case("f32_to_f64", RNE, [sNegZero], dNegZero, none, "−0"),
    Case("f32_to_f64", RNE, [sNegInf], dNegInf, none, "−∞"),
]

@Suite("Targeted cases")
struct TargetedTests {
    @Test("arithmetic", arguments: arithmeticCases)
    func arithmetic(_ c: Case) { check(c) }

    @Test("min, max, compare, classify", arguments: nonRoundingCases)
    func nonRounding(_ c: Case) { check(c) }

    @Test("conversions", arguments: conversionCases)
    func conversions(_ c: Case) { check(c) }

    func check(_ c: Case) {
        var flags: ExceptionFlags = []
        let got = apply(Substring(c.op), c.rm, c.operands, &flags)
        #expect(got == c.result, "\(c.op) \(c.rm) \(c.operands.map { hex($0) }): got \(got.map { hex($0) } ?? "nil"), expected \(hex(c.result)) (\(c.why))")
        #expect(flags == c.flags, "\(c.op) \(c.rm): flags \(describe(flags)), expected \(describe(c.flags)) (\(c.why))")
        // The integer path agrees in every mode, also where the public entry point took a fast path.
        if let slow = slowPath(c) {
            #expect(slow.0 == c.result && slow.1 == c.flags, "integer path: \(hex(slow.0)) \(describe(slow.1))")
        }
    }

    func slowPath(_ c: Case) -> (UInt64, ExceptionFlags)? {
        var flags: ExceptionFlags = []
        let x = c.operands
        let r: UInt64
        switch c.op {
        case "f32_add": r = UInt64(F32.addSlow(UInt32(x[0]), UInt32(x[1]), c.rm, &flags))
        case "f32_mul": r = UInt64(F32.mulSlow(UInt32(x[0]), UInt32(x[1]), c.rm, &flags))
        case "f32_div": r = UInt64(F32.divSlow(UInt32(x[0]), UInt32(x[1]), c.rm, &flags))
        case "f32_sqrt": r = UInt64(F32.sqrtSlow(UInt32(x[0]), c.rm, &flags))
        case "f32_fmadd": r = UInt64(F32.mulAddSlow(UInt32(x[0]), UInt32(x[1]), UInt32(x[2]), c.rm, &flags))
        case "f64_add": r = F64.addSlow(x[0], x[1], c.rm, &flags)
        case "f64_mul": r = F64.mulSlow(x[0], x[1], c.rm, &flags)
        case "f64_div": r = F64.divSlow(x[0], x[1], c.rm, &flags)
        case "f64_sqrt": r = F64.sqrtSlow(x[0], c.rm, &flags)
        case "f64_fmadd": r = F64.mulAddSlow(x[0], x[1], x[2], c.rm, &flags)
        default: return nil
        }
        return (r, flags)
    }

    @Test("flags accumulate: existing bits are kept")
    func flagsAccumulate() {
        var flags: ExceptionFlags = [DZ, NV]
        _ = F64.div(d1, d3, RNE, &flags)
        #expect(flags == [DZ, NV, NX])
        _ = F32.add(UInt32(s1), UInt32(s1), RNE, &flags)
        #expect(flags == [DZ, NV, NX])
        #expect(ExceptionFlags([NX, UF, OF, DZ, NV]).rawValue == 0x1F)
        #expect(NV.rawValue == 16 && DZ.rawValue == 8 && OF.rawValue == 4 && UF.rawValue == 2 && NX.rawValue == 1)
    }

    @Test("rounding mode encodings (spec table 11.1)")
    func roundingModes() {
        #expect(RoundingMode(rawValue: 0) == .nearestEven)
        #expect(RoundingMode(rawValue: 1) == .towardZero)
        #expect(RoundingMode(rawValue: 2) == .down)
        #expect(RoundingMode(rawValue: 3) == .up)
        #expect(RoundingMode(rawValue: 4) == .nearestMaxMagnitude)
        for reserved: UInt8 in [5, 6, 7] { #expect(RoundingMode(rawValue: reserved) == nil) }
    }

    @Test("NaN boxing (spec 12.2)")
    func nanBoxing() {
        #expect(boxSingle(0x3F80_0000) == 0xFFFF_FFFF_3F80_0000)
        #expect(unboxSingle(0xFFFF_FFFF_3F80_0000) == 0x3F80_0000)
        #expect(unboxSingle(0xFFFF_FFFF_7F80_0001) == 0x7F80_0001, "a boxed sNaN is returned as it is")
        #expect(unboxSingle(0x0000_0000_3F80_0000) == 0x7FC0_0000, "not boxed: canonical NaN")
        #expect(unboxSingle(0xFFFF_FFFE_3F80_0000) == 0x7FC0_0000, "one upper bit clear: canonical NaN")
        #expect(unboxSingle(0x7FFF_FFFF_3F80_0000) == 0x7FC0_0000)
        #expect(unboxSingle(boxSingle(0x8000_0000)) == 0x8000_0000)
    }

    @Test("sign injection keeps NaN payloads and raises nothing")
    func signInjection() {
        #expect(F32.sgnj(0x7F80_0001, 0x8000_0000) == 0xFF80_0001)
        #expect(F32.sgnjn(0x3F80_0000, 0x3F80_0000) == 0xBF80_0000)
        #expect(F32.sgnjx(0xBF80_0000, 0xBF80_0000) == 0x3F80_0000)
        #expect(F64.sgnj(0x7FF0_0000_0000_0001, 1 << 63) == 0xFFF0_0000_0000_0001)
        #expect(F64.sgnjn(dNeg1, dNeg1) == d1)
        #expect(F64.sgnjx(dNeg1, d1) == dNeg1)
    }

    @Test("fcvt.w.s on RV64: the caller sign-extends, also for WU")
    func signExtensionContract() {
        var flags: ExceptionFlags = []
        let wu = F32.toUInt32(0x4F7F_FFFF, RNE, &flags)  // 0xFFFFFF00
        #expect(UInt64(bitPattern: Int64(Int32(bitPattern: wu))) == 0xFFFF_FFFF_FFFF_FF00)
        let w = F64.toInt32(dNeg1, RNE, &flags)
        #expect(UInt64(bitPattern: Int64(w)) == 0xFFFF_FFFF_FFFF_FFFF)
        #expect(flags == [])
    }
}
