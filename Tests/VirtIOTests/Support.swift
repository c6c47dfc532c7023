import DeviceModel
import Glibc
import GuestMemory
import Synchronization
import SystemSupport
import Testing
import VirtIO

typealias Register = VirtioMMIO.Register

let ramBase: UInt64 = 0x8000_0000

/// A fake guest: RAM, an interrupt line, a virtio-mmio transport around `device`, and a driver
/// that programs it as Linux's `virtio_mmio` + `virtio_ring` do.
final class FakeGuest {
    struct Queue {
        let index: Int
        let size: UInt16
        let desc: GuestAddress
        let avail: GuestAddress
        let used: GuestAddress
        /// Next descriptor to hand out (round-robin; the devices under test complete at once).
        var nextDescriptor: UInt16 = 0
        /// The driver's shadow of avail->idx.
        var availIdx: UInt16 = 0
        /// How far the driver has read the used ring.
        var lastUsed: UInt16 = 0
    }

    struct Used: Equatable {
        var id: UInt32
        var length: UInt32
    }

    let memory: GuestMemory
    let irq = LevelInterruptLine()
    var mmio: VirtioMMIO
    var queues: [Queue] = []
    private var bump: UInt64

    init(device: any VirtioDevice, ramSize: UInt64 = 16 << 20) {
        memory = try! GuestMemory(base: GuestAddress(ramBase), size: ramSize)
        mmio = VirtioMMIO(name: "virtio-test", device: device, memory: memory, irq: irq)
        bump = ramBase + 0x1000
    }

    // MARK: Memory

    func alloc(_ size: Int, align: UInt64 = 16) -> GuestAddress {
        bump = (bump + align - 1) / align * align
        defer { bump += UInt64(max(size, 1)) }
        return GuestAddress(bump)
    }

    func put(_ bytes: [UInt8]) -> GuestAddress {
        let address = alloc(bytes.count)
        try! memory.writeBytes(bytes, at: address)
        return address
    }

    func bytes(at address: GuestAddress, count: Int) -> [UInt8] {
        try! memory.readBytes(at: address, count: count)
    }

    // MARK: Registers

    func reg(_ r: Register) -> UInt32 { UInt32(mmio.read(offset: r.rawValue, size: 4)) }
    func write(_ r: Register, _ value: UInt32) { mmio.write(offset: r.rawValue, value: UInt64(value), size: 4) }
    var status: VirtioStatus { VirtioStatus(rawValue: reg(.status)) }
    func addStatus(_ bits: VirtioStatus) { write(.status, status.union(bits).rawValue) }

