import DeviceModel
import Glibc
import Machines
import Migration
import QMP
import SystemSupport

/// The KVM VMM as the migration code sees it (DESIGN.md §5), as VirtualMachine+Migration.swift
/// is the RISC-V one's: QMP/HMP `migrate`, `query-migrate` and `-incoming` for
/// `-M microvm -accel kvm`.
///
/// Dirty pages: KVM logs the vCPUs' writes, not this process, so each `parked` merges KVM's
/// log into the RAM's dirty bitmap before its body (the migration code takes the dirty pages
/// there, and the last look, with the machine stopped, misses nothing) and after it (the body
/// may have started or stopped tracking: KVM's logging follows); `collectDirtyPages` merges it
/// after each pass, so the estimate of what remains counts the vCPUs' writes.
extension KVMMachine: MigrationHost, LifecycleOwner {
    func withLifecycle<T>(_ body: (inout Lifecycle) -> T) -> T { state.withLock { body(&$0.life) } }
    var startsPaused: Bool { setup.startPaused }
    var incomingDisks: IncomingDisks { setup.incomingDisks }

    public var migration: (any MigrationControl)? { migrationManager }
    public var network: (any NetworkControl)? { setup.network }

    func parked<T: Sendable>(_ body: @escaping @Sendable (any MigratableMachine) -> T) -> T? {
        // An incoming migration may be loaded before the first board is built: wait for it.
        while state.withLock({ $0.board == nil && $0.life.exitCode == nil }) { usleep(5_000) }
        return withParkedBoard { board in
            board.syncDirtyLog()
            defer { board.syncDirtyLog() }
            return body(board)
        }
    }

    /// KVM_GET_DIRTY_LOG needs no parked vCPUs: what they write meanwhile is in this look
    /// or the next.
    func collectDirtyPages() {
        state.withLock { $0.board }?.syncDirtyLog()
    }

    func stopForMigration() -> Bool {
        let (board, wasRunning) = state.withLock { s -> (X86MicroVM?, Bool) in
            // QEMU's RUN_STATE_FINISH_MIGRATE while the last pass and the device states go.
            (s.board, s.life.finishMigrate())
        }
        board?.pause()
        if wasRunning { emit(.stop) }
        return wasRunning
    }

    func stopForSnapshot(loading: Bool) -> Bool {
        let wasRunning = runState == "running"
        stop()
        state.withLock { $0.life.runState = loading ? "restore-vm" : "save-vm" }
        return wasRunning
    }

    var disks: [(device: String, backend: any BlockBackend)] {
        setup.named(state.withLock { $0.board }?.disks ?? [])
    }

    func failAtStart(_ message: String) {
        ErrorReport.report(message)
        let board = state.withLock { s -> X86MicroVM? in
            s.life.end(code: 1)
            return s.board
        }
        board?.requestPowerOff(exitCode: 1)
    }

    /// Auto-converge has nothing to slow here: KVM runs the vCPUs, and swemu does not take
    /// their time away (QEMU throttles KVM vCPUs by making them sleep in its own loop, which
    /// PVM's cost per exit would make coarse). Migrations converge on the downtime limit alone.
    func setThrottle(percent: Int) {}
}
