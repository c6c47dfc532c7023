import Foundation
import Testing
import TestSupport

/// The machine's power button in Linux: `-device virtio-keyboard-device` and QMP
/// `system_powerdown` (what `virsh shutdown` sends) end Debian's kernel cleanly, through the
/// guest's own input stack (virtio_input, evdev, busybox acpid); powerbutton_machine.py drives
/// it with QEMU's qemu.qmp client.
@Suite(.serialized, .oneLinuxBootAtATime) struct PowerButtonTests {
    static var missing: String? {
        if let reason = LinuxBootTests.missing { return reason }
        let modules = (try? String(contentsOfFile: LinuxBootTests.guests + "/modules.txt", encoding: .utf8)) ?? ""
        if !modules.contains("virtio_input") || !modules.contains("evdev") {
            return "needs an initramfs with virtio_input and evdev in \(LinuxBootTests.guests) (rerun scripts/guests)"
        }
        return Python.missing("qemu.qmp")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func systemPowerdownShutsLinuxDown() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-powerbutton-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let driver = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("powerbutton_machine.py").path
        let result = try GuestProgram.run(Python.executable, [driver, LinuxBootTests.binary, LinuxBootTests.kernel, LinuxBootTests.initrd,
                                                              work.path], timeout: 600)
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }
}
