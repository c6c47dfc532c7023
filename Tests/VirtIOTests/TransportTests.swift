import DeviceModel
import GuestMemory
import SystemSupport
import Testing
import VirtIO

@Suite struct RegisterLayoutTests {
    @Test func identityRegisters() {
        let guest = FakeGuest(device: RecordingDevice())
        #expect(guest.reg(.magicValue) == 0x7472_6976)
        #expect(guest.reg(.version) == 2)
        #expect(guest.reg(.deviceID) == 42)
        #expect(guest.reg(.vendorID) == 0x554d_4551)
        #expect(VirtioMMIO.windowSize == 0x200)
        // Offsets straight from §4.2.2's table.
        #expect(Register.queueNotify.rawValue == 0x50)
        #expect(Register.status.rawValue == 0x70)
        #expect(Register.queueDeviceHigh.rawValue == 0xa4)
        #expect(Register.configGeneration.rawValue == 0xfc)
    }

    @Test func queueNumMaxPerQueue() {
        let guest = FakeGuest(device: RecordingDevice(queueSizes: [16, 256]))
        guest.write(.queueSel, 0)
        #expect(guest.reg(.queueNumMax) == 16)
        guest.write(.queueSel, 1)
        #expect(guest.reg(.queueNumMax) == 256)
        guest.write(.queueSel, 2)
        #expect(guest.reg(.queueNumMax) == 0)
        #expect(guest.reg(.queueReady) == 0)
    }

    @Test func configSpaceAtAnyWidth() {
        let guest = FakeGuest(device: RecordingDevice())
        #expect(guest.config(UInt8.self, at: 0) == 1)
        #expect(guest.config(UInt16.self, at: 1) == 0x0302)
        #expect(guest.config(UInt32.self, at: 4) == 0x0807_0605)
        #expect(guest.config(UInt64.self, at: 0) == 0x0807_0605_0403_0201)
        // Past the end of the device's config: zeroes.
        #expect(guest.config(UInt32.self, at: 6) == 0x0807)
        #expect(guest.config(UInt32.self, at: 0x80) == 0)
    }

    @Test func narrowOrUnknownRegisterAccessIsHarmless() {
        let guest = FakeGuest(device: RecordingDevice())
        #expect(guest.mmio.read(offset: 0, size: 1) == 0)
        #expect(guest.mmio.read(offset: 2, size: 4) == 0)
        #expect(guest.mmio.read(offset: 0x0e8, size: 4) == 0)
        guest.mmio.write(offset: Register.status.rawValue, value: 1, size: 2)
        #expect(guest.reg(.status) == 0)
        guest.mmio.write(offset: 0x0e8, value: 1, size: 4)
        // Offsets past the window (a board bug) read 0 and are dropped, without trapping.
        #expect(guest.mmio.read(offset: UInt64.max, size: 4) == 0)
        guest.mmio.write(offset: UInt64.max, value: 1, size: 4)
        guest.mmio.write(offset: 0x200, value: 1, size: 4)
        // No shared memory regions: length -1.
        #expect(guest.reg(.shmLenLow) == 0xffff_ffff)
        #expect(guest.reg(.shmLenHigh) == 0xffff_ffff)
    }
}

@Suite struct FeatureNegotiationTests {
    @Test func offersDeviceAndTransportFeatures() {
        let guest = FakeGuest(device: RecordingDevice(features: VirtioFeatures(bit: 3)))
        let offered = guest.deviceFeatures
        #expect(offered == [VirtioFeatures(bit: 3), .version1, .eventIndex, .indirectDescriptors])
        guest.write(.deviceFeaturesSel, 2)
        #expect(guest.reg(.deviceFeatures) == 0)
    }

