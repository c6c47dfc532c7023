import Foundation
import Testing
import RISCVJIT

/// Every form `X86Assembler` emits, disassembled by binutils' objdump (an encoder written
/// independently of this one) and compared with the Intel-syntax text the call should mean.
///
/// Each case emits one instruction (or a short sequence, for labels and `set`); the test writes
/// the bytes to a file, runs `objdump -D -b binary -mi386:x86-64 -M intel` on it and checks that
/// objdump decodes exactly the emitted bytes, one line per expected instruction, with no
/// `(bad)`, and that each line reads as expected (whitespace normalised). Where the point of a
/// case is the choice of the shortest form (imm8 against imm32, disp8 against disp32, no
/// needless REX), the case also names the byte count.
@Suite struct X86AssemblerTests {
    static let objdump = "/usr/bin/objdump"
    /// GNU objdump specifically: LLVM's (macOS's /usr/bin/objdump) has no `-b binary`.
    static let objdumpPresent: Bool = {
        guard FileManager.default.isExecutableFile(atPath: objdump) else { return false }
        return (try? run(["--version"]))?.output.contains("GNU objdump") ?? false
    }()

    @Test(.enabled(if: objdumpPresent, "needs objdump (binutils)"), arguments: X86EncodingCase.all)
    func matchesObjdump(_ c: X86EncodingCase) throws {
        var asm = X86Assembler(origin: c.origin)
        c.emit(&asm)
        let bytes = asm.finish()
        let hex = bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
        try #require(!bytes.isEmpty, "\(c.name) emitted nothing")

        let lines = try Self.disassemble(bytes, origin: c.origin)
        let texts = lines.map(\.text)
        #expect(lines.flatMap(\.bytes) == bytes,
                "\(c.name): objdump did not decode exactly the emitted bytes [\(hex)] as whole instructions: \(lines)")
        #expect(!texts.contains { $0.contains("(bad)") }, "\(c.name): [\(hex)] has undecodable bytes: \(texts)")
        #expect(texts == c.expected, "\(c.name): emitted [\(hex)], objdump reads \(texts), expected \(c.expected)")
        if let size = c.size {
            #expect(bytes.count == size, "\(c.name): emitted \(bytes.count) bytes [\(hex)], expected the \(size)-byte form")
        }
        // Each instruction starts where the previous one ended, at the assembler's origin.
        var address = UInt64(c.origin)
        for line in lines {
            #expect(line.address == address, "\(c.name): objdump line \(line) not at 0x\(String(address, radix: 16))")
            address += UInt64(line.bytes.count)
        }
    }

    /// The bookkeeping around the emitters: `count`, `here` and `jmpPatchable`'s offset.
    @Test func positionsAndPatchOffsets() {
        var asm = X86Assembler(origin: 0x7fff_0000_1000)
        #expect(asm.count == 0 && asm.here == 0x7fff_0000_1000)
        asm.ret()
        #expect(asm.count == 1 && asm.here == 0x7fff_0000_1001)
        let rel = asm.jmpPatchable()
        #expect(rel == 2, "the rel32 follows the E9 opcode")
        #expect(asm.count == 6 && asm.here == 0x7fff_0000_1006)
        let code = asm.finish()
        #expect(code == [0xc3, 0xe9, 0, 0, 0, 0])
    }

    /// The cases' names are unique, so a failure names one case.
    @Test func caseNamesAreUnique() {
        var seen = Set<String>()
        for c in X86EncodingCase.all {
            #expect(seen.insert(c.name).inserted, "duplicate case \(c.name)")
        }
        #expect(X86EncodingCase.all.count > 300)
    }

    struct Line: CustomStringConvertible {
        var address: UInt64
        var bytes: [UInt8]
        var text: String
        var description: String { "\(String(address, radix: 16)): \(bytes.map { String(format: "%02x", $0) }.joined(separator: " ")) \(text)" }
    }

    /// objdump's instruction lines: "   0:\t4c 8b 6d 08   \tmov    r13,QWORD PTR [rbp+0x8]".
    static func disassemble(_ bytes: [UInt8], origin: UInt) throws -> [Line] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-x86asm-\(UUID().uuidString).bin")
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }

        let (status, output) = try run(["-D", "-b", "binary", "-mi386:x86-64", "-M", "intel", "--insn-width=16",
                                        "--adjust-vma=0x\(String(origin, radix: 16))", file.path])
        try #require(status == 0, "objdump failed: \(output)")

        var lines: [Line] = []
        for raw in output.split(separator: "\n") {
            let fields = raw.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 2, fields[0].hasSuffix(":"),
                  let address = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            let encoded = fields[1].split(separator: " ").compactMap { UInt8($0, radix: 16) }
            let text = fields.dropFirst(2).joined(separator: " ").split(whereSeparator: \.isWhitespace).joined(separator: " ")
            lines.append(Line(address: address, bytes: encoded, text: text))
        }
        return lines
    }

    /// Runs objdump with `arguments`; its exit status and its stdout and stderr together.
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: objdump)
        process.arguments = arguments
        process.environment = ["LC_ALL": "C", "PATH": "/usr/bin:/bin"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// One call (or a few) into the assembler and what objdump should make of the bytes.
struct X86EncodingCase: Sendable, CustomTestStringConvertible {
    let name: String
    let expected: [String]
    /// The total byte count, where the case is about choosing the short form.
    let size: Int?
    let origin: UInt
    let emit: @Sendable (inout X86Assembler) -> Void

    var testDescription: String { name }

    static let all: [X86EncodingCase] = {
        var table = CaseTable()
        table.moves()
        table.loadsAndStores()
        table.arithmetic()
        table.shiftsAndBits()
        table.controlFlow()
        table.sse()
        return table.cases
    }()
}

// MARK: - Register and operand names as objdump prints them

private let names64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
private let names32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi",
                       "r8d", "r9d", "r10d", "r11d", "r12d", "r13d", "r14d", "r15d"]
