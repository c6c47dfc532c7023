import GDBStub
import Synchronization

/// The GDB remote protocol: the packet decoder with the hex and escape helpers, and a whole
/// session (every packet GDB sends: registers, memory, points, run control, queries, vCont,
/// qXfer, monitor) against a target double with RISC-V-sized registers and 256 bytes of memory.
enum GDBFuzz {
    final class Target: GDBTarget {
        struct State {
            var registers = [[UInt8]](repeating: [UInt8](repeating: 0, count: 8), count: 33)
            var memory = [UInt8](repeating: 0x13, count: 256)
            var points: Set<GDBPoint> = []
        }
        let state = Mutex(State())
        var threadIDs: [Int] { [1, 2] }
        func threadDescription(_ thread: Int) -> String { "CPU#\(thread - 1) [halted ]" }
        func targetDescription(annex: String) -> [UInt8]? {
            annex == "target.xml" ? Array("<?xml version=\"1.0\"?><target><architecture>riscv:rv64</architecture></target>".utf8) : nil
        }
        var generalRegisterCount: Int { 33 }
        var programCounterRegister: Int { 32 }
        func readRegister(thread: Int, number: Int) -> [UInt8]? {
            state.withLock { number >= 0 && number < $0.registers.count ? $0.registers[number] : nil }
        }
        func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool {
            state.withLock { s in
                guard number >= 0, number < s.registers.count, value.count == 8 else { return false }
                s.registers[number] = value
                return true
            }
        }
        func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
            state.withLock { s in
                guard address >= 0x1000, count >= 0, address - 0x1000 <= 256, UInt64(count) <= 256 - (address - 0x1000) else { return nil }
                let start = Int(address - 0x1000)
                return Array(s.memory[start..<start + count])
            }
        }
        func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
            state.withLock { s in
                guard address >= 0x1000, address - 0x1000 <= 256, UInt64(bytes.count) <= 256 - (address - 0x1000) else { return false }
                let start = Int(address - 0x1000)
                s.memory.replaceSubrange(start..<start + bytes.count, with: bytes)
                return true
            }
        }
        func insertPoint(_ point: GDBPoint) -> Bool { state.withLock { $0.points.insert(point).inserted } }
        func removePoint(_ point: GDBPoint) -> Bool { state.withLock { $0.points.remove(point) != nil } }
        func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void) {}
        func resume(step: Int?) {}
        func interrupt() {}
        func detach() {}
        func kill() {}
        func monitorCommand(_ line: String) -> String { "monitor: \(line.count)\n" }
    }

    static let packets = FuzzTarget(name: "gdb-packet", summary: "the GDB packet decoder, escapes and hex", maxLength: 4096,
                                    run: { data in
        var decoder = GDBPacketDecoder(maxPayload: 512)
        let bytes = Array(data)
        let half = bytes.count / 2
        for input in decoder.feed(bytes[..<half]) + decoder.feed(bytes[half...]) {
            guard case .packet(let payload) = input else { continue }
            _ = GDBPacket.unescape(payload[...])
            _ = GDBPacket.bytes(fromHex: payload)
            _ = GDBPacket.number(fromHex: payload)
            // A framed payload decodes to its escaped form, which unescapes to it.
            var again = GDBPacketDecoder(maxPayload: 4096)
            let decoded = again.feed(GDBPacket.frame(payload))
            guard decoded.count == 1, case .packet(let escaped) = decoded[0], GDBPacket.unescape(escaped[...]) == payload else {
                fatalError("GDB frame/decode round trip differs: \(decoded)")
            }
        }
        _ = GDBPacket.unescape(bytes[...])
        _ = GDBPacket.bytes(fromHex: bytes)
        _ = GDBPacket.number(fromHex: bytes)
    }, seeds: { sessionSeeds().map { ($0.0, Array($0.1.dropFirst())) } })

    /// The first byte: bit 0 set, every `$...#xx` gets its right checksum before the session
    /// sees it (so the fuzzer explores payloads rather than checksums); the rest are the
    /// client's bytes, delivered in pieces that end at each '#'+2.
    static let session = FuzzTarget(name: "gdb", summary: "a GDB remote session against a target double", maxLength: 8192,
                                    run: { data in
        var bytes = Array(data)
        guard !bytes.isEmpty else { return }
        let fixChecksums = bytes.removeFirst() & 1 != 0
        if fixChecksums { bytes = withChecksums(bytes) }
        var session = GDBSession(target: Target())
        var start = 0
        var stops = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != UInt8(ascii: "#") { end += 1 }
            end = min(end + 3, bytes.count)
            _ = session.receive(bytes[start..<end])
            if session.waitingForStop {
                let events: [GDBStopEvent] = [.stepped(thread: 1), .breakpoint(thread: 2, hardware: false), .interrupted(thread: 1),
                                              .watchpoint(thread: 1, kind: .accessWatchpoint, address: 0x1008), .exited(code: 3)]
                _ = session.stopped(events[stops % events.count])
                stops += 1
            }
            start = end
        }
    }, seeds: { sessionSeeds() })

    /// Rewrites the checksum after each `$payload#`.
    static func withChecksums(_ bytes: [UInt8]) -> [UInt8] {
        var out = bytes
        var i = 0
        while i < out.count {
            guard out[i] == UInt8(ascii: "$") else { i += 1; continue }
            var j = i + 1
            var sum: UInt8 = 0
            while j < out.count && out[j] != UInt8(ascii: "#") {
                sum &+= out[j]
                j += 1
            }
            let hex = Array("0123456789abcdef".utf8)
            if j + 1 < out.count { out[j + 1] = hex[Int(sum >> 4)] }
            if j + 2 < out.count { out[j + 2] = hex[Int(sum & 15)] }
            i = j + 1
        }
        return out
    }

    static func sessionSeeds() -> [(String, [UInt8])] {
        func p(_ payloads: [String]) -> [UInt8] {
            [1] + payloads.flatMap { GDBPacket.frame(Array($0.utf8)) + [UInt8(ascii: "+")] }
        }
        return [
            ("attach", p(["qSupported:multiprocess+;swbreak+;hwbreak+;qRelocInsn+;fork-events+;vfork-events+;exec-events+;vContSupported+;QThreadEvents+;no-resumed+;xmlRegisters=i386",
                          "vMustReplyEmpty", "QStartNoAckMode", "Hg0", "qXfer:features:read:target.xml:0,ffb", "qTStatus", "?", "qfThreadInfo",
                          "qsThreadInfo", "qAttached", "Hc-1", "qC", "qOffsets", "g", "qSymbol::", "qThreadExtraInfo,2"])),
            ("memory", p(["m1000,10", "M1004,4:deadbeef", "X1008,2:ab", "m0,4", "p20", "P20=0010000000000000", "P5=01", "G" + String(repeating: "00", count: 264),
                          "Qqemu.PhyMemMode:1", "m1000,4", "qqemu.PhyMemMode", "qCRC:1000,10", "qSearch:memory:1000;10;13"])),
            ("run", p(["Z0,1000,4", "Z1,1004,2", "Z2,1010,8", "Z3,1010,4", "Z4,1018,1", "c", "z0,1000,4", "s", "vCont?", "vCont;s:1;c",
                       "vCont;c", "c1004", "s1008", "Hg2", "T2", "T9", "qRcmd,696e666f207265676973746572730a", "D", "k"])),
            ("raw", [0, UInt8(ascii: "+"), UInt8(ascii: "-"), 3] + GDBPacket.frame(Array("m1000,8".utf8)) + Array("$g#00".utf8) + [UInt8(ascii: "-")]
                + GDBPacket.frame(Array("X1000,3:}]}\u{3}x".utf8)) + Array("$qSupported#zz%".utf8)),
        ]
    }
}
