import GuestMemory

/// Which kinds of breakpoint sit at an address: a debugger may set a software (GDB `Z0`) and
/// a hardware (`Z1`) breakpoint at the same place; the stop reports the first.
public struct BreakpointKinds: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let software = BreakpointKinds(rawValue: 1)
    public static let hardware = BreakpointKinds(rawValue: 2)
}

/// A debugger's data watchpoint on virtual addresses `[address, address + length)`.
public struct Watchpoint: Hashable, Sendable {
    public enum Kind: Hashable, Sendable {
        case write, read, access
    }
    public var address: UInt64
    public var length: UInt64
    public var kind: Kind

    public init(address: UInt64, length: UInt64, kind: Kind) {
        self.address = address
        self.length = length
        self.kind = kind
    }
}

/// Why the hart stopped for the debugger.
public enum DebugStop: Equatable, Sendable {
    /// pc reached a breakpoint; the instruction there has not run.
    case breakpoint(pc: UInt64, kinds: BreakpointKinds)
    /// An instruction was about to access a watched range at `address` (the first watched
    /// byte it touches); it has not run yet, so pc still points at it.
    case watchpoint(Watchpoint, address: UInt64)
}

extension Trap {
    /// Not an exception: thrown by a data access that hits a watchpoint so the instruction
    /// stops before it has any effect; `run` returns `.debugStop` instead of taking a trap.
    /// Outside the spec's cause space (no exception code has bit 62 set).
    package static let debugStopCause: UInt64 = 1 << 62

    init(debugStop: ()) {
        cause = Trap.debugStopCause
        tval = 0
    }
}

extension Hart {
    // MARK: - Breakpoints and watchpoints (vCPU thread)

    /// Adds a breakpoint at virtual address `pc` (checked before each instruction).
    public func insertBreakpoint(at pc: UInt64, kind: BreakpointKinds) {
        breakpoints[pc, default: []].formUnion(kind)
        updateBreakpointFilter()
    }

    private func updateBreakpointFilter() {
        state.pointee.breakpointFilter = breakpoints.keys.reduce(0) { $0 | 1 << (($1 >> 1) & 63) }
    }

    /// Removes the breakpoint of `kind` at `pc`; false if there was none.
    @discardableResult
    public func removeBreakpoint(at pc: UInt64, kind: BreakpointKinds) -> Bool {
        guard var kinds = breakpoints[pc], !kinds.isDisjoint(with: kind) else { return false }
        kinds.subtract(kind)
        breakpoints[pc] = kinds.isEmpty ? nil : kinds
        updateBreakpointFilter()
        return true
    }

    public func insertWatchpoint(_ watchpoint: Watchpoint) {
        watchpoints.append(watchpoint)
        state.pointee.checkWatchpoints = true
        flushTLB()  // cached data pages would bypass the check
    }

    @discardableResult
    public func removeWatchpoint(_ watchpoint: Watchpoint) -> Bool {
        guard let index = watchpoints.firstIndex(of: watchpoint) else { return false }
        watchpoints.remove(at: index)
        state.pointee.checkWatchpoints = !watchpoints.isEmpty
        return true
    }

    /// Forgets every breakpoint and watchpoint (a debugger detached).
    public func removeAllDebugPoints() {
        breakpoints.removeAll()
        watchpoints.removeAll()
        state.pointee.breakpointFilter = 0
        state.pointee.checkWatchpoints = false
    }

    /// Throws `debugStopCause` if `[vaddr, vaddr + size)` touches a watchpoint that `access`
    /// triggers (reads trigger read and access watchpoints, writes write and access ones).
    func checkWatchpoints(_ vaddr: UInt64, size: UInt64, _ access: AccessType) throws(Trap) {
        let last = vaddr &+ size &- 1
        for w in watchpoints {
            switch (w.kind, access) {
            case (.access, _), (.read, .read), (.write, .write): break
            default: continue
            }
            let wLast = w.address &+ w.length &- 1
            guard vaddr <= wLast && last >= w.address else { continue }
            lastDebugStop = .watchpoint(w, address: max(vaddr, w.address))
            throw Trap(debugStop: ())
        }
    }

    // MARK: - Single step

