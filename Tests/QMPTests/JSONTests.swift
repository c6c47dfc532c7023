import Testing

@testable import QMP

@Suite struct JSONTests {
    private func parse(_ text: String) throws(JSONParseError) -> JSONValue { try JSONParser.parse(text) }

    private func error(_ bytes: [UInt8]) -> String? {
        do {
            _ = try JSONParser.parse(bytes)
            return nil
        } catch {
            return error.message
        }
    }
    private func error(_ text: String) -> String? { error(Array(text.utf8)) }

    @Test func objectsKeepMemberOrder() throws {
        let v = try parse(#"{"b": 1, "a": [true, false, null], "c": {"z": "y"}}"#)
        #expect(v.objectValue?.keys == ["b", "a", "c"])
        #expect(v["a"] == [true, false, nil])
        #expect(v["c"]?["z"] == "y")
        #expect(v.serialized == #"{"b": 1, "a": [true, false, null], "c": {"z": "y"}}"#)
        #expect(try parse(" \t\r\n{ } ").serialized == "{}")
        #expect(try parse("[]").serialized == "[]")
    }

    @Test func integersStayExact() throws {
        #expect(try parse("9223372036854775807") == .int(Int64.max))
        #expect(try parse("-9223372036854775808") == .int(Int64.min))
        #expect(try parse("9223372036854775808") == .uint(UInt64(Int64.max) + 1))
        #expect(try parse("18446744073709551615") == .uint(UInt64.max))
        // Beyond 64 bits: a double, as QEMU's parser makes it.
        #expect(try parse("18446744073709551616") == .double(18446744073709551616.0))
        #expect(try parse("-9223372036854775809") == .double(-9223372036854775809.0))
        #expect(try parse("0") == .int(0))
        #expect(try parse("-0") == .int(0))
        #expect(try parse("1.5e3") == .double(1500))
        #expect(try parse("-0.25") == .double(-0.25))
        #expect(try parse("1E-2") == .double(0.01))
        #expect(JSONValue.uint(UInt64.max).serialized == "18446744073709551615")
        #expect(JSONValue.int(Int64.min).serialized == "-9223372036854775808")
        #expect(JSONValue.double(0.5).serialized == "0.5")
        #expect(JSONValue.double(.infinity).serialized == "null")
    }

    @Test func badNumbers() {
        #expect(error("01") == "invalid number '01'")
        #expect(error("-") == "invalid number '-'")
        #expect(error("1.") == "invalid number '1.'")
        #expect(error(".5") == "expecting value")
        #expect(error("1e") == "invalid number '1e'")
        #expect(error("+1") == "expecting value")
        #expect(error("12ab") == "invalid number '12ab'")
        #expect(error("1e400") == "number out of range '1e400'")
        #expect(error("0x10") == "invalid number '0x10'")
    }

    @Test func strings() throws {
        #expect(try parse(#""a\"b\\c\/d\b\f\n\r\t""#) == .string("a\"b\\c/d\u{8}\u{c}\n\r\t"))
        #expect(try parse(#""\u00e9\u4E2D\ud83d\ude00""#) == .string("é中😀"))
        #expect(try parse("\"é中😀\"") == .string("é中😀"))
        #expect(try parse(#""\u0000""#) == .string("\u{0}"))
        // Output is ASCII: QEMU's to_json_str escapes everything else, upper-case hex.
        #expect(JSONValue.string("é中😀\u{1}\u{7f}\"\\/").serialized == #""\u00E9\u4E2D\uD83D\uDE00\u0001\u007F\"\\/""#)
        #expect(JSONValue.string("line\r\n\t").serialized == #""line\r\n\t""#)
    }

    @Test func badStrings() {
        #expect(error("\"abc") == "premature end of input in string")
        #expect(error("\"a\u{1}b\"") == "control character in string")
        #expect(error("\"a\nb\"") == "control character in string")
        #expect(error(#""\x41""#) == "invalid escape sequence in string")
        #expect(error(#""\u12G4""#) == "invalid hex escape sequence in string")
        #expect(error(#""\ud800""#) == #"lone surrogate in \u escape"#)
        #expect(error(#""\ud800\u0041""#) == #"lone surrogate in \u escape"#)
        #expect(error(#""\udc00""#) == #"lone surrogate in \u escape"#)
    }

    @Test(arguments: [
        [0x22, 0xFF, 0x22],  // never valid
        [0x22, 0x80, 0x22],  // lone continuation byte
        [0x22, 0xC0, 0xAF, 0x22],  // overlong "/"
        [0x22, 0xE0, 0x80, 0xAF, 0x22],  // overlong, 3 bytes
        [0x22, 0xED, 0xA0, 0x80, 0x22],  // UTF-8 encoded surrogate
        [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22],  // above U+10FFFF
        [0x22, 0xE4, 0xB8, 0x22],  // truncated sequence
        [0x22, 0xC3],  // truncated at the end of input
    ] as [[UInt8]])
    func invalidUTF8IsRefused(bytes: [UInt8]) {
        #expect(error(bytes) == "invalid UTF-8 sequence in string")
    }

    @Test func structureErrors() {
        #expect(error("") == "expecting value")
        #expect(error("tru") == "invalid keyword 'tru'")
        #expect(error("nul") == "invalid keyword 'nul'")
        #expect(error("True") == "invalid keyword 'True'")
        #expect(error("[1,]") == "expecting value")
        #expect(error("[1 2]") == "expected separator in list")
        #expect(error("{\"a\" 1}") == "missing : in object pair")
        #expect(error("{\"a\": 1,}") == "key is not a string in object")
        #expect(error("{a: 1}") == "key is not a string in object")
        #expect(error("{\"a\": 1 \"b\": 2}") == "expected separator in dict")
        #expect(error("{\"a\": 1, \"a\": 2}") == "duplicate key 'a'")
        #expect(error("[1] [2]") == "unexpected data after the value")
        #expect(error("[1") == "premature end of input in array")
        #expect(error("{\"a\": 1") == "premature end of input in object")
        #expect(error("'single'") == "expecting value")
    }

    @Test func nestingIsLimitedTo64() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(try parse(ok).serialized == ok)
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(error(deep) == "nesting depth limit exceeded")
        let objects = String(repeating: "{\"a\": ", count: 65) + "1" + String(repeating: "}", count: 65)
        #expect(error(objects) == "nesting depth limit exceeded")
        // Far deeper input fails the same way, without exhausting the stack.
        #expect(error(String(repeating: "[", count: 100_000)) == "nesting depth limit exceeded")
    }

