/// The framing layer of the GDB remote serial protocol (GDB manual, "Remote Protocol",
/// "Overview"), with no I/O: bytes from the client go into `GDBPacketDecoder.feed`, complete
/// packets, interrupts and acknowledgements come out; `GDBPacket.frame` wraps a reply.
///
/// A packet is `$payload#cc`, `cc` the modulo-256 sum of the payload's bytes in two hex
/// digits. Outside a packet the client sends `+`/`-` (acknowledgements) and 0x03 (Ctrl-C,
/// "interrupt"); anything else between packets is noise and is skipped, as gdbserver does.
public enum GDBInput: Equatable, Sendable {
    /// A packet with a correct checksum: its payload, still escaped (binary packets such as
    /// `X` unescape their data themselves, see `GDBPacket.unescape`).
    case packet([UInt8])
    /// A packet whose checksum did not match (or that was cut short by a new `$`): the
    /// client must be answered `-` so that it sends it again.
    case corrupt
    /// Ctrl-C: stop the target.
    case interrupt
    /// `+`: the client received our last reply.
    case ack
    /// `-`: the client wants our last reply again.
    case nack
}

public struct GDBPacketDecoder: Sendable {
    /// Longest payload taken. The stub advertises `PacketSize` below this, so a longer packet
    /// is a broken or hostile client: it is dropped and answered `-` rather than buffered.
    public let maxPayload: Int

    private enum Phase: Sendable {
        case idle
        case payload
        case checksum1
        case checksum2(high: UInt8)
    }

    private var phase = Phase.idle
    private var payload: [UInt8] = []
    private var sum: UInt8 = 0
    private var overflowed = false

    public init(maxPayload: Int = GDBPacket.maxPayload) {
        self.maxPayload = maxPayload
    }

    /// Takes bytes from the client; returns what they complete, in order.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [GDBInput] {
        var out: [GDBInput] = []
        for byte in bytes {
            switch phase {
            case .idle:
                switch byte {
                case UInt8(ascii: "$"): startPacket()
                case UInt8(ascii: "+"): out.append(.ack)
                case UInt8(ascii: "-"): out.append(.nack)
                case 0x03: out.append(.interrupt)
                default: break  // noise between packets
                }
            case .payload:
                if byte == UInt8(ascii: "#") {
                    phase = .checksum1
                } else if byte == UInt8(ascii: "$") {
                    // A packet cut short: the client gave up on it and started another.
                    out.append(.corrupt)
                    startPacket()
                } else {
                    sum &+= byte
                    if payload.count < maxPayload { payload.append(byte) } else { overflowed = true }
                }
            case .checksum1:
                guard let high = GDBPacket.hexValue(byte) else {
                    out.append(.corrupt)
                    phase = .idle
                    continue
                }
                phase = .checksum2(high: high)
            case .checksum2(let high):
                phase = .idle
                guard let low = GDBPacket.hexValue(byte), high << 4 | low == sum, !overflowed else {
                    out.append(.corrupt)
                    continue
                }
                out.append(.packet(payload))
            }
        }
        return out
    }

    private mutating func startPacket() {
        phase = .payload
        payload.removeAll(keepingCapacity: true)
        sum = 0
        overflowed = false
    }
}

public enum GDBPacket {
    /// The largest payload the stub accepts and announces (`PacketSize`, qSupported): room for
    /// an 8 KiB memory write in hex, with its header.
    public static let maxPayload = 0x4000

    /// `$payload#cc` with the characters the protocol reserves (`$`, `#`, `}` and `*`, the
    /// last because the client reads it as run-length encoding) escaped as `}` + (byte ^ 0x20).
    public static func frame(_ payload: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "$")]
        var sum: UInt8 = 0
        for byte in payload {
            switch byte {
            case UInt8(ascii: "$"), UInt8(ascii: "#"), UInt8(ascii: "}"), UInt8(ascii: "*"):
                out.append(UInt8(ascii: "}"))
                out.append(byte ^ 0x20)
                sum &+= UInt8(ascii: "}") &+ (byte ^ 0x20)
            default:
                out.append(byte)
                sum &+= byte
            }
        }
        out.append(UInt8(ascii: "#"))
        out.append(hexDigits[Int(sum >> 4)])
        out.append(hexDigits[Int(sum & 15)])
        return out
    }

    /// Undoes the `}` escaping of binary data (the `X` packet's bytes); nil if the data ends
    /// in the middle of an escape.
    public static func unescape(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var escaped = false
        for byte in bytes {
            if escaped {
                out.append(byte ^ 0x20)
                escaped = false
            } else if byte == UInt8(ascii: "}") {
                escaped = true
            } else {
                out.append(byte)
            }
        }
        return escaped ? nil : out
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// Bytes as lowercase hex, two digits each (memory and register contents).
    public static func hex(_ bytes: some Sequence<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 15)])
        }
        return out
    }

    /// Hex text back to bytes; nil on an odd length or a non-hex digit.
    public static func bytes(fromHex hex: some Collection<UInt8>) -> [UInt8]? {
        guard hex.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(hex.count / 2)
        var high: UInt8?
        for digit in hex {
            guard let value = hexValue(digit) else { return nil }
            if let h = high {
                out.append(h << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return out
    }

    /// A hex number of at most 16 digits (addresses, lengths, register numbers); nil otherwise.
    public static func number(fromHex hex: some Collection<UInt8>) -> UInt64? {
        guard !hex.isEmpty, hex.count <= 16 else { return nil }
        var value: UInt64 = 0
        for digit in hex {
            guard let d = hexValue(digit) else { return nil }
            value = value << 4 | UInt64(d)
        }
        return value
    }
}