    @Test func acceptsOfferedSubset() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        #expect(guest.initialize(accept: { _ in [.version1, .eventIndex] }))
        #expect(guest.status == [.acknowledge, .driver, .featuresOK, .driverOK])
        #expect(device.transport?.negotiatedFeatures == [.version1, .eventIndex])
        #expect(device.log.withLock { $0.activations } == 1)
    }

    @Test(arguments: [
        VirtioFeatures([.version1, VirtioFeatures(bit: 5)]),  // not offered
        VirtioFeatures(bit: 3),  // no VERSION_1
        VirtioFeatures([.version1, VirtioFeatures(bit: 40)]),  // not offered, high word
    ])
    func rejectsFeaturesNotOffered(features: VirtioFeatures) {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        #expect(!guest.initialize(accept: { _ in features }))
        #expect(!guest.status.contains(.featuresOK))
        #expect(guest.status.contains(.failed))
        // DRIVER_OK without FEATURES_OK does not take.
        guest.addStatus(.driverOK)
        #expect(!guest.status.contains(.driverOK))
        #expect(device.log.withLock { $0.activations } == 0)
    }

    @Test func featuresAreFixedAfterFeaturesOK() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize(accept: { _ in .version1 })
        guest.writeDriverFeatures([.version1, .eventIndex])
        #expect(device.transport?.negotiatedFeatures == .version1)
    }
}

