import CLinux
import Glibc
import SystemSupport

/// An endpoint of a socket backend, as QEMU's `SocketAddress` (qapi/sockets.json) in the
/// dotted option form `-netdev stream,addr.type=inet,addr.host=H,addr.port=P` (QEMU 7.2).
///
/// Only the members swemu implements: inet `host`/`port` (no `to=`, `ipv4=`/`ipv6=`,
/// `keep-alive=`), unix `path` (no `abstract=`/`tight=`), and `fd` by number (QEMU also takes
/// a monitor fd name, which needs `getfd`; swemu's monitor has none).
enum NetSocketAddress: Equatable, Sendable, CustomStringConvertible {
    /// `host` empty: every interface when listening or binding, localhost when connecting.
    case inet(host: String, port: UInt16)
    case unix(path: String)
    /// An inherited descriptor (`addr.type=fd,addr.str=N`).
    case fd(Int32)

    /// QEMU's `socket_uri` form, used in `info network` and messages.
    var description: String {
        switch self {
        case .inet(let host, let port): return "tcp:\(RawSocketAddress.bracketed(host)):\(port)"
        case .unix(let path): return "unix:\(path)"
        case .fd(let n): return "fd:\(n)"
        }
    }

    /// The keys of an address under `prefix` ("addr", "local", "remote").
    static func keys(prefix: String) -> [String] {
        ["type", "host", "port", "path", "str"].map { "\(prefix).\($0)" }
    }

    /// Reads the address under `prefix` (`addr.type=inet,addr.host=...`); nil when no key with
    /// that prefix is given. `allowed` lists the types this place takes (`fd` is not a
    /// `remote` in QEMU).
    /// `what` names the option in messages ("-netdev stream").
    static func parse(_ options: QemuOpts, prefix: String, what: String, allowed: [String] = ["inet", "unix", "fd"]) throws(SystemError) -> NetSocketAddress? {
        let given = options.keys.filter { $0.hasPrefix(prefix + ".") }
        guard !given.isEmpty else { return nil }
        guard let type = options.string("\(prefix).type") else {
            throw SystemError(.configuration, "\(what): \(prefix).type is missing (\(allowed.joined(separator: ", ")))")
        }
        let members: [String]
        let address: NetSocketAddress
        switch type {
        case "inet" where allowed.contains("inet"):
            members = ["host", "port"]
            guard let host = options.string("\(prefix).host") else {
                throw SystemError(.configuration, "\(what): \(prefix).host is missing (with \(prefix).type=inet)")
            }
            guard options.string("\(prefix).port") != nil else {
                throw SystemError(.configuration, "\(what): \(prefix).port is missing (with \(prefix).type=inet)")
            }
            let port = try options.int("\(prefix).port", in: 0...65535) ?? 0
            address = .inet(host: host, port: UInt16(port))
        case "unix" where allowed.contains("unix"):
            members = ["path"]
            guard let path = options.string("\(prefix).path"), !path.isEmpty else {
                throw SystemError(.configuration, "\(what): \(prefix).path is missing (with \(prefix).type=unix)")
            }
            let limit = MemoryLayout.size(ofValue: sockaddr_un().sun_path) - 1
            guard path.utf8.count <= limit else {
                throw SystemError(.configuration, "\(what): \(prefix).path '\(path)' is too long: at most \(limit) bytes")
            }
            address = .unix(path: path)
        case "fd" where allowed.contains("fd"):
            members = ["str"]
            guard let text = options.string("\(prefix).str") else {
                throw SystemError(.configuration, "\(what): \(prefix).str is missing (with \(prefix).type=fd)")
            }
            address = .fd(try parseDescriptor(text, what: "\(what): \(prefix).str"))
        default:
            throw SystemError(.configuration, "\(what): \(prefix).type must be \(allowed.joined(separator: ", ")), not '\(type)'")
        }
        for key in given where key != "\(prefix).type" && !members.contains(String(key.dropFirst(prefix.count + 1))) {
            throw SystemError(.configuration, "\(what): \(key) does not go with \(prefix).type=\(type)")
        }
        return address
    }

    /// A descriptor number given on the command line (`fd=3`): inherited, so at least 3 and
    /// open. Names of monitor descriptors (QEMU's `getfd`) are not supported.
    static func parseDescriptor(_ text: String, what: String) throws(SystemError) -> Int32 {
        guard let n = Int32(text), n >= 0 else {
            throw SystemError(.configuration, "\(what): '\(text)' is not a file descriptor number (monitor fd names are not supported)")
        }
        guard n > 2 else {
            throw SystemError(.configuration, "\(what): fd \(n) is stdin, stdout or stderr, not an inherited socket or device")
        }
        guard clx_fcntl_getfl(n) >= 0 else {
            throw SystemError(.configuration, "\(what): fd \(n) is not open", errno: Errno.current)
        }
        return n
    }

    /// The legacy `-netdev socket` form `[HOST]:PORT` (QEMU's parse_host_port); an empty host
    /// means every interface (listen) or this host (connect). An IPv6 host is bracketed.
    static func parseHostPort(_ text: String, what: String) throws(SystemError) -> (host: String, port: UInt16) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw SystemError(.configuration, "\(what): '\(text)' is not HOST:PORT")
            }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw SystemError(.configuration, "\(what): '\(text)' is not HOST:PORT (the port is missing)")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portText) else {
            throw SystemError(.configuration, "\(what): '\(portText)' in '\(text)' is not a port number (0 to 65535)")
        }
        return (String(host), port)
    }
}