    func config<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(truncatingIfNeeded: mmio.read(offset: VirtioMMIO.configOffset + UInt64(offset), size: MemoryLayout<T>.size))
    }

    var deviceFeatures: VirtioFeatures {
        write(.deviceFeaturesSel, 1)
        let high = UInt64(reg(.deviceFeatures))
        write(.deviceFeaturesSel, 0)
        return VirtioFeatures(rawValue: high << 32 | UInt64(reg(.deviceFeatures)))
    }

    func writeDriverFeatures(_ features: VirtioFeatures) {
        write(.driverFeaturesSel, 1)
        write(.driverFeatures, UInt32(truncatingIfNeeded: features.rawValue >> 32))
        write(.driverFeaturesSel, 0)
        write(.driverFeatures, UInt32(truncatingIfNeeded: features.rawValue))
    }

    // MARK: Probe (Linux: virtio_mmio_probe, virtio_dev_probe, vm_find_vqs)

    /// Resets, negotiates `accept(offered)`, sets up every queue (at `queueSizes` or the
    /// maximum) and sets DRIVER_OK. Returns false when the device refused the features.
    @discardableResult
    /// `beforeDriverOK` runs with the queues set up, before DRIVER_OK (a driver may fill them then).
    func initialize(accept: (VirtioFeatures) -> VirtioFeatures = { $0 }, queueSizes: [UInt16]? = nil,
                    beforeDriverOK: () -> Void = {}) -> Bool {
        #expect(reg(.magicValue) == 0x7472_6976)
        #expect(reg(.version) == 2)
        write(.status, 0)
        #expect(reg(.status) == 0)
        addStatus(.acknowledge)
        addStatus(.driver)
        writeDriverFeatures(accept(deviceFeatures))
        addStatus(.featuresOK)
        guard status.contains(.featuresOK) else {
            addStatus(.failed)
            return false
        }
        queues = []
        var index = 0
        while true {
            write(.queueSel, UInt32(index))
            let max = reg(.queueNumMax)
            if max == 0 { break }
            #expect(reg(.queueReady) == 0)
            let size = queueSizes.map { $0[index] } ?? UInt16(max)
            let desc = alloc(Int(VirtqLayout.descriptorTableSize(size)), align: 4096)
            let avail = alloc(Int(VirtqLayout.availRingSize(size)), align: 2)
            let used = alloc(Int(VirtqLayout.usedRingSize(size)), align: 4096)
            // Linux zeroes the rings; fresh RAM already is, but reuse after reset is not.
            try! memory.writeBytes([UInt8](repeating: 0, count: Int(VirtqLayout.availRingSize(size))), at: avail)
            try! memory.writeBytes([UInt8](repeating: 0, count: Int(VirtqLayout.usedRingSize(size))), at: used)
            write(.queueNum, UInt32(size))
            setQueueAddresses(desc: desc, avail: avail, used: used)
            write(.queueReady, 1)
            queues.append(Queue(index: index, size: size, desc: desc, avail: avail, used: used))
            index += 1
        }
        beforeDriverOK()
        addStatus(.driverOK)
        return true
    }

    func setQueueAddresses(desc: GuestAddress, avail: GuestAddress, used: GuestAddress) {
        write(.queueDescLow, UInt32(truncatingIfNeeded: desc.rawValue))
        write(.queueDescHigh, UInt32(truncatingIfNeeded: desc.rawValue >> 32))
        write(.queueDriverLow, UInt32(truncatingIfNeeded: avail.rawValue))
        write(.queueDriverHigh, UInt32(truncatingIfNeeded: avail.rawValue >> 32))
        write(.queueDeviceLow, UInt32(truncatingIfNeeded: used.rawValue))
        write(.queueDeviceHigh, UInt32(truncatingIfNeeded: used.rawValue >> 32))
    }

    // MARK: Queues (Linux: virtqueue_add_split, virtqueue_get_buf)

    func writeDescriptor(table: GuestAddress, _ index: UInt16, address: GuestAddress, length: UInt32,
                         flags: VirtqDescriptorFlags, next: UInt16 = 0) {
        let base = table.rawValue + UInt64(index) * 16
        try! memory.write(address.rawValue, at: GuestAddress(base))
        try! memory.write(length, at: GuestAddress(base + 8))
        try! memory.write(flags.rawValue, at: GuestAddress(base + 12))
        try! memory.write(next, at: GuestAddress(base + 14))
    }

    func writeDescriptor(queue q: Int, _ index: UInt16, address: GuestAddress, length: UInt32,
                         flags: VirtqDescriptorFlags, next: UInt16 = 0) {
        writeDescriptor(table: queues[q].desc, index, address: address, length: length, flags: flags, next: next)
    }

    /// Puts `head` in the available ring and publishes the new idx.
    func makeAvailable(queue q: Int, head: UInt16) {
        let queue = queues[q]
        let slot = GuestAddress(queue.avail.rawValue + 4 + 2 * UInt64(queue.availIdx % queue.size))
        try! memory.write(head, at: slot)
        queues[q].availIdx &+= 1
        setAvailIdx(queue: q, queues[q].availIdx)
    }

    func setAvailIdx(queue q: Int, _ value: UInt16) {
        try! memory.write(value, at: GuestAddress(queues[q].avail.rawValue + 2))
    }

    func setAvailFlags(queue q: Int, _ value: UInt16) {
        try! memory.write(value, at: queues[q].avail)
    }

    /// used_event, after the available ring entries (§2.7.7).
    func setUsedEvent(queue q: Int, _ value: UInt16) {
        try! memory.write(value, at: GuestAddress(queues[q].avail.rawValue + 4 + 2 * UInt64(queues[q].size)))
    }

    /// avail_event, after the used ring entries (§2.7.10).
    func availEvent(queue q: Int) -> UInt16 {
        try! memory.read(UInt16.self, at: GuestAddress(queues[q].used.rawValue + 4 + 8 * UInt64(queues[q].size)))
    }

    func usedIdx(queue q: Int) -> UInt16 {
        try! memory.read(UInt16.self, at: GuestAddress(queues[q].used.rawValue + 2))
    }

    func notify(_ q: Int) { write(.queueNotify, UInt32(q)) }

    /// A buffer list: readable contents, then writable sizes. Returns the head and the
    /// addresses of the writable buffers.
    @discardableResult
    func submit(queue q: Int, readable: [[UInt8]], writable: [Int], indirect: Bool = false, notify: Bool = true)
        -> (head: UInt16, writable: [GuestAddress])
    {
        var buffers: [(GuestAddress, UInt32, VirtqDescriptorFlags)] = readable.map { (put($0), UInt32($0.count), []) }
        var writableAddresses: [GuestAddress] = []
        for size in writable {
            let address = alloc(size)
            try! memory.writeBytes([UInt8](repeating: 0xee, count: size), at: address)
            writableAddresses.append(address)
            buffers.append((address, UInt32(size), .write))
        }
        let head: UInt16
        if indirect {
            let table = alloc(16 * buffers.count)
            for (i, (address, length, flags)) in buffers.enumerated() {
                let last = i == buffers.count - 1
                writeDescriptor(table: table, UInt16(i), address: address, length: length,
                                flags: last ? flags : flags.union(.next), next: UInt16(i + 1))
            }
            head = takeDescriptor(q)
            writeDescriptor(queue: q, head, address: table, length: UInt32(16 * buffers.count), flags: .indirect)
        } else {
            let indices = buffers.map { _ in takeDescriptor(q) }
            for (i, (address, length, flags)) in buffers.enumerated() {
                let last = i == buffers.count - 1
                writeDescriptor(queue: q, indices[i], address: address, length: length,
                                flags: last ? flags : flags.union(.next), next: last ? 0 : indices[i + 1])
            }
            head = indices[0]
        }
        makeAvailable(queue: q, head: head)
        if notify { self.notify(q) }
        return (head, writableAddresses)
    }

    func takeDescriptor(_ q: Int) -> UInt16 {
        defer { queues[q].nextDescriptor = (queues[q].nextDescriptor &+ 1) % queues[q].size }
        return queues[q].nextDescriptor
    }

    /// New used elements since the last call.
    func takeUsed(queue q: Int) -> [Used] {
        let queue = queues[q]
        let idx = usedIdx(queue: q)
        var result: [Used] = []
        var position = queue.lastUsed
        while position != idx {
            let entry = queue.used.rawValue + 4 + 8 * UInt64(position % queue.size)
            result.append(Used(id: try! memory.read(UInt32.self, at: GuestAddress(entry)),
                               length: try! memory.read(UInt32.self, at: GuestAddress(entry + 4))))
            position &+= 1
        }
        queues[q].lastUsed = idx
        return result
    }

    /// Linux's vm_interrupt: read InterruptStatus, acknowledge it all.
    @discardableResult
    func acknowledgeInterrupt() -> VirtioMMIO.InterruptStatus {
        let status = VirtioMMIO.InterruptStatus(rawValue: reg(.interruptStatus))
        write(.interruptACK, status.rawValue)
        return status
    }

    var needsReset: Bool { status.contains(.deviceNeedsReset) }
}

