#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import SoftFloat

// Randomized cross-check against the host FPU, which is IEEE 754 in every mode but RMM.
//
// - Results are compared bit for bit (a host NaN only requires the canonical NaN from us).
// - On x86-64 the host's exception flags (MXCSR, read through <fenv.h>) are compared too: SSE
//   detects tininess after rounding like RISC-V, so NX, UF, OF, DZ and NV must all agree. The one
//   allowed difference is fma(∞, 0, qNaN), where IEEE 754 leaves NV to the implementation and
//   RISC-V requires it. Elsewhere only NX is checked, through exact error terms.
// - Each operation runs through the integer path (every mode) and, for RNE, through the public
//   entry point as well, whose host fast paths must agree with the integer path bit for bit.
//
// The host operations run under fesetround in this thread only; test functions are synchronous,
// so they stay on one thread, and the mode is restored before returning.

#if arch(x86_64)
let hostFlagsComparable = true
#else
let hostFlagsComparable = false
#endif

enum HostFPU {
    static func clear() { feclearexcept(FE_INEXACT | FE_UNDERFLOW | FE_OVERFLOW | FE_DIVBYZERO | FE_INVALID) }

    static func flags() -> ExceptionFlags {
        let raised = fetestexcept(FE_INEXACT | FE_UNDERFLOW | FE_OVERFLOW | FE_DIVBYZERO | FE_INVALID)
        var f: ExceptionFlags = []
        if raised & FE_INEXACT != 0 { f.insert(.inexact) }
        if raised & FE_UNDERFLOW != 0 { f.insert(.underflow) }
        if raised & FE_OVERFLOW != 0 { f.insert(.overflow) }
        if raised & FE_DIVBYZERO != 0 { f.insert(.divideByZero) }
        if raised & FE_INVALID != 0 { f.insert(.invalid) }
        return f
    }

    static func fenvMode(_ rm: RoundingMode) -> Int32 {
        switch rm {
        case .nearestEven: return FE_TONEAREST
        case .towardZero: return FE_TOWARDZERO
        case .down: return FE_DOWNWARD
        case .up: return FE_UPWARD
        case .nearestMaxMagnitude: preconditionFailure("the host has no RMM")
        }
    }

    /// Runs `body` with the host in rounding mode `rm` and returns its result with the host flags.
    @inline(never)
    static func run<T>(_ rm: RoundingMode, _ body: () -> T) -> (T, ExceptionFlags) {
        fesetround(fenvMode(rm))
        defer { fesetround(FE_TONEAREST) }
        clear()
        let r = body()
        return (r, flags())
    }
}

/// One operation under test: its integer path, its public entry point and the host's version.
struct CrossCheckOperation: CustomTestStringConvertible, Sendable {
    let name: String
    let width: Int  // result width in bits: 32 or 64
    /// (operands) -> (integer path, public path) results; the closures take rm and flags.
    let soft: @Sendable ([UInt64], RoundingMode, inout ExceptionFlags) -> UInt64
    let fast: @Sendable ([UInt64], RoundingMode, inout ExceptionFlags) -> UInt64
    let host: @Sendable ([UInt64]) -> UInt64
    let operands: @Sendable (inout SplitMix64) -> [UInt64]
    /// Cases where the host may differ from RISC-V in NV (fma(∞, 0, qNaN)).
    var nvImplementationDefined: @Sendable ([UInt64]) -> Bool = { _ in false }
    var testDescription: String { name }
}

@inline(never) func opaque<T>(_ v: T) -> T { v }

func f(_ x: UInt64) -> Float { Float(bitPattern: UInt32(truncatingIfNeeded: x)) }
func d(_ x: UInt64) -> Double { Double(bitPattern: x) }
func s(_ x: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: x) }
func bits(_ x: Float) -> UInt64 { UInt64(x.bitPattern) }

