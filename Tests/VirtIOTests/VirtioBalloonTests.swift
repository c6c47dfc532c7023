import Devices
import GuestMemory
import Synchronization
import SystemSupport
import Testing
import VirtIO

/// virtio-balloon (§5.5) driven as Linux's virtio_balloon drives it: PFN arrays on the inflate
/// and deflate queues, `actual` written to the config, one stats buffer kept by the device.
@Suite struct VirtioBalloonTests {
    static let ramSize: UInt64 = 16 << 20
    /// Pages the tests balloon: well above what FakeGuest allocates for rings and buffers.
    static let firstPage = (ramBase + (8 << 20)) >> 12

    /// BALLOON_CHANGE as the VMM would send it: the `actualBytes` of each change.
    final class ChangeLog: Sendable {
        let values = Mutex<[UInt64]>([])
        var all: [UInt64] { values.withLock { $0 } }
    }

    struct Harness {
        let balloon: VirtioBalloon
        let guest: FakeGuest
        let changes = ChangeLog()

        /// `ram`: the machine's RAM as the board gives it (all of it unless said).
        init(ram: [AddressRange]? = nil, deflateOnOOM: Bool = false, initialize: Bool = true) {
            balloon = VirtioBalloon(ram: ram ?? [AddressRange(base: GuestAddress(ramBase), size: VirtioBalloonTests.ramSize)!],
                                    deflateOnOOM: deflateOnOOM)
            guest = FakeGuest(device: balloon, ramSize: VirtioBalloonTests.ramSize)
            let changes = self.changes
            balloon.setActualChangeListener { actual in changes.values.withLock { $0.append(actual) } }
            if initialize { #expect(guest.initialize()) }
        }

        func fill(page: UInt64, with byte: UInt8) {
            try! guest.memory.writeBytes([UInt8](repeating: byte, count: 4096), at: GuestAddress(page << 12))
        }

        func page(_ page: UInt64) -> [UInt8] { guest.bytes(at: GuestAddress(page << 12), count: 4096) }

        /// Linux's tell_host: one readable buffer of le32 PFNs.
        @discardableResult
        func send(_ pfns: [UInt64], queue: Int) -> UInt16 {
            guest.submit(queue: queue, readable: [pfns.flatMap { le(UInt32(truncatingIfNeeded: $0)) }], writable: []).head
        }

        func writeActual(_ pages: UInt32) {
            guest.mmio.write(offset: VirtioMMIO.configOffset + 4, value: UInt64(pages), size: 4)
        }
    }

    @Test func identityFeaturesAndConfig() {
        let h = Harness()
        #expect(h.guest.reg(.deviceID) == 5)
        #expect(h.guest.deviceFeatures.contains(VirtioBalloon.Feature.statsQueue))
        #expect(!h.guest.deviceFeatures.contains(VirtioBalloon.Feature.deflateOnOOM))
        #expect(h.guest.queues.count == 3)
        #expect(h.guest.config(UInt32.self, at: 0) == 0)
        #expect(h.guest.config(UInt32.self, at: 4) == 0)
        #expect(h.guest.config(UInt32.self, at: 8) == 0, "no fields past actual")
        #expect(Harness(deflateOnOOM: true).guest.deviceFeatures.contains(VirtioBalloon.Feature.deflateOnOOM))
    }

    /// QEMU's virtio_balloon_to_target: num_pages = (RAM - target) / 4 KiB, with a
    /// configuration change interrupt; more than the RAM is all of it, zero changes nothing.
    @Test func targetSetsNumPages() {
        let h = Harness()
        let generation = h.guest.reg(.configGeneration)
        h.balloon.setTarget(bytes: Self.ramSize - (4 << 20))
        #expect(h.guest.config(UInt32.self, at: 0) == 1024)
        #expect(h.guest.reg(.configGeneration) != generation)
        #expect(h.guest.acknowledgeInterrupt() == .configChange)
        h.balloon.setTarget(bytes: 1 << 40)
        #expect(h.guest.config(UInt32.self, at: 0) == 0)
        h.balloon.setTarget(bytes: 0)
        #expect(h.guest.config(UInt32.self, at: 0) == 0)
        #expect(h.balloon.targetPages == 0)
        // Before DRIVER_OK the target is kept and read at probe; no interrupt.
        let early = Harness(initialize: false)
        early.balloon.setTarget(bytes: Self.ramSize / 2)
        #expect(early.guest.config(UInt32.self, at: 0) == UInt32(Self.ramSize / 2 / 4096))
        #expect(!early.guest.irq.level)
    }

