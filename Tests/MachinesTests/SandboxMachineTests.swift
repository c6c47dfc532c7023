import Foundation
import Testing
import TestSupport

/// `-sandbox`, `-chroot` and `-runas` with Debian's kernel (sandbox_machine.py says what is
/// checked): every device under libvirt's sandbox line, a reboot under the filter, a confined
/// process that still finds its disk after the reboot, and monitor commands that act on the
/// host only once -runas has dropped root.
@Suite(.serialized, .oneLinuxBootAtATime) struct SandboxMachineTests {
    static var missing: String? {
        if let reason = LinuxBootTests.missing ?? GuestProgram.compilerMissingReason { return reason }
        if getuid() != 0 { return "needs root: -runas and -chroot change the process's user and root" }
        if getpwnam("nobody") == nil { return "needs the user nobody for -runas" }
        return Python.missing("qemu.qmp")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func linuxRunsSandboxedAndConfined() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-sandbox-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let raw = try LinuxBootTests.makeDisk([:])
        defer { try? FileManager.default.removeItem(at: raw.deletingLastPathComponent()) }
        let qcow2 = work.appendingPathComponent("disk.qcow2").path
        let converted = try GuestProgram.run("/usr/bin/qemu-img", ["convert", "-O", "qcow2", raw.path, qcow2])
        try #require(converted.status == 0, "qemu-img convert: \(converted.output)")
        let program = try GuestProgram.build("ticker")
        let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("sandbox_machine.py").path
        let result = try GuestProgram.run(Python.executable, [driver, LinuxBootTests.binary, LinuxBootTests.kernel, LinuxBootTests.initrd,
                                                              qcow2, raw.path, work.path, program], timeout: 900)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }
}
