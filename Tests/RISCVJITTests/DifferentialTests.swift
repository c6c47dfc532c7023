import DeviceModel
import Foundation
import GuestMemory
import RISCV
import RISCVJIT
import Synchronization
import Testing

/// Random programs run on the interpreter and on the JIT must end in the same state (`DifferentialRun`).
@Suite struct DifferentialTests {
    /// About 10 s in a debug build on a small machine.
    static let defaultPrograms = 500

    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func interpreterAndJITAgree() throws {
        let env = ProcessInfo.processInfo.environment
        let single = env["SWEMU_DIFF_SEED"].flatMap { UInt64($0) }
        let first = single ?? env["SWEMU_DIFF_FIRST_SEED"].flatMap { UInt64($0) } ?? 1
        let count = single != nil ? 1 : env["SWEMU_DIFF_PROGRAMS"].flatMap { Int($0) } ?? Self.defaultPrograms
        let seconds = single != nil ? nil : env["SWEMU_DIFF_SECONDS"].flatMap { Double($0) }
        func flag(_ name: String, _ otherwise: Bool) -> Bool { env[name].map { $0 != "0" } ?? otherwise }
        let options = DiffOptions(list: flag("SWEMU_DIFF_LIST", false), profile: flag("SWEMU_DIFF_PROFILE", false),
                                  reduce: flag("SWEMU_DIFF_REDUCE", true))
        let trace = flag("SWEMU_DIFF_TRACE", false)
        Watchdog.start()
        let clock = ContinuousClock()
        let start = clock.now
        var totals = DiffTotals()
        var seed = first
        var failures = 0
        while true {
            if let seconds {
                if clock.now - start >= .seconds(seconds) { break }
            } else if seed >= first &+ UInt64(count) {
                break
            }
            if trace { FileHandle.standardError.write(Data("DifferentialTests: running seed \(seed)\n".utf8)) }
            Watchdog.seed.store(seed, ordering: .relaxed)
            let result = try DifferentialRun.check(seed: seed, options: options)
            totals.add(result)
            if let failure = result.failure {
                failures += 1
                Issue.record(Comment(rawValue: failure))
                if failures >= 3 { break }
            }
            seed &+= 1
        }
        let elapsed = clock.now - start
        print("DifferentialTests: \(totals.programs) programs, \(totals.instructions) instructions compared "
            + "(\(totals.jitBlocks) JIT blocks translated, \(totals.chains) chained, \(totals.rotations) rotations fused), "
            + "seeds \(first)...\(seed &- 1), \(failures) failing, \(elapsed)")
        print("DifferentialTests: programs by mode: M \(totals.modes[0]), S \(totals.modes[1]), U \(totals.modes[2]); "
            + "JIT budget slices: " + totals.slices.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }

    /// The generator's `li` sequences and encoder, checked on the interpreter alone.
    @Test func generatorMaterializesConstants() throws {
        let values: [UInt64] = [
            0, 1, 0x7ff, 0x800, 0xffff_ffff_ffff_f800, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x7fff_f800,
            0x8000_0000_0000_0000, 0x7fff_ffff_ffff_ffff, 0x1234_5678_9abc_def0, 0xffff_ffff_8000_0000, 0x8000_0800,
            0xfedc_ba98_7654_3210, 0x0000_0080_0000_0000, 0xc000_0000,
        ]
        var code = Asm.li(Regs.t3, Layout.data)
        for (i, v) in values.enumerated() {
            let reg = UInt8(5 + i % 8)
            code += Asm.li(reg, v) + [Asm.sd(reg, base: Regs.t3, offset: Int64(8 * i))]
        }
        let text = assemble((code + [Asm.wfi]).map { .word($0) })
        let machine = try DiffMachine(segments: [(Layout.setup, text.bytes)])
        #expect(machine.hart.run(budget: 100_000) == .waitingForInterrupt)
        for (i, v) in values.enumerated() {
            let stored = try machine.memory.read(UInt64.self, at: GuestAddress(Layout.data + UInt64(8 * i)))
            #expect(stored == v, "li \(hex(v)) materialized \(hex(stored))")
        }
    }
}

// MARK: - One seed

/// An engine that never returns from `run` would hang the whole test process: a thread watches
/// for engine calls that do not come back within `limit` and ends the process, naming the seed.
enum Watchdog {
    static let seed = Atomic<UInt64>(0)
    /// Which engine is in a `run` call: 0 none, 1 the interpreter, 2 the JIT.
    static let engine = Atomic<Int>(0)
    static let calls = Atomic<UInt64>(0)
    /// Seconds (`SWEMU_DIFF_WATCHDOG` to change it).
    static let limit = ProcessInfo.processInfo.environment["SWEMU_DIFF_WATCHDOG"].flatMap { Int($0) } ?? 120
    private static let started = Atomic<Bool>(false)

    static func start() {
        guard !started.exchange(true, ordering: .relaxed) else { return }
        Thread.detachNewThread {
            var last: UInt64 = .max
            var still = 0
            while true {
                Thread.sleep(forTimeInterval: 1)
                let now = calls.load(ordering: .relaxed)
                let inside = engine.load(ordering: .relaxed)
                still = now == last && inside != 0 ? still + 1 : 0
                last = now
                if still >= limit {
                    let name = inside == 2 ? "JITEngine.run" : "Hart.run (the interpreter)"
                    let s = seed.load(ordering: .relaxed)
                    FileHandle.standardError.write(Data(("DifferentialTests: seed \(s): \(name) has not returned for \(limit) s: "
                        + "the engine hangs (replay: SWEMU_DIFF_SEED=\(s) swift test --filter DifferentialTests)\n").utf8))
                    exit(3)
                }
            }
        }
    }

    /// Runs one engine call under watch.
    static func call<T>(_ which: Int, _ body: () -> T) -> T {
        engine.store(which, ordering: .relaxed)
        defer {
            engine.store(0, ordering: .relaxed)
            calls.add(1, ordering: .relaxed)
        }
        return body()
    }
}

struct DiffOptions {
    var list = false
    var profile = false
    var reduce = true
}

struct DiffTotals {
    var programs = 0
    var instructions: UInt64 = 0
    var jitBlocks = 0
    var chains = 0
    var rotations = 0
    var modes = [0, 0, 0]
    var slices: [String: Int] = [:]

    mutating func add(_ r: DiffResult) {
        programs += 1
        instructions += r.instructions
        jitBlocks += r.blocks
        chains += r.chains
        rotations += r.rotations
        modes[r.mode == .machine ? 0 : r.mode == .supervisor ? 1 : 2] += 1
        slices[r.slices, default: 0] += 1
    }
}

struct DiffResult {
    var instructions: UInt64 = 0
    var blocks = 0
    var chains = 0
    var rotations = 0
    var mode: PrivilegeMode = .machine
    var slices = ""
    var failure: String?
}

/// Differential testing of the JIT against the interpreter (the reference).
///
/// Each seed makes one random RV64GC program (plus Zicsr, Zifencei, Zba/Zbb/Zbs), loaded into
/// two machines that share nothing: one runs under `Hart.run` (the interpreter), the other
/// under `JITEngine.run`, fed its instruction budget in random slices so that budget exits land
/// inside chained blocks and loops. Both must end in the same architectural state: every x and
/// f register, pc, privilege, the CSRs `debugReadCSR` reaches, the LR reservation, all of RAM
/// (data, page tables with their A/D bits, code the program rewrote) and the sequence of
/// accesses the MMIO test device saw.
///
/// Where the comparison happens: the JIT may overshoot a budget by up to one block, so the two
/// are never compared at a budget boundary. Every program ends with an `ecall` at a known
/// address (FINISH); the M-mode trap handler recognises it by the physical address of `mepc`,
/// clears `mie` and executes `wfi`. Both engines return `.waitingForInterrupt` right after
/// retiring that `wfi`, whatever budget they were given, so the comparison is at one
/// architectural point and `minstret`/`mcycle` must agree exactly. Software interrupts are
/// raised only by CSR writes, which end the interpreter's chunk and leave the JIT's
/// translated code, so both take them at the same instruction.
///
/// What a program contains (see `Generator`): straight-line instructions of every
/// implemented extension filled in from `instructionTable`; loads/stores/AMOs/LR-SC off base
/// registers that sit on page boundaries between pages of different permissions, the MMIO
/// device, the end of RAM and unmapped addresses (misaligned, page-crossing, faulting);
/// CSR accesses (legal, illegal, read-only; fflags/frm/fcsr, counters, mcountinhibit,
/// satp switches); illegal and random compressed encodings; forward branches, jal, jalr to
/// computed (sometimes odd) targets, jumps to non-executable addresses; bounded loops; code
/// that rewrites a word at the start of an already translated block and runs FENCE.I; data
/// stored into code pages; execution of the same code through two virtual aliases; calls into
/// a page that two page-table roots map to different bytes. A trap handler at mtvec (and
/// one at stvec for delegated traps) skips the trapping instruction (2 or 4 bytes), returns to
/// `ra` after a fetch fault, and clears software interrupts. Programs run in M-mode (bare,
/// with page tables for MPRV) or drop to S or U with Sv39, Sv48 or Sv57.
///
/// Environment:
/// - `SWEMU_DIFF_SEED=n`: run seed n only (a failure message names its seed).
/// - `SWEMU_DIFF_PROGRAMS=n`: how many programs the test runs (default `defaultPrograms`).
/// - `SWEMU_DIFF_FIRST_SEED=n`: the first seed (default 1); seeds go up from it.
/// - `SWEMU_DIFF_SECONDS=t`: run seeds for t seconds instead of a fixed count.
/// - `SWEMU_DIFF_LIST=1`: print each program's listing (meant with `SWEMU_DIFF_SEED`).
/// - `SWEMU_DIFF_PROFILE=1`: print what each program did (traps by cause, instructions by mode).
/// - `SWEMU_DIFF_TRACE=1`: name each seed on stderr before running it (to find a crash).
/// - `SWEMU_DIFF_REDUCE=0`: do not reduce a failing program before reporting it.
/// - `SWEMU_DIFF_WATCHDOG=s`: end the process if an engine call has not returned after s
///   seconds (default 120), naming the seed.
/// `scripts/difftest jit [seconds]` runs it for a long time. With `qemu: true` the generator makes
/// the QEMU form of each program (QEMUOracleTests).
enum DifferentialRun {
    /// Instructions after which a program that has not reached FINISH is declared hung.
    static let instructionCap: UInt64 = 3_000_000

    static func check(seed: UInt64, options: DiffOptions) throws -> DiffResult {
        let program = Program.generate(seed: seed)
        let image = program.image()
        if options.list { print(program.describe(image)) }
        if options.profile { print(try profile(program, image: image)) }
        let run = try execute(program, image: image)
        var result = DiffResult(instructions: run.instructions, blocks: run.blocks, chains: run.chains,
                                rotations: run.rotations, mode: program.config.mode, slices: run.slices.description)
        guard !run.differences.isEmpty else { return result }

        var report = "seed \(seed) (\(program.config.summary), JIT budget slices \(run.slices)): "
            + "the JIT and the interpreter disagree (replay: SWEMU_DIFF_SEED=\(seed) swift test --filter DifferentialTests)\n"
        report += run.differences.prefix(24).joined(separator: "\n") + "\n"
        var culprit = program
        if run.differences[0].hasPrefix("generator:") {
            result.failure = "seed \(seed): the generated program does not finish on the interpreter (a bug in the tester's "
                + "generator, or in the interpreter)\n" + report + "\n" + program.describe(image)
            return result
        }
        if options.reduce {
            let reduced = reduce(program)
            if reduced.instructionCount < program.instructionCount {
                culprit = reduced
                let reducedImage = reduced.image()
                let again = try execute(reduced, image: reducedImage)
                report += "\nreduced to \(reduced.instructionCount) instructions in the body and subroutines "
                    + "(of \(program.instructionCount)), which still disagree:\n"
                report += again.differences.prefix(16).joined(separator: "\n") + "\n"
                report += "reduced program: " + reduced.describe(reducedImage) + "\n"
            }
        }
        report += "\n" + (try locate(culprit, image: culprit.image()))
        result.failure = report
        return result
    }

    struct Run {
        var differences: [String]
        var instructions: UInt64
        var blocks: Int
        var chains: Int
        var rotations: Int
        var slices: SlicePolicy
    }

    /// Runs `program` on both engines and compares the end states.
    static func execute(_ program: Program, image: ProgramImage) throws -> Run {
        let reference = try DiffMachine(image)
        let candidate = try DiffMachine(image)
        let jit = try JITEngine(hart: candidate.hart, codeBufferSize: 1 << 20)
        var sliceRandom = Random(seed: program.seed ^ 0x5eed_511c_e5)
        let policy = SlicePolicy.choose(&sliceRandom)

        let interpreterEnd = reference.runToEnd { b in Watchdog.call(1) { reference.hart.run(budget: b) } } budget: { 200_000 }
        let jitEnd = candidate.runToEnd { b in Watchdog.call(2) { jit.run(budget: b) } } budget: { policy.next(&sliceRandom) }

        var differences: [String] = []
        if interpreterEnd != "finished" {
            differences.append("generator: the interpreter did not reach FINISH (\(interpreterEnd)); pc \(hex(reference.pc))")
        }
        if jitEnd != interpreterEnd {
            differences.append("end: interpreter \(interpreterEnd), JIT \(jitEnd) (JIT pc \(hex(candidate.pc)), minstret \(candidate.minstret))")
        }
        differences += compare(reference, candidate, memory: true)
        return Run(differences: differences, instructions: reference.minstret, blocks: jit.statistics.blocks,
                   chains: jit.statistics.chains, rotations: jit.statistics.fusedRotations, slices: policy)
    }

