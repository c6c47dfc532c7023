// SoftFloat: RISC-V F and D extension arithmetic (IEEE 754-2008 binary32 and binary64),
// exact to the last bit and to the last exception flag, as pure functions.
//
// Spec: RISC-V Unprivileged ISA 20191213, chapter 11 "F" (version 2.2) and chapter 12 "D"
// (version 2.2). The rules this module owns, and where they come from:
//
// - 11.2 (fcsr): rounding modes RNE=0, RTZ=1, RDN=2, RUP=3, RMM=4 (`RoundingMode`); 5 and 6
//   are reserved and 7 (DYN) selects `frm`, both resolved by the caller. Accrued exception
//   flags NV=16, DZ=8, OF=4, UF=2, NX=1 (`ExceptionFlags`).
// - 11.3 (NaN generation and propagation): every operation that produces a NaN produces the
//   canonical NaN (0x7fc00000 / 0x7ff8000000000000); payloads are never propagated.
// - 11.4 (subnormal arithmetic): subnormals are fully supported, nothing flushes to zero, and
//   "tininess is detected after rounding": UF is raised when the result, rounded as if the
//   exponent range were unbounded, is below the smallest normal, and it is inexact.
// - 11.6: FMADD/FMSUB/FNMSUB/FNMADD round once; they raise NV for ∞ × 0 "even when the addend
//   is a quiet NaN". Any signaling-NaN operand of an arithmetic operation raises NV.
// - 11.7: FCVT to integers saturate (table 11.4: NaN and too-large positive -> max, too-large
//   negative -> min, 0 for unsigned) and raise NV and nothing else; otherwise an inexact
//   conversion raises NX. FCVT.D.S is exact (12.5); FCVT.S.D rounds.
// - 11.6: FMIN/FMAX return the non-NaN operand when exactly one is NaN, the canonical NaN when
//   both are, order -0.0 below +0.0, and raise NV on any signaling-NaN operand.
// - 11.8: FEQ is a quiet comparison (NV only for a signaling NaN), FLT/FLE are signaling
//   (NV for any NaN); a comparison with a NaN is false.
// - 11.9: FCLASS's 10-bit mask. 12.2: NaN boxing of single values in 64-bit registers
//   (`boxSingle`, `unboxSingle`).
//
// Design.
//
// - Values are the raw bit patterns (`UInt32`, `UInt64`), exactly what the register file holds.
// - Every operation takes the rounding mode explicitly and ORs the exceptions it raises into
//   an `inout ExceptionFlags` (the caller passes its `fflags`): no global state, no allocation,
//   no existentials.
// - The reference path is integer arithmetic in the style of Berkeley SoftFloat 3 (Format.swift,
//   Arithmetic.swift): operands are unpacked to (sign, biased exponent, 63-bit significand with
//   the leading one at bit 62); a result is rounded and packed by one `roundPack`, generic over the
//   format, which is the only place rounding, overflow, underflow and inexactness are decided.
//   Double products, quotients, square roots and fused multiply-adds use 128-bit intermediates
//   built from 64-bit halves (`multipliedFullWidth`, `dividingFullWidth`), so the module needs no
//   `UInt128` (not available for the macOS 14 deployment target).
// - Host fast paths (HostFastPaths.swift), inlined into the caller: for round-to-nearest-even
//   (and RTZ for conversions to integers), and only where the host's IEEE result is provably the
//   correctly rounded one *and* the flags can be derived exactly: error-free transformations for
//   add, integer checks for mul/div/sqrt, binary64 computation with innocuous double rounding
//   (round-to-odd for fma) for binary32. Fused multiply-adds take the host's fma when NX is
//   already accrued in `flags` (QEMU's "hardfloat" condition), so pass the hart's real `fflags`.
//   Anything near overflow, underflow, a special value or another rounding mode goes to the
//   integer path. They assume the FP environment Swift gives every thread (round to nearest, no
//   FTZ/DAZ): swemu never calls fesetround (the tests do, per thread, around host reference
//   operations only). The tests check them bit for bit against the integer path.
// - Verified against Berkeley SoftFloat 3 built with its RISC-V specialization (via the
//   `softfloatpy` binding, installed by scripts/setup) with vectors generated at test time;
//   and against the host FPU in RNE, RTZ, RDN and RUP, results and (on x86-64,
//   whose SSE unit also detects tininess after rounding) all five flags (SoftFloatTests).

/// A static rounding mode, with the `rm` field encodings of the F extension (spec 11.2, table 11.1).
/// Encodings 5 and 6 are reserved and 7 (dynamic, use `frm`) is resolved by the caller:
/// `RoundingMode(rawValue:)` returns nil for all three.
public enum RoundingMode: UInt8, Sendable, CaseIterable {
    /// RNE: round to nearest, ties to even.
    case nearestEven = 0
    /// RTZ: round towards zero.
    case towardZero = 1
    /// RDN: round down (towards -∞).
    case down = 2
    /// RUP: round up (towards +∞).
    case up = 3
    /// RMM: round to nearest, ties to max magnitude.
    case nearestMaxMagnitude = 4
}

/// Accrued exception flags with the bit layout of the `fflags` CSR (spec 11.2, table 11.2), so
/// `rawValue` can be ORed into `fflags` as it is.
///
/// The flags are computed properties rather than `static let`s so that a use from another module
/// folds to a constant instead of calling a lazy-global accessor on every operation.
public struct ExceptionFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt8

    @inlinable
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// NX, bit 0.
    @inlinable public static var inexact: ExceptionFlags { ExceptionFlags(rawValue: 1) }
    /// UF, bit 1.
    @inlinable public static var underflow: ExceptionFlags { ExceptionFlags(rawValue: 2) }
    /// OF, bit 2.
    @inlinable public static var overflow: ExceptionFlags { ExceptionFlags(rawValue: 4) }
    /// DZ, bit 3.
    @inlinable public static var divideByZero: ExceptionFlags { ExceptionFlags(rawValue: 8) }
    /// NV, bit 4.
    @inlinable public static var invalid: ExceptionFlags { ExceptionFlags(rawValue: 16) }
}

extension ExceptionFlags {
    /// ORs `flag` in when `condition` holds, without a branch: a conditional update of the
    /// caller's flags in memory costs far more when the condition is unpredictable.
    @inlinable @inline(__always)
    mutating func raise(_ flag: ExceptionFlags, if condition: Bool) {
        rawValue |= condition ? flag.rawValue : 0
    }
}

/// Reads a single-precision value from a 64-bit FP register (spec 12.2): a value whose upper 32
/// bits are not all ones is not a properly NaN-boxed single and reads as the canonical NaN.
@inlinable
public func unboxSingle(_ reg: UInt64) -> UInt32 {
    reg >> 32 == 0xFFFF_FFFF ? UInt32(truncatingIfNeeded: reg) : F32.canonicalNaN
}

/// NaN-boxes a single-precision value for a 64-bit FP register (spec 12.2): upper 32 bits all ones.
@inlinable
public func boxSingle(_ value: UInt32) -> UInt64 {
    0xFFFF_FFFF_0000_0000 | UInt64(value)
}
