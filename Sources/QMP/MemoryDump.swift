/// The human monitor's `x /fmt addr` and `xp /fmt addr` (QEMU monitor/hmp.c, '/' and 'l'
/// argument types; memory_dump in monitor/misc.c): the syntax, QEMU's error messages, and the
/// output layout. It reads no memory: `render` takes a reader, so the machine (through
/// `MonitorTarget.machineView`) supplies the bytes and this type supplies QEMU's format.
public struct MemoryDump: Sendable, Equatable {
    /// `xp` (guest physical) rather than `x` (virtual, through the current CPU's MMU).
    public var physical: Bool
    /// How many units.
    public var count: Int
    /// x (hex), d (signed), u (unsigned), o (octal), c (char), i (disassemble).
    public var format: Character
    /// Unit size in bytes: 1 (b), 2 (h), 4 (w), 8 (g); nil for `i` without a size.
    public var size: Int?
    /// The address expression as written ("0x80000000", "$pc + 4").
    public var address: MonitorExpression

    /// The last format and size, which `x` and `xp` reuse when a later command omits them
    /// (QEMU's default_fmt_format/default_fmt_size; initially x and 4).
    public struct Defaults: Sendable, Equatable {
        public var format: Character = "x"
        public var size = 4
        public init() {}
    }

    /// Parses the arguments of `x`/`xp` (`text` is what follows the command name).
    /// On a syntax error throws the line QEMU prints ("invalid char in format: 'q'").
    public static func parse(arguments text: String, physical: Bool, name: String? = nil,
                             defaults: inout Defaults) throws(MonitorSyntaxError) -> MemoryDump {
        let chars = Array(text.unicodeScalars)
        var p = 0
        while p < chars.count && isSpace(chars[p]) { p += 1 }
        var count = 1
        var format: Character
        var size: Int?
        if p < chars.count && chars[p] == "/" {
            p += 1
            if p < chars.count, let d = digit(chars[p]) {
                count = d
                p += 1
                while p < chars.count, let d = digit(chars[p]) {
                    // QEMU's int would wrap; we stop at a sane bound instead.
                    count = min(count * 10 + d, 1 << 30)
                    p += 1
                }
            }
            var f: Character?
            var s: Int?
            scan: while p < chars.count {
                switch chars[p] {
                case "o", "d", "u", "x", "i", "c": f = Character(chars[p])
                case "b": s = 1
                case "h": s = 2
                case "w": s = 4
                case "g", "L": s = 8
                default: break scan
                }
                p += 1
            }
            if p < chars.count && !isSpace(chars[p]) {
                throw MonitorSyntaxError("invalid char in format: '\(Character(chars[p]))'")
            }
            format = f ?? defaults.format
            if format != "i" {
                // For 'i', no size means "the instruction's own size".
                let unit = s ?? defaults.size
                size = unit
                defaults.size = unit
            } else {
                size = s
            }
            defaults.format = format
        } else {
            format = defaults.format
            size = format == "i" ? nil : defaults.size
        }
        let rest = String(String.UnicodeScalarView(chars[p...]))
        let (expression, tail) = try MonitorExpression.parse(prefixOf: rest)
        if !tail.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }) {
            throw MonitorSyntaxError("\(name ?? (physical ? "xp" : "x")): extraneous characters at the end of line")
        }
        return MemoryDump(physical: physical, count: count, format: format, size: size, address: expression)
    }

    /// Parses a whole `x ...` or `xp ...` command line.
    public static func parse(line: String, defaults: inout Defaults) throws(MonitorSyntaxError) -> MemoryDump {
        let (name, rest) = HumanMonitor.splitCommandName(line)
        guard name == "x" || name == "xp" else { throw MonitorSyntaxError("unknown command: '\(name)'") }
        return try parse(arguments: rest, physical: name == "xp", defaults: &defaults)
    }

    /// The command line with format and size spelled out (no sticky defaults): the dump as
    /// one line, for logs and tests.
    public var canonicalLine: String {
        let sizeLetter: String
        switch size {
        case 1: sizeLetter = "b"
        case 2: sizeLetter = "h"
        case 4: sizeLetter = "w"
        case 8: sizeLetter = "g"
        default: sizeLetter = ""
        }
        return "\(physical ? "xp" : "x") /\(count)\(format)\(sizeLetter) \(address.text)"
    }

    /// QEMU's memory_dump text for formats other than `i`: lines of 16 bytes (8 for byte
    /// units), each "ADDRESS: value value ...", with `address` printed as 16 hex digits (a
    /// 64-bit target). `read(address, length)` returns the bytes or nil where memory cannot be
    /// read; the dump then ends with " Cannot access memory". Values are little-endian (RISC-V
    /// and x86). Lines end in "\n" (the monitor turns them into "\r\n").
    public func render(at address: UInt64, read: (UInt64, Int) -> [UInt8]?) -> String {
        var wsize = size ?? 1
        let lineSize = wsize == 1 ? 8 : 16
        var maxDigits = 0
        switch format {
        case "o": maxDigits = (wsize * 8 + 2) / 3
        case "u", "d": maxDigits = (wsize * 8 * 10 + 32) / 33
        case "c": wsize = 1
        default: maxDigits = wsize * 8 / 4
        }
        var out = ""
        var addr = address
        var remaining = wsize * count
        while remaining > 0 {
            out += Self.pad(String(addr, radix: 16), to: 16, with: "0") + ":"
            let l = min(remaining, lineSize)
            guard let bytes = read(addr, l), bytes.count >= l else {
                out += " Cannot access memory\n"
                break
            }
            var i = 0
            while i < l {
                var v: UInt64 = 0
                for k in 0..<min(wsize, l - i) { v |= UInt64(bytes[i + k]) << (8 * UInt64(k)) }
                out += " "
                switch format {
                case "o":
                    // printf "%#*o": a leading 0 unless the value is 0.
                    let digits = v == 0 ? "0" : "0" + String(v, radix: 8)
                    out += Self.pad(digits, to: maxDigits, with: " ")
                case "u":
                    out += Self.pad(String(v), to: maxDigits, with: " ")
                case "d":
                    out += Self.pad(String(Int64(bitPattern: v)), to: maxDigits, with: " ")
                case "c":
                    out += Self.printable(UInt8(truncatingIfNeeded: v))
                default:
                    out += "0x" + Self.pad(String(v, radix: 16), to: maxDigits, with: "0")
                }
                i += wsize
            }
            out += "\n"
            addr &+= UInt64(l)
            remaining -= l
        }
        return out
    }

    /// QEMU's monitor_printc.
    static func printable(_ c: UInt8) -> String {
        switch c {
        case UInt8(ascii: "'"): return "'\\''"
        case UInt8(ascii: "\\"): return "'\\\\'"
        case UInt8(ascii: "\n"): return "'\\n'"
        case UInt8(ascii: "\r"): return "'\\r'"
        case 32...126: return "'\(Character(Unicode.Scalar(c)))'"
        default: return "'\\x" + pad(String(c, radix: 16), to: 2, with: "0") + "'"
        }
    }

    static func pad(_ s: String, to width: Int, with fill: Character) -> String {
        s.count >= width ? s : String(repeating: fill, count: width - s.count) + s
    }

    private static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c == " " || c == "\t" || c == "\n" || c == "\r" || c == "\u{0B}" || c == "\u{0C}"
    }

    private static func digit(_ c: Unicode.Scalar) -> Int? {
        (c.value >= 0x30 && c.value <= 0x39) ? Int(c.value - 0x30) : nil
    }
}