    /// `actual` is the driver's; each change is announced with the RAM the guest has left.
    @Test func actualWritesAreAnnounced() {
        let h = Harness()
        #expect(h.balloon.actualBytes == Self.ramSize)
        h.writeActual(256)
        #expect(h.guest.config(UInt32.self, at: 4) == 256)
        #expect(h.balloon.actualBytes == Self.ramSize - (1 << 20))
        h.writeActual(256)  // unchanged: no event
        // Byte writes land in the field too.
        h.guest.mmio.write(offset: VirtioMMIO.configOffset + 5, value: 2, size: 1)
        #expect(h.guest.config(UInt32.self, at: 4) == 512)
        // num_pages is the device's: a driver write is ignored.
        h.guest.mmio.write(offset: VirtioMMIO.configOffset, value: 77, size: 4)
        #expect(h.guest.config(UInt32.self, at: 0) == 0)
        // A driver claiming more pages than the RAM has leaves it nothing, not a wrap.
        h.writeActual(UInt32.max)
        #expect(h.balloon.actualBytes == 0)
        #expect(h.changes.all == [Self.ramSize - (1 << 20), Self.ramSize - (2 << 20), 0])
        // A reset driver holds no pages; the target stays.
        h.balloon.setTarget(bytes: Self.ramSize - 4096)
        h.guest.write(.status, 0)
        #expect(h.balloon.actualBytes == Self.ramSize)
        #expect(h.balloon.targetPages == 1)
    }

