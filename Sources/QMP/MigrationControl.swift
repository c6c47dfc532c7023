/// What the monitors control of snapshots and migration (DESIGN.md §5), for a target that
/// supports them (`MonitorTarget.migration`). Commands return at once; a migration runs on
/// its own thread and reports through `MonitorEvent.migration` and `migrationInfo`.
public protocol MigrationControl: AnyObject, Sendable {
    /// QMP `migrate` / HMP `migrate URI`: starts sending the machine to `uri`
    /// (`tcp:HOST:PORT`, `unix:PATH`, `file:PATH`, `exec:COMMAND`).
    func migrate(uri: String) throws(QMPError)
    /// QMP `migrate-incoming` after `-incoming defer`.
    func migrateIncoming(uri: String) throws(QMPError)
    /// `migrate_cancel`: a migration in progress stops, the source runs on.
    func migrateCancel()
    /// `query-migrate`.
    var migrationInfo: MigrationInfo { get }
    var migrationParameters: MigrationParameters { get }
    func setMigrationParameters(_ parameters: MigrationParameters) throws(QMPError)
    /// Capability name → state (`query-migrate-capabilities`).
    var migrationCapabilities: [(name: String, state: Bool)] { get }
    func setMigrationCapability(_ name: String, _ state: Bool) throws(QMPError)

    /// `savevm NAME` / QMP `snapshot-save`: the machine's state and its qcow2 disks' internal
    /// snapshots, under `name`.
    func saveSnapshot(name: String) throws(QMPError)
    /// `loadvm NAME` / QMP `snapshot-load`.
    func loadSnapshot(name: String) throws(QMPError)
    /// `delvm NAME` / QMP `snapshot-delete`.
    func deleteSnapshot(name: String) throws(QMPError)
    /// `info snapshots`, as QEMU prints it.
    func snapshotList() -> String
    /// QMP `snapshot-save` / `-load` / `-delete` jobs, `query-jobs`, `job-dismiss`.
    func startSnapshotJob(_ kind: SnapshotJob.Kind, id: String, tag: String, vmstate: String?, devices: [String]) throws(QMPError)
    var jobs: [SnapshotJob] { get }
    func dismissJob(id: String) throws(QMPError)
}

/// QEMU's migration capabilities swemu knows (`migrate-set-capabilities` refuses others),
/// in `query-migrate-capabilities` order, and those it can turn on.
public enum MigrationCapabilities {
    public static let names = ["xbzrle", "auto-converge", "events", "postcopy-ram", "return-path", "zero-blocks"]
    public static let supported: Set<String> = ["events", "auto-converge", "return-path", "zero-blocks"]
}

/// A snapshot job as `query-jobs` reports it (JobInfo).
public struct SnapshotJob: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case save = "snapshot-save", load = "snapshot-load", delete = "snapshot-delete"
    }
    public var id: String
    public var kind: Kind
    /// JobStatus: "created", "running", "waiting", "pending", "aborting", "concluded".
    public var status: String
    public var error: String?
    public init(id: String, kind: Kind, status: String, error: String? = nil) {
        self.id = id
        self.kind = kind
        self.status = status
        self.error = error
    }
}

/// `MigrationInfo` (qapi/migration.json), the members swemu reports.
public struct MigrationInfo: Sendable, Equatable {
    public struct RAM: Sendable, Equatable {
        public var transferred: UInt64 = 0
        public var remaining: UInt64 = 0
        public var total: UInt64 = 0
        /// Zero pages sent as markers.
        public var duplicate: UInt64 = 0
        /// Pages sent whole, and their bytes.
        public var normal: UInt64 = 0
        public var normalBytes: UInt64 = 0
        public var dirtyPagesRate: UInt64 = 0
        /// Megabits per second over the last pass.
        public var mbps: Double = 0
        public var dirtySyncCount: UInt64 = 0
        public var pageSize: UInt64 = 4096
        public init() {}
    }

    /// nil before any migration (`query-migrate` then returns `{}`).
    public var status: String?
    public var totalTimeMs: Int64?
    public var setupTimeMs: Int64?
    public var downtimeMs: Int64?
    public var expectedDowntimeMs: Int64?
    public var ram: RAM?
    public var errorDescription: String?
    /// Auto-converge's current throttle, while it throttles.
    public var cpuThrottlePercentage: Int?
    public init() {}
}

/// `MigrationParameters`: the ones swemu acts on.
public struct MigrationParameters: Sendable, Equatable {
    /// The longest the guest may be stopped for the last pass (QEMU's default 300 ms).
    public var downtimeLimitMs: UInt64 = 300
    /// Bytes per second the stream may use (QEMU 7.2's default 128 MiB/s).
    public var maxBandwidth: UInt64 = 128 << 20
    /// Auto-converge's throttle: first step and increment, in percent (QEMU: 20, 10).
    public var cpuThrottleInitial: UInt64 = 20
    public var cpuThrottleIncrement: UInt64 = 10
    public init() {}
}
