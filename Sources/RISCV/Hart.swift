import CLinux
import DeviceModel
import GuestMemory
import Synchronization
import SystemSupport

/// The board's view of physical memory for a hart: RAM regions (fast, host pointers) and the
/// MMIO address space (devices). Physical addresses that are neither fault.
public struct PhysicalMemory: Sendable {
    public let ram: GuestMemory
    public let mmio: AddressSpace

    public init(ram: GuestMemory, mmio: AddressSpace) {
        self.ram = ram
        self.mmio = mmio
    }
}

/// Why `Hart.run` returned to its caller (the vCPU thread).
public enum StopReason: Equatable, Sendable {
    /// The instruction budget ran out; call `run` again.
    case budgetExhausted
    /// The hart executed WFI and no enabled interrupt is pending: sleep in `waitForInterrupt`.
    case waitingForInterrupt
    /// Someone called `requestStop()` (pause, shutdown, reset).
    case stopRequested
    /// A debugger's breakpoint or watchpoint was hit before the instruction at pc ran;
    /// `Hart.lastDebugStop` says which.
    case debugStop
}

/// A direct-mapped software TLB entry (DESIGN.md §7). `tag` is the virtual page number shifted
/// left by 2 with the privilege key in the low bits, so one compare checks page and mode.
/// A write translation for a page that holds code: stores through it also move the page's
/// write generation (`GuestMemory`'s code pages), so data sharing a page with code costs a
/// helper call and an atomic add, not a page walk.
struct CodeWriteEntry {
    var tag: UInt64 = .max
    var addend: Int = 0
    var generation: UnsafeMutableRawPointer?
}

/// A page-table page PMP lets S-mode read and write whole, and its host address (RAM stays
/// mapped while the board exists); `page` = .max for an empty entry.
/// A PMP entry's byte range `[base, top)` and its cfg byte (Privileged §3.7.1).
struct PMPRegion {
    var base: UInt64
    var top: UInt64
    var cfg: UInt8
}

/// A decoded page in `Hart.recentDecodedPages`; `page` = .max for an empty entry.
struct RecentDecodedPage {
    var page: UInt64 = .max
    var slots: UnsafeMutablePointer<DecodedInstruction>?
}

struct PageTablePage {
    var page: UInt64 = .max
    var host: UnsafeMutableRawPointer?
}

/// One entry of the software TLB: 16 bytes, so that translated code indexes it with a
/// scaled register alone. Its physical page is in a parallel array (`Hart.tlbPhysicalPages`),
/// read only on fills, fetches and atomics.
package struct TLBEntry {
    package var tag: UInt64 = .max
    /// For RAM pages: host address = guest virtual address + addend. 0 = MMIO page (slow path).
    package var addend: Int = 0

    /// The host address of `vaddr`, on this entry's page (nil only for an addend that
    /// wraps to 0, which no RAM entry has).
    @inline(__always)
    func host(_ vaddr: UInt64) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: Int(bitPattern: UInt(vaddr)) &+ addend)
    }

    /// Where `tag` sits, for the atomic accesses another thread makes.
    static let tagOffset = MemoryLayout<TLBEntry>.offset(of: \TLBEntry.tag)!
}

package enum AccessType: Int {
    case read = 0
    case write = 1
    case execute = 2

    var pageFault: ExceptionCause {
        switch self {
        case .read: return .loadPageFault
        case .write: return .storePageFault
        case .execute: return .instructionPageFault
        }
    }

    var accessFault: ExceptionCause {
        switch self {
        case .read: return .loadAccessFault
        case .write: return .storeAccessFault
        case .execute: return .instructionAccessFault
        }
    }
}