private let names16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di", "r8w", "r9w", "r10w", "r11w", "r12w", "r13w", "r14w", "r15w"]
private let names8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b", "r11b", "r12b", "r13b", "r14b", "r15b"]

private func q(_ r: Reg) -> String { names64[Int(r.rawValue)] }
private func d(_ r: Reg) -> String { names32[Int(r.rawValue)] }
private func w(_ r: Reg) -> String { names16[Int(r.rawValue)] }
private func b(_ r: Reg) -> String { names8[Int(r.rawValue)] }

/// objdump's immediates: hex, negative ones as the two's complement of the operand size.
private func imm(_ v: Int64, bits: Int = 64) -> String {
    let u = bits == 64 ? UInt64(bitPattern: v) : UInt64(bitPattern: v) & ((1 << UInt64(bits)) - 1)
    return "0x" + String(u, radix: 16)
}

private let conditions: [(Cond, String)] = [
    (.o, "o"), (.no, "no"), (.b, "b"), (.ae, "ae"), (.e, "e"), (.ne, "ne"), (.be, "be"), (.a, "a"),
    (.s, "s"), (.ns, "ns"), (.p, "p"), (.np, "np"), (.l, "l"), (.ge, "ge"), (.le, "le"), (.g, "g"),
]
private let aluKinds: [(ALU, String)] = [
    (.add, "add"), (.or, "or"), (.adc, "adc"), (.sbb, "sbb"), (.and, "and"), (.sub, "sub"), (.xor, "xor"), (.cmp, "cmp"),
]
private let shiftKinds: [(Shift, String)] = [(.rol, "rol"), (.ror, "ror"), (.shl, "shl"), (.shr, "shr"), (.sar, "sar")]
private let bitTestKinds: [(BitTest, String)] = [(.bt, "bt"), (.bts, "bts"), (.btr, "btr"), (.btc, "btc")]

/// A memory operand, its objdump text, and its encoded length past the ModRM byte (SIB + disp).
private struct MemOperand {
    let mem: Mem
    let text: String
    let extra: Int
}

/// The addressing classes: plain bases, rsp/r12 (SIB), rbp/r13 (no disp-0 form), disp8/disp32
/// boundaries, and index * scale with every awkward base and index.
private let memOperands: [MemOperand] = [
    MemOperand(mem: Mem(.rax), text: "[rax]", extra: 0),
    MemOperand(mem: Mem(.rdi, 8), text: "[rdi+0x8]", extra: 1),
    MemOperand(mem: Mem(.rsi, -8), text: "[rsi-0x8]", extra: 1),
    MemOperand(mem: Mem(.rdx, 127), text: "[rdx+0x7f]", extra: 1),
    MemOperand(mem: Mem(.rdx, 128), text: "[rdx+0x80]", extra: 4),
    MemOperand(mem: Mem(.rbx, -128), text: "[rbx-0x80]", extra: 1),
    MemOperand(mem: Mem(.rbx, -129), text: "[rbx-0x81]", extra: 4),
    MemOperand(mem: Mem(.rcx, 0x1234_5678), text: "[rcx+0x12345678]", extra: 4),
    MemOperand(mem: Mem(.rcx, Int32.min), text: "[rcx-0x80000000]", extra: 4),
    MemOperand(mem: Mem(.rsp), text: "[rsp]", extra: 1),
    MemOperand(mem: Mem(.rsp, 16), text: "[rsp+0x10]", extra: 2),
    MemOperand(mem: Mem(.rsp, 0x1000), text: "[rsp+0x1000]", extra: 5),
    MemOperand(mem: Mem(.r12), text: "[r12]", extra: 1),
    MemOperand(mem: Mem(.r12, -4), text: "[r12-0x4]", extra: 2),
    MemOperand(mem: Mem(.rbp), text: "[rbp+0x0]", extra: 1),
    MemOperand(mem: Mem(.rbp, -0x400), text: "[rbp-0x400]", extra: 4),
    MemOperand(mem: Mem(.r13), text: "[r13+0x0]", extra: 1),
    MemOperand(mem: Mem(.r13, 8), text: "[r13+0x8]", extra: 1),
    MemOperand(mem: Mem(.r8), text: "[r8]", extra: 0),
    MemOperand(mem: Mem(.r15, 0x7ff), text: "[r15+0x7ff]", extra: 4),
    MemOperand(mem: Mem(.rax, index: .rcx), text: "[rax+rcx*1]", extra: 1),
    MemOperand(mem: Mem(.rdx, index: .rbx, scale: 2, 0x10), text: "[rdx+rbx*2+0x10]", extra: 2),
    MemOperand(mem: Mem(.r14, index: .r15, scale: 8, -0x1000), text: "[r14+r15*8-0x1000]", extra: 5),
    MemOperand(mem: Mem(.rsp, index: .rax, scale: 4), text: "[rsp+rax*4]", extra: 1),
    MemOperand(mem: Mem(.rbp, index: .rsi, scale: 8), text: "[rbp+rsi*8+0x0]", extra: 2),
    MemOperand(mem: Mem(.r13, index: .r12), text: "[r13+r12*1+0x0]", extra: 2),
    MemOperand(mem: Mem(.r12, index: .r13, scale: 2, 0x100), text: "[r12+r13*2+0x100]", extra: 5),
    MemOperand(mem: Mem(.rax, index: .r12, scale: 4), text: "[rax+r12*4]", extra: 1),
    MemOperand(mem: Mem(.r9, index: .rbp, scale: 8, -1), text: "[r9+rbp*8-0x1]", extra: 2),
]

