import DeviceModel
import Foundation
import SystemSupport
import Testing
@testable import Block

/// `-snapshot`: the guest sees its writes, the image never changes until commit.
@Suite struct SnapshotOverlayTests {
    func makeImage(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-overlay-\(UUID().uuidString).img").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    func read(_ disk: any BlockBackend, _ offset: UInt64, _ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try disk.read(at: offset, into: b) } }.get()
        return out
    }

    func write(_ disk: any BlockBackend, _ offset: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try disk.write(at: offset, from: b) } }.get()
    }

    @Test func writesStayInTheOverlayUntilCommit() throws {
        let original = (0..<(3 * 4096)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let path = try makeImage(original)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let disk = try SnapshotOverlay(path: path)
        #expect(disk.size == UInt64(original.count))
        #expect(!disk.readOnly)
        // A write across the first cluster boundary, partly covering two clusters.
        try write(disk, 4096 - 512, [UInt8](repeating: 0xaa, count: 1024))
        var expected = original
        expected.replaceSubrange((4096 - 512)..<(4096 + 512), with: [UInt8](repeating: 0xaa, count: 1024))
        #expect(try read(disk, 0, original.count) == expected, "the guest sees its write and the copied-up rest")
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == original, "the image is untouched")
        try disk.writeZeroes(at: 2 * 4096, count: 4096, mayUnmap: true)
        expected.replaceSubrange((2 * 4096)..<(3 * 4096), with: [UInt8](repeating: 0, count: 4096))
        #expect(try read(disk, 0, original.count) == expected)
        #expect(try disk.commit() == 3)
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) == expected, "commit wrote the changes back")
    }

    @Test func readOnlySnapshotRefusesWritesAndRangesAreChecked() throws {
        let path = try makeImage([UInt8](repeating: 1, count: 8192))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let disk = try SnapshotOverlay(path: path, readOnly: true)
        #expect(throws: SystemError.self) { try write(disk, 0, [0]) }
        let writable = try SnapshotOverlay(path: path)
        #expect(throws: SystemError.self) { try write(writable, 8190, [0, 0, 0, 0]) }
        #expect(throws: SystemError.self) { try read(writable, 8192, 1) }
    }

    @Test func theImageIsOpenedReadOnly() throws {
        let path = try makeImage([UInt8](repeating: 0, count: 4096))
        defer { try? FileManager.default.removeItem(atPath: path) }
        chmod(path, 0o444)
        // Root ignores file modes, so this only proves opening needs no write access when not root.
        #expect(throws: Never.self) { _ = try SnapshotOverlay(path: path) }
    }
}