/// Two or three operands; one time in five the second operand is steered so that a product,
/// quotient or sum lands near the boundaries of the exponent range or cancels.
func operands32(_ n: Int) -> @Sendable (inout SplitMix64) -> [UInt64] {
    { rng in
        var v = (0..<n).map { _ in UInt64(randomF32(&rng)) }
        if rng.chance(20) {
            let ea = (v[0] >> 23) & 0xFF
            let target: UInt64 = [1, 2, 3, 126, 127, 128, 129, 150, 151, 253, 254, 255, 256, 381, 382, 383][Int(rng.below(16))]
            v[1] = (v[1] & 0x807F_FFFF) | (((target &- ea) & 0xFF) << 23)
        }
        if n == 3 && rng.chance(20) { v[2] = v[0] &* 0x10001 ^ (rng.next() & 0x8000_0003) }
        return v
    }
}

func operands64(_ n: Int) -> @Sendable (inout SplitMix64) -> [UInt64] {
    { rng in
        var v = (0..<n).map { _ in randomF64(&rng) }
        if rng.chance(20) {
            let ea = (v[0] >> 52) & 0x7FF
            let targets: [UInt64] = [1, 2, 3, 1022, 1023, 1024, 1025, 1026, 1075, 1076, 2045, 2046, 2047,
                                     2048, 3065, 3066, 3067, 3068]
            let target = targets[Int(rng.below(UInt64(targets.count)))] &+ (rng.below(3) &- 1)
            v[1] = (v[1] & 0x800F_FFFF_FFFF_FFFF) | (((target &- ea) & 0x7FF) << 52)
        }
        return v
    }
}

func binary32(_ name: String, _ soft: @escaping @Sendable (UInt32, UInt32, RoundingMode, inout ExceptionFlags) -> UInt32,
              _ fast: @escaping @Sendable (UInt32, UInt32, RoundingMode, inout ExceptionFlags) -> UInt32,
              _ host: @escaping @Sendable (Float, Float) -> Float) -> CrossCheckOperation {
    CrossCheckOperation(
        name: name, width: 32,
        soft: { x, rm, fl in UInt64(soft(s(x[0]), s(x[1]), rm, &fl)) },
        fast: { x, rm, fl in UInt64(fast(s(x[0]), s(x[1]), rm, &fl)) },
        host: { x in bits(host(f(x[0]), f(x[1]))) },
        operands: operands32(2))
}

func binary64(_ name: String, _ soft: @escaping @Sendable (UInt64, UInt64, RoundingMode, inout ExceptionFlags) -> UInt64,
              _ fast: @escaping @Sendable (UInt64, UInt64, RoundingMode, inout ExceptionFlags) -> UInt64,
              _ host: @escaping @Sendable (Double, Double) -> Double) -> CrossCheckOperation {
    CrossCheckOperation(
        name: name, width: 64,
        soft: { x, rm, fl in soft(x[0], x[1], rm, &fl) },
        fast: { x, rm, fl in fast(x[0], x[1], rm, &fl) },
        host: { x in host(d(x[0]), d(x[1])).bitPattern },
        operands: operands64(2))
}

/// fma(∞, 0, qNaN) and fma(0, ∞, qNaN) after the variant's negations.
func infTimesZeroPlusQuietNaN<F: BinaryFormat>(_: F.Type, _ a: UInt64, _ b: UInt64, _ c: UInt64) -> Bool {
    F.isNaN(c) && !F.isSignalingNaN(c)
        && ((F.isInfinite(a) && F.isZero(b)) || (F.isZero(a) && F.isInfinite(b)))
}

let fmaVariants: [(String, Bool, Bool)] = [("fmadd", false, false), ("fmsub", false, true),
                                           ("fnmsub", true, false), ("fnmadd", true, true)]