// MARK: - The table

private struct CaseTable {
    var cases: [X86EncodingCase] = []

    mutating func add(_ name: String, _ expected: [String], size: Int? = nil, origin: UInt = 0,
                      _ emit: @escaping @Sendable (inout X86Assembler) -> Void) {
        cases.append(X86EncodingCase(name: name, expected: expected, size: size, origin: origin, emit: emit))
    }

    mutating func add(_ name: String, _ expected: String, size: Int? = nil, origin: UInt = 0,
                      _ emit: @escaping @Sendable (inout X86Assembler) -> Void) {
        add(name, [expected], size: size, origin: origin, emit)
    }

    mutating func sse() {
        for m in memOperands {
            add("movsd(xmm0, \(m.text))", "movsd xmm0,QWORD PTR \(m.text)") { $0.movsd(.xmm0, m.mem) }
            add("movsd(\(m.text), xmm1)", "movsd QWORD PTR \(m.text),xmm1") { $0.movsd(m.mem, .xmm1) }
            add("ldmxcsr(\(m.text))", "ldmxcsr DWORD PTR \(m.text)") { $0.ldmxcsr(m.mem) }
            add("stmxcsr(\(m.text))", "stmxcsr DWORD PTR \(m.text)") { $0.stmxcsr(m.mem) }
            add("test32(\(m.text), 0x6000)", "test DWORD PTR \(m.text),0x6000") { $0.test32(m.mem, imm: 0x6000) }
            add("cmp8(\(m.text), 0)", "cmp BYTE PTR \(m.text),0x0") { $0.cmp8(m.mem, imm: 0) }
            for src in [Reg.rcx, .r9] {
                add("xchg(\(m.text), \(q(src)))", "xchg QWORD PTR \(m.text),\(q(src))") { $0.xchg(m.mem, src) }
                add("xchg(\(m.text), \(q(src)), w: false)", "xchg DWORD PTR \(m.text),\(d(src))") { $0.xchg(m.mem, src, w: false) }
                add("lockXadd(\(m.text), \(q(src)))", "lock xadd QWORD PTR \(m.text),\(q(src))") { $0.lockXadd(m.mem, src) }
                add("lockXadd(\(m.text), \(q(src)), w: false)", "lock xadd DWORD PTR \(m.text),\(d(src))") {
                    $0.lockXadd(m.mem, src, w: false)
                }
                add("lockCmpxchg(\(m.text), \(q(src)))", "lock cmpxchg QWORD PTR \(m.text),\(q(src))") { $0.lockCmpxchg(m.mem, src) }
                add("lockCmpxchg(\(m.text), \(q(src)), w: false)", "lock cmpxchg DWORD PTR \(m.text),\(d(src))") {
                    $0.lockCmpxchg(m.mem, src, w: false)
                }
            }
        }
        let names: [(ScalarDouble, String)] = [(.add, "addsd"), (.sub, "subsd"), (.mul, "mulsd"), (.div, "divsd"), (.sqrt, "sqrtsd")]
        for (kind, name) in names {
            add("scalarDouble(\(name), xmm0, [r15+0x100])", "\(name) xmm0,QWORD PTR [r15+0x100]") {
                $0.scalarDouble(kind, .xmm0, Mem(.r15, 0x100))
            }
            add("scalarDouble(\(name), xmm1, [rsp])", "\(name) xmm1,QWORD PTR [rsp]") { $0.scalarDouble(kind, .xmm1, Mem(.rsp)) }
        }
        let fused: [(FusedMultiplyAdd, String)] = [(.madd, "vfmadd231sd"), (.msub, "vfmsub231sd"), (.nmadd, "vfnmadd231sd"),
                                                   (.nmsub, "vfnmsub231sd")]
        for (kind, name) in fused {
            for m in memOperands {
                add("fusedMultiplyAdd(\(name), xmm0, xmm1, \(m.text))", "\(name) xmm0,xmm1,QWORD PTR \(m.text)") {
                    $0.fusedMultiplyAdd(kind, .xmm0, .xmm1, m.mem)
                }
            }
            add("fusedMultiplyAdd(\(name), xmm1, xmm0, [rax])", "\(name) xmm1,xmm0,QWORD PTR [rax]") {
                $0.fusedMultiplyAdd(kind, .xmm1, .xmm0, Mem(.rax))
            }
        }
        add("ucomisd(xmm0, xmm0)", "ucomisd xmm0,xmm0", size: 4) { $0.ucomisd(.xmm0, .xmm0) }
        add("ucomisd(xmm1, xmm0)", "ucomisd xmm1,xmm0", size: 4) { $0.ucomisd(.xmm1, .xmm0) }
        for src in Reg.allCases {
            add("movq(xmm0, \(q(src)))", "movq xmm0,\(q(src))", size: 5) { $0.movq(.xmm0, src) }
        }
    }

