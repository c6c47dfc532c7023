import CLinux
import DeviceModel
import Foundation
import Glibc
import GuestMemory
import KVM
import Machines
import Synchronization
import SystemSupport
import Testing

/// The saved state of a KVM machine (KVMVcpu+State.swift, KVMVirtualMachine+State.swift,
/// X86MicroVM+State.swift), in process: a guest program (Tests/GuestPrograms/x86_64/
/// kvmstate_counter.S) runs on an `X86MicroVM`, the board is paused and saved, the state goes
/// through JSON, a new board built with the same configuration gets the RAM and the state, and
/// the guest goes on there. Corrupt states are refused with a message.
@Suite(.serialized) struct KVMStateTests {
    static let missing: String? = {
        if !FileManager.default.isExecutableFile(atPath: X86GuestProgram.compiler) {
            return "needs \(X86GuestProgram.compiler) (Debian's gcc; scripts/setup installs it)"
        }
        if access("/dev/kvm", R_OK | W_OK) != 0 {
            return "needs read/write access to /dev/kvm (KVM flavour here: \(KVMFlavour.detect().rawValue))"
        }
        return nil
    }()

    static func configuration(_ elf: String, cpus: Int, serial: SerialCapture?) -> X86MicroVM.Configuration {
        X86MicroVM.Configuration(ramSize: 64 << 20, cpus: cpus, kernel: elf, serial: serial)
    }

    /// Copies guest RAM, as a migration stream's RAM pages would.
    static func copyRAM(from source: X86MicroVM, to destination: X86MicroVM) throws {
        let from = source.guestMemory.regions, to = destination.guestMemory.regions
        try #require(from.map(\.range) == to.map(\.range))
        for (s, d) in zip(from, to) {
            let src = try #require(s.hostPointer(at: s.range.base, count: s.size))
            let dst = try #require(d.hostPointer(at: d.range.base, count: d.size))
            dst.copyMemory(from: src, byteCount: Int(s.size))
        }
    }

