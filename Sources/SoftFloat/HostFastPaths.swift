// Host FPU fast paths: arithmetic with round-to-nearest-even, conversions to integers with RNE
// and RTZ. Each returns nil unless it can prove that the
// host's result is the correctly rounded one and can derive the exception flags exactly; the
// caller then falls back to the integer implementation. Swift threads run with the default
// x86-64/AArch64 FP environment (round to nearest even, no flush-to-zero, no
// denormals-are-zero), which these paths assume; nothing in swemu changes it.
//
// Why each is exact:
// - binary64 add: both operands below 2^1023 in magnitude, so the sum and the TwoSum error
//   terms cannot overflow; TwoSum (Knuth) gives the rounding error exactly, even for subnormal
//   results (which are then exact: sums of multiples of 2^-1074 below 2^-1022 are representable).
// - binary64 mul: normal operands with exponents such that the product lies in
//   [2^-1021, 2^1022): no overflow, no subnormal result; exact iff the product of the odd parts
//   of the two significands fits in 53 bits.
// - binary64 div: same range argument; a/b is exact iff the odd part of b's significand
//   divides the odd part of a's.
// - binary64 sqrt: operand ≥ 2^-1020, so the result and its square are normal; exact iff the
//   square of the result, computed exactly when its significand's odd part is below 2^26.5,
//   equals the operand.
// - binary32 add/mul/div/sqrt: computed in binary64 and rounded to binary32. A binary64
//   product of binary32 values is exact; for +, /, sqrt the double rounding is innocuous since
//   53 ≥ 2·24 + 2 (Figueroa, "When is double rounding innocuous?", 1995). NX comes from an exact
//   check in binary64 (TwoSum for add; f × b == a and f × f == a are exact binary64 products).
// - binary32 fma: the binary64 product is exact, the sum's rounding error is exact by TwoSum;
//   replacing the binary64 sum by its round-to-odd neighbour (when inexact) makes the second
//   rounding to binary32 correct (Boldo and Melquiond, "Emulation of FMA and correctly rounded
//   sums: proved algorithms using rounding to odd", 2008: 53 ≥ 24 + 2).
// - For binary32, a result at or below the smallest normal in magnitude is accepted only when
//   exact (then UF cannot be raised); an infinite result goes to the integer path (OF).
// - Fused multiply-add when NX is already raised in `flags` (the accrued fflags: after the first
//   inexact operation of a program it stays raised until software clears it): the host fma
//   (correctly rounded, glibc's `fma`/`fmaf`, hardware FMA where the CPU has it) is the result,
//   and only the flags other than NX need proving: finite operands rule out NV, a finite result
//   rules out OF, and a magnitude above the smallest normal rules out UF (a tiny exact value
//   cannot round above it). This is QEMU's "hardfloat" condition (fpu/softfloat.c).
//   binary64 division skips its exactness test under the same condition.
// - Conversions to integers with RTZ (C's casts): truncation by the host when the operand's
//   magnitude is below the target's range limit, exact iff converting back gives the operand.
//   With RNE: for |x| < 2^52, (|x| + 2^52) − 2^52 is |x| rounded to an integer, ties to even
//   (the sum lies in [2^52, 2^53), where the spacing is 1); exact iff it equals |x|. The limits
//   keep the rounded value inside the target's range (|x| < 2^30 for 32-bit results).

extension F64 {
    @inlinable @inline(__always)
    static func hostAdd(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        // Exponent fields below 0x7FE: finite and below 2^1023.
        guard (a >> 52) & 0x7FF < 0x7FE, (b >> 52) & 0x7FF < 0x7FE else { return nil }
        let x = Double(bitPattern: a)
        let y = Double(bitPattern: b)
        let s = x + y
        let yy = s - x
        let error = (x - (s - yy)) + (y - yy)
        flags.raise(.inexact, if: error != 0)
        return s.bitPattern
    }

