/// What the GDB stub debugs: a machine's CPUs, memory and run control, seen architecture-
/// neutrally (registers are numbered and sized by the target description the target serves).
/// Implemented by the VMM; calls come from the stub's connection thread and may block until
/// the vCPU thread has carried them out.
///
/// Threads are GDB's: one per CPU, numbered from 1.
public protocol GDBTarget: AnyObject, Sendable {
    /// The thread ids, one per CPU, in order.
    var threadIDs: [Int] { get }
    /// `qThreadExtraInfo`: a short text for `info threads` ("CPU#0 [running]").
    func threadDescription(_ thread: Int) -> String
    /// The XML of a target description annex (`target.xml` and the files it includes); nil
    /// for an unknown annex.
    func targetDescription(annex: String) -> [UInt8]?
    /// How many registers, from number 0, the `g` packet carries.
    var generalRegisterCount: Int { get }
    /// The register number of the program counter (`c ADDR` and `s ADDR` write it).
    var programCounterRegister: Int { get }
    /// A register's value in target byte order; nil if there is no such register.
    func readRegister(thread: Int, number: Int) -> [UInt8]?
    /// Sets a register from target-order bytes of its size; false if refused.
    func writeRegister(thread: Int, number: Int, value: [UInt8]) -> Bool
    /// Memory at a virtual address as `thread` sees it now, or at a physical address; nil if
    /// any byte is not readable memory.
    func readMemory(thread: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]?
    func writeMemory(thread: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool
    /// `Z`/`z`: false if the target cannot set (or does not have) that point.
    func insertPoint(_ point: GDBPoint) -> Bool
    func removePoint(_ point: GDBPoint) -> Bool
    /// A debugger connected: stop the machine (as QEMU's gdbstub does) and report stops to
    /// `listener` until `detach`.
    func attach(listener: @escaping @Sendable (GDBStopEvent) -> Void)
    /// Runs the machine: `step` names the thread that executes one instruction (the others
    /// stay stopped), nil continues every CPU. A `GDBStopEvent` follows when it stops.
    func resume(step: Int?)
    /// Stops a running machine (Ctrl-C); reported as `.interrupted`.
    func interrupt()
    /// The debugger leaves: every point removed, the machine runs on.
    func detach()
    /// `k`: end the emulator.
    func kill()
    /// `monitor CMD` (`qRcmd`): the human monitor's answer.
    func monitorCommand(_ line: String) -> String
}

/// A breakpoint or watchpoint, as `Z`/`z` packets name them (type, address, kind/length).
public struct GDBPoint: Hashable, Sendable {
    public enum Kind: Int, Hashable, Sendable {
        case softwareBreakpoint = 0, hardwareBreakpoint = 1, writeWatchpoint = 2, readWatchpoint = 3, accessWatchpoint = 4
    }
    public var kind: Kind
    public var address: UInt64
    /// Breakpoints: the instruction size GDB assumes; watchpoints: the watched length.
    public var length: UInt64

    public init(kind: Kind, address: UInt64, length: UInt64) {
        self.kind = kind
        self.address = address
        self.length = length
    }
}

/// Why the target stopped, for the stop reply (GDB manual, "Stop Reply Packets").
public enum GDBStopEvent: Equatable, Sendable {
    /// A `Z0` (software) or `Z1` (hardware) breakpoint.
    case breakpoint(thread: Int, hardware: Bool)
    /// A watchpoint, with the data address the instruction was about to access.
    case watchpoint(thread: Int, kind: GDBPoint.Kind, address: UInt64)
    /// A single step finished.
    case stepped(thread: Int)
    /// Ctrl-C, or the machine was stopped another way (the monitor's `stop`).
    case interrupted(thread: Int)
    /// The guest ended the machine with this exit status.
    case exited(code: Int32)
}
