import DeviceModel
/// The QMP commands swemu offers: their parameters (checked as QEMU's qobject input visitor
/// checks them) and the result shapes of the queries (the qapi schema of QEMU 7.2).
enum QMPCommands {
    enum ParameterType: Sendable {
        case string
        case int
        case bool
        /// An array of strings from an enum (qapi `['QMPCapability']`).
        case enumList([String])
        /// An array of objects, checked by the command itself.
        case objectList
        /// An array of strings.
        case stringList
        /// Any JSON value, checked by the command itself (qapi `any`).
        case any

        var expected: String {
            switch self {
            case .string: return "string"
            case .int: return "integer"
            case .bool: return "boolean"
            case .enumList, .objectList, .stringList: return "array"
            case .any: return "any"
            }
        }
    }

    struct Parameter: Sendable {
        let name: String
        let type: ParameterType
        let optional: Bool
    }

    struct Command: Sendable {
        let name: String
        let parameters: [Parameter]

        /// QEMU's marshaller order: declared members first (type, then presence), then any
        /// member nobody asked for.
        func check(_ arguments: JSONObject) throws(QMPError) {
            for p in parameters {
                guard let value = arguments[p.name] else {
                    if p.optional { continue }
                    throw .generic("Parameter '\(p.name)' is missing")
                }
                switch (p.type, value) {
                case (.string, .string), (.bool, .bool), (.int, .int), (.int, .uint), (.any, _):
                    break
                case (.stringList, .array(let items)):
                    if let i = items.firstIndex(where: { $0.stringValue == nil }) {
                        throw .generic("Invalid parameter type for '\(p.name)[\(i)]', expected: string")
                    }
                case (.objectList, .array(let items)):
                    if let i = items.firstIndex(where: { $0.objectValue == nil }) {
                        throw .generic("Invalid parameter type for '\(p.name)[\(i)]', expected: object")
                    }
                case (.enumList(let allowed), .array(let items)):
                    for (i, item) in items.enumerated() {
                        guard case .string(let s) = item else {
                            throw .generic("Invalid parameter type for '\(p.name)[\(i)]', expected: string")
                        }
                        guard allowed.contains(s) else {
                            throw .generic("Parameter '\(p.name)[\(i)]' does not accept value '\(s)'")
                        }
                    }
                default:
                    throw .generic("Invalid parameter type for '\(p.name)', expected: \(p.type.expected)")
                }
            }
            if let extra = arguments.keys.first(where: { key in !parameters.contains { $0.name == key } }) {
                throw .generic("Parameter '\(extra)' is unexpected")
            }
        }
    }

    /// Every command, in the order `query-commands` lists them.
    static let all: [Command] = [
        Command(name: "qmp_capabilities", parameters: [Parameter(name: "enable", type: .enumList(["oob"]), optional: true)]),
        Command(name: "query-version", parameters: []),
        Command(name: "query-commands", parameters: []),
        Command(name: "query-status", parameters: []),
        Command(name: "query-name", parameters: []),
        Command(name: "query-uuid", parameters: []),
        Command(name: "query-qmp-schema", parameters: []),
        Command(name: "qom-list-types", parameters: [
            Parameter(name: "implements", type: .string, optional: true), Parameter(name: "abstract", type: .bool, optional: true),
        ]),
        Command(name: "device-list-properties", parameters: [Parameter(name: "typename", type: .string, optional: false)]),
        Command(name: "qom-list-properties", parameters: [Parameter(name: "typename", type: .string, optional: false)]),
        Command(name: "query-command-line-options", parameters: [Parameter(name: "option", type: .string, optional: true)]),
        Command(name: "query-cpus-fast", parameters: []),
        Command(name: "query-target", parameters: []),
        Command(name: "query-kvm", parameters: []),
        Command(name: "query-block", parameters: []),
        Command(name: "query-blockstats", parameters: [Parameter(name: "query-nodes", type: .bool, optional: true)]),
        Command(name: "query-named-block-nodes", parameters: [Parameter(name: "flat", type: .bool, optional: true)]),
        Command(name: "query-iothreads", parameters: []),
        Command(name: "getfd", parameters: [Parameter(name: "fdname", type: .string, optional: false)]),
        Command(name: "closefd", parameters: [Parameter(name: "fdname", type: .string, optional: false)]),
        Command(name: "qom-list", parameters: [Parameter(name: "path", type: .string, optional: false)]),
        Command(name: "qom-get", parameters: [
            Parameter(name: "path", type: .string, optional: false), Parameter(name: "property", type: .string, optional: false),
        ]),
        Command(name: "qom-set", parameters: [
            Parameter(name: "path", type: .string, optional: false), Parameter(name: "property", type: .string, optional: false),
            Parameter(name: "value", type: .any, optional: false),
        ]),
        Command(name: "query-chardev", parameters: []),
        Command(name: "query-machines", parameters: []),
        Command(name: "stop", parameters: []),
        Command(name: "cont", parameters: []),
        Command(name: "system_reset", parameters: []),
        Command(name: "system_powerdown", parameters: []),
        Command(name: "quit", parameters: []),
        Command(name: "human-monitor-command", parameters: [
            Parameter(name: "command-line", type: .string, optional: false),
            Parameter(name: "cpu-index", type: .int, optional: true),
        ]),
    ] + MigrationCommands.all + NetworkCommands.all + BalloonCommands.all + KeyCommands.all