    mutating func moves() {
        // Register to register: every register as destination and as source, 64- and 32-bit.
        for dst in Reg.allCases {
            let src = Reg(rawValue: (dst.rawValue + 5) % 16)!
            add("mov(\(q(dst)), \(q(src)))", "mov \(q(dst)),\(q(src))", size: 3) { $0.mov(dst, src) }
            let src32 = Reg(rawValue: (dst.rawValue + 11) % 16)!
            let rex = dst.rawValue >= 8 || src32.rawValue >= 8
            add("mov(\(q(dst)), \(q(src32)), w: false)", "mov \(d(dst)),\(d(src32))", size: rex ? 3 : 2) { $0.mov(dst, src32, w: false) }
        }

        // mov reg, imm: xor for zero, mov r32 for 32-bit values, C7 for sign-extended, movabs otherwise.
        add("mov(rax, imm: 0)", "xor eax,eax", size: 2) { $0.mov(.rax, imm: 0) }
        add("mov(r9, imm: 0)", "xor r9d,r9d", size: 3) { $0.mov(.r9, imm: 0) }
        add("mov(rsp, imm: 0)", "xor esp,esp", size: 2) { $0.mov(.rsp, imm: 0) }
        add("mov(rax, imm: 1)", "mov eax,0x1", size: 5) { $0.mov(.rax, imm: 1) }
        add("mov(rdi, imm: 0x12345678)", "mov edi,0x12345678", size: 5) { $0.mov(.rdi, imm: 0x1234_5678) }
        add("mov(rsp, imm: 0x80)", "mov esp,0x80", size: 5) { $0.mov(.rsp, imm: 0x80) }
        add("mov(r8, imm: 0x80000000)", "mov r8d,0x80000000", size: 6) { $0.mov(.r8, imm: 0x8000_0000) }
        add("mov(r15, imm: 0xffffffff)", "mov r15d,0xffffffff", size: 6) { $0.mov(.r15, imm: 0xffff_ffff) }
        add("mov(rax, imm: -1)", "mov rax,0xffffffffffffffff", size: 7) { $0.mov(.rax, imm: UInt64.max) }
        add("mov(r12, imm: -0x80000000)", "mov r12,0xffffffff80000000", size: 7) { $0.mov(.r12, imm: 0xffff_ffff_8000_0000) }
        add("mov(rbp, imm: -2)", "mov rbp,0xfffffffffffffffe", size: 7) { $0.mov(.rbp, imm: 0xffff_ffff_ffff_fffe) }
        add("mov(rcx, imm: 0x100000000)", "movabs rcx,0x100000000", size: 10) { $0.mov(.rcx, imm: 0x1_0000_0000) }
        add("mov(r11, imm: 0x1122334455667788)", "movabs r11,0x1122334455667788", size: 10) { $0.mov(.r11, imm: 0x1122_3344_5566_7788) }
        add("mov(rsi, imm: 0xffffffff7fffffff)", "movabs rsi,0xffffffff7fffffff", size: 10) { $0.mov(.rsi, imm: 0xffff_ffff_7fff_ffff) }
        add("mov(r13, imm: 0x8000000000000000)", "movabs r13,0x8000000000000000", size: 10) { $0.mov(.r13, imm: 0x8000_0000_0000_0000) }

        // movabs: always the 10-byte form, even for small values.
        add("movabs(rax, 0)", "movabs rax,0x0", size: 10) { $0.movabs(.rax, imm: 0) }
        add("movabs(rsp, 1)", "movabs rsp,0x1", size: 10) { $0.movabs(.rsp, imm: 1) }
        add("movabs(r15, 0xdeadbeefcafef00d)", "movabs r15,0xdeadbeefcafef00d", size: 10) { $0.movabs(.r15, imm: 0xdead_beef_cafe_f00d) }
        add("movabs(r8, -1)", "movabs r8,0xffffffffffffffff", size: 10) { $0.movabs(.r8, imm: UInt64.max) }

        // movsxd reg, reg32
        for (dst, src) in [(Reg.rax, Reg.rcx), (.r8, .r15), (.rsp, .rbp), (.rdi, .r12), (.r13, .rsi)] {
            add("movsxd(\(q(dst)), \(q(src)))", "movsxd \(q(dst)),\(d(src))", size: 3) { $0.movsxd(dst, src) }
        }

        // movzx/movsx from 8 and 16 bits: spl..dil need a REX, al..bl must not get one.
        let extendPairs: [(Reg, Reg)] = [(.rax, .rcx), (.rsi, .rax), (.rax, .rsp), (.rbx, .rbp), (.r9, .rsi), (.rdi, .rdi),
                                         (.rsp, .rdx), (.rdx, .r12), (.r15, .r8)]
        for (dst, src) in extendPairs {
            let needsRex = dst.rawValue >= 8 || src.rawValue >= 4
            add("extend(\(q(dst)), \(q(src)), bits: 8, signed: false)", "movzx \(d(dst)),\(b(src))", size: needsRex ? 4 : 3) {
                $0.extend(dst, src, bits: 8, signed: false)
            }
            add("extend(\(q(dst)), \(q(src)), bits: 8, signed: true)", "movsx \(q(dst)),\(b(src))", size: 4) {
                $0.extend(dst, src, bits: 8, signed: true)
            }
            let rex16 = dst.rawValue >= 8 || src.rawValue >= 8
            add("extend(\(q(dst)), \(q(src)), bits: 16, signed: false)", "movzx \(d(dst)),\(w(src))", size: rex16 ? 4 : 3) {
                $0.extend(dst, src, bits: 16, signed: false)
            }
            add("extend(\(q(dst)), \(q(src)), bits: 16, signed: true)", "movsx \(q(dst)),\(w(src))", size: 4) {
                $0.extend(dst, src, bits: 16, signed: true)
            }
        }
    }

