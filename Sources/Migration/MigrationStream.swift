import CZlib
import Foundation
import GuestMemory
import SystemSupport

/// The one stream format of snapshots and live migration (DESIGN.md §5), version 1:
///
/// ```
/// header   "SWEMUVM\n" · u32 format version · u32 length · MachineDescription (JSON)
/// records  u8 type, then by type (integers little-endian):
///   1 page       u64 guest-physical address · u8 0 (zero page) or 1 (4096 bytes follow)
///   2 pass end   u32 pass number · u32 CRC-32 of every byte before this field
///   3 component  u16 name length · name · u32 version · u32 length · payload
///   4 end        u32 CRC-32 of every byte before this field
/// ```
///
/// The stream is untrusted input: every length is bounded, a page must be a RAM page of the
/// machine, each pass and the end carry a CRC of everything before them, and anything else
/// (another magic, a newer version, an unknown record) is refused with what was wrong and at
/// which byte.
public enum MigrationStream {
    public static let magic = Array("SWEMUVM\n".utf8)
    public static let formatVersion: UInt32 = 1
    public static let pageSize = 4096
    static let maxHeader = 1 << 20
    static let maxComponent = 64 << 20
    static let maxName = 256

    enum RecordType: UInt8 {
        case page = 1, passEnd = 2, component = 3, end = 4
    }
}

/// Writes a stream into a sink (a socket, a pipe, a file, a qcow2 vmstate area), buffered.
public final class MigrationStreamWriter {
    private let sink: (UnsafeRawBufferPointer) throws(SystemError) -> Void
    private var buffer: [UInt8] = []
    private var crc: UInt = crc32(0, nil, 0)
    /// Bytes handed to the sink so far and still buffered.
    public private(set) var bytesWritten: UInt64 = 0
    static let bufferSize = 1 << 20

    public init(sink: @escaping (UnsafeRawBufferPointer) throws(SystemError) -> Void) {
        self.sink = sink
        buffer.reserveCapacity(Self.bufferSize + MigrationStream.pageSize + 64)
    }

    public func writeHeader(_ description: MachineDescription) throws(SystemError) {
        let json: [UInt8]
        do { json = Array(try JSONEncoder().encode(description)) } catch { throw .badInput("cannot encode the machine description: \(error)") }
        append(MigrationStream.magic)
        append(MigrationStream.formatVersion)
        append(UInt32(json.count))
        append(json)
        try flushIfFull()
    }

    /// One page of guest RAM (`bytes` is 4096 bytes); an all-zero page travels as a marker.
    /// Returns whether it was one.
    @discardableResult
    public func writePage(at address: GuestAddress, bytes: UnsafeRawBufferPointer) throws(SystemError) -> Bool {
        precondition(bytes.count == MigrationStream.pageSize)
        append(MigrationStream.RecordType.page.rawValue)
        append(address.rawValue)
        let zero = Self.isZero(bytes)
        if zero {
            append(UInt8(0))
        } else {
            append(UInt8(1))
            // The checksum covers the copy, not `bytes` again: a vCPU that runs meanwhile (KVM,
            // a pre-copy pass) may change the page between two reads of it.
            let start = buffer.count
            buffer.append(contentsOf: bytes)
            buffer.withUnsafeBufferPointer { crc = crc32(crc, $0.baseAddress! + start, UInt32(bytes.count)) }
            bytesWritten += UInt64(bytes.count)
        }
        try flushIfFull()
        return zero
    }

    public func writePassEnd(_ pass: UInt32) throws(SystemError) {
        append(MigrationStream.RecordType.passEnd.rawValue)
        append(pass)
        appendCRC()
        try flush()
    }

    public func writeComponent(_ component: SavedComponent) throws(SystemError) {
        let name = Array(component.name.utf8)
        precondition(name.count <= MigrationStream.maxName && component.payload.count <= MigrationStream.maxComponent)
        append(MigrationStream.RecordType.component.rawValue)
        append(UInt16(name.count))
        append(name)
        append(component.version)
        append(UInt32(component.payload.count))
        append(component.payload)
        try flushIfFull()
    }

    public func writeEnd() throws(SystemError) {
        append(MigrationStream.RecordType.end.rawValue)
        appendCRC()
        try flush()
    }

