import Foundation
import Testing
import TestSupport

/// QMP against the real machine, driven by QEMU's own `qemu.qmp` client (PyPI; scripts/setup
/// installs it): a bare-metal guest prints ticks; `stop` freezes its output, `cont` resumes it
/// without a jump in guest time, reset/powerdown/quit raise their events in order.
@Suite(.serialized, .oneLinuxBootAtATime) struct MonitorTests {
    /// `$SWEMU_PYTHON`, else python3 on PATH (TestSupport's one rule); GDBTests uses it too.
    static let python = Python.executable
    static let pythonArguments: [String] = []

    static var missing: String? {
        if let reason = GuestProgram.compilerMissingReason { return reason }
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (scripts/test builds it)"
        }
        return Python.missing("qemu.qmp")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func qemuQMPClientControlsTheMachine() throws {
        let elf = try GuestProgram.build("ticker")
        let dir = try TestDirectory("swemu-qmp")
        let socket = dir.path("qmp.sock")
        let serial = dir.path("serial.log")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-bios", "none", "-kernel", elf, "-smp", "2", "-display", "none", "-name", "ticker,debug-threads=on",
                           "-serial", "file:\(serial)", "-qmp", "unix:\(socket),server=on,wait=off"]
        swemu.standardInput = FileHandle.nullDevice
        try swemu.run()
        defer { if swemu.isRunning { swemu.terminate() } }
        // The second hart's thread has QEMU's debug-threads name.
        var names: [String] = []
        for _ in 0..<500 {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(swemu.processIdentifier)/task")) ?? []
            names = tasks.compactMap { try? String(contentsOfFile: "/proc/\(swemu.processIdentifier)/task/\($0)/comm", encoding: .utf8) }
                .map { $0.trimmingCharacters(in: .newlines) }
            if names.contains("CPU 1/TCG") { break }
            usleep(10_000)
        }
        #expect(names.contains("CPU 1/TCG"), "\(names)")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("qmp_machine.py").path
        let client = try GuestProgram.run(Self.python, Self.pythonArguments + [script, socket, serial], timeout: 120)
        #expect(client.status == 0, "\(client.output)")
        #expect(!client.output.contains("FAIL"), "\(client.output)")
        // quit ends swemu with status 0.
        // A deadline only for a hang: a loaded machine may take a while to tear the VM down.
        let deadline = Date().addingTimeInterval(60)
        while swemu.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!swemu.isRunning)
        #expect(swemu.terminationStatus == 0)
    }

    /// SIGTERM (what systemd, `docker stop` and libvirt's destroy send) ends the machine as
    /// QEMU's does: the sender named on stderr, a SHUTDOWN event with reason host-signal,
    /// exit status 0 (not death by the signal, 143).
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func sigtermEndsTheMachineInOrder() throws {
        let elf = try GuestProgram.build("ticker")
        let dir = try TestDirectory("swemu-sig")
        let socket = dir.path("qmp.sock")
        let serial = dir.path("serial.log")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-bios", "none", "-kernel", elf, "-display", "none",
                           "-serial", "file:\(serial)", "-qmp", "unix:\(socket),server=on,wait=off"]
        swemu.standardInput = FileHandle.nullDevice
        let errors = Pipe()
        swemu.standardError = errors
        try swemu.run()
        defer { if swemu.isRunning { swemu.terminate() } }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("qmp_machine.py").path
        let client = try GuestProgram.run(Self.python, Self.pythonArguments + [script, socket, serial, "signal", "\(swemu.processIdentifier)"],
                                          timeout: 120)
        #expect(client.status == 0 && !client.output.contains("FAIL"), "\(client.output)")
        swemu.waitUntilExit()
        #expect(swemu.terminationReason == .exit && swemu.terminationStatus == 0)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let sender = client.output.split(separator: "\n").first { $0.hasPrefix("ok sender pid ") }?.dropFirst("ok sender pid ".count) ?? "?"
        #expect(stderr.contains("swemu-system-riscv64: terminating on signal 15 from pid \(sender) ("), "\(stderr)")
    }

    /// `-no-shutdown` (what libvirt passes): a guest power-off stops the machine in "shutdown"
    /// (SHUTDOWN, then STOP) and the process stays; `cont` is refused with QEMU's words until
    /// `system_reset`, after which the guest runs again from the start; `quit` ends with 0.
    /// Checked on both spellings, `-no-shutdown` and `-action shutdown=pause`.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: [["-no-shutdown"], ["-action", "shutdown=pause"]])
    func noShutdownStopsTheMachineAtPowerOff(_ option: [String]) throws {
        let elf = try GuestProgram.build("uart")  // prints a line and powers off
        let dir = try TestDirectory("swemu-noshut")
        let socket = dir.path("qmp.sock")
        let serial = dir.path("serial.log")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = ["-M", "virt", "-m", "64M", "-bios", "none", "-kernel", elf, "-display", "none", "-S",
                           "-name", "guest=nos,process=swemu-nos",
                           "-serial", "file:\(serial)", "-qmp", "unix:\(socket),server=on,wait=off"] + option
        swemu.standardInput = FileHandle.nullDevice
        try swemu.run()
        defer { if swemu.isRunning { kill(swemu.processIdentifier, SIGKILL) } }
        // -name process= names the process (ps, top), once swemu has started.
        var comm: String?
        for _ in 0..<500 {
            comm = try? String(contentsOfFile: "/proc/\(swemu.processIdentifier)/comm", encoding: .utf8)
            if comm == "swemu-nos\n" { break }
            usleep(10_000)
        }
        #expect(comm == "swemu-nos\n")
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("qmp_machine.py").path
        let client = try GuestProgram.run(Self.python, Self.pythonArguments + [script, socket, serial, "no-shutdown", "hello from a bare-metal guest"],
                                          timeout: 120)
        #expect(client.status == 0 && !client.output.contains("FAIL"), "\(client.output)")
        let deadline = Date().addingTimeInterval(60)
        while swemu.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!swemu.isRunning && swemu.terminationStatus == 0)
    }

    /// libvirt's capability probe, exactly as libvirt 9.0 starts QEMU for it: the command
    /// returns once the machine is up, its QMP answers for a machine with no CPU (run state,
    /// target, KVM, UUID, machines; qmp_machine.py `probe`), `quit` ends it and the pid file goes.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func libvirtsCapabilityProbeLine() throws {
        let dir = try TestDirectory("swemu-probe")
        let socket = dir.path("qmp.sock")
        let pidFile = dir.path("swemu.pid")
        let line = ["-S", "-no-user-config", "-nodefaults", "-nographic", "-machine", "none,accel=kvm:tcg",
                    "-qmp", "unix:\(socket),server=on,wait=off", "-pidfile", pidFile, "-daemonize"]
        let started = try Self.startDaemon(line, in: dir)
        #expect(started.status == 0, "\(started.output)")
        let pid = try #require(pid_t((try String(contentsOfFile: pidFile, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        defer { kill(pid, SIGKILL) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("qmp_machine.py").path
        let client = try GuestProgram.run(Self.python, Self.pythonArguments + [script, socket, "-", "probe"], timeout: 60)
        #expect(client.status == 0 && !client.output.contains("FAIL"), "\(client.output)")
        let deadline = Date().addingTimeInterval(30)
        while kill(pid, 0) == 0 && Date() < deadline { usleep(20_000) }
        #expect(kill(pid, 0) != 0, "quit ended it")
        #expect(!FileManager.default.fileExists(atPath: pidFile), "the pid file is gone")
    }

    /// Runs swemu with `arguments` (which daemonize it) and waits for the command to return:
    /// its exit status and output. Started through Python's subprocess with close_fds:
    /// Foundation's Process leaves descriptors of its own open in the child (the pipe behind
    /// its output, the socket it watches for the child's exit), and a daemon inheriting them
    /// would keep Foundation waiting for as long as the daemon lives. The output goes to a
    /// file in `dir` for the same reason.
    static func startDaemon(_ arguments: [String], in dir: TestDirectory) throws -> (status: Int32, output: String) {
        let log = dir.url.appendingPathComponent("start.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let starter = Process()
        starter.executableURL = URL(fileURLWithPath: python)
        starter.arguments = ["-c", "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:], close_fds=True))",
                             LinuxBootTests.binary] + arguments
        starter.standardInput = FileHandle.nullDevice
        starter.standardOutput = try FileHandle(forWritingTo: log)
        starter.standardError = starter.standardOutput
        try starter.run()
        starter.waitUntilExit()
        return (starter.terminationStatus, (try? String(contentsOf: log, encoding: .utf8)) ?? "")
    }

    /// `-daemonize -pidfile`, as libvirt and init scripts start QEMU: the command returns 0 once
    /// the machine is built, the daemon runs in a session of its own with its pid in the locked
    /// file (a second instance is refused), and SIGTERM ends it and removes the file.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func daemonizeWritesThePidFileAndSigtermEndsIt() throws {
        let elf = try GuestProgram.build("migrate_counter")  // runs until stopped
        let dir = try TestDirectory("swemu-daemon")
        let pidFile = dir.path("swemu.pid")
        let serial = dir.path("serial.log")
        let arguments = ["-M", "virt", "-m", "64M", "-bios", "none", "-kernel", elf, "-display", "none",
                         "-serial", "file:\(serial)", "-daemonize", "-pidfile", pidFile]
        let started = try Self.startDaemon(arguments, in: dir)
        #expect(started.status == 0, "\(started.output)")
        let text = try String(contentsOfFile: pidFile, encoding: .utf8)
        let pid = try #require(pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), "pid file: \(text)")
        defer { kill(pid, SIGKILL) }
        #expect(kill(pid, 0) == 0, "the daemon runs")
        #expect(getsid(pid) != getsid(0), "in a session of its own")
        let second = try GuestProgram.run(LinuxBootTests.binary, arguments.filter { $0 != "-daemonize" }, timeout: 60)  // refused at once
        #expect(second.status == 1 && second.output.contains("cannot create PID file: Cannot lock pid file"), "\(second.output)")
        #expect(kill(pid, SIGTERM) == 0)
        let deadline = Date().addingTimeInterval(30)
        while kill(pid, 0) == 0 && Date() < deadline { usleep(20_000) }
        #expect(kill(pid, 0) != 0, "SIGTERM ended the daemon")
        #expect(!FileManager.default.fileExists(atPath: pidFile), "the pid file is gone")
    }
}
