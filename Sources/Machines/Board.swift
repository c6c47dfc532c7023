import Block
import DeviceModel
import Devices
import Migration
import Synchronization
import SystemSupport
import VirtIO

/// How a board's run ended; the VMM decides what follows (a new board, or the end).
public enum BoardExit: Equatable, Sendable {
    case powerOff(exitCode: Int32)
    case reset
    /// The guest cannot go on (a triple fault, a KVM internal error): a message with registers.
    case failed(String)
}

/// What the VMM needs of a machine (DESIGN.md §3, "The machine core"): its vCPUs run on threads
/// the board owns, which the VMM parks (`pause`) before it reads or changes the machine and lets
/// run again (`resume`); a debugger's stops come back through the debug handler. `RISCVBoard`
/// and `X86MicroVM` implement it; neither knows the VMM. What the board saves and restores is
/// `MigratableMachine`'s.
package protocol Board: MigratableMachine {
    /// What a vCPU reports to the debug handler when a breakpoint, watchpoint or step stops it.
    associatedtype DebugEvent: Sendable

    /// Runs every vCPU, each on its own thread, until the guest powers off, resets or fails, or
    /// another thread asks for the end; returns once every vCPU thread has ended. A board runs
    /// once: a reset builds the next. A `pause()` before `run` holds the vCPUs from the start.
    func run() throws(SystemError) -> BoardExit
    /// Parks every vCPU and returns once all are parked (or the run is ending): the machine is
    /// then at rest for the calling thread. Idempotent.
    func pause()
    /// Lets parked vCPUs run again; once the run's exit is decided they stay parked.
    func resume()
    /// While paused: vCPU `index` alone executes (one instruction, or until its debug exit),
    /// then reports to the debug handler; the others stay parked.
    func step(vcpu index: Int)
    /// Ends the run with `.reset` (the monitor's `system_reset`).
    func requestReset()
    /// Ends the run with `.powerOff(exitCode:)` (quit, Ctrl-A x, a signal).
    func requestPowerOff(exitCode: Int32)
    /// Who hears of debug exits, on the reporting vCPU's thread. The board pauses itself first:
    /// the reporting vCPU parks after the handler returns, the others are stopped.
    func setDebugHandler(_ handler: (@Sendable (_ vcpu: Int, _ exit: DebugEvent) -> Void)?)
    /// The run is over and the next board will open the disks again: their locks stay until
    /// this board goes but no longer count against those opens. Idempotent (one implementation
    /// for every board, below).
    func close()
    /// The host thread id of each vCPU's thread (0 before it started).
    var vcpuThreadIDs: [Int] { get }
    var disks: [any BlockBackend] { get }
    var snapshotOverlays: [SnapshotOverlay] { get }
    var balloon: VirtioBalloon? { get }
    /// The virtio keyboards, whose KEY_POWER is the machine's power button.
    var keyboards: [VirtioInput] { get }
    /// Makes each vCPU sleep this share of its time (auto-converge), 0 to 99.
    func setThrottle(percent: Int)
    /// Merges the pages the accelerator logged by itself (KVM's dirty log) into the RAM's
    /// dirty bitmap; nothing to do where the vCPUs mark it as they write.
    func syncDirtyLog()
}

/// The run of a board's vCPU threads, shared by both boards (DESIGN.md §4): the exit (the first
/// decision wins), parking every vCPU for the VMM, one vCPU alone for a debugger's step, and
/// debug stops. Each vCPU loop asks `next` (or `shouldPark`) before it enters the guest and
/// parks, steps or runs; `kick` makes a vCPU leave the guest soon (a stop request, a signal).
final class VCPURunControl: Sendable {
    let exit = Mutex<BoardExit?>(nil)
    /// Tells the thread in `run` that the exit is decided.
    private let exitDecided: Wakeup
    /// `run` is ending: every vCPU loop leaves.
    let stopping = Atomic<Bool>(false)
    /// `pause()` asked the vCPUs to park; each parked one counts itself in `parked`.
    private let paused = Atomic<Bool>(false)
    private let parked = Atomic<Int>(0)
    /// vCPU threads started by `run` and not yet ended.
    private let live = Atomic<Int>(0)
    /// While paused, the one vCPU `step` lets run (-1: none).
    private let solo = Atomic<Int>(-1)
    /// Signalled by a vCPU thread that parked or ended.
    private let vcpuChanged: Wakeup
    /// One per vCPU: wakes it from its park.
    private let resumeWakeups: [Wakeup]
    private let threadIDs: Mutex<[Int]>
    /// Makes vCPU i leave the guest soon, from any thread (`setKick`).
    private let kicker = Mutex<(@Sendable (Int) -> Void)?>(nil)

    init(vcpus: Int) throws(SystemError) {
        exitDecided = try Wakeup()
        vcpuChanged = try Wakeup()
        var wakeups: [Wakeup] = []
        for _ in 0..<vcpus { wakeups.append(try Wakeup()) }
        resumeWakeups = wakeups
        threadIDs = Mutex(Array(repeating: 0, count: vcpus))
    }

    /// How to make vCPU i leave the guest soon (a stop request, a signal); set once the
    /// vCPUs exist, before `run`.
    func setKick(_ kick: @escaping @Sendable (Int) -> Void) { kicker.withLock { $0 = kick } }

    private func kick(_ index: Int) { kicker.withLock { $0 }?(index) }

    var count: Int { resumeWakeups.count }
    var vcpuThreadIDs: [Int] { threadIDs.withLock { $0 } }

