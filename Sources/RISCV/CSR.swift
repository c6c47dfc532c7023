import GuestMemory
import SystemSupport

/// CSR numbers (Privileged §2.2, tables 2.2-2.5).
public enum CSRNumber {
    public static let fflags: UInt16 = 0x001, frm: UInt16 = 0x002, fcsr: UInt16 = 0x003
    public static let cycle: UInt16 = 0xc00, time: UInt16 = 0xc01, instret: UInt16 = 0xc02
    public static let sstatus: UInt16 = 0x100, sie: UInt16 = 0x104, stvec: UInt16 = 0x105, scounteren: UInt16 = 0x106
    public static let senvcfg: UInt16 = 0x10a, sscratch: UInt16 = 0x140, sepc: UInt16 = 0x141, scause: UInt16 = 0x142
    public static let stval: UInt16 = 0x143, sip: UInt16 = 0x144, stimecmp: UInt16 = 0x14d, satp: UInt16 = 0x180
    public static let mvendorid: UInt16 = 0xf11, marchid: UInt16 = 0xf12, mimpid: UInt16 = 0xf13, mhartid: UInt16 = 0xf14
    public static let mconfigptr: UInt16 = 0xf15
    public static let mstatus: UInt16 = 0x300, misa: UInt16 = 0x301, medeleg: UInt16 = 0x302, mideleg: UInt16 = 0x303
    public static let mie: UInt16 = 0x304, mtvec: UInt16 = 0x305, mcounteren: UInt16 = 0x306, menvcfg: UInt16 = 0x30a
    public static let mcountinhibit: UInt16 = 0x320
    public static let mscratch: UInt16 = 0x340, mepc: UInt16 = 0x341, mcause: UInt16 = 0x342, mtval: UInt16 = 0x343
    public static let mip: UInt16 = 0x344
    public static let pmpcfg0: UInt16 = 0x3a0, pmpaddr0: UInt16 = 0x3b0
    public static let mcycle: UInt16 = 0xb00, minstret: UInt16 = 0xb02
}

/// `misa` for RV64 with the extensions swemu implements: I, M, A, F, D, C, S, U
/// (Privileged §3.1.1; MXL = 2). Z extensions have no misa bit; the device tree lists them.
public let misaValue: UInt64 = 2 << 62 | [
    "A", "C", "D", "F", "I", "M", "S", "U",
].reduce(0) { $0 | 1 << UInt64($1.unicodeScalars.first!.value - 65) }

/// The ISA string the device tree advertises (`riscv,isa`), matching `misa` and the
/// Z extensions this CPU implements.
public let isaString = "rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_zbb_zbs_sstc"