/// A syntax error in a human-monitor command: `message` is the line QEMU prints.
public struct MonitorSyntaxError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// An HMP expression (monitor/hmp.c get_expr): numbers in C notation (0x1f, 017, 42),
/// character constants ('a'), registers ($pc, $a0), unary + - ~, * / %, & | ^, + -, and
/// parentheses, with QEMU's precedence (sum < logic < product < unary: `1+2&3` is 1+(2&3)).
public struct MonitorExpression: Sendable, Equatable {
    /// The source text, trimmed.
    public var text: String
    indirect enum Node: Sendable, Equatable {
        case number(UInt64)
        case register(String)
        case unary(Character, Node)
        case binary(Character, Node, Node)
    }
    var root: Node

    /// Parses the expression at the start of `text`; returns it and the text after it (QEMU
    /// stops at the first character that cannot continue the expression).
    public static func parse(prefixOf text: String) throws(MonitorSyntaxError) -> (MonitorExpression, Substring) {
        var parser = ExpressionParser(chars: Array(text.unicodeScalars))
        parser.skipSpaces()
        let start = parser.pos
        let root = try parser.sum()
        let source = String(String.UnicodeScalarView(parser.chars[start..<parser.pos]))
        let trimmed = source.unicodeScalars.reversed().drop { $0 == " " || $0 == "\t" }.reversed()
        let tail = String(String.UnicodeScalarView(parser.chars[parser.pos...]))
        return (MonitorExpression(text: String(String.UnicodeScalarView(trimmed)), root: root), Substring(tail))
    }

    /// Parses a whole text as one expression.
    public static func parse(_ text: String) throws(MonitorSyntaxError) -> MonitorExpression {
        let (e, tail) = try parse(prefixOf: text)
        guard tail.allSatisfy({ $0 == " " || $0 == "\t" }) else {
            throw MonitorSyntaxError("invalid char '\(tail.first.map(String.init) ?? "")' in expression")
        }
        return e
    }

    /// Evaluates with 64-bit wrap-around, as QEMU's int64_t arithmetic. `register` returns a
    /// register's value by name (without the `$`), or nil: "unknown register".
    public func evaluate(register: (String) -> UInt64?) throws(MonitorSyntaxError) -> UInt64 {
        try Self.evaluate(root, register: register)
    }

