import DeviceModel
import GuestMemory
import Machines
import RISCV

/// The human monitor's machine views, in QEMU's layout: `info mtree`, `info qtree`, `x`/`xp`.
enum MonitorText {
    static func hex16(_ v: UInt64) -> String { String(v, radix: 16).leftPadded(16) }

    static func memoryTree(_ board: RISCVBoard) -> String {
        let out = "address-space: memory\n  0000000000000000-ffffffffffffffff (prio 0, i/o): system\n"
        var lines: [(UInt64, String)] = []
        for region in board.memory.regions {
            lines.append((region.range.base.rawValue, "    \(hex16(region.range.base.rawValue))-\(hex16(region.range.last.rawValue)) (prio 0, ram): ram@\(String(region.range.base.rawValue, radix: 16))"))
        }
        for mapping in board.mmio.allMappings {
            lines.append((mapping.range.base.rawValue, "    \(hex16(mapping.range.base.rawValue))-\(hex16(mapping.range.last.rawValue)) (prio 0, i/o): \(mapping.device.name)"))
        }
        return out + lines.sorted { $0.0 < $1.0 }.map(\.1).joined(separator: "\n") + "\n"
    }

    static func deviceTree(_ board: RISCVBoard) -> String {
        var out = "bus: main-system-bus\n  type System\n"
        for mapping in board.mmio.allMappings {
            out += "  dev: \(mapping.device.name), id \"\"\n    mmio \(hex16(mapping.range.base.rawValue))/\(hex16(mapping.range.size))\n"
        }
        return out
    }

    /// `x /fmt addr` (virtual, through the hart's current translation) and `xp /fmt addr`
    /// (physical). fmt = [count][format][size]: formats x d u o c i, sizes b h w g (QEMU's).
    static func memoryDump(_ words: [String], board: RISCVBoard) -> String {
        let physical = words[0] == "xp"
        var count = 1
        var format: Character = "x"
        var size = 4
        var rest = words.dropFirst()
        if let spec = rest.first, spec.hasPrefix("/") {
            rest = rest.dropFirst()
            var digits = ""
            for c in spec.dropFirst() {
                if c.isNumber { digits.append(c) } else if "xduocis".contains(c) { format = c } else if let s = ["b": 1, "h": 2, "w": 4, "g": 8][String(c)] {
                    size = s
                } else {
                    return "invalid char in format: '\(c)'\n"
                }
            }
            count = Int(digits) ?? 1
        }
        guard let addressText = rest.first else { return "\(words[0]): address expected\n" }
        guard let start = parseNumber(addressText) ?? register(addressText, board.hart) else {
            return "invalid address '\(addressText)'\n"
        }
        count = max(1, min(count, 4096))
        func translate(_ v: UInt64) -> UInt64? { physical ? v : board.hart.debugTranslate(v) }
        var out = ""
        if format == "i" {
            var pc = start
            for _ in 0..<count {
                guard let pa = translate(pc), let low = try? board.memory.read(UInt16.self, at: GuestAddress(pa)) else {
                    return out + "Cannot access memory\n"
                }
                var insn: DecodedInstruction
                if low & 3 == 3 {
                    guard let pa2 = translate(pc &+ 2), let high = try? board.memory.read(UInt16.self, at: GuestAddress(pa2)) else {
                        return out + "Cannot access memory\n"
                    }
                    insn = Decoder.shared.decode32(UInt32(low) | UInt32(high) << 16)
                } else {
                    insn = Decoder.shared.decodeCompressed(low)
                }
                out += "0x\(hex16(pc)):  \(Disassembler.text(insn, pc: pc).replacingTabs())\n"
                pc &+= UInt64(insn.length)
            }
            return out
        }
        let perLine = max(1, 16 / size)
        for i in 0..<count {
            let address = start &+ UInt64(i * size)
            if i % perLine == 0 { out += (i == 0 ? "" : "\n") + "\(hex16(address)):" }
            guard let pa = translate(address), let bytes = try? board.memory.readBytes(at: GuestAddress(pa), count: size) else {
                return out + "\nCannot access memory\n"
            }
            let value = bytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            switch format {
            case "d":
                let shift = UInt64(64 - 8 * size)
                out += " \(Int64(bitPattern: value << shift) >> Int64(shift))"
            case "u": out += " \(value)"
            case "o": out += " 0" + String(value, radix: 8)
            case "c": out += " '" + (value >= 32 && value < 127 ? String(UnicodeScalar(UInt8(value))) : "\\x" + String(value, radix: 16)) + "'"
            default: out += " 0x" + String(value, radix: 16).leftPadded(size * 2)
            }
        }
        return out + "\n"
    }

    /// `$pc`, `$sp`, `$a0`, `$x5`: the hart's registers, as QEMU's monitor expressions allow.
    static func register(_ text: String, _ hart: Hart) -> UInt64? {
        guard text.hasPrefix("$") else { return nil }
        let name = text.dropFirst()
        if name == "pc" { return hart.state.pointee.pc }
        if let index = Disassembler.integerRegisterNames.firstIndex(of: String(name)) { return hart.state.pointee.x[index] }
        if name.hasPrefix("x"), let index = Int(name.dropFirst()), (0..<32).contains(index) { return hart.state.pointee.x[index] }
        return nil
    }

    static func parseNumber(_ text: String) -> UInt64? {
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
    func replacingTabs() -> String { String(map { $0 == "\t" ? " " : $0 }) }
}
