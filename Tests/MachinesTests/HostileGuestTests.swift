import Foundation
import Testing
import TestSupport

/// The hostile-guest suite on the RISC-V `virt` board (issue 15, host safety):
/// Tests/GuestPrograms/riscv/hostile/hostile.S fuzzes every MMIO window of the board, abuses
/// the virtqueues of every virtio device type, resets devices mid-request and storms
/// interrupts; it then checks the devices still work and prints HOSTILE-DONE. swemu (the
/// release binary, both engines) must run it to that marker without a crash, a hang or a
/// message of its own, within a memory bound, while a second VM on the same host (ticker.S,
/// started again and again for as long) runs on untouched.
///
/// The seed is printed in every failure; `SWEMU_HOSTILE_SEED=<hex>` replays it.
@Suite(.serialized) struct HostileGuestTests {
    static var missing: String? {
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (swift build -c release; scripts/test builds it)"
        }
        return GuestProgram.compilerMissingReason
    }

    /// Guest RAM (hostile.S's RAM_END assumes 64 MiB).
    static let ramMiB = 64
    /// What swemu may hold beyond the guest's RAM. The whole process measured 27 MiB resident
    /// at its peak on both engines (code, the Swift runtime, libslirp, thread stacks, the part
    /// of the JIT's code buffer in use, and the few guest pages the program touches), the same
    /// as for a well-behaved guest; 64 MiB more than the RAM leaves room for a busier host
    /// while anything that grows with what the guest does (queued frames or console bytes,
    /// leaked chains, log lines kept) passes it within the run's hundreds of thousands of
    /// accesses.
    static let allowanceMiB = 64
    static let boundKiB = (ramMiB + allowanceMiB) << 10

    static func program(_ name: String) throws -> String {
        try FileManager.default.createDirectory(at: GuestProgram.outputDirectory.appendingPathComponent("hostile"),
                                                withIntermediateDirectories: true)
        return try GuestProgram.build(name)
    }

    @Test(.enabled(if: missing == nil, "\(missing ?? "")"), arguments: LinuxBootTests.accelerators)
    func hostileGuestLeavesTheHostAndOtherVMsAlone(accel: String) throws {
        let hostile = try Self.program("hostile/hostile")
        let ticker = try GuestProgram.build("ticker")
        let directory = try TestDirectory("swemu-hostile")
        let seed = HostileGuest.seed()
        let disk = directory.path("disk.raw")
        try HostileGuest.writeDisk(seed: seed, to: disk)
        let replay = "seed \(String(seed, radix: 16)) (replay: SWEMU_HOSTILE_SEED=\(String(seed, radix: 16)))"

        let neighbour = RepeatedRun(path: LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic",
                                                                  "-kernel", ticker, "-accel", accel], timeout: 60)
        let run = try runWatchingMemory(path: LinuxBootTests.binary,
                                        ["-M", "virt", "-bios", "none", "-m", "\(Self.ramMiB)M", "-nographic", "-kernel", hostile,
                                         "-accel", accel] + HostileGuest.devices(disk: disk),
                                        timeout: 120, memoryLimitKiB: Self.boundKiB)
        let neighbours = neighbour.stop()

        #expect(run.signal == nil && run.status == 0 && run.output.contains("HOSTILE-DONE"),
                "\(accel), \(replay): \(run.summary())")
        #expect(run.output.contains("HOSTILE seed=0x\(String(format: "%016lx", seed))"), "the guest did not read its seed from the disk")
        // Nothing the guest did is swemu's error: no line of its own (errors, warnings) at all.
        let own = run.output.split(whereSeparator: \.isNewline).filter { $0.contains("swemu-system-riscv64:") }
        #expect(own.isEmpty, "\(accel), \(replay): swemu said: \(own.joined(separator: "\n"))")
        #expect(run.peakResidentKiB > 0 && run.peakResidentKiB <= Self.boundKiB,
                "\(accel), \(replay): peak resident \(run.peakResidentKiB) KiB, bound \(Self.boundKiB) KiB")

        // The neighbour: every run to its end, all 100 ticks in order. (ticker.S also says when
        // guest time jumped by more than 0.5 s between ticks; on a loaded host a process may
        // wait that long for a CPU, so that line is not held against it.)
        #expect(!neighbours.isEmpty)
        for (i, other) in neighbours.enumerated() {
            let ticks = other.output.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("tick ") }
            let expected = (0..<100).map { "tick " + String(format: "%016lx", $0) }
            #expect(other.status == 0 && ticks.map(String.init) == expected,
                    "neighbour run \(i + 1) of \(neighbours.count) beside \(replay): exit \(other.status), output: \(other.output.suffix(800))")
        }
    }
}
