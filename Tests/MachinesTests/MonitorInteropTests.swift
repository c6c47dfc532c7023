import Foundation
import Testing
import TestSupport

/// One scripted QMP/HMP session (monitor_interop.py, QEMU's own `qemu.qmp` client) run
/// against swemu and against Debian's `qemu-system-riscv64 -M virt` with the same options,
/// every reply and event compared: identical unless the script's ALLOWED table lists the step,
/// with the reason and the weaker check that still holds there (version numbers, the commands
/// and machines swemu does not have, the devices it does not model, QEMU's H-extension CSRs,
/// the disassembler's syntax).
@Suite(.serialized, .oneLinuxBootAtATime) struct MonitorInteropTests {
    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: GuestProgram.qemu) {
            return "needs \(GuestProgram.qemu) (Debian's qemu-system-misc; scripts/setup installs it)"
        }
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (scripts/test builds it)"
        }
        return Python.missing("qemu.qmp")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func sameSessionSameReplies() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-interop-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // The guest: `1: wfi; j 1b` at the start of RAM, a raw image both load at 0x80000000.
        let kernel = dir.appendingPathComponent("wfi-loop.bin")
        try Data([0x73, 0x00, 0x50, 0x10, 0x6f, 0xf0, 0xdf, 0xff]).write(to: kernel)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("monitor_interop.py").path
        let run = try GuestProgram.run(Python.executable, [script, LinuxBootTests.binary, GuestProgram.qemu, kernel.path, dir.path],
                                       timeout: 300)
        #expect(run.status == 0, "\(run.output)")
        #expect(!run.output.contains("FAIL"), "\(run.output)")
        #expect(run.output.contains(" steps compared, 0 failed"), "\(run.output)")
    }
}