@Suite struct QueueOperationTests {
    @Test func requestRoundTripRaisesAndAcknowledgesInterrupt() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize(accept: { _ in .version1 })
        #expect(!guest.irq.level)
        let (head, writable) = guest.submit(queue: 0, readable: [[1, 2, 3]], writable: [8])
        #expect(device.processed == [0])
        #expect(guest.takeUsed(queue: 0) == [.init(id: UInt32(head), length: 3)])
        #expect(guest.bytes(at: writable[0], count: 4) == [1, 2, 3, 0xee])
        #expect(guest.irq.level)
        #expect(guest.acknowledgeInterrupt() == .usedBuffer)
        #expect(!guest.irq.level)
        #expect(guest.reg(.interruptStatus) == 0)
    }

    @Test func queueAddressesReadBackAndAreLockedWhileReady() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize()
        guest.write(.queueSel, 0)
        let desc = guest.queues[0].desc.rawValue
        #expect(UInt64(guest.reg(.queueDescLow)) | UInt64(guest.reg(.queueDescHigh)) << 32 == desc)
        guest.write(.queueDescLow, 0x1234_0000)
        guest.write(.queueNum, 4)
        #expect(UInt64(guest.reg(.queueDescLow)) == desc & 0xffff_ffff)
        #expect(guest.reg(.queueNum) == 16)
        // QueueReady = 0 releases the queue; the registers can then change.
        guest.write(.queueReady, 0)
        #expect(guest.reg(.queueReady) == 0)
        guest.write(.queueNum, 4)
        #expect(guest.reg(.queueNum) == 4)
    }

    @Test func notifyBeforeDriverOKIsNotActedOnThen() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize()
        guest.write(.status, 0)
        guest.addStatus([.acknowledge, .driver])
        let before = device.processed
        guest.notify(0)
        guest.notify(7)
        #expect(device.processed == before)
    }

    /// Buffers made available and notified before DRIVER_OK are not used then (§3.1.1), but at
    /// DRIVER_OK: that notify will not come again.
    @Test func buffersMadeAvailableBeforeDriverOKAreUsedAtDriverOK() {
        let device = RecordingDevice(queueSizes: [16, 16, 16])
        let guest = FakeGuest(device: device)
        var head: UInt16 = 0
        var usedEarly: [FakeGuest.Used] = []
        let initialized = guest.initialize(beforeDriverOK: {
            head = guest.submit(queue: 1, readable: [[9, 8]], writable: [4]).head
            usedEarly = guest.takeUsed(queue: 1)
        })
        #expect(initialized)
        #expect(usedEarly.isEmpty, "nothing is used before DRIVER_OK")
        #expect(device.processed == [1], "only the queue notified")
        #expect(guest.takeUsed(queue: 1) == [.init(id: UInt32(head), length: 2)])
        // A restored device does not: its source took every notify.
        let restored = RecordingDevice(queueSizes: [16, 16, 16])
        let copy = FakeGuest(device: restored)
        #expect(throws: Never.self) { try copy.mmio.restore(guest.mmio.saveState()) }
        #expect(restored.log.withLock { $0.activations } == 1)
        #expect(restored.processed.isEmpty)
    }

    @Test func resetClearsEverything() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize()
        guest.submit(queue: 0, readable: [[9]], writable: [1])
        #expect(guest.irq.level)
        guest.write(.status, 0)
        #expect(guest.reg(.status) == 0)
        #expect(guest.reg(.interruptStatus) == 0)
        #expect(!guest.irq.level)
        guest.write(.queueSel, 0)
        #expect(guest.reg(.queueReady) == 0)
        // One reset by the probe in initialize(), one just now.
        #expect(device.log.withLock { $0.resets } == 2)
        // And it works again after a fresh probe.
        guest.initialize()
        guest.submit(queue: 0, readable: [[7]], writable: [1])
        #expect(guest.takeUsed(queue: 0).map(\.length) == [1])
    }

    @Test func indirectDescriptors() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize()
        let (head, writable) = guest.submit(queue: 0, readable: [[1, 2], [3, 4, 5]], writable: [2, 8], indirect: true)
        #expect(guest.takeUsed(queue: 0) == [.init(id: UInt32(head), length: 5)])
        #expect(guest.bytes(at: writable[0], count: 2) == [1, 2])
        #expect(guest.bytes(at: writable[1], count: 4) == [3, 4, 5, 0xee])
        #expect(!guest.needsReset)
    }

    @Test func directDescriptorsBeforeAnIndirectTable() {
        // §2.7.5.3.2: zero or more direct descriptors, then one indirect.
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize()
        let a = guest.put([1, 2])
        let out = guest.alloc(4)
        let table = guest.alloc(16)
        guest.writeDescriptor(table: table, 0, address: out, length: 4, flags: .write)
        guest.writeDescriptor(queue: 0, 0, address: a, length: 2, flags: .next, next: 1)
        guest.writeDescriptor(queue: 0, 1, address: table, length: 16, flags: [.indirect, .write])
        guest.makeAvailable(queue: 0, head: 0)
        guest.notify(0)
        #expect(guest.takeUsed(queue: 0) == [.init(id: 0, length: 2)])
        #expect(guest.bytes(at: out, count: 2) == [1, 2])
    }

    @Test func eventIndexSuppressesNotifications() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize(accept: { $0.subtracting(.indirectDescriptors) })
        // The first completion always notifies.
        guest.submit(queue: 0, readable: [[1]], writable: [1])
        #expect(guest.acknowledgeInterrupt() == .usedBuffer)
        // The device asks to hear about the next available chain (§2.7.10).
        #expect(guest.availEvent(queue: 0) == 1)
        // Interrupt me when used idx passes 2: the element at index 2.
        guest.setUsedEvent(queue: 0, 2)
        guest.submit(queue: 0, readable: [[2]], writable: [1])  // used idx 1 → 2
        #expect(guest.usedIdx(queue: 0) == 2)
        #expect(guest.reg(.interruptStatus) == 0)
        #expect(!guest.irq.level)
        guest.submit(queue: 0, readable: [[3]], writable: [1])  // used idx 2 → 3
        #expect(guest.acknowledgeInterrupt() == .usedBuffer)
        #expect(guest.availEvent(queue: 0) == 3)
        #expect(guest.takeUsed(queue: 0).count == 3)
    }

    @Test func noInterruptFlagWithoutEventIndex() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize(accept: { _ in .version1 })
        guest.setAvailFlags(queue: 0, VirtqLayout.availNoInterrupt)
        guest.submit(queue: 0, readable: [[1]], writable: [1])
        #expect(guest.usedIdx(queue: 0) == 1)
        #expect(!guest.irq.level)
        guest.setAvailFlags(queue: 0, 0)
        guest.submit(queue: 0, readable: [[1]], writable: [1])
        #expect(guest.irq.level)
    }

    @Test func needsEventMatchesTheSpecFormula() {
        #expect(Virtqueue.needsEvent(eventIndex: 0, new: 1, old: 0))
        #expect(!Virtqueue.needsEvent(eventIndex: 1, new: 1, old: 0))
        #expect(Virtqueue.needsEvent(eventIndex: 3, new: 10, old: 2))
        #expect(!Virtqueue.needsEvent(eventIndex: 10, new: 10, old: 2))
        // Wrapping at 2^16.
        #expect(Virtqueue.needsEvent(eventIndex: 0xffff, new: 1, old: 0xfffe))
    }

    @Test func configChangeBumpsGenerationAndInterrupts() {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize()
        let before = guest.reg(.configGeneration)
        device.transport?.configChanged()
        #expect(guest.reg(.configGeneration) == before &+ 1)
        #expect(guest.acknowledgeInterrupt() == .configChange)
        #expect(!guest.irq.level)
    }

    @Test func asynchronousCompletionFromAnotherThread() async throws {
        let device = RecordingDevice(completeAtOnce: false)
        let guest = FakeGuest(device: device)
        guest.initialize()
        guest.submit(queue: 0, readable: [[5]], writable: [4])
        let chains = device.chains
        #expect(chains.count == 1)
        #expect(guest.usedIdx(queue: 0) == 0)
        let transport = try #require(device.transport, "the device was never given its transport")
        let chain = try #require(chains.first, "no chain popped")
        await Task.detached {
            try? chain.writeBytes([42], at: 0)
            transport.complete(chain, written: 1)
        }.value
        #expect(guest.takeUsed(queue: 0) == [.init(id: UInt32(chain.head), length: 1)])
        #expect(guest.irq.level)
    }

    @Test func completionAfterResetIsDropped() throws {
        let device = RecordingDevice(completeAtOnce: false)
        let guest = FakeGuest(device: device)
        guest.initialize()
        guest.submit(queue: 0, readable: [[5]], writable: [4])
        let stale = try #require(device.chains.first, "no chain popped")
        guest.initialize()  // resets and sets up fresh rings
        let transport = try #require(device.transport, "the device was never given its transport")
        transport.complete(stale, written: 1)
        #expect(guest.usedIdx(queue: 0) == 0)
        #expect(!guest.irq.level)
        #expect(!guest.needsReset)
    }
}