/// One RISC-V hart: its architectural state, its TLB, and the interpreter that runs it.
/// Owned and run by one host thread; other threads only raise interrupt lines
/// (`setInterrupt`) and ask it to stop (`requestStop`), both through atomics.
public final class Hart: @unchecked Sendable {
    // SAFETY: `state`, `tlb` and `tlbPhysicalPages` (one allocation), `codeWriteTLB`,
    // `pageTablePages`, `pmpRegions` and `recentDecodedPages` are allocated (with their fixed
    // capacities) in init, freed in deinit, and touched only by the thread that runs the hart
    // (the vCPU thread), per the threading rule of DESIGN.md §4, but for the atomic scan of
    // `dropWriteTranslations`; indices into them are masked to those capacities
    // (`pmpRegionCount` is at most 16).
    // Cross-thread inputs go through the atomics below.
    public let state: UnsafeMutablePointer<HartState>
    /// `state.pointee.x`, the integer registers, as a plain pointer for the interpreter's
    /// inner loop (no bounds checks: register fields are 5 bits).
    let registers: UnsafeMutablePointer<UInt64>
    package let tlb: UnsafeMutablePointer<TLBEntry>
    /// The physical page of each TLB entry (same index), after the TLB in the same allocation.
    package let tlbPhysicalPages: UnsafeMutablePointer<UInt64>

    /// Where `entry`, one of `tlb`'s, maps to: its physical page.
    @inline(__always)
    package func physicalPage(of entry: UnsafeMutablePointer<TLBEntry>) -> UnsafeMutablePointer<UInt64> {
        tlbPhysicalPages + (entry - tlb)
    }
    /// Entries per access type, direct-mapped by virtual page number. 1024 rather than 256:
    /// a Linux boot and four module loads missed 40 % less in fetches (a kernel's hot code
    /// spans more than 256 pages) and loads, for 72 KiB per hart.
    package static let tlbSize = 1024
    let codeWriteTLB: UnsafeMutablePointer<CodeWriteEntry>
    static let codeWriteTLBSize = 64
    /// Page-table pages a walk may read and update without asking PMP again (MMU.swift).
    let pageTablePages: UnsafeMutablePointer<PageTablePage>
    static let pageTablePagesSize = 16
    /// The PMP entries that can match (A not OFF, a non-empty range), decoded, in priority
    /// order: derived from `pmpcfg`/`pmpaddr` by `flushTLB()`, which every PMP write, reset
    /// and state restore makes (the TLB caches PMP's answers too).
    let pmpRegions: UnsafeMutablePointer<PMPRegion>
    /// `Hart.roundingModeBits` (FloatingPoint.swift).
    let roundingModeOps = Hart.roundingModeBits
    var pmpRegionCount = 0

    public let memory: PhysicalMemory
    public let timeBase: TimeBase
    /// This hart's decoder (its memo is not shared between threads).
    package let decoder = Decoder()

    /// Decoded instructions by physical page, one slot per halfword (length 0 = not decoded
    /// yet). Zifencei (Unprivileged §3.1): instruction fetches need not see stores until the
    /// hart executes FENCE.I, so this cache is dropped on FENCE.I (and when it is full), not on
    /// every store; Linux issues FENCE.I whenever it creates or changes code.
    var decodedPages: [UInt64: UnsafeMutablePointer<DecodedInstruction>] = [:]
    /// The physical pages this hart holds code from (decoded instructions, or an engine's
    /// translations), with the write generation each had when it was registered
    /// (`GuestMemory`'s code pages): FENCE.I drops the pages whose generation has moved.
    private var codePages: [UInt64: CodePage] = [:]
    /// A page's generation when registered, and where the current one is counted (valid as
    /// long as the guest memory, which outlives its harts).
    private struct CodePage {
        let generation: UInt32
        let counter: UnsafeRawPointer
    }
    /// This hart's code-page listener in `GuestMemory`, removed when the hart ends.
    private var codePageListener = 0
    /// Moves at every FENCE.I (or debugger write): an engine that caches translations then
    /// drops those on `takeDroppedCodePages()`.
    package private(set) var codeGeneration: UInt64 = 0
    /// Moves when every cached instruction must go (reset).
    package private(set) var codeResets: UInt64 = 0
    /// Pages FENCE.I found written since they were registered, kept for an engine that asked
    /// (`collectsDroppedCodePages`) until it takes them.
    private var droppedCodePages: [UInt64] = []
    package var collectsDroppedCodePages = false
    /// At most this many pages are cached (16 KiB... 32 KiB each); past it the cache starts over.
    static let decodedPageLimit = 1024
    /// The page last looked up in each of these sets (by physical page number), in front of
    /// `decodedPages`: the run loop moves between a few pages of code all the time, and the
    /// dictionary cost a hash and two exclusivity checks per move (perf: 4 % of a Linux boot
    /// under the interpreter). An entry goes when its page is freed (`freeDecodedPage`).
    let recentDecodedPages: UnsafeMutablePointer<RecentDecodedPage>
    static let recentDecodedPagesSize = 64
    static let slotsPerPage = 2048

