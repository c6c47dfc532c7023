/// The QOM types swemu provides, as QMP's `qom-list-types`, `device-list-properties` and
/// `qom-list-properties` report them (QEMU's names, parents and property types), so a
/// management tool sees what `-device` takes here and nothing more. `-device` checks its keys
/// against the same lists (CLI/DeviceOptions.swift).
public enum QOMTypes {
    public struct Property: Sendable {
        public let name: String
        /// QEMU's property type names: "str", "macaddr", ...
        public let type: String
        public let description: String?
    }

    public struct TypeInfo: Sendable {
        public let name: String
        public let parent: String?
        public let abstract: Bool
        public let properties: [Property]
    }

    /// The devices `-device` creates, on every board (virtio-mmio): with `id`, their keys.
    public static let devices: [TypeInfo] = [
        TypeInfo(name: "virtio-blk-device", parent: "virtio-device", abstract: false, properties: [
            Property(name: "drive", type: "str", description: "Node name or ID of a block device to use as a backend"),
            Property(name: "serial", type: "str", description: nil),
        ]),
        TypeInfo(name: "virtio-rng-device", parent: "virtio-device", abstract: false, properties: []),
        TypeInfo(name: "virtio-serial-device", parent: "virtio-device", abstract: false, properties: []),
        TypeInfo(name: "virtconsole", parent: "virtserialport", abstract: false, properties: [
            Property(name: "chardev", type: "str", description: "ID of a chardev to use as a backend"),
            Property(name: "name", type: "str", description: nil),
        ]),
        TypeInfo(name: "virtio-net-device", parent: "virtio-device", abstract: false, properties: [
            Property(name: "netdev", type: "str", description: "ID of a netdev to use as a backend"),
            Property(name: "mac", type: "macaddr", description: "Ethernet 6-byte MAC Address, example: 52:54:00:12:34:56"),
        ]),
    ]

    /// The abstract types above them, and the network filter `-object` creates.
    static let others: [TypeInfo] = [
        TypeInfo(name: "object", parent: nil, abstract: true, properties: []),
        TypeInfo(name: "device", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "virtio-device", parent: "device", abstract: true, properties: []),
        TypeInfo(name: "virtio-serial-port", parent: "device", abstract: true, properties: []),
        TypeInfo(name: "virtserialport", parent: "virtio-serial-port", abstract: false, properties: []),
        TypeInfo(name: "machine", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "netfilter", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "filter-dump", parent: "netfilter", abstract: false, properties: [
            Property(name: "netdev", type: "str", description: nil),
            Property(name: "file", type: "str", description: nil),
            Property(name: "maxlen", type: "uint32", description: nil),
        ]),
    ]

    /// Every type of a binary whose machines are `machines` ("virt", "none", ...: "NAME-machine").
    static func all(machines: [String]) -> [TypeInfo] {
        others + devices + machines.map { name in
            TypeInfo(name: name + "-machine", parent: "machine", abstract: false,
                     properties: name == "virt" ? [Property(name: "dumpdtb", type: "str", description: "Dump current dtb to a file and quit")] : [])
        }
    }

    static func isA(_ type: TypeInfo, _ ancestor: String, in types: [TypeInfo]) -> Bool {
        var current: TypeInfo? = type
        while let t = current {
            if t.name == ancestor { return true }
            current = t.parent.flatMap { p in types.first { $0.name == p } }
        }
        return false
    }

    /// `qom-list-types [implements] [abstract]`: ObjectTypeInfo, non-abstract ones unless asked.
    static func listTypes(_ args: JSONObject, machines: [String]) -> JSONValue {
        let types = all(machines: machines)
        let implements = args["implements"]?.stringValue
        let abstract = args["abstract"]?.boolValue ?? false
        return .array(types.filter { t in
            (abstract || !t.abstract) && (implements.map { isA(t, $0, in: types) } ?? true)
        }.map { t in
            var info: JSONObject = ["name": .string(t.name)]
            if t.abstract { info.set("abstract", true) }
            if let parent = t.parent { info.set("parent", .string(parent)) }
            return .object(info)
        })
    }

    /// `device-list-properties typename`: the device's properties (ObjectPropertyInfo).
    static func deviceProperties(_ name: String, machines: [String]) throws(QMPError) -> JSONValue {
        let types = all(machines: machines)
        guard let type = types.first(where: { $0.name == name }), isA(type, "device", in: types) else {
            throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(name)' not found")
        }
        guard !type.abstract else { throw .generic("Parameter 'typename' expects a non-abstract device type") }
        return propertyList(type.properties)
    }

    /// `qom-list-properties typename`: any type's properties.
    static func objectProperties(_ name: String, machines: [String]) throws(QMPError) -> JSONValue {
        guard let type = all(machines: machines).first(where: { $0.name == name }) else {
            throw QMPError(errorClass: "DeviceNotFound", desc: "Class '\(name)' not found")
        }
        return propertyList(type.properties)
    }

    private static func propertyList(_ properties: [Property]) -> JSONValue {
        .array(properties.map { p in
            var info: JSONObject = ["name": .string(p.name), "type": .string(p.type)]
            if let d = p.description { info.set("description", .string(d)) }
            return .object(info)
        })
    }
}
