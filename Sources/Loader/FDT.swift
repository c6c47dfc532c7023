import SystemSupport

/// A devicetree held in memory (Devicetree Specification v0.4, chapter 2 for the model,
/// chapter 5 for the flattened form): what a machine builds to describe its board to firmware
/// and the kernel, and what `-dtb FILE` hands us to check and pass on.
///
/// The tree is plain values: build a `Node`, set its properties, add children, then
/// `serialize()` it to a DTB. `init(dtb:)` reads one back (FDTParser.swift), `dts()` prints
/// it in dtc's source syntax (FDTSource.swift).
public struct DeviceTree: Sendable, Equatable {
    /// One property: a name and its value, which the tree stores as the raw big-endian bytes
    /// the blob carries (spec 2.2.4: the value's type is known only to whoever reads it).
    public struct Property: Sendable, Equatable {
        public var name: String
        public var value: [UInt8]

        public init(name: String, value: [UInt8]) {
            self.name = name
            self.value = value
        }
    }

    /// A node (spec 2.2.1): `node-name@unit-address`, ordered properties, ordered children.
    /// Property and child names are unique within a node; `set` and `add` replace in place.
    public struct Node: Sendable, Equatable {
        /// The full name, `node-name@unit-address`; empty for the root.
        public let name: String
        public internal(set) var properties: [Property] = []
        public internal(set) var children: [Node] = []

        /// A node called `name` (`"uart@10000000"`, or `""` for the root). Names come from the
        /// program, never from input, so a name the blob cannot carry is a programming error.
        public init(name: String) {
            precondition(!name.utf8.contains(0) && !name.utf8.contains(UInt8(ascii: "/")),
                         "device tree node name \(name.debugDescription) contains NUL or '/'")
            self.name = name
        }

        /// `name@unit-address` with the address in lower-case hex and no leading zeros, as
        /// QEMU and Linux write them (spec 2.2.1.1).
        public init(name: String, unitAddress: UInt64) {
            self.init(name: "\(name)@\(String(unitAddress, radix: 16))")
        }

        /// Already-validated parts from the parser.
        init(validatedName: String, properties: [Property], children: [Node]) {
            self.name = validatedName
            self.properties = properties
            self.children = children
        }

        /// The part of the name before `@`.
        public var nodeName: Substring { name.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)[0] }

        /// The part after `@`, if there is one.
        public var unitAddress: Substring? {
            guard let at = name.firstIndex(of: "@") else { return nil }
            return name[name.index(after: at)...]
        }

        // MARK: Properties

        /// The raw value of `name`, if the node has it.
        public func property(_ name: String) -> [UInt8]? { properties.first { $0.name == name }?.value }

        public func has(_ name: String) -> Bool { properties.contains { $0.name == name } }

        /// Sets `name` to raw `bytes`, replacing an existing value in its place (so the order
        /// of properties is the order they were first set).
        public mutating func set(_ name: String, bytes: [UInt8]) {
            precondition(!name.isEmpty && !name.utf8.contains(0), "device tree property name \(name.debugDescription) is empty or contains NUL")
            if let i = properties.firstIndex(where: { $0.name == name }) {
                properties[i].value = bytes
            } else {
                properties.append(Property(name: name, value: bytes))
            }
        }

        /// An empty property: a boolean that is true by being present (spec 2.2.4.1 `<empty>`).
        public mutating func set(_ name: String) { set(name, bytes: []) }

        public mutating func set(_ name: String, u32 value: UInt32) { set(name, bytes: DeviceTree.bigEndian(value)) }

        public mutating func set(_ name: String, u64 value: UInt64) {
            set(name, bytes: DeviceTree.bigEndian(UInt32(truncatingIfNeeded: value >> 32)) + DeviceTree.bigEndian(UInt32(truncatingIfNeeded: value)))
        }

        /// `<a b c>`: 32-bit cells, big-endian (spec 2.2.4.1 `<prop-encoded-array>`).
        public mutating func set(_ name: String, cells: [UInt32]) { set(name, bytes: cells.flatMap(DeviceTree.bigEndian)) }

        /// A NUL-terminated string.
        public mutating func set(_ name: String, string: String) { set(name, strings: [string]) }

