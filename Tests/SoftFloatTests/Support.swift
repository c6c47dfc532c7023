@testable import SoftFloat

// Shorthands for expected flags.
let NX = ExceptionFlags.inexact
let UF = ExceptionFlags.underflow
let OF = ExceptionFlags.overflow
let DZ = ExceptionFlags.divideByZero
let NV = ExceptionFlags.invalid
let none: ExceptionFlags = []

let RNE = RoundingMode.nearestEven
let RTZ = RoundingMode.towardZero
let RDN = RoundingMode.down
let RUP = RoundingMode.up
let RMM = RoundingMode.nearestMaxMagnitude

func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

func describe(_ f: ExceptionFlags) -> String {
    let names: [(ExceptionFlags, String)] = [(NV, "NV"), (DZ, "DZ"), (OF, "OF"), (UF, "UF"), (NX, "NX")]
    let set = names.filter { f.contains($0.0) }.map(\.1)
    return set.isEmpty ? "-" : set.joined(separator: "|")
}

/// SplitMix64 (Steele, Lea, Flood 2014): a fixed-seed generator, so every failure reproduces.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: UInt64) -> UInt64 { next() % n }
    mutating func chance(_ percent: UInt64) -> Bool { below(100) < percent }
}

/// Random bit patterns that hit the interesting corners often: zeros, subnormals, the extreme
/// exponents, infinities, quiet and signaling NaNs, runs of ones, and otherwise uniform values.
func randomPattern(_ rng: inout SplitMix64, exponentBits: Int, fractionBits: Int) -> UInt64 {
    let maxExp = (UInt64(1) << UInt64(exponentBits)) - 1
    let bias = maxExp >> 1
    let fb = UInt64(fractionBits)
    let fractionMask = (UInt64(1) << fb) - 1
    let e: UInt64
    switch rng.below(100) {
    case 0..<5: e = 0
    case 5..<8: e = maxExp
    case 8..<14: e = [1, 2, maxExp - 1, maxExp - 2][Int(rng.below(4))]
    case 14..<40: e = bias &+ rng.below(2 * fb + 7) &- (fb + 3)
    case 40..<46: e = 1 + rng.below(fb + 2)
    case 46..<52: e = maxExp - 1 - rng.below(fb + 2)
    default: e = rng.below(maxExp + 1)
    }
    let f: UInt64
    switch rng.below(100) {
    case 0..<8: f = 0
    case 8..<16: f = fractionMask
    case 16..<24: f = 1 << rng.below(fb)
    case 24..<32: f = (1 << rng.below(fb + 1)) - 1
    case 32..<40: f = fractionMask ^ ((1 << rng.below(fb + 1)) - 1)
    default: f = rng.next() & fractionMask
    }
    let sign = rng.next() & 1
    return sign << UInt64(exponentBits + fractionBits) | e << fb | f
}

func randomF32(_ rng: inout SplitMix64) -> UInt32 {
    UInt32(randomPattern(&rng, exponentBits: 8, fractionBits: 23))
}

func randomF64(_ rng: inout SplitMix64) -> UInt64 {
    randomPattern(&rng, exponentBits: 11, fractionBits: 52)
}

/// Collects mismatches, keeps the first few for the failure message.
struct Mismatches {
    var count = 0
    var examples: [String] = []
    mutating func add(_ s: String) {
        count += 1
        if examples.count < 12 { examples.append(s) }
    }
    var summary: String { "\(count) mismatches:\n" + examples.joined(separator: "\n") }
}
