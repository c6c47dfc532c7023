import Block
import DeviceModel
import Glibc
import SystemSupport
import Testing

/// A temporary file, removed when the test ends.
final class TempFile {
    let path: String
    init(contents: [UInt8]) {
        var template = Array("/tmp/swemu-raw-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        precondition(fd >= 0, "mkstemp failed")
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let owned = FileDescriptor(owning: fd)
        try! owned.writeAll(contents)
    }
    deinit { unlink(path) }

    func contents() -> [UInt8] { try! FileDescriptor.readWholeFile(path, limit: 1 << 30) }
}

func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) }
}

extension BlockBackend {
    func read(at offset: UInt64, count: Int) throws(SystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xcc, count: count)
        try bytes.withUnsafeMutableBytes { b in Result { () throws(SystemError) in try read(at: offset, into: b) } }.get()
        return bytes
    }

    func write(at offset: UInt64, _ bytes: [UInt8]) throws(SystemError) {
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try write(at: offset, from: b) } }.get()
    }
}

/// The error `body` throws, or nil.
func systemError(_ body: () throws(SystemError) -> Void) -> SystemError? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct RawImageTests {
    @Test func readWriteFlushRoundTrip() throws {
        let original = pattern(8192)
        let file = TempFile(contents: original)
        let image = try RawImage(path: file.path)
        #expect(image.size == 8192)
        #expect(image.sectorCount == 16)
        #expect(!image.readOnly)
        #expect(image.label == "raw:\(file.path)")
        #expect(try image.read(at: 512, count: 1024) == Array(original[512..<1536]))
        let data = pattern(1536, seed: 99)
        try image.write(at: 1024, data)
        try image.flush()
        var expected = original
        expected.replaceSubrange(1024..<2560, with: data)
        #expect(file.contents() == expected)
        #expect(try image.read(at: 0, count: 8192) == expected)
        // Byte-granular access is the backend's business; the device checks sectors.
        #expect(try image.read(at: 3, count: 5) == Array(expected[3..<8]))
    }

    @Test func readOnlyImageRefusesWrites() throws {
        let original = pattern(4096)
        let file = TempFile(contents: original)
        let image = try RawImage(path: file.path, readOnly: true)
        #expect(image.readOnly)
        #expect(systemError { () throws(SystemError) in try image.write(at: 0, [1, 2, 3]) }?.code == .readOnly)
        #expect(systemError { () throws(SystemError) in try image.discard(at: 0, count: 512) }?.code == .readOnly)
        #expect(systemError { () throws(SystemError) in try image.writeZeroes(at: 0, count: 512, mayUnmap: true) }?.code == .readOnly)
        try image.flush()
        #expect(try image.read(at: 0, count: 4096) == original)
        #expect(file.contents() == original)
    }

    @Test func readOnlyOpensAFileWithoutWritePermission() throws {
        let file = TempFile(contents: pattern(512))
        chmod(file.path, 0o444)
        // Root may write anyway; the test is that read-only opening needs no write access.
        let image = try RawImage(path: file.path, readOnly: true)
        #expect(try image.read(at: 0, count: 512) == pattern(512))
    }

    @Test(arguments: [
        (UInt64(4096), 1),  // starts at the end
        (UInt64(4000), 200),  // straddles the end
        (UInt64.max, 1),  // offset + count overflows
        (UInt64.max - 10, 512),
    ])
    func outOfRangeIsRefused(offset: UInt64, count: Int) throws {
        let original = pattern(4096)
        let file = TempFile(contents: original)
        let image = try RawImage(path: file.path)
        #expect(systemError { () throws(SystemError) in _ = try image.read(at: offset, count: count) }?.code == .outOfRange)
        #expect(systemError { () throws(SystemError) in try image.write(at: offset, [UInt8](repeating: 1, count: count)) }?.code == .outOfRange)
        #expect(systemError { () throws(SystemError) in try image.discard(at: offset, count: UInt64(count)) }?.code == .outOfRange)
        #expect(systemError { () throws(SystemError) in try image.writeZeroes(at: offset, count: UInt64(count), mayUnmap: false) }?.code == .outOfRange)
        #expect(file.contents() == original)
        // Reading exactly up to the end is fine; an empty read at the end too.
        #expect(try image.read(at: 4095, count: 1) == [original[4095]])
        #expect(try image.read(at: 4096, count: 0) == [])
    }

    @Test func shortFileIsRoundedUpToASector() throws {
        let original = pattern(1000)
        let file = TempFile(contents: original)
        let image = try RawImage(path: file.path)
        #expect(image.fileLength == 1000)
        #expect(image.size == 1024)
        // The tail past the end of the file reads as zeroes.
        #expect(try image.read(at: 512, count: 512) == Array(original[512..<1000]) + [UInt8](repeating: 0, count: 24))
        // A write there extends the file to the whole sector.
        try image.write(at: 1020, [1, 2, 3, 4])
        let contents = file.contents()
        #expect(contents.count == 1024)
        #expect(Array(contents[1020..<1024]) == [1, 2, 3, 4])
        #expect(Array(contents[1000..<1020]).allSatisfy { $0 == 0 })
    }

    @Test func emptyFileHasNoSectors() throws {
        let file = TempFile(contents: [])
        let image = try RawImage(path: file.path)
        #expect(image.size == 0)
        #expect(systemError { () throws(SystemError) in _ = try image.read(at: 0, count: 1) }?.code == .outOfRange)
    }

    @Test(arguments: [false, true])
    func writeZeroesReadsBackZeroes(mayUnmap: Bool) throws {
        let file = TempFile(contents: [UInt8](repeating: 0x5a, count: 16384))
        let image = try RawImage(path: file.path)
        try image.writeZeroes(at: 4096, count: 8192, mayUnmap: mayUnmap)
        let contents = file.contents()
        #expect(contents.count == 16384)
        #expect(Array(contents[4096..<12288]).allSatisfy { $0 == 0 })
        #expect(Array(contents[0..<4096]).allSatisfy { $0 == 0x5a })
        #expect(Array(contents[12288...]).allSatisfy { $0 == 0x5a })
        // Unaligned ranges too (the fallback and fallocate both take bytes).
        try image.writeZeroes(at: 100, count: 10, mayUnmap: mayUnmap)
        #expect(try image.read(at: 98, count: 14) == [0x5a, 0x5a] + [UInt8](repeating: 0, count: 10) + [0x5a, 0x5a])
    }

    @Test func discardKeepsTheSizeAndOtherData() throws {
        let file = TempFile(contents: [UInt8](repeating: 0x77, count: 16384))
        let image = try RawImage(path: file.path)
        try image.discard(at: 4096, count: 4096)
        try image.discard(at: 0, count: 0)
        let contents = file.contents()
        #expect(contents.count == 16384)
        #expect(Array(contents[0..<4096]).allSatisfy { $0 == 0x77 })
        #expect(Array(contents[8192...]).allSatisfy { $0 == 0x77 })
        // Discarded data reads as either its old contents or zeroes (hole punched).
        let discarded = Array(contents[4096..<8192])
        #expect(discarded.allSatisfy { $0 == 0 } || discarded.allSatisfy { $0 == 0x77 })
    }

    @Test func missingFileIsAClearError() {
        let error = systemError { () throws(SystemError) in _ = try RawImage(path: "/nonexistent/swemu-disk.img") }
        #expect(error?.code == .syscall)
        #expect(error?.errno == .noEntry)
        #expect(error?.description.contains("/nonexistent/swemu-disk.img") == true)
    }

    @Test func directoryIsRefused() {
        let error = systemError { () throws(SystemError) in _ = try RawImage(path: "/tmp", readOnly: true) }
        #expect(error?.code == .configuration)
    }

    @Test func concurrentWritersDoNotInterfere() async throws {
        let file = TempFile(contents: [UInt8](repeating: 0, count: 64 * 4096))
        let image = try RawImage(path: file.path)
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<64 {
                group.addTask {
                    try? image.write(at: UInt64(i) * 4096, [UInt8](repeating: UInt8(i), count: 4096))
                }
            }
        }
        let contents = file.contents()
        for i in 0..<64 {
            #expect(Array(contents[i * 4096..<(i + 1) * 4096]).allSatisfy { $0 == UInt8(i) })
        }
    }
}

@Suite struct BlockBackendHelperTests {
    @Test func rangeAndAlignmentChecks() throws {
        let file = TempFile(contents: pattern(2048))
        let image = try RawImage(path: file.path)
        #expect(image.contains(offset: 0, count: 2048))
        #expect(!image.contains(offset: 1, count: 2048))
        #expect(!image.contains(offset: UInt64.max, count: 2))
        #expect(image.isSectorAligned(offset: 512, count: 1024))
        #expect(!image.isSectorAligned(offset: 1, count: 512))
        #expect(!image.isSectorAligned(offset: 0, count: 511))
    }
}
