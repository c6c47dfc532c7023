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
        case .inet(let host, let port): return "tcp:\(Self.bracketed(host)):\(port)"
        case .unix(let path): return "unix:\(path)"
        case .fd(let n): return "fd:\(n)"
        }
    }

    /// An IPv6 literal is written in brackets before a port.
    static func bracketed(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

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

/// A socket address as raw bytes (sockaddr_in, sockaddr_in6 or sockaddr_un) and its family,
/// so the pointer casts the socket calls need stay in the few functions here.
///
/// Chardev has the same helper (`RawSocketAddress`), but `Net` does not depend on `Chardev`
/// (DESIGN.md §2: backends are siblings); both could move to SystemSupport.
struct SockAddr: Sendable, Equatable {
    var family: Int32
    var bytes: [UInt8]

    /// A sockaddr_un for `path`; it must fit sun_path (107 bytes and a NUL).
    static func unix(_ path: String) throws(SystemError) -> SockAddr {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let utf8 = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard utf8.count < capacity, !utf8.contains(0) else {
            throw SystemError(.configuration, "unix socket path '\(path)' is too long: at most \(capacity - 1) bytes")
        }
        // SAFETY: sun_path is a fixed C array of `capacity` bytes inside `addr`; we copy
        // utf8.count < capacity bytes, leaving the NUL that sockaddr_un() zeroed.
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: utf8) }
        return SockAddr(family: AF_UNIX, bytes: withUnsafeBytes(of: &addr) { Array($0) })
    }

    /// Resolves `host` and `port` with getaddrinfo for sockets of `socketType`. An empty host
    /// is 0.0.0.0 when `passive` (QEMU listens on every IPv4 interface), else localhost.
    static func resolve(host: String, port: UInt16, socketType: Int32, passive: Bool) throws(SystemError) -> [SockAddr] {
        var hints = addrinfo()
        hints.ai_family = host.isEmpty && passive ? AF_INET : AF_UNSPEC
        hints.ai_socktype = socketType
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let node: String? = host.isEmpty ? (passive ? nil : "localhost") : host
        let rc = getaddrinfo(node, String(port), &hints, &list)
        guard rc == 0 else {
            throw SystemError(.configuration, "cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var result: [SockAddr] = []
        var entry = list
        // SAFETY: getaddrinfo returned a valid list, freed only by the defer above; each
        // ai_addr points to ai_addrlen bytes.
        while let info = entry {
            if let addr = info.pointee.ai_addr {
                let raw = UnsafeRawBufferPointer(start: addr, count: Int(info.pointee.ai_addrlen))
                result.append(SockAddr(family: info.pointee.ai_family, bytes: Array(raw)))
            }
            entry = info.pointee.ai_next
        }
        guard !result.isEmpty else { throw SystemError(.configuration, "host '\(host)' has no address") }
        return result
    }

    /// An IPv4 address and port (multicast groups, `localaddr=`).
    static func ipv4(_ address: in_addr, port: UInt16) -> SockAddr {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr = address
        // SAFETY: copies the bytes of the local sockaddr_in during the call only.
        return SockAddr(family: AF_INET, bytes: withUnsafeBytes(of: &sin) { Array($0) })
    }

    /// Runs `body` with the address as a `sockaddr` pointer and length.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        // SAFETY: `bytes` holds a complete sockaddr_* of its family, built above or filled
        // by the kernel; the pointer does not escape `body`.
        bytes.withUnsafeBytes { b in
            body(b.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(b.count))
        }
    }

    /// The local (getsockname) or remote (getpeername) address of a socket.
    static func of(_ fd: Int32, peer: Bool) -> SockAddr? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // SAFETY: the kernel writes at most `length` bytes into `storage`, which holds any
        // address; we keep only the `length` bytes it reports.
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        let count = min(Int(length), MemoryLayout<sockaddr_storage>.size)
        // SAFETY: copies at most sizeof(sockaddr_storage) bytes of the local `storage`.
        return SockAddr(family: Int32(storage.ss_family), bytes: withUnsafeBytes(of: &storage) { Array($0.prefix(count)) })
    }

    /// The IPv4 address of an AF_INET address.
    var ipv4Address: in_addr? {
        guard family == AF_INET, bytes.count >= MemoryLayout<sockaddr_in>.size else { return nil }
        // SAFETY: `bytes` holds a whole sockaddr_in (checked above); loadUnaligned copies it.
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: sockaddr_in.self).sin_addr }
    }

    /// The port of an inet address.
    var port: UInt16? {
        switch family {
        case AF_INET where bytes.count >= MemoryLayout<sockaddr_in>.size:
            // SAFETY: a whole sockaddr_in (checked in the case), copied out unaligned.
            return bytes.withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(as: sockaddr_in.self).sin_port) }
        case AF_INET6 where bytes.count >= MemoryLayout<sockaddr_in6>.size:
            // SAFETY: a whole sockaddr_in6 (checked in the case), copied out unaligned.
            return bytes.withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(as: sockaddr_in6.self).sin6_port) }
        default:
            return nil
        }
    }

    /// "127.0.0.1:1234", "[::1]:1234" or the unix path ("" for an unnamed unix socket).
    var text: String {
        if family == AF_UNIX {
            let offset = MemoryLayout<sa_family_t>.size
            guard bytes.count > offset else { return "" }
            let path = bytes[offset...].prefix { $0 != 0 }
            return String(decoding: path, as: UTF8.self)
        }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        // SAFETY: getnameinfo reads the address during the call and writes at most host.count
        // bytes (NUL included) into `host`.
        let rc = withSockaddr { addr, length in
            getnameinfo(addr, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
        }
        let name = rc == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return "\(NetSocketAddress.bracketed(name)):\(port ?? 0)"
    }

    /// QEMU's socket_uri: "tcp:127.0.0.1:1234" or "unix:/path".
    var uri: String { family == AF_UNIX ? "unix:\(text)" : "tcp:\(text)" }
}

