import Foundation
import Machines
import Testing

/// Device DMA over code that has already run (Tests/GuestPrograms/riscv/dma/codedma.S): a
/// virtio-blk read overwrites a page the hart has executed (translated, under the JIT), and
/// after FENCE.I a call into it must run the code from the disk. No hart stores to the page,
/// so only the device's writes through its writable descriptors can tell the code tracking
/// that the page changed. The program lives in a subdirectory, out of BareMetalTests' reach
/// (they run without a disk), and is built here with the same compiler flags.
@Suite(.serialized) struct CodeDMATests {
    static let engines: [RISCVBoard.EngineKind] = [.interpreter, .jit(codeBufferSize: RISCVBoard.EngineKind.defaultCodeBufferSize)]

    /// Sectors 0-7, read over the program's code_a page:
    /// `li a0, 0; li t0, 10; 1: addi a0, a0, 7; addi t0, t0, -1; bnez t0, 1b; ret` (returns 70).
    static let newCodeA: [UInt32] = [0x0000_0513, 0x00a0_0293, 0x0075_0513, 0xfff2_8293, 0xfe02_9ce3, 0x0000_8067]
    /// Sector 8, read over code_b (offset 0x200 of its page): `addi a0, zero, 0x333; ret`.
    static let newCodeB: [UInt32] = [0x3330_0513, 0x0000_8067]

    static var qemuMissing: String? {
        if let missing = GuestProgram.compilerMissingReason { return missing }
        return FileManager.default.isExecutableFile(atPath: GuestProgram.qemu)
            ? nil : "needs qemu-system-riscv64 (Debian's qemu-system-misc)"
    }

    static func program() throws -> String {
        try FileManager.default.createDirectory(at: GuestProgram.outputDirectory.appendingPathComponent("dma"),
                                                withIntermediateDirectories: true)
        return try GuestProgram.build("dma/codedma")
    }

    /// A 64 KiB raw disk holding the new code (little-endian words) in sectors 0 and 8, in a
    /// directory of its own; the caller removes the directory.
    static func disk() throws -> URL {
        var bytes = [UInt8](repeating: 0, count: 64 << 10)
        func put(_ words: [UInt32], at offset: Int) {
            for (i, word) in words.enumerated() {
                for b in 0..<4 { bytes[offset + i * 4 + b] = UInt8(truncatingIfNeeded: word >> (8 * UInt32(b))) }
            }
        }
        put(newCodeA, at: 0)
        put(newCodeB, at: 8 * 512)
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("swemu-codedma-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = directory.appendingPathComponent("code.raw")
        try Data(bytes).write(to: url)
        return url
    }

    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil, "needs Debian's gcc-riscv64-unknown-elf (scripts/setup)"),
          arguments: engines)
    func dmaOverExecutedCodeRunsTheNewCode(engine: RISCVBoard.EngineKind) throws {
        let elf = try Self.program()
        let disk = try Self.disk()
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let console = CaptureBackend()
        var config = RISCVBoard.Configuration(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: console, engine: engine)
        config.virtio = [.block(path: disk.path, format: "raw", readOnly: true, snapshot: false, cache: .writeback, serial: "")]
        let board = try RISCVBoard(config)
        defer { board.close() }
        let exit = try board.run()
        #expect(exit == .powerOff(exitCode: 0), "codedma (\(engine)): check \(exit) failed; console: \(console.text)")
    }

    /// The driver is right: QEMU, with its virtio-mmio transports in version 2 (not legacy) and
    /// the disk on the first one, runs the program to exit 0 too.
    @Test(.enabled(if: qemuMissing == nil, "\(qemuMissing ?? "")"))
    func qemuAgrees() throws {
        let elf = try Self.program()
        let disk = try Self.disk()
        defer { try? FileManager.default.removeItem(at: disk.deletingLastPathComponent()) }
        let qemu = try GuestProgram.run(GuestProgram.qemu, ["-M", "virt", "-bios", "none", "-kernel", elf, "-nographic",
                                                            "-display", "none", "-monitor", "none", "-m", "16M",
                                                            "-global", "virtio-mmio.force-legacy=false",
                                                            "-drive", "file=\(disk.path),format=raw,if=none,id=code,readonly=on",
                                                            "-device", "virtio-blk-device,drive=code"])
        #expect(qemu.status == 0, "QEMU: exit \(qemu.status): \(qemu.output)")
    }
}