    /// The program's lines "n=0x.. m=0x.. t=0x..": both counters and the clock.
    static func parse(_ text: String) -> [(n: UInt64, m: UInt64, t: UInt64)]? {
        var result: [(UInt64, UInt64, UInt64)] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 3 else { return nil }
            var values: [UInt64] = []
            for (field, label) in zip(fields, ["n=0x", "m=0x", "t=0x"]) {
                guard field.hasPrefix(label), let value = UInt64(field.dropFirst(label.count), radix: 16) else { return nil }
                values.append(value)
            }
            result.append((values[0], values[1], values[2]))
        }
        return result
    }

    /// The vCPU state minus what changes by itself between a save and a read after the restore:
    /// the TSC (it counts from the restore on).
    static func comparable(_ state: KVMVcpu.State) -> KVMVcpu.State {
        var state = state
        state.msrs.removeAll { $0.index == 0x10 }
        return state
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: [1, 2])
    func countingGuestGoesOnOnANewBoardWithoutGapOrRepeat(cpus: Int) throws {
        let elf = try X86GuestProgram.build("kvmstate_counter")
        let sourceSerial = SerialCapture()
        let source = try X86MicroVM(Self.configuration(elf, cpus: cpus, serial: sourceSerial))
        let sourceRun = BoardRun(source)
        try #require(sourceSerial.waitForLines(20, timeout: 60), "the program did not count on the source: \(sourceSerial.lastLines)")
        source.pause()
        let saved = try source.saveState()
        let json = try JSONEncoder().encode(saved)
        let decoded = try JSONDecoder().decode(X86MicroVM.State.self, from: json)
        #expect(decoded == saved)
        #expect(decoded.vcpus.map(\.id) == Array(0..<cpus))
        if cpus == 2 { #expect(decoded.vcpus[1].mpState == 1) }  // the AP still waits for INIT/SIPI (uninitialized)

        let destinationSerial = SerialCapture()
        let destination = try X86MicroVM(Self.configuration(elf, cpus: cpus, serial: destinationSerial))
        try Self.copyRAM(from: source, to: destination)
        source.requestPowerOff(exitCode: 0)
        #expect(sourceRun.wait(timeout: 30) == .powerOff(exitCode: 0))
        let before = sourceSerial.text

        // Time passes between the save and the restore; kvmclock must not show it.
        let gap = 2.5
        Thread.sleep(forTimeInterval: gap)
        try destination.restore(decoded)
        // Before any guest code runs, KVM gives back what was saved.
        for (vcpu, state) in zip(destination.vcpus, saved.vcpus) {
            let restored = try vcpu.saveState()
            #expect(Self.comparable(restored) == Self.comparable(state))
            #expect(restored.msr(0x10)! >= state.msr(0x10)!)  // the TSC goes on, never back
        }
        let vm = try destination.saveState().vm
        #expect(vm.picMaster == saved.vm.picMaster && vm.picSlave == saved.vm.picSlave && vm.ioapic == saved.vm.ioapic)
        #expect(vm.pit?.flags == saved.vm.pit?.flags && vm.pit?.channels.map(\.mode) == saved.vm.pit?.channels.map(\.mode))
        #expect(vm.clock.nanoseconds >= saved.vm.clock.nanoseconds
                && vm.clock.nanoseconds - saved.vm.clock.nanoseconds < UInt64(gap * 1e9 / 2))

        let destinationRun = BoardRun(destination)
        let enough = destinationSerial.waitForLines(20, timeout: 60)
        destination.requestPowerOff(exitCode: 0)
        #expect(destinationRun.wait(timeout: 30) == .powerOff(exitCode: 0))
        let after = destinationSerial.text
        #expect(enough, "the program did not go on after the restore: \(destinationSerial.lastLines)")
        #expect(!after.contains("wrong"), "\(destinationSerial.lastLines)")

        // One output, as if nothing had happened: the line cut by the pause is finished on the
        // destination; counters step by one; the clock never goes back nor jumps by the gap.
        let whole = before + after
        let complete = whole[..<(whole.lastIndex(of: "\n") ?? whole.startIndex)]
        let lines = try #require(Self.parse(String(complete)), "\(complete.split(separator: "\n").suffix(4))")
        #expect(lines.count >= 40)
        for (k, line) in lines.enumerated() {
            #expect(line.n == UInt64(k + 1) && line.m == UInt64(k + 1), "line \(k + 1): \(line)")
        }
        let steps = zip(lines.dropFirst(), lines).map { Int64(bitPattern: $0.t &- $1.t) }
        #expect(steps.allSatisfy { $0 >= 0 }, "kvmclock went back: \(steps)")
        #expect((steps.max() ?? 0) < Int64(gap * 1e9 / 2), "kvmclock jumped by \(steps.max() ?? 0) ns across the restore")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func runningBoardIsNeitherSavedNorRestored() throws {
        let elf = try X86GuestProgram.build("kvmstate_counter")
        let serial = SerialCapture()
        let board = try X86MicroVM(Self.configuration(elf, cpus: 1, serial: serial))
        let fresh = try board.saveState()  // before run(): at rest
        let run = BoardRun(board)
        defer {
            board.requestPowerOff(exitCode: 0)
            _ = run.wait(timeout: 30)
        }
        try #require(serial.waitForLines(2, timeout: 60))
        #expect(throws: SystemError.self) { try board.saveState() }
        #expect { try board.restore(fresh) } throws: { "\($0)".contains("pause the machine before restoring") }
        board.pause()
        #expect(board.isAtRest)
        _ = try board.saveState()
        board.resume()
        let lines = serial.text.split(separator: "\n").count
        #expect(serial.waitForLines(lines + 2, timeout: 60))
    }

    /// loadvm on a machine that has run: paused, it goes back to a state saved earlier (RAM
    /// copied back first) and counts on from there.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func pausedBoardGoesBackToAnEarlierState() throws {
        let elf = try X86GuestProgram.build("kvmstate_counter")
        let serial = SerialCapture()
        var configuration = Self.configuration(elf, cpus: 1, serial: serial)
        configuration.virtio = [.rng]
        let board = try X86MicroVM(configuration)
        let run = BoardRun(board)
        defer {
            board.requestPowerOff(exitCode: 0)
            _ = run.wait(timeout: 30)
        }
        try #require(serial.waitForLines(10, timeout: 60))
        board.pause()
        let state = try board.saveState()
        #expect(state.virtio.count == 1)
        let region = try #require(board.guestMemory.regions.first)
        let host = try #require(region.hostPointer(at: region.range.base, count: region.size))
        let ram = Data(bytes: host, count: Int(region.size))
        let counted = state.vcpus[0].registers.r12  // the line being printed when saved
        board.resume()
        try #require(serial.waitForLines(Int(counted) + 10, timeout: 60))
        board.pause()
        let mark = serial.text.count
        ram.withUnsafeBytes { host.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        try board.restore(state)
        board.resume()
        try #require(serial.waitForLines(Int(counted) + 25, timeout: 60), "\(serial.lastLines)")
        let after = String(serial.text.dropFirst(mark))
        let next = after.split(separator: "\n").first { $0.hasPrefix("n=") }
        // r12 counts the line about to be printed or being printed: the guest goes on with
        // that line (paused before it reached the UART) or the next one.
        let expected = [counted, counted + 1].map { "n=0x\(String($0, radix: 16)) m=0x\(String($0, radix: 16)) " }
        #expect(expected.contains { next?.hasPrefix($0) == true }, "saved at line \(counted), went on with \(String(describing: next))")
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func virtioDevicesMustMatch() throws {
        let elf = try X86GuestProgram.build("kvmstate_counter")
        var withRNG = Self.configuration(elf, cpus: 1, serial: nil)
        withRNG.virtio = [.rng]
        var withConsole = withRNG
        withConsole.virtio = [.console(nil)]
        let state = try X86MicroVM(withRNG).saveState()
        #expect {
            try X86MicroVM(Self.configuration(elf, cpus: 1, serial: nil)).restore(state)
        } throws: { "\($0)".contains("microvm state: 1 virtio devices saved, this machine has 0") }
        #expect {
            try X86MicroVM(withConsole).restore(state)
        } throws: { "\($0)".contains("microvm state: virtio slot 0 holds device type 4, this machine's is type 3") }
        try X86MicroVM(withRNG).restore(state)
    }

    /// A way to break a saved state, and what the refusal must say.
    struct Corruption: CustomTestStringConvertible, Sendable {
        let name: String
        let expected: String
        let cpus: Int
        let change: @Sendable (inout X86MicroVM.State) -> Void
        var testDescription: String { name }

        init(_ name: String, _ expected: String, cpus: Int = 1, _ change: @escaping @Sendable (inout X86MicroVM.State) -> Void) {
            self.name = name
            self.expected = expected
            self.cpus = cpus
            self.change = change
        }

        static let all: [Corruption] = [
            Corruption("board version", "microvm state: version 99 is not supported") { $0.version = 99 },
            Corruption("one vCPU more", "microvm state: 2 vCPUs saved, this machine has 1 (-smp must match)") { $0.vcpus.append($0.vcpus[0]) },
            Corruption("one vCPU less", "microvm state: 1 vCPUs saved, this machine has 2", cpus: 2) { $0.vcpus.removeLast() },
            Corruption("vCPUs swapped", "vCPU 0 state: the state is vCPU 1's", cpus: 2) { $0.vcpus.swapAt(0, 1) },
            Corruption("vCPU version", "vCPU 0 state: version 7 is not supported") { $0.vcpus[0].version = 7 },
            Corruption("truncated XSAVE area", "vCPU 0 state: XSAVE area of 3072 bytes (KVM_SET_XSAVE takes 4096)") {
                $0.vcpus[0].xsave?.removeLast(1024)
            },
            Corruption("no FPU state at all", "vCPU 0 state: it needs exactly one of an XSAVE area and an FPU state") {
                $0.vcpus[0].xsave = nil
                $0.vcpus[0].fpu = nil
            },
            Corruption("short LAPIC page", "vCPU 0 state: local APIC page of 100 bytes (KVM_SET_LAPIC takes 1024)") {
                $0.vcpus[0].lapic = [UInt8](repeating: 0, count: 100)
            },
            Corruption("MSR not carried", "vCPU 0 state: MSR 0xc0000080 is not one a vCPU state carries") {
                $0.vcpus[0].msrs.append(KVMVcpu.ModelSpecificRegister(index: 0xc000_0080, value: 0))  // EFER travels in SREGS
            },
            Corruption("MSR twice", "vCPU 0 state: MSR 0x10 appears twice") {
                $0.vcpus[0].msrs.append(KVMVcpu.ModelSpecificRegister(index: 0x10, value: 0))
            },
            Corruption("exception vector", "vCPU 0 state: exception vector 40 is not an exception") {
                $0.vcpus[0].events.exceptionPending = true
                $0.vcpus[0].events.exceptionNumber = 40
            },
            Corruption("MP state", "vCPU 0 state: MP state 42 is not one of x86's") { $0.vcpus[0].mpState = 42 },
            Corruption("debug register reserved bits", "set reserved bits 32-63") { $0.vcpus[0].debugRegisters?.dr7 |= 1 << 40 },
            Corruption("VM version", "VM state: version 3 is not supported") { $0.vm.version = 3 },
            Corruption("IOAPIC moved", "VM state: IOAPIC at 0xfee00000; KVM's sits at 0xfec00000") { $0.vm.ioapic?.baseAddress = 0xfee0_0000 },
            Corruption("IOAPIC pins", "VM state: 23 IOAPIC redirection entries (it has 24 pins)") { $0.vm.ioapic?.redirectionTable.removeLast() },
            Corruption("PIC half", "VM state: it needs both PICs and the IOAPIC, or none of them") { $0.vm.picSlave = nil },
            Corruption("PIC level-triggered timer", "VM state: PIC master ELCR 0x1") { $0.vm.picMaster?.elcr = 1 },
            Corruption("PIT mode", "VM state: PIT channel 0 mode 9 (0-5)") { $0.vm.pit?.channels[0].mode = 9 },
            Corruption("PIT missing", "VM state: it has no PIT state, and this VM has an in-kernel PIT") { $0.vm.pit = nil },
            Corruption("UART version", "UART 'serial0' snapshot: state version 5 is not supported") { $0.serial.version = 5 },
        ]
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: Corruption.all)
    func corruptStateIsRefusedAndChangesNothing(_ corruption: Corruption) throws {
        let elf = try X86GuestProgram.build("kvmstate_counter")
        let source = try X86MicroVM(Self.configuration(elf, cpus: corruption.cpus, serial: nil))
        var state = try source.saveState()
        corruption.change(&state)
        // The corrupt state travels as a stream would.
        let decoded = try JSONDecoder().decode(X86MicroVM.State.self, from: try JSONEncoder().encode(state))
        let target = try X86MicroVM(Self.configuration(elf, cpus: corruption.cpus, serial: nil))
        let before = try target.vcpus[0].saveState()
        var message = ""
        #expect {
            try target.restore(decoded)
        } throws: { error in
            message = "\(error)"
            return message.contains(corruption.expected)
        }
        #expect(message.contains(corruption.expected), "got: \(message)")
        #expect(Self.comparable(try target.vcpus[0].saveState()) == Self.comparable(before))
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func truncatedXSAVEInTheJSONIsRefused() throws {
        // The blob cut in the JSON text itself, as a damaged stream would be.
        let elf = try X86GuestProgram.build("kvmstate_counter")
        let board = try X86MicroVM(Self.configuration(elf, cpus: 1, serial: nil))
        let json = try JSONEncoder().encode(try board.saveState())
        var object = try #require(JSONSerialization.jsonObject(with: json) as? [String: Any])
        var vcpus = try #require(object["vcpus"] as? [[String: Any]])
        let xsave = try #require(vcpus[0]["xsave"] as? [Int])
        vcpus[0]["xsave"] = Array(xsave.prefix(512))
        object["vcpus"] = vcpus
        let damaged = try JSONDecoder().decode(X86MicroVM.State.self, from: try JSONSerialization.data(withJSONObject: object))
        #expect { try board.restore(damaged) } throws: { "\($0)".contains("XSAVE area of 512 bytes") }
    }

    /// What the board's pause relies on (X86MicroVM.runLoop, KVMVcpu.requestCompletionOnly): an
    /// `in` is only half done when KVM_RUN returns its exit, and a KVM_RUN with immediate_exit
    /// set finishes it (the value into AL, RIP past it) without running the next instruction.
    /// A bare VM in real mode: `mov $0x2f0, %dx; in (%dx), %al; hlt` at 0x1000.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func pendingInIsCompletedWithoutRunningFurther() throws {
        let kvm = try KVMSystem()
        let vm = try kvm.createVM()
        let size = 0x10000
        let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        let memory = try #require(raw == MAP_FAILED ? nil : raw)
        defer { munmap(memory, size) }
        let code: [UInt8] = [0xba, 0xf0, 0x02, 0xec, 0xf4]
        (memory + 0x1000).copyMemory(from: code, byteCount: code.count)
        try vm.setMemoryRegion(slot: 0, guestAddress: 0, size: UInt64(size), host: memory)
        try vm.setTSSAndIdentityMap(tss: 0xfffb_d000, identityMap: 0xfffb_c000)
        let vcpu = try vm.createVCPU(id: 0)
        try vcpu.setCPUID(kvm.supportedCPUID())
        var sregs = try vcpu.specialRegisters()
        sregs.cs.base = 0
        sregs.cs.selector = 0
        try vcpu.setSpecialRegisters(sregs)
        var regs = kvm_regs()
        regs.rip = 0x1000
        regs.rflags = 2
        regs.rax = 0x1111
        try vcpu.setRegisters(regs)

        #expect(try vcpu.runOnce() == .io(port: 0x2f0, size: 1, count: 1, isWrite: false))
        vcpu.setIOValue(0x42, at: 0, size: 1)
        // Saved now, the value would be lost and the `in` run again on the destination.
        let pending = try vcpu.saveState()
        #expect(pending.registers.rip == 0x1003 && pending.registers.rax == 0x1111)
        vcpu.requestCompletionOnly()
        #expect(try vcpu.runOnce() == .interrupted)
        let complete = try vcpu.saveState()
        #expect(complete.registers.rip == 0x1004 && complete.registers.rax == 0x1142)
        #expect(try vcpu.runOnce() == .halt)
    }

    // MARK: - Without KVM

    @Test func savedMSRsAreInRestoreOrder() {
        let order = KVMVcpu.savedMSRs.map(\.index)
        #expect(Set(order).count == order.count)
        #expect(order.first == 0x10)  // IA32_TSC first
        #expect(order.last == 0x6e0)  // IA32_TSC_DEADLINE last
        #expect(order.firstIndex(of: 0x4b56_4d06)! < order.firstIndex(of: 0x4b56_4d02)!)  // ASYNC_PF_INT before _EN
        #expect(order.firstIndex(of: 0x2ff)! > order.firstIndex(of: 0x20f)!)  // MTRR default type after the ranges
        // The MSRs the brief names are carried (EFER and the APIC base travel in SREGS).
        for msr: UInt32 in [0x10, 0x174, 0x175, 0x176, 0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0102,
                            0xc000_0103, 0x1a0, 0x277, 0x11, 0x12, 0x4b56_4d00, 0x4b56_4d01] {
            #expect(order.contains(msr), "MSR 0x\(String(msr, radix: 16))")
        }
        #expect(!order.contains(0xc000_0080) && !order.contains(0x1b))
        // A host list is filtered; unlisted MTRRs and TSC_AUX are still tried.
        let chosen = KVMVcpu.msrsToSave(indexList: [0x10, 0x12345, 0xc000_0082])
        #expect(chosen.contains(0x10) && chosen.contains(0xc000_0082) && chosen.contains(0xc000_0103) && chosen.contains(0x2ff))
        #expect(!chosen.contains(0x12345) && !chosen.contains(0x174))
    }

    @Test func structureSizesMatchTheKernelHeaders() {
        #expect(KVMVcpu.xsaveSize == 4096)
        #expect(KVMVcpu.lapicSize == 1024)
        #expect(MemoryLayout<kvm_irqchip>.size == 520)
        #expect(MemoryLayout<kvm_pit_state2>.size == 112)
        #expect(MemoryLayout<kvm_vcpu_events>.size == 64)
    }

    static let exported: [(name: String, value: UInt)] = [
        ("KVM_GET_MSR_INDEX_LIST", clx_KVM_GET_MSR_INDEX_LIST), ("KVM_GET_MSRS", clx_KVM_GET_MSRS),
        ("KVM_GET_CPUID2", clx_KVM_GET_CPUID2), ("KVM_GET_XCRS", clx_KVM_GET_XCRS), ("KVM_SET_XCRS", clx_KVM_SET_XCRS),
        ("KVM_GET_DEBUGREGS", clx_KVM_GET_DEBUGREGS), ("KVM_SET_DEBUGREGS", clx_KVM_SET_DEBUGREGS),
        ("KVM_GET_VCPU_EVENTS", clx_KVM_GET_VCPU_EVENTS), ("KVM_SET_VCPU_EVENTS", clx_KVM_SET_VCPU_EVENTS),
        ("KVM_GET_MP_STATE", clx_KVM_GET_MP_STATE), ("KVM_SET_MP_STATE", clx_KVM_SET_MP_STATE),
        ("KVM_GET_TSC_KHZ", clx_KVM_GET_TSC_KHZ), ("KVM_SET_TSC_KHZ", clx_KVM_SET_TSC_KHZ),
        ("KVM_GET_IRQCHIP", clx_KVM_GET_IRQCHIP), ("KVM_SET_IRQCHIP", clx_KVM_SET_IRQCHIP),
        ("KVM_GET_PIT2", clx_KVM_GET_PIT2), ("KVM_SET_PIT2", clx_KVM_SET_PIT2),
        ("KVM_GET_CLOCK", clx_KVM_GET_CLOCK), ("KVM_SET_CLOCK", clx_KVM_SET_CLOCK),
    ]

    /// The request numbers CLinux exports for saved state, and the byte offset of the IOAPIC's
    /// redirection table in `struct kvm_irqchip` (which Swift cannot import), against the
    /// kernel headers as the host gcc sees them.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/gcc"),
                   "needs /usr/bin/gcc (Debian's gcc; scripts/setup installs it)"))
    func ioctlNumbersAndOffsetsMatchTheKernelHeaders() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kvmstate-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("numbers.c")
        let lines = Self.exported.map { "    printf(\"\($0.name) %lu\\n\", (unsigned long)\($0.name));" }
            + ["    printf(\"redirtbl %lu\\n\", (unsigned long)offsetof(struct kvm_irqchip, chip.ioapic.redirtbl));"]
        try ("#include <stddef.h>\n#include <stdio.h>\n#include <linux/kvm.h>\nint main(void) {\n" + lines.joined(separator: "\n") + "\n    return 0;\n}\n")
            .write(to: source, atomically: true, encoding: .utf8)
        let binary = directory.appendingPathComponent("numbers").path
        #expect(try Subprocess.run("/usr/bin/gcc", ["-o", binary, source.path]).status == 0)
        var fromHeaders: [String: UInt] = [:]
        for line in try Subprocess.run(binary, []).output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, let value = UInt(parts[1]) { fromHeaders[String(parts[0])] = value }
        }
        for (name, value) in Self.exported { #expect(fromHeaders[name] == value, "\(name)") }
        #expect(fromHeaders["redirtbl"] == 32)
    }
}

