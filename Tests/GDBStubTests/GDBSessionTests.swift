import Glibc
import Synchronization
import Testing
@testable import GDBStub

/// A target with two 8-byte registers in `g` (numbers 0, 1; 1 is the pc), a 4-byte register 2,
/// 64 bytes of memory at 0x1000, and a log of run-control calls.
final class FakeTarget: GDBTarget {
    struct State {
        var registers: [[UInt8]] = [Array(repeating: 0x11, count: 8), Array(repeating: 0x22, count: 8), [1, 2, 3, 4]]
        var memory = [UInt8](0..<64)
        var points: Set<GDBPoint> = []
        var log: [String] = []
        var listener: (@Sendable (GDBStopEvent) -> Void)?
    }
    let state = Mutex(State())

    var threadIDs: [Int] { [1, 2] }
    func threadDescription(_ thread: Int) -> String { "CPU#\(thread - 1) [halted ]" }
    func targetDescription(annex: String) -> [UInt8]? { annex == "target.xml" ? Array("<target>0123456789</target>".utf8) : nil }
    var generalRegisterCount: Int { 2 }
    var programCounterRegister: Int { 1 }
    func readRegister(thread: Int, number: Int) -> [UInt8]? {
        state.withLock { number < $0.registers.count ? $0.registers[number] : nil }
    }
    func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool {
        state.withLock { s in
            guard number < s.registers.count, s.registers[number].count == value.count else { return false }
            s.registers[number] = value
            s.log.append("P\(thread):\(number)")
            return true
        }
    }
    func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        state.withLock { s in
            guard address >= 0x1000, address - 0x1000 + UInt64(count) <= 64 else { return nil }
            let start = Int(address - 0x1000)
            if physical { s.log.append("physical") }
            return Array(s.memory[start..<start + count])
        }
    }
    func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        state.withLock { s in
            guard address >= 0x1000, address - 0x1000 + UInt64(bytes.count) <= 64 else { return false }
            let start = Int(address - 0x1000)
            s.memory.replaceSubrange(start..<start + bytes.count, with: bytes)
            return true
        }
    }
    func insertPoint(_ point: GDBPoint) -> Bool { state.withLock { $0.points.insert(point).inserted } }
    func removePoint(_ point: GDBPoint) -> Bool { state.withLock { $0.points.remove(point) != nil } }
    func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void) {
        state.withLock {
            $0.listener = listener
            $0.log.append("attach")
        }
    }
    func resume(step: Int?) { state.withLock { $0.log.append(step.map { "step \($0)" } ?? "continue") } }
    func interrupt() { state.withLock { $0.log.append("interrupt") } }
    func detach() { state.withLock { $0.log.append("detach") } }
    func kill() { state.withLock { $0.log.append("kill") } }
    func monitorCommand(_ line: String) -> String { "you said \(line)" }

    var log: [String] { state.withLock { $0.log } }
}

/// Frames `payload` as the client does.
func packet(_ payload: String) -> [UInt8] { GDBPacket.frame(Array(payload.utf8)) }

