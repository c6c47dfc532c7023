import CLinux
import GuestMemory
import Synchronization
import SystemSupport

extension Hart {
    /// Runs up to `budget` instructions, taking interrupts and traps as they come. Returns
    /// when the budget is spent, WFI has nothing to wait for, or a stop was requested.
    public func run(budget: Int) -> StopReason {
        let s = state
        var remaining = budget
        let tracing = Hart.isTracing
        while remaining > 0 {
            if stopRequestFlag.exchange(false, ordering: .acquiring) { return .stopRequested }
            updateTimerInterrupts()
            if isAsleep() { return .waitingForInterrupt }
            if let irq = interruptToTake() {
                takeTrap(Trap(interrupt: irq), pc: s.pointee.pc)
            }
            // The inner loop runs without looking at interrupts: timers and device lines are
            // sampled every chunk (≤ 1024 instructions), and anything that may unmask a pending
            // interrupt ends the chunk early.
            let chunk = min(remaining, 1024)
            s.pointee.endChunk = false
            guard let executed = runChunk(chunk, tracing: tracing) else { return .debugStop }
            remaining -= executed
            if s.pointee.waiting { return .waitingForInterrupt }
        }
        return .budgetExhausted
    }

    /// Runs up to `limit` instructions without looking at interrupts; returns how many ran
    /// (a trapping one counts), or nil when a breakpoint or watchpoint stopped the hart.
    ///
    /// What made the interpreter slow was the work around each instruction, not the
    /// instructions (perf: the dispatch, calls, and pc, counter and flag traffic through
    /// `HartState`). So runs of the common instructions go through `runIntegers`' small loop;
    /// retired instructions are counted in a local and added to mcycle/minstret before any
    /// CSR instruction (the only way the guest reads or changes them, or mcountinhibit), at
    /// a trap and when the chunk ends; the breakpoint filter is read once (only the debugger
    /// changes it, while the hart is stopped). Breakpoints and traces take every instruction
    /// through the general path below.
    @inline(__always)
    private func runChunk(_ limit: Int, tracing: Bool) -> Int? {
        let s = state
        var pc = s.pointee.pc
        var executed = 0
        // Of the `executed` instructions, the first `counted` are in mcycle/minstret or trapped
        // (did not retire); `executed` counts an instruction once it has run or trapped.
        var counted = 0
        defer { retire(UInt64(executed - counted)) }
        let breakpointFilter = s.pointee.breakpointFilter
        let simpleRuns = breakpointFilter == 0 && !tracing
        // The decoded page of the current pc, valid until the chunk ends: everything that
        // can change translation, privilege or the cache (CSR writes, xRET, SFENCE.VMA,
        // FENCE.I) ends the chunk, and a trap resets it.
        var cachedPage: UInt64 = .max
        var slots = UnsafeMutablePointer<DecodedInstruction>(bitPattern: 8)!  // replaced before use
        while executed < limit {
            s.pointee.pc = pc
            if breakpointFilter >> ((pc >> 1) & 63) & 1 != 0, let kinds = breakpoints[pc] {
                lastDebugStop = .breakpoint(pc: pc, kinds: kinds)
                return nil
            }
            do {
                if pc & ~(Hart.pageSize - 1) != cachedPage {
                    slots = try decodedPageForFetch(pc)
                    cachedPage = pc & ~(Hart.pageSize - 1)
                }
                if simpleRuns {
                    runIntegers(pc: &pc, executed: &executed, limit: limit, page: cachedPage, slots: slots)
                    if executed < limit && pc & ~(Hart.pageSize - 1) == cachedPage
                        && slots[Int((pc & (Hart.pageSize - 1)) >> 1)].op.isFloat {
                        try runWithFloats(pc: &pc, executed: &executed, limit: limit, page: cachedPage, slots: slots)
                    }
                    if executed == limit || pc & ~(Hart.pageSize - 1) != cachedPage { continue }
                }
                let d = try decodedInstruction(at: pc, slots: slots)
                if tracing { trace(d, pc: pc) }
                if d.op.isCSR {
                    retire(UInt64(executed - counted))
                    counted = executed
                }
                pc = try advance(d, from: pc)
                executed += 1
            } catch {
                // The instruction did not retire (nor will a stopped one, yet).
                s.pointee.pc = pc
                retire(UInt64(executed - counted))
                executed += 1
                counted = executed
                if error.cause == Trap.debugStopCause { return nil }
                takeTrap(error, pc: pc)
                pc = s.pointee.pc
                cachedPage = .max
            }
            if s.pointee.endChunk { break }
        }
        s.pointee.pc = pc
        return executed
    }

