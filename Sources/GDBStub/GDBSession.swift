/// One debugger connection's protocol state (GDB manual, "Remote Protocol"), with no I/O of
/// its own (DESIGN.md §9.6): bytes from the client go into `receive`, the bytes to send back
/// come out; stops of the target go into `stopped`. Requests are carried out through a
/// `GDBTarget`.
///
/// All-stop mode: after `c`/`s`/`vCont` the session owes the client one stop reply, sent when
/// the target reports the stop (`stopped`), or at once if Ctrl-C arrives meanwhile and the
/// target stops. Malformed packets get an error reply (`E22`) or the empty reply GDB reads as
/// "not supported"; packets with a bad checksum get `-` so the client resends them.
public struct GDBSession: Sendable {
    public let target: any GDBTarget
    private var decoder = GDBPacketDecoder()
    /// `QStartNoAckMode`: neither side sends `+`/`-` any more.
    private var noAck = false
    /// The last reply, resent when the client answers `-`.
    private var lastReply: [UInt8] = []
    /// `Hg`: the thread register and memory packets apply to.
    private var generalThread: Int
    /// `Qqemu.PhyMemMode:1` (QEMU's extension): memory packets use physical addresses.
    private var physicalMemory = false
    /// The target runs on our behalf: a stop reply is owed.
    public private(set) var waitingForStop = false
    /// `D` was answered; the target detaches once the reply is out.
    private var detachPending = false
    /// What `?` answers: the last stop (initially the attach stop, SIGTRAP as QEMU reports).
    private var lastStop: [UInt8]

    public init(target: any GDBTarget) {
        self.target = target
        generalThread = target.threadIDs.first ?? 1
        lastStop = Array("T05thread:\(Self.threadText(generalThread));".utf8)
    }

    /// Takes bytes from the client, handing what to send back to `send` as soon as it is
    /// known (a reply goes out before the target acts on `D`, which may end the machine).
    public mutating func receive(_ bytes: some Sequence<UInt8>, send: ([UInt8]) -> Void) {
        for input in decoder.feed(bytes) {
            switch input {
            case .ack:
                break
            case .nack:
                if !noAck { send(lastReply) }
            case .corrupt:
                if !noAck { send([UInt8(ascii: "-")]) }
            case .interrupt:
                // All-stop: the stop reply follows through `stopped`.
                if waitingForStop { target.interrupt() }
            case .packet(let payload):
                var out: [UInt8] = noAck ? [] : [UInt8(ascii: "+")]
                for reply in handle(payload[...]) {
                    let framed = GDBPacket.frame(reply)
                    lastReply = framed
                    out += framed
                }
                if !out.isEmpty { send(out) }
                if detachPending {
                    detachPending = false
                    target.detach()
                }
            }
        }
    }

    /// Collects everything `receive` sends (for tests and simple callers).
    public mutating func receive(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        receive(bytes) { out += $0 }
        return out
    }

    /// The target stopped; returns the stop reply to send (empty if none is owed).
    public mutating func stopped(_ event: GDBStopEvent) -> [UInt8] {
        // A stop nobody waits for (the stop when a debugger attaches) leaves `?` at SIGTRAP.
        guard waitingForStop else { return [] }
        let reply = Self.stopReply(event)
        lastStop = reply
        waitingForStop = false
        let framed = GDBPacket.frame(reply)
        lastReply = framed
        return framed
    }

    /// The `T`/`W` stop reply for `event` (GDB manual, "Stop Reply Packets"): signal 5
    /// (SIGTRAP) for breakpoints, watchpoints and steps, 2 (SIGINT) for an interruption.
    static func stopReply(_ event: GDBStopEvent) -> [UInt8] {
        let text: String
        switch event {
        case .breakpoint(let thread, let hardware):
            text = "T05thread:\(threadText(thread));\(hardware ? "hwbreak" : "swbreak"):;"
        case .watchpoint(let thread, let kind, let address):
            let name = kind == .readWatchpoint ? "rwatch" : kind == .accessWatchpoint ? "awatch" : "watch"
            text = "T05thread:\(threadText(thread));\(name):\(String(address, radix: 16));"
        case .stepped(let thread):
            text = "T05thread:\(threadText(thread));"
        case .interrupted(let thread):
            text = "T02thread:\(threadText(thread));"
        case .exited(let code):
            text = "W" + hexByte(UInt8(truncatingIfNeeded: code))
        }
        return Array(text.utf8)
    }