    mutating func loadsAndStores() {
        // Every addressing class through the 8-byte load, with destinations from both halves.
        for (i, m) in memOperands.enumerated() {
            let dst = Reg(rawValue: UInt8(i * 7 % 16))!
            let mem = m.mem
            add("load(\(q(dst)), \(m.text))", "mov \(q(dst)),QWORD PTR \(m.text)", size: 3 + m.extra) { $0.load(dst, mem) }
        }
        // Every register as a base (disp 0 and disp8) and as the destination.
        for base in Reg.allCases {
            let low = base.rawValue & 7
            let extra0 = low == 4 || low == 5 ? 1 : 0
            let text0 = low == 5 ? "[\(q(base))+0x0]" : "[\(q(base))]"
            add("load(\(q(base)), Mem(\(q(base))))", "mov \(q(base)),QWORD PTR \(text0)", size: 3 + extra0) { $0.load(base, Mem(base)) }
            let dst = Reg(rawValue: 15 - base.rawValue)!
            let extra8 = low == 4 ? 2 : 1
            add("load(\(q(dst)), Mem(\(q(base)), 8), size: 8, signed: false)", "mov \(q(dst)),QWORD PTR [\(q(base))+0x8]",
                size: 3 + extra8) { $0.load(dst, Mem(base, 8), size: 8, signed: false) }
        }
        // Every width and signedness.
        let widths: [(Int, Bool, (Reg) -> String)] = [
            (1, false, { "movzx \(d($0)),BYTE PTR" }), (1, true, { "movsx \(q($0)),BYTE PTR" }),
            (2, false, { "movzx \(d($0)),WORD PTR" }), (2, true, { "movsx \(q($0)),WORD PTR" }),
            (4, false, { "mov \(d($0)),DWORD PTR" }), (4, true, { "movsxd \(q($0)),DWORD PTR" }),
            (8, false, { "mov \(q($0)),QWORD PTR" }), (8, true, { "mov \(q($0)),QWORD PTR" }),
        ]
        let loadOperands = [memOperands[0], memOperands[1], memOperands[9], memOperands[16], memOperands[22], memOperands[25]]
        for (size, signed, prefix) in widths {
            for (j, m) in loadOperands.enumerated() {
                let dst: Reg = [.rax, .rsi, .r8, .r15, .rsp, .rbp][j]
                let mem = m.mem
                add("load(\(q(dst)), \(m.text), size: \(size), signed: \(signed))", "\(prefix(dst)) \(m.text)") {
                    $0.load(dst, mem, size: size, signed: signed)
                }
            }
        }

        // Stores of every width; byte stores of spl..dil need a REX, of al..bl must not have one.
        let storeOperands = [memOperands[0], memOperands[1], memOperands[10], memOperands[14], memOperands[17], memOperands[21]]
        let storeSources: [Reg] = [.rax, .rbx, .rsp, .rbp, .rsi, .rdi, .r8, .r12, .r15]
        for (i, src) in storeSources.enumerated() {
            let m = storeOperands[i % storeOperands.count]
            let mem = m.mem
            let mrex = mem.base.rawValue >= 8 || (mem.index?.rawValue ?? 0) >= 8
            let rexByte = src.rawValue >= 4 || mrex
            add("store(\(m.text), \(q(src)), size: 1)", "mov BYTE PTR \(m.text),\(b(src))", size: (rexByte ? 3 : 2) + m.extra) {
                $0.store(mem, src, size: 1)
            }
            let rex = src.rawValue >= 8 || mrex
            add("store(\(m.text), \(q(src)), size: 2)", "mov WORD PTR \(m.text),\(w(src))", size: (rex ? 4 : 3) + m.extra) {
                $0.store(mem, src, size: 2)
            }
            add("store(\(m.text), \(q(src)), size: 4)", "mov DWORD PTR \(m.text),\(d(src))", size: (rex ? 3 : 2) + m.extra) {
                $0.store(mem, src, size: 4)
            }
            add("store(\(m.text), \(q(src)))", "mov QWORD PTR \(m.text),\(q(src))", size: 3 + m.extra) { $0.store(mem, src) }
        }

        // mov qword [m], imm32 (sign-extended)
        for (m, value) in [(memOperands[1], Int32(5)), (memOperands[9], -1), (memOperands[16], Int32.max), (memOperands[24], Int32.min)] {
            let mem = m.mem
            add("store(\(m.text), imm: \(value))", "mov QWORD PTR \(m.text),\(imm(Int64(value)))", size: 7 + m.extra) {
                $0.store(mem, imm: value)
            }
        }

        // lea over every addressing class.
        for (i, m) in memOperands.enumerated() {
            let dst = Reg(rawValue: UInt8((i * 5 + 3) % 16))!
            let mem = m.mem
            add("lea(\(q(dst)), \(m.text))", "lea \(q(dst)),\(m.text)", size: 3 + m.extra) { $0.lea(dst, mem) }
        }
    }

