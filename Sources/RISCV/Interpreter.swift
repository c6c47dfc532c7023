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
            if let irq = interruptToTake() {
                takeTrap(Trap(interrupt: irq), pc: s.pointee.pc)
            }
            // The inner loop runs without looking at interrupts: timers and device lines are
            // sampled every chunk (≤ 1024 instructions), and anything that may unmask a pending
            // interrupt ends the chunk early.
            let chunk = min(remaining, 1024)
            var executed = 0
            s.pointee.endChunk = false
            // The decoded page of the current pc, valid until the chunk ends: everything that
            // can change translation, privilege or the cache (CSR writes, xRET, SFENCE.VMA,
            // FENCE.I) ends the chunk, and a trap resets it.
            var cachedPage: UInt64 = .max
            var slots = UnsafeMutablePointer<DecodedInstruction>(bitPattern: 8)!  // replaced before use
            while executed < chunk && !s.pointee.endChunk {
                let pc = s.pointee.pc
                if s.pointee.breakpointFilter >> ((pc >> 1) & 63) & 1 != 0, let kinds = breakpoints[pc] {
                    lastDebugStop = .breakpoint(pc: pc, kinds: kinds)
                    return .debugStop
                }
                do {
                    if pc & ~(Hart.pageSize - 1) != cachedPage {
                        slots = try decodedPageForFetch(pc)
                        cachedPage = pc & ~(Hart.pageSize - 1)
                    }
                    try executeInstruction(at: pc, slots: slots, tracing: tracing)
                } catch {
                    if error.cause == Trap.debugStopCause { return .debugStop }
                    takeTrap(error, pc: pc)
                    cachedPage = .max
                }
                executed += 1
            }
            remaining -= executed
            if s.pointee.waiting {
                s.pointee.waiting = false
                return .waitingForInterrupt
            }
        }
        return .budgetExhausted
    }

    /// Whether `-d exec,in_asm,cpu` asked for a line per instruction.
    package static var isTracing: Bool {
        DebugLog.isEnabled(.execution) || DebugLog.isEnabled(.instructions) || DebugLog.isEnabled(.cpuState)
    }

    /// Decodes (through `slots`, the decoded page holding pc) and executes the instruction at
    /// `pc`, counting it in mcycle/minstret.
    @inline(__always)
    func executeInstruction(at pc: UInt64, slots: UnsafeMutablePointer<DecodedInstruction>, tracing: Bool) throws(Trap) {
        let slot = slots + Int((pc & (Hart.pageSize - 1)) >> 1)
        var insn = slot.pointee
        if insn.length == 0 {
            insn = try decoder.decode(low: fetch16(pc)) { () throws(Trap) -> UInt16 in try fetch16(pc &+ 2) }
            // An instruction that runs into the next page is decoded each time.
            if (pc & (Hart.pageSize - 1)) + UInt64(insn.length) <= Hart.pageSize { slot.pointee = insn }
        }
        if tracing { trace(insn, pc: pc) }
        try execute(insn, pc: pc)
        retire()
    }

    /// Counts one retired instruction in mcycle and minstret, as mcountinhibit allows
    /// (Privileged §3.1.12; our mcycle counts instructions, one cycle each).
    @inline(__always)
    func retire() {
        let s = state
        if s.pointee.mcountinhibit == 0 {
            s.pointee.mcycle &+= 1
            s.pointee.minstret &+= 1
        } else {
            if s.pointee.mcountinhibit & 1 == 0 { s.pointee.mcycle &+= 1 }
            if s.pointee.mcountinhibit & 4 == 0 { s.pointee.minstret &+= 1 }
        }
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
        let s = state
        let next = pc &+ UInt64(d.length)
        let imm = UInt64(bitPattern: d.imm)
        switch d.op {
        case .lui: setX(d.rd, imm)
        case .auipc: setX(d.rd, pc &+ imm)
        case .jal:
            setX(d.rd, next)
            s.pointee.pc = pc &+ imm
            return
        case .jalr:
            let target = (x(d.rs1) &+ imm) & ~1
            setX(d.rd, next)
            s.pointee.pc = target
            return
        case .beq, .bne, .blt, .bge, .bltu, .bgeu:
            let a = x(d.rs1), b = x(d.rs2)
            let taken: Bool
            switch d.op {
            case .beq: taken = a == b
            case .bne: taken = a != b
            case .blt: taken = Int64(bitPattern: a) < Int64(bitPattern: b)
            case .bge: taken = Int64(bitPattern: a) >= Int64(bitPattern: b)
            case .bltu: taken = a < b
            default: taken = a >= b
            }
            s.pointee.pc = taken ? pc &+ imm : next
            return
        case .lb: setX(d.rd, UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: try load(x(d.rs1) &+ imm, size: 1)))))
        case .lh: setX(d.rd, UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: try load(x(d.rs1) &+ imm, size: 2)))))
        case .lw: setX(d.rd, Hart.sext32(try load(x(d.rs1) &+ imm, size: 4)))
        case .ld: setX(d.rd, try load(x(d.rs1) &+ imm, size: 8))
        case .lbu: setX(d.rd, try load(x(d.rs1) &+ imm, size: 1))
        case .lhu: setX(d.rd, try load(x(d.rs1) &+ imm, size: 2))
        case .lwu: setX(d.rd, try load(x(d.rs1) &+ imm, size: 4))
        case .sb: try store(x(d.rs1) &+ imm, x(d.rs2), size: 1)
        case .sh: try store(x(d.rs1) &+ imm, x(d.rs2), size: 2)
        case .sw: try store(x(d.rs1) &+ imm, x(d.rs2), size: 4)
        case .sd: try store(x(d.rs1) &+ imm, x(d.rs2), size: 8)
        case .addi: setX(d.rd, x(d.rs1) &+ imm)
        case .slti: setX(d.rd, Int64(bitPattern: x(d.rs1)) < d.imm ? 1 : 0)
        case .sltiu: setX(d.rd, x(d.rs1) < imm ? 1 : 0)
        case .xori: setX(d.rd, x(d.rs1) ^ imm)
        case .ori: setX(d.rd, x(d.rs1) | imm)
        case .andi: setX(d.rd, x(d.rs1) & imm)
        case .slli: setX(d.rd, x(d.rs1) << (imm & 63))
        case .srli: setX(d.rd, x(d.rs1) >> (imm & 63))
        case .srai: setX(d.rd, UInt64(bitPattern: Int64(bitPattern: x(d.rs1)) >> (imm & 63)))
        case .add: setX(d.rd, x(d.rs1) &+ x(d.rs2))
        case .sub: setX(d.rd, x(d.rs1) &- x(d.rs2))
        case .sll: setX(d.rd, x(d.rs1) << (x(d.rs2) & 63))
        case .slt: setX(d.rd, Int64(bitPattern: x(d.rs1)) < Int64(bitPattern: x(d.rs2)) ? 1 : 0)
        case .sltu: setX(d.rd, x(d.rs1) < x(d.rs2) ? 1 : 0)
        case .xor: setX(d.rd, x(d.rs1) ^ x(d.rs2))
        case .srl: setX(d.rd, x(d.rs1) >> (x(d.rs2) & 63))
        case .sra: setX(d.rd, UInt64(bitPattern: Int64(bitPattern: x(d.rs1)) >> (x(d.rs2) & 63)))
        case .or: setX(d.rd, x(d.rs1) | x(d.rs2))
        case .and: setX(d.rd, x(d.rs1) & x(d.rs2))
        case .addiw: setX(d.rd, Hart.sext32(x(d.rs1) &+ imm))
        case .slliw: setX(d.rd, Hart.sext32(x(d.rs1) << (imm & 31)))
        case .srliw: setX(d.rd, Hart.sext32(UInt64(UInt32(truncatingIfNeeded: x(d.rs1)) >> UInt32(imm & 31))))
        case .sraiw: setX(d.rd, UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: x(d.rs1)) >> Int32(imm & 31))))
        case .addw: setX(d.rd, Hart.sext32(x(d.rs1) &+ x(d.rs2)))
        case .subw: setX(d.rd, Hart.sext32(x(d.rs1) &- x(d.rs2)))
        case .sllw: setX(d.rd, Hart.sext32(x(d.rs1) << (x(d.rs2) & 31)))
        case .srlw: setX(d.rd, Hart.sext32(UInt64(UInt32(truncatingIfNeeded: x(d.rs1)) >> UInt32(x(d.rs2) & 31))))
        case .sraw: setX(d.rd, UInt64(bitPattern: Int64(Int32(truncatingIfNeeded: x(d.rs1)) >> Int32(x(d.rs2) & 31))))
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
        case .mul: setX(d.rd, x(d.rs1) &* x(d.rs2))
        case .mulh: setX(d.rd, UInt64(bitPattern: Int64(bitPattern: x(d.rs1)).multipliedFullWidth(by: Int64(bitPattern: x(d.rs2))).high))
        case .mulhsu:
            let a = x(d.rs1), b = x(d.rs2)
            var high = a.multipliedFullWidth(by: b).high
            if Int64(bitPattern: a) < 0 { high &-= b }  // a = a_unsigned - 2^64 when negative
            setX(d.rd, high)
        case .mulhu: setX(d.rd, x(d.rs1).multipliedFullWidth(by: x(d.rs2)).high)
        case .div: setX(d.rd, UInt64(bitPattern: Hart.divide(Int64(bitPattern: x(d.rs1)), Int64(bitPattern: x(d.rs2)))))
        case .divu: setX(d.rd, x(d.rs2) == 0 ? .max : x(d.rs1) / x(d.rs2))
        case .rem: setX(d.rd, UInt64(bitPattern: Hart.remainder(Int64(bitPattern: x(d.rs1)), Int64(bitPattern: x(d.rs2)))))
        case .remu: setX(d.rd, x(d.rs2) == 0 ? x(d.rs1) : x(d.rs1) % x(d.rs2))
        case .mulw: setX(d.rd, Hart.sext32(x(d.rs1) &* x(d.rs2)))
        case .divw:
            let q = Hart.divide(Int32(truncatingIfNeeded: x(d.rs1)), Int32(truncatingIfNeeded: x(d.rs2)))
            setX(d.rd, UInt64(bitPattern: Int64(q)))
        case .divuw:
            let a = UInt32(truncatingIfNeeded: x(d.rs1)), b = UInt32(truncatingIfNeeded: x(d.rs2))
            setX(d.rd, Hart.sext32(UInt64(b == 0 ? .max : a / b)))
        case .remw:
            let r = Hart.remainder(Int32(truncatingIfNeeded: x(d.rs1)), Int32(truncatingIfNeeded: x(d.rs2)))
            setX(d.rd, UInt64(bitPattern: Int64(r)))
        case .remuw:
            let a = UInt32(truncatingIfNeeded: x(d.rs1)), b = UInt32(truncatingIfNeeded: x(d.rs2))
            setX(d.rd, Hart.sext32(UInt64(b == 0 ? a : a % b)))
        case .lr_w, .lr_d, .sc_w, .sc_d, .amoswap_w, .amoadd_w, .amoxor_w, .amoand_w, .amoor_w, .amomin_w, .amomax_w,
             .amominu_w, .amomaxu_w, .amoswap_d, .amoadd_d, .amoxor_d, .amoand_d, .amoor_d, .amomin_d, .amomax_d,
             .amominu_d, .amomaxu_d:
            try executeAtomic(d)
        case .add_uw: setX(d.rd, x(d.rs2) &+ (x(d.rs1) & 0xffff_ffff))
        case .sh1add: setX(d.rd, x(d.rs2) &+ (x(d.rs1) << 1))
        case .sh2add: setX(d.rd, x(d.rs2) &+ (x(d.rs1) << 2))
        case .sh3add: setX(d.rd, x(d.rs2) &+ (x(d.rs1) << 3))
        case .sh1add_uw: setX(d.rd, x(d.rs2) &+ ((x(d.rs1) & 0xffff_ffff) << 1))
        case .sh2add_uw: setX(d.rd, x(d.rs2) &+ ((x(d.rs1) & 0xffff_ffff) << 2))
        case .sh3add_uw: setX(d.rd, x(d.rs2) &+ ((x(d.rs1) & 0xffff_ffff) << 3))
        case .slli_uw: setX(d.rd, (x(d.rs1) & 0xffff_ffff) << (imm & 63))
        case .andn: setX(d.rd, x(d.rs1) & ~x(d.rs2))
        case .orn: setX(d.rd, x(d.rs1) | ~x(d.rs2))
        case .xnor: setX(d.rd, ~(x(d.rs1) ^ x(d.rs2)))
        case .clz: setX(d.rd, UInt64(x(d.rs1).leadingZeroBitCount))
        case .clzw: setX(d.rd, UInt64(UInt32(truncatingIfNeeded: x(d.rs1)).leadingZeroBitCount))
        case .ctz: setX(d.rd, UInt64(x(d.rs1).trailingZeroBitCount))
        case .ctzw: setX(d.rd, UInt64(UInt32(truncatingIfNeeded: x(d.rs1)).trailingZeroBitCount))
        case .cpop: setX(d.rd, UInt64(x(d.rs1).nonzeroBitCount))
        case .cpopw: setX(d.rd, UInt64(UInt32(truncatingIfNeeded: x(d.rs1)).nonzeroBitCount))
        case .max: setX(d.rd, UInt64(bitPattern: Swift.max(Int64(bitPattern: x(d.rs1)), Int64(bitPattern: x(d.rs2)))))
        case .maxu: setX(d.rd, Swift.max(x(d.rs1), x(d.rs2)))
        case .min: setX(d.rd, UInt64(bitPattern: Swift.min(Int64(bitPattern: x(d.rs1)), Int64(bitPattern: x(d.rs2)))))
        case .minu: setX(d.rd, Swift.min(x(d.rs1), x(d.rs2)))
        case .sext_b: setX(d.rd, UInt64(bitPattern: Int64(Int8(truncatingIfNeeded: x(d.rs1)))))
        case .sext_h: setX(d.rd, UInt64(bitPattern: Int64(Int16(truncatingIfNeeded: x(d.rs1)))))
        case .zext_h: setX(d.rd, x(d.rs1) & 0xffff)
        case .rol: setX(d.rd, Hart.rotateLeft(x(d.rs1), x(d.rs2) & 63))
        case .ror: setX(d.rd, Hart.rotateLeft(x(d.rs1), (64 - (x(d.rs2) & 63)) & 63))
        case .rori: setX(d.rd, Hart.rotateLeft(x(d.rs1), (64 - (imm & 63)) & 63))
        case .rolw: setX(d.rd, Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: x(d.rs1)), UInt32(x(d.rs2) & 31)))))
        case .rorw:
            setX(d.rd, Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: x(d.rs1)), (32 - UInt32(x(d.rs2) & 31)) & 31))))
        case .roriw:
            setX(d.rd, Hart.sext32(UInt64(Hart.rotateLeft32(UInt32(truncatingIfNeeded: x(d.rs1)), (32 - UInt32(imm & 31)) & 31))))
        case .orc_b:
            var v = x(d.rs1), result: UInt64 = 0
            for i in 0..<8 where (v >> (8 * UInt64(i))) & 0xff != 0 { result |= 0xff << (8 * UInt64(i)) }
            v = result
            setX(d.rd, v)
        case .rev8: setX(d.rd, x(d.rs1).byteSwapped)
        case .bclr: setX(d.rd, x(d.rs1) & ~(1 << (x(d.rs2) & 63)))
        case .bclri: setX(d.rd, x(d.rs1) & ~(1 << (imm & 63)))
        case .bext: setX(d.rd, (x(d.rs1) >> (x(d.rs2) & 63)) & 1)
        case .bexti: setX(d.rd, (x(d.rs1) >> (imm & 63)) & 1)
        case .binv: setX(d.rd, x(d.rs1) ^ (1 << (x(d.rs2) & 63)))
        case .binvi: setX(d.rd, x(d.rs1) ^ (1 << (imm & 63)))
        case .bset: setX(d.rd, x(d.rs1) | (1 << (x(d.rs2) & 63)))
        case .bseti: setX(d.rd, x(d.rs1) | (1 << (imm & 63)))
        case .mret:
            guard s.pointee.privilege == .machine else { throw Trap(.illegalInstruction, tval: UInt64(d.raw)) }
            returnFromTrap(machine: true)
            return
        case .sret:
            let priv = s.pointee.privilege
            guard priv == .machine || (priv == .supervisor && s.pointee.mstatus & MStatus.tsr == 0) else {
                throw Trap(.illegalInstruction, tval: UInt64(d.raw))
            }
            returnFromTrap(machine: false)
            return
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
            try executeFloat(d)
        }
        s.pointee.pc = next
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

    /// MRET/SRET (Privileged §3.3.2).
    private func returnFromTrap(machine: Bool) {
        let s = state
        var st = s.pointee.mstatus
        if machine {
            let mpp = PrivilegeMode(rawValue: UInt8((st & MStatus.mpp) >> MStatus.mppShift)) ?? .user
            st = (st & ~MStatus.mie) | (st & MStatus.mpie != 0 ? MStatus.mie : 0)
            st |= MStatus.mpie
            st &= ~MStatus.mpp
            if mpp != .machine { st &= ~MStatus.mprv }
            s.pointee.privilege = mpp
            s.pointee.pc = s.pointee.mepc
        } else {
            let spp: PrivilegeMode = st & MStatus.spp != 0 ? .supervisor : .user
            st = (st & ~MStatus.sie) | (st & MStatus.spie != 0 ? MStatus.sie : 0)
            st |= MStatus.spie
            st &= ~MStatus.spp
            st &= ~MStatus.mprv  // the new privilege is below M
            s.pointee.privilege = spp
            s.pointee.pc = s.pointee.sepc
        }
        s.pointee.mstatus = st
        s.pointee.reservation = HartState.noReservation
        s.pointee.endChunk = true
        updatePrivilegeKeys()
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

extension String {
    /// Zero-padded on the left to `width` characters (register dumps, addresses).
    package func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }

    func rightPadded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