    /// `runChunk`'s inner loop: runs the instructions `executeSimple` takes through
    /// `MappedAccess` from `pc` while they are on the decoded page `slots` (virtual page
    /// `page`) and `executed` is below `limit`, counting each in `executed`. Stops at the
    /// first other instruction (or empty slot, or access left undone), which it leaves
    /// uncounted at `pc` for the general path. pc is not stored per instruction (the caller
    /// stores it), and none of these instructions can end a chunk early (`endChunk`), so none
    /// is followed by a look.
    ///
    /// It calls nothing, so that its values stay in host registers: with the load and store
    /// slow paths and `executeFloat` called from the loop, the compiler kept the register
    /// file's address and the loop bounds on the stack, and reloaded rd after every case
    /// (perf annotate); without the calls, intbench runs 10 % faster and sha256 15 %. (Check
    /// with `objdump -d` that the function has no `call`: a standard-library helper the
    /// optimizer does not inline into a function this big stays one; see `multiplyHigh`.)
    @inline(never)
    private func runIntegers(pc: inout UInt64, executed: inout Int, limit: Int, page: UInt64,
                             slots: UnsafeMutablePointer<DecodedInstruction>) {
        let regs = registers
        var p = pc, n = executed
        defer { (pc, executed) = (p, n) }
        // SAFETY: `slots` is a decoded page (`slotsPerPage` slots, one per halfword), and each
        // index is a halfword offset within the page (< 2048); `executeSimple` indexes `regs`
        // with 5-bit register fields (`registers` says why that is in bounds).
        // Two instructions per turn: two copies of executeSimple's dispatch, each an indirect
        // jump the host predicts from its own history (perf: sha256 10-15 % faster than one
        // copy, intbench 5 %; four copies were no better than two).
        while n < limit && p & ~(Hart.pageSize - 1) == page,
              let first = executeSimple(slots + Int((p & (Hart.pageSize - 1)) >> 1), pc: p, registers: regs,
                                        access: MappedAccess.self) {
            p = first
            n += 1
            guard n < limit && p & ~(Hart.pageSize - 1) == page,
                  let second = executeSimple(slots + Int((p & (Hart.pageSize - 1)) >> 1), pc: p, registers: regs,
                                             access: MappedAccess.self) else { return }
            p = second
            n += 1
        }
    }

    /// `runChunk`'s loop for code with F and D instructions, which `runIntegers` stops at:
    /// `runIntegers`' loop that also runs those through `executeFloat` (a call, cheaper here
    /// than leaving a loop for each: the float benchmark ran 2x slower that way). Stops as
    /// `runIntegers` does; a trap leaves `pc` at the instruction that raised it.
    @inline(never)
    private func runWithFloats(pc: inout UInt64, executed: inout Int, limit: Int, page: UInt64,
                               slots: UnsafeMutablePointer<DecodedInstruction>) throws(Trap) {
        let regs = registers
        var p = pc, n = executed
        defer { (pc, executed) = (p, n) }
        while n < limit && p & ~(Hart.pageSize - 1) == page {
            // SAFETY: as in `runIntegers`.
            let slot = slots + Int((p & (Hart.pageSize - 1)) >> 1)
            if let next = executeSimple(slot, pc: p, registers: regs, access: MappedAccess.self) {
                p = next
            } else if slot.pointee.op.isFloat {
                p = try executeFloat(slot, pc: p)
            } else {
                return
            }
            n += 1
        }
    }

    /// Whether `-d exec,in_asm,cpu` asked for a line per instruction.
    package static var isTracing: Bool {
        DebugLog.isEnabled(.execution) || DebugLog.isEnabled(.instructions) || DebugLog.isEnabled(.cpuState)
    }

    /// The instruction at `pc`, from `slots` (the decoded page holding pc), decoded into its
    /// slot on first use.
    @inline(__always)
    func decodedInstruction(at pc: UInt64, slots: UnsafeMutablePointer<DecodedInstruction>) throws(Trap) -> DecodedInstruction {
        let slot = slots + Int((pc & (Hart.pageSize - 1)) >> 1)
        var insn = slot.pointee
        if insn.length == 0 {
            insn = try decoder.decode(low: fetch16(pc)) { () throws(Trap) -> UInt16 in try fetch16(pc &+ 2) }
            // An instruction that runs into the next page is decoded each time.
            if (pc & (Hart.pageSize - 1)) + UInt64(insn.length) <= Hart.pageSize { slot.pointee = insn }
        }
        return insn
    }

    /// Decodes (through `slots`, the decoded page holding pc) and executes the instruction at
    /// `pc`, counting it in mcycle/minstret.
    func executeInstruction(at pc: UInt64, slots: UnsafeMutablePointer<DecodedInstruction>, tracing: Bool) throws(Trap) {
        let insn = try decodedInstruction(at: pc, slots: slots)
        if tracing { trace(insn, pc: pc) }
        try execute(insn, pc: pc)
        retire()
    }

