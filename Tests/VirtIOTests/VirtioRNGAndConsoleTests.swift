import DeviceModel
import Devices
import GuestMemory
import Synchronization
import SystemSupport
import Testing
import VirtIO

@Suite struct VirtioRNGTests {
    @Test func fillsBuffersFromTheHost() {
        let guest = FakeGuest(device: VirtioRNG())
        #expect(guest.initialize())
        #expect(guest.reg(.deviceID) == 4)
        let (head, writable) = guest.submit(queue: 0, readable: [], writable: [64, 64])
        #expect(guest.takeUsed(queue: 0) == [.init(id: UInt32(head), length: 128)])
        let bytes = guest.bytes(at: writable[0], count: 64) + guest.bytes(at: writable[1], count: 64)
        // The buffers were filled with 0xee; 128 random bytes are not all that (p = 2^-1024).
        #expect(bytes.contains { $0 != 0xee })
        #expect(Set(bytes).count > 16)
        #expect(guest.irq.level)
    }

    @Test func usesTheInjectedSourceAndCapsRequests() {
        let calls = Mutex(0)
        let rng = VirtioRNG { buffer throws(SystemError) in
            calls.withLock { $0 += 1 }
            for i in buffer.indices { buffer[i] = UInt8(truncatingIfNeeded: i) }
        }
        let guest = FakeGuest(device: rng)
        guest.initialize()
        let (_, writable) = guest.submit(queue: 0, readable: [], writable: [100_000])
        #expect(guest.takeUsed(queue: 0).map(\.length) == [UInt32(VirtioRNG.maxBytesPerRequest)])
        #expect(guest.bytes(at: writable[0], count: 4) == [0, 1, 2, 3])
        #expect(calls.withLock { $0 } == 1)
    }

    @Test func failingSourceGivesAnEmptyAnswer() {
        let guest = FakeGuest(device: VirtioRNG { _ throws(SystemError) in throw .unsupported("no entropy") })
        guest.initialize()
        guest.submit(queue: 0, readable: [], writable: [32])
        #expect(guest.takeUsed(queue: 0).map(\.length) == [0])
        #expect(!guest.needsReset)
    }
}

@Suite struct VirtioConsoleTests {
    struct Harness {
        let guest: FakeGuest
        let backend = FakeCharBackend()
        let console: VirtioConsole

        init(initialize: Bool = true) {
            console = VirtioConsole(backend: backend)
            guest = FakeGuest(device: console)
            if initialize { #expect(guest.initialize()) }
        }

        /// Posts receive buffers, as Linux's hvc driver fills receiveq at probe.
        func postReceiveBuffers(_ sizes: [Int], notify: Bool = true) -> [GuestAddress] {
            var addresses: [GuestAddress] = []
            for size in sizes {
                addresses += guest.submit(queue: 0, readable: [], writable: [size], notify: false).writable
            }
            if notify { guest.notify(0) }
            return addresses
        }
    }

    @Test func identityAndConfig() {
        let h = Harness()
        #expect(h.guest.reg(.deviceID) == 3)
        #expect(h.guest.deviceFeatures.contains(VirtioConsole.Feature.emergencyWrite))
        #expect(!h.guest.deviceFeatures.contains(VirtioConsole.Feature.multiport))
        #expect(h.guest.config(UInt32.self, at: 4) == 1)
        h.console.detachFromBackend()
    }

    @Test func transmitGoesToTheBackend() {
        let h = Harness()
        let (head, _) = h.guest.submit(queue: 1, readable: Array("hello, ".utf8).map { [$0] } + [Array("world\n".utf8)], writable: [])
        #expect(h.backend.output == Array("hello, world\n".utf8))
        #expect(h.guest.takeUsed(queue: 1) == [.init(id: UInt32(head), length: 0)])
        #expect(h.guest.acknowledgeInterrupt() == .usedBuffer)
        h.console.detachFromBackend()
    }

