import DeviceModel
import Dispatch
import GDBStub
import Glibc
import Machines
import QMP
import Synchronization
import SystemSupport

/// The RISC-V `virt`/`spike` machines under the interpreter or the JIT.
package typealias VirtualMachine = VMM<RISCVBoard>
/// `-M microvm -accel kvm`.
package typealias KVMMachine = VMM<X86MicroVM>

/// The VMM (DESIGN.md §1, §3, §4), one for every board: it builds the board (again at every
/// reset), runs it, owns the lifecycle (`Lifecycle`: prelaunch, running, paused, debug,
/// shutdown and the migration states) and serves the commands every control path sends — the
/// monitors, the console's Ctrl-A keys, signals, the debugger, the migration thread. It acts on
/// the machine only with every vCPU parked (`withParkedBoard`), and never asks which board it
/// runs: what differs lives behind `Board` and `ManagedBoard`.
///
/// Guest time while stopped: each board stops its clock with its vCPUs and resumes it where it
/// stopped (QEMU's virtual clock policy), so timers do not fire a burst after `cont`.
package final class VMM<Machine: ManagedBoard>: SetupDescribedTarget, Sendable {
    public typealias Setup = MachineSetup<Machine>

    struct State {
        var life: Lifecycle
        var board: Machine?
        var listeners: [@Sendable (MonitorEvent) -> Void] = []
        /// `withParkedBoard` calls in progress (the migration thread, the monitor, the
        /// debugger): while any runs, `cont` leaves the vCPUs parked and the last one to finish
        /// lets them run.
        var parkers = 0
        /// The attached debugger's stop listener (GDBTarget).
        var debugListener: (@Sendable (GDBStopEvent) -> Void)?
        /// The vCPU a debugger's step runs, until its stop is reported: work on the parked
        /// board meanwhile lets that step go on afterwards (`withParkedBoard`), not the machine.
        var steppingVCPU: Int?
        /// `run` returned: no board will come.
        var finished = false
        /// The first board is built, so `PostSetup` has confined the process (-chroot,
        /// -runas): see `waitForFirstBoard`.
        var firstBoardBuilt = false
        /// The thread in `run`, which builds the boards (0 before it starts).
        var runThread = 0
    }

    package let setup: Setup
    let state: Mutex<State>
    /// Held across each decision to park or run the vCPUs and the board's `pause`/`resume`
    /// (or `step`) that carries it out, so one caller's resume cannot land after another's
    /// pause (which would leave a "paused" machine running, or a pause waiting forever). No
    /// vCPU thread takes it: a debug stop only reports (`debugEvent`).
    let transitions = Mutex(())
    /// Signalled by `system_reset` and `quit` for a run waiting without a running board after
    /// a guest power-off under `-no-shutdown`.
    private let wake = DispatchSemaphore(value: 0)
    /// The GDB stub's breakpoints and watchpoints (VMM+GDB.swift), kept across resets.
    let debugger = Machine.Debugger()
    /// Snapshots and live migration (DESIGN.md §5; VMM+Migration.swift).
    let migrationManager = MigrationManager()
    /// The thread that made this VMM, which goes on to `run` it: it must never wait for a
    /// board (a monitor set up on it before `run` asks for the CPUs, say), since it builds them.
    private let creatorThread = HostThread.currentID()
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

    // MARK: - The run

    /// Runs the machine until it ends; returns the process exit status. A board that cannot
    /// go on (a triple fault, a KVM internal error) is thrown with its message.
    public func run() throws(SystemError) -> Int32 {
        let thread = HostThread.currentID()
        state.withLock { $0.runThread = thread }
        defer { state.withLock { $0.finished = true } }
        var incoming = setup.incoming
        var loadvm = setup.loadvm
        // The last board, kept until the next one is built: its disks' locks (retired by
        // `close`, so they do not refuse the new opens) keep the images protected across the
        // reopen.
        var previous: Machine?
        while true {
            if let code = state.withLock({ $0.life.exitCode }) { return code }
            let board = try setup.makeBoard()
            if previous != nil { previous = nil }  // the new board holds the disks now
            balloonHandle?.attach(board.balloon) { [weak self] event in self?.emit(event) }
            prepareForDebugger(board)
            let quitBeforeRun = transitions.withLock { _ in
                let (paused, quit) = state.withLock { s in
                    s.board = board
                    s.firstBoardBuilt = true
                    s.life.boardBuilt()
                    return (s.life.paused, s.life.exitCode)
                }
                // A stopped machine's board is held before its vCPUs start (-S, -incoming,
                // -loadvm, a reset while stopped); `cont` lets it go whenever it comes.
                if paused { board.pause() }
                return quit
            }
            // A quit while the board was being built found no board to power off: end here.
            if let quitBeforeRun { return quitBeforeRun }
            // The stream loads on the migration thread into this board, whose vCPUs park
            // before they first run (it starts paused) until the load completes.
            if let uri = incoming, uri != .deferred {
                incoming = nil
                migrationManager.startIncoming(uri)
            }
            if let name = loadvm {
                loadvm = nil
                migrationManager.startFromSnapshot(name)
            }
            let exit = try board.run()
            board.close()
            previous = board
            let (quitCode, hostReset) = state.withLock { s in
                // Under -no-shutdown a powered-off board stays for the monitors (its RAM and
                // registers) until the next is built.
                if !(setup.noShutdown && exit.isPowerOff) { s.board = nil }
                return (s.life.exitCode, s.life.hostReset)
            }
            if let quitCode { return quitCode }
            switch exit {
            case .powerOff(let code):
                emit(.shutdown(guest: true, reason: "guest-shutdown"))
                if setup.noShutdown {
                    // The next board is built at system_reset.
                    state.withLock { $0.life.guestShutdownStopped() }
                    emit(.stop)
                    while state.withLock({ $0.life.exitCode == nil && !$0.life.hostReset }) { wake.wait() }
                    continue
                }
                state.withLock { $0.life.runState = "shutdown" }
                report(.exited(code: code))
                return code
            case .reset:
                if !hostReset {
                    emit(.reset(guest: true, reason: "guest-reset"))
                    if setup.noReboot {
                        emit(.shutdown(guest: true, reason: "guest-reset"))
                        return 0
                    }
                }
                endStepAtReset()
            case .failed(let message):
                emit(.shutdown(guest: true, reason: "guest-panic"))
                throw SystemError(.badInput, message)
            }
        }
    }

    func emit(_ event: MonitorEvent) {
        for listener in state.withLock({ $0.listeners }) { listener(event) }
    }

    /// Tells the attached debugger (if any) why the machine stopped.
    func report(_ event: GDBStopEvent) {
        state.withLock { $0.debugListener }?(event)
    }

    /// Runs `body` on the current board with every vCPU parked; nil when the machine is ending
    /// (or its run is over). Before the first board is built (a monitor or debugger that
    /// connects at once, an incoming migration loaded that early) and between two boards, it
    /// waits for the next. Callers may overlap (the monitor, the debugger, the migration
    /// thread): the vCPUs run again only when the last one is done, and only if the machine
    /// is not stopped (`stop`, a migration's switch-over) by then.
    func withParkedBoard<T>(_ body: (Machine) throws -> T) rethrows -> T? {
        var board: Machine
        while true {
            let (candidate, ended) = transitions.withLock { _ -> (Machine?, Bool) in
                let (board, ended) = state.withLock { s -> (Machine?, Bool) in
                    guard s.life.exitCode == nil, !s.finished else { return (nil, true) }
                    guard let board = s.board else { return (nil, false) }
                    s.parkers += 1
                    return (board, false)
                }
                board?.pause()
                return (board, ended)
            }
            if ended { return nil }
            if let candidate {
                board = candidate
                break
            }
            guard mayWaitForBoard else { return nil }
            usleep(1_000)
        }
        defer {
            transitions.withLock { _ in
                let (resume, step) = state.withLock { s -> (Bool, Int?) in
                    s.parkers -= 1
                    return (s.parkers == 0 && !s.life.paused && s.board === board, s.steppingVCPU)
                }
                // A debugger's step that this work held back goes on, alone.
                if resume { if let step { board.step(vcpu: step) } else { board.resume() } }
            }
        }
        return try body(board)
    }

    /// Waits until the first board is built (or the run ends). The monitors serve from the
    /// start (a client may connect at once, as QEMU's do), but what they can make this process
    /// do to the host (start a program for `migrate exec:`, bind a port for `migrate-incoming`
    /// or `hostfwd_add`) waits for it: the process has then taken its -chroot root and its
    /// -runas identity (`PostSetup`, run once the first board is built, as QEMU's
    /// os_setup_post), so no monitor command acts with the privileges it started with.
    /// Everything that needs the board waits for it anyway (`withParkedBoard`).
    func waitForFirstBoard() {
        guard mayWaitForBoard else { return }
        while state.withLock({ !$0.firstBoardBuilt && $0.life.exitCode == nil && !$0.finished }) { usleep(1_000) }
    }

    /// False on the threads that build the boards (the creator, the one in `run`): a wait for
    /// a board there would never end.
    private var mayWaitForBoard: Bool {
        let me = HostThread.currentID()
        return me != creatorThread && me != state.withLock { $0.runThread }
    }

    // MARK: - Commands

    public func execute(_ command: VMCommand) {
        switch command {
        case .stop: stop()
        case .cont: cont()
        case .systemReset: systemReset()
        case .systemPowerdown: systemPowerdown()
        case .quit(let reason): end(reason: reason)
        }
    }

    /// Stops a running machine; false if it was not running. An attached debugger hears of
    /// it (QEMU's gdbstub reports every stop of the machine).
    @discardableResult
    func stop() -> Bool {
        let changed = transitions.withLock { _ in
            let (changed, board) = state.withLock { s -> (Bool, Machine?) in
                defer { s.steppingVCPU = nil }
                return (s.life.stop(), s.board)
            }
            // Between two boards (a reboot) there is nothing to park, but the machine is
            // stopped all the same: listeners (the NICs) must hear it.
            if changed { board?.pause() }
            return changed
        }
        guard changed else { return false }
        emit(.stop)
        report(.interrupted(thread: 1))
        return true
    }

    func cont() {
        waitForSnapshotAtStart()
        let changed = transitions.withLock { _ in
            let (changed, board) = state.withLock { s -> (Bool, Machine?) in
                guard s.life.cont() else { return (false, nil) }
                s.steppingVCPU = nil
                // While the migration code has the vCPUs parked, it lets them run when it is done.
                return (true, s.parkers == 0 ? s.board : nil)
            }
            board?.resume()
            return changed
        }
        guard changed else { return }
        emit(.resume)
    }

    func systemReset() {
        let board = state.withLock { s -> Machine? in
            s.life.requestReset()
            return s.board
        }
        emit(.reset(guest: false, reason: "host-qmp-system-reset"))
        board?.requestReset()
        wake.signal()
    }

    /// The power button: KEY_POWER on the virtio keyboards (`-device virtio-keyboard-device`),
    /// which the guest turns into a clean shutdown. Without one neither board has a button the
    /// guest can see (QEMU's RISC-V virt has none at all, its microvm no ACPI button):
    /// POWERDOWN is announced and the guest runs on.
    func systemPowerdown() {
        emit(.powerdown)
        state.withLock { $0.board }?.keyboards.forEach { $0.pressPowerButton() }
    }

    private func end(reason: String) {
        if state.withLock({ $0.life.announceEnd() }) { emit(.shutdown(guest: false, reason: reason)) }
        endRun(code: 0)
    }

    /// Ends the run with `code`, whatever the guest does.
    func endRun(code: Int32) {
        let board = state.withLock { s -> Machine? in
            s.life.end(code: code)
            return s.board
        }
        board?.requestPowerOff(exitCode: code)
        wake.signal()
    }

    /// Ctrl-A s: writes the `-snapshot` overlays back into their images, with the vCPUs parked
    /// so no request is half done; one line per disk.
    public func commitSnapshots() -> String {
        withParkedBoard { board in
            board.snapshotOverlays.map { overlay in
                do {
                    return "\(overlay.label): \(try overlay.commit()) changed clusters written back"
                } catch {
                    return "\(overlay.label): commit failed: \(error)"
                }
            }.joined(separator: "\n")
        } ?? ""
    }

    // MARK: - MonitorTarget

    public var runState: String { state.withLock { $0.life.runState } }
    public var isRunning: Bool { runState == "running" }
    public var targetArch: String { Machine.targetArch }
    public var kvmEnabled: Bool { Machine.kvmEnabled }
    public var blockDevices: [MonitorBlockDevice] { setup.blockDevices }
    public var balloon: (any BalloonControl)? { balloonHandle }

    public var cpus: [MonitorCPU] {
        // libvirt reads the vCPU threads' ids right after start (to place them in its cgroups,
        // and refuses a machine that gives none): wait for the first board and, briefly, for
        // its threads, which `Board.run` is starting.
        waitForFirstBoard()
        var threads: [Int] = []
        for _ in 0..<(mayWaitForBoard ? 2_000 : 1) {
            guard let board = state.withLock({ $0.board }) else { break }
            threads = board.vcpuThreadIDs
            if !threads.contains(0) { break }
            usleep(1_000)
        }
        return (0..<setup.cpus).map { Machine.monitorCPU(index: $0, threadID: $0 < threads.count ? threads[$0] : 0) }
    }

    /// The virtio keyboards of the current board, when it has any (`send-key`, `sendkey`).
    public var keyboard: (any KeyboardControl)? {
        state.withLock { $0.board }.flatMap { board in board.keyboards.isEmpty ? nil : Keyboards(board.keyboards) }
    }

    public func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    /// The board's views (`info registers`, for the monitor's current CPU, `cpu N`, as in
    /// QEMU), made with the vCPUs parked.
    public func machineView(_ view: MachineView, cpuIndex: Int) -> String? {
        guard let work = Machine.machineView(view, cpuIndex: cpuIndex) else { return nil }
        return withParkedBoard(work) ?? "the machine has no board now\n"
    }
}

extension BoardExit {
    var isPowerOff: Bool {
        if case .powerOff = self { return true }
        return false
    }
}
