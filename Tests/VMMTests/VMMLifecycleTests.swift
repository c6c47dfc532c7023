import Block
import DeviceModel
import Devices
import Foundation
import GDBStub
import GuestMemory
@testable import Machines
import Migration
import QMP
import Synchronization
import SystemSupport
import Testing
@testable import VMM

/// A third board, neither RISC-V nor KVM: the VMM runs it with no code of its own for it
/// (DESIGN.md §3, "The machine core"). Its vCPUs are threads that count iterations, parked
/// through the same `VCPURunControl` as the real boards; a test plays the guest through
/// `guestPowerOff`, `guestReset` and `hitBreakpoint`.
final class FakeBoard: ManagedBoard, @unchecked Sendable {
    // SAFETY: every mutable field is an atomic or behind a Mutex.
    typealias DebugEvent = UInt64
    typealias Debugger = FakeDebugger

    static let vcpuCount = 2
    let control: VCPURunControl
    let counters = Mutex([Int](repeating: 0, count: FakeBoard.vcpuCount))
    /// Set by a test: vCPU n (bit n) reports a breakpoint at 0x2000 on its next iteration.
    let breakOn = Atomic<Int>(0)
    /// Set by a test: the next single step resets the machine (a guest write to a reset
    /// register) instead of stopping.
    let resetOnStep = Atomic<Bool>(false)
    let steps = Mutex([Int](repeating: 0, count: FakeBoard.vcpuCount))
    let closed = Atomic<Bool>(false)
    private let handler = Mutex<(@Sendable (Int, UInt64) -> Void)?>(nil)
    let memory: GuestMemory

    init() throws {
        control = try VCPURunControl(vcpus: Self.vcpuCount)
        control.setKick { _ in }  // the loops look at the control every iteration
        memory = try GuestMemory(base: GuestAddress(0x1000), size: 0x10000)
    }

    func count(_ vcpu: Int) -> Int { counters.withLock { $0[vcpu] } }
    var total: Int { counters.withLock { $0.reduce(0, +) } }

    func run() throws(SystemError) -> BoardExit {
        try control.run(name: { "fake \($0)" }) { [self] index in
            while !control.stopping.load(ordering: .sequentiallyConsistent) {
                switch control.next(index) {
                case .park:
                    control.park(index)
                case .step:
                    steps.withLock { $0[index] += 1 }
                    if resetOnStep.load(ordering: .sequentiallyConsistent) {
                        control.end(.reset)
                    } else {
                        report(index, 0)
                    }
                case .run where breakOn.bitwiseAnd(~(1 << index), ordering: .sequentiallyConsistent).oldValue & 1 << index != 0:
                    // Every vCPU given a point reaches it before any reports: hits at one moment.
                    for _ in 0..<10_000 where breakOn.load(ordering: .sequentiallyConsistent) != 0 { usleep(100) }
                    report(index, 0x2000)
                case .run:
                    counters.withLock { $0[index] += 1 }
                    usleep(200)
                }
            }
        }
    }

    private func report(_ index: Int, _ event: UInt64) {
        control.debugStop(index) {
            guard let handler = handler.withLock({ $0 }) else { return false }
            handler(index, event)
            return true
        }
    }

    func guestPowerOff(_ code: Int32) { control.end(.powerOff(exitCode: code)) }
    func guestReset() { control.end(.reset) }
    func hitBreakpoint(vcpus: Int...) { breakOn.store(vcpus.reduce(0) { $0 | 1 << $1 }, ordering: .sequentiallyConsistent) }

    func pause() { control.pause() }
    func resume() { control.resume() }
    func step(vcpu index: Int) { control.step(index) }
    func requestReset() { control.end(.reset) }
    func requestPowerOff(exitCode: Int32) { control.end(.powerOff(exitCode: exitCode)) }
    func setDebugHandler(_ handler: (@Sendable (Int, UInt64) -> Void)?) { self.handler.withLock { $0 = handler } }
    func close() { closed.store(true, ordering: .sequentiallyConsistent) }
    var vcpuThreadIDs: [Int] { control.vcpuThreadIDs }
    var disks: [any BlockBackend] { [] }
    var snapshotOverlays: [SnapshotOverlay] { [] }
    var balloon: VirtioBalloon? { nil }
    var keyboards: [VirtioInput] { [] }
    func setThrottle(percent: Int) {}
    func syncDirtyLog() {}

    static var targetArch: String { "fake" }
    static var kvmEnabled: Bool { false }
    static func monitorCPU(index: Int, threadID: Int) -> MonitorCPU {
        MonitorCPU(index: index, threadID: threadID, target: "fake", qomPath: "/machine/fake[\(index)]")
    }
    static func machineView(_ view: MachineView, cpuIndex: Int) -> (@Sendable (FakeBoard) -> String)? {
        guard view == .registers(allCPUs: true) else { return nil }
        return { board in "at rest: \(board.control.isAtRest)\n" }
    }