    /// Whether `program` still shows a difference (for reduction).
    static func fails(_ program: Program) -> Bool {
        guard let run = try? execute(program, image: program.image()) else { return false }
        return !run.differences.isEmpty && !run.differences[0].hasPrefix("generator:")
    }

    /// Removes items (ddmin-style: halves, quarters, ... single items; then inside composite
    /// items) while the difference persists.
    static func reduce(_ program: Program, attempts limit: Int = 3000, failing fails: (Program) -> Bool = fails) -> Program {
        var attempts = 0
        func shrink(_ items: [Item], rebuild: ([Item]) -> Program) -> [Item] {
            var items = items
            var chunk = max(1, items.count / 2)
            while attempts < limit {
                var i = 0
                var removedAny = false
                while i < items.count && attempts < limit {
                    var candidate = items
                    candidate.removeSubrange(i..<min(items.count, i + chunk))
                    attempts += 1
                    if fails(rebuild(candidate)) {
                        items = candidate
                        removedAny = true
                    } else {
                        i += chunk
                    }
                }
                if !removedAny {
                    if chunk == 1 { break }
                    chunk /= 2
                }
            }
            return items
        }
        var current = program
        let whole = current
        current.items = shrink(whole.items) { items in
            var p = whole
            p.items = items
            return p
        }
        // Then the children of composite items (loop bodies, skipped code), and the subroutines.
        for index in current.items.indices where !current.items[index].body.isEmpty {
            let base = current
            current.items[index].body = shrink(base.items[index].body) { body in
                var p = base
                p.items[index].body = body
                return p
            }
        }
        for which in 0..<2 {
            let base = current
            current.subroutines[which] = shrink(base.subroutines[which]) { items in
                var p = base
                p.subroutines[which] = items
                return p
            }
        }
        return current
    }

    /// Finds where the two part: first by stepping the JIT one block at a time (budget 1) and
    /// the interpreter to the same pc and `minstret`, comparing at each step; if that shows
    /// nothing (the bug needs chaining or the jump cache), by bisecting the budget of a
    /// single `run` call from a fresh start.
    static func locate(_ program: Program, image: ProgramImage) throws -> String {
        let reference = try DiffMachine(image)
        let candidate = try DiffMachine(image)
        let jit = try JITEngine(hart: candidate.hart, codeBufferSize: 1 << 20)
        for _ in 0..<500_000 {
            let fromPC = candidate.pc, fromCount = candidate.minstret
            let reason = Watchdog.call(2) { jit.run(budget: 1) }
            reference.step(to: candidate.pc, count: candidate.minstret)
            let differences = compare(reference, candidate, memory: true)
            if !differences.isEmpty {
                return report("the JIT run block by block (budget 1)", from: fromPC, fromCount, reference, candidate, differences, image)
            }
            if reason == .waitingForInterrupt { break }
        }
        // Bisection: the smallest budget after which the states differ.
        func run(_ budget: Int) throws -> (DiffMachine, DiffMachine, [String]) {
            let reference = try DiffMachine(image)
            let candidate = try DiffMachine(image)
            let jit = try JITEngine(hart: candidate.hart, codeBufferSize: 1 << 20)
            _ = Watchdog.call(2) { jit.run(budget: budget) }
            reference.step(to: candidate.pc, count: candidate.minstret)
            return (reference, candidate, compare(reference, candidate, memory: true))
        }
        var good = 0, bad = Int(instructionCap)
        guard try !run(bad).2.isEmpty else {
            return "neither stepping the JIT block by block nor one run call shows a difference: it depends on "
                + "the budget slices\n" + program.describe(image)
        }
        while bad - good > 1 {
            let middle = (good + bad) / 2
            if try run(middle).2.isEmpty { good = middle } else { bad = middle }
        }
        let (_, before, _) = try run(good)
        let (interpreted, translated, differences) = try run(bad)
        return report("one JIT run call with budget \(bad) (\(good) shows no difference)", from: before.pc, before.minstret,
                      interpreted, translated, differences, image)
    }

    static func report(_ how: String, from pc: UInt64, _ count: UInt64, _ reference: DiffMachine, _ candidate: DiffMachine,
                       _ differences: [String], _ image: ProgramImage) -> String {
        var out = "first difference: \(how), after the JIT went from pc \(hex(pc)) (minstret \(count)) to pc "
            + "\(hex(candidate.pc)) (minstret \(candidate.minstret)); the interpreter, stepped to that pc and minstret, "
            + "is at pc \(hex(reference.pc)) (minstret \(reference.minstret)); satp \(hex(candidate.hart.state.pointee.satp)), "
            + "privilege \(candidate.hart.state.pointee.privilege):\n"
        out += differences.prefix(16).joined(separator: "\n") + "\n"
        out += "code from \(hex(pc)):\n" + image.listing(around: pc, count: Int(min(candidate.minstret &- count, 64)) + 6)
        return out
    }

    /// What a program does, from the interpreter stepped one instruction at a time: traps by
    /// the handler taking them and cause, and instructions retired at each privilege.
    static func profile(_ program: Program, image: ProgramImage) throws -> String {
        let m = try DiffMachine(image)
        let sHandler = Layout.sHandler - program.config.codeDelta
        func handler(_ pc: UInt64) -> Int {
            if (Layout.mHandler..<Layout.sHandler).contains(pc) { return 1 }
            if (sHandler..<sHandler + 0x1000).contains(pc) { return 2 }
            return 0
        }
        var retired: [PrivilegeMode: UInt64] = [:]
        var traps: [String: Int] = [:]
        var first: [String] = []
        for _ in 0..<instructionCap {
            let before = m.hart.state.pointee
            let reason = m.hart.run(budget: 1)
            let after = m.hart.state.pointee
            if after.minstret != before.minstret { retired[before.privilege, default: 0] += 1 }
            let h = handler(after.pc)
            if h != 0 && handler(before.pc) != h {
                let cause = h == 1 ? after.mcause : after.scause
                let name = cause >> 63 != 0 ? "irq\(cause & 0xff)" : "\(cause)"
                traps["\(h == 1 ? "M" : "S") \(name)", default: 0] += 1
                if first.count < 24 && traps["\(h == 1 ? "M" : "S") \(name)", default: 0] <= 3 {
                    let epc = h == 1 ? after.mepc : after.sepc, tval = h == 1 ? after.mtval : after.stval
                    first.append("\(h == 1 ? "M" : "S") cause \(name) at \(hex(epc)) (\(before.privilege)), tval \(hex(tval)), ra \(hex(after.x[1]))")
                }
            }
            if reason != .budgetExhausted { break }
        }
        let r = retired.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let t = traps.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
        return "seed \(program.seed) (\(program.config.summary)): retired \(r); traps (handler cause: count) \(t)\n  first traps: "
            + first.joined(separator: "\n               ")
    }

    static let csrNames: [(UInt16, String)] = [
        (0x001, "fflags"), (0x002, "frm"), (0x003, "fcsr"), (0xc00, "cycle"), (0xc02, "instret"),
        (0x100, "sstatus"), (0x104, "sie"), (0x105, "stvec"), (0x106, "scounteren"), (0x10a, "senvcfg"),
        (0x140, "sscratch"), (0x141, "sepc"), (0x142, "scause"), (0x143, "stval"), (0x144, "sip"), (0x14d, "stimecmp"),
        (0x180, "satp"), (0x300, "mstatus"), (0x302, "medeleg"), (0x303, "mideleg"), (0x304, "mie"), (0x305, "mtvec"),
        (0x306, "mcounteren"), (0x30a, "menvcfg"), (0x320, "mcountinhibit"), (0x340, "mscratch"), (0x341, "mepc"),
        (0x342, "mcause"), (0x343, "mtval"), (0x344, "mip"), (0x3a0, "pmpcfg0"), (0x3a2, "pmpcfg2"),
        (0x3b0, "pmpaddr0"), (0x3b1, "pmpaddr1"), (0x3b2, "pmpaddr2"), (0x3b3, "pmpaddr3"), (0xb00, "mcycle"), (0xb02, "minstret"),
    ]

    /// Every difference between the two machines' architectural states, one line each.
    static func compare(_ a: DiffMachine, _ b: DiffMachine, memory: Bool) -> [String] {
        var out: [String] = []
        let sa = a.hart.state.pointee, sb = b.hart.state.pointee
        func line(_ what: String, _ x: UInt64, _ y: UInt64) { out.append("\(what): interpreter \(hex(x)), JIT \(hex(y))") }
        if sa.pc != sb.pc { line("pc", sa.pc, sb.pc) }
        if sa.privilege != sb.privilege { out.append("privilege: interpreter \(sa.privilege), JIT \(sb.privilege)") }
        for i in 1..<32 where sa.x[i] != sb.x[i] { line("x\(i) (\(Disassembler.integerRegisterNames[i]))", sa.x[i], sb.x[i]) }
        for i in 0..<32 where sa.f[i] != sb.f[i] { line("f\(i) (\(Disassembler.floatRegisterNames[i]))", sa.f[i], sb.f[i]) }
        for (number, name) in csrNames {
            let x = a.hart.debugReadCSR(number), y = b.hart.debugReadCSR(number)
            if x != y { out.append("\(name): interpreter \(x.map { hex($0) } ?? "-"), JIT \(y.map { hex($0) } ?? "-")") }
        }
        if sa.reservation != sb.reservation { line("LR reservation", sa.reservation, sb.reservation) }
        if sa.reservation != HartState.noReservation && sa.reservationValue != sb.reservationValue {
            line("LR reserved value", sa.reservationValue, sb.reservationValue)
        }
        guard memory else { return out }
        out += compareRAM(a, b)
        let la = a.device.log, lb = b.device.log
        if la != lb {
            var i = 0
            while i < la.count && i < lb.count && la[i] == lb[i] { i += 1 }
            let x: String = i < la.count ? la[i].description : "none"
            let y: String = i < lb.count ? lb[i].description : "none"
            out.append("MMIO access \(i) of \(la.count)/\(lb.count): interpreter \(x), JIT \(y)")
        }
        return out
    }

    static func compareRAM(_ a: DiffMachine, _ b: DiffMachine) -> [String] {
        guard let pa = a.memory.hostPointer(at: GuestAddress(Layout.ramBase), count: Layout.ramSize),
              let pb = b.memory.hostPointer(at: GuestAddress(Layout.ramBase), count: Layout.ramSize) else { return ["RAM not mapped"] }
        if memcmp(pa, pb, Int(Layout.ramSize)) == 0 { return [] }
        let x = pa.assumingMemoryBound(to: UInt8.self), y = pb.assumingMemoryBound(to: UInt8.self)
        var out: [String] = []
        var i = 0
        let size = Int(Layout.ramSize)
        while i < size && out.count < 8 {
            if x[i] == y[i] {
                i += 1
                continue
            }
            var end = i
            while end < size && end - i < 16 && x[end] != y[end] { end += 1 }
            let bytesA = (i..<end).map { String(format: "%02x", x[$0]) }.joined(separator: " ")
            let bytesB = (i..<end).map { String(format: "%02x", y[$0]) }.joined(separator: " ")
            let address = Layout.ramBase + UInt64(i)
            out.append("RAM \(hex(address)) (\(Layout.region(address))): interpreter [\(bytesA)], JIT [\(bytesB)]")
            i = end
        }
        return out
    }
}

/// How the JIT's instruction budget is handed out: in one large slice, or in small random ones
/// so that budget exits fall inside chained blocks and loops.
enum SlicePolicy: CustomStringConvertible {
    case large
    case random(max: Int)

    static func choose(_ r: inout Random) -> SlicePolicy {
        switch r.below(100) {
        case 0..<45: return .large
        case 45..<60: return .random(max: 4)
        case 60..<85: return .random(max: 64)
        default: return .random(max: 1500)
        }
    }

    func next(_ r: inout Random) -> Int {
        switch self {
        case .large: return 200_000
        case .random(let max): return r.int(1...max)
        }
    }

    var description: String {
        switch self {
        case .large: return "large"
        case .random(let max): return "1...\(max)"
        }
    }
}

// MARK: - Machines

/// An MMIO device for the tests: 4 KiB of byte registers that remember what was written, and a
/// log of every access (the two engines must make the same accesses in the same order).
final class ScratchDevice: BusDevice {
    struct Access: Equatable, CustomStringConvertible {
        let write: Bool
        let offset: UInt64
        let size: Int
        let value: UInt64
        var description: String { "\(write ? "write" : "read") \(size)@\(hex(offset)) = \(hex(value))" }
    }
    private struct State {
        var bytes = [UInt8](repeating: 0, count: 4096)
        var log: [Access] = []
    }
    let name = "diff-scratch"
    private let state = Mutex(State())

    func read(offset: UInt64, size: Int) -> UInt64 {
        state.withLock { s in
            var value: UInt64 = 0
            for i in 0..<size where Int(offset) + i < 4096 { value |= UInt64(s.bytes[Int(offset) + i]) << (8 * UInt64(i)) }
            // Reads see a counter too, so a read the JIT repeats or drops shows in the values.
            value ^= (UInt64(s.log.count) << 56) >> UInt64(64 - 8 * size)
            s.log.append(Access(write: false, offset: offset, size: size, value: value))
            return value
        }
    }

