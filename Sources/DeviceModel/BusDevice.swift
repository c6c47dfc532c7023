import GuestMemory
import Synchronization
import SystemSupport

/// A device register window on a bus (MMIO or port I/O), DESIGN.md §3.
///
/// Offsets are relative to where the board placed the device: the device does not know its
/// base. `size` is the access width in bytes (1, 2, 4 or 8). Reads of registers that do not
/// exist return 0 and writes to them are ignored (and may be logged as guest errors); a device
/// never traps on the guest's behalf.
public protocol BusDevice: AnyObject, Sendable {
    /// A short name for error messages and `info mtree` (e.g. "serial0", "virtio-mmio@10001000").
    var name: String { get }
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, value: UInt64, size: Int)
}

/// One device placed in an address space.
public struct Mapping: Sendable {
    public let range: AddressRange
    public let device: any BusDevice
}

/// A set of non-overlapping device windows: the MMIO bus or the x86 port-I/O bus.
/// The board adds every device before a vCPU runs; the lock keeps later additions (hotplug)
/// safe. Accelerators cache the result of `lookup` in their TLBs, so it is not per-access hot.
public final class AddressSpace: Sendable {
    public let name: String
    private let mappings = Mutex<[Mapping]>([])

    public init(name: String) { self.name = name }

    /// Places `device` at `[base, base + size)`. Overlap with a window already present is a
    /// configuration error that names both devices.
    public func add(_ device: any BusDevice, at base: GuestAddress, size: UInt64) throws(SystemError) {
        guard let range = AddressRange(base: base, size: size) else {
            throw .configuration("\(name): device '\(device.name)' has an empty or wrapping window at \(base) size \(hex(size))")
        }
        try mappings.withLock { (list: inout [Mapping]) throws(SystemError) in
            if let clash = list.first(where: { $0.range.overlaps(range) }) {
                throw .configuration(
                    "\(name): device '\(device.name)' at \(range) overlaps device '\(clash.device.name)' at \(clash.range)")
            }
            let index = list.firstIndex { $0.range.base > range.base } ?? list.endIndex
            list.insert(Mapping(range: range, device: device), at: index)
        }
    }

    /// The device window containing `address`, and the offset into it.
    public func lookup(_ address: GuestAddress) -> (device: any BusDevice, offset: UInt64)? {
        mappings.withLock { list in
            // Binary search over windows sorted by base.
            var lo = 0
            var hi = list.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if list[mid].range.last < address { lo = mid + 1 } else { hi = mid }
            }
            guard lo < list.count, list[lo].range.contains(address) else { return nil }
            return (list[lo].device, address.rawValue - list[lo].range.base.rawValue)
        }
    }

    /// Reads `size` bytes at `address`; nil when no device is there (the caller raises the
    /// architecture's access fault, or returns all-ones on an x86 port read).
    public func read(at address: GuestAddress, size: Int) -> UInt64? {
        guard let (device, offset) = lookup(address) else { return nil }
        return device.read(offset: offset, size: size)
    }

    /// Writes `size` bytes at `address`; false when no device is there.
    @discardableResult
    public func write(at address: GuestAddress, value: UInt64, size: Int) -> Bool {
        guard let (device, offset) = lookup(address) else { return false }
        device.write(offset: offset, value: value, size: size)
        return true
    }

    /// Every window in address order (`info mtree`).
    public var allMappings: [Mapping] { mappings.withLock { $0 } }
}
