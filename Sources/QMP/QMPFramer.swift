/// Splits a QMP byte stream into JSON texts (qmp-spec.rst "Protocol Specification": JSON
/// values back to back, whitespace between them optional, a value may arrive in pieces).
///
/// It does what QEMU's json-streamer does with its lexer, without parsing: it tracks strings
/// and nesting and hands out each complete top-level value, which `JSONParser` then parses
/// strictly. What QEMU reports from the stream itself is reported here with QEMU's words:
///
/// - a message that grows past `maxMessageSize` without ending: "JSON token size limit
///   exceeded" (QEMU's limit is 64 MiB, ours 1 MiB by default);
/// - nesting past `maxDepth`: "JSON nesting depth limit exceeded";
/// - a closing bracket with nothing open: "JSON parse error, expecting value".
///
/// After either limit the rest of that message is skipped (strings and nesting still tracked,
/// nothing stored) and the stream goes on with the next one, so one bad message costs one
/// error reply. qmp-spec's resynchronisation works too: an ASCII control character other than
/// whitespace outside a string, or a byte 0xFE/0xFF anywhere (never valid UTF-8), abandons the
/// message in progress with a "JSON parse error, stray ..." reply.
package struct QMPFramer: Sendable {
    package enum Item: Equatable, Sendable {
        /// A complete top-level JSON text (not yet validated).
        case message([UInt8])
        /// The stream was bad here; QMP answers with a GenericError carrying this text.
        case error(String)
    }

    package static let defaultMaxMessageSize = 1 << 20

    package let maxMessageSize: Int
    package let maxDepth: Int

    private var buffer: [UInt8] = []
    private var depth = 0
    private var inString = false
    private var escaped = false
    /// A top-level number or keyword in progress: it ends at the next delimiter.
    private var inScalar = false
    /// Skipping the rest of a message that broke a limit.
    private var discarding = false

    package init(maxMessageSize: Int = defaultMaxMessageSize, maxDepth: Int = JSONParser.defaultMaxDepth) {
        self.maxMessageSize = maxMessageSize
        self.maxDepth = maxDepth
    }

    /// Bytes of the message in progress (for tests and flow control).
    package var pendingCount: Int { buffer.count }
    /// True between messages: nothing is half-read.
    package var isIdle: Bool { buffer.isEmpty && depth == 0 && !inString && !inScalar && !discarding }

    /// Feeds bytes; returns what became complete, in order.
    package mutating func push(_ bytes: some Sequence<UInt8>) -> [Item] {
        var items: [Item] = []
        for b in bytes { push(b, into: &items) }
        return items
    }

    private static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    private static func isStructural(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: ","),
            UInt8(ascii: ":"), UInt8(ascii: "\""):
            return true
        default:
            return false
        }
    }

    private mutating func reset() {
        buffer.removeAll(keepingCapacity: buffer.count <= 4096)
        depth = 0
        inString = false
        escaped = false
        inScalar = false
        discarding = false
    }

    private mutating func push(_ b: UInt8, into items: inout [Item]) {
        // 0xFE/0xFF never occur in UTF-8: the client's way out of anything, strings included.
        if b >= 0xFE {
            reset()
            items.append(.error("JSON parse error, stray '\u{FFFD}'"))
            return
        }
        if inString {
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                inString = false
            }
            store(b, into: &items)
            if !inString && depth == 0 { finish(into: &items) }
            return
        }
        if b < 0x20 && !Self.isWhitespace(b) {
            // qmp-spec: a control character forces the parser back to a known state.
            reset()
            items.append(.error("JSON parse error, stray '\(Character(Unicode.Scalar(b)))'"))
            return
        }
        if inScalar {
            if Self.isWhitespace(b) || Self.isStructural(b) {
                finish(into: &items)
                // fall through: `b` starts the next thing
            } else {
                store(b, into: &items)
                return
            }
        }
        switch b {
        case UInt8(ascii: "\""):
            inString = true
            store(b, into: &items)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            depth += 1
            if depth > maxDepth && !discarding {
                items.append(.error("JSON nesting depth limit exceeded"))
                buffer.removeAll()
                discarding = true
            }
            store(b, into: &items)
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            if depth == 0 {
                // QEMU's streamer parses the lone bracket at once and fails.
                items.append(.error("JSON parse error, expecting value"))
                return
            }
            depth -= 1
            store(b, into: &items)
            if depth == 0 { finish(into: &items) }
        default:
            if depth == 0 {
                if Self.isWhitespace(b) { return }
                inScalar = true  // a number, keyword, or stray character at top level
            }
            store(b, into: &items)
        }
    }

    private mutating func store(_ b: UInt8, into items: inout [Item]) {
        if discarding { return }
        buffer.append(b)
        if buffer.count > maxMessageSize {
            items.append(.error("JSON token size limit exceeded"))
            buffer.removeAll()
            discarding = true
        }
    }

    /// The top-level value in progress ended.
    private mutating func finish(into items: inout [Item]) {
        if !discarding && !buffer.isEmpty { items.append(.message(buffer)) }
        reset()
    }
}
