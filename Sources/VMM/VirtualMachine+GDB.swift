import GDBStub
import GuestMemory
import Machines
import QMP
import RISCV

/// The machine as the GDB stub sees it (`-gdb`, `-s`): one thread per hart, registers and
/// target description from `RISCVDebugRegisters`, memory through the hart's MMU (or physical
/// with QEMU's `Qqemu.PhyMemMode:1`), breakpoints and watchpoints on the hart, which keeps
/// them across resets.
extension VirtualMachine: GDBTarget {
    /// GDB thread t is hart t - 1.
    public var threadIDs: [Int] { Array(1...setup.cpus) }

    public func threadDescription(_ thread: Int) -> String {
        "CPU#\(thread - 1) [\(runState == "running" ? "running" : "halted ")]"
    }

    public func targetDescription(annex: String) -> [UInt8]? { RISCVDebugRegisters.description(annex: annex) }

    public var generalRegisterCount: Int { RISCVDebugRegisters.generalCount }
    public var programCounterRegister: Int { RISCVDebugRegisters.pc }

    public func readRegister(thread: Int, number: Int) -> [UInt8]? {
        perform { board in Self.hart(thread, of: board).flatMap { RISCVDebugRegisters.read($0, number) } } ?? nil
    }

    public func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool {
        perform { board in Self.hart(thread, of: board).map { RISCVDebugRegisters.write($0, number, value) } ?? false } ?? false
    }

    public func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        perform { board -> [UInt8]? in
            guard let hart = Self.hart(thread, of: board) else { return nil }
            return physical ? try? hart.memory.ram.readBytes(at: GuestAddress(address), count: count)
                : hart.debugRead(virtual: address, count: count)
        } ?? nil
    }

    public func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        perform { board in
            guard let hart = Self.hart(thread, of: board) else { return false }
            return physical ? hart.debugWrite(physical: address, bytes: bytes) : hart.debugWrite(virtual: address, bytes: bytes)
        } ?? false
    }

    public func insertPoint(_ point: GDBPoint) -> Bool { changePoint(point, insert: true) }
    public func removePoint(_ point: GDBPoint) -> Bool { changePoint(point, insert: false) }

    private func changePoint(_ point: GDBPoint, insert: Bool) -> Bool {
        // Bounded: each watchpoint is checked on every data access, each breakpoint costs a
        // dictionary entry (a client looping on Z packets must not grow them without end).
        let accepted = state.withLock { s -> Bool in
            if insert {
                guard s.debugPoints.count < Self.maxDebugPoints else { return false }
                s.debugPoints.append(point)
                return true
            }
            guard let index = s.debugPoints.firstIndex(of: point) else { return false }
            s.debugPoints.remove(at: index)
            return true
        }
        guard accepted else { return false }
        _ = perform { board in Self.apply(point, insert: insert, to: board) }
        return true
    }

    static let maxDebugPoints = 1024

    /// The hart of GDB thread `thread` (1-based), if there is one.
    static func hart(_ thread: Int, of board: RISCVBoard) -> Hart? {
        board.harts.indices.contains(thread - 1) ? board.harts[thread - 1] : nil
    }

    /// Sets or clears `point` on every hart (with the machine stopped): GDB's points are the
    /// program's, whichever hart runs it.
    static func apply(_ point: GDBPoint, insert: Bool, to board: RISCVBoard) {
        let kind: Watchpoint.Kind
        switch point.kind {
        case .softwareBreakpoint, .hardwareBreakpoint:
            let kinds: BreakpointKinds = point.kind == .softwareBreakpoint ? .software : .hardware
            for hart in board.harts {
                if insert { hart.insertBreakpoint(at: point.address, kind: kinds) } else { hart.removeBreakpoint(at: point.address, kind: kinds) }
            }
            return
        case .writeWatchpoint: kind = .write
        case .readWatchpoint: kind = .read
        case .accessWatchpoint: kind = .access
        }
        let watchpoint = Watchpoint(address: point.address, length: point.length, kind: kind)
        for hart in board.harts {
            if insert { hart.insertWatchpoint(watchpoint) } else { hart.removeWatchpoint(watchpoint) }
        }
    }

    /// Hart `hart`'s debug stop as GDB reports it.
    static func stopEvent(_ stop: DebugStop, hart: Int) -> GDBStopEvent {
        switch stop {
        case .breakpoint(_, let kinds):
            return .breakpoint(thread: hart + 1, hardware: !kinds.contains(.software))
        case .watchpoint(let w, let address):
            let kind: GDBPoint.Kind = w.kind == .write ? .writeWatchpoint : w.kind == .read ? .readWatchpoint : .accessWatchpoint
            return .watchpoint(thread: hart + 1, kind: kind, address: address)
        }
    }

    public func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void) {
        state.withLock { $0.debugger = listener }
        stop()
    }

    public func resume(step thread: Int?) {
        state.withLock { $0.stepPending = thread.map { $0 - 1 } }
        cont()
    }

    public func interrupt() {
        // Already stopped (a stop crossed the Ctrl-C): report it anyway, since the debugger
        // waits for a stop reply; the session drops it if none is owed.
        if !pause() { emitDebug(.interrupted(thread: 1)) }
    }

    public func detach() {
        state.withLock { s in
            s.debugger = nil
            s.debugPoints.removeAll()
            s.stepPending = nil
        }
        _ = perform { board in for hart in board.harts { hart.removeAllDebugPoints() } }
        cont()
    }

    public func kill() { execute(.quit(reason: "host-qmp-quit")) }

    public func monitorCommand(_ line: String) -> String {
        var monitor = HumanMonitor(target: self)
        let output = monitor.execute(line)
        if output.quitRequested { execute(.quit(reason: "host-qmp-quit")) }
        return output.text.replacing("\r\n", with: "\n")
    }
}
