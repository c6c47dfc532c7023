import Block
import Dispatch
import DeviceModel
import GDBStub
import Glibc
import GuestMemory
import Machines
import QMP
import RISCV
import Synchronization
import SystemSupport

/// The VMM (DESIGN.md §1, §4): runs a board's vCPU on the thread that calls `run()` and serves
/// the command channel every control path uses — the monitors, the console's Ctrl-A keys,
/// signals. Requests are closures that run on the vCPU thread between instruction slices (or
/// while the machine is stopped), so they see a consistent machine.
///
/// Guest time while stopped: the board's `VirtualClock` stops with the vCPU and resumes where
/// it stopped (QEMU's virtual clock policy), so timers do not fire a burst after `cont`; the
/// RTC, which counts that clock, falls behind the host's wall clock by the time stopped.
public final class VirtualMachine: MonitorTarget, Sendable {
    public typealias Setup = MachineSetup<RISCVBoard>

    struct State {
        var life: Lifecycle
        /// Served on the vCPU thread; given nil when the run ended without a board (a request
        /// queued before the first board, whose building failed), so its caller still returns.
        var requests: [@Sendable (RISCVBoard?) -> Void] = []
        var board: RISCVBoard?
        var listeners: [@Sendable (MonitorEvent) -> Void] = []
        var threadID = 0
        /// The attached debugger's stop listener (GDBTarget).
        var debugger: (@Sendable (GDBStopEvent) -> Void)?
        /// The debugger's breakpoints and watchpoints, set again on the board a reset builds.
        var debugPoints: [GDBPoint] = []
        /// `resume(step:)` asked this hart to execute one instruction, then stop.
        var stepPending: Int?
        /// `run` returned: requests are no longer served.
        var finished = false
    }

    let setup: Setup
    let state: Mutex<State>
    /// Wakes the vCPU thread while the machine is stopped.
    private let wake = DispatchSemaphore(value: 0)

    /// Snapshots and live migration (DESIGN.md §5).
    let migrationManager = MigrationManager()
    /// The monitors' balloon, when the machine has one.
    let balloonHandle: BalloonHandle?

    public init(_ setup: Setup) {
        self.setup = setup
        balloonHandle = setup.balloonRAMSize.map(BalloonHandle.init)
        state = Mutex(State(life: Lifecycle(setup)))
        migrationManager.host = self
        // `migrate-incoming` is taken from the start, before the board is built.
        if setup.incoming == .deferred { migrationManager.startIncoming(.deferred) }
    }

    // MARK: - The vCPU loop

