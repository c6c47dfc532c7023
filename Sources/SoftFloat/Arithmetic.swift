// Integer reference implementations of the arithmetic operations, generic over the format and
// specialized inside this module for binary32 and binary64. They handle every rounding mode and
// every operand; the public entry points (F32.swift, F64.swift) call them when no host fast
// path applies. Spec references are to the RISC-V Unprivileged ISA 20191213, chapter 11.

/// Spec 11.3: any NaN result is the canonical NaN; NV when an operand is a signaling NaN.
@inline(__always)
func propagateNaN<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64,
                                   _ flags: inout ExceptionFlags) -> UInt64 {
    if F.isSignalingNaN(a) || F.isSignalingNaN(b) { flags.formUnion(.invalid) }
    return F.canonicalNaN
}

@inline(__always)
func invalidResult<F: BinaryFormat>(_: F.Type, _ flags: inout ExceptionFlags) -> UInt64 {
    flags.formUnion(.invalid)
    return F.canonicalNaN
}

/// The sign of an exact zero sum of operands of opposite signs (IEEE 754-2008 §6.3): +0, except
/// −0 when rounding down.
@inline(__always)
func exactZeroSum<F: BinaryFormat>(_: F.Type, _ rm: RoundingMode) -> UInt64 {
    rm == .down ? F.signMask : 0
}

/// a + b. Subtraction is `add(a, b ^ signMask)`: negating a NaN does not change the result.
func softAdd<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ rm: RoundingMode,
                              _ flags: inout ExceptionFlags) -> UInt64 {
    if F.isSpecial(a) || F.isSpecial(b) {
        if F.isNaN(a) || F.isNaN(b) { return propagateNaN(F.self, a, b, &flags) }
        if F.isSpecial(a) && F.isSpecial(b) {
            // ∞ + ∞ of opposite signs is invalid.
            return (a ^ b) & F.signMask != 0 ? invalidResult(F.self, &flags) : a
        }
        return F.isSpecial(a) ? a : b
    }
    if F.isZero(a) {
        if F.isZero(b) { return a == b ? a : exactZeroSum(F.self, rm) }
        return b
    }
    if F.isZero(b) { return a }
    var x = F.unpack(a)
    var y = F.unpack(b)
    if x.exp < y.exp || (x.exp == y.exp && x.sig < y.sig) { swap(&x, &y) }
    // Now |x| ≥ |y|; the result has x's sign (an exact cancellation is handled below).
    let d = x.exp - y.exp
    if x.sign == y.sign {
        var sig = x.sig &+ shiftRightJam(y.sig, d)
        var exp = x.exp
        if sig >= 1 << 63 {
            sig = shiftRightJam(sig, 1)
            exp += 1
        }
        return roundPack(F.self, x.sign, exp, sig, rm, &flags)
    }
    if d == 0 && x.sig == y.sig { return exactZeroSum(F.self, rm) }
    // For d ≥ 2 the difference keeps at least 2^61, so normalizing moves the jammed sticky bit
    // up by at most one place, still far below the rounding position; for d ≤ 1 nothing was
    // shifted out and the difference is exact.
    let sig = x.sig &- shiftRightJam(y.sig, d)
    let shift = sig.leadingZeroBitCount - 1
    return roundPack(F.self, x.sign, x.exp - shift, sig << UInt64(shift), rm, &flags)
}

/// The product of two unpacked values as a normalized significand and exponent.
@inline(__always)
func multiplySignificands<F: BinaryFormat>(_: F.Type, _ x: Unpacked, _ y: Unpacked) -> (exp: Int, sig: UInt64) {
    // sig × sig ∈ [2^124, 2^126); keep its top bits from bit 62 up, jam the rest.
    let p = x.sig.multipliedFullWidth(by: y.sig)
    var sig = (p.high << 2) | (p.low >> 62) | (p.low & ((1 << 62) - 1) != 0 ? 1 : 0)
    var exp = x.exp + y.exp - F.bias
    if sig >= 1 << 63 {
        sig = shiftRightJam(sig, 1)
        exp += 1
    }
    return (exp, sig)
}

