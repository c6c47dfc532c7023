import DeviceModel
import Synchronization
import SystemSupport
import VirtIO

/// virtio-console (virtio 1.2 §5.3) with one port and no VIRTIO_CONSOLE_F_MULTIPORT: queue 0
/// is receiveq (host → guest), queue 1 transmitq (guest → host). Linux calls it `hvc0`.
///
/// **Input** arrives from the `CharBackend` on its I/O thread. The device is a `CharFrontend`:
/// `receiveCapacity()` is the room in the receive buffers the guest has posted (nothing before
/// DRIVER_OK), so a guest that is not reading holds the host's input back instead of losing it;
/// when the guest posts buffers again the backend is told through `acceptInput()`.
///
/// **Output**: each transmitq buffer goes to `backend.write` as it is popped, on the notifying
/// vCPU thread. Two vCPUs notifying at once do not interleave: the second leaves the work to
/// the first, which looks again before it stops, so output keeps the ring's order.
///
/// VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a byte written to `emerg_wr` goes out at once,
/// before the queues are set up (early boot messages).
///
/// **Lifetime.** `init` attaches the device to its backend, and the backend keeps its frontend:
/// call `detachFromBackend()` to break the cycle (hot-unplug, tests), as with `UART16550`.
package final class VirtioConsole: VirtioDevice, CharFrontend {
    /// Device feature bits (§5.3.3).
    package enum Feature {
        package static let size = VirtioFeatures(bit: 0)
        package static let multiport = VirtioFeatures(bit: 1)
        package static let emergencyWrite = VirtioFeatures(bit: 2)
    }

    package static let receiveQueue = 0
    package static let transmitQueue = 1
    package static let queueSize: UInt16 = 128
    /// The most input offered at once (`receiveCapacity`).
    package static let maxInputChunk = 64 * 1024
    /// Output goes to the backend in pieces of at most this many bytes.
    package static let maxOutputChunk = 64 * 1024
    /// `struct virtio_console_config`: le16 cols, le16 rows, le32 max_nr_ports, le32 emerg_wr.
    package static let configSize = 12
    package static let emergencyWriteOffset = 8

    private struct State {
        /// Set at DRIVER_OK, cleared at reset: input goes nowhere without it.
        var transport: (any VirtioTransport)?
        /// The backend was told there is no room; it must hear when there is.
        var inputStalled = false
        /// A thread is draining transmitq; `transmitAgain` asks it for another pass.
        var transmitting = false
        var transmitAgain = false
    }

    private let backend: (any CharBackend)?
    private let state = Mutex(State())

    /// - Parameter backend: where output goes and input comes from; nil discards output.
    package init(backend: (any CharBackend)?) {
        self.backend = backend
        backend?.attach(self)
    }

    /// Breaks the device ↔ backend reference cycle; input stops, output still goes out.
    package func detachFromBackend() {
        backend?.attach(nil)
    }

    // MARK: VirtioDevice

    package var deviceID: VirtioDeviceID { .console }
    package var deviceFeatures: VirtioFeatures { Feature.emergencyWrite }
    package var queueMaxSizes: [UInt16] { [VirtioConsole.queueSize, VirtioConsole.queueSize] }

    package func configSpace() -> [UInt8] {
        var config = VirtioConfigSpace(size: VirtioConsole.configSize)
        // cols and rows are 0: VIRTIO_CONSOLE_F_SIZE is not offered. max_nr_ports is only
        // meaningful with MULTIPORT; QEMU fills it in regardless.
        config.put(UInt32(1), at: 4)
        return config.bytes
    }

    /// §5.3.4: a driver write to `emerg_wr` outputs its low byte.
    package func writeConfig(offset: Int, value: UInt64, size: Int) {
        guard offset == VirtioConsole.emergencyWriteOffset else { return }
        backend?.write([UInt8(truncatingIfNeeded: value)])
    }

    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {
        state.withLock { s in
            s.transport = transport
            s.inputStalled = false
        }
        // Input held back until now may flow.
        backend?.acceptInput()
    }

    package func reset() {
        state.withLock { s in
            s.transport = nil
            // Until DRIVER_OK capacity is 0; `activate` tells the backend when it changes.
            s.inputStalled = true
        }
    }

    package func process(queue: Int, transport: any VirtioTransport) {
        switch queue {
        case VirtioConsole.receiveQueue:
            // The guest posted receive buffers: input held back can now flow.
            let wake = state.withLock { s in
                defer { s.inputStalled = false }
                return s.inputStalled
            }
            if wake { backend?.acceptInput() }
        case VirtioConsole.transmitQueue:
            transmit(transport)
        default:
            break
        }
    }

    /// Drains transmitq into the backend; see the type's comment for the ordering rule.
    private func transmit(_ transport: any VirtioTransport) {
        let owner = state.withLock { s in
            if s.transmitting {
                s.transmitAgain = true
                return false
            }
            s.transmitting = true
            return true
        }
        guard owner else { return }
        while true {
            while let chain = transport.popAvailable(queue: VirtioConsole.transmitQueue) {
                // Device-writable buffers in a transmit chain have nothing to receive; ignored.
                var output: [[UInt8]] = []
                do {
                    try chain.forEachReadableSegment(offset: 0, count: chain.readableLength) { buffer in
                        var start = 0
                        while start < buffer.count {
                            let end = min(start + VirtioConsole.maxOutputChunk, buffer.count)
                            output.append(Array(buffer[start..<end]))
                            start = end
                        }
                    }
                } catch {
                    transport.deviceError(.malformedRequest("virtio-console: \(error)"))
                    break
                }
                for piece in output { backend?.write(piece) }
                transport.pushUsed(chain, written: 0)
            }
            transport.notifyIfNeeded(queue: VirtioConsole.transmitQueue)
            let again = state.withLock { s in
                if s.transmitAgain {
                    s.transmitAgain = false
                    return true
                }
                s.transmitting = false
                return false
            }
            if !again { return }
        }
    }

    // MARK: CharFrontend

    /// The room in the receive buffers the guest has posted (up to `maxInputChunk`); 0 before
    /// DRIVER_OK, after a reset, or while the guest has posted none.
    package func receiveCapacity() -> Int {
        // Marked stalled before looking, so buffers the guest posts while we look still wake
        // the backend (at worst once too often, which is harmless).
        let transport = state.withLock { s in
            s.inputStalled = true
            return s.transport
        }
        guard let transport else { return 0 }
        let room = transport.availableWritableBytes(queue: VirtioConsole.receiveQueue, limit: VirtioConsole.maxInputChunk)
        if room > 0 {
            // The backend comes back for more and asks again; no wake-up needed.
            state.withLock { $0.inputStalled = false }
        }
        return room
    }

    /// Host input: fills the posted receive buffers in order, each used as far as the input
    /// goes. Bytes beyond the room `receiveCapacity()` reported are dropped.
    package func receive(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, let transport = state.withLock({ $0.transport }) else { return }
        var rest = bytes[...]
        while !rest.isEmpty, let chain = transport.popAvailable(queue: VirtioConsole.receiveQueue) {
            let count = min(rest.count, chain.writableLength)
            do {
                try chain.writeBytes(Array(rest.prefix(count)), at: 0)
            } catch {
                transport.deviceError(error)
                return
            }
            transport.pushUsed(chain, written: count)
            rest = rest.dropFirst(count)
        }
        transport.notifyIfNeeded(queue: VirtioConsole.receiveQueue)
        if !rest.isEmpty {
            DebugLog.log(.guestErrors, "virtio-console: \(rest.count) input bytes dropped: no receive buffer posted")
        }
    }
}
