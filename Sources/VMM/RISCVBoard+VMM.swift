import GDBStub
import GuestMemory
import Machines
import QMP
import RISCV
import Synchronization

/// The RISC-V boards under the VMM: harts named as QEMU's virt names them, the human monitor's
/// machine views, and the GDB stub through `RISCVDebugger`.
extension RISCVBoard: ManagedBoard {
    package typealias Debugger = RISCVDebugger

    package static var targetArch: String { "riscv64" }
    package static var kvmEnabled: Bool { false }

    /// QEMU's virt: socket 0's harts under /machine/soc0, each with its core-id.
    package static func monitorCPU(index: Int, threadID: Int) -> MonitorCPU {
        MonitorCPU(index: index, threadID: threadID, target: "riscv64", qomPath: "/machine/soc0/harts[\(index)]", coreID: index)
    }

    package static func machineView(_ view: MachineView, cpuIndex: Int) -> (@Sendable (RISCVBoard) -> String)? {
        @Sendable func current(_ board: RISCVBoard) -> Int { board.harts.indices.contains(cpuIndex) ? cpuIndex : 0 }
        switch view {
        case .registers(let all):
            // hmp_info_registers: "\nCPU#N\n" and the dump with the FPU; -a: every hart.
            return { board in
                (all ? Array(board.harts.indices) : [current(board)])
                    .map { "\nCPU#\($0)\n" + board.harts[$0].registerDump(fpu: true) }.joined()
            }
        case .jit:
            return { MonitorText.jitInfo($0) }
        case .memoryTree:
            return { MonitorText.memoryTree($0) }
        case .deviceTree:
            return { MonitorText.deviceTree($0) }
        case .memory(let dump):
            return { board in MonitorText.memoryDump(dump, board: board, hart: board.harts[current(board)]) }
        }
    }
}

/// The RISC-V side of the GDB stub: registers and target description from
/// `RISCVDebugRegisters`, memory through the hart's MMU (or physical with QEMU's
/// `Qqemu.PhyMemMode:1`), breakpoints and watchpoints on every hart (GDB's points are the
/// program's, whichever hart runs it), kept here and set again on the board a reset builds.
package final class RISCVDebugger: BoardDebugger {
    package typealias Machine = RISCVBoard

    /// The debugger's points, in the order set.
    private let points = Mutex<[GDBPoint]>([])
    /// Bounded: each watchpoint is checked on every data access, each breakpoint costs a
    /// dictionary entry (a client looping on Z packets must not grow them without end).
    package static let maxPoints = 1024

    package init() {}

    package func targetDescription(annex: String) -> [UInt8]? { RISCVDebugRegisters.description(annex: annex) }
    package var generalRegisterCount: Int { RISCVDebugRegisters.generalCount }
    package var programCounterRegister: Int { RISCVDebugRegisters.pc }

    private static func hart(_ board: RISCVBoard, _ index: Int) -> Hart? {
        board.harts.indices.contains(index) ? board.harts[index] : nil
    }

    package func readRegister(_ board: RISCVBoard, vcpu: Int, number: Int) -> [UInt8]? {
        Self.hart(board, vcpu).flatMap { RISCVDebugRegisters.read($0, number) }
    }

    package func writeRegister(_ board: RISCVBoard, vcpu: Int, number: Int, value: [UInt8]) -> Bool {
        Self.hart(board, vcpu).map { RISCVDebugRegisters.write($0, number, value) } ?? false
    }

    package func readMemory(_ board: RISCVBoard, vcpu: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? {
        guard let hart = Self.hart(board, vcpu) else { return nil }
        return physical ? try? hart.memory.ram.readBytes(at: GuestAddress(address), count: count)
            : hart.debugRead(virtual: address, count: count)
    }

    package func writeMemory(_ board: RISCVBoard, vcpu: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool {
        guard let hart = Self.hart(board, vcpu) else { return false }
        return physical ? hart.debugWrite(physical: address, bytes: bytes) : hart.debugWrite(virtual: address, bytes: bytes)
    }

    package func insert(_ point: GDBPoint, on board: RISCVBoard?) -> Bool {
        let accepted = points.withLock { points -> Bool in
            guard points.count < Self.maxPoints else { return false }
            points.append(point)
            return true
        }
        if accepted, let board { Self.apply(point, insert: true, to: board) }
        return accepted
    }

    package func remove(_ point: GDBPoint, on board: RISCVBoard?) -> Bool {
        let removed = points.withLock { points -> Bool in
            guard let index = points.firstIndex(of: point) else { return false }
            points.remove(at: index)
            return true
        }
        if removed, let board { Self.apply(point, insert: false, to: board) }
        return removed
    }

    package func prepare(_ board: RISCVBoard) {
        for point in points.withLock({ $0 }) { Self.apply(point, insert: true, to: board) }
    }

    /// The harts step in the emulator: always possible.
    package func prepareRun(_ board: RISCVBoard, stepping: Int?) -> Bool { true }

    package func detach(from board: RISCVBoard?) {
        points.withLock { $0.removeAll() }
        for hart in board?.harts ?? [] { hart.removeAllDebugPoints() }
    }

    package func stopEvent(vcpu: Int, _ event: RISCVBoard.DebugEvent) -> GDBStopEvent {
        switch event {
        case .stepped:
            return .stepped(thread: vcpu + 1)
        case .stop(.breakpoint(_, let kinds)):
            return .breakpoint(thread: vcpu + 1, hardware: !kinds.contains(.software))
        case .stop(.watchpoint(let w, let address)):
            let kind: GDBPoint.Kind = w.kind == .write ? .writeWatchpoint : w.kind == .read ? .readWatchpoint : .accessWatchpoint
            return .watchpoint(thread: vcpu + 1, kind: kind, address: address)
        }
    }

    /// Sets or clears `point` on every hart.
    private static func apply(_ point: GDBPoint, insert: Bool, to board: RISCVBoard) {
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
}
