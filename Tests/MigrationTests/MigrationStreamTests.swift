import Foundation
import GuestMemory
import Migration
import SystemSupport
import Testing

/// The stream format (DESIGN.md §5): round trips, and every kind of bad stream refused with
/// what was wrong.
@Suite struct MigrationStreamTests {
    static let description = MachineDescription(
        machine: "riscv64 virt", accelerator: "tcg", cpus: 2,
        ram: [.init(base: 0x8000_0000, size: 64 << 20)], components: ["clock", "cpu0", "cpu1"])

    /// A stream of one data page, one zero page, a pass end, two components and the end.
    static func sample() throws -> [UInt8] {
        final class Sink { var bytes: [UInt8] = [] }
        let sink = Sink()
        let writer = MigrationStreamWriter { b in sink.bytes += b }
        try writer.writeHeader(description)
        var page = [UInt8](repeating: 0, count: 4096)
        for i in 0..<4096 { page[i] = UInt8(truncatingIfNeeded: i * 7 + 1) }
        _ = try page.withUnsafeBytes { b in try writer.writePage(at: GuestAddress(0x8000_1000), bytes: b) }
        let zero = [UInt8](repeating: 0, count: 4096)
        _ = try zero.withUnsafeBytes { b in try writer.writePage(at: GuestAddress(0x8000_2000), bytes: b) }
        try writer.writePassEnd(1)
        try writer.writeComponent(SavedComponent(name: "clock", version: 1, payload: Array("{\"ns\":5}".utf8)))
        try writer.writeComponent(SavedComponent(name: "cpu0", version: 3, payload: [1, 2, 3]))
        try writer.writeEnd()
        try writer.flush()
        #expect(writer.bytesWritten == UInt64(sink.bytes.count))
        return sink.bytes
    }

    /// Reads a whole stream, returning its records in a printable form.
    static func read(_ bytes: [UInt8], chunk: Int = 1 << 20) throws -> (MachineDescription, [String]) {
        final class Source { var position = 0 }
        let source = Source()
        let reader = MigrationStreamReader { b in
            let n = min(b.count, chunk, bytes.count - source.position)
            b.copyBytes(from: bytes[source.position..<(source.position + n)])
            source.position += n
            return n
        }
        let header = try reader.readHeader()
        var records: [String] = []
        loop: while true {
            switch try reader.next() {
            case let .page(address, zero, data):
                records.append("page \(address.rawValue) \(zero ? "zero" : "sum \(data.reduce(0) { $0 &+ Int($1) })")")
            case .passEnd(let pass): records.append("pass \(pass)")
            case .component(let c): records.append("\(c.name) v\(c.version) \(c.payload)")
            case .end:
                records.append("end")
                break loop
            }
        }
        return (header, records)
    }

    @Test func roundTrip() throws {
        let bytes = try Self.sample()
        let expectedSum = (0..<4096).reduce(0) { $0 + Int(UInt8(truncatingIfNeeded: $1 * 7 + 1)) }
        for chunk in [1, 7, 4096, 1 << 20] {
            let (header, records) = try Self.read(bytes, chunk: chunk)
            #expect(header == Self.description)
            #expect(records == ["page \(0x8000_1000) sum \(expectedSum)", "page \(0x8000_2000) zero", "pass 1",
                                "clock v1 \(Array("{\"ns\":5}".utf8))", "cpu0 v3 [1, 2, 3]", "end"])
        }
    }

    /// Every truncation is refused as one ("ends early"), never read as a shorter valid stream.
    @Test func truncatedStreamsAreRefused() throws {
        let bytes = try Self.sample()
        for length in Array(0..<80) + [bytes.count / 2, bytes.count - 5, bytes.count - 1] {
            let error = #expect(throws: SystemError.self) { try Self.read(Array(bytes.prefix(length))) }
            #expect(error?.message.contains("ends early") == true || error?.message.contains("not a swemu") == true,
                    "length \(length): \(error?.message ?? "")")
        }
    }

    /// A flipped bit anywhere is refused: by the checksum, or before it by a field's check.
    @Test func everyFlippedBitIsRefused() throws {
        let bytes = try Self.sample()
        var generator = SystemRandomNumberGenerator()
        var positions = Array(0..<64) + Array(bytes.count - 40..<bytes.count)
        for _ in 0..<300 { positions.append(Int.random(in: 0..<bytes.count, using: &generator)) }
        for position in positions {
            var corrupt = bytes
            corrupt[position] ^= 1 << UInt8.random(in: 0..<8, using: &generator)
            #expect(throws: SystemError.self, "flip at byte \(position)") { try Self.read(corrupt) }
        }
    }

    @Test func foreignStreamsAreRefused() throws {
        let qemu = Array("QEVM".utf8) + [0, 0, 0, 3] + [UInt8](repeating: 0, count: 64)
        let error = #expect(throws: SystemError.self) { try Self.read(qemu) }
        #expect(error?.message.contains("QEMU migration stream") == true)
        let junk = Array("hello, world, this is no stream".utf8)
        let other = #expect(throws: SystemError.self) { try Self.read(junk) }
        #expect(other?.message.contains("not a swemu migration stream") == true)
        var newer = try Self.sample()
        newer[8] = 2  // format version 2
        let version = #expect(throws: SystemError.self) { try Self.read(newer) }
        #expect(version?.message.contains("format version 2 is not supported") == true)
    }

    @Test func differencesNameWhatDiffers() {
        var other = Self.description
        #expect(Self.description.differences(from: other).isEmpty)
        other.cpus = 1
        other.ram = [.init(base: 0x8000_0000, size: 128 << 20)]
        other.components = ["clock", "cpu0"]
        let differences = Self.description.differences(from: other)
        #expect(differences == [
            "CPUs: the stream has 2, this machine 1 (-smp)",
            "RAM at 0x80000000: the stream has 64 MiB, this machine 128 MiB (-m)",
            "devices: the stream has cpu1 which this machine lacks",
        ])
    }

    struct Example: Codable, Equatable {
        var a: UInt64
        var b: [Bool]
    }

    @Test func componentStatesDecodeOrNameTheProblem() throws {
        let saved = try SavedComponent(name: "dev", version: 2, state: Example(a: 7, b: [true]))
        #expect(try saved.decode(Example.self, version: 2) == Example(a: 7, b: [true]))
        let wrongVersion = #expect(throws: SystemError.self) { try saved.decode(Example.self, version: 3) }
        #expect(wrongVersion?.message == "dev: state version 2 is not supported (this build reads version 3)")
        let garbage = SavedComponent(name: "dev", version: 2, payload: Array("{\"a\":\"x\"}".utf8))
        let malformed = #expect(throws: SystemError.self) { try garbage.decode(Example.self, version: 2) }
        #expect(malformed?.message.hasPrefix("dev: the saved state is malformed") == true)
    }
}
