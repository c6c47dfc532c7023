import Block
import DeviceModel
import Dispatch
import Glibc
import GuestMemory
import Migration
import QMP
import Synchronization
import SystemSupport

/// What the migration code needs of a VMM (DESIGN.md §3, §5): the machine with every vCPU
/// parked, stopping it for the switch-over, and the events. `VMM` implements it.
protocol MigrationHost: AnyObject, Sendable {
    /// Runs `body` on the machine with every vCPU parked; nil when the machine has ended.
    func parked<T: Sendable>(_ body: @escaping @Sendable (any MigratableMachine) -> T) -> T?
    /// Stops the machine for the last pass; returns whether it was running.
    func stopForMigration() -> Bool
    /// A migration that had stopped the machine for its last pass failed or was cancelled: the
    /// machine runs again if it was running, else it is back in "paused".
    func resumeAfterMigration(wasRunning: Bool)
    /// The migration completed: the machine stays stopped, in "postmigrate".
    func migrationCompleted()
    /// The incoming machine is loaded: it runs (or stays stopped with -S).
    func incomingCompleted()
    /// The machine must not run (a refused incoming stream, a `-loadvm` that failed): swemu
    /// reports `message` (ErrorReport) and ends with status 1, as QEMU does.
    func failAtStart(_ message: String)
    /// Stops the machine for `savevm` (`loading`: `loadvm`), in QEMU's RUN_STATE_SAVE_VM /
    /// RESTORE_VM until `resumeAfterSnapshot`; returns whether it was running.
    func stopForSnapshot(loading: Bool) -> Bool
    /// The snapshot operation is over: the machine runs again if it was running, else it is
    /// back in "paused".
    func resumeAfterSnapshot(wasRunning: Bool)
    /// The machine's disks, with the names the monitors use.
    var disks: [(device: String, backend: any BlockBackend)] { get }
    /// Slows the vCPUs to this percent of their time asleep (auto-converge); 0 runs them free.
    func setThrottle(percent: Int)
    func emit(_ event: MonitorEvent)
    var isRunning: Bool { get }
    /// Merges the pages the accelerator logged by itself (KVM's dirty log) into the RAM's
    /// dirty bitmap, with the vCPUs running, so the estimate of what remains counts them.
    func collectDirtyPages()
}

extension MigrationHost {
    /// QEMU's "load of migration failed", and the process ends with status 1.
    func incomingFailed(_ error: SystemError) { failAtStart("load of migration failed: \(error)") }
}

/// Live migration and snapshots of one machine, both directions (DESIGN.md §5): the monitor
/// commands' state, and the pre-copy algorithm on a thread of its own.
final class MigrationManager: MigrationControl, @unchecked Sendable {
    // SAFETY: every mutable field is inside `state`; `host` is set once, before any command.
    struct State {
        var info = MigrationInfo()
        var parameters = MigrationParameters()
        var capabilities: [String: Bool] = [:]
        var running = false
        /// `-incoming defer` waits for `migrate-incoming`.
        var awaitingIncoming = false
        /// Snapshot jobs until dismissed, and their order.
        var jobs: [String: SnapshotJob] = [:]
        var jobOrder: [String] = []
    }
    let state = Mutex(State())
    private let cancelled = Atomic<Bool>(false)
    weak var host: (any MigrationHost)?

    // MARK: MigrationControl

    func migrate(uri text: String) throws(QMPError) {
        let uri: MigrationURI
        do { uri = try MigrationURI.parse(text, incoming: false) } catch { throw .generic(error.message) }
        guard let host else { throw .generic("the machine has ended") }
        if let blocker = host.parked({ $0.migrationBlocker }) ?? nil { throw .generic(blocker) }
        // Refused here, as QEMU's spawn failure is, rather than by the migration thread.
        if case .exec(let command) = uri {
            do { try Spawning.check("exec:\(command)") } catch { throw .generic(error.message) }
        }
        let started = state.withLock { s -> Bool in
            guard !s.running, !s.awaitingIncoming else { return false }
            s.running = true
            s.info = MigrationInfo()
            return true
        }
        guard started else { throw .generic("There's a migration process in progress") }
        cancelled.store(false, ordering: .sequentiallyConsistent)
        setStatus("setup")
        do {
            try HostThread.spawn(name: "migration") { [self] in runSource(uri, host: host) }
        } catch {
            fail(error.message)
            throw .generic(error.message)
        }
    }

    func migrateIncoming(uri text: String) throws(QMPError) {
        let uri: MigrationURI
        do { uri = try MigrationURI.parse(text, incoming: true) } catch { throw .generic(error.message) }
        guard uri != .deferred else { throw .generic("'defer' is only for -incoming") }
        let ok = state.withLock { s -> Bool in
            guard s.awaitingIncoming else { return false }
            s.awaitingIncoming = false
            return true
        }
        guard ok else { throw .generic("The incoming migration has not been requested with -incoming defer, or has started already") }
        startIncoming(uri)
    }