        /// A `<stringlist>`: each string NUL-terminated, one after another.
        public mutating func set(_ name: String, strings: [String]) {
            var bytes: [UInt8] = []
            for s in strings {
                precondition(!s.utf8.contains(0), "device tree string \(s.debugDescription) contains NUL")
                bytes += s.utf8
                bytes.append(0)
            }
            set(name, bytes: bytes)
        }

        /// Gives this node the phandle `value` (spec 2.3.3), as from `DeviceTree.allocatePhandle()`.
        public mutating func set(phandle value: UInt32) { set("phandle", u32: value) }

        @discardableResult
        public mutating func remove(property name: String) -> [UInt8]? {
            guard let i = properties.firstIndex(where: { $0.name == name }) else { return nil }
            return properties.remove(at: i).value
        }

        /// The value as one cell, if it is exactly 4 bytes.
        public func u32(_ name: String) -> UInt32? {
            guard let v = property(name), v.count == 4 else { return nil }
            return DeviceTree.cell(v, at: 0)
        }

        /// The value as two cells, high first, if it is exactly 8 bytes.
        public func u64(_ name: String) -> UInt64? {
            guard let v = property(name), v.count == 8 else { return nil }
            return UInt64(DeviceTree.cell(v, at: 0)) << 32 | UInt64(DeviceTree.cell(v, at: 4))
        }

        /// The value as cells, if its length is a multiple of 4.
        public func cells(_ name: String) -> [UInt32]? {
            guard let v = property(name), v.count % 4 == 0 else { return nil }
            return stride(from: 0, to: v.count, by: 4).map { DeviceTree.cell(v, at: $0) }
        }

        /// The value as a string list, if it is NUL-terminated.
        public func strings(_ name: String) -> [String]? {
            guard let v = property(name), v.last == 0 else { return nil }
            return v.dropLast().split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        }

        /// The value as one string, if it is a single NUL-terminated string.
        public func string(_ name: String) -> String? {
            guard let list = strings(name), list.count == 1 else { return nil }
            return list[0]
        }

        /// This node's phandle (`phandle`, or the older `linux,phandle`), if it has one.
        public var phandle: UInt32? { u32("phandle") ?? u32("linux,phandle") }

        // MARK: Children

        /// Adds `child` at the end, or replaces the child of the same name in its place.
        public mutating func add(_ child: Node) {
            if let i = children.firstIndex(where: { $0.name == child.name }) {
                children[i] = child
            } else {
                children.append(child)
            }
        }

        @discardableResult
        public mutating func remove(child name: String) -> Node? {
            guard let i = children.firstIndex(where: { $0.name == name }) else { return nil }
            return children.remove(at: i)
        }

        /// The child that a path component names: an exact match, or, for a component without
        /// `@`, the first child whose node-name matches (as libfdt's `fdt_path_offset` does,
        /// so `/cpus/cpu` finds `cpu@0` and `/soc/serial` a lone `serial@10000000`).
        func childIndex(matching component: Substring) -> Int? {
            if let i = children.firstIndex(where: { $0.name == component }) { return i }
            guard !component.contains("@") else { return nil }
            return children.firstIndex { $0.nodeName == component }
        }