/// Ways a guest can break the queue rules; each must end in NEEDS_RESET, never a crash or hang.
enum BadChain: String, CaseIterable, CustomTestStringConvertible {
    case loop, selfLoop, bufferOutsideRAM, bufferWrapsAddressSpace, descriptorTableIndexOutOfRange, headOutOfRange
    case availIndexJump, readableAfterWritable, indirectNotNegotiated, nestedIndirect, indirectWithNext
    case indirectBadLength, indirectTooLarge, indirectOutsideRAM, indirectLoop, chainLongerThanQueue

    var testDescription: String { rawValue }

    /// Whether the driver negotiated VIRTIO_F_INDIRECT_DESC for this case.
    var indirect: Bool { self != .indirectNotNegotiated }

    /// Writes the bad chain into queue 0 (size 16) and makes it available.
    func inject(_ guest: FakeGuest) {
        let buffer = guest.alloc(64)
        switch self {
        case .loop:
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: .next, next: 1)
            guest.writeDescriptor(queue: 0, 1, address: buffer, length: 8, flags: .next, next: 0)
        case .selfLoop:
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: .next, next: 0)
        case .bufferOutsideRAM:
            guest.writeDescriptor(queue: 0, 0, address: GuestAddress(0x1000), length: 8, flags: [])
        case .bufferWrapsAddressSpace:
            guest.writeDescriptor(queue: 0, 0, address: GuestAddress(UInt64.max - 3), length: 8, flags: .write)
        case .descriptorTableIndexOutOfRange:
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: .next, next: 16)
        case .headOutOfRange:
            guest.makeAvailable(queue: 0, head: 999)
            return
        case .availIndexJump:
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: [])
            guest.setAvailIdx(queue: 0, 17)
            return
        case .readableAfterWritable:
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: [.write, .next], next: 1)
            guest.writeDescriptor(queue: 0, 1, address: buffer, length: 8, flags: [])
        case .indirectNotNegotiated, .indirectBadLength, .indirectWithNext, .nestedIndirect, .indirectTooLarge,
             .indirectOutsideRAM, .indirectLoop:
            let table = guest.alloc(16 * 32)
            var length: UInt32 = 16
            var flags: VirtqDescriptorFlags = .indirect
            var address = table
            guest.writeDescriptor(table: table, 0, address: buffer, length: 8, flags: [])
            switch self {
            case .indirectBadLength: length = 24
            case .indirectWithNext: flags = [.indirect, .next]
            case .nestedIndirect: guest.writeDescriptor(table: table, 0, address: table, length: 16, flags: .indirect)
            case .indirectTooLarge: length = 16 * 17
            case .indirectOutsideRAM: address = GuestAddress(0x4000)
            case .indirectLoop:
                length = 32
                guest.writeDescriptor(table: table, 0, address: buffer, length: 8, flags: .next, next: 1)
                guest.writeDescriptor(table: table, 1, address: buffer, length: 8, flags: .next, next: 0)
            default: break
            }
            guest.writeDescriptor(queue: 0, 0, address: address, length: length, flags: flags, next: 1)
            guest.writeDescriptor(queue: 0, 1, address: buffer, length: 8, flags: [])
        case .chainLongerThanQueue:
            // One direct descriptor, then an indirect table of 16: 17 buffers in a queue of 16.
            let table = guest.alloc(16 * 16)
            for i in 0..<16 {
                guest.writeDescriptor(table: table, UInt16(i), address: buffer, length: 8,
                                      flags: i < 15 ? .next : [], next: UInt16(i + 1))
            }
            guest.writeDescriptor(queue: 0, 0, address: buffer, length: 8, flags: .next, next: 1)
            guest.writeDescriptor(queue: 0, 1, address: table, length: 16 * 16, flags: .indirect)
        }
        guest.makeAvailable(queue: 0, head: 0)
    }
}

