import Block
import DeviceModel
import Glibc
import Machines
import Migration
import QMP
import SystemSupport

/// The RISC-V VMM as the migration code sees it (DESIGN.md §5).
extension VirtualMachine: MigrationHost, LifecycleOwner {
    func withLifecycle<T>(_ body: (inout Lifecycle) -> T) -> T { state.withLock { body(&$0.life) } }
    var startsPaused: Bool { setup.startPaused }
    var incomingDisks: IncomingDisks { setup.incomingDisks }

    public var migration: (any MigrationControl)? { migrationManager }
    public var network: (any NetworkControl)? { setup.network }

    func parked<T: Sendable>(_ body: @escaping @Sendable (any MigratableMachine) -> T) -> T? {
        perform { board in body(board) }
    }

    func stopForMigration() -> Bool {
        let wasRunning = pause()
        // QEMU's RUN_STATE_FINISH_MIGRATE while the last pass and the device states go.
        state.withLock { $0.life.runState = "finish-migrate" }
        return wasRunning
    }

    func failAtStart(_ message: String) {
        ErrorReport.report(message)
        let board = state.withLock { s -> RISCVBoard? in
            s.life.end(code: 1)
            return s.board
        }
        board?.interrupt()
        wakeVCPUThread()
    }

    func stopForSnapshot(loading: Bool) -> Bool {
        let wasRunning = pause()
        state.withLock { $0.life.runState = loading ? "restore-vm" : "save-vm" }
        return wasRunning
    }

    var disks: [(device: String, backend: any BlockBackend)] {
        setup.named(perform { board in board.disks } ?? [])
    }

    func setThrottle(percent: Int) {
        state.withLock { $0.board }?.setThrottle(percent: percent)
    }
}
