import SystemSupport

/// A hart's saved state (DESIGN.md §3, §5): every architectural register and CSR, the FP
/// state, the LR reservation, both timer compare values and whether it sleeps in WFI. A
/// state read from a snapshot or a migration stream is untrusted: `restore` refuses values
/// the hart could never hold (it checks what the CSR write rules guarantee), so a bad stream
/// can not put the hart somewhere its code assumes impossible.
extension Hart {
    public struct SavedState: Codable, Sendable, Equatable {
        public static let currentVersion: UInt32 = 1
        public var version: UInt32 = SavedState.currentVersion
        public var pc: UInt64
        public var mcycle: UInt64
        public var minstret: UInt64
        public var x: [UInt64]
        public var f: [UInt64]
        public var privilege: UInt8
        public var mstatus: UInt64
        public var medeleg: UInt64
        public var mideleg: UInt64
        public var mie: UInt64
        public var mipSoftware: UInt64
        public var mtvec: UInt64
        public var mscratch: UInt64
        public var mepc: UInt64
        public var mcause: UInt64
        public var mtval: UInt64
        public var mcounteren: UInt32
        public var mcountinhibit: UInt32
        public var menvcfg: UInt64
        public var mhartid: UInt64
        public var stvec: UInt64
        public var sscratch: UInt64
        public var sepc: UInt64
        public var scause: UInt64
        public var stval: UInt64
        public var scounteren: UInt32
        public var senvcfg: UInt64
        public var satp: UInt64
        public var stimecmp: UInt64
        public var fflags: UInt8
        public var frm: UInt8
        public var pmpcfg: [UInt8]
        public var pmpaddr: [UInt64]
        public var reservation: UInt64
        public var reservationValue: UInt64
        /// The ACLINT's mtimecmp for this hart, which the hart compares itself.
        public var mtimecmp: UInt64
        /// The hart sleeps in WFI.
        public var waiting: Bool
    }

    /// The hart's state; call while its thread is parked.
    public func saveState() -> SavedState {
        let s = state.pointee
        return SavedState(
            pc: s.pc, mcycle: s.mcycle, minstret: s.minstret,
            x: (0..<32).map { s.x[$0] }, f: (0..<32).map { s.f[$0] }, privilege: s.privilege.rawValue,
            mstatus: s.mstatus, medeleg: s.medeleg, mideleg: s.mideleg, mie: s.mie, mipSoftware: s.mipSoftware,
            mtvec: s.mtvec, mscratch: s.mscratch, mepc: s.mepc, mcause: s.mcause, mtval: s.mtval,
            mcounteren: s.mcounteren, mcountinhibit: s.mcountinhibit, menvcfg: s.menvcfg, mhartid: s.mhartid,
            stvec: s.stvec, sscratch: s.sscratch, sepc: s.sepc, scause: s.scause, stval: s.stval,
            scounteren: s.scounteren, senvcfg: s.senvcfg, satp: s.satp, stimecmp: s.stimecmp,
            fflags: s.fflags, frm: s.frm, pmpcfg: (0..<16).map { s.pmpcfg[$0] }, pmpaddr: (0..<16).map { s.pmpaddr[$0] },
            reservation: s.reservation, reservationValue: s.reservationValue,
            mtimecmp: machineTimerCompareValue, waiting: s.waiting)
    }

