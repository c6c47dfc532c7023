import DeviceModel
import GuestMemory
import Synchronization
import SystemSupport

/// The virtio-mmio transport, version 2 (non-legacy), §4.2.2: one register window per device,
/// as QEMU's `virtio-mmio` and Linux's `virtio_mmio` driver use it. The board maps the
/// window (`windowSize` bytes) and wires `irq` to its interrupt controller; device trees call
/// the node `virtio,mmio`.
///
/// The transport owns the status, feature negotiation, queue registers and the interrupt; the
/// `VirtioDevice` behind it does the device's work. A guest that breaks the queue or request
/// rules puts the device into DEVICE_NEEDS_RESET (§2.1.2) with a configuration change
/// interrupt; it then does nothing until the driver writes 0 to Status, after which it works
/// again.
///
/// **Interrupt.** Level-triggered: the line is high while InterruptStatus is non-zero (bit 0
/// used buffer, bit 1 configuration change) and drops when the driver acknowledges the last
/// bit through InterruptACK.
///
/// **Threads.** Registers are written by vCPU threads and queues completed from any thread, so
/// the transport state lives behind one `Mutex`. Calls out (the device, the interrupt line,
/// the log) happen after it is released, as in `UART16550`.
package final class VirtioMMIO: BusDevice, Snapshottable {
    /// "virt" in little-endian ASCII.
    package static let magicValue: UInt32 = 0x7472_6976
    /// Version 2: the virtio 1.x register layout (version 1 is legacy).
    package static let version: UInt32 = 2
    /// QEMU's vendor ID ("QEMU" little-endian), so guests treat swemu's devices like QEMU's.
    package static let vendorID: UInt32 = 0x554d_4551
    /// The register window the board maps (QEMU's `virt` spaces transports 0x1000 apart).
    package static let windowSize: UInt64 = 0x200
    /// Where the device configuration space starts in the window.
    package static let configOffset: UInt64 = 0x100

    /// Register offsets (§4.2.2, table "MMIO Device Register Layout").
    package enum Register: UInt64, Sendable, CaseIterable {
        case magicValue = 0x000
        case version = 0x004
        case deviceID = 0x008
        case vendorID = 0x00c
        case deviceFeatures = 0x010
        case deviceFeaturesSel = 0x014
        case driverFeatures = 0x020
        case driverFeaturesSel = 0x024
        case queueSel = 0x030
        case queueNumMax = 0x034
        case queueNum = 0x038
        case queueReady = 0x044
        case queueNotify = 0x050
        case interruptStatus = 0x060
        case interruptACK = 0x064
        case status = 0x070
        case queueDescLow = 0x080
        case queueDescHigh = 0x084
        case queueDriverLow = 0x090
        case queueDriverHigh = 0x094
        case queueDeviceLow = 0x0a0
        case queueDeviceHigh = 0x0a4
        case shmSel = 0x0ac
        case shmLenLow = 0x0b0
        case shmLenHigh = 0x0b4
        case shmBaseLow = 0x0b8
        case shmBaseHigh = 0x0bc
        case queueReset = 0x0c0
        case configGeneration = 0x0fc
    }

    /// InterruptStatus / InterruptACK bits (§4.2.2).
    package struct InterruptStatus: OptionSet, Sendable, Hashable {
        package var rawValue: UInt32
        package init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Used Buffer Notification.
        package static let usedBuffer = InterruptStatus(rawValue: 1)
        /// Configuration Change Notification.
        package static let configChange = InterruptStatus(rawValue: 2)
        package static let all: InterruptStatus = [.usedBuffer, .configChange]
    }

    /// The transport's snapshot (DESIGN.md §5). Devices here keep no state of their own beyond
    /// their configuration, so this is the whole of a virtio-mmio device. Requests in flight
    /// are not saved: take snapshots with the machine paused and I/O drained.
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1
        package var version: UInt32
        /// The device type, checked on restore.
        package var deviceID: UInt32
        package var status: UInt32
        package var deviceFeaturesSel: UInt32
        package var driverFeaturesSel: UInt32
        package var driverFeatures: UInt64
        package var queueSel: UInt32
        package var interruptStatus: UInt32
        package var configGeneration: UInt32
        package var queues: [Virtqueue.State]
    }

    package let name: String
    package let device: any VirtioDevice
    private let core: MMIOTransport

    /// - Parameters:
    ///   - name: for messages ("virtio-mmio@10001000").
    ///   - device: the device behind the transport.
    ///   - memory: guest RAM, for the queues.
    ///   - irq: the interrupt output, level-triggered.
    package init(name: String, device: any VirtioDevice, memory: GuestMemory, irq: any InterruptLine) {
        self.name = name
        self.device = device
        core = MMIOTransport(name: name, device: device, memory: memory, irq: irq)
        irq.set(level: false)
    }

    /// The transport as the device sees it (for tests and diagnostics).
    package var transport: any VirtioTransport { core }
    /// Every feature bit the transport offers: the device's and `VirtioFeatures.transport`.
    package var offeredFeatures: VirtioFeatures { core.offered }
    /// The Status register.
    package var status: VirtioStatus { core.state.withLock { $0.status } }
    /// The InterruptStatus register.
    package var interruptStatus: InterruptStatus { core.state.withLock { $0.interruptStatus } }

    // MARK: BusDevice

    package func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset < VirtioMMIO.windowSize else { return 0 }
        if offset >= VirtioMMIO.configOffset { return readConfig(offset: Int(offset - VirtioMMIO.configOffset), size: size) }
        // §4.2.2.2: the driver uses only 32-bit wide, aligned accesses to the registers.
        guard size == 4, offset % 4 == 0 else {
            DebugLog.log(.guestErrors, "\(name): \(size)-byte read at \(hex(offset)): registers take 32-bit aligned accesses")
            return 0
        }
        guard let register = Register(rawValue: offset) else {
            DebugLog.log(.guestErrors, "\(name): read of unknown register \(hex(offset))")
            return 0
        }
        return UInt64(core.state.withLock { s in core.read(register, &s) })
    }

    package func write(offset: UInt64, value: UInt64, size: Int) {
        guard offset < VirtioMMIO.windowSize else { return }
        if offset >= VirtioMMIO.configOffset {
            guard [1, 2, 4, 8].contains(size) else { return }
            device.writeConfig(offset: Int(offset - VirtioMMIO.configOffset), value: value, size: size)
            return
        }
        guard size == 4, offset % 4 == 0 else {
            DebugLog.log(.guestErrors, "\(name): \(size)-byte write at \(hex(offset)): registers take 32-bit aligned accesses")
            return
        }
        guard let register = Register(rawValue: offset) else {
            DebugLog.log(.guestErrors, "\(name): write of \(hex(value)) to unknown register \(hex(offset))")
            return
        }
        let effects = core.state.withLock { s in core.write(register, UInt32(truncatingIfNeeded: value), &s) }
        core.perform(effects)
    }

    /// Device configuration space reads (§4.2.2: "Device-specific configuration space"), any
    /// width the driver uses for the field; bytes past the end read 0.
    private func readConfig(offset: Int, size: Int) -> UInt64 {
        guard [1, 2, 4, 8].contains(size) else { return 0 }
        let bytes = device.configSpace()
        var value: UInt64 = 0
        for i in 0..<size where offset + i < bytes.count {
            value |= UInt64(bytes[offset + i]) << (8 * UInt64(i))
        }
        return value
    }

    // MARK: Snapshot

    package func saveState() -> State {
        core.state.withLock { s in
            State(version: State.currentVersion, deviceID: device.deviceID.rawValue, status: s.status.rawValue,
                  deviceFeaturesSel: s.deviceFeaturesSel, driverFeaturesSel: s.driverFeaturesSel,
                  driverFeatures: s.driverFeatures.rawValue, queueSel: s.queueSel,
                  interruptStatus: s.interruptStatus.rawValue, configGeneration: s.configGeneration,
                  queues: s.queues.map { $0.saveState() })
        }
    }

    /// Loads an untrusted saved state: every field is checked before anything changes. Then
    /// the device is reset and, if the state has DRIVER_OK, activated again.
    package func restore(_ state: State) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("\(name) snapshot: \(what)") }
        guard state.version == State.currentVersion else {
            throw bad("state version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard state.deviceID == device.deviceID.rawValue else {
            throw bad("state of device type \(state.deviceID) does not fit a \(device.deviceID)")
        }
        let status = VirtioStatus(rawValue: state.status)
        guard status.isSubset(of: .all) else { throw bad("status \(hex(state.status)) has unknown bits") }
        let features = VirtioFeatures(rawValue: state.driverFeatures)
        if status.contains(.featuresOK) {
            guard features.isSubset(of: core.offered), features.contains(.version1) else {
                throw bad("accepted features \(hex(state.driverFeatures)) were not offered (\(hex(core.offered.rawValue)))")
            }
        }
        guard !status.contains(.driverOK) || status.contains(.featuresOK) else {
            throw bad("DRIVER_OK without FEATURES_OK")
        }
        guard InterruptStatus(rawValue: state.interruptStatus).isSubset(of: .all) else {
            throw bad("interrupt status \(hex(state.interruptStatus)) has unknown bits")
        }
        guard state.queues.count == device.queueMaxSizes.count else {
            throw bad("\(state.queues.count) queues for a device with \(device.queueMaxSizes.count)")
        }
        let negotiated: VirtioFeatures = status.contains(.featuresOK) ? features : []
        var queues = core.state.withLock { $0.queues }
        for (i, saved) in state.queues.enumerated() {
            queues[i].eventIndex = negotiated.contains(.eventIndex)
            queues[i].indirectDescriptors = negotiated.contains(.indirectDescriptors)
            do { try queues[i].restore(saved) } catch { throw bad("queue \(i): \(error)") }
        }
        device.reset()
        let effects = core.state.withLock { s in
            s.status = status
            s.deviceFeaturesSel = state.deviceFeaturesSel
            s.driverFeaturesSel = state.driverFeaturesSel
            s.driverFeatures = features
            s.negotiated = negotiated
            s.queueSel = state.queueSel
            s.interruptStatus = InterruptStatus(rawValue: state.interruptStatus)
            s.configGeneration = state.configGeneration
            s.queues = queues
            var effects = MMIOTransport.Effects()
            // A restored device goes on as it was: the machine it came from took every notify.
            if status.contains(.driverOK) { effects.action = .activate(negotiated, queues: []) }
            effects.driveLevel = s.settle()
            return effects
        }
        core.perform(effects)
    }
}

