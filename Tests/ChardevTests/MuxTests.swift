import Synchronization
import SystemSupport
import Testing

@testable import Chardev

private final class Counter: Sendable {
    private let value = Mutex(0)
    func bump() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

private final class Events: Sendable {
    private let list = Mutex<[String]>([])
    func add(_ e: String) { list.withLock { $0.append(e) } }
    var all: [String] { list.withLock { $0 } }
}

private final class FakeClock: Sendable {
    private let ms = Mutex<UInt64>(1_000_000)
    func advance(_ by: UInt64) { ms.withLock { $0 += by } }
    var now: UInt64 { ms.withLock { $0 } }
}

@Suite struct MuxTests {
    private struct Rig {
        let backend: FakeBackend
        let mux: CharMux
        let serial: CharMux.Port
        let monitor: CharMux.Port
        let serialFE: RecordingFrontend
        let monitorFE: RecordingFrontend
        let quits: Counter
        let breaks: Counter
        let events: Events
    }

    private func rig(_ loop: EventLoop, commit: (@Sendable () -> Void)? = nil, clock: FakeClock? = nil) -> Rig {
        let backend = FakeBackend(loop: loop)
        let quits = Counter()
        let breaks = Counter()
        let events = Events()
        let now: @Sendable () -> UInt64
        if let clock { now = { clock.now } } else { now = CharMux.monotonicMilliseconds }
        let mux = CharMux(backend: backend, loop: loop, quit: { quits.bump() }, commit: commit, clock: now)
        let serial = mux.makePort(label: "serial", onBreak: { breaks.bump() }, onFocus: { events.add("serial \($0)") })
        let monitor = mux.makePort(label: "monitor", onFocus: { events.add("monitor \($0)") })
        let r = Rig(backend: backend, mux: mux, serial: serial, monitor: monitor, serialFE: RecordingFrontend(),
                    monitorFE: RecordingFrontend(), quits: quits, breaks: breaks, events: events)
        serial.attach(r.serialFE)
        monitor.attach(r.monitorFE)
        return r
    }

    @Test func inputGoesToTheFocusedPortAndCtrlACSwitches() throws {
        try withLoop { loop in
            let r = rig(loop)
            #expect(r.mux.focus == 0)
            r.backend.inject("ls\r")
            #expect(eventually { r.serialFE.text == "ls\r" })
            r.backend.inject("\u{1}cinfo\r")
            #expect(eventually { r.monitorFE.text == "info\r" })
            #expect(r.mux.focus == 1)
            #expect(r.serialFE.text == "ls\r")
            #expect(r.backend.output.isEmpty, "switching focus prints nothing")
            #expect(r.events.all == ["serial false", "monitor true"])
            r.backend.inject("\u{1}")  // escape split across reads
            r.backend.inject("cback")
            #expect(eventually { r.serialFE.text == "ls\rback" })
            #expect(r.mux.focus == 0)
        }
    }

