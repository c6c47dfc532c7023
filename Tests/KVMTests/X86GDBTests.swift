import CLinux
import Foundation
import Glibc
import KVM
import Testing
import TestSupport

/// The GDB stub on `-M microvm -accel kvm`, end to end: Debian's `gdb-multiarch` in batch mode
/// against `swemu-system-x86_64` (the debug build `swift build --build-tests` makes, as the
/// other KVM tests: the guest runs on KVM either way), debugging Tests/GuestPrograms/x86_64/debuggee.S
/// (built with the host gcc by X86GuestProgram, entered through the same 64-bit boot path as Linux).
///
/// On PVM (kvm_pvm), guest kernel mode runs in KVM's instruction emulator, which cannot emulate
/// int3 there and never checks data breakpoints: software breakpoints are refused and
/// hardware watchpoints too (measured); these tests then use GDB's software watchpoints
/// (single steps) and skip the int3 test, saying why.
@Suite(.serialized) struct X86GDBTests {
    static let gdb = "/usr/bin/gdb-multiarch"
    static let binary = X86GuestProgram.binary
    static let onPVM = KVMFlavour.detect() == .pvm

    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: X86GuestProgram.compiler) {
            return "needs \(X86GuestProgram.compiler) (Debian's gcc; scripts/setup installs it)"
        }
        if !FileManager.default.isExecutableFile(atPath: gdb) { return "needs \(gdb) (Debian's gdb-multiarch; scripts/setup installs it)" }
        if access("/dev/kvm", R_OK | W_OK) != 0 { return "needs read/write access to /dev/kvm" }
        if !FileManager.default.isExecutableFile(atPath: binary) {
            return "needs \(binary) (swift build --build-tests builds it)"
        }
        return nil
    }

    static let pvmLacksInt3 = "PVM (kvm_pvm) cannot emulate int3 in guest kernel mode, so software breakpoints are refused there"

    /// A scratch directory, the debuggee, and swemu started on it with the stub on a unix socket.
    struct Session {
        let dir: URL
        let elf: String
        let socket: String
        let swemu: Process

        init(_ arguments: [String], program: String = "debuggee") throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-x86gdb-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            elf = try X86GuestProgram.build(program)
            socket = dir.appendingPathComponent("gdb.sock").path
            swemu = Process()
            swemu.executableURL = URL(fileURLWithPath: X86GDBTests.binary)
            swemu.arguments = ["-M", "microvm", "-accel", "kvm", "-m", "64M", "-kernel", elf, "-display", "none",
                               "-serial", "file:" + dir.appendingPathComponent("serial.log").path, "-monitor", "none",
                               "-gdb", "unix:\(socket)"] + arguments
            swemu.standardInput = FileHandle.nullDevice
            swemu.standardOutput = FileHandle.nullDevice
            swemu.standardError = FileHandle.nullDevice
            try swemu.run()
            let deadline = Date().addingTimeInterval(10)
            while !FileManager.default.fileExists(atPath: socket) && swemu.isRunning && Date() < deadline { usleep(10_000) }
        }

        /// Runs a GDB script in batch mode; returns its output.
        func gdb(_ commands: [String], timeout: Double = 120) throws -> String {
            let script = dir.appendingPathComponent("commands.gdb")
            try (["set pagination off", "set confirm off", "file \(elf)", "target remote \(socket)"] + commands)
                .joined(separator: "\n").write(to: script, atomically: true, encoding: .utf8)
            return try Subprocess.run(X86GDBTests.gdb, ["-nx", "-batch", "-x", script.path], timeout: timeout).output
        }

        /// swemu's exit status within `seconds`; nil (and swemu ended) if it did not end.
        func exitStatus(within seconds: Double) -> Int32? {
            let deadline = Date().addingTimeInterval(seconds)
            while swemu.isRunning && Date() < deadline { usleep(20_000) }
            if swemu.isRunning {
                stop()
                return nil
            }
            return swemu.terminationStatus
        }

        /// Ends swemu: SIGTERM, then SIGKILL if it has not ended within 5 s.
        func stop() {
            guard swemu.isRunning else { return }
            swemu.terminate()
            let deadline = Date().addingTimeInterval(5)
            while swemu.isRunning && Date() < deadline { usleep(20_000) }
            if swemu.isRunning { kill(swemu.processIdentifier, SIGKILL) }
            swemu.waitUntilExit()
        }

        var serial: String { (try? String(contentsOf: dir.appendingPathComponent("serial.log"), encoding: .utf8)) ?? "" }

        func end() {
            stop()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// The line after `@marker` in GDB's output.
    static func after(_ marker: String, in output: String) -> String {
        guard let range = output.range(of: "@\(marker)\n") else { return "" }
        return String(output[range.upperBound...].prefix { $0 != "\n" })
    }

    static func symbol(_ name: String, in elf: String) throws -> UInt64 {
        let out = try Subprocess.run("/usr/bin/nm", [elf]).output
        let line = try #require(out.split(separator: "\n").first { $0.hasSuffix(" \(name)") })
        return try #require(UInt64(line.split(separator: " ")[0], radix: 16))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func registersHardwareBreakpointStepMemoryWatchpointDetach() throws {
        let session = try Session(["-S"])
        defer { session.end() }
        let checkpoint = try Self.symbol("checkpoint", in: session.elf)
        let output = try session.gdb([
            "echo @PC\\n", "p/x $pc",                 // -S: stopped at the ELF entry
            "echo @RSI\\n", "p/x $rsi",               // the zero page (boot.rst 64-bit protocol)
            "echo @REGS\\n", "info registers",
            "echo @MXCSR\\n", "p/x $mxcsr",
            "hbreak checkpoint",
            "continue",
            "echo @AT\\n", "p/x $pc",
            "stepi",
            "echo @STEPPED\\n", "p/x $pc",
            "echo @RAX\\n", "p/x $rax",               // checkpoint's first instruction set it
            "set var *(long *)&scratch = 0x77",
            "echo @SCRATCH\\n", "x/1gx &scratch",
            "set var $rbx = 0x5a5a",
            "echo @RBX\\n", "p/x $rbx",
            "maintenance packet Qqemu.PhyMemMode:1",
            "echo @PHYS\\n", "x/1gx &answer",       // linked at its physical address
            "maintenance packet Qqemu.PhyMemMode:0",
            // Beyond the boot page tables' 4 GiB (a packet: GDB's `x` error would end the script).
            "maintenance packet m7fff00000000,8",
            "delete",
        ] + (Self.onPVM ? ["set can-use-hw-watchpoints 0"] : []) + [
            "watch *(long *)&counter",
            "continue",
            "echo @WATCHPC\\n", "p/x $pc",
            "delete",
            "detach",
        ])
        #expect(Self.after("PC", in: output) == "$1 = 0x100000", "\(output)")
        #expect(Self.after("RSI", in: output) == "$2 = 0x7000", "\(output)")
        for register in ["rax", "r15", "rip", "eflags", "cs ", "gs ", "fs_base", "cr3", "efer"] {
            #expect(output.contains("\n\(register)"), "info registers lacks \(register): \(output)")
        }
        #expect(output.contains("\ncr0            0x80000011"), "\(output)")  // PG | ET | PE, as the board entered
        #expect(Self.after("MXCSR", in: output) == "$3 = 0x1f80", "\(output)")
        #expect(output.contains("Breakpoint 1, 0x\(Self.hex16(checkpoint)) in checkpoint ()"), "\(output)")
        #expect(Self.after("AT", in: output) == "$4 = 0x\(String(checkpoint, radix: 16))", "\(output)")
        // `mov $0x1234, %rax` is 7 bytes long.
        #expect(Self.after("STEPPED", in: output) == "$5 = 0x\(String(checkpoint + 7, radix: 16))", "\(output)")
        #expect(Self.after("RAX", in: output) == "$6 = 0x1234", "\(output)")
        #expect(Self.after("SCRATCH", in: output).hasSuffix("0x0000000000000077"), "\(output)")
        #expect(Self.after("RBX", in: output) == "$7 = 0x5a5a", "\(output)")
        #expect(Self.after("PHYS", in: output).hasSuffix("0x0000000000000005"), "\(output)")
        #expect(output.contains("sending: m7fff00000000,8\nreceived: \"E14\""), "\(output)")
        // The watchpoint stops after the first `incq counter`: 0 -> 1.
        #expect(output.contains(Self.onPVM ? "Watchpoint 2: *(long *)&counter" : "Hardware watchpoint 2: *(long *)&counter"), "\(output)")
        #expect(output.contains("Old value = 0\nNew value = 1"), "\(output)")
        #expect(output.contains("[Inferior 1 (Remote target) detached]"), "\(output)")
        // Detached, the program runs to its end with its own status (code 5: 5 * 2 + 1).
        #expect(session.exitStatus(within: 30) == 11, "\(output)")
        #expect(session.serial.contains("debuggee finished"), "\(session.serial)")
    }

    @Test(.enabled(if: missing == nil && !onPVM, "\(missing ?? pvmLacksInt3)"))
    func softwareBreakpointRestoresTheCode() throws {
        let session = try Session(["-S"])
        defer { session.end() }
        let checkpoint = try Self.symbol("checkpoint", in: session.elf)
        let output = try session.gdb([
            "break checkpoint",
            "continue",
            "echo @AT\\n", "p/x $pc",
            "continue",
            "echo @AGAIN\\n", "p/x $pc",
            "delete",
            "echo @CODE\\n", "x/1bx checkpoint",     // the int3 is gone again
            "detach",
        ])
        #expect(output.contains("Breakpoint 1, 0x\(Self.hex16(checkpoint)) in checkpoint ()"), "\(output)")
        #expect(Self.after("AT", in: output) == "$1 = 0x\(String(checkpoint, radix: 16))", "\(output)")
        #expect(Self.after("AGAIN", in: output) == "$2 = 0x\(String(checkpoint, radix: 16))", "\(output)")
        #expect(Self.after("CODE", in: output).hasSuffix("0x48"), "\(output)")  // REX.W of mov $0x1234, %rax
        #expect(session.exitStatus(within: 30) == 11, "\(output)")
    }

    /// What PVM lacks is refused up front, so the guest lives on: int3 at CPL0 would end it
    /// with KVM_EXIT_INTERNAL_ERROR, and a data watchpoint would never fire.
    @Test(.enabled(if: missing == nil && onPVM, "\(missing ?? "runs on PVM hosts only")"))
    func onPVMBreakAndHardwareWatchpointsAreRefusedAndTheGuestLivesOn() throws {
        let session = try Session(["-S"])
        defer { session.end() }
        let checkpoint = String(try Self.symbol("checkpoint", in: session.elf), radix: 16)
        let counter = String(try Self.symbol("counter", in: session.elf), radix: 16)
        // As packets: GDB's own error for a refused point would end the batch script.
        let output = try session.gdb([
            "maintenance packet Z0,\(checkpoint),1",
            "maintenance packet Z2,\(counter),8",
            "hbreak checkpoint",
            "continue",
            "echo @AT\\n", "p $pc == checkpoint",
            "delete",
            "detach",
        ])
        #expect(output.contains("sending: Z0,\(checkpoint),1\nreceived: \"E22\""), "\(output)")
        #expect(output.contains("sending: Z2,\(counter),8\nreceived: \"E22\""), "\(output)")
        #expect(Self.after("AT", in: output) == "$1 = 1", "\(output)")
        #expect(session.exitStatus(within: 30) == 11, "\(output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func twoVCPUsAreTwoThreadsAndTheExitStatusReachesGDB() throws {
        let session = try Session(["-S", "-smp", "2"])
        defer { session.end() }
        let output = try session.gdb([
            "echo @THREADS\\n", "info threads",
            "thread 2",
            "echo @AP\\n", "p/x $cs",                  // the AP waits for INIT/SIPI in real mode
            "thread 1",
            "set var *(long *)&answer = 7",
            "echo @MONITOR\\n", "monitor info status",
            "continue",
        ])
        #expect(output.contains("Thread 1 (CPU#0"), "\(output)")
        #expect(output.contains("Thread 2 (CPU#1"), "\(output)")
        #expect(!output.contains("Thread 3"), "\(output)")
        #expect(Self.after("AP", in: output) == "$1 = 0xf000", "\(output)")
        // -S and nothing run yet: QEMU's "prelaunch" (a debugger attaching does not change it).
        #expect(Self.after("MONITOR", in: output) == "VM status: paused (prelaunch)", "\(output)")
        // The guest's own exit status, 7 * 2 + 1 = 15 (017), as GDB's W packet.
        #expect(output.contains("[Inferior 1 (Remote target) exited with code 017]"), "\(output)")
        #expect(session.exitStatus(within: 20) == 15, "\(output)")
    }

    /// A guest that resets itself gets a new board (fresh RAM and vCPUs): the points GDB
    /// inserted for `continue` are set on it, so the breakpoint hits again after the reboot.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func aGuestResetKeepsTheDebuggersBreakpoints() throws {
        // hello with end=reset prints its greeting, then resets through the i8042, forever.
        let session = try Session(["-S", "-append", "end=reset"], program: "hello")
        defer { session.end() }
        let main = try Self.symbol("main", in: session.elf)
        let output = try session.gdb([
            "hbreak main",
            "continue",
            "continue",                               // the guest reboots and comes back to main
            "echo @AGAIN\\n", "p/x $pc",
            "kill",
        ], timeout: 30)  // without the breakpoint on the new board, the second continue never ends
        #expect(output.components(separatedBy: "Breakpoint 1, 0x\(Self.hex16(main)) in main ()").count == 3, "\(output)")
        #expect(Self.after("AGAIN", in: output) == "$1 = 0x\(String(main, radix: 16))", "\(output)")
        // The first board ran its program once; the second stopped at main before printing.
        #expect(session.serial.components(separatedBy: "hello from an x86-64 guest").count == 2, "\(session.serial)")
        #expect(session.exitStatus(within: 20) == 0, "\(output)")
    }

    /// A raw client: Ctrl-C stops the spinning guest, `D` lets it run on; a second client
    /// (connecting stops the guest again) ends swemu with `vKill`.
    static let interruptClient = #"""
    import socket, sys, time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(20); s.connect(sys.argv[1])
    buf = b""
    def frame(p): return b"$" + p + b"#" + b"%02x" % (sum(p) % 256)
    def packet():
        global buf
        while not (b"$" in buf and b"#" in buf[buf.index(b"$"):] and len(buf) >= buf.index(b"#", buf.index(b"$")) + 3):
            chunk = s.recv(4096)
            if not chunk: raise EOFError("closed")
            buf += chunk
        start = buf.index(b"$"); end = buf.index(b"#", start); p = buf[start + 1:end]; buf = buf[end + 3:]
        return p
    s.sendall(frame(b"?")); print("attach:", packet().decode())
    s.sendall(frame(b"c")); time.sleep(0.5); s.sendall(b"\x03"); print("interrupt:", packet().decode())
    s.sendall(frame(b"D")); print("detach:", packet().decode())
    s.close(); time.sleep(0.5)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(20); s.connect(sys.argv[1]); buf = b""
    s.sendall(frame(b"vKill")); print("kill:", packet().decode())
    """#

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func ctrlCStopsARunningGuestAndKillEndsIt() throws {
        let session = try Session(["-append", "spin"])
        defer { session.end() }
        let script = session.dir.appendingPathComponent("client.py")
        try Self.interruptClient.write(to: script, atomically: true, encoding: .utf8)
        let client = try Subprocess.run(Python.executable, [script.path, session.socket], timeout: 60)
        #expect(client.output.contains("attach: T05thread:01;"), "\(client.output)")
        #expect(client.output.contains("interrupt: T02thread:01;"), "\(client.output)")
        #expect(client.output.contains("detach: OK"), "\(client.output)")
        #expect(client.output.contains("kill: OK"), "\(client.output)")
        #expect(session.exitStatus(within: 20) == 0, "\(client.output)")
    }

    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
}

/// Pure pieces of guest debugging: DR7 encoding and which slot DR6 names (Intel SDM Vol. 3B
/// 18.2), and the request numbers next to the others (IoctlNumberTests checks them against the
/// headers).
@Suite struct X86HardwareDebugTests {
    @Test func dr7EncodesEnableConditionAndLength() {
        var debug = X86HardwareDebug()
        #expect(debug.dr7 == 0 && debug.isEmpty)
        #expect(debug.insert(.init(address: 0x100139, condition: .execution, length: 1)) == 0)
        #expect(debug.insert(.init(address: 0x100178, condition: .write, length: 8)) == 1)
        #expect(debug.insert(.init(address: 0x2002, condition: .readWrite, length: 2)) == 2)
        #expect(debug.insert(.init(address: 0x3000, condition: .write, length: 4)) == 3)
        // G0-G3 (bits 1, 3, 5, 7), GE (bit 9); slot 1 R/W 01 LEN 10; slot 2 R/W 11 LEN 01; slot 3 R/W 01 LEN 11.
        let expected: UInt64 = 0b1010_1010 | 1 << 9 | (0b10_01 << 20) | (0b01_11 << 24) | (0b11_01 << 28)
        #expect(debug.dr7 == expected)
        #expect(debug.registers == [0x100139, 0x100178, 0x2002, 0x3000, 0, 0, 0, expected])
        #expect(debug.insert(.init(address: 0x4000, condition: .execution, length: 1)) == nil)  // all four taken
        let removed = debug.remove(.init(address: 0x100178, condition: .write, length: 8))
        let removedAgain = debug.remove(.init(address: 0x100178, condition: .write, length: 8))
        #expect(removed && !removedAgain)
        #expect(debug.insert(.init(address: 0x4000, condition: .execution, length: 1)) == 1)  // the freed slot
    }

    @Test func refusesWhatDebugRegistersCannotExpress() {
        var debug = X86HardwareDebug()
        #expect(debug.insert(.init(address: 0x1001, condition: .write, length: 2)) == nil)  // unaligned
        #expect(debug.insert(.init(address: 0x1000, condition: .write, length: 3)) == nil)
        #expect(debug.insert(.init(address: 0x1000, condition: .write, length: 16)) == nil)
        #expect(debug.insert(.init(address: 0x1000, condition: .execution, length: 4)) == nil)
        #expect(debug.isEmpty)
    }

    @Test func dr6NamesTheSlotThatHit() {
        var debug = X86HardwareDebug()
        let watch = X86HardwareDebug.Slot(address: 0x100178, condition: .write, length: 8)
        _ = debug.insert(.init(address: 0x100139, condition: .execution, length: 1))
        _ = debug.insert(watch)
        #expect(debug.hit(dr6: 0xffff_0ff0 | 1 << 1) == watch)
        #expect(debug.hit(dr6: 0xffff_0ff0 | X86HardwareDebug.singleStepBit) == nil)
        #expect(debug.hit(dr6: 0xffff_0ff0 | 1 << 3) == nil)  // slot 3 is not armed
    }

    /// _IOC arithmetic of include/uapi/asm-generic/ioctl.h (KVMIO 0xAE), as in IoctlNumberTests.
    @Test func requestNumbers() {
        func ioc(_ direction: UInt, _ nr: UInt, _ size: Int) -> UInt { direction << 30 | UInt(size) << 16 | 0xAE << 8 | nr }
        #expect(clx_KVM_SET_GUEST_DEBUG == ioc(1, 0x9b, MemoryLayout<kvm_guest_debug>.size))
        #expect(clx_KVM_TRANSLATE == ioc(3, 0x85, MemoryLayout<kvm_translation>.size))
        #expect(clx_KVM_GET_FPU == ioc(2, 0x8c, MemoryLayout<kvm_fpu>.size))
        #expect(clx_KVM_GET_XSAVE == ioc(2, 0xa4, 4096))
        #expect(clx_KVM_SET_XSAVE == ioc(1, 0xa5, 4096))
    }
}
