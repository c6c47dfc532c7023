import DeviceModel
import Net
import SystemSupport

/// One `-netdev TYPE,id=ID,...`, or the backend half of a `-nic`.
struct NetdevSpec: Sendable, Equatable {
    /// The backends swemu provides, in `-netdev help`'s order.
    static let types = ["socket", "stream", "dgram", "user", "tap"]

    var id: String
    var type: String
    /// The options after the type (`id` included): each backend checks its own keys.
    var options: QemuOpts

    /// Keys a backend takes more than once (`-netdev user`'s forwarding rules, as QEMU's).
    static let repeatable = UserNetConfig.repeatableKeys

    /// `text` as given to `-netdev` (`TYPE,id=ID,...`).
    init(parsing text: String) throws(SystemError) {
        try self.init(options: QemuOpts.parse(jsonOrKeyval: text, impliedKey: "type", option: "-netdev", repeatable: Self.repeatable))
    }

    /// From options whose implied key is `type`; `defaultID` when they have no `id` (`-nic`).
    init(options opts: QemuOpts, defaultID: String? = nil) throws(SystemError) {
        let option = opts.option
        guard let type = opts.string("type") else { throw .configuration("\(option): Parameter 'type' is missing") }
        guard Self.types.contains(type) else {
            throw .configuration("\(option): '\(type)' is not a network backend swemu provides; available: \(Self.types.joined(separator: ", ")) (see \(option) help)")
        }
        var entries = opts.entries.filter { $0.key != "type" }
        if !entries.contains(where: { $0.key == "id" }), let defaultID { entries.append(.init(key: "id", value: defaultID)) }
        let options = try QemuOpts(option: option, entries: entries, repeatable: opts.repeatable)
        guard let id = options.string("id") else { throw .configuration("\(option): Parameter 'id' is missing") }
        try Self.checkIdentifier(id, option: option)
        self.id = id
        self.type = type
        self.options = options
    }

    /// QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_' (the ids `-nic`
    /// makes up start with "__org.qemu." and are not checked).
    static func checkIdentifier(_ id: String, option: String) throws(SystemError) {
        if id.hasPrefix("__org.qemu.") { return }
        let ok = id.first.map { $0.isASCII && $0.isLetter } == true
            && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }
        if !ok { throw .configuration("\(option): Parameter 'id' expects an identifier (a letter, then letters, digits, '-', '.', '_'), not '\(id)'") }
    }

    /// `-netdev help`.
    static var helpText: String { "Available netdev backend types:\n" + types.map { $0 + "\n" }.joined() }
}

/// A NIC: `-device virtio-net-device,netdev=ID[,mac=][,id=]` or the NIC half of a `-nic`.
struct NICSpec: Sendable, Equatable {
    /// virtio-net on the virtio-mmio bus is the only NIC model (both boards).
    static let models = ["virtio-net-device"]

    var netdev: String?
    var mac: MACAddress?
    var id: String?

    static func mac(_ text: String?, option: String) throws(SystemError) -> MACAddress? {
        guard let text else { return nil }
        guard let mac = MACAddress(parsing: text) else {
            throw .configuration("\(option): Property 'mac' expects a MAC address like 52:54:00:12:34:56, not '\(text)'")
        }
        if mac.isMulticast { throw .configuration("\(option): mac=\(text) is a multicast address; a NIC needs a unicast one") }
        return mac
    }

    /// `-nic TYPE[,model=][,mac=][,backend options]`: QEMU's shorthand for a NIC and its
    /// backend together (net_param_nic). nil for `-nic none`. `index` numbers the `-nic`s.
    static func parseShorthand(_ text: String, index: Int) throws(SystemError) -> (NICSpec, NetdevSpec)? {
        let opts = try QemuOpts(parsing: text, impliedKey: "type", option: "-nic", repeatable: NetdevSpec.repeatable)
        if opts.string("type") == "none" {
            guard opts.keys == ["type"] else { throw .configuration("-nic none takes no other options") }
            return nil
        }
        if let model = opts.string("model"), !(models + ["virtio", "virtio-net"]).contains(model) {
            throw .configuration("-nic: model=\(model) is not a NIC swemu provides; available: \(models.joined(separator: ", "))")
        }
        let mac = try mac(opts.string("mac"), option: "-nic")
        let backend = try QemuOpts(option: "-nic", impliedKey: "type", entries: opts.entries.filter { $0.key != "model" && $0.key != "mac" },
                                   repeatable: NetdevSpec.repeatable)
        let netdev = try NetdevSpec(options: backend, defaultID: "__org.qemu.nic\(index)")
        return (NICSpec(netdev: netdev.id, mac: mac, id: nil), netdev)
    }
}

/// `-object filter-dump,id=ID,netdev=ND,file=PATH[,maxlen=N]`: a pcap of every frame the
/// netdev sends and receives (QEMU's net/dump.c).
struct DumpFilterSpec: Sendable, Equatable {
    var id: String
    var netdev: String
    var file: String
    var maxlen: Int

    /// QEMU's default snapshot length (net/dump.c: 65536).
    static let defaultMaxlen = 65536

    init(_ opts: QemuOpts) throws(SystemError) {
        let v = try opts.validate(accepted: ["qom-type", "id", "netdev", "file", "maxlen", "queue", "status"],
                                  context: "object 'filter-dump'")
        let id = try ObjectSpec.checkedID(v, type: "filter-dump")
        guard let netdev = v.string("netdev") else { throw .configuration("filter-dump: Parameter 'netdev' is missing") }
        guard let file = v.string("file"), !file.isEmpty else { throw .configuration("filter-dump: Parameter 'file' is missing") }
        if let queue = v.string("queue"), queue != "all" {
            throw .configuration("filter-dump: queue=\(queue) is not available; it dumps both directions (queue=all)")
        }
        if try v.bool("status", default: true) == false {
            throw .configuration("filter-dump: status=off is not available; leave the filter out instead")
        }
        self.id = id
        self.netdev = netdev
        self.file = file
        maxlen = try v.int("maxlen", in: 1...Int(Int32.max)) ?? Self.defaultMaxlen
    }
}
