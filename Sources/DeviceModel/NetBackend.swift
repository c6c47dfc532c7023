/// Network links between a guest's NIC and the host (DESIGN.md §2): the NIC (virtio-net) is
/// the `NetFrontend`, the host side (`-netdev user|tap|stream|dgram|socket`) the `NetBackend`.
/// What crosses is one Ethernet frame at a time: from the destination MAC on, no virtio-net
/// header, no FCS.
///
/// **Flow control, both ways, never silent and never unbounded.**
/// - Guest → network: `NetBackend.send` always takes the frame it is given; it returns false
///   when its bounded queue is full (a slow peer), and the frontend then takes no more frames
///   from the guest until the backend calls `NetFrontend.backendReady()`. The guest's transmit
///   queue fills and the guest waits, as on a real NIC whose wire is busy.
/// - Network → guest: the backend offers frames with `NetFrontend.receive`; false means the
///   guest has no receive buffer posted now. The backend keeps that frame (stops reading its
///   descriptor) until the frontend calls `NetBackend.frontendReady()`. Backends whose peer
///   retransmits (user networking's TCP) may drop instead, and count what they drop.
///
/// **Threads.** `send` and `frontendReady` come from vCPU threads (the guest notifying its
/// queues) and from whatever thread completes device work; `receive` and `backendReady` come
/// from the backend's I/O thread. Both sides are thread-safe. Neither calls back into the
/// other from within a call it is serving: `send` and `frontendReady` never call `receive` or
/// `backendReady` on the calling thread (they queue the work for the backend's thread), since
/// the frontend may hold its own locks around them.
///
/// **Offloads** (virtio 1.2 §5.1.6.2, §5.1.6.4; QEMU's tap `vnet_hdr`). A backend whose
/// `offloads` is not empty (a tap opened with IFF_VNET_HDR) takes and gives every frame with a
/// `struct virtio_net_hdr` in front, the 12-byte VERSION_1 layout (`NetOffloads.headerSize`):
/// what `send` takes and what `receive` offers is then that header followed by the frame. The
/// header may ask for a partial checksum to be completed (NEEDS_CSUM), say one was checked
/// (DATA_VALID), and describe a GSO frame of up to `NetOffloads.maxFrameSize` bytes to be cut
/// into segments (the kinds in `offloads`); `num_buffers` means nothing between the two sides.
/// Backends with no offloads (the default) carry plain frames both ways, as above. The
/// frontend says which offloads the guest takes with `setGuestOffloads` (QEMU's
/// `tap_set_offload`): frames it receives use no others.
public protocol NetFrontend: AnyObject, Sendable {
    /// Offers one frame to the guest (after a virtio_net_hdr when the backend has offloads);
    /// false: no room now (see the protocol comment).
    func receive(_ frame: [UInt8]) -> Bool
    /// The backend can take frames again after `send` returned false.
    func backendReady()
}

public protocol NetBackend: AnyObject, Sendable {
    /// The `-netdev` id (`info network`, `set_link`, `hostfwd_add`).
    var id: String { get }
    /// `info network`'s description of the backend, as QEMU's `info_str`
    /// ("net=10.0.2.0,restrict=off", "tap: ifname=tap0 ...", "listening on 127.0.0.1:1234").
    var info: String { get }
    /// Connects the NIC that receives this backend's frames (nil disconnects it: frames from
    /// the network are then dropped). A board built again (system_reset) attaches its new NIC.
    func attach(_ frontend: (any NetFrontend)?)
    /// What the backend takes and gives beyond plain frames; empty (the default): plain
    /// frames. Fixed for the backend's lifetime (the NIC's features are chosen from it).
    var offloads: NetOffloads { get }
    /// Which of `offloads` the guest accepts in the frames it receives (QEMU's
    /// `tap_set_offload`, the tap's TUNSETOFFLOAD); `[]` at reset. A no-op by default.
    func setGuestOffloads(_ offloads: NetOffloads)
    /// Sends one guest frame (after a virtio_net_hdr when `offloads` is not empty); false: stop
    /// sending until `NetFrontend.backendReady()`.
    func send(_ frame: [UInt8]) -> Bool
    /// The frontend has room again after `receive` returned false.
    func frontendReady()
    /// Closes the backend's descriptors and stops its thread; later sends are dropped.
    func close()
}

extension NetBackend {
    public var offloads: NetOffloads { [] }
    public func setGuestOffloads(_ offloads: NetOffloads) {}
}

/// Offloads a backend carries in a `struct virtio_net_hdr` (see `NetFrontend`), named after
/// the tap's TUN_F_* flags (linux/if_tun.h) and the virtio-net features they enable (§5.1.3).
public struct NetOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// Partial checksums (NEEDS_CSUM) and checked ones (DATA_VALID): TUN_F_CSUM;
    /// VIRTIO_NET_F_CSUM / GUEST_CSUM.
    public static let checksum = NetOffloads(rawValue: 1 << 0)
    /// TCP over IPv4 segmentation: TUN_F_TSO4; HOST_TSO4 / GUEST_TSO4.
    public static let tso4 = NetOffloads(rawValue: 1 << 1)
    /// TCP over IPv6 segmentation: TUN_F_TSO6; HOST_TSO6 / GUEST_TSO6.
    public static let tso6 = NetOffloads(rawValue: 1 << 2)
    /// TSO of segments with ECN's CWR set: TUN_F_TSO_ECN; HOST_ECN / GUEST_ECN.
    public static let ecn = NetOffloads(rawValue: 1 << 3)
    /// UDP fragmentation: TUN_F_UFO; HOST_UFO / GUEST_UFO.
    public static let ufo = NetOffloads(rawValue: 1 << 4)
    /// UDP segmentation (USO) over IPv4 and IPv6 together: TUN_F_USO4 | TUN_F_USO6, which
    /// Linux's tun takes only as a pair (tun.c set_offload, 6.2 and later); HOST_USO /
    /// GUEST_USO4 + GUEST_USO6.
    public static let uso = NetOffloads(rawValue: 1 << 5)

    /// `struct virtio_net_hdr` with VERSION_1 (§5.1.6): u8 flags, u8 gso_type, le16 hdr_len,
    /// le16 gso_size, le16 csum_start, le16 csum_offset, le16 num_buffers.
    public static let headerSize = 12
    /// The longest frame after the header: a GSO frame's 64 KiB IP packet, its Ethernet
    /// header and a VLAN tag.
    public static let maxFrameSize = 65535 + 14 + 4
}

/// A MAC address (`-device virtio-net-device,mac=52:54:00:12:34:56`).
public struct MACAddress: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init(_ bytes: [UInt8]) {
        precondition(bytes.count == 6, "a MAC address has 6 bytes")
        self.bytes = bytes
    }

    /// Parses "52:54:00:12:34:56" (QEMU also takes '-' as the separator); nil if malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    /// QEMU's default for the NIC at `index` (qemu_macaddr_default_if_unset): 52:54:00:12:34:56,
    /// then :57, :58, ... in the order the NICs are created.
    public static func qemuDefault(index: Int) -> MACAddress {
        MACAddress([0x52, 0x54, 0x00, 0x12, 0x34, UInt8(truncatingIfNeeded: 0x56 + index)])
    }

    public var isMulticast: Bool { bytes[0] & 1 != 0 }

    public var description: String { bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined(separator: ":") }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
