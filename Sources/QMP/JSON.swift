/// A JSON value as QMP carries it (RFC 8259), with what QEMU's QObject keeps and a plain
/// decoder loses: object members in their order (so output reads like QEMU's) and integers
/// exact to 64 bits (a guest address does not survive a round trip through Double).
package enum JSONValue: Sendable, Equatable {
    case object(JSONObject)
    case array([JSONValue])
    case string(String)
    /// An integer that fits Int64.
    case int(Int64)
    /// A non-negative integer above Int64.max.
    case uint(UInt64)
    /// A number with a fraction or exponent, or an integer beyond 64 bits.
    case double(Double)
    case bool(Bool)
    case null

    /// What qapi calls this value's type in "Invalid parameter type ... expected: X".
    package var typeName: String {
        switch self {
        case .object: return "object"
        case .array: return "array"
        case .string: return "string"
        case .int, .uint: return "integer"
        case .double: return "number"
        case .bool: return "boolean"
        case .null: return "null"
        }
    }

    subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    package var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The value as Int64 when it is an integer that fits (qapi's 'int').
    var int64Value: Int64? {
        switch self {
        case .int(let v): return v
        default: return nil
        }
    }
}

/// A JSON object: members in the order they were written or added. Keys are unique (the
/// parser refuses duplicates, as QEMU's does; `set` replaces in place).
package struct JSONObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    package private(set) var members: [Member] = []

    package struct Member: Sendable, Equatable {
        package var key: String
        package var value: JSONValue
    }

    package init() {}

    package init(dictionaryLiteral elements: (String, JSONValue)...) {
        for (key, value) in elements { set(key, value) }
    }

    package init(_ elements: [(String, JSONValue)]) {
        for (key, value) in elements { set(key, value) }
    }

    package var isEmpty: Bool { members.isEmpty }
    package var count: Int { members.count }
    package var keys: [String] { members.map(\.key) }

    package subscript(key: String) -> JSONValue? {
        members.first { $0.key == key }?.value
    }

    package func contains(_ key: String) -> Bool { members.contains { $0.key == key } }

    /// Sets `key`, keeping its place if present, else appending.
    package mutating func set(_ key: String, _ value: JSONValue) {
        if let i = members.firstIndex(where: { $0.key == key }) {
            members[i].value = value
        } else {
            members.append(Member(key: key, value: value))
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    package init(stringLiteral value: String) { self = .string(value) }
    package init(integerLiteral value: Int64) { self = .int(value) }
    package init(booleanLiteral value: Bool) { self = .bool(value) }
    package init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    package init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
    package init(nilLiteral: ()) { self = .null }

    /// An unsigned count (bytes, operations) as QEMU prints it: int when it fits.
    package static func unsigned(_ v: UInt64) -> JSONValue {
        v <= UInt64(Int64.max) ? .int(Int64(v)) : .uint(v)
    }

    package static func integer(_ v: Int) -> JSONValue { .int(Int64(v)) }
}

// MARK: - Parsing

/// Why a text is not JSON. `message` uses QEMU's words where QEMU has them ("expecting
/// value", "invalid keyword 'tru'"); QMP sends it as "JSON parse error, <message>".
package struct JSONParseError: Error, Equatable, Sendable, CustomStringConvertible {
    package var message: String
    /// Byte offset into the input where the problem was found.
    package var offset: Int
    package var description: String { "\(message) (at byte \(offset))" }
}

/// A strict RFC 8259 parser for untrusted input: any byte sequence gives a value or an error,
/// never a crash. Nesting deeper than `maxDepth` (64, the QMP limit) is refused, which also
/// bounds the recursion; the caller bounds the size.
package struct JSONParser {
    package static let defaultMaxDepth = 64

    private let bytes: [UInt8]
    private var index = 0
    private let maxDepth: Int

    package static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, maxDepth: maxDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        if parser.index < bytes.count {
            throw JSONParseError(message: "unexpected data after the value", offset: parser.index)
        }
        return value
    }

    package static func parse(_ text: String, maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    private init(bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private func fail(_ message: String, at offset: Int? = nil) -> JSONParseError {
        JSONParseError(message: message, offset: offset ?? index)
    }

    private mutating func skipWhitespace() {
        while let b = peek, b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D { index += 1 }
    }

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard let b = peek else { throw fail("expecting value") }
        switch b {
        case UInt8(ascii: "{"):
            guard depth < maxDepth else { throw fail("nesting depth limit exceeded") }
            return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["):
            guard depth < maxDepth else { throw fail("nesting depth limit exceeded") }
            return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try parseNumber()
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"):
            return try parseKeyword()
        default:
            throw fail("expecting value")
        }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1  // {
        var object = JSONObject()
        skipWhitespace()
        if peek == UInt8(ascii: "}") {
            index += 1
            return .object(object)
        }
        while true {
            skipWhitespace()
            let keyStart = index
            guard peek == UInt8(ascii: "\"") else {
                if peek == nil { throw fail("premature end of input in object") }
                throw fail("key is not a string in object")
            }
            let key = try parseString()
            skipWhitespace()
            guard peek == UInt8(ascii: ":") else {
                if peek == nil { throw fail("premature end of input in object") }
                throw fail("missing : in object pair")
            }
            index += 1
            skipWhitespace()
            let value = try parseValue(depth: depth)
            if object.contains(key) { throw fail("duplicate key '\(key)'", at: keyStart) }
            object.set(key, value)
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "}"):
                index += 1
                return .object(object)
            case nil:
                throw fail("premature end of input in object")
            default:
                throw fail("expected separator in dict")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        index += 1  // [
        var array: [JSONValue] = []
        skipWhitespace()
        if peek == UInt8(ascii: "]") {
            index += 1
            return .array(array)
        }
        while true {
            skipWhitespace()
            array.append(try parseValue(depth: depth))
            skipWhitespace()
            switch peek {
            case UInt8(ascii: ","):
                index += 1
            case UInt8(ascii: "]"):
                index += 1
                return .array(array)
            case nil:
                throw fail("premature end of input in array")
            default:
                throw fail("expected separator in list")
            }
        }
    }

    private mutating func parseKeyword() throws(JSONParseError) -> JSONValue {
        let start = index
        while let b = peek, (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || b == UInt8(ascii: "_")
        {
            index += 1
        }
        let word = String(decoding: bytes[start..<index], as: UTF8.self)
        switch word {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "null": return .null
        default: throw fail("invalid keyword '\(word)'", at: start)
        }
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    /// RFC 8259 §6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    private mutating func parseNumber() throws(JSONParseError) -> JSONValue {
        let start = index
        var integral = true
        if peek == UInt8(ascii: "-") { index += 1 }
        guard let first = peek, Self.isDigit(first) else { throw invalidNumber(from: start) }
        index += 1
        if first != UInt8(ascii: "0") {
            while let b = peek, Self.isDigit(b) { index += 1 }
        } else if let b = peek, Self.isDigit(b) {
            throw invalidNumber(from: start)  // leading zero
        }
        if peek == UInt8(ascii: ".") {
            integral = false
            index += 1
            guard let b = peek, Self.isDigit(b) else { throw invalidNumber(from: start) }
            while let b = peek, Self.isDigit(b) { index += 1 }
        }
        if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
            integral = false
            index += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { index += 1 }
            guard let b = peek, Self.isDigit(b) else { throw invalidNumber(from: start) }
            while let b = peek, Self.isDigit(b) { index += 1 }
        }
        // A number runs into the next delimiter; "12ab" is one bad token, not 12 then "ab".
        if let b = peek, !Self.isDelimiter(b) { throw invalidNumber(from: start) }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if integral {
            // QEMU's parse_literal: int64, else uint64, else a double.
            if let v = Int64(text) { return .int(v) }
            if let v = UInt64(text) { return .uint(v) }
        }
        guard let d = Double(text), d.isFinite else {
            throw fail("number out of range '\(text)'", at: start)
        }
        return .double(d)
    }

    private static func isDelimiter(_ b: UInt8) -> Bool {
        switch b {
        case 0x20, 0x09, 0x0A, 0x0D, UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: ":"):
            return true
        default:
            return false
        }
    }

    private mutating func invalidNumber(from start: Int) -> JSONParseError {
        while let b = peek, !Self.isDelimiter(b), b != UInt8(ascii: "["), b != UInt8(ascii: "{"), b != UInt8(ascii: "\"") {
            index += 1
        }
        let text = String(decoding: bytes[start..<min(index, start + 32)], as: UTF8.self)
        return fail("invalid number '\(text)'", at: start)
    }

    private static func hexValue(_ b: UInt8) -> UInt32? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(b - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(b - UInt8(ascii: "A") + 10)
        default: return nil
        }
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let b = peek, let h = Self.hexValue(b) else { throw fail("invalid hex escape sequence in string") }
            v = v << 4 | h
            index += 1
        }
        return v
    }

    /// A string: escapes decoded, UTF-8 validated (no overlong forms, no surrogates).
    private mutating func parseString() throws(JSONParseError) -> String {
        index += 1  // opening quote
        var scalars = String.UnicodeScalarView()
        while true {
            guard let b = peek else { throw fail("premature end of input in string") }
            switch b {
            case UInt8(ascii: "\""):
                index += 1
                return String(scalars)
            case UInt8(ascii: "\\"):
                index += 1
                guard let e = peek else { throw fail("premature end of input in string") }
                index += 1
                switch e {
                case UInt8(ascii: "\""): scalars.append("\"")
                case UInt8(ascii: "\\"): scalars.append("\\")
                case UInt8(ascii: "/"): scalars.append("/")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "u"):
                    let escapeStart = index - 2
                    var cp = try hex4()
                    if (0xD800...0xDBFF).contains(cp) {
                        // RFC 8259 §7: a character beyond the BMP is a surrogate pair.
                        guard peek == UInt8(ascii: "\\"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "u") else {
                            throw fail("lone surrogate in \\u escape", at: escapeStart)
                        }
                        index += 2
                        let low = try hex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw fail("lone surrogate in \\u escape", at: escapeStart) }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(cp) {
                        throw fail("lone surrogate in \\u escape", at: escapeStart)
                    }
                    guard let scalar = Unicode.Scalar(cp) else { throw fail("invalid hex escape sequence in string", at: escapeStart) }
                    scalars.append(scalar)
                default:
                    throw fail("invalid escape sequence in string", at: index - 2)
                }
            case 0x00..<0x20:
                throw fail("control character in string")
            case 0x20..<0x80:
                scalars.append(Unicode.Scalar(b))
                index += 1
            default:
                guard let scalar = decodeUTF8() else { throw fail("invalid UTF-8 sequence in string") }
                scalars.append(scalar)
            }
        }
    }

    /// One multi-byte UTF-8 sequence at `index` (Unicode 15 table 3-7), or nil.
    private mutating func decodeUTF8() -> Unicode.Scalar? {
        let b0 = bytes[index]
        let length: Int
        var cp: UInt32
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch b0 {
        case 0xC2...0xDF: length = 2; cp = UInt32(b0 & 0x1F)
        case 0xE0: length = 3; cp = 0; low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3; cp = UInt32(b0 & 0x0F)
        case 0xED: length = 3; cp = 0x0D; high = 0x9F  // no UTF-16 surrogates
        case 0xF0: length = 4; cp = 0; low = 0x90
        case 0xF1...0xF3: length = 4; cp = UInt32(b0 & 0x07)
        case 0xF4: length = 4; cp = 4; high = 0x8F  // nothing above U+10FFFF
        default: return nil
        }
        guard index + length <= bytes.count else { return nil }
        for i in 1..<length {
            let b = bytes[index + i]
            let (lo, hi): (UInt8, UInt8) = i == 1 ? (low, high) : (0x80, 0xBF)
            guard b >= lo && b <= hi else { return nil }
            cp = cp << 6 | UInt32(b & 0x3F)
        }
        index += length
        return Unicode.Scalar(cp)
    }
}