let crossCheckOperations: [CrossCheckOperation] = {
    var ops: [CrossCheckOperation] = [
        binary32("f32 add", F32.addSlow, F32.add) { opaque($0) + $1 },
        binary32("f32 sub", { F32.addSlow($0, $1 ^ 0x8000_0000, $2, &$3) }, F32.sub) { opaque($0) - $1 },
        binary32("f32 mul", F32.mulSlow, F32.mul) { opaque($0) * $1 },
        binary32("f32 div", F32.divSlow, F32.div) { opaque($0) / $1 },
        binary64("f64 add", F64.addSlow, F64.add) { opaque($0) + $1 },
        binary64("f64 sub", { F64.addSlow($0, $1 ^ (1 << 63), $2, &$3) }, F64.sub) { opaque($0) - $1 },
        binary64("f64 mul", F64.mulSlow, F64.mul) { opaque($0) * $1 },
        binary64("f64 div", F64.divSlow, F64.div) { opaque($0) / $1 },
        CrossCheckOperation(
            name: "f32 sqrt", width: 32,
            soft: { x, rm, fl in UInt64(F32.sqrtSlow(s(x[0]), rm, &fl)) },
            fast: { x, rm, fl in UInt64(F32.sqrt(s(x[0]), rm, &fl)) },
            host: { x in bits(opaque(f(x[0])).squareRoot()) },
            operands: { rng in
                var a = UInt64(randomF32(&rng))
                if rng.chance(30) {  // perfect squares and their neighbours
                    let r = Float(bitPattern: UInt32(a) & 0x7FFF_FFFF)
                    a = bits(r * r) &+ (rng.below(3) &- 1)
                }
                return [a & 0xFFFF_FFFF]
            }),
        CrossCheckOperation(
            name: "f64 sqrt", width: 64,
            soft: { x, rm, fl in F64.sqrtSlow(x[0], rm, &fl) },
            fast: { x, rm, fl in F64.sqrt(x[0], rm, &fl) },
            host: { x in opaque(d(x[0])).squareRoot().bitPattern },
            operands: { rng in
                var a = randomF64(&rng)
                if rng.chance(30) {
                    let r = Double(bitPattern: a & ~(1 << 63))
                    a = (r * r).bitPattern &+ (rng.below(3) &- 1)
                }
                return [a]
            }),
        CrossCheckOperation(
            name: "f64 to f32", width: 32,
            soft: { x, rm, fl in UInt64(softConvert(Binary64.self, Binary32.self, x[0], rm, &fl)) },
            fast: { x, rm, fl in UInt64(F64.toF32(x[0], rm, &fl)) },
            host: { x in bits(Float(opaque(d(x[0])))) },
            operands: { rng in
                var a = randomF64(&rng)
                if rng.chance(50) {  // exponents around binary32's limits
                    let e: UInt64 = [873, 874, 875, 896, 897, 898, 1150, 1151, 1152][Int(rng.below(9))]
                    a = (a & 0x800F_FFFF_FFFF_FFFF) | e << 52
                }
                return [a]
            }),
        CrossCheckOperation(
            name: "f32 to f64", width: 64,
            soft: { x, rm, fl in softConvert(Binary32.self, Binary64.self, x[0], rm, &fl) },
            fast: { x, _, fl in F32.toF64(s(x[0]), &fl) },
            host: { x in Double(opaque(f(x[0]))).bitPattern },
            operands: { rng in [UInt64(randomF32(&rng))] }),
    ]
    for (name, negateProduct, negateAddend) in fmaVariants {
        let sign32: UInt32 = 0x8000_0000
        let sign64: UInt64 = 1 << 63
        ops.append(CrossCheckOperation(
            name: "f32 \(name)", width: 32,
            soft: { x, rm, fl in
                UInt64(F32.mulAddSlow(s(x[0]) ^ (negateProduct ? sign32 : 0), s(x[1]),
                                      s(x[2]) ^ (negateAddend ? sign32 : 0), rm, &fl))
            },
            fast: { x, rm, fl in
                let a = s(x[0]), b = s(x[1]), c = s(x[2])
                switch (negateProduct, negateAddend) {
                case (false, false): return UInt64(F32.fmadd(a, b, c, rm, &fl))
                case (false, true): return UInt64(F32.fmsub(a, b, c, rm, &fl))
                case (true, false): return UInt64(F32.fnmsub(a, b, c, rm, &fl))
                case (true, true): return UInt64(F32.fnmadd(a, b, c, rm, &fl))
                }
            },
            host: { x in
                let a = negateProduct ? -f(x[0]) : f(x[0])
                let c = negateAddend ? -f(x[2]) : f(x[2])
                return bits(opaque(c).addingProduct(a, f(x[1])))
            },
            operands: operands32(3),
            nvImplementationDefined: { x in
                infTimesZeroPlusQuietNaN(Binary32.self, x[0], x[1], x[2])
            }))
        ops.append(CrossCheckOperation(
            name: "f64 \(name)", width: 64,
            soft: { x, rm, fl in
                F64.mulAddSlow(x[0] ^ (negateProduct ? sign64 : 0), x[1], x[2] ^ (negateAddend ? sign64 : 0), rm, &fl)
            },
            fast: { x, rm, fl in
                switch (negateProduct, negateAddend) {
                case (false, false): return F64.fmadd(x[0], x[1], x[2], rm, &fl)
                case (false, true): return F64.fmsub(x[0], x[1], x[2], rm, &fl)
                case (true, false): return F64.fnmsub(x[0], x[1], x[2], rm, &fl)
                case (true, true): return F64.fnmadd(x[0], x[1], x[2], rm, &fl)
                }
            },
            host: { x in
                let a = negateProduct ? -d(x[0]) : d(x[0])
                let c = negateAddend ? -d(x[2]) : d(x[2])
                return opaque(c).addingProduct(a, d(x[1])).bitPattern
            },
            operands: { rng in
                var v = operands64(3)(&rng)
                if rng.chance(25) {
                    // Addend near −a×b: the cancellation cases that need all 128 bits.
                    v[2] = (d(v[0]) * d(v[1])).bitPattern &+ (rng.below(5) &- 2) ^ (rng.next() & (1 << 63))
                }
                return v
            },
            nvImplementationDefined: { x in
                infTimesZeroPlusQuietNaN(Binary64.self, x[0], x[1], x[2])
            }))
    }
    // Signed 32- and 64-bit integers (and UInt32 through Int64) to both formats.
    let intOperands: @Sendable (inout SplitMix64) -> [UInt64] = { rng in
        let width = 1 + rng.below(64)
        var v = rng.next() >> (64 - width)
        if rng.chance(30) { v |= 1 << (width - 1) }  // exactly `width` significant bits
        return [v]
    }
    ops += [
        CrossCheckOperation(
            name: "i32 to f32", width: 32,
            soft: { x, rm, fl in UInt64(softFromInteger(Binary32.self, negative: Int32(truncatingIfNeeded: x[0]) < 0,
                                                        magnitude: UInt64(Int32(truncatingIfNeeded: x[0]).magnitude), rm, &fl)) },
            fast: { x, rm, fl in UInt64(F32.fromInt32(Int32(truncatingIfNeeded: x[0]), rm, &fl)) },
            host: { x in bits(Float(opaque(Int32(truncatingIfNeeded: x[0])))) },
            operands: intOperands),
        CrossCheckOperation(
            name: "u32 to f32", width: 32,
            soft: { x, rm, fl in UInt64(softFromInteger(Binary32.self, negative: false, magnitude: x[0] & 0xFFFF_FFFF, rm, &fl)) },
            fast: { x, rm, fl in UInt64(F32.fromUInt32(UInt32(truncatingIfNeeded: x[0]), rm, &fl)) },
            host: { x in bits(Float(opaque(Int64(x[0] & 0xFFFF_FFFF)))) },
            operands: intOperands),
        CrossCheckOperation(
            name: "i64 to f32", width: 32,
            soft: { x, rm, fl in UInt64(softFromInteger(Binary32.self, negative: Int64(bitPattern: x[0]) < 0,
                                                        magnitude: Int64(bitPattern: x[0]).magnitude, rm, &fl)) },
            fast: { x, rm, fl in UInt64(F32.fromInt64(Int64(bitPattern: x[0]), rm, &fl)) },
            host: { x in bits(Float(opaque(Int64(bitPattern: x[0])))) },
            operands: intOperands),
        CrossCheckOperation(
            name: "i64 to f64", width: 64,
            soft: { x, rm, fl in softFromInteger(Binary64.self, negative: Int64(bitPattern: x[0]) < 0,
                                                 magnitude: Int64(bitPattern: x[0]).magnitude, rm, &fl) },
            fast: { x, rm, fl in F64.fromInt64(Int64(bitPattern: x[0]), rm, &fl) },
            host: { x in Double(opaque(Int64(bitPattern: x[0]))).bitPattern },
            operands: intOperands),
    ]
    return ops
}()

