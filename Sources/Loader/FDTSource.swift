extension DeviceTree {
    /// The tree in devicetree source syntax (spec chapter 6), laid out as `dtc -I dtb -O dts`
    /// prints a blob: the blob carries no types, so each value is shown the way dtc guesses
    /// it — a string list if it looks like text, `<cells>` if its length is a multiple of 4,
    /// else `[bytes]`. For debugging and for comparing trees with QEMU's.
    public func dts() -> String {
        var out = "/dts-v1/;\n\n"
        for r in reservedMemory {
            out += "/memreserve/\t0x\(DeviceTree.hex(r.address, digits: 16)) 0x\(DeviceTree.hex(r.size, digits: 16));\n"
        }
        DeviceTree.writeSource(root, level: 0, into: &out)
        return out
    }

    private static func writeSource(_ node: Node, level: Int, into out: inout String) {
        let indent = String(repeating: "\t", count: level)
        out += indent + (node.name.isEmpty ? "/" : node.name) + " {\n"
        for p in node.properties {
            out += indent + "\t" + p.name + sourceValue(p.value) + ";\n"
        }
        for c in node.children {
            out += "\n"
            writeSource(c, level: level + 1, into: &out)
        }
        out += indent + "};\n"
    }

    /// ` = value` (or nothing for an empty property), with dtc's `guess_value_type` rule:
    /// text when NUL-terminated, every byte printable (or NUL or a C escape), and no more
    /// NULs than other bytes; otherwise cells when the length allows; otherwise bytes.
    static func sourceValue(_ v: [UInt8]) -> String {
        guard let last = v.last else { return "" }
        let escapes: Set<UInt8> = [0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]
        let nuls = v.count { $0 == 0 }
        let text = last == 0 && nuls <= v.count - nuls && v.allSatisfy { ($0 >= 0x20 && $0 < 0x7f) || $0 == 0 || escapes.contains($0) }
        if text {
            var s = " = \""
            for b in v.dropLast() {
                switch b {
                case 0x07: s += "\\a"
                case 0x08: s += "\\b"
                case 0x09: s += "\\t"
                case 0x0a: s += "\\n"
                case 0x0b: s += "\\v"
                case 0x0c: s += "\\f"
                case 0x0d: s += "\\r"
                case UInt8(ascii: "\\"): s += "\\\\"
                case UInt8(ascii: "\""): s += "\\\""
                case 0: s += "\\0"
                default: s.unicodeScalars.append(Unicode.Scalar(b))
                }
            }
            return s + "\""
        }
        if v.count % 4 == 0 {
            let cells = stride(from: 0, to: v.count, by: 4).map { "0x" + hex(UInt64(cell(v, at: $0)), digits: 2) }
            return " = <" + cells.joined(separator: " ") + ">"
        }
        return " = [" + v.map { hex(UInt64($0), digits: 2) }.joined(separator: " ") + "]"
    }

    /// Lower-case hex, zero-padded to at least `digits` (C's `%0*llx`).
    static func hex(_ v: UInt64, digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }
}