        /// The child named `name` (exact name, or node-name as in `childIndex(matching:)`);
        /// setting replaces it (or adds it, if absent), setting nil removes it.
        public subscript(child name: String) -> Node? {
            get { childIndex(matching: name[...]).map { children[$0] } }
            set {
                if let i = childIndex(matching: name[...]) {
                    if let newValue { children[i] = newValue } else { children.remove(at: i) }
                } else if let newValue {
                    add(newValue)
                }
            }
        }
    }

    public var root: Node
    /// The physical ID of the boot CPU (the header's `boot_cpuid_phys`).
    public var bootCPUID: UInt32
    /// The memory reservation block (spec 5.3): ranges the client must not use.
    public var reservedMemory: [(address: UInt64, size: UInt64)]
    /// The next phandle `allocatePhandle()` returns.
    public private(set) var nextPhandle: UInt32

    public init(root: Node = Node(name: ""), bootCPUID: UInt32 = 0, reservedMemory: [(address: UInt64, size: UInt64)] = []) {
        self.root = root
        self.bootCPUID = bootCPUID
        self.reservedMemory = reservedMemory
        self.nextPhandle = DeviceTree.largestPhandle(in: root) &+ 1
    }

    /// A fresh phandle (spec 2.3.3): 1, 2, 3, ... past any phandle already in the tree at
    /// `init`; 0 and 0xffffffff are never handed out.
    public mutating func allocatePhandle() -> UInt32 {
        precondition(nextPhandle != 0 && nextPhandle != 0xffff_ffff, "device tree phandles exhausted")
        defer { nextPhandle += 1 }
        return nextPhandle
    }

    /// Trees are equal when their nodes, boot CPU and reservations are; the phandle counter
    /// is bookkeeping, not content.
    public static func == (a: DeviceTree, b: DeviceTree) -> Bool {
        a.root == b.root && a.bootCPUID == b.bootCPUID
            && a.reservedMemory.elementsEqual(b.reservedMemory) { $0.address == $1.address && $0.size == $1.size }
    }

    // MARK: Paths

    /// The node at `path` (spec 2.2.3): `/`, `/cpus/cpu@0`, `/soc/serial` (node-name only
    /// matches the first such child), or an alias from `/aliases` such as `serial0/...`.
    public func node(at path: String) -> Node? { self[path: path] }

    /// The node at `path`; setting replaces it (or adds it under an existing parent), setting
    /// nil removes it. Setting the root path replaces the root; nil there is ignored.
    public subscript(path path: String) -> Node? {
        get {
            guard let components = resolve(path) else { return nil }
            var node = root
            for c in components {
                guard let i = node.childIndex(matching: c) else { return nil }
                node = node.children[i]
            }
            return node
        }
        set {
            guard let components = resolve(path) else { return }
            guard let last = components.last else {
                if let newValue { root = newValue }
                return
            }
            DeviceTree.update(&root, components.dropLast()[...]) { parent in parent[child: String(last)] = newValue }
        }
    }

    /// Path components from the root, with an alias (a path not starting with `/`) expanded.
    private func resolve(_ path: String) -> [Substring]? {
        var components = path.split(separator: "/")
        if !path.hasPrefix("/") {
            guard let alias = components.first,
                  let target = root[child: "aliases"]?.string(String(alias)), target.hasPrefix("/") else { return nil }
            components = target.split(separator: "/") + components.dropFirst()
        }
        return components
    }

    private static func update(_ node: inout Node, _ components: ArraySlice<Substring>, _ body: (inout Node) -> Void) {
        guard let first = components.first else { return body(&node) }
        guard let i = node.childIndex(matching: first) else { return }
        update(&node.children[i], components.dropFirst(), body)
    }

    /// The path of the node with phandle `value`, if any.
    public func path(ofPhandle value: UInt32) -> String? {
        func search(_ node: Node, _ path: String) -> String? {
            if node.phandle == value { return path.isEmpty ? "/" : path }
            for c in node.children {
                if let found = search(c, path + "/" + c.name) { return found }
            }
            return nil
        }
        return search(root, "")
    }

    // MARK: Cells

    /// `value` as `count` 32-bit cells, high first: the `#address-cells`/`#size-cells`
    /// encoding of an address or size (spec 2.3.5, 2.3.6).
    public static func cells(_ value: UInt64, count: Int) -> [UInt32] {
        precondition(count == 1 || count == 2, "a devicetree number takes 1 or 2 cells")
        if count == 1 {
            precondition(value <= UInt64(UInt32.max), "\(value) does not fit one cell")
            return [UInt32(value)]
        }
        return [UInt32(truncatingIfNeeded: value >> 32), UInt32(truncatingIfNeeded: value)]
    }

    static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
    }

    /// The big-endian cell at `offset`; the caller has checked `offset + 4 <= bytes.count`.
    static func cell(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    static func largestPhandle(in node: Node) -> UInt32 {
        var largest: UInt32 = 0
        for name in ["phandle", "linux,phandle"] {
            if let v = node.u32(name), v != 0xffff_ffff { largest = max(largest, v) }
        }
        for c in node.children { largest = max(largest, largestPhandle(in: c)) }
        return largest
    }
}
