// The integer machinery shared by both formats: format constants, unpacking, the one rounding
// function (`roundPack`) and a minimal 128-bit helper.
//
// Internal representation of a finite nonzero value (`Unpacked`):
//     value = (-1)^sign × sig × 2^(exp − bias − 62),   sig ∈ [2^62, 2^63)
// `exp` is the biased exponent the value would have with an unbounded exponent range (≤ 0 for a
// value below the smallest normal, ≥ maxExponent above the largest finite). Both formats use the
// same 64-bit significand, so binary64 keeps 10 bits below its last significand bit and binary32
// keeps 39; everything below those is folded into a sticky bit ("jamming"), as Berkeley
// SoftFloat 3 does.

/// Constants of an IEEE 754 binary interchange format. Bit patterns travel as `UInt64` inside the
/// module (a binary32 pattern zero-extended), so the generic code specializes on two numbers.
@usableFromInline
protocol BinaryFormat {
    /// Trailing significand field width: 23 or 52.
    static var fractionBits: Int { get }
    /// Exponent field width: 8 or 11.
    static var exponentBits: Int { get }
}

@usableFromInline
enum Binary32: BinaryFormat {
    @inlinable static var fractionBits: Int { 23 }
    @inlinable static var exponentBits: Int { 8 }
}

@usableFromInline
enum Binary64: BinaryFormat {
    @inlinable static var fractionBits: Int { 52 }
    @inlinable static var exponentBits: Int { 11 }
}

extension BinaryFormat {
    @inlinable @inline(__always) static var bias: Int { (1 << (exponentBits - 1)) - 1 }
    /// The exponent field of infinities and NaNs (all ones).
    @inlinable @inline(__always) static var maxExponent: Int { (1 << exponentBits) - 1 }
    @inlinable @inline(__always) static var signMask: UInt64 { 1 << UInt64(fractionBits + exponentBits) }
    @inlinable @inline(__always) static var fractionMask: UInt64 { (1 << UInt64(fractionBits)) - 1 }
    @inlinable @inline(__always) static var quietBit: UInt64 { 1 << UInt64(fractionBits - 1) }
    @inlinable @inline(__always) static var infinity: UInt64 { UInt64(maxExponent) << UInt64(fractionBits) }
    /// Spec 11.3: positive sign, all significand bits clear except the quiet bit.
    @inlinable @inline(__always) static var canonicalNaN: UInt64 { infinity | quietBit }
    @inlinable @inline(__always) static var maxFinite: UInt64 { infinity - 1 }
    /// Bits of the 63-bit working significand below the format's last significand bit.
    @inlinable @inline(__always) static var roundBits: Int { 62 - fractionBits }

    @inlinable @inline(__always) static func exponentField(_ x: UInt64) -> Int {
        Int(truncatingIfNeeded: (x >> UInt64(fractionBits)) & UInt64(maxExponent))
    }
    @inlinable @inline(__always) static func isNaN(_ x: UInt64) -> Bool { x & ~signMask > infinity }
    @inlinable @inline(__always) static func isSignalingNaN(_ x: UInt64) -> Bool {
        isNaN(x) && x & quietBit == 0
    }
    @inlinable @inline(__always) static func isInfinite(_ x: UInt64) -> Bool { x & ~signMask == infinity }
    @inlinable @inline(__always) static func isZero(_ x: UInt64) -> Bool { x & ~signMask == 0 }
    /// Exponent field all ones: infinity or NaN.
    @inlinable @inline(__always) static func isSpecial(_ x: UInt64) -> Bool { x & infinity == infinity }
    @inlinable @inline(__always) static func sign(_ x: UInt64) -> Bool { x & signMask != 0 }
    @inlinable @inline(__always) static func signedZero(_ negative: Bool) -> UInt64 { negative ? signMask : 0 }
    @inlinable @inline(__always) static func signedInfinity(_ negative: Bool) -> UInt64 {
        negative ? signMask | infinity : infinity
    }

    /// Unpacks a finite nonzero value, normalizing subnormals.
    @inline(__always) static func unpack(_ x: UInt64) -> Unpacked {
        let field = exponentField(x)
        let fraction = x & fractionMask
        if field == 0 {
            // Subnormal: fraction × 2^(1 − bias − fractionBits); move its leading one to bit 62.
            let shift = fraction.leadingZeroBitCount - 1
            return Unpacked(sign: sign(x), exp: 63 - fractionBits - shift, sig: fraction << UInt64(shift))
        }
        return Unpacked(sign: sign(x), exp: field,
                        sig: (fraction | (1 << UInt64(fractionBits))) << UInt64(roundBits))
    }
}

/// A finite nonzero value: (-1)^sign × sig × 2^(exp − bias − 62), sig ∈ [2^62, 2^63).
@usableFromInline
struct Unpacked {
    var sign: Bool
    var exp: Int
    var sig: UInt64
}

/// Shifts right by `count` ≥ 0, ORing every bit shifted out into bit 0 ("jamming"), so the result
/// still tells exact from inexact and which side of a halfway point the value lies.
@inline(__always)
func shiftRightJam(_ x: UInt64, _ count: Int) -> UInt64 {
    if count == 0 { return x }
    if count >= 64 { return x != 0 ? 1 : 0 }
    let c = UInt64(count)
    return (x &>> c) | ((x &<< (64 &- c)) != 0 ? 1 : 0)
}