    /// Executes one instruction (or takes the trap it raises) with interrupts held off, as
    /// QEMU's gdbstub steps by default (SSTEP_NOIRQ): a step lands on the next instruction,
    /// not in an interrupt handler. Breakpoints at the starting pc are stepped over. Returns
    /// the watchpoint the instruction hit, in which case it did not run.
    public func step() -> DebugStop? {
        let s = state
        let pc = s.pointee.pc
        updateTimerInterrupts()
        do throws(Trap) {
            try executeInstruction(at: pc, slots: decodedPageForFetch(pc), tracing: Hart.isTracing)
        } catch {
            if error.cause == Trap.debugStopCause { return lastDebugStop }
            takeTrap(error, pc: pc)
        }
        // WFI completes when stepped: the debugger sees the next instruction.
        s.pointee.waiting = false
        return nil
    }

    // MARK: - Debugger access to state

    /// Reads a CSR as M-mode would, without the checks a CSR instruction makes (privilege,
    /// counter enables, FS); nil if the hart does not implement it.
    public func debugReadCSR(_ number: UInt16) -> UInt64? {
        switch number {
        case CSRNumber.fflags: return UInt64(state.pointee.fflags)
        case CSRNumber.frm: return UInt64(state.pointee.frm)
        case CSRNumber.fcsr: return UInt64(state.pointee.frm) << 5 | UInt64(state.pointee.fflags)
        default: return asMachineMode { () throws(Trap) in try readCSR(number, raw: 0) }
        }
    }

    /// Writes a CSR as an M-mode CSR instruction would (WARL fields legalised, side effects
    /// such as TLB flushes included); false if the CSR does not exist or is read-only.
    public func debugWriteCSR(_ number: UInt16, _ value: UInt64) -> Bool {
        let s = state
        switch number {
        case CSRNumber.fflags: s.pointee.fflags = UInt8(value & 0x1f)
        case CSRNumber.frm: s.pointee.frm = UInt8(value & 7)
        case CSRNumber.fcsr:
            s.pointee.fflags = UInt8(value & 0x1f)
            s.pointee.frm = UInt8((value >> 5) & 7)
        default: return asMachineMode { () throws(Trap) in try writeCSR(number, value, raw: 0) } != nil
        }
        return true
    }

    /// Runs `body` with the hart in M-mode, restoring the mode after.
    private func asMachineMode<T>(_ body: () throws(Trap) -> T) -> T? {
        let privilege = state.pointee.privilege
        state.pointee.privilege = .machine
        defer {
            state.pointee.privilege = privilege
            updatePrivilegeKeys()
        }
        return try? body()
    }

    /// Sets the privilege mode (a debugger writing GDB's `priv` register).
    public func debugSetPrivilege(_ mode: PrivilegeMode) {
        state.pointee.privilege = mode
        updatePrivilegeKeys()
        flushTLB()
    }

    /// Reads `count` bytes of guest RAM at virtual address `vaddr`, translated as the hart's
    /// data accesses are now (`debugTranslate`); nil if any byte does not map to RAM.
    public func debugRead(virtual vaddr: UInt64, count: Int) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var done = 0
        while done < count {
            let address = vaddr &+ UInt64(done)
            let chunk = min(count - done, Int(Hart.pageSize - (address & (Hart.pageSize - 1))))
            guard let physical = debugTranslate(address),
                  let bytes = try? memory.ram.readBytes(at: GuestAddress(physical), count: chunk) else { return nil }
            out += bytes
            done += chunk
        }
        return out
    }

    /// Writes guest RAM at virtual address `vaddr`; false (and nothing written) if any byte
    /// does not map to RAM. Drops decoded instructions, since the bytes may be code.
    public func debugWrite(virtual vaddr: UInt64, bytes: [UInt8]) -> Bool {
        var pieces: [(physical: UInt64, range: Range<Int>)] = []
        var done = 0
        while done < bytes.count {
            let address = vaddr &+ UInt64(done)
            let chunk = min(bytes.count - done, Int(Hart.pageSize - (address & (Hart.pageSize - 1))))
            guard let physical = debugTranslate(address),
                  memory.ram.hostPointer(at: GuestAddress(physical), count: UInt64(chunk)) != nil else { return false }
            pieces.append((physical, done..<done + chunk))
            done += chunk
        }
        for piece in pieces {
            guard (try? memory.ram.writeBytes(bytes[piece.range], at: GuestAddress(piece.physical))) != nil else { return false }
        }
        synchronizeInstructionFetch()
        return true
    }

    /// `writeBytes` for physical addresses, also dropping decoded instructions.
    public func debugWrite(physical address: UInt64, bytes: [UInt8]) -> Bool {
        guard (try? memory.ram.writeBytes(bytes, at: GuestAddress(address))) != nil else { return false }
        synchronizeInstructionFetch()
        return true
    }
}