    @inlinable @inline(__always)
    static func hostMul(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        let ea = Int((a >> 52) & 0x7FF)
        let eb = Int((b >> 52) & 0x7FF)
        // Normal operands; |a × b| ∈ [2^(ea+eb-2046), 2^(ea+eb-2044)) ⊂ [2^-1021, 2^1022).
        guard ea != 0, eb != 0, ea != 0x7FF, eb != 0x7FF else { return nil }
        let sum = ea + eb
        guard sum >= 1025, sum <= 3066 else { return nil }
        let ma = (a & 0xF_FFFF_FFFF_FFFF) | 0x10_0000_0000_0000
        let mb = (b & 0xF_FFFF_FFFF_FFFF) | 0x10_0000_0000_0000
        let oddProduct = (ma >> UInt64(ma.trailingZeroBitCount))
            .multipliedReportingOverflow(by: mb >> UInt64(mb.trailingZeroBitCount))
        flags.raise(.inexact, if: oddProduct.overflow || oddProduct.partialValue >= 1 << 53)
        return (Double(bitPattern: a) * Double(bitPattern: b)).bitPattern
    }

    @inlinable @inline(__always)
    static func hostDiv(_ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        let ea = Int((a >> 52) & 0x7FF)
        let eb = Int((b >> 52) & 0x7FF)
        guard ea != 0, eb != 0, ea != 0x7FF, eb != 0x7FF else { return nil }
        // |a / b| ∈ (2^(ea-eb-1), 2^(ea-eb+1)) ⊂ (2^-1021, 2^1022).
        let difference = ea - eb
        guard difference >= -1020, difference <= 1021 else { return nil }
        if !flags.contains(.inexact) {
            let ma = (a & 0xF_FFFF_FFFF_FFFF) | 0x10_0000_0000_0000
            let mb = (b & 0xF_FFFF_FFFF_FFFF) | 0x10_0000_0000_0000
            let oddB = mb >> UInt64(mb.trailingZeroBitCount)
            flags.raise(.inexact, if: oddB != 1 && (ma >> UInt64(ma.trailingZeroBitCount)) % oddB != 0)
        }
        return (Double(bitPattern: a) / Double(bitPattern: b)).bitPattern
    }

    @inlinable @inline(__always)
    static func hostSqrt(_ a: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        // Positive and finite with an exponent field ≥ 3 (a ≥ 2^-1020), so that r × r, when its
        // significand fits in 53 bits, is a normal binary64 value and the host computes it exactly.
        guard a &- 0x0030_0000_0000_0000 < 0x7FC0_0000_0000_0000 else { return nil }
        let x = Double(bitPattern: a)
        let r = x.squareRoot()
        let m = (r.bitPattern & 0xF_FFFF_FFFF_FFFF) | 0x10_0000_0000_0000
        // r × r is exact (so the comparison is meaningful) when r's odd part is < 2^26.5.
        flags.raise(.inexact, if: (m >> UInt64(m.trailingZeroBitCount)) > 94_906_265 || r * r != x)
        return r.bitPattern
    }
}

extension F64 {
    @inlinable @inline(__always)
    static func hostMulAdd(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        let exponentMask: UInt64 = 0x7FF0_0000_0000_0000
        guard flags.contains(.inexact), a & exponentMask != exponentMask, b & exponentMask != exponentMask,
              c & exponentMask != exponentMask
        else { return nil }
        let r = Double(bitPattern: c).addingProduct(Double(bitPattern: a), Double(bitPattern: b))
        let magnitude = r.bitPattern & 0x7FFF_FFFF_FFFF_FFFF
        guard magnitude > 0x0010_0000_0000_0000, magnitude < exponentMask else { return nil }
        return r.bitPattern
    }

    /// RTZ conversions: |a| < 2^31 (exponent field below bias + 31, which also excludes NaN and
    /// ∞), so the truncated value fits.
    @inlinable @inline(__always)
    static func hostTruncateToInt32(_ a: UInt64, _ flags: inout ExceptionFlags) -> Int32? {
        guard (a >> 52) & 0x7FF < 1023 + 31 else { return nil }
        let x = Double(bitPattern: a)
        let r = Int32(x)
        flags.raise(.inexact, if: Double(r) != x)
        return r
    }

