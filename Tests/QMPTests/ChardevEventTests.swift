import Chardev
import DeviceModel
import Glibc
import SystemSupport
import Testing

/// The connection events the chardevs deliver to their frontend (QEMU's CHR_EVENT_OPENED /
/// CLOSED), which the monitors greet and forget clients by.
@Suite struct ChardevEventTests {
    private func socketDevice(_ loop: EventLoop, _ path: String, mux: Bool = false) throws -> CharDevice {
        try CharDevice.open(try ChardevSpec.parse(chardev: "socket,id=s0,path=\(path),server=on,wait=off\(mux ? ",mux=on" : "")"),
                            loop: loop, quit: {}, report: { _ in })
    }

    @Test func socketClientsOpenAndClose() throws {
        let path = temporaryPath("ev.sock")
        try withLoop { loop in
            let dev = try socketDevice(loop, path)
            defer { dev.close() }
            let log = EventLog()
            try dev.claim(for: "test").attach(log)
            #expect(log.text == "", "no client yet")
            let first = try UnixClient(path)
            #expect(eventually { log.text == "<opened>" })
            first.send("hi")
            #expect(eventually { log.text == "<opened>hi" })
            first.close()
            #expect(eventually { log.text == "<opened>hi<closed>" })
            let second = try UnixClient(path)
            second.send("again")
            #expect(eventually { log.text == "<opened>hi<closed><opened>again" }, "opened comes before the input")
            dev.close()
            #expect(log.text == "<opened>hi<closed><opened>again<closed>", "closing the chardev ends the connection")
        }
    }

    @Test func attachingToAConnectedSocketOpensAtOnce() throws {
        let path = temporaryPath("late.sock")
        try withLoop { loop in
            let dev = try socketDevice(loop, path)
            defer { dev.close() }
            let client = try UnixClient(path)
            #expect(eventually { (dev.driver as? SocketBackend)?.isConnected == true })
            let log = EventLog()
            try dev.claim(for: "test").attach(log)
            #expect(log.text == "<opened>", "QEMU's set_handlers: an open backend says so at once")
            client.send("x")
            #expect(eventually { log.text == "<opened>x" })
        }
    }

    @Test func stdioOpensAtAttachAndClosesAtEndOfInput() throws {
        var input: [Int32] = [0, 0]
        var output: [Int32] = [0, 0]
        #expect(pipe(&input) == 0 && pipe(&output) == 0)
        defer { [input[0], output[0], output[1]].forEach { close($0) } }
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: input[0], output: output[1], signal: false, rawMode: false)
            defer { stdio.close() }
            let log = EventLog()
            stdio.attach(log)
            #expect(log.text == "<opened>")
            _ = write(input[1], "ab", 2)
            #expect(eventually { log.text == "<opened>ab" })
            close(input[1])
            #expect(eventually { log.text == "<opened>ab<closed>" })
        }
    }

    @Test func fileAndNullOpenAtAttach() throws {
        let path = temporaryPath("out.log")
        defer { unlink(path) }
        let file = try FileBackend(path: path)
        defer { file.close() }
        let log = EventLog()
        file.attach(log)
        #expect(log.text == "<opened>")
        let nullLog = EventLog()
        NullBackend().attach(nullLog)
        #expect(nullLog.text == "<opened>")
    }

    @Test func muxPortsAllHearTheBackend() throws {
        let path = temporaryPath("mux.sock")
        try withLoop { loop in
            let dev = try socketDevice(loop, path, mux: true)
            defer { dev.close() }
            let serial = EventLog()
            let monitor = EventLog()
            try dev.claim(for: "serial0").attach(serial)
            try dev.claim(for: "monitor").attach(monitor)
            let client = try UnixClient(path)
            #expect(eventually { serial.text == "<opened>" && monitor.text == "<opened>" }, "focused or not")
            client.send("ls")
            #expect(eventually { serial.text == "<opened>ls" })
            let late = EventLog()
            try dev.claim(for: "late").attach(late)
            #expect(late.text == "<opened>")
            client.close()
            #expect(eventually { serial.text.hasSuffix("<closed>") && monitor.text == "<opened><closed>" && late.text == "<opened><closed>" })
        }
    }

    @Test func muxOverStdioOpensEveryPort() throws {
        var input: [Int32] = [0, 0]
        var output: [Int32] = [0, 0]
        #expect(pipe(&input) == 0 && pipe(&output) == 0)
        defer { [input[0], input[1], output[0], output[1]].forEach { close($0) } }
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: input[0], output: output[1], signal: false, rawMode: false)
            defer { stdio.close() }
            let mux = CharMux(backend: stdio, loop: loop, quit: {})
            defer { mux.close() }
            let first = EventLog()
            let second = EventLog()
            mux.makePort(label: "serial").attach(first)
            mux.makePort(label: "monitor").attach(second)
            #expect(first.text == "<opened>" && second.text == "<opened>")
        }
    }

    @Test func ptyClosesOnHangupAndOpensWhenTheSlaveIsBack() throws {
        try withLoop { loop in
            let pty = try PtyBackend(loop: loop, pollMilliseconds: 20, report: { _ in })
            defer { pty.close() }
            let log = EventLog()
            pty.attach(log)
            // Linux reports no hangup on a master whose slave was never opened, so a new pty
            // counts as connected (as in QEMU, output waits in the kernel for the terminal).
            #expect(log.text == "<opened>")
            var slave = open(pty.path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
            #expect(slave >= 0)
            _ = write(slave, "k", 1)
            #expect(eventually { log.text == "<opened>k" })
            close(slave)
            #expect(eventually { log.text == "<opened>k<closed>" })
            slave = open(pty.path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
            #expect(eventually { log.text == "<opened>k<closed><opened>" })
            close(slave)
            #expect(eventually { log.text == "<opened>k<closed><opened><closed>" })
        }
    }
}
