import GDBStub
import Machines
import QMP

/// What the VMM's monitors and debugger need of a board type beyond `Board` (DESIGN.md §3): how
/// its CPUs are named, the human monitor's views only it produces, and its debugger. The VMM
/// itself (`VMM<Machine>`) never asks which board it runs.
package protocol ManagedBoard: Board {
    associatedtype Debugger: BoardDebugger where Debugger.Machine == Self
    /// `query-target`'s arch and `query-kvm`.
    static var targetArch: String { get }
    static var kvmEnabled: Bool { get }
    /// CPU `index` as `query-cpus-fast` lists it.
    static func monitorCPU(index: Int, threadID: Int) -> MonitorCPU
    /// `view` (with the monitor's current CPU) as work to run on the board with every vCPU
    /// parked; nil where this board has no such view.
    static func machineView(_ view: MachineView, cpuIndex: Int) -> (@Sendable (Self) -> String)?
}

/// A board type's side of the GDB stub (`-gdb`, `-s`): registers, memory, breakpoints and
/// watchpoints. One lives as long as the VMM, so the points outlive the boards a reset builds
/// (`prepare` sets them on each new one). Every call that takes a board is made with its
/// vCPUs parked; nil means there is no board now (between two).
package protocol BoardDebugger: Sendable {
    associatedtype Machine: Board
    init()
    func targetDescription(annex: String) -> [UInt8]?
    var generalRegisterCount: Int { get }
    var programCounterRegister: Int { get }
    func readRegister(_ board: Machine, vcpu: Int, number: Int) -> [UInt8]?
    func writeRegister(_ board: Machine, vcpu: Int, number: Int, value: [UInt8]) -> Bool
    func readMemory(_ board: Machine, vcpu: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]?
    func writeMemory(_ board: Machine, vcpu: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool
    func insert(_ point: GDBPoint, on board: Machine?) -> Bool
    func remove(_ point: GDBPoint, on board: Machine?) -> Bool
    /// A new board, before its vCPUs start, while a debugger is attached: the points go on it.
    func prepare(_ board: Machine)
    /// Before the vCPUs run again: single-stepping on vCPU `stepping` alone (nil: none);
    /// false if the board cannot step.
    func prepareRun(_ board: Machine, stepping: Int?) -> Bool
    /// The debugger left: every point comes off (and off `board`).
    func detach(from board: Machine?)
    /// A debug exit of vCPU `vcpu` as GDB is told of it.
    func stopEvent(vcpu: Int, _ event: Machine.DebugEvent) -> GDBStopEvent
}