// MARK: - Serializing

extension JSONValue {
    /// QEMU's compact form (qobject_to_json): `{"a": 1, "b": [1, 2]}`, ASCII only, with
    /// characters outside printable ASCII as `\uXXXX` (upper-case hex, surrogate pairs).
    package var serialized: String {
        var out = ""
        write(to: &out)
        return out
    }

    /// QEMU's pretty form (`-mon ...,mode=control,pretty=on`; qobject/json-writer.c): every
    /// member and element on a line of its own, indented four spaces per level, and an empty
    /// container's brackets on two lines. Lines end in "\r\n" as the monitor sends them.
    package var prettySerialized: String {
        var out = ""
        writePretty(to: &out, depth: 0)
        return out
    }

    private func writePretty(to out: inout String, depth: Int) {
        func newline(_ level: Int) { out += "\r\n" + String(repeating: " ", count: level * 4) }
        switch self {
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                newline(depth + 1)
                item.writePretty(to: &out, depth: depth + 1)
            }
            newline(depth)
            out += "]"
        case .object(let object):
            out += "{"
            for (i, member) in object.members.enumerated() {
                if i > 0 { out += "," }
                newline(depth + 1)
                Self.writeString(member.key, to: &out)
                out += ": "
                member.value.writePretty(to: &out, depth: depth + 1)
            }
            newline(depth)
            out += "}"
        default:
            write(to: &out)
        }
    }

    package func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let v): out += String(v)
        case .uint(let v): out += String(v)
        case .double(let d):
            // JSON has no NaN or infinity; QEMU would print garbage, we print null.
            out += d.isFinite ? String(d) : "null"
        case .string(let s): Self.writeString(s, to: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += ", " }
                item.write(to: &out)
            }
            out += "]"
        case .object(let object):
            out += "{"
            for (i, member) in object.members.enumerated() {
                if i > 0 { out += ", " }
                Self.writeString(member.key, to: &out)
                out += ": "
                member.value.write(to: &out)
            }
            out += "}"
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".unicodeScalars)

    private static func writeUnit(_ unit: UInt32, to out: inout String) {
        out += "\\u"
        for shift in stride(from: 12, through: 0, by: -4) {
            out.unicodeScalars.append(hexDigits[Int((unit >> UInt32(shift)) & 0xF)])
        }
    }

    static func writeString(_ s: String, to out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                let v = scalar.value
                if v > 0xFFFF {
                    writeUnit(0xD800 + ((v - 0x10000) >> 10), to: &out)
                    writeUnit(0xDC00 + ((v - 0x10000) & 0x3FF), to: &out)
                } else if v < 0x20 || v >= 0x7F {
                    writeUnit(v, to: &out)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
