import DeviceModel
import Dispatch
import Machines
import QMP
import Synchronization
import SystemSupport

/// The VMM for `-M microvm -accel kvm` (DESIGN.md §1, §4): runs an `X86MicroVM` (one thread
/// per vCPU, started by the board), rebuilds it on guest reset, and serves the monitors'
/// requests. Unlike the RISC-V VMM, requests do not need the vCPU threads: the board pauses and
/// resumes them itself, and registers are read while they are parked.
public final class KVMMachine: MonitorTarget, Sendable {
    public typealias Setup = MachineSetup<X86MicroVM>

    struct State {
        var life: Lifecycle
        var board: X86MicroVM?
        var listeners: [@Sendable (MonitorEvent) -> Void] = []
        /// `withParkedBoard` calls in progress (the migration thread, the monitor, the
        /// debugger): while any runs, `cont` leaves the vCPUs parked and the last one to finish
        /// lets them run.
        var parkers = 0
    }

    let setup: Setup
    let state: Mutex<State>
    /// Signalled by `system_reset` and `quit` for a run waiting without a board after a guest
    /// power-off under `-no-shutdown`.
    private let wake = DispatchSemaphore(value: 0)
    /// The GDB stub's breakpoints, watchpoints and stop listener (KVMMachine+GDB.swift).
    let debugger = KVMDebugger()
    /// Live migration and saving to streams (DESIGN.md §5; KVMMachine+Migration.swift).
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

    /// Runs the machine until it ends; returns the process exit status. A triple fault or
    /// KVM internal error is thrown with the board's message and register dump.
    public func run() throws(SystemError) -> Int32 {
        var incoming = setup.incoming
        var loadvm = setup.loadvm
        // The last board, kept until the next one is built: its disks' locks (retired, so they
        // do not refuse the new opens) keep the images protected across the reopen.
        var previous: X86MicroVM?
        while true {
            if let code = state.withLock({ $0.life.exitCode }) { return code }
            let board = try setup.makeBoard()
            if previous != nil { previous = nil }  // the new board holds the disks now
            balloonHandle?.attach(board.balloon) { [weak self] event in self?.emit(event) }
            prepareForDebugger(board)
            let (paused, quitBeforeRun) = state.withLock { s in
                s.board = board
                s.life.boardBuilt()
                return (s.life.paused, s.life.exitCode)
            }
            // A quit while the board was being built found no board to power off: end here.
            if let quitBeforeRun { return quitBeforeRun }
            // The stream loads on the migration thread into this board, whose vCPUs park
            // before they first enter the guest (it starts paused) until the load completes.
            if let uri = incoming, uri != .deferred {
                incoming = nil
                migrationManager.startIncoming(uri)
            }
            if let name = loadvm {
                loadvm = nil
                migrationManager.startFromSnapshot(name)
            }
            let exit = try board.run(startPaused: paused)
            board.retireDiskLocks()
            previous = board
            let (quitCode, hostReset) = state.withLock { s in
                s.board = nil
                return (s.life.exitCode, s.life.hostReset)
            }
            if let quitCode { return quitCode }
            switch exit {
            case .powerOff(let code):
                emit(.shutdown(guest: true, reason: "guest-shutdown"))
                if setup.noShutdown {
                    // The vCPUs are gone with the board; the next one is built at system_reset.
                    state.withLock { $0.life.guestShutdownStopped() }
                    emit(.stop)
                    while state.withLock({ $0.life.exitCode == nil && !$0.life.hostReset }) { wake.wait() }
                    continue
                }
                state.withLock { $0.life.runState = "shutdown" }
                debugger.report(.exited(code: code))
                return code
            case .reset:
                if hostReset { continue }
                emit(.reset(guest: true, reason: "guest-reset"))
                if setup.noReboot {
                    emit(.shutdown(guest: true, reason: "guest-reset"))
                    return 0
                }
            case .failed(let message):
                emit(.shutdown(guest: true, reason: "guest-panic"))
                throw SystemError(.badInput, message)
            }
        }
    }

    func emit(_ event: MonitorEvent) {
        for listener in state.withLock({ $0.listeners }) { listener(event) }
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
        let vcpus = state.withLock { $0.board?.vcpus } ?? []
        return vcpus.map { MonitorCPU(index: $0.id, threadID: $0.threadID, target: "x86_64", qomPath: "/machine/unattached/device[\($0.id)]") }
    }
    /// The microVM runs on KVM.
    public var kvmEnabled: Bool { true }
    public var targetArch: String { "x86_64" }
    public var blockDevices: [MonitorBlockDevice] { setup.blockDevices }
    public var chardevs: [(label: String, filename: String)] { setup.chardevs }

    public func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    func stop() {
        let (changed, board) = state.withLock { s -> (Bool, X86MicroVM?) in
            (s.life.stop(), s.board)
        }
        guard changed else { return }
        // Between two boards (a reboot) there is nothing to park, but the machine is stopped
        // all the same: listeners (the NICs) must hear it.
        board?.pause()
        emit(.stop)
    }

    func cont() {
        waitForSnapshotAtStart()
        let (changed, board) = state.withLock { s -> (Bool, X86MicroVM?) in
            guard s.life.cont() else { return (false, nil) }
            // While the migration code has the vCPUs parked, it lets them run when it is done.
            return (true, s.parkers == 0 ? s.board : nil)
        }
        guard changed else { return }
        board?.resume()
        emit(.resume)
    }

    func systemReset() {
        let board = state.withLock { s -> X86MicroVM? in
            s.life.requestReset()
            return s.board
        }
        emit(.reset(guest: false, reason: "host-qmp-system-reset"))
        board?.requestReset()
        wake.signal()
    }

    /// The power button: KEY_POWER on the virtio keyboards, as on the RISC-V board. The
    /// microvm has no ACPI power button: without a keyboard POWERDOWN is announced and the
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
        let board = state.withLock { s -> X86MicroVM? in
            s.life.end(code: 0)
            return s.board
        }
        board?.requestPowerOff(exitCode: 0)
        wake.signal()
    }

    /// Runs `body` on the current board with every vCPU parked; nil when there is none (or
    /// the machine is ending). Callers may overlap (the monitor, the debugger, the migration
    /// thread): the vCPUs run again only when the last one is done, and only if the machine
    /// is not stopped (`stop`, a migration's switch-over) by then.
    func withParkedBoard<T>(_ body: (X86MicroVM) throws -> T) rethrows -> T? {
        let board = state.withLock { s -> X86MicroVM? in
            guard let board = s.board, s.life.exitCode == nil else { return nil }
            s.parkers += 1
            return board
        }
        guard let board else { return nil }
        defer {
            let resume = state.withLock { s -> Bool in
                s.parkers -= 1
                return s.parkers == 0 && !s.life.paused && s.board === board
            }
            if resume { board.resume() }
        }
        board.pause()
        return try body(board)
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

    public func humanCommand(_ line: String) -> String? { humanCommand(line, cpuIndex: 0) }

    public func humanCommand(_ line: String, cpuIndex: Int) -> String? {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, words[0] == "info", words[1] == "registers" else { return nil }
        // KVM_GET_REGS waits for KVM_RUN to return, so the vCPUs park while it reads.
        let dump = withParkedBoard { board in
            board.vcpus.indices.contains(cpuIndex) ? board.vcpus[cpuIndex].registerDump() : nil
        }
        guard let dump, let dump else { return "no such CPU\n" }
        return dump + "\n"
    }
}
