// Conversions (spec 11.7 FCVT.{W,WU,L,LU}.S and FCVT.S.{W,WU,L,LU}; 12.5 the same for D and
// FCVT.S.D / FCVT.D.S).

/// Float to integer with RISC-V saturation (spec 11.7, table 11.4). Returns the result's bit
/// pattern in the low `width` bits (32 or 64), zero-extended. Out-of-range values, infinities
/// and NaNs raise NV only (no NX) and give: NaN and positive overflow -> the largest value,
/// negative overflow -> the smallest (0 when unsigned). Otherwise NX when inexact.
@inline(__always)
func softToInteger<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ rm: RoundingMode, signed: Bool, width: Int,
                                    _ flags: inout ExceptionFlags) -> UInt64 {
    let widthMask: UInt64 = width == 64 ? ~0 : (1 << UInt64(width)) - 1
    let maxValue: UInt64 = signed ? widthMask >> 1 : widthMask
    let minValue: UInt64 = signed ? (widthMask >> 1) + 1 : 0  // pattern of the most negative value
    let negative = F.sign(a)
    if F.isSpecial(a) {
        flags.formUnion(.invalid)
        return F.isNaN(a) || !negative ? maxValue : minValue
    }
    if F.isZero(a) { return 0 }
    let x = F.unpack(a)
    let k = x.exp - F.bias  // unbiased exponent: 2^k ≤ |a| < 2^(k+1)
    if k >= 64 {
        flags.formUnion(.invalid)
        return negative ? minValue : maxValue
    }
    // |a| = x.sig × 2^(k − 62). Split into the integer part and the discarded fraction, then
    // round the magnitude per rm (directed modes round the signed value).
    let shift = 62 - k
    var magnitude: UInt64
    var fraction: UInt64 = 0
    var half: UInt64 = 1
    if shift <= 0 {
        magnitude = x.sig << UInt64(-shift)  // k is 62 or 63: an integer, fits in 64 bits
    } else if shift < 64 {
        magnitude = x.sig >> UInt64(shift)
        fraction = x.sig & ((1 << UInt64(shift)) - 1)
        half = 1 << UInt64(shift - 1)
    } else {
        // |a| < 1/2: nonzero fraction below one half.
        magnitude = 0
        fraction = 1
        half = 2
    }
    let roundUp: Bool
    switch rm {
    case .nearestEven: roundUp = fraction > half || (fraction == half && magnitude & 1 != 0)
    case .nearestMaxMagnitude: roundUp = fraction >= half
    case .towardZero: roundUp = false
    case .down: roundUp = negative && fraction != 0
    case .up: roundUp = !negative && fraction != 0
    }
    if roundUp { magnitude += 1 }  // cannot wrap: shift > 0 here, so magnitude < 2^62
    let result: UInt64
    if negative {
        guard magnitude <= minValue else {  // minValue is also the largest negated magnitude
            flags.formUnion(.invalid)
            return minValue
        }
        result = (0 &- magnitude) & widthMask
    } else {
        guard magnitude <= maxValue else {
            flags.formUnion(.invalid)
            return maxValue
        }
        result = magnitude
    }
    flags.raise(.inexact, if: fraction != 0)
    return result
}

/// Integer to float: (-1)^negative × magnitude, rounded (NX when inexact; cannot overflow).
@inline(__always)
func softFromInteger<F: BinaryFormat>(_: F.Type, negative: Bool, magnitude: UInt64, _ rm: RoundingMode,
                                      _ flags: inout ExceptionFlags) -> UInt64 {
    if magnitude == 0 { return 0 }  // integer zero converts to +0
    let lz = magnitude.leadingZeroBitCount
    // The leading one is at bit 63 − lz, so |value| = sig × 2^((63 − lz) − 62).
    let sig = lz == 0 ? shiftRightJam(magnitude, 1) : magnitude << UInt64(lz - 1)
    return roundPack(F.self, negative, F.bias + 63 - lz, sig, rm, &flags)
}

/// Between formats: exact when widening, rounded when narrowing (spec 12.5). NaN -> the
/// destination's canonical NaN, NV for a signaling NaN.
@inline(__always)
func softConvert<From: BinaryFormat, To: BinaryFormat>(_: From.Type, _: To.Type, _ a: UInt64, _ rm: RoundingMode,
                                                        _ flags: inout ExceptionFlags) -> UInt64 {
    let negative = From.sign(a)
    if From.isSpecial(a) {
        if From.isNaN(a) {
            if From.isSignalingNaN(a) { flags.formUnion(.invalid) }
            return To.canonicalNaN
        }
        return To.signedInfinity(negative)
    }
    if From.isZero(a) { return To.signedZero(negative) }
    let x = From.unpack(a)
    return roundPack(To.self, negative, x.exp - From.bias + To.bias, x.sig, rm, &flags)
}
