import DeviceModel
import Synchronization
import SystemSupport
import VirtIO

/// virtio-input as a keyboard (virtio 1.2 §5.8; QEMU's `virtio-keyboard-device`): the host's
/// key presses reach the guest as Linux input events. It is also the machine's power button:
/// `system_powerdown` (and so `virsh shutdown`) presses KEY_POWER, which a guest's
/// systemd-logind or acpid turns into a clean shutdown. The RISC-V `virt` board has no other
/// power button (QEMU's has none at all).
///
/// Queues: eventq (0), whose device-writable buffers of 8 bytes each carry one event
/// (§5.8.6.1), and statusq (1), where the driver reports LED state; this keyboard has no LEDs
/// and returns those buffers unread. Events the driver has no buffer for yet wait in a bounded
/// queue (the oldest are dropped beyond it), so a press is not lost while the driver starts.
/// They are the host's, not the guest's: a snapshot or migration does not carry them.
package final class VirtioInput: VirtioDevice {
    /// One `struct virtio_input_event` (§5.8.6.1), with Linux's input numbers
    /// (include/uapi/linux/input-event-codes.h).
    package struct Event: Equatable, Sendable {
        package var type: UInt16
        package var code: UInt16
        package var value: UInt32

        package static let eventKey: UInt16 = 0x01
        package static let eventSync: UInt16 = 0x00
        package static let keyPower: UInt16 = 116

        package init(type: UInt16, code: UInt16, value: UInt32) {
            self.type = type
            self.code = code
            self.value = value
        }

        /// A key going down (`pressed`) or up, with the SYN_REPORT that closes the report.
        package static func key(_ code: UInt16, pressed: Bool) -> [Event] {
            [Event(type: eventKey, code: code, value: pressed ? 1 : 0), Event(type: eventSync, code: 0, value: 0)]
        }

        var bytes: [UInt8] {
            [UInt8(truncatingIfNeeded: type), UInt8(truncatingIfNeeded: type >> 8),
             UInt8(truncatingIfNeeded: code), UInt8(truncatingIfNeeded: code >> 8),
             UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8),
             UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 24)]
        }
    }

    /// The configuration selectors (§5.8.4).
    enum ConfigSelect: UInt8 {
        case unset = 0x00, idName = 0x01, idSerial = 0x02, idDevids = 0x03, propBits = 0x10, evBits = 0x11, absInfo = 0x12
    }

    static let eventQueue = 0
    static let statusQueue = 1
    static let queueSize: UInt16 = 64
    /// Size of `struct virtio_input_config`: select, subsel, size, 5 reserved, a 128-byte union.
    static let configSize = 136
    /// Events kept for a driver that has given no buffer yet.
    package static let maxPendingEvents = 64
    /// QEMU's name and IDs for its virtio keyboard (hw/input/virtio-input-hid.c), so guest
    /// rules written for QEMU match: BUS_VIRTUAL, vendor 0x0627, product 1, version 1.
    static let name = "QEMU Virtio Keyboard"
    static let devids: [UInt16] = [0x06, 0x0627, 0x0001, 0x0001]
    /// The keys it reports: every code of a PC keyboard's range (KEY_ESC = 1 to 255), so
    /// udev classifies it as a keyboard; KEY_POWER (116) is among them.
    static let keyBitmap: [UInt8] = {
        var bits = [UInt8](repeating: 0xff, count: 32)
        bits[0] &= 0xfe  // KEY_RESERVED (0) is no key
        return bits
    }()

    private struct Selection {
        var select: UInt8 = 0
        var subsel: UInt8 = 0
    }

    private struct Queue {
        var transport: (any VirtioTransport)?
        /// Each with a serial number, so a delivery removes the event it delivered even when
        /// the queue moved meanwhile (a reset, or `send` dropping the oldest).
        var pending: [(serial: Int, event: Event)] = []
        var nextSerial = 0
        var dropped = 0
    }

    private let selection = Mutex(Selection())
    private let queue = Mutex(Queue())
    /// Held for a whole delivery, so events reach the guest in order when the monitor and a
    /// vCPU deliver at once. Never held by `reset` (the transport may call it under its lock).
    private let delivery = Mutex(())

    package init() {}

    package var deviceID: VirtioDeviceID { .input }
    package var deviceFeatures: VirtioFeatures { [] }
    package var queueMaxSizes: [UInt16] { [VirtioInput.queueSize, VirtioInput.queueSize] }

    package func configSpace() -> [UInt8] {
        let (select, subsel) = selection.withLock { ($0.select, $0.subsel) }
        var config = VirtioConfigSpace(size: VirtioInput.configSize)
        config.put(select, at: 0)
        config.put(subsel, at: 1)
        // Unknown selectors and subselectors answer size 0 (§5.8.5: "the device MUST set
        // size to 0 if it does not have the requested information").
        let payload = VirtioInput.payload(select: ConfigSelect(rawValue: select), subsel: subsel)
        config.put(UInt8(payload.count), at: 2)
        for (i, byte) in payload.enumerated() { config.put(byte, at: 8 + i) }
        return config.bytes
    }

    static func payload(select: ConfigSelect?, subsel: UInt8) -> [UInt8] {
        switch select {
        case .idName where subsel == 0: return Array(name.utf8)
        case .idDevids where subsel == 0: return devids.flatMap { [UInt8(truncatingIfNeeded: $0), UInt8($0 >> 8)] }
        case .evBits where subsel == UInt8(Event.eventKey): return keyBitmap
        default: return []
        }
    }

    package func writeConfig(offset: Int, value: UInt64, size: Int) {
        // Only select (0) and subsel (1) are writable (§5.8.5); a wider write sets both.
        selection.withLock { s in
            for i in 0..<size {
                let byte = UInt8(truncatingIfNeeded: value >> (8 * i))
                switch offset + i {
                case 0: s.select = byte
                case 1: s.subsel = byte
                default: break
                }
            }
        }
    }

    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {
        queue.withLock { $0.transport = transport }
        deliver()
    }

    package func reset() {
        queue.withLock { q in
            q.transport = nil
            q.pending.removeAll()
        }
        selection.withLock { $0 = Selection() }
    }

    package func process(queue index: Int, transport: any VirtioTransport) {
        switch index {
        case VirtioInput.eventQueue:
            deliver()  // new buffers: events that waited go now
        case VirtioInput.statusQueue:
            while let chain = transport.popAvailable(queue: VirtioInput.statusQueue) {
                transport.pushUsed(chain, written: 0)
            }
            transport.notifyIfNeeded(queue: VirtioInput.statusQueue)
        default:
            break
        }
    }

    /// Queues `events` for the guest (any thread) and delivers what the driver has room for.
    package func send(_ events: [Event]) {
        queue.withLock { q in
            for event in events {
                q.pending.append((q.nextSerial, event))
                q.nextSerial += 1
            }
            let excess = q.pending.count - VirtioInput.maxPendingEvents
            if excess > 0 {
                q.pending.removeFirst(excess)
                q.dropped += excess
            }
        }
        deliver()
    }

    /// Presses and releases KEY_POWER: the power button.
    package func pressPowerButton() {
        send(Event.key(Event.keyPower, pressed: true) + Event.key(Event.keyPower, pressed: false))
    }

    /// Events dropped because the guest took none for too long.
    package var droppedEvents: Int { queue.withLock { $0.dropped } }

    /// Events waiting for a driver buffer.
    package var pendingEvents: [Event] { queue.withLock { $0.pending.map(\.event) } }

    private func deliver() {
        delivery.withLock { _ in
            guard let transport = queue.withLock({ $0.transport }) else { return }
            var delivered = 0
            defer { if delivered > 0 { transport.notifyIfNeeded(queue: VirtioInput.eventQueue) } }
            while let (serial, event) = queue.withLock({ $0.pending.first }) {
                guard let chain = transport.popAvailable(queue: VirtioInput.eventQueue) else { return }
                do {
                    try chain.writeBytes(event.bytes, at: 0)
                } catch {
                    // An event buffer must hold one event (§5.8.6.2).
                    transport.deviceError(.malformedRequest("virtio-input: event buffer: \(error)"))
                    return
                }
                transport.pushUsed(chain, written: 8)
                delivered += 1
                queue.withLock { q in
                    if q.pending.first?.serial == serial { q.pending.removeFirst() }
                }
            }
        }
    }
}
