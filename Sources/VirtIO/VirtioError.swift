import GuestMemory

/// Why a device cannot go on: the guest broke a rule of the virtqueue protocol or of the
/// device's request format. The transport answers every one the same way (§2.1.2): it sets
/// DEVICE_NEEDS_RESET, sends a configuration change notification if DRIVER_OK is set, and
/// stops processing until the driver resets the device. Never a host crash or hang (DESIGN.md §6).
package enum VirtioError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A ring or descriptor table access fell outside guest RAM.
    case memory(GuestMemoryError, while: String)
    /// The queue was made ready with a size or ring placement the spec forbids.
    case invalidQueue(String)
    /// §2.7.6: the available ring's idx moved further than the queue has entries.
    case availIndexJump(lastSeen: UInt16, now: UInt16, size: UInt16)
    /// An available ring entry or a descriptor's `next` names no descriptor of the table.
    case descriptorIndexOutOfRange(index: UInt16, tableSize: UInt32)
    /// §2.7.5.2 forbids loops; §2.7.5.3.1: no chain is longer than the Queue Size.
    case chainTooLong(limit: Int)
    /// §2.7.5.3.1: INDIRECT without VIRTIO_F_INDIRECT_DESC negotiated.
    case indirectNotNegotiated
    /// §2.7.5.3.1: an indirect descriptor inside an indirect table.
    case nestedIndirect
    /// §2.7.5.3.1: INDIRECT and NEXT both set.
    case indirectWithNext
    /// §2.7.5.3: an indirect table's length is not a positive multiple of 16 bytes, or it
    /// holds more descriptors than the queue (which no chain may exceed).
    case badIndirectTable(length: UInt32)
    /// §2.7.4.2: a device-readable descriptor after a device-writable one.
    case readableAfterWritable
    /// A buffer is not wholly inside guest RAM.
    case bufferOutsideRAM(address: GuestAddress, length: UInt32)
    /// The request in a well-formed chain is not one the device can parse (virtio-blk with
    /// no header or no status byte, …).
    case malformedRequest(String)

    package var description: String {
        switch self {
        case let .memory(error, what): "\(error) while \(what)"
        case let .invalidQueue(why): "invalid queue setup: \(why)"
        case let .availIndexJump(last, now, size):
            "available ring idx moved from \(last) to \(now), more than the queue size \(size)"
        case let .descriptorIndexOutOfRange(index, tableSize):
            "descriptor index \(index) is outside a table of \(tableSize) descriptors"
        case let .chainTooLong(limit): "descriptor chain longer than \(limit) (a loop?)"
        case .indirectNotNegotiated: "indirect descriptor used without VIRTIO_F_INDIRECT_DESC"
        case .nestedIndirect: "indirect descriptor inside an indirect table"
        case .indirectWithNext: "descriptor has both INDIRECT and NEXT set"
        case let .badIndirectTable(length): "indirect table of \(length) bytes is not 1 to queue-size descriptors of 16 bytes"
        case .readableAfterWritable: "device-readable descriptor after a device-writable one"
        case let .bufferOutsideRAM(address, length): "buffer of \(length) bytes at \(address) is outside guest RAM"
        case let .malformedRequest(why): "malformed request: \(why)"
        }
    }
}
