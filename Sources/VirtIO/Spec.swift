/// Names and numbers from the OASIS "Virtual I/O Device (VIRTIO) Version 1.2" specification.
/// Section numbers in this module refer to it.

/// Device types (§5, "Device Types"): the DeviceID register.
package struct VirtioDeviceID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package var rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }

    package static let network = VirtioDeviceID(rawValue: 1)
    package static let block = VirtioDeviceID(rawValue: 2)
    package static let console = VirtioDeviceID(rawValue: 3)
    package static let entropy = VirtioDeviceID(rawValue: 4)
    package static let balloon = VirtioDeviceID(rawValue: 5)
    package static let input = VirtioDeviceID(rawValue: 18)

    package var description: String {
        switch self {
        case .network: "virtio-net"
        case .block: "virtio-blk"
        case .console: "virtio-console"
        case .entropy: "virtio-rng"
        case .balloon: "virtio-balloon"
        case .input: "virtio-input"
        default: "virtio device \(rawValue)"
        }
    }
}

/// Device status bits (§2.1): the Status register.
package struct VirtioStatus: OptionSet, Sendable, Hashable {
    package var rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }
    /// The guest noticed the device.
    package static let acknowledge = VirtioStatus(rawValue: 1)
    /// The guest knows how to drive it.
    package static let driver = VirtioStatus(rawValue: 2)
    /// The driver is set up and ready to drive the device.
    package static let driverOK = VirtioStatus(rawValue: 4)
    /// The driver acknowledged the features it understands; feature negotiation is complete.
    package static let featuresOK = VirtioStatus(rawValue: 8)
    /// The device hit an error it cannot recover from without a reset.
    package static let deviceNeedsReset = VirtioStatus(rawValue: 64)
    /// The guest gave up on the device.
    package static let failed = VirtioStatus(rawValue: 128)
    package static let all: VirtioStatus = [.acknowledge, .driver, .driverOK, .featuresOK, .deviceNeedsReset, .failed]
}

/// Feature bits (§2.2, §6 "Reserved Feature Bits", and each device's section). A 64-bit set:
/// virtio-mmio shows it 32 bits at a time.
package struct VirtioFeatures: OptionSet, Sendable, Hashable {
    package var rawValue: UInt64
    package init(rawValue: UInt64) { self.rawValue = rawValue }
    package init(bit: Int) { rawValue = 1 << UInt64(bit) }

    /// §2.7.5.3: the driver may use indirect descriptor tables.
    package static let indirectDescriptors = VirtioFeatures(bit: 28)
    /// §2.7.10: used_event / avail_event notification suppression.
    package static let eventIndex = VirtioFeatures(bit: 29)
    /// §6.1: a non-legacy (virtio 1.x) device. Required by this transport.
    package static let version1 = VirtioFeatures(bit: 32)

    /// What every queue of this implementation supports, offered by the transport on top of
    /// the device's own bits.
    package static let transport: VirtioFeatures = [.indirectDescriptors, .eventIndex, .version1]
}

/// Descriptor flags (§2.7.5).
package struct VirtqDescriptorFlags: OptionSet, Sendable, Hashable {
    package var rawValue: UInt16
    package init(rawValue: UInt16) { self.rawValue = rawValue }
    /// The buffer continues via the `next` field.
    package static let next = VirtqDescriptorFlags(rawValue: 1)
    /// The buffer is device write-only (otherwise device read-only).
    package static let write = VirtqDescriptorFlags(rawValue: 2)
    /// The buffer holds a table of descriptors (§2.7.5.3).
    package static let indirect = VirtqDescriptorFlags(rawValue: 4)
}

/// Split virtqueue layout constants (§2.7).
package enum VirtqLayout {
    /// `struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }`
    package static let descriptorSize: UInt64 = 16
    /// §2.7.6 `virtq_avail.flags`: the driver asks for no used buffer notifications.
    package static let availNoInterrupt: UInt16 = 1
    /// §2.7.8 `virtq_used.flags`: the device asks for no available buffer notifications.
    package static let usedNoNotify: UInt16 = 1
    /// The largest queue a split virtqueue may have (§2.7: "The maximum Queue Size value is 32768").
    package static let maxQueueSize: UInt16 = 32768
    /// §2.7, table "Virtqueue Part Alignment": descriptor table 16, available ring 2, used ring 4.
    package static let descriptorAlignment: UInt64 = 16
    package static let availAlignment: UInt64 = 2
    package static let usedAlignment: UInt64 = 4

    /// Bytes of the descriptor table for `size` entries.
    package static func descriptorTableSize(_ size: UInt16) -> UInt64 { descriptorSize * UInt64(size) }
    /// Bytes of the available ring: flags, idx, ring[size], used_event.
    package static func availRingSize(_ size: UInt16) -> UInt64 { 6 + 2 * UInt64(size) }
    /// Bytes of the used ring: flags, idx, ring[size] of (id, len), avail_event.
    package static func usedRingSize(_ size: UInt16) -> UInt64 { 6 + 8 * UInt64(size) }
}
