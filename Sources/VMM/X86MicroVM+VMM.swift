import CLinux
import GDBStub
import GuestMemory
import KVM
import Machines
import QMP
import Synchronization

/// The microvm under the VMM: vCPUs named as QEMU's microvm names them, `info registers`, and
/// the GDB stub through `KVMDebugger`.
extension X86MicroVM: ManagedBoard {
    package typealias Debugger = KVMDebugger

    package static var targetArch: String { "x86_64" }
    /// The microVM runs on KVM.
    package static var kvmEnabled: Bool { true }

    package static func monitorCPU(index: Int, threadID: Int) -> MonitorCPU {
        MonitorCPU(index: index, threadID: threadID, target: "x86_64", qomPath: "/machine/unattached/device[\(index)]")
    }

    /// `info registers [-a]` (KVM_GET_REGS waits for KVM_RUN to return: the vCPUs are parked).
    package static func machineView(_ view: MachineView, cpuIndex: Int) -> (@Sendable (X86MicroVM) -> String)? {
        guard case .registers(let all) = view else { return nil }
        return { board in
            if all { return board.vcpus.enumerated().map { "\nCPU#\($0.offset)\n" + $0.element.registerDump() + "\n" }.joined() }
            return board.vcpus.indices.contains(cpuIndex) ? board.vcpus[cpuIndex].registerDump() + "\n" : "no such CPU\n"
        }
    }
}

