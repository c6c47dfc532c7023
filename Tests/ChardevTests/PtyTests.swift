import Glibc
import SystemSupport
import Testing

@testable import Chardev

@Suite struct PtyTests {
    @Test func exchangesBytesWithTheSlave() throws {
        try withLoop { loop in
            let reports = Reports()
            let pty = try PtyBackend(loop: loop, id: "serial0", pollMilliseconds: 20, report: reports.sink)
            defer { pty.close() }
            #expect(pty.path.hasPrefix("/dev/pts/"))
            #expect(pty.label == "pty:\(pty.path)")
            #expect(reports.all == ["char device redirected to \(pty.path) (label serial0)"])

            let fe = RecordingFrontend()
            pty.attach(fe)
            guard let slave = openSlave(pty.path) else { Issue.record("cannot open \(pty.path)"); return }
            #expect(eventually { pty.isConnected })

            // Raw: bytes pass unchanged both ways (no \n -> \r\n, no echo, no ^C handling).
            pty.write(Array("guest says hi\n\u{3}".utf8))
            #expect(slave.readText(count: 15) == "guest says hi\n\u{3}")
            slave.write("typed\r\u{3}")
            #expect(eventually { fe.received.count == 7 })
            #expect(fe.text == "typed\r\u{3}")
        }
    }

    @Test func survivesTheSlaveClosingAndReconnects() throws {
        try withLoop { loop in
            let pty = try PtyBackend(loop: loop, pollMilliseconds: 20, report: { _ in })
            defer { pty.close() }
            let fe = RecordingFrontend()
            pty.attach(fe)
            do {
                guard let slave = openSlave(pty.path) else { Issue.record("cannot open slave"); return }
                slave.write("one")
                #expect(eventually { fe.text == "one" })
            }  // slave closed: the master sees a hangup
            #expect(eventually { !pty.isConnected })
            pty.write(Array("lost while nobody listens".utf8))

            guard let again = openSlave(pty.path) else { Issue.record("cannot reopen slave"); return }
            #expect(eventually { pty.isConnected })
            pty.write(Array("two".utf8))
            #expect(again.readText(count: 3) == "two")
            again.write("three")
            #expect(eventually { fe.text == "onethree" })
        }
    }
}