    /// Counts `count` retired instructions in mcycle and minstret, as mcountinhibit allows
    /// (Privileged §3.1.12; our mcycle counts instructions, one cycle each).
    @inline(__always)
    func retire(_ count: UInt64 = 1) {
        let s = state
        if s.pointee.mcountinhibit & 1 == 0 { s.pointee.mcycle &+= count }
        if s.pointee.mcountinhibit & 4 == 0 { s.pointee.minstret &+= count }
    }

    private func trace(_ insn: DecodedInstruction, pc: UInt64) {
        if DebugLog.isEnabled(.cpuState) { DebugLog.log(.cpuState, registerDump()) }
        if DebugLog.isEnabled(.execution) {
            // QEMU 7.2's layout ("Trace CPU: HOST-TB [CS_BASE/PC/FLAGS/CFLAGS] "), so tools that read
            // its exec logs read these: each instruction is its own block here, with no host code
            // (0x0), and the flags field holds the privilege level.
            let privilege = String(state.pointee.privilege.rawValue, radix: 16)
            DebugLog.log(.execution, "Trace \(state.pointee.mhartid): 0x0 [0000000000000000/\(Hart.hex16(pc))/"
                + String(repeating: "0", count: 8 - privilege.count) + privilege + "/00000000] ")
        }
        if DebugLog.isEnabled(.instructions) { DebugLog.log(.instructions, Hart.traceLine(insn, pc: pc)) }
    }

    /// One instruction as `-d in_asm` shows it (QEMU's layout: address, bits, objdump syntax).
    package static func traceLine(_ insn: DecodedInstruction, pc: UInt64) -> String {
        "0x" + String(pc, radix: 16).leftPadded(to: 16) + ":  "
            + String(insn.raw, radix: 16).leftPadded(to: insn.length == 2 ? 4 : 8) + "          "
            + Disassembler.text(insn, pc: pc)
    }

    /// QEMU's `-d cpu` / `info registers` layout.
    /// (riscv_cpu_dump_state, QEMU 7.2): pc; the CSRs QEMU lists, those this hart has (no H
    /// extension, so no V/hstatus/vsstatus/hideleg/hedeleg/vstvec/vsepc/vscause/htval/mtval2);
    /// x0-x31 four to a line as "x1/ra"; with `fpu` (`info registers`) f0-f31 as "f10/fa0".
    public func registerDump(fpu: Bool = false) -> String {
        let s = state.pointee
        func line(_ name: String, _ value: UInt64) -> String {
            " " + name.rightPadded(to: 8) + " " + String(value, radix: 16).leftPadded(to: 16)
        }
        var out = line("pc", s.pc) + "\n"
        let csrs: [(String, UInt64)] = [
            ("mhartid", s.mhartid), ("mstatus", mstatusValue()), ("mip", pendingInterrupts()), ("mie", s.mie),
            ("mideleg", s.mideleg), ("medeleg", s.medeleg), ("mtvec", s.mtvec), ("stvec", s.stvec), ("mepc", s.mepc),
            ("sepc", s.sepc), ("mcause", s.mcause), ("scause", s.scause), ("mtval", s.mtval), ("stval", s.stval),
            ("mscratch", s.mscratch), ("sscratch", s.sscratch), ("satp", s.satp),
        ]
        for (name, value) in csrs { out += line(name, value) + "\n" }
        for i in 0..<32 {
            out += line("x\(i)/" + Disassembler.integerRegisterNames[i], s.x[i]) + (i % 4 == 3 ? "\n" : "")
        }
        if fpu {
            for i in 0..<32 {
                out += line("f\(i)/" + Disassembler.floatRegisterNames[i], s.f[i]) + (i % 4 == 3 ? "\n" : "")
            }
        }
        return out
    }

    @inline(__always)
    private func x(_ r: UInt8) -> UInt64 { state.pointee.x[Int(r)] }

    @inline(__always)
    private func setX(_ r: UInt8, _ value: UInt64) {
        if r != 0 { state.pointee.x[Int(r)] = value }
    }

