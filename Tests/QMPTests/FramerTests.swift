import Testing

@testable import QMP

@Suite struct FramerTests {
    private func messages(_ items: [QMPFramer.Item]) -> [String] {
        items.map { item in
            switch item {
            case .message(let bytes): return String(decoding: bytes, as: UTF8.self)
            case .error(let text): return "error: \(text)"
            }
        }
    }

    @Test func messagesBackToBackWithOrWithoutWhitespace() {
        var f = QMPFramer()
        let items = f.push(Array("{\"a\": 1}{\"b\": [2]}\r\n  {\"c\": {}}\n".utf8))
        #expect(messages(items) == ["{\"a\": 1}", "{\"b\": [2]}", "{\"c\": {}}"])
        #expect(f.isIdle)
    }

    @Test func aMessageInPiecesComesOutWhole() {
        var f = QMPFramer()
        let text = #"{"execute": "human-monitor-command", "arguments": {"command-line": "info \"}{ status"}}"#
        var out: [QMPFramer.Item] = []
        for b in text.utf8 {
            out += f.push([b])
            if out.isEmpty { #expect(!f.isIdle) }
        }
        #expect(messages(out) == [text])
    }

    @Test func bracesInsideStringsAndEscapedQuotesDoNotCount() {
        var f = QMPFramer()
        let text = #"{"k": "}}]]\"{{", "e": "\\"}"#
        #expect(messages(f.push(Array(text.utf8))) == [text])
    }

    @Test func topLevelScalarsEndAtADelimiter() {
        var f = QMPFramer()
        #expect(messages(f.push(Array("42".utf8))).isEmpty, "a number may go on")
        #expect(messages(f.push(Array(" \"str\"true\n[1]".utf8))) == ["42", "\"str\"", "true", "[1]"])
    }

    @Test func aStrayClosingBracketIsAnError() {
        var f = QMPFramer()
        #expect(messages(f.push(Array("}{\"a\": 1}".utf8))) == ["error: JSON parse error, expecting value", "{\"a\": 1}"])
    }

    @Test func anOversizedMessageIsReportedOnceAndSkipped() {
        var f = QMPFramer(maxMessageSize: 100)
        let big = "{\"execute\": \"" + String(repeating: "x", count: 300) + "}\"}"
        var items = f.push(Array(big.utf8))
        #expect(messages(items) == ["error: JSON token size limit exceeded"])
        #expect(f.pendingCount == 0, "nothing of it is kept")
        items = f.push(Array("{\"ok\": true}".utf8))
        #expect(messages(items) == ["{\"ok\": true}"])
    }

    @Test func anOversizedMessageArrivingSlowlyUsesBoundedMemory() {
        var f = QMPFramer(maxMessageSize: 1 << 20)
        var errors = 0
        f.push(Array("[\"".utf8)).forEach { _ in errors += 1 }
        let chunk = [UInt8](repeating: 0x61, count: 4096)
        for _ in 0..<600 {  // 2.4 MiB of one string
            errors += f.push(chunk).count
            #expect(f.pendingCount <= 1 << 20)
        }
        #expect(errors == 1)
        #expect(messages(f.push(Array("\"]{}".utf8))) == ["{}"])
    }

    @Test func nestingPastTheLimitIsReportedOnceAndSkipped() {
        var f = QMPFramer()
        let deep = String(repeating: "[", count: 70) + String(repeating: "]", count: 70)
        #expect(messages(f.push(Array((deep + "{}").utf8))) == ["error: JSON nesting depth limit exceeded", "{}"])
    }

    @Test func controlCharactersAndFFResynchronise() {
        var f = QMPFramer()
        // qmp-spec: a control character outside a string abandons the message in progress...
        #expect(messages(f.push(Array("{\"execute\": \u{1}{}".utf8))) == ["error: JSON parse error, stray '\u{1}'", "{}"])
        // ...and 0xFF works even inside a string.
        #expect(messages(f.push(Array("{\"a\": \"unterminated".utf8) + [0xFF] + Array("{\"b\": 2}".utf8)))
            == ["error: JSON parse error, stray '\u{FFFD}'", "{\"b\": 2}"])
    }
}