    static func threadText(_ thread: Int) -> String { hexByte(UInt8(truncatingIfNeeded: thread)) }

    private static func hexByte(_ value: UInt8) -> String {
        String(decoding: GDBPacket.hex(CollectionOfOne(value)), as: UTF8.self)
    }

    // MARK: - Packets

    private static let ok = Array("OK".utf8)
    /// EINVAL: a malformed or out-of-range request.
    private static let invalid = Array("E22".utf8)
    /// EFAULT: memory that cannot be read or written (QEMU's answer too).
    private static let fault = Array("E14".utf8)
    /// The empty reply: "not supported".
    private static let unsupported: [UInt8] = []

    /// The replies to one packet, in order (most packets have one; `qRcmd` sends its output as
    /// `O` packets first; `c`/`s` send none until the stop).
    private mutating func handle(_ p: ArraySlice<UInt8>) -> [[UInt8]] {
        guard let command = p.first else { return [Self.unsupported] }
        let args = p.dropFirst()
        switch command {
        case UInt8(ascii: "?"):
            return [lastStop]
        case UInt8(ascii: "g"):
            var out: [UInt8] = []
            for number in 0..<target.generalRegisterCount {
                guard let value = target.readRegister(thread: generalThread, number: number) else { return [Self.invalid] }
                out += GDBPacket.hex(value)
            }
            return [out]
        case UInt8(ascii: "G"):
            return [writeAllRegisters(args)]
        case UInt8(ascii: "p"):
            guard let number = Self.int(args), let value = target.readRegister(thread: generalThread, number: number) else {
                return [Self.invalid]
            }
            return [GDBPacket.hex(value)]
        case UInt8(ascii: "P"):
            let parts = args.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2, let number = Self.int(parts[0]), let value = GDBPacket.bytes(fromHex: parts[1]),
                  target.writeRegister(thread: generalThread, number: number, value: value) else { return [Self.invalid] }
            return [Self.ok]
        case UInt8(ascii: "m"):
            guard let (address, length) = Self.addressLength(args), length <= UInt64(GDBPacket.maxPayload / 2) else {
                return [Self.invalid]
            }
            guard let bytes = target.readMemory(thread: generalThread, address: address, count: Int(length), physical: physicalMemory) else {
                return [Self.fault]
            }
            return [GDBPacket.hex(bytes)]
        case UInt8(ascii: "M"), UInt8(ascii: "X"):
            return [writeMemory(args, binary: command == UInt8(ascii: "X"))]
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            return [point(args, insert: command == UInt8(ascii: "Z"))]
        case UInt8(ascii: "c"), UInt8(ascii: "s"):
            if !args.isEmpty {
                guard let pc = GDBPacket.number(fromHex: args), setPC(pc) else { return [Self.invalid] }
            }
            resume(step: command == UInt8(ascii: "s") ? generalThread : nil)
            return []
        case UInt8(ascii: "C"), UInt8(ascii: "S"):
            // Signals mean nothing to a machine (QEMU ignores them too); `;ADDR` may follow.
            if let semicolon = args.firstIndex(of: UInt8(ascii: ";")) {
                guard let pc = GDBPacket.number(fromHex: args[(semicolon + 1)...]), setPC(pc) else { return [Self.invalid] }
            }
            resume(step: command == UInt8(ascii: "S") ? generalThread : nil)
            return []
        case UInt8(ascii: "H"):
            guard let op = args.first, op == UInt8(ascii: "g") || op == UInt8(ascii: "c"),
                  let thread = threadID(args.dropFirst()) else { return [Self.invalid] }
            // Hc only matters for the deprecated c/s with several CPUs; vCont names threads.
            if op == UInt8(ascii: "g"), thread > 0 { generalThread = thread }
            return [Self.ok]
        case UInt8(ascii: "T"):
            guard let thread = threadID(args), thread > 0 else { return [Self.invalid] }
            return [Self.ok]
        case UInt8(ascii: "D"):
            detachPending = true
            waitingForStop = false
            return [Self.ok]
        case UInt8(ascii: "k"):
            target.kill()
            return []
        case UInt8(ascii: "q"), UInt8(ascii: "Q"):
            return query(p)
        case UInt8(ascii: "v"):
            return verbose(p)
        default:
            return [Self.unsupported]
        }
    }

