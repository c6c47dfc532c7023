import GDBStub
import Machines
import QMP

/// The machine as the GDB stub sees it (`-gdb`, `-s`): GDB thread t is vCPU t - 1; registers,
/// memory and points come from the board's `BoardDebugger`, always with the vCPUs parked (the
/// debugger normally asks while the machine is stopped; if it runs, a `monitor` command
/// meanwhile, it is paused for the question and resumed). A single step lets one vCPU run
/// while the others stay parked.
extension VMM: GDBTarget {
    public var threadIDs: [Int] { Array(1...max(1, setup.cpus)) }

    public func threadDescription(_ thread: Int) -> String {
        "CPU#\(thread - 1) [\(runState == "running" ? "running" : "halted ")]"
    }

    public func targetDescription(annex: String) -> [UInt8]? { debugger.targetDescription(annex: annex) }
    public var generalRegisterCount: Int { debugger.generalRegisterCount }
    public var programCounterRegister: Int { debugger.programCounterRegister }

    public func readRegister(thread: Int, number: Int) -> [UInt8]? {
        withParkedBoard { debugger.readRegister($0, vcpu: thread - 1, number: number) } ?? nil
    }

    public func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool {
        withParkedBoard { debugger.writeRegister($0, vcpu: thread - 1, number: number, value: value) } ?? false
    }

    public func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        withParkedBoard { debugger.readMemory($0, vcpu: thread - 1, address: address, count: count, physical: physical) } ?? nil
    }

    public func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        withParkedBoard { debugger.writeMemory($0, vcpu: thread - 1, address: address, bytes: bytes, physical: physical) } ?? false
    }

    public func insertPoint(_ point: GDBPoint) -> Bool {
        withParkedBoard { debugger.insert(point, on: $0) } ?? debugger.insert(point, on: nil)
    }

    public func removePoint(_ point: GDBPoint) -> Bool {
        withParkedBoard { debugger.remove(point, on: $0) } ?? debugger.remove(point, on: nil)
    }

    /// Called by `run()` for each new board, before its vCPUs start: debug exits come here,
    /// and the points of the debugger (if one is attached) go on the new board.
    func prepareForDebugger(_ board: Machine) {
        board.setDebugHandler { [weak self] vcpu, event in self?.debugEvent(vcpu: vcpu, event) }
        if state.withLock({ $0.debugListener != nil }) { debugger.prepare(board) }
    }

    /// On the reporting vCPU's thread: the board has paused itself; tell the debugger why.
    private func debugEvent(vcpu: Int, _ event: Machine.DebugEvent) {
        // A late exit while the debugger leaves: nobody to tell. The board stays paused, for
        // `detach` lets it run once the points are gone (resuming here would let the vCPU hit
        // the same breakpoint again at once, and again, while `detach` waits for it to park).
        let reported = state.withLock { s -> Bool in
            guard s.debugListener != nil else {
                s.steppingVCPU = nil
                return false
            }
            // The machine stopped already (another vCPU's point at the same moment, or a
            // `stop`): GDB's all-stop mode wants one stop reply. This vCPU has not executed
            // the instruction at its point, so it meets the point again when the machine runs.
            guard !s.life.paused else { return false }
            s.life.paused = true
            s.life.runState = "debug"
            s.steppingVCPU = nil
            return true
        }
        guard reported else { return }
        emit(.stop)
        report(debugger.stopEvent(vcpu: vcpu, event))
    }

    // MARK: - Run control

    public func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void) {
        state.withLock { s in
            s.debugListener = listener
            // A debugger that connects before the board exists (no -S) finds it stopped too.
            if s.life.runState == "prelaunch" { s.life.paused = true }
        }
        stop()
    }

    public func resume(step thread: Int?) {
        let index = thread.map { $0 - 1 }
        guard withParkedBoard({ debugger.prepareRun($0, stepping: index) }) ?? false || index == nil else {
            // No single step without the accelerator's help: stop at once (SIGINT) rather than
            // run away or claim a step that did not happen.
            report(.interrupted(thread: thread ?? 1))
            return
        }
        guard let index else { return cont() }
        let stepping = transitions.withLock { _ -> Bool in
            let (allowed, board) = state.withLock { s -> (Bool, Machine?) in
                guard s.life.resumeForStep() else { return (false, nil) }
                s.steppingVCPU = index
                // Work on the parked board (migration, monitor) lets the step go when it ends.
                return (true, s.parkers == 0 ? s.board : nil)
            }
            board?.step(vcpu: index)
            return allowed
        }
        // A machine held by a migration, a snapshot or a power-off does not step: say so.
        guard stepping else { return report(.interrupted(thread: index + 1)) }
        emit(.resume)
    }

    /// A debugger's single step that ended in a reset (the stepped instruction's, or a
    /// `system_reset` meanwhile) is over: the vCPU's next instruction is the reset vector's.
    /// The next board starts stopped and the debugger hears of the step, instead of waiting
    /// for one the new board would never take.
    func endStepAtReset() {
        let vcpu = transitions.withLock { _ in
            state.withLock { s -> Int? in
                guard let vcpu = s.steppingVCPU, s.debugListener != nil else { return nil }
                s.steppingVCPU = nil
                return s.life.stop(as: "debug") ? vcpu : nil
            }
        }
        guard let vcpu else { return }
        emit(.stop)
        report(.stepped(thread: vcpu + 1))
    }

    public func interrupt() {
        // Already stopped (a stop crossed the Ctrl-C): report it anyway, since the debugger
        // waits for a stop reply; the session drops it if none is owed.
        if !stop() { report(.interrupted(thread: 1)) }
    }

    public func detach() {
        // A step the debugger left behind is not taken again: the machine simply runs on.
        state.withLock { s in
            s.debugListener = nil
            s.steppingVCPU = nil
        }
        if withParkedBoard({ debugger.detach(from: $0) }) == nil { debugger.detach(from: nil) }
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