    static func find(_ name: String) -> Command? { all.first { $0.name == name } }

    /// Runs a command that needs nothing from the session.
    static func query(_ name: String, target: any MonitorTarget, version: MonitorVersion) -> JSONValue {
        switch name {
        case "query-version":
            return version.versionInfo
        case "query-commands":
            return .array(all.map { ["name": .string($0.name)] })
        case "query-status":
            // StatusInfo; singlestep is always false (swemu has no single-step mode).
            return ["status": .string(target.runState), "singlestep": false, "running": .bool(target.isRunning)]
        case "query-qmp-schema":
            return QMPSchema.introspect()
        case "query-uuid":
            return ["UUID": .string(target.uuid ?? HumanMonitor.nullUUID)]
        case "query-name":
            guard let name = target.guestName else { return [:] }
            return ["name": .string(name)]
        case "query-cpus-fast":
            return .array(target.cpus.map { cpu in
                // CpuInfoFast in QEMU's member order; `target` is a SysEmuTarget name ("riscv64", "x86_64").
                var info: JSONObject = ["thread-id": .integer(cpu.threadID)]
                if let core = cpu.coreID { info.set("props", ["core-id": .integer(core)]) }
                info.set("qom-path", .string(cpu.qomPath))
                info.set("cpu-index", .integer(cpu.index))
                info.set("target", .string(cpu.target))
                return .object(info)
            })
        case "query-target":
            return ["arch": .string(target.targetArch)]
        case "query-kvm":
            // KvmInfo: `present` is whether this binary can use KVM at all, which for ours is
            // the machine running on it (qemu-system-riscv64 on x86 has no KVM: both false).
            return ["enabled": .bool(target.kvmEnabled), "present": .bool(target.kvmEnabled)]
        case "query-block":
            return .array(target.blockDevices.map(blockInfo))
        case "query-named-block-nodes":
            // Every node of every disk, format node first, then the file node under it.
            return .array(target.blockDevices.flatMap { disk in
                [nodeInfo(disk, nodeName: disk.nodeName, driver: disk.format),
                 nodeInfo(disk, nodeName: disk.fileNodeName, driver: "file")]
            })
        case "query-iothreads":
            return []  // no -object iothread: every disk's I/O runs on the main event loop
        case "query-chardev":
            // ChardevInfo; every chardev listed has its frontend attached.
            return .array(target.chardevs.map { ["label": .string($0.label), "filename": .string($0.filename), "frontend-open": true] })
        case "query-machines":
            return .array(target.machineList.map { machine in
                // MachineInfo (QEMU 7.2 members); is-default only when true, as QEMU.
                var info: JSONObject = ["name": .string(machine.name)]
                if machine.isDefault { info.set("is-default", true) }
                info.set("cpu-max", .integer(machine.maxCPUs))
                info.set("hotpluggable-cpus", false)
                info.set("numa-mem-supported", false)
                info.set("deprecated", false)
                if let id = machine.defaultRAMID { info.set("default-ram-id", .string(id)) }
                return .object(info)
            })
        case "stop":
            target.execute(.stop)
            return [:]
        case "cont":
            target.execute(.cont)
            return [:]
        case "system_reset":
            target.execute(.systemReset)
            return [:]
        case "system_powerdown":
            target.execute(.systemPowerdown)
            return [:]
        default:
            return [:]
        }
    }