    /// Decides the run's exit (the first decision wins); `run` then stops every vCPU.
    func end(_ exit: BoardExit) {
        self.exit.withLock { if $0 == nil { $0 = exit } }
        // No more guest code: the vCPUs park until `run` ends them (a step in progress too).
        paused.store(true, ordering: .sequentiallyConsistent)
        solo.store(-1, ordering: .sequentiallyConsistent)
        exitDecided.signal()
    }

    /// Runs `loop(i)` on a thread per vCPU named `name(i)` until the exit is decided, then
    /// stops and waits for every thread; returns the exit.
    /// A `pause()` before the run holds the vCPUs from their start.
    func run(name: (Int) -> String, loop: @escaping @Sendable (Int) -> Void) throws(SystemError) -> BoardExit {
        // Decided before it started (a restore that failed half-way): no guest code runs.
        if let exit = exit.withLock({ $0 }) { return exit }
        var spawnError: SystemError?
        for index in 0..<count {
            live.add(1, ordering: .sequentiallyConsistent)
            do throws(SystemError) {
                try HostThread.spawn(name: name(index)) { [self] in
                    let id = HostThread.currentID()
                    threadIDs.withLock { $0[index] = id }
                    loop(index)
                    live.subtract(1, ordering: .sequentiallyConsistent)
                    vcpuChanged.signal()
                }
            } catch {
                // The threads already started are stopped below; the error is the run's.
                live.subtract(1, ordering: .sequentiallyConsistent)
                spawnError = error
                end(.failed("\(error)"))
                break
            }
        }
        var exit: BoardExit
        while true {
            exitDecided.wait(timeoutNanoseconds: -1)
            if let decided = self.exit.withLock({ $0 }) {
                exit = decided
                break
            }
        }
        stopping.store(true, ordering: .sequentiallyConsistent)
        while live.load(ordering: .sequentiallyConsistent) > 0 {
            for i in 0..<count {
                kick(i)
                resumeWakeups[i].signal()
            }
            vcpuChanged.wait(timeoutNanoseconds: 10_000_000)
        }
        if let spawnError { throw spawnError }
        return exit
    }

    /// What vCPU `index` does next.
    enum Action { case run, park, step }

    /// What vCPU `index` does next, from one look at the state: a step it was given, else a
    /// park while paused, else run. (Two looks could see a step taken back in between and run
    /// a whole slice in its place.)
    func next(_ index: Int) -> Action {
        if solo.load(ordering: .sequentiallyConsistent) == index { return .step }
        return paused.load(ordering: .sequentiallyConsistent) ? .park : .run
    }

    /// Whether vCPU `index` must park before it runs guest code again.
    func shouldPark(_ index: Int) -> Bool { next(index) == .park }

    /// Parks vCPU `index` until `resume`, `step` or the end (a spurious return only makes the
    /// loop ask `shouldPark` again).
    func park(_ index: Int) {
        parked.add(1, ordering: .sequentiallyConsistent)
        vcpuChanged.signal()
        if !stopping.load(ordering: .sequentiallyConsistent) { resumeWakeups[index].wait(timeoutNanoseconds: -1) }
        parked.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Parks every vCPU (a step not yet taken too); returns once all that run are parked or
    /// have ended.
    func pause() {
        paused.store(true, ordering: .sequentiallyConsistent)
        solo.store(-1, ordering: .sequentiallyConsistent)
        while !isAtRest {
            for i in 0..<count { kick(i) }
            vcpuChanged.wait(timeoutNanoseconds: 10_000_000)
        }
    }

    /// Lets parked vCPUs run again, unless the run's exit is decided: the old board must not
    /// run guest code after `system_reset` while the new one is being built.
    func resume() {
        guard exit.withLock({ $0 == nil }) else { return }
        paused.store(false, ordering: .sequentiallyConsistent)
        for wakeup in resumeWakeups { wakeup.signal() }
    }

    /// While paused: vCPU `index` alone runs until it reports a debug exit.
    func step(_ index: Int) {
        guard resumeWakeups.indices.contains(index), exit.withLock({ $0 == nil }) else { return }
        solo.store(index, ordering: .sequentiallyConsistent)
        resumeWakeups[index].signal()
    }

    /// On vCPU `index`'s thread: a debug exit. The board pauses (the others are stopped; this
    /// one parks when `report` returns), then `report` tells the board's debug handler; when
    /// it has none (nobody debugs any more: it returns false) the machine runs on.
    func debugStop(_ index: Int, report: () -> Bool) {
        paused.store(true, ordering: .sequentiallyConsistent)
        solo.store(-1, ordering: .sequentiallyConsistent)
        for i in 0..<count where i != index { kick(i) }
        if !report() { resume() }
    }

    /// True when no vCPU runs guest code: `run` has not started them or has ended, or every
    /// one is parked (and no debugger step lets one run).
    var isAtRest: Bool {
        let live = live.load(ordering: .sequentiallyConsistent)
        if live == 0 { return true }
        return paused.load(ordering: .sequentiallyConsistent) && solo.load(ordering: .sequentiallyConsistent) == -1
            && parked.load(ordering: .sequentiallyConsistent) == live
    }
}

extension RISCVBoard: Board {
    /// The harts mark the dirty bitmap as they write: nothing to merge.
    package func syncDirtyLog() {}
}

extension Board {
    package func close() {
        for disk in disks { DiskImage.locks(of: disk)?.retire() }
    }
}

extension X86MicroVM: Board {
    /// Auto-converge has nothing to slow here: KVM runs the vCPUs, and swemu does not take
    /// their time away (QEMU throttles KVM vCPUs by making them sleep in its own loop, which
    /// PVM's cost per exit would make coarse). Migrations converge on the downtime limit alone.
    public func setThrottle(percent: Int) {}
}