@Suite("Host FPU cross-check")
struct HostCrossCheckTests {
    static let modes: [RoundingMode] = [RNE, RTZ, RDN, RUP]

    @Test("integer path and public entry point against the host FPU",
          arguments: crossCheckOperations, modes)
    func crossCheck(_ op: CrossCheckOperation, _ rm: RoundingMode) {
        // 100k operand sets per operation for RNE (the fast paths' mode), 20k per directed mode.
        let iterations = rm == RNE ? 100_000 : 20_000
        var rng = SplitMix64(seed: 0x5EED_0000 &+ UInt64(op.name.utf8.reduce(0) { $0 &* 31 &+ Int($1) }) &+ UInt64(rm.rawValue))
        let canonicalNaN: UInt64 = op.width == 32 ? UInt64(F32.canonicalNaN) : F64.canonicalNaN
        var mismatches = Mismatches()
        for _ in 0..<iterations {
            let x = op.operands(&rng)
            var softFlags: ExceptionFlags = []
            let soft = op.soft(x, rm, &softFlags)
            let (host, hostFlags) = HostFPU.run(rm) { op.host(x) }
            let hostIsNaN = op.width == 32 ? Binary32.isNaN(host) : Binary64.isNaN(host)
            let resultOK = hostIsNaN ? soft == canonicalNaN : soft == host
            var flagsOK = true
            if hostFlagsComparable {
                if op.nvImplementationDefined(x) {
                    flagsOK = softFlags == .invalid
                } else {
                    flagsOK = softFlags == hostFlags
                }
            }
            let operands = x.map { hex($0) }.joined(separator: " ")
            if !resultOK || !flagsOK {
                mismatches.add("\(op.name) \(rm) \(operands): soft \(hex(soft)) \(describe(softFlags)), host \(hex(host)) \(describe(hostFlags))")
            }
            if rm == RNE {
                // Also with NX already accrued, which enables the fma fast paths.
                for initial in [none, NX] {
                    var fastFlags = initial
                    let fast = op.fast(x, rm, &fastFlags)
                    if fast != soft || fastFlags != softFlags.union(initial) {
                        mismatches.add("\(op.name) public (flags in: \(describe(initial))) \(operands): \(hex(fast)) \(describe(fastFlags)), integer path \(hex(soft)) \(describe(softFlags))")
                    }
                }
            }
        }
        #expect(mismatches.count == 0, "\(mismatches.summary)")
    }

