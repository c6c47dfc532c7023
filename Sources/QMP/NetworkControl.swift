/// The machine's NICs and network backends as the monitors reach them (qapi/net.json;
/// hmp-commands.hx `set_link`, `hostfwd_add`, `hostfwd_remove`, `info network`, `info
/// usernet`). Implemented where the backends live (the CLI's `Network`); every method may be
/// called from a monitor's I/O thread.
public protocol NetworkControl: AnyObject, Sendable {
    /// `info network` (hmp_info_network): each NIC with its backend under it, then backends
    /// no NIC uses.
    var networkInfo: String { get }
    /// `set_link NAME on|off`: NAME is a NIC's or a netdev's id; either changes the link the
    /// guest sees. Throws DeviceNotFound as QEMU does.
    func setLink(name: String, up: Bool) throws(QMPError)
    /// `hostfwd_add [netdev_id] RULE`: what the monitor prints (empty on success).
    func hostForwardAdd(netdev: String?, rule: String) -> String
    /// `hostfwd_remove [netdev_id] [tcp|udp]:[hostaddr]:hostport`: what the monitor prints.
    func hostForwardRemove(netdev: String?, rule: String) -> String
    /// `info usernet`: the connections of each user-mode network stack.
    var userNetworkInfo: String { get }
    /// `query-rx-filter`: the receive filter of every NIC, or of the one called `name`.
    func rxFilters(name: String?) throws(QMPError) -> [RxFilterInfo]
}

/// RxFilterInfo (qapi/net.json): a NIC's receive filter as the guest driver set it.
public struct RxFilterInfo: Sendable, Equatable {
    public var name: String
    public var promiscuous: Bool
    /// RxState: "normal", "none" or "all".
    public var multicast: String
    public var unicast: String
    public var broadcastAllowed: Bool
    public var multicastOverflow: Bool
    public var unicastOverflow: Bool
    public var mainMAC: String
    public var unicastTable: [String]
    public var multicastTable: [String]

    public init(name: String, promiscuous: Bool, multicast: String, unicast: String, broadcastAllowed: Bool,
                multicastOverflow: Bool, unicastOverflow: Bool, mainMAC: String, unicastTable: [String], multicastTable: [String]) {
        self.name = name
        self.promiscuous = promiscuous
        self.multicast = multicast
        self.unicast = unicast
        self.broadcastAllowed = broadcastAllowed
        self.multicastOverflow = multicastOverflow
        self.unicastOverflow = unicastOverflow
        self.mainMAC = mainMAC
        self.unicastTable = unicastTable
        self.multicastTable = multicastTable
    }

    var json: JSONValue {
        [
            "name": .string(name), "promiscuous": .bool(promiscuous), "multicast": .string(multicast),
            // Without VIRTIO_NET_F_CTRL_VLAN every VLAN passes (QEMU: RX_STATE_ALL).
            "unicast": .string(unicast), "vlan": "all", "broadcast-allowed": .bool(broadcastAllowed),
            "multicast-overflow": .bool(multicastOverflow), "unicast-overflow": .bool(unicastOverflow),
            "main-mac": .string(mainMAC), "vlan-table": .array([]),
            "unicast-table": .array(unicastTable.map { .string($0) }),
            "multicast-table": .array(multicastTable.map { .string($0) }),
        ]
    }
}

/// The QMP commands of networking (qapi/net.json, QEMU 7.2) on a target's `NetworkControl`.
enum NetworkCommands {
    typealias Command = QMPCommands.Command
    typealias Parameter = QMPCommands.Parameter

    static let all: [Command] = [
        Command(name: "set_link", parameters: [
            Parameter(name: "name", type: .string, optional: false), Parameter(name: "up", type: .bool, optional: false),
        ]),
        Command(name: "query-rx-filter", parameters: [Parameter(name: "name", type: .string, optional: true)]),
    ]

    static func run(_ name: String, _ args: JSONObject, target: any MonitorTarget) throws(QMPError) -> JSONValue {
        switch name {
        case "set_link":
            let device = args["name"]?.stringValue ?? ""
            guard let network = target.network else { throw .deviceNotFound("Device '\(device)' not found") }
            try network.setLink(name: device, up: args["up"]?.boolValue ?? true)
            return [:]
        default:  // query-rx-filter
            let device = args["name"]?.stringValue
            guard let network = target.network else {
                if let device { throw .generic("net client(\(device)) isn't a NIC") }
                return .array([])
            }
            return .array(try network.rxFilters(name: device).map(\.json))
        }
    }
}

extension QMPError {
    static func deviceNotFound(_ desc: String) -> QMPError { QMPError(errorClass: "DeviceNotFound", desc: desc) }
}

/// The human monitor's network commands.
extension HumanMonitor {
    func networkCommand(_ name: String, _ rest: String) -> String {
        let words = rest.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        switch name {
        case "set_link":
            guard words.count == 2, let up = ["on": true, "off": false][words[1]] else {
                return "set_link: expected name on|off\n"
            }
            guard let network = target.network else { return "Error: Device '\(words[0])' not found\n" }
            do throws(QMPError) {
                try network.setLink(name: words[0], up: up)
                return ""
            } catch {
                return "Error: \(error.desc)\n"
            }
        default:  // hostfwd_add, hostfwd_remove: [netdev_id] rule
            guard (1...2).contains(words.count) else { return "\(name): expected [netdev_id] rule\n" }
            guard let network = target.network else { return "user mode network stack not in use\n" }
            let netdev = words.count == 2 ? words[0] : nil
            return name == "hostfwd_add"
                ? network.hostForwardAdd(netdev: netdev, rule: words[words.count - 1])
                : network.hostForwardRemove(netdev: netdev, rule: words[words.count - 1])
        }
    }

    func networkInfo(_ sub: String) -> String {
        // Without NICs or user networking QEMU prints nothing for either.
        guard let network = target.network else { return "" }
        return sub == "usernet" ? network.userNetworkInfo : network.networkInfo
    }
}