extension Hart {
    /// Reads CSR `number` for a CSR instruction at the current privilege.
    /// Illegal-instruction traps per §2.1: privilege too low, unimplemented, counters not
    /// enabled by mcounteren/scounteren, satp under TVM, stimecmp without STCE.
    func readCSR(_ number: UInt16, raw: UInt32) throws(Trap) -> UInt64 {
        let s = state
        let illegal = Trap(.illegalInstruction, tval: UInt64(raw))
        guard UInt8(number >> 8 & 3) <= s.pointee.privilege.rawValue else { throw illegal }
        switch number {
        case CSRNumber.fflags, CSRNumber.frm, CSRNumber.fcsr:
            guard s.pointee.mstatus & MStatus.fs != 0 else { throw illegal }
            switch number {
            case CSRNumber.fflags: return UInt64(s.pointee.fflags)
            case CSRNumber.frm: return UInt64(s.pointee.frm)
            default: return UInt64(s.pointee.frm) << 5 | UInt64(s.pointee.fflags)
            }
        case 0xc00...0xc1f:
            try checkCounterAccess(Int(number - 0xc00), illegal: illegal)
            switch number {
            case CSRNumber.cycle: return s.pointee.mcycle
            case CSRNumber.time: return timeBase.now()
            case CSRNumber.instret: return s.pointee.minstret
            default: return 0  // hpmcounter3-31 exist and read zero (Zihpm with no events)
            }
        case CSRNumber.sstatus: return sstatusValue()
        case CSRNumber.sie: return s.pointee.mie & s.pointee.mideleg
        case CSRNumber.stvec: return s.pointee.stvec
        case CSRNumber.scounteren: return UInt64(s.pointee.scounteren)
        case CSRNumber.senvcfg: return s.pointee.senvcfg
        case CSRNumber.sscratch: return s.pointee.sscratch
        case CSRNumber.sepc: return s.pointee.sepc
        case CSRNumber.scause: return s.pointee.scause
        case CSRNumber.stval: return s.pointee.stval
        case CSRNumber.sip: return pendingInterrupts() & s.pointee.mideleg
        case CSRNumber.stimecmp:
            try checkStimecmpAccess(illegal: illegal)
            return s.pointee.stimecmp
        case CSRNumber.satp:
            guard !(s.pointee.privilege == .supervisor && s.pointee.mstatus & MStatus.tvm != 0) else { throw illegal }
            return s.pointee.satp
        case CSRNumber.mvendorid, CSRNumber.marchid, CSRNumber.mimpid, CSRNumber.mconfigptr: return 0
        case CSRNumber.mhartid: return s.pointee.mhartid
        case CSRNumber.mstatus: return mstatusValue()
        case CSRNumber.misa: return misaValue
        case CSRNumber.medeleg: return s.pointee.medeleg
        case CSRNumber.mideleg: return s.pointee.mideleg
        case CSRNumber.mie: return s.pointee.mie
        case CSRNumber.mtvec: return s.pointee.mtvec
        case CSRNumber.mcounteren: return UInt64(s.pointee.mcounteren)
        case CSRNumber.menvcfg: return s.pointee.menvcfg
        case CSRNumber.mcountinhibit: return UInt64(s.pointee.mcountinhibit)
        case 0x323...0x33f: return 0  // mhpmevent3-31
        case CSRNumber.mscratch: return s.pointee.mscratch
        case CSRNumber.mepc: return s.pointee.mepc
        case CSRNumber.mcause: return s.pointee.mcause
        case CSRNumber.mtval: return s.pointee.mtval
        case CSRNumber.mip: return pendingInterrupts()
        case 0x3a0...0x3af:
            // RV64 has only even pmpcfg registers; 0x3a0 holds entries 0-7, 0x3a2 entries 8-15,
            // the rest (entries 16-63) are read-only zero.
            guard number & 1 == 0 else { throw illegal }
            guard number <= 0x3a2 else { return 0 }
            let first = Int(number - 0x3a0) * 4
            var value: UInt64 = 0
            for i in 0..<8 { value |= UInt64(s.pointee.pmpcfg[first + i]) << (8 * UInt64(i)) }
            return value
        case 0x3b0...0x3ef:
            let index = Int(number - 0x3b0)
            return index < 16 ? s.pointee.pmpaddr[index] : 0
        case CSRNumber.mcycle: return s.pointee.mcycle
        case CSRNumber.minstret: return s.pointee.minstret
        case 0xb03...0xb1f: return 0
        case 0x7a0...0x7a3:
            // Sdtrig with no triggers: tselect reads 0 and tdata1 reads 0 (type 0: no
            // trigger at this index), so debuggers and riscv-tests find none and move on.
            return 0
        default:
            DebugLog.log(.unimplemented, "riscv: read of unimplemented CSR \(hex(number))")
            throw illegal
        }
    }