/// Sends one packet and returns the replies' payloads (acks stripped, checksums checked).
func exchange(_ session: inout GDBSession, _ payload: String) -> [String] {
    var decoder = GDBPacketDecoder()
    return decoder.feed(session.receive(packet(payload))).compactMap { input in
        if case .packet(let bytes) = input { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }
}

@Suite struct GDBSessionTests {
    @Test func acknowledgesAndAnswersQueries() {
        let target = FakeTarget()
        var session = GDBSession(target: target)
        let raw = String(decoding: session.receive(packet("qC")), as: UTF8.self)
        #expect(raw == "+$QC01#f5")
        #expect(exchange(&session, "?") == ["T05thread:01;"])
        #expect(exchange(&session, "qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")
            == ["PacketSize=4000;qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+"])
        #expect(exchange(&session, "qfThreadInfo") == ["m01,02"])
        #expect(exchange(&session, "qsThreadInfo") == ["l"])
        #expect(exchange(&session, "qAttached") == ["1"])
        #expect(exchange(&session, "vCont?") == ["vCont;c;C;s;S"])
        #expect(exchange(&session, "vMustReplyEmpty") == [""])
        #expect(exchange(&session, "qThreadExtraInfo,2") == [String(decoding: GDBPacket.hex("CPU#1 [halted ]".utf8), as: UTF8.self)])
        #expect(exchange(&session, "T2") == ["OK"])
        #expect(exchange(&session, "T9") == ["E22"])
        #expect(exchange(&session, "Hg9") == ["E22"])
    }

    @Test func targetDescriptionInPieces() {
        var session = GDBSession(target: FakeTarget())
        #expect(exchange(&session, "qXfer:features:read:target.xml:0,8") == ["m<target>"])
        #expect(exchange(&session, "qXfer:features:read:target.xml:8,100") == ["l0123456789</target>"])
        #expect(exchange(&session, "qXfer:features:read:other.xml:0,100") == ["E00"])
        #expect(exchange(&session, "qXfer:features:read:target.xml:zz,100") == ["E22"])
    }

    @Test func registers() {
        let target = FakeTarget()
        var session = GDBSession(target: target)
        #expect(exchange(&session, "g") == ["11111111111111112222222222222222"])
        #expect(exchange(&session, "p2") == ["01020304"])
        #expect(exchange(&session, "p3") == ["E22"])
        #expect(exchange(&session, "P2=0a0b0c0d") == ["OK"])
        #expect(exchange(&session, "p2") == ["0a0b0c0d"])
        #expect(exchange(&session, "P2=0a") == ["E22"])  // wrong size
        #expect(exchange(&session, "Hg2") == ["OK"])
        #expect(exchange(&session, "G" + String(repeating: "33", count: 16)) == ["OK"])
        #expect(exchange(&session, "g") == [String(repeating: "33", count: 16)])
        #expect(target.log.suffix(2) == ["P2:0", "P2:1"])
        #expect(exchange(&session, "G3333") == ["E22"])
    }

    @Test func memory() {
        let target = FakeTarget()
        var session = GDBSession(target: target)
        #expect(exchange(&session, "m1002,4") == ["02030405"])
        #expect(exchange(&session, "m2000,4") == ["E14"])
        #expect(exchange(&session, "m1000,ffffffff") == ["E22"])  // longer than a packet
        #expect(exchange(&session, "M1000,2:abcd") == ["OK"])
        #expect(exchange(&session, "m1000,2") == ["abcd"])
        #expect(exchange(&session, "M1000,3:abcd") == ["E22"])  // length mismatch
        // X: binary, with '}' escapes ("}\u{03}" is '#').
        #expect(exchange(&session, "X1004,0:") == ["OK"])
        var session2 = session
        let raw = Array("X1004,2:".utf8) + [UInt8(ascii: "}"), 0x03, 0x41]
        var decoder = GDBPacketDecoder()
        let replies = decoder.feed(session2.receive(GDBPacket.frameRaw(raw)))
        #expect(replies.contains(.packet(Array("OK".utf8))))
        #expect(exchange(&session2, "m1004,2") == ["2341"])
        #expect(exchange(&session, "Qqemu.PhyMemMode:1") == ["OK"])
        #expect(exchange(&session, "qqemu.PhyMemMode") == ["1"])
        _ = exchange(&session, "m1000,1")
        #expect(target.log.last == "physical")
    }

    @Test func pointsAreForwarded() {
        let target = FakeTarget()
        var session = GDBSession(target: target)
        #expect(exchange(&session, "Z0,80000000,4") == ["OK"])
        #expect(exchange(&session, "Z2,1000,8") == ["OK"])
        #expect(exchange(&session, "z0,80000000,4") == ["OK"])
        #expect(exchange(&session, "z0,80000000,4") == ["E22"])  // not there any more
        #expect(exchange(&session, "Z5,0,1") == [""])  // unknown type: not supported
        #expect(exchange(&session, "Z0,zz,4") == ["E22"])
        #expect(exchange(&session, "Z2,1000,0") == ["E22"])
        #expect(target.state.withLock { $0.points } == [GDBPoint(kind: .writeWatchpoint, address: 0x1000, length: 8)])
    }

    @Test func runControlAndStopReplies() {
        let target = FakeTarget()
        var session = GDBSession(target: target)
        // A stop nobody waits for sends nothing.
        #expect(session.stopped(.interrupted(thread: 1)).isEmpty)
        #expect(exchange(&session, "c") == [])
        #expect(session.waitingForStop)
        // Ctrl-C while running asks the target to stop; the reply comes with the stop.
        #expect(session.receive([0x03]).isEmpty)
        #expect(target.log.last == "interrupt")
        #expect(String(decoding: session.stopped(.interrupted(thread: 1)), as: UTF8.self) == "$T02thread:01;#04")
        #expect(session.stopped(.interrupted(thread: 1)).isEmpty)  // only one reply is owed
        #expect(exchange(&session, "vCont;s:2;c") == [])
        #expect(target.log.last == "step 2")
        var decoder = GDBPacketDecoder()
        #expect(decoder.feed(session.stopped(.watchpoint(thread: 2, kind: .accessWatchpoint, address: 0x1008)))
            == [.packet(Array("T05thread:02;awatch:1008;".utf8))])
        #expect(exchange(&session, "?") == ["T05thread:02;awatch:1008;"])
        #expect(exchange(&session, "s") == [])
        #expect(target.log.last == "step 1")
        #expect(decoder.feed(session.stopped(.breakpoint(thread: 1, hardware: true))) == [.packet(Array("T05thread:01;hwbreak:;".utf8))])
        #expect(exchange(&session, "c1234") == [])  // continue at an address: the pc is written first
        #expect(target.log.suffix(2) == ["P1:1", "continue"])
        #expect(decoder.feed(session.stopped(.exited(code: 7))) == [.packet(Array("W07".utf8))])
        #expect(exchange(&session, "vCont;x") == ["E22"])
        #expect(exchange(&session, "D") == ["OK"])
        #expect(target.log.last == "detach")
    }

    @Test func monitorCommandsAnswerWithConsoleOutput() {
        var session = GDBSession(target: FakeTarget())
        let command = String(decoding: GDBPacket.hex("info status".utf8), as: UTF8.self)
        #expect(exchange(&session, "qRcmd,\(command)") == ["O" + String(decoding: GDBPacket.hex("you said info status\n".utf8), as: UTF8.self), "OK"])
        #expect(exchange(&session, "qRcmd,zz") == ["E22"])
    }

    @Test func checksumErrorsAskForResendAndNackResends() {
        var session = GDBSession(target: FakeTarget())
        #expect(session.receive(Array("$g#00".utf8)) == [UInt8(ascii: "-")])
        let first = session.receive(packet("p2"))
        #expect(session.receive(Array("-".utf8)) == Array(first.dropFirst()))  // the reply again, without the '+'
    }

    @Test func noAckMode() {
        var session = GDBSession(target: FakeTarget())
        #expect(String(decoding: session.receive(packet("QStartNoAckMode")), as: UTF8.self) == "+$OK#9a")
        #expect(String(decoding: session.receive(packet("qC")), as: UTF8.self) == "$QC01#f5")
        #expect(session.receive(Array("$g#00".utf8)).isEmpty)
    }

    /// Random and malformed packets: every one is acknowledged and answered with well-formed
    /// packets (or, for the commands that run the target, answered by the stop that follows),
    /// and the session still serves afterwards. The generator is seeded: the seed is in every
    /// failure message, and SWEMU_GDB_GARBAGE_SEED=<seed> replays a run.
    @Test func garbageNeverCrashes() {
        let seed = getenv("SWEMU_GDB_GARBAGE_SEED").flatMap { UInt64(String(cString: $0)) } ?? 0x6764_6273_7475_6221
        var generator = SeededGenerator(seed: seed)
        let target = FakeTarget()
        var session = GDBSession(target: target)
        var packets: [String] = []
        for _ in 0..<2000 {
            let body = (0..<Int.random(in: 0..<40, using: &generator)).map { _ in
                UInt8.random(in: 0x20...0x7e, using: &generator)
            }
            packets.append(String(decoding: body, as: UTF8.self))
        }
        for prefix in ["m", "M", "X", "p", "P", "Z", "z", "H", "T", "c", "s", "C", "S", "vCont;", "qXfer:features:read:", "qRcmd,", "G"] {
            for tail in ["", ",", ":", "=", "1,", ",1", "ffffffffffffffffff,1", "1,ffffffffffffffffffff", "1,2:", "-1", ";:"] {
                packets.append(prefix + tail)
            }
        }
        var unanswered = 0
        for text in packets {
            // Garbage never turns acknowledgements off: noAck mode is covered by its own test.
            guard !text.hasPrefix("QStartNoAckMode") else { continue }
            let reply = session.receive(GDBPacket.frame(Array(text.utf8)))
            #expect(reply.first == UInt8(ascii: "+"), "seed \(seed): '\(text)' was not acknowledged")
            var decoder = GDBPacketDecoder()
            var answers = 0
            for input in decoder.feed(Array(reply.dropFirst())) {
                if case .packet = input { answers += 1 } else { Issue.record("seed \(seed): '\(text)' got \(input), not a packet") }
            }
            if answers == 0 {
                // Only run control (c, s, C, S, vCont;) waits for the target's stop, and k ends it.
                let runs = session.waitingForStop && (["c", "s", "C", "S"].contains(text.first.map(String.init) ?? "") || text.hasPrefix("vCont;"))
                #expect(runs || text.first == "k", "seed \(seed): '\(text)' got no answer")
                unanswered += 1
            }
            if session.waitingForStop {
                // The target stops at once; the owed stop reply is a T packet.
                let stop = String(decoding: session.stopped(.stepped(thread: 1)), as: UTF8.self)
                #expect(stop.hasPrefix("$T05thread:01;#"), "seed \(seed): stop reply after '\(text)': \(stop)")
            }
        }
        #expect(unanswered > 0 && unanswered < packets.count / 2, "seed \(seed): \(unanswered) of \(packets.count) unanswered")
        // Still serving, with the target's registers and memory the sizes they were.
        #expect(exchange(&session, "Hg1") == ["OK"], "seed \(seed)")
        #expect(exchange(&session, "g").first?.count == 32, "seed \(seed)")
        #expect(exchange(&session, "m1000,40").first?.count == 128, "seed \(seed)")
        #expect(exchange(&session, "?") == ["T05thread:01;"], "seed \(seed)")
    }
}

/// xorshift64*: a small generator whose runs a seed replays exactly.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

extension GDBPacket {
    /// Frames `payload` without escaping it (to send bytes already escaped).
    static func frameRaw(_ payload: [UInt8]) -> [UInt8] {
        [UInt8(ascii: "$")] + payload + [UInt8(ascii: "#")] + hex([payload.reduce(UInt8(0), &+)])
    }
}
