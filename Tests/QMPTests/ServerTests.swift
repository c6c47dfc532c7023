import DeviceModel
import Synchronization
import SystemSupport
import Testing

@testable import QMP

@Suite struct QMPServerTests {
    private let greeting =
        #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "swemu 0.1.0"}, "capabilities": ["oob"]}}"#
    private let negotiate = #"{"execute": "qmp_capabilities"}"#
    private let ts = #"{"timestamp": {"seconds": 1700000000, "microseconds": 123456}, "#

    private func rig() -> (FakeBackend, FakeTarget, QMPServer) {
        let backend = FakeBackend()
        let target = FakeTarget()
        let server = QMPServer(backend: backend, target: target, clock: { fixedTime })
        return (backend, target, server)
    }

    @Test func eachClientGetsAGreetingAndAFreshSession() {
        let (backend, target, server) = rig()
        #expect(backend.frontend === server)
        #expect(backend.output.isEmpty, "no client, no greeting")
        backend.type(negotiate)
        #expect(backend.output.isEmpty, "input without a client is dropped")

        backend.connect()
        #expect(qmpLines(backend.take()) == [greeting])
        target.emit(.powerdown)
        #expect(backend.output.isEmpty, "no events before negotiation")
        backend.type(negotiate)
        #expect(qmpLines(backend.take()) == [#"{"return": {}}"#])
        #expect(server.isNegotiated)
        target.emit(.powerdown)
        #expect(qmpLines(backend.take()) == [ts + #""event": "POWERDOWN"}"#])

        backend.disconnect()
        #expect(!server.hasSession)
        target.emit(.stop)
        #expect(backend.output.isEmpty, "nobody to tell")

        backend.connect()
        #expect(qmpLines(backend.take()) == [greeting])
        backend.type(#"{"execute": "query-status"}"#)
        #expect(qmpLines(backend.take())
            == [#"{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}"#])
    }

    @Test func eventsOfACommandPrecedeItsReplyAsInQEMU() {
        let (backend, _, _) = rig()
        backend.connect()
        backend.type(negotiate)
        _ = backend.take()
        backend.type(#"{"execute": "stop", "id": 1}"#)
        #expect(qmpLines(backend.take()) == [ts + #""event": "STOP"}"#, #"{"return": {}, "id": 1}"#])
        backend.type(#"{"execute": "system_reset", "id": 2}"#)
        #expect(qmpLines(backend.take()) == [
            ts + #""event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#, #"{"return": {}, "id": 2}"#,
        ])
    }

    @Test func quitIsCarriedOutAfterItsReplyIsWritten() {
        let (backend, target, _) = rig()
        let seenAtQuit = Shared("")
        target.state.withLock { $0.duringQuit = { seenAtQuit.set(backend.text) } }
        backend.connect()
        backend.type(negotiate)
        _ = backend.take()
        backend.type(#"{"execute": "quit", "id": "bye"}"#)
        #expect(seenAtQuit.value == #"{"return": {}, "id": "bye"}"# + "\r\n")
        #expect(qmpLines(backend.take()) == [
            #"{"return": {}, "id": "bye"}"#, ts + #""event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#,
        ])
        #expect(target.calls == ["quit"])
    }

    @Test func aClientThatLeavesMidCommandLosesOnlyItsReply() {
        let (backend, target, server) = rig()
        // While `stop` runs, the client goes away and a new one connects.
        target.state.withLock { $0.duringStop = { backend.disconnect(); backend.connect() } }
        backend.connect()
        _ = backend.take()
        backend.type(negotiate + #"{"execute": "stop", "id": 1}"#
            + #"{"execute": "human-monitor-command", "arguments": {"command-line": "info registers"}}"#)
        let out = qmpLines(backend.take())
        #expect(out == [#"{"return": {}}"#, greeting], "the old client's reply is dropped, and the rest of its input")
        #expect(target.views.isEmpty)
        #expect(target.calls == ["stop"], "the command still completed")
        #expect(!server.isNegotiated, "the new client starts unnegotiated")
        target.state.withLock { $0.duringStop = nil }
        backend.type(negotiate + #"{"execute": "query-status"}"#)
        #expect(qmpLines(backend.take()) == [#"{"return": {}}"#, #"{"return": {"status": "paused", "singlestep": false, "running": false}}"#])
    }

    @Test func eventsFromOtherThreadsNeverSplitAMessage() throws {
        let (backend, target, _) = rig()
        backend.connect()
        backend.type(negotiate)
        _ = backend.take()
        let done = Shared(0)
        for _ in 0..<4 {
            try HostThread.spawn(name: "vcpu-test") {
                for i in 0..<200 { target.emit(i % 2 == 0 ? .stop : .resume) }
                done.update { $0 += 1 }
            }
        }
        for i in 0..<200 { backend.type(#"{"execute": "query-name", "id": \#(i)}"#) }
        #expect(eventually { done.value == 4 })
        let lines = qmpLines(backend.take())
        #expect(lines.count == 1000)
        var replies: [Int64] = []
        var events = 0
        for line in lines {
            let message = try JSONParser.parse(line)
            if let id = message["id"]?.int64Value { replies.append(id) } else if message["event"] != nil { events += 1 }
        }
        #expect(replies == (0..<200).map(Int64.init), "replies in order")
        #expect(events == 800)
    }

    @Test func closeDetaches() {
        let (backend, target, server) = rig()
        backend.connect()
        server.close()
        #expect(backend.frontend == nil)
        target.emit(.stop)
        server.backendEvent(.opened)
        #expect(qmpLines(backend.take()) == [greeting], "only the greeting from before close")
        server.close()
    }
}

@Suite struct HumanMonitorServerTests {
    private let banner = "swemu 0.1.0 monitor - type 'help' for more information\r\n"

    @Test func bannerPromptAndCommandsPerClient() {
        let backend = FakeBackend()
        let target = FakeTarget()
        let server = HumanMonitorServer(backend: backend, target: target)
        #expect(backend.frontend === server)
        backend.connect()
        #expect(backend.take() == banner + "(qemu) ")
        backend.type("stop\r")
        #expect(backend.take().hasSuffix("\r\n(qemu) "))
        backend.type("info status\r")
        #expect(backend.take().hasSuffix("\r\nVM status: paused\r\n(qemu) "))
        backend.type("info sta")
        _ = backend.take()
        backend.disconnect()
        #expect(!server.hasSession)
        backend.type("tus\r")
        #expect(backend.take().isEmpty, "no client: input is dropped")
        backend.connect()
        #expect(backend.take() == banner + "(qemu) ", "a fresh line for the next client")
        backend.type("\r")
        #expect(backend.take() == "\r\n(qemu) ")
        #expect(target.calls == ["stop"])
    }

    @Test func quitAfterTheOutput() {
        let backend = FakeBackend()
        let target = FakeTarget()
        let seen = Shared("")
        target.state.withLock { $0.duringQuit = { seen.set(backend.text) } }
        _ = HumanMonitorServer(backend: backend, target: target)
        backend.connect()
        backend.type("q\r")
        #expect(seen.value.hasSuffix("q\u{1B}[K\r\n"), "no prompt after quit, as QEMU")
        #expect(target.calls == ["quit"])
    }

    @Test func anUnfocusedMuxPortHoldsItsOutput() {
        let backend = FakeBackend()
        let target = FakeTarget()
        let server = HumanMonitorServer(backend: backend, target: target, focused: false)
        backend.connect()
        #expect(backend.output.isEmpty, "the banner waits for the focus")
        server.setFocus(true)
        #expect(backend.take() == banner + "(qemu) ", "QEMU's MUX_IN: the held banner, then a prompt")
        backend.type("info name\r")
        #expect(backend.take().hasSuffix("\r\nguest0\r\n(qemu) "))
        backend.type("info")
        server.setFocus(false)
        #expect(backend.take() == "i\u{1B}[K\u{1B}[Din\u{1B}[K\u{1B}[D\u{1B}[Dinf\u{1B}[K\u{1B}[D\u{1B}[D\u{1B}[Dinfo\u{1B}[K\r\n",
                "MUX_OUT ends the line")
        server.setFocus(true)
        #expect(backend.take() == "(qemu) ", "MUX_IN: a fresh line")
        server.setFocus(true)
        #expect(backend.output.isEmpty, "no change, no prompt")
    }
}
