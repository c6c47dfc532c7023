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
            Property(name: "write-cache", type: "OnOffAuto", description: "on/off/auto"),
            Property(name: "bootindex", type: "int32", description: nil),
        ]),
        TypeInfo(name: "virtio-rng-device", parent: "virtio-device", abstract: false, properties: []),
        TypeInfo(name: "virtio-keyboard-device", parent: "virtio-input-hid-device", abstract: false, properties: []),
        TypeInfo(name: "virtio-balloon-device", parent: "virtio-device", abstract: false, properties: [
            Property(name: "deflate-on-oom", type: "bool", description: "on/off"),
            Property(name: "free-page-reporting", type: "bool", description: "on/off"),
        ]),
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

    /// The microvm's serial port as libvirt names it for an x86 guest (`-device
    /// isa-serial,chardev=ID`): the board's 8250 at 0x3f8, on that chardev.
    public static let isaSerial = TypeInfo(name: "isa-serial", parent: "isa-device", abstract: false, properties: [
        Property(name: "chardev", type: "str", description: "ID of a chardev to use as a backend"),
        Property(name: "index", type: "uint32", description: nil),
    ])

    /// The abstract types above them, and the network filter `-object` creates.
    static let others: [TypeInfo] = [
        TypeInfo(name: "object", parent: nil, abstract: true, properties: []),
        TypeInfo(name: "device", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "virtio-device", parent: "device", abstract: true, properties: []),
        TypeInfo(name: "virtio-input-device", parent: "virtio-device", abstract: true, properties: []),
        TypeInfo(name: "virtio-input-hid-device", parent: "virtio-input-device", abstract: true, properties: []),
        // The boards' virtio transport (libvirt places devices on virtio-mmio when it is listed).
        TypeInfo(name: "sys-bus-device", parent: "device", abstract: true, properties: []),
        TypeInfo(name: "virtio-mmio", parent: "sys-bus-device", abstract: false, properties: []),
        TypeInfo(name: "virtio-serial-port", parent: "device", abstract: true, properties: []),
        TypeInfo(name: "virtserialport", parent: "virtio-serial-port", abstract: false, properties: []),
        TypeInfo(name: "machine", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "netfilter", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "filter-dump", parent: "netfilter", abstract: false, properties: [
            Property(name: "netdev", type: "str", description: nil),
            Property(name: "file", type: "str", description: nil),
            Property(name: "maxlen", type: "uint32", description: nil),
        ]),
        // Host memory backends (-object, the RAM -machine memory-backend= names): the
        // properties whose settings swemu carries out; the CLI refuses the others' "on".
        TypeInfo(name: "memory-backend", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "memory-backend-ram", parent: "memory-backend", abstract: false, properties: memoryBackend),
        TypeInfo(name: "memory-backend-memfd", parent: "memory-backend", abstract: false, properties: memoryBackend + [
            Property(name: "seal", type: "bool", description: "Seal growing & shrinking"),
        ]),
        TypeInfo(name: "memory-backend-file", parent: "memory-backend", abstract: false, properties: memoryBackend + [
            Property(name: "mem-path", type: "string", description: nil),
            Property(name: "align", type: "int", description: nil),
        ]),
        TypeInfo(name: "secret_common", parent: "object", abstract: true, properties: []),
        TypeInfo(name: "secret", parent: "secret_common", abstract: false, properties: [
            Property(name: "data", type: "string", description: nil),
            Property(name: "file", type: "string", description: nil),
            Property(name: "format", type: "QCryptoSecretFormat", description: nil),
            Property(name: "loaded", type: "bool", description: nil),
        ]),
    ]

    /// What every memory backend takes (QEMU 7.2's descriptions).
    private static let memoryBackend = [
        Property(name: "size", type: "int", description: "Size of the memory region (ex: 500M)"),
        Property(name: "share", type: "bool", description: "Mark the memory as private to QEMU or shared"),
        Property(name: "prealloc", type: "bool", description: "Preallocate memory"),
        Property(name: "prealloc-threads", type: "int", description: "Number of CPU threads to use for prealloc"),
        Property(name: "merge", type: "bool", description: "Mark memory as mergeable"),
        Property(name: "dump", type: "bool", description: "Set to 'off' to exclude from core dump"),
        Property(name: "reserve", type: "bool", description: "Reserve swap space (or huge pages) if applicable"),
        Property(name: "policy", type: "HostMemPolicy", description: "Set the NUMA policy"),
    ]

    /// The machine properties `-machine` takes (QEMU's generic ones swemu carries out).
    private static func machineProperties(_ name: String) -> [Property] {
        var properties = [
            Property(name: "dump-guest-core", type: "bool", description: "Include guest memory in a core dump"),
            Property(name: "mem-merge", type: "bool", description: "Enable/disable memory merge support"),
            Property(name: "usb", type: "bool", description: "Set on/off to enable/disable usb"),
        ]
        if name != "none" {
            properties.append(Property(name: "memory-backend", type: "link<memory-backend>",
                                       description: "Set RAM backendValid value is ID of hostmem based backend"))
        }
        if name == "virt" { properties.append(Property(name: "dumpdtb", type: "string", description: "Dump current dtb to a file and quit")) }
        return properties
    }

    /// Every type of a binary whose machines are `machines` ("virt", "none", ...: "NAME-machine")
    /// and accelerators `accelerators` ("tcg", "kvm": "NAME-accel", which libvirt reads as
    /// the virtualization types it may use).
    static func all(machines: [String], accelerators: [String]) -> [TypeInfo] {
        // isa-serial exists where the microvm does (the x86-64 binary).
        others + devices + (machines.contains("microvm") ? [TypeInfo(name: "isa-device", parent: "device", abstract: true, properties: []), isaSerial] : [])
            + machines.map { name in
            TypeInfo(name: name + "-machine", parent: "machine", abstract: false, properties: machineProperties(name))
        } + [TypeInfo(name: "accel", parent: "object", abstract: true, properties: [])] + accelerators.map { name in
            TypeInfo(name: name + "-accel", parent: "accel", abstract: false, properties: [])
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
    static func listTypes(_ args: JSONObject, machines: [String], accelerators: [String]) -> JSONValue {
        let types = all(machines: machines, accelerators: accelerators)
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
    static func deviceProperties(_ name: String, machines: [String], accelerators: [String]) throws(QMPError) -> JSONValue {
        let types = all(machines: machines, accelerators: accelerators)
        guard let type = types.first(where: { $0.name == name }), isA(type, "device", in: types) else {
            throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(name)' not found")
        }
        guard !type.abstract else { throw .generic("Parameter 'typename' expects a non-abstract device type") }
        return propertyList(type.properties)
    }

    /// `qom-list-properties typename`: any type's properties.
    static func objectProperties(_ name: String, machines: [String], accelerators: [String]) throws(QMPError) -> JSONValue {
        guard let type = all(machines: machines, accelerators: accelerators).first(where: { $0.name == name }) else {
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
