import DeviceModel
import Devices
import Glibc
import GuestMemory
import Synchronization
import SystemSupport
import Testing
import VirtIO

typealias NetFeature = VirtioNet.Feature
typealias NetControl = VirtioNet.Control

/// A network backend that records what the guest sends, can refuse more (back-pressure), and
/// offers frames to the NIC as far as it takes them.
final class FakeNetBackend: NetBackend {
    struct State {
        weak var frontend: (any NetFrontend)?
        var sent: [[UInt8]] = []
        /// `send` returns false once this many frames were sent (nil: never).
        var capacity: Int?
        /// `send` returns false for every n-th frame and asks the test's I/O thread for a
        /// `backendReady` (the concurrency test).
        var refuseEvery: Int?
        var readyWanted = false
        /// Frames waiting for the NIC, oldest first.
        var pending: [[UInt8]] = []
        var frontendReadyCalls = 0
        /// Every `setGuestOffloads` call, oldest first.
        var guestOffloads: [NetOffloads] = []
    }
    let id = "net0"
    let info = "fake"
    /// Non-empty: frames cross with a virtio_net_hdr (a tap with IFF_VNET_HDR).
    let offloads: NetOffloads
    let state = Mutex(State())

    init(offloads: NetOffloads = []) { self.offloads = offloads }

    func setGuestOffloads(_ offloads: NetOffloads) { state.withLock { $0.guestOffloads.append(offloads) } }

    func attach(_ frontend: (any NetFrontend)?) { state.withLock { $0.frontend = frontend } }

    func send(_ frame: [UInt8]) -> Bool {
        // A slow wire in the concurrency test: two drainers that overlapped would reorder here.
        if state.withLock({ $0.refuseEvery != nil }) { usleep(20) }
        return state.withLock { s in
            s.sent.append(frame)
            if let every = s.refuseEvery, s.sent.count % every == 0 {
                s.readyWanted = true
                return false
            }
            return s.capacity.map { s.sent.count < $0 } ?? true
        }
    }

    func frontendReady() {
        state.withLock { $0.frontendReadyCalls += 1 }
        pump()
    }

    func close() {}

    /// Offers `frame` to the NIC after whatever is still pending.
    func deliver(_ frame: [UInt8]) {
        state.withLock { $0.pending.append(frame) }
        pump()
    }

    /// Offers pending frames until the NIC says it has no room.
    func pump() {
        guard let frontend = state.withLock({ $0.frontend }) else { return }
        while let frame = state.withLock({ $0.pending.first }) {
            guard frontend.receive(frame) else { return }
            state.withLock { _ = $0.pending.removeFirst() }
        }
    }

    /// The backend's queue drained: lift the capacity and tell the NIC.
    func drained() {
        let frontend = state.withLock { s in
            s.capacity = nil
            return s.frontend
        }
        frontend?.backendReady()
    }

    var sent: [[UInt8]] { state.withLock { $0.sent } }
    var pendingCount: Int { state.withLock { $0.pending.count } }
    var frontendReadyCalls: Int { state.withLock { $0.frontendReadyCalls } }
    var guestOffloads: [NetOffloads] { state.withLock { $0.guestOffloads } }
}

let ourMAC = MACAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
let peerMAC: [UInt8] = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]
let broadcastMAC: [UInt8] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]

/// An Ethernet frame: destination, source, EtherType, payload.
func ethernetFrame(to destination: [UInt8], from source: [UInt8] = peerMAC, type: UInt16 = 0x0800, payload: [UInt8]) -> [UInt8] {
    destination + source + [UInt8(type >> 8), UInt8(type & 0xff)] + payload
}

/// A frame of `count` bytes to `destination` with a recognisable payload.
func sizedFrame(_ count: Int, to destination: [UInt8] = ourMAC.bytes, seed: Int = 0) -> [UInt8] {
    ethernetFrame(to: destination, payload: (0..<count - 14).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) })
}

/// `struct virtio_net_hdr` (§5.1.6).
func netHeader(flags: UInt8 = 0, gsoType: UInt8 = 0, headerLength: UInt16 = 0, gsoSize: UInt16 = 0, checksumStart: UInt16 = 0,
               checksumOffset: UInt16 = 0, numBuffers: UInt16 = 0) -> [UInt8] {
    [flags, gsoType] + le(headerLength) + le(gsoSize) + le(checksumStart) + le(checksumOffset) + le(numBuffers)
}

/// A virtio-net behind a fake guest, driven as Linux's virtio_net does.
final class NetHarness {
    let backend: FakeNetBackend
    let net: VirtioNet
    let guest: FakeGuest
    /// The receive buffer behind each posted head.
    var posted: [UInt16: GuestAddress] = [:]

    init(offloads: NetOffloads = [], initialize: Bool = true, accept: (VirtioFeatures) -> VirtioFeatures = { $0 }) {
        backend = FakeNetBackend(offloads: offloads)
        net = VirtioNet(backend: backend, mac: ourMAC)
        guest = FakeGuest(device: net)
        if initialize {
            let accepted = guest.initialize(accept: accept)
            #expect(accepted)
        }
    }

    /// Queues a frame on transmitq (header and frame in one descriptor, as Linux's
    /// any_header_sg path); returns the head.
    @discardableResult
    func transmit(_ frame: [UInt8], header: [UInt8] = netHeader(), notify: Bool = true) -> UInt16 {
        guest.submit(queue: VirtioNet.transmitQueue, readable: [header + frame], writable: [], notify: notify).head
    }

    /// Posts receive buffers, one descriptor each, as Linux's add_recvbuf_mergeable.
    @discardableResult
    func postReceiveBuffers(_ sizes: [Int], notify: Bool = true) -> [GuestAddress] {
        var addresses: [GuestAddress] = []
        for size in sizes {
            let (head, writable) = guest.submit(queue: VirtioNet.receiveQueue, readable: [], writable: [size], notify: false)
            posted[head] = writable[0]
            addresses += writable
        }
        if notify { guest.notify(VirtioNet.receiveQueue) }
        return addresses
    }