    var migrationDescription: MachineDescription {
        MachineDescription(machine: "fake", accelerator: "none", cpus: Self.vcpuCount, ram: [.init(base: 0x1000, size: 0x10000)], components: [])
    }
    var clockNanoseconds: Int64 { 0 }
    var migrationBlocker: String? { nil }
    func quiesceForSave() {}
    func saveComponents() throws(SystemError) -> [SavedComponent] { [] }
    func restoreComponents(_ components: [SavedComponent]) throws(SystemError) {}
    func setDisksActive(_ active: Bool) throws(SystemError) {}
    func dropWriteTranslations() {}
}

final class FakeDebugger: BoardDebugger {
    typealias Machine = FakeBoard
    let points = Mutex<[GDBPoint]>([])
    init() {}
    func targetDescription(annex: String) -> [UInt8]? { nil }
    var generalRegisterCount: Int { 1 }
    var programCounterRegister: Int { 0 }
    func readRegister(_ board: FakeBoard, vcpu: Int, number: Int) -> [UInt8]? {
        // Answers only with the board at rest: the VMM must have parked it.
        board.control.isAtRest ? [UInt8(vcpu)] : nil
    }
    func writeRegister(_ board: FakeBoard, vcpu: Int, number: Int, value: [UInt8]) -> Bool { false }
    func readMemory(_ board: FakeBoard, vcpu: Int, address: UInt64, count: Int, physical: Bool) -> [UInt8]? { nil }
    func writeMemory(_ board: FakeBoard, vcpu: Int, address: UInt64, bytes: [UInt8], physical: Bool) -> Bool { false }
    func insert(_ point: GDBPoint, on board: FakeBoard?) -> Bool {
        points.withLock { $0.append(point) }
        return true
    }
    func remove(_ point: GDBPoint, on board: FakeBoard?) -> Bool {
        points.withLock { $0.removeAll { $0 == point } }
        return true
    }
    func prepare(_ board: FakeBoard) {}
    func prepareRun(_ board: FakeBoard, stepping: Int?) -> Bool { true }
    func detach(from board: FakeBoard?) { points.withLock { $0.removeAll() } }
    func stopEvent(vcpu: Int, _ event: UInt64) -> GDBStopEvent {
        event == 0 ? .stepped(thread: vcpu + 1) : .breakpoint(thread: vcpu + 1, hardware: false)
    }
}

/// A value several threads share.
final class Shared<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    var current: Value { value.withLock { $0 } }
}

/// A VMM over fake boards, run on a thread of its own, with what it announced.
final class Harness: Sendable {
    let vm: VMM<FakeBoard>
    let boards = Shared<[FakeBoard]>([])
    let events = Shared<[MonitorEvent]>([])
    let exit = Shared<Int32?>(nil)

    init(startPaused: Bool = false, noShutdown: Bool = false) {
        let boards = boards
        var setup = MachineSetup<FakeBoard>(machineType: "fake", machineList: [], name: nil, noReboot: false,
                                           startPaused: startPaused, cpus: FakeBoard.vcpuCount) { () throws(SystemError) in
            guard let board = try? FakeBoard() else { throw SystemError(.badInput, "no fake board") }
            boards.value.withLock { $0.append(board) }
            return board
        }
        setup.noShutdown = noShutdown
        let vm = VMM(setup)
        self.vm = vm
        let events = events
        vm.addEventListener { event in events.value.withLock { $0.append(event) } }
        let exit = exit
        Thread { exit.value.withLock { $0 = (try? vm.run()) ?? -1 } }.start()
        waitFor("the first board") { !boards.current.isEmpty }
    }

    var board: FakeBoard { boards.current.last! }

    func waitFor(_ what: String, within seconds: Double = 10, _ condition: () -> Bool) {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline {
                Issue.record("timed out waiting for \(what)")
                return
            }
            usleep(1_000)
        }
    }

    /// The vCPUs make progress (each counts `by` more iterations).
    func waitForProgress(by: Int = 5) {
        let board = board
        let start = (0..<FakeBoard.vcpuCount).map(board.count)
        waitFor("the vCPUs to run") { (0..<FakeBoard.vcpuCount).allSatisfy { board.count($0) >= start[$0] + by } }
    }

    /// The vCPUs are parked: nothing counts for a while.
    func expectParked(_ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        // vCPU threads a new board is starting park before they run: wait for them.
        let deadline = Date().addingTimeInterval(2)
        while !board.control.isAtRest && Date() < deadline { usleep(1_000) }
        #expect(board.control.isAtRest, comment, sourceLocation: sourceLocation)
        let before = board.total
        usleep(30_000)
        #expect(board.total == before, comment, sourceLocation: sourceLocation)
    }

    /// Ends the run (quit) and waits for `run()` to return.
    func quit() -> Int32? {
        vm.execute(.quit(reason: "host-qmp-quit"))
        waitFor("the run to end") { exit.current != nil }
        return exit.current
    }
}