    mutating func arithmetic() {
        for (i, (kind, name)) in aluKinds.enumerated() {
            let dst = Reg(rawValue: UInt8(i * 3 % 16))!
            let src = Reg(rawValue: UInt8((i * 5 + 4) % 16))!
            add("alu(.\(name), \(q(dst)), \(q(src)))", "\(name) \(q(dst)),\(q(src))", size: 3) { $0.alu(kind, dst, src) }
            let dst32 = Reg(rawValue: UInt8((i * 3 + 8) % 16))!
            let src32 = Reg(rawValue: UInt8(i % 16))!
            add("alu(.\(name), \(q(dst32)), \(q(src32)), w: false)", "\(name) \(d(dst32)),\(d(src32))",
                size: dst32.rawValue >= 8 || src32.rawValue >= 8 ? 3 : 2) { $0.alu(kind, dst32, src32, w: false) }

            // op reg, [m]
            let m = memOperands[(i * 4) % memOperands.count]
            let mem = m.mem
            add("alu(.\(name), \(q(src)), \(m.text))", "\(name) \(q(src)),QWORD PTR \(m.text)", size: 3 + m.extra) {
                $0.alu(kind, src, mem)
            }
            let m32 = memOperands[(i * 4 + 2) % memOperands.count]
            let mem32 = m32.mem
            add("alu(.\(name), \(q(dst)), \(m32.text), w: false)", "\(name) \(d(dst)),DWORD PTR \(m32.text)") {
                $0.alu(kind, dst, mem32, w: false)
            }

            // op reg, imm: imm8 for -128...127, imm32 otherwise; negative values sign-extend.
            for (value, short) in [(Int32(1), true), (-1, true), (127, true), (-128, true), (128, false), (-129, false),
                                   (0x1234_5678, false), (Int32.min, false)] {
                let r = Reg(rawValue: UInt8((i + Int(value & 15)) % 16))!
                let rex = r.rawValue >= 8
                add("alu(.\(name), \(q(r)), imm: \(value))", "\(name) \(q(r)),\(imm(Int64(value)))", size: short ? 4 : 7) {
                    $0.alu(kind, r, imm: value)
                }
                add("alu(.\(name), \(q(r)), imm: \(value), w: false)", "\(name) \(d(r)),\(imm(Int64(value), bits: 32))",
                    size: (short ? 3 : 6) + (rex ? 1 : 0)) { $0.alu(kind, r, imm: value, w: false) }
            }

            // op qword [m], imm
            for (j, value) in [Int32(1), -128, 0x1000, -0x8000_0000].enumerated() {
                let m = memOperands[(i * 3 + j * 7) % memOperands.count]
                let mem = m.mem
                let short = Int8(exactly: value) != nil
                add("alu(.\(name), \(m.text), imm: \(value))", "\(name) QWORD PTR \(m.text),\(imm(Int64(value)))",
                    size: (short ? 4 : 7) + m.extra) { $0.alu(kind, mem, imm: value) }
            }
        }

        // test reg, reg and test reg8, imm8
        for (a, bReg) in [(Reg.rax, Reg.rcx), (.r8, .rsp), (.rbp, .r15), (.r12, .r13)] {
            add("test(\(q(a)), \(q(bReg)))", "test \(q(a)),\(q(bReg))", size: 3) { $0.test(a, bReg) }
            add("test(\(q(a)), \(q(bReg)), w: false)", "test \(d(a)),\(d(bReg))") { $0.test(a, bReg, w: false) }
        }

        // imul reg, reg; mul/imul rdx:rax; neg; not; div/idiv; cqo; cdq
        for (dst, src) in [(Reg.rax, Reg.rcx), (.r8, .r15), (.rsp, .r12), (.r13, .rbp)] {
            add("imul(\(q(dst)), \(q(src)))", "imul \(q(dst)),\(q(src))", size: 4) { $0.imul(dst, src) }
            add("imul(\(q(dst)), \(q(src)), w: false)", "imul \(d(dst)),\(d(src))") { $0.imul(dst, src, w: false) }
        }
        for r in [Reg.rcx, .rsp, .r11, .r15] {
            add("mulWide(\(q(r)), signed: false)", "mul \(q(r))", size: 3) { $0.mulWide(r, signed: false) }
            add("mulWide(\(q(r)), signed: true)", "imul \(q(r))", size: 3) { $0.mulWide(r, signed: true) }
            add("neg(\(q(r)))", "neg \(q(r))", size: 3) { $0.neg(r) }
            add("neg(\(q(r)), w: false)", "neg \(d(r))") { $0.neg(r, w: false) }
            add("not(\(q(r)))", "not \(q(r))", size: 3) { $0.not(r) }
            add("not(\(q(r)), w: false)", "not \(d(r))") { $0.not(r, w: false) }
            add("divide(\(q(r)), signed: false)", "div \(q(r))", size: 3) { $0.divide(r, signed: false) }
            add("divide(\(q(r)), signed: true)", "idiv \(q(r))", size: 3) { $0.divide(r, signed: true) }
            add("divide(\(q(r)), signed: false, w: false)", "div \(d(r))") { $0.divide(r, signed: false, w: false) }
            add("divide(\(q(r)), signed: true, w: false)", "idiv \(d(r))") { $0.divide(r, signed: true, w: false) }
        }
        add("cqo()", "cqo", size: 2) { $0.cqo() }
        add("cdq()", "cdq", size: 1) { $0.cdq() }
    }

