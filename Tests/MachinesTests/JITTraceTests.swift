import Foundation
import Testing

/// The JIT end to end through the release binary (as users run it): its traces — `-d in_asm`
/// shows each block's guest code once, when translated; `-d out_asm` the host code emitted
/// for it, disassembled by Capstone; `-d nochain` turns chaining off — and its code buffer,
/// which is never writable and executable at once.
@Suite(.serialized) struct JITTraceTests {
    static var missing: String? {
        if let reason = GuestProgram.compilerMissingReason { return reason }
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (swift build -c release; scripts/test builds it)"
        }
        return nil
    }

    static func run(_ items: String) throws -> (status: Int32, log: String) {
        let elf = try GuestProgram.build("integer")
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-jit-trace-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let result = try GuestProgram.run(LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic",
                                                                  "-accel", "tcg,jit=on", "-d", items, "-D", log.path, "-kernel", elf])
        return (result.status, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func inAsmShowsEachBlockOnceAndOutAsmItsHostCode() throws {
        let (status, log) = try Self.run("in_asm,out_asm")
        #expect(status == 0, "\(log.suffix(2000))")
        // The first block is the boot ROM's, at 0x1000: shown once although it runs once per
        // hart start, with QEMU's header, and followed by its host code.
        #expect(log.hasPrefix("----------------\nIN: \nPriv: 3; Virt: 0\n0x0000000000001000:  00000297          auipc"), "\(log.prefix(500))")
        let blocks = log.components(separatedBy: "\nIN: \n").count - 1
        #expect(blocks > 5)
        #expect(log.components(separatedBy: "0x0000000000001000:").count - 1 == 1, "the boot ROM block was translated more than once")
        #expect(log.components(separatedBy: "OUT: [guest pc 0x").count - 1 == blocks)
        // Every block starts with the budget check on r8 (`Translator.budget`), and reads the
        // hart state through r15, in Capstone's syntax.
        #expect(log.contains(":  test r8, r8\n"), "\(log.prefix(2000))")
        #expect(log.contains(" qword ptr [r15 "), "\(log.prefix(2000))")
        #expect(!log.contains("not decoded") && !log.contains("capstone:"), "\(log.prefix(2000))")
        // Returns and indirect jumps look their target up in generated code.
        #expect(log.contains(":  jmp rsi"), "\(log.prefix(2000))")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func nochainStillRunsTheProgram() throws {
        let (status, log) = try Self.run("nochain,out_asm")
        #expect(status == 0)
        // Without chaining no exit looks its target up in generated code.
        #expect(log.contains("OUT: [guest pc 0x"))
        #expect(!log.contains(":  jmp rsi"), "\(log.prefix(2000))")
    }

    /// `-perfmap` (QEMU 8.1's option): every translated block and the JIT's runtime are named
    /// in /tmp/perf-<pid>.map, in perf's "start size name" format (hexadecimal), which
    /// scripts/perf-jit-report reads to attribute a profile's samples to guest code.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func perfmapNamesEveryBlock() throws {
        let elf = try GuestProgram.build("integer")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic", "-accel", "tcg,jit=on", "-perfmap",
                           "-kernel", elf]
        swemu.standardInput = FileHandle.nullDevice
        swemu.standardOutput = FileHandle.nullDevice
        swemu.standardError = FileHandle.nullDevice
        try swemu.run()
        swemu.waitUntilExit()
        let path = "/tmp/perf-\(swemu.processIdentifier).map"
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(swemu.terminationStatus == 0)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        #expect(lines.count > 5)
        for line in lines {
            let fields = line.split(separator: " ")
            #expect(fields.count == 3 && UInt(fields[0], radix: 16) != nil && (UInt(fields[1], radix: 16) ?? 0) > 0, "\(line)")
        }
        #expect(lines.contains { $0.hasSuffix(" jit_runtime") })
        // The boot ROM's block at 0x1000 (its first instruction count varies with the ROM).
        #expect(lines.contains { $0.contains(" guest_0x1000_") }, "\(lines.prefix(5))")
    }

    /// W^X: while the JIT runs a guest, no mapping of the process is writable and executable
    /// (the code buffer is one memfd mapped twice, read-write and read-execute).
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func noMappingIsWritableAndExecutable() throws {
        let elf = try GuestProgram.build("ticker")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-bios", "none", "-m", "16M", "-display", "none", "-serial", "null", "-monitor", "none",
                           "-accel", "tcg,jit=on", "-kernel", elf]
        swemu.standardInput = FileHandle.nullDevice
        swemu.standardOutput = FileHandle.nullDevice
        try swemu.run()
        defer { if swemu.isRunning { swemu.terminate() } }
        // Look a few times while the guest runs (and the JIT translates).
        var looked = 0
        var sawCodeBuffer = false
        for _ in 0..<10 where swemu.isRunning {
            usleep(50_000)
            guard let maps = try? String(contentsOfFile: "/proc/\(swemu.processIdentifier)/maps", encoding: .utf8) else { continue }
            looked += 1
            for line in maps.split(separator: "\n") {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count >= 2 else { continue }
                #expect(!(fields[1].contains("w") && fields[1].contains("x")), "writable and executable: \(line)")
                if line.contains("swemu-jit") && fields[1].hasPrefix("r-x") { sawCodeBuffer = true }
            }
        }
        #expect(looked > 0, "could not read the process's mappings")
        #expect(sawCodeBuffer, "no read-execute mapping of the JIT's code buffer")
    }
}