    @Test func outputFromEveryPortReachesTheBackend() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.serial.write(Array("console ".utf8))
            r.monitor.write(Array("(qemu) ".utf8))
            #expect(r.backend.outputText == "console (qemu) ")
            #expect(r.serial.label == "serial")
        }
    }

    @Test func doubleEscapeSendsALiteralCtrlA() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("a\u{1}\u{1}b")
            #expect(eventually { r.serialFE.received == [0x61, 0x01, 0x62] })
            #expect(r.mux.focus == 0)
        }
    }

    @Test func ctrlAXQuits() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("\u{1}x")
            #expect(eventually { r.quits.count == 1 })
            #expect(r.backend.outputText == "swemu: Terminated\r\n")
            #expect(r.serialFE.received.isEmpty)
        }
    }

    @Test func ctrlAHPrintsTheHelp() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("\u{1}h")
            let expected = "\r\n"
                + "C-a h    print this help\r\n"
                + "C-a x    exit emulator\r\n"
                + "C-a s    save disk data back to file (if -snapshot)\r\n"
                + "C-a t    toggle console timestamps\r\n"
                + "C-a b    send break (magic sysrq)\r\n"
                + "C-a c    switch between console and monitor\r\n"
                + "C-a C-a  sends C-a\r\n"
            #expect(eventually { r.backend.outputText == expected })
            #expect(CharMux.helpText(escape: 0x02).contains("C-b C-b  sends C-b\r\n"))
            r.backend.clearOutput()
            r.backend.inject("\u{1}?")
            #expect(eventually { r.backend.outputText == expected })
        }
    }

    @Test func ctrlABSendsBreakToTheFocusedPort() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("\u{1}b")
            #expect(eventually { r.breaks.count == 1 })
            r.backend.inject("\u{1}c\u{1}b.")  // the monitor has no break handler
            #expect(eventually { r.monitorFE.text == "." })
            #expect(r.breaks.count == 1)
        }
    }

    @Test func ctrlASCommitsOrSaysItCannot() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("\u{1}s")
            #expect(eventually { r.backend.outputText == "swemu: saving disk data (-snapshot commit) is not supported yet\r\n" })
            let commits = Counter()
            let r2 = rig(loop, commit: { commits.bump() })
            r2.backend.inject("\u{1}s")
            #expect(eventually { commits.count == 1 })
            #expect(r2.backend.output.isEmpty)
        }
    }

    @Test func unknownEscapeIsDropped() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.backend.inject("1\u{1}z2")
            #expect(eventually { r.serialFE.text == "12" })
            #expect(r.backend.output.isEmpty)
        }
    }

    @Test func timestampsToggle() throws {
        try withLoop { loop in
            let clock = FakeClock()
            let r = rig(loop, clock: clock)
            r.backend.inject("\u{1}t")
            #expect(eventually { r.mux.timestampsEnabled })
            // As QEMU: the line under way when stamps start is not stamped; the clock starts
            // at the first stamp.
            r.serial.write(Array("partial\nfirst".utf8))
            clock.advance(3_723_456)  // 1h 2m 3.456s
            r.serial.write(Array("\nsecond\n".utf8))
            #expect(r.backend.outputText == "partial\n[00:00:00.000] first\n[01:02:03.456] second\n")
            r.backend.clearOutput()
            r.backend.inject("\u{1}t")
            #expect(eventually { !r.mux.timestampsEnabled })
            r.serial.write(Array("plain\n".utf8))
            #expect(r.backend.outputText == "plain\n")
        }
    }

    @Test func stampFormat() {
        #expect(String(decoding: CharMux.stamp(milliseconds: 0), as: UTF8.self) == "[00:00:00.000] ")
        #expect(String(decoding: CharMux.stamp(milliseconds: 59_999), as: UTF8.self) == "[00:00:59.999] ")
        #expect(String(decoding: CharMux.stamp(milliseconds: 100 * 3_600_000 + 5), as: UTF8.self) == "[100:00:00.005] ")
    }

    @Test func flowControlThroughTheMuxLosesNothing() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.serialFE.setCapacity(0)
            let payload = (0..<300).map { UInt8(0x20 + $0 % 90) }
            r.backend.inject(payload)
            // The mux buffers a little, then holds its backend back.
            #expect(eventually { r.backend.pendingInputCount == payload.count - CharMux.portBufferSize })
            #expect(r.serialFE.received.isEmpty)
            r.serialFE.setCapacity(7)
            r.serial.acceptInput()
            #expect(eventually { r.serialFE.received.count >= 7 })
            r.serialFE.setCapacity(1000)
            r.serial.acceptInput()
            #expect(eventually { r.serialFE.received == payload })
            #expect(r.serialFE.overruns == 0)
        }
    }

    @Test func escapesWorkWhileTheFocusedGuestIsNotReading() throws {
        try withLoop { loop in
            let r = rig(loop)
            r.serialFE.setCapacity(0)
            r.backend.inject("ab\u{1}ccd")
            #expect(eventually { r.monitorFE.text == "cd" })
            #expect(r.serialFE.received.isEmpty)
            r.serialFE.setCapacity(10)
            r.serial.acceptInput()
            #expect(eventually { r.serialFE.text == "ab" })
        }
    }

    @Test func monitorMuxOverARealSocket() throws {
        let path = temporaryPath("mon.sock")
        try withLoop { loop in
            guard case .new(let spec, monitor: true) = try ChardevSpec.parse(shortForm: "mon:unix:\(path),server=on,wait=off") else {
                Issue.record("not a monitor mux"); return
            }
            let quits = Counter()
            let dev = try CharDevice.open(spec, loop: loop, quit: { quits.bump() })
            defer { dev.close() }
            let serial = try dev.claim(for: "serial0")
            let monitor = try dev.claim(for: "monitor")
            let serialFE = RecordingFrontend()
            let monitorFE = RecordingFrontend()
            serial.attach(serialFE)
            monitor.attach(monitorFE)
            let client = try connectClient(.unix(path: path))
            #expect(eventually { (dev.driver as? SocketBackend)?.isConnected == true })
            client.write("root\r\u{1}cinfo\r\u{1}x")
            #expect(eventually { quits.count == 1 })
            #expect(serialFE.text == "root\r")
            #expect(monitorFE.text == "info\r")
            serial.write(Array("login: ".utf8))
            monitor.write(Array("(qemu) ".utf8))
            #expect(client.readText(count: 33) == "swemu: Terminated\r\nlogin: (qemu) ")
        }
    }
}