func softMul<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ rm: RoundingMode,
                              _ flags: inout ExceptionFlags) -> UInt64 {
    let sign = (a ^ b) & F.signMask != 0
    if F.isSpecial(a) || F.isSpecial(b) {
        if F.isNaN(a) || F.isNaN(b) { return propagateNaN(F.self, a, b, &flags) }
        // ∞ × 0 is invalid.
        if F.isZero(a) || F.isZero(b) { return invalidResult(F.self, &flags) }
        return F.signedInfinity(sign)
    }
    if F.isZero(a) || F.isZero(b) { return F.signedZero(sign) }
    let p = multiplySignificands(F.self, F.unpack(a), F.unpack(b))
    return roundPack(F.self, sign, p.exp, p.sig, rm, &flags)
}

func softDiv<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ rm: RoundingMode,
                              _ flags: inout ExceptionFlags) -> UInt64 {
    let sign = (a ^ b) & F.signMask != 0
    if F.isSpecial(a) || F.isSpecial(b) {
        if F.isNaN(a) || F.isNaN(b) { return propagateNaN(F.self, a, b, &flags) }
        // ∞ / ∞ is invalid; ∞ / finite is ∞; finite / ∞ is 0.
        if F.isSpecial(a) { return F.isSpecial(b) ? invalidResult(F.self, &flags) : F.signedInfinity(sign) }
        return F.signedZero(sign)
    }
    if F.isZero(b) {
        // 0 / 0 is invalid; nonzero / 0 raises DZ and is ∞ (IEEE 754-2008 §7.3).
        if F.isZero(a) { return invalidResult(F.self, &flags) }
        flags.formUnion(.divideByZero)
        return F.signedInfinity(sign)
    }
    if F.isZero(a) { return F.signedZero(sign) }
    let x = F.unpack(a)
    let y = F.unpack(b)
    var exp = x.exp - y.exp + F.bias
    // Quotient with its leading one at bit 62: (x.sig × 2^62) / y.sig when x.sig ≥ y.sig, else
    // (x.sig × 2^63) / y.sig. The high half of the dividend is below the divisor, so the
    // 128-by-64 division cannot overflow.
    let dividend: (high: UInt64, low: UInt64)
    if x.sig >= y.sig {
        dividend = (x.sig >> 2, x.sig << 62)
    } else {
        dividend = (x.sig >> 1, x.sig << 63)
        exp -= 1
    }
    let (q, rem) = y.sig.dividingFullWidth(dividend)
    return roundPack(F.self, sign, exp, q | (rem != 0 ? 1 : 0), rm, &flags)
}

func softSqrt<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ rm: RoundingMode,
                               _ flags: inout ExceptionFlags) -> UInt64 {
    if F.isNaN(a) { return propagateNaN(F.self, a, a, &flags) }
    if F.isZero(a) { return a }  // sqrt(±0) = ±0
    if F.sign(a) { return invalidResult(F.self, &flags) }  // negative, including −∞
    if F.isSpecial(a) { return a }  // +∞
    let x = F.unpack(a)
    // a = x.sig × 2^(k − 62) with k the unbiased exponent. With t = k mod 2 and
    // X = x.sig × 2^(62 + t) ∈ [2^124, 2^126), sqrt(a) = sqrt(X) × 2^((k − t)/2 − 62), and
    // sqrt(X) ∈ [2^62, 2^63) is already a normalized significand.
    let k = x.exp - F.bias
    let t = k & 1
    let xHigh = t == 0 ? x.sig >> 2 : x.sig >> 1
    let xLow = t == 0 ? x.sig << 62 : x.sig << 63
    // Integer square root: a binary64 estimate good to about 2^11 units, one Newton step
    // (r + X/r)/2 that leaves it within one unit, then an exact correction.
    let estimate = (Double(x.sig) * (t == 0 ? 1 : 2)).squareRoot() * 0x1p31
    var r = UInt64(estimate)
    let q = r.dividingFullWidth((xHigh, xLow)).quotient
    r = (r >> 1) &+ (q >> 1) &+ (r & q & 1)
    var square = U128.product(r, r)
    let target = U128(hi: xHigh, lo: xLow)
    while target < square {
        r -= 1
        square = U128.product(r, r)
    }
    while true {
        let next = U128.product(r + 1, r + 1)
        if target < next { break }
        r += 1
        square = next
    }
    let exact = square == target
    return roundPack(F.self, false, F.bias + (k - t) / 2, r | (exact ? 0 : 1), rm, &flags)
}