    private mutating func resume(step: Int?) {
        waitingForStop = true
        target.resume(step: step)
    }

    private func setPC(_ pc: UInt64) -> Bool {
        target.writeRegister(thread: generalThread, number: target.programCounterRegister, value: Self.littleEndian(pc))
    }

    private static func littleEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    private func writeAllRegisters(_ hex: ArraySlice<UInt8>) -> [UInt8] {
        guard let bytes = GDBPacket.bytes(fromHex: hex) else { return Self.invalid }
        var offset = 0
        for number in 0..<target.generalRegisterCount where offset < bytes.count {
            guard let size = target.readRegister(thread: generalThread, number: number)?.count,
                  offset + size <= bytes.count,
                  target.writeRegister(thread: generalThread, number: number, value: Array(bytes[offset..<offset + size])) else {
                return Self.invalid
            }
            offset += size
        }
        return offset == bytes.count ? Self.ok : Self.invalid
    }

    private func writeMemory(_ args: ArraySlice<UInt8>, binary: Bool) -> [UInt8] {
        guard let colon = args.firstIndex(of: UInt8(ascii: ":")),
              let (address, length) = Self.addressLength(args[..<colon]) else { return Self.invalid }
        let data = args[(colon + 1)...]
        guard let bytes = binary ? GDBPacket.unescape(data) : GDBPacket.bytes(fromHex: data),
              UInt64(bytes.count) == length else { return Self.invalid }
        if bytes.isEmpty { return Self.ok }  // GDB probes X support with a zero-length write
        return target.writeMemory(thread: generalThread, address: address, bytes: bytes, physical: physicalMemory) ? Self.ok : Self.fault
    }

    /// `Z type,addr,kind` / `z type,addr,kind` (conditions and commands after `;` are not
    /// supported: GDB then evaluates conditions itself).
    private func point(_ args: ArraySlice<UInt8>, insert: Bool) -> [UInt8] {
        let fields = args.prefix { $0 != UInt8(ascii: ";") }.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        guard fields.count == 3, let type = Self.int(fields[0]) else { return Self.invalid }
        guard let kind = GDBPoint.Kind(rawValue: type) else { return Self.unsupported }
        guard let address = GDBPacket.number(fromHex: fields[1]), let length = GDBPacket.number(fromHex: fields[2]),
              length > 0, length <= 1 << 20 else { return Self.invalid }
        let point = GDBPoint(kind: kind, address: address, length: length)
        let done = insert ? target.insertPoint(point) : target.removePoint(point)
        return done ? Self.ok : Self.invalid
    }

    // MARK: - q, Q and v packets

    private mutating func query(_ p: ArraySlice<UInt8>) -> [[UInt8]] {
        let text = String(decoding: p, as: UTF8.self)
        if text.hasPrefix("qSupported") {
            return [Array("PacketSize=\(String(GDBPacket.maxPayload, radix: 16));qXfer:features:read+;swbreak+;hwbreak+;vContSupported+;QStartNoAckMode+".utf8)]
        }
        if text.hasPrefix("qXfer:features:read:") {
            return [featuresRead(text.dropFirst("qXfer:features:read:".count))]
        }
        if text.hasPrefix("qRcmd,") {
            guard let command = GDBPacket.bytes(fromHex: p.dropFirst("qRcmd,".count)) else { return [Self.invalid] }
            var output = target.monitorCommand(String(decoding: command, as: UTF8.self))
            if !output.isEmpty && !output.hasSuffix("\n") { output += "\n" }
            // Console output packets ("O" + hex), at most half a packet each, then OK.
            let bytes = Array(output.utf8)
            let chunk = GDBPacket.maxPayload / 4
            let packets = stride(from: 0, to: bytes.count, by: chunk).map {
                [UInt8(ascii: "O")] + GDBPacket.hex(bytes[$0..<min($0 + chunk, bytes.count)])
            }
            return packets + [Self.ok]
        }
        if text.hasPrefix("qThreadExtraInfo,") {
            guard let thread = threadID(p.dropFirst("qThreadExtraInfo,".count)), thread > 0 else { return [Self.invalid] }
            return [GDBPacket.hex(target.threadDescription(thread).utf8)]
        }
        switch text {
        case "qfThreadInfo":
            return [Array(("m" + target.threadIDs.map(Self.threadText).joined(separator: ",")).utf8)]
        case "qsThreadInfo":
            return [Array("l".utf8)]
        case "qC":
            return [Array("QC\(Self.threadText(generalThread))".utf8)]
        case "qAttached":
            // Attached to an existing machine: GDB detaches, not kills, when it quits.
            return [Array("1".utf8)]
        case "QStartNoAckMode":
            // The OK itself is still acknowledged; nothing after it is.
            defer { noAck = true }
            return [Self.ok]
        case "Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0":
            physicalMemory = text.hasSuffix("1")
            return [Self.ok]
        case "qqemu.PhyMemMode":
            return [Array((physicalMemory ? "1" : "0").utf8)]
        default:
            return [Self.unsupported]
        }
    }

