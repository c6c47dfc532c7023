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
public protocol NetFrontend: AnyObject, Sendable {
    /// Offers one frame to the guest; false: no room now (see the protocol comment).
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
    /// Sends one guest frame; false: stop sending until `NetFrontend.backendReady()`.
    func send(_ frame: [UInt8]) -> Bool
    /// The frontend has room again after `receive` returned false.
    func frontendReady()
    /// Closes the backend's descriptors and stops its thread; later sends are dropped.
    func close()
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
