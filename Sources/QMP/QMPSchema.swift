/// `query-qmp-schema`: QEMU's introspection (qapi/introspect.json, `SchemaInfo`) generated from
/// swemu's own command table (`QMPCommands.all`) and the events it sends, never copied from
/// QEMU's schema: a management tool (libvirt probes it first) learns exactly which commands
/// and arguments exist. As QEMU does, types other than the built-in ones get numbers for
/// names ("0" is the empty object), so clients look commands up by name and follow their
/// `arg-type`. Not described yet: the shapes of the replies (every `ret-type` is the built-in
/// "any") and enumerations (string members are "str").
enum QMPSchema {
    /// The events `QMPSession.eventMessage` sends and their `data` members.
    static let events: [(name: String, members: [QMPCommands.Parameter])] = [
        ("SHUTDOWN", [.init(name: "guest", type: .bool, optional: false), .init(name: "reason", type: .string, optional: false)]),
        ("POWERDOWN", []),
        ("RESET", [.init(name: "guest", type: .bool, optional: false), .init(name: "reason", type: .string, optional: false)]),
        ("STOP", []),
        ("RESUME", []),
        ("MIGRATION", [.init(name: "status", type: .string, optional: false)]),
        ("MIGRATION_PASS", [.init(name: "pass", type: .int, optional: false)]),
        ("JOB_STATUS_CHANGE", [.init(name: "id", type: .string, optional: false), .init(name: "status", type: .string, optional: false)]),
        ("BALLOON_CHANGE", [.init(name: "actual", type: .int, optional: false)]),
    ]

    static func introspect(_ commands: [QMPCommands.Command] = QMPCommands.all) -> JSONValue {
        var builder = Builder()
        var entries: [JSONValue] = []
        for command in commands {
            let arguments = builder.object(command.parameters)
            var entry: JSONObject = ["name": .string(command.name), "meta-type": "command", "arg-type": .string(arguments),
                                     "ret-type": "any"]
            if command.name == "qmp_capabilities" { entry.set("allow-preconfig", true) }
            entries.append(.object(entry))
        }
        for event in events {
            entries.append(["name": .string(event.name), "meta-type": "event", "arg-type": .string(builder.object(event.members))])
        }
        return .array(entries + builder.types)
    }

    /// The non-command entries, each defined once, numbered in order of first use.
    private struct Builder {
        var types: [JSONValue] = [
            ["name": "str", "meta-type": "builtin", "json-type": "string"],
            ["name": "int", "meta-type": "builtin", "json-type": "int"],
            ["name": "bool", "meta-type": "builtin", "json-type": "boolean"],
            ["name": "any", "meta-type": "builtin", "json-type": "value"],
            ["name": "[str]", "meta-type": "array", "element-type": "str"],
            ["name": "[any]", "meta-type": "array", "element-type": "any"],
        ]
        private var named: [String: String] = [:]
        private var next = 0

        private mutating func define(key: String, _ make: (String) -> JSONValue) -> String {
            if let name = named[key] { return name }
            let name = String(next)
            next += 1
            named[key] = name
            types.append(make(name))
            return name
        }

        /// An object type with these members (optional ones with `default: null`, as QEMU).
        mutating func object(_ members: [QMPCommands.Parameter]) -> String {
            var described: [JSONValue] = []
            for member in members {
                var m: JSONObject = ["name": .string(member.name), "type": .string(type(member.type))]
                if member.optional { m.set("default", .null) }
                described.append(.object(m))
            }
            let key = "object:" + JSONValue.array(described).serialized
            return define(key: key) { ["name": .string($0), "meta-type": "object", "members": .array(described)] }
        }

        mutating func type(_ type: QMPCommands.ParameterType) -> String {
            switch type {
            case .string: return "str"
            case .int: return "int"
            case .bool: return "bool"
            case .stringList: return "[str]"
            case .objectList: return "[any]"
            case .any: return "any"
            case .enumList(let values):
                let element = define(key: "enum:" + values.joined(separator: ",")) { name in
                    ["name": .string(name), "meta-type": "enum", "values": .array(values.map { .string($0) }),
                     "members": .array(values.map { ["name": .string($0)] })]
                }
                return define(key: "array:" + element) { ["name": .string($0), "meta-type": "array", "element-type": .string(element)] }
            }
        }
    }
}