    @inline(__always)
    private static func sext32(_ v: UInt64) -> UInt64 { UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: v))) }

    /// Executes one decoded instruction at `pc`; sets the next pc. Throws the trap it raises.
    @inline(__always)
    func execute(_ d: DecodedInstruction, pc: UInt64) throws(Trap) {
        state.pointee.pc = try advance(d, from: pc)
    }

    /// Executes one decoded instruction at `pc` and returns the next pc, which it does not
    /// store (the run loop keeps pc in a register). Throws the trap it raises.
    @inline(__always)
    func advance(_ d: DecodedInstruction, from pc: UInt64) throws(Trap) -> UInt64 {
        try withUnsafePointer(to: d) { (slot) throws(Trap) -> UInt64 in
            if let next = try executeSimple(slot, pc: pc, registers: registers, access: FullAccess.self) { return next }
            if d.op.isFloat { return try executeFloat(slot, pc: pc) }
            return try executeSystem(d, pc: pc)
        }
    }

    /// Executes the instruction at `slot` (decoded, at `pc`) if it is one of the instructions
    /// that only compute on integer registers, load, store or jump (most of what a program
    /// runs), and returns the next pc; nil for the others (`executeFloat`, `executeSystem`),
    /// and for the empty slot of a decoded page.
    ///
    /// One switch over operands read up front, through a plain pointer to the register file:
    /// the run loop inlines it, so the common instruction costs one indirect jump and no
    /// calls. The instruction is read through its slot, field by field as each case needs it
    /// (a copy of the whole would take as many host registers). rd is written even when it is x0, which is then zeroed again (cheaper than a
    /// branch per instruction); nothing reads a register after writing rd.
    @inline(always)
    func executeSimple<Access: DataAccess>(_ slot: UnsafePointer<DecodedInstruction>, pc: UInt64,
                                           registers regs: UnsafeMutablePointer<UInt64>,
                                           access: Access.Type) throws(Access.Failure) -> UInt64? {
        let op = slot.pointee.op
        let next = pc &+ UInt64(slot.pointee.length)
        let signedImm = slot.pointee.imm
        let imm = UInt64(bitPattern: signedImm)
        let rd = Int(slot.pointee.rd)
        // rs1 and rs2 are 5-bit fields (< 32) in every decoded instruction, whatever its
        // format (for I-type, rs2 holds immediate bits and is not used).
        let a = regs[Int(slot.pointee.rs1)], b = regs[Int(slot.pointee.rs2)]
        /// A store's effect (a store writes no register); nil when `Access` left it undone.
        @inline(__always) func stored(size: Int) throws(Access.Failure) -> UInt64? {
            try Access.store(self, a &+ imm, b, size: size) ? next : nil
        }
        @inline(__always) func loaded(size: Int) throws(Access.Failure) -> UInt64? {
            try Access.load(self, a &+ imm, size: size)
        }
        let value: UInt64
        switch op {
        case .lui: value = imm
        case .auipc: value = pc &+ imm
        case .jal:
            regs[rd] = next
            regs[0] = 0
            return pc &+ imm
        case .jalr:
            regs[rd] = next
            regs[0] = 0
            return (a &+ imm) & ~1
        case .beq: return Hart.branch(a == b, to: pc &+ imm, else: next)
        case .bne: return Hart.branch(a != b, to: pc &+ imm, else: next)
        case .blt: return Hart.branch(Int64(bitPattern: a) < Int64(bitPattern: b), to: pc &+ imm, else: next)
        case .bge: return Hart.branch(Int64(bitPattern: a) >= Int64(bitPattern: b), to: pc &+ imm, else: next)
        case .bltu: return Hart.branch(a < b, to: pc &+ imm, else: next)
        case .bgeu: return Hart.branch(a >= b, to: pc &+ imm, else: next)
        case .lb:
            guard let loaded = try loaded(size: 1) else { return nil }
            value = UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: loaded)))
        case .lh:
            guard let loaded = try loaded(size: 2) else { return nil }
            value = UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: loaded)))
        case .lw:
            guard let loaded = try loaded(size: 4) else { return nil }
            value = Hart.sext32(loaded)
        case .ld:
            guard let loaded = try loaded(size: 8) else { return nil }
            value = loaded
        case .lbu:
            guard let loaded = try loaded(size: 1) else { return nil }
            value = loaded
        case .lhu:
            guard let loaded = try loaded(size: 2) else { return nil }
            value = loaded
        case .lwu:
            guard let loaded = try loaded(size: 4) else { return nil }
            value = loaded
        case .sb: return try stored(size: 1)
        case .sh: return try stored(size: 2)
        case .sw: return try stored(size: 4)
        case .sd: return try stored(size: 8)
        case .addi: value = a &+ imm
        case .slti: value = Int64(bitPattern: a) < signedImm ? 1 : 0
        case .sltiu: value = a < imm ? 1 : 0
        case .xori: value = a ^ imm
        case .ori: value = a | imm
        case .andi: value = a & imm
        case .slli: value = a << (imm & 63)
        case .srli: value = a >> (imm & 63)
        case .srai: value = UInt64(bitPattern: Int64(bitPattern: a) >> (imm & 63))
        case .add: value = a &+ b
        case .sub: value = a &- b
        case .sll: value = a << (b & 63)
        case .slt: value = Int64(bitPattern: a) < Int64(bitPattern: b) ? 1 : 0
        case .sltu: value = a < b ? 1 : 0
        case .xor: value = a ^ b
        case .srl: value = a >> (b & 63)
        case .sra: value = UInt64(bitPattern: Int64(bitPattern: a) >> (b & 63))
        case .or: value = a | b
        case .and: value = a & b
        case .addiw: value = Hart.sext32(a &+ imm)
        case .slliw: value = Hart.sext32(a << (imm & 31))
        case .srliw: value = Hart.sext32(UInt64(UInt32(truncatingIfNeeded: a) >> UInt32(imm & 31)))
        case .sraiw: value = UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: a) >> Int32(imm & 31)))
        case .addw: value = Hart.sext32(a &+ b)
        case .subw: value = Hart.sext32(a &- b)
        case .sllw: value = Hart.sext32(a << (b & 31))
        case .srlw: value = Hart.sext32(UInt64(UInt32(truncatingIfNeeded: a) >> UInt32(b & 31)))
        case .sraw: value = UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: a) >> Int32(b & 31)))
        case .mul: value = a &* b
        case .mulh: value = UInt64(bitPattern: Hart.multiplyHigh(Int64(bitPattern: a), Int64(bitPattern: b)))
        case .mulhsu:
            var high = Hart.multiplyHigh(a, b)
            if Int64(bitPattern: a) < 0 { high &-= b }  // a = a_unsigned - 2^64 when negative
            value = high
        case .mulhu: value = Hart.multiplyHigh(a, b)
        case .div: value = UInt64(bitPattern: Hart.divide(Int64(bitPattern: a), Int64(bitPattern: b)))
        case .divu: value = b == 0 ? .max : a / b
        case .rem: value = UInt64(bitPattern: Hart.remainder(Int64(bitPattern: a), Int64(bitPattern: b)))
        case .remu: value = b == 0 ? a : a % b
        case .mulw: value = Hart.sext32(a &* b)
        case .divw: value = UInt64(bitPattern: Int64(Hart.divide(Int32(truncatingIfNeeded: a), Int32(truncatingIfNeeded: b))))
        case .divuw:
            let (a, b) = (UInt32(truncatingIfNeeded: a), UInt32(truncatingIfNeeded: b))
            value = Hart.sext32(UInt64(b == 0 ? .max : a / b))
        case .remw: value = UInt64(bitPattern: Int64(Hart.remainder(Int32(truncatingIfNeeded: a), Int32(truncatingIfNeeded: b))))
        case .remuw:
            let (a, b) = (UInt32(truncatingIfNeeded: a), UInt32(truncatingIfNeeded: b))
            value = Hart.sext32(UInt64(b == 0 ? a : a % b))
        case .add_uw: value = b &+ (a & 0xffff_ffff)
        case .sh1add: value = b &+ (a << 1)
        case .sh2add: value = b &+ (a << 2)
        case .sh3add: value = b &+ (a << 3)
        case .sh1add_uw: value = b &+ ((a & 0xffff_ffff) << 1)
        case .sh2add_uw: value = b &+ ((a & 0xffff_ffff) << 2)
        case .sh3add_uw: value = b &+ ((a & 0xffff_ffff) << 3)
        case .slli_uw: value = (a & 0xffff_ffff) << (imm & 63)
        case .andn: value = a & ~b
        case .orn: value = a | ~b
        case .xnor: value = ~(a ^ b)
        case .clz: value = UInt64(a.leadingZeroBitCount)
        case .clzw: value = UInt64(UInt32(truncatingIfNeeded: a).leadingZeroBitCount)
        case .ctz: value = UInt64(a.trailingZeroBitCount)
        case .ctzw: value = UInt64(UInt32(truncatingIfNeeded: a).trailingZeroBitCount)
        case .cpop: value = UInt64(a.nonzeroBitCount)
        case .cpopw: value = UInt64(UInt32(truncatingIfNeeded: a).nonzeroBitCount)
        // Comparisons rather than Swift.max/min, which stayed calls (as multiplyHigh says).
        case .max: value = Int64(bitPattern: a) > Int64(bitPattern: b) ? a : b
        case .maxu: value = a > b ? a : b
        case .min: value = Int64(bitPattern: a) < Int64(bitPattern: b) ? a : b
        case .minu: value = a < b ? a : b
        case .sext_b: value = UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: a)))
        case .sext_h: value = UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: a)))
        case .zext_h: value = a & 0xffff
        case .rol: value = Hart.rotateLeft(a, b & 63)
        case .ror: value = Hart.rotateLeft(a, (64 - (b & 63)) & 63)
        case .rori: value = Hart.rotateLeft(a, (64 - (imm & 63)) & 63)
        case .rolw: value = Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: a), UInt32(b & 31))))
        case .rorw: value = Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: a), (32 - UInt32(b & 31)) & 31)))
        case .roriw: value = Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: a), (32 - UInt32(imm & 31)) & 31)))
        case .orc_b:
            var result: UInt64 = 0
            for i in 0..<8 where (a >> (8 * UInt64(i))) & 0xff != 0 { result |= 0xff << (8 * UInt64(i)) }
            value = result
        case .rev8: value = a.byteSwapped
        case .bclr: value = a & ~(1 << (b & 63))
        case .bclri: value = a & ~(1 << (imm & 63))
        case .bext: value = (a >> (b & 63)) & 1
        case .bexti: value = (a >> (imm & 63)) & 1
        case .binv: value = a ^ (1 << (b & 63))
        case .binvi: value = a ^ (1 << (imm & 63))
        case .bset: value = a | (1 << (b & 63))
        case .bseti: value = a | (1 << (imm & 63))
        default: return nil
        }
        regs[rd] = value
        regs[0] = 0
        return next
    }

    /// The instructions neither `executeSimple` nor `executeFloat` takes: system, CSR and
    /// atomic ones, and illegal encodings. Returns the next pc.
    @inline(never)
    func executeSystem(_ d: DecodedInstruction, pc: UInt64) throws(Trap) -> UInt64 {
        let s = state
        let next = pc &+ UInt64(d.length)
        switch d.op {
        case .fence:
            // RVWMO on an x86-64 host (TSO): only a store followed by a load on another hart can
            // be seen out of order; a full host fence orders every predecessor/successor set.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        case .fence_i:
            // Later fetches must see earlier stores (Zifencei): drop the decoded pages written
            // since. The interpreter holds a pointer into them, so end the chunk too.
            synchronizeInstructionFetch()
            s.pointee.endChunk = true
        case .ecall:
            switch s.pointee.privilege {
            case .user: throw Trap(.environmentCallFromU)
            case .supervisor: throw Trap(.environmentCallFromS)
            case .machine: throw Trap(.environmentCallFromM)
            }
        case .ebreak:
            throw Trap(.breakpoint, tval: pc)
        case .csrrw, .csrrs, .csrrc, .csrrwi, .csrrsi, .csrrci:
            try executeCSR(d)
        case .lr_w, .lr_d, .sc_w, .sc_d, .amoswap_w, .amoadd_w, .amoxor_w, .amoand_w, .amoor_w, .amomin_w, .amomax_w,
             .amominu_w, .amomaxu_w, .amoswap_d, .amoadd_d, .amoxor_d, .amoand_d, .amoor_d, .amomin_d, .amomax_d,
             .amominu_d, .amomaxu_d:
            try executeAtomic(d)
        case .mret:
            guard s.pointee.privilege == .machine else { throw Trap(.illegalInstruction, tval: UInt64(d.raw)) }
            return returnFromTrap(machine: true)
        case .sret:
            let priv = s.pointee.privilege
            guard priv == .machine || (priv == .supervisor && s.pointee.mstatus & MStatus.tsr == 0) else {
                throw Trap(.illegalInstruction, tval: UInt64(d.raw))
            }
            return returnFromTrap(machine: false)
        case .wfi:
            // TW traps WFI below M; in U-mode WFI is always illegal when S exists (§3.1.6.5).
            let priv = s.pointee.privilege
            if priv == .user || (priv == .supervisor && s.pointee.mstatus & MStatus.tw != 0) {
                throw Trap(.illegalInstruction, tval: UInt64(d.raw))
            }
            if pendingInterrupts() & s.pointee.mie == 0 {
                s.pointee.waiting = true
                s.pointee.endChunk = true
            }
        case .sfence_vma:
            let priv = s.pointee.privilege
            if priv == .user || (priv == .supervisor && s.pointee.mstatus & MStatus.tvm != 0) {
                throw Trap(.illegalInstruction, tval: UInt64(d.raw))
            }
            if d.rs1 == 0 { flushTLB() } else { flushTLB(page: x(d.rs1)) }
            s.pointee.endChunk = true  // the interpreter's cached fetch page may be stale
        case .illegal:
            throw Trap(.illegalInstruction, tval: UInt64(d.raw))
        default:
            preconditionFailure("\(d.op) is executeSimple's or executeFloat's")
        }
        return next
    }

    /// A conditional branch's next pc, computed with a host branch rather than a conditional
    /// move (the branch hint keeps the compiler from folding it into one): the host then
    /// predicts the guest's branch and fetches the next instruction at once, instead of
    /// waiting for the compared registers to load (perf: the cmov put every branch's operands
    /// on the path to the next dispatch).
    @inline(__always)
    static func branch(_ taken: Bool, to target: UInt64, else next: UInt64) -> UInt64 {
        if _fastPath(taken) { return target }
        return next
    }

    /// The high half of the full product (mulh, mulhsu, mulhu). Its own always-inlined function, so
    /// that the standard library's multipliedFullWidth is inlined here first: called from
    /// executeSimple's switch, it stayed a call into libswiftCore (too big a caller for the
    /// optimizer to inline into), and `runIntegers` must call nothing.
    @inline(__always)
    static func multiplyHigh<T: FixedWidthInteger>(_ a: T, _ b: T) -> T where T.Magnitude == UInt64 {
        T(truncatingIfNeeded: a.multipliedFullWidth(by: b).high)
    }

    @inline(__always)
    static func rotateLeft(_ v: UInt64, _ n: UInt64) -> UInt64 { n == 0 ? v : v << n | v >> (64 - n) }
    @inline(__always)
    static func rotateLeft32(_ v: UInt32, _ n: UInt32) -> UInt32 { n == 0 ? v : v << n | v >> (32 - n) }

    /// Division with RISC-V's results for the cases C leaves undefined (M spec §7.2, table
    /// 7.1): x/0 = -1, MIN/-1 = MIN.
    @inline(__always)
    static func divide<T: FixedWidthInteger & SignedInteger>(_ a: T, _ b: T) -> T {
        if b == 0 { return -1 }
        if a == T.min && b == -1 { return a }
        return a / b
    }

    /// x%0 = x, MIN%-1 = 0.
    @inline(__always)
    static func remainder<T: FixedWidthInteger & SignedInteger>(_ a: T, _ b: T) -> T {
        if b == 0 { return a }
        if a == T.min && b == -1 { return 0 }
        return a % b
    }

    /// MRET/SRET (Privileged §3.3.2); returns the pc to resume at.
    private func returnFromTrap(machine: Bool) -> UInt64 {
        let s = state
        var st = s.pointee.mstatus
        let target: UInt64
        if machine {
            let mpp = PrivilegeMode(rawValue: UInt8((st & MStatus.mpp) >> MStatus.mppShift)) ?? .user
            st = (st & ~MStatus.mie) | (st & MStatus.mpie != 0 ? MStatus.mie : 0)
            st |= MStatus.mpie
            st &= ~MStatus.mpp
            if mpp != .machine { st &= ~MStatus.mprv }
            s.pointee.privilege = mpp
            target = s.pointee.mepc
        } else {
            let spp: PrivilegeMode = st & MStatus.spp != 0 ? .supervisor : .user
            st = (st & ~MStatus.sie) | (st & MStatus.spie != 0 ? MStatus.sie : 0)
            st |= MStatus.spie
            st &= ~MStatus.spp
            st &= ~MStatus.mprv  // the new privilege is below M
            s.pointee.privilege = spp
            target = s.pointee.sepc
        }
        s.pointee.mstatus = st
        s.pointee.reservation = HartState.noReservation
        s.pointee.endChunk = true
        updatePrivilegeKeys()
        return target
    }

    /// Zicsr (§9.1): csrrw does not read when rd = x0; csrrs/csrrc do not write when the
    /// source is x0 / uimm 0 (so reading a read-only CSR that way is legal).
    private func executeCSR(_ d: DecodedInstruction) throws(Trap) {
        let number = UInt16(d.imm & 0xfff)
        let source: UInt64
        switch d.op {
        case .csrrwi, .csrrsi, .csrrci: source = UInt64(d.rs1)
        default: source = x(d.rs1)
        }
        let wrote: Bool
        switch d.op {
        case .csrrw, .csrrwi:
            let old = d.rd != 0 ? try readCSR(number, raw: d.raw) : 0
            try writeCSR(number, source, raw: d.raw)
            setX(d.rd, old)
            wrote = true
        case .csrrs, .csrrsi:
            let old = try readCSR(number, raw: d.raw)
            if d.rs1 != 0 { try writeCSR(number, readModifyWriteBase(number, read: old) | source, raw: d.raw) }
            setX(d.rd, old)
            wrote = d.rs1 != 0
        default:
            let old = try readCSR(number, raw: d.raw)
            if d.rs1 != 0 { try writeCSR(number, readModifyWriteBase(number, read: old) & ~source, raw: d.raw) }
            setX(d.rd, old)
            wrote = d.rs1 != 0
        }
        // The chunk ends where the write may matter to what the run loops cached or sampled:
        // satp and PMP (the interpreter's fetch page), or an interrupt that is now pending and
        // enabled (interrupts are looked at between chunks). Reads (rdtime, csrr) and writes
        // such as SUM around Linux's user accesses, or an SIE set with nothing pending, go on.
        if wrote && (number == CSRNumber.satp || (0x3a0...0x3ef).contains(number) || interruptToTake() != nil) {
            state.pointee.endChunk = true
        }
    }

    /// A extension (§8): LR/SC with a value-checked reservation, AMOs as compare-and-swap
    /// loops on host memory so several harts stay atomic with respect to each other.
    private func executeAtomic(_ d: DecodedInstruction) throws(Trap) {
        let s = state
        let address = x(d.rs1)
        let src = x(d.rs2)
        let word: Bool
        switch d.op {
        case .lr_w, .sc_w, .amoswap_w, .amoadd_w, .amoxor_w, .amoand_w, .amoor_w, .amomin_w, .amomax_w, .amominu_w, .amomaxu_w:
            word = true
        default:
            word = false
        }
        let size = word ? 4 : 8
        switch d.op {
        case .lr_w, .lr_d:
            let (p, physical) = try atomicPointer(address, size: size, forLoadReserved: true)
            let value = word ? UInt64(clx_atomic_load_u32(p)) : clx_atomic_load_u64(p)
            s.pointee.reservation = physical
            s.pointee.reservationValue = value
            setX(d.rd, word ? Hart.sext32(value) : value)
        case .sc_w, .sc_d:
            let (p, physical) = try atomicPointer(address, size: size, forLoadReserved: false)
            var success = false
            if s.pointee.reservation == physical {
                let expected = s.pointee.reservationValue
                if word {
                    success = clx_atomic_cas_u32(p, UInt32(truncatingIfNeeded: expected), UInt32(truncatingIfNeeded: src))
                        == UInt32(truncatingIfNeeded: expected)
                } else {
                    success = clx_atomic_cas_u64(p, expected, src) == expected
                }
                if success { memory.ram.noteWrite(at: GuestAddress(physical), count: UInt64(size)) }
            }
            s.pointee.reservation = HartState.noReservation
            setX(d.rd, success ? 0 : 1)
        default:
            let (p, physical) = try atomicPointer(address, size: size, forLoadReserved: false)
            defer { memory.ram.noteWrite(at: GuestAddress(physical), count: UInt64(size)) }
            if word {
                var old = clx_atomic_load_u32(p)
                while true {
                    let new = UInt32(truncatingIfNeeded: Hart.amo(d.op, UInt64(old), src, word: true))
                    let seen = clx_atomic_cas_u32(p, old, new)
                    if seen == old { break }
                    old = seen
                }
                setX(d.rd, Hart.sext32(UInt64(old)))
            } else {
                var old = clx_atomic_load_u64(p)
                while true {
                    let seen = clx_atomic_cas_u64(p, old, Hart.amo(d.op, old, src, word: false))
                    if seen == old { break }
                    old = seen
                }
                setX(d.rd, old)
            }
        }
    }

    /// The value an AMO stores, given the old memory value and rs2.
    @inline(__always)
    static func amo(_ op: Op, _ old: UInt64, _ src: UInt64, word: Bool) -> UInt64 {
        let a = word ? Hart.sext32(old) : old
        let b = word ? Hart.sext32(src) : src
        switch op {
        case .amoswap_w, .amoswap_d: return src
        case .amoadd_w, .amoadd_d: return old &+ src
        case .amoxor_w, .amoxor_d: return old ^ src
        case .amoand_w, .amoand_d: return old & src
        case .amoor_w, .amoor_d: return old | src
        case .amomin_w, .amomin_d: return Int64(bitPattern: a) < Int64(bitPattern: b) ? old : src
        case .amomax_w, .amomax_d: return Int64(bitPattern: a) > Int64(bitPattern: b) ? old : src
        case .amominu_w, .amominu_d: return (word ? old & 0xffff_ffff : old) < (word ? src & 0xffff_ffff : src) ? old : src
        default: return (word ? old & 0xffff_ffff : old) > (word ? src & 0xffff_ffff : src) ? old : src
        }
    }
}

