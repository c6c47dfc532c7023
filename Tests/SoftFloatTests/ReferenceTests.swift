import Foundation
import Testing
import TestSupport

// Berkeley SoftFloat 3 is the reference: Spike (the RISC-V golden model) and QEMU's RISC-V FPU
// behave as its RISC-V specialization does (canonical NaNs, RISC-V integer saturation,
// tininess after rounding). Berkeley TestFloat (`testfloat_gen`) is not packaged by Debian 12;
// PyPI's `softfloatpy` binds SoftFloat 3 built with that specialization, so the generator below
// drives it to produce vectors ("<op> <rm> <operand>... <result> <flags>", hex).
//
// The vectors are generated when the test runs, not committed: scripts/setup installs
// softfloatpy (pinned) for the Python scripts/test runs, which it names in $SWEMU_PYTHON
// (TestSupport's rule: $SWEMU_PYTHON, else python3 on PATH).
// SWEMU_SOFTFLOAT_LIVE_SEED (default 20250101) and SWEMU_SOFTFLOAT_LIVE_COUNT (vectors per
// operation and rounding mode, default 200) vary them.

let softfloatpyGenerator = #"""
# Test vectors for swemu's SoftFloat from Berkeley SoftFloat 3 (RISC-V specialization) through
# the `softfloatpy` binding. Usage: python3 vectors.py SEED COUNT_PER_OP_AND_MODE
# Output lines: "<op> <rm> <operand>... <result> <flags>", hex bit patterns, flags in fflags layout.
import random, sys
import softfloatpy as sf

seed, count = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
RM = [sf.RoundingMode.NEAR_EVEN, sf.RoundingMode.MIN_MAG, sf.RoundingMode.MIN,
      sf.RoundingMode.MAX, sf.RoundingMode.NEAR_MAX_MAG]  # RISC-V rm 0..4
FMT = {32: (8, 23, sf.Float32), 64: (11, 52, sf.Float64)}