    func write(offset: UInt64, value: UInt64, size: Int) {
        state.withLock { s in
            for i in 0..<size where Int(offset) + i < 4096 { s.bytes[Int(offset) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            s.log.append(Access(write: true, offset: offset, size: size, value: value))
        }
    }

    var log: [Access] { state.withLock { $0.log } }
}

/// One machine: 2 MiB of RAM at 0x8000_0000, the scratch device, one hart.
final class DiffMachine {
    let memory: GuestMemory
    let mmio: AddressSpace
    let device = ScratchDevice()
    let hart: Hart
    /// The final WFI's address (0: none).
    var finish: UInt64 = 0

    /// Where QEMU's SiFive test device is: programs made for QEMU end by writing to it.
    let testDevice = ScratchDevice()
    /// Where QEMU's mtimecmp is (programs made for QEMU set it in their setup).
    let timerDevice = ScratchDevice()

    init(segments: [(UInt64, [UInt8])]) throws {
        memory = try GuestMemory(regions: [GuestRAM(base: GuestAddress(Layout.ramBase), size: Layout.ramSize)])
        mmio = AddressSpace(name: "memory")
        try mmio.add(device, at: GuestAddress(Layout.mmio), size: 0x1000)
        try mmio.add(testDevice, at: GuestAddress(Layout.testDevice), size: 0x1000)
        try mmio.add(timerDevice, at: GuestAddress(Layout.clint + 0x4000), size: 0x1000)
        hart = try Hart(hartID: 0, memory: PhysicalMemory(ram: memory, mmio: mmio), timeBase: TimeBase(clock: VirtualClock()))
        for (address, bytes) in segments { try memory.writeBytes(bytes, at: GuestAddress(address)) }
        hart.reset(pc: Layout.setup)
    }

    convenience init(_ image: ProgramImage) throws {
        try self.init(segments: image.segments)
        finish = image.finish
    }

    var pc: UInt64 { hart.state.pointee.pc }
    var minstret: UInt64 { hart.state.pointee.minstret }

    /// Runs the interpreter to pc `target` with `minstret` = `count` (traps retire nothing and
    /// mcountinhibit may stop minstret: both are needed), or until it has gone past them.
    func step(to target: UInt64, count: UInt64) {
        // In bulk while far behind (bounded: mcountinhibit may have frozen minstret).
        var bulk = 0
        while minstret + 64 < count && bulk < Int(DifferentialRun.instructionCap) {
            let n = Int(count - minstret - 32)
            bulk += n
            if Watchdog.call(1, { hart.run(budget: n) }) != .budgetExhausted { return }
        }
        var steps = 0
        while !(pc == target && minstret == count) && minstret <= count && steps < 10_000 {
            if Watchdog.call(1, { hart.run(budget: 1) }) != .budgetExhausted { return }
            steps += 1
        }
    }

    /// Runs `engine` in slices of `budget()` until the program reaches its final WFI; returns
    /// "finished" or why not.
    func runToEnd(_ engine: (Int) -> StopReason, budget: () -> Int) -> String {
        // Bounded by the budget handed out too: a trap storm retires nothing.
        var spent = 0
        while minstret < DifferentialRun.instructionCap && spent < 2 * Int(DifferentialRun.instructionCap) {
            let slice = budget()
            spent += slice
            switch engine(slice) {
            case .waitingForInterrupt:
                return pc == finish + 4 ? "finished" : "waiting for an interrupt at \(hex(pc))"
            case .budgetExhausted: continue
            case let other: return "stopped: \(other)"
            }
        }
        return "no FINISH after \(minstret) instructions retired, \(spent) budgeted"
    }
}

// MARK: - Memory layout of a test program

/// Physical layout (RAM is 0x8000_0000-0x801f_ffff):
///
///     8000_0000  setup (M-mode): CSRs, satp, registers from the table, mret into the body
///     8000_0c00  M-mode trap handler, FINISH's wfi
///     8000_1000  S-mode trap handler (its own page: never a U page)
///     8000_2000  the random body, ended by the FINISH ecall (up to 8000_f000)
///     8000_f000  subroutine page A (4-byte instructions only)
///     8001_0000  initial register values (x, then f)
///     8001_1000  subroutine page B: what page-table root B maps at A's virtual address
///     8010_0000  data pages D0-D7, random bytes
///     8018_0000  page tables of root A; 8019_0000 those of root B
///     1000_0000  the scratch MMIO device (one page)
///
/// With paging, code and data are also mapped 1 GiB lower (VA = PA - 0x4000_0000) with 4 KiB
/// pages of varied permissions, MMIO at 0x4020_0000, all of RAM as one 2 MiB page at
/// 0x4040_0000, a misaligned 2 MiB page at 0x4060_0000, and RAM's gigabyte identity-mapped
/// (S and U programs run from either alias).
enum Layout {
    static let ramBase: UInt64 = 0x8000_0000
    static let ramSize: UInt64 = 2 << 20
    static let setup: UInt64 = 0x8000_0000
    static let setupLimit: UInt64 = 0x8000_0c00
    static let mHandler: UInt64 = 0x8000_0c00
    static let sHandler: UInt64 = 0x8000_1000
    static let body: UInt64 = 0x8000_2000
    static let bodyLimit: UInt64 = 0x8000_f000
    static let subroutine: UInt64 = 0x8000_f000
    static let registerTable: UInt64 = 0x8001_0000
    static let subroutineB: UInt64 = 0x8001_1000
    static let data: UInt64 = 0x8010_0000
    static let dataPages = 8
    static let pageTables: UInt64 = 0x8018_0000
    static let pageTablesB: UInt64 = 0x8019_0000
    static let mmio: UInt64 = 0x1000_0000
    /// Code and data pages are mapped at PA - aliasDelta.
    static let aliasDelta: UInt64 = 0x4000_0000
    /// XOR with this turns an alias address into the identity one and back.
    static let aliasToggle: UInt64 = 0xc000_0000
    static let codePages = 16
    static let mmioVA: UInt64 = 0x4020_0000
    static let megapageVA: UInt64 = 0x4040_0000
    static let misalignedMegapageVA: UInt64 = 0x4060_0000

    // For programs made for QEMU (`ProgramConfig.qemu`, QEMUOracleTests): QEMU's `virt` has
    // its UART at `mmio`, so the program's device accesses go to an address no device
    // decodes on either machine (access faults), and its "past the end of RAM" address is one
    // past QEMU's larger RAM too; the UART and the SiFive test device carry the state dump.
    static let unassigned: UInt64 = 0x1200_0000
    static let pastRAMQEMU: UInt64 = 0x9000_0000
    static let uart: UInt64 = 0x1000_0000
    static let testDevice: UInt64 = 0x10_0000
    /// The ACLINT's MTIMER in QEMU's `virt` (setup writes mtimecmp).
    static let clint: UInt64 = 0x200_0000
    /// The dump routine, the M handler's trap log (count, then cause/epc/tval/mstatus per
    /// trap) and the dump's own area: RAM no program reaches.
    static let dumpCode: UInt64 = 0x801d_0000
    static let trapLog: UInt64 = 0x801e_0000
    static let trapLogEntries = 1024
    static let dumpArea: UInt64 = 0x801f_0000

    static func region(_ pa: UInt64) -> String {
        switch pa {
        case setup..<mHandler: return "setup"
        case mHandler..<sHandler: return "M handler"
        case sHandler..<body: return "S handler"
        case body..<bodyLimit: return "code page, offset \(hex(pa - body)) in the body"
        case subroutine..<registerTable: return "subroutine A"
        case registerTable..<subroutineB: return "register table"
        case subroutineB..<(subroutineB + 0x1000): return "subroutine B"
        case data..<(data + UInt64(dataPages) * 4096): return "data page D\((pa - data) >> 12)"
        case pageTables..<pageTablesB: return "page tables A"
        case pageTablesB..<(pageTablesB + 0x1_0000): return "page tables B"
        default: return "RAM"
        }
    }
}

/// Sv39/48/57 PTE bits.
enum PTE {
    static let v: UInt64 = 1, r: UInt64 = 2, w: UInt64 = 4, x: UInt64 = 8, u: UInt64 = 16, g: UInt64 = 32, a: UInt64 = 64, d: UInt64 = 128
}

struct PageTableBuilder {
    let levels: Int
    let root: UInt64
    private var next: UInt64
    private(set) var entries: [UInt64: UInt64] = [:]

    init(levels: Int, root: UInt64) {
        self.levels = levels
        self.root = root
        next = root + 4096
    }

    /// Maps `va` to `pa` with a leaf at `leafLevel` (0: 4 KiB, 1: 2 MiB, 2: 1 GiB).
    mutating func map(_ va: UInt64, to pa: UInt64, leafLevel: Int, flags: UInt64) {
        var table = root
        var level = levels - 1
        while level > leafLevel {
            let slot = table + ((va >> (12 + 9 * UInt64(level))) & 511) * 8
            if let pte = entries[slot] {
                precondition(pte & (PTE.r | PTE.x) == 0, "page tables: a leaf is in the way of \(hex(va))")
                table = (pte >> 10) << 12
            } else {
                let t = next
                next += 4096
                entries[slot] = (t >> 12) << 10 | PTE.v
                table = t
            }
            level -= 1
        }
        entries[table + ((va >> (12 + 9 * UInt64(leafLevel))) & 511) * 8] = (pa >> 12) << 10 | flags
    }
}

// MARK: - Random numbers

/// SplitMix64, and helpers written here rather than the standard library's `random(in:)`, so
/// that a seed names the same program on every platform and Swift version.
struct Random {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func int(_ r: ClosedRange<Int>) -> Int { r.lowerBound + below(r.count) }
    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    mutating func pick<T>(_ a: [T]) -> T { a[below(a.count)] }
    mutating func weighted<T>(_ choices: [(Int, T)]) -> T {
        var n = below(choices.reduce(0) { $0 + $1.0 })
        for (weight, value) in choices {
            if n < weight { return value }
            n -= weight
        }
        return choices[choices.count - 1].1
    }
}

// MARK: - Encoding

/// Encodes instructions by filling the operand fields of `instructionTable` rows (the table the
/// decoder is built from), checking each word by decoding it back.
enum Asm {
    static let rows: [Op: InstructionEntry] = Dictionary(uniqueKeysWithValues: instructionTable.map { ($0.op, $0) })

    static func encode(_ op: Op, rd: UInt8 = 0, rs1: UInt8 = 0, rs2: UInt8 = 0, rs3: UInt8 = 0, rm: UInt8 = 0,
                       imm: Int64 = 0) -> UInt32 {
        guard let e = rows[op] else { preconditionFailure("no table row for \(op)") }
        let u = UInt32(truncatingIfNeeded: imm)
        let rdF = UInt32(rd & 31) << 7, rs1F = UInt32(rs1 & 31) << 15, rs2F = UInt32(rs2 & 31) << 20
        let rs3F = UInt32(rs3 & 31) << 27, rmF = UInt32(rm & 7) << 12
        let fields: UInt32
        switch e.format {
        case .r: fields = rdF | rs1F | rs2F | rmF
        case .r1: fields = rdF | rs1F | rmF
        case .r4: fields = rdF | rs1F | rs2F | rs3F | rmF
        case .i, .load: fields = rdF | rs1F | (u & 0xfff) << 20
        case .store: fields = rs1F | rs2F | (u >> 5 & 0x7f) << 25 | (u & 31) << 7
        case .branch: fields = rs1F | rs2F | (u >> 12 & 1) << 31 | (u >> 5 & 0x3f) << 25 | (u >> 1 & 0xf) << 8 | (u >> 11 & 1) << 7
        case .u: fields = rdF | (u & 0xffff_f000)
        case .jal: fields = rdF | (u >> 20 & 1) << 31 | (u >> 1 & 0x3ff) << 21 | (u >> 11 & 1) << 20 | (u >> 12 & 0xff) << 12
        case .shift: fields = rdF | rs1F | (u & 63) << 20
        case .shiftW: fields = rdF | rs1F | (u & 31) << 20
        case .csr, .csrImmediate: fields = rdF | rs1F | (u & 0xfff) << 20
        case .atomic: fields = rdF | rs1F | rs2F | UInt32(rm & 3) << 25
        case .loadReserved: fields = rdF | rs1F | UInt32(rm & 3) << 25
        case .fence: fields = (u & 0xff) << 20
        case .none: fields = 0
        case .sfence: fields = rs1F | rs2F
        }
        let word = (fields & ~e.mask) | e.match
        let d = Decoder.shared.decode32(word)
        precondition(d.op == op, "encoder: \(op) decodes as \(d.op)")
        switch e.format {
        case .i, .load, .store, .branch, .jal:
            precondition(d.imm == imm, "encoder: \(op) immediate \(imm) out of range")
        default: break
        }
        return word
    }

    static func addi(_ rd: UInt8, _ rs1: UInt8, _ imm: Int64) -> UInt32 { encode(.addi, rd: rd, rs1: rs1, imm: imm) }
    static func csrr(_ rd: UInt8, _ csr: UInt16) -> UInt32 { encode(.csrrs, rd: rd, imm: Int64(csr)) }
    static func csrw(_ csr: UInt16, _ rs1: UInt8) -> UInt32 { encode(.csrrw, rs1: rs1, imm: Int64(csr)) }
    static func sd(_ rs2: UInt8, base: UInt8, offset: Int64) -> UInt32 { encode(.sd, rs1: base, rs2: rs2, imm: offset) }
    static let ecall = encode(.ecall), ebreak = encode(.ebreak), mret = encode(.mret), sret = encode(.sret), wfi = encode(.wfi)
    static let fenceI = encode(.fence_i), nop = addi(0, 0, 0)

    /// `li rd, value`: addi, lui+addiw, or a shorter constant shifted left 12 plus addi.
    static func li(_ rd: UInt8, _ value: UInt64) -> [UInt32] {
        let v = Int64(bitPattern: value)
        if (-2048...2047).contains(v) { return [addi(rd, 0, v)] }
        let low = (v << 52) >> 52
        if Int64(Int32(truncatingIfNeeded: v)) == v {
            let high = Int64(Int32(truncatingIfNeeded: v &- low))
            return [encode(.lui, rd: rd, imm: high)] + (low != 0 ? [encode(.addiw, rd: rd, rs1: rd, imm: low)] : [])
        }
        return li(rd, UInt64(bitPattern: (v &- low) >> 12)) + [encode(.slli, rd: rd, rs1: rd, imm: 12)]
            + (low != 0 ? [addi(rd, rd, low)] : [])
    }

    // Compressed forms the generator places itself (checked by decoding them back).
    static func cJump(_ offset: Int64) -> UInt16 {
        let o = UInt16(truncatingIfNeeded: offset)
        let c: UInt16 = 0xa001 | (o >> 11 & 1) << 12 | (o >> 4 & 1) << 11 | (o >> 8 & 3) << 9 | (o >> 10 & 1) << 8
            | (o >> 6 & 1) << 7 | (o >> 7 & 1) << 6 | (o >> 1 & 7) << 3 | (o >> 5 & 1) << 2
        let d = Decoder.shared.decodeCompressed(c)
        precondition(d.op == .jal && d.imm == offset, "c.j offset \(offset) out of range")
        return c
    }

    static func cBranch(notZero: Bool, _ rs1: UInt8, _ offset: Int64) -> UInt16 {
        let o = UInt16(truncatingIfNeeded: offset)
        let c: UInt16 = (notZero ? 0xe001 : 0xc001) | (o >> 8 & 1) << 12 | (o >> 3 & 3) << 10 | UInt16(rs1 - 8) << 7
            | (o >> 6 & 3) << 5 | (o >> 1 & 3) << 3 | (o >> 5 & 1) << 2
        let d = Decoder.shared.decodeCompressed(c)
        precondition(d.op == (notZero ? .bne : .beq) && d.imm == offset && d.rs1 == rs1, "c.beqz/c.bnez offset \(offset) out of range")
        return c
    }

    /// c.jr rs1 / c.jalr rs1.
    static func cJumpRegister(_ rs1: UInt8, link: Bool) -> UInt16 {
        let c: UInt16 = (link ? 0x9002 : 0x8002) | UInt16(rs1) << 7
        precondition(Decoder.shared.decodeCompressed(c).op == .jalr)
        return c
    }
}

/// A piece of code: an instruction, or one whose operand is a label resolved at assembly.
enum Piece {
    case word(UInt32)
    case half(UInt16)
    case label(Int)
    case branch(Op, rs1: UInt8, rs2: UInt8, target: Int)
    case compressedBranch(notZero: Bool, rs1: UInt8, target: Int)
    case jal(rd: UInt8, target: Int)
    case compressedJump(target: Int)
    /// auipc rd + addi rd: rd = address of the label + addend.
    case address(rd: UInt8, target: Int, addend: Int64)
    /// jal to a fixed virtual address (the code's own virtual address is given at assembly).
    case jalTo(rd: UInt8, address: UInt64)

    var size: Int64 {
        switch self {
        case .word, .branch, .jal, .jalTo: return 4
        case .half, .compressedBranch, .compressedJump: return 2
        case .label: return 0
        case .address: return 8
        }
    }

    static func words(_ w: [UInt32]) -> [Piece] { w.map { .word($0) } }

    var instructions: Int {
        switch self {
        case .label: return 0
        case .address: return 2
        default: return 1
        }
    }
}

/// A self-contained unit of the body (its branches and labels stay inside it), so that
/// reduction can drop any item, or any of a composite item's children.
struct Item {
    var head: [Piece] = []
    var body: [Item] = []
    var tail: [Piece] = []

    init(_ head: [Piece], body: [Item] = [], tail: [Piece] = []) {
        self.head = head
        self.body = body
        self.tail = tail
    }

    var pieces: [Piece] { head + body.flatMap(\.pieces) + tail }
    var size: Int64 { pieces.reduce(0) { $0 + $1.size } }
}

struct AssembledCode {
    var bytes: [UInt8] = []
    /// Offset, bits (16 or 32) and length of each instruction.
    var lines: [(offset: UInt64, raw: UInt32, length: Int)] = []

    func offset(of raw: UInt32) -> UInt64? { lines.first { $0.raw == raw }?.offset }
}

/// Assembles code whose first byte runs at virtual address `base` (only `jalTo` needs it:
/// every label reference is pc-relative).
func assemble(_ pieces: [Piece], base: UInt64 = 0) -> AssembledCode {
    var labels: [Int: Int64] = [:]
    var offset: Int64 = 0
    for p in pieces {
        if case .label(let l) = p { labels[l] = offset }
        offset += p.size
    }
    var out = AssembledCode()
    offset = 0
    func put(_ raw: UInt32, _ length: Int) {
        out.lines.append((UInt64(offset), raw, length))
        for i in 0..<length { out.bytes.append(UInt8(truncatingIfNeeded: raw >> (8 * UInt32(i)))) }
        offset += Int64(length)
    }
    func distance(_ label: Int) -> Int64 {
        guard let target = labels[label] else { preconditionFailure("undefined label \(label)") }
        return target - offset
    }
    for p in pieces {
        switch p {
        case .word(let w): put(w, 4)
        case .half(let h): put(UInt32(h), 2)
        case .label: break
        case let .branch(op, rs1, rs2, target): put(Asm.encode(op, rs1: rs1, rs2: rs2, imm: distance(target)), 4)
        case let .compressedBranch(notZero, rs1, target): put(UInt32(Asm.cBranch(notZero: notZero, rs1, distance(target))), 2)
        case let .jal(rd, target): put(Asm.encode(.jal, rd: rd, imm: distance(target)), 4)
        case let .compressedJump(target): put(UInt32(Asm.cJump(distance(target))), 2)
        case let .jalTo(rd, address): put(Asm.encode(.jal, rd: rd, imm: Int64(bitPattern: address &- (base &+ UInt64(offset)))), 4)
        case let .address(rd, target, addend):
            let d = distance(target) + addend
            let high = (d + 0x800) >> 12
            put(Asm.encode(.auipc, rd: rd, imm: high << 12), 4)
            put(Asm.addi(rd, rd, d - (high << 12)), 4)
        }
    }
    return out
}

// MARK: - Program configuration

/// Register roles: the body writes only `free` registers; `bases` hold addresses for loads and
/// stores (never written after setup); the trap handlers use the `t3`-`t6` scratch registers.
enum Regs {
    static let ra: UInt8 = 1
    static let free: [UInt8] = [1, 3, 4, 5, 6, 7] + Array(10...23)
    static let bases: [UInt8] = [2, 8, 9, 24, 25, 26, 27]
    static let t3: UInt8 = 28, t4: UInt8 = 29, t5: UInt8 = 30, t6: UInt8 = 31
    /// Free registers the subroutines never write: loop counters, so loops may call them.
    static let protected: Set<UInt8> = [18, 19, 20, 21, 22, 23]
}

struct ProgramConfig {
    var mode: PrivilegeMode = .machine
    /// 0 = bare; 3, 4, 5 = Sv39, Sv48, Sv57 page tables in satp.
    var levels = 0
    var satp: UInt64 = 0
    /// The other root: the same mappings except the subroutine page.
    var satpB: UInt64 = 0
    /// Whether the program's code and data pages are U pages.
    var userPages = false
    var codePageAccessed: UInt16 = 0xffff
    var medeleg: UInt64 = 0
    var mideleg: UInt64 = 0
    var mie: UInt64 = 0
    var mstatus: UInt64 = 0
    var mcounteren: UInt64 = 0
    var scounteren: UInt64 = 0
    var fcsr: UInt64 = 0
    var x = [UInt64](repeating: 0, count: 32)
    var f = [UInt64](repeating: 0, count: 32)
    var pmp: [(address: UInt64, config: UInt64)] = []
    /// Made to run on QEMU too (QEMUOracleTests): no device but RAM, no counter or timer
    /// whose value depends on the host's speed, and a state dump through QEMU's UART at FINISH.
    var qemu = false

    var paging: Bool { levels != 0 }
    /// Where the program's device accesses go (Layout.unassigned: access faults, for QEMU).
    var mmio: UInt64 { qemu ? Layout.unassigned : Layout.mmio }
    /// An address just past RAM (no device either).
    var pastRAM: UInt64 { qemu ? Layout.pastRAMQEMU : Layout.ramBase + Layout.ramSize }
    /// Whether code and data run at their alias addresses (S and U programs).
    var aliased: Bool { mode != .machine }
    var codeDelta: UInt64 { aliased ? Layout.aliasDelta : 0 }

    var summary: String {
        let mode = self.mode == .machine ? "M" : self.mode == .supervisor ? "S" : "U"
        let paging = levels == 0 ? "bare" : "Sv\(12 + 9 * levels)"
        var s = "\(mode)-mode, \(paging), mstatus \(hex(mstatus)), fcsr \(hex(fcsr)), mie \(hex(mie)), mideleg \(hex(mideleg))"
        if medeleg != 0 && self.mode != .machine { s += ", medeleg \(hex(medeleg))" }
        return s
    }

    static let interestingX: [UInt64] = [
        0, 1, 2, 3, 0xffff_ffff_ffff_ffff, 0x8000_0000_0000_0000, 0x7fff_ffff_ffff_ffff, 0x8000_0000, 0x7fff_ffff,
        0xffff_ffff, 0xffff_ffff_8000_0000, 0x1_0000_0000, 31, 32, 63, 64, 0x8000_0000_0000_0001, 0x5555_5555_5555_5555,
        0xaaaa_aaaa_aaaa_aaaa, 0xffff_ffff_ffff_fffe, 0x0000_0000_0000_8000, 0xffff_ffff_ffff_8000, 0x80, 0xff,
    ]

    static let interestingF: [UInt64] = {
        let doubles: [UInt64] = [
            0, 0x8000_0000_0000_0000, 0x3ff0_0000_0000_0000, 0xbff0_0000_0000_0000, 0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000, 0x7ff8_0000_0000_0000, 0x7ff0_0000_0000_0001, 0xfff8_0000_0000_0001, 1,
            0x8000_0000_0000_0001, 0x7fef_ffff_ffff_ffff, 0x3fe0_0000_0000_0000, 0x43e0_0000_0000_0000,
            0xc3e0_0000_0000_0000, 0x41e0_0000_0000_0000, 0xc1e0_0000_0000_0000, 0x3ff8_0000_0000_0000,
            0x4330_0000_0000_0001, 0x000f_ffff_ffff_ffff, 0x3ff0_0000_0000_0001,
        ]
        let singles: [UInt64] = [
            0, 0x8000_0000, 0x3f80_0000, 0xbf80_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001, 1,
            0x8000_0001, 0x7f7f_ffff, 0x4f00_0000, 0xcf00_0000, 0x5f00_0000, 0xdf00_0000, 0x3fc0_0000, 0x007f_ffff,
            0x3f80_0001, 0x4b00_0001,
        ]
        // Singles NaN-boxed, and a few not boxed (read as the canonical NaN).
        return doubles + singles.map { 0xffff_ffff_0000_0000 | $0 } + [0x3f80_0000, 0x0000_0001_3f80_0000, 0x7fff_ffff_3f80_0000]
    }()

    static func make(_ r: inout Random, qemu: Bool) -> ProgramConfig {
        var c = ProgramConfig()
        c.qemu = qemu
        c.mode = r.weighted([(40, .machine), (30, .supervisor), (30, .user)])
        if c.mode == .machine {
            // M-mode runs bare; page tables then serve only MPRV accesses.
            c.levels = r.chance(30) ? r.pick([3, 4, 5]) : 0
            c.userPages = r.chance(50)
            c.medeleg = r.next() & 0xb3ff
            c.mideleg = r.chance(30) ? r.next() & 0x222 : 0
        } else {
            c.levels = r.weighted([(60, 3), (25, 4), (15, 5)])
            c.userPages = c.mode == .user
            if r.chance(65) {
                for cause: UInt64 in [1, 2, 3, 4, 5, 6, 7, 12, 13, 15] {
                    if r.chance(50) { c.medeleg |= 1 << cause }
                }
            }
            // Only SSI can be delegated: S-mode can clear SSIP, not STIP or SEIP.
            c.mideleg = r.chance(50) ? InterruptBits.ssip : 0
        }
        if qemu { c.medeleg = QEMUDeparture.pairAMOCauses(c.medeleg) }
        c.mie = r.chance(60) ? r.next() & 0x222 : 0
        if c.levels != 0 {
            c.satp = UInt64(c.levels + 5) << 60 | Layout.pageTables >> 12
            c.satpB = UInt64(c.levels + 5) << 60 | Layout.pageTablesB >> 12
        }
        c.codePageAccessed = UInt16(truncatingIfNeeded: r.next()) | 0b11
        var fs: UInt64 = r.weighted([(4, 0), (16, 1), (16, 2), (64, 3)])
        // For QEMU, FS is Off or Dirty, never Initial or Clean: QEMU 7.2 leaves those after an
        // instruction that only raises flags (QEMUDeparture.integerResultLeavesFSClean), and
        // the body reads mstatus.
        if qemu && fs != 0 { fs = 3 }
        var mstatus = fs << 13 | UInt64(c.mode.rawValue) << 11
        // The S handler reads U code pages: it needs SUM.
        if r.chance(50) || (c.mode == .user && c.medeleg != 0) { mstatus |= MStatus.sum }
        if r.chance(30) { mstatus |= MStatus.mxr }
        if c.mode == .supervisor && r.chance(15) { mstatus |= MStatus.tvm }
        // (Not for QEMU: QEMUDeparture.mprvAfterFetch.)
        if c.mode == .machine && r.chance(30) && !qemu { mstatus |= MStatus.mprv }
        if r.chance(40) { mstatus |= MStatus.mpie }  // MIE once in the body (M-mode programs)
        if r.chance(40) { mstatus |= MStatus.sie }
        c.mstatus = mstatus
        // Never TM (bit 1): the time CSR is not deterministic.
        c.mcounteren = r.pick([0, 0b101, 0b100, 0b1101, 0xffff_fffd])
        c.scounteren = r.pick([0, 0b101, 0b001, 0xffff_fffd])
        let frm: UInt64 = r.weighted([(80, UInt64(r.below(5))), (20, UInt64(r.int(5...7)))])
        c.fcsr = frm << 5 | (r.chance(50) ? 0 : r.next() & 31)

        for i in 1..<32 { c.x[i] = r.chance(60) ? r.pick(interestingX) : r.next() }
        for i in 0..<32 { c.f[i] = r.chance(70) ? r.pick(interestingF) : r.next() }
        // Base registers: page boundaries between data pages of different permissions, and
        // places where accesses fault or reach the MMIO device.
        let d = { (k: UInt64) in Layout.data - c.codeDelta + k * 4096 }
        c.x[2] = d(0) + 0x400
        c.x[8] = d(1)
        c.x[9] = d(2)
        c.x[25] = d(4)
        if c.aliased {
            c.x[24] = r.pick([d(3) + 0x800, Layout.megapageVA + 0x10_4000, Layout.misalignedMegapageVA + 0x800, Layout.data + 0x1000,
                              Layout.mmioVA + 0x800, 0x0000_0040_0000_0000, 0xffff_ffff_ffff_f800, d(5)])
            c.x[26] = r.pick([d(6), d(6), Layout.mmioVA + 0x100])
        } else {
            c.x[24] = r.pick([c.mmio + 0x800, c.pastRAM, 0x800, 0xffff_ffff_ffff_f800, d(3) + 0x800, d(5)])
            c.x[26] = r.pick([d(6), d(6), c.mmio + 0x100])
        }
        c.x[27] = r.pick([d(7) + 0x800, d(8)])

        // PMP: a read-only NA4 word in D7 (its page is then never in the TLB), sometimes an NA4
        // word in the first body page (fetches from it are never in the TLB either), and
        // everything else open. M-mode is bound by them only through MPRV.
        let na4: UInt64 = 2 << 3, napot: UInt64 = 3 << 3
        c.pmp.append(((Layout.data + 7 * 4096 + 0x800) >> 2, na4 | 1))
        // (Not for QEMU: code and data islands are reached by misaligned accesses that straddle
        // it, and QEMU 7.2 does not enforce such partial matches in M-mode.)
        if r.chance(30) && !qemu {
            c.pmp.append(((Layout.body + UInt64(r.below(1024)) * 4) >> 2, na4 | 7))
        } else {
            c.pmp.append((0, 0))
        }
        c.pmp.append(((1 << 54) - 1, napot | 7))
        return c
    }

    /// The page tables (PTE address → PTE) of both roots.
    func pageTables() -> [UInt64: UInt64] {
        guard paging else { return [:] }
        var entries = tables(root: Layout.pageTables, subroutine: Layout.subroutine)
        entries.merge(tables(root: Layout.pageTablesB, subroutine: Layout.subroutineB)) { a, _ in a }
        return entries
    }

    private func tables(root: UInt64, subroutine: UInt64) -> [UInt64: UInt64] {
        var b = PageTableBuilder(levels: levels, root: root)
        let u = userPages ? PTE.u : 0
        for i in 0..<Layout.codePages {
            var pa = Layout.ramBase + UInt64(i) * 4096
            let va = pa - Layout.aliasDelta
            if pa == Layout.subroutine { pa = subroutine }
            // Page 1 holds the S handler: never a U page. Body pages are writable (for the
            // code the program rewrites and data it keeps there); some start with A clear.
            let flags = i == 1 ? PTE.v | PTE.r | PTE.x | PTE.a
                : PTE.v | PTE.r | PTE.w | PTE.x | u | (codePageAccessed >> i & 1 != 0 ? PTE.a | PTE.d : 0)
            b.map(va, to: pa, leafLevel: 0, flags: flags)
        }
        let data: [UInt64] = [
            PTE.v | PTE.r | PTE.w | PTE.a | PTE.d | u,  // D0
            PTE.v | PTE.r | PTE.w | u,  // D1: A and D clear
            PTE.v | PTE.r | PTE.a | u,  // D2: read-only
            0,  // D3: not valid
            PTE.v | PTE.r | PTE.w | PTE.x | PTE.a | PTE.d | (u ^ PTE.u),  // D4: the other privilege's page
            PTE.v | PTE.x | PTE.a | u,  // D5: execute-only (loads need MXR)
            PTE.v | PTE.r | PTE.w | PTE.a | u,  // D6: D clear
            PTE.v | PTE.r | PTE.w | PTE.a | PTE.d | u,  // D7 (a PMP word inside)
        ]
        for (k, flags) in data.enumerated() {
            let pa = Layout.data + UInt64(k) * 4096
            b.map(pa - Layout.aliasDelta, to: pa, leafLevel: 0, flags: flags)
        }
        b.map(Layout.mmioVA, to: mmio, leafLevel: 0, flags: PTE.v | PTE.r | PTE.w | PTE.a | PTE.d | u)
        b.map(Layout.megapageVA, to: Layout.ramBase, leafLevel: 1, flags: PTE.v | PTE.r | PTE.w | PTE.a | PTE.d | u)
        b.map(Layout.misalignedMegapageVA, to: Layout.ramBase + 0x1000, leafLevel: 1, flags: PTE.v | PTE.r | PTE.w | PTE.a | PTE.d | u)
        b.map(Layout.ramBase, to: Layout.ramBase, leafLevel: 2, flags: PTE.v | PTE.r | PTE.w | PTE.x | PTE.a | PTE.d | u)
        return b.entries
    }
}

// MARK: - Programs

struct ProgramImage {
    var segments: [(UInt64, [UInt8])] = []
    /// Every instruction placed: virtual address (as the program runs it), bits, length.
    var lines: [(va: UInt64, raw: UInt32, length: Int)] = []
    var bodyRange: Range<Int> = 0..<0
    var subroutineRanges: [Range<Int>] = [0..<0, 0..<0]
    /// The address of the final WFI.
    var finish: UInt64 = 0

    static func text(raw: UInt32, length: Int, va: UInt64) -> String {
        let d = length == 2 ? Decoder.shared.decodeCompressed(UInt16(truncatingIfNeeded: raw)) : Decoder.shared.decode32(raw)
        let bits = length == 2 ? String(format: "    %04x", raw) : String(format: "%08x", raw)
        return "  \(String(va, radix: 16)):  \(bits)  \(Disassembler.text(d, pc: va))"
    }

    /// The listing from a few instructions before `va`; an identity-mapped address is shown
    /// at its alias too.
    func listing(around va: UInt64, count: Int) -> String {
        let index = lines.firstIndex { $0.va == va } ?? lines.firstIndex { $0.va == va - Layout.aliasDelta }
        guard let index else { return "  (pc \(hex(va)) is not in the program)\n" }
        var out = ""
        for i in max(0, index - 4)..<min(lines.count, index + max(count, 8)) {
            let l = lines[i]
            out += (i == index ? "=>" : "  ") + ProgramImage.text(raw: l.raw, length: l.length, va: l.va).dropFirst(2) + "\n"
        }
        return out
    }
}

struct Program {
    let seed: UInt64
    let config: ProgramConfig
    var items: [Item]
    /// Subroutine pages A and B: the same virtual address under roots A and B.
    var subroutines: [[Item]]
    let data: [UInt8]

    static func generate(seed: UInt64, qemu: Bool = false) -> Program {
        var r = Random(seed: seed)
        let config = ProgramConfig.make(&r, qemu: qemu)
        var data = [UInt8](repeating: 0, count: Layout.dataPages * 4096)
        for i in stride(from: 0, to: data.count, by: 8) {
            let v = r.next()
            for j in 0..<8 { data[i + j] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(j))) }
        }
        var g = Generator(r: r, config: config)
        let subroutines = (0..<2).map { _ in (0..<g.r.int(2...30)).map { _ in g.subroutineItem() } }
        g.subroutineEntries = subroutines.map { $0.flatMap(\.pieces).reduce(0) { $0 + $1.instructions } }.min() ?? 0
        let items = (0..<g.r.int(30...260)).map { _ in g.item(depth: 0, avoid: []) }
        return Program(seed: seed, config: config, items: items, subroutines: subroutines, data: data)
    }