/// COM1 output, kept.
final class SerialCapture: CharBackend {
    let label = "capture"
    private let bytes = Mutex<[UInt8]>([])

    func attach(_ frontend: (any CharFrontend)?) {}
    func write(_ bytes: [UInt8]) { self.bytes.withLock { $0 += bytes } }
    func acceptInput() {}

    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }

    /// The last few lines, on one line (test messages show only their first line).
    var lastLines: String { "\(text.split(separator: "\n").suffix(3))" }

    /// Waits until `count` whole lines have come (or a line says "wrong"); false on timeout.
    func waitForLines(_ count: Int, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let text = self.text
            if text.contains("wrong") { return false }
            if text.filter({ $0 == "\n" }).count >= count { return true }
            usleep(5_000)
        }
        return false
    }
}

/// `X86MicroVM.run()` on a thread of its own.
final class BoardRun: Sendable {
    private let result = Mutex<Result<X86MicroVM.Exit, SystemError>?>(nil)

    init(_ board: X86MicroVM) {
        Thread.detachNewThread { [self] in
            let outcome = Result { () throws(SystemError) in try board.run() }
            result.withLock { $0 = outcome }
        }
    }

    /// How the run ended, or nil if it has not within `timeout` seconds.
    func wait(timeout: Double) -> X86MicroVM.Exit? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let outcome = result.withLock({ $0 }) { return try? outcome.get() }
            usleep(5_000)
        }
        return nil
    }
}
