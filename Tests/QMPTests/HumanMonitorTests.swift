import Testing

@testable import QMP

private let esc = "\u{1B}"

@Suite struct HumanMonitorTests {
    /// Output of running `line` as typed: what follows the echo.
    private func run(_ m: inout HumanMonitor, _ line: String) -> String {
        let out = m.feed(Array((line + "\r").utf8)).text
        guard let end = out.range(of: "\r\n") else { return "<no newline in \(out.debugDescription)>" }
        return String(out[end.upperBound...])
    }

    /// The command's own output (no prompt).
    private func output(_ m: inout HumanMonitor, _ line: String) -> String {
        let text = run(&m, line)
        guard text.hasSuffix("(qemu) ") else { return "<no prompt after \(text.debugDescription)>" }
        return String(text.dropLast(7))
    }

    /// String arguments as QEMU's get_str reads them: libvirt quotes snapshot names.
    @Test func quotedArguments() {
        #expect(HumanMonitor.arguments(#""snap1""#) == ["snap1"])
        #expect(HumanMonitor.arguments(#"  -d   "a b\"c\\"  plain "#) == ["-d", #"a b"c\"#, "plain"])
        #expect(HumanMonitor.arguments("") == [])
        #expect(HumanMonitor.arguments(#""open"#) == nil)
    }

    @Test func bannerAndPrompt() {
        var m = HumanMonitor(target: FakeTarget())
        #expect(m.open().text == "swemu 0.1.0 monitor - type 'help' for more information\r\n(qemu) ")
    }

