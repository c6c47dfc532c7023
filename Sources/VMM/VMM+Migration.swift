import Block
import DeviceModel
import Glibc
import Machines
import Migration
import QMP
import SystemSupport

/// The VMM as the migration code sees it (DESIGN.md §5): QMP/HMP `migrate`, `query-migrate`,
/// snapshots and `-incoming`, for every board.
///
/// Dirty pages: where the accelerator logs the vCPUs' writes itself (KVM), each `parked` merges
/// that log into the RAM's dirty bitmap before its body (the migration code takes the dirty
/// pages there, and the last look, with the machine stopped, misses nothing) and after it (the
/// body may have started or stopped tracking: the log follows); `collectDirtyPages` merges it
/// after each pass, so the estimate of what remains counts the vCPUs' writes. The RISC-V harts
/// mark the bitmap as they write, and their merge does nothing.
extension VMM: MigrationHost {
    func migrationCompleted() {
        state.withLock { $0.life.runState = "postmigrate" }
    }

    func resumeAfterMigration(wasRunning: Bool) {
        state.withLock { $0.life.runState = "paused" }
        if wasRunning { cont() }
    }

    func resumeAfterSnapshot(wasRunning: Bool) { resumeAfterMigration(wasRunning: wasRunning) }

    /// QEMU loads `-loadvm`'s snapshot before its monitor answers; here it loads on its own
    /// thread, so a `cont` (libvirt sends one right after starting a snapshot's machine) waits
    /// for it, then runs the loaded machine.
    func waitForSnapshotAtStart() {
        while state.withLock({ $0.life.loadingAtStart && $0.life.exitCode == nil }) { usleep(2_000) }
    }

    func incomingCompleted() {
        setup.incomingDisks.pending.store(false, ordering: .sequentiallyConsistent)
        let paused = setup.startPaused
        if state.withLock({ $0.life.incomingLoaded(startPaused: paused) }) { cont() }
    }

    /// Both wait for the first board (`waitForFirstBoard`): their commands act on the host.
    public var migration: (any MigrationControl)? {
        waitForFirstBoard()
        return migrationManager
    }

    public var network: (any NetworkControl)? {
        waitForFirstBoard()
        return setup.network
    }

    func parked<T: Sendable>(_ body: @escaping @Sendable (any MigratableMachine) -> T) -> T? {
        withParkedBoard { board in
            board.syncDirtyLog()
            defer { board.syncDirtyLog() }
            return body(board)
        }
    }

    /// Needs no parked vCPUs: what they write meanwhile is in this look or the next.
    func collectDirtyPages() {
        state.withLock { $0.board }?.syncDirtyLog()
    }

    func stopForMigration() -> Bool {
        let wasRunning = transitions.withLock { _ in
            let (board, wasRunning) = state.withLock { s -> (Machine?, Bool) in
                s.steppingVCPU = nil
                // QEMU's RUN_STATE_FINISH_MIGRATE while the last pass and the device states go.
                return (s.board, s.life.finishMigrate())
            }
            board?.pause()
            return wasRunning
        }
        if wasRunning { emit(.stop) }
        return wasRunning
    }

    func stopForSnapshot(loading: Bool) -> Bool {
        let wasRunning = stop()
        state.withLock { $0.life.runState = loading ? "restore-vm" : "save-vm" }
        return wasRunning
    }

    var disks: [(device: String, backend: any BlockBackend)] {
        setup.named(state.withLock { $0.board }?.disks ?? [])
    }

    func failAtStart(_ message: String) {
        ErrorReport.report(message)
        endRun(code: 1)
    }

    func setThrottle(percent: Int) {
        state.withLock { $0.board }?.setThrottle(percent: percent)
    }
}
