import Foundation
import SystemSupport
import Testing
@testable import Machines

/// Files the user names are untrusted: each mistake is one clear error, never a hang.
@Suite struct BoardInputTests {
    @Test func aKernelLargerThanRAMIsRefusedNotReadForever() {
        do {
            _ = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: "/dev/zero", serial: nil))
            Issue.record("/dev/zero was accepted as a kernel")
        } catch {
            #expect(error.message.contains("larger than 16777216 bytes"))
        }
    }

    @Test func aMalformedDeviceTreeIsRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-dtb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let kernel = dir.appendingPathComponent("kernel.bin")
        let dtb = dir.appendingPathComponent("bad.dtb")
        try Data(repeating: 0, count: 64).write(to: kernel)
        try Data([0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0xff, 0xff]).write(to: dtb)  // right magic, truncated
        do {
            _ = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: kernel.path, dtb: dtb.path, serial: nil))
            Issue.record("a truncated device tree was accepted")
        } catch {
            #expect(error.code == .badInput)
            #expect(error.message.hasPrefix("-dtb \(dtb.path):"))
        }
    }
}