    /// Loads a saved state, after checking it; the hart keeps its own state when it throws.
    /// Call while the hart's thread is parked. Decoded and translated code is dropped (RAM is
    /// being replaced too), and so is every cached translation.
    public func restore(_ saved: SavedState) throws(SystemError) {
        func bad(_ what: String) -> SystemError { .badInput("hart \(state.pointee.mhartid) state: \(what)") }
        guard saved.version == SavedState.currentVersion else {
            throw bad("version \(saved.version) is not supported (this build reads version \(SavedState.currentVersion))")
        }
        guard saved.mhartid == state.pointee.mhartid else { throw bad("saved for hart \(saved.mhartid)") }
        guard saved.x.count == 32, saved.f.count == 32, saved.pmpcfg.count == 16, saved.pmpaddr.count == 16 else {
            throw bad("register files of the wrong size (\(saved.x.count) x, \(saved.f.count) f, \(saved.pmpcfg.count) pmpcfg, \(saved.pmpaddr.count) pmpaddr)")
        }
        guard saved.x[0] == 0 else { throw bad("x0 is \(hex(saved.x[0])), not 0") }
        guard let privilege = PrivilegeMode(rawValue: saved.privilege) else { throw bad("privilege \(saved.privilege) does not exist") }
        guard saved.pc & 1 == 0 else { throw bad("pc \(hex(saved.pc)) is odd") }
        let mstatusAllowed = MStatus.writable | MStatus.fixed | MStatus.sd
        guard saved.mstatus & ~mstatusAllowed == 0, saved.mstatus & MStatus.fixed == MStatus.fixed,
              (saved.mstatus & MStatus.mpp) >> MStatus.mppShift != 2 else {
            throw bad("mstatus \(hex(saved.mstatus)) is not a value the hart can hold")
        }
        let satpMode = saved.satp >> 60
        guard [0, 8, 9, 10].contains(satpMode), saved.satp & ~(0xf << 60 | (1 << 44) - 1) == 0 else {
            throw bad("satp \(hex(saved.satp)) has an unsupported mode or an ASID")
        }
        guard saved.fflags & ~0x1f == 0, saved.frm & ~7 == 0 else { throw bad("fcsr fields out of range (fflags \(saved.fflags), frm \(saved.frm))") }
        guard saved.mipSoftware & ~(InterruptBits.ssip | InterruptBits.stip | InterruptBits.seip) == 0,
              saved.mie & ~InterruptBits.all == 0, saved.mideleg & ~InterruptBits.supervisor == 0, saved.medeleg & ~0xb3ff == 0 else {
            throw bad("interrupt or delegation registers have bits the hart does not implement")
        }
        guard saved.mtvec & 3 < 2, saved.stvec & 3 < 2, saved.mepc & 1 == 0, saved.sepc & 1 == 0 else {
            throw bad("a trap vector or exception pc is not a legal value")
        }
        guard saved.pmpcfg.allSatisfy({ $0 & 0x60 == 0 && $0 & 3 != 2 }) else { throw bad("a pmpcfg entry has reserved bits set") }
        guard saved.menvcfg & ~(EnvConfig.stce | EnvConfig.fiom) == 0, saved.senvcfg & ~EnvConfig.fiom == 0,
              saved.mcountinhibit & 2 == 0 else {
            throw bad("menvcfg, senvcfg or mcountinhibit has bits the hart does not implement")
        }

        var s = HartState()
        s.pc = saved.pc
        s.mcycle = saved.mcycle
        s.minstret = saved.minstret
        for i in 0..<32 {
            s.x[i] = saved.x[i]
            s.f[i] = saved.f[i]
        }
        s.privilege = privilege
        s.mstatus = saved.mstatus
        s.medeleg = saved.medeleg
        s.mideleg = saved.mideleg
        s.mie = saved.mie
        s.mipSoftware = saved.mipSoftware
        s.mtvec = saved.mtvec
        s.mscratch = saved.mscratch
        s.mepc = saved.mepc
        s.mcause = saved.mcause
        s.mtval = saved.mtval
        s.mcounteren = saved.mcounteren
        s.mcountinhibit = saved.mcountinhibit
        s.menvcfg = saved.menvcfg
        s.mhartid = saved.mhartid
        s.stvec = saved.stvec
        s.sscratch = saved.sscratch
        s.sepc = saved.sepc
        s.scause = saved.scause
        s.stval = saved.stval
        s.scounteren = saved.scounteren
        s.senvcfg = saved.senvcfg
        s.satp = saved.satp
        s.stimecmp = saved.stimecmp
        s.fflags = saved.fflags
        s.frm = saved.frm
        for i in 0..<16 {
            s.pmpcfg[i] = saved.pmpcfg[i]
            s.pmpaddr[i] = saved.pmpaddr[i]
        }
        s.reservation = saved.reservation
        s.reservationValue = saved.reservationValue
        s.waiting = saved.waiting
        // A sleeping hart re-checks its interrupts when it runs again.
        s.endChunk = true
        // The debugger's settings are the running machine's, not the saved one's.
        s.breakpointFilter = state.pointee.breakpointFilter
        s.checkWatchpoints = state.pointee.checkWatchpoints
        state.pointee = s
        flushTLB()
        dropAllCode()
        updatePrivilegeKeys()
        setMachineTimerCompare(saved.mtimecmp)
        updateTimerInterrupts()
    }

    /// Drops every cached write translation, so the hart's next store to each page goes
    /// through `resolve` (which marks it dirty while a migration tracks writes). Call while
    /// the hart's thread is parked.
    public func dropWriteTranslations() {
        flushTLB(access: .write)
    }
}

private func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }
