import CLinux
import Glibc
import SystemSupport

/// A socket address as raw bytes (a sockaddr_un/sockaddr_in/sockaddr_in6) with its family,
/// so the pointer casts the socket calls need stay in the few functions below.
struct RawSocketAddress: Sendable {
    var family: Int32
    var bytes: [UInt8]

    /// A sockaddr_un for `path`; paths must fit sun_path (107 bytes and a NUL).
    static func unix(_ path: String) throws(SystemError) -> RawSocketAddress {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let utf8 = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard utf8.count < capacity else {
            throw SystemError(.configuration, "unix socket path '\(path)' is too long: at most \(capacity - 1) bytes")
        }
        // SAFETY: sun_path is a fixed C array of `capacity` bytes inside `addr`; we copy
        // utf8.count < capacity bytes, leaving the NUL that sockaddr_un() zeroed.
        withUnsafeMutableBytes(of: &addr.sun_path) { dst in
            dst.copyBytes(from: utf8)
        }
        let bytes = withUnsafeBytes(of: &addr) { Array($0) }
        return RawSocketAddress(family: AF_UNIX, bytes: bytes)
    }

    /// Resolves `host` (empty: every interface when `passive`, else localhost) and `port`
    /// with getaddrinfo; numeric addresses and names both work.
    static func tcp(host: String, port: UInt16, passive: Bool) throws(SystemError) -> [RawSocketAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        if host.isEmpty && passive { hints.ai_family = AF_INET }  // QEMU listens on 0.0.0.0
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = host.isEmpty
            ? getaddrinfo(passive ? nil : "localhost", String(port), &hints, &list)
            : getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0 else {
            let why = String(cString: gai_strerror(rc))
            throw SystemError(.configuration, "cannot resolve host '\(host)': \(why)")
        }
        defer { freeaddrinfo(list) }
        var result: [RawSocketAddress] = []
        var entry = list
        // SAFETY: getaddrinfo returned a valid list, freed only by the defer above; each
        // ai_addr points to ai_addrlen bytes.
        while let info = entry {
            if let addr = info.pointee.ai_addr {
                let raw = UnsafeRawBufferPointer(start: addr, count: Int(info.pointee.ai_addrlen))
                result.append(RawSocketAddress(family: info.pointee.ai_family, bytes: Array(raw)))
            }
            entry = info.pointee.ai_next
        }
        guard !result.isEmpty else { throw SystemError(.configuration, "host '\(host)' has no address") }
        return result
    }

    /// Runs `body` with the address as a `sockaddr` pointer and length.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        // SAFETY: `bytes` holds a complete sockaddr_* of its family, built above; the
        // pointer is used only during `body`.
        bytes.withUnsafeBytes { b in
            body(b.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(b.count))
        }
    }
}

enum Sockets {
    /// Creates a close-on-exec stream socket.
    static func stream(family: Int32, nonBlocking: Bool) throws(SystemError) -> FileDescriptor {
        let type = Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return FileDescriptor(owning: try syscall("cannot create a socket") { socket(family, type, 0) })
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32 = 1) {
        var v = value
        _ = setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size))
    }

    /// TCP_NODELAY on a TCP socket: a console sends a byte at a time and wants it now.
    static func setNoDelay(_ fd: Int32, family: Int32) {
        if family == AF_INET || family == AF_INET6 { setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY) }
    }

    /// The local port of a bound TCP socket.
    static func localPort(_ fd: Int32) -> UInt16? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // SAFETY: getsockname writes at most `length` bytes into `storage`, which is large
        // enough for any address; we read the family's own layout afterwards.
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
        default:
            return nil
        }
    }

    /// Accepts one pending connection, non-blocking and close-on-exec; nil when none waits.
    static func accept(_ listener: Int32) -> FileDescriptor? {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd >= 0 {
                _ = clx_set_cloexec(fd)
                _ = clx_fcntl_setfl(fd, clx_fcntl_getfl(fd) | O_NONBLOCK)
                return FileDescriptor(owning: fd)
            }
            if Errno.current == .interrupted { continue }
            // EAGAIN, or a connection reset before we took it (ECONNABORTED): nothing to do.
            return nil
        }
    }

    /// Waits up to `milliseconds` (-1: forever) for `fd` to have `events`.
    static func wait(_ fd: Int32, events: Int16, milliseconds: Int32) -> Bool {
        var p = pollfd(fd: fd, events: events, revents: 0)
        while true {
            let n = Glibc.poll(&p, 1, milliseconds)
            if n < 0 && Errno.current == .interrupted { continue }
            return n > 0
        }
    }
}