    var instructionCount: Int { (items + subroutines.flatMap { $0 }).flatMap(\.pieces).reduce(0) { $0 + $1.instructions } }

    func image() -> ProgramImage {
        let c = config
        var image = ProgramImage()
        func place(_ code: AssembledCode, at pa: UInt64, va: UInt64, limit: UInt64) {
            precondition(pa + UInt64(code.bytes.count) <= limit, "program section at \(hex(pa)) too long")
            image.segments.append((pa, code.bytes))
            image.lines += code.lines.map { (va: va + $0.offset, raw: $0.raw, length: $0.length) }
        }
        // The body, then FINISH.
        let bodyVA = Layout.body - c.codeDelta
        let body = assemble(items.flatMap(\.pieces) + [.word(Asm.ecall)], base: bodyVA)
        let finishPA = Layout.body + UInt64(body.bytes.count) - 4

        // Setup, in M-mode from reset.
        var setup: [UInt32] = []
        let t3 = Regs.t3, t4 = Regs.t4, t5 = Regs.t5, t6 = Regs.t6
        func csr(_ number: UInt16, _ value: UInt64) { setup += Asm.li(t6, value) + [Asm.csrw(number, t6)] }
        csr(CSRNumber.mstatus, 3 << 13)
        csr(CSRNumber.mtvec, Layout.mHandler)
        csr(CSRNumber.stvec, Layout.sHandler - c.codeDelta)
        for (i, entry) in c.pmp.enumerated() { csr(CSRNumber.pmpaddr0 + UInt16(i), entry.address) }
        csr(CSRNumber.pmpcfg0, c.pmp.enumerated().reduce(0) { $0 | $1.element.config << (8 * UInt64($1.offset)) })
        csr(CSRNumber.satp, c.satp)
        csr(CSRNumber.medeleg, c.medeleg)
        csr(CSRNumber.mideleg, c.mideleg)
        csr(CSRNumber.mie, c.mie)
        csr(CSRNumber.mcounteren, c.mcounteren)
        csr(CSRNumber.scounteren, c.scounteren)
        csr(CSRNumber.fcsr, c.fcsr)
        if c.qemu {
            // Neither timer may fire: QEMU's mtimecmp and stimecmp reset to 0 (MTIP pending at
            // once), swemu's to all ones; the specs leave both undefined at reset.
            csr(CSRNumber.stimecmp, ~0)
            setup += Asm.li(t5, Layout.clint + 0x4000) + [Asm.addi(t6, 0, -1), Asm.sd(t6, base: t5, offset: 0)]
        }
        setup += Asm.li(t6, Layout.registerTable)
        for i in 0..<32 { setup.append(Asm.encode(.fld, rd: UInt8(i), rs1: t6, imm: 256 + 8 * Int64(i))) }
        for i in 1..<30 { setup.append(Asm.encode(.ld, rd: UInt8(i), rs1: t6, imm: 8 * Int64(i))) }
        setup += Asm.li(t5, c.mstatus) + [Asm.csrw(CSRNumber.mstatus, t5)]
        setup += Asm.li(t5, bodyVA) + [Asm.csrw(CSRNumber.mepc, t5)]
        setup += Asm.li(t5, c.x[30]) + Asm.li(t6, c.x[31]) + [Asm.mret]
        place(assemble(Piece.words(setup)), at: Layout.setup, va: Layout.setup, limit: Layout.setupLimit)

        // The M handler. Interrupts: clear the software-writable pending bits, return. Fetch
        // faults (a jump to a non-executable address): return to ra. FINISH: the final wfi.
        // Anything else: resume after the instruction that trapped, its length read from its
        // first halfword (at its physical address: an alias address is turned back into RAM's).
        let irq = 1, fetch = 2, physical = 3, short = 4, finish = 5
        var m: [Piece] = [.word(Asm.csrr(t3, CSRNumber.mcause))]
        if c.qemu { m += Piece.words(QEMUDump.logTrap) }
        m += [.branch(.blt, rs1: t3, rs2: 0, target: irq)]
        m += [.word(Asm.addi(t4, 0, 12)), .branch(.beq, rs1: t3, rs2: t4, target: fetch)]
        m += [.word(Asm.addi(t4, 0, 1)), .branch(.beq, rs1: t3, rs2: t4, target: fetch)]
        m += [.word(Asm.csrr(t3, CSRNumber.mepc)), .word(Asm.addi(t5, t3, 0))]
        m += Piece.words(Asm.li(t4, Layout.ramBase)) + [.branch(.bgeu, rs1: t5, rs2: t4, target: physical)]
        m += Piece.words(Asm.li(t4, Layout.aliasDelta)) + [.word(Asm.encode(.add, rd: t5, rs1: t5, rs2: t4)), .label(physical)]
        m += Piece.words(Asm.li(t4, finishPA)) + [.branch(.beq, rs1: t5, rs2: t4, target: finish)]
        m += Piece.words([Asm.encode(.lhu, rd: t6, rs1: t5), Asm.encode(.andi, rd: t6, rs1: t6, imm: 3), Asm.addi(t3, t3, 2), Asm.addi(t4, 0, 3)])
        m += [.branch(.bne, rs1: t6, rs2: t4, target: short), .word(Asm.addi(t3, t3, 2)), .label(short)]
        m += [.word(Asm.csrw(CSRNumber.mepc, t3)), .word(Asm.mret)]
        m += [.label(fetch), .word(Asm.csrw(CSRNumber.mepc, Regs.ra)), .word(Asm.mret)]
        m += [.label(irq)] + Piece.words(Asm.li(t4, InterruptBits.supervisor))
        m += [.word(Asm.encode(.csrrc, rs1: t4, imm: Int64(CSRNumber.mip))), .word(Asm.mret)]
        m += [.label(finish), .word(Asm.csrw(CSRNumber.mie, 0))]
        if c.qemu {
            // The state dump, then the test device: QEMU exits, swemu's run ends at the dump's wfi.
            m += Piece.words(Asm.li(t3, Layout.dumpCode) + [Asm.encode(.jalr, rs1: t3)])
            let dump = assemble(QEMUDump.routine())
            place(dump, at: Layout.dumpCode, va: Layout.dumpCode, limit: Layout.trapLog)
            image.finish = Layout.dumpCode + (dump.offset(of: Asm.wfi) ?? 0)
        } else {
            m += [.word(Asm.wfi), .jal(rd: 0, target: finish)]
        }
        let mCode = assemble(m)
        place(mCode, at: Layout.mHandler, va: Layout.mHandler, limit: Layout.sHandler)
        if !c.qemu { image.finish = Layout.mHandler + (mCode.offset(of: Asm.wfi) ?? 0) }

        // The S handler: the same, through virtual memory (SSIP is the only interrupt delegated).
        var s: [Piece] = [.word(Asm.csrr(t3, CSRNumber.scause)), .branch(.blt, rs1: t3, rs2: 0, target: irq)]
        s += [.word(Asm.addi(t4, 0, 12)), .branch(.beq, rs1: t3, rs2: t4, target: fetch)]
        s += [.word(Asm.addi(t4, 0, 1)), .branch(.beq, rs1: t3, rs2: t4, target: fetch)]
        s += [.word(Asm.csrr(t3, CSRNumber.sepc))]
        s += Piece.words([Asm.encode(.lhu, rd: t6, rs1: t3), Asm.encode(.andi, rd: t6, rs1: t6, imm: 3), Asm.addi(t3, t3, 2), Asm.addi(t4, 0, 3)])
        s += [.branch(.bne, rs1: t6, rs2: t4, target: short), .word(Asm.addi(t3, t3, 2)), .label(short)]
        s += [.word(Asm.csrw(CSRNumber.sepc, t3)), .word(Asm.sret)]
        s += [.label(fetch), .word(Asm.csrw(CSRNumber.sepc, Regs.ra)), .word(Asm.sret)]
        s += [.label(irq), .word(Asm.encode(.csrrci, rs1: 2, imm: Int64(CSRNumber.sip))), .word(Asm.sret)]
        place(assemble(s), at: Layout.sHandler, va: Layout.sHandler - c.codeDelta, limit: Layout.body)

        let bodyStart = image.lines.count
        place(body, at: Layout.body, va: bodyVA, limit: Layout.bodyLimit)
        image.bodyRange = bodyStart..<image.lines.count

        // The subroutine pages: 4-byte instructions, `ret`, then nops and a last `ret` to the end
        // of the page (calls enter at any instruction; the M handler reads an instruction's
        // length from page A whichever root is in use).
        let ret = Asm.encode(.jalr, rs1: Regs.ra)
        for (which, items) in subroutines.enumerated() {
            var code = assemble(items.flatMap(\.pieces) + [.word(ret)])
            precondition(code.lines.allSatisfy { $0.length == 4 }, "subroutines hold 4-byte instructions only")
            while code.bytes.count < 4092 { code.bytes += [0x13, 0, 0, 0] }
            code.bytes += (0..<4).map { UInt8(truncatingIfNeeded: ret >> (8 * UInt32($0))) }
            let first = image.lines.count
            place(code, at: which == 0 ? Layout.subroutine : Layout.subroutineB, va: Layout.subroutine - c.codeDelta,
                  limit: (which == 0 ? Layout.subroutine : Layout.subroutineB) + 4096)
            image.subroutineRanges[which] = first..<image.lines.count
        }

        var table = [UInt8]()
        for v in c.x + c.f { for j in 0..<8 { table.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(j)))) } }
        image.segments.append((Layout.registerTable, table))
        image.segments.append((Layout.data, data))
        for (address, pte) in c.pageTables().sorted(by: { $0.key < $1.key }) {
            image.segments.append((address, (0..<8).map { UInt8(truncatingIfNeeded: pte >> (8 * UInt64($0))) }))
        }
        return image
    }

    func bodyListing(_ image: ProgramImage) -> String {
        image.bodyRange.map { ProgramImage.text(raw: image.lines[$0].raw, length: image.lines[$0].length, va: image.lines[$0].va) }
            .joined(separator: "\n")
    }

    func describe(_ image: ProgramImage) -> String {
        var out = "seed \(seed): \(config.summary)\n"
        for i in 1..<32 { out += "  x\(i) = \(hex(config.x[i]))" + (i % 4 == 0 ? "\n" : "") }
        out += "\n" + bodyListing(image)
        for (name, range) in [("A", image.subroutineRanges[0]), ("B", image.subroutineRanges[1])] where !range.isEmpty {
            out += "\nsubroutine \(name) (calls enter at any of its instructions):\n"
            out += range.map { ProgramImage.text(raw: image.lines[$0].raw, length: image.lines[$0].length, va: image.lines[$0].va) }
                .joined(separator: "\n")
        }
        return out
    }
}