def fbits(w, x): return int.from_bytes(x.to_bytes(), 'big')
def fval(w, b): return FMT[w][2].from_bytes(b.to_bytes(w // 8, 'big'))

def rand_float(w):
    eb, fb, _ = FMT[w]
    emax = (1 << eb) - 1
    bias = emax >> 1
    k = rng.random()
    if k < 0.06: e = 0
    elif k < 0.10: e = emax
    elif k < 0.16: e = rng.choice([1, 2, emax - 1, emax - 2])
    elif k < 0.40: e = bias + rng.randint(-fb - 3, fb + 3)
    elif k < 0.48: e = rng.randint(1, fb + 2)
    elif k < 0.56: e = rng.randint(emax - fb - 2, emax - 1)
    else: e = rng.randint(0, emax)
    k = rng.random()
    if k < 0.10: f = 0
    elif k < 0.18: f = (1 << fb) - 1
    elif k < 0.26: f = 1 << rng.randrange(fb)
    elif k < 0.34: f = (1 << rng.randrange(fb + 1)) - 1
    elif k < 0.42: f = ((1 << fb) - 1) ^ ((1 << rng.randrange(fb + 1)) - 1)
    elif k < 0.48: f = 1 << (fb - 1) | rng.getrandbits(fb - 1)  # quiet NaN when e == emax
    elif k < 0.54: f = rng.getrandbits(fb - 1) | 1  # signaling NaN when e == emax
    else: f = rng.getrandbits(fb)
    return rng.getrandbits(1) << (w - 1) | e << fb | f

def nearby(w, b):
    # A pattern a few ulps away, possibly with the sign flipped (cancellation cases).
    b = (b + rng.randint(-3, 3)) % (1 << w)
    if rng.random() < 0.5: b ^= 1 << (w - 1)
    return b

def rand_int(bits):
    k = rng.random()
    if k < 0.2: v = rng.choice([0, 1, 2, 3, (1 << (bits - 1)) - 1, 1 << (bits - 1), (1 << bits) - 1, (1 << (bits - 1)) + 1])
    elif k < 0.6: v = rng.getrandbits(rng.randint(1, bits))
    else:
        n = rng.randint(1, bits)
        v = ((1 << n) - 1) ^ ((1 << rng.randrange(n)) - 1) if rng.random() < 0.5 else (1 << (n - 1)) | rng.getrandbits(max(n - 30, 0))
    return v % (1 << bits)

def to_int_operand(w):
    # Near the saturation boundaries and at halfway points.
    if rng.random() < 0.5: return rand_float(w)
    limit = rng.choice([0, 1, 2, 31, 32, 63, 64, 23, 24, 52, 53])
    v = sf.Float64.from_float(float((1 << limit) if limit else rng.choice([0.5, 1.5, 2.5, 0.25, 0.75])))
    b = fbits(64, v)
    if w == 32:
        b = fbits(32, sf.f64_to_f32(v))
    if rng.random() < 0.3 and limit > 1:
        b = fbits(w, sf.f64_add(v, sf.Float64.from_float(0.5)) if w == 64 else sf.f32_add(fval(32, b), sf.Float32.from_float(0.5)))
    b = (b + rng.randint(-2, 2)) % (1 << w)
    return b | (rng.getrandbits(1) << (w - 1))

def run(fn):
    sf.set_exception_flags(0)
    r = fn()
    return r, sf.get_exception_flags()

out = []
def emit(op, rm, operands, result, flags):
    out.append(' '.join([op, str(rm)] + ['%x' % o for o in operands] + ['%x' % result, '%x' % flags]))

for w in (32, 64):
    p = 'f%d' % w
    F = lambda b: fval(w, b)
    add, sub, mul, div, sqrt, fma = (getattr(sf, '%s_%s' % (p, n)) for n in ('add', 'sub', 'mul', 'div', 'sqrt', 'mul_add'))
    sign = 1 << (w - 1)
    for rmi, rm in enumerate(RM):
        sf.set_rounding_mode(rm)
        for _ in range(count):
            a, b = rand_float(w), rand_float(w)
            if rng.random() < 0.25: b = nearby(w, a)
            r, fl = run(lambda: add(F(a), F(b))); emit(p + '_add', rmi, [a, b], fbits(w, r), fl)
            r, fl = run(lambda: sub(F(a), F(b))); emit(p + '_sub', rmi, [a, b], fbits(w, r), fl)
            a, b = rand_float(w), rand_float(w)
            r, fl = run(lambda: mul(F(a), F(b))); emit(p + '_mul', rmi, [a, b], fbits(w, r), fl)
            a, b = rand_float(w), rand_float(w)
            if rng.random() < 0.2:  # exact quotients
                sf.set_rounding_mode(sf.RoundingMode.MIN_MAG); a = fbits(w, mul(F(a), F(b))); sf.set_rounding_mode(rm)
            r, fl = run(lambda: div(F(a), F(b))); emit(p + '_div', rmi, [a, b], fbits(w, r), fl)
            a = rand_float(w)
            if rng.random() < 0.3:  # perfect squares and their neighbours
                sf.set_rounding_mode(sf.RoundingMode.MIN_MAG); a = fbits(w, mul(F(a & ~sign), F(a & ~sign))); sf.set_rounding_mode(rm)
                a = (a + rng.randint(-1, 1)) % (1 << w)
            r, fl = run(lambda: sqrt(F(a))); emit(p + '_sqrt', rmi, [a], fbits(w, r), fl)
            a, b, c = rand_float(w), rand_float(w), rand_float(w)
            if rng.random() < 0.35:  # addend close to −a×b: cancellation
                sf.set_rounding_mode(rng.choice(RM)); c = nearby(w, fbits(w, mul(F(a), F(b)))); sf.set_rounding_mode(rm)
            for name, x, z in (('fmadd', a, c), ('fmsub', a, c ^ sign), ('fnmsub', a ^ sign, c), ('fnmadd', a ^ sign, c ^ sign)):
                r, fl = run(lambda: fma(F(x), F(b), F(z))); emit('%s_%s' % (p, name), rmi, [a, b, c], fbits(w, r), fl)
            a = to_int_operand(w)
            for name, T in (('i32', sf.Int32), ('u32', sf.UInt32), ('i64', sf.Int64), ('u64', sf.UInt64)):
                bits = int(name[1:])
                r, fl = run(lambda: getattr(sf, '%s_to_%s' % (p, name.replace('u', 'ui')))(F(a), rm, True))
                emit('%s_to_%s' % (p, name), rmi, [a], r.to_int() % (1 << bits), fl)
            for name, T in (('i32', sf.Int32), ('u32', sf.UInt32), ('i64', sf.Int64), ('u64', sf.UInt64)):
                bits = int(name[1:])
                v = rand_int(bits)
                iv = v - (1 << bits) if name[0] == 'i' and v >> (bits - 1) else v
                r, fl = run(lambda: getattr(sf, '%s_to_%s' % (name.replace('u', 'ui'), p))(T.from_int(iv)))
                emit('%s_to_%s' % (name, p), rmi, [v], fbits(w, r), fl)
            if w == 64:
                a = rand_float(64)
                if rng.random() < 0.5:  # near binary32's range limits
                    a = (rng.getrandbits(1) << 63) | (rng.choice([1023 - 126, 1023 - 127, 1023 - 149, 1023 - 150, 1023 + 127, 1023 + 128, 1023 - 140]) << 52) | rng.choice([0, (1 << 52) - 1, (1 << 52) - (1 << 28), (1 << 28), rng.getrandbits(52)])
                r, fl = run(lambda: sf.f64_to_f32(F(a))); emit('f64_to_f32', rmi, [a], fbits(32, r), fl)
            elif rmi == 0:
                a = rand_float(32)
                r, fl = run(lambda: sf.f32_to_f64(F(a))); emit('f32_to_f64', 0, [a], fbits(64, r), fl)
    sf.set_rounding_mode(sf.RoundingMode.NEAR_EVEN)
    for _ in range(count):
        a, b = rand_float(w), rand_float(w)
        if rng.random() < 0.3: b = nearby(w, a) if rng.random() < 0.5 else a
        for name, fn in (('eq', sf.__dict__[p + '_eq']), ('lt', sf.__dict__[p + '_lt']), ('le', sf.__dict__[p + '_le'])):
            r, fl = run(lambda: fn(F(a), F(b))); emit('%s_%s' % (p, name), 0, [a, b], int(bool(r)), fl)
print('\n'.join(out))
"""#

enum LiveReference {
    /// Why the generator cannot run (a skip reason), or nil.
    static var missing: String? { Python.missing("softfloatpy") }

    static func runPython(_ python: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "\(python) exited with \(process.terminationStatus)"])
        }
        return String(decoding: data, as: UTF8.self)
    }
}

@Suite("Berkeley SoftFloat 3 reference vectors")
struct ReferenceVectorTests {
    @Test("random vectors from SoftFloat 3 (RISC-V specialization) through softfloatpy",
          .enabled(if: LiveReference.missing == nil, "\(LiveReference.missing ?? "")"))
    func referenceVectors() throws {
        let environment = ProcessInfo.processInfo.environment
        let count = environment["SWEMU_SOFTFLOAT_LIVE_COUNT"].flatMap { Int($0) } ?? 200
        let seed = environment["SWEMU_SOFTFLOAT_LIVE_SEED"].flatMap { Int($0) } ?? 20250101
        let text = try LiveReference.runPython(Python.executable, ["-c", softfloatpyGenerator, String(seed), String(count)])
        let (total, mismatches, perOperation) = runVectors(text)
        #expect(total > 100 * count)
        #expect(perOperation.count == 42, "every operation is covered: \(perOperation.keys.sorted())")
        #expect(mismatches.count == 0, "\(mismatches.summary)")
    }
}
