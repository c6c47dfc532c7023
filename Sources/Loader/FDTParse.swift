import SystemSupport

extension DeviceTree {
    /// Reads a DTB (Devicetree Specification v0.4, chapter 5), such as a `-dtb FILE`. The blob
    /// is untrusted: every offset, size, string and nesting level is checked against the blob
    /// before use, the walk always moves forward, and a bad blob is a `.badInput` error that
    /// says what is wrong and where. Bytes past the header's `totalsize` are ignored.
    ///
    /// Accepted: versions 16 and 17 (and later ones that stay compatible with 17), properties
    /// before subnodes, unique names, FDT_NOP anywhere between tokens.
    public init(dtb bytes: [UInt8], name: String = "device tree blob") throws(SystemError) {
        let r = FDTReader(bytes: bytes, name: name)

        // 5.2: the header.
        guard bytes.count >= 4 else { throw r.error("\(bytes.count) bytes is too short for a header") }
        let magic = try r.u32(at: 0)
        guard magic == FDT.magic else {
            throw r.error("bad magic 0x\(String(magic, radix: 16)) (a DTB starts with 0xd00dfeed)")
        }
        guard bytes.count >= 28 else { throw r.error("\(bytes.count) bytes is too short for a header") }
        let version = try r.u32(at: 20)
        let lastCompVersion = try r.u32(at: 24)
        guard version >= 16 else { throw r.error("version \(version) is too old (this reader needs 16 or later)") }
        guard lastCompVersion <= FDT.version, lastCompVersion <= version else {
            throw r.error("version \(version) is not compatible with version 17 (last_comp_version \(lastCompVersion))")
        }
        // Version 16 has no size_dt_struct.
        let headerSize = version >= 17 ? FDT.headerSize : 36
        guard bytes.count >= headerSize else { throw r.error("\(bytes.count) bytes is too short for a version \(version) header") }
        let totalSize = Int(try r.u32(at: 4))
        let offDtStruct = Int(try r.u32(at: 8))
        let offDtStrings = Int(try r.u32(at: 12))
        let offMemRsvmap = Int(try r.u32(at: 16))
        let bootCPUID = try r.u32(at: 28)
        let sizeDtStrings = Int(try r.u32(at: 32))
        guard totalSize >= headerSize else { throw r.error("totalsize \(totalSize) is smaller than the \(headerSize)-byte header") }
        guard totalSize <= bytes.count else {
            throw r.error("totalsize \(totalSize) is larger than the \(bytes.count) bytes given (truncated blob?)")
        }
        let sizeDtStruct = version >= 17 ? Int(try r.u32(at: 36)) : totalSize - min(offDtStruct, totalSize)

        // The blocks lie inside totalsize, after the header; 5.3 and 5.4.1 give the alignment.
        try r.checkBlock("memory reservation block", offset: offMemRsvmap, size: 16, alignment: 8, header: headerSize, total: totalSize)
        try r.checkBlock("structure block", offset: offDtStruct, size: sizeDtStruct, alignment: 4, header: headerSize, total: totalSize)
        try r.checkBlock("strings block", offset: offDtStrings, size: sizeDtStrings, alignment: 1, header: headerSize, total: totalSize)

        // 5.3: (address, size) pairs up to an entry of size 0 (the spec's terminator is all
        // zero; libfdt and Linux stop at size 0, and so do we).
        var reservations: [(address: UInt64, size: UInt64)] = []
        var entry = offMemRsvmap
        while true {
            guard entry + 16 <= totalSize else {
                throw r.error("memory reservation block at offset \(offMemRsvmap) has no terminating entry before totalsize \(totalSize)")
            }
            let address = try r.u64(at: entry)
            let size = try r.u64(at: entry + 8)
            if size == 0 { break }
            reservations.append((address, size))
            entry += 16
        }

        let root = try DeviceTree.parseStructure(r, start: offDtStruct, end: offDtStruct + sizeDtStruct,
                                                 strings: offDtStrings, stringsEnd: offDtStrings + sizeDtStrings)
        self.init(root: root, bootCPUID: bootCPUID, reservedMemory: reservations)
    }

    /// One node being read: what it has so far, and the names it has used.
    private struct OpenNode {
        var name: String
        var properties: [Property] = []
        var children: [Node] = []
        var propertyNames: Set<String> = []
        var childNames: Set<String> = []
    }

    /// The path of the innermost open node, for error messages; shortened, since a hostile
    /// blob can make it long.
    private static func path(_ stack: [OpenNode]) -> String {
        let full = stack.count <= 1 ? "/" : stack.dropFirst().map(\.name).reduce("") { $0 + "/" + $1 }
        return full.count <= 200 ? full : "..." + full.suffix(200)
    }

