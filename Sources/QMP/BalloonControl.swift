/// The machine's memory balloon as the monitors reach it (qapi/machine.json `balloon`,
/// `query-balloon`; hmp-commands.hx `balloon`, `info balloon`). Implemented by the VMM over
/// the board's virtio-balloon; every method may be called from a monitor's I/O thread.
public protocol BalloonControl: AnyObject, Sendable {
    /// `balloon value`: the guest should have `bytes` of RAM (more than the RAM means all of
    /// it) and give the rest back through the balloon.
    func setTarget(bytes: UInt64)
    /// `query-balloon` `actual`: the guest's RAM by its own count (RAM size minus the
    /// balloon's pages).
    var actualBytes: UInt64 { get }
    /// The guest's last memory statistics under QEMU's `guest-stats` names, in tag order (nil:
    /// not reported), and when they came (seconds since the epoch; 0: never).
    var statistics: (values: [(name: String, value: UInt64?)], lastUpdate: Int64) { get }
    /// `guest-stats-polling-interval`: how often (seconds) the host asks for statistics; 0: never.
    var pollingInterval: Int { get set }
}

/// The QMP commands of the balloon (QEMU 7.2's softmmu/balloon.c) on a target's
/// `BalloonControl`.
enum BalloonCommands {
    typealias Command = QMPCommands.Command
    typealias Parameter = QMPCommands.Parameter

    static let all: [Command] = [
        Command(name: "balloon", parameters: [Parameter(name: "value", type: .int, optional: false)]),
        Command(name: "query-balloon", parameters: []),
    ]

    /// `qom-get`/`qom-set` of the balloon's properties (QEMU 7.2's virtio-balloon.c
    /// balloon_stats_get_all, balloon_stats_get/set_poll_interval): `guest-stats` and
    /// `guest-stats-polling-interval`, on the balloon's QOM path.
    static func property(_ name: String, set value: JSONValue?, on balloon: any BalloonControl) throws(QMPError) -> JSONValue {
        switch (name, value) {
        case ("guest-stats", nil):
            let (values, lastUpdate) = balloon.statistics
            var stats: JSONObject = [:]
            // Unreported: QEMU's -1 in a uint64.
            for (name, value) in values { stats.set(name, .unsigned(value ?? .max)) }
            return ["stats": .object(stats), "last-update": .int(lastUpdate)]
        case ("guest-stats-polling-interval", nil):
            return .int(Int64(balloon.pollingInterval))
        case ("guest-stats-polling-interval", let value?):
            guard let seconds = value.int64Value else {
                throw .generic("Invalid parameter type for 'guest-stats-polling-interval', expected: integer")
            }
            guard seconds >= 0 else { throw .generic("timer value must be greater than zero") }
            guard seconds <= Int64(UInt32.max) else { throw .generic("timer value is too big") }
            balloon.pollingInterval = Int(seconds)
            return [:]
        case ("guest-stats", _?):
            throw .generic("Property 'guest-stats' is read-only")
        default:
            throw .generic("Property 'virtio-balloon-device.\(name)' not found")
        }
    }

    /// QEMU's have_balloon: no device, no command.
    static func balloon(_ target: any MonitorTarget) throws(QMPError) -> any BalloonControl {
        guard let balloon = target.balloon else {
            throw QMPError(errorClass: "DeviceNotActive", desc: "No balloon device has been activated")
        }
        return balloon
    }

    static func run(_ name: String, _ args: JSONObject, target: any MonitorTarget) throws(QMPError) -> JSONValue {
        let balloon = try balloon(target)
        switch name {
        case "balloon":
            // qmp_balloon: a target of zero or less is no size; more than the RAM is all of it.
            guard let value = args["value"]?.int64Value, value > 0 else {
                throw .generic("Parameter 'target' expects a size")  // QEMU's words
            }
            balloon.setTarget(bytes: UInt64(value))
            return [:]
        default:  // query-balloon: BalloonInfo
            return ["actual": .unsigned(balloon.actualBytes)]
        }
    }
}

/// The human monitor's balloon commands (hmp_balloon, hmp_info_balloon).
extension HumanMonitor {
    /// `balloon target`: the target in MiB, or with a size suffix (the 'M' argument type).
    func balloonCommand(_ argument: String) -> String {
        guard let bytes = Self.size(argument, defaultUnit: 1 << 20) else {
            return argument.isEmpty ? "Parameter 'value' is missing\n" : "invalid size\nTry \"help balloon\" for more information\n"
        }
        do throws(QMPError) {
            _ = try BalloonCommands.run("balloon", ["value": .int(bytes)], target: target)
            return ""
        } catch {
            return "Error: \(error.desc)\n"
        }
    }

    /// `info balloon`: "balloon: actual=MiB".
    func balloonInfo() -> String {
        do throws(QMPError) {
            return "balloon: actual=\(try BalloonCommands.balloon(target).actualBytes >> 20)\n"
        } catch {
            return "Error: \(error.desc)\n"
        }
    }

    /// QEMU's qemu_strtosz with a default unit: digits, then an optional B/K/M/G/T suffix
    /// (either case). Nil when it is no size or does not fit an int64.
    static func size(_ text: String, defaultUnit: Int64) -> Int64? {
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, let number = Int64(digits) else { return nil }
        let units: [Character: Int64] = ["b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40]
        let suffix = text.dropFirst(digits.count)
        let unit: Int64
        switch suffix.count {
        case 0: unit = defaultUnit
        case 1: guard let u = units[Character(suffix.lowercased())] else { return nil }; unit = u
        default: return nil
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit)
        return overflow ? nil : bytes
    }
}
