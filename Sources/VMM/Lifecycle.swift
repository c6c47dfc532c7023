import Glibc

/// The run state of a machine (DESIGN.md §3, "The machine core"): QEMU's RunState, whether
/// the vCPUs are held, and how the run ends, with the transitions each `VMCommand` and each
/// snapshot or migration step makes. `VMM` keeps one inside its locked state (as `EmptyMachine`,
/// `-M none`, does) and parks or resumes the board around the transition.
struct Lifecycle {
    /// QEMU's RunState names: "prelaunch", "running", "paused", "debug", "inmigrate",
    /// "finish-migrate", "postmigrate", "shutdown".
    var runState: String
    /// The vCPUs are held (stopped, or not started yet).
    var paused: Bool
    /// Set when the run must end with this status whatever the guest does (quit, a refused
    /// incoming stream).
    var exitCode: Int32?
    /// The host asked for a reset (`system_reset`): the board is built again.
    var hostReset = false
    /// `cont` arrived during an incoming migration: run once it is loaded (QEMU's autostart).
    var startAfterIncoming = false
    /// `-loadvm` is loading the snapshot the machine starts from (on its own thread; QEMU
    /// loads it before the monitor answers anything, so a `cont` waits for it:
    /// `LifecycleOwner.waitForSnapshotAtStart`).
    var loadingAtStart: Bool
    /// The host asked the run to end (`quit`, a signal) and its SHUTDOWN event is announced.
    var endAnnounced = false

    init<Board>(_ setup: MachineSetup<Board>) {
        // With -S the machine is stopped from the start and, as QEMU's, reports "prelaunch"
        // (not "paused") until the first `cont`; with -incoming it waits, stopped, in
        // "inmigrate" until the stream is loaded; with -loadvm it starts once loaded.
        runState = setup.incoming == nil ? "prelaunch" : "inmigrate"
        paused = setup.startPaused || setup.incoming != nil || setup.loadvm != nil
        loadingAtStart = setup.loadvm != nil
    }

    var isRunning: Bool { runState == "running" }

    /// A board was (re)built. QEMU's main_loop_should_exit: a machine built while stopped
    /// (-S, or a reset while paused) is in "prelaunch" until `cont`.
    mutating func boardBuilt() {
        hostReset = false
        if runState != "inmigrate" { runState = paused ? "prelaunch" : "running" }
    }

    /// `stop` (or a debugger's stop, `as: "debug"`); false when already stopped.
    mutating func stop(as state: String = "paused") -> Bool {
        guard !paused else { return false }
        paused = true
        runState = state
        return true
    }

    /// `cont`; false when there is nothing to resume (running, ended, or loading an incoming
    /// machine, which then runs once loaded) or the machine must stay stopped until a
    /// migration's last pass or a snapshot is done (QEMU's qmp_cont refuses there too).
    mutating func cont() -> Bool {
        if runState == "inmigrate" {
            startAfterIncoming = true
            return false
        }
        return resumeForStep()
    }

    /// A debugger's step (or `cont`): the machine runs, unless it is running already, loading
    /// an incoming machine, or held by a migration's last pass, a snapshot or a power-off.
    mutating func resumeForStep() -> Bool {
        guard paused, !["shutdown", "finish-migrate", "save-vm", "restore-vm", "inmigrate"].contains(runState) else { return false }
        paused = false
        runState = "running"
        return true
    }

    /// The host asks the run to end: true the first time, when the caller announces SHUTDOWN.
    /// The event goes out before `end(code:)` lets the vCPU loop leave (as QEMU's
    /// main_loop_should_exit sends it before leaving its loop), so a monitor client always
    /// reads it before swemu closes the connection.
    mutating func announceEnd() -> Bool {
        defer { endAnnounced = true }
        return !endAnnounced && exitCode == nil
    }

    /// The guest powered off under `-no-shutdown`: stopped in "shutdown" (QEMU's
    /// vm_stop(RUN_STATE_SHUTDOWN)), which `cont` refuses until a reset builds the board again.
    mutating func guestShutdownStopped() {
        paused = true
        runState = "shutdown"
    }

    /// `system_reset`: the board is built again. A machine stopped by a guest power-off is
    /// then in "prelaunch" at once (as QEMU's after its reset), so a `cont` right after runs it.
    mutating func requestReset() {
        hostReset = true
        if runState == "shutdown" && exitCode == nil { runState = "prelaunch" }
    }

    /// The run ends with `code` (the first decision wins).
    mutating func end(code: Int32) {
        if exitCode == nil { exitCode = code }
        runState = "shutdown"
    }

    /// A migration stops the machine for its last pass; returns whether it was running.
    mutating func finishMigrate() -> Bool {
        let wasRunning = !paused
        paused = true
        runState = "finish-migrate"
        return wasRunning
    }

    /// The incoming machine is loaded; returns whether it should run now.
    mutating func incomingLoaded(startPaused: Bool) -> Bool {
        loadingAtStart = false
        runState = startPaused ? "paused" : "prelaunch"
        return !startPaused || startAfterIncoming
    }
}
