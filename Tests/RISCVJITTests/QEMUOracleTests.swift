import Foundation
import GuestMemory
import RISCV
import RISCVJIT
import Testing

/// The CPU oracle: random programs (the generator of `DifferentialRun`, in its QEMU form) run on
/// Debian's `qemu-system-riscv64` and on swemu's interpreter and JIT, and the three must print
/// the same state dump (`QEMUDump`): every x and f register, fcsr, mstatus and the CSRs both
/// implement, every trap the M handler took (cause, epc, tval, mstatus), and a hash of each
/// page of RAM a program can reach (code it rewrote, data, page tables with their A/D bits).
///
/// What the QEMU form leaves out, and why: the MMIO test device (QEMU has none; device accesses
/// go to an address no device decodes, so they are access faults on both), reads of
/// cycle/instret/mcycle/minstret and writes of stimecmp (QEMU counts host time without
/// `-icount`). Everything else the generator makes is kept: all privilege levels, Sv39/48/57
/// with every PTE kind it builds, PMP, misaligned and page-crossing accesses, AMOs, LR/SC,
/// CSRs, interrupts raised by CSR writes, self-modifying code.
///
/// QEMU runs `-M virt -bios none` with 4 MiB of RAM (its device tree goes at 2 MiB, above all
/// the program uses) and its `rv64` CPU with every extension swemu lacks switched off
/// (`cpuOption`). Where QEMU 7.2 departs from the specification, `QEMUDeparture` says how and
/// the generator avoids that case (each departure is checked on swemu alone, against the
/// spec, by a guest program or test named there).
///
/// Environment (as DifferentialTests): `SWEMU_ORACLE_SEED=n` one seed; `SWEMU_ORACLE_PROGRAMS=n`
/// (default `defaultPrograms`), `SWEMU_ORACLE_FIRST_SEED=n`, `SWEMU_ORACLE_SECONDS=t`;
/// `SWEMU_DIFF_LIST=1` prints each program, `SWEMU_DIFF_TRACE=1` names each seed on stderr;
/// `SWEMU_ORACLE_KEEP=dir` keeps each image and the three dumps there (the last reduction step
/// as last.qemu/last.swemu), `SWEMU_ORACLE_RAW=0xADDR` adds that page's doublewords to the dump.
/// A failing program is reduced (as DifferentialTests do) before it is reported.
/// `scripts/difftest qemu [seconds]` runs it for a long time.
@Suite struct QEMUOracleTests {
    /// About 20 s in a debug build on a 2-core machine.
    static let defaultPrograms = 150

    static var unavailable: String? {
        FileManager.default.isExecutableFile(atPath: QEMUOracle.qemu) ? nil
            : "needs \(QEMUOracle.qemu) (Debian's qemu-system-misc; scripts/setup installs it)"
    }

    @Test(.enabled(if: unavailable == nil, "\(unavailable ?? "")"))
    func swemuAgreesWithQEMU() throws {
        let env = ProcessInfo.processInfo.environment
        let single = env["SWEMU_ORACLE_SEED"].flatMap { UInt64($0) }
        let first = single ?? env["SWEMU_ORACLE_FIRST_SEED"].flatMap { UInt64($0) } ?? 1
        let count = single != nil ? 1 : env["SWEMU_ORACLE_PROGRAMS"].flatMap { Int($0) } ?? Self.defaultPrograms
        let seconds = single != nil ? nil : env["SWEMU_ORACLE_SECONDS"].flatMap { Double($0) }
        let list = env["SWEMU_DIFF_LIST"].map { $0 != "0" } ?? false
        let trace = env["SWEMU_DIFF_TRACE"].map { $0 != "0" } ?? false
        Watchdog.start()
        let clock = ContinuousClock()
        let start = clock.now
        var programs = 0, traps = 0, failures = 0
        var instructions: UInt64 = 0
        var seed = first
        while seconds.map({ clock.now - start < .seconds($0) }) ?? (seed < first &+ UInt64(count)) {
            Watchdog.seed.store(seed, ordering: .relaxed)
            if trace { FileHandle.standardError.write(Data("QEMUOracleTests: running seed \(seed)\n".utf8)) }
            let result = try QEMUOracle.check(seed: seed, list: list)
            programs += 1
            instructions += result.instructions
            traps += result.traps
            if let failure = result.failure {
                failures += 1
                Issue.record(Comment(rawValue: failure))
                if failures >= 3 { break }
            }
            seed &+= 1
        }
        print("QEMUOracleTests: \(programs) programs, \(instructions) instructions and \(traps) M-mode traps compared "
            + "with QEMU\(JITEngine.hostSupported ? " (interpreter and JIT)" : " (interpreter)"), "
            + "seeds \(first)...\(seed &- 1), \(failures) failing, \(clock.now - start)")
    }

