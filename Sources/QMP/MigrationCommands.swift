/// The QMP commands of snapshots and migration (qapi/migration.json, QEMU 7.2), on a
/// target's `MigrationControl`.
enum MigrationCommands {
    typealias Command = QMPCommands.Command
    typealias Parameter = QMPCommands.Parameter

    /// `migrate-set-parameters` members swemu takes (the rest of QEMU's are refused as unexpected).
    static let parameterNames = ["downtime-limit", "max-bandwidth", "cpu-throttle-initial", "cpu-throttle-increment"]

    static let all: [Command] = [
        Command(name: "migrate", parameters: [
            Parameter(name: "uri", type: .string, optional: false),
            Parameter(name: "blk", type: .bool, optional: true),
            Parameter(name: "inc", type: .bool, optional: true),
            Parameter(name: "detach", type: .bool, optional: true),
            Parameter(name: "resume", type: .bool, optional: true),
        ]),
        Command(name: "migrate_cancel", parameters: []),
        Command(name: "migrate-incoming", parameters: [Parameter(name: "uri", type: .string, optional: false)]),
        Command(name: "query-migrate", parameters: []),
        Command(name: "migrate-set-parameters", parameters: parameterNames.map { Parameter(name: $0, type: .int, optional: true) }),
        Command(name: "query-migrate-parameters", parameters: []),
        Command(name: "migrate-set-capabilities", parameters: [Parameter(name: "capabilities", type: .objectList, optional: false)]),
        Command(name: "query-migrate-capabilities", parameters: []),
        Command(name: "snapshot-save", parameters: [
            Parameter(name: "job-id", type: .string, optional: false), Parameter(name: "tag", type: .string, optional: false),
            Parameter(name: "vmstate", type: .string, optional: false), Parameter(name: "devices", type: .stringList, optional: false),
        ]),
        Command(name: "snapshot-load", parameters: [
            Parameter(name: "job-id", type: .string, optional: false), Parameter(name: "tag", type: .string, optional: false),
            Parameter(name: "vmstate", type: .string, optional: false), Parameter(name: "devices", type: .stringList, optional: false),
        ]),
        Command(name: "snapshot-delete", parameters: [
            Parameter(name: "job-id", type: .string, optional: false), Parameter(name: "tag", type: .string, optional: false),
            Parameter(name: "devices", type: .stringList, optional: false),
        ]),
        Command(name: "query-jobs", parameters: []),
        Command(name: "job-dismiss", parameters: [Parameter(name: "id", type: .string, optional: false)]),
    ]

    /// MigrationParameters as `query-migrate-parameters` reports them.
    private static func parameters(_ p: MigrationParameters) -> JSONValue {
        ["downtime-limit": .uint(p.downtimeLimitMs), "max-bandwidth": .uint(p.maxBandwidth),
         "cpu-throttle-initial": .uint(p.cpuThrottleInitial), "cpu-throttle-increment": .uint(p.cpuThrottleIncrement)]
    }

    /// MigrationCapabilityStatus list.
    private static func capabilities(_ list: [(name: String, state: Bool)]) -> JSONValue {
        .array(list.map { ["capability": .string($0.name), "state": .bool($0.state)] })
    }