    /// Interrupt lines driven by devices (MSIP, MTIP, MEIP, SEIP), as `mip` bits.
    let externalInterrupts = Atomic<UInt64>(0)
    /// The ACLINT's `mtimecmp` for this hart; MTIP = (mtime >= mtimecmp).
    let machineTimerCompare = Atomic<UInt64>(.max)
    package let stopRequestFlag = Atomic<Bool>(false)
    /// Written by interrupt sources to wake a hart sleeping in WFI.
    let wakeup: Wakeup

    // Debugger state (Hart+Debug.swift); touched only by the vCPU thread, like `state`.
    /// Breakpoint addresses (virtual, compared with pc before each instruction); the value says
    /// whether a software (Z0) and/or hardware (Z1) breakpoint sits there.
    var breakpoints: [UInt64: BreakpointKinds] = [:]
    var watchpoints: [Watchpoint] = []
    /// Why `run` last returned `.debugStop`.
    public internal(set) var lastDebugStop: DebugStop?

    /// Where the TLB starts from `state`: both are one allocation, so that translated code
    /// reaches the TLB through the register that holds the state (one register fewer pinned).
    package static let tlbOffsetFromState = (MemoryLayout<HartState>.size + 63) & ~63
    /// Where `tlbPhysicalPages` starts from `state`.
    package static let tlbPhysicalPagesOffsetFromState = tlbOffsetFromState + MemoryLayout<TLBEntry>.stride * tlbSize * 3

    public init(hartID: UInt64 = 0, memory: PhysicalMemory, timeBase: TimeBase) throws(SystemError) {
        let stateAndTLB = UnsafeMutableRawPointer.allocate(
            byteCount: Hart.tlbPhysicalPagesOffsetFromState + MemoryLayout<UInt64>.stride * Hart.tlbSize * 3, alignment: 64)
        state = stateAndTLB.bindMemory(to: HartState.self, capacity: 1)
        state.initialize(to: HartState())
        state.pointee.mhartid = hartID
        // SAFETY: `x` is an InlineArray of 32 UInt64s stored inline in the HartState that
        // `state` holds for the hart's life, so its elements are UInt64s at a fixed address.
        registers = (UnsafeMutableRawPointer(state) + MemoryLayout<HartState>.offset(of: \HartState.x)!)
            .assumingMemoryBound(to: UInt64.self)
        tlb = (stateAndTLB + Hart.tlbOffsetFromState).bindMemory(to: TLBEntry.self, capacity: Hart.tlbSize * 3)
        tlb.initialize(repeating: TLBEntry(), count: Hart.tlbSize * 3)
        tlbPhysicalPages = (stateAndTLB + Hart.tlbPhysicalPagesOffsetFromState).bindMemory(to: UInt64.self, capacity: Hart.tlbSize * 3)
        tlbPhysicalPages.initialize(repeating: 0, count: Hart.tlbSize * 3)
        codeWriteTLB = .allocate(capacity: Hart.codeWriteTLBSize)
        codeWriteTLB.initialize(repeating: CodeWriteEntry(), count: Hart.codeWriteTLBSize)
        pmpRegions = .allocate(capacity: 16)
        pmpRegions.initialize(repeating: PMPRegion(base: 0, top: 0, cfg: 0), count: 16)
        pageTablePages = .allocate(capacity: Hart.pageTablePagesSize)
        pageTablePages.initialize(repeating: PageTablePage(), count: Hart.pageTablePagesSize)
        recentDecodedPages = .allocate(capacity: Hart.recentDecodedPagesSize)
        recentDecodedPages.initialize(repeating: RecentDecodedPage(), count: Hart.recentDecodedPagesSize)
        self.memory = memory
        self.timeBase = timeBase
        wakeup = try Wakeup()
        updatePrivilegeKeys()
        codePageListener = memory.ram.addCodePageListener { [unowned self] page in self.dropWriteTranslations(ofPhysicalPage: page) }
    }