// MARK: - The generator

/// Makes the items of a body. Every register an item writes comes from `rd(avoid)` (a free
/// register, never one an enclosing item relies on); memory accesses use base registers with
/// 12-bit offsets, so no store reaches code except the deliberate rewrites and data islands.
struct Generator {
    var r: Random
    let config: ProgramConfig
    private var labels = 100
    /// Instructions in the shorter subroutine: calls enter at any of them.
    var subroutineEntries = 0

    init(r: Random, config: ProgramConfig) {
        self.r = r
        self.config = config
    }

    enum Kind {
        case alu, fp, memory, fpMemory, amo, lrsc, csr, interrupt, system, illegal, compressed, li
        case branch, jal, jalr, loop, rewrite, island, wildJump, toggleAlias, call, toggleRoot, rotation
    }

    static let aluRows = instructionTable.filter {
        [.i, .m, .zba, .zbb, .zbs].contains($0.ext) && [.r, .r1, .i, .shift, .shiftW, .u].contains($0.format) && $0.op != .jalr
    }
    /// For QEMU: without ctzw (QEMUDeparture.ctzwOfZeroLowWord).
    static let qemuALURows = aluRows.filter { $0.op != .ctzw }
    static let fpRows = instructionTable.filter { [.f, .d].contains($0.ext) && [.r, .r1, .r4].contains($0.format) }
    static let amoRows = instructionTable.filter { $0.format == .atomic && $0.op != .sc_w && $0.op != .sc_d }
    static let loads: [(Op, Int)] = [(.lb, 1), (.lh, 2), (.lw, 4), (.ld, 8), (.lbu, 1), (.lhu, 2), (.lwu, 4)]
    static let stores: [(Op, Int)] = [(.sb, 1), (.sh, 2), (.sw, 4), (.sd, 8)]

