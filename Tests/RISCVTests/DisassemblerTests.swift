import Foundation
import Testing
@testable import RISCV

/// The disassembler against Debian's `riscv64-unknown-elf-objdump -d` on every instruction of
/// the guest programs in Tests/GuestPrograms (built by MachinesTests' builder or here).
@Suite struct DisassemblerTests {
    static let objdump = "/usr/bin/riscv64-unknown-elf-objdump"
    static let gcc = "/usr/bin/riscv64-unknown-elf-gcc"
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("GuestPrograms/riscv")

    static var toolsPresent: Bool {
        FileManager.default.isExecutableFile(atPath: objdump) && FileManager.default.isExecutableFile(atPath: gcc)
    }

    @Test(.enabled(if: toolsPresent, "needs Debian's binutils/gcc-riscv64-unknown-elf (scripts/setup)"))
    func matchesObjdump() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.sources.path).filter { $0.hasSuffix(".S") }.sorted()
        #expect(!files.isEmpty)
        var compared = 0
        var mismatches: [String] = []
        for file in files {
            let elf = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-disasm-\(getpid())-\(file).elf").path
            defer { try? FileManager.default.removeItem(atPath: elf) }
            let build = try run(Self.gcc, ["-march=rv64gc_zba_zbb_zbs", "-mabi=lp64d", "-nostdlib", "-nostartfiles",
                                           "-T", Self.sources.appendingPathComponent("link.ld").path, "-I", Self.sources.path,
                                           "-o", elf, Self.sources.appendingPathComponent(file).path])
            try #require(build.status == 0, "\(file): \(build.output)")
            let dump = try run(Self.objdump, ["-d", "-M", "numeric=off", elf])
            for line in dump.output.split(separator: "\n") {
                // "    80000004:\t41028293          \tadd\tt0,t0,1040 # 80000410 <trap_entry>"
                let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
                guard fields.count == 3, fields[0].hasSuffix(":"),
                      let pc = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16),
                      let bits = UInt32(fields[1].trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
                var expected = String(fields[2])
                if let hash = expected.range(of: " #") { expected = String(expected[..<hash.lowerBound]) }
                if let label = expected.range(of: " <") { expected = String(expected[..<label.lowerBound]) }
                expected = expected.trimmingCharacters(in: .whitespaces)
                let hexText = fields[1].trimmingCharacters(in: .whitespaces)
                let decoded = hexText.count == 4 ? Decoder.shared.decodeCompressed(UInt16(bits)) : Decoder.shared.decode32(bits)
                // objdump shows undecodable words as .word/.insn/unimp: skip data in text.
                if expected.hasPrefix(".") || expected.hasPrefix("unimp") { continue }
                let ours = Disassembler.text(decoded, pc: pc)
                compared += 1
                if ours != expected { mismatches.append("\(file) \(String(pc, radix: 16)) \(hexText): objdump '\(expected)' swemu '\(ours)'") }
            }
        }
        #expect(compared > 500)
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(compared) differ:\n\(mismatches.prefix(40).joined(separator: "\n"))")
    }

    func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