    @Test func roundTripsThroughTheSerializer() throws {
        let text = #"{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "x"}, "id": [1, -2, 3.5, "s", {}, []]}"#
        #expect(try parse(text).serialized == text)
        #expect(try parse(try parse(text).serialized) == parse(text))
    }

    @Test func arbitraryBytesNeverCrash() {
        // A fixed-seed generator: the same inputs every run.
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            seed ^= seed << 13
            seed ^= seed >> 7
            seed ^= seed << 17
            return seed
        }
        let alphabet = Array(#"{}[]:,"\u0123456789abcdeftrnl-+.eE "#.utf8) + [0x00, 0x1F, 0x80, 0xC3, 0xA9, 0xED, 0xF4, 0xFF]
        var parsed = 0
        for _ in 0..<5000 {
            let length = Int(next() % 40)
            let bytes = (0..<length).map { _ in alphabet[Int(next() % UInt64(alphabet.count))] }
            if let value = try? JSONParser.parse(bytes) {
                parsed += 1
                // What parses serializes to text that parses back to the same value.
                #expect((try? JSONParser.parse(value.serialized)) == value, "\(bytes)")
            }
            var framer = QMPFramer(maxMessageSize: 64)
            // Nothing the framer hands on is longer than the input or the limit.
            for item in framer.push(bytes) {
                if case .message(let message) = item { #expect(message.count <= min(bytes.count, 64), "\(bytes)") }
            }
        }
        // The same inputs every run, so the same 42 of them are JSON: a parser that starts to
        // accept or refuse other texts changes the count and has to explain why here.
        #expect(parsed == 42)
    }
}