    mutating func newLabel() -> Int {
        labels += 1
        return labels
    }

    /// A destination register: free, not in `avoid`; now and then x0.
    mutating func rd(_ avoid: Set<UInt8>) -> UInt8 {
        if r.chance(4) { return 0 }
        return temp(avoid)
    }

    mutating func temp(_ avoid: Set<UInt8>) -> UInt8 {
        while true {
            let reg = r.pick(Regs.free)
            if !avoid.contains(reg) { return reg }
        }
    }

    /// A source register: mostly free ones, also x0, bases and the handlers' scratch registers.
    mutating func source() -> UInt8 {
        switch r.below(10) {
        case 0: return 0
        case 1...6: return r.pick(Regs.free)
        default: return UInt8(r.below(32))
        }
    }

    mutating func imm12() -> Int64 {
        r.chance(40) ? r.pick([0, 1, -1, 2047, -2048, 31, 32, 63, 64, -2, 0x7f0, 16]) : Int64(r.int(-2048...2047))
    }

    mutating func roundingMode() -> UInt8 { r.weighted([(40, 7), (52, UInt8(r.below(5))), (5, 5), (3, 6)]) }

    /// A load/store offset from a base register (bases sit on page boundaries): aligned and
    /// misaligned, crossing the boundary, and now and then the ends of the 12-bit range.
    mutating func offset(_ size: Int) -> Int64 {
        switch r.below(20) {
        case 0..<9: return Int64(r.int(-12...12) * size)
        case 9..<14: return Int64(r.int(-40...40))
        case 14..<17: return size == 1 ? -1 : Int64(r.int(-(size - 1)...(-1)))  // across the page boundary
        case 17: return r.pick([-2048, 2047, Int64(2048 - size), -2047, 2040, -8])
        default: return Int64(r.int(-2048...2047))
        }
    }

    mutating func item(depth: Int, avoid: Set<UInt8>) -> Item {
        var choices: [(Int, Kind)] = [
            (28, .alu), (10, .fp), (14, .memory), (5, .fpMemory), (5, .amo), (3, .lrsc), (7, .csr), (3, .interrupt),
            (3, .system), (2, .illegal), (12, .compressed), (3, .li),
        ]
        if depth < 2 { choices += [(5, .branch), (2, .jal), (2, .jalr), (1, .island), (3, .rotation)] }
        if !avoid.contains(Regs.ra) { choices.append((1, .wildJump)) }
        if config.aliased && depth < 2 { choices.append((1, .toggleAlias)) }
        if depth == 0 { choices += [(3, .loop), (1, .rewrite)] }
        if avoid.isSubset(of: Regs.protected) { choices.append((depth == 0 ? 2 : 3, .call)) }
        if config.mode == .supervisor && config.paging { choices.append((2, .toggleRoot)) }
        switch r.weighted(choices) {
        case .alu: return Item([.word(alu(avoid))])
        case .fp: return Item([.word(fp(avoid))])
        case .memory: return memory(avoid)
        case .fpMemory: return fpMemory()
        case .amo: return amo(avoid)
        case .lrsc: return lrsc(avoid: avoid)
        case .csr: return csr(avoid)
        case .interrupt: return interrupt(avoid)
        case .system: return system()
        case .illegal: return illegal(compressed: r.chance(40))
        case .compressed: return compressed(avoid)
        case .li: return Item(Piece.words(Asm.li(temp(avoid), r.chance(50) ? r.pick(ProgramConfig.interestingX) : r.next())))
        case .branch: return branch(depth: depth, avoid: avoid)
        case .jal: return jal(depth: depth, avoid: avoid)
        case .jalr: return jalr(depth: depth, avoid: avoid)
        case .loop: return loop(avoid: avoid)
        case .rewrite: return rewrite(avoid: avoid)
        case .island: return island(avoid: avoid)
        case .wildJump: return wildJump(avoid: avoid)
        case .toggleAlias: return toggleAlias(depth: depth, avoid: avoid)
        case .call: return call(avoid)
        case .toggleRoot: return toggleRoot(avoid)
        case .rotation: return rotation(depth: depth, avoid: avoid)
        }
    }

    /// A rotation as RV64GC code writes one without Zbb: two shifts by amounts that add up
    /// to the width, then or, xor or add of the results, which the JIT fuses into one
    /// rotation and drops the shifts nothing else reads (`Translator.fuseRotations`). Other
    /// items come between (faults, stores, exits, a write of the shifted register), and the
    /// shifted values are mostly overwritten after.
    mutating func rotation(depth: Int, avoid: Set<UInt8>) -> Item {
        let word = r.chance(50)
        let width = word ? 32 : 64
        let left = Int64(r.int(1...(width - 1)))
        let shifted = r.chance(85) ? temp(avoid) : source()
        let x = temp(avoid.union([shifted])), y = temp(avoid.union([shifted, x]))
        let shifts = [
            Asm.encode(word ? .slliw : .slli, rd: x, rs1: shifted, imm: left),
            Asm.encode(word ? .srliw : .srli, rd: y, rs1: shifted, imm: Int64(width) - left),
        ]
        let (first, second) = r.chance(50) ? (shifts[0], shifts[1]) : (shifts[1], shifts[0])
        let between = r.chance(60) ? [] : children(depth: depth + 1, avoid: avoid.union([x, y]), 1...2)
        let (a, b) = r.chance(50) ? (x, y) : (y, x)
        let combined = r.pick([r.chance(50) ? x : y, rd(avoid), rd(avoid)])
        var tail: [Piece] = [.word(second), .word(Asm.encode(r.pick([.or, .or, .xor, .add]), rd: combined, rs1: a, rs2: b))]
        for dead in [x, y] where r.chance(75) && dead != combined {
            tail.append(.word(Asm.addi(dead, 0, Int64(r.int(-8...8)))))
        }
        return Item([.word(first)], body: between, tail: tail)
    }

    /// An item for the subroutine pages: one 4-byte instruction (calls enter at any of them,
    /// so none may depend on the one before), writing neither ra nor a loop counter.
    mutating func subroutineItem() -> Item {
        let avoid: Set<UInt8> = Regs.protected.union([Regs.ra])
        let kinds: [(Int, Kind)] = [(30, .alu), (10, .fp), (14, .memory), (4, .fpMemory), (5, .csr), (2, .system), (2, .illegal)]
        switch r.weighted(kinds) {
        case .fp: return Item([.word(fp(avoid))])
        case .memory: return memory(avoid)
        case .fpMemory: return fpMemory()
        case .csr:
            let list = csrs().filter { if case .values = $0.1 { return false } else { return true } }
            let (number, use) = r.pick(list)
            return csrAccess(number, use, avoid)
        case .system: return system()
        case .illegal: return illegal(compressed: false)
        default: return Item([.word(alu(avoid))])
        }
    }

