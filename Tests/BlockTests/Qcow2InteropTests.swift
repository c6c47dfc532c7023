@testable import Block
import DeviceModel
import Foundation
import SystemSupport
import Testing
import TestSupport

/// Runs a program; returns its exit status and output.
@discardableResult
func run(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    try runProgram(arguments)
}

let qemuImgPresent = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img")
let qemuImgMissing = "qemu-img (Debian's qemu-utils) is not installed; run scripts/setup"

/// A scratch directory removed when the test ends.
final class TempDirectory {
    let path: String
    init() {
        var template = Array("/tmp/swemu-qcow2-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// Deterministic pseudo-random bytes (xorshift), with runs of zeroes so that compression and
/// zero detection have something to find.
func noise(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed | 1
    var bytes = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17
        let run = Int(x % 3000) + 1
        let zero = x & 0x30 == 0
        let end = min(count, i + run)
        if !zero { for j in i..<end { x ^= x << 13; x ^= x >> 7; x ^= x << 17; bytes[j] = UInt8(truncatingIfNeeded: x) } }
        i = end
    }
    return bytes
}

func readAll(_ image: any BlockBackend) throws -> [UInt8] {
    try image.read(at: 0, count: Int(image.size))
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func expectQemuCheckClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let check = try run(["qemu-img", "check", path])
    #expect(check.status == 0, "qemu-img check \(path): \(check.out) \(check.err)", sourceLocation: sourceLocation)
}

@Suite(.enabled(if: qemuImgPresent, Comment(rawValue: qemuImgMissing)))
struct Qcow2InteropTests {
    static let clusterSizes: [UInt64] = [512, 4096, 65536, 2 << 20]

    /// qemu-img writes (convert from raw, plain and compressed, v2 and v3); swemu reads the
    /// same bytes; swemu writes; qemu-img checks clean and compares equal.
    @Test(arguments: clusterSizes, ["0.10", "1.1"])
    func qemuMadeImageReadAndWritten(clusterSize: UInt64, compat: String) throws {
        let dir = TempDirectory()
        let size = 3 << 20 + 4096 * 3
        let data = noise(size, seed: clusterSize)
        try writeFile(dir.file("src.raw"), data)
        for compressed in [false, true] {
            let image = dir.file(compressed ? "c.qcow2" : "p.qcow2")
            let convert = try run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2"] + (compressed ? ["-c"] : [])
                + ["-o", "cluster_size=\(clusterSize),compat=\(compat)", dir.file("src.raw"), image])
            #expect(convert.status == 0, "\(convert.err)")
            do {
                let qcow2 = try Qcow2Image(path: image, readOnly: true)
                #expect(qcow2.size == UInt64(size))
                #expect(try readAll(qcow2) == data)
            }
            // Writes across cluster boundaries, over compressed, zero and unallocated clusters.
            var expected = data
            let qcow2 = try Qcow2Image(path: image, readOnly: false)
            var x: UInt64 = clusterSize
            for _ in 0..<40 {
                x = x &* 6364136223846793005 &+ 1442695040888963407
                let offset = Int(x >> 33) % size
                let count = min(size - offset, Int(x >> 20 & 0xffff) + 1)
                let bytes = noise(count, seed: x)
                try qcow2.write(at: UInt64(offset), bytes)
                expected.replaceSubrange(offset..<(offset + count), with: bytes)
            }
            try qcow2.writeZeroes(at: 1 << 20, count: 256 << 10, mayUnmap: true)
            expected.replaceSubrange((1 << 20)..<((1 << 20) + (256 << 10)), with: [UInt8](repeating: 0, count: 256 << 10))
            try qcow2.discard(at: 2 << 20, count: 128 << 10)  // advisory: zeroes or old data
            expected.replaceSubrange((2 << 20)..<((2 << 20) + (128 << 10)), with: try qcow2.read(at: 2 << 20, count: 128 << 10))
            #expect(try readAll(qcow2) == expected)
            try qcow2.close()
            try expectQemuCheckClean(image)
            try writeFile(dir.file("expected.raw"), expected)
            let compare = try run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, dir.file("expected.raw")])
            #expect(compare.status == 0, "qemu-img compare: \(compare.out) \(compare.err)")
        }
    }

    /// swemu creates (every cluster size, v2 and v3, each preallocation); qemu-img checks
    /// clean, writes with qemu-io, and swemu reads back what it wrote.
    @Test(arguments: clusterSizes, [UInt32(2), 3])
    func swemuMadeImageCheckedAndReadByQemu(clusterSize: UInt64, version: UInt32) throws {
        let dir = TempDirectory()
        for preallocation in [Qcow2CreateOptions.Preallocation.off, .metadata, .full] {
            let image = dir.file("s-\(preallocation).qcow2")
            var options = Qcow2CreateOptions()
            options.clusterSize = clusterSize
            options.version = version
            options.preallocation = preallocation
            try Qcow2Image.create(path: image, size: 5 << 20, options: options)
            try expectQemuCheckClean(image)
            let data = noise(5 << 20, seed: clusterSize + UInt64(version))
            do {
                let qcow2 = try Qcow2Image(path: image, readOnly: false)
                #expect(try readAll(qcow2) == [UInt8](repeating: 0, count: 5 << 20))
                try qcow2.write(at: 0, data)
                try qcow2.close()
            }
            try expectQemuCheckClean(image)
            try writeFile(dir.file("expected.raw"), data)
            let compare = try run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, dir.file("expected.raw")])
            #expect(compare.status == 0, "qemu-img compare: \(compare.out) \(compare.err)")
        }
    }
}
