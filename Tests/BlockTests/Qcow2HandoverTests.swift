@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing

/// A qcow2 image handed from one process to another in a live migration (QEMU's
/// BDRV_O_INACTIVE): the destination opens it inactive while the source writes, the source
/// flushes and lets go, the destination reads the metadata afresh and carries on. Two
/// `Qcow2Image` objects on one file stand for the two processes.
@Suite(.enabled(if: qemuImgPresent, Comment(rawValue: qemuImgMissing)))
struct Qcow2HandoverTests {
    @Test func inactiveImageWritesNothingAndTakesTheSourcesMetadataWhenActivated() throws {
        let dir = TempDirectory()
        let path = dir.file("disk.qcow2")
        try Qcow2Image.create(path: path, size: 16 << 20, options: Qcow2CreateOptions())
        let source = try Qcow2Image(path: path, readOnly: false)
        try source.write(at: 0, [UInt8](repeating: 1, count: 65536))
        let before = try Data(contentsOf: URL(fileURLWithPath: path))

        // The destination opens it while the source runs: nothing changes on disk.
        let destination = try Qcow2Image(path: path, readOnly: false, inactive: true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before, "an inactive open writes nothing")
        #expect(throws: SystemError.self) { try destination.write(at: 0, [UInt8](repeating: 9, count: 512)) }

        // The source allocates more (new L2 tables, refcounts), then hands over.
        try source.write(at: 8 << 20, [UInt8](repeating: 2, count: 65536))
        try source.write(at: 12 << 20, [UInt8](repeating: 3, count: 4096))
        try source.inactivate()
        #expect(throws: SystemError.self) { try source.write(at: 0, [UInt8](repeating: 9, count: 512)) }

        // The destination sees all of it, allocates without clobbering it, and owns the file.
        try destination.activate()
        var buffer = [UInt8](repeating: 0, count: 4096)
        try buffer.withUnsafeMutableBytes { try destination.read(at: 12 << 20, into: $0) }
        #expect(buffer == [UInt8](repeating: 3, count: 4096))
        try destination.write(at: 4 << 20, [UInt8](repeating: 4, count: 65536))
        try buffer.withUnsafeMutableBytes { try destination.read(at: 8 << 20, into: $0) }
        #expect(buffer == [UInt8](repeating: 2, count: 4096), "the source's cluster is intact")
        // The source's end writes nothing (not its clean header over the destination's).
        try source.close()
        try destination.close()
        try Qcow2VMStateTests.expectClean(path)
        let image = try Qcow2Image(path: path, readOnly: true)
        for (offset, value) in [(0, UInt8(1)), (4 << 20, 4), (8 << 20, 2), (12 << 20, 3)] {
            try buffer.withUnsafeMutableBytes { try image.read(at: UInt64(offset), into: $0) }
            #expect(buffer.allSatisfy { $0 == value }, "offset \(offset)")
        }
    }
}