    deinit {
        memory.ram.removeCodePageListener(codePageListener)
        dropAllCode()
        state.deinitialize(count: 1)
        tlb.deinitialize(count: Hart.tlbSize * 3)
        tlbPhysicalPages.deinitialize(count: Hart.tlbSize * 3)
        UnsafeMutableRawPointer(state).deallocate()  // the TLB's and its physical pages' memory too (init)
        codeWriteTLB.deinitialize(count: Hart.codeWriteTLBSize)
        codeWriteTLB.deallocate()
        pageTablePages.deinitialize(count: Hart.pageTablePagesSize)
        pageTablePages.deallocate()
        recentDecodedPages.deinitialize(count: Hart.recentDecodedPagesSize)
        recentDecodedPages.deallocate()
        pmpRegions.deinitialize(count: 16)
        pmpRegions.deallocate()
    }

    // MARK: - Interrupt inputs (any thread)

    /// Drives a device interrupt input (MSIP, MTIP, MEIP or SEIP bit of `mip`).
    public func setInterrupt(_ bits: UInt64, level: Bool) {
        if level {
            externalInterrupts.bitwiseOr(bits, ordering: .sequentiallyConsistent)
        } else {
            externalInterrupts.bitwiseAnd(~bits, ordering: .sequentiallyConsistent)
        }
        wakeup.signal()
    }

    /// Sets this hart's `mtimecmp` (the ACLINT MTIMER register).
    public func setMachineTimerCompare(_ value: UInt64) {
        machineTimerCompare.store(value, ordering: .sequentiallyConsistent)
        // MTIP follows the comparison at once: software that moves mtimecmp forward to
        // acknowledge the interrupt reads mip right after and expects it clear.
        updateMachineTimerPending(now: timeBase.now())
        wakeup.signal()
    }

    public var machineTimerCompareValue: UInt64 { machineTimerCompare.load(ordering: .relaxed) }

    /// Asks `run` to return `.stopRequested` soon (pause, shutdown, reset).
    public func requestStop() {
        stopRequestFlag.store(true, ordering: .sequentiallyConsistent)
        wakeup.signal()
    }

    /// An `InterruptLine` that drives `bits` of this hart's `mip`.
    public func interruptLine(_ bits: UInt64) -> any InterruptLine { HartInterruptLine(hart: self, bits: bits) }

    /// Blocks the calling (vCPU) thread after WFI until an interrupt input changes, a stop is
    /// requested, or the next timer deadline passes.
    public func waitForInterrupt() {
        if stopRequestFlag.load(ordering: .relaxed) { return }
        updateTimerInterrupts()
        let mie = state.pointee.mie
        if pendingInterrupts() & mie != 0 { return }
        // Only a timer whose interrupt is enabled can end the wait: a compare value in the
        // past with its interrupt off would otherwise make this a busy loop.
        var deadline = UInt64.max
        if mie & InterruptBits.mtip != 0 { deadline = machineTimerCompare.load(ordering: .relaxed) }
        if mie & InterruptBits.stip != 0 && state.pointee.menvcfg & EnvConfig.stce != 0 {
            deadline = min(deadline, state.pointee.stimecmp)
        }
        let ns = deadline == .max ? -1 : timeBase.nanoseconds(until: deadline)
        wakeup.wait(timeoutNanoseconds: ns)
    }

