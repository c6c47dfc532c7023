import Foundation
import Machines
import Testing

/// Claims of the README that the `virt` programs in Tests/GuestPrograms/riscv (BareMetalTests)
/// cannot prove, with programs of their own in Tests/GuestPrograms/riscv-claims:
/// - where QEMU 7.2 is wrong, the spec's answer, checked on swemu alone (both engines);
/// - `-M spike` running an HTIF program through the real binary, as QEMU's spike does;
/// - `-d in_asm` showing each executed instruction as `riscv64-unknown-elf-objdump -d` does;
/// - `-smp 64` booting a program on which every hart checks in, and `-smp 65` refused.
@Suite(.serialized) struct ClaimsTests {
    static let sources = GuestProgram.packageRoot.appendingPathComponent("Tests/GuestPrograms/riscv-claims")
    static let objdump = "/usr/bin/riscv64-unknown-elf-objdump"

    /// The release binary's absence, or the compiler's, as a skip reason.
    static var binaryMissing: String? {
        if let reason = GuestProgram.compilerMissingReason { return reason }
        if !FileManager.default.isExecutableFile(atPath: LinuxBootTests.binary) {
            return "needs the release binary \(LinuxBootTests.binary) (swift build -c release; scripts/test builds it)"
        }
        return nil
    }

    /// Builds `riscv-claims/name.S` (with riscv/test.h and link.ld) into a temporary ELF.
    static func build(_ name: String) throws -> String {
        let riscv = GuestProgram.sourceDirectory
        let output = FileManager.default.temporaryDirectory
            .appendingPathComponent("swemu-claims-\(getpid())-\(UInt32.random(in: 0...UInt32.max))-\(name).elf").path
        let result = try GuestProgram.run(GuestProgram.compiler, ["-march=rv64gc_zba_zbb_zbs", "-mabi=lp64d", "-nostdlib", "-nostartfiles",
                                                                  "-T", riscv.appendingPathComponent("link.ld").path, "-I", riscv.path,
                                                                  "-o", output, sources.appendingPathComponent("\(name).S").path])
        guard result.status == 0 else { throw GuestProgram.BuildError(message: "building \(name).S failed:\n\(result.output)") }
        return output
    }

