import GuestMemory
import Synchronization

/// The device side of one split virtqueue (§2.7): where the driver put its three areas, how
/// far the device has read the available ring and written the used ring, and the rules for
/// walking descriptor chains and suppressing notifications.
///
/// A plain value with no lock: the transport keeps its queues behind its own mutex. Everything
/// it reads from guest memory is untrusted and checked; a violation is a `VirtioError`, which
/// the transport turns into DEVICE_NEEDS_RESET.
package struct Virtqueue: Sendable {
    package let memory: GuestMemory
    /// QueueNumMax: the largest size the driver may choose. A power of two.
    package let maxSize: UInt16

    // Set by the driver through the transport while the queue is not ready.
    /// QueueNum: the number of descriptors (and ring entries). Starts at `maxSize`.
    package var size: UInt16
    /// QueueDesc: the descriptor table.
    package var descriptorTable = GuestAddress(0)
    /// QueueDriver: the available ring (the "driver area").
    package var availRing = GuestAddress(0)
    /// QueueDevice: the used ring (the "device area").
    package var usedRing = GuestAddress(0)
    /// QueueReady.
    package private(set) var ready = false

    // Negotiated features that change how the rings are read (set at FEATURES_OK).
    /// VIRTIO_F_EVENT_IDX: used_event / avail_event are live (§2.7.7, §2.7.10).
    package var eventIndex = false
    /// VIRTIO_F_INDIRECT_DESC: indirect tables are allowed (§2.7.5.3).
    package var indirectDescriptors = false

    // Device progress.
    /// The available ring index of the next chain to pop (free-running, mod 2^16).
    package var lastAvailIndex: UInt16 = 0
    /// The used ring idx the device will publish next (free-running, mod 2^16).
    package var usedIndex: UInt16 = 0
    /// The used idx at the last notification decision, for the event-idx rule (§2.7.7.2).
    package var signalledUsed: UInt16 = 0
    package var signalledUsedValid = false
    /// Bumped whenever the queue is reset, enabled or disabled; stamped on popped chains so a
    /// late completion cannot land in a ring that is no longer the one it came from.
    package private(set) var generation: UInt64 = 0

    package init(memory: GuestMemory, maxSize: UInt16) {
        precondition(Virtqueue.isValidSize(maxSize), "virtqueue maximum size \(maxSize) must be a power of two up to 32768")
        self.memory = memory
        self.maxSize = maxSize
        size = maxSize
    }

    /// §2.7: a split virtqueue's size is a power of two, at most 32768.
    package static func isValidSize(_ size: UInt16) -> Bool {
        size > 0 && size <= VirtqLayout.maxQueueSize && size & (size - 1) == 0
    }

    /// Back to the state after a device reset; the generation keeps counting.
    package mutating func reset() {
        let next = generation &+ 1
        self = Virtqueue(memory: memory, maxSize: maxSize)
        generation = next
    }

    /// Checks the driver's setup (§2.7 size and alignment rules, rings inside RAM) and makes
    /// the queue live with fresh indices.
    package mutating func enable() throws(VirtioError) {
        guard Virtqueue.isValidSize(size), size <= maxSize else {
            throw .invalidQueue("size \(size) is not a power of two from 1 to \(maxSize)")
        }
        let areas: [(String, GuestAddress, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, VirtqLayout.descriptorTableSize(size), VirtqLayout.descriptorAlignment),
            ("available ring", availRing, VirtqLayout.availRingSize(size), VirtqLayout.availAlignment),
            ("used ring", usedRing, VirtqLayout.usedRingSize(size), VirtqLayout.usedAlignment),
        ]
        for (name, address, length, alignment) in areas {
            guard address.rawValue % alignment == 0 else {
                throw .invalidQueue("\(name) at \(address) is not aligned to \(alignment) bytes")
            }
            guard memory.isRAM(address, count: length) else {
                throw .invalidQueue("\(name) of \(length) bytes at \(address) is outside guest RAM")
            }
        }
        lastAvailIndex = 0
        usedIndex = 0
        signalledUsed = 0
        signalledUsedValid = false
        ready = true
        generation &+= 1
    }

    /// QueueReady = 0: the device stops using the queue.
    package mutating func disable() {
        guard ready else { return }
        ready = false
        generation &+= 1
    }

    // MARK: Available ring (§2.7.6)

    private var availIdxAddress: GuestAddress { GuestAddress(availRing.rawValue + 2) }
    private func availEntryAddress(_ position: UInt16) -> GuestAddress {
        GuestAddress(availRing.rawValue + 4 + 2 * UInt64(position % size))
    }
    /// `used_event`, after the available ring entries.
    private var usedEventAddress: GuestAddress { GuestAddress(availRing.rawValue + 4 + 2 * UInt64(size)) }

    // MARK: Used ring (§2.7.8)

    private var usedIdxAddress: GuestAddress { GuestAddress(usedRing.rawValue + 2) }
    private func usedEntryAddress(_ position: UInt16) -> GuestAddress {
        GuestAddress(usedRing.rawValue + 4 + 8 * UInt64(position % size))
    }
    /// `avail_event`, after the used ring entries.
    private var availEventAddress: GuestAddress { GuestAddress(usedRing.rawValue + 4 + 8 * UInt64(size)) }

    /// How many chains the driver has made available that the device has not popped.
    package func pendingCount() throws(VirtioError) -> UInt16 {
        guard ready else { return 0 }
        let availIdx = try load(UInt16.self, at: availIdxAddress, "reading the available ring idx")
        // Acquire: the ring entries and descriptors the driver wrote before publishing idx
        // must be read after it (§2.7.13: the driver's write barrier pairs with this).
        atomicMemoryFence(ordering: .acquiring)
        let pending = availIdx &- lastAvailIndex
        // §2.7.6: idx only moves forward, by at most the number of entries (each available
        // chain holds at least one descriptor of `size`).
        guard pending <= size else { throw .availIndexJump(lastSeen: lastAvailIndex, now: availIdx, size: size) }
        return pending
    }

    /// Takes the next available chain, validated, or nil when the driver has made none
    /// available (or the queue is not ready).
    package mutating func popAvailable() throws(VirtioError) -> DescriptorChain? {
        guard try pendingCount() > 0 else { return nil }
        let head = try load(UInt16.self, at: availEntryAddress(lastAvailIndex), "reading the available ring")
        var chain = try readChain(head: head)
        lastAvailIndex &+= 1
        chain.generation = generation
        if eventIndex {
            // §2.7.10: ask to be notified when the driver makes the chain after this one
            // available. The full fence orders this store before our next read of avail idx,
            // against the driver's store of idx and read of avail_event.
            try store(lastAvailIndex, at: availEventAddress, "writing avail_event")
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        return chain
    }

    /// Writable bytes of the chains the driver has made available, counted in order without
    /// taking them until there are `limit` (or `maxChains` chains were looked at): so a device
    /// can check a frame fits before it takes any buffer.
    package func availableWritableBytes(limit: Int, maxChains: Int) throws(VirtioError) -> Int {
        let pending = Int(try pendingCount())
        var total = 0
        var position = lastAvailIndex
        for _ in 0..<min(pending, maxChains) where total < limit {
            let head = try load(UInt16.self, at: availEntryAddress(position), "reading the available ring")
            total += try readChain(head: head).writableLength
            position &+= 1
        }
        return total
    }

    /// Walks and validates the chain starting at descriptor `head` (§2.7.5, §2.7.5.3).
    package func readChain(head: UInt16) throws(VirtioError) -> DescriptorChain {
        guard head < size else { throw .descriptorIndexOutOfRange(index: head, tableSize: UInt32(size)) }
        var readable: [GuestBuffer] = []
        var writable: [GuestBuffer] = []
        var table = descriptorTable
        var tableSize = UInt32(size)
        var index = head
        var inIndirect = false
        // Buffers seen so far. §2.7.5.3.1: no chain is longer than the Queue Size, so more
        // than `size` buffers means a loop (§2.7.5.2) or a broken driver; either way the walk
        // ends after at most `size` + 1 descriptor reads (plus one for an indirect pointer).
        var count = 0
        while true {
            let descriptor = try loadDescriptor(table: table, index: index)
            let flags = VirtqDescriptorFlags(rawValue: descriptor.flags)
            if flags.contains(.indirect) {
                // §2.7.5.3.1 (driver rules the device relies on) and §2.7.5.3.2: the WRITE flag
                // of the pointing descriptor is ignored; zero or more direct descriptors may
                // come before it.
                guard indirectDescriptors else { throw .indirectNotNegotiated }
                guard !inIndirect else { throw .nestedIndirect }
                guard !flags.contains(.next) else { throw .indirectWithNext }
                let length = descriptor.length
                let entries = length / UInt32(VirtqLayout.descriptorSize)
                guard length > 0, length % UInt32(VirtqLayout.descriptorSize) == 0, entries <= UInt32(size) else {
                    throw .badIndirectTable(length: length)
                }
                guard memory.isRAM(descriptor.address, count: UInt64(length)) else {
                    throw .bufferOutsideRAM(address: descriptor.address, length: length)
                }
                table = descriptor.address
                tableSize = entries
                index = 0
                inIndirect = true
                continue
            }
            count += 1
            guard count <= Int(size) else { throw .chainTooLong(limit: Int(size)) }
            if descriptor.length > 0 {
                guard memory.isRAM(descriptor.address, count: UInt64(descriptor.length)) else {
                    throw .bufferOutsideRAM(address: descriptor.address, length: descriptor.length)
                }
            }
            let buffer = GuestBuffer(address: descriptor.address, length: descriptor.length)
            if flags.contains(.write) {
                writable.append(buffer)
            } else {
                // §2.7.4.2: device-readable descriptors come before device-writable ones.
                guard writable.isEmpty else { throw .readableAfterWritable }
                readable.append(buffer)
            }
            guard flags.contains(.next) else { break }
            guard UInt32(descriptor.next) < tableSize else {
                throw .descriptorIndexOutOfRange(index: descriptor.next, tableSize: tableSize)
            }
            index = descriptor.next
        }
        return DescriptorChain(memory: memory, head: head, readable: readable, writable: writable)
    }

    private struct Descriptor {
        var address: GuestAddress
        var length: UInt32
        var flags: UInt16
        var next: UInt16
    }

    /// `struct virtq_desc` number `index` of the table at `table` (§2.7.5).
    private func loadDescriptor(table: GuestAddress, index: UInt16) throws(VirtioError) -> Descriptor {
        // The table was checked to be in RAM (ring setup or the indirect pointer), so this
        // cannot wrap; `load` checks each field anyway.
        let base = table.rawValue + UInt64(index) * VirtqLayout.descriptorSize
        // The message is built only for an error (this runs for every descriptor).
        return Descriptor(
            address: GuestAddress(try load(UInt64.self, at: GuestAddress(base), "reading descriptor \(index)")),
            length: try load(UInt32.self, at: GuestAddress(base + 8), "reading descriptor \(index)"),
            flags: try load(UInt16.self, at: GuestAddress(base + 12), "reading descriptor \(index)"),
            next: try load(UInt16.self, at: GuestAddress(base + 14), "reading descriptor \(index)"))
    }

    /// Publishes a used element for the chain with head `head` (§2.7.8): `length` is the
    /// number of bytes the device wrote into its writable buffers.
    package mutating func pushUsed(head: UInt16, length: UInt32) throws(VirtioError) {
        try pushUsed([(head, length)])
    }

    /// Publishes several used elements at once: the driver sees all of them or none (one idx
    /// store), as a virtio-net frame spread over mergeable buffers must reach it (§5.1.6.4.2).
    package mutating func pushUsed(_ elements: [(head: UInt16, length: UInt32)]) throws(VirtioError) {
        guard ready, !elements.isEmpty else { return }
        var index = usedIndex
        for (head, length) in elements {
            let entry = usedEntryAddress(index)
            try store(UInt32(head), at: entry, "writing the used ring")
            try store(length, at: GuestAddress(entry.rawValue + 4), "writing the used ring")
            index &+= 1
        }
        usedIndex = index
        // Release: the elements (and the data in the buffers) before the idx that publishes them.
        atomicMemoryFence(ordering: .releasing)
        try store(usedIndex, at: usedIdxAddress, "writing the used ring idx")
    }

    /// The device will wait for more available buffers than there are: with
    /// VIRTIO_F_EVENT_IDX, ask the driver to notify at its next one (avail_event = its avail
    /// idx, §2.7.10), or a driver that already passed the last avail_event would never notify.
    /// The full fence orders the store before the device's next look at avail idx.
    package func requestAvailableNotification() throws(VirtioError) {
        guard ready, eventIndex else { return }
        let availIndex = try load(UInt16.self, at: GuestAddress(availRing.rawValue + 2), "reading the available ring idx")
        try store(availIndex, at: availEventAddress, "writing avail_event")
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    /// Whether the driver wants a used buffer notification for what was pushed since the last
    /// call (§2.7.7.2): with VIRTIO_F_EVENT_IDX, when the used idx passed `used_event`;
    /// without it, unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT.
    package mutating func needsNotification() throws(VirtioError) -> Bool {
        guard ready else { return false }
        // The used idx store must be visible before we read the driver's suppression fields,
        // or both sides could decide the other will act (§2.7.7.2, QEMU's smp_mb in
        // virtio_should_notify).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            let old = signalledUsed
            let valid = signalledUsedValid
            signalledUsed = usedIndex
            signalledUsedValid = true
            let usedEvent = try load(UInt16.self, at: usedEventAddress, "reading used_event")
            return !valid || Virtqueue.needsEvent(eventIndex: usedEvent, new: usedIndex, old: old)
        }
        let flags = try load(UInt16.self, at: availRing, "reading the available ring flags")
        return flags & VirtqLayout.availNoInterrupt == 0
    }

    /// `vring_need_event` (§2.7.10): whether moving an index from `old` to `new` crossed
    /// `eventIndex`, i.e. `eventIndex` is in `[old, new)` modulo 2^16.
    package static func needsEvent(eventIndex: UInt16, new: UInt16, old: UInt16) -> Bool {
        new &- eventIndex &- 1 < new &- old
    }

    // MARK: Guest memory, with errors named

    private func load<T: FixedWidthInteger>(_: T.Type, at address: GuestAddress, _ what: @autoclosure () -> String) throws(VirtioError) -> T {
        do { return try memory.read(T.self, at: address) } catch { throw .memory(error, while: what()) }
    }

    private func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress, _ what: @autoclosure () -> String) throws(VirtioError) {
        do { try memory.write(value, at: address) } catch { throw .memory(error, while: what()) }
    }

    // MARK: Snapshot

    /// A queue's part of the transport's saved state (rust-vmm's `QueueState`).
    package struct State: Codable, Sendable, Equatable {
        package var size: UInt16
        package var ready: Bool
        package var descriptorTable: UInt64
        package var availRing: UInt64
        package var usedRing: UInt64
        package var lastAvailIndex: UInt16
        package var usedIndex: UInt16
        package var signalledUsed: UInt16
        package var signalledUsedValid: Bool
    }

    package func saveState() -> State {
        State(size: size, ready: ready, descriptorTable: descriptorTable.rawValue, availRing: availRing.rawValue,
              usedRing: usedRing.rawValue, lastAvailIndex: lastAvailIndex, usedIndex: usedIndex,
              signalledUsed: signalledUsed, signalledUsedValid: signalledUsedValid)
    }

    /// Loads an untrusted saved state: the same checks as a driver's setup.
    package mutating func restore(_ state: State) throws(VirtioError) {
        var queue = Virtqueue(memory: memory, maxSize: maxSize)
        queue.generation = generation &+ 1
        queue.eventIndex = eventIndex
        queue.indirectDescriptors = indirectDescriptors
        queue.size = state.size
        queue.descriptorTable = GuestAddress(state.descriptorTable)
        queue.availRing = GuestAddress(state.availRing)
        queue.usedRing = GuestAddress(state.usedRing)
        if state.ready {
            try queue.enable()
        } else {
            guard Virtqueue.isValidSize(state.size), state.size <= maxSize else {
                throw .invalidQueue("size \(state.size) is not a power of two from 1 to \(maxSize)")
            }
        }
        // Chains popped but not yet used: never more than the ring holds.
        guard state.lastAvailIndex &- state.usedIndex <= state.size else {
            throw .invalidQueue("\(state.lastAvailIndex &- state.usedIndex) chains in flight exceed the queue size \(state.size)")
        }
        queue.lastAvailIndex = state.lastAvailIndex
        queue.usedIndex = state.usedIndex
        queue.signalledUsed = state.signalledUsed
        queue.signalledUsedValid = state.signalledUsedValid
        self = queue
    }
}