    /// Whether the hart is still stalled in WFI. It resumes only once an interrupt is pending
    /// in `mip & mie` (Privileged §3.3.3; global enables do not matter); a wake-up for anything
    /// else (a line or timer it has not enabled, the VMM stopping and resuming the machine)
    /// finds it asleep still. The spec allows spurious resumption, but firmware relies on its
    /// absence as QEMU gives it: OpenSBI 1.1 (Debian 12's, QEMU 7.2's) marks a hart
    /// START_PENDING before it stores the start address (fixed in 1.3), so a secondary hart
    /// that left WFI in between jumped to a stale address, and Linux never booted (the likely
    /// cause of boots seen hanging under CI load: one hart parked, the other in a trap storm).
    @inline(__always)
    package func isAsleep() -> Bool {
        guard state.pointee.waiting else { return false }
        if pendingInterrupts() & state.pointee.mie == 0 { return true }
        state.pointee.waiting = false
        return false
    }

    // MARK: - Reset

    /// Resets to the state the privileged spec defines at reset (§3.4): M-mode, MIE = 0,
    /// MPRV = 0, pc = `resetVector`; a0 = hart ID and a1 = `a1` as QEMU's boot ROM passes them.
    public func reset(pc resetVector: UInt64) {
        let hartID = state.pointee.mhartid
        state.pointee = HartState()
        state.pointee.mhartid = hartID
        state.pointee.pc = resetVector
        flushTLB()
        dropAllCode()
        updatePrivilegeKeys()
    }

    // MARK: - Interrupt state

    /// `mip` as software reads it: the writable bits plus the device lines, plus STIP from
    /// Sstc when it is enabled (Sstc spec: STIP then reflects stimecmp and is read-only).
    @inline(__always)
    func pendingInterrupts() -> UInt64 {
        state.pointee.mipSoftware | externalInterrupts.load(ordering: .relaxed)
    }

    /// Re-evaluates MTIP and (with Sstc) STIP against the current time.
    package func updateTimerInterrupts() {
        let now = timeBase.now()
        updateMachineTimerPending(now: now)
        if state.pointee.menvcfg & EnvConfig.stce != 0 {
            if now >= state.pointee.stimecmp {
                state.pointee.mipSoftware |= InterruptBits.stip
            } else {
                state.pointee.mipSoftware &= ~InterruptBits.stip
            }
        }
    }

    /// MTIP = (mtime >= mtimecmp), as the ACLINT's MTIMER drives it.
    private func updateMachineTimerPending(now: UInt64) {
        let mtip = now >= machineTimerCompare.load(ordering: .relaxed)
        let current = externalInterrupts.load(ordering: .relaxed)
        guard mtip != (current & InterruptBits.mtip != 0) else { return }
        if mtip {
            externalInterrupts.bitwiseOr(InterruptBits.mtip, ordering: .sequentiallyConsistent)
        } else {
            externalInterrupts.bitwiseAnd(~InterruptBits.mtip, ordering: .sequentiallyConsistent)
        }
    }

    /// The interrupt to take now, if any (Privileged §3.1.9: priority MEI, MSI, MTI, SEI, SSI,
    /// STI; M-level interrupts are taken when running below M or with MIE set; S-level ones,
    /// delegated through mideleg, below S or in S with SIE set, and never in M).
    @inline(__always)
    package func interruptToTake() -> InterruptCause? {
        let s = state.pointee
        let pending = pendingInterrupts() & s.mie
        if pending == 0 { return nil }
        let mLevel = pending & ~s.mideleg
        let mEnabled = s.privilege != .machine || s.mstatus & MStatus.mie != 0
        if mEnabled && mLevel != 0 { return Hart.highestPriority(mLevel) }
        let sLevel = pending & s.mideleg
        let sEnabled = s.privilege == .user || (s.privilege == .supervisor && s.mstatus & MStatus.sie != 0)
        if sEnabled && sLevel != 0 { return Hart.highestPriority(sLevel) }
        return nil
    }

