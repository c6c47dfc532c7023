import CLinux
import GDBStub
import GuestMemory
import KVM
import Machines
import QMP
import Synchronization

/// What the GDB stub set on a KVM machine; it outlives the board, so a guest reset (which
/// builds a new board) keeps the debugger's points.
final class KVMDebugger: Sendable {
    struct SoftwareBreakpoint {
        /// Where the int3 byte went, and the byte it replaced.
        var physical: UInt64
        var original: UInt8
    }

    struct State {
        var listener: (@Sendable (GDBStopEvent) -> Void)?
        /// `Z0`, by the address GDB gave.
        var softwareBreakpoints: [UInt64: SoftwareBreakpoint] = [:]
        /// `Z1`, `Z2`, `Z4` in DR0-DR3.
        var hardware = X86HardwareDebug()
    }

    let state = Mutex(State())
    /// PVM (kvm_pvm) serves /dev/kvm: some points cannot work (see `insertPoint`).
    let onPVM = KVMFlavour.detect() == .pvm

    func report(_ event: GDBStopEvent) { state.withLock { $0.listener }?(event) }

    /// The KVM_SET_GUEST_DEBUG control word for one vCPU (api.rst 4.59). A step blocks
    /// interrupts when KVM can (KVM_GUESTDBG_BLOCKIRQ, as QEMU does): otherwise a pending timer
    /// interrupt would make `stepi` land in its handler instead of the next instruction.
    func control(stepping: Bool, supported: UInt32) -> UInt32 {
        state.withLock { s in
            var control: UInt32 = 0
            if !s.softwareBreakpoints.isEmpty { control |= UInt32(KVM_GUESTDBG_USE_SW_BP) }
            if !s.hardware.isEmpty { control |= UInt32(KVM_GUESTDBG_USE_HW_BP) }
            if stepping { control |= UInt32(KVM_GUESTDBG_SINGLESTEP) | (supported & UInt32(KVM_GUESTDBG_BLOCKIRQ)) }
            return control == 0 ? 0 : control | UInt32(KVM_GUESTDBG_ENABLE)
        }
    }
}

/// The x86-64 machine as the GDB stub sees it (`-gdb`, `-s` with `-M microvm -accel kvm`): one
/// thread per vCPU, registers and target description from `X86DebugRegisters`, memory through
/// the vCPU's paging (KVM_TRANSLATE) or physical with `Qqemu.PhyMemMode:1`. Breakpoints:
/// `Z0` writes int3 (0xcc) into guest memory and KVM reports the #BP (KVM_GUESTDBG_USE_SW_BP);
/// `Z1`, `Z2` and `Z4` take debug registers DR0-DR3 (KVM_GUESTDBG_USE_HW_BP); x86 has no
/// read-only data breakpoint, so `Z3` is refused, as QEMU refuses it. Single steps use
/// KVM_GUESTDBG_SINGLESTEP on the stepping vCPU alone while the others stay parked.
///
/// vCPU ioctls are issued from the stub's thread while the vCPUs are parked (KVM serializes
/// them with KVM_RUN per vCPU), as the monitor's `info registers` does.
extension KVMMachine: GDBTarget {
    private var board: X86MicroVM? { state.withLock { $0.board } }

    public var threadIDs: [Int] { Array(1...max(1, board?.vcpus.count ?? 1)) }

    public func threadDescription(_ thread: Int) -> String {
        "CPU#\(thread - 1) [\(runState == "running" ? "running" : "halted ")]"
    }

    public func targetDescription(annex: String) -> [UInt8]? { X86DebugRegisters.description(annex: annex) }
    public var generalRegisterCount: Int { X86DebugRegisters.count }
    public var programCounterRegister: Int { X86DebugRegisters.rip }

    /// Runs `body` with every vCPU parked: the debugger normally asks while the machine is
    /// stopped; if it runs (a `monitor` command meanwhile), it is paused for `body` and resumed.
    private func withParkedVCPUs<T>(_ body: (X86MicroVM) throws -> T?) -> T? {
        withParkedBoard { board in (try? body(board)) ?? nil } ?? nil
    }

    private func withVCPU<T>(_ thread: Int, _ body: (X86MicroVM, KVMVcpu) throws -> T?) -> T? {
        withParkedVCPUs { board in
            guard board.vcpus.indices.contains(thread - 1) else { return nil }
            return try body(board, board.vcpus[thread - 1])
        }
    }

    public func readRegister(thread: Int, number: Int) -> [UInt8]? {
        withVCPU(thread) { X86DebugRegisters.read($1, number) }
    }

    public func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool {
        withVCPU(thread) { X86DebugRegisters.write($1, number, value) } ?? false
    }

