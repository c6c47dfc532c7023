import DeviceModel
import Glibc
import Synchronization
import SystemSupport
import VirtIO

/// virtio-blk (virtio 1.2 §5.2) on a `BlockBackend`: one request queue, 512-byte sectors.
///
/// Requests: IN, OUT, FLUSH, GET_ID, DISCARD and WRITE_ZEROES; anything else is answered
/// VIRTIO_BLK_S_UNSUPP. A request the disk cannot do (past the end, a write to a read-only
/// disk, a host I/O error) is answered VIRTIO_BLK_S_IOERR; a chain with no room for the
/// header or the status byte is not a request at all, and puts the device into NEEDS_RESET.
///
/// **Threads.** By default requests run to completion on the vCPU thread that wrote
/// QueueNotify: the guest's vCPU waits for the disk, and the order is obvious. With an I/O
/// thread (`withIOThread`, what the boards use) the vCPU only hands the chains over and goes
/// back to the guest; one worker runs them in arrival order (so a FLUSH still follows the
/// writes before it) and completes them from its thread (DESIGN.md §4: blocking I/O off the
/// vCPU threads). A reset drops what the worker has not started; a chain it completes after
/// the reset is dropped by the transport.
///
/// **Durability.** VIRTIO_BLK_F_FLUSH is offered, so the guest sees a write-back cache and
/// sends FLUSH when it needs data on stable storage; FLUSH reaches the backend's `flush()`
/// (`fdatasync` for a raw file).
package final class VirtioBlock: VirtioDevice {
    /// Request types (§5.2.6).
    package enum RequestType: UInt32, Sendable {
        case read = 0  // VIRTIO_BLK_T_IN
        case write = 1  // VIRTIO_BLK_T_OUT
        case flush = 4
        case getID = 8
        case getLifetime = 10
        case discard = 11
        case writeZeroes = 13
        case secureErase = 14
    }

    /// The status byte at the end of every request (§5.2.6).
    package enum Status: UInt8, Sendable {
        case ok = 0
        case ioError = 1
        case unsupported = 2
    }

    /// Device feature bits (§5.2.3).
    package enum Feature {
        package static let sizeMax = VirtioFeatures(bit: 1)
        package static let segMax = VirtioFeatures(bit: 2)
        package static let geometry = VirtioFeatures(bit: 4)
        package static let readOnly = VirtioFeatures(bit: 5)
        package static let blockSize = VirtioFeatures(bit: 6)
        package static let flush = VirtioFeatures(bit: 9)
        package static let topology = VirtioFeatures(bit: 10)
        package static let configWCE = VirtioFeatures(bit: 11)
        package static let multiQueue = VirtioFeatures(bit: 12)
        package static let discard = VirtioFeatures(bit: 13)
        package static let writeZeroes = VirtioFeatures(bit: 14)
    }

    /// `struct virtio_blk_req` header: le32 type, le32 reserved, le64 sector.
    package static let headerSize = 16
    /// `struct virtio_blk_discard_write_zeroes`: le64 sector, le32 num_sectors, le32 flags.
    package static let segmentSize = 16
    /// The `unmap` bit of a discard / write-zeroes segment's flags.
    package static let segmentUnmap: UInt32 = 1
    /// GET_ID answers with a 20-byte, NUL-padded serial (§5.2.6).
    package static let serialLength = 20
    /// The request queue's size, QEMU's default.
    package static let queueSize: UInt16 = 256
    /// Buffers a request may carry besides its header and status (`seg_max`): QEMU's
    /// queue size − 2, so a whole request fits a chain of queue size descriptors (§2.7.5.3.1).
    package static let maxSegments = UInt32(queueSize) - 2
    /// Sectors one discard / write-zeroes segment may cover: QEMU's BDRV_REQUEST_MAX_SECTORS.
    package static let maxDiscardSectors: UInt32 = (UInt32(Int32.max) >> 9) & ~7
    /// Segments one discard / write-zeroes request may carry.
    package static let maxDiscardSegments: UInt32 = 32
    /// The size of the configuration space presented (through `unused1`, §5.2.4).
    package static let configSize = 60

    package let backend: any BlockBackend
    /// The GET_ID answer: the serial, NUL-padded to 20 bytes.
    package let serialBytes: [UInt8]
    /// What the requests did (`query-blockstats`).
    package let accounting: BlockAccounting

    /// - Parameters:
    ///   - backend: the disk; a read-only backend makes a read-only device (VIRTIO_BLK_F_RO).
    ///   - serial: what GET_ID reports (`-drive serial=`); cut to 20 bytes, as QEMU does.
    package init(backend: any BlockBackend, serial: String = "", accounting: BlockAccounting = BlockAccounting()) {
        self.backend = backend
        self.accounting = accounting
        let bytes = Array(serial.utf8.prefix(VirtioBlock.serialLength))
        serialBytes = bytes + [UInt8](repeating: 0, count: VirtioBlock.serialLength - bytes.count)
        worker = nil
    }

    private init(backend: any BlockBackend, serial: String, accounting: BlockAccounting, worker: BlockWorker) {
        self.backend = backend
        self.accounting = accounting
        let bytes = Array(serial.utf8.prefix(VirtioBlock.serialLength))
        serialBytes = bytes + [UInt8](repeating: 0, count: VirtioBlock.serialLength - bytes.count)
        self.worker = worker
    }

    /// A device whose requests run on their own I/O thread.
    package static func withIOThread(backend: any BlockBackend, serial: String = "",
                                     accounting: BlockAccounting = BlockAccounting()) throws(SystemError) -> VirtioBlock {
        let worker = try BlockWorker()
        let device = VirtioBlock(backend: backend, serial: serial, accounting: accounting, worker: worker)
        try worker.start(name: "virtio-blk", device: device)
        return device
    }

    /// The I/O thread's queue, when the device has one.
    private let worker: BlockWorker?

    // MARK: VirtioDevice

    package var deviceID: VirtioDeviceID { .block }

    package var deviceFeatures: VirtioFeatures {
        var features: VirtioFeatures = [Feature.segMax, Feature.blockSize, Feature.flush]
        if backend.readOnly {
            features.insert(Feature.readOnly)
        } else {
            features.formUnion([Feature.discard, Feature.writeZeroes])
        }
        return features
    }

    package var queueMaxSizes: [UInt16] { [VirtioBlock.queueSize] }

    /// `struct virtio_blk_config` (§5.2.4), little-endian.
    package func configSpace() -> [UInt8] {
        var config = VirtioConfigSpace(size: VirtioBlock.configSize)
        config.put(UInt64(backend.sectorCount), at: 0)  // capacity, in 512-byte sectors
        config.put(VirtioBlock.maxSegments, at: 12)  // seg_max
        config.put(UInt32(blockSectorSize), at: 20)  // blk_size
        config.put(UInt16(1), at: 34)  // num_queues
        config.put(VirtioBlock.maxDiscardSectors, at: 36)  // max_discard_sectors
        config.put(VirtioBlock.maxDiscardSegments, at: 40)  // max_discard_seg
        config.put(UInt32(1), at: 44)  // discard_sector_alignment, in sectors
        config.put(VirtioBlock.maxDiscardSectors, at: 48)  // max_write_zeroes_sectors
        config.put(VirtioBlock.maxDiscardSegments, at: 52)  // max_write_zeroes_seg
        config.put(UInt8(1), at: 56)  // write_zeroes_may_unmap: a punched hole reads as zeroes
        return config.bytes
    }

    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {}

    package func reset() {
        // Without a worker, requests complete before `process` returns: nothing is in hand.
        worker?.dropPending()
    }

    /// Waits until the I/O thread has completed every request handed to it, then flushes the
    /// disk: a snapshot or migration taken now has no request in flight, and what the guest
    /// was told is written is on the disk.
    package func quiesce() {
        worker?.waitIdle()
        try? backend.flush()
    }

    package func process(queue: Int, transport: any VirtioTransport) {
        guard queue == 0 else { return }
        if let worker {
            var chains: [DescriptorChain] = []
            while let chain = transport.popAvailable(queue: 0) { chains.append(chain) }
            worker.submit(chains, transport: transport)
            return
        }
        while let chain = transport.popAvailable(queue: 0) {
            guard run(chain, transport: transport) else { return }
        }
        transport.notifyIfNeeded(queue: 0)
    }

    /// Runs one request and returns its chain to the driver (without notifying); false when
    /// the chain was not a request and the device went into NEEDS_RESET.
    fileprivate func run(_ chain: DescriptorChain, transport: any VirtioTransport) -> Bool {
        do {
            let status = try execute(chain, features: transport.negotiatedFeatures)
            try chain.writeBytes([status.rawValue], at: chain.writableLength - 1)
        } catch {
            transport.deviceError(error)
            return false
        }
        // Like QEMU, report the whole writable part as written: data (for IN and GET_ID)
        // and the status byte.
        transport.pushUsed(chain, written: chain.writableLength)
        return true
    }

    // MARK: Requests

    /// Runs one request. Throws only for a chain that is not a request (§5.2.6: header first,
    /// status byte last and device-writable).
    private func execute(_ chain: DescriptorChain, features: VirtioFeatures) throws(VirtioError) -> Status {
        guard chain.readableLength >= VirtioBlock.headerSize else {
            throw .malformedRequest("virtio-blk request has \(chain.readableLength) device-readable bytes, fewer than its 16-byte header")
        }
        guard chain.writableLength >= 1 else {
            throw .malformedRequest("virtio-blk request has no device-writable status byte")
        }
        let header = try chain.readBytes(at: 0, count: VirtioBlock.headerSize)
        let type = littleEndian(UInt32.self, header, at: 0)
        let sector = littleEndian(UInt64.self, header, at: 8)
        // Data after the header (OUT, DISCARD, WRITE_ZEROES), or before the status (IN, GET_ID).
        let outCount = chain.readableLength - VirtioBlock.headerSize
        let inCount = chain.writableLength - 1

        switch RequestType(rawValue: type) {
        case .read?:
            guard let offset = byteRange(sector: sector, count: inCount) else { return .ioError }
            return perform(.read, offset: offset, bytes: UInt64(inCount)) { () throws in
                var position = offset
                try chain.forEachWritableSegment(offset: 0, count: inCount) { buffer in
                    try backend.read(at: position, into: buffer)
                    position += UInt64(buffer.count)
                }
            }
        case .write?:
            // §5.2.6.2: a read-only device answers writes with IOERR and writes nothing.
            guard !backend.readOnly else { return .ioError }
            guard let offset = byteRange(sector: sector, count: outCount) else { return .ioError }
            return perform(.write, offset: offset, bytes: UInt64(outCount)) { () throws in
                var position = offset
                try chain.forEachReadableSegment(offset: VirtioBlock.headerSize, count: outCount) { buffer in
                    try backend.write(at: position, from: buffer)
                    position += UInt64(buffer.count)
                }
            }
        case .flush?:
            return perform(.flush) { () throws in try backend.flush() }
        case .getID?:
            let count = min(inCount, VirtioBlock.serialLength)
            try chain.writeBytes(Array(serialBytes.prefix(count)), at: 0)
            return .ok
        case .discard?:
            guard features.contains(Feature.discard) else { return .unsupported }
            return try discardOrWriteZeroes(chain, count: outCount, zeroes: false)
        case .writeZeroes?:
            guard features.contains(Feature.writeZeroes) else { return .unsupported }
            return try discardOrWriteZeroes(chain, count: outCount, zeroes: true)
        case .getLifetime?, .secureErase?, nil:
            return .unsupported
        }
    }

    /// The byte offset of `count` bytes at `sector` if they are whole sectors inside the disk.
    private func byteRange(sector: UInt64, count: Int) -> UInt64? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: blockSectorSize)
        guard !overflow, count >= 0, UInt64(count) % blockSectorSize == 0,
              backend.contains(offset: offset, count: UInt64(count))
        else { return nil }
        return offset
    }

    /// DISCARD and WRITE_ZEROES (§5.2.6): a list of segments after the header. Every segment
    /// is checked before any is done, so a bad one leaves the disk untouched.
    private func discardOrWriteZeroes(_ chain: DescriptorChain, count: Int, zeroes: Bool) throws(VirtioError) -> Status {
        guard !backend.readOnly else { return .ioError }
        let segments = count / VirtioBlock.segmentSize
        guard count > 0, count % VirtioBlock.segmentSize == 0, segments <= Int(VirtioBlock.maxDiscardSegments) else {
            return .ioError
        }
        let bytes = try chain.readBytes(at: VirtioBlock.headerSize, count: count)
        var ranges: [(offset: UInt64, count: UInt64, unmap: Bool)] = []
        for i in 0..<segments {
            let base = i * VirtioBlock.segmentSize
            let sector = littleEndian(UInt64.self, bytes, at: base)
            let sectors = littleEndian(UInt32.self, bytes, at: base + 8)
            let flags = littleEndian(UInt32.self, bytes, at: base + 12)
            // §5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
            guard flags & ~VirtioBlock.segmentUnmap == 0, !(flags != 0 && !zeroes) else { return .unsupported }
            guard sectors <= VirtioBlock.maxDiscardSectors,
                  let offset = byteRange(sector: sector, count: Int(sectors) * Int(blockSectorSize))
            else { return .ioError }
            ranges.append((offset, UInt64(sectors) * blockSectorSize, flags & VirtioBlock.segmentUnmap != 0))
        }
        // QEMU accounts write-zeroes as writes, discards as unmaps.
        return perform(zeroes ? .write : .unmap, offset: ranges.map(\.offset).min() ?? 0, bytes: ranges.reduce(0) { $0 + $1.count }) { () throws in
            for range in ranges {
                if zeroes {
                    try backend.writeZeroes(at: range.offset, count: range.count, mayUnmap: range.unmap)
                } else {
                    try backend.discard(at: range.offset, count: range.count)
                }
            }
        }
    }

    /// Runs backend work, accounted as `kind` on `bytes` bytes at `offset`: a backend error is
    /// the guest's IOERR (logged); anything else thrown comes from guest memory and is
    /// malformed input, which `body` cannot produce for a validated chain, so it is reported
    /// as IOERR too.
    private func perform(_ kind: BlockAccounting.Kind, offset: UInt64 = 0, bytes: UInt64 = 0, _ body: () throws -> Void) -> Status {
        let start = BlockAccounting.now()
        do {
            try body()
            accounting.record(kind, offset: offset, bytes: bytes, start: start, failed: false)
            return .ok
        } catch {
            accounting.record(kind, offset: offset, bytes: bytes, start: start, failed: true)
            DebugLog.log(.guestErrors, "virtio-blk \(backend.label): \(kind) failed: \(error)")
            return .ioError
        }
    }
}