    static let priorityOrder: [InterruptCause] = [
        .machineExternal, .machineSoftware, .machineTimer, .supervisorExternal, .supervisorSoftware, .supervisorTimer,
    ]

    static func highestPriority(_ bits: UInt64) -> InterruptCause? {
        for cause in priorityOrder where bits & cause.mask != 0 { return cause }
        return nil
    }

    // MARK: - Traps (Privileged §3.1.6.1, §3.3.1, §4.1.1)

    /// Enters the trap handler for `trap` taken at `pc`.
    package func takeTrap(_ trap: Trap, pc: UInt64) {
        let s = state
        let code = trap.cause & ~Trap.interruptBit
        let delegated = s.pointee.privilege != .machine
            && (trap.isInterrupt ? s.pointee.mideleg : s.pointee.medeleg) >> code & 1 != 0
        s.pointee.reservation = HartState.noReservation
        if delegated {
            s.pointee.scause = trap.cause
            s.pointee.sepc = pc
            s.pointee.stval = trap.tval
            var st = s.pointee.mstatus
            st = (st & ~MStatus.spie) | (st & MStatus.sie != 0 ? MStatus.spie : 0)
            st = (st & ~MStatus.spp) | (s.pointee.privilege == .supervisor ? MStatus.spp : 0)
            st &= ~MStatus.sie
            s.pointee.mstatus = st
            s.pointee.privilege = .supervisor
            s.pointee.pc = Hart.vector(s.pointee.stvec, trap: trap)
        } else {
            s.pointee.mcause = trap.cause
            s.pointee.mepc = pc
            s.pointee.mtval = trap.tval
            var st = s.pointee.mstatus
            st = (st & ~MStatus.mpie) | (st & MStatus.mie != 0 ? MStatus.mpie : 0)
            st = (st & ~MStatus.mpp) | UInt64(s.pointee.privilege.rawValue) << MStatus.mppShift
            st &= ~MStatus.mie
            s.pointee.mstatus = st
            s.pointee.privilege = .machine
            s.pointee.pc = Hart.vector(s.pointee.mtvec, trap: trap)
        }
        updatePrivilegeKeys()
        // QEMU 7.2's line, field for field (cause, epc and tval as 16 hex digits), so `-d int`
        // logs of the two compare with diff.
        DebugLog.log(.interrupts, "riscv_cpu_do_interrupt: hart:\(s.pointee.mhartid), async:\(trap.isInterrupt ? 1 : 0), "
            + "cause:\(Hart.hex16(code)), epc:0x\(Hart.hex16(pc)), tval:0x\(Hart.hex16(trap.tval)), desc=\(Hart.causeName(trap))")
    }

    /// `value` as 16 hex digits (QEMU's TARGET_FMT_lx).
    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// xtvec: MODE 0 = direct, 1 = vectored (interrupts go to BASE + 4 * cause).
    static func vector(_ tvec: UInt64, trap: Trap) -> UInt64 {
        let base = tvec & ~3
        if tvec & 3 == 1 && trap.isInterrupt { return base &+ 4 * (trap.cause & ~Trap.interruptBit) }
        return base
    }

    static func causeName(_ trap: Trap) -> String {
        let code = trap.cause & ~Trap.interruptBit
        if trap.isInterrupt {
            let names: [UInt64: String] = [1: "s_software", 3: "m_software", 5: "s_timer", 7: "m_timer", 9: "s_external", 11: "m_external"]
            return names[code] ?? "interrupt_\(code)"
        }
        let names: [UInt64: String] = [
            0: "misaligned_fetch", 1: "fault_fetch", 2: "illegal_instruction", 3: "breakpoint", 4: "misaligned_load",
            5: "fault_load", 6: "misaligned_store", 7: "fault_store", 8: "user_ecall", 9: "supervisor_ecall",
            11: "machine_ecall", 12: "exec_page_fault", 13: "load_page_fault", 15: "store_page_fault",
        ]
        return names[code] ?? "exception_\(code)"
    }

    // MARK: - Privilege-derived keys