    /// Runs the machine on the calling thread until it ends; returns the process exit status.
    public func run() throws(SystemError) -> Int32 {
        state.withLock { $0.threadID = HostThread.currentID() }  // the vCPU thread, for query-cpus-fast
        defer {
            // Requests that raced with the end still get their answer (from the stopped
            // machine, on this thread), so no caller waits forever; later ones get nil.
            let (requests, board) = state.withLock { s in
                defer {
                    s.finished = true
                    s.requests.removeAll()
                }
                return (s.requests, s.board)
            }
            for request in requests { request(board) }
        }
        var incoming = setup.incoming
        var loadvm = setup.loadvm
        while true {
            let board = try setup.makeBoard()
            defer { board.close() }
            balloonHandle?.attach(board.balloon) { [weak self] event in self?.emit(event) }  // its hart threads end with it (reset, or the end of the run)
            let points = state.withLock { s in
                s.board = board
                s.life.boardBuilt()
                return s.debugPoints
            }
            if let uri = incoming, uri != .deferred {
                incoming = nil
                migrationManager.startIncoming(uri)
            }
            if let name = loadvm {
                loadvm = nil
                migrationManager.startFromSnapshot(name)
            }
            for point in points { Self.apply(point, insert: true, to: board) }
            slices: while true {
                let requests = state.withLock { s in
                    defer { s.requests.removeAll() }
                    return s.requests
                }
                for request in requests { request(board) }
                // Read after the requests ran: one of them may just have stopped the machine.
                let (exitCode, reset, paused) = state.withLock { s in (s.life.exitCode, s.life.hostReset, s.life.paused) }
                if let exitCode { return exitCode }
                if reset { break slices }
                if paused {
                    board.clock.stop()
                    wake.wait()
                    board.clock.resume()
                    continue
                }
                let step = state.withLock { s in
                    defer { s.stepPending = nil }
                    return s.stepPending
                }
                switch step.map({ board.step(hart: $0) }) ?? board.run() {
                case .interrupted:
                    continue
                case .stepped:
                    debugStop(.stepped(thread: (step ?? 0) + 1))
                case .debugStop(let stop, let hart):
                    debugStop(Self.stopEvent(stop, hart: hart))
                case .powerOff(let code):
                    emit(.shutdown(guest: true, reason: "guest-shutdown"))
                    if setup.noShutdown {
                        // The board stays (its RAM and registers for the monitors) until
                        // system_reset builds the next one, or quit.
                        state.withLock { $0.life.guestShutdownStopped() }
                        emit(.stop)
                        continue
                    }
                    state.withLock { $0.life.runState = "shutdown" }
                    emitDebug(.exited(code: code))
                    return code
                case .reset:
                    emit(.reset(guest: true, reason: "guest-reset"))
                    if setup.noReboot {
                        emit(.shutdown(guest: true, reason: "guest-reset"))
                        return 0
                    }
                    break slices
                }
            }
        }
    }

    /// Runs `body` on the vCPU thread and returns its result (the command channel).
    func perform<T: Sendable>(_ body: @escaping @Sendable (RISCVBoard) -> T) -> T? {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<T?>(nil)
        // Queued even before the first board exists (an incoming migration may be loaded that
        // early): the vCPU loop serves requests as soon as it has a board.
        let (queued, board) = state.withLock { s -> (Bool, RISCVBoard?) in
            guard !s.finished else { return (false, nil) }
            s.requests.append { board in
                if let board { result.withLock { $0 = body(board) } }
                done.signal()
            }
            return (true, s.board)
        }
        guard queued else { return nil }
        board?.interrupt()
        wake.signal()
        done.wait()
        return result.withLock { $0 }
    }

    /// Wakes the vCPU thread if it waits while the machine is stopped.
    func wakeVCPUThread() { wake.signal() }

    func emit(_ event: MonitorEvent) {
        for listener in state.withLock({ $0.listeners }) { listener(event) }
    }

    func emitDebug(_ event: GDBStopEvent) {
        state.withLock { $0.debugger }?(event)
    }


    /// On the vCPU thread: a breakpoint, watchpoint or step stopped the machine for the
    /// debugger (QEMU's RUN_STATE_DEBUG).
    private func debugStop(_ event: GDBStopEvent) {
        state.withLock { s in
            s.life.paused = true
            s.life.runState = "debug"
        }
        emit(.stop)
        emitDebug(event)
    }

    // MARK: - MonitorTarget

    public var runState: String { state.withLock { $0.life.runState } }
    public var isRunning: Bool { runState == "running" }
    public var guestName: String? { setup.name }
    public var uuid: String? { setup.uuid }
    public var machineType: String { setup.machineType }
    public var machineList: [MonitorMachineType] { setup.machineList }
    public var commandLineOptions: [MonitorCommandLineOption] { setup.commandLineOptions }
    public var accelerators: [String] { setup.accelerators }
    public var peripherals: [(id: String, type: String)] { setup.peripherals }
    public var cpus: [MonitorCPU] {
        let (first, others) = state.withLock { s in (s.threadID, s.board?.secondaryThreadIDs ?? []) }
        return (0..<setup.cpus).map { i in
            // QEMU's virt: socket 0's harts under /machine/soc0, each with its core-id.
            MonitorCPU(index: i, threadID: i == 0 ? first : (i - 1 < others.count ? others[i - 1] : 0), target: "riscv64",
                       qomPath: "/machine/soc0/harts[\(i)]", coreID: i)
        }
    }
    public var blockDevices: [MonitorBlockDevice] { setup.blockDevices }
    public var chardevs: [(label: String, filename: String)] { setup.chardevs }

