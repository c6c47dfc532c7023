/// The flattened form (Devicetree Specification v0.4, chapter 5): constants shared by the
/// writer and the parser.
enum FDT {
    /// 5.2: the header's `magic`.
    static let magic: UInt32 = 0xd00d_feed
    /// 5.2: the version this writer produces, and the oldest it is compatible with.
    static let version: UInt32 = 17
    static let lastCompatibleVersion: UInt32 = 16
    /// 5.2: ten 32-bit fields in version 17.
    static let headerSize = 40

    /// 5.4.1: structure block tokens.
    static let beginNode: UInt32 = 0x1
    static let endNode: UInt32 = 0x2
    static let prop: UInt32 = 0x3
    static let nop: UInt32 = 0x4
    static let end: UInt32 = 0x9

    /// How deep the parser lets a blob nest nodes, as Linux's `FDT_MAX_DEPTH` (real trees
    /// are under 10 deep; a bigger number means a broken or hostile blob).
    static let maxDepth = 64
}

extension DeviceTree {
    /// The tree as a version-17 DTB (spec 5.1): header, memory reservation block, structure
    /// block, strings block, in that order, with no free space. `bootCPUID` and
    /// `reservedMemory` default to the tree's own.
    public func serialize(bootCPUID: UInt32? = nil, reservedMemory: [(address: UInt64, size: UInt64)]? = nil) -> [UInt8] {
        var structure = BigEndianWriter()
        var strings = StringsBlock()
        DeviceTree.emit(root, into: &structure, strings: &strings)
        structure.u32(FDT.end)

        let reservations = reservedMemory ?? self.reservedMemory
        // 5.3: the reservation block is 8-byte aligned (the 40-byte header keeps it so) and
        // ends with an all-zero entry.
        let offMemRsvmap = FDT.headerSize
        let offDtStruct = offMemRsvmap + 16 * (reservations.count + 1)
        let offDtStrings = offDtStruct + structure.bytes.count
        let totalSize = offDtStrings + strings.bytes.count

        var blob = BigEndianWriter()
        blob.bytes.reserveCapacity(totalSize)
        for field in [FDT.magic, UInt32(totalSize), UInt32(offDtStruct), UInt32(offDtStrings), UInt32(offMemRsvmap),
                      FDT.version, FDT.lastCompatibleVersion, bootCPUID ?? self.bootCPUID,
                      UInt32(strings.bytes.count), UInt32(structure.bytes.count)] {
            blob.u32(field)
        }
        for r in reservations {
            blob.u64(r.address)
            blob.u64(r.size)
        }
        blob.u64(0)
        blob.u64(0)
        blob.bytes += structure.bytes
        blob.bytes += strings.bytes
        return blob.bytes
    }

    /// 5.4.2: FDT_BEGIN_NODE and the NUL-terminated name padded to 4 bytes, the properties
    /// (which precede subnodes), the subnodes, FDT_END_NODE.
    private static func emit(_ node: Node, into w: inout BigEndianWriter, strings: inout StringsBlock) {
        w.u32(FDT.beginNode)
        w.bytes += node.name.utf8
        w.bytes.append(0)
        w.align4()
        for p in node.properties {
            w.u32(FDT.prop)
            w.u32(UInt32(p.value.count))
            w.u32(strings.offset(of: p.name))
            w.bytes += p.value
            w.align4()
        }
        for c in node.children { emit(c, into: &w, strings: &strings) }
        w.u32(FDT.endNode)
    }
}

/// 5.5: property names, each NUL-terminated, each stored once.
private struct StringsBlock {
    var bytes: [UInt8] = []
    var offsets: [String: UInt32] = [:]

    mutating func offset(of name: String) -> UInt32 {
        if let o = offsets[name] { return o }
        let o = UInt32(bytes.count)
        bytes += name.utf8
        bytes.append(0)
        offsets[name] = o
        return o
    }
}

private struct BigEndianWriter {
    var bytes: [UInt8] = []

    mutating func u32(_ v: UInt32) { bytes += DeviceTree.bigEndian(v) }

    mutating func u64(_ v: UInt64) {
        u32(UInt32(truncatingIfNeeded: v >> 32))
        u32(UInt32(truncatingIfNeeded: v))
    }

    mutating func align4() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}
