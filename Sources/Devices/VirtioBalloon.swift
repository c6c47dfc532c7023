import DeviceModel
import Glibc
import GuestMemory
import Synchronization
import SystemSupport
import VirtIO

/// virtio-balloon, the traditional memory balloon (virtio 1.2 §5.5), as QEMU's
/// `virtio-balloon-device`: the host sets a target (`num_pages`, pages the guest should give
/// back); the driver allocates that many pages and lists them on the inflate queue, and the
/// host drops their backing so the host can reuse the memory; it lists pages it takes back on
/// the deflate queue and reports its progress in `actual`. The stats queue carries the
/// guest's memory statistics (§5.5.6.3).
///
/// Pages are always 4 KiB (§5.5.6: "page frame numbers ... 4096-byte pages"), whatever the
/// guest's own page size. A PFN that names no RAM of the machine's (a ROM, MMIO, past the
/// end) is ignored, as QEMU ignores it.
///
/// **Threads.** `process` runs under the transport's device lock (one queue at a time); the
/// monitors call `setTarget`, `requestStatistics` and the getters from their own threads, so
/// the state is behind a `Mutex`, and calls out (the transport, the listener) happen after it
/// is released.
package final class VirtioBalloon: VirtioDevice, Snapshottable {
    /// Device feature bits (§5.5.3).
    package enum Feature {
        /// VIRTIO_BALLOON_F_STATS_VQ: the stats queue is live. Always offered, as QEMU's.
        package static let statsQueue = VirtioFeatures(bit: 1)
        /// VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest may deflate on its own when it runs out
        /// of memory. Offered only when asked (QEMU's `deflate-on-oom=on`): it lets the guest
        /// take back memory the host reclaimed.
        package static let deflateOnOOM = VirtioFeatures(bit: 2)
    }

    /// The queues (§5.5.2): inflateq, deflateq, statsq. The free-page-hint and reporting
    /// queues are not offered.
    package enum QueueIndex {
        package static let inflate = 0
        package static let deflate = 1
        package static let stats = 2
    }

    /// The balloon's page size: PFNs are in 4 KiB units (VIRTIO_BALLOON_PFN_SHIFT 12).
    package static let pageSize: UInt64 = 4096
    /// Each queue's size (QEMU's 128).
    package static let queueSize: UInt16 = 128
    /// The most PFNs looked at per inflate/deflate chain: Linux sends up to 256
    /// (VIRTIO_BALLOON_ARRAY_PFNS_MAX); a larger list is the guest's to repeat, and this keeps
    /// the work one notification costs bounded.
    package static let maxPagesPerChain = 4096
    /// `struct virtio_balloon_stat` (§5.5.6.3): le16 tag, le64 val, packed.
    package static let statSize = 10

    /// The statistics tags (§5.5.6.3), by tag number, with QEMU's `guest-stats` names.
    package static let statisticNames = [
        "stat-swap-in", "stat-swap-out", "stat-major-faults", "stat-minor-faults", "stat-free-memory",
        "stat-total-memory", "stat-available-memory", "stat-disk-caches", "stat-htlb-pgalloc", "stat-htlb-pgfail",
    ]

    /// The guest's last statistics: a value per tag (nil: not reported, QEMU's -1), and when
    /// they came (seconds since the Epoch; 0: never).
    package struct Statistics: Sendable, Equatable {
        package var values: [UInt64?] = Array(repeating: nil, count: VirtioBalloon.statisticNames.count)
        package var lastUpdate: Int64 = 0
    }

    /// The device's snapshot (DESIGN.md §5): the target and the driver's count. The stats
    /// buffer in hand is returned to the driver before a save (`quiesce`), and the
    /// statistics are the host's cache of what the guest sends again.
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1
        package var version: UInt32
        package var numPages: UInt32
        package var actual: UInt32
    }

    private struct Shared {
        /// `num_pages`: the host's target, pages the driver should hold in the balloon.
        var numPages: UInt32 = 0
        /// `actual`: the pages the driver says it holds.
        var actual: UInt32 = 0
        /// Set at DRIVER_OK, cleared at reset.
        var transport: (any VirtioTransport)?
        /// The driver's stats buffer, kept until the host wants fresh statistics (§5.5.6.3).
        var statsChain: DescriptorChain?
        var statistics = Statistics()
        var onActualChange: (@Sendable (_ actualBytes: UInt64) -> Void)?
    }

    /// The machine's RAM, where inflated pages may be: not its ROMs (QEMU discards only RAM
    /// that is not ROM).
    package let ram: [AddressRange]
    /// Their total: what `actual` and the target are counted from.
    package let ramSize: UInt64
    package let deviceFeatures: VirtioFeatures
    private let shared = Mutex(Shared())

    package init(ram: [AddressRange], deflateOnOOM: Bool = false) {
        self.ram = ram
        ramSize = ram.reduce(0) { $0 + $1.size }
        deviceFeatures = deflateOnOOM ? [Feature.statsQueue, Feature.deflateOnOOM] : Feature.statsQueue
    }

    package var deviceID: VirtioDeviceID { .balloon }
    package var queueMaxSizes: [UInt16] { [Self.queueSize, Self.queueSize, Self.queueSize] }

    /// §5.5.4: le32 num_pages, le32 actual. free_page_hint_cmd_id and poison_val follow only
    /// with features not offered, so the space ends after `actual` (QEMU's size for them).
    package func configSpace() -> [UInt8] {
        let (numPages, actual) = shared.withLock { ($0.numPages, $0.actual) }
        var config = VirtioConfigSpace(size: 8)
        config.put(numPages, at: 0)
        config.put(actual, at: 4)
        return config.bytes
    }

    /// The driver writes `actual` (§5.5.6: "the driver SHOULD update actual"); `num_pages` is
    /// the device's, and a write to it is ignored. QEMU sends BALLOON_CHANGE when it moves.
    package func writeConfig(offset: Int, value: UInt64, size: Int) {
        let (changed, listener) = shared.withLock { s -> (UInt64?, (@Sendable (UInt64) -> Void)?) in
            var actual = s.actual
            for i in 0..<size where (4..<8).contains(offset + i) {
                let shift = UInt32(8 * (offset + i - 4))
                actual = (actual & ~(0xff << shift)) | UInt32(UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))) << shift
            }
            guard actual != s.actual else { return (nil, nil) }
            s.actual = actual
            return (actualBytes(s), s.onActualChange)
        }
        if let changed { listener?(changed) }
    }

    /// The statistics buffer Linux primes (and notifies) before DRIVER_OK comes next: the
    /// transport processes the queues notified before DRIVER_OK once it is set.
    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {
        shared.withLock { $0.transport = transport }
    }

    /// A reset driver holds no pages (Linux deflates before it lets the device go, and a
    /// rebooted guest starts with all its RAM); the host's target stays, as QEMU's.
    package func reset() {
        shared.withLock { s in
            s.transport = nil
            s.statsChain = nil
            s.actual = 0
            s.statistics = Statistics()
        }
    }

    /// Before a save: the stats buffer goes back to the driver (which refills it after the
    /// restore), so the queues hold no request in hand.
    package func quiesce() {
        returnStatsBuffer()
    }

    package func process(queue: Int, transport: any VirtioTransport) {
        switch queue {
        case QueueIndex.inflate, QueueIndex.deflate:
            while let chain = transport.popAvailable(queue: queue) {
                if queue == QueueIndex.inflate { inflate(chain, memory: transport.memory) }
                // §5.5.6: deflated pages need nothing (VIRTIO_BALLOON_F_MUST_TELL_HOST is not
                // offered, so the guest may already be using them); the RAM behind them comes
                // back on first touch.
                transport.pushUsed(chain, written: 0)
            }
            transport.notifyIfNeeded(queue: queue)
        case QueueIndex.stats:
            while let chain = transport.popAvailable(queue: queue) { receiveStatistics(chain, transport: transport) }
        default:
            break
        }
    }

    // MARK: Inflate (§5.5.6)

    /// Drops the backing of each page the chain lists: an array of le32 PFNs in its readable
    /// part. Runs of consecutive pages are discarded with one call.
    private func inflate(_ chain: DescriptorChain, memory: GuestMemory) {
        let count = min(chain.readableLength / 4, Self.maxPagesPerChain)
        guard count > 0, let bytes = try? chain.readBytes(at: 0, count: count * 4) else { return }
        var run: (start: UInt64, pages: UInt64, range: AddressRange)?
        func flush() {
            guard let r = run else { return }
            run = nil
            do {
                try memory.discard(at: GuestAddress(r.start), count: r.pages * Self.pageSize)
            } catch {
                DebugLog.log(.guestErrors, "virtio-balloon: \(error)")
            }
        }
        for i in 0..<count {
            let pfn = UInt32(bytes[4 * i]) | UInt32(bytes[4 * i + 1]) << 8 | UInt32(bytes[4 * i + 2]) << 16 | UInt32(bytes[4 * i + 3]) << 24
            let address = UInt64(pfn) * Self.pageSize
            if let r = run, address == r.start + r.pages * Self.pageSize, r.range.contains(GuestAddress(address), count: Self.pageSize) {
                run?.pages += 1
                continue
            }
            flush()
            guard let range = ram.first(where: { $0.contains(GuestAddress(address), count: Self.pageSize) }) else {
                DebugLog.log(.guestErrors, "virtio-balloon: inflated PFN \(hex(UInt64(pfn))) is not RAM; ignored")
                continue
            }
            run = (address, 1, range)
        }
        flush()
    }

    // MARK: Statistics (§5.5.6.3)

    /// Takes the driver's statistics and keeps the buffer: the device uses it (§5.5.6.3 "the
    /// device ... uses the buffer") only to ask for the next ones.
    private func receiveStatistics(_ chain: DescriptorChain, transport: any VirtioTransport) {
        // Tags this device does not know are skipped; a partial record at the end is ignored.
        let records = min(chain.readableLength / Self.statSize, 256)
        let bytes = (try? chain.readBytes(at: 0, count: records * Self.statSize)) ?? []
        var statistics = Statistics()
        for r in 0..<bytes.count / Self.statSize {
            let record = bytes[(r * Self.statSize)..<((r + 1) * Self.statSize)]
            let tag = Int(record.prefix(2).reversed().reduce(0) { $0 << 8 | UInt16($1) })
            let value = record.suffix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if tag < statistics.values.count { statistics.values[tag] = value }
        }
        statistics.lastUpdate = Int64(time(nil))
        let older = shared.withLock { s in
            // QEMU resets the values on every update: a guest that stops sending a tag
            // (another kernel) shows it as unreported, not stale.
            s.statistics = statistics
            defer { s.statsChain = chain }
            return s.statsChain
        }
        // A driver that sends a second buffer before the first was used breaks §5.5.6.3; give
        // the first one back rather than lose it (QEMU's virtio_balloon_receive_stats).
        if let older { transport.complete(older, written: 0) }
    }

    /// Gives the stats buffer back, which asks the driver for fresh statistics (QEMU's
    /// stats timer, `guest-stats-polling-interval`). False when the driver holds none here.
    @discardableResult
    package func requestStatistics() -> Bool { returnStatsBuffer() }

    @discardableResult
    private func returnStatsBuffer() -> Bool {
        let (chain, transport) = shared.withLock { s in
            defer { s.statsChain = nil }
            return (s.statsChain, s.transport)
        }
        guard let chain, let transport else { return false }
        transport.complete(chain, written: 0)
        return true
    }

    // MARK: Host side (the monitors)

    /// `balloon value=BYTES` (QEMU's virtio_balloon_to_target): the guest should have `bytes`
    /// of RAM, so the balloon should hold the rest. More than the RAM means all of it; zero
    /// leaves the target as it was. The driver learns of it by a configuration change.
    package func setTarget(bytes: UInt64) {
        let target = min(bytes, ramSize)
        guard target > 0 else { return }
        let transport = shared.withLock { s in
            s.numPages = UInt32(clamping: (ramSize - target) / Self.pageSize)
            return s.transport
        }
        transport?.configChanged()
    }

    /// `query-balloon` `actual`: the RAM the guest has, by its own count (QEMU: RAM size minus
    /// `actual` pages).
    package var actualBytes: UInt64 { shared.withLock { actualBytes($0) } }

    private func actualBytes(_ s: Shared) -> UInt64 {
        let held = UInt64(s.actual) * Self.pageSize
        return held < ramSize ? ramSize - held : 0
    }

    /// `num_pages`, the host's target in balloon pages.
    package var targetPages: UInt32 { shared.withLock { $0.numPages } }

    /// The guest's last statistics.
    package var statistics: Statistics { shared.withLock { $0.statistics } }

    /// Called with the new `actualBytes` whenever the driver changes `actual` (QMP's
    /// BALLOON_CHANGE), on the vCPU thread that wrote it.
    package func setActualChangeListener(_ listener: (@Sendable (_ actualBytes: UInt64) -> Void)?) {
        shared.withLock { $0.onActualChange = listener }
    }

    // MARK: Snapshot

    package func saveState() -> State {
        shared.withLock { State(version: State.currentVersion, numPages: $0.numPages, actual: $0.actual) }
    }

    /// Loads an untrusted saved state. Restore the transport (`VirtioMMIO.restore`, which
    /// resets the device) first, then the device.
    package func restore(_ state: State) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("virtio-balloon snapshot: \(what)") }
        guard state.version == State.currentVersion else {
            throw bad("state version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard UInt64(state.numPages) * Self.pageSize <= ramSize else {
            throw bad("target of \(state.numPages) pages is more than the \(ramSize / Self.pageSize) pages of RAM")
        }
        shared.withLock { s in
            s.numPages = state.numPages
            s.actual = state.actual
        }
    }
}