    /// Inflated pages lose their backing (read as zero) and count as written; pages around
    /// them and deflated pages keep their bytes; every chain comes back used with no bytes.
    @Test func inflateDropsPagesDeflateKeepsThem() {
        let h = Harness()
        let pages = (0..<6).map { Self.firstPage + UInt64($0) }
        for (i, page) in pages.enumerated() { h.fill(page: page, with: UInt8(0x10 + i)) }
        h.guest.memory.setDirtyTracking(true)
        _ = h.guest.memory.takeDirtyPages()
        // Pages 1, 2 (one run) and 4 inflated, out of order runs included.
        let head = h.send([pages[4], pages[1], pages[2]], queue: VirtioBalloon.QueueIndex.inflate)
        #expect(h.guest.takeUsed(queue: 0) == [.init(id: UInt32(head), length: 0)])
        #expect(h.guest.acknowledgeInterrupt() == .usedBuffer)
        for i in [1, 2, 4] { #expect(h.page(pages[i]).allSatisfy { $0 == 0 }, "page \(i)") }
        for i in [0, 3, 5] { #expect(h.page(pages[i]).allSatisfy { $0 == UInt8(0x10 + i) }, "page \(i)") }
        let dirty = Set(h.guest.memory.takeDirtyPages().map(\.rawValue))
        #expect(dirty.isSuperset(of: [1, 2, 4].map { pages[$0] << 12 }))
        #expect(!dirty.contains(pages[3] << 12))
        // Deflate: nothing to do but give the buffer back.
        let deflate = h.send([pages[3]], queue: VirtioBalloon.QueueIndex.deflate)
        #expect(h.guest.takeUsed(queue: 1) == [.init(id: UInt32(deflate), length: 0)])
        #expect(h.page(pages[3]).allSatisfy { $0 == 0x13 })
        #expect(!h.guest.needsReset)
    }

    /// PFNs that are no RAM of the machine (past the end, below it, the board's ROM, the
    /// largest le32) are ignored without harm; the good ones in the same list still go.
    @Test func badPFNsAreIgnored() {
        // The board says only the upper half is RAM (the rest stands for its ROM).
        let upper = AddressRange(base: GuestAddress(ramBase + Self.ramSize / 2), size: Self.ramSize / 2)!
        let h = Harness(ram: [upper])
        let rom = (ramBase + (1 << 20)) >> 12
        let good = Self.firstPage + 10
        h.fill(page: rom, with: 0x55)
        h.fill(page: good, with: 0x66)
        let end = (ramBase + Self.ramSize) >> 12
        h.send([0, 1, rom, end, end + 1, 0xffff_ffff, good, (ramBase >> 12) - 1], queue: 0)
        #expect(h.guest.takeUsed(queue: 0).count == 1)
        #expect(h.page(rom).allSatisfy { $0 == 0x55 })
        #expect(h.page(good).allSatisfy { $0 == 0 })
        // The last page of RAM followed by the first past it: a run must stop at the end.
        h.fill(page: end - 1, with: 0x77)
        h.send([end - 1, end], queue: 0)
        #expect(h.page(end - 1).allSatisfy { $0 == 0 })
        #expect(!h.guest.needsReset)
    }

    /// Chains of any shape: PFNs split across descriptors and across an indirect table, a
    /// trailing partial PFN, no readable bytes at all, writable buffers (ignored), empty
    /// descriptors. None is an error; every one comes back.
    @Test func chainsOfAnyShape() {
        let h = Harness()
        let a = Self.firstPage + 20, b = Self.firstPage + 21, c = Self.firstPage + 22
        for page in [a, b, c] { h.fill(page: page, with: 0x99) }
        let pfnBytes = [a, b].flatMap { le(UInt32($0)) }
        // Split mid-PFN over three descriptors, plus two stray bytes.
        h.guest.submit(queue: 0, readable: [Array(pfnBytes[0..<3]), Array(pfnBytes[3..<6]), Array(pfnBytes[6...]) + [1, 2]], writable: [])
        h.guest.submit(queue: 0, readable: [], writable: [64])
        h.guest.submit(queue: 0, readable: [[], le(UInt32(c))], writable: [8], indirect: true)
        h.guest.submit(queue: 1, readable: [[0xff]], writable: [])
        #expect(h.guest.takeUsed(queue: 0).map(\.length) == [0, 0, 0])
        #expect(h.guest.takeUsed(queue: 1).map(\.length) == [0])
        for page in [a, b, c] { #expect(h.page(page).allSatisfy { $0 == 0 }) }
        #expect(!h.guest.needsReset)
    }

    /// A chain that breaks the queue rules is the transport's to refuse: NEEDS_RESET, and the
    /// device works again after a reset.
    @Test func brokenChainNeedsReset() {
        let h = Harness()
        h.guest.writeDescriptor(queue: 0, 0, address: GuestAddress(0x1000), length: 4, flags: [])  // not RAM
        h.guest.makeAvailable(queue: 0, head: 0)
        h.guest.notify(0)
        #expect(h.guest.needsReset)
        #expect(h.guest.initialize())
        let page = Self.firstPage + 30
        h.fill(page: page, with: 1)
        h.send([page], queue: 0)
        #expect(h.page(page).allSatisfy { $0 == 0 })
    }

    /// §5.5.6.3: the driver's statistics are kept; the buffer stays with the device until the
    /// host asks for new ones, then goes back used with no bytes.
    @Test func statistics() {
        let h = Harness()
        func record(_ tag: UInt16, _ value: UInt64) -> [UInt8] { le(tag) + le(value) }
        let stats = record(4, 123 << 20) + record(5, 1 << 30) + record(99, 7) + record(0, 5) + [0xaa, 0xbb]
        let first = h.guest.submit(queue: 2, readable: [stats], writable: []).head
        #expect(h.guest.takeUsed(queue: 2).isEmpty, "kept until the host asks")
        var s = h.balloon.statistics
        #expect(s.values[4] == 123 << 20 && s.values[5] == 1 << 30 && s.values[0] == 5)
        #expect(s.values[1] == nil && s.lastUpdate > 0)
        #expect(h.balloon.requestStatistics())
        #expect(h.guest.takeUsed(queue: 2) == [.init(id: UInt32(first), length: 0)])
        #expect(!h.balloon.requestStatistics(), "nothing in hand")
        // The next report replaces every value (a tag not sent is unreported again).
        h.guest.submit(queue: 2, readable: [record(1, 42)], writable: [])
        s = h.balloon.statistics
        #expect(s.values[1] == 42 && s.values[4] == nil)
        // A second buffer before the first was used: the first goes back.
        let second = h.guest.submit(queue: 2, readable: [record(2, 9)], writable: []).head
        #expect(h.guest.takeUsed(queue: 2).count == 1)
        // Before a save the buffer in hand goes back, so the queues hold nothing in flight.
        h.balloon.quiesce()
        #expect(h.guest.takeUsed(queue: 2) == [.init(id: UInt32(second), length: 0)])
        // A reset drops it without a used element.
        h.guest.submit(queue: 2, readable: [record(2, 9)], writable: [])
        h.guest.write(.status, 0)
        #expect(!h.balloon.requestStatistics())
        #expect(h.balloon.statistics.lastUpdate == 0)
    }

    /// Linux primes the stats queue before DRIVER_OK (init_vqs): the device takes that buffer
    /// when the driver sets DRIVER_OK, or the host would never see statistics.
    @Test func statisticsPrimedBeforeDriverOK() {
        let h = Harness(initialize: false)
        let stats = le(UInt16(5)) + le(UInt64(256 << 20))
        #expect(h.guest.initialize(beforeDriverOK: { h.guest.submit(queue: 2, readable: [stats], writable: []) }))
        #expect(h.balloon.statistics.values[5] == 256 << 20)
        #expect(h.balloon.requestStatistics(), "the primed buffer is in hand")
    }

    /// The target and `actual` travel with the machine; a bad state is refused with a reason.
    @Test func snapshotRoundTrip() throws {
        let h = Harness()
        h.balloon.setTarget(bytes: Self.ramSize - (2 << 20))
        h.writeActual(300)
        let state = h.balloon.saveState()
        #expect(state.version == 1 && state.numPages == 512 && state.actual == 300)
        let transportState = h.guest.mmio.saveState()
        let copy = Harness(initialize: false)
        try copy.guest.mmio.restore(transportState)
        try copy.balloon.restore(state)
        #expect(copy.guest.config(UInt32.self, at: 0) == 512)
        #expect(copy.guest.config(UInt32.self, at: 4) == 300)
        #expect(copy.changes.all.isEmpty, "a restore is no guest change")
        var newer = state
        newer.version = 2
        #expect(throws: SystemError.self) { try copy.balloon.restore(newer) }
        var tooMany = state
        tooMany.numPages = UInt32(Self.ramSize / 4096) + 1
        #expect(throws: SystemError.self) { try copy.balloon.restore(tooMany) }
    }
}