    /// The guest-physical pieces of `[address, address + count)` as `vcpu` maps them now, one
    /// per page (or one piece when `vcpu` is nil: physical addresses).
    private static func pieces(_ vcpu: KVMVcpu?, _ address: UInt64, _ count: Int) throws -> [(physical: UInt64, count: Int)]? {
        guard let vcpu else { return [(address, count)] }
        var pieces: [(UInt64, Int)] = []
        var linear = address
        var left = count
        while left > 0 {
            let chunk = min(left, 0x1000 - Int(linear & 0xfff))
            guard let (physical, _) = try vcpu.translate(linear) else { return nil }
            pieces.append((physical, chunk))
            linear &+= UInt64(chunk)
            left -= chunk
        }
        return pieces
    }

    public func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        withVCPU(thread) { board, vcpu in
            guard let pieces = try Self.pieces(physical ? nil : vcpu, address, count) else { return nil }
            return try pieces.flatMap { try board.debugMemory.readBytes(at: GuestAddress($0.physical), count: $0.count) }
        }
    }

    public func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        withVCPU(thread) { board, vcpu -> Bool? in
            guard let pieces = try Self.pieces(physical ? nil : vcpu, address, bytes.count) else { return false }
            // Check every piece first: a write that faults halfway changes nothing.
            guard pieces.allSatisfy({ board.debugMemory.isRAM(GuestAddress($0.physical), count: UInt64($0.count)) }) else { return false }
            var offset = 0
            for piece in pieces {
                try board.debugMemory.writeBytes(bytes[offset..<offset + piece.count], at: GuestAddress(piece.physical))
                offset += piece.count
            }
            return true
        } ?? false
    }

    // MARK: - Breakpoints and watchpoints

    /// The debug-register slot a `Z1`/`Z2`/`Z4` point takes; nil for the others.
    private static func slot(_ point: GDBPoint) -> X86HardwareDebug.Slot? {
        switch point.kind {
        case .hardwareBreakpoint: return .init(address: point.address, condition: .execution, length: 1)
        case .writeWatchpoint: return .init(address: point.address, condition: .write, length: point.length)
        case .accessWatchpoint: return .init(address: point.address, condition: .readWrite, length: point.length)
        case .softwareBreakpoint, .readWatchpoint: return nil
        }
    }

    public func insertPoint(_ point: GDBPoint) -> Bool {
        let inserted: Bool
        switch point.kind {
        case .readWatchpoint:
            return false  // SDM Vol. 3B 18.2.4: R/W 01b is writes, 11b reads or writes; none is reads only
        case .softwareBreakpoint:
            inserted = withVCPU(1) { board, vcpu -> Bool? in
                // PVM (kvm_pvm) emulates guest kernel mode and cannot emulate int3 there: the
                // guest would end with KVM_EXIT_INTERNAL_ERROR at the breakpoint (measured), so
                // GDB is told no and `hbreak` remains.
                if debugger.onPVM { return false }
                if debugger.state.withLock({ $0.softwareBreakpoints[point.address] != nil }) { return true }
                guard let physical = try vcpu.translate(point.address)?.physical else { return false }
                let original = try board.debugMemory.read(UInt8.self, at: GuestAddress(physical))
                try board.debugMemory.write(UInt8(0xcc), at: GuestAddress(physical))  // int3 (SDM Vol. 2A INT n/INT3)
                debugger.state.withLock { $0.softwareBreakpoints[point.address] = .init(physical: physical, original: original) }
                return true
            } ?? false
        case .writeWatchpoint where debugger.onPVM, .accessWatchpoint where debugger.onPVM:
            // PVM runs guest kernel mode in KVM's instruction emulator, which checks only
            // instruction breakpoints (x86.c kvm_vcpu_check_breakpoint), never data ones: the
            // watchpoint would never fire (measured). GDB can fall back to software watchpoints
            // (`set can-use-hw-watchpoints 0`), which single-step.
            return false
        case .hardwareBreakpoint, .writeWatchpoint, .accessWatchpoint:
            guard let slot = Self.slot(point) else { return false }
            inserted = debugger.state.withLock { $0.hardware.insert(slot) != nil }
        }
        guard inserted else { return false }
        // KVM refusing guest debugging (an old or restricted host) fails the Z packet.
        if applyGuestDebug(stepping: nil) { return true }
        _ = removePoint(point)
        return false
    }

    public func removePoint(_ point: GDBPoint) -> Bool {
        switch point.kind {
        case .readWatchpoint:
            return false
        case .softwareBreakpoint:
            guard let breakpoint = debugger.state.withLock({ $0.softwareBreakpoints.removeValue(forKey: point.address) }) else { return false }
            _ = withParkedVCPUs { board in try board.debugMemory.write(breakpoint.original, at: GuestAddress(breakpoint.physical)) }
        case .hardwareBreakpoint, .writeWatchpoint, .accessWatchpoint:
            guard let slot = Self.slot(point), debugger.state.withLock({ $0.hardware.remove(slot) }) else { return false }
        }
        _ = applyGuestDebug(stepping: nil)
        return true
    }

    /// KVM_SET_GUEST_DEBUG on every vCPU of the current board: the debug registers and
    /// breakpoint flags on all, single-stepping on `stepping` (a vCPU index) only.
    private func applyGuestDebug(stepping: Int?) -> Bool {
        withParkedVCPUs { board in applyGuestDebug(board, stepping: stepping) } ?? false
    }

    private func applyGuestDebug(_ board: X86MicroVM, stepping: Int?) -> Bool {
        let hardware = debugger.state.withLock { $0.hardware }
        let supported = board.supportedGuestDebugFlags
        for vcpu in board.vcpus {
            do {
                try vcpu.setGuestDebug(control: debugger.control(stepping: vcpu.id == stepping, supported: supported),
                                       debugRegisters: hardware)
            } catch {
                return false
            }
        }
        return true
    }

    /// Called by `run()` for each new board, before its vCPUs start: debug exits come to the
    /// stub, and the points of the debugger (if one is attached) are set on the new RAM and vCPUs.
    func prepareForDebugger(_ board: X86MicroVM) {
        board.setDebugHandler { [weak self] vcpu, exception, dr6 in
            self?.debugExit(vcpu: vcpu, exception: exception, dr6: dr6)
        }
        // New vCPUs start with guest debugging off: without a debugger there is nothing to set.
        let (attached, points) = debugger.state.withLock { ($0.listener != nil, $0.softwareBreakpoints) }
        guard attached else { return }
        for (address, breakpoint) in points {
            guard let original = try? board.debugMemory.read(UInt8.self, at: GuestAddress(breakpoint.physical)),
                  (try? board.debugMemory.write(UInt8(0xcc), at: GuestAddress(breakpoint.physical))) != nil else { continue }
            debugger.state.withLock { $0.softwareBreakpoints[address]?.original = original }
        }
        _ = applyGuestDebug(board, stepping: nil)
    }

    /// On the reporting vCPU's thread: the board has paused itself; tell the debugger why
    /// (Intel SDM Vol. 3B 18.2.3: DR6's Bn bits name the debug register that hit, BS a step).
    private func debugExit(vcpu: Int, exception: UInt32, dr6: UInt64) {
        let thread = vcpu + 1
        let (hardware, attached) = debugger.state.withLock { ($0.hardware, $0.listener != nil) }
        // A late exit after the debugger left (its points are gone): nobody to stop for.
        guard attached else { return board?.resume() ?? () }
        let event: GDBStopEvent
        if exception == 3 {
            event = .breakpoint(thread: thread, hardware: false)
        } else if let slot = hardware.hit(dr6: dr6) {
            switch slot.condition {
            case .execution: event = .breakpoint(thread: thread, hardware: true)
            case .write: event = .watchpoint(thread: thread, kind: .writeWatchpoint, address: slot.address)
            case .readWrite: event = .watchpoint(thread: thread, kind: .accessWatchpoint, address: slot.address)
            }
        } else {
            event = .stepped(thread: thread)
        }
        state.withLock { s in
            s.life.paused = true
            s.life.runState = "debug"
        }
        emit(.stop)
        debugger.report(event)
    }

    // MARK: - Run control

    public func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void) {
        debugger.state.withLock { $0.listener = listener }
        // A debugger that connects before the board exists (no -S) finds it stopped too.
        state.withLock { s in if s.life.runState == "prelaunch" { s.life.paused = true } }
        stop()
    }

    public func resume(step thread: Int?) {
        let index = thread.map { $0 - 1 }
        guard applyGuestDebug(stepping: index) || index == nil else {
            // No single step without KVM's help: stop at once (SIGINT) rather than run away or
            // claim a step that did not happen.
            debugger.report(.interrupted(thread: thread ?? 1))
            return
        }
        guard let index else { return cont() }
        let board = state.withLock { s -> X86MicroVM? in
            s.life.paused = false
            s.life.runState = "running"
            return s.board
        }
        emit(.resume)
        board?.step(vcpu: index)
    }

    public func interrupt() {
        // Already stopped (a stop crossed the Ctrl-C): report it anyway, since the debugger
        // waits for a stop reply; the session drops it if none is owed.
        stop()
        debugger.report(.interrupted(thread: 1))
    }

    public func detach() {
        let breakpoints = debugger.state.withLock { s in
            defer { s = KVMDebugger.State() }
            return s.softwareBreakpoints.values
        }
        _ = withParkedVCPUs { board in
            for breakpoint in breakpoints { try? board.debugMemory.write(breakpoint.original, at: GuestAddress(breakpoint.physical)) }
            return applyGuestDebug(board, stepping: nil)
        }
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
