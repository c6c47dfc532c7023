import SystemSupport

/// Where a socket chardev listens or connects.
public enum SocketAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// A Unix-domain stream socket at `path`.
    case unix(path: String)
    /// A TCP socket. An empty `host` means every interface for a server, localhost for a client.
    case tcp(host: String, port: UInt16)
    /// A socket the parent process left open (`fd=N`, how libvirt hands over the monitor's):
    /// listening for a server, connected for a client.
    case fd(Int32)

    /// QEMU's spelling: `unix:/tmp/s`, `tcp:127.0.0.1:4444`, `tcp:[::1]:4444`.
    public var description: String {
        switch self {
        case .unix(let path): return "unix:\(path)"
        case .tcp(let host, let port):
            return host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)"
        case .fd(let n):
            return "fd:\(n)"
        }
    }
}

/// A parsed `-chardev` (or `-serial`/`-monitor` short form): which backend, with what options.
/// Opening it is `CharDevice.open(_:loop:quit:)`.
public struct ChardevSpec: Equatable, Sendable {
    public struct Socket: Equatable, Sendable {
        public var address: SocketAddress
        /// Listen for one client at a time (`server=on`) instead of connecting.
        public var server: Bool
        /// Server only: block at startup until the first client connects (QEMU's default).
        public var wait: Bool
        /// Client only: after losing the server, try again every this many seconds (0: never).
        public var reconnectSeconds: Int

        public init(address: SocketAddress, server: Bool, wait: Bool = true, reconnectSeconds: Int = 0) {
            self.address = address
            self.server = server
            self.wait = server && wait
            self.reconnectSeconds = server ? 0 : reconnectSeconds
        }
    }

    public enum Backend: Equatable, Sendable {
        /// Discards output, never has input.
        case null
        /// The process's stdin/stdout; `signal`: Ctrl-C etc. still signal swemu in raw mode.
        case stdio(signal: Bool)
        /// A new pseudo-terminal whose slave path is printed.
        case pty
        /// Output to a file (created or truncated, or appended to), no input.
        case file(path: String, append: Bool)
        case socket(Socket)

        /// The backend's name in `-chardev` syntax.
        public var name: String {
            switch self {
            case .null: return "null"
            case .stdio: return "stdio"
            case .pty: return "pty"
            case .file: return "file"
            case .socket: return "socket"
            }
        }
    }

    /// The `id=` that `-serial chardev:ID`, `-device ...,chardev=ID` and `-mon chardev=ID`
    /// refer to; nil for short forms until the CLI names them.
    public var id: String?
    public var backend: Backend
    /// Shared by several frontends (serial and monitor) through a `CharMux`.
    public var mux: Bool

    public init(id: String?, backend: Backend, mux: Bool = false) {
        self.id = id
        self.backend = backend
        self.mux = mux
    }

    /// Backends `-chardev` accepts, for messages.
    public static let acceptedBackends = "null, stdio, pty, file, socket"
    /// Short forms `-serial` and `-monitor` accept, for messages.
    public static let acceptedShortForms =
        "stdio, pty, null, none, file:PATH, unix:PATH[,server=on,wait=off], tcp:[HOST]:PORT[,server=on,wait=off], mon:BACKEND, chardev:ID"

    // MARK: -chardev

    /// Every key `-chardev` takes, each backend some of them (QEMU's types: `port` is a
    /// string, `reconnect` a number); `query-command-line-options` lists them.
    public static let keys: [(name: String, isBoolean: Bool, isNumber: Bool)] = [
        ("id", false, false), ("mux", true, false), ("signal", true, false), ("path", false, false), ("append", true, false),
        ("host", false, false), ("port", false, false), ("server", true, false), ("wait", true, false), ("nodelay", true, false),
        ("reconnect", false, true), ("fd", false, false),
    ]
    static let booleans = Set(keys.filter(\.isBoolean).map(\.name))