/// The shared half of `VirtioMMIO`: register state and the `VirtioTransport` the device uses.
/// A separate object so a device can keep it (to complete requests later) without a reference
/// cycle through the `VirtioMMIO` that owns the device.
final class MMIOTransport: VirtioTransport {
    struct Registers: Sendable {
        var status: VirtioStatus = []
        var deviceFeaturesSel: UInt32 = 0
        var driverFeaturesSel: UInt32 = 0
        /// What the driver wrote to DriverFeatures.
        var driverFeatures: VirtioFeatures = []
        /// `driverFeatures` as accepted at FEATURES_OK; empty before.
        var negotiated: VirtioFeatures = []
        var queueSel: UInt32 = 0
        var queues: [Virtqueue]
        var interruptStatus: VirtioMMIO.InterruptStatus = []
        var configGeneration: UInt32 = 0
        /// The level the interrupt line was last told to take. Not device state.
        var drivenLevel = false
        /// Queues the driver notified before DRIVER_OK, processed at DRIVER_OK. Not saved: a
        /// snapshot in the middle of a driver's start-up loses them, as it did before.
        var notifiedBeforeDriverOK: Set<Int> = []

        /// The device may use its queues: DRIVER_OK and not NEEDS_RESET (§3.1.1, §2.1.2).
        var live: Bool { status.contains(.driverOK) && !status.contains(.deviceNeedsReset) }