@Suite struct BadGuestTests {
    @Test(arguments: BadChain.allCases)
    func badChainNeedsResetThenRecovers(_ bad: BadChain) {
        let device = RecordingDevice()
        let guest = FakeGuest(device: device)
        guest.initialize(accept: { bad.indirect ? $0 : $0.subtracting(.indirectDescriptors) })
        bad.inject(guest)
        guest.notify(0)
        #expect(guest.needsReset)
        #expect(guest.takeUsed(queue: 0).isEmpty)
        // §2.1.2: a configuration change notification once DRIVER_OK is set.
        #expect(guest.irq.level)
        #expect(guest.acknowledgeInterrupt() == .configChange)
        // Dead until reset: more notifies do nothing, the driver cannot clear the bit.
        guest.notify(0)
        guest.addStatus(.driverOK)
        guest.write(.status, guest.reg(.status) & ~VirtioStatus.deviceNeedsReset.rawValue)
        #expect(guest.needsReset)
        #expect(guest.takeUsed(queue: 0).isEmpty)
        // After a reset the device works again.
        guest.initialize()
        #expect(!guest.needsReset)
        guest.submit(queue: 0, readable: [[1, 2]], writable: [2])
        #expect(guest.takeUsed(queue: 0).map(\.length) == [2])
    }

    @Test func ringOutsideRAMAtQueueReady() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.write(.status, 0)
        guest.addStatus([.acknowledge, .driver])
        guest.writeDriverFeatures(.version1)
        guest.addStatus(.featuresOK)
        guest.write(.queueSel, 0)
        guest.setQueueAddresses(desc: GuestAddress(0x1000), avail: guest.alloc(64), used: guest.alloc(256, align: 4))
        guest.write(.queueReady, 1)
        #expect(guest.reg(.queueReady) == 0)
        #expect(guest.needsReset)
        // No DRIVER_OK yet: no interrupt.
        #expect(!guest.irq.level)
    }

    @Test(arguments: [UInt32(0), 3, 32, 0x1_0000])
    func badQueueSizeAtQueueReady(size: UInt32) {
        let guest = FakeGuest(device: RecordingDevice())
        guest.write(.status, 0)
        guest.addStatus([.acknowledge, .driver])
        guest.write(.queueSel, 0)
        guest.write(.queueNum, size)
        guest.setQueueAddresses(desc: guest.alloc(512, align: 16), avail: guest.alloc(64), used: guest.alloc(256, align: 4))
        guest.write(.queueReady, 1)
        #expect(guest.needsReset)
    }

    @Test func misalignedRing() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.write(.status, 0)
        guest.write(.queueSel, 0)
        guest.setQueueAddresses(desc: GuestAddress(guest.alloc(512, align: 16).rawValue + 8),
                                avail: guest.alloc(64), used: guest.alloc(256, align: 4))
        guest.write(.queueReady, 1)
        #expect(guest.needsReset)
    }
}