    static func run(_ name: String, _ args: JSONObject, target: any MonitorTarget) throws(QMPError) -> JSONValue {
        guard let control = target.migration else {
            // A machine with nothing to move (-M none) still answers what libvirt's probe asks
            // every QEMU: no migration, every capability off, the default parameters.
            switch name {
            case "query-migrate": return [:]
            case "query-migrate-capabilities": return capabilities(MigrationCapabilities.names.map { ($0, false) })
            case "query-migrate-parameters": return parameters(MigrationParameters())
            default: throw .generic("this machine (\(target.machineType)) cannot be migrated or snapshotted yet")
            }
        }
        switch name {
        case "migrate":
            if args["blk"]?.boolValue == true || args["inc"]?.boolValue == true {
                throw .generic("block migration is not supported: put the disks on storage both hosts see")
            }
            if args["resume"]?.boolValue == true { throw .generic("postcopy is not supported, so there is nothing to resume") }
            try control.migrate(uri: args["uri"]?.stringValue ?? "")
            return [:]
        case "migrate_cancel":
            control.migrateCancel()
            return [:]
        case "migrate-incoming":
            try control.migrateIncoming(uri: args["uri"]?.stringValue ?? "")
            return [:]
        case "query-migrate":
            return info(control.migrationInfo)
        case "migrate-set-parameters":
            var p = control.migrationParameters
            func value(_ key: String) throws(QMPError) -> UInt64? {
                guard let v = args[key]?.int64Value else { return nil }
                guard v >= 0 else { throw .generic("Parameter '\(key)' expects a non-negative integer") }
                return UInt64(v)
            }
            if let v = try value("downtime-limit") { p.downtimeLimitMs = v }
            if let v = try value("max-bandwidth") { p.maxBandwidth = v }
            if let v = try value("cpu-throttle-initial") { p.cpuThrottleInitial = v }
            if let v = try value("cpu-throttle-increment") { p.cpuThrottleIncrement = v }
            try control.setMigrationParameters(p)
            return [:]
        case "query-migrate-parameters":
            return parameters(control.migrationParameters)
        case "migrate-set-capabilities":
            for (i, item) in (args["capabilities"]?.arrayValue ?? []).enumerated() {
                guard let object = item.objectValue, let capability = object["capability"]?.stringValue,
                      let state = object["state"]?.boolValue else {
                    throw .generic("Parameter 'capabilities[\(i)]' expects {'capability': NAME, 'state': BOOL}")
                }
                try control.setMigrationCapability(capability, state)
            }
            return [:]
        case "query-migrate-capabilities":
            return capabilities(control.migrationCapabilities)
        case "snapshot-save", "snapshot-load", "snapshot-delete":
            let kind = SnapshotJob.Kind(rawValue: name)!  // the three names above
            try control.startSnapshotJob(kind, id: args["job-id"]?.stringValue ?? "", tag: args["tag"]?.stringValue ?? "",
                                         vmstate: args["vmstate"]?.stringValue,
                                         devices: args["devices"]?.arrayValue?.compactMap(\.stringValue) ?? [])
            return [:]
        case "query-jobs":
            return .array(control.jobs.map { job in
                var info: JSONObject = ["id": .string(job.id), "type": .string(job.kind.rawValue), "status": .string(job.status),
                                        "current-progress": 1, "total-progress": 1]
                if let error = job.error { info.set("error", .string(error)) }
                return .object(info)
            })
        case "job-dismiss":
            try control.dismissJob(id: args["id"]?.stringValue ?? "")
            return [:]
        default:
            return [:]
        }
    }

    /// MigrationInfo as QEMU 7.2 returns it: `{}` before any migration.
    static func info(_ info: MigrationInfo) -> JSONValue {
        guard let status = info.status else { return [:] }
        var object: JSONObject = ["status": .string(status)]
        if let v = info.expectedDowntimeMs, status == "active" { object.set("expected-downtime", .int(v)) }
        if let v = info.setupTimeMs { object.set("setup-time", .int(v)) }
        if let v = info.totalTimeMs { object.set("total-time", .int(v)) }
        if let v = info.downtimeMs { object.set("downtime", .int(v)) }
        if let ram = info.ram {
            object.set("ram", [
                "total": .uint(ram.total), "remaining": .uint(ram.remaining), "transferred": .uint(ram.transferred),
                "duplicate": .uint(ram.duplicate), "normal": .uint(ram.normal), "normal-bytes": .uint(ram.normalBytes),
                "dirty-pages-rate": .uint(ram.dirtyPagesRate), "mbps": .double(ram.mbps), "dirty-sync-count": .uint(ram.dirtySyncCount),
                "page-size": .uint(ram.pageSize), "skipped": 0, "multifd-bytes": 0, "postcopy-requests": 0,
            ])
        }
        if let v = info.cpuThrottlePercentage, status == "active" { object.set("cpu-throttle-percentage", .int(Int64(v))) }
        if let error = info.errorDescription, status == "failed" { object.set("error-desc", .string(error)) }
        return .object(object)
    }
}