    @Test func echoIsQEMUsLineRedraw() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        // readline_update: back to the start of what was shown, the line, clear to the end.
        #expect(m.feed(Array("a".utf8)).text == "a\(esc)[K")
        #expect(m.feed(Array("b".utf8)).text == "\(esc)[Dab\(esc)[K")
        #expect(m.feed([0x7F]).text == "\(esc)[D\(esc)[Da\(esc)[K", "backspace")
        #expect(m.feed([0x08]).text == "\(esc)[D\(esc)[K", "^H is backspace too")
        #expect(m.feed([0x08]).text == "", "nothing left to delete")
    }

    @Test func cursorMovementAndInsertion() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        _ = m.feed(Array("ac".utf8))
        #expect(m.feed(Array("\(esc)[D".utf8)).text == "\(esc)[D")
        #expect(m.feed(Array("b".utf8)).text == "\(esc)[Dabc\(esc)[K\(esc)[D")
        #expect(m.feed([0x01]).text == "\(esc)[D\(esc)[D", "C-a: start of line")
        #expect(m.feed([0x04]).text == "bc\(esc)[K\(esc)[D\(esc)[D", "C-d: delete under the cursor")
        #expect(m.feed([0x05]).text == "\(esc)[C\(esc)[C", "C-e: end of line")
        #expect(m.feed(Array("\(esc)[1~".utf8)).text == "\(esc)[D\(esc)[D", "Home")
        #expect(m.feed(Array("\(esc)OF".utf8)).text == "\(esc)[C\(esc)[C", "End")
        #expect(output(&m, "") == "unknown command: 'bc'\n".crlf)
    }

    @Test func controlCClearsTheLineAndControlWDeletesAWord() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        _ = m.feed(Array("ab".utf8))
        #expect(m.feed([0x03]).text == "\(esc)[D\(esc)[D\(esc)[K")
        _ = m.feed(Array("info  status".utf8))
        _ = m.feed([0x17])
        #expect(output(&m, "name") == "guest0\r\n", "C-w left 'info  '")
    }

    @Test func enterRunsTheLineOnceForCRLFOrLF() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        _ = m.open()
        let out = m.feed(Array("stop\r\ncont\ninfo status\r".utf8)).text
        #expect(target.calls == ["stop", "cont"])
        #expect(out.components(separatedBy: "(qemu) ").count - 1 == 3, "one prompt per command: \(out.debugDescription)")
        #expect(out.hasSuffix("\r\nVM status: running\r\n(qemu) "))
        #expect(m.feed(Array("\r".utf8)).text == "\r\n(qemu) ", "an empty line just prompts again")
    }

    @Test func historyWalksBackAndForth() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        _ = run(&m, "info name")
        _ = run(&m, "info version")
        #expect(m.feed(Array("\(esc)[A".utf8)).text == "info version\(esc)[K")
        #expect(m.feed(Array("\(esc)[A".utf8)).text == "\(esc)[D".repeated(12) + "info name\(esc)[K")
        #expect(m.feed(Array("\(esc)[A".utf8)).text == "", "no older entry")
        _ = m.feed([0x0E])  // C-n: back to "info version"
        #expect(output(&m, "") == "7.2.0 (swemu 0.1.0)\r\n")
    }

    @Test func longLinesStopGrowing() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        let echo = m.feed([UInt8](repeating: UInt8(ascii: "z"), count: 5000))
        #expect(echo.bytes.suffix(4098) == [UInt8]("\(String(repeating: "z", count: 4095))\u{1B}[K".utf8)[...])
        #expect(m.feed(Array("z".utf8)).bytes.isEmpty, "a full line takes nothing more")
        #expect(m.feed(Array("\r".utf8)).text == "\r\nunknown command: '\(String(repeating: "z", count: 4095))'\r\n(qemu) ")
    }

    @Test func invalidUTF8IsShownAsReplacement() {
        var m = HumanMonitor(target: FakeTarget())
        _ = m.open()
        let out = m.feed([0x66, 0xFF, 0x0D]).text
        #expect(out.hasSuffix("unknown command: 'f\u{FFFD}'\r\n(qemu) "))
    }

    @Test func infoCommands() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        #expect(output(&m, "info status") == "VM status: running\r\n")
        target.state.withLock {
            $0.running = false
            $0.runState = "paused"
        }
        #expect(output(&m, "info status") == "VM status: paused\r\n")
        target.state.withLock { $0.runState = "shutdown" }
        #expect(output(&m, "info status") == "VM status: paused (shutdown)\r\n")
        #expect(output(&m, "info status now")
            == "status: extraneous characters at the end of line\r\nTry \"help info status\" for more information\r\n")
        #expect(output(&m, "info version") == "7.2.0 (swemu 0.1.0)\r\n")
        #expect(output(&m, "info name") == "guest0\r\n")
        target.state.withLock { $0.name = nil }
        #expect(output(&m, "info name") == "")
        #expect(output(&m, "info cpus") == "* CPU #0: thread_id=4242\r\n  CPU #1: thread_id=4243\r\n")
        #expect(output(&m, "info chardev") == "serial0: filename=pty:/dev/pts/7\r\nqmp: filename=unix:/tmp/q.sock,server=on\r\n")
        #expect(output(&m, "info block") == """
            virtio0: disk.img (raw)\r
                Cache mode:       writeback\r
            \r
            libvirt-1-format: /images/base.qcow2 (qcow2, read-only)\r
                Attached to:      /machine/peripheral/virtio-disk0/virtio-backend\r
                Cache mode:       writeback\r

            """)
        #expect(output(&m, "info block libvirt-1-format").hasPrefix("libvirt-1-format: /images/base.qcow2 (qcow2, read-only)\r\n"))
        #expect(output(&m, "info block -n").contains("libvirt-1-storage: /images/base.qcow2 (file, read-only)\r\n"))
        #expect(output(&m, "info block -v virtio0").hasPrefix("virtio0: disk.img (raw)"))
        #expect(output(&m, "info block -x") == "block: unsupported option -x\r\n")
        #expect(output(&m, "info block nothere") == "")
        #expect(output(&m, "info foo") == "unknown command: 'info foo'\r\n")
        #expect(output(&m, "info mtree") == "unknown command: 'info mtree'\r\n", "the target has no such view")
        target.state.withLock { $0.viewReplies["info mtree"] = "address-space: memory\n" }
        #expect(output(&m, "  info   mtree -f  ") == "address-space: memory\r\n", "QEMU's options, one view")
        #expect(output(&m, "info mtree -x") == "mtree: unsupported option -x\r\n")
        #expect(output(&m, "info registers") == " pc       0000000080000000\r\n cpu 0\r\n")
        #expect(output(&m, "info registers -a") == " pc       0000000080000000\r\n cpu 0\r\n")
        #expect(output(&m, "info registers -b") == "registers: unsupported option -b\r\n")
        #expect(output(&m, "info registers all") == "registers: extraneous characters at the end of line\r\n")
        #expect(output(&m, "info qtree now")
            == "qtree: extraneous characters at the end of line\r\nTry \"help info qtree\" for more information\r\n")
        #expect(target.views == ["info mtree @0", "info mtree @0", "info registers @0", "info registers -a @0"],
                "the typed views, and none for a line with a syntax error")
        #expect(target.calls.isEmpty)
    }

    @Test func cpuSelectsTheCurrentCPU() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        #expect(output(&m, "cpu 1") == "")
        #expect(m.currentCPU == 1)
        #expect(output(&m, "info cpus") == "  CPU #0: thread_id=4242\r\n* CPU #1: thread_id=4243\r\n")
        #expect(output(&m, "info registers") == " pc       0000000080000000\r\n cpu 1\r\n")
        #expect(output(&m, "cpu 2-2") == "")
        #expect(m.currentCPU == 0)
        #expect(output(&m, "cpu 7") == "invalid CPU index\r\n")
        #expect(output(&m, "cpu") == "unexpected end of expression\r\n")
        #expect(output(&m, "cpu 1 2") == "cpu: extraneous characters at the end of line\r\nTry \"help cpu\" for more information\r\n")
        #expect(output(&m, "cpu 0x100000000") == "'cpu' has failed: integer is for 32-bit values\r\n")
    }

    @Test func actions() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        for line in ["stop", "cont", "c", "system_reset", "system_powerdown", "s"] {
            #expect(output(&m, line) == "", "\(line)")
        }
        #expect(target.calls == ["stop", "cont", "cont", "system_reset", "system_powerdown", "stop"])
        // QEMU 7.2's texts: the command's table name, then a pointer to the help of what was typed.
        #expect(output(&m, "stop now") == "stop|s: extraneous characters at the end of line\r\nTry \"help stop\" for more information\r\n")
        #expect(output(&m, "c 1") == "cont|c: extraneous characters at the end of line\r\nTry \"help c\" for more information\r\n")
        #expect(target.calls.count == 6)
        #expect(m.execute("quit").quitRequested)
        #expect(m.execute("q").quitRequested)
        #expect(m.execute("q").bytes.isEmpty)
        #expect(!m.execute("info status").quitRequested)
    }

    @Test func unknownCommandsNeverReachTheMachine() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        #expect(output(&m, "foo bar") == "unknown command: 'foo'\r\n")
        #expect(output(&m, "gdbserver tcp::1234") == "unknown command: 'gdbserver'\r\n")
        #expect(target.views.isEmpty, "no command line crosses into the machine")
    }

    @Test func help() {
        var m = HumanMonitor(target: FakeTarget())
        let all = output(&m, "help")
        #expect(all.hasPrefix("balloon target -- request VM to change its memory allocation (in MB)\r\ncont|c  -- resume emulation\r\ncpu index -- set the default CPU\r\ndelvm tag -- delete a VM snapshot from its tag\r\nhelp|? [cmd] -- show the help\r\n"))
        #expect(all.contains("migrate [-d] uri -- migrate to URI (using -d to not wait for completion)\r\n"))
        #expect(all.contains("x /fmt addr -- virtual memory dump starting at 'addr'\r\n"))
        #expect(all.hasSuffix("xp /fmt addr -- physical memory dump starting at 'addr'\r\n"))
        #expect(output(&m, "?") == all)
        #expect(output(&m, "help stop") == "stop|s  -- stop emulation\r\n")
        #expect(output(&m, "help info status") == "info status  -- show the current VM status (running|paused)\r\n")
        #expect(output(&m, "help info nope") == "unknown command: 'info nope'\r\n")
        #expect(output(&m, "help nope") == "unknown command: 'nope'\r\n")
        let info = output(&m, "info")
        #expect(info == output(&m, "help info"))
        #expect(info.hasPrefix("info balloon  -- show balloon information\r\ninfo block [-n] [-v] [device] -- show info of one block device"))
        #expect(info.contains("info registers [-a] -- show the cpu registers"))
    }

    @Test func memoryDumpSyntaxIsCheckedAndSpelledOutForTheTarget() {
        let target = FakeTarget()
        var m = HumanMonitor(target: target)
        #expect(output(&m, "x /4xw 0x80000000") == "memory for x /4xw 0x80000000\r\n")
        #expect(output(&m, "xp 0x1000") == "memory for xp /1xw 0x1000\r\n", "defaults: x, 4 bytes")
        #expect(output(&m, "x /b 0x10") == "memory for x /1xb 0x10\r\n")
        #expect(output(&m, "x 0x20 + 8") == "memory for x /1xb 0x20 + 8\r\n", "the size sticks")
        #expect(output(&m, "x /3d 0") == "memory for x /3db 0\r\n")
        #expect(output(&m, "xp /2gc ($sp - 16) * 2") == "memory for xp /2cg ($sp - 16) * 2\r\n")
        #expect(output(&m, "x/2i $pc") == "memory for x /2i $pc\r\n")
        #expect(output(&m, "x $pc") == "memory for x /1i $pc\r\n", "the format sticks; 'i' needs no size")
        #expect(output(&m, "x /3q 0") == "invalid char in format: 'q'\r\n")
        #expect(output(&m, "x /s 0") == "invalid char in format: 's'\r\n")
        #expect(output(&m, "x /x") == "unexpected end of expression\r\n")
        #expect(output(&m, "x /x 0x10 junk") == "x: extraneous characters at the end of line\r\n")
        #expect(output(&m, "xp /x 0x10 )") == "xp: extraneous characters at the end of line\r\n")
        #expect(output(&m, "x /x (1") == "')' expected\r\n")
        #expect(output(&m, "x /x 99999999999999999999") == "number too large\r\n")
        #expect(output(&m, "x /x @") == "invalid char '@' in expression\r\n")
        #expect(output(&m, "x /x 'a") == "missing terminating ' character\r\n")
        #expect(target.views == [
            "x /4xw 0x80000000 @0", "xp /1xw 0x1000 @0", "x /1xb 0x10 @0", "x /1xb 0x20 + 8 @0", "x /3db 0 @0",
            "xp /2cg ($sp - 16) * 2 @0", "x /2i $pc @0", "x /1i $pc @0",
        ])
    }

    @Test func memoryDumpParsesStandalone() throws {
        var defaults = MemoryDump.Defaults()
        let d = try MemoryDump.parse(line: "x/10ub 0x1000+$a0", defaults: &defaults)
        #expect(d.count == 10)
        #expect(d.format == "u")
        #expect(d.size == 1)
        #expect(!d.physical)
        #expect(d.address.text == "0x1000+$a0")
        #expect(try d.address.evaluate { $0 == "a0" ? 0x20 : nil } == 0x1020)
        #expect(defaults == { var x = MemoryDump.Defaults(); x.format = "u"; x.size = 1; return x }())
        let i = try MemoryDump.parse(line: "xp /i 0", defaults: &defaults)
        #expect(i.size == nil)
        #expect(i.physical)
        #expect(i.canonicalLine == "xp /1i 0")
        #expect(defaults.size == 1, "'i' leaves the size alone")
    }

    @Test func expressions() throws {
        func eval(_ text: String) throws(MonitorSyntaxError) -> UInt64 {
            try MonitorExpression.parse(text).evaluate { name in ["pc": 0x8000_0000, "sp": 0x100][name] }
        }
        #expect(try eval("1+2*3") == 7)
        #expect(try eval("(1+2)*3") == 9)
        #expect(try eval("1+2&3") == 3, "& binds tighter than + in QEMU's monitor")
        #expect(try eval("-1") == UInt64.max)
        #expect(try eval("~0") == UInt64.max)
        #expect(try eval("$pc + 4") == 0x8000_0004)
        #expect(try eval("$sp/2 % 3") == 2)
        #expect(try eval("-7 / 2") == UInt64(bitPattern: -3), "signed division")
        #expect(try eval("'A'") == 65)
        #expect(try eval("010") == 8)
        #expect(try eval("0x1F | 0X20 ^ 1") == 0x3E)
        #expect(try eval("18446744073709551615") == UInt64.max)
        #expect(throws: MonitorSyntaxError("unknown register")) { try eval("$nope") }
        #expect(throws: MonitorSyntaxError("division by zero")) { try eval("1/0") }
        #expect(throws: MonitorSyntaxError("invalid char '9' in expression")) { try eval("09") }
        #expect(throws: MonitorSyntaxError("expression too deeply nested")) { try eval(String(repeating: "(", count: 10_000)) }
        #expect(throws: MonitorSyntaxError("unexpected end of expression")) { try eval("1 +") }
    }

    @Test func memoryDumpRendersLikeQEMU() throws {
        var defaults = MemoryDump.Defaults()
        let memory = (0..<64).map { UInt8($0) }
        func read(_ address: UInt64, _ count: Int) -> [UInt8]? {
            let start = Int(address & 0xFF)
            return start + count <= memory.count ? Array(memory[start..<(start + count)]) : nil
        }
        func dump(_ line: String, at address: UInt64 = 0x8000_0000) throws(MonitorSyntaxError) -> String {
            try MemoryDump.parse(line: line, defaults: &defaults).render(at: address, read: read)
        }
        #expect(try dump("x /4xw 0") == "0000000080000000: 0x03020100 0x07060504 0x0b0a0908 0x0f0e0d0c\n")
        #expect(try dump("x /6xw 0") == """
            0000000080000000: 0x03020100 0x07060504 0x0b0a0908 0x0f0e0d0c
            0000000080000010: 0x13121110 0x17161514

            """)
        #expect(try dump("x /10xb 0") == """
            0000000080000000: 0x00 0x01 0x02 0x03 0x04 0x05 0x06 0x07
            0000000080000008: 0x08 0x09

            """)
        #expect(try dump("x /2xg 0") == "0000000080000000: 0x0706050403020100 0x0f0e0d0c0b0a0908\n")
        #expect(try dump("x /3uh 0") == "0000000080000000:   256   770  1284\n")
        #expect(try dump("x /2ob 8", at: 0x8000_0008) == "0000000080000008: 010 011\n")
        #expect(try dump("x /1ob 0", at: 0x8000_0000) == "0000000080000000:   0\n")
        #expect(try dump("x /2c 9", at: 0x8000_0009) == "0000000080000009: '\\x09' '\\n'\n")
        #expect(try dump("x /2d 0") == "0000000080000000:   0   1\n", "byte units: width 3")
        #expect(try dump("x /4xw 0", at: 0x8000_0038) == "0000000080000038: Cannot access memory\n")
        #expect(try dump("x /6xw 0", at: 0x8000_0030) == """
            0000000080000030: 0x33323130 0x37363534 0x3b3a3938 0x3f3e3d3c
            0000000080000040: Cannot access memory

            """, "the dump stops at the first unreadable line")
        #expect(MemoryDump.printable(UInt8(ascii: "'")) == "'\\''")
        #expect(MemoryDump.printable(0x7F) == "'\\x7f'")
        #expect(MemoryDump.printable(UInt8(ascii: "\r")) == "'\\r'")

        let negative = MemoryDump(physical: true, count: 1, format: "d", size: 8, address: try MonitorExpression.parse("0"))
        #expect(negative.render(at: 0) { _, n in [UInt8](repeating: 0xFF, count: n) }
            == "0000000000000000: " + String(repeating: " ", count: 18) + "-1\n", "20 columns for 64-bit decimals")
        let words = MemoryDump(physical: true, count: 1, format: "d", size: 4, address: try MonitorExpression.parse("0"))
        #expect(words.render(at: 0) { _, n in [UInt8](repeating: 0xFF, count: n) } == "0000000000000000: 4294967295\n")
    }
}

extension String {
    var crlf: String { replacingOccurrences(of: "\n", with: "\r\n") }
    func repeated(_ n: Int) -> String { String(repeating: self, count: n) }

    func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.range(of: target) {
            out += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }

    func range(of target: String) -> Range<String.Index>? { Substring(self).range(of: target) }

    func components(separatedBy separator: String) -> [String] {
        var parts: [String] = []
        var rest = Substring(self)
        while let r = rest.range(of: separator) {
            parts.append(String(rest[..<r.lowerBound]))
            rest = rest[r.upperBound...]
        }
        parts.append(String(rest))
        return parts
    }
}

extension Substring {
    func range(of target: String) -> Range<String.Index>? {
        firstRange(of: target)
    }
}