/// The x86-64 side of the GDB stub (`-gdb`, `-s` with `-M microvm -accel kvm`): registers and
/// target description from `X86DebugRegisters`, memory through the vCPU's paging
/// (KVM_TRANSLATE) or physical with `Qqemu.PhyMemMode:1`. Breakpoints: `Z0` writes int3 (0xcc)
/// into guest memory and KVM reports the #BP (KVM_GUESTDBG_USE_SW_BP); `Z1`, `Z2` and `Z4` take
/// debug registers DR0-DR3 (KVM_GUESTDBG_USE_HW_BP); x86 has no read-only data breakpoint, so
/// `Z3` is refused, as QEMU refuses it. Single steps use KVM_GUESTDBG_SINGLESTEP on the
/// stepping vCPU alone while the others stay parked. It outlives the board, so a guest reset
/// (which builds a new board) keeps the debugger's points.
///
/// vCPU ioctls are issued from the stub's thread while the vCPUs are parked (KVM serializes
/// them with KVM_RUN per vCPU), as the monitor's `info registers` does.
package final class KVMDebugger: BoardDebugger {
    package typealias Machine = X86MicroVM

    struct SoftwareBreakpoint {
        /// Where the int3 byte went, and the byte it replaced.
        var physical: UInt64
        var original: UInt8
    }

    struct State {
        /// `Z0`, by the address GDB gave.
        var softwareBreakpoints: [UInt64: SoftwareBreakpoint] = [:]
        /// `Z1`, `Z2`, `Z4` in DR0-DR3.
        var hardware = X86HardwareDebug()
    }

    let state = Mutex(State())
    /// PVM (kvm_pvm) serves /dev/kvm: some points cannot work (see `insert`).
    let onPVM = KVMFlavour.host == .pvm

    package init() {}

    /// The KVM_SET_GUEST_DEBUG control word for one vCPU (api.rst 4.59). A step blocks
    /// interrupts when KVM can (KVM_GUESTDBG_BLOCKIRQ, as QEMU does): otherwise a pending timer
    /// interrupt would make `stepi` land in its handler instead of the next instruction.
    package func control(stepping: Bool, supported: UInt32) -> UInt32 {
        state.withLock { s in
            var control: UInt32 = 0
            if !s.softwareBreakpoints.isEmpty { control |= UInt32(KVM_GUESTDBG_USE_SW_BP) }
            if !s.hardware.isEmpty { control |= UInt32(KVM_GUESTDBG_USE_HW_BP) }
            if stepping { control |= UInt32(KVM_GUESTDBG_SINGLESTEP) | (supported & UInt32(KVM_GUESTDBG_BLOCKIRQ)) }
            return control == 0 ? 0 : control | UInt32(KVM_GUESTDBG_ENABLE)
        }
    }

    package func targetDescription(annex: String) -> [UInt8]? { X86DebugRegisters.description(annex: annex) }
    package var generalRegisterCount: Int { X86DebugRegisters.count }
    package var programCounterRegister: Int { X86DebugRegisters.rip }

    private static func vcpu(_ board: X86MicroVM, _ index: Int) -> KVMVcpu? {
        board.vcpus.indices.contains(index) ? board.vcpus[index] : nil
    }

    package func readRegister(_ board: X86MicroVM, vcpu: Int, number: Int) -> [UInt8]? {
        Self.vcpu(board, vcpu).flatMap { X86DebugRegisters.read($0, number) }
    }

    package func writeRegister(_ board: X86MicroVM, vcpu: Int, number: Int, value: [UInt8]) -> Bool {
        Self.vcpu(board, vcpu).map { X86DebugRegisters.write($0, number, value) } ?? false
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

    package func readMemory(_ board: X86MicroVM, vcpu: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        guard let cpu = Self.vcpu(board, vcpu),
              let pieces = try? Self.pieces(physical ? nil : cpu, address, count) else { return nil }
        return try? pieces.flatMap { try board.debugMemory.readBytes(at: GuestAddress($0.physical), count: $0.count) }
    }

    package func writeMemory(_ board: X86MicroVM, vcpu: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        guard let cpu = Self.vcpu(board, vcpu),
              let pieces = try? Self.pieces(physical ? nil : cpu, address, bytes.count) else { return false }
        // Check every piece first: a write that faults halfway changes nothing.
        guard pieces.allSatisfy({ board.debugMemory.isRAM(GuestAddress($0.physical), count: UInt64($0.count)) }) else { return false }
        var offset = 0
        for piece in pieces {
            guard (try? board.debugMemory.writeBytes(bytes[offset..<offset + piece.count], at: GuestAddress(piece.physical))) != nil else { return false }
            offset += piece.count
        }
        return true
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

    package func insert(_ point: GDBPoint, on board: X86MicroVM?) -> Bool {
        switch point.kind {
        case .readWatchpoint:
            return false  // SDM Vol. 3B 18.2.4: R/W 01b is writes, 11b reads or writes; none is reads only
        case .softwareBreakpoint:
            // PVM (kvm_pvm) emulates guest kernel mode and cannot emulate int3 there: the
            // guest would end with KVM_EXIT_INTERNAL_ERROR at the breakpoint (measured), so
            // GDB is told no and `hbreak` remains.
            guard !onPVM, let board, let vcpu = board.vcpus.first else { return false }
            if state.withLock({ $0.softwareBreakpoints[point.address] != nil }) { return true }
            guard let physical = (try? vcpu.translate(point.address))??.physical,
                  let original = try? board.debugMemory.read(UInt8.self, at: GuestAddress(physical)),
                  (try? board.debugMemory.write(UInt8(0xcc), at: GuestAddress(physical))) != nil  // int3 (SDM Vol. 2A INT n/INT3)
            else { return false }
            state.withLock { $0.softwareBreakpoints[point.address] = .init(physical: physical, original: original) }
        case .writeWatchpoint where onPVM, .accessWatchpoint where onPVM:
            // PVM runs guest kernel mode in KVM's instruction emulator, which checks only
            // instruction breakpoints (x86.c kvm_vcpu_check_breakpoint), never data ones: the
            // watchpoint would never fire (measured). GDB can fall back to software watchpoints
            // (`set can-use-hw-watchpoints 0`), which single-step.
            return false
        case .hardwareBreakpoint, .writeWatchpoint, .accessWatchpoint:
            guard let slot = Self.slot(point), state.withLock({ $0.hardware.insert(slot) != nil }) else { return false }
        }
        // KVM refusing guest debugging (an old or restricted host) fails the Z packet.
        guard let board else { return true }
        if prepareRun(board, stepping: nil) { return true }
        _ = remove(point, on: board)
        return false
    }

    package func remove(_ point: GDBPoint, on board: X86MicroVM?) -> Bool {
        switch point.kind {
        case .readWatchpoint:
            return false
        case .softwareBreakpoint:
            guard let breakpoint = state.withLock({ $0.softwareBreakpoints.removeValue(forKey: point.address) }) else { return false }
            _ = try? board?.debugMemory.write(breakpoint.original, at: GuestAddress(breakpoint.physical))
        case .hardwareBreakpoint, .writeWatchpoint, .accessWatchpoint:
            guard let slot = Self.slot(point), state.withLock({ $0.hardware.remove(slot) }) else { return false }
        }
        if let board { _ = prepareRun(board, stepping: nil) }
        return true
    }

    /// KVM_SET_GUEST_DEBUG on every vCPU: the debug registers and breakpoint flags on all,
    /// single-stepping on `stepping` (a vCPU index) only.
    package func prepareRun(_ board: X86MicroVM, stepping: Int?) -> Bool {
        let hardware = state.withLock { $0.hardware }
        let supported = board.supportedGuestDebugFlags
        for vcpu in board.vcpus {
            do {
                try vcpu.setGuestDebug(control: control(stepping: vcpu.id == stepping, supported: supported),
                                       debugRegisters: hardware)
            } catch {
                return false
            }
        }
        return true
    }

    /// New vCPUs start with guest debugging off; the int3 bytes go into the new RAM.
    package func prepare(_ board: X86MicroVM) {
        for (address, breakpoint) in state.withLock({ $0.softwareBreakpoints }) {
            guard let original = try? board.debugMemory.read(UInt8.self, at: GuestAddress(breakpoint.physical)),
                  (try? board.debugMemory.write(UInt8(0xcc), at: GuestAddress(breakpoint.physical))) != nil else { continue }
            state.withLock { $0.softwareBreakpoints[address]?.original = original }
        }
        _ = prepareRun(board, stepping: nil)
    }

    package func detach(from board: X86MicroVM?) {
        let breakpoints = state.withLock { s in
            defer { s = State() }
            return s.softwareBreakpoints.values
        }
        guard let board else { return }
        for breakpoint in breakpoints { try? board.debugMemory.write(breakpoint.original, at: GuestAddress(breakpoint.physical)) }
        _ = prepareRun(board, stepping: nil)
    }

    /// Intel SDM Vol. 3B 18.2.3: DR6's Bn bits name the debug register that hit, BS a step.
    package func stopEvent(vcpu: Int, _ event: X86MicroVM.DebugEvent) -> GDBStopEvent {
        let thread = vcpu + 1
        if event.exception == 3 { return .breakpoint(thread: thread, hardware: false) }
        guard let slot = state.withLock({ $0.hardware }).hit(dr6: event.dr6) else { return .stepped(thread: thread) }
        switch slot.condition {
        case .execution: return .breakpoint(thread: thread, hardware: true)
        case .write: return .watchpoint(thread: thread, kind: .writeWatchpoint, address: slot.address)
        case .readWrite: return .watchpoint(thread: thread, kind: .accessWatchpoint, address: slot.address)
        }
    }
}