/// How `executeSimple` reaches data memory.
protocol DataAccess {
    associatedtype Failure: Error
    /// The `size`-byte value at `vaddr`, zero-extended; nil when this policy leaves the access undone.
    static func load(_ hart: Hart, _ vaddr: UInt64, size: Int) throws(Failure) -> UInt64?
    /// Whether the store was done.
    static func store(_ hart: Hart, _ vaddr: UInt64, _ value: UInt64, size: Int) throws(Failure) -> Bool
}

/// Every access, through the TLB or the slow path, trapping as the ISA says.
enum FullAccess: DataAccess {
    @inline(__always)
    static func load(_ hart: Hart, _ vaddr: UInt64, size: Int) throws(Trap) -> UInt64? {
        try hart.load(vaddr, size: size)
    }
    @inline(__always)
    static func store(_ hart: Hart, _ vaddr: UInt64, _ value: UInt64, size: Int) throws(Trap) -> Bool {
        try hart.store(vaddr, value, size: size)
        return true
    }
}

/// Only accesses that hit the TLB (naturally aligned, RAM) or, for a store to a page holding
/// code, the code-page write cache: no call and no trap, so `runIntegers` keeps its values in
/// host registers. Anything else ends the loop, and the instruction runs again through
/// `FullAccess`.
enum MappedAccess: DataAccess {
    @inline(__always)
    static func load(_ hart: Hart, _ vaddr: UInt64, size: Int) -> UInt64? { hart.loadIfMapped(vaddr, size: size) }
    @inline(__always)
    static func store(_ hart: Hart, _ vaddr: UInt64, _ value: UInt64, size: Int) -> Bool {
        hart.storeIfMapped(vaddr, value, size: size)
    }
}

extension String {
    /// Zero-padded on the left to `width` characters (register dumps, addresses).
    package func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }

    func rightPadded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