    /// Writes CSR `number` (WARL fields legalized) and applies side effects: TLB flushes,
    /// privilege keys, interrupt re-evaluation.
    func writeCSR(_ number: UInt16, _ value: UInt64, raw: UInt32) throws(Trap) {
        let s = state
        let illegal = Trap(.illegalInstruction, tval: UInt64(raw))
        // Bits 11:10 == 3 mark read-only CSRs (§2.1).
        guard number >> 10 != 3, UInt8(number >> 8 & 3) <= s.pointee.privilege.rawValue else { throw illegal }
        switch number {
        case CSRNumber.fflags, CSRNumber.frm, CSRNumber.fcsr:
            guard s.pointee.mstatus & MStatus.fs != 0 else { throw illegal }
            switch number {
            case CSRNumber.fflags: s.pointee.fflags = UInt8(value & 0x1f)
            case CSRNumber.frm: s.pointee.frm = UInt8(value & 7)
            default:
                s.pointee.fflags = UInt8(value & 0x1f)
                s.pointee.frm = UInt8((value >> 5) & 7)
            }
            s.pointee.mstatus |= MStatus.fs  // FS = Dirty
        case CSRNumber.sstatus:
            let mask = MStatus.supervisorWritable
            setMStatus((s.pointee.mstatus & ~mask) | (value & mask))
        case CSRNumber.sie:
            let mask = s.pointee.mideleg & InterruptBits.supervisor
            s.pointee.mie = (s.pointee.mie & ~mask) | (value & mask)
        case CSRNumber.stvec: s.pointee.stvec = legalTvec(value)
        case CSRNumber.scounteren: s.pointee.scounteren = UInt32(truncatingIfNeeded: value)
        case CSRNumber.senvcfg: s.pointee.senvcfg = value & EnvConfig.fiom
        case CSRNumber.sscratch: s.pointee.sscratch = value
        case CSRNumber.sepc: s.pointee.sepc = value & ~1
        case CSRNumber.scause: s.pointee.scause = value
        case CSRNumber.stval: s.pointee.stval = value
        case CSRNumber.sip:
            // Only SSIP is writable through sip, and only when delegated (§4.1.3).
            let mask = s.pointee.mideleg & InterruptBits.ssip
            s.pointee.mipSoftware = (s.pointee.mipSoftware & ~mask) | (value & mask)
        case CSRNumber.stimecmp:
            try checkStimecmpAccess(illegal: illegal)
            s.pointee.stimecmp = value
            updateTimerInterrupts()
        case CSRNumber.satp:
            guard !(s.pointee.privilege == .supervisor && s.pointee.mstatus & MStatus.tvm != 0) else { throw illegal }
            // WARL: a write of an unsupported MODE has no effect at all (§4.1.11).
            let mode = value >> 60
            guard mode == 0 || mode == 8 || mode == 9 || mode == 10 else { return }
            // ASIDs are not implemented (ASIDLEN = 0): the field reads zero.
            s.pointee.satp = value & (0xf << 60 | (1 << 44) - 1)
            flushTLB()
        case CSRNumber.mstatus:
            setMStatus((s.pointee.mstatus & ~MStatus.writable) | (value & MStatus.writable))
        case CSRNumber.misa: break  // WARL, not writable: extensions cannot be switched off
        case CSRNumber.medeleg:
            // ecall from M (11) cannot be delegated; 10 and 14 are reserved (§3.1.8).
            let delegable: UInt64 = 0xb3ff
            s.pointee.medeleg = value & delegable
        case CSRNumber.mideleg: s.pointee.mideleg = value & InterruptBits.supervisor
        case CSRNumber.mie: s.pointee.mie = value & InterruptBits.all
        case CSRNumber.mtvec: s.pointee.mtvec = legalTvec(value)
        case CSRNumber.mcounteren: s.pointee.mcounteren = UInt32(truncatingIfNeeded: value)
        case CSRNumber.menvcfg:
            s.pointee.menvcfg = value & (EnvConfig.stce | EnvConfig.fiom)
            updateTimerInterrupts()
        case CSRNumber.mcountinhibit: s.pointee.mcountinhibit = UInt32(truncatingIfNeeded: value) & ~2  // TM is 0
        case 0x323...0x33f: break
        case CSRNumber.mscratch: s.pointee.mscratch = value
        case CSRNumber.mepc: s.pointee.mepc = value & ~1
        case CSRNumber.mcause: s.pointee.mcause = value
        case CSRNumber.mtval: s.pointee.mtval = value
        case CSRNumber.mip:
            // SSIP and SEIP always, STIP only while Sstc does not own it (§3.1.9, Sstc spec).
            var mask = InterruptBits.ssip | InterruptBits.seip
            if s.pointee.menvcfg & EnvConfig.stce == 0 { mask |= InterruptBits.stip }
            s.pointee.mipSoftware = (s.pointee.mipSoftware & ~mask) | (value & mask)
        case 0x3a0...0x3af:
            guard number & 1 == 0 else { throw illegal }
            guard number <= 0x3a2 else { return }
            let first = Int(number - 0x3a0) * 4
            for i in 0..<8 where s.pointee.pmpcfg[first + i] & 0x80 == 0 {
                var cfg = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i)))
                // W=1,R=0 is reserved (§3.7.1): keep it legal by clearing W.
                if cfg & 3 == 2 { cfg &= ~2 }
                s.pointee.pmpcfg[first + i] = cfg & 0x9f
            }
            flushTLB()
        case 0x3b0...0x3ef:
            let index = Int(number - 0x3b0)
            guard index < 16 else { return }
            // A locked entry, or the address below a locked TOR entry, ignores writes.
            if s.pointee.pmpcfg[index] & 0x80 != 0 { return }
            if index < 15 && s.pointee.pmpcfg[index + 1] & 0x98 == 0x88 { return }
            s.pointee.pmpaddr[index] = value & ((1 << 54) - 1)
            flushTLB()
        case 0x7a0...0x7a3: break  // no triggers: tselect and tdata1-3 stay 0 (WARL)
        case CSRNumber.mcycle: s.pointee.mcycle = value
        case CSRNumber.minstret:
            // The write takes effect after this instruction retires (Privileged 1.12 §3.1.10:
            // the next instruction reads the value written); `retire` then counts this
            // instruction, so pre-compensate, unless mcountinhibit.IR stops the count
            // (§3.1.12), when the value written must read back unchanged.
            s.pointee.minstret = s.pointee.mcountinhibit & 4 == 0 ? value &- 1 : value
        case 0xb03...0xb1f: break
        case CSRNumber.mvendorid, CSRNumber.marchid, CSRNumber.mimpid, CSRNumber.mhartid, CSRNumber.mconfigptr:
            throw illegal
        default:
            DebugLog.log(.unimplemented, "riscv: write of unimplemented CSR \(hex(number))")
            throw illegal
        }
    }

    private func checkCounterAccess(_ index: Int, illegal: Trap) throws(Trap) {
        let s = state.pointee
        if s.privilege != .machine && (s.mcounteren >> index) & 1 == 0 { throw illegal }
        if s.privilege == .user && (s.scounteren >> index) & 1 == 0 { throw illegal }
    }

    private func checkStimecmpAccess(illegal: Trap) throws(Trap) {
        let s = state.pointee
        if s.privilege == .supervisor && (s.menvcfg & EnvConfig.stce == 0 || s.mcounteren & 2 == 0) { throw illegal }
    }

    /// xtvec MODE >= 2 is reserved: keep the mode direct.
    private func legalTvec(_ value: UInt64) -> UInt64 {
        value & 3 >= 2 ? value & ~3 : value
    }

    /// What CSRRS/CSRRC modify: the value read, except that mip's SEIP comes from the
    /// software-writable bit alone. Privileged §3.1.9: "the signal from the interrupt
    /// controller is not used to calculate the value written to SEIP" — otherwise an M-mode
    /// `csrs mip, SSIP` (OpenSBI's IPI injection) taken while the PLIC asserts SEIP would
    /// latch SEIP on for good.
    func readModifyWriteBase(_ number: UInt16, read value: UInt64) -> UInt64 {
        guard number == CSRNumber.mip else { return value }
        return (value & ~InterruptBits.seip) | (state.pointee.mipSoftware & InterruptBits.seip)
    }

    func mstatusValue() -> UInt64 {
        let st = state.pointee.mstatus
        return st & MStatus.fs == MStatus.fs ? st | MStatus.sd : st & ~MStatus.sd
    }

    func sstatusValue() -> UInt64 { mstatusValue() & MStatus.supervisorView }

    /// Installs a new mstatus (already masked), legalizing MPP and applying side effects.
    func setMStatus(_ value: UInt64) {
        let s = state
        var st = value | MStatus.fixed
        // MPP is WARL: 2 is reserved, map it to U.
        if (st & MStatus.mpp) >> MStatus.mppShift == 2 { st &= ~MStatus.mpp }
        let old = s.pointee.mstatus
        s.pointee.mstatus = st & ~MStatus.sd
        // SUM changes the data key instead (`updatePrivilegeKeys`).
        if (old ^ st) & MStatus.mxr != 0 { flushTLB() }
        updatePrivilegeKeys()
    }
}
