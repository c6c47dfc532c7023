import SystemSupport

/// What a hart thread runs (DESIGN.md §3, "The machine core"): the interpreter (`Hart` itself,
/// the reference) or a translator such as the JIT in `RISCVJIT`. Both run the same `Hart`:
/// its architectural state, TLB and trap logic are shared, so an engine can hand any
/// instruction to the interpreter and get the exact result.
public protocol ExecutionEngine: AnyObject, Sendable {
    /// Runs about `budget` instructions (an engine may overshoot by one translated block),
    /// taking interrupts and traps as they come.
    func run(budget: Int) -> StopReason
}

extension Hart: ExecutionEngine {}

/// What one instruction run by the interpreter on behalf of translated code asks of it.
package enum InterpretedStatus: UInt32 {
    /// Done; the next instruction is the one after it: go on.
    case next = 0
    /// It trapped; the trap has been taken (pc is the handler's): leave translated code.
    case trapped = 1
    /// It changed control flow, privilege, translation or the code cache, or asked the hart
    /// to wait or look at interrupts (`endChunk`): leave translated code, pc is set.
    case leave = 2
    /// A debugger's watchpoint held it back: leave and report `.debugStop`.
    case debugStop = 3
}

extension Hart {
    /// Executes `d`, the instruction at `pc`, exactly as the interpreter does (traps, side
    /// effects, and counters unless `retiring` is false: the engine counts it itself), for an
    /// execution engine that does not translate it.
    package func interpret(_ d: DecodedInstruction, pc: UInt64, retiring: Bool = true) -> InterpretedStatus {
        let s = state
        do throws(Trap) {
            try execute(d, pc: pc)
        } catch {
            if error.cause == Trap.debugStopCause {
                s.pointee.pc = pc
                return .debugStop
            }
            takeTrap(error, pc: pc)
            return .trapped
        }
        if retiring { retire() }
        if s.pointee.endChunk || s.pointee.pc != pc &+ UInt64(d.length) { return .leave }
        return .next
    }

    /// Whether something asks for the reference interpreter, instruction by instruction:
    /// a debugger's breakpoints or watchpoints, or the `-d exec`/`-d cpu` traces, which show
    /// every instruction (`-d in_asm` is the JIT's own: each block once, when translated).
    package var needsInterpreter: Bool {
        let s = state
        return s.pointee.breakpointFilter != 0 || s.pointee.checkWatchpoints
            || DebugLog.isEnabled(.execution) || DebugLog.isEnabled(.cpuState)
    }
}
