import Dispatch
import Foundation
import RISCV
import RISCVJIT
import Synchronization
import Testing

/// Cases the random programs of `DifferentialTests` do not make.
@Suite struct JITEngineTests {
    /// A trap handler whose own fetch faults (mtvec outside RAM) traps forever, retiring
    /// nothing: the run must still end within its budget, as the interpreter's does, so that
    /// the vCPU thread sees stop requests (found by the differential tester's author).
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func aTrapStormStillEndsTheRun() throws {
        // lui t0, 0x1 (0x1000 is not RAM); csrw mtvec, t0; ecall
        let words: [UInt32] = [0x0000_12b7, 0x3052_9073, 0x0000_0073]
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let reference = try DiffMachine(segments: [(Layout.setup, bytes)])
        #expect(reference.hart.run(budget: 1000) == .budgetExhausted)

        let machine = try DiffMachine(segments: [(Layout.setup, bytes)])
        let jit = try JITEngine(hart: machine.hart)
        let result = Mutex<StopReason?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let reason = jit.run(budget: 1000)
            result.withLock { $0 = reason }
            done.signal()
        }
        guard done.wait(timeout: .now() + 30) == .success else {
            Issue.record("JITEngine.run(budget: 1000) did not return in 30 s")
            machine.hart.requestStop()
            return
        }
        #expect(result.withLock { $0 } == .budgetExhausted)
        #expect(machine.pc == 0x1000)
        #expect(machine.hart.debugReadCSR(CSRNumber.mcause) == 1)  // instruction access fault
        #expect(machine.minstret == reference.minstret)
    }

    /// The JIT leaves the results of W instructions unextended until something reads 64 bits
    /// (`Translator.lazy`): every way such a value leaves its host register must extend it,
    /// and and/or/xor may skip the extension only on 32-bit operands. Each rule has a line
    /// here whose value differs from the interpreter's when the rule is broken (checked by
    /// breaking each); random programs rarely chain the three instructions that show it.
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func lazySignExtensionAgreesWithTheInterpreter() throws {
        let data = Layout.data, other = Layout.data + 0x1000
        var words: [UInt32] = []
        words += Asm.li(5, 0x8000_0000_1234_5678)  // 64 bits
        words += Asm.li(6, 0x7fff_ffff)  // 32 bits, sign-extended
        words += Asm.li(7, 0xffff_ffff_8000_0001)
        words += Asm.li(20, data)
        words += Asm.li(21, other)
        // Lazy values below are negative as 32 bits, so an unextended one differs. Results
        // go to memory (compared too) so that their registers can be used again.
        func sd(_ r: UInt8, _ slot: Int64) -> UInt32 { Asm.sd(r, base: 20, offset: 8 * slot) }
        words += [
            Asm.encode(.addw, rd: 22, rs1: 6, rs2: 6),  // lazy
            sd(22, 1),  // a 64-bit store extends it
            Asm.encode(.sw, rs1: 20, rs2: 22, imm: 0),  // a 32-bit one need not
            Asm.encode(.addw, rd: 8, rs1: 6, rs2: 6),
            Asm.encode(.or, rd: 9, rs1: 8, rs2: 5),  // lazy | 64 bits is 64 bits
            sd(9, 2),
            Asm.encode(.addw, rd: 10, rs1: 6, rs2: 6),
            Asm.encode(.xor, rd: 10, rs1: 10, rs2: 7),  // lazy ^ 32 bits: lazy
            Asm.encode(.add, rd: 23, rs1: 10, rs2: 0),  // a 64-bit read extends it
            sd(23, 3),
            Asm.encode(.xori, rd: 13, rs1: 5, imm: -1),  // 64 bits ^ immediate is 64 bits
            Asm.encode(.addw, rd: 24, rs1: 6, rs2: 6),
            Asm.encode(.and, rd: 24, rs1: 24, rs2: 13),
            sd(24, 4),
            Asm.encode(.subw, rd: 25, rs1: 0, rs2: 6),
            Asm.encode(.ori, rd: 25, rs1: 25, imm: 0x7f0),  // lazy | immediate: lazy
            sd(25, 5),
            Asm.encode(.slliw, rd: 14, rs1: 5, imm: 4),  // W of 64 bits
            Asm.encode(.sraiw, rd: 16, rs1: 14, imm: 2),  // W of lazy
            Asm.encode(.mulw, rd: 19, rs1: 25, rs2: 16),
            Asm.encode(.addiw, rd: 15, rs1: 9, imm: 0),  // sext.w
            sd(15, 6), sd(19, 7),
            // TLB misses, taken with a lazy register: the slow paths write it back.
            Asm.encode(.addw, rd: 26, rs1: 6, rs2: 6),
            Asm.encode(.sd, rs1: 21, rs2: 5, imm: 8),
            Asm.encode(.ld, rd: 27, rs1: 21, imm: 8),  // 64 bits from memory
            Asm.encode(.subw, rd: 28, rs1: 0, rs2: 6),
            Asm.encode(.and, rd: 28, rs1: 28, rs2: 27),
            sd(28, 8), sd(26, 9),
            Asm.encode(.lw, rd: 18, rs1: 20, imm: 0),  // 32 bits from memory
            Asm.encode(.subw, rd: 17, rs1: 0, rs2: 6),
            Asm.encode(.or, rd: 17, rs1: 17, rs2: 18),  // 32 bits | lazy: lazy
            sd(17, 10),
            // Branches with lazy registers: each path extends them on its own.
            Asm.encode(.subw, rd: 11, rs1: 0, rs2: 6),
            Asm.encode(.bne, rs1: 6, rs2: 0, imm: 8),  // taken
            Asm.addi(0, 0, 0),
            Asm.encode(.subw, rd: 12, rs1: 0, rs2: 6),
            Asm.encode(.beq, rs1: 6, rs2: 0, imm: 8),  // not taken
            Asm.addi(0, 0, 0),
            sd(11, 11), sd(12, 12),
        ]
        // More lazy values than host registers: evicted ones are extended when stored.
        let many: [UInt8] = [1, 2, 3, 4, 8, 9, 10, 13, 14, 15, 16, 17, 18]
        words.append(Asm.encode(.subw, rd: many[0], rs1: 0, rs2: 6))
        for (previous, r) in zip(many, many.dropFirst()) { words.append(Asm.encode(.addiw, rd: r, rs1: previous, imm: 1)) }
        for (i, r) in many.enumerated() { words.append(sd(r, 13 + Int64(i))) }
        words += [
            // A self-loop: its back edge extends what the body left lazy, which the next
            // iteration reads as 64 bits.
            Asm.addi(29, 0, 5),
            Asm.addi(30, 0, 0),
            Asm.addi(31, 0, 0),
            Asm.encode(.add, rd: 31, rs1: 31, rs2: 30),
            Asm.encode(.addw, rd: 30, rs1: 30, rs2: 22),
            Asm.addi(29, 29, -1),
            Asm.encode(.bne, rs1: 29, rs2: 0, imm: -12),
            Asm.encode(.jal, rd: 0, imm: 0),  // the end: a loop that spends the rest of the budget
        ]
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let end = Layout.setup + UInt64(bytes.count) - 4

        let (reference, machine, _) = try Self.runBothToTheEnd(bytes, end: end, budget: 2000)
        #expect(machine.hart.debugRead(virtual: data, count: 8 * 26) == reference.hart.debugRead(virtual: data, count: 8 * 26))
    }

    /// Rotations written as two shifts and an or (`Translator.fuseRotations`): each form is
    /// fused where it may be and its shifts dropped only where nothing else could read them;
    /// every register, the stored results and the state at a fault between a shift and
    /// the or are the interpreter's. Each rule has a case whose values differ when it is
    /// broken (checked by breaking each: the source changed between the shifts, a shift
    /// read by another instruction, shifts live at the block's end, a fault in between with
    /// the shifts dropped and not computed, or computed from a changed source).
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func rotationsAgreeWithTheInterpreter() throws {
        let data = Layout.data
        func sd(_ r: UInt8, _ slot: Int64) -> UInt32 { Asm.sd(r, base: 20, offset: 8 * slot) }
        func shift(_ op: Op, _ rd: UInt8, _ rs1: UInt8, _ amount: Int64) -> UInt32 { Asm.encode(op, rd: rd, rs1: rs1, imm: amount) }
        func alu(_ op: Op, _ rd: UInt8, _ rs1: UInt8, _ rs2: UInt8) -> UInt32 { Asm.encode(op, rd: rd, rs1: rs1, rs2: rs2) }
        var words: [UInt32] = []
        words += Asm.li(5, 0x8765_4321_8fed_cba9)  // the value rotated: bit 31 set
        words += Asm.li(20, data)
        words += [
            // 32 bits, or: both shifts dead (x6 overwritten by the or, x7 later).
            shift(.slliw, 6, 5, 7), shift(.srliw, 7, 5, 25), alu(.or, 6, 6, 7), Asm.addi(7, 0, 1), sd(6, 0),
            // 64 bits, xor, operands the other way round: x10 stays live to the block's end.
            shift(.slli, 9, 5, 13), shift(.srli, 10, 5, 51), alu(.xor, 11, 10, 9), Asm.addi(9, 0, 3), sd(11, 1),
            // add into the rotated register itself.
            alu(.add, 14, 5, 0),
            shift(.slliw, 12, 14, 1), shift(.srliw, 13, 14, 31), alu(.add, 14, 12, 13),
            Asm.addi(12, 0, 0), Asm.addi(13, 0, 0), sd(14, 2),
            // x15 is read by another instruction too: only x16's shift may go.
            shift(.slli, 15, 5, 8), shift(.srli, 16, 5, 56), alu(.add, 17, 15, 0), alu(.or, 18, 15, 16),
            Asm.addi(15, 0, 0), Asm.addi(16, 0, 0), sd(17, 3), sd(18, 4),
            // A store between: its slow path would compute them (a hit here).
            shift(.slliw, 6, 5, 3), shift(.srliw, 7, 5, 29), sd(5, 5), alu(.or, 8, 6, 7),
            Asm.addi(6, 0, 0), Asm.addi(7, 0, 0), sd(8, 6),
            // The source changes between the shifts: not a rotation.
            alu(.add, 21, 5, 0),
            shift(.slliw, 6, 21, 3), Asm.addi(21, 21, 1), shift(.srliw, 7, 21, 29), alu(.or, 8, 6, 7),
            Asm.addi(6, 0, 0), Asm.addi(7, 0, 0), sd(8, 7),
            // Amounts that do not add up to the width: not a rotation.
            shift(.slliw, 6, 5, 3), shift(.srliw, 7, 5, 28), alu(.or, 8, 6, 7),
            Asm.addi(6, 0, 0), Asm.addi(7, 0, 0), sd(8, 8),
        ]
        // A rotation at the end of a block of 128 instructions (`Translator.maxInstructions`),
        // cut there: both shifted values are live at its end (stored by the next block).
        words.append(Asm.encode(.jal, rd: 0, imm: 4))
        words += Array(repeating: Asm.addi(0, 0, 0), count: 125)
        words += [shift(.slli, 27, 5, 9), shift(.srli, 28, 5, 55), alu(.or, 29, 27, 28)]
        words += [sd(27, 9), sd(28, 10), Asm.addi(27, 0, 0), Asm.addi(28, 0, 0)]
        // mtvec = the end; then two rotations whose shifted values are live at a load that
        // faults (address 0 is not RAM): the trap must see them. The first one's shifts are
        // dropped and computed in the load's slow path; the second one's source changes
        // before the load, so they must be done.
        let auipc = words.count
        words += [Asm.encode(.auipc, rd: 22, imm: 0), 0, Asm.encode(.csrrw, rd: 0, rs1: 22, imm: Int64(CSRNumber.mtvec))]
        words += [
            alu(.add, 27, 5, 0),
            shift(.slliw, 23, 5, 5), shift(.srliw, 24, 5, 27), alu(.or, 25, 23, 24),
            shift(.slli, 9, 27, 9), shift(.srli, 10, 27, 55), alu(.or, 11, 9, 10), Asm.addi(27, 27, 1),
            Asm.encode(.ld, rd: 26, rs1: 0, imm: 0),
            Asm.addi(23, 0, 0), Asm.addi(24, 0, 0), Asm.addi(9, 0, 0), Asm.addi(10, 0, 0),
        ]
        words[auipc + 1] = Asm.addi(22, 22, Int64(words.count - auipc) * 4)
        words.append(Asm.encode(.jal, rd: 0, imm: 0))  // the end
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let end = Layout.setup + UInt64(bytes.count) - 4

        let (reference, machine, jit) = try Self.runBothToTheEnd(bytes, end: end, budget: 2000)
        for csr in [CSRNumber.mcause, CSRNumber.mepc, CSRNumber.mtval] {
            #expect(machine.hart.debugReadCSR(csr) == reference.hart.debugReadCSR(csr))
        }
        #expect(machine.hart.debugRead(virtual: data, count: 8 * 11) == reference.hart.debugRead(virtual: data, count: 8 * 11))
        // The first five forms (the store's slow path computes the dropped shifts) and the
        // first before the fault; not the two that are not rotations, nor the two whose shifts
        // are both live at the block's end or at a load after their source changed.
        #expect(jit.statistics.fusedRotations == 6)
    }

    /// A loop over more guest registers than the pool holds keeps some of them in host
    /// registers across iterations and the others in `HartState` (`Translator.pinned`): the
    /// back edge must store and drop those, evictions must spare the pinned ones. Wherever a
    /// run stops (every budget from 1 to 200), pc, minstret and every register are the
    /// interpreter's; so is the memory the loop stores to.
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func aLoopOverMoreRegistersThanThePoolAgreesWithTheInterpreter() throws {
        func alu(_ op: Op, _ rd: UInt8, _ rs1: UInt8, _ rs2: UInt8) -> UInt32 { Asm.encode(op, rd: rd, rs1: rs1, rs2: rs2) }
        var words: [UInt32] = []
        words += Asm.li(5, 12)  // the count
        for r: UInt8 in 6...18 { words += Asm.li(r, 0x1234_5678_9abc_def0 &* UInt64(r) &+ 0x7fff_ffff) }
        words += Asm.li(20, Layout.data)
        let body: [UInt32] = [
            alu(.addw, 6, 6, 7),  // lazy values, carried around the loop
            alu(.xor, 8, 8, 6),
            alu(.add, 9, 9, 8),
            alu(.sub, 10, 10, 9),
            alu(.addw, 11, 11, 10),
            alu(.or, 12, 12, 11),
            alu(.and, 13, 13, 12),
            alu(.sltu, 14, 13, 12),
            alu(.add, 15, 15, 14),
            alu(.mulw, 16, 15, 7),
            Asm.sd(16, base: 20, offset: 0),
            Asm.encode(.ld, rd: 17, rs1: 20, imm: 0),
            alu(.add, 18, 18, 17),
            Asm.encode(.sw, rs1: 20, rs2: 11, imm: 8),
            Asm.addi(20, 20, 16),
            Asm.addi(5, 5, -1),
        ]
        words += body
        words.append(Asm.encode(.bne, rs1: 5, rs2: 0, imm: -4 * Int64(body.count)))
        for r: UInt8 in 6...18 { words.append(alu(.add, 19, 19, r)) }  // 64-bit reads of what the loop left
        words.append(Asm.encode(.jal, rd: 0, imm: 0))
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let end = Layout.setup + UInt64(bytes.count) - 4
        try Self.expectAgreementAtEveryStop(bytes, end: end, budgets: 1...200)
        let (reference, machine, _) = try Self.runBothToTheEnd(bytes, end: end, budget: 1000)
        #expect(machine.hart.debugRead(virtual: Layout.data, count: 16 * 12) == reference.hart.debugRead(virtual: Layout.data, count: 16 * 12))
    }

    /// A loop with an early exit is one block (`JITEngine.loopBlockLength`): its registers
    /// stay in host registers across iterations, and it leaves from the middle. Wherever a
    /// run stops (every budget from 1 to 120, so at each side exit, back edge and iteration),
    /// pc, minstret (what the side exit gave back) and every register are the interpreter's.
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func aLoopWithAnEarlyExitStopsWhereTheInterpreterDoes() throws {
        var words: [UInt32] = []
        words += Asm.li(6, 100)  // the limit
        words += Asm.li(7, 7)  // the early exit's value
        words += Asm.li(8, 0x7fff_fff0)  // a 32-bit sum that wraps: negative, lazy
        words += [
            Asm.encode(.addw, rd: 8, rs1: 8, rs2: 5),  // the loop: one block from here
            Asm.addi(5, 5, 1),
            Asm.encode(.beq, rs1: 5, rs2: 7, imm: 12),  // the early exit (x8 lazy), to `after`
            Asm.encode(.add, rd: 9, rs1: 9, rs2: 8),  // extends x8 on the way on
            Asm.encode(.blt, rs1: 5, rs2: 6, imm: -16),  // back to the loop's start
        ]
        // after: blocks of two instructions (a j ends each), so that runs stop between them.
        for _ in 0..<10 { words += [Asm.addi(11, 11, 1), Asm.encode(.jal, rd: 0, imm: 4)] }
        words += [
            Asm.encode(.add, rd: 10, rs1: 8, rs2: 9),  // 64-bit reads of what the loop left
            Asm.encode(.jal, rd: 0, imm: 0),
        ]
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let end = Layout.setup + UInt64(bytes.count) - 4
        try Self.expectAgreementAtEveryStop(bytes, end: end, budgets: 1...120)
        // And to the end: the loop left at i = 7.
        let machine = try DiffMachine(segments: [(Layout.setup, bytes)])
        let jit = try JITEngine(hart: machine.hart)
        #expect(jit.run(budget: 1000) == .budgetExhausted)
        #expect(machine.pc == end && machine.hart.state.pointee.x[5] == 7)
        // The blocks: the set-up to the loop's first branch (8 instructions), the rest of the
        // first iteration (2), the loop (5, where it would be 3 if blocks ended at every
        // branch), the ten of `after` (2 each) and the last two (1 each).
        #expect(jit.statistics.blocks == 15 && jit.statistics.instructions == 37, "the loop is one block")
    }

    /// Runs the program `bytes` (at `Layout.setup`, ending in a loop on itself at `end`) for
    /// `budget` instructions in the interpreter and, on a machine of its own, under the JIT;
    /// both must reach `end` with the same registers. Returns the two machines and the engine
    /// for further checks.
    static func runBothToTheEnd(_ bytes: [UInt8], end: UInt64, budget: Int) throws -> (DiffMachine, DiffMachine, JITEngine) {
        let reference = try DiffMachine(segments: [(Layout.setup, bytes)])
        #expect(reference.hart.run(budget: budget) == .budgetExhausted)
        let machine = try DiffMachine(segments: [(Layout.setup, bytes)])
        let jit = try JITEngine(hart: machine.hart)
        #expect(jit.run(budget: budget) == .budgetExhausted)
        #expect(reference.pc == end && machine.pc == end)
        for r in 1..<32 {
            let expected = reference.hart.state.pointee.x[r], got = machine.hart.state.pointee.x[r]
            #expect(got == expected, "x\(r): JIT \(String(got, radix: 16)), interpreter \(String(expected, radix: 16))")
        }
        return (reference, machine, jit)
    }

    /// Runs the program `bytes` (at `Layout.setup`, ending in a loop on itself at `end`)
    /// under the JIT with each budget of `budgets`, in several runs as the vCPU thread makes
    /// them (each ends where its budget did), and compares where it stopped (pc, minstret)
    /// and every register with the interpreter stepped as far.
    static func expectAgreementAtEveryStop(_ bytes: [UInt8], end: UInt64, budgets: ClosedRange<Int>) throws {
        for budget in budgets {
            let machine = try DiffMachine(segments: [(Layout.setup, bytes)])
            let jit = try JITEngine(hart: machine.hart)
            while machine.minstret < UInt64(budget) && machine.pc != end {
                #expect(jit.run(budget: budget) == .budgetExhausted)
            }
            let reference = try DiffMachine(segments: [(Layout.setup, bytes)])
            reference.step(to: machine.pc, count: machine.minstret)
            #expect(reference.pc == machine.pc && reference.minstret == machine.minstret, "budget \(budget)")
            for r in 1..<32 {
                let expected = reference.hart.state.pointee.x[r], got = machine.hart.state.pointee.x[r]
                #expect(got == expected, "budget \(budget), x\(r): JIT \(String(got, radix: 16)), interpreter \(String(expected, radix: 16))")
            }
        }
    }
}