    @Test func receiveFillsPostedBuffers() {
        let h = Harness()
        let buffers = h.postReceiveBuffers([4, 8])
        h.backend.type(Array("abcdef".utf8))
        let used = h.guest.takeUsed(queue: 0)
        #expect(used.map(\.length) == [4, 2])
        #expect(h.guest.bytes(at: buffers[0], count: 4) == Array("abcd".utf8))
        #expect(h.guest.bytes(at: buffers[1], count: 2) == Array("ef".utf8))
        #expect(h.guest.irq.level)
        h.console.detachFromBackend()
    }

    @Test func inputWaitsForBuffersThenFlows() {
        let h = Harness()
        // No receive buffers: the backend keeps the input.
        h.backend.type(Array("xyz".utf8))
        #expect(h.backend.pendingCount == 3)
        #expect(h.console.receiveCapacity() == 0)
        let buffers = h.postReceiveBuffers([2])
        // Posting buffers woke the backend, which delivered what fit.
        #expect(h.backend.acceptInputCalls >= 2)
        #expect(h.backend.pendingCount == 1)
        #expect(h.guest.bytes(at: buffers[0], count: 2) == Array("xy".utf8))
        let more = h.postReceiveBuffers([16])
        #expect(h.backend.pendingCount == 0)
        #expect(h.guest.bytes(at: more[0], count: 1) == Array("z".utf8))
        #expect(h.guest.takeUsed(queue: 0).map(\.length) == [2, 1])
        h.console.detachFromBackend()
    }

    @Test func noInputBeforeDriverOK() {
        let h = Harness(initialize: false)
        #expect(h.console.receiveCapacity() == 0)
        h.backend.type([1, 2, 3])
        #expect(h.backend.pendingCount == 3)
        h.guest.initialize()
        // DRIVER_OK lets the backend try again, but no buffers are posted yet.
        #expect(h.backend.pendingCount == 3)
        _ = h.postReceiveBuffers([8])
        #expect(h.backend.pendingCount == 0)
        h.console.detachFromBackend()
    }

    @Test func echoBothWays() {
        let h = Harness()
        let rx = h.postReceiveBuffers([64, 64])
        h.guest.submit(queue: 1, readable: [Array("ping".utf8)], writable: [])
        #expect(h.backend.output == Array("ping".utf8))
        // The host answers; the guest reads it from receiveq, in the first buffer it posted.
        h.backend.type(h.backend.output.reversed())
        #expect(h.guest.takeUsed(queue: 0) == [.init(id: 0, length: 4)])
        #expect(h.guest.bytes(at: rx[0], count: 4) == Array("gnip".utf8))
        h.console.detachFromBackend()
    }

    @Test func emergencyWrite() {
        let h = Harness(initialize: false)
        h.guest.mmio.write(offset: VirtioMMIO.configOffset + 8, value: UInt64(UInt8(ascii: "!")), size: 4)
        #expect(h.backend.output == [UInt8(ascii: "!")])
        h.console.detachFromBackend()
    }

    @Test func resetDropsInput() {
        let h = Harness()
        _ = h.postReceiveBuffers([8])
        h.guest.write(.status, 0)
        h.backend.type([1, 2])
        #expect(h.backend.pendingCount == 2)
        h.guest.initialize()
        _ = h.postReceiveBuffers([8])
        #expect(h.backend.pendingCount == 0)
        #expect(h.guest.takeUsed(queue: 0).map(\.length) == [2])
        h.console.detachFromBackend()
    }

    @Test func badTransmitChainNeedsReset() {
        let h = Harness()
        h.guest.writeDescriptor(queue: 1, 0, address: GuestAddress(0x10), length: 4, flags: [])
        h.guest.makeAvailable(queue: 1, head: 0)
        h.guest.notify(1)
        #expect(h.guest.needsReset)
        #expect(h.backend.output.isEmpty)
        h.console.detachFromBackend()
    }
}
