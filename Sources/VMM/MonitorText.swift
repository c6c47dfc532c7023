import Foundation
import DeviceModel
import GuestMemory
import Machines
import QMP
import RISCV
import RISCVJIT

/// The human monitor's machine views, in QEMU's layout: `info mtree`, `info qtree`, `x`/`xp`.
enum MonitorText {
    /// `info jit`: the translator's state per hart, in the spirit of QEMU's (its counters
    /// differ: swemu translates per hart and invalidates per code page).
    static func jitInfo(_ board: RISCVBoard) -> String {
        guard let all = board.jitStatistics else {
            return "The JIT is not in use: the harts run in the interpreter (-accel tcg,jit=on selects the JIT)"
        }
        func row(_ name: String, _ value: String) -> String { name.padding(toLength: 20, withPad: " ", startingAt: 0) + value + "\n" }
        var out = ""
        for (hart, s) in all.enumerated() {
            out += "Translation buffer state, hart \(hart):\n"
            out += row("gen code size", "\(s.codeBytes)/\(s.bufferSize)")
            out += row("TB count", "\(s.blocks)")
            out += row("TB avg target size", s.blocks == 0 ? "0" : String(format: "%.1f guest instructions", Double(s.instructions) / Double(s.blocks)))
            out += row("TB avg host size", s.blocks == 0 ? "0" : "\(s.emittedBytes / s.blocks) bytes")
            out += row("TB chained exits", "\(s.chains)")
            out += row("TB flush count", "\(s.flushes)")
            out += row("TB invalidate count", "\(s.invalidatedBlocks)")
            out += row("fused rotations", "\(s.fusedRotations)")
            let seconds = Double(s.translationNanoseconds) / 1e9
            out += row("translation time", String(format: "%.1f ms, %.2f M guest instructions/s", seconds * 1000,
                                                  seconds > 0 ? Double(s.instructions) / seconds / 1e6 : 0))
        }
        return out
    }

    static func hex16(_ v: UInt64) -> String { String(v, radix: 16).leftPadded(to: 16) }

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
    /// (physical). The syntax, expressions (`$pc + 4`) and QEMU's layout are `MemoryDump`'s;
    /// this supplies the bytes, the registers, and the disassembly for format `i`.
    static func memoryDump(_ dump: MemoryDump, board: RISCVBoard, hart: Hart) -> String {
        let start: UInt64
        do {
            start = try dump.address.evaluate { register($0, hart) }
        } catch {
            return error.message + "\n"
        }
        func read(_ address: UInt64, _ count: Int) -> [UInt8]? {
            var bytes: [UInt8] = []
            for i in 0..<count {
                // Byte by byte: a unit may straddle pages that translate differently.
                let virtual = address &+ UInt64(i)
                guard let pa = dump.physical ? virtual : hart.debugTranslate(virtual),
                      let byte = try? board.memory.read(UInt8.self, at: GuestAddress(pa)) else { return nil }
                bytes.append(byte)
            }
            return bytes
        }
        guard dump.format == "i" else { return dump.render(at: start, read: read) }
        func halfword(_ address: UInt64) -> UInt16? { read(address, 2).map { UInt16($0[0]) | UInt16($0[1]) << 8 } }
        var out = ""
        var pc = start
        for _ in 0..<min(dump.count, 4096) {
            guard let low = halfword(pc) else { return out + "Cannot access memory\n" }
            let insn: DecodedInstruction
            if low & 3 == 3 {
                guard let high = halfword(pc &+ 2) else { return out + "Cannot access memory\n" }
                insn = Decoder.shared.decode32(UInt32(low) | UInt32(high) << 16)
            } else {
                insn = Decoder.shared.decodeCompressed(low)
            }
            out += "0x\(hex16(pc)):  \(String(Disassembler.text(insn, pc: pc).map { $0 == "\t" ? " " : $0 }))\n"
            pc &+= UInt64(insn.length)
        }
        return out
    }

    /// `$pc`, `$sp`, `$a0`, `$x5`: the hart's registers, by the names QEMU's monitor uses.
    static func register(_ name: String, _ hart: Hart) -> UInt64? {
        if name == "pc" { return hart.state.pointee.pc }
        if let index = Disassembler.integerRegisterNames.firstIndex(of: name) { return hart.state.pointee.x[index] }
        if name.hasPrefix("x"), let index = Int(name.dropFirst()), (0..<32).contains(index) { return hart.state.pointee.x[index] }
        return nil
    }
}