/// A device with scripted behaviour, for transport tests: it records notifications and, when
/// asked, echoes each chain's readable bytes into its writable buffers.
final class RecordingDevice: VirtioDevice {
    struct Log {
        var processed: [Int] = []
        var activations = 0
        var resets = 0
        var chains: [DescriptorChain] = []
        var transport: (any VirtioTransport)?
    }
    let log = Mutex(Log())
    let deviceID = VirtioDeviceID(rawValue: 42)
    let deviceFeatures: VirtioFeatures
    let queueMaxSizes: [UInt16]
    let config: [UInt8]
    /// Pop and complete at once (true), or keep the chains for the test to complete.
    let completeAtOnce: Bool

    init(features: VirtioFeatures = VirtioFeatures(bit: 3), queueSizes: [UInt16] = [16],
         config: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8], completeAtOnce: Bool = true) {
        deviceFeatures = features
        queueMaxSizes = queueSizes
        self.config = config
        self.completeAtOnce = completeAtOnce
    }

    func configSpace() -> [UInt8] { config }
    func activate(features: VirtioFeatures, transport: any VirtioTransport) {
        log.withLock {
            $0.activations += 1
            $0.transport = transport
        }
    }
    func reset() { log.withLock { $0.resets += 1 } }

    func process(queue: Int, transport: any VirtioTransport) {
        log.withLock { $0.processed.append(queue) }
        while let chain = transport.popAvailable(queue: queue) {
            if completeAtOnce {
                let input = (try? chain.readBytes(at: 0, count: chain.readableLength)) ?? []
                let n = min(input.count, chain.writableLength)
                try? chain.writeBytes(Array(input.prefix(n)), at: 0)
                transport.complete(chain, written: n)
            } else {
                log.withLock { $0.chains.append(chain) }
            }
        }
    }

    var processed: [Int] { log.withLock { $0.processed } }
    var chains: [DescriptorChain] { log.withLock { $0.chains } }
    var transport: (any VirtioTransport)? { log.withLock { $0.transport } }
}