    func migrateCancel() {
        let running = state.withLock { $0.running }
        guard running else { return }
        cancelled.store(true, ordering: .sequentiallyConsistent)
        setStatus("cancelling")
    }

    var migrationInfo: MigrationInfo { state.withLock { $0.info } }
    var migrationParameters: MigrationParameters { state.withLock { $0.parameters } }

    func setMigrationParameters(_ parameters: MigrationParameters) throws(QMPError) {
        guard parameters.downtimeLimitMs <= 2_000_000 else {
            throw .generic("Parameter 'downtime_limit' expects an integer in the range of 0 to 2000000 milliseconds")
        }
        guard (1...99).contains(parameters.cpuThrottleInitial), (1...100).contains(parameters.cpuThrottleIncrement) else {
            throw .generic("Parameter 'cpu_throttle_initial' expects an integer in the range of 1 to 99")
        }
        state.withLock { $0.parameters = parameters }
    }

    var migrationCapabilities: [(name: String, state: Bool)] {
        let caps = state.withLock { $0.capabilities }
        return MigrationCapabilities.names.map { ($0, caps[$0] ?? false) }
    }

    func setMigrationCapability(_ name: String, _ on: Bool) throws(QMPError) {
        guard MigrationCapabilities.names.contains(name) else { throw .generic("Parameter 'capability' does not accept value '\(name)'") }
        guard !on || MigrationCapabilities.supported.contains(name) else { throw .generic("swemu does not support the migration capability '\(name)'") }
        let ok = state.withLock { s -> Bool in
            guard !s.running else { return false }
            s.capabilities[name] = on
            return true
        }
        guard ok else { throw .generic("There's a migration process in progress") }
    }


    // MARK: Status

    private func setStatus(_ status: String) {
        let events = state.withLock { s -> Bool in
            s.info.status = status
            return s.capabilities["events"] ?? false
        }
        if events { host?.emit(.migration(status: status)) }
    }

    private func fail(_ message: String) {
        let wasCancelled = cancelled.load(ordering: .sequentiallyConsistent)
        state.withLock { s in
            s.running = false
            if !wasCancelled { s.info.errorDescription = message }
        }
        setStatus(wasCancelled ? "cancelled" : "failed")
    }

    private var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    // MARK: Source

    static func milliseconds(since start: Int64) -> Int64 { (VirtualClock.hostMonotonicNanoseconds() - start) / 1_000_000 }