    /// 5.4: the token stream. Iterative, with an explicit stack bounded by `FDT.maxDepth`, so
    /// no blob can exhaust the host stack; each token moves the cursor forward by at least 4.
    private static func parseStructure(_ r: FDTReader, start: Int, end: Int, strings: Int, stringsEnd: Int) throws(SystemError) -> Node {
        var stack: [OpenNode] = []
        var root: Node?
        var p = start
        while true {
            guard p + 4 <= end else {
                if !stack.isEmpty { throw r.error("node \(path(stack)) is not terminated (structure block ends inside it)") }
                throw r.error("structure block ends without FDT_END")
            }
            let token = try r.u32(at: p)
            let at = p
            p += 4
            switch token {
            case FDT.nop:
                continue

            case FDT.beginNode:
                // The name, NUL-terminated, then padding to the next 4-byte boundary.
                guard let nul = r.nul(from: p, end: end) else {
                    throw r.error("node name at structure offset \(at - start) is not terminated inside the structure block")
                }
                let nameBytes = r.bytes[p..<nul]
                p = (nul + 1 + 3) & ~3
                if root != nil && stack.isEmpty {
                    throw r.error("second root node at structure offset \(at - start) (only one tree is allowed)")
                }
                guard stack.count < FDT.maxDepth else {
                    throw r.error("nodes nest more than \(FDT.maxDepth) deep at structure offset \(at - start)")
                }
                let name: String
                if !stack.isEmpty {
                    guard let valid = validName(nameBytes, allowSlash: false) else {
                        throw r.error("node under \(path(stack)) at structure offset \(at - start) has an invalid name \(quoted(nameBytes))")
                    }
                    name = valid
                    guard stack[stack.count - 1].childNames.insert(name).inserted else {
                        throw r.error("node \(path(stack)) has two children named \(quoted(nameBytes))")
                    }
                } else {
                    guard nameBytes.isEmpty else {
                        throw r.error("root node has the name \(quoted(nameBytes)) (the root's name is empty)")
                    }
                    name = ""
                }
                stack.append(OpenNode(name: name))

            case FDT.endNode:
                guard let done = stack.popLast() else {
                    throw r.error("FDT_END_NODE at structure offset \(at - start) closes no node")
                }
                let node = Node(validatedName: done.name, properties: done.properties, children: done.children)
                if stack.isEmpty {
                    root = node
                } else {
                    stack[stack.count - 1].children.append(node)
                }

            case FDT.prop:
                guard !stack.isEmpty else {
                    throw r.error("property at structure offset \(at - start) is outside any node")
                }
                let here = stack.count - 1
                guard p + 8 <= end else { throw r.error("property in \(path(stack)) runs past the end of the structure block") }
                let length = Int(try r.u32(at: p))
                let nameOffset = Int(try r.u32(at: p + 4))
                p += 8
                guard length <= end - p else {
                    throw r.error("property in \(path(stack)) claims \(length) bytes, past the end of the structure block")
                }
                guard nameOffset < stringsEnd - strings else {
                    throw r.error("property in \(path(stack)) has name offset \(nameOffset), outside the \(stringsEnd - strings)-byte strings block")
                }
                guard let nul = r.nul(from: strings + nameOffset, end: stringsEnd) else {
                    throw r.error("property name at strings offset \(nameOffset) is not terminated inside the strings block")
                }
                let nameBytes = r.bytes[(strings + nameOffset)..<nul]
                guard let name = validName(nameBytes, allowSlash: true) else {
                    throw r.error("property in \(path(stack)) has an invalid name \(quoted(nameBytes))")
                }
                // 5.4.2: all properties precede the node's subnodes.
                guard stack[here].childNames.isEmpty else {
                    throw r.error("property \(quoted(nameBytes)) in \(path(stack)) follows a subnode (properties must come first)")
                }
                guard stack[here].propertyNames.insert(name).inserted else {
                    throw r.error("node \(path(stack)) has two properties named \(quoted(nameBytes))")
                }
                stack[here].properties.append(Property(name: name, value: Array(r.bytes[p..<(p + length)])))
                p = (p + length + 3) & ~3

            case FDT.end:
                if !stack.isEmpty { throw r.error("FDT_END inside node \(path(stack)) (it is not terminated)") }
                guard let root else { throw r.error("structure block has no root node") }
                return root

            default:
                throw r.error("unknown token 0x\(String(token, radix: 16)) at structure offset \(at - start)")
            }
        }
    }

    /// A node or property name: printable ASCII with no spaces (spec 2.2.1 and 2.2.4 allow
    /// fewer characters; this accepts what real trees use). Node names have no `/`.
    private static func validName(_ bytes: ArraySlice<UInt8>, allowSlash: Bool) -> String? {
        guard !bytes.isEmpty, bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7f && (allowSlash || $0 != UInt8(ascii: "/")) }) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Untrusted bytes, shown safely in an error message.
    private static func quoted(_ bytes: ArraySlice<UInt8>) -> String {
        var s = "\""
        for b in bytes.prefix(64) {
            if b >= 0x20 && b < 0x7f && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") {
                s.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                s += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
            }
        }
        return s + (bytes.count > 64 ? "...\"" : "\"")
    }
}

/// Bounds-checked big-endian reads from an untrusted blob.
private struct FDTReader {
    let bytes: [UInt8]
    let name: String

    func error(_ message: String) -> SystemError { .badInput("\(name): \(message)") }

    func u32(at o: Int) throws(SystemError) -> UInt32 {
        guard o >= 0, o <= bytes.count - 4 else { throw error("read of 4 bytes at offset \(o) is outside the \(bytes.count)-byte blob") }
        return DeviceTree.cell(bytes, at: o)
    }

    func u64(at o: Int) throws(SystemError) -> UInt64 { UInt64(try u32(at: o)) << 32 | UInt64(try u32(at: o + 4)) }

    /// The index of the first NUL in `from..<end`, if any.
    func nul(from start: Int, end: Int) -> Int? {
        guard start >= 0, end <= bytes.count, start < end else { return nil }
        return bytes[start..<end].firstIndex(of: 0)
    }

    /// 5.1: a block lies after the header and inside `totalsize`, suitably aligned.
    func checkBlock(_ what: String, offset: Int, size: Int, alignment: Int, header: Int, total: Int) throws(SystemError) {
        guard offset % alignment == 0 else { throw error("\(what) offset \(offset) is not \(alignment)-byte aligned") }
        guard offset >= header else { throw error("\(what) offset \(offset) overlaps the \(header)-byte header") }
        // Offsets and sizes are 32-bit, so the sum cannot overflow a 64-bit Int.
        guard offset + size <= total else {
            throw error("\(what) (offset \(offset), \(size) bytes) runs past totalsize \(total)")
        }
    }
}