    /// BlockInfo with its BlockDeviceInfo (`inserted`) and ImageInfo.
    static func blockInfo(_ disk: MonitorBlockDevice) -> JSONValue {
        var info: JSONObject = ["io-status": "ok", "device": .string(disk.device)]
        if let qdev = disk.qdev { info.set("qdev", .string(qdev)) }
        info.set("locked", false)
        info.set("removable", false)
        info.set("inserted", nodeInfo(disk, nodeName: disk.nodeName, driver: disk.format))
        info.set("type", "unknown")
        return .object(info)
    }

    /// BlockDeviceInfo of one node of `disk`: its format node (`driver` the format) or the
    /// file node under it ("file").
    static func nodeInfo(_ disk: MonitorBlockDevice, nodeName: String?, driver: String) -> JSONValue {
        let image: JSONValue = [
            "virtual-size": .unsigned(disk.sizeBytes), "filename": .string(disk.file), "format": .string(driver),
        ]
        var info: JSONObject = [
            "iops_rd": 0, "detect_zeroes": "off", "image": image, "iops_wr": 0, "ro": .bool(disk.readOnly),
            "backing_file_depth": 0, "drv": .string(driver), "iops": 0, "bps_wr": 0, "write_threshold": 0,
            "encrypted": false, "bps": 0, "bps_rd": 0,
            "cache": ["no-flush": false, "direct": false, "writeback": true],
            "file": .string(disk.file),
        ]
        if let nodeName { info.set("node-name", .string(nodeName)) }
        return .object(info)
    }

    /// BlockStats of one disk: the device's counters (its format node's, as QEMU's: the
    /// file node under it, `parent`, counts nothing of its own here). `nodes`: QEMU's
    /// query-nodes=true, one entry per node, named by node-name only.
    static func blockStats(_ disk: MonitorBlockDevice, nodes: Bool) -> JSONValue {
        let c = disk.accounting?.snapshot ?? BlockAccounting.Snapshot()
        let stats: JSONValue = [
            "unmap_operations": .unsigned(c.unmapOperations), "unmap_merged": 0, "flush_total_time_ns": .unsigned(c.flushNanoseconds),
            "wr_highest_offset": .unsigned(c.writeHighestOffset), "wr_total_time_ns": .unsigned(c.writeNanoseconds),
            "failed_wr_operations": .unsigned(c.failedWrites), "failed_rd_operations": .unsigned(c.failedReads), "wr_merged": 0,
            "wr_bytes": .unsigned(c.writtenBytes), "timed_stats": [], "failed_unmap_operations": .unsigned(c.failedUnmaps),
            "failed_flush_operations": .unsigned(c.failedFlushes), "account_invalid": true, "rd_total_time_ns": .unsigned(c.readNanoseconds),
            "invalid_unmap_operations": 0, "flush_operations": .unsigned(c.flushOperations), "wr_operations": .unsigned(c.writeOperations),
            "unmap_bytes": .unsigned(c.unmapBytes), "rd_merged": 0, "rd_bytes": .unsigned(c.readBytes),
            "unmap_total_time_ns": .unsigned(c.unmapNanoseconds), "invalid_flush_operations": 0, "account_failed": true,
            "rd_operations": .unsigned(c.readOperations), "invalid_wr_operations": 0, "invalid_rd_operations": 0,
        ]
        var entry: JSONObject = [:]
        if !nodes {
            entry.set("device", .string(disk.device))
            if let qdev = disk.qdev { entry.set("qdev", .string(qdev)) }
        }
        if let node = disk.nodeName { entry.set("node-name", .string(node)) }
        entry.set("stats", stats)
        return .object(entry)
    }
}