/// The machine core's lifecycle on a board the VMM knows nothing about: the VMM parks and
/// resumes every vCPU for commands, work on the parked machine, resets and power-offs, and
/// the debugger's stops and steps.
@Suite struct VMMLifecycleTests {
    @Test func stopParksEveryVCPUAndContLetsThemRunAgain() {
        let h = Harness()
        h.waitForProgress()
        #expect(h.vm.runState == "running")
        h.vm.execute(.stop)
        #expect(h.vm.runState == "paused")
        h.expectParked("after stop")
        h.vm.execute(.cont)
        #expect(h.vm.runState == "running")
        h.waitForProgress()
        #expect(h.events.current == [.stop, .resume])
        #expect(h.quit() == 0)
        #expect(h.events.current.last == .shutdown(guest: false, reason: "host-qmp-quit"))
    }

    @Test func workOnTheParkedBoardLeavesAStoppedMachineStopped() {
        let h = Harness()
        h.waitForProgress()
        // Monitor work on a running machine: parked for it, running after.
        let atRest = h.vm.withParkedBoard { $0.control.isAtRest }
        #expect(atRest == true)
        h.waitForProgress()
        // A `stop` that arrives while the migration thread has the board parked wins: the
        // vCPUs stay parked when that work ends.
        h.vm.withParkedBoard { _ in h.vm.execute(.stop) }
        h.expectParked("a stop during parked work")
        #expect(h.vm.machineView(.registers(allCPUs: true), cpuIndex: 0) == "at rest: true\n")
        #expect(h.vm.machineView(.jit, cpuIndex: 0) == nil)
        h.vm.execute(.cont)
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    /// stop/cont and work on the parked board from several threads at once (the monitor, the
    /// migration thread, the debugger): every pause and resume must match its decision, so
    /// none waits forever and the machine ends as the last command left it.
    @Test func concurrentStopsContsAndParkedWorkStayConsistent() {
        let h = Harness()
        h.waitForProgress()
        let done = Shared(0)
        for worker in 0..<4 {
            Thread {
                for i in 0..<3000 {
                    if worker < 2 {
                        h.vm.execute(i % 2 == 0 ? .stop : .cont)
                    } else {
                        _ = h.vm.withParkedBoard { $0.control.isAtRest }
                    }
                }
                done.value.withLock { $0 += 1 }
            }.start()
        }
        h.waitFor("the four threads to finish (a pause that waits forever hangs one)", within: 60) { done.current == 4 }
        h.vm.execute(.stop)
        h.expectParked("after the last stop")
        #expect(h.vm.runState == "paused")
        h.vm.execute(.cont)
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    @Test func startsParkedWithDashS() {
        let h = Harness(startPaused: true)
        #expect(h.vm.runState == "prelaunch")
        h.waitFor("the vCPU threads") { h.board.vcpuThreadIDs.allSatisfy { $0 != 0 } }
        h.expectParked("-S")
        #expect(h.vm.cpus.map(\.threadID) == h.board.vcpuThreadIDs)
        h.vm.execute(.cont)
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    @Test func resetsBuildANewBoardAndPowerOffEndsTheRun() {
        let h = Harness()
        h.waitForProgress()
        let first = h.board
        first.guestReset()
        h.waitFor("the board after the guest's reset") { h.boards.current.count == 2 }
        let closed = first.closed.load(ordering: .sequentiallyConsistent)
        #expect(closed)
        h.waitForProgress()
        h.vm.execute(.systemReset)
        h.waitFor("the board after system_reset") { h.boards.current.count == 3 }
        h.waitForProgress()
        h.board.guestPowerOff(3)
        h.waitFor("the run to end") { h.exit.current != nil }
        #expect(h.exit.current == 3)
        #expect(h.events.current == [.reset(guest: true, reason: "guest-reset"), .reset(guest: false, reason: "host-qmp-system-reset"),
                                     .shutdown(guest: true, reason: "guest-shutdown")])
    }

    @Test func noShutdownKeepsTheMachineUntilResetAndCont() {
        let h = Harness(noShutdown: true)
        h.waitForProgress()
        h.board.guestPowerOff(0)
        h.waitFor("the shutdown state") { h.vm.runState == "shutdown" }
        h.vm.execute(.cont)  // refused in "shutdown", as QEMU refuses it
        #expect(h.vm.runState == "shutdown")
        #expect(h.vm.machineView(.registers(allCPUs: true), cpuIndex: 0) == "at rest: true\n",
                "the powered-off board stays for the monitors")
        h.vm.execute(.systemReset)
        h.waitFor("the board after system_reset") { h.boards.current.count == 2 }
        h.waitFor("prelaunch") { h.vm.runState == "prelaunch" }
        h.expectParked("prelaunch after a reset from shutdown")
        h.vm.execute(.cont)
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    @Test func theDebuggerStopsStepsOneVCPUAndLeaves() {
        let h = Harness()
        h.waitForProgress()
        let stops = Shared<[GDBStopEvent]>([])
        h.vm.attach { event in stops.value.withLock { $0.append(event) } }
        #expect(h.vm.runState == "paused")
        #expect(stops.current == [.interrupted(thread: 1)])
        h.expectParked("attached")
        #expect(h.vm.readRegister(thread: 2, number: 0) == [1])
        #expect(h.vm.insertPoint(GDBPoint(kind: .softwareBreakpoint, address: 0x2000, length: 2)))

        // A step runs vCPU 1 (GDB thread 2) alone, once.
        let board = h.board
        let before = (0..<FakeBoard.vcpuCount).map(board.count)
        h.vm.resume(step: 2)
        h.waitFor("the step's stop") { stops.current.count == 2 }
        #expect(stops.current.last == .stepped(thread: 2))
        #expect(board.steps.withLock { $0 } == [0, 1])
        #expect((0..<FakeBoard.vcpuCount).map(board.count) == before, "a step runs nothing else")
        #expect(h.vm.runState == "debug")
        h.expectParked("after the step")

        // Continue, then vCPU 0 hits the breakpoint: every vCPU parks, GDB hears of it.
        h.vm.resume(step: nil)
        h.waitForProgress()
        board.hitBreakpoint(vcpus: 0)
        h.waitFor("the breakpoint's stop") { stops.current.count == 3 }
        #expect(stops.current.last == .breakpoint(thread: 1, hardware: false))
        #expect(h.vm.runState == "debug")
        h.waitFor("every vCPU parked") { board.control.isAtRest }
        h.expectParked("at the breakpoint")

        h.vm.detach()
        #expect(h.vm.debugger.points.withLock { $0.isEmpty })
        #expect(h.vm.runState == "running")
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    /// A step whose instruction resets the machine ends there: the new board starts stopped at
    /// its reset state and the debugger hears of the step (it would otherwise wait for a stop
    /// the new board never makes).
    @Test func aStepThatResetsTheMachineEndsAtTheNewBoard() {
        let h = Harness()
        h.waitForProgress()
        let stops = Shared<[GDBStopEvent]>([])
        h.vm.attach { event in stops.value.withLock { $0.append(event) } }
        let first = h.board
        first.resetOnStep.store(true, ordering: .sequentiallyConsistent)
        h.vm.resume(step: 1)
        h.waitFor("the step's stop") { stops.current.count == 2 }
        #expect(stops.current.last == .stepped(thread: 1))
        h.waitFor("the board after the reset") { h.boards.current.count == 2 }
        #expect(h.events.current.contains(.reset(guest: true, reason: "guest-reset")))
        #expect(h.vm.readRegister(thread: 1, number: 0) == [0], "the new board answers, parked")
        h.expectParked("the new board, stopped for the debugger")
        // The debugger goes on as usual: a step on the new board, then continue.
        h.vm.resume(step: 1)
        h.waitFor("the second step's stop") { stops.current.count == 3 }
        #expect(stops.current.last == .stepped(thread: 1))
        #expect(h.board.steps.withLock { $0 } == [1, 0])
        h.vm.detach()
        h.waitForProgress()
        #expect(h.quit() == 0)
    }

    /// Two vCPUs at their breakpoints at once: GDB (all-stop) gets one stop reply, not two.
    @Test func breakpointsOnTwoVCPUsAtOnceMakeOneStop() {
        let h = Harness()
        let stops = Shared<[GDBStopEvent]>([])
        h.vm.attach { event in stops.value.withLock { $0.append(event) } }
        h.vm.resume(step: nil)
        h.waitForProgress()
        h.board.hitBreakpoint(vcpus: 0, 1)
        h.waitFor("the breakpoint's stop") { stops.current.count == 2 }
        usleep(50_000)
        #expect(stops.current.count == 2, "one stop reply: \(stops.current)")
        #expect([GDBStopEvent.breakpoint(thread: 1, hardware: false), .breakpoint(thread: 2, hardware: false)]
            .contains(stops.current.last!))
        #expect(h.events.current.filter { $0 == .stop }.count == 2, "the attach's stop and this one")
        h.expectParked("at the breakpoint")
        h.vm.detach()
        #expect(h.quit() == 0)
    }
}
