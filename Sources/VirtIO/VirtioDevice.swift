import GuestMemory

/// A virtio device type (virtio-blk, -rng, -console, …) as the transport sees it: identity,
/// features, configuration space, queue shapes, and the work to do when the driver notifies a
/// queue. The transport (`VirtioMMIO`, later virtio-pci) owns the registers, the feature
/// negotiation, the queues and the interrupt; the device never touches them directly.
///
/// **Threads.** `process` is called on the vCPU thread that wrote QueueNotify, outside every
/// transport lock. A device may finish a request right there, or hand the chain to another
/// thread (a disk worker, the I/O event loop) and complete it later: every `VirtioTransport`
/// method is thread-safe, and a chain completed after the guest reset the device is dropped.
/// Several vCPUs may notify at once, so `process` may run concurrently with itself and with
/// input arriving on other threads; a device that needs ordering serialises itself.
package protocol VirtioDevice: AnyObject, Sendable {
    /// DeviceID (§5).
    var deviceID: VirtioDeviceID { get }
    /// The device-specific feature bits offered (bits 0-23 and any others the device
    /// implements). The transport adds `VirtioFeatures.transport`.
    var deviceFeatures: VirtioFeatures { get }
    /// QueueNumMax of each queue, in queue order; each a power of two up to 32768.
    var queueMaxSizes: [UInt16] { get }
    /// The device configuration space, little-endian, as the driver reads it (§4.2.2: at
    /// 0x100 in the virtio-mmio window). Read on every config access: keep it cheap.
    func configSpace() -> [UInt8]
    /// A driver write of `size` bytes at `offset` into the configuration space.
    func writeConfig(offset: Int, value: UInt64, size: Int)
    /// The driver set DRIVER_OK: `features` are the negotiated ones and the queues are set
    /// up. Devices that receive input from the host start taking it here.
    func activate(features: VirtioFeatures, transport: any VirtioTransport)
    /// The driver notified queue `queue` (available buffer notification, §2.7.13.4). Only
    /// called after `activate` and while the device is not in NEEDS_RESET.
    func process(queue: Int, transport: any VirtioTransport)
    /// The driver reset the device (Status = 0, §2.4): drop every request and buffer in hand.
    func reset()
    /// The machine is about to be saved (vCPUs parked): finish every request in hand, so the
    /// queues' state is the whole of the device's. Has a default for devices that complete
    /// requests within `process`.
    func quiesce()
}

extension VirtioDevice {
    package func writeConfig(offset: Int, value: UInt64, size: Int) {}
    package func quiesce() {}
}

/// What a device reaches of its transport: its queues, guest memory, and the interrupt.
/// Thread-safe: any thread may call any method at any time.
package protocol VirtioTransport: AnyObject, Sendable {
    /// Guest RAM, for the device's DMA.
    var memory: GuestMemory { get }
    /// The features the driver accepted (valid from FEATURES_OK on).
    var negotiatedFeatures: VirtioFeatures { get }
    /// The next available chain of `queue`, or nil when there is none, the queue is not live,
    /// or the device is in NEEDS_RESET. A chain that breaks the rules puts the device into
    /// NEEDS_RESET (and gives nil) here: the device sees only valid chains.
    func popAvailable(queue: Int) -> DescriptorChain?
    /// Writable bytes of the chains available on `queue` without taking them, counting at
    /// most `limit` (flow control for host input: how much could be delivered now). When
    /// there are fewer than `limit`, the driver is asked to notify at its next buffer.
    func availableWritableBytes(queue: Int, limit: Int) -> Int
    /// Returns `chain` to the driver: `written` bytes of its writable buffers hold data. No
    /// notification yet; call `notifyIfNeeded(queue:)` after a batch.
    func pushUsed(_ chain: DescriptorChain, written: Int)
    /// Returns chains of one queue to the driver together: it sees all of them or none (a
    /// frame over several buffers, §5.1.6.4.2).
    func pushUsed(_ chains: [(chain: DescriptorChain, written: Int)])
    /// Sends a used buffer notification for `queue` if the driver wants one (§2.7.7).
    func notifyIfNeeded(queue: Int)
    /// `pushUsed` then `notifyIfNeeded`.
    func complete(_ chain: DescriptorChain, written: Int)
    /// The device configuration changed: ConfigGeneration moves and the driver gets a
    /// configuration change notification (§2.5.1, §4.2.2).
    func configChanged()
    /// The guest broke the device's protocol (a malformed request): DEVICE_NEEDS_RESET.
    func deviceError(_ error: VirtioError)
}

/// Builds a device configuration space: little-endian fields at fixed offsets (§2.5).
package struct VirtioConfigSpace: Sendable {
    package private(set) var bytes: [UInt8]
    package init(size: Int) { bytes = [UInt8](repeating: 0, count: size) }

    /// Stores `value` little-endian at `offset`; the field must fit (a programming error if not).
    package mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= bytes.count, "config field at \(offset) does not fit")
        for i in 0..<MemoryLayout<T>.size {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }
}