/// Reads a little-endian integer out of bytes the caller sized.
private func littleEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
    var value: T = 0
    for i in 0..<MemoryLayout<T>.size {
        value |= T(bytes[offset + i]) << (8 * i)
    }
    return value
}

/// The I/O thread of a virtio-blk device: chains queued by `process`, run in order.
private final class BlockWorker: Sendable {
    private let pending = Mutex<[(chain: DescriptorChain, transport: any VirtioTransport)]>([])
    /// Requests taken from `pending` and not yet completed.
    private let running = Atomic<Int>(0)
    private let wakeup: Wakeup

    init() throws(SystemError) {
        wakeup = try Wakeup()
    }

    /// Starts the thread. It holds the device weakly and ends once the device is gone.
    func start(name: String, device: VirtioBlock) throws(SystemError) {
        try HostThread.spawn(name: name) { [weak device, self] in
            while true {
                self.wakeup.wait(timeoutNanoseconds: 1_000_000_000)
                guard let device else { return }
                while true {
                    let batch = self.pending.withLock { queue in
                        let batch = queue
                        queue.removeAll()
                        self.running.store(batch.count, ordering: .sequentiallyConsistent)
                        return batch
                    }
                    defer { self.running.store(0, ordering: .sequentiallyConsistent) }
                    if batch.isEmpty { break }
                    var transports: [any VirtioTransport] = []
                    for item in batch {
                        guard device.run(item.chain, transport: item.transport) else {
                            self.dropPending()  // NEEDS_RESET: the rest waits for the reset
                            break
                        }
                        if !transports.contains(where: { $0 === item.transport }) { transports.append(item.transport) }
                    }
                    for transport in transports { transport.notifyIfNeeded(queue: 0) }
                }
            }
        }
    }

    func submit(_ chains: [DescriptorChain], transport: any VirtioTransport) {
        guard !chains.isEmpty else { return }
        pending.withLock { queue in queue += chains.map { ($0, transport) } }
        wakeup.signal()
    }

    func dropPending() {
        pending.withLock { $0.removeAll() }
    }

    /// Returns once nothing is queued or running. The vCPUs are parked, so nothing new comes.
    func waitIdle() {
        while pending.withLock({ !$0.isEmpty }) || running.load(ordering: .sequentiallyConsistent) != 0 {
            usleep(200)
        }
    }
}