    mutating func shiftsAndBits() {
        for (i, (kind, name)) in shiftKinds.enumerated() {
            for (j, amount) in [UInt8(1), 3, 31, 63].enumerated() {
                let r = Reg(rawValue: UInt8((i * 4 + j * 3) % 16))!
                add("shift(.\(name), \(q(r)), imm: \(amount))", "\(name) \(q(r)),\(imm(Int64(amount)))", size: 4) {
                    $0.shift(kind, r, imm: amount)
                }
                if amount < 32 {
                    add("shift(.\(name), \(q(r)), imm: \(amount), w: false)", "\(name) \(d(r)),\(imm(Int64(amount)))",
                        size: r.rawValue >= 8 ? 4 : 3) { $0.shift(kind, r, imm: amount, w: false) }
                }
            }
            for r in [Reg.rax, .rsp, .r10, .r15] {
                add("shiftByCL(.\(name), \(q(r)))", "\(name) \(q(r)),cl", size: 3) { $0.shiftByCL(kind, r) }
                add("shiftByCL(.\(name), \(q(r)), w: false)", "\(name) \(d(r)),cl") { $0.shiftByCL(kind, r, w: false) }
            }
        }

        for r in Reg.allCases {
            add("bswap(\(q(r)))", "bswap \(q(r))", size: 3) { $0.bswap(r) }
        }

        for (i, (kind, name)) in bitTestKinds.enumerated() {
            for (dst, src) in [(Reg.rax, Reg.rcx), (.r9, .rsp), (.rbp, .r14), (.r12, .r13)] {
                add("bitTest(.\(name), \(q(dst)), \(q(src)))", "\(name) \(q(dst)),\(q(src))", size: 4) { $0.bitTest(kind, dst, src) }
            }
            for (j, bit) in [UInt8(0), 5, 63].enumerated() {
                let r = Reg(rawValue: UInt8((i * 5 + j * 6) % 16))!
                add("bitTest(.\(name), \(q(r)), imm: \(bit))", "\(name) \(q(r)),\(imm(Int64(bit)))", size: 5) {
                    $0.bitTest(kind, r, imm: bit)
                }
            }
            // The immediate is masked to 6 bits, as for the register form.
            add("bitTest(.\(name), rdx, imm: 64)", "\(name) rdx,0x0", size: 5) { $0.bitTest(kind, .rdx, imm: 64) }
        }

        // lzcnt, tzcnt, popcnt: the F3 prefix before REX, 64- and 32-bit.
        for kind in BitCount.allCases {
            for (dst, src) in [(Reg.rax, Reg.rax), (.rcx, .r8), (.r15, .rdx), (.r12, .r13)] {
                add("count(.\(kind), \(q(dst)), \(q(src)))", "\(kind) \(q(dst)),\(q(src))") { $0.count(kind, dst, src) }
                add("count(.\(kind), \(q(dst)), \(q(src)), w: false)", "\(kind) \(d(dst)),\(d(src))") {
                    $0.count(kind, dst, src, w: false)
                }
            }
        }

        // setcc + movzx, for every condition, and on byte registers that need a REX.
        for (i, (cond, cc)) in conditions.enumerated() {
            let r = Reg(rawValue: UInt8(i))!
            let rex = r.rawValue >= 4
            add("set(.\(cc), \(q(r)))", ["set\(cc) \(b(r))", "movzx \(d(r)),\(b(r))"], size: rex ? 8 : 6) { $0.set(cond, r) }
            let src = Reg(rawValue: UInt8(15 - i))!
            add("cmov(.\(cc), \(q(r)), \(q(src)))", "cmov\(cc) \(q(r)),\(q(src))", size: 4) { $0.cmov(cond, r, src) }
            add("cmov(.\(cc), \(q(src)), \(q(r)), w: false)", "cmov\(cc) \(d(src)),\(d(r))",
                size: src.rawValue >= 8 || r.rawValue >= 8 ? 4 : 3) { $0.cmov(cond, src, r, w: false) }
        }
    }

