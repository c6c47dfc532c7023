import Foundation
import Testing
import TestSupport

/// The GDB stub end to end with Debian's `gdb-multiarch` in batch mode (scripts/setup installs
/// it) against the release binary: a bare-metal program debugged from reset, the exit status
/// reported to GDB, a misbehaving client, and Debian's Linux kernel stopped at start_kernel.
/// One case boots Linux, so the suite takes its turn with the other Linux-booting suites.
@Suite(.serialized, .oneLinuxBootAtATime) struct GDBTests {
    static let gdb = "/usr/bin/gdb-multiarch"
    static let nm = "/usr/bin/riscv64-unknown-elf-nm"

    static var missing: String? {
        if let reason = GuestProgram.compilerMissingReason { return reason }
        if !FileManager.default.isExecutableFile(atPath: gdb) { return "needs \(gdb) (Debian's gdb-multiarch; scripts/setup installs it)" }
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (scripts/test builds it)"
        }
        return nil
    }

    /// A scratch directory for the stub's socket and the serial log.
    static func scratch() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-gdb-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Starts swemu with the stub on `socket` and waits for the socket to appear.
    static func startSwemu(_ arguments: [String], socket: String, serial: String) throws -> Process {
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: LinuxBootTests.binary)
        swemu.arguments = arguments + ["-display", "none", "-serial", "file:\(serial)", "-monitor", "none", "-gdb", "unix:\(socket)"]
        swemu.standardInput = FileHandle.nullDevice
        try swemu.run()
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: socket) && swemu.isRunning && Date() < deadline { usleep(10_000) }
        return swemu
    }

    /// Runs a GDB script in batch mode; returns its output.
    static func runGDB(_ commands: [String], in dir: URL, timeout: Double = 120) throws -> String {
        let script = dir.appendingPathComponent("commands.gdb")
        try (["set pagination off", "set confirm off"] + commands).joined(separator: "\n").write(to: script, atomically: true, encoding: .utf8)
        return try GuestProgram.run(gdb, ["-nx", "-batch", "-x", script.path], timeout: timeout).output
    }

    /// Waits for swemu to end (bounded); nil if it did not.
    static func exitStatus(_ swemu: Process, within seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while swemu.isRunning && Date() < deadline { usleep(20_000) }
        if swemu.isRunning {
            swemu.terminate()
            return nil
        }
        return swemu.terminationStatus
    }

    /// The address of `symbol` in `elf`, in hex.
    static func address(of symbol: String, in elf: String) throws -> String {
        let out = try GuestProgram.run(nm, [elf]).output
        let line = try #require(out.split(separator: "\n").first { $0.hasSuffix(" \(symbol)") })
        return String(line.split(separator: " ")[0])
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: LinuxBootTests.accelerators)
    func debugsABareMetalProgramFromReset(accel: String) throws {
        let elf = try GuestProgram.build("debuggee")
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("gdb.sock").path
        let swemu = try Self.startSwemu(["-M", "virt", "-bios", "none", "-kernel", elf, "-S", "-accel", accel], socket: socket,
                                        serial: dir.appendingPathComponent("serial.log").path)
        defer { if swemu.isRunning { swemu.terminate() } }
        let checkpoint = try Self.address(of: "checkpoint", in: elf)
        let output = try Self.runGDB([
            "file \(elf)",
            "target remote \(socket)",
            "echo @PC\\n", "p/x $pc",             // -S: stopped at the reset vector, QEMU's boot ROM
            "echo @MISA\\n", "p/x $misa",
            "echo @PRIV\\n", "p $priv",
            "echo @MHARTID\\n", "p $mhartid",
            "break *checkpoint",
            "continue",
            "echo @AT\\n", "p/x $pc",
            "stepi",
            "echo @STEPPED\\n", "p/x $pc",
            "echo @RA\\n", "p/x $ra",
            "set var *(long *)&scratch = 0x1234",
            "echo @SCRATCH\\n", "x/1gx &scratch",
            "set var $a5 = 0x5a5a",
            "echo @A5\\n", "p/x $a5",
            "delete",
            "watch *(long *)&counter",
            "continue",
            "echo @WATCHPC\\n", "p/x $pc",
            "delete",
            "rwatch *(long *)&scratch",
            "continue",
            "echo @RWATCHPC\\n", "p/x $pc",
            "delete",
            "hbreak *checkpoint",
            "continue",
            "echo @HBREAK\\n", "p/x $pc",
            "delete",
            "detach",
        ], in: dir)
        func after(_ marker: String) -> String {
            guard let range = output.range(of: "@\(marker)\n") else { return "" }
            return String(output[range.upperBound...].prefix { $0 != "\n" })
        }
        #expect(after("PC") == "$1 = 0x1000", "\(output)")
        #expect(after("MISA") == "$2 = 0x800000000014112d", "\(output)")  // RV64 IMAFDC SU
        #expect(after("PRIV") == "$3 = 3", "\(output)")  // M-mode
        #expect(after("MHARTID") == "$4 = 0", "\(output)")
        #expect(output.contains("Breakpoint 1, 0x\(checkpoint) in checkpoint ()"), "\(output)")
        #expect(after("AT") == "$5 = 0x\(checkpoint.drop { $0 == "0" })", "\(output)")
        // checkpoint's first instruction is `auipc t0, ...` (4 bytes).
        #expect(after("STEPPED") == "$6 = 0x\(String(UInt64(checkpoint, radix: 16)! + 4, radix: 16))", "\(output)")
        #expect(after("RA").hasPrefix("$7 = 0x8000"), "\(output)")
        #expect(after("SCRATCH").hasSuffix("0x0000000000001234"), "\(output)")
        #expect(after("A5") == "$8 = 0x5a5a", "\(output)")
        // The watchpoint stops on the store of the first iteration: counter goes 0 -> 1.
        #expect(output.contains("Old value = 0\nNew value = 1"), "\(output)")
        // The read watchpoint fires on checkpoint's load of scratch (after the 8-byte `la`); the
        // stub stops before the load, GDB steps over it (RISC-V watchpoints are non-steppable
        // for GDB) and shows the value read: 0x1234 plus the increment of one more call.
        #expect(output.contains("Hardware read watchpoint 3: *(long *)&scratch\n\nValue = 4661"), "\(output)")
        #expect(after("RWATCHPC") == "$10 = 0x\(String(UInt64(checkpoint, radix: 16)! + 12, radix: 16))", "\(output)")
        #expect(output.contains("Hardware assisted breakpoint 4 at 0x\(checkpoint.drop { $0 == "0" })"), "\(output)")
        #expect(after("HBREAK") == "$11 = 0x\(checkpoint.drop { $0 == "0" })", "\(output)")
        #expect(output.contains("[Inferior 1 (Remote target) detached]"), "\(output)")
        // Detached, the program runs to its end: it passes, as it does alone.
        #expect(Self.exitStatus(swemu, within: 20) == 0, "\(output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: LinuxBootTests.accelerators)
    func readsFPURegistersAndStopsOnAnAccessWatchpoint(accel: String) throws {
        let elf = try GuestProgram.build("debuggee")
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("gdb.sock").path
        let swemu = try Self.startSwemu(["-M", "virt", "-bios", "none", "-kernel", elf, "-S", "-accel", accel], socket: socket,
                                        serial: dir.appendingPathComponent("serial.log").path)
        defer { if swemu.isRunning { swemu.terminate() } }
        let checkpoint = try #require(UInt64(Self.address(of: "checkpoint", in: elf), radix: 16))
        let output = try Self.runGDB([
            "file \(elf)",
            "target remote \(socket)",
            "break *checkpoint",
            "continue",
            // debuggee.S set fa0 = pi and fcsr = 0x65 before its first call of checkpoint.
            "echo @FA0\\n", "info registers fa0",
            "echo @FA0DOUBLE\\n", "p $fa0.double",
            "echo @FCSR\\n", "p/x $fcsr",
            "echo @FFLAGS\\n", "p/x $fflags",
            "echo @FRM\\n", "p $frm",
            "delete",
            "awatch *(long *)&scratch",
            "continue",
            "echo @AWATCH1\\n", "p/x $pc",
            "continue",
            "echo @AWATCH2\\n", "p/x $pc",
            "delete",
            "detach",
        ], in: dir)
        func after(_ marker: String) -> String {
            guard let range = output.range(of: "@\(marker)\n") else { return "" }
            return String(output[range.upperBound...].prefix { $0 != "\n" })
        }
        #expect(output.contains("Breakpoint 1, 0x\(String(format: "%016lx", checkpoint)) in checkpoint ()"), "\(output)")
        // fa0 as GDB's RV64D union, with the raw bits the program loaded.
        #expect(after("FA0") == "fa0            {float = 3.37028055e+12, double = 3.1415926535897931}\t(raw 0x400921fb54442d18)",
                "\(output)")
        #expect(after("FA0DOUBLE") == "$1 = 3.1415926535897931", "\(output)")
        // fcsr = frm << 5 | fflags: RUP (3) and OF|NX (0x05).
        #expect(after("FCSR") == "$2 = 0x65", "\(output)")
        #expect(after("FFLAGS") == "$3 = 0x5", "\(output)")
        #expect(after("FRM") == "$4 = 3", "\(output)")
        // The access watchpoint fires on checkpoint's load of scratch (after the 8-byte `la`),
        // then on its store (after the 2-byte `addi`); GDB steps over each (RISC-V watchpoints
        // are non-steppable for it) and shows the value read, then the value written.
        #expect(output.contains("Hardware access (read/write) watchpoint 2: *(long *)&scratch\n\nValue = 0\n"), "\(output)")
        #expect(after("AWATCH1") == "$5 = 0x\(String(checkpoint + 12, radix: 16))", "\(output)")
        #expect(output.contains("Hardware access (read/write) watchpoint 2: *(long *)&scratch\n\nOld value = 0\nNew value = 1\n"),
                "\(output)")
        #expect(after("AWATCH2") == "$6 = 0x\(String(checkpoint + 18, radix: 16))", "\(output)")
        #expect(output.contains("[Inferior 1 (Remote target) detached]"), "\(output)")
        // Detached, the program runs to its end and passes.
        #expect(Self.exitStatus(swemu, within: 20) == 0, "\(output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func aVariableTheDebuggerWroteDecidesTheExitStatus() throws {
        let elf = try GuestProgram.build("debuggee")
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("gdb.sock").path
        let swemu = try Self.startSwemu(["-M", "virt", "-bios", "none", "-kernel", elf, "-S"], socket: socket,
                                        serial: dir.appendingPathComponent("serial.log").path)
        defer { if swemu.isRunning { swemu.terminate() } }
        let output = try Self.runGDB([
            "file \(elf)", "target remote \(socket)",
            "set var *(long *)&answer = 7",
            "maintenance packet Qqemu.PhyMemMode:1",
            "echo @PHYS\\n", "x/1gx &answer",  // the ELF is linked at its physical address
            "maintenance packet Qqemu.PhyMemMode:0",
            "echo @MONITOR\\n", "monitor info status",
            "continue",
        ], in: dir)
        #expect(output.contains("@PHYS\n0x") && output.contains(":\t0x0000000000000007"), "\(output)")
        #expect(output.contains("@MONITOR\nVM status: paused"), "\(output)")
        #expect(output.contains("[Inferior 1 (Remote target) exited with code 07]"), "\(output)")
        #expect(Self.exitStatus(swemu, within: 20) == 7, "\(output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: LinuxBootTests.accelerators)
    func aMisbehavingClientLeavesTheGuestRunning(accel: String) throws {
        let elf = try GuestProgram.build("ticker")
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let socket = dir.appendingPathComponent("gdb.sock").path
        let serial = dir.appendingPathComponent("serial.log").path
        let swemu = try Self.startSwemu(["-M", "virt", "-bios", "none", "-kernel", elf, "-accel", accel], socket: socket, serial: serial)
        defer { if swemu.isRunning { swemu.terminate() } }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("gdb_raw_client.py").path
        let client = try GuestProgram.run(MonitorTests.python, MonitorTests.pythonArguments + [script, socket, Self.address(of: "putc", in: elf)])
        #expect(client.status == 0, "\(client.output)")
        #expect(!client.output.contains("FAIL"), "\(client.output)")
        #expect(client.output.contains("ok: interrupted: T02thread:01;"), "\(client.output)")
        #expect(client.output.contains("ok: stopped: T05thread:01;swbreak:;"), "\(client.output)")
        // The client vanished mid-step: the stub detached for it and the ticker ran to its end.
        #expect(Self.exitStatus(swemu, within: 30) == 0, "\(client.output)")
        let log = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
        #expect(log.contains("tick 0000000000000063"), "\(log)")
    }

    @Test(.enabled(if: missing == nil && LinuxBootTests.missing == nil, "\(missing ?? LinuxBootTests.missing ?? "")"),
          arguments: LinuxBootTests.accelerators)
    func stopsDebiansKernelAtStartKernel(accel: String) throws {
        // Debian's System.map is a stub (the real one is in the 1 GB -dbg package): a first
        // boot reads start_kernel's address from /proc/kallsyms; nokaslr keeps it fixed.
        let dir = try Self.scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let append = "console=ttyS0 quiet nokaslr swemu.test=/tests/kallsyms"
        let first = try GuestProgram.run(LinuxBootTests.binary, ["-M", "virt", "-m", "512M", "-nographic", "-kernel", LinuxBootTests.kernel,
                                                                 "-initrd", LinuxBootTests.initrd, "-append", append, "-accel", accel],
                                         timeout: 300)
        let startKernel = try #require(LinuxBootTests.value("KSYM_START_KERNEL", in: first.output), "\(first.output)")
        try #require(startKernel.hasPrefix("ffffffff"), "\(first.output)")

        let socket = dir.appendingPathComponent("gdb.sock").path
        let serial = dir.appendingPathComponent("serial.log").path
        let swemu = try Self.startSwemu(["-M", "virt", "-m", "512M", "-smp", "2", "-kernel", LinuxBootTests.kernel,
                                         "-initrd", LinuxBootTests.initrd, "-append", append, "-S", "-accel", accel],
                                        socket: socket, serial: serial)
        defer { if swemu.isRunning { swemu.terminate() } }
        let output = try Self.runGDB([
            "set architecture riscv:rv64",
            "target remote \(socket)",
            "break *0x\(startKernel)",
            "continue",
            "echo @PC\\n", "p/x $pc",
            "echo @PRIV\\n", "p $priv",
            "echo @SATP\\n", "p/x $satp",
            "echo @STACK\\n", "x/2gx $sp",
            "info threads",
            "delete",
            "detach",
        ], in: dir, timeout: 300)
        #expect(output.contains("@PC\n$1 = 0x\(startKernel)"), "\(output)")
        #expect(output.contains("@PRIV\n$2 = 1\n"), "\(output)")  // S-mode
        // Paging is on (Sv39/48/57 mode in satp) and the kernel stack reads through it.
        #expect(output.contains("@SATP\n$3 = 0x") && !output.contains("@SATP\n$3 = 0x0\n"), "\(output)")
        #expect(output.contains("@STACK\n0xffffffff"), "\(output)")
        // One thread per hart; the boot hart (thread 1) is the one at start_kernel.
        #expect(output.contains("* 1    Thread 1 (CPU#0 [halted ])") && output.contains("  2    Thread 2 (CPU#1 [halted ])"), "\(output)")
        #expect(output.contains("[Inferior 1 (Remote target) detached]"), "\(output)")
        // Detached, the kernel boots on to the shell and the test script powers it off.
        #expect(Self.exitStatus(swemu, within: 300) == 0, "\(output)")
        let log = (try? String(contentsOfFile: serial, encoding: .utf8)) ?? ""
        #expect(log.contains("SWEMU-GUEST-READY"), "\(log)")
    }
}
