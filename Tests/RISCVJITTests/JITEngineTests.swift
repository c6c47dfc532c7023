import Dispatch
import Foundation
import RISCV
import RISCVJIT
import Synchronization
import Testing

/// Cases the random programs of `DifferentialTests` do not make.
@Suite struct JITEngineTests {
    /// A trap handler whose own fetch faults (mtvec outside RAM) traps forever, retiring
    /// nothing: the run must still end within its budget, as the interpreter's does, so that
    /// the vCPU thread sees stop requests (found by the differential tester's author).
    @Test(.enabled(if: JITEngine.hostSupported, "the JIT runs on x86-64 hosts only"))
    func aTrapStormStillEndsTheRun() throws {
        // lui t0, 0x1 (0x1000 is not RAM); csrw mtvec, t0; ecall
        let words: [UInt32] = [0x0000_12b7, 0x3052_9073, 0x0000_0073]
        let bytes = words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * UInt32($0))) } }
        let reference = try DiffMachine(segments: [(Layout.setup, bytes)])
        #expect(reference.hart.run(budget: 1000) == .budgetExhausted)

        let machine = try DiffMachine(segments: [(Layout.setup, bytes)])
        let jit = try JITEngine(hart: machine.hart)
        let result = Mutex<StopReason?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let reason = jit.run(budget: 1000)
            result.withLock { $0 = reason }
            done.signal()
        }
        guard done.wait(timeout: .now() + 30) == .success else {
            Issue.record("JITEngine.run(budget: 1000) did not return in 30 s")
            machine.hart.requestStop()
            return
        }
        #expect(result.withLock { $0 } == .budgetExhausted)
        #expect(machine.pc == 0x1000)
        #expect(machine.hart.debugReadCSR(CSRNumber.mcause) == 1)  // instruction access fault
        #expect(machine.minstret == reference.minstret)
    }
}