/// A character backend that records output and offers queued input as far as the frontend
/// says it can take it.
final class FakeCharBackend: CharBackend {
    struct State {
        var output: [UInt8] = []
        weak var frontend: (any CharFrontend)?
        var pending: [UInt8] = []
        var acceptInputCalls = 0
    }
    let label = "fake"
    let state = Mutex(State())

    func attach(_ frontend: (any CharFrontend)?) { state.withLock { $0.frontend = frontend } }
    func write(_ bytes: [UInt8]) { state.withLock { $0.output += bytes } }
    func acceptInput() {
        state.withLock { $0.acceptInputCalls += 1 }
        pump()
    }

    func type(_ bytes: [UInt8]) {
        state.withLock { $0.pending += bytes }
        pump()
    }

    @discardableResult
    func pump() -> Int {
        guard let frontend = state.withLock({ $0.frontend }) else { return 0 }
        var total = 0
        while true {
            let capacity = frontend.receiveCapacity()
            let chunk = state.withLock { s in
                let n = min(max(capacity, 0), s.pending.count)
                defer { s.pending.removeFirst(n) }
                return Array(s.pending.prefix(n))
            }
            if chunk.isEmpty { return total }
            frontend.receive(chunk)
            total += chunk.count
        }
    }

    var output: [UInt8] { state.withLock { $0.output } }
    var pendingCount: Int { state.withLock { $0.pending.count } }
    var acceptInputCalls: Int { state.withLock { $0.acceptInputCalls } }
}

/// An in-memory disk whose operations can be made to fail.
final class MemoryDisk: BlockBackend {
    struct State {
        var data: [UInt8]
        var flushes = 0
        var failing = false
        var discards: [(UInt64, UInt64)] = []
    }
    let label = "memory"
    let size: UInt64
    let readOnly: Bool
    let state: Mutex<State>

    init(sectors: Int, readOnly: Bool = false) {
        size = UInt64(sectors) * 512
        self.readOnly = readOnly
        state = Mutex(State(data: (0..<sectors * 512).map { UInt8(truncatingIfNeeded: $0 / 512) }))
    }

    private func check() throws(SystemError) {
        if state.withLock({ $0.failing }) { throw SystemError(.syscall, "injected failure", errno: Errno(rawValue: EIO)) }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) {
        try check()
        try checkRange(offset: offset, count: UInt64(buffer.count))
        state.withLock { s in
            buffer.copyBytes(from: s.data[Int(offset)..<Int(offset) + buffer.count])
        }
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(SystemError) {
        try check()
        try checkWritable("write")
        try checkRange(offset: offset, count: UInt64(buffer.count))
        state.withLock { s in s.data.replaceSubrange(Int(offset)..<Int(offset) + buffer.count, with: buffer) }
    }
    func flush() throws(SystemError) {
        try check()
        state.withLock { $0.flushes += 1 }
    }
    func discard(at offset: UInt64, count: UInt64) throws(SystemError) {
        try check()
        try checkRange(offset: offset, count: count)
        state.withLock { $0.discards.append((offset, count)) }
    }
    func writeZeroes(at offset: UInt64, count: UInt64, mayUnmap: Bool) throws(SystemError) {
        try check()
        try checkRange(offset: offset, count: count)
        state.withLock { s in
            s.data.replaceSubrange(Int(offset)..<Int(offset + count), with: [UInt8](repeating: 0, count: Int(count)))
        }
    }

    var data: [UInt8] { state.withLock { $0.data } }
}

/// A temporary file that is removed when the test ends.
final class TempFile {
    let path: String
    init(contents: [UInt8]) {
        var template = Array("/tmp/swemu-virtio-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        precondition(fd >= 0, "mkstemp failed")
        path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let owned = FileDescriptor(owning: fd)
        try! owned.writeAll(contents)
    }
    deinit { unlink(path) }

    func contents() -> [UInt8] { try! FileDescriptor.readWholeFile(path, limit: 1 << 30) }
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
}