        /// The new interrupt level, if it changed.
        mutating func settle() -> Bool? {
            let level = !interruptStatus.isEmpty
            guard level != drivenLevel else { return nil }
            drivenLevel = level
            return level
        }
    }

    /// What a register access or queue operation asks of the outside world, performed after
    /// the lock is released.
    struct Effects {
        /// `activate`'s queues are processed once the device is live (see `writeStatus`).
        enum Action { case process(Int), reset, activate(VirtioFeatures, queues: [Int]) }
        var driveLevel: Bool?
        var log: String?
        var action: Action?
    }

    let name: String
    let device: any VirtioDevice
    let memory: GuestMemory
    let offered: VirtioFeatures
    private let irq: any InterruptLine
    let state: Mutex<Registers>
    /// Held while the device processes a queue, resets or activates.
    private let deviceWork = Mutex<Void>(())

    init(name: String, device: any VirtioDevice, memory: GuestMemory, irq: any InterruptLine) {
        self.name = name
        self.device = device
        self.memory = memory
        self.irq = irq
        offered = device.deviceFeatures.union(.transport)
        state = Mutex(Registers(queues: device.queueMaxSizes.map { Virtqueue(memory: memory, maxSize: $0) }))
    }

    // MARK: Registers

    func read(_ register: VirtioMMIO.Register, _ s: inout Registers) -> UInt32 {
        switch register {
        case .magicValue: return VirtioMMIO.magicValue
        case .version: return VirtioMMIO.version
        case .deviceID: return device.deviceID.rawValue
        case .vendorID: return VirtioMMIO.vendorID
        case .deviceFeatures:
            // Bits 32·sel to 32·sel+31; none above bit 63.
            guard s.deviceFeaturesSel < 2 else { return 0 }
            return UInt32(truncatingIfNeeded: offered.rawValue >> (32 * UInt64(s.deviceFeaturesSel)))
        case .queueNumMax:
            // 0: the queue is not available (§4.2.2).
            return selectedQueue(s).map { UInt32(s.queues[$0].maxSize) } ?? 0
        case .queueNum:
            return selectedQueue(s).map { UInt32(s.queues[$0].size) } ?? 0
        case .queueReady:
            return selectedQueue(s).map { s.queues[$0].ready ? 1 : 0 } ?? 0
        case .interruptStatus: return s.interruptStatus.rawValue
        case .status: return s.status.rawValue
        // The queue addresses read back as QEMU's version-2 transport does.
        case .queueDescLow: return low(selectedQueue(s).map { s.queues[$0].descriptorTable })
        case .queueDescHigh: return high(selectedQueue(s).map { s.queues[$0].descriptorTable })
        case .queueDriverLow: return low(selectedQueue(s).map { s.queues[$0].availRing })
        case .queueDriverHigh: return high(selectedQueue(s).map { s.queues[$0].availRing })
        case .queueDeviceLow: return low(selectedQueue(s).map { s.queues[$0].usedRing })
        case .queueDeviceHigh: return high(selectedQueue(s).map { s.queues[$0].usedRing })
        // No shared memory regions: every region reads as length -1 (§4.2.2, SHMLen).
        case .shmLenLow, .shmLenHigh, .shmBaseLow, .shmBaseHigh: return 0xffff_ffff
        case .configGeneration: return s.configGeneration
        // VIRTIO_F_RING_RESET is not offered, so QueueReset reads 0.
        case .queueReset: return 0
        case .deviceFeaturesSel, .driverFeatures, .driverFeaturesSel, .queueSel, .queueNotify, .interruptACK, .shmSel:
            DebugLog.log(.guestErrors, "\(name): read of write-only register \(register)")
            return 0
        }
    }