/// Rounds and packs (spec 11.4, IEEE 754-2008 §4.3, §7.4, §7.5): the single place that decides
/// the rounded result and the NX, UF and OF flags.
///
/// `sig` must be normalized (leading one at bit 62); the value is sig × 2^(exp − bias − 62) and
/// `exp` may lie anywhere. Tininess is detected after rounding (spec 11.4): the value is tiny
/// when, rounded to the format's precision with an unbounded exponent, it is below the smallest
/// normal; UF is raised when it is tiny and the (subnormal) result is inexact.
@inline(__always)
func roundPack<F: BinaryFormat>(_: F.Type, _ sign: Bool, _ exp: Int, _ sig: UInt64,
                                _ rm: RoundingMode, _ flags: inout ExceptionFlags) -> UInt64 {
    let r = UInt64(F.roundBits)
    let roundMask: UInt64 = (1 << r) - 1
    let half: UInt64 = 1 << (r - 1)
    let increment: UInt64
    switch rm {
    case .nearestEven, .nearestMaxMagnitude: increment = half
    case .towardZero: increment = 0
    case .down: increment = sign ? roundMask : 0
    case .up: increment = sign ? 0 : roundMask
    }
    var sig = sig
    // Packed as sign | (e << fractionBits) + (sig >> r), where sig still holds the leading one:
    // e is exp − 1 for normal results so the leading one adds the missing 1 to the exponent
    // field, and a carry out of rounding moves into the exponent by itself.
    var e = exp - 1
    if exp <= 0 {
        // Below the smallest normal before rounding. Tiny after rounding unless exp == 0 and
        // rounding to the format's precision carries up to 2^63 (the smallest normal).
        let tiny = exp < 0 || sig &+ increment < 1 << 63
        sig = shiftRightJam(sig, 1 - exp)
        e = 0
        flags.raise(.underflow, if: tiny && sig & roundMask != 0)
    } else if exp >= F.maxExponent - 1 {
        if exp > F.maxExponent - 1 || sig &+ increment >= 1 << 63 {
            // Overflow (IEEE 754-2008 §7.4): ±∞ when rounding to nearest or away from zero
            // in the result's direction, else the largest finite value.
            flags.formUnion([.overflow, .inexact])
            let magnitude = increment == 0 ? F.maxFinite : F.infinity
            return (sign ? F.signMask : 0) | magnitude
        }
    }
    let roundBitsValue = sig & roundMask
    flags.raise(.inexact, if: roundBitsValue != 0)
    var rounded = (sig &+ increment) >> r
    if rm == .nearestEven && roundBitsValue == half { rounded &= ~1 }
    return (sign ? F.signMask : 0) | ((UInt64(e) << UInt64(F.fractionBits)) &+ rounded)
}

/// A 128-bit unsigned value as two halves, for binary64 products and fused multiply-adds.
@usableFromInline
struct U128: Equatable {
    var hi: UInt64
    var lo: UInt64

    @inline(__always) init(hi: UInt64, lo: UInt64) { self.hi = hi; self.lo = lo }

    @inline(__always) static func product(_ a: UInt64, _ b: UInt64) -> U128 {
        let p = a.multipliedFullWidth(by: b)
        return U128(hi: p.high, lo: p.low)
    }

    @inline(__always) static func + (a: U128, b: U128) -> U128 {
        let (lo, carry) = a.lo.addingReportingOverflow(b.lo)
        return U128(hi: a.hi &+ b.hi &+ (carry ? 1 : 0), lo: lo)
    }

    @inline(__always) static func - (a: U128, b: U128) -> U128 {
        let (lo, borrow) = a.lo.subtractingReportingOverflow(b.lo)
        return U128(hi: a.hi &- b.hi &- (borrow ? 1 : 0), lo: lo)
    }

    @inline(__always) static func < (a: U128, b: U128) -> Bool {
        a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo)
    }

    @inline(__always) var leadingZeroBitCount: Int {
        hi != 0 ? hi.leadingZeroBitCount : 64 + lo.leadingZeroBitCount
    }

    /// Shift left by 0 ≤ count < 128 (bits shifted out are lost; callers shift out zeros only).
    @inline(__always) func shiftedLeft(_ count: Int) -> U128 {
        if count == 0 { return self }
        if count >= 64 { return U128(hi: lo &<< UInt64(count - 64), lo: 0) }
        let c = UInt64(count)
        return U128(hi: (hi &<< c) | (lo &>> (64 &- c)), lo: lo &<< c)
    }

    /// Shift right by count ≥ 0, jamming the bits shifted out into bit 0 (see `shiftRightJam`).
    @inline(__always) func shiftedRightJam(_ count: Int) -> U128 {
        if count == 0 { return self }
        if count >= 128 { return U128(hi: 0, lo: (hi | lo) != 0 ? 1 : 0) }
        if count >= 64 {
            let c = count - 64
            let sticky: UInt64 = (c == 0 ? lo : (lo | (hi &<< UInt64(64 - c)))) != 0 ? 1 : 0
            return U128(hi: 0, lo: (c == 0 ? hi : hi &>> UInt64(c)) | sticky)
        }
        let c = UInt64(count)
        let sticky: UInt64 = lo &<< (64 &- c) != 0 ? 1 : 0
        return U128(hi: hi &>> c, lo: (lo &>> c) | (hi &<< (64 &- c)) | sticky)
    }
}
