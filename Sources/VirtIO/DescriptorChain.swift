import GuestMemory

/// One guest buffer of a descriptor chain: `length` bytes at `address`, checked at pop time to
/// lie wholly inside guest RAM.
package struct GuestBuffer: Sendable, Hashable, CustomStringConvertible {
    package var address: GuestAddress
    package var length: UInt32
    package init(address: GuestAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
    package var description: String { "\(length)@\(address)" }
}

/// A validated descriptor chain popped from an available ring (§2.7.4, §2.7.5): the
/// device-readable buffers, then the device-writable ones, with any indirect table flattened.
///
/// The buffers were checked against guest RAM when the chain was popped, and RAM regions never
/// move, so the copy helpers below fail only if asked for bytes past the end of a part. They
/// address each part as one byte stream: offset 0 is the first byte of the first buffer.
///
/// A chain is a value and may travel to another thread; hand it back to the transport it came
/// from with `VirtioTransport.pushUsed`/`complete` exactly once.
package struct DescriptorChain: Sendable {
    /// The part of a chain a byte offset refers to.
    package enum Part: Sendable { case readable, writable }

    package let memory: GuestMemory
    /// The head descriptor index: the `id` the used ring entry reports (§2.7.8).
    package let head: UInt16
    /// Device-readable buffers, in chain order.
    package let readable: [GuestBuffer]
    /// Device-writable buffers, in chain order.
    package let writable: [GuestBuffer]
    /// Total bytes of `readable` / `writable`.
    package let readableLength: Int
    package let writableLength: Int
    /// The queue it was popped from, and the queue's generation then: a chain completed after
    /// the queue was reset or re-enabled is dropped instead of landing in the new ring.
    package internal(set) var queueIndex: Int = 0
    package internal(set) var generation: UInt64 = 0

    package init(memory: GuestMemory, head: UInt16, readable: [GuestBuffer], writable: [GuestBuffer]) {
        self.memory = memory
        self.head = head
        self.readable = readable
        self.writable = writable
        readableLength = readable.reduce(0) { $0 + Int($1.length) }
        writableLength = writable.reduce(0) { $0 + Int($1.length) }
    }

    /// The pieces of guest memory behind `[offset, offset + count)` of `part`, or nil when
    /// that range passes the part's end.
    package func segments(_ part: Part, offset: Int, count: Int) -> [GuestBuffer]? {
        let buffers = part == .readable ? readable : writable
        let total = part == .readable ? readableLength : writableLength
        guard offset >= 0, count >= 0, offset <= total, count <= total - offset else { return nil }
        var result: [GuestBuffer] = []
        var skip = offset
        var left = count
        for buffer in buffers where left > 0 {
            let length = Int(buffer.length)
            if skip >= length {
                skip -= length
                continue
            }
            let take = min(length - skip, left)
            // Cannot overflow: the buffer was checked to lie inside RAM.
            result.append(GuestBuffer(address: GuestAddress(buffer.address.rawValue + UInt64(skip)), length: UInt32(take)))
            left -= take
            skip = 0
        }
        return result
    }

    /// Copies `count` bytes from `offset` of the readable part.
    package func readBytes(at offset: Int, count: Int) throws(VirtioError) -> [UInt8] {
        guard let pieces = segments(.readable, offset: offset, count: count) else {
            throw .malformedRequest("read of \(count) bytes at offset \(offset) passes the \(readableLength) readable bytes")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        for piece in pieces {
            do {
                bytes += try memory.readBytes(at: piece.address, count: Int(piece.length))
            } catch {
                throw .memory(error, while: "reading a buffer")
            }
        }
        return bytes
    }

    /// Copies `bytes` to `offset` of the writable part.
    package func writeBytes(_ bytes: [UInt8], at offset: Int) throws(VirtioError) {
        guard let pieces = segments(.writable, offset: offset, count: bytes.count) else {
            throw .malformedRequest("write of \(bytes.count) bytes at offset \(offset) passes the \(writableLength) writable bytes")
        }
        var done = 0
        for piece in pieces {
            let n = Int(piece.length)
            do {
                try memory.writeBytes(bytes[done..<done + n], at: piece.address)
            } catch {
                throw .memory(error, while: "writing a buffer")
            }
            done += n
        }
    }

    /// Runs `body` on the host memory behind `[offset, offset + count)` of the readable part,
    /// one contiguous piece at a time (zero-copy DMA for disk writes). The pointers must not
    /// escape `body`. Throws `VirtioError` for a bad range, or what `body` throws.
    package func forEachReadableSegment(
        offset: Int, count: Int, _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        try forEach(.readable, offset: offset, count: count) { try body(UnsafeRawBufferPointer($0)) }
    }

    /// Runs `body` on the host memory behind `[offset, offset + count)` of the writable part
    /// (zero-copy DMA for disk reads). The pointers must not escape `body`.
    package func forEachWritableSegment(
        offset: Int, count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        try forEach(.writable, offset: offset, count: count, body)
    }

    private func forEach(
        _ part: Part, offset: Int, count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> Void
    ) throws {
        guard let pieces = segments(part, offset: offset, count: count) else {
            throw VirtioError.malformedRequest("range of \(count) bytes at offset \(offset) passes the end of the buffers")
        }
        for piece in pieces {
            try memory.withHostBytes(at: piece.address, count: Int(piece.length), writing: part == .writable, body)
        }
    }
}
