import CLinux
import Glibc
import SystemSupport
import Testing

@testable import Chardev

/// A pseudo-terminal pair standing in for the user's terminal: the backend gets the slave
/// (as swemu gets its tty on fd 0/1), the test plays the user on the master.
private struct FakeTerminal {
    let master: TestFD
    let slave: TestFD
    let path: String

    init() throws {
        var name = [CChar](repeating: 0, count: 128)
        let m = clx_open_pty(&name, name.count)
        guard m >= 0 else { throw SystemError(.syscall, "posix_openpt", errno: .current) }
        master = TestFD(m)
        path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let s = openSlave(path) else { throw SystemError(.syscall, "open \(path)", errno: .current) }
        slave = s
        // A cooked terminal, as a shell leaves it.
        var t = termiosOf(s.fd)
        t.c_lflag |= tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        t.c_iflag |= tcflag_t(ICRNL | IXON)
        t.c_oflag |= tcflag_t(OPOST | ONLCR)
        _ = tcsetattr(s.fd, TCSANOW, &t)
    }
}

private func same(_ a: termios, _ b: termios) -> Bool {
    a.c_iflag == b.c_iflag && a.c_oflag == b.c_oflag && a.c_lflag == b.c_lflag && a.c_cflag == b.c_cflag
}

/// Serialized: raw mode is per terminal, but the saved-settings table is process-wide, and
/// the fork test must not inherit another test's raw terminal.
@Suite(.serialized) struct StdioTests {
    @Test func terminalGoesRawAndComesBackOnClose() throws {
        let term = try FakeTerminal()
        let cooked = termiosOf(term.slave.fd)
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: term.slave.fd, output: term.slave.fd, signal: true)
            #expect(stdio.isRawTerminal)
            let raw = termiosOf(term.slave.fd)
            #expect(raw.c_lflag & tcflag_t(ICANON | ECHO | ECHONL | IEXTEN) == 0)
            #expect(raw.c_lflag & tcflag_t(ISIG) != 0, "signal=on keeps Ctrl-C a signal")
            #expect(raw.c_iflag & tcflag_t(ICRNL | IXON | INLCR | IGNCR | ISTRIP | BRKINT) == 0)
            #expect(raw.c_oflag & tcflag_t(OPOST) != 0, "output processing is kept, as QEMU keeps it")
            #expect(raw.c_cflag & tcflag_t(CSIZE) == tcflag_t(CS8))

            let fe = RecordingFrontend()
            stdio.attach(fe)
            term.master.write("ab\rc\u{7f}")  // no line editing, no CR->NL
            #expect(eventually { fe.text == "ab\rc\u{7f}" })
            #expect(term.master.read(count: 16, seconds: 0.05).isEmpty, "no echo")

            // OPOST|ONLCR stay as the user had them (QEMU's choice): "\n" still gains a "\r".
            stdio.write(Array("guest\r\n".utf8))
            #expect(term.master.readText(count: 8) == "guest\r\r\n")

