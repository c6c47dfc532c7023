import SystemSupport

/// One QMP connection as a codec with no I/O (DESIGN.md §9.6; docs/interop/qmp-spec.rst,
/// QEMU 7.2): bytes from the client go in, replies come out, commands are carried out
/// through a `MonitorTarget`.
///
/// ```swift
/// var session = QMPSession(target: machine)
/// write(session.greeting())
/// session.receive(bytesFromClient)
/// while let reply = session.processNext() {
///     write(reply.bytes)
///     if reply.quitRequested { machine.quit() }
/// }
/// if let bytes = session.event(.stop, timestamp: .now()) { write(bytes) }
/// ```
///
/// Protocol, as QEMU 7.2 does it:
/// - The greeting advertises the "oob" capability; `qmp_capabilities` (optionally with
///   `"enable": ["oob"]`) ends negotiation. Before it every other command fails with
///   CommandNotFound "Expecting capabilities negotiation with 'qmp_capabilities'"; after it
///   `qmp_capabilities` fails with CommandNotFound "Capabilities negotiation is already
///   complete, command ignored". With oob enabled, `exec-oob` is accepted as a key, and since
///   no swemu command runs out of band each such request fails "The command X does not
///   support OOB".
/// - A request is an object with `execute` (a string), optional `arguments` (an object) and
///   optional `id` (any JSON, echoed in the reply); anything else is refused with QEMU's
///   GenericError texts. Arguments are checked against each command's parameters first:
///   "Invalid parameter type for 'x', expected: integer", "Parameter 'x' is missing",
///   "Parameter 'x' is unexpected".
/// - Replies: `{"return": ..., "id": ...}` or `{"id": ..., "error": {"class": ..., "desc":
///   ...}}`; events `{"timestamp": {"seconds": S, "microseconds": U}, "event": "STOP"}` with
///   `"data"` last when there is any; all in QEMU's member order, one per line, "\r\n" ends.
/// - Bad JSON gets a GenericError "JSON parse error, ..." without an id and the stream goes
///   on with the next message; see `QMPFramer` for limits (1 MiB per message by default:
///   an error reply, then the rest of that message is skipped; the connection stays).
public struct QMPSession: Sendable {
    /// QEMU's error for `cont` in the "shutdown" run state.
    static let resetRequired = "Resetting the Virtual Machine is required"
    public let target: any MonitorTarget
    public let version: MonitorVersion
    private var framer: QMPFramer
    private var pending: [QMPFramer.Item] = []
    private var pendingStart = 0

    /// The longest message accepted by default: 1 MiB (QEMU allows 64 MiB; no command of
    /// ours takes more than a command line).
    public static let defaultMaxMessageSize = QMPFramer.defaultMaxMessageSize

    /// `qmp_capabilities` succeeded: commands run and events are sent.
    public private(set) var isNegotiated = false
    /// Descriptors the client sent (SCM_RIGHTS) for `getfd` to name, oldest first; the
    /// server closes those left when the client goes.
    var receivedDescriptors: [Int32] = []
    /// The client enabled the "oob" capability.
    public private(set) var isOOBEnabled = false

    /// - Parameter maxMessageSize: the longest JSON message accepted (bytes).
    /// `pretty=on`: every message in QEMU's indented form (`JSONValue.prettySerialized`).
    public let pretty: Bool

    public init(target: any MonitorTarget, version: MonitorVersion = .swemu,
                maxMessageSize: Int = QMPSession.defaultMaxMessageSize, pretty: Bool = false) {
        self.target = target
        self.version = version
        self.pretty = pretty
        framer = QMPFramer(maxMessageSize: maxMessageSize)
    }

    /// The greeting, to send when the client connects.
    public func greeting() -> [UInt8] {
        Self.line(["QMP": ["version": version.versionInfo, "capabilities": ["oob"]]], pretty: pretty)
    }

    /// Takes bytes from the client; complete messages wait for `processNext`.
    public mutating func receive(_ bytes: [UInt8]) {
        pending += framer.push(bytes)
    }