@Suite struct TransportSnapshotTests {
    @Test func saveAndRestoreKeepsQueueProgress() throws {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize()
        guest.submit(queue: 0, readable: [[1]], writable: [1])
        guest.acknowledgeInterrupt()
        let saved = guest.mmio.saveState()
        #expect(saved.queues[0].usedIndex == 1)
        #expect(saved.queues[0].lastAvailIndex == 1)

        // A fresh transport over the same RAM takes over where the first stopped.
        let device2 = RecordingDevice()
        let restored = VirtioMMIO(name: "restored", device: device2, memory: guest.memory, irq: guest.irq)
        try restored.restore(saved)
        #expect(restored.saveState() == saved)
        #expect(device2.log.withLock { $0.activations } == 1)
        guest.mmio = restored
        guest.submit(queue: 0, readable: [[2, 3]], writable: [2])
        #expect(guest.takeUsed(queue: 0).map(\.length) == [1, 2])
    }

    @Test func restoreRejectsBadStates() {
        let guest = FakeGuest(device: RecordingDevice())
        guest.initialize()
        let good = guest.mmio.saveState()
        var cases: [VirtioMMIO.State] = []
        var s = good
        s.version = 99
        cases.append(s)
        s = good
        s.deviceID = 2
        cases.append(s)
        s = good
        s.driverFeatures |= 1 << 5
        cases.append(s)
        s = good
        s.queues = []
        cases.append(s)
        s = good
        s.queues[0].descriptorTable = 0x10
        cases.append(s)
        s = good
        s.queues[0].size = 12
        cases.append(s)
        s = good
        s.queues[0].lastAvailIndex = 100
        cases.append(s)
        s = good
        s.status = 0xff
        cases.append(s)
        for bad in cases {
            #expect(throws: SystemError.self) { try guest.mmio.restore(bad) }
        }
        // A refused state changes nothing.
        #expect(guest.mmio.saveState() == good)
    }
}

@Suite struct DescriptorChainTests {
    @Test func segmentsAndCopiesRespectBounds() throws {
        let memory = try GuestMemory(base: GuestAddress(ramBase), size: 1 << 16)
        let a = GuestAddress(ramBase + 0x100)
        let b = GuestAddress(ramBase + 0x200)
        let w = GuestAddress(ramBase + 0x300)
        try memory.writeBytes([1, 2, 3, 4], at: a)
        try memory.writeBytes([5, 6], at: b)
        let chain = DescriptorChain(memory: memory, head: 3,
                                    readable: [GuestBuffer(address: a, length: 4), GuestBuffer(address: b, length: 2)],
                                    writable: [GuestBuffer(address: w, length: 3)])
        #expect(chain.readableLength == 6)
        #expect(chain.writableLength == 3)
        #expect(chain.segments(.readable, offset: 3, count: 2)
                == [GuestBuffer(address: GuestAddress(a.rawValue + 3), length: 1), GuestBuffer(address: b, length: 1)])
        #expect(chain.segments(.readable, offset: 5, count: 2) == nil)
        #expect(chain.segments(.readable, offset: -1, count: 1) == nil)
        #expect(chain.segments(.writable, offset: 3, count: 0) == [])
        #expect(try chain.readBytes(at: 2, count: 4) == [3, 4, 5, 6])
        #expect(throws: VirtioError.self) { try chain.readBytes(at: 0, count: 7) }
        try chain.writeBytes([9, 8], at: 1)
        #expect(try memory.readBytes(at: w, count: 3) == [0, 9, 8])
        #expect(throws: VirtioError.self) { try chain.writeBytes([1, 2], at: 2) }
        var gathered: [UInt8] = []
        try chain.forEachReadableSegment(offset: 1, count: 5) { gathered += $0 }
        #expect(gathered == [2, 3, 4, 5, 6])
        #expect(throws: VirtioError.self) { try chain.forEachWritableSegment(offset: 0, count: 4) { _ in } }
    }
}
