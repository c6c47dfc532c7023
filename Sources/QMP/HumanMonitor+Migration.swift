import Glibc

/// The human monitor's snapshot and migration commands (hmp-commands.hx, hmp-commands-info.hx).
extension HumanMonitor {
    func migrationCommand(_ name: String, _ rest: String) -> String {
        guard let control = target.migration else {
            return "\(name): this machine (\(target.machineType)) cannot be migrated or snapshotted yet\n"
        }
        guard let words = Self.arguments(rest) else { return "\(name): unterminated string\n" }
        func failure(_ error: QMPError) -> String { "Error: \(error.desc)\n" }
        do throws(QMPError) {
            switch name {
            case "migrate":
                let detach = words.first == "-d"
                let arguments = detach ? Array(words.dropFirst()) : words
                guard arguments.count == 1 else { return "migrate: expected [-d] uri\n" }
                try control.migrate(uri: arguments[0])
                if detach { return "" }
                // Without -d the monitor waits for the end, as QEMU's (hmp_migrate_status_cb).
                while true {
                    let info = control.migrationInfo
                    switch info.status {
                    case "completed"?: return ""
                    case "failed"?: return "Error: \(info.errorDescription ?? "migration failed")\n"
                    case "cancelled"?: return "Error: migration cancelled\n"
                    default: usleep(10_000)
                    }
                }
            case "migrate_cancel":
                control.migrateCancel()
            case "migrate_incoming":
                guard words.count == 1 else { return "migrate_incoming: expected uri\n" }
                try control.migrateIncoming(uri: words[0])
            case "migrate_set_capability":
                guard words.count == 2, let state = ["on": true, "off": false][words[1]] else {
                    return "migrate_set_capability: expected capability on|off\n"
                }
                try control.setMigrationCapability(words[0], state)
            case "migrate_set_parameter":
                guard words.count == 2 else { return "migrate_set_parameter: expected parameter value\n" }
                var p = control.migrationParameters
                guard let value = UInt64(words[1]) else { return "Error: Parameter '\(words[0])' expects a non-negative integer\n" }
                switch words[0] {
                case "downtime-limit": p.downtimeLimitMs = value
                case "max-bandwidth": p.maxBandwidth = value
                case "cpu-throttle-initial": p.cpuThrottleInitial = value
                case "cpu-throttle-increment": p.cpuThrottleIncrement = value
                default: return "Error: Invalid parameter '\(words[0])' (swemu takes downtime-limit, max-bandwidth, cpu-throttle-initial, cpu-throttle-increment)\n"
                }
                try control.setMigrationParameters(p)
            case "savevm":
                guard words.count <= 1 else { return "savevm: expected [tag]\n" }
                try control.saveSnapshot(name: words.first ?? Self.defaultSnapshotName())
            case "loadvm", "delvm":
                guard words.count == 1 else { return "\(name): expected tag\n" }
                if name == "loadvm" { try control.loadSnapshot(name: words[0]) } else { try control.deleteSnapshot(name: words[0]) }
            default:
                break
            }
        } catch {
            return failure(error)
        }
        return ""
    }

    /// The words of a command's arguments as QEMU's monitor reads string arguments (get_str):
    /// separated by blanks, or in double quotes with \\, \", \', \n and \r escapes (libvirt
    /// writes `savevm "snap1"`); nil for an unterminated quote.
    static func arguments(_ text: String) -> [String]? {
        var words: [String] = []
        var chars = Substring(text)[...]
        while true {
            chars = chars.drop { $0 == " " || $0 == "\t" }
            guard let first = chars.first else { return words }
            guard first == "\"" else {
                let word = chars.prefix { $0 != " " && $0 != "\t" }
                words.append(String(word))
                chars = chars.dropFirst(word.count)
                continue
            }
            chars = chars.dropFirst()
            var word = ""
            while true {
                guard let c = chars.popFirst() else { return nil }
                if c == "\"" { break }
                if c == "\\", let escaped = chars.popFirst() {
                    switch escaped {
                    case "n": word.append("\n")
                    case "r": word.append("\r")
                    default: word.append(escaped)
                    }
                } else {
                    word.append(c)
                }
            }
            words.append(word)
        }
    }

    /// QEMU's name for an unnamed `savevm`: vm-YYYYMMDDHHMMSS, local time.
    static func defaultSnapshotName() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "vm-\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    }

    func migrationInfo(_ sub: String) -> String {
        guard let control = target.migration else {
            return sub == "snapshots" ? "There is no suitable snapshot available\n" : ""
        }
        switch sub {
        case "snapshots":
            return control.snapshotList()
        case "migrate_capabilities":
            return control.migrationCapabilities.map { "\($0.name): \($0.state ? "on" : "off")\n" }.joined()
        case "migrate_parameters":
            let p = control.migrationParameters
            return "downtime-limit: \(p.downtimeLimitMs) ms\nmax-bandwidth: \(p.maxBandwidth) bytes/second\n"
                + "cpu-throttle-initial: \(p.cpuThrottleInitial)\ncpu-throttle-increment: \(p.cpuThrottleIncrement)\n"
        default:
            // hmp_info_migrate's layout.
            let info = control.migrationInfo
            guard let status = info.status else { return "" }
            var text = "Migration status: \(status)"
            if status == "failed", let error = info.errorDescription { text += " (\(error))" }
            text += "\n"
            if let v = info.totalTimeMs { text += "total time: \(v) ms\n" }
            if let v = info.expectedDowntimeMs, status == "active" { text += "expected downtime: \(v) ms\n" }
            if let v = info.downtimeMs { text += "downtime: \(v) ms\n" }
            if let v = info.setupTimeMs { text += "setup: \(v) ms\n" }
            if let v = info.cpuThrottlePercentage, status == "active" { text += "cpu throttle percentage: \(v)\n" }
            if let ram = info.ram {
                text += "transferred ram: \(ram.transferred >> 10) kbytes\n"
                let hundredths = Int((ram.mbps * 100).rounded())
                text += "throughput: \(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100) mbps\n"
                text += "remaining ram: \(ram.remaining >> 10) kbytes\n"
                text += "total ram: \(ram.total >> 10) kbytes\n"
                text += "duplicate: \(ram.duplicate) pages\n"
                text += "skipped: 0 pages\n"
                text += "normal: \(ram.normal) pages\n"
                text += "normal bytes: \(ram.normalBytes >> 10) kbytes\n"
                text += "dirty sync count: \(ram.dirtySyncCount)\n"
                text += "page size: \(ram.pageSize >> 10) kbytes\n"
                if ram.dirtyPagesRate > 0 { text += "dirty pages rate: \(ram.dirtyPagesRate) pages\n" }
            }
            return text
        }
    }
}
