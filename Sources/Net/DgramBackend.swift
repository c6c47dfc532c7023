import CLinux
import DeviceModel
import Glibc
import Synchronization
import SystemSupport

/// `-netdev dgram` (QEMU 7.2, net/dgram.c) and the `udp=`/`mcast=` forms of `-netdev socket`:
/// one Ethernet frame per datagram, no length prefix.
///
///     -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=5000,remote.type=inet,remote.host=127.0.0.1,remote.port=5001
///     -netdev dgram,id=n0,local.type=unix,local.path=/tmp/a.sock,remote.type=unix,remote.path=/tmp/b.sock
///     -netdev dgram,id=n0,remote.type=inet,remote.host=230.0.0.1,remote.port=1234     (multicast)
///     -netdev dgram,id=n0,local.type=fd,local.str=3     (an inherited, connected datagram socket)
///
/// Unicast binds `local` and sends to `remote`; datagrams from anyone are taken, as in QEMU.
/// A unix `local.path` is replaced if it exists (QEMU unlinks it first) and removed at close.
/// Multicast (a `remote` IPv4 group) binds the group's port with SO_REUSEADDR, joins the group
/// on the interface of `local.host` (any when absent) and keeps IP_MULTICAST_LOOP on, so
/// several swemu or QEMU processes on one host share the segment; like QEMU's, it also hears
/// its own frames back (a NIC ignores frames addressed to others).
///
/// The same checks and messages as QEMU 7.2: `local` is required except for multicast;
/// inet/unix need `remote` of the same type; `local.type=fd` takes no `remote`.
public final class DgramBackend: NetBackend {
    enum Config: Equatable, Sendable {
        case unicast(local: NetSocketAddress, remote: NetSocketAddress)
        /// `interface`: the IPv4 address of the interface to join on and send from.
        case multicast(group: String, port: UInt16, interface: String?)
        /// An inherited socket, connected (send) or not (receive only).
        case descriptor(Int32)
    }

    public let id: String
    public let info: String
    /// The local port of an inet socket (useful with `local.port=0`); else nil.
    public let boundPort: UInt16?

    private let slot = FrontendSlot()
    private let channel: FrameChannel
    /// A unix `local.path` we bound, removed at the first `close()`.
    private let socketFile: Mutex<String?>

    public convenience init(id: String, options: QemuOpts, loop: EventLoop) throws(SystemError) {
        try self.init(id: id, config: try Self.parse(options), what: "-netdev dgram", loop: loop)
    }