            stdio.close()
            #expect(same(termiosOf(term.slave.fd), cooked))
            stdio.close()  // idempotent
        }
    }

    @Test func signalOffPassesCtrlCAsAByte() throws {
        let term = try FakeTerminal()
        let cooked = termiosOf(term.slave.fd)
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: term.slave.fd, output: term.slave.fd, signal: false)
            defer { stdio.close() }
            #expect(termiosOf(term.slave.fd).c_lflag & tcflag_t(ISIG) == 0)
            let fe = RecordingFrontend()
            stdio.attach(fe)
            term.master.write([0x03, 0x1c, 0x1a])  // ^C ^\ ^Z reach the guest
            #expect(eventually { fe.received == [0x03, 0x1c, 0x1a] })

            stdio.restoreTerminalMode()
            #expect(same(termiosOf(term.slave.fd), cooked))
        }
    }

    @Test func restoreTerminalPutsBackEveryRawTerminal() throws {
        let a = try FakeTerminal()
        let b = try FakeTerminal()
        let cookedA = termiosOf(a.slave.fd)
        let cookedB = termiosOf(b.slave.fd)
        try withLoop { loop in
            let sa = try StdioBackend(loop: loop, input: a.slave.fd, output: a.slave.fd)
            let sb = try StdioBackend(loop: loop, input: b.slave.fd, output: b.slave.fd)
            defer { sa.close(); sb.close() }
            #expect(!same(termiosOf(a.slave.fd), cookedA))
            StdioBackend.restoreTerminal()
            #expect(same(termiosOf(a.slave.fd), cookedA))
            #expect(same(termiosOf(b.slave.fd), cookedB))
        }
    }

    @Test func oneStdioPerInput() throws {
        let term = try FakeTerminal()
        try withLoop { loop in
            let first = try StdioBackend(loop: loop, input: term.slave.fd, output: term.slave.fd)
            let error = #expect(throws: SystemError.self) {
                try StdioBackend(loop: loop, input: term.slave.fd, output: term.slave.fd)
            }
            #expect(error?.message == "stdio (fd \(term.slave.fd)) is already used by another chardev; share one with mux=on (mon:stdio)")
            first.close()
            let second = try StdioBackend(loop: loop, input: term.slave.fd, output: term.slave.fd)
            second.close()
        }
    }

    @Test func pipesAreNotTouchedAndEOFStopsInput() throws {
        var input: [Int32] = [0, 0]
        var output: [Int32] = [0, 0]
        #expect(pipe(&input) == 0 && pipe(&output) == 0)
        let inRead = TestFD(input[0])
        let outRead = TestFD(output[0])
        outRead.setNonBlocking()
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: inRead.fd, output: output[1])
            defer { stdio.close() }
            #expect(!stdio.isRawTerminal)
            let fe = RecordingFrontend()
            stdio.attach(fe)
            do {
                let inWrite = TestFD(input[1])
                inWrite.write("piped")
            }  // writer closed: EOF after the data
            #expect(eventually { fe.text == "piped" })
            stdio.write(Array("out".utf8))
            #expect(outRead.readText(count: 3) == "out")
        }
        Glibc.close(output[1])
    }

    @Test func unpollableInputsAreReadToo() throws {
        // epoll refuses regular files and /dev/null (EPERM); stdin is often one of them.
        let path = temporaryPath("stdin.txt")
        defer { unlink(path) }
        let fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0o600)
        let file = TestFD(fd)
        let text = String(repeating: "0123456789", count: 1000)
        file.write(text)
        lseek(fd, 0, SEEK_SET)
        let devNull = TestFD(open("/dev/null", O_WRONLY))
        try withLoop { loop in
            let stdio = try StdioBackend(loop: loop, input: fd, output: devNull.fd)
            defer { stdio.close() }
            let fe = RecordingFrontend(capacity: 0)
            stdio.attach(fe)
            usleep(20_000)
            #expect(fe.received.isEmpty)
            fe.setCapacity(100)
            stdio.acceptInput()
            #expect(eventually { fe.received.count == 10_000 })
            #expect(fe.text == text)
            #expect(fe.overruns == 0)

            let nullInput = TestFD(open("/dev/null", O_RDONLY))
            let quiet = try StdioBackend(loop: loop, input: nullInput.fd, output: devNull.fd)
            quiet.attach(RecordingFrontend())
            quiet.close()
        }
    }

    /// The signal path for real: a child process makes the terminal raw and is killed by a
    /// signal; the handler must restore the terminal before it dies of that signal. (Not the
    /// crash signals: the Swift runtime's backtracer handles those after us, and it must not
    /// run in a forked copy of the test runner.)
    @Test(arguments: [SIGTERM, SIGHUP])
    func fatalSignalRestoresTheTerminal(signal: Int32) throws {
        let term = try FakeTerminal()
        let cooked = termiosOf(term.slave.fd)
        let slave = term.slave.fd
        let pid = fork()
        if pid == 0 {
            // Child: only async-signal-safe C calls between fork and death; no core file.
            var noCore = rlimit(rlim_cur: 0, rlim_max: 0)
            _ = setrlimit(__rlimit_resource_t(RLIMIT_CORE.rawValue), &noCore)
            _ = clx_term_install_handlers()
            if clx_term_enter_raw(slave, 1) != 0 { _exit(2) }
            unblockAllSignals()  // the test runner's threads may block them
            raise(signal)
            _exit(3)
        }
        #expect(pid > 0)
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(status & 0x7f == signal, "the child died of the signal itself (status \(status))")
        #expect(same(termiosOf(slave), cooked))
    }

    @Test func sigcontMakesTheTerminalRawAgain() throws {
        let term = try FakeTerminal()
        let slave = term.slave.fd
        let pid = fork()
        if pid == 0 {
            _ = clx_term_install_handlers()
            if clx_term_enter_raw(slave, 1) != 0 { _exit(2) }
            var t = termios()
            _ = tcgetattr(slave, &t)
            t.c_lflag |= tcflag_t(ICANON | ECHO)  // what a shell does on Ctrl-Z
            _ = tcsetattr(slave, TCSANOW, &t)
            unblockAllSignals()
            raise(SIGCONT)
            _ = tcgetattr(slave, &t)
            _exit(t.c_lflag & tcflag_t(ICANON | ECHO) == 0 ? 0 : 1)
        }
        var status: Int32 = 0
        #expect(waitpid(pid, &status, 0) == pid)
        #expect(status == 0, "raw again after SIGCONT (status \(status))")
    }
}

private func unblockAllSignals() {
    var none = sigset_t()
    sigemptyset(&none)
    pthread_sigmask(SIG_SETMASK, &none, nil)
}
