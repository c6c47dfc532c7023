import DeviceModel
import Synchronization
import SystemSupport
import VirtIO

/// virtio-net (virtio 1.2 §5.1) with one queue pair: queue 0 is receiveq1 (network → guest),
/// queue 1 transmitq1 (guest → network), queue 2 controlq. Linux calls it `eth0`
/// (`virtio_net`). The device is the `NetFrontend` of one `NetBackend` (`-netdev`).
///
/// **Features** (§5.1.3): MAC, STATUS, MRG_RXBUF, CTRL_VQ, CTRL_RX, CTRL_MAC_ADDR and CSUM;
/// the transport adds VERSION_1 and the ring features. With CSUM the guest may hand over frames
/// whose TCP/UDP checksum is only partly computed (VIRTIO_NET_HDR_F_NEEDS_CSUM).
/// - A backend with no offloads (`NetBackend.offloads` empty: user, stream, dgram, socket, a tap
///   with `vnet_hdr=off`) sees plain, finished Ethernet frames: the device strips the header and
///   completes a partial checksum in software. No GSO and no GUEST_* feature is offered.
/// - A backend with offloads (a tap with IFF_VNET_HDR; QEMU's `peer_has_vnet_hdr`) gets the
///   guest's 12-byte header with each frame and gives one with each frame it receives. The
///   device then also offers GUEST_CSUM and, per offload the backend has, HOST_/GUEST_TSO4,
///   TSO6, ECN, UFO, and HOST_USO with GUEST_USO4/6 (QEMU's `virtio_net_get_features`, USO
///   from QEMU 8.2); it checks the header against the
///   features negotiated, passes it on untouched (no checksum here: the host's stack finishes
///   it or trusts DATA_VALID), and tells the backend which offloads the guest takes
///   (`setGuestOffloads`, at DRIVER_OK and at reset; QEMU's `virtio_net_apply_guest_offloads`).
///   A GSO frame is up to `NetOffloads.maxFrameSize` bytes; received, it needs MRG_RXBUF or
///   the "big packets" chains Linux posts without it.
/// The features are fixed when the device is built from its backend, so a migration to a
/// backend without offloads is refused by the transport's restore (features not offered).
/// - *Path to multiqueue*: VIRTIO_NET_F_MQ (§5.1.6.5.5) with receiveqN/transmitqN pairs at
///   2(N-1) and 2(N-1)+1 and controlq last, `max_virtqueue_pairs` = the backend's queue count,
///   one backend queue (one thread) per pair, and the VIRTIO_NET_CTRL_MQ command choosing how
///   many pairs are in use. The per-pair state here (transmit owner, stall flags) would become
///   an array indexed by pair.
///
/// **Transmit**: each transmitq chain is a `virtio_net_hdr` and one frame, in as many
/// descriptors as the guest likes (§5.1.6.2). The header is stripped and a partial checksum
/// completed (or both passed on, see Features), and the frame handed to `backend.send` on the
/// notifying vCPU thread; the chain is completed with 0 bytes written. A frame the guest got
/// wrong (too short, too long, a checksum position outside it, a GSO type that was not
/// negotiated) is dropped and logged
/// (`-d guest_errors`), not fatal; a chain too short for the header breaks the request format
/// and puts the device into NEEDS_RESET, as QEMU does. Two drainers never interleave: the
/// second leaves the work to the first, which looks again before it stops, so frames keep the
/// ring's order (as `VirtioConsole`). When `send` returns false the device stops taking chains
/// until the backend calls `backendReady()`, which drains the ring on the backend's thread.
///
/// **Receive**: `receive` (from the backend's I/O thread, one call at a time) writes the header
/// (zeros, or the backend's, checked against the GUEST_* features) and the frame into posted
/// receiveq buffers: with MRG_RXBUF across as many chains as needed
/// (`num_buffers` says how many), checking first that there is room, so a frame is never
/// half-delivered; without it into one chain. No room: `receive` returns false and the backend
/// keeps the frame until the guest posts buffers, when the device calls `frontendReady()`.
/// Frames the filter (§5.1.6.5.1, QEMU's `receive_filter`) does not accept, and every frame
/// while the link is down, are consumed and counted.
///
/// **Lifetime.** `init` attaches the device to its backend, and the backend keeps its frontend:
/// call `detachFromBackend()` to break the cycle (hot-unplug, a board built again, tests).
package final class VirtioNet: VirtioDevice, NetFrontend, Snapshottable {
    /// Device feature bits (§5.1.3).
    package enum Feature {
        /// VIRTIO_NET_F_CSUM: the driver may send frames with a partial checksum.
        package static let checksum = VirtioFeatures(bit: 0)
        /// VIRTIO_NET_F_MAC: `mac` in the configuration space is the address to use.
        package static let mac = VirtioFeatures(bit: 5)
        /// VIRTIO_NET_F_MRG_RXBUF: a received frame may span several receive chains.
        package static let mergeableRxBuffers = VirtioFeatures(bit: 15)
        /// VIRTIO_NET_F_STATUS: `status` in the configuration space is live (link up/down).
        package static let status = VirtioFeatures(bit: 16)
        /// VIRTIO_NET_F_CTRL_VQ: the control queue exists.
        package static let controlQueue = VirtioFeatures(bit: 17)
        /// VIRTIO_NET_F_CTRL_RX: receive mode commands (promiscuous, all-multicast).
        package static let controlRx = VirtioFeatures(bit: 18)
        /// VIRTIO_NET_F_CTRL_MAC_ADDR: the driver sets the MAC address through the control queue.
        package static let controlMACAddress = VirtioFeatures(bit: 23)
        /// VIRTIO_NET_F_GUEST_CSUM: the driver takes frames with a partial checksum or
        /// DATA_VALID.
        package static let guestChecksum = VirtioFeatures(bit: 1)
        /// VIRTIO_NET_F_GUEST_TSO4, _TSO6, _ECN, _UFO: the driver takes GSO frames of the kind.
        package static let guestTSO4 = VirtioFeatures(bit: 7)
        package static let guestTSO6 = VirtioFeatures(bit: 8)
        package static let guestECN = VirtioFeatures(bit: 9)
        package static let guestUFO = VirtioFeatures(bit: 10)
        /// VIRTIO_NET_F_HOST_TSO4, _TSO6, _ECN, _UFO: the device takes GSO frames of the kind.
        package static let hostTSO4 = VirtioFeatures(bit: 11)
        package static let hostTSO6 = VirtioFeatures(bit: 12)
        package static let hostECN = VirtioFeatures(bit: 13)
        package static let hostUFO = VirtioFeatures(bit: 14)
        /// VIRTIO_NET_F_GUEST_USO4, _USO6: the driver takes UDP segmentation (gso_type
        /// UDP_L4) frames over IPv4, IPv6; VIRTIO_NET_F_HOST_USO: the device takes them, both.
        package static let guestUSO4 = VirtioFeatures(bit: 54)
        package static let guestUSO6 = VirtioFeatures(bit: 55)
        package static let hostUSO = VirtioFeatures(bit: 56)
        /// What this device offers with any backend.
        package static let offered: VirtioFeatures = [
            checksum, mac, mergeableRxBuffers, status, controlQueue, controlRx, controlMACAddress,
        ]
        /// Each offload and the features it brings: guest side, host side.
        static let offloadTable: [(offload: NetOffloads, guest: VirtioFeatures, host: VirtioFeatures)] = [
            (.checksum, guestChecksum, []), (.tso4, guestTSO4, hostTSO4), (.tso6, guestTSO6, hostTSO6),
            (.ecn, guestECN, hostECN), (.ufo, guestUFO, hostUFO), (.uso, [guestUSO4, guestUSO6], hostUSO),
        ]

        /// What the device offers in front of a backend with `offloads`.
        package static func offered(with offloads: NetOffloads) -> VirtioFeatures {
            offloadTable.reduce(offered) { offloads.contains($1.offload) ? $0.union($1.guest).union($1.host) : $0 }
        }

        /// The offloads a driver that negotiated `features` takes in received frames: none
        /// without GUEST_CSUM, which every GUEST_ GSO feature requires (§5.1.3.1); USO only with
        /// both GUEST_USO4 and GUEST_USO6, since the tap takes it only as a pair.
        package static func guestOffloads(_ features: VirtioFeatures) -> NetOffloads {
            guard features.contains(guestChecksum) else { return [] }
            return offloadTable.reduce([]) { features.isSuperset(of: $1.guest) ? $0.union($1.offload) : $0 }
        }
    }

    package static let receiveQueue = 0
    package static let transmitQueue = 1
    package static let controlQueue = 2
    /// Every queue's QueueNumMax (QEMU's default rx/tx_queue_size).
    package static let queueSize: UInt16 = 256

    /// `struct virtio_net_config` (§5.1.4) as presented: mac[6], le16 status,
    /// le16 max_virtqueue_pairs, le16 mtu. QEMU sizes it by the offered features (8 bytes for
    /// MAC and STATUS); the two later fields are shown too, with the values a driver would
    /// assume (one pair, no MTU advice), since a driver that reads them anyway gets sense.
    package static let configSize = 12
    package static let statusOffset = 6
    package static let maxQueuePairsOffset = 8
    /// `status` bit VIRTIO_NET_S_LINK_UP.
    package static let linkUpStatus: UInt16 = 1

    /// `struct virtio_net_hdr` with VERSION_1 (§5.1.6): u8 flags, u8 gso_type, le16 hdr_len,
    /// le16 gso_size, le16 csum_start, le16 csum_offset, le16 num_buffers.
    package static let headerSize = 12
    package static let numBuffersOffset = 10
    /// `flags` bit VIRTIO_NET_HDR_F_NEEDS_CSUM.
    package static let needsChecksum: UInt8 = 1
    /// `gso_type` VIRTIO_NET_HDR_GSO_NONE, the only one without GSO features.
    package static let gsoNone: UInt8 = 0
    /// `gso_type` VIRTIO_NET_HDR_GSO_TCPV4, _UDP, _TCPV6, and the VIRTIO_NET_HDR_GSO_ECN bit.
    package static let gsoTCPv4: UInt8 = 1
    package static let gsoUDP: UInt8 = 3
    package static let gsoTCPv6: UInt8 = 4
    /// `gso_type` VIRTIO_NET_HDR_GSO_UDP_L4: UDP segmentation, gso_size payload bytes each.
    package static let gsoUDPL4: UInt8 = 5
    package static let gsoECN: UInt8 = 0x80

    /// An Ethernet header (destination, source, EtherType): the shortest frame accepted.
    package static let minFrameSize = 14
    /// The longest frame accepted: a 64 KiB IP packet and its Ethernet header (QEMU's
    /// NET_BUFSIZE guards the same thing).
    package static let maxFrameSize = 65535 + 14

    /// Control queue classes and commands (§5.1.6.5).
    package enum Control {
        /// VIRTIO_NET_CTRL_RX and its commands.
        package static let rxClass: UInt8 = 0
        package static let rxPromiscuous: UInt8 = 0
        package static let rxAllMulticast: UInt8 = 1
        /// VIRTIO_NET_CTRL_MAC and its commands.
        package static let macClass: UInt8 = 1
        package static let macTableSet: UInt8 = 0
        package static let macAddressSet: UInt8 = 1
        /// The ack byte: VIRTIO_NET_OK, VIRTIO_NET_ERR.
        package static let ok: UInt8 = 0
        package static let error: UInt8 = 1
        /// MAC filter entries kept, unicast and multicast together (QEMU's MAC_TABLE_ENTRIES);
        /// a longer list turns on that kind's overflow (accept all of that kind).
        package static let macTableEntries = 64
    }

    /// Counters for the monitor (`info network`, `query-rx-filter` style reports).
    package struct Statistics: Sendable, Equatable {
        /// Frames handed to the backend, and their bytes (without the virtio header).
        package var txFrames: UInt64 = 0
        package var txBytes: UInt64 = 0
        /// Guest frames not sent: malformed, link down, or no backend.
        package var txDropped: UInt64 = 0
        /// Frames written into the guest's receive buffers, and their bytes.
        package var rxFrames: UInt64 = 0
        package var rxBytes: UInt64 = 0
        /// Frames from the backend consumed without delivery: link down, wrong size, or a
        /// receive buffer the guest sized too small.
        package var rxDropped: UInt64 = 0
        /// Frames the receive filter turned away (not for this NIC).
        package var rxFiltered: UInt64 = 0
        package init() {}
    }

    /// The receive filter (§5.1.6.5.1, §5.1.6.5.2) and the MAC in use.
    struct Filter: Equatable {
        var mac: MACAddress
        /// QEMU starts promiscuous ("compatibility mode") until the driver says otherwise.
        var promiscuous = true
        var allMulticast = false
        var unicast: [MACAddress] = []
        var multicast: [MACAddress] = []
        /// The driver gave more addresses than the table holds: accept all of that kind.
        var unicastOverflow = false
        var multicastOverflow = false

        init(mac: MACAddress) { self.mac = mac }

        /// QEMU's `receive_filter`, without VLAN filtering (CTRL_VLAN is not offered, so every
        /// VLAN passes) and without CTRL_RX_EXTRA's modes. `frame` has at least 14 bytes.
        func accepts(_ frame: ArraySlice<UInt8>) -> Bool {
            if promiscuous { return true }
            let destination = frame.prefix(6)
            func listed(_ table: [MACAddress]) -> Bool { table.contains { destination.elementsEqual($0.bytes) } }
            if destination[destination.startIndex] & 1 != 0 {
                if destination.allSatisfy({ $0 == 0xff }) { return true }  // broadcast
                return allMulticast || multicastOverflow || listed(multicast)
            }
            return unicastOverflow || destination.elementsEqual(mac.bytes) || listed(unicast)
        }
    }

    /// The device's snapshot (DESIGN.md §5): the driver's receive filter and MAC, and the link
    /// state (as QEMU's `status` field). Queues travel with the transport's state; nothing else
    /// is in hand between requests.
    package struct State: Codable, Sendable, Equatable {
        package static let currentVersion: UInt32 = 1
        package var version: UInt32
        /// The MAC in use (the configured one, or what VIRTIO_NET_CTRL_MAC_ADDR_SET gave).
        package var mac: [UInt8]
        package var linkUp: Bool
        package var promiscuous: Bool
        package var allMulticast: Bool
        /// VIRTIO_NET_CTRL_MAC_TABLE_SET's lists, 6 bytes each, at most 64 together.
        package var unicastTable: [[UInt8]]
        package var multicastTable: [[UInt8]]
        package var unicastOverflow: Bool
        package var multicastOverflow: Bool
    }

    private struct Shared {
        /// Set at DRIVER_OK, cleared at reset: no frames are received without it.
        var transport: (any VirtioTransport)?
        var features: VirtioFeatures = []
        var filter: Filter
        /// Host-side (`set_link`): kept across guest resets, as QEMU's `link_down`.
        var linkUp = true
        var statistics = Statistics()
        /// A thread is draining transmitq; `transmitAgain` asks it for another pass.
        var transmitting = false
        var transmitAgain = false
        /// `send` returned false: take no more frames until `backendReady`. The backend's
        /// state, not the guest's: kept across guest resets.
        var backendBusy = false
        /// Counts `backendReady` calls, so one that races a refusal is not lost.
        var readyCount: UInt64 = 0
        /// `receive` said no room; the backend must hear when the guest posts buffers.
        var receiveStalled = false
    }

    private let backend: (any NetBackend)?
    /// The backend has offloads: frames cross with their virtio_net_hdr (see Features).
    private let passesHeader: Bool
    /// Fixed at creation by the backend's offloads.
    private let offered: VirtioFeatures
    /// Whether the machine runs (`setRunning`), held for as long as a backend thread writes
    /// into the guest (a frame received, transmitq drained after `backendReady`), so stopping
    /// waits for that work and none starts until the machine runs again.
    private let running: Mutex<Bool>
    /// A frame was refused while the machine was stopped: the backend hears `frontendReady`
    /// when it runs again. (Transmit needs no mark: running again always drains transmitq.)
    private let receiveHeldWhileStopped = Mutex(false)
    /// The `-device ...,mac=` address: what a reset goes back to.
    package let configuredMAC: MACAddress
    private let shared: Mutex<Shared>

    /// - Parameters:
    ///   - backend: where frames go and come from; nil: a NIC with no network (frames the
    ///     guest sends are dropped and counted).
    ///   - mac: the NIC's address (`MACAddress.qemuDefault(index:)` if the user gave none).
    package init(backend: (any NetBackend)?, mac: MACAddress, running: Bool = true) {
        self.backend = backend
        let offloads = backend?.offloads ?? []
        passesHeader = !offloads.isEmpty
        offered = Feature.offered(with: offloads)
        self.running = Mutex(running)
        configuredMAC = mac
        shared = Mutex(Shared(filter: Filter(mac: mac)))
        backend?.attach(self)
    }

    /// Breaks the device ↔ backend reference cycle; frames from the network stop arriving.
    package func detachFromBackend() {
        backend?.attach(nil)
    }

    /// The MAC the guest uses now (the configured one until VIRTIO_NET_CTRL_MAC_ADDR_SET).
    package var mac: MACAddress { shared.withLock { $0.filter.mac } }
    /// The link state `set_link` controls.
    package var linkUp: Bool { shared.withLock { $0.linkUp } }
    package var statistics: Statistics { shared.withLock { $0.statistics } }

    /// Monitor `set_link`: shows the new state in the configuration space's `status` and, if the
    /// driver negotiated VIRTIO_NET_F_STATUS, tells it with a configuration change notification
    /// (§5.1.4). While the link is down, frames in both directions are dropped (and counted).
    package func setLinkUp(_ up: Bool) {
        let notify = shared.withLock { s -> (any VirtioTransport)? in
            guard s.linkUp != up else { return nil }
            s.linkUp = up
            return s.features.contains(Feature.status) ? s.transport : nil
        }
        notify?.configChanged()
    }

    // MARK: VirtioDevice

    package var deviceID: VirtioDeviceID { .network }
    package var deviceFeatures: VirtioFeatures { offered }
    package var queueMaxSizes: [UInt16] { [VirtioNet.queueSize, VirtioNet.queueSize, VirtioNet.queueSize] }

    package func configSpace() -> [UInt8] {
        let (mac, up) = shared.withLock { ($0.filter.mac, $0.linkUp) }
        var config = VirtioConfigSpace(size: VirtioNet.configSize)
        for (i, byte) in mac.bytes.enumerated() { config.put(byte, at: i) }
        config.put(up ? VirtioNet.linkUpStatus : 0, at: VirtioNet.statusOffset)
        config.put(UInt16(1), at: VirtioNet.maxQueuePairsOffset)
        // mtu (offset 10) stays 0: VIRTIO_NET_F_MTU is not offered.
        return config.bytes
    }

    /// §5.1.4.2: a driver does not write the configuration space. Only legacy drivers could set
    /// `mac` there, and this transport is VERSION_1 only; a 1.x driver uses
    /// VIRTIO_NET_CTRL_MAC_ADDR_SET.
    package func writeConfig(offset: Int, value: UInt64, size: Int) {
        DebugLog.log(.guestErrors, "virtio-net: \(size)-byte write to configuration offset \(offset) ignored (§5.1.4.2)")
    }

    package func activate(features: VirtioFeatures, transport: any VirtioTransport) {
        let wake = shared.withLock { s in
            s.transport = transport
            s.features = features
            defer { s.receiveStalled = false }
            return s.receiveStalled
        }
        // What the tap may hand over from now on (QEMU applies it at FEATURES_OK; nothing is
        // received before DRIVER_OK, so now is as early as it matters).
        backend?.setGuestOffloads(Feature.guestOffloads(features))
        // Frames held back while the device was not live may be tried again.
        if wake { backend?.frontendReady() }
        // A ring restored from a snapshot or a migration may hold frames the source's busy
        // backend never took, and a driver using VIRTIO_F_EVENT_IDX will not notify for them
        // again: send them (when the machine runs; else when it does, `setRunning`).
        running.withLock { running in
            if running { transmit(transport) }
        }
    }

    /// The driver reset the device (§2.4): receive stops until DRIVER_OK, and the filter and
    /// MAC return to their power-on values (QEMU's `virtio_net_reset`). The link state and the
    /// backend's busy state are the host's and stay.
    package func reset() {
        shared.withLock { s in
            s.transport = nil
            s.features = []
            s.filter = Filter(mac: configuredMAC)
        }
        backend?.setGuestOffloads([])
        // A backend thread may be writing a frame into buffers the driver now takes back:
        // wait for it (taking the lock it delivers under), so nothing lands after the reset.
        running.withLock { _ in }
    }

    /// Nothing to finish: a transmitted frame goes to the backend (which takes every frame it is
    /// given) before its chain is completed, received frames are written before `receive`
    /// returns, and control commands complete within `process`. Chains the device has not
    /// taken because the backend is busy are still in the ring, which the transport saves.
    package func quiesce() {}

    package func process(queue: Int, transport: any VirtioTransport) {
        switch queue {
        case VirtioNet.receiveQueue:
            // The guest posted receive buffers: a frame held back can now be delivered.
            let wake = shared.withLock { s in
                defer { s.receiveStalled = false }
                return s.receiveStalled
            }
            if wake { backend?.frontendReady() }
        case VirtioNet.transmitQueue:
            transmit(transport)
        case VirtioNet.controlQueue:
            control(transport)
        default:
            break
        }
    }

    /// The machine stops (`stop`, a snapshot, a migration's switch-over) or runs again. While
    /// stopped nothing reaches guest memory from the host side: frames wait in the backend
    /// (QEMU's qemu_can_receive_packet is false while the VM is not running), so the RAM and the
    /// queues saved are the whole state. Returns once work in flight on a backend thread is done.
    package func setRunning(_ running: Bool) {
        self.running.withLock { $0 = running }
        guard running else { return }
        let held = receiveHeldWhileStopped.withLock { held in
            defer { held = false }
            return held
        }
        if held { backend?.frontendReady() }
        // Also without a `backendReady` while stopped: after a restore the ring may hold frames
        // nobody will notify about again (see `activate`).
        if let transport = shared.withLock({ $0.transport }) { transmit(transport) }
    }

    // MARK: Transmit

    /// Drains transmitq into the backend; see the type's comment for the ordering rule.
    private func transmit(_ transport: any VirtioTransport) {
        let owner = shared.withLock { s in
            if s.transmitting {
                s.transmitAgain = true
                return false
            }
            s.transmitting = true
            return true
        }
        guard owner else { return }
        while true {
            let (mark, busy, linkUp, features) = shared.withLock { ($0.readyCount, $0.backendBusy, $0.linkUp, $0.features) }
            var pass = Statistics()
            let refused = busy ? false : drain(transport, linkUp: linkUp, features: features, counting: &pass)
            let again = shared.withLock { s in
                s.statistics.txFrames += pass.txFrames
                s.statistics.txBytes += pass.txBytes
                s.statistics.txDropped += pass.txDropped
                // A `backendReady` since this pass began may have come after the refusal:
                // then the backend has room, so look again instead of waiting for another.
                if refused && s.readyCount == mark { s.backendBusy = true }
                let more = !s.backendBusy && (s.transmitAgain || refused)
                s.transmitAgain = false
                if !more { s.transmitting = false }
                return more
            }
            if !again { return }
        }
    }

    /// Sends the chains of transmitq until it is empty or the backend refuses more; true when
    /// the backend refused.
    private func drain(_ transport: any VirtioTransport, linkUp: Bool, features: VirtioFeatures,
                       counting pass: inout Statistics) -> Bool {
        // Only after returning buffers: a pass that found none (after a restore, on resume)
        // must not interrupt the guest.
        var pushed = false
        defer { if pushed { transport.notifyIfNeeded(queue: VirtioNet.transmitQueue) } }
        while let chain = transport.popAvailable(queue: VirtioNet.transmitQueue) {
            let frame: [UInt8]?
            do {
                frame = try transmittedFrame(chain, features: features)
            } catch {
                transport.deviceError(error)
                return false
            }
            var accepted = true
            if let frame, linkUp, let backend {
                accepted = backend.send(frame)
                pass.txFrames += 1
                pass.txBytes += UInt64(frame.count - (passesHeader ? VirtioNet.headerSize : 0))
            } else {
                pass.txDropped += 1
            }
            transport.pushUsed(chain, written: 0)
            pushed = true
            if !accepted { return true }
        }
        return false
    }

    /// What a transmitq chain (§5.1.6.2) gives the backend: the frame, checksum completed, or
    /// with a backend that passes the header, header and frame as the guest wrote them; nil
    /// (logged) when the guest got the header or the frame wrong. Throws when the chain cannot
    /// even hold the header: not a transmit request at all.
    private func transmittedFrame(_ chain: DescriptorChain, features: VirtioFeatures) throws(VirtioError) -> [UInt8]? {
        guard chain.readableLength >= VirtioNet.headerSize else {
            throw .malformedRequest("virtio-net transmit chain has \(chain.readableLength) device-readable bytes, "
                + "fewer than the \(VirtioNet.headerSize)-byte virtio_net_hdr")
        }
        let length = chain.readableLength - VirtioNet.headerSize
        let header = try chain.readBytes(at: 0, count: VirtioNet.headerSize)
        let flags = header[0]
        let gsoType = header[1]
        let checksumStart = Int(littleEndian(UInt16.self, header, at: 6))
        let checksumOffset = Int(littleEndian(UInt16.self, header, at: 8))
        // §5.1.6.2.1: a GSO type only with its HOST_ feature (ECN with HOST_ECN), so never
        // without a backend that passes the header.
        guard let gsoFeatures = VirtioNet.gsoFeatures(gsoType, tso4: Feature.hostTSO4, tso6: Feature.hostTSO6,
                                                      ufo: Feature.hostUFO, uso: Feature.hostUSO, ecn: Feature.hostECN),
              features.isSuperset(of: gsoFeatures)
        else {
            return dropped("gso_type \(gsoType) without its GSO feature negotiated")
        }
        let limit = gsoType == VirtioNet.gsoNone ? VirtioNet.maxFrameSize : NetOffloads.maxFrameSize
        guard (VirtioNet.minFrameSize...limit).contains(length) else {
            return dropped("frame of \(length) bytes is outside \(VirtioNet.minFrameSize)...\(limit)")
        }
        // §5.1.6.2: the checksum covers csum_start to the end and goes at
        // csum_start + csum_offset; both must lie inside the frame.
        let needsChecksum = flags & VirtioNet.needsChecksum != 0
        guard !needsChecksum || checksumStart + checksumOffset + 2 <= length else {
            return dropped("csum_start \(checksumStart) + csum_offset \(checksumOffset) is outside the \(length)-byte frame")
        }
        if passesHeader { return try chain.readBytes(at: 0, count: chain.readableLength) }
        var frame = try chain.readBytes(at: VirtioNet.headerSize, count: length)
        if needsChecksum { completeChecksum(&frame, frameStart: 0, start: checksumStart, offset: checksumOffset) }
        return frame
    }

    /// The features a `gso_type` needs (§5.1.6.2.1, §5.1.6.4.1), given the HOST_ or GUEST_
    /// ones; nil for a type not defined or ECN on GSO_NONE or UDP_L4 (ECN is TCP's).
    private static func gsoFeatures(_ gsoType: UInt8, tso4: VirtioFeatures, tso6: VirtioFeatures, ufo: VirtioFeatures,
                                    uso: VirtioFeatures, ecn: VirtioFeatures) -> VirtioFeatures? {
        let ecnFeature: VirtioFeatures = gsoType & gsoECN != 0 ? ecn : []
        switch gsoType & ~gsoECN {
        case gsoNone: return ecnFeature.isEmpty ? [] : nil
        case gsoTCPv4: return tso4.union(ecnFeature)
        case gsoTCPv6: return tso6.union(ecnFeature)
        case gsoUDP: return ufo.union(ecnFeature)
        case gsoUDPL4: return ecnFeature.isEmpty ? uso : nil
        default: return nil
        }
    }


    private func dropped(_ why: String) -> [UInt8]? {
        DebugLog.log(.guestErrors, "virtio-net: transmitted frame dropped: \(why)")
        return nil
    }

    // MARK: NetFrontend

    /// Delivers `frame` (after its virtio_net_hdr when the backend passes one) into the guest's
    /// receive buffers (§5.1.6.3, §5.1.6.4). False only when there is no room now (or the
    /// driver is not ready); see the type's comment. Called from
    /// the backend's I/O thread, one call at a time (the used ring gets each frame's chains
    /// together).
    package func receive(_ frame: [UInt8]) -> Bool {
        running.withLock { running in
            guard running else {
                receiveHeldWhileStopped.withLock { $0 = true }
                return false
            }
            return receiveWhileRunning(frame)
        }
    }

    private func receiveWhileRunning(_ frame: [UInt8]) -> Bool {
        enum Verdict { case deliver(any VirtioTransport, VirtioFeatures), notReady, consumed }
        let start = passesHeader ? VirtioNet.headerSize : 0
        let length = frame.count - start
        let limit = passesHeader ? NetOffloads.maxFrameSize : VirtioNet.maxFrameSize
        let verdict = shared.withLock { s -> Verdict in
            // A link that is down loses frames whatever the guest is doing (QEMU drops them
            // before asking the NIC).
            guard s.linkUp, (VirtioNet.minFrameSize...limit).contains(length) else {
                s.statistics.rxDropped += 1
                return .consumed
            }
            guard let transport = s.transport else {
                s.receiveStalled = true
                return .notReady
            }
            guard s.filter.accepts(frame[start...]) else {
                s.statistics.rxFiltered += 1
                return .consumed
            }
            return .deliver(transport, s.features)
        }
        let transport: any VirtioTransport
        let features: VirtioFeatures
        switch verdict {
        case .notReady: return false
        case .consumed: return true
        case let .deliver(t, f): (transport, features) = (t, f)
        }
        let packet: [UInt8]
        if passesHeader {
            guard let checked = receivedHeader(frame, features: features) else {
                shared.withLock { $0.statistics.rxDropped += 1 }
                return true
            }
            packet = checked
        } else {
            // flags 0 (no DATA_VALID: GUEST_CSUM is not offered), GSO_NONE, num_buffers later.
            packet = [UInt8](repeating: 0, count: VirtioNet.headerSize) + frame
        }
        let mergeable = features.contains(Feature.mergeableRxBuffers)
        let needed = packet.count
        // With mergeable buffers every posted byte counts; without, one chain takes the frame.
        let wanted = mergeable ? needed : 1
        if transport.availableWritableBytes(queue: VirtioNet.receiveQueue, limit: wanted) < wanted {
            // Marked stalled, then looked at again: buffers posted in between either show up
            // now or find the flag set and wake the backend.
            shared.withLock { $0.receiveStalled = true }
            guard transport.availableWritableBytes(queue: VirtioNet.receiveQueue, limit: wanted) >= wanted else {
                return false
            }
            shared.withLock { $0.receiveStalled = false }
        }
        let delivered = deliver(packet, transport: transport, mergeable: mergeable)
        shared.withLock { s in
            if delivered {
                s.statistics.rxFrames += 1
                s.statistics.rxBytes += UInt64(length)
            } else {
                s.statistics.rxDropped += 1
            }
        }
        return true
    }

    /// The backend's header and frame as the guest may see them (§5.1.6.4.1): a GSO frame only
    /// of a kind the driver took (else nil: dropped, logged); without GUEST_CSUM flags are 0, a
    /// partial checksum completed here first. num_buffers is set when the frame is written.
    private func receivedHeader(_ packet: [UInt8], features: VirtioFeatures) -> [UInt8]? {
        func drop(_ why: String) -> [UInt8]? {
            DebugLog.log(.guestErrors, "virtio-net: received frame dropped: \(why)")
            return nil
        }
        let gsoType = packet[1]
        guard let gsoFeatures = VirtioNet.gsoFeatures(gsoType, tso4: Feature.guestTSO4, tso6: Feature.guestTSO6, ufo: Feature.guestUFO,
                                                      uso: [Feature.guestUSO4, Feature.guestUSO6], ecn: Feature.guestECN),
              features.isSuperset(of: gsoFeatures)
        else {
            return drop("gso_type \(gsoType) from the backend, which the driver did not negotiate")
        }
        let length = packet.count - VirtioNet.headerSize
        if gsoType == VirtioNet.gsoNone && length > VirtioNet.maxFrameSize {
            return drop("\(length)-byte frame without GSO")
        }
        guard !features.contains(Feature.guestChecksum) else { return packet }
        var plain = packet
        if plain[0] & VirtioNet.needsChecksum != 0 {
            let start = Int(littleEndian(UInt16.self, plain, at: 6))
            let offset = Int(littleEndian(UInt16.self, plain, at: 8))
            guard start + offset + 2 <= length else {
                return drop("csum_start \(start) + csum_offset \(offset) is outside the \(length)-byte frame")
            }
            completeChecksum(&plain, frameStart: VirtioNet.headerSize, start: start, offset: offset)
        }
        plain[0] = 0
        return plain
    }

    /// Writes header and frame into receive chains and returns them to the driver; false when
    /// the frame was dropped instead (logged). `packet[10..<12]` (num_buffers) is set here.
    private func deliver(_ packet: [UInt8], transport: any VirtioTransport, mergeable: Bool) -> Bool {
        var chains: [(chain: DescriptorChain, written: Int)] = []
        var offset = 0
        // All of a frame's buffers go back together (§5.1.6.4.2: the driver must not see a
        // first buffer whose num_buffers names buffers not yet used).
        defer {
            transport.pushUsed(chains)
            transport.notifyIfNeeded(queue: VirtioNet.receiveQueue)
        }
        do throws(VirtioError) {
            while offset < packet.count {
                guard let chain = transport.popAvailable(queue: VirtioNet.receiveQueue) else {
                    // A reset (then nothing is pushed anyway), or a guest that took back
                    // buffers after we counted them: a broken ring, as QEMU says too.
                    if !chains.isEmpty {
                        transport.deviceError(.malformedRequest(
                            "virtio-net receive buffers vanished with \(packet.count - offset) bytes of a frame left"))
                    }
                    chains = []
                    return false
                }
                if chains.isEmpty && chain.writableLength < (mergeable ? VirtioNet.headerSize : packet.count) {
                    chains.append((chain, 0))
                    if mergeable {
                        // §5.1.6.3.1: with MRG_RXBUF every buffer holds at least the header.
                        transport.deviceError(.malformedRequest(
                            "virtio-net receive buffer of \(chain.writableLength) bytes cannot hold the \(VirtioNet.headerSize)-byte virtio_net_hdr"))
                    } else {
                        DebugLog.log(.guestErrors, "virtio-net: receive buffer of \(chain.writableLength) bytes cannot hold a "
                                     + "\(packet.count)-byte frame and header without VIRTIO_NET_F_MRG_RXBUF; frame dropped")
                    }
                    return false
                }
                let count = min(chain.writableLength, packet.count - offset)
                try chain.writeBytes(Array(packet[offset..<offset + count]), at: 0)
                chains.append((chain, count))
                offset += count
            }
            // §5.1.6.4: num_buffers is the number of chains used (1 without MRG_RXBUF).
            try chains[0].chain.writeBytes(le16(UInt16(chains.count)), at: VirtioNet.numBuffersOffset)
        } catch {
            transport.deviceError(error)
            chains = []
            return false
        }
        return true
    }

    /// The backend has room again: drain transmitq on its thread.
    package func backendReady() {
        let transport = shared.withLock { s -> (any VirtioTransport)? in
            s.readyCount &+= 1
            s.backendBusy = false
            return s.transport
        }
        guard let transport else { return }
        running.withLock { running in
            if running { transmit(transport) }
        }
    }

    // MARK: Control queue

    private func control(_ transport: any VirtioTransport) {
        defer { transport.notifyIfNeeded(queue: VirtioNet.controlQueue) }
        while let chain = transport.popAvailable(queue: VirtioNet.controlQueue) {
            // §5.1.6.5: u8 class, u8 command, command data, then a device-writable u8 ack.
            guard chain.readableLength >= 2, chain.writableLength >= 1 else {
                transport.deviceError(.malformedRequest(
                    "virtio-net control request has \(chain.readableLength) device-readable and \(chain.writableLength) "
                        + "device-writable bytes; it needs a 2-byte class and command, and an ack byte"))
                return
            }
            do {
                let ack = try command(chain)
                try chain.writeBytes([ack], at: chain.writableLength - 1)
            } catch {
                transport.deviceError(error)
                return
            }
            transport.pushUsed(chain, written: chain.writableLength)
        }
    }

    /// Runs one control command; VIRTIO_NET_ERR for one that is unknown or malformed (QEMU's
    /// answer: the driver sees the failure, the device goes on).
    private func command(_ chain: DescriptorChain) throws(VirtioError) -> UInt8 {
        let head = try chain.readBytes(at: 0, count: 2)
        let dataLength = chain.readableLength - 2
        func fail(_ why: String) -> UInt8 {
            DebugLog.log(.guestErrors, "virtio-net: control command class \(head[0]) command \(head[1]): \(why)")
            return Control.error
        }
        switch (head[0], head[1]) {
        case (Control.rxClass, Control.rxPromiscuous), (Control.rxClass, Control.rxAllMulticast):
            // §5.1.6.5.1: one byte, on or off.
            guard dataLength >= 1 else { return fail("no on/off byte") }
            let on = try chain.readBytes(at: 2, count: 1)[0] != 0
            shared.withLock { s in
                if head[1] == Control.rxPromiscuous { s.filter.promiscuous = on } else { s.filter.allMulticast = on }
            }
            return Control.ok
        case (Control.macClass, Control.macAddressSet):
            // §5.1.6.5.2: exactly six bytes.
            guard dataLength == 6 else { return fail("MAC_ADDR_SET with \(dataLength) bytes, not 6") }
            let mac = MACAddress(try chain.readBytes(at: 2, count: 6))
            shared.withLock { $0.filter.mac = mac }
            return Control.ok
        case (Control.macClass, Control.macTableSet):
            guard let table = try macTables(chain) else { return fail("malformed MAC_TABLE_SET") }
            shared.withLock { s in
                s.filter.unicast = table.unicast
                s.filter.multicast = table.multicast
                s.filter.unicastOverflow = table.unicastOverflow
                s.filter.multicastOverflow = table.multicastOverflow
            }
            return Control.ok
        default:
            return fail("unknown or not offered")
        }
    }

    /// VIRTIO_NET_CTRL_MAC_TABLE_SET's data (§5.1.6.5.2): two `struct virtio_net_ctrl_mac`
    /// (le32 entries, then 6-byte addresses), unicast then multicast, read as QEMU's
    /// `virtio_net_handle_mac` does: the unicast list must fit the data, the multicast list
    /// must end it exactly, and a list longer than the room left in the 64-entry table is not
    /// kept but turns on that kind's overflow. nil: malformed.
    private func macTables(_ chain: DescriptorChain) throws(VirtioError)
        -> (unicast: [MACAddress], multicast: [MACAddress], unicastOverflow: Bool, multicastOverflow: Bool)?
    {
        var offset = 2
        func list(room: Int, exact: Bool) throws(VirtioError) -> (entries: [MACAddress], overflow: Bool)? {
            guard chain.readableLength - offset >= 4 else { return nil }
            let count = Int(littleEndian(UInt32.self, try chain.readBytes(at: offset, count: 4), at: 0))
            offset += 4
            let left = chain.readableLength - offset
            guard exact ? count * 6 == left : count * 6 <= left else { return nil }
            defer { offset += count * 6 }
            guard count <= room else { return ([], true) }
            let bytes = try chain.readBytes(at: offset, count: count * 6)
            return (stride(from: 0, to: bytes.count, by: 6).map { MACAddress(Array(bytes[$0..<$0 + 6])) }, false)
        }
        guard let unicast = try list(room: Control.macTableEntries, exact: false),
              let multicast = try list(room: Control.macTableEntries - unicast.entries.count, exact: true)
        else { return nil }
        return (unicast.entries, multicast.entries, unicast.overflow, multicast.overflow)
    }

    // MARK: Snapshot

    package func saveState() -> State {
        shared.withLock { s in
            State(version: State.currentVersion, mac: s.filter.mac.bytes, linkUp: s.linkUp,
                  promiscuous: s.filter.promiscuous, allMulticast: s.filter.allMulticast,
                  unicastTable: s.filter.unicast.map(\.bytes), multicastTable: s.filter.multicast.map(\.bytes),
                  unicastOverflow: s.filter.unicastOverflow, multicastOverflow: s.filter.multicastOverflow)
        }
    }

    /// Loads an untrusted saved state: every field is checked before anything changes. Restore
    /// the transport (`VirtioMMIO.restore`, which resets the device) first, then the device.
    package func restore(_ state: State) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("virtio-net snapshot: \(what)") }
        guard state.version == State.currentVersion else {
            throw bad("state version \(state.version) is not supported (this build reads version \(State.currentVersion))")
        }
        guard state.mac.count == 6 else { throw bad("MAC address of \(state.mac.count) bytes, not 6") }
        guard state.unicastTable.count + state.multicastTable.count <= Control.macTableEntries else {
            throw bad("\(state.unicastTable.count) unicast and \(state.multicastTable.count) multicast filter entries, "
                      + "more than the \(Control.macTableEntries) the table holds")
        }
        for (name, table) in [("unicast", state.unicastTable), ("multicast", state.multicastTable)] {
            if let entry = table.first(where: { $0.count != 6 }) {
                throw bad("\(name) filter entry of \(entry.count) bytes, not 6")
            }
        }
        // An overflowing list is not kept (QEMU's `virtio_net_handle_mac`).
        guard !state.unicastOverflow || state.unicastTable.isEmpty else {
            throw bad("unicast filter overflow with \(state.unicastTable.count) entries kept")
        }
        guard !state.multicastOverflow || state.multicastTable.isEmpty else {
            throw bad("multicast filter overflow with \(state.multicastTable.count) entries kept")
        }
        var filter = Filter(mac: MACAddress(state.mac))
        filter.promiscuous = state.promiscuous
        filter.allMulticast = state.allMulticast
        filter.unicast = state.unicastTable.map { MACAddress($0) }
        filter.multicast = state.multicastTable.map { MACAddress($0) }
        filter.unicastOverflow = state.unicastOverflow
        filter.multicastOverflow = state.multicastOverflow
        shared.withLock { s in
            s.filter = filter
            s.linkUp = state.linkUp
        }
    }
}

