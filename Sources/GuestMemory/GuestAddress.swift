/// A guest-physical address (DESIGN.md §3). A distinct type so host pointers, offsets and
/// guest addresses are never mixed up.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inline(__always) public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inline(__always) public init(_ value: UInt64) { self.rawValue = value }

    @inline(__always) public static func < (a: GuestAddress, b: GuestAddress) -> Bool { a.rawValue < b.rawValue }

    /// `self + offset`, or nil when it would pass the top of the 64-bit address space.
    @inline(__always) public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    public var description: String { hex(rawValue) }
}

/// `0x` followed by lower-case hex digits, as QEMU prints addresses.
public func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// A half-open range of guest addresses `[base, base + size)`. `size` may be up to 2^64 - base,
/// so a range can end exactly at the top of the address space.
public struct AddressRange: Hashable, Sendable, CustomStringConvertible {
    public let base: GuestAddress
    public let size: UInt64

    /// Fails when the range is empty or would wrap past 2^64.
    public init?(base: GuestAddress, size: UInt64) {
        guard size > 0, size - 1 <= UInt64.max - base.rawValue else { return nil }
        self.base = base
        self.size = size
    }

    /// The last address inside the range (inclusive, so it cannot overflow).
    public var last: GuestAddress { GuestAddress(base.rawValue + (size - 1)) }

    @inline(__always) public func contains(_ address: GuestAddress) -> Bool {
        address.rawValue &- base.rawValue < size
    }

    /// Whether `[address, address + count)` lies wholly inside this range.
    @inline(__always) public func contains(_ address: GuestAddress, count: UInt64) -> Bool {
        let offset = address.rawValue &- base.rawValue
        return offset < size && count <= size - offset
    }

    public func overlaps(_ other: AddressRange) -> Bool {
        base <= other.last && other.base <= last
    }

    public var description: String { "[\(hex(base.rawValue))-\(hex(last.rawValue))]" }
}