    /// Sends a control command (class, command, data); returns the ack byte.
    func control(_ bytes: [UInt8]) -> UInt8? {
        let (_, writable) = guest.submit(queue: VirtioNet.controlQueue, readable: [bytes], writable: [1])
        guard guest.takeUsed(queue: VirtioNet.controlQueue).count == 1 else { return nil }
        return guest.bytes(at: writable[0], count: 1)[0]
    }

    func setPromiscuous(_ on: Bool) {
        #expect(control([NetControl.rxClass, NetControl.rxPromiscuous, on ? 1 : 0]) == NetControl.ok)
    }

    static func macTable(unicast: [[UInt8]], multicast: [[UInt8]]) -> [UInt8] {
        [NetControl.macClass, NetControl.macTableSet] + le(UInt32(unicast.count)) + unicast.flatMap { $0 }
            + le(UInt32(multicast.count)) + multicast.flatMap { $0 }
    }

    var configMAC: [UInt8] { (0..<6).map { guest.config(UInt8.self, at: $0) } }
    var configStatus: UInt16 { guest.config(UInt16.self, at: VirtioNet.statusOffset) }

    /// Whether `frame` reaches the guest (a receive buffer is posted if none is) or is
    /// consumed without.
    func isDelivered(_ frame: [UInt8]) -> Bool {
        if guest.queues[VirtioNet.receiveQueue].availIdx == guest.usedIdx(queue: VirtioNet.receiveQueue) {
            postReceiveBuffers([2048])
        }
        #expect(net.receive(frame))
        let used = guest.takeUsed(queue: VirtioNet.receiveQueue)
        guard used.count == 1, let buffer = posted[UInt16(used[0].id)] else { return false }
        #expect(guest.bytes(at: GuestAddress(buffer.rawValue + 12), count: frame.count) == frame)
        return true
    }
}

// MARK: Checksums, computed here as a receiver checks them

/// The 16-bit one's complement sum of `bytes` (big-endian words, odd byte zero-padded), folded.
func onesComplementSum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    for i in stride(from: 0, to: bytes.count, by: 2) {
        sum += (UInt32(bytes[i]) << 8) + (i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0)
        sum = (sum & 0xffff) + (sum >> 16)
    }
    return UInt16(sum)
}

/// The IPv4 pseudo-header of a TCP/UDP segment (RFC 768, RFC 793).
func pseudoHeader(source: [UInt8], destination: [UInt8], protocol proto: UInt8, length: Int) -> [UInt8] {
    source + destination + [0, proto, UInt8(length >> 8), UInt8(length & 0xff)]
}

/// An IPv4 packet in an Ethernet frame carrying a TCP or UDP segment whose checksum field holds
/// the pseudo-header sum, as Linux leaves it for CHECKSUM_PARTIAL; and the header that asks the
/// device to finish it.
func partialChecksumFrame(udp: Bool, payload: [UInt8]) -> (frame: [UInt8], header: [UInt8], pseudo: [UInt8], checksumAt: Int) {
    let source: [UInt8] = [10, 0, 2, 15]
    let destination: [UInt8] = [10, 0, 2, 2]
    let proto: UInt8 = udp ? 17 : 6
    let transportHeaderSize = udp ? 8 : 20
    let segmentLength = transportHeaderSize + payload.count
    let ip: [UInt8] = [0x45, 0, UInt8((20 + segmentLength) >> 8), UInt8((20 + segmentLength) & 0xff), 0x12, 0x34, 0x40, 0,
                       64, proto, 0, 0] + source + destination
    let pseudo = pseudoHeader(source: source, destination: destination, protocol: proto, length: segmentLength)
    let seed = onesComplementSum(pseudo)
    let checkOffset = udp ? 6 : 16
    var transport: [UInt8]
    if udp {
        transport = [0x04, 0xd2, 0x00, 0x35, UInt8(segmentLength >> 8), UInt8(segmentLength & 0xff), 0, 0]
    } else {
        transport = [0x9c, 0x40, 0x00, 0x50, 0, 0, 0x10, 0x01, 0, 0, 0, 0, 0x50, 0x18, 0xfa, 0xf0, 0, 0, 0, 0]
    }
    transport[checkOffset] = UInt8(seed >> 8)
    transport[checkOffset + 1] = UInt8(seed & 0xff)
    let frame = ethernetFrame(to: peerMAC, from: ourMAC.bytes, payload: ip + transport + payload)
    let start = 14 + 20
    let header = netHeader(flags: VirtioNet.needsChecksum, checksumStart: UInt16(start), checksumOffset: UInt16(checkOffset))
    return (frame, header, pseudo, start + checkOffset)
}

@Suite struct VirtioNetTests {
    // MARK: Identity