    func write(_ register: VirtioMMIO.Register, _ value: UInt32, _ s: inout Registers) -> Effects {
        var effects = Effects()
        switch register {
        case .deviceFeaturesSel: s.deviceFeaturesSel = value
        case .driverFeaturesSel: s.driverFeaturesSel = value
        case .driverFeatures:
            // §2.2.1 / §3.1.1: features are fixed once FEATURES_OK is set.
            guard !s.status.contains(.featuresOK) else {
                effects.log = "\(name): DriverFeatures written after FEATURES_OK; ignored"
                break
            }
            guard s.driverFeaturesSel < 2 else { break }
            let shift = 32 * UInt64(s.driverFeaturesSel)
            let mask: UInt64 = 0xffff_ffff << shift
            s.driverFeatures.rawValue = (s.driverFeatures.rawValue & ~mask) | (UInt64(value) << shift)
        case .queueSel: s.queueSel = value
        case .queueNum:
            guard let q = writableQueue(&s, register, &effects) else { break }
            // Checked at QueueReady, where a bad size puts the device into NEEDS_RESET.
            s.queues[q].size = value <= 0xffff ? UInt16(value) : 0
        case .queueDescLow: setQueueAddress(&s, register, value, &effects, high: false) { $0.descriptorTable = $1 } get: { $0.descriptorTable }
        case .queueDescHigh: setQueueAddress(&s, register, value, &effects, high: true) { $0.descriptorTable = $1 } get: { $0.descriptorTable }
        case .queueDriverLow: setQueueAddress(&s, register, value, &effects, high: false) { $0.availRing = $1 } get: { $0.availRing }
        case .queueDriverHigh: setQueueAddress(&s, register, value, &effects, high: true) { $0.availRing = $1 } get: { $0.availRing }
        case .queueDeviceLow: setQueueAddress(&s, register, value, &effects, high: false) { $0.usedRing = $1 } get: { $0.usedRing }
        case .queueDeviceHigh: setQueueAddress(&s, register, value, &effects, high: true) { $0.usedRing = $1 } get: { $0.usedRing }
        case .queueReady:
            guard let q = selectedQueue(s) else {
                effects.log = "\(name): QueueReady for queue \(s.queueSel), which does not exist"
                break
            }
            if value & 1 == 0 {
                s.queues[q].disable()
            } else if !s.queues[q].ready {
                do {
                    try s.queues[q].enable()
                } catch {
                    effects = fail(&s, VirtioError.invalidQueue("queue \(q): \(error)"))
                }
            }
        case .queueNotify:
            // Without VIRTIO_F_NOTIFICATION_DATA the value is the queue index (§4.2.2).
            guard Int(value) < s.queues.count else {
                effects.log = "\(name): notify of queue \(value), which does not exist"
                break
            }
            guard s.live else {
                // §3.1.2 / §2.1.2: no buffers are used before DRIVER_OK (the notify waits for
                // it) or in NEEDS_RESET.
                if !s.status.contains(.deviceNeedsReset) && !s.status.contains(.driverOK) {
                    s.notifiedBeforeDriverOK.insert(Int(value))
                }
                break
            }
            guard s.queues[Int(value)].ready else {
                effects.log = "\(name): notify of queue \(value), which is not ready; ignored"
                break
            }
            effects.action = .process(Int(value))
        case .interruptACK:
            s.interruptStatus.subtract(VirtioMMIO.InterruptStatus(rawValue: value))
        case .status:
            effects = writeStatus(value, &s)
        case .shmSel, .queueReset:
            break
        case .magicValue, .version, .deviceID, .vendorID, .deviceFeatures, .queueNumMax, .interruptStatus,
             .shmLenLow, .shmLenHigh, .shmBaseLow, .shmBaseHigh, .configGeneration:
            effects.log = "\(name): write of \(hex(value)) to read-only register \(register)"
        }
        if effects.driveLevel == nil { effects.driveLevel = s.settle() }
        return effects
    }