    @Test("binary64 add: inexactness from TwoSum agrees (portable check)")
    func twoSumInexact() {
        var rng = SplitMix64(seed: 42)
        var mismatches = Mismatches()
        for _ in 0..<100_000 {
            let a = randomF64(&rng), b = randomF64(&rng)
            let x = d(a), y = d(b)
            let sum = x + y
            guard x.isFinite, y.isFinite, sum.isFinite, abs(x) < 0x1p1022, abs(y) < 0x1p1022 else { continue }
            let yy = sum - x
            let error = (x - (sum - yy)) + (y - yy)
            var flags: ExceptionFlags = []
            let r = F64.addSlow(a, b, RNE, &flags)
            if r != sum.bitPattern || flags.contains(.inexact) != (error != 0) {
                mismatches.add("\(hex(a)) + \(hex(b)): \(hex(r)) \(describe(flags)), host \(hex(sum.bitPattern)) error \(error)")
            }
        }
        #expect(mismatches.count == 0, "\(mismatches.summary)")
    }

    @Test("conversions to integers: public entry points (RTZ and RNE fast paths) agree with the integer path",
          arguments: RoundingMode.allCases)
    func conversionsToInteger(_ rm: RoundingMode) {
        var rng = SplitMix64(seed: 0xC0DE &+ UInt64(rm.rawValue))
        var mismatches = Mismatches()
        func compare(_ name: String, _ a: UInt64, _ fast: (inout ExceptionFlags) -> UInt64,
                     _ slow: (inout ExceptionFlags) -> UInt64) {
            for initial in [none, NX] {
                var fastFlags = initial
                var slowFlags = initial
                let f = fast(&fastFlags)
                let s = slow(&slowFlags)
                if f != s || fastFlags != slowFlags {
                    mismatches.add("\(name) \(rm) \(hex(a)): public \(hex(f)) \(describe(fastFlags)), integer path \(hex(s)) \(describe(slowFlags))")
                }
            }
        }
        for i in 0..<100_000 {
            // Random patterns, and values within a few ulps of ±2^k for k near the limits.
            var a64 = randomF64(&rng)
            var a32 = randomF32(&rng)
            if i % 2 == 0 {
                let k = UInt64([0, 1, 30, 31, 32, 33, 52, 53, 62, 63, 64, 65][Int(rng.below(12))])
                a64 = ((1023 + k) << 52) &+ (rng.below(9) &- 4) ^ (rng.next() & (1 << 63))
                a32 = UInt32(truncatingIfNeeded: ((127 + k) << 23) &+ (rng.below(9) &- 4)) ^ (UInt32(truncatingIfNeeded: rng.next()) & 0x8000_0000)
            }
            compare("f64 to i32", a64, { UInt64(UInt32(bitPattern: F64.toInt32(a64, rm, &$0))) },
                    { F64.toIntegerSlow(a64, rm, signed: true, width: 32, &$0) })
            compare("f64 to u32", a64, { UInt64(F64.toUInt32(a64, rm, &$0)) },
                    { F64.toIntegerSlow(a64, rm, signed: false, width: 32, &$0) })
            compare("f64 to i64", a64, { UInt64(bitPattern: F64.toInt64(a64, rm, &$0)) },
                    { F64.toIntegerSlow(a64, rm, signed: true, width: 64, &$0) })
            compare("f64 to u64", a64, { F64.toUInt64(a64, rm, &$0) },
                    { F64.toIntegerSlow(a64, rm, signed: false, width: 64, &$0) })
            compare("f32 to i32", UInt64(a32), { UInt64(UInt32(bitPattern: F32.toInt32(a32, rm, &$0))) },
                    { F32.toIntegerSlow(a32, rm, signed: true, width: 32, &$0) })
            compare("f32 to u32", UInt64(a32), { UInt64(F32.toUInt32(a32, rm, &$0)) },
                    { F32.toIntegerSlow(a32, rm, signed: false, width: 32, &$0) })
            compare("f32 to i64", UInt64(a32), { UInt64(bitPattern: F32.toInt64(a32, rm, &$0)) },
                    { F32.toIntegerSlow(a32, rm, signed: true, width: 64, &$0) })
            compare("f32 to u64", UInt64(a32), { F32.toUInt64(a32, rm, &$0) },
                    { F32.toIntegerSlow(a32, rm, signed: false, width: 64, &$0) })
        }
        #expect(mismatches.count == 0, "\(mismatches.summary)")
    }
}