    @inlinable @inline(__always)
    static func hostTruncateToInt64(_ a: UInt64, _ flags: inout ExceptionFlags) -> Int64? {
        guard (a >> 52) & 0x7FF < 1023 + 63 else { return nil }
        let x = Double(bitPattern: a)
        let r = Int64(x)
        flags.raise(.inexact, if: Double(r) != x)
        return r
    }

    /// Non-negative operands only (sign bit clear); negative ones, even −0.5 → 0, take the
    /// integer path.
    @inlinable @inline(__always)
    static func hostTruncateToUInt32(_ a: UInt64, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a >> 52 < 1023 + 32 else { return nil }
        let x = Double(bitPattern: a)
        let r = UInt32(x)
        flags.raise(.inexact, if: Double(r) != x)
        return r
    }

    @inlinable @inline(__always)
    static func hostTruncateToUInt64(_ a: UInt64, _ flags: inout ExceptionFlags) -> UInt64? {
        guard a >> 52 < 1023 + 64 else { return nil }
        let x = Double(bitPattern: a)
        let r = UInt64(x)
        flags.raise(.inexact, if: Double(r) != x)
        return r
    }
}

/// Rounds x to an integer, ties to even, with the host in its default RNE mode; |x| < 2^52.
@inlinable @inline(__always)
func hostRoundToIntegerNearestEven(_ x: Double, _ flags: inout ExceptionFlags) -> Int64 {
    let y = x.magnitude
    let r = (y + 0x1p52) - 0x1p52
    flags.raise(.inexact, if: r != y)
    let i = Int64(r)
    return x.sign == .minus ? 0 &- i : i
}

extension F64 {
    /// RNE conversion when the exponent field is below `1023 + limit` (|a| < 2^limit, limit ≤ 52)
    /// and, when `unsigned`, the sign is clear.
    @inlinable @inline(__always)
    static func hostRoundNearestEven(_ a: UInt64, limit: UInt64, unsigned: Bool, _ flags: inout ExceptionFlags) -> Int64? {
        guard (unsigned ? a >> 52 : (a >> 52) & 0x7FF) < 1023 + limit else { return nil }
        return hostRoundToIntegerNearestEven(Double(bitPattern: a), &flags)
    }
}

extension F32 {
    @inlinable @inline(__always)
    static func hostRoundNearestEven(_ a: UInt32, limit: UInt32, unsigned: Bool, _ flags: inout ExceptionFlags) -> Int64? {
        guard (unsigned ? a >> 23 : (a >> 23) & 0xFF) < 127 + limit else { return nil }
        return hostRoundToIntegerNearestEven(Double(Float(bitPattern: a)), &flags)
    }

    /// Rounds an exactly-known binary64 value `s` (inexact already if `inexact`) to binary32,
    /// or nil when the result could overflow or underflow.
    @inlinable @inline(__always)
    static func hostNarrow(_ s: Double, inexact: Bool, _ flags: inout ExceptionFlags) -> UInt32? {
        let f = Float(s)
        let isInexact = inexact || Double(f) != s
        let magnitude = f.bitPattern & 0x7FFF_FFFF
        // Above the smallest normal and finite, or exact (no UF possible).
        guard (magnitude > 0x0080_0000 && magnitude < 0x7F80_0000) || (!isInexact && magnitude < 0x7F80_0000)
        else { return nil }
        flags.raise(.inexact, if: isInexact)
        return f.bitPattern
    }

    @inlinable @inline(__always)
    static func hostAdd(_ a: UInt32, _ b: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a & 0x7F80_0000 != 0x7F80_0000, b & 0x7F80_0000 != 0x7F80_0000 else { return nil }
        let x = Double(Float(bitPattern: a))
        let y = Double(Float(bitPattern: b))
        let s = x + y
        let yy = s - x
        let error = (x - (s - yy)) + (y - yy)
        return hostNarrow(s, inexact: error != 0, &flags)
    }

    @inlinable @inline(__always)
    static func hostMul(_ a: UInt32, _ b: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a & 0x7F80_0000 != 0x7F80_0000, b & 0x7F80_0000 != 0x7F80_0000 else { return nil }
        return hostNarrow(Double(Float(bitPattern: a)) * Double(Float(bitPattern: b)), inexact: false, &flags)
    }