    /// Hands everything buffered to the sink.
    public func flush() throws(SystemError) {
        guard !buffer.isEmpty else { return }
        let bytes = buffer
        buffer.removeAll(keepingCapacity: true)
        try bytes.withUnsafeBytes { b in Result { () throws(SystemError) in try sink(b) } }.get()
    }

    private func flushIfFull() throws(SystemError) {
        if buffer.count >= Self.bufferSize { try flush() }
    }

    /// Whether a page is all zero: its first byte is, and each byte equals the next
    /// (memcmp of the page with itself shifted by one; libc's memcmp is vectorised, so this
    /// costs what a scan of the page does, also in debug builds).
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return true }
        return base.load(as: UInt8.self) == 0 && memcmp(base, base + 1, bytes.count - 1) == 0
    }

    private func append(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
        updateCRC(bytes)
        bytesWritten += UInt64(bytes.count)
    }

    private func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { append(Array($0)) }
    }

    private func updateCRC(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { crc = crc32(crc, $0.baseAddress, UInt32($0.count)) }
    }

    private func appendCRC() {
        let value = UInt32(truncatingIfNeeded: crc)
        withUnsafeBytes(of: value.littleEndian) { buffer.append(contentsOf: $0) }
        updateCRC(withUnsafeBytes(of: value.littleEndian) { Array($0) })
        bytesWritten += 4
    }
}

/// Reads a stream from a source (a socket, a pipe, a file) and hands its records over.
public final class MigrationStreamReader {
    /// One record.
    public enum Record {
        /// A page; for a data page `bytes` is valid until the next call.
        case page(GuestAddress, zero: Bool, bytes: UnsafeRawBufferPointer)
        case passEnd(UInt32)
        case component(SavedComponent)
        case end
    }

