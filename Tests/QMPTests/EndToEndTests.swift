import Chardev
import Glibc
import SystemSupport
import TestSupport
import Testing

@testable import QMP

/// The monitors on a real unix-socket chardev, driven by real clients: socat, and QEMU's
/// own Python library qemu.qmp (DESIGN.md §8: interop tests run the real other side).
@Suite struct EndToEndTests {
    private func socket(_ loop: EventLoop, _ path: String, id: String) throws -> CharDevice {
        try CharDevice.open(try ChardevSpec.parse(chardev: "socket,id=\(id),path=\(path),server=on,wait=off"),
                            loop: loop, quit: {}, report: { _ in })
    }

    private func nowSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }

    /// Checks an event line: its name, data, and a wall-clock timestamp from about now.
    private func checkEvent(_ line: String, _ name: String, data: JSONValue? = nil) {
        guard let event = try? JSONParser.parse(line) else {
            Issue.record("not JSON: \(line)")
            return
        }
        #expect(event.objectValue?.keys == (data == nil ? ["timestamp", "event"] : ["timestamp", "event", "data"]))
        #expect(event["event"] == .string(name))
        #expect(event["data"] == data)
        let seconds = event["timestamp"]?["seconds"]?.int64Value ?? 0
        let micros = event["timestamp"]?["microseconds"]?.int64Value ?? -1
        #expect(abs(seconds - nowSeconds()) < 120, "wall clock")
        #expect((0..<1_000_000).contains(micros))
    }

    @Test(.enabled(if: Subprocess.hasSocat, "socat is not installed (scripts/setup installs it)"))
    func qmpScriptedThroughSocat() throws {
        let path = temporaryPath("qmp.sock")
        let target = FakeTarget()
        try withLoop { loop in
            let dev = try socket(loop, path, id: "qmp")
            defer { dev.close() }
            let server = QMPServer(backend: try dev.claim(for: "qmp"), target: target)
            defer { server.close() }
            let script = """
                {"execute": "qmp_capabilities"}
                {"execute": "query-status", "id": 1}
                {"execute": "stop", "id": 2}{"execute": "query-status", "id": 3}
                {"execute": "human-monitor-command", "arguments": {"command-line": "info status"}, "id": 4}
                { "execute" : "query-version" , "id" : "\u{e9}" }
                {"execute": "nope", "id": 5}
                [1, 2]
                {"execute": "quit", "id": 6}

                """
            let result = try Subprocess.run(["socat", "-t", "5", "-", "UNIX-CONNECT:\(path)"], input: Array(script.utf8))
            #expect(result.status == 0, "socat: \(result.errorOutput)")
            let lines = qmpLines(result.output)
            #expect(result.output.hasSuffix("\r\n"))
            guard lines.count == 12 else {
                Issue.record("expected 12 lines, got \(lines.count): \(result.output)")
                return
            }
            #expect(lines[0] == #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "swemu 0.1.0"}, "capabilities": ["oob"]}}"#)
            #expect(lines[1] == #"{"return": {}}"#)
            #expect(lines[2] == #"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}"#)
            checkEvent(lines[3], "STOP")
            #expect(lines[4] == #"{"return": {}, "id": 2}"#)
            #expect(lines[5] == #"{"return": {"status": "paused", "singlestep": false, "running": false}, "id": 3}"#)
            #expect(lines[6] == #"{"return": "VM status: paused\r\n", "id": 4}"#)
            #expect(lines[7] == #"{"return": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "swemu 0.1.0"}, "id": "\u00E9"}"#)
            #expect(lines[8] == #"{"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#)
            #expect(lines[9] == #"{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}"#)
            #expect(lines[10] == #"{"return": {}, "id": 6}"#)
            checkEvent(lines[11], "SHUTDOWN", data: ["guest": false, "reason": "host-qmp-quit"])
            #expect(target.calls == ["stop", "quit"])
        }
        #expect(access(path, F_OK) != 0, "the socket file is gone after close")
    }

    @Test(.enabled(if: Subprocess.hasSocat, "socat is not installed (scripts/setup installs it)"))
    func quitRepliesBeforeTheShutdownEvent() throws {
        let path = temporaryPath("quit.sock")
        let target = FakeTarget()
        try withLoop { loop in
            let dev = try socket(loop, path, id: "qmp")
            defer { dev.close() }
            let server = QMPServer(backend: try dev.claim(for: "qmp"), target: target)
            defer { server.close() }
            let client = try UnixClient(path)
            #expect(client.lines(1).count == 1)
            client.clear()
            client.send(#"{"execute": "qmp_capabilities"}{"execute": "quit", "id": "q"}"#)
            let lines = client.lines(3)
            #expect(lines.count == 3)
            #expect(lines.first == #"{"return": {}}"#)
            #expect(lines.dropFirst().first == #"{"return": {}, "id": "q"}"#)
            if lines.count == 3 { checkEvent(lines[2], "SHUTDOWN", data: ["guest": false, "reason": "host-qmp-quit"]) }
        }
    }

    @Test(.enabled(if: Subprocess.hasSocat, "socat is not installed (scripts/setup installs it)"))
    func humanMonitorThroughSocat() throws {
        let path = temporaryPath("hmp.sock")
        let target = FakeTarget()
        try withLoop { loop in
            let dev = try socket(loop, path, id: "mon")
            defer { dev.close() }
            let server = HumanMonitorServer(backend: try dev.claim(for: "monitor"), target: target)
            defer { server.close() }
            let script = "info status\nstop\ninfo status\nx /2xg 0x1000\nx /2q 0\nbogus\nquit\n"
            let result = try Subprocess.run(["socat", "-t", "5", "-", "UNIX-CONNECT:\(path)"], input: Array(script.utf8))
            #expect(result.status == 0, "socat: \(result.errorOutput)")
            let out = result.output
            #expect(out.hasPrefix("swemu 0.1.0 monitor - type 'help' for more information\r\n(qemu) i\u{1B}[K\u{1B}[Din\u{1B}[K"))
            // Each command's output follows its echoed line; strip the echo to compare.
            let replies = out.components(separatedBy: "(qemu) ").dropFirst().map { chunk -> String in
                guard let end = chunk.range(of: "\r\n") else { return "<unterminated: \(chunk.debugDescription)>" }
                return String(chunk[end.upperBound...])
            }
            #expect(replies == [
                "VM status: running\r\n", "", "VM status: paused\r\n", "memory for x /2xg 0x1000\r\n",
                "invalid char in format: 'q'\r\n", "unknown command: 'bogus'\r\n", "",
            ])
            #expect(target.calls == ["stop", "quit"])
        }
    }

    @Test func twoMonitorsServeTwoClientsAtOnce() throws {
        let first = temporaryPath("a.sock")
        let second = temporaryPath("b.sock")
        let target = FakeTarget()
        try withLoop { loop in
            let devA = try socket(loop, first, id: "qmpA")
            let devB = try socket(loop, second, id: "qmpB")
            defer {
                devA.close()
                devB.close()
            }
            let a = QMPServer(backend: try devA.claim(for: "qmp"), target: target)
            let b = QMPServer(backend: try devB.claim(for: "qmp"), target: target)
            defer {
                a.close()
                b.close()
            }
            let clientA = try UnixClient(first)
            let clientB = try UnixClient(second)
            #expect(clientA.lines(1).count == 1 && clientB.lines(1).count == 1)
            clientA.send(#"{"execute": "qmp_capabilities"}"#)
            clientB.send(#"{"execute": "qmp_capabilities"}"#)
            #expect(clientA.lines(2).count == 2 && clientB.lines(2).count == 2)
            clientA.send(#"{"execute": "stop", "id": "from-a"}"#)
            // A's STOP reaches B too; A also gets its reply.
            let linesA = clientA.lines(4)
            let linesB = clientB.lines(3)
            #expect(linesA.count == 4 && linesB.count == 3)
            if linesA.count == 4 {
                checkEvent(linesA[2], "STOP")
                #expect(linesA[3] == #"{"return": {}, "id": "from-a"}"#)
            }
            if linesB.count == 3 { checkEvent(linesB[2], "STOP") }
            // B leaves and comes back: a new greeting, A is not disturbed.
            clientB.close()
            #expect(eventually { !b.hasSession })
            let again = try UnixClient(second)
            #expect(again.lines(1).first?.hasPrefix(#"{"QMP": "#) == true)
            clientA.send(#"{"execute": "cont", "id": 2}"#)
            #expect(clientA.lines(6).last == #"{"return": {}, "id": 2}"#)
        }
    }

    @Test(.enabled(if: Python.missing("qemu.qmp") == nil, "\(Python.missing("qemu.qmp") ?? "")"))
    func qemuQMPClientLibrary() throws {
        let path = temporaryPath("py.sock")
        let target = FakeTarget()
        let script = String(#filePath.dropLast("EndToEndTests.swift".count)) + "qmp_client.py"
        try withLoop { loop in
            let dev = try socket(loop, path, id: "qmp")
            defer { dev.close() }
            let server = QMPServer(backend: try dev.claim(for: "qmp"), target: target)
            defer { server.close() }
            let result = try Subprocess.run([Subprocess.python, script, path], timeout: 120)
            try #require(result.status == 0, "qmp_client.py: \(result.errorOutput)")
            let report = try JSONParser.parse(Array(result.stdout))
            #expect(report["greeting"] == ["QMP": ["version": ["qemu": ["micro": 0, "minor": 2, "major": 7], "package": "swemu 0.1.0"],
                                                   "capabilities": ["oob"]]])
            #expect(report["status"] == ["status": "running", "singlestep": false, "running": true])
            #expect(report["version"]?["package"] == "swemu 0.1.0")
            #expect(report["name"] == ["name": "guest0"])
            #expect(report["cpus"]?.arrayValue?.count == 2)
            #expect(report["block"]?.arrayValue?.first?["inserted"]?["drv"] == "raw")
            #expect(report["commands"]?.arrayValue?.count == QMPCommands.all.count)
            #expect(report["hmp"] == "VM status: running\r\n")
            #expect(report["unknown"] == ["class": "CommandNotFound", "desc": "The command no-such-command has not been found"])
            #expect(report["badarg"] == ["class": "GenericError", "desc": "Invalid parameter type for 'command-line', expected: string"])
            #expect(report["stop_event"]?["event"] == "STOP")
            #expect(report["stop_event"]?["timestamp"]?["seconds"]?.int64Value.map { abs($0 - nowSeconds()) < 120 } == true)
            #expect(report["paused"]?["status"] == "paused")
            #expect(report["resume_event"]?["event"] == "RESUME")
            #expect(report["shutdown_event"]?["data"] == ["guest": false, "reason": "host-qmp-quit"])
            #expect(target.calls == ["stop", "cont", "quit"])
        }
    }
}
