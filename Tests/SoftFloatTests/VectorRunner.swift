import SoftFloat

/// Runs one test vector line "<op> <rm> <operand>... <result> <flags>" (hex fields, flags in the
/// fflags layout) through the public API. Returns nil when it matches, else what differed.
func checkVector(_ line: Substring) -> String? {
    let fields = line.split(separator: " ")
    guard fields.count >= 4, let rmRaw = UInt8(fields[1]), let rm = RoundingMode(rawValue: rmRaw) else {
        return "malformed vector: \(line)"
    }
    var numbers: [UInt64] = []
    for field in fields[2...] {
        guard let v = UInt64(field, radix: 16) else { return "malformed vector: \(line)" }
        numbers.append(v)
    }
    let expectedFlags = ExceptionFlags(rawValue: UInt8(truncatingIfNeeded: numbers.removeLast()))
    let expected = numbers.removeLast()
    let x = numbers
    var flags: ExceptionFlags = []
    guard let got = apply(fields[0], rm, x, &flags) else { return "unknown operation: \(line)" }
    if got == expected && flags == expectedFlags { return nil }
    return "\(line): got \(String(got, radix: 16)) \(describe(flags)), expected \(describe(expectedFlags))"
}

func apply(_ op: Substring, _ rm: RoundingMode, _ x: [UInt64], _ flags: inout ExceptionFlags) -> UInt64? {
    func s(_ i: Int) -> UInt32 { UInt32(truncatingIfNeeded: x[i]) }
    func d(_ i: Int) -> UInt64 { x[i] }
    func u<T: BinaryInteger>(_ v: T) -> UInt64 { UInt64(truncatingIfNeeded: v) }
    func b(_ v: Bool) -> UInt64 { v ? 1 : 0 }
    switch op {
    case "f32_add": return u(F32.add(s(0), s(1), rm, &flags))
    case "f32_sub": return u(F32.sub(s(0), s(1), rm, &flags))
    case "f32_mul": return u(F32.mul(s(0), s(1), rm, &flags))
    case "f32_div": return u(F32.div(s(0), s(1), rm, &flags))
    case "f32_sqrt": return u(F32.sqrt(s(0), rm, &flags))
    case "f32_fmadd": return u(F32.fmadd(s(0), s(1), s(2), rm, &flags))
    case "f32_fmsub": return u(F32.fmsub(s(0), s(1), s(2), rm, &flags))
    case "f32_fnmsub": return u(F32.fnmsub(s(0), s(1), s(2), rm, &flags))
    case "f32_fnmadd": return u(F32.fnmadd(s(0), s(1), s(2), rm, &flags))
    case "f32_eq": return b(F32.eq(s(0), s(1), &flags))
    case "f32_lt": return b(F32.lt(s(0), s(1), &flags))
    case "f32_le": return b(F32.le(s(0), s(1), &flags))
    case "f32_to_i32": return u(UInt32(bitPattern: F32.toInt32(s(0), rm, &flags)))
    case "f32_to_u32": return u(F32.toUInt32(s(0), rm, &flags))
    case "f32_to_i64": return UInt64(bitPattern: F32.toInt64(s(0), rm, &flags))
    case "f32_to_u64": return F32.toUInt64(s(0), rm, &flags)
    case "i32_to_f32": return u(F32.fromInt32(Int32(bitPattern: s(0)), rm, &flags))
    case "u32_to_f32": return u(F32.fromUInt32(s(0), rm, &flags))
    case "i64_to_f32": return u(F32.fromInt64(Int64(bitPattern: d(0)), rm, &flags))
    case "u64_to_f32": return u(F32.fromUInt64(d(0), rm, &flags))
    case "f32_to_f64": return F32.toF64(s(0), &flags)
    case "f32_min": return u(F32.min(s(0), s(1), &flags))
    case "f32_max": return u(F32.max(s(0), s(1), &flags))
    case "f32_class": return F32.classify(s(0))
    case "f64_add": return F64.add(d(0), d(1), rm, &flags)
    case "f64_sub": return F64.sub(d(0), d(1), rm, &flags)
    case "f64_mul": return F64.mul(d(0), d(1), rm, &flags)
    case "f64_div": return F64.div(d(0), d(1), rm, &flags)
    case "f64_sqrt": return F64.sqrt(d(0), rm, &flags)
    case "f64_fmadd": return F64.fmadd(d(0), d(1), d(2), rm, &flags)
    case "f64_fmsub": return F64.fmsub(d(0), d(1), d(2), rm, &flags)
    case "f64_fnmsub": return F64.fnmsub(d(0), d(1), d(2), rm, &flags)
    case "f64_fnmadd": return F64.fnmadd(d(0), d(1), d(2), rm, &flags)
    case "f64_eq": return b(F64.eq(d(0), d(1), &flags))
    case "f64_lt": return b(F64.lt(d(0), d(1), &flags))
    case "f64_le": return b(F64.le(d(0), d(1), &flags))
    case "f64_to_i32": return u(UInt32(bitPattern: F64.toInt32(d(0), rm, &flags)))
    case "f64_to_u32": return u(F64.toUInt32(d(0), rm, &flags))
    case "f64_to_i64": return UInt64(bitPattern: F64.toInt64(d(0), rm, &flags))
    case "f64_to_u64": return F64.toUInt64(d(0), rm, &flags)
    case "i32_to_f64": return F64.fromInt32(Int32(bitPattern: s(0)), rm, &flags)
    case "u32_to_f64": return F64.fromUInt32(s(0), rm, &flags)
    case "i64_to_f64": return F64.fromInt64(Int64(bitPattern: d(0)), rm, &flags)
    case "u64_to_f64": return F64.fromUInt64(d(0), rm, &flags)
    case "f64_to_f32": return u(F64.toF32(d(0), rm, &flags))
    case "f64_min": return F64.min(d(0), d(1), &flags)
    case "f64_max": return F64.max(d(0), d(1), &flags)
    case "f64_class": return F64.classify(d(0))
    default: return nil
    }
}

/// Runs every line of `text`; returns (vectors run, mismatches, per-operation counts).
func runVectors(_ text: String) -> (total: Int, mismatches: Mismatches, perOperation: [Substring: Int]) {
    var mismatches = Mismatches()
    var total = 0
    var perOperation: [Substring: Int] = [:]
    for line in text.split(separator: "\n") where !line.isEmpty && !line.hasPrefix("#") {
        total += 1
        perOperation[line.prefix { $0 != " " }, default: 0] += 1
        if let problem = checkVector(line) { mismatches.add(problem) }
    }
    return (total, mismatches, perOperation)
}