    /// Status writes (§2.1, §3.1.1, §4.2.3.1).
    private func writeStatus(_ value: UInt32, _ s: inout Registers) -> Effects {
        var effects = Effects()
        if value == 0 {
            // §2.4: device reset. The driver reads Status back as 0 once it is done, which it
            // is when this write returns.
            for i in s.queues.indices { s.queues[i].reset() }
            let driven = s.drivenLevel
            s = Registers(queues: s.queues)
            s.drivenLevel = driven
            effects.action = .reset
            return effects
        }
        let old = s.status
        // The driver only adds bits (§3.1.1); it can neither set nor clear the device's
        // DEVICE_NEEDS_RESET (only a reset clears it).
        var new = old.union(VirtioStatus(rawValue: value).intersection(.all).subtracting(.deviceNeedsReset))
        if new.contains(.featuresOK) && !old.contains(.featuresOK) {
            // §2.2.2 / §3.1.1: accept only features that were offered; a virtio 1.x device
            // needs VERSION_1 (§6.1). Refused by leaving FEATURES_OK clear for the driver's
            // read-back.
            if s.driverFeatures.isSubset(of: offered) && s.driverFeatures.contains(.version1) {
                s.negotiated = s.driverFeatures
                for i in s.queues.indices {
                    s.queues[i].eventIndex = s.negotiated.contains(.eventIndex)
                    s.queues[i].indirectDescriptors = s.negotiated.contains(.indirectDescriptors)
                }
            } else {
                new.remove(.featuresOK)
                effects.log = "\(name): driver features \(hex(s.driverFeatures.rawValue)) refused (offered \(hex(offered.rawValue)), VERSION_1 required)"
            }
        }
        if new.contains(.driverOK) && !old.contains(.driverOK) {
            if new.contains(.featuresOK) {
                // A driver may make buffers available, and notify, before DRIVER_OK (Linux's
                // balloon primes its statistics queue so, virtio_balloon.c init_vqs); the device
                // uses none before it (§3.1.1), so those notifies are acted on now: they will
                // not come again.
                effects.action = .activate(s.negotiated, queues: s.notifiedBeforeDriverOK.sorted().filter { s.queues[$0].ready })
                s.notifiedBeforeDriverOK = []
            } else {
                new.remove(.driverOK)
                effects.log = "\(name): DRIVER_OK without FEATURES_OK; ignored"
            }
        }
        s.status = new
        return effects
    }

