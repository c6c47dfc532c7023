// Operations that never round: FMIN/FMAX (spec 11.6), FEQ/FLT/FLE (11.8), FCLASS (11.9) and
// sign injection (11.6). Small enough to inline into the interpreter.

// Comparisons map a non-NaN pattern to a signed integer in numeric order (branch-free): the
// magnitude bits order like the magnitudes, and negation handles the sign.

/// Numeric order, −0 and +0 both 0 (FEQ/FLT/FLE).
@inlinable @inline(__always)
func orderKey<F: BinaryFormat>(_: F.Type, _ x: UInt64) -> Int64 {
    let magnitude = Int64(bitPattern: x & ~F.signMask)
    return F.sign(x) ? 0 &- magnitude : magnitude
}

/// Numeric order with −0 below +0 (FMIN/FMAX): negative values map to −magnitude − 1.
@inlinable @inline(__always)
func totalOrderKey<F: BinaryFormat>(_: F.Type, _ x: UInt64) -> Int64 {
    let magnitude = Int64(bitPattern: x & ~F.signMask)
    return F.sign(x) ? ~magnitude : magnitude
}

/// Spec 11.6 (version 2.2): the non-NaN operand when exactly one is a NaN, the canonical NaN
/// when both are; NV for any signaling-NaN operand, even when the result is not a NaN.
@inlinable @inline(__always)
func minMax<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, max: Bool, _ flags: inout ExceptionFlags) -> UInt64 {
    let nanA = F.isNaN(a)
    let nanB = F.isNaN(b)
    if nanA || nanB {
        if F.isSignalingNaN(a) || F.isSignalingNaN(b) { flags.formUnion(.invalid) }
        if nanA && nanB { return F.canonicalNaN }
        return nanA ? b : a
    }
    return (totalOrderKey(F.self, a) < totalOrderKey(F.self, b)) != max ? a : b
}

/// FEQ (quiet, spec 11.8): NV only for a signaling NaN; −0 == +0.
@inlinable @inline(__always)
func equal<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ flags: inout ExceptionFlags) -> Bool {
    if F.isNaN(a) || F.isNaN(b) {
        if F.isSignalingNaN(a) || F.isSignalingNaN(b) { flags.formUnion(.invalid) }
        return false
    }
    return a == b || (a | b) & ~F.signMask == 0
}

/// FLT / FLE (signaling, spec 11.8): NV for any NaN operand, and the result is false.
@inlinable @inline(__always)
func less<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, orEqual: Bool, _ flags: inout ExceptionFlags) -> Bool {
    if F.isNaN(a) || F.isNaN(b) {
        flags.formUnion(.invalid)
        return false
    }
    let x = orderKey(F.self, a)
    let y = orderKey(F.self, b)
    return orEqual ? x <= y : x < y
}

/// FCLASS (spec 11.9, table 11.5): exactly one of ten bits.
@inlinable @inline(__always)
func classify<F: BinaryFormat>(_: F.Type, _ a: UInt64) -> UInt64 {
    let negative = F.sign(a)
    let field = F.exponentField(a)
    let fraction = a & F.fractionMask
    let bit: UInt64
    if field == F.maxExponent {
        if fraction == 0 {
            bit = negative ? 0 : 7  // −∞ / +∞
        } else {
            bit = fraction & F.quietBit != 0 ? 9 : 8  // quiet / signaling NaN
        }
    } else if field == 0 {
        if fraction == 0 {
            bit = negative ? 3 : 4  // −0 / +0
        } else {
            bit = negative ? 2 : 5  // negative / positive subnormal
        }
    } else {
        bit = negative ? 1 : 6  // negative / positive normal
    }
    return 1 << bit
}
