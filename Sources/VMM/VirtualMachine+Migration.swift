import Block
import DeviceModel
import Glibc
import Machines
import Migration
import QMP
import SystemSupport

/// The RISC-V VMM as the migration code sees it (DESIGN.md §5).
extension VirtualMachine: MigrationHost {
    public var migration: (any MigrationControl)? { migrationManager }

    func parked<T: Sendable>(_ body: @escaping @Sendable (any MigratableMachine) -> T) -> T? {
        perform { board in body(board) }
    }

    func stopForMigration() -> Bool {
        let wasRunning = pause()
        // QEMU's RUN_STATE_FINISH_MIGRATE while the last pass and the device states go.
        state.withLock { $0.life.runState = "finish-migrate" }
        return wasRunning
    }

    func resumeAfterMigration(wasRunning: Bool) {
        state.withLock { $0.life.runState = "paused" }
        if wasRunning { cont() }
    }

    func migrationCompleted() {
        state.withLock { $0.life.runState = "postmigrate" }
    }

    func incomingCompleted() {
        setup.incomingDisks.pending.store(false, ordering: .sequentiallyConsistent)
        let start = state.withLock { s -> Bool in
            s.life.incomingLoaded(startPaused: setup.startPaused)
        }
        if start { cont() }
    }

    func failAtStart(_ message: String) {
        _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
        let board = state.withLock { s -> RISCVBoard? in
            s.life.end(code: 1)
            return s.board
        }
        board?.interrupt()
        wakeVCPUThread()
    }

    func stopForSnapshot() -> Bool { pause() }

    func resumeAfterSnapshot() { cont() }

    var disks: [(device: String, backend: any BlockBackend)] {
        let names = setup.blockDevices.map(\.device)
        let backends = perform { board in board.disks } ?? []
        return backends.enumerated().map { index, backend in (index < names.count ? names[index] : "virtio\(index)", backend) }
    }

    func setThrottle(percent: Int) {
        state.withLock { $0.board }?.setThrottle(percent: percent)
    }
}