    /// Recomputes the TLB keys for fetches (current privilege) and data accesses (MPRV: MPP's
    /// privilege in M-mode, §3.1.6.3). Called whenever privilege or mstatus changes.
    func updatePrivilegeKeys() {
        let s = state
        s.pointee.fetchKey = UInt64(s.pointee.privilege.rawValue)
        var dataPrivilege = s.pointee.privilege
        if dataPrivilege == .machine && s.pointee.mstatus & MStatus.mprv != 0 {
            dataPrivilege = PrivilegeMode(rawValue: UInt8((s.pointee.mstatus & MStatus.mpp) >> MStatus.mppShift)) ?? .user
        }
        // S-mode with SUM gets a key of its own, as QEMU gives it an MMU index of its own:
        // Linux sets and clears SUM around every user-memory access, and with SUM in the key
        // that switches between two sets of TLB entries instead of flushing them all.
        if dataPrivilege == .supervisor && s.pointee.mstatus & MStatus.sum != 0 {
            s.pointee.dataKey = Hart.supervisorUserKey
        } else {
            s.pointee.dataKey = UInt64(dataPrivilege.rawValue)
        }
    }

    /// The decoded-instruction slots of physical page `page`, created empty on first use.
    func decodedPage(_ page: UInt64) -> UnsafeMutablePointer<DecodedInstruction> {
        let recent = recentDecodedPage(page)
        if recent.pointee.page == page, let slots = recent.pointee.slots { return slots }
        let slots: UnsafeMutablePointer<DecodedInstruction>
        if let known = decodedPages[page] {
            slots = known
        } else {
            if decodedPages.count >= Hart.decodedPageLimit { freeDecodedPages() }
            registerCodePage(page)
            slots = .allocate(capacity: Hart.slotsPerPage)
            slots.initialize(repeating: .illegal(0, length: 0), count: Hart.slotsPerPage)
            decodedPages[page] = slots
        }
        recent.pointee = RecentDecodedPage(page: page, slots: slots)
        return slots
    }

    /// The `recentDecodedPages` entry physical page `page` would be in.
    private func recentDecodedPage(_ page: UInt64) -> UnsafeMutablePointer<RecentDecodedPage> {
        recentDecodedPages + Int((page >> 12) & UInt64(Hart.recentDecodedPagesSize - 1))
    }

    private func freeDecodedPage(_ page: UInt64, _ slots: UnsafeMutablePointer<DecodedInstruction>) {
        let recent = recentDecodedPage(page)
        if recent.pointee.page == page { recent.pointee = RecentDecodedPage() }
        slots.deinitialize(count: Hart.slotsPerPage)
        slots.deallocate()
    }

    /// Frees every decoded page (the cache is full); the pages stay registered as code.
    private func freeDecodedPages() {
        for (page, slots) in decodedPages { freeDecodedPage(page, slots) }
        decodedPages.removeAll(keepingCapacity: true)
    }

    /// Notes that this hart holds code from physical page `page` (decoded or translated) before
    /// reading it, so later writes to it move its generation; drops this hart's cached write
    /// translations if a page just became code.
    package func registerCodePage(_ page: UInt64) {
        guard codePages[page] == nil,
              let generation = memory.ram.registerCodePage(GuestAddress(page), hart: Int(state.pointee.mhartid)),
              let counter = memory.ram.codePageGenerationPointer(GuestAddress(page)) else { return }
        codePages[page] = CodePage(generation: generation, counter: counter)
    }

    /// Physical page `page` became code (this hart's or another's doing, called on that
    /// hart's thread): drop the write translations of it, so the next store there takes
    /// `storeSlow`, which notes it.
    ///
    /// SAFETY (threads): the owning thread may be filling or using these entries right now.
    /// Fields are read and tags cleared with atomic operations; an entry read torn at worst
    /// is dropped for nothing, and one filled for `page` after this scan is dropped by its
    /// filler, which checks the page again after publishing the tag (`resolve`).
    private func dropWriteTranslations(ofPhysicalPage page: UInt64) {
        let first = AccessType.write.rawValue * Hart.tlbSize
        for i in first..<(first + Hart.tlbSize) {
            let entry = UnsafeMutableRawPointer(tlb + i)
            if clx_atomic_load_u64(UnsafeMutableRawPointer(tlbPhysicalPages + i)) == page && clx_atomic_load_u64(entry + TLBEntry.tagOffset) != .max {
                clx_atomic_store_u64(entry + TLBEntry.tagOffset, .max)
            }
        }
    }