    /// Runs `riscv-claims/name.S` on the `virt` board; the exit code names the failing check.
    static func runOnBoard(_ name: String, harts: Int = 1, engine: RISCVBoard.EngineKind) throws -> (RISCVBoard.Exit, String) {
        let elf = try build(name)
        defer { try? FileManager.default.removeItem(atPath: elf) }
        let console = CaptureBackend()
        let board = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: console, harts: harts, engine: engine))
        defer { board.close() }
        return (try board.run(), console.text)
    }

    // MARK: - The spec's answer where QEMU 7.2 gives another

    /// Each program's header says what QEMU 7.2 does instead and cites the spec:
    /// `hpm_spec` (mhpmcounter19-31 exist and read zero; mcountinhibit bit 1 is zero, §3.1.10,
    /// §3.1.12), `pte_outside` (a page-table walk into no memory is an access fault, §4.3.2
    /// step 2), `sstc_stce_off` (with menvcfg.STCE = 0 stimecmp does not drive STIP),
    /// `s_fetch_user_page` (S-mode never executes a U page, even once SUM let it load from it,
    /// §4.3.1; found by QEMUOracleTests). QEMU runs the rest of each area in riscv/hpm.S,
    /// riscv/pagefaults.S, riscv/sstc.S and riscv/mmu.S.
    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil, "needs Debian's gcc-riscv64-unknown-elf (scripts/setup)"),
          arguments: ["hpm_spec", "pte_outside", "sstc_stce_off", "s_fetch_user_page"], BareMetalTests.engines)
    func specAnswers(_ name: String, engine: RISCVBoard.EngineKind) throws {
        let (exit, console) = try Self.runOnBoard(name, engine: engine)
        #expect(exit == .powerOff(exitCode: 0), "\(name) (\(engine)): check \(exit) failed; console: \(console)")
    }

    // MARK: - -M spike and HTIF

    /// `htif_hello` prints a line through HTIF's console (device 1) and exits with code 42
    /// (device 0): the binary must print exactly that line and exit 42, on both engines, and
    /// QEMU's spike machine does the same with the same ELF.
    @Test(.enabled(if: binaryMissing == nil, "\(binaryMissing ?? "")"), arguments: LinuxBootTests.accelerators)
    func spikeRunsAnHTIFProgram(_ accel: String) throws {
        let elf = try Self.build("htif_hello")
        defer { try? FileManager.default.removeItem(atPath: elf) }
        let ours = try GuestProgram.run(LinuxBootTests.binary, ["-M", "spike", "-bios", "none", "-m", "16M", "-nographic",
                                                                "-accel", accel, "-kernel", elf], timeout: 60)
        #expect(ours.status == 42, "\(accel): exit \(ours.status), output \(ours.output)")
        #expect(ours.output == "hello from HTIF\n", "\(accel): \(ours.output.debugDescription)")
        guard FileManager.default.isExecutableFile(atPath: GuestProgram.qemu) else { return }
        let qemu = try GuestProgram.run(GuestProgram.qemu, ["-M", "spike", "-bios", "none", "-m", "16M", "-nographic",
                                                            "-display", "none", "-monitor", "none", "-kernel", elf], timeout: 60)
        #expect(qemu.status == ours.status && qemu.output == ours.output,
                "QEMU: exit \(qemu.status), output \(qemu.output.debugDescription)")
    }

    /// A spike program without `tohost`/`fromhost` is refused with a message naming them.
    @Test(.enabled(if: binaryMissing == nil, "\(binaryMissing ?? "")"))
    func spikeRefusesAProgramWithoutHTIFSymbols() throws {
        let elf = try Self.build("harts64")
        defer { try? FileManager.default.removeItem(atPath: elf) }
        let result = try GuestProgram.run(LinuxBootTests.binary, ["-M", "spike", "-bios", "none", "-m", "16M", "-nographic",
                                                                  "-kernel", elf], timeout: 60)
        #expect(result.status != 0)
        #expect(result.output.contains("'tohost' and 'fromhost'"), "\(result.output)")
    }

    // MARK: - -d in_asm against objdump

    /// Every instruction `-d in_asm` shows for a guest program (the interpreter shows each
    /// executed one, the JIT each one it translates) reads as objdump's disassembly of the
    /// same ELF at that address: the same bits, mnemonic and operands (objdump's `# comment`
    /// and `<label>` suffixes dropped, as DisassemblerTests does). pmp.S runs in M, S and U;
    /// hpm.S reads the counter CSRs by name.
    @Test(.enabled(if: binaryMissing == nil && FileManager.default.isExecutableFile(atPath: objdump),
                   "\(binaryMissing ?? "needs \(objdump) (Debian's binutils-riscv64-unknown-elf)")"),
          arguments: ["pmp", "hpm"], LinuxBootTests.accelerators)
    func inAsmMatchesObjdump(_ program: String, accel: String) throws {
        let elf = try GuestProgram.build(program)
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-in-asm-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let run = try GuestProgram.run(LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic",
                                                               "-accel", accel, "-d", "in_asm", "-D", log.path, "-kernel", elf])
        #expect(run.status == 0, "\(run.output)")
        let dump = try GuestProgram.run(Self.objdump, ["-d", elf])
        try #require(dump.status == 0, "\(dump.output)")
        var expected: [UInt64: (bits: String, text: String)] = [:]
        for line in dump.output.split(separator: "\n") {
            // "    80000004:\t28428293          \tadd\tt0,t0,644 # 80000284 <trap_entry>"
            let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[0].hasSuffix(":"),
                  let pc = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            var text = String(fields[2])
            if let hash = text.range(of: " #") { text = String(text[..<hash.lowerBound]) }
            if let label = text.range(of: " <") { text = String(text[..<label.lowerBound]) }
            text = text.trimmingCharacters(in: .whitespaces)
            // Data words, and 0xc0001073 (`csrw cycle,zero`, which objdump calls `unimp`; hpm.S
            // runs it to be refused), are skipped as DisassemblerTests skips them.
            if text.hasPrefix(".") || text.hasPrefix("unimp") { continue }
            expected[pc] = (fields[1].trimmingCharacters(in: .whitespaces), text)
        }
        let trace = try String(contentsOf: log, encoding: .utf8)
        var compared = 0
        var mismatches: [String] = []
        for line in trace.split(separator: "\n") where line.hasPrefix("0x") {
            // "0x0000000080000004:  28428293          add\tt0,t0,644"
            guard let colon = line.firstIndex(of: ":"), let pc = UInt64(line[line.index(line.startIndex, offsetBy: 2)..<colon], radix: 16),
                  let want = expected[pc] else { continue }
            let rest = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            let parts = rest.split(separator: " ", maxSplits: 1)
            guard parts.count == 2 else { mismatches.append(String(line)); continue }
            let bits = String(parts[0])
            let text = parts[1].trimmingCharacters(in: .whitespaces)
            compared += 1
            if bits != want.bits || text != want.text {
                mismatches.append("\(String(pc, radix: 16)): in_asm '\(bits) \(text)' objdump '\(want.bits) \(want.text)'")
            }
        }
        // The whole program runs (hundreds of instructions), so most of it is compared.
        #expect(compared > 100, "only \(compared) in_asm lines matched program addresses:\n\(trace.prefix(1000))")
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(compared) differ:\n\(mismatches.prefix(30).joined(separator: "\n"))")
    }

    // MARK: - -d int, exec, cpu, mmu against QEMU

    /// `-d int` prints QEMU 7.2's `riscv_cpu_do_interrupt` line for every trap; for programs
    /// that trap in M, S and U the lines must equal QEMU's, line for line, but for two documented
    /// differences: EBREAK's tval (QEMU 0, swemu the pc: both allowed, Privileged §3.1.16) and
    /// an AMO's cause (QEMU 7.2 reports load causes, QEMUDeparture.amoFaultsAsLoads in
    /// RISCVJITTests). `-d exec,cpu,mmu` must write their kinds of line too (exec: one
    /// `Trace` line per block or instruction; cpu: the `info registers` dump).
    @Test(.enabled(if: binaryMissing == nil && FileManager.default.isExecutableFile(atPath: GuestProgram.qemu)
                   && FileManager.default.isExecutableFile(atPath: objdump),
                   "\(binaryMissing ?? "needs qemu-system-riscv64 and riscv64-unknown-elf-objdump (scripts/setup)")"),
          arguments: ["traps", "privilege", "pagefaults", "pmp", "tvm_tsr_tw"], LinuxBootTests.accelerators)
    func interruptLogMatchesQEMU(_ program: String, accel: String) throws {
        let elf = try GuestProgram.build(program)
        func log(_ binary: String, _ extra: [String], items: String) throws -> String {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-d-\(UUID().uuidString).log")
            defer { try? FileManager.default.removeItem(at: file) }
            let run = try GuestProgram.run(binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic", "-monitor", "none"]
                                           + extra + ["-d", items, "-D", file.path, "-kernel", elf])
            #expect(run.status == 0, "\(binary): \(run.output)")
            return try String(contentsOf: file, encoding: .utf8)
        }
        let ours = try log(LinuxBootTests.binary, ["-accel", accel], items: "int,exec,cpu,mmu")
        let theirs = try log(GuestProgram.qemu, [], items: "int")
        let interrupts = { (text: String) in text.split(separator: "\n").filter { $0.hasPrefix("riscv_cpu_do_interrupt:") } }
        let a = interrupts(ours), b = interrupts(theirs)
        #expect(a.count == b.count && a.count > 3, "\(program): swemu logged \(a.count) traps, QEMU \(b.count)")
        let amo = try Self.atomicAddresses(elf)
        for (x, y) in zip(a, b) where x != y {
            #expect(Self.allowedDifference(swemu: String(x), qemu: String(y), atomics: amo), "\(program):\n  swemu \(x)\n  QEMU  \(y)")
        }
        // The program's first instruction, in M-mode (QEMU's layout; flags = the privilege).
        #expect(ours.contains("Trace 0: 0x0 [0000000000000000/0000000080000000/00000003/00000000] \n"), "\(program): no exec line")
        #expect(ours.contains(" pc       ") && ours.contains("x1/ra"), "\(program): no cpu dump")
    }

    /// The addresses of AMO and SC instructions in `elf` (objdump).
    static func atomicAddresses(_ elf: String) throws -> Set<UInt64> {
        let dump = try GuestProgram.run(objdump, ["-d", elf])
        var out: Set<UInt64> = []
        for line in dump.output.split(separator: "\n") {
            let fields = line.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3, fields[0].hasSuffix(":"), fields[2].hasPrefix("amo") || fields[2].hasPrefix("sc."),
                  let pc = UInt64(fields[0].dropLast().trimmingCharacters(in: .whitespaces), radix: 16) else { continue }
            out.insert(pc)
        }
        return out
    }

    /// Whether two `riscv_cpu_do_interrupt` lines differ only as the test allows.
    static func allowedDifference(swemu: String, qemu: String, atomics: Set<UInt64>) -> Bool {
        func fields(_ line: String) -> [String: String] {
            var out: [String: String] = [:]
            for part in line.dropFirst("riscv_cpu_do_interrupt: ".count).split(separator: ",") {
                let kv = part.trimmingCharacters(in: .whitespaces).split(separator: ":", maxSplits: 1)
                if kv.count == 2 { out[String(kv[0])] = String(kv[1]) } else if part.contains("desc=") { out["desc"] = String(part) }
            }
            return out
        }
        var s = fields(swemu)
        let q = fields(qemu)
        guard let epcText = s["epc"], let epc = UInt64(epcText.dropFirst(2), radix: 16) else { return false }
        if s["cause"] == q["cause"], s["cause"].flatMap({ UInt64($0, radix: 16) }) == 3, q["tval"] == "0x0000000000000000" {
            s["tval"] = q["tval"]
        }
        if atomics.contains(epc), let sc = s["cause"].flatMap({ UInt64($0, radix: 16) }), let qc = q["cause"].flatMap({ UInt64($0, radix: 16) }),
           [6: 4, 7: 5, 15: 13][sc] == qc {
            s["cause"] = q["cause"]
            s["desc"] = q["desc"]
        }
        return s == q
    }

    // MARK: - 64 harts, and no more

    /// README: "up to 64 harts". Every one of 64 harts checks in (each sets its own bit of a
    /// shared word with amoor.d, which also catches a hart id given twice); hart 0 passes once
    /// all 64 bits are set. On the board with both engines, and through the binary's -smp.
    @Test(.enabled(if: GuestProgram.compilerMissingReason == nil, "needs Debian's gcc-riscv64-unknown-elf (scripts/setup)"),
          arguments: BareMetalTests.engines)
    func sixtyFourHartsCheckIn(_ engine: RISCVBoard.EngineKind) throws {
        let (exit, console) = try Self.runOnBoard("harts64", harts: 64, engine: engine)
        #expect(exit == .powerOff(exitCode: 0), "\(engine): \(exit); console: \(console)")
    }

    @Test(.enabled(if: binaryMissing == nil, "\(binaryMissing ?? "")"))
    func smp64RunsAndSmp65IsRefused() throws {
        let elf = try Self.build("harts64")
        defer { try? FileManager.default.removeItem(atPath: elf) }
        let ok = try GuestProgram.run(LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic",
                                                              "-smp", "64", "-kernel", elf])
        #expect(ok.status == 0, "-smp 64: exit \(ok.status): \(ok.output)")
        let refused = try GuestProgram.run(LinuxBootTests.binary, ["-M", "virt", "-bios", "none", "-m", "16M", "-nographic",
                                                                   "-smp", "65", "-kernel", elf])
        #expect(refused.status == 1, "-smp 65: exit \(refused.status)")
        #expect(refused.output.contains("-smp: 65 CPUs requested but machine 'virt' supports at most 64"), "\(refused.output)")
        // The board itself refuses too, whoever builds it.
        #expect(throws: (any Error).self) {
            _ = try RISCVBoard(.init(kind: .virt, ramSize: 16 << 20, kernel: elf, serial: nil, harts: 65))
        }
    }
}