    private func selectedQueue(_ s: Registers) -> Int? {
        Int(s.queueSel) < s.queues.count ? Int(s.queueSel) : nil
    }

    /// The selected queue, if its configuration may be written: §4.2.3.2, not while it is ready.
    private func writableQueue(_ s: inout Registers, _ register: VirtioMMIO.Register, _ effects: inout Effects) -> Int? {
        guard let q = selectedQueue(s) else {
            effects.log = "\(name): \(register) for queue \(s.queueSel), which does not exist"
            return nil
        }
        guard !s.queues[q].ready else {
            effects.log = "\(name): \(register) for queue \(q) while it is ready; ignored"
            return nil
        }
        return q
    }

    private func setQueueAddress(
        _ s: inout Registers, _ register: VirtioMMIO.Register, _ value: UInt32, _ effects: inout Effects, high: Bool,
        set: (inout Virtqueue, GuestAddress) -> Void, get: (Virtqueue) -> GuestAddress
    ) {
        guard let q = writableQueue(&s, register, &effects) else { return }
        let old = get(s.queues[q]).rawValue
        let new = high ? (old & 0xffff_ffff) | (UInt64(value) << 32) : (old & ~0xffff_ffff) | UInt64(value)
        set(&s.queues[q], GuestAddress(new))
    }

    private func low(_ address: GuestAddress?) -> UInt32 { UInt32(truncatingIfNeeded: address?.rawValue ?? 0) }
    private func high(_ address: GuestAddress?) -> UInt32 { UInt32(truncatingIfNeeded: (address?.rawValue ?? 0) >> 32) }

    /// §2.1.2: DEVICE_NEEDS_RESET, and a configuration change notification once DRIVER_OK.
    func fail(_ s: inout Registers, _ error: VirtioError) -> Effects {
        var effects = Effects()
        if !s.status.contains(.deviceNeedsReset) {
            s.status.insert(.deviceNeedsReset)
            if s.status.contains(.driverOK) { s.interruptStatus.insert(.configChange) }
            effects.log = "\(name): \(error); device needs reset"
        }
        effects.driveLevel = s.settle()
        return effects
    }

    // MARK: VirtioTransport

    var negotiatedFeatures: VirtioFeatures { state.withLock { $0.negotiated } }

    func popAvailable(queue: Int) -> DescriptorChain? {
        var effects = Effects()
        let chain = state.withLock { (s: inout Registers) -> DescriptorChain? in
            guard s.live, s.queues.indices.contains(queue) else { return nil }
            do throws(VirtioError) {
                guard var chain = try s.queues[queue].popAvailable() else { return nil }
                chain.queueIndex = queue
                return chain
            } catch {
                effects = fail(&s, error)
                return nil
            }
        }
        perform(effects)
        return chain
    }