    init(id: String, config: Config, what: String, loop: EventLoop) throws(SystemError) {
        self.id = id
        let opened = try Self.open(config, what: what)
        info = opened.info
        socketFile = Mutex(opened.socketFile)
        boundPort = RawSocketAddress.of(opened.fd.rawValue, peer: false)?.port
        let slot = slot
        channel = FrameChannel(fd: opened.fd, wire: .datagram(destination: opened.destination), name: "netdev \(id)", loop: loop, slot: slot) { channel, why in
            DebugLog.log(.guestErrors, "netdev \(id): \(why); no more frames")
            channel.close()
        }
        do {
            try channel.start()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    static let acceptedKeys = ["id"] + NetSocketAddress.keys(prefix: "local") + NetSocketAddress.keys(prefix: "remote")

    static func parse(_ options: QemuOpts) throws(SystemError) -> Config {
        let what = "-netdev dgram"
        let options = try options.validate(accepted: acceptedKeys, context: "netdev 'dgram'")
        let local = try NetSocketAddress.parse(options, prefix: "local", what: what)
        let remote = try NetSocketAddress.parse(options, prefix: "remote", what: what, allowed: ["inet", "unix"])
        // QEMU 7.2 net_init_dgram: an IPv4 multicast remote selects multicast.
        if case .inet(let host, let port)? = remote, let group = Self.ipv4(host), Self.isMulticast(group) {
            switch local {
            case nil: return .multicast(group: host, port: port, interface: nil)
            case .inet(let interface, _)?: return .multicast(group: host, port: port, interface: interface)
            default:
                throw SystemError(.configuration, "\(what): with a multicast remote, local must be type inet (the interface address), not \(local!)")
            }
        }
        guard let local else { throw SystemError(.configuration, "\(what): dgram requires local= parameter (local.type=inet|unix|fd)") }
        if case .fd(let n) = local {
            guard remote == nil else { throw SystemError(.configuration, "\(what): don't set remote with local.fd") }
            return .descriptor(n)
        }
        guard let remote else { throw SystemError(.configuration, "\(what): type=inet or type=unix requires remote parameter") }
        switch (local, remote) {
        case (.inet, .inet), (.unix, .unix): return .unicast(local: local, remote: remote)
        default: throw SystemError(.configuration, "\(what): remote and local types must be the same")
        }
    }

    static func ipv4(_ host: String) -> in_addr? {
        var address = in_addr()
        return inet_pton(AF_INET, host, &address) == 1 ? address : nil
    }

    static func isMulticast(_ address: in_addr) -> Bool { UInt32(bigEndian: address.s_addr) >> 28 == 0xe }

    // MARK: NetBackend

    package var counters: NetCounters { channel.counters }

    public func attach(_ frontend: (any NetFrontend)?) {
        slot.set(frontend)
        if frontend != nil { channel.resumeReceive() }
    }

    public func send(_ frame: [UInt8]) -> Bool { channel.send(frame) }

    public func frontendReady() { channel.resumeReceive() }

    public func close() {
        channel.close()
        if let path = socketFile.withLock({ path in defer { path = nil }; return path }) { unlink(path) }
    }

    // MARK: sockets

    private struct Opened: ~Copyable {
        var fd: FileDescriptor
        var destination: RawSocketAddress?
        var info: String
        var socketFile: String?
    }

    private static func open(_ config: Config, what: String) throws(SystemError) -> Opened {
        let datagram = Int32(SOCK_DGRAM.rawValue)
        switch config {
        case .unicast(.inet(let localHost, let localPort), .inet(let remoteHost, let remotePort)):
            guard let remote = try RawSocketAddress.resolve(host: remoteHost, port: remotePort, socketType: datagram, passive: false).first else {
                throw SystemError(.configuration, "\(what): cannot resolve \(remoteHost)")
            }
            // Bind in the remote's family, so one socket reaches it.
            let locals = try RawSocketAddress.resolve(host: localHost, port: localPort, socketType: datagram, passive: true)
            guard let local = locals.first(where: { $0.family == remote.family }) else {
                throw SystemError(.configuration, "\(what): local \(localHost) and remote \(remoteHost) are not of the same address family")
            }
            let fd = try Sockets.open(family: local.family, type: datagram, nonBlocking: true, what: "\(what): can't create datagram socket")
            Sockets.setOption(fd.rawValue, SOL_SOCKET, SO_REUSEADDR)
            try Sockets.bind(fd.rawValue, local, what: "\(what): can't bind \(local.text) to socket")
            let bound = RawSocketAddress.of(fd.rawValue, peer: false) ?? local
            return Opened(fd: fd, destination: remote, info: "udp=\(bound.text)/\(remote.text)")
        case .unicast(.unix(let localPath), .unix(let remotePath)):
            let local = try RawSocketAddress.unix(localPath)
            let remote = try RawSocketAddress.unix(remotePath)
            var st = stat()
            if lstat(localPath, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFSOCK else {
                    throw SystemError(.configuration, "\(what): cannot bind unix=\(localPath): it exists and is not a socket; remove it or choose another path")
                }
                unlink(localPath)  // QEMU unlinks it too
            }
            let fd = try Sockets.open(family: AF_UNIX, type: datagram, nonBlocking: true, what: "\(what): can't create datagram socket")
            try Sockets.bind(fd.rawValue, local, what: "\(what): can't bind unix=\(localPath) to socket")
            return Opened(fd: fd, destination: remote, info: "udp=\(localPath):\(remotePath)", socketFile: localPath)
        case .unicast:
            throw SystemError(.configuration, "\(what): remote and local types must be the same")
        case .multicast(let group, let port, let interface):
            return try openMulticast(group: group, port: port, interface: interface, what: what)
        case .descriptor(let n):
            guard Sockets.intOption(n, SOL_SOCKET, SO_TYPE) == datagram else {
                throw SystemError(.configuration, "\(what): fd \(n) is not a datagram socket")
            }
            _ = clx_set_cloexec(n)
            _ = clx_fcntl_setfl(n, clx_fcntl_getfl(n) | O_NONBLOCK)
            let kind = RawSocketAddress.of(n, peer: false)?.family == AF_UNIX ? "unix" : "inet"
            return Opened(fd: FileDescriptor(owning: n), destination: nil, info: "fd=\(n) \(kind)")
        }
    }

    /// QEMU 7.2 net_dgram_mcast_create: bind the group's port (SO_REUSEADDR, so several
    /// processes share it), join the group, loop our multicast back to this host.
    private static func openMulticast(group: String, port: UInt16, interface: String?, what: String) throws(SystemError) -> Opened {
        guard let groupAddress = ipv4(group), isMulticast(groupAddress) else {
            throw SystemError(.configuration, "\(what): multicast group '\(group)' is not an IPv4 multicast address (224.0.0.0/4)")
        }
        var interfaceAddress = in_addr(s_addr: INADDR_ANY)
        if let interface {
            guard let address = ipv4(interface) else {
                throw SystemError(.configuration, "\(what): localaddr '\(interface)' is not a valid IPv4 address")
            }
            interfaceAddress = address
        }
        let fd = try Sockets.open(family: AF_INET, type: Int32(SOCK_DGRAM.rawValue), nonBlocking: true, what: "\(what): can't create datagram socket")
        let raw = fd.rawValue
        Sockets.setOption(raw, SOL_SOCKET, SO_REUSEADDR)
        let destination = RawSocketAddress.ipv4(groupAddress, port: port)
        try Sockets.bind(raw, destination, what: "\(what): can't bind ip=\(group) to socket")
        var request = ip_mreq(imr_multiaddr: groupAddress, imr_interface: interfaceAddress)
        _ = try syscall("\(what): can't add socket to multicast group \(group)") {
            setsockopt(raw, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &request, socklen_t(MemoryLayout<ip_mreq>.size))
        }
        Sockets.setOption(raw, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 1)
        if interface != nil {
            _ = try syscall("\(what): can't set the multicast interface to \(interface ?? "")") {
                setsockopt(raw, Int32(IPPROTO_IP), IP_MULTICAST_IF, &interfaceAddress, socklen_t(MemoryLayout<in_addr>.size))
            }
        }
        return Opened(fd: fd, destination: destination, info: "mcast=\(group):\(port)")
    }
}