/// a × b + c with a single rounding (spec 11.6). The four RISC-V variants negate a and/or c
/// before calling this (FMSUB: c; FNMSUB: a; FNMADD: a and c), which changes no NaN outcome.
func softMulAdd<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ c: UInt64, _ rm: RoundingMode,
                                 _ flags: inout ExceptionFlags) -> UInt64 {
    let productSign = (a ^ b) & F.signMask != 0
    if F.isSpecial(a) || F.isSpecial(b) || F.isSpecial(c) {
        if F.isNaN(a) || F.isNaN(b) || F.isNaN(c) {
            // Spec 11.6: ∞ × 0 raises NV "even when the addend is a quiet NaN".
            let infTimesZero = !F.isNaN(a) && !F.isNaN(b)
                && ((F.isInfinite(a) && F.isZero(b)) || (F.isZero(a) && F.isInfinite(b)))
            if infTimesZero || F.isSignalingNaN(a) || F.isSignalingNaN(b) || F.isSignalingNaN(c) {
                flags.formUnion(.invalid)
            }
            return F.canonicalNaN
        }
        if F.isSpecial(a) || F.isSpecial(b) {
            if F.isZero(a) || F.isZero(b) { return invalidResult(F.self, &flags) }
            // ∞ + (−∞) is invalid.
            if F.isSpecial(c) && F.sign(c) != productSign { return invalidResult(F.self, &flags) }
            return F.signedInfinity(productSign)
        }
        return c  // finite × finite + ∞
    }
    if F.isZero(a) || F.isZero(b) {
        // The product is an exact zero: the sum is c, or a signed zero by the rules of addition.
        if F.isZero(c) { return F.sign(c) == productSign ? c : exactZeroSum(F.self, rm) }
        return c
    }
    let x = F.unpack(a)
    let y = F.unpack(b)
    if F.isZero(c) {
        // A nonzero product plus a zero: the rounded product (its sign wins).
        let p = multiplySignificands(F.self, x, y)
        return roundPack(F.self, productSign, p.exp, p.sig, rm, &flags)
    }
    let z = F.unpack(c)
    // Both addends as 128-bit significands in [2^125, 2^126), value = s × 2^(e − bias − 125),
    // which leaves two bits of headroom for the carry of a sum.
    var product = U128.product(x.sig, y.sig)  // ∈ [2^124, 2^126)
    var productExp = x.exp + y.exp - F.bias + 1
    if product.hi < 1 << 61 {
        product = product.shiftedLeft(1)
        productExp -= 1
    }
    let addend = U128(hi: z.sig >> 1, lo: z.sig << 63)
    let d = productExp - z.exp
    var sum: U128
    var exp: Int
    var sign: Bool
    if productSign == z.sign {
        if d >= 0 {
            sum = product + addend.shiftedRightJam(d)
            exp = productExp
        } else {
            sum = addend + product.shiftedRightJam(-d)
            exp = z.exp
        }
        sign = productSign
        if sum.hi >= 1 << 62 {
            sum = sum.shiftedRightJam(1)
            exp += 1
        }
    } else {
        // Subtraction of magnitudes. When |d| ≤ 1 the shifted operand loses no bits (the
        // product's lowest bit is at 2 × roundBits ≥ 20, the addend's at 63 + roundBits), so a
        // massive cancellation is exact; when |d| ≥ 2 the difference stays ≥ 2^124 and the
        // normalization below moves the sticky bit by at most one place.
        if d > 0 || (d == 0 && addend < product) {
            sum = product - addend.shiftedRightJam(d)
            exp = productExp
            sign = productSign
        } else if d == 0 && addend == product {
            return exactZeroSum(F.self, rm)
        } else {
            sum = addend - product.shiftedRightJam(-d)
            exp = z.exp
            sign = z.sign
        }
        let shift = sum.leadingZeroBitCount - 2
        if shift > 0 {
            sum = sum.shiftedLeft(shift)
            exp -= shift
        }
    }
    // sum ∈ [2^125, 2^126): its bits from 63 up form the 63-bit working significand.
    let sig = (sum.hi << 1) | (sum.lo >> 63) | (sum.lo & ((1 << 63) - 1) != 0 ? 1 : 0)
    return roundPack(F.self, sign, exp, sig, rm, &flags)
}