    @inlinable @inline(__always)
    static func hostDiv(_ a: UInt32, _ b: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a & 0x7F80_0000 != 0x7F80_0000, b & 0x7F80_0000 != 0x7F80_0000, b & 0x7FFF_FFFF != 0
        else { return nil }
        let x = Double(Float(bitPattern: a))
        let y = Double(Float(bitPattern: b))
        let f = Float(x / y)
        let magnitude = f.bitPattern & 0x7FFF_FFFF
        // f × y is an exact binary64 product (24 × 24 bits), so this is an exact test of f = a / b.
        let inexact = Double(f) * y != x
        guard (magnitude > 0x0080_0000 && magnitude < 0x7F80_0000) || (!inexact && magnitude < 0x7F80_0000)
        else { return nil }
        flags.raise(.inexact, if: inexact)
        return f.bitPattern
    }

    @inlinable @inline(__always)
    static func hostSqrt(_ a: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        // Positive or +0 and finite (sign clear, exponent field not all ones).
        guard a < 0x7F80_0000 else { return nil }
        let x = Double(Float(bitPattern: a))
        let f = Float(x.squareRoot())
        flags.raise(.inexact, if: Double(f) * Double(f) != x)
        return f.bitPattern
    }

    @inlinable @inline(__always)
    static func hostMulAdd(_ a: UInt32, _ b: UInt32, _ c: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a & 0x7F80_0000 != 0x7F80_0000, b & 0x7F80_0000 != 0x7F80_0000, c & 0x7F80_0000 != 0x7F80_0000
        else { return nil }
        if flags.contains(.inexact) {
            let r = Float(bitPattern: c).addingProduct(Float(bitPattern: a), Float(bitPattern: b))
            let magnitude = r.bitPattern & 0x7FFF_FFFF
            guard magnitude > 0x0080_0000, magnitude < 0x7F80_0000 else { return nil }
            return r.bitPattern
        }
        let p = Double(Float(bitPattern: a)) * Double(Float(bitPattern: b))  // exact
        let z = Double(Float(bitPattern: c))
        let s = p + z
        let zz = s - p
        let error = (p - (s - zz)) + (z - zz)
        var sBits = s.bitPattern
        if error != 0 {
            // Round to odd: truncate (one step towards zero when s overshot the exact sum, i.e.
            // when the error has the other sign), then set the last bit. s is not zero here.
            if error.sign != s.sign { sBits &-= 1 }
            sBits |= 1
        }
        return hostNarrow(Double(bitPattern: sBits), inexact: error != 0, &flags)
    }

    @inlinable @inline(__always)
    static func hostTruncateToInt32(_ a: UInt32, _ flags: inout ExceptionFlags) -> Int32? {
        guard (a >> 23) & 0xFF < 127 + 31 else { return nil }
        let x = Float(bitPattern: a)
        let r = Int32(x)
        flags.raise(.inexact, if: Float(r) != x)
        return r
    }

    @inlinable @inline(__always)
    static func hostTruncateToInt64(_ a: UInt32, _ flags: inout ExceptionFlags) -> Int64? {
        guard (a >> 23) & 0xFF < 127 + 63 else { return nil }
        let x = Float(bitPattern: a)
        let r = Int64(x)
        flags.raise(.inexact, if: Float(r) != x)
        return r
    }

    @inlinable @inline(__always)
    static func hostTruncateToUInt32(_ a: UInt32, _ flags: inout ExceptionFlags) -> UInt32? {
        guard a >> 23 < 127 + 32 else { return nil }
        let x = Float(bitPattern: a)
        let r = UInt32(x)
        flags.raise(.inexact, if: Float(r) != x)
        return r
    }

    @inlinable @inline(__always)
    static func hostTruncateToUInt64(_ a: UInt32, _ flags: inout ExceptionFlags) -> UInt64? {
        guard a >> 23 < 127 + 64 else { return nil }
        let x = Float(bitPattern: a)
        let r = UInt64(x)
        flags.raise(.inexact, if: Float(r) != x)
        return r
    }
}
