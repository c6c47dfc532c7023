import Foundation
import Testing
import TestSupport

/// The microvm end to end on KVM: guest programs entered through the same path as Linux (zero
/// page, page tables, GDT, 64-bit entry), run by the real `swemu-system-x86_64`. The exit port
/// ends the run with status code * 2 + 1 (QEMU's isa-debug-exit), so code 21 is status 43.
@Suite(.serialized) struct MicroVMTests {
    static let missing = X86GuestProgram.missing

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func printsTheCommandLineAndE820MapFromTheZeroPage() throws {
        let run = try X86GuestProgram.run("hello", ["-append", "console=ttyS0 greeting=swemu-test"])
        #expect(run.status == 43, "\(run.output)")
        let lines = run.output.split(whereSeparator: \.isNewline).map(String.init)
        #expect(lines.contains("hello from an x86-64 guest"))
        #expect(lines.contains("cmdline: console=ttyS0 greeting=swemu-test"))
        // 256 MiB: RAM below the EBDA, the BIOS area reserved, RAM from 1 MiB to the end.
        #expect(lines.filter { $0.hasPrefix("e820: ") } == ["e820: 0x0 0x9fc00 0x1", "e820: 0x9fc00 0x60400 0x2", "e820: 0x100000 0xff00000 0x1"])
        #expect(lines.contains("exit code 21"))
        #expect(lines.contains("hypervisor: KVMKVMKVM"))  // KVM's paravirt leaf 0x40000000 is passed on
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func unassignedPortsAndMMIOReadAllOnes() throws {
        let run = try X86GuestProgram.run("hello", [])
        let lines = run.output.split(whereSeparator: \.isNewline).map(String.init)
        #expect(lines.contains("port 0x2f0: 0xffffffff"))
        #expect(lines.contains("mmio 0xd0100000: 0xffffffff"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func bootMarkerIsReported() throws {
        let run = try X86GuestProgram.run("hello", [])
        let marker = run.output.split(whereSeparator: \.isNewline).first { $0.hasPrefix("swemu: guest boot marker: ") }
        let ms = marker.flatMap { Double($0.split(separator: " ")[4]) }
        #expect(ms != nil && ms! > 0, "\(run.output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func i8042ResetWithNoRebootEndsSwemu() throws {
        let run = try X86GuestProgram.run("hello", ["-append", "end=reset", "-no-reboot"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("i8042 reset"))
        #expect(run.output.components(separatedBy: "hello from an x86-64 guest").count == 2)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func i8042ResetBootsAgain() throws {
        // Without -no-reboot the machine is rebuilt and the program runs again, and again: the
        // run is stopped once three resets have been seen (the deadline is only for a hang: a
        // debug build on a loaded machine may take seconds per round).
        let elf = try X86GuestProgram.build("hello")
        let output = try Subprocess.output(of: X86GuestProgram.binary,
                                           ["-M", "microvm", "-accel", "kvm", "-m", "256M", "-nographic", "-kernel", elf,
                                            "-append", "end=reset"],
                                           until: "i8042 reset", occurrences: 3, timeout: 120)
        #expect(output.components(separatedBy: "i8042 reset").count - 1 >= 3, "\(output)")
        #expect(output.components(separatedBy: "hello from an x86-64 guest").count - 1 >= 3, "\(output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func acpiPoweroffExitsZero() throws {
        let run = try X86GuestProgram.run("hello", ["-append", "end=poweroff"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("acpi poweroff"))
    }

    /// `-no-shutdown` on KVM: the ACPI power-off stops the machine in "shutdown" and the
    /// process stays; `system_reset` and `cont` run the program again (the RISC-V board's
    /// counterpart and the script: MachinesTests/MonitorTests.noShutdownStopsTheMachineAtPowerOff).
    @Test(.enabled(if: KVMMigrationTests.scriptMissing == nil, "\(KVMMigrationTests.scriptMissing ?? "")"))
    func noShutdownStopsTheMachineAtPowerOff() throws {
        let elf = try X86GuestProgram.build("hello")
        let dir = try TestDirectory("swemu-kvm-noshut")
        let socket = dir.path("qmp.sock")
        let serial = dir.path("serial.log")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: X86GuestProgram.binary)
        swemu.arguments = ["-M", "microvm", "-accel", "kvm", "-m", "256M", "-kernel", elf, "-append", "end=poweroff", "-display", "none",
                           "-S", "-no-shutdown", "-serial", "file:\(serial)", "-qmp", "unix:\(socket),server=on,wait=off"]
        swemu.standardInput = FileHandle.nullDevice
        try swemu.run()
        defer { if swemu.isRunning { kill(swemu.processIdentifier, SIGKILL) } }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("MachinesTests/qmp_machine.py").path
        let client = try Subprocess.run(Python.executable, [script, socket, serial, "no-shutdown", "hello from an x86-64 guest"], timeout: 120)
        #expect(client.status == 0 && !client.output.contains("FAIL"), "\(client.output)")
        let deadline = Date().addingTimeInterval(60)
        while swemu.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!swemu.isRunning && swemu.terminationStatus == 0)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func tripleFaultEndsWithAMessageAndRegisters() throws {
        let run = try X86GuestProgram.run("hello", ["-append", "end=fault"])
        #expect(run.status == 1)
        #expect(run.output.contains("swemu-system-x86_64: guest triple fault on vCPU 0 (KVM_EXIT_SHUTDOWN); registers:"), "\(run.output)")
        #expect(run.output.contains("RIP=") && run.output.contains("CR0=0000000080000011"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func virtioBlockReadsWhatTheHostWroteAndWritesWhatTheHostSees() throws {
        let disk = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kvm-disk-\(getpid()).raw")
        defer { try? FileManager.default.removeItem(at: disk) }
        var image = [UInt8](repeating: 0, count: 1 << 20)
        let text = Array("sector zero, written by the host".utf8)
        image.replaceSubrange(0..<text.count, with: text)
        try Data(image).write(to: disk)
        let run = try X86GuestProgram.run("virtio_blk", ["-drive", "file=\(disk.path),format=raw,if=virtio"])
        #expect(run.status == 1, "\(run.output)")  // exit code 0
        #expect(run.output.contains("sector 0: sector zero, written by the host\n"))
        #expect(run.output.contains("sector 1 written"))
        let after = try [UInt8](Data(contentsOf: disk))
        #expect(Array(after[512..<533]) == Array("written by the guest\0".utf8))
        #expect(Array(after[0..<text.count]) == text)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func virtioBlockInterruptsArriveThroughTheIOAPIC() throws {
        // The same requests, each completion waited for with hlt: the used-buffer interrupt goes
        // from the device through its irqfd to IOAPIC pin 5 and the guest's IDT.
        let disk = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kvm-irq-\(getpid()).raw")
        defer { try? FileManager.default.removeItem(at: disk) }
        try Data(count: 1 << 20).write(to: disk)
        let run = try X86GuestProgram.run("virtio_blk", ["-append", "irq", "-drive", "file=\(disk.path),format=raw,if=virtio"], timeout: 20)
        #expect(run.status == 1, "\(run.output)")
        #expect(run.output.contains("sector 1 written"))
        #expect(run.output.contains("interrupts: 0x2\n"), "\(run.output)")
    }

    /// virtio-net on the microvm, end to end with user networking: the guest's ARP request for
    /// 10.0.2.2 reaches libslirp and its reply comes back into the guest's receive buffer.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func virtioNetCarriesAnARPExchangeWithUserNetworking() throws {
        let run = try X86GuestProgram.run("virtio_net", ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0"],
                                          timeout: 30)
        #expect(run.status == 1, "\(run.output)")  // exit code 0
        #expect(run.output.contains("arp reply from 10.0.2.2\n"), "\(run.output)")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func everyVCPUOfSMP4RunsAndPrintsItsAPICID() throws {
        let run = try X86GuestProgram.run("smp", ["-smp", "4"])
        #expect(run.status == 1, "\(run.output)")
        let lines = run.output.split(whereSeparator: \.isNewline).map(String.init).filter { $0.hasPrefix("cpu ") }
        #expect(lines == (0..<4).map { "cpu 0x\($0): apic id 0x\($0)" })
        #expect(run.output.contains("all cpus reported"))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func kernelThatIsNotX86IsRefused() throws {
        let run = try Subprocess.run(X86GuestProgram.binary, ["-M", "microvm", "-nographic", "-kernel", "/etc/hostname"])
        #expect(run.status == 1)
        #expect(run.output.contains("neither a bzImage"), "\(run.output)")
    }
}

/// The monitor on a microvm: started with -S, QMP over a unix socket lets it run, stops the
/// vCPUs, reads registers while they are parked, resumes them and quits; swemu exits 0.
@Suite struct MicroVMMonitorTests {
    @Test(.enabled(if: MicroVMTests.missing == nil, "\(MicroVMTests.missing ?? "")"))
    func qmpStopInfoRegistersContQuit() throws {
        let socket = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kvm-qmp-\(getpid()).sock").path
        defer { unlink(socket) }
        let client = """
        import json, socket, sys, time
        for _ in range(200):
            try:
                s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); break
            except OSError:
                time.sleep(0.05)
        f = s.makefile("rw")
        def ask(command, **arguments):
            f.write(json.dumps({"execute": command, "arguments": arguments}) + "\\n"); f.flush()
            while True:
                reply = json.loads(f.readline())
                if "return" in reply or "error" in reply:
                    return reply
        json.loads(f.readline())  # greeting
        ask("qmp_capabilities")
        print("START", ask("query-status")["return"]["status"])
        ask("cont")               # -S: nothing ran yet
        time.sleep(0.3)           # let the guest reach its hlt
        print("STOP", ask("stop"))
        print("STATUS", ask("query-status")["return"]["status"])
        print(ask("human-monitor-command", **{"command-line": "info registers"})["return"])
        print("CONT", ask("cont"))
        print("STATUS", ask("query-status")["return"]["status"])
        print("QUIT", ask("quit"))
        """
        let elf = try X86GuestProgram.build("hello")
        let swemu = Process()
        swemu.executableURL = URL(fileURLWithPath: X86GuestProgram.binary)
        swemu.arguments = ["-M", "microvm", "-m", "128M", "-display", "none", "-kernel", elf, "-append", "end=halt",
                           "-qmp", "unix:\(socket),server=on,wait=off", "-S"]
        swemu.standardInput = FileHandle.nullDevice
        swemu.standardOutput = FileHandle.nullDevice
        swemu.standardError = FileHandle.nullDevice
        try swemu.run()
        defer { if swemu.isRunning { kill(swemu.processIdentifier, SIGKILL) } }
        let run = try Subprocess.run(Python.executable, ["-c", client, socket], timeout: 30)
        #expect(run.output.contains("START prelaunch"), "\(run.output)")  // -S: QEMU's "prelaunch" until cont
        #expect(run.output.contains("STATUS paused") && run.output.contains("STATUS running"), "\(run.output)")
        #expect(run.output.contains("RIP=0000000000100") && run.output.contains("CR3=0000000000009000"), "\(run.output)")  // in the program, after cont
        #expect(run.output.contains("QUIT {'return': {}}"), "\(run.output)")
        // A deadline only for a hang: a loaded machine may take a while to tear the VM down.
        let deadline = Date().addingTimeInterval(60)
        while swemu.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!swemu.isRunning && swemu.terminationStatus == 0)
    }
}
