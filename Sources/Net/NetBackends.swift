import CLinux
import Glibc
import DeviceModel
import SystemSupport

/// Builds the socket and tap network backends from one `-netdev TYPE,...` (the CLI's entry).
/// User networking (`-netdev user`) is built by its own type.
public enum NetBackends {
    /// The `-netdev` types `makeSocketFamily` builds.
    public static let socketFamilyTypes = ["stream", "dgram", "socket", "tap"]

    /// `type`: "stream", "dgram", "socket" or "tap"; `options`: that netdev's options (the
    /// type may be the implied first value; `id` may be among them, it is checked, not read).
    public static func makeSocketFamily(type: String, id: String, options: QemuOpts, loop: EventLoop) throws(SystemError) -> any NetBackend {
        switch type {
        case "stream": return try StreamBackend(id: id, options: options, loop: loop)
        case "dgram": return try DgramBackend(id: id, options: options, loop: loop)
        case "tap": return try TapBackend(id: id, options: options, loop: loop)
        case "socket":
            switch try LegacySocket.parse(options) {
            case .stream(let config): return try StreamBackend(id: id, config: config, what: "-netdev socket", loop: loop)
            case .dgram(let config): return try DgramBackend(id: id, config: config, what: "-netdev socket", loop: loop)
            }
        default:
            throw SystemError(.configuration, "-netdev: type '\(type)' is not a socket or tap backend; these are: \(socketFamilyTypes.joined(separator: ", "))")
        }
    }
}

/// The older `-netdev socket` (QEMU 7.2 net/socket.c), mapped onto the stream and dgram
/// backends: `listen=[HOST]:PORT` and `connect=HOST:PORT` are a stream server and client
/// (the same 4-byte length framing), `udp=HOST:PORT,localaddr=HOST:PORT` is unicast dgram,
/// `mcast=GROUP:PORT[,localaddr=ADDR]` multicast dgram, `fd=N` a stream or datagram socket
/// by its type.
enum LegacySocket {
    enum Config: Equatable {
        case stream(StreamBackend.Config)
        case dgram(DgramBackend.Config)
    }

    static let acceptedKeys = ["id", "fd", "listen", "connect", "mcast", "udp", "localaddr"]

    static func parse(_ options: QemuOpts) throws(SystemError) -> Config {
        let what = "-netdev socket"
        let options = try options.validate(accepted: acceptedKeys, context: "netdev 'socket'")
        let modes = ["fd", "listen", "connect", "mcast", "udp"].filter { options.contains($0) }
        guard modes.count == 1, let mode = modes.first, let value = options.string(mode) else {
            throw SystemError(.configuration, "\(what): exactly one of listen=, connect=, mcast= or udp= is required")
        }
        let localaddr = options.string("localaddr")
        if localaddr != nil, mode != "mcast", mode != "udp" {
            throw SystemError(.configuration, "\(what): localaddr= is only valid with mcast= or udp=")
        }
        switch mode {
        case "fd":
            let n = try NetSocketAddress.parseDescriptor(value, what: "\(what): fd")
            if Sockets.intOption(n, SOL_SOCKET, SO_TYPE) == Int32(SOCK_DGRAM.rawValue) { return .dgram(.descriptor(n)) }
            return .stream(StreamBackend.Config(server: false, address: .fd(n)))
        case "listen", "connect":
            let (host, port) = try NetSocketAddress.parseHostPort(value, what: "\(what): \(mode)=")
            return .stream(StreamBackend.Config(server: mode == "listen", address: .inet(host: host, port: port)))
        case "udp":
            guard let localaddr else { throw SystemError(.configuration, "\(what): localaddr= is mandatory with udp=") }
            let (host, port) = try NetSocketAddress.parseHostPort(value, what: "\(what): udp=")
            let local = try NetSocketAddress.parseHostPort(localaddr, what: "\(what): localaddr=")
            return .dgram(.unicast(local: .inet(host: local.host, port: local.port), remote: .inet(host: host, port: port)))
        default:  // mcast
            let (group, port) = try NetSocketAddress.parseHostPort(value, what: "\(what): mcast=")
            return .dgram(.multicast(group: group, port: port, interface: localaddr))
        }
    }
}