    /// Pre-copy: every page, then passes over the pages written meanwhile until what is left
    /// fits the downtime limit at the measured bandwidth; then the machine stops for the last
    /// pass and the device states; on sockets, the source waits for the destination's word
    /// that it runs before it gives the machine up.
    private func runSource(_ uri: MigrationURI, host: any MigrationHost) {
        let start = VirtualClock.hostMonotonicNanoseconds()
        var channel: MigrationChannel?
        var stoppedAt: Int64?
        var wasRunning = false
        var tracking = false
        var disksHandedOver = false
        do throws(SystemError) {
            let opened = try MigrationChannel.open(uri, outgoing: true) { self.isCancelled }
            channel = opened
            // max-bandwidth is read again as the stream goes: a change applies at once.
            let limiter = BandwidthLimiter { [self] in state.withLock { $0.parameters.maxBandwidth } }
            let writer = MigrationStreamWriter { [self] (bytes) throws(SystemError) in
                if isCancelled { throw .badInput("cancelled") }
                limiter.consume(bytes.count)
                try opened.writeAll(bytes)
            }
            guard let (description, memory) = host.parked({ ($0.migrationDescription, $0.memory) }) else { throw .badInput("the machine ended") }
            try writer.writeHeader(description)
            _ = host.parked { m in
                m.memory.setDirtyTracking(true)
                m.dropWriteTranslations()
            }
            tracking = true
            let totalBytes = memory.totalSize
            state.withLock { s in
                s.info.setupTimeMs = Self.milliseconds(since: start)
                var ram = MigrationInfo.RAM()
                ram.total = totalBytes
                ram.remaining = totalBytes
                s.info.ram = ram
            }
            setStatus("active")
            var pass: UInt32 = 0
            var bandwidth: Double = 0  // bytes per second
            var throttle = 0
            var finalComponents: Result<[SavedComponent], SystemError>?
            while true {
                pass += 1
                let stopped = stoppedAt != nil
                // The last look, with the machine stopped, takes the dirty pages and the
                // components' states at the same instant, so the two agree.
                // The disks are flushed and handed over there too: the destination reads their
                // metadata afresh once it has loaded the machine.
                guard let (pages, saved) = host.parked({ m -> ([GuestAddress], Result<[SavedComponent], SystemError>?) in
                    if stopped { m.quiesceForSave() }
                    let pages = m.memory.takeDirtyPages()
                    m.dropWriteTranslations()
                    guard stopped else { return (pages, nil) }
                    m.memory.setDirtyTracking(false)
                    return (pages, Result { () throws(SystemError) in
                        try m.setDisksActive(false)
                        return try m.saveComponents()
                    })
                }) else { throw .badInput("the machine ended") }
                if stopped {
                    tracking = false
                    disksHandedOver = true
                }
                finalComponents = saved
                if state.withLock({ $0.capabilities["events"] ?? false }) { host.emit(.migrationPass(Int(pass))) }
                let passStart = VirtualClock.hostMonotonicNanoseconds()
                let before = writer.bytesWritten
                var duplicate: UInt64 = 0, normal: UInt64 = 0
                for page in pages {
                    let zero: Bool
                    do {
                        zero = try memory.withHostBytes(at: page, count: MigrationStream.pageSize, writing: false) { bytes in
                            try writer.writePage(at: page, bytes: UnsafeRawBufferPointer(bytes))
                        }
                    } catch let error as SystemError {
                        throw error
                    } catch {
                        throw .badInput("page \(page) could not be read: \(error)")
                    }
                    if zero { duplicate += 1 } else { normal += 1 }
                }
                try writer.writePassEnd(pass)
                if opened.acknowledges { try opened.await(.pass, seconds: 120) { self.isCancelled } }
                let seconds = max(Double(VirtualClock.hostMonotonicNanoseconds() - passStart) / 1e9, 0.001)
                let sent = writer.bytesWritten - before
                if !pages.isEmpty { bandwidth = Double(sent) / seconds }
                host.collectDirtyPages()
                let dirtyNow = UInt64(memory.dirtyPageCount) * UInt64(MigrationStream.pageSize)
                let expectedMs = bandwidth > 0 ? Int64(Double(dirtyNow) / bandwidth * 1000) : 0
                state.withLock { s in
                    s.info.ram?.transferred = writer.bytesWritten
                    s.info.ram?.remaining = dirtyNow
                    s.info.ram?.duplicate += duplicate
                    s.info.ram?.normal += normal
                    s.info.ram?.normalBytes += normal * UInt64(MigrationStream.pageSize)
                    s.info.ram?.dirtySyncCount = UInt64(pass)
                    s.info.ram?.mbps = bandwidth * 8 / 1e6
                    s.info.ram?.dirtyPagesRate = UInt64(Double(memory.dirtyPageCount) / seconds)
                    s.info.expectedDowntimeMs = expectedMs
                    s.info.totalTimeMs = Self.milliseconds(since: start)
                }
                if stopped { break }
                let (limit, autoConverge, initial, increment) = state.withLock { s in
                    (Int64(s.parameters.downtimeLimitMs), s.capabilities["auto-converge"] ?? false,
                     Int(s.parameters.cpuThrottleInitial), Int(s.parameters.cpuThrottleIncrement))
                }
                if expectedMs <= limit || !host.isRunning {
                    wasRunning = host.stopForMigration()
                    stoppedAt = VirtualClock.hostMonotonicNanoseconds()
                    setStatus("device")
                    continue
                }
                // Auto-converge (QEMU's): from the second pass on, while the guest dirties more
                // than half of what the link carries, take more of the vCPUs' time.
                if autoConverge && pass >= 2 && Double(dirtyNow) > Double(sent) / 2 {
                    throttle = throttle == 0 ? initial : min(99, throttle + increment)
                    host.setThrottle(percent: throttle)
                    state.withLock { $0.info.cpuThrottlePercentage = throttle }
                }
            }
            host.setThrottle(percent: 0)
            guard let components = finalComponents else { throw .badInput("the machine's state was not taken") }
            for component in try components.get() { try writer.writeComponent(component) }
            try writer.writeEnd()
            try writer.flush()
            if opened.acknowledges { try opened.await(.running, seconds: 120) { self.isCancelled } }
            try opened.finish()
            channel = nil
            let end = VirtualClock.hostMonotonicNanoseconds()
            state.withLock { s in
                s.running = false
                s.info.totalTimeMs = (end - start) / 1_000_000
                s.info.downtimeMs = stoppedAt.map { (end - $0) / 1_000_000 }
                s.info.expectedDowntimeMs = nil
                s.info.ram?.transferred = writer.bytesWritten
                s.info.ram?.remaining = 0
            }
            // postmigrate before "completed": whoever sees the one sees the other.
            host.migrationCompleted()
            setStatus("completed")
        } catch {
            channel?.abort()
            host.setThrottle(percent: 0)
            if tracking { _ = host.parked { $0.memory.setDirtyTracking(false) } }
            // The source keeps the machine: it takes its disks back (read afresh).
            if disksHandedOver { _ = host.parked { try? $0.setDisksActive(true) } }
            if stoppedAt != nil { host.resumeAfterMigration(wasRunning: wasRunning) }
            fail(error.message)
        }
    }