/// The internet checksum (RFC 1071) of `bytes[start...]`: the one's complement of the one's
/// complement sum of big-endian 16-bit words, an odd last byte padded with zero. A result of 0
/// is sent as 0xffff (equal in one's complement; UDP reserves 0 for "no checksum"), as Linux's
/// `skb_checksum_help` does.
private func internetChecksum(_ bytes: [UInt8], from start: Int) -> UInt16 {
    // RFC 1071 §2: the one's complement sum does not depend on byte order (B) and may be
    // taken over wider words and folded (C), so sum little-endian 32-bit words in 64 bits and
    // swap the folded 16-bit result once. Every segment the guest transmits goes through here.
    var sum: UInt64 = 0
    bytes.withUnsafeBytes { raw in
        var i = start
        // SAFETY: each load reads bytes i..<i+4 (or +2, +1) with the loop conditions keeping
        // them inside `raw`, which lives for the closure.
        while i + 4 <= raw.count {
            sum &+= UInt64(raw.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i += 4
        }
        if i + 2 <= raw.count {
            sum &+= UInt64(raw.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            i += 2
        }
        // A last odd byte is the high byte of a big-endian word padded with zero.
        if i < raw.count { sum &+= UInt64(raw[i]) }
    }
    while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
    let checksum = ~UInt16(sum).byteSwapped
    return checksum == 0 ? 0xffff : checksum
}

/// Completes a partial checksum (§5.1.6.2) of the frame at `bytes[frameStart...]`: the sum from
/// `start` to the end goes at `start + offset`, which the caller checked lies inside it.
private func completeChecksum(_ bytes: inout [UInt8], frameStart: Int, start: Int, offset: Int) {
    let sum = internetChecksum(bytes, from: frameStart + start)
    bytes[frameStart + start + offset] = UInt8(truncatingIfNeeded: sum >> 8)
    bytes[frameStart + start + offset + 1] = UInt8(truncatingIfNeeded: sum)
}

/// Reads a little-endian integer out of bytes the caller sized.
private func littleEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
    var value: T = 0
    for i in 0..<MemoryLayout<T>.size {
        value |= T(bytes[offset + i]) << (8 * i)
    }
    return value
}

private func le16(_ value: UInt16) -> [UInt8] {
    [UInt8(truncatingIfNeeded: value), UInt8(truncatingIfNeeded: value >> 8)]
}