    /// Parses the argument of `-chardev`: `BACKEND,id=ID[,opt=value...]`.
    public static func parse(chardev text: String, option: String = "-chardev") throws(SystemError) -> ChardevSpec {
        let opts = try QemuOpts(parsing: text, impliedKey: "backend", option: option)
        guard let backendName = opts.implied else {
            throw SystemError(.configuration, "\(option): the backend comes first: BACKEND,id=ID[,...] with BACKEND one of \(acceptedBackends)")
        }
        let common = ["id", "mux"]
        let accepted: [String]
        switch backendName {
        case "null", "pty": accepted = common
        case "stdio": accepted = common + ["signal"]
        case "file": accepted = common + ["path", "append"]
        case "socket": accepted = common + ["path", "host", "port", "fd", "server", "wait", "nodelay", "reconnect"]
        default:
            throw SystemError(.configuration, "\(option): backend '\(backendName)' is not supported; accepted: \(acceptedBackends)")
        }
        try rejectUnsupported(opts, option: option)
        let checked = try opts.validate(accepted: accepted, booleans: Self.booleans, context: "backend '\(backendName)'")
        guard let id = checked.string("id") else {
            throw SystemError(.configuration, "\(option): 'id' is required, e.g. \(option) \(backendName),id=char0\(backendName == "socket" ? ",path=/tmp/char0.sock,server=on,wait=off" : backendName == "file" ? ",path=out.log" : "")")
        }
        try validateID(id, option: option)
        let mux = try checked.bool("mux", default: false)
        let backend: Backend
        switch backendName {
        case "null": backend = .null
        case "pty": backend = .pty
        case "stdio": backend = .stdio(signal: try checked.bool("signal", default: true))
        case "file":
            guard let path = checked.string("path"), !path.isEmpty else {
                throw SystemError(.configuration, "\(option): backend 'file' needs path=FILE")
            }
            backend = .file(path: path, append: try checked.bool("append", default: false))
        default:
            backend = .socket(try socket(checked, shortForm: false))
        }
        return ChardevSpec(id: id, backend: backend, mux: mux)
    }

    /// QEMU chardev options swemu knows but does not provide yet: say so, not "unknown".
    private static func rejectUnsupported(_ opts: QemuOpts, option: String) throws(SystemError) {
        for key in ["logfile", "logappend", "telnet", "tn3270", "websocket", "tls-creds", "tls-authz", "abstract", "tight", "ipv4", "ipv6", "to", "input-path"]
        where opts.contains(key) {
            throw SystemError(.unsupported, "\(option): option '\(key)' is not supported yet")
        }
    }