    /// Whether `processNext` has something to do.
    public var hasPendingMessages: Bool { pendingStart < pending.count }

    /// Carries out the next complete message and returns the reply (nil when none is ready).
    /// Events the target emits while a command runs are the server's to send.
    public mutating func processNext() -> MonitorOutput? {
        guard pendingStart < pending.count else { return nil }
        let item = pending[pendingStart]
        pendingStart += 1
        if pendingStart == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingStart = 0
        }
        switch item {
        case .error(let desc):
            return MonitorOutput(bytes: Self.line(Self.errorResponse(QMPError.generic(desc), id: nil), pretty: pretty))
        case .message(let bytes):
            return handle(bytes)
        }
    }

    /// `receive` and `processNext` until done: all replies in order (for tests and simple
    /// callers; `quitRequested` is set if any request asked to quit).
    public mutating func feed(_ bytes: [UInt8]) -> MonitorOutput {
        receive(bytes)
        var out = MonitorOutput()
        while let reply = processNext() { out.append(reply) }
        return out
    }

    /// The event message, or nil before negotiation (QEMU sends no events until then).
    public func event(_ event: MonitorEvent, timestamp: QMPTimestamp) -> [UInt8]? {
        isNegotiated ? Self.eventMessage(event, timestamp: timestamp, pretty: pretty) : nil
    }

    /// An event message (qapi/run-state.json), regardless of session state.
    public static func eventMessage(_ event: MonitorEvent, timestamp: QMPTimestamp, pretty: Bool = false) -> [UInt8] {
        var message: JSONObject = [
            "timestamp": ["seconds": .int(timestamp.seconds), "microseconds": .int(timestamp.microseconds)]
        ]
        switch event {
        case .stop:
            message.set("event", "STOP")
        case .resume:
            message.set("event", "RESUME")
        case .powerdown:
            message.set("event", "POWERDOWN")
        case .reset(let guest, let reason):
            message.set("event", "RESET")
            message.set("data", ["guest": .bool(guest), "reason": .string(reason)])
        case .shutdown(let guest, let reason):
            message.set("event", "SHUTDOWN")
            message.set("data", ["guest": .bool(guest), "reason": .string(reason)])
        case .migration(let status):
            message.set("event", "MIGRATION")
            message.set("data", ["status": .string(status)])
        case .migrationPass(let pass):
            message.set("event", "MIGRATION_PASS")
            message.set("data", ["pass": .int(Int64(pass))])
        case .jobStatusChange(let id, let status):
            message.set("event", "JOB_STATUS_CHANGE")
            message.set("data", ["status": .string(status), "id": .string(id)])
        case .balloonChange(let actual):
            message.set("event", "BALLOON_CHANGE")
            message.set("data", ["actual": .unsigned(actual)])
        }
        return line(.object(message), pretty: pretty)
    }

    static func line(_ value: JSONValue, pretty: Bool) -> [UInt8] {
        Array(((pretty ? value.prettySerialized : value.serialized) + "\r\n").utf8)
    }

    static func errorResponse(_ error: QMPError, id: JSONValue?) -> JSONValue {
        var response = JSONObject()
        if let id { response.set("id", id) }
        response.set("error", ["class": .string(error.errorClass), "desc": .string(error.desc)])
        return .object(response)
    }

    // MARK: - dispatch (qapi/qmp-dispatch.c, monitor/qmp.c)

    private mutating func handle(_ bytes: [UInt8]) -> MonitorOutput {
        let request: JSONValue
        do {
            request = try JSONParser.parse(bytes)
        } catch {
            return MonitorOutput(bytes: Self.line(Self.errorResponse(.generic("JSON parse error, \(error.message)"), id: nil), pretty: pretty))
        }
        guard case .object(let object) = request else {
            return MonitorOutput(bytes: Self.line(Self.errorResponse(.generic("QMP input must be a JSON object"), id: nil), pretty: pretty))
        }
        let id = object["id"]
        var quit = false
        let reply: JSONValue
        switch dispatch(object, quit: &quit) {
        case .success(let value):
            var response: JSONObject = ["return": value]
            if let id { response.set("id", id) }
            reply = .object(response)
        case .failure(var error):
            if !isNegotiated && error.errorClass == QMPError.commandNotFoundClass {
                // monitor_qmp_dispatch: "Provide a more useful error message".
                error.desc = "Expecting capabilities negotiation with 'qmp_capabilities'"
            }
            reply = Self.errorResponse(error, id: id)
        }
        return MonitorOutput(bytes: Self.line(reply, pretty: pretty), quitRequested: quit)
    }

    private mutating func dispatch(_ request: JSONObject, quit: inout Bool) -> Result<JSONValue, QMPError> {
        var execKey: String?
        for member in request.members {
            switch member.key {
            case "execute", "exec-oob":
                guard member.key == "execute" || isOOBEnabled else {
                    return .failure(.generic("QMP input member '\(member.key)' is unexpected"))
                }
                guard case .string = member.value else {
                    return .failure(.generic("QMP input member '\(member.key)' must be a string"))
                }
                if let other = execKey {
                    return .failure(.generic("QMP input member '\(member.key)' clashes with '\(other)'"))
                }
                execKey = member.key
            case "arguments":
                guard case .object = member.value else {
                    return .failure(.generic("QMP input member 'arguments' must be an object"))
                }
            case "id":
                continue
            default:
                return .failure(.generic("QMP input member '\(member.key)' is unexpected"))
            }
        }
        guard let execKey, let name = request[execKey]?.stringValue else {
            return .failure(.generic("QMP input lacks member 'execute'"))
        }
        // Before negotiation only qmp_capabilities exists (qmp_cap_negotiation_commands).
        guard let command = QMPCommands.find(name), isNegotiated || command.name == "qmp_capabilities" else {
            return .failure(.commandNotFound("The command \(name) has not been found"))
        }
        if execKey == "exec-oob" {
            return .failure(.generic("The command \(name) does not support OOB"))
        }
        let arguments = request["arguments"]?.objectValue ?? JSONObject()
        do throws(QMPError) {
            try command.check(arguments)
            return .success(try run(command.name, arguments, quit: &quit))
        } catch {
            return .failure(error)
        }
    }

    private mutating func run(_ name: String, _ args: JSONObject, quit: inout Bool) throws(QMPError) -> JSONValue {
        switch name {
        case "qmp_capabilities":
            if isNegotiated {
                throw .commandNotFound("Capabilities negotiation is already complete, command ignored")
            }
            // qmp_caps_accept: only what the greeting offered ("oob"); the parameter check
            // already refused names that are no QMPCapability.
            let enable = args["enable"]?.arrayValue?.compactMap(\.stringValue) ?? []
            isOOBEnabled = enable.contains("oob")
            isNegotiated = true
            return [:]
        case "human-monitor-command":
            var hmp = HumanMonitor(target: target, version: version)
            if let index = args["cpu-index"]?.int64Value {
                guard let i = Int(exactly: index), hmp.selectCPU(i) else {
                    throw .generic("Parameter 'cpu-index' expects a CPU number")
                }
            }
            let output = hmp.execute(args["command-line"]?.stringValue ?? "")
            if output.quitRequested { quit = true }
            return .string(output.text)
        case "quit":
            quit = true
            return [:]
        case "qom-list-types":
            return QOMTypes.listTypes(args, machines: target.machineList.map(\.name), accelerators: target.accelerators)
        case "device-list-properties":
            return try QOMTypes.deviceProperties(args["typename"]?.stringValue ?? "", machines: target.machineList.map(\.name),
                                                 accelerators: target.accelerators)
        case "query-blockstats":
            let nodes = args["query-nodes"]?.boolValue ?? false
            return .array(target.blockDevices.map { QMPCommands.blockStats($0, nodes: nodes) })
        case "getfd":
            // QEMU's qmp_getfd: the descriptor that came with this command, under its name.
            guard !receivedDescriptors.isEmpty else { throw .generic("No file descriptor supplied via SCM_RIGHTS") }
            MonitorFDs.add(args["fdname"]?.stringValue ?? "", receivedDescriptors.removeFirst())
            return [:]
        case "closefd":
            let name = args["fdname"]?.stringValue ?? ""
            guard MonitorFDs.close(name) else { throw .generic("File descriptor named '\(name)' not found") }
            return [:]
        case "qom-list":
            // The containers of devices: /machine/peripheral holds those given an id.
            let path = args["path"]?.stringValue ?? ""
            let type: JSONValue = ["name": "type", "type": "string"]
            switch path {
            case "/machine/peripheral":
                return .array([type] + target.peripherals.map { ["name": .string($0.id), "type": .string("child<\($0.type)>")] })
            case "/machine/peripheral-anon":
                return [type]
            default:
                throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(path)' not found")
            }
        case "qom-get", "qom-set":
            // The properties swemu has: the balloon's statistics, on its path (an id under
            // /machine/peripheral, as libvirt gives it).
            let path = args["path"]?.stringValue ?? ""
            let id = path.hasPrefix("/machine/peripheral/") ? String(path.dropFirst("/machine/peripheral/".count)) : nil
            guard let id, target.peripherals.contains(where: { $0.id == id && $0.type == "virtio-balloon-device" }),
                  let balloon = target.balloon else {
                throw QMPError(errorClass: "DeviceNotFound", desc: "Device '\(path)' not found")
            }
            return try BalloonCommands.property(args["property"]?.stringValue ?? "", set: name == "qom-set" ? args["value"] : nil,
                                                on: balloon)
        case "query-command-line-options":
            // qmp_query_command_line_options: every option, or the one asked for.
            let options = target.commandLineOptions
            let asked = args["option"]?.stringValue
            let chosen = asked.map { name in options.filter { $0.option == name } } ?? options
            if let asked, chosen.isEmpty { throw .generic("invalid option name: \(asked)") }
            return .array(chosen.map { option in
                ["option": .string(option.option),
                 "parameters": .array(option.parameters.map { ["name": .string($0.name), "type": .string($0.type.rawValue)] })]
            })
        case "qom-list-properties":
            return try QOMTypes.objectProperties(args["typename"]?.stringValue ?? "", machines: target.machineList.map(\.name),
                                                 accelerators: target.accelerators)
        case "cont" where target.runState == "shutdown":
            // QEMU's qmp_cont: a guest that powered off (-no-shutdown) needs system_reset first.
            throw .generic(Self.resetRequired)
        case _ where MigrationCommands.all.contains(where: { $0.name == name }):
            return try MigrationCommands.run(name, args, target: target)
        case _ where NetworkCommands.all.contains(where: { $0.name == name }):
            return try NetworkCommands.run(name, args, target: target)
        case _ where BalloonCommands.all.contains(where: { $0.name == name }):
            return try BalloonCommands.run(name, args, target: target)
        case "send-key":
            return try KeyCommands.run(args, target: target)
        default:
            return QMPCommands.query(name, target: target, version: version)
        }
    }
}

/// An event's wall-clock time (qmp-spec: seconds and microseconds since the Epoch).
public struct QMPTimestamp: Sendable, Equatable {
    public var seconds: Int64
    public var microseconds: Int64
    public init(seconds: Int64, microseconds: Int64) {
        self.seconds = seconds
        self.microseconds = microseconds
    }
}

/// A QMP error: QEMU's ErrorClass name and the human-readable description.
public struct QMPError: Error, Equatable, Sendable {
    static let commandNotFoundClass = "CommandNotFound"
    public var errorClass: String
    public var desc: String
    public init(errorClass: String, desc: String) {
        self.errorClass = errorClass
        self.desc = desc
    }
    public static func generic(_ desc: String) -> QMPError { QMPError(errorClass: "GenericError", desc: desc) }
    static func commandNotFound(_ desc: String) -> QMPError { QMPError(errorClass: commandNotFoundClass, desc: desc) }
}