    public func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    func stop() { pause() }

    /// Stops a running machine; false if it was not running.
    @discardableResult
    func pause() -> Bool {
        let changed = perform { _ in
            self.state.withLock { $0.life.stop() }
        }
        guard changed == true else { return false }
        emit(.stop)
        emitDebug(.interrupted(thread: 1))
        return true
    }

    func cont() {
        waitForSnapshotAtStart()
        let changed = state.withLock { $0.life.cont() }
        if changed {
            wake.signal()
            emit(.resume)
        }
    }

    func systemReset() {
        let board = state.withLock { s -> RISCVBoard? in
            s.life.requestReset()
            return s.board
        }
        emit(.reset(guest: false, reason: "host-qmp-system-reset"))
        board?.interrupt()
        wake.signal()
    }

    /// The power button: KEY_POWER on the virtio keyboards (`-device virtio-keyboard-device`),
    /// which the guest turns into a clean shutdown. Without one the RISC-V virt board has no
    /// button the guest can see (QEMU's has none at all): POWERDOWN is announced and the
    /// guest runs on.
    func systemPowerdown() {
        emit(.powerdown)
        state.withLock { $0.board }?.keyboards.forEach { $0.pressPowerButton() }
    }

    public func execute(_ command: VMCommand) {
        switch command {
        case .stop: stop()
        case .cont: cont()
        case .systemReset: systemReset()
        case .systemPowerdown: systemPowerdown()
        case .quit(let reason): end(reason: reason)
        }
    }

    private func end(reason: String) {
        if state.withLock({ $0.life.announceEnd() }) { emit(.shutdown(guest: false, reason: reason)) }
        let board = state.withLock { s -> RISCVBoard? in
            s.life.end(code: 0)
            return s.board
        }
        board?.interrupt()
        wake.signal()
    }

    /// Ctrl-A s: writes the `-snapshot` overlays back into their images; one line per disk.
    public func commitSnapshots() -> String {
        perform { board in
            board.snapshotOverlays.map { overlay in
                do {
                    return "\(overlay.label): \(try overlay.commit()) changed clusters written back"
                } catch {
                    return "\(overlay.label): commit failed: \(error)"
                }
            }.joined(separator: "\n")
        } ?? ""
    }

    public func humanCommand(_ line: String) -> String? { humanCommand(line, cpuIndex: 0) }

    /// `info registers` and `x` apply to the monitor's current CPU (`cpu N`), as in QEMU.
    public func humanCommand(_ line: String, cpuIndex: Int) -> String? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let first = words.first else { return nil }
        @Sendable func hart(_ board: RISCVBoard) -> Hart { board.harts.indices.contains(cpuIndex) ? board.harts[cpuIndex] : board.hart }
        switch (first, words.dropFirst().first) {
        case ("info", "registers"):
            // hmp_info_registers: "\nCPU#N\n" and the dump with the FPU; -a: every hart.
            let all = words.dropFirst(2).contains("-a")
            return perform { board in
                let harts = all ? Array(board.harts.indices) : [board.harts.indices.contains(cpuIndex) ? cpuIndex : 0]
                return harts.map { "\nCPU#\($0)\n" + board.harts[$0].registerDump(fpu: true) }.joined()
            }
        case ("info", "jit"):
            return perform { MonitorText.jitInfo($0) }
        case ("info", "mtree"):
            return perform { MonitorText.memoryTree($0) }
        case ("info", "qtree"):
            return perform { MonitorText.deviceTree($0) }
        case ("x", _), ("xp", _):
            return perform { board in MonitorText.memoryDump(line, board: board, hart: hart(board)) }
        default:
            return nil
        }
    }
}