    func availableWritableBytes(queue: Int, limit: Int) -> Int {
        var effects = Effects()
        let total = state.withLock { (s: inout Registers) -> Int in
            guard s.live, s.queues.indices.contains(queue) else { return 0 }
            do throws(VirtioError) {
                let total = try s.queues[queue].availableWritableBytes(limit: limit, maxChains: 64)
                // Short of what the device wants: it waits for the driver's next buffers.
                if total < limit { try s.queues[queue].requestAvailableNotification() }
                return total
            } catch {
                effects = fail(&s, error)
                return 0
            }
        }
        perform(effects)
        return min(total, limit)
    }

    func pushUsed(_ chain: DescriptorChain, written: Int) {
        pushUsed([(chain, written)])
    }

    func pushUsed(_ chains: [(chain: DescriptorChain, written: Int)]) {
        let effects = state.withLock { s in push(chains, &s) ?? Effects() }
        perform(effects)
    }

    func notifyIfNeeded(queue: Int) {
        let effects = state.withLock { s in notify(queue, &s) }
        perform(effects)
    }

    func complete(_ chain: DescriptorChain, written: Int) {
        let effects = state.withLock { s in
            // A chain of an old generation is dropped, and then there is nothing to notify.
            push([(chain, written)], &s) ?? notify(chain.queueIndex, &s)
        }
        perform(effects)
    }

    /// Pushes used elements of one queue, published together; effects only when something
    /// went wrong (nil: pushed or dropped).
    private func push(_ chains: [(chain: DescriptorChain, written: Int)], _ s: inout Registers) -> Effects? {
        guard let q = chains.first?.chain.queueIndex else { return nil }
        precondition(chains.allSatisfy { $0.chain.queueIndex == q }, "used elements of one queue at a time")
        guard s.live, s.queues.indices.contains(q), s.queues[q].ready,
              chains.allSatisfy({ $0.chain.generation == s.queues[q].generation }) else {
            // The driver reset the device or the queue since the chains were popped: the
            // buffers are no longer the device's to return.
            return Effects()
        }
        let elements = chains.map { chain, written in
            (head: chain.head, length: UInt32(clamping: min(max(written, 0), chain.writableLength)))
        }
        do {
            try s.queues[q].pushUsed(elements)
        } catch {
            return fail(&s, error)
        }
        return nil
    }

    private func notify(_ queue: Int, _ s: inout Registers) -> Effects {
        guard s.live, s.queues.indices.contains(queue) else { return Effects() }
        do {
            if try s.queues[queue].needsNotification() { s.interruptStatus.insert(.usedBuffer) }
        } catch {
            return fail(&s, error)
        }
        var effects = Effects()
        effects.driveLevel = s.settle()
        return effects
    }

    func configChanged() {
        let effects = state.withLock { s in
            s.configGeneration &+= 1
            // No notifications before DRIVER_OK; the driver reads the config then anyway.
            if s.status.contains(.driverOK) { s.interruptStatus.insert(.configChange) }
            var effects = Effects()
            effects.driveLevel = s.settle()
            return effects
        }
        perform(effects)
    }

    func deviceError(_ error: VirtioError) {
        let effects = state.withLock { s in fail(&s, error) }
        perform(effects)
    }

    // MARK: Effects, outside the lock

    func perform(_ effects: Effects) {
        if let log = effects.log { DebugLog.log(.guestErrors, log) }
        if let level = effects.driveLevel { drive(level) }
        guard let action = effects.action else { return }
        // Harts notify from their own threads; the device's work is serialized here so that
        // devices stay single-threaded state machines (DESIGN.md §4).
        deviceWork.withLock { _ in
            switch action {
            case .process(let queue): device.process(queue: queue, transport: self)
            case .reset: device.reset()
            case .activate(let features, let queues):
                device.activate(features: features, transport: self)
                for queue in queues { device.process(queue: queue, transport: self) }
            }
        }
    }

    /// Sets the line, then re-reads the wanted level: another thread may have changed it
    /// between our unlock and our `set` (the UART16550 pattern).
    private func drive(_ level: Bool) {
        var level = level
        while true {
            irq.set(level: level)
            let wanted = state.withLock { $0.drivenLevel }
            if wanted == level { return }
            level = wanted
        }
    }
}
