import Foundation
import SystemSupport
import Testing
@testable import Loader

@Suite struct GzipTests {
    func gzip(_ data: [UInt8]) throws -> [UInt8] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-gzip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("data")
        try Data(data).write(to: file)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-9", file.path]
        try process.run()
        process.waitUntilExit()
        return [UInt8](try Data(contentsOf: dir.appendingPathComponent("data.gz")))
    }

    @Test func roundTripsWhatGzipMade() throws {
        let original = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 31 / 7) }
        let compressed = try gzip(original)
        #expect(Gzip.isGzip(compressed))
        #expect(!Gzip.isGzip(original))
        #expect(try Gzip.decompress(compressed, name: "test") == original)
    }

    @Test func badInputIsAClearError() throws {
        let compressed = try gzip([UInt8](repeating: 7, count: 100_000))
        #expect(throws: SystemError.self) { try Gzip.decompress(Array(compressed.prefix(compressed.count / 2)), name: "half") }
        var corrupt = compressed
        corrupt[20] ^= 0xff
        #expect(throws: SystemError.self) { try Gzip.decompress(corrupt, name: "corrupt") }
        #expect(throws: SystemError.self) { try Gzip.decompress([0x1f, 0x8b], name: "header only") }
        // A small input that inflates past the limit is refused, not allocated.
        do {
            _ = try Gzip.decompress(compressed, name: "bomb", limit: 1000)
            Issue.record("limit not enforced")
        } catch {
            #expect(error.message.contains("more than"))
        }
    }
}