    mutating func alu(_ avoid: Set<UInt8>) -> UInt32 {
        let e = r.pick(config.qemu ? Self.qemuALURows : Self.aluRows)
        var imm: Int64 = 0
        switch e.format {
        case .i: imm = imm12()
        case .shift: imm = Int64(r.below(64))
        case .shiftW: imm = Int64(r.below(32))
        case .u: imm = Int64(Int32(truncatingIfNeeded: r.next() & 0xffff_f000))
        default: break
        }
        return Asm.encode(e.op, rd: rd(avoid), rs1: source(), rs2: source(), imm: imm)
    }

    mutating func fp(_ avoid: Set<UInt8>) -> UInt32 {
        let e = r.pick(Self.fpRows)
        let rd = e.registers.rd ? UInt8(r.below(32)) : self.rd(avoid)
        let rs1 = e.registers.rs1 ? UInt8(r.below(32)) : source()
        return Asm.encode(e.op, rd: rd, rs1: rs1, rs2: UInt8(r.below(32)), rs3: UInt8(r.below(32)), rm: roundingMode())
    }

    mutating func memory(_ avoid: Set<UInt8>) -> Item {
        let base = r.pick(Regs.bases)
        if r.chance(55) {
            let (op, size) = r.pick(Self.loads)
            return Item([.word(Asm.encode(op, rd: rd(avoid), rs1: base, imm: offset(size, from: base)))])
        }
        let (op, size) = r.pick(Self.stores)
        return Item([.word(Asm.encode(op, rs1: base, rs2: source(), imm: offset(size, from: base)))])
    }

    mutating func fpMemory() -> Item {
        let base = r.pick(Regs.bases)
        let (op, size): (Op, Int) = r.pick([(.flw, 4), (.fld, 8), (.fsw, 4), (.fsd, 8)])
        let offset = offset(size, from: base)
        if op == .flw || op == .fld { return Item([.word(Asm.encode(op, rd: UInt8(r.below(32)), rs1: base, imm: offset))]) }
        return Item([.word(Asm.encode(op, rs1: base, rs2: UInt8(r.below(32)), imm: offset))])
    }

    /// `offset(size)` from `base`; for QEMU, never one whose access holds the PMP word x27
    /// points at without starting or ending in it (QEMUDeparture.pmpEntryInsideAccess).
    mutating func offset(_ size: Int, from base: UInt8) -> Int64 {
        let o = offset(size)
        return config.qemu && base == 27 && o < 0 && o + Int64(size) > 4 ? 0 : o
    }

    /// An atomic address: a base plus an offset, mostly naturally aligned.
    mutating func atomicAddress(_ t: UInt8, size: Int) -> UInt32 {
        var offset = r.chance(88) ? Int64(r.int(-6...6) * size) : Int64(r.int(-7...7))
        let base = r.pick(Regs.bases)
        if config.qemu && base == 27 && offset < 0 && offset + Int64(size) > 4 { offset = 0 }
        return Asm.addi(t, base, offset)
    }

    mutating func amo(_ avoid: Set<UInt8>) -> Item {
        let e = r.pick(Self.amoRows)
        let size = e.mnemonic.hasSuffix(".w") ? 4 : 8
        let t = temp(avoid)
        return Item([.word(atomicAddress(t, size: size)),
                     .word(Asm.encode(e.op, rd: rd(avoid), rs1: t, rs2: source(), rm: UInt8(r.below(4))))])
    }

    mutating func lrsc(avoid: Set<UInt8>) -> Item {
        let word = r.chance(50)
        let t = temp(avoid)
        var inner = avoid
        inner.insert(t)
        // For QEMU, an address no SC can fault on: QEMU 7.2 checks nothing on an SC whose
        // reservation does not match (QEMUDeparture.failedSCChecksNothing).
        let reserved = config.qemu ? Asm.addi(t, 2, Int64(r.int(-6...6) * 8)) : atomicAddress(t, size: word ? 4 : 8)
        let head: [Piece] = [.word(reserved),
                             .word(Asm.encode(word ? .lr_w : .lr_d, rd: rd(inner), rs1: t, rm: UInt8(r.below(4))))]
        var body: [Item] = []
        for _ in 0..<r.int(0...2) { body.append(r.chance(70) ? Item([.word(alu(inner))]) : memory(inner)) }
        // Mostly the matching SC; sometimes the other width or another address.
        // (Another width: the specs let the SC fail or succeed, and QEMU and swemu differ.)
        let scWord = r.chance(90) || config.qemu ? word : !word
        let address = r.chance(90) || config.qemu ? t : r.pick(Regs.bases)
        let tail: [Piece] = [.word(Asm.encode(scWord ? .sc_w : .sc_d, rd: rd(avoid), rs1: address, rs2: source(), rm: UInt8(r.below(4))))]
        return Item(head, body: body, tail: tail)
    }

    enum CSRUse {
        /// Any instruction, any value.
        case any
        /// Read only: writing it would break the program (the trap vectors, PMP...).
        case read
        /// Architecturally read-only, or inaccessible here: any instruction (writes trap).
        case trapsOnWrite
        /// Written only with one of these values.
        case values([UInt64])
    }

    mutating func csrs() -> [(UInt16, CSRUse)] {
        let fp: [(UInt16, CSRUse)] = [(0x001, .any), (0x002, .any), (0x003, .any)]
        // cycle and instret count host time on QEMU (without -icount): not for its programs.
        let counters: [(UInt16, CSRUse)] = config.qemu ? [(0xc03, .trapsOnWrite)]
            : [(0xc00, .trapsOnWrite), (0xc02, .trapsOnWrite), (0xc03, .trapsOnWrite)]
        let unknown: [(UInt16, CSRUse)] = [(0x7c0, .trapsOnWrite), (0x5c0, .trapsOnWrite), (0x3a1, .trapsOnWrite), (0x015, .trapsOnWrite)]
        let machine: [UInt16] = [0x300, 0x340, 0x341, 0x342, 0x343, 0x302, 0x305, 0x301, 0xf14, 0xb02, 0xb00, 0x3a0, 0x3b0, 0x320]
        let roots = config.levels == 0 ? [0] : [config.satp, config.satpB]
        switch config.mode {
        case .machine:
            var list = fp + counters + unknown
            // For QEMU: no stimecmp (it raises STIP against the host's clock there), no trigger
            // CSRs (QEMU implements Sdtrig, swemu has no triggers), no mhpmevent3 (QEMU counts
            // events against host time; swemu's are read-only zero), and medeleg without the bits
            // QEMU 7.2 keeps and swemu hardwires to zero (QEMUDeparture.medelegECalls).
            // mcause/scause and mtval/stval are not read for QEMU: they would carry
            // QEMUDeparture.amoFaultsAsLoads and misalignedAccessFaultTval into registers (the M
            // handler's log and the final values are compared allowing for them).
            let qemuless: Set<UInt16> = config.qemu ? [0x14d, 0x7a0, 0x7a1, 0x323, 0x302, 0x303, 0x10a, 0x344, 0x306, 0x106,
                                                       0x342, 0x142, 0x343, 0x143, 0x300, 0x100, 0x141, 0x341] : []
            for n: UInt16 in [0x300, 0x340, 0x341, 0x342, 0x343, 0x302, 0x303, 0x306, 0x106, 0x140, 0x141, 0x142, 0x143, 0x100,
                              0x10a, 0x7a0, 0x7a1, 0x301, 0x323, 0x14d, 0x344, 0x104, 0x144] where !qemuless.contains(n) {
                list.append((n, .any))
            }
            if config.qemu {
                let pair = QEMUDeparture.pairAMOCauses
                list.append((0x302, .values([0, 0xb3ff, pair(r.next() & 0xb3ff), pair(r.next() & 0xb3ff)])))
                list.append((0x303, .values([0, 0x2, 0x20, 0x200, 0x222])))  // QEMUDeparture.virtualInterruptBits
                list.append((0x344, .values([0, 0x2, 0x20, 0x22])))  // QEMUDeparture.softwareSEIP
                // Even values only: QEMUDeparture.epcBit0.
                for n: UInt16 in [0x141, 0x341] { list.append((n, .values([0, r.next() & ~1, r.next() & ~1, 0x8000_0000_0000_0000]))) }
                // mstatus and sstatus with only the fields swemu implements (QEMUDeparture.statusFields).
                // (MPP never 2: QEMUDeparture.statusFields.)
                let status = QEMUDeparture.legalStatus
                list.append((0x300, .values([status(r.next() & 0x7c19aa), status(r.next() & 0x7c19aa), 0x1800, 0x6000])))
                list.append((0x100, .values([status(r.next() & 0xc6122), status(r.next() & 0xc6122), 0x6000])))
                // QEMUDeparture.counterEnable32Bits (bit 1, TM, stays clear: time is not deterministic)
                for n: UInt16 in [0x306, 0x106] { list.append((n, .values([0, 0b101, 0b1101, 0xffff_fffd, r.next() & 0xffff_fffd]))) }
                list.append((0x10a, .values([0, 1])))  // QEMUDeparture.envcfgCacheBlockFields
            }
            for n: UInt16 in [0x305, 0x105, 0x30a, 0x3a0, 0x3b0, 0x3b2, 0xb00, 0xb02, 0xb03] where !(config.qemu && n != 0xb03 && n >= 0xb00) {
                list.append((n, .read))
            }
            // (Not the implementation's IDs for QEMU: they name the implementation.)
            for n: UInt16 in config.qemu ? [0xf14, 0xf15] : [0xf11, 0xf12, 0xf13, 0xf14, 0xf15] { list.append((n, .trapsOnWrite)) }
            // The same tables read as Sv39 whatever their depth: walks through the wrong levels.
            list.append((0x180, .values([0] + roots + (config.levels == 0 ? [] : [8 << 60 | Layout.pageTables >> 12]))))
            list.append((0x304, .values([0, 0x2, 0x20, 0x200, 0x222, 0x888, r.next() & (config.qemu ? 0xaaa : ~0)])))
            list.append((0x320, .values([0, 1, 4, 5, config.qemu ? 0xffff_fffd : 0xffff_ffff])))
            return list
        case .supervisor:
            var list = fp + counters + unknown + [(0xc01, .trapsOnWrite), (0x14d, .trapsOnWrite)]
            for n: UInt16 in [0x140, 0x141, 0x142, 0x143, 0x100, 0x10a, 0x106, 0x104, 0x144]
            where !(config.qemu && [0x10a, 0x106, 0x142, 0x143, 0x100, 0x141].contains(n)) {
                list.append((n, .any))
            }
            if config.qemu {
                list += [(0x10a, .values([0, 1])), (0x106, .values([0, 0b101, 0xffff_fffd, r.next() & 0xffff_fffd])),
                         (0x100, .values([QEMUDeparture.legalStatus(r.next() & 0xc6122), QEMUDeparture.legalStatus(r.next() & 0xc6122), 0x6000])),
                         (0x141, .values([0, r.next() & ~1, r.next() & ~1]))]
            }
            list.append((0x105, .read))
            list.append((0x180, .values(roots)))
            for n in machine { list.append((n, .trapsOnWrite)) }
            return list
        case .user:
            var list = fp + counters + unknown + [(0xc01, .trapsOnWrite)]
            for n in machine + [0x100, 0x140, 0x141, 0x180, 0x105, 0x14d, 0x144] { list.append((n, .trapsOnWrite)) }
            return list
        }
    }

    mutating func csr(_ avoid: Set<UInt8>) -> Item {
        let list = csrs()
        let (number, use) = r.pick(list)
        return csrAccess(number, use, avoid)
    }

    mutating func csrAccess(_ number: UInt16, _ use: CSRUse, _ avoid: Set<UInt8>) -> Item {
        let csr = Int64(number)
        switch use {
        case .read:
            let op: Op = r.pick([.csrrs, .csrrc, .csrrsi, .csrrci])
            return Item([.word(Asm.encode(op, rd: rd(avoid), rs1: 0, imm: csr))])
        case .any, .trapsOnWrite:
            let op: Op = r.pick([.csrrw, .csrrs, .csrrc, .csrrwi, .csrrsi, .csrrci])
            let immediate = [.csrrwi, .csrrsi, .csrrci].contains(op)
            var rs1 = immediate ? UInt8(r.below(32)) : source()
            // QEMU 7.2 treats csrrs/csrrc of a register holding zero as a read
            // (QEMUDeparture.readOnlyCSRWriteOfZero): for QEMU, only x0 there, on CSRs that trap.
            if config.qemu, case .trapsOnWrite = use, op == .csrrs || op == .csrrc { rs1 = 0 }
            return Item([.word(Asm.encode(op, rd: rd(avoid), rs1: rs1, imm: csr))])
        case .values(let values):
            let t = temp(avoid)
            let op: Op = r.pick([.csrrw, .csrrw, .csrrs])
            return Item(Piece.words(Asm.li(t, r.pick(values))) + [.word(Asm.encode(op, rd: rd(avoid), rs1: t, imm: csr))])
        }
    }