    /// The dump itself: run to the dump routine's first instruction (a breakpoint), note the
    /// state, then let it print; what it prints must be that state (so a dump that printed
    /// nothing, or garbage, cannot pass for agreement).
    @Test func dumpPrintsTheState() throws {
        let program = Program.generate(seed: 7, qemu: true)
        let machine = try DiffMachine(program.image())
        machine.hart.insertBreakpoint(at: Layout.dumpCode, kind: .hardware)
        var reason = StopReason.budgetExhausted
        for _ in 0..<100 where reason == .budgetExhausted { reason = machine.hart.run(budget: 200_000) }
        #expect(reason == .debugStop && machine.pc == Layout.dumpCode)
        let state = machine.hart.state.pointee
        let csrs = QEMUDump.csrs.map { machine.hart.debugReadCSR($0.number) }
        let fcsr = machine.hart.debugReadCSR(CSRNumber.fcsr)
        let mstatus = machine.hart.debugReadCSR(CSRNumber.mstatus)
        #expect(machine.hart.removeBreakpoint(at: Layout.dumpCode, kind: .hardware))
        #expect(machine.runToEnd({ machine.hart.run(budget: $0) }, budget: { 200_000 }) == "finished")

        let values = try QEMUDump.parse(QEMUOracle.console(machine))
        let slots = QEMUDump.Slots()
        let traps = try #require(values.count > slots.trapCount ? Int(values[slots.trapCount]) : nil)
        #expect(traps > 0)
        // Every value, then 4 per trap (the program's, then any the dump took itself).
        let logged = values.count - slots.names.count
        #expect(logged % 4 == 0 && logged >= 4 * min(traps, Layout.trapLogEntries))
        #expect(values[0] == mstatus)
        for i in 1...27 { #expect(values[i] == state.x[i], "x\(i)") }
        for (k, csr) in QEMUDump.csrs.enumerated() { #expect(values[slots.csr + k] == csrs[k], "\(csr.name)") }
        #expect(values[slots.fcsr] == fcsr)
        for i in 0..<32 { #expect(values[slots.f + i] == state.f[i], "f\(i)") }
        #expect(Set(values[slots.pages..<slots.names.count]).count > 3, "page hashes")
        #expect(machine.testDevice.log.last == ScratchDevice.Access(write: true, offset: 0, size: 4, value: 0x5555))
    }
}

/// Where QEMU 7.2 departs from the RISC-V specifications (found by this oracle; QEMU's
/// gitlab issue where one exists), how the programs made for QEMU avoid or allow for it, and
/// the spec's answer checked on swemu alone (`swemuGivesTheSpecAnswer`). (Departures found by
/// guest programs are in Tests/GuestPrograms/riscv-claims, run by ClaimsTests.specAnswers.)
/// Besides these, the two differ where the specs leave a choice, and the programs stay clear
/// of it: reset values of mtimecmp and stimecmp (setup writes both), mhpmevent3 (writable on
/// QEMU, read-only zero on swemu; not written), Sdtrig (QEMU has triggers, swemu none; tselect
/// and tdata1 not accessed), mvendorid/marchid/mimpid (not read), and mtval/stval after EBREAK
/// (QEMU 0, swemu the pc: §3.1.16 allows either; `QEMUDump.compare` accepts both).
///
/// One departure is checked by a guest program instead (it needs S-mode and page tables):
/// sFetchFromUserPage — QEMU 7.2 lets S-mode execute from a U page once a load or store with
/// SUM has put the page in its TLB; Privileged §4.3.1: S-mode never executes U pages, SUM or
/// not. Tests/GuestPrograms/riscv-claims/s_fetch_user_page.S checks the spec's answer on swemu;
/// the QEMU form never jumps from S into a U page.
struct QEMUDeparture: CustomTestStringConvertible, Sendable {
    let name: String
    /// What QEMU does, what the spec says (section), what the generator does about it.
    let description: String
    /// M-mode code run on swemu from reset, mtvec pointing at a handler that leaves mcause in
    /// t6 and skips the instruction; then `expected` x registers.
    let code: [UInt32]
    let expected: [(register: UInt8, value: UInt64)]

    var testDescription: String { name }

    static let t0: UInt8 = 5, t1: UInt8 = 6, t2: UInt8 = 7, t6: UInt8 = 31
    static let unassigned = Layout.unassigned

    static let all: [QEMUDeparture] = [
        QEMUDeparture(
            name: "medelegECalls",
            description: "QEMU keeps medeleg bits 10 (VS ecall) and 11 (M ecall), and 20-23, with H off; Privileged §3.1.8: "
                + "medeleg[11] and the bits of exceptions that cannot occur are read-only zero. The QEMU form writes medeleg "
                + "only with those bits clear.",
            code: [Asm.addi(t0, 0, -1), Asm.csrw(CSRNumber.medeleg, t0), Asm.csrr(t1, CSRNumber.medeleg)],
            expected: [(t1, 0xb3ff)]),
        QEMUDeparture(
            name: "virtualInterruptBits",
            description: "QEMU keeps mideleg and mip bits 2, 6, 10 (VS interrupts) and 13 with H and Sscofpmf off; "
                + "Privileged §3.1.9: bits of interrupts that do not exist are read-only zero. The QEMU form writes mideleg, "
                + "mip and mie only with M/S interrupt bits.",
            code: [Asm.addi(t0, 0, -1), Asm.csrw(CSRNumber.mideleg, t0), Asm.csrr(t1, CSRNumber.mideleg),
                   Asm.encode(.csrrs, rs1: t0, imm: Int64(CSRNumber.mip)), Asm.csrr(t2, CSRNumber.mip),
                   Asm.encode(.csrrc, rs1: t0, imm: Int64(CSRNumber.mip))],
            expected: [(t1, 0x222), (t2, 0x222)]),
        QEMUDeparture(
            name: "counterEnable32Bits",
            description: "QEMU 7.2 keeps all 64 bits written to mcounteren and scounteren; Privileged §3.1.11: they are "
                + "32-bit registers. The QEMU form writes them with 32-bit values.",
            code: [Asm.addi(t0, 0, -1), Asm.csrw(CSRNumber.mcounteren, t0), Asm.csrr(t1, CSRNumber.mcounteren),
                   Asm.csrw(CSRNumber.scounteren, t0), Asm.csrr(t2, CSRNumber.scounteren)],
            expected: [(t1, 0xffff_ffff), (t2, 0xffff_ffff)]),
        QEMUDeparture(
            name: "readOnlyCSRWriteOfZero",
            description: "QEMU takes csrrs/csrrc on a read-only CSR with a source register (not x0) holding zero as a read; "
                + "Zicsr §9.1: with rs1 other than x0 the instruction writes the CSR (attempting to write a read-only CSR "
                + "raises an illegal-instruction exception) whatever the register holds. The QEMU form uses x0 there.",
            code: [Asm.addi(t6, 0, 0), Asm.addi(t0, 0, 0), Asm.encode(.csrrs, rd: t1, rs1: t0, imm: 0xf12)],
            expected: [(t6, 2)]),
        QEMUDeparture(
            name: "integerResultLeavesFSClean",
            description: "QEMU 7.2 leaves mstatus.FS Initial or Clean after an F/D instruction whose result goes to an "
                + "x register (fcvt.w.d, feq.d, ...) even when it raises exception flags; Privileged §3.1.6.6: FS becomes "
                + "Dirty when any floating-point state, fcsr included, changes. The QEMU form keeps FS Off or Dirty "
                + "(legalStatus), and QEMUDump.compare accepts QEMU's FS.",
            // With a NaN in f1, fflags cleared and FS set Clean, each instruction raises NV.
            code: Asm.li(t0, 3 << 13) + [Asm.encode(.csrrs, rs1: t0, imm: Int64(CSRNumber.mstatus))]
                + Asm.li(t0, 0x7ff8_0000_0000_0000) + [Asm.encode(.fmv_d_x, rd: 1, rs1: t0)] + [.fcvt_w_d, .flt_d].flatMap { op in
                [Asm.csrw(CSRNumber.fflags, 0)] + Asm.li(t0, 1 << 13) + [Asm.encode(.csrrc, rs1: t0, imm: Int64(CSRNumber.mstatus)),
                 Asm.encode(op, rd: t1, rs1: 1, rs2: 1, rm: 1), Asm.csrr(t2, CSRNumber.mstatus),
                 Asm.encode(.srli, rd: t2, rs1: t2, imm: 13), Asm.encode(.andi, rd: op == .flt_d ? t6 : 28, rs1: t2, imm: 3)]
            },
            expected: [(28, 3), (t6, 3)]),
        QEMUDeparture(
            name: "statusFields",
            description: "QEMU 7.2 keeps mstatus.VS (bits 9-10) without the V extension, UXL = 3, MPP = 2 (reserved), "
                + "and mcountinhibit bit 1 "
                + "(TM) and bits 63:32; Privileged §3.1.6: VS is read-only zero without V, UXL is WARL and reads 2 when only "
                + "RV64 is supported, MPP holds only implemented modes; §3.1.12: mcountinhibit is 32 bits and TM is "
                + "read-only zero. The QEMU form writes mstatus, sstatus and mcountinhibit with those fields clear.",
            code: [Asm.addi(t0, 0, -1), Asm.encode(.csrrs, rs1: t0, imm: Int64(CSRNumber.mstatus)), Asm.csrr(t1, CSRNumber.mstatus),
                   Asm.encode(.csrrc, rs1: t0, imm: Int64(CSRNumber.mstatus)), Asm.csrw(CSRNumber.mcountinhibit, t0),
                   Asm.csrr(t2, CSRNumber.mcountinhibit), Asm.csrw(CSRNumber.mcountinhibit, 0),
                   Asm.encode(.lui, rd: t0, imm: 0x1000), Asm.encode(.csrrs, rd: 28, rs1: t0, imm: Int64(CSRNumber.mstatus)),
                   Asm.csrr(t6, CSRNumber.mstatus), Asm.encode(.srli, rd: t6, rs1: t6, imm: 11), Asm.encode(.andi, rd: t6, rs1: t6, imm: 3)],
            expected: [(t1, 0x8000_000a_007e_79aa), (t2, 0xffff_fffd), (t6, 0)]),
        QEMUDeparture(
            name: "mprvAfterFetch",
            description: "In QEMU 7.2 an M-mode load or store under MPRV (MPP = S or U) to a page M-mode has fetched "
                + "from is not translated: it hits the TLB entry the fetch made. Privileged §3.1.6.3: with MPRV, loads and "
                + "stores are translated and protected as in MPP's mode. The QEMU form never sets MPRV.",
            // Sv39 with RAM's gigabyte mapped RWX but not U, PMP open; with MPRV and MPP = U, a load
            // from the code's own page faults.
            code: Asm.li(t0, Layout.pageTables) + Asm.li(t1, (Layout.ramBase >> 12) << 10 | 0xcf) + [Asm.sd(t1, base: t0, offset: 16)]
                + Asm.li(t1, 8 << 60 | Layout.pageTables >> 12) + [Asm.csrw(CSRNumber.satp, t1), Asm.addi(t1, 0, -1),
                   Asm.csrw(CSRNumber.pmpaddr0, t1), Asm.addi(t1, 0, 0x1f), Asm.csrw(CSRNumber.pmpcfg0, t1)]
                + Asm.li(t1, 3 << 11) + [Asm.encode(.csrrc, rs1: t1, imm: Int64(CSRNumber.mstatus))]
                + Asm.li(t1, MStatus.mprv) + [Asm.encode(.csrrs, rs1: t1, imm: Int64(CSRNumber.mstatus)), Asm.addi(t6, 0, 0)]
                + Asm.li(t0, Layout.setup) + [Asm.encode(.lw, rd: t2, rs1: t0), Asm.encode(.csrrc, rs1: t1, imm: Int64(CSRNumber.mstatus))],
            expected: [(t6, 13)]),
        QEMUDeparture(
            name: "ctzwOfZeroLowWord",
            description: "QEMU 7.2's ctzw of a value whose low word is zero can count into the high word (52 for 1 << 52); "
                + "Zbb: ctzw counts the trailing zeros of the low 32 bits, 32 when they are all zero. The QEMU form has "
                + "no ctzw.",
            code: Asm.li(t0, 1 << 52) + [Asm.encode(.ctzw, rd: t1, rs1: t0)],
            expected: [(t1, 32)]),
        QEMUDeparture(
            name: "epcBit0",
            description: "QEMU 7.2 keeps bit 0 of a value written to sepc; Privileged §4.1.7: sepc[0] is always zero "
                + "(likewise mepc, §3.1.14). The QEMU form writes sepc and mepc with even values.",
            code: [Asm.addi(t0, 0, -1), Asm.csrw(CSRNumber.sepc, t0), Asm.csrr(t1, CSRNumber.sepc),
                   Asm.csrw(CSRNumber.mepc, t0), Asm.csrr(t2, CSRNumber.mepc)],
            expected: [(t1, ~1), (t2, ~1)]),
        QEMUDeparture(
            name: "softwareSEIP",
            description: "On QEMU's virt board M-mode cannot set mip.SEIP (the PLIC claims it); Privileged §3.1.9: SEIP is "
                + "writable by M-mode, and the interrupt is pending when the written bit or the external signal is set. "
                + "The QEMU form never sets SEIP.",
            code: Asm.li(t0, 0x200) + [Asm.encode(.csrrs, rs1: t0, imm: Int64(CSRNumber.mip)), Asm.csrr(t1, CSRNumber.mip),
                                       Asm.encode(.csrrc, rs1: t0, imm: Int64(CSRNumber.mip))],
            expected: [(t1, 0x200)]),
        QEMUDeparture(
            name: "pmpEntryInsideAccess",
            description: "QEMU 7.2 matches a PMP entry against an access's first and last bytes only, so an access that "
                + "holds a whole NA4 word in its middle ignores that entry; Privileged §3.7.1.3: the lowest-numbered entry "
                + "matching any byte of the access decides, and a partial match fails (M-mode included: QEMU 7.2 also let "
                + "M-mode stores straddle an unlocked NA4 word). The QEMU form's accesses near the PMP word in D7 start "
                + "or end inside it, or miss it, and it has no PMP word in the body page.",
            code: Asm.li(t0, (Layout.data + 0x800) >> 2) + [Asm.csrw(CSRNumber.pmpaddr0, t0), Asm.addi(t0, 0, -1),
                   Asm.csrw(CSRNumber.pmpaddr0 + 1, t0)] + Asm.li(t0, 0x1f11 | 0x80) + [Asm.csrw(CSRNumber.pmpcfg0, t0), Asm.addi(t6, 0, 0)]
                + Asm.li(t0, Layout.data + 0x7fe) + [Asm.encode(.ld, rd: t1, rs1: t0)],
            expected: [(t6, 5)]),
        QEMUDeparture(
            name: "misalignedAccessFaultTval",
            description: "For a misaligned access to an address where nothing answers, QEMU 7.2 reports the access fault "
                + "with mtval rounded down to the access size (the aligned piece it tried first); Privileged §3.1.16: mtval "
                + "holds the faulting virtual address, the access's own for the portion that faulted. The QEMU form's "
                + "body reads no tval, and QEMUDump.compare accepts QEMU's value.",
            code: Asm.li(t0, unassigned + 0x7f9) + [Asm.encode(.lw, rd: t1, rs1: t0), Asm.csrr(t2, CSRNumber.mtval)],
            expected: [(t6, 5), (t2, unassigned + 0x7f9)]),
        QEMUDeparture(
            name: "envcfgCacheBlockFields",
            description: "QEMU 7.2 keeps senvcfg's CBIE/CBCFE/CBZE (bits 4-7) without Zicbom/Zicboz; Privileged §4.1.10: "
                + "fields of extensions not implemented are read-only zero. The QEMU form writes senvcfg with 0 or FIOM.",
            code: [Asm.addi(t0, 0, -1), Asm.csrw(CSRNumber.senvcfg, t0), Asm.csrr(t1, CSRNumber.senvcfg)],
            expected: [(t1, 1)]),
        QEMUDeparture(
            name: "failedSCChecksNothing",
            description: "An SC without a matching reservation fails in QEMU without any check: no misaligned or access "
                + "fault (gitlab.com/qemu-project/qemu/-/issues/3323, still in QEMU 10.2); unprivileged spec, Zalrsc: the "
                + "address must be naturally aligned, and no SC shall retire unless it passes memory permission checks. "
                + "The QEMU form pairs LR and SC on one aligned address in data page D0.",
            code: [Asm.addi(t6, 0, 0)] + Asm.li(t0, Layout.data + 2) + [Asm.encode(.sc_w, rd: t1, rs1: t0, rs2: 0), Asm.addi(t2, t6, 0)]
                + Asm.li(t0, unassigned) + [Asm.addi(t6, 0, 0), Asm.encode(.sc_d, rd: t1, rs1: t0, rs2: 0)],
            expected: [(t2, 6), (t6, 7)]),
        QEMUDeparture(
            name: "amoFaultsAsLoads",
            description: "QEMU 7.2 reports an AMO's exceptions with load causes (4, 5, 13) instead of the store/AMO causes "
                + "(6, 7, 15) Privileged Table 3.6 gives them. The QEMU form delegates each load cause together with its "
                + "store/AMO cause, so both reach the same handler, and QEMUDump.compare accepts the load cause for an AMO.",
            code: [Asm.addi(t6, 0, 0)] + Asm.li(t0, Layout.data + 2) + [Asm.encode(.amoadd_w, rd: t1, rs1: t0, rs2: 0), Asm.addi(t2, t6, 0)]
                + Asm.li(t0, unassigned) + [Asm.addi(t6, 0, 0), Asm.encode(.amoor_d, rd: t1, rs1: t0, rs2: 0)],
            expected: [(t2, 6), (t6, 7)]),
    ]

    /// medeleg with each pair (load misaligned, store/AMO misaligned), (load access fault,
    /// store/AMO access fault), (load page fault, store/AMO page fault) delegated together.
    static func pairAMOCauses(_ medeleg: UInt64) -> UInt64 {
        var v = medeleg
        for (load, store) in [(4, 6), (5, 7), (13, 15)] where v >> load & 1 != 0 || v >> store & 1 != 0 {
            v |= 1 << load | 1 << store
        }
        return v
    }

    /// A value for mstatus/sstatus in the QEMU form: MPP never 2 (statusFields), FS Off or
    /// Dirty (integerResultLeavesFSClean).
    static func legalStatus(_ v: UInt64) -> UInt64 {
        let fs: UInt64 = 3 << 13
        return v & ~fs | (v & fs != 0 ? fs : 0) | (v >> 1 & 0x800)
    }

    /// The load cause QEMU reports for an AMO whose spec cause is `cause`.
    static func qemuAMOCause(_ cause: UInt64) -> UInt64 {
        switch cause {
        case 6: return 4
        case 7: return 5
        case 15: return 13
        default: return cause
        }
    }
}

extension QEMUOracleTests {
    @Test(arguments: QEMUDeparture.all)
    func swemuGivesTheSpecAnswer(_ departure: QEMUDeparture) throws {
        let handler = Layout.mHandler, t5: UInt8 = 30, t6 = QEMUDeparture.t6
        let code = Asm.li(t5, handler) + [Asm.csrw(CSRNumber.mtvec, t5)] + departure.code + [Asm.wfi]
        let trap = [Asm.csrr(t6, CSRNumber.mcause), Asm.csrr(t5, CSRNumber.mepc), Asm.addi(t5, t5, 4),
                    Asm.csrw(CSRNumber.mepc, t5), Asm.mret]
        func bytes(_ words: [UInt32]) -> [UInt8] { assemble(Piece.words(words)).bytes }
        let machine = try DiffMachine(segments: [(Layout.setup, bytes(code)), (handler, bytes(trap))])
        #expect(machine.hart.run(budget: 10_000) == .waitingForInterrupt)
        for (register, value) in departure.expected {
            #expect(machine.hart.state.pointee.x[Int(register)] == value, "\(departure.name): x\(register)")
        }
    }
}

enum QEMUOracle {
    static let qemu = "/usr/bin/qemu-system-riscv64"
    /// QEMU's `rv64` with the extensions swemu does not implement switched off (their
    /// instructions are illegal on swemu: random encodings would otherwise decode differently).
    static let cpuOption = "rv64,h=false,v=false,zbc=false,svinval=false,zbkb=false,zbkc=false,zbkx=false,zkr=false,"
        + "zknd=false,zkne=false,zknh=false,zksed=false,zksh=false,zkt=false,Zihintpause=false,svpbmt=false,"
        + "svnapot=false,sscofpmf=false,Zfh=false,Zfhmin=false"

    struct Result {
        var instructions: UInt64 = 0
        var traps = 0
        var failure: String?
    }

    /// Runs seed `seed` on QEMU (in a child process, while swemu runs it here) and on swemu.
    static func check(seed: UInt64, list: Bool) throws -> Result {
        let program = Program.generate(seed: seed, qemu: true)
        let image = program.image()
        if list { print(program.describe(image)) }
        let qemuRun = try QEMURun(image: image)
        if let dir = ProcessInfo.processInfo.environment["SWEMU_ORACLE_KEEP"] { qemuRun.keep(as: "\(dir)/\(seed).bin") }
        let engines = try runOnSwemu(image)
        let qemuText = qemuRun.wait()

        var result = Result(instructions: engines.first?.instructions ?? 0)
        let replay = "replay: SWEMU_ORACLE_SEED=\(seed) swift test --filter QEMUOracleTests"
        guard engines[0].end == "finished" else {
            result.failure = "seed \(seed): the generated program does not finish on the interpreter (\(engines[0].end)): "
                + "a bug in the generator or the interpreter (\(replay))\n" + program.describe(image)
            return result
        }
        let reference: [UInt64]
        switch qemuText {
        case .failure(let why):
            result.failure = "seed \(seed) (\(program.config.summary)): QEMU \(why) (\(replay))\n" + program.describe(image)
            return result
        case .success(let text):
            do { reference = try QEMUDump.parse(text) } catch {
                result.failure = "seed \(seed): QEMU's dump does not parse: \(error) (\(replay))\n" + program.describe(image)
                return result
            }
        }
        let layout = QEMUDump.Slots()
        result.traps = Int(reference.count > layout.trapCount ? reference[layout.trapCount] : 0)
        var report: [String] = []
        if let dir = ProcessInfo.processInfo.environment["SWEMU_ORACLE_KEEP"], case .success(let text) = qemuText {
            try? text.write(toFile: "\(dir)/\(seed).qemu", atomically: false, encoding: .utf8)
            for run in engines { try? run.text.write(toFile: "\(dir)/\(seed).\(run.name.split(separator: " ").last!)", atomically: false, encoding: .utf8) }
        }
        for run in engines {
            guard run.end == "finished" else {
                report.append("\(run.name): \(run.end)")
                continue
            }
            let values = (try? QEMUDump.parse(run.text)) ?? []
            report += QEMUDump.compare(qemu: reference, swemu: values, name: run.name, layout: layout, isAMO: image.isAMO)
        }
        if !report.isEmpty {
            var text = "seed \(seed) (\(program.config.summary)): swemu and QEMU disagree (\(replay))\n"
                + report.prefix(30).joined(separator: "\n") + "\n"
            let reduced = DifferentialRun.reduce(program, attempts: 400) { (try? differences($0))?.isEmpty == false }
            if reduced.instructionCount < program.instructionCount {
                let again = (try? differences(reduced)) ?? []  // (last: with SWEMU_ORACLE_KEEP, the reduced program's dumps)
                text += "\nreduced to \(reduced.instructionCount) instructions in the body and subroutines (of "
                    + "\(program.instructionCount)), which still disagree:\n" + again.prefix(16).joined(separator: "\n") + "\n"
                    + "reduced program: " + reduced.describe(reduced.image()) + "\n"
            } else {
                text += program.describe(image)
            }
            result.failure = text
        }
        return result
    }

    /// The differences between QEMU and swemu's interpreter on `program` (for reduction).
    static func differences(_ program: Program) throws -> [String] {
        let image = program.image()
        let qemuRun = try QEMURun(image: image)
        let interpreted = try runOnSwemu(image, jit: false)[0]
        guard case .success(let text) = qemuRun.wait(timeout: 5), interpreted.end == "finished",
              let reference = try? QEMUDump.parse(text) else { return [] }
        let values = (try? QEMUDump.parse(interpreted.text)) ?? []
        if let dir = ProcessInfo.processInfo.environment["SWEMU_ORACLE_KEEP"] {
            try? text.write(toFile: "\(dir)/last.qemu", atomically: false, encoding: .utf8)
            try? interpreted.text.write(toFile: "\(dir)/last.swemu", atomically: false, encoding: .utf8)
        }
        return QEMUDump.compare(qemu: reference, swemu: values, name: "swemu", layout: QEMUDump.Slots(), isAMO: image.isAMO)
    }

    struct EngineRun {
        let name: String
        let end: String
        let text: String
        let instructions: UInt64
    }

    /// The interpreter, and the JIT where the host has one (and `jit`).
    static func runOnSwemu(_ image: ProgramImage, jit useJIT: Bool = true) throws -> [EngineRun] {
        var runs: [EngineRun] = []
        let interpreted = try DiffMachine(image)
        let end = interpreted.runToEnd({ b in Watchdog.call(1) { interpreted.hart.run(budget: b) } }, budget: { 200_000 })
        runs.append(EngineRun(name: "swemu's interpreter", end: end, text: console(interpreted), instructions: interpreted.minstret))
        if useJIT && JITEngine.hostSupported {
            let translated = try DiffMachine(image)
            let jit = try JITEngine(hart: translated.hart, codeBufferSize: 1 << 20)
            let end = translated.runToEnd({ b in Watchdog.call(2) { jit.run(budget: b) } }, budget: { 200_000 })
            runs.append(EngineRun(name: "swemu's JIT", end: end, text: console(translated), instructions: translated.minstret))
        }
        return runs
    }

    /// What the program wrote to the UART's transmit register.
    static func console(_ machine: DiffMachine) -> String {
        String(decoding: machine.device.log.filter { $0.write && $0.offset == 0 }.map { UInt8(truncatingIfNeeded: $0.value) },
               as: UTF8.self)
    }
}

extension ProgramImage {
    /// Whether the instruction the program placed at virtual address `va` (or at its other
    /// alias) is an AMO or SC.
    func isAMO(_ va: UInt64) -> Bool {
        guard let line = lines.first(where: { $0.va == va || $0.va == va ^ Layout.aliasToggle || $0.va == va &- Layout.aliasDelta }),
              line.length == 4 else { return false }
        let op = Decoder.shared.decode32(line.raw).op
        return Asm.rows[op]?.format == .atomic || op == .sc_w || op == .sc_d
    }
}

/// One QEMU process running one program image (flat, loaded at the start of RAM).
final class QEMURun {
    private let process = Process()
    private let output = Pipe()
    private let file: URL
    /// Seconds QEMU gets: programs are at most a few million instructions (well under a
    /// second on QEMU, even on a loaded machine).
    static let timeout = 20.0

    init(image: ProgramImage) throws {
        let base = Layout.ramBase
        let end = image.segments.map { $0.0 + UInt64($0.1.count) }.max() ?? base
        var flat = [UInt8](repeating: 0, count: Int(end - base))
        for (address, bytes) in image.segments { flat.replaceSubrange(Int(address - base)..<Int(address - base) + bytes.count, with: bytes) }
        file = FileManager.default.temporaryDirectory.appendingPathComponent("swemu-oracle-\(getpid())-\(UUID().uuidString).bin")
        try Data(flat).write(to: file)
        process.executableURL = URL(fileURLWithPath: QEMUOracle.qemu)
        process.arguments = ["-M", "virt", "-m", "4M", "-bios", "none", "-cpu", QEMUOracle.cpuOption, "-nodefaults",
                             "-display", "none", "-monitor", "none", "-serial", "stdio",
                             "-device", "loader,file=\(file.path),addr=\(String(format: "0x%llx", base))"]
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Drained from the start: QEMU's UART drops what the guest writes while the pipe is full
        // (the dump writes its transmit register without waiting).
        let output = self.collected, done = self.done, handle = self.output.fileHandleForReading
        Thread.detachNewThread {
            output.data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    /// QEMU's output, written by the reader thread before it signals `done`.
    private final class Output: @unchecked Sendable { var data = Data() }
    private let collected = Output()
    private let done = DispatchSemaphore(value: 0)

    /// Keeps the image file (for SWEMU_ORACLE_KEEP).
    func keep(as path: String) { try? FileManager.default.copyItem(atPath: file.path, toPath: path) }

    /// QEMU's console output, or why there is none. A QEMU still running `timeout` seconds
    /// after this call is killed.
    func wait(timeout: Double = QEMURun.timeout) -> Result<String, QEMUFailure> {
        defer { try? FileManager.default.removeItem(at: file) }
        let output = collected
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill(process.processIdentifier, SIGKILL)
            done.wait()
            process.waitUntilExit()
            return .failure(QEMUFailure("did not finish within \(Int(timeout)) s; its output so far:\n"
                                        + String(decoding: output.data.suffix(2000), as: UTF8.self)))
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            return .failure(QEMUFailure("exited with status \(process.terminationStatus)"))
        }
        return .success(String(decoding: output.data, as: UTF8.self))
    }
}

struct QEMUFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The state dump every program made for QEMU ends with (M-mode, from the FINISH path: the M
/// handler has clobbered only t3-t6, which the body never writes). It saves x1-x27 and the
/// CSRs before touching anything, clears MPRV (its own loads and stores are physical), turns
/// FS on for fcsr and the f registers, hashes each page (FNV-1a over doublewords), and prints
/// every value as 16 hex digits and a newline through the UART; then the trap log; then it
/// writes PASS to the SiFive test device (QEMU exits) and waits (swemu's run ends there).
enum QEMUDump {
    static let csrs: [(number: UInt16, name: String)] = [
        (0x301, "misa"), (0x302, "medeleg"), (0x303, "mideleg"), (0x304, "mie"), (0x305, "mtvec"), (0x306, "mcounteren"),
        (0x30a, "menvcfg"), (0x320, "mcountinhibit"), (0x323, "mhpmevent3"), (0x340, "mscratch"), (0x341, "mepc"),
        (0x342, "mcause"), (0x343, "mtval"), (0x344, "mip"), (0x3a0, "pmpcfg0"), (0x3a2, "pmpcfg2"), (0x3b0, "pmpaddr0"),
        (0x3b1, "pmpaddr1"), (0x3b2, "pmpaddr2"), (0x3b3, "pmpaddr3"), (0xb03, "mhpmcounter3"), (0x105, "stvec"),
        (0x106, "scounteren"), (0x10a, "senvcfg"), (0x140, "sscratch"), (0x141, "sepc"), (0x142, "scause"),
        (0x143, "stval"), (0x14d, "stimecmp"), (0x180, "satp"),
    ]
    /// The pages hashed: code, handlers, subroutines and register table; data; both roots'
    /// page tables.
    static let hashed: [Range<UInt64>] = [
        Layout.ramBase..<(Layout.subroutineB + 0x1000), Layout.data..<(Layout.data + UInt64(Layout.dataPages) * 4096),
        Layout.pageTables..<(Layout.pageTablesB + 0x1_0000),
    ]

    /// Where each value sits in the printed dump.
    struct Slots {
        let csr = 28
        var fcsr: Int { csr + QEMUDump.csrs.count }
        var f: Int { fcsr + 1 }
        var trapCount: Int { f + 32 }
        var pages: Int { trapCount + 1 }
        let pageAddresses = QEMUDump.hashed.flatMap { stride(from: $0.lowerBound, to: $0.upperBound, by: 4096) }
        var names: [String] {
            var n = ["mstatus"] + (1...27).map { "x\($0) (\(Disassembler.integerRegisterNames[$0]))" }
            n += QEMUDump.csrs.map(\.name) + ["fcsr"] + (0..<32).map { "f\($0) (\(Disassembler.floatRegisterNames[$0]))" }
            n += ["M-mode traps taken"]
            n += pageAddresses.map { "hash of page \(hex($0)) (\(Layout.region($0)))" }
            return n
        }
    }

    /// The M handler's first lines after `csrr t3, mcause` (t3 kept): the trap goes into the
    /// log, a ring of `Layout.trapLogEntries` after a count.
    static let logTrap: [UInt32] = {
        let t3 = Regs.t3, t4 = Regs.t4, t5 = Regs.t5, t6 = Regs.t6
        return Asm.li(t5, Layout.trapLog) + [
            Asm.encode(.ld, rd: t6, rs1: t5), Asm.addi(t4, t6, 1), Asm.sd(t4, base: t5, offset: 0),
            Asm.encode(.andi, rd: t6, rs1: t6, imm: Int64(Layout.trapLogEntries - 1)),
            Asm.encode(.slli, rd: t6, rs1: t6, imm: 5), Asm.encode(.add, rd: t6, rs1: t6, rs2: t5),
            Asm.sd(t3, base: t6, offset: 64),
            Asm.csrr(t4, CSRNumber.mepc), Asm.sd(t4, base: t6, offset: 72),
            Asm.csrr(t4, CSRNumber.mtval), Asm.sd(t4, base: t6, offset: 80),
            Asm.csrr(t4, CSRNumber.mstatus), Asm.sd(t4, base: t6, offset: 88),
        ]
    }()

    static func routine() -> [Piece] {
        typealias L = Layout
        let t4 = Regs.t4, t5 = Regs.t5, t6 = Regs.t6, ra = Regs.ra, s4: UInt8 = 20, s5: UInt8 = 21, s6: UInt8 = 22
        let a0: UInt8 = 10, a1: UInt8 = 11, a2: UInt8 = 12, a3: UInt8 = 13, a4: UInt8 = 14, a5: UInt8 = 15
        let s0: UInt8 = 8, s1: UInt8 = 9, s2: UInt8 = 18, s3: UInt8 = 19
        let layout = Slots()
        let print = 1, hashPages = 2, printLoop = 3, nibble = 4, digit = 5, printDone = 6, page = 7, word = 8, end = 9, few = 10
        var w: [UInt32] = [Asm.csrr(t5, CSRNumber.mstatus)]
        w += Asm.li(t4, MStatus.mprv) + [Asm.encode(.csrrc, rs1: t4, imm: Int64(CSRNumber.mstatus))]
        w += Asm.li(t6, L.dumpArea) + [Asm.sd(t5, base: t6, offset: 0)]
        w += (1...27).map { Asm.sd(UInt8($0), base: t6, offset: 8 * Int64($0)) }
        // From here on only x1-x27: a CSR one of the machines lacks traps, and the M handler
        // (which logs it) clobbers t3-t6.
        w += [Asm.addi(s4, t6, 0)]
        w += Asm.li(a0, L.trapLog) + [Asm.encode(.ld, rd: a0, rs1: a0), Asm.sd(a0, base: s4, offset: 8 * Int64(layout.trapCount))]
        for (k, csr) in csrs.enumerated() {
            w += [Asm.csrr(a0, csr.number), Asm.sd(a0, base: s4, offset: 8 * Int64(layout.csr + k))]
        }
        // PMP off (no entry is locked), so the hashes' doubleword loads never straddle an
        // entry; FS on for fcsr and the f registers.
        w += [Asm.csrw(CSRNumber.pmpcfg0, 0)]
        w += Asm.li(a1, 3 << 13) + [Asm.encode(.csrrs, rs1: a1, imm: Int64(CSRNumber.mstatus))]
        w += [Asm.csrr(a0, CSRNumber.fcsr), Asm.sd(a0, base: s4, offset: 8 * Int64(layout.fcsr))]
        w += (0..<32).map { Asm.encode(.fsd, rs1: s4, rs2: UInt8($0), imm: 8 * Int64(layout.f + $0)) }
        w += Asm.li(s0, L.uart) + Asm.li(s2, 0xcbf2_9ce4_8422_2325) + Asm.li(s3, 0x100_0000_01b3)
        w += [Asm.addi(s1, s4, 8 * Int64(layout.pages))]
        var p = Piece.words(w)
        for range in hashed {
            p += Piece.words(Asm.li(a0, range.lowerBound) + Asm.li(a1, range.upperBound)) + [.jal(rd: ra, target: hashPages)]
        }
        p += Piece.words([Asm.addi(a0, s4, 0)] + Asm.li(a1, UInt64(layout.names.count))) + [.jal(rd: ra, target: print)]
        // The log: min(count, entries) entries of 4 values (the dump's own traps included).
        p += Piece.words(Asm.li(s5, L.trapLog) + [Asm.encode(.ld, rd: a1, rs1: s5), Asm.addi(s6, 0, Int64(L.trapLogEntries))])
        p += [.branch(.bltu, rs1: a1, rs2: s6, target: few), .word(Asm.addi(a1, s6, 0)), .label(few)]
        p += Piece.words([Asm.encode(.slli, rd: a1, rs1: a1, imm: 2), Asm.addi(a0, s5, 64)]) + [.jal(rd: ra, target: print)]
        // SWEMU_ORACLE_RAW=address: that page's doublewords too (to find which differ).
        if let raw = ProcessInfo.processInfo.environment["SWEMU_ORACLE_RAW"].flatMap({ UInt64($0.dropFirst(2), radix: 16) }) {
            p += Piece.words(Asm.li(a0, raw) + Asm.li(a1, 512)) + [.jal(rd: ra, target: print)]
        }
        p += Piece.words(Asm.li(s5, L.testDevice) + Asm.li(s6, 0x5555) + [Asm.encode(.sw, rs1: s5, rs2: s6)])
        p += [.label(end), .word(Asm.wfi), .jal(rd: 0, target: end)]
        // print(a0: values, a1: count): 16 hex digits and a newline each.
        p += [.label(print), .branch(.beq, rs1: a1, rs2: 0, target: printDone), .label(printLoop)]
        p += Piece.words([Asm.encode(.ld, rd: a2, rs1: a0), Asm.addi(a3, 0, 16)]) + [.label(nibble)]
        p += Piece.words([Asm.encode(.srli, rd: a4, rs1: a2, imm: 60), Asm.addi(a5, a4, -10), Asm.addi(a4, a4, 48)])
        p += [.branch(.blt, rs1: a5, rs2: 0, target: digit), .word(Asm.addi(a4, a4, 39)), .label(digit)]
        p += Piece.words([Asm.encode(.sb, rs1: s0, rs2: a4), Asm.encode(.slli, rd: a2, rs1: a2, imm: 4), Asm.addi(a3, a3, -1)])
        p += [.branch(.bne, rs1: a3, rs2: 0, target: nibble)]
        p += Piece.words([Asm.addi(a4, 0, 10), Asm.encode(.sb, rs1: s0, rs2: a4), Asm.addi(a0, a0, 8), Asm.addi(a1, a1, -1)])
        p += [.branch(.bne, rs1: a1, rs2: 0, target: printLoop), .label(printDone), .word(Asm.encode(.jalr, rs1: ra))]
        // hashPages(a0: start, a1: end; s1: output, advanced): FNV-1a of each page's doublewords.
        p += [.label(hashPages), .label(page)]
        p += Piece.words([Asm.addi(a2, s2, 0), Asm.encode(.lui, rd: a3, imm: 0x1000), Asm.encode(.add, rd: a3, rs1: a3, rs2: a0)])
        p += [.label(word)]
        p += Piece.words([Asm.encode(.ld, rd: a4, rs1: a0), Asm.encode(.xor, rd: a2, rs1: a2, rs2: a4),
                          Asm.encode(.mul, rd: a2, rs1: a2, rs2: s3), Asm.addi(a0, a0, 8)])
        p += [.branch(.bne, rs1: a0, rs2: a3, target: word)]
        p += Piece.words([Asm.sd(a2, base: s1, offset: 0), Asm.addi(s1, s1, 8)])
        p += [.branch(.bne, rs1: a0, rs2: a1, target: page), .word(Asm.encode(.jalr, rs1: ra))]
        return p
    }

    struct ParseError: Error, CustomStringConvertible {
        let description: String
    }

    static func parse(_ text: String) throws -> [UInt64] {
        try text.split(separator: "\n").enumerated().map { i, line in
            guard line.count == 16, let v = UInt64(line, radix: 16) else {
                throw ParseError(description: "line \(i + 1) is not 16 hex digits: \(line.prefix(80))")
            }
            return v
        }
    }

    /// Whether QEMU's trap (cause, tval) for the instruction at `epc` is what swemu's (cause,
    /// tval) becomes under a departure or a choice the specs leave (`QEMUDeparture`).
    /// `epcs`: where the trapping instruction may be (the handlers move the final mepc/sepc
    /// past it).
    static func accepted(qemu: (cause: UInt64, tval: UInt64), swemu: (cause: UInt64, tval: UInt64), epcs: [UInt64],
                         isAMO: (UInt64) -> Bool) -> Bool {
        var q = qemu
        // (epcs empty: the instruction is not known, and a body may have written sepc.)
        if q.cause != swemu.cause && q.cause == QEMUDeparture.qemuAMOCause(swemu.cause) && (epcs.isEmpty || epcs.contains(where: isAMO)) {
            q.cause = swemu.cause
        }
        if q.cause == 3 && swemu.cause == 3 && q.tval == 0 && (epcs.isEmpty || epcs.contains(swemu.tval)) { q.tval = swemu.tval }
        if (q.cause == 5 || q.cause == 7) && q.cause == swemu.cause && q.tval < swemu.tval && swemu.tval - q.tval < 8
            && [2, 4, 8].contains(where: { swemu.tval & ~($0 - 1) == q.tval }) {
            q.tval = swemu.tval  // QEMUDeparture.misalignedAccessFaultTval
        }
        return q == swemu
    }

    /// Whether two mstatus values differ only in FS Dirty (swemu) against Initial or Clean
    /// (QEMU): QEMUDeparture.integerResultLeavesFSClean.
    static func dirtyAccepted(qemu: UInt64, swemu: UInt64) -> Bool {
        let fs: UInt64 = 3 << 13, sd: UInt64 = 1 << 63
        return (qemu ^ swemu) & ~(fs | sd) == 0 && swemu & fs == fs && swemu & sd != 0 && [1, 2].contains(qemu >> 13 & 3)
    }

    /// One line per value that differs (`isAMO` tells whether an address holds an AMO).
    static func compare(qemu: [UInt64], swemu: [UInt64], name: String, layout: Slots, isAMO: (UInt64) -> Bool) -> [String] {
        let names = layout.names
        var out: [String] = []
        func csr(_ values: [UInt64], _ name: String) -> UInt64 {
            values[layout.csr + QEMUDump.csrs.firstIndex { $0.name == name }!]
        }
        // The last trap's cause and tval, taken by each handler.
        var accept: Set<Int> = []
        if qemu.count >= names.count && swemu.count >= names.count {
            for (cause, tval, epc) in [("mcause", "mtval", "mepc"), ("scause", "stval", "sepc")] {
                if accepted(qemu: (csr(qemu, cause), csr(qemu, tval)), swemu: (csr(swemu, cause), csr(swemu, tval)),
                            epcs: cause == "scause" ? [] : [csr(swemu, epc) &- 4, csr(swemu, epc) &- 2], isAMO: isAMO) {
                    accept.formUnion([cause, tval].map { n in layout.csr + QEMUDump.csrs.firstIndex { $0.name == n }! })
                }
            }
        }
        if qemu.count > 0 && swemu.count > 0 && dirtyAccepted(qemu: qemu[0], swemu: swemu[0]) { accept.insert(0) }
        for i in 0..<min(names.count, qemu.count, swemu.count) where qemu[i] != swemu[i] && !accept.contains(i) {
            out.append("\(names[i]): QEMU \(hex(qemu[i])), \(name) \(hex(swemu[i]))")
        }
        // Trap log entries: cause, epc, tval, mstatus.
        let logStart = names.count
        var shown = 0
        for base in stride(from: logStart, to: min(qemu.count, swemu.count) - 3, by: 4) where shown < 8 {
            let q = Array(qemu[base..<base + 4]), s = Array(swemu[base..<base + 4])
            if q == s { continue }
            if q[1] == s[1] && (q[3] == s[3] || dirtyAccepted(qemu: q[3], swemu: s[3])) && accepted(qemu: (q[0], q[2]), swemu: (s[0], s[2]), epcs: [s[1]], isAMO: isAMO) { continue }
            out.append("M trap \((base - logStart) / 4) (cause epc tval mstatus): QEMU \(q.map { hex($0) }.joined(separator: " ")), "
                + "\(name) \(s.map { hex($0) }.joined(separator: " "))")
            shown += 1
        }
        if qemu.count != swemu.count {
            let (longer, who) = qemu.count > swemu.count ? (qemu, "QEMU") : (swemu, name)
            let extra = stride(from: max(logStart, min(qemu.count, swemu.count)), to: longer.count, by: 4).prefix(6).map { i in
                "M trap \((i - logStart) / 4): " + longer[i..<min(i + 4, longer.count)].map { hex($0) }.joined(separator: " ")
            }
            out.append("trap log: QEMU \((qemu.count - logStart) / 4) traps, \(name) \((swemu.count - logStart) / 4); "
                + "\(who) also took (cause epc tval mstatus):\n    " + extra.joined(separator: "\n    "))
        }
        return out
    }
}