    private static func evaluate(_ node: Node, register: (String) -> UInt64?) throws(MonitorSyntaxError) -> UInt64 {
        switch node {
        case .number(let v): return v
        case .register(let name):
            guard let v = register(name) else { throw MonitorSyntaxError("unknown register") }
            return v
        case .unary(let op, let a):
            let v = try evaluate(a, register: register)
            switch op {
            case "-": return 0 &- v
            case "~": return ~v
            default: return v
            }
        case .binary(let op, let a, let b):
            let x = try evaluate(a, register: register)
            let y = try evaluate(b, register: register)
            switch op {
            case "+": return x &+ y
            case "-": return x &- y
            case "*": return x &* y
            case "&": return x & y
            case "|": return x | y
            case "^": return x ^ y
            case "/", "%":
                guard y != 0 else { throw MonitorSyntaxError("division by zero") }
                // QEMU divides as int64_t; INT64_MIN / -1 would trap in C, we wrap.
                let sx = Int64(bitPattern: x)
                let sy = Int64(bitPattern: y)
                if sy == -1 { return op == "/" ? 0 &- x : 0 }
                return UInt64(bitPattern: op == "/" ? sx / sy : sx % sy)
            default: return 0
            }
        }
    }
}

private struct ExpressionParser {
    let chars: [Unicode.Scalar]
    var pos = 0

    var current: Unicode.Scalar? { pos < chars.count ? chars[pos] : nil }

    mutating func skipSpaces() {
        while let c = current, c == " " || c == "\t" || c == "\n" || c == "\r" { pos += 1 }
    }

    /// QEMU's next(): step over one character and the spaces after it.
    mutating func next() {
        if pos < chars.count { pos += 1 }
        skipSpaces()
    }

    mutating func sum() throws(MonitorSyntaxError) -> MonitorExpression.Node {
        var n = try logic()
        while let c = current, c == "+" || c == "-" {
            next()
            n = .binary(Character(c), n, try logic())
        }
        return n
    }

    mutating func logic() throws(MonitorSyntaxError) -> MonitorExpression.Node {
        var n = try product()
        while let c = current, c == "&" || c == "|" || c == "^" {
            next()
            n = .binary(Character(c), n, try product())
        }
        return n
    }

    mutating func product() throws(MonitorSyntaxError) -> MonitorExpression.Node {
        var n = try unary()
        while let c = current, c == "*" || c == "/" || c == "%" {
            next()
            n = .binary(Character(c), n, try unary())
        }
        return n
    }

    /// Nesting of unary operators and parentheses is bounded, so a hostile line cannot
    /// exhaust the stack.
    var depth = 0

    mutating func unary() throws(MonitorSyntaxError) -> MonitorExpression.Node {
        depth += 1
        defer { depth -= 1 }
        guard depth < 256 else { throw MonitorSyntaxError("expression too deeply nested") }
        guard let c = current else { throw MonitorSyntaxError("unexpected end of expression") }
        switch c {
        case "+", "-", "~":
            next()
            return .unary(Character(c), try unary())
        case "(":
            next()
            let n = try sum()
            guard current == ")" else { throw MonitorSyntaxError("')' expected") }
            next()
            return n
        case "'":
            pos += 1
            guard let ch = current else { throw MonitorSyntaxError("character constant expected") }
            pos += 1
            guard current == "'" else { throw MonitorSyntaxError("missing terminating ' character") }
            next()
            return .number(UInt64(ch.value))
        case "$":
            pos += 1
            var name = ""
            while let ch = current, ("0"..."9").contains(ch) || ("a"..."z").contains(ch) || ("A"..."Z").contains(ch)
                || ch == "_" || ch == "."
            {
                name.unicodeScalars.append(ch)
                pos += 1
            }
            skipSpaces()
            return .register(name)
        default:
            return .number(try number())
        }
    }

    /// strtoull(p, &end, 0): 0x/0X hex, leading 0 octal, else decimal.
    mutating func number() throws(MonitorSyntaxError) -> UInt64 {
        let start = pos
        var radix: UInt64 = 10
        if current == "0" {
            radix = 8
            if pos + 2 < chars.count, chars[pos + 1] == "x" || chars[pos + 1] == "X",
                Self.digitValue(chars[pos + 2], radix: 16) != nil
            {
                radix = 16
                pos += 2
            }
        }
        var value: UInt64 = 0
        var digits = 0
        var overflow = false
        while let c = current, let d = Self.digitValue(c, radix: radix) {
            let (m, o1) = value.multipliedReportingOverflow(by: radix)
            let (s, o2) = m.addingReportingOverflow(d)
            overflow = overflow || o1 || o2
            value = s
            digits += 1
            pos += 1
        }
        if digits == 0 {
            pos = start
            throw MonitorSyntaxError("invalid char '\(Character(chars[start]))' in expression")
        }
        if overflow { throw MonitorSyntaxError("number too large") }
        skipSpaces()
        return value
    }

    static func digitValue(_ c: Unicode.Scalar, radix: UInt64) -> UInt64? {
        let v: UInt64
        switch c {
        case "0"..."9": v = UInt64(c.value - 0x30)
        case "a"..."z": v = UInt64(c.value - 0x61 + 10)
        case "A"..."Z": v = UInt64(c.value - 0x41 + 10)
        default: return nil
        }
        return v < radix ? v : nil
    }
}