    private let source: (UnsafeMutableRawBufferPointer) throws(SystemError) -> Int
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)
    private var start = 0
    private var end = 0
    private var crc: UInt = crc32(0, nil, 0)
    /// The CRC covers the buffer's bytes before this index (it is brought up to `start` in
    /// bulk, not per field: a stream is mostly small records).
    private var crcUpTo = 0
    /// Bytes consumed so far (for messages: "at byte N").
    public private(set) var offset: UInt64 = 0
    // SAFETY: allocated here, freed in deinit; records hand out a view of it that is valid
    // until the next call, as `Record.page` documents.
    private let page = UnsafeMutableRawBufferPointer.allocate(byteCount: MigrationStream.pageSize, alignment: 64)
    /// What the stream says it was taken from (after `readHeader`).
    public private(set) var description: MachineDescription?

    /// `source` fills the buffer with up to its size and returns the count, 0 at the end.
    public init(source: @escaping (UnsafeMutableRawBufferPointer) throws(SystemError) -> Int) {
        self.source = source
    }

    deinit { page.deallocate() }

    private func corrupt(_ what: String) -> SystemError {
        .badInput("migration stream: \(what) at byte \(offset)")
    }

    /// Reads and checks the header.
    public func readHeader() throws(SystemError) -> MachineDescription {
        let magic = try take(MigrationStream.magic.count, what: "the header")
        guard magic == MigrationStream.magic else {
            if magic.starts(with: [0x51, 0x45, 0x56, 0x4d]) {  // "QEVM"
                throw .badInput("this is a QEMU migration stream; swemu reads only its own (QEMU's device states do not map onto swemu's)")
            }
            throw .badInput("not a swemu migration stream or snapshot (it starts with \(magic.prefix(8).map { String(format: "%02x", $0) }.joined(separator: " ")))")
        }
        let version: UInt32 = try integer(what: "the header")
        guard version == MigrationStream.formatVersion else {
            throw .badInput("migration stream format version \(version) is not supported (this build reads version \(MigrationStream.formatVersion))")
        }
        let length: UInt32 = try integer(what: "the header")
        guard length <= MigrationStream.maxHeader else { throw corrupt("a header of \(length) bytes") }
        let json = try take(Int(length), what: "the header")
        do {
            let description = try JSONDecoder().decode(MachineDescription.self, from: Data(json))
            self.description = description
            return description
        } catch {
            throw corrupt("a malformed header (\(error))")
        }
    }

    /// The next record; throws on a short, corrupt or unknown one.
    public func next() throws(SystemError) -> Record {
        let type: UInt8 = try integer(what: "a record")
        switch MigrationStream.RecordType(rawValue: type) {
        case .page:
            let address: UInt64 = try integer(what: "a page record")
            let kind: UInt8 = try integer(what: "a page record")
            guard address % UInt64(MigrationStream.pageSize) == 0 else { throw corrupt("a page at unaligned address 0x\(String(address, radix: 16))") }
            switch kind {
            case 0:
                return .page(GuestAddress(address), zero: true, bytes: UnsafeRawBufferPointer(start: nil, count: 0))
            case 1:
                try fill(MigrationStream.pageSize, what: "a page")
                buffer.withUnsafeBytes { b in page.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[start..<(start + MigrationStream.pageSize)])) }
                consume(MigrationStream.pageSize)
                return .page(GuestAddress(address), zero: false, bytes: UnsafeRawBufferPointer(page))
            default:
                throw corrupt("a page record of unknown kind \(kind)")
            }
        case .passEnd:
            let pass: UInt32 = try integer(what: "a pass end")
            try checkCRC()
            return .passEnd(pass)
        case .component:
            let nameLength: UInt16 = try integer(what: "a component record")
            guard nameLength <= MigrationStream.maxName else { throw corrupt("a component name of \(nameLength) bytes") }
            let nameBytes = try take(Int(nameLength), what: "a component name")
            guard let name = String(validating: nameBytes, as: UTF8.self) else { throw corrupt("a component name that is not UTF-8") }
            let version: UInt32 = try integer(what: "component \(name)")
            let length: UInt32 = try integer(what: "component \(name)")
            guard length <= MigrationStream.maxComponent else { throw corrupt("component \(name) of \(length) bytes") }
            let payload = try take(Int(length), what: "component \(name)")
            return .component(SavedComponent(name: name, version: version, payload: payload))
        case .end:
            try checkCRC()
            return .end
        case nil:
            throw corrupt("an unknown record type \(type)")
        }
    }

    private func checkCRC() throws(SystemError) {
        updateCRC()
        let expected = UInt32(truncatingIfNeeded: crc)
        let found: UInt32 = try integer(what: "a checksum")
        guard found == expected else {
            throw .badInput("migration stream: checksum mismatch at byte \(offset) (the stream is corrupt: it says 0x\(String(found, radix: 16)), its bytes give 0x\(String(expected, radix: 16)))")
        }
    }

    private func integer<T: FixedWidthInteger>(what: String) throws(SystemError) -> T {
        let size = MemoryLayout<T>.size
        try fill(size, what: what)
        var value: T = 0
        for i in 0..<size { value |= T(buffer[start + i]) << (8 * i) }
        consume(size)
        return value
    }

    private func take(_ count: Int, what: String) throws(SystemError) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(count)
        var left = count
        while left > 0 {
            let chunk = min(left, buffer.count)
            try fill(chunk, what: what)
            result += buffer[start..<(start + chunk)]
            consume(chunk)
            left -= chunk
        }
        return result
    }

    /// Makes `count` (at most the buffer's size) bytes available at `start`.
    private func fill(_ count: Int, what: String) throws(SystemError) {
        if end - start >= count { return }
        if start > 0 {
            updateCRC()
            crcUpTo = 0
            buffer.withUnsafeMutableBytes { b in
                b.baseAddress!.copyMemory(from: b.baseAddress! + start, byteCount: end - start)
            }
            end -= start
            start = 0
        }
        while end - start < count {
            let n = try buffer.withUnsafeMutableBytes { b in
                Result { () throws(SystemError) -> Int in try source(UnsafeMutableRawBufferPointer(rebasing: b[end...])) }
            }.get()
            guard n > 0 else { throw .badInput("migration stream: it ends early, in \(what), at byte \(offset + UInt64(end - start)) (truncated, or the sender stopped)") }
            end += n
        }
    }

    private func consume(_ count: Int) {
        start += count
        offset += UInt64(count)
    }

    /// Brings the CRC up to the bytes consumed.
    private func updateCRC() {
        guard start > crcUpTo else { return }
        buffer.withUnsafeBytes { b in
            crc = crc32(crc, (b.baseAddress! + crcUpTo).assumingMemoryBound(to: UInt8.self), UInt32(start - crcUpTo))
        }
        crcUpTo = start
    }
}