    mutating func controlFlow() {
        // Labels: forward and backward, jmp and every jcc, several jumps to one label.
        add("jmp(label) forward", ["jmp 0x7", "ud2", "ret"]) { asm in
            let l = asm.newLabel()
            asm.jmp(l)
            asm.ud2()
            asm.bind(l)
            asm.ret()
        }
        add("jmp(label) backward", ["ret", "ud2", "jmp 0x0"]) { asm in
            let l = asm.newLabel()
            asm.bind(l)
            asm.ret()
            asm.ud2()
            asm.jmp(l)
        }
        add("jmp(label) to itself", ["jmp 0x0"]) { asm in
            let l = asm.newLabel()
            asm.bind(l)
            asm.jmp(l)
        }
        add("jmp(label) with origin", ["ud2", "jmp 0x40001009", "ud2", "ret"], origin: 0x4000_1000) { asm in
            let l = asm.newLabel()
            asm.ud2()
            asm.jmp(l)
            asm.ud2()
            asm.bind(l)
            asm.ret()
        }
        add("two labels, jumps either way", ["je 0x13", "ret", "jmp 0x0", "jne 0x7", "ret", "ret"]) { asm in
            let top = asm.newLabel()
            let mid = asm.newLabel()
            let end = asm.newLabel()
            asm.bind(top)
            asm.jcc(.e, end)
            asm.ret()
            asm.bind(mid)
            asm.jmp(top)
            asm.jcc(.ne, mid)
            asm.ret()
            asm.bind(end)
            asm.ret()
        }
        for (cond, cc) in conditions {
            add("jcc(.\(cc), label) forward", ["j\(cc) 0x8", "ud2", "ret"]) { asm in
                let l = asm.newLabel()
                asm.jcc(cond, l)
                asm.ud2()
                asm.bind(l)
                asm.ret()
            }
            add("jcc(.\(cc), label) backward", ["ret", "j\(cc) 0x0"]) { asm in
                let l = asm.newLabel()
                asm.bind(l)
                asm.ret()
                asm.jcc(cond, l)
            }
        }

        // Jumps to absolute addresses, with an origin far from 0 and code before the jump.
        let origin: UInt = 0x7fff_0000_1000
        add("jmp(absolute:) forward", ["ud2", "jmp 0x7fff00002000"], size: 7, origin: origin) { asm in
            asm.ud2()
            asm.jmp(absolute: 0x7fff_0000_2000)
        }
        add("jmp(absolute:) backward", ["ret", "jmp 0x7ffeffff0000"], size: 6, origin: origin) { asm in
            asm.ret()
            asm.jmp(absolute: 0x7ffe_ffff_0000)
        }
        add("jmp(absolute:) to origin", ["ret", "jmp 0x7fff00001000"], origin: origin) { asm in
            asm.ret()
            asm.jmp(absolute: origin)
        }
        add("jmp(absolute:) to the next instruction", ["jmp 0x7fff00001005", "ret"], origin: origin) { asm in
            asm.jmp(absolute: origin + 5)
            asm.ret()
        }
        for (i, (cond, cc)) in conditions.enumerated() where i % 3 == 0 || cond == .ne {
            add("jcc(.\(cc), absolute:) forward", ["ret", "j\(cc) 0x7fff10000000"], size: 7, origin: origin) { asm in
                asm.ret()
                asm.jcc(cond, absolute: 0x7fff_1000_0000)
            }
            add("jcc(.\(cc), absolute:) backward", ["ud2", "j\(cc) 0x7fff00000ff0"], size: 8, origin: origin) { asm in
                asm.ud2()
                asm.jcc(cond, absolute: 0x7fff_0000_0ff0)
            }
        }
        add("jmpPatchable()", ["ret", "jmp 0x7fff00001006"], size: 6, origin: origin) { asm in
            asm.ret()
            _ = asm.jmpPatchable()
        }

        // Indirect jumps and calls, push, pop, and the fixed instructions.
        for r in Reg.allCases {
            let rex = r.rawValue >= 8
            add("call(\(q(r)))", "call \(q(r))", size: rex ? 3 : 2) { $0.call(r) }
            add("jmp(\(q(r)))", "jmp \(q(r))", size: rex ? 3 : 2) { $0.jmp(r) }
            add("push(\(q(r)))", "push \(q(r))", size: rex ? 2 : 1) { $0.push(r) }
            add("pop(\(q(r)))", "pop \(q(r))", size: rex ? 2 : 1) { $0.pop(r) }
        }
        add("ret()", "ret", size: 1) { $0.ret() }
        add("mfence()", "mfence", size: 3) { $0.mfence() }
        add("ud2()", "ud2", size: 2) { $0.ud2() }
    }
}
