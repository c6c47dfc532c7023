import Dispatch
import QMP
import Synchronization

/// `-M none`: a machine with no CPU and no devices, whose monitors still answer. Management
/// tools start QEMU so to ask what it can do (libvirt's capability probe: `-S -nodefaults
/// -machine none -qmp ...`), so the run states and events are QEMU's: "prelaunch" with `-S`,
/// else "running"; `stop`/`cont` move between them with STOP/RESUME, `system_reset` and
/// `system_powerdown` raise their events, and `quit` (or a signal, or Ctrl-A x) ends the run.
package final class EmptyMachine: SetupDescribedTarget, Sendable {
    private struct State {
        var life: Lifecycle
        var listeners: [@Sendable (MonitorEvent) -> Void] = []
    }

    package let setup: MachineSetup<Void>
    private let state: Mutex<State>
    private let ended = DispatchSemaphore(value: 0)
    /// `query-target` and `query-kvm` answer for the binary, CPU or not ("riscv64", KVM on x86-64).
    public let targetArch: String
    public let kvmEnabled: Bool

    public init(_ setup: MachineSetup<Void>, targetArch: String, kvmEnabled: Bool) {
        self.setup = setup
        self.targetArch = targetArch
        self.kvmEnabled = kvmEnabled
        var life = Lifecycle(setup)
        life.boardBuilt()
        state = Mutex(State(life: life))
    }

    /// Waits until the run ends (`quit`); returns the exit status.
    public func run() -> Int32 {
        ended.wait()
        return state.withLock { $0.life.exitCode ?? 0 }
    }

    public var runState: String { state.withLock { $0.life.runState } }
    public var isRunning: Bool { runState == "running" }
    public var cpus: [MonitorCPU] { [] }
    public var blockDevices: [MonitorBlockDevice] { [] }
    public func machineView(_ view: MachineView, cpuIndex: Int) -> String? { nil }

    public func addEventListener(_ listener: @escaping @Sendable (MonitorEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    public func execute(_ command: VMCommand) {
        switch command {
        case .stop:
            if state.withLock({ $0.life.stop() }) { emit(.stop) }
        case .cont:
            if state.withLock({ $0.life.cont() }) { emit(.resume) }
        case .systemReset:
            emit(.reset(guest: false, reason: "host-qmp-system-reset"))
        case .systemPowerdown:
            emit(.powerdown)
        case .quit(let reason):
            let first = state.withLock { s in
                defer { s.life.end(code: 0) }
                return s.life.announceEnd()
            }
            guard first else { return }
            emit(.shutdown(guest: false, reason: reason))
            ended.signal()
        }
    }

    private func emit(_ event: MonitorEvent) {
        for listener in state.withLock({ $0.listeners }) { listener(event) }
    }
}