    /// FENCE.I (Zifencei), or a debugger's write: later fetches must see earlier stores.
    /// Drops the decoded instructions of every code page written since it was registered,
    /// and tells the engine (`codeGeneration`, `takeDroppedCodePages`).
    func synchronizeInstructionFetch() {
        codeGeneration &+= 1
        // One atomic load per code page (Linux runs FENCE.I tens of thousands of times in a
        // boot); the pages to drop are collected first, so the dictionary is not copied
        // while it is iterated.
        // SAFETY: each counter points into the guest memory's code-page table, mapped for the
        // memory's whole life (`GuestMemory.codePageGenerationPointer`), which outlives its harts.
        let written = codePages.compactMap { page, code in clx_atomic_load_u32(code.counter) != code.generation ? page : nil }
        for page in written {
            codePages[page] = nil
            memory.ram.unregisterCodePage(GuestAddress(page), hart: Int(state.pointee.mhartid))
            if let slots = decodedPages.removeValue(forKey: page) { freeDecodedPage(page, slots) }
            if collectsDroppedCodePages { droppedCodePages.append(page) }
        }
    }

    /// The pages FENCE.I dropped since the last call, for an engine's translations.
    package func takeDroppedCodePages() -> [UInt64] {
        defer { droppedCodePages.removeAll(keepingCapacity: true) }
        return droppedCodePages
    }

    /// Forgets all code (reset, end of life).
    func dropAllCode() {
        freeDecodedPages()
        for page in codePages.keys { memory.ram.unregisterCodePage(GuestAddress(page), hart: Int(state.pointee.mhartid)) }
        codePages.removeAll()
        droppedCodePages.removeAll()
        codeGeneration &+= 1
        codeResets &+= 1
    }

    /// Drops every cached translation (satp, PMP, SUM/MXR changes; sfence.vma).
    public func flushTLB() {
        for i in 0..<(Hart.tlbSize * 3) { tlb[i].tag = .max }
        flushCodeWriteTLB()
        // PMP writes come here too: the page-table pages' PMP answers may have changed.
        for i in 0..<Hart.pageTablePagesSize { pageTablePages[i] = PageTablePage() }
        decodePMP()
    }

    /// Drops the cached translations of one access type.
    func flushTLB(access: AccessType) {
        let first = access.rawValue * Hart.tlbSize
        for i in first..<(first + Hart.tlbSize) { tlb[i].tag = .max }
        if access == .write { flushCodeWriteTLB() }
    }

    private func flushCodeWriteTLB() {
        for i in 0..<Hart.codeWriteTLBSize { codeWriteTLB[i].tag = .max }
    }

    /// Drops cached translations of one virtual page (sfence.vma with rs1 != x0).
    func flushTLB(page vaddr: UInt64) {
        let vpn = vaddr >> 12
        let index = Int(vpn & UInt64(Hart.tlbSize - 1))
        codeWriteTLB[Int(vpn & UInt64(Hart.codeWriteTLBSize - 1))].tag = .max
        for kind in 0..<3 {
            let e = tlb + kind * Hart.tlbSize + index
            if e.pointee.tag >> 2 == vpn & (UInt64.max >> 2) { e.pointee.tag = .max }
        }
    }
}

/// Wires a device line to bits of a hart's `mip`.
final class HartInterruptLine: InterruptLine {
    let hart: Hart
    let bits: UInt64
    init(hart: Hart, bits: UInt64) {
        self.hart = hart
        self.bits = bits
    }
    func set(level: Bool) { hart.setInterrupt(bits, level: level) }
}