    /// QEMU ids (util/id.c id_wellformed): a letter, then letters, digits, '-', '.', '_'.
    static func validateID(_ id: String, option: String) throws(SystemError) {
        let ok = id.first.map { $0.isASCII && $0.isLetter } == true
            && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "." || $0 == "_") }
        if !ok {
            throw SystemError(.configuration, "\(option): id '\(id)' is not valid: it must start with a letter and use only letters, digits, '-', '.', '_'")
        }
    }

    /// Socket options from checked `opts`: path=… or host=…,port=… (short forms put the
    /// address in path/host/port the same way).
    private static func socket(_ opts: QemuOpts, shortForm: Bool) throws(SystemError) -> Socket {
        let option = opts.option
        let address: SocketAddress
        if opts.contains("fd") {
            guard !opts.contains("path"), !opts.contains("host"), !opts.contains("port") else {
                throw SystemError(.configuration, "\(option): fd=N is the socket itself; it takes no path=, host= or port=")
            }
            address = .fd(Int32(try opts.int("fd", in: 3...Int(Int32.max)) ?? 0))
            if opts.contains("reconnect") {
                throw SystemError(.configuration, "\(option): 'reconnect' cannot be used with fd=: an inherited socket cannot connect again")
            }
        } else if let path = opts.string("path") {
            guard !opts.contains("host"), !opts.contains("port") else {
                throw SystemError(.configuration, "\(option): a socket takes either path=PATH (unix) or host=HOST,port=PORT (tcp), not both")
            }
            guard !path.isEmpty else { throw SystemError(.configuration, "\(option): socket path is empty") }
            address = .unix(path: path)
        } else {
            guard let port = try opts.int("port", in: 0...65535) else {
                throw SystemError(.configuration, "\(option): a socket needs path=PATH (unix) or host=HOST,port=PORT (tcp)")
            }
            address = .tcp(host: opts.string("host") ?? "", port: UInt16(port))
        }
        let server = try opts.bool("server", default: false)
        let wait = try opts.bool("wait", default: true)
        let reconnect = try opts.int("reconnect", in: 0...86400) ?? 0
        if !server && opts.contains("wait") {
            throw SystemError(.configuration, "\(option): 'wait' applies only with server=on")
        }
        if server && reconnect > 0 {
            throw SystemError(.configuration, "\(option): 'reconnect' applies only to a client (server=off)")
        }
        // nodelay is accepted for compatibility: swemu always sets TCP_NODELAY.
        _ = try opts.bool("nodelay")
        return Socket(address: address, server: server, wait: wait, reconnectSeconds: reconnect)
    }

    // MARK: -serial / -monitor short forms

    /// What a `-serial`/`-monitor`/`-parallel` argument asks for.
    public enum Target: Equatable, Sendable {
        /// `none`: no device behind this option.
        case none
        /// `chardev:ID`: an existing `-chardev`.
        case chardev(id: String)
        /// A new chardev. `monitor`: `mon:BACKEND`, a mux shared with a monitor (the form
        /// `-nographic` uses as `mon:stdio`); the spec then has `mux` set.
        case new(ChardevSpec, monitor: Bool)
    }

    /// Parses a `-serial`/`-monitor` short form (QEMU's qemu_chr_parse_compat).
    public static func parse(shortForm text: String, option: String = "-serial") throws(SystemError) -> Target {
        if text.isEmpty {
            throw SystemError(.configuration, "\(option): empty argument; accepted: \(acceptedShortForms)")
        }
        if text == "none" { return .none }
        if let id = text.dropPrefix("chardev:") {
            try validateID(id, option: option)
            return .chardev(id: id)
        }
        if let inner = text.dropPrefix("mon:") {
            guard case .new(var spec, let monitor) = try parse(shortForm: inner, option: option), !monitor else {
                throw SystemError(.configuration, "\(option): 'mon:' takes a backend (mon:stdio, mon:unix:PATH,server=on,wait=off, ...), not '\(inner)'")
            }
            spec.mux = true
            // QEMU: a monitor muxed on stdio takes Ctrl-C to the guest, not to QEMU.
            if case .stdio = spec.backend { spec.backend = .stdio(signal: false) }
            return .new(spec, monitor: true)
        }
        switch text {
        case "stdio": return .new(ChardevSpec(id: nil, backend: .stdio(signal: true)), monitor: false)
        case "pty": return .new(ChardevSpec(id: nil, backend: .pty), monitor: false)
        case "null": return .new(ChardevSpec(id: nil, backend: .null), monitor: false)
        default: break
        }
        if let path = text.dropPrefix("file:") {
            // QEMU takes the whole rest as the path, commas included.
            guard !path.isEmpty else { throw SystemError(.configuration, "\(option): file: needs a path, e.g. file:serial.log") }
            return .new(ChardevSpec(id: nil, backend: .file(path: path, append: false)), monitor: false)
        }
        let socketKeys = ["server", "wait", "nodelay", "reconnect"]
        let booleans: Set<String> = ["server", "wait", "nodelay"]
        if let rest = text.dropPrefix("unix:") {
            let opts = try QemuOpts(parsing: rest, impliedKey: "path", option: option)
            try rejectUnsupported(opts, option: option)
            let checked = try opts.validate(accepted: socketKeys, booleans: booleans, context: "unix:")
            return .new(ChardevSpec(id: nil, backend: .socket(try socket(checked, shortForm: true))), monitor: false)
        }
        if let rest = text.dropPrefix("tcp:") {
            let (host, port, tail) = try splitHostPort(rest, option: option)
            var opts = try QemuOpts(option: option, entries: [QemuOpts.Entry(key: "host", value: host), QemuOpts.Entry(key: "port", value: port)])
            if let tail {
                let more = try QemuOpts(parsing: tail, option: option)
                try rejectUnsupported(more, option: option)
                let checked = try more.validate(accepted: socketKeys, booleans: booleans, context: "tcp:")
                opts = try QemuOpts(option: option, entries: opts.entries + checked.entries)
            }
            return .new(ChardevSpec(id: nil, backend: .socket(try socket(opts, shortForm: true))), monitor: false)
        }
        let name = text.split(separator: ":", maxSplits: 1).first.map(String.init) ?? text
        throw SystemError(.configuration, "\(option): '\(name)' is not supported; accepted: \(acceptedShortForms)")
    }

    /// `[HOST]:PORT[,options]`, HOST possibly `[v6]`.
    private static func splitHostPort(_ text: String, option: String) throws(SystemError) -> (String, String, String?) {
        let usage = "\(option): expected tcp:[HOST]:PORT[,server=on,wait=off], e.g. tcp:127.0.0.1:4444,server=on,wait=off"
        var host = ""
        var rest = Substring(text)
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw SystemError(.configuration, usage) }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            guard rest.hasPrefix(":") else { throw SystemError(.configuration, usage) }
            rest = rest.dropFirst()
        } else {
            guard let colon = rest.firstIndex(of: ":") else { throw SystemError(.configuration, usage) }
            host = String(rest[..<colon])
            rest = rest[rest.index(after: colon)...]
        }
        let port: Substring
        let tail: String?
        if let comma = rest.firstIndex(of: ",") {
            port = rest[..<comma]
            tail = String(rest[rest.index(after: comma)...])
        } else {
            port = rest
            tail = nil
        }
        guard !port.isEmpty else { throw SystemError(.configuration, usage) }
        return (host, String(port), tail)
    }
}

extension String {
    fileprivate func dropPrefix(_ prefix: String) -> String? {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : nil
    }
}