    /// Raises or enables a software interrupt (taken right after the CSR write, if enabled).
    mutating func interrupt(_ avoid: Set<UInt8>) -> Item {
        let op: Op = r.pick([.csrrsi, .csrrsi, .csrrci])
        switch config.mode {
        case .machine:
            switch r.below(3) {
            case 0: return csrAccess(CSRNumber.mip, .values(config.qemu ? [0x2, 0x20, 0x22] : [0x2, 0x20, 0x200, 0x222]), avoid)
            case 1: return Item([.word(Asm.encode(op, rd: rd(avoid), rs1: 8, imm: Int64(CSRNumber.mstatus)))])  // MIE
            default: return Item([.word(Asm.encode(.csrrsi, rd: rd(avoid), rs1: 2, imm: Int64(CSRNumber.mip)))])  // SSIP
            }
        case .supervisor:
            let csr = r.pick([CSRNumber.sip, CSRNumber.sie, CSRNumber.sstatus])  // SSIP, SSIE, SIE: bit 1 in each
            return Item([.word(Asm.encode(op, rd: rd(avoid), rs1: 2, imm: Int64(csr)))])
        case .user:
            return Item([.word(Asm.encode(.csrrsi, rd: rd(avoid), rs1: 2, imm: Int64(CSRNumber.sip)))])  // illegal in U
        }
    }

    mutating func system() -> Item {
        var words: [UInt32] = [
            Asm.ecall, Asm.ebreak, Asm.encode(.fence, imm: Int64(r.below(256))), Asm.fenceI,
            Asm.encode(.sfence_vma, rs1: r.chance(50) ? 0 : source(), rs2: source()),
        ]
        // No EBREAK for QEMU: its tval (0 on QEMU, the pc on swemu, both allowed) would reach
        // registers through CSR reads.
        if config.qemu { words.remove(at: 1) }
        // Privileged instructions that trap at this privilege (an MRET or SRET that succeeded
        // would go anywhere; a WFI that succeeded would end the run).
        if config.mode != .machine { words.append(Asm.mret) }
        if config.mode == .user { words += [Asm.sret, Asm.wfi] }
        return Item([.word(r.pick(words))])
    }

    mutating func illegal(compressed: Bool) -> Item {
        if !compressed {
            for _ in 0..<200 {
                let w = UInt32(truncatingIfNeeded: r.next()) | 3
                if Decoder.shared.decode32(w).op == .illegal { return Item([.word(w)]) }
            }
            return Item([.word(0xffff_ffff)])
        }
        for _ in 0..<200 {
            let h = UInt16(truncatingIfNeeded: r.next())
            if h & 3 != 3 && Decoder.shared.decodeCompressed(h).op == .illegal { return Item([.half(h)]) }
        }
        return Item([.half(0)])
    }

    /// A random 16-bit instruction, kept if it is safe here: it writes only free registers,
    /// accesses memory only through a base register, and does not jump.
    mutating func compressed(_ avoid: Set<UInt8>) -> Item {
        for _ in 0..<500 {
            let h = UInt16(truncatingIfNeeded: r.next())
            guard h & 3 != 3 else { continue }
            let d = Decoder.shared.decodeCompressed(h)
            guard let e = Asm.rows[d.op] else { continue }  // illegal: the illegal item covers it
            switch e.format {
            case .branch, .jal, .none: if d.op != .ebreak || config.qemu { continue }
            case .i where d.op == .jalr: continue
            case .load, .store: if !Regs.bases.contains(d.rs1) { continue }
            default: break
            }
            let writesX = !e.registers.rd && ![.store, .branch, .none, .fence, .sfence].contains(e.format)
            if writesX && d.rd != 0 && (!Regs.free.contains(d.rd) || avoid.contains(d.rd)) { continue }
            return Item([.half(h)])
        }
        return Item([.half(0x0001)])  // c.nop
    }

    mutating func children(depth: Int, avoid: Set<UInt8>, _ n: ClosedRange<Int>) -> [Item] {
        (0..<r.int(n)).map { _ in item(depth: depth + 1, avoid: avoid) }
    }

    /// A forward conditional branch over a few items.
    mutating func branch(depth: Int, avoid: Set<UInt8>) -> Item {
        let target = newLabel()
        let body = children(depth: depth, avoid: avoid, 1...5)
        let size = body.reduce(0) { $0 + $1.size }
        if r.chance(30) && size < 200 {
            return Item([.compressedBranch(notZero: r.chance(50), rs1: UInt8(r.int(8...15)), target: target)], body: body, tail: [.label(target)])
        }
        let op: Op = r.pick([.beq, .bne, .blt, .bge, .bltu, .bgeu])
        return Item([.branch(op, rs1: source(), rs2: source(), target: target)], body: body, tail: [.label(target)])
    }

    mutating func jal(depth: Int, avoid: Set<UInt8>) -> Item {
        let target = newLabel()
        let body = children(depth: depth, avoid: avoid, 1...4)
        if r.chance(40) && body.reduce(0, { $0 + $1.size }) < 1000 {
            return Item([.compressedJump(target: target)], body: body, tail: [.label(target)])
        }
        return Item([.jal(rd: rd(avoid), target: target)], body: body, tail: [.label(target)])
    }

    /// An indirect jump forward to a computed address (auipc+addi), sometimes with an odd
    /// low bit that jalr must clear. The target is a constant the translator may fold into a
    /// direct jump, or hidden from it (an xor with zero, or a new block before the jalr).
    mutating func jalr(depth: Int, avoid: Set<UInt8>) -> Item {
        let target = newLabel()
        let t = temp(avoid)
        let odd: Int64 = r.chance(30) ? 1 : 0
        let compressed = r.chance(30)
        let addend: Int64 = compressed ? odd : r.pick([0, 8, -16, 100])
        var head: [Piece] = [.address(rd: t, target: target, addend: addend)]
        switch r.below(3) {
        case 0: head.append(.word(Asm.encode(.xor, rd: t, rs1: t, rs2: 0)))
        case 1: head.append(.branch(.bne, rs1: 0, rs2: 0, target: target))  // never taken
        default: break
        }
        if compressed {
            // c.jr / c.jalr: to the address itself (bit 0 cleared).
            head.append(.half(Asm.cJumpRegister(t, link: r.chance(50) && !avoid.contains(Regs.ra))))
        } else {
            head.append(.word(Asm.encode(.jalr, rd: rd(avoid), rs1: t, imm: odd - addend)))
        }
        return Item(head, body: children(depth: depth, avoid: avoid, 1...4), tail: [.label(target)])
    }

    /// A counted loop (its blocks chain to themselves; budget exits land inside it).
    mutating func loop(avoid: Set<UInt8>) -> Item {
        let counter = temp(avoid.union(Set(Regs.free).subtracting(Regs.protected)))
        var inner = avoid
        inner.insert(counter)
        let top = newLabel()
        let count = r.chance(80) ? r.int(1...20) : r.int(21...70)
        let body = children(depth: 0, avoid: inner, 2...8)
        var tail: [Piece] = [.word(Asm.addi(counter, counter, -1))]
        if (8...15).contains(counter) && body.reduce(0, { $0 + $1.size }) < 200 && r.chance(50) {
            tail.append(.compressedBranch(notZero: true, rs1: counter, target: top))
        } else {
            tail.append(.branch(.bne, rs1: counter, rs2: 0, target: top))
        }
        return Item([.word(Asm.addi(counter, 0, Int64(count))), .label(top)], body: body, tail: tail)
    }

    /// Self-modifying code: a loop whose block starts with a word that each pass flips between
    /// two instructions (load, xor, store) before FENCE.I. The block is entered through a jump
    /// on the first pass too, so a stale translation of it would run the old instruction.
    mutating func rewrite(avoid: Set<UInt8>) -> Item {
        var inner = avoid
        let counter = temp(inner)
        inner.insert(counter)
        let address = temp(inner)
        inner.insert(address)
        let flip = temp(inner)
        inner.insert(flip)
        let scratch = temp(inner)
        inner.insert(scratch)
        let top = newLabel()
        let original = alu(inner)
        let replacement: UInt32 = r.chance(80) ? alu(inner) : r.pick([Asm.ecall, config.qemu ? Asm.ecall : Asm.ebreak, 0xffff_ffff])
        var head: [Piece] = [.word(Asm.addi(counter, 0, Int64(r.int(2...4)))), .address(rd: address, target: top, addend: 0)]
        head += Piece.words(Asm.li(flip, UInt64(original ^ replacement)))
        head += [r.chance(50) ? .compressedJump(target: top) : .jal(rd: 0, target: top), .label(top), .word(original)]
        let tail: [Piece] = Piece.words([
            Asm.encode(.lw, rd: scratch, rs1: address), Asm.encode(.xor, rd: scratch, rs1: scratch, rs2: flip),
            Asm.encode(.sw, rs1: address, rs2: scratch), Asm.fenceI,
            Asm.addi(counter, counter, -1),
        ]) + [.branch(.bne, rs1: counter, rs2: 0, target: top)]
        return Item(head, body: children(depth: 1, avoid: inner, 0...2), tail: tail)
    }

    /// Data kept in a code page: jumped over, then loaded, stored and swapped through a pointer
    /// to it (stores stay inside it: they are data, never executed).
    mutating func island(avoid: Set<UInt8>) -> Item {
        let start = newLabel(), over = newLabel()
        let t = temp(avoid)
        var inner = avoid
        inner.insert(t)
        let size = r.int(4...16) * 2
        var head: [Piece] = [r.chance(50) ? .compressedJump(target: over) : .jal(rd: 0, target: over), .label(start)]
        for _ in 0..<(size / 2) { head.append(.half(UInt16(truncatingIfNeeded: r.next()))) }
        head += [.label(over), .address(rd: t, target: start, addend: 0)]
        var body: [Item] = []
        for _ in 0..<r.int(1...5) {
            switch r.below(10) {
            case 0..<4:
                // Loads may read past the island (into code: harmless).
                let (op, _) = r.pick(Self.loads)
                body.append(Item([.word(Asm.encode(op, rd: rd(inner), rs1: t, imm: Int64(r.int(-8...size))))]))
            case 4..<9:
                let (op, n) = r.pick(Self.stores)
                body.append(Item([.word(Asm.encode(op, rs1: t, rs2: source(), imm: Int64(r.int(0...(size - n)))))]))
            default:
                let e = r.pick(Self.amoRows)
                let n = e.mnemonic.hasSuffix(".w") ? 4 : 8
                guard size >= n else { continue }
                let u = temp(inner)
                body.append(Item(Piece.words([Asm.addi(u, t, Int64(r.int(0...(size - n)))),
                                              Asm.encode(e.op, rd: rd(inner), rs1: u, rs2: source(), rm: UInt8(r.below(4)))])))
            }
        }
        return Item(head, body: body)
    }

    /// A call to an address that cannot be executed here (no X, not valid, not RAM, a page of
    /// the other privilege): the handler's fetch-fault path returns to ra.
    mutating func wildJump(avoid: Set<UInt8>) -> Item {
        var inner = avoid
        inner.insert(Regs.ra)
        let t = temp(inner)
        var targets: [UInt64]
        if config.aliased {
            let d = { (k: UInt64) in Layout.data - Layout.aliasDelta + k * 4096 }
            targets = [d(0) + 0x10, d(3) + 0x100, d(4) + 0x20, Layout.mmioVA, 0xffff_ffff_ffff_f000, 0x0000_0080_0000_0000]
            // Not S into D4 (a U page) for QEMU: QEMUDeparture.sFetchFromUserPage.
            if config.qemu && config.mode == .supervisor { targets.remove(at: 2) }
            if config.mode == .user { targets.append(Layout.sHandler - Layout.aliasDelta) }
        } else {
            targets = [config.mmio, 0, config.pastRAM, 0xffff_ffff_ffff_f000]
        }
        let jump: Piece = r.chance(30) ? .half(Asm.cJumpRegister(t, link: true)) : .word(Asm.encode(.jalr, rd: Regs.ra, rs1: t))
        return Item(Piece.words(Asm.li(t, r.pick(targets))) + [jump])
    }

    /// Continues at the other virtual alias of the same code (alias ↔ identity mapping), so
    /// the same physical code runs under two virtual pcs.
    mutating func toggleAlias(depth: Int, avoid: Set<UInt8>) -> Item {
        let target = newLabel()
        let t = temp(avoid)
        var inner = avoid
        inner.insert(t)
        let u = temp(inner)
        var head: [Piece] = [.address(rd: t, target: target, addend: 0)] + Piece.words(Asm.li(u, Layout.aliasToggle))
        head += [.word(Asm.encode(.xor, rd: t, rs1: t, rs2: u)), .word(Asm.encode(.jalr, rd: rd(avoid), rs1: t))]
        return Item(head, body: children(depth: depth, avoid: avoid, 0...2), tail: [.label(target)])
    }

    /// Switches satp between roots A and B (csrr, xor, csrw), so calls before and after reach
    /// different code at the same virtual address.
    mutating func toggleRoot(_ avoid: Set<UInt8>) -> Item {
        let t = temp(avoid)
        let u = temp(avoid.union([t]))
        return Item(Piece.words(Asm.li(t, config.satp ^ config.satpB) + [Asm.csrr(u, CSRNumber.satp),
                    Asm.encode(.xor, rd: u, rs1: u, rs2: t), Asm.csrw(CSRNumber.satp, u)]))
    }

    /// A call into the subroutine page (page-table roots A and B map it to different code), at
    /// any of its instructions: direct (jal, so a chained exit would skip the page's current
    /// translation) or indirect (through the jump cache).
    mutating func call(_ avoid: Set<UInt8>) -> Item {
        let entry = Layout.subroutine - config.codeDelta + 4 * UInt64(r.below(subroutineEntries + 1))
        if r.chance(40) { return Item([.jalTo(rd: Regs.ra, address: entry)]) }
        let t = temp(avoid.union([Regs.ra]))
        let jump: Piece = r.chance(30) ? .half(Asm.cJumpRegister(t, link: true)) : .word(Asm.encode(.jalr, rd: Regs.ra, rs1: t))
        return Item(Piece.words(Asm.li(t, entry)) + [jump])
    }
}