    @Test func featuresAndConfig() {
        let h = NetHarness(initialize: false)
        #expect(h.guest.reg(.deviceID) == 1)
        let offered = h.guest.deviceFeatures
        #expect(offered.isSuperset(of: [NetFeature.mac, NetFeature.status, NetFeature.mergeableRxBuffers, NetFeature.controlQueue,
                                        NetFeature.controlRx, NetFeature.controlMACAddress, NetFeature.checksum, .version1]))
        // No offloads a backend without them cannot take: GUEST_CSUM (1), GUEST_TSO4/6, ECN, UFO
        // (7-10), HOST_TSO4/6, ECN, UFO (11-14); nor CTRL_VLAN (19), CTRL_RX_EXTRA (20), MQ (22).
        for bit in [1, 7, 8, 9, 10, 11, 12, 13, 14, 19, 20, 22] {
            #expect(!offered.contains(VirtioFeatures(bit: bit)), "feature bit \(bit) offered")
        }
        #expect(h.configMAC == ourMAC.bytes)
        #expect(h.configStatus == VirtioNet.linkUpStatus)
        #expect(h.guest.config(UInt16.self, at: VirtioNet.maxQueuePairsOffset) == 1)
        #expect(h.guest.reg(.queueNumMax) == UInt32(VirtioNet.queueSize))
        // §5.1.4.2: the MAC is not writable through the configuration space by a 1.x driver.
        h.guest.mmio.write(offset: VirtioMMIO.configOffset, value: 0xff, size: 1)
        #expect(h.configMAC == ourMAC.bytes)
        #expect(h.guest.initialize())
        #expect(h.guest.queues.count == 3)
        h.net.detachFromBackend()
    }

    // MARK: Transmit

    @Test func transmitsAFrameInOneDescriptor() {
        let h = NetHarness()
        let frame = sizedFrame(60, to: peerMAC)
        let head = h.transmit(frame)
        #expect(h.backend.sent == [frame])
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue) == [.init(id: UInt32(head), length: 0)])
        #expect(h.guest.acknowledgeInterrupt() == .usedBuffer)
        #expect(h.net.statistics.txFrames == 1)
        #expect(h.net.statistics.txBytes == 60)
        h.net.detachFromBackend()
    }

    @Test func transmitsAFrameSplitAcrossDescriptors() {
        let h = NetHarness()
        let frame = sizedFrame(1514, to: peerMAC)
        let pieces = [netHeader(), Array(frame[0..<5]), Array(frame[5..<20]), Array(frame[20...])]
        let (head, _) = h.guest.submit(queue: VirtioNet.transmitQueue, readable: pieces, writable: [])
        #expect(h.backend.sent == [frame])
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue) == [.init(id: UInt32(head), length: 0)])
        // Indirect descriptors, as Linux uses for a fragmented skb.
        h.guest.submit(queue: VirtioNet.transmitQueue, readable: pieces, writable: [], indirect: true)
        #expect(h.backend.sent == [frame, frame])
        h.net.detachFromBackend()
    }

    @Test(arguments: [true, false])
    func completesAPartialChecksum(udp: Bool) throws {
        let h = NetHarness()
        let payload = (0..<37).map { UInt8(truncatingIfNeeded: $0 * 13 + 5) }  // odd: a padded last byte
        let (frame, header, pseudo, checksumAt) = partialChecksumFrame(udp: udp, payload: payload)
        h.transmit(frame, header: header)
        let sent = try #require(h.backend.sent.first, "no frame sent")
        #expect(sent.count == frame.count)
        // Only the checksum field changed.
        #expect(Array(sent[..<checksumAt]) == Array(frame[..<checksumAt]))
        #expect(Array(sent[(checksumAt + 2)...]) == Array(frame[(checksumAt + 2)...]))
        // The receiver's check: pseudo-header plus segment sum to all ones.
        let segment = Array(sent[34...])
        #expect(onesComplementSum(pseudo + segment) == 0xffff)
        // And the field is what a sender computes from scratch, over a zeroed field.
        var zeroed = segment
        zeroed[checksumAt - 34] = 0
        zeroed[checksumAt - 34 + 1] = 0
        let expected = ~onesComplementSum(pseudo + zeroed)
        #expect(UInt16(sent[checksumAt]) << 8 | UInt16(sent[checksumAt + 1]) == (expected == 0 ? 0xffff : expected))
        h.net.detachFromBackend()
    }

    @Test func malformedFramesAreDroppedAndCompleted() {
        let h = NetHarness()
        let frame = sizedFrame(64, to: peerMAC)
        // csum_start past the frame.
        h.transmit(frame, header: netHeader(flags: VirtioNet.needsChecksum, checksumStart: 64, checksumOffset: 0))
        // csum_start inside, but the checksum field would end past the frame.
        h.transmit(frame, header: netHeader(flags: VirtioNet.needsChecksum, checksumStart: 34, checksumOffset: 29))
        // Shorter than an Ethernet header, and no frame at all.
        h.transmit(Array(frame[..<13]))
        h.transmit([])
        // A GSO type that was not negotiated (VIRTIO_NET_HDR_GSO_TCPV4).
        h.transmit(frame, header: netHeader(gsoType: 1))
        // Longer than 64 KiB of IP and an Ethernet header.
        h.transmit(sizedFrame(VirtioNet.maxFrameSize + 1, to: peerMAC))
        // The device goes on: the next good frame is sent.
        h.transmit(frame)
        #expect(h.backend.sent == [frame])
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue).map(\.length) == [0, 0, 0, 0, 0, 0, 0])
        #expect(!h.guest.needsReset)
        #expect(h.net.statistics.txDropped == 6)
        #expect(h.net.statistics.txFrames == 1)
        h.net.detachFromBackend()
    }

    @Test func chainWithoutAHeaderNeedsReset() {
        let h = NetHarness()
        h.guest.submit(queue: VirtioNet.transmitQueue, readable: [[1, 2, 3]], writable: [])
        #expect(h.guest.needsReset)
        #expect(h.backend.sent.isEmpty)
        h.net.detachFromBackend()
    }

    @Test func backPressureHoldsTheRingUntilTheBackendIsReady() {
        let h = NetHarness()
        h.backend.state.withLock { $0.capacity = 2 }
        let frames = (0..<5).map { sizedFrame(100, to: peerMAC, seed: $0) }
        for frame in frames { h.transmit(frame) }
        // The second send said "full": the rest wait in the ring, however often the guest kicks.
        #expect(h.backend.sent == Array(frames[..<2]))
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue).count == 2)
        h.guest.notify(VirtioNet.transmitQueue)
        #expect(h.backend.sent.count == 2)
        h.backend.drained()
        #expect(h.backend.sent == frames)
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue).count == 3)
        #expect(h.guest.irq.level)
        h.net.detachFromBackend()
    }

    @Test func concurrentTransmitKeepsTheRingOrder() throws {
        let h = NetHarness()
        let count = 200
        h.backend.state.withLock { $0.refuseEvery = 7 }
        let frames = (0..<count).map { sizedFrame(64 + $0, to: peerMAC, seed: $0) }
        for frame in frames { h.transmit(frame, notify: false) }
        let done = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)
        let guest = h.guest
        let backend = h.backend
        let mmio = guest.mmio
        for cpu in 0..<2 {
            // Two vCPUs kicking transmitq.
            try HostThread.spawn(name: "vcpu\(cpu)") {
                for _ in 0..<300 {
                    mmio.write(offset: Register.queueNotify.rawValue, value: UInt64(VirtioNet.transmitQueue), size: 4)
                }
                done.add(1, ordering: .sequentiallyConsistent)
            }
        }
        // The backend's I/O thread, reporting room after each refusal.
        try HostThread.spawn(name: "net-io") {
            while !stop.load(ordering: .sequentiallyConsistent) {
                let (frontend, ready) = backend.state.withLock { s in
                    defer { s.readyWanted = false }
                    return (s.frontend, s.readyWanted)
                }
                if ready { frontend?.backendReady() } else { sched_yield() }
            }
            done.add(1, ordering: .sequentiallyConsistent)
        }
        var waited = 0
        while (done.load(ordering: .sequentiallyConsistent) < 2 || backend.sent.count < count) && waited < 20_000 {
            usleep(1000)
            waited += 1
        }
        stop.store(true, ordering: .sequentiallyConsistent)
        while done.load(ordering: .sequentiallyConsistent) < 3 { usleep(1000) }
        // Frame i is 64 + i bytes long: the order in which they went out.
        #expect(backend.sent.map { $0.count - 64 } == Array(0..<count))
        #expect(backend.sent == frames)
        #expect(guest.usedIdx(queue: VirtioNet.transmitQueue) == UInt16(count))
        #expect(!guest.needsReset)
        h.net.detachFromBackend()
    }

    // MARK: Receive

    @Test func largeFrameSpansMergeableBuffers() {
        let h = NetHarness()
        let buffers = h.postReceiveBuffers([1536, 1536, 1536])
        let frame = sizedFrame(3000)
        #expect(h.net.receive(frame))
        let used = h.guest.takeUsed(queue: VirtioNet.receiveQueue)
        #expect(used.map(\.length) == [1536, UInt32(3000 + 12 - 1536)])
        let header = h.guest.bytes(at: buffers[0], count: 12)
        #expect(header == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0] + le(UInt16(2)))
        let received = h.guest.bytes(at: GuestAddress(buffers[0].rawValue + 12), count: 1536 - 12)
            + h.guest.bytes(at: buffers[1], count: 3000 + 12 - 1536)
        #expect(received == frame)
        #expect(h.guest.irq.level)
        #expect(h.net.statistics.rxFrames == 1)
        #expect(h.net.statistics.rxBytes == 3000)
        h.net.detachFromBackend()
    }

    @Test func frameWaitsUntilThereIsRoomForAllOfIt() {
        let h = NetHarness()
        h.postReceiveBuffers([1536])
        let frame = sizedFrame(3000)
        h.backend.deliver(frame)
        // One buffer is not enough: nothing is taken, the backend keeps the frame.
        #expect(h.backend.pendingCount == 1)
        #expect(h.guest.usedIdx(queue: VirtioNet.receiveQueue) == 0)
        h.postReceiveBuffers([1536])
        #expect(h.backend.frontendReadyCalls == 1)
        #expect(h.backend.pendingCount == 0)
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).count == 2)
        h.net.detachFromBackend()
    }

    @Test func noBuffersHoldsTheFrameUntilTheGuestPostsSome() {
        let h = NetHarness()
        let frame = sizedFrame(100)
        #expect(!h.net.receive(frame))
        h.backend.deliver(frame)
        #expect(h.backend.pendingCount == 1)
        let buffers = h.postReceiveBuffers([1536])
        #expect(h.backend.frontendReadyCalls == 1)
        #expect(h.backend.pendingCount == 0)
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).map(\.length) == [112])
        #expect(h.guest.bytes(at: GuestAddress(buffers[0].rawValue + 12), count: 100) == frame)
        // Buffers posted while nothing is waiting do not bother the backend.
        h.postReceiveBuffers([1536])
        #expect(h.backend.frontendReadyCalls == 1)
        h.net.detachFromBackend()
    }

    /// While the machine is stopped (a snapshot or a migration's last pass) nothing from the
    /// host reaches guest memory: frames wait in the backend, and so does the transmit work a
    /// `backendReady` asks for; both go on once the machine runs.
    @Test func aStoppedMachineHoldsTheNetworkBack() {
        let h = NetHarness()
        h.postReceiveBuffers([1536, 1536])
        h.backend.state.withLock { $0.capacity = 1 }
        let outgoing = (0..<3).map { sizedFrame(80, to: peerMAC, seed: $0) }
        for frame in outgoing { h.transmit(frame) }
        #expect(h.backend.sent.count == 1)
        _ = h.guest.takeUsed(queue: VirtioNet.transmitQueue)

        h.net.setRunning(false)
        let frame = sizedFrame(100)
        h.backend.deliver(frame)
        h.backend.drained()
        #expect(h.backend.pendingCount == 1)
        #expect(h.backend.sent.count == 1)
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).isEmpty)
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue).isEmpty)

        h.net.setRunning(true)
        #expect(h.backend.pendingCount == 0)
        #expect(h.backend.frontendReadyCalls == 1)
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).map(\.length) == [112])
        #expect(h.backend.sent == outgoing)
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue).count == 2)
        h.net.detachFromBackend()
    }

    /// With VIRTIO_F_EVENT_IDX a device that turns a frame away for want of room asks for a
    /// notification at the driver's next buffer (avail_event = avail idx): else a driver past
    /// the last avail_event would post buffers silently and receive would stall for good.
    @Test func noRoomAsksForTheNextBufferWithEventIndex() {
        let h = NetHarness()  // the fake guest accepts every feature offered, EVENT_IDX included
        h.postReceiveBuffers([1536, 1536, 1536], notify: false)
        #expect(h.net.receive(sizedFrame(1500)))          // takes one buffer: avail_event 1
        #expect(h.guest.availEvent(queue: VirtioNet.receiveQueue) == 1)
        #expect(!h.net.receive(sizedFrame(9000)))         // two left are too few for 9000 bytes
        #expect(h.guest.availEvent(queue: VirtioNet.receiveQueue) == 3)
        h.net.detachFromBackend()
    }

    @Test func nothingIsReceivedBeforeDriverOK() {
        let h = NetHarness(initialize: false)
        h.backend.deliver(sizedFrame(80))
        #expect(h.backend.pendingCount == 1)
        #expect(h.guest.initialize())
        // DRIVER_OK lets the backend try again; no buffers yet.
        #expect(h.backend.frontendReadyCalls == 1)
        #expect(h.backend.pendingCount == 1)
        h.postReceiveBuffers([1536])
        #expect(h.backend.pendingCount == 0)
        h.net.detachFromBackend()
    }

    @Test func withoutMergeableBuffersAFrameTakesOneChain() {
        let h = NetHarness(accept: { $0.subtracting(NetFeature.mergeableRxBuffers) })
        let buffers = h.postReceiveBuffers([1526, 1526])
        let frame = sizedFrame(1514)
        #expect(h.net.receive(frame))
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).map(\.length) == [1526])
        // num_buffers is 1 (§5.1.6.4).
        #expect(h.guest.bytes(at: GuestAddress(buffers[0].rawValue + 10), count: 2) == le(UInt16(1)))
        #expect(h.guest.bytes(at: GuestAddress(buffers[0].rawValue + 12), count: 1514) == frame)
        // A frame larger than the buffer is dropped; the buffer goes back empty.
        #expect(h.net.receive(sizedFrame(2000)))
        #expect(h.guest.takeUsed(queue: VirtioNet.receiveQueue).map(\.length) == [0])
        #expect(h.net.statistics.rxDropped == 1)
        #expect(!h.guest.needsReset)
        h.net.detachFromBackend()
    }

    @Test func mergeableBufferSmallerThanTheHeaderNeedsReset() {
        let h = NetHarness()
        h.postReceiveBuffers([8, 1536])
        #expect(h.net.receive(sizedFrame(100)))
        #expect(h.guest.needsReset)
        h.net.detachFromBackend()
    }

    @Test func receiveFilter() {
        let h = NetHarness()
        let other: [UInt8] = [0x52, 0x54, 0x00, 0x99, 0x99, 0x99]
        let listed: [UInt8] = [0x52, 0x54, 0x00, 0x11, 0x11, 0x11]
        let multicast: [UInt8] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]
        let unlisted: [UInt8] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01]
        // Promiscuous after reset, as QEMU: everything reaches the guest.
        #expect(h.isDelivered(sizedFrame(60, to: other)))
        h.setPromiscuous(false)
        #expect(h.control(NetHarness.macTable(unicast: [listed], multicast: [multicast])) == NetControl.ok)
        #expect(h.isDelivered(sizedFrame(60, to: ourMAC.bytes)))
        #expect(h.isDelivered(sizedFrame(60, to: listed)))
        #expect(!h.isDelivered(sizedFrame(60, to: other)))
        #expect(h.isDelivered(sizedFrame(60, to: broadcastMAC)))
        #expect(h.isDelivered(sizedFrame(60, to: multicast)))
        #expect(!h.isDelivered(sizedFrame(60, to: unlisted)))
        #expect(h.control([NetControl.rxClass, NetControl.rxAllMulticast, 1]) == NetControl.ok)
        #expect(h.isDelivered(sizedFrame(60, to: unlisted)))
        #expect(!h.isDelivered(sizedFrame(60, to: other)))
        #expect(h.net.statistics.rxFiltered == 3)
        h.net.detachFromBackend()
    }

    @Test func overflowingMACTableAcceptsThatKind() {
        let h = NetHarness()
        h.setPromiscuous(false)
        let many = (0..<65).map { [0x52, 0x54, 0x01, 0x00, 0x00, UInt8($0)] }
        #expect(h.control(NetHarness.macTable(unicast: many, multicast: [])) == NetControl.ok)
        #expect(h.isDelivered(sizedFrame(60, to: [0x52, 0x54, 0x00, 0x99, 0x99, 0x99])))
        #expect(!h.isDelivered(sizedFrame(60, to: [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01])))
        // 60 unicast leave room for 4 multicast; 5 overflow.
        let multicast = (0..<5).map { [0x01, 0x00, 0x5e, 0x00, 0x01, UInt8($0)] }
        #expect(h.control(NetHarness.macTable(unicast: Array(many[..<60]), multicast: multicast)) == NetControl.ok)
        #expect(!h.isDelivered(sizedFrame(60, to: [0x52, 0x54, 0x00, 0x99, 0x99, 0x99])))
        #expect(h.isDelivered(sizedFrame(60, to: many[59])))
        #expect(h.isDelivered(sizedFrame(60, to: [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01])))
        #expect(h.net.saveState().multicastOverflow)
        h.net.detachFromBackend()
    }

    // MARK: Control queue

    @Test func controlAcks() {
        let h = NetHarness()
        #expect(h.control([NetControl.rxClass, NetControl.rxPromiscuous, 1]) == NetControl.ok)
        #expect(h.control([NetControl.rxClass, NetControl.rxAllMulticast, 0]) == NetControl.ok)
        // ALLUNI (CTRL_RX_EXTRA, not offered), VLAN, MQ: unknown here.
        #expect(h.control([NetControl.rxClass, 2, 1]) == NetControl.error)
        #expect(h.control([2, 0, 1, 0]) == NetControl.error)
        #expect(h.control([4, 0, 1, 0]) == NetControl.error)
        // Malformed: no on/off byte; a MAC of 5 bytes; a list longer than the data; a
        // multicast list that does not end the data.
        #expect(h.control([NetControl.rxClass, NetControl.rxPromiscuous]) == NetControl.error)
        #expect(h.control([NetControl.macClass, NetControl.macAddressSet, 1, 2, 3, 4, 5]) == NetControl.error)
        #expect(h.control([NetControl.macClass, NetControl.macTableSet] + le(UInt32(2)) + [1, 2, 3, 4, 5, 6]) == NetControl.error)
        #expect(h.control(NetHarness.macTable(unicast: [], multicast: [[1, 0, 0x5e, 0, 0, 1]]) + [0]) == NetControl.error)
        #expect(h.control([NetControl.macClass, NetControl.macTableSet] + le(UInt32(0))) == NetControl.error)
        #expect(h.control([NetControl.macClass, NetControl.macTableSet] + le(UInt32.max) + le(UInt32(0))) == NetControl.error)
        // A failed command changes nothing.
        #expect(h.net.saveState().promiscuous)
        #expect(h.control(NetHarness.macTable(unicast: [], multicast: [])) == NetControl.ok)
        #expect(!h.guest.needsReset)
        h.net.detachFromBackend()
    }

    @Test func controlRequestWithoutAckByteNeedsReset() {
        let h = NetHarness()
        h.guest.submit(queue: VirtioNet.controlQueue, readable: [[NetControl.rxClass, NetControl.rxPromiscuous, 0]], writable: [])
        #expect(h.guest.needsReset)
        h.net.detachFromBackend()
    }

    @Test func macAddressSetChangesTheConfigMAC() {
        let h = NetHarness()
        let new: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
        #expect(h.control([NetControl.macClass, NetControl.macAddressSet] + new) == NetControl.ok)
        #expect(h.configMAC == new)
        #expect(h.net.mac == MACAddress(new))
        h.setPromiscuous(false)
        #expect(h.isDelivered(sizedFrame(60, to: new)))
        #expect(!h.isDelivered(sizedFrame(60, to: ourMAC.bytes)))
        h.net.detachFromBackend()
    }

    // MARK: Link, reset, snapshots

    @Test func linkDown() {
        let h = NetHarness()
        h.net.setLinkUp(false)
        #expect(!h.net.linkUp)
        #expect(h.configStatus == 0)
        #expect(h.guest.acknowledgeInterrupt() == .configChange)
        // Frames go nowhere either way, but the guest's buffers come back.
        let head = h.transmit(sizedFrame(60, to: peerMAC))
        #expect(h.backend.sent.isEmpty)
        #expect(h.guest.takeUsed(queue: VirtioNet.transmitQueue) == [.init(id: UInt32(head), length: 0)])
        #expect(!h.isDelivered(sizedFrame(60)))
        #expect(h.net.statistics.txDropped == 1)
        #expect(h.net.statistics.rxDropped == 1)
        h.guest.acknowledgeInterrupt()
        // Same state again: no notification.
        h.net.setLinkUp(false)
        #expect(h.guest.acknowledgeInterrupt() == [])
        h.net.setLinkUp(true)
        #expect(h.configStatus == VirtioNet.linkUpStatus)
        #expect(h.guest.acknowledgeInterrupt() == .configChange)
        #expect(h.isDelivered(sizedFrame(60)))
        h.net.detachFromBackend()
    }

    @Test func linkChangeWithoutStatusFeatureSendsNoNotification() {
        let h = NetHarness(accept: { $0.subtracting(NetFeature.status) })
        h.net.setLinkUp(false)
        #expect(h.configStatus == 0)
        #expect(h.guest.acknowledgeInterrupt() == [])
        h.net.detachFromBackend()
    }

    @Test func resetRestoresDefaults() {
        let h = NetHarness()
        let new: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
        #expect(h.control([NetControl.macClass, NetControl.macAddressSet] + new) == NetControl.ok)
        h.setPromiscuous(false)
        #expect(h.control(NetHarness.macTable(unicast: [[2, 0, 0, 0, 0, 1]], multicast: [])) == NetControl.ok)
        h.net.setLinkUp(false)
        #expect(h.guest.initialize())
        #expect(h.configMAC == ourMAC.bytes)
        let state = h.net.saveState()
        #expect(state.promiscuous && !state.allMulticast)
        #expect(state.unicastTable.isEmpty)
        // The link is the host's: a guest reset does not bring it up.
        #expect(!h.net.linkUp)
        #expect(h.configStatus == 0)
        h.net.setLinkUp(true)
        #expect(h.isDelivered(sizedFrame(60, to: [0x52, 0x54, 0x00, 0x99, 0x99, 0x99])))
        h.net.detachFromBackend()
    }

    @Test func saveAndRestore() throws {
        let h = NetHarness()
        let new: [UInt8] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]
        #expect(h.control([NetControl.macClass, NetControl.macAddressSet] + new) == NetControl.ok)
        h.setPromiscuous(false)
        #expect(h.control([NetControl.rxClass, NetControl.rxAllMulticast, 1]) == NetControl.ok)
        #expect(h.control(NetHarness.macTable(unicast: [[2, 0, 0, 0, 0, 1]], multicast: [[1, 0, 0x5e, 0, 0, 1]])) == NetControl.ok)
        h.net.setLinkUp(false)
        let saved = h.net.saveState()

        let target = NetHarness()
        try target.net.restore(saved)
        #expect(target.net.saveState() == saved)
        #expect(target.configMAC == new)
        #expect(target.configStatus == 0)
        #expect(!target.net.linkUp)
        h.net.detachFromBackend()
        target.net.detachFromBackend()
    }

    @Test(arguments: [
        "version", "short MAC", "too many entries", "long entry", "unicast overflow with entries",
        "multicast overflow with entries",
    ])
    func corruptStateIsRefused(_ corruption: String) {
        let h = NetHarness()
        var state = h.net.saveState()
        switch corruption {
        case "version": state.version = 99
        case "short MAC": state.mac = [1, 2, 3, 4, 5]
        case "too many entries":
            state.unicastTable = Array(repeating: [2, 0, 0, 0, 0, 1], count: 40)
            state.multicastTable = Array(repeating: [1, 0, 0, 0, 0, 1], count: 25)
        case "long entry": state.multicastTable = [[1, 0, 0x5e, 0, 0, 1, 7]]
        case "unicast overflow with entries": state.unicastOverflow = true; state.unicastTable = [[2, 0, 0, 0, 0, 1]]
        default: state.multicastOverflow = true; state.multicastTable = [[1, 0, 0x5e, 0, 0, 1]]
        }
        let before = h.net.saveState()
        #expect(throws: SystemError.self) { try h.net.restore(state) }
        #expect(h.net.saveState() == before)
        h.net.detachFromBackend()
    }

    // MARK: Offloads (a backend that passes virtio_net_hdr)

    static let allOffloads: NetOffloads = [.checksum, .tso4, .tso6, .ecn, .ufo, .uso]

    @Test func offloadFeaturesFollowTheBackend() {
        let all = NetHarness(offloads: Self.allOffloads, initialize: false)
        #expect(all.guest.deviceFeatures.isSuperset(of: VirtioFeatures(rawValue: 0b111_1111_1000_0010)), "bits 1, 7-14")
        #expect(all.guest.deviceFeatures.isSuperset(of: VirtioFeatures(rawValue: 0b111 << 54)), "bits 54-56: GUEST_USO4/6, HOST_USO")
        let some = NetHarness(offloads: [.checksum, .tso4], initialize: false)
        let offered = some.guest.deviceFeatures
        #expect(offered.isSuperset(of: [NetFeature.guestChecksum, NetFeature.guestTSO4, NetFeature.hostTSO4, NetFeature.checksum]))
        for bit in [8, 9, 10, 12, 13, 14, 54, 55, 56] {
            #expect(!offered.contains(VirtioFeatures(bit: bit)), "feature bit \(bit) offered")
        }
        all.net.detachFromBackend()
        some.net.detachFromBackend()
    }

    @Test func theBackendHearsTheGuestsOffloadsAtDriverOKAndReset() {
        let h = NetHarness(offloads: Self.allOffloads) { $0.subtracting([NetFeature.guestTSO6, NetFeature.guestUFO]) }
        #expect(h.backend.guestOffloads.last == [.checksum, .tso4, .ecn, .uso])
        h.guest.write(.status, 0)
        #expect(h.backend.guestOffloads.last == [])
        // USO only when the driver takes it over both IPv4 and IPv6 (the tap's pair).
        #expect(h.guest.initialize { $0.subtracting([NetFeature.guestUSO6]) })
        #expect(h.backend.guestOffloads.last == [.checksum, .tso4, .tso6, .ecn, .ufo])
        h.guest.write(.status, 0)
        #expect(h.backend.guestOffloads.last == [])
        // Without GUEST_CSUM nothing, whatever GSO features the driver took (§5.1.3.1).
        #expect(h.guest.initialize { $0.subtracting([NetFeature.guestChecksum]) })
        #expect(h.backend.guestOffloads.last == [])
        h.net.detachFromBackend()
    }

    @Test func transmitPassesTheHeaderAndATSOFrameThrough() {
        let h = NetHarness(offloads: Self.allOffloads)
        // 60 KiB of TCP over IPv4 in one GSO frame, checksum left to the host, split over two
        // descriptors as Linux's scatter-gather does.
        let frame = sizedFrame(60 << 10, to: peerMAC)
        let header = netHeader(flags: VirtioNet.needsChecksum, gsoType: VirtioNet.gsoTCPv4, headerLength: 54, gsoSize: 1448,
                               checksumStart: 34, checksumOffset: 16)
        h.guest.submit(queue: VirtioNet.transmitQueue, readable: [header + frame.prefix(100), Array(frame.dropFirst(100))], writable: [])
        #expect(h.backend.sent == [header + frame], "header and frame untouched: no checksum computed here")
        #expect(h.net.statistics.txBytes == UInt64(frame.count))
        // ECN on TSO passes (HOST_ECN negotiated); an unknown GSO type is dropped.
        h.transmit(sizedFrame(2000, to: peerMAC), header: netHeader(gsoType: VirtioNet.gsoTCPv4 | VirtioNet.gsoECN))
        h.transmit(sizedFrame(2000, to: peerMAC), header: netHeader(gsoType: 6))
        #expect(h.backend.sent.count == 2)
        #expect(h.net.statistics.txDropped == 1)
        // UDP segmentation (HOST_USO) passes; ECN belongs to TCP only.
        h.transmit(sizedFrame(3000, to: peerMAC), header: netHeader(flags: VirtioNet.needsChecksum, gsoType: VirtioNet.gsoUDPL4,
                                                                    headerLength: 42, gsoSize: 1000, checksumStart: 34, checksumOffset: 6))
        #expect(h.backend.sent.count == 3)
        h.transmit(sizedFrame(3000, to: peerMAC), header: netHeader(gsoType: VirtioNet.gsoUDPL4 | VirtioNet.gsoECN))
        #expect(h.backend.sent.count == 3)
        #expect(h.net.statistics.txDropped == 2)
        // Past the GSO limit: dropped.
        h.transmit(sizedFrame(NetOffloads.maxFrameSize + 1, to: peerMAC), header: netHeader(gsoType: VirtioNet.gsoTCPv4))
        #expect(h.backend.sent.count == 3)
        #expect(h.net.statistics.txDropped == 3)
        h.net.detachFromBackend()
    }

    @Test func aGSOFrameWithoutItsHostFeatureIsDropped() {
        let h = NetHarness(offloads: Self.allOffloads) { $0.subtracting([NetFeature.hostTSO4]) }
        h.transmit(sizedFrame(3000, to: peerMAC), header: netHeader(gsoType: VirtioNet.gsoTCPv4))
        #expect(h.backend.sent.isEmpty)
        #expect(h.net.statistics.txDropped == 1)
        h.net.detachFromBackend()
        let noUSO = NetHarness(offloads: Self.allOffloads) { $0.subtracting([NetFeature.hostUSO]) }
        noUSO.transmit(sizedFrame(3000, to: peerMAC), header: netHeader(gsoType: VirtioNet.gsoUDPL4))
        #expect(noUSO.backend.sent.isEmpty)
        #expect(noUSO.net.statistics.txDropped == 1)
        noUSO.net.detachFromBackend()
    }

    @Test func aReceivedUSOFrameNeedsBothGuestUSOFeatures() {
        let frame = sizedFrame(3000)
        let header = netHeader(flags: VirtioNet.needsChecksum, gsoType: VirtioNet.gsoUDPL4, headerLength: 42, gsoSize: 1000,
                               checksumStart: 34, checksumOffset: 6)
        for (taken, delivered) in [(true, true), (false, false)] {
            let h = NetHarness(offloads: Self.allOffloads) { taken ? $0 : $0.subtracting([NetFeature.guestUSO6]) }
            let buffers = h.postReceiveBuffers([4096])
            #expect(h.net.receive(header + frame))
            #expect(h.net.statistics.rxDropped == (delivered ? 0 : 1))
            if delivered {
                #expect(h.guest.bytes(at: buffers[0], count: 12 + frame.count) == Array(header.prefix(10)) + le(UInt16(1)) + frame)
            }
            h.net.detachFromBackend()
        }
    }

    @Test func receiveDeliversTheBackendsHeaderAndA60KiBTSOFrameOverMergeableBuffers() {
        let h = NetHarness(offloads: Self.allOffloads)
        let frame = sizedFrame(60 << 10)
        let header = netHeader(flags: VirtioNet.needsChecksum, gsoType: VirtioNet.gsoTCPv4, headerLength: 54, gsoSize: 1448,
                               checksumStart: 34, checksumOffset: 16, numBuffers: 0x7777)
        let count = (header.count + frame.count + 1535) / 1536
        let buffers = h.postReceiveBuffers(Array(repeating: 1536, count: count))
        #expect(h.net.receive(header + frame))
        let used = h.guest.takeUsed(queue: VirtioNet.receiveQueue)
        #expect(used.count == count)
        // The backend's header, num_buffers set by the device (§5.1.6.4).
        #expect(h.guest.bytes(at: buffers[0], count: 12) == Array(header.prefix(10)) + le(UInt16(count)))
        var received: [UInt8] = []
        for (i, element) in used.enumerated() {
            #expect(element.id == UInt32(i))
            received += h.guest.bytes(at: buffers[i], count: Int(element.length))
        }
        #expect(Array(received.dropFirst(12)) == frame)
        #expect(h.net.statistics.rxBytes == UInt64(frame.count))
        h.net.detachFromBackend()
    }

    @Test func receivedHeadersFollowTheGuestFeatures() {
        let h = NetHarness(offloads: Self.allOffloads) { $0.subtracting([NetFeature.guestChecksum, NetFeature.guestTSO4]) }
        // A GSO frame of a kind the driver did not take is dropped.
        #expect(h.net.receive(netHeader(gsoType: VirtioNet.gsoTCPv4) + sizedFrame(3000)))
        #expect(h.net.statistics.rxDropped == 1)
        // Without GUEST_CSUM the flags are 0 (§5.1.6.4.1) and a partial checksum is finished.
        let (frame, _, pseudo, checksumAt) = partialChecksumFrame(udp: true, payload: Array(0..<100))
        h.postReceiveBuffers([2048])
        let header = netHeader(flags: VirtioNet.needsChecksum | 2, checksumStart: 34, checksumOffset: 6)
        #expect(h.net.receive(header + frame))
        let used = h.guest.takeUsed(queue: VirtioNet.receiveQueue)
        guard used.count == 1, let buffer = h.posted[UInt16(used[0].id)] else {
            Issue.record("frame not delivered")
            return
        }
        let delivered = h.guest.bytes(at: buffer, count: 12 + frame.count)
        #expect(delivered[0] == 0)
        #expect(onesComplementSum(pseudo + Array(delivered[(12 + 34)...])) == 0xffff, "checksum at \(checksumAt) completed")
        h.net.detachFromBackend()
    }

    @Test func aStateWithOffloadsDoesNotRestoreInFrontOfABackendWithout() throws {
        let source = NetHarness(offloads: Self.allOffloads)
        let saved = source.guest.mmio.saveState()
        let target = NetHarness(initialize: false)
        do {
            try target.guest.mmio.restore(saved)
            Issue.record("a state that negotiated offloads restored in front of a backend without them")
        } catch {
            #expect("\(error)".contains("were not offered"), "\(error)")
        }
        // The same backend kind takes it, and hears the guest's offloads.
        let twin = NetHarness(offloads: Self.allOffloads, initialize: false)
        try twin.guest.mmio.restore(saved)
        #expect(twin.backend.guestOffloads.last == Self.allOffloads)
        for h in [source, target, twin] { h.net.detachFromBackend() }
    }

    @Test func noBackendDropsTransmittedFrames() {
        let net = VirtioNet(backend: nil, mac: ourMAC)
        let guest = FakeGuest(device: net)
        #expect(guest.initialize())
        guest.submit(queue: VirtioNet.transmitQueue, readable: [netHeader() + sizedFrame(60, to: peerMAC)], writable: [])
        #expect(guest.takeUsed(queue: VirtioNet.transmitQueue).map(\.length) == [0])
        #expect(net.statistics.txDropped == 1)
    }
}