/// Small socket calls shared by the stream and datagram backends.
enum NetSockets {
    /// A non-blocking, close-on-exec socket.
    static func open(family: Int32, type: Int32, what: @autoclosure () -> String) throws(SystemError) -> FileDescriptor {
        let flags = Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue)
        return FileDescriptor(owning: try syscall(what()) { socket(family, type | flags, 0) })
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32 = 1) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    static func intOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, level, name, &value, &length) == 0 ? value : nil
    }

    static func bind(_ fd: Int32, _ address: SockAddr, what: @autoclosure () -> String) throws(SystemError) {
        let rc = address.withSockaddr { Glibc.bind(fd, $0, $1) }
        if rc < 0 { throw SystemError(.syscall, what(), errno: Errno.current) }
    }

    /// A blocking connect (at start-up, as QEMU 7.2's client connects before the guest runs),
    /// leaving the socket non-blocking.
    static func connect(_ fd: Int32, _ address: SockAddr, what: @autoclosure () -> String) throws(SystemError) {
        _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) & ~O_NONBLOCK)
        defer { _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK) }
        while true {
            let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { return }
            let err = Errno.current
            if err == .interrupted { continue }
            throw SystemError(.syscall, what(), errno: err)
        }
    }

    /// Accepts one pending connection, non-blocking and close-on-exec; nil when none waits.
    /// The next connection of `listener`; nil when there is none now (EAGAIN, or one reset
    /// before it was taken). Throws when the process cannot take one (EMFILE, ENFILE,
    /// ENOBUFS, ENOMEM): the connection stays in the backlog and would wake the loop forever.
    static func accept(_ listener: Int32) throws(SystemError) -> FileDescriptor? {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 {
                _ = clx_set_cloexec(fd)
                _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
                return FileDescriptor(owning: fd)
            }
            let error = Errno.current
            switch error {
            case .interrupted: continue
            case .wouldBlock, Errno(rawValue: ECONNABORTED), Errno(rawValue: EPROTO): return nil
            default: throw SystemError(.badInput, "accept", errno: error)
            }
        }
    }
}
