import CLinux
import Foundation
import Glibc
import GuestMemory
import KVM
import Machines
import Migration
import SystemSupport
import Testing
import TestSupport

/// Live migration and save/restore of the KVM microvm (X86MicroVM+Migration.swift,
/// KVMMachine+Migration.swift, KVMVirtualMachine+DirtyLog.swift).
///
/// In process: KVM's dirty log, merged into the RAM's dirty bitmap, names every page the guest
/// changed, the 4 MiB buffer migrate_counter rewrites from user mode (native speed, no exit)
/// included. Between processes (kvm_migration.py, driven by QEMU's qemu.qmp client): the
/// migrate_counter guest moves over a unix socket while it counts, through several passes of
/// dirty pages, and through a file; its output goes on in the destination with no gap and no
/// repeat and its checks (buffer, state, clock) hold; streams from another machine are refused.
@Suite(.serialized) struct KVMMigrationTests {
    static let missing: String? = X86GuestProgram.missing

    static var scriptMissing: String? { missing ?? Python.missing("qemu.qmp") }

    /// The RISC-V emulator built beside the x86-64 one, for a stream from the other machine.
    static let riscvBinary = URL(fileURLWithPath: X86GuestProgram.binary).deletingLastPathComponent()
        .appendingPathComponent("swemu-system-riscv64").path

    static func run(_ scenario: String) throws {
        let elf = try X86GuestProgram.build("migrate_counter")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-kvm-migrate-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("kvm_migration.py").path
        let result = try Subprocess.run(Python.executable, [script, X86GuestProgram.binary, elf, dir.path, scenario, riscvBinary],
                                        timeout: 300)
        for line in result.output.split(separator: "\n") where line.hasPrefix("timing ") { print(line) }
        #expect(result.status == 0, "\(result.output)")
        #expect(!result.output.contains("FAIL"), "\(result.output)")
    }

    @Test(.enabled(if: scriptMissing == nil, "\(scriptMissing ?? "")"), arguments: ["unix", "file", "faults", "snapshots"])
    func migratesWithNothingLost(_ scenario: String) throws { try Self.run(scenario) }

    @Test(.enabled(if: scriptMissing == nil && FileManager.default.isExecutableFile(atPath: riscvBinary),
                   "\(scriptMissing ?? "needs \(riscvBinary) (swift build)")"))
    func refusesStreamsOfOtherMachines() throws { try Self.run("refused") }

    /// Every page whose contents changed between two looks is among the dirty pages of the
    /// second look, over several rounds with the guest running between them; and logging
    /// ends with tracking.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func dirtyLogNamesEveryPageTheGuestWrote() throws {
        let elf = try X86GuestProgram.build("migrate_counter")
        let serial = SerialCapture()
        let board = try X86MicroVM(X86MicroVM.Configuration(ramSize: 64 << 20, cpus: 1, kernel: elf, serial: serial))
        let run = BoardRun(board)
        defer {
            board.requestPowerOff(exitCode: 0)
            _ = run.wait(timeout: 30)
        }
        try #require(serial.waitForLines(5, timeout: 60), "\(serial.lastLines)")
        let region = try #require(board.memory.regions.first)
        let host = try #require(region.hostPointer(at: region.range.base, count: region.size))
        let pages = Int(region.size) / 4096

        board.pause()
        board.memory.setDirtyTracking(true)
        board.syncDirtyLog()
        #expect(board.isLoggingDirtyPages)
        #expect(board.memory.takeDirtyPages().count == pages)  // tracking starts with every page dirty
        for round in 1...3 {
            let before = Data(bytes: host, count: Int(region.size))
            let lines = serial.text.split(separator: "\n").count
            board.resume()
            try #require(serial.waitForLines(lines + 5, timeout: 60), "\(serial.lastLines)")
            board.pause()
            board.syncDirtyLog()
            let dirty = Set(board.memory.takeDirtyPages().map { Int($0.rawValue >> 12) })
            var changed: [Int] = []
            before.withUnsafeBytes { old in
                for page in 0..<pages where memcmp(old.baseAddress! + page * 4096, host + page * 4096, 4096) != 0 {
                    changed.append(page)
                }
            }
            let missed = changed.filter { !dirty.contains($0) }
            #expect(missed.isEmpty, "round \(round): \(missed.count) changed pages not logged, first at 0x\(String((missed.first ?? 0) * 4096, radix: 16))")
            // The 4 MiB buffer, rewritten after every count, at least.
            #expect(changed.count >= 1024, "round \(round): \(changed.count) pages changed")
            #expect(dirty.count < pages / 2, "round \(round): \(dirty.count) of \(pages) pages logged")
        }
        board.memory.setDirtyTracking(false)
        board.syncDirtyLog()
        #expect(!board.isLoggingDirtyPages)
        #expect(board.dirtyLogFailure == nil)
        let lines = serial.text.split(separator: "\n").count
        board.resume()
        #expect(serial.waitForLines(lines + 5, timeout: 60), "\(serial.lastLines)")
        #expect(!serial.text.contains("BAD"), "\(serial.lastLines)")
    }

    /// The dirty log's request number and flag, against include/uapi/linux/kvm.h:
    /// `_IOW(KVMIO, 0x42, struct kvm_dirty_log)` and bit 0.
    @Test func dirtyLogConstantsMatchTheKernelsABI() {
        #expect(MemoryLayout<kvm_dirty_log>.size == 16)
        #expect(clx_KVM_GET_DIRTY_LOG == IoctlNumberTests.ioc(IoctlNumberTests.write, 0x42, MemoryLayout<kvm_dirty_log>.size))
        #expect(clx_KVM_MEM_LOG_DIRTY_PAGES == 1)
    }

    /// The stream's header: what the microvm says it is.
    @Test(.enabled(if: missing == nil, "\(missing ?? "")"))
    func describesItselfAndRefusesAnotherMachine() throws {
        let elf = try X86GuestProgram.build("migrate_counter")
        var configuration = X86MicroVM.Configuration(ramSize: 64 << 20, cpus: 2, kernel: elf)
        configuration.virtio = [.rng]
        let board = try X86MicroVM(configuration)
        let description = board.migrationDescription
        #expect(description.machine == "x86_64 microvm" && description.accelerator == "kvm" && description.cpus == 2)
        #expect(description.ram == [.init(base: 0, size: 64 << 20)])
        #expect(description.components == ["cpu0", "cpu1", "vm", "serial0", "virtio-mmio@d0000000", "board"])
        // Saved before it ran, restored into a twin: the names and versions go round.
        let saved = try board.saveComponents()
        #expect(saved.map(\.name) == description.components)
        let twin = try X86MicroVM(configuration)
        try twin.restoreComponents(saved)
        #expect { try twin.restoreComponents(Array(saved.reversed())) } throws: { "\($0)".contains("are not this machine's") }
        var newer = saved
        newer[0].version += 1
        #expect { try twin.restoreComponents(newer) } throws: { "\($0)".contains("cpu0: state version 2 is not supported") }
        let riscv = MachineDescription(machine: "riscv64 virt", accelerator: "tcg", cpus: 2, ram: [.init(base: 0x8000_0000, size: 64 << 20)],
                                       components: ["clock", "cpu0", "cpu1", "aclint", "plic", "serial0", "rtc"])
        #expect(riscv.differences(from: description).first == "machine: the stream's is riscv64 virt, this one is x86_64 microvm")
    }
}
