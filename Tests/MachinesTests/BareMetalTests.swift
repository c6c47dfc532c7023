import Foundation
import Machines
import Synchronization
import Testing

/// Every program in Tests/GuestPrograms/riscv runs on the `virt` board and must pass (exit 0);
/// on failure the exit code is the number of the failing check in the source.
@Suite(.serialized) struct BareMetalTests {
    /// `smp*` programs run on four harts, the others on one.
    static func harts(_ name: String) -> Int { name.hasPrefix("smp") ? 4 : 1 }

    /// Both execution engines: the interpreter (the reference) and the JIT.
    static let engines: [RISCVBoard.EngineKind] = [.interpreter, .jit(codeBufferSize: RISCVBoard.EngineKind.defaultCodeBufferSize)]

    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil, "needs Debian's gcc-riscv64-unknown-elf (scripts/setup)"),
          arguments: GuestProgram.all, engines)
    func programPasses(_ name: String, engine: RISCVBoard.EngineKind) throws {
        let elf = try GuestProgram.build(name)
        let console = CaptureBackend()
        let board = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: console, harts: Self.harts(name),
                                         engine: engine))
        defer { board.close() }
        let exit = try board.run()
        #expect(exit == .powerOff(exitCode: 0), "\(name) (\(engine)): check \(exit) failed; console: \(console.text)")
    }

    /// The VMM stopping the machine and running it again (what every monitor request that
    /// needs the machine at rest does) is no reason for a hart to leave WFI: smp_wfi passes
    /// while another thread interrupts the run every 100 µs. The program's delays are in
    /// mtime (100 ms in all), so the run lasts as long under either engine.
    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil, "needs Debian's gcc-riscv64-unknown-elf (scripts/setup)"),
          arguments: engines)
    func wfiOutlastsMachineStops(engine: RISCVBoard.EngineKind) throws {
        let elf = try GuestProgram.build("smp_wfi")
        let console = CaptureBackend()
        let board = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: console, harts: 4, engine: engine))
        defer { board.close() }
        let running = Atomic<Bool>(true)
        let stops = Atomic<Int>(0)
        let interrupter = Thread {
            while running.load(ordering: .relaxed) {
                // What the VMM does for each monitor request: every hart parked, then run again.
                board.pause()
                stops.add(1, ordering: .relaxed)
                board.resume()
                usleep(100)
            }
        }
        interrupter.start()
        let exit = try board.run()
        running.store(false, ordering: .relaxed)
        let stopCount = stops.load(ordering: .relaxed)
        #expect(exit == .powerOff(exitCode: 0), "smp_wfi (\(engine)) under machine stops: \(exit); console: \(console.text)")
        #expect(stopCount > 10, "the run was paused only \(stopCount) times")
    }

    /// Differential check: QEMU runs the same program to the same exit status and console output.
    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil && FileManager.default.isExecutableFile(atPath: GuestProgram.qemu),
                   "needs gcc-riscv64-unknown-elf and qemu-system-riscv64 (Debian's qemu-system-misc)"),
          arguments: GuestProgram.all)
    func qemuAgrees(_ name: String) throws {
        let elf = try GuestProgram.build(name)
        let console = CaptureBackend()
        let board = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: console, harts: Self.harts(name)))
        defer { board.close() }
        let ours = try board.run()
        let qemu = try GuestProgram.run(GuestProgram.qemu, ["-M", "virt", "-bios", "none", "-kernel", elf, "-nographic",
                                                            "-display", "none", "-monitor", "none", "-m", "16M",
                                                            "-smp", "\(Self.harts(name))"])
        guard case .powerOff(let code) = ours else {
            Issue.record("\(name): swemu did not power off: \(ours)")
            return
        }
        #expect(code == qemu.status, "\(name): swemu exit \(code), QEMU exit \(qemu.status)")
        #expect(console.text == qemu.output, "\(name): console output differs")
    }
}