    // MARK: Destination

    /// `-loadvm NAME`: loads the snapshot into the stopped machine on a thread of its own (the
    /// load parks the vCPUs through the VMM), then runs it unless -S. A snapshot that cannot
    /// be loaded ends swemu with status 1.
    func startFromSnapshot(_ name: String) {
        guard let host else { return }
        do {
            try HostThread.spawn(name: "loadvm") { [self] in
                do throws(QMPError) {
                    try loadSnapshot(name: name)
                } catch {
                    host.failAtStart("-loadvm \(name): \(error.desc)")
                    return
                }
                host.incomingCompleted()
            }
        } catch {
            host.failAtStart("-loadvm \(name): \(error)")
        }
    }

    /// `-incoming URI` (or `migrate-incoming`): waits for the stream on its own thread, loads
    /// it into the stopped machine, then runs it. `defer` waits for `migrate-incoming`.
    func startIncoming(_ uri: MigrationURI) {
        if uri == .deferred {
            state.withLock { $0.awaitingIncoming = true }
            return
        }
        state.withLock { s in
            s.running = true
            s.info = MigrationInfo()
        }
        guard let host else { return }
        // A file, command or descriptor is there at once: "setup" before `migrate-incoming`
        // answers, as QEMU's (libvirt checks the status right after); a socket says it once
        // it listens.
        if !uri.listens { setStatus("setup") }
        do {
            try HostThread.spawn(name: "migration-in") { [self] in runIncoming(uri, host: host) }
        } catch {
            host.incomingFailed(error)
        }
    }

    private func runIncoming(_ uri: MigrationURI, host: any MigrationHost) {
        let start = VirtualClock.hostMonotonicNanoseconds()
        do throws(SystemError) {
            // "setup" once the destination listens (or has its file or command): a source may
            // connect from then on.
            let channel = try MigrationChannel.open(uri, outgoing: false, listening: { if uri.listens { self.setStatus("setup") } }) { false }
            setStatus("active")
            let reader = MigrationStreamReader { (buffer) throws(SystemError) -> Int in try channel.read(into: buffer) }
            try load(from: reader, host: host) { if channel.acknowledges { channel.send(.pass) } }
            if channel.acknowledges { channel.send(.running) }
            channel.abort()
            state.withLock { s in
                s.running = false
                s.info.totalTimeMs = Self.milliseconds(since: start)
            }
            setStatus("completed")
            host.incomingCompleted()
        } catch {
            state.withLock { $0.running = false }
            setStatus("failed")
            host.incomingFailed(error)
        }
    }

    /// Loads a whole stream into the stopped machine: pages while it stays stopped, then the
    /// components with every vCPU parked. Shared by `-incoming` and `loadvm`.
    func load(from reader: MigrationStreamReader, host: any MigrationHost, passLoaded: () -> Void = {}) throws(SystemError) {
        guard let (here, memory) = host.parked({ ($0.migrationDescription, $0.memory) }) else { throw .badInput("the machine ended") }
        let components = try MigrationLoader.load(from: reader, into: here, memory: memory, passLoaded: passLoaded)
        // The disks become this machine's once it is loaded (their metadata read afresh).
        guard let result = host.parked({ m in Result { () throws(SystemError) in
            try m.restoreComponents(components)
            try m.setDisksActive(true)
        } }) else {
            throw .badInput("the machine ended")
        }
        try result.get()
    }
}

/// `max-bandwidth`: sleeps the sender so it averages at most this many bytes per second.
final class BandwidthLimiter: @unchecked Sendable {
    // SAFETY: used only by the migration thread.
    private let rate: () -> UInt64
    /// Where the current rate's accounting started, and what was sent since.
    private var start = VirtualClock.hostMonotonicNanoseconds()
    private var sent: Double = 0
    private var current: UInt64 = 0

    init(bytesPerSecond rate: @escaping () -> UInt64) { self.rate = rate }

    func consume(_ bytes: Int) {
        let now = rate()
        if now != current {
            // A new rate counts from here.
            current = now
            start = VirtualClock.hostMonotonicNanoseconds()
            sent = 0
        }
        sent += Double(bytes)
        let due = sent / Double(max(current, 1)) * 1e9
        let elapsed = Double(VirtualClock.hostMonotonicNanoseconds() - start)
        if due > elapsed + 1e6 { usleep(UInt32(min((due - elapsed) / 1000, 1e6))) }
    }
}