    /// `qXfer:features:read:ANNEX:OFFSET,LENGTH`: `m` + data when more follows, `l` + data for
    /// the last piece.
    private func featuresRead(_ rest: Substring) -> [UInt8] {
        guard let colon = rest.lastIndex(of: ":") else { return Self.invalid }
        let annex = String(rest[..<colon])
        guard let (offset, length) = Self.addressLength(Array(rest[rest.index(after: colon)...].utf8)[...]) else {
            return Self.invalid
        }
        guard let document = target.targetDescription(annex: annex) else { return Array("E00".utf8) }
        guard offset <= UInt64(document.count) else { return Self.invalid }
        let start = Int(offset)
        let end = start + Int(min(length, UInt64(document.count - start), UInt64(GDBPacket.maxPayload / 2)))
        return [UInt8(ascii: end == document.count ? "l" : "m")] + document[start..<end]
    }

    private mutating func verbose(_ p: ArraySlice<UInt8>) -> [[UInt8]] {
        let text = String(decoding: p, as: UTF8.self)
        if text == "vCont?" { return [Array("vCont;c;C;s;S".utf8)] }
        if text.hasPrefix("vCont;") {
            // Actions apply left to right: the first that names a thread (or none) wins for it.
            // With one action per thread in all-stop mode, what matters is whether some
            // thread steps: it steps, the others stay stopped.
            var step: Int?
            var valid = false
            for action in text.dropFirst("vCont;".count).split(separator: ";") {
                let parts = action.split(separator: ":", maxSplits: 1)
                guard let verb = parts.first?.first, "cCsS".contains(verb) else { return [Self.invalid] }
                var thread: Int?
                if parts.count == 2 {
                    guard let id = threadID(Array(parts[1].utf8)[...]) else { return [Self.invalid] }
                    thread = id > 0 ? id : nil
                }
                valid = true
                if (verb == "s" || verb == "S") && step == nil { step = thread ?? generalThread }
            }
            guard valid else { return [Self.invalid] }
            resume(step: step)
            return []
        }
        if text.hasPrefix("vKill") {
            target.kill()
            return [Self.ok]
        }
        return [Self.unsupported]  // vMustReplyEmpty and everything else
    }

    // MARK: - Field parsing

    /// A thread id: hex, or -1 (all) / 0 (any); nil for a malformed or unknown thread.
    private func threadID(_ text: ArraySlice<UInt8>) -> Int? {
        if text.elementsEqual("-1".utf8) { return -1 }
        guard let value = GDBPacket.number(fromHex: text), value <= UInt64(Int32.max) else { return nil }
        let thread = Int(value)
        return thread == 0 || target.threadIDs.contains(thread) ? thread : nil
    }

    private static func int(_ text: ArraySlice<UInt8>) -> Int? {
        guard let value = GDBPacket.number(fromHex: text), value <= UInt64(Int32.max) else { return nil }
        return Int(value)
    }

    /// `ADDR,LENGTH` in hex.
    private static func addressLength(_ text: ArraySlice<UInt8>) -> (UInt64, UInt64)? {
        let parts = text.split(separator: UInt8(ascii: ","), maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let address = GDBPacket.number(fromHex: parts[0]),
              let length = GDBPacket.number(fromHex: parts[1]) else { return nil }
        return (address, length)
    }
}
